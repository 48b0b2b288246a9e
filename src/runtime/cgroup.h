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

/* A new, empty cgroup for a worker about to be started, limited for
 * memory_mb (its deployment's, or the default for a worker started ahead
 * of need: fm_cgroup_limit changes it, if need be): its id (> 0), and
 * in env (cap bytes) the environment entry that makes the worker join it
 * as it starts (fm_cgroup_join_self); 0 when the host offers none. Moving
 * a process between cgroups can wait for an RCU grace period (ms): the
 * worker does it at its own start, not the node while a call waits. */
int fm_cgroup_make(long memory_mb, char *env, size_t cap);

/* The worker of cgroup `id` got its deployment: memory.max = memory_mb +
 * FM_CGROUP_HEADROOM_MB (no swap; written only if it differs). false if it
 * could not be set. */
bool fm_cgroup_limit(int id, long memory_mb);

/* After the worker of cgroup `id` was reaped: removes the cgroup (id 0:
 * nothing). True when the kernel killed a process there for memory. */
bool fm_cgroup_release(int id);

/* Worker side, first thing at start: joins the cgroups named by the node. */
void fm_cgroup_join_self(void);

/* "v2 /sys/fs/cgroup/...", "v1 /sys/fs/cgroup/memory/...", or "none: <why>". */
const char *fm_cgroup_describe(void);

#endif
