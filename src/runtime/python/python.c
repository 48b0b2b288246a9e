/* python.c - the Python runtime, node side: CPython in worker processes.
 *
 * The GIL makes threads useless for Python parallelism, and only a process
 * can be stopped for sure, so every instance is a worker process (`fnmesh
 * worker-python`, see worker.c) exec'd by the executor thread that owns it,
 * with the deployment loaded. The pool of workers, their queue and the
 * deadlines (SIGINT: KeyboardInterrupt, one second later SIGKILL) are
 * runtime/worker_pool.c; this file packs the artifact. */
#include <stdlib.h>
#include <string.h>

#include "runtime/python/python_int.h"
#include "runtime/runtime.h"
#include "runtime/worker_pool.h"

/* ---------------------------------------------------------------- compile */

static const char *const py_extensions[] = {".py", NULL};

static void put(char **buf, size_t *len, size_t *cap, const void *p, size_t n) {
    if (*len + n > *cap) {
        while (*len + n > *cap) *cap = *cap ? *cap * 2 : 4096;
        *buf = realloc(*buf, *cap);
    }
    memcpy(*buf + *len, p, n);
    *len += n;
}

static void put_u32(char **buf, size_t *len, size_t *cap, uint32_t v) {
    unsigned char b[4];
    fm_put_u32(b, v);
    put(buf, len, cap, b, 4);
}

static fm_status py_compile(const fm_bundle *b, const char *const *entries, size_t n,
                            char **artifact, size_t *artifact_len, fm_err *err) {
    char *buf = NULL;
    size_t len = 0, cap = 0;
    put(&buf, &len, &cap, FM_PY_MAGIC, strlen(FM_PY_MAGIC));
    put_u32(&buf, &len, &cap, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        put_u32(&buf, &len, &cap, (uint32_t)strlen(entries[i]));
        put(&buf, &len, &cap, entries[i], strlen(entries[i]));
    }
    size_t nfiles = 0;
    for (size_t i = 0; i < b->nfiles; i++) nfiles += b->files[i].link == NULL;
    put_u32(&buf, &len, &cap, (uint32_t)nfiles);
    for (size_t i = 0; i < b->nfiles; i++) {
        const fm_bundle_file *f = &b->files[i];
        if (f->link) continue;
        put_u32(&buf, &len, &cap, (uint32_t)strlen(f->path));
        put(&buf, &len, &cap, f->path, strlen(f->path));
        put_u32(&buf, &len, &cap, (uint32_t)f->len);
        put(&buf, &len, &cap, f->data, f->len);
    }
    *artifact = buf;
    *artifact_len = len;
    (void)err;
    return FM_OK;
}

static const fm_wpool_kind py_kind = {
    .runtime = "python", .verb = "worker-python", .label = "Python", .sigint_first = true};

static fm_status py_instance_create(void *ts, const char *deployment, const char *artifact,
                                    size_t artifact_len, const fm_instance_limits *lim, void **out,
                                    fm_export **exports, size_t *nexports, fm_err *err) {
    return fm_wpool_instance_create(&py_kind, ts, deployment, artifact, artifact_len, lim,
                                    out, exports, nexports, err);
}

const fm_runtime fm_runtime_python = {
    .out_of_process = true,
    .name = "python",
    .instance_bytes = 16 << 20, /* its warm worker process */
    .extensions = py_extensions,
    .compile = py_compile,
    .thread_init = fm_wpool_thread_init,
    .thread_dispose = fm_wpool_thread_dispose,
    .instance_create = py_instance_create,
    .instance_destroy = fm_wpool_instance_destroy,
    .call = fm_wpool_call,
    .poll = fm_wpool_poll,
    .flush = fm_wpool_flush,
};
