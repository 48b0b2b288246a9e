/* exec.c - executor threads (see exec.h).
 *
 * Each thread loops: run runtime timers, take the whole inbox under its
 * mutex, run the jobs. The mutex is shared only by that thread and whoever
 * submits to it, and a submitter signals only when the thread sleeps, so a
 * busy executor takes batches without any wake-up at all. */
#include "exec/exec.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/util.h"
#include "metrics/fnstat.h"
#include "registry/registry.h"
#include "runtime/runtime.h"

#define FM_MAX_RUNTIMES 8

typedef struct exthread {
    pthread_t tid;
    int index;
    fm_exec *ex;
    pthread_mutex_t mu;
    int epfd;            /* where this thread sleeps: its wake eventfd and watched fds */
    int wakefd;
    fm_job *head, *tail; /* inbox, guarded by mu */
    bool sleeping;       /* guarded by mu */
    atomic_int inflight;
    _Atomic int64_t busy_since_us; /* start of the job running now, 0 when idle */
    _Atomic(const fm_function *) running_fn; /* that job's function (NULL: not a call) */
    void *rt_state[FM_MAX_RUNTIMES];
    fm_job *local_head, *local_tail; /* mesh calls made on this thread; own thread only */
    /* instances this thread made (for idle eviction); own thread only */
    struct held { fm_version *v; uint32_t unit; size_t bytes; } *held;
    size_t nheld, held_cap;
    int64_t next_evict_us;
} exthread;

/* Idle time after which what a deployment has beyond its warm instance is
 * given back (see fm_exec_set_idle_window). */
static _Atomic int64_t idle_window_us = 60 * 1000000LL;

void fm_exec_set_idle_window(int64_t us) {
    atomic_store(&idle_window_us, us > 0 ? us : 1);
}

int64_t fm_exec_idle_window(void) {
    return atomic_load_explicit(&idle_window_us, memory_order_relaxed);
}

/* --memory-budget: the instances' estimated memory (fm_runtime.instance_bytes)
 * and the budget (0: none). Past it, every executor thread destroys its
 * least recently used idle instances, warm ones included. */
static _Atomic int64_t mem_budget, mem_used;
static atomic_uint_fast64_t budget_evictions;

void fm_exec_set_memory_budget(int64_t bytes) {
    atomic_store(&mem_budget, bytes > 0 ? bytes : 0);
}

void fm_exec_memory(int64_t *used, int64_t *budget, uint64_t *evictions) {
    *used = atomic_load_explicit(&mem_used, memory_order_relaxed);
    *budget = atomic_load_explicit(&mem_budget, memory_order_relaxed);
    *evictions = atomic_load_explicit(&budget_evictions, memory_order_relaxed);
}

static bool over_budget(void) {
    int64_t b = atomic_load_explicit(&mem_budget, memory_order_relaxed);
    return b > 0 && atomic_load_explicit(&mem_used, memory_order_relaxed) > b;
}

static __thread exthread *tls_thread; /* the executor thread running here, or NULL */
static fm_registry *mesh_registry;
static const fm_mesh_worker *mesh_worker; /* worker processes only */

struct fm_exec {
    int n;        /* all threads: the regular ones first, then the reserve */
    int nregular; /* threads calls go to unless all of them are in long calls */
    exthread *t;
    atomic_bool stop;
    atomic_uint rr;
};

fm_exec *fm_exec_global;

fm_job *fm_job_new(fm_job_kind kind, fm_version *v, const fm_function *fn) {
    fm_job *j = calloc(1, sizeof(*j));
    j->kind = kind;
    j->version = v;
    j->fn = fn;
    j->thread = -1;
    return j;
}

void fm_job_free(fm_job *job) {
    if (!job) return;
    for (size_t i = 0; i < job->argc; i++) json_decref(job->argv[i]);
    free(job->argv);
    free(job->result);
    json_decref(job->error);
    json_decref(job->value);
    free(job->tracestate);
    if (job->kind != FM_JOB_RETIRE) fm_version_release(job->version);
    fm_exports_free(job->ud_exports, job->ud_nexports);
    free(job);
}

void fm_job_succeed(fm_job *job, char *json, size_t len) {
    job->status = FM_OK;
    free(job->result);
    job->result = json;
    job->result_len = len;
}

void fm_job_succeed_value(fm_job *job, json_t *v) {
    job->status = FM_OK;
    json_decref(job->value);
    job->value = v;
}

void fm_job_fail(fm_job *job, fm_status st, const char *message, const char *name,
                 const char *stack) {
    job->status = st;
    json_decref(job->error);
    job->error = json_object();
    json_object_set_new(job->error, "message", fm_json_str(message ? message : "error"));
    if (name) json_object_set_new(job->error, "name", fm_json_str(name));
    if (stack) json_object_set_new(job->error, "stack", fm_json_str(stack));
}

int fm_reply_queue_init(fm_reply_queue *q) {
    memset(q, 0, sizeof(*q));
    pthread_mutex_init(&q->mu, NULL);
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return q->efd < 0 ? -1 : 0;
}

void fm_reply_queue_dispose(fm_reply_queue *q) {
    if (q->efd >= 0) close(q->efd);
    q->efd = -1;
    pthread_mutex_destroy(&q->mu);
}

fm_job *fm_reply_queue_take(fm_reply_queue *q) {
    pthread_mutex_lock(&q->mu);
    fm_job *list = q->head;
    q->head = q->tail = NULL;
    q->signalled = false;
    pthread_mutex_unlock(&q->mu);
    return list;
}

void fm_reply_queue_poll_begin(fm_reply_queue *q) {
    pthread_mutex_lock(&q->mu);
    q->polling = true;
    pthread_mutex_unlock(&q->mu);
}

fm_job *fm_reply_queue_poll_end(fm_reply_queue *q) {
    pthread_mutex_lock(&q->mu);
    q->polling = false;
    fm_job *list = q->head;
    q->head = q->tail = NULL;
    q->signalled = false;
    pthread_mutex_unlock(&q->mu);
    return list;
}

/* Replies finished during the current pass of this executor thread, per queue. */
#define OUTBOX_QUEUES 8
typedef struct outbox {
    fm_reply_queue *q;
    fm_job *head, *tail;
} outbox;
static __thread outbox tls_out[OUTBOX_QUEUES];
static __thread int tls_nout;
static __thread int64_t tls_out_since;

/* Appends a chain (head..tail) to q, writing its eventfd when the consumer
 * has not been signalled yet. */
