/* cli_int.h - what the files of the fnmesh client offer each other.
 *
 * cli.c parses argv and dispatches through one verb table; cli_verbs.c runs
 * the verbs; cli_http.c talks HTTP (libcurl); cli_pack.c turns a directory
 * into the deploy tar.gz (libarchive); cli_util.c has the growable buffer,
 * the text table and small string helpers. Nothing here is visible outside
 * src/cli/.
 *
 * Exit-code rule: every function returning `int` below returns an exit code
 * (FM_CLI_OK, FM_CLI_ERR or FM_CLI_USAGE) and has already printed the reason
 * to stderr when it is not FM_CLI_OK. Callers just pass the code up. */
#ifndef FM_CLI_INT_H
#define FM_CLI_INT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

enum { FM_CLI_OK = 0, FM_CLI_ERR = 1, FM_CLI_USAGE = 2 };

#define FM_CLI_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))

/* ---- cli_util.c ------------------------------------------------------ */

/* Growable byte buffer; zero-initialise it ({0}). `data` is NUL-terminated
 * once anything was appended (it may stay NULL while empty). An allocation
 * failure is sticky: `oom` is set and later appends do nothing, so callers
 * check `oom` once at the end. Release with fm_cli_buf_dispose(). */
typedef struct fm_cli_buf {
    char *data;
    size_t len, cap;
    bool oom;
} fm_cli_buf;

void fm_cli_buf_append(fm_cli_buf *b, const void *p, size_t n);
void fm_cli_buf_puts(fm_cli_buf *b, const char *s);
void fm_cli_buf_printf(fm_cli_buf *b, const char *fmt, ...) FM_CLI_PRINTF(2, 3);
/* Appends `seg` percent-encoded as one URL path segment (RFC 3986
 * unreserved characters are kept). */
void fm_cli_buf_put_segment(fm_cli_buf *b, const char *seg);
/* Appends the JSON text s[0..n) with the whitespace outside strings removed.
 * The text must be valid JSON (check first); nothing else is rewritten, so
 * numbers keep their exact spelling. */
void fm_cli_buf_put_json_compact(fm_cli_buf *b, const char *s, size_t n);
void fm_cli_buf_dispose(fm_cli_buf *b);

/* Returns a malloc'd formatted string (caller frees), NULL when out of
 * memory. */
char *fm_cli_fmt(const char *fmt, ...) FM_CLI_PRINTF(1, 2);

/* Prints "error: out of memory" and returns FM_CLI_ERR. */
int fm_cli_nomem(void);

/* A plain-text table: cells are added row by row (ncols per row, the first
 * row being the header) and printed with columns padded to their widest
 * cell, two spaces apart, trailing blanks trimmed. Cells are copied. Same
 * sticky-oom rule as fm_cli_buf. */
typedef struct fm_cli_table {
    size_t ncols;
    char **cells;
    size_t n, cap;
    bool oom;
} fm_cli_table;

void fm_cli_table_init(fm_cli_table *t, size_t ncols);
void fm_cli_table_add(fm_cli_table *t, const char *fmt, ...) FM_CLI_PRINTF(2, 3);
/* Prints to stdout; returns FM_CLI_ERR (after printing why) when a cell
 * could not be allocated. */
int fm_cli_table_print(const fm_cli_table *t);
void fm_cli_table_dispose(fm_cli_table *t);

/* The string member `key` of `obj`, or `dflt` when absent or not a string.
 * Borrowed: valid while `obj` lives. */
const char *fm_cli_json_str(const json_t *obj, const char *key, const char *dflt);

/* ---- cli.c ----------------------------------------------------------- */

/* Parsed command line. Strings are borrowed from argv (or the environment)
 * and stay valid for the whole run. */
typedef struct fm_cli_opts {
    const char *verb; /* NULL when none was given */
    char **args;      /* operands after the verb (owned by cli.c) */
    int nargs;
    const char *url;    /* --url, NULL when not given */
    const char *token;  /* --token, NULL when not given */
    const char *name;   /* deploy --name */
    const char *data;   /* invoke --data */
    long timeout_ms;    /* --timeout in ms; 0 = no limit */
    const char *sort;   /* top --sort, NULL = rps */
    const char *window; /* top --window, NULL = 1m */
    long interval_ms;   /* top --interval, 0 = default */
    long iterations;    /* top --iterations, 0 = default */
    bool json;          /* --json */
    bool help;          /* --help / -h */
    bool version;       /* --version */
    bool follow;          /* logs -f / --follow */
    const char *since;    /* logs --since */
    const char *function; /* logs --function */
    const char *level;    /* logs --level */
    unsigned verb_opts; /* bits (FM_CLI_VOPT_*, cli.c) of the verb options seen */
} fm_cli_opts;

