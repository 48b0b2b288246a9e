"""The C runtime: .c entry files compiled at deploy time into shared objects
that worker processes load. Exports and parameter names from FM_EXPORT, the
value model (exact int64, strings with NUL, arrays, maps), errors, compile
errors refusing the deploy, crashes that fail one call only, deadlines
(the worker is killed), logs, and calls between C and JavaScript."""
import os
import threading
import time
import unittest

from fmtest import FnTestCase, main

LIB_H = r'''
#include <fnmesh.h>
static inline int64_t lib_twice(int64_t x) { return 2 * x; }
'''

MAIN_C = r'''
#include <fnmesh.h>
#include <stdlib.h>
#include <string.h>
#include "lib/util.h"

FM_EXPORT(sum, "a", "b") {
    return fm_int64(ctx, fm_get_int(fm_arg(ctx, 0)) + fm_get_int(fm_arg(ctx, 1)));
}

FM_EXPORT(hello) { return fm_cstring(ctx, "hello from C"); }

FM_EXPORT(twice, "x") { return fm_int64(ctx, lib_twice(fm_get_int(fm_arg(ctx, 0)))); }

FM_EXPORT(echo, "v") { return fm_arg(ctx, 0); }

FM_EXPORT(str_info, "s") {
    size_t n = 0;
    const char *s = fm_get_string(fm_arg(ctx, 0), &n);
    if (!s) return fm_error(ctx, "s must be a string");
    size_t nuls = 0;
    for (size_t i = 0; i < n; i++) nuls += s[i] == '\0';
    fm_val *r = fm_map(ctx);
    fm_set(r, "bytes", fm_int64(ctx, (int64_t)n));
    fm_set(r, "nuls", fm_int64(ctx, (int64_t)nuls));
    fm_set(r, "copy", fm_string(ctx, s, n));
    return r;
}

FM_EXPORT(describe, "v") {
    fm_val *v = fm_arg(ctx, 0), *r = fm_array(ctx);
    static const char *names[] = {"null", "bool", "int", "double", "string", "array", "map"};
    fm_push(r, fm_cstring(ctx, names[fm_type(v)]));
    if (fm_type(v) == FM_ARRAY)
        for (size_t i = 0; i < fm_len(v); i++) fm_push(r, fm_cstring(ctx, names[fm_type(fm_item(v, i))]));
    if (fm_type(v) == FM_MAP)
        for (size_t i = 0; i < fm_len(v); i++) {
            fm_val *x;
            const char *k = fm_key_at(v, i, &x);
            fm_push(r, fm_cstring(ctx, k));
            fm_push(r, x);
        }
    return r;
}

FM_EXPORT(build) {
    fm_val *m = fm_map(ctx), *a = fm_array(ctx);
    fm_push(a, fm_int64(ctx, INT64_MIN));
    fm_push(a, fm_double(ctx, 2.5));
    fm_push(a, fm_bool(ctx, true));
    fm_push(a, fm_null(ctx));
    fm_push(a, fm_string(ctx, "a\0b", 3));
    fm_set(m, "list", a);
    fm_set(m, "empty", fm_map(ctx));
    fm_set(m, "nested", fm_get(fm_arg(ctx, 0), "k"));
    return m;
}

FM_EXPORT(sum_list, "xs") {
    fm_val *xs = fm_arg(ctx, 0);
    if (fm_type(xs) != FM_ARRAY) return fm_error(ctx, "xs must be an array, got type %d", fm_type(xs));
    double total = 0;
    for (size_t i = 0; i < fm_len(xs); i++) total += fm_get_double(fm_item(xs, i));
    return fm_double(ctx, total);
}

FM_EXPORT(fail, "why") {
    size_t n;
    const char *why = fm_get_string(fm_arg(ctx, 0), &n);
    return fm_error(ctx, "failed because %s", why ? why : "?");
}

FM_EXPORT(crash) {
    volatile int *p = NULL;
    return fm_int64(ctx, *p);
}

FM_EXPORT(spin) {
    for (;;);
    return NULL;
}

FM_EXPORT(hog) {
    for (;;) {
        void *p = malloc(64u << 20);
        if (!p) return fm_error(ctx, "out of memory");
        memset(p, 1, 64u << 20);
    }
}

FM_EXPORT(shout, "msg") {
    size_t n;
    const char *s = fm_get_string(fm_arg(ctx, 0), &n);
    fm_log(ctx, FM_WARN, "c-marker %s", s ? s : "");
    return fm_arg(ctx, 0);
}

FM_EXPORT(to_js, "s") {
    fm_val *r = fm_call(ctx, "cmix/jsUpper", fm_arg(ctx, 0));
    if (!r) return fm_error(ctx, "call failed: %s", fm_call_error(ctx, NULL));
    return r;
}

FM_EXPORT(missing) {
    const char *code = NULL;
    fm_val *r = fm_call(ctx, "cmix/nope");
    if (r) return fm_error(ctx, "expected an error");
    fm_val *m = fm_map(ctx);
    fm_set(m, "code", fm_cstring(ctx, code ? code : ""));
    const char *msg = fm_call_error(ctx, &code);
    fm_set(m, "code", fm_cstring(ctx, code ? code : ""));
    fm_set(m, "message", fm_cstring(ctx, msg ? msg : ""));
    return m;
}

FM_EXPORT(rec, "n") {
    int64_t n = fm_get_int(fm_arg(ctx, 0));
    if (n <= 0) return fm_int64(ctx, 0);
    fm_val *r = fm_call(ctx, "cmix/rec", fm_int64(ctx, n - 1));
    if (!r) return fm_error(ctx, "%s", fm_call_error(ctx, NULL));
    return fm_int64(ctx, 1 + fm_get_int(r));
}
'''

