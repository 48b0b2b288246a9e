/* fnstat.c - per-function latency windows and usage totals (see fnstat.h).
 *
 * The table is a mutex-protected singly linked list: it is searched once
 * per function version (at its first call), never per call. Entries are
 * appended and never removed, so a reader walking the list from its head
 * needs no lock (the head and every `next` are published with release
 * stores after the entry is complete). */
#include "metrics/fnstat.h"

#include "core/util.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(fm_fnstat *) table_head;
static fm_fnstat *table_tail; /* guarded by table_mu */

fm_fnstat *fm_fnstat_get(const char *deployment, const char *function, const char *runtime) {
    pthread_mutex_lock(&table_mu);
    fm_fnstat *s = atomic_load_explicit(&table_head, memory_order_acquire);
    for (; s; s = s->next)
        if (strcmp(s->deployment, deployment) == 0 && strcmp(s->function, function) == 0) break;
    if (!s) {
        s = calloc(1, sizeof(*s));
        s->deployment = strdup(deployment);
        s->function = strdup(function);
        atomic_flag_clear(&s->rotating);
        if (table_tail) atomic_store_explicit((_Atomic(fm_fnstat *) *)&table_tail->next, s,
                                              memory_order_release);
        else atomic_store_explicit(&table_head, s, memory_order_release);
        table_tail = s;
    }
    atomic_store_explicit(&s->runtime, runtime ? runtime : "", memory_order_release);
    pthread_mutex_unlock(&table_mu);
    return s;
}

void fm_fnstat_foreach(void (*fn)(fm_fnstat *s, void *ud), void *ud) {
    for (fm_fnstat *s = atomic_load_explicit(&table_head, memory_order_acquire); s;
         s = atomic_load_explicit((_Atomic(fm_fnstat *) *)&s->next, memory_order_acquire))
        fn(s, ud);
}

void fm_fnstat_reset(void) {
    pthread_mutex_lock(&table_mu);
    fm_fnstat *s = atomic_exchange(&table_head, NULL);
    table_tail = NULL;
    pthread_mutex_unlock(&table_mu);
    while (s) {
        fm_fnstat *next = s->next;
        for (int i = 0; i < FM_WIN_SLOTS; i++) free(atomic_load(&s->slots[i]));
        free(s->deployment);
        free(s->function);
        free(s);
        s = next;
    }
}

/* ---- histogram buckets ----
 * Values below 8 µs have a bucket each; from 8 up, octave e (2^e <= v <
 * 2^(e+1)) is split in 8 equal parts: bucket 8*(e-2) + the top three bits
 * after the leading one. */

int fm_win_bucket(int64_t us) {
    if (us < 0) us = 0;
    uint64_t v = (uint64_t)us;
    if (v < 8) return (int)v;
    int e = 63 - __builtin_clzll(v);
    if (e > 31) return FM_WIN_BUCKETS - 1;
    return 8 * (e - 2) + (int)((v >> (e - 3)) & 7);
}

void fm_win_bucket_range(int b, uint64_t *low, uint64_t *high) {
    if (b < 8) {
        *low = (uint64_t)b;
        *high = (uint64_t)b + 1;
        return;
    }
    int e = b / 8 + 2, sub = b % 8;
    *low = (uint64_t)(8 + sub) << (e - 3);
    *high = *low + ((uint64_t)1 << (e - 3));
}


/* ---- recording ---- */

/* Slot number i, allocated if it never was. */
static fm_win_slot *slot_at(fm_fnstat *s, int i) {
    fm_win_slot *sl = atomic_load_explicit(&s->slots[i], memory_order_acquire);
    if (sl) return sl;
    fm_win_slot *fresh = calloc(1, sizeof(fm_win_slot));
    fm_win_slot *expected = NULL;
    if (atomic_compare_exchange_strong_explicit(&s->slots[i], &expected, fresh,
                                                memory_order_acq_rel, memory_order_acquire)) {
        int64_t none = 0;
        atomic_compare_exchange_strong_explicit(&s->first_us, &none, fm_mono_us(),
                                                memory_order_relaxed, memory_order_relaxed);
        return fresh;
    }
    free(fresh); /* another thread won the race */
    return expected;
}

/* The slot for `epoch`, cleared first when it holds an older epoch. */
static fm_win_slot *slot_for(fm_fnstat *s, int64_t epoch) {
    fm_win_slot *slot = slot_at(s, (int)(epoch % FM_WIN_SLOTS));
    if (atomic_load_explicit(&slot->epoch, memory_order_acquire) == epoch) return slot;
    if (atomic_flag_test_and_set_explicit(&s->rotating, memory_order_acquire))
        return slot; /* another thread is clearing it: count into it anyway */
    if (atomic_load_explicit(&slot->epoch, memory_order_relaxed) != epoch) {
        for (int i = 0; i < FM_WIN_BUCKETS; i++)
            atomic_store_explicit(&slot->counts[i], 0, memory_order_relaxed);
        for (int i = 0; i < FM_NOUTCOMES; i++)
            atomic_store_explicit(&slot->outcomes[i], 0, memory_order_relaxed);
        atomic_store_explicit(&slot->cpu_us, 0, memory_order_relaxed);
        atomic_store_explicit(&slot->max_us, 0, memory_order_relaxed);
        atomic_store_explicit(&slot->epoch, epoch, memory_order_release);
    }
    atomic_flag_clear_explicit(&s->rotating, memory_order_release);
    return slot;
}


