/* registry.h - deployments, their versions, and the lock-free lookup that
 * the call path uses.
 *
 * A version (fm_version) is immutable once published: its functions,
 * manifest and compiled units never change; only `instances` (one slot per
 * executor thread and unit, each touched by its own thread only) does. It is
 * reference counted: the registry holds one reference for the active
 * version of each deployment, and every in-flight call holds one.
 *
 * The registry publishes an immutable snapshot (sorted array of active
 * deployments) through an atomic pointer. Readers (I/O threads) load it,
 * binary-search and take a reference on the version: no lock. Writers are
 * the control thread only; a replaced snapshot is freed after a grace
 * period far longer than any reader holds it. */
#ifndef FM_REGISTRY_H
#define FM_REGISTRY_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "metrics/metrics.h"
#include "registry/manifest.h"
#include "runtime/runtime.h"

struct fm_function {
    char *name;
    char *file;
    const fm_runtime *rt;
    json_t *params;      /* array of strings as reported by the runtime (owned) */
    char **param_names;  /* [nparams]: identifier params, NULL for patterns/rest */
    size_t nparams;
    uint32_t unit;       /* index into version->units */
    uint32_t index;      /* export index inside the unit's instances */
    int64_t timeout_ms;
    int max_concurrency;   /* calls running at once; 0 = only the executors bound it */
    int max_queue;         /* calls admitted but not started; more are refused (429) */
    int max_threads;       /* executor threads its calls may use (max_instances; 0 = all) */
    int home_thread;       /* the first of them: its version's warm thread */
    fm_fn_metrics metrics; /* the one mutable part of a published version (atomics) */
    /* with max_concurrency: calls waiting for a slot (FIFO), guarded by wait_mu */
    pthread_mutex_t wait_mu;
    struct fm_job *wait_head, *wait_tail;
    _Atomic(struct fm_fnstat *) stat; /* windows + usage, found at the first call */
};

typedef struct fm_unit {
    const fm_runtime *rt;
    char *artifact; /* owned */
    size_t artifact_len;
    atomic_int instances; /* live instances (executor threads that created one) */
} fm_unit;

typedef struct fm_version fm_version;
typedef struct fm_function fm_function;

struct fm_version {
    atomic_int refs;
    char *deployment;
    char id[65];
    int64_t created_at; /* wall ms */
    fm_manifest manifest;
    fm_function *fns; /* sorted by name */
    size_t nfns;
    fm_unit *units;
    size_t nunits;
    int nthreads;
    int warm_thread;       /* executor thread that instantiated it first */
    void **instances;      /* [nthreads * nunits] */
    int64_t *last_used_us; /* [nthreads * nunits]: last call on that instance; its thread only */
    atomic_int retire_left;
    json_t *functions_json; /* [{name,file,runtime,params}] (owned) */
    fm_isolation isolation; /* thread or process, never DEFAULT */
};

/* The node's isolation for deployments whose manifest does not say
 * (--isolation; FM_ISOLATION_THREAD unless set). Set once at start-up. */
void fm_registry_set_isolation(fm_isolation iso);
/* Creates a version with its compiled units (moved in) and manifest (moved
 * in). refs = 1. Under process isolation (the manifest's, else the node's)
 * the units of in-process runtimes run in their isolated form. */
fm_version *fm_version_new(const char *deployment, const char *id, int64_t created_at,
                           fm_manifest *manifest, fm_unit *units, size_t nunits, int nthreads);
/* Installs the exports reported by instantiation (each tagged with its unit).
 * Fails (FM_INVALID_BUNDLE) on duplicates, no function, or manifest names
 * of functions that do not exist. */
fm_status fm_version_set_exports(fm_version *v, const fm_export *ex, size_t n, fm_err *err);
const fm_function *fm_version_find(const fm_version *v, const char *name, size_t len);
void fm_version_ref(fm_version *v);
/* Drops a reference; the last one retires the instances on their threads. */
void fm_version_release(fm_version *v);
/* Frees a version whose instances are gone (called by the executor). */
void fm_version_free(fm_version *v);
/* JSON object {name, version, created_at, functions}. New reference. */
json_t *fm_version_json(const fm_version *v);

typedef struct fm_registry fm_registry;

fm_registry *fm_registry_create(void);
void fm_registry_destroy(fm_registry *r);

/* Reader side (any thread): the active version of a deployment with a
 * reference taken, or NULL. */
fm_version *fm_registry_acquire(fm_registry *r, const char *name, size_t len);

/* Writer side (control thread only). Takes over the caller's reference. */
void fm_registry_activate(fm_registry *r, fm_version *v);
/* Removes a deployment; returns false when unknown. */
bool fm_registry_remove(fm_registry *r, const char *name);
/* Calls fn for every active version (sorted by name), any thread: it reads
 * the current snapshot, which stays valid far longer than a scrape takes. */
void fm_registry_read(fm_registry *r, void (*fn)(fm_version *v, void *ud), void *ud);
/* Calls fn for every active version (sorted by name), writer side only. */
void fm_registry_foreach(fm_registry *r, void (*fn)(fm_version *v, void *ud), void *ud);
size_t fm_registry_count(fm_registry *r);
/* Frees snapshots retired longer than the grace period ago. */
void fm_registry_gc(fm_registry *r, bool force);

#endif
