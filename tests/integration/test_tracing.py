"""Distributed tracing: W3C traceparent/tracestate in and out of /fn and /rpc,
one span per call with child spans for function-to-function calls (JS to JS,
JS to Lua, JS to Python), error status, the span ring and its bound,
GET /system/v1/traces[/{id}], --telemetry off, and OTLP/HTTP JSON export to
a small receiver run by the test (also one that is down or hangs)."""
import http.server
import json
import re
import socket
import threading
import time

from fmtest import FnTestCase, free_port, main

JS = r"""
export const ok = (x) => x;
export function bad() { throw new Error("bad thing"); }
export async function slowish() { await new Promise(r => setTimeout(r, 30)); return 1; }
export async function badAsync() { await null; throw new RangeError("async bad"); }
export async function callsSlowish() { return await fnmesh.call("tr/slowish"); }
export async function callsBadAsync() { return await fnmesh.call("tr/badAsync"); }
export async function callsJs(x) { return await fnmesh.call("tr/ok", x); }
export async function callsJsBad() { return await fnmesh.call("tr/bad"); }
export async function callsLua(x) { return await fnmesh.call("trlua/add", x, 1); }
export async function callsLuaBad() { return await fnmesh.call("trlua/boom", 7); }
export async function callsPy(x) { return await fnmesh.call("trpy/add", x, 2); }
export async function chain(x) { return await fnmesh.call("tr/callsLua", x); }
"""

LUA = r"""
local M = {}
function M.add(a, b) return a + b end
function M.boom(n) error("lua-boom " .. tostring(n)) end
function M.toJs(x) return fnmesh.call("tr/ok", x) end
return M
"""

PY = r"""
import fnmesh

__all__ = ["add", "toJs"]

def add(a, b):
    return a + b

def toJs(x):
    return fnmesh.call("tr/ok", x)
"""

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
RFC3339_US = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

_counter = [0]


def new_tid():
    _counter[0] += 1
    return "%08x%024x" % (int(time.time()), _counter[0] * 7919 + 1)


def tp(tid=TID, pid=PID, flags="01"):
    return "00-%s-%s-%s" % (tid, pid, flags)


def parse_tp(value):
    m = TRACEPARENT.match(value or "")
    assert m, "not a version-00 traceparent: %r" % value
    return m.group(1), m.group(2), m.group(3)


def deploy_all(cls, node):
    cls.must_deploy(node, "tr", {"index.js": JS})
    cls.must_deploy(node, "trlua", {"index.lua": LUA})
    cls.must_deploy(node, "trpy", {"main.py": PY})


class TracingTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node()
        deploy_all(cls, cls.node)

    def call(self, fn, *args, headers=None, dep="tr"):
        return self.node.req_json("POST", "/fn/%s/%s" % (dep, fn), list(args), headers=headers)

    def trace(self, tid):
        st, _, body = self.node.req_json("GET", "/system/v1/traces/" + tid)
        self.assertEqual(st, 200, body)
        self.assertEqual(body["trace_id"], tid)
        return body["spans"]

    def check_span(self, s):
        self.assertRegex(s["span_id"], HEX16)
        if s["parent_span_id"] is not None:
            self.assertRegex(s["parent_span_id"], HEX16)
        self.assertRegex(s["start"], RFC3339_US)
        self.assertIsInstance(s["duration_us"], int)
        self.assertGreaterEqual(s["duration_us"], 0)
        self.assertIn(s["status"], ("ok", "error"))
        self.assertIn(s["kind"], ("server", "internal"))
        a = s["attributes"]
        self.assertEqual(set(a), {"fnmesh.deployment", "fnmesh.function", "fnmesh.runtime",
                                  "fnmesh.version", "fnmesh.request_id", "fnmesh.cold_start",
                                  "fnmesh.hops", "fnmesh.outcome"})
        self.assertEqual(s["name"], a["fnmesh.deployment"] + "/" + a["fnmesh.function"])
        self.assertRegex(a["fnmesh.version"], r"^[0-9a-f]{12}$")
        self.assertIsInstance(a["fnmesh.cold_start"], bool)
        self.assertIsInstance(a["fnmesh.hops"], int)
        return s

    def by_name(self, spans):
        out = {}
        for s in spans:
            self.check_span(s)
            self.assertNotIn(s["name"], out, "one span per function expected: %r" % spans)
            out[s["name"]] = s
        return out

    # ---- propagation

    def test_incoming_traceparent_continues_the_trace(self):
        tid = new_tid()
        st, h, body = self.call("ok", 5, headers={"traceparent": tp(tid)})
        self.assertEqual((st, body), (200, 5))
        rtid, rsid, flags = parse_tp(h.get("traceparent"))
        self.assertEqual(rtid, tid)
        self.assertNotEqual(rsid, PID)
        self.assertEqual(flags, "01")
        self.assertNotIn("tracestate", h)
        [s] = self.trace(tid)
        self.check_span(s)
        self.assertEqual(s["span_id"], rsid)
        self.assertEqual(s["parent_span_id"], PID)
        self.assertEqual(s["name"], "tr/ok")
        self.assertEqual(s["kind"], "server")
        self.assertEqual(s["status"], "ok")
        self.assertNotIn("error", s)
        a = s["attributes"]
        self.assertEqual(a["fnmesh.deployment"], "tr")
        self.assertEqual(a["fnmesh.function"], "ok")
        self.assertEqual(a["fnmesh.runtime"], "js")
        self.assertEqual(a["fnmesh.request_id"], h["x-request-id"])
        self.assertEqual(a["fnmesh.hops"], 0)
        self.assertEqual(a["fnmesh.outcome"], "ok")

    def test_unsampled_flag_and_request_id_kept(self):
        tid = new_tid()
        st, h, _ = self.call("ok", 1, headers={"traceparent": tp(tid, flags="00"),
                                               "X-Request-Id": "my-req-1"})
        self.assertEqual(st, 200)
        self.assertEqual(parse_tp(h["traceparent"])[::2], (tid, "00"))
        [s] = self.trace(tid)
        self.assertEqual(s["attributes"]["fnmesh.request_id"], "my-req-1")

    def test_without_traceparent_a_new_trace(self):
        seen = set()
        for _ in range(3):
            st, h, _ = self.call("ok", 1)
            self.assertEqual(st, 200)
            rtid, rsid, flags = parse_tp(h["traceparent"])
            self.assertNotEqual(rtid, "0" * 32)
            self.assertEqual(flags, "01")
            seen.add(rtid)
            [s] = self.trace(rtid)
            self.assertEqual(s["span_id"], rsid)
            self.assertIsNone(s["parent_span_id"])
        self.assertEqual(len(seen), 3)

    def test_invalid_traceparents_start_a_new_trace(self):
        tid = new_tid()
        bad = [
            "00-%s-%s-01" % (tid[:-1] + "g", PID),           # not hex
            "00-%s-%s-01" % ("0" * 32, PID),                 # all-zero trace id
            "00-%s-%s-01" % (tid, "0" * 16),                 # all-zero parent id
            "00-%s-%s-01" % (tid[:-1], PID),                 # trace id too short
            "00-%s-%s-01" % (tid, PID + "a"),                # parent id too long
            "00-%s-%s-1" % (tid, PID),                       # flags too short
            "00-%s-%s-01-extra" % (tid, PID),                # version 00 must end there
            "00-%s-%s-01" % (tid.upper(), PID),              # uppercase
            "00-%s-%s-01" % (tid, PID.upper()),
            "0A-%s-%s-01" % (tid, PID),                      # uppercase version
            "ff-%s-%s-01" % (tid, PID),                      # version ff is invalid
            "cc-%s-%s-01x" % (tid, PID),                     # future version: '-' after flags
            "00_%s_%s_01" % (tid, PID),                      # wrong separators
            "",
            "garbage",
        ]
        for v in bad:
            with self.subTest(traceparent=v):
                st, h, _ = self.call("ok", 1, headers={"traceparent": v,
                                                       "tracestate": "k=v"})
                self.assertEqual(st, 200)
                rtid, rsid, _ = parse_tp(h["traceparent"])
                self.assertNotEqual(rtid, tid)
                self.assertNotIn("tracestate", h, "tracestate of an invalid traceparent is dropped")
                [s] = self.trace(rtid)
                self.assertIsNone(s["parent_span_id"])
        st, _, _ = self.node.req_json("GET", "/system/v1/traces/" + tid)
        self.assertEqual(st, 404)

    def test_future_version_is_accepted(self):
        tid = new_tid()
        for v in ("cc-%s-%s-01" % (tid, PID), "cc-%s-%s-01-what-the-future-holds" % (tid, PID)):
            with self.subTest(traceparent=v):
                st, h, _ = self.call("ok", 1, headers={"traceparent": v})
                self.assertEqual(st, 200)
                rtid, _, flags = parse_tp(h["traceparent"])  # answered as version 00
                self.assertEqual((rtid, flags), (tid, "01"))
        spans = self.trace(tid)
        self.assertEqual([s["parent_span_id"] for s in spans], [PID, PID])

    def test_tracestate_passes_through(self):
        tid = new_tid()
        state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        st, h, _ = self.call("ok", 1, headers={"traceparent": tp(tid), "tracestate": state})
        self.assertEqual(st, 200)
        self.assertEqual(h.get("tracestate"), state)
        # through a mesh call too (the response names the root span)
        st, h, _ = self.call("callsLua", 1, headers={"traceparent": tp(tid), "tracestate": state})
        self.assertEqual((st, h.get("tracestate")), (200, state))

    def test_long_tracestate_is_cut_by_whole_members(self):
        members = ["k%02d=%s" % (i, "v" * 16) for i in range(40)]  # 20 bytes each: 819 in all
        st, h, _ = self.call("ok", 1, headers={"traceparent": tp(new_tid()),
                                               "tracestate": ",".join(members)})
        self.assertEqual(st, 200)
        out = h["tracestate"]
        self.assertLessEqual(len(out), 512)
        kept = out.split(",")
        self.assertEqual(kept, members[:len(kept)])
        self.assertGreaterEqual(len(out), 512 - 21)

    # ---- spans of function-to-function calls

    def test_js_to_js_child_span(self):
        tid = new_tid()
        st, h, body = self.call("callsJs", "x", headers={"traceparent": tp(tid)})
        self.assertEqual((st, body), (200, "x"))
        _, rsid, _ = parse_tp(h["traceparent"])
        spans = self.by_name(self.trace(tid))
        self.assertEqual(set(spans), {"tr/callsJs", "tr/ok"})
        root, child = spans["tr/callsJs"], spans["tr/ok"]
        self.assertEqual(root["span_id"], rsid)
        self.assertEqual(root["parent_span_id"], PID)
        self.assertEqual(root["kind"], "server")
        self.assertEqual(child["parent_span_id"], root["span_id"])
        self.assertNotEqual(child["span_id"], root["span_id"])
        self.assertEqual(child["kind"], "internal")
        self.assertEqual(child["attributes"]["fnmesh.hops"], 1)
        self.assertEqual(child["attributes"]["fnmesh.request_id"],
                         root["attributes"]["fnmesh.request_id"])

    def test_js_to_lua_and_python(self):
        for fn, callee, runtime, want in (("callsLua", "trlua/add", "lua", 4),
                                          ("callsPy", "trpy/add", "python", 5)):
            with self.subTest(callee=callee):
                tid = new_tid()
                st, h, body = self.call(fn, 3, headers={"traceparent": tp(tid)})
                self.assertEqual((st, body), (200, want))
                spans = self.by_name(self.trace(tid))
                self.assertEqual(set(spans), {"tr/" + fn, callee})
                root, child = spans["tr/" + fn], spans[callee]
                self.assertEqual(root["span_id"], parse_tp(h["traceparent"])[1])
                self.assertEqual(child["parent_span_id"], root["span_id"])
                self.assertEqual(child["attributes"]["fnmesh.runtime"], runtime)
                self.assertEqual(child["kind"], "internal")
                # the child ran inside its parent's time
                self.assertGreaterEqual(child["start"], root["start"])

    def test_three_levels_js_js_lua(self):
        tid = new_tid()
        st, h, body = self.call("chain", 1, headers={"traceparent": tp(tid)})
        self.assertEqual((st, body), (200, 2))
        spans = self.by_name(self.trace(tid))
        self.assertEqual(set(spans), {"tr/chain", "tr/callsLua", "trlua/add"})
        self.assertEqual(spans["tr/chain"]["parent_span_id"], PID)
        self.assertEqual(spans["tr/callsLua"]["parent_span_id"], spans["tr/chain"]["span_id"])
        self.assertEqual(spans["trlua/add"]["parent_span_id"], spans["tr/callsLua"]["span_id"])
        self.assertEqual([spans[n]["attributes"]["fnmesh.hops"]
                          for n in ("tr/chain", "tr/callsLua", "trlua/add")], [0, 1, 2])

    def test_lua_and_python_to_js(self):
        for dep in ("trlua", "trpy"):
            with self.subTest(caller=dep):
                tid = new_tid()
                st, h, body = self.call("toJs", 9, headers={"traceparent": tp(tid)}, dep=dep)
                self.assertEqual((st, body), (200, 9))
                spans = self.by_name(self.trace(tid))
                self.assertEqual(set(spans), {dep + "/toJs", "tr/ok"})
                self.assertEqual(spans["tr/ok"]["parent_span_id"], spans[dep + "/toJs"]["span_id"])
                self.assertEqual(spans[dep + "/toJs"]["parent_span_id"], PID)

    def test_error_in_the_child(self):
        for fn, callee, text in (("callsLuaBad", "trlua/boom", "lua-boom 7"),
                                 ("callsJsBad", "tr/bad", "bad thing")):
            with self.subTest(callee=callee):
                tid = new_tid()
                st, h, body = self.call(fn, headers={"traceparent": tp(tid)})
                self.assertEqual(st, 500, body)
                self.assertEqual(parse_tp(h["traceparent"])[0], tid)
                spans = self.by_name(self.trace(tid))
                child, root = spans[callee], spans["tr/" + fn]
                self.assertEqual(child["status"], "error")
                self.assertIn(text, child["error"])
                self.assertEqual(child["attributes"]["fnmesh.outcome"], "error")
                self.assertEqual(child["parent_span_id"], root["span_id"])
                self.assertEqual(root["status"], "error")  # it did not catch it

    def test_async_js_child_ends_when_its_promise_settles(self):
        tid = new_tid()
        st, h, body = self.call("callsSlowish", headers={"traceparent": tp(tid)})
        self.assertEqual((st, body), (200, 1))
        spans = self.by_name(self.trace(tid))
        child, root = spans["tr/slowish"], spans["tr/callsSlowish"]
        self.assertEqual(child["parent_span_id"], root["span_id"])
        self.assertGreaterEqual(child["duration_us"], 25000)  # the 30 ms it awaited
        self.assertEqual(child["status"], "ok")
        tid = new_tid()
        st, h, body = self.call("callsBadAsync", headers={"traceparent": tp(tid)})
        self.assertEqual(st, 500, body)
        spans = self.by_name(self.trace(tid))
        child = spans["tr/badAsync"]
        self.assertEqual((child["status"], child["error"]), ("error", "async bad"))
        self.assertEqual(child["attributes"]["fnmesh.outcome"], "error")
        self.assertEqual(spans["tr/callsBadAsync"]["status"], "error")

    def test_error_span_of_a_plain_call(self):
        tid = new_tid()
        st, h, body = self.call("bad", headers={"traceparent": tp(tid)})
        self.assertEqual(st, 500)
        [s] = self.trace(tid)
        self.assertEqual((s["status"], s["error"]), ("error", "bad thing"))

    # ---- JSON-RPC

    def test_rpc_calls_produce_spans(self):
        tid = new_tid()
        batch = [{"jsonrpc": "2.0", "method": "tr.ok", "params": [1], "id": 1},
                 {"jsonrpc": "2.0", "method": "trlua.add", "params": [1, 2], "id": 2},
                 {"jsonrpc": "2.0", "method": "tr.ok", "params": [3]}]  # a notification
        st, h, body = self.node.rpc(batch, headers={"traceparent": tp(tid),
                                                    "tracestate": "a=b"})
        self.assertEqual(st, 200)
        self.assertEqual(sorted(r["id"] for r in body), [1, 2])
        rtid, rsid, _ = parse_tp(h["traceparent"])
        self.assertEqual(rtid, tid)
        self.assertEqual(h.get("tracestate"), "a=b")
        # the notification is answered before it has run: its span may come later
        deadline = time.monotonic() + 3
        spans = self.trace(tid)
        while len(spans) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            spans = self.trace(tid)
        self.assertEqual(len(spans), 3)
        for s in spans:
            self.check_span(s)
            self.assertEqual(s["parent_span_id"], PID)
            self.assertEqual(s["kind"], "server")
        first = [s for s in spans if s["span_id"] == rsid]
        self.assertEqual(len(first), 1, "the response names one of the calls")
        self.assertEqual(first[0]["name"], "tr/ok")
        # a single call without a traceparent: a trace of its own
        st, h, body = self.node.rpc({"jsonrpc": "2.0", "method": "tr.ok", "params": [2], "id": 9})
        self.assertEqual((st, body["result"]), (200, 2))
        rtid, rsid, _ = parse_tp(h["traceparent"])
        [s] = self.trace(rtid)
        self.assertEqual(s["span_id"], rsid)
        self.assertIsNone(s["parent_span_id"])

    # ---- the endpoints

    def test_endpoint_errors(self):
        st, _, body = self.node.req_json("GET", "/system/v1/traces/" + "ab" * 16)
        self.assertError(st, body, 404, "not_found")
        for bad in ("xyz", "ab" * 15, "ab" * 17, "0" * 32, "g" * 32):
            with self.subTest(id=bad):
                st, _, body = self.node.req_json("GET", "/system/v1/traces/" + bad)
                self.assertError(st, body, 400, "bad_request")
        for path in ("/system/v1/traces/" + TID, "/system/v1/traces"):
            st, _, body = self.node.req_json("GET", path, token=None)
            self.assertError(st, body, 401, "unauthorized")
            st, _, body = self.node.req_json("GET", path, token="wrong")
            self.assertError(st, body, 401, "unauthorized")
        st, h, body = self.node.req_json("POST", "/system/v1/traces")
        self.assertError(st, body, 405, "method_not_allowed")
        for q in ("limit=0", "limit=abc", "limit=1001", "limit="):
            st, _, body = self.node.req_json("GET", "/system/v1/traces?" + q)
            self.assertError(st, body, 400, "bad_request")

    def test_recent_traces(self):
        tids = []
        for _ in range(3):
            tid = new_tid()
            self.assertEqual(self.call("callsJs", 1, headers={"traceparent": tp(tid)})[0], 200)
            tids.append(tid)
        st, _, body = self.node.req_json("GET", "/system/v1/traces?limit=3")
        self.assertEqual(st, 200, body)
        got = body["traces"]
        self.assertEqual([t["trace_id"] for t in got], tids[::-1])
        for t in got:
            self.assertEqual(t["name"], "tr/callsJs")
            self.assertEqual(t["spans"], 2)
            self.assertFalse(t["error"])
            self.assertRegex(t["start"], RFC3339_US)
            self.assertGreaterEqual(t["duration_us"], 0)
        st, _, body = self.node.req_json("GET", "/system/v1/traces")
        self.assertEqual(st, 200)
        self.assertLessEqual(len(body["traces"]), 20)
        self.assertEqual(body["traces"][0]["trace_id"], tids[-1])

    def test_metrics_count_spans(self):
        def spans():
            _, _, text = self.node.request("GET", "/metrics")
            m = re.search(r"^fnmesh_trace_spans_total (\d+)$", text.decode(), re.M)
            return int(m.group(1))
        before = spans()
        self.call("callsJs", 1)
        self.assertEqual(spans() - before, 2)


