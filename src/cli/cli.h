/* cli.h - the fnmesh command-line client (every verb but `serve`).
 *
 * An HTTP client over libcurl that talks to a node's /system/v1 and /fn
 * surfaces. Exit codes: 0 ok, 1 error reported by the server (or the server
 * could not be reached), 2 usage error. */
#ifndef FM_CLI_H
#define FM_CLI_H

/* Runs the verb in argv[1] (argv[0] is the program name). Returns the exit
 * code. `fnmesh serve` is dispatched before this is called. */
int fm_cli_main(int argc, char **argv);

/* `fnmesh dev DIR [serve options]` (argv[0] = "dev"): a node in the
 * foreground with DIR deployed and redeployed on every change. Returns only
 * for usage errors; otherwise exits the process when the node stops. */
int fm_cli_dev_main(int argc, char **argv);

#endif
