/* bind.h - turning request bodies, query strings and named arguments into
 * a function's positional arguments (see docs/functions.md). Pure functions
 * of (signature, input): the gateway and the runtimes that receive named
 * arguments from other functions share them. */
#ifndef FM_BIND_H
#define FM_BIND_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/status.h"
#include "registry/registry.h"

/* Binds a parsed JSON body: array = positional, object whose keys are all
 * parameter names = named, anything else = the single argument. `body` is
 * consumed. On success *argv is an owned array of *argc values (NULL =
 * undefined). */
fm_status fm_bind_body(const fm_function *fn, json_t *body, json_t ***argv, size_t *argc,
                       fm_err *err);
/* Binds a query string ("a=1&b=x", without '?') as named arguments. */
fm_status fm_bind_query(const fm_function *fn, const char *q, size_t len, json_t ***argv,
                        size_t *argc, fm_err *err);
/* Binds a JSON object of named arguments (borrowed); unknown names are refused. */
fm_status fm_bind_named(const fm_function *fn, json_t *obj, json_t ***argv, size_t *argc,
                        fm_err *err);
/* Binds a call as it arrives over HTTP (or forwarded from another node):
 * with `octet` the raw body is the one argument (bytes); else a non-empty
 * body is JSON (fm_bind_body, "$bytes" values checked); else the query
 * string (`q`, without '?', may be NULL) names the arguments; else none.
 * `get`: a GET/HEAD, whose body is ignored. */
fm_status fm_bind_http(const fm_function *fn, bool get, bool octet, const char *body,
                       size_t len, const char *q, size_t qlen, json_t ***argv, size_t *argc,
                       fm_err *err);
/* True when JSON text can hold a "$bytes" key: it has a '$', or an escape
 * that could spell one. Without either, no bytes value needs checking. */
bool fm_may_hold_bytes(const char *p, size_t n);
/* Percent-decodes (and '+' -> ' ') into an owned string. */
char *fm_url_decode(const char *s, size_t len, size_t *out_len);
/* The decoded value of the first `key` in a query string ("a=1&b=x",
 * without '?'): owned, "" for a key without '=', NULL when absent. */
char *fm_query_get(const char *q, size_t len, const char *key);

#endif
