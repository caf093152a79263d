/*
 * The script plugin's entry: settings.d/script.yml gives the task kinds;
 * operation "script" launches one task per input key (batch, §6.4) with
 * input {"action_input": {"kind": …, "input": {…}, "callback": {…}}}.
 */
#include <stdlib.h>

#include "script.h"

static const char *const aliases[] = {"Proxy::Script::RunScript", NULL};

static void script_shutdown(void *state)
{
    struct script_plugin *sp = state;

    if (sp == NULL)
        return;
    script_kinds_free(sp);
    free(sp);
}

static int script_init(const struct df_plugin_host *host, const json_t *settings, void **state,
                       df_error *err)
{
    struct script_plugin *sp = calloc(1, sizeof(*sp));

    if (sp == NULL)
        abort();
    sp->host = host;
    sp->cls = (struct df_runner_class){.name = SCRIPT_ACTION,
                                       .aliases = aliases,
                                       .ops = &script_runner_ops,
                                       .check_input = script_check_input,
                                       .data = sp};
    if (script_kinds_load(sp, settings, err) < 0 ||
        df_runner_register(host->world, &sp->cls, err) < 0) {
        script_shutdown(sp);
        return -1;
    }
    host->log(host->ctx, DF_LOG_INFO, "%zu task kinds", sp->n_kinds);
    *state = sp;
    return 0;
}

static const struct df_plugin_operation operations[] = {
    {"script", DF_LAUNCH_BATCH, SCRIPT_ACTION},
    {NULL, 0, NULL},
};

DF_PLUGIN_DECLARE(.name = "script", .version = "0.1.0", .init = script_init,
                  .shutdown = script_shutdown, .operations = operations);
