/*
 * Run and finalize flows: the shapes Dynflow reports (reference/engine.md
 * §1.5 and the §5 example) and the dependency-graph scheduling that replaces
 * Dynflow's tree walk (§8 #1) while the reported run_flow stays Dynflow's.
 */
#include <stdatomic.h>

#include "testutil.h"

/* ---- actions ------------------------------------------------------------------------- */

/* output = input + {"y": 42}; counts the runs of its class. */
static atomic_int runs;

static int copy_run(df_action *a, const df_event *ev)
{
    (void)ev;
    atomic_fetch_add(&runs, 1);
    json_object_update(df_action_output(a), df_action_input(a));
    json_object_set_new(df_action_output(a), "y", json_integer(42));
    return 0;
}

static int nothing_finalize(df_action *a)
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

/* Commit: sequence { concurrence { Ci, Review, Review }; Merge(ci and review outputs) } */
static int commit_plan(df_action *a, json_t *args)
{
    df_action *ci, *r1, *r2, *merge;
    json_t *input;

    df_sequence_begin(a);
    df_concurrence_begin(a);
    ci = df_plan_action(a, "Ci", args);
    r1 = df_plan_action(a, "Review", args);
    r2 = df_plan_action(a, "Review", args);
    df_concurrence_end(a);
    if (ci == NULL || r1 == NULL || r2 == NULL)
        return -1;
    input = json_pack("{s:o, s:[o, o]}", "ci_result", df_output_ref(ci, "y", NULL), "reviews",
                      df_output_ref(r1, "y", NULL), df_output_ref(r2, "y", NULL));
    merge = df_plan_action(a, "Merge", input);
    json_decref(input);
    df_sequence_end(a);
    return merge != NULL ? df_plan_self(a, json_object()) : -1;
}

/* A, then B using A.output, then C independent */
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

/* sequence { A; B; C } */
static int seq3_plan(df_action *a, json_t *args)
{
    df_sequence_begin(a);
    df_plan_action(a, "B", args);
    df_plan_action(a, "B", args);
    df_plan_action(a, "B", args);
    df_sequence_end(a);
    return df_plan_self(a, json_object());
}

/* sequence { A; Empty; B }: the empty action adds nothing to the flow */
static int seq_empty_plan(df_action *a, json_t *args)
{
    df_sequence_begin(a);
    df_plan_action(a, "B", args);
    df_plan_action(a, "Empty", args);
    df_plan_action(a, "B", args);
    df_sequence_end(a);
    return df_plan_self(a, json_object());
}

static const struct df_action_class shape_classes[] = {
    {.name = "A", .run = copy_run, .finalize = nothing_finalize},
    {.name = "B", .run = copy_run},
    {.name = "Ci", .run = copy_run},
    {.name = "Review", .run = copy_run},
    {.name = "Merge", .run = copy_run},
    {.name = "Main", .plan = main_plan},
    {.name = "Commit", .plan = commit_plan},
    {.name = "Chain", .plan = chain_plan},
    {.name = "Empty", .plan = empty_plan},
    {.name = "Bare"},
    {.name = "Seq3", .plan = seq3_plan},
    {.name = "SeqEmpty", .plan = seq_empty_plan},
    {.name = "Lone", .run = copy_run},
};
#define N_SHAPE (sizeof(shape_classes) / sizeof(shape_classes[0]))

static void expect_flows(df_world *w, const char *id, const char *run_flow,
                         const char *finalize_flow, const char *step_ids)
{
    json_t *j = tu_json(w, id, 0);

    tu_flow_eq(json_object_get(j, "run_flow"), run_flow);
    tu_flow_eq(json_object_get(j, "finalize_flow"), finalize_flow);
    tu_flow_eq(json_object_get(j, "step_ids"), step_ids);
    json_decref(j);
}

/* class and action of step n in a DF_JSON_STEPS plan */
static void expect_step(json_t *j, int step_id, const char *kind, const char *action_class,
                        int action_id)
{
    json_t *s = tu_find_step(j, step_id);
    char cls[80];

    ck_assert_msg(s != NULL, "no step %d", step_id);
    snprintf(cls, sizeof(cls), "Dynflow::ExecutionPlan::Steps::%s", kind);
    ck_assert_str_eq(tu_str(s, "class"), cls);
    ck_assert_str_eq(tu_str(s, "action_class"), action_class);
    ck_assert_int_eq(json_integer_value(json_object_get(s, "action_id")), action_id);
}

