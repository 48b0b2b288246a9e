/* js.c - the JavaScript runtime on JavaScriptCore's C API.
 *
 * Deploy: esbuild (Debian package) bundles the entry files, with their
 * relative imports and pure-JS node_modules packages, into one classic
 * script (JSC cannot evaluate ES modules), so module syntax and CommonJS are
 * both accepted and syntax errors come back as file:line:column.
 *
 * Run: one JSContextGroup per executor thread (two threads sharing a group
 * would be serialised by its lock); an instance is a global context in that
 * group with the prelude (prelude.js) and the bundle evaluated, and the
 * exported function objects kept protected. Deadlines: JSC's watchdog
 * (thread CPU time, re-armed every tick) terminates running code once the
 * call's wall-clock deadline passes; async calls waiting on timers expire
 * from poll(). What cannot be stopped in-process (an endless microtask
 * chain, a catastrophic regex) is documented in docs/runtimes.md.
 *
 * Everything here runs on the owning executor thread, except compile(). */
#include <JavaScriptCore/JavaScript.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/proc.h"
#include "core/util.h"
#include "exec/exec.h"
#include "metrics/logs.h"
#include "registry/registry.h"
#include "runtime/runtime.h"
#include "runtime/js/sourcemap.h"

extern char **environ;

/* Exported by libjavascriptcoregtk but declared only in WebKit's private
 * JSContextRefPrivate.h, which Debian does not ship. */
typedef bool (*JSShouldTerminateCallback)(JSContextRef ctx, void *context);
void JSContextGroupSetExecutionTimeLimit(JSContextGroupRef group, double limit,
                                         JSShouldTerminateCallback callback, void *context);
/* Private too (JSBasePrivate.h): an object with the VM's heapSize (bytes,
 * out-of-cell memory such as array buffers and long strings included),
 * heapCapacity, objectCount, ... Its cost grows with the number of objects
 * (it counts them by type), so it is asked only to confirm a suspicion. */
JSObjectRef JSGetMemoryUsageStatistics(JSContextRef ctx);
/* GLib API of the same library (jsc/jsc-options.h, gboolean = int). */
int jsc_options_set_boolean(const char *option, int value);
extern const char fm_js_prelude[]; /* prelude.js, NUL-terminated (embedded below) */

__asm__(".section .rodata\n"
        ".global fm_js_prelude\n"
        ".type fm_js_prelude, @object\n"
        "fm_js_prelude:\n"
        ".incbin \"" FM_JS_PRELUDE_PATH "\"\n"
        ".byte 0\n"
        ".previous\n");

#define ENTRY_NAME ".fnmesh-entry.cjs"
#define BUILD_TIMEOUT_MS 60000
/* The watchdog budget is the call's timeout in thread CPU time (CPU time
 * never runs ahead of wall time, so the budget runs out at or after the
 * wall-clock deadline). It is changed only when the timeout differs from
 * the previous call's: a short periodic tick makes JSC stop the thread with
 * signals at every tick, which costs milliseconds of latency under load. */
#define DEFAULT_LIMIT_US 10000000

/* ------------------------------------------------- primitives, lock-free
 *
 * On 64-bit platforms JavaScriptCore's C API hands out a JSValueRef that is
 * the engine's own encoded value (toRef/toJS in its APICast.h are bit
 * casts): numbers are NaN-boxed (an int32 under the tag 0xfffe<<48, a
 * double offset by 2^49), null, undefined, false and true are the
 * constants 0x2, 0xa, 0x6 and 0x7, and anything else is a cell pointer or
 * an encoding left to the API. Reading and making those primitives from
 * the bits saves an API call each, and every API call takes the VM's whole
 * lock (inside a native function, where JSC has dropped it: 30-50 ns). The
 * encoding is checked against the API with the first context a process
 * makes (fast_values_check); when anything differs, the API is used. */
#define V_NUMBER_TAG 0xfffe000000000000ull
#define V_DOUBLE_OFFSET 0x0002000000000000ull
#define V_NULL 0x2ull
#define V_UNDEFINED 0xaull
#define V_FALSE 0x6ull
#define V_TRUE 0x7ull
#define V_PURE_NAN 0x7ff8000000000000ull

static atomic_int fast_state; /* 0: not checked, 1: the bits are used, 2: the API is */

static inline bool fast_values(void) {
    return atomic_load_explicit(&fast_state, memory_order_relaxed) == 1;
}

static inline uint64_t vbits(JSValueRef v) {
    uint64_t b = 0;
    memcpy(&b, &v, sizeof(v) < sizeof(b) ? sizeof(v) : sizeof(b));
    return b;
}

static inline JSValueRef vfrom(uint64_t b) {
    JSValueRef v;
    memcpy(&v, &b, sizeof(v));
    return v;
}

/* The encoding of d, as JSValueMakeNumber makes it (int32 when exact, -0 excepted). */
static inline uint64_t vencode_number(double d) {
    if (d >= -2147483648.0 && d <= 2147483647.0 && d == (double)(int32_t)d && !(d == 0 && signbit(d)))
        return V_NUMBER_TAG | (uint32_t)(int32_t)d;
    uint64_t b;
    memcpy(&b, &d, sizeof(b));
    if (isnan(d)) b = V_PURE_NAN;
    return b + V_DOUBLE_OFFSET;
}

static inline double vdecode_number(uint64_t b) {
    if ((b & V_NUMBER_TAG) == V_NUMBER_TAG) return (double)(int32_t)(uint32_t)b;
    b -= V_DOUBLE_OFFSET;
    double d;
    memcpy(&d, &b, sizeof(d));
    return d;
}

/* JSValueGetType, without the lock for numbers, booleans, null and undefined. */
static inline JSType vtype(JSContextRef ctx, JSValueRef v) {
    if (fast_values()) {
        uint64_t b = vbits(v);
        if (b & V_NUMBER_TAG) return kJSTypeNumber;
        if (b == V_NULL) return kJSTypeNull;
        if (b == V_UNDEFINED) return kJSTypeUndefined;
        if (b == V_FALSE || b == V_TRUE) return kJSTypeBoolean;
    }
    return JSValueGetType(ctx, v);
}

/* JSValueToNumber of a value vtype called a number. */
static inline double vnumber(JSContextRef ctx, JSValueRef v) {
    return fast_values() ? vdecode_number(vbits(v)) : JSValueToNumber(ctx, v, NULL);
}

/* JSValueToBoolean of a value vtype called a boolean. */
static inline bool vboolean(JSContextRef ctx, JSValueRef v) {
    return fast_values() ? vbits(v) == V_TRUE : JSValueToBoolean(ctx, v);
}

static inline JSValueRef vmake_number(JSContextRef ctx, double d) {
    return fast_values() ? vfrom(vencode_number(d)) : JSValueMakeNumber(ctx, d);
}

static inline JSValueRef vmake_null(JSContextRef ctx) {
    return fast_values() ? vfrom(V_NULL) : JSValueMakeNull(ctx);
}

static inline JSValueRef vmake_undefined(JSContextRef ctx) {
    return fast_values() ? vfrom(V_UNDEFINED) : JSValueMakeUndefined(ctx);
}

static inline JSValueRef vmake_boolean(JSContextRef ctx, bool b) {
    return fast_values() ? vfrom(b ? V_TRUE : V_FALSE) : JSValueMakeBoolean(ctx, b);
}

/* Does this library encode values as above? Compared both ways with the
 * API, in ctx. */
static bool fast_values_check(JSContextRef ctx) {
    if (sizeof(JSValueRef) != sizeof(uint64_t)) return false;
    static const double nums[] = {0.0, -0.0, 1.0, -1.0, 2147483647.0, -2147483648.0, 2147483648.0,
                                  -2147483649.0, 0.5, -1.5, 9007199254740993.0, 1e300, -1e-300,
                                  5e-324, INFINITY, -INFINITY, NAN};
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
        double d = nums[i];
        JSValueRef api = JSValueMakeNumber(ctx, d);
        uint64_t b = vbits(api);
        if (b != vencode_number(d) || !(b & V_NUMBER_TAG)) return false;
        double back = vdecode_number(b);
        if (isnan(d) ? !isnan(back) : memcmp(&back, &d, sizeof(d)) != 0) return false;
        JSValueRef mine = vfrom(vencode_number(d));
        if (JSValueGetType(ctx, mine) != kJSTypeNumber) return false;
        double via = JSValueToNumber(ctx, mine, NULL);
        if (isnan(d) ? !isnan(via) : memcmp(&via, &d, sizeof(d)) != 0) return false;
    }
    if (vbits(JSValueMakeNull(ctx)) != V_NULL || vbits(JSValueMakeUndefined(ctx)) != V_UNDEFINED ||
        vbits(JSValueMakeBoolean(ctx, false)) != V_FALSE ||
        vbits(JSValueMakeBoolean(ctx, true)) != V_TRUE)
        return false;
    if (JSValueGetType(ctx, vfrom(V_NULL)) != kJSTypeNull ||
        JSValueGetType(ctx, vfrom(V_UNDEFINED)) != kJSTypeUndefined ||
        !JSValueToBoolean(ctx, vfrom(V_TRUE)) || JSValueToBoolean(ctx, vfrom(V_FALSE)))
        return false;
    /* a string and an object: neither may look like a primitive */
    JSStringRef s = JSStringCreateWithUTF8CString("x");
    JSValueRef str = JSValueMakeString(ctx, s);
    JSStringRelease(s);
    JSValueRef obj = JSObjectMake(ctx, NULL, NULL);
    uint64_t sb = vbits(str), ob = vbits(obj);
    return !(sb & V_NUMBER_TAG) && !(ob & V_NUMBER_TAG) && sb > V_TRUE && ob > V_TRUE;
}

static void fast_values_init(JSContextRef ctx) {
    if (atomic_load_explicit(&fast_state, memory_order_relaxed) != 0) return;
    bool api = getenv("FNMESH_JS_API_VALUES") != NULL, ok = !api && fast_values_check(ctx);
    if (!api && !ok)
        fm_log(FM_LOG_WARN, NULL, "JavaScriptCore's value encoding is not the one expected: "
                                  "numbers and booleans go through its API (slower)");
    atomic_store_explicit(&fast_state, ok ? 1 : 2, memory_order_relaxed);
}

/* ---------------------------------------------------------------- compile */

static const char *const js_extensions[] = {".js", ".mjs", ".cjs", NULL};

/* Does the bundle's text name a binary type? Its code can then make bytes
 * without the host (a name built at run time, globalThis["Uint" + "8Array"],
 * is not seen: runtimes/js.md). Sixteen scans of the text (about 3 ms a
 * MiB): done at deploy, and its answer kept at the script's end (BYTES_MARK). */
