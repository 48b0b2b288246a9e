/* logs.h - function logs: what functions print, kept in memory per deployment.
 *
 * Every line a function logs (console.* in JS, print in Lua and Python,
 * sys.stderr, fm_log in C) goes through fm_logs_function(), which writes the
 * node's JSON log line on stderr and appends an entry to the deployment's
 * ring. A ring is bounded by FM_LOGS_MAX_ENTRIES and FM_LOGS_MAX_BYTES: the
 * oldest entries are dropped to make room. Entries carry a node-wide
 * sequence number (`seq`, strictly increasing within a ring), so a reader
 * pages or follows with "entries after seq N".
 *
 * The store is one process-wide object. Appends come from executor threads
 * and worker-pool callbacks, reads from I/O threads: every function here is
 * thread-safe. An append takes one short per-deployment mutex, copies the
 * entry into one allocation and does no I/O besides the node log line. */
#ifndef FM_LOGS_H
#define FM_LOGS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

#define FM_LOGS_MAX_ENTRIES 2000            /* per deployment */
#define FM_LOGS_MAX_BYTES (1024 * 1024)     /* per deployment: messages + fields + 64 per entry */
#define FM_LOGS_MAX_MESSAGE 16384           /* bytes of one message before truncation */
#define FM_LOGS_TRUNCATED "... [truncated]" /* appended to a truncated message */
#define FM_LOGS_ENTRY_OVERHEAD 64           /* bytes counted per entry besides its strings */
#define FM_LOGS_DEFAULT_LIMIT 1000          /* entries per read unless asked otherwise */
#define FM_LOGS_MAX_LIMIT 10000

struct fm_job;

/* Who logged: every field may be NULL (unknown, e.g. a line printed while a
 * module loads, outside any call). `version` is the 12-hex-digit prefix or
 * the full id (only the first 12 characters are kept). Borrowed. */
typedef struct fm_logs_src {
    const char *deployment;
    const char *function;
    const char *version;
    const char *request_id;
} fm_logs_src;

/* Logs one line of a function: the node log line on stderr (fields src,
 * deployment, function, version, request_id, stream; subject to the node's
 * --log-level, with debug lines shown as info) and an entry in the store
 * (whatever the node's log level). `job` (may be NULL) gives function,
 * version and request id; `deployment` may be NULL when unknown (nothing is
 * stored then). `msg` need not be NUL-terminated nor valid UTF-8. Any thread. */
void fm_logs_function(const char *deployment, const struct fm_job *job, fm_log_level level,
                      const char *msg, size_t len);
/* A worker process sends its functions' lines to the node instead: with a
 * sink set, fm_logs_function hands every line to it and does nothing else. */
typedef void (*fm_logs_sink)(const struct fm_job *job, fm_log_level level, const char *msg,
                             size_t len);
void fm_logs_set_sink(fm_logs_sink sink);

/* Appends one entry to the ring of src->deployment (created on first use).
 * The message is truncated at FM_LOGS_MAX_MESSAGE bytes (on a UTF-8
 * boundary) followed by FM_LOGS_TRUNCATED. Does nothing when
 * src->deployment is NULL or empty. Returns the entry's seq (0 if none). Any thread. */
uint64_t fm_logs_append(const fm_logs_src *src, fm_log_level level, int64_t wall_ms,
                        const char *msg, size_t len);

/* What a read returns. */
typedef struct fm_logs_filter {
    bool has_since;       /* false: the newest `limit` entries (a tail) */
    uint64_t since;       /* with has_since: the oldest `limit` entries with seq > since */
    int64_t since_ms;     /* only entries logged at or after this wall time (0 = any) */
    const char *function; /* only this function (NULL = any) */
    fm_log_level min_level;
    size_t limit; /* 0 = FM_LOGS_DEFAULT_LIMIT; capped at FM_LOGS_MAX_LIMIT */
} fm_logs_filter;

/* The entries of `deployment` matching `f`, oldest first, as a new JSON
 * array of objects {seq, ts (RFC 3339, ms, UTC), level, deployment,
 * function, version, request_id, message} (unknown fields are null).
 * *next is the seq to pass as `since` to get only later entries: the last
 * entry returned when the limit cut the answer short, else the newest seq
 * examined (or f->since when there was none). Any thread; the ring's lock
 * is held only while entries are copied. */
json_t *fm_logs_read(const char *deployment, const fm_logs_filter *f, uint64_t *next);

/* True when the store holds a ring for `deployment`. Any thread. */
bool fm_logs_exists(const char *deployment);

/* Drops the ring of `deployment` and its entries (a deleted deployment).
 * Any thread. */
void fm_logs_drop(const char *deployment);

/* Drops every ring (unit tests; the node's exit). Any thread. */
void fm_logs_reset(void);

/* Parses a level name ("debug", "info", "warn"/"warning", "error"). */
bool fm_logs_parse_level(const char *s, size_t len, fm_log_level *out);

/* Parses a `since` value into f: digits = a seq; a duration ("30s", "5m",
 * "2h", "1d", "500ms") = that long before now_ms; an RFC 3339 time
 * ("2026-12-01T19:00:00Z", fractions and +hh:mm offsets allowed). Returns
 * false when it is none of these. */
bool fm_logs_parse_since(const char *s, size_t len, int64_t now_ms, fm_logs_filter *f);

#endif
