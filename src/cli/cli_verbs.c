/* cli_verbs.c - the verbs of the fnmesh client that talk to a node.
 *
 * Each verb builds one request, sends it with fm_cli_http_call() and prints
 * the answer: the server's JSON body exactly under --json, else a short
 * human-readable form. Operand counts and verb options were already checked
 * by cli.c against the verb table; what is checked here is their content.
 * Versions are shown as their first 12 hex digits.
 *
 * Answers are read leniently: a missing field prints as "-" rather than
 * failing, since the node, not the client, defines the objects. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli_int.h"

#define FM_CLI_DEPLOYMENTS "/system/v1/deployments"
#define FM_CLI_FUNCS_WIDTH 40 /* ls: longest FUNCTIONS cell before "+N" */

/* Sends one request and, on success, either prints the body raw (--json,
 * *out stays NULL) or parses it into *out for the caller to print. */
static int call_json(const fm_cli_opts *o, fm_cli_http *h, const fm_cli_req *req, long *status,
                     json_t **out) {
    *out = NULL;
    fm_cli_resp r;
    int rc = fm_cli_http_call(h, req, &r);
    if (rc != FM_CLI_OK) return rc;
    if (status) *status = r.status;
    rc = o->json ? fm_cli_resp_print_raw(&r) : fm_cli_resp_json(&r, out);
    fm_cli_resp_dispose(&r);
    return rc;
}

/* "/system/v1/deployments/NAME" + suffix, NAME percent-encoded; NULL on
 * out of memory. Caller frees. */
static char *deployment_path(const char *name, const char *suffix) {
    fm_cli_buf b = {0};
    fm_cli_buf_puts(&b, FM_CLI_DEPLOYMENTS "/");
    fm_cli_buf_put_segment(&b, name);
    fm_cli_buf_puts(&b, suffix);
    if (b.oom) {
        fm_cli_buf_dispose(&b);
        return NULL;
    }
    return b.data;
}

/* ---- deploy ---------------------------------------------------------- */

static bool valid_name(const char *s) {
    size_t n = strlen(s);
    if (n < 1 || n > 63) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0)))
            return false;
    }
    return true;
}

/* The default deployment name: DIR's last path component, lowercased
 * ("." and ".." are resolved first). Caller frees *out. */
static int default_name(const char *dir, char **out) {
    size_t end = strlen(dir);
    while (end > 1 && dir[end - 1] == '/')
        end--;
    size_t start = end;
    while (start > 0 && dir[start - 1] != '/')
        start--;
    char *resolved = NULL;
    const char *base = dir + start;
    size_t len = end - start;
    if (len == 0 || (len == 1 && base[0] == '.') || (len == 2 && !strncmp(base, "..", 2))) {
        if (!(resolved = realpath(dir, NULL))) {
            fprintf(stderr, "error: cannot resolve %s: %s\n", dir, strerror(errno));
            return FM_CLI_ERR;
        }
        base = strrchr(resolved, '/') ? strrchr(resolved, '/') + 1 : resolved;
        len = strlen(base);
    }
    *out = fm_cli_fmt("%.*s", (int)len, base);
    free(resolved);
    if (!*out) return fm_cli_nomem();
    for (char *p = *out; *p; p++)
        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
    return FM_CLI_OK;
}

static int bad_name(const char *name, bool derived) {
    return fm_cli_usage_error("deploy",
                              "invalid deployment name '%s': names match "
                              "[a-z0-9][a-z0-9-]{0,62}%s",
                              name, derived ? " (pick one with --name NAME)" : "");
}

/* "a, b" for a function's "params" array. Caller frees. */
static char *param_list(const json_t *fn) {
    fm_cli_buf b = {0};
    const json_t *params = json_object_get(fn, "params");
    for (size_t i = 0; i < json_array_size(params); i++) {
        const char *p = json_string_value(json_array_get(params, i));
        fm_cli_buf_printf(&b, "%s%s", i ? ", " : "", p ? p : "?");
    }
    if (!b.data && !b.oom) fm_cli_buf_append(&b, "", 0);
    if (b.oom) fm_cli_buf_dispose(&b);
    return b.data;
}

