/* server.c - a fnmesh node: h2o I/O threads in front of the executor and
 * the control thread.
 *
 * Request flow for a call: an I/O thread parses and binds the arguments,
 * takes a reference on the active version (lock-free registry snapshot),
 * and appends a job to its per-executor batch. Batches are handed over once
 * per event-loop pass (from h2o's zero timeout), not per request, so a busy
 * node pays one wake-up per batch. The executor sends the finished job back
 * through the I/O thread's h2o multithread queue, where the response is
 * written. A pool guard marks the job orphaned if the client goes away
 * first. A per-thread watchdog answers 504 for calls whose executor is stuck
 * past the deadline (code JSC cannot interrupt), so the client always gets
 * an answer.
 *
 * Control-plane requests (which block on archives, compilers and SQLite)
 * go to the single control thread and come back the same way. */
#include "gateway/server.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "core/util.h"
#include "exec/exec.h"
#include "gateway/control.h"
#include "gateway/http.h"
#include "gateway/logs_http.h"
#include "gateway/route.h"
#include "metrics/fnstat.h"
#include "registry/bind.h"
#include "registry/bundle.h"
#include "metrics/trace.h"
#include "registry/registry.h"
#include "runtime/cgroup.h"
#include "runtime/worker_pool.h"
#include "store/store.h"

#define FM_DEFAULT_BODY_LIMIT (6u * 1024 * 1024)
#define FM_DEFAULT_DEPLOY_LIMIT (64u * 1024 * 1024)
#define FM_WATCHDOG_MS 100
#define FM_RESERVE_THREADS 1 /* executor threads kept for when all others are in long calls */
#define FM_WATCHDOG_GRACE_US 1000000
#define FM_DRAIN_TIMEOUT_MS 60000

typedef struct io_thread io_thread;
typedef struct fm_node fm_node;

typedef struct fm_handler {
    h2o_handler_t super;
    fm_node *node;
} fm_handler;

struct io_thread {
    int index;
    pthread_t tid;
    fm_node *node;
    h2o_evloop_t *loop;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept;
    int listen_fd;
    h2o_socket_t *listener;
    h2o_multithread_queue_t *queue;
    fm_reply_queue replies;                 /* finished jobs, from executors */
    h2o_socket_t *replies_sock;             /* its eventfd in this loop */
    h2o_multithread_receiver_t ctl_replies; /* finished control requests */
    /* deferred hand-off: one chain per executor thread */
    fm_job **batch_head, **batch_tail;
    int *batch_calls;
    h2o_timeout_entry_t flush_entry;
    /* in-flight calls, for the watchdog */
    h2o_linklist_t inflight;
    h2o_timeout_t watchdog_timeout;
    h2o_timeout_entry_t watchdog_entry;
    uint64_t reqid_counter;
    atomic_uint_fast64_t responses[16]; /* by http_slot(); written by this thread only */
    atomic_uint_fast64_t conns_open, conns_total; /* client connections; this thread writes */
    int wait_skip; /* passes left without waiting for answers after a hand-off */
    uint64_t wait_hit, wait_miss;
};

struct fm_node {
    /* configuration */
    char host[256];
    int port;
    char data_dir[1024];
    int threads, io_threads;
    size_t body_limit;
    char token[256];
    /* parts */
    fm_store *store;
    fm_registry *registry;
    fm_exec *exec;
    fm_control control;
    fm_cluster *cluster; /* NULL on a single node */
    atomic_bool resync_queued;
    atomic_bool synced; /* cluster mode: caught up with the registry once */
    h2o_globalconf_t h2o;
    io_thread *io;
    /* control thread */
    pthread_t ctl_tid;
    pthread_mutex_t ctl_mu;
    pthread_cond_t ctl_cv;
    struct ctl_req *ctl_head, *ctl_tail;
    bool ctl_stop;
    /* state */
    atomic_bool ready, draining, stop;
    atomic_int outstanding; /* calls and control requests not yet finished */
    int64_t started_ms;
    char reqid_prefix[9];
};

/* ------------------------------------------------------------ responses */

static const char *reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 508: return "Loop Detected";
    default: return "Unknown";
    }
}

typedef struct reqinfo {
    char id[72];
    /* /fn and /rpc: the trace the request's calls join; span_id is the
     * first call's (the one the response's traceparent names), zero: none */
    fm_trace_ctx trace;
    h2o_iovec_t tracestate; /* incoming, bounded, in the request's pool; base NULL = none */
} reqinfo;
_Static_assert(sizeof(((reqinfo *)0)->id) == sizeof(((fm_job *)0)->request_id),
               "a request id is copied whole into its job");

/* Adds traceparent (and tracestate) naming the call that served the request. */
static void add_trace_headers(h2o_req_t *req, const reqinfo *ri) {
    if (fm_trace_zero(ri->trace.span_id, 8)) return;
    char *tp = h2o_mem_alloc_pool(&req->pool, FM_TRACEPARENT_LEN + 1);
    fm_trace_format(&ri->trace, tp);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("traceparent"), 0, NULL, tp,
                          FM_TRACEPARENT_LEN);
    if (ri->tracestate.base)
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("tracestate"), 0, NULL,
                              ri->tracestate.base, ri->tracestate.len);
}

/* The trace a /fn or /rpc request joins: the one its valid traceparent
 * names (with its tracestate), else a new one (an invalid traceparent is
 * ignored, and then so is tracestate, as W3C Trace Context asks). */
static void read_trace(h2o_req_t *req, reqinfo *ri) {
    memset(&ri->trace, 0, sizeof(ri->trace));
    ri->tracestate = h2o_iovec_init(NULL, 0);
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("traceparent"), -1);
    if (i < 0 || !fm_trace_parse(req->headers.entries[i].value.base,
                                 req->headers.entries[i].value.len, &ri->trace)) {
        fm_trace_random(ri->trace.trace_id, 16);
        ri->trace.flags = 0x01;
        return;
    }
    /* several tracestate headers are one list, joined by commas */
    size_t total = 0;
    for (i = -1; (i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("tracestate"), i)) >= 0;)
        total += req->headers.entries[i].value.len + 1;
    if (total == 0) return;
    char *buf = h2o_mem_alloc_pool(&req->pool, total);
    size_t len = 0;
    for (i = -1; (i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("tracestate"), i)) >= 0;) {
        h2o_iovec_t v = req->headers.entries[i].value;
        if (!v.len) continue;
        if (len) buf[len++] = ',';
        memcpy(buf + len, v.base, v.len);
        len += v.len;
    }
    len = fm_tracestate_bound(buf, len);
    if (len) ri->tracestate = h2o_iovec_init(buf, len);
}

/* Sends a JSON body (copied). `extra_name/value` is an optional extra header. */
/* Status codes counted for /metrics; the last slot is "other". */
static const int counted_codes[15] = {200, 201, 204, 400, 401, 404, 405, 409,
                                      413, 429, 500, 503, 504, 508, 0};

static int http_slot(int status) {
    for (int i = 0; i < 14; i++)
        if (counted_codes[i] == status) return i;
    return 15;
}

static void count_response(h2o_req_t *req, int status) {
    io_thread *io = H2O_STRUCT_FROM_MEMBER(io_thread, ctx, req->conn->ctx);
    atomic_fetch_add_explicit(&io->responses[http_slot(status)], 1, memory_order_relaxed);
}

static void send_json(h2o_req_t *req, const reqinfo *ri, int status, const char *body, size_t len,
                      const char *extra_name, const char *extra_value) {
    count_response(req, status);
    req->res.status = status;
    req->res.reason = reason(status);
    if (status != 204)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                       H2O_STRLIT("application/json"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL,
                          ri->id, strlen(ri->id));
    add_trace_headers(req, ri);
    if (extra_name)
        h2o_add_header_by_str(&req->pool, &req->res.headers, extra_name, strlen(extra_name), 0,
                              NULL, extra_value, strlen(extra_value));
    req->res.content_length = status == 204 ? 0 : len;
    h2o_send_inline(req, status == 204 ? "" : body, status == 204 ? 0 : len);
}

static void send_doc(h2o_req_t *req, const reqinfo *ri, int status, json_t *doc) {
    size_t len;
    char *s = fm_json_dump(doc, &len);
    send_json(req, ri, status, s, len, NULL, NULL);
    free(s);
}

static void send_err(h2o_req_t *req, const reqinfo *ri, fm_err *err) {
    json_t *doc = fm_err_to_json(err, ri->id);
    size_t len;
    char *s = fm_json_dump(doc, &len);
    const char *hn = NULL, *hv = NULL;
    if (err->status == FM_METHOD_NOT_ALLOWED) {
        hn = "allow";
        hv = json_string_value(json_object_get(err->details, "allow"));
    } else if (err->status == FM_DRAINING || err->status == FM_OVERLOADED ||
               err->status == FM_UNAVAILABLE) {
        hn = "retry-after";
        hv = "1";
    }
    send_json(req, ri, fm_status_http(err->status), s, len, hn, hv);
    free(s);
    json_decref(doc);
    fm_err_clear(err);
}

