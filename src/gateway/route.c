/* route.c - path routing (see route.h). */
#include "gateway/route.h"

#include <string.h>

static bool eq(const char *p, size_t n, const char *lit) {
    return strlen(lit) == n && memcmp(p, lit, n) == 0;
}

static bool prefix(const char *p, size_t n, const char *lit) {
    size_t l = strlen(lit);
    return n >= l && memcmp(p, lit, l) == 0;
}

static void none(fm_route *r, const char *why) {
    r->kind = FM_ROUTE_NONE;
    r->why = why;
    r->allow = NULL;
}

/* /system/v1/traces[/{id}] */
static void traces_route(const char *p, size_t n, fm_route *r) {
    if (n && *p == '/') p++, n--;
    if (n && p[n - 1] == '/') n--;
    r->allow = "GET";
    if (n == 0) {
        r->kind = FM_ROUTE_TRACES;
    } else if (!memchr(p, '/', n)) {
        r->kind = FM_ROUTE_TRACE;
        r->a = p;
        r->alen = n;
    } else {
        none(r, "no such control-plane resource");
    }
}

static void system_route(const char *p, size_t n, fm_route *r) {
    r->system = true;
    size_t bare = n && p[n - 1] == '/' ? n - 1 : n;
    if (eq(p, bare, "stats") || eq(p, bare, "usage")) {
        r->kind = p[0] == 's' ? FM_ROUTE_STATS : FM_ROUTE_USAGE;
        r->allow = "GET";
        return;
    }
    if (eq(p, bare, "cluster")) {
        r->kind = FM_ROUTE_CLUSTER;
        r->allow = "GET";
        return;
    }
    if (prefix(p, n, "traces") && (n == 6 || p[6] == '/')) return traces_route(p + 6, n - 6, r);
    if (!prefix(p, n, "deployments") || (n > 11 && p[11] != '/'))
        return none(r, "no such control-plane resource");
    p += 11, n -= 11;
    if (n && *p == '/') p++, n--;
    if (n && p[n - 1] == '/') n--;
    if (n == 0) {
        r->kind = FM_ROUTE_DEPLOYMENTS;
        r->allow = "GET";
        return;
    }
    const char *slash = memchr(p, '/', n);
    r->a = p;
    r->alen = slash ? (size_t)(slash - p) : n;
    if (!slash) {
        r->kind = FM_ROUTE_DEPLOYMENT;
        r->allow = "GET, PUT, DELETE";
        return;
    }
    const char *sub = slash + 1;
    size_t slen = (size_t)(p + n - sub);
    if (eq(sub, slen, "versions")) {
        r->kind = FM_ROUTE_VERSIONS;
        r->allow = "GET";
    } else if (eq(sub, slen, "rollback")) {
        r->kind = FM_ROUTE_ROLLBACK;
        r->allow = "POST";
    } else if (eq(sub, slen, "logs")) {
        r->kind = FM_ROUTE_LOGS;
        r->allow = "GET";
    } else {
        none(r, "no such control-plane resource");
    }
}

void fm_route_match(const char *p, size_t n, fm_route *r) {
    memset(r, 0, sizeof(*r));
    if (prefix(p, n, "/fn/")) {
        p += 4, n -= 4;
        const char *slash = memchr(p, '/', n);
        if (!slash || slash == p || slash + 1 == p + n ||
            memchr(slash + 1, '/', (size_t)(p + n - slash - 1)))
            return none(r, "use /fn/<deployment>/<function>");
        r->kind = FM_ROUTE_FN;
        r->a = p;
        r->alen = (size_t)(slash - p);
        r->b = slash + 1;
        r->blen = (size_t)(p + n - slash - 1);
        r->allow = "GET, POST";
    } else if (eq(p, n, "/rpc")) {
        r->kind = FM_ROUTE_RPC;
        r->allow = "POST";
    } else if (prefix(p, n, "/system/v1/")) {
        system_route(p + 11, n - 11, r);
    } else if (eq(p, n, "/system/v1")) {
        r->system = true;
        none(r, "no such control-plane resource");
    } else if (eq(p, n, "/healthz")) {
        r->kind = FM_ROUTE_HEALTHZ;
        r->allow = "GET";
    } else if (eq(p, n, "/readyz")) {
        r->kind = FM_ROUTE_READYZ;
        r->allow = "GET";
    } else if (eq(p, n, "/metrics")) {
        r->kind = FM_ROUTE_METRICS;
        r->allow = "GET";
    } else {
        none(r, "no such path");
    }
}

bool fm_route_allows(const fm_route *r, const char *m, size_t mlen) {
    if (!r->allow) return false;
    if (eq(m, mlen, "HEAD")) m = "GET", mlen = 3;
    for (const char *a = r->allow; *a;) {
        const char *e = strchr(a, ',');
        size_t l = e ? (size_t)(e - a) : strlen(a);
        if (l == mlen && memcmp(a, m, l) == 0) return true;
        if (!e) break;
        a = e + 1;
        while (*a == ' ') a++;
    }
    return false;
}
