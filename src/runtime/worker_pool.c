/* worker_pool.c - instances made of worker processes (see worker_pool.h),
 * for the Python and C runtimes.
 *
 * Ownership: an instance owns its processes, sockets and queue; the artifact
 * is borrowed from the version, which outlives its instances. */
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/util.h"
#include "exec/exec.h"
#include "metrics/logs.h"
#include "metrics/metrics.h"
#include "metrics/trace.h"
#include "registry/bind.h"
#include "registry/manifest.h"
#include "registry/registry.h"
#include "runtime/python/python_int.h"
#include "runtime/worker_pool.h"
#include "runtime/cgroup.h"

extern char **environ;

#define INIT_TIMEOUT_MS 30000
#define KILL_GRACE_US 1000000

/* A call waits for a worker held back by the crash backoff when it starts
 * within this time (and before the call's deadline); else it fails at once. */
#define MAX_BACKOFF_WAIT_US 1000000

#define MAX_WORKERS 8 /* per instance: a busy worker (e.g. waiting on a call it made) gets company */

typedef struct wp_inst wp_inst;
typedef struct wp_worker wp_worker;

/* A worker told to stop (its socket closed), reaped when it has exited. */
typedef struct wp_exiting {
    struct wp_exiting *next;
    pid_t pid;
    int cg; /* its cgroup (fm_cgroup_make; 0: none) */
    int64_t kill_at_us; /* SIGKILL if it is still there then */
} wp_exiting;

typedef struct wp_thread {
    wp_inst *list;       /* instances on this thread */
    wp_exiting *exiting; /* workers stopped for being idle */
    wp_worker **dirty;   /* workers with call frames not written yet (owned array, borrowed workers) */
    int ndirty, cdirty;
} wp_thread;

/* One worker process. */
struct wp_worker {
    wp_inst *in;
    pid_t pid;
    int fd; /* -1 when there is no process */
    fm_exec_watch *watch;
    char *rbuf;
    size_t rlen, rcap;
    fm_job *busy;      /* the call running now: head of the calls sent (linked by ->next) */
    fm_job *sent_tail; /* the last call sent (pipelined behind busy) */
    int depth;         /* calls sent and not answered */
    uint32_t busy_id, next_id;
    int64_t interrupted_at;
    uint64_t cpu_us;          /* the worker's CPU time at its last report ('U', 'R', 'F') */
    bool starting;            /* started without waiting: not ready before its 'U' frame */
    bool oom_killed;          /* set when reaped: the kernel killed it in its cgroup for memory */
    int cg;                   /* its cgroup (fm_cgroup_make; 0: none) */
    bool fresh;               /* ready, and no call sent yet (the next one is a cold start) */
    bool retiring;            /* it asked to be replaced ('Z'): no more calls; stopped when idle */
    int64_t idle_since_us;    /* when it last became idle (ready, no call), 0 while busy */
    int64_t spawned_us, start_cost_us; /* when it was started; how long it took to be ready */
    struct wp_mesh_req *mesh; /* calls made by the running function */
    char *obuf;               /* call frames not written yet: one write per executor pass (owned) */
    size_t olen, ocap;
    bool dirty;               /* in its thread's dirty list */
};

struct wp_inst {
    wp_thread *ts;
    wp_inst *next;
    const fm_wpool_kind *kind;
    char *deployment;
    const char *artifact; /* borrowed from the version */
    size_t artifact_len;
    wp_worker workers[MAX_WORKERS];
    int nworkers;
    fm_job *qhead, *qtail; /* calls waiting for a free worker */
    struct wp_health *health; /* shared by the instances of this artifact on every thread */
    long memory_mb;           /* address-space cap of its workers */
    int max_workers;          /* processes of this version on all threads (max_instances) */
};

/* Crash backoff of one deployment version's workers, shared by its
 * instances on all executor threads (so N threads do not restart N times
 * as often). Found by the artifact, which the version owns. */
typedef struct wp_health {
    struct wp_health *next;
    const char *artifact;
    int refs;                       /* instances using it; under health_mu */
    atomic_int crashes;             /* workers lost in a row (crash, kill at a deadline) */
    atomic_int live;                /* worker processes with an open socket, all threads */
    _Atomic int64_t respawn_at_us;  /* no new worker before this */
} wp_health;

static pthread_mutex_t health_mu = PTHREAD_MUTEX_INITIALIZER;
static wp_health *health_list;

static wp_health *health_get(const char *artifact) {
    pthread_mutex_lock(&health_mu);
    wp_health *h = health_list;
    while (h && h->artifact != artifact) h = h->next;
    if (!h) {
        h = calloc(1, sizeof(*h));
        h->artifact = artifact;
        h->next = health_list;
        health_list = h;
    }
    h->refs++;
    pthread_mutex_unlock(&health_mu);
    return h;
}

static void health_put(wp_health *h) {
    pthread_mutex_lock(&health_mu);
    if (--h->refs == 0) {
        for (wp_health **pp = &health_list; *pp; pp = &(*pp)->next)
            if (*pp == h) {
                *pp = h->next;
                break;
            }
        free(h);
    }
    pthread_mutex_unlock(&health_mu);
}

static int crashes_of(const wp_inst *in) {
    return atomic_load_explicit(&in->health->crashes, memory_order_relaxed);
}

static int64_t respawn_at(const wp_inst *in) {
    return atomic_load_explicit(&in->health->respawn_at_us, memory_order_relaxed);
}

/* ---------------------------------------------------------------- workers */

void *fm_wpool_thread_init(int index) {
    (void)index;
    return calloc(1, sizeof(wp_thread));
}

void fm_wpool_thread_dispose(void *p) {
    wp_thread *ts = p;
    while (ts->exiting) { /* stopped for being idle: they are gone, or nearly */
        wp_exiting *e = ts->exiting;
        ts->exiting = e->next;
        kill(e->pid, SIGKILL);
        waitpid(e->pid, NULL, 0);
        fm_cgroup_release(e->cg);
        free(e);
    }
    free(ts->dirty);
    free(ts);
}

static const char *self_exe(void) {
    static char path[4096];
    if (!path[0]) {
        ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
        if (n <= 0) return "fnmesh";
        path[n] = '\0';
    }
    return path;
}

static void on_readable(uint32_t events, void *ud);
static void stop_worker(wp_worker *w, int64_t now);

/* ---- process counters per runtime (for /metrics) ---- */
#define MAX_KINDS 8
static struct {
    _Atomic(const char *) runtime;
    atomic_uint_fast64_t started, exited, died;
} kind_stats[MAX_KINDS];

static int kind_slot(const fm_wpool_kind *k) {
    for (int i = 0; i < MAX_KINDS; i++) {
        const char *cur = atomic_load(&kind_stats[i].runtime);
        if (cur == k->runtime) return i;
        if (!cur) {
            const char *expected = NULL;
            if (atomic_compare_exchange_strong(&kind_stats[i].runtime, &expected, k->runtime) ||
                expected == k->runtime)
                return i;
        }
    }
    return MAX_KINDS - 1;
}

