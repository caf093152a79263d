/*
 * The JSON of a plan: exact keys in order, types, nulls, times, nested
 * Dynflow objects (reference/protocol.md §5, reference/engine.md §5).
 */
#include <regex.h>

#include "testutil.h"

#define PLAN_KEYS                                                                                  \
    "id,class,label,state,result,root_plan_step_id,run_flow,finalize_flow,step_ids,started_at,"    \
    "ended_at,execution_time,real_time,execution_history"
#define ACTION_KEYS                                                                                \
    "class,execution_plan_id,id,plan_step_id,run_step_id,finalize_step_id,"                        \
    "caller_execution_plan_id,caller_action_id,input,output"
#define STEP_KEYS                                                                                  \
    "execution_plan_uuid,id,state,class,action_class,action_id,error,started_at,ended_at,"         \
    "execution_time,real_time,progress_done,progress_weight,queue"

/* The object's keys in order, joined by ','. */
static char *keys_of(json_t *obj)
{
    static __thread char buf[512];
    const char *k;
    json_t *v;

    buf[0] = '\0';
    json_object_foreach(obj, k, v)
    {
        if (buf[0] != '\0')
            strncat(buf, ",", sizeof(buf) - strlen(buf) - 1);
        strncat(buf, k, sizeof(buf) - strlen(buf) - 1);
    }
    return buf;
}

static void expect_keys(json_t *obj, const char *keys, const char *extra)
{
    char want[512];

    snprintf(want, sizeof(want), "%s%s%s", keys, extra != NULL ? "," : "", extra ? extra : "");
    ck_assert_str_eq(keys_of(obj), want);
}

