"""Control plane: deploy, versions, identical content, list/get, rollback,
delete, deployment names and bearer-token auth (docs/api.md, /system/v1)."""
import datetime
import json
import threading
import time

from fmtest import HEX64, ISO_UTC, FnTestCase, main, make_bundle, parallel

MERGE_SRC = (
    "exports.merge = (a, b) => a + b;\n"
    "exports.greet = function greet(name, greeting = \"Hello\") {\n"
    "  return greeting + \", \" + name + \"!\";\n"
    "};\n")


def v_src(n):
    return "exports.which = () => %d;\n" % n


class DeployTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node()

    # ---- helpers

    def deploy_ok(self, name, files, want=201, **kw):
        st, body = self.node.deploy(name, files, **kw)
        self.assertEqual(st, want, body)
        return body

    def versions(self, name):
        st, body = self.node.get("/system/v1/deployments/%s/versions" % name)
        self.assertEqual(st, 200, body)
        self.assertEqual(body["name"], name)
        return body["versions"]

    def assert_deployment_object(self, body, name):
        self.assertEqual(body["name"], name)
        self.assertRegex(body["version"], HEX64)
        self.assertRegex(body["created_at"], ISO_UTC)
        created = datetime.datetime.strptime(body["created_at"][:19], "%Y-%m-%dT%H:%M:%S")
        now = datetime.datetime.utcnow()
        self.assertLess(abs((now - created).total_seconds()), 300,
                        "created_at %s is not the current UTC time" % body["created_at"])
        self.assertIsInstance(body["functions"], list)

    @staticmethod
    def fn_view(functions):
        return sorted(({k: f.get(k) for k in ("name", "file", "runtime", "params")}
                       for f in functions), key=lambda f: f["name"])

    # ---- deploy

    def test_put_new_deployment_returns_201_and_deployment_object(self):
        st, h, data = self.node.request(
            "PUT", "/system/v1/deployments/hello", make_bundle({"index.js": MERGE_SRC}),
            {"Content-Type": "application/gzip"})
        self.assertEqual(st, 201, data)
        self.assertTrue(h.get("content-type", "").startswith("application/json"), h)
        body = json.loads(data)
        self.assert_deployment_object(body, "hello")
        self.assertEqual(self.fn_view(body["functions"]), [
            {"name": "greet", "file": "index.js", "runtime": "js", "params": ["name", "greeting"]},
            {"name": "merge", "file": "index.js", "runtime": "js", "params": ["a", "b"]},
        ])
        # A warm instance is ready when the PUT returns.
        self.assertEqual(self.node.call("hello", "merge", "a", "b"), (200, "ab"))
        self.assertEqual(self.node.call("hello", "greet", "Ann"), (200, "Hello, Ann!"))

    def test_identical_content_returns_200_and_same_version(self):
        files = {"index.js": v_src(1), "lib/util.js": "exports.u = 1;\n",
                 "README.md": "# readme\n"}
        first = self.deploy_ok("same", files, mtime=1000000000)
        # Different mtimes, owners, modes and entry order: same content.
        again = self.deploy_ok("same", files, want=200, mtime=1900000000, reverse=True,
                               uid=0, gid=0, uname="root", gname="root", mode=0o755)
        self.assertEqual(again["version"], first["version"])
        self.assertEqual(again["name"], "same")
        self.assertEqual(self.fn_view(again["functions"]), self.fn_view(first["functions"]))
        vs = self.versions("same")
        self.assertEqual([v["version"] for v in vs], [first["version"]])

    def test_dot_slash_names_and_directory_entries_do_not_change_version(self):
        # `tar -C dir -czf - .` writes ./index.js and directory entries.
        files = {"index.js": v_src(7), "lib/x.js": "exports.x = 1;\n"}
        first = self.deploy_ok("dotslash", files)
        again = self.deploy_ok("dotslash", files, want=200, prefix="./",
                               dirs=(".", "lib"))
        self.assertEqual(again["version"], first["version"])
        self.assertEqual(self.node.call("dotslash", "which"), (200, 7))

    def test_changed_content_creates_new_active_version(self):
        v1 = self.deploy_ok("changing", {"index.js": v_src(1)})
        v2 = self.deploy_ok("changing", {"index.js": v_src(2)})
        self.assertNotEqual(v1["version"], v2["version"])
        self.assertEqual(self.node.call("changing", "which"), (200, 2))
        # A renamed file with the same content is a change too.
        v3 = self.deploy_ok("changing", {"index.js": v_src(2), "notes.txt": "n"})
        v4 = self.deploy_ok("changing", {"index.js": v_src(2), "notes2.txt": "n"})
        self.assertEqual(len({v1["version"], v2["version"], v3["version"], v4["version"]}), 4)

    def test_list_sorted_by_name(self):
        zeta = self.deploy_ok("zeta-list", {"index.js": v_src(26)})
        alpha = self.deploy_ok("alpha-list", {"index.js": v_src(1)})
        st, body = self.node.get("/system/v1/deployments")
        self.assertEqual(st, 200, body)
        deps = body["deployments"]
        names = [d["name"] for d in deps]
        self.assertEqual(names, sorted(names))
        self.assertEqual(len(names), len(set(names)))
        by = {d["name"]: d for d in deps}
        self.assertEqual(by["zeta-list"]["version"], zeta["version"])
        self.assertEqual(by["alpha-list"]["version"], alpha["version"])
        self.assertEqual(self.fn_view(by["alpha-list"]["functions"]),
                         [{"name": "which", "file": "index.js", "runtime": "js", "params": []}])
        for d in deps:
            self.assert_deployment_object(d, d["name"])

    def test_get_one_and_unknown(self):
        dep = self.deploy_ok("getone", {"index.js": MERGE_SRC})
        st, body = self.node.get("/system/v1/deployments/getone")
        self.assertEqual(st, 200, body)
        self.assertEqual(body["name"], "getone")
        self.assertEqual(body["version"], dep["version"])
        self.assertEqual(body["created_at"], dep["created_at"])
        self.assertEqual(self.fn_view(body["functions"]), self.fn_view(dep["functions"]))
        st, body = self.node.get("/system/v1/deployments/no-such-dep")
        self.assertError(st, body, 404, "not_found")
        st, body = self.node.get("/system/v1/deployments/no-such-dep/versions")
        self.assertError(st, body, 404, "not_found")

    def test_versions_newest_first_exactly_one_active(self):
        ids = []
        for i in range(1, 4):
            files = {"index.js": v_src(i)}
            if i == 3:
                files["extra.js"] = "exports.more = () => 0;\n"
            ids.append(self.deploy_ok("hist", files)["version"])
        vs = self.versions("hist")
        self.assertEqual([v["version"] for v in vs], ids[::-1])
        self.assertEqual([v["active"] for v in vs], [True, False, False])
        self.assertEqual([v["functions"] for v in vs], [2, 1, 1])
        for v in vs:
            self.assertRegex(v["created_at"], ISO_UTC)
        stamps = [v["created_at"] for v in vs]
        self.assertEqual(stamps, sorted(stamps, reverse=True))

    def test_rollback_changes_what_the_function_returns(self):
        v1 = self.deploy_ok("rb", {"index.js": v_src(1)})["version"]
        v2 = self.deploy_ok("rb", {"index.js": v_src(2)})["version"]
        self.assertEqual(self.node.call("rb", "which"), (200, 2))
        st, _, body = self.node.req_json("POST", "/system/v1/deployments/rb/rollback",
                                         {"version": v1})
        self.assertEqual(st, 200, body)
        self.assertEqual(body["name"], "rb")
        self.assertEqual(body["version"], v1)
        self.assertEqual(self.node.call("rb", "which"), (200, 1))
        vs = self.versions("rb")
        self.assertEqual([v["version"] for v in vs], [v2, v1], "rollback must not add a version")
        self.assertEqual([v["active"] for v in vs], [False, True])
        st, body = self.node.get("/system/v1/deployments/rb")
        self.assertEqual(body["version"], v1)
        # ... and forward again, with a unique 8-hex prefix.
        st, _, body = self.node.req_json("POST", "/system/v1/deployments/rb/rollback",
                                         {"version": v2[:8]})
        self.assertEqual(st, 200, body)
        self.assertEqual(body["version"], v2)
        self.assertEqual(self.node.call("rb", "which"), (200, 2))

    def test_rollback_refusals_leave_active_version(self):
        v1 = self.deploy_ok("rbbad", {"index.js": v_src(1)})["version"]
        path = "/system/v1/deployments/rbbad/rollback"
        st, _, body = self.node.req_json("POST", path, {"version": "0" * 64})
        self.assertError(st, body, 404, "not_found")
        other = "f" * 64 if v1[0] != "f" else "e" * 64
        st, _, body = self.node.req_json("POST", path, {"version": other[:8]})
        self.assertError(st, body, 404, "not_found")
        st, _, body = self.node.req_json("POST", path, {})
        self.assertError(st, body, 400, "bad_request")
        st, _, body = self.node.req_json("POST", path, {"version": 5})
        self.assertError(st, body, 400, "bad_request")
        st, _, body = self.node.req_json("POST", path, raw=b"{nope")
        self.assertError(st, body, 400, "invalid_json")
        st, _, body = self.node.req_json("POST", "/system/v1/deployments/no-such-dep/rollback",
                                         {"version": v1})
        self.assertError(st, body, 404, "not_found")
        self.assertEqual(self.node.call("rbbad", "which"), (200, 1))
        self.assertEqual([v["active"] for v in self.versions("rbbad")], [True])

    def test_redeploying_an_old_content_reactivates_it_with_200(self):
        v1 = self.deploy_ok("redo", {"index.js": v_src(1)})["version"]
        v2 = self.deploy_ok("redo", {"index.js": v_src(2)})["version"]
        again = self.deploy_ok("redo", {"index.js": v_src(1)}, want=200)
        self.assertEqual(again["version"], v1)
        self.assertEqual(self.node.call("redo", "which"), (200, 1))
        vs = self.versions("redo")
        self.assertEqual(sorted(v["version"] for v in vs), sorted([v1, v2]))
        self.assertEqual({v["version"]: v["active"] for v in vs}, {v1: True, v2: False})

    def test_delete(self):
        self.deploy_ok("gone", {"index.js": MERGE_SRC})
        self.assertEqual(self.node.call("gone", "merge", 1, 2), (200, 3))
        st, _, body = self.node.req_json("DELETE", "/system/v1/deployments/gone")
        self.assertEqual(st, 200, body)
        self.assertEqual(body, {"name": "gone", "deleted": True})
        st, body = self.node.call("gone", "merge", 1, 2)
        self.assertError(st, body, 404, "not_found")
        st, body = self.node.get("/system/v1/deployments/gone")
        self.assertError(st, body, 404, "not_found")
        st, body = self.node.get("/system/v1/deployments")
        self.assertNotIn("gone", [d["name"] for d in body["deployments"]])
        st, _, body = self.node.req_json("DELETE", "/system/v1/deployments/gone")
        self.assertError(st, body, 404, "not_found")
        # The name can be used again.
        st, body = self.node.deploy("gone", {"index.js": v_src(9)})
        self.assertIn(st, (200, 201), body)
        self.assertEqual(self.node.call("gone", "which"), (200, 9))

    def test_calls_during_redeploys_never_fail(self):
        self.deploy_ok("hot", {"index.js": v_src(1)})
        stop = threading.Event()

        def caller(_):
            seen = []
            c = self.node.connection()
            try:
                while not stop.is_set():
                    st, _, body = self.node.req_json("POST", "/fn/hot/which", [], conn=c)
                    seen.append((st, body))
            finally:
                c.close()
            return seen

        results = []
        t = threading.Thread(target=lambda: results.extend(parallel(caller, [0, 1, 2], 3)))
        t.start()
        try:
            for i in range(6):
                st, body = self.node.deploy("hot", {"index.js": v_src(2 if i % 2 == 0 else 1)})
                self.assertIn(st, (200, 201), body)
                time.sleep(0.05)
        finally:
            stop.set()
            t.join(30)
        for seen in results:
            self.assertNotIsInstance(seen, Exception, seen)
            self.assertTrue(seen)
            bad = [r for r in seen if r not in ((200, 1), (200, 2))]
            self.assertEqual(bad, [], "calls failed while the deployment was replaced")
        self.assertEqual(self.node.call("hot", "which"), (200, 1))

    # ---- names

    def test_invalid_names_are_refused(self):
        bundle = make_bundle({"index.js": v_src(1)})
        for name in ("Hello", "-x", "a" * 64, "a_b", "a.b", "h%C3%A9llo", "UPPER", "a%20b"):
            with self.subTest(name=name):
                st, body = self.node.deploy(name, raw=bundle)
                self.assertError(st, body, 400, "bad_request")
        st, body = self.node.get("/system/v1/deployments")
        self.assertFalse([d for d in body["deployments"]
                          if d["name"].lower() == "hello" or "_" in d["name"]], body)

    def test_valid_edge_names_are_accepted(self):
        for name in ("a" * 63, "0", "9-lives", "x-"):
            with self.subTest(name=name):
                st, body = self.node.deploy(name, {"index.js": v_src(3)})
                self.assertEqual(st, 201, body)
                self.assertEqual(body["name"], name)
                self.assertEqual(self.node.call(name, "which"), (200, 3))

    # ---- auth

    def test_control_plane_requires_the_bearer_token(self):
        good = self.deploy_ok("authz", {"index.js": v_src(1)})["version"]
        bundle2 = make_bundle({"index.js": v_src(2)})
        routes = [
            ("GET", "/system/v1/deployments", None),
            ("GET", "/system/v1/deployments/authz", None),
            ("PUT", "/system/v1/deployments/authz", bundle2),
            ("PUT", "/system/v1/deployments/authz-new", bundle2),
            ("DELETE", "/system/v1/deployments/authz", None),
            ("GET", "/system/v1/deployments/authz/versions", None),
            ("POST", "/system/v1/deployments/authz/rollback",
             json.dumps({"version": good}).encode()),
            ("GET", "/system/v1/nope", None),
        ]
        bad_auth = [
            {},                                                  # no header
            {"Authorization": "Bearer wrong-token"},
            {"Authorization": "Bearer test-token-"},             # longer
            {"Authorization": "Bearer test-toke"},               # prefix
            {"Authorization": "Bearer "},
            {"Authorization": "Basic dGVzdC10b2tlbg=="},         # other scheme
            {"Authorization": "test-token"},                     # no scheme
        ]
        for method, path, body in routes:
            for hdrs in bad_auth:
                with self.subTest(method=method, path=path, auth=hdrs):
                    st, h, data = self.node.request(method, path, body, hdrs, token=None)
                    self.assertEqual(st, 401, data)
                    err = json.loads(data)["error"]
                    self.assertEqual(err["code"], "unauthorized")
                    self.assertIn("x-request-id", h)
        # Nothing happened.
        st, body = self.node.get("/system/v1/deployments/authz")
        self.assertEqual((st, body["version"]), (200, good))
        st, body = self.node.get("/system/v1/deployments/authz-new")
        self.assertEqual(st, 404, body)
        self.assertEqual(self.node.call("authz", "which"), (200, 1))

    def test_data_plane_and_rpc_need_no_token(self):
        self.deploy_ok("open", {"index.js": MERGE_SRC})
        st, h, data = self.node.request("POST", "/fn/open/merge", b'["a","b"]',
                                        {"Content-Type": "application/json"}, token=None)
        self.assertEqual((st, json.loads(data)), (200, "ab"))
        # A wrong token on the data plane is not a reason to refuse.
        st, body = self.node.call("open", "merge", "c", "d", token="wrong")
        self.assertEqual((st, body), (200, "cd"))
        st, _, body = self.node.rpc({"jsonrpc": "2.0", "method": "open.merge",
                                     "params": ["e", "f"], "id": 1}, token=None)
        self.assertEqual(st, 200, body)
        self.assertEqual(body["result"], "ef")
        for path in ("/healthz", "/readyz"):
            st, _, _ = self.node.request("GET", path, token=None)
            self.assertEqual(st, 200, path)


if __name__ == "__main__":
    main()
