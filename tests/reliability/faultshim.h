/*
 * The control block of faultshim.so, a library LD_PRELOADed into smart-proxyd by the
 * reliability tests: a file (its path in FAULT_CONTROL) that the test and the daemon both map,
 * so that the test arms and disarms faults while the daemon runs.
 */
#ifndef FAULTSHIM_H
#define FAULTSHIM_H

#include <stdatomic.h>

struct fault_control {
    atomic_int write_rc; /* SQLite writes fail with this (SQLITE_FULL, …); 0: none */
    /* The malloc, calloc or realloc that fails, counted down in the threads whose name starts
     * with thread_prefix ("": every thread); 0: none. */
    atomic_int malloc_at;
    atomic_int malloc_failed; /* allocations failed so far */
    char thread_prefix[16];
};

#endif
