"""Process life cycle: /healthz, /readyz, draining on SIGTERM/SIGINT with
in-flight calls, exit codes, refusal to start on a busy port."""
import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import shutil
import threading
import time

from fmtest import BIN, FnTestCase, free_port, main

SLOW_SRC = ("exports.slow = async () => { await new Promise(r => setTimeout(r, 1500));"
            " return 'done'; };\n"
            "exports.fast = () => 'fast';\n")


class LifecycleTest(FnTestCase):
    def test_healthz_and_readyz(self):
        node = self.start_node()
        for path, status in (("/healthz", "ok"), ("/readyz", "ready")):
            st, h, data = node.request("GET", path)
            self.assertEqual(st, 200, data)
            self.assertTrue(h.get("content-type", "").startswith("application/json"), h)
            self.assertEqual(json.loads(data), {"status": status})

    def drain_with_slow_call(self, sig):
        node = self.start_node()
        st, body = node.deploy("slowpoke", {"index.js": SLOW_SRC})
        self.assertEqual(st, 201, body)
        out = {}

        def call():
            t0 = time.monotonic()
            try:
                out["res"] = node.call("slowpoke", "slow", timeout=20)
            except Exception as e:  # noqa: BLE001
                out["res"] = e
            out["dt"] = time.monotonic() - t0

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.4)  # the call is in flight
        t_sig = time.monotonic()
        node.send_signal(sig)
        # New work during the drain is refused (503 draining) or the listener
        # is already closed.
        time.sleep(0.2)
        try:
            st, _, body = node.req_json("POST", "/fn/slowpoke/fast", [], timeout=5)
            if st != 503:
                self.fail("new call during drain answered %s %r" % (st, body))
            self.assertEqual(body["error"]["code"], "draining")
        except (ConnectionError, http.client.RemoteDisconnected):
            pass
        t.join(20)
        self.assertEqual(out["res"], (200, "done"))
        self.assertGreaterEqual(out["dt"], 1.4)
        rc = node.wait(15)
        self.assertEqual(rc, 0)
        self.assertLess(time.monotonic() - t_sig, 10)

    def test_sigterm_drains_in_flight_call_and_exits_0(self):
        self.drain_with_slow_call(signal.SIGTERM)

    def test_sigint_drains_in_flight_call_and_exits_0(self):
        self.drain_with_slow_call(signal.SIGINT)

    def test_idle_sigterm_exits_0_promptly(self):
        node = self.start_node()
        t0 = time.monotonic()
        self.assertEqual(node.stop(signal.SIGTERM, timeout=10), 0)
        self.assertLess(time.monotonic() - t0, 5)

    def test_busy_port_fails_to_start(self):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            d = tempfile.mkdtemp(prefix="fnmesh-it-")
            try:
                p = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:%d" % port,
                                    "--data", d], capture_output=True, timeout=20,
                                   env=dict(os.environ, FNMESH_ADMIN_TOKEN="x"))
            finally:
                shutil.rmtree(d, ignore_errors=True)
            self.assertNotEqual(p.returncode, 0)
            self.assertTrue((p.stdout + p.stderr).strip(), "no message on a busy port")

    def test_restart_serves_after_clean_stop(self):
        node = self.start_node()
        st, body = node.deploy("again", {"index.js": SLOW_SRC})
        self.assertEqual(st, 201, body)
        node.restart(signal.SIGTERM)
        self.assertEqual(node.call("again", "fast"), (200, "fast"))


if __name__ == "__main__":
    main()
