/* logs.c - the function log store (see logs.h).
 *
 * A fixed hash table of rings, one per deployment, behind a reader-writer
 * lock that is written only when a ring is created or dropped. Each ring is
 * a circular array of entries under its own mutex; an entry owns one
 * allocation holding its strings. Readers copy the entries they want under
 * the ring's mutex and build JSON after releasing it, so a slow reader never
 * holds up a logging function.
 *
 * The sequence counter is node-wide and taken under the ring's mutex, so
 * seq order within a ring is append order (readers binary-search it). */
#include "metrics/logs.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "exec/exec.h"
#include "registry/registry.h"

#define NBUCKETS 256
#define FIRST_CAP 64

typedef struct entry {
    uint64_t seq;
    int64_t ts;
    uint8_t level;
    uint16_t fn_len, ver_len, rid_len; /* NOSTR: null */
    uint32_t msg_len;
    char *data;  /* function, version, request id, message (no NULs between) */
    size_t size; /* counted bytes */
} entry;

typedef struct ring {
    struct ring *next; /* hash chain */
    char *name;
    pthread_mutex_t mu;
    entry *slots;
    size_t cap, head, count; /* head: index of the oldest */
    size_t bytes;
} ring;

static ring *buckets[NBUCKETS];
static pthread_rwlock_t table_lock = PTHREAD_RWLOCK_INITIALIZER;
static atomic_uint_fast64_t next_seq = 1;

#define NOSTR 0xffff

static unsigned hash(const char *s) {
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % NBUCKETS;
}

static ring *find(const char *name) {
    for (ring *r = buckets[hash(name)]; r; r = r->next)
        if (strcmp(r->name, name) == 0) return r;
    return NULL;
}

/* The ring of `name`, created if needed; returned with table_lock read-held. */
static ring *acquire_ring(const char *name) {
    pthread_rwlock_rdlock(&table_lock);
    ring *r = find(name);
    if (r) return r;
    pthread_rwlock_unlock(&table_lock);
    pthread_rwlock_wrlock(&table_lock);
    r = find(name);
    if (!r) {
        r = calloc(1, sizeof(*r));
        r->name = strdup(name);
        pthread_mutex_init(&r->mu, NULL);
        unsigned b = hash(name);
        r->next = buckets[b];
        buckets[b] = r;
    }
    pthread_rwlock_unlock(&table_lock);
    pthread_rwlock_rdlock(&table_lock);
    return find(name); /* may have been dropped in between: NULL then */
}

static void drop_oldest(ring *r) {
    entry *e = &r->slots[r->head];
    r->bytes -= e->size;
    free(e->data);
    e->data = NULL;
    r->head = (r->head + 1) % r->cap;
    r->count--;
}

static void grow(ring *r) {
    size_t cap = r->cap ? r->cap * 2 : FIRST_CAP;
    if (cap > FM_LOGS_MAX_ENTRIES) cap = FM_LOGS_MAX_ENTRIES;
    entry *s = malloc(cap * sizeof(entry));
    for (size_t i = 0; i < r->count; i++)
        s[i] = r->slots[(r->head + i) % r->cap];
    free(r->slots);
    r->slots = s;
    r->cap = cap;
    r->head = 0;
}

static uint16_t field_len(const char *s, size_t max) {
    if (!s) return NOSTR;
    size_t n = strnlen(s, max);
    return (uint16_t)n;
}

uint64_t fm_logs_append(const fm_logs_src *src, fm_log_level level, int64_t wall_ms,
                        const char *msg, size_t len) {
    if (!src->deployment || !src->deployment[0]) return 0;
    uint16_t fl = field_len(src->function, 256), vl = field_len(src->version, 12),
             rl = field_len(src->request_id, 128);
    bool cut = len > FM_LOGS_MAX_MESSAGE;
    size_t keep = len;
    if (cut) {
        keep = FM_LOGS_MAX_MESSAGE;
        while (keep > 0 && ((unsigned char)msg[keep] & 0xc0) == 0x80)
            keep--;
    }
    size_t ml = keep + (cut ? sizeof(FM_LOGS_TRUNCATED) - 1 : 0);
    size_t total = (fl == NOSTR ? 0 : fl) + (vl == NOSTR ? 0 : vl) + (rl == NOSTR ? 0 : rl) + ml;
    char *data = malloc(total ? total : 1);
    char *o = data;
    if (fl != NOSTR) memcpy(o, src->function, fl), o += fl;
    if (vl != NOSTR) memcpy(o, src->version, vl), o += vl;
    if (rl != NOSTR) memcpy(o, src->request_id, rl), o += rl;
    memcpy(o, msg, keep);
    if (cut) memcpy(o + keep, FM_LOGS_TRUNCATED, sizeof(FM_LOGS_TRUNCATED) - 1);
    entry e = {.ts = wall_ms,
               .level = (uint8_t)level,
               .fn_len = fl,
               .ver_len = vl,
               .rid_len = rl,
               .msg_len = (uint32_t)ml,
               .data = data,
               .size = total + FM_LOGS_ENTRY_OVERHEAD};

    ring *r = acquire_ring(src->deployment);
    if (!r) {
        pthread_rwlock_unlock(&table_lock);
        free(data);
        return 0;
    }
    pthread_mutex_lock(&r->mu);
    while (r->count > 0 &&
           (r->count >= FM_LOGS_MAX_ENTRIES || r->bytes + e.size > FM_LOGS_MAX_BYTES))
        drop_oldest(r);
    if (r->count == r->cap) grow(r);
    e.seq = atomic_fetch_add_explicit(&next_seq, 1, memory_order_relaxed);
    r->slots[(r->head + r->count) % r->cap] = e;
    r->count++;
    r->bytes += e.size;
    pthread_mutex_unlock(&r->mu);
    pthread_rwlock_unlock(&table_lock);
    return e.seq;
}

