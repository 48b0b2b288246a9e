/* lua.c - the Lua runtime on LuaJIT 2.1 (Debian's libluajit2), interpreter
 * only.
 *
 * Deploy: every .lua file of the bundle is syntax-checked and packed, as
 * source, into the artifact (lua_bundle.c). An entry file returns a table;
 * its function values under identifier keys are the exports. Other files
 * are modules for `require`, served from the artifact, never from disk.
 *
 * Run: one lua_State per (executor thread, version) with the host's limits:
 *  - memory: a lua_Alloc that refuses past the deployment's memory_mb; the
 *    call fails with "memory limit exceeded", the state stays usable;
 *  - time: the JIT is off (compiled loops never see hooks) and a count hook
 *    raises an untyped tag once the call's deadline has passed. The guest's
 *    pcall/xpcall/coroutine.resume/wrap are wrapped (prelude below) so that
 *    the timeout and memory tags are always re-raised.
 * Only base (without dofile/loadfile/newproxy, load for text only,
 * collectgarbage limited), string (without dump), table, math and
 * coroutine are open: no io, os, ffi, jit, debug or package.
 *
 * Every call runs in its own coroutine, so that `fnmesh.call` can suspend
 * it while the callee runs: the job stays pending until the coroutine
 * returns or fails. A suspended call is an `lcall` on the thread's waiting
 * list; the mesh's `done` gets an `lpend` that outlives the call (it is
 * freed by `done` alone), so a call expired by poll() only detaches it.
 *
 * Everything here runs on the owning executor thread, except compile(). */
#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "exec/exec.h"
#include "metrics/logs.h"
#include "registry/registry.h"
#include "runtime/lua/lua_int.h"
#include "runtime/runtime.h"

#define HOOK_EVERY 10000                  /* VM instructions between deadline checks */
#define TOPLEVEL_US 10000000              /* top-level code of the entry files: 10 s */
#define DESCRIBE_US 100000                /* a guest __tostring on an error object: 100 ms */

/* Addresses used as unique values: error tags and registry keys. */
static char timeout_tag, memory_tag;
static char calls_key, fns_key, run_key, entry_key, errmt_key, spare_key;
#define TIMEOUT_TAG ((void *)&timeout_tag)
#define MEMORY_TAG ((void *)&memory_tag)

typedef struct linst linst;
typedef struct lcall lcall;

/* The mesh's `ud` for one fnmesh.call. Freed by on_mesh_done only; `call`
 * is NULL once the call is gone (expired, or its instance destroyed). */
typedef struct lpend {
    lcall *call;
} lpend;

/* One call of an export: owns nothing of the job but its result. */
struct lcall {
    lcall *next; /* ts->waiting link while suspended */
    linst *inst;
    fm_job *job;      /* borrowed until fm_job_finish */
    uint32_t index;
    lua_State *co;    /* kept alive by registry[calls_key][lightuserdata(call)] */
    lpend *pend;      /* the fnmesh.call in flight, or NULL */
    bool mesh_ready;  /* a callee result is waiting for fnmesh.call to take */
    json_t *mesh_value, *mesh_error; /* owned */
    bool done;        /* the function returned; `result` is its value */
    bool reusable;    /* its coroutine returned normally: a later call may run on it */
    json_t *result;   /* owned; NULL = null */
};

typedef struct lthread {
    linst *cur_inst; /* instance running code now */
    lcall *cur;      /* call running now (NULL in top-level code) */
    int64_t deadline_us;
    lcall *waiting;  /* calls suspended in fnmesh.call */
} lthread;

struct linst {
    lthread *ts;
    lua_State *L;
    char *deployment;
    size_t used, limit;
    size_t peak;         /* high-water mark of `used` since the last call started */
    bool mem_hit;        /* the allocator refused during the current slice */
    size_t gc_mark;      /* usage at which the hook runs a full collection */
    fm_lua_file *files;  /* paths/sources borrowed from the version's artifact */
    size_t nfiles;
    uint32_t nfns;
    lua_State *spare; /* a finished call's coroutine for the next call (registry[spare_key]) */
};

/* The executor thread's state, for hooks and C functions (no user data). */
static __thread lthread *tls_ts;

/* ---------------------------------------------------------------- compile */

static const char *const lua_extensions[] = {".lua", NULL};

static fm_status lua_compile(const fm_bundle *b, const char *const *entries, size_t n,
                             char **artifact, size_t *artifact_len, fm_err *err) {
    return fm_lua_pack(b, entries, n, artifact, artifact_len, err);
}

/* ---------------------------------------------------------------- limits */

static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    linst *in = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        in->used -= old;
        free(ptr);
        return NULL;
    }
    if (nsize > old && in->used - old + nsize > in->limit) {
        in->mem_hit = true;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (!p) {
        in->mem_hit = true;
        return NULL;
    }
    in->used = in->used - old + nsize;
    if (in->used > in->peak) in->peak = in->used;
    return p;
}

/* Every HOOK_EVERY instructions: the deadline, and an early collection.
 * Lua 5.1's allocator protocol has no emergency GC, and the collector
 * starts a cycle only at twice the live size, so live data above half the
 * cap would otherwise fail on garbage that was never collected. Near the
 * cap the hook collects; the mark then moves up by 1/16 of the cap, so a
 * genuinely full state does not collect at every check. */
static void hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lthread *ts = tls_ts;
    if (!ts) return;
    if (fm_mono_us() >= ts->deadline_us) {
        lua_pushlightuserdata(L, TIMEOUT_TAG);
        lua_error(L);
    }
    linst *in = ts->cur_inst;
    if (in && in->used > in->gc_mark) {
        lua_gc(L, LUA_GCCOLLECT, 0);
        size_t floor = in->limit / 4 * 3, next = in->used + in->limit / 16;
        in->gc_mark = next > floor ? next : floor;
    }
}