static void push_chain(fm_reply_queue *q, fm_job *head, fm_job *tail) {
    pthread_mutex_lock(&q->mu);
    if (q->tail) q->tail->next = head;
    else q->head = head;
    q->tail = tail;
    bool wake = !q->signalled && !q->polling;
    if (wake) q->signalled = true;
    pthread_mutex_unlock(&q->mu);
    if (wake) {
        uint64_t one = 1;
        ssize_t w = write(q->efd, &one, sizeof(one));
        (void)w;
    }
}

void fm_reply_queue_push(fm_reply_queue *q, fm_job *job) {
    job->next = NULL;
    push_chain(q, job, job);
}

static void flush_replies(void) {
    for (int i = 0; i < tls_nout; i++) {
        outbox *o = &tls_out[i];
        push_chain(o->q, o->head, o->tail);
        o->q = NULL;
        o->head = o->tail = NULL;
    }
    tls_nout = 0;
}

static void outbox_add(fm_job *job) {
    int i;
    for (i = 0; i < tls_nout; i++)
        if (tls_out[i].q == job->reply_to) break;
    if (i == tls_nout) {
        if (tls_nout == OUTBOX_QUEUES) {
            flush_replies();
            i = 0;
        }
        if (tls_nout == 0) tls_out_since = fm_mono_us();
        tls_out[i].q = job->reply_to;
        tls_nout = i + 1;
    }
    job->next = NULL;
    outbox *o = &tls_out[i];
    if (o->tail) o->tail->next = job;
    else o->head = job;
    o->tail = job;
}

void fm_job_fail_timeout(fm_job *job) {
    char msg[128];
    if (job->fn) /* a worker's forwarded call has no function: its caller's deadline passed */
        snprintf(msg, sizeof(msg), "deadline exceeded: the function ran longer than %lld ms",
                 (long long)job->fn->timeout_ms);
    else
        snprintf(msg, sizeof(msg), "deadline exceeded: the caller's deadline passed first");
    fm_job_fail(job, FM_TIMEOUT, msg, NULL, NULL);
}

fm_status fm_mesh_status(const char *code) {
    return fm_status_from_code(code, FM_FUNCTION_ERROR);
}

/* ---- CPU accounting of in-process calls ----
 * Reading the thread's CPU clock is a system call (about 0.3 µs here), too
 * dear for every call. Instead the clock is read when an executor thread
 * that ran in-process calls goes back to sleep (and every PENDING_MAX
 * calls): the CPU since the previous reading (a sleeping thread uses none)
 * is shared among the work done meanwhile in proportion to time on the
 * thread, and the calls' shares are added to their functions' usage then. Work whose CPU is
 * accounted elsewhere (worker-process calls, which report their own) or
 * belongs to nobody (instantiation, timers and promise continuations) takes
 * its share out of the window without being billed. A call's CPU never
 * exceeds its time on the thread. */
#define PENDING_MAX 64
typedef struct pending_cpu {
    fm_fnstat *st;          /* never freed */
    fm_fn_metrics *metrics; /* of a version alive until the window closes (see RETIRE) */
    int64_t busy_us;
} pending_cpu;
static __thread pending_cpu tls_pending[PENDING_MAX];
static __thread int tls_npending;
static __thread fm_job *tls_running;     /* the call whose synchronous part runs now */
static __thread int64_t tls_window_cpu;  /* thread CPU ns at the last reading; 0: not counting */
static __thread int64_t tls_window_busy; /* µs of work (of any kind) in the window */
static __thread double tls_cpu_ratio = 1.0; /* of the last window: for calls ending outside one */

static int64_t thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void window_open(void) {
    if (!fm_telemetry) return;
    tls_window_cpu = thread_cpu_ns();
    tls_window_busy = 0;
}

/* Bills the pending in-process calls their share of the CPU since the last
 * reading; the next window starts at this reading. */
static void window_flush(void) {
    if (!tls_window_cpu || !tls_npending) return;
    int64_t cpu = thread_cpu_ns();
    if (tls_window_busy > 0) {
        double r = (double)(cpu - tls_window_cpu) / 1e3 / (double)tls_window_busy;
        tls_cpu_ratio = r < 0 ? 0 : r > 1 ? 1 : r;
    }
    int64_t now = fm_mono_us();
    for (int i = 0; i < tls_npending; i++) {
        pending_cpu *p = &tls_pending[i];
        uint64_t c = (uint64_t)((double)p->busy_us * tls_cpu_ratio + 0.5);
        fm_fnstat_add_cpu(p->st, c, now);
        fm_metrics_record_usage(p->metrics, c, 0);
    }
    tls_npending = 0;
    tls_window_cpu = cpu > 0 ? cpu : 1;
    tls_window_busy = 0;
}

/* Work of `us` on the thread inside the window (its share of the CPU). */
static void window_work(int64_t us) {
    if (tls_window_cpu && us > 0) tls_window_busy += us;
}

static void record_call(fm_job *job, fm_outcome o, int64_t duration_us) {
    fm_function *f = (fm_function *)job->fn; /* stat is the atomic part of the function */
    fm_fnstat *st = atomic_load_explicit(&f->stat, memory_order_acquire);
    if (!st) {
        st = fm_fnstat_get(job->version->deployment, f->name, f->rt->name);
        atomic_store_explicit(&f->stat, st, memory_order_release);
    }
    fm_call_sample c = {.outcome = o, .duration_us = duration_us, .req_bytes = job->req_bytes,
                        .peak_memory = job->peak_memory,
                        .cold_us = job->cold_start ? (job->cold_us > 0 ? job->cold_us : 1) : 0};
    if (!job->want_value) c.resp_bytes = job->status == FM_OK ? job->result_len : 0;
    if (job->cpu_measured) {
        c.cpu_us = job->cpu_us;
    } else if (duration_us >= 0) { /* in-process: its share of the window's CPU, later */
        int64_t busy = job == tls_running ? duration_us : job->busy_us;
        if (busy > 0 && tls_window_cpu) {
            if (tls_npending == PENDING_MAX) window_flush(); /* bill what is pending */
            tls_pending[tls_npending++] = (pending_cpu){st, &f->metrics, busy};
        } else if (busy > 0) { /* outside a window (a timer's continuation): the last ratio */
            c.cpu_us = (uint64_t)((double)busy * tls_cpu_ratio + 0.5);
        }
    }
    fm_fnstat_record(st, &c, job->finished_us);
    fm_metrics_record_usage(&f->metrics, c.cpu_us, c.peak_memory);
}

