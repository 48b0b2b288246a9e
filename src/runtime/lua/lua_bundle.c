/* lua_bundle.c - the Lua runtime's artifact: every .lua file of a bundle
 * packed with its path (format in lua_int.h), and how `require` names map
 * onto those paths.
 *
 * Packing checks the syntax of every file (entries and modules) with
 * LuaJIT's parser in a throw-away state, so a syntax error anywhere in the
 * bundle refuses the deploy with "file.lua:LINE: message". Unpacking only
 * indexes: the artifact's bytes stay where they are (borrowed). Module
 * lookups never touch the filesystem. */
#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/lua/lua_int.h"

#define MAGIC "FMLUA1\n"
#define MAGIC_LEN 7

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 256;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void put_u32(buf *b, uint32_t v) {
    unsigned char x[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    put(b, x, 4);
}

static bool is_lua(const char *path) {
    size_t n = strlen(path);
    return n > 4 && strcmp(path + n - 4, ".lua") == 0;
}

fm_status fm_lua_pack(const fm_bundle *b, const char *const *entries, size_t nentries,
                      char **artifact, size_t *artifact_len, fm_err *err) {
    lua_State *L = luaL_newstate();
    if (!L) return fm_err_set(err, FM_INTERNAL, "cannot create a Lua state");
    buf out = {0};
    put(&out, MAGIC, MAGIC_LEN);
    put_u32(&out, 0); /* count, patched below */
    uint32_t count = 0;
    fm_status st = FM_OK;
    for (size_t i = 0; i < b->nfiles && st == FM_OK; i++) {
        const fm_bundle_file *f = &b->files[i];
        if (f->link || !f->data || !is_lua(f->path)) continue;
        bool entry = false;
        for (size_t k = 0; k < nentries; k++)
            if (strcmp(entries[k], f->path) == 0) entry = true;
        size_t plen = strlen(f->path);
        char *chunk = malloc(plen + 2);
        chunk[0] = '@';
        memcpy(chunk + 1, f->path, plen + 1);
        /* text only: a precompiled chunk is refused like a syntax error */
        if (luaL_loadbufferx(L, f->data, f->len, chunk, "t") != 0) {
            const char *m = lua_tostring(L, -1);
            if (m && strncmp(m, f->path, plen) == 0 && m[plen] == ':')
                st = fm_err_set(err, FM_INVALID_BUNDLE, "%s", m);
            else
                st = fm_err_set(err, FM_INVALID_BUNDLE, "%s: %s", f->path, m ? m : "cannot load");
        }
        lua_settop(L, 0);
        free(chunk);
        if (st != FM_OK) break;
        if (plen > UINT32_MAX || f->len > UINT32_MAX) {
            st = fm_err_set(err, FM_INVALID_BUNDLE, "%s: file too large", f->path);
            break;
        }
        unsigned char flags = entry ? 1 : 0;
        put(&out, &flags, 1);
        put_u32(&out, (uint32_t)plen);
        put(&out, f->path, plen + 1);
        put_u32(&out, (uint32_t)f->len);
        put(&out, f->data, f->len);
        count++;
    }
    lua_close(L);
    if (st != FM_OK) {
        free(out.p);
        return st;
    }
    for (int k = 0; k < 4; k++) out.p[MAGIC_LEN + k] = (char)(count >> (8 * k));
    *artifact = out.p;
    *artifact_len = out.len;
    return FM_OK;
}

static bool get_u32(const char *a, size_t len, size_t *pos, uint32_t *v) {
    if (len - *pos < 4) return false;
    const unsigned char *p = (const unsigned char *)a + *pos;
    *v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    *pos += 4;
    return true;
}

fm_status fm_lua_unpack(const char *a, size_t len, fm_lua_file **files, size_t *nfiles,
                        fm_err *err) {
    *files = NULL;
    *nfiles = 0;
    size_t pos = MAGIC_LEN;
    uint32_t count;
    if (len < MAGIC_LEN || memcmp(a, MAGIC, MAGIC_LEN) != 0 || !get_u32(a, len, &pos, &count) ||
        count > (len - pos) / 10)
        return fm_err_set(err, FM_INTERNAL, "corrupt Lua artifact (header)");
    fm_lua_file *fs = calloc(count ? count : 1, sizeof(*fs));
    for (uint32_t i = 0; i < count; i++) {
        uint32_t plen, slen;
        if (pos >= len) goto bad;
        fs[i].entry = a[pos++] & 1;
        if (!get_u32(a, len, &pos, &plen) || len - pos < (size_t)plen + 1 || a[pos + plen] != '\0')
            goto bad;
        fs[i].path = a + pos;
        pos += (size_t)plen + 1;
        if (!get_u32(a, len, &pos, &slen) || len - pos < slen) goto bad;
        fs[i].src = a + pos;
        fs[i].src_len = slen;
        pos += slen;
    }
    *files = fs;
    *nfiles = count;
    return FM_OK;
bad:
    free(fs);
    return fm_err_set(err, FM_INTERNAL, "corrupt Lua artifact");
}

/* Normalises "a/./b/../c" in place; false when ".." climbs above the root. */
static bool normalise(char *p) {
    char *segs[256];
    int n = 0;
    char *save = NULL;
    char tmp[1200];
    snprintf(tmp, sizeof(tmp), "%s", p);
    for (char *s = strtok_r(tmp, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
        if (strcmp(s, ".") == 0) continue;
        if (strcmp(s, "..") == 0) {
            if (n == 0) return false;
            n--;
            continue;
        }
        if (n == 256) return false;
        segs[n++] = s;
    }
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(segs[i]);
        if (i) p[o++] = '/';
        memmove(p + o, segs[i], l);
        o += l;
    }
    p[o] = '\0';
    return o > 0;
}

static const fm_lua_file *find(const fm_lua_file *files, size_t n, const char *path) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(files[i].path, path) == 0) return &files[i];
    return NULL;
}

const fm_lua_file *fm_lua_resolve(const fm_lua_file *files, size_t nfiles, const char *name,
                                  size_t name_len, const char *from_dir, char *tried,
                                  size_t tried_len) {
    tried[0] = '\0';
    if (name_len == 0 || name_len > 512 || memchr(name, '\0', name_len)) return NULL;
    char base[1100];
    size_t nl = name_len;
    if (nl > 4 && memcmp(name + nl - 4, ".lua", 4) == 0) nl -= 4;
    bool relative = (nl >= 2 && name[0] == '.' && name[1] == '/') ||
                    (nl >= 3 && memcmp(name, "../", 3) == 0);
    if (relative) {
        snprintf(base, sizeof(base), "%s%s%.*s", from_dir, *from_dir ? "/" : "", (int)nl, name);
    } else if (memchr(name, '/', nl)) {
        snprintf(base, sizeof(base), "%.*s", (int)nl, name);
    } else { /* Lua style: dots separate folders */
        snprintf(base, sizeof(base), "%.*s", (int)nl, name);
        for (char *c = base; *c; c++)
            if (*c == '.') *c = '/';
    }
    if (!normalise(base)) return NULL;
    char cand[1200];
    snprintf(cand, sizeof(cand), "%s.lua", base);
    const fm_lua_file *f = find(files, nfiles, cand);
    if (f) return f;
    snprintf(tried, tried_len, "%s", cand);
    snprintf(cand, sizeof(cand), "%s/init.lua", base);
    f = find(files, nfiles, cand);
    if (f) return f;
    size_t tl = strlen(tried);
    snprintf(tried + tl, tried_len - tl, ", %s", cand);
    return NULL;
}
