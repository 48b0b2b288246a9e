/* test_logs.c - the function log store (src/metrics/logs.c): ring bounds by
 * entries and bytes, seq order, since/tail reads and `next`, the function
 * and level filters, message truncation, dropping a deployment, the `since`
 * and level parsers, the logs query of the HTTP endpoint and its route. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
/* cmocka.h needs the headers above first */
#include <cmocka.h>

#include "gateway/logs_http.h"
#include "gateway/route.h"
#include "metrics/logs.h"

static uint64_t add(const char *dep, const char *fn, fm_log_level lvl, const char *msg) {
    fm_logs_src src = {
        .deployment = dep, .function = fn, .version = "0123456789abcdef", .request_id = "req-1"};
    return fm_logs_append(&src, lvl, 1796151600123, msg, strlen(msg));
}

static json_t *read_all(const char *dep, uint64_t since, uint64_t *next) {
    fm_logs_filter f = {.has_since = true, .since = since, .limit = FM_LOGS_MAX_LIMIT};
    return fm_logs_read(dep, &f, next);
}

static const char *msg_at(json_t *arr, size_t i) {
    return json_string_value(json_object_get(json_array_get(arr, i), "message"));
}

static int teardown(void **state) {
    fm_logs_reset();
    return 0;
}

static void test_entry_fields(void **state) {
    uint64_t seq = add("d1", "greet", FM_LOG_WARN, "hello");
    assert_true(seq > 0);
    uint64_t next;
    json_t *arr = read_all("d1", 0, &next);
    assert_int_equal(json_array_size(arr), 1);
    json_t *e = json_array_get(arr, 0);
    assert_int_equal(json_integer_value(json_object_get(e, "seq")), seq);
    assert_string_equal(json_string_value(json_object_get(e, "ts")), "2026-12-01T19:00:00.123Z");
    assert_string_equal(json_string_value(json_object_get(e, "level")), "warn");
    assert_string_equal(json_string_value(json_object_get(e, "deployment")), "d1");
    assert_string_equal(json_string_value(json_object_get(e, "function")), "greet");
    assert_string_equal(json_string_value(json_object_get(e, "version")), "0123456789ab");
    assert_string_equal(json_string_value(json_object_get(e, "request_id")), "req-1");
    assert_string_equal(json_string_value(json_object_get(e, "message")), "hello");
    assert_int_equal(next, seq);
    json_decref(arr);

    /* unknown fields are null; no deployment stores nothing */
    fm_logs_src bare = {.deployment = "d1"};
    fm_logs_append(&bare, FM_LOG_INFO, 1, "x", 1);
    arr = read_all("d1", seq, &next);
    e = json_array_get(arr, 0);
    assert_true(json_is_null(json_object_get(e, "function")));
    assert_true(json_is_null(json_object_get(e, "version")));
    assert_true(json_is_null(json_object_get(e, "request_id")));
    json_decref(arr);
    fm_logs_src none = {0};
    assert_int_equal(fm_logs_append(&none, FM_LOG_INFO, 1, "x", 1), 0);
    assert_false(fm_logs_exists(""));
}

static void test_entry_bound_and_order(void **state) {
    char msg[32];
    uint64_t prev = 0;
    for (int i = 0; i < FM_LOGS_MAX_ENTRIES + 500; i++) {
        snprintf(msg, sizeof(msg), "m%d", i);
        uint64_t s = add("d2", "f", FM_LOG_INFO, msg);
        assert_true(s > prev);
        prev = s;
        if (i % 3 == 0) add("other", "f", FM_LOG_INFO, msg); /* interleaved seqs */
    }
    uint64_t next;
    json_t *arr = read_all("d2", 0, &next);
    assert_int_equal(json_array_size(arr), FM_LOGS_MAX_ENTRIES);
    assert_string_equal(msg_at(arr, 0), "m500");
    assert_string_equal(msg_at(arr, FM_LOGS_MAX_ENTRIES - 1), "m2499");
    json_int_t last = 0;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_int_t s = json_integer_value(json_object_get(json_array_get(arr, i), "seq"));
        assert_true(s > last);
        last = s;
    }
    assert_int_equal(next, prev);
    json_decref(arr);
}