static void expect_action(json_t *j, int action_id, const char *cls, int plan_step, int run_step,
                          int finalize_step)
{
    json_t *a = tu_find_action(j, action_id);

    ck_assert_msg(a != NULL, "no action %d", action_id);
    ck_assert_str_eq(tu_str(a, "class"), cls);
    ck_assert_int_eq(json_integer_value(json_object_get(a, "plan_step_id")), plan_step);
    ck_assert_int_eq(json_integer_value(json_object_get(a, "run_step_id")), run_step);
    ck_assert_int_eq(json_integer_value(json_object_get(a, "finalize_step_id")), finalize_step);
}

/* The engine.md §5 example, step by step. */
START_TEST(main_example)
{
    df_world *w = tu_world(NULL, shape_classes, N_SHAPE);
    char id[DF_UUID_BUF];
    struct df_plan_info info = tu_run(w, "Main", json_object(), id);
    json_t *j, *b;

    ck_assert_int_eq(info.state, DF_PLAN_STOPPED);
    ck_assert_int_eq(info.result, DF_RESULT_SUCCESS);
    expect_flows(w, id, "[\"S\",3,6]", "[\"S\",4]", "[1,2,3,4,5,6]");

    j = tu_json(w, id, DF_JSON_STEPS | DF_JSON_ACTIONS);
    expect_step(j, 1, "PlanStep", "Main", 1);
    expect_step(j, 2, "PlanStep", "A", 2);
    expect_step(j, 3, "RunStep", "A", 2);
    expect_step(j, 4, "FinalizeStep", "A", 2);
    expect_step(j, 5, "PlanStep", "B", 3);
    expect_step(j, 6, "RunStep", "B", 3);
    tu_flow_eq(json_object_get(tu_find_step(j, 1), "children"), "[2,5]");
    expect_action(j, 1, "Main", 1, 0, 0);
    expect_action(j, 2, "A", 2, 3, 4);
    expect_action(j, 3, "B", 5, 6, 0);
    /* B ran after A: its reference was dereferenced to A's output */
    b = tu_find_action(j, 3);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(b, "input"), "x")), 42);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(b, "output"), "x")), 42);
    json_decref(j);
    df_world_free(w);
}
END_TEST

START_TEST(commit_example)
{
    df_world *w = tu_world(NULL, shape_classes, N_SHAPE);
    char id[DF_UUID_BUF];
    struct df_plan_info info = tu_run(w, "Commit", json_object(), id);
    json_t *merge;

    ck_assert_int_eq(info.result, DF_RESULT_SUCCESS);
    expect_flows(w, id, "[\"S\",[\"C\",3,5,7],9]", "[\"S\"]", "[1,2,3,4,5,6,7,8,9]");
    merge = tu_output(w, id, 5);
    tu_flow_eq(json_object_get(merge, "reviews"), "[42,42]");
    ck_assert_int_eq(json_integer_value(json_object_get(merge, "ci_result")), 42);
    json_decref(merge);
    df_world_free(w);
}
END_TEST

START_TEST(chain_example)
{
    df_world *w = tu_world(NULL, shape_classes, N_SHAPE);
    char id[DF_UUID_BUF];

    ck_assert_int_eq(tu_run(w, "Chain", json_object(), id).result, DF_RESULT_SUCCESS);
    expect_flows(w, id, "[\"C\",[\"S\",3,5],7]", "[\"S\"]", "[1,2,3,4,5,6,7]");
    df_world_free(w);
}
END_TEST

START_TEST(empty_and_single_flows)
{
    df_world *w = tu_world(NULL, shape_classes, N_SHAPE);
    char id[DF_UUID_BUF];

    /* plan_self without run or finalize */
    ck_assert_int_eq(tu_run(w, "Empty", json_object(), id).result, DF_RESULT_SUCCESS);
    expect_flows(w, id, "[\"C\"]", "[\"S\"]", "[1]");
    /* the default plan (plan_self(args)) of a class with nothing else */
    ck_assert_int_eq(tu_run(w, "Bare", json_object(), id).result, DF_RESULT_SUCCESS);
    expect_flows(w, id, "[\"C\"]", "[\"S\"]", "[1]");
    /* a root flow with one child is replaced by the child: a bare atom */
    ck_assert_int_eq(tu_run(w, "Lone", json_object(), id).result, DF_RESULT_SUCCESS);
    expect_flows(w, id, "2", "[\"S\"]", "[1,2]");
    df_world_free(w);
}
END_TEST

START_TEST(explicit_sequences)
{
    df_world *w = tu_world(NULL, shape_classes, N_SHAPE);
    char id[DF_UUID_BUF];

    ck_assert_int_eq(tu_run(w, "Seq3", json_object(), id).result, DF_RESULT_SUCCESS);
    expect_flows(w, id, "[\"S\",3,5,7]", "[\"S\"]", "[1,2,3,4,5,6,7]");
    ck_assert_int_eq(tu_run(w, "SeqEmpty", json_object(), id).result, DF_RESULT_SUCCESS);
    expect_flows(w, id, "[\"S\",3,6]", "[\"S\"]", "[1,2,3,4,5,6]");
    df_world_free(w);
}
END_TEST

