/* proc.c - running build tools (see proc.h). */
#include "core/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/util.h"

extern char **environ;

fm_status fm_run_tool(char *const argv[], const char *cwd, const char *log_path, int timeout_ms,
                      int *wait_status, fm_err *err) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addchdir_np(&fa, cwd);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    sigset_t none, defs;
    sigemptyset(&none);
    sigemptyset(&defs);
    sigaddset(&defs, SIGINT);
    sigaddset(&defs, SIGTERM);
    sigaddset(&defs, SIGPIPE);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &defs);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (rc != 0) return fm_err_set(err, FM_INTERNAL, "cannot run %s: %s", argv[0], strerror(rc));
    int64_t give_up = fm_mono_ms() + timeout_ms;
    for (;;) {
        pid_t r = waitpid(pid, wait_status, WNOHANG);
        if (r == pid) return FM_OK;
        if (r < 0 && errno != EINTR) return fm_err_set(err, FM_INTERNAL, "waitpid: %s", strerror(errno));
        if (fm_mono_ms() > give_up) {
            kill(pid, SIGKILL);
            while (waitpid(pid, wait_status, 0) < 0 && errno == EINTR) {
            }
            return fm_err_set(err, FM_TIMEOUT, "%s took longer than %d s", argv[0],
                              timeout_ms / 1000);
        }
        usleep(2000);
    }
}
