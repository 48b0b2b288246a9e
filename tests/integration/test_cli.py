"""The fnmesh CLI against a real node: deploy, ls, invoke, versions,
rollback, rm, --json, exit codes (0 ok, 1 server error, 2 usage), --help."""
import json
import os
import re
import shutil
import tempfile

from fmtest import FnTestCase, Node, free_port, main, run_cli

V1 = r"""
exports.add = (a, b) => a + b;
exports.concat = (a, b) => String(a) + String(b);
exports.types = (a, b) => [typeof a, typeof b, a, b];
exports.nargs = function () { return arguments.length; };
exports.boom = () => { throw new Error("cli-boom"); };
exports.which = () => "v1";
"""
V2 = V1.replace('"v1"', '"v2"')


def write_tree(root, files):
    for path, content in files.items():
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(content)


class CliTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node()
        cls.tmp = tempfile.mkdtemp(prefix="fnmesh-cli-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)

    def cli(self, *args, env=None, **kw):
        e = {"FNMESH_URL": self.node.url, "FNMESH_TOKEN": self.node.token}
        e.update(env or {})
        return run_cli(*args, env=e, **kw)

    def ok(self, *args, **kw):
        p = self.cli(*args, **kw)
        self.assertEqual(p.returncode, 0, "fnmesh %s\nstdout: %s\nstderr: %s"
                         % (" ".join(map(str, args)), p.stdout, p.stderr))
        return p

    def make_dir(self, name, files):
        d = os.path.join(self.tmp, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        write_tree(d, files)
        return d

    def invoke_json(self, *args):
        return json.loads(self.ok("invoke", *args, "--json").stdout)

    # ---- the whole flow

    def test_deploy_invoke_ls_versions_rollback_rm(self):
        d = self.make_dir("calc", {"index.js": V1, "lib/util.js": "exports.u = 1;\n"})
        p = self.ok("deploy", d, "--json")
        dep = json.loads(p.stdout)
        self.assertEqual(dep["name"], "calc")  # from the directory name
        self.assertRegex(dep["version"], r"^[0-9a-f]{64}$")
        v1 = dep["version"]
        self.assertEqual(sorted(f["name"] for f in dep["functions"]),
                         ["add", "boom", "concat", "nargs", "types", "which"])
        # Same as the server says.
        st, body = self.node.get("/system/v1/deployments/calc")
        self.assertEqual(body["version"], v1)

        # Human output of deploy names the deployment and the version.
        p = self.ok("deploy", d)
        self.assertIn("calc", p.stdout)
        self.assertIn(v1[:12], p.stdout)

        # invoke
        self.assertEqual(self.invoke_json("calc/add", "1", "2"), 3)
        self.assertEqual(self.ok("invoke", "calc/add", "1", "2").stdout.strip(), "3")
        self.assertEqual(self.invoke_json("calc/concat", '"a"', "b"), "ab")
        self.assertEqual(self.invoke_json("calc/types", "1", "b"), ["number", "string", 1, "b"])
        self.assertEqual(self.invoke_json("calc/types", '"1"', '{"k":[1]}'),
                         ["string", "object", "1", {"k": [1]}])
        self.assertEqual(self.invoke_json("calc/types", "hello world", "-1"),
                         ["string", "number", "hello world", -1])
        self.assertEqual(self.invoke_json("calc/add", "--data", "[1,2]"), 3)
        self.assertEqual(self.invoke_json("calc/add", "--data", '{"b":2,"a":40}'), 42)
        self.assertEqual(self.invoke_json("calc/nargs"), 0)
        self.assertEqual(self.invoke_json("calc/which"), "v1")

        # ls
        p = self.ok("ls")
        self.assertRegex(p.stdout, r"(?m)^calc\b")
        self.assertIn(v1[:12], p.stdout)
        listing = json.loads(self.ok("ls", "--json").stdout)
        self.assertIn("calc", [x["name"] for x in listing["deployments"]])

        # second version, versions, rollback
        write_tree(d, {"index.js": V2})
        v2 = json.loads(self.ok("deploy", d, "--json").stdout)["version"]
        self.assertNotEqual(v1, v2)
        self.assertEqual(self.invoke_json("calc/which"), "v2")
        vs = json.loads(self.ok("versions", "calc", "--json").stdout)
        self.assertEqual([(v["version"], v["active"]) for v in vs["versions"]],
                         [(v2, True), (v1, False)])
        p = self.ok("versions", "calc")
        self.assertIn(v1[:12], p.stdout)
        self.assertIn(v2[:12], p.stdout)
        self.assertLess(p.stdout.index(v2[:12]), p.stdout.index(v1[:12]), "newest first")

        self.ok("rollback", "calc", v1)
        self.assertEqual(self.invoke_json("calc/which"), "v1")
        self.ok("rollback", "calc", v2[:8])
        self.assertEqual(self.invoke_json("calc/which"), "v2")

        # rm
        self.ok("rm", "calc")
        p = self.cli("invoke", "calc/which")
        self.assertEqual(p.returncode, 1, p)
        listing = json.loads(self.ok("ls", "--json").stdout)
        self.assertNotIn("calc", [x["name"] for x in listing["deployments"]])
        st, body = self.node.get("/system/v1/deployments/calc")
        self.assertEqual(st, 404)

    def test_deploy_with_name_and_explicit_url_token_flags(self):
        d = self.make_dir("Some_Dir", {"index.js": V1})
        p = run_cli("deploy", d, "--name", "named-one", "--url", self.node.url,
                    "--token", self.node.token, "--json")
        self.assertEqual(p.returncode, 0, p)
        self.assertEqual(json.loads(p.stdout)["name"], "named-one")
        # Options also before the verb.
        p = run_cli("--url", self.node.url, "--json", "invoke", "named-one/add", "5", "6")
        self.assertEqual((p.returncode, p.stdout.strip()), (0, "11"), p)

    def test_deploy_tree_with_libraries_and_node_modules(self):
        d = self.make_dir("withlibs", {
            "index.js": "const lp = require('leftpad');\nconst h = require('./lib/h');\n"
                        "exports.go = (s) => h.wrap(lp(s, 5));\n",
            "lib/h.js": "exports.wrap = (s) => '<' + s + '>';\n",
            "node_modules/leftpad/index.js":
                "module.exports = (s, n) => { s = String(s); while (s.length < n) s = '_' + s;"
                " return s; };\n"})
        self.ok("deploy", d)
        self.assertEqual(self.invoke_json("withlibs/go", "ab"), "<___ab>")

    def test_same_dir_twice_gives_same_version(self):
        d = self.make_dir("twice", {"index.js": V1, "a/b/c.txt": "deep\n"})
        v1 = json.loads(self.ok("deploy", d, "--json").stdout)["version"]
        os.utime(os.path.join(d, "index.js"), (1000000, 1000000))
        v2 = json.loads(self.ok("deploy", d, "--json").stdout)["version"]
        self.assertEqual(v1, v2)
        st, body = self.node.get("/system/v1/deployments/twice/versions")
        self.assertEqual(len(body["versions"]), 1)

    # ---- errors and exit codes

    def test_server_errors_exit_1_with_message(self):
        d = self.make_dir("errs", {"index.js": V1})
        self.ok("deploy", d)
        p = self.cli("invoke", "errs/nosuch")
        self.assertEqual(p.returncode, 1, p)
        self.assertTrue((p.stdout + p.stderr).strip())
        p = self.cli("invoke", "errs/boom")
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("cli-boom", p.stdout + p.stderr)
        p = self.cli("invoke", "errs/boom", "--json")
        self.assertEqual(p.returncode, 1, p)
        self.assertEqual(json.loads(p.stdout)["error"]["message"], "cli-boom")
        p = self.cli("versions", "no-such-dep")
        self.assertEqual(p.returncode, 1, p)
        p = self.cli("rollback", "errs", "0" * 64)
        self.assertEqual(p.returncode, 1, p)
        p = self.cli("rm", "no-such-dep")
        self.assertEqual(p.returncode, 1, p)

    def test_refused_bundle_exits_1_with_location(self):
        d = self.make_dir("badsyntax", {"index.js": "exports.ok = () => 1;\n",
                                        "bad.js": "export function f( { return 1 }\n"})
        p = self.cli("deploy", d)
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("bad.js:1:", p.stdout + p.stderr)

    def test_wrong_token_exits_1(self):
        p = self.cli("ls", env={"FNMESH_TOKEN": "wrong"})
        self.assertEqual(p.returncode, 1, p)
        self.assertRegex(p.stdout + p.stderr, r"(?i)unauthori[sz]ed|401|token")

    def test_unreachable_node_exits_1(self):
        p = self.cli("ls", env={"FNMESH_URL": "http://127.0.0.1:%d" % free_port()})
        self.assertEqual(p.returncode, 1, p)
        self.assertTrue(p.stderr.strip())

    def test_usage_errors_exit_2(self):
        for args in (["frobnicate"], ["invoke"], ["rollback", "x"], ["rm"], ["versions"],
                     ["deploy"], ["invoke", "noslash"], ["ls", "extra"],
                     ["deploy", self.tmp, "--name", "Bad_Name"], ["ls", "--no-such-option"],
                     ["invoke", "a/b", "1", "--data", "[1]"]):
            with self.subTest(args=args):
                p = self.cli(*args)
                self.assertEqual(p.returncode, 2, p)
                self.assertTrue(p.stderr.strip(), "usage errors explain themselves")

    def test_help_for_every_verb(self):
        for verb in ("deploy", "ls", "invoke", "rm", "versions", "rollback", "serve"):
            with self.subTest(verb=verb):
                p = run_cli(verb, "--help")
                self.assertEqual(p.returncode, 0, p)
                self.assertIn(verb, p.stdout)
                self.assertRegex(p.stdout, r"(?i)usage")
        p = run_cli("--help")
        self.assertEqual(p.returncode, 0, p)
        for verb in ("deploy", "ls", "invoke", "rm", "versions", "rollback"):
            self.assertRegex(p.stdout, r"(?m)^\s+%s\b" % verb)

    # ---- default token

    def test_default_token_from_local_data_dir(self):
        work = tempfile.mkdtemp(prefix="fnmesh-cwd-")
        self.addCleanup(shutil.rmtree, work, True)
        data = os.path.join(work, "fnmesh-data")
        os.makedirs(data)
        node = self.track_node(Node(data_dir=data, token=None))
        d = self.make_dir("deftok", {"index.js": V1})
        p = run_cli("deploy", d, env={"FNMESH_URL": node.url}, cwd=work)
        self.assertEqual(p.returncode, 0, p)
        p = run_cli("ls", "--json", env={"FNMESH_URL": node.url}, cwd=work)
        self.assertEqual(p.returncode, 0, p)
        self.assertEqual([x["name"] for x in json.loads(p.stdout)["deployments"]], ["deftok"])


if __name__ == "__main__":
    main()