static bool names_bytes(const char *src, size_t len) {
    static const char *const names[] = {"ArrayBuffer", "DataView", "Int8Array", "Uint8Array",
                                        "Uint8ClampedArray", "Int16Array", "Uint16Array",
                                        "Int32Array", "Uint32Array", "Float16Array",
                                        "Float32Array", "Float64Array", "BigInt64Array",
                                        "BigUint64Array", "WebAssembly", "TypedArray"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (memmem(src, len, names[i], strlen(names[i]))) return true;
    return false;
}

/* The last line of a compiled script: "0" or "1", names_bytes of the bundle.
 * (Scripts compiled before it was added have none: they are scanned.) */
#define BYTES_MARK "\n//# fnmesh-bytes="
#define BYTES_MARK_LEN (sizeof(BYTES_MARK) - 1)

static bool script_names_bytes(const char *script, size_t len) {
    const char *mark = len >= BYTES_MARK_LEN + 2 ? script + len - BYTES_MARK_LEN - 2 : NULL;
    if (mark && memcmp(mark, BYTES_MARK, BYTES_MARK_LEN) == 0 && script[len - 1] == '\n')
        return script[len - 2] == '1';
    return names_bytes(script, len);
}

/* Turns esbuild's first error into "file:line:col: message" (1-based column). */
static void esbuild_error(const char *out, fm_err *err) {
    const char *e = strstr(out, "[ERROR] ");
    if (!e) {
        fm_err_set(err, FM_INVALID_BUNDLE, "build failed: %.900s", out);
        return;
    }
    e += 8;
    const char *eol = strchr(e, '\n');
    int mlen = (int)(eol ? eol - e : (ptrdiff_t)strlen(e));
    const char *p = eol;
    while (p && *p) {
        p++;
        const char *q = p;
        while (*q == ' ') q++;
        const char *end = strchr(q, '\n');
        size_t len = end ? (size_t)(end - q) : strlen(q);
        if (len > 1 && q[len - 1] == ':') {
            /* "file:line:col:" */
            char loc[512];
            snprintf(loc, sizeof(loc), "%.*s", (int)(len - 1), q);
            char *c2 = strrchr(loc, ':');
            if (c2) {
                *c2 = '\0';
                char *c1 = strrchr(loc, ':');
                if (c1) {
                    long col = strtol(c2 + 1, NULL, 10) + 1;
                    fm_err_set(err, FM_INVALID_BUNDLE, "%s:%ld: %.*s", loc, col, mlen, e);
                    fm_err_detail(err, "compiler_output", fm_json_str(out));
                    return;
                }
            }
        }
        if (len > 0 && q[0] != ' ') break;
        p = end;
    }
    fm_err_set(err, FM_INVALID_BUNDLE, "%.*s", mlen, e);
    fm_err_detail(err, "compiler_output", fm_json_str(out));
}

static fm_status js_compile(const fm_bundle *b, const char *const *entries, size_t n,
                            char **artifact, size_t *artifact_len, fm_err *err) {
    char dir[] = "/tmp/fnmesh-build-XXXXXX";
    if (!mkdtemp(dir)) return fm_err_set(err, FM_INTERNAL, "mkdtemp: %s", strerror(errno));
    char src[sizeof(dir) + 8], path[4096];
    snprintf(src, sizeof(src), "%s/src", dir);
    fm_status st = FM_OK;
    char *out = NULL;
    if (mkdir(src, 0700) != 0) {
        st = fm_err_set(err, FM_INTERNAL, "mkdir: %s", strerror(errno));
        goto done;
    }
    if ((st = fm_bundle_write(b, src, err)) != FM_OK) goto done;

    /* The synthetic entry requires every entry file, keyed by its path
     * (JSON-quoted, so any name is safe). */
    size_t cap = 64;
    char *entry = malloc(cap);
    size_t len = (size_t)snprintf(entry, cap, "module.exports = {\n");
    for (size_t i = 0; i < n; i++) {
        json_t *s = fm_json_str(entries[i]);
        char *q = json_dumps(s, JSON_ENCODE_ANY);
        json_decref(s);
        size_t need = len + strlen(q) * 2 + 64;
        if (need > cap) entry = realloc(entry, cap = need * 2);
        len += (size_t)sprintf(entry + len, "  %s: require(\"./\" + %s),\n", q, q);
        free(q);
    }
    len += (size_t)sprintf(entry + len, "};\n");
    snprintf(path, sizeof(path), "%s/" ENTRY_NAME, src);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, entry, len) != (ssize_t)len) {
        st = fm_err_set(err, FM_INTERNAL, "cannot write build entry: %s", strerror(errno));
        if (fd >= 0) close(fd);
        free(entry);
        goto done;
    }
    close(fd);
    free(entry);

    char errpath[4096], outfile[4096];
    snprintf(errpath, sizeof(errpath), "%s/esbuild.err", dir);
    snprintf(outfile, sizeof(outfile), "--outfile=%s/out.js", dir);
    const char *esbuild = getenv("FNMESH_ESBUILD");
    if (!esbuild || !*esbuild) esbuild = "esbuild";
    char *argv[] = {(char *)esbuild,
                    ENTRY_NAME,
                    "--bundle",
                    "--format=iife",
                    "--global-name=__fm_bundle",
                    "--platform=neutral",
                    "--main-fields=module,main",
                    "--log-level=error",
                    "--color=false",
                    "--charset=utf8",
                    "--external:fnmesh:*",
                    "--sourcemap=external",
                    "--sources-content=false",
                    outfile,
                    NULL};
    int status = 0;
    st = fm_run_tool(argv, src, errpath, BUILD_TIMEOUT_MS, &status, err);
    if (st == FM_TIMEOUT) {
        st = fm_err_set(err, FM_INVALID_BUNDLE, "bundling took longer than %d s",
                        BUILD_TIMEOUT_MS / 1000);
        goto done;
    }
    if (st != FM_OK) {
        st = fm_err_set(err, FM_INTERNAL, "%s (is the esbuild package installed?)", err->msg);
        goto done;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char *msg = fm_read_file(errpath, NULL);
        esbuild_error(msg ? msg : "esbuild failed", err);
        free(msg);
        st = FM_INVALID_BUNDLE;
        goto done;
    }
    /* artifact = script, NUL, source map */
    size_t slen = 0, mlen = 0;
    snprintf(path, sizeof(path), "%s/out.js", dir);
    out = fm_read_file(path, &slen);
    snprintf(path, sizeof(path), "%s/out.js.map", dir);
    char *map = fm_read_file(path, &mlen);
    if (!out || memchr(out, '\0', slen)) {
        free(out);
        free(map);
        st = fm_err_set(err, FM_INTERNAL, "esbuild produced no usable output");
        goto done;
    }
    char mark[BYTES_MARK_LEN + 3]; /* after the last line: no mapping moves */
    snprintf(mark, sizeof(mark), "%s%c\n", BYTES_MARK, names_bytes(out, slen) ? '1' : '0');
    size_t marklen = BYTES_MARK_LEN + 2;
    out = realloc(out, slen + marklen + 1 + mlen + 1);
    memcpy(out + slen, mark, marklen);
    slen += marklen;
    out[slen] = '\0'; /* between the script and its map */
    if (map) memcpy(out + slen + 1, map, mlen);
    out[slen + 1 + mlen] = '\0';
    free(map);
    *artifact = out;
    *artifact_len = slen + 1 + mlen;
done:
    fm_rmtree(dir);
    return st;
}

/* ---------------------------------------------------------------- run time */

typedef struct js_instance js_instance;

typedef struct js_timer {
    uint32_t id;
    int64_t due_us, interval_us, deadline_us;
    js_instance *inst;
    JSObjectRef cb; /* protected */
} js_timer;

typedef struct js_thread {
    JSContextGroupRef group;
    int64_t limit_us;    /* watchdog budget currently set on the group */
    int64_t deadline_us; /* of the code running now */
    bool fired;          /* the watchdog terminated code */
    size_t rss_cap;      /* process isolation with memory_mb: the worker's RSS at most (0 = none) */
    size_t heap_cap;     /* in-process with memory_mb: the running instance's cap (0 = none) */
    size_t rss_base;     /* the process's RSS when the watchdog first looked in this entry
                            into JavaScript (0 = not yet) */
    bool over_memory;    /* the watchdog terminated code for passing its cap */
    fm_job *cur_job;
    js_instance *cur_inst;
    fm_job *pending; /* async calls awaiting settlement, linked by ->next */
    struct mesh_rec *mesh; /* outgoing fnmesh.call()s awaiting their callee */
    uint64_t next_async;
    js_timer *timers;
    size_t ntimers, timers_cap;
    uint32_t next_timer;
    JSStringRef s_then, s_bundle, s_length;
    struct js_span *spans; /* spans of direct calls whose promise has not settled */
    /* js_run_batch: calls running nested in one VM entry */
    bool batching, batch_stop;
    uint64_t batch_async_id;  /* the async call that ended the batch (0: none) */
    js_instance *batch_inst;  /* the instance of the batch's last call */
    int64_t batch_deadline_us;
    void (*batch_fn)(void *ud);
    void *batch_ud;
    size_t nspans;
    uint64_t next_span;
    /* A context made ahead, with the prelude evaluated, for the next
     * instance (a cold start then only evaluates the bundle); made again
     * by js_poll after each use. Owned; NULL until this thread made an
     * instance. */
    struct js_instance *spare;
    bool want_spare;
    /* A context of the prelude alone, made at the first deploy on this
     * thread, where exported functions' parameter names are read (js_params).
     * Owned; NULL until then. */
    struct js_instance *util;
    /* A string fnmesh.call / callSync was given as its target twice in a
     * row, with its UTF-8 text: a loop calling one function passes the same
     * string cell every time, which then needs no conversion. Protected
     * (kept alive, so no other string can take its address) until another
     * one replaces it; the group's end frees it. `target_seen` is the last
     * target converted, only compared (never used): a string built anew
     * for each call is never kept, and costs no more than its conversion. */
    JSValueRef target_val, target_seen;
    size_t target_len;
    char target[512];
} js_thread;

/* The span of a direct call to a JavaScript callee that returned a
 * promise: it ends when the promise settles (__fm_native_span_end). */
typedef struct js_span {
    struct js_span *next;
    uint64_t id;
    fm_span span;
} js_span;
#define JS_MAX_OPEN_SPANS 1024 /* more (promises that never settle): end at the return */

#define BUNDLE_URL "fnmesh:bundle"

extern const fm_runtime fm_runtime_js;

struct js_instance {
    JSGlobalContextRef ctx;
    const char *map_json; /* borrowed from the version's artifact; may be NULL */
    size_t map_len;
    fm_sourcemap *map;    /* decoded on the first error */
    js_thread *ts;
    char *deployment;
    size_t mem_cap; /* memory_mb in bytes, in-process only (0 = none) */
    size_t nfns;
    JSObjectRef *fns; /* protected */
    JSObjectRef await_fn, errinfo_fn;
    JSObjectRef batch_fn; /* __fm_native_batch, made at the first batch (protected) */
    unsigned char *batch_ok; /* per export, once asked: 1 may run in a batch, 2 may not */
    JSObjectRef copy_fn, adopt_fn, mkerror_fn; /* prelude helpers, protected */
};

/* The state of the code running now on this executor thread, for the
 * native hooks (which get no user data). Set on every entry into JavaScript
 * (enter, instance creation), not once per thread: the template runtime
 * runs this run-time half with its own state on the same threads. */
static __thread js_thread *tls_ts;

/* With a memory cap the watchdog also looks at memory this often (of CPU
 * time): JavaScriptCore has no heap limit of its own. Polling traps (below)
 * keep this tick cheap for code that never runs that long. */
#define MEMORY_CHECK_US 5000

/* In-process, the heap is the thread's context group's, shared by every
 * instance on the thread, and counting it is costly; the process's RSS is
 * cheap but shared by every thread. So: once the node's RSS has grown by
 * the cap since the watchdog first looked during this entry into
 * JavaScript, the group's heap is counted, and above the cap the code is
 * stopped. Below it (the growth was elsewhere) the RSS seen becomes the new
 * base. */
