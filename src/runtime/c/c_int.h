/* c_int.h - private to the C runtime: the artifact layout and the worker's
 * entry point. The node and its C workers speak the framing of
 * runtime/python/python_int.h.
 *
 * Artifact: "FMC1\n", u32 number of objects, each (u32 len, bundle path of
 * the entry .c file, u32 len, bytes of the shared object compiled from it). */
#ifndef FM_C_INT_H
#define FM_C_INT_H

#define FM_C_MAGIC "FMC1\n"

/* The worker process: `fnmesh worker-c`. Returns the exit code. */
int fm_c_worker_main(void);

#endif
