/*
 * The runner action (reference/protocol.md §8.5, §6.8): planned as a
 * Shareable action (the callback is planned after it, on its output), its
 * run step starts the runner and stays suspended; Runner::Update events
 * append output chunks until the exit status ends the step (the chunks are
 * kept: output.result is presented from them, doc/output.md); Cancel kills,
 * Poll refreshes, external events go to the runner.  Finalize fails with
 * "Script execution failed" unless the exit status is 0.
 *
 * Group runs (§6.5) use two variants that start differently: an
 * OutputCollector per host only waits for what the shared runner sends it,
 * and one BatchRunner starts the group runner for all of them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "callback/callback.h"
#include "runner/internal.h"
#include "util/util.h"

#define RESTARTED_MESSAGE                                                                          \
    "The proxy restarted while the job was running: the job was not started again and its "        \
    "outcome is unknown"

/* What df_action_class(a)->data points to. */
struct runner_action {
    struct df_action_class ac;
    const struct df_runner_class *cls; /* NULL for the group variants */
    int (*start)(df_action *a);
};

static const struct runner_action *runner_action(df_action *a)
{
    return df_action_class(a)->data;
}

/* Action::Shareable#plan: the callback leaves the input and becomes an action of its own. */
static int runner_plan(df_action *a, json_t *args)
{
    const struct df_runner_class *cls = runner_action(a)->cls;
    json_t *input = json_deep_copy(args),
           *callback = json_incref(json_object_get(input, "callback"));
    const char *task_id = json_string_value(json_object_get(callback, "task_id"));
    df_error err;
    int rc = 0;

    if (cls != NULL && cls->check_input != NULL && cls->check_input(cls, input, &err) < 0) {
        json_decref(input);
        json_decref(callback);
        return df_action_error(a, "%s", err.text);
    }
    json_object_del(input, "callback");
    if (!json_is_string(json_object_get(input, "task_id"))) {
        char uuid[DF_UUID_BUF];
        if (task_id == NULL)
            df_uuid_new(uuid);
        json_object_set_new(input, "task_id", json_string(task_id != NULL ? task_id : uuid));
    }
    df_plan_self(a, input);
    if (json_is_object(callback)) {
        json_t *cb_args = json_pack("{s:O, s:o}", "callback", callback, "data",
                                    df_output_ref(a, (const char *)NULL));
        rc = df_plan_action(a, DF_CALLBACK_CLASS, cb_args) != NULL ? 0 : -1;
        json_decref(cb_args);
    }
    json_decref(callback);
    return rc;
}

static json_t *exit_value(const json_t *update)
{
    return json_object_get(update, "exit_status");
}

/* The run step ends: the last records are the last chunk.  output.result is presented from
 * the chunks, which stay in the store (doc/output.md), not copied into the output. */
static int finish(df_action *a, json_t *records, json_t *exit_status, double ts)
{
    json_t *out = df_action_output(a);

    if (json_array_size(records) > 0)
        df_action_output_chunk(a, json_incref(records), NULL, 0);
    json_object_set(out, "exit_status", exit_status);
    json_object_set_new(out, "exit_status_timestamp", json_real(ts));
    return 0;
}

static void apply_extras(df_action *a, const json_t *update)
{
    json_t *progress = json_object_get(update, "progress"), *data = json_object_get(update, "data");
    json_t *out = df_action_output(a);

    if (json_is_number(progress))
        df_action_set_progress(a, json_number_value(progress));
    if (json_is_object(data)) {
        if (!json_is_object(json_object_get(out, "data")))
            json_object_set_new(out, "data", json_object());
        json_object_update(json_object_get(out, "data"), (json_t *)data);
    }
}

static int process_update(df_action *a, const json_t *update)
{
    json_t *records = json_object_get(update, "records");

    apply_extras(a, update);
    if (exit_value(update) != NULL)
        return finish(a, records, exit_value(update),
                      json_number_value(json_object_get(update, "exit_status_timestamp")));
    if (json_array_size(records) > 0)
        df_action_output_chunk(a, json_incref(records), NULL, 0);
    df_action_suspend(a);
    return 0;
}

/* A runner that had started before a restart is not started again (§8.5 is silent; we must not
 * run a job twice): it ends with "EXCEPTION", says why, and what became of its processes. */
static int restarted(df_action *a, const char *runner_id)
{
    double now = (double)df_now_us() / 1e6;
    json_t *records = json_pack("[{s:s, s:s, s:f}]", "output_type", "debug", "output",
                                RESTARTED_MESSAGE, "timestamp", now);
    json_t *exception = json_string("EXCEPTION");

    df_runner_restart_notes(df_action_world(a), runner_id, records, now);
    finish(a, records, exception, now);
    json_decref(records);
    json_decref(exception);
    return 0;
}

/* The step runs again without an event: after a restart, or when its paused plan resumes.  A
 * runner of this process goes on; one of an earlier process that never started (it waited for
 * a free slot) starts now; one that did has an unknown outcome (doc/recovery.md). */
static int recovered(df_action *a, const char *runner_id)
{
    df_world *w = df_action_world(a);

    if (df_dispatcher_has(df_dispatcher_of(w), runner_id)) {
        df_action_suspend(a);
        return 0;
    }
    if (!df_runner_was_started(w, runner_id))
        return runner_action(a)->start(a);
    return restarted(a, runner_id);
}

