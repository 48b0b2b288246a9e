/* worker_pool.h - instances made of worker processes, shared by the
 * runtimes whose code runs out of process (Python, C).
 *
 * Every instance is a pool of up to 8 worker processes (`fnmesh <verb>`),
 * exec'd by the executor thread that owns the instance and watched from that
 * thread's epoll loop. They speak the framing of runtime/python/python_int.h:
 * 'I' (the artifact) → 'E' exports / 'X' failure, then 'C' calls → 'R'/'F',
 * 'L' log lines and 'M'/'m' mesh calls. A worker runs one call at a time
 * (the others wait in the instance's queue, a few pipelined to it), or with
 * a kind's `concurrency` up to that many at once (JavaScript awaiting). Past a call's deadline the worker
 * gets SIGINT and one second later SIGKILL (or SIGKILL at once); a worker
 * that dies fails only the call it was running and is replaced when needed.
 *
 * The functions have the signatures of the fm_runtime members of the same
 * name, so a runtime plugs them into its table; only instance_create takes
 * the kind of worker first. */
#ifndef FM_WORKER_POOL_H
#define FM_WORKER_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/runtime.h"

typedef struct fm_wpool_kind {
    const char *runtime; /* runtime name in metrics: "python" */
    const char *verb;  /* argv[1] of the worker process: "worker-python" */
    const char *label; /* in messages: "the Python worker crashed" */
    bool sigint_first; /* at the deadline: SIGINT, then SIGKILL after 1 s; else SIGKILL */
    int concurrency;   /* calls one worker runs at once, answered in any order ('R'/'F' name
                          theirs; 'M' and 'l' frames too); 0: one at a time, in order */
} fm_wpool_kind;

/* Worker processes of one runtime since the node started (for /metrics). */
typedef struct fm_wpool_stat {
    const char *runtime;
    uint64_t started; /* processes started */
    uint64_t exited;  /* processes gone (stopped by the node or died) */
    uint64_t died;    /* of those, the ones that crashed, were killed at a deadline or quit */
} fm_wpool_stat;
/* Fills up to `max` entries (one per runtime that started a worker); any thread. */
size_t fm_wpool_stats(fm_wpool_stat *out, size_t max);

/* At the node's end, after the executor threads stopped: ends the workers
 * started ahead of need (and removes their cgroups). */
void fm_wpool_stop_spares(void);
void *fm_wpool_thread_init(int index);
void fm_wpool_thread_dispose(void *ts);
/* The artifact is borrowed: it must outlive the instance. */
/* memory_limit: the deployment's memory_mb in bytes; the workers' address
 * space is capped at that plus FM_WORKER_AS_HEADROOM_MB for the
 * interpreter's own mappings. */
#define FM_WORKER_AS_HEADROOM_MB 384
fm_status fm_wpool_instance_create(const fm_wpool_kind *kind, void *ts, const char *deployment,
                                   const char *artifact, size_t artifact_len, const fm_instance_limits *lim,
                                   void **instance,
                                   fm_export **exports, size_t *nexports, fm_err *err);
void fm_wpool_instance_destroy(void *ts, void *instance);
void fm_wpool_call(void *ts, void *instance, uint32_t index, fm_job *job);
int64_t fm_wpool_poll(void *ts);
/* Writes the call frames this thread's workers were given in this pass. */
void fm_wpool_flush(void *ts);

#endif