size_t fm_wpool_stats(fm_wpool_stat *out, size_t max) {
    size_t n = 0;
    for (int i = 0; i < MAX_KINDS && n < max; i++) {
        const char *rt = atomic_load(&kind_stats[i].runtime);
        if (!rt) break;
        /* exits first: a worker that starts and exits meanwhile is then in both */
        uint64_t exited = atomic_load(&kind_stats[i].exited);
        uint64_t died = atomic_load(&kind_stats[i].died);
        uint64_t started = atomic_load(&kind_stats[i].started);
        out[n++] = (fm_wpool_stat){rt, started, exited, died};
    }
    return n;
}

/* Starts a worker process and loads the deployment; fills exports_json
 * (owned) with the worker's list of exports. */
static uint64_t get_u64(const unsigned char *p) {
    return (uint64_t)fm_get_u32(p) | (uint64_t)fm_get_u32(p + 4) << 32;
}

/* Starts the process and hands it the deployment: the first half of a
 * start, shared by spawn (which waits for the worker) and spawn_async. */
/* Closes a worker's socket (a live worker reads EOF and exits): it no longer
 * counts among its version's processes. */
static void close_socket(wp_worker *w) {
    if (w->fd < 0) return;
    w->olen = 0; /* what was not written is lost with the process: its calls fail */
    if (w->dirty) {
        wp_thread *ts = w->in->ts;
        for (int i = 0; i < ts->ndirty; i++)
            if (ts->dirty[i] == w) {
                ts->dirty[i] = ts->dirty[--ts->ndirty];
                break;
            }
        w->dirty = false;
    }
    close(w->fd);
    w->fd = -1;
    atomic_fetch_sub_explicit(&w->in->health->live, 1, memory_order_relaxed);
}

/* Starts a worker process of `kind` (it initialises its runtime and waits
 * for its deployment): *pid, *fd (the node's end of its socket) and *cg (its
 * cgroup, limited for memory_mb; 0: none). */
static fm_status start_process(const fm_wpool_kind *kind, long memory_mb, pid_t *pid, int *fd,
                               int *cg, fm_err *err) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return fm_err_set(err, FM_INTERNAL, "socketpair: %s", strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, sv[1], FM_PY_WORKER_FD);
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    sigset_t none, defs;
    sigemptyset(&none);
    sigemptyset(&defs);
    sigaddset(&defs, SIGINT);
    sigaddset(&defs, SIGTERM);
    sigaddset(&defs, SIGPIPE);
    posix_spawnattr_setsigmask(&at, &none); /* the node blocks SIGINT in its threads */
    posix_spawnattr_setsigdefault(&at, &defs);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {"fnmesh", (char *)kind->verb, NULL};
    /* its cgroup, which it joins as it starts (the environment says which) */
    char cgenv[2 * PATH_MAX + 160];
    *cg = fm_cgroup_make(memory_mb, cgenv, sizeof(cgenv));
    size_t n = 0;
    while (environ[n]) n++;
    char **envp = malloc((n + 2) * sizeof(char *));
    memcpy(envp, environ, n * sizeof(char *));
    envp[n] = *cg ? cgenv : NULL;
    envp[n + 1] = NULL;
    int rc = posix_spawn(pid, self_exe(), &fa, &at, argv, envp);
    free(envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(sv[1]);
    if (rc != 0) {
        close(sv[0]);
        fm_cgroup_release(*cg);
        *cg = 0;
        *pid = 0;
        return fm_err_set(err, FM_INTERNAL, "cannot start the %s worker: %s", kind->label,
                          strerror(rc));
    }
    *fd = sv[0];
    return FM_OK;
}

/* One worker process per runtime started ahead of need (after the first of
 * that runtime), so that a new worker (a cold start, a replacement, one
 * more for load) skips process start-up and runtime initialisation: it only
 * loads its deployment. Any executor thread takes it, under its lock. */
static struct spare_worker {
    pthread_mutex_t mu;
    const fm_wpool_kind *kind;
    pid_t pid;
    int fd;
    int cg;
} spares[MAX_KINDS] = {
#define NO_SPARE {PTHREAD_MUTEX_INITIALIZER, NULL, 0, -1, 0}
    NO_SPARE, NO_SPARE, NO_SPARE, NO_SPARE, NO_SPARE, NO_SPARE, NO_SPARE, NO_SPARE};
#undef NO_SPARE

/* Takes the spare worker of `kind` (false when there is none). */
static bool take_spare(const fm_wpool_kind *kind, pid_t *pid, int *fd, int *cg) {
    struct spare_worker *sp = &spares[kind_slot(kind)];
    pthread_mutex_lock(&sp->mu);
    bool ok = sp->pid > 0 && sp->kind == kind;
    if (ok) *pid = sp->pid, *fd = sp->fd, *cg = sp->cg, sp->pid = 0, sp->fd = -1, sp->cg = 0;
    pthread_mutex_unlock(&sp->mu);
    return ok;
}

void fm_wpool_stop_spares(void) {
    for (int i = 0; i < MAX_KINDS; i++) {
        struct spare_worker *sp = &spares[i];
        pthread_mutex_lock(&sp->mu);
        if (sp->pid > 0) {
            close(sp->fd);
            kill(sp->pid, SIGKILL);
            waitpid(sp->pid, NULL, 0);
            fm_cgroup_release(sp->cg);
            sp->pid = 0, sp->fd = -1, sp->cg = 0;
        }
        pthread_mutex_unlock(&sp->mu);
    }
}

/* Starts the next spare worker of `kind` when there is none. */
static void refill_spare(const fm_wpool_kind *kind) {
    struct spare_worker *sp = &spares[kind_slot(kind)];
    pthread_mutex_lock(&sp->mu);
    if (sp->pid <= 0) {
        fm_err err = FM_ERR_INIT;
        pid_t pid;
        int fd, cg;
        if (start_process(kind, FM_DEFAULT_MEMORY_MB, &pid, &fd, &cg, &err) == FM_OK)
            sp->kind = kind, sp->pid = pid, sp->fd = fd, sp->cg = cg;
        fm_err_clear(&err);
    }
    pthread_mutex_unlock(&sp->mu);
}

/* Spares to start on this thread once the calls at hand are on their way
 * (fm_wpool_poll): starting a process blocks the thread for a while. */
static __thread const fm_wpool_kind *refills[MAX_KINDS];

static void refill_later(const fm_wpool_kind *kind) {
    for (int i = 0; i < MAX_KINDS; i++) {
        if (refills[i] == kind) return;
        if (!refills[i]) {
            refills[i] = kind;
            return;
        }
    }
    refill_spare(kind);
}

static void refill_pending(void) {
    for (int i = 0; i < MAX_KINDS && refills[i]; i++) {
        refill_spare(refills[i]);
        refills[i] = NULL;
    }
}

