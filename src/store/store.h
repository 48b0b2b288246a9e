/* store.h - durable state behind one interface (SQLite today; NATS
 * JetStream KV for cluster mode plugs in as another ops table).
 *
 * Holds content-addressed bundles, every version of every deployment with
 * its compiled artifacts, and which version of each deployment is active.
 * A call that returns FM_OK has made its change durable (committed), so an
 * acknowledged deploy survives kill -9. A store is used by one thread at a
 * time (the control thread). */
#ifndef FM_STORE_H
#define FM_STORE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct fm_store fm_store;

typedef struct fm_store_unit {
    char runtime[16];
    char *data; /* owned when loaded; borrowed when stored */
    size_t len;
} fm_store_unit;

/* A version as stored. When returned by a load, every pointer is owned
 * (free with fm_store_version_dispose). */
typedef struct fm_store_version {
    char *deployment;
    char version[65];
    int64_t created_at;    /* wall ms */
    char *manifest_json;   /* the manifest as uploaded ("{}" when none) */
    char *functions_json;  /* [{name,file,runtime,params}] */
    fm_store_unit *units;
    size_t nunits;
} fm_store_version;

void fm_store_version_dispose(fm_store_version *v);

typedef void (*fm_store_visit)(fm_store_version *v, void *ud); /* v owned by the visitor */

/* Usage of one function in one minute (metering). Strings borrowed. */
typedef struct fm_store_usage {
    int64_t minute; /* wall-clock minutes since the epoch */
    const char *deployment, *function;
    uint64_t invocations, errors, wall_us, cpu_us, req_bytes, resp_bytes, peak_memory;
} fm_store_usage;

/* A usage query: minutes [from, to), optionally one deployment; grouped by
 * "deployment", "function" or "minute". */
typedef struct fm_store_usage_query {
    int64_t from_minute, to_minute;
    const char *deployment; /* NULL: all */
    const char *group_by;
} fm_store_usage_query;

typedef struct fm_store_ops {
    const char *name;
    /* Stores bundle + version + artifacts and makes the version active, in one transaction. */
    fm_status (*put_version)(fm_store *s, const fm_store_version *v, const void *bundle,
                             size_t bundle_len, int64_t now, fm_err *err);
    fm_status (*activate)(fm_store *s, const char *deployment, const char *version, int64_t now,
                          fm_err *err);
    /* FM_NOT_FOUND when unknown. */
    fm_status (*remove)(fm_store *s, const char *deployment, fm_err *err);
    /* Loads one version by id or unique id prefix (FM_NOT_FOUND / FM_BAD_REQUEST if ambiguous). */
    fm_status (*load_version)(fm_store *s, const char *deployment, const char *version_prefix,
                              fm_store_version *out, fm_err *err);
    /* The bundle bytes of a version (owned *data); FM_NOT_FOUND when not stored. */
    fm_status (*load_bundle)(fm_store *s, const char *version, void **data, size_t *len,
                             fm_err *err);
    /* Visits the active version of every deployment. */
    fm_status (*load_active)(fm_store *s, fm_store_visit visit, void *ud, fm_err *err);
    /* [{version, created_at(ms), active, functions(count)}] newest first; FM_NOT_FOUND if none. */
    fm_status (*list_versions)(fm_store *s, const char *deployment, json_t **out, fm_err *err);
    /* Adds usage rows (summed into existing minute rows; peak_memory is the
     * maximum) in one transaction. */
    fm_status (*usage_add)(fm_store *s, const fm_store_usage *rows, size_t n, fm_err *err);
    /* Rows [{deployment?, function?, minute?, invocations, errors, wall_us,
     * cpu_us, req_bytes, resp_bytes, peak_memory_bytes}] of a query. */
    fm_status (*usage_query)(fm_store *s, const fm_store_usage_query *q, json_t **rows,
                             fm_err *err);
    void (*close)(fm_store *s);
} fm_store_ops;

struct fm_store {
    const fm_store_ops *ops;
};

/* Opens (creating if needed) the SQLite store at `path`. */
fm_status fm_store_open_sqlite(const char *path, fm_store **out, fm_err *err);

#endif
