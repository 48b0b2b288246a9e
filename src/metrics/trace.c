/* trace.c - trace context, the span ring, its JSON views and the OTLP
 * exporter (see trace.h).
 *
 * The ring: slot i holds the span of sequence number seq with i = seq &
 * mask. Each slot has one atomic word: 0 while empty, else (seq + 1) << 1,
 * with bit 0 set while someone copies the slot in or out. Appenders claim a
 * sequence number with one fetch-add and take only their slot's bit, so
 * they never wait for each other unless the ring wrapped around a stalled
 * appender. Readers (the traces endpoints, the exporter) take the same bit
 * for the few hundred bytes they copy; no data is read while written.
 *
 * Ownership: the node's ring and the exporter state are module globals set
 * up once by fm_trace_init / fm_trace_export_start and freed by
 * fm_trace_shutdown / fm_trace_export_stop. Spans are copied in and out. */
#include "metrics/trace.h"

#include <curl/curl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"

/* ------------------------------------------------------------ ids */

static __thread uint64_t rng_state;
static __thread bool rng_seeded;

static uint64_t splitmix64(void) {
    if (!rng_seeded) {
        uint64_t seed = 0;
        if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)&ts;
        }
        rng_state = seed;
        rng_seeded = true;
    }
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

bool fm_trace_zero(const uint8_t *id, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (id[i]) return false;
    return true;
}

void fm_trace_random(uint8_t *out, size_t n) {
    do {
        for (size_t i = 0; i < n; i += 8) {
            uint64_t r = splitmix64();
            size_t k = n - i < 8 ? n - i : 8;
            memcpy(out + i, &r, k);
        }
    } while (fm_trace_zero(out, n));
}


/* Digit values: 0-15 for '0'-'9' and 'a'-'f', 16-21 for 'A'-'F', else -1
 * (one load per character: contexts are parsed on every call). */
static const signed char hex_digit[256] = {
    ['0'] = 0,  ['1'] = 1,  ['2'] = 2,  ['3'] = 3,  ['4'] = 4,  ['5'] = 5,  ['6'] = 6,
    ['7'] = 7,  ['8'] = 8,  ['9'] = 9,  ['a'] = 10, ['b'] = 11, ['c'] = 12, ['d'] = 13,
    ['e'] = 14, ['f'] = 15, ['A'] = 16, ['B'] = 17, ['C'] = 18, ['D'] = 19, ['E'] = 20,
    ['F'] = 21,
};

static int hexval(char c, bool lower_only) {
    unsigned char u = (unsigned char)c;
    int d = hex_digit[u];
    if (d == 0 && u != '0') return -1; /* not a digit (the table's zero default) */
    if (d >= 16) return lower_only ? -1 : d - 6;
    return d;
}

static bool unhex(const char *s, uint8_t *id, size_t n, bool lower_only) {
    for (size_t i = 0; i < n; i++) {
        int h = hexval(s[2 * i], lower_only), l = hexval(s[2 * i + 1], lower_only);
        if (h < 0 || l < 0) return false;
        id[i] = (uint8_t)(h << 4 | l);
    }
    return true;
}

bool fm_trace_unhex(const char *s, size_t len, uint8_t *id, size_t n) {
    return len == 2 * n && unhex(s, id, n, false);
}

/* ------------------------------------------------------------ W3C headers */

bool fm_trace_parse(const char *s, size_t len, fm_trace_ctx *out) {
    /* vv-<32>-<16>-ff */
    if (len < FM_TRACEPARENT_LEN) return false;
    uint8_t ver;
    if (!unhex(s, &ver, 1, true) || ver == 0xff) return false;
    if (ver == 0 && len != FM_TRACEPARENT_LEN) return false;
    if (len > FM_TRACEPARENT_LEN && s[FM_TRACEPARENT_LEN] != '-') return false;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-') return false;
    fm_trace_ctx c;
    memset(&c, 0, sizeof(c));
    if (!unhex(s + 3, c.trace_id, 16, true) || !unhex(s + 36, c.parent_span_id, 8, true) ||
        !unhex(s + 53, &c.flags, 1, true))
        return false;
    if (fm_trace_zero(c.trace_id, 16) || fm_trace_zero(c.parent_span_id, 8)) return false;
    c.flags &= 0x01; /* level 1 defines only "sampled"; other bits are passed on as zero */
    *out = c;
    return true;
}

