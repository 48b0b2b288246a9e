/* manifest.h - the optional fnmesh.json of a deployment.
 *
 *   {"timeout_ms": N, "max_concurrency": N, "max_queue": N, "memory_mb": N,
 *    "max_instances": N, "isolation": "thread"|"process",
 *    "entry": ["a.js", ...],
 *    "functions": {"<name>": {"timeout_ms": N, "max_concurrency": N, "max_queue": N}}}
 *
 * Unknown keys and wrong types are refused, so a typo never silently turns
 * into a default. The parsed manifest owns its jansson value. */
#ifndef FM_MANIFEST_H
#define FM_MANIFEST_H

#include <jansson.h>
#include <stdint.h>

#include "core/status.h"

#define FM_DEFAULT_TIMEOUT_MS 30000
#define FM_MAX_TIMEOUT_MS (15 * 60 * 1000)
#define FM_DEFAULT_MAX_QUEUE 100   /* calls of a function waiting to start */
#define FM_MAX_CONCURRENCY 100000
#define FM_MAX_QUEUE 1000000
#define FM_DEFAULT_MEMORY_MB 128 /* per instance */
#define FM_MIN_MEMORY_MB 16
#define FM_MAX_MEMORY_MB 65536
#define FM_MAX_INSTANCES 1024

/* Where a deployment's JavaScript, Lua and template code runs: in the
 * node's executor threads, or in sandboxed worker processes (Python and C
 * always run in workers). */
typedef enum {
    FM_ISOLATION_DEFAULT = 0, /* the node's --isolation */
    FM_ISOLATION_THREAD,
    FM_ISOLATION_PROCESS,
} fm_isolation;

typedef struct fm_manifest {
    json_t *root;       /* owned; {} when the bundle has no manifest */
    int64_t timeout_ms; /* deployment default */
    int64_t memory_mb;  /* memory cap of each instance of the deployment */
    int64_t max_instances; /* instances of the deployment at most (0: the default) */
    fm_isolation isolation; /* "isolation" (FM_ISOLATION_DEFAULT when absent) */
    json_t *entry;      /* borrowed from root: array of strings, or NULL */
    json_t *functions;  /* borrowed from root: object, or NULL */
} fm_manifest;

/* Parses `text` (may be NULL: no manifest). Errors are FM_INVALID_BUNDLE
 * with a message naming the key. */
fm_status fm_manifest_parse(const char *text, size_t len, fm_manifest *out, fm_err *err);
void fm_manifest_dispose(fm_manifest *m);
/* Timeout of one function: its own, else the deployment's. */
int64_t fm_manifest_timeout(const fm_manifest *m, const char *fn);
/* An integer setting of one function ("max_concurrency", "max_queue"): its
 * own, else the deployment's, else `dflt`. */
int64_t fm_manifest_int(const fm_manifest *m, const char *fn, const char *key, int64_t dflt);

#endif
