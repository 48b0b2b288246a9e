/* util.c - clocks, hashing, hex, JSON and logging helpers (see util.h). */
#include "core/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int64_t fm_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t fm_mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t fm_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fm_rfc3339(int64_t wall_ms, char *buf, size_t size) {
    time_t t = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static bool digits(const char **p, const char *end, int n, int *v) {
    *v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (*p >= end || **p < '0' || **p > '9') return false;
        *v = *v * 10 + (**p - '0');
    }
    return true;
}

static bool lit(const char **p, const char *end, const char *set) {
    if (*p >= end || !strchr(set, **p)) return false;
    (*p)++;
    return true;
}

bool fm_parse_rfc3339(const char *s, size_t len, int64_t *ms) {
    const char *p = s, *end = s + len;
    int Y, M, D, h, m, sec;
    if (!digits(&p, end, 4, &Y) || !lit(&p, end, "-") || !digits(&p, end, 2, &M) ||
        !lit(&p, end, "-") || !digits(&p, end, 2, &D) || !lit(&p, end, "Tt ") ||
        !digits(&p, end, 2, &h) || !lit(&p, end, ":") || !digits(&p, end, 2, &m) ||
        !lit(&p, end, ":") || !digits(&p, end, 2, &sec))
        return false;
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60) return false;
    int frac_ms = 0;
    if (p < end && *p == '.') {
        p++;
        int nd = 0;
        while (p < end && *p >= '0' && *p <= '9') {
            if (nd < 3) frac_ms = frac_ms * 10 + (*p - '0');
            nd++, p++;
        }
        if (nd == 0) return false;
        for (; nd < 3; nd++)
            frac_ms *= 10;
    }
    int offset_min = 0;
    if (lit(&p, end, "Zz")) {
    } else if (p < end && (*p == '+' || *p == '-')) {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (!digits(&p, end, 2, &oh) || !lit(&p, end, ":") || !digits(&p, end, 2, &om))
            return false;
        offset_min = sign * (oh * 60 + om);
    } else {
        return false;
    }
    if (p != end) return false;
    struct tm tm = {.tm_year = Y - 1900,
                    .tm_mon = M - 1,
                    .tm_mday = D,
                    .tm_hour = h,
                    .tm_min = m,
                    .tm_sec = sec};
    time_t t = timegm(&tm);
    *ms = ((int64_t)t - (int64_t)offset_min * 60) * 1000 + frac_ms;
    return true;
}

size_t fm_parse_u64(const char *s, size_t len, uint64_t *out) {
    size_t nd = 0;
    uint64_t v = 0;
    while (nd < len && s[nd] >= '0' && s[nd] <= '9') {
        if (v > (UINT64_MAX - 9) / 10) return 0;
        v = v * 10 + (uint64_t)(s[nd] - '0');
        nd++;
    }
    *out = v;
    return nd;
}

bool fm_parse_duration_ago(const char *s, size_t len, int64_t now_ms, int64_t *out_ms) {
    int64_t back;
    if (!fm_parse_duration(s, len, &back)) return false;
    *out_ms = back >= now_ms ? 0 : now_ms - back;
    return true;
}

bool fm_parse_duration(const char *s, size_t len, int64_t *out_ms) {
    uint64_t v;
    size_t nd = fm_parse_u64(s, len, &v);
    if (nd == 0 || nd == len) return false;
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        size_t ul = strlen(units[i].unit);
        if (len - nd == ul && memcmp(s + nd, units[i].unit, ul) == 0) {
            if (v > (uint64_t)(INT64_MAX / units[i].ms)) return false;
            *out_ms = (int64_t)v * units[i].ms;
            return true;
        }
    }
    return false;
}

bool fm_parse_time(const char *s, int64_t now_ms, int64_t *out_ms) {
    if (!s || !*s) return false;
    size_t len = strlen(s), nd = 0;
    while (nd < len && s[nd] >= '0' && s[nd] <= '9') nd++;
    if (nd == len) { /* unix seconds */
        if (len > 15) return false;
        *out_ms = strtoll(s, NULL, 10) * 1000;
        return true;
    }
    return fm_parse_duration_ago(s, len, now_ms, out_ms) || fm_parse_rfc3339(s, len, out_ms);
}