static bool over_heap_cap(JSContextRef ctx, js_thread *ts) {
    size_t rss = fm_process_rss();
    if (!ts->rss_base || rss < ts->rss_base) {
        ts->rss_base = rss;
        return false;
    }
    if (rss - ts->rss_base < ts->heap_cap) return false;
    JSObjectRef st = JSGetMemoryUsageStatistics(ctx);
    JSStringRef k = JSStringCreateWithUTF8CString("heapSize");
    double heap = st ? JSValueToNumber(ctx, JSObjectGetProperty(ctx, st, k, NULL), NULL) : 0;
    JSStringRelease(k);
    if (heap >= (double)ts->heap_cap) return true;
    ts->rss_base = rss;
    return false;
}

static bool has_memory_cap(const js_thread *ts) { return ts->rss_cap || ts->heap_cap; }

static bool watchdog(JSContextRef ctx, void *ud) {
    js_thread *ts = ud;
    if ((ts->rss_cap && fm_process_rss() > ts->rss_cap) ||
        (ts->heap_cap && over_heap_cap(ctx, ts))) {
        ts->fired = ts->over_memory = true;
        return true;
    }
    if (fm_mono_us() >= ts->deadline_us) {
        ts->fired = true;
        return true;
    }
    int64_t left = ts->deadline_us - fm_mono_us();
    if (has_memory_cap(ts) && left > MEMORY_CHECK_US) left = MEMORY_CHECK_US;
    ts->limit_us = left < 1000 ? 1000 : left;
    JSContextGroupSetExecutionTimeLimit(ts->group, (double)ts->limit_us / 1e6, watchdog, ts);
    return false;
}

static void set_limit(js_thread *ts, int64_t limit_us) {
    if (has_memory_cap(ts) && limit_us > MEMORY_CHECK_US) limit_us = MEMORY_CHECK_US;
    if (limit_us < 1000) limit_us = 1000;
    if (limit_us == ts->limit_us) return;
    ts->limit_us = limit_us;
    JSContextGroupSetExecutionTimeLimit(ts->group, (double)limit_us / 1e6, watchdog, ts);
}

/* Before the first VM: JIT code polls for the watchdog's trap instead of
 * being stopped by a signal and having its optimised code thrown away,
 * which made a short watchdog tick cost milliseconds under load. */
static void js_options_once(void) { jsc_options_set_boolean("usePollingTraps", 1); }

static void *js_thread_init(int index) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, js_options_once);
    js_thread *ts = calloc(1, sizeof(*ts));
    ts->group = JSContextGroupCreate();
    ts->deadline_us = INT64_MAX;
    set_limit(ts, DEFAULT_LIMIT_US);
    ts->s_then = JSStringCreateWithUTF8CString("then");
    ts->s_bundle = JSStringCreateWithUTF8CString("__fm_bundle");
    ts->s_length = JSStringCreateWithUTF8CString("length");
    tls_ts = ts;
    return ts;
}

static void js_instance_destroy(void *tsp, void *p);

static void js_thread_dispose(void *p) {
    js_thread *ts = p;
    js_instance_destroy(ts, ts->spare);
    js_instance_destroy(ts, ts->util);
    JSStringRelease(ts->s_then);
    JSStringRelease(ts->s_bundle);
    JSStringRelease(ts->s_length);
    free(ts->timers);
    while (ts->spans) {
        js_span *s = ts->spans;
        ts->spans = s->next;
        free(s);
    }
    JSContextGroupRelease(ts->group);
    free(ts);
}

/* UTF-8 (valid, may contain NUL) to a JS string. */
static JSStringRef js_str(const char *s, size_t len) {
    if (strlen(s) == len) return JSStringCreateWithUTF8CString(s);
    JSChar *u = malloc((len + 1) * sizeof(JSChar));
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        uint32_t cp;
        int k;
        if (c < 0x80) cp = c, k = 1;
        else if (c < 0xe0) cp = c & 0x1f, k = 2;
        else if (c < 0xf0) cp = c & 0x0f, k = 3;
        else cp = c & 0x07, k = 4;
        for (int j = 1; j < k && i + (size_t)j < len; j++) cp = (cp << 6) | (s[i + j] & 0x3f);
        i += (size_t)k;
        if (cp >= 0x10000) {
            cp -= 0x10000;
            u[o++] = (JSChar)(0xd800 + (cp >> 10));
            u[o++] = (JSChar)(0xdc00 + (cp & 0x3ff));
        } else {
            u[o++] = (JSChar)cp;
        }
    }
    JSStringRef r = JSStringCreateWithCharacters(u, o);
    free(u);
    return r;
}

/* JS string to owned UTF-8. */
static char *js_cstr(JSStringRef s, size_t *len_out) {
    size_t max = JSStringGetMaximumUTF8CStringSize(s);
    char *buf = malloc(max);
    size_t n = JSStringGetUTF8CString(s, buf, max);
    if (len_out) *len_out = n ? n - 1 : 0;
    return buf;
}

static char *js_value_cstr(JSContextRef ctx, JSValueRef v) {
    JSStringRef s = JSValueToStringCopy(ctx, v, NULL);
    if (!s) return strdup("");
    char *r = js_cstr(s, NULL);
    JSStringRelease(s);
    return r;
}

/* Gives the typed arrays of ctx's realm their toJSON (the prelude's
 * __fm_bytes, done once per realm) before bytes are made there. */
static JSObjectRef get_fn(JSContextRef ctx, const char *name);

static void ensure_bytes(JSContextRef ctx) {
    JSObjectRef f = get_fn(ctx, "__fm_bytes");
    if (f) JSObjectCallAsFunction(ctx, f, NULL, 0, NULL, NULL);
}

/* An object with j's keys, in j's order, as own properties (null): what
 * JSON.parse makes. Setting "__proto__" on an object from JSObjectMake
 * would call Object.prototype's setter and change its prototype instead;
 * on this one it sets the own property. NULL if it cannot be made. */
static JSObjectRef proto_shell(JSContextRef ctx, const json_t *j) {
    json_t *shell = json_object();
    const char *key;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach((json_t *)j, key, klen, v) json_object_setn_nocheck(shell, key, klen, json_null());
    char *text = fm_json_dump(shell, NULL);
    json_decref(shell);
    JSStringRef s = JSStringCreateWithUTF8CString(text);
    free(text);
    JSValueRef o = JSValueMakeFromJSONString(ctx, s);
    JSStringRelease(s);
    return o && JSValueIsObject(ctx, o) ? (JSObjectRef)o : NULL;
}

static JSValueRef json_to_js(JSContextRef ctx, const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_NULL:
        return vmake_null(ctx);
    case JSON_TRUE:
        return vmake_boolean(ctx, true);
    case JSON_FALSE:
        return vmake_boolean(ctx, false);
    case JSON_INTEGER:
        return vmake_number(ctx, (double)json_integer_value(j));
    case JSON_REAL:
        return vmake_number(ctx, json_real_value(j));
    case JSON_STRING: {
        JSStringRef s = js_str(json_string_value(j), json_string_length(j));
        JSValueRef v = JSValueMakeString(ctx, s);
        JSStringRelease(s);
        return v;
    }
    case JSON_ARRAY: {
        /* Elements go into the array as they are made: a value held only in
         * heap memory is invisible to JSC's conservative garbage collector. */
        size_t n = json_array_size(j);
        JSValueRef small[16] = {0};
        if (n <= 16) {
            for (size_t i = 0; i < n; i++) small[i] = json_to_js(ctx, json_array_get(j, i));
            return JSObjectMakeArray(ctx, n, small, NULL);
        }
        JSObjectRef a = JSObjectMakeArray(ctx, 0, NULL, NULL);
        for (size_t i = 0; i < n; i++)
            JSObjectSetPropertyAtIndex(ctx, a, (unsigned)i, json_to_js(ctx, json_array_get(j, i)),
                                       NULL);
        return a;
    }
    case JSON_OBJECT: {
        size_t n = 0;
        unsigned char *bytes = fm_json_is_bytes(j) ? fm_json_bytes_decode(j, &n) : NULL;
        if (bytes) { /* bytes arrive as a Uint8Array */
            ensure_bytes(ctx);
            JSObjectRef u = JSObjectMakeTypedArray(ctx, kJSTypedArrayTypeUint8Array, n, NULL);
            void *dst = u ? JSObjectGetTypedArrayBytesPtr(ctx, u, NULL) : NULL;
            if (dst && n) memcpy(dst, bytes, n);
            free(bytes);
            if (u) return u;
        }
        const char *key;
        size_t klen;
        json_t *v;
        void *tmp;
        JSObjectRef o = NULL;
        if (json_object_get(j, "__proto__")) o = proto_shell(ctx, j);
        if (!o) o = JSObjectMake(ctx, NULL, NULL);
        json_object_keylen_foreach_safe((json_t *)j, tmp, key, klen, v) {
            JSStringRef k = js_str(key, klen);
            JSObjectSetProperty(ctx, o, k, json_to_js(ctx, v), kJSPropertyAttributeNone, NULL);
            JSStringRelease(k);
        }
        return o;
    }
    }
    return JSValueMakeUndefined(ctx);
}

/* Fills job's error from a thrown value. */
static void fail_from_exception(js_instance *inst, fm_job *job, JSValueRef exc) {
    js_thread *ts = inst->ts;
    if (ts->over_memory) {
        char msg[96];
        snprintf(msg, sizeof(msg), "memory limit exceeded (%zu MiB)",
                 (ts->rss_cap ? ts->rss_cap : ts->heap_cap) >> 20);
        fm_job_fail(job, FM_FUNCTION_ERROR, msg, "RangeError", NULL);
        return;
    }
    if (ts->fired || fm_mono_us() >= ts->deadline_us) {
        fm_job_fail_timeout(job);
        return;
    }
    JSValueRef args[1] = {exc ? exc : JSValueMakeUndefined(inst->ctx)};
    JSValueRef info = JSObjectCallAsFunction(inst->ctx, inst->errinfo_fn, NULL, 1, args, NULL);
    if (!info || !JSValueIsObject(inst->ctx, info)) {
        fm_job_fail(job, FM_FUNCTION_ERROR, "the function threw", NULL, NULL);
        return;
    }
    JSObjectRef arr = (JSObjectRef)info;
    char *name = js_value_cstr(inst->ctx, JSObjectGetPropertyAtIndex(inst->ctx, arr, 0, NULL));
    char *msg = js_value_cstr(inst->ctx, JSObjectGetPropertyAtIndex(inst->ctx, arr, 1, NULL));
    char *stack = js_value_cstr(inst->ctx, JSObjectGetPropertyAtIndex(inst->ctx, arr, 2, NULL));
    char *code = js_value_cstr(inst->ctx, JSObjectGetPropertyAtIndex(inst->ctx, arr, 3, NULL));
    fm_status st = fm_mesh_status(code); /* a called function's error keeps its status */
    free(code);
    /* frames of the host's own prelude are noise to the user */
    if (*stack) {
        char *o = stack, *line = stack;
        while (*line) {
            char *eol = strchr(line, '\n');
            size_t n = eol ? (size_t)(eol - line) : strlen(line);
            /* frames below a direct call belong to the callers (other hops) */
            if ((n == 30 && memcmp(line, "__fm_native_call@[native code]", 30) == 0) ||
                (n == 35 && memcmp(line, "__fm_native_call_sync@[native code]", 35) == 0) ||
                (n == 31 && memcmp(line, "__fm_native_batch@[native code]", 31) == 0))
                break;
            bool host = memmem(line, n, "@fnmesh:prelude", 15) != NULL ||
                        (n == 21 && memcmp(line, "Promise@[native code]", 21) == 0);
            if (!host) {
                if (o != stack) *o++ = '\n';
                memmove(o, line, n);
                o += n;
            }
            line += n + (eol ? 1 : 0);
        }
        *o = '\0';
    }
    if (*stack && inst->map_json) {
        if (!inst->map)
            inst->map = fm_sourcemap_parse(inst->map_json, inst->map_len, "src/");
        if (inst->map) {
            char *mapped = fm_sourcemap_rewrite(inst->map, stack, BUNDLE_URL);
            free(stack);
            stack = mapped;
        }
    }
    fm_job_fail(job, st, msg, name, *stack ? stack : NULL);
    free(name);
    free(msg);
    free(stack);
}

