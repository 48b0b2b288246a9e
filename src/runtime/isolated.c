/* isolated.c - process isolation for the in-process runtimes (JavaScript,
 * Lua, templates).
 *
 * Node side: each in-process runtime has an isolated form in the runtime
 * table, with the same name and no file extensions, whose instances are
 * pools of worker processes (runtime/worker_pool.c, as for Python and C).
 * A version under process isolation (the manifest's "isolation", else the
 * node's --isolation) runs its units in those forms (fm_version_new).
 *
 * Worker side (`fnmesh worker-js`, `worker-lua`, `worker-template`): the
 * very same runtime code as in-process, driven by a small loop instead of
 * an executor thread. The worker initialises the runtime, takes its
 * deployment's limits and enters the sandbox ('Q'), loads the artifact
 * ('I' → 'E' exports, 'U' ready), then runs calls ('C' → 'R'/'F', in the
 * order they finish): while one awaits, the next runs, as on an executor
 * thread (the node sends a worker WORKER_CONCURRENCY at most). Everything a function
 * does that needs the node goes there over the same socket: its log lines
 * ('l', with the call's id) and its calls of other functions ('M' with a
 * key and the call's id, answered by 'n' with that key, so a function may
 * await several at once). A call of a
 * function of the worker's own unit (same deployment and language) runs in
 * the worker, like a call between in-process functions, so recursion needs
 * no more workers. A call's
 * deadline ("d", ms) stops the code from inside (JavaScriptCore's watchdog,
 * Lua's hook); the node kills a worker that does not answer a second after
 * it. With memory_mb the worker's RSS is the instance's memory: JavaScript
 * checks it while code runs, and a worker that ends a call above it asks
 * the node to replace it ('Z'): the node sends it no more calls and closes
 * its socket once it has answered the ones it has.
 *
 * Ownership: the worker owns the artifact (instances borrow from it), its
 * one instance, the queued call frames and the forwarded child jobs. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "core/util.h"
#include "exec/exec.h"
#include "metrics/logs.h"
#include "metrics/metrics.h"
#include "metrics/trace.h"
#include "registry/registry.h"
#include "runtime/python/python_int.h"
#include "runtime/runtime.h"
#include "runtime/worker_pool.h"

extern const fm_runtime fm_runtime_js;
extern const fm_runtime fm_runtime_lua;
extern const fm_runtime fm_runtime_template;

/* ---------------------------------------------------------------- node side */

static const char *const no_extensions[] = {NULL};

/* Sanitizer builds do not cap a worker's RSS: their shadow memory and
 * quarantine are in it. */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_CAPPED 0
#else
#define RSS_CAPPED 1
#endif

#define RSS_CHECK_US 5000 /* how often, at most, a worker looks at its RSS after calls */

/* Calls one worker runs at once: code that awaits (a timer, another
 * function) lets the next call run, as on an executor thread. */
#define WORKER_CONCURRENCY 32

/* One isolated form: its worker kind, an instance_create that names it, the runtime. */
#define ISOLATED_RUNTIME(sym, base_name, verb_, label_, bytes)                                   \
    static const fm_wpool_kind sym##_kind = {.runtime = base_name,                              \
                                             .verb = verb_,                                      \
                                             .label = label_,                                    \
                                             .sigint_first = true,                               \
                                             .concurrency = WORKER_CONCURRENCY};                 \
    static fm_status sym##_create(void *ts, const char *dep, const char *art, size_t art_len,    \
                                  const fm_instance_limits *lim, void **out, fm_export **ex,    \
                                  size_t *nex, fm_err *err) {                                    \
        return fm_wpool_instance_create(&sym##_kind, ts, dep, art, art_len, lim, out, ex, nex,   \
                                        err);                                                    \
    }                                                                                            \
    const fm_runtime sym = {                                                                     \
        .name = base_name,                                                                       \
        .out_of_process = true,                                                                  \
        .isolated = true,                                                                        \
        .instance_bytes = bytes,                                                                 \
        .extensions = no_extensions,                                                             \
        .thread_init = fm_wpool_thread_init,                                                     \
        .thread_dispose = fm_wpool_thread_dispose,                                               \
        .instance_create = sym##_create,                                                         \
        .instance_destroy = fm_wpool_instance_destroy,                                           \
        .call = fm_wpool_call,                                                                   \
        .poll = fm_wpool_poll,                                                                   \
        .flush = fm_wpool_flush,                                                                 \
    };

