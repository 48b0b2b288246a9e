/* cgroup.c - a control group per worker process (see cgroup.h).
 *
 * Found once, as the node starts: the node's own cgroup (from
 * /proc/self/cgroup) under the mount of its hierarchy (/proc/self/mountinfo).
 * cgroup v2 is used when the node's cgroup offers the memory controller and
 * lets it be enabled for children (a cgroup that holds processes may not:
 * when the node is alone in it, it moves into a child, fnmesh-<pid>-node,
 * first); else the v1 memory hierarchy (and the pids one when there is one)
 * when the node may make a cgroup there. Worker cgroups left by a node that
 * was killed are removed (only empty ones: rmdir refuses the others). */
#include "runtime/cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"
#include "metrics/logs.h"

static struct {
    int version;           /* 2, 1, or 0: none */
    char mem[PATH_MAX];    /* the directory worker cgroups go in (v2: all controllers) */
    char pids[PATH_MAX];   /* v1: the pids hierarchy's ("" = none); v2: unused */
    bool v2_pids;          /* v2: pids.max can be set */
    char describe[PATH_MAX + 64];
} cg;
static pthread_once_t cg_once = PTHREAD_ONCE_INIT;

/* snprintf's result: the whole text fit in cap bytes. */
static bool fits(int r, size_t cap) { return r >= 0 && (size_t)r < cap; }

#define PATH_IN_CAP (PATH_MAX + 64)

/* dir/file into path (PATH_IN_CAP bytes); false if it does not fit. */
static bool path_in(char *path, const char *dir, const char *file) {
    return fits(snprintf(path, PATH_IN_CAP, "%s/%s", dir, file), PATH_IN_CAP);
}

static int write_text(const char *dir, const char *file, const char *text) {
    char path[PATH_IN_CAP];
    if (!path_in(path, dir, file)) return -1;
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t n = strlen(text);
    ssize_t w = write(fd, text, n);
    int saved = errno;
    close(fd);
    errno = saved;
    return w == (ssize_t)n ? 0 : -1;
}

/* The value of `key` in a "key value" file (memory.events, memory.oom_control); -1 if none. */
static long long read_key(const char *dir, const char *file, const char *key) {
    char path[PATH_IN_CAP];
    FILE *f = path_in(path, dir, file) ? fopen(path, "re") : NULL;
    if (!f) return -1;
    char line[256];
    long long v = -1;
    size_t klen = strlen(key);
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
            v = strtoll(line + klen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* The number a one-number file holds; -1 if none. */
static long long read_file_number(const char *dir, const char *file) {
    char path[PATH_IN_CAP];
    FILE *f = path_in(path, dir, file) ? fopen(path, "re") : NULL;
    long long v = -1;
    if (f && fscanf(f, "%lld", &v) != 1) v = -1;
    if (f) fclose(f);
    return v;
}

/* dir/file's text (owned), NULL if unreadable. */
static char *read_text(const char *dir, const char *file) {
    char path[PATH_IN_CAP];
    return path_in(path, dir, file) ? fm_read_file(path, NULL) : NULL;
}

static bool has_word(const char *list, const char *word, const char *seps) {
    size_t n = strlen(word);
    for (const char *p = list; (p = strstr(p, word)) != NULL; p += n) {
        bool start = p == list || strchr(seps, p[-1]);
        bool end = p[n] == '\0' || strchr(seps, p[n]) || p[n] == '\n';
        if (start && end) return true;
    }
    return false;
}

/* The node's path in hierarchy `want` ("" = v2, else a v1 controller), or false. */
static bool own_path(const char *want, char *out, size_t cap) {
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f) return false;
    char line[PATH_MAX + 128];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f)) {
        char *a = strchr(line, ':'), *b = a ? strchr(a + 1, ':') : NULL;
        if (!b) continue;
        *a = *b = '\0';
        const char *ctrls = a + 1;
        bool match = want[0] ? has_word(ctrls, want, ",") : (strcmp(line, "0") == 0 && !*ctrls);
        if (!match) continue;
        b[1 + strcspn(b + 1, "\n")] = '\0';
        snprintf(out, cap, "%s", b + 1);
        found = true;
    }
    fclose(f);
    return found;
}

/* The mount point (and the mounted subtree's root) of hierarchy `want`. */
static bool mount_of(const char *want, char *mnt, size_t mcap, char *root, size_t rcap) {
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f) return false;
    char line[4 * PATH_MAX];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f)) {
        char *sep = strstr(line, " - ");
        if (!sep) continue;
        *sep = '\0';
        char fstype[32] = "", opts[512] = "";
        if (sscanf(sep + 3, "%31s %*s %511s", fstype, opts) < 2) continue;
        bool match = want[0] ? strcmp(fstype, "cgroup") == 0 && has_word(opts, want, ",")
                             : strcmp(fstype, "cgroup2") == 0;
        if (!match) continue;
        char r[PATH_MAX], m[PATH_MAX];
        if (sscanf(line, "%*s %*s %*s %4095s %4095s", r, m) != 2) continue;
        snprintf(mnt, mcap, "%s", m);
        snprintf(root, rcap, "%s", r);
        found = true;
    }
    fclose(f);
    return found;
}

