/* frame.c - blocking frame I/O shared by the node and its Python workers
 * (see python_int.h). */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/util.h"
#include "runtime/python/python_int.h"
#include "runtime/sandbox.h"

size_t fm_call_frame_head(unsigned char *out, uint32_t id, uint32_t index, uint32_t left_ms,
                          uint32_t hops, uint32_t nholes, const fm_trace_ctx *trace) {
    fm_put_u32(out, id);
    fm_put_u32(out + 4, index);
    fm_put_u32(out + 8, left_ms);
    fm_put_u32(out + 12, hops);
    fm_put_u32(out + 16, nholes);
    out[20] = trace != NULL;
    if (!trace) return FM_CALL_HEAD;
    unsigned char *p = out + FM_CALL_HEAD;
    memcpy(p, trace->trace_id, 16);
    memcpy(p + 16, trace->span_id, 8);
    memcpy(p + 24, trace->parent_span_id, 8);
    p[32] = trace->flags;
    return FM_CALL_HEAD + FM_CALL_TRACE;
}

int fm_call_frame_parse(const void *payload, size_t len, fm_call_frame *f) {
    const unsigned char *p = payload;
    memset(f, 0, sizeof(*f));
    if (len < FM_CALL_HEAD) return -1;
    memcpy(f->id, p, 4);
    f->index = fm_get_u32(p + 4);
    f->left_ms = fm_get_u32(p + 8);
    f->hops = fm_get_u32(p + 12);
    f->nholes = fm_get_u32(p + 16);
    f->traced = p[20] != 0;
    size_t off = FM_CALL_HEAD;
    if (f->traced) {
        if (len < off + FM_CALL_TRACE) return -1;
        memcpy(f->trace.trace_id, p + off, 16);
        memcpy(f->trace.span_id, p + off + 16, 8);
        memcpy(f->trace.parent_span_id, p + off + 24, 8);
        f->trace.flags = p[off + 32];
        off += FM_CALL_TRACE;
    }
    if (f->nholes > (len - off) / 4) return -1;
    f->holes = p + off;
    off += 4 * (size_t)f->nholes;
    f->args = (const char *)p + off;
    f->args_len = len - off;
    return 0;
}

int fm_py_send(int fd, char type, const void *a, size_t alen, const void *b, size_t blen) {
    /* one writev per frame: a reader on the same core wakes once, not thrice */
    unsigned char head[5];
    fm_put_u32(head, (uint32_t)(1 + alen + blen));
    head[4] = (unsigned char)type;
    struct iovec iov[3] = {{head, 5}, {(void *)a, alen}, {(void *)b, blen}};
    int n = 3, i = 0;
    while (i < n) {
        ssize_t w = writev(fd, iov + i, n - i);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            if (poll(&pfd, 1, 30000) <= 0) return -1;
            continue;
        }
        if (w < 0) return -1;
        size_t done = (size_t)w;
        while (i < n && done >= iov[i].iov_len) done -= iov[i++].iov_len;
        if (i < n) {
            iov[i].iov_base = (char *)iov[i].iov_base + done;
            iov[i].iov_len -= done;
        }
    }
    return 0;
}

/* Read-ahead buffer of the thread's current socket: most frames then cost
 * one read. Only one fd per thread reads through it at a time (a worker's
 * socket, or a node thread waiting for a starting worker). */
static __thread struct {
    int fd;
    unsigned char *buf;
    size_t off, len, cap;
} rb = {-1, NULL, 0, 0, 0};

static int read_all(int fd, unsigned char *p, size_t n, int64_t deadline_ms) {
    if (rb.fd != fd) { /* another socket: drop what was read ahead for the last one */
        rb.fd = fd;
        rb.off = rb.len = 0;
    }
    while (n) {
        if (rb.off < rb.len) {
            size_t k = rb.len - rb.off < n ? rb.len - rb.off : n;
            memcpy(p, rb.buf + rb.off, k);
            rb.off += k;
            p += k;
            n -= k;
            continue;
        }
        if (n >= 65536) { /* big payloads go straight to their buffer */
            ssize_t r = read(fd, p, n);
            if (r > 0) {
                p += r;
                n -= (size_t)r;
                continue;
            }
            if (r == 0) return -1;
            if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) return -1;
            if (errno == EINTR) continue;
        } else {
            if (!rb.buf) rb.buf = malloc(rb.cap = 65536);
            ssize_t r = read(fd, rb.buf, rb.cap);
            if (r > 0) {
                rb.off = 0;
                rb.len = (size_t)r;
                continue;
            }
            if (r == 0) return -1;
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        }
        int wait = -1;
        if (deadline_ms >= 0) {
            int64_t left = deadline_ms - fm_mono_ms();
            if (left <= 0) return -2;
            wait = (int)left;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, wait);
        if (pr == 0) return -2;
        if (pr < 0 && errno != EINTR) return -1;
    }
    return 0;
}

int fm_py_recv(int fd, int timeout_ms, char **payload, size_t *len) {
    int64_t deadline = timeout_ms >= 0 ? fm_mono_ms() + timeout_ms : -1;
    unsigned char head[5];
    int rc = read_all(fd, head, 5, deadline);
    if (rc) return rc;
    uint32_t n = fm_get_u32(head);
    if (n < 1 || n > FM_PY_MAX_FRAME) return -1;
    char *buf = malloc(n);
    if ((rc = read_all(fd, (unsigned char *)buf, n - 1, deadline)) != 0) {
        free(buf);
        return rc;
    }
    buf[n - 1] = '\0';
    *payload = buf;
    *len = n - 1;
    return head[4];
}

