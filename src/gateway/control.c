/* control.c - control-plane operations (see control.h).
 *
 * A deploy is all-or-nothing: the bundle is unpacked, compiled and
 * instantiated (which runs its top-level code and lists its exports) before
 * anything is stored or published, so a refused deploy leaves the previous
 * version serving. Publication order is store first, then registry: what a
 * client was told is active is always what a restart brings back. */
#include "gateway/control.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "metrics/fnstat.h"
#include "registry/bind.h"
#include "metrics/logs.h"
#include "registry/bundle.h"

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} waiter;

static void wake_waiter(fm_job *job) {
    waiter *w = job->ud;
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Instantiates v on one executor thread (not a stuck one), waiting;
 * installs its exports. */
static fm_status instantiate(fm_control *c, fm_version *v, fm_err *err) {
    waiter w = {.done = false};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    fm_version_ref(v);
    fm_job *job = fm_job_new(FM_JOB_INSTANTIATE, v, NULL);
    job->want_exports = true;
    job->on_done = wake_waiter;
    job->ud = &w;
    int t = fm_exec_pick(c->exec, NULL), nr = fm_exec_regular_threads(c->exec);
    /* the warm thread is a regular one; when only the reserve was free, it
     * instantiates now (and its instance goes when idle), thread 0 later */
    v->warm_thread = t < nr ? t : 0;
    fm_exec_submit(c->exec, t, job, job, 0);
    pthread_mutex_lock(&w.mu);
    while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    fm_status st = FM_OK;
    if (job->status != FM_OK) {
        const char *m = json_string_value(json_object_get(job->error, "message"));
        st = fm_err_set(err, job->status == FM_INTERNAL ? FM_INVALID_BUNDLE : job->status, "%s",
                        m ? m : "instantiation failed");
    } else {
        st = fm_version_set_exports(v, job->ud_exports, job->ud_nexports, err);
    }
    fm_job_free(job);
    if (st == FM_OK && t != v->warm_thread) { /* made on the reserve: warm the warm thread */
        fm_version_ref(v);
        fm_job *w = fm_job_new(FM_JOB_INSTANTIATE, v, NULL);
        fm_exec_submit(c->exec, v->warm_thread, w, w, 0);
    }
    return st;
}

/* Warms the version on every other executor thread (fire and forget). */
static void warm_others(fm_control *c, fm_version *v) {
    /* the threads its calls may use: all regular ones (the reserve: on use),
     * or max_instances of them from the warm one (as fm_exec_pick) */
    int nr = fm_exec_regular_threads(c->exec);
    int k = v->manifest.max_instances > 0 && v->manifest.max_instances < nr
                ? (int)v->manifest.max_instances
                : nr;
    for (int j = 1; j < k; j++) {
        int t = (v->warm_thread + j) % nr;
        fm_version_ref(v);
        fm_job *job = fm_job_new(FM_JOB_INSTANTIATE, v, NULL);
        fm_exec_submit(c->exec, t, job, job, 0);
    }
}

/* Builds a live version from a stored one (moved from). */
static fm_status version_from_store(fm_control *c, fm_store_version *sv, fm_version **out,
                                    fm_err *err) {
    fm_manifest m;
    if (fm_manifest_parse(sv->manifest_json, strlen(sv->manifest_json), &m, err) != FM_OK) {
        fm_manifest_dispose(&m);
        return err->status;
    }
    fm_unit *units = calloc(sv->nunits ? sv->nunits : 1, sizeof(fm_unit));
    for (size_t i = 0; i < sv->nunits; i++) {
        const fm_runtime *rt = NULL;
        for (size_t k = 0; k < fm_runtime_count && !rt; k++) /* not an isolated form */
            if (!fm_runtimes[k]->isolated && strcmp(fm_runtimes[k]->name, sv->units[i].runtime) == 0)
                rt = fm_runtimes[k];
        if (!rt) {
            for (size_t k = 0; k < i; k++) free(units[k].artifact);
            free(units);
            fm_manifest_dispose(&m);
            return fm_err_set(err, FM_INTERNAL, "stored version uses unknown runtime %s",
                              sv->units[i].runtime);
        }
        units[i].rt = rt;
        units[i].artifact = sv->units[i].data;
        units[i].artifact_len = sv->units[i].len;
        sv->units[i].data = NULL;
    }
    fm_version *v = fm_version_new(sv->deployment, sv->version, sv->created_at, &m, units,
                                   sv->nunits, fm_exec_threads(c->exec));
    if (instantiate(c, v, err) != FM_OK) {
        fm_version_release(v);
        return err->status;
    }
    *out = v;
    return FM_OK;
}

typedef struct load_ctx {
    fm_control *c;
    size_t loaded, failed;
} load_ctx;

static void load_one(fm_store_version *sv, void *ud) {
    load_ctx *lc = ud;
    fm_err err = FM_ERR_INIT;
    fm_version *v = NULL;
    if (version_from_store(lc->c, sv, &v, &err) == FM_OK) {
        fm_registry_activate(lc->c->registry, v);
        warm_others(lc->c, v);
        lc->loaded++;
    } else {
        json_t *kv = json_pack("{s:s}", "deployment", sv->deployment);
        fm_log(FM_LOG_ERROR, kv, "cannot load deployment: %s", err.msg);
        json_decref(kv);
        lc->failed++;
    }
    fm_err_clear(&err);
    fm_store_version_dispose(sv);
}

fm_status fm_control_load(fm_control *c, fm_err *err) {
    load_ctx lc = {.c = c};
    fm_status st = c->store->ops->load_active(c->store, load_one, &lc, err);
    fm_log(FM_LOG_INFO, NULL, "loaded %zu deployment(s), %zu failed", lc.loaded, lc.failed);
    return st;
}

static fm_status check_name(const char *name, fm_err *err) {
    if (!fm_name_valid(name))
        return fm_err_set(err, FM_BAD_REQUEST,
                          "invalid deployment name \"%.100s\": use 1-63 characters of a-z, 0-9 "
                          "and '-', starting with a letter or digit",
                          name);
    return FM_OK;
}

/* Entry files: the manifest's list, else every top-level file a runtime serves. */
static fm_status pick_entries(const fm_bundle *b, const fm_manifest *m, const char ***entries,
                              size_t *n, fm_err *err) {
    *entries = calloc(b->nfiles + 1, sizeof(char *));
    *n = 0;
    if (m->entry) {
        size_t i;
        json_t *e;
        json_array_foreach(m->entry, i, e) {
            char *p = strdup(json_string_value(e));
            char *q = p[0] == '.' && p[1] == '/' ? p + 2 : p;
            const fm_bundle_file *f = fm_bundle_find(b, q);
            if (!f || !fm_runtime_for_path(q)) {
                fm_err_set(err, FM_INVALID_BUNDLE,
                           "fnmesh.json: entry \"%s\" is not a source file of the bundle%s", p,
                           f ? " (unknown extension)" : "");
                free(p);
                return FM_INVALID_BUNDLE;
            }
            (*entries)[(*n)++] = f->path;
            free(p);
        }
        return FM_OK;
    }
    for (size_t i = 0; i < b->nfiles; i++) {
        const fm_bundle_file *f = &b->files[i];
        if (f->link || strchr(f->path, '/') || !fm_runtime_for_path(f->path)) continue;
        (*entries)[(*n)++] = f->path;
    }
    if (*n == 0) {
        /* name every extension a runtime serves, from the runtime table */
        char exts[256] = "";
        size_t o = 0;
        for (size_t r = 0; r < fm_runtime_count; r++)
            for (const char *const *e = fm_runtimes[r]->extensions; *e && o < sizeof(exts) - 16; e++)
                o += (size_t)snprintf(exts + o, sizeof(exts) - o, "%s%s", o ? ", " : "", *e);
        return fm_err_set(err, FM_INVALID_BUNDLE,
                          "no function exported: the bundle has no top-level source file (%s)",
                          exts);
    }
    return FM_OK;
}

/* Cluster mode: refuses a control-plane change while the cluster registry
 * cannot take it (it would be undone by the next resync). */
static fm_status cluster_writable(fm_control *c, fm_err *err) {
    if (!c->cluster || c->converging || fm_cluster_ready(c->cluster)) return FM_OK;
    return fm_err_set(err, FM_UNAVAILABLE,
                      "cluster registry unavailable (not connected to NATS): try again");
}

/* Cluster mode: records `name` -> `id` in the cluster registry, with the
 * bundle (`bundle` when given, else the stored one): a change is
 * acknowledged only once the cluster has it. */
static fm_status publish(fm_control *c, const char *name, const char *id, const void *bundle,
                         size_t len, fm_err *err) {
    if (!c->cluster || c->converging) return FM_OK;
    void *owned = NULL;
    if (!bundle && !fm_cluster_has_bundle(c->cluster, id)) {
        if (c->store->ops->load_bundle(c->store, id, &owned, &len, err) != FM_OK)
            return err->status;
        bundle = owned;
    }
    fm_status st = bundle ? fm_cluster_put_bundle(c->cluster, id, bundle, len, err) : FM_OK;
    free(owned);
    if (st == FM_OK) st = fm_cluster_set_active(c->cluster, name, id, err);
    if (st == FM_OK) fm_cluster_announce(c->cluster, name);
    return st;
}

static fm_status activate_existing(fm_control *c, fm_version *v, fm_err *err) {
    if (c->store->ops->activate(c->store, v->deployment, v->id, fm_wall_ms(), err) != FM_OK)
        return err->status;
    fm_registry_activate(c->registry, v);
    return FM_OK;
}

fm_status fm_control_deploy(fm_control *c, const char *name, const void *body, size_t len,
                            json_t **out, int *http, fm_err *err) {
    if (check_name(name, err) || cluster_writable(c, err)) return err->status;
    fm_bundle *b = NULL;
    if (fm_bundle_from_archive(body, len, &b, err) != FM_OK) return err->status;
    fm_status st = FM_OK;
    fm_manifest m = {0};
    const char **entries = NULL;
    size_t nentries = 0;
    fm_unit *units = NULL;
    size_t nunits = 0;
    fm_version *v = NULL;

    /* Same content as the active version: nothing to do. */
    fm_version *cur = fm_registry_acquire(c->registry, name, strlen(name));
    if (cur && strcmp(cur->id, b->version) == 0) {
        st = publish(c, name, cur->id, body, len, err);
        if (st == FM_OK) *out = fm_version_json(cur), *http = 200;
        fm_version_release(cur);
        fm_bundle_destroy(b);
        return st;
    }
    fm_version_release(cur);

    /* Same content as an older version: reactivate it. */
    fm_store_version sv;
    fm_err lookup = FM_ERR_INIT;
    if (c->store->ops->load_version(c->store, name, b->version, &sv, &lookup) == FM_OK) {
        st = version_from_store(c, &sv, &v, err);
        fm_store_version_dispose(&sv);
        if (st == FM_OK) st = publish(c, name, v->id, body, len, err);
        if (st == FM_OK && (st = activate_existing(c, v, err)) == FM_OK) {
            *out = fm_version_json(v);
            *http = 200;
            warm_others(c, v);
            v = NULL;
        }
        goto done;
    }
    fm_err_clear(&lookup);

    const fm_bundle_file *mf = fm_bundle_find(b, "fnmesh.json");
    if ((st = fm_manifest_parse(mf ? mf->data : NULL, mf ? mf->len : 0, &m, err))) goto done;
    if ((st = pick_entries(b, &m, &entries, &nentries, err))) goto done;

    /* One unit per runtime used by the entry files. */
    units = calloc(fm_runtime_count, sizeof(fm_unit));
    for (size_t r = 0; r < fm_runtime_count; r++) {
        const char **mine = calloc(nentries + 1, sizeof(char *));
        size_t nm = 0;
        for (size_t i = 0; i < nentries; i++)
            if (fm_runtime_for_path(entries[i]) == fm_runtimes[r]) mine[nm++] = entries[i];
        if (nm) {
            fm_unit *u = &units[nunits];
            u->rt = fm_runtimes[r];
            st = u->rt->compile(b, mine, nm, &u->artifact, &u->artifact_len, err);
            if (st == FM_OK) nunits++;
        }
        free(mine);
        if (st) goto done;
    }
    v = fm_version_new(name, b->version, fm_wall_ms(), &m, units, nunits,
                       fm_exec_threads(c->exec));
    units = NULL;
    nunits = 0;
    if ((st = instantiate(c, v, err))) goto done;
    if ((st = publish(c, name, v->id, body, len, err))) goto done;

    fm_store_version rec = {.deployment = v->deployment,
                            .created_at = v->created_at,
                            .manifest_json = mf ? mf->data : "{}"};
    memcpy(rec.version, v->id, sizeof(rec.version));
    rec.functions_json = json_dumps(v->functions_json, JSON_COMPACT);
    rec.nunits = v->nunits;
    rec.units = calloc(v->nunits, sizeof(fm_store_unit));
    for (size_t i = 0; i < v->nunits; i++) {
        snprintf(rec.units[i].runtime, sizeof(rec.units[i].runtime), "%s", v->units[i].rt->name);
        rec.units[i].data = v->units[i].artifact;
        rec.units[i].len = v->units[i].artifact_len;
    }
    st = c->store->ops->put_version(c->store, &rec, body, len, fm_wall_ms(), err);
    free(rec.functions_json);
    free(rec.units);
    if (st) goto done;
    fm_registry_activate(c->registry, v);
    *out = fm_version_json(v);
    *http = 201;
    warm_others(c, v);
    json_t *kv = json_pack("{s:s, s:s}", "deployment", name, "version", v->id);
    fm_log(FM_LOG_INFO, kv, "deployed %s (%zu functions)", name, v->nfns);
    json_decref(kv);
    v = NULL; /* the registry holds it now */
done:
    if (units) {
        for (size_t i = 0; i < nunits; i++) free(units[i].artifact);
        free(units);
    }
    fm_version_release(v);
    fm_manifest_dispose(&m);
    free(entries);
    fm_bundle_destroy(b);
    return st;
}

/* ------------------------------------------------------------ cluster */

void fm_control_converge(fm_control *c, const char *name) {
    if (!c->cluster || !fm_name_valid(name)) return;
    char want[65];
    fm_err err = FM_ERR_INIT;
    fm_status st = fm_cluster_get_active(c->cluster, name, want, &err);
    fm_version *cur = fm_registry_acquire(c->registry, name, strlen(name));
    bool same = cur && st == FM_OK && strcmp(cur->id, want) == 0;
    bool here = cur != NULL;
    fm_version_release(cur);
    if (same || (st != FM_OK && st != FM_NOT_FOUND) || (st == FM_NOT_FOUND && !here)) {
        if (st != FM_OK && st != FM_NOT_FOUND)
            fm_log(FM_LOG_WARN, NULL, "cluster: cannot read %s from the registry: %s", name,
                   err.msg);
        fm_err_clear(&err);
        return;
    }
    fm_err_clear(&err);
    json_t *doc = NULL, *kv = json_pack("{s:s}", "deployment", name);
    c->converging = true;
    if (st == FM_NOT_FOUND) {
        st = fm_control_delete(c, name, &doc, &err);
    } else {
        json_object_set_new(kv, "version", json_string(want));
        fm_store_version sv;
        fm_version *v = NULL;
        if (c->store->ops->load_version(c->store, name, want, &sv, &err) == FM_OK) {
            st = version_from_store(c, &sv, &v, &err);
            fm_store_version_dispose(&sv);
            if (st == FM_OK && (st = activate_existing(c, v, &err)) == FM_OK) {
                warm_others(c, v);
                v = NULL;
            }
            fm_version_release(v);
        } else {
            fm_err_clear(&err);
            void *bundle = NULL;
            size_t len = 0;
            int http = 0;
            st = fm_cluster_get_bundle(c->cluster, want, &bundle, &len, &err);
            if (st == FM_OK) st = fm_control_deploy(c, name, bundle, len, &doc, &http, &err);
            free(bundle);
        }
    }
    c->converging = false;
    if (st == FM_OK) fm_log(FM_LOG_INFO, kv, "cluster: %s is now as the registry says", name);
    else fm_log(FM_LOG_ERROR, kv, "cluster: cannot converge %s: %s", name, err.msg);
    json_decref(kv);
    json_decref(doc);
    fm_err_clear(&err);
}

static void add_name(fm_version *v, void *ud) {
    json_object_set_new(ud, v->deployment, json_true());
}

bool fm_control_resync(fm_control *c) {
    if (!c->cluster) return false;
    json_t *want = NULL;
    fm_err err = FM_ERR_INIT;
    if (fm_cluster_list_active(c->cluster, &want, &err) != FM_OK) {
        fm_log(FM_LOG_WARN, NULL, "cluster: resync: %s", err.msg);
        fm_err_clear(&err);
        return false;
    }
    json_t *names = json_object();
    fm_registry_foreach(c->registry, add_name, names);
    json_object_update(names, want);
    const char *name;
    json_t *val;
    json_object_foreach(names, name, val) fm_control_converge(c, name);
    json_decref(names);
    json_decref(want);
    return true;
}

static void add_json(fm_version *v, void *ud) {
    json_array_append_new(ud, fm_version_json(v));
}

fm_status fm_control_list(fm_control *c, json_t **out, fm_err *err) {
    json_t *arr = json_array();
    fm_registry_foreach(c->registry, add_json, arr);
    *out = json_pack("{s:o}", "deployments", arr);
    return FM_OK;
}

fm_status fm_control_show(fm_control *c, const char *name, json_t **out, fm_err *err) {
    fm_version *v = fm_registry_acquire(c->registry, name, strlen(name));
    if (!v) return fm_err_set(err, FM_NOT_FOUND, "deployment %.100s not found", name);
    *out = fm_version_json(v);
    /* the functions with what they did so far: cold starts */
    json_t *fns = json_deep_copy(json_object_get(*out, "functions"));
    size_t i;
    json_t *fj;
    json_array_foreach(fns, i, fj) {
        const char *fname = json_string_value(json_object_get(fj, "name"));
        const fm_function *f = fname ? fm_version_find(v, fname, strlen(fname)) : NULL;
        fm_fnstat *st = f ? atomic_load_explicit(&((fm_function *)f)->stat, memory_order_acquire)
                          : NULL;
        static const fm_fnstat never_called; /* all zero */
        json_object_set_new(fj, "cold_starts", fm_fnstat_cold_json(st ? st : &never_called));
    }
    json_object_set_new(*out, "functions", fns);
    fm_version_release(v);
    return FM_OK;
}

fm_status fm_control_delete(fm_control *c, const char *name, json_t **out, fm_err *err) {
    if (!fm_name_valid(name)) return fm_err_set(err, FM_NOT_FOUND, "deployment %.100s not found", name);
    if (cluster_writable(c, err)) return err->status;
    bool in_cluster = false;
    if (c->cluster && !c->converging) {
        char id[65];
        fm_err look = FM_ERR_INIT;
        fm_status cs = fm_cluster_get_active(c->cluster, name, id, &look);
        fm_err_clear(&look);
        in_cluster = cs == FM_OK;
        if (in_cluster && fm_cluster_remove(c->cluster, name, err) != FM_OK) return err->status;
        if (in_cluster) fm_cluster_announce(c->cluster, name);
        if (cs != FM_OK && cs != FM_NOT_FOUND)
            return fm_err_set(err, FM_UNAVAILABLE, "cluster registry unavailable: try again");
    }
    if (c->store->ops->remove(c->store, name, err) != FM_OK) {
        if (!in_cluster || err->status != FM_NOT_FOUND) return err->status;
        fm_err_clear(err); /* deleted in the cluster; this node had not got it yet */
    }
    fm_registry_remove(c->registry, name);
    fm_logs_drop(name);
    json_t *kv = json_pack("{s:s}", "deployment", name);
    fm_log(FM_LOG_INFO, kv, "deleted %s", name);
    json_decref(kv);
    *out = json_pack("{s:s, s:b}", "name", name, "deleted", 1);
    return FM_OK;
}

fm_status fm_control_versions(fm_control *c, const char *name, json_t **out, fm_err *err) {
    json_t *list = NULL;
    if (c->store->ops->list_versions(c->store, name, &list, err) != FM_OK) return err->status;
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) {
        char ts[40];
        fm_rfc3339(json_integer_value(json_object_get(e, "created_at")), ts, sizeof(ts));
        json_object_set_new(e, "created_at", json_string(ts));
    }
    *out = json_pack("{s:s, s:o}", "name", name, "versions", list);
    return FM_OK;
}

