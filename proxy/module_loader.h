/* Loading modules (include/smart-proxy/module.h): every check before any call into the module. */
#ifndef SP_MODULE_LOADER_H
#define SP_MODULE_LOADER_H

#include "proxy/yaml.h"
#include "smart-proxy/module.h"

struct sp_loaded_module {
    char *path;
    void *handle;
    const struct sp_module *m;
};

/* Any loadable object: file checks, dlopen, the entry symbol's header.  0, or a negative
 * errno with err naming the file, the value found and the one expected. */
int sp_object_open(const char *path, const struct sp_abi_expect *expect, void **handle,
                   const void **entry, struct sp_error *err);
/* A module: sp_object_open() and the module's own fields. */
int sp_module_open(const char *path, struct sp_loaded_module *out, struct sp_error *err);
void sp_module_close(struct sp_loaded_module *lm);

#endif
