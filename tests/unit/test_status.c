/* test_status.c - the status table (wire code and HTTP status of every
 * fm_status, as documented in docs/api.md) and the fm_err helpers:
 * fm_err_set / fm_err_detail / fm_err_clear / fm_err_to_json. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/status.h"

static void test_every_status_code_and_http(void **state) {
    (void)state;
    static const struct {
        fm_status s;
        const char *code;
        int http;
    } want[] = {
        {FM_OK, "ok", 200},
        {FM_BAD_REQUEST, "bad_request", 400},
        {FM_INVALID_JSON, "invalid_json", 400},
        {FM_INVALID_BUNDLE, "invalid_bundle", 400},
        {FM_UNAUTHORIZED, "unauthorized", 401},
        {FM_NOT_FOUND, "not_found", 404},
        {FM_METHOD_NOT_ALLOWED, "method_not_allowed", 405},
        {FM_CONFLICT, "conflict", 409},
        {FM_TOO_LARGE, "payload_too_large", 413},
        {FM_OVERLOADED, "overloaded", 429},
        {FM_FUNCTION_ERROR, "function_error", 500},
        {FM_INTERNAL, "internal", 500},
        {FM_LOOP, "loop_detected", 508},
        {FM_DRAINING, "draining", 503},
        {FM_UNAVAILABLE, "unavailable", 503},
        {FM_TIMEOUT, "timeout", 504},
    };
    /* A status added without a row here must make this test fail. */
    assert_int_equal(sizeof(want) / sizeof(want[0]), FM_STATUS_COUNT);
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_string_equal(fm_status_code(want[i].s), want[i].code);
        assert_int_equal(fm_status_http(want[i].s), want[i].http);
    }
}

static void test_status_from_code_round_trips(void **state) {
    (void)state;
    for (int s = FM_OK + 1; s < FM_STATUS_COUNT; s++) {
        /* codes shared by two statuses map to the first; it has the same HTTP status */
        fm_status back = fm_status_from_code(fm_status_code((fm_status)s), FM_OK);
        assert_string_equal(fm_status_code(back), fm_status_code((fm_status)s));
        assert_int_equal(fm_status_http(back), fm_status_http((fm_status)s));
    }
    assert_int_equal(fm_status_from_code("timeout", FM_FUNCTION_ERROR), FM_TIMEOUT);
    assert_int_equal(fm_status_from_code("loop_detected", FM_FUNCTION_ERROR), FM_LOOP);
    assert_int_equal(fm_status_from_code(NULL, FM_FUNCTION_ERROR), FM_FUNCTION_ERROR);
    assert_int_equal(fm_status_from_code("", FM_FUNCTION_ERROR), FM_FUNCTION_ERROR);
    assert_int_equal(fm_status_from_code("ok", FM_FUNCTION_ERROR), FM_FUNCTION_ERROR);
    assert_int_equal(fm_status_from_code("no_such_code", FM_INTERNAL), FM_INTERNAL);
}

static void test_out_of_range_status_is_internal(void **state) {
    (void)state;
    assert_string_equal(fm_status_code(FM_STATUS_COUNT), "internal");
    assert_int_equal(fm_status_http(FM_STATUS_COUNT), 500);
    assert_string_equal(fm_status_code((fm_status)-1), "internal");
    assert_int_equal(fm_status_http((fm_status)-1), 500);
    assert_string_equal(fm_status_code((fm_status)1000), "internal");
    assert_int_equal(fm_status_http((fm_status)1000), 500);
}

static void test_err_set_formats_and_returns_status(void **state) {
    (void)state;
    fm_err err = FM_ERR_INIT;
    assert_int_equal(fm_err_set(&err, FM_NOT_FOUND, "deployment %s #%d", "hello", 7),
                     FM_NOT_FOUND);
    assert_int_equal(err.status, FM_NOT_FOUND);
    assert_string_equal(err.msg, "deployment hello #7");
    assert_null(err.details);
    /* NULL err: still returns the status, no crash */
    assert_int_equal(fm_err_set(NULL, FM_TIMEOUT, "x %d", 1), FM_TIMEOUT);
}

