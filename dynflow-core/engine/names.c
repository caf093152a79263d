/* Names of states, results and events as Dynflow spells them. */
#include <string.h>

#include "dynflow/dynflow.h"

static const char *const plan_states[] = {
    "pending", "scheduled", "planning", "planned", "running", "paused", "stopped",
};

static const char *const results[] = {
    "pending", "success", "warning", "error", "cancelled",
};

static const char *const step_states[] = {
    "scheduling", "pending", "running", "success",   "suspended",
    "skipping",   "skipped", "error",   "cancelled",
};

static const char *const event_kinds[] = {
    "user", "cancel", "abort", "skip", "poll", "timeout", "sub_plan_finished", "runner_update",
};

const char *df_plan_state_name(enum df_plan_state s)
{
    return (unsigned)s < DF_PLAN_STATE_COUNT ? plan_states[s] : "unknown";
}

const char *df_result_name(enum df_result r)
{
    return (unsigned)r <= DF_RESULT_CANCELLED ? results[r] : "unknown";
}

const char *df_step_state_name(enum df_step_state s)
{
    return (unsigned)s <= DF_STEP_CANCELLED ? step_states[s] : "unknown";
}

const char *df_event_kind_name(enum df_event_kind k)
{
    return (unsigned)k <= DF_EVENT_RUNNER_UPDATE ? event_kinds[k] : "unknown";
}

int df_plan_state_parse(const char *name)
{
    for (int i = 0; name != NULL && i < DF_PLAN_STATE_COUNT; i++)
        if (strcmp(name, plan_states[i]) == 0)
            return i;
    return -1;
}
