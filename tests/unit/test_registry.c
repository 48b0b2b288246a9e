/* test_registry.c - registry/registry.h without an executor running:
 * versions (fm_version_new / set_exports / find / json, reference counts)
 * and the deployment table (activate, acquire, remove, foreach in name
 * order, replacing the active version, snapshot grace period). With
 * fm_exec_global == NULL the last release frees the version at once, so
 * ASan/LSan check the reference counting. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fm_test.h"

#include "registry/registry.h"

extern const fm_runtime fm_runtime_js;


#define CREATED_AT 1700000000000LL /* 2023-11-14T22:13:20Z */

static int refs(fm_version *v) {
    return atomic_load(&v->refs);
}

/* A version with one JS unit and the given manifest (NULL: none). refs = 1. */
static fm_version *new_version(const char *dep, const char *id, const char *manifest) {
    fm_manifest m;
    fm_err err = FM_ERR_INIT;
    if (fm_manifest_parse(manifest, manifest ? strlen(manifest) : 0, &m, &err) != FM_OK)
        fail_msg("manifest: %s", err.msg);
    fm_unit *u = calloc(1, sizeof(*u));
    u->rt = &fm_runtime_js;
    u->artifact = strdup("compiled");
    u->artifact_len = 8;
    fm_version *v = fm_version_new(dep, id, CREATED_AT, &m, u, 1, 1);
    assert_non_null(v);
    assert_null(m.root); /* moved into the version */
    return v;
}

/* Exports from "name@file:param,param" specs (params may be empty). Owned. */
static fm_export *make_exports(const char *const *specs, size_t n) {
    fm_export *ex = calloc(n ? n : 1, sizeof(*ex));
    for (size_t i = 0; i < n; i++) {
        char *s = strdup(specs[i]);
        char *at = strchr(s, '@'), *colon = strchr(s, ':');
        assert_non_null(at);
        assert_non_null(colon);
        *at = '\0';
        *colon = '\0';
        ex[i].name = strdup(s);
        ex[i].file = strdup(at + 1);
        ex[i].params = json_array();
        char *p = colon + 1;
        while (*p) {
            char *sep = strchr(p, '|');
            if (sep) *sep = '\0';
            json_array_append_new(ex[i].params, json_string(p));
            if (!sep) break;
            p = sep + 1;
        }
        ex[i].unit = 0;
        ex[i].index = (uint32_t)i;
        free(s);
    }
    return ex;
}

static fm_status set_exports(fm_version *v, const char *const *specs, size_t n, fm_err *err) {
    fm_export *ex = make_exports(specs, n);
    fm_status st = fm_version_set_exports(v, ex, n, err);
    fm_exports_free(ex, n); /* the version keeps its own copies */
    return st;
}

/* A ready version exporting `fn` (no params). */
static fm_version *ready_version(const char *dep, const char *id) {
    fm_version *v = new_version(dep, id, NULL);
    const char *specs[] = {"main@index.js:"};
    fm_err err = FM_ERR_INIT;
    if (set_exports(v, specs, 1, &err) != FM_OK) fail_msg("exports: %s", err.msg);
    return v;
}

/* ------------------------------------------------------------------ versions */