static void send_status(h2o_req_t *req, const reqinfo *ri, fm_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void send_status(h2o_req_t *req, const reqinfo *ri, fm_status st, const char *fmt, ...) {
    fm_err err = FM_ERR_INIT;
    va_list ap;
    va_start(ap, fmt);
    fm_err_vset(&err, st, fmt, ap);
    va_end(ap);
    send_err(req, ri, &err);
}

static void method_not_allowed(h2o_req_t *req, const reqinfo *ri, const char *allow) {
    fm_err err = FM_ERR_INIT;
    fm_err_set(&err, FM_METHOD_NOT_ALLOWED, "method %.*s not allowed here (allowed: %s)",
               (int)req->method.len, req->method.base, allow);
    fm_err_detail(&err, "allow", json_string(allow));
    send_err(req, ri, &err);
}

static bool method_is(h2o_req_t *req, const char *m) {
    return h2o_memis(req->method.base, req->method.len, m, strlen(m));
}

static void make_reqid(io_thread *io, h2o_req_t *req, reqinfo *ri) {
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-request-id"), -1);
    if (i >= 0) {
        h2o_iovec_t v = req->headers.entries[i].value;
        bool ok = v.len > 0 && v.len <= 64;
        for (size_t k = 0; ok && k < v.len; k++) {
            char c = v.base[k];
            ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_' || c == '.' || c == ':';
        }
        if (ok) {
            memcpy(ri->id, v.base, v.len);
            ri->id[v.len] = '\0';
            return;
        }
    }
    /* "<node prefix>-<io thread>-<counter>" without printf on the hot path */
    char *o = ri->id;
    memcpy(o, io->node->reqid_prefix, 8);
    o += 8;
    *o++ = '-';
    *o++ = "0123456789abcdefghijklmnopqrstuv"[io->index & 31];
    *o++ = '-';
    uint64_t n = ++io->reqid_counter;
    char tmp[20];
    int k = 0;
    do {
        tmp[k++] = "0123456789abcdef"[n & 15];
        n >>= 4;
    } while (n);
    while (k) *o++ = tmp[--k];
    *o = '\0';
}

/* ------------------------------------------------------------ calls */

typedef struct rpc_batch rpc_batch;

/* One call in flight, owned by the I/O thread. */
typedef struct pend {
    io_thread *io;
    h2o_req_t *req; /* plain call: NULL once the client left */
    void **guard;   /* slot in req's pool pointing back here, NULL once cleared */
    rpc_batch *batch;
    size_t slot;
    json_t *rpc_id; /* owned */
    fm_job *job;
    h2o_linklist_t link; /* io->inflight */
    int64_t hard_deadline_us;
    bool answered;
    bool html; /* answer a string result as the raw text/html body */
    bool raw;  /* answer a bytes result as the raw application/octet-stream body */
    reqinfo ri;
} pend;

struct rpc_batch {
    h2o_req_t *req; /* NULL once the client left */
    void **guard;   /* slot in req's pool pointing back here */
    reqinfo ri;
    bool is_batch;
    size_t n, remaining;
    size_t item_bytes; /* request bytes metered per call: the body shared by its calls */
    bool has_bytes;    /* the body mentions "$bytes": check bytes values in params */
    char **slots; /* response objects (JSON text), NULL for notifications */
};

static void rpc_maybe_finish(rpc_batch *b);

/* Pool guards: h2o disposes the request's pool when the client leaves (or
 * after the response went out); the guard tells the owner. An owner that
 * answers or goes away first clears the guard, so it never dangles. */
static void on_req_gone(void *p) {
    pend **slot = p;
    if (*slot) (*slot)->req = NULL, (*slot)->guard = NULL;
}

static void on_batch_gone(void *p) {
    rpc_batch **slot = p;
    if (*slot) (*slot)->req = NULL, (*slot)->guard = NULL;
}

static void clear_guard(void ***guard) {
    if (*guard) **guard = NULL;
    *guard = NULL;
}

static size_t process_replies(io_thread *io);
static size_t answer_jobs(io_thread *io, fm_job *list);

/* Hands this pass's batches to the executors, then waits a little for the
 * answers (yielding the CPU, which on a shared core lets the executor run
 * at once). Fast functions are then answered within the same event-loop
 * pass as their request arrived, so h2o keeps the connection's read
 * interest unchanged and makes no epoll_ctl calls for it: two system calls
 * saved per request. When the wait does not pay off (slow functions), it is
 * skipped for a while. */
#define FM_HANDOFF_WAIT_US 50
#define FM_HANDOFF_BLOCK_US 400 /* the whole wait, spinning and sleeping */

static void flush_batches(h2o_timeout_entry_t *entry) {
    io_thread *io = H2O_STRUCT_FROM_MEMBER(io_thread, flush_entry, entry);
    size_t submitted = 0;
    for (int t = 0; t < fm_exec_threads(io->node->exec); t++) {
        if (!io->batch_head[t]) continue;
        submitted += (size_t)io->batch_calls[t];
        fm_exec_submit(io->node->exec, t, io->batch_head[t], io->batch_tail[t],
                       io->batch_calls[t]);
        io->batch_head[t] = io->batch_tail[t] = NULL;
        io->batch_calls[t] = 0;
    }
    if (!submitted) return;
    if (io->wait_skip > 0) {
        io->wait_skip--;
        return;
    }
    int64_t start = fm_mono_us(), until = start + FM_HANDOFF_WAIT_US;
    size_t got = 0;
    fm_reply_queue_poll_begin(&io->replies); /* executors need not write the eventfd */
    do {
        sched_yield();
        got += process_replies(io);
    } while (got < submitted && fm_mono_us() < until);
    got += answer_jobs(io, fm_reply_queue_poll_end(&io->replies));
    /* Still waiting (calls that go through a worker process take longer):
     * sleep on the queue's eventfd, which the executors write from now on,
     * for a while longer. The thread uses no CPU meanwhile. */
    until = start + FM_HANDOFF_BLOCK_US;
    for (int64_t now = fm_mono_us(); got < submitted && now < until; now = fm_mono_us()) {
        struct pollfd pfd = {.fd = io->replies.efd, .events = POLLIN};
        struct timespec left = {0, (long)(until - now) * 1000};
        if (ppoll(&pfd, 1, &left, NULL) <= 0) break;
        uint64_t v;
        ssize_t r = read(io->replies.efd, &v, sizeof(v));
        (void)r;
        got += process_replies(io);
    }
    if (got < submitted) io->wait_skip = 64, io->wait_miss++;
    else io->wait_hit++;
}

/* Queues a call (takes the version reference and argv, either way). NULL
 * with err filled (FM_OVERLOADED) when the function's queue is full. */
static pend *submit_call(io_thread *io, fm_version *v, const fm_function *fn, json_t **argv,
                         size_t argc, const reqinfo *ri, fm_err *err) {
    fm_node *node = io->node;
    fm_job *job = fm_job_new(FM_JOB_CALL, v, fn);
    job->argv = argv;
    job->argc = argc;
    if (fm_exec_admit(job, err) != FM_OK) {
        fm_job_free(job); /* releases v and argv */
        return NULL;
    }
    int64_t now = fm_mono_us();
    job->deadline_us = now + fn->timeout_ms * 1000;
    memcpy(job->request_id, ri->id, sizeof(job->request_id)); /* both hold at most 71 + NUL */
    job->trace = ri->trace;
    fm_trace_random(job->trace.span_id, 8);
    if (ri->tracestate.base) job->tracestate = strndup(ri->tracestate.base, ri->tracestate.len);
    job->reply_to = &io->replies;
    pend *p = calloc(1, sizeof(*p));
    p->io = io;
    p->job = job;
    p->ri = *ri;
    memcpy(p->ri.trace.span_id, job->trace.span_id, 8);
    p->hard_deadline_us = job->deadline_us + FM_WATCHDOG_GRACE_US;
    job->ud = p;
    h2o_linklist_insert(&io->inflight, &p->link);
    atomic_fetch_add_explicit(&node->outstanding, 1, memory_order_relaxed);
    int t = fm_exec_pick(node->exec, fn);
    if (io->batch_tail[t]) io->batch_tail[t]->next = job;
    else io->batch_head[t] = job;
    io->batch_tail[t] = job;
    io->batch_calls[t]++;
    if (!h2o_timeout_is_linked(&io->flush_entry))
        h2o_timeout_link(io->loop, &io->ctx.zero_timeout, &io->flush_entry);
    return p;
}

/* Error document of a failed job. */
static void job_err(const fm_job *job, fm_err *err) {
    const char *m = json_string_value(json_object_get(job->error, "message"));
    fm_err_set(err, job->status, "%s", m ? m : "error");
    const char *k;
    json_t *v;
    json_object_foreach(job->error, k, v) {
        if (strcmp(k, "message") != 0) fm_err_detail(err, k, json_incref(v));
    }
}

static char *rpc_error_text(json_t *id, int code, const char *msg, json_t *data) {
    json_t *e = json_pack("{s:i, s:o}", "code", code, "message", fm_json_str(msg));
    if (data) json_object_set(e, "data", data);
    json_t *doc = json_pack("{s:s, s:o, s:O}", "jsonrpc", "2.0", "error", e, "id",
                            id ? id : json_null());
    char *s = fm_json_dump(doc, NULL);
    json_decref(doc);
    return s;
}

static char *rpc_result_text(json_t *id, const char *result, size_t len) {
    char *ids = fm_json_dump(id ? id : json_null(), NULL);
    size_t n = len + strlen(ids) + 48;
    char *s = malloc(n);
    snprintf(s, n, "{\"jsonrpc\":\"2.0\",\"result\":%.*s,\"id\":%s}", (int)len, result, ids);
    free(ids);
    return s;
}

static char *rpc_from_job(pend *p, const fm_job *job) {
    if (job->status == FM_OK) return rpc_result_text(p->rpc_id, job->result, job->result_len);
    const char *m = json_string_value(json_object_get(job->error, "message"));
    json_t *data = json_deep_copy(job->error);
    json_object_del(data, "message");
    json_object_set_new(data, "code", json_string(fm_status_code(job->status)));
    int code = job->status == FM_FUNCTION_ERROR || job->status == FM_UNAVAILABLE ? -32000
               : job->status == FM_TIMEOUT      ? -32001
               : job->status == FM_OVERLOADED   ? -32002
                                                : -32603;
    char *s = rpc_error_text(p->rpc_id, code, m ? m : "error", data);
    json_decref(data);
    return s;
}

static void rpc_send(rpc_batch *b) {
    h2o_req_t *req = b->req;
    size_t total = 2, count = 0;
    for (size_t i = 0; i < b->n; i++)
        if (b->slots[i]) total += strlen(b->slots[i]) + 1, count++;
    if (count == 0) {
        send_json(req, &b->ri, 204, "", 0, NULL, NULL);
        return;
    }
    char *out = malloc(total + 1);
    size_t o = 0;
    if (b->is_batch) out[o++] = '[';
    bool first = true;
    for (size_t i = 0; i < b->n; i++) {
        if (!b->slots[i]) continue;
        if (!first) out[o++] = ',';
        first = false;
        size_t l = strlen(b->slots[i]);
        memcpy(out + o, b->slots[i], l);
        o += l;
    }
    if (b->is_batch) out[o++] = ']';
    send_json(req, &b->ri, 200, out, o, NULL, NULL);
    free(out);
}

static void rpc_batch_free(rpc_batch *b) {
    for (size_t i = 0; i < b->n; i++) free(b->slots[i]);
    free(b->slots);
    free(b);
}

/* Sends the batch's response once every call is in; frees it once the
 * response went out or the client left. */
static void rpc_maybe_finish(rpc_batch *b) {
    if (b->remaining > 0) return;
    clear_guard(&b->guard);
    if (b->req) rpc_send(b);
    rpc_batch_free(b);
}

/* A 200 with a body that is not JSON (a rendered page, raw bytes), with the
 * headers every answer of a function has. h2o copies the body. */
static void send_raw(h2o_req_t *req, const reqinfo *ri, const char *type, const char *body,
                     size_t len) {
    count_response(req, 200);
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, type,
                   strlen(type));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL,
                          ri->id, strlen(ri->id));
    add_trace_headers(req, ri);
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
}

/* A bytes result ({"$bytes": ...}) as the raw body; false when it is not one. */
static bool send_raw_bytes(pend *p, fm_job *job) {
    if (job->result_len < 12 || memcmp(job->result, "{\"$bytes\":", 10) != 0) return false;
    json_t *v = json_loadb(job->result, job->result_len, 0, NULL);
    size_t n = 0;
    unsigned char *bytes = fm_json_bytes_decode(v, &n);
    json_decref(v);
    if (!bytes) return false;
    send_raw(p->req, &p->ri, "application/octet-stream", (const char *)bytes, n);
    free(bytes);
    return true;
}

static void pend_answer(pend *p, fm_job *job) {
    if (p->answered) return;
    p->answered = true;
    if (p->batch) {
        p->batch->slots[p->slot] = rpc_from_job(p, job);
        p->batch->remaining--;
        rpc_maybe_finish(p->batch);
        p->batch = NULL;
        return;
    }
    if (!p->req) return;
    clear_guard(&p->guard);
    if (job->status == FM_OK && p->html) {
        json_t *str = json_loadb(job->result, job->result_len, JSON_DECODE_ANY, NULL);
        if (json_is_string(str)) {
            send_raw(p->req, &p->ri, "text/html; charset=utf-8", json_string_value(str),
                     json_string_length(str));
            json_decref(str);
            return;
        }
        json_decref(str);
    }
    if (job->status == FM_OK && p->raw && send_raw_bytes(p, job)) return;
    if (job->status == FM_OK) {
        send_json(p->req, &p->ri, 200, job->result, job->result_len, NULL, NULL);
    } else {
        fm_err err = FM_ERR_INIT;
        job_err(job, &err);
        send_err(p->req, &p->ri, &err);
    }
}

static void pend_free(pend *p) {
    clear_guard(&p->guard);
    json_decref(p->rpc_id);
    free(p);
}