/* Cluster mode: rolls back to a version found among the cluster's bundles
 * (deployed, so stored here and published, like any bundle). */
static fm_status rollback_from_cluster(fm_control *c, const char *name, const char *prefix,
                                       json_t **out, fm_err *err) {
    char id[65];
    if (fm_cluster_find_bundle(c->cluster, prefix, id, err) != FM_OK) return err->status;
    void *bundle = NULL;
    size_t len = 0;
    int http = 0;
    fm_status st = fm_cluster_get_bundle(c->cluster, id, &bundle, &len, err);
    if (st == FM_OK) st = fm_control_deploy(c, name, bundle, len, out, &http, err);
    free(bundle);
    return st;
}

fm_status fm_control_rollback(fm_control *c, const char *name, const void *body, size_t len,
                              json_t **out, fm_err *err) {
    if (cluster_writable(c, err)) return err->status;
    json_t *req = fm_json_parse(body, len, err);
    if (!req) return err->status;
    const char *ver = json_string_value(json_object_get(req, "version"));
    fm_status st = FM_OK;
    fm_version *v = NULL;
    if (!json_is_object(req) || !ver) {
        st = fm_err_set(err, FM_BAD_REQUEST, "body must be {\"version\": \"<version id>\"}");
        goto done;
    }
    size_t vl = strlen(ver);
    bool hex = vl >= 8 && vl <= 64 && strspn(ver, "0123456789abcdef") == vl;
    if (!hex) {
        st = fm_err_set(err, FM_BAD_REQUEST,
                        "version must be a version id or a prefix of at least 8 hex digits");
        goto done;
    }
    fm_version *cur = fm_registry_acquire(c->registry, name, strlen(name));
    if (cur && strncmp(cur->id, ver, vl) == 0) {
        st = publish(c, name, cur->id, NULL, 0, err); /* the cluster may be elsewhere */
        if (st == FM_OK) *out = fm_version_json(cur);
        fm_version_release(cur);
        goto done;
    }
    fm_version_release(cur);
    fm_store_version sv;
    if ((st = c->store->ops->load_version(c->store, name, ver, &sv, err))) {
        if (st == FM_NOT_FOUND && c->cluster) { /* a version this node never had */
            fm_err_clear(err);
            st = rollback_from_cluster(c, name, ver, out, err);
        }
        goto done;
    }
    st = version_from_store(c, &sv, &v, err);
    fm_store_version_dispose(&sv);
    if (st) goto done;
    if ((st = publish(c, name, v->id, NULL, 0, err))) goto done;
    if ((st = activate_existing(c, v, err))) goto done;
    *out = fm_version_json(v);
    warm_others(c, v);
    json_t *kv = json_pack("{s:s, s:s}", "deployment", name, "version", v->id);
    fm_log(FM_LOG_INFO, kv, "rolled back %s", name);
    json_decref(kv);
    v = NULL;
done:
    fm_version_release(v);
    json_decref(req);
    return st;
}