static void test_set_exports_builds_sorted_functions(void **state) {
    (void)state;
    fm_version *v = new_version("hello", "abc123", NULL);
    assert_int_equal(refs(v), 1);
    assert_string_equal(v->deployment, "hello");
    assert_string_equal(v->id, "abc123");
    assert_int_equal(v->created_at, CREATED_AT);
    assert_int_equal(v->manifest.timeout_ms, FM_DEFAULT_TIMEOUT_MS);

    /* '|' separates params in these specs */
    const char *specs[] = {
        "merge@index.js:a|b",
        "add@lib/math.js:x|{y}|...z",
        "$util@util.mjs:_p|1bad|caf\xc3\xa9||$",
    };
    fm_err err = FM_ERR_INIT;
    assert_int_equal(set_exports(v, specs, 3, &err), FM_OK);
    assert_int_equal(v->nfns, 3);
    assert_string_equal(v->fns[0].name, "$util");
    assert_string_equal(v->fns[1].name, "add");
    assert_string_equal(v->fns[2].name, "merge");

    const fm_function *add = &v->fns[1];
    assert_string_equal(add->file, "lib/math.js");
    assert_ptr_equal(add->rt, &fm_runtime_js);
    assert_int_equal(add->unit, 0);
    assert_int_equal(add->index, 1);
    assert_int_equal(add->timeout_ms, FM_DEFAULT_TIMEOUT_MS);
    assert_int_equal(add->nparams, 3);
    assert_int_equal(json_array_size(add->params), 3);
    assert_string_equal(json_string_value(json_array_get(add->params, 1)), "{y}");
    assert_string_equal(add->param_names[0], "x");
    assert_null(add->param_names[1]); /* destructuring pattern */
    assert_null(add->param_names[2]); /* rest parameter */

    const fm_function *u = &v->fns[0];
    assert_int_equal(u->index, 2);
    assert_int_equal(u->nparams, 5);
    assert_string_equal(u->param_names[0], "_p");
    assert_null(u->param_names[1]); /* starts with a digit */
    assert_string_equal(u->param_names[2], "caf\xc3\xa9");
    assert_null(u->param_names[3]); /* empty */
    assert_string_equal(u->param_names[4], "$");

    const fm_function *merge = &v->fns[2];
    assert_int_equal(merge->index, 0);
    assert_string_equal(merge->param_names[0], "a");
    assert_string_equal(merge->param_names[1], "b");

    /* functions_json: [{name, file, runtime, params, timeout_ms}] in name order */
    assert_true(json_is_array(v->functions_json));
    assert_int_equal(json_array_size(v->functions_json), 3);
    json_t *j = json_array_get(v->functions_json, 1);
    assert_string_equal(json_string_value(json_object_get(j, "name")), "add");
    assert_string_equal(json_string_value(json_object_get(j, "file")), "lib/math.js");
    assert_string_equal(json_string_value(json_object_get(j, "runtime")), "js");
    assert_true(json_equal(json_object_get(j, "params"), add->params));
    assert_int_equal(json_integer_value(json_object_get(j, "timeout_ms")), FM_DEFAULT_TIMEOUT_MS);

    fm_version_release(v);
}

static void test_manifest_timeouts_applied(void **state) {
    (void)state;
    fm_version *v = new_version(
        "t", "id", "{\"timeout_ms\": 1000, \"functions\": {\"slow\": {\"timeout_ms\": 9000}}}");
    const char *specs[] = {"fast@a.js:", "slow@a.js:"};
    fm_err err = FM_ERR_INIT;
    assert_int_equal(set_exports(v, specs, 2, &err), FM_OK);
    assert_int_equal(fm_version_find(v, "fast", 4)->timeout_ms, 1000);
    assert_int_equal(fm_version_find(v, "slow", 4)->timeout_ms, 9000);
    json_t *slow = json_array_get(v->functions_json, 1);
    assert_int_equal(json_integer_value(json_object_get(slow, "timeout_ms")), 9000);
    fm_version_release(v);
}

static void test_duplicate_export_refused(void **state) {
    (void)state;
    fm_version *v = new_version("d", "id", NULL);
    const char *specs[] = {"handler@a.js:x", "other@a.js:", "handler@b.js:y"};
    fm_err err = FM_ERR_INIT;
    assert_int_equal(set_exports(v, specs, 3, &err), FM_INVALID_BUNDLE);
    assert_int_equal(err.status, FM_INVALID_BUNDLE);
    assert_contains(err.msg, "\"handler\"");
    assert_contains(err.msg, "a.js");
    assert_contains(err.msg, "b.js");
    fm_version_release(v); /* frees the partly built function table */
}

static void test_no_export_refused(void **state) {
    (void)state;
    fm_version *v = new_version("d", "id", NULL);
    fm_err err = FM_ERR_INIT;
    assert_int_equal(fm_version_set_exports(v, NULL, 0, &err), FM_INVALID_BUNDLE);
    assert_contains(err.msg, "no function exported");
    fm_version_release(v);
}

static void test_manifest_naming_missing_function_refused(void **state) {
    (void)state;
    fm_version *v =
        new_version("d", "id", "{\"functions\": {\"main\": {}, \"ghost\": {\"timeout_ms\": 5}}}");
    const char *specs[] = {"main@index.js:"};
    fm_err err = FM_ERR_INIT;
    assert_int_equal(set_exports(v, specs, 1, &err), FM_INVALID_BUNDLE);
    assert_contains(err.msg, "ghost");
    fm_version_release(v);

    /* a prefix of an export is not that export */
    v = new_version("d", "id", "{\"functions\": {\"mai\": {}}}");
    assert_int_equal(set_exports(v, specs, 1, &err), FM_INVALID_BUNDLE);
    assert_contains(err.msg, "mai");
    fm_version_release(v);
}

