/* cli.c - `fnmesh VERB ...`: argv parsing, help text and dispatch.
 *
 * Two const tables drive everything: k_verbs (name, handler, operand counts,
 * usage, summary, help) and k_opts (every option, global or verb-specific).
 * Dispatch, usage errors, `fnmesh help` and `fnmesh VERB --help` all read
 * them, so the help cannot drift from what is accepted; docs/cli.md repeats
 * them by hand. Options may come before or after the verb, as `--opt VALUE`
 * or `--opt=VALUE`; "--" ends them. Only long options (plus -h, and -f for
 * `logs --follow`) exist, so an operand such as -1 reaches `invoke` as-is.
 *
 * No global mutable state: the parsed command line is one fm_cli_opts on
 * fm_cli_main's stack, its strings borrowed from argv. `serve` is listed in
 * the help but run by src/main.c before this file is reached. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_int.h"

#ifndef FM_VERSION
#error "FM_VERSION must be defined by the build"
#endif

#define FM_CLI_DEFAULT_TIMEOUT_MS 60000L
#define FM_CLI_MAX_TIMEOUT_S 1e7 /* about 115 days */

/* Verb-specific options: bits in fm_cli_verb.opts and fm_cli_optdef.verbs. */
#define FM_CLI_VOPT_NAME (1u << 0)
#define FM_CLI_VOPT_DATA (1u << 1)
#define FM_CLI_VOPT_TOP (1u << 2)
#define FM_CLI_VOPT_LOGS (1u << 3)

/* ---- the option table ------------------------------------------------ */

enum fm_cli_optid {
    OPT_NAME,
    OPT_DATA,
    OPT_SORT,
    OPT_WINDOW,
    OPT_INTERVAL,
    OPT_ITERATIONS,
    OPT_FOLLOW,
    OPT_SINCE,
    OPT_FUNCTION,
    OPT_LEVEL,
    OPT_URL,
    OPT_TOKEN,
    OPT_JSON,
    OPT_TIMEOUT,
    OPT_HELP,
    OPT_VERSION,
    OPT_COUNT
};

typedef struct fm_cli_optdef {
    const char *name; /* without the leading "--" */
    const char *arg;  /* placeholder of its value; NULL for a flag */
    unsigned verbs;   /* 0: global; else the FM_CLI_VOPT_* bit a verb must allow */
    const char *help; /* '\n' starts an indented continuation line */
} fm_cli_optdef;

static const fm_cli_optdef k_opts[OPT_COUNT] = {
    [OPT_NAME] = {"name", "NAME", FM_CLI_VOPT_NAME,
                  "deployment name (default: DIR's base name, lowercased)"},
    [OPT_DATA] = {"data", "JSON", FM_CLI_VOPT_DATA,
                  "send JSON as the request body, as-is, instead of ARGs"},
    [OPT_SORT] = {"sort", "KEY", FM_CLI_VOPT_TOP,
                  "order by rps, p99, errors or cpu (default rps; keys r p e c)"},
    [OPT_WINDOW] = {"window", "1m|5m", FM_CLI_VOPT_TOP,
                    "sliding window of the figures (default 1m; key w)"},
    [OPT_INTERVAL] = {"interval", "SECONDS", FM_CLI_VOPT_TOP, "refresh every SECONDS (default 2)"},
    [OPT_ITERATIONS] = {"iterations", "N", FM_CLI_VOPT_TOP,
                        "stop after N refreshes (default: until q or Ctrl-C on a\n"
                        "terminal, 1 otherwise)"},
    [OPT_FOLLOW] = {"follow", NULL, FM_CLI_VOPT_LOGS,
                    "keep printing new entries as they come (also -f), until Ctrl-C"},
    [OPT_SINCE] = {"since", "SINCE", FM_CLI_VOPT_LOGS,
                   "entries after a seq number, from a duration ago (30s, 5m,\n"
                   "2h, 1d) or from an RFC 3339 time (default: the latest 1000)"},
    [OPT_FUNCTION] = {"function", "NAME", FM_CLI_VOPT_LOGS, "only the entries of function NAME"},
    [OPT_LEVEL] = {"level", "LEVEL", FM_CLI_VOPT_LOGS,
                   "only entries at LEVEL or above: debug, info, warn, error"},
    [OPT_URL] = {"url", "URL", 0, "node URL (env FNMESH_URL; default http://127.0.0.1:8080)"},
    [OPT_TOKEN] = {"token", "TOKEN", 0,
                   "admin token (env FNMESH_TOKEN; default: the content of\n"
                   "$FNMESH_DATA/admin.token, else of ./fnmesh-data/admin.token)"},
    [OPT_JSON] = {"json", NULL, 0, "print the server's JSON answer exactly (errors too)"},
    [OPT_TIMEOUT] = {"timeout", "SECONDS", 0,
                     "give up on a request after SECONDS (default 60; 0 = never)"},
    [OPT_HELP] = {"help", NULL, 0, "show help (also -h)"},
    [OPT_VERSION] = {"version", NULL, 0, "print the version"},
};

