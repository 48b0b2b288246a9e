"""GET /system/v1/stats (latency percentiles over sliding 1 and 5 minute
windows, calls per second, errors, CPU) and `fnmesh top`, its terminal view:
batch output, sorting, --json, usage errors, and the interactive keys on a
real pseudo-terminal."""
import json
import os
import pty
import select
import signal
import subprocess
import time

from fmtest import BIN, FnTestCase, main, parallel, run_cli

SRC = r"""
export async function sleepy(ms) {
  await new Promise((r) => setTimeout(r, ms));
  return ms;
}
export const fast = (x) => x;
export function bad() { throw new Error("bad"); }
export function spin(ms) { const end = Date.now() + ms; while (Date.now() < end) {} return ms; }
"""

LUA = r"""
return { twice = function(x) return x * 2 end }
"""


class StatsTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node()
        cls.must_deploy(cls.node, "st", {"index.js": SRC, "more.lua": LUA})
        # 40 calls of 20 ms and 10 of 100 ms: p50 ~ 20 ms, p90 ~ 100 ms
        items = [20] * 40 + [100] * 10
        res = parallel(lambda ms: cls.node.call("st", "sleepy", ms), items, threads=10)
        assert all(r == (200, ms) for r, ms in zip(res, items)), res
        for i in range(30):
            assert cls.node.call("st", "fast", i) == (200, i)
        for _ in range(3):
            assert cls.node.call("st", "bad")[0] == 500
        assert cls.node.call("st", "twice", 21) == (200, 42)
        assert cls.node.call("st", "spin", 200) == (200, 200)

    def stats(self, query=""):
        st, body = self.node.get("/system/v1/stats" + query)
        self.assertEqual(st, 200, body)
        return body

    def fn(self, body, name):
        found = [f for f in body["functions"] if f["deployment"] == "st" and f["function"] == name]
        self.assertEqual(len(found), 1, body)
        return found[0]

    def test_percentiles_follow_the_real_latencies(self):
        f = self.fn(self.stats(), "sleepy")
        self.assertEqual(f["runtime"], "js")
        self.assertTrue(f["active"])
        self.assertRegex(f["version"], r"^[0-9a-f]{12}$")
        for key in ("1m", "5m"):
            w = f[key]
            self.assertEqual(w["calls"], 50, w)
            self.assertEqual(w["errors"], 0)
            # histogram buckets are within 6.25 %; timers add a little on top
            self.assertGreaterEqual(w["p50_us"], 18000, w)
            self.assertLess(w["p50_us"], 35000, w)
            self.assertGreaterEqual(w["p99_us"], 93000, w)
            self.assertLess(w["p99_us"], 160000, w)
            self.assertGreaterEqual(w["max_us"], 100000, w)
            self.assertLessEqual(w["p50_us"], w["p90_us"])
            self.assertLessEqual(w["p90_us"], w["p99_us"])
            self.assertLessEqual(w["p99_us"], w["p999_us"])
            self.assertLessEqual(w["p999_us"], w["max_us"] * 1.07)
            self.assertGreater(w["rps"], 0)
        fast = self.fn(self.stats(), "fast")["1m"]
        self.assertEqual(fast["calls"], 30)
        self.assertLess(fast["p99_us"], 20000, fast)

    def test_errors_cpu_and_other_runtimes(self):
        body = self.stats()
        bad = self.fn(body, "bad")["1m"]
        self.assertEqual((bad["calls"], bad["errors"]), (3, 3))
        self.assertEqual(self.fn(body, "twice")["runtime"], "lua")
        spin = self.fn(body, "spin")["1m"]
        # a 200 ms busy loop on an executor thread is ~200 ms of CPU
        self.assertGreater(spin["cpu_us"], 120000, spin)
        self.assertLess(spin["cpu_us"], 400000, spin)
        sleepy = self.fn(body, "sleepy")["1m"]
        # waiting on a timer costs (almost) no CPU
        self.assertLess(sleepy["cpu_us"], 50 * 5000, sleepy)
        self.assertGreaterEqual(body["node"]["executor_threads"], 1)
        self.assertTrue(body["node"]["telemetry"])

    def test_window_and_deployment_filters(self):
        only1 = self.stats("?window=1m&deployment=st")
        self.assertTrue(only1["functions"])
        for f in only1["functions"]:
            self.assertEqual(f["deployment"], "st")
            self.assertIn("1m", f)
            self.assertNotIn("5m", f)
        self.assertEqual(self.stats("?deployment=nosuch")["functions"], [])
        st, body = self.node.get("/system/v1/stats?window=7m")
        self.assertError(st, body, 400, "bad_request", ["window"])
        st, body = self.node.get("/system/v1/stats", token=None)
        self.assertEqual(st, 401)
        st, _, _ = self.node.request("POST", "/system/v1/stats", b"{}")
        self.assertEqual(st, 405)

    def test_redeploy_keeps_the_window(self):
        node = self.start_node()
        self.assertIn(node.deploy("re", {"index.js": "export const f = () => 1;"})[0], (200, 201))
        for _ in range(4):
            node.call("re", "f")
        self.assertIn(node.deploy("re", {"index.js": "export const f = () => 2;"})[0], (200, 201))
        node.call("re", "f")
        st, body = node.get("/system/v1/stats")
        f = [x for x in body["functions"] if x["function"] == "f"]
        self.assertEqual(len(f), 1, body)
        self.assertEqual(f[0]["1m"]["calls"], 5)
        self.assertEqual(f[0]["total"]["invocations"], 5)

    # ---- fnmesh top

    def top(self, *args, **kw):
        return run_cli("top", "--url", self.node.url, "--token", self.node.token, *args, **kw)

    def rows(self, out):
        lines = out.splitlines()
        head = next(i for i, l in enumerate(lines) if l.startswith("FUNCTION"))
        return [l.split()[0] for l in lines[head + 1:] if l.strip() and not l.startswith("(")]

    def test_top_batch_sorted(self):
        p = self.top("--sort", "p99")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("window 1m, sorted by p99", p.stdout)
        names = self.rows(p.stdout)
        self.assertEqual(names[0], "st/spin", p.stdout)  # slowest first
        self.assertLess(names.index("st/sleepy"), names.index("st/fast"), p.stdout)
        p = self.top("--sort", "errors", "--window", "5m")
        self.assertEqual(self.rows(p.stdout)[0], "st/bad", p.stdout)
        line = next(l for l in p.stdout.splitlines() if l.startswith("st/bad"))
        self.assertIn("100.0", line)  # ERR%
        p = self.top("--sort", "cpu")
        self.assertEqual(self.rows(p.stdout)[0], "st/spin", p.stdout)
        p = self.top("--iterations", "2", "--interval", "0.2")
        self.assertEqual(p.stdout.count("FUNCTION"), 2)

    def test_top_json_and_errors(self):
        p = self.top("--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        body = json.loads(p.stdout)
        self.assertIn("functions", body)
        p = self.top("--sort", "name")
        self.assertEqual(p.returncode, 2)
        self.assertIn("--sort", p.stderr)
        p = self.top("--interval", "0")
        self.assertEqual(p.returncode, 2)
        p = run_cli("top", "--url", self.node.url, "--token", "wrong")
        self.assertEqual(p.returncode, 1)
        p = run_cli("top", "--url", "http://127.0.0.1:1", "--token", "x", "--timeout", "2")
        self.assertEqual(p.returncode, 1)
        self.assertIn("cannot reach", p.stderr)

    def test_top_interactive_keys(self):
        env = dict(os.environ, FNMESH_TOKEN=self.node.token, FNMESH_URL=self.node.url)
        for k in ("FNMESH_ADMIN_TOKEN",):
            env.pop(k, None)
        pid, fd = pty.fork()
        if pid == 0:
            os.execve(BIN, [BIN, "top", "--interval", "0.2"], env)
        try:
            screen = self.read_until(fd, b"sorted by rps")
            self.assertIn(b"\x1b[2J", screen)  # clears the screen
            self.assertIn(b"keys:", screen)
            os.write(fd, b"p")
            self.read_until(fd, b"sorted by p99")
            os.write(fd, b"w")
            self.read_until(fd, b"window 5m")
            os.write(fd, b"q")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    self.assertEqual(os.waitstatus_to_exitcode(status), 0)
                    pid = 0
                    break
                self.drain(fd)
                time.sleep(0.05)
            self.assertEqual(pid, 0, "fnmesh top did not quit on 'q'")
        finally:
            if pid:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            os.close(fd)

    def drain(self, fd):
        out = b""
        while select.select([fd], [], [], 0)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        return out

    def read_until(self, fd, marker, timeout=10):
        buf = b""
        deadline = time.monotonic() + timeout
        while marker not in buf:
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, "no %r on the terminal; got %r" % (marker, buf[-2000:]))
            if select.select([fd], [], [], left)[0]:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                buf += chunk
        self.assertIn(marker, buf)
        return buf


