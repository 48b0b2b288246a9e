/* test_bind.c - argument binding of the data plane (gateway/bind.c, rules in
 * docs/api.md): fm_bind_body (array = positional, object of parameter names =
 * named, anything else = single argument), fm_bind_query (values parsed as
 * JSON when they are JSON, else strings; unknown keys refused; destructured
 * single parameter), fm_bind_named and fm_url_decode. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fm_test.h"

#include "core/util.h"
#include "gateway/http.h"


/* A function as the registry would build it: param_names[i] is NULL for
 * parameters that are not plain identifiers ("{x, y}", "...rest"). */
static fm_function make_fn(const char *name, char **param_names, size_t nparams) {
    fm_function fn;
    memset(&fn, 0, sizeof(fn));
    fn.name = (char *)name;
    fn.param_names = param_names;
    fn.nparams = nparams;
    return fn;
}

static char *ab_names[] = {"a", "b"};
static char *abc_names[] = {"a", "b", "c"};
static char *destructured_names[] = {NULL};            /* f({x, y}) */
static char *mixed_names[] = {"first", NULL, "last"}; /* f(first, {x}, last) */
static char *rest_names[] = {"a", NULL};              /* f(a, ...rest) */

static void free_args(json_t **argv, size_t argc) {
    for (size_t i = 0; i < argc; i++) json_decref(argv[i]);
    free(argv);
}

static json_t *parse(const char *text) {
    json_error_t je;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &je);
    if (!v) fail_msg("bad test JSON %s: %s", text, je.text);
    return v;
}

/* argv[i] equals the JSON text `want`, or is NULL (undefined) when want is NULL. */
static void assert_arg(json_t **argv, size_t i, const char *want) {
    if (!want) {
        if (argv[i]) fail_msg("argv[%zu] should be undefined", i);
        return;
    }
    if (!argv[i]) fail_msg("argv[%zu] is undefined, want %s", i, want);
    json_t *w = parse(want);
    if (!json_equal(argv[i], w)) {
        char *got = json_dumps(argv[i], JSON_ENCODE_ANY);
        fail_msg("argv[%zu] = %s, want %s", i, got, want);
    }
    json_decref(w);
}

/* ------------------------------------------------------------------ body */

static void test_body_array_is_positional(void **state) {
    (void)state;
    fm_function fn = make_fn("merge", ab_names, 2);
    json_t **argv = NULL;
    size_t argc = 99;
    fm_err err = FM_ERR_INIT;
    assert_int_equal(fm_bind_body(&fn, parse("[\"x\", 2, null, {\"k\": [1]}]"), &argv, &argc,
                                  &err),
                     FM_OK);
    assert_int_equal(argc, 4); /* more values than parameters: all passed on */
    assert_arg(argv, 0, "\"x\"");
    assert_arg(argv, 1, "2");
    assert_non_null(argv[2]);  /* JSON null is a value, not undefined */
    assert_true(json_is_null(argv[2]));
    assert_arg(argv, 3, "{\"k\": [1]}");
    free_args(argv, argc);

    /* an array is positional even when it looks like named arguments */
    assert_int_equal(fm_bind_body(&fn, parse("[{\"a\": 1}]"), &argv, &argc, &err), FM_OK);
    assert_int_equal(argc, 1);
    assert_arg(argv, 0, "{\"a\": 1}");
    free_args(argv, argc);

    assert_int_equal(fm_bind_body(&fn, parse("[]"), &argv, &argc, &err), FM_OK);
    assert_int_equal(argc, 0);
    assert_non_null(argv);
    free_args(argv, argc);
}