class RingBoundTest(FnTestCase):
    RING = 16384

    def test_old_traces_leave_the_ring(self):
        node = self.start_node()
        # batches of 3,500 calls of one function: a queue that holds them all
        self.must_deploy(node, "tr", {"index.js": JS, "fnmesh.json": '{"max_queue": 10000}'})
        old = new_tid()
        self.assertEqual(node.req_json("POST", "/fn/tr/ok", [1],
                                       headers={"traceparent": tp(old)})[0], 200)
        self.assertEqual(node.req_json("GET", "/system/v1/traces/" + old)[0], 200)
        per_batch, batches = 3500, 5  # 17,500 spans: more than the ring holds
        tids = []
        conn = node.connection(timeout=120)
        for b in range(batches):
            tid = new_tid()
            tids.append(tid)
            calls = [{"jsonrpc": "2.0", "method": "tr.ok", "params": [i], "id": i}
                     for i in range(per_batch)]
            st, h, body = node.rpc(calls, headers={"traceparent": tp(tid)}, conn=conn,
                                   timeout=120)
            self.assertEqual(st, 200)
            self.assertEqual(len(body), per_batch)
        conn.close()
        st, _, body = node.req_json("GET", "/system/v1/traces/" + old)
        self.assertError(st, body, 404, "not_found")
        st, _, body = node.req_json("GET", "/system/v1/traces/" + tids[-1])
        self.assertEqual(st, 200)
        self.assertEqual(len(body["spans"]), per_batch)
        st, _, body = node.req_json("GET", "/system/v1/traces/" + tids[0])
        self.assertEqual(st, 200)  # partly overwritten
        self.assertEqual(len(body["spans"]), self.RING - (batches - 1) * per_batch)
        st, _, body = node.req_json("GET", "/system/v1/traces?limit=10")
        self.assertEqual([t["trace_id"] for t in body["traces"]], tids[::-1])
        self.assertEqual(sum(t["spans"] for t in body["traces"]), self.RING)