static void test_version_find_exact(void **state) {
    (void)state;
    fm_version *v = new_version("f", "id", NULL);
    const char *specs[] = {"addAll@a.js:", "add@a.js:", "b@b.js:", "a@a.js:", "zed@z.js:"};
    fm_err err = FM_ERR_INIT;
    assert_int_equal(set_exports(v, specs, 5, &err), FM_OK);

    static const char *names[] = {"a", "add", "addAll", "b", "zed"};
    for (size_t i = 0; i < 5; i++) {
        const fm_function *f = fm_version_find(v, names[i], strlen(names[i]));
        if (!f) fail_msg("%s not found", names[i]);
        assert_string_equal(f->name, names[i]);
    }
    assert_null(fm_version_find(v, "ad", 2));      /* prefix */
    assert_null(fm_version_find(v, "addA", 4));    /* prefix of addAll */
    assert_null(fm_version_find(v, "addAllX", 7)); /* longer */
    assert_null(fm_version_find(v, "Add", 3));     /* case */
    assert_null(fm_version_find(v, "c", 1));
    assert_null(fm_version_find(v, "", 0));
    assert_null(fm_version_find(v, "zzz", 3));
    /* the name is (ptr, len): not NUL-terminated */
    const fm_function *f = fm_version_find(v, "add/rest", 3);
    assert_non_null(f);
    assert_string_equal(f->name, "add");
    f = fm_version_find(v, "addAll?x=1", 6);
    assert_non_null(f);
    assert_string_equal(f->name, "addAll");
    fm_version_release(v);
}

static void test_version_find_name_with_nul(void **state) {
    (void)state;
    /* (ptr, len) names may hold a NUL: the match covers all `len` bytes and
     * nothing is read past the stored name */
    fm_version *v = ready_version("d", "v"); /* exports "main" */
    assert_null(fm_version_find(v, "main\0rest-of-it", 15));
    assert_null(fm_version_find(v, "main\0", 5));
    assert_null(fm_version_find(v, "ma\0n", 4));
    assert_non_null(fm_version_find(v, "main\0rest", 4)); /* the NUL is past len */
    fm_version_release(v);
}

static void test_version_json(void **state) {
    (void)state;
    fm_version *v = new_version("hello", "9f86d0", NULL);
    const char *specs[] = {"merge@index.js:a|b"};
    fm_err err = FM_ERR_INIT;
    assert_int_equal(set_exports(v, specs, 1, &err), FM_OK);
    json_t *j = fm_version_json(v);
    assert_int_equal(json_object_size(j), 5);
    assert_string_equal(json_string_value(json_object_get(j, "name")), "hello");
    assert_string_equal(json_string_value(json_object_get(j, "isolation")), "thread");
    assert_string_equal(json_string_value(json_object_get(j, "version")), "9f86d0");
    assert_string_equal(json_string_value(json_object_get(j, "created_at")),
                        "2023-11-14T22:13:20Z");
    json_t *fns = json_object_get(j, "functions");
    assert_true(json_equal(fns, v->functions_json));
    json_t *f0 = json_array_get(fns, 0);
    assert_string_equal(json_string_value(json_object_get(f0, "name")), "merge");
    assert_string_equal(json_string_value(json_object_get(f0, "runtime")), "js");
    json_decref(j);
    fm_version_release(v);
}

static void test_version_refcount(void **state) {
    (void)state;
    fm_version *v = ready_version("r", "id");
    assert_int_equal(refs(v), 1);
    fm_version_ref(v);
    fm_version_ref(v);
    assert_int_equal(refs(v), 3);
    fm_version_release(v);
    fm_version_release(v);
    assert_int_equal(refs(v), 1);
    fm_version_release(v); /* last one frees (no executor) */
    fm_version_release(NULL);
}

/* ------------------------------------------------------------------ registry */

static void collect(fm_version *v, void *ud) {
    json_array_append_new(ud, json_string(v->deployment));
}

static json_t *names_of(fm_registry *r) {
    json_t *a = json_array();
    fm_registry_foreach(r, collect, a);
    return a;
}

static void assert_names(fm_registry *r, const char *want_json) {
    json_t *got = names_of(r);
    json_t *want = json_loads(want_json, 0, NULL);
    assert_non_null(want);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, 0);
        fail_msg("foreach gave %s, want %s", g, want_json);
    }
    json_decref(got);
    json_decref(want);
}