static bool matches(const char *s, const char *pattern)
{
    regex_t re;
    bool ok;

    ck_assert_int_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    ok = s != NULL && regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

#define TIME_RE "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}$"
#define UUID_RE "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

/* Seconds since the epoch of a "%Y-%m-%d %H:%M:%S.%L" UTC time. */
static double parse_time(const char *s)
{
    struct tm tm = {0};
    const char *rest;

    ck_assert_msg(matches(s, TIME_RE), "time '%s'", s ? s : "(null)");
    rest = strptime(s, "%Y-%m-%d %H:%M:%S", &tm);
    ck_assert_ptr_nonnull(rest);
    return (double)timegm(&tm) + strtod(rest, NULL);
}

/* ---- actions ------------------------------------------------------------------------- */

static int y_run(df_action *a, const df_event *ev)
{
    (void)ev;
    json_object_set_new(df_action_output(a), "y", json_integer(42));
    return 0;
}

static int nothing_finalize(df_action *a)
{
    (void)a;
    return 0;
}

/* Suspends first; an event sets output y = 5. */
static int hold_run(df_action *a, const df_event *ev)
{
    if (ev == NULL) {
        df_action_suspend(a);
        return 0;
    }
    json_object_set_new(df_action_output(a), "y", json_integer(5));
    return 0;
}

static int fail_run(df_action *a, const df_event *ev)
{
    (void)ev;
    return df_action_error(a, "failed on purpose");
}

/* Main { a = plan_action(args.first or "A"); plan_action(B, x: a.output[:y]) } */
static int main_plan(df_action *a, json_t *args)
{
    const char *first = json_string_value(json_object_get(args, "first"));
    const char *key = json_string_value(json_object_get(args, "key"));
    df_action *fa = df_plan_action(a, first != NULL ? first : "A", args);
    json_t *input;

    if (fa == NULL)
        return -1;
    input = json_pack("{s:o}", "x", df_output_ref(fa, key != NULL ? key : "y", NULL));
    df_plan_action(a, "B", input);
    json_decref(input);
    return df_plan_self(a, json_object());
}

static const struct df_action_class classes[] = {
    {.name = "A", .run = y_run, .finalize = nothing_finalize},
    {.name = "B", .run = y_run},
    {.name = "Hold", .run = hold_run},
    {.name = "Fail", .run = fail_run, .rescue = DF_RESCUE_FAIL},
    {.name = "Main", .plan = main_plan},
};
#define N_CLASSES (sizeof(classes) / sizeof(classes[0]))

/* ---- tests --------------------------------------------------------------------------- */

START_TEST(plan_keys_types_and_times)
{
    df_world *w = tu_world(NULL, classes, N_CLASSES);
    char id[DF_UUID_BUF];
    double before = (double)time(NULL), started, ended;
    json_t *j, *e, *steps;
    size_t i;

    tu_run(w, "Main", json_object(), id);
    j = tu_json(w, id, 0);
    expect_keys(j, PLAN_KEYS, NULL);
    ck_assert(matches(tu_str(j, "id"), UUID_RE));
    ck_assert_str_eq(tu_str(j, "id"), id);
    ck_assert_str_eq(tu_str(j, "class"), "Dynflow::ExecutionPlan");
    ck_assert_str_eq(tu_str(j, "label"), "Main");
    ck_assert_str_eq(tu_str(j, "state"), "stopped");
    ck_assert_str_eq(tu_str(j, "result"), "success");
    ck_assert(json_is_integer(json_object_get(j, "root_plan_step_id")));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "root_plan_step_id")), 1);
    tu_flow_eq(json_object_get(j, "run_flow"), "[\"S\",3,6]");
    tu_flow_eq(json_object_get(j, "finalize_flow"), "[\"S\",4]");
    steps = json_object_get(j, "step_ids");
    json_array_foreach(steps, i, e) ck_assert_int_eq(json_integer_value(e), (json_int_t)i + 1);
    ck_assert_int_eq(json_array_size(steps), 6);

    started = parse_time(tu_str(j, "started_at"));
    ended = parse_time(tu_str(j, "ended_at"));
    ck_assert_double_ge(started, before - 1);
    ck_assert_double_le(ended, (double)time(NULL) + 1);
    ck_assert_double_ge(ended, started);
    ck_assert(json_is_real(json_object_get(j, "execution_time")));
    ck_assert_double_ge(json_real_value(json_object_get(j, "execution_time")), 0);
    ck_assert(json_is_real(json_object_get(j, "real_time")));
    ck_assert_double_eq_tol(json_real_value(json_object_get(j, "real_time")), ended - started,
                            0.0015);

    ck_assert_int_eq(json_array_size(json_object_get(j, "execution_history")), 2);
    json_array_foreach(json_object_get(j, "execution_history"), i, e)
    {
        ck_assert_str_eq(keys_of(e), "time,name,world_id");
        ck_assert(json_is_integer(json_object_get(e, "time")));
        ck_assert_int_ge(json_integer_value(json_object_get(e, "time")), (json_int_t)before);
        ck_assert_int_le(json_integer_value(json_object_get(e, "time")), (json_int_t)time(NULL));
        ck_assert_str_eq(tu_str(e, "name"), i == 0 ? "start execution" : "finish execution");
        ck_assert_str_eq(tu_str(e, "world_id"), df_world_id(w));
    }
    json_decref(j);

    /* the same once the plan was written and dropped from memory */
    df_world_sync(w);
    j = tu_json(w, id, 0);
    expect_keys(j, PLAN_KEYS, NULL);
    ck_assert(json_is_real(json_object_get(j, "execution_time")));
    ck_assert_double_eq(parse_time(tu_str(j, "ended_at")), ended);
    json_decref(j);
    df_world_free(w);
}
END_TEST

