/*
 * Planning: flow shapes (reference/engine.md §1.5), the dependency graph,
 * output references, planning errors, subscriptions, middleware, secrets,
 * and the JSON of a plan (reference/protocol.md §5).
 */
#include <regex.h>
#include <stdatomic.h>

#include "testutil.h"

static int copy_run(df_action *a, const df_event *ev)
{
    (void)ev;
    json_object_update(df_action_output(a), df_action_input(a));
    json_object_set_new(df_action_output(a), "y", json_integer(42));
    return 0;
}

static int nothing(df_action *a)
{
    (void)a;
    return 0;
}

/* Main { a = plan_action(A); plan_action(B, x: a.output[:y]) } */
static int main_plan(df_action *a, json_t *args)
{
    df_action *first = df_plan_action(a, "A", args);
    json_t *input;
    df_action *second;

    if (first == NULL)
        return -1;
    input = json_pack("{s:o}", "x", df_output_ref(first, "y", NULL));
    second = df_plan_action(a, "B", input);
    json_decref(input);
    return second != NULL ? df_plan_self(a, json_object()) : -1;
}

/* Commit: sequence { concurrence { Ci, Review, Review }; Merge(references) } */
static int commit_plan(df_action *a, json_t *args)
{
    df_action *ci, *r1, *r2;
    json_t *input;

    df_sequence_begin(a);
    df_concurrence_begin(a);
    ci = df_plan_action(a, "B", args);
    r1 = df_plan_action(a, "B", args);
    r2 = df_plan_action(a, "B", args);
    df_concurrence_end(a);
    if (ci == NULL || r1 == NULL || r2 == NULL)
        return -1;
    input = json_pack("{s:o, s:[o, o]}", "ci", df_output_ref(ci, "y", NULL), "reviews",
                      df_output_ref(r1, "y", NULL), df_output_ref(r2, "y", NULL));
    df_plan_action(a, "B", input);
    json_decref(input);
    df_sequence_end(a);
    return df_plan_self(a, json_object());
}

/* A, then B using A's output, then C independent */
static int chain_plan(df_action *a, json_t *args)
{
    df_action *first = df_plan_action(a, "B", args);
    json_t *input = json_pack("{s:o}", "x", df_output_ref(first, "y", NULL));

    df_plan_action(a, "B", input);
    df_plan_action(a, "B", args);
    json_decref(input);
    return df_plan_self(a, json_object());
}

static int empty_plan(df_action *a, json_t *args)
{
    (void)args;
    return df_plan_self(a, json_object());
}

START_TEST(flow_shapes)
{
    static const struct df_action_class classes[] = {
        {.name = "A", .run = copy_run, .finalize = nothing},
        {.name = "B", .run = copy_run},
        {.name = "Main", .plan = main_plan},
        {.name = "Commit", .plan = commit_plan},
        {.name = "Chain", .plan = chain_plan},
        {.name = "Empty", .plan = empty_plan},
    };
    df_world *w = tu_world(NULL, classes, 6);
    const char *id = tu_trigger(w, "Main", json_object());
    json_t *j;

    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    j = df_plan_json(w, id, 0);
    tu_flow_eq(json_object_get(j, "run_flow"), "[\"S\",3,6]");
    tu_flow_eq(json_object_get(j, "finalize_flow"), "[\"S\",4]");
    tu_flow_eq(json_object_get(j, "step_ids"), "[1,2,3,4,5,6]");
    json_decref(j);

    id = tu_trigger(w, "Commit", json_object());
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    j = df_plan_json(w, id, 0);
    tu_flow_eq(json_object_get(j, "run_flow"), "[\"S\",[\"C\",3,5,7],9]");
    json_decref(j);

    id = tu_trigger(w, "Chain", json_object());
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    j = df_plan_json(w, id, 0);
    tu_flow_eq(json_object_get(j, "run_flow"), "[\"C\",[\"S\",3,5],7]");
    json_decref(j);

    id = tu_trigger(w, "Empty", json_object());
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    j = df_plan_json(w, id, 0);
    tu_flow_eq(json_object_get(j, "run_flow"), "[\"C\"]");
    tu_flow_eq(json_object_get(j, "finalize_flow"), "[\"S\"]");
    json_decref(j);
    df_world_free(w);
}
END_TEST

