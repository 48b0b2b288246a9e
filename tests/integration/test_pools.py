"""Worker pools scale with load and give processes back when idle: a
Python function called concurrently gets more worker processes; after the
idle window (`--idle-window`) each pool is back to its one warm worker,
which still answers at once; a bad --idle-window is refused."""
import subprocess
import threading
import time

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
        self.assertEqual(len(workers), int(warm), ps)
        self.assertFalse([line for line in workers if line.split()[1].startswith("Z")], ps)

    def test_bad_idle_window_is_refused(self):
        for bad in ("0s", "50ms", "soon", "10"):
            p = subprocess.run([BIN, "serve", "--idle-window", bad], capture_output=True,
                               text=True, timeout=10)
            self.assertEqual(p.returncode, 2, bad)
            self.assertIn("--idle-window", p.stderr)


if __name__ == "__main__":
    main()