static fm_logs_sink logs_sink; /* worker processes only */

void fm_logs_set_sink(fm_logs_sink sink) {
    logs_sink = sink;
}

void fm_logs_function(const char *deployment, const fm_job *job, fm_log_level level,
                      const char *msg, size_t len) {
    unsigned lv = (unsigned)level & 3;
    if (logs_sink) {
        logs_sink(job, (fm_log_level)lv, msg, len);
        return;
    }
    fm_logs_src src = {.deployment = deployment};
    char ver[13] = "";
    if (job && job->fn) {
        src.function = job->fn->name;
        snprintf(ver, sizeof(ver), "%.12s", job->version->id);
        src.version = ver;
        src.request_id = job->request_id;
    }
    int64_t now = fm_wall_ms();
    fm_logs_append(&src, (fm_log_level)lv, now, msg, len);

    json_t *kv = json_object();
    json_object_set_new(kv, "src", json_string("function"));
    if (deployment) json_object_set_new(kv, "deployment", json_string(deployment));
    if (src.function) {
        json_object_set_new(kv, "function", json_string(src.function));
        json_object_set_new(kv, "version", json_string(src.version));
        json_object_set_new(kv, "request_id", json_string(src.request_id));
    }
    json_object_set_new(kv, "stream", json_string(fm_log_level_name((fm_log_level)lv)));
    /* the node log keeps its own line limit (fm_log's) and stops at a NUL */
    json_t *m = fm_json_strn(msg, len > 4096 ? 4096 : len);
    fm_log(lv == FM_LOG_DEBUG ? FM_LOG_INFO : (fm_log_level)lv, kv, "%s", json_string_value(m));
    json_decref(m);
    json_decref(kv);
}

/* ------------------------------------------------------------ reading */

static size_t lower_bound(const ring *r, uint64_t since) {
    size_t lo = 0, hi = r->count; /* first index (from head) with seq > since */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r->slots[(r->head + mid) % r->cap].seq > since)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static bool matches(const entry *e, const fm_logs_filter *f, size_t flen) {
    if (e->level < f->min_level) return false;
    if (f->since_ms && e->ts < f->since_ms) return false;
    if (f->function &&
        (e->fn_len == NOSTR || e->fn_len != flen || memcmp(e->data, f->function, flen) != 0))
        return false;
    return true;
}

static json_t *nstr(const char **p, uint16_t len) {
    if (len == NOSTR) return json_null();
    json_t *s = fm_json_strn(*p, len);
    *p += len;
    return s;
}

