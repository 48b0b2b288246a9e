/* test_fnstat.c - metrics/fnstat.h: the log-linear buckets (contiguous,
 * monotonic, within 12.5 % wide), percentiles of known samples, 1m/5m
 * windows and slot expiry, outcome and CPU counts, usage totals and the
 * flusher's deltas (taken once, put back on failure), entries shared by
 * name; and core/util.h's fm_parse_time, which the usage query uses. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "core/util.h"
#include "metrics/fnstat.h"

#define SLOT FM_WIN_SLOT_US
#define T0 (1000 * SLOT) /* an arbitrary "now", at a slot boundary */

static int teardown(void **state) {
    fm_fnstat_reset();
    return 0;
}

static void test_buckets_contiguous_and_tight(void **state) {
    uint64_t prev_high = 0;
    for (int b = 0; b < FM_WIN_BUCKETS; b++) {
        uint64_t lo, hi;
        fm_win_bucket_range(b, &lo, &hi);
        assert_true(lo == prev_high); /* no gaps, no overlaps */
        assert_true(hi > lo);
        if (lo >= 8) assert_true((double)(hi - lo) / (double)lo <= 0.125 + 1e-9);
        assert_int_equal(fm_win_bucket((int64_t)lo), b);
        assert_int_equal(fm_win_bucket((int64_t)hi - 1), b);
        prev_high = hi;
    }
    assert_int_equal(fm_win_bucket(-5), 0);
    assert_int_equal(fm_win_bucket(INT64_MAX), FM_WIN_BUCKETS - 1);
    for (int64_t v = 1; v < 100000000; v = v * 3 + 1)
        assert_true(fm_win_bucket(v) <= fm_win_bucket(v + 1));
}

static void record(fm_fnstat *s, int64_t dur, fm_outcome o, uint64_t cpu, int64_t now) {
    fm_call_sample c = {.outcome = o, .duration_us = dur, .cpu_us = cpu};
    fm_fnstat_record(s, &c, now);
}

static json_int_t get_int(json_t *w, const char *k) {
    json_t *v = json_object_get(w, k);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static void assert_near(json_int_t got, double want) {
    if (got < want * 0.937 || got > want * 1.063)
        fail_msg("%lld is not within 6.25%% of %.0f", (long long)got, want);
}

static void test_percentiles_of_known_samples(void **state) {
    fm_fnstat *s = fm_fnstat_get("d", "f", "js");
    /* 1..1000 ms, once each: p50 = 500 ms, p90 = 900, p99 = 990, p99.9 = 999 */
    for (int i = 1; i <= 1000; i++) record(s, i * 1000, FM_OUTCOME_OK, 10, T0 + 1000);
    json_t *w = fm_fnstat_window(s, 4, T0 + 2000);
    assert_int_equal(get_int(w, "calls"), 1000);
    assert_near(get_int(w, "p50_us"), 500000);
    assert_near(get_int(w, "p90_us"), 900000);
    assert_near(get_int(w, "p99_us"), 990000);
    assert_near(get_int(w, "p999_us"), 999000);
    assert_int_equal(get_int(w, "max_us"), 1000000);
    assert_int_equal(get_int(w, "cpu_us"), 10000);
    json_decref(w);
}

static void test_outcomes_and_rejected_without_duration(void **state) {
    fm_fnstat *s = fm_fnstat_get("d", "g", "lua");
    record(s, 100, FM_OUTCOME_OK, 0, T0);
    record(s, 200, FM_OUTCOME_ERROR, 0, T0);
    record(s, 300, FM_OUTCOME_TIMEOUT, 0, T0);
    record(s, -1, FM_OUTCOME_REJECTED, 0, T0);
    json_t *w = fm_fnstat_window(s, 4, T0);
    assert_int_equal(get_int(w, "calls"), 4);
    assert_int_equal(get_int(w, "errors"), 1);
    assert_int_equal(get_int(w, "timeouts"), 1);
    assert_int_equal(get_int(w, "rejected"), 1);
    assert_int_equal(get_int(w, "max_us"), 300); /* exact; the rejected call has no latency */
    json_decref(w);
    fm_usage u;
    fm_fnstat_totals(s, &u);
    assert_int_equal(u.invocations, 4);
    assert_int_equal(u.errors, 3);
    assert_int_equal(u.wall_us, 600);
}

static void test_windows_expire_old_slots(void **state) {
    fm_fnstat *s = fm_fnstat_get("d", "h", "js");
    record(s, 1000, FM_OUTCOME_OK, 0, T0 + 1);            /* slot k */
    record(s, 1000, FM_OUTCOME_OK, 0, T0 + 6 * SLOT + 1); /* 1.5 min later */
    int64_t now = T0 + 6 * SLOT + 2;
    json_t *w1 = fm_fnstat_window(s, 4, now), *w5 = fm_fnstat_window(s, 20, now);
    assert_int_equal(get_int(w1, "calls"), 1); /* the first is outside 1m ... */
    assert_int_equal(get_int(w5, "calls"), 2); /* ... inside 5m */
    json_decref(w1);
    json_decref(w5);
    /* 10 minutes later nothing is left in either window, and a slot reused by
     * the ring starts from zero */
    now = T0 + 6 * SLOT + 21 * SLOT;
    record(s, 5000, FM_OUTCOME_OK, 0, now);
    w5 = fm_fnstat_window(s, 20, now);
    assert_int_equal(get_int(w5, "calls"), 1);
    assert_near(get_int(w5, "p50_us"), 5000);
    json_decref(w5);
    /* no calls at all: percentiles are null, not 0 */
    fm_fnstat *idle = fm_fnstat_get("d", "idle", "js");
    json_t *w = fm_fnstat_window(idle, 4, now);
    assert_int_equal(get_int(w, "calls"), 0);
    assert_true(json_is_null(json_object_get(w, "p99_us")));
    json_decref(w);
}

static void test_entries_are_shared_by_name(void **state) {
    fm_fnstat *a = fm_fnstat_get("dep", "fn", "js");
    fm_fnstat *b = fm_fnstat_get("dep", "fn", "python"); /* a redeploy in another language */
    fm_fnstat *c = fm_fnstat_get("dep", "other", "js");
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, c);
    assert_string_equal(atomic_load(&a->runtime), "python");
}

