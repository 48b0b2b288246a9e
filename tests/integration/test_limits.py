"""Per-function limits from the manifest: max_concurrency (calls running at
once; more wait their turn in order) and max_queue (calls admitted but not
started; more are refused at once with 429 and Retry-After), over HTTP,
JSON-RPC and calls between functions, counted as rejected in /metrics; and
the manifest refusing bad values."""
import json
import threading
import time

from fmtest import FnTestCase, main, parallel

JS = r"""
export async function nap(ms) { await new Promise((r) => setTimeout(r, ms)); return ms; }
export async function fanout(n) {
  const ps = [];
  for (let i = 0; i < n; i++)
    ps.push(fnmesh.call("lim/pynap", 300).then((v) => "ok", (e) => e.code));
  return await Promise.all(ps);
}
"""

PY = r"""
import time

def pynap(ms):
    time.sleep(ms / 1000)
    return ms
"""

MANIFEST = {"functions": {"nap": {"max_concurrency": 1, "max_queue": 2},
                          "pynap": {"max_concurrency": 1, "max_queue": 1}}}


class LimitsTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node()
        cls.must_deploy(cls.node, "lim", {"index.js": JS, "work.py": PY,
                                          "fnmesh.json": json.dumps(MANIFEST)})

    def test_max_concurrency_runs_calls_one_at_a_time(self):
        t0 = time.monotonic()

        def one(i):
            # staggered: a call admitted before the one ahead of it has started
            # counts as waiting, and three at once would fill max_queue (2)
            time.sleep(0.05 * i)
            return self.node.call("lim", "nap", 250)

        res = parallel(one, range(3), threads=3)
        took = time.monotonic() - t0
        self.assertEqual(res, [(200, 250)] * 3)
        # one at a time: three naps of 250 ms in a row (unlimited, they overlap: ~250 ms)
        self.assertGreaterEqual(took, 0.7, "took %.3fs" % took)

    def test_full_queue_is_429_with_retry_after(self):
        first = threading.Thread(target=self.node.call, args=("lim", "nap", 600))
        first.start()
        time.sleep(0.15)  # it runs now: the one slot is taken
        try:
            res = parallel(lambda _: self.node.request(
                "POST", "/fn/lim/nap", b"[50]", {"Content-Type": "application/json"}),
                range(5), threads=5)
        finally:
            first.join()
        codes = sorted(st for st, _, _ in res)
        self.assertEqual(codes, [200, 200, 429, 429, 429], res)  # 2 may wait (max_queue)
        for st, h, body in res:
            if st == 429:
                self.assertEqual(h.get("retry-after"), "1")
                e = json.loads(body)["error"]
                self.assertEqual(e["code"], "overloaded")
                self.assertIn("max_queue 2", e["message"])
        st, _, text = self.node.request("GET", "/metrics")
        self.assertRegex(text.decode(), r'fnmesh_function_invocations_total\{deployment="lim",'
                         r'function="nap",runtime="js",version="[0-9a-f]{12}",'
                         r'outcome="rejected"\} [3-9]')
        st, body = self.node.get("/system/v1/stats?deployment=lim")
        nap = [f for f in body["functions"] if f["function"] == "nap"][0]
        self.assertGreaterEqual(nap["1m"]["rejected"], 3)

    def test_rpc_overloaded(self):
        first = threading.Thread(target=self.node.call, args=("lim", "nap", 500))
        first.start()
        time.sleep(0.15)
        try:
            batch = [{"jsonrpc": "2.0", "method": "lim.nap", "params": [10], "id": i}
                     for i in range(4)]
            st, _, body = self.node.rpc(batch)
        finally:
            first.join()
        self.assertEqual(st, 200)
        errors = [r for r in body if "error" in r]
        self.assertEqual(len(errors), 2, body)  # two fit in the queue
        for r in errors:
            self.assertEqual(r["error"]["code"], -32002)
        self.assertEqual(sorted(r["result"] for r in body if "result" in r), [10, 10])

    def test_calls_between_functions_are_limited_too(self):
        # five calls at once to a Python function with one slot and a queue of one:
        # the first is admitted (it waits for the worker), the other four are refused
        st, body = self.node.call("lim", "fanout", 5)
        self.assertEqual(st, 200, body)
        self.assertEqual(sorted(body), ["ok", "overloaded", "overloaded", "overloaded",
                                        "overloaded"])
        self.assertEqual(self.node.call("lim", "pynap", 1), (200, 1))  # and it serves again


class ManifestLimitsTest(FnTestCase):
    def test_bad_values_refuse_the_deploy(self):
        node = self.start_node()
        src = {"index.js": "export const f = () => 1;"}
        for manifest, word in (({"max_concurrency": 0}, "max_concurrency"),
                               ({"max_queue": 0}, "max_queue"),
                               ({"functions": {"f": {"max_queue": "10"}}}, "functions.f.max_queue"),
                               ({"functions": {"f": {"max_concurrency": 10**9}}},
                                "max_concurrency")):
            st, body = node.deploy("bad", dict(src, **{"fnmesh.json": json.dumps(manifest)}))
            self.assertError(st, body, 400, "invalid_bundle", [word])
        # a deployment-wide limit applies to every function without its own
        st, body = node.deploy("ok", dict(src, **{"fnmesh.json": json.dumps(
            {"max_concurrency": 4, "max_queue": 10})}))
        self.assertIn(st, (200, 201), body)
        self.assertEqual(node.call("ok", "f"), (200, 1))


if __name__ == "__main__":
    main()
