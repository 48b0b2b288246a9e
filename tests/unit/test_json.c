/* test_json.c - the JSON helpers of core/util.h: fm_json_parse (unicode,
 * NUL, int64 limits, big integers as doubles, nesting, error position and
 * details, lone surrogates), fm_json_dump (compact, any value) and
 * fm_json_str / fm_json_strn (invalid UTF-8 becomes U+FFFD). */
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

#define FFFD "\xef\xbf\xbd"


/* Parses a NUL-terminated text; fails the test on error. */
static json_t *parse_ok(const char *text) {
    fm_err err = FM_ERR_INIT;
    json_t *v = fm_json_parse(text, strlen(text), &err);
    if (!v) fail_msg("parse of %s failed: %s", text, err.msg);
    assert_int_equal(err.status, FM_OK);
    assert_null(err.details);
    return v;
}

/* Dumps and compares with the expected text (exact bytes). */
static void assert_dump(const json_t *v, const char *want, size_t want_len) {
    size_t len = 0;
    char *s = fm_json_dump(v, &len);
    assert_non_null(s);
    assert_int_equal(len, want_len);
    assert_int_equal(strlen(s), want_len);
    assert_memory_equal(s, want, want_len);
    free(s);
}

static void assert_json_string(const json_t *v, const char *bytes, size_t len) {
    assert_true(json_is_string(v));
    assert_int_equal(json_string_length(v), len);
    assert_memory_equal(json_string_value(v), bytes, len);
}

static void test_unicode_round_trip(void **state) {
    (void)state;
    /* raw astral char */
    json_t *raw = parse_ok("\"\xf0\x9f\x98\x80\"");
    assert_json_string(raw, "\xf0\x9f\x98\x80", 4);
    assert_dump(raw, "\"\xf0\x9f\x98\x80\"", 6);
    /* the same char as a surrogate-pair escape */
    json_t *esc = parse_ok("\"\\ud83d\\ude00\"");
    assert_json_string(esc, "\xf0\x9f\x98\x80", 4);
    assert_true(json_equal(raw, esc));
    assert_dump(esc, "\"\xf0\x9f\x98\x80\"", 6);
    json_decref(raw);
    json_decref(esc);

    /* BMP + astral mix, escapes and raw, inside an object key and value */
    json_t *mix = parse_ok("{\"cl\\u00e9\":\"\\u20ac \xc3\xa9 \\uD83D\\uDE00 \xf0\x9f\x98\x80\"}");
    json_t *val = json_object_get(mix, "cl\xc3\xa9");
    assert_non_null(val);
    const char *want = "\xe2\x82\xac \xc3\xa9 \xf0\x9f\x98\x80 \xf0\x9f\x98\x80";
    assert_json_string(val, want, strlen(want));
    size_t len;
    char *dumped = fm_json_dump(mix, &len);
    json_t *again = parse_ok(dumped);
    assert_true(json_equal(mix, again));
    free(dumped);
    json_decref(again);
    json_decref(mix);
}

static void test_nul_inside_strings(void **state) {
    (void)state;
    json_t *v = parse_ok("\"a\\u0000b\"");
    assert_json_string(v, "a\0b", 3);
    assert_dump(v, "\"a\\u0000b\"", 10);
    json_decref(v);

    json_t *arr = parse_ok("[\"\\u0000\", \"x\\u0000\\u0000y\"]");
    assert_json_string(json_array_get(arr, 0), "\0", 1);
    assert_json_string(json_array_get(arr, 1), "x\0\0y", 4);
    size_t len;
    char *s = fm_json_dump(arr, &len);
    json_t *back = parse_ok(s);
    assert_true(json_equal(arr, back));
    free(s);
    json_decref(back);
    json_decref(arr);

    /* a NUL in an object key cannot be represented: refused, not truncated */
    fm_err err = FM_ERR_INIT;
    const char *bad = "{\"a\\u0000b\": 1}";
    assert_null(fm_json_parse(bad, strlen(bad), &err));
    assert_int_equal(err.status, FM_INVALID_JSON);
    fm_err_clear(&err);
}

