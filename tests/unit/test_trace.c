/* test_trace.c - tracing (src/metrics/trace.c): traceparent parsing and
 * formatting with the valid and invalid cases of W3C Trace Context level 1,
 * tracestate bounding, ids, the span ring (bounds, lookup, reads by
 * sequence, recent traces), the OTLP JSON shape, and the traces routes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fm_test.h"
#include "gateway/route.h"
#include "core/util.h"
#include "metrics/trace.h"

#define TID "4bf92f3577b34da6a3ce929d0e0e4736"
#define PID "00f067aa0ba902b7"

static bool parse(const char *s, fm_trace_ctx *c) {
    return fm_trace_parse(s, strlen(s), c);
}

static void test_parse_valid(void **state) {
    fm_trace_ctx c;
    memset(&c, 0xaa, sizeof(c));
    assert_true(parse("00-" TID "-" PID "-01", &c));
    char hex[33];
    fm_hex(c.trace_id, 16, hex);
    assert_string_equal(hex, TID);
    fm_hex(c.parent_span_id, 8, hex);
    assert_string_equal(hex, PID);
    assert_true(fm_trace_zero(c.span_id, 8));
    assert_int_equal(c.flags, 1);
    assert_true(parse("00-" TID "-" PID "-00", &c));
    assert_int_equal(c.flags, 0);
    /* unknown flag bits are not passed on (level 1 defines only "sampled") */
    assert_true(parse("00-" TID "-" PID "-ff", &c));
    assert_int_equal(c.flags, 1);
    /* higher versions: read as version 00, more fields after a dash allowed */
    assert_true(parse("01-" TID "-" PID "-01", &c));
    assert_true(parse("cc-" TID "-" PID "-01-what-the-future-will-be-like", &c));
    fm_hex(c.trace_id, 16, hex);
    assert_string_equal(hex, TID);
}

static void test_parse_invalid(void **state) {
    const char *bad[] = {
        "",
        "00",
        "00-" TID "-" PID,        /* no flags */
        "00-" TID "-" PID "-0",   /* short flags */
        "00-" TID "-" PID "-011", /* version 00 has nothing after */
        "00-" TID "-" PID "-01-", /* ... not even a dash */
        "00-" TID "-" PID "-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e473-" PID "-01",  /* short trace id */
        "00-" TID "-00f067aa0ba902b-01",                  /* short parent id */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-" PID "-01", /* not hex */
        "00-" TID "-00f067aa0ba902bz-01",
        "00-" TID "-" PID "-0g",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-" PID "-01", /* uppercase */
        "00-" TID "-00F067AA0BA902B7-01",
        "00-" TID "-" PID "-0A",
        "0A-" TID "-" PID "-01",
        "00-00000000000000000000000000000000-" PID "-01", /* all-zero ids */
        "00-" TID "-0000000000000000-01",
        "ff-" TID "-" PID "-01",      /* version ff is invalid */
        "cc-" TID "-" PID "-01.what", /* future: dash after flags */
        "00_" TID "_" PID "_01",      /* separators */
        "00-" TID "-" PID "-01 ",
        " 00-" TID "-" PID "-01",
        "0-0" TID "-" PID "-01",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fm_trace_ctx c;
        if (parse(bad[i], &c)) fail_msg("accepted invalid traceparent \"%s\"", bad[i]);
    }
}

static void test_format_and_children(void **state) {
    fm_trace_ctx in, root, child;
    assert_true(parse("00-" TID "-" PID "-01", &in));
    fm_trace_begin(&root, &in);
    assert_memory_equal(root.trace_id, in.trace_id, 16);
    assert_memory_equal(root.parent_span_id, in.parent_span_id, 8);
    assert_false(fm_trace_zero(root.span_id, 8));
    char out[FM_TRACEPARENT_LEN + 1];
    fm_trace_format(&root, out);
    assert_int_equal(strlen(out), FM_TRACEPARENT_LEN);
    assert_memory_equal(out, "00-" TID "-", 36);
    assert_string_equal(out + 52, "-01");
    fm_trace_ctx back;
    assert_true(parse(out, &back)); /* what we send parses */
    assert_memory_equal(back.parent_span_id, root.span_id, 8);

    fm_trace_child(&child, &root);
    assert_memory_equal(child.trace_id, root.trace_id, 16);
    assert_memory_equal(child.parent_span_id, root.span_id, 8);
    assert_memory_not_equal(child.span_id, root.span_id, 8);

    fm_trace_ctx fresh;
    fm_trace_begin(&fresh, NULL);
    assert_false(fm_trace_zero(fresh.trace_id, 16));
    assert_true(fm_trace_zero(fresh.parent_span_id, 8));
    assert_int_equal(fresh.flags, 1);
}