static void test_body_object_of_params_is_named(void **state) {
    (void)state;
    fm_function fn = make_fn("merge", ab_names, 2);
    json_t **argv;
    size_t argc;
    fm_err err = FM_ERR_INIT;
    /* order-independent */
    assert_int_equal(fm_bind_body(&fn, parse("{\"b\": \"y\", \"a\": \"x\"}"), &argv, &argc, &err),
                     FM_OK);
    assert_int_equal(argc, 2);
    assert_arg(argv, 0, "\"x\"");
    assert_arg(argv, 1, "\"y\"");
    free_args(argv, argc);

    fm_function fn3 = make_fn("three", abc_names, 3);
    /* missing trailing ones: argc trimmed to the last given parameter */
    assert_int_equal(fm_bind_body(&fn3, parse("{\"a\": 1}"), &argv, &argc, &err), FM_OK);
    assert_int_equal(argc, 1);
    assert_arg(argv, 0, "1");
    free_args(argv, argc);

    /* missing leading/middle ones are undefined (NULL) */
    assert_int_equal(fm_bind_body(&fn3, parse("{\"c\": [3]}"), &argv, &argc, &err), FM_OK);
    assert_int_equal(argc, 3);
    assert_arg(argv, 0, NULL);
    assert_arg(argv, 1, NULL);
    assert_arg(argv, 2, "[3]");
    free_args(argv, argc);

    assert_int_equal(fm_bind_body(&fn3, parse("{\"c\": 3, \"a\": null}"), &argv, &argc, &err),
                     FM_OK);
    assert_int_equal(argc, 3);
    assert_non_null(argv[0]);
    assert_true(json_is_null(argv[0])); /* explicit null stays null */
    assert_arg(argv, 1, NULL);
    assert_arg(argv, 2, "3");
    free_args(argv, argc);
}

static void test_body_other_values_are_single_argument(void **state) {
    (void)state;
    fm_function fn = make_fn("merge", ab_names, 2);
    static const char *single[] = {
        "{}",                           /* empty object */
        "{\"a\": 1, \"zzz\": 2}",       /* one key is not a parameter */
        "{\"A\": 1}",                   /* case matters */
        "42", "-1.5", "\"a\"", "true", "false", "null",
    };
    for (size_t i = 0; i < sizeof(single) / sizeof(single[0]); i++) {
        json_t **argv = NULL;
        size_t argc = 0;
        fm_err err = FM_ERR_INIT;
        json_t *body = parse(single[i]);
        json_incref(body); /* keep one reference to check identity */
        assert_int_equal(fm_bind_body(&fn, body, &argv, &argc, &err), FM_OK);
        if (argc != 1) fail_msg("%s: argc %zu", single[i], argc);
        assert_arg(argv, 0, single[i]);
        /* the body itself is the argument (moved, not copied) */
        assert_ptr_equal(argv[0], body);
        free_args(argv, argc);
        json_decref(body);
    }
}

static void test_body_object_with_pattern_params(void **state) {
    (void)state;
    json_t **argv;
    size_t argc;
    fm_err err = FM_ERR_INIT;
    /* f({x, y}): keys x/y are not parameter names, so the object is the argument */
    fm_function fd = make_fn("d", destructured_names, 1);
    assert_int_equal(fm_bind_body(&fd, parse("{\"x\": 1, \"y\": 2}"), &argv, &argc, &err), FM_OK);
    assert_int_equal(argc, 1);
    assert_arg(argv, 0, "{\"x\": 1, \"y\": 2}");
    free_args(argv, argc);

    /* f(first, {x}, last): named binding skips the pattern slot */
    fm_function fm = make_fn("m", mixed_names, 3);
    assert_int_equal(fm_bind_body(&fm, parse("{\"last\": \"L\", \"first\": \"F\"}"), &argv, &argc,
                                  &err),
                     FM_OK);
    assert_int_equal(argc, 3);
    assert_arg(argv, 0, "\"F\"");
    assert_arg(argv, 1, NULL);
    assert_arg(argv, 2, "\"L\"");
    free_args(argv, argc);

    /* f(a, ...rest) with {"rest": ...}: "rest" is not a name, single argument */
    fm_function fr = make_fn("r", rest_names, 2);
    assert_int_equal(fm_bind_body(&fr, parse("{\"rest\": [1]}"), &argv, &argc, &err), FM_OK);
    assert_int_equal(argc, 1);
    assert_arg(argv, 0, "{\"rest\": [1]}");
    free_args(argv, argc);

    /* no parameters at all: any object is the single argument */
    fm_function f0 = make_fn("zero", NULL, 0);
    assert_int_equal(fm_bind_body(&f0, parse("{\"a\": 1}"), &argv, &argc, &err), FM_OK);
    assert_int_equal(argc, 1);
    free_args(argv, argc);
}

