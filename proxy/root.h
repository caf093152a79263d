/* The proxy's own routes (reference/protocol.md §1.6): /features, /version, /v2/features. */
#ifndef SP_ROOT_H
#define SP_ROOT_H

#include "proxy/module_loader.h"
#include "proxy/settings.h"

struct sp_running_module {
    struct sp_loaded_module lm;
    void *state;
    enum sp_enabled listeners;
    char mount[128];        /* "/dynflow", or "" for a module mounted at / */
    const char *state_name; /* "running", "failed", "disabled" */
};

struct sp_root {
    const struct sp_settings *settings;
    struct sp_running_module *modules;
    size_t n_modules;
};

const struct sp_route *sp_root_routes(void);

#endif
