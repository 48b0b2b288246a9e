/* http.h - helpers shared by the gateway's handlers: responses, request
 * ids, argument binding. Everything runs on an I/O thread. */
#ifndef FM_HTTP_H
#define FM_HTTP_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <jansson.h>
#include <stdbool.h>

#include "core/status.h"
#include "registry/registry.h"

/* Binds a parsed JSON body to a function's arguments (see docs/api.md):
 * array = positional, object whose keys are all parameter names = named,
 * anything else = the single argument. `body` is consumed. On success
 * *argv is an owned array of *argc values (NULL = undefined). */
fm_status fm_bind_body(const fm_function *fn, json_t *body, json_t ***argv, size_t *argc,
                       fm_err *err);
/* Binds a query string ("a=1&b=x", without '?') as named arguments. */
fm_status fm_bind_query(const fm_function *fn, const char *q, size_t len, json_t ***argv,
                        size_t *argc, fm_err *err);
/* Same binding for a JSON object of named arguments (JSON-RPC params). `obj` borrowed. */
fm_status fm_bind_named(const fm_function *fn, json_t *obj, json_t ***argv, size_t *argc,
                        fm_err *err);
/* Percent-decodes (and '+' → ' ') into an owned string. */
char *fm_url_decode(const char *s, size_t len, size_t *out_len);

#endif
