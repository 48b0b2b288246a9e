/* cluster.c - cluster mode on NATS + JetStream (see cluster.h for what lives
 * where, and docs/cluster.md). */
#include "cluster/cluster.h"

#include <errno.h>
#include <nats/nats.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"
#include "metrics/trace.h"
#include "registry/bind.h"

#define REGISTRY_BUCKET "fnmesh-registry"
#define BUNDLE_BUCKET "fnmesh-bundles"
#define QUEUE_GROUP "fnmesh"
#define MAX_PEERS 256
#define OUT_BUCKETS 1024
#define OUT_GRACE_US 200000 /* a forwarded call fails this long after its deadline */
#define RESYNC_EVERY_MS 15000
#define ACCEPT_WAIT_US 1000000 /* a forwarded call not taken by then went to a dead node */

/* A forwarded call waiting for its answer (owned by the table until taken). */
typedef struct out_call {
    struct out_call *next;
    uint64_t seq;
    fm_job *job;
    int64_t sent_us, expires_us;
    char deployment[72];
    char node[64]; /* the node running it, once it said so ("" before) */
} out_call;

typedef struct peer {
    char id[64];
    json_t *hb; /* owned: the last heartbeat */
    int64_t seen_ms;
} peer;

/* A deployment this node serves (control thread only). */
typedef struct served {
    char *name;
    natsSubscription *sub;
} served;

struct fm_cluster {
    char node_id[64];
    char http_addr[300];
    int replicas;
    fm_cluster_hooks hooks;
    fm_registry *registry; /* borrowed */
    fm_exec *exec;         /* borrowed */

    natsOptions *nopts;
    natsConnection *nc;
    jsCtx *js; /* created by the cluster thread once connected */
    _Atomic(kvStore *) reg_kv, bundle_kv;
    atomic_bool connected, rewatch, stop, leaving;
    atomic_bool hb_now; /* a node joined: tell it about this one at once */
    int64_t started_wall_ms;

    natsSubscription *inbox_sub, *direct_sub, *hb_sub, *bye_sub, *news_sub;
    char inbox_prefix[96]; /* "_INBOX.fnmesh.<id>." */

    pthread_mutex_t served_mu; /* the control thread serves, the signal thread leaves */
    served *served;
    size_t nserved;

    pthread_mutex_t out_mu;
    out_call *out[OUT_BUCKETS];
    uint64_t out_seq;
    size_t nout;

    fm_reply_queue replies; /* answers to calls from other nodes, from the executors */
    atomic_int serving;     /* calls from other nodes not answered yet */
    atomic_uint_fast64_t nforwarded, nserved_calls; /* for /metrics */

    pthread_mutex_t peers_mu;
    peer peers[MAX_PEERS];
    int npeers;
    unsigned rr;

    pthread_t tid, watch_tid;
};

/* ------------------------------------------------------------ helpers */

static fm_status nats_err(fm_err *err, fm_status st, const char *what, natsStatus s) {
    const char *last = nats_GetLastError(NULL);
    return fm_err_set(err, st, "cluster: %s: %s%s%s", what, natsStatus_GetText(s),
                      last && *last ? ": " : "", last && *last ? last : "");
}

static kvStore *registry_kv(fm_cluster *cl, fm_err *err) {
    kvStore *kv = atomic_load(&cl->reg_kv);
    if (!kv || !atomic_load(&cl->connected)) {
        fm_err_set(err, FM_UNAVAILABLE, "cluster registry unavailable: not connected to NATS");
        return NULL;
    }
    return kv;
}

static kvStore *bundles_kv(fm_cluster *cl, fm_err *err) {
    if (!registry_kv(cl, err)) return NULL;
    return atomic_load(&cl->bundle_kv);
}

bool fm_cluster_ready(fm_cluster *cl) {
    return atomic_load(&cl->connected) && atomic_load(&cl->reg_kv) != NULL;
}

const char *fm_cluster_node_id(const fm_cluster *cl) { return cl->node_id; }

/* ------------------------------------------------------------ registry */

fm_status fm_cluster_put_bundle(fm_cluster *cl, const char *version, const void *data,
                                size_t len, fm_err *err) {
    kvStore *kv = bundles_kv(cl, err);
    if (!kv) return err->status;
    if (fm_cluster_has_bundle(cl, version)) return FM_OK;
    size_t chunks = (len + FM_CLUSTER_CHUNK - 1) / FM_CLUSTER_CHUNK;
    char key[96];
    for (size_t i = 0; i < chunks; i++) {
        size_t off = i * FM_CLUSTER_CHUNK, n = len - off < FM_CLUSTER_CHUNK ? len - off
                                                                             : FM_CLUSTER_CHUNK;
        snprintf(key, sizeof(key), "%s.%zu", version, i);
        natsStatus s = kvStore_Put(NULL, kv, key, (const char *)data + off, (int)n);
        if (s != NATS_OK) return nats_err(err, FM_UNAVAILABLE, "storing the bundle", s);
    }
    /* the meta key last: a bundle with one is complete */
    char meta[64];
    snprintf(key, sizeof(key), "%s.meta", version);
    snprintf(meta, sizeof(meta), "%zu %zu", len, chunks);
    natsStatus s = kvStore_PutString(NULL, kv, key, meta);
    if (s != NATS_OK) return nats_err(err, FM_UNAVAILABLE, "storing the bundle", s);
    return FM_OK;
}

static bool bundle_meta(fm_cluster *cl, kvStore *kv, const char *version, size_t *len,
                        size_t *chunks) {
    char key[96];
    snprintf(key, sizeof(key), "%s.meta", version);
    kvEntry *e = NULL;
    if (kvStore_Get(&e, kv, key) != NATS_OK) return false;
    unsigned long long l = 0, c = 0;
    bool ok = sscanf(kvEntry_ValueString(e), "%llu %llu", &l, &c) == 2;
    kvEntry_Destroy(e);
    *len = (size_t)l, *chunks = (size_t)c;
    return ok;
}

bool fm_cluster_has_bundle(fm_cluster *cl, const char *version) {
    fm_err err = FM_ERR_INIT;
    kvStore *kv = bundles_kv(cl, &err);
    size_t len, chunks;
    return kv && bundle_meta(cl, kv, version, &len, &chunks);
}