static void init_output(df_action *a, const char *runner_id)
{
    json_t *out = df_action_output(a);

    json_object_set_new(out, "result", json_array());
    json_object_set_new(out, "runner_id", json_string(runner_id));
    df_action_suspend(a);
}

static int start_runner(df_action *a)
{
    char id[DF_UUID_BUF];

    df_uuid_new(id);
    init_output(a, id);
    return df_dispatcher_start(df_dispatcher_of(df_action_world(a)), runner_action(a)->cls, id,
                               df_action_input(a), df_action_plan_id(a), df_action_run_step_id(a),
                               NULL);
}

/* OutputCollector: the shared runner (input.runner_id) sends this host's output here. */
static int start_collector(df_action *a)
{
    const char *id = json_string_value(json_object_get(df_action_input(a), "runner_id"));

    if (id == NULL)
        return df_action_error(a, "an output collector needs input.runner_id");
    init_output(a, id);
    return 0;
}

/* BatchRunner: input {"targets", "operation", "runner_id", "runner_class"}; one runner of
 * runner_class for every target. */
static int start_batch_runner(df_action *a)
{
    json_t *in = df_action_input(a);
    const char *id = json_string_value(json_object_get(in, "runner_id"));
    const char *name = json_string_value(json_object_get(in, "runner_class"));
    df_dispatcher *d = df_dispatcher_of(df_action_world(a));
    const struct df_runner_class *cls = df_dispatcher_runner_class(d, name);

    if (id == NULL || cls == NULL)
        return df_action_error(a,
                               "a batch runner needs input.runner_id and a runner class, "
                               "found '%s'",
                               name != NULL ? name : "");
    init_output(a, id);
    return df_dispatcher_start(d, cls, id, in, df_action_plan_id(a), df_action_run_step_id(a),
                               json_object_get(in, "targets"));
}

/* The step's first run, or its first run again after a crash interrupted it (the class is
 * DF_ACTION_RERUNNABLE): a runner recorded as started for the step then has an unknown
 * outcome (doc/recovery.md). */
static int first_run(df_action *a)
{
    char earlier[DF_UUID_BUF];

    if (df_runner_started_for_step(df_action_world(a), df_action_plan_id(a),
                                   df_action_run_step_id(a), earlier)) {
        json_object_set_new(df_action_output(a), "runner_id", json_string(earlier));
        return restarted(a, earlier);
    }
    return runner_action(a)->start(a);
}

static int runner_run(df_action *a, const df_event *ev)
{
    df_dispatcher *d = df_dispatcher_of(df_action_world(a));
    const char *runner_id = json_string_value(json_object_get(df_action_output(a), "runner_id"));

    if (ev == NULL && runner_id != NULL)
        return recovered(a, runner_id);
    if (ev == NULL)
        return first_run(a);
    switch (ev->kind) {
        case DF_EVENT_RUNNER_UPDATE:
            return process_update(a, ev->data);
        case DF_EVENT_USER:
            df_dispatcher_event(d, runner_id, ev->data);
            break;
        case DF_EVENT_CANCEL:
        case DF_EVENT_ABORT:
            df_dispatcher_kill(d, runner_id);
            break;
        case DF_EVENT_POLL:
            df_dispatcher_refresh(d, runner_id);
            break;
        default:
            return df_action_error(a, "Proxy error: unexpected event %s for a runner",
                                   df_event_kind_name(ev->kind));
    }
    df_action_suspend(a);
    return 0;
}

static int runner_finalize(df_action *a)
{
    json_t *status = json_object_get(df_action_output(a), "exit_status");

    if (!json_is_integer(status) || json_integer_value(status) != 0)
        return df_action_error(a, "Script execution failed");
    return 0;
}

/* The status shows the output delivered so far, every record once the runner ended. */
static void runner_present(df_action *a, json_t *output)
{
    df_action_present_chunks(a, output, "result");
}

#define RUNNER_ACTION(cls_name, runner_cls, start_fn, self)                                        \
    {                                                                                              \
        .ac = {.name = cls_name,                                                                   \
               .plan = runner_plan,                                                                \
               .run = runner_run,                                                                  \
               .finalize = runner_finalize,                                                        \
               .present = runner_present,                                                          \
               .rescue = DF_RESCUE_FAIL,                                                           \
               .flags = DF_ACTION_CANCELLABLE | DF_ACTION_POLLED | DF_ACTION_RERUNNABLE,           \
               .data = self},                                                                      \
        .cls = runner_cls, .start = start_fn                                                       \
    }

static const struct runner_action collector =
    RUNNER_ACTION(DF_OUTPUT_COLLECTOR_CLASS, NULL, start_collector, (void *)&collector);
static const struct runner_action batch_runner =
    RUNNER_ACTION(DF_BATCH_RUNNER_CLASS, NULL, start_batch_runner, (void *)&batch_runner);

struct df_action_class *df_runner_action_class(const struct df_runner_class *cls)
{
    struct runner_action *ra = df_malloc(sizeof(*ra));

    *ra = (struct runner_action)RUNNER_ACTION(cls->name, cls, start_runner, ra);
    ra->ac.aliases = cls->aliases;
    return &ra->ac;
}

const struct df_runner_class *df_runner_class_of(const struct df_action_class *ac)
{
    return ((const struct runner_action *)ac->data)->cls;
}

const struct df_action_class *df_runner_group_classes(size_t i)
{
    static const struct runner_action *const v[] = {&collector, &batch_runner};

    return i < DF_ARRAY_SIZE(v) ? &v[i]->ac : NULL;
}
