# bootstrap.py - run inside every Python worker process before user code.
#
# load(root, entries) imports the deployment's entry files and lists every
# public function with its parameters; call(payload) runs one. Results and
# errors leave as JSON text (the worker is the HTTP edge of the call).
# print(), sys.stderr and unconfigured `logging` go to the node's log through
# _fnmesh.log.
import asyncio
import base64
import importlib.util
import inspect
import io
import json
import logging
import os
import sys
import traceback
import types

import _fnmesh


class _LogStream(io.TextIOBase):
    def __init__(self, level):
        self._level = level
        self._buf = ""

    def writable(self):
        return True

    def write(self, s):
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            _fnmesh.log(self._level, line)
        return len(s)

    def flush(self):
        if self._buf:
            _fnmesh.log(self._level, self._buf)
            self._buf = ""


sys.stdout = _LogStream(1)
sys.stderr = _LogStream(3)


class _LogHandler(logging.Handler):
    """`logging` records without a configured handler: one log line each, at
    the record's own level (Python's default, a bare stderr, would make
    every one an error)."""

    def emit(self, record):
        try:
            msg = self.format(record)
        except Exception:  # noqa: BLE001 - logging's own error path
            self.handleError(record)
            return
        n = record.levelno
        _fnmesh.log(0 if n < logging.INFO else 1 if n < logging.WARNING
                    else 2 if n < logging.ERROR else 3, msg)


logging.lastResort = _LogHandler()  # NOTSET: the loggers' levels decide

_functions = []  # (function, [(name, kind)])


# ---- the mesh: `import fnmesh; fnmesh.call("dep/fn", a, b)` ----------------

class FnmeshError(Exception):
    """A called function failed: message, code (function_error, timeout,
    not_found, loop_detected...) and the stack of every hop."""

    def __init__(self, message, code="function_error", name="Error", stack=""):
        super().__init__(message)
        self.message = message
        self.code = code
        self.name = name
        self.stack = stack


# Bytes: JSON has no binary type, so bytes cross as {"$bytes": "<base64>"};
# they arrive as `bytes` and bytes, bytearray and memoryview leave as bytes.
def _bytes_default(o):
    if isinstance(o, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(o).decode("ascii")}
    raise TypeError("Object of type %s is not JSON serializable" % type(o).__name__)


def _bytes_hook(d):
    if len(d) == 1 and isinstance(d.get("$bytes"), str):
        try:
            return base64.b64decode(d["$bytes"], validate=True)
        except ValueError:  # malformed: an ordinary dict, as in the other languages
            pass
    return d


def _loads(text):
    # the hook costs a call per object: only when bytes can be there
    return json.loads(text, object_hook=_bytes_hook) if "$bytes" in text else json.loads(text)


# A call's arguments and a called function's result are JSON text the node
# wrote (compact, nothing around it): json's C scanner, where json.loads ends
# up, reads it without json.loads's Python layers.
_scan = json.decoder.JSONDecoder().scan_once


def _from_node(payload):
    if "$bytes" not in payload:
        try:
            return _scan(payload, 0)[0]
        except StopIteration:
            pass
    return _loads(payload)  # raises the decoder's own error if it is not JSON


# built once: json.dumps() with options would build an encoder per call
_encoders = [json.JSONEncoder(ensure_ascii=a, allow_nan=False, separators=(",", ":"),
                              default=_bytes_default) for a in (False, True)]
_quote = [json.encoder.encode_basestring, json.encoder.encode_basestring_ascii]


def _c_encoder(ascii_only):
    """JSONEncoder.encode without its Python layers (which build the C encoder
    anew for every value): the C encoder, built once, with its circular-reference
    markers (empty between calls)."""
    make = json.encoder.c_make_encoder
    if make is None:
        return None
    markers = {}
    return make(markers, _bytes_default, _quote[ascii_only], None, ":", ",",
                False, False, False), markers


_c_encoders = [_c_encoder(False), _c_encoder(True)]


def _dumps(value, ascii_only=False):
    if value.__class__ is str:
        return _quote[ascii_only](value)
    c = _c_encoders[ascii_only]
    if c is None or c[1]:  # no C encoder, or in use (user code while encoding)
        return _encoders[ascii_only].encode(value)
    try:
        return "".join(c[0](value, 0))
    except BaseException:
        c[1].clear()  # what a failed encoding left behind
        raise


def _mesh_call(target, *args, **kwargs):
    """Calls another function of the node (any language) and returns its result."""
    payload = _dumps({"t": str(target), "a": list(args), "n": kwargs})
    ok, text = _fnmesh.mesh(payload)
    if ok:
        return _from_node(text)
    e = json.loads(text)
    raise FnmeshError(e.get("message", "error"), e.get("code", "function_error"),
                      e.get("name", "Error"), e.get("stack", ""))