static size_t answer_jobs(io_thread *io, fm_job *list) {
    size_t n = 0;
    fm_job *next;
    for (fm_job *job = list; job; job = next) {
        next = job->next;
        pend *p = job->ud;
        if (h2o_linklist_is_linked(&p->link)) h2o_linklist_unlink(&p->link);
        pend_answer(p, job);
        pend_free(p);
        fm_job_free(job);
        atomic_fetch_sub_explicit(&io->node->outstanding, 1, memory_order_relaxed);
        n++;
    }
    return n;
}

/* Answers every finished job in the reply queue; returns how many. */
static size_t process_replies(io_thread *io) {
    return answer_jobs(io, fm_reply_queue_take(&io->replies));
}

static void on_replies(h2o_socket_t *sock, const char *errstr) {
    io_thread *io = sock->data;
    h2o_buffer_consume(&sock->input, sock->input->size);
    process_replies(io);
}

/* Answers calls whose executor did not finish them by the deadline. */
static void on_watchdog(h2o_timeout_entry_t *entry) {
    io_thread *io = H2O_STRUCT_FROM_MEMBER(io_thread, watchdog_entry, entry);
    int64_t now = fm_mono_us();
    h2o_linklist_t *node = io->inflight.next;
    while (node != &io->inflight) {
        pend *p = H2O_STRUCT_FROM_MEMBER(pend, link, node);
        node = node->next;
        if (now < p->hard_deadline_us || p->answered) continue;
        h2o_linklist_unlink(&p->link);
        fm_job tmp = {.status = FM_TIMEOUT};
        tmp.error = json_pack("{s:s}", "message",
                              "deadline exceeded: the function did not yield (it cannot be "
                              "interrupted in-process)");
        pend_answer(p, &tmp);
        json_decref(tmp.error);
        json_t *kv = json_pack("{s:s}", "request_id", p->ri.id);
        fm_log(FM_LOG_WARN, kv, "call answered by the watchdog: executor did not finish it");
        json_decref(kv);
    }
    h2o_timeout_link(io->loop, &io->watchdog_timeout, &io->watchdog_entry);
}

/* ------------------------------------------------------------ data plane */

/* True when the request's Content-Type (parameters aside) is `type`. */
static bool has_content_type(h2o_req_t *req, const char *type) {
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (i < 0) return false;
    h2o_iovec_t v = req->headers.entries[i].value;
    size_t n = strlen(type);
    return v.len >= n && strncasecmp(v.base, type, n) == 0 &&
           (v.len == n || v.base[n] == ';' || v.base[n] == ' ');
}

/* True when the Accept header names `type` (no wildcard matching). */
static bool accepts(h2o_req_t *req, const char *type) {
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_ACCEPT, -1);
    if (i < 0) return false;
    h2o_iovec_t a = req->headers.entries[i].value;
    return h2o_strstr(a.base, a.len, type, strlen(type)) != SIZE_MAX;
}

/* How a call wants its answer: raw bytes, or a template's HTML as is. */
static void answer_form(pend *p, h2o_req_t *req, const fm_function *fn) {
    p->raw = accepts(req, "application/octet-stream");
    if (fn && strcmp(fn->rt->name, "template") == 0) {
        /* templates render HTML: give it raw to browsers that ask for it */
        ssize_t ai = h2o_find_header(&req->headers, H2O_TOKEN_ACCEPT, -1);
        if (ai >= 0) {
            h2o_iovec_t a = req->headers.entries[ai].value;
            p->html = h2o_strstr(a.base, a.len, H2O_STRLIT("text/html")) != SIZE_MAX;
        }
    }
}

/* Cluster mode: where a call runs, from its X-Fnmesh-Route header: "local"
 * (here only), "remote" (another node), else "auto": here when a thread is
 * free, else any node that serves it (NATS queue group). */
enum { ROUTE_AUTO, ROUTE_LOCAL, ROUTE_REMOTE };

static int call_route(h2o_req_t *req) {
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-fnmesh-route"), -1);
    if (i < 0) return ROUTE_AUTO;
    h2o_iovec_t v = req->headers.entries[i].value;
    if (h2o_memis(v.base, v.len, H2O_STRLIT("local"))) return ROUTE_LOCAL;
    if (h2o_memis(v.base, v.len, H2O_STRLIT("remote"))) return ROUTE_REMOTE;
    return ROUTE_AUTO;
}

/* Sends a call to another node over NATS (to `target`, or to any node that
 * serves the deployment); the answer comes back through the reply queue
 * like a local call's. `fn` (may be NULL: not deployed here yet) gives the
 * deadline and the answer form. */
static void forward_call(io_thread *io, h2o_req_t *req, const reqinfo *ri, const char *dep,
                         size_t dlen, const char *fname, size_t flen, const fm_function *fn,
                         const char *target) {
    fm_node *node = io->node;
    char dname[72], fnm[128];
    snprintf(dname, sizeof(dname), "%.*s", (int)(dlen < 71 ? dlen : 71), dep);
    snprintf(fnm, sizeof(fnm), "%.*s", (int)(flen < 127 ? flen : 127), fname);
    bool plain = flen <= 127;
    for (size_t i = 0; plain && i < flen; i++) /* it travels in a NATS header */
        plain = (unsigned char)fname[i] >= 0x20 && fname[i] != 0x7f;
    if (!fm_name_valid(dname) || !plain) {
        send_status(req, ri, FM_NOT_FOUND, "deployment \"%s\" not found", dname);
        return;
    }
    reqinfo tri = *ri;
    read_trace(req, &tri);
    int64_t timeout_ms = fn ? fn->timeout_ms : FM_DEFAULT_TIMEOUT_MS;
    fm_job *job = fm_job_new(FM_JOB_CALL, NULL, NULL);
    job->deadline_us = fm_mono_us() + timeout_ms * 1000;
    memcpy(job->request_id, ri->id, sizeof(job->request_id)); /* both hold at most 71 + NUL */
    job->trace = tri.trace;
    fm_trace_random(job->trace.span_id, 8);
    if (tri.tracestate.base) job->tracestate = strndup(tri.tracestate.base, tri.tracestate.len);
    job->reply_to = &io->replies;
    pend *p = calloc(1, sizeof(*p));
    p->io = io;
    p->job = job;
    p->ri = tri;
    memcpy(p->ri.trace.span_id, job->trace.span_id, 8);
    p->hard_deadline_us = job->deadline_us + FM_WATCHDOG_GRACE_US;
    job->ud = p;
    bool q = req->query_at != SIZE_MAX;
    bool get = method_is(req, "GET") || method_is(req, "HEAD");
    fm_cluster_call call = {
        .deployment = dname,
        .function = fnm,
        .body = get ? NULL : req->entity.base,
        .len = get ? 0 : req->entity.len,
        .octet = has_content_type(req, "application/octet-stream"),
        .query = q ? req->path.base + req->query_at + 1 : NULL,
        .qlen = q ? req->path.len - req->query_at - 1 : 0,
        .node = target,
        .deadline_ms = timeout_ms,
    };
    fm_err err = FM_ERR_INIT;
    if (fm_cluster_forward(node->cluster, job, &call, &err) != FM_OK) {
        send_err(req, ri, &err);
        free(p);
        fm_job_free(job);
        return;
    }
    h2o_linklist_insert(&io->inflight, &p->link);
    atomic_fetch_add_explicit(&node->outstanding, 1, memory_order_relaxed);
    p->req = req;
    answer_form(p, req, fn);
    pend **guard = h2o_mem_alloc_shared(&req->pool, sizeof(pend *), on_req_gone);
    *guard = p;
    p->guard = (void **)guard;
}

/* Cluster mode: whether (and where) a call goes to another node. */
static bool should_forward(fm_node *node, h2o_req_t *req, const fm_version *v,
                           const fm_function *fn, char *target, size_t cap, bool *no_peer) {
    int route = call_route(req);
    if (route == ROUTE_LOCAL) return false;
    if (route == ROUTE_REMOTE) {
        *no_peer = !fm_cluster_pick_peer(node->cluster, target, cap);
        return true;
    }
    if (!fm_cluster_ready(node->cluster)) return false; /* cut off: serve what is here */
    if (!v) return true; /* not (yet) deployed here: whoever serves it */
    if (!fm_cluster_fits(node->cluster, req->entity.len)) return false; /* too big to send */
    if (!fn || fm_cluster_peers(node->cluster) == 0) return false;
    /* prefer a free thread here; all busy: let NATS pick a node */
    return fm_exec_inflight(node->exec, fm_exec_pick(node->exec, fn)) > 0;
}

static void handle_fn(io_thread *io, h2o_req_t *req, const reqinfo *ri, const fm_route *rt) {
    fm_node *node = io->node;
    const char *dep = rt->a, *fname = rt->b;
    size_t dlen = rt->alen, flen = rt->blen;
    bool get = method_is(req, "GET") || method_is(req, "HEAD");
    if (atomic_load(&node->draining)) {
        send_status(req, ri, FM_DRAINING, "the node is shutting down");
        return;
    }
    fm_version *v = fm_registry_acquire(node->registry, dep, dlen);
    if (node->cluster) {
        const fm_function *f = v ? fm_version_find(v, fname, flen) : NULL;
        char target[64];
        bool no_peer = false;
        if ((!v || f) && should_forward(node, req, v, f, target, sizeof(target), &no_peer)) {
            if (req->entity.len > node->body_limit) {
                send_status(req, ri, FM_TOO_LARGE,
                            "request body of %zu bytes exceeds the limit of %zu", req->entity.len,
                            node->body_limit);
            } else if (no_peer) {
                send_status(req, ri, FM_UNAVAILABLE, "no other node in the cluster");
            } else {
                forward_call(io, req, ri, dep, dlen, fname, flen, f,
                             call_route(req) == ROUTE_REMOTE ? target : NULL);
            }
            fm_version_release(v);
            return;
        }
    }
    if (!v) {
        send_status(req, ri, FM_NOT_FOUND, "deployment \"%.*s\" not found", (int)(dlen > 100 ? 100 : dlen), dep);
        return;
    }
    const fm_function *fn = fm_version_find(v, fname, flen);
    if (!fn) {
        send_status(req, ri, FM_NOT_FOUND, "function \"%.*s\" not found in deployment \"%s\"",
                    (int)(flen > 100 ? 100 : flen), fname, v->deployment);
        fm_version_release(v);
        return;
    }
    if (req->entity.len > node->body_limit) {
        send_status(req, ri, FM_TOO_LARGE, "request body of %zu bytes exceeds the limit of %zu",
                    req->entity.len, node->body_limit);
        fm_version_release(v);
        return;
    }
    json_t **argv = NULL;
    size_t argc = 0;
    fm_err err = FM_ERR_INIT;
    bool q = req->query_at != SIZE_MAX;
    fm_status st = fm_bind_http(
        fn, get, has_content_type(req, "application/octet-stream"), req->entity.base,
        req->entity.len, q ? req->path.base + req->query_at + 1 : NULL,
        q ? req->path.len - req->query_at - 1 : 0, &argv, &argc, &err);
    if (st != FM_OK) {
        send_err(req, ri, &err);
        fm_version_release(v);
        return;
    }
    reqinfo tri = *ri;
    read_trace(req, &tri);
    pend *p = submit_call(io, v, fn, argv, argc, &tri, &err);
    if (!p) {
        send_err(req, ri, &err); /* 429 with Retry-After */
        return;
    }
    p->req = req;
    p->job->req_bytes = req->entity.len ? req->entity.len
                        : req->query_at != SIZE_MAX ? req->path.len - req->query_at - 1
                                                    : 0;
    answer_form(p, req, fn);
    pend **guard = h2o_mem_alloc_shared(&req->pool, sizeof(pend *), on_req_gone);
    *guard = p;
    p->guard = (void **)guard;
}

