/* control.h - the control plane's operations: deploy, list, show, delete,
 * versions, rollback, and loading the stored state at start.
 *
 * All of these block (archive parsing, compilers, SQLite) and run on the
 * single control thread only, which is also the only writer of the registry
 * and the only user of the store. Results are JSON documents (owned by the
 * caller) plus an HTTP status. */
#ifndef FM_CONTROL_H
#define FM_CONTROL_H

#include <jansson.h>
#include <stddef.h>

#include "core/status.h"
#include "cluster/cluster.h"
#include "exec/exec.h"
#include "registry/registry.h"
#include "store/store.h"

typedef struct fm_control {
    fm_store *store;       /* borrowed */
    fm_registry *registry; /* borrowed */
    fm_exec *exec;         /* borrowed */
    fm_cluster *cluster;   /* borrowed; NULL on a single node */
    bool converging;       /* applying the cluster's registry: do not write it back */
} fm_control;

/* Loads the active version of every stored deployment and warms it. */
fm_status fm_control_load(fm_control *c, fm_err *err);

/* Each returns FM_OK with *out set and *http the success status (200/201). */
fm_status fm_control_deploy(fm_control *c, const char *name, const void *body, size_t len,
                            json_t **out, int *http, fm_err *err);
fm_status fm_control_list(fm_control *c, json_t **out, fm_err *err);
fm_status fm_control_show(fm_control *c, const char *name, json_t **out, fm_err *err);
fm_status fm_control_delete(fm_control *c, const char *name, json_t **out, fm_err *err);
fm_status fm_control_versions(fm_control *c, const char *name, json_t **out, fm_err *err);
fm_status fm_control_rollback(fm_control *c, const char *name, const void *body, size_t len,
                              json_t **out, fm_err *err);

/* Cluster mode: makes this node's deployment `name` what the cluster
 * registry says (deploying from the stored bundle, reactivating, or
 * deleting it). */
void fm_control_converge(fm_control *c, const char *name);
/* Cluster mode: converges every deployment the registry or this node has;
 * false when the registry could not be read. */
bool fm_control_resync(fm_control *c);

/* Metering: writes every function's usage since the last flush into the
 * store, in the current minute's rows (one transaction). A failed write is
 * kept for the next flush. */
void fm_control_flush_usage(fm_control *c);
/* GET /system/v1/usage: flushes, then answers the query string `q` (from=,
 * to=, group_by=deployment|function|minute, deployment=). FM_BAD_REQUEST
 * for bad parameters. */
fm_status fm_control_usage(fm_control *c, const char *q, size_t qlen, json_t **out, fm_err *err);

#endif