void fm_trace_format(const fm_trace_ctx *c, char out[FM_TRACEPARENT_LEN + 1]) {
    out[0] = '0', out[1] = '0', out[2] = '-';
    fm_hex(c->trace_id, 16, out + 3);
    out[35] = '-';
    fm_hex(c->span_id, 8, out + 36);
    out[52] = '-';
    fm_hex(&c->flags, 1, out + 53);
}

/* Removes list member [b, e) (and one adjacent comma) from s; returns the new length. */
static size_t drop_member(char *s, size_t len, size_t b, size_t e) {
    if (e < len)
        e++; /* the comma after it */
    else if (b > 0)
        b--; /* the last member: the comma before it */
    memmove(s + b, s + e, len - e);
    return len - (e - b);
}

static size_t trim(char *s, size_t len) {
    size_t b = 0;
    while (b < len && (s[b] == ' ' || s[b] == '\t' || s[b] == ','))
        b++;
    while (len > b && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == ','))
        len--;
    memmove(s, s + b, len - b);
    return len - b;
}

size_t fm_tracestate_bound(char *s, size_t len) {
    if (len <= FM_TRACESTATE_MAX) return len;
    /* first the members longer than 128 characters */
    size_t b = 0;
    while (b < len && len > FM_TRACESTATE_MAX) {
        char *comma = memchr(s + b, ',', len - b);
        size_t e = comma ? (size_t)(comma - s) : len;
        if (e - b > 128) {
            len = drop_member(s, len, b, e);
            continue;
        }
        b = e + 1;
    }
    /* then from the end */
    while (len > FM_TRACESTATE_MAX) {
        char *comma = memrchr(s, ',', len);
        if (!comma) return 0;
        len = (size_t)(comma - s);
    }
    return trim(s, len);
}

void fm_trace_begin(fm_trace_ctx *out, const fm_trace_ctx *in) {
    if (in) {
        memcpy(out->trace_id, in->trace_id, 16);
        memcpy(out->parent_span_id, in->parent_span_id, 8);
        out->flags = in->flags;
    } else {
        fm_trace_random(out->trace_id, 16);
        memset(out->parent_span_id, 0, 8);
        out->flags = 0x01;
    }
    fm_trace_random(out->span_id, 8);
}

void fm_trace_child(fm_trace_ctx *out, const fm_trace_ctx *parent) {
    memcpy(out->trace_id, parent->trace_id, 16);
    memcpy(out->parent_span_id, parent->span_id, 8);
    out->flags = parent->flags;
    fm_trace_random(out->span_id, 8);
}

void fm_trace_copy(char *dst, size_t cap, const char *src) {
    size_t n = src ? strlen(src) : 0;
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80)
            n--; /* src[n] starts a char */
    }
    if (n) memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ------------------------------------------------------------ clocks */

static int64_t wall_offset_ns;

int64_t fm_trace_wall_ns(int64_t mono_us) {
    return wall_offset_ns + mono_us * 1000;
}

static void rfc3339_us(int64_t ns, char *buf, size_t size) {
    time_t t = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, size - n, ".%06dZ", (int)(ns % 1000000000 / 1000));
}

/* ------------------------------------------------------------ the ring */

typedef struct slot {
    atomic_uint_fast64_t word; /* 0 empty, else (seq + 1) << 1; bit 0: being copied */
    fm_span span;
} slot;

struct fm_trace_ring {
    size_t mask;
    atomic_uint_fast64_t next;
    slot *slots;
};