/* ------------------------------------------------------------ JSON-RPC */

static char *rpc_item(io_thread *io, rpc_batch *b, size_t slot, json_t *item, bool *pending) {
    *pending = false;
    if (!json_is_object(item))
        return rpc_error_text(NULL, -32600, "Invalid Request: expected an object", NULL);
    json_t *id = json_object_get(item, "id");
    bool notify = id == NULL;
    if (id && !json_is_string(id) && !json_is_number(id) && !json_is_null(id))
        return rpc_error_text(NULL, -32600, "Invalid Request: id must be a string, number or null",
                              NULL);
    const char *ver = json_string_value(json_object_get(item, "jsonrpc"));
    const char *method = json_string_value(json_object_get(item, "method"));
    if (!ver || strcmp(ver, "2.0") != 0)
        return rpc_error_text(id, -32600, "Invalid Request: jsonrpc must be \"2.0\"", NULL);
    if (!method)
        return rpc_error_text(id, -32600, "Invalid Request: method must be a string", NULL);
    json_t *params = json_object_get(item, "params");
    if (params && !json_is_array(params) && !json_is_object(params))
        return notify ? NULL
                      : rpc_error_text(id, -32602, "Invalid params: must be an array or object",
                                       NULL);
    fm_err berr = FM_ERR_INIT;
    if (params && b->has_bytes && fm_json_check_bytes(params, &berr) != FM_OK) {
        char *s = notify ? NULL : rpc_error_text(id, -32602, berr.msg, NULL);
        fm_err_clear(&berr);
        return s;
    }
    const char *dot = strchr(method, '.');
    fm_version *v = dot ? fm_registry_acquire(io->node->registry, method, (size_t)(dot - method))
                        : NULL;
    const fm_function *fn = v ? fm_version_find(v, dot + 1, strlen(dot + 1)) : NULL;
    if (!fn) {
        fm_version_release(v);
        if (notify) return NULL;
        char msg[256];
        snprintf(msg, sizeof(msg), "Method not found: %.200s (use \"<deployment>.<function>\")",
                 method);
        return rpc_error_text(id, -32601, msg, NULL);
    }
    json_t **argv = NULL;
    size_t argc = 0;
    fm_err err = FM_ERR_INIT;
    if (json_is_array(params)) {
        argc = json_array_size(params);
        argv = calloc(argc ? argc : 1, sizeof(json_t *));
        for (size_t i = 0; i < argc; i++) argv[i] = json_incref(json_array_get(params, i));
    } else if (params && fm_bind_named(fn, params, &argv, &argc, &err) != FM_OK) {
        fm_version_release(v);
        char *s = notify ? NULL : rpc_error_text(id, -32602, err.msg, NULL);
        fm_err_clear(&err);
        return s;
    }
    if (atomic_load(&io->node->draining)) {
        fm_version_release(v);
        for (size_t i = 0; i < argc; i++) json_decref(argv[i]);
        free(argv);
        return notify ? NULL : rpc_error_text(id, -32603, "the node is shutting down", NULL);
    }
    pend *p = submit_call(io, v, fn, argv, argc, &b->ri, &err);
    if (!p) {
        char *s = notify ? NULL : rpc_error_text(id, -32002, err.msg, NULL);
        fm_err_clear(&err);
        return s;
    }
    p->job->req_bytes = b->item_bytes;
    if (fm_trace_zero(b->ri.trace.span_id, 8)) /* the response names the first call */
        memcpy(b->ri.trace.span_id, p->job->trace.span_id, 8);
    if (!notify) {
        p->batch = b;
        p->slot = slot;
        p->rpc_id = json_incref(id);
        *pending = true;
    } else {
        p->answered = true; /* nobody waits for a notification */
    }
    return NULL;
}

static void handle_rpc(io_thread *io, h2o_req_t *req, const reqinfo *ri) {
    if (req->entity.len > io->node->body_limit) {
        send_status(req, ri, FM_TOO_LARGE, "request body of %zu bytes exceeds the limit of %zu",
                    req->entity.len, io->node->body_limit);
        return;
    }
    fm_err err = FM_ERR_INIT;
    json_t *doc = fm_json_parse(req->entity.base ? req->entity.base : "", req->entity.len, &err);
    if (!doc) {
        char *s = rpc_error_text(NULL, -32700, err.msg, NULL);
        send_json(req, ri, 200, s, strlen(s), NULL, NULL);
        free(s);
        fm_err_clear(&err);
        return;
    }
    rpc_batch *b = calloc(1, sizeof(*b));
    b->ri = *ri;
    read_trace(req, &b->ri);
    b->is_batch = json_is_array(doc);
    if (b->is_batch && json_array_size(doc) == 0) {
        b->is_batch = false;
        json_decref(doc);
        doc = json_string("");
    }
    b->n = b->is_batch ? json_array_size(doc) : 1;
    b->item_bytes = req->entity.len / b->n; /* metering: a batch's bytes shared by its calls */
    b->has_bytes = req->entity.base && fm_may_hold_bytes(req->entity.base, req->entity.len);
    b->slots = calloc(b->n, sizeof(char *));
    for (size_t i = 0; i < b->n; i++) {
        bool pending;
        json_t *item = b->is_batch ? json_array_get(doc, i) : doc;
        b->slots[i] = rpc_item(io, b, i, item, &pending);
        if (pending) b->remaining++;
    }
    json_decref(doc);
    if (b->remaining == 0) {
        b->req = req;
        rpc_maybe_finish(b);
        return;
    }
    b->req = req;
    rpc_batch **guard = h2o_mem_alloc_shared(&req->pool, sizeof(rpc_batch *), on_batch_gone);
    *guard = b;
    b->guard = (void **)guard;
}

/* ------------------------------------------------------------ control plane */

typedef enum {
    CTL_DEPLOY,
    CTL_LIST,
    CTL_SHOW,
    CTL_DELETE,
    CTL_VERSIONS,
    CTL_ROLLBACK,
    CTL_USAGE,
    CTL_CONVERGE, /* from the cluster: no request, no reply */
    CTL_RESYNC,
} ctl_op;

typedef struct ctl_req {
    h2o_multithread_message_t msg;
    struct ctl_req *next;
    ctl_op op;
    char name[128];
    char *body;
    size_t len;
    io_thread *io;
    h2o_req_t *req;
    void **guard;
    reqinfo ri;
    /* result */
    int http;
    json_t *doc;
    fm_err err;
} ctl_req;

static void on_ctl_gone(void *p) {
    ctl_req **slot = p;
    if (*slot) (*slot)->req = NULL, (*slot)->guard = NULL;
}

static void ctl_run(fm_node *node, ctl_req *c) {
    fm_control *ctl = &node->control;
    fm_status st = FM_OK;
    c->http = 200;
    switch (c->op) {
    case CTL_DEPLOY:
        st = fm_control_deploy(ctl, c->name, c->body, c->len, &c->doc, &c->http, &c->err);
        break;
    case CTL_LIST: st = fm_control_list(ctl, &c->doc, &c->err); break;
    case CTL_SHOW: st = fm_control_show(ctl, c->name, &c->doc, &c->err); break;
    case CTL_DELETE: st = fm_control_delete(ctl, c->name, &c->doc, &c->err); break;
    case CTL_VERSIONS: st = fm_control_versions(ctl, c->name, &c->doc, &c->err); break;
    case CTL_ROLLBACK:
        st = fm_control_rollback(ctl, c->name, c->body, c->len, &c->doc, &c->err);
        break;
    case CTL_USAGE: st = fm_control_usage(ctl, c->body, c->len, &c->doc, &c->err); break;
    case CTL_CONVERGE: fm_control_converge(ctl, c->name); break;
    case CTL_RESYNC:
        atomic_store(&node->resync_queued, false);
        if (fm_control_resync(ctl)) atomic_store(&node->synced, true);
        break;
    }
    /* cluster mode: take calls from other nodes for exactly what is deployed here */
    if (node->cluster && c->op != CTL_LIST && c->op != CTL_SHOW && c->op != CTL_VERSIONS &&
        c->op != CTL_USAGE)
        fm_cluster_serve(node->cluster, node->registry);
    if (st != FM_OK && c->err.status == FM_OK) fm_err_set(&c->err, st, "failed");
}

/* Metering: usage goes to the store this often (and at every usage query and
 * at shutdown), so a kill -9 loses at most this much of it. */
#define FM_USAGE_FLUSH_MS 5000

/* Housekeeping of the control thread, due at most once a second whatever
 * the traffic: snapshot garbage collection, and the usage flush. */
static void ctl_housekeeping(fm_node *node, int64_t *last_gc, int64_t *last_flush) {
    int64_t now = fm_mono_ms();
    if (now - *last_gc >= 1000) {
        fm_registry_gc(node->registry, false);
        *last_gc = now;
    }
    if (now - *last_flush >= FM_USAGE_FLUSH_MS) {
        fm_control_flush_usage(&node->control);
        *last_flush = fm_mono_ms();
    }
}

static void *ctl_main(void *arg) {
    fm_node *node = arg;
    int64_t last_flush = fm_mono_ms(), last_gc = last_flush;
    pthread_mutex_lock(&node->ctl_mu);
    for (;;) {
        while (!node->ctl_head && !node->ctl_stop) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            if (pthread_cond_timedwait(&node->ctl_cv, &node->ctl_mu, &ts) == ETIMEDOUT) {
                pthread_mutex_unlock(&node->ctl_mu);
                ctl_housekeeping(node, &last_gc, &last_flush);
                pthread_mutex_lock(&node->ctl_mu);
            }
        }
        if (!node->ctl_head && node->ctl_stop) break;
        ctl_req *c = node->ctl_head;
        node->ctl_head = c->next;
        if (!node->ctl_head) node->ctl_tail = NULL;
        pthread_mutex_unlock(&node->ctl_mu);
        ctl_run(node, c);
        if (c->io) {
            h2o_multithread_send_message(&c->io->ctl_replies, &c->msg);
        } else { /* from the cluster: nobody waits */
            json_decref(c->doc);
            fm_err_clear(&c->err);
            free(c);
        }
        ctl_housekeeping(node, &last_gc, &last_flush); /* steady requests must not starve it */
        pthread_mutex_lock(&node->ctl_mu);
    }
    pthread_mutex_unlock(&node->ctl_mu);
    return NULL;
}

static void on_ctl_replies(h2o_multithread_receiver_t *r, h2o_linklist_t *messages) {
    io_thread *io = H2O_STRUCT_FROM_MEMBER(io_thread, ctl_replies, r);
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *m =
            H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&m->link);
        ctl_req *c = H2O_STRUCT_FROM_MEMBER(ctl_req, msg, m);
        clear_guard(&c->guard);
        if (c->req) {
            h2o_req_t *req = c->req;
            c->req = NULL;
            if (c->err.status != FM_OK) send_err(req, &c->ri, &c->err);
            else send_doc(req, &c->ri, c->http, c->doc);
        }
        json_decref(c->doc);
        fm_err_clear(&c->err);
        free(c->body);
        free(c);
        atomic_fetch_sub_explicit(&io->node->outstanding, 1, memory_order_relaxed);
    }
}

static void ctl_enqueue(fm_node *node, ctl_req *c);

