"""fmtest.py - shared harness of the fnmesh integration tests.

Every test_*.py in this folder imports it. It starts the real binary
($FNMESH_BIN) as `fnmesh serve` on a free loopback port with its own temporary
data directory, talks to it over plain sockets / http.client, builds deploy
bundles (tar.gz) in memory, and stops the node by its PID (never by name).
Standard library only: the tests run under Debian's /usr/bin/python3.

Node's output (stdout + stderr) goes to `<data dir>/node.log`; when a test
that used a node fails, FnTestCase prints the tail of that log.
"""
import atexit
import gzip
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import unittest

BIN = os.environ.get("FNMESH_BIN") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "fnmesh")
SOURCE_DIR = os.environ.get("FNMESH_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
START_TIMEOUT = float(os.environ.get("FNMESH_TEST_START_TIMEOUT", "20"))

HEX64 = re.compile(r"^[0-9a-f]{64}$")
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")

# Sentinel: "use the node's admin token" (pass token=None for no header).
DEFAULT = object()

_live_nodes = []


def _kill_leftovers():
    for n in list(_live_nodes):
        try:
            n.kill9()
        except Exception:
            pass


atexit.register(_kill_leftovers)


def require_binary():
    if not os.path.isfile(BIN) or not os.access(BIN, os.X_OK):
        raise RuntimeError("FNMESH_BIN is not an executable file: %r" % BIN)


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# bundles

def make_bundle(files=None, symlinks=None, hardlinks=None, dirs=(),
                mtime=1700000000, reverse=False, prefix="", uid=1000,
                gid=1000, uname="dev", gname="dev", mode=0o644,
                compresslevel=6):
    """Returns a tar.gz (bytes) built in memory.

    files: {path: str|bytes}; symlinks / hardlinks: {path: target}; dirs:
    directory entries to add first. Names are written exactly as given
    (no sanitising), so tests can craft `../x.js`, `/abs.js` and so on.
    `prefix` is prepended to every name (e.g. "./"), `reverse` reverses the
    order of the entries, the other arguments set tar metadata."""
    entries = []
    for d in dirs:
        ti = tarfile.TarInfo(prefix + d)
        ti.type = tarfile.DIRTYPE
        ti.mode = 0o755
        entries.append((ti, None))
    for path, content in (files or {}).items():
        if isinstance(content, str):
            content = content.encode("utf-8")
        ti = tarfile.TarInfo(prefix + path)
        ti.size = len(content)
        ti.mode = mode
        entries.append((ti, content))
    for path, target in (symlinks or {}).items():
        ti = tarfile.TarInfo(prefix + path)
        ti.type = tarfile.SYMTYPE
        ti.linkname = target
        ti.mode = 0o777
        entries.append((ti, None))
    for path, target in (hardlinks or {}).items():
        ti = tarfile.TarInfo(prefix + path)
        ti.type = tarfile.LNKTYPE
        ti.linkname = target
        ti.mode = mode
        entries.append((ti, None))
    if reverse:
        entries.reverse()
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=compresslevel,
                       mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for ti, content in entries:
                ti.mtime = mtime
                ti.uid, ti.gid, ti.uname, ti.gname = uid, gid, uname, gname
                tar.addfile(ti, io.BytesIO(content) if content is not None else None)
    return buf.getvalue()


class _Zeros(io.RawIOBase):
    """A file object of n zero bytes that never holds them all in memory."""

    def __init__(self, n):
        self.left = n

    def readable(self):
        return True

    def readinto(self, b):
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k


def make_zero_bundle(big_files, files=None, compresslevel=1):
    """tar.gz with {path: size} files of zeros plus ordinary `files`."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=compresslevel,
                       mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path, content in (files or {}).items():
                if isinstance(content, str):
                    content = content.encode()
                ti = tarfile.TarInfo(path)
                ti.size = len(content)
                ti.mode = 0o644
                tar.addfile(ti, io.BytesIO(content))
            for path, size in big_files.items():
                ti = tarfile.TarInfo(path)
                ti.size = size
                ti.mode = 0o644
                tar.addfile(ti, io.BufferedReader(_Zeros(size), 1 << 20))
    return buf.getvalue()


# --------------------------------------------------------------------------
# the node

# FNMESH_TEST_ISOLATION=process runs a suite's nodes with --isolation process
# (ctest's integration.process.* entries): the same tests, JavaScript, Lua
# and templates in sandboxed worker processes.
ISOLATION = os.environ.get("FNMESH_TEST_ISOLATION", "")


class NodeStartError(RuntimeError):
    pass


class Node:
    """One `fnmesh serve` process on 127.0.0.1:<free port>."""

    def __init__(self, data_dir=None, token="test-token", extra_args=(),
                 env=None, start=True):
        require_binary()
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="fnmesh-it-")
        self.env_token = token
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        self.proc = None
        self.port = None
        self.log_path = os.path.join(self.data_dir, "node.log")
        self._log = None
        if start:
            self.start()

    # ---- process

    def _env(self):
        env = dict(os.environ)
        for k in ("FNMESH_ADMIN_TOKEN", "FNMESH_URL", "FNMESH_TOKEN"):
            env.pop(k, None)
        if self.env_token is not None:
            env["FNMESH_ADMIN_TOKEN"] = self.env_token
        env.update(self.extra_env)
        return env

    def start(self):
        assert self.proc is None or self.proc.poll() is not None
        self.port = free_port()
        self._log = open(self.log_path, "ab")
        self._log.write(b"\n===== fmtest: starting node on port %d =====\n" % self.port)
        self._log.flush()
        self.argv = [BIN, "serve", "--listen", "127.0.0.1:%d" % self.port,
                     "--data", self.data_dir] + self.extra_args
        if ISOLATION and "--isolation" not in self.extra_args:
            self.argv += ["--isolation", ISOLATION]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     env=self._env(), start_new_session=True)
        _live_nodes.append(self)
        deadline = time.monotonic() + START_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NodeStartError("node exited with %s during start\n%s" % (
                    self.proc.returncode, self.log_tail()))
            try:
                st, _, _ = self.request("GET", "/readyz", token=None, timeout=2)
                last = st
                if st == 200:
                    return self
            except (OSError, http.client.HTTPException) as e:
                last = e
            time.sleep(0.05)
        self.kill9()
        raise NodeStartError("node not ready after %.0fs (last: %r)\n%s" % (
            START_TIMEOUT, last, self.log_tail()))

    @property
    def pid(self):
        return self.proc.pid

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        os.kill(self.proc.pid, sig)

    def wait(self, timeout):
        """Exit code, or raises subprocess.TimeoutExpired."""
        rc = self.proc.wait(timeout)
        self._closed()
        return rc

    def _closed(self):
        if self in _live_nodes:
            _live_nodes.remove(self)
        if self._log and not self._log.closed:
            self._log.close()

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Sends `sig`, waits up to `timeout` s and returns the exit code.
        Kills with SIGKILL and raises AssertionError when it does not exit."""
        if not self.running():
            rc = self.proc.returncode if self.proc else None
            self._closed()
            return rc
        os.kill(self.proc.pid, sig)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError("node did not exit within %ss of signal %s\n%s"
                                 % (timeout, sig, self.log_tail()))

    def kill9(self):
        if self.running():
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
        self._closed()

    def restart(self, sig=signal.SIGTERM):
        """Stops (sig; SIGKILL when sig is SIGKILL) and starts again on the
        same data dir (on a new free port)."""
        if sig == signal.SIGKILL:
            self.kill9()
        else:
            self.stop(sig)
        return self.start()

    # what AddressSanitizer, LeakSanitizer and UBSan print when they find a bug
    SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

    def sanitizer_report(self):
        """The sanitizer report in the node's log, or None."""
        text = self.log_text()
        for marker in self.SANITIZER_MARKERS:
            i = text.find(marker)
            if i >= 0:
                return text[max(0, i - 200):i + 4000]
        return None

    def close(self):
        try:
            if self.running():
                try:
                    self.stop(timeout=5)
                except AssertionError:
                    pass
        finally:
            self.kill9()
            report = self.sanitizer_report()
            if self.own_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)
        if report:
            raise AssertionError("the node's sanitizers reported a bug:\n" + report)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ---- log

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, nbytes=6000):
        t = self.log_text()
        return t[-nbytes:]

    def wait_for_log(self, predicate, timeout=5.0):
        """Waits until a log line satisfies predicate(line); returns it or None."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_text().splitlines():
                if predicate(line):
                    return line
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    # ---- token

    @property
    def token(self):
        if self.env_token is not None:
            return self.env_token
        with open(os.path.join(self.data_dir, "admin.token")) as f:
            return f.read().strip()

    # ---- HTTP

    def connection(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, token=DEFAULT,
                conn=None, timeout=30):
        """-> (status, {lowercased header: value}, body bytes).

        token: DEFAULT sends the node's admin token, None sends none, a string
        sends `Authorization: Bearer <string>`. conn: a keep-alive
        http.client connection to reuse (left open)."""
        hdrs = dict(headers or {})
        if token is DEFAULT:
            token = self.token if path.startswith("/system/") else None
        if token is not None and "Authorization" not in hdrs:
            hdrs["Authorization"] = "Bearer " + token
        if isinstance(body, str):
            body = body.encode("utf-8")
        own = conn is None
        c = conn or self.connection(timeout)
        try:
            c.request(method, path, body=body, headers=hdrs)
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        except (ConnectionError, http.client.RemoteDisconnected):
            if self.proc is not None:
                try:
                    self.proc.wait(0.5)  # a crash resets connections first
                except subprocess.TimeoutExpired:
                    pass
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError("%s %s: the node (pid %d) is gone, exit status %s" % (
                    method, path, self.proc.pid, self.proc.returncode)) from None
            raise
        finally:
            if own:
                c.close()

    def req_json(self, method, path, obj=None, raw=None, headers=None,
                 token=DEFAULT, conn=None, timeout=30):
        """Like request() with a JSON body (obj) or raw bytes; returns
        (status, headers, parsed JSON or None for an empty body)."""
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        body = raw if raw is not None else (
            json.dumps(obj).encode() if obj is not None else None)
        st, h, data = self.request(method, path, body, hdrs, token, conn, timeout)
        return st, h, parse_json(data, st)

    def call(self, dep, fn, *args, **kw):
        """POST /fn/dep/fn with the positional args -> (status, parsed body)."""
        st, _, obj = self.req_json("POST", "/fn/%s/%s" % (dep, fn), list(args), **kw)
        return st, obj

    def call_body(self, dep, fn, raw, **kw):
        """POST raw bytes to /fn/dep/fn -> (status, parsed body)."""
        st, _, obj = self.req_json("POST", "/fn/%s/%s" % (dep, fn), raw=raw, **kw)
        return st, obj

    def rpc(self, payload, raw=None, **kw):
        """POST /rpc -> (status, headers, parsed body or None)."""
        return self.req_json("POST", "/rpc", payload, raw=raw, **kw)

    def deploy(self, name, files=None, symlinks=None, raw=None, token=DEFAULT,
               **bundle_kw):
        """PUT /system/v1/deployments/name -> (status, parsed body)."""
        body = raw if raw is not None else make_bundle(files, symlinks, **bundle_kw)
        st, _, data = self.request(
            "PUT", "/system/v1/deployments/" + name, body,
            {"Content-Type": "application/gzip"}, token=token, timeout=120)
        return st, parse_json(data, st)

    def get(self, path, token=DEFAULT):
        st, _, obj = self.req_json("GET", path, token=token)
        return st, obj


def parse_json(data, status=None):
    if data == b"":
        return None
    try:
        return json.loads(data)
    except ValueError:
        raise AssertionError("response (status %s) is not JSON: %r" % (status, data[:500]))


def err_field(body, key):
    """A field of an error envelope: error.<key>, else error.details.<key>."""
    e = body["error"]
    if key in e:
        return e[key]
    d = e.get("details")
    if isinstance(d, dict) and key in d:
        return d[key]
    raise KeyError("error envelope has no %r: %r" % (key, body))


# --------------------------------------------------------------------------
# a minimal HTTP/2 (h2c, prior knowledge) client: enough to send many
# concurrent streams on one connection and read the answers. Request headers
# are sent as HPACK literals (no Huffman, no dynamic table); of the response
# headers only an indexed :status is decoded (0x88 = 200 and friends).

_H2_STATUS = {0x88: 200, 0x89: 204, 0x8A: 206, 0x8B: 304, 0x8C: 400, 0x8D: 404, 0x8E: 500}


def _hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_literal(name, value):
    name, value = name.encode(), value.encode()
    return (b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value)


def _h2_frame(ftype, flags, stream, payload=b""):
    return (len(payload).to_bytes(3, "big") + bytes([ftype, flags]) +
            stream.to_bytes(4, "big") + payload)


def h2_requests(port, reqs, timeout=20):
    """Sends every (method, path, body|None, headers) of `reqs` as its own
    stream on ONE h2c connection, all before reading any answer. Returns
    [(status or None, body bytes, completion order index)] in request order.
    Raises AssertionError on GOAWAY / RST_STREAM / timeout."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        out = [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", _h2_frame(4, 0, 0)]  # SETTINGS
        streams = {}
        for i, (method, path, body, headers) in enumerate(reqs):
            sid = 2 * i + 1
            block = b"".join([_hpack_literal(":method", method), _hpack_literal(":scheme", "http"),
                              _hpack_literal(":path", path),
                              _hpack_literal(":authority", "127.0.0.1:%d" % port)] +
                             [_hpack_literal(k.lower(), v) for k, v in (headers or {}).items()])
            if body is not None:
                block += _hpack_literal("content-length", str(len(body)))
            out.append(_h2_frame(1, 0x4 | (0x1 if body is None else 0), sid, block))
            if body is not None:
                out.append(_h2_frame(0, 0x1, sid, body))
            streams[sid] = {"i": i, "status": None, "body": b"", "done": False}
        sock.sendall(b"".join(out))
        buf = b""
        order = 0
        deadline = time.monotonic() + timeout
        while not all(st["done"] for st in streams.values()):
            while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
                if time.monotonic() > deadline:
                    raise AssertionError("h2: timed out; pending streams %r" % sorted(
                        s for s, st in streams.items() if not st["done"]))
                chunk = sock.recv(65536)
                if not chunk:
                    raise AssertionError("h2: connection closed; pending streams %r" % sorted(
                        s for s, st in streams.items() if not st["done"]))
                buf += chunk
            n = int.from_bytes(buf[:3], "big")
            ftype, flags = buf[3], buf[4]
            sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload, buf = buf[9:9 + n], buf[9 + n:]
            if ftype == 4 and not flags & 0x1:             # SETTINGS -> ACK
                sock.sendall(_h2_frame(4, 0x1, 0))
            elif ftype == 6 and not flags & 0x1:           # PING -> ACK
                sock.sendall(_h2_frame(6, 0x1, 0, payload))
            elif ftype == 7:                               # GOAWAY
                raise AssertionError("h2: GOAWAY %r" % payload)
            elif ftype == 3:                               # RST_STREAM
                raise AssertionError("h2: RST_STREAM on %d: %r" % (sid, payload))
            elif ftype in (0, 1) and sid in streams:
                if flags & 0x8:                            # PADDED
                    payload = payload[1:len(payload) - payload[0]]
                st = streams[sid]
                if ftype == 1:
                    if flags & 0x20:                       # PRIORITY
                        payload = payload[5:]
                    if st["status"] is None and payload:
                        st["status"] = _H2_STATUS.get(payload[0], "undecoded 0x%02x" % payload[0])
                else:
                    st["body"] += payload
                    if payload:                            # give the window back
                        inc = len(payload).to_bytes(4, "big")
                        sock.sendall(_h2_frame(8, 0, 0, inc) + _h2_frame(8, 0, sid, inc))
                if flags & 0x1:                            # END_STREAM
                    st["done"] = True
                    st["order"] = order
                    order += 1
        res = [None] * len(reqs)
        for st in streams.values():
            res[st["i"]] = (st["status"], st["body"], st["order"])
        return res
    finally:
        sock.close()