/* ---- admission and concurrency ----
 * A function's `inflight` counts its calls from admission to finish and
 * `running` those that started (or hold a concurrency slot); the difference
 * is its queue. Both are relaxed counters: admission is a statistic, so a
 * burst may overshoot max_queue by the number of threads admitting at once.
 * With max_concurrency, a call that finds every slot taken waits in the
 * function's FIFO (under wait_mu) and gets the slot of the next call of that
 * function that finishes, which submits it again to the thread it was on. */

fm_status fm_exec_admit(fm_job *job, fm_err *err) {
    fm_function *f = (fm_function *)job->fn; /* the counters are its atomic part */
    if (!f || job->counted) return FM_OK;
    int queued = atomic_load_explicit(&f->metrics.inflight, memory_order_relaxed) -
                 atomic_load_explicit(&f->metrics.running, memory_order_relaxed);
    if (queued >= f->max_queue) {
        if (fm_telemetry) {
            fm_metrics_record(&f->metrics, FM_OUTCOME_REJECTED, -1, 0);
            job->finished_us = fm_mono_us();
            job->status = FM_OVERLOADED;
            record_call(job, FM_OUTCOME_REJECTED, -1);
        }
        return fm_err_set(err, FM_OVERLOADED,
                          "%s/%s is overloaded: %d calls wait to start (max_queue %d); retry later",
                          job->version->deployment, f->name, queued, f->max_queue);
    }
    job->counted = true;
    atomic_fetch_add_explicit(&f->metrics.inflight, 1, memory_order_relaxed);
    return FM_OK;
}

/* A concurrency slot for a job of a function with max_concurrency, or the
 * job parked in the function's FIFO (false: it left this thread for now). */
static bool take_slot(exthread *t, fm_function *f, fm_job *job) {
    pthread_mutex_lock(&f->wait_mu);
    bool got = atomic_load_explicit(&f->metrics.running, memory_order_relaxed) <
               f->max_concurrency;
    if (got) {
        atomic_fetch_add_explicit(&f->metrics.running, 1, memory_order_relaxed);
    } else {
        job->next = NULL;
        if (f->wait_tail) f->wait_tail->next = job;
        else f->wait_head = job;
        f->wait_tail = job;
    }
    pthread_mutex_unlock(&f->wait_mu);
    if (got) job->slotted = true;
    else atomic_fetch_sub_explicit(&t->inflight, 1, memory_order_relaxed);
    return got;
}