static void ctl_submit(io_thread *io, h2o_req_t *req, const reqinfo *ri, ctl_op op,
                       const char *name, size_t nlen, bool with_body) {
    fm_node *node = io->node;
    ctl_req *c = calloc(1, sizeof(*c));
    c->op = op;
    snprintf(c->name, sizeof(c->name), "%.*s", (int)(nlen < 127 ? nlen : 127), name ? name : "");
    if (op == CTL_USAGE && req->query_at != SIZE_MAX) { /* the query is the input */
        c->len = req->path.len - req->query_at - 1;
        c->body = malloc(c->len + 1);
        memcpy(c->body, req->path.base + req->query_at + 1, c->len);
        c->body[c->len] = '\0';
    } else if (with_body && req->entity.base) {
        c->body = malloc(req->entity.len + 1);
        memcpy(c->body, req->entity.base, req->entity.len);
        c->body[req->entity.len] = '\0';
        c->len = req->entity.len;
    }
    c->io = io;
    c->req = req;
    c->ri = *ri;
    ctl_req **guard = h2o_mem_alloc_shared(&req->pool, sizeof(ctl_req *), on_ctl_gone);
    *guard = c;
    c->guard = (void **)guard;
    atomic_fetch_add_explicit(&node->outstanding, 1, memory_order_relaxed);
    ctl_enqueue(node, c);
}

static void ctl_enqueue(fm_node *node, ctl_req *c) {
    pthread_mutex_lock(&node->ctl_mu);
    if (node->ctl_stop && !c->io) { /* cluster news after the control thread stopped */
        pthread_mutex_unlock(&node->ctl_mu);
        free(c);
        return;
    }
    if (node->ctl_tail) node->ctl_tail->next = c;
    else node->ctl_head = c;
    node->ctl_tail = c;
    pthread_cond_signal(&node->ctl_cv);
    pthread_mutex_unlock(&node->ctl_mu);
}

/* Cluster hooks (cluster threads): queue the work for the control thread. */
static void on_cluster_converge(void *ud, const char *name) {
    ctl_req *c = calloc(1, sizeof(*c));
    c->op = CTL_CONVERGE;
    snprintf(c->name, sizeof(c->name), "%s", name);
    ctl_enqueue(ud, c);
}

static void on_cluster_resync(void *ud) {
    fm_node *node = ud;
    if (atomic_exchange(&node->resync_queued, true)) return; /* one is enough */
    ctl_req *c = calloc(1, sizeof(*c));
    c->op = CTL_RESYNC;
    ctl_enqueue(node, c);
}

static void count_warm(fm_version *v, void *ud) {
    size_t *n = ud;
    n[0]++;
    n[1] += v->nfns;
}

static void on_cluster_load(void *ud, json_t *hb) {
    fm_node *node = ud;
    size_t n[2] = {0, 0};
    fm_registry_read(node->registry, count_warm, n);
    int inflight = 0;
    for (int t = 0; t < fm_exec_threads(node->exec); t++) inflight += fm_exec_inflight(node->exec, t);
    int threads = fm_exec_regular_threads(node->exec);
    json_object_set_new(hb, "deployments", json_integer((json_int_t)n[0]));
    json_object_set_new(hb, "functions_warm", json_integer((json_int_t)n[1]));
    json_object_set_new(hb, "threads", json_integer(threads));
    json_object_set_new(hb, "inflight", json_integer(inflight));
    json_object_set_new(hb, "load", json_real(threads ? (double)inflight / threads : 0));
    json_object_set_new(hb, "draining", json_boolean(atomic_load(&node->draining)));
}

static bool authorized(fm_node *node, h2o_req_t *req) {
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i < 0) return false;
    h2o_iovec_t v = req->headers.entries[i].value;
    if (v.len < 7 || strncasecmp(v.base, "Bearer ", 7) != 0) return false;
    const char *tok = v.base + 7;
    size_t tlen = v.len - 7;
    while (tlen && *tok == ' ') tok++, tlen--;
    return fm_ct_equal(tok, tlen, node->token, strlen(node->token));
}

/* GET /system/v1/stats: answered on the I/O thread from the lock-free
 * windows (no store, no control thread). */
typedef struct stats_ctx {
    fm_node *node;
    json_t *fns;
    char *dep;    /* filter, or NULL */
    bool w1, w5;  /* windows asked for */
    int64_t now;
} stats_ctx;

static void stats_one(fm_fnstat *s, void *ud) {
    stats_ctx *sc = ud;
    if (sc->dep && strcmp(sc->dep, s->deployment) != 0) return;
    fm_version *v = fm_registry_acquire(sc->node->registry, s->deployment, strlen(s->deployment));
    const fm_function *f = v ? fm_version_find(v, s->function, strlen(s->function)) : NULL;
    json_t *o = json_pack("{s:s, s:s, s:s, s:b}", "deployment", s->deployment, "function",
                          s->function, "runtime",
                          atomic_load_explicit(&s->runtime, memory_order_acquire), "active",
                          f != NULL);
    if (f) json_object_set_new(o, "version", json_stringn(v->id, 12));
    fm_version_release(v);
    json_object_set_new(o, "cold_starts", fm_fnstat_cold_json(s));
    if (sc->w1) json_object_set_new(o, "1m", fm_fnstat_window(s, 4, sc->now));
    if (sc->w5) json_object_set_new(o, "5m", fm_fnstat_window(s, 20, sc->now));
    fm_usage u;
    fm_fnstat_totals(s, &u);
    json_object_set_new(
        o, "total",
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "invocations", (json_int_t)u.invocations,
                  "errors", (json_int_t)u.errors, "wall_us", (json_int_t)u.wall_us, "cpu_us",
                  (json_int_t)u.cpu_us, "req_bytes", (json_int_t)u.req_bytes, "resp_bytes",
                  (json_int_t)u.resp_bytes, "peak_memory_bytes",
                  (json_int_t)atomic_load_explicit(&s->peak_memory, memory_order_relaxed)));
    json_array_append_new(sc->fns, o);
}

static void handle_stats(io_thread *io, h2o_req_t *req, const reqinfo *ri) {
    fm_node *node = io->node;
    const char *q = req->query_at != SIZE_MAX ? req->path.base + req->query_at + 1 : NULL;
    size_t qlen = q ? req->path.len - req->query_at - 1 : 0;
    char *window = fm_query_get(q, qlen, "window");
    stats_ctx sc = {.node = node, .fns = json_array(), .dep = fm_query_get(q, qlen, "deployment"),
                    .w1 = true, .w5 = true, .now = fm_mono_us()};
    if (window && strcmp(window, "1m") == 0) sc.w5 = false;
    else if (window && strcmp(window, "5m") == 0) sc.w1 = false;
    else if (window) {
        send_status(req, ri, FM_BAD_REQUEST, "window: expected 1m or 5m");
        free(window);
        free(sc.dep);
        json_decref(sc.fns);
        return;
    }
    fm_fnstat_foreach(stats_one, &sc);
    int inflight = 0;
    for (int t = 0; t < fm_exec_threads(node->exec); t++) inflight += fm_exec_inflight(node->exec, t);
    json_t *doc = json_pack(
        "{s:{s:f, s:i, s:i, s:i, s:b}, s:o}", "node", "uptime_seconds",
        (double)(fm_mono_ms() - node->started_ms) / 1e3, "executor_threads",
        fm_exec_threads(node->exec), "inflight", inflight, "deployments",
        (int)fm_registry_count(node->registry), "telemetry", fm_telemetry, "functions", sc.fns);
    free(window);
    free(sc.dep);
    send_doc(req, ri, 200, doc);
    json_decref(doc);
}

/* GET /system/v1/traces/{id} and /system/v1/traces?limit=N, answered on
 * the I/O thread from the span ring (a scan of fixed-size records). */
#define FM_TRACES_LIMIT_DEFAULT 20
#define FM_TRACES_LIMIT_MAX 1000

static void handle_traces(h2o_req_t *req, const reqinfo *ri, const fm_route *rt) {
    if (rt->kind == FM_ROUTE_TRACE) {
        uint8_t id[16];
        if (!fm_trace_unhex(rt->a, rt->alen, id, 16) || fm_trace_zero(id, 16)) {
            send_status(req, ri, FM_BAD_REQUEST,
                        "malformed trace id \"%.*s\": want 32 hex digits, not all zero",
                        (int)(rt->alen > 64 ? 64 : rt->alen), rt->a);
            return;
        }
        json_t *doc = fm_trace_json(id);
        if (!doc) {
            char hex[33];
            fm_hex(id, 16, hex);
            send_status(req, ri, FM_NOT_FOUND,
                        "no span of trace %s on this node (it keeps the last %d spans)", hex,
                        FM_TRACE_RING_SPANS);
            return;
        }
        send_doc(req, ri, 200, doc);
        json_decref(doc);
        return;
    }
    long limit = FM_TRACES_LIMIT_DEFAULT;
    const char *q = req->query_at != SIZE_MAX ? req->path.base + req->query_at + 1 : NULL;
    char *ls = fm_query_get(q, q ? req->path.len - req->query_at - 1 : 0, "limit");
    if (ls) {
        char *stop = NULL;
        limit = strtol(ls, &stop, 10);
        bool bad = !*ls || *stop || limit < 1 || limit > FM_TRACES_LIMIT_MAX;
        free(ls);
        if (bad) {
            send_status(req, ri, FM_BAD_REQUEST, "limit wants a number 1-%d", FM_TRACES_LIMIT_MAX);
            return;
        }
    }
    json_t *doc = fm_trace_list_json((size_t)limit);
    send_doc(req, ri, 200, doc);
    json_decref(doc);
}

/* GET /system/v1/deployments/{name}/logs: answered on the I/O thread from
 * the log store (logs_http.c); 404 only when neither the registry nor the
 * store knows the name. */
static void handle_logs(io_thread *io, h2o_req_t *req, const reqinfo *ri, const fm_route *rt) {
    char name[128];
    snprintf(name, sizeof(name), "%.*s", (int)rt->alen, rt->a);
    fm_logs_query q;
    fm_err err = FM_ERR_INIT;
    const char *qs = req->query_at != SIZE_MAX ? req->path.base + req->query_at + 1 : "";
    size_t qlen = req->query_at != SIZE_MAX ? req->path.len - req->query_at - 1 : 0;
    if (fm_logs_http_query(qs, qlen, &q, &err) != FM_OK) {
        send_err(req, ri, &err);
        return;
    }
    if (method_is(req, "HEAD")) q.follow = false; /* a body-less stream would never end */
    fm_version *v = fm_registry_acquire(io->node->registry, rt->a, rt->alen);
    bool known = v || fm_logs_exists(name);
    fm_version_release(v);
    if (!known) {
        send_status(req, ri, FM_NOT_FOUND, "deployment \"%s\" not found", name);
    } else if (!q.follow) {
        uint64_t next;
        json_t *doc = json_pack("{s:o}", "logs", fm_logs_read(name, &q.f, &next));
        json_object_set_new(doc, "next", json_integer((json_int_t)next));
        send_doc(req, ri, 200, doc);
        json_decref(doc);
    } else if (atomic_load(&io->node->draining)) {
        send_status(req, ri, FM_DRAINING, "the node is shutting down");
    } else {
        count_response(req, 200);
        fm_logs_http_follow(req, name, &q, ri->id, &io->node->outstanding, &io->node->draining);
    }
}