/* ---- scheduling order ---------------------------------------------------------------- */

/* Gate actions: each run announces itself in "started" (by input "n"), then waits
 * until the test opens its gate, then marks "finished". */
#define GATES 8
static atomic_bool started[GATES], open_gate[GATES], finished[GATES];

static void gates_reset(void)
{
    for (int i = 0; i < GATES; i++) {
        atomic_store(&started[i], false);
        atomic_store(&open_gate[i], false);
        atomic_store(&finished[i], false);
    }
}

static int gate_n(df_action *a)
{
    json_int_t n = json_integer_value(json_object_get(df_action_input(a), "n"));

    return n >= 0 && n < GATES ? (int)n : 0;
}

static int gate_run(df_action *a, const df_event *ev)
{
    int n = gate_n(a);

    (void)ev;
    atomic_store(&started[n], true);
    if (!wait_until(atomic_load(&open_gate[n]), 10))
        return df_action_error(a, "gate %d was never opened", n);
    json_object_set_new(df_action_output(a), "y", json_integer(n));
    atomic_store(&finished[n], true);
    return 0;
}

static json_t *gate_args(int n)
{
    return json_pack("{s:i}", "n", n);
}

static df_action *plan_gate(df_action *a, int n, json_t *extra)
{
    json_t *args = gate_args(n);
    df_action *g;

    if (extra != NULL)
        json_object_update(args, extra);
    g = df_plan_action(a, "Gate", args);
    json_decref(args);
    return g;
}

/* E needs A and B by output references; A is in sequence { A; D }.
 * A = gate 1, D = gate 2, B = gate 3, E = gate 4. */
static int dag_plan(df_action *a, json_t *args)
{
    df_action *ga, *gb;
    json_t *refs;

    (void)args;
    df_sequence_begin(a);
    ga = plan_gate(a, 1, NULL);
    plan_gate(a, 2, NULL);
    df_sequence_end(a);
    gb = plan_gate(a, 3, NULL);
    refs = json_pack("{s:o, s:o}", "a", df_output_ref(ga, "y", NULL), "b",
                     df_output_ref(gb, "y", NULL));
    plan_gate(a, 4, refs);
    json_decref(refs);
    return df_plan_self(a, json_object());
}

START_TEST(dag_runs_a_step_as_soon_as_its_needs_are_done)
{
    static const struct df_action_class classes[] = {
        {.name = "Gate", .run = gate_run},
        {.name = "Dag", .plan = dag_plan},
    };
    df_world *w = tu_world(&(struct df_world_config){.pool_size = 4}, classes, 2);
    char id[DF_UUID_BUF];
    json_t *j, *e;

    gates_reset();
    ck_assert(tu_trigger_opts(w, "Dag", json_object(), NULL, id, NULL));
    /* A and B start together; D and E wait */
    ck_assert(wait_until(atomic_load(&started[1]) && atomic_load(&started[3]), 10));
    ck_assert(!atomic_load(&started[2]) && !atomic_load(&started[4]));
    /* A done: D (its sequence follower) starts, E still needs B */
    atomic_store(&open_gate[1], true);
    ck_assert(wait_until(atomic_load(&started[2]), 10));
    ck_assert(!atomic_load(&started[4]));
    /* B done: E starts although D is still running (Dynflow's tree would wait for D) */
    atomic_store(&open_gate[3], true);
    ck_assert_msg(wait_until(atomic_load(&started[4]), 10), "E did not start while D ran");
    ck_assert(!atomic_load(&finished[2]));
    atomic_store(&open_gate[4], true);
    ck_assert(wait_until(atomic_load(&finished[4]), 10));
    ck_assert(!atomic_load(&finished[2]));
    ck_assert_int_eq(tu_state(w, id), DF_PLAN_RUNNING);
    atomic_store(&open_gate[2], true);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);

    /* reported as Dynflow's tree: E after the whole sequence */
    expect_flows(w, id, "[\"S\",[\"C\",[\"S\",3,5],7],9]", "[\"S\"]", "[1,2,3,4,5,6,7,8,9]");
    j = tu_json(w, id, DF_JSON_ACTIONS);
    e = json_object_get(tu_find_action(j, 5), "input");
    ck_assert_int_eq(json_integer_value(json_object_get(e, "a")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(e, "b")), 3);
    json_decref(j);
    df_world_free(w);
}
END_TEST

/* sequence { concurrence { G1; G2 }; G3 }, and G4 independent of all */
static int nested_plan(df_action *a, json_t *args)
{
    (void)args;
    df_sequence_begin(a);
    df_concurrence_begin(a);
    plan_gate(a, 1, NULL);
    plan_gate(a, 2, NULL);
    df_concurrence_end(a);
    plan_gate(a, 3, NULL);
    df_sequence_end(a);
    plan_gate(a, 4, NULL);
    return df_plan_self(a, json_object());
}