static json_t *js_to_json(JSContextRef ctx, JSValueRef v, char *why, size_t whylen);

/* JSON text (UTF-8, malloc'd, *len its length) of a value leaving
 * JavaScript: JSON.stringify (bytes as {"$bytes": base64} through the
 * prelude's toJSON). NULL with *exc set on a throw, NULL alone for
 * undefined. */
static char *js_json(JSContextRef ctx, JSValueRef v, size_t *len, JSValueRef *exc) {
    JSStringRef s = JSValueCreateJSONString(ctx, v, 0, exc);
    if (!s) return NULL;
    char *text = js_cstr(s, len);
    JSStringRelease(s);
    return text;
}

/* JSON text of a string, an integral number or a boolean, written here
 * exactly as JSON.stringify would (it sets up a holder object and a
 * builder for every value); NULL for any other value. */
static char *scalar_json(JSContextRef ctx, JSValueRef v, JSType type, size_t *len) {
    switch (type) {
    case kJSTypeString: {
        JSStringRef s = JSValueToStringCopy(ctx, v, NULL);
        if (!s) return NULL;
        char *out = fm_json_quote_utf16(JSStringGetCharactersPtr(s), JSStringGetLength(s), len);
        JSStringRelease(s);
        return out;
    }
    case kJSTypeNumber: {
        double d = vnumber(ctx, v);
        if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0) || d != (double)(int64_t)d)
            return NULL; /* fractions, NaN and infinities: JSON.stringify's own formatting */
        char *out = malloc(24);
        *len = fm_i64_to_dec((int64_t)d, out); /* -0 is written "0", as JSON.stringify does */
        out[*len] = '\0';
        return out;
    }
    case kJSTypeBoolean: {
        bool b = vboolean(ctx, v);
        *len = b ? 4 : 5;
        return strdup(b ? "true" : "false");
    }
    default: return NULL;
    }
}

/* Completes job with the value v, of JSValueGetType `type` (read by the
 * caller: every API call takes the VM's lock; not used for want_value). */
static void complete_typed(js_instance *inst, fm_job *job, JSValueRef v, JSType type) {
    if (job->want_value) { /* a mesh call: hand over a value, no JSON text */
        char why[160] = "";
        json_t *j = js_to_json(inst->ctx, v, why, sizeof(why));
        if (why[0]) {
            char msg[256];
            snprintf(msg, sizeof(msg), "the return value cannot be passed on: %s", why);
            fm_job_fail(job, FM_FUNCTION_ERROR, msg, "TypeError", NULL);
            return;
        }
        fm_job_succeed_value(job, j);
        return;
    }
    JSValueRef exc = NULL;
    size_t len;
    char *out = scalar_json(inst->ctx, v, type, &len);
    if (!out) out = js_json(inst->ctx, v, &len, &exc);
    if (!out) {
        if (exc) {
            fail_from_exception(inst, job, exc);
            if (job->error) {
                const char *m = json_string_value(json_object_get(job->error, "message"));
                char buf[512];
                snprintf(buf, sizeof(buf), "the return value cannot be serialised to JSON: %s",
                         m ? m : "");
                json_object_set_new(job->error, "message", fm_json_str(buf));
            }
            return;
        }
        fm_job_succeed(job, strdup("null"), 4);
        return;
    }
    fm_job_succeed(job, out, len);
}

static void complete_value(js_instance *inst, fm_job *job, JSValueRef v) {
    complete_typed(inst, job, v, job->want_value ? kJSTypeUndefined : vtype(inst->ctx, v));
}

/* After code was terminated during a microtask drain, JSC reports the
 * termination on the next API call: absorb it here. */
static void absorb_termination(js_instance *inst) {
    js_thread *ts = inst->ts;
    if (!ts->fired) return;
    ts->deadline_us = INT64_MAX;
    JSStringRef s = JSStringCreateWithUTF8CString("0");
    JSEvaluateScript(inst->ctx, s, NULL, NULL, 1, NULL);
    JSStringRelease(s);
    ts->fired = false;
}

static fm_job *pending_take(js_thread *ts, uint64_t id) {
    for (fm_job **pp = &ts->pending; *pp; pp = &(*pp)->next) {
        if ((*pp)->async_id == id) {
            fm_job *j = *pp;
            *pp = j->next;
            j->next = NULL;
            return j;
        }
    }
    return NULL;
}

/* ---- values out of JavaScript, for the mesh ----
 * Through JSC's own JSON.stringify (one API call, inside the engine, safe
 * against its garbage collector) and jansson: undefined and functions
 * become NULL (undefined), NaN/Infinity null, toJSON honoured; unpaired
 * surrogates become U+FFFD. `why` is set on failure (cycles, BigInt,
 * nesting beyond the JSON parser's bound). */
static json_t *js_to_json(JSContextRef ctx, JSValueRef v, char *why, size_t whylen) {
    switch (vtype(ctx, v)) { /* scalars without a trip through JSON text */
    case kJSTypeUndefined: return NULL;
    case kJSTypeNull: return json_null();
    case kJSTypeBoolean: return json_boolean(vboolean(ctx, v));
    case kJSTypeNumber: {
        double d = vnumber(ctx, v);
        if (!isfinite(d)) return json_null(); /* as JSON.stringify */
        if (d >= -9007199254740992.0 && d <= 9007199254740992.0 && d == (double)(json_int_t)d)
            return json_integer((json_int_t)d); /* -0 too, as JSON.stringify writes it */
        return json_real(d);
    }
    default: break;
    }
    JSValueRef exc = NULL;
    size_t len;
    char *text = js_json(ctx, v, &len, &exc);
    if (!text) {
        if (exc) {
            char *m = js_value_cstr(ctx, exc);
            snprintf(why, whylen, "%s", m);
            free(m);
        }
        return NULL; /* undefined */
    }
    json_t *j = fm_json_parse_value(text, len);
    free(text);
    if (!j) snprintf(why, whylen, "the value is nested too deeply (more than 2048 levels)");
    return j;
}

/* A callee's error ({code, message, name, stack} from fm_mesh_error) as an
 * Error of this realm, made by the prelude's __fm_mkerror. */
static JSValueRef mesh_error_value(JSContextRef ctx, JSObjectRef mkerror, json_t *e) {
    JSValueRef parts[4];
    static const char *keys[4] = {"code", "message", "name", "stack"};
    for (int i = 0; i < 4; i++) {
        const char *sv = json_string_value(json_object_get(e, keys[i]));
        JSStringRef js = js_str(sv ? sv : "", sv ? strlen(sv) : 0);
        parts[i] = JSValueMakeString(ctx, js);
        JSStringRelease(js);
    }
    JSValueRef err = mkerror ? JSObjectCallAsFunction(ctx, mkerror, NULL, 4, parts, NULL) : NULL;
    return err ? err : parts[1];
}

/* An outgoing fnmesh.call(), waiting for its callee. */
typedef struct mesh_rec {
    struct mesh_rec *next;
    js_instance *inst; /* NULL once the instance is gone */
    js_thread *ts;     /* the caller's: tls_ts may be another runtime's (template) by then */
    uint64_t parent_id; /* async id of the calling job, 0 if none */
    JSObjectRef resolve, reject; /* protected */
    /* fnmesh.callSync: while the native call is on the stack, the callee's
     * outcome is kept here instead of settling a promise */
    bool inline_, done;
    json_t *value, *error; /* owned: result, or fm_mesh_error */
} mesh_rec;

/* Takes rec out of the thread's list of calls awaiting their callee. */
static void mesh_unlink(js_thread *ts, mesh_rec *rec) {
    for (mesh_rec **pp = &ts->mesh; *pp; pp = &(*pp)->next)
        if (*pp == rec) {
            *pp = rec->next;
            return;
        }
}

static fm_job *pending_find(js_thread *ts, uint64_t id) {
    for (fm_job *j = ts->pending; j; j = j->next)
        if (j->async_id == id) return j;
    return NULL;
}

static void enter(js_thread *ts, js_instance *inst, fm_job *job, int64_t deadline);
static void leave(js_thread *ts, js_instance *inst);

/* Executor thread, later: the callee finished; settle the caller's promise. */
static void mesh_done(fm_job *child, void *ud) {
    mesh_rec *rec = ud;
    if (rec->inline_) { /* finished inside fnmesh.callSync: it takes the outcome */
        rec->done = true;
        if (child->status == FM_OK) {
            rec->value = child->value;
            child->value = NULL;
        } else {
            rec->error = fm_mesh_error(child);
        }
        return;
    }
    js_thread *ts = rec->ts, *saved_tls = tls_ts;
    mesh_unlink(ts, rec);
    js_instance *inst = rec->inst;
    if (inst) {
        JSContextRef ctx = inst->ctx;
        fm_job *parent = rec->parent_id ? pending_find(ts, rec->parent_id) : NULL;
        /* a call in flight for the parent is the current one from here */
        if (!parent && ts->cur_job && ts->cur_job->async_id == rec->parent_id) parent = ts->cur_job;
        js_instance *saved_inst = ts->cur_inst;
        fm_job *saved_job = ts->cur_job;
        int64_t saved_deadline = ts->deadline_us;
        enter(ts, inst, parent, parent ? parent->deadline_us : fm_mono_us() + 1000000);
        JSValueRef arg;
        JSObjectRef settle;
        if (child->status == FM_OK) {
            arg = child->value ? json_to_js(ctx, child->value) : JSValueMakeNull(ctx);
            settle = rec->resolve;
        } else {
            json_t *e = fm_mesh_error(child);
            arg = mesh_error_value(ctx, inst->mkerror_fn, e);
            json_decref(e);
            settle = rec->reject;
        }
        JSObjectCallAsFunction(ctx, settle, NULL, 1, &arg, NULL);
        JSValueUnprotect(ctx, rec->resolve);
        JSValueUnprotect(ctx, rec->reject);
        if (saved_inst) {
            absorb_termination(inst);
            ts->cur_inst = saved_inst;
            ts->cur_job = saved_job;
            ts->deadline_us = saved_deadline;
            ts->heap_cap = saved_inst->mem_cap;
        } else {
            leave(ts, inst);
        }
    }
    tls_ts = saved_tls;
    free(rec);
}

