/* template.c - the template runtime: Mustache templates as functions.
 *
 * Each entry file `dir/name.mustache` becomes a function `name(view)` that
 * returns the template rendered with `view` (a missing view renders as {}).
 * Every .mustache file of the bundle is a partial, named by its path
 * without the extension ("header", "partials/header").
 *
 * There is no Mustache library for C in Debian, so the engine is mustache.js
 * (package libjs-mustache) on JavaScriptCore: compile() writes one classic
 * script, in exactly the artifact format of the JavaScript runtime ("script,
 * NUL, source map", here with an empty map), that embeds mustache.js and the
 * template sources as JSON string literals and defines `__fm_bundle` the way
 * esbuild's output does. The run-time half is the JavaScript runtime's own
 * (forwarded below through fm_runtime_js), so templates get their own
 * context group per executor thread, separate from JavaScript functions,
 * and the same deadlines.
 *
 * Syntax errors cannot be found here (compile runs without JavaScriptCore):
 * the script parses every template once when an instance is created and
 * throws "file:line:col: reason", which the deploy reports as
 * FM_INVALID_BUNDLE. The script carries its own copy of mustache.js, so a
 * stored version keeps rendering the same after the package is upgraded.
 *
 * compile() runs on any thread; everything else on executor threads. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "runtime/runtime.h"

#define MUSTACHE_JS "/usr/share/javascript/mustache/mustache.js"
#define EXT ".mustache"

extern const fm_runtime fm_runtime_js;

static const char *const template_extensions[] = {EXT, NULL};

/* ---------------------------------------------------------------- compile */

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap)
            cap *= 2;
        b->p = realloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) {
    sb_add(b, s, strlen(s));
}

/* Appends `s` (len bytes, possibly invalid UTF-8 or with NULs) as a JSON
 * string literal, which is also a valid JavaScript string literal. */
static void sb_quoted(sbuf *b, const char *s, size_t len) {
    json_t *j = fm_json_strn(s, len);
    char *q = json_dumps(j, JSON_ENCODE_ANY);
    sb_str(b, q);
    free(q);
    json_decref(j);
}

static bool is_identifier(const char *s, size_t n) {
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == '$')) return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '$')) return false;
    return true;
}

static bool is_template(const fm_bundle_file *f) {
    size_t n = strlen(f->path), e = strlen(EXT);
    return f->data && !f->link && n > e && strcmp(f->path + n - e, EXT) == 0;
}

/* The script's fixed parts. `T` maps a partial name to its source, `F` to
 * its file; every template is parsed once so that syntax errors fail the
 * deploy, with the character offset in mustache.js's message turned into
 * line:col. The error is thrown as a plain object without a stack, so the
 * report names the template rather than a place in the generated script. */
static const char script_head[] = "var __fm_bundle = (function () {\n"
                                  "var Mustache = (function () {\n"
                                  "var exports = {}, module = { exports: exports }, define;\n";

static const char script_mid[] = "\n;return module.exports;\n"
                                 "}).call({});\n"
                                 "var T = Object.create(null), F = Object.create(null);\n";

static const char script_check[] =
    "Object.keys(T).forEach(function (k) {\n"
    "  try { Mustache.parse(T[k]); } catch (e) {\n"
    "    var m = String(e && e.message !== undefined ? e.message : e), where = F[k];\n"
    "    var at = / at (\\d+)$/.exec(m);\n"
    "    if (at) {\n"
    "      var lines = T[k].slice(0, +at[1]).split(\"\\n\");\n"
    "      where += \":\" + lines.length + \":\" + (lines[lines.length - 1].length + 1);\n"
    "      m = m.slice(0, at.index);\n"
    "    }\n"
    "    throw { name: \"SyntaxError\", message: where + \": \" + m };\n"
    "  }\n"
    "});\n"
    "function partial(name) { return T[name]; }\n"
    "function render(k, view) {\n"
    "  return Mustache.render(T[k], view === undefined || view === null ? {} : view, partial);\n"
    "}\n"
    "return {\n";

