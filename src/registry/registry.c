/* registry.c - versions and the snapshot-published deployment table
 * (see registry.h for the concurrency rules). */
#include "registry/registry.h"

#include <stdlib.h>
#include <string.h>

#include "core/util.h"

#define FM_SNAPSHOT_GRACE_MS 30000

/* strcmp of a NUL-terminated name against a length-delimited one (which
 * may contain NUL bytes). */
static int cmp_name(const char *m, const char *name, size_t len) {
    size_t ml = strlen(m);
    int c = memcmp(m, name, ml < len ? ml : len);
    return c ? c : (ml > len) - (ml < len);
}

static int cmp_fn(const void *a, const void *b) {
    return strcmp(((const fm_function *)a)->name, ((const fm_function *)b)->name);
}

static fm_isolation node_isolation = FM_ISOLATION_THREAD;

void fm_registry_set_isolation(fm_isolation iso) {
    node_isolation = iso == FM_ISOLATION_PROCESS ? iso : FM_ISOLATION_THREAD;
}

fm_version *fm_version_new(const char *deployment, const char *id, int64_t created_at,
                           fm_manifest *manifest, fm_unit *units, size_t nunits, int nthreads) {
    fm_version *v = calloc(1, sizeof(*v));
    v->isolation = manifest->isolation ? manifest->isolation : node_isolation;
    if (v->isolation == FM_ISOLATION_PROCESS)
        for (size_t i = 0; i < nunits; i++) units[i].rt = fm_runtime_isolated(units[i].rt);
    atomic_init(&v->refs, 1);
    v->deployment = strdup(deployment);
    snprintf(v->id, sizeof(v->id), "%s", id);
    v->created_at = created_at;
    v->manifest = *manifest;
    memset(manifest, 0, sizeof(*manifest));
    v->units = units;
    v->nunits = nunits;
    v->nthreads = nthreads;
    v->instances = calloc((size_t)nthreads * (nunits ? nunits : 1), sizeof(void *));
    v->last_used_us = calloc((size_t)nthreads * (nunits ? nunits : 1), sizeof(int64_t));
    return v;
}

