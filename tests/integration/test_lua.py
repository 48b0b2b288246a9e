"""The Lua runtime (LuaJIT, interpreter only): exports of entry files with
their parameter names, require from the bundle, values to and from JSON,
errors, the sandbox, print, deadlines and the memory cap that in-process
Lua can enforce, and fnmesh.call from Lua (to Lua and to JavaScript)."""
import json
import threading
import time

from fmtest import FnTestCase, err_field, main, parallel

LUA_INDEX = r"""
local util = require("lib.util")
local rel = require("./lib/util")
local deep = require("lib/deeper/mod")
local M = {}
function M.merge(a, b) return a .. b end
function M.add(a, b) return a + b end
function M.greet(name, greeting) return (greeting or "Hello") .. ", " .. name .. "!" end
function M.echo(x) return x end
function M.count(...) return select("#", ...) end
M.typeOf = function(x)
  if x == fnmesh.null then return "null" end
  return type(x)
end
function M.twice(x) return util.twice(x) end
function M.sameModule() return util == rel end
function M.deep() return deep.name() end
function M.boom() error("boom") end
function M.boomTable() error({message = "table-msg", name = "MyError"}) end
function M.boomValue() error(setmetatable({}, {__tostring = function() return "via-tostring" end})) end
function M.shout(m) print("marker-" .. m, 42, nil) return m end
function M.warnIt(m) fnmesh.log("warn", "warned-" .. m) return true end
function M.sandbox()
  local ok_ffi = pcall(require, "ffi")
  local ok_jit = pcall(require, "jit")
  local bc_ok = load("\27LJ\2\0") ~= nil
  return {
    os = type(os), io = type(io), debug = type(debug), jit = type(jit),
    package = type(package), dofile = type(dofile), loadfile = type(loadfile),
    dump = type(string.dump), newproxy = type(newproxy),
    ffi = ok_ffi, jitmod = ok_jit, bytecode = bc_ok,
    text = load("return 1 + 1")(), gcstop = (pcall(collectgarbage, "stop")),
    gccount = type(collectgarbage("count")),
  }
end
function M.empty() return {} end
function M.emptyArray() return fnmesh.array() end
function M.sparse() return {[1] = "a", [3] = "c"} end
function M.mixed() return {10, 20, x = 3} end
function M.nested() return {list = {1, 2, {3}}, obj = {k = {z = true}}, s = "x"} end
function M.nan() return 0/0 end
function M.fnval() return {f = print} end
function M.cycle() local t = {} t.self = t return t end
function M.badutf8() return "a\255b" end
function M.big(v) return {v + 1, type(v), tostring(v), v > 2^53} end
function M.rawbytes() return fnmesh.bytes("abc") end
function M.noffi() return {type(ffi), type(jit), type(package), tostring(getmetatable(fnmesh.bytes("")))} end
function M.nul() return "a\0b" end
function M.len(s) return #s end
function M.multi() return 1, 2, 3 end
function M.nothing() end
function M.yieldTop() coroutine.yield(1) end
function M.coro()
  local co = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
  return {co(1), co(5)}
end
M.notAFunction = 42
M["not-ident"] = function() end
return M
"""

LUA_UTIL = r"""
local U = {}
function U.twice(x) return x * 2 end
return U
"""

LUA_DEEP = r"""
local sib = require("./sibling")
return { name = function() return "deep+" .. sib end }
"""

LIMITS = r"""
local M = {}
function M.spin() while true do end end
function M.spinPcall()
  local ok, e = pcall(function() while true do end end)
  return "swallowed: " .. tostring(e)
end
function M.spinXpcall()
  xpcall(function() while true do end end, function(e) return e end)
  return "swallowed"
end
function M.spinLoopPcall()
  while true do pcall(function() local x = 0 for i = 1, 1e6 do x = x + i end end) end
end
function M.spinCoroutine()
  local co = coroutine.create(function() while true do end end)
  return coroutine.resume(co)
end
function M.spinTostring()
  error(setmetatable({}, {__tostring = function() while true do end end}))
end
function M.bomb()
  local t = {}
  for i = 1, 1e9 do t[i] = string.rep("x", 1024) .. i end
end
function M.bombPcall()
  local ok, e = pcall(function()
    local t = {}
    for i = 1, 1e9 do t[i] = string.rep("x", 1024) .. i end
  end)
  return "swallowed: " .. tostring(e)
end
function M.bigString() return #string.rep("x", 200 * 1024 * 1024) end
function M.churn(live_mb, garbage_mb)
  local keep = {}
  for i = 1, live_mb * 1024 do keep[i] = string.rep("k", 1000) .. i end
  local n = 0
  for i = 1, garbage_mb * 1024 do local s = string.rep("g", 1000) .. i n = n + #s end
  return #keep
end
function M.ok() return "ok" end
return M
"""


class LuaFunctionsTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node()
        cls.must_deploy(cls.node, "lua", {
            "index.lua": LUA_INDEX,
            "lib/util.lua": LUA_UTIL,
            "lib/deeper/mod.lua": LUA_DEEP,
            "lib/deeper/sibling.lua": 'return "sibling"\n',
            "other.js": "exports.jsfn = (a) => 'js:' + a;\n",
        })

    def call(self, fn, *args):
        return self.node.call("lua", fn, *args)

    def post(self, fn, raw):
        st, _, body = self.node.req_json("POST", "/fn/lua/%s" % fn, raw=raw)
        return st, body

    # ---- exports

    def test_exports_and_params(self):
        st, _, body = self.node.req_json("GET", "/system/v1/deployments/lua")
        self.assertEqual(st, 200, body)
        fns = {f["name"]: f for f in body["functions"]}
        self.assertEqual(fns["merge"]["runtime"], "lua")
        self.assertEqual(fns["merge"]["file"], "index.lua")
        self.assertEqual(fns["merge"]["params"], ["a", "b"])
        self.assertEqual(fns["greet"]["params"], ["name", "greeting"])
        self.assertEqual(fns["count"]["params"], ["..."])
        self.assertEqual(fns["typeOf"]["params"], ["x"])
        self.assertEqual(fns["nothing"]["params"], [])
        self.assertNotIn("notAFunction", fns)
        self.assertNotIn("not-ident", fns)
        # modules are not published
        self.assertNotIn("twice", [f for f in fns if fns[f]["file"] != "index.lua"])
        self.assertEqual(fns["jsfn"]["runtime"], "js")

    def test_lua_and_js_in_one_deployment(self):
        self.assertEqual(self.call("merge", "a", "b"), (200, "ab"))
        self.assertEqual(self.call("jsfn", 1), (200, "js:1"))

    # ---- arguments

    def test_positional_and_named(self):
        self.assertEqual(self.call("add", 2, 3), (200, 5))
        self.assertEqual(self.post("merge", b'{"b": "y", "a": "x"}'), (200, "xy"))
        self.assertEqual(self.post("greet", b'{"name": "Bob"}'), (200, "Hello, Bob!"))
        self.assertEqual(self.post("greet", b'["Al", "Hi"]'), (200, "Hi, Al!"))
        st, _, body = self.node.req_json("GET", "/fn/lua/add?a=4&b=5")
        self.assertEqual((st, body), (200, 9))
        self.assertEqual(self.call("count", 1, None, 3), (200, 3))
        self.assertEqual(self.post("count", b""), (200, 0))

    def test_require(self):
        self.assertEqual(self.call("twice", 21), (200, 42))
        self.assertEqual(self.call("sameModule"), (200, True))
        self.assertEqual(self.call("deep"), (200, "deep+sibling"))

    # ---- values

    def test_values_round_trip(self):
        values = ["h\u00e9llo \U0001F600", "nul\u0000byte", "", 1.5, -7, 2 ** 53, True, False,
                  None, [1, "two", None, [None]], {"a": [1, {"b": None}], "c": {"d": [[], {}]}},
                  [], {}]
        for v in values:
            with self.subTest(v=v):
                self.assertEqual(self.post("echo", json.dumps([v]).encode()), (200, v))

    def test_string_lengths_are_bytes_and_nul_kept(self):
        self.assertEqual(self.call("len", "h\u00e9llo \U0001F600"), (200, 11))
        self.assertEqual(self.call("len", "a\u0000b"), (200, 3))
        self.assertEqual(self.call("nul"), (200, "a\u0000b"))
        # a string that is not valid UTF-8 is binary: it leaves as bytes
        self.assertEqual(self.call("badutf8"), (200, {"$bytes": "Yf9i"}))
        self.assertEqual(self.call("rawbytes"), (200, {"$bytes": "YWJj"}))  # fnmesh.bytes(s)

    def test_integers_beyond_2_53_are_exact(self):
        # int64_t cdata: exact arithmetic and comparison, no way to the FFI itself
        self.assertEqual(self.call("big", 2**53 + 1),
                         (200, [2**53 + 2, "cdata", "9007199254740993LL", True]))
        self.assertEqual(self.call("big", -2**63 + 1)[1][0], -2**63 + 2)
        self.assertEqual(self.call("noffi"), (200, ["nil", "nil", "nil", "fnmesh.bytes"]))

    def test_null_and_types(self):
        self.assertEqual(self.call("typeOf", None), (200, "null"))
        self.assertEqual(self.post("typeOf", b""), (200, "nil"))
        self.assertEqual(self.call("typeOf", [1]), (200, "table"))
        self.assertEqual(self.call("typeOf", 1), (200, "number"))

    def test_tables_to_json(self):
        self.assertEqual(self.call("empty"), (200, {}))
        self.assertEqual(self.call("emptyArray"), (200, []))
        self.assertEqual(self.call("sparse"), (200, {"1": "a", "3": "c"}))
        self.assertEqual(self.call("mixed"), (200, {"1": 10, "2": 20, "x": 3}))
        self.assertEqual(self.call("nested"),
                         (200, {"list": [1, 2, [3]], "obj": {"k": {"z": True}}, "s": "x"}))
        self.assertEqual(self.call("multi"), (200, 1))
        st, h, data = self.node.request("POST", "/fn/lua/nothing", b"[]")
        self.assertEqual((st, data.strip()), (200, b"null"))

    def test_unconvertible_results(self):
        for fn, what in (("nan", "NaN"), ("fnval", "function"), ("cycle", "cycle")):
            with self.subTest(fn=fn):
                st, body = self.call(fn)
                self.assertError(st, body, 500, "function_error", what)

    # ---- errors

    def test_error_is_500_with_message_and_traceback(self):
        st, body = self.call("boom")
        e = self.assertError(st, body, 500, "function_error", "boom")
        self.assertIn("index.lua:", e["message"])
        self.assertEqual(err_field(body, "name"), "LuaError")
        stack = err_field(body, "stack")
        self.assertIn("index.lua", stack)
        self.assertNotIn("fnmesh:", stack)
        st, body = self.call("boomTable")
        self.assertError(st, body, 500, "function_error", "table-msg")
        self.assertEqual(err_field(body, "name"), "MyError")
        st, body = self.call("boomValue")
        self.assertError(st, body, 500, "function_error", "via-tostring")
        self.assertEqual(self.call("add", 1, 1), (200, 2))

    def test_yield_outside_coroutine(self):
        st, body = self.call("yieldTop")
        self.assertError(st, body, 500, "function_error", "coroutine.yield")
        self.assertEqual(self.call("coro"), (200, [2, 10]))

    # ---- sandbox

    def test_sandbox(self):
        st, body = self.call("sandbox")
        self.assertEqual(st, 200, body)
        self.assertEqual(body, {
            "os": "nil", "io": "nil", "debug": "nil", "jit": "nil", "package": "nil",
            "dofile": "nil", "loadfile": "nil", "dump": "nil", "newproxy": "nil",
            "ffi": False, "jitmod": False, "bytecode": False, "text": 2, "gcstop": False,
            "gccount": "number"})

    # ---- logging

    def test_print_goes_to_node_log(self):
        st, h, data = self.node.request("POST", "/fn/lua/shout", b'["q1w2"]',
                                        {"X-Request-Id": "lua-req-77"})
        self.assertEqual((st, json.loads(data)), (200, "q1w2"))
        line = self.node.wait_for_log(lambda l: "marker-q1w2" in l)
        self.assertIsNotNone(line, "print output not in the node log")
        self.assertIn("marker-q1w2\\t42\\tnil", line)
        rec = json.loads(line)
        self.assertEqual(rec.get("deployment"), "lua")
        self.assertEqual(rec.get("function"), "shout")
        self.assertEqual(rec.get("request_id"), "lua-req-77")
        self.assertEqual(self.call("warnIt", "z9"), (200, True))
        line = self.node.wait_for_log(lambda l: "warned-z9" in l)
        self.assertIsNotNone(line)
        self.assertIn("warn", line)

    def test_concurrent_calls(self):
        res = parallel(lambda i: self.call("add", i, i), list(range(40)), threads=8)
        self.assertEqual(res, [(200, 2 * i) for i in range(40)])


