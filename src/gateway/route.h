/* route.h - which surface a request path belongs to.
 *
 * A pure function of the (normalised, query-less) path, so the routing
 * rules are unit-tested without a server. The result points into the path. */
#ifndef FM_ROUTE_H
#define FM_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    FM_ROUTE_NONE,        /* no such path (message in `why`) */
    FM_ROUTE_FN,          /* /fn/{a}/{b}: a = deployment, b = function */
    FM_ROUTE_RPC,         /* /rpc */
    FM_ROUTE_HEALTHZ,     /* /healthz */
    FM_ROUTE_READYZ,      /* /readyz */
    FM_ROUTE_METRICS,     /* /metrics (Prometheus) */
    FM_ROUTE_DEPLOYMENTS, /* /system/v1/deployments */
    FM_ROUTE_DEPLOYMENT,  /* /system/v1/deployments/{a} */
    FM_ROUTE_VERSIONS,    /* /system/v1/deployments/{a}/versions */
    FM_ROUTE_ROLLBACK,    /* /system/v1/deployments/{a}/rollback */
    FM_ROUTE_STATS,       /* /system/v1/stats: latency windows of every function */
    FM_ROUTE_USAGE,       /* /system/v1/usage: metered consumption */
    FM_ROUTE_LOGS,        /* /system/v1/deployments/{a}/logs */
    FM_ROUTE_TRACES,      /* /system/v1/traces (recent traces) */
    FM_ROUTE_TRACE,       /* /system/v1/traces/{a}: a = trace id */
    FM_ROUTE_CLUSTER,     /* /system/v1/cluster: the nodes of the cluster */
} fm_route_kind;

typedef struct fm_route {
    fm_route_kind kind;
    bool system;       /* under /system/v1: needs the admin token */
    const char *a, *b; /* path segments (not NUL-terminated), or NULL */
    size_t alen, blen;
    const char *allow; /* methods allowed, "GET, POST" */
    const char *why;   /* for FM_ROUTE_NONE */
} fm_route;

void fm_route_match(const char *path, size_t len, fm_route *r);
/* True when `method` is in r->allow (HEAD counts as GET). */
bool fm_route_allows(const fm_route *r, const char *method, size_t mlen);

#endif
