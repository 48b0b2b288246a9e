"""Persistence: every acknowledged deploy, rollback and delete survives
`kill -9`; the generated admin token is kept in <data dir>/admin.token."""
import os
import signal
import stat

from fmtest import FnTestCase, main


def src(tag):
    return "exports.which = () => %r;\nexports.tag = (x) => %r + ':' + x;\n" % (tag, tag)


class PersistenceTest(FnTestCase):
    def deploy_ok(self, node, name, files):
        st, body = node.deploy(name, files)
        self.assertEqual(st, 201, body)
        return body["version"]

    def snapshot(self, node, names):
        st, listing = node.get("/system/v1/deployments")
        self.assertEqual(st, 200, listing)
        out = {"list": listing}
        for n in names:
            st, body = node.get("/system/v1/deployments/%s/versions" % n)
            self.assertEqual(st, 200, body)
            out[n] = body
        return out

    def test_kill9_restart_keeps_deployments_rollbacks_and_history(self):
        node = self.start_node()
        a1 = self.deploy_ok(node, "alpha", {"index.js": src("a1")})
        a2 = self.deploy_ok(node, "alpha", {"index.js": src("a2")})
        b1 = self.deploy_ok(node, "beta", {"index.js": src("b1"), "lib/x.js": "exports.x=1;"})
        b2 = self.deploy_ok(node, "beta", {"index.js": src("b2")})
        st, _, body = node.req_json("POST", "/system/v1/deployments/beta/rollback",
                                    {"version": b1})
        self.assertEqual((st, body["version"]), (200, b1))
        self.deploy_ok(node, "gamma", {"index.js": src("g1")})
        st, _, body = node.req_json("DELETE", "/system/v1/deployments/gamma")
        self.assertEqual(st, 200, body)
        before = self.snapshot(node, ["alpha", "beta"])
        self.assertEqual(node.call("beta", "which"), (200, "b1"))

        node.restart(signal.SIGKILL)

        self.assertEqual(node.call("alpha", "which"), (200, "a2"))
        self.assertEqual(node.call("alpha", "tag", "z"), (200, "a2:z"))
        self.assertEqual(node.call("beta", "which"), (200, "b1"))
        st, body = node.call("gamma", "which")
        self.assertError(st, body, 404, "not_found")
        after = self.snapshot(node, ["alpha", "beta"])
        self.assertEqual(after, before)
        self.assertEqual([(v["version"], v["active"]) for v in after["beta"]["versions"]],
                         [(b2, False), (b1, True)])
        self.assertEqual([(v["version"], v["active"]) for v in after["alpha"]["versions"]],
                         [(a2, True), (a1, False)])
        # Still fully working: deploy and roll back after the restart.
        a3 = self.deploy_ok(node, "alpha", {"index.js": src("a3")})
        self.assertEqual(node.call("alpha", "which"), (200, "a3"))
        st, _, body = node.req_json("POST", "/system/v1/deployments/alpha/rollback",
                                    {"version": a1})
        self.assertEqual((st, body["version"]), (200, a1))
        self.assertEqual(node.call("alpha", "which"), (200, "a1"))
        # And once more, with a clean stop this time.
        node.restart(signal.SIGTERM)
        self.assertEqual(node.call("alpha", "which"), (200, "a1"))
        self.assertEqual(node.call("beta", "which"), (200, "b1"))
        st, body = node.get("/system/v1/deployments/alpha/versions")
        self.assertEqual([v["version"] for v in body["versions"]], [a3, a2, a1])

    def test_deploys_acknowledged_just_before_kill9_are_kept(self):
        node = self.start_node()
        versions = [self.deploy_ok(node, "burst", {"index.js": src("v%d" % i)})
                    for i in range(6)]
        node.kill9()  # right after the last acknowledgement
        node.start()
        self.assertEqual(node.call("burst", "which"), (200, "v5"))
        st, body = node.get("/system/v1/deployments/burst/versions")
        self.assertEqual(st, 200, body)
        self.assertEqual([v["version"] for v in body["versions"]], versions[::-1])
        self.assertEqual([v["active"] for v in body["versions"]], [True] + [False] * 5)

    def test_generated_admin_token(self):
        node = self.start_node(token=None)
        path = os.path.join(node.data_dir, "admin.token")
        self.assertTrue(os.path.isfile(path), "no %s" % path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        tok = node.token
        self.assertGreaterEqual(len(tok), 16, "token too short to be secret: %r" % tok)
        self.assertNotIn("test-token", tok)
        st, body = node.get("/system/v1/deployments")
        self.assertEqual(st, 200, body)
        st, body = node.get("/system/v1/deployments", token="test-token")
        self.assertError(st, body, 401, "unauthorized")
        st, body = node.get("/system/v1/deployments", token=tok + "x")
        self.assertError(st, body, 401, "unauthorized")
        self.deploy_ok(node, "tok", {"index.js": src("t")})

        node.restart(signal.SIGKILL)
        self.assertEqual(node.token, tok, "the token changed across a restart")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        st, body = node.get("/system/v1/deployments/tok", token=tok)
        self.assertEqual(st, 200, body)
        node.restart(signal.SIGTERM)
        st, body = node.get("/system/v1/deployments/tok", token=tok)
        self.assertEqual(st, 200, body)

    def test_two_data_dirs_generate_different_tokens(self):
        n1 = self.start_node(token=None)
        n2 = self.start_node(token=None)
        self.assertNotEqual(n1.token, n2.token)
        st, body = n1.get("/system/v1/deployments", token=n2.token)
        self.assertError(st, body, 401, "unauthorized")

    def test_env_token_wins_over_the_token_file(self):
        node = self.start_node(token=None)
        file_tok = node.token
        node.stop()
        node.env_token = "env-token-123"
        node.start()
        st, body = node.get("/system/v1/deployments", token="env-token-123")
        self.assertEqual(st, 200, body)
        st, body = node.get("/system/v1/deployments", token=file_tok)
        self.assertError(st, body, 401, "unauthorized")


if __name__ == "__main__":
    main()
