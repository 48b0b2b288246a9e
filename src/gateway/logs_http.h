/* logs_http.h - GET /system/v1/deployments/{name}/logs: the query, the JSON
 * page and the follow stream (NDJSON) over the function log store.
 *
 * Everything here runs on the I/O thread that owns the request. A follow
 * stream belongs to its request: it lives in the request's memory pool and
 * ends when the client goes away, or cleanly (final chunk) when the node
 * drains. */
#ifndef FM_LOGS_HTTP_H
#define FM_LOGS_HTTP_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "core/status.h"
#include "metrics/logs.h"

#define FM_LOGS_POLL_MS 100        /* how often a follow stream looks for new entries */
#define FM_LOGS_HEARTBEAT_MS 15000 /* a blank line after this long without output */
#define FM_LOGS_FUNCTION_MAX 128

/* A parsed logs query. `f.function` points into `function` when set. */
typedef struct fm_logs_query {
    fm_logs_filter f;
    bool follow;
    char function[FM_LOGS_FUNCTION_MAX + 1];
} fm_logs_query;

/* Parses the query string (without '?'; may be empty): since, limit,
 * function, level, follow (on unless "0" or "false"). Unknown parameters
 * are ignored. FM_BAD_REQUEST
 * with a message in err for a bad value. */
fm_status fm_logs_http_query(const char *q, size_t len, fm_logs_query *out, fm_err *err);

/* Starts the NDJSON follow stream of `deployment` on `req` (status 200
 * already decided by the caller): first the entries `q` selects, then new
 * ones as they arrive. `*outstanding` is incremented now and decremented
 * when the request is gone; the stream ends with a final chunk once
 * `*draining` turns true. `request_id` is copied. I/O thread of `req`. */
void fm_logs_http_follow(h2o_req_t *req, const char *deployment, const fm_logs_query *q,
                         const char *request_id, atomic_int *outstanding,
                         const atomic_bool *draining);

#endif
