/* proc.h - running a build tool (esbuild, cc) from the control thread.
 *
 * The tool runs in `cwd` with stdin from /dev/null and stdout+stderr into
 * `log_path`, with default signal handling (the node blocks SIGINT/SIGTERM
 * in its threads, and a child must not inherit that), and is killed when it
 * runs longer than `timeout_ms`. */
#ifndef FM_PROC_H
#define FM_PROC_H

#include "core/status.h"

/* Runs `argv` (argv[0] looked up on PATH). On FM_OK, *wait_status is the
 * tool's wait status. FM_INTERNAL when it cannot be started, FM_TIMEOUT
 * when it was killed at the time limit (err filled either way). */
fm_status fm_run_tool(char *const argv[], const char *cwd, const char *log_path, int timeout_ms,
                      int *wait_status, fm_err *err);

#endif
