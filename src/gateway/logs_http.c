/* logs_http.c - the logs endpoint's query parsing and follow stream (see
 * logs_http.h).
 *
 * A follow stream polls the store from the I/O thread's 100 ms timeout
 * instead of being woken by the logging threads: nothing crosses threads
 * but the store's own locks. h2o allows one h2o_send in flight per request:
 * while one is (`sending`), new entries wait in the ring, and the next poll
 * happens when h2o calls proceed. The follower is allocated in the
 * request's pool; its dispose hook unlinks the timer and frees the buffers,
 * so a client that leaves at any moment leaves nothing dangling. */
#include "gateway/logs_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "registry/bind.h"

/* ------------------------------------------------------------ query */

static bool key_is(const char *k, size_t kl, const char *lit) {
    return strlen(lit) == kl && memcmp(k, lit, kl) == 0;
}

static fm_status query_param(const char *k, size_t kl, const char *v, size_t vl, fm_logs_query *out,
                             fm_err *err) {
    if (key_is(k, kl, "since")) {
        if (vl == 0) return FM_OK;
        if (!fm_logs_parse_since(v, vl, fm_wall_ms(), &out->f))
            return fm_err_set(err, FM_BAD_REQUEST,
                              "since: expected a seq number, a duration (30s, 5m, 2h, 1d) or an "
                              "RFC 3339 time, got \"%.*s\"",
                              (int)(vl > 64 ? 64 : vl), v);
    } else if (key_is(k, kl, "limit")) {
        char *end = NULL;
        long n = vl ? strtol(v, &end, 10) : -1;
        if (vl == 0 || *end || n < 1 || n > FM_LOGS_MAX_LIMIT)
            return fm_err_set(err, FM_BAD_REQUEST, "limit: expected a number from 1 to %d",
                              FM_LOGS_MAX_LIMIT);
        out->f.limit = (size_t)n;
    } else if (key_is(k, kl, "function")) {
        if (vl == 0) return FM_OK;
        if (vl > FM_LOGS_FUNCTION_MAX)
            return fm_err_set(err, FM_BAD_REQUEST, "function: name too long");
        memcpy(out->function, v, vl);
        out->function[vl] = '\0';
        out->f.function = out->function;
    } else if (key_is(k, kl, "level")) {
        if (vl && !fm_logs_parse_level(v, vl, &out->f.min_level))
            return fm_err_set(err, FM_BAD_REQUEST,
                              "level: expected debug, info, warn or error, got \"%.*s\"",
                              (int)(vl > 32 ? 32 : vl), v);
    } else if (key_is(k, kl, "follow")) {
        out->follow = !(key_is(v, vl, "0") || key_is(v, vl, "false")); /* "follow" alone: on */
    }
    return FM_OK;
}

fm_status fm_logs_http_query(const char *q, size_t len, fm_logs_query *out, fm_err *err) {
    memset(out, 0, sizeof(*out));
    out->f.min_level = FM_LOG_DEBUG;
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && q[end] != '&')
            end++;
        if (end > i) {
            const char *eq = memchr(q + i, '=', end - i);
            size_t kl, vl;
            char *k = fm_url_decode(q + i, eq ? (size_t)(eq - q - i) : end - i, &kl);
            char *v = eq ? fm_url_decode(eq + 1, (size_t)(q + end - eq - 1), &vl) : strdup("");
            if (!eq) vl = 0;
            fm_status st = query_param(k, kl, v, vl, out, err);
            free(k);
            free(v);
            if (st != FM_OK) return st;
        }
        i = end + 1;
    }
    return FM_OK;
}

/* ------------------------------------------------------------ follow */

typedef struct follower {
    h2o_generator_t gen; /* first: h2o hands it back to proceed/stop */
    h2o_req_t *req;
    h2o_timeout_entry_t tick;
    fm_logs_query q;
    char deployment[128];
    uint64_t next;
    int64_t last_out_ms;
    char *pending; /* NDJSON lines not yet handed to h2o */
    size_t plen, pcap;
    char *inflight; /* the buffer h2o is sending (valid until proceed) */
    bool sending, done;
    atomic_int *outstanding;
    const atomic_bool *draining;
} follower;

static void pending_add(follower *fl, const char *s, size_t n) {
    if (fl->plen + n > fl->pcap) {
        fl->pcap = (fl->plen + n) * 2 + 1024;
        fl->pending = realloc(fl->pending, fl->pcap);
    }
    memcpy(fl->pending + fl->plen, s, n);
    fl->plen += n;
}