static void test_body_named_values_shared_not_copied(void **state) {
    (void)state;
    fm_function fn = make_fn("merge", ab_names, 2);
    json_t *body = parse("{\"a\": {\"deep\": true}, \"b\": [1, 2]}");
    json_t *a = json_object_get(body, "a"), *b = json_object_get(body, "b");
    json_incref(a);
    json_incref(b);
    json_t **argv;
    size_t argc;
    fm_err err = FM_ERR_INIT;
    assert_int_equal(fm_bind_body(&fn, body, &argv, &argc, &err), FM_OK);
    assert_int_equal(argc, 2);
    assert_ptr_equal(argv[0], a);
    assert_ptr_equal(argv[1], b);
    /* body consumed: the values live on through argv (and our own refs) */
    free_args(argv, argc);
    assert_int_equal(a->refcount, 1);
    assert_int_equal(b->refcount, 1);
    json_decref(a);
    json_decref(b);
}

/* ------------------------------------------------------------------ query */

static fm_status query(const fm_function *fn, const char *q, json_t ***argv, size_t *argc,
                       fm_err *err) {
    return fm_bind_query(fn, q, strlen(q), argv, argc, err);
}

static void test_query_values(void **state) {
    (void)state;
    fm_function fn = make_fn("merge", ab_names, 2);
    json_t **argv;
    size_t argc;
    fm_err err = FM_ERR_INIT;

    assert_int_equal(query(&fn, "a=1&b=%22x%22", &argv, &argc, &err), FM_OK);
    assert_int_equal(argc, 2);
    assert_true(json_is_integer(argv[0]));
    assert_int_equal(json_integer_value(argv[0]), 1);
    assert_true(json_is_string(argv[1]));
    assert_string_equal(json_string_value(argv[1]), "x");
    free_args(argv, argc);

    static const struct {
        const char *q;
        const char *want_a; /* JSON text of a */
    } cases[] = {
        {"a=hello", "\"hello\""},
        {"a=", "\"\""},
        {"a", "\"\""},
        {"a=hello+world", "\"hello world\""},
        {"a=hello%20world", "\"hello world\""},
        {"a=%zz", "\"%zz\""},
        {"a=100%", "\"100%\""},
        {"a=%4", "\"%4\""},
        {"a=true", "true"},
        {"a=null", "null"},
        {"a=-2.5", "-2.5"},
        {"a=[1,2]", "[1, 2]"},
        {"a=%5B1%2C2%5D", "[1, 2]"},
        {"a=%7B%22k%22%3A1%7D", "{\"k\": 1}"},
        {"a=1+2", "\"1 2\""},          /* not JSON: taken as a string */
        {"a=%221", "\"\\\"1\""},       /* unterminated JSON string: taken as text */
        {"a=01", "\"01\""},
        {"a=tru", "\"tru\""},
        {"a=%C3%A9", "\"\\u00e9\""},
        {"a=%FF", "\"\\ufffd\""},      /* invalid UTF-8 becomes U+FFFD */
        {"a=%3D%26", "\"=&\""},        /* encoded separators are data */
        {"a=x=y", "\"x=y\""},          /* only the first '=' separates */
        {"%61=1", "1"},                /* encoded key */
        {"a=1&a=2", "2"},              /* last one wins */
        {"&&a=7&", "7"},               /* empty pairs ignored */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        argv = NULL;
        argc = 0;
        fm_status st = query(&fn, cases[i].q, &argv, &argc, &err);
        if (st != FM_OK) fail_msg("%s: %s", cases[i].q, err.msg);
        if (argc != 1) fail_msg("%s: argc %zu", cases[i].q, argc);
        assert_arg(argv, 0, cases[i].want_a);
        free_args(argv, argc);
    }

    /* a NUL decoded inside a value is kept */
    assert_int_equal(query(&fn, "a=x%00y", &argv, &argc, &err), FM_OK);
    assert_int_equal(argc, 1);
    assert_int_equal(json_string_length(argv[0]), 3);
    assert_memory_equal(json_string_value(argv[0]), "x\0y", 3);
    free_args(argv, argc);
}

