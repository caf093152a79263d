/* Executor plugins (include/dynflow/plugin.h) loaded by dynflow.so from :plugin_directory:. */
#ifndef DYNFLOW_MODULE_PLUGINS_H
#define DYNFLOW_MODULE_PLUGINS_H

#include "api/api.h"
#include "dynflow/plugin.h"
#include "smart-proxy/module.h"

typedef struct df_plugins df_plugins;

/* Loads and initializes every plugin in dir whose settings enable it; before
 * df_world_start().  A plugin that is refused or fails to start is logged and left out. */
df_plugins *df_plugins_load(const struct sp_host_api *host, df_world *w, const char *dir);
/* Registers the plugins' operations; with routes, their routes and features go to the host
 * (only while the host starts: both are fixed once it serves). */
void df_plugins_publish(df_plugins *ps, df_api *api, bool routes);
/* fn(ud, mount) for each plugin in dir that its settings enable and that has routes, without
 * starting it (forward mode relays those prefixes to the core). */
void df_plugins_prefixes(const struct sp_host_api *host, const char *dir,
                         void (*fn)(void *ud, const char *prefix), void *ud);
/* After the world is freed: shutdown() and dlclose() of each plugin. */
void df_plugins_free(df_plugins *ps);

#endif