/* A finished job's slot goes to the function's next waiting call, if any. */
static void release_slot(fm_function *f) {
    pthread_mutex_lock(&f->wait_mu);
    fm_job *next = f->wait_head;
    if (next) {
        f->wait_head = next->next;
        if (!f->wait_head) f->wait_tail = NULL;
        next->next = NULL;
        next->slotted = true; /* running stays: the slot changes hands */
    } else {
        atomic_fetch_sub_explicit(&f->metrics.running, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&f->wait_mu);
    if (next) fm_exec_submit(fm_exec_global, next->thread, next, next, 1);
}

void fm_job_span(const fm_job *job, fm_span *out) {
    fm_job_span_fill(out, job);
}

void fm_job_span_fill(fm_span *out, const void *jobp) {
    const fm_job *job = jobp;
    out->ctx = job->trace;
    out->kind = job->hops == 0 ? FM_SPAN_SERVER : FM_SPAN_INTERNAL;
    out->outcome = (uint8_t)fm_metrics_outcome(job->status);
    out->error = job->status != FM_OK;
    out->cold_start = job->cold_start;
    out->hops = job->hops;
    int64_t t0 = job->started_us ? job->started_us : job->finished_us;
    out->start_ns = fm_trace_wall_ns(t0);
    out->end_ns = fm_trace_wall_ns(job->finished_us > t0 ? job->finished_us : t0);
    fm_trace_copy(out->deployment, sizeof(out->deployment), job->version->deployment);
    fm_trace_copy(out->function, sizeof(out->function), job->fn->name);
    fm_trace_copy(out->runtime, sizeof(out->runtime), job->fn->rt->name);
    size_t vl = strnlen(job->version->id, 12); /* its first 12 hex digits, as in the metrics */
    memcpy(out->version, job->version->id, vl);
    out->version[vl] = '\0';
    fm_trace_copy(out->request_id, sizeof(out->request_id), job->request_id);
    fm_trace_copy(out->message, sizeof(out->message),
                  out->error ? json_string_value(json_object_get(job->error, "message")) : NULL);
}

void fm_job_record_span(const fm_job *job) {
    fm_trace_record_fill(fm_job_span_fill, job);
}

void fm_job_finish(fm_job *job) {
    job->finished_us = fm_mono_us();
    if (job->kind == FM_JOB_CALL && job->fn && fm_telemetry) {
        fm_job_record_span(job);
    }
    if (job->kind == FM_JOB_CALL && job->fn && fm_telemetry && !mesh_worker) { /* the node's */
        fm_outcome o = fm_metrics_outcome(job->status);
        /* metrics are the mutable, atomic part of the (otherwise const) function */
        int64_t duration = job->started_us ? job->finished_us - job->started_us : -1;
        fm_metrics_record((fm_fn_metrics *)&job->fn->metrics, o, duration, job->cold_start);
        record_call(job, o, duration);
    }
    if (job->kind == FM_JOB_CALL && job->counted) {
        fm_function *f = (fm_function *)job->fn;
        atomic_fetch_sub_explicit(&f->metrics.inflight, 1, memory_order_relaxed);
        if (job->slotted) release_slot(f);
        else if (job->started_us)
            atomic_fetch_sub_explicit(&f->metrics.running, 1, memory_order_relaxed);
    }
    if (job == tls_running) tls_running = NULL;
    if (job->kind == FM_JOB_CALL && fm_exec_global && job->thread >= 0) {
        exthread *t = &fm_exec_global->t[job->thread];
        atomic_fetch_sub_explicit(&t->inflight, 1, memory_order_relaxed);
    }
    if (job->reply_to) outbox_add(job);
    else if (job->on_done) job->on_done(job);
    else fm_job_free(job);
}

static void **slot(fm_version *v, int thread, uint32_t unit) {
    return &v->instances[(size_t)thread * v->nunits + unit];
}

bool fm_exec_idle_here(void) {
    exthread *t = tls_thread;
    if (!t || t->local_head || atomic_load_explicit(&t->inflight, memory_order_relaxed) > 0)
        return false;
    pthread_mutex_lock(&t->mu);
    bool idle = !t->head;
    pthread_mutex_unlock(&t->mu);
    return idle;
}

/* Wakes every executor thread (to evict over the memory budget). */
static void wake_all(fm_exec *ex) {
    for (int i = 0; i < ex->n; i++) {
        uint64_t one = 1;
        ssize_t w = write(ex->t[i].wakefd, &one, sizeof(one));
        (void)w;
    }
}

static void drop_held(exthread *t, size_t i);

/* Returns this thread's instance of (v, unit), creating it if needed. */
static void *get_instance(exthread *t, fm_version *v, uint32_t unit, bool *cold, fm_export **ex,
                          size_t *nex, fm_err *err) {
    void **s = slot(v, t->index, unit);
    if (*s && !ex) return *s;
    const fm_unit *u = &v->units[unit];
    int ri = fm_runtime_index(u->rt);
    void *inst = NULL;
    fm_instance_limits lim = {.memory = (size_t)v->manifest.memory_mb << 20,
                              .max_workers = (int)v->manifest.max_instances};
    if (*s) { /* exports wanted from an existing instance: make a scratch one */
        if (u->rt->instance_create(t->rt_state[ri], v->deployment, u->artifact, u->artifact_len,
                                   &lim, &inst, ex, nex, err) != FM_OK)
            return NULL;
        u->rt->instance_destroy(t->rt_state[ri], inst);
        return *s;
    }
    if (u->rt->instance_create(t->rt_state[ri], v->deployment, u->artifact, u->artifact_len,
                               &lim, &inst, ex, nex, err) != FM_OK)
        return NULL;
    if (cold) *cold = true;
    *s = inst;
    atomic_fetch_add_explicit(&((fm_unit *)u)->instances, 1, memory_order_relaxed);
    if (t->nheld == t->held_cap) {
        t->held_cap = t->held_cap ? t->held_cap * 2 : 16;
        t->held = realloc(t->held, t->held_cap * sizeof(*t->held));
    }
    size_t bytes = u->rt->instance_bytes;
    t->held[t->nheld++] = (struct held){v, unit, bytes};
    atomic_fetch_add_explicit(&mem_used, (int64_t)bytes, memory_order_relaxed);
    if (over_budget() && fm_exec_global) wake_all(fm_exec_global);
    v->last_used_us[(size_t)t->index * v->nunits + unit] = fm_mono_us();
    t->next_evict_us = 0; /* look at it when its idle window could have passed */
    return inst;
}

static void run_job(exthread *t, fm_job *job) {
    fm_version *v = job->version;
    fm_err err = FM_ERR_INIT;
    switch (job->kind) {
    case FM_JOB_CALL: {
        fm_function *f = (fm_function *)job->fn;
        if (f->max_concurrency > 0 && job->counted) {
            if (!job->slotted && !take_slot(t, f, job)) return; /* parked */
        } else if (job->counted) {
            atomic_fetch_add_explicit(&f->metrics.running, 1, memory_order_relaxed);
        }
        job->started_us = fm_mono_us();
        if (job->deadline_us && job->started_us >= job->deadline_us) {
            fm_job_fail(job, FM_TIMEOUT, "deadline exceeded before the call started", NULL, NULL);
            fm_job_finish(job);
            return;
        }
        void *inst = get_instance(t, v, job->fn->unit, &job->cold_start, NULL, NULL, &err);
        if (job->cold_start) job->cold_us = fm_mono_us() - job->started_us;
        v->last_used_us[(size_t)t->index * v->nunits + job->fn->unit] = job->started_us;
        if (!inst) {
            fm_job_fail(job, FM_INTERNAL, err.msg, NULL, NULL);
            fm_err_clear(&err);
            fm_job_finish(job);
            return;
        }
        const fm_runtime *rt = job->fn->rt;
        int64_t started = job->started_us;
        bool nested = job->nested; /* the job may be freed by the time `call` returns */
        tls_running = job;
        rt->call(t->rt_state[fm_runtime_index(rt)], inst, job->fn->index, job);
        bool still = tls_running == job; /* still running (async): it finishes later */
        if (!still && nested) return;    /* finished inside its caller, whose time it is */
        int64_t now = fm_mono_us();
        if (still) {
            job->busy_us = now - started;
            tls_running = NULL;
        }
        if (!nested) window_work(now - started); /* its share: billed to it when in-process */
        return;
    }
    case FM_JOB_INSTANTIATE: {
        int64_t t0 = tls_window_cpu ? fm_mono_us() : 0; /* its CPU is nobody's call */
        job->status = FM_OK;
        for (uint32_t u = 0; u < v->nunits; u++) {
            fm_export *ex = NULL;
            size_t nex = 0;
            void *inst = get_instance(t, v, u, NULL, job->want_exports ? &ex : NULL,
                                      job->want_exports ? &nex : NULL, &err);
            if (!inst) {
                job->status = err.status ? err.status : FM_INTERNAL;
                fm_job_fail(job, job->status, err.msg, NULL, NULL);
                fm_err_clear(&err);
                fm_exports_free(ex, nex);
                break;
            }
            if (job->want_exports) {
                job->ud_exports = realloc(job->ud_exports,
                                          (job->ud_nexports + nex + 1) * sizeof(fm_export));
                for (size_t i = 0; i < nex; i++) {
                    ex[i].unit = u;
                    ex[i].index = (uint32_t)i;
                    job->ud_exports[job->ud_nexports++] = ex[i];
                }
                free(ex);
            }
        }
        if (t0) window_work(fm_mono_us() - t0);
        fm_job_finish(job);
        return;
    }
    case FM_JOB_RETIRE: {
        window_flush(); /* pending CPU may point into this version's functions: bill it first */
        for (size_t i = 0; i < t->nheld;)
            if (t->held[i].v == v) drop_held(t, i);
            else i++;
        for (uint32_t u = 0; u < v->nunits; u++) {
            void **s = slot(v, t->index, u);
            if (*s) {
                const fm_runtime *rt = v->units[u].rt;
                rt->instance_destroy(t->rt_state[fm_runtime_index(rt)], *s);
                *s = NULL;
                atomic_fetch_sub_explicit(&v->units[u].instances, 1, memory_order_relaxed);
            }
        }
        if (atomic_fetch_sub(&v->retire_left, 1) == 1) fm_version_free(v);
        free(job);
        return;
    }
    }
}

/* A call of the version admitted anywhere and not finished. */
static bool version_busy(const fm_version *v) {
    for (size_t i = 0; i < v->nfns; i++)
        if (atomic_load_explicit(&v->fns[i].metrics.inflight, memory_order_relaxed) > 0)
            return true;
    return false;
}

/* Forgets held entry i (its instance is gone). */
static void drop_held(exthread *t, size_t i) {
    atomic_fetch_sub_explicit(&mem_used, (int64_t)t->held[i].bytes, memory_order_relaxed);
    t->held[i] = t->held[--t->nheld];
}

/* Destroys the instance of held entry i (the next call here makes it again). */
static void evict(exthread *t, size_t i) {
    fm_version *v = t->held[i].v;
    uint32_t u = t->held[i].unit;
    window_flush(); /* pending CPU may point into this version's functions */
    void **s = slot(v, t->index, u);
    const fm_runtime *rt = v->units[u].rt;
    rt->instance_destroy(t->rt_state[fm_runtime_index(rt)], *s);
    *s = NULL;
    atomic_fetch_sub_explicit(&v->units[u].instances, 1, memory_order_relaxed);
    drop_held(t, i);
}

/* Destroys this thread's instances that had no call for the idle window,
 * except on the version's warm thread (a deployment keeps a warm instance)
 * and while the version has calls in flight (async work may be on them).
 * The next call here makes a new one from the compiled artifact (a cold
 * start). Returns µs until the next one may be due, or -1. */
static int64_t evict_idle(exthread *t, int64_t now) {
    int64_t window = fm_exec_idle_window(), next = -1;
    for (size_t i = 0; i < t->nheld;) {
        fm_version *v = t->held[i].v;
        uint32_t u = t->held[i].unit;
        int64_t last = v->last_used_us[(size_t)t->index * v->nunits + u];
        if (v->warm_thread == t->index) {
            i++;
            continue;
        }
        if (now - last < window || version_busy(v)) {
            int64_t at = now - last < window ? last + window - now : window;
            if (next < 0 || at < next) next = at;
            i++;
            continue;
        }
        evict(t, i);
    }
    return next;
}

/* Over --memory-budget: destroys this thread's least recently used idle
 * instances (warm ones too: the next call makes one again, a cold start)
 * until the node is back under it or nothing here is idle. */
static void evict_over_budget(exthread *t) {
    while (over_budget()) {
        size_t lru = SIZE_MAX;
        int64_t oldest = INT64_MAX;
        for (size_t i = 0; i < t->nheld; i++) {
            fm_version *v = t->held[i].v;
            int64_t last = v->last_used_us[(size_t)t->index * v->nunits + t->held[i].unit];
            if (last < oldest && !version_busy(v)) oldest = last, lru = i;
        }
        if (lru == SIZE_MAX) return;
        evict(t, lru);
        atomic_fetch_add_explicit(&budget_evictions, 1, memory_order_relaxed);
    }
}

/* Runs the mesh calls queued on this thread (and those they queue). */
static void run_local(exthread *t) {
    while (t->local_head) {
        fm_job *j = t->local_head;
        t->local_head = j->next;
        if (!t->local_head) t->local_tail = NULL;
        j->next = NULL;
        run_job(t, j);
    }
}

/* ---- fds watched by executor threads (worker sockets of out-of-process runtimes) ---- */

struct fm_exec_watch {
    int fd;
    bool dead;
    fm_exec_watch_cb cb;
    void *ud;
    struct fm_exec_watch *next_dead;
};

/* Watches removed during this thread's event pass, freed after it. */
static __thread fm_exec_watch *tls_dead_watches;

fm_exec_watch *fm_exec_watch_add(int fd, uint32_t events, fm_exec_watch_cb cb, void *ud) {
    exthread *t = tls_thread;
    if (!t) return NULL;
    fm_exec_watch *w = calloc(1, sizeof(*w));
    w->fd = fd;
    w->cb = cb;
    w->ud = ud;
    struct epoll_event ev = {.events = events, .data.ptr = w};
    if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        free(w);
        return NULL;
    }
    return w;
}

