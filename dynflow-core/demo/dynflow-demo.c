/*
 * dynflow-demo: triggers a few plans on an in-memory engine and prints their
 * status JSON, as GET /dynflow/tasks/:id/status will.
 */
#include <stdio.h>
#include <stdlib.h>

#include "dynflow/dynflow.h"

static int greet_run(df_action *a, const df_event *ev)
{
    const char *name = json_string_value(json_object_get(df_action_input(a), "name"));

    (void)ev;
    json_object_set_new(df_action_output(a), "greeting",
                        json_sprintf("hello, %s", name ? name : "world"));
    return 0;
}

static int shout_run(df_action *a, const df_event *ev)
{
    const char *text = json_string_value(json_object_get(df_action_input(a), "text"));

    (void)ev;
    json_object_set_new(df_action_output(a), "shouted", json_sprintf("%s!", text ? text : ""));
    return 0;
}

/* Greets, then shouts the greeting: the output reference orders the two. */
static int pipeline_plan(df_action *a, json_t *args)
{
    df_action *greet = df_plan_action(a, "Demo::Greet", args), *shout;
    json_t *input;

    if (greet == NULL)
        return -1;
    input = json_pack("{s:o}", "text", df_output_ref(greet, "greeting", NULL));
    shout = df_plan_action(a, "Demo::Shout", input);
    json_decref(input);
    return shout != NULL ? df_plan_self(a, json_object()) : -1;
}

static int fail_run(df_action *a, const df_event *ev)
{
    (void)ev;
    return df_action_error(a, "the demo action fails on purpose");
}

static int child_create(df_action *a)
{
    for (int i = 0; i < 3; i++) {
        char id[DF_UUID_BUF];
        bool planned;
        df_action_trigger_child(a, "Demo::Greet", json_pack("{s:s}", "name", "child"), NULL, id,
                                &planned);
    }
    return 0;
}

static int parent_run(df_action *a, const df_event *ev)
{
    return df_sub_plans_run(a, ev, child_create);
}

static const struct df_action_class classes[] = {
    {.name = "Demo::Greet", .run = greet_run},         {.name = "Demo::Shout", .run = shout_run},
    {.name = "Demo::Pipeline", .plan = pipeline_plan}, {.name = "Demo::Fail", .run = fail_run},
    {.name = "Demo::Parent", .run = parent_run},
};

static void show(df_world *w, const char *cls, json_t *args)
{
    char id[DF_UUID_BUF];
    struct df_plan_info info;
    bool planned;
    df_error err;
    json_t *status;

    if (df_trigger(w, cls, args, NULL, id, &planned, &err) < 0) {
        fprintf(stderr, "dynflow-demo: triggering %s failed: %s\n", cls, err.text);
        return;
    }
    df_plan_wait(w, id, 10, &info);
    status = df_plan_json(w, id, DF_JSON_ACTIONS);
    printf("# %s: %s/%s\n", cls, df_plan_state_name(info.state), df_result_name(info.result));
    json_dumpf(status, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    putchar('\n');
    json_decref(status);
}

int main(void)
{
    df_error err;
    df_world *w = df_world_new(NULL, &err);

    for (size_t i = 0; w != NULL && i < sizeof(classes) / sizeof(classes[0]); i++)
        if (df_world_register(w, &classes[i], &err) < 0)
            goto fail;
    if (w == NULL || df_world_start(w, &err) < 0)
        goto fail;
    show(w, "Demo::Pipeline", json_pack("{s:s}", "name", "Foreman"));
    show(w, "Demo::Fail", json_object());
    show(w, "Demo::Parent", json_object());
    df_world_free(w);
    return 0;
fail:
    fprintf(stderr, "dynflow-demo: cannot start the engine: %s\n", err.text);
    df_world_free(w);
    return 1;
}
