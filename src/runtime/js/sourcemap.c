/* sourcemap.c - Source Map v3 decoding (see sourcemap.h). */
#include "runtime/js/sourcemap.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct seg {
    int gline, gcol; /* 0-based */
    int src, sline, scol;
} seg;

struct fm_sourcemap {
    char **sources;
    size_t nsources;
    seg *segs; /* sorted by (gline, gcol) */
    size_t nsegs;
};

static int b64(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decodes one VLQ value at *p; returns -1 on malformed input. */
static int vlq(const char **p, int *out) {
    int result = 0, shift = 0;
    for (;;) {
        int d = b64(**p);
        if (d < 0 || shift > 30) return -1;
        (*p)++;
        result += (d & 31) << shift;
        shift += 5;
        if (!(d & 32)) break;
    }
    *out = (result & 1) ? -(result >> 1) : (result >> 1);
    return 0;
}

void fm_sourcemap_free(fm_sourcemap *m) {
    if (!m) return;
    for (size_t i = 0; i < m->nsources; i++) free(m->sources[i]);
    free(m->sources);
    free(m->segs);
    free(m);
}

fm_sourcemap *fm_sourcemap_parse(const char *json, size_t len, const char *strip) {
    json_t *doc = json_loadb(json, len, 0, NULL);
    const char *mappings = json_string_value(json_object_get(doc, "mappings"));
    json_t *sources = json_object_get(doc, "sources");
    if (!mappings || !json_is_array(sources)) {
        json_decref(doc);
        return NULL;
    }
    fm_sourcemap *m = calloc(1, sizeof(*m));
    m->nsources = json_array_size(sources);
    m->sources = calloc(m->nsources ? m->nsources : 1, sizeof(char *));
    size_t sl = strip ? strlen(strip) : 0;
    for (size_t i = 0; i < m->nsources; i++) {
        const char *s = json_string_value(json_array_get(sources, i));
        if (!s) s = "?";
        if (sl && strncmp(s, strip, sl) == 0) s += sl;
        m->sources[i] = strdup(s);
    }
    size_t cap = 256;
    m->segs = malloc(cap * sizeof(seg));
    int gline = 0, gcol = 0, src = 0, sline = 0, scol = 0, name = 0;
    const char *p = mappings;
    while (*p) {
        if (*p == ';') {
            gline++;
            gcol = 0;
            p++;
            continue;
        }
        if (*p == ',') {
            p++;
            continue;
        }
        int f[5], n = 0;
        while (n < 5 && *p && *p != ',' && *p != ';') {
            if (vlq(&p, &f[n]) != 0) goto bad;
            n++;
        }
        gcol += f[0];
        if (n >= 4) {
            src += f[1];
            sline += f[2];
            scol += f[3];
            if (n == 5) name += f[4];
            if (m->nsegs == cap) m->segs = realloc(m->segs, (cap *= 2) * sizeof(seg));
            m->segs[m->nsegs++] = (seg){gline, gcol, src, sline, scol};
        }
    }
    json_decref(doc);
    return m;
bad:
    json_decref(doc);
    fm_sourcemap_free(m);
    return NULL;
}

int fm_sourcemap_lookup(const fm_sourcemap *m, int line, int col, const char **source,
                        int *src_line, int *src_col) {
    int gl = line - 1, gc = col - 1;
    size_t lo = 0, hi = m->nsegs;
    /* last segment with (gline, gcol) <= (gl, gc) */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const seg *s = &m->segs[mid];
        if (s->gline < gl || (s->gline == gl && s->gcol <= gc)) lo = mid + 1;
        else hi = mid;
    }
    if (lo == 0) return -1;
    const seg *s = &m->segs[lo - 1];
    if (s->gline != gl || s->src < 0 || (size_t)s->src >= m->nsources) return -1;
    *source = m->sources[s->src];
    *src_line = s->sline + 1;
    *src_col = s->scol + 1;
    return 0;
}

char *fm_sourcemap_rewrite(const fm_sourcemap *m, const char *text, const char *url) {
    size_t ul = strlen(url), cap = strlen(text) * 2 + 64, o = 0;
    char *out = malloc(cap);
    const char *p = text;
    while (*p) {
        const char *hit = strstr(p, url);
        if (!hit) hit = p + strlen(p);
        size_t n = (size_t)(hit - p);
        if (o + n + 1 > cap) out = realloc(out, cap = (o + n + 1) * 2);
        memcpy(out + o, p, n);
        o += n;
        p = hit;
        if (!*p) break;
        int line = 0, col = 0, used = 0;
        const char *src;
        int sl, sc;
        if (sscanf(p + ul, ":%d:%d%n", &line, &col, &used) == 2 &&
            fm_sourcemap_lookup(m, line, col, &src, &sl, &sc) == 0) {
            char buf[600];
            int w = snprintf(buf, sizeof(buf), "%.500s:%d:%d", src, sl, sc);
            if (o + (size_t)w + 1 > cap) out = realloc(out, cap = (o + (size_t)w + 1) * 2);
            memcpy(out + o, buf, (size_t)w);
            o += (size_t)w;
            p += ul + (size_t)used;
        } else {
            if (o + ul + 1 > cap) out = realloc(out, cap = (o + ul + 1) * 2);
            memcpy(out + o, p, ul);
            o += ul;
            p += ul;
        }
    }
    out[o] = '\0';
    return out;
}
