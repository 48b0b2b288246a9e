"""The mesh, local part, from JavaScript: fnmesh.call, require("fnmesh:dep")
and import from "fnmesh:dep"; values passed between functions, the
caller's deadline, the hop limit, and errors that name every hop."""
from fmtest import FnTestCase, main

CALLEE = r"""
export const merge = (a, b) => a + b;
export const shout = (s) => String(s).toUpperCase();
export function boom(n) { throw new TypeError("boom " + n); }
export async function slow() { await new Promise(r => setTimeout(r, 5000)); return 1; }
export const echo = (v) => v;
export const typeOf = (v) => v === null ? "null" : typeof v;
export function relay(n) { return fnmesh.call("callee/boom", n); }
"""

CALLER = r"""
const { merge } = require("fnmesh:callee");
import { shout } from "fnmesh:callee";
import * as callee from "fnmesh:callee";
export async function viaRequire(x, y) { return await merge(x, y); }
export async function viaImport(x) { return await shout(x); }
export async function viaNamespace(x) { return await callee.shout(x); }
export async function viaCall(x, y) { return await fnmesh.call("callee/merge", x, y); }
export async function viaDotName(x, y) { return await fnmesh.call("callee.merge", x, y); }
export async function viaFn(x, y) { const m = fnmesh.fn("callee/merge"); return await m(x, y); }
export async function nested(n) { return n <= 0 ? 0 : 1 + await fnmesh.call("caller/nested", n - 1); }
export async function forever(n) { return fnmesh.call("caller/forever", n + 1); }
export async function catches() {
  try { await fnmesh.call("callee/boom", 1); return "not thrown"; }
  catch (e) { return { message: e.message, code: e.code, name: e.name, stack: e.stack,
                       isError: e instanceof Error }; }
}
export async function uncaught() { return await fnmesh.call("callee/boom", 2); }
export async function twoHops() { return await fnmesh.call("callee/relay", 3); }
export async function missing() { return await fnmesh.call("callee/nope"); }
export async function missingDep() { return await fnmesh.call("nodep/x"); }
export async function slowChild() { return await fnmesh.call("callee/slow"); }
export async function roundTrip(v) { return await fnmesh.call("callee/echo", v); }
export async function types() {
  return await Promise.all([undefined, null, 1, "s", [1], {a: 1}, true]
    .map((v) => fnmesh.call("callee/typeOf", v)));
}
export async function fanOut(n) {
  const parts = [];
  for (let i = 0; i < n; i++) parts.push(fnmesh.call("callee/merge", "p", i));
  return (await Promise.all(parts)).join(",");
}
"""


class MeshTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node()
        cls.must_deploy(cls.node, "callee", {"index.js": CALLEE})
        cls.must_deploy(cls.node, "caller", {
            "index.js": CALLER,
            "fnmesh.json": '{"functions": {"slowChild": {"timeout_ms": 300}}}'})

    def call(self, fn, *args):
        st, body = self.node.call("caller", fn, *args)
        return st, body

    def test_three_ways_to_call(self):
        self.assertEqual(self.call("viaRequire", "x", "y"), (200, "xy"))
        self.assertEqual(self.call("viaImport", "q"), (200, "Q"))
        self.assertEqual(self.call("viaNamespace", "w"), (200, "W"))
        self.assertEqual(self.call("viaCall", 1, 2), (200, 3))
        self.assertEqual(self.call("viaDotName", "a", "b"), (200, "ab"))
        self.assertEqual(self.call("viaFn", "c", "d"), (200, "cd"))

    def test_values_keep_their_types(self):
        value = {"a": [1, 2.5, "x", None, True, False], "n": {"deep": [[[]]]},
                 "u": "h\u00e9\U0001F600 \u4e2d", "nul": "a\u0000b", "neg": -7,
                 "max53": 9007199254740991, "empty": {}, "emptyList": []}
        self.assertEqual(self.call("roundTrip", value), (200, value))
        self.assertEqual(self.call("types"),
                         (200, ["undefined", "null", "number", "string", "object", "object",
                                "boolean"]))

    def test_recursion_and_fan_out(self):
        self.assertEqual(self.call("nested", 20), (200, 20))
        self.assertEqual(self.call("fanOut", 50),
                         (200, ",".join("p%d" % i for i in range(50))))

    def test_hop_limit_stops_runaway_recursion(self):
        st, body = self.call("forever", 0)
        self.assertEqual(st, 508, body)
        self.assertEqual(body["error"]["code"], "loop_detected")
        self.assertIn("32 hops", body["error"]["message"])
        # the node keeps serving
        self.assertEqual(self.call("viaCall", 1, 1), (200, 2))

    def test_callee_error_is_catchable_with_code_and_stack(self):
        st, body = self.call("catches")
        self.assertEqual(st, 200, body)
        self.assertEqual(body["message"], "boom 1")
        self.assertEqual(body["code"], "function_error")
        self.assertEqual(body["name"], "TypeError")
        self.assertTrue(body["isError"])
        self.assertIn("callee/boom (js)", body["stack"])
        self.assertIn("index.js:", body["stack"])

    def test_uncaught_callee_error_becomes_the_http_error(self):
        st, body = self.call("uncaught")
        self.assertEqual(st, 500, body)
        e = body["error"]
        self.assertEqual(e["code"], "function_error")
        self.assertEqual(e["message"], "boom 2")
        self.assertIn("callee/boom (js)", e["stack"])

    def test_stack_names_each_hop(self):
        st, body = self.call("twoHops")
        self.assertEqual(st, 500, body)
        stack = body["error"]["stack"]
        self.assertIn("callee/boom (js)", stack)
        self.assertIn("callee/relay (js)", stack)
        self.assertLess(stack.index("callee/boom (js)"), stack.index("callee/relay (js)"))

    def test_unknown_callee_is_404(self):
        st, body = self.call("missing")
        self.assertEqual(st, 404, body)
        self.assertIn("callee/nope", body["error"]["message"])
        st, body = self.call("missingDep")
        self.assertEqual(st, 404, body)

    def test_callee_inherits_the_callers_deadline(self):
        import time
        t0 = time.monotonic()
        st, body = self.call("slowChild")
        elapsed = time.monotonic() - t0
        self.assertEqual(st, 504, body)
        self.assertLess(elapsed, 3.0, "the 5 s callee must stop at the caller's 300 ms deadline")
        self.assertEqual(self.call("viaCall", 2, 2), (200, 4))

    def test_mesh_calls_over_rpc_and_redeploy(self):
        st, _, body = self.node.rpc({"jsonrpc": "2.0", "method": "caller.viaCall",
                                     "params": ["r", "s"], "id": 7})
        self.assertEqual(body["result"], "rs")
        # a new version of the callee is picked up by the next call
        self.must_deploy(self.node, "callee", {"index.js": CALLEE.replace("a + b", "b + a")},
                         want=(200, 201))
        self.assertEqual(self.call("viaCall", "r", "s"), (200, "sr"))
        self.must_deploy(self.node, "callee", {"index.js": CALLEE}, want=(200, 201))


if __name__ == "__main__":
    main()
