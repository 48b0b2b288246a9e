/* main.c - the fnmesh binary: one command with verbs.
 *
 * `fnmesh serve` runs a node (src/gateway/server.c); every other verb is the
 * HTTP client in src/cli/. This file only dispatches; all logic lives in the
 * fnmesh_core library that the tests link too. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "gateway/server.h"
#include "runtime/c/c_int.h"
#include "runtime/cgroup.h"
#include "runtime/python/python_int.h"
#include "runtime/runtime.h"

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "serve") == 0)
        return fm_serve_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "dev") == 0) return fm_cli_dev_main(argc - 1, argv + 1);
    /* worker processes, started by a node (not a user command): first into
     * the cgroup the node made for them */
    if (argc == 2 && strncmp(argv[1], "worker-", 7) == 0) fm_cgroup_join_self();
    if (argc == 2 && (strcmp(argv[1], "worker-python") == 0 || strcmp(argv[1], "worker-c") == 0)) {
        int rc = argv[1][7] == 'p' ? fm_python_worker_main() : fm_c_worker_main();
        fm_py_frame_release();
        return rc;
    }
    if (argc == 2 && strncmp(argv[1], "worker-", 7) == 0) { /* JS, Lua, templates isolated */
        int rc = fm_isolated_worker_main(argv[1]);
        if (rc >= 0) return rc;
    }
    return fm_cli_main(argc, argv);
}