static void handle_system(io_thread *io, h2o_req_t *req, const reqinfo *ri, const fm_route *rt) {
    if (rt->kind == FM_ROUTE_TRACES || rt->kind == FM_ROUTE_TRACE) {
        handle_traces(req, ri, rt);
        return;
    }
    if (rt->a && rt->alen > 100) {
        send_status(req, ri, FM_BAD_REQUEST, "deployment name too long");
        return;
    }
    switch (rt->kind) {
    case FM_ROUTE_DEPLOYMENTS: ctl_submit(io, req, ri, CTL_LIST, NULL, 0, false); break;
    case FM_ROUTE_DEPLOYMENT:
        if (method_is(req, "PUT")) ctl_submit(io, req, ri, CTL_DEPLOY, rt->a, rt->alen, true);
        else if (method_is(req, "DELETE"))
            ctl_submit(io, req, ri, CTL_DELETE, rt->a, rt->alen, false);
        else ctl_submit(io, req, ri, CTL_SHOW, rt->a, rt->alen, false);
        break;
    case FM_ROUTE_VERSIONS: ctl_submit(io, req, ri, CTL_VERSIONS, rt->a, rt->alen, false); break;
    case FM_ROUTE_ROLLBACK: ctl_submit(io, req, ri, CTL_ROLLBACK, rt->a, rt->alen, true); break;
    case FM_ROUTE_USAGE: ctl_submit(io, req, ri, CTL_USAGE, NULL, 0, false); break;
    case FM_ROUTE_STATS: handle_stats(io, req, ri); break;
    case FM_ROUTE_CLUSTER: {
        fm_node *node = io->node;
        json_t *doc = node->cluster ? fm_cluster_view(node->cluster) : NULL;
        if (!doc) {
            json_t *self = json_pack("{s:s, s:s, s:b, s:f}", "id", "local", "address", "", "self",
                                     1, "uptime_s",
                                     (double)(fm_mono_ms() - node->started_ms) / 1000.0);
            doc = json_pack("{s:s, s:s, s:b, s:[o]}", "mode", "single", "node", "local",
                            "connected", 0, "nodes", self);
        }
        send_doc(req, ri, 200, doc);
        json_decref(doc);
        break;
    }
    case FM_ROUTE_LOGS: handle_logs(io, req, ri, rt); break;
    default: send_status(req, ri, FM_NOT_FOUND, "no such control-plane resource"); break;
    }
}

/* ------------------------------------------------------------ routing */

/* ------------------------------------------------------------ /metrics */

typedef struct scrape {
    fm_metrics_buf *b;
    const char *family;
    size_t deployments;
} scrape;

static void scrape_version(fm_version *v, void *ud) {
    scrape *sc = ud;
    sc->deployments++;
    char ver[13];
    snprintf(ver, sizeof(ver), "%.12s", v->id);
    for (size_t i = 0; i < v->nfns; i++) {
        const fm_function *f = &v->fns[i];
        const fm_fn_metrics *m = &f->metrics;
        double val;
        if (strcmp(sc->family, "fnmesh_function_cpu_seconds_total") == 0)
            val = (double)atomic_load_explicit(&m->cpu_us, memory_order_relaxed) / 1e6;
        else if (strcmp(sc->family, "fnmesh_function_peak_memory_bytes") == 0)
            val = (double)atomic_load_explicit(&m->peak_memory, memory_order_relaxed);
        else if (strcmp(sc->family, "fnmesh_function_inflight") == 0)
            val = atomic_load_explicit(&m->inflight, memory_order_relaxed);
        else if (strcmp(sc->family, "fnmesh_function_queued") == 0) {
            int q = atomic_load_explicit(&m->inflight, memory_order_relaxed) -
                    atomic_load_explicit(&m->running, memory_order_relaxed);
            val = q > 0 ? q : 0;
        } else if (strcmp(sc->family, "fnmesh_function_instances") == 0)
            val = atomic_load_explicit(&v->units[f->unit].instances, memory_order_relaxed);
        else {
            fm_metrics_function(sc->b, sc->family, m, v->deployment, f->name, f->rt->name, ver);
            continue;
        }
        fm_metrics_function_value(sc->b, sc->family, val, v->deployment, f->name, f->rt->name,
                                  ver);
    }
}

static void handle_metrics(io_thread *io, h2o_req_t *req, const reqinfo *ri) {
    fm_node *node = io->node;
    fm_metrics_buf b = {0};
    fm_metrics_header(&b, "fnmesh_build_info");
    fm_metrics_printf(&b, "fnmesh_build_info{version=\"%s\"} 1\n", FM_VERSION);
    fm_metrics_header(&b, "fnmesh_up_seconds");
    fm_metrics_printf(&b, "fnmesh_up_seconds %.3f\n", (double)(fm_mono_ms() - node->started_ms) / 1e3);
    static const char *families[] = {
        "fnmesh_function_invocations_total", "fnmesh_function_duration_seconds",
        "fnmesh_function_cold_starts_total", "fnmesh_function_cpu_seconds_total",
        "fnmesh_function_peak_memory_bytes", "fnmesh_function_inflight",
        "fnmesh_function_queued",            "fnmesh_function_instances"};
    scrape sc = {.b = &b};
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
        fm_metrics_header(&b, families[i]);
        sc.family = families[i];
        sc.deployments = 0;
        fm_registry_read(node->registry, scrape_version, &sc);
    }
    fm_metrics_header(&b, "fnmesh_deployments");
    fm_metrics_printf(&b, "fnmesh_deployments %zu\n", sc.deployments);
    fm_metrics_header(&b, "fnmesh_executor_threads");
    fm_metrics_printf(&b, "fnmesh_executor_threads %d\n", fm_exec_threads(node->exec));
    fm_metrics_header(&b, "fnmesh_executor_inflight");
    for (int t = 0; t < fm_exec_threads(node->exec); t++)
        fm_metrics_printf(&b, "fnmesh_executor_inflight{thread=\"%d\"} %d\n", t,
                          fm_exec_inflight(node->exec, t));
    fm_metrics_header(&b, "fnmesh_executor_stuck");
    fm_metrics_printf(&b, "fnmesh_executor_stuck %d\n", fm_exec_stuck(node->exec));
    uint64_t conns = 0, accepted = 0;
    for (int i = 0; i < node->io_threads; i++) {
        conns += atomic_load_explicit(&node->io[i].conns_open, memory_order_relaxed);
        accepted += atomic_load_explicit(&node->io[i].conns_total, memory_order_relaxed);
    }
    fm_metrics_header(&b, "fnmesh_http_connections");
    fm_metrics_printf(&b, "fnmesh_http_connections %llu\n", (unsigned long long)conns);
    fm_metrics_header(&b, "fnmesh_http_connections_total");
    fm_metrics_printf(&b, "fnmesh_http_connections_total %llu\n", (unsigned long long)accepted);
    fm_wpool_stat ws[8];
    size_t nws = fm_wpool_stats(ws, 8);
    static const char *wfam[] = {"fnmesh_worker_processes", "fnmesh_worker_starts_total",
                                 "fnmesh_worker_deaths_total"};
    for (int k = 0; k < 3; k++) {
        fm_metrics_header(&b, wfam[k]);
        for (size_t i = 0; i < nws; i++) {
            uint64_t live = ws[i].started > ws[i].exited ? ws[i].started - ws[i].exited : 0;
            uint64_t val = k == 0 ? live : k == 1 ? ws[i].started : ws[i].died;
            fm_metrics_printf(&b, "%s{runtime=\"%s\"} %llu\n", wfam[k], ws[i].runtime,
                              (unsigned long long)val);
        }
    }
    fm_metrics_header(&b, "fnmesh_http_responses_total");
    for (int slot = 0; slot < 16; slot++) {
        if (slot == 14) continue;
        uint64_t n = 0;
        for (int i = 0; i < node->io_threads; i++)
            n += atomic_load_explicit(&node->io[i].responses[slot], memory_order_relaxed);
        if (slot == 15) fm_metrics_printf(&b, "fnmesh_http_responses_total{code=\"other\"} %llu\n",
                                          (unsigned long long)n);
        else fm_metrics_printf(&b, "fnmesh_http_responses_total{code=\"%d\"} %llu\n",
                               counted_codes[slot], (unsigned long long)n);
    }
    fm_trace_export_stats tx;
    fm_trace_export_get_stats(&tx);
    fm_metrics_header(&b, "fnmesh_trace_spans_total");
    fm_metrics_printf(&b, "fnmesh_trace_spans_total %llu\n",
                      (unsigned long long)fm_trace_recorded());
    fm_metrics_header(&b, "fnmesh_trace_export_spans_total");
    fm_metrics_printf(&b,
                      "fnmesh_trace_export_spans_total{result=\"exported\"} %llu\n"
                      "fnmesh_trace_export_spans_total{result=\"dropped\"} %llu\n",
                      (unsigned long long)tx.exported, (unsigned long long)tx.dropped);
    fm_metrics_header(&b, "fnmesh_trace_export_failures_total");
    fm_metrics_printf(&b, "fnmesh_trace_export_failures_total %llu\n",
                      (unsigned long long)tx.failures);
    int64_t mused, mbudget;
    uint64_t mevicted;
    fm_exec_memory(&mused, &mbudget, &mevicted);
    fm_metrics_header(&b, "fnmesh_instance_memory_bytes");
    fm_metrics_printf(&b, "fnmesh_instance_memory_bytes %lld\n", (long long)mused);
    fm_metrics_header(&b, "fnmesh_memory_budget_bytes");
    fm_metrics_printf(&b, "fnmesh_memory_budget_bytes %lld\n", (long long)mbudget);
    fm_metrics_header(&b, "fnmesh_instance_evictions_total");
    fm_metrics_printf(&b, "fnmesh_instance_evictions_total %llu\n", (unsigned long long)mevicted);
    fm_cluster_stats cs;
    fm_cluster_get_stats(io->node->cluster, &cs);
    fm_metrics_header(&b, "fnmesh_cluster_connected");
    fm_metrics_printf(&b, "fnmesh_cluster_connected %d\n", cs.connected ? 1 : 0);
    fm_metrics_header(&b, "fnmesh_cluster_nodes");
    fm_metrics_printf(&b, "fnmesh_cluster_nodes %d\n", cs.nodes);
    fm_metrics_header(&b, "fnmesh_cluster_forwarded_total");
    fm_metrics_printf(&b, "fnmesh_cluster_forwarded_total %llu\n",
                      (unsigned long long)cs.forwarded);
    fm_metrics_header(&b, "fnmesh_cluster_served_total");
    fm_metrics_printf(&b, "fnmesh_cluster_served_total %llu\n", (unsigned long long)cs.served);
    count_response(req, 200);
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain; version=0.0.4; charset=utf-8"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL,
                          ri->id, strlen(ri->id));
    req->res.content_length = b.len;
    h2o_send_inline(req, b.data ? b.data : "", b.len);
    free(b.data);
}

static int on_req(h2o_handler_t *self, h2o_req_t *req) {
    fm_node *node = ((fm_handler *)self)->node;
    io_thread *io = H2O_STRUCT_FROM_MEMBER(io_thread, ctx, req->conn->ctx);
    reqinfo ri = {0}; /* no trace until a call joins one (read_trace) */
    make_reqid(io, req, &ri);
    const char *p = req->path_normalized.base;
    size_t n = req->path_normalized.len;
    fm_route rt;
    fm_route_match(p, n, &rt);
    /* the control plane answers 401 before saying anything about its paths */
    if (rt.system && !authorized(node, req)) {
        send_status(req, &ri, FM_UNAUTHORIZED,
                    "missing or invalid token: send Authorization: Bearer <admin token>");
        return 0;
    }
    if (rt.kind == FM_ROUTE_NONE) {
        send_status(req, &ri, FM_NOT_FOUND, "%s: %.*s", rt.why, (int)(n > 200 ? 200 : n), p);
        return 0;
    }
    if (!fm_route_allows(&rt, req->method.base, req->method.len)) {
        method_not_allowed(req, &ri, rt.allow);
        return 0;
    }
    switch (rt.kind) {
    case FM_ROUTE_FN: handle_fn(io, req, &ri, &rt); break;
    case FM_ROUTE_RPC: handle_rpc(io, req, &ri); break;
    case FM_ROUTE_METRICS: handle_metrics(io, req, &ri); break;
    case FM_ROUTE_HEALTHZ:
        send_json(req, &ri, 200, H2O_STRLIT("{\"status\":\"ok\"}"), NULL, NULL);
        break;
    case FM_ROUTE_READYZ:
        if (atomic_load(&node->draining))
            send_json(req, &ri, 503, H2O_STRLIT("{\"status\":\"draining\"}"), NULL, NULL);
        else if (!atomic_load(&node->ready))
            send_json(req, &ri, 503, H2O_STRLIT("{\"status\":\"starting\"}"), NULL, NULL);
        else if (node->cluster && !fm_cluster_ready(node->cluster))
            send_json(req, &ri, 503, H2O_STRLIT("{\"status\":\"cluster unavailable\"}"), NULL,
                      NULL);
        else if (node->cluster && !atomic_load(&node->synced))
            send_json(req, &ri, 503, H2O_STRLIT("{\"status\":\"syncing\"}"), NULL, NULL);
        else send_json(req, &ri, 200, H2O_STRLIT("{\"status\":\"ready\"}"), NULL, NULL);
        break;
    default: handle_system(io, req, &ri, &rt); break;
    }
    return 0;
}

