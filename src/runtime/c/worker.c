/* worker.c - a C worker process (`fnmesh worker-c`).
 *
 * Started by the node with exec, one socket on fd 3 (framing: see
 * runtime/python/python_int.h). It writes the shared objects of the artifact
 * into a private temporary directory, dlopens them (RTLD_LOCAL: every entry
 * file is its own module), removes the files, hands each module the API
 * table of include/fnmesh.h through its fm_module_init, reports the exports
 * and then serves calls one at a time until the socket closes.
 *
 * Values: an fm_val * is a jansson json_t *. Everything a call touches is
 * kept alive by the call's context (its arguments, and an "arena" array that
 * holds a reference to every value built or received), and released when
 * the function has returned. User code runs in this process only: a crash
 * ends the worker, and the node fails that one call and starts another. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define FM_SDK_NO_HELPERS
#include "fnmesh.h"

#include "core/util.h"
#include "runtime/c/c_int.h"
#include "runtime/sandbox.h"
#include "runtime/python/python_int.h"

#define J(v) ((json_t *)(v))
#define V(j) ((fm_val *)(j))

static int sock = FM_PY_WORKER_FD;

struct fm_ctx {
    json_t *args;  /* array */
    json_t *arena; /* array: a reference to every value made during the call */
    char *error;   /* fm_error message */
    char *call_msg, *call_code; /* last failed fm_call */
};

typedef struct c_fn {
    fm_fn fn;
} c_fn;

/* ---------------------------------------------------------------- the API */

static size_t api_argc(fm_ctx *c) {
    return json_array_size(c->args);
}

static fm_val *api_arg(fm_ctx *c, size_t i) {
    json_t *v = json_array_get(c->args, i);
    return V(v ? v : json_null());
}

static int api_type(const fm_val *v) {
    if (!v) return FM_NULL;
    switch (json_typeof(J(v))) {
    case JSON_TRUE:
    case JSON_FALSE: return FM_BOOL;
    case JSON_INTEGER: return FM_INT;
    case JSON_REAL: return FM_DOUBLE;
    case JSON_STRING: return FM_STRING;
    case JSON_ARRAY: return FM_ARRAY;
    case JSON_OBJECT: return fm_json_bytes_len(J(v)) != SIZE_MAX ? FM_BYTES : FM_MAP;
    default: return FM_NULL;
    }
}

static int64_t api_get_int(const fm_val *v) {
    if (json_is_integer(J(v))) return (int64_t)json_integer_value(J(v));
    if (json_is_real(J(v))) {
        double d = json_real_value(J(v));
        if (d >= 9.2233720368547758e18) return INT64_MAX;
        if (d <= -9.2233720368547758e18) return INT64_MIN;
        return (int64_t)d;
    }
    return 0;
}

static double api_get_double(const fm_val *v) {
    return v && json_is_number(J(v)) ? json_number_value(J(v)) : 0;
}

static bool api_get_bool(const fm_val *v) {
    return v && json_is_true(J(v));
}

static const char *api_get_string(const fm_val *v, size_t *len) {
    if (!v || !json_is_string(J(v))) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = json_string_length(J(v));
    return json_string_value(J(v));
}

static size_t api_len(const fm_val *v) {
    if (!v) return 0;
    size_t bytes = fm_json_bytes_len(J(v)); /* a bytes value: its decoded length */
    if (bytes != SIZE_MAX) return bytes;
    if (json_is_array(J(v))) return json_array_size(J(v));
    if (json_is_object(J(v))) return json_object_size(J(v));
    if (json_is_string(J(v))) return json_string_length(J(v));
    return 0;
}

static fm_val *api_item(const fm_val *a, size_t i) {
    return a ? V(json_array_get(J(a), i)) : NULL;
}

static fm_val *api_get(const fm_val *m, const char *key) {
    return m && key ? V(json_object_get(J(m), key)) : NULL;
}

/* Iteration by index: remembers where the last lookup stopped, so a loop
 * over i = 0, 1, 2... is linear. */
static struct {
    const json_t *map;
    size_t i;
    void *it;
} key_cache;

