/* manifest.c - parsing and checking fnmesh.json (see manifest.h). */
#include "registry/manifest.h"

#include <string.h>

#include "core/util.h"

static fm_status check_timeout(json_t *v, const char *where, int64_t *out, fm_err *err) {
    if (!json_is_integer(v) || json_integer_value(v) < 1 ||
        json_integer_value(v) > FM_MAX_TIMEOUT_MS)
        return fm_err_set(err, FM_INVALID_BUNDLE,
                          "fnmesh.json: %s must be an integer between 1 and %d", where,
                          FM_MAX_TIMEOUT_MS);
    if (out) *out = json_integer_value(v);
    return FM_OK;
}

static bool is_limit_key(const char *k) {
    return strcmp(k, "max_concurrency") == 0 || strcmp(k, "max_queue") == 0;
}

/* max_concurrency: 1..FM_MAX_CONCURRENCY; max_queue: 1..FM_MAX_QUEUE. Returns
 * true (with err set) when v is not such an integer. */
static bool check_limit(const json_t *v, const char *key, const char *where, fm_err *err) {
    bool conc = strcmp(key, "max_concurrency") == 0;
    json_int_t lo = 1, hi = conc ? FM_MAX_CONCURRENCY : FM_MAX_QUEUE;
    if (json_is_integer(v) && json_integer_value(v) >= lo && json_integer_value(v) <= hi)
        return false;
    fm_err_set(err, FM_INVALID_BUNDLE, "fnmesh.json: %s must be an integer from %lld to %lld",
               where, (long long)lo, (long long)hi);
    return true;
}

fm_status fm_manifest_parse(const char *text, size_t len, fm_manifest *m, fm_err *err) {
    memset(m, 0, sizeof(*m));
    m->timeout_ms = FM_DEFAULT_TIMEOUT_MS;
    m->memory_mb = FM_DEFAULT_MEMORY_MB;
    if (!text) {
        m->root = json_object();
        return FM_OK;
    }
    json_error_t je;
    m->root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!m->root)
        return fm_err_set(err, FM_INVALID_BUNDLE, "fnmesh.json:%d:%d: %s", je.line, je.column,
                          je.text);
    if (!json_is_object(m->root))
        return fm_err_set(err, FM_INVALID_BUNDLE, "fnmesh.json: must be a JSON object");
    const char *key;
    json_t *v;
    json_object_foreach(m->root, key, v) {
        if (strcmp(key, "timeout_ms") == 0) {
            if (check_timeout(v, "timeout_ms", &m->timeout_ms, err)) return err->status;
        } else if (is_limit_key(key)) {
            if (check_limit(v, key, key, err)) return err->status;
        } else if (strcmp(key, "memory_mb") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < FM_MIN_MEMORY_MB ||
                json_integer_value(v) > FM_MAX_MEMORY_MB)
                return fm_err_set(err, FM_INVALID_BUNDLE,
                                  "fnmesh.json: memory_mb must be an integer from %d to %d",
                                  FM_MIN_MEMORY_MB, FM_MAX_MEMORY_MB);
            m->memory_mb = json_integer_value(v);
        } else if (strcmp(key, "max_instances") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 1 ||
                json_integer_value(v) > FM_MAX_INSTANCES)
                return fm_err_set(err, FM_INVALID_BUNDLE,
                                  "fnmesh.json: max_instances must be an integer from 1 to %d",
                                  FM_MAX_INSTANCES);
            m->max_instances = json_integer_value(v);
        } else if (strcmp(key, "isolation") == 0) {
            const char *iso = json_string_value(v);
            if (!iso || (strcmp(iso, "thread") != 0 && strcmp(iso, "process") != 0))
                return fm_err_set(err, FM_INVALID_BUNDLE,
                                  "fnmesh.json: isolation must be \"thread\" or \"process\"");
            m->isolation = iso[0] == 'p' ? FM_ISOLATION_PROCESS : FM_ISOLATION_THREAD;
        } else if (strcmp(key, "entry") == 0) {
            if (!json_is_array(v) || json_array_size(v) == 0)
                return fm_err_set(err, FM_INVALID_BUNDLE,
                                  "fnmesh.json: entry must be a non-empty array of file names");
            size_t i;
            json_t *f;
            json_array_foreach(v, i, f) {
                if (!json_is_string(f))
                    return fm_err_set(err, FM_INVALID_BUNDLE,
                                      "fnmesh.json: entry[%zu] must be a string", i);
            }
            m->entry = v;
        } else if (strcmp(key, "functions") == 0) {
            if (!json_is_object(v))
                return fm_err_set(err, FM_INVALID_BUNDLE,
                                  "fnmesh.json: functions must be an object");
            const char *fname;
            json_t *fv;
            json_object_foreach(v, fname, fv) {
                if (!json_is_object(fv))
                    return fm_err_set(err, FM_INVALID_BUNDLE,
                                      "fnmesh.json: functions.%s must be an object", fname);
                const char *k2;
                json_t *v2;
                json_object_foreach(fv, k2, v2) {
                    char where[256];
                    snprintf(where, sizeof(where), "functions.%s.%s", fname, k2);
                    if (strcmp(k2, "timeout_ms") == 0) {
                        if (check_timeout(v2, where, NULL, err)) return err->status;
                    } else if (is_limit_key(k2)) {
                        if (check_limit(v2, k2, where, err)) return err->status;
                    } else {
                        return fm_err_set(err, FM_INVALID_BUNDLE,
                                          "fnmesh.json: unknown key %s (known: timeout_ms, "
                                          "max_concurrency, max_queue)",
                                          where);
                    }
                }
            }
            m->functions = v;
        } else {
            return fm_err_set(err, FM_INVALID_BUNDLE,
                              "fnmesh.json: unknown key \"%s\" (known: timeout_ms, "
                              "max_concurrency, max_queue, memory_mb, max_instances, isolation, "
                              "entry, functions)",
                              key);
        }
    }
    return FM_OK;
}

void fm_manifest_dispose(fm_manifest *m) {
    json_decref(m->root);
    memset(m, 0, sizeof(*m));
}

int64_t fm_manifest_int(const fm_manifest *m, const char *fn, const char *key, int64_t dflt) {
    json_t *f = m->functions && fn ? json_object_get(m->functions, fn) : NULL;
    json_t *v = f ? json_object_get(f, key) : NULL;
    if (!v && m->root) v = json_object_get(m->root, key);
    return v ? json_integer_value(v) : dflt;
}

int64_t fm_manifest_timeout(const fm_manifest *m, const char *fn) {
    json_t *f = m->functions ? json_object_get(m->functions, fn) : NULL;
    json_t *t = f ? json_object_get(f, "timeout_ms") : NULL;
    return t ? json_integer_value(t) : m->timeout_ms;
}