/* Room for `more` bytes at the end of the worker's unwritten frames. */
static char *out_reserve(wp_worker *w, size_t more) {
    if (w->olen + more > w->ocap) {
        size_t cap = w->ocap ? w->ocap : 4096;
        while (cap < w->olen + more) cap *= 2;
        w->obuf = realloc(w->obuf, cap);
        w->ocap = cap;
    }
    return w->obuf + w->olen;
}

static void out_put(wp_worker *w, const void *p, size_t n) {
    memcpy(out_reserve(w, n), p, n);
    w->olen += n;
}

/* Writes the worker's unwritten frames, blocking until all is written (as
 * fm_py_send). A worker that takes none of it for OUT_STUCK_MS (it is
 * stuck, or writing an answer this thread does not read meanwhile) is
 * killed. A failure leaves the calls to the end of the worker, which its
 * socket reports next (they are failed or sent again). */
#define OUT_STUCK_MS 30000
static void out_flush(wp_worker *w) {
    size_t off = 0;
    while (off < w->olen && w->fd >= 0) {
        ssize_t n = write(w->fd, w->obuf + off, w->olen - off);
        if (n > 0) {
            off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            struct pollfd pfd = {.fd = w->fd, .events = POLLOUT};
            if (poll(&pfd, 1, OUT_STUCK_MS) == 0) {
                if (w->pid > 0) kill(w->pid, SIGKILL);
                break;
            }
        } else {
            break;
        }
    }
    w->olen = 0;
}

/* Frames sent outside the calls' batch go after the calls written before them. */
static int send_now(wp_worker *w, char type, const void *a, size_t alen, const void *b,
                    size_t blen) {
    if (w->olen) out_flush(w);
    return fm_py_send(w->fd, type, a, alen, b, blen);
}

/* Sends a started worker its deployment: its limits ('Q': the address-space
 * cap and memory_mb, in MiB), then the artifact ('I'). */
static int send_deployment(wp_worker *w) {
    wp_inst *in = w->in;
    char q[320];
    int n = snprintf(q, sizeof(q), "%ld %ld %.255s", in->memory_mb,
                     in->memory_mb - FM_WORKER_AS_HEADROOM_MB, in->deployment);
    if (send_now(w, 'Q', q, (size_t)n, NULL, 0) != 0) return -1;
    return send_now(w, 'I', in->artifact, in->artifact_len, NULL, 0);
}

/* Gives the worker a process (the spare, else a new one) and sends it the
 * deployment; 0, or -1 when that process is gone (killed and reaped). */
static int attach_process(wp_worker *w, bool spare_ok, fm_err *err) {
    wp_inst *in = w->in;
    pid_t pid = 0;
    int fd = -1, cg = 0;
    if (!(spare_ok && take_spare(in->kind, &pid, &fd, &cg)) &&
        start_process(in->kind, in->memory_mb - FM_WORKER_AS_HEADROOM_MB, &pid, &fd, &cg, err) != FM_OK)
        return -1;
    w->pid = pid;
    w->fd = fd;
    w->cg = cg;
    /* its deployment's memory from now on (a spare started before it had one) */
    fm_cgroup_limit(cg, in->memory_mb - FM_WORKER_AS_HEADROOM_MB);
    atomic_fetch_add_explicit(&in->health->live, 1, memory_order_relaxed);
    w->spawned_us = fm_mono_us();
    atomic_fetch_add_explicit(&kind_stats[kind_slot(in->kind)].started, 1, memory_order_relaxed);
    if (send_deployment(w) == 0) return 0;
    close_socket(w);
    kill(w->pid, SIGKILL);
    waitpid(w->pid, NULL, 0);
    fm_cgroup_release(w->cg);
    w->cg = 0;
    atomic_fetch_add_explicit(&kind_stats[kind_slot(in->kind)].exited, 1, memory_order_relaxed);
    w->pid = 0;
    fm_err_set(err, FM_INTERNAL, "the %s worker did not start (it exited)", in->kind->label);
    return -1;
}

/* Gives the worker a process; the next spare is the caller's to start
 * (refill_spare), once nobody waits for this one. */
static fm_status launch(wp_worker *w, fm_err *err) {
    /* a spare that died while it waited: once more with a new process */
    if (attach_process(w, true, err) != 0) {
        fm_err_clear(err);
        if (attach_process(w, false, err) != 0) return err->status;
    }
    return FM_OK;
}

/* Starts a worker and waits until it has loaded the deployment; fills
 * exports_json (owned) with its list of exports. Blocks this thread: only
 * for a new instance (a deploy, whose answer needs the exports). */
static fm_status spawn(wp_worker *w, char **exports_json, fm_err *err) {
    wp_inst *in = w->in;
    fm_wpool_flush(in->ts); /* the calls handed to other workers do not wait for this start */
    fm_status lst = launch(w, err);
    if (lst != FM_OK) return lst;
    char *payload = NULL;
    size_t plen = 0;
    int type = fm_py_recv(w->fd, INIT_TIMEOUT_MS, &payload, &plen);
    if (type == 'E') { /* then 'U': the start-up CPU, not billed to the first call */
        char *u = NULL;
        size_t ulen = 0;
        if (fm_py_recv(w->fd, INIT_TIMEOUT_MS, &u, &ulen) == 'U' && ulen >= 8)
            w->cpu_us = get_u64((const unsigned char *)u);
        else
            type = -1;
        free(u);
    }
    fm_py_frame_release(); /* executor threads read frames only here (nothing is read ahead:
                              the worker sends nothing more before its first call) */
    fm_status st = FM_OK;
    if (type == 'E') {
        *exports_json = payload;
        payload = NULL;
    } else if (type == 'X') {
        json_t *e = json_loadb(payload, plen, 0, NULL);
        const char *m = json_string_value(json_object_get(e, "message"));
        st = fm_err_set(err, FM_INVALID_BUNDLE, "%s", m ? m : "the deployment failed to load");
        const char *stack = json_string_value(json_object_get(e, "stack"));
        if (stack) fm_err_detail(err, "stack", fm_json_str(stack));
        json_decref(e);
    } else {
        st = fm_err_set(err, FM_INTERNAL, "the %s worker did not start (%s)", in->kind->label,
                        type == -2 ? "timed out" : "it exited");
    }
    free(payload);
    if (st != FM_OK) {
        close_socket(w);
        kill(w->pid, SIGKILL);
        waitpid(w->pid, NULL, 0);
        fm_cgroup_release(w->cg);
        w->cg = 0;
        w->pid = 0;
        return st;
    }
    fcntl(w->fd, F_SETFL, fcntl(w->fd, F_GETFL) | O_NONBLOCK);
    w->watch = fm_exec_watch_add(w->fd, EPOLLIN | EPOLLRDHUP, on_readable, w);
    w->start_cost_us = fm_mono_us() - w->spawned_us;
    w->idle_since_us = fm_mono_us();
    refill_later(in->kind); /* starting a process takes half a millisecond: not while a call waits */
    return FM_OK;
}