/* instance_bytes: a warm worker's RSS (bench/density.py measures them) */
ISOLATED_RUNTIME(fm_runtime_js_isolated, "js", "worker-js", "JavaScript", 32 << 20)
ISOLATED_RUNTIME(fm_runtime_lua_isolated, "lua", "worker-lua", "Lua", 8 << 20)
ISOLATED_RUNTIME(fm_runtime_template_isolated, "template", "worker-template", "template",
                 32 << 20)

static const struct {
    const fm_runtime *base, *isolated;
    const char *verb;
} forms[] = {
    {&fm_runtime_js, &fm_runtime_js_isolated, "worker-js"},
    {&fm_runtime_lua, &fm_runtime_lua_isolated, "worker-lua"},
    {&fm_runtime_template, &fm_runtime_template_isolated, "worker-template"},
};
#define NFORMS (sizeof(forms) / sizeof(forms[0]))

const fm_runtime *fm_runtime_isolated(const fm_runtime *rt) {
    for (size_t i = 0; i < NFORMS; i++)
        if (forms[i].base == rt) return forms[i].isolated;
    return rt;
}

/* -------------------------------------------------------------- worker side */

static const int sock = FM_PY_WORKER_FD;

/* A frame from the node not handled yet: a call ('C': fm_call_frame) waiting
 * for the one before it, or an answer ('n') to a call made. */
typedef struct queued {
    struct queued *next;
    char type;
    char *frame; /* owned */
    size_t len;
} queued;

/* A call of a function of this worker's own unit: it runs here. */
typedef struct local_call {
    struct local_call *next;
    fm_job *child; /* owned until it runs */
    uint32_t index;
} local_call;

/* A call from the node being run (several at once while code awaits). */
typedef struct running {
    struct running *next;
    fm_job *job; /* owned; its request_id is the call id in decimal (for 'M' and 'l') */
    unsigned char id[4];
    bool finished;
    int64_t busy_us; /* its time running here (its synchronous part): its share of the CPU */
} running;

/* A call of another function, sent to the node and not yet answered. */
typedef struct forwarded {
    struct forwarded *next;
    uint32_t key;
    fm_job *child; /* owned until its answer completes it */
} forwarded;

static struct {
    const fm_runtime *rt;
    void *ts, *inst;
    size_t memory_cap;      /* bytes (memory_mb), 0 = none */
    running *calls;         /* the node's calls being run */
    bool any_finished;      /* some of them have finished: answer them */
    queued *qhead, *qtail;
    forwarded *fwd;
    uint32_t next_key;
    local_call *lhead, *ltail;
    char deployment[256];
    char **names; /* the unit's exports, by index (owned) */
    size_t nnames;
    fm_version *self;  /* the unit as a version of its own, for fm_mesh_resolve (owned) */
    unsigned char *rbuf;    /* frames read from the node, not yet handled */
    size_t rlen, rcap;
    unsigned char *out;     /* answers not yet written: one write for all those of a pass */
    size_t olen, ocap;
    struct answer_head {
        size_t at;       /* where an answer's usage head is in `out` (filled at the write) */
        uint64_t weight; /* the call's time running here, µs */
    } *heads;
    size_t nheads, cheads;
    bool gone;              /* the node closed the socket */
    bool retiring;          /* above memory_mb: asked the node for a replacement */
    int64_t next_rss_check_us;
} W;

/* The node's id of the call `job` belongs to (0: none, e.g. a timer's code). */
static uint32_t call_id(const fm_job *job) {
    return job && job->request_id[0] ? (uint32_t)strtoul(job->request_id, NULL, 10) : 0;
}

