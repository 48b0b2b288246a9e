/* test_manifest.c - registry/manifest.h: fm_manifest_parse (defaults,
 * timeouts, entry, per-function settings, and every refusal naming the
 * offending key) and fm_manifest_timeout. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "fm_test.h"

#include "registry/manifest.h"


static void parse_ok(const char *text, fm_manifest *m) {
    fm_err err = FM_ERR_INIT;
    fm_status st = fm_manifest_parse(text, text ? strlen(text) : 0, m, &err);
    if (st != FM_OK) fail_msg("manifest %s refused: %s", text, err.msg);
    assert_non_null(m->root);
}

/* Expects a refusal whose message names `needle`. */
static void expect_refused(const char *text, const char *needle) {
    fm_manifest m;
    fm_err err = FM_ERR_INIT;
    fm_status st = fm_manifest_parse(text, strlen(text), &m, &err);
    if (st == FM_OK) {
        fm_manifest_dispose(&m);
        fail_msg("manifest accepted: %s", text);
    }
    assert_int_equal(st, FM_INVALID_BUNDLE);
    assert_int_equal(err.status, FM_INVALID_BUNDLE);
    assert_contains(err.msg, "fnmesh.json");
    assert_contains(err.msg, needle);
    fm_manifest_dispose(&m);
    assert_null(m.root);
    fm_err_clear(&err);
}

static void test_no_manifest_gives_defaults(void **state) {
    (void)state;
    fm_manifest m;
    fm_err err = FM_ERR_INIT;
    assert_int_equal(fm_manifest_parse(NULL, 0, &m, &err), FM_OK);
    assert_true(json_is_object(m.root));
    assert_int_equal(json_object_size(m.root), 0);
    assert_int_equal(m.timeout_ms, 30000);
    assert_int_equal(m.timeout_ms, FM_DEFAULT_TIMEOUT_MS);
    assert_null(m.entry);
    assert_null(m.functions);
    assert_int_equal(fm_manifest_timeout(&m, "anything"), 30000);
    fm_manifest_dispose(&m);
    assert_null(m.root);

    parse_ok("{}", &m);
    assert_int_equal(m.timeout_ms, 30000);
    assert_null(m.entry);
    assert_null(m.functions);
    fm_manifest_dispose(&m);
}

static void test_full_manifest(void **state) {
    (void)state;
    fm_manifest m;
    parse_ok("{\"timeout_ms\": 1500, \"entry\": [\"a.js\", \"lib/b.mjs\"],"
             " \"functions\": {\"slow\": {\"timeout_ms\": 60000}, \"plain\": {}}}",
             &m);
    assert_int_equal(m.timeout_ms, 1500);
    assert_true(json_is_array(m.entry));
    assert_int_equal(json_array_size(m.entry), 2);
    assert_string_equal(json_string_value(json_array_get(m.entry, 0)), "a.js");
    assert_string_equal(json_string_value(json_array_get(m.entry, 1)), "lib/b.mjs");
    assert_true(json_is_object(m.functions));
    /* entry and functions are borrowed from root */
    assert_ptr_equal(m.entry, json_object_get(m.root, "entry"));
    assert_ptr_equal(m.functions, json_object_get(m.root, "functions"));

    assert_int_equal(fm_manifest_timeout(&m, "slow"), 60000);
    assert_int_equal(fm_manifest_timeout(&m, "plain"), 1500); /* listed, no timeout of its own */
    assert_int_equal(fm_manifest_timeout(&m, "other"), 1500); /* not listed */
    assert_int_equal(fm_manifest_timeout(&m, "slo"), 1500);   /* not a prefix match */
    fm_manifest_dispose(&m);
}

static void test_per_function_timeout_without_default(void **state) {
    (void)state;
    fm_manifest m;
    parse_ok("{\"functions\": {\"f\": {\"timeout_ms\": 5}}}", &m);
    assert_int_equal(m.timeout_ms, FM_DEFAULT_TIMEOUT_MS);
    assert_int_equal(fm_manifest_timeout(&m, "f"), 5);
    assert_int_equal(fm_manifest_timeout(&m, "g"), FM_DEFAULT_TIMEOUT_MS);
    fm_manifest_dispose(&m);
}