fm_status fm_trace_ring_create(size_t capacity, fm_trace_ring **out, fm_err *err) {
    size_t cap = 2;
    while (cap < capacity)
        cap <<= 1;
    fm_trace_ring *r = calloc(1, sizeof(*r));
    if (r) r->slots = calloc(cap, sizeof(slot));
    if (!r || !r->slots) {
        free(r);
        return fm_err_set(err, FM_INTERNAL, "cannot allocate a ring of %zu spans", cap);
    }
    r->mask = cap - 1;
    *out = r;
    return FM_OK;
}

void fm_trace_ring_destroy(fm_trace_ring *r) {
    if (!r) return;
    free(r->slots);
    free(r);
}

size_t fm_trace_ring_capacity(const fm_trace_ring *r) {
    return r->mask + 1;
}

uint64_t fm_trace_ring_appended(const fm_trace_ring *r) {
    return atomic_load_explicit(&r->next, memory_order_acquire);
}

/* Takes the slot's copy bit; returns the word without it. */
static uint64_t slot_lock(slot *s) {
    unsigned spins = 0;
    for (;;) {
        uint_fast64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
        if (!(w & 1) && atomic_compare_exchange_weak_explicit(
                            &s->word, &w, w | 1, memory_order_acquire, memory_order_relaxed))
            return w;
        if (++spins > 64) sched_yield(), spins = 0;
    }
}

static void slot_unlock(slot *s, uint64_t word) {
    atomic_store_explicit(&s->word, word, memory_order_release);
}

/* Claims the next slot and lets `fill` write the span into it in place (no
 * copy of the record through the stack). */
static void ring_append_fill(fm_trace_ring *r, void (*fill)(fm_span *out, const void *ud),
                             const void *ud) {
    uint64_t seq = atomic_fetch_add_explicit(&r->next, 1, memory_order_relaxed);
    slot *s = &r->slots[seq & r->mask];
    uint64_t old = slot_lock(s);
    if (old > (seq + 1) << 1) { /* a newer span got here first (we were stalled a whole lap) */
        slot_unlock(s, old);
        return;
    }
    fill(&s->span, ud);
    slot_unlock(s, (seq + 1) << 1);
}

static void fill_copy(fm_span *out, const void *ud) {
    *out = *(const fm_span *)ud;
}

void fm_trace_ring_append(fm_trace_ring *r, const fm_span *sp) {
    ring_append_fill(r, fill_copy, sp);
}

int fm_trace_ring_read(fm_trace_ring *r, uint64_t seq, fm_span *out) {
    slot *s = &r->slots[seq & r->mask];
    uint64_t w = slot_lock(s);
    uint64_t want = (seq + 1) << 1;
    int rc = w == want ? 0 : w > want ? -1 : 1;
    if (rc == 0) *out = s->span;
    slot_unlock(s, w);
    return rc;
}

static int by_start(const void *a, const void *b) {
    const fm_span *x = a, *y = b;
    return x->start_ns < y->start_ns ? -1 : x->start_ns > y->start_ns;
}

size_t fm_trace_ring_find(fm_trace_ring *r, const uint8_t id[16], fm_span *out, size_t max) {
    size_t n = 0;
    for (size_t i = 0; i <= r->mask && n < max; i++) {
        slot *s = &r->slots[i];
        if (atomic_load_explicit(&s->word, memory_order_relaxed) == 0) continue;
        uint64_t w = slot_lock(s);
        if (w && memcmp(s->span.ctx.trace_id, id, 16) == 0) out[n++] = s->span;
        slot_unlock(s, w);
    }
    qsort(out, n, sizeof(*out), by_start);
    return n;
}

static void span_name(const fm_span *s, char *buf, size_t size) {
    snprintf(buf, size, "%s/%s", s->deployment, s->function);
}

static int by_start_desc(const void *a, const void *b) {
    const fm_trace_summary *x = a, *y = b;
    return x->start_ns > y->start_ns ? -1 : x->start_ns < y->start_ns;
}