/* Frames to the node wait in W.out and leave in one write when the worker
 * has done what it can for now (before it waits): the calls a function makes
 * at once arrive together, and a pass's answers wake the node once. */
static void queue_frame(char type, const void *a, size_t alen, const void *b, size_t blen) {
    size_t need = 5 + alen + blen;
    if (W.olen + need > W.ocap) {
        while (W.olen + need > W.ocap) W.ocap = W.ocap ? W.ocap * 2 : 65536;
        W.out = realloc(W.out, W.ocap);
    }
    unsigned char *p = W.out + W.olen;
    fm_put_u32(p, (uint32_t)(1 + alen + blen));
    p[4] = (unsigned char)type;
    if (alen) memcpy(p + 5, a, alen);
    if (blen) memcpy(p + 5 + alen, b, blen);
    W.olen += need;
}

/* An answer ('R' or 'F'); its usage head (the worker's CPU time so far) is
 * filled when it is written, with the others of the pass (one getrusage),
 * its share of the CPU in proportion to its time running here. */
static void queue_answer(char type, const unsigned char id[4], const char *text, size_t len,
                         int64_t busy_us) {
    unsigned char head[FM_WORKER_REPLY_HEAD] = {0};
    memcpy(head, id, 4);
    if (W.nheads == W.cheads) {
        W.cheads = W.cheads ? W.cheads * 2 : 64;
        W.heads = realloc(W.heads, W.cheads * sizeof(*W.heads));
    }
    /* +1: calls too short to measure share what the pass used besides */
    W.heads[W.nheads++] = (struct answer_head){W.olen + 5, (uint64_t)(busy_us > 0 ? busy_us : 0) + 1};
    queue_frame(type, head, sizeof(head), text, len);
}

/* Fills the usage heads of the answers queued. */
static void fill_heads(void) {
    if (!W.nheads) return;
    uint64_t total = 0;
    for (size_t i = 0; i < W.nheads; i++) total += W.heads[i].weight;
    fm_usage_split usage;
    fm_worker_split_begin(&usage, total);
    for (size_t i = 0; i < W.nheads; i++)
        fm_worker_split_fill(W.out + W.heads[i].at, &usage, W.heads[i].weight);
    W.nheads = 0;
}

/* Writes the queued frames (blocking until all is written). */
static void flush_frames(void) {
    fill_heads();
    size_t off = 0;
    while (off < W.olen) {
        ssize_t n = write(sock, W.out + off, W.olen - off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            struct pollfd pfd = {.fd = sock, .events = POLLOUT};
            poll(&pfd, 1, 1000);
            continue;
        }
        if (n <= 0) {
            W.gone = true;
            break;
        }
        off += (size_t)n;
    }
    W.olen = 0;
}

static void send_span(const fm_span *s) {
    queue_frame('S', s, sizeof(*s), NULL, 0);
}

static void send_log(const fm_job *job, fm_log_level level, const char *msg, size_t len) {
    unsigned char head[5];
    uint32_t id = call_id(job);
    fm_put_u32(head, id);
    head[4] = (unsigned char)level;
    if (id) queue_frame('l', head, 5, msg, len);
    else queue_frame('L', head + 4, 1, msg, len);
}

/* Index of the export of this worker's unit that `target` ("dep/fn" or
 * "dep.fn") names, or -1. */
static long own_export(const char *target, size_t len) {
    size_t dl = strlen(W.deployment);
    if (len <= dl + 1 || memcmp(target, W.deployment, dl) != 0 ||
        (target[dl] != '/' && target[dl] != '.'))
        return -1;
    const char *fn = target + dl + 1;
    size_t fl = len - dl - 1;
    for (size_t i = 0; i < W.nnames; i++)
        if (strlen(W.names[i]) == fl && memcmp(W.names[i], fn, fl) == 0) return (long)i;
    return -1;
}

/* The worker's own functions, found by name: what a runtime that calls
 * functions directly (JavaScript) resolves; nothing else resolves here. */