/* ------------------------------------------------------------ I/O threads */

static void on_conn_closed(void *data) {
    io_thread *io = data;
    atomic_fetch_sub_explicit(&io->conns_open, 1, memory_order_relaxed);
}

static void on_accept(h2o_socket_t *listener, const char *err) {
    if (err) return;
    io_thread *io = listener->data;
    h2o_socket_t *sock;
    for (int i = 0; i < 64 && (sock = h2o_evloop_socket_accept(listener)); i++) {
        atomic_fetch_add_explicit(&io->conns_total, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&io->conns_open, 1, memory_order_relaxed);
        sock->on_close.cb = on_conn_closed;
        sock->on_close.data = io;
        h2o_accept(&io->accept, sock);
    }
}

static int open_listener(const char *host, int port, char *errbuf, size_t errlen) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(errbuf, errlen, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int on = 1;
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on));
    }
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        snprintf(errbuf, errlen, "cannot listen on %s:%d: %s", host, port, strerror(errno));
        if (fd >= 0) close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static void *io_main(void *arg) {
    io_thread *io = arg;
    fm_node *node = io->node;
    while (!atomic_load(&node->stop)) {
        h2o_evloop_run(io->loop, 50);
        if (atomic_load(&node->draining) && io->listener) {
            h2o_socket_read_stop(io->listener);
            h2o_socket_close(io->listener);
            io->listener = NULL;
        }
    }
    return NULL;
}

static fm_status io_init(fm_node *node, io_thread *io, int index, fm_err *err) {
    io->index = index;
    io->node = node;
    io->loop = h2o_evloop_create();
    h2o_context_init(&io->ctx, io->loop, &node->h2o);
    io->accept.ctx = &io->ctx;
    io->accept.hosts = node->h2o.hosts;
    io->queue = h2o_multithread_create_queue(io->loop);
    if (fm_reply_queue_init(&io->replies) != 0)
        return fm_err_set(err, FM_INTERNAL, "eventfd: %s", strerror(errno));
    io->replies_sock = h2o_evloop_socket_create(io->loop, io->replies.efd, 0);
    io->replies_sock->data = io;
    h2o_socket_read_start(io->replies_sock, on_replies);
    h2o_multithread_register_receiver(io->queue, &io->ctl_replies, on_ctl_replies);
    int n = fm_exec_threads(node->exec);
    io->batch_head = calloc((size_t)n, sizeof(fm_job *));
    io->batch_tail = calloc((size_t)n, sizeof(fm_job *));
    io->batch_calls = calloc((size_t)n, sizeof(int));
    io->flush_entry.cb = flush_batches;
    h2o_linklist_init_anchor(&io->inflight);
    h2o_timeout_init(io->loop, &io->watchdog_timeout, FM_WATCHDOG_MS);
    io->watchdog_entry.cb = on_watchdog;
    h2o_timeout_link(io->loop, &io->watchdog_timeout, &io->watchdog_entry);
    char eb[512];
    io->listen_fd = open_listener(node->host, node->port, eb, sizeof(eb));
    if (io->listen_fd < 0) return fm_err_set(err, FM_INTERNAL, "%s", eb);
    io->listener = h2o_evloop_socket_create(io->loop, io->listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    io->listener->data = io;
    h2o_socket_read_start(io->listener, on_accept);
    return FM_OK;
}

static void io_dispose(io_thread *io) {
    if (io->listener) {
        h2o_socket_read_stop(io->listener);
        h2o_socket_close(io->listener);
        io->listener = NULL;
    }
    if (h2o_timeout_is_linked(&io->watchdog_entry)) h2o_timeout_unlink(&io->watchdog_entry);
    if (h2o_timeout_is_linked(&io->flush_entry)) h2o_timeout_unlink(&io->flush_entry);
    free(io->batch_head);
    free(io->batch_tail);
    free(io->batch_calls);
}

/* ------------------------------------------------------------ set-up */

static int usage(FILE *f) {
    fprintf(f,
            "usage: fnmesh serve [options]\n"
            "\n"
            "Runs a node: deploys come in on /system/v1, calls on /fn and /rpc.\n"
            "\n"
            "options:\n"
            "  --listen HOST:PORT   address to listen on (default 127.0.0.1:8080)\n"
            "  --data DIR           data directory (default ./fnmesh-data)\n"
            "  --threads N          executor threads running functions (default: CPU count),\n"
            "                       plus one reserve thread for when all are in long calls\n"
            "  --io-threads N       HTTP event-loop threads (default 1)\n"
            "  --idle-window D      idle time after which instances beyond a deployment's\n"
            "                       warm one are given back (default 60s)\n"
            "  --memory-budget SIZE keep the instances' estimated memory under SIZE (e.g.\n"
            "                       512MB) by destroying the least recently used idle ones,\n"
            "                       warm ones included (default: no budget)\n"
            "  --isolation MODE     where JavaScript, Lua and templates run: thread (in the\n"
            "                       node, fastest) or process (sandboxed worker processes);\n"
            "                       a manifest's \"isolation\" overrides it (default thread)\n"
            "  --body-limit BYTES   largest call body accepted (default 6291456)\n"
            "  --log-level LEVEL    debug, info, warn or error (default info)\n"
            "  --telemetry on|off   per-call metrics, latency windows, usage and traces\n"
            "                       (default on; off only to measure their cost)\n"
            "  --otlp-endpoint URL  also send spans as OTLP/HTTP JSON to URL/v1/traces\n"
            "                       (e.g. http://127.0.0.1:4318, an OpenTelemetry Collector)\n"
            "\n"
            "cluster mode (docs/cluster.md):\n"
            "  --cluster URLS       join a cluster through NATS with JetStream, e.g.\n"
            "                       nats://10.0.0.1:4222,nats://10.0.0.2:4222\n"
            "  --node-id ID         this node's id (default: generated once into DIR/node.id)\n"
            "  --advertise H:P      HTTP address shown to the cluster (default: --listen)\n"
            "  --cluster-replicas N JetStream replicas of the registry (default 1; 3 on a\n"
            "                       3-server NATS cluster)\n"
            "  --cluster-creds FILE NATS credentials file (JWT and seed)\n"
            "  --cluster-user USER  NATS user (password from FNMESH_CLUSTER_PASSWORD)\n"
            "  --cluster-tls-ca FILE, --cluster-tls-cert FILE, --cluster-tls-key FILE\n"
            "                       TLS to the NATS servers\n"
            "  -h, --help           this help\n"
            "\n"
            "environment:\n"
            "  FNMESH_ADMIN_TOKEN   admin token; otherwise read from (or generated into)\n"
            "                       DIR/admin.token with mode 0600\n"
            "  FNMESH_CLUSTER_TOKEN, FNMESH_CLUSTER_PASSWORD  NATS token / password\n");
    return f == stdout ? 0 : 2;
}

static int parse_listen(const char *s, char *host, size_t hlen, int *port) {
    const char *colon = strrchr(s, ':');
    if (!colon) return -1;
    const char *h = s;
    size_t n = (size_t)(colon - s);
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') h++, n -= 2;
    if (n == 0 || n >= hlen) return -1;
    memcpy(host, h, n);
    host[n] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 0 || p > 65535) return -1;
    *port = (int)p;
    return 0;
}

static fm_status load_token(fm_node *node, fm_err *err) {
    const char *env = getenv("FNMESH_ADMIN_TOKEN");
    if (env && *env) {
        snprintf(node->token, sizeof(node->token), "%s", env);
        return FM_OK;
    }
    char path[2048];
    snprintf(path, sizeof(path), "%s/admin.token", node->data_dir);
    size_t len = 0;
    char *t = fm_read_file(path, &len);
    if (t) {
        while (len && (t[len - 1] == '\n' || t[len - 1] == '\r' || t[len - 1] == ' ')) len--;
        t[len] = '\0';
        snprintf(node->token, sizeof(node->token), "%s", t);
        free(t);
        if (node->token[0]) return FM_OK;
    }
    if (!fm_random_hex(node->token, 32)) return fm_err_set(err, FM_INTERNAL, "no randomness");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return fm_err_set(err, FM_INTERNAL, "cannot write %s: %s", path, strerror(errno));
    fchmod(fd, 0600);
    char line[300];
    int l = snprintf(line, sizeof(line), "%s\n", node->token);
    bool ok = write(fd, line, (size_t)l) == l && fsync(fd) == 0;
    close(fd);
    if (!ok) return fm_err_set(err, FM_INTERNAL, "cannot write %s", path);
    fm_log(FM_LOG_INFO, NULL, "generated admin token in %s", path);
    return FM_OK;
}

/* The node's cluster id: kept in DIR/node.id so a restarted node is the same node. */
static fm_status load_node_id(fm_node *node, char *out, size_t cap, fm_err *err) {
    char path[2048];
    snprintf(path, sizeof(path), "%s/node.id", node->data_dir);
    size_t len = 0;
    char *t = fm_read_file(path, &len);
    if (t) {
        while (len && (t[len - 1] == '\n' || t[len - 1] == ' ')) len--;
        t[len] = '\0';
        snprintf(out, cap, "%s", t);
        free(t);
        if (out[0]) return FM_OK;
    }
    char hex[13];
    if (!fm_random_hex(hex, 6)) return fm_err_set(err, FM_INTERNAL, "no randomness");
    snprintf(out, cap, "n%s", hex);
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, "%s\n", out) < 0 || fclose(f) != 0)
        return fm_err_set(err, FM_INTERNAL, "cannot write %s", path);
    return FM_OK;
}