/* Starts a worker without waiting for it (a replacement, or one more for
 * load): the executor thread goes on serving; calls go to the worker once
 * its 'E' and 'U' frames have arrived (on_readable). */
static fm_status spawn_async(wp_worker *w, fm_err *err) {
    fm_status st = launch(w, err);
    if (st != FM_OK) return st;
    fcntl(w->fd, F_SETFL, fcntl(w->fd, F_GETFL) | O_NONBLOCK);
    w->starting = true;
    w->fresh = false;
    w->watch = fm_exec_watch_add(w->fd, EPOLLIN | EPOLLRDHUP, on_readable, w);
    refill_later(w->in->kind);
    return FM_OK;
}


/* Ends the process; returns its wait status, and its total CPU time in
 * *cpu_us when cpu_us is non-NULL. */
/* Closes the worker's socket (a live worker reads EOF and exits) and forgets
 * what was read from it; the process itself is the caller's to reap. */
static void detach(wp_worker *w) {
    if (w->watch) fm_exec_watch_del(w->watch);
    w->watch = NULL;
    close_socket(w);
    w->rlen = 0;
    w->starting = w->fresh = false;
    w->idle_since_us = 0;
}

static int reap_usage(wp_worker *w, bool force, uint64_t *cpu_us) {
    int status = 0;
    detach(w);
    if (w->pid > 0) {
        if (force) kill(w->pid, SIGKILL);
        struct rusage ru;
        while (wait4(w->pid, &status, 0, &ru) < 0 && errno == EINTR) {
        }
        w->oom_killed = fm_cgroup_release(w->cg);
        w->cg = 0;
        if (cpu_us)
            *cpu_us = (uint64_t)ru.ru_utime.tv_sec * 1000000 + (uint64_t)ru.ru_utime.tv_usec +
                      (uint64_t)ru.ru_stime.tv_sec * 1000000 + (uint64_t)ru.ru_stime.tv_usec;
        atomic_fetch_add_explicit(&kind_stats[kind_slot(w->in->kind)].exited, 1,
                                  memory_order_relaxed);
    }
    w->pid = 0;
    return status;
}

static int reap(wp_worker *w, bool force) {
    return reap_usage(w, force, NULL);
}


/* Workers that run the node's own runtimes (process isolation) record
 * spans of the calls they make inside and send them ('S'). */
static bool in_kind_traces(const wp_worker *w) {
    return w->in->kind->concurrency > 0;
}

/* Appends value `v` (NULL: null) as JSON text to the worker's frames. */
static void out_json(wp_worker *w, const json_t *v) {
    if (!v) {
        out_put(w, "null", 4);
        return;
    }
    size_t room = w->ocap - w->olen;
    size_t n = json_dumpb(v, room ? w->obuf + w->olen : NULL, room, JSON_COMPACT | JSON_ENCODE_ANY);
    if (n > room) { /* did not fit: again, with room for it */
        out_reserve(w, n);
        n = json_dumpb(v, w->obuf + w->olen, n, JSON_COMPACT | JSON_ENCODE_ANY);
    }
    if (n == 0) out_put(w, "null", 4); /* cannot be written (fm_json_dump does the same) */
    w->olen += n;
}

/* Sends a call to an idle, live worker: the frame joins the worker's
 * unwritten ones, written together at the end of the executor's pass
 * (fm_wpool_flush). Its JSON is written straight into the frame. */
static void send_call(wp_worker *w, fm_job *job) {
    size_t start = w->olen;
    uint32_t nholes = 0; /* arguments not given: their defaults apply */
    for (size_t i = 0; i < job->argc; i++) nholes += !job->argv[i];
    uint32_t left_ms = 0; /* for runtimes that stop code themselves */
    if (job->deadline_us) {
        int64_t left = (job->deadline_us - fm_mono_us()) / 1000;
        left_ms = left > 1 ? (uint32_t)(left < UINT32_MAX ? left : UINT32_MAX) : 1;
    }
    /* the call's span, parent of what it calls there */
    bool traced = in_kind_traces(w) && fm_telemetry;
    unsigned char *p = (unsigned char *)out_reserve(w, 5 + FM_CALL_HEAD + FM_CALL_TRACE + 4 * nholes);
    p[4] = 'C';
    size_t n = fm_call_frame_head(p + 5, ++w->next_id, job->fn->index, left_ms,
                                  (uint32_t)job->hops, nholes, traced ? &job->trace : NULL);
    for (size_t i = 0, k = 0; i < job->argc; i++)
        if (!job->argv[i]) fm_put_u32(p + 5 + n + 4 * k++, (uint32_t)i);
    w->olen += 5 + n + 4 * (size_t)nholes; /* the length (at p) is known at the end */
    out_put(w, "[", 1);
    for (size_t i = 0; i < job->argc; i++) {
        if (i) out_put(w, ",", 1);
        out_json(w, job->argv[i]);
    }
    out_put(w, "]", 1);
    fm_put_u32((unsigned char *)w->obuf + start, (uint32_t)(w->olen - start - 4));
    if (!w->dirty) {
        wp_thread *ts = w->in->ts;
        if (ts->ndirty == ts->cdirty) {
            ts->cdirty = ts->cdirty ? ts->cdirty * 2 : 16;
            ts->dirty = realloc(ts->dirty, (size_t)ts->cdirty * sizeof(*ts->dirty));
        }
        ts->dirty[ts->ndirty++] = w;
        w->dirty = true;
    }
    if (w->fresh) { /* the first call of a new worker waited for its start */
        w->fresh = false;
        job->cold_start = true;
        job->cold_us += w->start_cost_us;
    }
    job->async_id = w->next_id;
    w->idle_since_us = 0;
    job->next = NULL;
    if (w->sent_tail) {
        w->sent_tail->next = job; /* pipelined: runs when the ones before it are done */
    } else {
        w->busy = job;
        w->busy_id = w->next_id;
        w->interrupted_at = 0;
    }
    w->sent_tail = job;
    w->depth++;
}

/* Takes call `id` out of the calls sent to the worker (NULL if it is not
 * there); the head's successor is the one running now (or the oldest). */
static fm_job *take_sent(wp_worker *w, uint32_t id) {
    fm_job *prev = NULL;
    for (fm_job *j = w->busy; j; prev = j, j = j->next) {
        if ((uint32_t)j->async_id != id) continue;
        if (prev) prev->next = j->next;
        else w->busy = j->next;
        if (w->sent_tail == j) w->sent_tail = prev;
        j->next = NULL;
        if (!prev) {
            if (w->busy) w->busy_id = (uint32_t)w->busy->async_id;
            w->interrupted_at = 0;
        }
        w->depth--;
        return j;
    }
    return NULL;
}

/* A call sent to the worker and not answered yet, or NULL. */
static fm_job *find_sent(const wp_worker *w, uint32_t id) {
    for (fm_job *j = w->busy; j; j = j->next)
        if ((uint32_t)j->async_id == id) return j;
    return NULL;
}

