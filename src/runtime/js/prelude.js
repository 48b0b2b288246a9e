// prelude.js - evaluated in every JavaScript instance before the bundle.
//
// Defines the Web-style globals the host provides (console, timers,
// queueMicrotask) on top of the native hooks the C side installs
// (__fm_native_log, __fm_native_timer, __fm_native_clear, __fm_native_done),
// reads parameter names from function sources, and collects the exports of
// the bundle. Everything private lives in the closure; the native hooks are
// deleted from the global object once captured.
(function (g) {
  "use strict";
  const nlog = g.__fm_native_log, ntimer = g.__fm_native_timer,
        nclear = g.__fm_native_clear, ndone = g.__fm_native_done,
        ncall = g.__fm_native_call, nspan = g.__fm_native_span_end,
        ncallSync = g.__fm_native_call_sync;
  delete g.__fm_native_log; delete g.__fm_native_timer;
  delete g.__fm_native_clear; delete g.__fm_native_done; delete g.__fm_native_call;
  delete g.__fm_native_span_end; delete g.__fm_native_call_sync;

  function fmt(v, depth) {
    if (typeof v === "string") return depth ? JSON.stringify(v) : v;
    if (v instanceof Error) return v.stack ? v.name + ": " + v.message + "\n" + v.stack : String(v);
    if (typeof v === "function") return "[Function " + (v.name || "anonymous") + "]";
    if (typeof v === "bigint") return v + "n";
    if (v === undefined || typeof v === "symbol") return String(v);
    try { const s = JSON.stringify(v, (k, x) => typeof x === "bigint" ? x.toString() : x); return s === undefined ? String(v) : s; }
    catch (e) { return String(v); }
  }
  function format(args) {
    let out = "";
    for (let i = 0; i < args.length; i++) out += (i ? " " : "") + fmt(args[i], 0);
    return out;
  }
  const levels = { debug: 0, log: 1, info: 1, warn: 2, error: 3, trace: 0 };
  const con = {};
  for (const k of Object.keys(levels)) con[k] = (...a) => nlog(levels[k], format(a));
  con.dir = (v) => nlog(1, fmt(v, 1));
  con.assert = (c, ...a) => { if (!c) nlog(3, "Assertion failed" + (a.length ? ": " + format(a) : "")); };
  Object.defineProperty(g, "console", { value: con, writable: true, configurable: true });

  function check(cb) { if (typeof cb !== "function") throw new TypeError("callback must be a function"); }
  g.setTimeout = (cb, ms, ...args) => { check(cb); return ntimer(() => cb(...args), +ms || 0, false); };
  g.setInterval = (cb, ms, ...args) => { check(cb); return ntimer(() => cb(...args), +ms || 0, true); };
  g.setImmediate = (cb, ...args) => { check(cb); return ntimer(() => cb(...args), 0, false); };
  g.clearTimeout = g.clearInterval = g.clearImmediate = (id) => { if (typeof id === "number") nclear(id); };
  g.queueMicrotask = (cb) => { check(cb); Promise.resolve().then(cb); };
  g.globalThis = g;

  // Parameter names from a function's source: identifiers as written,
  // "...rest" for rest parameters, the pattern text for destructuring.
  function params(fn) {
    const src = Function.prototype.toString.call(fn);
    let i = 0;
    const n = src.length;
    function skipTrivia() {
      for (;;) {
        while (i < n && /\s/.test(src[i])) i++;
        if (src.startsWith("//", i)) { while (i < n && src[i] !== "\n") i++; continue; }
        if (src.startsWith("/*", i)) { const e = src.indexOf("*/", i + 2); i = e < 0 ? n : e + 2; continue; }
        return;
      }
    }
    // Find the parameter list: the first "(" at top level, unless an arrow
    // with a single bare parameter comes first.
    skipTrivia();
    if (src.startsWith("class", i) && !/[\w$]/.test(src[i + 5] || "")) return [];
    let start = -1;
    for (let j = i; j < n; j++) {
      const c = src[j];
      if (c === "(") { start = j; break; }
      if (c === "=" && src[j + 1] === ">") {
        let p = src.slice(i, j).trim().replace(/^async\s+/, "");
        return p ? [p] : [];
      }
      if (c === "{" || c === '"' || c === "'" || c === "`") break;
    }
    if (start < 0) return [];
    const out = [];
    let depth = 0, cur = "", inDefault = false;
    for (i = start + 1; i < n; i++) {
      const c = src[i];
      if (c === '"' || c === "'" || c === "`") {
        let j = i + 1;
        while (j < n && src[j] !== c) { if (src[j] === "\\") j++; j++; }
        if (!inDefault) cur += src.slice(i, j + 1);
        i = j; continue;
      }
      if (c === "/" && (src[i + 1] === "/" || src[i + 1] === "*")) { skipTrivia(); i--; continue; }
      if (c === "(" || c === "[" || c === "{") depth++;
      if (c === ")" || c === "]" || c === "}") {
        if (depth === 0) break;
        depth--;
      }
      if (depth === 0 && c === ",") { out.push(cur); cur = ""; inDefault = false; continue; }
      if (depth === 0 && c === "=" && src[i + 1] !== ">" && src[i + 1] !== "=") { inDefault = true; continue; }
      if (!inDefault) cur += c;
    }
    out.push(cur);
    return out.map((p) => p.replace(/\s+/g, " ").trim()).filter((p) => p.length > 0);
  }

  // Called by the host in a context of its own, never in an instance: the
  // compiled code of this parser would cost every instance 40 KB.
  g.__fm_params = params;
  // May a call of fn leave work for microtasks (its source names promises,
  // async code, timers or other functions)? Such calls end a worker's batch.
  const settles = /\b(async|await|then|Promise|queueMicrotask|setTimeout|setInterval|setImmediate|fnmesh|WebAssembly|import)\b/;
  g.__fm_settles = (fn) => settles.test(Function.prototype.toString.call(fn));

  const NAME = /^[A-Za-z_$][\w$]*$/;
  // [[name, file, fn], ...] for every function exported by an entry file.
  g.__fm_collect = function (bundle) {
    const out = [];
    for (const file of Object.keys(bundle)) {
      const mod = bundle[file];
      if (mod === null || mod === undefined) continue;
      if (typeof mod === "function") { out.push(["default", file, mod]); continue; }
      if (typeof mod !== "object") continue;
      for (const key of Object.keys(mod)) {
        if (key === "__esModule" || !NAME.test(key)) continue;
        const v = mod[key];
        if (typeof v === "function") out.push([key, file, v]);
      }
    }
    return out;
  };

  // The mesh: calling other functions of the node, in any language.
  // fnmesh.call("dep/fn", ...args) returns a Promise of the result; a
  // callee's error rejects it with an Error carrying code and the callee's
  // stack (one line per hop).
  // (The callee runs at once when it can: its result, or a promise of it,
  // is what the native call returns.)
  function call(target, ...args) {
    try { return Promise.resolve(ncall(String(target), ...args)); }
    catch (e) { return Promise.reject(e); }
  }
  function mkerror(code, message, name, stack) {
    const e = new Error(message);
    e.code = code;
    if (name) e.name = name;
    if (stack) e.stack = stack;
    return e;
  }
  g.__fm_mkerror = mkerror;
  // A copy of a value in this realm, as a function of another deployment
  // sees its arguments and results: the JSON types, functions and symbols
  // dropped, non-finite numbers null, toJSON honoured.
  function copy(v, depth) {
    if (v === null) return null;
    switch (typeof v) {
      case "object": break;
      case "number": return Number.isFinite(v) ? v : null;
      case "function": case "symbol": return undefined;
      default: return v;
    }
    if (depth > 2048) throw new RangeError("value nested deeper than 2048 levels (or cyclic)");
    if (ArrayBuffer.isView(v)) {
      bytes();
      return new Uint8Array(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
    }
    if (toString.call(v) === "[object ArrayBuffer]") { bytes(); return new Uint8Array(new Uint8Array(v)); }
    if (typeof v.toJSON === "function") return copy(v.toJSON(), depth + 1);
    if (Array.isArray(v)) {
      const a = new Array(v.length);
      for (let i = 0; i < v.length; i++) { const x = copy(v[i], depth + 1); a[i] = x === undefined ? null : x; }
      return a;
    }
    const o = {};
    for (const k of Object.keys(v)) { const x = copy(v[k], depth + 1); if (x !== undefined) o[k] = x; }
    return o;
  }
  g.__fm_copy = (v) => copy(v, 0);
  const toString = Object.prototype.toString;
  // Bytes: an ArrayBuffer or any view of one leaves a function as
  // {"$bytes": "<base64>"} (JSON has no binary type; the host turns it into
  // each language's bytes) and arrives as a Uint8Array, through a toJSON on
  // the prototypes. Touching the typed-array prototypes makes JavaScriptCore
  // build its typed-array classes (25 KB an instance), so this is done only
  // for instances that can have bytes: the host calls __fm_bytes before the
  // bundle when its text names a binary type, and before it makes a
  // Uint8Array itself; copy() below calls it too.
  function bytesJSON() {
    const u = this instanceof ArrayBuffer ? new Uint8Array(this)
      : new Uint8Array(this.buffer, this.byteOffset, this.byteLength);
    return { $bytes: u.toBase64() };
  }
  let bytesReady = false;
  function bytes() {
    if (bytesReady) return;
    bytesReady = true;
    for (const proto of [ArrayBuffer.prototype, Object.getPrototypeOf(Uint8Array.prototype),
                         DataView.prototype])
      Object.defineProperty(proto, "toJSON", { value: bytesJSON, writable: true, configurable: true });
  }
  Object.defineProperty(g, "__fm_bytes", { value: bytes });
  // a result of another realm, copied into this one: a promise of the copy
  // when it is a promise (a later rejection gets the callee's hop added to
  // its stack); `span`, when not 0, is the callee's span, ended when its
  // result is known
  g.__fm_adopt = (r, hop, span) => {
    if (r !== null && typeof r === "object" && typeof r.then === "function")
      return Promise.resolve(r).then((v) => { if (span) nspan(span, true); return copy(v, 0); }, (e) => {
        const isErr = e !== null && typeof e === "object";
        const code = isErr && typeof e.code === "string" ? e.code : "function_error";
        const message = isErr && "message" in e ? String(e.message) : String(e);
        if (span) nspan(span, false, message, code);
        throw mkerror(code, message, isErr && e.name ? String(e.name) : "",
                      (isErr && e.stack ? String(e.stack) + "\n" : "") + hop);
      });
    if (span) nspan(span, true);
    return copy(r, 0);
  };
  const fnmesh = Object.freeze({
    call,
    fn: (target) => (...args) => call(target, ...args),
    // the result itself when the callee finishes at once (JavaScript, Lua),
    // else a promise of it; failures are thrown
    callSync: ncallSync,
    fnSync: (target) => ncallSync.bind(null, String(target)),
  });
  Object.defineProperty(g, "fnmesh", { value: fnmesh, enumerable: false });
  // require("fnmesh:dep") / import {f} from "fnmesh:dep": every property is a
  // function calling dep/<property>. (esbuild's interop reads it through the
  // prototype, hence a proxy as prototype too.)
  function deployment(dep) {
    const fns = new Proxy(Object.create(null), {
      get: (t, name) => (typeof name === "string" && name !== "then" && name !== "__esModule")
        ? (...args) => call(dep + "/" + name, ...args) : undefined,
    });
    return new Proxy(Object.create(fns), { getPrototypeOf: () => fns });
  }
  g.require = function (spec) {
    spec = String(spec);
    if (spec.startsWith("fnmesh:")) return deployment(spec.slice(7));
    throw new Error('Cannot find module "' + spec + '": only relative files, node_modules ' +
      'packages (bundled at deploy) and "fnmesh:<deployment>" can be required');
  };

  // Completion of an async call: settles through the native hook.
  g.__fm_await = function (p, id) {
    Promise.resolve(p).then((v) => ndone(id, true, v), (e) => ndone(id, false, e));
  };
  // [name, message, stack, code] of a thrown value
  g.__fm_errinfo = function (e) {
    if (e instanceof Error || (e && typeof e === "object" && "message" in e))
      return [String(e.name || "Error"), String(e.message), e.stack ? String(e.stack) : "",
              typeof e.code === "string" ? e.code : ""];
    let s;
    try { s = typeof e === "string" ? e : JSON.stringify(e); } catch (x) { s = String(e); }
    return ["Error", s === undefined ? String(e) : s, "", ""];
  };
})(globalThis);