void fm_py_frame_release(void) {
    free(rb.buf);
    rb.buf = NULL;
    rb.fd = -1;
    rb.off = rb.len = rb.cap = 0;
}

/* Frames that arrived while a worker waited for another kind (pipelined
 * calls arriving during a mesh call), in order. Worker processes only. */
typedef struct stashed {
    struct stashed *next;
    int type;
    char *payload;
    size_t len;
} stashed;
static stashed *stash_head, *stash_tail;

int fm_py_recv_next(int fd, char **payload, size_t *len) {
    if (stash_head) {
        stashed *s = stash_head;
        stash_head = s->next;
        if (!stash_head) stash_tail = NULL;
        int type = s->type;
        *payload = s->payload;
        *len = s->len;
        free(s);
        return type;
    }
    return fm_py_recv(fd, -1, payload, len);
}

int fm_py_recv_only(int fd, char want, char **payload, size_t *len) {
    for (;;) {
        char *p = NULL;
        size_t n = 0;
        int type = fm_py_recv(fd, -1, &p, &n);
        if (type < 0 || type == want) {
            *payload = p;
            *len = n;
            return type;
        }
        stashed *s = malloc(sizeof(*s));
        *s = (stashed){NULL, type, p, n};
        if (stash_tail) stash_tail->next = s;
        else stash_head = s;
        stash_tail = s;
    }
}

int fm_worker_take_quota(int fd) {
    return fm_worker_take_quota_ex(fd, true, NULL, NULL, 0);
}

int fm_worker_take_quota_ex(int fd, bool cap_address_space, long *memory_mb, char *deployment,
                            size_t deployment_cap) {
    char *q = NULL;
    size_t n = 0;
    if (fm_py_recv(fd, -1, &q, &n) != 'Q') {
        free(q);
        return -1;
    }
    char *end = q;
    long mb = q && n ? strtol(q, &end, 10) : 0;
    char *rest = end;
    if (memory_mb) *memory_mb = q && n ? strtol(end, &rest, 10) : 0;
    if (deployment && deployment_cap)
        snprintf(deployment, deployment_cap, "%s", q && n && *rest == ' ' ? rest + 1 : "");
    free(q);
#if defined(__SANITIZE_ADDRESS__)
    /* AddressSanitizer reserves terabytes of shadow memory: no address-space cap */
    (void)mb;
    (void)cap_address_space;
#else
    if (mb > 0 && cap_address_space) {
        struct rlimit rl = {(rlim_t)mb << 20, (rlim_t)mb << 20};
        setrlimit(RLIMIT_AS, &rl);
    }
#endif
    fm_sandbox_or_warn(NULL);
    return 0;
}

/* The worker's CPU time since it started (user + system, µs). */
static uint64_t worker_usage(uint64_t *rss_kb) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    *rss_kb = (uint64_t)ru.ru_maxrss;
    return (uint64_t)ru.ru_utime.tv_sec * 1000000 + (uint64_t)ru.ru_utime.tv_usec +
           (uint64_t)ru.ru_stime.tv_sec * 1000000 + (uint64_t)ru.ru_stime.tv_usec;
}

static void put_u64(unsigned char *p, uint64_t v) {
    fm_put_u32(p, (uint32_t)v);
    fm_put_u32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t last_reported_cpu; /* the CPU figure of the worker's last report */

int fm_worker_ready(int fd) {
    uint64_t rss = 0;
    unsigned char cpu[8];
    last_reported_cpu = worker_usage(&rss);
    put_u64(cpu, last_reported_cpu);
    return fm_py_send(fd, 'U', cpu, sizeof(cpu), NULL, 0);
}

/* The usage part of a reply head (after the id). */
static void put_usage(unsigned char head[FM_WORKER_REPLY_HEAD], uint64_t cpu, uint64_t rss_kb) {
    last_reported_cpu = cpu;
    put_u64(head + 4, cpu);
    fm_put_u32(head + 12, rss_kb > UINT32_MAX ? UINT32_MAX : (uint32_t)rss_kb);
}

void fm_worker_reply_head(unsigned char head[FM_WORKER_REPLY_HEAD], const unsigned char id[4]) {
    uint64_t rss_kb = 0, cpu = worker_usage(&rss_kb);
    memcpy(head, id, 4);
    put_usage(head, cpu, rss_kb);
}

void fm_worker_split_begin(fm_usage_split *s, uint64_t total_weight) {
    s->base = last_reported_cpu;
    s->now = worker_usage(&s->rss_kb);
    if (s->now < s->base) s->now = s->base;
    s->total = total_weight ? total_weight : 1;
    s->done = 0;
}

void fm_worker_split_fill(unsigned char head[FM_WORKER_REPLY_HEAD], fm_usage_split *s,
                          uint64_t weight) {
    s->done = s->done + weight < s->total ? s->done + weight : s->total;
    put_usage(head, s->base + (s->now - s->base) * s->done / s->total, s->rss_kb);
}

int fm_worker_reject_call(int fd, const void *payload, size_t len) {
    if (len < 4) return -1; /* names no call: nothing to answer */
    static const char e[] = "{\"message\":\"the worker cannot read the call's frame\",\"name\":"
                            "\"InternalError\",\"code\":\"internal\"}";
    return fm_worker_reply(fd, 'F', payload, e, sizeof(e) - 1);
}

int fm_worker_reply(int fd, char type, const unsigned char id[4], const char *text, size_t len) {
    unsigned char head[FM_WORKER_REPLY_HEAD];
    fm_worker_reply_head(head, id);
    return fm_py_send(fd, type, head, sizeof(head), text, len);
}