fm_status fm_cluster_get_bundle(fm_cluster *cl, const char *version, void **data, size_t *len,
                                fm_err *err) {
    kvStore *kv = bundles_kv(cl, err);
    if (!kv) return err->status;
    size_t total, chunks;
    if (!bundle_meta(cl, kv, version, &total, &chunks))
        return fm_err_set(err, FM_NOT_FOUND, "cluster: bundle %.12s is not stored", version);
    char *buf = malloc(total ? total : 1);
    size_t at = 0;
    char key[96];
    for (size_t i = 0; i < chunks; i++) {
        snprintf(key, sizeof(key), "%s.%zu", version, i);
        kvEntry *e = NULL;
        natsStatus s = kvStore_Get(&e, kv, key);
        if (s != NATS_OK) {
            free(buf);
            return nats_err(err, s == NATS_NOT_FOUND ? FM_NOT_FOUND : FM_UNAVAILABLE,
                            "reading the bundle", s);
        }
        size_t n = (size_t)kvEntry_ValueLen(e);
        if (at + n > total) n = 0, at = total + 1; /* corrupt: caught below */
        else memcpy(buf + at, kvEntry_Value(e), n), at += n;
        kvEntry_Destroy(e);
    }
    if (at != total) {
        free(buf);
        return fm_err_set(err, FM_INTERNAL, "cluster: bundle %.12s is incomplete", version);
    }
    *data = buf;
    *len = total;
    return FM_OK;
}

fm_status fm_cluster_find_bundle(fm_cluster *cl, const char *prefix, char out[65],
                                 fm_err *err) {
    kvStore *kv = bundles_kv(cl, err);
    if (!kv) return err->status;
    kvKeysList keys = {0};
    natsStatus s = kvStore_Keys(&keys, kv, NULL);
    if (s == NATS_NOT_FOUND) return fm_err_set(err, FM_NOT_FOUND, "version %.64s not found", prefix);
    if (s != NATS_OK) return nats_err(err, FM_UNAVAILABLE, "listing the bundles", s);
    size_t pl = strlen(prefix), found = 0;
    for (int i = 0; i < keys.Count; i++) {
        const char *k = keys.Keys[i];
        size_t kl = strlen(k);
        if (kl == 64 + 5 && strcmp(k + 64, ".meta") == 0 && strncmp(k, prefix, pl) == 0) {
            if (found++ == 0) snprintf(out, 65, "%.64s", k);
        }
    }
    kvKeysList_Destroy(&keys);
    if (found == 0) return fm_err_set(err, FM_NOT_FOUND, "version %.64s not found", prefix);
    if (found > 1)
        return fm_err_set(err, FM_BAD_REQUEST, "version prefix %.64s is ambiguous", prefix);
    return FM_OK;
}

fm_status fm_cluster_set_active(fm_cluster *cl, const char *deployment, const char *version,
                                fm_err *err) {
    kvStore *kv = registry_kv(cl, err);
    if (!kv) return err->status;
    char key[96];
    snprintf(key, sizeof(key), "active.%s", deployment);
    natsStatus s = kvStore_PutString(NULL, kv, key, version);
    if (s != NATS_OK) return nats_err(err, FM_UNAVAILABLE, "storing the active version", s);
    return FM_OK;
}

fm_status fm_cluster_get_active(fm_cluster *cl, const char *deployment, char out[65],
                                fm_err *err) {
    kvStore *kv = registry_kv(cl, err);
    if (!kv) return err->status;
    char key[96];
    snprintf(key, sizeof(key), "active.%s", deployment);
    kvEntry *e = NULL;
    natsStatus s = kvStore_Get(&e, kv, key);
    if (s == NATS_NOT_FOUND)
        return fm_err_set(err, FM_NOT_FOUND, "deployment %s is not in the cluster", deployment);
    if (s != NATS_OK) return nats_err(err, FM_UNAVAILABLE, "reading the registry", s);
    snprintf(out, 65, "%s", kvEntry_ValueString(e));
    kvEntry_Destroy(e);
    return FM_OK;
}

fm_status fm_cluster_remove(fm_cluster *cl, const char *deployment, fm_err *err) {
    kvStore *kv = registry_kv(cl, err);
    if (!kv) return err->status;
    char key[96];
    snprintf(key, sizeof(key), "active.%s", deployment);
    natsStatus s = kvStore_Delete(kv, key);
    if (s != NATS_OK) return nats_err(err, FM_UNAVAILABLE, "deleting from the registry", s);
    return FM_OK;
}

fm_status fm_cluster_list_active(fm_cluster *cl, json_t **out, fm_err *err) {
    kvStore *kv = registry_kv(cl, err);
    if (!kv) return err->status;
    kvKeysList keys = {0};
    natsStatus s = kvStore_Keys(&keys, kv, NULL);
    json_t *obj = json_object();
    if (s == NATS_NOT_FOUND) { /* no keys at all */
        *out = obj;
        return FM_OK;
    }
    if (s != NATS_OK) {
        json_decref(obj);
        return nats_err(err, FM_UNAVAILABLE, "listing the registry", s);
    }
    for (int i = 0; i < keys.Count; i++) {
        const char *k = keys.Keys[i];
        if (strncmp(k, "active.", 7) != 0) continue;
        kvEntry *e = NULL;
        if (kvStore_Get(&e, kv, k) == NATS_OK) {
            json_object_set_new(obj, k + 7, json_string(kvEntry_ValueString(e)));
            kvEntry_Destroy(e);
        }
    }
    kvKeysList_Destroy(&keys);
    *out = obj;
    return FM_OK;
}

void fm_cluster_announce(fm_cluster *cl, const char *deployment) {
    natsConnection_PublishString(cl->nc, "fnmesh.registry", deployment);
}

static void on_registry_news(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                             void *closure) {
    fm_cluster *cl = closure;
    char name[72];
    int n = natsMsg_GetDataLength(msg);
    if (n > 0 && n < (int)sizeof(name) && cl->hooks.converge) {
        memcpy(name, natsMsg_GetData(msg), (size_t)n);
        name[n] = '\0';
        cl->hooks.converge(cl->hooks.ud, name);
    }
    natsMsg_Destroy(msg);
}

/* ------------------------------------------------------------ serving calls */

static const char *header(natsMsg *m, const char *key) {
    const char *v = NULL;
    return natsMsgHeader_Get(m, key, &v) == NATS_OK ? v : NULL;
}

/* Answers a call from another node at once (an error before it ran). */
static void answer_now(fm_cluster *cl, const char *reply, fm_status st, const char *msg) {
    json_t *e = json_object(); /* fm_json_str: the message may hold invalid UTF-8 */
    json_object_set_new(e, "message", fm_json_str(msg));
    json_object_set_new(e, "code", json_string(fm_status_code(st)));
    char *text = json_dumps(e, JSON_COMPACT);
    json_decref(e);
    natsMsg *m = NULL;
    if (text && natsMsg_Create(&m, reply, NULL, text, (int)strlen(text)) == NATS_OK) {
        natsMsgHeader_Set(m, "Fm-Status", fm_status_code(st));
        natsMsgHeader_Set(m, "Fm-Node", cl->node_id);
        natsConnection_PublishMsg(cl->nc, m);
        natsMsg_Destroy(m);
    }
    free(text);
}