class LuaRestartTest(FnTestCase):
    def test_artifact_survives_a_restart(self):
        node = self.start_node()
        st, body = node.deploy("keep", {"index.lua": "local u = require('lib.u')\n"
                                                     "return { f = function(a) return u.g(a) end }\n",
                                        "lib/u.lua": "return { g = function(a) return a * 3 end }\n"})
        self.assertEqual(st, 201, body)
        self.assertEqual(node.call("keep", "f", 2), (200, 6))
        node.restart()
        self.assertEqual(node.call("keep", "f", 3), (200, 9))
        st, _, body = node.req_json("GET", "/system/v1/deployments/keep")
        self.assertEqual(body["functions"][0]["params"], ["a"])


class LuaDeployErrorsTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node()

    def test_syntax_error_names_file_and_line(self):
        st, body = self.node.deploy("syn", {"index.lua": "local M = {}\n\nM.f = = 1\nreturn M\n"})
        e = self.assertError(st, body, 400, "invalid_bundle")
        self.assertTrue(e["message"].startswith("index.lua:3:"), e["message"])

    def test_syntax_error_in_module(self):
        st, body = self.node.deploy("synmod", {
            "index.lua": "return { f = function() return require('lib.bad') end }\n",
            "lib/bad.lua": "return {\n  x = (1 +\n}\n"})
        e = self.assertError(st, body, 400, "invalid_bundle")
        self.assertTrue(e["message"].startswith("lib/bad.lua:3:"), e["message"])

    def test_entry_must_return_a_table(self):
        st, body = self.node.deploy("notable", {"index.lua": "return 42\n"})
        self.assertError(st, body, 400, "invalid_bundle", "table")

    def test_top_level_error(self):
        st, body = self.node.deploy("toperr", {"index.lua": "local x = 1\nerror('at load')\n"})
        self.assertError(st, body, 400, "invalid_bundle", ("index.lua:2:", "at load"))

    def test_missing_module(self):
        st, body = self.node.deploy("nomod", {"index.lua": "require('lib.none')\nreturn {}\n"})
        self.assertError(st, body, 400, "invalid_bundle", "lib/none.lua")

    def test_previous_version_keeps_serving(self):
        st, body = self.node.deploy("keep", {"index.lua": "return { f = function() return 1 end }\n"})
        self.assertIn(st, (200, 201), body)
        st, body = self.node.deploy("keep", {"index.lua": "return { f = function() return end end"})
        self.assertError(st, body, 400, "invalid_bundle")
        self.assertEqual(self.node.call("keep", "f"), (200, 1))


