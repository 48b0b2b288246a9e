"""Consumption metering: GET /system/v1/usage with what each function used
(invocations, errors, wall time, CPU time, request/response bytes, peak
memory) in 1-minute buckets persisted in SQLite: the figures against calls
whose cost is known (busy loops vs sleeps in JS, Python and C, exact byte
counts, a Lua table of known size), grouping and time filters, bad
parameters, and the totals surviving a restart and kill -9."""
import json
import signal
import time

import fmtest
from fmtest import FnTestCase, main

JS = r"""
export function spin(ms) { const end = Date.now() + ms; while (Date.now() < end) {} return ms; }
export async function nap(ms) { await new Promise((r) => setTimeout(r, ms)); return ms; }
export const echo = (x) => x;
export function bad() { throw new Error("no"); }
"""

PY = r"""
import time

def pyspin(ms):
    end = time.monotonic() + ms / 1000
    n = 0
    while time.monotonic() < end:
        n += 1
    return ms

def pynap(ms):
    time.sleep(ms / 1000)
    return ms

def pyforever():
    while True:
        pass

def pybig(mb):
    block = bytearray(mb * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return len(block)
"""

LUA = r"""
return {
  luabig = function(n)
    local t = {}
    for i = 1, n do t[i] = i * 2 end
    return #t
  end,
}
"""

C = r"""
#define _POSIX_C_SOURCE 200809L
#include <fnmesh.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

FM_EXPORT(cforever) {
    volatile uint64_t n = 0;
    for (;;) n++;
    return NULL;
}

FM_EXPORT(cspin, "ms") {
    int64_t ms = fm_get_int(fm_arg(ctx, 0));
    double end = now_ms() + (double)ms;
    volatile uint64_t n = 0;
    while (now_ms() < end) n++;
    return fm_int64(ctx, ms);
}
"""


class UsageTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node()
        cls.must_deploy(cls.node, "use", {"index.js": JS, "work.py": PY, "big.lua": LUA,
                                          "spin.c": C, "fnmesh.json": json.dumps({"functions": {
                                              "cforever": {"timeout_ms": 400},
                                              "pyforever": {"timeout_ms": 400}}})})
        cls.must_deploy(cls.node, "other", {"index.js": "export const one = () => 1;"})

    def usage(self, query="", want=200):
        st, body = self.node.get("/system/v1/usage" + query)
        self.assertEqual(st, want, body)
        return body

    def row(self, body, fn, dep="use"):
        rows = [r for r in body["usage"] if r.get("deployment") == dep and r.get("function") == fn]
        self.assertEqual(len(rows), 1, body)
        return rows[0]

    def test_cpu_is_measured_not_wall_time(self):
        for fn, spin, nap in (("js", "spin", "nap"), ("py", "pyspin", "pynap")):
            self.assertEqual(self.node.call("use", spin, 300), (200, 300))
            self.assertEqual(self.node.call("use", nap, 300), (200, 300))
        self.assertEqual(self.node.call("use", "cspin", 300), (200, 300))
        body = self.usage("?deployment=use")
        for spin in ("spin", "pyspin", "cspin"):
            r = self.row(body, spin)
            self.assertGreaterEqual(r["wall_us"], 290000, r)  # Date.now() has ms steps
            # busy: CPU close to the wall time (the machine may be shared)
            self.assertGreater(r["cpu_us"], 150000, (spin, r))
            self.assertLess(r["cpu_us"], 600000, (spin, r))
        for nap in ("nap", "pynap"):
            r = self.row(body, nap)
            self.assertGreaterEqual(r["wall_us"], 290000, r)
            self.assertLess(r["cpu_us"], 60000, (nap, r))  # asleep: next to no CPU

    def test_calls_run_together_are_billed_their_own_cpu(self):
        """Calls that run in one pass (a JSON-RPC batch: under process isolation
        one worker answers them in one write, from one reading of its usage)
        each get the CPU of their own work: busy loops beside trivial calls do
        not bill the trivial ones."""
        node = self.start_node(extra_args=["--threads", "1"])
        # one instance (in-process) or one worker process: the batch's calls run together
        self.must_deploy(node, "mix", {"index.js": JS,
                                       "fnmesh.json": json.dumps({"max_instances": 1})})
        batch = []
        for i in range(4):
            batch.append({"jsonrpc": "2.0", "method": "mix.spin", "params": [60], "id": 2 * i})
            batch.append({"jsonrpc": "2.0", "method": "mix.echo", "params": [i], "id": 2 * i + 1})
        st, _, body = node.rpc(batch)
        self.assertEqual(st, 200, body)
        self.assertEqual(sorted(r["id"] for r in body if "result" in r), list(range(8)), body)
        st, usage = node.get("/system/v1/usage?deployment=mix")
        self.assertEqual(st, 200, usage)
        spin, echo = self.row(usage, "spin", "mix"), self.row(usage, "echo", "mix")
        self.assertEqual((spin["invocations"], echo["invocations"]), (4, 4))
        self.assertGreater(spin["cpu_us"], 4 * 30000, spin)  # ~4 x 60 ms of busy loop
        self.assertLess(echo["cpu_us"], spin["cpu_us"] / 10, (echo, spin))

    def test_cpu_of_calls_stopped_at_their_deadline(self):
        """A C worker killed at the deadline and a Python worker interrupted
        there never answer normally: their CPU comes from the process's own
        accounting."""
        for fn in ("cforever", "pyforever"):
            self.assertEqual(self.node.call("use", fn)[0], 504)
        body = self.usage("?deployment=use")
        for fn in ("cforever", "pyforever"):
            r = self.row(body, fn)
            self.assertEqual(r["errors"], r["invocations"])
            self.assertGreater(r["cpu_us"], 200000, (fn, r))  # it spun ~400 ms
            self.assertLess(r["cpu_us"], 3000000, (fn, r))
        self.assertEqual(self.node.call("use", "cspin", 10), (200, 10))  # a new worker serves

    def test_bytes_are_exact(self):
        before = self.usage("?deployment=use")
        base = [r for r in before["usage"] if r["function"] == "echo"]
        b0 = base[0] if base else {"req_bytes": 0, "resp_bytes": 0, "invocations": 0}
        body = json.dumps(["x" * 1000]).encode()
        st, _, data = self.node.request("POST", "/fn/use/echo", body,
                                        {"Content-Type": "application/json"})
        self.assertEqual(st, 200)
        st, _, data2 = self.node.request("GET", "/fn/use/echo?x=abc")
        self.assertEqual((st, data2), (200, b'"abc"'))
        r = self.row(self.usage("?deployment=use"), "echo")
        self.assertEqual(r["invocations"] - b0["invocations"], 2)
        self.assertEqual(r["req_bytes"] - b0["req_bytes"], len(body) + len("x=abc"))
        self.assertEqual(r["resp_bytes"] - b0["resp_bytes"], len(data) + len(data2))

    def test_errors_memory_and_grouping(self):
        for _ in range(2):
            self.assertEqual(self.node.call("use", "bad")[0], 500)
        self.assertEqual(self.node.call("use", "luabig", 200000), (200, 200000))
        self.assertEqual(self.node.call("use", "pybig", 40), (200, 40 * 1024 * 1024))
        self.assertEqual(self.node.call("other", "one"), (200, 1))
        body = self.usage()
        bad = self.row(body, "bad")
        self.assertGreaterEqual(bad["errors"], 2)
        self.assertEqual(bad["errors"], bad["invocations"])
        # a Lua array of 200,000 numbers is at least 1.6 MB of heap
        self.assertGreater(self.row(body, "luabig")["peak_memory_bytes"], 1600000)
        # the Python worker held a 40 MiB buffer
        self.assertGreater(self.row(body, "pybig")["peak_memory_bytes"], 40 * 1024 * 1024)
        # JavaScript in-process: unmeasured; under process isolation its worker's peak RSS
        self.node.call("use", "echo", "x")
        body = self.usage()
        if fmtest.ISOLATION == "process":
            self.assertGreater(self.row(body, "echo", "use")["peak_memory_bytes"], 1 << 20)
        else:
            self.assertEqual(self.row(body, "echo", "use")["peak_memory_bytes"], 0)
        self.assertEqual(body["group_by"], "function")
        self.assertEqual(body["bucket_seconds"], 60)
        total = body["total"]
        self.assertEqual(total["invocations"], sum(r["invocations"] for r in body["usage"]))
        self.assertEqual(total["peak_memory_bytes"],
                         max(r["peak_memory_bytes"] for r in body["usage"]))

        deps = self.usage("?group_by=deployment")["usage"]
        self.assertEqual([d["deployment"] for d in deps], ["other", "use"])
        self.assertNotIn("function", deps[0])
        use_total = sum(r["invocations"] for r in body["usage"] if r["deployment"] == "use")
        self.assertEqual(deps[1]["invocations"], use_total)

        minutes = self.usage("?group_by=minute")["usage"]
        self.assertTrue(minutes)
        self.assertRegex(minutes[-1]["minute"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:00Z$")
        self.assertEqual(sum(m["invocations"] for m in minutes), total["invocations"])

    def test_time_filters_and_bad_parameters(self):
        self.node.call("other", "one")
        self.assertTrue(self.usage("?from=10m")["usage"])
        self.assertTrue(self.usage("?from=1h&to=%d" % (time.time() + 120))["usage"])
        self.assertEqual(self.usage("?to=2000-01-01T00:00:00Z")["usage"], [])
        future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        self.assertEqual(self.usage("?from=" + future)["usage"], [])
        self.assertEqual(self.usage("?deployment=nosuch")["usage"], [])
        for q, word in (("?from=yesterday", "from"), ("?to=12x", "to"),
                        ("?group_by=version", "group_by"), ("?from=1h&to=2h", "before")):
            st, body = self.node.get("/system/v1/usage" + q)
            self.assertError(st, body, 400, "bad_request", [word])
        st, _ = self.node.get("/system/v1/usage", token=None)
        self.assertEqual(st, 401)


class UsagePersistenceTest(FnTestCase):
    def totals(self, node):
        st, body = node.get("/system/v1/usage?group_by=deployment")
        self.assertEqual(st, 200, body)
        return {r["deployment"]: r for r in body["usage"]}

    def test_survives_restart_and_kill9(self):
        node = self.start_node()
        self.assertIn(node.deploy("p", {"index.js": "export const f = (x) => x;"})[0], (200, 201))
        for i in range(7):
            node.call("p", "f", i)
        node.restart(signal.SIGTERM)  # a clean stop flushes
        self.assertEqual(self.totals(node)["p"]["invocations"], 7)
        for i in range(3):
            node.call("p", "f", i)
        # the periodic flush (every 5 s) makes it durable without a query, also
        # while other control-plane requests keep the control thread busy
        until = time.monotonic() + 6.5
        while time.monotonic() < until:
            self.assertEqual(node.get("/system/v1/deployments")[0], 200)
            time.sleep(0.2)
        node.restart(signal.SIGKILL)
        t = self.totals(node)["p"]
        self.assertEqual(t["invocations"], 10)
        self.assertGreater(t["wall_us"], 0)
        self.assertEqual(t["req_bytes"], 7 * 3 + 3 * 3)  # "[i]" is 3 bytes each
        # nothing counted twice across flushes and restarts
        node.restart(signal.SIGKILL)
        self.assertEqual(self.totals(node)["p"]["invocations"], 10)


if __name__ == "__main__":
    main()