/* A call from another node (on a nats.c delivery thread): bind and queue it
 * like the gateway does; the cluster thread publishes the answer. */
static void on_call(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
    fm_cluster *cl = closure;
    atomic_fetch_add(&cl->serving, 1); /* from here: the drain waits for it */
    bool queued = false;
    const char *reply = natsMsg_GetReply(msg);
    const char *subj = natsMsg_GetSubject(msg);
    const char *dep = strrchr(subj, '.');
    const char *fname = header(msg, "Fm-Function");
    if (!reply || !*reply || !dep || !fname) goto out;
    dep++;
    char text[300];
    if (atomic_load(&cl->leaving)) {
        snprintf(text, sizeof(text), "node %s is shutting down", cl->node_id);
        answer_now(cl, reply, FM_DRAINING, text);
        goto out;
    }
    fm_version *v = fm_registry_acquire(cl->registry, dep, strlen(dep));
    if (!v) {
        snprintf(text, sizeof(text), "deployment \"%.100s\" not found on node %s", dep,
                 cl->node_id);
        answer_now(cl, reply, FM_NOT_FOUND, text);
        goto out;
    }
    const fm_function *fn = fm_version_find(v, fname, strlen(fname));
    if (!fn) {
        snprintf(text, sizeof(text), "function \"%.100s\" not found in deployment \"%s\"", fname,
                 v->deployment);
        answer_now(cl, reply, FM_NOT_FOUND, text);
        fm_version_release(v);
        goto out;
    }
    const char *ctype = header(msg, "Content-Type");
    const char *query = header(msg, "Fm-Query");
    fm_err err = FM_ERR_INIT;
    json_t **argv;
    size_t argc;
    int blen = natsMsg_GetDataLength(msg);
    if (fm_bind_http(fn, false, ctype && strcmp(ctype, "application/octet-stream") == 0,
                     blen ? natsMsg_GetData(msg) : NULL, (size_t)blen, query,
                     query ? strlen(query) : 0, &argv, &argc, &err) != FM_OK) {
        answer_now(cl, reply, err.status, err.msg);
        fm_err_clear(&err);
        fm_version_release(v);
        goto out;
    }
    fm_job *job = fm_job_new(FM_JOB_CALL, v, fn);
    job->argv = argv;
    job->argc = argc;
    if (fm_exec_admit(job, &err) != FM_OK) {
        answer_now(cl, reply, err.status, err.msg);
        fm_err_clear(&err);
        fm_job_free(job);
        goto out;
    }
    int64_t now = fm_mono_us(), timeout_ms = fn->timeout_ms;
    const char *left = header(msg, "Fm-Deadline-Ms");
    if (left) {
        long long l = atoll(left);
        if (l < 1) l = 1;
        if (l < timeout_ms) timeout_ms = l;
    }
    job->deadline_us = now + timeout_ms * 1000;
    const char *h = header(msg, "Fm-Hops");
    job->hops = h ? atoi(h) : 0;
    const char *rid = header(msg, "Fm-Request-Id");
    snprintf(job->request_id, sizeof(job->request_id), "%s", rid ? rid : "");
    const char *tp = header(msg, "traceparent");
    fm_trace_ctx in;
    if (tp && fm_trace_parse(tp, strlen(tp), &in)) fm_trace_begin(&job->trace, &in);
    else fm_trace_begin(&job->trace, NULL);
    const char *ts = header(msg, "tracestate");
    if (ts && *ts) job->tracestate = strdup(ts);
    job->req_bytes = (uint64_t)blen;
    job->reply_to = &cl->replies;
    job->ud = strdup(reply);
    /* tell the caller who runs it, so it can fail the call if this node dies */
    natsMsg *ack = NULL;
    if (natsMsg_Create(&ack, reply, NULL, NULL, 0) == NATS_OK) {
        natsMsgHeader_Set(ack, "Fm-Status", "accepted");
        natsMsgHeader_Set(ack, "Fm-Node", cl->node_id);
        natsConnection_PublishMsg(cl->nc, ack);
        natsMsg_Destroy(ack);
    }
    atomic_fetch_add_explicit(&cl->nserved_calls, 1, memory_order_relaxed);
    queued = true; /* publish_answers counts it out */
    int t = fm_exec_pick(cl->exec, fn);
    fm_exec_submit(cl->exec, t, job, job, 1);
out:
    if (!queued) atomic_fetch_sub(&cl->serving, 1);
    natsMsg_Destroy(msg);
}

/* Publishes the answers of finished calls from other nodes (cluster thread). */
static void publish_answers(fm_cluster *cl) {
    fm_job *next;
    for (fm_job *job = fm_reply_queue_take(&cl->replies); job; job = next) {
        next = job->next;
        char *reply = job->ud;
        char *text = NULL;
        const char *body;
        size_t len;
        if (job->status == FM_OK) {
            body = job->result ? job->result : "null";
            len = job->result ? job->result_len : 4;
        } else {
            text = job->error ? json_dumps(job->error, JSON_COMPACT) : NULL;
            if (!text) text = strdup("{\"message\":\"the call failed\"}");
            body = text, len = strlen(text);
        }
        natsMsg *m = NULL;
        natsStatus ps = NATS_ERR;
        if (natsMsg_Create(&m, reply, NULL, body, (int)len) == NATS_OK) {
            natsMsgHeader_Set(m, "Fm-Status", fm_status_code(job->status));
            natsMsgHeader_Set(m, "Fm-Node", cl->node_id);
            ps = natsConnection_PublishMsg(cl->nc, m);
            natsMsg_Destroy(m);
        }
        if (ps == NATS_MAX_PAYLOAD) {
            char msg[200];
            snprintf(msg, sizeof(msg),
                     "the result (%zu bytes) is larger than a NATS message may be (max_payload "
                     "%lld): it cannot cross nodes",
                     len, (long long)natsConnection_GetMaxPayload(cl->nc));
            answer_now(cl, reply, FM_TOO_LARGE, msg);
        }
        free(text);
        free(reply);
        fm_job_free(job);
        atomic_fetch_sub(&cl->serving, 1);
    }
}

void fm_cluster_get_stats(fm_cluster *cl, fm_cluster_stats *out) {
    memset(out, 0, sizeof(*out));
    if (!cl) return;
    out->connected = fm_cluster_ready(cl);
    out->nodes = fm_cluster_peers(cl);
    out->forwarded = atomic_load_explicit(&cl->nforwarded, memory_order_relaxed);
    out->served = atomic_load_explicit(&cl->nserved_calls, memory_order_relaxed);
}

int fm_cluster_serving(fm_cluster *cl) {
    return cl ? atomic_load(&cl->serving) : 0;
}

