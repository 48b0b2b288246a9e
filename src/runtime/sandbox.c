/* sandbox.c - what a worker process may do (see sandbox.h). */
#include "runtime/sandbox.h"

#include <errno.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/util.h"

#if defined(__SANITIZE_ADDRESS__)
#define FM_SANITIZED 1 /* LeakSanitizer stops the world with clone + ptrace at exit */
#else
#define FM_SANITIZED 0
#endif

static void cap(int resource, rlim_t value) {
    struct rlimit rl;
    if (getrlimit(resource, &rl) != 0) return;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < value) value = rl.rlim_max;
    rl.rlim_cur = rl.rlim_max = value;
    setrlimit(resource, &rl);
}

/* System calls a function has no business making: they fail with EPERM. */
static const char *const denied[] = {
    "execve", "execveat", "fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "reboot", "kexec_load",
    "kexec_file_load", "init_module", "finit_module", "delete_module", "bpf", "perf_event_open",
    "keyctl", "add_key", "request_key", "userfaultfd", "swapon", "swapoff", "settimeofday",
    "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname", "acct",
    "quotactl", "iopl", "ioperm", "open_by_handle_at", "name_to_handle_at", "lookup_dcookie",
    "fanotify_init", "nfsservctl", "syslog", "mknod", "mknodat", "setuid", "setgid", "setreuid",
    "setregid", "setresuid", "setresgid", "setgroups", "capset",
    /* io_uring can open and connect sockets without the socket call */
    "io_uring_setup", "io_uring_enter", "io_uring_register",
};

int fm_sandbox_enter(char *why, size_t cap_len) {
    /* rlimits: no core dumps, no huge files, a bounded number of descriptors */
    cap(RLIMIT_CORE, 0);
    cap(RLIMIT_FSIZE, (rlim_t)1 << 30);
    cap(RLIMIT_NOFILE, 1024);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        snprintf(why, cap_len, "no_new_privs: %s", strerror(errno));
        return -1;
    }
    scmp_filter_ctx f = seccomp_init(SCMP_ACT_ALLOW);
    if (!f) {
        snprintf(why, cap_len, "seccomp_init failed");
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]) && rc == 0; i++) {
        if (FM_SANITIZED && strcmp(denied[i], "ptrace") == 0) continue;
        int nr = seccomp_syscall_resolve_name(denied[i]);
        if (nr == __NR_SCMP_ERROR) continue; /* not on this architecture */
        rc = seccomp_rule_add(f, SCMP_ACT_ERRNO(EPERM), nr, 0);
    }
    /* threads yes (CLONE_THREAD), a new process no (any clone without it:
     * fork, vfork, posix_spawn); clone3 says ENOSYS so libc falls back to
     * clone. Sanitizer builds: LeakSanitizer's tracer is a CLONE_VM clone */
    if (rc == 0)
        rc = seccomp_rule_add(
            f, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
            SCMP_A0(SCMP_CMP_MASKED_EQ, FM_SANITIZED ? CLONE_THREAD | CLONE_VM : CLONE_THREAD, 0));
    if (rc == 0) rc = seccomp_rule_add(f, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    /* sockets: only AF_UNIX (the node's socket is inherited); no network of its own */
    if (rc == 0)
        rc = seccomp_rule_add(f, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(socket), 1,
                              SCMP_A0(SCMP_CMP_NE, AF_UNIX));
    if (rc == 0)
        rc = seccomp_rule_add(f, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(socketpair), 1,
                              SCMP_A0(SCMP_CMP_NE, AF_UNIX));
    if (rc == 0) rc = seccomp_load(f);
    seccomp_release(f);
    if (rc != 0) {
        snprintf(why, cap_len, "seccomp: %s", strerror(-rc));
        return -1;
    }
    return 0;
}

void fm_sandbox_or_warn(const char *tmpdir) {
    if (tmpdir) setenv("TMPDIR", tmpdir, 1);
    char why[256];
    if (fm_sandbox_enter(why, sizeof(why)) != 0)
        fprintf(stderr,
                "{\"level\":\"warn\",\"msg\":\"worker %d runs without its sandbox: %s\"}\n",
                (int)getpid(), why);
}