size_t fm_trace_ring_recent(fm_trace_ring *r, size_t limit, fm_trace_summary *out) {
    if (limit == 0) return 0;
    size_t hsize = 2;
    while (hsize < 2 * limit)
        hsize <<= 1;
    int *table = malloc(hsize * sizeof(int));
    for (size_t i = 0; i < hsize; i++)
        table[i] = -1;
    size_t n = 0;
    uint64_t end = fm_trace_ring_appended(r);
    uint64_t begin = end > r->mask + 1 ? end - (r->mask + 1) : 0;
    fm_span sp;
    for (uint64_t seq = end; seq-- > begin;) {
        if (fm_trace_ring_read(r, seq, &sp) != 0) continue;
        uint64_t h;
        memcpy(&h, sp.ctx.trace_id, sizeof(h));
        size_t k = (size_t)h & (hsize - 1);
        while (table[k] >= 0 && memcmp(out[table[k]].trace_id, sp.ctx.trace_id, 16) != 0)
            k = (k + 1) & (hsize - 1);
        fm_trace_summary *t;
        if (table[k] < 0) {
            if (n == limit) continue;
            table[k] = (int)n;
            t = &out[n++];
            memset(t, 0, sizeof(*t));
            memcpy(t->trace_id, sp.ctx.trace_id, 16);
            t->start_ns = sp.start_ns;
            t->end_ns = sp.end_ns;
            span_name(&sp, t->name, sizeof(t->name));
        } else {
            t = &out[table[k]];
        }
        t->spans++;
        if (sp.error) t->error = true;
        if (sp.end_ns > t->end_ns) t->end_ns = sp.end_ns;
        if (sp.start_ns <= t->start_ns) {
            t->start_ns = sp.start_ns;
            span_name(&sp, t->name, sizeof(t->name));
        }
    }
    free(table);
    qsort(out, n, sizeof(*out), by_start_desc);
    return n;
}

/* ------------------------------------------------------------ the node's ring */

static fm_trace_ring *node_ring;

static void set_wall_offset(void) {
    struct timespec w, m;
    clock_gettime(CLOCK_REALTIME, &w);
    clock_gettime(CLOCK_MONOTONIC, &m);
    int64_t mono_us = (int64_t)m.tv_sec * 1000000 + m.tv_nsec / 1000;
    wall_offset_ns = (int64_t)w.tv_sec * 1000000000 + w.tv_nsec - mono_us * 1000;
}

fm_status fm_trace_init(size_t capacity, fm_err *err) {
    set_wall_offset();
    return fm_trace_ring_create(capacity, &node_ring, err);
}

void fm_trace_shutdown(void) {
    fm_trace_ring_destroy(node_ring);
    node_ring = NULL;
}

static void (*trace_sink)(const fm_span *s); /* worker processes only */

void fm_trace_set_sink(void (*sink)(const fm_span *s)) {
    set_wall_offset();
    trace_sink = sink;
}

void fm_trace_ctx_hex(const fm_trace_ctx *c, char out[67]) {
    fm_hex(c->trace_id, 16, out);
    fm_hex(c->span_id, 8, out + 32);
    fm_hex(c->parent_span_id, 8, out + 48);
    fm_hex(&c->flags, 1, out + 64);
    out[66] = '\0';
}

bool fm_trace_ctx_unhex(const char *hex, fm_trace_ctx *c) {
    return hex && strlen(hex) == 66 && unhex(hex, c->trace_id, 16, true) &&
           unhex(hex + 32, c->span_id, 8, true) && unhex(hex + 48, c->parent_span_id, 8, true) &&
           unhex(hex + 64, &c->flags, 1, true);
}

void fm_trace_record(const fm_span *s) {
    if (trace_sink) trace_sink(s);
    else if (node_ring) fm_trace_ring_append(node_ring, s);
}

void fm_trace_record_fill(void (*fill)(fm_span *out, const void *ud), const void *ud) {
    if (trace_sink) {
        fm_span s;
        memset(&s, 0, sizeof(s));
        fill(&s, ud);
        trace_sink(&s);
        return;
    }
    if (node_ring) ring_append_fill(node_ring, fill, ud);
}