/* The wire code of `st` and `msg` as two strings of this realm. */
static void status_strings(JSContextRef ctx, fm_status st, const char *msg, JSValueRef out[2]) {
    JSStringRef c = JSStringCreateWithUTF8CString(fm_status_code(st));
    JSStringRef m = js_str(msg, strlen(msg));
    out[0] = JSValueMakeString(ctx, c);
    out[1] = JSValueMakeString(ctx, m);
    JSStringRelease(c);
    JSStringRelease(m);
}

/* Ends the open span `id` of a direct call (its promise settled, or could
 * not be followed): records it, with the error when !ok. */
static void end_open_span(js_thread *ts, uint64_t id, bool ok, const char *msg, const char *code) {
    js_span **pp = &ts->spans;
    while (*pp && (*pp)->id != id) pp = &(*pp)->next;
    js_span *s = *pp;
    if (!s) return;
    *pp = s->next;
    ts->nspans--;
    s->span.end_ns = fm_trace_wall_ns(fm_mono_us());
    if (!ok) {
        s->span.error = true;
        s->span.outcome = (uint8_t)fm_metrics_outcome(fm_mesh_status(code));
        fm_trace_copy(s->span.message, sizeof(s->span.message), msg ? msg : "error");
    }
    fm_trace_record(&s->span);
    free(s);
}

/* A result or argument of another realm as this realm sees it, without
 * calling into JavaScript for primitives (the copy rules of __fm_copy).
 * `type` is JSValueGetType's (every API call takes the VM's lock: once). */
static JSValueRef pass_primitive(JSContextRef ctx, JSValueRef r, JSType type) {
    switch (type) {
    case kJSTypeNumber: {
        double d = vnumber(ctx, r);
        return isfinite(d) ? r : vmake_null(ctx);
    }
    case kJSTypeSymbol: return vmake_undefined(ctx);
    default: return r;
    }
}

/* The fast path of a mesh call whose callee is JavaScript: both instances
 * live on this thread in the same context group, so the callee is called
 * directly, inside the caller's VM entry and deadline. Arguments and result
 * are copied between the two realms (object values only; primitives pass
 * as they are). Returns true with the result in *out (in the caller's
 * realm; a promise of the caller's realm when the callee returned one), or
 * false with the rejection reason (an Error of the caller's realm) in *out. */
static bool js_direct(js_thread *ts, JSContextRef ctx, fm_version *v, const fm_function *fn,
                      js_instance *callee, int hops, const JSValueRef *in, size_t n,
                      JSValueRef *out) {
    JSContextRef cctx = callee->ctx;
    JSValueRef small[8] = {0};
    JSValueRef *args = n <= 8 ? small : malloc(n * sizeof(JSValueRef));
    JSObjectRef ccopy = callee->copy_fn;
    for (size_t i = 0; i < n; i++) {
        JSValueRef a = in[i];
        JSType type = vtype(ctx, a);
        if (type == kJSTypeObject && ccopy) {
            JSValueRef cexc = NULL;
            JSValueRef c = JSObjectCallAsFunction(cctx, ccopy, NULL, 1, &a, &cexc);
            if (!c) { /* cannot be passed on (too deep, cyclic): the call fails */
                for (size_t k = 0; args != small && k < i; k++) JSValueUnprotect(cctx, args[k]);
                if (args != small) free(args);
                *out = cexc ? cexc : JSValueMakeUndefined(ctx);
                return false;
            }
            a = c;
        } else {
            a = pass_primitive(ctx, a, type);
        }
        args[i] = a;
        if (args != small) JSValueProtect(cctx, a); /* heap-held: keep it from the GC */
    }
    /* the callee is the current function while it runs */
    js_instance *saved_inst = ts->cur_inst;
    fm_job *saved_job = ts->cur_job;
    fm_job frame = {0};
    frame.version = v;
    frame.fn = fn;
    frame.hops = hops;
    frame.deadline_us = saved_job ? saved_job->deadline_us : ts->deadline_us;
    if (saved_job) memcpy(frame.request_id, saved_job->request_id, sizeof(frame.request_id));
    /* the direct call is a span of its own, child of the caller's */
    if (fm_telemetry) {
        if (saved_job) fm_trace_child(&frame.trace, &saved_job->trace);
        else fm_trace_begin(&frame.trace, NULL);
        frame.tracestate = saved_job ? saved_job->tracestate : NULL; /* borrowed: not freed */
        frame.started_us = fm_mono_us();
    }
    ts->cur_inst = callee;
    ts->cur_job = &frame;
    JSValueRef exc = NULL;
    JSValueRef r = JSObjectCallAsFunction(cctx, callee->fns[fn->index], NULL, n, args, &exc);
    if (fm_telemetry) frame.finished_us = fm_mono_us();
    ts->cur_inst = saved_inst;
    ts->cur_job = saved_job;
    if (args != small) {
        for (size_t i = 0; i < n; i++) JSValueUnprotect(cctx, args[i]);
        free(args);
    }
    if (r && !ts->fired) {
        js_instance *caller = ts->cur_inst;
        JSType type = vtype(ctx, r);
        if (type != kJSTypeObject) { /* a primitive: no copy, and the call is over */
            if (fm_telemetry) fm_job_record_span(&frame);
            *out = pass_primitive(ctx, r, type);
            return true;
        }
        double span = 0; /* a promise's span stays open until it settles */
        if (fm_telemetry && ts->nspans < JS_MAX_OPEN_SPANS) {
            js_span *s = malloc(sizeof(*s));
            fm_job_span(&frame, &s->span);
            s->id = ++ts->next_span;
            s->next = ts->spans;
            ts->spans = s;
            ts->nspans++;
            span = (double)s->id;
        } else if (fm_telemetry) {
            fm_job_record_span(&frame);
        }
        /* maybe a promise: name the hop for its rejection */
        char hop[300];
        snprintf(hop, sizeof(hop), "%s/%s (js)", v->deployment, fn->name);
        JSStringRef hs = JSStringCreateWithUTF8CString(hop);
        JSValueRef a[3] = {r, JSValueMakeString(ctx, hs), JSValueMakeNumber(ctx, span)};
        JSStringRelease(hs);
        JSValueRef aexc = NULL;
        JSValueRef adopted =
            caller->adopt_fn ? JSObjectCallAsFunction(ctx, caller->adopt_fn, NULL, 3, a, &aexc)
                             : NULL;
        if (adopted) {
            *out = adopted;
            return true;
        }
        /* e.g. too deep to copy: the call fails, and so does its span */
        if (span) end_open_span(ts, (uint64_t)span, false, "the result cannot be passed on",
                                "function_error");
        *out = aexc ? aexc : JSValueMakeUndefined(ctx);
        return false;
    }
    /* the callee threw (or ran out of time): an error of the caller's realm */
    fm_job tmp = {0};
    tmp.fn = fn;
    tmp.version = v;
    fail_from_exception(callee, &tmp, exc);
    if (fm_telemetry) {
        frame.status = tmp.status;
        frame.error = tmp.error;
        fm_job_record_span(&frame);
        frame.error = NULL;
    }
    json_t *e = fm_mesh_error(&tmp);
    *out = mesh_error_value(ctx, ts->cur_inst->mkerror_fn, e);
    json_decref(e);
    json_decref(tmp.error);
    return false;
}

/* Throws an Error {code, message} of this realm from a native hook. */
static JSValueRef throw_error(JSContextRef ctx, fm_status st, const char *msg, JSValueRef *exc) {
    JSValueRef parts[4] = {NULL, NULL, JSValueMakeUndefined(ctx), JSValueMakeUndefined(ctx)};
    status_strings(ctx, st, msg, parts);
    js_thread *ts = tls_ts;
    JSObjectRef mk = ts->cur_inst ? ts->cur_inst->mkerror_fn : NULL;
    *exc = mk ? JSObjectCallAsFunction(ctx, mk, NULL, 4, parts, NULL) : parts[1];
    return NULL;
}

/* A mesh call from JavaScript, (target, ...args): fnmesh.callSync when
 * `sync`, the native half of fnmesh.call otherwise (which makes a promise of
 * what this returns, and a rejected one of what it throws). A JavaScript
 * callee runs directly and its result is returned (a promise when it is
 * async); a Lua callee runs inside this call and its result is returned
 * when it finished without waiting; any other callee is an ordinary mesh
 * call and a promise of its result is returned. A failure is thrown.
 * `sync` matters in a worker process only: a call the worker forwards to
 * the node is sent at once (callSync), or with the others of this pass. */
static JSValueRef mesh_call_js(JSContextRef ctx, size_t argc, const JSValueRef argv[],
                               JSValueRef *exc, bool sync) {
    js_thread *ts = tls_ts;
    if (!ts || !ts->cur_inst)
        return throw_error(ctx, FM_INTERNAL, "function calls are only possible inside a function",
                           exc);
    if (argc < 1) return throw_error(ctx, FM_BAD_REQUEST, "callSync(target, ...args)", exc);
    char target[512];
    size_t tlen;
    if (argv[0] == ts->target_val) { /* the same string cell as last time */
        tlen = ts->target_len;
        memcpy(target, ts->target, tlen + 1); /* a callee may replace the cache */
    } else {
        JSStringRef js = JSValueToStringCopy(ctx, argv[0], exc);
        if (!js) return NULL;
        size_t max = JSStringGetMaximumUTF8CStringSize(js);
        if (max > sizeof(target)) {
            JSStringRelease(js);
            return throw_error(ctx, FM_BAD_REQUEST, "function name too long", exc);
        }
        tlen = JSStringGetUTF8CString(js, target, sizeof(target)) - 1;
        JSStringRelease(js);
        /* (not for objects: their toString may differ) */
        if (argv[0] == ts->target_seen && JSValueIsString(ctx, argv[0])) {
            if (ts->target_val) JSValueUnprotect(ctx, ts->target_val);
            JSValueProtect(ctx, argv[0]);
            ts->target_val = argv[0];
            ts->target_len = tlen;
            memcpy(ts->target, target, tlen + 1);
        }
        ts->target_seen = argv[0];
    }
    int hops = (ts->cur_job ? ts->cur_job->hops : 0) + 1;
    if (hops > FM_MESH_MAX_HOPS) {
        char msg[300];
        snprintf(msg, sizeof(msg),
                 "call chain longer than %d hops calling %.200s (runaway recursion?)",
                 FM_MESH_MAX_HOPS, target);
        return throw_error(ctx, FM_LOOP, msg, exc);
    }
    fm_err err = FM_ERR_INIT;
    const fm_function *fn = NULL;
    /* in a worker process (process isolation) only the worker's own functions
     * resolve: any other call goes to the node */
    fm_version *v = fm_mesh_resolve(target, tlen, &fn, &err);
    if (!v && !fm_mesh_forwarding()) {
        throw_error(ctx, err.status, err.msg, exc);
        fm_err_clear(&err);
        return NULL;
    }
    fm_err_clear(&err);
    const JSValueRef *in = argv + 1;
    size_t n = argc - 1;
    if (v && fn->rt == &fm_runtime_js) {
        js_instance *callee = fm_exec_instance_here(v, fn->unit, &err);
        JSValueRef out = NULL;
        if (!callee) throw_error(ctx, FM_INTERNAL, err.msg, exc);
        else if (!js_direct(ts, ctx, v, fn, callee, hops, in, n, &out)) *exc = out, out = NULL;
        fm_version_release(v);
        fm_err_clear(&err);
        return out;
    }
    /* another runtime: its arguments as values */
    json_t **args = calloc(n ? n : 1, sizeof(json_t *));
    char why[160] = "";
    for (size_t i = 0; i < n && !why[0]; i++) /* undefined: NULL, a hole (the default applies) */
        args[i] = js_to_json(ctx, in[i], why, sizeof(why));
    if (why[0]) {
        for (size_t i = 0; i < n; i++) json_decref(args[i]);
        free(args);
        fm_version_release(v);
        char msg[240];
        snprintf(msg, sizeof(msg), "argument cannot be passed on: %s", why);
        return throw_error(ctx, FM_BAD_REQUEST, msg, exc);
    }
    mesh_rec *rec = calloc(1, sizeof(*rec));
    rec->inst = ts->cur_inst;
    rec->ts = ts;
    rec->parent_id = ts->cur_job ? ts->cur_job->async_id : 0;
    rec->inline_ = true;
    js_instance *inst = ts->cur_inst;
    fm_status st = v ? fm_mesh_call_resolved(ts->cur_job, v, fn, args, n, true, mesh_done, rec, &err)
                 : sync ? fm_mesh_call_sync(ts->cur_job, target, tlen, args, n, mesh_done, rec, &err)
                        : fm_mesh_call(ts->cur_job, target, tlen, args, n, mesh_done, rec, &err);
    tls_ts = ts; /* the callee may have run another runtime's half on this thread */
    ts->cur_inst = inst;
    if (st != FM_OK) {
        free(rec);
        throw_error(ctx, st, err.msg, exc);
        fm_err_clear(&err);
        return NULL;
    }
    rec->inline_ = false;
    if (rec->done) { /* finished inside this call */
        JSValueRef out = NULL;
        if (rec->error) *exc = mesh_error_value(ctx, inst->mkerror_fn, rec->error);
        else out = rec->value ? json_to_js(ctx, rec->value) : vmake_null(ctx);
        json_decref(rec->value);
        json_decref(rec->error);
        free(rec);
        return out;
    }
    /* it waits (on a worker, or on calls of its own): a promise */
    JSObjectRef resolve = NULL, reject = NULL;
    JSObjectRef promise = JSObjectMakeDeferredPromise(ctx, &resolve, &reject, exc);
    rec->resolve = resolve;
    rec->reject = reject;
    JSValueProtect(ctx, rec->resolve);
    JSValueProtect(ctx, rec->reject);
    rec->next = ts->mesh;
    ts->mesh = rec;
    return promise;
}

