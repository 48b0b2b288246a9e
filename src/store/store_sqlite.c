/* store_sqlite.c - the embedded store: one SQLite database in WAL mode.
 *
 * Every mutation is one transaction with synchronous=FULL, so once a call
 * returns the change survives kill -9 and power loss. Bundles are stored
 * once per content hash and deleted when no version refers to them. */
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store/store.h"

typedef struct sqlite_store {
    fm_store base;
    sqlite3 *db;
} sqlite_store;

static const char *schema =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=FULL;"
    "PRAGMA foreign_keys=ON;"
    "CREATE TABLE IF NOT EXISTS bundles(hash TEXT PRIMARY KEY, data BLOB NOT NULL,"
    "  size INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS versions(deployment TEXT NOT NULL, version TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL, manifest TEXT NOT NULL, functions TEXT NOT NULL,"
    "  PRIMARY KEY(deployment, version));"
    "CREATE TABLE IF NOT EXISTS artifacts(deployment TEXT NOT NULL, version TEXT NOT NULL,"
    "  unit INTEGER NOT NULL, runtime TEXT NOT NULL, data BLOB NOT NULL,"
    "  PRIMARY KEY(deployment, version, unit),"
    "  FOREIGN KEY(deployment, version) REFERENCES versions(deployment, version)"
    "  ON DELETE CASCADE);"
    "CREATE TABLE IF NOT EXISTS deployments(name TEXT PRIMARY KEY, active TEXT NOT NULL,"
    "  updated_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS usage(minute INTEGER NOT NULL, deployment TEXT NOT NULL,"
    "  function TEXT NOT NULL, invocations INTEGER NOT NULL, errors INTEGER NOT NULL,"
    "  wall_us INTEGER NOT NULL, cpu_us INTEGER NOT NULL, req_bytes INTEGER NOT NULL,"
    "  resp_bytes INTEGER NOT NULL, peak_memory INTEGER NOT NULL,"
    "  PRIMARY KEY(minute, deployment, function)) WITHOUT ROWID;";

static fm_status db_err(sqlite_store *s, fm_err *err, const char *what) {
    return fm_err_set(err, FM_INTERNAL, "store: %s: %s", what, sqlite3_errmsg(s->db));
}

static int exec(sqlite_store *s, const char *sql) {
    return sqlite3_exec(s->db, sql, NULL, NULL, NULL);
}

void fm_store_version_dispose(fm_store_version *v) {
    free(v->deployment);
    free(v->manifest_json);
    free(v->functions_json);
    for (size_t i = 0; i < v->nunits; i++) free(v->units[i].data);
    free(v->units);
    memset(v, 0, sizeof(*v));
}

static fm_status sq_put_version(fm_store *base, const fm_store_version *v, const void *bundle,
                                size_t bundle_len, int64_t now, fm_err *err) {
    sqlite_store *s = (sqlite_store *)base;
    sqlite3_stmt *st = NULL;
    if (exec(s, "BEGIN IMMEDIATE") != SQLITE_OK) return db_err(s, err, "begin");
    int rc = sqlite3_prepare_v2(
        s->db, "INSERT OR IGNORE INTO bundles(hash, data, size) VALUES(?1, ?2, ?3)", -1, &st, NULL);
    if (rc != SQLITE_OK) goto fail;
    sqlite3_bind_text(st, 1, v->version, -1, SQLITE_STATIC);
    sqlite3_bind_blob64(st, 2, bundle, bundle_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)bundle_len);
    if (sqlite3_step(st) != SQLITE_DONE) goto fail;
    sqlite3_finalize(st);
    rc = sqlite3_prepare_v2(s->db,
                            "INSERT OR REPLACE INTO versions(deployment, version, created_at, "
                            "manifest, functions) VALUES(?1, ?2, ?3, ?4, ?5)",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) goto fail;
    sqlite3_bind_text(st, 1, v->deployment, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, v->version, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, v->created_at);
    sqlite3_bind_text(st, 4, v->manifest_json, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, v->functions_json, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) goto fail;
    sqlite3_finalize(st);
    for (size_t i = 0; i < v->nunits; i++) {
        rc = sqlite3_prepare_v2(s->db,
                                "INSERT OR REPLACE INTO artifacts(deployment, version, unit, "
                                "runtime, data) VALUES(?1, ?2, ?3, ?4, ?5)",
                                -1, &st, NULL);
        if (rc != SQLITE_OK) goto fail;
        sqlite3_bind_text(st, 1, v->deployment, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, v->version, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)i);
        sqlite3_bind_text(st, 4, v->units[i].runtime, -1, SQLITE_STATIC);
        sqlite3_bind_blob64(st, 5, v->units[i].data, v->units[i].len, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE) goto fail;
        sqlite3_finalize(st);
    }
    rc = sqlite3_prepare_v2(s->db,
                            "INSERT OR REPLACE INTO deployments(name, active, updated_at) "
                            "VALUES(?1, ?2, ?3)",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) goto fail;
    sqlite3_bind_text(st, 1, v->deployment, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, v->version, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now);
    if (sqlite3_step(st) != SQLITE_DONE) goto fail;
    sqlite3_finalize(st);
    st = NULL;
    if (exec(s, "COMMIT") != SQLITE_OK) goto fail;
    return FM_OK;