uint64_t fm_trace_recorded(void) {
    return node_ring ? fm_trace_ring_appended(node_ring) : 0;
}

static const char *kind_name(int kind) {
    return kind == FM_SPAN_SERVER ? "server" : "internal";
}

json_t *fm_trace_span_json(const fm_span *s) {
    char sid[17], pid[17], name[170], start[48];
    fm_hex(s->ctx.span_id, 8, sid);
    fm_hex(s->ctx.parent_span_id, 8, pid);
    span_name(s, name, sizeof(name));
    rfc3339_us(s->start_ns, start, sizeof(start));
    json_t *attrs = json_object();
    json_object_set_new(attrs, "fnmesh.deployment", fm_json_str(s->deployment));
    json_object_set_new(attrs, "fnmesh.function", fm_json_str(s->function));
    json_object_set_new(attrs, "fnmesh.runtime", fm_json_str(s->runtime));
    json_object_set_new(attrs, "fnmesh.version", fm_json_str(s->version));
    json_object_set_new(attrs, "fnmesh.request_id", fm_json_str(s->request_id));
    json_object_set_new(attrs, "fnmesh.cold_start", json_boolean(s->cold_start));
    json_object_set_new(attrs, "fnmesh.hops", json_integer(s->hops));
    json_object_set_new(attrs, "fnmesh.outcome",
                        json_string(fm_metrics_outcome_name((fm_outcome)s->outcome)));
    json_t *o = json_object();
    json_object_set_new(o, "span_id", json_string(sid));
    json_object_set_new(o, "parent_span_id",
                        fm_trace_zero(s->ctx.parent_span_id, 8) ? json_null() : json_string(pid));
    json_object_set_new(o, "name", fm_json_str(name));
    json_object_set_new(o, "kind", json_string(kind_name(s->kind)));
    json_object_set_new(o, "start", json_string(start));
    json_object_set_new(o, "duration_us", json_integer((s->end_ns - s->start_ns) / 1000));
    json_object_set_new(o, "status", json_string(s->error ? "error" : "ok"));
    if (s->error) json_object_set_new(o, "error", fm_json_str(s->message));
    json_object_set_new(o, "attributes", attrs);
    return o;
}

/* The most spans one trace lookup returns. */
#define FM_TRACE_FIND_MAX 4096

json_t *fm_trace_json(const uint8_t id[16]) {
    if (!node_ring) return NULL;
    fm_span *spans = malloc(FM_TRACE_FIND_MAX * sizeof(fm_span));
    size_t n = fm_trace_ring_find(node_ring, id, spans, FM_TRACE_FIND_MAX);
    json_t *doc = NULL;
    if (n) {
        char tid[33];
        fm_hex(id, 16, tid);
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr, fm_trace_span_json(&spans[i]));
        doc = json_pack("{s:s, s:o}", "trace_id", tid, "spans", arr);
    }
    free(spans);
    return doc;
}

json_t *fm_trace_list_json(size_t limit) {
    json_t *arr = json_array();
    if (node_ring && limit) {
        fm_trace_summary *t = malloc(limit * sizeof(*t));
        size_t n = fm_trace_ring_recent(node_ring, limit, t);
        for (size_t i = 0; i < n; i++) {
            char tid[33], start[48];
            fm_hex(t[i].trace_id, 16, tid);
            rfc3339_us(t[i].start_ns, start, sizeof(start));
            json_array_append_new(
                arr, json_pack("{s:s, s:o, s:s, s:I, s:I, s:b}", "trace_id", tid, "name",
                               fm_json_str(t[i].name), "start", start, "duration_us",
                               (json_int_t)((t[i].end_ns - t[i].start_ns) / 1000), "spans",
                               (json_int_t)t[i].spans, "error", t[i].error));
        }
        free(t);
    }
    return json_pack("{s:o}", "traces", arr);
}

/* ------------------------------------------------------------ OTLP JSON */