static fm_status template_compile(const fm_bundle *b, const char *const *entries, size_t n,
                                  char **artifact, size_t *artifact_len, fm_err *err) {
    /* Names first: a bad one is the user's mistake, a missing engine ours. */
    for (size_t i = 0; i < n; i++) {
        const char *slash = strrchr(entries[i], '/');
        const char *stem = slash ? slash + 1 : entries[i];
        size_t len = strlen(stem) - strlen(EXT);
        if (!is_identifier(stem, len))
            return fm_err_set(err, FM_INVALID_BUNDLE,
                              "%s: the function name \"%.*s\" (the file name without %s) is not "
                              "an identifier ([A-Za-z_$][A-Za-z0-9_$]*): rename the file",
                              entries[i], (int)len, stem, EXT);
    }
    const char *engine = getenv("FNMESH_MUSTACHE_JS");
    if (!engine || !*engine) engine = MUSTACHE_JS;
    size_t elen = 0;
    char *js = fm_read_file(engine, &elen);
    if (!js)
        return fm_err_set(err, FM_INTERNAL,
                          "cannot read %s (is the libjs-mustache package installed?)", engine);

    sbuf s = {0};
    sb_str(&s, script_head);
    sb_add(&s, js, strnlen(js, elen));
    free(js);
    sb_str(&s, script_mid);
    for (size_t i = 0; i < b->nfiles; i++) {
        const fm_bundle_file *f = &b->files[i];
        if (!is_template(f)) continue;
        size_t klen = strlen(f->path) - strlen(EXT);
        sb_str(&s, "T[");
        sb_quoted(&s, f->path, klen);
        sb_str(&s, "] = ");
        sb_quoted(&s, f->data, f->len);
        sb_str(&s, ";\nF[");
        sb_quoted(&s, f->path, klen);
        sb_str(&s, "] = ");
        sb_quoted(&s, f->path, strlen(f->path));
        sb_str(&s, ";\n");
    }
    sb_str(&s, script_check);
    for (size_t i = 0; i < n; i++) {
        const char *slash = strrchr(entries[i], '/');
        const char *stem = slash ? slash + 1 : entries[i];
        size_t len = strlen(stem) - strlen(EXT);
        /* "dir/page.mustache": { "page": function (view) { return render("dir/page", view); } } */
        sb_quoted(&s, entries[i], strlen(entries[i]));
        sb_str(&s, ": { ");
        sb_quoted(&s, stem, len);
        sb_str(&s, ": function (view) { return render(");
        sb_quoted(&s, entries[i], strlen(entries[i]) - strlen(EXT));
        sb_str(&s, ", view); } },\n");
    }
    sb_str(&s, "};\n})();\n");
    /* artifact = script, NUL, (empty) source map */
    sb_add(&s, "", 1);
    *artifact = s.p;
    *artifact_len = s.len;
    return FM_OK;
}

/* ------------------------------------------------------ run time (JS's own) */

static void *template_thread_init(int index) {
    return fm_runtime_js.thread_init(index);
}

static void template_thread_dispose(void *ts) {
    fm_runtime_js.thread_dispose(ts);
}

static fm_status template_instance_create(void *ts, const char *deployment, const char *artifact,
                                          size_t artifact_len, const fm_instance_limits *lim,
                                          void **instance, fm_export **exports, size_t *nexports,
                                          fm_err *err) {
    return fm_runtime_js.instance_create(ts, deployment, artifact, artifact_len, lim,
                                         instance, exports, nexports, err);
}

static void template_instance_destroy(void *ts, void *instance) {
    fm_runtime_js.instance_destroy(ts, instance);
}

static void template_call(void *ts, void *instance, uint32_t index, fm_job *job) {
    fm_runtime_js.call(ts, instance, index, job);
}

static int64_t template_poll(void *ts) {
    return fm_runtime_js.poll(ts);
}

const fm_runtime fm_runtime_template = {
    .name = "template",
    .instance_bytes = 256 << 10, /* a JavaScript instance */
    .extensions = template_extensions,
    .compile = template_compile,
    .thread_init = template_thread_init,
    .thread_dispose = template_thread_dispose,
    .instance_create = template_instance_create,
    .instance_destroy = template_instance_destroy,
    .call = template_call,
    .poll = template_poll,
};
