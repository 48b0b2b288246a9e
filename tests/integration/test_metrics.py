"""GET /metrics: the Prometheus text exposition, checked by promtool (Debian's
prometheus package), with per-function invocations by outcome, duration
histograms, cold starts, and HTTP responses by status code."""
import re
import shutil
import subprocess
import threading
import time
import unittest

import fmtest
from fmtest import BIN, FnTestCase, main

SRC = r"""
export const ok = (x) => x;
export async function slow(ms) { await new Promise((r) => setTimeout(r, ms)); return ms; }
export function busy(ms) { const end = Date.now() + ms; while (Date.now() < end) {} return ms; }
export function bad() { throw new Error("bad"); }
export function spin() { for (;;) {} }
"""


PY = r"""
import os

def pid():
    return os.getpid()

def die():
    os._exit(3)
"""


def parse(text):
    """{(name, frozenset(labels)): value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        assert m, "not a sample line: %r" % line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def sample(samples, name, **labels):
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and want <= set(ls)]
    assert len(found) == 1, "%s %s: %d samples" % (name, labels, len(found))
    return found[0]


class MetricsTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node()
        cls.must_deploy(cls.node, "w", {"work.py": PY})
        cls.must_deploy(cls.node, "m", {"index.js": SRC,
                                        "fnmesh.json": '{"functions": {"spin": {"timeout_ms": 200}}}'})

    def scrape(self):
        st, h, body = self.node.request("GET", "/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/plain; version=0.0.4"), h)
        return body.decode()

    def test_promtool_accepts_the_exposition(self):
        self.node.call("m", "ok", 1)
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool (Debian package prometheus) is required")
        p = subprocess.run([promtool, "check", "metrics"], input=self.scrape().encode(),
                           capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout.decode() + p.stderr.decode())

    def test_invocations_by_outcome_and_histogram(self):
        before = parse(self.scrape())
        fn = lambda f: {"deployment": "m", "function": f}

        def count(samples, f, outcome):
            return sample(samples, "fnmesh_function_invocations_total", outcome=outcome, **fn(f))

        for i in range(5):
            self.assertEqual(self.node.call("m", "ok", i), (200, i))
        for _ in range(2):
            self.assertEqual(self.node.call("m", "bad")[0], 500)
        self.assertEqual(self.node.call("m", "spin")[0], 504)
        after = parse(self.scrape())
        self.assertEqual(count(after, "ok", "ok") - count(before, "ok", "ok"), 5)
        self.assertEqual(count(after, "bad", "error") - count(before, "bad", "error"), 2)
        self.assertEqual(count(after, "spin", "timeout") - count(before, "spin", "timeout"), 1)
        self.assertEqual(count(after, "ok", "error"), 0)
        # histogram: buckets are cumulative, +Inf == count, sum of the spin >= 0.2 s
        h = "fnmesh_function_duration_seconds"
        n = sample(after, h + "_count", **fn("ok"))
        self.assertEqual(sample(after, h + "_bucket", le="+Inf", **fn("ok")), n)
        self.assertGreaterEqual(n, 5)
        buckets = sorted(((float(dict(ls)["le"]) if dict(ls)["le"] != "+Inf" else float("inf")), v)
                         for (name, ls), v in after.items()
                         if name == h + "_bucket" and ("function", "ok") in ls)
        values = [v for _, v in buckets]
        self.assertEqual(values, sorted(values), "buckets must be cumulative")
        self.assertGreaterEqual(sample(after, h + "_sum", **fn("spin")), 0.19)
        self.assertEqual(sample(after, "fnmesh_function_invocations_total", outcome="ok",
                                runtime="js", **fn("ok")), count(after, "ok", "ok"))

    def test_http_responses_and_node_gauges(self):
        before = parse(self.scrape())
        self.node.call("m", "ok", 1)
        self.node.request("GET", "/fn/m/nope")
        self.node.request("GET", "/fn/m/nope")
        after = parse(self.scrape())
        code = lambda s, c: sample(s, "fnmesh_http_responses_total", code=c)
        self.assertEqual(code(after, "404") - code(before, "404"), 2)
        self.assertGreaterEqual(code(after, "200") - code(before, "200"), 2)  # the call + a scrape
        self.assertEqual(sample(after, "fnmesh_deployments"), 2)
        self.assertGreaterEqual(sample(after, "fnmesh_executor_threads"), 1)
        self.assertEqual(sample(after, "fnmesh_build_info", version=self.node_version()), 1)

    def test_usage_gauges_and_workers(self):
        fn = lambda f: {"deployment": "m", "function": f}
        self.assertEqual(self.node.call("m", "busy", 150), (200, 150))
        # a slow call in flight shows in the gauges while it runs
        t = threading.Thread(target=self.node.call, args=("m", "slow", 800))
        t.start()
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                during = parse(self.scrape())
                # submitted, then started: in flight and no longer queued
                if sample(during, "fnmesh_function_inflight", **fn("slow")) == 1 and \
                        sample(during, "fnmesh_function_queued", **fn("slow")) == 0:
                    break
                time.sleep(0.05)
            self.assertEqual(sample(during, "fnmesh_function_inflight", **fn("slow")), 1)
            self.assertEqual(sample(during, "fnmesh_function_queued", **fn("slow")), 0)
        finally:
            t.join()
        conn = self.node.connection()
        self.node.request("GET", "/healthz", conn=conn)  # keep-alive: stays open
        self.assertEqual(self.node.call("w", "pid")[0], 200)
        after = parse(self.scrape())
        conn.close()
        self.assertEqual(sample(after, "fnmesh_function_inflight", **fn("slow")), 0)
        cpu = sample(after, "fnmesh_function_cpu_seconds_total", **fn("busy"))
        self.assertGreater(cpu, 0.08)
        self.assertLess(cpu, 0.6)
        self.assertLess(sample(after, "fnmesh_function_cpu_seconds_total", **fn("slow")), 0.05)
        self.assertGreaterEqual(sample(after, "fnmesh_function_instances", **fn("busy")), 1)
        self.assertGreaterEqual(sample(after, "fnmesh_http_connections"), 2)
        self.assertGreaterEqual(sample(after, "fnmesh_http_connections_total"),
                                sample(after, "fnmesh_http_connections"))
        self.assertEqual(sample(after, "fnmesh_executor_stuck"), 0)
        wlabels = {"deployment": "w", "function": "pid"}
        self.assertGreater(sample(after, "fnmesh_function_peak_memory_bytes", **wlabels), 1 << 20)
        live = sample(after, "fnmesh_worker_processes", runtime="python")
        self.assertGreaterEqual(live, 1)
        deaths = sample(after, "fnmesh_worker_deaths_total", runtime="python")
        starts = sample(after, "fnmesh_worker_starts_total", runtime="python")
        self.assertEqual(self.node.call("w", "die")[0], 500)  # os._exit in the worker
        self.assertEqual(self.node.call("w", "pid")[0], 200)  # a new worker takes over
        later = parse(self.scrape())
        self.assertEqual(sample(later, "fnmesh_worker_deaths_total", runtime="python"), deaths + 1)
        # workers are replaced when needed: never more live than started
        self.assertGreaterEqual(sample(later, "fnmesh_worker_starts_total", runtime="python"), starts)
        self.assertLessEqual(sample(later, "fnmesh_worker_processes", runtime="python"),
                             sample(later, "fnmesh_worker_starts_total", runtime="python"))

    @unittest.skipIf(fmtest.ISOLATION == "process",
                     "under process isolation the call computes in a worker, not on the thread")
    def test_queued_gauge_counts_calls_waiting_for_the_executor(self):
        node = self.start_node(extra_args=["--threads", "1"])
        self.assertIn(node.deploy("q", {"index.js": SRC})[0], (200, 201))
        busy = threading.Thread(target=node.call, args=("q", "busy", 1500))
        busy.start()
        time.sleep(0.3)  # the one executor thread is now in the busy loop
        # another call of the same function waits for that thread (calls of
        # other functions would go to the reserve thread)
        waiting = threading.Thread(target=node.call, args=("q", "busy", 1))
        waiting.start()
        try:
            deadline = time.monotonic() + 1
            queued = 0
            while time.monotonic() < deadline and queued < 1:
                st, _, body = node.request("GET", "/metrics")
                queued = sample(parse(body.decode()), "fnmesh_function_queued",
                                deployment="q", function="busy")
                time.sleep(0.02)
            self.assertEqual(queued, 1)
        finally:
            busy.join()
            waiting.join()
        st, _, body = node.request("GET", "/metrics")
        self.assertEqual(sample(parse(body.decode()), "fnmesh_function_queued",
                                deployment="q", function="busy"), 0)

    def node_version(self):
        p = subprocess.run([BIN, "--version"], capture_output=True, text=True)
        return p.stdout.split()[-1]


if __name__ == "__main__":
    main()