/* Prints "error: <message>" and the usage of `verb` to stderr; returns
 * FM_CLI_USAGE. */
int fm_cli_usage_error(const char *verb, const char *fmt, ...) FM_CLI_PRINTF(2, 3);

/* ---- cli_http.c ------------------------------------------------------ */

/* One connection to a node: base URL, token, timeout, a reusable curl easy
 * handle. Created for a verb that talks to the server, destroyed after it. */
typedef struct fm_cli_http fm_cli_http;

/* Sets up libcurl and resolves the URL (--url, FNMESH_URL, default) and the
 * timeout. The token is looked up on the first /system/v1 request. */
int fm_cli_http_create(const fm_cli_opts *o, fm_cli_http **out);
void fm_cli_http_destroy(fm_cli_http *h); /* NULL is fine */

typedef struct fm_cli_req {
    const char *method;       /* "GET", "PUT", "POST", "DELETE" */
    const char *path;         /* starts with '/', already percent-encoded */
    const char *content_type; /* of `body`; NULL when there is no body */
    const void *body;         /* borrowed; NULL for none */
    size_t body_len;
} fm_cli_req;

typedef struct fm_cli_resp {
    long status;
    bool json;       /* Content-Type says JSON */
    fm_cli_buf body; /* owned; dispose with fm_cli_resp_dispose() */
} fm_cli_resp;

/* Sends `req` (with "Authorization: Bearer" on /system/v1 paths) and waits
 * for the answer. FM_CLI_OK means a 2xx status and `*resp` filled (the
 * caller disposes it). Otherwise the error was printed: "error: cannot reach
 * URL: ..." when no answer came, or "error: MESSAGE (CODE, HTTP STATUS)"
 * from the server's error body (which also goes to stdout under --json);
 * `*resp` is then empty. */
int fm_cli_http_call(fm_cli_http *h, const fm_cli_req *req, fm_cli_resp *resp);

/* Writes the body as-is to stdout, plus a newline when it lacks one. */
int fm_cli_resp_print_raw(const fm_cli_resp *resp);

/* Parses the body as JSON; on failure prints "error: unexpected answer" and
 * returns FM_CLI_ERR. The caller json_decref()s `*out`. */
int fm_cli_resp_json(const fm_cli_resp *resp, json_t **out);

void fm_cli_resp_dispose(fm_cli_resp *resp);

/* Receives a streamed 2xx body as it arrives; returns false to stop. */
typedef bool (*fm_cli_on_data)(const char *p, size_t n, void *ud);

/* Like fm_cli_http_call, but a 2xx body goes to `on_data` as it arrives
 * instead of being collected, and --timeout bounds only the connection
 * and the response headers (a stream may last forever). Errors are printed
 * as by fm_cli_http_call. Returns when the server ends the body, on_data
 * returns false, or the connection fails. */
int fm_cli_http_stream(fm_cli_http *h, const fm_cli_req *req, fm_cli_on_data on_data, void *ud);

/* ---- cli_pack.c ------------------------------------------------------ */

/* Packs directory `dir` into a gzip-compressed tar appended to `out`.
 * Deterministic: entries sorted by relative path (byte order), mtime 0,
 * owner 0, modes normalised (0755 directories and executables, 0644 other
 * files, 0777 symlinks), no gzip timestamp. Regular files, directories and
 * symlinks (kept as links) are packed; directories named ".git" or
 * "fnmesh-data" are skipped at any depth; other file types are skipped with
 * a warning. */
int fm_cli_pack(const char *dir, fm_cli_buf *out);

/* ---- cli_verbs.c ----------------------------------------------------- */

/* One function per verb; `h` is NULL for verbs that do not talk to a node. */
typedef int (*fm_cli_handler)(const fm_cli_opts *o, fm_cli_http *h);

int fm_cli_verb_deploy(const fm_cli_opts *o, fm_cli_http *h);
int fm_cli_verb_ls(const fm_cli_opts *o, fm_cli_http *h);
int fm_cli_verb_invoke(const fm_cli_opts *o, fm_cli_http *h);
int fm_cli_verb_rm(const fm_cli_opts *o, fm_cli_http *h);
int fm_cli_verb_versions(const fm_cli_opts *o, fm_cli_http *h);
int fm_cli_verb_rollback(const fm_cli_opts *o, fm_cli_http *h);
int fm_cli_verb_cluster(const fm_cli_opts *o, fm_cli_http *h);

/* ---- cli_top.c ------------------------------------------------------- */

int fm_cli_verb_top(const fm_cli_opts *o, fm_cli_http *h);
/* ---- cli_logs.c ------------------------------------------------------ */

int fm_cli_verb_logs(const fm_cli_opts *o, fm_cli_http *h);

#endif
