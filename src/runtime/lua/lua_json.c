/* lua_json.c - JSON values (jansson) to Lua values and back.
 *
 * JSON -> Lua: null is `fnmesh.null` (a lightuserdata), so arrays keep
 * their length and objects their keys; numbers become doubles, except
 * integers beyond 2^53, which become exact int64_t cdata (LuaJIT's 64-bit
 * integers: arithmetic and comparisons work, tostring adds "LL"); strings keep NUL bytes; arrays are tables
 * 1..n marked with the array metatable.
 *
 * Lua -> JSON: nil and fnmesh.null are null; a table is an array when it
 * carries the array metatable or when its keys are exactly 1..n (n > 0),
 * otherwise an object (number keys become strings, other keys are an
 * error); an empty unmarked table is {}. Bytes ({"$bytes": ...}) arrive as
 * strings; a string that is not valid UTF-8 leaves as bytes, and so does
 * fnmesh.bytes(s) (a table {s} with the bytes metatable) whatever s holds. NaN and infinities, functions, userdata,
 * coroutines, cycles and nesting deeper than FM_LUA_MAX_DEPTH are errors.
 * This direction reports problems through `why` instead of raising; only
 * growing the Lua stack can raise (memory), so both directions run in
 * protected code. */
#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "runtime/lua/lua_int.h"

char fm_lua_null_tag;
char fm_lua_array_mt_key;
char fm_lua_bytes_mt_key;
char fm_lua_int64_key, fm_lua_uint64_key, fm_lua_istype_key;

static char ffi_module_key;

#define LUA_TCDATA 10 /* LuaJIT's type tag of FFI data (not in lua.h) */
#define EXACT_DOUBLE_MAX 9007199254740992LL /* 2^53 */