int fm_serve_main(int argc, char **argv) {
    static fm_node node_storage;
    fm_node *node = &node_storage;
    snprintf(node->host, sizeof(node->host), "127.0.0.1");
    node->port = 8080;
    snprintf(node->data_dir, sizeof(node->data_dir), "./fnmesh-data");
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    node->threads = ncpu > 0 ? (int)ncpu : 1;
    node->io_threads = 1;
    node->body_limit = FM_DEFAULT_BODY_LIMIT;

    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"data", required_argument, NULL, 'd'},
                                         {"threads", required_argument, NULL, 't'},
                                         {"io-threads", required_argument, NULL, 'i'},
                                         {"body-limit", required_argument, NULL, 'b'},
                                         {"log-level", required_argument, NULL, 'L'},
                                         {"telemetry", required_argument, NULL, 'T'},
                                         {"otlp-endpoint", required_argument, NULL, 'O'},
                                         {"idle-window", required_argument, NULL, 'W'},
                                         {"memory-budget", required_argument, NULL, 'M'},
                                         {"isolation", required_argument, NULL, 'I'},
                                         {"cluster", required_argument, NULL, 'C'},
                                         {"node-id", required_argument, NULL, 'N'},
                                         {"advertise", required_argument, NULL, 'A'},
                                         {"cluster-replicas", required_argument, NULL, 'R'},
                                         {"cluster-creds", required_argument, NULL, 1001},
                                         {"cluster-user", required_argument, NULL, 1002},
                                         {"cluster-tls-ca", required_argument, NULL, 1003},
                                         {"cluster-tls-cert", required_argument, NULL, 1004},
                                         {"cluster-tls-key", required_argument, NULL, 1005},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *otlp_endpoint = NULL;
    fm_cluster_opts copts = {.replicas = 1};
    char node_id[64] = "", advertise[300] = "";
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 'l':
            if (parse_listen(optarg, node->host, sizeof(node->host), &node->port) != 0) {
                fprintf(stderr, "fnmesh serve: --listen wants HOST:PORT, got %s\n", optarg);
                return 2;
            }
            break;
        case 'd': snprintf(node->data_dir, sizeof(node->data_dir), "%s", optarg); break;
        case 't':
        case 'i': {
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 256) {
                fprintf(stderr, "fnmesh serve: --%s wants a number 1-256\n",
                        c == 't' ? "threads" : "io-threads");
                return 2;
            }
            if (c == 't') node->threads = (int)v;
            else node->io_threads = (int)v;
            break;
        }
        case 'b': {
            long long v = strtoll(optarg, &end, 10);
            if (*end || v < 1) {
                fprintf(stderr, "fnmesh serve: --body-limit wants a positive byte count\n");
                return 2;
            }
            node->body_limit = (size_t)v;
            break;
        }
        case 'L':
            if (strcmp(optarg, "debug") == 0) fm_log_set_level(FM_LOG_DEBUG);
            else if (strcmp(optarg, "info") == 0) fm_log_set_level(FM_LOG_INFO);
            else if (strcmp(optarg, "warn") == 0) fm_log_set_level(FM_LOG_WARN);
            else if (strcmp(optarg, "error") == 0) fm_log_set_level(FM_LOG_ERROR);
            else {
                fprintf(stderr, "fnmesh serve: unknown log level %s\n", optarg);
                return 2;
            }
            break;
        case 'T':
            if (strcmp(optarg, "on") == 0) fm_telemetry = true;
            else if (strcmp(optarg, "off") == 0) fm_telemetry = false;
            else {
                fprintf(stderr, "fnmesh serve: --telemetry wants on or off\n");
                return 2;
            }
            break;
        case 'O': otlp_endpoint = optarg; break;
        case 'W': {
            int64_t ms;
            if (!fm_parse_duration(optarg, strlen(optarg), &ms) || ms < 100) {
                fprintf(stderr, "fnmesh serve: --idle-window wants a duration of at least "
                                "100ms, like 30s or 5m\n");
                return 2;
            }
            fm_exec_set_idle_window(ms * 1000);
            break;
        }
        case 'M': {
            int64_t bytes;
            if (!fm_parse_size(optarg, &bytes) || bytes < (1 << 20)) {
                fprintf(stderr, "fnmesh serve: --memory-budget wants a size of at least 1MB, "
                                "like 512MB or 2GB\n");
                return 2;
            }
            fm_exec_set_memory_budget(bytes);
            break;
        }
        case 'I':
            if (strcmp(optarg, "thread") != 0 && strcmp(optarg, "process") != 0) {
                fprintf(stderr, "fnmesh serve: --isolation is thread or process\n");
                return 2;
            }
            fm_registry_set_isolation(optarg[0] == 'p' ? FM_ISOLATION_PROCESS
                                                       : FM_ISOLATION_THREAD);
            break;
        case 'C': copts.urls = optarg; break;
        case 'N': snprintf(node_id, sizeof(node_id), "%s", optarg); break;
        case 'A': snprintf(advertise, sizeof(advertise), "%s", optarg); break;
        case 'R': {
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 5) {
                fprintf(stderr, "fnmesh serve: --cluster-replicas wants 1-5\n");
                return 2;
            }
            copts.replicas = (int)v;
            break;
        }
        case 1001: copts.creds_file = optarg; break;
        case 1002: copts.user = optarg; break;
        case 1003: copts.tls_ca = optarg; break;
        case 1004: copts.tls_cert = optarg; break;
        case 1005: copts.tls_key = optarg; break;
        case 'h': return usage(stdout);
        default: return usage(stderr);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "fnmesh serve: unexpected argument %s\n", argv[optind]);
        return usage(stderr);
    }

    /* Signals are taken by sigwait in this thread; every other thread blocks them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    fm_err err = FM_ERR_INIT;
    char path[2048];
    if (fm_mkdirs(node->data_dir, 0700) != 0) {
        fprintf(stderr, "fnmesh serve: cannot create %s: %s\n", node->data_dir, strerror(errno));
        return 1;
    }
    if (load_token(node, &err) != FM_OK) goto fatal;
    snprintf(path, sizeof(path), "%s/fnmesh.db", node->data_dir);
    if (fm_store_open_sqlite(path, &node->store, &err) != FM_OK) goto fatal;
    fm_random_hex(node->reqid_prefix, 4);
    if (fm_trace_init(FM_TRACE_RING_SPANS, &err) != FM_OK) goto fatal;
    if (otlp_endpoint && fm_trace_export_start(otlp_endpoint, &err) != FM_OK) goto fatal;
    node->started_ms = fm_mono_ms();
    node->registry = fm_registry_create();
    fm_mesh_set_registry(node->registry);
    if (fm_exec_create(node->threads, FM_RESERVE_THREADS, &node->exec, &err) != FM_OK) goto fatal;
    node->control =
        (fm_control){.store = node->store, .registry = node->registry, .exec = node->exec};
    if (copts.urls) {
        if (!node_id[0] && load_node_id(node, node_id, sizeof(node_id), &err) != FM_OK) goto fatal;
        if (!advertise[0]) snprintf(advertise, sizeof(advertise), "%.200s:%d", node->host, node->port);
        copts.node_id = node_id;
        copts.http_addr = advertise;
        copts.password = getenv("FNMESH_CLUSTER_PASSWORD");
        copts.token = getenv("FNMESH_CLUSTER_TOKEN");
        if (copts.token && !*copts.token) copts.token = NULL;
        fm_cluster_hooks hooks = {.ud = node,
                                  .converge = on_cluster_converge,
                                  .resync = on_cluster_resync,
                                  .load = on_cluster_load};
        if (fm_cluster_open(&copts, &hooks, node->registry, node->exec, &node->cluster, &err) !=
            FM_OK)
            goto fatal;
        node->control.cluster = node->cluster;
    }

    h2o_config_init(&node->h2o);
    node->h2o.max_request_entity_size = FM_DEFAULT_DEPLOY_LIMIT;
    node->h2o.http1.req_timeout = 30000;
    node->h2o.http2.idle_timeout = 30000;
    node->h2o.http2.max_concurrent_requests_per_connection = 64;
    node->h2o.server_name = h2o_iovec_init(H2O_STRLIT("fnmesh"));
    h2o_hostconf_t *host = h2o_config_register_host(&node->h2o, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pc = h2o_config_register_path(host, "/", 0);
    fm_handler *h = (fm_handler *)h2o_create_handler(pc, sizeof(*h));
    h->super.on_req = on_req;
    h->node = node;

    node->io = calloc((size_t)node->io_threads, sizeof(io_thread));
    for (int i = 0; i < node->io_threads; i++)
        if (io_init(node, &node->io[i], i, &err) != FM_OK) goto fatal;

    pthread_mutex_init(&node->ctl_mu, NULL);
    pthread_cond_init(&node->ctl_cv, NULL);
    pthread_create(&node->ctl_tid, NULL, ctl_main, node);
    pthread_setname_np(node->ctl_tid, "fm-control");
    for (int i = 0; i < node->io_threads; i++) {
        pthread_create(&node->io[i].tid, NULL, io_main, &node->io[i]);
        pthread_setname_np(node->io[i].tid, "fm-io");
    }
    json_t *kv = json_pack("{s:s, s:i, s:s, s:i, s:i}", "host", node->host, "port", node->port,
                           "data", node->data_dir, "threads", node->threads, "io_threads",
                           node->io_threads);
    fm_log(FM_LOG_INFO, kv, "listening on http://%s:%d", node->host, node->port);
    json_decref(kv);
    /* before any worker exists: a node alone in its cgroup v2 may move into a child */
    fm_cgroup_describe();

    /* Load stored deployments on the control thread's behalf (nothing else
     * writes the registry yet: control requests wait in its queue). */
    pthread_mutex_lock(&node->ctl_mu);
    if (fm_control_load(&node->control, &err) != FM_OK) {
        fm_log(FM_LOG_ERROR, NULL, "loading deployments: %s", err.msg);
        fm_err_clear(&err);
    }
    if (node->cluster) fm_cluster_serve(node->cluster, node->registry);
    pthread_mutex_unlock(&node->ctl_mu);
    atomic_store(&node->ready, true);
    fm_log(FM_LOG_INFO, NULL, "ready");

    int sig = 0;
    sigwait(&sigs, &sig);
    fm_log(FM_LOG_INFO, NULL, "received %s: draining", sig == SIGINT ? "SIGINT" : "SIGTERM");
    atomic_store(&node->draining, true);
    fm_cluster_leave(node->cluster); /* other nodes stop sending calls here */
    int64_t until = fm_mono_ms() + FM_DRAIN_TIMEOUT_MS;
    /* calls from clients, and from other nodes of the cluster */
    while (atomic_load(&node->outstanding) + fm_cluster_serving(node->cluster) > 0 &&
           fm_mono_ms() < until)
        usleep(10000);
    usleep(50000); /* let the I/O threads write the last responses */
    int left = atomic_load(&node->outstanding) + fm_cluster_serving(node->cluster);
    atomic_store(&node->stop, true);
    for (int i = 0; i < node->io_threads; i++) pthread_join(node->io[i].tid, NULL);
    for (int i = 0; i < node->io_threads; i++)
        fm_log(FM_LOG_DEBUG, NULL, "I/O thread %d: hand-off waits %llu answered, %llu not", i,
               (unsigned long long)node->io[i].wait_hit, (unsigned long long)node->io[i].wait_miss);
    pthread_mutex_lock(&node->ctl_mu);
    node->ctl_stop = true;
    pthread_cond_signal(&node->ctl_cv);
    pthread_mutex_unlock(&node->ctl_mu);
    pthread_join(node->ctl_tid, NULL);
    if (left > 0) {
        fm_control_flush_usage(&node->control);
        /* An executor is stuck in code that cannot be interrupted: do not wait for it. */
        fm_log(FM_LOG_WARN, NULL, "%d call(s) still running after the drain timeout; exiting", left);
        _exit(0);
    }
    fm_cluster_close(node->cluster); /* every call from another node is answered */
    fm_registry_destroy(node->registry);
    fm_exec_destroy(node->exec);
    fm_wpool_stop_spares();
    fm_control_flush_usage(&node->control); /* every call has finished */
    fm_trace_export_stop(); /* after the executors: every span is in the ring */
    fm_trace_shutdown();
    for (int i = 0; i < node->io_threads; i++) io_dispose(&node->io[i]);
    node->store->ops->close(node->store);
    fm_fnstat_reset();
    fm_log(FM_LOG_INFO, NULL, "stopped");
    return 0;

fatal:
    fprintf(stderr, "fnmesh serve: %s\n", err.msg);
    fm_err_clear(&err);
    return 1;
}