# --------------------------------------------------------------------------
# test case base

class FnTestCase(unittest.TestCase):
    """unittest.TestCase that prints the tail of each node's log when a test
    fails. Nodes from start_node() are stopped and removed after the test;
    nodes made in setUpClass with cls.class_node() after the class."""

    maxDiff = 4000
    _class_nodes = ()

    @classmethod
    def class_node(cls, **kw):
        """A node shared by the tests of the class, closed after the class
        (also when setUpClass fails half-way)."""
        n = Node(**kw)
        if "_class_nodes" not in cls.__dict__:
            cls._class_nodes = []
        cls._class_nodes.append(n)
        cls.addClassCleanup(n.close)
        return n

    @classmethod
    def must_deploy(cls, node, name, files, want=(200, 201), **kw):
        """Deploys in setUpClass; raises (with the node's log) on failure."""
        st, body = node.deploy(name, files, **kw)
        if st not in want:
            raise AssertionError("deploy %s -> %s %r\n%s" % (name, st, body, node.log_tail()))
        return body

    def start_node(self, **kw):
        n = Node(**kw)
        self._nodes.append(n)
        self.addCleanup(n.close)
        return n

    def track_node(self, n):
        self._nodes.append(n)
        self.addCleanup(n.close)
        return n

    def setUp(self):
        super().setUp()
        self._nodes = []

    def tearDown(self):
        # Runs after the test method (whose failure is already recorded in
        # the result) and before the cleanups that close per-test nodes.
        if self._test_failed():
            self._dump_logs()
        super().tearDown()

    def _test_failed(self):
        r = getattr(getattr(self, "_outcome", None), "result", None)
        if r is None:
            return False
        for test, _ in list(getattr(r, "failures", ())) + list(getattr(r, "errors", ())):
            if getattr(test, "test_case", test) is self:  # subtests too
                return True
        return False

    def _dump_logs(self):
        nodes = list(self._nodes) + list(type(self).__dict__.get("_class_nodes") or ())
        for n in nodes:
            size = len(n.log_text())
            if getattr(n, "_dumped_size", None) == size:
                sys.stderr.write("\n----- %s: log unchanged since the last dump -----\n"
                                 % n.log_path)
                continue
            n._dumped_size = size
            sys.stderr.write("\n----- tail of %s (pid %s, %s) for %s -----\n%s\n-----\n" % (
                n.log_path, n.proc.pid if n.proc else "-", n.url if n.port else "-",
                self.id(), n.log_tail()))

    # ---- assertions

    def assertError(self, status, body, want_status, code, msg_contains=()):
        """Asserts an error envelope {"error": {"code", "message", "request_id"}}."""
        self.assertEqual(status, want_status, "body: %r" % (body,))
        self.assertIsInstance(body, dict, "error body must be a JSON object")
        self.assertIn("error", body, body)
        e = body["error"]
        self.assertEqual(e.get("code"), code, body)
        self.assertIsInstance(e.get("message"), str, body)
        self.assertTrue(e["message"], body)
        for s in ([msg_contains] if isinstance(msg_contains, str) else msg_contains):
            self.assertIn(s, e["message"], body)
        return e