/* __fm_native_call(target, ...args): fnmesh.call's, see mesh_call_js. Its
 * name marks where a directly called function's stack meets its caller's. */
static JSValueRef native_call(JSContextRef ctx, JSObjectRef f, JSObjectRef self, size_t argc,
                              const JSValueRef argv[], JSValueRef *exc) {
    return mesh_call_js(ctx, argc, argv, exc, false);
}

/* __fm_native_call_sync(target, ...args): fnmesh.callSync */
static JSValueRef native_call_sync(JSContextRef ctx, JSObjectRef f, JSObjectRef self, size_t argc,
                                   const JSValueRef argv[], JSValueRef *exc) {
    return mesh_call_js(ctx, argc, argv, exc, true);
}

static JSValueRef native_log(JSContextRef ctx, JSObjectRef f, JSObjectRef self, size_t argc,
                             const JSValueRef argv[], JSValueRef *exc) {
    js_thread *ts = tls_ts;
    if (argc < 2) return JSValueMakeUndefined(ctx);
    int lvl = (int)JSValueToNumber(ctx, argv[0], NULL);
    if (lvl < 0 || lvl > 3) lvl = 1;
    char *msg = js_value_cstr(ctx, argv[1]);
    fm_logs_function(ts->cur_inst ? ts->cur_inst->deployment : NULL, ts->cur_job,
                     (fm_log_level)lvl, msg, strlen(msg));
    free(msg);
    return JSValueMakeUndefined(ctx);
}

static void timer_push(js_thread *ts, js_timer t) {
    if (ts->ntimers == ts->timers_cap) {
        ts->timers_cap = ts->timers_cap ? ts->timers_cap * 2 : 16;
        ts->timers = realloc(ts->timers, ts->timers_cap * sizeof(js_timer));
    }
    ts->timers[ts->ntimers++] = t;
}

static JSValueRef native_timer(JSContextRef ctx, JSObjectRef f, JSObjectRef self, size_t argc,
                               const JSValueRef argv[], JSValueRef *exc) {
    js_thread *ts = tls_ts;
    if (argc < 3 || !JSValueIsObject(ctx, argv[0]) || !ts->cur_inst)
        return JSValueMakeUndefined(ctx);
    double ms = JSValueToNumber(ctx, argv[1], NULL);
    if (!(ms >= 0)) ms = 0;
    if (ms > 2147483647.0) ms = 2147483647.0;
    bool repeat = JSValueToBoolean(ctx, argv[2]);
    int64_t now = fm_mono_us();
    js_timer t = {.id = ++ts->next_timer,
                  .due_us = now + (int64_t)(ms * 1000),
                  .interval_us = repeat ? (ms < 1 ? 1000 : (int64_t)(ms * 1000)) : 0,
                  .deadline_us = ts->deadline_us,
                  .inst = ts->cur_inst,
                  .cb = (JSObjectRef)argv[0]};
    if (t.id == 0) t.id = ++ts->next_timer;
    JSValueProtect(ctx, t.cb);
    timer_push(ts, t);
    return JSValueMakeNumber(ctx, t.id);
}

static void timer_remove_at(js_thread *ts, size_t i) {
    JSValueUnprotect(ts->timers[i].inst->ctx, ts->timers[i].cb);
    ts->timers[i] = ts->timers[--ts->ntimers];
}

static JSValueRef native_clear(JSContextRef ctx, JSObjectRef f, JSObjectRef self, size_t argc,
                               const JSValueRef argv[], JSValueRef *exc) {
    js_thread *ts = tls_ts;
    if (argc < 1) return JSValueMakeUndefined(ctx);
    uint32_t id = (uint32_t)JSValueToNumber(ctx, argv[0], NULL);
    for (size_t i = 0; i < ts->ntimers; i++) {
        if (ts->timers[i].id == id && ts->timers[i].inst == ts->cur_inst) {
            timer_remove_at(ts, i);
            break;
        }
    }
    return JSValueMakeUndefined(ctx);
}

static JSValueRef native_done(JSContextRef ctx, JSObjectRef f, JSObjectRef self, size_t argc,
                              const JSValueRef argv[], JSValueRef *exc) {
    js_thread *ts = tls_ts;
    if (argc < 3) return JSValueMakeUndefined(ctx);
    uint64_t id = (uint64_t)JSValueToNumber(ctx, argv[0], NULL);
    fm_job *job = pending_take(ts, id);
    if (!job) return JSValueMakeUndefined(ctx); /* already expired */
    js_instance *inst = ts->cur_inst;
    if (JSValueToBoolean(ctx, argv[1])) complete_value(inst, job, argv[2]);
    else fail_from_exception(inst, job, argv[2]);
    fm_job_finish(job);
    return JSValueMakeUndefined(ctx);
}

/* __fm_native_span_end(id, ok, message, code): the promise of a direct
 * call settled; its span ends now. */
static JSValueRef native_span_end(JSContextRef ctx, JSObjectRef f, JSObjectRef self, size_t argc,
                                  const JSValueRef argv[], JSValueRef *exc) {
    js_thread *ts = tls_ts;
    if (argc < 2) return JSValueMakeUndefined(ctx);
    uint64_t id = (uint64_t)JSValueToNumber(ctx, argv[0], NULL);
    bool ok = JSValueToBoolean(ctx, argv[1]);
    char *msg = !ok && argc > 2 ? js_value_cstr(ctx, argv[2]) : NULL;
    char *code = !ok && argc > 3 ? js_value_cstr(ctx, argv[3]) : NULL;
    end_open_span(ts, id, ok, msg, code);
    free(msg);
    free(code);
    return JSValueMakeUndefined(ctx);
}

static void install_native(js_instance *inst, const char *name, JSObjectCallAsFunctionCallback cb) {
    JSStringRef n = JSStringCreateWithUTF8CString(name);
    JSObjectRef f = JSObjectMakeFunctionWithCallback(inst->ctx, n, cb);
    JSObjectSetProperty(inst->ctx, JSContextGetGlobalObject(inst->ctx), n, f,
                        kJSPropertyAttributeNone, NULL);
    JSStringRelease(n);
}

static JSObjectRef get_fn(JSContextRef ctx, const char *name) {
    JSStringRef n = JSStringCreateWithUTF8CString(name);
    JSValueRef v = JSObjectGetProperty(ctx, JSContextGetGlobalObject(ctx), n, NULL);
    JSStringRelease(n);
    return v && JSValueIsObject(ctx, v) ? (JSObjectRef)v : NULL;
}

static void js_instance_destroy(void *tsp, void *p);
static js_instance *js_prepare(js_thread *ts, fm_err *err);

/* The parameter names of `fn` (of any context of the thread's group), read
 * by the prelude's __fm_params in the thread's utility context. New
 * reference: an array, empty when they cannot be read. */
static json_t *js_params(js_thread *ts, JSObjectRef fn) {
    if (!ts->util) {
        fm_err e = FM_ERR_INIT;
        ts->util = js_prepare(ts, &e);
        fm_err_clear(&e);
        if (!ts->util) return json_array();
    }
    JSContextRef ctx = ts->util->ctx;
    JSObjectRef pf = get_fn(ctx, "__fm_params");
    JSValueRef arg = fn;
    JSValueRef r = pf ? JSObjectCallAsFunction(ctx, pf, NULL, 1, &arg, NULL) : NULL;
    size_t len = 0;
    char *text = r ? js_json(ctx, r, &len, NULL) : NULL;
    json_t *j = text ? json_loadb(text, len, 0, NULL) : NULL;
    free(text);
    return json_is_array(j) ? j : (json_decref(j), json_array());
}

static fm_status eval(js_instance *inst, const char *src, size_t len, const char *url,
                      fm_err *err) {
    JSStringRef s = js_str(src, len);
    JSStringRef u = JSStringCreateWithUTF8CString(url);
    JSValueRef exc = NULL;
    JSValueRef r = JSEvaluateScript(inst->ctx, s, NULL, u, 1, &exc);
    JSStringRelease(s);
    JSStringRelease(u);
    if (r) return FM_OK;
    fm_job tmp = {0};
    fail_from_exception(inst, &tmp, exc);
    const char *m = tmp.error ? json_string_value(json_object_get(tmp.error, "message")) : NULL;
    const char *st = tmp.error ? json_string_value(json_object_get(tmp.error, "stack")) : NULL;
    /* name the place: the first stack frame ("fn@file:line:col") */
    char where[300] = "";
    if (st) {
        const char *at = strchr(st, '@');
        const char *eol = strchr(st, '\n');
        if (at && (!eol || at < eol))
            snprintf(where, sizeof(where), "%.*s: ", (int)(eol ? eol - at - 1 : (ptrdiff_t)strlen(at + 1)), at + 1);
    }
    if (tmp.status == FM_TIMEOUT)
        fm_err_set(err, FM_INVALID_BUNDLE, "top-level code ran longer than 10 s");
    else
        fm_err_set(err, FM_INVALID_BUNDLE, "%stop-level code threw: %s", where, m ? m : "error");
    if (st) fm_err_detail(err, "stack", fm_json_str(st));
    json_decref(tmp.error);
    absorb_termination(inst);
    return FM_INVALID_BUNDLE;
}

