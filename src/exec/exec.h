/* exec.h - executor threads: where function code runs, off the I/O threads.
 *
 * Each executor thread owns the per-thread state of every runtime (for JS,
 * its own JSC context group) and the instances it created; nothing in an
 * instance is ever touched by another thread, so calls take no lock. Work
 * arrives as batches of jobs in a per-thread inbox (one mutex shared only by
 * the submitter and that thread, one wake per batch). A finished job is
 * handed to its `on_done` callback on the executor thread, which routes the
 * result back (to an I/O thread's queue, or to a waiting control thread).
 *
 * Ownership: a job owns its arguments, result and error; the submitter owns
 * the job itself and frees it with fm_job_free after on_done has run. */
#ifndef FM_EXEC_H
#define FM_EXEC_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdint.h>

#define H2O_USE_LIBUV 0
#include <h2o/multithread.h>

#include "core/status.h"
#include "metrics/trace.h"
#include "runtime/runtime.h"

typedef struct fm_version fm_version;
typedef struct fm_function fm_function;
typedef struct fm_exec fm_exec;

/* Where finished jobs go when they must reach an event loop: a list under
 * a mutex plus an eventfd. An executor appends everything it finished in
 * one pass under one lock and writes the eventfd once, and only when the
 * consumer has not been signalled yet, so a busy node pays one wake-up per
 * batch rather than one per call. */
typedef struct fm_reply_queue {
    pthread_mutex_t mu;
    fm_job *head, *tail; /* guarded by mu */
    bool signalled;      /* guarded by mu: eventfd written, not yet taken */
    bool polling;        /* guarded by mu: the consumer is polling, no eventfd needed */
    int efd;             /* eventfd the consumer polls */
} fm_reply_queue;

int fm_reply_queue_init(fm_reply_queue *q);
void fm_reply_queue_dispose(fm_reply_queue *q);
/* Consumer: takes every queued job (linked by ->next) and re-arms the signal. */
fm_job *fm_reply_queue_take(fm_reply_queue *q);
/* Producer outside an executor thread: appends one finished job. */
void fm_reply_queue_push(fm_reply_queue *q, fm_job *job);
/* Consumer: while polling is on, producers skip the eventfd write. Turning it
 * off returns the jobs that arrived meanwhile (caller must process them). */
void fm_reply_queue_poll_begin(fm_reply_queue *q);
fm_job *fm_reply_queue_poll_end(fm_reply_queue *q);

typedef enum {
    FM_JOB_CALL,        /* call version->fns[fn] */
    FM_JOB_INSTANTIATE, /* make sure this thread has instances of version (warm) */
    FM_JOB_RETIRE,      /* destroy this thread's instances of version */
} fm_job_kind;

struct fm_job {
    h2o_multithread_message_t msg; /* link for the reply queue of an I/O thread */
    fm_job *next;                  /* inbox link */
    fm_job_kind kind;
    int thread;              /* executor thread it runs on */
    fm_version *version;     /* a reference is held by the job (released by fm_job_free) */
    const fm_function *fn;   /* borrowed from version */
    json_t **argv;           /* owned; NULL entries mean `undefined` */
    size_t argc;
    int64_t deadline_us;     /* monotonic, 0 = none */
    char request_id[72];
    fm_trace_ctx trace; /* this call's span (set by whoever makes the job) */
    char *tracestate;   /* owned W3C tracestate passed on to child calls; NULL = none */

    /* result */
    fm_status status;
    char *result;  /* owned JSON text of the return value */
    size_t result_len;
    json_t *error; /* owned {message, name?, stack?} when status != OK */
    int64_t started_us, finished_us;
    bool cold_start;
    int64_t cold_us; /* with cold_start: time spent creating the instance or worker */

    /* routing: a job goes to reply_to when set (batched), else to on_done */
    fm_reply_queue *reply_to;
    void (*on_done)(fm_job *job); /* called once, on the executor thread */
    void *ud;
    uint64_t async_id; /* runtime-private: pending async call id */

    /* The mesh: a call made by another function. */
    int hops;          /* 0 for calls from outside; parent's + 1 */
    bool want_value;   /* deliver the result as `value`, not JSON text */
    bool nested;       /* ran inside its caller's call (fm_mesh_call_resolved with now) */
    json_t *value;     /* owned result when want_value (NULL = null/undefined) */
    void (*mesh_done)(fm_job *child, void *ud); /* the caller's continuation */
    void *mesh_ud;