/* ---- the verb table -------------------------------------------------- */

typedef struct fm_cli_verb {
    const char *name;
    fm_cli_handler run;     /* NULL: not run by the client (serve) */
    bool remote;            /* talks to a node: gets an fm_cli_http */
    int min_args, max_args; /* operands after the verb; max -1 = any number */
    unsigned opts;          /* FM_CLI_VOPT_* accepted */
    const char *usage;      /* '\n'-separated usage lines */
    const char *summary;    /* one line for `fnmesh help` */
    const char *help;       /* paragraph for `fnmesh VERB --help` */
} fm_cli_verb;

static int verb_help(const fm_cli_opts *o, fm_cli_http *h);

static const fm_cli_verb k_verbs[] = {
    {.name = "serve",
     .max_args = -1,
     .usage = "fnmesh serve [OPTIONS]",
     .summary = "run a node (its options: fnmesh serve --help)",
     .help = "Runs a node. `serve` must be the first argument; 'fnmesh serve --help'\n"
             "lists its options."},
    {.name = "dev",
     .max_args = -1,
     .usage = "fnmesh dev DIR [SERVE OPTIONS]",
     .summary = "run a node with DIR deployed, redeployed on every change",
     .help = "Runs a node in the foreground (the options of 'fnmesh serve') with DIR\n"
             "deployed, and deploys DIR again whenever a file under it changes; compile\n"
             "errors are printed and the previous version keeps serving. `dev` must be\n"
             "the first argument; 'fnmesh dev --help' says more."},
    {.name = "deploy",
     .run = fm_cli_verb_deploy,
     .remote = true,
     .min_args = 1,
     .max_args = 1,
     .opts = FM_CLI_VOPT_NAME,
     .usage = "fnmesh deploy DIR [--name NAME]",
     .summary = "upload a directory as a new version of a deployment",
     .help = "Packs DIR into a tar.gz (sorted paths; regular files, directories and\n"
             "symlinks; .git/ and fnmesh-data/ directories left out) and uploads it with\n"
             "PUT /system/v1/deployments/NAME. The node compiles and activates it;\n"
             "identical content reactivates the existing version. Prints the version and\n"
             "the endpoint of every function."},
    {.name = "ls",
     .run = fm_cli_verb_ls,
     .remote = true,
     .usage = "fnmesh ls",
     .summary = "list deployments",
     .help = "Lists the deployments of the node: name, active version, functions and\n"
             "creation time."},
    {.name = "invoke",
     .run = fm_cli_verb_invoke,
     .remote = true,
     .min_args = 1,
     .max_args = -1,
     .opts = FM_CLI_VOPT_DATA,
     .usage = "fnmesh invoke DEPLOYMENT/FUNCTION [ARG...]\n"
              "fnmesh invoke DEPLOYMENT/FUNCTION --data JSON",
     .summary = "call a function",
     .help = "Calls POST /fn/DEPLOYMENT/FUNCTION with the ARGs as a JSON array of\n"
             "positional arguments. An ARG that parses as JSON is sent as that value\n"
             "(3, true, null, [1,2], '\"3\"'), anything else as a string. Prints the\n"
             "result as compact JSON. Put -- before ARGs that start with --."},
    {.name = "rm",
     .run = fm_cli_verb_rm,
     .remote = true,
     .min_args = 1,
     .max_args = 1,
     .usage = "fnmesh rm NAME",
     .summary = "delete a deployment",
     .help = "Deletes deployment NAME; its functions stop answering at once."},
    {.name = "versions",
     .run = fm_cli_verb_versions,
     .remote = true,
     .min_args = 1,
     .max_args = 1,
     .usage = "fnmesh versions NAME",
     .summary = "list the versions of a deployment",
     .help = "Lists the versions of deployment NAME, newest first; * marks the active one."},
    {.name = "rollback",
     .run = fm_cli_verb_rollback,
     .remote = true,
     .min_args = 2,
     .max_args = 2,
     .usage = "fnmesh rollback NAME VERSION",
     .summary = "make another version of a deployment active",
     .help = "Makes VERSION (a full version or a unique prefix of at least 8 hex digits)\n"
             "the active version of deployment NAME."},
    {.name = "cluster",
     .run = fm_cli_verb_cluster,
     .remote = true,
     .max_args = 0,
     .usage = "fnmesh cluster",
     .summary = "list the nodes of the cluster",
     .help = "Lists the nodes of the cluster the node belongs to (from their heartbeats\n"
             "on NATS): id (* for the node asked), HTTP address, uptime, deployments,\n"
             "warm functions, calls in flight and load (calls in flight per executor\n"
             "thread). A node not started with --cluster lists only itself."},
    {.name = "top",
     .run = fm_cli_verb_top,
     .remote = true,
     .max_args = 0,
     .opts = FM_CLI_VOPT_TOP,
     .usage = "fnmesh top [--sort rps|p99|errors|cpu] [--window 1m|5m] [--interval SECONDS]\n"
              "           [--iterations N]",
     .summary = "live view of the busiest functions",
     .help = "Shows every function that was called, with its calls per second, errors,\n"
             "latency percentiles (p50, p99, p99.9) and CPU share over a sliding window,\n"
             "refreshed every interval, busiest first. On a terminal, keys change the\n"
             "order (r rps, p p99, e errors, c cpu), w switches the window, q quits.\n"
             "With --json, prints the node's /system/v1/stats answer instead."},
    {.name = "logs",
     .run = fm_cli_verb_logs,
     .remote = true,
     .min_args = 1,
     .max_args = 1,
     .opts = FM_CLI_VOPT_LOGS,
     .usage = "fnmesh logs NAME [-f] [--since SINCE] [--function NAME] [--level LEVEL]",
     .summary = "print (or follow) what the functions of a deployment logged",
     .help = "Prints the log entries of deployment NAME kept by the node (the latest\n"
             "2000 per deployment), oldest first, one per line:\n"
             "  TIME LEVEL DEPLOYMENT/FUNCTION VERSION req=REQUEST_ID MESSAGE\n"
             "With --json, each entry is printed as one JSON object per line (NDJSON).\n"
             "With -f, keeps the connection open and prints entries as they are logged."},
    {.name = "help",
     .run = verb_help,
     .max_args = 1,
     .usage = "fnmesh help [VERB]",
     .summary = "show help for fnmesh or a verb",
     .help = "Shows the list of verbs, or the help of VERB (same as fnmesh VERB --help)."},
};