/* The head call was answered: the next one sent is running now. */
static fm_job *pop_busy(wp_worker *w) {
    return take_sent(w, w->busy_id);
}

static void start_next(wp_inst *in);

/* Delay before the next worker after `crashes` lost in a row: none after
 * one, then 50 ms doubling up to 5 s. */
static int64_t backoff_us(int crashes) {
    if (crashes < 2) return 0;
    int64_t d = 50000;
    for (int i = 2; i < crashes && d < 5000000; i++) d *= 2;
    return d < 5000000 ? d : 5000000;
}

static void worker_died(wp_worker *w) {
    atomic_fetch_add_explicit(&kind_stats[kind_slot(w->in->kind)].died, 1, memory_order_relaxed);
    wp_inst *lost_in = w->in;
    int lost = atomic_fetch_add_explicit(&lost_in->health->crashes, 1, memory_order_relaxed) + 1;
    atomic_store_explicit(&lost_in->health->respawn_at_us, fm_mono_us() + backoff_us(lost),
                          memory_order_relaxed);
    int64_t interrupted = w->interrupted_at;
    uint64_t cpu = 0;
    int status = reap_usage(w, true, &cpu);
    fm_job *job = w->busy ? pop_busy(w) : NULL;
    if (job) { /* it never answered: bill what the process used since its last report */
        job->cpu_us = cpu > w->cpu_us ? cpu - w->cpu_us : 0;
        job->cpu_measured = true;
    }
    w->cpu_us = 0;
    /* calls pipelined behind the one that died never ran: send them again
     * (a worker running several at once lost them all: they fail below) */
    if (w->busy && !w->in->kind->concurrency) {
        wp_inst *in = w->in;
        w->sent_tail->next = in->qhead;
        if (!in->qhead) in->qtail = w->sent_tail;
        in->qhead = w->busy;
        w->busy = w->sent_tail = NULL;
        w->depth = 0;
    }
    w->interrupted_at = interrupted;
    while (job) {
        if (w->interrupted_at || (job->deadline_us && fm_mono_us() >= job->deadline_us)) {
            fm_job_fail_timeout(job);
        } else {
            char msg[240];
            bool oom = w->oom_killed && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
            if (oom)
                snprintf(msg, sizeof(msg),
                         "memory limit exceeded (%ld MiB): the kernel stopped the %s worker at "
                         "%ld MiB running %s", w->in->memory_mb - FM_WORKER_AS_HEADROOM_MB,
                         w->in->kind->label,
                         w->in->memory_mb - FM_WORKER_AS_HEADROOM_MB + FM_CGROUP_HEADROOM_MB,
                         job->fn->name);
            else if (WIFSIGNALED(status))
                snprintf(msg, sizeof(msg), "the %s worker crashed (signal %d) running %s",
                         w->in->kind->label, WTERMSIG(status), job->fn->name);
            else
                snprintf(msg, sizeof(msg), "the %s worker exited (status %d) running %s",
                         w->in->kind->label, WEXITSTATUS(status), job->fn->name);
            fm_job_fail(job, FM_FUNCTION_ERROR, msg, oom ? "MemoryError" : "WorkerCrash", NULL);
        }
        fm_job_finish(job);
        job = w->busy ? pop_busy(w) : NULL; /* the others it was running: the same end */
    }
    start_next(w->in);
}

static void finish_sent(wp_worker *w, fm_job *job, char type, const char *payload, size_t len) {
    bool interrupted = w->interrupted_at != 0 && job == w->busy;
    take_sent(w, (uint32_t)job->async_id);
    if (!w->busy) w->idle_since_us = fm_mono_us();
    if (crashes_of(w->in)) /* it answered: the deployment works */
        atomic_store_explicit(&w->in->health->crashes, 0, memory_order_relaxed);
    if (type == 'R') {
        if (job->want_value) {
            json_t *v = fm_json_parse_value(payload, len);
            if (json_is_null(v)) {
                json_decref(v);
                v = NULL;
            }
            fm_job_succeed_value(job, v);
        } else {
            char *copy = malloc(len + 1);
            memcpy(copy, payload, len);
            copy[len] = '\0';
            fm_job_succeed(job, copy, len);
        }
    } else if (interrupted) {
        fm_job_fail_timeout(job);
    } else {
        json_t *e = json_loadb(payload, len, 0, NULL);
        const char *m = json_string_value(json_object_get(e, "message"));
        /* an uncaught error of a called function keeps its status */
        fm_status st = fm_mesh_status(json_string_value(json_object_get(e, "code")));
        const char *stack = json_string_value(json_object_get(e, "stack"));
        if (st == FM_TIMEOUT && (!stack || !*stack)) /* its own deadline, stopped by its runtime */
            fm_job_fail_timeout(job);
        else
            fm_job_fail(job, st, m ? m : "error", json_string_value(json_object_get(e, "name")),
                        stack);
        json_decref(e);
    }
    fm_job_finish(job);
}

/* ---- the mesh: the running function calls another one ---- */

typedef struct wp_mesh_req {
    struct wp_mesh_req *next;
    wp_worker *w; /* NULL once the instance is gone */
    uint32_t busy_id;
    bool keyed; /* the worker makes several calls at once: answer with 'n' and its key */
    uint32_t key;
} wp_mesh_req;

/* 'm' (u8 ok, JSON), or 'n' (u32 key, u8 ok, JSON) for a keyed request. */
static void send_mesh_answer(wp_worker *w, const wp_mesh_req *mr, bool ok, const char *text,
                             size_t len) {
    unsigned char head[5];
    fm_put_u32(head, mr && mr->keyed ? mr->key : 0);
    head[4] = ok ? 1 : 0;
    if (w->fd < 0) return;
    if (mr && mr->keyed) send_now(w, 'n', head, 5, text, len);
    else send_now(w, 'm', head + 4, 1, text, len);
}

static void wp_mesh_done(fm_job *child, void *ud) {
    wp_mesh_req *mr = ud;
    wp_worker *w = mr->w;
    if (w)
        for (wp_mesh_req **pp = &w->mesh; *pp; pp = &(*pp)->next)
            if (*pp == mr) {
                *pp = mr->next;
                break;
            }
    /* the caller may have timed out or died meanwhile: answer only if it still waits */
    if (w && find_sent(w, mr->busy_id) && w->fd >= 0) {
        if (child->status == FM_OK) {
            size_t len = 4;
            char *text = child->value ? fm_json_dump(child->value, &len) : strdup("null");
            send_mesh_answer(w, mr, true, text, len);
            free(text);
        } else {
            json_t *e = fm_mesh_error(child);
            size_t len;
            char *text = fm_json_dump(e, &len);
            send_mesh_answer(w, mr, false, text, len);
            free(text);
            json_decref(e);
        }
    }
    free(mr);
}