static void test_empty_registry(void **state) {
    (void)state;
    fm_registry *r = fm_registry_create();
    assert_non_null(r);
    assert_int_equal(fm_registry_count(r), 0);
    assert_null(fm_registry_acquire(r, "x", 1));
    assert_null(fm_registry_acquire(r, "", 0));
    assert_false(fm_registry_remove(r, "x"));
    assert_names(r, "[]");
    fm_registry_gc(r, false);
    fm_registry_gc(r, true);
    fm_registry_destroy(r);
    fm_registry_destroy(NULL);
}

static void test_activate_acquire_foreach(void **state) {
    (void)state;
    fm_registry *r = fm_registry_create();
    fm_version *g = ready_version("gamma", "g1"), *a = ready_version("alpha", "a1"),
               *b = ready_version("beta", "b1"), *a2 = ready_version("alpha-2", "x1");
    fm_registry_activate(r, g); /* the registry takes over our reference */
    fm_registry_activate(r, a);
    fm_registry_activate(r, b);
    fm_registry_activate(r, a2);
    assert_int_equal(fm_registry_count(r), 4);
    assert_names(r, "[\"alpha\", \"alpha-2\", \"beta\", \"gamma\"]");

    /* retired snapshots hold references until the grace period ends */
    assert_true(refs(b) > 1);
    fm_registry_gc(r, true);
    assert_int_equal(refs(b), 1);
    fm_version *got = fm_registry_acquire(r, "beta", 4);
    assert_ptr_equal(got, b);
    assert_int_equal(refs(b), 2);
    fm_version_release(got);
    assert_int_equal(refs(b), 1);

    got = fm_registry_acquire(r, "alpha", 5);
    assert_ptr_equal(got, a);
    fm_version_release(got);
    got = fm_registry_acquire(r, "alpha-2", 7);
    assert_ptr_equal(got, a2);
    fm_version_release(got);
    /* (ptr, len) names: the rest of the path is not part of the name */
    got = fm_registry_acquire(r, "gamma/main", 5);
    assert_ptr_equal(got, g);
    fm_version_release(got);

    assert_null(fm_registry_acquire(r, "alp", 3));      /* prefix */
    assert_null(fm_registry_acquire(r, "alpha-", 6));   /* prefix of alpha-2 */
    assert_null(fm_registry_acquire(r, "gammaX", 6));   /* longer */
    assert_null(fm_registry_acquire(r, "delta", 5));    /* unknown */
    assert_null(fm_registry_acquire(r, "Beta", 4));     /* case */
    assert_null(fm_registry_acquire(r, "", 0));

    fm_registry_destroy(r); /* releases every active version */
}

static void test_acquire_name_with_nul(void **state) {
    (void)state;
    fm_registry *r = fm_registry_create();
    fm_registry_activate(r, ready_version("a", "v"));
    fm_registry_activate(r, ready_version("beta", "b1"));
    /* "a\0xyz" is not "a", although strncmp would stop at the NUL */
    assert_null(fm_registry_acquire(r, "a\0xyz", 5));
    assert_null(fm_registry_acquire(r, "a\0", 2));
    assert_null(fm_registry_acquire(r, "beta\0", 5));
    assert_null(fm_registry_acquire(r, "be\0a", 4));
    /* the NUL past len does not matter */
    fm_version *got = fm_registry_acquire(r, "a\0xyz", 1);
    assert_non_null(got);
    assert_string_equal(got->deployment, "a");
    fm_version_release(got);
    fm_registry_destroy(r);
}

static void test_replace_active_version(void **state) {
    (void)state;
    fm_registry *r = fm_registry_create();
    fm_version *v1 = ready_version("svc", "v1");
    fm_registry_activate(r, v1);
    fm_version *held = fm_registry_acquire(r, "svc", 3); /* an in-flight call */
    assert_ptr_equal(held, v1);
    assert_int_equal(refs(v1), 2);

    fm_version *v2 = ready_version("svc", "v2");
    fm_registry_activate(r, v2);
    assert_int_equal(fm_registry_count(r), 1);
    assert_names(r, "[\"svc\"]");
    fm_version *now = fm_registry_acquire(r, "svc", 3);
    assert_ptr_equal(now, v2);
    assert_string_equal(now->id, "v2");
    fm_version_release(now);

    /* v1 is still referenced by us and by the retired snapshot (grace period) */
    assert_int_equal(refs(v1), 2);
    fm_registry_gc(r, false);
    assert_int_equal(refs(v1), 2);
    fm_registry_gc(r, true);
    assert_int_equal(refs(v1), 1); /* only the in-flight call now */
    assert_string_equal(held->id, "v1");
    assert_non_null(fm_version_find(held, "main", 4));
    fm_version_release(held); /* frees v1 */

    assert_int_equal(refs(v2), 1); /* the registry's */
    fm_registry_destroy(r);
}