#define FM_CLI_NVERBS (sizeof k_verbs / sizeof *k_verbs)

static const fm_cli_verb *find_verb(const char *name) {
    for (size_t i = 0; name && i < FM_CLI_NVERBS; i++)
        if (strcmp(k_verbs[i].name, name) == 0) return &k_verbs[i];
    return NULL;
}

/* ---- help ------------------------------------------------------------ */

static void print_usage_lines(FILE *f, const char *usage) {
    const char *prefix = "usage: ";
    while (*usage) {
        size_t n = strcspn(usage, "\n");
        fprintf(f, "%s%.*s\n", prefix, (int)n, usage);
        prefix = "       ";
        usage += n + (usage[n] == '\n');
    }
}

/* Prints `text`, indenting every line after the first by `indent`. */
static void print_indented(FILE *f, const char *text, int indent) {
    for (;;) {
        size_t n = strcspn(text, "\n");
        fprintf(f, "%.*s\n", (int)n, text);
        if (!text[n]) return;
        text += n + 1;
        fprintf(f, "%*s", indent, "");
    }
}

static int opt_head(char *buf, size_t size, const fm_cli_optdef *d) {
    return snprintf(buf, size, "--%s%s%s", d->name, d->arg ? " " : "", d->arg ? d->arg : "");
}

