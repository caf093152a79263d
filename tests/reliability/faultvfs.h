/*
 * Fault injection for tests: an SQLite VFS around the default one whose
 * writes fail on demand.  Installed as the default VFS, so every database the
 * process opens afterwards goes through it.
 */
#ifndef FAULTVFS_H
#define FAULTVFS_H

#include <stdatomic.h>

/* Registers the wrapper as the default VFS (once; later calls only change armed).  While
 * *armed is not 0, xWrite, xSync and xTruncate of every file fail with it (SQLITE_FULL,
 * SQLITE_IOERR_WRITE, …).  armed is borrowed for the life of the process.  0 or an SQLite
 * error code. */
int faultvfs_install(const atomic_int *armed);
/* Writes, syncs and truncations refused so far. */
unsigned long faultvfs_refused(void);

#endif
