/* cli_logs.c - `fnmesh logs NAME [-f] [--since S] [--function F] [--level L]`.
 *
 * Without -f: GET /system/v1/deployments/NAME/logs, following `next` page
 * by page when --since asks for everything after a point (without it the
 * node answers with the latest entries, one page). With -f: the same
 * endpoint with follow=1, an NDJSON stream printed line by line as it
 * arrives, until the server ends it or the user interrupts. Each entry is
 * printed as one human-readable line, or as its JSON object under --json.
 *
 * Ownership: the path, the partial-line buffer and parsed entries belong to
 * the verb's run; nothing outlives it. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"

#define FM_CLI_LOGS_PAGE 1000

/* "TIME LEVEL DEP/FN VERSION req=ID MESSAGE" */
static void print_entry(const json_t *e) {
    const char *lvl = fm_cli_json_str(e, "level", "info");
    char up[8];
    size_t i = 0;
    for (; lvl[i] && i < sizeof(up) - 1; i++)
        up[i] = (char)(lvl[i] >= 'a' && lvl[i] <= 'z' ? lvl[i] - 32 : lvl[i]);
    up[i] = '\0';
    const char *fn = fm_cli_json_str(e, "function", NULL);
    printf("%s %-5s %s%s%s %s req=%s %s\n", fm_cli_json_str(e, "ts", "-"), up,
           fm_cli_json_str(e, "deployment", "-"), fn ? "/" : "", fn ? fn : "",
           fm_cli_json_str(e, "version", "-"), fm_cli_json_str(e, "request_id", "-"),
           fm_cli_json_str(e, "message", ""));
}

static void print_json(const json_t *e) {
    char *s = json_dumps(e, JSON_COMPACT);
    if (s) puts(s);
    free(s);
}

/* The logs path with the query; since_override (a seq) replaces --since. */
static char *logs_path(const fm_cli_opts *o, const char *since_override) {
    fm_cli_buf b = {0};
    fm_cli_buf_puts(&b, "/system/v1/deployments/");
    fm_cli_buf_put_segment(&b, o->args[0]);
    fm_cli_buf_puts(&b, "/logs?limit=");
    fm_cli_buf_printf(&b, "%d", FM_CLI_LOGS_PAGE);
    const char *since = since_override ? since_override : o->since;
    const char *keys[] = {"since", "function", "level"};
    const char *vals[] = {since, o->function, o->level};
    for (size_t i = 0; i < 3; i++) {
        if (!vals[i]) continue;
        fm_cli_buf_printf(&b, "&%s=", keys[i]);
        fm_cli_buf_put_segment(&b, vals[i]);
    }
    if (o->follow) fm_cli_buf_puts(&b, "&follow=1");
    if (b.oom) {
        fm_cli_buf_dispose(&b);
        return NULL;
    }
    return b.data;
}

static int check_level(const char *l) {
    static const char *ok[] = {"debug", "info", "warn", "warning", "error"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        if (strcmp(l, ok[i]) == 0) return FM_CLI_OK;
    return fm_cli_usage_error("logs", "invalid --level '%s': expected debug, info, warn or error",
                              l);
}

/* ---- one page at a time ---------------------------------------------- */

static int read_pages(const fm_cli_opts *o, fm_cli_http *h) {
    char since[32];
    const char *override = NULL;
    for (;;) {
        char *path = logs_path(o, override);
        if (!path) return fm_cli_nomem();
        fm_cli_req req = {.method = "GET", .path = path};
        fm_cli_resp r;
        int rc = fm_cli_http_call(h, &req, &r);
        free(path);
        if (rc != FM_CLI_OK) return rc;
        json_t *root = NULL;
        rc = fm_cli_resp_json(&r, &root);
        fm_cli_resp_dispose(&r);
        if (rc != FM_CLI_OK) return rc;
        const json_t *logs = json_object_get(root, "logs");
        size_t i;
        const json_t *e;
        json_array_foreach(logs, i, e) {
            if (o->json)
                print_json(e);
            else
                print_entry(e);
        }
        bool more = o->since && json_array_size(logs) == FM_CLI_LOGS_PAGE;
        snprintf(since, sizeof since, "%lld",
                 (long long)json_integer_value(json_object_get(root, "next")));
        json_decref(root);
        if (!more) return FM_CLI_OK;
        override = since;
    }
}

/* ---- follow ---------------------------------------------------------- */

typedef struct follow_ctx {
    const fm_cli_opts *o;
    fm_cli_buf line; /* a partial line carried over */
} follow_ctx;

static void print_line(const fm_cli_opts *o, const char *s, size_t n) {
    while (n && (s[n - 1] == '\r' || s[n - 1] == ' '))
        n--;
    if (n == 0) return; /* heartbeat */
    json_t *e = json_loadb(s, n, 0, NULL);
    if (!e) {
        fprintf(stderr, "warning: unexpected line from the server: %.*s\n",
                (int)(n > 200 ? 200 : n), s);
    } else if (o->json) {
        print_json(e);
    } else {
        print_entry(e);
    }
    json_decref(e);
}

static bool on_data(const char *p, size_t n, void *ud) {
    follow_ctx *fc = ud;
    while (n) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (nl && fc->line.len == 0) {
            print_line(fc->o, p, take);
        } else {
            fm_cli_buf_append(&fc->line, p, take);
            if (fc->line.oom) return false;
            if (nl) {
                print_line(fc->o, fc->line.data, fc->line.len);
                fc->line.len = 0;
            }
        }
        if (!nl) break;
        p = nl + 1;
        n -= take + 1;
    }
    fflush(stdout);
    return true;
}

static int follow(const fm_cli_opts *o, fm_cli_http *h) {
    char *path = logs_path(o, NULL);
    if (!path) return fm_cli_nomem();
    follow_ctx fc = {.o = o};
    fm_cli_req req = {.method = "GET", .path = path};
    int rc = fm_cli_http_stream(h, &req, on_data, &fc);
    if (rc == FM_CLI_OK && fc.line.oom)
        rc = fm_cli_nomem();
    else if (rc == FM_CLI_OK && fc.line.len)
        print_line(o, fc.line.data, fc.line.len);
    fm_cli_buf_dispose(&fc.line);
    free(path);
    return rc;
}

int fm_cli_verb_logs(const fm_cli_opts *o, fm_cli_http *h) {
    if (o->level) {
        int rc = check_level(o->level);
        if (rc != FM_CLI_OK) return rc;
    }
    if (o->since && !*o->since) return fm_cli_usage_error("logs", "--since needs a value");
    return o->follow ? follow(o, h) : read_pages(o, h);
}