static void test_err_set_truncates_long_message(void **state) {
    (void)state;
    fm_err err = FM_ERR_INIT;
    char big[3000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    fm_err_set(&err, FM_INTERNAL, "%s", big);
    assert_int_equal(strlen(err.msg), sizeof(err.msg) - 1);
    assert_int_equal(err.msg[0], 'x');
}

static void test_err_detail_and_clear(void **state) {
    (void)state;
    fm_err err = FM_ERR_INIT;
    fm_err_set(&err, FM_FUNCTION_ERROR, "boom");
    fm_err_detail(&err, "name", json_string("TypeError"));
    fm_err_detail(&err, "position", json_integer(12));
    fm_err_detail(&err, "position", json_integer(13)); /* replaces */
    assert_non_null(err.details);
    assert_int_equal(json_object_size(err.details), 2);
    assert_int_equal(json_integer_value(json_object_get(err.details, "position")), 13);
    /* NULL err: the value is released (LSan would report it otherwise) */
    fm_err_detail(NULL, "x", json_string("leak?"));
    fm_err_clear(&err);
    assert_int_equal(err.status, FM_OK);
    assert_string_equal(err.msg, "");
    assert_null(err.details);
}

static void test_err_to_json_shape(void **state) {
    (void)state;
    fm_err err = FM_ERR_INIT;
    fm_err_set(&err, FM_FUNCTION_ERROR, "boom");
    fm_err_detail(&err, "name", json_string("TypeError"));
    fm_err_detail(&err, "stack", json_string("at f (index.js:1:1)"));
    json_t *j = fm_err_to_json(&err, "req-123");
    assert_non_null(j);
    assert_true(json_is_object(j));
    assert_int_equal(json_object_size(j), 1);
    json_t *e = json_object_get(j, "error");
    assert_true(json_is_object(e));
    assert_int_equal(json_object_size(e), 5);
    assert_string_equal(json_string_value(json_object_get(e, "code")), "function_error");
    assert_string_equal(json_string_value(json_object_get(e, "message")), "boom");
    assert_string_equal(json_string_value(json_object_get(e, "name")), "TypeError");
    assert_string_equal(json_string_value(json_object_get(e, "stack")), "at f (index.js:1:1)");
    assert_string_equal(json_string_value(json_object_get(e, "request_id")), "req-123");
    json_decref(j);
    /* the error keeps its details: building the body does not steal them */
    assert_int_equal(json_object_size(err.details), 2);
    fm_err_clear(&err);
}

static void test_err_to_json_without_request_id_or_details(void **state) {
    (void)state;
    fm_err err = FM_ERR_INIT;
    fm_err_set(&err, FM_TOO_LARGE, "body of %d bytes", 99);
    const char *ids[] = {NULL, ""};
    for (size_t i = 0; i < 2; i++) {
        json_t *j = fm_err_to_json(&err, ids[i]);
        json_t *e = json_object_get(j, "error");
        assert_int_equal(json_object_size(e), 2);
        assert_string_equal(json_string_value(json_object_get(e, "code")), "payload_too_large");
        assert_string_equal(json_string_value(json_object_get(e, "message")), "body of 99 bytes");
        assert_null(json_object_get(e, "request_id"));
        json_decref(j);
    }
    fm_err_set(&err, FM_TIMEOUT, "too slow");
    json_t *j = fm_err_to_json(&err, "r");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                        "timeout");
    json_decref(j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_status_code_and_http),
        cmocka_unit_test(test_status_from_code_round_trips),
        cmocka_unit_test(test_out_of_range_status_is_internal),
        cmocka_unit_test(test_err_set_formats_and_returns_status),
        cmocka_unit_test(test_err_set_truncates_long_message),
        cmocka_unit_test(test_err_detail_and_clear),
        cmocka_unit_test(test_err_to_json_shape),
        cmocka_unit_test(test_err_to_json_without_request_id_or_details),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