class LuaLimitsTest(FnTestCase):
    """One node per test: a limit that does not work leaves an executor
    thread spinning."""

    def setUp(self):
        super().setUp()
        self.node = self.start_node()
        st, body = self.node.deploy("lim", {"index.lua": LIMITS,
                                            "fnmesh.json": '{"timeout_ms": 300, "memory_mb": 64}'})
        self.assertEqual(st, 201, body)
        st, body = self.node.deploy("other", {"index.js": "exports.ok = () => 'other';\n"})
        self.assertEqual(st, 201, body)

    def timed(self, fn, limit=10):
        t0 = time.monotonic()
        st, body = self.node.call("lim", fn, timeout=limit)
        return st, body, time.monotonic() - t0

    def test_endless_loop_times_out(self):
        for _ in range(2):
            st, body, dt = self.timed("spin")
            self.assertError(st, body, 504, "timeout", "300 ms")
            self.assertGreaterEqual(dt, 0.25)
            self.assertLess(dt, 3.0)
            self.assertEqual(self.node.call("lim", "ok"), (200, "ok"))
            self.assertEqual(self.node.call("other", "ok"), (200, "other"))

    def test_timeout_cannot_be_caught(self):
        for fn in ("spinPcall", "spinXpcall", "spinLoopPcall", "spinCoroutine"):
            with self.subTest(fn=fn):
                st, body, dt = self.timed(fn)
                self.assertError(st, body, 504, "timeout")
                self.assertLess(dt, 3.0)
        self.assertEqual(self.node.call("lim", "ok"), (200, "ok"))

    def test_endless_tostring_of_an_error_object(self):
        # the function itself failed at once; describing its error is cut short
        st, body, dt = self.timed("spinTostring")
        self.assertError(st, body, 500, "function_error", "__tostring")
        self.assertLess(dt, 3.0)
        self.assertEqual(self.node.call("lim", "ok"), (200, "ok"))

    def test_memory_bomb(self):
        for fn in ("bomb", "bombPcall", "bigString", "bomb"):
            with self.subTest(fn=fn):
                st, body, dt = self.timed(fn)
                self.assertError(st, body, 500, "function_error", "memory limit exceeded")
                self.assertLess(dt, 3.0)
                self.assertEqual(self.node.call("lim", "ok"), (200, "ok"))
        st, _, _ = self.node.request("GET", "/healthz")
        self.assertEqual(st, 200)

    def test_garbage_is_collected_before_the_cap(self):
        # 40 MiB live (over half the cap) plus 300 MiB of garbage
        st, body = self.node.deploy("churn", {"index.lua": LIMITS})
        self.assertEqual(st, 201, body)
        st, body = self.node.call("churn", "churn", 40, 300, timeout=30)
        self.assertEqual((st, body), (200, 40960))

    def test_other_calls_served_while_one_spins(self):
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", self.timed("spin")))
        t.start()
        time.sleep(0.05)
        try:
            for _ in range(3):
                self.assertEqual(self.node.call("other", "ok", timeout=5), (200, "other"))
        finally:
            t.join(10)
        self.assertEqual(out["r"][0], 504)


