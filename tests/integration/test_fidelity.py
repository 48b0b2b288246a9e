"""Value fidelity in every direction: the same values sent over HTTP to an
echo function in each language (JavaScript, Lua, Python, C), and from a
relay function in each language through the mesh to the echo of each
language (4 x 4 directions), then back out over HTTP.

One deployment "fid" holds, per language L in js, lua, py, c:
  echo_L(v)          returns v as received
  relay_L(target, v) returns the result of calling `target` (an echo) with v

A direction is written `http->L` (POST /fn/fid/echo_L with [v]) or `R->L`
(POST /fn/fid/relay_R with ["fid/echo_L", v]: the value crosses HTTP ->
R -> L -> R -> HTTP).

What the docs promise, and therefore what is asserted:
- strings: any Unicode (astral characters, combining marks, RTL text,
  U+2028/U+2029, NUL inside strings) round-trips exactly everywhere, whether
  the request spells it as raw UTF-8 or as \\u escapes (surrogate pairs).
- a lone surrogate escape ("\\ud800") or invalid UTF-8 in a request body is
  refused by the node's JSON parser with 400 invalid_json, and the node keeps
  serving.
- integers: exact 64-bit in Python, C and Lua (beyond 2^53 Lua holds them
  as int64_t cdata) and in relays between them; in JavaScript numbers are
  doubles, so an integer beyond 2^53 that crosses it comes back as the
  nearest double (2^53+1 -> 2^53): the JSON text of the answer denotes
  exactly that double. Integral values within
  2^53 stay integers (no `1.0`) in every direction. Python integers beyond
  int64 are exact over HTTP (docs: 2**70 round-trips); the node's value model
  is 64-bit, so elsewhere they become the nearest double.
- doubles: IEEE doubles everywhere (0.1, 1e300, 5e-324, max double exact).
  JS answers through JSON.stringify and Lua writes integral numbers as
  integers, so an integral double (1.0, -0.0) that crosses either comes
  back as an integer (-0.0 -> 0); Python and C keep 1.0 and -0.0.
  NaN/Infinity cannot be sent in JSON.
- nesting: 100 levels round-trip everywhere. Lua refuses values nested
  deeper than 512 levels with a 500; JavaScript passes at most 512 levels
  through the mesh; the node's JSON parser refuses more than 2048 levels with
  400 invalid_json. Every refusal is a clean error envelope and the node keeps
  serving.
- large values: a 2 MiB string and a 100,000-element array round-trip in
  every direction (the data-plane body limit is 6 MiB).
- empty array vs empty object (also nested), null inside arrays and as an
  object value (Lua keeps them with fnmesh.null and the array mark), booleans,
  object keys with Unicode, the empty key "" and digit-only keys.
- binary data: bytes are {"$bytes": "<base64>"} in JSON; every runtime
  receives its binary type (Uint8Array, bytes, a Lua string, FM_BYTES) and
  sends it back as bytes: all 256 byte values, empty bytes, 1 MiB and bytes
  inside structures round-trip exactly in every direction. (A Lua string
  leaves as bytes only when it is not valid UTF-8, so the values here are
  not.) Base64 text stays a plain string. Malformed base64 is a 400.

Failure messages name the direction, the value class and the value.
"""
import base64
import struct
import json
import math
import sys
import time

from fmtest import FnTestCase, main

sys.setrecursionlimit(20000)  # json.dumps/loads and mismatch() of 3000-level values

LANGS = ("js", "lua", "py", "c")
LOSSY = {"js", "lua"}  # doubles written as integers when integral (1.0 -> 1, -0.0 -> 0)
LOSSY_INT = {"js"}     # integers beyond 2^53 become the nearest double

ECHO_JS = r'''
export function echo_js(v) { return v; }
export function kinds_js(v) { return [Object.prototype.toString.call(v), v.length]; }
export async function relay_js(target, v) { return await fnmesh.call(target, v); }
export function lone_js() { return ["a\ud800b", "\udc00", "\ud83d\ude00"]; }
'''

ECHO_LUA = r'''
local M = {}
function M.echo_lua(v) return v end
function M.relay_lua(target, v) return fnmesh.call(target, v) end
function M.kinds_lua(v) return {type(v), #v} end
return M
'''

ECHO_PY = r'''
import fnmesh

def echo_py(v):
    return v

def relay_py(target, v):
    return fnmesh.call(target, v)

def bignul_py(v=None):
    return ["a\x00b", 2**70]

def kinds_py(v):
    return [type(v).__name__, len(v)]
'''