def run_cli(*args, env=None, cwd=None, timeout=60, input=None):
    """Runs `$FNMESH_BIN args...` -> CompletedProcess (text)."""
    e = dict(os.environ)
    for k in ("FNMESH_ADMIN_TOKEN", "FNMESH_URL", "FNMESH_TOKEN"):
        e.pop(k, None)
    e.update(env or {})
    return subprocess.run([BIN] + [str(a) for a in args], env=e, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          input=input, stdin=None if input is not None else subprocess.DEVNULL)


def p99(samples):
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * 0.99))]


def latencies(test, node, dep, fn, n, want):
    """Milliseconds of n sequential POST /fn/dep/fn calls (no arguments) on
    one keep-alive connection; each must answer 200 with `want`."""
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    out = []
    try:
        for _ in range(n):
            t0 = time.monotonic()
            conn.request("POST", "/fn/%s/%s" % (dep, fn), body=b"[]",
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            body = r.read()
            out.append((time.monotonic() - t0) * 1000)
            test.assertEqual((r.status, json.loads(body)), (200, want))
    finally:
        conn.close()
    return out


def parallel(fn, items, threads=8):
    """Runs fn(item) over items in `threads` threads; returns results in order.
    Exceptions are returned in place of results."""
    results = [None] * len(items)
    idx = iter(range(len(items)))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                try:
                    i = next(idx)
                except StopIteration:
                    return
            try:
                results[i] = fn(items[i])
            except Exception as e:  # noqa: BLE001 - reported by the caller
                results[i] = e

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return results


def main():
    unittest.main(verbosity=2)