class TelemetryOffTest(FnTestCase):
    def test_no_spans_recorded(self):
        node = self.start_node(extra_args=["--telemetry", "off"])
        self.must_deploy(node, "tr", {"index.js": JS})
        self.must_deploy(node, "trlua", {"index.lua": LUA})
        tid = new_tid()
        st, h, body = node.req_json("POST", "/fn/tr/callsLua", [1],
                                    headers={"traceparent": tp(tid), "tracestate": "x=y"})
        self.assertEqual((st, body), (200, 2))
        # the context still travels ...
        self.assertEqual(parse_tp(h["traceparent"])[0], tid)
        self.assertEqual(h["tracestate"], "x=y")
        # ... but nothing is recorded
        st, _, body = node.req_json("GET", "/system/v1/traces/" + tid)
        self.assertError(st, body, 404, "not_found")
        st, _, body = node.req_json("GET", "/system/v1/traces")
        self.assertEqual((st, body), (200, {"traces": []}))


# --------------------------------------------------------------------------
# OTLP export

class Receiver:
    """An OTLP/HTTP receiver on a free loopback port, in a thread. mode:
    "ok" answers 200 {}, "hang" reads the request and never answers."""

    def __init__(self, mode="ok"):
        self.requests = []  # (path, headers, parsed body)
        self.lock = threading.Lock()
        self.release = threading.Event()
        recv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                data = self.rfile.read(n)
                try:
                    doc = json.loads(data)
                except ValueError:
                    doc = {"unparsable": data[:200].decode("latin-1")}
                with recv.lock:
                    recv.requests.append((self.path, dict(self.headers), doc))
                if mode == "hang":
                    recv.release.wait(30)
                    return
                out = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def spans(self):
        out = []
        with self.lock:
            for _, _, doc in self.requests:
                for rs in doc.get("resourceSpans", []):
                    for ss in rs.get("scopeSpans", []):
                        out.extend(ss.get("spans", []))
        return out

    def wait_spans(self, pred, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [s for s in self.spans() if pred(s)]
            if got:
                return got
            time.sleep(0.05)
        return []

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def attrs_of(span):
    out = {}
    for a in span["attributes"]:
        (kind, value), = a["value"].items()
        out[a["key"]] = (kind, value)
    return out


class OtlpExportTest(FnTestCase):
    def test_spans_arrive_well_formed(self):
        recv = Receiver()
        self.addCleanup(recv.close)
        node = self.start_node(extra_args=["--otlp-endpoint", recv.url])
        deploy_all(self, node)
        tid = new_tid()
        t0 = time.time_ns()
        st, h, body = node.req_json("POST", "/fn/tr/chain", [1],
                                    headers={"traceparent": tp(tid)})
        self.assertEqual((st, body), (200, 2))
        st, h2, _ = node.req_json("POST", "/fn/tr/callsLuaBad", [])
        self.assertEqual(st, 500)
        t1 = time.time_ns()
        got = recv.wait_spans(lambda s: s["traceId"] == tid and s["name"] == "tr/chain")
        self.assertTrue(got, "no span of the call arrived: %r" % recv.requests[:3])
        bad_tid = parse_tp(h2["traceparent"])[0]
        recv.wait_spans(lambda s: s["traceId"] == bad_tid and s["name"] == "tr/callsLuaBad")
        # every request is a well-formed ExportTraceServiceRequest
        with recv.lock:
            reqs = list(recv.requests)
        self.assertTrue(reqs)
        for path, headers, doc in reqs:
            self.assertEqual(path, "/v1/traces")
            self.assertTrue(headers.get("Content-Type", "").startswith("application/json"))
            self.assertEqual(list(doc), ["resourceSpans"])
            for rs in doc["resourceSpans"]:
                res = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
                self.assertEqual(res["service.name"], {"stringValue": "fnmesh"})
                self.assertTrue(res["service.instance.id"]["stringValue"])
                for ss in rs["scopeSpans"]:
                    self.assertEqual(ss["scope"]["name"], "fnmesh")
                    for s in ss["spans"]:
                        self.assertRegex(s["traceId"], HEX32)
                        self.assertRegex(s["spanId"], HEX16)
                        if "parentSpanId" in s:
                            self.assertRegex(s["parentSpanId"], HEX16)
                        self.assertIsInstance(s["startTimeUnixNano"], str)
                        self.assertIsInstance(s["endTimeUnixNano"], str)
                        self.assertRegex(s["startTimeUnixNano"], r"^\d+$")
                        self.assertLessEqual(int(s["startTimeUnixNano"]),
                                             int(s["endTimeUnixNano"]))
                        self.assertIn(s["kind"], (1, 2))
                        self.assertIn(s["status"]["code"], (1, 2))
        spans = {s["name"]: s for s in recv.spans() if s["traceId"] == tid}
        self.assertEqual(set(spans), {"tr/chain", "tr/callsLua", "trlua/add"})
        root, mid, leaf = spans["tr/chain"], spans["tr/callsLua"], spans["trlua/add"]
        self.assertEqual(root["parentSpanId"], PID)
        self.assertEqual(root["spanId"], parse_tp(h["traceparent"])[1])
        self.assertEqual(mid["parentSpanId"], root["spanId"])
        self.assertEqual(leaf["parentSpanId"], mid["spanId"])
        self.assertEqual((root["kind"], mid["kind"], leaf["kind"]), (2, 1, 1))
        self.assertEqual(root["status"], {"code": 1})
        for s in spans.values():
            start, end = int(s["startTimeUnixNano"]), int(s["endTimeUnixNano"])
            self.assertTrue(t0 - 2_000_000_000 <= start <= end <= t1 + 2_000_000_000,
                            (t0, start, end, t1))
        a = attrs_of(leaf)
        self.assertEqual(a["fnmesh.deployment"], ("stringValue", "trlua"))
        self.assertEqual(a["fnmesh.function"], ("stringValue", "add"))
        self.assertEqual(a["fnmesh.runtime"], ("stringValue", "lua"))
        self.assertEqual(a["fnmesh.hops"], ("intValue", "2"))
        self.assertEqual(a["fnmesh.outcome"], ("stringValue", "ok"))
        self.assertEqual(a["fnmesh.cold_start"][0], "boolValue")
        self.assertEqual(a["fnmesh.request_id"], ("stringValue", h["x-request-id"]))
        self.assertEqual(a["fnmesh.version"][0], "stringValue")
        # the same spans as the node's own endpoint
        st, _, body = node.req_json("GET", "/system/v1/traces/" + tid)
        self.assertEqual(sorted(s["span_id"] for s in body["spans"]),
                         sorted(s["spanId"] for s in spans.values()))
        # the failed child
        bad = {s["name"]: s for s in recv.spans() if s["traceId"] == bad_tid}
        self.assertEqual(bad["trlua/boom"]["status"]["code"], 2)
        self.assertIn("lua-boom 7", bad["trlua/boom"]["status"]["message"])
        self.assertNotIn("parentSpanId", bad["tr/callsLuaBad"])
        _, _, text = node.request("GET", "/metrics")
        m = re.search(r'^fnmesh_trace_export_spans_total\{result="exported"\} (\d+)$',
                      text.decode(), re.M)
        self.assertGreaterEqual(int(m.group(1)), 5)

    def test_endpoint_with_path_and_shutdown_flush(self):
        recv = Receiver()
        self.addCleanup(recv.close)
        node = self.start_node(extra_args=["--otlp-endpoint", recv.url + "/v1/traces"])
        self.must_deploy(node, "tr", {"index.js": JS})
        tid = new_tid()
        self.assertEqual(node.req_json("POST", "/fn/tr/ok", [1],
                                       headers={"traceparent": tp(tid)})[0], 200)
        self.assertEqual(node.stop(), 0)  # the last spans go out while stopping
        got = recv.wait_spans(lambda s: s["traceId"] == tid, timeout=2)
        self.assertEqual(len(got), 1)
        self.assertTrue(all(p == "/v1/traces" for p, _, _ in recv.requests))

    def check_calls_stay_fast(self, node):
        self.must_deploy(node, "tr", {"index.js": JS})
        conn = node.connection()
        worst = 0.0
        start = time.monotonic()
        for i in range(300):
            t = time.monotonic()
            st, _, body = node.req_json("POST", "/fn/tr/ok", [i], conn=conn)
            worst = max(worst, time.monotonic() - t)
            self.assertEqual((st, body), (200, i))
            if i % 100 == 99:
                time.sleep(1.1)  # let the exporter try (and fail) a few times
        conn.close()
        self.assertLess(worst, 1.0, "a call waited for the exporter")
        self.assertLess(time.monotonic() - start, 30)
        self.assertEqual(node.request("GET", "/healthz")[0], 200)

    def test_receiver_down(self):
        port = free_port()  # nobody listens there
        node = self.start_node(extra_args=["--otlp-endpoint", "http://127.0.0.1:%d" % port])
        self.check_calls_stay_fast(node)
        line = node.wait_for_log(lambda l: "OTLP span export failed" in l, timeout=5)
        self.assertIsNotNone(line)
        self.assertEqual(json.loads(line)["level"], "warn")
        fails = [l for l in node.log_text().splitlines() if "OTLP span export failed" in l]
        self.assertLessEqual(len(fails), 2, "failures are logged at most once per interval")
        _, _, text = node.request("GET", "/metrics")
        text = text.decode()
        dropped = re.search(r'^fnmesh_trace_export_spans_total\{result="dropped"\} (\d+)$',
                            text, re.M)
        self.assertGreater(int(dropped.group(1)), 0)
        self.assertRegex(text, r"(?m)^fnmesh_trace_export_failures_total [1-9]")
        t = time.monotonic()
        self.assertEqual(node.stop(), 0)
        self.assertLess(time.monotonic() - t, 8)

    def test_receiver_hangs(self):
        recv = Receiver(mode="hang")
        self.addCleanup(recv.close)
        node = self.start_node(extra_args=["--otlp-endpoint", recv.url])
        self.check_calls_stay_fast(node)
        self.assertTrue(recv.requests, "the exporter did try")
        t = time.monotonic()
        self.assertEqual(node.stop(), 0)  # does not wait for the hanging collector
        self.assertLess(time.monotonic() - t, 8)

    def test_bad_endpoint_is_refused(self):
        from fmtest import BIN
        import subprocess
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            p = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:%d" % free_port(),
                                "--data", d, "--otlp-endpoint", "ftp://x"],
                               capture_output=True, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("otlp-endpoint", p.stderr)


if __name__ == "__main__":
    main()