/* The options whose `verbs` bits meet `mask`, or the global ones (mask 0). */
static void print_options(FILE *f, const char *title, unsigned mask) {
    char head[64];
    int width = 0;
    for (size_t i = 0; i < OPT_COUNT; i++) {
        int n = opt_head(head, sizeof head, &k_opts[i]);
        width = n > width ? n : width;
    }
    fprintf(f, "\n%s:\n", title);
    for (size_t i = 0; i < OPT_COUNT; i++) {
        const fm_cli_optdef *d = &k_opts[i];
        if (mask ? !(d->verbs & mask) : d->verbs != 0) continue;
        opt_head(head, sizeof head, d);
        fprintf(f, "  %-*s  ", width, head);
        print_indented(f, d->help, width + 4);
    }
}

static void print_global_help(FILE *f) {
    print_usage_lines(f, "fnmesh VERB [ARG...] [OPTIONS]");
    fputs("\nfnmesh runs a serverless node (serve) and manages one over HTTP (the other\n"
          "verbs).\n\nverbs:\n",
          f);
    for (size_t i = 0; i < FM_CLI_NVERBS; i++)
        fprintf(f, "  %-9s %s\n", k_verbs[i].name, k_verbs[i].summary);
    print_options(f, "options (before or after the verb)", 0);
    fputs("\nRun 'fnmesh VERB --help' for the arguments of a verb.\n"
          "Exit status: 0 ok; 1 the server reported an error or could not be reached;\n"
          "2 usage error.\n",
          f);
}

static void print_verb_help(FILE *f, const fm_cli_verb *v) {
    print_usage_lines(f, v->usage);
    fputc('\n', f);
    print_indented(f, v->help, 0);
    if (v->opts) print_options(f, "options", v->opts);
    if (v->remote) print_options(f, "global options", 0);
}

static int verb_help(const fm_cli_opts *o, fm_cli_http *h) {
    if (o->nargs == 0) {
        print_global_help(stdout);
        return FM_CLI_OK;
    }
    const fm_cli_verb *v = find_verb(o->args[0]);
    if (!v) return fm_cli_usage_error("help", "unknown verb '%s'", o->args[0]);
    print_verb_help(stdout, v);
    return FM_CLI_OK;
}

int fm_cli_usage_error(const char *verb, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    const fm_cli_verb *v = find_verb(verb);
    print_usage_lines(stderr, v ? v->usage : "fnmesh VERB [ARG...] [OPTIONS]");
    fprintf(stderr, "Run 'fnmesh %s%s--help' for more.\n", v ? v->name : "", v ? " " : "");
    return FM_CLI_USAGE;
}

/* ---- parsing --------------------------------------------------------- */

static int parse_timeout(const char *val, long *ms, char *err, size_t errlen) {
    char *end = NULL;
    errno = 0;
    double s = strtod(val, &end);
    if (!*val || *end || errno || !isfinite(s) || s < 0 || s > FM_CLI_MAX_TIMEOUT_S) {
        snprintf(err, errlen, "invalid --timeout '%s': expected a number of seconds, 0 = never",
                 val);
        return FM_CLI_USAGE;
    }
    *ms = (long)(s * 1000.0 + 0.5);
    if (s > 0 && *ms == 0) *ms = 1;
    return FM_CLI_OK;
}