void fm_exec_watch_del(fm_exec_watch *w) {
    exthread *t = tls_thread;
    if (!w || !t) return;
    epoll_ctl(t->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->dead = true;
    w->next_dead = tls_dead_watches;
    tls_dead_watches = w;
}

static void free_dead_watches(void) {
    while (tls_dead_watches) {
        fm_exec_watch *w = tls_dead_watches;
        tls_dead_watches = w->next_dead;
        free(w);
    }
}

/* Sleeps until woken, a watched fd is ready, or wait_us passed (-1: no limit). */
static void wait_events(exthread *t, int64_t wait_us) {
    struct epoll_event evs[32];
    struct timespec ts = {0}, *tp = NULL;
    if (wait_us >= 0) {
        ts.tv_sec = wait_us / 1000000;
        ts.tv_nsec = (wait_us % 1000000) * 1000;
        tp = &ts;
    }
    static atomic_bool no_pwait2; /* kernels before 5.11 (and valgrind) lack epoll_pwait2 */
    int n = -1;
    if (!atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
        n = epoll_pwait2(t->epfd, evs, 32, tp, NULL);
        if (n < 0 && errno == ENOSYS) atomic_store(&no_pwait2, true);
    }
    if (atomic_load_explicit(&no_pwait2, memory_order_relaxed)) /* ms resolution, rounded up */
        n = epoll_wait(t->epfd, evs, 32, wait_us < 0 ? -1 : (int)((wait_us + 999) / 1000));
    for (int i = 0; i < n; i++) {
        if (evs[i].data.ptr == NULL) { /* the wake eventfd */
            uint64_t v;
            ssize_t r = read(t->wakefd, &v, sizeof(v));
            (void)r;
            continue;
        }
        fm_exec_watch *w = evs[i].data.ptr;
        int64_t t0 = tls_window_cpu ? fm_mono_us() : 0; /* worker answers: nobody's CPU */
        if (!w->dead) w->cb(evs[i].events, w->ud);
        if (t0) window_work(fm_mono_us() - t0);
    }
    free_dead_watches();
}

static void *thread_main(void *arg) {
    exthread *t = arg;
    fm_exec *ex = t->ex;
    /* SCHED_BATCH: a woken executor does not preempt the I/O thread that
     * woke it (same core), so the I/O thread finishes its event-loop pass
     * and hands over a whole batch instead of one job per context switch. */
    struct sched_param sp = {0};
    pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    tls_thread = t;
    for (size_t i = 0; i < fm_runtime_count; i++)
        t->rt_state[i] = fm_runtimes[i]->thread_init(t->index);
    window_open();
    for (;;) {
        int64_t wait_us = -1;
        int64_t polled = tls_window_cpu ? fm_mono_us() : 0;
        for (size_t i = 0; i < fm_runtime_count; i++) {
            int64_t w = fm_runtimes[i]->poll(t->rt_state[i]);
            if (w >= 0 && (wait_us < 0 || w < wait_us)) wait_us = w;
        }
        if (polled) window_work(fm_mono_us() - polled); /* timers, promise continuations */
        if (t->nheld) {
            int64_t now = fm_mono_us();
            if (now >= t->next_evict_us) {
                int64_t n = evict_idle(t, now);
                t->next_evict_us = n < 0 ? INT64_MAX : now + (n < 100000 ? 100000 : n);
            }
            if (t->next_evict_us != INT64_MAX) {
                int64_t w = t->next_evict_us > now ? t->next_evict_us - now : 0;
                if (wait_us < 0 || w < wait_us) wait_us = w;
            }
        }
        run_local(t);
        if (t->nheld && over_budget()) evict_over_budget(t);
        for (size_t i = 0; i < fm_runtime_count; i++)
            if (fm_runtimes[i]->flush) fm_runtimes[i]->flush(t->rt_state[i]);
        flush_replies();
        pthread_mutex_lock(&t->mu);
        if (!t->head && !atomic_load(&ex->stop) && wait_us != 0) {
            t->sleeping = true;
            pthread_mutex_unlock(&t->mu);
            window_flush(); /* a sleeping thread uses no CPU: bill what ran before */
            wait_events(t, wait_us);
            pthread_mutex_lock(&t->mu);
            t->sleeping = false;
        }
        fm_job *list = t->head;
        t->head = t->tail = NULL;
        pthread_mutex_unlock(&t->mu);
        if (!list && atomic_load(&ex->stop)) break;
        while (list) {
            fm_job *next = list->next;
            list->next = NULL;
            atomic_store_explicit(&t->running_fn, list->kind == FM_JOB_CALL ? list->fn : NULL,
                                  memory_order_relaxed);
            atomic_store_explicit(&t->busy_since_us, fm_mono_us(), memory_order_relaxed);
            run_job(t, list);
            run_local(t);
            atomic_store_explicit(&t->busy_since_us, 0, memory_order_relaxed);
            atomic_store_explicit(&t->running_fn, NULL, memory_order_relaxed);
            list = next;
            /* don't hold finished replies back behind a long batch */
            if (tls_nout && fm_mono_us() - tls_out_since > 200) {
                window_flush(); /* usage of a call is complete before its answer leaves */
                flush_replies();
            }
        }
        /* instances the batch made are given back before its answers leave:
         * who reads the metrics after an answer finds the node within budget */
        if (t->nheld && over_budget()) evict_over_budget(t);
        window_flush();
        flush_replies();
    }
    window_flush();
    /* this thread's instances go with its runtimes' state: a retirement that
     * comes after it stopped (fm_exec_destroy) finds their slots empty */
    while (t->nheld) evict(t, t->nheld - 1);
    for (size_t i = 0; i < fm_runtime_count; i++) fm_runtimes[i]->thread_dispose(t->rt_state[i]);
    free_dead_watches();
    free(t->held);
    t->held = NULL;
    t->nheld = 0;
    return NULL;
}

fm_status fm_exec_create(int nregular, int nreserve, fm_exec **out, fm_err *err) {
    if (nregular < 1) nregular = 1;
    if (nreserve < 0) nreserve = 0;
    int nthreads = nregular + nreserve;
    fm_exec *ex = calloc(1, sizeof(*ex));
    ex->n = nthreads;
    ex->nregular = nregular;
    ex->t = calloc((size_t)nthreads, sizeof(exthread));
    fm_exec_global = ex;
    for (int i = 0; i < nthreads; i++) {
        exthread *t = &ex->t[i];
        t->index = i;
        t->ex = ex;
        pthread_mutex_init(&t->mu, NULL);
        t->epfd = epoll_create1(EPOLL_CLOEXEC);
        t->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        if (t->epfd < 0 || t->wakefd < 0 || epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->wakefd, &ev)) {
            ex->n = i;
            fm_exec_destroy(ex);
            return fm_err_set(err, FM_INTERNAL, "executor %d: epoll/eventfd failed", i);
        }
        if (pthread_create(&t->tid, NULL, thread_main, t) != 0) {
            ex->n = i;
            fm_exec_destroy(ex);
            return fm_err_set(err, FM_INTERNAL, "cannot start executor thread %d", i);
        }
        char name[16];
        if (i < nregular) snprintf(name, sizeof(name), "fm-exec-%d", i & 0xffff);
        else snprintf(name, sizeof(name), "fm-reserve-%d", (i - nregular) & 0xff);
        pthread_setname_np(t->tid, name);
    }
    *out = ex;
    return FM_OK;
}

