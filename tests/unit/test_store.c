/* test_store.c - store/store.h, the SQLite store in a temporary directory:
 * put_version + load_active (units' runtime and bytes intact, NULs
 * included), list_versions (newest first, exactly one active), activate
 * (stored versions only), load_version by id / unique prefix / ambiguous
 * prefix / unknown, remove, and the same data after closing and reopening
 * the database file. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "fm_test.h"

#include "core/util.h"
#include "store/store.h"


/* Two ids sharing the prefix "aaaa", and a third one. */
#define V1 "aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111"
#define V2 "aaaa2222aaaa2222aaaa2222aaaa2222aaaa2222aaaa2222aaaa2222aaaa2222"
#define V3 "bbbb3333bbbb3333bbbb3333bbbb3333bbbb3333bbbb3333bbbb3333bbbb3333"

static const char unit0[] = {'a', '\0', 'b', '\0', '\xff', 'c'}; /* binary, with NULs */
static const char unit1[] = "second unit";

typedef struct {
    char dir[64];
    char path[128];
    fm_store *s;
} fixture;

static fm_store *open_store(const char *path) {
    fm_store *s = NULL;
    fm_err err = FM_ERR_INIT;
    if (fm_store_open_sqlite(path, &s, &err) != FM_OK) fail_msg("open: %s", err.msg);
    assert_non_null(s);
    assert_non_null(s->ops);
    assert_string_equal(s->ops->name, "sqlite");
    return s;
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/fm_test_store_XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->path, sizeof(f->path), "%s/fnmesh.db", f->dir);
    f->s = open_store(f->path);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    if (f->s) f->s->ops->close(f->s);
    int r = fm_rmtree(f->dir);
    free(f);
    return r;
}

/* Stores a version with two units (functions_json lists `nfns` functions). */
static void put(fm_store *s, const char *dep, const char *ver, int64_t created_at, int nfns) {
    fm_store_unit units[2];
    memset(units, 0, sizeof(units));
    snprintf(units[0].runtime, sizeof(units[0].runtime), "js");
    units[0].data = (char *)unit0;
    units[0].len = sizeof(unit0);
    snprintf(units[1].runtime, sizeof(units[1].runtime), "wasm");
    units[1].data = (char *)unit1;
    units[1].len = strlen(unit1);
    json_t *fns = json_array();
    for (int i = 0; i < nfns; i++)
        json_array_append_new(fns, json_pack("{s:s, s:s, s:s, s:[]}", "name", "f", "file",
                                             "index.js", "runtime", "js", "params"));
    char *fns_text = json_dumps(fns, JSON_COMPACT);
    json_decref(fns);
    char manifest[64];
    snprintf(manifest, sizeof(manifest), "{\"timeout_ms\":%d}", 1000 + nfns);
    fm_store_version v = {
        .deployment = (char *)dep,
        .created_at = created_at,
        .manifest_json = manifest,
        .functions_json = fns_text,
        .units = units,
        .nunits = 2,
    };
    snprintf(v.version, sizeof(v.version), "%s", ver);
    static const char bundle[] = "\x1f\x8b not really a bundle";
    fm_err err = FM_ERR_INIT;
    fm_status st = s->ops->put_version(s, &v, bundle, sizeof(bundle), created_at + 5, &err);
    free(fns_text);
    if (st != FM_OK) fail_msg("put_version: %s", err.msg);
}

static void assert_units_intact(const fm_store_version *v) {
    assert_int_equal(v->nunits, 2);
    assert_string_equal(v->units[0].runtime, "js");
    assert_int_equal(v->units[0].len, sizeof(unit0));
    assert_memory_equal(v->units[0].data, unit0, sizeof(unit0));
    assert_string_equal(v->units[1].runtime, "wasm");
    assert_int_equal(v->units[1].len, strlen(unit1));
    assert_memory_equal(v->units[1].data, unit1, strlen(unit1));
}

/* load_active visitor: collects {deployment: version} and checks every
 * loaded version is complete; takes ownership of v. */