static void mesh_request(wp_worker *w, const char *p, size_t len) {
    json_t *req = fm_json_parse_value(p, len);
    const char *target = json_string_value(json_object_get(req, "t"));
    json_t *key = json_object_get(req, "k"), *holes = json_object_get(req, "h");
    wp_mesh_req keyinfo = {.keyed = json_is_integer(key),
                           .key = (uint32_t)json_integer_value(key)};
    /* the call making it: "c" from a concurrent worker, else the one running */
    json_t *cid = json_object_get(req, "c");
    fm_job *parent = json_is_integer(cid) ? find_sent(w, (uint32_t)json_integer_value(cid)) : w->busy;
    if (!parent) parent = w->busy;
    /* "x": the context of the code that made the call inside the worker (a
     * function it called there): the callee's span is its child */
    fm_job inner;
    fm_trace_ctx ctx;
    json_t *hops = json_object_get(req, "o"); /* and the call's hops ("o"): its caller's + 1 */
    bool has_ctx = fm_trace_ctx_unhex(json_string_value(json_object_get(req, "x")), &ctx);
    if (has_ctx || json_is_integer(hops)) {
        inner = *parent; /* read by fm_mesh_call only, never kept */
        if (has_ctx) inner.trace = ctx;
        if (json_integer_value(hops) > parent->hops) inner.hops = (int)json_integer_value(hops) - 1;
        parent = &inner;
    }
    json_t *pos = json_object_get(req, "a"), *named = json_object_get(req, "n");
    fm_err err = FM_ERR_INIT;
    const fm_function *fn = NULL;
    fm_version *v = target ? fm_mesh_resolve(target, strlen(target), &fn, &err) : NULL;
    json_t **argv = NULL;
    size_t argc = 0;
    if (v && json_object_size(named) > 0 &&
        fm_bind_named(fn, named, &argv, &argc, &err) != FM_OK) {
        fm_version_release(v);
        v = NULL;
    }
    if (v) {
        size_t np = json_array_size(pos);
        if (np > argc) {
            argv = realloc(argv, np * sizeof(json_t *));
            for (size_t i = argc; i < np; i++) argv[i] = NULL;
            argc = np;
        }
        for (size_t i = 0; i < np; i++) {
            json_decref(argv[i]);
            argv[i] = json_incref(json_array_get(pos, i));
        }
        size_t hi;
        json_t *h;
        json_array_foreach(holes, hi, h) { /* undefined: the parameter's default applies */
            json_int_t k = json_integer_value(h);
            if (k < 0 || (size_t)k >= np) continue;
            json_decref(argv[k]);
            argv[k] = NULL;
        }
        fm_version_release(v); /* fm_mesh_call resolves again */
        wp_mesh_req *mr = calloc(1, sizeof(*mr));
        *mr = keyinfo;
        mr->w = w;
        mr->busy_id = (uint32_t)parent->async_id;
        if (fm_mesh_call(parent, target, strlen(target), argv, argc, wp_mesh_done, mr, &err) ==
            FM_OK) {
            mr->next = w->mesh;
            w->mesh = mr;
            json_decref(req);
            /* the callee may need a worker of this instance: don't make it wait for us */
            start_next(w->in);
            return;
        }
        free(mr);
    } else if (!target) {
        fm_err_set(&err, FM_BAD_REQUEST, "fnmesh.call needs \"deployment/function\"");
    }
    json_t *e = json_pack("{s:s, s:s, s:s}", "message", err.msg, "code",
                          fm_status_code(err.status), "stack", "");
    size_t elen;
    char *text = fm_json_dump(e, &elen);
    send_mesh_answer(w, &keyinfo, false, text, elen);
    free(text);
    json_decref(e);
    fm_err_clear(&err);
    json_decref(req);
}

/* A span recorded in a worker: its request id there is the call's id; the
 * node puts the call's own request id and version in. */
static void worker_span(wp_worker *w, const char *p) {
    if (!fm_telemetry) return;
    fm_span s;
    memcpy(&s, p, sizeof(s));
    s.request_id[sizeof(s.request_id) - 1] = '\0';
    const fm_job *job = find_sent(w, (uint32_t)strtoul(s.request_id, NULL, 10));
    if (job) {
        fm_trace_copy(s.request_id, sizeof(s.request_id), job->request_id);
        fm_trace_copy(s.version, sizeof(s.version), job->version->id);
        s.version[12 < sizeof(s.version) ? 12 : sizeof(s.version) - 1] = '\0';
    }
    fm_trace_record(&s);
}

static void log_line(wp_worker *w, const fm_job *job, const char *p, size_t len) {
    if (len < 1) return;
    fm_logs_function(w->in->deployment, job, (fm_log_level)((unsigned char)p[0] & 3), p + 1,
                     len - 1);
}