static void test_int64_limits_exact(void **state) {
    (void)state;
    json_t *max = parse_ok("9223372036854775807");
    assert_true(json_is_integer(max));
    assert_true(json_integer_value(max) == INT64_MAX);
    assert_dump(max, "9223372036854775807", 19);
    json_decref(max);

    json_t *min = parse_ok("-9223372036854775808");
    assert_true(json_is_integer(min));
    assert_true(json_integer_value(min) == INT64_MIN);
    assert_dump(min, "-9223372036854775808", 20);
    json_decref(min);

    const char *text = "[9223372036854775807,-9223372036854775808,0,-1]";
    json_t *arr = parse_ok(text);
    for (size_t i = 0; i < 4; i++) assert_true(json_is_integer(json_array_get(arr, i)));
    assert_dump(arr, text, strlen(text));
    json_decref(arr);
}

static void test_integers_beyond_int64_become_doubles(void **state) {
    (void)state;
    json_t *v = parse_ok("9223372036854775808");
    assert_true(json_is_real(v));
    assert_true(json_real_value(v) == 9223372036854775808.0);
    json_decref(v);

    v = parse_ok("-9223372036854775809");
    assert_true(json_is_real(v));
    assert_true(json_real_value(v) == -9223372036854775808.0);
    json_decref(v);

    v = parse_ok("123456789012345678901234567890");
    assert_true(json_is_real(v));
    assert_true(json_real_value(v) == 123456789012345678901234567890.0);
    json_decref(v);

    /* inside a document: the big one is a double, the others keep their value */
    v = parse_ok("{\"big\": 100000000000000000000, \"n\": 3, \"s\": \"x\"}");
    assert_true(json_is_real(json_object_get(v, "big")));
    assert_true(json_number_value(json_object_get(v, "big")) == 1e20);
    assert_true(json_number_value(json_object_get(v, "n")) == 3.0);
    assert_string_equal(json_string_value(json_object_get(v, "s")), "x");
    json_decref(v);

    /* a big integer does not make invalid JSON acceptable */
    fm_err err = FM_ERR_INIT;
    const char *bad = "[100000000000000000000,";
    assert_null(fm_json_parse(bad, strlen(bad), &err));
    assert_int_equal(err.status, FM_INVALID_JSON);
    fm_err_clear(&err);
}

static char *nested(size_t depth, char open, char close) {
    char *s = malloc(2 * depth + 1);
    memset(s, open, depth);
    memset(s + depth, close, depth);
    s[2 * depth] = '\0';
    return s;
}

static void test_deep_nesting(void **state) {
    (void)state;
    /* 1000 levels parse and dump back identically */
    char *text = nested(1000, '[', ']');
    json_t *v = parse_ok(text);
    size_t depth = 0;
    for (json_t *p = v; json_is_array(p); p = json_array_get(p, 0)) depth++;
    assert_int_equal(depth, 1000);
    assert_dump(v, text, strlen(text));
    json_decref(v);
    free(text);

    /* absurd depth is an error, not a stack overflow */
    text = nested(200000, '[', ']');
    fm_err err = FM_ERR_INIT;
    assert_null(fm_json_parse(text, strlen(text), &err));
    assert_int_equal(err.status, FM_INVALID_JSON);
    assert_non_null(json_object_get(err.details, "position"));
    fm_err_clear(&err);
    free(text);

    /* deep objects too */
    size_t n = 500;
    char *obj = malloc(n * 6 + n + 2);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) o += (size_t)sprintf(obj + o, "{\"k\":");
    obj[o++] = '1';
    for (size_t i = 0; i < n; i++) obj[o++] = '}';
    obj[o] = '\0';
    v = parse_ok(obj);
    assert_dump(v, obj, o);
    json_decref(v);
    free(obj);
}