void fm_exec_destroy(fm_exec *ex) {
    if (!ex) return;
    atomic_store(&ex->stop, true);
    for (int i = 0; i < ex->n; i++) {
        exthread *t = &ex->t[i];
        uint64_t one = 1;
        ssize_t w = write(t->wakefd, &one, sizeof(one));
        (void)w;
        pthread_join(t->tid, NULL);
    }
    if (fm_exec_global == ex) fm_exec_global = NULL; /* a version released below is freed at once */
    /* Jobs that reached a thread after it had stopped: a retirement sent by
     * another thread's last job (releasing a version's last reference). The
     * thread destroyed its instances as it stopped, so only the count of
     * retirements left is kept, and the last one frees the version. */
    for (int i = 0; i < ex->n; i++) {
        exthread *t = &ex->t[i];
        for (fm_job *j = t->head, *next; j; j = next) {
            next = j->next;
            if (j->kind == FM_JOB_RETIRE) {
                if (atomic_fetch_sub(&j->version->retire_left, 1) == 1) fm_version_free(j->version);
                free(j);
            } else {
                fm_job_free(j); /* nobody waits any more: the I/O threads have stopped */
            }
        }
        t->head = t->tail = NULL;
        pthread_mutex_destroy(&t->mu);
        close(t->epfd);
        close(t->wakefd);
    }
    free(ex->t);
    free(ex);
}

int fm_exec_threads(const fm_exec *ex) {
    return ex->n;
}

int fm_exec_regular_threads(const fm_exec *ex) {
    return ex->nregular;
}