static void test_timeout_bounds(void **state) {
    (void)state;
    fm_manifest m;
    parse_ok("{\"timeout_ms\": 1}", &m);
    assert_int_equal(m.timeout_ms, 1);
    fm_manifest_dispose(&m);
    parse_ok("{\"timeout_ms\": 900000}", &m);
    assert_int_equal(m.timeout_ms, FM_MAX_TIMEOUT_MS);
    assert_int_equal(FM_MAX_TIMEOUT_MS, 900000);
    fm_manifest_dispose(&m);

    expect_refused("{\"timeout_ms\": 0}", "timeout_ms");
    expect_refused("{\"timeout_ms\": -1}", "timeout_ms");
    expect_refused("{\"timeout_ms\": -9223372036854775808}", "timeout_ms");
    expect_refused("{\"timeout_ms\": 900001}", "timeout_ms");
    expect_refused("{\"timeout_ms\": 9223372036854775807}", "timeout_ms");
    expect_refused("{\"functions\": {\"f\": {\"timeout_ms\": 0}}}", "functions.f.timeout_ms");
    expect_refused("{\"functions\": {\"f\": {\"timeout_ms\": -5}}}", "functions.f.timeout_ms");
    expect_refused("{\"functions\": {\"f\": {\"timeout_ms\": 900001}}}",
                   "functions.f.timeout_ms");
}

static void test_wrong_types(void **state) {
    (void)state;
    expect_refused("{\"timeout_ms\": \"1000\"}", "timeout_ms");
    expect_refused("{\"timeout_ms\": 1000.0}", "timeout_ms");
    expect_refused("{\"timeout_ms\": 1.5}", "timeout_ms");
    expect_refused("{\"timeout_ms\": true}", "timeout_ms");
    expect_refused("{\"timeout_ms\": null}", "timeout_ms");
    expect_refused("{\"timeout_ms\": [1000]}", "timeout_ms");
    expect_refused("{\"functions\": [\"f\"]}", "functions");
    expect_refused("{\"functions\": \"f\"}", "functions");
    expect_refused("{\"functions\": {\"f\": 1000}}", "functions.f");
    expect_refused("{\"functions\": {\"f\": null}}", "functions.f");
    expect_refused("{\"functions\": {\"f\": {\"timeout_ms\": \"5\"}}}", "functions.f.timeout_ms");
}

static void test_entry_checks(void **state) {
    (void)state;
    expect_refused("{\"entry\": \"a.js\"}", "entry");
    expect_refused("{\"entry\": {\"a.js\": true}}", "entry");
    expect_refused("{\"entry\": null}", "entry");
    expect_refused("{\"entry\": []}", "entry");
    expect_refused("{\"entry\": [1]}", "entry[0]");
    expect_refused("{\"entry\": [\"a.js\", null]}", "entry[1]");
    expect_refused("{\"entry\": [\"a.js\", \"b.js\", [\"c.js\"]]}", "entry[2]");

    fm_manifest m;
    parse_ok("{\"entry\": [\"only.js\"]}", &m);
    assert_int_equal(json_array_size(m.entry), 1);
    assert_null(m.functions);
    fm_manifest_dispose(&m);
}

static void test_max_instances(void **state) {
    (void)state;
    fm_manifest m;
    parse_ok("{}", &m);
    assert_int_equal(m.max_instances, 0); /* the default */
    fm_manifest_dispose(&m);
    parse_ok("{\"max_instances\": 1}", &m);
    assert_int_equal(m.max_instances, 1);
    fm_manifest_dispose(&m);
    parse_ok("{\"max_instances\": 1024}", &m);
    assert_int_equal(m.max_instances, 1024);
    fm_manifest_dispose(&m);
    expect_refused("{\"max_instances\": 0}", "max_instances must be an integer from 1 to 1024");
    expect_refused("{\"max_instances\": 1025}", "max_instances");
    expect_refused("{\"max_instances\": \"2\"}", "max_instances");
    expect_refused("{\"functions\": {\"f\": {\"max_instances\": 2}}}", "functions.f.max_instances");
}

