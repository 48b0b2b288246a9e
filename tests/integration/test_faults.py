"""Fault containment: a function whose worker processes crash on every call
gets its workers replaced with backoff (fast 503 `unavailable` while
restarts are held back), its calls fail alone, and another function's p99
stays within 2x of its unloaded value; the same while a function is
overloaded (429s). Replacement workers start without blocking the
executor thread."""
import json
import os
import subprocess
import time

from fmtest import FnTestCase, latencies, main, p99
from test_metrics import parse, sample

STEADY = r"""
export const ping = () => "pong";
"""

CRASHY = r"""
import os

def boom():
    os._exit(3)

def fine():
    return 1
"""

OVER = r"""
export async function nap(ms) { await new Promise((r) => setTimeout(r, ms)); return ms; }
"""


LOADGEN = r"""
import http.client, json, sys, threading, time
port, path, body = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
rate, seconds, threads = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
seen, lock, stop = {}, threading.Lock(), time.monotonic() + seconds

def loop():
    conn, gap, due = None, threads / rate, time.monotonic()
    while time.monotonic() < stop:
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            code = None if r.status == 200 else json.loads(data)["error"]["code"]
            key = "%d %s" % (r.status, code)
        except Exception as e:  # noqa: BLE001 - counted, and the test fails on it
            key = "exception " + type(e).__name__
            conn.close()
            conn = None
        with lock:
            seen[key] = seen.get(key, 0) + 1
        due += gap
        if due > time.monotonic():
            time.sleep(due - time.monotonic())

ts = [threading.Thread(target=loop) for _ in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print(json.dumps(seen))
"""


class FaultsTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node(extra_args=["--threads", "2"])
        cls.must_deploy(cls.node, "steady", {"index.js": STEADY})
        cls.must_deploy(cls.node, "crashy", {"index.py": CRASHY})
        cls.must_deploy(cls.node, "over", {
            "index.js": OVER,
            "fnmesh.json": '{"functions": {"nap": {"max_concurrency": 1, "max_queue": 2}}}'})

    def latencies(self, n):
        return latencies(self, self.node, "steady", "ping", n, "pong")

    def loaded_p99(self):
        """p99 of 1000 calls under the load, the better of two windows: a
        neighbour on the shared VM can spoil one window, a node that holds
        the function up spoils both."""
        return min(p99(self.latencies(1000)), p99(self.latencies(1000)))

    def limit(self, base):
        # 2x the unloaded p99; below 1 ms the scheduler of a shared VM is the
        # noise, so the unloaded figure counts as at least 1 ms. Sanitizer
        # builds start each worker process in hundreds of ms of CPU (shadow
        # memory), which competes for the 2 cores: there the latency is not
        # compared, only the behaviour.
        if os.environ.get("ASAN_OPTIONS"):
            return float("inf")
        return 2 * max(base, 1.0)

    def hammer(self, dep, fn, args, seconds, threads, rate):
        """Calls dep/fn from another process (so its clients do not share
        this one's interpreter lock with the measurement): `threads`
        connections, `rate` calls per second in all, for `seconds`. Returns
        the process; finish() reads its {"status code": count}."""
        return subprocess.Popen(
            ["/usr/bin/python3", "-c", LOADGEN, str(self.node.port), "/fn/%s/%s" % (dep, fn),
             json.dumps(args), str(rate), str(seconds), str(threads)],
            stdout=subprocess.PIPE, text=True)

    @staticmethod
    def finish(proc):
        out, _ = proc.communicate(timeout=60)
        return json.loads(out)

    def worker_starts(self):
        st, _, body = self.node.request("GET", "/metrics")
        return sample(parse(body.decode()), "fnmesh_worker_starts_total", runtime="python")

    def test_crash_loop_is_contained(self):
        self.latencies(50)
        base = p99(self.latencies(1000))
        starts0 = self.worker_starts()
        proc = self.hammer("crashy", "boom", [], 3.5, 2, 50)
        time.sleep(0.3)
        loaded = self.loaded_p99()
        seen = self.finish(proc)
        starts = self.worker_starts() - starts0
        self.assertLess(loaded, self.limit(base),
                        "steady p99 %.2f ms during the crash loop, %.2f ms before" % (loaded, base))
        self.assertTrue(set(seen) <= {"500 function_error", "503 unavailable"}, seen)
        self.assertIn("503 unavailable", seen, "restarts were not held back")
        # backoff: few worker starts, whatever the number of calls
        crashes = seen.get("500 function_error", 0)
        self.assertGreater(crashes, 0, seen)
        self.assertLessEqual(crashes, 15, "backoff should bound restarts over 3.5 s: %r" % seen)
        self.assertLessEqual(starts, crashes + 2)  # + a second worker for the load
        # the deployment's healthy function works again once the backoff ends
        deadline = time.monotonic() + 10
        st = None
        while time.monotonic() < deadline:
            st, body = self.node.call("crashy", "fine")
            if st == 200:
                break
            self.assertEqual((st, body["error"]["code"]), (503, "unavailable"))
            time.sleep(0.2)
        self.assertEqual(st, 200)

    def test_unavailable_answer_has_retry_after(self):
        # crash again and again: calls wait out short restart delays, and
        # fail at once when the next restart is more than a second away
        for _ in range(20):
            st, h, body = self.node.req_json("POST", "/fn/crashy/boom", [])
            if st == 503:
                break
        self.assertEqual(st, 503, body)
        self.assertEqual(body["error"]["code"], "unavailable")
        self.assertIn("keep failing", body["error"]["message"])
        self.assertEqual(h.get("retry-after"), "1")

    def test_overload_is_contained(self):
        self.latencies(50)
        base = p99(self.latencies(1000))
        proc = self.hammer("over", "nap", [50], 3.5, 4, 200)  # 10x what nap can serve
        time.sleep(0.3)
        loaded = self.loaded_p99()
        seen = self.finish(proc)
        self.assertLess(loaded, self.limit(base),
                        "steady p99 %.2f ms while over/nap is overloaded, %.2f ms before"
                        % (loaded, base))
        self.assertTrue(set(seen) <= {"200 None", "429 overloaded"}, seen)
        self.assertGreater(seen.get("429 overloaded", 0), seen.get("200 None", 0), seen)
        self.assertGreater(seen.get("200 None", 0), 0, seen)


if __name__ == "__main__":
    main()