OTHER_C = r'''
#include <fnmesh.h>
FM_EXPORT(other_fn, "x", "y", "z") { return fm_int64(ctx, (int64_t)fm_argc(ctx)); }
'''

JS = r'''
export const jsUpper = (s) => String(s).toUpperCase();
export async function toC(a, b) { return await fnmesh.call("cmix/sum", a, b); }
export async function chain(s) { return "js(" + await fnmesh.call("cmix/to_js", s) + ")"; }
'''


class CTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node()
        cls.must_deploy(cls.node, "cmix", {
            "main.c": MAIN_C,
            "other.c": OTHER_C,
            "lib/util.h": LIB_H,
            "lib/not_an_entry.c": "this is not C and is never compiled on its own",
            "web.js": JS,
            # crash: room for a new worker to start under a loaded machine (crash != deadline)
            "fnmesh.json": '{"timeout_ms": 5000, "functions": {"spin": {"timeout_ms": 300},'
                           ' "crash": {"timeout_ms": 20000}}}',
        })

    def call(self, fn, *args):
        return self.node.call("cmix", fn, *args)

    def post(self, fn, raw):
        st, _, body = self.node.req_json("POST", "/fn/cmix/" + fn, raw=raw)
        return st, body

    def test_exports_and_params(self):
        st, _, body = self.node.req_json("GET", "/system/v1/deployments/cmix")
        self.assertEqual(st, 200, body)
        fns = {f["name"]: f for f in body["functions"]}
        self.assertEqual(fns["sum"]["runtime"], "c")
        self.assertEqual(fns["sum"]["params"], ["a", "b"])
        self.assertEqual(fns["sum"]["file"], "main.c")
        self.assertEqual(fns["hello"]["params"], [])
        self.assertEqual(fns["other_fn"]["params"], ["x", "y", "z"])
        self.assertEqual(fns["other_fn"]["file"], "other.c")
        self.assertEqual(fns["jsUpper"]["runtime"], "js")

    def test_calls_and_named_arguments(self):
        self.assertEqual(self.call("sum", 1, 2), (200, 3))
        self.assertEqual(self.call("hello"), (200, "hello from C"))
        self.assertEqual(self.call("twice", 21), (200, 42))  # a header of the bundle
        self.assertEqual(self.post("sum", b'{"b": 10, "a": 5}'), (200, 15))
        self.assertEqual(self.call("other_fn", 1, 2), (200, 2))

    def test_values(self):
        big = 2**62 + 1
        self.assertEqual(self.call("echo", big), (200, big))
        self.assertEqual(self.call("sum", big, 1), (200, big + 1))
        self.assertEqual(self.call("echo", -2**63), (200, -2**63))
        s = "h\u00e9llo \U0001F600 \u4e2d"
        self.assertEqual(self.call("echo", s), (200, s))
        st, body = self.call("str_info", "x\u0000y\u0000\u00e9")
        self.assertEqual(st, 200, body)
        self.assertEqual(body, {"bytes": 6, "nuls": 2, "copy": "x\u0000y\u0000\u00e9"})
        v = {"a": [1, 2.5, None, True, False, "x\u0000y"], "n": {"m": {}}, "e": []}
        self.assertEqual(self.call("echo", v), (200, v))
        self.assertEqual(self.call("describe", [1, 2.5, None, True, "s", [], {}]),
                         (200, ["array", "int", "double", "null", "bool", "string", "array", "map"]))
        self.assertEqual(self.call("describe", {"x": 1, "y": [2]}),
                         (200, ["map", "x", 1, "y", [2]]))
        self.assertEqual(self.call("build", {"k": {"deep": [1]}}),
                         (200, {"list": [-2**63, 2.5, True, None, "a\u0000b"], "empty": {},
                                "nested": {"deep": [1]}}))
        self.assertEqual(self.call("sum_list", [1, 2.5, 3]), (200, 6.5))

    def test_error(self):
        st, body = self.call("fail", "reasons")
        self.assertEqual(st, 500, body)
        self.assertEqual(body["error"]["code"], "function_error")
        self.assertEqual(body["error"]["message"], "failed because reasons")
        st, body = self.call("sum_list", "nope")
        self.assertEqual(st, 500, body)
        self.assertIn("xs must be an array", body["error"]["message"])

    def test_compile_errors_refuse_the_deploy(self):
        st, body = self.node.deploy("badc", {"bad.c": "#include <fnmesh.h>\n\nint f(void) {\n  return nope;\n}\n"})
        self.assertEqual(st, 400, body)
        self.assertEqual(body["error"]["code"], "invalid_bundle")
        self.assertIn("bad.c:4:", body["error"]["message"])
        self.assertIn("error", body["error"]["message"])
        self.assertNotIn("/tmp/", body["error"]["message"])
        self.assertIn("bad.c:4:", body["error"]["compiler_output"])  # the whole output
        st, body = self.node.deploy("badc", {"x.c": '#include "lib/missing.h"\n'})
        self.assertEqual(st, 400, body)
        self.assertIn("x.c:1:", body["error"]["message"])
        self.assertIn("missing.h", body["error"]["message"])
        # an undefined symbol is found when the worker loads the object
        st, body = self.node.deploy("badc", {"u.c": "#include <fnmesh.h>\nint undefined_thing(void);\n"
                                             "FM_EXPORT(f) { return fm_int64(ctx, undefined_thing()); }\n"})
        self.assertEqual(st, 400, body)
        self.assertIn("undefined_thing", body["error"]["message"])

    def test_crash_fails_only_that_call(self):
        results = {}

        def other(i):
            results[i] = self.call("sum", i, 1)

        threads = [threading.Thread(target=other, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        st, body = self.call("crash")
        for t in threads:
            t.join()
        self.assertEqual(st, 500, body)
        self.assertIn("the C worker crashed (signal 11)", body["error"]["message"])
        self.assertEqual(results, {i: (200, i + 1) for i in range(20)})
        self.assertEqual(self.call("sum", 5, 5), (200, 10))  # a new worker takes over
        st, body = self.call("crash")
        self.assertEqual(st, 500, body)
        self.assertEqual(self.call("sum", 6, 6), (200, 12))

    @unittest.skipIf(os.environ.get("ASAN_OPTIONS"),
                     "sanitizer builds run workers without an address-space cap")
    def test_memory_cap(self):
        # Where the node may make cgroups, the kernel stops the worker at
        # memory_mb + 64 MiB of memory it touched (here 128 + 64), before
        # malloc would fail at the address-space cap (memory_mb + 384 MiB);
        # where it may not, malloc fails there and the function says so.
        st, body = self.node.call("cmix", "hog")
        self.assertEqual(st, 500, body)
        if "worker processes get cgroups" in self.node.log_text():
            self.assertEqual(body["error"]["name"], "MemoryError", body)
            self.assertIn("memory limit exceeded (128 MiB): the kernel stopped the C worker at "
                          "192 MiB running hog", body["error"]["message"])
        else:
            self.assertIn("out of memory", body["error"]["message"])
        self.assertEqual(self.node.call("cmix", "sum", 1, 2), (200, 3))

    def test_deadline_kills_the_worker(self):
        t0 = time.monotonic()
        st, body = self.call("spin")
        self.assertEqual(st, 504, body)
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assertEqual(self.call("sum", 2, 2), (200, 4))

    def test_log_goes_to_the_node_log(self):
        self.assertEqual(self.call("shout", "abc123"), (200, "abc123"))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and "c-marker abc123" not in self.node.log_text():
            time.sleep(0.05)
        line = [l for l in self.node.log_text().splitlines() if "c-marker abc123" in l]
        self.assertTrue(line, "fm_log output not in the log")
        self.assertIn('"function":"shout"', line[0])

    def test_mesh_between_c_and_js(self):
        self.assertEqual(self.call("toC", 1, 2), (200, 3))             # js -> c
        self.assertEqual(self.call("to_js", "q"), (200, "Q"))          # c -> js
        self.assertEqual(self.call("chain", "z"), (200, "js(Z)"))      # js -> c -> js
        self.assertEqual(self.call("rec", 5), (200, 5))                # c -> c
        st, body = self.call("missing")
        self.assertEqual(st, 200, body)
        self.assertEqual(body["code"], "not_found")
        self.assertIn("nope", body["message"])


if __name__ == "__main__":
    main()
