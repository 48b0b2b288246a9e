"""The Python runtime: CPython in worker processes. Exports and signatures,
keyword arguments and defaults, imports from the bundle, errors with
tracebacks, deadlines (the worker is interrupted, or killed and replaced),
crashes that fail one call only, and calls to and from other languages."""
import os
import threading
import time
import unittest

from fmtest import FnTestCase, main

MAIN_PY = r'''
import helpers_lib
from pkg.util import twice
import fnmesh

__all__ = ["add", "greet", "kw_only", "varargs", "boom", "spin", "sleepy", "crash", "segv",
           "big", "uses", "later", "unicode", "echo", "log", "to_js", "rec", "named_call",
           "catch_missing", "js_error", "nan", "hog", "circular", "unserializable"]

def add(a, b):
    return a + b

def greet(name, greeting="Hello", *, punct="!"):
    return f"{greeting}, {name}{punct}"

def kw_only(*, x, y=2):
    return [x, y]

def varargs(first, *rest, **extra):
    return {"first": first, "rest": list(rest), "extra": extra}

def boom():
    raise ValueError("boom from python")

def spin():
    while True:
        pass

def sleepy():
    import time
    time.sleep(60)

def crash():
    import os
    os._exit(3)

def segv():
    import ctypes
    ctypes.string_at(0)

def big():
    return [2**70, -2**63, 2**53 + 1]

def uses():
    return [helpers_lib.k(), twice(21)]

async def later(x):
    import asyncio
    await asyncio.sleep(0.02)
    return x * 2

def unicode(s):
    return [s, len(s)]

def echo(v):
    return v

def log(msg):
    print("py-marker", msg)
    return msg

def to_js(x):
    return fnmesh.call("mix/jsUpper", x)

def rec(n):
    return 0 if n <= 0 else 1 + fnmesh.call("mix/rec", n - 1)

def named_call():
    return fnmesh.fn("mix/greet")(name="Ada", punct="?")

def catch_missing():
    try:
        fnmesh.call("mix/nope")
    except fnmesh.FnmeshError as e:
        return {"code": e.code, "message": e.message}

def js_error():
    return fnmesh.call("mix/jsThrow")

def nan():
    return float("nan")

def circular(deep):
    a = [1, {"k": []}]
    (a[1]["k"] if deep else a).append(a)
    return a

def unserializable():
    return {"ok": [1], "bad": {1, 2}}

def hog():
    x = []
    while True:
        x.append(bytearray(50 * 1024 * 1024))

def _private():
    return "hidden"

def not_exported():
    return "not in __all__"
'''

JS = r'''
export const jsUpper = (s) => String(s).toUpperCase();
export function jsThrow() { throw new RangeError("thrown in js"); }
export async function toPython(a, b) { return await fnmesh.call("mix/add", a, b); }
export async function chain(x) { return "js(" + await fnmesh.call("mix/to_js", x) + ")"; }
'''


class PythonTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node()
        cls.must_deploy(cls.node, "mix", {
            "main.py": MAIN_PY,
            "helpers_lib.py": "def k():\n    return 'helper'\n",
            "pkg/__init__.py": "",
            "pkg/util.py": "def twice(x):\n    return 2 * x\n",
            "web.js": JS,
            # crash/segv: room for the pool to start new workers under a loaded machine, so
            # that a crash is told apart from a deadline
            "fnmesh.json": '{"timeout_ms": 3000, "functions": {"spin": {"timeout_ms": 300},'
                           ' "sleepy": {"timeout_ms": 300}, "crash": {"timeout_ms": 20000},'
                           ' "segv": {"timeout_ms": 20000}}}',
        })

    def call(self, fn, *args):
        return self.node.call("mix", fn, *args)

    def post(self, fn, raw):
        st, _, body = self.node.req_json("POST", "/fn/mix/" + fn, raw=raw)
        return st, body

    def test_exports_and_signatures(self):
        st, _, body = self.node.req_json("GET", "/system/v1/deployments/mix")
        self.assertEqual(st, 200)
        fns = {f["name"]: f for f in body["functions"]}
        self.assertEqual(fns["add"]["runtime"], "python")
        self.assertEqual(fns["add"]["params"], ["a", "b"])
        self.assertEqual(fns["greet"]["params"], ["name", "greeting", "punct"])
        self.assertEqual(fns["varargs"]["params"], ["first", "*rest", "**extra"])
        self.assertNotIn("_private", fns)
        self.assertNotIn("not_exported", fns)  # __all__ is honoured
        self.assertEqual(fns["k"]["file"], "helpers_lib.py")  # a top-level file is an entry
        self.assertEqual(fns["jsUpper"]["runtime"], "js")

    def test_positional_named_defaults(self):
        self.assertEqual(self.call("add", 1, 2), (200, 3))
        self.assertEqual(self.post("greet", b'{"name": "Ada"}'), (200, "Hello, Ada!"))
        self.assertEqual(self.post("greet", b'{"name": "Ada", "punct": "?"}'), (200, "Hello, Ada?"))
        self.assertEqual(self.post("greet", b'{"punct": ".", "greeting": "Hi", "name": "Bo"}'),
                         (200, "Hi, Bo."))
        st, _, body = self.node.req_json("GET", "/fn/mix/greet?name=Cy&greeting=Yo")
        self.assertEqual((st, body), (200, "Yo, Cy!"))
        self.assertEqual(self.post("kw_only", b'{"x": 1}'), (200, [1, 2]))
        self.assertEqual(self.call("varargs", 1, 2, 3), (200, {"first": 1, "rest": [2, 3], "extra": {}}))

    def test_imports_async_values(self):
        self.assertEqual(self.call("uses"), (200, ["helper", 42]))
        self.assertEqual(self.call("later", 21), (200, 42))
        self.assertEqual(self.call("big"), (200, [2**70, -2**63, 2**53 + 1]))  # exact
        s = "h\u00e9llo \U0001F600 \u4e2d"
        self.assertEqual(self.call("unicode", s), (200, [s, len(s)]))
        v = {"a": [1, 2.5, None, True, False, "x\u0000y"], "n": {"m": {}}, "e": []}
        self.assertEqual(self.call("echo", v), (200, v))

    def test_error_has_type_message_and_traceback(self):
        st, body = self.call("boom")
        self.assertEqual(st, 500, body)
        e = body["error"]
        self.assertEqual(e["code"], "function_error")
        self.assertEqual(e["message"], "boom from python")
        self.assertEqual(e["name"], "ValueError")
        self.assertIn('File "main.py", line', e["stack"])
        self.assertNotIn("/tmp/", e["stack"])
        st, body = self.call("nan")  # not JSON: an error, not a crash
        self.assertEqual(st, 500, body)

    def test_results_that_are_not_json(self):
        for deep in (False, True):
            st, body = self.call("circular", deep)
            self.assertEqual(st, 500, body)
            self.assertEqual(body["error"]["name"], "ValueError", body)
            self.assertIn("Circular reference", body["error"]["message"])
        st, body = self.call("unserializable")
        self.assertEqual(st, 500, body)
        self.assertEqual(body["error"]["name"], "TypeError", body)
        self.assertIn("set is not JSON serializable", body["error"]["message"])
        # after a failed encoding, nested values still encode, many times over
        for _ in range(20):
            st, body = self.call("echo", [[1, {"k": [[2]]}], {"a": {"b": [3]}}])
            self.assertEqual((st, body), (200, [[1, {"k": [[2]]}], {"a": {"b": [3]}}]))

    def test_deadline_interrupts_a_loop(self):
        t0 = time.monotonic()
        st, body = self.call("spin")
        self.assertEqual(st, 504, body)
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assertEqual(self.call("add", 2, 2), (200, 4))

    def test_deadline_kills_a_worker_that_does_not_yield(self):
        # time.sleep is interrupted by SIGINT too; either way: 504 and the node goes on
        t0 = time.monotonic()
        st, body = self.call("sleepy")
        self.assertEqual(st, 504, body)
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assertEqual(self.call("add", 3, 3), (200, 6))

    def test_crash_fails_only_that_call(self):
        results = {}

        def other(i):
            results[i] = self.call("add", i, 1)

        threads = [threading.Thread(target=other, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        st, body = self.call("crash")
        for t in threads:
            t.join()
        self.assertEqual(st, 500, body)
        self.assertIn("exited", body["error"]["message"])
        self.assertEqual(results, {i: (200, i + 1) for i in range(20)})
        st, body = self.call("segv")
        self.assertEqual(st, 500, body)
        self.assertIn("signal", body["error"]["message"])
        # a new worker takes over
        self.assertEqual(self.call("add", 5, 5), (200, 10))

    @unittest.skipIf(os.environ.get("ASAN_OPTIONS"),
                     "sanitizer builds run workers without an address-space cap")
    def test_memory_cap(self):
        st, body = self.call("hog")
        self.assertEqual(st, 500, body)
        self.assertEqual(body["error"]["name"], "MemoryError")
        self.assertEqual(self.call("add", 1, 1), (200, 2))

    def test_print_goes_to_the_node_log(self):
        self.assertEqual(self.call("log", "abc123"), (200, "abc123"))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and "py-marker abc123" not in self.node.log_text():
            time.sleep(0.05)
        line = [l for l in self.node.log_text().splitlines() if "py-marker abc123" in l]
        self.assertTrue(line, "print() output not in the log")
        self.assertIn('"function":"log"', line[0])
        self.assertIn('"deployment":"mix"', line[0])

    def test_mesh_between_python_and_js(self):
        self.assertEqual(self.call("to_js", "q"), (200, "Q"))            # python -> js
        self.assertEqual(self.call("toPython", 2, 3), (200, 5))           # js -> python
        self.assertEqual(self.call("chain", "z"), (200, "js(Z)"))         # js -> py -> js
        for _ in range(3):  # again: the workers of the first recursion are all still there
            self.assertEqual(self.call("rec", 5), (200, 5))               # python -> python
        self.assertEqual(self.call("named_call"), (200, "Hello, Ada?"))   # keyword arguments
        st, body = self.call("catch_missing")
        self.assertEqual(st, 200, body)
        self.assertEqual(body["code"], "not_found")
        st, body = self.call("js_error")
        self.assertEqual(st, 500, body)
        self.assertEqual(body["error"]["message"], "thrown in js")
        self.assertIn("mix/jsThrow (js)", body["error"]["stack"])

    def test_syntax_and_import_errors_refuse_the_deploy(self):
        st, body = self.node.deploy("badpy", {"bad.py": "def f():\n    return 1\n\ndef g(:\n    pass\n"})
        self.assertEqual(st, 400, body)
        self.assertIn("bad.py:4:", body["error"]["message"])
        st, body = self.node.deploy("badpy", {"bad.py": "raise RuntimeError('at import')\n"})
        self.assertEqual(st, 400, body)
        self.assertIn("bad.py", body["error"]["message"])
        self.assertIn("at import", body["error"]["message"])
        st, body = self.node.deploy("badpy", {"bad.py": "import not_a_module_anywhere\n"})
        self.assertEqual(st, 400, body)
        self.assertIn("not_a_module_anywhere", body["error"]["message"])


if __name__ == "__main__":
    main()
