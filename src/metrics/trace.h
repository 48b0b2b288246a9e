/* trace.h - distributed tracing: W3C trace context, span records, the
 * node-wide span ring, its JSON views and the OTLP/HTTP JSON exporter.
 *
 * Every call of a function is a span. The gateway parses an incoming
 * `traceparent` (W3C Trace Context level 1) or starts a new trace; a call
 * made by a running function gets a child context of its caller's. When a
 * call finishes, its span is copied into a fixed-size record of a ring that
 * is allocated once at start-up: appending claims a slot with one atomic
 * addition and copies the record under that slot's own spin bit, so an
 * append never allocates, logs or waits for another appender (only, very
 * rarely, for a reader copying the same slot). The newest spans overwrite
 * the oldest. The exporter thread reads the ring by sequence number behind
 * the appenders; spans it could not send (collector slow or down) are lost
 * to the export and counted, never queued without bound.
 *
 * This module knows nothing of jobs or requests: callers fill an fm_span.
 * It does not sample: every call is recorded while `fm_telemetry` is on. */
#ifndef FM_TRACE_H
#define FM_TRACE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "metrics/metrics.h"

/* Spans the node keeps in memory (a power of two). */
#define FM_TRACE_RING_SPANS 16384
/* Longest tracestate passed on (W3C: at least 512 characters SHOULD be propagated). */
#define FM_TRACESTATE_MAX 512
/* Length of a version-00 traceparent: "00-<32 hex>-<16 hex>-<2 hex>". */
#define FM_TRACEPARENT_LEN 55

/* The trace context of one span. */
typedef struct fm_trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t parent_span_id[8]; /* all zero: the span has no parent */
    uint8_t flags;             /* W3C trace-flags (bit 0: sampled) */
} fm_trace_ctx;

/* Span kinds, with their OTLP enum values. */
typedef enum {
    FM_SPAN_INTERNAL = 1, /* a call made by another function on this node */
    FM_SPAN_SERVER = 2,   /* a call that came from outside (HTTP /fn, /rpc) */
} fm_span_kind;

/* One finished span (fixed size: strings are truncated copies). */
typedef struct fm_span {
    fm_trace_ctx ctx;
    uint8_t kind;    /* fm_span_kind */
    uint8_t outcome; /* fm_outcome */
    bool error;      /* status ERROR (message in `message`), else OK */
    bool cold_start;
    int32_t hops;
    int64_t start_ns, end_ns; /* wall clock, Unix nanoseconds */
    char deployment[64];
    char function[96];
    char runtime[16];
    char version[16];
    char request_id[72];
    char message[200];
} fm_span;

/* ---- ids and the W3C headers (pure functions, any thread) ---- */

/* Fills `n` bytes with random bytes, not all zero, from a per-thread
 * generator seeded once from getrandom (no system call per id). */
void fm_trace_random(uint8_t *out, size_t n);
/* True when all `n` bytes are zero. */
bool fm_trace_zero(const uint8_t *id, size_t n);

/* Parses a traceparent header value. On success fills out->trace_id, puts
 * the caller's span id (parent-id) into out->parent_span_id, sets
 * out->flags, zeroes out->span_id and returns true. Version 00 must be
 * exactly 55 characters; a higher version (not ff) is read by the level 1
 * rules (the first 55 characters, then end of string or '-'). Lowercase hex
 * only; all-zero trace or parent ids are invalid. */
bool fm_trace_parse(const char *s, size_t len, fm_trace_ctx *out);
/* Formats "00-<trace_id>-<span_id>-<flags>" into out (56 bytes, NUL-terminated). */
void fm_trace_format(const fm_trace_ctx *c, char out[FM_TRACEPARENT_LEN + 1]);
/* Shortens a tracestate in place to at most FM_TRACESTATE_MAX bytes by
 * dropping whole list members (first those over 128 characters, then from
 * the end), as the W3C spec asks. Returns the new length (0: nothing left). */
size_t fm_tracestate_bound(char *s, size_t len);

/* A new root context (random trace id, no parent) or, when `in` is not
 * NULL, the continuation of `in` (a parsed traceparent): same trace id and
 * flags, `in`'s parent as the parent. Either way a new random span id. */
void fm_trace_begin(fm_trace_ctx *out, const fm_trace_ctx *in);
/* The context of a call made by the span `parent`: same trace and flags,
 * parent_span_id = parent's span id, a new random span id. */
void fm_trace_child(fm_trace_ctx *out, const fm_trace_ctx *parent);

/* Parses exactly 2n hex digits (either case) into id; false if malformed. */
bool fm_trace_unhex(const char *s, size_t len, uint8_t *id, size_t n);

/* Copies src into dst (cap bytes, NUL-terminated), cutting at a UTF-8
 * character boundary when it does not fit. src may be NULL (empty). */
void fm_trace_copy(char *dst, size_t cap, const char *src);