static int panic(lua_State *L) {
    const char *m = lua_tostring(L, -1);
    fm_log(FM_LOG_ERROR, NULL, "lua: unprotected error: %s", m ? m : "?");
    abort();
}

typedef struct ctx_save {
    linst *inst;
    lcall *cur;
    int64_t deadline;
} ctx_save;

static ctx_save ctx_enter(lthread *ts, linst *in, lcall *c, int64_t deadline_us) {
    ctx_save s = {ts->cur_inst, ts->cur, ts->deadline_us};
    ts->cur_inst = in;
    ts->cur = c;
    ts->deadline_us = deadline_us ? deadline_us : INT64_MAX;
    in->mem_hit = false;
    return s;
}

static void ctx_leave(lthread *ts, ctx_save s) {
    ts->cur_inst = s.inst;
    ts->cur = s.cur;
    ts->deadline_us = s.deadline;
}

static void fail_memory(linst *in, fm_job *job) {
    char msg[96];
    snprintf(msg, sizeof(msg), "memory limit exceeded (%zu MiB)", in->limit >> 20);
    fm_job_fail(job, FM_FUNCTION_ERROR, msg, "LuaError", NULL);
}

/* ------------------------------------------------------- host functions */

/* fatal(e): the tag to re-raise instead of `e` (timeout, memory) or nil. */
static int h_fatal(lua_State *L) {
    lthread *ts = tls_ts;
    void *tag = lua_type(L, 1) == LUA_TLIGHTUSERDATA ? lua_touserdata(L, 1) : NULL;
    if (tag == TIMEOUT_TAG || (ts && fm_mono_us() >= ts->deadline_us))
        lua_pushlightuserdata(L, TIMEOUT_TAG);
    else if (tag == MEMORY_TAG || (ts && ts->cur_inst && ts->cur_inst->mem_hit))
        lua_pushlightuserdata(L, MEMORY_TAG);
    else
        lua_pushnil(L);
    return 1;
}

/* log(level, message) */
static int h_log(lua_State *L) {
    lthread *ts = tls_ts;
    const char *lv = luaL_optstring(L, 1, "info");
    size_t len;
    const char *msg = luaL_optlstring(L, 2, "", &len);
    fm_log_level lvl = FM_LOG_INFO; /* unknown level names log as info */
    fm_logs_parse_level(lv, strlen(lv), &lvl);
    fm_logs_function(ts->cur_inst ? ts->cur_inst->deployment : NULL, ts->cur ? ts->cur->job : NULL,
                     lvl, msg, len);
    return 0;
}

/* The folder of the innermost bundle file on the call stack ("" = root). */
static void caller_dir(lua_State *L, char *dir, size_t n) {
    lua_Debug ar;
    dir[0] = '\0';
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        if (!lua_getinfo(L, "S", &ar) || ar.source[0] != '@') continue;
        const char *p = ar.source + 1;
        const char *slash = strrchr(p, '/');
        if (slash) snprintf(dir, n, "%.*s", (int)(slash - p), p);
        return;
    }
}

/* resolve(name) -> bundle path of the module */
static int h_resolve(lua_State *L) {
    linst *in = tls_ts->cur_inst;
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    char dir[1024], tried[2600];
    caller_dir(L, dir, sizeof(dir));
    const fm_lua_file *f = fm_lua_resolve(in->files, in->nfiles, name, len, dir, tried, sizeof(tried));
    if (!f) {
        if (tried[0]) return luaL_error(L, "module '%s' not found in the bundle (looked for %s)", name, tried);
        return luaL_error(L, "module '%s' not found in the bundle", name);
    }
    lua_pushstring(L, f->path);
    return 1;
}

/* load(path) -> the module's chunk */
static int h_load(lua_State *L) {
    linst *in = tls_ts->cur_inst;
    const char *path = luaL_checkstring(L, 1);
    for (size_t i = 0; i < in->nfiles; i++) {
        if (strcmp(in->files[i].path, path) != 0) continue;
        lua_pushfstring(L, "@%s", path);
        if (luaL_loadbufferx(L, in->files[i].src, in->files[i].src_len, lua_tostring(L, -1), "t"))
            return lua_error(L);
        return 1;
    }
    return luaL_error(L, "module '%s' not found in the bundle", path);
}

/* args() -> the current call's arguments */
static int h_args(lua_State *L) {
    lcall *c = tls_ts->cur;
    if (!c || c->co != L) return luaL_error(L, "no call in progress");
    fm_job *job = c->job;
    luaL_checkstack(L, (int)job->argc + 4, "too many arguments");
    for (size_t i = 0; i < job->argc; i++) fm_lua_push_json(L, job->argv[i]);
    return (int)job->argc;
}

/* finish(...) : records the first result of the call as JSON */
static int h_finish(lua_State *L) {
    lcall *c = tls_ts->cur;
    if (!c || c->co != L) return luaL_error(L, "no call in progress");
    char why[200];
    size_t budget = c->inst->limit;
    json_t *v = fm_lua_to_json(L, 1, &budget, why, sizeof(why));
    if (!v) return luaL_error(L, "the return value cannot be converted to JSON: %s", why);
    json_decref(c->result);
    c->result = v;
    c->done = true;
    return 0;
}

