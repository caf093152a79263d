#include "plugins.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct loaded_plugin {
    void *handle;
    const struct df_plugin *p;
    void *state;
    struct df_plugin_host host;
    struct df_plugins *owner;
};

struct df_plugins {
    const struct sp_host_api *host;
    struct loaded_plugin **v; /* each apart: its address is the plugin's host ctx */
    size_t n, cap;
};

static const struct sp_abi_expect plugin_abi = {
    .what = "dynflow plugin",
    .symbol = DF_PLUGIN_SYMBOL,
    .magic = DF_PLUGIN_MAGIC,
    .abi_major = DF_PLUGIN_ABI_MAJOR,
    .abi_minor = DF_PLUGIN_ABI_MINOR,
    .min_size = offsetof(struct df_plugin, reserved),
    .build_sig = DF_PLUGIN_BUILD_SIG,
};

/* The plugins' log: the host's, with the plugin's name in front. */
static void plugin_log(void *ctx, int level, const char *fmt, ...)
{
    const struct loaded_plugin *lp = ctx;
    const struct sp_host_api *host = lp->owner->host;
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    host->log(host->ctx, level, "plugin '%s': %s", lp->p->name, msg);
}

static bool enabled(const json_t *settings)
{
    json_t *v = json_object_get(settings, "enabled");
    const char *s = json_string_value(v);

    return json_is_true(v) || (s != NULL && (strcmp(s, "http") == 0 || strcmp(s, "https") == 0));
}

/* 0: opened and enabled by its settings; 1: disabled (closed again); < 0: refused (logged). */
static int open_enabled(struct df_plugins *ps, const char *path, struct loaded_plugin *lp,
                        const json_t **settings)
{
    const struct sp_host_api *host = ps->host;
    const void *entry;
    const char *stem;
    char why[512];

    if (host->load_object(host->ctx, path, &plugin_abi, &lp->handle, &entry, why, sizeof(why)) <
        0) {
        host->log(host->ctx, SP_LOG_ERROR, "%s", why);
        return -1;
    }
    lp->p = entry;
    lp->owner = ps;
    if (lp->p->init == NULL) {
        host->log(host->ctx, SP_LOG_ERROR, "%s: dynflow plugin data is mangled (init unset)", path);
        host->unload_object(host->ctx, lp->handle);
        return -1;
    }
    stem = lp->p->settings != NULL ? lp->p->settings : lp->p->name;
    *settings = host->settings_of(host->ctx, stem);
    if (!enabled(*settings)) {
        host->log(host->ctx, SP_LOG_INFO, "plugin '%s' is disabled (settings.d/%s.yml)",
                  lp->p->name, stem);
        host->unload_object(host->ctx, lp->handle);
        return 1;
    }
    return 0;
}

/* 0: loaded and started; 1: disabled by its settings; < 0: refused or failed (logged). */
static int load_one(struct df_plugins *ps, df_world *w, const char *path, struct loaded_plugin *lp)
{
    const struct sp_host_api *host = ps->host;
    const json_t *settings;
    df_error err = {{0}};
    int rc = open_enabled(ps, path, lp, &settings);

    if (rc != 0)
        return rc;
    lp->host = (struct df_plugin_host){.abi_major = DF_PLUGIN_ABI_MAJOR,
                                       .abi_minor = DF_PLUGIN_ABI_MINOR,
                                       .struct_size = sizeof(lp->host),
                                       .ctx = lp,
                                       .world = w,
                                       .log = plugin_log,
                                       .global_settings = host->global_settings};
    if (lp->p->init(&lp->host, settings, &lp->state, &err) < 0) {
        host->log(host->ctx, SP_LOG_ERROR, "plugin '%s' (%s) failed to start: %s", lp->p->name,
                  path, err.text);
        host->unload_object(host->ctx, lp->handle);
        return -1;
    }
    host->log(host->ctx, SP_LOG_INFO, "plugin '%s' %s loaded from %s", lp->p->name,
              lp->p->version ? lp->p->version : "", path);
    return 0;
}

static int is_shared_object(const struct dirent *e)
{
    size_t n = strlen(e->d_name);

    return n > 3 && strcmp(e->d_name + n - 3, ".so") == 0;
}