fail:;
    fm_status r = db_err(s, err, "saving version");
    sqlite3_finalize(st);
    exec(s, "ROLLBACK");
    return r;
}

static fm_status sq_activate(fm_store *base, const char *dep, const char *version, int64_t now,
                             fm_err *err) {
    sqlite_store *s = (sqlite_store *)base;
    sqlite3_stmt *st;
    /* only a stored version can become active */
    if (sqlite3_prepare_v2(s->db,
                           "INSERT OR REPLACE INTO deployments(name, active, updated_at) "
                           "SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM versions WHERE "
                           "deployment = ?1 AND version = ?2)",
                           -1, &st, NULL) != SQLITE_OK)
        return db_err(s, err, "activate");
    sqlite3_bind_text(st, 1, dep, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, version, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now);
    int rc = sqlite3_step(st);
    int changed = sqlite3_changes(s->db);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return db_err(s, err, "activate");
    if (!changed) return fm_err_set(err, FM_NOT_FOUND, "version %s of %s not found", version, dep);
    return FM_OK;
}

static fm_status sq_remove(fm_store *base, const char *dep, fm_err *err) {
    sqlite_store *s = (sqlite_store *)base;
    if (exec(s, "BEGIN IMMEDIATE") != SQLITE_OK) return db_err(s, err, "begin");
    static const char *sqls[] = {
        "DELETE FROM deployments WHERE name = ?1",
        "DELETE FROM versions WHERE deployment = ?1",
        "DELETE FROM bundles WHERE hash NOT IN (SELECT version FROM versions)",
    };
    int changed = 0;
    for (size_t i = 0; i < 3; i++) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(s->db, sqls[i], -1, &st, NULL) != SQLITE_OK) {
            exec(s, "ROLLBACK");
            return db_err(s, err, "remove");
        }
        if (i < 2) sqlite3_bind_text(st, 1, dep, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) {
            exec(s, "ROLLBACK");
            return db_err(s, err, "remove");
        }
        if (i == 0) changed = sqlite3_changes(s->db);
    }
    if (!changed) {
        exec(s, "ROLLBACK");
        return fm_err_set(err, FM_NOT_FOUND, "deployment %s not found", dep);
    }
    if (exec(s, "COMMIT") != SQLITE_OK) return db_err(s, err, "commit");
    return FM_OK;
}

static char *col_text(sqlite3_stmt *st, int i) {
    const unsigned char *t = sqlite3_column_text(st, i);
    return strdup(t ? (const char *)t : "");
}

static fm_status load_units(sqlite_store *s, fm_store_version *v, fm_err *err) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT runtime, data FROM artifacts WHERE deployment = ?1 AND "
                           "version = ?2 ORDER BY unit",
                           -1, &st, NULL) != SQLITE_OK)
        return db_err(s, err, "load artifacts");
    sqlite3_bind_text(st, 1, v->deployment, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, v->version, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) {
        v->units = realloc(v->units, (v->nunits + 1) * sizeof(fm_store_unit));
        fm_store_unit *u = &v->units[v->nunits++];
        snprintf(u->runtime, sizeof(u->runtime), "%s", sqlite3_column_text(st, 0));
        u->len = (size_t)sqlite3_column_bytes(st, 1);
        u->data = malloc(u->len + 1);
        if (u->len) memcpy(u->data, sqlite3_column_blob(st, 1), u->len);
        u->data[u->len] = '\0';
    }
    sqlite3_finalize(st);
    return FM_OK;
}

static void row_to_version(sqlite3_stmt *st, fm_store_version *v) {
    memset(v, 0, sizeof(*v));
    v->deployment = col_text(st, 0);
    snprintf(v->version, sizeof(v->version), "%s", sqlite3_column_text(st, 1));
    v->created_at = sqlite3_column_int64(st, 2);
    v->manifest_json = col_text(st, 3);
    v->functions_json = col_text(st, 4);
}

