/* cli_top.c - `fnmesh top`: a refreshing terminal view of /system/v1/stats.
 *
 * Each refresh fetches the node's stats (one GET), sorts the functions by
 * the chosen key and prints a table. On a terminal the screen is cleared
 * first and single keys (read from stdin in non-canonical mode, restored on
 * every exit path) change the order or window or quit; elsewhere it prints
 * the table `--iterations` times (default once), so scripts never hang.
 * Owns nothing beyond one refresh: every JSON document is freed before the
 * next one is fetched. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli_int.h"

#define TOP_DEFAULT_INTERVAL_MS 2000
#define TOP_MAX_ROWS 200

typedef enum { SORT_RPS, SORT_P99, SORT_ERRORS, SORT_CPU } sort_key;

typedef struct top_row {
    const json_t *fn; /* borrowed from the stats document */
    const json_t *w;  /* its window object */
    double key;
} top_row;

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static double num(const json_t *o, const char *k) {
    const json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : -1;
}

static int cmp_rows(const void *a, const void *b) {
    const top_row *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? 1 : -1; /* descending */
    int c = strcmp(fm_cli_json_str(x->fn, "deployment", ""), fm_cli_json_str(y->fn, "deployment", ""));
    return c ? c : strcmp(fm_cli_json_str(x->fn, "function", ""), fm_cli_json_str(y->fn, "function", ""));
}

static void ms_cell(fm_cli_table *t, const json_t *w, const char *k) {
    double us = num(w, k);
    if (us < 0) fm_cli_table_add(t, "-");
    else if (us < 10000) fm_cli_table_add(t, "%.2f", us / 1000);
    else fm_cli_table_add(t, "%.0f", us / 1000);
}

static const char *sort_names[] = {"rps", "p99", "errors", "cpu"};

/* Prints one screen from a stats document. */
static int render(const json_t *doc, const char *window, sort_key sort, bool tty, const char *url) {
    const json_t *fns = json_object_get(doc, "functions");
    size_t n = json_array_size(fns);
    top_row *rows = calloc(n ? n : 1, sizeof(*rows));
    if (!rows) return fm_cli_nomem();
    size_t nr = 0;
    double total_rps = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *f = json_array_get(fns, i);
        const json_t *w = json_object_get(f, window);
        if (!json_is_object(w) || num(w, "calls") <= 0) continue; /* idle in this window */
        double errs = num(w, "errors") + num(w, "timeouts") + num(w, "rejected");
        double key = sort == SORT_RPS      ? num(w, "rps")
                     : sort == SORT_P99    ? num(w, "p99_us")
                     : sort == SORT_ERRORS ? errs
                                           : num(w, "cpu_percent");
        total_rps += num(w, "rps");
        rows[nr++] = (top_row){f, w, key};
    }
    qsort(rows, nr, sizeof(*rows), cmp_rows);
    const json_t *node = json_object_get(doc, "node");
    if (tty) fputs("\033[H\033[2J", stdout);
    printf("fnmesh top - %s - up %.0fs, %d in flight, %zu active of %zu functions, %.1f calls/s\n",
           url, num(node, "uptime_seconds"), (int)num(node, "inflight"), nr, n, total_rps);
    printf("window %s, sorted by %s%s\n\n", window, sort_names[sort],
           tty ? "   (keys: r p e c sort, w window, q quit)" : "");
    fm_cli_table t;
    fm_cli_table_init(&t, 10);
    static const char *heads[] = {"FUNCTION", "RUNTIME", "RPS",     "CALLS", "ERR%",
                                  "P50 ms",   "P99 ms",  "P99.9 ms", "MAX ms", "CPU%"};
    for (size_t i = 0; i < 10; i++) fm_cli_table_add(&t, "%s", heads[i]);
    for (size_t i = 0; i < nr && i < TOP_MAX_ROWS; i++) {
        const json_t *f = rows[i].fn, *w = rows[i].w;
        double calls = num(w, "calls");
        double errs = num(w, "errors") + num(w, "timeouts") + num(w, "rejected");
        fm_cli_table_add(&t, "%s/%s", fm_cli_json_str(f, "deployment", "?"),
                         fm_cli_json_str(f, "function", "?"));
        fm_cli_table_add(&t, "%s", fm_cli_json_str(f, "runtime", "?"));
        fm_cli_table_add(&t, "%.1f", num(w, "rps"));
        fm_cli_table_add(&t, "%.0f", calls);
        fm_cli_table_add(&t, "%.1f", calls > 0 ? 100.0 * errs / calls : 0.0);
        ms_cell(&t, w, "p50_us");
        ms_cell(&t, w, "p99_us");
        ms_cell(&t, w, "p999_us");
        ms_cell(&t, w, "max_us");
        fm_cli_table_add(&t, "%.1f", num(w, "cpu_percent"));
    }
    int rc = fm_cli_table_print(&t);
    if (nr == 0) printf("(no calls in the last %s)\n", window);
    fm_cli_table_dispose(&t);
    free(rows);
    fflush(stdout);
    return rc;
}

