/* status.h - the one status type of fnmesh, and the error detail that goes
 * with it.
 *
 * Every fallible function returns an fm_status and, when it fails, fills an
 * fm_err the caller provides (message in a fixed buffer, so reporting an
 * error never allocates). The table below is the single source of truth for
 * the status names, their wire codes and their HTTP statuses. Bugs are
 * asserts, never statuses. */
#ifndef FM_STATUS_H
#define FM_STATUS_H

#include <stdarg.h>
#include <stddef.h>

/*  X(enum suffix, wire code, HTTP status) */
#define FM_STATUS_MAP(X)                                                                           \
    X(OK, "ok", 200)                                                                               \
    X(BAD_REQUEST, "bad_request", 400)                                                             \
    X(INVALID_JSON, "invalid_json", 400)                                                           \
    X(INVALID_BUNDLE, "invalid_bundle", 400)                                                       \
    X(UNAUTHORIZED, "unauthorized", 401)                                                           \
    X(NOT_FOUND, "not_found", 404)                                                                 \
    X(METHOD_NOT_ALLOWED, "method_not_allowed", 405)                                               \
    X(CONFLICT, "conflict", 409)                                                                   \
    X(TOO_LARGE, "payload_too_large", 413)                                                         \
    X(OVERLOADED, "overloaded", 429)                                                               \
    X(FUNCTION_ERROR, "function_error", 500)                                                       \
    X(INTERNAL, "internal", 500)                                                                   \
    X(LOOP, "loop_detected", 508)                                                                  \
    X(DRAINING, "draining", 503)                                                                   \
    X(UNAVAILABLE, "unavailable", 503)                                                             \
    X(TIMEOUT, "timeout", 504)

typedef enum {
#define FM_X(e, code, http) FM_##e,
    FM_STATUS_MAP(FM_X)
#undef FM_X
        FM_STATUS_COUNT
} fm_status;

/* Wire code ("not_found") and HTTP status of a status. */
const char *fm_status_code(fm_status s);
int fm_status_http(fm_status s);
/* The status whose wire code is `code` ("timeout" -> FM_TIMEOUT); `fallback`
 * for NULL, "ok" and unknown codes. */
fm_status fm_status_from_code(const char *code, fm_status fallback);

/* Error detail. `details` is an owned jansson object (may be NULL) with
 * extra members merged into the error body (name, stack, position...). */
typedef struct fm_err {
    fm_status status;
    char msg[1024];
    struct json_t *details;
} fm_err;

#define FM_ERR_INIT {FM_OK, {0}, NULL}

/* Sets status and formatted message; returns `s` so callers can write
 * `return fm_err_set(err, FM_NOT_FOUND, "...")`. `err` may be NULL. */
fm_status fm_err_set(fm_err *err, fm_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
fm_status fm_err_vset(fm_err *err, fm_status s, const char *fmt, va_list ap);
/* Adds a member to err->details (steals `value`). */
void fm_err_detail(fm_err *err, const char *key, struct json_t *value);
/* Frees details and resets to OK. */
void fm_err_clear(fm_err *err);
/* Builds {"error":{"code","message",...details}} (new reference). */
struct json_t *fm_err_to_json(const fm_err *err, const char *request_id);

#endif