static json_t *otlp_attr(const char *key, json_t *value, const char *type) {
    return json_pack("{s:s, s:{s:o}}", "key", key, "value", type, value);
}

static json_t *otlp_str(const char *key, const char *v) {
    return otlp_attr(key, fm_json_str(v), "stringValue");
}

static json_t *otlp_int(const char *key, int64_t v) {
    char buf[24];
    snprintf(buf, sizeof(buf), "%lld", (long long)v); /* int64 is a string in proto3 JSON */
    return otlp_attr(key, json_string(buf), "intValue");
}

static json_t *otlp_span(const fm_span *s) {
    char tid[33], sid[17], pid[17], name[170], t0[24], t1[24];
    fm_hex(s->ctx.trace_id, 16, tid);
    fm_hex(s->ctx.span_id, 8, sid);
    fm_hex(s->ctx.parent_span_id, 8, pid);
    span_name(s, name, sizeof(name));
    snprintf(t0, sizeof(t0), "%lld", (long long)s->start_ns);
    snprintf(t1, sizeof(t1), "%lld", (long long)s->end_ns);
    json_t *attrs = json_array();
    json_array_append_new(attrs, otlp_str("fnmesh.deployment", s->deployment));
    json_array_append_new(attrs, otlp_str("fnmesh.function", s->function));
    json_array_append_new(attrs, otlp_str("fnmesh.runtime", s->runtime));
    json_array_append_new(attrs, otlp_str("fnmesh.version", s->version));
    json_array_append_new(attrs, otlp_str("fnmesh.request_id", s->request_id));
    json_array_append_new(attrs,
                          otlp_attr("fnmesh.cold_start", json_boolean(s->cold_start), "boolValue"));
    json_array_append_new(attrs, otlp_int("fnmesh.hops", s->hops));
    json_array_append_new(
        attrs, otlp_str("fnmesh.outcome", fm_metrics_outcome_name((fm_outcome)s->outcome)));
    json_t *status = json_pack("{s:i}", "code", s->error ? 2 : 1); /* STATUS_CODE_ERROR / _OK */
    if (s->error) json_object_set_new(status, "message", fm_json_str(s->message));
    json_t *o = json_pack("{s:s, s:s, s:o, s:i, s:s, s:s, s:o, s:o}", "traceId", tid, "spanId", sid,
                          "name", fm_json_str(name), "kind", (int)s->kind, "startTimeUnixNano", t0,
                          "endTimeUnixNano", t1, "attributes", attrs, "status", status);
    if (!fm_trace_zero(s->ctx.parent_span_id, 8))
        json_object_set_new(o, "parentSpanId", json_string(pid));
    return o;
}

json_t *fm_trace_otlp_json(const fm_span *spans, size_t n, const char *instance_id) {
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, otlp_span(&spans[i]));
    json_t *rattrs = json_array();
    json_array_append_new(rattrs, otlp_str("service.name", "fnmesh"));
    json_array_append_new(rattrs, otlp_str("service.instance.id", instance_id));
    json_array_append_new(rattrs, otlp_str("service.version", FM_VERSION));
    return json_pack("{s:[{s:{s:o}, s:[{s:{s:s, s:s}, s:o}]}]}", "resourceSpans", "resource",
                     "attributes", rattrs, "scopeSpans", "scope", "name", "fnmesh", "version",
                     FM_VERSION, "spans", arr);
}

/* ------------------------------------------------------------ the exporter */

#define FM_EXPORT_BATCH 512
#define FM_EXPORT_INTERVAL_MS 1000
#define FM_EXPORT_POLL_MS 100
#define FM_EXPORT_TIMEOUT_MS 5000
#define FM_EXPORT_FINAL_TIMEOUT_MS 1000
#define FM_EXPORT_LOG_EVERY_MS 10000