static void test_random_ids(void **state) {
    uint8_t a[16], b[16];
    for (int i = 0; i < 1000; i++) {
        fm_trace_random(a, 16);
        fm_trace_random(b, 16);
        assert_false(fm_trace_zero(a, 16));
        assert_memory_not_equal(a, b, 16);
    }
    uint8_t odd[3];
    fm_trace_random(odd, 3);
    assert_false(fm_trace_zero(odd, 3));
}

static void test_unhex(void **state) {
    uint8_t id[16];
    assert_true(fm_trace_unhex(TID, 32, id, 16));
    assert_true(fm_trace_unhex("4BF92F3577B34DA6A3CE929D0E0E4736", 32, id, 16));
    assert_false(fm_trace_unhex(TID, 31, id, 16));
    assert_false(fm_trace_unhex("4bf92f3577b34da6a3ce929d0e0e473x", 32, id, 16));
}

static void test_tracestate_bound(void **state) {
    char buf[2048];
    /* short: unchanged */
    strcpy(buf, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
    assert_int_equal(fm_tracestate_bound(buf, strlen(buf)), strlen(buf));
    /* members over 128 characters go first, wherever they are */
    char big[200];
    memset(big, 'x', sizeof(big));
    memcpy(big, "big=", 4);
    big[150] = '\0';
    size_t n = 0;
    n += (size_t)sprintf(buf + n, "a=1,%s", big);
    for (int i = 0; i < 20; i++)
        n += (size_t)sprintf(buf + n, ",m%02d=%s", i, "vvvvvvvvvvvvvvvv");
    size_t len = fm_tracestate_bound(buf, n);
    buf[len] = '\0';
    assert_true(len <= FM_TRACESTATE_MAX);
    assert_null(strstr(buf, "big="));
    assert_true(strncmp(buf, "a=1,m00=", 8) == 0);
    assert_non_null(strstr(buf, "m19="));
    /* then from the end, whole members only */
    n = 0;
    for (int i = 0; i < 40; i++)
        n += (size_t)sprintf(buf + n, "%sk%02d=%s", i ? "," : "", i, "vvvvvvvvvvvvvvvv");
    len = fm_tracestate_bound(buf, n);
    buf[len] = '\0';
    assert_true(len <= FM_TRACESTATE_MAX);
    assert_int_equal(len, 24 * 20 + 23);
    assert_true(buf[len - 1] == 'v');
    assert_non_null(strstr(buf, "k23="));
    assert_null(strstr(buf, "k24="));
    /* one member too long for anything: nothing left */
    memset(buf, 'y', 600);
    memcpy(buf, "y=", 2);
    assert_int_equal(fm_tracestate_bound(buf, 600), 0);
}

static void test_copy_utf8(void **state) {
    char out[6];
    /* "abcéé" in 6 bytes: cut before the second 2-byte character */
    fm_trace_copy(out, sizeof(out), "abc\xc3\xa9\xc3\xa9");
    assert_string_equal(out, "abc\xc3\xa9");
    fm_trace_copy(out, sizeof(out), "abcd\xc3\xa9");
    assert_string_equal(out, "abcd");
    fm_trace_copy(out, sizeof(out), NULL);
    assert_string_equal(out, "");
}

static fm_span mkspan(uint8_t trace, uint8_t span, int64_t start) {
    fm_span s;
    memset(&s, 0, sizeof(s));
    memset(s.ctx.trace_id, trace, 16);
    memset(s.ctx.span_id, span, 8);
    s.start_ns = start;
    s.end_ns = start + 1000;
    s.kind = FM_SPAN_SERVER;
    snprintf(s.deployment, sizeof(s.deployment), "d%u", trace);
    snprintf(s.function, sizeof(s.function), "f%u", span);
    return s;
}

static void test_ring_bounds_and_lookup(void **state) {
    fm_trace_ring *r = NULL;
    fm_err err = FM_ERR_INIT;
    assert_int_equal(fm_trace_ring_create(5, &r, &err), FM_OK);
    assert_int_equal(fm_trace_ring_capacity(r), 8);
    fm_span out[16];
    uint8_t t1[16], t2[16];
    memset(t1, 1, 16);
    memset(t2, 2, 16);
    assert_int_equal(fm_trace_ring_find(r, t1, out, 16), 0);
    /* trace 1: three spans appended out of start order */
    fm_span a = mkspan(1, 1, 300), b = mkspan(1, 2, 100), c = mkspan(1, 3, 200);
    fm_trace_ring_append(r, &a);
    fm_trace_ring_append(r, &b);
    fm_trace_ring_append(r, &c);
    assert_int_equal(fm_trace_ring_find(r, t1, out, 16), 3);
    assert_int_equal(out[0].start_ns, 100);
    assert_int_equal(out[1].start_ns, 200);
    assert_int_equal(out[2].start_ns, 300);
    assert_int_equal(fm_trace_ring_find(r, t1, out, 2), 2); /* at most max */
    /* seven spans of trace 2 push out two of trace 1's three */
    for (int i = 0; i < 7; i++) {
        fm_span s = mkspan(2, (uint8_t)(10 + i), 1000 + i);
        fm_trace_ring_append(r, &s);
    }
    assert_int_equal(fm_trace_ring_appended(r), 10);
    assert_int_equal(fm_trace_ring_find(r, t1, out, 16), 1);
    assert_int_equal(out[0].start_ns, 200);
    assert_int_equal(fm_trace_ring_find(r, t2, out, 16), 7);
    /* reads by sequence */
    fm_span s;
    assert_int_equal(fm_trace_ring_read(r, 0, &s), -1); /* overwritten */
    assert_int_equal(fm_trace_ring_read(r, 1, &s), -1);
    assert_int_equal(fm_trace_ring_read(r, 2, &s), 0);
    assert_int_equal(s.start_ns, 200);
    assert_int_equal(fm_trace_ring_read(r, 9, &s), 0);
    assert_int_equal(s.start_ns, 1006);
    assert_int_equal(fm_trace_ring_read(r, 10, &s), 1); /* not written yet */
    /* recent traces: newest first, with their counts */
    fm_trace_summary sum[4];
    size_t n = fm_trace_ring_recent(r, 4, sum);
    assert_int_equal(n, 2);
    assert_memory_equal(sum[0].trace_id, t2, 16);
    assert_int_equal(sum[0].spans, 7);
    assert_int_equal(sum[0].start_ns, 1000);
    assert_int_equal(sum[0].end_ns, 1006 + 1000);
    assert_string_equal(sum[0].name, "d2/f10");
    assert_int_equal(sum[1].spans, 1);
    assert_int_equal(fm_trace_ring_recent(r, 1, sum), 1);
    assert_memory_equal(sum[0].trace_id, t2, 16);
    fm_trace_ring_destroy(r);
    fm_trace_ring_destroy(NULL);
}

static void test_span_and_otlp_json(void **state) {
    fm_span s = mkspan(0xab, 0xcd, 1764614104123456789LL);
    memset(s.ctx.parent_span_id, 0xef, 8);
    s.kind = FM_SPAN_INTERNAL;
    s.error = true;
    s.hops = 2;
    s.outcome = FM_OUTCOME_ERROR;
    snprintf(s.message, sizeof(s.message), "boom");
    json_t *j = fm_trace_span_json(&s);
    assert_string_equal(json_string_value(json_object_get(j, "span_id")), "cdcdcdcdcdcdcdcd");
    assert_string_equal(json_string_value(json_object_get(j, "parent_span_id")),
                        "efefefefefefefef");
    assert_string_equal(json_string_value(json_object_get(j, "kind")), "internal");
    assert_string_equal(json_string_value(json_object_get(j, "start")),
                        "2025-12-01T18:35:04.123456Z");
    assert_int_equal(json_integer_value(json_object_get(j, "duration_us")), 1);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "error");
    assert_string_equal(json_string_value(json_object_get(j, "error")), "boom");
    json_t *a = json_object_get(j, "attributes");
    assert_int_equal(json_integer_value(json_object_get(a, "fnmesh.hops")), 2);
    assert_string_equal(json_string_value(json_object_get(a, "fnmesh.outcome")), "error");
    json_decref(j);

    fm_span two[2] = {s, mkspan(0xab, 0x01, 5)};
    json_t *doc = fm_trace_otlp_json(two, 2, "inst-1");
    char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    assert_contains(text, "{\"key\":\"service.name\",\"value\":{\"stringValue\":\"fnmesh\"}}");
    assert_contains(text,
                    "{\"key\":\"service.instance.id\",\"value\":{\"stringValue\":\"inst-1\"}}");
    json_t *spans = json_object_get(
        json_array_get(
            json_object_get(json_array_get(json_object_get(doc, "resourceSpans"), 0), "scopeSpans"),
            0),
        "spans");
    assert_int_equal(json_array_size(spans), 2);
    json_t *o = json_array_get(spans, 0);
    assert_string_equal(json_string_value(json_object_get(o, "traceId")),
                        "abababababababababababababababab");
    assert_string_equal(json_string_value(json_object_get(o, "parentSpanId")), "efefefefefefefef");
    assert_string_equal(json_string_value(json_object_get(o, "startTimeUnixNano")),
                        "1764614104123456789");
    assert_string_equal(json_string_value(json_object_get(o, "endTimeUnixNano")),
                        "1764614104123457789");
    assert_int_equal(json_integer_value(json_object_get(o, "kind")), 1);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "status"), "code")), 2);
    assert_contains(text, "{\"key\":\"fnmesh.hops\",\"value\":{\"intValue\":\"2\"}}");
    assert_contains(text, "{\"key\":\"fnmesh.cold_start\",\"value\":{\"boolValue\":false}}");
    /* a root span has no parentSpanId; status OK is code 1 */
    json_t *root = json_array_get(spans, 1);
    assert_null(json_object_get(root, "parentSpanId"));
    assert_int_equal(json_integer_value(json_object_get(root, "kind")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(root, "status"), "code")),
                     1);
    free(text);
    json_decref(doc);
}