    /* Metering (see metrics/fnstat.h). */
    uint64_t req_bytes;   /* set by the gateway: bytes of the call's body or query */
    uint64_t cpu_us;      /* set by out-of-process runtimes: the worker's CPU time */
    bool cpu_measured;    /* cpu_us is set; else the executor estimates it */
    uint64_t peak_memory; /* bytes, set by runtimes that can measure it (0 = unknown) */
    int64_t busy_us;      /* executor-private: on-thread time of an async call's first part */
    bool counted;         /* admitted (fm_exec_admit): in its function's inflight count */
    bool slotted;         /* executor-private: holds one of its function's max_concurrency slots */

    /* FM_JOB_INSTANTIATE: when want_exports, the exports found (owned). */
    bool want_exports;
    struct fm_export *ud_exports;
    size_t ud_nexports;
};

/* Admission of a call (any thread, before it is submitted): counts it in its
 * function's calls in flight, or refuses it with FM_OVERLOADED (err filled,
 * the refusal counted as a rejected call) when max_queue calls of that
 * function already wait to start. A refused job is not counted: free it. */
fm_status fm_exec_admit(fm_job *job, fm_err *err);

/* Idle time (default 60 s, `serve --idle-window`) after which an executor
 * thread destroys its instance of a deployment version (not on the
 * version's warm thread), and a worker pool stops its processes beyond
 * the first. Any thread. */
void fm_exec_set_idle_window(int64_t us);
int64_t fm_exec_idle_window(void);

/* --memory-budget (bytes, 0 = none): the node's estimate of its instances'
 * memory (each counts its runtime's instance_bytes) is kept under it by
 * destroying least recently used idle instances, warm ones included. */
void fm_exec_set_memory_budget(int64_t bytes);
/* The estimate, the budget, and instances destroyed to keep under it. */
void fm_exec_memory(int64_t *used, int64_t *budget, uint64_t *evictions);

/* Starts `nregular` executor threads plus `nreserve` reserve threads, which
 * take calls only while every regular thread is in a long call (so code
 * that computes for seconds on all of them does not hold up the others). */
fm_status fm_exec_create(int nregular, int nreserve, fm_exec **out, fm_err *err);
/* Stops the threads once they have run the jobs queued to them; jobs that
 * arrive after a thread stopped (a retirement sent by another thread's
 * last job) are disposed of here. */
void fm_exec_destroy(fm_exec *ex);
int fm_exec_threads(const fm_exec *ex); /* all of them, reserve included */
int fm_exec_regular_threads(const fm_exec *ex);

/* Picks the thread for a new call of `fn` (NULL: not a call): the regular
 * thread with the fewest in flight (ties by rotation); a reserve thread
 * when every regular thread is in a long call, unless all of those are
 * calls of `fn` itself. Any thread. */
int fm_exec_pick(fm_exec *ex, const fm_function *fn);
/* Appends a chain of jobs (linked by ->next, all for thread `t`) and wakes
 * the thread once. Any thread. */
void fm_exec_submit(fm_exec *ex, int t, fm_job *head, fm_job *tail, int count);

/* Job helpers. */
fm_job *fm_job_new(fm_job_kind kind, fm_version *v_ref_taken, const fm_function *fn);
void fm_job_free(fm_job *job);
/* Result setters for runtimes (executor thread). `json` is owned. */
void fm_job_succeed(fm_job *job, char *json, size_t len);
void fm_job_fail(fm_job *job, fm_status st, const char *message, const char *name,
                 const char *stack);
/* Fails the job with FM_TIMEOUT and the standard deadline message. */
void fm_job_fail_timeout(fm_job *job);
/* Status of a call whose uncaught error came from a called function with
 * wire code `code`: the callee's status is kept, else FM_FUNCTION_ERROR. */
fm_status fm_mesh_status(const char *code);
/* Completes the job: records the finish time, metrics and span, calls on_done. */
void fm_job_finish(fm_job *job);
/* The span of a finished FM_JOB_CALL job (its trace context, times
 * started_us..finished_us, status) into *out; fm_job_record_span also
 * records it into the node's trace ring. Callers check `fm_telemetry`. Any
 * thread; never allocates. Also for calls that runtimes run without a job
 * of their own (a frame on the stack). */
void fm_job_span(const fm_job *job, fm_span *out);
/* The same with the signature fm_trace_record_fill wants (jobp: the job). */
void fm_job_span_fill(fm_span *out, const void *jobp);
void fm_job_record_span(const fm_job *job);

/* Result setter for a job with want_value: `v` is owned (NULL = null). */
void fm_job_succeed_value(fm_job *job, json_t *v);

/* ---- the mesh, local part ------------------------------------------------
 * A running function (the job `parent`) calls another function "dep/fn".
 * Executor thread only. The child gets the parent's deadline, request id
 * and hops + 1 (more than FM_MESH_MAX_HOPS is refused), and its result as a
 * value (want_value), never as JSON text. It runs later on this same thread
 * (never re-entrantly inside this call); when it has finished, `done(child,
 * ud)` runs on this thread, and the child is freed after `done` returns.
 * The child continues the parent's trace (fm_trace_child, same tracestate).
 * `argv` (owned, NULL entries = undefined) is consumed either way. On error
 * (unknown function, hop limit) returns the status with `err` filled, and
 * `done` is never called. */
