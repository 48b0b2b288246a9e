/* runtime.c - the table of runtimes (see runtime.h). */
#include "runtime/runtime.h"

#include <stdlib.h>
#include <string.h>

extern const fm_runtime fm_runtime_js;
extern const fm_runtime fm_runtime_template;
extern const fm_runtime fm_runtime_python;
extern const fm_runtime fm_runtime_lua;
extern const fm_runtime fm_runtime_c;
extern const fm_runtime fm_runtime_js_isolated;
extern const fm_runtime fm_runtime_lua_isolated;
extern const fm_runtime fm_runtime_template_isolated;

/* One line per runtime. */
const fm_runtime *const fm_runtimes[] = {
    &fm_runtime_js,
    &fm_runtime_template,
    &fm_runtime_python,
    &fm_runtime_lua,
    &fm_runtime_c,
    &fm_runtime_js_isolated,
    &fm_runtime_lua_isolated,
    &fm_runtime_template_isolated,
};
const size_t fm_runtime_count = sizeof(fm_runtimes) / sizeof(fm_runtimes[0]);

const fm_runtime *fm_runtime_for_path(const char *path) {
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash)) return NULL;
    for (size_t i = 0; i < fm_runtime_count; i++)
        for (const char *const *e = fm_runtimes[i]->extensions; *e; e++)
            if (strcmp(dot, *e) == 0) return fm_runtimes[i];
    return NULL;
}

int fm_runtime_index(const fm_runtime *rt) {
    for (size_t i = 0; i < fm_runtime_count; i++)
        if (fm_runtimes[i] == rt) return (int)i;
    return -1;
}

void fm_exports_free(fm_export *e, size_t n) {
    if (!e) return;
    for (size_t i = 0; i < n; i++) {
        free(e[i].name);
        free(e[i].file);
        json_decref(e[i].params);
    }
    free(e);
}