static fm_version *resolve_own(const char *target, size_t len, const fm_function **fn) {
    long own = W.self ? own_export(target, len) : -1;
    if (own < 0) return NULL;
    *fn = &W.self->fns[own];
    atomic_fetch_add_explicit(&W.self->refs, 1, memory_order_relaxed);
    return W.self;
}

static void *own_instance(fm_version *v, uint32_t unit) {
    (void)unit;
    return v == W.self ? W.inst : NULL;
}

/* A version standing for the worker's unit: its name, functions in export order. */
static fm_version *make_self(void) {
    fm_version *v = calloc(1, sizeof(*v));
    atomic_init(&v->refs, 1); /* the worker's: never released to 0 while it runs */
    v->deployment = W.deployment;
    v->fns = calloc(W.nnames ? W.nnames : 1, sizeof(fm_function));
    v->nfns = W.nnames;
    for (size_t i = 0; i < W.nnames; i++) {
        v->fns[i].name = W.names[i];
        v->fns[i].index = (uint32_t)i;
        v->fns[i].rt = W.rt;
    }
    return v;
}

/* fm_mesh_call in a worker: a function of the same unit runs here (after
 * the code running now, as in-process); any other goes to the node. */
static void sync_wait(uint32_t key, int64_t deadline_us);

static void forward(fm_job *child, const char *target, size_t len, bool now) {
    long own = now ? -1 : own_export(target, len); /* callSync waits: never for itself */
    if (own >= 0) {
        local_call *lc = calloc(1, sizeof(*lc));
        lc->child = child;
        lc->index = (uint32_t)own;
        /* a call of this unit's function, as the node would run it: its version
         * (the worker's own) names its hop in errors, its span is a child of the caller's */
        child->version = W.self;
        atomic_fetch_add_explicit(&W.self->refs, 1, memory_order_relaxed);
        child->fn = &W.self->fns[own];
        fm_trace_ctx caller = child->trace;
        fm_trace_child(&child->trace, &caller);
        child->on_done = fm_mesh_forwarded_done;
        if (W.ltail) W.ltail->next = lc;
        else W.lhead = lc;
        W.ltail = lc;
        return;
    }
    json_t *args = json_array(), *holes = NULL;
    for (size_t i = 0; i < child->argc; i++) {
        json_array_append(args, child->argv[i] ? child->argv[i] : json_null());
        if (child->argv[i]) continue;
        if (!holes) holes = json_array();
        json_array_append_new(holes, json_integer((json_int_t)i));
    }
    forwarded *f = calloc(1, sizeof(*f));
    f->key = ++W.next_key;
    f->child = child;
    json_t *req = json_pack("{s:s%, s:o, s:o*, s:I}", "t", target, len, "a", args, "h", holes,
                            "k", (json_int_t)f->key);
    if (req && call_id(child)) json_object_set_new(req, "c", json_integer(call_id(child)));
    if (req) json_object_set_new(req, "o", json_integer(child->hops)); /* its hop count */
    if (req && fm_telemetry) { /* "x": the caller's context, for the callee's span */
        char x[67];
        fm_trace_ctx_hex(&child->trace, x);
        json_object_set_new(req, "x", json_string(x));
    }
    size_t tlen = 0;
    char *text = req ? fm_json_dump(req, &tlen) : NULL;
    json_decref(req);
    if (!text) {
        free(f);
        fm_job_fail(child, FM_INTERNAL, "the call could not be sent to the node", NULL, NULL);
        fm_mesh_forwarded_done(child);
        return;
    }
    queue_frame('M', text, tlen, NULL, 0);
    free(text);
    f->next = W.fwd;
    W.fwd = f;
    if (now) sync_wait(f->key, child->deadline_us);
}