void fm_fnstat_record(fm_fnstat *s, const fm_call_sample *c, int64_t now_us) {
    fm_win_slot *slot = slot_for(s, now_us / FM_WIN_SLOT_US + 1);
    atomic_fetch_add_explicit(&slot->outcomes[c->outcome], 1, memory_order_relaxed);
    if (c->duration_us >= 0) {
        atomic_fetch_add_explicit(&slot->counts[fm_win_bucket(c->duration_us)], 1,
                                  memory_order_relaxed);
        fm_atomic_max_u64(&slot->max_us, (uint64_t)c->duration_us);
    }
    if (c->cpu_us) atomic_fetch_add_explicit(&slot->cpu_us, c->cpu_us, memory_order_relaxed);

    atomic_fetch_add_explicit(&s->invocations, 1, memory_order_relaxed);
    if (c->outcome != FM_OUTCOME_OK) atomic_fetch_add_explicit(&s->errors, 1, memory_order_relaxed);
    if (c->duration_us > 0)
        atomic_fetch_add_explicit(&s->wall_us, (uint64_t)c->duration_us, memory_order_relaxed);
    if (c->cpu_us) atomic_fetch_add_explicit(&s->cpu_us, c->cpu_us, memory_order_relaxed);
    if (c->req_bytes) atomic_fetch_add_explicit(&s->req_bytes, c->req_bytes, memory_order_relaxed);
    if (c->resp_bytes)
        atomic_fetch_add_explicit(&s->resp_bytes, c->resp_bytes, memory_order_relaxed);
    if (c->cold_us > 0) {
        atomic_fetch_add_explicit(&s->cold_starts, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->cold_us_sum, (uint64_t)c->cold_us, memory_order_relaxed);
        fm_atomic_max_u64(&s->cold_us_max, (uint64_t)c->cold_us);
        atomic_store_explicit(&s->cold_us_last, (uint64_t)c->cold_us, memory_order_relaxed);
    }
    if (c->peak_memory) {
        fm_atomic_max_u64(&s->peak_memory_period, c->peak_memory);
        fm_atomic_max_u64(&s->peak_memory, c->peak_memory);
    }
}

void fm_fnstat_add_cpu(fm_fnstat *s, uint64_t cpu_us, int64_t now_us) {
    if (!cpu_us) return;
    fm_win_slot *slot = slot_for(s, now_us / FM_WIN_SLOT_US + 1);
    atomic_fetch_add_explicit(&slot->cpu_us, cpu_us, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->cpu_us, cpu_us, memory_order_relaxed);
}

/* ---- reading ---- */

static uint64_t percentile(const uint64_t *counts, uint64_t total, double q) {
    /* the rank of the q-quantile sample (1-based), then the bucket holding it */
    uint64_t rank = (uint64_t)ceil(q * (double)total);
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (int b = 0; b < FM_WIN_BUCKETS; b++) {
        seen += counts[b];
        if (seen >= rank) {
            uint64_t lo, hi;
            fm_win_bucket_range(b, &lo, &hi);
            return b < 8 ? lo : (lo + hi) / 2; /* the bucket's midpoint */
        }
    }
    return 0;
}