#define FM_MESH_MAX_HOPS 32
typedef void (*fm_mesh_done)(fm_job *child, void *ud);
fm_status fm_mesh_call(fm_job *parent, const char *target, size_t len, json_t **argv, size_t argc,
                       fm_mesh_done done, void *ud, fm_err *err);
/* fm_mesh_call for a function already resolved (takes over the reference to
 * `v`). With `now`, a callee whose runtime allows nested calls
 * (fm_runtime.call_nested, e.g. Lua) and that has no max_concurrency runs
 * at once, inside this call, and `done` may have run before this returns;
 * otherwise the call is queued as by fm_mesh_call. Hops are checked by the
 * caller. */
fm_status fm_mesh_call_resolved(fm_job *parent, fm_version *v, const fm_function *fn,
                                json_t **argv, size_t argc, bool now, fm_mesh_done done, void *ud,
                                fm_err *err);
/* Resolves "dep/fn" (or "dep.fn") to the active version (a reference the
 * caller releases) and the function. NULL with FM_NOT_FOUND in err. */
fm_version *fm_mesh_resolve(const char *target, size_t len, const fm_function **fn, fm_err *err);
/* This executor thread's instance of (v, unit), created if needed (a cold
 * start). For runtimes that call in-process callees directly. NULL + err on
 * failure or when not on an executor thread. */
void *fm_exec_instance_here(fm_version *v, uint32_t unit, fm_err *err);

/* Error of a finished child as a JSON object {message, code, name?, stack?}
 * whose stack ends with a line naming the hop ("hello/merge (lua)"). New reference. */
json_t *fm_mesh_error(const fm_job *child);
/* In a worker process (process isolation) there is no registry: every
 * call a function makes is handed to `fwd`, which sends it to the node.
 * fm_mesh_call then makes the child job (no version, no function: its
 * result and error arrive from the node) and returns FM_OK; the forwarder
 * completes it later with fm_mesh_forwarded_done. */
typedef struct fm_mesh_worker {
    void (*forward)(fm_job *child, const char *target, size_t len, bool now);
    /* The worker's own functions, for runtimes that call them directly:
     * fm_mesh_resolve gives them (a version of the worker's own, with a
     * reference), fm_exec_instance_here the worker's instance. */
    fm_version *(*resolve)(const char *target, size_t len, const fm_function **fn);
    void *(*instance)(fm_version *v, uint32_t unit);
} fm_mesh_worker;
/* Set once at start-up; `w` is borrowed for the life of the process. */
void fm_mesh_set_worker(const fm_mesh_worker *w);
bool fm_mesh_forwarding(void);
/* fm_mesh_call for fnmesh.callSync: in a worker process the forwarder
 * waits for the answer (`done` has run when this returns FM_OK); else the
 * same as fm_mesh_call. */
fm_status fm_mesh_call_sync(fm_job *parent, const char *target, size_t len, json_t **argv,
                            size_t argc, fm_mesh_done done, void *ud, fm_err *err);
/* Completes a forwarded child (status and value/error set): runs its
 * continuation and frees it. */
void fm_mesh_forwarded_done(fm_job *child);
/* The registry mesh calls resolve names in (set once at start-up). */
struct fm_registry;
void fm_mesh_set_registry(struct fm_registry *r);

/* Out-of-process runtimes: watch an fd (their worker's socket) from the
 * calling executor thread's loop; `cb` runs on this thread with the epoll
 * events. Returns 0 or -1. Executor thread only. */
typedef void (*fm_exec_watch_cb)(uint32_t events, void *ud);
typedef struct fm_exec_watch fm_exec_watch;
fm_exec_watch *fm_exec_watch_add(int fd, uint32_t events, fm_exec_watch_cb cb, void *ud);
/* Stops watching (the fd stays open: the caller closes it afterwards). */
void fm_exec_watch_del(fm_exec_watch *w);

/* True on an executor thread with no call queued, running or awaiting:
 * the moment for work nobody waits for. */
bool fm_exec_idle_here(void);
/* Number of calls queued or running on thread t. */
int fm_exec_inflight(fm_exec *ex, int t);
/* Threads running one job for more than a second (engine code that cannot
 * be interrupted, or a long synchronous computation). Any thread. */
int fm_exec_stuck(fm_exec *ex);

/* The executor a version's retire jobs go to (set once at start-up). */
extern fm_exec *fm_exec_global;

#endif