START_TEST(action_keys_and_values)
{
    df_world *w = tu_world(NULL, classes, N_CLASSES);
    char id[DF_UUID_BUF], expected[512];
    json_t *j, *a;

    tu_run(w, "Main", json_object(), id);
    j = tu_json(w, id, DF_JSON_ACTIONS);
    expect_keys(j, PLAN_KEYS, "actions");
    ck_assert_int_eq(json_array_size(json_object_get(j, "actions")), 3);

    a = tu_find_action(j, 1);
    expect_keys(a, ACTION_KEYS, NULL);
    snprintf(expected, sizeof(expected),
             "{\"class\":\"Main\",\"execution_plan_id\":\"%s\",\"id\":1,\"plan_step_id\":1,"
             "\"run_step_id\":null,\"finalize_step_id\":null,\"caller_execution_plan_id\":null,"
             "\"caller_action_id\":null,\"input\":{},\"output\":{}}",
             id);
    tu_flow_eq(a, expected);
    ck_assert_str_eq(tu_str(a, "execution_plan_id"), id);
    ck_assert(json_is_null(json_object_get(a, "run_step_id")));
    ck_assert(json_is_null(json_object_get(a, "finalize_step_id")));
    ck_assert(json_is_null(json_object_get(a, "caller_execution_plan_id")));
    ck_assert(json_is_null(json_object_get(a, "caller_action_id")));
    ck_assert(json_is_object(json_object_get(a, "input")));
    ck_assert(json_is_object(json_object_get(a, "output")));

    a = tu_find_action(j, 2);
    expect_keys(a, ACTION_KEYS, NULL);
    ck_assert_str_eq(tu_str(a, "class"), "A");
    ck_assert_int_eq(json_integer_value(json_object_get(a, "plan_step_id")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(a, "run_step_id")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(a, "finalize_step_id")), 4);
    ck_assert_int_eq(json_integer_value(json_object_get(a, "caller_action_id")), 1);
    tu_flow_eq(json_object_get(a, "output"), "{\"y\":42}");

    a = tu_find_action(j, 3);
    ck_assert_str_eq(tu_str(a, "class"), "B");
    ck_assert_int_eq(json_integer_value(json_object_get(a, "run_step_id")), 6);
    ck_assert(json_is_null(json_object_get(a, "finalize_step_id")));
    ck_assert_int_eq(json_integer_value(json_object_get(a, "caller_action_id")), 1);
    tu_flow_eq(json_object_get(a, "input"), "{\"x\":42}");
    json_decref(j);

    /* steps on request only, with their own keys */
    j = tu_json(w, id, DF_JSON_STEPS);
    expect_keys(j, PLAN_KEYS, "steps");
    expect_keys(tu_find_step(j, 1), STEP_KEYS, "children");
    expect_keys(tu_find_step(j, 3), STEP_KEYS, NULL);
    expect_keys(tu_find_step(j, 4), STEP_KEYS, NULL);
    ck_assert_str_eq(tu_str(tu_find_step(j, 3), "execution_plan_uuid"), id);
    ck_assert(json_is_null(json_object_get(tu_find_step(j, 3), "error")));
    ck_assert(json_is_null(json_object_get(tu_find_step(j, 1), "queue")));
    ck_assert_str_eq(tu_str(tu_find_step(j, 3), "queue"), "default");
    parse_time(tu_str(tu_find_step(j, 3), "started_at"));
    json_decref(j);
    df_world_free(w);
}
END_TEST

START_TEST(nulls_while_running)
{
    df_world *w = tu_world(NULL, classes, N_CLASSES);
    char id[DF_UUID_BUF];
    json_t *j, *x;
    char expected[512];

    ck_assert(tu_trigger_opts(w, "Main", json_pack("{s:s}", "first", "Hold"), NULL, id, NULL));
    ck_assert(wait_until(tu_step_is(w, id, 3, "suspended"), 10));
    j = tu_json(w, id, DF_JSON_ACTIONS);
    ck_assert_str_eq(tu_str(j, "state"), "running");
    ck_assert_str_eq(tu_str(j, "result"), "pending");
    parse_time(tu_str(j, "started_at"));
    ck_assert(json_is_null(json_object_get(j, "ended_at")));
    ck_assert(json_is_null(json_object_get(j, "execution_time")));
    ck_assert(json_is_real(json_object_get(j, "real_time")));
    ck_assert_double_eq(json_real_value(json_object_get(j, "real_time")), 0.0);
    ck_assert_str_eq(tu_history(w, id), "start execution");
    tu_flow_eq(json_object_get(tu_find_action(j, 2), "output"), "{}");

    /* B has not run: its input still holds the reference */
    x = json_object_get(json_object_get(tu_find_action(j, 3), "input"), "x");
    snprintf(expected, sizeof(expected),
             "{\"class\":\"Dynflow::ExecutionPlan::OutputReference\",\"execution_plan_id\":\"%s\","
             "\"step_id\":3,\"action_id\":2,\"subkeys\":[\"y\"]}",
             id);
    tu_flow_eq(x, expected);
    json_decref(j);

    tu_event(w, id, 3, DF_EVENT_USER, NULL, 0);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    j = tu_json(w, id, DF_JSON_ACTIONS);
    tu_flow_eq(json_object_get(tu_find_action(j, 3), "input"), "{\"x\":5}");
    json_decref(j);
    df_world_free(w);
}
END_TEST