/* Appends the entries after fl->next to pending. */
static void poll_store(follower *fl) {
    uint64_t next;
    json_t *arr = fm_logs_read(fl->deployment, &fl->q.f, &next);
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) {
        size_t n;
        char *s = fm_json_dump(e, &n);
        pending_add(fl, s, n);
        pending_add(fl, "\n", 1);
        free(s);
    }
    json_decref(arr);
    fl->q.f.has_since = true;
    fl->q.f.since = next;
}

static void stop_ticking(follower *fl) {
    if (h2o_timeout_is_linked(&fl->tick)) h2o_timeout_unlink(&fl->tick);
}

/* Hands pending output (or the final chunk when draining, or a heartbeat)
 * to h2o unless a send is in flight. */
static void flush(follower *fl) {
    if (fl->sending || fl->done) return;
    bool final = atomic_load(fl->draining);
    int64_t now = fm_mono_ms();
    if (!final && fl->plen == 0) {
        if (now - fl->last_out_ms < FM_LOGS_HEARTBEAT_MS) return;
        pending_add(fl, "\n", 1);
    }
    free(fl->inflight);
    fl->inflight = fl->pending;
    h2o_iovec_t buf = h2o_iovec_init(fl->inflight, fl->plen);
    size_t nbufs = fl->plen ? 1 : 0;
    fl->pending = NULL;
    fl->plen = fl->pcap = 0;
    fl->sending = true;
    fl->last_out_ms = now;
    if (final) {
        fl->done = true;
        stop_ticking(fl);
    }
    /* may call proceed (or dispose the request after a final send) before returning */
    h2o_send(fl->req, nbufs ? &buf : NULL, nbufs,
             final ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void on_tick(h2o_timeout_entry_t *entry) {
    follower *fl = H2O_STRUCT_FROM_MEMBER(follower, tick, entry);
    h2o_context_t *ctx = fl->req->conn->ctx;
    h2o_timeout_link(ctx->loop, &ctx->hundred_ms_timeout, &fl->tick);
    if (fl->sending) return;
    poll_store(fl);
    flush(fl); /* last: a final send may free fl */
}

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req) {
    follower *fl = (follower *)gen;
    fl->sending = false;
    free(fl->inflight);
    fl->inflight = NULL;
    if (fl->done) return;
    poll_store(fl);
    if (fl->plen || atomic_load(fl->draining)) flush(fl);
}

static void on_stop(h2o_generator_t *gen, h2o_req_t *req) {
    follower *fl = (follower *)gen;
    fl->done = true;
    stop_ticking(fl);
}

static void on_dispose(void *p) {
    follower *fl = p;
    stop_ticking(fl);
    free(fl->pending);
    free(fl->inflight);
    atomic_fetch_sub_explicit(fl->outstanding, 1, memory_order_relaxed);
}

void fm_logs_http_follow(h2o_req_t *req, const char *deployment, const fm_logs_query *q,
                         const char *request_id, atomic_int *outstanding,
                         const atomic_bool *draining) {
    follower *fl = h2o_mem_alloc_shared(&req->pool, sizeof(*fl), on_dispose);
    memset(fl, 0, sizeof(*fl));
    fl->gen.proceed = on_proceed;
    fl->gen.stop = on_stop;
    fl->req = req;
    fl->tick.cb = on_tick;
    fl->q = *q;
    if (q->f.function) fl->q.f.function = fl->q.function;
    snprintf(fl->deployment, sizeof(fl->deployment), "%s", deployment);
    fl->outstanding = outstanding;
    fl->draining = draining;
    atomic_fetch_add_explicit(outstanding, 1, memory_order_relaxed);

    poll_store(fl); /* the backlog */
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/x-ndjson"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-cache"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL,
                          request_id, strlen(request_id));
    h2o_start_response(req, &fl->gen);
    h2o_context_t *ctx = req->conn->ctx;
    h2o_timeout_link(ctx->loop, &ctx->hundred_ms_timeout, &fl->tick);
    /* the headers go out now, with the backlog or (h2o holds back headers
     * sent without a body) a heartbeat line */
    fl->last_out_ms = fm_mono_ms() - FM_LOGS_HEARTBEAT_MS;
    flush(fl);
}
