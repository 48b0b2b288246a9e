/* test_route.c - path routing (src/gateway/route.c): which surface a path
 * belongs to, the segments it extracts, and the methods each allows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "gateway/route.h"

static fm_route route(const char *path) {
    fm_route r;
    fm_route_match(path, strlen(path), &r);
    return r;
}

static void assert_seg(const char *got, size_t len, const char *want) {
    assert_non_null(got);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(got, want, len);
}

static void test_fn(void **state) {
    fm_route r = route("/fn/hello/merge");
    assert_int_equal(r.kind, FM_ROUTE_FN);
    assert_false(r.system);
    assert_seg(r.a, r.alen, "hello");
    assert_seg(r.b, r.blen, "merge");
    assert_true(fm_route_allows(&r, "GET", 3));
    assert_true(fm_route_allows(&r, "HEAD", 4));
    assert_true(fm_route_allows(&r, "POST", 4));
    assert_false(fm_route_allows(&r, "PUT", 3));
    assert_false(fm_route_allows(&r, "DELETE", 6));
    assert_false(fm_route_allows(&r, "POS", 3));
}

static void test_fn_malformed(void **state) {
    const char *bad[] = {"/fn/", "/fn/hello", "/fn/hello/", "/fn//merge", "/fn/a/b/c", "/fn"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fm_route r = route(bad[i]);
        assert_int_equal(r.kind, FM_ROUTE_NONE);
        assert_non_null(r.why);
    }
}

static void test_rpc_and_ops(void **state) {
    fm_route r = route("/rpc");
    assert_int_equal(r.kind, FM_ROUTE_RPC);
    assert_true(fm_route_allows(&r, "POST", 4));
    assert_false(fm_route_allows(&r, "GET", 3));
    assert_int_equal(route("/rpc/").kind, FM_ROUTE_NONE);
    r = route("/healthz");
    assert_int_equal(r.kind, FM_ROUTE_HEALTHZ);
    assert_true(fm_route_allows(&r, "GET", 3));
    assert_false(fm_route_allows(&r, "POST", 4));
    assert_int_equal(route("/readyz").kind, FM_ROUTE_READYZ);
    r = route("/metrics");
    assert_int_equal(r.kind, FM_ROUTE_METRICS);
    assert_false(r.system);
    assert_true(fm_route_allows(&r, "GET", 3));
    assert_false(fm_route_allows(&r, "POST", 4));
    assert_int_equal(route("/").kind, FM_ROUTE_NONE);
    assert_int_equal(route("/healthzz").kind, FM_ROUTE_NONE);
}

static void test_system(void **state) {
    fm_route r = route("/system/v1/deployments");
    assert_int_equal(r.kind, FM_ROUTE_DEPLOYMENTS);
    assert_true(r.system);
    assert_true(fm_route_allows(&r, "GET", 3));
    assert_false(fm_route_allows(&r, "PUT", 3));
    assert_int_equal(route("/system/v1/deployments/").kind, FM_ROUTE_DEPLOYMENTS);

    r = route("/system/v1/deployments/hello");
    assert_int_equal(r.kind, FM_ROUTE_DEPLOYMENT);
    assert_seg(r.a, r.alen, "hello");
    assert_true(fm_route_allows(&r, "GET", 3));
    assert_true(fm_route_allows(&r, "PUT", 3));
    assert_true(fm_route_allows(&r, "DELETE", 6));
    assert_false(fm_route_allows(&r, "POST", 4));

    r = route("/system/v1/deployments/hello/versions");
    assert_int_equal(r.kind, FM_ROUTE_VERSIONS);
    assert_seg(r.a, r.alen, "hello");
    assert_true(fm_route_allows(&r, "GET", 3));

    r = route("/system/v1/deployments/hello/rollback");
    assert_int_equal(r.kind, FM_ROUTE_ROLLBACK);
    assert_true(fm_route_allows(&r, "POST", 4));
    assert_false(fm_route_allows(&r, "GET", 3));

    r = route("/system/v1/cluster");
    assert_int_equal(r.kind, FM_ROUTE_CLUSTER);
    assert_true(r.system);
    assert_true(fm_route_allows(&r, "GET", 3));
    assert_false(fm_route_allows(&r, "POST", 4));
    assert_int_equal(route("/system/v1/cluster/").kind, FM_ROUTE_CLUSTER);
    assert_int_equal(route("/system/v1/clusters").kind, FM_ROUTE_NONE);
}

static void test_system_unknown_still_needs_token(void **state) {
    const char *paths[] = {"/system/v1", "/system/v1/", "/system/v1/keys",
                           "/system/v1/deploymentsx", "/system/v1/deployments/a/b"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        fm_route r = route(paths[i]);
        assert_int_equal(r.kind, FM_ROUTE_NONE);
        assert_true(r.system);
    }
    assert_false(route("/systemx").system);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fn),
        cmocka_unit_test(test_fn_malformed),
        cmocka_unit_test(test_rpc_and_ops),
        cmocka_unit_test(test_system),
        cmocka_unit_test(test_system_unknown_still_needs_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