static void push_error_table(lua_State *L, const char *message, const char *code, const char *name,
                             const char *stack) {
    lua_createtable(L, 0, 4);
    lua_pushstring(L, message ? message : "error");
    lua_setfield(L, -2, "message");
    if (code) {
        lua_pushstring(L, code);
        lua_setfield(L, -2, "code");
    }
    if (name) {
        lua_pushstring(L, name);
        lua_setfield(L, -2, "name");
    }
    if (stack) {
        lua_pushstring(L, stack);
        lua_setfield(L, -2, "stack");
    }
    lua_pushlightuserdata(L, &errmt_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_setmetatable(L, -2);
}

static int h_err_tostring(lua_State *L) {
    if (lua_type(L, 1) == LUA_TTABLE) {
        lua_getfield(L, 1, "message");
        if (lua_isstring(L, -1)) return 1;
    }
    lua_pushliteral(L, "error");
    return 1;
}

static void on_mesh_done(fm_job *child, void *ud);

/* call(target, ...) : starts a mesh call and suspends the coroutine */
static int h_call(lua_State *L) {
    lthread *ts = tls_ts;
    lcall *c = ts->cur;
    if (!c) return luaL_error(L, "fnmesh.call is only available while a function is being called "
                                 "(not in top-level code)");
    if (c->co != L) return luaL_error(L, "fnmesh.call cannot be used inside a coroutine made by the "
                                         "function");
    if (c->pend) return luaL_error(L, "fnmesh.call: a call is already in progress");
    size_t tlen;
    const char *target = luaL_checklstring(L, 1, &tlen);
    int argc = lua_gettop(L) - 1;
    json_t **argv = calloc(argc > 0 ? (size_t)argc : 1, sizeof(json_t *));
    size_t budget = c->inst->limit;
    char why[200];
    for (int i = 0; i < argc; i++) {
        argv[i] = fm_lua_to_json(L, i + 2, &budget, why, sizeof(why));
        if (!argv[i]) {
            for (int k = 0; k < i; k++) json_decref(argv[k]);
            free(argv);
            return luaL_error(L, "fnmesh.call: argument %d cannot be passed on: %s", i + 1, why);
        }
    }
    lpend *p = calloc(1, sizeof(*p));
    p->call = c;
    fm_err err = FM_ERR_INIT;
    fm_status st = fm_mesh_call(c->job, target, tlen, argv, (size_t)argc, on_mesh_done, p, &err);
    if (st != FM_OK) {
        free(p);
        char msg[sizeof(err.msg)];
        memcpy(msg, err.msg, sizeof(msg));
        fm_err_clear(&err);
        push_error_table(L, msg, fm_status_code(st), NULL, NULL);
        return lua_error(L);
    }
    c->pend = p;
    return lua_yield(L, 0);
}

/* result() : what the callee returned, or raises its error */
static int h_result(lua_State *L) {
    lcall *c = tls_ts->cur;
    if (!c || c->co != L || !c->mesh_ready)
        return luaL_error(L, "fnmesh.call: resumed without a result");
    if (c->mesh_error) {
        json_t *e = c->mesh_error;
        push_error_table(L, json_string_value(json_object_get(e, "message")),
                         json_string_value(json_object_get(e, "code")),
                         json_string_value(json_object_get(e, "name")),
                         json_string_value(json_object_get(e, "stack")));
        c->mesh_error = NULL;
        c->mesh_ready = false;
        json_decref(e);
        return lua_error(L);
    }
    fm_lua_push_json(L, c->mesh_value); /* may raise: the value stays owned by c */
    json_decref(c->mesh_value);
    c->mesh_value = NULL;
    c->mesh_ready = false;
    return 1;
}

/* ---------------------------------------------------------------- prelude */

/* Runs once per instance with the host functions (H). Returns the
 * trampoline that runs a call and the entry loader. Chunk name "=fnmesh":
 * its frames are removed from tracebacks. */
static const char prelude[] =
    "local H = ...\n"
    "local raw_pcall, raw_xpcall, raw_error, raw_tostring = pcall, xpcall, error, tostring\n"
    "local select, type, setmetatable, concat = select, type, setmetatable, table.concat\n"
    "local __fm_fatal, co_create, co_resume = H.fatal, coroutine.create, coroutine.resume\n"
    "local function post(ok, ...)\n"
    "  if not ok then local f = __fm_fatal((...)) if f then raw_error(f, 0) end end\n"
    "  return ok, ...\n"
    "end\n"
    "pcall = function(f, ...) return post(raw_pcall(f, ...)) end\n"
    "xpcall = function(f, handler, ...)\n"
    "  return post(raw_xpcall(f, function(e)\n"
    "    if __fm_fatal(e) then return e end\n"
    "    return handler(e)\n"
    "  end, ...))\n"
    "end\n"
    "coroutine.resume = function(co, ...) return post(co_resume(co, ...)) end\n"
    "local function wrap_post(ok, ...)\n"
    "  if ok then return ... end\n"
    "  local e = ...\n"
    "  raw_error(__fm_fatal(e) or e, 0)\n"
    "end\n"
    "coroutine.wrap = function(f)\n"
    "  local co = co_create(f)\n"
    "  return function(...) return wrap_post(co_resume(co, ...)) end\n"
    "end\n"
    "local raw_gc = collectgarbage\n"
    "collectgarbage = function(opt, arg)\n"
    "  if opt == nil then opt = 'collect' end\n"
    "  if opt == 'collect' or opt == 'count' or opt == 'step' then return raw_gc(opt, arg) end\n"
    "  raw_error(\"collectgarbage: option '\" .. raw_tostring(opt) .. \"' is not available\", 2)\n"
    "end\n"
    "local raw_load = load\n"
    "load = function(chunk, name, mode, env)\n"
    "  if env == nil then return raw_load(chunk, name, 't') end\n"
    "  return raw_load(chunk, name, 't', env)\n"
    "end\n"
    "loadstring = function(s, name) return raw_load(s, name, 't') end\n"
    "local __fm_log = H.log\n"
    "print = function(...)\n"
    "  local n, parts = select('#', ...), {...}\n"
    "  for i = 1, n do parts[i] = raw_tostring(parts[i]) end\n"
    "  __fm_log('info', concat(parts, '\\t', 1, n))\n"
    "end\n"
    "local __fm_call, __fm_result, array_mt, bytes_mt = H.call, H.result, H.array_mt, H.bytes_mt\n"
    "local function mesh_call(target, ...)\n"
    "  __fm_call(target, ...)\n"
    "  local v = __fm_result()\n"
    "  return v\n"
    "end\n"
    "fnmesh = {\n"
    "  null = H.null,\n"
    "  call = mesh_call,\n"
    "  fn = function(target)\n"
    "    if type(target) ~= 'string' then\n"
    "      raw_error('fnmesh.fn: the target must be a string \"deployment/function\"', 2)\n"
    "    end\n"
    "    return function(...) return mesh_call(target, ...) end\n"
    "  end,\n"
    "  log = function(level, ...)\n"
    "    local n, parts = select('#', ...), {...}\n"
    "    for i = 1, n do parts[i] = raw_tostring(parts[i]) end\n"
    "    __fm_log(raw_tostring(level), concat(parts, ' ', 1, n))\n"
    "  end,\n"
    "  array = function(t)\n"
    "    if t == nil then t = {} end\n"
    "    return setmetatable(t, array_mt)\n"
    "  end,\n"
    "  bytes = function(s)\n"
    "    if type(s) ~= 'string' then raw_error('fnmesh.bytes: expected a string', 2) end\n"
    "    return setmetatable({s}, bytes_mt)\n"
    "  end,\n"
    "}\n"
    "local __fm_resolve, __fm_load_module = H.resolve, H.load\n"
    "local loaded, LOADING = {}, {}\n"
    "local function finish_require(path, ok, r)\n"
    "  if not ok then loaded[path] = nil raw_error(__fm_fatal(r) or r, 0) end\n"
    "  if r == nil then r = true end\n"
    "  loaded[path] = r\n"
    "  return r\n"
    "end\n"
    "local function require_path(path, name)\n"
    "  local v = loaded[path]\n"
    "  if v == LOADING then\n"
    "    raw_error(\"require: '\" .. path .. \"' is already being loaded (a cycle of requires)\", 3)\n"
    "  end\n"
    "  if v ~= nil then return v end\n"
    "  local chunk = __fm_load_module(path)\n"
    "  loaded[path] = LOADING\n"
    "  return finish_require(path, raw_pcall(chunk, name, path))\n"
    "end\n"
    "require = function(name)\n"
    "  if type(name) ~= 'string' then raw_error('require: the module name must be a string', 2) end\n"
    "  return require_path(__fm_resolve(name), name)\n"
    "end\n"
    "local __fm_args, __fm_finish = H.args, H.finish\n"
    "return function(__export) return __fm_finish(__export(__fm_args())) end,\n"
    "       function(path) return require_path(path, path) end\n";

static int open_lib(lua_State *L, lua_CFunction f, const char *name) {
    lua_pushcfunction(L, f);
    lua_pushstring(L, name);
    lua_call(L, 1, 0);
    return 0;
}

/* Protected: libraries, the host table, the prelude. */
static int setup_state(lua_State *L) {
    open_lib(L, luaopen_base, "");
    open_lib(L, luaopen_string, LUA_STRLIBNAME);
    open_lib(L, luaopen_table, LUA_TABLIBNAME);
    open_lib(L, luaopen_math, LUA_MATHLIBNAME);
    fm_lua_init_int64(L);
    static const char *const drop[] = {"dofile", "loadfile", "newproxy", "gcinfo", "module", NULL};
    for (const char *const *d = drop; *d; d++) {
        lua_pushnil(L);
        lua_setfield(L, LUA_GLOBALSINDEX, *d);
    }
    lua_getfield(L, LUA_GLOBALSINDEX, "string");
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);

    lua_pushlightuserdata(L, &calls_key);
    lua_newtable(L);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, &spare_key); /* the slot exists: filling it never allocates */
    lua_pushboolean(L, 0);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, &fns_key);
    lua_newtable(L);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, &fm_lua_array_mt_key);
    lua_newtable(L);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, &fm_lua_bytes_mt_key);
    lua_newtable(L);
    lua_pushstring(L, "fnmesh.bytes"); /* getmetatable answers this; it cannot be changed */
    lua_setfield(L, -2, "__metatable");
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, &errmt_key);
    lua_newtable(L);
    lua_pushcfunction(L, h_err_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_rawset(L, LUA_REGISTRYINDEX);

    if (luaL_loadbuffer(L, prelude, sizeof(prelude) - 1, "=fnmesh")) return lua_error(L);
    static const luaL_Reg host[] = {
        {"fatal", h_fatal},     {"log", h_log},   {"resolve", h_resolve}, {"load", h_load},
        {"args", h_args},       {"finish", h_finish}, {"call", h_call},   {"result", h_result},
        {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, host);
    lua_pushlightuserdata(L, FM_LUA_NULL);
    lua_setfield(L, -2, "null");
    lua_pushlightuserdata(L, &fm_lua_array_mt_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_setfield(L, -2, "array_mt");
    lua_pushlightuserdata(L, &fm_lua_bytes_mt_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_setfield(L, -2, "bytes_mt");
    lua_call(L, 1, 2);
    lua_pushlightuserdata(L, &entry_key);
    lua_insert(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, &run_key);
    lua_insert(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
    return 0;
}

/* ---------------------------------------------------------------- exports */

static bool is_identifier(const char *s, size_t n) {
    if (n == 0 || n > 128) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
                  (i > 0 && ch >= '0' && ch <= '9');
        if (!ok) return false;
    }
    return true;
}

typedef struct dumpbuf {
    unsigned char *p;
    size_t len, cap;
} dumpbuf;

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
    (void)L;
    dumpbuf *d = ud;
    if (d->len + sz > d->cap) {
        d->cap = (d->len + sz) * 2 + 64;
        d->p = realloc(d->p, d->cap);
    }
    memcpy(d->p + d->len, p, sz);
    d->len += sz;
    return 0;
}

static bool uleb(const dumpbuf *d, size_t *pos, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 64 && *pos < d->len; shift += 7) {
        unsigned char b = d->p[(*pos)++];
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return true;
    }
    return false;
}

/* Whether the Lua function on top of the stack is vararg. LuaJIT's C API
 * does not say, so read the flags of its prototype from a bytecode dump
 * (lj_bcdump.h: header, then prototypes children first, the function's
 * own last; each starts with its length, then flags, PROTO_VARARG = 2). */
static bool is_vararg(lua_State *L) {
    dumpbuf d = {0};
    bool va = false;
    if (lua_dump(L, dump_writer, &d) == 0 && d.len > 5 && d.p[0] == 0x1b && d.p[1] == 'L' &&
        d.p[2] == 'J') {
        size_t pos = 4;
        uint64_t flags, n;
        if (uleb(&d, &pos, &flags)) {
            bool ok = true;
            if (!(flags & 2)) { /* not stripped: chunk name */
                ok = uleb(&d, &pos, &n) && n <= d.len - pos;
                if (ok) pos += n;
            }
            size_t last = SIZE_MAX;
            while (ok && uleb(&d, &pos, &n) && n > 0 && n <= d.len - pos) {
                last = pos;
                pos += n;
            }
            if (last != SIZE_MAX) va = (d.p[last] & 2) != 0;
        }
    }
    free(d.p);
    return va;
}

/* Parameter names of the function on top of the stack (JSON array). */
static json_t *param_names(lua_State *L) {
    json_t *a = json_array();
    if (lua_iscfunction(L, -1)) return a;
    for (int i = 1; i < 256; i++) {
        const char *n = lua_getlocal(L, NULL, i); /* LuaJIT: parameters of a non-running function */
        if (!n || n[0] == '(') break;
        json_array_append_new(a, json_string(n));
    }
    if (is_vararg(L)) json_array_append_new(a, json_string("..."));
    return a;
}

typedef struct entry_ud {
    linst *inst;
    const char *path;
    fm_export *ex; /* grows; owned by the caller (also on error) */
    size_t nex, cap;
    bool want;
    char **names;  /* scratch, owned by the caller */
    size_t nnames;
} entry_ud;

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Protected: runs an entry file and records its exports. */
static int load_entry(lua_State *L) {
    entry_ud *u = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_pushlightuserdata(L, &entry_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushstring(L, u->path);
    lua_call(L, 1, 1);
    if (lua_type(L, 1) != LUA_TTABLE)
        return luaL_error(L, "%s: an entry file must return a table of functions (it returned %s)",
                          u->path, lua_typename(L, lua_type(L, 1)));
    size_t cap = 0;
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        size_t kl;
        if (lua_type(L, -2) == LUA_TSTRING && lua_isfunction(L, -1)) {
            const char *k = lua_tolstring(L, -2, &kl);
            if (is_identifier(k, kl)) {
                if (u->nnames == cap) {
                    cap = cap ? cap * 2 : 16;
                    u->names = realloc(u->names, cap * sizeof(char *));
                }
                u->names[u->nnames++] = strdup(k);
            }
        }
        lua_pop(L, 1);
    }
    qsort(u->names, u->nnames, sizeof(char *), cmp_str);
    lua_pushlightuserdata(L, &fns_key);
    lua_rawget(L, LUA_REGISTRYINDEX); /* 2: fns */
    for (size_t i = 0; i < u->nnames; i++) {
        lua_getfield(L, 1, u->names[i]);
        if (!lua_isfunction(L, -1)) { /* a metamethod changed its mind */
            lua_pop(L, 1);
            continue;
        }
        json_t *params = u->want ? param_names(L) : NULL;
        lua_rawseti(L, 2, (int)++u->inst->nfns);
        if (u->want) {
            if (u->nex == u->cap) {
                u->cap = u->cap ? u->cap * 2 : 16;
                u->ex = realloc(u->ex, u->cap * sizeof(fm_export));
            }
            fm_export *e = &u->ex[u->nex++];
            memset(e, 0, sizeof(*e));
            e->name = strdup(u->names[i]);
            e->file = strdup(u->path);
            e->params = params;
        }
    }
    return 0;
}

/* The message of a failed lua_pcall/cpcall in top-level code (error on top). */
static void toplevel_error(linst *in, int rc, fm_err *err) {
    lua_State *L = in->L;
    void *tag = lua_type(L, -1) == LUA_TLIGHTUSERDATA ? lua_touserdata(L, -1) : NULL;
    if (tag == TIMEOUT_TAG)
        fm_err_set(err, FM_INVALID_BUNDLE, "top-level code ran longer than %d s", TOPLEVEL_US / 1000000);
    else if (rc == LUA_ERRMEM || tag == MEMORY_TAG || in->mem_hit)
        fm_err_set(err, FM_INVALID_BUNDLE, "top-level code: memory limit exceeded (%zu MiB)",
                   in->limit >> 20);
    else if (lua_type(L, -1) == LUA_TTABLE) {
        lua_getfield(L, -1, "message");
        const char *m = lua_tostring(L, -1);
        fm_err_set(err, FM_INVALID_BUNDLE, "top-level code threw: %s", m ? m : "an error object");
        lua_pop(L, 1);
    } else {
        const char *m = lua_tostring(L, -1);
        fm_err_set(err, FM_INVALID_BUNDLE, "top-level code threw: %s", m ? m : "an error object");
    }
    lua_pop(L, 1);
}

static void lua_instance_destroy(void *tsp, void *p);

static fm_status lua_instance_create(void *tsp, const char *deployment, const char *artifact,
                                     size_t artifact_len, const fm_instance_limits *lim, void **out,
                                     fm_export **exports, size_t *nexports, fm_err *err) {
    lthread *ts = tsp;
    linst *in = calloc(1, sizeof(*in));
    in->ts = ts;
    in->limit = lim->memory;
    in->gc_mark = in->limit / 4 * 3;
    in->deployment = strdup(deployment);
    if (fm_lua_unpack(artifact, artifact_len, &in->files, &in->nfiles, err) != FM_OK) {
        lua_instance_destroy(ts, in);
        return err->status;
    }
    in->L = lua_newstate(l_alloc, in);
    if (!in->L) {
        lua_instance_destroy(ts, in);
        return fm_err_set(err, FM_INTERNAL, "cannot create a Lua state");
    }
    lua_State *L = in->L;
    lua_atpanic(L, panic);
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    ctx_save saved = ctx_enter(ts, in, NULL, fm_mono_us() + TOPLEVEL_US);
    fm_status st = FM_OK;
    int rc = lua_cpcall(L, setup_state, NULL);
    if (rc != 0) {
        const char *m = lua_tostring(L, -1);
        st = fm_err_set(err, FM_INTERNAL, "cannot set up the Lua state: %s", m ? m : "?");
        lua_pop(L, 1);
    }
    lua_sethook(L, hook, LUA_MASKCOUNT, HOOK_EVERY);
    entry_ud u = {.inst = in, .want = exports != NULL};
    for (size_t i = 0; i < in->nfiles && st == FM_OK; i++) {
        if (!in->files[i].entry) continue;
        u.path = in->files[i].path;
        rc = lua_cpcall(L, load_entry, &u);
        for (size_t k = 0; k < u.nnames; k++) free(u.names[k]);
        u.nnames = 0;
        if (rc != 0) {
            toplevel_error(in, rc, err);
            st = FM_INVALID_BUNDLE;
        }
        lua_settop(L, 0);
    }
    free(u.names);
    ctx_leave(ts, saved);
    if (st != FM_OK) {
        fm_exports_free(u.ex, u.nex);
        lua_instance_destroy(ts, in);
        return st;
    }
    lua_gc(L, LUA_GCCOLLECT, 0);
    if (exports) {
        *exports = u.ex ? u.ex : calloc(1, sizeof(fm_export));
        *nexports = u.nex;
    }
    *out = in;
    return FM_OK;
}

/* ---------------------------------------------------------------- calls */

static int64_t deadline_of(const fm_job *job) {
    return job->deadline_us ? job->deadline_us : INT64_MAX;
}

/* Forgets the call's coroutine (the GC reclaims it) and frees the record. */
static void call_release(lcall *c) {
    lua_State *L = c->inst->L;
    if (c->co && c->reusable && lua_status(c->co) == 0) {
        /* keep it for the next call (a coroutine is the costliest part of one) */
        lua_settop(c->co, 0);
        lua_pushlightuserdata(L, &spare_key);
        lua_pushthread(c->co);
        lua_xmove(c->co, L, 1);
        lua_rawset(L, LUA_REGISTRYINDEX); /* an existing key: never allocates */
        c->inst->spare = c->co;
    }
    if (c->co) {
        lua_pushlightuserdata(L, &calls_key);
        lua_rawget(L, LUA_REGISTRYINDEX);
        lua_pushlightuserdata(L, c);
        lua_pushnil(L);
        lua_rawset(L, -3); /* assigning nil to an existing key never allocates */
        lua_pop(L, 1);
    }
    if (c->pend) c->pend->call = NULL;
    json_decref(c->result);
    json_decref(c->mesh_value);
    json_decref(c->mesh_error);
    free(c);
}

static void unlink_waiting(lthread *ts, lcall *c) {
    for (lcall **pp = &ts->waiting; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    c->next = NULL;
}

/* Protected: the call's coroutine with the trampoline and the function. */
static int setup_call(lua_State *L) {
    lcall *c = lua_touserdata(L, 1);
    lua_pushlightuserdata(L, &calls_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, c);
    lua_State *co = c->inst->spare;
    if (co) { /* the last call's coroutine, returned and empty */
        c->inst->spare = NULL;
        lua_pushlightuserdata(L, &spare_key);
        lua_rawget(L, LUA_REGISTRYINDEX);
    } else {
        co = lua_newthread(L);
    }
    lua_rawset(L, -3);
    c->co = co;
    lua_pushlightuserdata(L, &run_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, &fns_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_rawgeti(L, -1, (int)c->index + 1);
    lua_remove(L, -2);
    lua_xmove(L, co, 2);
    return 0;
}

typedef struct desc {
    lua_State *co;
    const char *fname; /* the export's name, for its frame in the traceback */
    char *message, *name, *stack, *code;
} desc;

static char *dup_field(lua_State *L, int t, const char *k) {
    lua_pushstring(L, k);
    lua_rawget(L, t);
    const char *s = lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER
                        ? lua_tostring(L, -1)
                        : NULL;
    char *r = s ? strdup(s) : NULL;
    lua_pop(L, 1);
    return r;
}

/* Protected: message, name, stack and code of the error on top of d->co. */
static int describe_error(lua_State *L) {
    desc *d = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_xmove(d->co, L, 1); /* 1: the error value */
    int t = lua_type(L, 1);
    if (t == LUA_TSTRING || t == LUA_TNUMBER) {
        d->message = strdup(lua_tostring(L, 1));
    } else if (t == LUA_TTABLE) {
        d->message = dup_field(L, 1, "message");
        d->name = dup_field(L, 1, "name");
        d->stack = dup_field(L, 1, "stack");
        d->code = dup_field(L, 1, "code");
        if (!d->message && luaL_callmeta(L, 1, "__tostring") && lua_isstring(L, -1))
            d->message = strdup(lua_tostring(L, -1));
    } else if (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, 1) == FM_LUA_NULL) {
        d->message = strdup("null");
    }
    if (!d->message) {
        lua_pushfstring(L, "(error object is a %s value)", lua_typename(L, t));
        d->message = strdup(lua_tostring(L, -1));
    }
    luaL_traceback(L, d->co, NULL, 0);
    const char *tb = lua_tostring(L, -1);
    /* drop the host's prelude frames */
    size_t n = strlen(tb), o = 0;
    char *clean = malloc(n + 1);
    for (const char *line = tb; *line;) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        /* the prelude's frames, and unnamed C frames (the host's functions) */
        if (!memmem(line, len, "\tfnmesh:", 8) && !memmem(line, len, "\t[C]: at 0x", 11) &&
            !memmem(line, len, "in function '__fm_", 18)) {
            if (o) clean[o++] = '\n';
            /* the trampoline calls the export through a local "__export" */
            static const char tramp[] = "in function '__export'";
            size_t tl = sizeof(tramp) - 1;
            if (len >= tl && memcmp(line + len - tl, tramp, tl) == 0 && d->fname) {
                int w = snprintf(NULL, 0, "%.*sin function '%s'", (int)(len - tl), line, d->fname);
                clean = realloc(clean, n + (size_t)w + 2);
                n += (size_t)w;
                o += (size_t)sprintf(clean + o, "%.*sin function '%s'", (int)(len - tl), line,
                                     d->fname);
            } else {
                memcpy(clean + o, line, len);
                o += len;
            }
        }
        line += len + (eol ? 1 : 0);
    }
    clean[o] = '\0';
    if (!strchr(clean, '\n')) o = 0, clean[0] = '\0'; /* only the header is left */
    if (d->stack) { /* a callee's error: its stack (ending with the hop) follows ours */
        char *both = malloc(o + strlen(d->stack) + 2);
        sprintf(both, "%s%s%s", clean, o ? "\n" : "", d->stack);
        free(clean);
        clean = both;
    }
    free(d->stack);
    d->stack = clean;
    return 0;
}

static void fail_from_error(lcall *c, int rc) {
    linst *in = c->inst;
    fm_job *job = c->job;
    lua_State *co = c->co;
    void *tag = lua_type(co, -1) == LUA_TLIGHTUSERDATA ? lua_touserdata(co, -1) : NULL;
    if (tag == TIMEOUT_TAG || fm_mono_us() >= deadline_of(job)) {
        fm_job_fail_timeout(job);
        return;
    }
    if (rc == LUA_ERRMEM || tag == MEMORY_TAG || in->mem_hit) {
        fail_memory(in, job);
        return;
    }
    desc d = {.co = co, .fname = job->fn ? job->fn->name : NULL};
    lthread *ts = tls_ts;
    int64_t saved = ts->deadline_us;
    ts->deadline_us = fm_mono_us() + DESCRIBE_US;
    int drc = lua_cpcall(in->L, describe_error, &d);
    ts->deadline_us = saved;
    if (drc != 0) {
        void *t2 = lua_type(in->L, -1) == LUA_TLIGHTUSERDATA ? lua_touserdata(in->L, -1) : NULL;
        lua_pop(in->L, 1);
        if (in->mem_hit || t2 == MEMORY_TAG) fail_memory(in, job);
        else if (t2 == TIMEOUT_TAG)
            fm_job_fail(job, FM_FUNCTION_ERROR,
                        "the function failed, and the __tostring of its error object did not "
                        "finish within 100 ms", "LuaError", NULL);
        else fm_job_fail(job, FM_FUNCTION_ERROR, d.message ? d.message : "the function failed",
                         "LuaError", NULL);
    } else {
        /* an uncaught error of a called function keeps its status */
        fm_job_fail(job, fm_mesh_status(d.code), d.message, d.name ? d.name : "LuaError", *d.stack ? d.stack : NULL);
    }
    free(d.message);
    free(d.name);
    free(d.stack);
    free(d.code);
}

static void succeed(lcall *c) {
    fm_job *job = c->job;
    json_t *v = c->result;
    c->result = NULL;
    if (job->want_value) {
        fm_job_succeed_value(job, v);
        return;
    }
    if (!v) v = json_null();
    size_t len;
    char *text = fm_json_dump(v, &len);
    json_decref(v);
    fm_job_succeed(job, text, len);
}

/* After a call: free the record, collect when memory ran short, finish. */
static void call_end(lcall *c) {
    linst *in = c->inst;
    fm_job *job = c->job;
    bool gc = in->mem_hit || in->used > in->limit / 4 * 3;
    call_release(c);
    if (gc) {
        lua_gc(in->L, LUA_GCCOLLECT, 0);
        in->gc_mark = in->limit / 4 * 3;
    }
    in->mem_hit = false;
    job->peak_memory = in->peak;
    fm_job_finish(job);
}

/* Runs the call's coroutine until it returns, fails or waits on the mesh. */
static void call_step(lcall *c, int nargs) {
    lthread *ts = tls_ts;
    linst *in = c->inst;
    ctx_save s = ctx_enter(ts, in, c, deadline_of(c->job));
    int rc = lua_resume(c->co, nargs);
    if (rc == LUA_YIELD && c->pend) {
        c->next = ts->waiting;
        ts->waiting = c;
        ctx_leave(ts, s);
        return;
    }
    if (rc == 0) {
        c->reusable = true;
        succeed(c);
    } else if (rc == LUA_YIELD) {
        fm_job_fail(c->job, FM_FUNCTION_ERROR,
                    "coroutine.yield() was called outside a coroutine made by the function",
                    "LuaError", NULL);
    } else {
        fail_from_error(c, rc);
    }
    ctx_leave(ts, s);
    call_end(c);
}

static void lua_call_export(void *tsp, void *ip, uint32_t index, fm_job *job) {
    lthread *ts = tsp;
    linst *in = ip;
    if (index >= in->nfns) {
        fm_job_fail(job, FM_INTERNAL, "function index out of range", NULL, NULL);
        fm_job_finish(job);
        return;
    }
    lcall *c = calloc(1, sizeof(*c));
    c->inst = in;
    c->job = job;
    c->index = index;
    in->peak = in->used;
    ctx_save s = ctx_enter(ts, in, c, deadline_of(job));
    int rc = lua_cpcall(in->L, setup_call, c);
    ctx_leave(ts, s);
    if (rc != 0) {
        lua_pop(in->L, 1);
        if (rc == LUA_ERRMEM || in->mem_hit) fail_memory(in, job);
        else fm_job_fail(job, FM_INTERNAL, "cannot start the call", NULL, NULL);
        call_end(c);
        return;
    }
    call_step(c, 1);
}

static void expire(lcall *c) {
    fm_job_fail_timeout(c->job);
    call_end(c);
}

/* Executor thread, later: the callee finished; resume the caller. */
static void on_mesh_done(fm_job *child, void *ud) {
    lpend *p = ud;
    lcall *c = p->call;
    free(p);
    if (!c) return; /* the caller is gone (expired): drop the result */
    c->pend = NULL;
    unlink_waiting(tls_ts, c);
    if (fm_mono_us() >= deadline_of(c->job)) {
        expire(c);
        return;
    }
    if (child->status == FM_OK) {
        c->mesh_value = child->value; /* taken over from the child */
        child->value = NULL;
    } else {
        c->mesh_error = fm_mesh_error(child);
    }
    c->mesh_ready = true;
    call_step(c, 0);
}

static int64_t lua_poll(void *tsp) {
    lthread *ts = tsp;
    int64_t now = fm_mono_us();
    int64_t next = -1;
    for (;;) {
        lcall *due = NULL;
        next = -1;
        for (lcall *c = ts->waiting; c; c = c->next) {
            int64_t dl = c->job->deadline_us;
            if (!dl) continue;
            if (now >= dl) {
                due = c;
                break;
            }
            if (next < 0 || dl - now < next) next = dl - now;
        }
        if (!due) break;
        /* expire one, then rescan: finishing it may resume or end others */
        unlink_waiting(ts, due);
        expire(due);
        now = fm_mono_us();
    }
    return next;
}

/* ---------------------------------------------------------------- lifecycle */

static void *lua_thread_init(int index) {
    (void)index;
    lthread *ts = calloc(1, sizeof(*ts));
    ts->deadline_us = INT64_MAX;
    tls_ts = ts;
    return ts;
}

static void lua_thread_dispose(void *p) {
    lthread *ts = p;
    /* calls still suspended at shutdown: detach them from the mesh and free
     * the records (their jobs belong to the executor; their states are not
     * touched here) */
    while (ts->waiting) {
        lcall *c = ts->waiting;
        ts->waiting = c->next;
        if (c->pend) c->pend->call = NULL;
        json_decref(c->result);
        json_decref(c->mesh_value);
        json_decref(c->mesh_error);
        free(c);
    }
    if (tls_ts == ts) tls_ts = NULL;
    free(ts);
}

static void lua_instance_destroy(void *tsp, void *p) {
    lthread *ts = tsp;
    linst *in = p;
    if (!in) return;
    /* a version is retired only after its last call, so nothing should be
     * waiting here; fail whatever is, rather than leave it dangling */
    for (lcall **pp = &ts->waiting; *pp;) {
        lcall *c = *pp;
        if (c->inst != in) {
            pp = &c->next;
            continue;
        }
        *pp = c->next;
        fm_job_fail(c->job, FM_INTERNAL, "the function's instance was destroyed", NULL, NULL);
        fm_job *job = c->job;
        if (c->pend) c->pend->call = NULL;
        c->co = NULL; /* the state goes away below */
        call_release(c);
        fm_job_finish(job);
        pp = &ts->waiting;
    }
    if (in->L) lua_close(in->L);
    free(in->files);
    free(in->deployment);
    free(in);
}

const fm_runtime fm_runtime_lua = {
    .name = "lua",
    .call_nested = true,
    .instance_bytes = 64 << 10, /* a Lua state with the safe libraries */
    .extensions = lua_extensions,
    .compile = lua_compile,
    .thread_init = lua_thread_init,
    .thread_dispose = lua_thread_dispose,
    .instance_create = lua_instance_create,
    .instance_destroy = lua_instance_destroy,
    .call = lua_call_export,
    .poll = lua_poll,
};