/* engine.md §8 #1: E needs A and B; A is in sequence { A; D }.  Dynflow's
 * tree makes E wait for D; the graph runs E as soon as A and B are done. */
static atomic_bool e_ran;

static int d_run(df_action *a, const df_event *ev)
{
    (void)ev;
    if (!WAIT_UNTIL(atomic_load(&e_ran), 10))
        return df_action_error(a, "E did not run while D was running");
    return 0;
}

static int e_run(df_action *a, const df_event *ev)
{
    (void)a;
    (void)ev;
    atomic_store(&e_ran, true);
    return 0;
}

static int dag_plan(df_action *a, json_t *args)
{
    df_action *first, *second;
    json_t *input;

    df_sequence_begin(a);
    first = df_plan_action(a, "B", args);
    df_plan_action(a, "D", args);
    df_sequence_end(a);
    second = df_plan_action(a, "B", args);
    input = json_pack("{s:o, s:o}", "a", df_output_ref(first, "y", NULL), "b",
                      df_output_ref(second, "y", NULL));
    df_plan_action(a, "E", input);
    json_decref(input);
    return df_plan_self(a, json_object());
}

START_TEST(graph_runs_a_step_when_its_needs_are_done)
{
    static const struct df_action_class classes[] = {
        {.name = "B", .run = copy_run},
        {.name = "D", .run = d_run},
        {.name = "E", .run = e_run},
        {.name = "Dag", .plan = dag_plan},
    };
    df_world *w = tu_world(NULL, classes, 4);
    const char *id = tu_trigger(w, "Dag", json_object());
    json_t *j;

    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert(atomic_load(&e_ran));
    j = df_plan_json(w, id, 0);
    /* reported as Dynflow would: E after the whole sequence */
    tu_flow_eq(json_object_get(j, "run_flow"), "[\"S\",[\"C\",[\"S\",3,5],7],9]");
    json_decref(j);
    df_world_free(w);
}
END_TEST

static int missing_key_plan(df_action *a, json_t *args)
{
    df_action *first = df_plan_action(a, "B", args);
    json_t *input = json_pack("{s:o}", "x", df_output_ref(first, "nope", NULL));

    df_plan_action(a, "B", input);
    json_decref(input);
    return df_plan_self(a, json_object());
}

START_TEST(output_references)
{
    static const struct df_action_class classes[] = {
        {.name = "A", .run = copy_run, .finalize = nothing},
        {.name = "B", .run = copy_run},
        {.name = "Main", .plan = main_plan},
        {.name = "Missing", .plan = missing_key_plan},
    };
    df_world *w = tu_world(&(struct df_world_config){.no_auto_rescue = true}, classes, 4);
    const char *id = tu_trigger(w, "Main", json_pack("{s:s}", "v", "in"));
    json_t *b, *s;

    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    b = tu_action(w, id, 3);
    /* dereferenced at run time, and the stored input keeps the value */
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(b, "input"), "x")), 42);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(b, "output"), "x")), 42);
    json_decref(b);

    id = tu_trigger(w, "Missing", json_object());
    tu_expect(w, id, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    s = tu_step(w, id, 5);
    ck_assert_str_eq(tu_str(s, "state"), "error");
    ck_assert_str_eq(tu_str(json_object_get(s, "error"), "exception_class"), "KeyError");
    ck_assert_str_eq(tu_str(json_object_get(s, "error"), "message"), "key not found: \"nope\"");
    json_decref(s);
    df_world_free(w);
}
END_TEST

static int failing_plan(df_action *a, json_t *args)
{
    (void)args;
    return df_action_error(a, "cannot plan %s", "this");
}

static int parent_of_failing_plan(df_action *a, json_t *args)
{
    df_plan_action(a, "Failing", args);
    return df_plan_self(a, json_object());
}