static bool subject_token_ok(const char *s) {
    for (; *s; s++)
        if (*s == '.' || *s == '*' || *s == '>' || *s == ' ' || *s == '\t') return false;
    return true;
}

typedef struct names {
    const char **v;
    size_t n, cap;
} names;

static void collect_name(fm_version *v, void *ud) {
    names *ns = ud;
    if (ns->n == ns->cap) ns->v = realloc(ns->v, (ns->cap = ns->cap * 2 + 8) * sizeof(char *));
    ns->v[ns->n++] = v->deployment;
}

void fm_cluster_serve(fm_cluster *cl, fm_registry *registry) {
    names ns = {0};
    fm_registry_foreach(registry, collect_name, &ns); /* sorted by name */
    pthread_mutex_lock(&cl->served_mu);
    if (atomic_load(&cl->leaving)) ns.n = 0; /* serve nothing more */
    /* drop what is no longer deployed */
    size_t keep = 0;
    for (size_t i = 0; i < cl->nserved; i++) {
        bool found = false;
        for (size_t k = 0; k < ns.n && !found; k++) found = strcmp(ns.v[k], cl->served[i].name) == 0;
        if (found) {
            cl->served[keep++] = cl->served[i];
        } else {
            natsSubscription_Unsubscribe(cl->served[i].sub);
            natsSubscription_Destroy(cl->served[i].sub);
            free(cl->served[i].name);
        }
    }
    cl->nserved = keep;
    /* subscribe to what is new */
    int added = 0;
    for (size_t k = 0; k < ns.n; k++) {
        bool have = false;
        for (size_t i = 0; i < cl->nserved && !have; i++) have = strcmp(ns.v[k], cl->served[i].name) == 0;
        if (have || !subject_token_ok(ns.v[k])) continue;
        char subj[128];
        snprintf(subj, sizeof(subj), "fnmesh.call.%s", ns.v[k]);
        natsSubscription *sub = NULL;
        natsStatus s = natsConnection_QueueSubscribe(&sub, cl->nc, subj, QUEUE_GROUP, on_call, cl);
        if (s != NATS_OK) {
            fm_log(FM_LOG_WARN, NULL, "cluster: cannot subscribe to %s: %s", subj,
                   natsStatus_GetText(s));
            continue;
        }
        natsSubscription_SetPendingLimits(sub, -1, -1);
        cl->served = realloc(cl->served, (cl->nserved + 1) * sizeof(served));
        cl->served[cl->nserved++] = (served){.name = strdup(ns.v[k]), .sub = sub};
        added++;
    }
    /* the server has the subscriptions before a deploy is acknowledged, so a
     * node that forwards a call right after finds this one */
    if (added) natsConnection_FlushTimeout(cl->nc, 1000);
    pthread_mutex_unlock(&cl->served_mu);
    free(ns.v);
}

/* ------------------------------------------------------------ forwarding calls */

static out_call *out_take(fm_cluster *cl, uint64_t seq) {
    out_call **pp = &cl->out[seq % OUT_BUCKETS];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->seq == seq) {
            out_call *oc = *pp;
            *pp = oc->next;
            cl->nout--;
            return oc;
        }
    return NULL;
}

/* Completes a forwarded call: fills nothing more, hands the job back. */
static void out_finish(out_call *oc) {
    fm_reply_queue_push(oc->job->reply_to, oc->job);
    free(oc);
}

static void out_fail(out_call *oc, fm_status st, const char *msg) {
    fm_job_fail(oc->job, st, msg, NULL, NULL);
    json_object_set_new(oc->job->error, "code", json_string(fm_status_code(st)));
    out_finish(oc);
}

/* An answer on this node's inbox (nats.c delivery thread). */
static void on_answer(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
    fm_cluster *cl = closure;
    const char *subj = natsMsg_GetSubject(msg);
    const char *dot = strrchr(subj, '.');
    uint64_t seq = dot ? strtoull(dot + 1, NULL, 10) : 0;
    const char *code = header(msg, "Fm-Status");
    pthread_mutex_lock(&cl->out_mu);
    if (code && strcmp(code, "accepted") == 0) { /* not the answer yet: who runs it */
        const char *from = header(msg, "Fm-Node");
        for (out_call *o = cl->out[seq % OUT_BUCKETS]; o && from; o = o->next)
            if (o->seq == seq) snprintf(o->node, sizeof(o->node), "%s", from);
        pthread_mutex_unlock(&cl->out_mu);
        goto out;
    }
    out_call *oc = out_take(cl, seq);
    pthread_mutex_unlock(&cl->out_mu);
    if (!oc) goto out; /* late: already timed out */
    if (natsMsg_IsNoResponders(msg)) {
        char text[200];
        snprintf(text, sizeof(text), "no node of the cluster serves deployment \"%s\"",
                 oc->deployment);
        out_fail(oc, FM_NOT_FOUND, text);
        goto out;
    }
    fm_job *job = oc->job;
    const char *data = natsMsg_GetData(msg);
    size_t len = (size_t)natsMsg_GetDataLength(msg);
    if (code && strcmp(code, "ok") == 0) {
        char *copy = malloc(len + 1);
        memcpy(copy, data, len);
        copy[len] = '\0';
        fm_job_succeed(job, copy, len);
    } else {
        job->status = fm_status_from_code(code, FM_INTERNAL);
        json_decref(job->error);
        job->error = json_loadb(data, len, 0, NULL);
        if (!json_is_object(job->error)) {
            json_decref(job->error);
            job->error = json_pack("{s:s}", "message", "malformed answer from another node");
        }
    }
    out_finish(oc);
out:
    natsMsg_Destroy(msg);
}