static fm_status sq_load_version(fm_store *base, const char *dep, const char *prefix,
                                 fm_store_version *out, fm_err *err) {
    sqlite_store *s = (sqlite_store *)base;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT deployment, version, created_at, manifest, functions FROM "
                           "versions WHERE deployment = ?1 AND substr(version, 1, length(?2)) = ?2 "
                           "LIMIT 2",
                           -1, &st, NULL) != SQLITE_OK)
        return db_err(s, err, "load version");
    sqlite3_bind_text(st, 1, dep, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, prefix, -1, SQLITE_STATIC);
    int n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (n++ == 0) row_to_version(st, out);
    }
    sqlite3_finalize(st);
    if (n == 0) return fm_err_set(err, FM_NOT_FOUND, "version %s of %s not found", prefix, dep);
    if (n > 1) {
        fm_store_version_dispose(out);
        return fm_err_set(err, FM_BAD_REQUEST, "version prefix %s is ambiguous", prefix);
    }
    return load_units(s, out, err);
}

static fm_status sq_load_active(fm_store *base, fm_store_visit visit, void *ud, fm_err *err) {
    sqlite_store *s = (sqlite_store *)base;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT v.deployment, v.version, v.created_at, v.manifest, v.functions "
                           "FROM deployments d JOIN versions v ON v.deployment = d.name AND "
                           "v.version = d.active ORDER BY d.name",
                           -1, &st, NULL) != SQLITE_OK)
        return db_err(s, err, "load");
    while (sqlite3_step(st) == SQLITE_ROW) {
        fm_store_version v;
        row_to_version(st, &v);
        if (load_units(s, &v, err) != FM_OK) {
            fm_store_version_dispose(&v);
            sqlite3_finalize(st);
            return err->status;
        }
        visit(&v, ud);
    }
    sqlite3_finalize(st);
    return FM_OK;
}

static fm_status sq_list_versions(fm_store *base, const char *dep, json_t **out, fm_err *err) {
    sqlite_store *s = (sqlite_store *)base;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT v.version, v.created_at, v.functions, "
                           "(d.active = v.version) FROM versions v LEFT JOIN deployments d ON "
                           "d.name = v.deployment WHERE v.deployment = ?1 "
                           "ORDER BY v.created_at DESC, v.rowid DESC",
                           -1, &st, NULL) != SQLITE_OK)
        return db_err(s, err, "list versions");
    sqlite3_bind_text(st, 1, dep, -1, SQLITE_STATIC);
    json_t *arr = json_array();
    while (sqlite3_step(st) == SQLITE_ROW) {
        json_t *fns = json_loads((const char *)sqlite3_column_text(st, 2), 0, NULL);
        json_array_append_new(
            arr, json_pack("{s:s, s:I, s:b, s:I}", "version", sqlite3_column_text(st, 0),
                           "created_at", (json_int_t)sqlite3_column_int64(st, 1), "active",
                           sqlite3_column_int(st, 3), "functions",
                           (json_int_t)json_array_size(fns)));
        json_decref(fns);
    }
    sqlite3_finalize(st);
    if (json_array_size(arr) == 0) {
        json_decref(arr);
        return fm_err_set(err, FM_NOT_FOUND, "deployment %s not found", dep);
    }
    *out = arr;
    return FM_OK;
}

static fm_status sq_usage_add(fm_store *base, const fm_store_usage *rows, size_t n, fm_err *err) {
    sqlite_store *s = (sqlite_store *)base;
    sqlite3_stmt *st = NULL;
    if (exec(s, "BEGIN IMMEDIATE") != SQLITE_OK) return db_err(s, err, "begin");
    if (sqlite3_prepare_v2(
            s->db,
            "INSERT INTO usage(minute, deployment, function, invocations, errors, wall_us, cpu_us,"
            " req_bytes, resp_bytes, peak_memory) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)"
            " ON CONFLICT(minute, deployment, function) DO UPDATE SET"
            " invocations = invocations + excluded.invocations, errors = errors + excluded.errors,"
            " wall_us = wall_us + excluded.wall_us, cpu_us = cpu_us + excluded.cpu_us,"
            " req_bytes = req_bytes + excluded.req_bytes,"
            " resp_bytes = resp_bytes + excluded.resp_bytes,"
            " peak_memory = max(peak_memory, excluded.peak_memory)",
            -1, &st, NULL) != SQLITE_OK)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        const fm_store_usage *u = &rows[i];
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, u->minute);
        sqlite3_bind_text(st, 2, u->deployment, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, u->function, -1, SQLITE_STATIC);
        const uint64_t vals[] = {u->invocations, u->errors,     u->wall_us,    u->cpu_us,
                                 u->req_bytes,   u->resp_bytes, u->peak_memory};
        for (int k = 0; k < 7; k++) sqlite3_bind_int64(st, 4 + k, (sqlite3_int64)vals[k]);
        if (sqlite3_step(st) != SQLITE_DONE) goto fail;
    }
    sqlite3_finalize(st);
    if (exec(s, "COMMIT") != SQLITE_OK) {
        exec(s, "ROLLBACK");
        return db_err(s, err, "commit");
    }
    return FM_OK;
