"""fnmesh.callSync / fnmesh.fnSync from JavaScript: the result itself for
JavaScript and Lua callees that finish at once, a promise for callees that
wait (async JavaScript, Lua calling other functions, worker runtimes);
failures thrown with code and hop stack; values copied, never shared."""
import time

import fmtest
from fmtest import FnTestCase, main

JS_CALLEE = r"""
export const add = (a, b) => a + b;
export const echo = (v) => v;
export function mutate(o) { o.touched = true; o.list.push(99); return o; }
export function boom(n) { throw new RangeError("sync boom " + n); }
export async function later(x) { await null; return x * 2; }
export async function laterBoom() { await null; throw new Error("async boom"); }
export const typeOf = (v) => v === null ? "null" : typeof v;
export function spin() { for (;;) {} }
"""

LUA_CALLEE = r"""
return {
  add = function(a, b) return a + b end,
  echo = function(v) return v end,
  fail = function(n) error({message = "lua says no " .. n, code = "bad_request"}) end,
  relay = function(a, b) return fnmesh.call("sjs/add", a, b) end,
  spin = function() while true do end end,
}
"""

CALLER = r"""
const add = fnmesh.fnSync("sjs/add");
export function js(a, b) { const r = fnmesh.callSync("sjs/add", a, b); return [r, typeof r]; }
export function bound(n) { let acc = 0; for (let i = 0; i < n; i++) acc = add(acc, 1); return acc; }
export function lua(a, b) { const r = fnmesh.callSync("slua/add", a, b); return [r, typeof r]; }
export function roundTrip(target, v) { return fnmesh.callSync(target, v); }
export function isolated() {
  const o = { list: [1], nested: { k: "v" } };
  const r = fnmesh.callSync("sjs/mutate", o);
  r.list.push("caller");
  return { mine: o, theirs: r, same: r === o };
}
export function catches(target, n) {
  try { fnmesh.callSync(target, n); return "not thrown"; }
  catch (e) { return { message: e.message, code: e.code, name: e.name, stack: e.stack,
                       isError: e instanceof Error }; }
}
export function uncaught() { return fnmesh.callSync("sjs/boom", 7); }
export async function promised(target, x) {
  const p = fnmesh.callSync(target, x, 1);
  const isPromise = p instanceof Promise;
  return [isPromise, await p];
}
export async function asyncFailure() {
  try { await fnmesh.callSync("sjs/laterBoom"); return "not thrown"; }
  catch (e) { return { message: e.message, stack: e.stack }; }
}
export function missing() { return fnmesh.callSync("sjs/nope"); }
export function alternate(n, suffix) {
  // literal targets (each repeated, so that it is kept), one built anew each
  // time and an object: each call must reach the function it names,
  // whatever the calls before it named
  const out = [];
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < 3; j++) out.push(fnmesh.callSync("sjs/add", i, j));
    for (let j = 0; j < 3; j++) out.push(fnmesh.callSync("slua/echo", i + j));
    out.push(fnmesh.callSync("sjs/" + suffix, i));
    let k = 0; // an object target is converted each time: its name may change
    const named = { toString: () => (k++ % 2 ? "sjs/echo" : "slua/add") };
    for (let j = 0; j < 3; j++) out.push(fnmesh.callSync(named, i, j));
    out.push(fnmesh.callSync(i % 2 ? "sjs/echo" : "slua/add", i, 3));
  }
  return out;
}
export function recurse(n) { return fnmesh.callSync("scaller/recurse", n + 1); }
export function spinJs() { return fnmesh.callSync("sjs/spin"); }
export function spinLua() { return fnmesh.callSync("slua/spin"); }
export function primitives() {
  // numbers at the int32 and double edges, booleans, null and undefined,
  // through JS and Lua callees and back, described exactly (-0 included)
  const vals = [0, -0, 1, -1, 2 ** 31 - 1, -(2 ** 31), 2 ** 31, -(2 ** 31) - 1, 0.1, -2.5,
    2 ** 53, 2 ** 53 + 2, 1e300, 5e-324, -1e-300, NaN, Infinity, -Infinity, true, false, null,
    undefined];
  const show = (r) => typeof r + ":" + (Object.is(r, -0) ? "-0" : String(r));
  return vals.map((v) => [show(v), show(fnmesh.callSync("sjs/echo", v)),
    show(fnmesh.callSync("sjs/add", v, 1)), show(fnmesh.callSync("slua/echo", v)),
    Number.isFinite(v) && Math.abs(v) < 2 ** 53 ? show(fnmesh.callSync("slua/add", v, 1)) : "",
    show(fnmesh.callSync("sjs/echo", [v])[0]), show(fnmesh.callSync("slua/echo", {v}).v)]);
}
export function types() {
  return [undefined, null, 1, 2.5, "s", [1], {a: 1}, true, NaN]
    .map((v) => fnmesh.callSync("sjs/typeOf", v));
}
"""


class CallSyncTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node()
        cls.must_deploy(cls.node, "sjs", {"index.js": JS_CALLEE})
        cls.must_deploy(cls.node, "slua", {"index.lua": LUA_CALLEE})
        cls.must_deploy(cls.node, "spy", {"index.py": "def add(a, b):\n    return a + b\n"})
        cls.must_deploy(cls.node, "scaller", {
            "index.js": CALLER,
            "fnmesh.json": '{"functions": {"spinJs": {"timeout_ms": 300},'
                           ' "spinLua": {"timeout_ms": 300}}}'})

    def call(self, fn, *args):
        return self.node.call("scaller", fn, *args)

    def test_javascript_and_lua_results_come_back_as_values(self):
        self.assertEqual(self.call("js", 2, 3), (200, [5, "number"]))
        self.assertEqual(self.call("js", "a", "b"), (200, ["ab", "string"]))
        self.assertEqual(self.call("lua", 2, 3), (200, [5, "number"]))
        self.assertEqual(self.call("lua", 0.5, 0.25), (200, [0.75, "number"]))
        self.assertEqual(self.call("bound", 1000), (200, 1000))

    def test_each_call_reaches_the_function_it_names(self):
        want = []
        for i in range(50):
            want += [i, i + 1, i + 2, i, i + 1, i + 2, i, i, i, i + 2, i if i % 2 else i + 3]
        self.assertEqual(self.call("alternate", 50, "echo"), (200, want))

    def test_values_keep_their_types_both_ways(self):
        value = {"a": [1, 2.5, "x", None, True, False], "n": {"deep": [[[]]]},
                 "u": "h\u00e9\U0001F600 \u4e2d", "nul": "a\u0000b", "neg": -7,
                 "max53": 9007199254740991, "empty": {}, "emptyList": []}
        for target in ("sjs/echo", "slua/echo"):
            with self.subTest(target=target):
                self.assertEqual(self.call("roundTrip", target, value), (200, value))
                self.assertEqual(self.call("roundTrip", target, -0.0), (200, 0))
                self.assertEqual(self.call("roundTrip", target, 1e300), (200, 1e300))
        self.assertEqual(self.call("types"),
                         (200, ["undefined", "null", "number", "number", "string", "object",
                                "object", "boolean", "null"]))

    def test_primitives_are_the_same_read_from_the_engine_or_through_its_api(self):
        """Numbers, booleans, null and undefined are read and made from
        JavaScriptCore's value encoding (no API call, no lock); a node told
        to use the API for them (FNMESH_JS_API_VALUES) must give the very
        same answers, and this one must not have fallen back."""
        st, fast = self.call("primitives")
        self.assertEqual(st, 200, fast)
        self.assertNotIn("value encoding", self.node.log_text())
        api = self.start_node(env={"FNMESH_JS_API_VALUES": "1"})
        for name, files in (("sjs", {"index.js": JS_CALLEE}), ("slua", {"index.lua": LUA_CALLEE}),
                            ("scaller", {"index.js": CALLER})):
            self.must_deploy(api, name, files)
        st, slow = api.call("scaller", "primitives")
        self.assertEqual(st, 200, slow)
        self.assertEqual(fast, slow)
        by_value = {row[0]: row for row in fast}
        # -0 stays -0 between two JavaScript instances of one thread; between
        # worker processes it travels as JSON text, where it is 0
        neg0 = "number:0" if fmtest.ISOLATION == "process" else "number:-0"
        self.assertEqual(by_value["number:-0"][1:3], [neg0, "number:1"])
        self.assertEqual(by_value["number:2147483647"][2], "number:2147483648")
        self.assertEqual(by_value["number:NaN"][1], "object:null")  # not JSON: null
        self.assertEqual(by_value["boolean:true"][1], "boolean:true")
        self.assertEqual(by_value["undefined:undefined"][1],
                         "object:null" if fmtest.ISOLATION == "process" else "undefined:undefined")
        for target, v in (("sjs/echo", -0.0), ("sjs/echo", 2 ** 31), ("sjs/echo", True),
                          ("sjs/echo", 0.1), ("sjs/echo", None)):
            self.assertEqual(self.call("roundTrip", target, v), api.call("scaller", "roundTrip", target, v))

    def test_arguments_and_results_are_copies(self):
        st, body = self.call("isolated")
        self.assertEqual(st, 200, body)
        self.assertEqual(body["mine"], {"list": [1], "nested": {"k": "v"}})
        self.assertEqual(body["theirs"], {"list": [1, 99, "caller"], "nested": {"k": "v"},
                                          "touched": True})
        self.assertFalse(body["same"])

    def test_failures_are_thrown_with_code_and_hops(self):
        st, body = self.call("catches", "sjs/boom", 1)
        self.assertEqual(st, 200, body)
        self.assertEqual(body["message"], "sync boom 1")
        self.assertEqual(body["name"], "RangeError")
        self.assertEqual(body["code"], "function_error")
        self.assertTrue(body["isError"])
        # the callee's frames, then the hop: the caller's own frames (and the
        # native call between them) are not the callee's stack
        self.assertEqual(body["stack"].split("\n")[-2:], ["boom@index.js:5:37", "sjs/boom (js)"],
                         body["stack"])
        self.assertNotIn("catches@", body["stack"])
        self.assertNotIn("__fm_native_call", body["stack"])
        st, body = self.call("catches", "slua/fail", 2)
        self.assertEqual(st, 200, body)
        self.assertEqual(body["message"], "lua says no 2")
        self.assertEqual(body["code"], "bad_request")
        self.assertIn("slua/fail (lua)", body["stack"])
        st, body = self.call("uncaught")
        self.assertEqual(st, 500, body)
        self.assertEqual(body["error"]["message"], "sync boom 7")
        self.assertEqual(body["error"]["stack"], "boom@index.js:5:37\nsjs/boom (js)")

    def test_unknown_function_and_hop_limit(self):
        st, body = self.call("missing")
        self.assertEqual(st, 404, body)
        self.assertIn("sjs/nope", body["error"]["message"])
        st, body = self.call("recurse", 0)
        self.assertEqual(st, 508, body)
        self.assertEqual(body["error"]["code"], "loop_detected")
        self.assertEqual(self.call("js", 1, 1), (200, [2, "number"]))

    def test_callees_that_wait_give_a_promise(self):
        # async JavaScript, Lua that calls another function, Python in a worker.
        # Under process isolation the callees run in other processes: callSync
        # waits for their answer and gives the value itself.
        promise = fmtest.ISOLATION != "process"
        self.assertEqual(self.call("promised", "sjs/later", 21), (200, [promise, 42]))
        self.assertEqual(self.call("promised", "slua/relay", 4), (200, [promise, 5]))
        self.assertEqual(self.call("promised", "spy/add", 40), (200, [promise, 41]))
        st, body = self.call("asyncFailure")
        self.assertEqual(st, 200, body)
        self.assertEqual(body["message"], "async boom")
        self.assertIn("sjs/laterBoom (js)", body["stack"])

    def test_a_runaway_callee_stops_at_the_callers_deadline(self):
        for fn in ("spinJs", "spinLua"):
            with self.subTest(fn=fn):
                t0 = time.monotonic()
                st, body = self.call(fn)
                self.assertEqual(st, 504, body)
                self.assertLess(time.monotonic() - t0, 5.0)
                self.assertEqual(self.call("lua", 1, 2), (200, [3, "number"]))

    def test_redeploy_is_picked_up(self):
        self.must_deploy(self.node, "slua", {"index.lua": LUA_CALLEE.replace("a + b", "a * b")},
                         want=(200, 201))
        self.assertEqual(self.call("lua", 3, 4), (200, [12, "number"]))
        self.must_deploy(self.node, "slua", {"index.lua": LUA_CALLEE}, want=(200, 201))
        self.assertEqual(self.call("lua", 3, 4), (200, [7, "number"]))


if __name__ == "__main__":
    main()
