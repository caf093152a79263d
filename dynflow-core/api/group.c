/*
 * The group launcher (reference/protocol.md §6.5, TaskLauncher::AbstractGroup):
 * one parent plan, Proxy::Dynflow::Action::SingleRunnerBatch, whose run phase
 * plans an OutputCollector per input key (the key is its plan id) and one
 * BatchRunner that runs a single group runner for all of them.  When every
 * child ended, the parent collects the outputs and one BatchCallback sends
 * Foreman all results at once (§7.2).
 */
#include <stdlib.h>
#include <string.h>

#include "api/claims.h"
#include "api/launch.h"
#include "callback/callback.h"
#include "runner/dispatcher.h"
#include "util/util.h"

/* The entry action's run step of a collector plan: plan step 1, run step 2 (§6.5). */
#define COLLECTOR_RUN_STEP 2

static int group_plan(df_action *a, json_t *args)
{
    json_t *input_hash = json_object_get(args, "input_hash"), *cb_args;
    df_action *cb;

    if (df_plan_self(a, json_incref(args)) < 0)
        return -1;
    if (!df_world_has_class(df_action_world(a), DF_BATCH_CALLBACK_CLASS))
        return 0; /* no :foreman_url: to call back */
    cb_args = json_pack("{s:O, s:o}", "input_hash", input_hash, "results",
                        df_output_ref(a, "results", (const char *)NULL));
    cb = df_plan_action(a, DF_BATCH_CALLBACK_CLASS, cb_args);
    json_decref(cb_args);
    return cb != NULL ? 0 : -1;
}

/* A host's input: its action_input without the callback, with the Foreman task id, the
 * shared runner's id and where to call back. */
static json_t *collector_input(json_t *entry, const char *runner_id, const char *callback_host)
{
    json_t *in = json_deep_copy(json_object_get(entry, "action_input"));
    const char *task_id;

    if (!json_is_object(in)) {
        json_decref(in);
        in = json_object();
    }
    task_id = json_string_value(json_object_get(json_object_get(in, "callback"), "task_id"));
    if (task_id != NULL)
        json_object_set_new(in, "task_id", json_string(task_id));
    json_object_del(in, "callback");
    json_object_set_new(in, "runner_id", json_string(runner_id));
    json_object_set_new(in, "callback_host", json_string(callback_host ? callback_host : ""));
    return in;
}

static int group_create(df_action *a)
{
    json_t *in = df_action_input(a), *launcher = json_object_get(in, "launcher");
    const char *callback_host = json_string_value(json_object_get(launcher, "callback"));
    json_t *targets = json_object(), *entry;
    char runner_id[DF_UUID_BUF], child[DF_UUID_BUF];
    const char *key;
    bool planned;

    df_uuid_new(runner_id);
    json_object_foreach(json_object_get(in, "input_hash"), key, entry)
    {
        json_t *child_in = collector_input(entry, runner_id, callback_host);
        json_object_set_new(targets, key,
                            json_pack("{s:s, s:i, s:O}", "execution_plan_id", key, "run_step_id",
                                      COLLECTOR_RUN_STEP, "input", child_in));
        if (df_action_trigger_child(a, DF_OUTPUT_COLLECTOR_CLASS, child_in, key, child, &planned) <
            0)
            df_action_error(a, "cannot plan the task for %s", key);
        df_claims_created(df_claims_of(df_action_world(a)), key);
    }
    return df_action_trigger_child(a, DF_BATCH_RUNNER_CLASS,
                                   json_pack("{s:o, s:O?, s:s, s:O?}", "targets", targets,
                                             "operation", json_object_get(launcher, "operation"),
                                             "runner_id", runner_id, "runner_class",
                                             json_object_get(launcher, "action_class")),
                                   NULL, child, &planned);
}

/* SingleRunnerBatch#on_finish: output.results = {key: the host's runner output}. */
static int group_finish(df_action *a)
{
    json_t *results = json_object(), *entry;
    const char *key;

    json_object_foreach(json_object_get(df_action_input(a), "input_hash"), key, entry)
    {
        json_t *plan = df_plan_json(df_action_world(a), key, DF_JSON_ACTIONS);
        json_t *out =
            json_object_get(json_array_get(json_object_get(plan, "actions"), 0), "output");
        if (out != NULL)
            json_object_set(results, key, out);
        json_decref(plan);
    }
    json_object_set_new(df_action_output(a), "results", results);
    return 0;
}

static int group_run(df_action *a, const df_event *ev)
{
    return df_sub_plans_run_collect(a, ev, group_create, group_finish);
}

/* The results went to Foreman; what is left is whether every host succeeded. */
static int group_finalize(df_action *a)
{
    json_object_del(df_action_output(a), "results");
    return df_sub_plans_check(a);
}

const struct df_action_class df_group_launcher_class = {
    .name = DF_GROUP_CLASS,
    .plan = group_plan,
    .run = group_run,
    .finalize = group_finalize,
    .rescue = DF_RESCUE_SKIP,
    .flags =
        DF_ACTION_CANCELLABLE | DF_ACTION_RERUNNABLE, /* children made again: doc/recovery.md */
};