/* A thread stuck in one job for this long (code the engine cannot
 * interrupt) gets no new calls while another thread can take them. */
#define FM_STUCK_US 1000000

/* The clock, read once per pick and only when a thread is busy. */
static int64_t now_of(int64_t *now) {
    if (!*now) *now = fm_mono_us();
    return *now;
}

static int effective_load(exthread *t, int64_t *now) {
    int load = atomic_load_explicit(&t->inflight, memory_order_relaxed);
    int64_t since = atomic_load_explicit(&t->busy_since_us, memory_order_relaxed);
    if (since && now_of(now) - since > FM_STUCK_US) load += 1 << 20;
    return load;
}

/* A call this long on a thread makes the thread "in a long call": when all
 * regular threads are, calls of other functions go to the reserve. */
#define FM_LONG_CALL_US 5000

static bool in_long_call(exthread *t, int64_t *now) {
    int64_t since = atomic_load_explicit(&t->busy_since_us, memory_order_relaxed);
    return since && now_of(now) - since > FM_LONG_CALL_US;
}

/* fm_exec_pick for a function limited to its `max_threads` regular threads
 * from its home thread (max_instances): the least loaded of them; no
 * reserve thread (that would be one instance more). */
static int pick_limited(fm_exec *ex, const fm_function *fn, unsigned start) {
    int nr = ex->nregular, k = fn->max_threads;
    int home = fn->home_thread >= 0 && fn->home_thread < nr ? fn->home_thread : 0;
    int best = -1, best_load = 0;
    int64_t now = 0;
    for (int j = 0; j < k; j++) {
        int i = (home + (int)((start + (unsigned)j) % (unsigned)k)) % nr;
        int load = effective_load(&ex->t[i], &now);
        if (best < 0 || load < best_load) best = i, best_load = load;
        if (load == 0) break;
    }
    return best;
}

int fm_exec_pick(fm_exec *ex, const fm_function *fn) {
    unsigned start = atomic_fetch_add_explicit(&ex->rr, 1, memory_order_relaxed);
    int nr = ex->nregular;
    if (fn && fn->max_threads > 0 && fn->max_threads < nr) return pick_limited(ex, fn, start);
    int best = (int)(start % (unsigned)nr);
    if (nr == 1 && ex->n == 1) return best;
    int64_t now = 0;
    int best_load = effective_load(&ex->t[best], &now);
    for (int k = 1; k < nr && best_load > 0; k++) {
        int i = (int)((start + (unsigned)k) % (unsigned)nr);
        int load = effective_load(&ex->t[i], &now);
        if (load < best_load) best = i, best_load = load;
    }
    if (ex->n == nr || best_load == 0) return best;
    /* every regular thread busy: is each of them in a long call? */
    int same = 0;
    for (int i = 0; i < nr; i++) {
        if (!in_long_call(&ex->t[i], &now)) return best;
        if (fn && atomic_load_explicit(&ex->t[i].running_fn, memory_order_relaxed) == fn) same++;
    }
    /* a function that holds every regular thread waits for one of them
     * (the reserve is for everyone else) */
    if (same == nr) return best;
    int rbest = -1, rload = 0;
    for (int i = nr; i < ex->n; i++) {
        if (in_long_call(&ex->t[i], &now)) continue;
        int load = effective_load(&ex->t[i], &now);
        if (rbest < 0 || load < rload) rbest = i, rload = load;
    }
    return rbest >= 0 ? rbest : best;
}

void fm_exec_submit(fm_exec *ex, int ti, fm_job *head, fm_job *tail, int ncalls) {
    exthread *t = &ex->t[ti];
    for (fm_job *j = head; j; j = j->next) j->thread = ti;
    if (ncalls) atomic_fetch_add_explicit(&t->inflight, ncalls, memory_order_relaxed);
    pthread_mutex_lock(&t->mu);
    if (t->tail) t->tail->next = head;
    else t->head = head;
    t->tail = tail;
    bool wake = t->sleeping;
    t->sleeping = false; /* one wake-up is enough */
    pthread_mutex_unlock(&t->mu);
    if (wake) {
        uint64_t one = 1;
        ssize_t w = write(t->wakefd, &one, sizeof(one));
        (void)w;
    }
}

int fm_exec_stuck(fm_exec *ex) {
    int n = 0;
    int64_t now = fm_mono_us();
    for (int i = 0; i < ex->n; i++)
        if (effective_load(&ex->t[i], &now) >= 1 << 20) n++;
    return n;
}

int fm_exec_inflight(fm_exec *ex, int t) {
    return atomic_load(&ex->t[t].inflight);
}

void fm_exec_retire_version(fm_version *v) {
    fm_exec *ex = fm_exec_global;
    if (!ex) {
        fm_version_free(v);
        return;
    }
    atomic_store(&v->retire_left, ex->n);
    for (int i = 0; i < ex->n; i++) {
        fm_job *j = fm_job_new(FM_JOB_RETIRE, v, NULL);
        fm_exec_submit(ex, i, j, j, 0);
    }
}

/* ---- the mesh, local part ---- */

void fm_mesh_set_registry(fm_registry *r) {
    mesh_registry = r;
}

fm_version *fm_mesh_resolve(const char *target, size_t len, const fm_function **fn, fm_err *err) {
    const char *sep = memchr(target, '/', len);
    if (!sep) sep = memchr(target, '.', len);
    fm_version *v = mesh_worker  ? mesh_worker->resolve(target, len, fn)
                    : sep && mesh_registry
                        ? fm_registry_acquire(mesh_registry, target, (size_t)(sep - target))
                        : NULL;
    if (!mesh_worker) *fn = v ? fm_version_find(v, sep + 1, (size_t)(target + len - sep - 1)) : NULL;
    if (!v || !*fn) {
        fm_version_release(v);
        fm_err_set(err, FM_NOT_FOUND, "function %.*s not found (use \"deployment/function\")",
                   (int)(len > 200 ? 200 : len), target);
        return NULL;
    }
    return v;
}

void *fm_exec_instance_here(fm_version *v, uint32_t unit, fm_err *err) {
    exthread *t = tls_thread;
    if (!t && mesh_worker) return mesh_worker->instance(v, unit);
    if (!t) {
        fm_err_set(err, FM_INTERNAL, "not on an executor thread");
        return NULL;
    }
    bool cold = false;
    void *inst = get_instance(t, v, unit, &cold, NULL, NULL, err);
    if (inst) v->last_used_us[(size_t)t->index * v->nunits + unit] = fm_mono_us();
    return inst;
}