def fn(target):
    """A callable for another function: fnmesh.fn("dep/fn")(a, b, key=v)."""
    return lambda *args, **kwargs: _mesh_call(target, *args, **kwargs)


_mesh_module = type(sys)("fnmesh")
_mesh_module.call = _mesh_call
_mesh_module.fn = fn
_mesh_module.FnmeshError = FnmeshError
sys.modules["fnmesh"] = _mesh_module

_KIND = {
    inspect.Parameter.POSITIONAL_ONLY: "p",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "pk",
    inspect.Parameter.VAR_POSITIONAL: "*",
    inspect.Parameter.KEYWORD_ONLY: "k",
    inspect.Parameter.VAR_KEYWORD: "**",
}


def _signature(fn):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return [], []
    names, kinds = [], []
    for p in sig.parameters.values():
        k = _KIND[p.kind]
        names.append("*" + p.name if k == "*" else "**" + p.name if k == "**" else p.name)
        kinds.append((p.name, k))
    return names, kinds


def load(root, entries):
    global _root
    _root = root
    sys.path.insert(0, root)
    exports = []
    for entry in entries:
        modname = "fnmesh_entry_" + entry[:-3].replace("/", "_").replace(".", "_")
        spec = importlib.util.spec_from_file_location(modname, os.path.join(root, entry))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        try:
            spec.loader.exec_module(mod)
        except SyntaxError:
            raise
        except BaseException as e:
            raise ImportError("%s: top-level code raised %s: %s"
                              % (entry, type(e).__name__, e)) from e
        public = getattr(mod, "__all__", None)
        for name, value in list(vars(mod).items()):
            if name.startswith("_") or (public is not None and name not in public):
                continue
            if not inspect.isfunction(value) or value.__module__ != modname:
                continue  # classes, and functions imported from elsewhere
            names, kinds = _signature(value)
            exports.append({"name": name, "file": entry, "params": names})
            # positional-only signatures (the common case) skip _bind
            simple = all(k in ("p", "pk") for _, k in kinds)
            _functions.append((value, kinds, len(kinds) if simple else -1))
    return json.dumps(exports)


def _bind(kinds, args, holes):
    """Positional until the first hole (an argument not given); named after."""
    pos, kw = [], {}
    named = False
    for i, value in enumerate(args):
        if i in holes:
            named = True
            continue
        if i >= len(kinds):
            pos.append(value)
            continue
        name, kind = kinds[i]
        if kind == "*":
            pos.extend(args[i:] if not named else [])
            break
        if kind == "**":
            if isinstance(value, dict):
                kw.update(value)
            continue
        if kind == "k" or named:
            kw[name] = value
        else:
            pos.append(value)
    return pos, kw


_root = ""


def _rel(path):
    return path[len(_root) + 1:] if _root and path.startswith(_root + "/") else path


def _error(e):
    name = type(e).__name__
    message = str(e) or name
    if isinstance(e, SyntaxError) and e.filename:
        message = "%s:%s:%s: %s" % (_rel(e.filename), e.lineno or 0, e.offset or 0, e.msg)
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if f.filename not in ("fnmesh-bootstrap", "<frozen importlib._bootstrap>",
                                    "<frozen importlib._bootstrap_external>")]
    for f in frames:
        f.filename = _rel(f.filename)
    stack = "".join(["Traceback (most recent call last):\n"] + traceback.format_list(frames) +
                    traceback.format_exception_only(e)).rstrip()
    if isinstance(e, FnmeshError):  # an uncaught error of a called function keeps its code
        return json.dumps({"message": message, "name": e.name, "code": e.code,
                           "stack": (stack + "\n" + e.stack).strip()})
    return json.dumps({"message": message, "name": name, "stack": stack})


def call(index, payload, holes):
    """export number index, its arguments (JSON array text), the indices of those
    not given (a tuple, or None) -> (ok, json text)"""
    try:
        fn, kinds, npos = _functions[index]
        args = _from_node(payload)
        if len(args) <= npos and holes is None:
            result = fn(*args)
        else:
            pos, kw = _bind(kinds, args, set(holes or ()))
            result = fn(*pos, **kw)
        if isinstance(result, types.CoroutineType):
            result = asyncio.run(result)
        text = _dumps(result)
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: keep them as \u escapes
                text = _dumps(result, ascii_only=True)
        return True, text
    except BaseException as e:  # noqa: B902 - KeyboardInterrupt is the deadline
        return False, _error(e)
    finally:
        if getattr(sys.stdout, "_buf", True):  # user code may replace the streams
            sys.stdout.flush()
        if getattr(sys.stderr, "_buf", True):
            sys.stderr.flush()
