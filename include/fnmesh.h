/* fnmesh.h - the SDK of fnmesh functions written in C (version 2).
 *
 * Self-contained: needs only libc, and a module never links against node
 * symbols. The node compiles each top-level .c file of a bundle into a
 * shared object and loads it in a worker process; there it calls the
 * module's fm_module_init (generated below) with a versioned table of API
 * functions (`struct fm_api`), and the inline helpers in this header go
 * through that table.
 *
 *     #include <fnmesh.h>
 *
 *     FM_EXPORT(sum, "a", "b") {
 *         return fm_int64(ctx, fm_get_int(fm_arg(ctx, 0)) + fm_get_int(fm_arg(ctx, 1)));
 *     }
 *
 * Values (`fm_val *`) are opaque handles. Arguments, items of arguments,
 * values built with fm_int64/fm_string/... and results of fm_call all live
 * until the exported function returns; nothing needs freeing. Integers are
 * exact 64-bit, strings carry their length (they may hold NUL bytes) and
 * must be valid UTF-8; binary data is FM_BYTES (fm_bytes, fm_get_bytes). Return a value, or fm_error(ctx, ...) for an error
 * (the caller gets a 500 with the message); returning NULL means null. */
#ifndef FNMESH_H
#define FNMESH_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define FM_API_VERSION 2 /* 2: bytes (get_bytes, make_bytes) */

typedef struct fm_val fm_val; /* a value: opaque */
typedef struct fm_ctx fm_ctx; /* the running call: opaque */

/* Value types (fm_type). */
enum { FM_NULL = 0, FM_BOOL, FM_INT, FM_DOUBLE, FM_STRING, FM_ARRAY, FM_MAP, FM_BYTES };
/* Log levels (fm_log). */
enum { FM_DEBUG = 0, FM_INFO = 1, FM_WARN = 2, FM_ERROR = 3 };

/* The table of API functions the node hands to the module. Members are only
 * ever appended; `version` is the node's FM_API_VERSION and `size` its
 * sizeof(struct fm_api). */
struct fm_api {
    int version;
    size_t size;
    /* arguments: fm_arg never returns NULL (a missing argument is null) */
    size_t (*argc)(fm_ctx *ctx);
    fm_val *(*arg)(fm_ctx *ctx, size_t i);
    /* reading values */
    int (*type)(const fm_val *v);
    int64_t (*get_int)(const fm_val *v);    /* doubles truncated, others 0 */
    double (*get_double)(const fm_val *v);  /* integers converted, others 0 */
    bool (*get_bool)(const fm_val *v);      /* false unless true */
    const char *(*get_string)(const fm_val *v, size_t *len); /* NULL unless a string */
    size_t (*len)(const fm_val *v);         /* items of an array/map, bytes of a string/bytes */
    fm_val *(*item)(const fm_val *arr, size_t i);           /* NULL past the end */
    fm_val *(*get)(const fm_val *map, const char *key);     /* NULL if absent */
    const char *(*key_at)(const fm_val *map, size_t i, fm_val **value); /* iteration */
    /* building values (NULL for a NaN/infinite double or invalid UTF-8) */
    fm_val *(*make_null)(fm_ctx *ctx);
    fm_val *(*make_bool)(fm_ctx *ctx, bool b);
    fm_val *(*make_int)(fm_ctx *ctx, int64_t i);
    fm_val *(*make_double)(fm_ctx *ctx, double d);
    fm_val *(*make_string)(fm_ctx *ctx, const char *s, size_t len);
    fm_val *(*make_array)(fm_ctx *ctx);
    fm_val *(*make_map)(fm_ctx *ctx);
    int (*push)(fm_val *arr, fm_val *v);                     /* 0 or -1 */
    int (*set)(fm_val *map, const char *key, fm_val *v);     /* 0 or -1 */
    /* errors, logs, the mesh */
    fm_val *(*error)(fm_ctx *ctx, const char *message); /* returns NULL */
    void (*log)(fm_ctx *ctx, int level, const char *message);
    /* Calls "deployment/function"; NULL on error (see call_error). */
    fm_val *(*call)(fm_ctx *ctx, const char *target, size_t argc, fm_val *const *argv);
    /* Message of the last failed call (and its code, e.g. "not_found"). */
    const char *(*call_error)(fm_ctx *ctx, const char **code);
    /* version 2: bytes. The data of a bytes value (NULL unless FM_BYTES),
     * valid until the function returns; a bytes value copied from p[0..len). */
    const void *(*get_bytes)(fm_ctx *ctx, const fm_val *v, size_t *len);
    fm_val *(*make_bytes)(fm_ctx *ctx, const void *p, size_t len);
};

typedef fm_val *(*fm_fn)(fm_ctx *ctx);

/* One export, as FM_EXPORT records it. params[0] is NULL; the names follow. */
struct fm_export_desc {
    const char *name;
    fm_fn fn;
    const char *const *params;
    size_t nparams;
};

#ifndef FM_SDK_NO_HELPERS /* the node itself only wants the types */

/* The module side: FM_EXPORT puts descriptors in the "fm_exports" section;
 * the linker delimits it with __start_/__stop_ symbols. */
extern const struct fm_export_desc __start_fm_exports[] __attribute__((weak, visibility("hidden")));
extern const struct fm_export_desc __stop_fm_exports[] __attribute__((weak, visibility("hidden")));

