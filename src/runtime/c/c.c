/* c.c - the C runtime, node side: native functions in worker processes.
 *
 * At deploy time every top-level .c file of the bundle is compiled with the
 * system compiler (`cc -O2 -std=c11 -shared -fPIC -Wall -I <include dir>`,
 * run in a private copy of the bundle, so a .c file may include headers of
 * the bundle and error messages name bundle paths) into one shared object;
 * the artifact keeps the objects, so a restart never compiles again. The
 * objects are only ever loaded by worker processes (`fnmesh worker-c`, see
 * worker.c): a crash in user code kills a worker, never the node. The pool
 * of workers is runtime/worker_pool.c; C code cannot be interrupted, so a
 * call past its deadline gets its worker killed (SIGKILL).
 *
 * fnmesh.h is found in $FNMESH_INCLUDE_DIR, else in FM_C_INCLUDE_DIR (the
 * source tree's include/, set by CMake). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/proc.h"
#include "core/util.h"
#include "runtime/c/c_int.h"
#include "runtime/python/python_int.h"
#include "runtime/runtime.h"
#include "runtime/worker_pool.h"

#ifndef FM_C_INCLUDE_DIR
#define FM_C_INCLUDE_DIR "/usr/local/include"
#endif

#define COMPILE_TIMEOUT_MS 60000

extern char **environ;

static const char *const c_extensions[] = {".c", NULL};

static void put(char **buf, size_t *len, size_t *cap, const void *p, size_t n) {
    if (*len + n > *cap) {
        while (*len + n > *cap) *cap = *cap ? *cap * 2 : 65536;
        *buf = realloc(*buf, *cap);
    }
    memcpy(*buf + *len, p, n);
    *len += n;
}

static void put_blob(char **buf, size_t *len, size_t *cap, const void *p, size_t n) {
    unsigned char b[4];
    fm_put_u32(b, (uint32_t)n);
    put(buf, len, cap, b, 4);
    put(buf, len, cap, p, n);
}

/* The compiler's first error line ("file.c:3:5: error: ..."), else its
 * first line, else a generic message; owned. */
static char *first_error(const char *out, int status) {
    const char *line = NULL;
    for (const char *p = out; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (memmem(p, n, " error:", 7)) {
            line = p;
            break;
        }
        if (!line && n > 0 && strncmp(p, "In file included", 16) != 0) line = p;
        p += n + (nl != NULL);
    }
    if (line) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        char *m = malloc(n + 1);
        memcpy(m, line, n);
        m[n] = '\0';
        return m;
    }
    char buf[96];
    snprintf(buf, sizeof(buf), "the C compiler failed (status %d)", status);
    return strdup(buf);
}

/* Runs cc in `src` on `entry`, writing `out`; compiler output goes to `log`.
 * Returns the wait status, or -1 when cc did not run to the end (err filled). */
static int run_cc(const char *src, const char *entry, const char *out, const char *log,
                  fm_err *err) {
    const char *inc = getenv("FNMESH_INCLUDE_DIR");
    if (!inc || !*inc) inc = FM_C_INCLUDE_DIR;
    char *argv[] = {"cc",          "-O2", "-std=c11",   "-shared",       "-fPIC", "-Wall",
                    "-I",          (char *)inc, "-o", (char *)out, (char *)entry, NULL};
    int status = 0;
    fm_status st = fm_run_tool(argv, src, log, COMPILE_TIMEOUT_MS, &status, err);
    if (st == FM_TIMEOUT)
        fm_err_set(err, FM_INVALID_BUNDLE, "%s: the C compiler took longer than %d s", entry,
                   COMPILE_TIMEOUT_MS / 1000);
    return st == FM_OK ? status : -1;
}

static fm_status c_compile(const fm_bundle *b, const char *const *entries, size_t n,
                           char **artifact, size_t *artifact_len, fm_err *err) {
    char root[] = "/tmp/fnmesh-cc-XXXXXX";
    if (!mkdtemp(root)) return fm_err_set(err, FM_INTERNAL, "mkdtemp: %s", strerror(errno));
    char src[sizeof(root) + 8], out[sizeof(root) + 32], log[sizeof(root) + 16];
    snprintf(src, sizeof(src), "%s/src", root);
    snprintf(log, sizeof(log), "%s/cc.log", root);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    fm_status st = FM_OK;
    if (mkdir(src, 0700) != 0) {
        st = fm_err_set(err, FM_INTERNAL, "mkdir: %s", strerror(errno));
        goto done;
    }
    if ((st = fm_bundle_write(b, src, err)) != FM_OK) goto done;
    put(&buf, &len, &cap, FM_C_MAGIC, strlen(FM_C_MAGIC));
    unsigned char cnt[4];
    fm_put_u32(cnt, (uint32_t)n);
    put(&buf, &len, &cap, cnt, 4);
    for (size_t i = 0; i < n; i++) {
        snprintf(out, sizeof(out), "%s/%zu.so", root, i);
        int status = run_cc(src, entries[i], out, log, err);
        if (status < 0) {
            st = err->status;
            goto done;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            char *text = fm_read_file(log, NULL);
            char *m = first_error(text ? text : "", status);
            st = fm_err_set(err, FM_INVALID_BUNDLE, "%s", m);
            if (text) fm_err_detail(err, "compiler_output", fm_json_str(text));
            free(m);
            free(text);
            goto done;
        }
        size_t so_len = 0;
        char *so = fm_read_file(out, &so_len);
        if (!so) {
            st = fm_err_set(err, FM_INTERNAL, "%s: the compiler wrote no object", entries[i]);
            goto done;
        }
        put_blob(&buf, &len, &cap, entries[i], strlen(entries[i]));
        put_blob(&buf, &len, &cap, so, so_len);
        free(so);
    }
done:
    fm_rmtree(root);
    if (st != FM_OK) {
        free(buf);
        return st;
    }
    *artifact = buf;
    *artifact_len = len;
    return FM_OK;
}

static const fm_wpool_kind c_kind = {.runtime = "c", .verb = "worker-c", .label = "C", .sigint_first = false};

static fm_status c_instance_create(void *ts, const char *deployment, const char *artifact,
                                   size_t artifact_len, const fm_instance_limits *lim, void **out,
                                   fm_export **exports, size_t *nexports, fm_err *err) {
    return fm_wpool_instance_create(&c_kind, ts, deployment, artifact, artifact_len, lim,
                                    out, exports, nexports, err);
}

const fm_runtime fm_runtime_c = {
    .out_of_process = true,
    .name = "c",
    .instance_bytes = 4 << 20, /* its warm worker process */
    .extensions = c_extensions,
    .compile = c_compile,
    .thread_init = fm_wpool_thread_init,
    .thread_dispose = fm_wpool_thread_dispose,
    .instance_create = c_instance_create,
    .instance_destroy = fm_wpool_instance_destroy,
    .call = fm_wpool_call,
    .poll = fm_wpool_poll,
    .flush = fm_wpool_flush,
};
