/* sandbox.h - what a worker process (Python, C functions) may do.
 *
 * A worker enters the sandbox right after it starts, before it loads any
 * function code:
 *   - no_new_privs (nothing it runs can gain privileges);
 *   - a seccomp filter: no new programs (execve), no new processes (fork;
 *     threads are fine), no sockets but AF_UNIX (the network is the node's),
 *     no ptrace, mounts, namespaces, modules, BPF, clocks, reboot, identity
 *     changes; those calls fail with EPERM (sockets: EACCES);
 *   - rlimits: no core dumps, files up to 1 GiB, 1024 descriptors (the
 *     address space is capped separately by memory_mb);
 *   - a private temporary directory (TMPDIR, mode 0700, its own per worker).
 * See docs/operations.md. */
#ifndef FM_SANDBOX_H
#define FM_SANDBOX_H

#include <stddef.h>

/* Enters the sandbox (this process, for good). -1 with the reason in `why`
 * when the kernel refuses: the worker then runs without it and says so. */
int fm_sandbox_enter(char *why, size_t cap);
/* Worker start-up: TMPDIR = `tmpdir` (when not NULL), then the sandbox; a
 * refusal is reported on stderr (the node's log) and the worker goes on. */
void fm_sandbox_or_warn(const char *tmpdir);

#endif
