/* lua_int.h - private to the Lua runtime (src/runtime/lua/): the artifact
 * format, module resolution, and the JSON <-> Lua value conversion.
 *
 * Nothing here is used outside this folder; the runtime itself is only
 * reachable through `fm_runtime_lua` (runtime.c's table). */
#ifndef FM_LUA_INT_H
#define FM_LUA_INT_H

#include <jansson.h>
#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/status.h"
#include "registry/bundle.h"

/* ---- the artifact (lua_bundle.c) -----------------------------------------
 * "FMLUA1\n", u32 count, then per file: u8 flags (1 = entry), u32 path
 * length, path bytes, NUL, u32 source length, source bytes (little endian).
 * It keeps the Lua source text, not bytecode: LuaJIT bytecode is tied to
 * the exact LuaJIT build, and stored artifacts must survive upgrades. */
#define FM_LUA_MAX_DEPTH 512 /* nesting limit of values crossing the boundary */

typedef struct fm_lua_file {
    const char *path; /* NUL-terminated, borrowed from the artifact */
    const char *src;  /* borrowed from the artifact, src_len bytes */
    size_t src_len;
    bool entry;
} fm_lua_file;

/* Packs every .lua file of the bundle (entries flagged), after checking the
 * syntax of each. Errors: FM_INVALID_BUNDLE "file.lua:LINE: message". */
fm_status fm_lua_pack(const fm_bundle *b, const char *const *entries, size_t nentries,
                      char **artifact, size_t *artifact_len, fm_err *err);
/* Indexes an artifact: *files (owned array, pointers borrowed from
 * `artifact`, which must outlive it). Errors: FM_INTERNAL (corrupt). */
fm_status fm_lua_unpack(const char *artifact, size_t len, fm_lua_file **files, size_t *nfiles,
                        fm_err *err);
/* The file a module name resolves to, or NULL. `name` is "lib.util",
 * "lib/util", "./util" or "../util" (with or without ".lua"); relative names
 * are resolved against `from_dir` (the requiring file's folder, "" for the
 * root). Tries NAME.lua, then NAME/init.lua. `tried` receives the
 * candidates for the error message. */
const fm_lua_file *fm_lua_resolve(const fm_lua_file *files, size_t nfiles, const char *name,
                                  size_t name_len, const char *from_dir, char *tried,
                                  size_t tried_len);

/* ---- values (lua_json.c) --------------------------------------------------
 * JSON null is the lightuserdata FM_LUA_NULL (`fnmesh.null`); arrays become
 * tables 1..n carrying the array metatable (registry[FM_LUA_ARRAY_MT]), so
 * that they stay arrays (even empty ones) when sent back. */
extern char fm_lua_null_tag;     /* address = fnmesh.null */
extern char fm_lua_array_mt_key; /* registry key of the array metatable */
extern char fm_lua_bytes_mt_key; /* registry key of the metatable of fnmesh.bytes(s) */
extern char fm_lua_int64_key;    /* registry key of ffi.typeof("int64_t") */
extern char fm_lua_uint64_key;   /* registry key of ffi.typeof("uint64_t") */
extern char fm_lua_istype_key;   /* registry key of ffi.istype */
/* Loads LuaJIT's FFI for the host only (64-bit integers as int64_t cdata):
 * keeps the three values above in the registry, leaves no way to reach the
 * `ffi` module itself. Call in protected code while setting up a state. */
void fm_lua_init_int64(lua_State *L);
#define FM_LUA_NULL ((void *)&fm_lua_null_tag)

/* Pushes `j` (NULL = nil). May raise a Lua error (memory, stack): call it
 * only in protected code. */
void fm_lua_push_json(lua_State *L, const json_t *j);

/* Converts the value at `idx` to a new json_t, or returns NULL with `why`
 * set. Raises only if growing the Lua stack fails (protected code only).
 * `budget` (bytes,
 * decremented) bounds the size of the result: shared strings would
 * otherwise multiply. */
json_t *fm_lua_to_json(lua_State *L, int idx, size_t *budget, char *why, size_t why_len);

#endif