START_TEST(planning_errors)
{
    const struct df_action_class classes[] = {
        {.name = "Failing", .plan = failing_plan},
        {.name = "Parent", .plan = parent_of_failing_plan},
        {.name = "B", .run = copy_run, .aliases = (const char *const[]){"B::Alias", NULL}},
    };
    df_world *w = tu_world(NULL, classes, 3);
    struct df_trigger_opts o = {.plan_id = "11111111-2222-4333-8444-555555555555"};
    char id[DF_UUID_BUF];
    struct df_plan_info info;
    bool planned = true;
    df_error err;
    json_t *s;
    uint64_t n;

    ck_assert_int_eq(df_trigger(w, "Parent", json_object(), NULL, id, &planned, &err), 0);
    ck_assert(!planned);
    ck_assert_str_eq(err.text, "cannot plan this");
    ck_assert_int_eq(df_plan_get_info(w, id, &info), 0);
    ck_assert_int_eq(info.state, DF_PLAN_STOPPED);
    ck_assert_int_eq(info.result, DF_RESULT_ERROR);
    /* the error reaches the planning parent too */
    s = tu_step(w, id, 1);
    ck_assert_str_eq(tu_str(s, "state"), "error");
    ck_assert_str_eq(tu_str(json_object_get(s, "error"), "message"), "cannot plan this");
    json_decref(s);

    ck_assert_int_eq(df_plan_count(w, -1, &n, NULL), 0);
    ck_assert_int_eq(df_trigger(w, "Nope", json_object(), NULL, id, &planned, &err), -ENOENT);
    ck_assert_str_eq(err.text, "unknown action class 'Nope'");
    ck_assert_int_eq(df_trigger(w, "B", json_object(),
                                &(struct df_trigger_opts){.plan_id = "not-a-uuid"}, id, &planned,
                                &err),
                     -EINVAL);
    ck_assert_int_eq(df_trigger(w, "B::Alias", json_object(), &o, id, &planned, &err), 0);
    ck_assert_str_eq(id, o.plan_id);
    ck_assert_int_eq(df_trigger(w, "B", json_object(), &o, id, &planned, &err), -EEXIST);
    /* nothing was created by the refused calls */
    tu_wait(w, o.plan_id);
    uint64_t after;
    ck_assert_int_eq(df_plan_count(w, -1, &after, NULL), 0);
    ck_assert_int_eq(after, n + 1);
    df_world_free(w);
}
END_TEST

/* ---- subscriptions, middleware ------------------------------------------------ */

static char trail[256];

static void trail_add(const char *what)
{
    strncat(trail, what, sizeof(trail) - strlen(trail) - 1);
}

static int mw_world_plan(df_mw_call *c)
{
    int rc;

    trail_add("[wp");
    rc = df_mw_pass(c);
    /* carries a request id from the arguments into the input, as the proxy does */
    json_object_set(df_action_input(df_mw_action(c)), "current_request_id",
                    json_object_get(df_mw_args(c), "request_id"));
    trail_add("]");
    return rc;
}

static int mw_world_run(df_mw_call *c)
{
    trail_add((const char *)df_mw_data(c));
    return df_mw_pass(c);
}

static int mw_class_run(df_mw_call *c)
{
    trail_add("cr");
    return df_mw_pass(c);
}

static int traced_run(df_action *a, const df_event *ev)
{
    (void)a;
    (void)ev;
    trail_add("run");
    return 0;
}

static const struct df_middleware world_mw = {
    .name = "world", .plan = mw_world_plan, .run = mw_world_run, .data = (void *)"wr"};
static const struct df_middleware class_mw = {.name = "class", .run = mw_class_run};

START_TEST(subscriptions_and_middleware)
{
    const struct df_action_class classes[] = {
        {.name = "Trig",
         .run = traced_run,
         .middleware = (const struct df_middleware *const[]){&class_mw, NULL}},
        {.name = "Sub", .subscribe = (const char *const[]){"Trig", NULL}},
    };
    df_error err;
    df_world *w = df_world_new(NULL, &err);
    const char *id;
    json_t *sub, *trig;

    df_world_register(w, &classes[0], &err);
    df_world_register(w, &classes[1], &err);
    df_world_use(w, &world_mw, &err);
    ck_assert_int_eq(df_world_start(w, &err), 0);
    trail[0] = '\0';
    id = tu_trigger(w, "Trig", json_pack("{s:s}", "request_id", "req-1"));
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    trig = tu_action(w, id, 1);
    sub = tu_action(w, id, 2);
    ck_assert_str_eq(tu_str(sub, "class"), "Sub");
    ck_assert_int_eq(json_integer_value(json_object_get(sub, "caller_action_id")), 1);
    ck_assert_str_eq(tu_str(json_object_get(sub, "input"), "request_id"), "req-1");
    ck_assert_str_eq(tu_str(json_object_get(trig, "input"), "current_request_id"), "req-1");
    ck_assert_ptr_nonnull(strstr(trail, "wrcrrun"));
    json_decref(trig);
    json_decref(sub);
    df_world_free(w);
}
END_TEST