static void on_readable(uint32_t events, void *ud) {
    wp_worker *w = ud;
    bool eof = false;
    for (;;) {
        if (w->rcap - w->rlen < 65536) {
            w->rcap = w->rcap ? w->rcap * 2 : 131072;
            w->rbuf = realloc(w->rbuf, w->rcap);
        }
        ssize_t r = read(w->fd, w->rbuf + w->rlen, w->rcap - w->rlen);
        if (r > 0) {
            w->rlen += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        eof = true;
        break;
    }
    size_t off = 0;
    while (w->rlen - off >= 5) {
        const unsigned char *h = (const unsigned char *)w->rbuf + off;
        uint32_t n = fm_get_u32(h);
        if (n < 1 || n > FM_PY_MAX_FRAME) {
            eof = true;
            break;
        }
        if (w->rlen - off < 4 + (size_t)n) break;
        char type = (char)h[4];
        const char *p = (const char *)h + 5;
        size_t plen = n - 1;
        off += 4 + (size_t)n;
        if (w->starting) { /* 'E' (the exports, known already), then 'U'; 'X': it failed */
            if (type == 'X') {
                eof = true;
                break;
            }
            if (type == 'U' && plen >= 8) {
                w->cpu_us = get_u64((const unsigned char *)p);
                w->starting = false;
                w->fresh = true;
                w->start_cost_us = fm_mono_us() - w->spawned_us;
                w->idle_since_us = fm_mono_us();
            }
        } else if (type == 'S' && plen == sizeof(fm_span)) {
            worker_span(w, p);
        } else if (type == 'Z') { /* above its memory cap: replace it once it is idle */
            w->retiring = true;
        } else if (type == 'L') {
            log_line(w, w->busy, p, plen);
        } else if (type == 'l' && plen >= 4) { /* a concurrent worker's: u32 call id first */
            log_line(w, find_sent(w, fm_get_u32((const unsigned char *)p)), p + 4, plen - 4);
        } else if (type == 'M' && w->busy) {
            mesh_request(w, p, plen);
        } else if ((type == 'R' || type == 'F') && plen >= 16 && w->busy) {
            uint32_t id = fm_get_u32((const unsigned char *)p);
            fm_job *job = id == w->busy_id ? w->busy
                          : w->in->kind->concurrency ? find_sent(w, id)
                                                     : NULL;
            if (job) {
                /* CPU: the worker's since its last answer (shared calls: the one answering) */
                uint64_t cpu = get_u64((const unsigned char *)p + 4);
                job->cpu_us = cpu > w->cpu_us ? cpu - w->cpu_us : 0;
                job->cpu_measured = true;
                w->cpu_us = cpu;
                job->peak_memory = (uint64_t)fm_get_u32((const unsigned char *)p + 12) * 1024;
                finish_sent(w, job, type, p + 16, plen - 16);
            }
        }
        if (w->fd < 0) return; /* died while handling (e.g. send failed) */
    }
    memmove(w->rbuf, w->rbuf + off, w->rlen - off);
    w->rlen -= off;
    if (eof || (events & (EPOLLHUP | EPOLLERR))) {
        worker_died(w);
        return;
    }
    if (w->retiring && !w->busy && !w->mesh) stop_worker(w, fm_mono_us());
    start_next(w->in);
}

/* A worker that can take a call now: idle and live, else a slot to start
 * one in, else NULL (all busy: the call waits). */
/* CPUs this process may run on: more busy workers than that only add
 * context switches, unless workers wait for calls they made. */
static int usable_cpus(void) {
    static int n;
    if (!n) {
        cpu_set_t set;
        n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
        if (n < 1) n = 1;
    }
    return n;
}

/* Calls sent ahead to a busy worker: it reads the next one without waiting
 * for the node, so one wake-up serves several calls. */
#define PIPE_DEPTH 8

static wp_worker *free_worker(wp_inst *in) {
    int live = 0, waiting = 0, starting = 0;
    for (int i = 0; i < in->nworkers; i++) {
        wp_worker *w = &in->workers[i];
        if (w->fd >= 0 && !w->busy && !w->starting && !w->retiring) return w;
        if (w->fd >= 0) live++; /* starting ones too */
        if (w->fd >= 0 && w->starting) starting++;
        if (w->fd >= 0 && w->mesh && !in->kind->concurrency) waiting++; /* blocked on a call it made */
    }
    /* room for one more worker process (per thread: one per CPU beside those
     * waiting on calls they made; per version: max_instances), unless
     * restarts are held back; */
    /* max_instances yields when every worker here waits on a call it made:
     * the call it waits for may need this new one (recursion) */
    if (live - waiting < usable_cpus() &&
        (atomic_load_explicit(&in->health->live, memory_order_relaxed) < in->max_workers ||
         (waiting > 0 && live == waiting)) &&
        fm_mono_us() >= respawn_at(in)) {
        for (int i = 0; i < in->nworkers; i++)
            if (in->workers[i].fd < 0) return &in->workers[i];
        if (in->nworkers < MAX_WORKERS) {
            wp_worker *w = &in->workers[in->nworkers++];
            memset(w, 0, sizeof(*w));
            w->in = in;
            w->fd = -1;
            return w;
        }
    }
    /* a worker being started was started for the calls waiting: they wait
     * for it rather than queue up behind a busy one */
    if (starting) return NULL;
    /* else pipeline behind the least loaded worker that is running normally */
    wp_worker *best = NULL;
    for (int i = 0; i < in->nworkers; i++) {
        wp_worker *w = &in->workers[i];
        int depth = in->kind->concurrency ? in->kind->concurrency : PIPE_DEPTH;
        if (w->fd < 0 || w->starting || w->retiring || (w->mesh && !in->kind->concurrency) ||
            w->interrupted_at || w->depth >= depth)
            continue;
        if (!best || w->depth < best->depth) best = w;
    }
    return best;
}

/* A process live or starting. */
static bool has_worker(const wp_inst *in) {
    for (int i = 0; i < in->nworkers; i++)
        if (in->workers[i].fd >= 0) return true;
    return false;
}

static const char *crash_message(const wp_inst *in) {
    static __thread char msg[200];
    int64_t left = respawn_at(in) - fm_mono_us();
    snprintf(msg, sizeof(msg),
             "the %s workers of %s keep failing (%d in a row); the next one starts in %lld ms",
             in->kind->label, in->deployment, crashes_of(in),
             (long long)(left > 0 ? (left + 999) / 1000 : 0));
    return msg;
}

/* Takes the first queued call off the queue. */
static fm_job *pop_queued(wp_inst *in) {
    fm_job *job = in->qhead;
    in->qhead = job->next;
    if (!in->qhead) in->qtail = NULL;
    job->next = NULL;
    return job;
}

/* Sends queued calls to free workers, starting workers where needed. */
static void start_next(wp_inst *in) {
    while (in->qhead) {
        fm_job *job = in->qhead;
        if (job->deadline_us && fm_mono_us() >= job->deadline_us) {
            pop_queued(in);
            fm_job_fail_timeout(job);
            fm_job_finish(job);
            continue;
        }
        wp_worker *w = free_worker(in);
        if (!w) {
            int64_t now = fm_mono_us();
            int64_t at = respawn_at(in);
            if (!has_worker(in) && now < at &&
                (at - now > MAX_BACKOFF_WAIT_US || (job->deadline_us && at >= job->deadline_us))) {
                /* crash-looping: fail fast rather than let calls wait out the backoff */
                pop_queued(in);
                fm_job_fail(job, FM_UNAVAILABLE, crash_message(in), "WorkerCrash", NULL);
                fm_job_finish(job);
                continue;
            }
            return;
        }
        if (w->fd < 0) { /* a new worker: calls wait in the queue until it is ready */
            fm_err err = FM_ERR_INIT;
            if (spawn_async(w, &err) != FM_OK) {
                pop_queued(in);
                fm_job_fail(job, FM_INTERNAL, err.msg, NULL, NULL);
                fm_err_clear(&err);
                fm_job_finish(job);
                continue;
            }
            return;
        }
        pop_queued(in);
        send_call(w, job); /* a worker that cannot take it fails it when its socket reports */
    }
}

fm_status fm_wpool_instance_create(const fm_wpool_kind *kind, void *tsp, const char *deployment,
                                   const char *artifact, size_t artifact_len, const fm_instance_limits *lim,
                                   void **out,
                                   fm_export **exports, size_t *nexports, fm_err *err) {
    wp_thread *ts = tsp;
    wp_inst *in = calloc(1, sizeof(*in));
    in->ts = ts;
    in->kind = kind;
    in->deployment = strdup(deployment);
    in->artifact = artifact;
    in->artifact_len = artifact_len;
    in->memory_mb = (long)(lim->memory >> 20) + FM_WORKER_AS_HEADROOM_MB;
    in->max_workers = lim->max_workers > 0 ? lim->max_workers : 4 * usable_cpus();
    in->health = health_get(artifact);
    wp_worker *w = &in->workers[in->nworkers++]; /* the first one (no backoff: a deploy waits) */
    w->in = in;
    w->fd = -1;
    char *ej = NULL;
    if (spawn(w, &ej, err) != FM_OK) {
        health_put(in->health);
        free(in->deployment);
        free(in);
        return err->status;
    }
    if (exports) {
        json_t *list = json_loads(ej, 0, NULL);
        size_t n = json_array_size(list);
        fm_export *ex = calloc(n ? n : 1, sizeof(fm_export));
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(list, i);
            ex[i].name = strdup(json_string_value(json_object_get(e, "name")));
            ex[i].file = strdup(json_string_value(json_object_get(e, "file")));
            ex[i].params = json_incref(json_object_get(e, "params"));
        }
        json_decref(list);
        *exports = ex;
        *nexports = n;
    }
    free(ej);
    in->next = ts->list;
    ts->list = in;
    *out = in;
    return FM_OK;
}