static const char *api_key_at(const fm_val *m, size_t i, fm_val **value) {
    if (value) *value = NULL;
    if (!m || !json_is_object(J(m)) || i >= json_object_size(J(m))) return NULL;
    json_t *obj = J(m);
    void *it;
    size_t at;
    if (key_cache.map == obj && key_cache.it && key_cache.i <= i) {
        it = key_cache.it;
        at = key_cache.i;
    } else {
        it = json_object_iter(obj);
        at = 0;
    }
    while (it && at < i) {
        it = json_object_iter_next(obj, it);
        at++;
    }
    if (!it) return NULL;
    key_cache.map = obj;
    key_cache.i = at;
    key_cache.it = it;
    if (value) *value = V(json_object_iter_value(it));
    return json_object_iter_key(it);
}

static fm_val *keep(fm_ctx *c, json_t *v) {
    if (!v) return NULL;
    json_array_append_new(c->arena, v);
    return V(v);
}

static fm_val *api_make_null(fm_ctx *c) {
    (void)c;
    return V(json_null());
}

static fm_val *api_make_bool(fm_ctx *c, bool b) {
    (void)c;
    return V(json_boolean(b));
}

static fm_val *api_make_int(fm_ctx *c, int64_t i) {
    return keep(c, json_integer((json_int_t)i));
}

static fm_val *api_make_double(fm_ctx *c, double d) {
    return isfinite(d) ? keep(c, json_real(d)) : NULL;
}

static fm_val *api_make_string(fm_ctx *c, const char *s, size_t len) {
    return s ? keep(c, json_stringn(s, len)) : NULL;
}

static const void *api_get_bytes(fm_ctx *c, const fm_val *v, size_t *len) {
    size_t n = 0;
    unsigned char *b = v ? fm_json_bytes_decode(J(v), &n) : NULL;
    if (len) *len = b ? n : 0;
    if (!b) return NULL;
    /* the arena owns the decoded copy (a string that skips UTF-8 checks) */
    json_t *holder = json_stringn_nocheck((const char *)b, n);
    free(b);
    if (!holder) return NULL;
    keep(c, holder);
    return json_string_value(holder);
}

static fm_val *api_make_bytes(fm_ctx *c, const void *p, size_t len) {
    return p || !len ? keep(c, fm_json_bytes(p ? p : "", len)) : NULL;
}

static fm_val *api_make_array(fm_ctx *c) {
    return keep(c, json_array());
}

static fm_val *api_make_map(fm_ctx *c) {
    return keep(c, json_object());
}

static int api_push(fm_val *a, fm_val *v) {
    if (!a || !v || !json_is_array(J(a))) return -1;
    return json_array_append(J(a), J(v)) == 0 ? 0 : -1;
}

static int api_set(fm_val *m, const char *key, fm_val *v) {
    if (!m || !key || !v || !json_is_object(J(m))) return -1;
    key_cache.map = NULL;
    return json_object_set(J(m), key, J(v)) == 0 ? 0 : -1;
}

static fm_val *api_error(fm_ctx *c, const char *message) {
    free(c->error);
    c->error = strdup(message && *message ? message : "error");
    return NULL;
}

static void api_log(fm_ctx *c, int level, const char *message) {
    (void)c;
    unsigned char lv = (unsigned char)(level < 0 ? 0 : level > 3 ? 3 : level);
    if (message) fm_py_send(sock, 'L', &lv, 1, message, strlen(message));
}

static void call_failed(fm_ctx *c, const char *msg, const char *code) {
    free(c->call_msg);
    free(c->call_code);
    c->call_msg = strdup(msg ? msg : "error");
    c->call_code = strdup(code ? code : "function_error");
}

/* 'M' {t, a} out, 'm' (u8 ok, JSON) back. Nothing else can arrive
 * meanwhile: the node sends nothing else to a busy worker. */