json_t *fm_fnstat_window(const fm_fnstat *s, int nslots, int64_t now_us) {
    if (nslots < 1) nslots = 1;
    if (nslots > FM_WIN_SLOTS - 1) nslots = FM_WIN_SLOTS - 1; /* + the current slot */
    uint64_t counts[FM_WIN_BUCKETS] = {0};
    uint64_t outcomes[FM_NOUTCOMES] = {0};
    uint64_t cpu = 0, total = 0, max = 0;
    int64_t cur = now_us / FM_WIN_SLOT_US + 1;
    for (int k = 0; k <= nslots; k++) {
        /* the slot being filled (k = 0) and the nslots whole slots before it */
        int64_t epoch = cur - k;
        const fm_win_slot *slot = atomic_load_explicit(
            &((fm_fnstat *)s)->slots[epoch % FM_WIN_SLOTS], memory_order_acquire);
        if (!slot || atomic_load_explicit(&slot->epoch, memory_order_acquire) != epoch) continue;
        for (int b = 0; b < FM_WIN_BUCKETS; b++) {
            uint64_t n = atomic_load_explicit(&slot->counts[b], memory_order_relaxed);
            counts[b] += n;
            total += n;
        }
        for (int o = 0; o < FM_NOUTCOMES; o++)
            outcomes[o] += atomic_load_explicit(&slot->outcomes[o], memory_order_relaxed);
        cpu += atomic_load_explicit(&slot->cpu_us, memory_order_relaxed);
        uint64_t m = atomic_load_explicit(&slot->max_us, memory_order_relaxed);
        if (m > max) max = m;
    }
    /* seconds covered: the whole slots plus the elapsed part of the current
     * one, but no more than the entry has been recording */
    double span = (double)nslots * (FM_WIN_SLOT_US / 1e6) +
                  (double)(now_us % FM_WIN_SLOT_US) / 1e6;
    int64_t first = atomic_load_explicit(&s->first_us, memory_order_relaxed);
    if (first && (double)(now_us - first) / 1e6 < span) span = (double)(now_us - first) / 1e6;
    if (span < 1) span = 1;
    uint64_t calls = 0;
    for (int o = 0; o < FM_NOUTCOMES; o++) calls += outcomes[o];
    json_t *w = json_object();
    json_object_set_new(w, "calls", json_integer((json_int_t)calls));
    json_object_set_new(w, "rps", json_real(round((double)calls / span * 100) / 100));
    json_object_set_new(w, "errors", json_integer((json_int_t)outcomes[FM_OUTCOME_ERROR]));
    json_object_set_new(w, "timeouts", json_integer((json_int_t)outcomes[FM_OUTCOME_TIMEOUT]));
    json_object_set_new(w, "rejected", json_integer((json_int_t)outcomes[FM_OUTCOME_REJECTED]));
    json_object_set_new(w, "cpu_us", json_integer((json_int_t)cpu));
    json_object_set_new(w, "cpu_percent", json_real(round((double)cpu / 1e6 / span * 10000) / 100));
    json_object_set_new(w, "window_seconds", json_real(round(span * 10) / 10));
    static const struct {
        const char *key;
        double q;
    } qs[] = {{"p50_us", 0.5}, {"p90_us", 0.9}, {"p99_us", 0.99}, {"p999_us", 0.999}};
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++)
        json_object_set_new(w, qs[i].key,
                            total ? json_integer((json_int_t)percentile(counts, total, qs[i].q))
                                  : json_null());
    json_object_set_new(w, "max_us", total ? json_integer((json_int_t)max) : json_null());
    return w;
}

json_t *fm_fnstat_cold_json(const fm_fnstat *s) {
    uint64_t n = atomic_load_explicit(&s->cold_starts, memory_order_relaxed);
    uint64_t sum = atomic_load_explicit(&s->cold_us_sum, memory_order_relaxed);
    uint64_t max = atomic_load_explicit(&s->cold_us_max, memory_order_relaxed);
    uint64_t last = atomic_load_explicit(&s->cold_us_last, memory_order_relaxed);
    json_t *o = json_object();
    json_object_set_new(o, "count", json_integer((json_int_t)n));
    json_object_set_new(o, "last_ms", n ? json_real((double)last / 1e3) : json_null());
    json_object_set_new(o, "mean_ms", n ? json_real((double)sum / (double)n / 1e3) : json_null());
    json_object_set_new(o, "max_ms", n ? json_real((double)max / 1e3) : json_null());
    return o;
}

/* ---- usage ---- */

void fm_fnstat_totals(const fm_fnstat *s, fm_usage *u) {
    u->invocations = atomic_load_explicit(&s->invocations, memory_order_relaxed);
    u->errors = atomic_load_explicit(&s->errors, memory_order_relaxed);
    u->wall_us = atomic_load_explicit(&s->wall_us, memory_order_relaxed);
    u->cpu_us = atomic_load_explicit(&s->cpu_us, memory_order_relaxed);
    u->req_bytes = atomic_load_explicit(&s->req_bytes, memory_order_relaxed);
    u->resp_bytes = atomic_load_explicit(&s->resp_bytes, memory_order_relaxed);
    u->peak_memory = atomic_load_explicit(&s->peak_memory_period, memory_order_relaxed);
}

bool fm_fnstat_take_delta(fm_fnstat *s, fm_usage *d) {
    fm_usage now;
    fm_fnstat_totals(s, &now);
    d->invocations = now.invocations - s->flushed.invocations;
    d->errors = now.errors - s->flushed.errors;
    d->wall_us = now.wall_us - s->flushed.wall_us;
    d->cpu_us = now.cpu_us - s->flushed.cpu_us;
    d->req_bytes = now.req_bytes - s->flushed.req_bytes;
    d->resp_bytes = now.resp_bytes - s->flushed.resp_bytes;
    d->peak_memory = atomic_exchange_explicit(&s->peak_memory_period, 0, memory_order_relaxed);
    now.peak_memory = 0;
    s->flushed = now;
    return d->invocations || d->errors || d->wall_us || d->cpu_us || d->req_bytes ||
           d->resp_bytes || d->peak_memory;
}

void fm_fnstat_untake(fm_fnstat *s, const fm_usage *d) {
    s->flushed.invocations -= d->invocations;
    s->flushed.errors -= d->errors;
    s->flushed.wall_us -= d->wall_us;
    s->flushed.cpu_us -= d->cpu_us;
    s->flushed.req_bytes -= d->req_bytes;
    s->flushed.resp_bytes -= d->resp_bytes;
    fm_atomic_max_u64(&s->peak_memory_period, d->peak_memory);
}