/* "00" .. "ff": two digits per byte in one load (every response formats 25 bytes) */
static const char hex_pairs[513] =
#define H4(x) #x "0" #x "1" #x "2" #x "3" #x "4" #x "5" #x "6" #x "7" #x "8" #x "9" #x "a" #x "b" \
              #x "c" #x "d" #x "e" #x "f"
    H4(0) H4(1) H4(2) H4(3) H4(4) H4(5) H4(6) H4(7) H4(8) H4(9) H4(a) H4(b) H4(c) H4(d) H4(e)
        H4(f);
#undef H4

void fm_hex(const unsigned char *in, size_t len, char *out) {
    for (size_t i = 0; i < len; i++) memcpy(out + 2 * i, hex_pairs + 2 * in[i], 2);
    out[2 * len] = '\0';
}

bool fm_random_hex(char *out, size_t nbytes) {
    unsigned char buf[64];
    if (nbytes > sizeof(buf) || RAND_bytes(buf, (int)nbytes) != 1) return false;
    fm_hex(buf, nbytes, out);
    return true;
}

bool fm_ct_equal(const void *a, size_t alen, const void *b, size_t blen) {
    if (alen != blen) return false;
    return CRYPTO_memcmp(a, b, alen) == 0;
}

/* Length of a valid UTF-8 sequence at s (max n bytes), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) len = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef) len = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4) len = 4, min = 0x10000;
    else return 0;
    if (n < len) return 0;
    unsigned cp = c & (0xff >> (len + 1));
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

json_t *fm_json_strn(const char *s, size_t len) {
    json_t *j = json_stringn(s, len);
    if (j) return j;
    /* Invalid UTF-8: replace each bad byte with U+FFFD. */
    char *tmp = malloc(len * 3 + 1);
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq((const unsigned char *)s + i, len - i);
        if (n) {
            memcpy(tmp + o, s + i, n);
            o += n;
            i += n;
        } else {
            memcpy(tmp + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    j = json_stringn(tmp, o);
    free(tmp);
    return j ? j : json_string("");
}

json_t *fm_json_str(const char *s) {
    return fm_json_strn(s ? s : "", s ? strlen(s) : 0);
}

/* Copy of JSON text in which every integer literal beyond int64 (outside
 * strings) has ".0" appended, so that jansson reads just those as doubles. */
static char *widen_big_ints(const char *buf, size_t len, size_t *out_len) {
    char *out = malloc(len * 3 / 2 + 16);
    size_t o = 0, cap = len * 3 / 2 + 16;
    bool in_str = false;
    for (size_t i = 0; i < len;) {
        char c = buf[i];
        if (in_str) {
            out[o++] = c;
            if (c == '\\' && i + 1 < len) out[o++] = buf[++i];
            else if (c == '"') in_str = false;
            i++;
        } else if (c == '"') {
            in_str = true;
            out[o++] = c;
            i++;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t j = i + (c == '-');
            while (j < len && buf[j] >= '0' && buf[j] <= '9') j++;
            bool integral = j >= len || (buf[j] != '.' && buf[j] != 'e' && buf[j] != 'E');
            size_t digits = j - i - (c == '-');
            bool big = integral && digits >= 19 &&
                       (digits > 19 || strncmp(buf + i + (c == '-'), c == '-' ? "9223372036854775808"
                                                                             : "9223372036854775807",
                                               19) > 0);
            if (o + (j - i) + 3 > cap) out = realloc(out, cap = (o + (j - i) + 3) * 2);
            memcpy(out + o, buf + i, j - i);
            o += j - i;
            if (big) {
                out[o++] = '.';
                out[o++] = '0';
            }
            i = j;
        } else {
            out[o++] = c;
            i++;
        }
        if (o + 4 > cap) out = realloc(out, cap *= 2);
    }
    *out_len = o;
    return out;
}

json_t *fm_json_parse(const char *buf, size_t len, fm_err *err) {
    json_error_t je;
    json_t *v = json_loadb(buf, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (v) return v;
    if (strstr(je.text, "too big")) {
        /* Integers beyond int64 become doubles; the others stay exact. */
        size_t wl;
        char *w = widen_big_ints(buf, len, &wl);
        v = json_loadb(w, wl, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        free(w);
        if (v) return v;
    }
    fm_err_set(err, FM_INVALID_JSON, "invalid JSON at line %d, column %d (position %d): %s",
               je.line, je.column, je.position, je.text);
    fm_err_detail(err, "position", json_integer(je.position));
    return NULL;
}

static int hex4(const char *p) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Copy of JSON text with every unpaired surrogate escape replaced by \ufffd. */
static char *replace_lone_surrogates(const char *buf, size_t len) {
    char *out = malloc(len + 1);
    memcpy(out, buf, len);
    out[len] = '\0';
    for (size_t i = 0; i + 1 < len; i++) {
        if (out[i] != '\\') continue;
        if (out[i + 1] != 'u' || i + 6 > len) {
            i++; /* skip the escaped character */
            continue;
        }
        int v = hex4(out + i + 2);
        bool high = v >= 0xd800 && v <= 0xdbff, low = v >= 0xdc00 && v <= 0xdfff;
        if (high && i + 12 <= len && out[i + 6] == '\\' && out[i + 7] == 'u') {
            int w = hex4(out + i + 8);
            if (w >= 0xdc00 && w <= 0xdfff) {
                i += 11; /* a valid pair */
                continue;
            }
        }
        if (high || low) memcpy(out + i + 2, "fffd", 4);
        i += 5;
    }
    return out;
}

json_t *fm_json_parse_value(const char *buf, size_t len) {
    fm_err err = FM_ERR_INIT;
    json_t *v = fm_json_parse(buf, len, &err);
    if (!v && strstr(err.msg, "Unicode")) {
        char *fixed = replace_lone_surrogates(buf, len);
        fm_err_clear(&err);
        v = fm_json_parse(fixed, len, &err);
        free(fixed);
    }
    fm_err_clear(&err);
    return v;
}

/* Bytes JSON.stringify writes for the unit c (not part of a surrogate pair). */
static size_t quote_unit_len(uint16_t c) {
    if (c < 0x20) return c == '\b' || c == '\t' || c == '\n' || c == '\f' || c == '\r' ? 2 : 6;
    if (c == '"' || c == '\\') return 2;
    if (c < 0x80) return 1;
    if (c < 0x800) return 2;
    if (c >= 0xd800 && c <= 0xdfff) return 6; /* lone surrogate: \udxxx */
    return 3;
}

static bool high_surrogate(uint16_t c) { return c >= 0xd800 && c <= 0xdbff; }
static bool low_surrogate(uint16_t c) { return c >= 0xdc00 && c <= 0xdfff; }

char *fm_json_quote_utf16(const uint16_t *u, size_t n, size_t *len_out) {
    static const char hex[] = "0123456789abcdef";
    size_t len = 2;
    for (size_t i = 0; i < n; i++) {
        if (high_surrogate(u[i]) && i + 1 < n && low_surrogate(u[i + 1])) {
            len += 4;
            i++;
        } else {
            len += quote_unit_len(u[i]);
        }
    }
    char *out = malloc(len + 1), *o = out;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        uint32_t c = u[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *o++ = (char)c;
        } else if (c < 0x20 || c == '"' || c == '\\') {
            *o++ = '\\';
            switch (c) {
            case '\b': *o++ = 'b'; break;
            case '\t': *o++ = 't'; break;
            case '\n': *o++ = 'n'; break;
            case '\f': *o++ = 'f'; break;
            case '\r': *o++ = 'r'; break;
            case '"': *o++ = '"'; break;
            case '\\': *o++ = '\\'; break;
            default:
                memcpy(o, "u00", 3);
                o[3] = hex[c >> 4];
                o[4] = hex[c & 15];
                o += 5;
            }
        } else if (c < 0x800) {
            *o++ = (char)(0xc0 | (c >> 6));
            *o++ = (char)(0x80 | (c & 0x3f));
        } else if (high_surrogate((uint16_t)c) && i + 1 < n && low_surrogate(u[i + 1])) {
            uint32_t cp = 0x10000 + ((c - 0xd800) << 10) + (u[++i] - 0xdc00u);
            *o++ = (char)(0xf0 | (cp >> 18));
            *o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
            *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
            *o++ = (char)(0x80 | (cp & 0x3f));
        } else if (c >= 0xd800 && c <= 0xdfff) {
            *o++ = '\\';
            *o++ = 'u';
            for (int k = 12; k >= 0; k -= 4) *o++ = hex[(c >> k) & 15];
        } else {
            *o++ = (char)(0xe0 | (c >> 12));
            *o++ = (char)(0x80 | ((c >> 6) & 0x3f));
            *o++ = (char)(0x80 | (c & 0x3f));
        }
    }
    *o++ = '"';
    *o = '\0';
    *len_out = (size_t)(o - out);
    return out;
}

size_t fm_i64_to_dec(int64_t v, char *out) {
    char tmp[20];
    uint64_t m = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    size_t k = 0, n = 0;
    do {
        tmp[k++] = (char)('0' + m % 10);
        m /= 10;
    } while (m);
    if (v < 0) out[n++] = '-';
    while (k) out[n++] = tmp[--k];
    return n;
}

char *fm_json_dump(const json_t *v, size_t *len_out) {
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s) s = strdup("null");
    if (len_out) *len_out = strlen(s);
    return s;
}

static fm_log_level log_min = FM_LOG_INFO;

void fm_log_set_level(fm_log_level min) {
    log_min = min;
}

const char *fm_log_level_name(fm_log_level lvl) {
    static const char *names[] = {"debug", "info", "warn", "error"};
    return (unsigned)lvl < 4 ? names[lvl] : "info";
}

void fm_log(fm_log_level lvl, json_t *kv, const char *fmt, ...) {
    if (lvl < log_min) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char ts[40];
    int64_t now = fm_wall_ms();
    time_t t = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03dZ", (int)(now % 1000));
    json_t *line = json_object();
    json_object_set_new(line, "ts", json_string(ts));
    json_object_set_new(line, "level", json_string(fm_log_level_name(lvl)));
    json_object_set_new(line, "msg", fm_json_str(msg));
    if (kv) json_object_update(line, kv);
    char *s = json_dumps(line, JSON_COMPACT);
    json_decref(line);
    if (!s) return;
    size_t len = strlen(s);
    s[len] = '\n'; /* overwrite NUL: write the line in one call */
    ssize_t w = write(STDERR_FILENO, s, len + 1);
    (void)w;
    free(s);
}

char *fm_read_file(const char *path, size_t *len_out) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return NULL;
    }
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 >= cap) buf = realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            free(buf);
            close(fd);
            return NULL;
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    if (len_out) *len_out = len;
    return buf;
}