static void visit(fm_store_version *v, void *ud) {
    json_t *seen = ud;
    assert_units_intact(v);
    assert_non_null(v->manifest_json);
    assert_non_null(v->functions_json);
    json_t *entry = json_pack("{s:s, s:I, s:s}", "version", v->version, "created_at",
                              (json_int_t)v->created_at, "manifest", v->manifest_json);
    json_array_append_new(seen, json_pack("{s:s, s:o}", "name", v->deployment, "v", entry));
    fm_store_version_dispose(v);
}

static json_t *active(fm_store *s) {
    json_t *seen = json_array();
    fm_err err = FM_ERR_INIT;
    if (s->ops->load_active(s, visit, seen, &err) != FM_OK) fail_msg("load_active: %s", err.msg);
    return seen;
}

static const char *active_version_of(json_t *seen, const char *dep) {
    size_t i;
    json_t *e;
    json_array_foreach(seen, i, e) {
        if (strcmp(json_string_value(json_object_get(e, "name")), dep) == 0)
            return json_string_value(json_object_get(json_object_get(e, "v"), "version"));
    }
    return NULL;
}

static json_t *list(fm_store *s, const char *dep) {
    json_t *out = NULL;
    fm_err err = FM_ERR_INIT;
    if (s->ops->list_versions(s, dep, &out, &err) != FM_OK) fail_msg("list: %s", err.msg);
    assert_true(json_is_array(out));
    return out;
}

/* ------------------------------------------------------------------ tests */

static void test_empty_store(void **state) {
    fixture *f = *state;
    json_t *seen = active(f->s);
    assert_int_equal(json_array_size(seen), 0);
    json_decref(seen);
    json_t *out = NULL;
    fm_err err = FM_ERR_INIT;
    assert_int_equal(f->s->ops->list_versions(f->s, "hello", &out, &err), FM_NOT_FOUND);
    assert_null(out);
    fm_store_version v;
    assert_int_equal(f->s->ops->load_version(f->s, "hello", "aaaa", &v, &err), FM_NOT_FOUND);
    assert_int_equal(f->s->ops->remove(f->s, "hello", &err), FM_NOT_FOUND);
    assert_int_equal(err.status, FM_NOT_FOUND);
}

static void test_put_then_load_active(void **state) {
    fixture *f = *state;
    put(f->s, "hello", V1, 1000, 2);
    json_t *seen = active(f->s);
    assert_int_equal(json_array_size(seen), 1);
    json_t *e = json_array_get(seen, 0);
    assert_string_equal(json_string_value(json_object_get(e, "name")), "hello");
    json_t *v = json_object_get(e, "v");
    assert_string_equal(json_string_value(json_object_get(v, "version")), V1);
    assert_int_equal(json_integer_value(json_object_get(v, "created_at")), 1000);
    assert_string_equal(json_string_value(json_object_get(v, "manifest")), "{\"timeout_ms\":1002}");
    json_decref(seen);

    /* the newest put is the active one */
    put(f->s, "hello", V2, 2000, 1);
    seen = active(f->s);
    assert_int_equal(json_array_size(seen), 1);
    assert_string_equal(active_version_of(seen, "hello"), V2);
    json_decref(seen);
}

static void test_load_active_visits_every_deployment_in_name_order(void **state) {
    fixture *f = *state;
    put(f->s, "zeta", V1, 1000, 1);
    put(f->s, "alpha", V3, 1100, 1);
    put(f->s, "mid", V2, 1200, 1);
    put(f->s, "alpha", V1, 1300, 1);
    json_t *seen = active(f->s);
    assert_int_equal(json_array_size(seen), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(seen, 0), "name")),
                        "alpha");
    assert_string_equal(json_string_value(json_object_get(json_array_get(seen, 1), "name")),
                        "mid");
    assert_string_equal(json_string_value(json_object_get(json_array_get(seen, 2), "name")),
                        "zeta");
    assert_string_equal(active_version_of(seen, "alpha"), V1);
    json_decref(seen);
}