/* mount + (path seen from the mounted root) of hierarchy `want`, if the node may make cgroups there. */
static bool usable_dir(const char *want, char *out, size_t cap) {
    char path[PATH_MAX], mnt[PATH_MAX], root[PATH_MAX];
    if (!own_path(want, path, sizeof(path)) || !mount_of(want, mnt, sizeof(mnt), root, sizeof(root)))
        return false;
    const char *rel = path;
    size_t rl = strlen(root);
    if (strcmp(root, "/") != 0 && strncmp(path, root, rl) == 0 && (path[rl] == '/' || !path[rl]))
        rel = path + rl;
    if (!fits(snprintf(out, cap, "%s%s", mnt, strcmp(rel, "/") == 0 ? "" : rel), cap)) return false;
    char probe[PATH_MAX + 64];
    if (!fits(snprintf(probe, sizeof(probe), "%s/fnmesh-%d-probe", out, (int)getpid()), sizeof(probe)))
        return false;
    if (mkdir(probe, 0755) != 0 && errno != EEXIST) return false;
    rmdir(probe);
    return true;
}

/* v2: the memory (and pids) controllers enabled for the node's children. */
static bool v2_enable(const char *dir, const char *controllers) {
    bool pids = has_word(controllers, "pids", " \n");
    if (pids && write_text(dir, "cgroup.subtree_control", "+memory +pids") == 0) {
        cg.v2_pids = true;
        return true;
    }
    return write_text(dir, "cgroup.subtree_control", "+memory") == 0;
}

/* Removes empty worker cgroups of nodes that are gone. */
static void sweep(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int node = 0;
        if (sscanf(e->d_name, "fnmesh-%d-", &node) != 1 || node <= 0) continue;
        if (node == (int)getpid() || kill(node, 0) == 0 || errno != ESRCH) continue;
        char p[PATH_IN_CAP];
        if (path_in(p, dir, e->d_name)) rmdir(p);
    }
    closedir(d);
}

/* cgroup v2 in the node's cgroup `dir`: the memory controller enabled for
 * its children (the node first moves into a child of its own when it is
 * alone there: a cgroup with processes may not enable it). Else false with
 * why. */
static bool setup_v2(const char *dir, char *why, size_t cap) {
    char ctl[512] = "";
    char *text = read_text(dir, "cgroup.controllers");
    if (text) snprintf(ctl, sizeof(ctl), "%s", text);
    free(text);
    if (!has_word(ctl, "memory", " \n")) {
        snprintf(why, cap, "cgroup v2 here offers no memory controller (%.60s)", ctl);
        return false;
    }
    if (v2_enable(dir, ctl)) return true;
    if (errno != EBUSY) {
        snprintf(why, cap, "cannot enable the memory controller: %s", strerror(errno));
        return false;
    }
    char *procs = read_text(dir, "cgroup.procs");
    char *nl = procs ? strchr(procs, '\n') : NULL;
    bool alone = procs && strtol(procs, NULL, 10) == (long)getpid() && (!nl || !nl[1]);
    free(procs);
    char self[PATH_IN_CAP], name[40], pid[24];
    snprintf(name, sizeof(name), "fnmesh-%d-node", (int)getpid());
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    if (alone && path_in(self, dir, name) && (mkdir(self, 0755) == 0 || errno == EEXIST) &&
        write_text(self, "cgroup.procs", pid) == 0 && v2_enable(dir, ctl))
        return true;
    snprintf(why, cap, "the node's cgroup v2 holds other processes");
    return false;
}

static void setup(void) {
#if defined(__SANITIZE_ADDRESS__)
    snprintf(cg.describe, sizeof(cg.describe), "none: sanitizer build");
    fm_log(FM_LOG_INFO, NULL, "worker processes run without cgroups (sanitizer build): their "
                              "memory is capped by their runtimes only");
    return;
#endif
    char dir[PATH_MAX];
    char why[160] = "no cgroup hierarchy the node may write";
    if (usable_dir("", dir, sizeof(dir)) && setup_v2(dir, why, sizeof(why))) {
        cg.version = 2;
        snprintf(cg.mem, sizeof(cg.mem), "%s", dir);
    }
    if (!cg.version && usable_dir("memory", dir, sizeof(dir))) {
        cg.version = 1;
        snprintf(cg.mem, sizeof(cg.mem), "%s", dir);
        if (usable_dir("pids", dir, sizeof(dir))) snprintf(cg.pids, sizeof(cg.pids), "%s", dir);
    }
    if (!cg.version) {
        snprintf(cg.describe, sizeof(cg.describe), "none: %s", why);
        fm_log(FM_LOG_INFO, NULL, "worker processes run without cgroups (%s): their memory is "
                                  "capped by their runtimes only", why);
        return;
    }
    sweep(cg.mem);
    if (cg.pids[0]) sweep(cg.pids);
    snprintf(cg.describe, sizeof(cg.describe), "v%d %s%s", cg.version, cg.mem,
             cg.version == 1 ? (cg.pids[0] ? " (+pids)" : "") : cg.v2_pids ? " (memory, pids)" : " (memory)");
    fm_log(FM_LOG_INFO, NULL, "worker processes get cgroups: %s", cg.describe);
}