/* 'n': u32 key, u8 ok, JSON (the value, or the error {message, code, name?, stack}). */
static void answered(const unsigned char *p, size_t len) {
    if (len < 5) return;
    uint32_t key = fm_get_u32(p);
    forwarded *f = NULL;
    for (forwarded **pp = &W.fwd; *pp; pp = &(*pp)->next)
        if ((*pp)->key == key) {
            f = *pp;
            *pp = f->next;
            break;
        }
    if (!f) return;
    fm_job *child = f->child;
    free(f);
    json_t *v = fm_json_parse_value((const char *)p + 5, len - 5);
    if (p[4]) {
        fm_job_succeed_value(child, json_is_null(v) ? NULL : v);
        if (json_is_null(v)) json_decref(v);
    } else {
        const char *code = json_string_value(json_object_get(v, "code"));
        fm_job_fail(child, fm_mesh_status(code),
                    json_string_value(json_object_get(v, "message")),
                    json_string_value(json_object_get(v, "name")),
                    json_string_value(json_object_get(v, "stack")));
        json_decref(v);
    }
    fm_mesh_forwarded_done(child);
}

static void call_done(fm_job *job) {
    ((running *)job->ud)->finished = true;
    W.any_finished = true;
}

/* Starts the call in `frame` (a 'C' payload: fm_call_frame). */
static void start_call(const char *frame, size_t len) {
    fm_call_frame f;
    if (fm_call_frame_parse(frame, len, &f) != 0) {
        flush_frames(); /* the answers before it go first */
        fm_worker_reject_call(sock, frame, len);
        return;
    }
    fm_job *job = fm_job_new(FM_JOB_CALL, NULL, NULL);
    /* a traced call comes while the node's telemetry is on: spans are recorded then */
    fm_telemetry = f.traced;
    if (f.traced) job->trace = f.trace;
    job->hops = (int)f.hops;
    /* Nested arrays and objects: the runtime reads the JSON text itself
     * (JSON.parse: one call into the engine, not one per value); bytes
     * values, which only jansson's reading turns into the runtime's binary
     * type, never. Flat argument lists stay cheaper through jansson. */
    bool as_text = W.rt->call_json && f.nholes <= 64 && f.args_len > 2 &&
                   (memchr(f.args + 1, '[', f.args_len - 1) || memchr(f.args + 1, '{', f.args_len - 1)) &&
                   !memmem(f.args, f.args_len, "\"$bytes\"", 8);
    if (!as_text) {
        json_t *args = fm_json_parse_value(f.args, f.args_len);
        job->argc = json_array_size(args);
        job->argv = calloc(job->argc ? job->argc : 1, sizeof(json_t *));
        for (size_t i = 0; i < job->argc; i++) job->argv[i] = json_incref(json_array_get(args, i));
        for (uint32_t i = 0; i < f.nholes; i++) {
            uint32_t k = fm_call_frame_hole(&f, i);
            if (k >= job->argc) continue;
            json_decref(job->argv[k]);
            job->argv[k] = NULL; /* undefined: the parameter's default applies */
        }
        json_decref(args);
    }
    uint32_t index = f.index;
    int64_t left_ms = f.left_ms;
    job->started_us = fm_mono_us();
    if (left_ms > 0) job->deadline_us = job->started_us + left_ms * 1000;
    running *rc = calloc(1, sizeof(*rc));
    rc->job = job;
    memcpy(rc->id, f.id, 4);
    job->request_id[fm_i64_to_dec(fm_get_u32(rc->id), job->request_id)] = '\0';
    rc->next = W.calls;
    W.calls = rc;
    job->ud = rc;
    job->on_done = call_done;
    if (as_text) {
        uint32_t holes[64];
        for (uint32_t i = 0; i < f.nholes; i++) holes[i] = fm_call_frame_hole(&f, i);
        W.rt->call_json(W.ts, W.inst, index, job, f.args, holes, f.nholes);
    } else {
        W.rt->call(W.ts, W.inst, index, job);
    }
    rc->busy_us = fm_mono_us() - job->started_us;
}

/* Answers a finished call: 'R' with its JSON, or 'F' with its error. */
static void answer(running *rc) {
    fm_job *job = rc->job;
    if (job->status == FM_OK) {
        const char *text = job->result ? job->result : "null";
        queue_answer('R', rc->id, text, job->result ? job->result_len : 4, rc->busy_us);
    } else {
        json_t *e = json_object();
        if (job->error) json_object_update(e, job->error);
        json_object_set_new(e, "code", json_string(fm_status_code(job->status)));
        size_t len = 0;
        char *text = fm_json_dump(e, &len);
        queue_answer('F', rc->id, text, len, rc->busy_us);
        free(text);
        json_decref(e);
    }
    fm_job_free(job);
    free(rc);
}