static void test_list_versions_newest_first_one_active(void **state) {
    fixture *f = *state;
    put(f->s, "hello", V1, 1000, 1);
    put(f->s, "hello", V3, 3000, 3);
    put(f->s, "hello", V2, 2000, 2); /* put last, but older than V3 */
    put(f->s, "other", V1, 5000, 1);
    json_t *l = list(f->s, "hello");
    assert_int_equal(json_array_size(l), 3);
    static const char *want[] = {V3, V2, V1};
    static const int64_t want_at[] = {3000, 2000, 1000};
    static const int want_fns[] = {3, 2, 1};
    int nactive = 0;
    for (size_t i = 0; i < 3; i++) {
        json_t *e = json_array_get(l, i);
        assert_string_equal(json_string_value(json_object_get(e, "version")), want[i]);
        assert_int_equal(json_integer_value(json_object_get(e, "created_at")), want_at[i]);
        assert_int_equal(json_integer_value(json_object_get(e, "functions")), want_fns[i]);
        json_t *a = json_object_get(e, "active");
        assert_true(json_is_boolean(a));
        if (json_is_true(a)) {
            nactive++;
            /* the last put is active */
            assert_string_equal(json_string_value(json_object_get(e, "version")), V2);
        }
    }
    assert_int_equal(nactive, 1);
    json_decref(l);
}

static void test_activate_switches(void **state) {
    fixture *f = *state;
    put(f->s, "hello", V1, 1000, 1);
    put(f->s, "hello", V2, 2000, 1);
    fm_err err = FM_ERR_INIT;
    assert_int_equal(f->s->ops->activate(f->s, "hello", V1, 3000, &err), FM_OK);
    json_t *seen = active(f->s);
    assert_string_equal(active_version_of(seen, "hello"), V1);
    json_decref(seen);
    json_t *l = list(f->s, "hello");
    /* newest first still; the older one is active now */
    assert_string_equal(json_string_value(json_object_get(json_array_get(l, 0), "version")), V2);
    assert_true(json_is_false(json_object_get(json_array_get(l, 0), "active")));
    assert_true(json_is_true(json_object_get(json_array_get(l, 1), "active")));
    json_decref(l);

    assert_int_equal(f->s->ops->activate(f->s, "hello", V2, 4000, &err), FM_OK);
    seen = active(f->s);
    assert_string_equal(active_version_of(seen, "hello"), V2);
    json_decref(seen);
}

