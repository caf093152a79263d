/*
 * A dynflow plugin for make check only: a trivial action, a runner that
 * publishes its input, a group runner, batch and group operations, a feature.  Built again with
 * -D flags that break one ABI rule each (see tests/plugins/Makefile.inc).
 */
#include <stdlib.h>
#include <string.h>

#include "dynflow/plugin.h"

#ifndef FIXTURE_NAME
#define FIXTURE_NAME "testplug"
#endif
#ifndef FIXTURE_MAGIC
#define FIXTURE_MAGIC DF_PLUGIN_MAGIC
#endif
#ifndef FIXTURE_MAJOR
#define FIXTURE_MAJOR DF_PLUGIN_ABI_MAJOR
#endif

/* Test::Trivial: plans itself, runs, says so. */
static int trivial_run(df_action *a, const df_event *ev)
{
    (void)ev;
    json_object_set_new(df_action_output(a), "ok", json_true());
    return 0;
}

static const struct df_action_class trivial = {.name = "Test::Trivial", .run = trivial_run};

/* Test::Echo: input {"text": "…", "exit": n, "stay": bool}: publishes text on stdout, then exits
 * with n (0) unless it stays until it is cancelled. */
static int echo_start(df_runner *r)
{
    const json_t *in = df_runner_input(r);
    const char *text = json_string_value(json_object_get(in, "text"));

    if (text != NULL)
        df_runner_publish(r, "stdout", text, strlen(text));
    if (!json_is_true(json_object_get(in, "stay")))
        df_runner_exit(r, (int)json_integer_value(json_object_get(in, "exit")));
    return 0;
}

static void echo_kill(df_runner *r)
{
    df_runner_exit(r, 143);
}

static const struct df_runner_ops echo_ops = {.start = echo_start, .kill = echo_kill};
static const char *const echo_aliases[] = {"Test::EchoAlias", NULL};
static const struct df_runner_class echo = {
    .name = "Test::Echo", .aliases = echo_aliases, .ops = &echo_ops};

/* Test::Group: a group runner; each target gets "hello <its input.text>" and its input.exit,
 * then everyone "done". */
static int group_start(df_runner *r)
{
    const json_t *targets = json_object_get(df_runner_input(r), "targets");

    for (size_t i = 0; i < df_runner_target_count(r); i++) {
        const char *key = df_runner_target(r, i);
        const json_t *in = json_object_get(json_object_get(targets, key), "input");
        const char *text = json_string_value(json_object_get(in, "text"));
        char line[256];
        int n = snprintf(line, sizeof(line), "hello %s", text != NULL ? text : "");
        df_runner_publish_for(r, key, "stdout", line, (size_t)n);
        df_runner_exit_for(r, key, (int)json_integer_value(json_object_get(in, "exit")));
    }
    df_runner_broadcast(r, "debug", "done");
    df_runner_exit(r, 0);
    return 0;
}

static const struct df_runner_ops group_ops = {.start = group_start};
static const struct df_runner_class group = {.name = "Test::Group", .ops = &group_ops};

static int testplug_init(const struct df_plugin_host *host, const json_t *settings, void **state,
                         df_error *err)
{
    (void)settings;
    *state = NULL;
    host->log(host->ctx, DF_LOG_INFO, "test plugin starting");
    if (df_world_register(host->world, &trivial, err) < 0 ||
        df_runner_register(host->world, &echo, err) < 0 ||
        df_runner_register(host->world, &group, err) < 0)
        return -1;
    return 0;
}

/* GET /testplug/hello: a plugin route, authorized by the host like any other. */
static int hello(void *state, const struct sp_request *req, struct sp_response *res)
{
    (void)state, (void)req;
    res->status = 200;
    res->body = strdup("{\"hello\":\"plugin\"}");
    res->body_len = strlen(res->body);
    res->free_body = free;
    return 0;
}

static const struct sp_route *testplug_routes(void *state)
{
    static const struct sp_route routes[] = {
        {"GET", "/hello", hello, SP_AUTH_ANY},
        {NULL, NULL, NULL, 0},
    };

    (void)state;
    return routes;
}

static const struct df_plugin_operation operations[] = {
    {"test_batch", DF_LAUNCH_BATCH, "Test::Echo"},
    {"test_group", DF_LAUNCH_GROUP, "Test::Group"},
    {NULL, 0, NULL},
};

#ifndef FIXTURE_NO_ENTRY
__attribute__((visibility("default"))) const struct df_plugin df_plugin_entry = {
    .magic = FIXTURE_MAGIC,
    .abi_major = FIXTURE_MAJOR,
    .abi_minor = DF_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(struct df_plugin),
    .name = FIXTURE_NAME,
    .version = "1.2.3",
    .build_sig = DF_PLUGIN_BUILD_SIG,
    .settings = "testplug",
    .feature = "testplug_feature",
    .init = testplug_init,
    .operations = operations,
    .mount = "/testplug",
    .routes = testplug_routes,
};
#endif