static void test_invalid_json_reports_line_column_position(void **state) {
    (void)state;
    /* the '}' is byte 17 of the input, the 8th character of line 2 */
    const char *text = "{\"a\": 1,\n  \"b\": }";
    fm_err err = FM_ERR_INIT;
    assert_null(fm_json_parse(text, strlen(text), &err));
    assert_int_equal(err.status, FM_INVALID_JSON);
    assert_contains(err.msg, "line 2");
    assert_contains(err.msg, "column 8");
    assert_contains(err.msg, "position 17");
    json_t *pos = json_object_get(err.details, "position");
    assert_true(json_is_integer(pos));
    assert_int_equal(json_integer_value(pos), 17);

    /* the error body carries the position as a member */
    json_t *body = fm_err_to_json(&err, "rid");
    json_t *e = json_object_get(body, "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "invalid_json");
    assert_int_equal(json_integer_value(json_object_get(e, "position")), 17);
    assert_contains(json_string_value(json_object_get(e, "message")), "line 2");
    json_decref(body);
    fm_err_clear(&err);

    /* first line, column counted from 1 */
    text = "[1, 2, x]";
    assert_null(fm_json_parse(text, strlen(text), &err));
    assert_contains(err.msg, "line 1");
    assert_contains(err.msg, "column 8");
    assert_contains(err.msg, "position 8");
    assert_int_equal(json_integer_value(json_object_get(err.details, "position")), 8);
    fm_err_clear(&err);
}

static void test_invalid_json_variants(void **state) {
    (void)state;
    static const struct {
        const char *text;
        size_t len;
    } bad[] = {
        {"", 0},
        {"   ", 3},
        {"[1,]", 4},
        {"{\"a\" 1}", 7},
        {"'a'", 3},
        {"nul", 3},
        {"1 2", 3},
        {"[1] x", 5},
        {"{\"a\":1", 6},
        {"\"unterminated", 13},
        {"\"bad \\x escape\"", 15},
        {"\"ctl \x01 char\"", 12},
        {"\"\xff\"", 3},          /* invalid UTF-8 */
        {"[1, 2]\0[3]", 10},     /* NUL after the value */
        {"01", 2},
        {"NaN", 3},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fm_err err = FM_ERR_INIT;
        json_t *v = fm_json_parse(bad[i].text, bad[i].len, &err);
        if (v) fail_msg("case %zu accepted", i);
        assert_int_equal(err.status, FM_INVALID_JSON);
        assert_contains(err.msg, "position");
        json_t *pos = json_object_get(err.details, "position");
        assert_true(json_is_integer(pos));
        assert_true(json_integer_value(pos) >= 0);
        assert_true((size_t)json_integer_value(pos) <= bad[i].len);
        fm_err_clear(&err);
    }
    /* NULL err is allowed */
    assert_null(fm_json_parse("[", 1, NULL));
}

static void test_parse_honours_length(void **state) {
    (void)state;
    fm_err err = FM_ERR_INIT;
    json_t *v = fm_json_parse("[1]garbage", 3, &err);
    assert_non_null(v);
    assert_int_equal(json_array_size(v), 1);
    json_decref(v);
    /* any value is accepted at top level */
    static const char *scalars[] = {"1", "-2.5", "\"s\"", "true", "false", "null"};
    for (size_t i = 0; i < 6; i++) {
        v = parse_ok(scalars[i]);
        assert_dump(v, scalars[i], strlen(scalars[i]));
        json_decref(v);
    }
}

static void test_lone_surrogates_are_rejected(void **state) {
    (void)state;
    /* What the code does: jansson refuses unpaired surrogate escapes, so they
     * come back as FM_INVALID_JSON (never a crash or a mangled string). */
    static const char *bad[] = {
        "\"\\ud83d\"",         /* lone high */
        "\"\\ude00\"",         /* lone low */
        "\"\\ud83dx\"",        /* high followed by a char */
        "\"\\ud83d\\u0041\"",  /* high followed by a non-surrogate escape */
        "\"\\ude00\\ud83d\"",  /* reversed pair */
        "[\"ok\", \"\\udfff\"]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fm_err err = FM_ERR_INIT;
        json_t *v = fm_json_parse(bad[i], strlen(bad[i]), &err);
        if (v) fail_msg("lone surrogate accepted: %s", bad[i]);
        assert_int_equal(err.status, FM_INVALID_JSON);
        assert_non_null(json_object_get(err.details, "position"));
        fm_err_clear(&err);
    }
}

static void test_dump_is_compact_and_encodes_any(void **state) {
    (void)state;
    json_t *o = json_object();
    json_object_set_new(o, "a", json_pack("[i,i]", 1, 2));
    json_object_set_new(o, "b", json_string("x/y"));
    json_object_set_new(o, "c", json_real(1.5));
    json_object_set_new(o, "d", json_null());
    const char *want = "{\"a\":[1,2],\"b\":\"x/y\",\"c\":1.5,\"d\":null}";
    assert_dump(o, want, strlen(want));
    json_decref(o);

    json_t *s = json_string("q\"b\\s\x01\n");
    assert_dump(s, "\"q\\\"b\\\\s\\u0001\\n\"", 17);
    json_decref(s);

    json_t *i = json_integer(5);
    assert_dump(i, "5", 1);
    char *str = fm_json_dump(i, NULL); /* len_out may be NULL */
    assert_string_equal(str, "5");
    free(str);
    json_decref(i);
    assert_dump(json_true(), "true", 4);
    assert_dump(json_null(), "null", 4);
}

static void test_strn_valid_input_kept(void **state) {
    (void)state;
    json_t *v = fm_json_strn("h\xc3\xa9llo \xf0\x9f\x98\x80", 11);
    assert_json_string(v, "h\xc3\xa9llo \xf0\x9f\x98\x80", 11);
    json_decref(v);
    /* NUL inside valid UTF-8 is kept, length honoured */
    v = fm_json_strn("a\0b", 3);
    assert_json_string(v, "a\0b", 3);
    json_decref(v);
    /* only `len` bytes are read */
    v = fm_json_strn("abcdef", 2);
    assert_json_string(v, "ab", 2);
    json_decref(v);
    v = fm_json_strn("", 0);
    assert_json_string(v, "", 0);
    json_decref(v);
}

static void test_strn_invalid_utf8_becomes_fffd(void **state) {
    (void)state;
    static const struct {
        const char *in;
        size_t in_len;
        const char *out;
    } cases[] = {
        {"a\xff" "b", 3, "a" FFFD "b"},
        {"\xc3", 1, FFFD},                                 /* truncated 2-byte */
        {"\xe2\x82", 2, FFFD FFFD},                        /* truncated 3-byte: per byte */
        {"\xc0\xaf", 2, FFFD FFFD},                        /* overlong '/' */
        {"\xe0\x80\xaf", 3, FFFD FFFD FFFD},               /* overlong 3-byte */
        {"\xed\xa0\x80", 3, FFFD FFFD FFFD},               /* encoded surrogate D800 */
        {"\xf4\x90\x80\x80", 4, FFFD FFFD FFFD FFFD},      /* above U+10FFFF */
        {"\x80", 1, FFFD},                                 /* lone continuation */
        {"\xff\xc3\xa9", 3, FFFD "\xc3\xa9"},              /* recovers on the next char */
        {"\xf0\x9f\x98\x80\xff", 5, "\xf0\x9f\x98\x80" FFFD},
        {"x\xf0\x9f\x98", 4, "x" FFFD FFFD FFFD},          /* truncated astral at the end */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *v = fm_json_strn(cases[i].in, cases[i].in_len);
        if (!v) fail_msg("case %zu: NULL", i);
        size_t want = strlen(cases[i].out);
        if (json_string_length(v) != want ||
            memcmp(json_string_value(v), cases[i].out, want) != 0)
            fail_msg("case %zu: got %zu bytes", i, json_string_length(v));
        json_decref(v);
    }
    /* NUL and an invalid byte together: NUL kept, bad byte replaced */
    json_t *v = fm_json_strn("\0\xff", 2);
    assert_json_string(v, "\0" FFFD, 4);
    json_decref(v);
}

static void test_str_null_and_terminated(void **state) {
    (void)state;
    json_t *v = fm_json_str(NULL);
    assert_json_string(v, "", 0);
    json_decref(v);
    v = fm_json_str("ab\0cd");
    assert_json_string(v, "ab", 2);
    json_decref(v);
    v = fm_json_str("x\xfe");
    assert_json_string(v, "x" FFFD, 4);
    json_decref(v);
    /* the result always dumps as valid JSON */
    size_t len;
    v = fm_json_str("\xff\xfe");
    char *s = fm_json_dump(v, &len);
    json_t *back = parse_ok(s);
    assert_true(json_equal(v, back));
    json_decref(back);
    free(s);
    json_decref(v);
}

static void assert_quoted(const uint16_t *u, size_t n, const char *want) {
    size_t len = 0;
    char *s = fm_json_quote_utf16(u, n, &len);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(s, want, len);
    assert_int_equal(s[len], '\0');
    free(s);
}

static void test_quote_utf16_as_json_stringify(void **state) {
    (void)state;
    assert_quoted(NULL, 0, "\"\"");
    const uint16_t esc[] = {'"', '\\', '/', 8, 9, 10, 12, 13, 0, 1, 0x1f, 0x7f, 'a'};
    assert_quoted(esc, 13, "\"\\\"\\\\/\\b\\t\\n\\f\\r\\u0000\\u0001\\u001f\x7f" "a\"");
    const uint16_t utf8[] = {0xe9, 0x7ff, 0x800, 0x20ac, 0x2028, 0xffff};
    assert_quoted(utf8, 6, "\"\xc3\xa9\xdf\xbf\xe0\xa0\x80\xe2\x82\xac\xe2\x80\xa8\xef\xbf\xbf\"");
    const uint16_t pairs[] = {0xd83d, 0xde00, 0xdbff, 0xdfff};
    assert_quoted(pairs, 4, "\"\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\"");
    /* lone surrogates: escaped, the text around them kept */
    const uint16_t lone[] = {'a', 0xd800, 'b', 0xdc00, 0xdfff, 0xd800, 0xdbff};
    assert_quoted(lone, 7, "\"a\\ud800b\\udc00\\udfff\\ud800\\udbff\"");
}

static void test_i64_to_dec(void **state) {
    (void)state;
    char b[24];
    const struct { int64_t v; const char *s; } cases[] = {
        {0, "0"}, {7, "7"}, {-1, "-1"}, {9007199254740992LL, "9007199254740992"},
        {INT64_MAX, "9223372036854775807"}, {INT64_MIN, "-9223372036854775808"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = fm_i64_to_dec(cases[i].v, b);
        assert_int_equal(n, strlen(cases[i].s));
        assert_memory_equal(b, cases[i].s, n);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unicode_round_trip),
        cmocka_unit_test(test_nul_inside_strings),
        cmocka_unit_test(test_int64_limits_exact),
        cmocka_unit_test(test_integers_beyond_int64_become_doubles),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_invalid_json_reports_line_column_position),
        cmocka_unit_test(test_invalid_json_variants),
        cmocka_unit_test(test_parse_honours_length),
        cmocka_unit_test(test_lone_surrogates_are_rejected),
        cmocka_unit_test(test_dump_is_compact_and_encodes_any),
        cmocka_unit_test(test_strn_valid_input_kept),
        cmocka_unit_test(test_strn_invalid_utf8_becomes_fffd),
        cmocka_unit_test(test_str_null_and_terminated),
        cmocka_unit_test(test_quote_utf16_as_json_stringify),
        cmocka_unit_test(test_i64_to_dec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
