/* python_int.h - private to the Python runtime: the framing between the node
 * and its Python worker processes, and the artifact layout.
 *
 * Frames on a SOCK_STREAM socketpair: u32 length (little endian, of what
 * follows), u8 type, payload. Node to worker: 'I' init (payload: the
 * artifact), 'C' call (a binary head, then the arguments as a JSON array:
 * see fm_call_frame below; no JSON object to build or parse per call).
 * Worker to node: 'E' exports (JSON
 * [{name, file, params}]), 'X' init failed (JSON {message, stack}), 'U' ready
 * (u64 CPU µs the worker has used since it started: its start-up), 'R'
 * result (u32 id, u64 CPU µs used since start, u32 peak RSS KiB, JSON of
 * the value), 'F' failed (u32 id, u64 CPU µs, u32 peak RSS KiB, JSON
 * {message, name, stack}), 'L' log (u8 level, text). A call's CPU is the
 * difference from the previous figure (the worker does nothing else); a
 * worker killed in a call is billed from its exit accounting (wait4).
 *
 * Calls made by the running function: 'M' (JSON {t: "dep/fn", a: [args],
 * n: {named}?, h: [holes]?}) answered by 'm' (u8 ok, JSON of the value or
 * of the error {message, code, name?, stack}). Workers of the in-process
 * runtimes under process isolation (runtime/isolated.c) run several calls
 * at once, so their frames name the call: the 'C' head carries the ms
 * left, the hops and the call's trace context (while telemetry is on);
 * 'M' has "k" (a key, answered by 'n': u32 key, u8 ok, JSON), "c" (the
 * call's id), "o" and "x" (the caller's hops and context inside the
 * worker); 'l' is a log line of call u32 id; 'S' a span recorded inside (an
 * fm_span); 'Z' asks the node to replace the worker (above its memory_mb)
 * once it has answered what it was sent.
 *
 * Artifact: "FMPY1\n", u32 number of entries, each (u32 len, path), u32
 * number of files, each (u32 len, path, u32 len, bytes). */
#ifndef FM_PYTHON_INT_H
#define FM_PYTHON_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "metrics/trace.h"

#define FM_PY_MAGIC "FMPY1\n"
#define FM_PY_MAX_FRAME (256u * 1024 * 1024)
#define FM_PY_WORKER_FD 3

static inline void fm_put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static inline uint32_t fm_get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The payload of a 'C' frame: u32 call id, u32 export index, u32 ms left
 * (0: no deadline), u32 hops, u32 number of holes, u8 traced; when traced
 * the call's trace context (16 + 8 + 8 bytes of ids, u8 flags); the holes
 * (u32 indices of arguments not given: their parameters' defaults apply);
 * then the JSON array of the arguments (a hole's entry is null). */
#define FM_CALL_HEAD 21
#define FM_CALL_TRACE 33
typedef struct fm_call_frame {
    unsigned char id[4];
    uint32_t index, left_ms, hops, nholes;
    const unsigned char *holes; /* nholes u32, in the payload */
    bool traced;
    fm_trace_ctx trace;
    const char *args; /* the JSON array, in the payload (not NUL-terminated) */
    size_t args_len;
} fm_call_frame;
/* Reads a 'C' payload (borrowed by *f); 0, or -1 when it is malformed. */
int fm_call_frame_parse(const void *payload, size_t len, fm_call_frame *f);
static inline uint32_t fm_call_frame_hole(const fm_call_frame *f, uint32_t i) {
    return fm_get_u32(f->holes + 4 * (size_t)i);
}
/* Writes the head of a 'C' payload into `out` (FM_CALL_HEAD + FM_CALL_TRACE
 * bytes at most; `trace` NULL: not traced); returns its length. */
size_t fm_call_frame_head(unsigned char *out, uint32_t id, uint32_t index, uint32_t left_ms,
                          uint32_t hops, uint32_t nholes, const fm_trace_ctx *trace);

/* Writes one frame, blocking until all of it is written (EINTR/EAGAIN
 * retried with poll). Returns 0 or -1. */
int fm_py_send(int fd, char type, const void *a, size_t alen, const void *b, size_t blen);
/* Reads one whole frame, blocking, with a timeout in ms (-1: none). Returns
 * the type, with *payload owned (malloc'd, NUL-terminated); -1 on EOF/error,
 * -2 on timeout. */
int fm_py_recv(int fd, int timeout_ms, char **payload, size_t *len);

/* Worker side: the next frame, first from those set aside by fm_py_recv_only. */
int fm_py_recv_next(int fd, char **payload, size_t *len);
/* Worker side: waits for a frame of type `want`, setting other frames aside
 * (calls the node pipelined while the worker waits for a mesh answer). */
int fm_py_recv_only(int fd, char want, char **payload, size_t *len);

/* Worker side, once started (a worker may be started ahead, before the node
 * knows its deployment): reads the 'Q' frame the node sends first (the
 * address-space cap in MiB, from the deployment's memory_mb), caps the
 * process's address space (RLIMIT_AS) at it, and enters the sandbox. An
 * allocation past the cap fails (Python: MemoryError; C: malloc returns
 * NULL). No cap in sanitizer builds, whose shadow memory needs far more
 * address space. -1 when the node went away. */
int fm_worker_take_quota(int fd);
/* The same, with the address-space cap only when `cap_address_space` (not
 * for JavaScriptCore, which reserves tens of GiB up front); *memory_mb and
 * `deployment` (may be NULL) get the deployment's memory_mb and name. The
 * 'Q' payload: "<address-space MiB> <memory_mb> <deployment>". */
int fm_worker_take_quota_ex(int fd, bool cap_address_space, long *memory_mb, char *deployment,
                            size_t deployment_cap);

/* Worker side: sends the 'R' or 'F' frame of call `id` with the usage
 * header (the worker's CPU time so far, its peak RSS). One getrusage per
 * call. Returns 0 or -1. */
int fm_worker_reply(int fd, char type, const unsigned char id[4], const char *text, size_t len);
/* The payload head of such a frame: the id, the CPU time so far, the peak RSS. */
#define FM_WORKER_REPLY_HEAD 16
void fm_worker_reply_head(unsigned char head[FM_WORKER_REPLY_HEAD], const unsigned char id[4]);
/* Answers sent together (one pass of a worker that runs several calls at
 * once) share the CPU used since the last report, from one getrusage, in
 * proportion to their weights (each call's time running on the worker):
 * fm_worker_split_begin(s, sum of the weights), then fm_worker_split_fill
 * on each answer's head (its id already there), in the order they leave. */
typedef struct fm_usage_split {
    uint64_t base, now, rss_kb;
    uint64_t total, done; /* weights: all of them, those filled so far */
} fm_usage_split;
void fm_worker_split_begin(fm_usage_split *s, uint64_t total_weight);
void fm_worker_split_fill(unsigned char head[FM_WORKER_REPLY_HEAD], fm_usage_split *s,
                          uint64_t weight);
/* Worker side: fails the call of a 'C' payload that fm_call_frame_parse
 * refused ('F', an internal error), so that its caller does not wait for
 * the deadline. -1 when the payload names no call. */
int fm_worker_reject_call(int fd, const void *payload, size_t len);
/* Worker side: the 'U' frame, right after 'E' (start-up CPU is not billed
 * to the first call). Returns 0 or -1. */
int fm_worker_ready(int fd);

/* Frees this thread's read-ahead buffer (it is kept between frames). */
void fm_py_frame_release(void);

/* The worker process: `fnmesh worker-python`. Returns the exit code. */
int fm_python_worker_main(void);

#endif