fm_status fm_cluster_forward(fm_cluster *cl, fm_job *job, const fm_cluster_call *call,
                             fm_err *err) {
    if (!atomic_load(&cl->connected))
        return fm_err_set(err, FM_UNAVAILABLE, "cluster: not connected to NATS");
    if (!fm_cluster_fits(cl, call->len + (call->query ? call->qlen : 0)))
        return fm_err_set(err, FM_TOO_LARGE,
                          "the call (%zu bytes) is larger than a NATS message may be "
                          "(max_payload %lld): it cannot cross nodes",
                          call->len, (long long)natsConnection_GetMaxPayload(cl->nc));
    char subj[200], reply[160];
    if (call->node)
        snprintf(subj, sizeof(subj), "fnmesh.node.%s.call.%s", call->node, call->deployment);
    else snprintf(subj, sizeof(subj), "fnmesh.call.%s", call->deployment);
    out_call *oc = calloc(1, sizeof(*oc));
    oc->job = job;
    oc->sent_us = fm_mono_us();
    oc->expires_us = oc->sent_us + call->deadline_ms * 1000 + OUT_GRACE_US;
    snprintf(oc->deployment, sizeof(oc->deployment), "%s", call->deployment);
    if (call->node) snprintf(oc->node, sizeof(oc->node), "%s", call->node);
    pthread_mutex_lock(&cl->out_mu);
    uint64_t seq = oc->seq = ++cl->out_seq;
    oc->next = cl->out[oc->seq % OUT_BUCKETS];
    cl->out[oc->seq % OUT_BUCKETS] = oc;
    cl->nout++;
    pthread_mutex_unlock(&cl->out_mu);
    snprintf(reply, sizeof(reply), "%s%llu", cl->inbox_prefix, (unsigned long long)seq);

    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subj, reply, call->body, (int)call->len);
    if (s == NATS_OK) {
        char num[32], tp[FM_TRACEPARENT_LEN + 1];
        natsMsgHeader_Set(m, "Fm-Function", call->function);
        snprintf(num, sizeof(num), "%lld", (long long)call->deadline_ms);
        natsMsgHeader_Set(m, "Fm-Deadline-Ms", num);
        snprintf(num, sizeof(num), "%d", job->hops);
        natsMsgHeader_Set(m, "Fm-Hops", num);
        natsMsgHeader_Set(m, "Fm-Request-Id", job->request_id);
        if (call->octet) natsMsgHeader_Set(m, "Content-Type", "application/octet-stream");
        if (call->query) {
            char *q = strndup(call->query, call->qlen);
            natsMsgHeader_Set(m, "Fm-Query", q);
            free(q);
        }
        if (!fm_trace_zero(job->trace.trace_id, 16)) {
            fm_trace_format(&job->trace, tp);
            natsMsgHeader_Set(m, "traceparent", tp);
            if (job->tracestate) natsMsgHeader_Set(m, "tracestate", job->tracestate);
        }
        s = natsConnection_PublishMsg(cl->nc, m);
        natsMsg_Destroy(m);
    }
    if (s == NATS_OK) atomic_fetch_add_explicit(&cl->nforwarded, 1, memory_order_relaxed);
    if (s != NATS_OK) {
        pthread_mutex_lock(&cl->out_mu);
        oc = out_take(cl, seq);
        pthread_mutex_unlock(&cl->out_mu);
        if (oc) { /* not answered meanwhile: the caller keeps the job */
            free(oc);
            return nats_err(err, FM_UNAVAILABLE, "forwarding the call", s);
        }
    }
    return FM_OK;
}

/* Fails forwarded calls: all of them, those running on node `gone` (and
 * those no node has taken for ACCEPT_WAIT_US: a live node says so at once,
 * so they were lost with it, unread), or (both NULL/false) those past their
 * deadline. Cluster thread. */
static void expire_calls(fm_cluster *cl, bool all, const char *gone) {
    int64_t now = fm_mono_us();
    out_call *dead = NULL;
    pthread_mutex_lock(&cl->out_mu);
    for (size_t b = 0; b < OUT_BUCKETS && cl->nout; b++) {
        out_call **pp = &cl->out[b];
        while (*pp) {
            out_call *oc = *pp;
            bool lost = gone && (strcmp(oc->node, gone) == 0 ||
                                 (!oc->node[0] && now - oc->sent_us > ACCEPT_WAIT_US));
            if (all || lost || (!gone && now >= oc->expires_us)) {
                *pp = oc->next;
                cl->nout--;
                oc->next = dead;
                dead = oc;
            } else {
                pp = &oc->next;
            }
        }
    }
    pthread_mutex_unlock(&cl->out_mu);
    while (dead) {
        out_call *next = dead->next;
        char text[200];
        snprintf(text, sizeof(text), "node %s left the cluster while running the call", gone ? gone : "");
        out_fail(dead, all || gone ? FM_UNAVAILABLE : FM_TIMEOUT,
                 all    ? "the node is leaving the cluster"
                 : gone ? text
                        : "deadline exceeded: no answer from the node that took the call");
        dead = next;
    }
}

/* ------------------------------------------------------------ membership */

static void on_heartbeat(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
    fm_cluster *cl = closure;
    json_t *hb = json_loadb(natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg), 0, NULL);
    const char *id = json_string_value(json_object_get(hb, "id"));
    /* a node that says goodbye, or is draining, takes no more calls */
    bool gone = strcmp(natsMsg_GetSubject(msg), "fnmesh.bye") == 0 ||
                json_is_true(json_object_get(hb, "draining"));
    if (id && strcmp(id, cl->node_id) != 0) {
        pthread_mutex_lock(&cl->peers_mu);
        int i;
        for (i = 0; i < cl->npeers; i++)
            if (strcmp(cl->peers[i].id, id) == 0) break;
        if (gone) {
            if (i < cl->npeers) {
                fm_log(FM_LOG_INFO, NULL, "cluster: node %s is leaving", id);
                json_decref(cl->peers[i].hb);
                cl->peers[i] = cl->peers[--cl->npeers];
            }
        } else if (i < cl->npeers || cl->npeers < MAX_PEERS) {
            if (i == cl->npeers) {
                snprintf(cl->peers[i].id, sizeof(cl->peers[i].id), "%s", id);
                cl->peers[i].hb = NULL;
                cl->npeers++;
                fm_log(FM_LOG_INFO, NULL, "cluster: node %s joined", id);
                atomic_store(&cl->hb_now, true);
            }
            json_decref(cl->peers[i].hb);
            cl->peers[i].hb = json_incref(hb);
            cl->peers[i].seen_ms = fm_mono_ms();
        }
        pthread_mutex_unlock(&cl->peers_mu);
    }
    json_decref(hb);
    natsMsg_Destroy(msg);
}

/* Forgets nodes not heard from for FM_CLUSTER_PEER_TTL_MS, and fails the
 * forwarded calls they were running. Cluster thread. */
static void expire_peers(fm_cluster *cl) {
    for (;;) {
        int64_t now = fm_mono_ms();
        char gone[64] = "";
        pthread_mutex_lock(&cl->peers_mu);
        for (int i = 0; i < cl->npeers; i++) {
            if (now - cl->peers[i].seen_ms > FM_CLUSTER_PEER_TTL_MS) {
                fm_log(FM_LOG_INFO, NULL, "cluster: node %s is gone (no heartbeat)",
                       cl->peers[i].id);
                snprintf(gone, sizeof(gone), "%s", cl->peers[i].id);
                json_decref(cl->peers[i].hb);
                cl->peers[i] = cl->peers[--cl->npeers];
                break;
            }
        }
        pthread_mutex_unlock(&cl->peers_mu);
        if (!gone[0]) return;
        expire_calls(cl, false, gone);
    }
}