void fm_lua_init_int64(lua_State *L) {
    lua_pushcfunction(L, luaopen_ffi);
    lua_pushstring(L, LUA_FFILIBNAME);
    lua_call(L, 1, 1); /* the ffi table: used here, then dropped */
    static const struct {
        char *key;
        const char *ctype;
    } types[] = {{&fm_lua_int64_key, "int64_t"}, {&fm_lua_uint64_key, "uint64_t"}};
    for (size_t i = 0; i < 2; i++) {
        lua_pushlightuserdata(L, types[i].key);
        lua_getfield(L, -2, "typeof");
        lua_pushstring(L, types[i].ctype);
        lua_call(L, 1, 1);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
    lua_pushlightuserdata(L, &fm_lua_istype_key);
    lua_getfield(L, -2, "istype");
    lua_rawset(L, LUA_REGISTRYINDEX);
    /* The module must stay alive: the FFI's state points into tables only
     * the module's functions hold, and frees them again at lua_close. Keep
     * it under a private registry key instead of as a loaded module. */
    lua_pushlightuserdata(L, &ffi_module_key);
    lua_insert(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        lua_setfield(L, -2, LUA_FFILIBNAME);
    }
    lua_pop(L, 1);
}

/* Pushes an exact 64-bit integer as int64_t cdata. */
static void push_int64(lua_State *L, int64_t v) {
    lua_pushlightuserdata(L, &fm_lua_int64_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushnumber(L, 0);
    lua_call(L, 1, 1);                          /* int64_t(0) */
    *(int64_t *)(uintptr_t)lua_topointer(L, -1) = v; /* the cdata's payload */
}

/* True (with *out) when the value at idx is int64_t or uint64_t cdata. */
static bool get_int64(lua_State *L, int idx, json_int_t *out, double *as_double) {
    static char *const keys[] = {&fm_lua_int64_key, &fm_lua_uint64_key};
    for (int k = 0; k < 2; k++) {
        lua_pushlightuserdata(L, &fm_lua_istype_key);
        lua_rawget(L, LUA_REGISTRYINDEX);
        lua_pushlightuserdata(L, keys[k]);
        lua_rawget(L, LUA_REGISTRYINDEX);
        lua_pushvalue(L, idx);
        lua_call(L, 2, 1);
        bool is = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (!is) continue;
        const void *p = lua_topointer(L, idx);
        if (k == 0) {
            *out = (json_int_t) * (const int64_t *)p;
            *as_double = 0;
        } else {
            uint64_t u = *(const uint64_t *)p;
            *out = u <= INT64_MAX ? (json_int_t)u : 0;
            *as_double = u <= INT64_MAX ? 0 : (double)u; /* beyond int64: the nearest double */
        }
        return true;
    }
    return false;
}

static void push(lua_State *L, const json_t *j, int depth) {
    luaL_checkstack(L, 4, "value nested too deeply");
    if (depth > FM_LUA_MAX_DEPTH) luaL_error(L, "value nested deeper than %d levels", FM_LUA_MAX_DEPTH);
    switch (json_typeof(j)) {
    case JSON_NULL:
        lua_pushlightuserdata(L, FM_LUA_NULL);
        return;
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        return;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        return;
    case JSON_INTEGER: {
        json_int_t v = json_integer_value(j);
        if (v > EXACT_DOUBLE_MAX || v < -EXACT_DOUBLE_MAX) push_int64(L, (int64_t)v);
        else lua_pushnumber(L, (lua_Number)v);
        return;
    }
    case JSON_REAL:
        lua_pushnumber(L, json_real_value(j));
        return;
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(j), json_string_length(j));
        return;
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        lua_createtable(L, n > 1u << 26 ? 1 << 26 : (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            push(L, json_array_get(j, i), depth + 1);
            lua_rawseti(L, -2, (int)(i + 1));
        }
        lua_pushlightuserdata(L, &fm_lua_array_mt_key);
        lua_rawget(L, LUA_REGISTRYINDEX);
        lua_setmetatable(L, -2);
        return;
    }
    case JSON_OBJECT: {
        size_t blen = 0;
        unsigned char *bytes = fm_json_is_bytes(j) ? fm_json_bytes_decode(j, &blen) : NULL;
        if (bytes) { /* bytes arrive as a Lua string */
            lua_pushlstring(L, (const char *)bytes, blen);
            free(bytes);
            return;
        }
        size_t n = json_object_size(j);
        lua_createtable(L, 0, n > 1u << 26 ? 1 << 26 : (int)n);
        const char *key;
        size_t klen;
        json_t *v;
        json_object_keylen_foreach((json_t *)j, key, klen, v) {
            lua_pushlstring(L, key, klen);
            push(L, v, depth + 1);
            lua_rawset(L, -3);
        }
        return;
    }
    }
    lua_pushnil(L);
}

void fm_lua_push_json(lua_State *L, const json_t *j) {
    if (!j) lua_pushnil(L);
    else push(L, j, 0);
}

/* ---- Lua -> JSON ---- */

typedef struct conv {
    lua_State *L;
    size_t *budget;
    char *why;
    size_t why_len;
    const void *path[FM_LUA_MAX_DEPTH + 1]; /* tables being converted (cycle check) */
} conv;

static json_t *fail(conv *c, const char *fmt, const char *arg) {
    if (!c->why[0]) snprintf(c->why, c->why_len, fmt, arg);
    return NULL;
}

static bool spend(conv *c, size_t n) {
    if (*c->budget < n) {
        fail(c, "%s", "the value is too large (over the memory limit)");
        return false;
    }
    *c->budget -= n;
    return true;
}

static json_t *number(conv *c, lua_Number d) {
    if (isnan(d) || isinf(d)) return fail(c, "%s", "NaN and infinity cannot be represented in JSON");
    if (d == floor(d) && fabs(d) < 9.2e18) return json_integer((json_int_t)d);
    return json_real(d);
}

static json_t *conv_value(conv *c, int idx, int depth);

/* Object key of the key at stack top (a string or a number). */
static json_t *key_of(conv *c) {
    lua_State *L = c->L;
    if (lua_type(L, -2) == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, -2, &len);
        if (!spend(c, len)) return NULL;
        return fm_json_strn(s, len);
    }
    if (lua_type(L, -2) == LUA_TNUMBER) {
        lua_Number d = lua_tonumber(L, -2);
        char b[64];
        if (d == floor(d) && fabs(d) < 9.2e18) snprintf(b, sizeof(b), "%lld", (long long)d);
        else snprintf(b, sizeof(b), "%.17g", d);
        return json_string(b);
    }
    return fail(c, "a table key of type %s cannot be a JSON object key", lua_typename(L, lua_type(L, -2)));
}

