/* metrics.h - counters and latency histograms of functions and of the node,
 * and their Prometheus text exposition.
 *
 * Recording is a handful of relaxed atomic additions on counters that live
 * in the function they describe (no lock, no allocation on the call path);
 * a scrape reads them without stopping anyone. Metric names and help texts
 * are declared once, in FM_METRICS below, and everything else (the
 * exposition, docs/observability.md) follows that table. */
#ifndef FM_METRICS_H
#define FM_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/*  X(name, type, labels, help): the one list of metrics; the exposition
 * and the catalogue in docs/observability.md (tests/unit/test_metrics.c
 * checks it, FNMESH_UPDATE_DOCS=1 rewrites it) follow it. */
#define FM_METRICS(X)                                                                              \
    X(fnmesh_build_info, gauge, "version", "Version of the running node (always 1).")              \
    X(fnmesh_up_seconds, gauge, "", "Seconds since the node started.")                             \
    X(fnmesh_deployments, gauge, "", "Deployments with an active version.")                        \
    X(fnmesh_executor_threads, gauge, "", "Executor threads running functions.")                   \
    X(fnmesh_executor_inflight, gauge, "thread", "Calls queued or running, per executor thread.")  \
    X(fnmesh_executor_stuck, gauge, "",                                                            \
      "Executor threads that have been running one call for more than a second.")                  \
    X(fnmesh_http_responses_total, counter, "code", "HTTP responses sent, by status code.")        \
    X(fnmesh_http_connections, gauge, "", "Open client connections.")                              \
    X(fnmesh_http_connections_total, counter, "", "Client connections accepted.")                  \
    X(fnmesh_function_invocations_total, counter,                                                  \
      "deployment, function, runtime, version, outcome",                                           \
      "Finished calls of a function, by outcome (ok, error, timeout, rejected).")                  \
    X(fnmesh_function_duration_seconds, histogram, "deployment, function, runtime, version",       \
      "Time from the start of a call on its executor to its result.")                              \
    X(fnmesh_function_cold_starts_total, counter, "deployment, function, runtime, version",        \
      "Calls that had to create the instance they ran on.")                                        \
    X(fnmesh_function_cpu_seconds_total, counter, "deployment, function, runtime, version",        \
      "CPU time used by calls of a function (in-process: executor thread; else worker process).")  \
    X(fnmesh_function_peak_memory_bytes, gauge, "deployment, function, runtime, version",          \
      "Highest memory of one call (Lua heap, worker RSS); 0 where not measured (JavaScript).")     \
    X(fnmesh_function_inflight, gauge, "deployment, function, runtime, version",                   \
      "Calls of a function queued or running now.")                                                \
    X(fnmesh_function_queued, gauge, "deployment, function, runtime, version",                     \
      "Calls of a function waiting for an executor to start them.")                                \
    X(fnmesh_function_instances, gauge, "deployment, function, runtime, version",                  \
      "Live instances of the function's code (one per executor thread that ran it).")              \
    X(fnmesh_worker_processes, gauge, "runtime", "Live worker processes, by runtime.")             \
    X(fnmesh_worker_starts_total, counter, "runtime", "Worker processes started, by runtime.")     \
    X(fnmesh_worker_deaths_total, counter, "runtime",                                              \
      "Worker processes that crashed, exited or were killed at a deadline, by runtime.")           \
    X(fnmesh_trace_spans_total, counter, "", "Spans recorded into the node's trace ring.")         \
    X(fnmesh_trace_export_spans_total, counter, "result",                                          \
      "Spans sent to the OTLP endpoint, by result (exported, dropped).")                           \
    X(fnmesh_trace_export_failures_total, counter, "", "OTLP export requests that failed.")    \
    X(fnmesh_instance_memory_bytes, gauge, "",                                                     \
      "Estimated memory of the live instances (what --memory-budget counts).")                    \
    X(fnmesh_memory_budget_bytes, gauge, "", "The --memory-budget (0: none).")                     \
    X(fnmesh_instance_evictions_total, counter, "",                                                \
      "Idle instances destroyed to stay under --memory-budget.")                                   \
    X(fnmesh_cluster_connected, gauge, "",                                                         \
      "1 when connected to NATS with the cluster registry open (0 on a single node).")             \
    X(fnmesh_cluster_nodes, gauge, "", "Other nodes of the cluster this node hears from.")         \
    X(fnmesh_cluster_forwarded_total, counter, "",                                                 \
      "Calls this node passed on to the cluster over NATS.")                                       \
    X(fnmesh_cluster_served_total, counter, "", "Calls from other nodes that ran on this node.")