/* ---- secrets ---------------------------------------------------------------------- */

static int secret_run(df_action *a, const df_event *ev)
{
    json_t *s = df_action_secrets(a);

    (void)ev;
    json_object_set_new(df_action_output(a), "saw_secret",
                        json_boolean(strcmp(tu_str(s, "password"), "hunter2") == 0));
    return 0;
}

START_TEST(secrets_are_redacted)
{
    static const struct df_action_class classes[] = {{.name = "S", .run = secret_run}};
    df_world *w = tu_world(NULL, classes, 1);
    const char *id =
        tu_trigger(w, "S",
                   json_pack("{s:{s:s, s:n}, s:{s:{s:s}}}", "secrets", "password", "hunter2",
                             "unset", "hosts", "h1", "secrets", "key", "nested-hunter2"));
    json_t *j;
    char *text;

    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    j = df_plan_json(w, id, DF_JSON_ACTIONS | DF_JSON_STEPS);
    text = json_dumps(j, 0);
    ck_assert_ptr_null(strstr(text, "hunter2"));
    ck_assert_ptr_nonnull(strstr(text, "\"password\": \"[REDACTED]\""));
    ck_assert_ptr_nonnull(strstr(text, "\"unset\": null"));
    ck_assert_ptr_nonnull(strstr(text, "\"saw_secret\": true"));
    free(text);
    json_decref(j);
    df_world_free(w);
}
END_TEST

/* ---- JSON --------------------------------------------------------------------------- */

static void keys_are(json_t *obj, const char *const *keys)
{
    const char *k;
    json_t *v;
    size_t i = 0;

    json_object_foreach(obj, k, v)
    {
        ck_assert_ptr_nonnull(keys[i]);
        ck_assert_str_eq(k, keys[i]);
        i++;
    }
    ck_assert_ptr_null(keys[i]);
}

static bool time_format(json_t *v)
{
    regex_t re;
    bool ok;

    regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}$",
            REG_EXTENDED | REG_NOSUB);
    ok = json_is_string(v) && regexec(&re, json_string_value(v), 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

static void present_result(df_action *a, json_t *output)
{
    (void)a;
    json_object_set_new(output, "result", json_string("presented"));
}

START_TEST(json_shapes)
{
    static const char *const plan_keys[] = {"id",        "class",
                                            "label",     "state",
                                            "result",    "root_plan_step_id",
                                            "run_flow",  "finalize_flow",
                                            "step_ids",  "started_at",
                                            "ended_at",  "execution_time",
                                            "real_time", "execution_history",
                                            "actions",   NULL};
    static const char *const action_keys[] = {"class",
                                              "execution_plan_id",
                                              "id",
                                              "plan_step_id",
                                              "run_step_id",
                                              "finalize_step_id",
                                              "caller_execution_plan_id",
                                              "caller_action_id",
                                              "input",
                                              "output",
                                              NULL};
    static const struct df_action_class classes[] = {
        {.name = "A", .run = copy_run, .finalize = nothing, .present = present_result},
        {.name = "B", .run = copy_run},
        {.name = "Main", .plan = main_plan},
    };
    df_world *w = tu_world(NULL, classes, 3);
    const char *id = tu_trigger(w, "Main", json_object());
    json_t *j, *a, *h, *e;

    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    j = df_plan_json(w, id, DF_JSON_ACTIONS);
    keys_are(j, plan_keys);
    ck_assert_str_eq(tu_str(j, "class"), "Dynflow::ExecutionPlan");
    ck_assert_str_eq(tu_str(j, "label"), "Main");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "root_plan_step_id")), 1);
    ck_assert(time_format(json_object_get(j, "started_at")));
    ck_assert(time_format(json_object_get(j, "ended_at")));
    ck_assert(json_is_real(json_object_get(j, "execution_time")));
    ck_assert(json_is_real(json_object_get(j, "real_time")));
    h = json_object_get(j, "execution_history");
    ck_assert_int_eq(json_array_size(h), 2);
    e = json_array_get(h, 0);
    ck_assert(json_is_integer(json_object_get(e, "time")));
    ck_assert_str_eq(tu_str(e, "name"), "start execution");
    ck_assert_str_eq(tu_str(e, "world_id"), df_world_id(w));
    ck_assert_str_eq(tu_str(json_array_get(h, 1), "name"), "finish execution");
    ck_assert_int_eq(json_array_size(json_object_get(j, "actions")), 3);
    for (size_t i = 0; i < json_array_size(json_object_get(j, "actions")); i++)
        keys_are(json_array_get(json_object_get(j, "actions"), i), action_keys);
    a = json_array_get(json_object_get(j, "actions"), 0);
    ck_assert(json_is_null(json_object_get(a, "run_step_id")));
    ck_assert(json_is_null(json_object_get(a, "caller_action_id")));
    a = json_array_get(json_object_get(j, "actions"), 1);
    ck_assert_str_eq(tu_str(json_object_get(a, "output"), "result"), "presented");
    ck_assert_int_eq(json_integer_value(json_object_get(a, "finalize_step_id")), 4);
    ck_assert_int_eq(json_integer_value(json_object_get(a, "caller_action_id")), 1);
    json_decref(j);
    df_world_free(w);
}
END_TEST