static const struct fm_api *fm__api;

/* Called by the worker right after loading: takes the API table, returns
 * the exports (0), or -1 when the node's API is older than this header. */
__attribute__((weak, visibility("default"))) int fm_module_init(
    const struct fm_api *api, const struct fm_export_desc **exports, size_t *n);
__attribute__((weak, visibility("default"))) int fm_module_init(
    const struct fm_api *api, const struct fm_export_desc **exports, size_t *n) {
    if (!api || api->version < FM_API_VERSION) return -1;
    fm__api = api;
    *exports = __start_fm_exports;
    *n = __start_fm_exports ? (size_t)(__stop_fm_exports - __start_fm_exports) : 0;
    return 0;
}

/* FM_EXPORT(name, "param", ...) { body using ctx } defines an exported
 * function `name` whose parameters are named by the string arguments. */
#define FM_EXPORT(fname, ...)                                                                  \
    static fm_val *fname(fm_ctx *ctx __attribute__((unused)));                                 \
    static const char *const fm__params_##fname[] = {NULL, __VA_ARGS__};                       \
    static const struct fm_export_desc fm__desc_##fname                                        \
        __attribute__((used, section("fm_exports"), aligned(sizeof(void *)))) = {             \
            #fname, fname, fm__params_##fname,                                                 \
            sizeof(fm__params_##fname) / sizeof(fm__params_##fname[0]) - 1};                  \
    static fm_val *fname(fm_ctx *ctx __attribute__((unused)))

static inline size_t fm_argc(fm_ctx *ctx) { return fm__api->argc(ctx); }
static inline fm_val *fm_arg(fm_ctx *ctx, size_t i) { return fm__api->arg(ctx, i); }
static inline int fm_type(const fm_val *v) { return fm__api->type(v); }
static inline int64_t fm_get_int(const fm_val *v) { return fm__api->get_int(v); }
static inline double fm_get_double(const fm_val *v) { return fm__api->get_double(v); }
static inline bool fm_get_bool(const fm_val *v) { return fm__api->get_bool(v); }
static inline const char *fm_get_string(const fm_val *v, size_t *len) {
    return fm__api->get_string(v, len);
}
static inline size_t fm_len(const fm_val *v) { return fm__api->len(v); }
static inline fm_val *fm_item(const fm_val *a, size_t i) { return fm__api->item(a, i); }
static inline fm_val *fm_get(const fm_val *m, const char *key) { return fm__api->get(m, key); }
static inline const char *fm_key_at(const fm_val *m, size_t i, fm_val **value) {
    return fm__api->key_at(m, i, value);
}
static inline fm_val *fm_null(fm_ctx *ctx) { return fm__api->make_null(ctx); }
static inline fm_val *fm_bool(fm_ctx *ctx, bool b) { return fm__api->make_bool(ctx, b); }
static inline fm_val *fm_int64(fm_ctx *ctx, int64_t i) { return fm__api->make_int(ctx, i); }
static inline fm_val *fm_double(fm_ctx *ctx, double d) { return fm__api->make_double(ctx, d); }
static inline fm_val *fm_string(fm_ctx *ctx, const char *s, size_t len) {
    return fm__api->make_string(ctx, s, len);
}
static inline fm_val *fm_cstring(fm_ctx *ctx, const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return fm__api->make_string(ctx, s, n);
}
static inline const void *fm_get_bytes(fm_ctx *ctx, const fm_val *v, size_t *len) {
    return fm__api->get_bytes(ctx, v, len);
}
static inline fm_val *fm_bytes(fm_ctx *ctx, const void *p, size_t len) {
    return fm__api->make_bytes(ctx, p, len);
}
static inline fm_val *fm_array(fm_ctx *ctx) { return fm__api->make_array(ctx); }
static inline fm_val *fm_map(fm_ctx *ctx) { return fm__api->make_map(ctx); }
static inline int fm_push(fm_val *a, fm_val *v) { return fm__api->push(a, v); }
static inline int fm_set(fm_val *m, const char *key, fm_val *v) { return fm__api->set(m, key, v); }

/* fm_error(ctx, "printf format", ...): fails the call; returns NULL. */
static inline fm_val *fm_error(fm_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline fm_val *fm_error(fm_ctx *ctx, const char *fmt, ...) {
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return fm__api->error(ctx, buf);
}

/* fm_log(ctx, FM_INFO, "printf format", ...): a line in the node's log. */
static inline void fm_log(fm_ctx *ctx, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void fm_log(fm_ctx *ctx, int level, const char *fmt, ...) {
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    fm__api->log(ctx, level, buf);
}

/* fm_call(ctx, "dep/fn", arg, ...): calls another function of the mesh and
 * waits; NULL on error, with the message in fm_call_error(ctx, &code). */
#define fm_call(ctx, target, ...)                                                               \
    fm__api->call((ctx), (target),                                                              \
                  sizeof((fm_val *[]){NULL, __VA_ARGS__}) / sizeof(fm_val *) - 1,               \
                  (fm_val *[]){NULL, __VA_ARGS__} + 1)
static inline const char *fm_call_error(fm_ctx *ctx, const char **code) {
    return fm__api->call_error(ctx, code);
}

#endif /* FM_SDK_NO_HELPERS */
#endif