static bool is_identifier(const char *s) {
    if (!*s) return false;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        bool ok = c == '_' || c == '$' || c >= 0x80 || (c >= 'a' && c <= 'z') ||
                  (c >= 'A' && c <= 'Z') || (p > s && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

fm_status fm_version_set_exports(fm_version *v, const fm_export *ex, size_t n, fm_err *err) {
    v->fns = calloc(n ? n : 1, sizeof(*v->fns));
    v->nfns = 0;
    for (size_t i = 0; i < n; i++) {
        fm_function *f = &v->fns[v->nfns++];
        f->name = strdup(ex[i].name);
        f->file = strdup(ex[i].file);
        f->unit = ex[i].unit;
        f->rt = v->units[ex[i].unit].rt;
        f->index = ex[i].index;
        f->params = json_incref(ex[i].params);
        f->nparams = json_array_size(f->params);
        f->param_names = calloc(f->nparams ? f->nparams : 1, sizeof(char *));
        for (size_t k = 0; k < f->nparams; k++) {
            const char *p = json_string_value(json_array_get(f->params, k));
            if (p && is_identifier(p)) f->param_names[k] = strdup(p);
        }
        f->timeout_ms = fm_manifest_timeout(&v->manifest, f->name);
        f->max_concurrency = (int)fm_manifest_int(&v->manifest, f->name, "max_concurrency", 0);
        f->max_queue =
            (int)fm_manifest_int(&v->manifest, f->name, "max_queue", FM_DEFAULT_MAX_QUEUE);
        f->max_threads = (int)v->manifest.max_instances;
        f->home_thread = v->warm_thread;
    }
    qsort(v->fns, v->nfns, sizeof(*v->fns), cmp_fn);
    for (size_t i = 0; i < v->nfns; i++) pthread_mutex_init(&v->fns[i].wait_mu, NULL); /* not moved again */
    for (size_t i = 1; i < v->nfns; i++)
        if (strcmp(v->fns[i - 1].name, v->fns[i].name) == 0)
            return fm_err_set(err, FM_INVALID_BUNDLE,
                              "function \"%s\" is exported by both %s and %s", v->fns[i].name,
                              v->fns[i - 1].file, v->fns[i].file);
    if (v->nfns == 0)
        return fm_err_set(err, FM_INVALID_BUNDLE,
                          "no function exported: the top-level source files (or the manifest's "
                          "entry files) export no function");
    if (v->manifest.functions) {
        const char *key;
        json_t *val;
        json_object_foreach(v->manifest.functions, key, val) {
            if (!fm_version_find(v, key, strlen(key)))
                return fm_err_set(err, FM_INVALID_BUNDLE,
                                  "fnmesh.json: functions.%s names no exported function", key);
        }
    }
    v->functions_json = json_array();
    for (size_t i = 0; i < v->nfns; i++) {
        const fm_function *f = &v->fns[i];
        json_array_append_new(v->functions_json,
                              json_pack("{s:s, s:s, s:s, s:O, s:I}", "name", f->name, "file",
                                        f->file, "runtime", f->rt->name, "params", f->params,
                                        "timeout_ms", (json_int_t)f->timeout_ms));
    }
    return FM_OK;
}

const fm_function *fm_version_find(const fm_version *v, const char *name, size_t len) {
    size_t lo = 0, hi = v->nfns;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = cmp_name(v->fns[mid].name, name, len);
        if (c == 0) return &v->fns[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

void fm_version_ref(fm_version *v) {
    atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
}

/* Implemented by the executor: destroys instances on their threads, then
 * calls fm_version_free. */
void fm_exec_retire_version(fm_version *v);

void fm_version_release(fm_version *v) {
    if (!v) return;
    if (atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) == 1)
        fm_exec_retire_version(v);
}

void fm_version_free(fm_version *v) {
    if (!v) return;
    for (size_t i = 0; i < v->nfns; i++) {
        fm_function *f = &v->fns[i];
        pthread_mutex_destroy(&f->wait_mu);
        free(f->name);
        free(f->file);
        json_decref(f->params);
        for (size_t k = 0; k < f->nparams; k++) free(f->param_names[k]);
        free(f->param_names);
    }
    free(v->fns);
    for (size_t i = 0; i < v->nunits; i++) free(v->units[i].artifact);
    free(v->units);
    free(v->instances);
    free(v->last_used_us);
    fm_manifest_dispose(&v->manifest);
    json_decref(v->functions_json);
    free(v->deployment);
    free(v);
}

json_t *fm_version_json(const fm_version *v) {
    char ts[40];
    fm_rfc3339(v->created_at, ts, sizeof(ts));
    return json_pack("{s:s, s:s, s:s, s:s, s:O}", "name", v->deployment, "version", v->id,
                     "created_at", ts, "isolation",
                     v->isolation == FM_ISOLATION_PROCESS ? "process" : "thread", "functions",
                     v->functions_json ? v->functions_json : json_array());
}

/* ---- the deployment table ---- */

typedef struct snapshot {
    size_t n;
    fm_version **v; /* sorted by deployment name; one reference each */
    struct snapshot *retired_next;
    int64_t retired_at;
} snapshot;

struct fm_registry {
    _Atomic(snapshot *) current;
    snapshot *retired; /* writer side only */
};

fm_registry *fm_registry_create(void) {
    fm_registry *r = calloc(1, sizeof(*r));
    snapshot *s = calloc(1, sizeof(*s));
    atomic_init(&r->current, s);
    return r;
}

static void snapshot_free(snapshot *s) {
    for (size_t i = 0; i < s->n; i++) fm_version_release(s->v[i]);
    free(s->v);
    free(s);
}

void fm_registry_gc(fm_registry *r, bool force) {
    int64_t now = fm_mono_ms();
    snapshot **pp = &r->retired;
    while (*pp) {
        snapshot *s = *pp;
        if (force || now - s->retired_at >= FM_SNAPSHOT_GRACE_MS) {
            *pp = s->retired_next;
            snapshot_free(s);
        } else {
            pp = &s->retired_next;
        }
    }
}

void fm_registry_destroy(fm_registry *r) {
    if (!r) return;
    fm_registry_gc(r, true);
    snapshot_free(atomic_load(&r->current));
    free(r);
}

static ssize_t snap_find(const snapshot *s, const char *name, size_t len, size_t *ins) {
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = cmp_name(s->v[mid]->deployment, name, len);
        if (c == 0) return (ssize_t)mid;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    if (ins) *ins = lo;
    return -1;
}

fm_version *fm_registry_acquire(fm_registry *r, const char *name, size_t len) {
    snapshot *s = atomic_load_explicit(&r->current, memory_order_acquire);
    ssize_t i = snap_find(s, name, len, NULL);
    if (i < 0) return NULL;
    fm_version *v = s->v[i];
    fm_version_ref(v);
    return v;
}

/* Publishes `next` and retires the current snapshot. */
static void publish(fm_registry *r, snapshot *next) {
    snapshot *old = atomic_exchange_explicit(&r->current, next, memory_order_acq_rel);
    old->retired_at = fm_mono_ms();
    old->retired_next = r->retired;
    r->retired = old;
    fm_registry_gc(r, false);
}

static snapshot *snap_copy(const snapshot *s, size_t extra) {
    snapshot *c = calloc(1, sizeof(*c));
    c->n = s->n;
    c->v = calloc(s->n + extra + 1, sizeof(fm_version *));
    for (size_t i = 0; i < s->n; i++) {
        c->v[i] = s->v[i];
        fm_version_ref(c->v[i]);
    }
    return c;
}

void fm_registry_activate(fm_registry *r, fm_version *v) {
    snapshot *cur = atomic_load(&r->current);
    snapshot *next = snap_copy(cur, 1);
    size_t ins = 0;
    ssize_t i = snap_find(next, v->deployment, strlen(v->deployment), &ins);
    if (i >= 0) {
        fm_version_release(next->v[i]);
        next->v[i] = v;
    } else {
        memmove(&next->v[ins + 1], &next->v[ins], (next->n - ins) * sizeof(fm_version *));
        next->v[ins] = v;
        next->n++;
    }
    publish(r, next);
}

bool fm_registry_remove(fm_registry *r, const char *name) {
    snapshot *cur = atomic_load(&r->current);
    ssize_t i = snap_find(cur, name, strlen(name), NULL);
    if (i < 0) return false;
    snapshot *next = snap_copy(cur, 0);
    fm_version_release(next->v[i]);
    memmove(&next->v[i], &next->v[i + 1], (next->n - (size_t)i - 1) * sizeof(fm_version *));
    next->n--;
    publish(r, next);
    return true;
}

void fm_registry_foreach(fm_registry *r, void (*fn)(fm_version *v, void *ud), void *ud) {
    snapshot *s = atomic_load(&r->current);
    for (size_t i = 0; i < s->n; i++) fn(s->v[i], ud);
}

size_t fm_registry_count(fm_registry *r) {
    return atomic_load(&r->current)->n;
}

void fm_registry_read(fm_registry *r, void (*fn)(fm_version *v, void *ud), void *ud) {
    snapshot *s = atomic_load_explicit(&r->current, memory_order_acquire);
    for (size_t i = 0; i < s->n; i++) fn(s->v[i], ud);
}