static struct exporter {
    bool running;
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_bool stop;  /* set by fm_trace_export_stop */
    atomic_bool final; /* the last send is on: do not abort it */
    char url[2048];
    char instance_id[40];
    CURL *curl;
    uint64_t cursor;    /* next sequence number to send */
    uint64_t stall_seq; /* a sequence number an appender still held at the last pass */
    int stall_passes;
    int64_t last_send_ms;
    int64_t last_log_ms;
    uint64_t fails_unlogged;
    atomic_uint_fast64_t exported, dropped, failures;
    fm_span batch[FM_EXPORT_BATCH];
} exp_state = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

void fm_trace_export_get_stats(fm_trace_export_stats *out) {
    out->exported = atomic_load(&exp_state.exported);
    out->dropped = atomic_load(&exp_state.dropped);
    out->failures = atomic_load(&exp_state.failures);
}

static size_t discard_body(char *p, size_t size, size_t n, void *ud) {
    return size * n;
}

static int export_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
    /* shutting down: don't wait for a slow collector, except in the last send */
    return atomic_load(&exp_state.stop) && !atomic_load(&exp_state.final);
}

/* Collects up to a batch of spans from the cursor; counts overwritten ones as dropped. */
static size_t collect(void) {
    struct exporter *e = &exp_state;
    uint64_t end = fm_trace_ring_appended(node_ring);
    uint64_t cap = fm_trace_ring_capacity(node_ring);
    if (end - e->cursor > cap) {
        atomic_fetch_add(&e->dropped, end - cap - e->cursor);
        e->cursor = end - cap;
    }
    size_t n = 0;
    while (e->cursor < end && n < FM_EXPORT_BATCH) {
        int rc = fm_trace_ring_read(node_ring, e->cursor, &e->batch[n]);
        if (rc == 1) { /* an appender is still copying it in: wait a pass, not more */
            if (e->stall_seq == e->cursor && ++e->stall_passes > 2) {
                atomic_fetch_add(&e->dropped, 1);
                e->cursor++;
                continue;
            }
            if (e->stall_seq != e->cursor) e->stall_seq = e->cursor, e->stall_passes = 1;
            break;
        }
        if (rc == 0)
            n++;
        else
            atomic_fetch_add(&e->dropped, 1);
        e->cursor++;
    }
    return n;
}

static void log_failure(const char *why, long code) {
    struct exporter *e = &exp_state;
    e->fails_unlogged++;
    int64_t now = fm_mono_ms();
    if (e->last_log_ms && now - e->last_log_ms < FM_EXPORT_LOG_EVERY_MS) return;
    e->last_log_ms = now;
    json_t *kv =
        json_pack("{s:s, s:I, s:I}", "endpoint", e->url, "failures", (json_int_t)e->fails_unlogged,
                  "dropped_total", (json_int_t)atomic_load(&e->dropped));
    if (code) json_object_set_new(kv, "http_status", json_integer(code));
    fm_log(FM_LOG_WARN, kv, "OTLP span export failed: %s (spans of failed batches are dropped)",
           why);
    json_decref(kv);
    e->fails_unlogged = 0;
}

