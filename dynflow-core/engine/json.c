/* ExecutionPlan#to_hash, Action#to_hash and Step#to_hash (reference/protocol.md §5). */
#include <stdlib.h>

#include "engine/internal.h"

__thread df_plan *df_presenting;

static json_t *time_or_null(int64_t us)
{
    char buf[24];

    if (us == 0)
        return json_null();
    df_format_time(us, buf);
    return json_string(buf);
}

static json_t *id_or_null(int id)
{
    return id > 0 ? json_integer(id) : json_null();
}

static double plan_execution_time(df_plan *p)
{
    double sum = 0;

    for (size_t i = 0; i < p->n_steps; i++)
        sum += p->steps[i]->execution_time;
    return sum;
}

json_t *df_action_to_json_locked(struct df_action *a, bool with_output)
{
    json_t *j = json_object(), *output;

    json_object_set_new(j, "class", json_string(a->class_name));
    json_object_set_new(j, "execution_plan_id", json_string(a->plan->id));
    json_object_set_new(j, "id", json_integer(a->id));
    json_object_set_new(j, "plan_step_id", id_or_null(a->plan_step_id));
    json_object_set_new(j, "run_step_id", id_or_null(a->run_step_id));
    json_object_set_new(j, "finalize_step_id", id_or_null(a->finalize_step_id));
    json_object_set_new(j, "caller_execution_plan_id",
                        a->caller_plan_id ? json_string(a->caller_plan_id) : json_null());
    json_object_set_new(j, "caller_action_id",
                        id_or_null(a->caller_plan_id ? a->caller_action_id : a->parent_id));
    json_object_set_new(j, "input", json_deep_copy(a->input_stored ? a->input_stored : a->input));
    if (with_output) {
        output = json_deep_copy(a->output);
        if (a->cls != NULL && a->cls->present != NULL) {
            df_presenting = a->plan;
            a->cls->present(a, output);
            df_presenting = NULL;
        }
        json_object_set_new(j, "output", output);
    }
    return j;
}

static const char *const step_classes[] = {
    "Dynflow::ExecutionPlan::Steps::PlanStep",
    "Dynflow::ExecutionPlan::Steps::RunStep",
    "Dynflow::ExecutionPlan::Steps::FinalizeStep",
};

json_t *df_step_to_json_locked(df_plan *p, struct df_step *s)
{
    json_t *j = json_object(), *children;
    struct df_action *a = df_plan_action_by_id(p, s->action_id);

    json_object_set_new(j, "execution_plan_uuid", json_string(p->id));
    json_object_set_new(j, "id", json_integer(s->id));
    json_object_set_new(j, "state", json_string(df_step_state_name(s->state)));
    json_object_set_new(j, "class", json_string(step_classes[s->kind]));
    json_object_set_new(j, "action_class", json_string(a->class_name));
    json_object_set_new(j, "action_id", json_integer(s->action_id));
    json_object_set_new(j, "error", s->error ? json_deep_copy(s->error) : json_null());
    json_object_set_new(j, "started_at", time_or_null(s->started_at));
    json_object_set_new(j, "ended_at", time_or_null(s->ended_at));
    json_object_set_new(j, "execution_time", json_real(s->execution_time));
    json_object_set_new(j, "real_time",
                        json_real(s->started_at && s->ended_at
                                      ? (double)(s->ended_at - s->started_at) / 1e6
                                      : 0.0));
    json_object_set_new(j, "progress_done", json_real(s->progress_done));
    json_object_set_new(j, "progress_weight", json_real(s->progress_weight));
    json_object_set_new(j, "queue", s->queue ? json_string(s->queue->name) : json_null());
    if (s->kind == DF_STEP_PLAN_KIND) {
        children = json_array();
        for (size_t i = 0; i < s->children.n; i++)
            json_array_append_new(children, json_integer(s->children.v[i]));
        json_object_set_new(j, "children", children);
    }
    return j;
}

json_t *df_plan_to_json_locked(df_plan *p, unsigned flags)
{
    json_t *j = json_object(), *ids = json_array();

    for (size_t i = 0; i < p->n_steps; i++)
        json_array_append_new(ids, json_integer(p->steps[i]->id));
    json_object_set_new(j, "id", json_string(p->id));
    json_object_set_new(j, "class", json_string("Dynflow::ExecutionPlan"));
    json_object_set_new(j, "label", p->label ? json_string(p->label) : json_null());
    json_object_set_new(j, "state", json_string(df_plan_state_name(p->state)));
    json_object_set_new(j, "result", json_string(df_result_name(df_plan_result_locked(p))));
    json_object_set_new(j, "root_plan_step_id", json_integer(1));
    json_object_set_new(j, "run_flow",
                        p->run_flow ? json_deep_copy(p->run_flow) : json_pack("[s]", "C"));
    json_object_set_new(j, "finalize_flow",
                        p->finalize_flow ? json_deep_copy(p->finalize_flow)
                                         : json_pack("[s]", "S"));
    json_object_set_new(j, "step_ids", ids);
    json_object_set_new(j, "started_at", time_or_null(p->started_at));
    json_object_set_new(j, "ended_at", time_or_null(p->ended_at));
    json_object_set_new(j, "execution_time",
                        p->execution_time_set ? json_real(plan_execution_time(p)) : json_null());
    json_object_set_new(j, "real_time",
                        json_real(p->ended_at && p->started_at
                                      ? (double)(p->ended_at - p->started_at) / 1e6
                                      : 0.0));
    json_object_set_new(j, "execution_history", json_deep_copy(p->history));
    if (flags & DF_JSON_ACTIONS) {
        json_t *actions = json_array();
        for (size_t i = 0; i < p->n_actions; i++)
            json_array_append_new(actions, df_action_to_json_locked(p->actions[i], true));
        json_object_set_new(j, "actions", actions);
    }
    if (flags & DF_JSON_STEPS) {
        json_t *steps = json_array();
        for (size_t i = 0; i < p->n_steps; i++)
            json_array_append_new(steps, df_step_to_json_locked(p, p->steps[i]));
        json_object_set_new(j, "steps", steps);
    }
    return j;
}