class ColdStartTest(FnTestCase):
    def test_cold_starts_are_counted_and_timed(self):
        """A Python pool that grows under load starts workers: those calls are
        cold starts, with the time they waited for their worker."""
        node = self.start_node(extra_args=["--threads", "1"])
        py = "import time\n\ndef nap(ms):\n    time.sleep(ms / 1000)\n    return ms\n"
        self.assertIn(node.deploy("cold", {"p.py": py})[0], (200, 201))
        st, body = node.get("/system/v1/deployments/cold")
        self.assertEqual(st, 200)
        fn = body["functions"][0]
        self.assertEqual(fn["cold_starts"], {"count": 0, "last_ms": None, "mean_ms": None,
                                             "max_ms": None})
        # more calls at once than the warm worker: the pool starts more workers
        res = parallel(lambda _: node.call("cold", "nap", 300), range(3), threads=3)
        self.assertEqual(res, [(200, 300)] * 3)
        st, body = node.get("/system/v1/deployments/cold")
        cs = body["functions"][0]["cold_starts"]
        self.assertGreaterEqual(cs["count"], 1, cs)
        # timed: even a worker started ahead takes a moment to load the deployment
        self.assertGreater(cs["max_ms"], 0.05, cs)
        self.assertLess(cs["max_ms"], 10000, cs)
        self.assertLessEqual(cs["mean_ms"], cs["max_ms"])
        st, stats = node.get("/system/v1/stats?deployment=cold")
        self.assertEqual(stats["functions"][0]["cold_starts"]["count"], cs["count"])
        # warm calls are not cold starts
        self.assertEqual(node.call("cold", "nap", 1), (200, 1))
        st, body = node.get("/system/v1/deployments/cold")
        self.assertEqual(body["functions"][0]["cold_starts"]["count"], cs["count"])


class TelemetryOffTest(FnTestCase):
    def test_off_records_nothing_per_call(self):
        node = self.start_node(extra_args=["--telemetry", "off"])
        self.assertIn(node.deploy("q", {"index.js": "export const f = (x) => x;"})[0], (200, 201))
        for i in range(5):
            self.assertEqual(node.call("q", "f", i), (200, i))
        st, body = node.get("/system/v1/stats")
        self.assertEqual(st, 200)
        self.assertFalse(body["node"]["telemetry"])
        self.assertEqual(body["functions"], [])
        st, _, text = node.request("GET", "/metrics")
        self.assertIn(b'fnmesh_function_invocations_total{deployment="q",function="f",'
                      b'runtime="js",version="', text)
        self.assertNotIn(b'outcome="ok"} 5', text)
        p = subprocess.run([BIN, "serve", "--telemetry", "maybe"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--telemetry", p.stderr)


if __name__ == "__main__":
    main()