ECHO_C = r'''
#include <fnmesh.h>
#include <string.h>

FM_EXPORT(echo_c, "v") { return fm_arg(ctx, 0); }

FM_EXPORT(kinds_c, "v") {
    size_t n = 0;
    const unsigned char *p = fm_get_bytes(ctx, fm_arg(ctx, 0), &n);
    unsigned sum = 0;
    for (size_t i = 0; p && i < n; i++) sum += p[i];
    fm_val *r = fm_array(ctx);
    fm_push(r, fm_int64(ctx, fm_type(fm_arg(ctx, 0)) == FM_BYTES));
    fm_push(r, fm_int64(ctx, (int64_t)n));
    fm_push(r, fm_int64(ctx, (int64_t)sum));
    return r;
}

FM_EXPORT(relay_c, "target", "v") {
    size_t n = 0;
    const char *t = fm_get_string(fm_arg(ctx, 0), &n);
    char target[256];
    if (!t || n >= sizeof(target)) return fm_error(ctx, "target must be a short string");
    memcpy(target, t, n);
    target[n] = '\0';
    fm_val *r = fm_call(ctx, target, fm_arg(ctx, 1));
    if (!r) {
        const char *code = NULL;
        const char *msg = fm_call_error(ctx, &code);
        return fm_error(ctx, "relay_c: %s failed (%s): %s", target, code ? code : "?",
                        msg ? msg : "?");
    }
    return r;
}
'''

DIRECTIONS = [("http", l) for l in LANGS] + [(r, l) for r in LANGS for l in LANGS]


def dname(d):
    return "%s->%s" % d


def path_langs(d):
    return {d[1]} if d[0] == "http" else {d[0], d[1]}


def short(v, n=120):
    s = json.dumps(v, ensure_ascii=False) if not isinstance(v, bytes) else repr(v)
    return s if len(s) <= n else s[:n] + "...(%d chars)" % len(s)


def nested_arrays(depth, leaf=1):
    v = leaf
    for _ in range(depth):
        v = [v]
    return v


def nested_objects(depth, leaf="bottom"):
    v = leaf
    for _ in range(depth):
        v = {"k": v}
    return v


def mismatch(got, want, lossy, where="$"):
    """None when `got` is what `want` must come back as on a path that is
    `lossy` (crosses JS or Lua) or not; else a description."""
    if want is None:
        return None if got is None else "%s: want null, got %s" % (where, short(got))
    if isinstance(want, bool):
        if got is want:
            return None
        return "%s: want %s, got %s" % (where, short(want), short(got))
    if isinstance(want, int):
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return "%s: want integer %d, got %s" % (where, want, short(got))
        if not lossy and -2**63 <= want < 2**63:
            if type(got) is int and got == want:
                return None
            return "%s: want exactly %d, got %r" % (where, want, got)
        near = float(want)  # the nearest double
        if abs(want) <= 2**53:
            if type(got) is int and got == want:
                return None
            return "%s: want integer %d, got %r" % (where, want, got)
        if float(got) == near:
            return None
        return "%s: want %d as the nearest double %r, got %r (= double %r)" % (
            where, want, near, got, float(got))
    if isinstance(want, float):
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return "%s: want number %r, got %s" % (where, want, short(got))
        if lossy and want.is_integer() and abs(want) <= 2**53:
            if type(got) is int and got == want:
                return None
            return "%s: want %r as the integer %d (JS/Lua write integral numbers as " \
                   "integers), got %r" % (where, want, int(want), got)
        if lossy:
            if float(got) == want:
                return None
            return "%s: want double %r, got %r" % (where, want, got)
        if type(got) is float and got == want and \
                math.copysign(1, got) == math.copysign(1, want):
            return None
        return "%s: want exactly the double %r, got %r" % (where, want, got)
    if isinstance(want, str):
        if got == want:
            return None
        if not isinstance(got, str):
            return "%s: want string %s, got %s" % (where, short(want), short(got))
        i = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                 min(len(got), len(want)))
        return "%s: string differs at index %d (len want %d, got %d): want %r, got %r" % (
            where, i, len(want), len(got), want[max(0, i - 5):i + 10], got[max(0, i - 5):i + 10])
    if isinstance(want, list):
        if not isinstance(got, list):
            return "%s: want array %s, got %s" % (where, short(want), short(got))
        if len(got) != len(want):
            return "%s: want array of %d, got %d: %s" % (where, len(want), len(got), short(got))
        if got == want and not lossy and all(type(x) in (str, list, dict) or x is None
                                             or type(x) is int for x in want):
            return None  # fast path for big arrays (type-exact for these item types)
        for i, (g, w) in enumerate(zip(got, want)):
            m = mismatch(g, w, lossy, "%s[%d]" % (where, i))
            if m:
                return m
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return "%s: want object %s, got %s" % (where, short(want), short(got))
        if set(got) != set(want):
            return "%s: keys differ: want %s, got %s" % (
                where, short(sorted(want)), short(sorted(got)))
        for k in want:
            m = mismatch(got[k], want[k], lossy, "%s[%r]" % (where, k))
            if m:
                return m
        return None
    raise TypeError("unsupported expected value %r" % (want,))