static void send_batch(size_t n, long timeout_ms) {
    struct exporter *e = &exp_state;
    json_t *doc = fm_trace_otlp_json(e->batch, n, e->instance_id);
    size_t len;
    char *body = fm_json_dump(doc, &len);
    json_decref(doc);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(e->curl, CURLOPT_URL, e->url);
    curl_easy_setopt(e->curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(e->curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(e->curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e->curl, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 2000 ? timeout_ms : 2000);
    CURLcode rc = curl_easy_perform(e->curl);
    long code = 0;
    curl_easy_getinfo(e->curl, CURLINFO_RESPONSE_CODE, &code);
    if (rc == CURLE_OK && code >= 200 && code < 300) {
        atomic_fetch_add(&e->exported, n);
    } else {
        atomic_fetch_add(&e->failures, 1);
        atomic_fetch_add(&e->dropped, n);
        log_failure(rc != CURLE_OK ? curl_easy_strerror(rc) : "collector answered an error",
                    rc == CURLE_OK ? code : 0);
    }
    curl_slist_free_all(hdrs);
    free(body);
    e->last_send_ms = fm_mono_ms();
}

static void *export_main(void *arg) {
    struct exporter *e = &exp_state;
    e->last_send_ms = fm_mono_ms();
    for (;;) {
        pthread_mutex_lock(&e->mu);
        if (!atomic_load(&e->stop)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += FM_EXPORT_POLL_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&e->cv, &e->mu, &ts);
        }
        pthread_mutex_unlock(&e->mu);
        bool stopping = atomic_load(&e->stop);
        uint64_t ready = fm_trace_ring_appended(node_ring) - e->cursor;
        if (stopping) {
            atomic_store(&e->final, true);
            size_t n;
            int64_t until = fm_mono_ms() + FM_EXPORT_FINAL_TIMEOUT_MS;
            while ((n = collect()) > 0) {
                int64_t left = until - fm_mono_ms();
                if (left <= 0) {
                    atomic_fetch_add(&e->dropped, n);
                    continue;
                }
                send_batch(n, (long)left);
            }
            break;
        }
        if (ready == 0) continue;
        if (ready < FM_EXPORT_BATCH && fm_mono_ms() - e->last_send_ms < FM_EXPORT_INTERVAL_MS)
            continue;
        size_t n = collect();
        if (n) send_batch(n, FM_EXPORT_TIMEOUT_MS);
    }
    return NULL;
}

static void uuid4(char out[37]) {
    uint8_t b[16];
    fm_trace_random(b, 16);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    char h[33];
    fm_hex(b, 16, h);
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
}

fm_status fm_trace_export_start(const char *endpoint, fm_err *err) {
    struct exporter *e = &exp_state;
    if (!node_ring) return fm_err_set(err, FM_INTERNAL, "tracing is not initialised");
    if (strncmp(endpoint, "http://", 7) != 0 && strncmp(endpoint, "https://", 8) != 0)
        return fm_err_set(err, FM_BAD_REQUEST, "--otlp-endpoint wants an http:// or https:// URL");
    size_t len = strlen(endpoint);
    static const char suffix[] = "/v1/traces";
    if (len >= sizeof(e->url) - sizeof(suffix))
        return fm_err_set(err, FM_BAD_REQUEST, "--otlp-endpoint URL too long");
    if (len >= sizeof(suffix) - 1 && strcmp(endpoint + len - (sizeof(suffix) - 1), suffix) == 0) {
        snprintf(e->url, sizeof(e->url), "%s", endpoint);
    } else {
        while (len && endpoint[len - 1] == '/')
            len--;
        snprintf(e->url, sizeof(e->url), "%.*s%s", (int)len, endpoint, suffix);
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(e->curl = curl_easy_init()))
        return fm_err_set(err, FM_INTERNAL, "cannot initialise libcurl");
    curl_easy_setopt(e->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e->curl, CURLOPT_WRITEFUNCTION, discard_body);
    curl_easy_setopt(e->curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e->curl, CURLOPT_XFERINFOFUNCTION, export_progress);
    curl_easy_setopt(e->curl, CURLOPT_USERAGENT, "fnmesh/" FM_VERSION);
    uuid4(e->instance_id);
    e->cursor = fm_trace_ring_appended(node_ring);
    atomic_store(&e->stop, false);
    atomic_store(&e->final, false);
    if (pthread_create(&e->tid, NULL, export_main, NULL) != 0) {
        curl_easy_cleanup(e->curl);
        e->curl = NULL;
        return fm_err_set(err, FM_INTERNAL, "cannot start the span exporter thread");
    }
    pthread_setname_np(e->tid, "fm-otlp");
    e->running = true;
    return FM_OK;
}

void fm_trace_export_stop(void) {
    struct exporter *e = &exp_state;
    if (!e->running) return;
    pthread_mutex_lock(&e->mu);
    atomic_store(&e->stop, true);
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->tid, NULL);
    curl_easy_cleanup(e->curl);
    e->curl = NULL;
    e->running = false;
}