static int set_option(fm_cli_opts *o, enum fm_cli_optid id, const char *val, char *err,
                      size_t errlen) {
    switch (id) {
    case OPT_NAME:
        o->name = val;
        break;
    case OPT_DATA:
        o->data = val;
        break;
    case OPT_SORT:
        if (strcmp(val, "rps") && strcmp(val, "p99") && strcmp(val, "errors") && strcmp(val, "cpu")) {
            snprintf(err, errlen, "invalid --sort '%s': expected rps, p99, errors or cpu", val);
            return FM_CLI_USAGE;
        }
        o->sort = val;
        break;
    case OPT_WINDOW:
        if (strcmp(val, "1m") && strcmp(val, "5m")) {
            snprintf(err, errlen, "invalid --window '%s': expected 1m or 5m", val);
            return FM_CLI_USAGE;
        }
        o->window = val;
        break;
    case OPT_INTERVAL: {
        char *end = NULL;
        double v = strtod(val, &end);
        if (!*val || *end || !isfinite(v) || v < 0.1 || v > 3600) {
            snprintf(err, errlen, "invalid --interval '%s': expected 0.1 to 3600 seconds", val);
            return FM_CLI_USAGE;
        }
        o->interval_ms = (long)(v * 1000);
        break;
    }
    case OPT_ITERATIONS: {
        char *end = NULL;
        long v = strtol(val, &end, 10);
        if (!*val || *end || v < 1) {
            snprintf(err, errlen, "invalid --iterations '%s': expected a positive number", val);
            return FM_CLI_USAGE;
        }
        o->iterations = v;
        break;
    }
    case OPT_FOLLOW:
        o->follow = true;
        break;
    case OPT_SINCE:
        o->since = val;
        break;
    case OPT_FUNCTION:
        o->function = val;
        break;
    case OPT_LEVEL:
        o->level = val;
        break;
    case OPT_URL:
        if (!*val) {
            snprintf(err, errlen, "option --url needs a value (URL)");
            return FM_CLI_USAGE;
        }
        o->url = val;
        break;
    case OPT_TOKEN:
        o->token = val;
        break;
    case OPT_JSON:
        o->json = true;
        break;
    case OPT_TIMEOUT:
        return parse_timeout(val, &o->timeout_ms, err, errlen);
    case OPT_HELP:
        o->help = true;
        break;
    case OPT_VERSION:
        o->version = true;
        break;
    case OPT_COUNT:
        break;
    }
    return FM_CLI_OK;
}

/* Parses the long option at argv[*i], consuming its value when separate. */
static int parse_option(int argc, char **argv, int *i, fm_cli_opts *o, char *err, size_t errlen) {
    const char *arg = argv[*i] + 2;
    const char *eq = strchr(arg, '=');
    size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
    size_t id = 0;
    while (id < OPT_COUNT && !(strlen(k_opts[id].name) == n && !strncmp(k_opts[id].name, arg, n)))
        id++;
    if (id == OPT_COUNT) {
        snprintf(err, errlen, "unknown option '--%.*s'", (int)n, arg);
        return FM_CLI_USAGE;
    }
    const fm_cli_optdef *d = &k_opts[id];
    const char *val = eq ? eq + 1 : NULL;
    if (d->arg && !val && *i + 1 < argc) val = argv[++*i];
    if (d->arg && !val) {
        snprintf(err, errlen, "option --%s needs a value (%s)", d->name, d->arg);
        return FM_CLI_USAGE;
    }
    if (!d->arg && val) {
        snprintf(err, errlen, "option --%s takes no value", d->name);
        return FM_CLI_USAGE;
    }
    o->verb_opts |= d->verbs;
    return set_option(o, (enum fm_cli_optid)id, val, err, errlen);
}

/* Fills `o` from argv: options anywhere, the first operand is the verb, the
 * others go to o->args (which must hold argc pointers). */
