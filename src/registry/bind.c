/* bind.c - turning request bodies and query strings into arguments.
 *
 * Pure functions of (function signature, input): no I/O, no globals, so the
 * rules in docs/api.md are unit-tested directly. */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "registry/bind.h"

static ssize_t param_index(const fm_function *fn, const char *key) {
    for (size_t i = 0; i < fn->nparams; i++)
        if (fn->param_names[i] && strcmp(fn->param_names[i], key) == 0) return (ssize_t)i;
    return -1;
}

static bool all_keys_params(const fm_function *fn, json_t *obj) {
    if (json_object_size(obj) == 0) return false;
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        if (param_index(fn, k) < 0) return false;
    }
    return true;
}

/* Positional array from named values; trailing undefined trimmed. */
static void named_to_argv(const fm_function *fn, json_t *obj, json_t ***argv, size_t *argc) {
    size_t n = 0;
    json_t **a = calloc(fn->nparams ? fn->nparams : 1, sizeof(json_t *));
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        ssize_t i = param_index(fn, k);
        if (i < 0) continue;
        a[i] = json_incref(v);
        if ((size_t)i + 1 > n) n = (size_t)i + 1;
    }
    *argv = a;
    *argc = n;
}

static void unknown_param(const fm_function *fn, const char *key, fm_err *err) {
    char list[512] = "";
    size_t o = 0;
    for (size_t i = 0; i < fn->nparams && o < sizeof(list) - 2; i++) {
        if (!fn->param_names[i]) continue;
        o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", o ? ", " : "",
                              fn->param_names[i]);
    }
    fm_err_set(err, FM_BAD_REQUEST, "unknown parameter \"%.100s\" for %s (parameters: %s)", key,
               fn->name, o ? list : "none");
}

fm_status fm_bind_named(const fm_function *fn, json_t *obj, json_t ***argv, size_t *argc,
                        fm_err *err) {
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        if (param_index(fn, k) < 0) {
            unknown_param(fn, k, err);
            return FM_BAD_REQUEST;
        }
    }
    named_to_argv(fn, obj, argv, argc);
    return FM_OK;
}

fm_status fm_bind_body(const fm_function *fn, json_t *body, json_t ***argv, size_t *argc,
                       fm_err *err) {
    if (json_is_array(body)) {
        size_t n = json_array_size(body);
        json_t **a = calloc(n ? n : 1, sizeof(json_t *));
        for (size_t i = 0; i < n; i++) a[i] = json_incref(json_array_get(body, i));
        json_decref(body);
        *argv = a;
        *argc = n;
        return FM_OK;
    }
    if (json_is_object(body) && all_keys_params(fn, body)) {
        named_to_argv(fn, body, argv, argc);
        json_decref(body);
        return FM_OK;
    }
    *argv = calloc(1, sizeof(json_t *));
    (*argv)[0] = body;
    *argc = 1;
    return FM_OK;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

char *fm_url_decode(const char *s, size_t len, size_t *out_len) {
    char *out = malloc(len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%' && i + 2 < len && hexval(s[i + 1]) >= 0 &&
                   hexval(s[i + 2]) >= 0) {
            out[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    if (out_len) *out_len = o;
    return out;
}

char *fm_query_get(const char *q, size_t len, const char *key) {
    size_t klen = strlen(key), i = 0;
    while (q && i < len) {
        size_t end = i;
        while (end < len && q[end] != '&') end++;
        const char *eq = memchr(q + i, '=', end - i);
        size_t kl = eq ? (size_t)(eq - (q + i)) : end - i;
        size_t dl;
        char *k = fm_url_decode(q + i, kl, &dl);
        bool match = dl == klen && memcmp(k, key, klen) == 0;
        free(k);
        if (match) return eq ? fm_url_decode(eq + 1, (size_t)(q + end - eq - 1), NULL) : strdup("");
        i = end + 1;
    }
    return NULL;
}

fm_status fm_bind_query(const fm_function *fn, const char *q, size_t len, json_t ***argv,
                        size_t *argc, fm_err *err) {
    json_t *obj = json_object();
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && q[end] != '&') end++;
        if (end > i) {
            const char *eq = memchr(q + i, '=', end - i);
            size_t klen = eq ? (size_t)(eq - (q + i)) : end - i;
            size_t kdl, vdl = 0;
            char *key = fm_url_decode(q + i, klen, &kdl);
            char *val = eq ? fm_url_decode(eq + 1, (size_t)(q + end - eq - 1), &vdl) : strdup("");
            json_t *v = NULL;
            /* only text that can start a JSON value is tried as JSON */
            if (vdl && strchr("{[\"-0123456789tfn", val[0])) {
                json_error_t je;
                v = json_loadb(val, vdl, JSON_DECODE_ANY, &je);
            }
            if (!v) v = fm_json_strn(val, vdl);
            /* keys with NUL or invalid UTF-8 cannot be parameter names */
            if (strlen(key) != kdl) json_decref(v);
            if (strlen(key) != kdl || json_object_set_new(obj, key, v) != 0) {
                free(key);
                free(val);
                json_decref(obj);
                return fm_err_set(err, FM_BAD_REQUEST, "invalid query parameter name");
            }
            free(key);
            free(val);
        }
        i = end + 1;
    }
    fm_status st;
    size_t named = 0;
    for (size_t k = 0; k < fn->nparams; k++) named += fn->param_names[k] != NULL;
    if (named == 0 && fn->nparams == 1 && json_object_size(obj) > 0) {
        /* f({a, b}): the query is the single (destructured) argument */
        *argv = calloc(1, sizeof(json_t *));
        (*argv)[0] = obj;
        *argc = 1;
        return FM_OK;
    }
    st = fm_bind_named(fn, obj, argv, argc, err);
    json_decref(obj);
    return st;
}

static bool body_is_empty(const char *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (b[i] != ' ' && b[i] != '\t' && b[i] != '\r' && b[i] != '\n') return false;
    return true;
}

bool fm_may_hold_bytes(const char *p, size_t n) {
    return memchr(p, '$', n) || memmem(p, n, "\\u", 2);
}

fm_status fm_bind_http(const fm_function *fn, bool get, bool octet, const char *body,
                       size_t len, const char *q, size_t qlen, json_t ***argv, size_t *argc,
                       fm_err *err) {
    *argv = NULL;
    *argc = 0;
    fm_status st = FM_OK;
    if (!get && body && octet) {
        *argc = 1; /* the raw body is the one argument, as bytes */
        *argv = calloc(1, sizeof(json_t *));
        (*argv)[0] = fm_json_bytes(body, len);
    } else if (!get && body && !body_is_empty(body, len)) {
        json_t *doc = fm_json_parse(body, len, err);
        if (doc && fm_may_hold_bytes(body, len) && fm_json_check_bytes(doc, err) != FM_OK) {
            json_decref(doc);
            doc = NULL;
        }
        st = doc ? fm_bind_body(fn, doc, argv, argc, err) : err->status;
    } else if (q) {
        st = fm_bind_query(fn, q, qlen, argv, argc, err);
        /* values are decoded (%24 is '$'): check them all, scalars cost nothing */
        for (size_t i = 0; st == FM_OK && i < *argc; i++)
            if ((*argv)[i]) st = fm_json_check_bytes((*argv)[i], err);
    }
    if (st != FM_OK) {
        for (size_t i = 0; *argv && i < *argc; i++) json_decref((*argv)[i]);
        free(*argv);
        *argv = NULL;
        *argc = 0;
    }
    return st;
}