/* One "  merge(a, b)  POST /fn/hello/merge" line per function, aligned. */
static int print_functions(const char *dep, const json_t *fns) {
    fm_cli_table t;
    fm_cli_table_init(&t, 2);
    for (size_t i = 0; i < json_array_size(fns); i++) {
        const json_t *fn = json_array_get(fns, i);
        const char *name = fm_cli_json_str(fn, "name", "-");
        char *params = param_list(fn);
        if (!params) t.oom = true;
        fm_cli_table_add(&t, "  %s(%s)", name, params ? params : "");
        fm_cli_table_add(&t, "POST /fn/%s/%s", dep, name);
        free(params);
    }
    int rc = fm_cli_table_print(&t);
    fm_cli_table_dispose(&t);
    return rc;
}

static int upload(const fm_cli_opts *o, fm_cli_http *h, const char *name, const fm_cli_buf *tgz) {
    char *path = deployment_path(name, "");
    if (!path) return fm_cli_nomem();
    fm_cli_req req = {"PUT", path, "application/gzip", tgz->data, tgz->len};
    long status = 0;
    json_t *d = NULL;
    int rc = call_json(o, h, &req, &status, &d);
    free(path);
    if (rc != FM_CLI_OK || !d) return rc;
    const char *dep = fm_cli_json_str(d, "name", name);
    printf("deployed %s %.12s (%s)\n", dep, fm_cli_json_str(d, "version", "-"),
           status == 201 ? "new version" : "unchanged");
    rc = print_functions(dep, json_object_get(d, "functions"));
    json_decref(d);
    return rc;
}

int fm_cli_verb_deploy(const fm_cli_opts *o, fm_cli_http *h) {
    const char *dir = o->args[0];
    if (o->name && !valid_name(o->name)) return bad_name(o->name, false);
    struct stat st;
    if (stat(dir, &st) != 0) {
        fprintf(stderr, "error: cannot read %s: %s\n", dir, strerror(errno));
        return FM_CLI_ERR;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "error: %s is not a directory\n", dir);
        return FM_CLI_ERR;
    }
    char *name = NULL;
    int rc = o->name ? ((name = fm_cli_fmt("%s", o->name)) ? FM_CLI_OK : fm_cli_nomem())
                     : default_name(dir, &name);
    if (rc == FM_CLI_OK && !valid_name(name)) rc = bad_name(name, true);
    fm_cli_buf tgz = {0};
    if (rc == FM_CLI_OK) rc = fm_cli_pack(dir, &tgz);
    if (rc == FM_CLI_OK) rc = upload(o, h, name, &tgz);
    fm_cli_buf_dispose(&tgz);
    free(name);
    return rc;
}

/* ---- ls -------------------------------------------------------------- */

/* "merge,split" for a functions array, cut to about FM_CLI_FUNCS_WIDTH
 * characters with a "+N" for the rest. */
static void add_function_names(fm_cli_table *t, const json_t *fns) {
    fm_cli_buf b = {0};
    size_t n = json_array_size(fns);
    for (size_t i = 0; i < n; i++) {
        const char *name = fm_cli_json_str(json_array_get(fns, i), "name", "-");
        if (i > 0 && b.len + 1 + strlen(name) > FM_CLI_FUNCS_WIDTH) {
            fm_cli_buf_printf(&b, ",+%zu", n - i);
            break;
        }
        fm_cli_buf_printf(&b, "%s%s", i ? "," : "", name);
    }
    if (b.oom) t->oom = true;
    fm_cli_table_add(t, "%s", n ? (b.data ? b.data : "") : "-");
    fm_cli_buf_dispose(&b);
}

int fm_cli_verb_ls(const fm_cli_opts *o, fm_cli_http *h) {
    fm_cli_req req = {.method = "GET", .path = FM_CLI_DEPLOYMENTS};
    json_t *root = NULL;
    int rc = call_json(o, h, &req, NULL, &root);
    if (rc != FM_CLI_OK || !root) return rc;
    const json_t *deps = json_object_get(root, "deployments");
    fm_cli_table t;
    fm_cli_table_init(&t, 4);
    fm_cli_table_add(&t, "NAME");
    fm_cli_table_add(&t, "VERSION");
    fm_cli_table_add(&t, "FUNCTIONS");
    fm_cli_table_add(&t, "CREATED");
    for (size_t i = 0; i < json_array_size(deps); i++) {
        const json_t *d = json_array_get(deps, i);
        fm_cli_table_add(&t, "%s", fm_cli_json_str(d, "name", "-"));
        fm_cli_table_add(&t, "%.12s", fm_cli_json_str(d, "version", "-"));
        add_function_names(&t, json_object_get(d, "functions"));
        fm_cli_table_add(&t, "%s", fm_cli_json_str(d, "created_at", "-"));
    }
    rc = fm_cli_table_print(&t);
    fm_cli_table_dispose(&t);
    json_decref(root);
    return rc;
}