static fm_val *api_call(fm_ctx *c, const char *target, size_t argc, fm_val *const *argv) {
    json_t *args = json_array();
    for (size_t i = 0; i < argc; i++) json_array_append(args, argv[i] ? J(argv[i]) : json_null());
    json_t *req = json_pack("{s:s?, s:o}", "t", target, "a", args);
    char *text = req ? json_dumps(req, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(req);
    if (!text) {
        call_failed(c, "fm_call: the arguments cannot be sent", "bad_request");
        return NULL;
    }
    int rc = fm_py_send(sock, 'M', text, strlen(text), NULL, 0);
    free(text);
    char *answer = NULL;
    size_t alen = 0;
    int type = rc == 0 ? fm_py_recv_only(sock, 'm', &answer, &alen) : -1;
    if (type != 'm' || alen < 1) {
        free(answer);
        call_failed(c, "the node is gone", "internal");
        return NULL;
    }
    json_t *v = fm_json_parse_value(answer + 1, alen - 1);
    bool ok = answer[0] != 0;
    free(answer);
    if (!ok) {
        call_failed(c, json_string_value(json_object_get(v, "message")),
                    json_string_value(json_object_get(v, "code")));
        json_decref(v);
        return NULL;
    }
    if (!v) return V(json_null());
    return keep(c, v);
}

static const char *api_call_error(fm_ctx *c, const char **code) {
    if (code) *code = c->call_code;
    return c->call_msg;
}

static const struct fm_api api = {
    .version = FM_API_VERSION,
    .size = sizeof(struct fm_api),
    .argc = api_argc,
    .arg = api_arg,
    .type = api_type,
    .get_int = api_get_int,
    .get_double = api_get_double,
    .get_bool = api_get_bool,
    .get_string = api_get_string,
    .len = api_len,
    .item = api_item,
    .get = api_get,
    .key_at = api_key_at,
    .make_null = api_make_null,
    .make_bool = api_make_bool,
    .make_int = api_make_int,
    .make_double = api_make_double,
    .make_string = api_make_string,
    .make_array = api_make_array,
    .make_map = api_make_map,
    .push = api_push,
    .set = api_set,
    .error = api_error,
    .log = api_log,
    .call = api_call,
    .call_error = api_call_error,
    .get_bytes = api_get_bytes,
    .make_bytes = api_make_bytes,
};

/* ---------------------------------------------------------------- loading */

typedef int (*module_init_fn)(const struct fm_api *, const struct fm_export_desc **, size_t *);

static void send_failure(const char *fmt, const char *a, const char *b) {
    char msg[2048];
    snprintf(msg, sizeof(msg), fmt, a, b ? b : "");
    json_t *e = json_pack("{s:s}", "message", msg);
    char *text = json_dumps(e, JSON_COMPACT);
    fm_py_send(sock, 'X', text, strlen(text), NULL, 0);
    free(text);
    json_decref(e);
}

/* Loads every object of the artifact; fills the exports (JSON and
 * function table). Returns 0, or -1 after sending 'X'. */
static int load(const unsigned char *p, size_t len, const char *dir, json_t *exports,
                c_fn **fns, size_t *nfns) {
    const unsigned char *end = p + len;
    size_t ml = strlen(FM_C_MAGIC);
    if (len < ml + 4 || memcmp(p, FM_C_MAGIC, ml) != 0) goto bad;
    p += ml;
    uint32_t n = fm_get_u32(p);
    p += 4;
    for (uint32_t i = 0; i < n; i++) {
        if (end - p < 4) goto bad;
        uint32_t nl = fm_get_u32(p);
        p += 4;
        if ((size_t)(end - p) < (size_t)nl + 4) goto bad;
        char *file = strndup((const char *)p, nl);
        p += nl;
        uint32_t sl = fm_get_u32(p);
        p += 4;
        if ((size_t)(end - p) < sl) {
            free(file);
            goto bad;
        }
        char path[4096];
        snprintf(path, sizeof(path), "%s/%u.so", dir, (unsigned)i);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0700);
        ssize_t w = fd >= 0 ? write(fd, p, sl) : -1;
        if (fd >= 0) close(fd);
        p += sl;
        void *h = w == (ssize_t)sl ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
        unlink(path);
        if (!h) {
            const char *why = dlerror();
            if (why) { /* the message names the temporary file: keep what follows it */
                const char *tail = strstr(why, ".so: ");
                if (tail) why = tail + 5;
            }
            send_failure("%s: cannot load the compiled module: %s", file,
                         why ? why : strerror(errno));
            free(file);
            return -1;
        }
        module_init_fn init = (module_init_fn)dlsym(h, "fm_module_init");
        const struct fm_export_desc *ex = NULL;
        size_t nex = 0;
        if (!init || init(&api, &ex, &nex) != 0) {
            send_failure(init ? "%s: the module needs a newer fnmesh (API version > %s)"
                              : "%s: no fm_module_init (include <fnmesh.h>)%s",
                         file, init ? "1" : "");
            free(file);
            return -1;
        }
        for (size_t k = 0; k < nex; k++) {
            json_t *params = json_array();
            for (size_t j = 1; j <= ex[k].nparams; j++)
                json_array_append_new(params, json_string(ex[k].params[j]));
            json_array_append_new(exports, json_pack("{s:s, s:s, s:o}", "name", ex[k].name,
                                                     "file", file, "params", params));
            *fns = realloc(*fns, (*nfns + 1) * sizeof(c_fn));
            (*fns)[(*nfns)++].fn = ex[k].fn;
        }
        free(file);
    }
    return 0;
bad:
    send_failure("%s%s", "the C artifact is damaged", NULL);
    return -1;
}

