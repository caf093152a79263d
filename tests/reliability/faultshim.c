/*
 * faultshim.so (tests only, LD_PRELOAD): the fault VFS as SQLite's default, and malloc,
 * calloc and realloc that fail once at the N-th call in the request threads, both armed through
 * the shared control file named by FAULT_CONTROL (faultshim.h).
 */
#include "faultshim.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "faultvfs.h"

/* glibc's allocator under its internal names */
void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t n);

static struct fault_control *ctl;

__attribute__((constructor)) static void faultshim_init(void)
{
    const char *path = getenv("FAULT_CONTROL");
    int fd = path != NULL ? open(path, O_RDWR | O_CLOEXEC) : -1;
    void *map;

    if (fd < 0)
        return;
    map = mmap(NULL, sizeof(*ctl), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return;
    ctl = map;
    faultvfs_install(&ctl->write_rc);
}

static bool counted_thread(void)
{
    char name[17] = "";
    size_t len = strnlen(ctl->thread_prefix, sizeof(ctl->thread_prefix));

    return len == 0 ||
           (prctl(PR_GET_NAME, name) == 0 && strncmp(name, ctl->thread_prefix, len) == 0);
}

/* Whether this allocation is the one that fails. */
static bool fail_now(void)
{
    int left;

    if (ctl == NULL || atomic_load(&ctl->malloc_at) <= 0 || !counted_thread())
        return false;
    left = atomic_fetch_sub(&ctl->malloc_at, 1);
    if (left != 1) {
        if (left <= 0)
            atomic_store(&ctl->malloc_at, 0);
        return false;
    }
    atomic_fetch_add(&ctl->malloc_failed, 1);
    errno = ENOMEM;
    return true;
}

void *malloc(size_t n)
{
    return fail_now() ? NULL : __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    return fail_now() ? NULL : __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    return fail_now() ? NULL : __libc_realloc(p, n);
}
