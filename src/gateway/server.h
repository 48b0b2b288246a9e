/* server.h - `fnmesh serve`: a node.
 *
 * Owns the process-wide pieces (store, registry, executor, control thread)
 * and the I/O threads that run h2o. See server.c for the request flow. */
#ifndef FM_SERVER_H
#define FM_SERVER_H

#include <stddef.h>

/* Entry point of `fnmesh serve` (argv[0] is "serve"). Returns the exit code. */
int fm_serve_main(int argc, char **argv);

#endif
