/* The proxy's own routes (reference/protocol.md §1.6): /features, /version, /v2/features. */
#ifndef SP_ROOT_H
#define SP_ROOT_H

#include "proxy/module_loader.h"
#include "proxy/settings.h"

struct sp_root;

struct sp_running_module {
    struct sp_root *root;
    struct sp_loaded_module lm;
    void *state;
    enum sp_enabled listeners;
    char mount[128];        /* "/dynflow", or "" for a module mounted at / */
    const char *state_name; /* "running", "failed", "disabled" */
};

/* A feature a module adds for what it loaded (a dynflow plugin's "script"). */
struct sp_feature {
    char *name;
    char *version; /* for GET /version, or NULL */
    json_t *capabilities;
    const struct sp_running_module *owner; /* its listeners and state */
};

/* Routes a module mounts for what it loaded (a dynflow plugin's /ssh). */
struct sp_extra_mount {
    char prefix[128];
    const struct sp_route *routes;
    void *state;
    const struct sp_running_module *owner; /* its listeners */
};

struct sp_root {
    const struct sp_settings *settings;
    struct sp_running_module *modules;
    size_t n_modules;
    struct sp_feature *features;
    size_t n_features;
    struct sp_extra_mount *mounts;
    size_t n_mounts;
};

/* Host service: adds a feature (version and capabilities borrowed, either may be NULL). */
int sp_root_add_feature(struct sp_root *root, const struct sp_running_module *owner,
                        const char *name, const char *version, const json_t *capabilities);
void sp_root_free_features(struct sp_root *root);
/* Host service: routes under prefix (kept by pointer). */
int sp_root_add_mount(struct sp_root *root, const struct sp_running_module *owner,
                      const char *prefix, const struct sp_route *routes, void *state);

const struct sp_route *sp_root_routes(void);

#endif