/* ---- invoke ---------------------------------------------------------- */

/* Appends ARG as JSON: verbatim when it parses as JSON, else as a string. */
static int put_arg(fm_cli_buf *b, const char *arg, size_t index) {
    size_t flags = JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL;
    json_t *v = json_loads(arg, flags, NULL);
    if (v) {
        json_decref(v);
        fm_cli_buf_puts(b, arg);
        return FM_CLI_OK;
    }
    json_t *s = json_string(arg);
    if (!s) return fm_cli_usage_error("invoke", "argument %zu is not valid UTF-8", index);
    char *enc = json_dumps(s, JSON_ENCODE_ANY);
    json_decref(s);
    if (!enc) return fm_cli_nomem();
    fm_cli_buf_puts(b, enc);
    free(enc);
    return FM_CLI_OK;
}

/* The request body: --data as-is, or a JSON array of the ARGs. */
static int invoke_body(const fm_cli_opts *o, fm_cli_buf *b) {
    if (o->data) {
        fm_cli_buf_puts(b, o->data);
        return b->oom ? fm_cli_nomem() : FM_CLI_OK;
    }
    fm_cli_buf_puts(b, "[");
    for (int i = 1; i < o->nargs; i++) {
        if (i > 1) fm_cli_buf_puts(b, ",");
        int rc = put_arg(b, o->args[i], (size_t)i);
        if (rc != FM_CLI_OK) return rc;
    }
    fm_cli_buf_puts(b, "]");
    return b->oom ? fm_cli_nomem() : FM_CLI_OK;
}

/* "/fn/DEPLOYMENT/FUNCTION" from the "DEPLOYMENT/FUNCTION" operand. */
static int invoke_path(const char *target, fm_cli_buf *path) {
    const char *slash = strchr(target, '/');
    if (!slash || slash == target || !slash[1] || strchr(slash + 1, '/'))
        return fm_cli_usage_error("invoke", "expected DEPLOYMENT/FUNCTION, got '%s'", target);
    char *dep = fm_cli_fmt("%.*s", (int)(slash - target), target);
    if (!dep) return fm_cli_nomem();
    fm_cli_buf_puts(path, "/fn/");
    fm_cli_buf_put_segment(path, dep);
    fm_cli_buf_puts(path, "/");
    fm_cli_buf_put_segment(path, slash + 1);
    free(dep);
    return path->oom ? fm_cli_nomem() : FM_CLI_OK;
}

/* Prints a JSON result compactly, anything else as it came. */
static int print_result(const fm_cli_resp *r) {
    if (r->body.len == 0 || !r->json) return fm_cli_resp_print_raw(r);
    fm_cli_buf out = {0};
    fm_cli_buf_put_json_compact(&out, r->body.data, r->body.len);
    fm_cli_buf_puts(&out, "\n");
    if (out.oom) {
        fm_cli_buf_dispose(&out);
        return fm_cli_nomem();
    }
    fwrite(out.data, 1, out.len, stdout);
    fm_cli_buf_dispose(&out);
    return FM_CLI_OK;
}

int fm_cli_verb_invoke(const fm_cli_opts *o, fm_cli_http *h) {
    if (o->data && o->nargs > 1)
        return fm_cli_usage_error("invoke", "--data and ARG operands cannot be combined");
    fm_cli_buf path = {0}, body = {0};
    int rc = invoke_path(o->args[0], &path);
    if (rc == FM_CLI_OK) rc = invoke_body(o, &body);
    fm_cli_resp r = {0};
    if (rc == FM_CLI_OK) {
        fm_cli_req req = {"POST", path.data, "application/json", body.data, body.len};
        rc = fm_cli_http_call(h, &req, &r);
    }
    if (rc == FM_CLI_OK) rc = o->json ? fm_cli_resp_print_raw(&r) : print_result(&r);
    fm_cli_resp_dispose(&r);
    fm_cli_buf_dispose(&path);
    fm_cli_buf_dispose(&body);
    return rc;
}

/* ---- rm, versions, rollback ------------------------------------------ */

int fm_cli_verb_rm(const fm_cli_opts *o, fm_cli_http *h) {
    char *path = deployment_path(o->args[0], "");
    if (!path) return fm_cli_nomem();
    fm_cli_req req = {.method = "DELETE", .path = path};
    json_t *root = NULL;
    int rc = call_json(o, h, &req, NULL, &root);
    free(path);
    if (rc == FM_CLI_OK && root) printf("deleted %s\n", fm_cli_json_str(root, "name", o->args[0]));
    json_decref(root);
    return rc;
}