/* Waits up to ms for a key on a terminal stdin; applies it. Returns false on 'q'. */
static bool wait_key(long ms, bool keys, sort_key *sort, const char **window) {
    if (!keys) {
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        while (!g_stop && nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
        return true;
    }
    struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
    if (poll(&p, 1, (int)ms) <= 0) return true;
    char c;
    if (read(STDIN_FILENO, &c, 1) != 1) return true;
    switch (c) {
    case 'q': case 'Q': return false;
    case 'r': *sort = SORT_RPS; break;
    case 'p': *sort = SORT_P99; break;
    case 'e': *sort = SORT_ERRORS; break;
    case 'c': *sort = SORT_CPU; break;
    case 'w': *window = strcmp(*window, "1m") == 0 ? "5m" : "1m"; break;
    default: break;
    }
    return true;
}

int fm_cli_verb_top(const fm_cli_opts *o, fm_cli_http *h) {
    sort_key sort = SORT_RPS;
    for (int i = 0; o->sort && i < 4; i++)
        if (strcmp(o->sort, sort_names[i]) == 0) sort = (sort_key)i;
    const char *window = o->window ? o->window : "1m";
    long interval = o->interval_ms ? o->interval_ms : TOP_DEFAULT_INTERVAL_MS;
    bool tty = isatty(STDOUT_FILENO) && !o->json;
    bool keys = tty && isatty(STDIN_FILENO);
    long iterations = o->iterations ? o->iterations : tty ? 0 : 1;
    const char *url = getenv("FNMESH_URL");
    url = o->url ? o->url : url ? url : "http://127.0.0.1:8080";

    struct termios saved;
    if (keys && tcgetattr(STDIN_FILENO, &saved) == 0) {
        struct termios raw = saved;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    } else {
        keys = false;
    }
    struct sigaction sa = {.sa_handler = on_signal}, old_int, old_term;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    int rc = FM_CLI_OK;
    for (long done = 0; !g_stop && (iterations == 0 || done < iterations); done++) {
        if (done && !wait_key(interval, keys, &sort, &window)) break;
        if (g_stop) break;
        fm_cli_buf path = {0};
        fm_cli_buf_printf(&path, "/system/v1/stats?window=%s", window);
        if (path.oom) {
            rc = fm_cli_nomem();
            break;
        }
        fm_cli_req req = {.method = "GET", .path = path.data};
        fm_cli_resp r;
        rc = fm_cli_http_call(h, &req, &r);
        fm_cli_buf_dispose(&path);
        if (rc != FM_CLI_OK) break;
        if (o->json) {
            rc = fm_cli_resp_print_raw(&r);
        } else {
            json_t *doc = NULL;
            rc = fm_cli_resp_json(&r, &doc);
            if (rc == FM_CLI_OK) rc = render(doc, window, sort, tty, url);
            json_decref(doc);
        }
        fm_cli_resp_dispose(&r);
        if (rc != FM_CLI_OK) break;
        if (!tty && (iterations == 0 || done + 1 < iterations)) putchar('\n');
    }
    if (keys) tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return rc;
}