static json_t *conv_table(conv *c, int idx, int depth) {
    lua_State *L = c->L;
    if (depth >= FM_LUA_MAX_DEPTH)
        return fail(c, "%s", "tables nested deeper than 512 levels");
    const void *me = lua_topointer(L, idx);
    for (int i = 0; i < depth; i++)
        if (c->path[i] == me) return fail(c, "%s", "a table contains itself (cycle)");
    c->path[depth] = me;
    if (!lua_checkstack(L, 4)) return fail(c, "%s", "out of stack space");
    bool marked = false;
    if (lua_getmetatable(L, idx)) {
        lua_pushlightuserdata(L, &fm_lua_array_mt_key);
        lua_rawget(L, LUA_REGISTRYINDEX);
        marked = lua_rawequal(L, -1, -2);
        lua_pop(L, 1);
        lua_pushlightuserdata(L, &fm_lua_bytes_mt_key);
        lua_rawget(L, LUA_REGISTRYINDEX);
        bool bytes = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
        if (bytes) { /* fnmesh.bytes(s) */
            lua_rawgeti(L, idx, 1);
            size_t len = 0;
            const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : "";
            json_t *b = spend(c, len * 4 / 3 + 16) ? fm_json_bytes(s, len) : NULL;
            lua_pop(L, 1);
            return b;
        }
    }
    size_t n;
    bool array = marked;
    if (marked) {
        n = lua_objlen(L, idx);
    } else {
        size_t count = 0;
        lua_Number max = 0;
        bool ints = true;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pop(L, 1);
            count++;
            if (ints && lua_type(L, -1) == LUA_TNUMBER) {
                lua_Number d = lua_tonumber(L, -1);
                if (d >= 1 && d == floor(d)) {
                    if (d > max) max = d;
                } else {
                    ints = false;
                }
            } else {
                ints = false;
            }
        }
        array = count > 0 && ints && max == (lua_Number)count;
        n = count;
    }
    if (!spend(c, 16 + n * 8)) return NULL;
    if (array) {
        json_t *a = json_array();
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, (int)i);
            json_t *v = conv_value(c, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
            if (!v) {
                json_decref(a);
                return NULL;
            }
            json_array_append_new(a, v);
        }
        return a;
    }
    json_t *o = json_object();
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        json_t *k = key_of(c);
        json_t *v = k ? conv_value(c, lua_gettop(L), depth + 1) : NULL;
        lua_pop(L, 1);
        if (!v) {
            json_decref(k);
            json_decref(o);
            lua_pop(L, 1);
            return NULL;
        }
        json_object_setn_new(o, json_string_value(k), json_string_length(k), v);
        json_decref(k);
    }
    return o;
}

static json_t *conv_value(conv *c, int idx, int depth) {
    lua_State *L = c->L;
    if (!spend(c, 16)) return NULL;
    switch (lua_type(L, idx)) {
    case LUA_TNONE: /* no value at all: a function that returned nothing */
    case LUA_TNIL:
        return json_null();
    case LUA_TBOOLEAN:
        return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        return number(c, lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (!spend(c, len)) return NULL;
        json_t *str = json_stringn(s, len); /* NULL when not valid UTF-8 */
        return str ? str : fm_json_bytes(s, len); /* binary: bytes */
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == FM_LUA_NULL) return json_null();
        break;
    case LUA_TTABLE:
        return conv_table(c, idx, depth);
    case LUA_TCDATA: {
        json_int_t v;
        double d;
        if (!get_int64(L, idx, &v, &d)) break;
        return d != 0 ? json_real(d) : json_integer(v);
    }
    default:
        break;
    }
    return fail(c, "a %s value cannot be converted to JSON", lua_typename(L, lua_type(L, idx)));
}

json_t *fm_lua_to_json(lua_State *L, int idx, size_t *budget, char *why, size_t why_len) {
    if (idx < 0 && idx > LUA_REGISTRYINDEX) idx = lua_gettop(L) + idx + 1;
    conv cv; /* 4 KiB of stack; path[d] is written before anything reads it */
    conv *c = &cv;
    c->L = L;
    c->budget = budget;
    c->why = why;
    c->why_len = why_len;
    why[0] = '\0';
    int top = lua_gettop(L);
    json_t *r = conv_value(c, idx, 0);
    lua_settop(L, top);
    if (!r && !why[0]) snprintf(why, why_len, "cannot convert the value");
    return r;
}