static void answer_finished(void) {
    W.any_finished = false;
    for (running **pp = &W.calls; *pp;) {
        running *rc = *pp;
        if (!rc->finished) {
            pp = &rc->next;
            continue;
        }
        *pp = rc->next;
        answer(rc);
    }
    /* above its memory after a call: it asks to be replaced ('Z'), answers
     * what was sent meanwhile, and exits when the node closes its socket */
    if (!RSS_CAPPED || !W.memory_cap || W.retiring) return;
    int64_t now = fm_mono_us(); /* looked at every few ms at most: it is a system call */
    if (now < W.next_rss_check_us) return;
    W.next_rss_check_us = now + RSS_CHECK_US;
    if (fm_process_rss() > W.memory_cap) {
        W.retiring = true;
        flush_frames();
        fm_py_send(sock, 'Z', NULL, 0, NULL, 0);
    }
}

/* Reads what the socket has and queues its whole frames. Sets W.gone at EOF. */
static void read_frames(void) {
    if (W.rcap - W.rlen < 65536) {
        W.rcap = W.rcap ? W.rcap * 2 : 131072;
        W.rbuf = realloc(W.rbuf, W.rcap);
    }
    ssize_t n = read(sock, W.rbuf + W.rlen, W.rcap - W.rlen);
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
        W.gone = true;
        return;
    }
    if (n < 0) return;
    W.rlen += (size_t)n;
    size_t off = 0;
    while (W.rlen - off >= 5) {
        uint32_t flen = fm_get_u32(W.rbuf + off);
        if (flen < 1 || flen > FM_PY_MAX_FRAME) {
            W.gone = true;
            return;
        }
        if (W.rlen - off < 4 + (size_t)flen) break;
        char type = (char)W.rbuf[off + 4];
        const unsigned char *p = W.rbuf + off + 5;
        size_t plen = flen - 1;
        off += 4 + (size_t)flen;
        if ((type == 'n' && plen >= 5) || (type == 'C' && plen >= FM_CALL_HEAD)) {
            queued *q = malloc(sizeof(*q));
            q->next = NULL;
            q->type = type;
            q->frame = malloc(plen + 1);
            memcpy(q->frame, p, plen);
            q->frame[plen] = '\0';
            q->len = plen;
            if (W.qtail) W.qtail->next = q;
            else W.qhead = q;
            W.qtail = q;
        }
    }
    memmove(W.rbuf, W.rbuf + off, W.rlen - off);
    W.rlen -= off;
}

/* Takes the first queued frame of `type` ('n': with `key`, 0 = any), or NULL. */
static queued *take_queued(char type, uint32_t key) {
    for (queued **pp = &W.qhead, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
        queued *q = *pp;
        if (q->type != type || (key && fm_get_u32((const unsigned char *)q->frame) != key))
            continue;
        *pp = q->next;
        if (W.qtail == q) W.qtail = prev;
        return q;
    }
    return NULL;
}

/* fnmesh.callSync from a worker: waits for the answer to call `key` (other
 * frames stay queued), at most until the caller's deadline. */
static void sync_wait(uint32_t key, int64_t deadline_us) {
    for (;;) {
        queued *q = take_queued('n', key);
        if (q) {
            answered((const unsigned char *)q->frame, q->len);
            free(q->frame);
            free(q);
            return;
        }
        int64_t left = deadline_us ? deadline_us - fm_mono_us() : -1;
        if (W.gone || (deadline_us && left <= 0)) break;
        if (W.olen) flush_frames(); /* answers of other calls do not wait for this one */
        struct pollfd pfd = {.fd = sock, .events = POLLIN};
        int pr = poll(&pfd, 1, left < 0 ? -1 : (int)((left + 999) / 1000));
        if (pr > 0) read_frames();
    }
    /* no answer: the call fails now (a late answer finds no caller) */
    for (forwarded **pp = &W.fwd; *pp; pp = &(*pp)->next)
        if ((*pp)->key == key) {
            forwarded *f = *pp;
            *pp = f->next;
            fm_job_fail_timeout(f->child);
            fm_mesh_forwarded_done(f->child);
            free(f);
            return;
        }
}

