"""The repository's examples/ deploy with the CLI and serve; examples/hello
has merge(a, b), the string concatenation of MetaCall's benchmark."""
import json
import os

from fmtest import SOURCE_DIR, FnTestCase, main, run_cli

EXAMPLES = os.path.join(SOURCE_DIR, "examples")


class ExamplesTest(FnTestCase):
    def test_every_example_deploys_and_hello_merge_works(self):
        node = self.start_node()
        dirs = sorted(d for d in os.listdir(EXAMPLES) if os.path.isdir(os.path.join(EXAMPLES, d)))
        self.assertIn("hello", dirs)
        env = {"FNMESH_URL": node.url, "FNMESH_TOKEN": node.token}
        for d in dirs:
            with self.subTest(example=d):
                p = run_cli("deploy", os.path.join(EXAMPLES, d), "--json", env=env)
                self.assertEqual(p.returncode, 0, p)
                dep = json.loads(p.stdout)
                self.assertEqual(dep["name"], d)
                self.assertTrue(dep["functions"], "example %s publishes nothing" % d)
        fns = {f["name"]: f for f in node.get("/system/v1/deployments/hello")[1]["functions"]}
        self.assertEqual(fns["merge"]["params"], ["a", "b"])
        self.assertEqual(node.call("hello", "merge", "a", "b"), (200, "ab"))
        st, _, body = node.req_json("POST", "/fn/hello/merge", {"b": "y", "a": "x"})
        self.assertEqual((st, body), (200, "xy"))
        st, _, body = node.req_json("GET", '/fn/hello/merge?a="1"&b="2"')
        self.assertEqual((st, body), (200, "12"))
        # the polyglot chain: JavaScript -> Python -> C, Lua, Mustache template
        if "polyglot" in dirs:
            runtimes = {f["runtime"] for f in
                        node.get("/system/v1/deployments/polyglot")[1]["functions"]}
            self.assertEqual(runtimes, {"js", "python", "lua", "template", "c"})
            st, _, html = node.req_json("POST", "/fn/polyglot/page",
                                        {"title": "Notes", "items": ["ab", "ab\u00e9d"]})
            self.assertEqual(st, 200, html)
            self.assertIn("<h1>NOTES (2 items)</h1>", html)                      # Lua
            # C counts characters, not bytes: "ab\u00e9d" is 4
            self.assertIn("<li>ab\u00e9d <small>(4 characters)</small></li>", html)
            self.assertIn("<p>Longest: ab\u00e9d</p>", html)


if __name__ == "__main__":
    main()