/* A suspended B keeps the plan running: the reference in C's input is still
 * an OutputReference, ended_at and execution_time are null. */
static int hold_run(df_action *a, const df_event *ev)
{
    if (ev == NULL)
        df_action_suspend(a);
    json_object_set_new(df_action_output(a), "y", json_integer(1));
    return 0;
}

static int pending_plan(df_action *a, json_t *args)
{
    df_action *first = df_plan_action(a, "Hold", args);
    json_t *input = json_pack("{s:o}", "x", df_output_ref(first, "y", NULL));

    df_plan_action(a, "B", input);
    json_decref(input);
    return df_plan_self(a, json_object());
}

START_TEST(json_while_running)
{
    static const struct df_action_class classes[] = {
        {.name = "Hold", .run = hold_run},
        {.name = "B", .run = copy_run},
        {.name = "Pending", .plan = pending_plan},
    };
    df_world *w = tu_world(NULL, classes, 3);
    const char *id = tu_trigger(w, "Pending", json_object());
    df_event ev = {DF_EVENT_USER, NULL};
    json_t *j, *ref;

    ck_assert(WAIT_UNTIL(strcmp(tu_step_state(w, id, 3), "suspended") == 0, 10));
    j = df_plan_json(w, id, DF_JSON_ACTIONS);
    ck_assert_str_eq(tu_str(j, "state"), "running");
    ck_assert_str_eq(tu_str(j, "result"), "pending");
    ck_assert(json_is_null(json_object_get(j, "ended_at")));
    ck_assert(json_is_null(json_object_get(j, "execution_time")));
    ck_assert(json_real_value(json_object_get(j, "real_time")) == 0.0);
    ref = json_object_get(
        json_object_get(json_array_get(json_object_get(j, "actions"), 2), "input"), "x");
    ck_assert_str_eq(tu_str(ref, "class"), "Dynflow::ExecutionPlan::OutputReference");
    ck_assert_str_eq(tu_str(ref, "execution_plan_id"), id);
    ck_assert_int_eq(json_integer_value(json_object_get(ref, "step_id")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(ref, "action_id")), 2);
    tu_flow_eq(json_object_get(ref, "subkeys"), "[\"y\"]");
    json_decref(j);
    ck_assert_int_eq(df_world_event(w, id, 3, &ev, 0, NULL), 0);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    df_world_free(w);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("plan");
    TCase *tc = tcase_create("plan");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, flow_shapes);
    tcase_add_test(tc, graph_runs_a_step_when_its_needs_are_done);
    tcase_add_test(tc, output_references);
    tcase_add_test(tc, planning_errors);
    tcase_add_test(tc, subscriptions_and_middleware);
    tcase_add_test(tc, secrets_are_redacted);
    tcase_add_test(tc, json_shapes);
    tcase_add_test(tc, json_while_running);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