static void test_reactivate_same_version(void **state) {
    (void)state;
    fm_registry *r = fm_registry_create();
    fm_version *v = ready_version("svc", "v1");
    fm_registry_activate(r, v);
    fm_version_ref(v); /* the caller hands the registry a second reference */
    fm_registry_activate(r, v);
    fm_registry_gc(r, true);
    assert_int_equal(fm_registry_count(r), 1);
    assert_int_equal(refs(v), 1);
    fm_registry_destroy(r);
}

static void test_remove(void **state) {
    (void)state;
    fm_registry *r = fm_registry_create();
    fm_registry_activate(r, ready_version("alpha", "a"));
    fm_registry_activate(r, ready_version("beta", "b"));
    fm_registry_activate(r, ready_version("gamma", "c"));

    fm_version *held = fm_registry_acquire(r, "beta", 4);
    assert_non_null(held);
    assert_false(fm_registry_remove(r, "bet"));   /* prefix */
    assert_false(fm_registry_remove(r, "betas")); /* longer */
    assert_false(fm_registry_remove(r, "delta"));
    assert_int_equal(fm_registry_count(r), 3);

    assert_true(fm_registry_remove(r, "beta"));
    assert_int_equal(fm_registry_count(r), 2);
    assert_null(fm_registry_acquire(r, "beta", 4));
    assert_names(r, "[\"alpha\", \"gamma\"]");
    assert_false(fm_registry_remove(r, "beta"));

    /* the in-flight reference outlives the removal */
    fm_registry_gc(r, true);
    assert_int_equal(refs(held), 1);
    assert_string_equal(held->deployment, "beta");
    fm_version_release(held);

    assert_true(fm_registry_remove(r, "alpha"));
    assert_true(fm_registry_remove(r, "gamma"));
    assert_int_equal(fm_registry_count(r), 0);
    assert_names(r, "[]");
    /* and the name can be deployed again */
    fm_registry_activate(r, ready_version("beta", "b2"));
    fm_version *again = fm_registry_acquire(r, "beta", 4);
    assert_string_equal(again->id, "b2");
    fm_version_release(again);
    fm_registry_destroy(r);
}

static void test_many_deployments_sorted(void **state) {
    (void)state;
    fm_registry *r = fm_registry_create();
    /* inserted in a scrambled order */
    char name[16];
    for (unsigned i = 0; i < 200; i++) {
        unsigned k = (i * 73) % 200;
        snprintf(name, sizeof(name), "d%03u", k);
        fm_registry_activate(r, ready_version(name, "v"));
    }
    assert_int_equal(fm_registry_count(r), 200);
    json_t *names = names_of(r);
    assert_int_equal(json_array_size(names), 200);
    for (unsigned i = 0; i < 200; i++) {
        snprintf(name, sizeof(name), "d%03u", i);
        assert_string_equal(json_string_value(json_array_get(names, i)), name);
        fm_version *v = fm_registry_acquire(r, name, strlen(name));
        assert_non_null(v);
        assert_string_equal(v->deployment, name);
        fm_version_release(v);
    }
    json_decref(names);
    for (unsigned i = 0; i < 200; i += 2) {
        snprintf(name, sizeof(name), "d%03u", i);
        assert_true(fm_registry_remove(r, name));
    }
    assert_int_equal(fm_registry_count(r), 100);
    assert_null(fm_registry_acquire(r, "d000", 4));
    fm_version *v = fm_registry_acquire(r, "d199", 4);
    assert_non_null(v);
    fm_version_release(v);
    fm_registry_destroy(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_exports_builds_sorted_functions),
        cmocka_unit_test(test_manifest_timeouts_applied),
        cmocka_unit_test(test_duplicate_export_refused),
        cmocka_unit_test(test_no_export_refused),
        cmocka_unit_test(test_manifest_naming_missing_function_refused),
        cmocka_unit_test(test_version_find_exact),
        cmocka_unit_test(test_version_find_name_with_nul),
        cmocka_unit_test(test_version_json),
        cmocka_unit_test(test_version_refcount),
        cmocka_unit_test(test_empty_registry),
        cmocka_unit_test(test_activate_acquire_foreach),
        cmocka_unit_test(test_acquire_name_with_nul),
        cmocka_unit_test(test_replace_active_version),
        cmocka_unit_test(test_reactivate_same_version),
        cmocka_unit_test(test_remove),
        cmocka_unit_test(test_many_deployments_sorted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