static void test_activate_unknown_version_not_found(void **state) {
    fixture *f = *state;
    put(f->s, "hello", V1, 1000, 1);
    put(f->s, "hello", V2, 2000, 1);
    put(f->s, "other", V3, 3000, 1);
    fm_err err = FM_ERR_INIT;
    assert_int_equal(f->s->ops->activate(f->s, "hello", V1, 2500, &err), FM_OK);

    /* a version never stored, one stored for another deployment, an
     * unknown deployment: FM_NOT_FOUND, and the active versions stay */
    static const struct {
        const char *dep, *ver;
    } bad[] = {
        {"hello", "cccc4444cccc4444cccc4444cccc4444cccc4444cccc4444cccc4444cccc4444"},
        {"hello", V3},
        {"nope", V1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fm_err_clear(&err);
        fm_status st = f->s->ops->activate(f->s, bad[i].dep, bad[i].ver, 4000, &err);
        if (st != FM_NOT_FOUND) fail_msg("activate %s %s: status %d", bad[i].dep, bad[i].ver, st);
        assert_int_equal(err.status, FM_NOT_FOUND);
    }

    json_t *seen = active(f->s);
    assert_int_equal(json_array_size(seen), 2); /* no "nope" deployment appeared */
    assert_string_equal(active_version_of(seen, "hello"), V1);
    assert_string_equal(active_version_of(seen, "other"), V3);
    json_decref(seen);
    json_t *l = list(f->s, "hello");
    assert_int_equal(json_array_size(l), 2);
    assert_true(json_is_false(json_object_get(json_array_get(l, 0), "active"))); /* V2 */
    assert_true(json_is_true(json_object_get(json_array_get(l, 1), "active")));  /* V1 */
    json_decref(l);
    json_t *out = NULL;
    assert_int_equal(f->s->ops->list_versions(f->s, "nope", &out, &err), FM_NOT_FOUND);
    assert_null(out);
}

static void test_load_version_by_prefix(void **state) {
    fixture *f = *state;
    put(f->s, "hello", V1, 1000, 1);
    put(f->s, "hello", V2, 2000, 2);
    put(f->s, "other", V3, 3000, 1);
    fm_err err = FM_ERR_INIT;
    fm_store_version v;

    /* full id */
    assert_int_equal(f->s->ops->load_version(f->s, "hello", V1, &v, &err), FM_OK);
    assert_string_equal(v.deployment, "hello");
    assert_string_equal(v.version, V1);
    assert_int_equal(v.created_at, 1000);
    assert_string_equal(v.manifest_json, "{\"timeout_ms\":1001}");
    json_t *fns = json_loads(v.functions_json, 0, NULL);
    assert_int_equal(json_array_size(fns), 1);
    json_decref(fns);
    assert_units_intact(&v);
    fm_store_version_dispose(&v);

    /* unique prefix */
    assert_int_equal(f->s->ops->load_version(f->s, "hello", "aaaa2", &v, &err), FM_OK);
    assert_string_equal(v.version, V2);
    assert_units_intact(&v);
    fm_store_version_dispose(&v);
    assert_int_equal(f->s->ops->load_version(f->s, "hello", "aaaa1111aaaa", &v, &err), FM_OK);
    assert_string_equal(v.version, V1);
    fm_store_version_dispose(&v);

    /* ambiguous prefix */
    assert_int_equal(f->s->ops->load_version(f->s, "hello", "aaaa", &v, &err), FM_BAD_REQUEST);
    assert_int_equal(err.status, FM_BAD_REQUEST);
    assert_contains(err.msg, "ambiguous");
    assert_null(v.deployment); /* nothing left to free */
    assert_int_equal(v.nunits, 0);

    /* unknown version, version of another deployment, unknown deployment */
    assert_int_equal(f->s->ops->load_version(f->s, "hello", "cccc", &v, &err), FM_NOT_FOUND);
    assert_int_equal(f->s->ops->load_version(f->s, "hello", "bbbb", &v, &err), FM_NOT_FOUND);
    assert_int_equal(f->s->ops->load_version(f->s, "nope", "aaaa1", &v, &err), FM_NOT_FOUND);
    /* longer than the id, or wildcard characters: no match */
    assert_int_equal(f->s->ops->load_version(f->s, "hello", V1 "0", &v, &err), FM_NOT_FOUND);
    assert_int_equal(f->s->ops->load_version(f->s, "hello", "aaaa%", &v, &err), FM_NOT_FOUND);
    assert_int_equal(f->s->ops->load_version(f->s, "hello", "aaaa_", &v, &err), FM_NOT_FOUND);
    assert_int_equal(f->s->ops->load_version(f->s, "hello", "AAAA1", &v, &err), FM_NOT_FOUND);
    assert_int_equal(err.status, FM_NOT_FOUND);

    /* a deployment by itself is not ambiguous */
    assert_int_equal(f->s->ops->load_version(f->s, "other", "bbbb", &v, &err), FM_OK);
    assert_string_equal(v.deployment, "other");
    fm_store_version_dispose(&v);
}

static void test_remove(void **state) {
    fixture *f = *state;
    put(f->s, "hello", V1, 1000, 1);
    put(f->s, "hello", V2, 2000, 1);
    put(f->s, "keep", V1, 1500, 1); /* same content under another name */
    fm_err err = FM_ERR_INIT;
    assert_int_equal(f->s->ops->remove(f->s, "hello", &err), FM_OK);

    json_t *out = NULL;
    assert_int_equal(f->s->ops->list_versions(f->s, "hello", &out, &err), FM_NOT_FOUND);
    assert_null(out);
    fm_store_version v;
    assert_int_equal(f->s->ops->load_version(f->s, "hello", V1, &v, &err), FM_NOT_FOUND);
    assert_int_equal(f->s->ops->remove(f->s, "hello", &err), FM_NOT_FOUND);
    assert_int_equal(f->s->ops->remove(f->s, "never-existed", &err), FM_NOT_FOUND);
    assert_int_equal(f->s->ops->remove(f->s, "kee", &err), FM_NOT_FOUND); /* not a prefix match */

    /* the other deployment is untouched */
    json_t *seen = active(f->s);
    assert_int_equal(json_array_size(seen), 1);
    assert_string_equal(active_version_of(seen, "keep"), V1);
    json_decref(seen);
    assert_int_equal(f->s->ops->load_version(f->s, "keep", V1, &v, &err), FM_OK);
    assert_units_intact(&v);
    fm_store_version_dispose(&v);

    /* the name can be used again */
    put(f->s, "hello", V3, 9000, 1);
    json_t *l = list(f->s, "hello");
    assert_int_equal(json_array_size(l), 1);
    json_decref(l);
}

static void test_put_same_version_again(void **state) {
    fixture *f = *state;
    put(f->s, "hello", V1, 1000, 1);
    put(f->s, "hello", V2, 2000, 1);
    put(f->s, "hello", V1, 3000, 1); /* identical content deployed again */
    json_t *l = list(f->s, "hello");
    assert_int_equal(json_array_size(l), 2);
    json_decref(l);
    json_t *seen = active(f->s);
    assert_string_equal(active_version_of(seen, "hello"), V1);
    json_decref(seen);
    fm_store_version v;
    fm_err err = FM_ERR_INIT;
    assert_int_equal(f->s->ops->load_version(f->s, "hello", V1, &v, &err), FM_OK);
    assert_units_intact(&v); /* units not duplicated or lost */
    fm_store_version_dispose(&v);
}

static void test_reopen_keeps_data(void **state) {
    fixture *f = *state;
    put(f->s, "hello", V1, 1000, 1);
    put(f->s, "hello", V2, 2000, 2);
    put(f->s, "o'neil \"quoted\"", V3, 1500, 1);
    fm_err err = FM_ERR_INIT;
    assert_int_equal(f->s->ops->activate(f->s, "hello", V1, 2500, &err), FM_OK);
    json_t *before = active(f->s);
    json_t *list_before = list(f->s, "hello");
    f->s->ops->close(f->s);
    f->s = NULL;

    struct stat sb;
    assert_int_equal(stat(f->path, &sb), 0);
    f->s = open_store(f->path);
    json_t *after = active(f->s);
    json_t *list_after = list(f->s, "hello");
    assert_int_equal(json_array_size(after), 2);
    assert_true(json_equal(before, after));
    assert_true(json_equal(list_before, list_after));
    assert_string_equal(active_version_of(after, "hello"), V1);
    assert_string_equal(active_version_of(after, "o'neil \"quoted\""), V3);
    json_decref(before);
    json_decref(after);
    json_decref(list_before);
    json_decref(list_after);

    fm_store_version v;
    assert_int_equal(f->s->ops->load_version(f->s, "hello", "aaaa2", &v, &err), FM_OK);
    assert_units_intact(&v);
    fm_store_version_dispose(&v);
}

static void test_open_failure(void **state) {
    fixture *f = *state;
    char path[256];
    snprintf(path, sizeof(path), "%s/missing/dir/fnmesh.db", f->dir);
    fm_store *s = (fm_store *)(uintptr_t)1;
    fm_err err = FM_ERR_INIT;
    assert_int_equal(fm_store_open_sqlite(path, &s, &err), FM_INTERNAL);
    assert_int_equal(err.status, FM_INTERNAL);
    assert_contains(err.msg, path);
    /* a directory is not a database */
    assert_int_equal(fm_store_open_sqlite(f->dir, &s, &err), FM_INTERNAL);
}

/* Usage rows: added twice into the same minute they sum (peak: maximum),
 * other minutes stay apart, queries group and filter, and all of it is
 * still there after reopening. */
static json_t *usage(fm_store *s, int64_t from, int64_t to, const char *dep, const char *group) {
    fm_store_usage_query q = {from, to, dep, group};
    json_t *rows = NULL;
    fm_err err = FM_ERR_INIT;
    assert_int_equal(s->ops->usage_query(s, &q, &rows, &err), FM_OK);
    return rows;
}

static json_int_t field(json_t *rows, size_t i, const char *key) {
    json_t *v = json_object_get(json_array_get(rows, i), key);
    assert_non_null(v);
    return json_integer_value(v);
}

static void test_usage_sums_per_minute(void **state) {
    fixture *f = *state;
    fm_err err = FM_ERR_INIT;
    fm_store_usage a[] = {
        {100, "hello", "merge", 3, 1, 300, 200, 30, 12, 1000},
        {100, "hello", "greet", 1, 0, 50, 40, 5, 9, 0},
        {101, "other", "f", 7, 0, 700, 600, 70, 14, 5},
    };
    assert_int_equal(f->s->ops->usage_add(f->s, a, 3, &err), FM_OK);
    fm_store_usage b[] = {{100, "hello", "merge", 2, 0, 200, 100, 20, 8, 400}};
    assert_int_equal(f->s->ops->usage_add(f->s, b, 1, &err), FM_OK);

    json_t *rows = usage(f->s, 0, 1000, NULL, "function");
    assert_int_equal(json_array_size(rows), 3); /* ordered by deployment, function */
    assert_string_equal(json_string_value(json_object_get(json_array_get(rows, 1), "function")),
                        "merge");
    assert_int_equal(field(rows, 1, "invocations"), 5);
    assert_int_equal(field(rows, 1, "errors"), 1);
    assert_int_equal(field(rows, 1, "wall_us"), 500);
    assert_int_equal(field(rows, 1, "cpu_us"), 300);
    assert_int_equal(field(rows, 1, "req_bytes"), 50);
    assert_int_equal(field(rows, 1, "resp_bytes"), 20);
    assert_int_equal(field(rows, 1, "peak_memory_bytes"), 1000);
    json_decref(rows);

    rows = usage(f->s, 0, 1000, NULL, "deployment");
    assert_int_equal(json_array_size(rows), 2);
    assert_int_equal(field(rows, 0, "invocations"), 6); /* hello: 5 + 1 */
    assert_int_equal(field(rows, 1, "invocations"), 7);
    json_decref(rows);

    rows = usage(f->s, 101, 102, NULL, "minute"); /* [from, to) */
    assert_int_equal(json_array_size(rows), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(rows, 0), "minute")),
                        "1970-01-01T01:41:00Z");
    assert_int_equal(field(rows, 0, "invocations"), 7);
    json_decref(rows);

    rows = usage(f->s, 0, 1000, "other", "function");
    assert_int_equal(json_array_size(rows), 1);
    json_decref(rows);
    rows = usage(f->s, 102, 1000, NULL, "function");
    assert_int_equal(json_array_size(rows), 0);
    json_decref(rows);

    f->s->ops->close(f->s);
    f->s = open_store(f->path);
    rows = usage(f->s, 0, 1000, "hello", "deployment");
    assert_int_equal(field(rows, 0, "invocations"), 6);
    json_decref(rows);
}

