/* test_metrics.c - metrics/metrics.h: the exposition of one function
 * (cumulative histogram buckets, +Inf equal to the count, label values
 * escaped), CPU and memory recording, and the catalogue in
 * docs/observability.md, which must be exactly what FM_METRICS generates
 * (FNMESH_UPDATE_DOCS=1 rewrites it instead of failing). */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fm_test.h"

#include "core/util.h"
#include "metrics/metrics.h"

#define BEGIN "<!-- catalogue: generated from FM_METRICS (src/metrics/metrics.h); do not edit -->\n"
#define END "<!-- end of catalogue -->\n"

static void test_function_exposition(void **state) {
    fm_fn_metrics m;
    memset(&m, 0, sizeof(m));
    fm_metrics_record(&m, FM_OUTCOME_OK, 50, 1);      /* 0.05 ms */
    fm_metrics_record(&m, FM_OUTCOME_OK, 3000, 0);    /* 3 ms */
    fm_metrics_record(&m, FM_OUTCOME_ERROR, 90e6, 0); /* 90 s: above every bucket */
    fm_metrics_record(&m, FM_OUTCOME_REJECTED, -1, 0);
    fm_metrics_buf b = {0};
    fm_metrics_function(&b, "fnmesh_function_duration_seconds", &m, "d\"q", "f\\n", "js", "abc");
    fm_metrics_function(&b, "fnmesh_function_invocations_total", &m, "d", "f", "js", "abc");
    fm_metrics_function(&b, "fnmesh_function_cold_starts_total", &m, "d", "f", "js", "abc");
    assert_contains(b.data, "deployment=\"d\\\"q\",function=\"f\\\\n\"");
    assert_contains(b.data, ",le=\"0.0001\"} 1\n");
    assert_contains(b.data, ",le=\"0.005\"} 2\n");
    assert_contains(b.data, ",le=\"60\"} 2\n");
    assert_contains(b.data, ",le=\"+Inf\"} 3\n");
    assert_contains(b.data, "version=\"abc\"} 3\n"); /* _count */
    assert_contains(b.data, "outcome=\"rejected\"} 1\n");
    assert_contains(b.data, "outcome=\"error\"} 1\n");
    assert_contains(b.data, "fnmesh_function_cold_starts_total{deployment=\"d\",function=\"f\","
                            "runtime=\"js\",version=\"abc\"} 1\n");
    free(b.data);
}

static void test_usage_recording(void **state) {
    fm_fn_metrics m;
    memset(&m, 0, sizeof(m));
    fm_metrics_record_usage(&m, 30, 4096);
    fm_metrics_record_usage(&m, 12, 1024);
    assert_int_equal(atomic_load(&m.cpu_us), 42);
    assert_int_equal(atomic_load(&m.peak_memory), 4096);
    fm_metrics_buf b = {0};
    fm_metrics_function_value(&b, "fnmesh_function_cpu_seconds_total", 0.000042, "d", "f", "c",
                              "v");
    assert_string_equal(b.data, "fnmesh_function_cpu_seconds_total{deployment=\"d\",function=\"f\","
                                "runtime=\"c\",version=\"v\"} 4.2e-05\n");
    free(b.data);
}

static char *generate(void) {
    fm_metrics_buf b = {0};
    fm_metrics_printf(&b, BEGIN "| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for (size_t i = 0; i < fm_metric_count; i++) {
        const fm_metric_def *d = &fm_metric_catalogue[i];
        fm_metrics_printf(&b, "| `%s` | %s | ", d->name, d->type);
        const char *p = d->labels;
        while (*p) {
            size_t n = strcspn(p, ", ");
            fm_metrics_printf(&b, "`%.*s`", (int)n, p);
            p += n;
            while (*p == ',' || *p == ' ') p++;
            if (*p) fm_metrics_printf(&b, ", ");
        }
        fm_metrics_printf(&b, " | %s |\n", d->help);
    }
    fm_metrics_printf(&b, END);
    return b.data;
}

static void test_docs_catalogue_is_generated(void **state) {
    const char *path = FM_SOURCE_DIR "/docs/observability.md";
    size_t len = 0;
    char *doc = fm_read_file(path, &len);
    assert_non_null(doc);
    char *want = generate();
    char *a = strstr(doc, BEGIN), *z = a ? strstr(a, END) : NULL;
    if (!a || !z) fail_msg("%s has no generated catalogue block", path);
    z += strlen(END);
    size_t have = (size_t)(z - a);
    if (have != strlen(want) || memcmp(a, want, have) != 0) {
        const char *upd = getenv("FNMESH_UPDATE_DOCS");
        if (upd && strcmp(upd, "1") == 0) {
            FILE *f = fopen(path, "w");
            assert_non_null(f);
            fwrite(doc, 1, (size_t)(a - doc), f);
            fputs(want, f);
            fputs(z, f);
            fclose(f);
            printf("rewrote the catalogue in %s\n", path);
        } else {
            fail_msg("the catalogue in %s differs from FM_METRICS; run "
                     "FNMESH_UPDATE_DOCS=1 build/tests/test_metrics to regenerate it:\n%s",
                     path, want);
        }
    }
    free(want);
    free(doc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_function_exposition),
        cmocka_unit_test(test_usage_recording),
        cmocka_unit_test(test_docs_catalogue_is_generated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