static void test_routes(void **state) {
    fm_route r;
    fm_route_match("/system/v1/traces", 17, &r);
    assert_int_equal(r.kind, FM_ROUTE_TRACES);
    assert_true(r.system);
    assert_true(fm_route_allows(&r, "GET", 3));
    assert_false(fm_route_allows(&r, "POST", 4));
    const char *p = "/system/v1/traces/" TID;
    fm_route_match(p, strlen(p), &r);
    assert_int_equal(r.kind, FM_ROUTE_TRACE);
    assert_int_equal(r.alen, 32);
    assert_memory_equal(r.a, TID, 32);
    p = "/system/v1/traces/" TID "/x";
    fm_route_match(p, strlen(p), &r);
    assert_int_equal(r.kind, FM_ROUTE_NONE);
    assert_true(r.system);
    p = "/system/v1/tracesx";
    fm_route_match(p, strlen(p), &r);
    assert_int_equal(r.kind, FM_ROUTE_NONE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_format_and_children),
        cmocka_unit_test(test_random_ids),
        cmocka_unit_test(test_unhex),
        cmocka_unit_test(test_tracestate_bound),
        cmocka_unit_test(test_copy_utf8),
        cmocka_unit_test(test_ring_bounds_and_lookup),
        cmocka_unit_test(test_span_and_otlp_json),
        cmocka_unit_test(test_routes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
