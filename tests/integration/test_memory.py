"""memory_mb in the manifest: the memory cap of each instance of a
deployment (default 128). Lua instances are capped by their allocator at
exactly memory_mb; Python and C workers by their address space (memory_mb +
384 MiB for the interpreter's own mappings). An allocation past the cap
fails that call, not the node; bad values are refused at deploy."""
import json
import os
import unittest

from fmtest import FnTestCase, main

LUA = r"""
return {
  grow = function(mb)
    local t = {}
    for i = 1, mb * 16 do t[i] = string.rep("x", 65500) .. i end
    return #t
  end,
  ok = function() return "ok" end,
}
"""

PY = r"""
def grab(mb):
    b = bytearray(mb << 20)
    return len(b) >> 20

def ok():
    return "ok"
"""


JS = r"""
const keep = [];
export function hog() {
  for (;;) keep.push(new Array(1 << 20));
}
export function hogFilled() {
  const mine = [];
  for (;;) mine.push(new Array(1 << 16).fill(7));
}
export function churn(n) {
  // n MiB of short-lived garbage: the collector takes it back, no cap is hit
  let sum = 0;
  for (let i = 0; i < n * 2; i++) sum += new Array(1 << 16).fill(i)[7];
  return sum;
}
export function ok() { return "ok"; }
"""


class MemoryTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node()
        cls.must_deploy(cls.node, "lsmall", {"index.lua": LUA,
                                             "fnmesh.json": '{"memory_mb": 16}'})
        cls.must_deploy(cls.node, "lbig", {"index.lua": LUA})
        cls.must_deploy(cls.node, "psmall", {"index.py": PY, "fnmesh.json": '{"memory_mb": 16}'})
        cls.must_deploy(cls.node, "pbig", {"index.py": PY, "fnmesh.json": '{"memory_mb": 1024}'})
        cls.must_deploy(cls.node, "jsmall", {"index.js": JS, "fnmesh.json":
                                             '{"memory_mb": 64, "isolation": "process"}'})
        cls.must_deploy(cls.node, "jthread", {"index.js": JS, "fnmesh.json":
                                              '{"memory_mb": 64, "isolation": "thread"}'})

    def assert_javascript_capped(self, dep, isolation):
        """Both runaway loops of `dep` fail with the cap's error; the next
        call, and other deployments, are served; `dep` runs in `isolation`."""
        for fn in ("hog", "hogFilled"):
            with self.subTest(fn=fn):
                st, body = self.node.call(dep, fn)
                self.assertEqual(st, 500, body)
                self.assertEqual(body["error"]["code"], "function_error")
                self.assertIn("memory limit exceeded (64 MiB)", body["error"]["message"])
                self.assertEqual(self.node.call(dep, "ok"), (200, "ok"))
                self.assertEqual(self.node.call("lbig", "ok"), (200, "ok"))
        st, _, obj = self.node.req_json("GET", "/system/v1/deployments/" + dep)
        self.assertEqual((st, obj["isolation"]), (200, isolation), obj)

    def test_javascript_in_process_is_capped_at_memory_mb(self):
        # in-process the thread's JavaScript heap is counted once the node's
        # resident memory has grown by the cap during a call: the call fails,
        # the node and the instance go on
        self.assert_javascript_capped("jthread", "thread")

    def test_javascript_garbage_is_not_counted_against_the_cap(self):
        # 1 GiB allocated in 512 KiB arrays that die young, under a 64 MiB cap
        n = 1024
        self.assertEqual(self.node.call("jthread", "churn", n),
                         (200, sum(range(n * 2))))

    def test_javascript_workers_are_capped_at_memory_mb(self):
        # JavaScriptCore has no heap limit and reserves far more address space
        # than any cap: under process isolation the worker's resident memory is
        # watched while code runs (a call past it fails, the worker is replaced;
        # sanitizer builds, whose shadow memory is resident too, count the heap
        # as in-process)
        self.assert_javascript_capped("jsmall", "process")

    def test_lua_instances_are_capped_at_memory_mb(self):
        st, body = self.node.call("lsmall", "grow", 40)
        self.assertEqual(st, 500, body)
        self.assertEqual(body["error"]["code"], "function_error")
        self.assertIn("memory limit exceeded (16 MiB)", body["error"]["message"])
        self.assertEqual(self.node.call("lsmall", "ok"), (200, "ok"))
        # the same code under the default cap (128 MiB) has room for it
        self.assertEqual(self.node.call("lbig", "grow", 40), (200, 640))
        st, body = self.node.call("lbig", "grow", 200)
        self.assertEqual(st, 500, body)
        self.assertIn("memory limit exceeded (128 MiB)", body["error"]["message"])

    @unittest.skipIf(os.environ.get("ASAN_OPTIONS"),
                     "sanitizer builds run workers without an address-space cap")
    def test_python_workers_are_capped_by_memory_mb(self):
        st, body = self.node.call("psmall", "grab", 600)  # 16 + 384 MiB of address space
        self.assertEqual(st, 500, body)
        self.assertEqual(body["error"]["name"], "MemoryError")
        self.assertEqual(self.node.call("psmall", "ok"), (200, "ok"))
        self.assertEqual(self.node.call("pbig", "grab", 600), (200, 600))

    def test_bad_memory_mb_is_refused(self):
        for bad in (8, 100000, "64", 1.5, None):
            with self.subTest(value=bad):
                st, body = self.node.deploy("mbad", {"index.lua": LUA,
                                                     "fnmesh.json": json.dumps({"memory_mb": bad})})
                self.assertEqual(st, 400, body)
                self.assertEqual(body["error"]["code"], "invalid_bundle")
                self.assertIn("memory_mb", body["error"]["message"])
        st, body = self.node.deploy("mbad", {
            "index.lua": LUA, "fnmesh.json": '{"functions": {"ok": {"memory_mb": 64}}}'})
        self.assertEqual(st, 400, body)
        self.assertIn("functions.ok.memory_mb", body["error"]["message"])

    def test_memory_mb_survives_a_restart(self):
        self.node.restart()
        st, body = self.node.call("lsmall", "grow", 40)
        self.assertEqual(st, 500, body)
        self.assertIn("(16 MiB)", body["error"]["message"])


if __name__ == "__main__":
    main()