static json_t *self_heartbeat(fm_cluster *cl) {
    int64_t now = fm_wall_ms();
    json_t *hb = json_pack("{s:s, s:s, s:I, s:f, s:b}", "id", cl->node_id, "address",
                           cl->http_addr, "started_at", (json_int_t)cl->started_wall_ms,
                           "uptime_s", (double)(now - cl->started_wall_ms) / 1000.0, "ready",
                           fm_cluster_ready(cl));
    if (cl->hooks.load) cl->hooks.load(cl->hooks.ud, hb);
    return hb;
}

static void send_heartbeat(fm_cluster *cl, const char *subject) {
    json_t *hb = self_heartbeat(cl);
    char *text = json_dumps(hb, JSON_COMPACT);
    natsConnection_PublishString(cl->nc, subject, text);
    free(text);
    json_decref(hb);
}

bool fm_cluster_fits(fm_cluster *cl, size_t len) {
    int64_t max = natsConnection_GetMaxPayload(cl->nc);
    return max <= 0 || (int64_t)len + 4096 <= max; /* 4 KiB for the headers */
}

int fm_cluster_peers(fm_cluster *cl) {
    pthread_mutex_lock(&cl->peers_mu);
    int n = cl->npeers;
    pthread_mutex_unlock(&cl->peers_mu);
    return n;
}

bool fm_cluster_pick_peer(fm_cluster *cl, char *out, size_t cap) {
    pthread_mutex_lock(&cl->peers_mu);
    bool ok = cl->npeers > 0;
    if (ok) snprintf(out, cap, "%s", cl->peers[cl->rr++ % (unsigned)cl->npeers].id);
    pthread_mutex_unlock(&cl->peers_mu);
    return ok;
}

static int cmp_node(const void *a, const void *b) {
    return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "id")),
                  json_string_value(json_object_get(*(json_t *const *)b, "id")));
}

json_t *fm_cluster_view(fm_cluster *cl) {
    json_t *self = self_heartbeat(cl);
    json_object_set_new(self, "self", json_true());
    json_t *list[MAX_PEERS + 1];
    size_t n = 0;
    list[n++] = self;
    int64_t now = fm_mono_ms();
    pthread_mutex_lock(&cl->peers_mu);
    for (int i = 0; i < cl->npeers; i++) {
        json_t *p = json_deep_copy(cl->peers[i].hb);
        json_object_set_new(p, "self", json_false());
        json_object_set_new(p, "last_seen_ms", json_integer(now - cl->peers[i].seen_ms));
        list[n++] = p;
    }
    pthread_mutex_unlock(&cl->peers_mu);
    qsort(list, n, sizeof(json_t *), cmp_node);
    json_t *nodes = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(nodes, list[i]);
    return json_pack("{s:s, s:s, s:b, s:o}", "mode", "cluster", "node", cl->node_id, "connected",
                     fm_cluster_ready(cl), "nodes", nodes);
}

/* ------------------------------------------------------------ threads */

/* Opens (creating when missing) a KV bucket. */
static natsStatus open_bucket(fm_cluster *cl, const char *name, kvStore **out) {
    natsStatus s = js_KeyValue(out, cl->js, name);
    if (s != NATS_NOT_FOUND) return s;
    kvConfig cfg;
    kvConfig_Init(&cfg);
    cfg.Bucket = name;
    cfg.History = 1;
    cfg.StorageType = js_FileStorage;
    cfg.Replicas = cl->replicas;
    return js_CreateKeyValue(out, cl->js, &cfg);
}

static void setup_buckets(fm_cluster *cl) {
    static int64_t last_log;
    kvStore *reg = NULL, *bun = NULL;
    natsStatus s = NATS_OK;
    if (!cl->js) {
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = 5000;
        s = natsConnection_JetStream(&cl->js, cl->nc, &jo);
    }
    if (s == NATS_OK) s = open_bucket(cl, REGISTRY_BUCKET, &reg);
    if (s == NATS_OK) s = open_bucket(cl, BUNDLE_BUCKET, &bun);
    if (s != NATS_OK) {
        kvStore_Destroy(reg);
        if (fm_mono_ms() - last_log > 5000) {
            const char *last = nats_GetLastError(NULL);
            fm_log(FM_LOG_WARN, NULL, "cluster: JetStream registry not available yet: %s%s%s",
                   natsStatus_GetText(s), last && *last ? ": " : "", last ? last : "");
            last_log = fm_mono_ms();
        }
        return;
    }
    atomic_store(&cl->bundle_kv, bun);
    atomic_store(&cl->reg_kv, reg);
    atomic_store(&cl->rewatch, true);
    fm_log(FM_LOG_INFO, NULL, "cluster: registry open (JetStream buckets %s, %s)",
           REGISTRY_BUCKET, BUNDLE_BUCKET);
}

static void *cluster_main(void *arg) {
    fm_cluster *cl = arg;
    int64_t last_hb = 0, last_sweep = 0;
    while (!atomic_load(&cl->stop)) {
        struct pollfd pfd = {.fd = cl->replies.efd, .events = POLLIN};
        if (poll(&pfd, 1, 50) > 0) {
            uint64_t n;
            ssize_t r = read(cl->replies.efd, &n, sizeof(n));
            (void)r;
        }
        publish_answers(cl);
        int64_t now = fm_mono_ms();
        if (now - last_sweep >= 50) {
            expire_calls(cl, false, NULL);
            last_sweep = now;
        }
        if (now - last_hb >= FM_CLUSTER_HEARTBEAT_MS || atomic_exchange(&cl->hb_now, false)) {
            if (atomic_load(&cl->connected)) send_heartbeat(cl, "fnmesh.hb");
            expire_peers(cl);
            last_hb = now;
        }
    }
    publish_answers(cl);
    return NULL;
}

/* Follows the registry: every change of an "active.*" key is a deployment
 * to converge; a (re)started watch is a full resync. */