/* ---- clocks ---- */

/* Unix nanoseconds of a monotonic microsecond time (fm_mono_us), through
 * one offset taken by fm_trace_init. */
int64_t fm_trace_wall_ns(int64_t mono_us);

/* ---- the ring ---- */

typedef struct fm_trace_ring fm_trace_ring;

/* A ring of `capacity` spans (rounded up to a power of two, at least 2).
 * The caller owns it (fm_trace_ring_destroy). */
fm_status fm_trace_ring_create(size_t capacity, fm_trace_ring **out, fm_err *err);
void fm_trace_ring_destroy(fm_trace_ring *r);
size_t fm_trace_ring_capacity(const fm_trace_ring *r);
/* Appends a copy of `s` (any thread; never allocates). */
void fm_trace_ring_append(fm_trace_ring *r, const fm_span *s);
/* Spans appended so far; the next append gets this sequence number. */
uint64_t fm_trace_ring_appended(const fm_trace_ring *r);
/* Copies the span of sequence number `seq` into out: 0 done, 1 not written
 * yet (an appender holds it), -1 overwritten by a newer span. */
int fm_trace_ring_read(fm_trace_ring *r, uint64_t seq, fm_span *out);
/* Copies the spans of trace `id` into out (at most `max`), sorted by start
 * time; returns how many were found. */
size_t fm_trace_ring_find(fm_trace_ring *r, const uint8_t id[16], fm_span *out, size_t max);

/* One trace in a listing of recent traces. */
typedef struct fm_trace_summary {
    uint8_t trace_id[16];
    int64_t start_ns, end_ns; /* earliest start, latest end of its spans */
    size_t spans;
    bool error;     /* some span has status ERROR */
    char name[162]; /* name of its earliest span, "deployment/function" */
} fm_trace_summary;

/* The (at most `limit`) traces with the most recent spans, newest first
 * by start. Returns how many were written to out. */
size_t fm_trace_ring_recent(fm_trace_ring *r, size_t limit, fm_trace_summary *out);

/* ---- the node's ring, its JSON views ---- */

/* Sets up the node's ring of `capacity` spans and the clock offset. Once,
 * at start-up, before any call. */
fm_status fm_trace_init(size_t capacity, fm_err *err);
/* Frees the node's ring (after every executor thread stopped). */
void fm_trace_shutdown(void);
/* Appends a finished span to the node's ring (a no-op before fm_trace_init). */
void fm_trace_record(const fm_span *s);
/* The same, with the span written by `fill` straight into its ring slot
 * (the cheaper way for the call path). Any thread. */
void fm_trace_record_fill(void (*fill)(fm_span *out, const void *ud), const void *ud);
/* A worker process has no ring: with a sink set, every span recorded is
 * handed to it (it sends the span to its node). Set once at start-up. */
void fm_trace_set_sink(void (*sink)(const fm_span *s));
/* A trace context as 66 hex digits (NUL-terminated, `out` of 67) and back
 * (false when `hex` is not one). For handing contexts to worker processes. */
void fm_trace_ctx_hex(const fm_trace_ctx *c, char out[67]);
bool fm_trace_ctx_unhex(const char *hex, fm_trace_ctx *c);
/* Spans recorded into the node's ring so far. */
uint64_t fm_trace_recorded(void);

/* {"trace_id", "spans": [...]} of a trace in the node's ring, or NULL when
 * it holds no span of it. New reference. Any thread. */
json_t *fm_trace_json(const uint8_t id[16]);
/* {"traces": [{trace_id, name, start, duration_us, spans, error}...]}, the
 * `limit` most recent. New reference. Any thread. */
json_t *fm_trace_list_json(size_t limit);
/* The JSON object of one span, as in fm_trace_json. New reference. */
json_t *fm_trace_span_json(const fm_span *s);

/* ---- OTLP/HTTP JSON export ---- */

/* An ExportTraceServiceRequest of `n` spans, with the resource attributes
 * service.name="fnmesh" and service.instance.id=`instance_id`. New reference. */
json_t *fm_trace_otlp_json(const fm_span *spans, size_t n, const char *instance_id);

/* Starts the exporter thread, which POSTs the node's finished spans to
 * `endpoint` (a base URL, "/v1/traces" appended unless it already ends so)
 * in batches of up to 512 spans or every second. Once, after fm_trace_init. */
fm_status fm_trace_export_start(const char *endpoint, fm_err *err);
/* Sends what is left (best effort, about a second at most) and stops the thread. */
void fm_trace_export_stop(void);

/* Counters of the exporter (all zero when it does not run). */
typedef struct fm_trace_export_stats {
    uint64_t exported; /* spans the collector accepted */
    uint64_t dropped;  /* spans lost: overwritten before export, or a failed POST */
    uint64_t failures; /* failed POSTs */
} fm_trace_export_stats;
void fm_trace_export_get_stats(fm_trace_export_stats *out);

#endif