static void test_deltas_taken_once_and_put_back(void **state) {
    fm_fnstat *s = fm_fnstat_get("d", "u", "c");
    fm_call_sample c = {.outcome = FM_OUTCOME_OK, .duration_us = 40, .cpu_us = 30,
                        .req_bytes = 7, .resp_bytes = 9, .peak_memory = 4096};
    fm_fnstat_record(s, &c, T0);
    c.peak_memory = 1024;
    fm_fnstat_record(s, &c, T0);
    fm_usage d;
    assert_true(fm_fnstat_take_delta(s, &d));
    assert_int_equal(d.invocations, 2);
    assert_int_equal(d.wall_us, 80);
    assert_int_equal(d.cpu_us, 60);
    assert_int_equal(d.req_bytes, 14);
    assert_int_equal(d.resp_bytes, 18);
    assert_int_equal(d.peak_memory, 4096);
    assert_false(fm_fnstat_take_delta(s, &d)); /* nothing new */
    fm_fnstat_record(s, &c, T0);
    assert_true(fm_fnstat_take_delta(s, &d));
    assert_int_equal(d.invocations, 1);
    assert_int_equal(d.peak_memory, 1024); /* the period's peak, not the all-time one */
    fm_fnstat_untake(s, &d);               /* the store refused it */
    fm_usage again;
    assert_true(fm_fnstat_take_delta(s, &again));
    assert_int_equal(again.invocations, 1);
    assert_int_equal(again.cpu_us, 30);
    assert_int_equal(again.peak_memory, 1024);
}

static void test_parse_time(void **state) {
    int64_t now = 1764615600000LL, t = 0; /* 2025-12-01T19:00:00Z */
    assert_true(fm_parse_time("1764615600", now, &t));
    assert_true(t == 1764615600000LL);
    assert_true(fm_parse_time("2025-12-01T19:00:00Z", now, &t));
    assert_true(t == 1764615600000LL);
    assert_true(fm_parse_time("2025-12-01T19:00:00.250Z", now, &t));
    assert_true(t == 1764615600250LL);
    assert_true(fm_parse_time("2025-12-01T20:00:00+01:00", now, &t));
    assert_true(t == 1764615600000LL);
    assert_true(fm_parse_time("90s", now, &t));
    assert_true(t == now - 90000);
    assert_true(fm_parse_time("2h", now, &t));
    assert_true(t == now - 7200000);
    assert_true(fm_parse_time("7d", now, &t));
    assert_true(t == now - 7 * 86400000LL);
    const char *bad[] = {"", "yesterday", "5x", "-3", "2025-12-01", "2025-12-01T19:00:00",
                         "2025-12-01T19:00:00Zjunk", "1h2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (fm_parse_time(bad[i], now, &t)) fail_msg("accepted \"%s\"", bad[i]);
}

#define T(fn) cmocka_unit_test_teardown(fn, teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        T(test_buckets_contiguous_and_tight),
        T(test_percentiles_of_known_samples),
        T(test_outcomes_and_rejected_without_duration),
        T(test_windows_expire_old_slots),
        T(test_entries_are_shared_by_name),
        T(test_deltas_taken_once_and_put_back),
        T(test_parse_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