static void test_byte_bound_and_truncation(void **state) {
    size_t big = FM_LOGS_MAX_MESSAGE * 2;
    char *m = malloc(big);
    memset(m, 'a', big);
    /* a multi-byte character straddling the cut is not split */
    memcpy(m + FM_LOGS_MAX_MESSAGE - 1, "\xc3\xa9", 2);
    fm_logs_src src = {.deployment = "d3", .function = "f"};
    for (int i = 0; i < 200; i++)
        fm_logs_append(&src, FM_LOG_INFO, 1, m, big);
    fm_logs_append(&src, FM_LOG_INFO, 1, "last", 4);
    uint64_t next;
    json_t *arr = read_all("d3", 0, &next);
    size_t n = json_array_size(arr);
    assert_true(n > 10);
    assert_true(n * (FM_LOGS_MAX_MESSAGE + sizeof(FM_LOGS_TRUNCATED) + FM_LOGS_ENTRY_OVERHEAD) <=
                FM_LOGS_MAX_BYTES + FM_LOGS_MAX_MESSAGE * 2);
    assert_string_equal(msg_at(arr, n - 1), "last");
    const char *first = msg_at(arr, 0);
    size_t fl = strlen(first);
    assert_int_equal(fl, FM_LOGS_MAX_MESSAGE - 1 + strlen(FM_LOGS_TRUNCATED));
    assert_string_equal(first + fl - strlen(FM_LOGS_TRUNCATED), FM_LOGS_TRUNCATED);
    json_decref(arr);
    free(m);
}

static void test_since_tail_and_next(void **state) {
    uint64_t s[10];
    char msg[8];
    for (int i = 0; i < 10; i++) {
        snprintf(msg, sizeof(msg), "%d", i);
        s[i] = add("d4", "f", FM_LOG_INFO, msg);
    }
    uint64_t next;
    /* since: the oldest `limit` after it; next = the last one returned */
    fm_logs_filter f = {.has_since = true, .since = s[2], .limit = 3};
    json_t *arr = fm_logs_read("d4", &f, &next);
    assert_int_equal(json_array_size(arr), 3);
    assert_string_equal(msg_at(arr, 0), "3");
    assert_int_equal(next, s[5]);
    json_decref(arr);
    /* no since: the newest `limit` (a tail); next = the newest seq */
    fm_logs_filter t = {.limit = 3};
    arr = fm_logs_read("d4", &t, &next);
    assert_int_equal(json_array_size(arr), 3);
    assert_string_equal(msg_at(arr, 0), "7");
    assert_string_equal(msg_at(arr, 2), "9");
    assert_int_equal(next, s[9]);
    json_decref(arr);
    /* nothing newer: empty, next stays */
    arr = read_all("d4", s[9], &next);
    assert_int_equal(json_array_size(arr), 0);
    assert_int_equal(next, s[9]);
    json_decref(arr);
    /* an unknown deployment reads as empty */
    arr = read_all("nope", 7, &next);
    assert_int_equal(json_array_size(arr), 0);
    assert_int_equal(next, 7);
    json_decref(arr);
}

static void test_filters(void **state) {
    add("d5", "a", FM_LOG_DEBUG, "a-debug");
    add("d5", "b", FM_LOG_INFO, "b-info");
    add("d5", "a", FM_LOG_WARN, "a-warn");
    add("d5", "ab", FM_LOG_ERROR, "ab-error");
    uint64_t next;
    fm_logs_filter f = {.has_since = true, .function = "a"};
    json_t *arr = fm_logs_read("d5", &f, &next);
    assert_int_equal(json_array_size(arr), 2);
    assert_string_equal(msg_at(arr, 0), "a-debug");
    assert_string_equal(msg_at(arr, 1), "a-warn");
    json_decref(arr);
    fm_logs_filter l = {.has_since = true, .min_level = FM_LOG_WARN};
    arr = fm_logs_read("d5", &l, &next);
    assert_int_equal(json_array_size(arr), 2);
    assert_string_equal(msg_at(arr, 0), "a-warn");
    assert_string_equal(msg_at(arr, 1), "ab-error");
    json_decref(arr);
    fm_logs_filter ts = {.has_since = true, .since_ms = 1796151600124};
    arr = fm_logs_read("d5", &ts, &next);
    assert_int_equal(json_array_size(arr), 0);
    json_decref(arr);
}