int fm_cli_verb_versions(const fm_cli_opts *o, fm_cli_http *h) {
    char *path = deployment_path(o->args[0], "/versions");
    if (!path) return fm_cli_nomem();
    fm_cli_req req = {.method = "GET", .path = path};
    json_t *root = NULL;
    int rc = call_json(o, h, &req, NULL, &root);
    free(path);
    if (rc != FM_CLI_OK || !root) return rc;
    const json_t *vs = json_object_get(root, "versions");
    fm_cli_table t;
    fm_cli_table_init(&t, 3);
    fm_cli_table_add(&t, "VERSION");
    fm_cli_table_add(&t, "CREATED");
    fm_cli_table_add(&t, "ACTIVE");
    for (size_t i = 0; i < json_array_size(vs); i++) {
        const json_t *v = json_array_get(vs, i);
        fm_cli_table_add(&t, "%.12s", fm_cli_json_str(v, "version", "-"));
        fm_cli_table_add(&t, "%s", fm_cli_json_str(v, "created_at", "-"));
        fm_cli_table_add(&t, "%s", json_is_true(json_object_get(v, "active")) ? "*" : "");
    }
    rc = fm_cli_table_print(&t);
    fm_cli_table_dispose(&t);
    json_decref(root);
    return rc;
}

int fm_cli_verb_rollback(const fm_cli_opts *o, fm_cli_http *h) {
    json_t *obj = json_pack("{s:s}", "version", o->args[1]);
    if (!obj) return fm_cli_usage_error("rollback", "VERSION is not valid UTF-8");
    char *body = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    char *path = deployment_path(o->args[0], "/rollback");
    json_t *d = NULL;
    int rc;
    if (!body || !path) {
        rc = fm_cli_nomem();
    } else {
        fm_cli_req req = {"POST", path, "application/json", body, strlen(body)};
        rc = call_json(o, h, &req, NULL, &d);
    }
    if (rc == FM_CLI_OK && d)
        printf("rolled back %s to %.12s\n", fm_cli_json_str(d, "name", o->args[0]),
               fm_cli_json_str(d, "version", "-"));
    json_decref(d);
    free(body);
    free(path);
    return rc;
}

/* ---- cluster --------------------------------------------------------- */

int fm_cli_verb_cluster(const fm_cli_opts *o, fm_cli_http *h) {
    fm_cli_req req = {.method = "GET", .path = "/system/v1/cluster"};
    json_t *root = NULL;
    int rc = call_json(o, h, &req, NULL, &root);
    if (rc != FM_CLI_OK || !root) return rc;
    const json_t *nodes = json_object_get(root, "nodes");
    printf("mode %s, node %s%s\n", fm_cli_json_str(root, "mode", "-"),
           fm_cli_json_str(root, "node", "-"),
           json_is_true(json_object_get(root, "connected")) ? ", connected" : "");
    fm_cli_table t;
    fm_cli_table_init(&t, 7);
    fm_cli_table_add(&t, "NODE");
    fm_cli_table_add(&t, "ADDRESS");
    fm_cli_table_add(&t, "UPTIME");
    fm_cli_table_add(&t, "DEPLOYMENTS");
    fm_cli_table_add(&t, "WARM");
    fm_cli_table_add(&t, "IN FLIGHT");
    fm_cli_table_add(&t, "LOAD");
    for (size_t i = 0; i < json_array_size(nodes); i++) {
        const json_t *n = json_array_get(nodes, i);
        fm_cli_table_add(&t, "%s%s", fm_cli_json_str(n, "id", "-"),
                         json_is_true(json_object_get(n, "self")) ? " *" : "");
        fm_cli_table_add(&t, "%s", fm_cli_json_str(n, "address", "-"));
        fm_cli_table_add(&t, "%.0fs", json_number_value(json_object_get(n, "uptime_s")));
        fm_cli_table_add(&t, "%lld", (long long)json_integer_value(json_object_get(n, "deployments")));
        fm_cli_table_add(&t, "%lld",
                         (long long)json_integer_value(json_object_get(n, "functions_warm")));
        fm_cli_table_add(&t, "%lld", (long long)json_integer_value(json_object_get(n, "inflight")));
        fm_cli_table_add(&t, "%.2f", json_number_value(json_object_get(n, "load")));
    }
    rc = fm_cli_table_print(&t);
    fm_cli_table_dispose(&t);
    json_decref(root);
    return rc;
}