static int parse_argv(int argc, char **argv, fm_cli_opts *o, char *err, size_t errlen) {
    bool operands_only = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int rc = FM_CLI_OK;
        if (operands_only || a[0] != '-' || !a[1] ||
            (a[1] != '-' && strcmp(a, "-h") != 0 && strcmp(a, "-f") != 0)) {
            if (!o->verb)
                o->verb = a;
            else
                o->args[o->nargs++] = argv[i];
        } else if (strcmp(a, "--") == 0) {
            operands_only = true;
        } else if (strcmp(a, "-h") == 0) {
            o->help = true;
        } else if (strcmp(a, "-f") == 0) {
            o->follow = true;
            o->verb_opts |= FM_CLI_VOPT_LOGS;
        } else {
            rc = parse_option(argc, argv, &i, o, err, errlen);
        }
        if (rc != FM_CLI_OK) return rc;
    }
    return FM_CLI_OK;
}

/* ---- dispatch -------------------------------------------------------- */

/* The name of operand `index` in the verb's first usage line (the words
 * after "fnmesh VERB" outside brackets), e.g. "DIR"; "argument" if none. */
static void operand_name(const fm_cli_verb *v, int index, char *buf, size_t size) {
    const char *p = v->usage + strlen("fnmesh ") + strlen(v->name);
    snprintf(buf, size, "argument");
    while (*p == ' ') {
        p++;
        size_t n = strcspn(p, " \n");
        if (*p != '[' && index-- == 0) {
            snprintf(buf, size, "%.*s", (int)n, p);
            return;
        }
        p += n;
    }
}

/* Checks the verb options and the operand count against the table. */
static int check_usage(const fm_cli_opts *o, const fm_cli_verb *v) {
    unsigned extra = o->verb_opts & ~v->opts;
    for (size_t i = 0; extra && i < OPT_COUNT; i++)
        if (k_opts[i].verbs & extra)
            return fm_cli_usage_error(v->name, "option --%s does not apply to '%s'", k_opts[i].name,
                                      v->name);
    if (o->nargs < v->min_args) {
        char name[64];
        operand_name(v, o->nargs, name, sizeof name);
        return fm_cli_usage_error(v->name, "missing %s", name);
    }
    if (v->max_args >= 0 && o->nargs > v->max_args)
        return fm_cli_usage_error(v->name, "unexpected argument '%s'", o->args[v->max_args]);
    return FM_CLI_OK;
}

static int run_verb(const fm_cli_opts *o, const fm_cli_verb *v) {
    if (!v->run) return fm_cli_usage_error(v->name, "'%s' must be the first argument", v->name);
    int rc = check_usage(o, v);
    if (rc != FM_CLI_OK) return rc;
    fm_cli_http *h = NULL;
    if (v->remote && (rc = fm_cli_http_create(o, &h)) != FM_CLI_OK) return rc;
    rc = v->run(o, h);
    fm_cli_http_destroy(h);
    return rc;
}

static int dispatch(const fm_cli_opts *o) {
    const fm_cli_verb *v = find_verb(o->verb);
    if (o->verb && !v)
        return fm_cli_usage_error(NULL, "unknown %s '%s'", o->verb[0] == '-' ? "option" : "verb",
                                  o->verb);
    if (o->help) {
        if (v)
            print_verb_help(stdout, v);
        else
            print_global_help(stdout);
        return FM_CLI_OK;
    }
    if (o->version) {
        printf("fnmesh %s\n", FM_VERSION);
        return FM_CLI_OK;
    }
    if (!v) {
        print_global_help(stderr);
        return FM_CLI_USAGE;
    }
    return run_verb(o, v);
}

int fm_cli_main(int argc, char **argv) {
    fm_cli_opts o = {.timeout_ms = FM_CLI_DEFAULT_TIMEOUT_MS};
    o.args = calloc(argc > 0 ? (size_t)argc : 1, sizeof *o.args);
    if (!o.args) return fm_cli_nomem();
    char err[512] = "";
    int rc = parse_argv(argc, argv, &o, err, sizeof err);
    if (rc == FM_CLI_OK)
        rc = dispatch(&o);
    else
        rc = fm_cli_usage_error(o.verb, "%s", err);
    free(o.args);
    if (fflush(stdout) != 0 && rc == FM_CLI_OK) {
        fprintf(stderr, "error: cannot write the output: %s\n", strerror(errno));
        rc = FM_CLI_ERR;
    }
    return rc;
}