const char *fm_cgroup_describe(void) {
    pthread_once(&cg_once, setup);
    return cg.describe;
}

#define CG_ENV "FNMESH_CGROUP"

static atomic_int next_id;

static bool name_of(char *out, size_t cap, const char *dir, int id) {
    return fits(snprintf(out, cap, "%s/fnmesh-%d-%d", dir, (int)getpid(), id), cap);
}

/* A limit file exists in this hierarchy (swap accounting may be off). */
static bool has_file(const char *dir, const char *file) {
    char p[PATH_IN_CAP];
    return path_in(p, dir, file) && access(p, F_OK) == 0;
}

/* Memory limit of cgroup `id` (dir: its memory directory) for memory_mb,
 * unless it has that already. v1 wants memory+swap at least memory: the
 * larger of the two moves first. */
static bool set_memory(const char *dir, long memory_mb) {
    long long want = (long long)(memory_mb + FM_CGROUP_HEADROOM_MB) << 20;
    char mem[32];
    snprintf(mem, sizeof(mem), "%lld", want);
    if (cg.version == 2)
        return read_file_number(dir, "memory.max") == want || write_text(dir, "memory.max", mem) == 0;
    long long now = read_file_number(dir, "memory.limit_in_bytes");
    if (now == want) return true;
    bool sw = has_file(dir, "memory.memsw.limit_in_bytes");
    if (sw && want > now && write_text(dir, "memory.memsw.limit_in_bytes", mem) != 0) return false;
    if (write_text(dir, "memory.limit_in_bytes", mem) != 0) return false;
    return !sw || want > now || write_text(dir, "memory.memsw.limit_in_bytes", mem) == 0;
}

int fm_cgroup_make(long memory_mb, char *env, size_t cap) {
    pthread_once(&cg_once, setup);
    if (!cg.version) return 0;
    int id = atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed) + 1;
    char mem[PATH_MAX + 64], pids[PATH_MAX + 64] = "", n[16];
    if (!name_of(mem, sizeof(mem), cg.mem, id) || mkdir(mem, 0755) != 0) return 0;
    if (cg.pids[0] && (!name_of(pids, sizeof(pids), cg.pids, id) || mkdir(pids, 0755) != 0))
        pids[0] = '\0'; /* best effort: memory is what matters */
    snprintf(n, sizeof(n), "%d", FM_CGROUP_MAX_PIDS);
    bool ok = set_memory(mem, memory_mb);
    if (ok && cg.version == 2 && has_file(mem, "memory.swap.max"))
        ok = write_text(mem, "memory.swap.max", "0") == 0;
    if (ok && cg.version == 2 && cg.v2_pids) ok = write_text(mem, "pids.max", n) == 0;
    if (ok && pids[0]) write_text(pids, "pids.max", n); /* best effort */
    if (!ok || !fits(snprintf(env, cap, CG_ENV "=%s%s%s", mem, pids[0] ? ":" : "", pids), cap)) {
        fm_cgroup_release(id);
        return 0;
    }
    return id;
}

bool fm_cgroup_limit(int id, long memory_mb) {
    if (id <= 0 || !cg.version) return false;
    char dir[PATH_MAX + 64];
    return name_of(dir, sizeof(dir), cg.mem, id) && set_memory(dir, memory_mb);
}

bool fm_cgroup_release(int id) {
    if (id <= 0 || !cg.version) return false;
    char dir[PATH_MAX + 64];
    if (!name_of(dir, sizeof(dir), cg.mem, id)) return false;
    /* killed by the OOM killer, and this cgroup did reach its own limit (not
     * only an ancestor's) */
    long long kills, hit;
    if (cg.version == 2) {
        kills = read_key(dir, "memory.events", "oom_kill");
        hit = read_key(dir, "memory.events", "max");
    } else {
        kills = read_key(dir, "memory.oom_control", "oom_kill");
        /* (failcnt stays 0 when the memory+swap limit is the one hit) */
        long long peak = read_file_number(dir, "memory.max_usage_in_bytes");
        long long limit = read_file_number(dir, "memory.limit_in_bytes");
        hit = peak > 0 && limit > 0 && peak + (1 << 20) >= limit;
    }
    rmdir(dir);
    if (cg.pids[0] && name_of(dir, sizeof(dir), cg.pids, id)) rmdir(dir);
    return kills > 0 && hit > 0;
}

void fm_cgroup_join_self(void) {
    const char *v = getenv(CG_ENV);
    if (!v) return;
    char list[2 * (PATH_MAX + 64) + 2];
    snprintf(list, sizeof(list), "%s", v);
    unsetenv(CG_ENV); /* nothing the worker runs sees it */
    for (char *save = NULL, *dir = strtok_r(list, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        if (write_text(dir, "cgroup.procs", "0") != 0) /* "0": the writing process */
            fprintf(stderr, "fnmesh worker %d: cannot join its cgroup %s: %s\n", (int)getpid(), dir,
                    strerror(errno));
    }
}
