/*
 * faultshim.so (tests only, LD_PRELOAD): the fault VFS as SQLite's default, and malloc,
 * calloc and realloc that fail once at the N-th call in the request threads, both armed through
 * the shared control file named by FAULT_CONTROL (faultshim.h).
 */
#include "faultshim.h"

#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
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

/* A crash prints its stack to standard error, which the test shows when the daemon died. */
static void on_crash(int sig)
{
    void *frames[64];
    int n = backtrace(frames, 64);

    backtrace_symbols_fd(frames, n, 2);
    signal(sig, SIG_DFL);
    raise(sig);
}

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
    backtrace(&map, 1); /* loads what backtrace() needs now, not in a crash */
    signal(SIGSEGV, on_crash);
    signal(SIGABRT, on_crash);
    signal(SIGBUS, on_crash);
}

static __thread bool inside; /* this thread is in fail_now() */

/* Whether an allocation from this call stack may fail: its innermost frame in an exported
 * function of libdynflow-core is one of the API's, or there is none. */
static bool failable_here(void)
{
    void *frames[64];
    int n = backtrace(frames, 64);

    for (int i = 1; i < n; i++) {
        const ElfW(Sym) *sym = NULL;
        Dl_info info;
        if (dladdr1(frames[i], &info, (void **)&sym, RTLD_DL_SYMENT) == 0 ||
            info.dli_fname == NULL || strstr(info.dli_fname, "libdynflow-core") == NULL)
            continue;
        if (sym == NULL || info.dli_sname == NULL ||
            (char *)frames[i] >= (char *)info.dli_saddr + sym->st_size)
            continue; /* a function of the library's own, not exported */
        return strncmp(info.dli_sname, "df_api_", 7) == 0;
    }
    return true;
}

static bool counted_thread(void)
{
    char name[17] = "";
    size_t len = strnlen(ctl->thread_prefix, sizeof(ctl->thread_prefix));

    return len == 0 ||
           (prctl(PR_GET_NAME, name) == 0 && strncmp(name, ctl->thread_prefix, len) == 0);
}

/* FAULT_TRACE=file: appends the stack of each failed allocation, to find what mishandled it. */
static void trace_failure(void)
{
    const char *path = getenv("FAULT_TRACE");
    void *frames[64];
    int fd;

    if (path == NULL || (fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600)) < 0)
        return;
    inside = true;
    dprintf(fd, "== allocation failed\n");
    backtrace_symbols_fd(frames, backtrace(frames, 64), fd);
    inside = false;
    close(fd);
}

/* Whether this allocation is the one that fails. */
static bool fail_now(void)
{
    int left;
    bool counted;

    if (ctl == NULL || atomic_load(&ctl->malloc_at) <= 0 || inside)
        return false;
    inside = true;
    counted = counted_thread() && failable_here();
    inside = false;
    if (!counted)
        return false;
    left = atomic_fetch_sub(&ctl->malloc_at, 1);
    if (left != 1) {
        if (left <= 0)
            atomic_store(&ctl->malloc_at, 0);
        return false;
    }
    atomic_fetch_add(&ctl->malloc_failed, 1);
    trace_failure();
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