/* The catalogue as data (same order as FM_METRICS). */
typedef struct fm_metric_def {
    const char *name, *type, *labels, *help;
} fm_metric_def;
extern const fm_metric_def fm_metric_catalogue[];
extern const size_t fm_metric_count;

/* Histogram bucket upper bounds, seconds. */
#define FM_DURATION_BUCKETS                                                                        \
    {                                                                                              \
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,  \
            5, 10, 30, 60                                                                          \
    }
#define FM_NBUCKETS 18

typedef enum {
    FM_OUTCOME_OK,
    FM_OUTCOME_ERROR,
    FM_OUTCOME_TIMEOUT,
    FM_OUTCOME_REJECTED,
    FM_NOUTCOMES
} fm_outcome;

typedef struct fm_fn_metrics {
    atomic_uint_fast64_t outcomes[FM_NOUTCOMES];
    atomic_uint_fast64_t buckets[FM_NBUCKETS + 1]; /* not cumulative; the last: above all */
    atomic_uint_fast64_t duration_us_sum;
    atomic_uint_fast64_t cold_starts;
    atomic_uint_fast64_t cpu_us;      /* sum */
    atomic_uint_fast64_t peak_memory; /* max, bytes */
    atomic_int inflight;              /* submitted, not finished */
    atomic_int running;               /* started, not finished */
} fm_fn_metrics;

/* The outcome a call's final status counts as, and its label value ("ok"...). */
fm_outcome fm_metrics_outcome(fm_status st);
const char *fm_metrics_outcome_name(fm_outcome o);

/* The telemetry switch (`fnmesh serve --telemetry off`): when false, calls
 * record no metrics, latency windows, usage or spans; logs and the node's
 * own counters stay. Set once at start-up, before any call; read anywhere. */
extern bool fm_telemetry;

/* *a = max(*a, v), lock-free (relaxed): peaks of memory. */
static inline void fm_atomic_max_u64(atomic_uint_fast64_t *a, uint64_t v) {
    uint_fast64_t cur = atomic_load_explicit(a, memory_order_relaxed);
    while (v > cur && !atomic_compare_exchange_weak_explicit(a, &cur, v, memory_order_relaxed,
                                                             memory_order_relaxed)) {
    }
}

/* Records one finished call (any thread). */
void fm_metrics_record(fm_fn_metrics *m, fm_outcome outcome, int64_t duration_us, int cold);
/* CPU and memory of one finished call (any thread). */
void fm_metrics_record_usage(fm_fn_metrics *m, uint64_t cpu_us, uint64_t peak_memory);

/* A growable text buffer for the exposition. */
typedef struct fm_metrics_buf {
    char *data;
    size_t len, cap;
} fm_metrics_buf;

void fm_metrics_printf(fm_metrics_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* "# HELP" and "# TYPE" lines of a declared metric. */
void fm_metrics_header(fm_metrics_buf *b, const char *name);
/* The series of one function (labels: deployment, function, runtime, version). */
void fm_metrics_function(fm_metrics_buf *b, const char *family, const fm_fn_metrics *m,
                         const char *deployment, const char *function, const char *runtime,
                         const char *version);
/* A gauge or counter sample of one function with an integer value. */
void fm_metrics_function_value(fm_metrics_buf *b, const char *family, double value,
                               const char *deployment, const char *function, const char *runtime,
                               const char *version);

#endif