/* ---------------------------------------------------------------- calls */

/* Runs one call (a 'C' payload); sends 'R' or 'F'. */
static void serve(const char *req, size_t len, const c_fn *fns, size_t nfns) {
    fm_call_frame f;
    if (fm_call_frame_parse(req, len, &f) != 0) {
        fm_worker_reject_call(sock, req, len);
        return;
    }
    const unsigned char *id = f.id;
    size_t index = f.index;
    fm_ctx c = {.args = fm_json_parse_value(f.args, f.args_len), .arena = json_array()};
    if (!json_is_array(c.args)) {
        json_decref(c.args);
        c.args = json_array();
    }
    char *text = NULL;
    char type = 'R';
    if (index >= nfns) {
        api_error(&c, "no such export");
    } else {
        fm_val *v = fns[index].fn(&c);
        if (!c.error) {
            text = json_dumps(v ? J(v) : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
            if (!text) api_error(&c, "the result cannot be converted to JSON");
        }
    }
    if (c.error) {
        json_t *e = json_pack("{s:s, s:s, s:s}", "message", c.error, "name", "Error", "stack", "");
        free(text);
        text = json_dumps(e, JSON_COMPACT);
        json_decref(e);
        type = 'F';
    }
    fm_worker_reply(sock, type, id, text, strlen(text));
    free(text);
    key_cache.map = NULL;
    json_decref(c.args);
    json_decref(c.arena);
    free(c.error);
    free(c.call_msg);
    free(c.call_code);
}

int fm_c_worker_main(void) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the node */
    char dir[] = "/tmp/fnmesh-c-XXXXXX";
    if (!mkdtemp(dir)) {
        send_failure("cannot create a temporary directory: %s%s", strerror(errno), NULL);
        return 2;
    }
    setenv("TMPDIR", dir, 1);
    /* started ahead of need up to here; then the deployment's memory cap and
     * the sandbox, before the module's constructors run */
    char *init = NULL;
    size_t ilen = 0;
    if (fm_worker_take_quota(sock) != 0 || fm_py_recv(sock, -1, &init, &ilen) != 'I') {
        fm_rmtree(dir);
        return 2;
    }
    json_t *exports = json_array();
    c_fn *fns = NULL;
    size_t nfns = 0;
    int rc = load((const unsigned char *)init, ilen, dir, exports, &fns, &nfns);
    free(init);
    if (rc != 0) {
        fm_rmtree(dir);
        return 1;
    }
    char *ej = json_dumps(exports, JSON_COMPACT);
    json_decref(exports);
    fm_py_send(sock, 'E', ej, strlen(ej), NULL, 0);
    fm_worker_ready(sock);
    free(ej);
    for (;;) {
        char *req = NULL;
        size_t rlen = 0;
        int type = fm_py_recv_next(sock, &req, &rlen);
        if (type < 0) break; /* the node closed the socket */
        if (type == 'C') serve(req, rlen, fns, nfns);
        free(req);
    }
    free(fns);
    fm_rmtree(dir);
    return 0; /* the modules stay loaded: they may have registered atexit handlers */
}