# --------------------------------------------------------------------------
# value tables: (label, value)

STRINGS = [
    ("empty", ""),
    ("ascii", "hello, world"),
    ("latin1", "caf\u00e9 na\u00efve \u00fc\u00df"),
    ("emoji astral", "\U0001F600"),
    ("g clef astral", "\U0001D11E"),
    ("astral mix", "a\U0001F600b\U0001D11Ec\U00010348"),
    ("zwj family", "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466"),
    ("flag", "\U0001F1FA\U0001F1E6"),
    ("max code point", "\U0010FFFF"),
    ("bmp edge", "\uFFFF\uFFFE\uFEFF\uE000"),
    ("combining e+acute", "e\u0301"),
    ("combining stack", "a\u0300\u0301\u0302\u0303\u0304\u0305\u0306\u0307"),
    ("nfc vs nfd", ["\u00e9", "e\u0301"]),
    ("rtl hebrew", "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd"),
    ("rtl arabic+marks", "\u0627\u0644\u0633\u0651\u064e\u0644\u0627\u0645"),
    ("bidi controls", "\u202eabc\u202c\u2066x\u2069\u200f"),
    ("u2028 u2029", "line\u2028sep\u2029para"),
    ("cjk", "\u65e5\u672c\u8a9e\u4e2d\u6587\ud55c\uad6d\uc5b4"),
    ("nul inside", "a\u0000b"),
    ("nul only", "\u0000"),
    ("nul edges", "\u0000mid\u0000"),
    ("nul + astral", "\U0001F600\u0000\U0001D11E"),
    ("control chars", "".join(chr(c) for c in range(1, 32)) + "\u007f\u0080\u009f"),
    ("json escapes", "\"\\/\b\f\n\r\t"),
    ("U+FFFD itself", "\ufffd"),
]

INTS = [0, 1, -1, 2**31 - 1, 2**31, -2**31, 2**32, 2**53 - 1, 2**53, -2**53,
        2**53 + 1, -(2**53 + 1), 2**53 + 2, 2**62, 2**62 + 1, -2**63, 2**63 - 1,
        -2**63 + 1]

BEYOND_INT64 = [2**63, 2**64, 2**70, -2**70]

DOUBLES = [0.1, 2.5, -2.5, 1.0, -1.0, 1e300, -1e300, 5e-324, 2.2250738585072014e-308,
           1.7976931348623157e308, 0.30000000000000004, 1e21, 1.5e15, 123456789.125]

STRUCTURES = [
    ("null", None),
    ("true", True),
    ("false", False),
    ("bools in array", [True, False, True]),
    ("empty array", []),
    ("empty object", {}),
    ("[[]]", [[]]),
    ("[{}]", [{}]),
    ("[[], {}]", [[], {}]),
    ("{a: [], b: {}}", {"a": [], "b": {}}),
    ("nested empties", {"x": [[], [{}], {"y": []}], "z": {"w": {}}}),
    ("[null]", [None]),
    ("[null, null]", [None, None]),
    ("[1, null, 3]", [1, None, 3]),
    ("trailing null", [1, None]),
    ("leading null", [None, 1]),
    ("{a: null}", {"a": None}),
    ("mixed array", [1, "two", 3.5, None, True, [], {}]),
    ("unicode keys", {"\u043a\u043b\u044e\u0447": "\u0437\u043d\u0430\u0447\u0435\u043d\u0438\u0435",
                      "\U0001F600": [1], "\u05e9\u05dc\u05d5\u05dd": {"\U0001D11E": None}}),
    ("empty key", {"": 1}),
    ("empty key + others", {"": "", "a": {"": []}}),
    ("digit keys", {"1": "a", "2": "b"}),
    ("sparse digit keys", {"1": "a", "3": "c"}),
    ("key with spaces/escapes", {"a b": 1, "q\"uote": 2, "new\nline": 3, "tab\t": 4}),
    ("u2028 key", {"\u2028": "\u2029"}),
    ("record", {"id": 7, "name": "\u00c5sa \U0001F600", "tags": ["a", "b"], "score": 0.25,
                "ok": False, "meta": None, "items": [{"n": 1}, {"n": 2, "x": []}]}),
]


# Binary values made in JavaScript: every kind leaves as bytes (the view's
# own bytes only), whether answered or passed on to another runtime; objects
# that merely look like the plain JSON.stringify of one stay objects.
BYTES_JS = r"""
const made = () => ({
  view: new Uint8Array([7, 1, 2, 3, 9]).subarray(1, 4),
  buffer: new Uint8Array([4, 5]).buffer,
  dataview: new DataView(new Uint8Array([0, 6, 0]).buffer, 1, 1),
  floats: new Float64Array([1]),
  empty: new Uint8Array(0),
  plain: {}, zero: {"0": 5}, list: [{}],
});
export function made_js() { return made(); }
export async function made_via_py() { return await fnmesh.call("fid/echo_py", made()); }
export function made_via_lua() { return fnmesh.callSync("fid/echo_lua", made()); }
export function stringify_in_code() { return JSON.stringify(new Uint8Array([1, 2])); }
"""
# Code that names no binary type still passes on the bytes it is given.
PLAIN_JS = r"""
export async function from_py() { return await fnmesh.call("fidplain/raw"); }
export async function from_js() { return await fnmesh.call("fidbytes/made_js"); }
export function from_js_sync() { return fnmesh.callSync("fidbytes/made_js"); }
"""
PLAIN_PY = "def raw():\n    return bytes([1, 2, 3])\n"