static void test_drop(void **state) {
    add("d6", "f", FM_LOG_INFO, "x");
    assert_true(fm_logs_exists("d6"));
    fm_logs_drop("d6");
    assert_false(fm_logs_exists("d6"));
    fm_logs_drop("d6");
    uint64_t next;
    json_t *arr = read_all("d6", 0, &next);
    assert_int_equal(json_array_size(arr), 0);
    json_decref(arr);
}

static void test_parse_since(void **state) {
    int64_t now = 1796151600000;
    fm_logs_filter f = {0};
    assert_true(fm_logs_parse_since("42", 2, now, &f));
    assert_true(f.has_since);
    assert_int_equal(f.since, 42);
    assert_int_equal(f.since_ms, 0);
    assert_true(fm_logs_parse_since("5m", 2, now, &f));
    assert_int_equal(f.since, 0);
    assert_int_equal(f.since_ms, now - 300000);
    assert_true(fm_logs_parse_since("30s", 3, now, &f));
    assert_int_equal(f.since_ms, now - 30000);
    assert_true(fm_logs_parse_since("1h", 2, now, &f));
    assert_int_equal(f.since_ms, now - 3600000);
    assert_true(fm_logs_parse_since("250ms", 5, now, &f));
    assert_int_equal(f.since_ms, now - 250);
    const char *t = "2026-12-01T19:00:00.5Z";
    assert_true(fm_logs_parse_since(t, strlen(t), now, &f));
    assert_int_equal(f.since_ms, 1796151600500);
    t = "2026-12-01T20:00:00+01:00";
    assert_true(fm_logs_parse_since(t, strlen(t), now, &f));
    assert_int_equal(f.since_ms, 1796151600000);
    const char *bad[] = {"",           "5x",
                         "m",          "-1",
                         "2026-12-01", "2026-12-01T19:00:00",
                         "1.5s",       "99999999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(fm_logs_parse_since(bad[i], strlen(bad[i]), now, &f));
    fm_log_level lv;
    assert_true(fm_logs_parse_level("warning", 7, &lv));
    assert_int_equal(lv, FM_LOG_WARN);
    assert_true(fm_logs_parse_level("ERROR", 5, &lv));
    assert_int_equal(lv, FM_LOG_ERROR);
    assert_false(fm_logs_parse_level("loud", 4, &lv));
}

static void test_http_query_and_route(void **state) {
    fm_logs_query q;
    fm_err err = FM_ERR_INIT;
    const char *s = "since=12&limit=5&function=gr%65et&level=warn&follow=1&other=x";
    assert_int_equal(fm_logs_http_query(s, strlen(s), &q, &err), FM_OK);
    assert_true(q.f.has_since);
    assert_int_equal(q.f.since, 12);
    assert_int_equal(q.f.limit, 5);
    assert_string_equal(q.f.function, "greet");
    assert_int_equal(q.f.min_level, FM_LOG_WARN);
    assert_true(q.follow);
    assert_int_equal(fm_logs_http_query("follow", 6, &q, &err), FM_OK);
    assert_true(q.follow);
    assert_int_equal(fm_logs_http_query("follow=0", 8, &q, &err), FM_OK);
    assert_false(q.follow);
    assert_int_equal(fm_logs_http_query("", 0, &q, &err), FM_OK);
    assert_false(q.f.has_since);
    assert_false(q.follow);
    assert_null(q.f.function);
    const char *bad[] = {"limit=0", "limit=10001", "limit=x", "level=loud", "since=yesterday"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(fm_logs_http_query(bad[i], strlen(bad[i]), &q, &err), FM_BAD_REQUEST);
        fm_err_clear(&err);
    }
    fm_route r;
    fm_route_match("/system/v1/deployments/hello/logs", 33, &r);
    assert_int_equal(r.kind, FM_ROUTE_LOGS);
    assert_true(r.system);
    assert_int_equal(r.alen, 5);
    assert_true(fm_route_allows(&r, "GET", 3));
    assert_false(fm_route_allows(&r, "POST", 4));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_entry_fields, teardown),
        cmocka_unit_test_teardown(test_entry_bound_and_order, teardown),
        cmocka_unit_test_teardown(test_byte_bound_and_truncation, teardown),
        cmocka_unit_test_teardown(test_since_tail_and_next, teardown),
        cmocka_unit_test_teardown(test_filters, teardown),
        cmocka_unit_test_teardown(test_drop, teardown),
        cmocka_unit_test(test_parse_since),
        cmocka_unit_test(test_http_query_and_route),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