/* Sends 'X' with the error of a failed load. */
static void send_load_failure(const fm_err *err) {
    W.olen = 0; /* log lines of the failed load stay here: 'X' must come first */
    json_t *e = json_pack("{s:s}", "message", err->msg[0] ? err->msg : "the deployment failed to load");
    json_t *stack = json_object_get(err->details, "stack");
    if (json_is_string(stack)) json_object_set(e, "stack", stack);
    size_t len = 0;
    char *text = fm_json_dump(e, &len);
    fm_py_send(sock, 'X', text, len, NULL, 0);
    free(text);
    json_decref(e);
}

static json_t *exports_json(const fm_export *ex, size_t n) {
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, json_pack("{s:s, s:s, s:O}", "name", ex[i].name, "file",
                                              ex[i].file, "params",
                                              ex[i].params ? ex[i].params : json_array()));
    return list;
}

/* The next queued frame is a call the runtime may run in a batch. (A mesh
 * answer resumes a waiting call, whose continuation must run under its own
 * deadline: those are handled one by one, as are calls of functions that
 * may leave work for microtasks.) */
static bool next_batchable(void) {
    const queued *q = W.qhead;
    return q && q->type == 'C' && W.rt->batch_ok(W.ts, W.inst, fm_get_u32((const unsigned char *)q->frame + 4));
}

/* Two calls or more that may run together at the head of the queue, and
 * no mesh answer waiting (those go first). */
static bool batchable(void) {
    if (!W.qhead || !W.qhead->next || W.lhead || W.qhead->next->type != 'C') return false;
    for (const queued *q = W.qhead; q; q = q->next)
        if (q->type == 'n') return false;
    if (!W.rt->batch_ok(W.ts, W.inst, fm_get_u32((const unsigned char *)W.qhead->next->frame + 4)))
        return false;
    return next_batchable();
}

/* Inside the runtime's one entry: the queued calls, until one that may not
 * run so, or the runtime or a call of this unit's own (W.lhead, run by the
 * main loop) says stop. */
static void run_batch(void *ud) {
    (void)ud;
    while (!W.gone && !W.lhead && W.rt->batch_more(W.ts) && next_batchable()) {
        queued *q = take_queued('C', 0);
        start_call(q->frame, q->len);
        free(q->frame);
        free(q);
    }
}

