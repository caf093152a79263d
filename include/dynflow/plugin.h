/*
 * The ABI between the dynflow executor and its plugins (ssh, ansible, salt,
 * script …).
 *
 * A plugin is a shared object in :plugin_directory: that exports one data
 * symbol, df_plugin_entry, declared with DF_PLUGIN_DECLARE().  The executor
 * checks the magic number, the ABI version (same major, plugin minor <= ours),
 * the struct size and the build signature before it calls anything, and loads
 * the plugin only when settings.d/<settings>.yml says ":enabled: true" (or
 * http/https).  The plugin links libdynflow-core for the engine and runner
 * API (dynflow.h, runner.h); host services that depend on where the executor
 * runs reach it as the function table passed to init().
 *
 * ABI changelog (newest first):
 *   1.1  a runner class's check_input (runner.h) also runs at launch, on the HTTP threads,
 *        for every task before any is created (doc/api-input.md)
 *   1.0  first release
 */
#ifndef DYNFLOW_PLUGIN_H
#define DYNFLOW_PLUGIN_H

#include <jansson.h>
#include <stdint.h>

#include "dynflow/dynflow.h"
#include "dynflow/runner.h"
#include "smart-proxy/module.h"

#define DF_PLUGIN_MAGIC     0x44465031u /* "DFP1" */
#define DF_PLUGIN_ABI_MAJOR 1u
#define DF_PLUGIN_ABI_MINOR 1u
#define DF_PLUGIN_SYMBOL    "df_plugin_entry"
#define DF_STR_(x)          #x
#define DF_STR(x)           DF_STR_(x)
/* json_t and the engine's structs cross this boundary. */
#define DF_PLUGIN_BUILD_SIG                                                                        \
    "jansson" DF_STR(JANSSON_MAJOR_VERSION) ",ptr" DF_STR(__SIZEOF_POINTER__) ",dynflow1"

/* How POST /dynflow/tasks/launch turns an operation's input into plans (§6). */
enum df_launcher_kind {
    DF_LAUNCH_SINGLE, /* one plan of input.action_class */
    DF_LAUNCH_BATCH,  /* a parent plan; one child per input key, the key as its plan id */
    DF_LAUNCH_GROUP,  /* a parent plan, one child per key and one runner for all of them */
};

struct df_plugin_operation {
    const char *name; /* NULL ends a table */
    enum df_launcher_kind kind;
    const char
        *action_class; /* for entries without "action_class" (batch) or every entry (group) */
};

/* Services of the executor that loads the plugin. */
struct df_plugin_host {
    uint16_t abi_major, abi_minor;
    uint32_t struct_size;
    void *ctx;
    df_world *world;
    void (*log)(void *ctx, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
    const json_t *global_settings; /* borrowed: the proxy's settings.yml */
};

/* The first seven fields are laid out as smart-proxy's struct sp_abi_header. */
struct df_plugin {
    uint32_t magic;
    uint16_t abi_major, abi_minor;
    uint32_t struct_size; /* sizeof(struct df_plugin) as the plugin saw it */
    const char *name;     /* == file stem */
    const char *version;
    const char *build_sig; /* DF_PLUGIN_BUILD_SIG */
    const char *settings;  /* settings.d stem it reads ("remote_execution_ssh"); NULL: name */
    const char *feature;   /* optional: the feature it adds to /features */
    /* settings: borrowed, settings.d/<settings>.yml.  Registers the plugin's runner
     * classes and action classes with host->world.  0 or -1 with err filled. */
    int (*init)(const struct df_plugin_host *host, const json_t *settings, void **state,
                df_error *err);
    void (*shutdown)(void *state); /* after the world stopped; frees what init allocated */
    const struct df_plugin_operation *operations; /* { NULL }-terminated, may be NULL */
    /* Optional: HTTP routes of the plugin (the host's struct sp_route) under mount ("/ssh"),
     * on the listeners of the module that loaded it; handlers get the plugin's state. */
    const char *mount;
    const struct sp_route *(*routes)(void *state);
    uintptr_t reserved[4];
};

#define DF_PLUGIN_DECLARE(...)                                                                     \
    __attribute__((visibility("default")))                                                         \
    const struct df_plugin df_plugin_entry = {.magic = DF_PLUGIN_MAGIC,                            \
                                              .abi_major = DF_PLUGIN_ABI_MAJOR,                    \
                                              .abi_minor = DF_PLUGIN_ABI_MINOR,                    \
                                              .struct_size = sizeof(struct df_plugin),             \
                                              .build_sig = DF_PLUGIN_BUILD_SIG,                    \
                                              __VA_ARGS__}

#endif
