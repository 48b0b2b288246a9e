/* metrics.c - recording and Prometheus text exposition (see metrics.h). */
#include "metrics/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool fm_telemetry = true;

static const char *outcome_names[FM_NOUTCOMES] = {"ok", "error", "timeout", "rejected"};

fm_outcome fm_metrics_outcome(fm_status st) {
    if (st == FM_OK) return FM_OUTCOME_OK;
    if (st == FM_TIMEOUT) return FM_OUTCOME_TIMEOUT;
    if (st == FM_OVERLOADED || st == FM_DRAINING) return FM_OUTCOME_REJECTED;
    return FM_OUTCOME_ERROR;
}

const char *fm_metrics_outcome_name(fm_outcome o) {
    return o < FM_NOUTCOMES ? outcome_names[o] : "error";
}

static const double bucket_bounds[FM_NBUCKETS] = FM_DURATION_BUCKETS;

void fm_metrics_record(fm_fn_metrics *m, fm_outcome outcome, int64_t duration_us, int cold) {
    atomic_fetch_add_explicit(&m->outcomes[outcome], 1, memory_order_relaxed);
    if (cold) atomic_fetch_add_explicit(&m->cold_starts, 1, memory_order_relaxed);
    if (outcome == FM_OUTCOME_REJECTED || duration_us < 0) return;
    double s = (double)duration_us / 1e6;
    int i = 0;
    while (i < FM_NBUCKETS && s > bucket_bounds[i]) i++;
    atomic_fetch_add_explicit(&m->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->duration_us_sum, (uint_fast64_t)duration_us,
                              memory_order_relaxed);
}

void fm_metrics_record_usage(fm_fn_metrics *m, uint64_t cpu_us, uint64_t peak_memory) {
    if (cpu_us) atomic_fetch_add_explicit(&m->cpu_us, cpu_us, memory_order_relaxed);
    fm_atomic_max_u64(&m->peak_memory, peak_memory);
}

void fm_metrics_printf(fm_metrics_buf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->data ? b->data + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        b->cap = (b->cap + (size_t)n + 1) * 2;
        b->data = realloc(b->data, b->cap);
    }
}

const fm_metric_def fm_metric_catalogue[] = {
#define FM_X(name, type, labels, help) {#name, #type, labels, help},
    FM_METRICS(FM_X)
#undef FM_X
};
const size_t fm_metric_count = sizeof(fm_metric_catalogue) / sizeof(fm_metric_catalogue[0]);
#define catalogue fm_metric_catalogue

void fm_metrics_header(fm_metrics_buf *b, const char *name) {
    for (size_t i = 0; i < fm_metric_count; i++) {
        if (strcmp(catalogue[i].name, name) != 0) continue;
        fm_metrics_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, catalogue[i].help, name,
                          catalogue[i].type);
        return;
    }
}

/* Label values escaped as the exposition format wants (\\, \", \n). */
static void label(fm_metrics_buf *b, const char *key, const char *value, int first) {
    fm_metrics_printf(b, "%s%s=\"", first ? "" : ",", key);
    for (const char *p = value; *p; p++) {
        if (*p == '\\') fm_metrics_printf(b, "\\\\");
        else if (*p == '"') fm_metrics_printf(b, "\\\"");
        else if (*p == '\n') fm_metrics_printf(b, "\\n");
        else fm_metrics_printf(b, "%c", *p);
    }
    fm_metrics_printf(b, "\"");
}

static void labels(fm_metrics_buf *b, const char *dep, const char *fn, const char *rt,
                   const char *ver) {
    label(b, "deployment", dep, 1);
    label(b, "function", fn, 0);
    label(b, "runtime", rt, 0);
    label(b, "version", ver, 0);
}

void fm_metrics_function_value(fm_metrics_buf *b, const char *family, double value,
                               const char *dep, const char *fn, const char *rt, const char *ver) {
    fm_metrics_printf(b, "%s{", family);
    labels(b, dep, fn, rt, ver);
    fm_metrics_printf(b, "} %.9g\n", value);
}

void fm_metrics_function(fm_metrics_buf *b, const char *family, const fm_fn_metrics *m,
                         const char *dep, const char *fn, const char *rt, const char *ver) {
    if (strcmp(family, "fnmesh_function_invocations_total") == 0) {
        for (int o = 0; o < FM_NOUTCOMES; o++) {
            fm_metrics_printf(b, "%s{", family);
            labels(b, dep, fn, rt, ver);
            fm_metrics_printf(b, ",outcome=\"%s\"} %llu\n", outcome_names[o],
                              (unsigned long long)atomic_load_explicit(&m->outcomes[o],
                                                                       memory_order_relaxed));
        }
    } else if (strcmp(family, "fnmesh_function_cold_starts_total") == 0) {
        fm_metrics_printf(b, "%s{", family);
        labels(b, dep, fn, rt, ver);
        fm_metrics_printf(b, "} %llu\n", (unsigned long long)atomic_load(&m->cold_starts));
    } else if (strcmp(family, "fnmesh_function_duration_seconds") == 0) {
        /* read the buckets once; count = their sum, so the series stays consistent */
        uint64_t cum = 0;
        for (int i = 0; i < FM_NBUCKETS; i++) {
            cum += atomic_load_explicit(&m->buckets[i], memory_order_relaxed);
            fm_metrics_printf(b, "%s_bucket{", family);
            labels(b, dep, fn, rt, ver);
            fm_metrics_printf(b, ",le=\"%g\"} %llu\n", bucket_bounds[i], (unsigned long long)cum);
        }
        cum += atomic_load_explicit(&m->buckets[FM_NBUCKETS], memory_order_relaxed);
        fm_metrics_printf(b, "%s_bucket{", family);
        labels(b, dep, fn, rt, ver);
        fm_metrics_printf(b, ",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        fm_metrics_printf(b, "%s_sum{", family);
        labels(b, dep, fn, rt, ver);
        fm_metrics_printf(b, "} %.6f\n",
                          (double)atomic_load(&m->duration_us_sum) / 1e6);
        fm_metrics_printf(b, "%s_count{", family);
        labels(b, dep, fn, rt, ver);
        fm_metrics_printf(b, "} %llu\n", (unsigned long long)cum);
    }
}
