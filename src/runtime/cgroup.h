/* cgroup.h - a control group of its own for each worker process.
 *
 * Where the node may create cgroups below its own (cgroup v2 with the
 * memory controller delegated to it, or the v1 memory hierarchy), each
 * worker process gets one, fnmesh-<node pid>-<worker pid>, with
 *   - memory.max (v1: memory.limit_in_bytes) = memory_mb + FM_CGROUP_HEADROOM_MB:
 *     the runtimes' own caps (allocator, heap or RSS watch, address space)
 *     act first with a clear error; the kernel stops a worker whose memory
 *     they cannot see (native allocations, memory touched all at once);
 *   - pids.max = FM_CGROUP_MAX_PIDS (threads count).
 * Where it may not, workers run without (the node logs why, once). Not in
 * sanitizer builds, whose shadow memory and quarantine are resident too.
 * Every function is safe from any thread. See docs/operations.md. */
#ifndef FM_CGROUP_H
#define FM_CGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define FM_CGROUP_HEADROOM_MB 64
#define FM_CGROUP_MAX_PIDS 512

/* Puts process `pid` into a new cgroup of its own limited to
 * memory_mb + FM_CGROUP_HEADROOM_MB. false when the host offers none (or
 * this one could not be made: the worker then runs without). */
bool fm_cgroup_enter(pid_t pid, long memory_mb);

/* After `pid` was reaped: removes its cgroup. True when the kernel killed a
 * process there for going over memory.max (its OOM killer). */
bool fm_cgroup_leave(pid_t pid);

/* "v2 /sys/fs/cgroup/...", "v1 /sys/fs/cgroup/memory/...", or "none: <why>". */
const char *fm_cgroup_describe(void);

#endif
