/*
 * Fuzz target: the launch checks (dynflow-core/api/check.c) with the script and ssh plugins'
 * own checks (their runner classes' check_input), loaded from SCRIPT_PLUGIN_DIR and
 * SSH_PLUGIN_DIR.  Any body is accepted or refused with a message that names a field and is valid
 * JSON text; nothing is created (the world never starts).
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/check.h"
#include "runner/dispatcher.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static df_world *w;
static struct plugin {
    const char *dir_env, *file, *settings;
    void *handle, *state;
    const struct df_plugin *p;
} plugins[] = {
    {"SCRIPT_PLUGIN_DIR", "script.so",
     "{\"enabled\": true, \"tasks\": [{\"kind\": \"hello\", \"command\": \"/bin/true\"}]}", NULL,
     NULL, NULL},
    {"SSH_PLUGIN_DIR", "ssh.so", "{\"enabled\": true}", NULL, NULL, NULL},
};

static void host_log(void *ctx, int level, const char *fmt, ...)
{
    (void)ctx, (void)level, (void)fmt;
}

static struct df_plugin_host host = {.abi_major = DF_PLUGIN_ABI_MAJOR,
                                     .abi_minor = DF_PLUGIN_ABI_MINOR,
                                     .struct_size = sizeof(host),
                                     .log = host_log};

static void teardown(void)
{
    df_world_free(w);
    for (size_t i = 0; i < sizeof(plugins) / sizeof(plugins[0]); i++) {
        plugins[i].p->shutdown(plugins[i].state);
        dlclose(plugins[i].handle);
    }
}

static void load(struct plugin *pl)
{
    char path[4096];
    df_error err;
    json_t *settings = json_loads(pl->settings, 0, NULL);

    snprintf(path, sizeof(path), "%s/%s", getenv(pl->dir_env) ? getenv(pl->dir_env) : ".",
             pl->file);
    pl->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    pl->p = pl->handle != NULL ? dlsym(pl->handle, DF_PLUGIN_SYMBOL) : NULL;
    if (pl->p == NULL || pl->p->init(&host, settings, &pl->state, &err) < 0) {
        fprintf(stderr, "cannot start the plugin %s (set %s): %s\n", path, pl->dir_env,
                pl->handle != NULL ? err.text : dlerror());
        abort();
    }
    json_decref(settings);
}

static void start(void)
{
    df_error err;

    w = df_world_new(NULL, &err);
    host.world = w;
    df_runner_configure(w, &(struct df_runner_config){0}, &err);
    df_api_register_classes(w, &err);
    for (size_t i = 0; i < sizeof(plugins) / sizeof(plugins[0]); i++)
        load(&plugins[i]);
    atexit(teardown);
}

/* The body's operation checked as the launch would: the batch kind for every plugin operation. */
static int check(const json_t *body, df_error *err)
{
    const char *op = json_string_value(json_object_get(body, "operation"));
    const json_t *input = json_object_get(body, "input");

    if (op != NULL && strcmp(op, "single") == 0)
        return df_check_single(w, input, err);
    for (size_t i = 0; op != NULL && i < sizeof(plugins) / sizeof(plugins[0]); i++)
        for (const struct df_plugin_operation *o = plugins[i].p->operations; o->name; o++)
            if (strcmp(o->name, op) == 0)
                return df_check_batch(w, o->kind, o->action_class, input, err);
    return df_check_batch(w, DF_LAUNCH_GROUP, "Test::Group", input, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *body = json_loadb((const char *)data, size, 0, NULL), *msg;
    df_error err = {{0}};
    int rc;

    if (w == NULL)
        start();
    if (!json_is_object(body)) {
        json_decref(body);
        return 0;
    }
    rc = check(body, &err);
    /* refused: a message that names a field and can go into the 422's JSON */
    msg = rc < 0 ? json_string(err.text) : NULL;
    if ((rc < 0 && rc != -EINVAL) || (rc < 0 && (msg == NULL || strchr(err.text, '\'') == NULL)))
        abort();
    json_decref(msg);
    json_decref(body);
    return 0;
}