/* Running top-level code (the prelude, a bundle) of `inst`, possibly from
 * inside another instance's call: what to put back afterwards. */
typedef struct top_level {
    js_instance *inst;
    int64_t deadline_us;
    js_thread *tls;
    size_t heap_cap, rss_base;
} top_level;

static void top_enter(js_thread *ts, js_instance *inst, top_level *saved) {
    *saved = (top_level){ts->cur_inst, ts->deadline_us, tls_ts, ts->heap_cap, ts->rss_base};
    tls_ts = ts;
    ts->cur_inst = inst;
    ts->heap_cap = inst->mem_cap;
    ts->rss_base = 0;
    ts->deadline_us = fm_mono_us() + DEFAULT_LIMIT_US; /* top-level code: 10 s */
    set_limit(ts, DEFAULT_LIMIT_US);
}

static void top_leave(js_thread *ts, const top_level *saved) {
    ts->cur_inst = saved->inst;
    ts->deadline_us = saved->deadline_us;
    tls_ts = saved->tls;
    ts->heap_cap = saved->heap_cap;
    ts->rss_base = saved->rss_base;
}

/* A context with the natives installed and the prelude evaluated: all of
 * an instance but its bundle. NULL with err filled on failure. */
static js_instance *js_prepare(js_thread *ts, fm_err *err) {
    js_instance *inst = calloc(1, sizeof(*inst));
    inst->ts = ts;
    inst->ctx = JSGlobalContextCreateInGroup(ts->group, NULL);
    fast_values_init(inst->ctx);
    top_level top;
    top_enter(ts, inst, &top);

    static const struct {
        const char *name;
        JSObjectCallAsFunctionCallback cb;
    } hooks[] = {{"__fm_native_log", native_log},
                 {"__fm_native_timer", native_timer},
                 {"__fm_native_clear", native_clear},
                 {"__fm_native_done", native_done},
                 {"__fm_native_call", native_call},
                 {"__fm_native_call_sync", native_call_sync},
                 {"__fm_native_span_end", native_span_end}};
    for (size_t i = 0; i < sizeof(hooks) / sizeof(hooks[0]); i++)
        install_native(inst, hooks[i].name, hooks[i].cb);

    fm_status st = eval(inst, fm_js_prelude, strlen(fm_js_prelude), "fnmesh:prelude", err);
    if (st == FM_OK) {
        inst->await_fn = get_fn(inst->ctx, "__fm_await");
        inst->errinfo_fn = get_fn(inst->ctx, "__fm_errinfo");
        JSValueProtect(inst->ctx, inst->await_fn);
        JSValueProtect(inst->ctx, inst->errinfo_fn);
        inst->copy_fn = get_fn(inst->ctx, "__fm_copy");
        inst->adopt_fn = get_fn(inst->ctx, "__fm_adopt");
        inst->mkerror_fn = get_fn(inst->ctx, "__fm_mkerror");
        JSValueProtect(inst->ctx, inst->copy_fn);
        JSValueProtect(inst->ctx, inst->adopt_fn);
        JSValueProtect(inst->ctx, inst->mkerror_fn);
    }
    top_leave(ts, &top);
    if (st != FM_OK) {
        js_instance_destroy(ts, inst);
        return NULL;
    }
    return inst;
}

static fm_status js_instance_create(void *tsp, const char *deployment, const char *artifact,
                                    size_t artifact_len, const fm_instance_limits *lim, void **out,
                                    fm_export **exports, size_t *nexports, fm_err *err) {
    js_thread *ts = tsp;
    /* JavaScriptCore has no per-context heap cap: in a worker of its own
     * (process isolation) the worker's RSS is capped, in-process the
     * group's heap (over_heap_cap; operations.md) */
#if !defined(__SANITIZE_ADDRESS__) /* its shadow memory and quarantine are RSS too */
    if (lim->whole_process && lim->memory && !ts->rss_cap) {
        ts->rss_cap = lim->memory;
        set_limit(ts, MEMORY_CHECK_US);
    }
#endif
    js_instance *inst = ts->spare;
    ts->spare = NULL;
    if (!inst && !(inst = js_prepare(ts, err))) return err->status;
    ts->want_spare = true; /* the next cold start finds one ready (js_poll) */
    inst->deployment = strdup(deployment);
    inst->mem_cap = ts->rss_cap ? 0 : lim->memory;
    top_level top;
    top_enter(ts, inst, &top);
    fm_status st = FM_OK;
    {
        size_t script_len = strnlen(artifact, artifact_len);
        if (script_len + 1 < artifact_len) {
            inst->map_json = artifact + script_len + 1;
            inst->map_len = artifact_len - script_len - 1;
        }
        if (script_names_bytes(artifact, script_len)) ensure_bytes(inst->ctx);
        st = eval(inst, artifact, script_len, BUNDLE_URL, err);
    }
    if (st == FM_OK) {
        JSObjectRef collect = get_fn(inst->ctx, "__fm_collect");
        JSValueRef bundle =
            JSObjectGetProperty(inst->ctx, JSContextGetGlobalObject(inst->ctx), ts->s_bundle, NULL);
        JSValueRef exc = NULL;
        JSValueRef list =
            collect ? JSObjectCallAsFunction(inst->ctx, collect, NULL, 1, &bundle, &exc) : NULL;
        if (!list || !JSValueIsObject(inst->ctx, list)) {
            st = fm_err_set(err, FM_INVALID_BUNDLE, "cannot list the exports of the bundle");
        } else {
            JSObjectRef arr = (JSObjectRef)list;
            JSStringRef lenname = JSStringCreateWithUTF8CString("length");
            size_t n = (size_t)JSValueToNumber(
                inst->ctx, JSObjectGetProperty(inst->ctx, arr, lenname, NULL), NULL);
            JSStringRelease(lenname);
            inst->fns = calloc(n ? n : 1, sizeof(JSObjectRef));
            inst->nfns = n;
            fm_export *ex = exports ? calloc(n ? n : 1, sizeof(fm_export)) : NULL;
            for (size_t i = 0; i < n; i++) {
                JSObjectRef item =
                    (JSObjectRef)JSObjectGetPropertyAtIndex(inst->ctx, arr, (unsigned)i, NULL);
                inst->fns[i] =
                    (JSObjectRef)JSObjectGetPropertyAtIndex(inst->ctx, item, 2, NULL);
                JSValueProtect(inst->ctx, inst->fns[i]);
                if (ex) {
                    ex[i].name =
                        js_value_cstr(inst->ctx, JSObjectGetPropertyAtIndex(inst->ctx, item, 0, NULL));
                    ex[i].file =
                        js_value_cstr(inst->ctx, JSObjectGetPropertyAtIndex(inst->ctx, item, 1, NULL));
                    ex[i].params = js_params(ts, inst->fns[i]);
                }
            }
            if (ex) {
                *exports = ex;
                *nexports = n;
            }
        }
    }
    top_leave(ts, &top);
    if (st != FM_OK) {
        js_instance_destroy(ts, inst);
        return st;
    }
    *out = inst;
    return FM_OK;
}

static void js_instance_destroy(void *tsp, void *p) {
    js_thread *ts = tsp;
    js_instance *inst = p;
    if (!inst) return;
    for (size_t i = 0; i < ts->ntimers;) {
        if (ts->timers[i].inst == inst) timer_remove_at(ts, i);
        else i++;
    }
    for (mesh_rec *r = ts->mesh; r; r = r->next) {
        if (r->inst != inst) continue;
        JSValueUnprotect(inst->ctx, r->resolve);
        JSValueUnprotect(inst->ctx, r->reject);
        r->inst = NULL; /* the callee's answer will be dropped */
    }
    for (size_t i = 0; i < inst->nfns; i++) JSValueUnprotect(inst->ctx, inst->fns[i]);
    if (inst->await_fn) JSValueUnprotect(inst->ctx, inst->await_fn);
    if (inst->batch_fn) JSValueUnprotect(inst->ctx, inst->batch_fn);
    free(inst->batch_ok);
    if (inst->errinfo_fn) JSValueUnprotect(inst->ctx, inst->errinfo_fn);
    if (inst->copy_fn) JSValueUnprotect(inst->ctx, inst->copy_fn);
    if (inst->adopt_fn) JSValueUnprotect(inst->ctx, inst->adopt_fn);
    if (inst->mkerror_fn) JSValueUnprotect(inst->ctx, inst->mkerror_fn);
    free(inst->fns);
    fm_sourcemap_free(inst->map);
    JSGlobalContextRelease(inst->ctx);
    free(inst->deployment);
    free(inst);
}

static void enter(js_thread *ts, js_instance *inst, fm_job *job, int64_t deadline) {
    tls_ts = ts;
    ts->cur_inst = inst;
    ts->cur_job = job;
    ts->deadline_us = deadline ? deadline : INT64_MAX;
    ts->fired = ts->over_memory = false;
    ts->heap_cap = inst->mem_cap;
    ts->rss_base = 0;
    int64_t limit = job && job->fn ? job->fn->timeout_ms * 1000
                    : deadline      ? deadline - fm_mono_us()
                                    : DEFAULT_LIMIT_US;
    set_limit(ts, limit);
}

static void leave(js_thread *ts, js_instance *inst) {
    absorb_termination(inst);
    ts->cur_inst = NULL;
    ts->cur_job = NULL;
    ts->deadline_us = INT64_MAX;
}

static void invoke(js_thread *ts, js_instance *inst, uint32_t index, fm_job *job, size_t argc,
                   JSValueRef *args, JSValueRef *small);

static bool check_index(js_instance *inst, uint32_t index, fm_job *job) {
    if (index < inst->nfns) return true;
    fm_job_fail(job, FM_INTERNAL, "function index out of range", NULL, NULL);
    fm_job_finish(job);
    return false;
}

static void js_call(void *tsp, void *ip, uint32_t index, fm_job *job) {
    js_thread *ts = tsp;
    js_instance *inst = ip;
    JSContextRef ctx = inst->ctx;
    if (!check_index(inst, index, job)) return;
    enter(ts, inst, job, job->deadline_us);
    job->async_id = ++ts->next_async; /* mesh calls made now find their parent by it */
    JSValueRef small[8] = {0};
    JSValueRef *args = job->argc <= 8 ? small : malloc(job->argc * sizeof(JSValueRef));
    for (size_t i = 0; i < job->argc; i++) {
        args[i] = job->argv[i] ? json_to_js(ctx, job->argv[i]) : vmake_undefined(ctx);
        if (args != small) JSValueProtect(ctx, args[i]); /* heap-held: keep it from the GC */
    }
    invoke(ts, inst, index, job, job->argc, args, small);
}

/* The arguments as JSON text (a worker's call frame): JSON.parse makes
 * them in one go, with no jansson values in between. */