static void test_load_bundle(void **state) {
    fixture *f = *state;
    fm_err err = FM_ERR_INIT;
    void *data = NULL;
    size_t len = 0;
    assert_int_equal(f->s->ops->load_bundle(f->s, V1, &data, &len, &err), FM_NOT_FOUND);
    fm_err_clear(&err);
    put(f->s, "hello", V1, 1000, 1);
    assert_int_equal(f->s->ops->load_bundle(f->s, V1, &data, &len, &err), FM_OK);
    static const char bundle[] = "\x1f\x8b not really a bundle";
    assert_int_equal(len, sizeof(bundle));
    assert_memory_equal(data, bundle, len);
    free(data);
    /* gone with the last version that refers to it */
    assert_int_equal(f->s->ops->remove(f->s, "hello", &err), FM_OK);
    assert_int_equal(f->s->ops->load_bundle(f->s, V1, &data, &len, &err), FM_NOT_FOUND);
    fm_err_clear(&err);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        T(test_empty_store),
        T(test_put_then_load_active),
        T(test_load_active_visits_every_deployment_in_name_order),
        T(test_list_versions_newest_first_one_active),
        T(test_activate_switches),
        T(test_activate_unknown_version_not_found),
        T(test_load_version_by_prefix),
        T(test_remove),
        T(test_put_same_version_again),
        T(test_reopen_keeps_data),
        T(test_open_failure),
        T(test_usage_sums_per_minute),
        T(test_load_bundle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