/* ---- metering ---- */

typedef struct flush_ctx {
    fm_store_usage *rows;
    fm_fnstat **stats;
    size_t n, cap;
    int64_t minute;
} flush_ctx;

static void take_one(fm_fnstat *s, void *ud) {
    flush_ctx *fc = ud;
    fm_usage d;
    if (!fm_fnstat_take_delta(s, &d)) return;
    if (fc->n == fc->cap) {
        fc->cap = fc->cap ? fc->cap * 2 : 64;
        fc->rows = realloc(fc->rows, fc->cap * sizeof(*fc->rows));
        fc->stats = realloc(fc->stats, fc->cap * sizeof(*fc->stats));
    }
    fc->stats[fc->n] = s;
    fc->rows[fc->n++] = (fm_store_usage){
        .minute = fc->minute, .deployment = s->deployment, .function = s->function,
        .invocations = d.invocations, .errors = d.errors, .wall_us = d.wall_us,
        .cpu_us = d.cpu_us, .req_bytes = d.req_bytes, .resp_bytes = d.resp_bytes,
        .peak_memory = d.peak_memory};
}

void fm_control_flush_usage(fm_control *c) {
    flush_ctx fc = {.minute = fm_wall_ms() / 60000};
    fm_fnstat_foreach(take_one, &fc);
    if (fc.n) {
        fm_err err = FM_ERR_INIT;
        if (c->store->ops->usage_add(c->store, fc.rows, fc.n, &err) != FM_OK) {
            fm_log(FM_LOG_WARN, NULL, "usage not stored (kept for the next flush): %s", err.msg);
            fm_err_clear(&err);
            for (size_t i = 0; i < fc.n; i++) {
                const fm_store_usage *r = &fc.rows[i];
                fm_usage d = {r->invocations, r->errors,     r->wall_us,    r->cpu_us,
                              r->req_bytes,   r->resp_bytes, r->peak_memory};
                fm_fnstat_untake(fc.stats[i], &d);
            }
        }
    }
    free(fc.rows);
    free(fc.stats);
}