static void js_call_json(void *tsp, void *ip, uint32_t index, fm_job *job, const char *text,
                         const uint32_t *holes, uint32_t nholes) {
    js_thread *ts = tsp;
    js_instance *inst = ip;
    JSContextRef ctx = inst->ctx;
    if (!check_index(inst, index, job)) return;
    JSStringRef s = JSStringCreateWithUTF8CString(text);
    JSValueRef arr = JSValueMakeFromJSONString(ctx, s);
    JSStringRelease(s);
    if (!arr || !JSValueIsObject(ctx, arr)) {
        fm_job_fail(job, FM_INTERNAL, "the call's arguments are not a JSON array", NULL, NULL);
        fm_job_finish(job);
        return;
    }
    JSObjectRef a = (JSObjectRef)arr;
    double n = JSValueToNumber(ctx, JSObjectGetProperty(ctx, a, ts->s_length, NULL), NULL);
    size_t argc = n > 0 && n < 1e6 ? (size_t)n : 0;
    enter(ts, inst, job, job->deadline_us);
    job->async_id = ++ts->next_async;
    JSValueRef small[8] = {0};
    JSValueRef *args = argc <= 8 ? small : malloc(argc * sizeof(JSValueRef));
    for (size_t i = 0; i < argc; i++) {
        args[i] = JSObjectGetPropertyAtIndex(ctx, a, (unsigned)i, NULL);
        if (args != small) JSValueProtect(ctx, args[i]);
    }
    for (uint32_t i = 0; i < nholes; i++) {
        if (holes[i] >= argc) continue;
        if (args != small) JSValueUnprotect(ctx, args[holes[i]]);
        args[holes[i]] = vmake_undefined(ctx); /* its parameter's default applies */
        if (args != small) JSValueProtect(ctx, args[holes[i]]);
    }
    invoke(ts, inst, index, job, argc, args, small);
}

/* Calls the function with args (argc of them; heap-held and protected
 * unless args == small), then completes the job or leaves it pending. */
static void invoke(js_thread *ts, js_instance *inst, uint32_t index, fm_job *job, size_t argc,
                   JSValueRef *args, JSValueRef *small) {
    JSContextRef ctx = inst->ctx;
    if (ts->batching) {
        ts->batch_inst = inst;
        ts->batch_deadline_us = job->deadline_us;
    }
    JSValueRef exc = NULL;
    JSValueRef r = JSObjectCallAsFunction(ctx, inst->fns[index], NULL, argc, args, &exc);
    if (args != small) {
        for (size_t i = 0; i < argc; i++) JSValueUnprotect(ctx, args[i]);
        free(args);
    }
    if (!r || ts->fired) {
        /* fired with a result: the code was terminated in the microtask
         * drain that ends the call (e.g. a loop after an await) */
        fail_from_exception(inst, job, exc);
        leave(ts, inst);
        fm_job_finish(job);
        return;
    }
    JSType type = vtype(ctx, r);
    if (type == kJSTypeObject) {
        JSValueRef then = JSObjectGetProperty(ctx, (JSObjectRef)r, ts->s_then, NULL);
        if (then && JSValueIsObject(ctx, then) && JSObjectIsFunction(ctx, (JSObjectRef)then)) {
            job->next = ts->pending;
            ts->pending = job;
            JSValueRef a[2] = {r, JSValueMakeNumber(ctx, (double)job->async_id)};
            exc = NULL;
            JSValueRef ok = JSObjectCallAsFunction(ctx, inst->await_fn, NULL, 2, a, &exc);
            fm_job *still = NULL;
            if (!ok || ts->fired) {
                still = pending_take(ts, job->async_id);
                if (still) {
                    fail_from_exception(inst, still, exc);
                    if (ts->fired && !ts->over_memory) still->status = FM_TIMEOUT;
                }
            }
            if (ts->batching && !still) { /* its continuation runs when the batch ends */
                ts->batch_stop = true;
                ts->batch_async_id = job->async_id;
                ts->batch_inst = inst;
                return; /* enter()'s state stays: js_run_batch leaves */
            }
            leave(ts, inst);
            if (still) fm_job_finish(still);
            return;
        }
    }
    complete_typed(inst, job, r, type);
    leave(ts, inst);
    fm_job_finish(job);
}

/* ---- batches: the calls a worker was sent together, in one VM entry
 *
 * An entry into JavaScript from C at the top level costs about 0.4 us
 * more than one made inside it: the watchdog reads the thread's CPU clock
 * (a system call) for the time limit, and the date cache is checked. A
 * worker given several calls at once runs them inside one native
 * function (__fm_native_batch), so each call is a nested entry. Microtasks
 * run when that outer entry ends, so a batch ends after a call that
 * leaves work for them (an async call: its enter() state, deadline and
 * job, stays for the drain, as for a call alone). A call the watchdog
 * stopped has its termination absorbed as it leaves, as alone, and the
 * batch goes on. Work a synchronous call leaves for microtasks runs at the
 * end of the batch, under the last call's deadline. */
static JSValueRef native_batch(JSContextRef ctx, JSObjectRef f, JSObjectRef self, size_t argc,
                               const JSValueRef argv[], JSValueRef *exc) {
    js_thread *ts = tls_ts;
    ts->batch_fn(ts->batch_ud);
    if (!ts->batch_async_id && ts->batch_inst) {
        /* the drain that ends the batch runs under the last call's deadline
         * (the watchdog's budget is already a call's timeout) */
        ts->cur_inst = ts->batch_inst;
        ts->cur_job = NULL;
        ts->heap_cap = ts->batch_inst->mem_cap;
        ts->deadline_us = ts->batch_deadline_us ? ts->batch_deadline_us : fm_mono_us() + DEFAULT_LIMIT_US;
    }
    return vmake_undefined(ctx);
}

/* Calls of export `index` may run in a batch: its source names nothing
 * that leaves work for microtasks (__fm_settles; code reached only through
 * other functions is not looked at: work it leaves runs at the batch's
 * end). All exports are looked at, at the top level, the first time. */
static bool js_batch_ok(void *tsp, void *ip, uint32_t index) {
    js_thread *ts = tsp;
    js_instance *inst = ip;
    if (index >= inst->nfns) return false;
    if (!inst->batch_ok) {
        inst->batch_ok = calloc(inst->nfns, 1);
        JSObjectRef settles = get_fn(inst->ctx, "__fm_settles");
        enter(ts, inst, NULL, fm_mono_us() + 1000000);
        for (size_t i = 0; i < inst->nfns; i++) {
            JSValueRef a = inst->fns[i], exc = NULL;
            JSValueRef r = settles ? JSObjectCallAsFunction(inst->ctx, settles, NULL, 1, &a, &exc) : NULL;
            inst->batch_ok[i] = r && vtype(inst->ctx, r) == kJSTypeBoolean && !vboolean(inst->ctx, r) ? 1 : 2;
        }
        leave(ts, inst);
    }
    return inst->batch_ok[index] == 1;
}

static bool js_batch_more(void *tsp) {
    js_thread *ts = tsp;
    return !ts->batch_stop;
}

static void js_run_batch(void *tsp, void *ip, void (*fn)(void *ud), void *ud) {
    js_thread *ts = tsp;
    js_instance *inst = ip;
    if (!inst->batch_fn) {
        JSStringRef n = JSStringCreateWithUTF8CString("__fm_native_batch");
        inst->batch_fn = JSObjectMakeFunctionWithCallback(inst->ctx, n, native_batch);
        JSStringRelease(n);
        JSValueProtect(inst->ctx, inst->batch_fn);
    }
    tls_ts = ts;
    ts->batching = true;
    ts->batch_stop = false;
    ts->batch_async_id = 0;
    ts->batch_inst = NULL;
    ts->batch_deadline_us = 0;
    ts->batch_fn = fn;
    ts->batch_ud = ud;
    JSObjectCallAsFunction(inst->ctx, inst->batch_fn, NULL, 0, NULL, NULL); /* then the drain */
    ts->batching = false;
    js_instance *last = ts->batch_inst ? ts->batch_inst : inst;
    fm_job *still = ts->batch_async_id && ts->fired ? pending_take(ts, ts->batch_async_id) : NULL;
    if (still) { /* its code ran past its deadline (or memory) in the drain */
        fail_from_exception(last, still, NULL);
        if (!ts->over_memory) still->status = FM_TIMEOUT;
    }
    ts->batch_async_id = 0;
    ts->batch_inst = NULL;
    leave(ts, last);
    if (still) fm_job_finish(still);
}

static int64_t js_poll(void *tsp) {
    js_thread *ts = tsp;
    int64_t now = fm_mono_us();
    int64_t next = -1;
    /* expire async calls past their deadline */
    for (fm_job **pp = &ts->pending; *pp;) {
        fm_job *j = *pp;
        if (j->deadline_us && now >= j->deadline_us) {
            *pp = j->next;
            j->next = NULL;
            fm_job_fail_timeout(j);
            fm_job_finish(j);
            continue;
        }
        if (j->deadline_us && (next < 0 || j->deadline_us - now < next)) next = j->deadline_us - now;
        pp = &j->next;
    }
    /* run due timers (a bounded number per poll, so new calls are not starved) */
    for (int rounds = 0; rounds < 64; rounds++) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i < ts->ntimers; i++)
            if (best == SIZE_MAX || ts->timers[i].due_us < ts->timers[best].due_us) best = i;
        if (best == SIZE_MAX) break;
        now = fm_mono_us();
        if (ts->timers[best].due_us > now) {
            int64_t w = ts->timers[best].due_us - now;
            if (next < 0 || w < next) next = w;
            break;
        }
        js_timer t = ts->timers[best];
        if (t.interval_us) {
            ts->timers[best].due_us = now + t.interval_us;
            JSValueProtect(t.inst->ctx, t.cb); /* keep it across the call below */
        } else {
            ts->ntimers--;
            ts->timers[best] = ts->timers[ts->ntimers];
        }
        int64_t dl = t.deadline_us > now && t.deadline_us != INT64_MAX ? t.deadline_us
                                                                          : now + 1000000;
        enter(ts, t.inst, NULL, dl);
        JSValueRef exc = NULL;
        JSObjectCallAsFunction(t.inst->ctx, t.cb, NULL, 0, NULL, &exc);
        if (exc && !ts->fired) {
            char *m = js_value_cstr(t.inst->ctx, exc);
            json_t *kv = json_pack("{s:s, s:s}", "src", "function", "deployment", t.inst->deployment);
            fm_log(FM_LOG_ERROR, kv, "uncaught exception in timer callback: %s", m);
            json_decref(kv);
            free(m);
        }
        JSValueUnprotect(t.inst->ctx, t.cb);
        leave(ts, t.inst);
        next = 0; /* re-evaluate after this pass */
    }
    if (ts->want_spare && !ts->spare && fm_exec_idle_here()) { /* for the next cold start */
        ts->want_spare = false;
        fm_err e = FM_ERR_INIT;
        ts->spare = js_prepare(ts, &e);
        fm_err_clear(&e);
    }
    return next;
}

const fm_runtime fm_runtime_js = {
    .name = "js",
    .instance_bytes = 256 << 10, /* a JavaScriptCore global object with the prelude */
    .extensions = js_extensions,
    .compile = js_compile,
    .thread_init = js_thread_init,
    .thread_dispose = js_thread_dispose,
    .instance_create = js_instance_create,
    .instance_destroy = js_instance_destroy,
    .call = js_call,
    .call_json = js_call_json,
    .run_batch = js_run_batch,
    .batch_more = js_batch_more,
    .batch_ok = js_batch_ok,
    .poll = js_poll,
};