int fm_isolated_worker_main(const char *verb) {
    const fm_runtime *rt = NULL;
    for (size_t i = 0; i < NFORMS; i++)
        if (strcmp(forms[i].verb, verb) == 0) rt = forms[i].base;
    if (!rt) return -1;
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the node */
    signal(SIGINT, SIG_IGN); /* the deadline is the runtime's own; then SIGKILL */
    /* metrics are the node's; spans of calls made inside go to it ('S') */
    fm_trace_set_sink(send_span);
    W.rt = rt;
    /* up to the 'Q' frame the same for every deployment: a spare worker
     * has its runtime initialised before any call waits for it */
    W.ts = rt->thread_init(0);
    long memory_mb = 0;
    char *artifact = NULL;
    size_t alen = 0;
    /* JavaScriptCore reserves tens of GiB of address space: its RSS is checked instead */
    bool cap_as = rt != &fm_runtime_js && rt != &fm_runtime_template;
    if (fm_worker_take_quota_ex(sock, cap_as, &memory_mb, W.deployment, sizeof(W.deployment)) !=
            0 ||
        fm_py_recv(sock, -1, &artifact, &alen) != 'I') {
        free(artifact);
        rt->thread_dispose(W.ts);
        return 2;
    }
    fm_py_frame_release(); /* from here frames are read by read_frames */
    W.memory_cap = memory_mb > 0 ? (size_t)memory_mb << 20 : 0;
    fm_logs_set_sink(send_log);
    static const fm_mesh_worker hooks = {forward, resolve_own, own_instance};
    fm_mesh_set_worker(&hooks);
    fm_instance_limits lim = {.memory = W.memory_cap, .whole_process = true};
    fm_export *ex = NULL;
    size_t nex = 0;
    fm_err err = FM_ERR_INIT;
    if (rt->instance_create(W.ts, W.deployment, artifact, alen, &lim, &W.inst, &ex, &nex, &err) !=
        FM_OK) {
        send_load_failure(&err);
        fm_err_clear(&err);
        free(artifact);
        rt->thread_dispose(W.ts);
        return 1;
    }
    json_t *list = exports_json(ex, nex);
    W.names = calloc(nex ? nex : 1, sizeof(char *));
    for (W.nnames = 0; W.nnames < nex; W.nnames++) W.names[W.nnames] = strdup(ex[W.nnames].name);
    fm_exports_free(ex, nex);
    W.self = make_self();
    size_t elen = 0;
    char *etext = fm_json_dump(list, &elen);
    json_decref(list);
    fm_py_send(sock, 'E', etext, elen, NULL, 0);
    free(etext);
    fm_worker_ready(sock);

    while (!W.gone) {
        if (W.any_finished) answer_finished();
        if (W.gone) break;
        if (W.lhead) { /* calls of this unit's functions made by the code that ran */
            local_call *lc = W.lhead;
            W.lhead = lc->next;
            if (!W.lhead) W.ltail = NULL;
            fm_job *child = lc->child;
            uint32_t index = lc->index;
            free(lc);
            child->started_us = fm_mono_us();
            W.rt->call(W.ts, W.inst, index, child);
            continue;
        }
        if (rt->run_batch && batchable()) { /* several calls sent together: one VM entry */
            rt->run_batch(W.ts, W.inst, run_batch, NULL);
            continue;
        }
        queued *q = take_queued('n', 0);
        if (!q) q = take_queued('C', 0); /* the node sends no more than it wants run at once */
        if (q) {
            if (q->type == 'n') answered((const unsigned char *)q->frame, q->len);
            else start_call(q->frame, q->len);
            free(q->frame);
            free(q);
            continue;
        }
        int64_t wait_us = rt->poll(W.ts); /* timers, async deadlines */
        if (W.any_finished) continue;
        /* every frame read is handled: answer, then wait for more */
        if (W.olen) flush_frames();
        int timeout = wait_us < 0 ? -1 : (int)((wait_us + 999) / 1000);
        struct pollfd pfd = {.fd = sock, .events = POLLIN};
        int pr = poll(&pfd, 1, timeout);
        if (pr < 0 && errno != EINTR) break;
        if (pr > 0) read_frames();
    }
    /* the node closed the socket: calls made and not answered fail, so that
     * what waits on them finishes (and frees what it holds); then the rest goes */
    while (W.fwd || W.lhead) {
        fm_job *child;
        if (W.fwd) {
            forwarded *f = W.fwd;
            W.fwd = f->next;
            child = f->child;
            free(f);
        } else {
            local_call *lc = W.lhead;
            W.lhead = lc->next;
            if (!W.lhead) W.ltail = NULL;
            child = lc->child;
            free(lc);
        }
        fm_job_fail(child, FM_UNAVAILABLE, "the worker is stopping", NULL, NULL);
        fm_mesh_forwarded_done(child);
    }
    rt->instance_destroy(W.ts, W.inst);
    rt->thread_dispose(W.ts);
    while (W.qhead) {
        queued *q = W.qhead;
        W.qhead = q->next;
        free(q->frame);
        free(q);
    }
    if (W.self) free(W.self->fns);
    free(W.self);
    for (size_t i = 0; i < W.nnames; i++) free(W.names[i]);
    free(W.names);
    while (W.calls) {
        running *rc = W.calls;
        W.calls = rc->next;
        fm_job_free(rc->job);
        free(rc);
    }
    free(W.rbuf);
    free(W.out);
    free(W.heads);
    free(artifact);
    return 0;
}