static void test_query_named_binding(void **state) {
    (void)state;
    fm_function fn = make_fn("three", abc_names, 3);
    json_t **argv;
    size_t argc;
    fm_err err = FM_ERR_INIT;

    assert_int_equal(query(&fn, "c=3&a=1", &argv, &argc, &err), FM_OK);
    assert_int_equal(argc, 3);
    assert_arg(argv, 0, "1");
    assert_arg(argv, 1, NULL);
    assert_arg(argv, 2, "3");
    free_args(argv, argc);

    assert_int_equal(query(&fn, "b=2", &argv, &argc, &err), FM_OK);
    assert_int_equal(argc, 2);
    assert_arg(argv, 0, NULL);
    assert_arg(argv, 1, "2");
    free_args(argv, argc);

    /* empty query: no arguments */
    assert_int_equal(query(&fn, "", &argv, &argc, &err), FM_OK);
    assert_int_equal(argc, 0);
    free_args(argv, argc);

    /* only `len` bytes are read */
    assert_int_equal(fm_bind_query(&fn, "a=1&zzz=2", 3, &argv, &argc, &err), FM_OK);
    assert_int_equal(argc, 1);
    assert_arg(argv, 0, "1");
    free_args(argv, argc);
}

static void test_query_unknown_key_refused(void **state) {
    (void)state;
    fm_function fn = make_fn("merge", ab_names, 2);
    json_t **argv = NULL;
    size_t argc = 0;
    fm_err err = FM_ERR_INIT;
    assert_int_equal(query(&fn, "a=1&zzz=2", &argv, &argc, &err), FM_BAD_REQUEST);
    assert_int_equal(err.status, FM_BAD_REQUEST);
    assert_contains(err.msg, "\"zzz\"");
    assert_contains(err.msg, "merge");
    assert_contains(err.msg, "a, b");
    fm_err_clear(&err);

    /* pattern parameters are not listed as names */
    fm_function fm = make_fn("m", mixed_names, 3);
    assert_int_equal(query(&fm, "x=1", &argv, &argc, &err), FM_BAD_REQUEST);
    assert_contains(err.msg, "\"x\"");
    assert_contains(err.msg, "first, last");
    fm_err_clear(&err);

    fm_function f0 = make_fn("zero", NULL, 0);
    assert_int_equal(query(&f0, "a=1", &argv, &argc, &err), FM_BAD_REQUEST);
    assert_contains(err.msg, "none");
    fm_err_clear(&err);

    /* a key that is not valid UTF-8 can never be a parameter */
    assert_int_equal(query(&fn, "%FF=1", &argv, &argc, &err), FM_BAD_REQUEST);
    fm_err_clear(&err);
}

static void test_query_key_with_nul_refused(void **state) {
    (void)state;
    /* a key that decodes to a NUL can never be a parameter name; the value
     * already parsed for it (here a JSON object) must not leak */
    fm_function fn = make_fn("merge", ab_names, 2);
    json_t **argv = NULL;
    size_t argc = 0;
    fm_err err = FM_ERR_INIT;
    assert_int_equal(query(&fn, "a%00b=%7B%22big%22%3A1%7D", &argv, &argc, &err),
                     FM_BAD_REQUEST);
    assert_int_equal(err.status, FM_BAD_REQUEST);
    assert_string_equal(err.msg, "invalid query parameter name");
    fm_err_clear(&err);

    /* same for a string value, a NUL at the start of the key, and after a
     * valid pair */
    static const char *bad[] = {"a%00=x", "%00a=1", "a=1&b%00=%5B1%5D"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (query(&fn, bad[i], &argv, &argc, &err) != FM_BAD_REQUEST)
            fail_msg("%s: accepted", bad[i]);
        assert_string_equal(err.msg, "invalid query parameter name");
        fm_err_clear(&err);
    }
}

