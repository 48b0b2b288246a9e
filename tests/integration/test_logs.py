"""Function logs: what JS (console.*), Lua (print, fnmesh.log), Python (print,
sys.stderr) and C (fm_log) functions log is kept per deployment with seq,
timestamp, level, deployment, function, version and request id; read with
GET /system/v1/deployments/{name}/logs (since paging, function and level
filters, bounds), followed as NDJSON with follow=1 (new entries arrive, the
node still stops promptly on SIGTERM), and printed by `fnmesh logs`."""
import http.client
import json
import re
import signal
import subprocess
import threading
import time
import urllib.parse

from fmtest import BIN, FnTestCase, h2_requests, main, run_cli

JS = r"""
export function jslog(m) {
  console.log("js-info", m);
  console.warn("js-warn", m);
  console.error("js-error", m);
  console.debug("js-debug", m);
  return 1;
}
export function spam(n, size) {
  const pad = "x".repeat(size);
  for (let i = 0; i < n; i++) console.log("spam " + i + " " + pad);
  return n;
}
"""

LUA = r"""
return {
  lualog = function(m)
    print("lua-info", m)
    fnmesh.log("warn", "lua-warn", m)
    fnmesh.log("error", "lua-error", m)
    return 1
  end,
}
"""

PY = r"""
import logging
import sys

def pylog(m):
    print("py-info", m)
    sys.stderr.write("py-error " + m + "\n")
    logging.getLogger("app").warning("py-warn %s", m)
    logging.getLogger("app").info("not shown: below the default WARNING level")
    return 1
"""

C = r"""
#include <fnmesh.h>

FM_EXPORT(clog, "m") {
    const char *m = fm_get_string(fm_arg(ctx, 0), NULL);
    fm_log(ctx, FM_DEBUG, "c-debug %s", m);
    fm_log(ctx, FM_INFO, "c-info %s", m);
    fm_log(ctx, FM_WARN, "c-warn %s", m);
    fm_log(ctx, FM_ERROR, "c-error %s", m);
    return fm_int64(ctx, 1);
}
"""

FILES = {"index.js": JS, "page.lua": LUA, "mod.py": PY, "fast.c": C}

# (function, [(level, message template)]) - {m} is the marker
EXPECTED = {
    "jslog": [("info", "js-info {m}"), ("warn", "js-warn {m}"), ("error", "js-error {m}"),
              ("debug", "js-debug {m}")],
    "lualog": [("info", "lua-info\t{m}"), ("warn", "lua-warn {m}"), ("error", "lua-error {m}")],
    "pylog": [("info", "py-info {m}"), ("error", "py-error {m}"), ("warn", "py-warn {m}")],
    "clog": [("debug", "c-debug {m}"), ("info", "c-info {m}"), ("warn", "c-warn {m}"),
             ("error", "c-error {m}")],
}

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FIELDS = {"seq", "ts", "level", "deployment", "function", "version", "request_id", "message"}

_counter = [0]


def marker(tag):
    _counter[0] += 1
    return "%s-%d-%d" % (tag, _counter[0], int(time.time() * 1000) % 100000)


class LogsTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node(extra_args=["--threads", "2"])
        body = cls.must_deploy(cls.node, "logs", FILES)
        cls.version = body["version"][:12]

    def logs(self, name="logs", **params):
        q = urllib.parse.urlencode(params)
        st, body = self.node.get("/system/v1/deployments/%s/logs%s" % (name, "?" + q if q else ""))
        return st, body

    def ok_logs(self, name="logs", **params):
        st, body = self.logs(name, **params)
        self.assertEqual(st, 200, body)
        self.assertEqual(set(body), {"logs", "next"}, body)
        return body

    def call(self, fn, m, rid):
        st, body = self.node.call("logs", fn, m, headers={"X-Request-Id": rid})
        self.assertEqual((st, body), (200, 1))

    def check_entries(self, entries, fn, m, rid):
        mine = [e for e in entries if e["request_id"] == rid]
        self.assertEqual([(e["level"], e["message"]) for e in mine],
                         [(lv, t.format(m=m)) for lv, t in EXPECTED[fn]], entries)
        for e in mine:
            self.assertEqual(set(e), FIELDS, e)
            self.assertEqual(e["deployment"], "logs")
            self.assertEqual(e["function"], fn)
            self.assertEqual(e["version"], self.version)
            self.assertRegex(e["ts"], TS_RE)
            self.assertIsInstance(e["seq"], int)
        seqs = [e["seq"] for e in entries]
        self.assertEqual(seqs, sorted(set(seqs)), "seq must increase")

    def test_every_runtime_with_fields(self):
        for fn in EXPECTED:
            with self.subTest(fn=fn):
                m, rid = marker(fn), marker("rid")
                self.call(fn, m, rid)
                # worker processes (Python, C) send their lines asynchronously
                deadline = time.monotonic() + 5
                while True:
                    body = self.ok_logs(function=fn)
                    n = sum(1 for e in body["logs"] if e["request_id"] == rid)
                    if n >= len(EXPECTED[fn]) or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                self.check_entries(body["logs"], fn, m, rid)
                # the node's own log has the same fields (JSON lines on stderr)
                line = self.node.wait_for_log(lambda l: m in l and '"stream"' in l)
                self.assertIsNotNone(line, "no node log line for %s" % m)
                rec = json.loads(line)
                self.assertEqual(rec["src"], "function")
                self.assertEqual((rec["deployment"], rec["function"], rec["version"],
                                  rec["request_id"]), ("logs", fn, self.version, rid))

    def test_since_paging_and_limit(self):
        rid1 = marker("page1")
        self.call("jslog", marker("p"), rid1)
        first = self.ok_logs()
        since = first["next"]
        rid2, m2 = marker("page2"), marker("p")
        self.call("jslog", m2, rid2)
        newer = self.ok_logs(since=since)
        self.assertTrue(all(e["seq"] > since for e in newer["logs"]))
        self.assertEqual({e["request_id"] for e in newer["logs"]}, {rid2})
        self.check_entries(newer["logs"], "jslog", m2, rid2)
        self.assertEqual(newer["next"], newer["logs"][-1]["seq"])
        empty = self.ok_logs(since=newer["next"])
        self.assertEqual(empty, {"logs": [], "next": newer["next"]})
        # limit cuts a page short; next continues where it stopped
        two = self.ok_logs(since=since, limit=2)
        self.assertEqual([e["seq"] for e in two["logs"]],
                         [e["seq"] for e in newer["logs"][:2]])
        self.assertEqual(two["next"], two["logs"][1]["seq"])
        rest = self.ok_logs(since=two["next"])
        self.assertEqual([e["seq"] for e in rest["logs"]],
                         [e["seq"] for e in newer["logs"][2:]])
        # without since: the newest `limit` entries
        tail = self.ok_logs(limit=3)
        self.assertEqual([e["seq"] for e in tail["logs"]],
                         [e["seq"] for e in newer["logs"][-3:]])
        # since as a duration or an RFC 3339 time
        self.assertTrue(any(e["request_id"] == rid2 for e in self.ok_logs(since="5m")["logs"]))
        future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        self.assertEqual(self.ok_logs(since=future)["logs"], [])
        past = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
        self.assertTrue(any(e["request_id"] == rid2 for e in self.ok_logs(since=past)["logs"]))

    def test_filters(self):
        rid = marker("filt")
        self.call("jslog", marker("f"), rid)
        self.call("clog", marker("f"), rid)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            entries = [e for e in self.ok_logs(limit=10000)["logs"] if e["request_id"] == rid]
            if len(entries) == 8:
                break
            time.sleep(0.05)
        warn = [e for e in self.ok_logs(level="warn", limit=10000)["logs"]
                if e["request_id"] == rid]
        self.assertEqual(sorted(e["message"].split()[0] for e in warn),
                         ["c-error", "c-warn", "js-error", "js-warn"])
        err = [e for e in self.ok_logs(level="error")["logs"]]
        self.assertTrue(err and all(e["level"] == "error" for e in err))
        only_c = self.ok_logs(function="clog")["logs"]
        self.assertTrue(only_c and all(e["function"] == "clog" for e in only_c))
        self.assertEqual(self.ok_logs(function="no-such-function")["logs"], [])
        for bad in ({"level": "loud"}, {"since": "yesterday"}, {"limit": "0"},
                    {"limit": "10001"}):
            st, body = self.logs(**bad)
            self.assertError(st, body, 400, "bad_request")

    def test_unknown_deployment_and_auth(self):
        st, body = self.logs("no-such-deployment")
        self.assertError(st, body, 404, "not_found", "no-such-deployment")
        st, body = self.logs("no-such-deployment", follow="1")
        self.assertError(st, body, 404, "not_found")
        st, _, data = self.node.request("GET", "/system/v1/deployments/logs/logs", token=None)
        self.assertEqual(st, 401, data)
        st, _, data = self.node.request("GET", "/system/v1/deployments/logs/logs", token="wrong")
        self.assertEqual(st, 401, data)
        st, _, data = self.node.request("POST", "/system/v1/deployments/logs/logs", b"")
        self.assertEqual(st, 405, data)

    def test_bounds(self):
        self.must_deploy(self.node, "spam", {"index.js": JS})
        st, n = self.node.call("spam", "spam", 2500, 1)
        self.assertEqual((st, n), (200, 2500))
        body = self.ok_logs("spam", since=0, limit=10000)
        msgs = [e["message"] for e in body["logs"]]
        self.assertEqual(len(msgs), 2000)
        self.assertEqual(msgs[0], "spam 500 x")
        self.assertEqual(msgs[-1], "spam 2499 x")
        # by bytes: 16 KiB messages are truncated, at most 1 MiB is kept
        st, n = self.node.call("spam", "spam", 100, 20000)
        self.assertEqual((st, n), (200, 100))
        body = self.ok_logs("spam", since=0, limit=10000)
        msgs = [e["message"] for e in body["logs"]]
        self.assertLessEqual(sum(len(m) for m in msgs), 1024 * 1024)
        self.assertGreater(len(msgs), 30)
        self.assertTrue(msgs[-1].startswith("spam 99 x"))
        self.assertTrue(all(m.endswith("... [truncated]") for m in msgs))
        self.assertEqual(len(msgs[-1]), 16384 + len("... [truncated]"))

    def test_delete_drops_logs(self):
        self.must_deploy(self.node, "gone", {"index.js": JS})
        st, _ = self.node.call("gone", "jslog", "bye")
        self.assertEqual(st, 200)
        self.assertEqual(len(self.ok_logs("gone")["logs"]), 4)
        st, _, data = self.node.request("DELETE", "/system/v1/deployments/gone")
        self.assertEqual(st, 200, data)
        st, body = self.logs("gone")
        self.assertError(st, body, 404, "not_found")
        self.must_deploy(self.node, "gone", {"index.js": JS})
        self.assertEqual(self.ok_logs("gone")["logs"], [])

    # ---- follow

    def open_follow(self, node, name, **params):
        params["follow"] = "1"
        c = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
        c.request("GET", "/system/v1/deployments/%s/logs?%s" % (name, urllib.parse.urlencode(params)),
                  headers={"Authorization": "Bearer " + node.token})
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.getheader("Content-Type"), "application/x-ndjson")
        return c, r

    def read_until(self, r, pred, timeout=10):
        """Reads NDJSON lines until pred(entry) holds; returns the entries read."""
        got = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = r.readline()
            if not line:
                self.fail("stream ended early; got %r" % got)
            if not line.strip():
                continue  # heartbeat
            e = json.loads(line)
            self.assertEqual(set(e), FIELDS, e)
            got.append(e)
            if pred(e):
                return got
        self.fail("not seen in time; got %r" % got)

    def test_follow_backlog_then_new_entries(self):
        rid1, m1 = marker("fol1"), marker("f")
        self.call("jslog", m1, rid1)
        c, r = self.open_follow(self.node, "logs", function="jslog")
        try:
            got = self.read_until(r, lambda e: e["message"] == "js-debug " + m1)
            self.assertTrue(all(e["function"] == "jslog" for e in got))
            rid2, m2 = marker("fol2"), marker("f")
            self.call("clog", m2, rid2)  # filtered out
            self.call("jslog", m2, rid2)  # logged after the stream was opened
            new = self.read_until(r, lambda e: e["message"] == "js-debug " + m2)
            self.assertEqual([e["request_id"] for e in new], [rid2] * 4)
            self.check_entries(new, "jslog", m2, rid2)
        finally:
            c.close()
        # the client went away: the node is fine
        st, _ = self.node.call("logs", "jslog", "after")
        self.assertEqual(st, 200)

    def test_follow_ends_when_the_node_stops(self):
        node = self.start_node()
        st, body = node.deploy("quiet", {"index.js": JS})
        self.assertIn(st, (200, 201), body)
        c, r = self.open_follow(node, "quiet")
        line = r.readline()  # no backlog: a heartbeat line carries the headers
        self.assertEqual(line.strip(), b"")
        st, _ = node.call("quiet", "jslog", "m")
        self.assertEqual(st, 200)
        self.read_until(r, lambda e: e["message"] == "js-debug m")
        t0 = time.monotonic()
        node.send_signal(signal.SIGTERM)
        self.assertEqual(r.read(), b"")  # the stream ends cleanly (last chunk)
        self.assertEqual(node.wait(10), 0)
        self.assertLess(time.monotonic() - t0, 5)
        c.close()

    def test_follow_over_http2(self):
        node = self.start_node()
        st, body = node.deploy("h2", {"index.js": JS})
        self.assertIn(st, (200, 201), body)
        res = {}

        def follow():
            try:
                res["r"] = h2_requests(node.port, [(
                    "GET", "/system/v1/deployments/h2/logs?follow=1", None,
                    {"authorization": "Bearer " + node.token})], timeout=20)
            except AssertionError as e:
                res["e"] = e

        t = threading.Thread(target=follow, daemon=True)
        t.start()
        time.sleep(0.5)
        st, _ = node.call("h2", "jslog", "over-h2")
        self.assertEqual(st, 200)
        time.sleep(0.5)  # more than one poll interval
        node.send_signal(signal.SIGTERM)
        t.join(15)
        self.assertEqual(node.wait(10), 0)
        self.assertNotIn("e", res, res.get("e"))
        status, data, _ = res["r"][0]
        self.assertEqual(status, 200)
        msgs = [json.loads(l)["message"] for l in data.decode().splitlines() if l.strip()]
        self.assertEqual(msgs, ["js-info over-h2", "js-warn over-h2", "js-error over-h2",
                                "js-debug over-h2"])

    # ---- CLI

    def cli(self, *args, timeout=60):
        return run_cli(*args, env={"FNMESH_URL": self.node.url, "FNMESH_TOKEN": self.node.token},
                       timeout=timeout)

    def test_cli(self):
        rid, m = marker("cli"), marker("c")
        self.call("jslog", m, rid)
        p = self.cli("logs", "logs", "--function", "jslog")
        self.assertEqual(p.returncode, 0, p.stderr)
        line = [l for l in p.stdout.splitlines() if rid in l][0]
        self.assertRegex(line, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO  logs/jslog %s req=%s js-info %s$"
                         % (self.version, re.escape(rid), re.escape(m)))
        p = self.cli("logs", "logs", "--json", "--level", "warn")
        self.assertEqual(p.returncode, 0, p.stderr)
        entries = [json.loads(l) for l in p.stdout.splitlines()]
        self.assertTrue(entries and all(e["level"] in ("warn", "error") for e in entries))
        since = entries[-1]["seq"]
        rid2, m2 = marker("cli2"), marker("c")
        self.call("jslog", m2, rid2)
        p = self.cli("logs", "logs", "--json", "--since", str(since))
        self.assertEqual(p.returncode, 0, p.stderr)
        newer = [json.loads(l) for l in p.stdout.splitlines()]
        self.assertTrue(newer and all(e["seq"] > since for e in newer))
        self.assertIn("js-info " + m2, [e["message"] for e in newer])
        p = self.cli("logs", "no-such-deployment")
        self.assertEqual(p.returncode, 1)
        self.assertIn("not found", p.stderr)
        p = self.cli("logs", "logs", "--level", "loud")
        self.assertEqual(p.returncode, 2)
        p = self.cli("logs")
        self.assertEqual(p.returncode, 2)
        p = self.cli("logs", "--help")
        self.assertEqual(p.returncode, 0)
        self.assertIn("--follow", p.stdout)

    def test_cli_follow(self):
        env = {"FNMESH_URL": self.node.url, "FNMESH_TOKEN": self.node.token}
        proc = subprocess.Popen([BIN, "logs", "logs", "-f", "--function", "lualog"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, stdin=subprocess.DEVNULL)
        lines = []
        seen = threading.Event()
        m = marker("clif")

        def reader():
            for l in proc.stdout:
                lines.append(l)
                if "lua-error " + m in l:
                    seen.set()

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            time.sleep(0.5)  # let it connect
            self.call("lualog", m, marker("rid"))
            self.assertTrue(seen.wait(10), "followed lines: %r" % lines)
            mine = [l for l in lines if m in l]
            self.assertEqual(len(mine), 3, lines)
            self.assertIn(" WARN  logs/lualog ", mine[1])
            self.assertTrue(all("/lualog " in l for l in lines))
        finally:
            proc.send_signal(signal.SIGTERM)  # by its PID
            proc.wait(10)
            t.join(5)
            proc.stdout.close()
            proc.stderr.close()


if __name__ == "__main__":
    main()