CALLEE_JS = r"""
exports.merge = (a, b) => a + b;
exports.echo = (v) => v;
exports.fail = (n) => { throw new TypeError("js-fail " + n); };
"""

CALLEE_LUA = r"""
local M = {}
function M.add(a, b) return a + b end
function M.echo(v) return v end
function M.boom(n) error("lua-boom " .. tostring(n)) end
function M.spin() while true do end end
function M.relay(n) return fnmesh.call("callee-lua/boom", n) end
return M
"""

CALLER_LUA = r"""
local M = {}
function M.toJs(a, b) return fnmesh.call("callee-js/merge", a, b) end
function M.toLua(a, b) return fnmesh.call("callee-lua/add", a, b) end
function M.viaFn(a, b)
  local add = fnmesh.fn("callee-lua/add")
  return add(a, b) + add(100, 0)
end
function M.several()
  local out = {}
  for i = 1, 5 do out[i] = fnmesh.call("callee-lua/add", i, i) end
  return out
end
function M.roundTrip(v) return fnmesh.call("callee-lua/echo", v) end
function M.roundTripJs(v) return fnmesh.call("callee-js/echo", v) end
function M.catches()
  local ok, e = pcall(fnmesh.call, "callee-lua/boom", 1)
  return {ok = ok, message = e.message, code = e.code, str = tostring(e),
          stack = e.stack}
end
function M.catchesJs()
  local ok, e = pcall(fnmesh.call, "callee-js/fail", 2)
  return {ok = ok, message = e.message, name = e.name}
end
function M.uncaught() return fnmesh.call("callee-lua/boom", 3) end
function M.twoHops() return fnmesh.call("callee-lua/relay", 4) end
function M.missing() return fnmesh.call("callee-lua/nope") end
function M.forever(n) return fnmesh.call("caller-lua/forever", n + 1) end
function M.depth(n) if n <= 0 then return 0 end return 1 + fnmesh.call("caller-lua/depth", n - 1) end
function M.slowChild() return fnmesh.call("callee-lua/spin") end
function M.inCoroutine()
  local co = coroutine.wrap(function() return fnmesh.call("callee-lua/add", 1, 2) end)
  return co()
end
function M.badArg() return fnmesh.call("callee-lua/echo", print) end
return M
"""


class LuaMeshTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node()
        cls.must_deploy(cls.node, "callee-js", {"index.js": CALLEE_JS})
        cls.must_deploy(cls.node, "callee-lua", {"index.lua": CALLEE_LUA})
        cls.must_deploy(cls.node, "caller-lua", {
            "index.lua": CALLER_LUA,
            "fnmesh.json": '{"functions": {"slowChild": {"timeout_ms": 300}}}'})

    def call(self, fn, *args):
        return self.node.call("caller-lua", fn, *args)

    def test_lua_to_lua_and_js(self):
        self.assertEqual(self.call("toLua", 2, 3), (200, 5))
        self.assertEqual(self.call("toJs", "a", "b"), (200, "ab"))
        self.assertEqual(self.call("viaFn", 1, 2), (200, 103))
        self.assertEqual(self.call("several"), (200, [2, 4, 6, 8, 10]))
        self.assertEqual(self.call("depth", 10), (200, 10))

    def test_values_cross_the_mesh(self):
        value = {"a": [1, 2.5, "x", None, True, False], "n": {"deep": [[[]]]},
                 "u": "h\u00e9\U0001F600", "nul": "a\u0000b", "neg": -7, "empty": {},
                 "emptyList": []}
        self.assertEqual(self.call("roundTrip", value), (200, value))
        self.assertEqual(self.call("roundTripJs", value), (200, value))
        self.assertEqual(self.call("roundTrip", None), (200, None))

    def test_callee_error_is_catchable(self):
        st, body = self.call("catches")
        self.assertEqual(st, 200, body)
        self.assertFalse(body["ok"])
        self.assertIn("lua-boom 1", body["message"])
        self.assertEqual(body["code"], "function_error")
        self.assertIn("lua-boom 1", body["str"])
        self.assertIn("callee-lua/boom (lua)", body["stack"])
        st, body = self.call("catchesJs")
        self.assertEqual(st, 200, body)
        self.assertEqual((body["ok"], body["message"], body["name"]),
                         (False, "js-fail 2", "TypeError"))

    def test_uncaught_callee_error_names_the_hops(self):
        st, body = self.call("uncaught")
        self.assertError(st, body, 500, "function_error", "lua-boom 3")
        self.assertIn("callee-lua/boom (lua)", err_field(body, "stack"))
        st, body = self.call("twoHops")
        self.assertError(st, body, 500, "function_error", "lua-boom 4")
        stack = err_field(body, "stack")
        self.assertIn("callee-lua/boom (lua)", stack)
        self.assertIn("callee-lua/relay (lua)", stack)
        self.assertLess(stack.index("callee-lua/boom (lua)"), stack.index("callee-lua/relay (lua)"))

    def test_unknown_target(self):
        st, body = self.call("missing")
        self.assertError(st, body, 404, "not_found", "callee-lua/nope")

    def test_hop_limit(self):
        t0 = time.monotonic()
        st, body = self.call("forever", 0)
        self.assertError(st, body, 508, "loop_detected", "32")
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual(self.call("toLua", 1, 1), (200, 2))

    def test_callee_timeout_is_callers_deadline(self):
        t0 = time.monotonic()
        st, body = self.call("slowChild")
        self.assertError(st, body, 504, "timeout")
        self.assertLess(time.monotonic() - t0, 3)
        self.assertEqual(self.call("toLua", 1, 2), (200, 3))

    def test_not_inside_a_coroutine(self):
        st, body = self.call("inCoroutine")
        self.assertError(st, body, 500, "function_error", "coroutine")

    def test_unconvertible_argument(self):
        st, body = self.call("badArg")
        self.assertError(st, body, 500, "function_error", "argument 1")

    def test_concurrent_mesh_calls(self):
        res = parallel(lambda i: self.call("toLua", i, 1), list(range(30)), threads=6)
        self.assertEqual(res, [(200, i + 1) for i in range(30)])


if __name__ == "__main__":
    main()
