"""HTTP surface: keep-alive, h2c, malformed input on raw sockets, 404/405
envelopes, Content-Length, and many concurrent calls."""
import json
import shutil
import socket
import subprocess
import time
import unittest

from fmtest import FnTestCase, h2_requests, main, parallel

SRC = r"""
exports.merge = (a, b) => a + b;
exports.echo = (x) => x;
exports.nap = async (ms) => { await new Promise(r => setTimeout(r, ms)); return ms; };
"""


class HttpTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node()
        cls.must_deploy(cls.node, "h", {"index.js": SRC})

    def raw_exchange(self, data, timeout=5):
        """Sends raw bytes; returns what the server answers up to the end of
        the response head, until it closes, or until the timeout passes."""
        s = socket.create_connection(("127.0.0.1", self.node.port), timeout=timeout)
        got = b""
        try:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may stop reading early
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and b"\r\n\r\n" not in got:
                try:
                    chunk = s.recv(65536)
                except (ConnectionResetError, socket.timeout):
                    break
                if not chunk:
                    break
                got += chunk
        finally:
            s.close()
        return got

    def assert_still_serving(self):
        self.assertEqual(self.node.call("h", "merge", "s", "t"), (200, "st"))

    # ---- connections

    def test_keep_alive(self):
        c = self.node.connection()
        try:
            st, _, body = self.node.req_json("GET", "/healthz", conn=c)
            self.assertEqual(st, 200)
            sock = c.sock
            self.assertIsNotNone(sock)
            steps = [
                ("POST", "/fn/h/merge", b'["a","b"]', 200, "ab"),
                ("GET", "/fn/h/merge?a=1&b=2", None, 200, 3),
                ("POST", "/fn/h/nosuch", b"[]", 404, None),
                ("POST", "/fn/h/echo", b"[1,", 400, None),
                ("GET", "/nope", None, 404, None),
                ("POST", "/fn/h/echo", b'[{"k":"v"}]', 200, {"k": "v"}),
                ("GET", "/readyz", None, 200, {"status": "ready"}),
            ] * 3
            for method, path, body, want, result in steps:
                st, h, obj = self.node.req_json(method, path, raw=body, conn=c)
                self.assertEqual(st, want, (method, path, obj))
                if result is not None:
                    self.assertEqual(obj, result)
                self.assertIs(c.sock, sock, "server closed the keep-alive connection after "
                                            "%s %s" % (method, path))
                self.assertNotEqual(h.get("connection", "").lower(), "close")
        finally:
            c.close()

    def test_pipelined_requests(self):
        req = (b"POST /fn/h/merge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 9\r\n\r\n[\"p\",\"q\"]")
        s = socket.create_connection(("127.0.0.1", self.node.port), timeout=5)
        try:
            s.sendall(req * 3)
            got = b""
            deadline = time.monotonic() + 5
            while got.count(b'"pq"') < 3 and time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        finally:
            s.close()
        self.assertEqual(got.count(b"HTTP/1.1 200"), 3, got)
        self.assertEqual(got.count(b'"pq"'), 3, got)

    @unittest.skipUnless(shutil.which("curl"), "curl is not installed")
    def test_h2c_prior_knowledge(self):
        out = subprocess.run(
            ["curl", "--http2-prior-knowledge", "-s", "-o", "/dev/null", "-w", "%{http_version}",
             self.node.url + "/healthz"], capture_output=True, text=True, timeout=20)
        self.assertEqual(out.stdout.strip(), "2", out)
        out = subprocess.run(
            ["curl", "--http2-prior-knowledge", "-s", "-w", "\n%{http_version} %{http_code}",
             "-H", "Content-Type: application/json", "--data-binary", '["a","b"]',
             self.node.url + "/fn/h/merge"], capture_output=True, text=True, timeout=20)
        self.assertEqual(out.stdout.split("\n"), ['"ab"', "2 200"], out)

    @unittest.skipUnless(shutil.which("curl"), "curl is not installed")
    def test_h2c_upgrade(self):
        out = subprocess.run(
            ["curl", "--http2", "-s", "-o", "/dev/null", "-w", "%{http_version}",
             self.node.url + "/healthz"], capture_output=True, text=True, timeout=20)
        self.assertEqual(out.stdout.strip(), "2", out)

    def test_h2c_concurrent_streams_on_one_connection(self):
        # curl 7.88 cannot reuse a prior-knowledge connection (curl#10634), so
        # this uses the harness's own small h2c client.
        reqs = [("POST", "/fn/h/nap", b"[400]", {"content-type": "application/json"})]
        reqs += [("POST", "/fn/h/merge", json.dumps(["s%d-" % i, i]).encode(),
                  {"content-type": "application/json"}) for i in range(20)]
        reqs += [("GET", "/fn/h/merge?a=%d&b=1" % i, None, {}) for i in range(10)]
        res = h2_requests(self.node.port, reqs)
        self.assertEqual((res[0][0], json.loads(res[0][1])), (200, 400))
        for i in range(20):
            self.assertEqual((res[1 + i][0], json.loads(res[1 + i][1])), (200, "s%d-%d" % (i, i)))
        for i in range(10):
            self.assertEqual((res[21 + i][0], json.loads(res[21 + i][1])), (200, i + 1))
        # The slow stream did not hold the others back.
        self.assertEqual(res[0][2], len(reqs) - 1, "the 400 ms call finished before fast ones")

    # ---- malformed input

    def test_malformed_request_line(self):
        for junk in (b"GARBAGE\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                     b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
                     b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                     b"POST /fn/h/merge HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"):
            with self.subTest(junk=junk[:40]):
                got = self.raw_exchange(junk)
                if got:
                    self.assertRegex(got[:12], rb"^HTTP/1\.[01] (4\d\d|505)", got[:200])
                self.assert_still_serving()

    def test_oversized_header(self):
        got = self.raw_exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " +
                                b"a" * (1 << 20) + b"\r\n\r\n")
        if got:
            self.assertRegex(got[:12], rb"^HTTP/1\.[01] (4\d\d|505)", got[:200])
        self.assert_still_serving()

    def test_half_sent_request_then_close(self):
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", self.node.port), timeout=5)
            s.sendall(b"POST /fn/h/merge HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n[1,")
            s.close()
        self.assert_still_serving()

    # ---- routing envelopes

    def test_unknown_path_is_404_json(self):
        for path in ("/", "/nope", "/fn", "/system", "/rpc/extra"):
            with self.subTest(path=path):
                st, h, body = self.node.req_json("GET", path)
                self.assertError(st, body, 404, "not_found")
                self.assertEqual(body["error"]["request_id"], h["x-request-id"])

    def test_wrong_method_is_405_with_allow(self):
        cases = [("DELETE", "/fn/h/merge", {"GET", "POST"}),
                 ("PUT", "/fn/h/merge", {"GET", "POST"}),
                 ("GET", "/rpc", {"POST"}),
                 ("PATCH", "/system/v1/deployments/h", {"GET", "PUT", "DELETE"}),
                 ("GET", "/system/v1/deployments/h/rollback", {"POST"}),
                 ("POST", "/system/v1/deployments", {"GET"})]
        for method, path, allow in cases:
            with self.subTest(method=method, path=path):
                st, h, body = self.node.req_json(method, path)
                self.assertError(st, body, 405, "method_not_allowed")
                got = {m.strip().upper() for m in h.get("allow", "").split(",") if m.strip()}
                self.assertTrue(allow <= got, "Allow: %r" % h.get("allow"))
                self.assertNotIn(method, got)

    def test_content_length_is_set(self):
        st, h, data = self.node.request("POST", "/fn/h/echo", json.dumps(["z" * 5000]).encode())
        self.assertEqual(st, 200)
        self.assertEqual(int(h["content-length"]), len(data))
        self.assertNotIn("transfer-encoding", h)
        self.assertEqual(json.loads(data), "z" * 5000)

    # ---- load

    def test_many_concurrent_calls(self):
        def worker(t):
            c = self.node.connection()
            res = []
            try:
                for i in range(25):
                    st, _, body = self.node.req_json("POST", "/fn/h/merge",
                                                     ["t%d-" % t, "%d" % i], conn=c)
                    res.append((st, body))
            finally:
                c.close()
            return res

        results = parallel(worker, list(range(8)), threads=8)
        for t, res in enumerate(results):
            self.assertNotIsInstance(res, Exception, res)
            self.assertEqual(res, [(200, "t%d-%d" % (t, i)) for i in range(25)])

    def test_concurrent_calls_on_fresh_connections(self):
        res = parallel(lambda i: self.node.call("h", "merge", i, 1000), list(range(200)),
                       threads=8)
        self.assertEqual(res, [(200, i + 1000) for i in range(200)])


if __name__ == "__main__":
    main()
