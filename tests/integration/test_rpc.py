"""JSON-RPC 2.0 at POST /rpc: calls, ids, notifications, batches and every
standard error code."""
import json
import time

from fmtest import FnTestCase, main

RPC_SRC = r"""
exports.merge = (a, b) => a + b;
exports.args = function () { return Array.prototype.slice.call(arguments); };
exports.greet = (name, greeting = "Hello") => greeting + ", " + name;
exports.boom = () => { throw new TypeError("rpc-boom"); };
exports.spin = () => { for (;;) {} };
exports.note = (m) => { console.log("rpc-note-" + m); return m; };
"""


class RpcTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node()
        cls.must_deploy(cls.node, "rpc", {
            "index.js": RPC_SRC,
            "fnmesh.json": '{"functions": {"spin": {"timeout_ms": 300}}}'})

    def rpc(self, payload=None, raw=None):
        st, h, body = self.node.rpc(payload, raw=raw)
        if body is not None:
            self.assertTrue(h.get("content-type", "").startswith("application/json"), h)
        return st, body

    def assert_result(self, resp, id_, result):
        self.assertIsInstance(resp, dict, resp)
        self.assertEqual(resp, {"jsonrpc": "2.0", "id": id_, "result": result})

    def assert_rpc_error(self, resp, id_, code, msg_contains=None):
        self.assertIsInstance(resp, dict, resp)
        self.assertEqual(resp.get("jsonrpc"), "2.0", resp)
        self.assertNotIn("result", resp)
        self.assertIn("id", resp, resp)
        if id_ is not ...:
            self.assertEqual(resp["id"], id_, resp)
        err = resp["error"]
        self.assertEqual(err["code"], code, resp)
        self.assertIsInstance(err["message"], str)
        if msg_contains:
            self.assertIn(msg_contains, err["message"])
        return err

    # ---- calls

    def test_positional_params_and_numeric_id(self):
        st, body = self.rpc({"jsonrpc": "2.0", "method": "rpc.merge", "params": ["a", "b"],
                             "id": 1})
        self.assertEqual(st, 200)
        self.assert_result(body, 1, "ab")

    def test_named_params_and_string_id(self):
        st, body = self.rpc({"jsonrpc": "2.0", "method": "rpc.merge",
                             "params": {"b": "y", "a": "x"}, "id": "abc-1"})
        self.assert_result(body, "abc-1", "xy")
        st, body = self.rpc({"jsonrpc": "2.0", "method": "rpc.greet",
                             "params": {"name": "Jo"}, "id": 2.5})
        self.assert_result(body, 2.5, "Hello, Jo")

    def test_missing_params_and_null_id(self):
        st, body = self.rpc({"jsonrpc": "2.0", "method": "rpc.args", "id": None})
        self.assert_result(body, None, [])

    def test_notification_gets_no_response(self):
        st, h, data = self.node.request(
            "POST", "/rpc", json.dumps({"jsonrpc": "2.0", "method": "rpc.note",
                                        "params": ["single"]}).encode(),
            {"Content-Type": "application/json"})
        self.assertEqual((st, data), (204, b""))
        # ... but it ran.
        self.assertIsNotNone(self.node.wait_for_log(lambda l: "rpc-note-single" in l),
                             "the notification was not executed")

    def test_batch(self):
        st, body = self.rpc([
            {"jsonrpc": "2.0", "method": "rpc.merge", "params": [1, 2], "id": 1},
            {"jsonrpc": "2.0", "method": "rpc.note", "params": ["in-batch"]},
            {"jsonrpc": "2.0", "method": "rpc.merge", "params": {"a": "p", "b": "q"},
             "id": "two"},
            {"jsonrpc": "2.0", "method": "rpc.nosuch", "params": [], "id": 3},
            {"jsonrpc": "2.0", "method": "rpc.boom", "id": 4},
            {"jsonrpc": "2.0", "method": "rpc.merge", "params": [1, 1]},
        ])
        self.assertEqual(st, 200)
        self.assertIsInstance(body, list)
        self.assertEqual(len(body), 4, body)
        by_id = {r["id"]: r for r in body}
        self.assertEqual(sorted(by_id, key=str), [1, 3, 4, "two"])
        self.assert_result(by_id[1], 1, 3)
        self.assert_result(by_id["two"], "two", "pq")
        self.assert_rpc_error(by_id[3], 3, -32601)
        self.assert_rpc_error(by_id[4], 4, -32000, "rpc-boom")
        self.assertIsNotNone(self.node.wait_for_log(lambda l: "rpc-note-in-batch" in l))

    def test_large_batch(self):
        reqs = [{"jsonrpc": "2.0", "method": "rpc.merge", "params": [i, 1000], "id": i}
                for i in range(60)]
        st, body = self.rpc(reqs)
        self.assertEqual(len(body), 60)
        self.assertEqual({r["id"]: r["result"] for r in body}, {i: i + 1000 for i in range(60)})

    def test_all_notification_batch_is_204(self):
        st, h, data = self.node.request("POST", "/rpc", json.dumps([
            {"jsonrpc": "2.0", "method": "rpc.merge", "params": [1, 2]},
            {"jsonrpc": "2.0", "method": "rpc.note", "params": ["all-notes"]},
        ]).encode(), {"Content-Type": "application/json"})
        self.assertEqual((st, data), (204, b""))

    # ---- errors

    def test_empty_batch_is_single_invalid_request(self):
        st, body = self.rpc(raw=b"[]")
        self.assert_rpc_error(body, None, -32600)

    def test_parse_error(self):
        for raw in (b'{"jsonrpc": "2.0", "method"', b"nope",
                    b'[{"jsonrpc":"2.0","method":"rpc.merge","params":[1,2],"id":1},'
                    b'{"jsonrpc":"2.0","method"]'):
            with self.subTest(raw=raw):
                st, body = self.rpc(raw=raw)
                self.assertIsInstance(body, dict, body)
                self.assert_rpc_error(body, None, -32700)

    def test_invalid_requests(self):
        cases = [
            ({"jsonrpc": "1.0", "method": "rpc.merge", "params": [1, 2], "id": 1}, (1, None)),
            ({"method": "rpc.merge", "params": [1, 2], "id": 5}, (5, None)),
            ({"jsonrpc": "2.0", "id": 2}, (2, None)),
            ({"jsonrpc": "2.0", "method": 5, "id": 3}, (3, None)),
            ({"jsonrpc": "2.0", "method": "rpc.merge", "id": {"x": 1}}, (None,)),
            ("just a string", (None,)),
            (7, (None,)),
        ]
        for payload, ids in cases:
            with self.subTest(payload=payload):
                st, body = self.rpc(payload)
                err = self.assert_rpc_error(body, ..., -32600)
                self.assertIn(body["id"], ids, body)

    def test_batch_of_non_objects(self):
        st, body = self.rpc([1, 2])
        self.assertIsInstance(body, list, body)
        self.assertEqual(len(body), 2, body)
        for r in body:
            self.assert_rpc_error(r, None, -32600)

    def test_unknown_method(self):
        for method in ("rpc.nosuch", "nosuchdep.merge", "nodot", "rpc.", ".merge",
                       "rpc.merge.extra", "rpc.__proto__"):
            with self.subTest(method=method):
                st, body = self.rpc({"jsonrpc": "2.0", "method": method, "params": [], "id": 9})
                self.assert_rpc_error(body, 9, -32601)

    def test_bad_params_type(self):
        for params in (3, "str", True):
            with self.subTest(params=params):
                st, body = self.rpc({"jsonrpc": "2.0", "method": "rpc.merge", "params": params,
                                     "id": 11})
                self.assert_rpc_error(body, 11, -32602)

    def test_thrown_error(self):
        st, body = self.rpc({"jsonrpc": "2.0", "method": "rpc.boom", "params": [], "id": 12})
        err = self.assert_rpc_error(body, 12, -32000)
        self.assertEqual(err["message"], "rpc-boom")
        self.assertEqual(err["data"]["name"], "TypeError")
        self.assertIsInstance(err["data"]["stack"], str)

    def test_deadline_exceeded(self):
        t0 = time.monotonic()
        try:
            st, h, body = self.node.rpc({"jsonrpc": "2.0", "method": "rpc.spin", "id": 13},
                                        timeout=10)
        except TimeoutError:
            self.fail("rpc.spin (timeout_ms 300): no answer within 10 s")
        self.assert_rpc_error(body, 13, -32001)
        self.assertLess(time.monotonic() - t0, 5.0)
        st, body = self.rpc({"jsonrpc": "2.0", "method": "rpc.merge", "params": [2, 2],
                             "id": 14})
        self.assert_result(body, 14, 4)


if __name__ == "__main__":
    main()