START_TEST(step_error_objects)
{
    df_world *w = tu_world(NULL, classes, N_CLASSES);
    char id[DF_UUID_BUF];
    json_t *s;

    tu_run(w, "Fail", json_object(), id);
    s = tu_step(w, id, 2);
    tu_flow_eq(json_object_get(s, "error"),
               "{\"class\":\"Dynflow::ExecutionPlan::Steps::Error\","
               "\"exception_class\":\"RuntimeError\",\"message\":\"failed on purpose\","
               "\"backtrace\":[]}");
    ck_assert_str_eq(tu_str(s, "state"), "error");
    json_decref(s);

    tu_run(w, "Main", json_pack("{s:s}", "key", "nope"), id);
    s = tu_step(w, id, 6);
    tu_flow_eq(json_object_get(s, "error"),
               "{\"class\":\"Dynflow::ExecutionPlan::Steps::Error\","
               "\"exception_class\":\"KeyError\",\"message\":\"key not found: \\\"nope\\\"\","
               "\"backtrace\":[]}");
    json_decref(s);
    df_world_free(w);
}
END_TEST

/* present() adds to the shown output only. */
static void add_presented(df_action *a, json_t *output)
{
    (void)a;
    json_object_set_new(output, "presented", json_true());
}

static int present_run(df_action *a, const df_event *ev)
{
    json_t *out = df_action_output(a);

    json_object_set_new(out, "saw_presented",
                        json_boolean(json_object_get(out, "presented") != NULL));
    if (ev == NULL)
        df_action_suspend(a);
    return 0;
}

START_TEST(present_adds_to_the_output)
{
    static const struct df_action_class extra[] = {
        {.name = "Presented", .run = present_run, .present = add_presented},
    };
    df_world *w = tu_world(NULL, extra, 1);
    char id[DF_UUID_BUF];
    json_t *out;

    ck_assert(tu_trigger_opts(w, "Presented", json_object(), NULL, id, NULL));
    ck_assert(wait_until(tu_step_is(w, id, 2, "suspended"), 10));
    out = tu_output(w, id, 1);
    tu_flow_eq(out, "{\"saw_presented\":false,\"presented\":true}");
    json_decref(out);
    tu_event(w, id, 2, DF_EVENT_USER, NULL, 0);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    df_world_sync(w);
    out = tu_output(w, id, 1);
    tu_flow_eq(out, "{\"saw_presented\":false,\"presented\":true}");
    json_decref(out);
    df_world_free(w);
}
END_TEST

/* Outer plans Spawner (action 2), whose run triggers a child plan and waits for it. */
static int spawner_run(df_action *a, const df_event *ev)
{
    char child[DF_UUID_BUF];
    bool planned;

    if (ev != NULL) {
        json_object_set(df_action_output(a), "finished", ev->data);
        return 0;
    }
    if (df_action_trigger_child(a, "Main", json_object(), NULL, child, &planned) < 0 || !planned)
        return df_action_error(a, "the child did not plan");
    json_object_set_new(df_action_output(a), "child", json_string(child));
    df_action_suspend(a);
    return 0;
}

static int outer_plan(df_action *a, json_t *args)
{
    return df_plan_action(a, "Spawner", args) != NULL ? df_plan_self(a, json_object()) : -1;
}