static void test_query_destructured_single_param(void **state) {
    (void)state;
    fm_function fd = make_fn("d", destructured_names, 1);
    json_t **argv;
    size_t argc;
    fm_err err = FM_ERR_INIT;
    assert_int_equal(query(&fd, "x=1&y=%22two%22&z=", &argv, &argc, &err), FM_OK);
    assert_int_equal(argc, 1);
    assert_arg(argv, 0, "{\"x\": 1, \"y\": \"two\", \"z\": \"\"}");
    free_args(argv, argc);

    /* no query: no argument (the function sees undefined) */
    assert_int_equal(query(&fd, "", &argv, &argc, &err), FM_OK);
    assert_int_equal(argc, 0);
    free_args(argv, argc);

    /* with more than one parameter the keys must be names again */
    fm_function fm = make_fn("m", mixed_names, 3);
    assert_int_equal(query(&fm, "first=1", &argv, &argc, &err), FM_OK);
    assert_int_equal(argc, 1);
    assert_arg(argv, 0, "1");
    free_args(argv, argc);
}

/* ------------------------------------------------------------------ named */

static void test_named(void **state) {
    (void)state;
    fm_function fn = make_fn("three", abc_names, 3);
    json_t **argv;
    size_t argc;
    fm_err err = FM_ERR_INIT;
    json_t *obj = parse("{\"b\": \"B\", \"a\": [\"A\"]}");
    assert_int_equal(fm_bind_named(&fn, obj, &argv, &argc, &err), FM_OK);
    assert_int_equal(argc, 2);
    assert_arg(argv, 0, "[\"A\"]");
    assert_arg(argv, 1, "\"B\"");
    free_args(argv, argc);
    /* obj is borrowed: still ours, with its values */
    assert_int_equal(obj->refcount, 1);
    assert_int_equal(json_object_size(obj), 2);
    json_decref(obj);

    obj = json_object();
    assert_int_equal(fm_bind_named(&fn, obj, &argv, &argc, &err), FM_OK);
    assert_int_equal(argc, 0);
    free_args(argv, argc);
    json_decref(obj);

    obj = parse("{\"a\": 1, \"nope\": 2}");
    assert_int_equal(fm_bind_named(&fn, obj, &argv, &argc, &err), FM_BAD_REQUEST);
    assert_contains(err.msg, "\"nope\"");
    assert_contains(err.msg, "a, b, c");
    assert_int_equal(obj->refcount, 1);
    fm_err_clear(&err);
    json_decref(obj);
}

/* ------------------------------------------------------------------ url decode */

static void test_url_decode(void **state) {
    (void)state;
    static const struct {
        const char *in;
        const char *out;
        size_t out_len;
    } cases[] = {
        {"", "", 0},
        {"plain", "plain", 5},
        {"a+b", "a b", 3},
        {"a%20b", "a b", 3},
        {"%41%42%43", "ABC", 3},
        {"%4a%4A", "JJ", 2},
        {"%zz", "%zz", 3},
        {"%", "%", 1},
        {"%4", "%4", 2},
        {"x%4", "x%4", 3},
        {"%%41", "%A", 2},
        {"%2B", "+", 1},
        {"%e2%82%ac", "\xe2\x82\xac", 3},
        {"a%00b", "a\0b", 3},
        {"%g1%1g", "%g1%1g", 6},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = 999;
        char *s = fm_url_decode(cases[i].in, strlen(cases[i].in), &n);
        assert_non_null(s);
        if (n != cases[i].out_len || memcmp(s, cases[i].out, n) != 0)
            fail_msg("decode(%s): got %zu bytes \"%s\"", cases[i].in, n, s);
        assert_int_equal(s[n], '\0');
        free(s);
    }
    /* length is honoured (no read past it), out_len may be NULL */
    char *s = fm_url_decode("ab%41", 3, NULL);
    assert_string_equal(s, "ab%");
    free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_body_array_is_positional),
        cmocka_unit_test(test_body_object_of_params_is_named),
        cmocka_unit_test(test_body_other_values_are_single_argument),
        cmocka_unit_test(test_body_object_with_pattern_params),
        cmocka_unit_test(test_body_named_values_shared_not_copied),
        cmocka_unit_test(test_query_values),
        cmocka_unit_test(test_query_named_binding),
        cmocka_unit_test(test_query_unknown_key_refused),
        cmocka_unit_test(test_query_key_with_nul_refused),
        cmocka_unit_test(test_query_destructured_single_param),
        cmocka_unit_test(test_named),
        cmocka_unit_test(test_url_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