class FidelityTest(FnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = cls.class_node()
        cls.must_deploy(cls.node, "fid", {
            "echo_js.js": ECHO_JS,
            "echo_lua.lua": ECHO_LUA,
            "echo_py.py": ECHO_PY,
            "echo_c.c": ECHO_C,
        })
        cls.must_deploy(cls.node, "fidbytes", {"index.js": BYTES_JS})
        cls.must_deploy(cls.node, "fidplain", {"index.js": PLAIN_JS, "raw.py": PLAIN_PY})
        cls.conn = None

    def setUp(self):
        super().setUp()
        self.conn = None

    def tearDown(self):
        if self.conn is not None:
            self.conn.close()
        super().tearDown()

    # ---- calling

    def post(self, path, raw, timeout=60):
        """-> (status, parsed body or the raw text when not JSON)."""
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = self.node.connection(timeout)
            try:
                st, _, data = self.node.request(
                    "POST", path, raw, {"Content-Type": "application/json"}, conn=self.conn)
                break
            except (ConnectionError, OSError) as e:  # server closed keep-alive: retry once
                self.conn.close()
                self.conn = None
                if attempt:
                    raise AssertionError("POST %s: %r" % (path, e))
        try:
            return st, json.loads(data)
        except ValueError:
            return st, ("<not JSON>", data[:300])

    def send(self, d, value, ascii_json=False):
        """Sends value in direction d -> (status, body)."""
        src, dst = d
        if src == "http":
            path, args = "/fn/fid/echo_" + dst, [value]
        else:
            path, args = "/fn/fid/relay_" + src, ["fid/echo_" + dst, value]
        raw = json.dumps(args, ensure_ascii=ascii_json, allow_nan=False).encode("utf-8")
        return self.post(path, raw)

    def check_roundtrip(self, d, label, value, want=None, ascii_json=False, lossy=None):
        """Asserts value comes back as `want` (default: value) in direction d."""
        want = value if want is None else want
        lossy = bool(path_langs(d) & LOSSY) if lossy is None else lossy
        st, body = self.send(d, value, ascii_json)
        ctx = "direction %s, %s, sent %s" % (dname(d), label, short(value))
        self.assertEqual(st, 200, "%s: status %s, body %s" % (ctx, st, short(body, 600)))
        m = mismatch(body, want, lossy)
        if m:
            self.fail("%s: %s" % (ctx, m))

    def assert_clean_error(self, st, body, ctx, statuses=range(400, 600)):
        self.assertIn(st, statuses, "%s: want an error status, got %s %s" % (
            ctx, st, short(body, 300)))
        self.assertIsInstance(body, dict, "%s: error body %r" % (ctx, short(body, 300)))
        e = body.get("error")
        self.assertIsInstance(e, dict, "%s: no error envelope: %s" % (ctx, short(body, 300)))
        self.assertIsInstance(e.get("code"), str, "%s: %s" % (ctx, short(body, 300)))
        self.assertTrue(e.get("message"), "%s: empty message: %s" % (ctx, short(body, 300)))
        return e

    def assert_serving(self, ctx):
        self.assertTrue(self.node.running(), "%s: the node exited" % ctx)
        for lang in LANGS:
            st, body = self.send(("http", lang), ["still", "serving", 1])
            self.assertEqual((st, body), (200, ["still", "serving", 1]),
                             "%s: echo_%s after it" % (ctx, lang))
        st, body = self.send(("py", "c"), {"still": "serving"})
        self.assertEqual((st, body), (200, {"still": "serving"}), "%s: relay py->c after it" % ctx)

    def table(self, cases, **kw):
        """Every (label, value) of cases in every direction, as subTests."""
        for d in DIRECTIONS:
            for label, value in cases:
                with self.subTest(direction=dname(d), value=label):
                    self.check_roundtrip(d, label, value, **kw)

    # ---- strings

    def test_strings_raw_utf8(self):
        self.table(STRINGS)

    def test_strings_escaped(self):
        """The same strings spelled with \\u escapes (surrogate pairs for astral
        characters, \\u0000 for NUL) in the request."""
        self.table(STRINGS, ascii_json=True)

    def test_strings_inside_structures(self):
        cases = [("strings in array", [v for _, v in STRINGS]),
                 ("strings as keys and values",
                  {(v if isinstance(v, str) else l): v for l, v in STRINGS if "nul" not in l})]
        self.table(cases)

    def test_lone_surrogates_refused_at_http_edge(self):
        """A lone surrogate escape is not a Unicode scalar value: the node's
        JSON parser refuses it (400 invalid_json naming the position), as it
        refuses invalid UTF-8 bytes, for every function; the node keeps
        serving."""
        bodies = [
            ("lone high", b'["\\ud800"]'),
            ("lone low", b'["\\udc00"]'),
            ("high inside text", b'["a\\ud800b"]'),
            ("high then non-low escape", b'["\\ud800\\u0041"]'),
            ("reversed pair", b'["\\ude00\\ud83d"]'),
            ("lone high in a key", b'[{"\\ud800": 1}]'),
            ("invalid utf-8 byte", b'["\xff"]'),
            ("utf-8 encoded surrogate (CESU)", b'["\xed\xa0\x80"]'),
            ("overlong utf-8", b'["\xc0\xaf"]'),
            ("truncated utf-8", b'["\xf0\x9f\x98"]'),
        ]
        for d in DIRECTIONS:
            src, dst = d
            for label, raw in bodies:
                if src == "http":
                    path, body = "/fn/fid/echo_" + dst, raw
                else:
                    path, body = "/fn/fid/relay_" + src, b'["fid/echo_' + dst.encode() + b'", ' + raw[1:]
                with self.subTest(direction=dname(d), value=label):
                    ctx = "direction %s, %s, body %r" % (dname(d), label, body)
                    st, resp = self.post(path, body)
                    e = self.assert_clean_error(st, resp, ctx, statuses=(400,))
                    self.assertEqual(e.get("code"), "invalid_json", "%s: %s" % (ctx, resp))
        self.assert_serving("after lone surrogates")
        # a correct pair written as escapes is fine
        for d in DIRECTIONS:
            with self.subTest(direction=dname(d), value="escaped pair"):
                src, dst = d
                if src == "http":
                    path, body = "/fn/fid/echo_" + dst, b'["\\ud83d\\ude00"]'
                else:
                    path, body = "/fn/fid/relay_" + src, \
                        b'["fid/echo_' + dst.encode() + b'", "\\ud83d\\ude00"]'
                self.assertEqual(self.post(path, body), (200, "\U0001F600"), dname(d))

    def test_lone_surrogate_made_in_js(self):
        """JavaScript strings are UTF-16 and can hold lone surrogates. Not
        documented; what must hold: a clean answer (never a crash), the
        well-formed pair intact, and the node keeps serving. Over HTTP the
        result goes through JSON.stringify (well-formed: lone surrogates as
        \\u escapes, which Python's json reads back as lone surrogates);
        through the mesh the value becomes UTF-8 (U+FFFD for a lone
        surrogate)."""
        st, body = self.post("/fn/fid/lone_js", b"[]")
        self.assertEqual(st, 200, body)
        self.assertEqual(body[2], "\U0001F600")
        self.assertIn(body[0], ("a\ud800b", "a\ufffdb"), "http->lone_js: %r" % (body,))
        self.assertIn(body[1], ("\udc00", "\ufffd"), "http->lone_js: %r" % (body,))
        for src in LANGS:
            with self.subTest(direction="%s->lone_js" % src):
                st, body = self.post("/fn/fid/relay_" + src, b'["fid/lone_js", null]')
                self.assertEqual(st, 200, "relay_%s -> lone_js: %s" % (src, short(body, 300)))
                ok = [["a\ufffdb", "\ufffd", "\U0001F600"]]
                if src == "js":  # JS -> JS stays in one engine: UTF-16 kept as is
                    ok.append(["a\ud800b", "\udc00", "\U0001F600"])
                self.assertIn(body, ok, "direction %s->lone_js: a lone surrogate leaving JS "
                              "through the mesh should become U+FFFD (the text around it "
                              "kept), got %r" % (src, body))
        self.assert_serving("after lone surrogates made in JS")

    # ---- numbers

    def test_integers(self):
        """Exact where the path keeps int64 (HTTP, Python, C, Lua); nearest
        double where it crosses JS (2^53+1 -> 9007199254740992)."""
        for d in DIRECTIONS:
            for i in INTS:
                with self.subTest(direction=dname(d), value=i):
                    self.check_roundtrip(d, "int %d" % i, i, lossy=bool(path_langs(d) & LOSSY_INT))

    def test_integers_exact_through_lua(self):
        """Lua keeps integers beyond 2^53 exact (int64_t cdata): echoed,
        relayed, and after arithmetic in Lua."""
        for d in DIRECTIONS:
            if "lua" not in path_langs(d) or "js" in path_langs(d):
                continue
            for i in (2**53 + 1, -(2**53 + 1), 2**62 + 1, 2**63 - 1, -2**63):
                with self.subTest(direction=dname(d), value=i):
                    st, body = self.send(d, i)
                    self.assertEqual((st, type(body), body), (200, int, i), dname(d))

    def test_integer_precise_js_rounding(self):
        """The documented example, spelled out: 2^53+1 comes back from JS as
        9007199254740992 exactly (the JSON integer), 2^62+1 as the double
        2^62."""
        for d in DIRECTIONS:
            if not path_langs(d) & LOSSY_INT:
                continue
            with self.subTest(direction=dname(d), value="2^53+1"):
                st, body = self.send(d, 2**53 + 1)
                self.assertEqual((st, body), (200, 9007199254740992),
                                 "direction %s, 2^53+1" % dname(d))
                self.assertIs(type(body), int, "direction %s, 2^53+1" % dname(d))
            with self.subTest(direction=dname(d), value="2^62+1"):
                st, body = self.send(d, 2**62 + 1)
                self.assertEqual(st, 200, "direction %s, 2^62+1: %r" % (dname(d), body))
                self.assertEqual(float(body), 4611686018427387904.0,
                                 "direction %s, 2^62+1: got %r" % (dname(d), body))

    def test_integers_beyond_int64(self):
        """The node's value model is 64-bit: an integer beyond int64 that
        passes through the node (an HTTP argument, a mesh call) arrives as
        the nearest double in every runtime (docs/runtimes/README.md). Only a
        Python result leaves exact (test_python_result_with_nul_and_big_integer)."""
        for d in DIRECTIONS:
            for i in BEYOND_INT64:
                with self.subTest(direction=dname(d), value=i):
                    exact = False
                    # exact: compare as an int64-free path; else as a lossy one
                    st, body = self.send(d, i)
                    ctx = "direction %s, int %d" % (dname(d), i)
                    self.assertEqual(st, 200, "%s: %s" % (ctx, short(body, 300)))
                    if exact:
                        self.assertEqual((type(body), body), (int, i), ctx)
                    else:
                        self.assertIsNone(mismatch(body, i, True), ctx + ": got %r" % (body,))

    def test_big_integer_with_nul_string(self):
        """An integer beyond int64 next to a string holding NUL, sent and
        returned by Python through the mesh (the node re-reads such JSON as
        doubles: the string must keep its NUL)."""
        value = ["a\u0000b", 2**70]
        for d in DIRECTIONS:
            with self.subTest(direction=dname(d), value="[nul string, 2^70]"):
                st, body = self.send(d, value)
                ctx = "direction %s, %s" % (dname(d), short(value))
                self.assertEqual(st, 200, "%s: %s" % (ctx, short(body, 300)))
                self.assertEqual(body[0], "a\u0000b", "%s: got %r" % (ctx, body))
                self.assertEqual(float(body[1]), float(2**70), "%s: got %r" % (ctx, body))

    def test_python_result_with_nul_and_big_integer(self):
        """A Python result holding a NUL string and an integer beyond int64,
        returned to each caller through the mesh (the node re-reads such
        results with integers as doubles: the NUL string must survive that,
        and the result must not turn into null)."""
        st, body = self.post("/fn/fid/bignul_py", b"[]")
        self.assertEqual((st, body), (200, ["a\u0000b", 2**70]), "http->bignul_py")
        for src in LANGS:
            with self.subTest(direction="%s->bignul_py" % src):
                st, body = self.post("/fn/fid/relay_" + src, b'["fid/bignul_py", null]')
                ctx = "direction %s->bignul_py (returns [\"a\\u0000b\", 2**70])" % src
                self.assertEqual(st, 200, "%s: %s" % (ctx, short(body, 300)))
                self.assertIsInstance(body, list, "%s: got %r" % (ctx, body))
                self.assertEqual(len(body), 2, "%s: got %r" % (ctx, body))
                self.assertEqual(body[0], "a\u0000b", "%s: got %r" % (ctx, body))
                self.assertEqual(float(body[1]), 2.0**70, "%s: got %r" % (ctx, body))

    def test_integers_in_structures(self):
        self.table([("ints in array", list(INTS)),
                    ("ints in object", {str(i): i for i in INTS})])

    def test_doubles(self):
        self.table([("double %r" % x, x) for x in DOUBLES])

    def test_negative_zero(self):
        """-0.0 keeps its sign through Python and C (IEEE doubles); JS
        (JSON.stringify) and Lua (integral numbers written as integers) answer
        0."""
        for d in DIRECTIONS:
            with self.subTest(direction=dname(d), value="-0.0"):
                st, body = self.send(d, -0.0)
                ctx = "direction %s, -0.0" % dname(d)
                self.assertEqual(st, 200, "%s: %r" % (ctx, body))
                if path_langs(d) & LOSSY:
                    self.assertEqual((type(body), body), (int, 0), "%s: got %r" % (ctx, body))
                else:
                    self.assertEqual(type(body), float, "%s: got %r" % (ctx, body))
                    self.assertEqual(math.copysign(1, body), -1.0, "%s: got %r" % (ctx, body))

    def test_nan_and_infinity_are_not_json(self):
        """NaN / Infinity cannot be sent: the node's JSON parser refuses them."""
        for raw in (b"[NaN]", b"[Infinity]", b"[-Infinity]", b"[1e400]"):
            for lang in LANGS:
                with self.subTest(direction="http->" + lang, value=raw):
                    st, body = self.post("/fn/fid/echo_" + lang, raw)
                    ctx = "http->%s, body %r" % (lang, raw)
                    if raw == b"[1e400]" and st == 200:
                        continue  # an overflowing literal may be read as a double; fine
                    e = self.assert_clean_error(st, body, ctx, statuses=(400,))
                    self.assertEqual(e["code"], "invalid_json", ctx)

    # ---- structures

    def test_structures(self):
        self.table(STRUCTURES)

    def test_bytes(self):
        """Bytes ({"$bytes": base64}) round-trip as bytes in every direction."""
        b = lambda data: {"$bytes": base64.b64encode(data).decode("ascii")}
        data = bytes(range(256))
        big = bytes((i * 7 + 3) & 255 for i in range(1 << 20))
        cases = [("bytes 0..255", b(data)),
                 ("bytes 0xff 0x00", b(b"\xff\x00")),
                 ("1 MiB of bytes", b(big)),
                 ("bytes in structures", {"k": [b(b"\x80\x81"), {"z": b(data[128:])}], "n": 1}),
                 ("base64 text stays text", base64.b64encode(data).decode("ascii"))]
        self.table(cases)

    def test_binary_values_made_in_javascript_leave_as_bytes(self):
        b = lambda data: {"$bytes": base64.b64encode(data).decode("ascii")}
        want = {"view": b(b"\x01\x02\x03"), "buffer": b(b"\x04\x05"), "dataview": b(b"\x06"),
                "floats": b(struct.pack("<d", 1.0)), "empty": b(b""),
                "plain": {}, "zero": {"0": 5}, "list": [{}]}
        # Lua gets strings, and answers those that are UTF-8 as text
        want_lua = dict(want, view="\x01\x02\x03", buffer="\x04\x05", dataview="\x06", empty="")
        for fn, w in (("made_js", want), ("made_via_py", want), ("made_via_lua", want_lua)):
            with self.subTest(fn=fn):
                st, body = self.post("/fn/fidbytes/" + fn, b"[]")
                self.assertEqual((st, body), (200, w))
        # code naming no binary type: bytes handed to it by other functions
        for fn in ("from_js", "from_js_sync"):
            with self.subTest(fn=fn):
                self.assertEqual(self.post("/fn/fidplain/" + fn, b"[]"), (200, want))
        self.assertEqual(self.post("/fn/fidplain/from_py", b"[]"), (200, b(b"\x01\x02\x03")))
        # inside a function JSON.stringify spells bytes the same way
        st, body = self.post("/fn/fidbytes/stringify_in_code", b"[]")
        self.assertEqual((st, body), (200, '{"$bytes":"AQI="}'))

    def test_bytes_arrive_as_each_languages_binary_type(self):
        data = bytes(range(256))
        v = {"$bytes": base64.b64encode(data).decode("ascii")}
        want = {"js": ["[object Uint8Array]", 256], "py": ["bytes", 256],
                "lua": ["string", 256], "c": [1, 256, sum(data)]}
        for lang, expect in want.items():
            st, body = self.post("/fn/fid/kinds_" + lang, json.dumps([v]).encode())
            self.assertEqual((st, body), (200, expect), lang)
        # the raw body of an application/octet-stream request is one bytes argument,
        # and Accept: application/octet-stream answers a bytes result raw
        for lang in LANGS:
            st, h, body = self.node.request("POST", "/fn/fid/echo_" + lang, data,
                                            {"Content-Type": "application/octet-stream",
                                             "Accept": "application/octet-stream"})
            self.assertEqual((st, h.get("content-type"), body),
                             (200, "application/octet-stream", data), lang)
        for bad in (b'[{"$bytes": "!!!!"}]', b'[{"$bytes": "QUJD="}]', b'[{"$bytes": "QQ"}]',
                    b'[{"\\u0024bytes": "!!!!"}]', b'[{"\\u0024byt\\u0065s": "=="}]'):
            st, body = self.post("/fn/fid/echo_js", bad)
            e = self.assert_clean_error(st, body, repr(bad), statuses=(400,))
            self.assertIn("base64", e["message"])
        st, _, body = self.node.request("GET", "/fn/fid/echo_js?v=%7B%22%24bytes%22%3A%22%3D%3D%22%7D")
        e = self.assert_clean_error(st, json.loads(body), "query", statuses=(400,))
        self.assertIn("base64", e["message"])
        # a raw bytes answer names its span like every answer of a function
        st, h, _ = self.node.request("POST", "/fn/fid/echo_c", b"\x00\x01",
                                     {"Content-Type": "application/octet-stream",
                                      "Accept": "application/octet-stream"})
        self.assertEqual(st, 200)
        self.assertRegex(h.get("traceparent", ""), r"^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$")
        # a malformed bytes value made inside the mesh is an ordinary map for C
        st, body = self.post("/fn/fid/kinds_c", b'[{"$bytes": 5}]')
        self.assertEqual((st, body[0]), (200, 0), body)
        st, _, body = self.node.rpc({"jsonrpc": "2.0", "method": "fid.echo_py",
                                     "params": [{"$bytes": "%%"}], "id": 1})
        self.assertEqual(body["error"]["code"], -32602, body)

    # ---- nesting

    def test_nesting_100(self):
        self.table([("100 nested arrays", nested_arrays(100)),
                    ("100 nested objects", nested_objects(100)),
                    ("100 nested mixed", nested_objects(50, nested_arrays(50, [None, {}, []])))])

    def test_nesting_beyond_runtime_bounds(self):
        """600 levels: Lua documents a 500 beyond 512 levels; JavaScript passes
        at most 512 levels through the mesh (over HTTP it answers with
        JSON.stringify, which has no such bound); Python and C (1500 levels
        too, below the parser's 2048) have no documented bound below the
        parser's: those may round-trip or fail cleanly, and the outcome is
        reported. Never a crash; the node keeps serving."""
        outcomes = {}
        for depth in (600, 1500):
            for kind, value in (("arrays", nested_arrays(depth)),
                                ("objects", nested_objects(depth))):
                for d in DIRECTIONS:
                    label = "%d nested %s" % (depth, kind)
                    with self.subTest(direction=dname(d), value=label):
                        st, body = self.send(d, value)
                        ctx = "direction %s, %s" % (dname(d), label)
                        langs = path_langs(d)
                        if st == 200:
                            outcomes[(dname(d), label)] = "round-trip"
                            m = mismatch(body, value, bool(langs & LOSSY))
                            self.assertIsNone(m, ctx)
                        else:
                            e = self.assert_clean_error(st, body, ctx)
                            outcomes[(dname(d), label)] = "%s %s: %s" % (
                                st, e["code"], e["message"][:100])
                        # documented: Lua refuses deeper than 512 levels with a 500
                        # (a JS caller refuses to pass the value on before Lua sees it)
                        if "lua" in langs and d[0] != "js":
                            self.assertEqual(st, 500, "%s: Lua documents a 500 beyond 512 "
                                             "levels, got %s %s" % (ctx, st, short(body, 200)))
                        if langs <= {"c"} or d == ("http", "py") and depth == 600:
                            self.assertEqual(st, 200, "%s: no bound below the parser's: "
                                             "%s" % (ctx, short(body, 200)))
        self.nesting_outcomes = outcomes
        sys.stderr.write("\n[nesting outcomes]\n" + "".join(
            "  %-12s %-22s %s\n" % (k[0], k[1], v) for k, v in sorted(outcomes.items())))
        self.assert_serving("after deep nesting")

    def test_nesting_beyond_parser(self):
        """3000 levels: beyond the node's JSON parser's 2048: 400 invalid_json
        for every function, in every direction; the node keeps serving."""
        for kind, value in (("arrays", nested_arrays(3000)), ("objects", nested_objects(3000))):
            for d in DIRECTIONS:
                with self.subTest(direction=dname(d), value="3000 nested " + kind):
                    st, body = self.send(d, value)
                    ctx = "direction %s, 3000 nested %s" % (dname(d), kind)
                    e = self.assert_clean_error(st, body, ctx, statuses=(400,))
                    self.assertEqual(e["code"], "invalid_json", "%s: %s" % (ctx, short(body)))
        self.assert_serving("after 3000 levels")

    # ---- large values

    def test_large_values(self):
        """A 2 MiB string (with multibyte characters; NUL is covered by the
        string tests) and a
        100,000-element array, in every direction."""
        unit = "0123456789abcdef" * 4 + "\u00e9\U0001F600\u2028"  # 64 + 2 + 4 + 3 bytes
        big_s = (unit * ((2 << 20) // len(unit.encode()) + 1))
        big_s = big_s[:len(big_s) - 8]
        self.assertGreaterEqual(len(big_s.encode()), 2 << 20)
        big_a = [i if i % 3 else ("s%d" % i if i % 2 else None) for i in range(100000)]
        t0 = time.monotonic()
        self.table([("2 MiB string", big_s), ("100,000-element array", big_a)])
        elapsed = time.monotonic() - t0
        self.assertLess(elapsed, 45, "large values took %.1f s" % elapsed)


if __name__ == "__main__":
    main()