/* fn(ps, path, ud) for each shared object in dir, in name order; how many returned 0. */
static size_t each_object(df_plugins *ps, const char *dir,
                          int (*fn)(df_plugins *ps, const char *path, void *ud), void *ud)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, is_shared_object, alphasort);
    size_t ok = 0;

    if (n < 0) {
        ps->host->log(ps->host->ctx, SP_LOG_INFO, "no plugins: cannot read :plugin_directory: %s",
                      dir);
        return 0;
    }
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
        if (fn(ps, path, ud) == 0)
            ok++;
        free(names[i]);
    }
    free(names);
    return ok;
}

static int load_next(df_plugins *ps, const char *path, void *w)
{
    struct loaded_plugin *lp = calloc(1, sizeof(*lp));

    if (lp == NULL)
        return -1;
    if (ps->n == ps->cap) {
        struct loaded_plugin **v = realloc(ps->v, (ps->cap * 2 + 4) * sizeof(*v));
        if (v == NULL) {
            free(lp);
            return -1;
        }
        ps->v = v;
        ps->cap = ps->cap * 2 + 4;
    }
    if (load_one(ps, w, path, lp) != 0) {
        free(lp);
        return -1;
    }
    ps->v[ps->n++] = lp;
    return 0;
}

df_plugins *df_plugins_load(const struct sp_host_api *host, df_world *w, const char *dir)
{
    df_plugins *ps = calloc(1, sizeof(*ps));

    if (ps == NULL)
        return NULL;
    ps->host = host;
    each_object(ps, dir, load_next, w);
    return ps;
}

struct prefix_walk {
    void (*fn)(void *ud, const char *prefix);
    void *ud;
};

/* The mount point of an enabled plugin, which stays closed. */
static int tell_prefix(df_plugins *ps, const char *path, void *ud)
{
    struct prefix_walk *walk = ud;
    struct loaded_plugin lp = {0};
    const json_t *settings;

    if (open_enabled(ps, path, &lp, &settings) != 0)
        return -1;
    if (lp.p->mount != NULL && lp.p->routes != NULL)
        walk->fn(walk->ud, lp.p->mount);
    ps->host->unload_object(ps->host->ctx, lp.handle);
    return 0;
}

void df_plugins_prefixes(const struct sp_host_api *host, const char *dir,
                         void (*fn)(void *ud, const char *prefix), void *ud)
{
    df_plugins ps = {.host = host};

    each_object(&ps, dir, tell_prefix, &(struct prefix_walk){fn, ud});
}

void df_plugins_publish(df_plugins *ps, df_api *api, bool routes)
{
    const struct sp_host_api *host = ps->host;

    for (size_t i = 0; i < ps->n; i++) {
        const struct df_plugin *p = ps->v[i]->p;
        for (const struct df_plugin_operation *op = p->operations; op && op->name; op++) {
            df_error err;
            if (df_api_register_operation(api, op, &err) < 0)
                host->log(host->ctx, SP_LOG_ERROR, "plugin '%s': %s", p->name, err.text);
        }
        if (!routes)
            continue;
        if (p->mount != NULL && p->routes != NULL &&
            host->mount(host->ctx, p->mount, p->routes(ps->v[i]->state), ps->v[i]->state) < 0)
            host->log(host->ctx, SP_LOG_ERROR, "plugin '%s': cannot mount its routes at %s",
                      p->name, p->mount);
        if (p->feature != NULL &&
            host->add_versioned_feature(host->ctx, p->feature, p->version, NULL) < 0)
            host->log(host->ctx, SP_LOG_ERROR, "plugin '%s': cannot add feature '%s'", p->name,
                      p->feature);
    }
}

void df_plugins_free(df_plugins *ps)
{
    if (ps == NULL)
        return;
    for (size_t i = ps->n; i-- > 0;) {
        if (ps->v[i]->p->shutdown != NULL)
            ps->v[i]->p->shutdown(ps->v[i]->state);
        ps->host->unload_object(ps->host->ctx, ps->v[i]->handle);
        free(ps->v[i]);
    }
    free(ps->v);
    free(ps);
}
