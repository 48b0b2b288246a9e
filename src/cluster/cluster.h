/* cluster.h - cluster mode: many nodes, one function mesh, on NATS with
 * JetStream (docs/cluster.md).
 *
 * What lives where:
 *   - the registry: KV bucket "fnmesh-registry", key "active.<deployment>"
 *     = the active version id. The source of truth: every node watches it
 *     and converges its own SQLite store and registry on it.
 *   - bundles: KV bucket "fnmesh-bundles", keys "<version>.meta" ("<bytes>
 *     <chunks>") and "<version>.<i>" (chunks of FM_CLUSTER_CHUNK bytes), so
 *     any node can build any version from the bytes that were deployed.
 *   - calls: subject "fnmesh.call.<deployment>" with queue group "fnmesh"
 *     (NATS spreads calls among the nodes that serve the deployment), and
 *     "fnmesh.node.<id>.call.<deployment>" to reach one node. Deadline,
 *     trace context, hops and request id travel in headers; the answer
 *     comes back on this node's inbox.
 *     The caller learns at once which node runs the call ("accepted"), so
 *     the calls of a node that dies fail when its heartbeats stop.
 *   - registry news: "fnmesh.registry" carries the name of a deployment
 *     that just changed, so nodes converge at once even when their watch
 *     is being re-established after a NATS server failed.
 *   - membership: every node publishes a heartbeat on "fnmesh.hb" each
 *     second; a node not heard from for FM_CLUSTER_PEER_TTL_MS is gone.
 *
 * Threads: nats.c delivers messages on its own threads; one cluster thread
 * publishes answers, heartbeats and times out forwarded calls; one watcher
 * thread follows the registry. The registry and serving functions are for
 * the control thread only; forwarding and the view are for any thread. */
#ifndef FM_CLUSTER_H
#define FM_CLUSTER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "exec/exec.h"
#include "registry/registry.h"

#define FM_CLUSTER_CHUNK (256 * 1024)
#define FM_CLUSTER_PEER_TTL_MS 3000
#define FM_CLUSTER_HEARTBEAT_MS 1000

typedef struct fm_cluster fm_cluster;

typedef struct fm_cluster_opts {
    const char *urls;       /* "nats://h:p[,nats://h:p...]" */
    const char *creds_file; /* NATS credentials file (JWT + seed), or NULL */
    const char *user, *password, *token;
    const char *tls_ca, *tls_cert, *tls_key; /* any set: TLS */
    int replicas;          /* JetStream replicas of the two buckets (1-5) */
    const char *node_id;   /* this node's stable id */
    const char *http_addr; /* "host:port" shown in the cluster view */
} fm_cluster_opts;

/* How the cluster tells the node about changes. Called on cluster threads:
 * they must only queue work (for the control thread). */
typedef struct fm_cluster_hooks {
    void *ud;
    void (*converge)(void *ud, const char *deployment); /* its registry key changed */
    void (*resync)(void *ud);                  /* compare everything (after (re)connecting) */
    void (*load)(void *ud, json_t *heartbeat); /* adds this node's figures to a heartbeat */
} fm_cluster_hooks;

/* Starts connecting (in the background when the servers are not up yet:
 * the node serves what it has and is not ready until connected). Fails only
 * for bad options. */
fm_status fm_cluster_open(const fm_cluster_opts *o, const fm_cluster_hooks *hooks,
                          fm_registry *registry, fm_exec *exec, fm_cluster **out, fm_err *err);
/* At drain: stops taking calls from other nodes and says goodbye, so they
 * stop sending here. Forwarded calls still get their answers. */
void fm_cluster_leave(fm_cluster *cl);
typedef struct fm_cluster_stats {
    bool connected;
    int nodes;                  /* other nodes heard from */
    uint64_t forwarded, served; /* calls passed on / taken from other nodes */
} fm_cluster_stats;
/* Figures for /metrics (all zero for NULL: a single node). Any thread. */
void fm_cluster_get_stats(fm_cluster *cl, fm_cluster_stats *out);
/* Calls from other nodes running here, not answered yet (0 for NULL). */
int fm_cluster_serving(fm_cluster *cl);
/* Once the calls from other nodes are answered (fm_cluster_serving() == 0,
 * else their answers are lost): fails forwarded calls still waiting and
 * disconnects. */
void fm_cluster_close(fm_cluster *cl);
/* Connected to NATS with the registry buckets open. Any thread. */
bool fm_cluster_ready(fm_cluster *cl);
const char *fm_cluster_node_id(const fm_cluster *cl);

/* ---- registry (control thread) ---- */

/* Stores a bundle (once per version id; a stored one is not rewritten). */
fm_status fm_cluster_put_bundle(fm_cluster *cl, const char *version, const void *data,
                                size_t len, fm_err *err);
/* True when the bundle of `version` is stored. */
bool fm_cluster_has_bundle(fm_cluster *cl, const char *version);
/* The bundle of `version` (owned *data). */
fm_status fm_cluster_get_bundle(fm_cluster *cl, const char *version, void **data, size_t *len,
                                fm_err *err);
/* The full id of the one stored bundle whose id starts with `prefix`
 * (FM_NOT_FOUND, or FM_BAD_REQUEST when several do). */
fm_status fm_cluster_find_bundle(fm_cluster *cl, const char *prefix, char out[65], fm_err *err);
fm_status fm_cluster_set_active(fm_cluster *cl, const char *deployment, const char *version,
                                fm_err *err);
/* The active version of a deployment into out; FM_NOT_FOUND when none. */
fm_status fm_cluster_get_active(fm_cluster *cl, const char *deployment, char out[65],
                                fm_err *err);
fm_status fm_cluster_remove(fm_cluster *cl, const char *deployment, fm_err *err);
/* Every deployment with an active version: {name: version}. New reference. */
fm_status fm_cluster_list_active(fm_cluster *cl, json_t **out, fm_err *err);
/* Tells every node now (core NATS, besides the registry watch) that
 * `deployment` changed in the registry. */
void fm_cluster_announce(fm_cluster *cl, const char *deployment);
/* Subscribes to the call subjects of exactly the deployments in `registry`. */
void fm_cluster_serve(fm_cluster *cl, fm_registry *registry);

/* ---- calls (any thread) ---- */

/* A call to forward. Strings borrowed for the duration of fm_cluster_forward. */
typedef struct fm_cluster_call {
    const char *deployment, *function;
    const char *body;
    size_t len;
    bool octet;           /* the body is raw bytes */
    const char *query;    /* query string without '?', or NULL */
    size_t qlen;
    const char *node;     /* a node id, or NULL for any node that serves it */
    int64_t deadline_ms;  /* time left */
} fm_cluster_call;

/* True when a call or answer of `len` bytes fits in one NATS message. */
bool fm_cluster_fits(fm_cluster *cl, size_t len);
/* Number of other nodes alive. */
int fm_cluster_peers(fm_cluster *cl);
/* The id of another live node (round robin) into out; false when none. */
bool fm_cluster_pick_peer(fm_cluster *cl, char *out, size_t cap);
/* Sends the call; when the answer (or a failure) comes, the job (status,
 * result, error filled) is pushed to job->reply_to. Uses job->request_id,
 * job->trace, job->tracestate and job->hops. Non-OK (job untouched) when
 * it cannot be sent. */
fm_status fm_cluster_forward(fm_cluster *cl, fm_job *job, const fm_cluster_call *call,
                             fm_err *err);

/* GET /system/v1/cluster: {mode, node, connected, nodes:[...]}. New reference. */
json_t *fm_cluster_view(fm_cluster *cl);

#endif
