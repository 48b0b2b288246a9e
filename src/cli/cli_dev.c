/* cli_dev.c - `fnmesh dev DIR`: a node in the foreground with DIR deployed,
 * redeployed whenever a file under DIR changes.
 *
 * The node is the real one: this process runs fm_serve_main (the code path
 * of `fnmesh serve`, with the options given after DIR) on its main thread,
 * and a watcher thread that deploys DIR through the ordinary `deploy` verb
 * over HTTP, then waits on inotify and deploys again after every burst of
 * changes (once the files have been quiet for DEBOUNCE_MS). A refused deploy
 * (a syntax error, say) prints its file:line:column message and leaves the
 * previous version serving, as it does for `fnmesh deploy`. Without --data
 * the node keeps its state in a temporary directory removed at exit.
 *
 * Ownership: the watcher owns its inotify fd and watch table; everything it
 * reads from `dev_cfg` is written before the thread starts and never again. */
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_int.h"
#include "core/util.h"
#include "gateway/server.h"

#define DEBOUNCE_MS 150
#define MAX_WATCHES 4096

typedef struct dev_cfg {
    char dir[PATH_MAX];
    char host[256];
    char port[16];
    char url[320];
    char token[80];
} dev_cfg;

typedef struct watch_table {
    int fd;
    int wd[MAX_WATCHES];
    char *path[MAX_WATCHES]; /* owned */
    size_t n;
} watch_table;

static bool skipped(const char *name) {
    return strcmp(name, ".git") == 0 || strcmp(name, "fnmesh-data") == 0 ||
           strcmp(name, "node_modules") == 0;
}

/* Watches dir and every directory below it (but the skipped ones). */
static void watch_tree(watch_table *w, const char *dir) {
    if (w->n >= MAX_WATCHES) return;
    int wd = inotify_add_watch(w->fd, dir,
                               IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM |
                                   IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF | IN_ONLYDIR);
    if (wd < 0) return;
    w->wd[w->n] = wd;
    w->path[w->n++] = strdup(dir);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
            continue;
        if (skipped(e->d_name)) continue;
        char sub[PATH_MAX];
        if (snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name) >= (int)sizeof(sub)) continue;
        struct stat st;
        if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode)) watch_tree(w, sub);
    }
    closedir(d);
}

static const char *watch_path(const watch_table *w, int wd) {
    for (size_t i = 0; i < w->n; i++)
        if (w->wd[i] == wd) return w->path[i];
    return NULL;
}

static void deploy(const dev_cfg *c) {
    char *argv[] = {"fnmesh", "deploy", (char *)c->dir, "--url", (char *)c->url,
                    "--token", (char *)c->token, NULL};
    int rc = fm_cli_main(7, argv);
    if (rc != FM_CLI_OK)
        fprintf(stderr, "fnmesh dev: the deploy was refused; the previous version keeps serving\n");
    fflush(stdout);
    fflush(stderr);
}

/* True once something accepts connections on the node's address. */
static bool node_listening(const dev_cfg *c) {
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(c->host, c->port, &hints, &ai) != 0) return false;
    bool ok = false;
    for (struct addrinfo *a = ai; a && !ok; a = a->ai_next) {
        int s = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (s < 0) continue;
        ok = connect(s, a->ai_addr, a->ai_addrlen) == 0;
        close(s);
    }
    freeaddrinfo(ai);
    return ok;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void *watcher_main(void *arg) {
    const dev_cfg *c = arg;
    for (int i = 0; i < 600 && !node_listening(c); i++) sleep_ms(50);
    watch_table w = {.fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK)};
    if (w.fd < 0) {
        fprintf(stderr, "fnmesh dev: inotify: %s; %s is deployed once, not watched\n",
                strerror(errno), c->dir);
        deploy(c);
        return NULL;
    }
    watch_tree(&w, c->dir); /* before the first deploy: no change can slip between */
    deploy(c);
    fprintf(stderr, "fnmesh dev: watching %s (%zu directories); Ctrl-C stops\n", c->dir, w.n);
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        struct pollfd p = {.fd = w.fd, .events = POLLIN};
        bool changed = false;
        /* a burst of changes ends when the files have been quiet for DEBOUNCE_MS */
        while (poll(&p, 1, changed ? DEBOUNCE_MS : -1) > 0) {
            ssize_t n = read(w.fd, buf, sizeof(buf));
            for (ssize_t off = 0; n > 0 && off < n;) {
                const struct inotify_event *e = (const struct inotify_event *)(buf + off);
                off += (ssize_t)(sizeof(*e) + e->len);
                if (e->len && skipped(e->name)) continue;
                changed = true;
                if ((e->mask & (IN_CREATE | IN_MOVED_TO)) && (e->mask & IN_ISDIR) && e->len) {
                    const char *parent = watch_path(&w, e->wd);
                    char sub[PATH_MAX];
                    if (parent && snprintf(sub, sizeof(sub), "%s/%s", parent, e->name) <
                                      (int)sizeof(sub))
                        watch_tree(&w, sub);
                }
            }
        }
        if (changed) {
            fprintf(stderr, "fnmesh dev: %s changed: redeploying\n", c->dir);
            deploy(c);
        }
    }
    return NULL;
}

