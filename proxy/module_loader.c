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

static int check_module(const char *path, const struct sp_module *m, struct sp_error *err)
{
    char stem[256];

    if (m->magic != SP_MODULE_MAGIC)
        return sp_fail(err, -ENOTSUP,
                       "%s: not a smart-proxy module or from an incompatible release "
                       "(magic %08x, expected %08x)",
                       path, m->magic, SP_MODULE_MAGIC);
    if (m->abi_major != SP_MODULE_ABI_MAJOR || m->abi_minor > SP_MODULE_ABI_MINOR)
        return sp_fail(err, -ENOTSUP,
                       "%s: module ABI %u.%u, this smart-proxyd supports %u.0-%u.%u; "
                       "rebuild it against this release's headers",
                       path, m->abi_major, m->abi_minor, SP_MODULE_ABI_MAJOR, SP_MODULE_ABI_MAJOR,
                       SP_MODULE_ABI_MINOR);
    if (m->struct_size < offsetof(struct sp_module, reserved) || m->init == NULL ||
        m->routes == NULL || m->shutdown == NULL)
        return sp_fail(err, -EINVAL,
                       "%s: module data is mangled (struct size %u, expected at least %zu, "
                       "init, routes and shutdown set)",
                       path, m->struct_size, offsetof(struct sp_module, reserved));
    if (m->build_sig == NULL || strcmp(m->build_sig, SP_MODULE_BUILD_SIG) != 0)
        return sp_fail(err, -ENOTSUP, "%s: not binary compatible (built for %s, running %s)", path,
                       m->build_sig ? m->build_sig : "(none)", SP_MODULE_BUILD_SIG);
    file_stem(path, stem, sizeof(stem));
    if (m->name == NULL || strcmp(m->name, stem) != 0)
        return sp_fail(err, -EINVAL, "%s: name mismatch (declares '%s', the file stem is '%s')",
                       path, m->name ? m->name : "(none)", stem);
    return 0;
}

int sp_module_open(const char *path, struct sp_loaded_module *out, struct sp_error *err)
{
    const struct sp_module *m;
    void *h;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = check_file(path, err);
    if (rc < 0)
        return rc;
    h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL)
        return sp_fail(err, -ENOENT, "%s: cannot load: %s (check its dependencies with ldd)", path,
                       dlerror());
    (void)dlerror();
    m = dlsym(h, SP_MODULE_SYMBOL);
    if (m == NULL) {
        rc = sp_fail(err, -ENOENT, "%s: not a smart-proxy module (no symbol %s)", path,
                     SP_MODULE_SYMBOL);
        goto fail;
    }
    rc = check_module(path, m, err);
    if (rc < 0)
        goto fail;
    out->path = strdup(path);
    out->handle = h;
    out->m = m;
    return 0;
fail:
    dlclose(h);
    return rc;
}

void sp_module_close(struct sp_loaded_module *lm)
{
    if (lm->handle != NULL)
        dlclose(lm->handle);
    free(lm->path);
    memset(lm, 0, sizeof(*lm));
}
