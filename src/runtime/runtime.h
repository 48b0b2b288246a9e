/* runtime.h - the interface every language runtime implements.
 *
 * A runtime has two halves:
 *  - deploy time (any thread, may block): `compile` turns the bundle's entry
 *    files of its language into an artifact (bytes that the store keeps, so
 *    a restart never compiles again);
 *  - run time (executor threads only): per-thread state from `thread_init`,
 *    instances made from the artifact, calls, timers.
 * A call either completes inside `call` or later from `poll`/a host
 * callback; either way the runtime fills the job's result through
 * fm_job_succeed / fm_job_fail and hands it to fm_job_finish exactly once.
 *
 * Runtimes are listed in one const table (runtime.c); adding one means a
 * folder and a line there. */
#ifndef FM_RUNTIME_H
#define FM_RUNTIME_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "registry/bundle.h"
#include "registry/manifest.h"

typedef struct fm_job fm_job;

/* One export, as a runtime reports it after evaluating an artifact. */
typedef struct fm_export {
    char *name;
    char *file;
    json_t *params; /* array of strings (owned) */
    uint32_t unit;  /* set by the executor: which unit of the version */
    uint32_t index; /* position in the instance's export list */
} fm_export;

/* What an instance may use, from the deployment's manifest. */
typedef struct fm_instance_limits {
    size_t memory;   /* bytes: memory_mb */
    int max_workers; /* worker-process runtimes: processes of this version on all executor
                        threads together (max_instances; 0 = the default, 4 per CPU) */
    bool whole_process; /* the instance has a worker process to itself (process
                           isolation): the process's own figures measure it */
} fm_instance_limits;

typedef struct fm_runtime {
    const char *name;              /* "js" */
    bool out_of_process;           /* calls run in worker processes (which report their CPU) */
    bool call_nested;              /* `call` may run inside another runtime's call on its thread */
    bool isolated;                 /* an in-process runtime run in worker processes
                                      (process isolation, runtime/isolated.c) */
    size_t instance_bytes;         /* what an instance costs the node, roughly (--memory-budget;
                                      measured with bench/density.py) */
    const char *const *extensions; /* NULL-terminated: ".js", ".mjs", ... */

    /* Compiles `entries` (bundle paths of this runtime's entry files) into an
     * artifact (owned malloc'd bytes). Errors: FM_INVALID_BUNDLE with file:line:col. */
    fm_status (*compile)(const fm_bundle *b, const char *const *entries, size_t nentries,
                         char **artifact, size_t *artifact_len, fm_err *err);

    /* Executor-thread state. */
    void *(*thread_init)(int thread_index);
    void (*thread_dispose)(void *ts);

    /* Creates an instance from an artifact, within `lim` (each runtime
     * caps what it can: see docs/operations.md). When `exports` is non-NULL, the list of exports
     * is returned (owned array, *nexports entries) in the order `call`
     * indexes them. */
    fm_status (*instance_create)(void *ts, const char *deployment, const char *artifact,
                                 size_t artifact_len, const fm_instance_limits *lim,
                                 void **instance,
                                 fm_export **exports, size_t *nexports, fm_err *err);
    void (*instance_destroy)(void *ts, void *instance);

    /* Calls export number `index` with the job's arguments. */
    void (*call)(void *ts, void *instance, uint32_t index, fm_job *job);
    /* Optional: like `call`, with the arguments given as JSON text made by
     * the node (a NUL-terminated array, borrowed for the length of this
     * call, without bytes values: those come through `call`) in place of
     * job->argv; arguments at holes[0..nholes) are undefined. Workers use
     * it to skip building jansson values only to convert them again. */
    void (*call_json)(void *ts, void *instance, uint32_t index, fm_job *job, const char *args,
                      const uint32_t *holes, uint32_t nholes);
    /* Optional: runs fn(ud) inside one entry into the engine, so that the
     * calls fn makes through `call`/`call_json` are nested entries, which
     * cost less. fn asks batch_more before each call: false once a call
     * left work to be finished when the entry ends (an async call).
     * Isolated workers run the calls they were sent together so. */
    void (*run_batch)(void *ts, void *instance, void (*fn)(void *ud), void *ud);
    bool (*batch_more)(void *ts);
    /* With run_batch: may calls of export `index` run in a batch? */
    bool (*batch_ok)(void *ts, void *instance, uint32_t index);

    /* Runs due timers and expires async calls past their deadline. Returns
     * the number of microseconds until it wants to run again, or -1. */
    int64_t (*poll)(void *ts);

    /* Optional: hands on what the calls of this pass left to send (worker
     * processes get their call frames in one write). The executor calls it
     * at the end of each pass, before it waits. */
    void (*flush)(void *ts);
} fm_runtime;

/* The runtime table: the runtimes that files map to, then the process-
 * isolation forms of the in-process ones (same name, no extensions). */
extern const fm_runtime *const fm_runtimes[];
extern const size_t fm_runtime_count;
/* Runtime serving files with this path's extension, or NULL. */
const fm_runtime *fm_runtime_for_path(const char *path);
int fm_runtime_index(const fm_runtime *rt);
/* The runtime that runs `rt`'s code under process isolation: its isolated
 * form for JavaScript, Lua and templates, `rt` itself for the runtimes that
 * always run in workers (runtime/isolated.c). */
const fm_runtime *fm_runtime_isolated(const fm_runtime *rt);
/* A worker process of an isolated runtime: `fnmesh worker-js` etc. Returns
 * the exit code; -1 when `verb` names none. */
int fm_isolated_worker_main(const char *verb);

void fm_exports_free(fm_export *e, size_t n);

#endif