static void test_isolation(void **state) {
    (void)state;
    fm_manifest m;
    parse_ok("{}", &m);
    assert_int_equal(m.isolation, FM_ISOLATION_DEFAULT); /* the node's --isolation */
    fm_manifest_dispose(&m);
    parse_ok("{\"isolation\": \"process\"}", &m);
    assert_int_equal(m.isolation, FM_ISOLATION_PROCESS);
    fm_manifest_dispose(&m);
    parse_ok("{\"isolation\": \"thread\"}", &m);
    assert_int_equal(m.isolation, FM_ISOLATION_THREAD);
    fm_manifest_dispose(&m);
    expect_refused("{\"isolation\": \"vm\"}", "isolation must be \"thread\" or \"process\"");
    expect_refused("{\"isolation\": true}", "isolation");
    expect_refused("{\"functions\": {\"f\": {\"isolation\": \"process\"}}}",
                   "functions.f.isolation");
}

static void test_unknown_keys(void **state) {
    (void)state;
    expect_refused("{\"timeout\": 1000}", "\"timeout\"");
    expect_refused("{\"timeout_ms\": 1000, \"entrypoint\": [\"a.js\"]}", "entrypoint");
    expect_refused("{\"Functions\": {}}", "Functions");
    expect_refused("{\"functions\": {\"f\": {\"memory_mb\": 128}}}", "functions.f.memory_mb");
    expect_refused("{\"functions\": {\"f\": {\"timeout_ms\": 10, \"timeout\": 10}}}",
                   "functions.f.timeout (");
}

static void test_invalid_json_and_non_objects(void **state) {
    (void)state;
    expect_refused("{\"timeout_ms\": 1000,}", "fnmesh.json:1:");
    expect_refused("{\"timeout_ms\":\n 1000\n", "fnmesh.json:");
    expect_refused("", "fnmesh.json");
    expect_refused("[]", "object");
    expect_refused("[{\"timeout_ms\": 5}]", "object");
    /* a bare scalar is not even a JSON document for the manifest parser */
    expect_refused("42", "fnmesh.json");
    expect_refused("\"x\"", "fnmesh.json");
}

static void test_duplicate_keys(void **state) {
    (void)state;
    expect_refused("{\"timeout_ms\": 1000, \"timeout_ms\": 2000}", "timeout_ms");
    expect_refused("{\"functions\": {\"f\": {\"timeout_ms\": 1}, \"f\": {\"timeout_ms\": 2}}}",
                   "\"f\"");
    expect_refused("{\"functions\": {\"f\": {\"timeout_ms\": 1, \"timeout_ms\": 2}}}",
                   "timeout_ms");
}

static void test_parse_honours_length(void **state) {
    (void)state;
    const char *text = "{\"timeout_ms\": 7}trailing garbage";
    fm_manifest m;
    fm_err err = FM_ERR_INIT;
    assert_int_equal(fm_manifest_parse(text, 17, &m, &err), FM_OK);
    assert_int_equal(m.timeout_ms, 7);
    fm_manifest_dispose(&m);

    /* the full text is refused */
    assert_int_equal(fm_manifest_parse(text, strlen(text), &m, &err), FM_INVALID_BUNDLE);
    fm_manifest_dispose(&m);
    fm_err_clear(&err);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_manifest_gives_defaults),
        cmocka_unit_test(test_full_manifest),
        cmocka_unit_test(test_per_function_timeout_without_default),
        cmocka_unit_test(test_timeout_bounds),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_entry_checks),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_max_instances),
        cmocka_unit_test(test_isolation),
        cmocka_unit_test(test_invalid_json_and_non_objects),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_parse_honours_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