int fm_mkdirs(const char *path, unsigned mode) {
    char tmp[4096];
    size_t n = strlen(path);
    if (n >= sizeof(tmp)) return errno = ENAMETOOLONG, -1;
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, mode) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(tmp, mode) != 0 && errno != EEXIST) return -1;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

int fm_rmtree(const char *path) {
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- bytes ---- */

char *fm_base64_encode(const void *p, size_t n, size_t *out_len) {
    size_t cap = 4 * ((n + 2) / 3) + 1;
    char *out = malloc(cap);
    int w = n ? EVP_EncodeBlock((unsigned char *)out, p, (int)n) : 0;
    out[w] = '\0';
    if (out_len) *out_len = (size_t)w;
    return out;
}

size_t fm_base64_decoded_len(const char *s, size_t len) {
    if (len % 4) return SIZE_MAX;
    size_t pad = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '+' || c == '/';
        if (c == '=' && i >= len - 2) {
            pad++;
            continue;
        }
        if (!ok || pad) return SIZE_MAX; /* '=' only at the end, nothing after it */
    }
    return len / 4 * 3 - pad;
}

unsigned char *fm_base64_decode(const char *s, size_t len, size_t *out_len) {
    size_t want = fm_base64_decoded_len(s, len);
    if (want == SIZE_MAX) return NULL;
    size_t pad = len / 4 * 3 - want;
    unsigned char *out = malloc(len / 4 * 3 + 1);
    int w = len ? EVP_DecodeBlock(out, (const unsigned char *)s, (int)len) : 0;
    if (w < 0) {
        free(out);
        return NULL;
    }
    size_t n = (size_t)w - pad; /* EVP_DecodeBlock counts the padding as zero bytes */
    out[n] = 0;
    if (out_len) *out_len = n;
    return out;
}