static void *watch_main(void *arg) {
    fm_cluster *cl = arg;
    kvWatcher *w = NULL;
    /* A watcher replaced after a reconnect is destroyed a few seconds later:
     * right after a reconnect libnats re-creates its ordered consumer on a
     * thread of its own, and destroying it meanwhile frees what that thread
     * uses (a use-after-free inside libnats). */
    kvWatcher *old = NULL;
    int64_t old_until = 0;
    int64_t last_resync = fm_mono_ms();
    while (!atomic_load(&cl->stop)) {
        if (old && fm_mono_ms() >= old_until) kvWatcher_Destroy(old), old = NULL;
        kvStore *kv = atomic_load(&cl->reg_kv);
        if (!kv && atomic_load(&cl->connected)) { /* JetStream requests block: not on the cluster thread */
            setup_buckets(cl);
            kv = atomic_load(&cl->reg_kv);
        }
        if (!kv || !atomic_load(&cl->connected)) {
            usleep(100000);
            continue;
        }
        if (!w || atomic_exchange(&cl->rewatch, false)) {
            if (w) {
                if (old) kvWatcher_Destroy(old);
                old = w, old_until = fm_mono_ms() + 5000, w = NULL;
            }
            kvWatchOptions wo;
            kvWatchOptions_Init(&wo);
            natsStatus s = kvStore_Watch(&w, kv, "active.>", &wo);
            if (s != NATS_OK) {
                w = NULL;
                usleep(200000);
                continue;
            }
            if (cl->hooks.resync) cl->hooks.resync(cl->hooks.ud);
            last_resync = fm_mono_ms();
        }
        kvEntry *e = NULL;
        natsStatus s = kvWatcher_Next(&e, w, 200);
        if (s == NATS_OK && e) {
            const char *key = kvEntry_Key(e);
            if (strncmp(key, "active.", 7) == 0 && cl->hooks.converge)
                cl->hooks.converge(cl->hooks.ud, key + 7);
            kvEntry_Destroy(e);
        } else if (s != NATS_OK && s != NATS_TIMEOUT) {
            kvWatcher_Destroy(w);
            w = NULL;
            usleep(200000);
        }
        if (fm_mono_ms() - last_resync >= RESYNC_EVERY_MS) {
            if (cl->hooks.resync) cl->hooks.resync(cl->hooks.ud);
            last_resync = fm_mono_ms();
        }
    }
    if (w) kvWatcher_Destroy(w);
    if (old) kvWatcher_Destroy(old);
    return NULL;
}

static void on_connected(natsConnection *nc, void *closure) {
    fm_cluster *cl = closure;
    atomic_store(&cl->connected, true);
    fm_log(FM_LOG_INFO, NULL, "cluster: connected to NATS");
}

static void on_disconnected(natsConnection *nc, void *closure) {
    fm_cluster *cl = closure;
    if (atomic_exchange(&cl->connected, false))
        fm_log(FM_LOG_WARN, NULL, "cluster: disconnected from NATS; serving local state");
}

/* Asynchronous errors (slow consumer, permissions, a refused login...). */
static void on_nats_error(natsConnection *nc, natsSubscription *sub, natsStatus err,
                          void *closure) {
    static _Atomic int64_t last_ms;
    int64_t now = fm_mono_ms(), last = atomic_load(&last_ms);
    if (now - last < 5000 || !atomic_compare_exchange_strong(&last_ms, &last, now)) return;
    char text[256] = "";
    const char *detail = NULL;
    if (nc) natsConnection_GetLastError(nc, &detail);
    snprintf(text, sizeof(text), "%s", detail && *detail ? detail : natsStatus_GetText(err));
    fm_log(FM_LOG_WARN, NULL, "cluster: NATS error: %s", text);
}

static void on_closed(natsConnection *nc, void *closure) {
    fm_cluster *cl = closure;
    atomic_store(&cl->connected, false);
    if (atomic_load(&cl->stop)) return;
    const char *detail = NULL;
    natsConnection_GetLastError(nc, &detail);
    fm_log(FM_LOG_ERROR, NULL, "cluster: the NATS connection was closed for good (%s): restart "
                               "the node once NATS accepts it",
           detail && *detail ? detail : "no reason given");
}

static void on_reconnected(natsConnection *nc, void *closure) {
    fm_cluster *cl = closure;
    atomic_store(&cl->connected, true);
    atomic_store(&cl->rewatch, true); /* the watch restarts, and with it a resync */
    fm_log(FM_LOG_INFO, NULL, "cluster: reconnected to NATS; resynchronising");
}

/* ------------------------------------------------------------ open / close */