void fm_wpool_instance_destroy(void *tsp, void *p) {
    wp_thread *ts = tsp;
    wp_inst *in = p;
    for (wp_inst **pp = &ts->list; *pp; pp = &(*pp)->next)
        if (*pp == in) {
            *pp = in->next;
            break;
        }
    for (int i = 0; i < in->nworkers; i++) {
        wp_worker *w = &in->workers[i];
        reap(w, true);
        for (wp_mesh_req *mr = w->mesh; mr; mr = mr->next) mr->w = NULL;
        free(w->rbuf);
        free(w->obuf);
    }
    while (in->qhead) { /* nothing should wait here (calls hold the version) */
        fm_job *j = pop_queued(in);
        fm_job_fail(j, FM_INTERNAL, "the deployment was unloaded", NULL, NULL);
        fm_job_finish(j);
    }
    health_put(in->health);
    free(in->deployment);
    free(in);
}

void fm_wpool_call(void *tsp, void *ip, uint32_t index, fm_job *job) {
    wp_inst *in = ip;
    (void)index;
    job->next = NULL;
    if (in->qtail) in->qtail->next = job;
    else in->qhead = job;
    in->qtail = job;
    start_next(in);
}

void fm_wpool_flush(void *tsp) {
    wp_thread *ts = tsp;
    while (ts->ndirty > 0) {
        wp_worker *w = ts->dirty[--ts->ndirty];
        w->dirty = false;
        out_flush(w);
    }
}

/* Reaps workers stopped for being idle (never waiting: they exit on
 * their own once their socket is closed). Returns microseconds until the
 * next look, or -1. */
static int64_t reap_exiting(wp_thread *ts, int64_t now) {
    int64_t next = -1;
    for (wp_exiting **pp = &ts->exiting; *pp;) {
        wp_exiting *e = *pp;
        int st;
        pid_t r = waitpid(e->pid, &st, WNOHANG);
        if (r == e->pid || (r < 0 && errno == ECHILD)) {
            fm_cgroup_release(e->cg);
            *pp = e->next;
            free(e);
            continue;
        }
        if (now >= e->kill_at_us) {
            kill(e->pid, SIGKILL);
            e->kill_at_us = now + 1000000;
        }
        if (next < 0 || 20000 < next) next = 20000; /* look again soon */
        pp = &e->next;
    }
    return next;
}

/* Stops an idle worker: its socket closes, it exits on its own (reaped
 * later, killed if it lingers); its slot is free for a new one. */
static void stop_worker(wp_worker *w, int64_t now) {
    wp_thread *ts = w->in->ts;
    wp_exiting *e = calloc(1, sizeof(*e));
    e->pid = w->pid;
    e->cg = w->cg;
    w->cg = 0;
    e->kill_at_us = now + 5000000;
    e->next = ts->exiting;
    ts->exiting = e;
    detach(w);
    w->pid = 0;
    w->retiring = false;
    atomic_fetch_add_explicit(&kind_stats[kind_slot(w->in->kind)].exited, 1, memory_order_relaxed);
}

/* Gives back the workers of `in` beyond the first that have been idle for
 * the idle window; returns microseconds until the next one may be, or -1. */
static int64_t scale_down(wp_thread *ts, wp_inst *in, int64_t now) {
    int64_t window = fm_exec_idle_window(), next = -1;
    int live = 0;
    for (int i = 0; i < in->nworkers; i++) live += in->workers[i].fd >= 0;
    for (int i = in->nworkers - 1; i >= 0 && live > 1; i--) {
        wp_worker *w = &in->workers[i];
        if (w->fd < 0 || w->busy || w->starting || w->mesh || !w->idle_since_us) continue;
        if (now - w->idle_since_us < window) {
            int64_t at = w->idle_since_us + window - now;
            if (next < 0 || at < next) next = at;
            continue;
        }
        stop_worker(w, now);
        live--;
    }
    return next;
}

int64_t fm_wpool_poll(void *tsp) {
    wp_thread *ts = tsp;
    if (refills[0]) refill_pending();
    int64_t now = fm_mono_us(), next = ts->exiting ? reap_exiting(ts, now) : -1;
    for (wp_inst *in = ts->list; in; in = in->next) {
        if (in->nworkers > 1) {
            int64_t at = scale_down(ts, in, now);
            if (at >= 0 && (next < 0 || at < next)) next = at;
        }
        for (int i = 0; i < in->nworkers; i++) {
            wp_worker *w = &in->workers[i];
            if (w->starting && w->pid > 0) { /* a start that never finishes: kill it */
                int64_t at = w->spawned_us + (int64_t)INIT_TIMEOUT_MS * 1000;
                if (now >= at) {
                    kill(w->pid, SIGKILL); /* the socket closes: worker_died */
                    at = now + 100000;
                }
                if (next < 0 || at - now < next) next = at - now;
                continue;
            }
            fm_job *job = w->busy;
            if (!job || !job->deadline_us || w->pid <= 0) continue;
            int64_t at;
            if (!w->interrupted_at) {
                if (now >= job->deadline_us) {
                    /* Python: KeyboardInterrupt in the running call; C cannot be interrupted */
                    kill(w->pid, in->kind->sigint_first ? SIGINT : SIGKILL);
                    w->interrupted_at = now;
                    at = now + (in->kind->sigint_first ? KILL_GRACE_US : 100000);
                } else {
                    at = job->deadline_us;
                }
            } else if (now >= w->interrupted_at + KILL_GRACE_US) {
                kill(w->pid, SIGKILL); /* it did not yield: the socket closes, worker_died */
                at = now + 100000;
            } else {
                at = w->interrupted_at + KILL_GRACE_US;
            }
            if (next < 0 || at - now < next) next = at - now;
        }
        if (in->qhead && in->qhead->deadline_us) {
            int64_t at = in->qhead->deadline_us;
            if (next < 0 || at - now < next) next = at > now ? at - now : 0;
        }
        int64_t rat = respawn_at(in);
        if (in->qhead && rat > now) { /* the backoff ends: start a worker */
            if (next < 0 || rat - now < next) next = rat - now;
        } else if (in->qhead && rat && !has_worker(in)) {
            start_next(in);
        }
        if (in->qhead && in->qhead->deadline_us && now >= in->qhead->deadline_us) start_next(in);
    }
    return next;
}