START_TEST(sub_plan_caller_ids)
{
    static const struct df_action_class extra[] = {
        {.name = "A", .run = y_run, .finalize = nothing_finalize},
        {.name = "B", .run = y_run},
        {.name = "Main", .plan = main_plan},
        {.name = "Spawner", .run = spawner_run},
        {.name = "Outer", .plan = outer_plan},
    };
    df_world *w = tu_world(NULL, extra, 5);
    char id[DF_UUID_BUF], child[DF_UUID_BUF];
    json_t *out, *j, *root, *inner;

    tu_run(w, "Outer", json_object(), id);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    out = tu_output(w, id, 2);
    snprintf(child, sizeof(child), "%s", tu_str(out, "child"));
    ck_assert_str_eq(tu_str(json_object_get(out, "finished"), "execution_plan_id"), child);
    ck_assert(json_is_true(json_object_get(json_object_get(out, "finished"), "success")));
    json_decref(out);

    j = tu_json(w, child, DF_JSON_ACTIONS);
    expect_keys(j, PLAN_KEYS, "actions");
    root = tu_find_action(j, 1);
    ck_assert_str_eq(tu_str(root, "caller_execution_plan_id"), id);
    ck_assert_int_eq(json_integer_value(json_object_get(root, "caller_action_id")), 2);
    inner = tu_find_action(j, 2);
    ck_assert(json_is_null(json_object_get(inner, "caller_execution_plan_id")));
    ck_assert_int_eq(json_integer_value(json_object_get(inner, "caller_action_id")), 1);
    json_decref(j);
    df_world_free(w);
}
END_TEST

START_TEST(scheduled_and_failed_plans)
{
    df_world *w = tu_world(NULL, classes, N_CLASSES);
    char id[DF_UUID_BUF];
    struct df_trigger_opts later = {.delayed = true, .start_at = (double)time(NULL) + 3600};
    df_error err;
    json_t *j;

    ck_assert(tu_trigger_opts(w, "Main", json_object(), &later, id, NULL));
    j = tu_json(w, id, DF_JSON_ACTIONS);
    expect_keys(j, PLAN_KEYS, "actions");
    ck_assert_str_eq(tu_str(j, "label"), "Main");
    ck_assert_str_eq(tu_str(j, "state"), "scheduled");
    ck_assert_str_eq(tu_str(j, "result"), "pending");
    ck_assert(json_is_null(json_object_get(j, "started_at")));
    ck_assert(json_is_null(json_object_get(j, "ended_at")));
    ck_assert(json_is_null(json_object_get(j, "execution_time")));
    ck_assert_double_eq(json_real_value(json_object_get(j, "real_time")), 0.0);
    tu_flow_eq(json_object_get(j, "run_flow"), "[\"C\"]");
    tu_flow_eq(json_object_get(j, "finalize_flow"), "[\"S\"]");
    tu_flow_eq(json_object_get(j, "step_ids"), "[1]");
    ck_assert_str_eq(tu_history(w, id), "delay");
    ck_assert_int_eq(json_array_size(json_object_get(j, "actions")), 1);
    expect_keys(tu_find_action(j, 1), ACTION_KEYS, NULL);
    json_decref(j);

    /* a plan whose planning failed */
    ck_assert(!tu_trigger_opts(w, "Main", json_pack("{s:s}", "first", "Nope"), NULL, id, &err));
    j = tu_json(w, id, DF_JSON_ACTIONS | DF_JSON_STEPS);
    expect_keys(j, PLAN_KEYS, "actions,steps");
    ck_assert_str_eq(tu_str(j, "state"), "stopped");
    ck_assert_str_eq(tu_str(j, "result"), "error");
    parse_time(tu_str(j, "started_at"));
    parse_time(tu_str(j, "ended_at"));
    ck_assert_str_eq(tu_str(json_object_get(tu_find_step(j, 1), "error"), "class"),
                     "Dynflow::ExecutionPlan::Steps::Error");
    json_decref(j);
    df_world_free(w);
}
END_TEST

static Suite *json_suite(void)
{
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("json");

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, plan_keys_types_and_times);
    tcase_add_test(tc, action_keys_and_values);
    tcase_add_test(tc, nulls_while_running);
    tcase_add_test(tc, step_error_objects);
    tcase_add_test(tc, present_adds_to_the_output);
    tcase_add_test(tc, sub_plan_caller_ids);
    tcase_add_test(tc, scheduled_and_failed_plans);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(json_suite());
}