fm_status fm_cluster_open(const fm_cluster_opts *o, const fm_cluster_hooks *hooks,
                          fm_registry *registry, fm_exec *exec, fm_cluster **out, fm_err *err) {
    if (!subject_token_ok(o->node_id) || !*o->node_id || strlen(o->node_id) > 60)
        return fm_err_set(err, FM_BAD_REQUEST, "node id \"%s\" must be 1-60 characters without "
                                               "'.', '*', '>' or spaces", o->node_id);
    fm_cluster *cl = calloc(1, sizeof(*cl));
    snprintf(cl->node_id, sizeof(cl->node_id), "%s", o->node_id);
    snprintf(cl->http_addr, sizeof(cl->http_addr), "%s", o->http_addr ? o->http_addr : "");
    cl->replicas = o->replicas > 0 ? o->replicas : 1;
    cl->hooks = *hooks;
    cl->registry = registry;
    cl->exec = exec;
    cl->started_wall_ms = fm_wall_ms();
    pthread_mutex_init(&cl->out_mu, NULL);
    pthread_mutex_init(&cl->peers_mu, NULL);
    pthread_mutex_init(&cl->served_mu, NULL);
    fm_reply_queue_init(&cl->replies);
    snprintf(cl->inbox_prefix, sizeof(cl->inbox_prefix), "_INBOX.fnmesh.%s.", cl->node_id);

    /* the server list */
    char *urls = strdup(o->urls);
    const char *servers[32];
    int nservers = 0;
    for (char *save = NULL, *tok = strtok_r(urls, ",", &save); tok && nservers < 32;
         tok = strtok_r(NULL, ",", &save))
        if (*tok) servers[nservers++] = tok;
    natsStatus s = nats_Open(-1);
    if (s == NATS_OK) s = natsOptions_Create(&cl->nopts);
    if (s == NATS_OK && nservers == 0) s = NATS_INVALID_ARG;
    if (s == NATS_OK) s = natsOptions_SetServers(cl->nopts, servers, nservers);
    free(urls);
    char name[100];
    snprintf(name, sizeof(name), "fnmesh %s", cl->node_id);
    if (s == NATS_OK) s = natsOptions_SetName(cl->nopts, name);
    if (s == NATS_OK) s = natsOptions_UseGlobalMessageDelivery(cl->nopts, true);
    /* no batching delay in the client: a call is two messages each way */
    if (s == NATS_OK) s = natsOptions_SetSendAsap(cl->nopts, true);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(cl->nopts, -1);
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(cl->nopts, 250);
    if (s == NATS_OK) s = natsOptions_SetPingInterval(cl->nopts, 2000);
    if (s == NATS_OK) s = natsOptions_SetTimeout(cl->nopts, 2000);
    if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(cl->nopts, true, on_connected, cl);
    if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(cl->nopts, on_disconnected, cl);
    if (s == NATS_OK) s = natsOptions_SetReconnectedCB(cl->nopts, on_reconnected, cl);
    if (s == NATS_OK) s = natsOptions_SetErrorHandler(cl->nopts, on_nats_error, cl);
    if (s == NATS_OK) s = natsOptions_SetClosedCB(cl->nopts, on_closed, cl);
    if (s == NATS_OK && o->creds_file)
        s = natsOptions_SetUserCredentialsFromFiles(cl->nopts, o->creds_file, NULL);
    if (s == NATS_OK && o->user) s = natsOptions_SetUserInfo(cl->nopts, o->user, o->password);
    if (s == NATS_OK && o->token) s = natsOptions_SetToken(cl->nopts, o->token);
    if (s == NATS_OK && (o->tls_ca || o->tls_cert)) s = natsOptions_SetSecure(cl->nopts, true);
    if (s == NATS_OK && o->tls_ca) s = natsOptions_LoadCATrustedCertificates(cl->nopts, o->tls_ca);
    if (s == NATS_OK && o->tls_cert)
        s = natsOptions_LoadCertificatesChain(cl->nopts, o->tls_cert, o->tls_key);
    if (s != NATS_OK) {
        nats_err(err, FM_BAD_REQUEST, "bad --cluster options", s);
        goto fail;
    }
    /* A first attempt in the foreground says why it fails (refused login,
     * TLS); then the node starts anyway and keeps trying in the background. */
    natsOptions_SetRetryOnFailedConnect(cl->nopts, false, NULL, NULL);
    s = natsConnection_Connect(&cl->nc, cl->nopts);
    if (s == NATS_CONNECTION_AUTH_FAILED) { /* wrong credentials: no use retrying */
        nats_err(err, FM_UNAVAILABLE, "NATS refused the login", s);
        goto fail;
    }
    if (s != NATS_OK) {
        fm_err why = FM_ERR_INIT;
        nats_err(&why, FM_UNAVAILABLE, "connecting", s);
        fm_log(FM_LOG_WARN, NULL, "%s (servers %s); retrying", why.msg, o->urls);
        natsOptions_SetRetryOnFailedConnect(cl->nopts, true, on_connected, cl);
        s = natsConnection_Connect(&cl->nc, cl->nopts);
    }
    if (s == NATS_OK) atomic_store(&cl->connected, true);
    else if (s != NATS_NOT_YET_CONNECTED) {
        nats_err(err, FM_UNAVAILABLE, "connecting", s);
        goto fail;
    }
    char subj[160];
    snprintf(subj, sizeof(subj), "%s*", cl->inbox_prefix);
    s = natsConnection_Subscribe(&cl->inbox_sub, cl->nc, subj, on_answer, cl);
    if (s == NATS_OK) {
        snprintf(subj, sizeof(subj), "fnmesh.node.%s.call.*", cl->node_id);
        s = natsConnection_Subscribe(&cl->direct_sub, cl->nc, subj, on_call, cl);
    }
    if (s == NATS_OK) s = natsConnection_Subscribe(&cl->hb_sub, cl->nc, "fnmesh.hb", on_heartbeat, cl);
    if (s == NATS_OK)
        s = natsConnection_Subscribe(&cl->bye_sub, cl->nc, "fnmesh.bye", on_heartbeat, cl);
    if (s == NATS_OK)
        s = natsConnection_Subscribe(&cl->news_sub, cl->nc, "fnmesh.registry", on_registry_news, cl);
    if (s != NATS_OK) {
        nats_err(err, FM_UNAVAILABLE, "subscribing", s);
        goto fail;
    }
    natsSubscription_SetPendingLimits(cl->inbox_sub, -1, -1);
    natsSubscription_SetPendingLimits(cl->direct_sub, -1, -1);
    pthread_create(&cl->tid, NULL, cluster_main, cl);
    pthread_setname_np(cl->tid, "fm-cluster");
    pthread_create(&cl->watch_tid, NULL, watch_main, cl);
    pthread_setname_np(cl->watch_tid, "fm-cluster-kv");
    *out = cl;
    return FM_OK;
fail:
    natsSubscription_Destroy(cl->inbox_sub);
    natsSubscription_Destroy(cl->direct_sub);
    natsSubscription_Destroy(cl->hb_sub);
    natsSubscription_Destroy(cl->bye_sub);
    natsSubscription_Destroy(cl->news_sub);
    natsConnection_Destroy(cl->nc);
    natsOptions_Destroy(cl->nopts);
    nats_CloseAndWait(2000); /* its callbacks may still be running with cl */
    fm_reply_queue_dispose(&cl->replies);
    free(cl);
    return err->status;
}

void fm_cluster_leave(fm_cluster *cl) {
    if (!cl || atomic_exchange(&cl->leaving, true)) return;
    pthread_mutex_lock(&cl->served_mu);
    for (size_t i = 0; i < cl->nserved; i++) {
        natsSubscription_Unsubscribe(cl->served[i].sub);
        natsSubscription_Destroy(cl->served[i].sub);
        free(cl->served[i].name);
    }
    free(cl->served);
    cl->served = NULL;
    cl->nserved = 0;
    pthread_mutex_unlock(&cl->served_mu);
    natsSubscription_Unsubscribe(cl->direct_sub);
    if (atomic_load(&cl->connected)) {
        send_heartbeat(cl, "fnmesh.bye");
        natsConnection_FlushTimeout(cl->nc, 500);
    }
}

void fm_cluster_close(fm_cluster *cl) {
    if (!cl) return;
    fm_cluster_leave(cl);
    atomic_store(&cl->stop, true);
    pthread_join(cl->tid, NULL);
    pthread_join(cl->watch_tid, NULL);
    publish_answers(cl); /* calls from other nodes that the executors failed at stop */
    expire_calls(cl, true, NULL);
    natsSubscription_Destroy(cl->inbox_sub);
    natsSubscription_Destroy(cl->direct_sub);
    natsSubscription_Destroy(cl->hb_sub);
    natsSubscription_Destroy(cl->bye_sub);
    natsSubscription_Destroy(cl->news_sub);
    natsConnection_FlushTimeout(cl->nc, 500);
    natsConnection_Close(cl->nc);
    kvStore_Destroy(atomic_load(&cl->reg_kv));
    kvStore_Destroy(atomic_load(&cl->bundle_kv));
    jsCtx_Destroy(cl->js);
    natsConnection_Destroy(cl->nc);
    natsOptions_Destroy(cl->nopts);
    /* nats.c runs the connection callbacks (disconnected, closed) on its own
     * threads, after Close returns: wait for them before freeing what they use */
    nats_CloseAndWait(2000);
    fm_reply_queue_dispose(&cl->replies);
    for (int i = 0; i < cl->npeers; i++) json_decref(cl->peers[i].hb);
    pthread_mutex_destroy(&cl->out_mu);
    pthread_mutex_destroy(&cl->peers_mu);
    pthread_mutex_destroy(&cl->served_mu);
    free(cl);
}
