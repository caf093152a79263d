#include "proxy/module_loader.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Modules run with the daemon's rights: only regular files nobody else may change. */
static int check_file(const char *path, struct sp_error *err)
{
    struct stat st;

    if (lstat(path, &st) < 0)
        return sp_fail(err, -errno, "%s: cannot load: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return sp_fail(err, -EPERM, "%s: refused: not a regular file", path);
    if (st.st_mode & S_IWOTH)
        return sp_fail(err, -EPERM, "%s: refused: writable by everyone (mode %04o)", path,
                       (unsigned)(st.st_mode & 07777));
    return 0;
}

/* The file name without directory and ".so". */
static void file_stem(const char *path, char *out, size_t len)
{
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    size_t n = strlen(base);

    if (n > 3 && strcmp(base + n - 3, ".so") == 0)
        n -= 3;
    snprintf(out, len, "%.*s", (int)n, base);
}

/* The entry's header against what the loader expects: magic, ABI version, size, build. */
static int check_header(const char *path, const struct sp_abi_header *h,
                        const struct sp_abi_expect *x, struct sp_error *err)
{
    char stem[256];

    if (h->magic != x->magic)
        return sp_fail(err, -ENOTSUP,
                       "%s: not a %s or from an incompatible release (magic %08x, expected %08x)",
                       path, x->what, h->magic, x->magic);
    if (h->abi_major != x->abi_major || h->abi_minor > x->abi_minor)
        return sp_fail(err, -ENOTSUP,
                       "%s: %s ABI %u.%u, this release supports %u.0-%u.%u; "
                       "rebuild it against this release's headers",
                       path, x->what, h->abi_major, h->abi_minor, x->abi_major, x->abi_major,
                       x->abi_minor);
    if (h->struct_size < x->min_size)
        return sp_fail(err, -EINVAL,
                       "%s: %s data is mangled (struct size %u, expected at least %u)", path,
                       x->what, h->struct_size, x->min_size);
    if (h->build_sig == NULL || strcmp(h->build_sig, x->build_sig) != 0)
        return sp_fail(err, -ENOTSUP, "%s: not binary compatible (built for %s, running %s)", path,
                       h->build_sig ? h->build_sig : "(none)", x->build_sig);
    file_stem(path, stem, sizeof(stem));
    if (h->name == NULL || strcmp(h->name, stem) != 0)
        return sp_fail(err, -EINVAL, "%s: name mismatch (declares '%s', the file stem is '%s')",
                       path, h->name ? h->name : "(none)", stem);
    return 0;
}

int sp_object_open(const char *path, const struct sp_abi_expect *expect, void **handle,
                   const void **entry, struct sp_error *err)
{
    const struct sp_abi_header *h;
    void *dl;
    int rc;

    rc = check_file(path, err);
    if (rc < 0)
        return rc;
    dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL)
        return sp_fail(err, -ENOENT, "%s: cannot load: %s (check its dependencies with ldd)", path,
                       dlerror());
    (void)dlerror();
    h = dlsym(dl, expect->symbol);
    if (h == NULL) {
        rc = sp_fail(err, -ENOENT, "%s: not a %s (no symbol %s)", path, expect->what,
                     expect->symbol);
        goto fail;
    }
    rc = check_header(path, h, expect, err);
    if (rc < 0)
        goto fail;
    *handle = dl;
    *entry = h;
    return 0;
fail:
    dlclose(dl);
    return rc;
}

int sp_module_open(const char *path, struct sp_loaded_module *out, struct sp_error *err)
{
    static const struct sp_abi_expect expect = {
        .what = "smart-proxy module",
        .symbol = SP_MODULE_SYMBOL,
        .magic = SP_MODULE_MAGIC,
        .abi_major = SP_MODULE_ABI_MAJOR,
        .abi_minor = SP_MODULE_ABI_MINOR,
        .min_size = offsetof(struct sp_module, reserved),
        .build_sig = SP_MODULE_BUILD_SIG,
    };
    const void *entry;
    const struct sp_module *m;
    void *h;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = sp_object_open(path, &expect, &h, &entry, err);
    if (rc < 0)
        return rc;
    m = entry;
    if (m->init == NULL || m->routes == NULL || m->shutdown == NULL) {
        dlclose(h);
        return sp_fail(err, -EINVAL, "%s: module data is mangled (init, routes or shutdown unset)",
                       path);
    }
    out->path = strdup(path);
    out->handle = h;
    out->m = m;
    return 0;
}

void sp_module_close(struct sp_loaded_module *lm)
{
    if (lm->handle != NULL)
        dlclose(lm->handle);
    free(lm->path);
    memset(lm, 0, sizeof(*lm));
}
