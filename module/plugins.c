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
    struct loaded_plugin *v;
    size_t n;
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

/* 0: loaded and started; 1: disabled by its settings; < 0: refused or failed (logged). */
static int load_one(struct df_plugins *ps, df_world *w, const char *path, struct loaded_plugin *lp)
{
    const struct sp_host_api *host = ps->host;
    const void *entry;
    const json_t *settings;
    const char *stem;
    char why[512];
    df_error err = {{0}};

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
    settings = host->settings_of(host->ctx, stem);
    if (!enabled(settings)) {
        host->log(host->ctx, SP_LOG_INFO, "plugin '%s' is disabled (settings.d/%s.yml)",
                  lp->p->name, stem);
        host->unload_object(host->ctx, lp->handle);
        return 1;
    }
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

df_plugins *df_plugins_load(const struct sp_host_api *host, df_world *w, const char *dir)
{
    df_plugins *ps = calloc(1, sizeof(*ps));
    struct dirent **names = NULL;
    int n;

    if (ps == NULL)
        return NULL;
    ps->host = host;
    n = scandir(dir, &names, is_shared_object, alphasort);
    if (n < 0) {
        host->log(host->ctx, SP_LOG_INFO, "no plugins: cannot read :plugin_directory: %s", dir);
        return ps;
    }
    ps->v = calloc((size_t)n + 1, sizeof(*ps->v));
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
        if (ps->v != NULL && load_one(ps, w, path, &ps->v[ps->n]) == 0)
            ps->n++;
        free(names[i]);
    }
    free(names);
    return ps;
}

void df_plugins_publish(df_plugins *ps, df_api *api)
{
    const struct sp_host_api *host = ps->host;

    for (size_t i = 0; i < ps->n; i++) {
        const struct df_plugin *p = ps->v[i].p;
        for (const struct df_plugin_operation *op = p->operations; op && op->name; op++) {
            df_error err;
            if (df_api_register_operation(api, op, &err) < 0)
                host->log(host->ctx, SP_LOG_ERROR, "plugin '%s': %s", p->name, err.text);
        }
        if (p->mount != NULL && p->routes != NULL &&
            host->mount(host->ctx, p->mount, p->routes(ps->v[i].state), ps->v[i].state) < 0)
            host->log(host->ctx, SP_LOG_ERROR, "plugin '%s': cannot mount its routes at %s",
                      p->name, p->mount);
        if (p->feature != NULL && host->add_feature(host->ctx, p->feature, NULL) < 0)
            host->log(host->ctx, SP_LOG_ERROR, "plugin '%s': cannot add feature '%s'", p->name,
                      p->feature);
    }
}

void df_plugins_free(df_plugins *ps)
{
    if (ps == NULL)
        return;
    for (size_t i = ps->n; i-- > 0;) {
        if (ps->v[i].p->shutdown != NULL)
            ps->v[i].p->shutdown(ps->v[i].state);
        ps->host->unload_object(ps->host->ctx, ps->v[i].handle);
    }
    free(ps->v);
    free(ps);
}
