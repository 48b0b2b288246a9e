/* fnstat.h - what each function did and consumed: latency windows for
 * percentiles, and the usage totals that metering persists.
 *
 * One entry per (deployment, function), shared by all versions of the
 * function, so a redeploy neither resets the windows nor loses usage.
 * Entries live in one node-wide table and are never freed while the node
 * runs (a deleted deployment's entry keeps its usage until flushed, then
 * stays as a few hundred bytes). An entry is found once per function
 * version (fm_fnstat_get) and then recorded into with relaxed atomics only:
 * no lock, no allocation on the call path, except one allocation of the
 * window ring at the first call of an entry.
 *
 * Latency windows: a ring of 15-second slots, each a log-linear histogram
 * of durations in microseconds with 8 sub-buckets per power of two
 * (every reported percentile is within 6.25 % of a real sample's value),
 * plus outcome counts and CPU time of the slot. The 1-minute window is the
 * slot being filled plus the four before it (60 to 75 s), the 5-minute
 * window the slot being filled plus twenty. A slot is cleared
 * by the first recorder that finds it stale; a sample recorded concurrently
 * with that clearing may be lost (counts are statistics, not accounting).
 *
 * Usage totals (accounting) are plain monotonically increasing counters;
 * the flusher (control thread) writes their increase since the last flush
 * into the store, so nothing is counted twice or lost between flushes. */
#ifndef FM_FNSTAT_H
#define FM_FNSTAT_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics/metrics.h"

#define FM_WIN_SLOT_US 15000000LL /* one slot: 15 s */
#define FM_WIN_SLOTS 21           /* 5 min + the slot being filled */
#define FM_WIN_BUCKETS 240        /* 1 µs .. 2^32 µs (71 min), 8 per octave */

typedef struct fm_win_slot {
    _Atomic int64_t epoch; /* now_us / FM_WIN_SLOT_US of its content; 0 = never used */
    atomic_uint_least32_t counts[FM_WIN_BUCKETS];
    atomic_uint_least32_t outcomes[FM_NOUTCOMES];
    atomic_uint_fast64_t cpu_us;
    atomic_uint_fast64_t max_us; /* exact slowest call */
} fm_win_slot;

/* Usage totals: what metering bills. Monotonic; read with relaxed loads. */
typedef struct fm_usage {
    uint64_t invocations, errors, wall_us, cpu_us, req_bytes, resp_bytes;
    uint64_t peak_memory; /* bytes: the highest peak of one call in the period */
} fm_usage;

typedef struct fm_fnstat {
    char *deployment, *function; /* owned */
    _Atomic(const char *) runtime; /* of the last version recorded (a static name) */
    /* owned; each allocated when a call first lands in it (a function
     * called once costs one slot, not the 5 minutes' worth) */
    _Atomic(fm_win_slot *) slots[FM_WIN_SLOTS];
    atomic_flag rotating;         /* held while one thread clears a stale slot */
    _Atomic int64_t first_us;     /* monotonic time of the first call recorded */
    /* usage totals */
    atomic_uint_fast64_t invocations, errors, wall_us, cpu_us, req_bytes, resp_bytes;
    atomic_uint_fast64_t peak_memory_period; /* max since the last flush (exchanged with 0) */
    atomic_uint_fast64_t peak_memory;        /* max since start (for /metrics) */
    /* cold starts since the node started */
    atomic_uint_fast64_t cold_starts, cold_us_sum, cold_us_max, cold_us_last;
    /* flusher's view (control thread only): totals already written */
    fm_usage flushed;
    struct fm_fnstat *next; /* table chain */
} fm_fnstat;

/* One finished call, as recorded. */
typedef struct fm_call_sample {
    fm_outcome outcome;
    int64_t duration_us; /* -1: never started (rejected) */
    uint64_t cpu_us, req_bytes, resp_bytes, peak_memory;
    int64_t cold_us; /* > 0: the call started cold and waited this long for its instance */
} fm_call_sample;

/* The entry of (deployment, function), created if needed. Any thread (takes
 * the table's mutex: call once per function version, not per call). Never
 * NULL: entries outlive every caller. `runtime` must live as long as the
 * process (a runtime's name). */
fm_fnstat *fm_fnstat_get(const char *deployment, const char *function, const char *runtime);

/* Records one finished call. Any thread; lock-free. */
void fm_fnstat_record(fm_fnstat *s, const fm_call_sample *c, int64_t now_us);
/* CPU of calls known only after they were recorded (in-process calls are
 * billed when their executor's accounting window closes). Any thread. */
void fm_fnstat_add_cpu(fm_fnstat *s, uint64_t cpu_us, int64_t now_us);

/* Bucket of a duration (µs), and the [low, high) range of a bucket. Exposed
 * for unit tests. */
int fm_win_bucket(int64_t us);
void fm_win_bucket_range(int b, uint64_t *low, uint64_t *high);

/* Window summary of one entry over the slot being filled and the `nslots`
 * before it (nslots <= FM_WIN_SLOTS - 1; 4 = 1 minute, 20 = 5 minutes)
 * at time now_us: JSON {calls, rps, errors, timeouts, rejected, cpu_us,
 * cpu_percent, p50_us, p90_us, p99_us, p999_us, max_us} (percentiles null
 * when no call finished in the window). New reference. */
json_t *fm_fnstat_window(const fm_fnstat *s, int nslots, int64_t now_us);

/* Calls fn for every entry (in creation order). Any thread; fn must not
 * call fm_fnstat_get. */
void fm_fnstat_foreach(void (*fn)(fm_fnstat *s, void *ud), void *ud);

/* Cold starts of an entry: {count, last_ms, mean_ms, max_ms} (times null
 * when there was none). New reference. */
json_t *fm_fnstat_cold_json(const fm_fnstat *s);

/* Current totals of an entry (relaxed reads; peak_memory = the period's). */
void fm_fnstat_totals(const fm_fnstat *s, fm_usage *out);
/* Flusher side: the increase since the last call of this function on the
 * entry, and marks it flushed. `peak_memory` is the period's maximum (then
 * reset). Returns false when nothing changed. Control thread only. */
bool fm_fnstat_take_delta(fm_fnstat *s, fm_usage *delta);
/* Puts a delta back (the store refused it), so the next flush retries it. */
void fm_fnstat_untake(fm_fnstat *s, const fm_usage *delta);

/* Frees every entry (node exit, tests). No recorder may run. */
void fm_fnstat_reset(void);

#endif
