/* cli_util.c - small helpers of the fnmesh client: growable buffer,
 * formatted strings, a plain-text table, URL path segments, JSON bits.
 *
 * Allocation failures are sticky: a buffer or table that failed once ignores
 * later appends and says so in `oom`, so callers check once at the end
 * instead of after every append. Nothing here prints except
 * fm_cli_table_print() and fm_cli_nomem(). */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"

/* ---- buffer ---------------------------------------------------------- */

/* Makes room for `extra` more bytes plus the terminating NUL. */
static bool buf_reserve(fm_cli_buf *b, size_t extra) {
    if (b->oom) return false;
    if (extra >= SIZE_MAX / 2 - b->len) {
        b->oom = true;
        return false;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

void fm_cli_buf_append(fm_cli_buf *b, const void *p, size_t n) {
    if (!buf_reserve(b, n)) return;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void fm_cli_buf_puts(fm_cli_buf *b, const char *s) {
    fm_cli_buf_append(b, s, strlen(s));
}

static void buf_vprintf(fm_cli_buf *b, const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if (!buf_reserve(b, (size_t)n)) return;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
}

void fm_cli_buf_printf(fm_cli_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void fm_cli_buf_put_segment(fm_cli_buf *b, const char *seg) {
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)seg; *p; p++) {
        unsigned char c = *p;
        bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_' || c == '~';
        if (keep) {
            fm_cli_buf_append(b, &c, 1);
        } else {
            char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
            fm_cli_buf_append(b, esc, 3);
        }
    }
}

void fm_cli_buf_put_json_compact(fm_cli_buf *b, const char *s, size_t n) {
    bool in_str = false, esc = false;
    size_t run = 0; /* start of the pending run of bytes to copy */
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            fm_cli_buf_append(b, s + run, i - run);
            run = i + 1;
        }
    }
    fm_cli_buf_append(b, s + run, n - run);
}

void fm_cli_buf_dispose(fm_cli_buf *b) {
    free(b->data);
    *b = (fm_cli_buf){0};
}

char *fm_cli_fmt(const char *fmt, ...) {
    fm_cli_buf b = {0};
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (!b.oom && !b.data) fm_cli_buf_append(&b, "", 0);
    if (b.oom) {
        fm_cli_buf_dispose(&b);
        return NULL;
    }
    return b.data;
}

int fm_cli_nomem(void) {
    fputs("error: out of memory\n", stderr);
    return FM_CLI_ERR;
}

/* ---- table ----------------------------------------------------------- */

void fm_cli_table_init(fm_cli_table *t, size_t ncols) {
    *t = (fm_cli_table){.ncols = ncols};
}

void fm_cli_table_add(fm_cli_table *t, const char *fmt, ...) {
    if (t->oom) return;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 32;
        char **cells = realloc(t->cells, cap * sizeof *cells);
        if (!cells) {
            t->oom = true;
            return;
        }
        t->cells = cells;
        t->cap = cap;
    }
    fm_cli_buf b = {0};
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (!b.oom && !b.data) fm_cli_buf_append(&b, "", 0);
    if (b.oom) {
        fm_cli_buf_dispose(&b);
        t->oom = true;
        return;
    }
    t->cells[t->n++] = b.data;
}

int fm_cli_table_print(const fm_cli_table *t) {
    if (t->oom) return fm_cli_nomem();
    assert(t->ncols > 0 && t->n % t->ncols == 0);
    size_t *width = calloc(t->ncols, sizeof *width);
    if (!width) return fm_cli_nomem();
    for (size_t i = 0; i < t->n; i++) {
        size_t len = strlen(t->cells[i]);
        if (len > width[i % t->ncols]) width[i % t->ncols] = len;
    }
    int rc = FM_CLI_OK;
    fm_cli_buf line = {0};
    for (size_t i = 0; i < t->n; i++) {
        size_t col = i % t->ncols;
        if (col + 1 < t->ncols)
            fm_cli_buf_printf(&line, "%-*s  ", (int)width[col], t->cells[i]);
        else
            fm_cli_buf_puts(&line, t->cells[i]);
        if (col + 1 < t->ncols) continue;
        if (line.oom) {
            rc = fm_cli_nomem();
            break;
        }
        while (line.len > 0 && line.data[line.len - 1] == ' ')
            line.len--;
        printf("%.*s\n", (int)line.len, line.data);
        line.len = 0;
    }
    fm_cli_buf_dispose(&line);
    free(width);
    return rc;
}

void fm_cli_table_dispose(fm_cli_table *t) {
    for (size_t i = 0; i < t->n; i++)
        free(t->cells[i]);
    free(t->cells);
    *t = (fm_cli_table){0};
}

/* ---- JSON ------------------------------------------------------------ */

const char *fm_cli_json_str(const json_t *obj, const char *key, const char *dflt) {
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : dflt;
}