static int dev_usage(FILE *f) {
    fprintf(f,
            "usage: fnmesh dev DIR [serve options]\n"
            "\n"
            "Runs a node in the foreground with DIR deployed, and deploys DIR again\n"
            "whenever a file under it changes (directories named .git, node_modules and\n"
            "fnmesh-data are not watched). A refused deploy prints why (file:line:column)\n"
            "and the previous version keeps serving. The options are those of\n"
            "'fnmesh serve' (default --listen 127.0.0.1:8080); without --data the node\n"
            "keeps its state in a temporary directory removed when it stops. Ctrl-C stops.\n");
    return f == stdout ? FM_CLI_OK : FM_CLI_USAGE;
}

int fm_cli_dev_main(int argc, char **argv) {
    /* argv[0] = "dev", argv[1] = DIR, then options for serve */
    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0))
        return dev_usage(stdout);
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "error: missing DIR\n");
        return dev_usage(stderr);
    }
    static dev_cfg cfg;
    if (!realpath(argv[1], cfg.dir)) {
        fprintf(stderr, "error: cannot read %s: %s\n", argv[1], strerror(errno));
        return FM_CLI_ERR;
    }
    struct stat st;
    if (stat(cfg.dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "error: %s is not a directory\n", argv[1]);
        return FM_CLI_ERR;
    }
    const char *listen = "127.0.0.1:8080", *data = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--listen") == 0 && i + 1 < argc) listen = argv[i + 1];
        else if (strncmp(a, "--listen=", 9) == 0) listen = a + 9;
        else if (strcmp(a, "--data") == 0 && i + 1 < argc) data = argv[i + 1];
        else if (strncmp(a, "--data=", 7) == 0) data = a + 7;
    }
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen) {
        fprintf(stderr, "error: --listen wants HOST:PORT, got %s\n", listen);
        return FM_CLI_USAGE;
    }
    const char *h = listen;
    size_t hl = (size_t)(colon - listen);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') h++, hl -= 2;
    snprintf(cfg.host, sizeof(cfg.host), "%.*s", (int)hl, h);
    snprintf(cfg.port, sizeof(cfg.port), "%s", colon + 1);
    /* the watcher connects to the node: a wildcard address means loopback */
    if (strcmp(cfg.host, "0.0.0.0") == 0) snprintf(cfg.host, sizeof(cfg.host), "127.0.0.1");
    else if (strcmp(cfg.host, "::") == 0) snprintf(cfg.host, sizeof(cfg.host), "::1");
    bool v6 = strchr(cfg.host, ':') != NULL;
    snprintf(cfg.url, sizeof(cfg.url), "http://%s%s%s:%s", v6 ? "[" : "", cfg.host, v6 ? "]" : "",
             cfg.port);

    const char *env = getenv("FNMESH_ADMIN_TOKEN");
    if (env && *env) snprintf(cfg.token, sizeof(cfg.token), "%s", env);
    else if (!fm_random_hex(cfg.token, 24)) return FM_CLI_ERR;
    setenv("FNMESH_ADMIN_TOKEN", cfg.token, 1);

    char tmp[] = "/tmp/fnmesh-dev-XXXXXX";
    bool own_data = data == NULL;
    if (own_data && !mkdtemp(tmp)) {
        fprintf(stderr, "error: cannot create a temporary directory: %s\n", strerror(errno));
        return FM_CLI_ERR;
    }
    /* serve's argv: "serve", its options, and --data when dev chose it */
    char **sargv = calloc((size_t)argc + 4, sizeof(char *));
    int sargc = 0;
    sargv[sargc++] = "serve";
    for (int i = 2; i < argc; i++) sargv[sargc++] = argv[i];
    if (own_data) {
        sargv[sargc++] = "--data";
        sargv[sargc++] = tmp;
    }
    bool has_listen = false;
    for (int i = 2; i < argc; i++)
        if (strncmp(argv[i], "--listen", 8) == 0) has_listen = true;
    if (!has_listen) {
        sargv[sargc++] = "--listen";
        sargv[sargc++] = (char *)listen;
    }

    /* serve takes SIGINT/SIGTERM with sigwait on this thread: the watcher
     * must block them too, so block before starting it */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    pthread_t tid;
    if (pthread_create(&tid, NULL, watcher_main, &cfg) != 0) {
        fprintf(stderr, "error: cannot start the watcher\n");
        free(sargv);
        return FM_CLI_ERR;
    }
    pthread_detach(tid);
    int rc = fm_serve_main(sargc, sargv);
    free(sargv);
    if (own_data) fm_rmtree(tmp);
    fflush(stdout);
    _exit(rc); /* the watcher may be inside a deploy: do not run exit handlers under it */
}
