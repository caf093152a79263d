/* Helpers shared by the engine test suites (header-only: each suite is one program). */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/dynflow.h"
#include "suite.h"

static inline double tu_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Polls cond every millisecond for up to seconds; true once it holds. */
#define WAIT_UNTIL(cond, seconds)                                                                  \
    ({                                                                                             \
        double until_ = tu_now() + (seconds);                                                      \
        while (!(cond) && tu_now() < until_)                                                       \
            usleep(1000);                                                                          \
        (bool)(cond);                                                                              \
    })

static inline df_world *tu_world(const struct df_world_config *cfg,
                                 const struct df_action_class *classes, size_t n)
{
    df_error err;
    df_world *w = df_world_new(cfg, &err);

    ck_assert_ptr_nonnull(w);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(df_world_register(w, &classes[i], &err) == 0, "%s", err.text);
    ck_assert_msg(df_world_start(w, &err) == 0, "%s", err.text);
    return w;
}

/* Triggers a plan that must plan; returns its id in a static buffer rotation. */
static inline const char *tu_trigger(df_world *w, const char *cls, json_t *args)
{
    static char ids[8][DF_UUID_BUF];
    static int next;
    char *id = ids[next++ % 8];
    bool planned;
    df_error err;

    ck_assert_msg(df_trigger(w, cls, args, NULL, id, &planned, &err) == 0, "%s", err.text);
    ck_assert_msg(planned, "planning %s failed: %s", cls, err.text);
    return id;
}

static inline struct df_plan_info tu_wait(df_world *w, const char *id)
{
    struct df_plan_info info;

    ck_assert_msg(df_plan_wait(w, id, 20, &info) == 0, "plan %s did not finish", id);
    return info;
}

static inline void tu_expect(df_world *w, const char *id, enum df_plan_state state,
                             enum df_result result)
{
    struct df_plan_info info = tu_wait(w, id);

    ck_assert_msg(info.state == state && info.result == result, "plan is %s/%s, not %s/%s",
                  df_plan_state_name(info.state), df_result_name(info.result),
                  df_plan_state_name(state), df_result_name(result));
}

/* New reference: the step with this id from the plan's JSON. */
static inline json_t *tu_step(df_world *w, const char *id, int step_id)
{
    json_t *j = df_plan_json(w, id, DF_JSON_STEPS);
    json_t *s = json_incref(json_array_get(json_object_get(j, "steps"), (size_t)step_id - 1));

    json_decref(j);
    ck_assert_ptr_nonnull(s);
    return s;
}

static inline const char *tu_str(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));

    return s != NULL ? s : "";
}

static inline const char *tu_step_state(df_world *w, const char *id, int step_id)
{
    static __thread char state[16];
    json_t *s = tu_step(w, id, step_id);

    snprintf(state, sizeof(state), "%s", tu_str(s, "state"));
    json_decref(s);
    return state;
}

/* New reference: action number n (1-based) of the plan, with its output. */
static inline json_t *tu_action(df_world *w, const char *id, int n)
{
    json_t *j = df_plan_json(w, id, DF_JSON_ACTIONS);
    json_t *a = json_incref(json_array_get(json_object_get(j, "actions"), (size_t)n - 1));

    json_decref(j);
    ck_assert_ptr_nonnull(a);
    return a;
}

static inline void tu_flow_eq(json_t *flow, const char *expected)
{
    char *got = json_dumps(flow, JSON_COMPACT);

    ck_assert_str_eq(got, expected);
    free(got);
}

#endif