START_TEST(sequence_waits_for_the_whole_previous_block)
{
    static const struct df_action_class classes[] = {
        {.name = "Gate", .run = gate_run},
        {.name = "Nested", .plan = nested_plan},
    };
    df_world *w = tu_world(&(struct df_world_config){.pool_size = 4}, classes, 2);
    char id[DF_UUID_BUF];

    gates_reset();
    ck_assert(tu_trigger_opts(w, "Nested", json_object(), NULL, id, NULL));
    ck_assert(wait_until(
        atomic_load(&started[1]) && atomic_load(&started[2]) && atomic_load(&started[4]), 10));
    atomic_store(&open_gate[1], true);
    ck_assert(wait_until(atomic_load(&finished[1]), 10));
    ck_assert_msg(!atomic_load(&started[3]), "G3 started before G2 finished");
    atomic_store(&open_gate[2], true);
    ck_assert(wait_until(atomic_load(&started[3]), 10));
    atomic_store(&open_gate[3], true);
    atomic_store(&open_gate[4], true);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    expect_flows(w, id, "[\"C\",[\"S\",[\"C\",3,5],7],9]", "[\"S\"]", "[1,2,3,4,5,6,7,8,9]");
    df_world_free(w);
}
END_TEST

/* Actions planned by a child action: Outer { sequence { Inner; G3 } } where
 * Inner { G1; G2 } concurrently: G3 waits for both of Inner's steps. */
static int inner_plan(df_action *a, json_t *args)
{
    (void)args;
    plan_gate(a, 1, NULL);
    plan_gate(a, 2, NULL);
    return df_plan_self(a, json_object());
}

static int outer_plan(df_action *a, json_t *args)
{
    df_sequence_begin(a);
    df_plan_action(a, "Inner", args);
    plan_gate(a, 3, NULL);
    df_sequence_end(a);
    return df_plan_self(a, json_object());
}

START_TEST(sequence_over_a_planning_child)
{
    static const struct df_action_class classes[] = {
        {.name = "Gate", .run = gate_run},
        {.name = "Inner", .plan = inner_plan},
        {.name = "Outer", .plan = outer_plan},
    };
    df_world *w = tu_world(&(struct df_world_config){.pool_size = 4}, classes, 3);
    char id[DF_UUID_BUF];

    gates_reset();
    ck_assert(tu_trigger_opts(w, "Outer", json_object(), NULL, id, NULL));
    ck_assert(wait_until(atomic_load(&started[1]) && atomic_load(&started[2]), 10));
    atomic_store(&open_gate[2], true);
    ck_assert(wait_until(atomic_load(&finished[2]), 10));
    ck_assert_msg(!atomic_load(&started[3]), "G3 started before G1 finished");
    atomic_store(&open_gate[1], true);
    atomic_store(&open_gate[3], true);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    expect_flows(w, id, "[\"S\",[\"C\",4,6],8]", "[\"S\"]", "[1,2,3,4,5,6,7,8]");
    df_world_free(w);
}
END_TEST

/* Subscribers are planned with the trigger, their flows in one concurrence. */
static const char *const subscribe_lone[] = {"Lone", NULL};

START_TEST(subscription_flow)
{
    static const struct df_action_class classes[] = {
        {.name = "Lone", .run = copy_run},
        {.name = "Listener", .run = copy_run, .subscribe = subscribe_lone},
    };
    df_world *w = tu_world(NULL, classes, 2);
    char id[DF_UUID_BUF];

    atomic_store(&runs, 0);
    ck_assert_int_eq(tu_run(w, "Lone", json_object(), id).result, DF_RESULT_SUCCESS);
    expect_flows(w, id, "[\"C\",2,4]", "[\"S\"]", "[1,2,3,4]");
    ck_assert_int_eq(atomic_load(&runs), 2);
    df_world_free(w);
}
END_TEST

static Suite *flow_suite(void)
{
    Suite *s = suite_create("flow");
    TCase *tc = tcase_create("flow");

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, main_example);
    tcase_add_test(tc, commit_example);
    tcase_add_test(tc, chain_example);
    tcase_add_test(tc, empty_and_single_flows);
    tcase_add_test(tc, explicit_sequences);
    tcase_add_test(tc, dag_runs_a_step_as_soon_as_its_needs_are_done);
    tcase_add_test(tc, sequence_waits_for_the_whole_previous_block);
    tcase_add_test(tc, sequence_over_a_planning_child);
    tcase_add_test(tc, subscription_flow);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(flow_suite());
}
