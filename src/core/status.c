/* status.c - names of statuses and the error-detail helpers. */
#include "core/status.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *code;
    int http;
} status_table[] = {
#define FM_X(e, code, http) {code, http},
    FM_STATUS_MAP(FM_X)
#undef FM_X
};

const char *fm_status_code(fm_status s) {
    return (unsigned)s < FM_STATUS_COUNT ? status_table[s].code : "internal";
}

int fm_status_http(fm_status s) {
    return (unsigned)s < FM_STATUS_COUNT ? status_table[s].http : 500;
}

fm_status fm_status_from_code(const char *code, fm_status fallback) {
    if (!code) return fallback;
    for (int s = FM_OK + 1; s < FM_STATUS_COUNT; s++)
        if (strcmp(status_table[s].code, code) == 0) return (fm_status)s;
    return fallback;
}

fm_status fm_err_vset(fm_err *err, fm_status s, const char *fmt, va_list ap) {
    if (err) {
        err->status = s;
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    }
    return s;
}

fm_status fm_err_set(fm_err *err, fm_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fm_err_vset(err, s, fmt, ap);
    va_end(ap);
    return s;
}

void fm_err_detail(fm_err *err, const char *key, json_t *value) {
    if (!err) {
        json_decref(value);
        return;
    }
    if (!err->details) err->details = json_object();
    json_object_set_new(err->details, key, value);
}

void fm_err_clear(fm_err *err) {
    json_decref(err->details);
    err->details = NULL;
    err->status = FM_OK;
    err->msg[0] = '\0';
}

json_t *fm_err_to_json(const fm_err *err, const char *request_id) {
    json_t *e = json_object();
    json_object_set_new(e, "code", json_string(fm_status_code(err->status)));
    json_object_set_new(e, "message", json_string(err->msg));
    if (err->details) json_object_update(e, err->details);
    if (request_id && *request_id) json_object_set_new(e, "request_id", json_string(request_id));
    return json_pack("{s:o}", "error", e);
}
