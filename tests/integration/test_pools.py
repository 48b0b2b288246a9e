"""Pools scale with load and give memory back when idle: a Python function
called concurrently gets more worker processes, and after the idle window
(`--idle-window`) each pool is back to its one warm worker, which still
answers at once; in-process instances (JavaScript, Lua) beyond a
deployment's warm one are destroyed when idle and made again (a cold start)
on the next call there; a bad --idle-window is refused."""
import json
import subprocess
import threading
import time

import fmtest
from fmtest import BIN, FnTestCase, main
from test_metrics import parse, sample

PY = r"""
import time

def nap(ms):
    time.sleep(ms / 1000)
    return ms
"""


class PoolsTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node(extra_args=["--threads", "1", "--idle-window", "1s"])
        cls.must_deploy(cls.node, "pool", {"index.py": PY})

    def processes(self):
        st, _, body = self.node.request("GET", "/metrics")
        self.assertEqual(st, 200)
        return sample(parse(body.decode()), "fnmesh_worker_processes", runtime="python")

    def test_pool_grows_under_load_and_shrinks_when_idle(self):
        warm = self.processes()
        self.assertGreaterEqual(warm, 1)
        results = []
        peak = [warm]

        def one():
            results.append(self.node.call("pool", "nap", 400))

        ts = [threading.Thread(target=one) for _ in range(6)]
        for t in ts:
            t.start()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and any(t.is_alive() for t in ts):
            peak.append(self.processes())
            time.sleep(0.05)
        for t in ts:
            t.join()
        self.assertEqual(results, [(200, 400)] * 6)
        self.assertGreater(max(peak), warm, "the pool did not grow under load")
        # idle for more than the window: back to the warm worker(s)
        deadline = time.monotonic() + 5
        now = max(peak)
        while time.monotonic() < deadline and now > warm:
            time.sleep(0.1)
            now = self.processes()
        self.assertEqual(now, warm, "the pool kept its extra workers after the idle window")
        # the warm worker answers at once (no start-up)
        t0 = time.monotonic()
        self.assertEqual(self.node.call("pool", "nap", 0), (200, 0))
        self.assertLess(time.monotonic() - t0, 0.5)
        # the stopped workers are gone, not left behind as zombies or orphans
        time.sleep(0.3)
        ps = subprocess.run(["ps", "-o", "pid=,stat=,args=", "--ppid", str(self.node.proc.pid)],
                            capture_output=True, text=True).stdout
        workers = [line for line in ps.splitlines() if "worker-python" in line]
        # the warm worker(s), plus the one worker the node keeps started ahead
        # for the next cold start (not counted in fnmesh_worker_processes)
        self.assertEqual(len(workers), int(warm) + 1, ps)
        self.assertFalse([line for line in workers if line.split()[1].startswith("Z")], ps)

    def test_idle_instances_are_given_back_and_come_back(self):
        node = self.start_node(extra_args=["--threads", "2", "--idle-window", "1s"])
        st, _ = node.deploy("idle", {"index.js": "export const hi = () => 'hi';\n",
                                     "l.lua": "return { lhi = function() return 'lhi' end }"})
        self.assertIn(st, (200, 201))

        def instances(fn):
            st, _, body = node.request("GET", "/metrics")
            return sample(parse(body.decode()), "fnmesh_function_instances",
                          deployment="idle", function=fn)

        def cold(fn):
            st, body = node.get("/system/v1/deployments/idle")
            return [f for f in body["functions"] if f["name"] == fn][0]["cold_starts"]["count"]

        # warm on both executor threads after deploy (the second is warmed
        # in the background)
        deadline = time.monotonic() + 0.8
        while time.monotonic() < deadline and (instances("hi"), instances("lhi")) != (2, 2):
            time.sleep(0.02)
        self.assertEqual((instances("hi"), instances("lhi")), (2, 2))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (instances("hi") > 1 or instances("lhi") > 1):
            time.sleep(0.1)
        # idle past the window: one warm instance each is left
        self.assertEqual((instances("hi"), instances("lhi")), (1, 1))
        before = cold("hi") + cold("lhi")
        # calls on both threads again: the evicted instances come back
        for _ in range(10):
            self.assertEqual(node.call("idle", "hi"), (200, "hi"))
            self.assertEqual(node.call("idle", "lhi"), (200, "lhi"))
        res = [None] * 8

        def one(i):
            res[i] = node.call("idle", "hi")

        ts = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(res, [(200, "hi")] * 8)
        self.assertEqual(instances("hi"), 2)
        self.assertGreater(cold("hi") + cold("lhi"), before, "re-activation is a cold start")

    def test_max_instances_caps_instances_and_worker_processes(self):
        node = self.start_node(extra_args=["--threads", "2"])
        # JavaScript: every instance has its own globals, so a call tells
        # which instance ran it
        js = "const me = Math.random();\nexport async function who(ms) {\n" \
             "  await new Promise(r => setTimeout(r, ms)); return me; }\n"
        for cap, want in ((1, 1), (None, 2)):
            manifest = {"max_instances": cap} if cap else {}
            name = "capped" if cap else "free"
            st, body = node.deploy(name, {"index.js": js, "fnmesh.json": json.dumps(manifest)})
            self.assertIn(st, (200, 201), body)
            res = fmtest.parallel(lambda i: node.call(name, "who", 50), range(16), threads=16)
            self.assertEqual([r[0] for r in res], [200] * 16)
            self.assertEqual(len({r[1] for r in res}), want, (name, res))
            st, _, m = node.request("GET", "/metrics")
            self.assertEqual(sample(parse(m.decode()), "fnmesh_function_instances",
                                    deployment=name, function="who"), want)
        # Python: processes of the version, over both threads, at most 3
        st, body = node.deploy("pycap", {"index.py": PY,
                                         "fnmesh.json": json.dumps({"max_instances": 3})})
        self.assertIn(st, (200, 201), body)

        def procs():
            st, _, m = node.request("GET", "/metrics")
            return sample(parse(m.decode()), "fnmesh_worker_processes", runtime="python")

        peak = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                peak.append(procs())
                time.sleep(0.02)

        w = threading.Thread(target=watch)
        w.start()
        res = fmtest.parallel(lambda i: node.call("pycap", "nap", 300), range(6), threads=6)
        stop.set()
        w.join()
        self.assertEqual(res, [(200, 300)] * 6)
        self.assertLessEqual(max(peak), 3, peak)
        self.assertGreaterEqual(max(peak), 2, "the pool did not grow at all")
        # bad values are refused with the key named
        for bad in (0, 1025, "2"):
            st, body = node.deploy("bad", {"index.js": js,
                                           "fnmesh.json": json.dumps({"max_instances": bad})})
            self.assertError(st, body, 400, "invalid_bundle", "max_instances")

    def test_memory_budget_evicts_least_recently_used_instances(self):
        # JS instances count 256 KiB each: a 2 MiB budget holds 8 of them
        node = self.start_node(extra_args=["--threads", "1", "--memory-budget", "2MB"])

        def metric(name, **labels):
            st, _, m = node.request("GET", "/metrics")
            return sample(parse(m.decode()), name, **labels)

        def cold(dep):
            st, body = node.get("/system/v1/deployments/" + dep)
            return body["functions"][0]["cold_starts"]["count"]

        self.assertEqual(metric("fnmesh_memory_budget_bytes"), 2 << 20)
        for i in range(20):
            st, body = node.deploy("d%d" % i, {"index.js": "export const n = () => %d;\n" % i})
            self.assertIn(st, (200, 201), body)
            self.assertEqual(node.call("d%d" % i, "n"), (200, i))
        used = metric("fnmesh_instance_memory_bytes")
        self.assertLessEqual(used, 2 << 20)
        self.assertGreaterEqual(used, 1 << 20)
        live = sum(metric("fnmesh_function_instances", deployment="d%d" % i, function="n")
                   for i in range(20))
        self.assertEqual(live * (256 << 10), used)
        self.assertGreaterEqual(metric("fnmesh_instance_evictions_total"), 12)
        # the most recent ones are still warm, the oldest were evicted and
        # come back on their next call (a cold start)
        self.assertEqual(metric("fnmesh_function_instances", deployment="d19", function="n"), 1)
        self.assertEqual(metric("fnmesh_function_instances", deployment="d0", function="n"), 0)
        before = cold("d0")
        self.assertEqual(node.call("d0", "n"), (200, 0))
        self.assertEqual(cold("d0"), before + 1)
        self.assertLessEqual(metric("fnmesh_instance_memory_bytes"), 2 << 20)
        for bad in ("lots", "512KB", "0"):
            p = subprocess.run([BIN, "serve", "--memory-budget", bad], capture_output=True,
                               text=True, timeout=10)
            self.assertEqual(p.returncode, 2, bad)
            self.assertIn("--memory-budget", p.stderr)

    def test_bad_idle_window_is_refused(self):
        for bad in ("0s", "50ms", "soon", "10"):
            p = subprocess.run([BIN, "serve", "--idle-window", bad], capture_output=True,
                               text=True, timeout=10)
            self.assertEqual(p.returncode, 2, bad)
            self.assertIn("--idle-window", p.stderr)


if __name__ == "__main__":
    main()