bool fm_json_is_bytes(const json_t *v) {
    return json_is_object(v) && json_object_size(v) == 1 &&
           json_is_string(json_object_get(v, FM_BYTES_KEY));
}

size_t fm_json_bytes_len(const json_t *v) {
    if (!fm_json_is_bytes(v)) return SIZE_MAX;
    const json_t *s = json_object_get(v, FM_BYTES_KEY);
    return fm_base64_decoded_len(json_string_value(s), json_string_length(s));
}

json_t *fm_json_bytes(const void *p, size_t n) {
    size_t len;
    char *b64 = fm_base64_encode(p, n, &len);
    json_t *o = json_object();
    json_object_set_new(o, FM_BYTES_KEY, json_stringn(b64, len));
    free(b64);
    return o;
}

unsigned char *fm_json_bytes_decode(const json_t *v, size_t *n) {
    if (!fm_json_is_bytes(v)) return NULL;
    const json_t *s = json_object_get(v, FM_BYTES_KEY);
    return fm_base64_decode(json_string_value(s), json_string_length(s), n);
}

static fm_status check_bytes(const json_t *v, int depth, fm_err *err) {
    if (depth > 2048) return FM_OK; /* the parsers bound nesting; nothing deeper exists */
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (check_bytes(json_array_get(v, i), depth + 1, err) != FM_OK) return err->status;
    } else if (json_is_object(v)) {
        if (fm_json_is_bytes(v)) {
            const json_t *s = json_object_get(v, FM_BYTES_KEY);
            size_t n;
            unsigned char *b = fm_base64_decode(json_string_value(s), json_string_length(s), &n);
            if (!b)
                return fm_err_set(err, FM_BAD_REQUEST,
                                  "a {\"$bytes\": ...} value is not valid padded base64");
            free(b);
            return FM_OK;
        }
        const char *k;
        json_t *m;
        json_object_foreach((json_t *)v, k, m) {
            if (check_bytes(m, depth + 1, err) != FM_OK) return err->status;
        }
    }
    return FM_OK;
}

fm_status fm_json_check_bytes(const json_t *v, fm_err *err) {
    return check_bytes(v, 0, err);
}

bool fm_parse_size(const char *s, int64_t *bytes) {
    char *end = NULL;
    if (!s || *s < '0' || *s > '9') return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno) return false;
    int shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    default: break;
    }
    if (shift && *end == 'i') end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return false;
    if (v > (1ULL << 62) >> shift) return false;
    *bytes = (int64_t)(v << shift);
    return true;
}

size_t fm_process_rss(void) {
    static _Atomic int statm = -2;
    int fd = atomic_load(&statm);
    if (fd == -2) {
        fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
        int expected = -2;
        if (!atomic_compare_exchange_strong(&statm, &expected, fd)) {
            if (fd >= 0) close(fd);
            fd = expected;
        }
    }
    char buf[96];
    ssize_t n = fd >= 0 ? pread(fd, buf, sizeof(buf) - 1, 0) : -1;
    if (n <= 0) return 0;
    buf[n] = '\0';
    char *sp = strchr(buf, ' ');
    return sp ? (size_t)strtoull(sp + 1, NULL, 10) * (size_t)sysconf(_SC_PAGESIZE) : 0;
}