static json_t *entry_json(const entry *e, const char *deployment) {
    char ts[40];
    time_t t = (time_t)(e->ts / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03dZ", (int)(e->ts % 1000));
    const char *p = e->data;
    json_t *o = json_object();
    json_object_set_new(o, "seq", json_integer((json_int_t)e->seq));
    json_object_set_new(o, "ts", json_string(ts));
    json_object_set_new(o, "level", json_string(fm_log_level_name((fm_log_level)e->level)));
    json_object_set_new(o, "deployment", json_string(deployment));
    json_object_set_new(o, "function", nstr(&p, e->fn_len));
    json_object_set_new(o, "version", nstr(&p, e->ver_len));
    json_object_set_new(o, "request_id", nstr(&p, e->rid_len));
    json_object_set_new(o, "message", fm_json_strn(p, e->msg_len));
    return o;
}

json_t *fm_logs_read(const char *deployment, const fm_logs_filter *f, uint64_t *next) {
    size_t limit = f->limit ? f->limit : FM_LOGS_DEFAULT_LIMIT;
    if (limit > FM_LOGS_MAX_LIMIT) limit = FM_LOGS_MAX_LIMIT;
    size_t flen = f->function ? strlen(f->function) : 0;
    uint64_t since = f->has_since ? f->since : 0;
    *next = since;
    json_t *out = json_array();
    entry *copy = NULL;
    size_t ncopy = 0;
    pthread_rwlock_rdlock(&table_lock);
    ring *r = find(deployment);
    if (r) {
        pthread_mutex_lock(&r->mu);
        size_t first = lower_bound(r, since), last = r->count; /* [first, last) */
        if (r->count) {
            uint64_t newest = r->slots[(r->head + r->count - 1) % r->cap].seq;
            if (newest > *next) *next = newest;
        }
        copy = malloc((limit < r->count ? limit : r->count) * sizeof(entry) + 1);
        if (f->has_since) {
            for (size_t i = first; i < last && ncopy < limit; i++) {
                const entry *e = &r->slots[(r->head + i) % r->cap];
                if (!matches(e, f, flen)) continue;
                copy[ncopy++] = *e;
                if (ncopy == limit) *next = e->seq;
            }
        } else {
            /* a tail: the newest `limit` matches, collected backwards */
            for (size_t i = last; i > first && ncopy < limit; i--) {
                const entry *e = &r->slots[(r->head + i - 1) % r->cap];
                if (matches(e, f, flen)) copy[ncopy++] = *e;
            }
            for (size_t i = 0; i < ncopy / 2; i++) {
                entry t = copy[i];
                copy[i] = copy[ncopy - 1 - i];
                copy[ncopy - 1 - i] = t;
            }
        }
        for (size_t i = 0; i < ncopy; i++) {
            size_t sz = copy[i].size - FM_LOGS_ENTRY_OVERHEAD;
            char *d = malloc(sz ? sz : 1);
            memcpy(d, copy[i].data, sz);
            copy[i].data = d;
        }
        pthread_mutex_unlock(&r->mu);
    }
    pthread_rwlock_unlock(&table_lock);
    for (size_t i = 0; i < ncopy; i++) {
        json_array_append_new(out, entry_json(&copy[i], deployment));
        free(copy[i].data);
    }
    free(copy);
    return out;
}

bool fm_logs_exists(const char *deployment) {
    pthread_rwlock_rdlock(&table_lock);
    bool found = find(deployment) != NULL;
    pthread_rwlock_unlock(&table_lock);
    return found;
}

static void ring_free(ring *r) {
    while (r->count)
        drop_oldest(r);
    free(r->slots);
    pthread_mutex_destroy(&r->mu);
    free(r->name);
    free(r);
}

void fm_logs_drop(const char *deployment) {
    pthread_rwlock_wrlock(&table_lock);
    ring **pp = &buckets[hash(deployment)];
    while (*pp && strcmp((*pp)->name, deployment) != 0)
        pp = &(*pp)->next;
    ring *r = *pp;
    if (r) *pp = r->next;
    pthread_rwlock_unlock(&table_lock);
    if (r) ring_free(r); /* nobody can reach it: every user holds table_lock */
}

void fm_logs_reset(void) {
    pthread_rwlock_wrlock(&table_lock);
    for (size_t b = 0; b < NBUCKETS; b++) {
        ring *r = buckets[b];
        buckets[b] = NULL;
        while (r) {
            ring *next = r->next;
            ring_free(r);
            r = next;
        }
    }
    pthread_rwlock_unlock(&table_lock);
}

/* ------------------------------------------------------------ parsing */

bool fm_logs_parse_level(const char *s, size_t len, fm_log_level *out) {
    static const struct {
        const char *name;
        fm_log_level lvl;
    } names[] = {{"debug", FM_LOG_DEBUG},
                 {"info", FM_LOG_INFO},
                 {"warn", FM_LOG_WARN},
                 {"warning", FM_LOG_WARN},
                 {"error", FM_LOG_ERROR}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strlen(names[i].name) == len && strncasecmp(names[i].name, s, len) == 0) {
            *out = names[i].lvl;
            return true;
        }
    }
    return false;
}

/* Reads exactly `n` digits at *p into *v. */



bool fm_logs_parse_since(const char *s, size_t len, int64_t now_ms, fm_logs_filter *f) {
    if (len == 0 || len > 64) return false;
    uint64_t v;
    if (fm_parse_u64(s, len, &v) == len) { /* a seq */
        f->has_since = true;
        f->since = v;
        f->since_ms = 0;
        return true;
    }
    int64_t ms;
    if (!fm_parse_duration_ago(s, len, now_ms, &ms) && !fm_parse_rfc3339(s, len, &ms))
        return false;
    f->has_since = true;
    f->since = 0;
    f->since_ms = ms > 0 ? ms : 1;
    return true;
}