fail:
    db_err(s, err, "usage");
    sqlite3_finalize(st);
    exec(s, "ROLLBACK");
    return err ? err->status : FM_INTERNAL;
}

static fm_status sq_usage_query(fm_store *base, const fm_store_usage_query *q, json_t **out,
                                fm_err *err) {
    sqlite_store *s = (sqlite_store *)base;
    const char *key = strcmp(q->group_by, "minute") == 0       ? "minute"
                      : strcmp(q->group_by, "deployment") == 0 ? "deployment"
                                                               : "deployment, function";
    char sql[768];
    snprintf(sql, sizeof(sql),
             "SELECT %s, sum(invocations), sum(errors), sum(wall_us), sum(cpu_us),"
             " sum(req_bytes), sum(resp_bytes), max(peak_memory) FROM usage"
             " WHERE minute >= ?1 AND minute < ?2 AND (?3 IS NULL OR deployment = ?3)"
             " GROUP BY %s ORDER BY %s",
             key, key, key);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_err(s, err, "usage query");
    sqlite3_bind_int64(st, 1, q->from_minute);
    sqlite3_bind_int64(st, 2, q->to_minute);
    if (q->deployment) sqlite3_bind_text(st, 3, q->deployment, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, 3);
    int nkeys = strcmp(key, "deployment, function") == 0 ? 2 : 1;
    json_t *rows = json_array();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *r = json_object();
        if (strcmp(key, "minute") == 0) {
            char ts[32];
            fm_rfc3339(sqlite3_column_int64(st, 0) * 60000, ts, sizeof(ts));
            json_object_set_new(r, "minute", json_string(ts));
        } else {
            json_object_set_new(r, "deployment",
                                fm_json_str((const char *)sqlite3_column_text(st, 0)));
            if (nkeys == 2)
                json_object_set_new(r, "function",
                                    fm_json_str((const char *)sqlite3_column_text(st, 1)));
        }
        static const char *names[] = {"invocations", "errors",     "wall_us",          "cpu_us",
                                      "req_bytes",   "resp_bytes", "peak_memory_bytes"};
        for (int k = 0; k < 7; k++)
            json_object_set_new(r, names[k], json_integer(sqlite3_column_int64(st, nkeys + k)));
        json_array_append_new(rows, r);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        json_decref(rows);
        return db_err(s, err, "usage query");
    }
    *out = rows;
    return FM_OK;
}

static void sq_close(fm_store *base) {
    sqlite_store *s = (sqlite_store *)base;
    if (!s) return;
    sqlite3_close(s->db);
    free(s);
}

static fm_status sq_load_bundle(fm_store *base, const char *version, void **data, size_t *len,
                                fm_err *err) {
    sqlite_store *s = (sqlite_store *)base;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, "SELECT data FROM bundles WHERE hash = ?1", -1, &st, NULL) !=
        SQLITE_OK)
        return db_err(s, err, "load bundle");
    sqlite3_bind_text(st, 1, version, -1, SQLITE_STATIC);
    fm_status rc = FM_OK;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *len = (size_t)sqlite3_column_bytes(st, 0);
        *data = malloc(*len ? *len : 1);
        if (*len) memcpy(*data, sqlite3_column_blob(st, 0), *len);
    } else {
        rc = fm_err_set(err, FM_NOT_FOUND, "bundle %.12s not stored", version);
    }
    sqlite3_finalize(st);
    return rc;
}

static const fm_store_ops sqlite_ops = {
    .load_bundle = sq_load_bundle,
    .name = "sqlite",
    .put_version = sq_put_version,
    .activate = sq_activate,
    .remove = sq_remove,
    .load_version = sq_load_version,
    .load_active = sq_load_active,
    .list_versions = sq_list_versions,
    .usage_add = sq_usage_add,
    .usage_query = sq_usage_query,
    .close = sq_close,
};

fm_status fm_store_open_sqlite(const char *path, fm_store **out, fm_err *err) {
    sqlite_store *s = calloc(1, sizeof(*s));
    s->base.ops = &sqlite_ops;
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                          SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        fm_err_set(err, FM_INTERNAL, "cannot open %s: %s", path, sqlite3_errmsg(s->db));
        sqlite3_close(s->db);
        free(s);
        return FM_INTERNAL;
    }
    sqlite3_busy_timeout(s->db, 5000);
    char *msg = NULL;
    if (sqlite3_exec(s->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
        fm_err_set(err, FM_INTERNAL, "cannot initialise %s: %s", path, msg ? msg : "");
        sqlite3_free(msg);
        sqlite3_close(s->db);
        free(s);
        return FM_INTERNAL;
    }
    *out = &s->base;
    return FM_OK;
}
