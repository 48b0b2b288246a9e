"""Published functions: the exports of top-level .js/.mjs/.cjs files (or of
the manifest's `entry`), CommonJS and ES-module syntax, libraries in
subfolders and node_modules, parameter names read from the source."""
from fmtest import FnTestCase, main


class FunctionsTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node()

    def deploy_ok(self, name, files, **kw):
        st, body = self.node.deploy(name, files, **kw)
        self.assertIn(st, (200, 201), body)
        return {f["name"]: f for f in body["functions"]}

    def assert_404(self, dep, fn):
        st, body = self.node.call(dep, fn)
        self.assertError(st, body, 404, "not_found")

    # ---- CommonJS

    def test_commonjs_exports_assignments(self):
        fns = self.deploy_ok("cjs1", {"index.js": (
            "exports.add = function (a, b) { return a + b; };\n"
            "exports.neg = x => -x;\n"
            "exports.VERSION = \"1.0\";\n"
            "function hidden() { return 'no'; }\n")})
        self.assertEqual(sorted(fns), ["add", "neg"])
        self.assertEqual(fns["add"]["params"], ["a", "b"])
        self.assertEqual(fns["neg"]["params"], ["x"])
        self.assertEqual(self.node.call("cjs1", "add", 2, 3), (200, 5))
        self.assertEqual(self.node.call("cjs1", "neg", 4), (200, -4))
        self.assert_404("cjs1", "hidden")
        self.assert_404("cjs1", "VERSION")

    def test_module_exports_object(self):
        fns = self.deploy_ok("cjs2", {"index.js": (
            "function greet(name, greeting = \"Hello\") { return greeting + ', ' + name; }\n"
            "const shout = (s) => s.toUpperCase();\n"
            "module.exports = { greet, shout, twice: function (n) { return 2 * n; } };\n")})
        self.assertEqual(sorted(fns), ["greet", "shout", "twice"])
        self.assertEqual(fns["greet"]["params"], ["name", "greeting"])
        self.assertEqual(fns["shout"]["params"], ["s"])
        self.assertEqual(fns["twice"]["params"], ["n"])
        self.assertEqual(self.node.call("cjs2", "greet", "Bo"), (200, "Hello, Bo"))
        self.assertEqual(self.node.call("cjs2", "shout", "hey"), (200, "HEY"))
        self.assertEqual(self.node.call("cjs2", "twice", 21), (200, 42))

    # ---- ES modules

    def test_es_module_export_forms(self):
        fns = self.deploy_ok("esm", {"index.js": (
            "export function add(a, b) { return a + b; }\n"
            "export const mul = (a, b) => a * b;\n"
            "export async function later(x) { await null; return x + 1; }\n"
            "function internal(s) { return 'internal:' + s; }\n"
            "const other = (q) => q;\n"
            "export { internal as renamed, other };\n"
            "export default function (x) { return x * 2; }\n")})
        self.assertEqual(sorted(fns), ["add", "default", "later", "mul", "other", "renamed"])
        for f in fns.values():
            self.assertEqual((f["file"], f["runtime"]), ("index.js", "js"))
        self.assertEqual(fns["add"]["params"], ["a", "b"])
        self.assertEqual(fns["mul"]["params"], ["a", "b"])
        self.assertEqual(fns["renamed"]["params"], ["s"])
        self.assertEqual(fns["default"]["params"], ["x"])
        self.assertEqual(self.node.call("esm", "add", 1, 2), (200, 3))
        self.assertEqual(self.node.call("esm", "mul", 6, 7), (200, 42))
        self.assertEqual(self.node.call("esm", "later", 1), (200, 2))
        self.assertEqual(self.node.call("esm", "renamed", "z"), (200, "internal:z"))
        self.assertEqual(self.node.call("esm", "other", [1]), (200, [1]))
        self.assertEqual(self.node.call("esm", "default", 5), (200, 10))
        self.assert_404("esm", "internal")

    def test_mjs_and_cjs_files_are_published(self):
        fns = self.deploy_ok("exts", {
            "a.mjs": "export const fromMjs = () => 'mjs';\n",
            "b.cjs": "module.exports.fromCjs = () => 'cjs';\n",
            "c.js": "exports.fromJs = () => 'js';\n",
            "notes.txt": "exports.nope = 1\n",
            "data.json": "{\"x\": 1}\n"})
        self.assertEqual({n: f["file"] for n, f in fns.items()},
                         {"fromMjs": "a.mjs", "fromCjs": "b.cjs", "fromJs": "c.js"})
        self.assertEqual(self.node.call("exts", "fromMjs"), (200, "mjs"))
        self.assertEqual(self.node.call("exts", "fromCjs"), (200, "cjs"))
        self.assertEqual(self.node.call("exts", "fromJs"), (200, "js"))

    def test_module_syntax_inside_strings_comments_regex_is_not_an_export(self):
        fns = self.deploy_ok("tricky", {"index.js": (
            "// export function commented() {}\n"
            "/* export function blockCommented() {}\n   export default 1 */\n"
            "const s = \"export function inString() {}\";\n"
            "const q = 'import x from \"./nope.js\"';\n"
            "const t = `export function inTemplate() { ${1 + 1} } ${`nested ${'`'}`}`;\n"
            "const re = /export function inRegex\\(\\) {}/;\n"
            "const d = 10 / 2 / 5;\n"
            "export function real() {\n"
            "  return [s.length, q.includes('import'), t.includes('2'),\n"
            "          re.test('export function inRegex() {}'), d];\n"
            "}\n")})
        self.assertEqual(sorted(fns), ["real"])
        self.assertEqual(self.node.call("tricky", "real"),
                         (200, [len("export function inString() {}"), True, True, True, 1]))

    # ---- libraries

    def test_subfolders_are_libraries(self):
        fns = self.deploy_ok("libs", {
            "index.js": ("const { helper } = require(\"./lib/helper\");\n"
                         "const deep = require(\"./lib/deep/thing.js\");\n"
                         "exports.useHelper = (x) => helper(x) + deep.suffix;\n"),
            "api.mjs": ("import { helper } from \"./lib/helper.js\";\n"
                        "import * as util from \"./lib/esm-util.mjs\";\n"
                        "export function viaImport(x) { return util.wrap(helper(x)); }\n"),
            "lib/helper.js": "exports.helper = (x) => 'helped:' + x;\n",
            "lib/esm-util.mjs": "export function wrap(s) { return '[' + s + ']'; }\n",
            "lib/deep/thing.js": "module.exports = { suffix: '!' };\n"})
        self.assertEqual(sorted(fns), ["useHelper", "viaImport"])
        self.assertEqual(self.node.call("libs", "useHelper", "a"), (200, "helped:a!"))
        self.assertEqual(self.node.call("libs", "viaImport", "b"), (200, "[helped:b]"))
        self.assert_404("libs", "helper")
        self.assert_404("libs", "wrap")

    def test_require_of_a_node_modules_package(self):
        leftpad = ("module.exports = function leftpad(str, len, ch) {\n"
                   "  str = String(str); ch = ch === undefined ? ' ' : String(ch);\n"
                   "  while (str.length < len) str = ch + str;\n  return str;\n};\n")
        fns = self.deploy_ok("npm", {
            "index.js": ("const leftpad = require(\"leftpad\");\n"
                         "exports.pad = (s, n) => leftpad(s, n, '0');\n"),
            "node_modules/leftpad/index.js": leftpad,
            "node_modules/leftpad/extra.js": "exports.notPublished = () => 1;\n"})
        self.assertEqual(sorted(fns), ["pad"])
        self.assertEqual(self.node.call("npm", "pad", "7", 3), (200, "007"))
        self.assert_404("npm", "leftpad")
        self.assert_404("npm", "notPublished")

    def test_node_modules_package_json_main(self):
        self.deploy_ok("npm-main", {
            "index.js": "const c = require(\"camel\");\nexports.camel = (s) => c.camel(s);\n",
            "node_modules/camel/package.json": '{"name": "camel", "main": "lib/main.js"}',
            "node_modules/camel/lib/main.js": (
                "exports.camel = (s) => s.replace(/-([a-z])/g, (_, c) => c.toUpperCase());\n")})
        self.assertEqual(self.node.call("npm-main", "camel", "foo-bar-baz"), (200, "fooBarBaz"))

    def test_esm_default_import_of_commonjs_package(self):
        self.deploy_ok("npm-esm", {
            "index.mjs": ("import leftpad from \"leftpad\";\n"
                          "export const pad = (s) => leftpad(s, 4);\n"),
            "node_modules/leftpad/index.js": (
                "module.exports = (s, n) => { s = String(s); while (s.length < n) s = '.' + s;"
                " return s; };\n")})
        self.assertEqual(self.node.call("npm-esm", "pad", "ab"), (200, "..ab"))

    # ---- manifest entry

    def test_manifest_entry_publishes_only_listed_files(self):
        fns = self.deploy_ok("entry", {
            "fnmesh.json": '{"entry": ["a.js"]}',
            "a.js": "const b = require('./b');\nexports.fromA = () => 'a' + b.fromB();\n",
            "b.js": "exports.fromB = () => 'b';\n"})
        self.assertEqual(sorted(fns), ["fromA"])
        self.assertEqual(fns["fromA"]["file"], "a.js")
        self.assertEqual(self.node.call("entry", "fromA"), (200, "ab"))
        self.assert_404("entry", "fromB")

    def test_manifest_entry_in_a_subfolder(self):
        fns = self.deploy_ok("entry-sub", {
            "fnmesh.json": '{"entry": ["src/api.js"]}',
            "src/api.js": "exports.hi = (who) => 'hi ' + who;\n",
            "top.js": "exports.top = () => 1;\n"})
        self.assertEqual(sorted(fns), ["hi"])
        self.assertEqual(fns["hi"]["file"], "src/api.js")
        self.assertEqual(self.node.call("entry-sub", "hi", "x"), (200, "hi x"))
        self.assert_404("entry-sub", "top")

    # ---- parameter names

    def test_results_are_written_as_json_stringify_writes_them(self):
        """A string, integral number or boolean result is written by the
        node itself (not through JSON.stringify): the body must be the very
        text JSON.stringify gives, escapes, lone surrogates (\\udxxx),
        astral characters, -0 and numbers past 2^53 included."""
        self.deploy_ok("stringify", {"index.js": (
            "const CASES = ['', 'plain', 'q\\\"b\\\\s/', '\\b\\t\\n\\f\\r\\u0000\\u0001\\u001f\\u007f',\n"
            "  '\\u00e9\\u07ff\\u0800\\u20ac\\u2028\\u2029\\ufffe\\uffff', '\\ud83d\\ude00\\udbff\\udfff',\n"
            "  'a\\ud800b', '\\udc00', '\\ud800', 'x\\udbff', '\\udfff\\ud800', 'ab'.repeat(5000) + '\\u0007',\n"
            "  0, -0, 1, -1, 2 ** 53, -(2 ** 53), 2 ** 53 + 2, 2 ** 63, 1.5, 1e21, -1e-7, NaN, Infinity,\n"
            "  true, false, null, undefined];\n"
            "let seed = 7;\n"
            "const rnd = n => (seed = (seed * 1103515245 + 12345) % 2147483648) % n;\n"
            "const UNITS = [0, 9, 10, 31, 32, 34, 47, 92, 127, 128, 0x7ff, 0x800, 0xd7ff, 0xd800,\n"
            "  0xdbff, 0xdc00, 0xdfff, 0xe000, 0xfffd, 0xffff];\n"
            "for (let k = 0; k < 60; k++) {\n"
            "  let s = 'r';\n"
            "  for (let i = rnd(12); i > 0; i--) s += String.fromCharCode(rnd(3) ? UNITS[rnd(UNITS.length)] : rnd(65536));\n"
            "  CASES.push(s);\n"
            "}\n"
            "exports.count = () => CASES.length;\n"
            "exports.value = i => CASES[i];\n"
            "exports.text = i => JSON.stringify(CASES[i]) ?? 'null';\n")})
        st, n = self.node.call("stringify", "count")
        self.assertEqual(st, 200, n)
        self.assertGreater(n, 80)
        conn = self.node.connection()
        try:
            for i in range(n):
                st, _, want = self.node.req_json("POST", "/fn/stringify/text", [i], conn=conn)
                self.assertEqual(st, 200, want)
                st, _, got = self.node.request("POST", "/fn/stringify/value", b"[%d]" % i,
                                               {"Content-Type": "application/json"}, conn=conn)
                self.assertEqual(st, 200, got)
                self.assertEqual(got.decode("utf-8"), want, "case %d" % i)
        finally:
            conn.close()

    def test_a_key_named___proto___is_an_own_property(self):
        """As JSON.parse makes it: {"__proto__": ...} in the arguments is an
        own property, in key order, and the object's prototype stays
        Object.prototype (whichever way the arguments are read: as JSON
        text, or as values when bytes are among them)."""
        self.deploy_ok("proto", {"index.js": (
            "exports.f = (o, b) => [Object.keys(o), o.__proto__ === undefined ? 'none' : o.__proto__,\n"
            "  Object.getPrototypeOf(o) === Object.prototype, o.x === undefined,\n"
            "  b instanceof Uint8Array ? b.length : null];\n")})
        want = [["a", "__proto__", "y"], {"x": 1}, True, True]
        body = b'[{"a": 1, "__proto__": {"x": 1}, "y": [2]}, null]'
        self.assertEqual(self.node.call_body("proto", "f", body), (200, want + [None]))
        body = b'[{"a": 1, "__proto__": {"x": 1}, "y": [2]}, {"$bytes": "AAE="}]'
        self.assertEqual(self.node.call_body("proto", "f", body), (200, want + [2]))
        body = b'{"o": {"a": 1, "__proto__": {"x": 1}, "y": [2]}}'
        self.assertEqual(self.node.call_body("proto", "f", body), (200, want + [None]))

    def test_parameter_names_from_source(self):
        fns = self.deploy_ok("params", {"index.js": (
            "exports.none = function () { return 0; };\n"
            "exports.defaults = function (a, b = 2, c = \"x,y\") { return [a, b, c]; };\n"
            "exports.arrowOne = v => v;\n"
            "exports.asyncArrow = async (p, q) => [p, q];\n"
            "exports.commented = function (/* ignore */ a, // b\n c) { return [a, c]; };\n")})
        self.assertEqual(fns["none"]["params"], [])
        self.assertEqual(fns["defaults"]["params"], ["a", "b", "c"])
        self.assertEqual(fns["arrowOne"]["params"], ["v"])
        self.assertEqual(fns["asyncArrow"]["params"], ["p", "q"])
        self.assertEqual(fns["commented"]["params"], ["a", "c"])
        # Named binding uses them (and defaults apply).
        st, _, body = self.node.req_json("POST", "/fn/params/defaults", {"c": "z", "a": 1})
        self.assertEqual((st, body), (200, [1, 2, "z"]))
        st, _, body = self.node.req_json("POST", "/fn/params/commented", {"c": 3, "a": 1})
        self.assertEqual((st, body), (200, [1, 3]))


if __name__ == "__main__":
    main()