static const char *usage_keys[] = {"invocations", "errors",     "wall_us",          "cpu_us",
                                   "req_bytes",   "resp_bytes", "peak_memory_bytes"};

fm_status fm_control_usage(fm_control *c, const char *q, size_t qlen, json_t **out, fm_err *err) {
    int64_t now = fm_wall_ms(), from = 0, to = now + 60000;
    char *from_s = fm_query_get(q, qlen, "from"), *to_s = fm_query_get(q, qlen, "to");
    char *group = fm_query_get(q, qlen, "group_by"), *dep = fm_query_get(q, qlen, "deployment");
    fm_status st = FM_OK;
    if (from_s && !fm_parse_time(from_s, now, &from))
        st = fm_err_set(err, FM_BAD_REQUEST,
                        "from: expected unix seconds, an RFC 3339 time or a duration such as 1h");
    else if (to_s && !fm_parse_time(to_s, now, &to))
        st = fm_err_set(err, FM_BAD_REQUEST,
                        "to: expected unix seconds, an RFC 3339 time or a duration such as 1h");
    else if (group && strcmp(group, "deployment") && strcmp(group, "function") &&
             strcmp(group, "minute"))
        st = fm_err_set(err, FM_BAD_REQUEST,
                        "group_by: expected deployment, function or minute");
    else if (!to_s && to < from)
        to = from; /* only a future `from`: an empty answer, not an error */
    if (st == FM_OK && to < from) st = fm_err_set(err, FM_BAD_REQUEST, "to is before from");
    if (st == FM_OK) {
        fm_control_flush_usage(c);
        /* whole minutes: from rounds down, to rounds up (a partial minute counts whole) */
        fm_store_usage_query uq = {.from_minute = from / 60000,
                                   .to_minute = (to + 59999) / 60000,
                                   .deployment = dep && *dep ? dep : NULL,
                                   .group_by = group ? group : "function"};
        json_t *rows = NULL;
        st = c->store->ops->usage_query(c->store, &uq, &rows, err);
        if (st == FM_OK) {
            json_t *total = json_object();
            for (size_t k = 0; k < sizeof(usage_keys) / sizeof(usage_keys[0]); k++) {
                json_int_t sum = 0;
                size_t i;
                json_t *r;
                json_array_foreach(rows, i, r) {
                    json_int_t v = json_integer_value(json_object_get(r, usage_keys[k]));
                    sum = k == 6 ? (v > sum ? v : sum) : sum + v;
                }
                json_object_set_new(total, usage_keys[k], json_integer(sum));
            }
            char a[32], b[32];
            fm_rfc3339(uq.from_minute * 60000, a, sizeof(a));
            fm_rfc3339(uq.to_minute * 60000, b, sizeof(b));
            *out = json_pack("{s:s, s:s, s:s, s:i, s:o, s:o}", "from", a, "to", b, "group_by",
                             uq.group_by, "bucket_seconds", 60, "usage", rows, "total", total);
        }
    }
    free(from_s);
    free(to_s);
    free(group);
    free(dep);
    return st;
}