static void mesh_child_done(fm_job *child) {
    child->mesh_done(child, child->mesh_ud);
    fm_job_free(child);
}

static void free_args(json_t **argv, size_t argc) {
    for (size_t i = 0; i < argc; i++) json_decref(argv[i]);
    free(argv);
}

void fm_mesh_set_worker(const fm_mesh_worker *w) {
    mesh_worker = w;
}

bool fm_mesh_forwarding(void) {
    return mesh_worker != NULL;
}

void fm_mesh_forwarded_done(fm_job *child) {
    mesh_child_done(child);
}

/* A call from a worker process: the node resolves it, checks its hops and
 * runs it (the worker's parent call is the node's job). */
static fm_status forward_call(fm_job *parent, const char *target, size_t len, json_t **argv,
                              size_t argc, fm_mesh_done done, void *ud, bool now) {
    fm_job *child = fm_job_new(FM_JOB_CALL, NULL, NULL);
    child->argv = argv;
    child->argc = argc;
    child->hops = parent ? parent->hops + 1 : 1;
    child->deadline_us = parent ? parent->deadline_us : 0;
    if (parent) memcpy(child->request_id, parent->request_id, sizeof(child->request_id));
    if (parent) child->trace = parent->trace; /* the caller's context: the callee's span comes
                                                 from it where the call runs */
    child->want_value = true;
    child->mesh_done = done;
    child->mesh_ud = ud;
    mesh_worker->forward(child, target, len, now);
    return FM_OK;
}

static fm_status mesh_call(fm_job *parent, const char *target, size_t len, json_t **argv,
                           size_t argc, fm_mesh_done done, void *ud, bool now, fm_err *err);

fm_status fm_mesh_call(fm_job *parent, const char *target, size_t len, json_t **argv, size_t argc,
                       fm_mesh_done done, void *ud, fm_err *err) {
    return mesh_call(parent, target, len, argv, argc, done, ud, false, err);
}

fm_status fm_mesh_call_sync(fm_job *parent, const char *target, size_t len, json_t **argv,
                            size_t argc, fm_mesh_done done, void *ud, fm_err *err) {
    return mesh_call(parent, target, len, argv, argc, done, ud, true, err);
}

static fm_status mesh_call(fm_job *parent, const char *target, size_t len, json_t **argv,
                           size_t argc, fm_mesh_done done, void *ud, bool now, fm_err *err) {
    int hops = parent ? parent->hops + 1 : 1;
    if (hops > FM_MESH_MAX_HOPS) {
        free_args(argv, argc);
        return fm_err_set(err, FM_LOOP,
                          "call chain longer than %d hops calling %.*s (runaway recursion?)",
                          FM_MESH_MAX_HOPS, (int)(len > 200 ? 200 : len), target);
    }
    if (mesh_worker) return forward_call(parent, target, len, argv, argc, done, ud, now);
    if (!tls_thread || !mesh_registry) {
        free_args(argv, argc);
        return fm_err_set(err, FM_INTERNAL, "function calls are only possible inside a function");
    }
    const fm_function *fn = NULL;
    fm_version *v = fm_mesh_resolve(target, len, &fn, err);
    if (!v) {
        free_args(argv, argc);
        return err->status;
    }
    return fm_mesh_call_resolved(parent, v, fn, argv, argc, false, done, ud, err);
}

fm_status fm_mesh_call_resolved(fm_job *parent, fm_version *v, const fm_function *fn,
                                json_t **argv, size_t argc, bool now, fm_mesh_done done, void *ud,
                                fm_err *err) {
    exthread *t = tls_thread;
    if (!t) {
        free_args(argv, argc);
        fm_version_release(v);
        return fm_err_set(err, FM_INTERNAL, "function calls are only possible inside a function");
    }
    int hops = parent ? parent->hops + 1 : 1;
    fm_job *child = fm_job_new(FM_JOB_CALL, v, fn);
    child->argv = argv;
    child->argc = argc;
    child->deadline_us = parent && parent->deadline_us ? parent->deadline_us
                                                        : fm_mono_us() + fn->timeout_ms * 1000;
    if (parent) memcpy(child->request_id, parent->request_id, sizeof(child->request_id));
    if (parent) fm_trace_child(&child->trace, &parent->trace);
    else fm_trace_begin(&child->trace, NULL);
    if (parent && parent->tracestate) child->tracestate = strdup(parent->tracestate);
    child->hops = hops;
    child->want_value = true;
    child->on_done = mesh_child_done;
    child->mesh_done = done;
    child->mesh_ud = ud;
    child->thread = t->index;
    if (fm_exec_admit(child, err) != FM_OK) {
        fm_job_free(child); /* its arguments with it */
        return err->status;
    }
    atomic_fetch_add_explicit(&t->inflight, 1, memory_order_relaxed);
    if (now && fn->rt->call_nested && fn->max_concurrency == 0) {
        /* inside the caller's call: its thread time (CPU) stays the caller's */
        fm_job *saved = tls_running;
        child->nested = true;
        run_job(t, child);
        tls_running = saved;
        return FM_OK;
    }
    if (t->local_tail) t->local_tail->next = child;
    else t->local_head = child;
    t->local_tail = child;
    return FM_OK;
}

json_t *fm_mesh_error(const fm_job *child) {
    json_t *e = json_object();
    if (!child->version) { /* forwarded: the node's answer names every hop already */
        json_object_update(e, child->error);
        json_object_set_new(e, "code", json_string(fm_status_code(child->status)));
        return e;
    }
    const char *m = json_string_value(json_object_get(child->error, "message"));
    const char *name = json_string_value(json_object_get(child->error, "name"));
    const char *stack = json_string_value(json_object_get(child->error, "stack"));
    json_object_set_new(e, "message", fm_json_str(m ? m : "error"));
    json_object_set_new(e, "code", json_string(fm_status_code(child->status)));
    if (name) json_object_set_new(e, "name", fm_json_str(name));
    char hop[300];
    snprintf(hop, sizeof(hop), "%s/%s (%s)", child->version->deployment, child->fn->name,
             child->fn->rt->name);
    size_t n = (stack ? strlen(stack) : 0) + strlen(hop) + 2;
    char *full = malloc(n);
    snprintf(full, n, "%s%s%s", stack ? stack : "", stack && *stack ? "\n" : "", hop);
    json_object_set_new(e, "stack", fm_json_str(full));
    free(full);
    return e;
}
