/*
 * The engine through its public API (dynflow.h): triggering and planning,
 * execution, events, helpers (polling, timeouts, sub-plans), control
 * (cancel, resume, skip), rescue, delayed plans, hooks, the cleaner,
 * subscriptions, middleware, singletons, queues, progress, secrets,
 * inspection and bad use (reference/engine.md §2–§3).
 */
#include <pthread.h>
#include <stdarg.h>

#include "testutil.h"

static double wall_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- common actions ------------------------------------------------------------------ */

static atomic_int ok_runs;

static int ok_run(df_action *a, const df_event *ev)
{
    (void)ev;
    atomic_fetch_add(&ok_runs, 1);
    json_object_set_new(df_action_output(a), "y", json_integer(1));
    return 0;
}

static int fail_run(df_action *a, const df_event *ev)
{
    (void)ev;
    return df_action_error(a, "failed on purpose");
}

/* Suspends on its first run; an event ends it, or fails it when data has "fail". */
static int wait_run(df_action *a, const df_event *ev)
{
    if (ev == NULL) {
        df_action_suspend(a);
        return 0;
    }
    json_object_set_new(df_action_output(a), "event", json_string(df_event_kind_name(ev->kind)));
    if (json_is_true(json_object_get(ev->data, "fail")))
        return df_action_error(a, "told to fail");
    return 0;
}

/* Fails while flaky_fail is set; counts its runs. */
static atomic_bool flaky_fail;
static atomic_int flaky_runs;

static int flaky_run(df_action *a, const df_event *ev)
{
    (void)ev;
    atomic_fetch_add(&flaky_runs, 1);
    if (atomic_load(&flaky_fail))
        return df_action_error(a, "flaky failure");
    return 0;
}

/* Finalize: appends the action id to fin_order; flaky variant fails while flaky_fail. */
static pthread_mutex_t fin_lock = PTHREAD_MUTEX_INITIALIZER;
static char fin_order[64];
static atomic_int fin_count, fin_runs_seen;

static int note_finalize(df_action *a)
{
    char c[2] = {(char)('0' + df_action_id(a)), 0};
    int none = 0;

    pthread_mutex_lock(&fin_lock);
    strncat(fin_order, c, sizeof(fin_order) - strlen(fin_order) - 1);
    pthread_mutex_unlock(&fin_lock);
    atomic_fetch_add(&fin_count, 1);
    atomic_compare_exchange_strong(&fin_runs_seen, &none, atomic_load(&ok_runs));
    return 0;
}

static int flaky_finalize(df_action *a)
{
    if (atomic_load(&flaky_fail))
        return df_action_error(a, "finalize failed");
    return note_finalize(a);
}

static int bad_plan(df_action *a, json_t *args)
{
    (void)args;
    return df_action_error(a, "bad input %d", 7);
}

/* Records the wall clock time of its run. */
static int stamp_run(df_action *a, const df_event *ev)
{
    (void)ev;
    json_object_set_new(df_action_output(a), "ran_at", json_real(wall_now()));
    return 0;
}

/* Plans each class of args["plan"] (concurrently, or in a sequence when
 * args["sequence"]), with args["args"] as their arguments. */
static int multi_plan(df_action *a, json_t *args)
{
    bool seq = json_is_true(json_object_get(args, "sequence"));
    json_t *child = json_object_get(args, "args"), *empty = json_object(), *v;
    size_t i;
    int rc = 0;

    if (seq)
        df_sequence_begin(a);
    json_array_foreach(json_object_get(args, "plan"), i, v)
    {
        if (df_plan_action(a, json_string_value(v), child != NULL ? child : empty) == NULL) {
            rc = -1;
            break;
        }
    }
    if (seq)
        df_sequence_end(a);
    json_decref(empty);
    return rc == 0 ? df_plan_self(a, json_object()) : -1;
}

/* {"plan": [names…]} */
static json_t *plan_of(const char *first, ...)
{
    json_t *names = json_array();
    va_list ap;

    va_start(ap, first);
    for (const char *n = first; n != NULL; n = va_arg(ap, const char *))
        json_array_append_new(names, json_string(n));
    va_end(ap);
    return json_pack("{s:o}", "plan", names);
}

static const struct df_action_class common[] = {
    {.name = "Ok", .run = ok_run},
    {.name = "Fail", .run = fail_run},
    {.name = "FailFail", .run = fail_run, .rescue = DF_RESCUE_FAIL},
    {.name = "FailSkip", .run = fail_run, .rescue = DF_RESCUE_SKIP},
    {.name = "Wait", .run = wait_run},
    {.name = "WaitFail", .run = wait_run, .rescue = DF_RESCUE_FAIL},
    {.name = "Multi", .plan = multi_plan},
    {.name = "MultiFail", .plan = multi_plan, .rescue = DF_RESCUE_FAIL},
    {.name = "BadPlan", .plan = bad_plan},
    {.name = "Flaky", .run = flaky_run},
    {.name = "Fin", .run = ok_run, .finalize = note_finalize},
    {.name = "FinFlaky", .run = ok_run, .finalize = flaky_finalize},
    {.name = "Stamp", .run = stamp_run},
};

static void reset_counters(void)
{
    atomic_store(&ok_runs, 0);
    atomic_store(&flaky_fail, false);
    atomic_store(&flaky_runs, 0);
    atomic_store(&fin_count, 0);
    atomic_store(&fin_runs_seen, 0);
    fin_order[0] = '\0';
}

/* A started world with the common classes and extra ones. */
static df_world *world_with(const struct df_world_config *cfg, const struct df_action_class *extra,
                            size_t n_extra)
{
    df_error err;
    df_world *w = df_world_new(cfg, &err);

    ck_assert_ptr_nonnull(w);
    reset_counters();
    for (size_t i = 0; i < sizeof(common) / sizeof(common[0]); i++)
        ck_assert_msg(df_world_register(w, &common[i], &err) == 0, "%s", err.text);
    for (size_t i = 0; i < n_extra; i++)
        ck_assert_msg(df_world_register(w, &extra[i], &err) == 0, "%s", err.text);
    ck_assert_msg(df_world_start(w, &err) == 0, "%s", err.text);
    return w;
}

static df_world *world(void)
{
    return world_with(NULL, NULL, 0);
}

/* A macro, so that a failure names the caller's line. */
#define expect_info(info, st, res)                                                                 \
    ck_assert_msg((info)->state == (st) && (info)->result == (res), "plan %s is %s/%s, not %s/%s", \
                  (info)->id, df_plan_state_name((info)->state), df_result_name((info)->result),   \
                  df_plan_state_name(st), df_result_name(res))

static bool suspended(df_world *w, const char *id, int step_id)
{
    return tu_step_is(w, id, step_id, "suspended");
}

static uint64_t count_plans(df_world *w, int state)
{
    uint64_t n = 0;
    df_error err;

    ck_assert_msg(df_plan_count(w, state, &n, &err) == 0, "%s", err.text);
    return n;
}

/* ---- triggering and planning --------------------------------------------------------- */

static pthread_t plan_thread, run_thread;

static int thread_plan(df_action *a, json_t *args)
{
    plan_thread = pthread_self();
    return df_plan_self(a, json_deep_copy(args));
}

static int thread_run(df_action *a, const df_event *ev)
{
    (void)a;
    (void)ev;
    run_thread = pthread_self();
    return 0;
}

START_TEST(trigger_plans_in_the_callers_thread)
{
    static const struct df_action_class extra[] = {
        {.name = "Threads", .plan = thread_plan, .run = thread_run},
    };
    df_world *w = world_with(NULL, extra, 1);
    char id[DF_UUID_BUF];
    struct df_plan_info info;

    ck_assert(tu_trigger_opts(w, "Threads", json_object(), NULL, id, NULL));
    ck_assert(pthread_equal(plan_thread, pthread_self()));
    /* planning is over when df_trigger returns */
    ck_assert_int_eq(df_plan_get_info(w, id, &info), 0);
    ck_assert_msg(info.state == DF_PLAN_PLANNED || info.state == DF_PLAN_RUNNING ||
                      info.state == DF_PLAN_STOPPED,
                  "plan is %s after df_trigger", df_plan_state_name(info.state));
    ck_assert_str_eq(info.label, "Threads");
    info = tu_wait(w, id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert(!pthread_equal(run_thread, pthread_self()));
    df_world_free(w);
}
END_TEST

START_TEST(planning_errors)
{
    df_world *w = world();
    char id[DF_UUID_BUF];
    df_error err;
    struct df_plan_info info;
    json_t *j;

    /* the action's own error */
    ck_assert(!tu_trigger_opts(w, "BadPlan", json_object(), NULL, id, &err));
    ck_assert_str_eq(err.text, "bad input 7");
    ck_assert_int_eq(df_plan_get_info(w, id, &info), 0);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    ck_assert_str_eq(tu_step_error(w, id, 1), "bad input 7");
    ck_assert_str_eq(tu_history(w, id), "finish execution");

    /* a failing child fails its parent; the sibling planned before it never runs */
    ck_assert(!tu_trigger_opts(w, "Multi", plan_of("Ok", "BadPlan", NULL), NULL, id, &err));
    ck_assert_str_eq(err.text, "bad input 7");
    j = tu_json(w, id, DF_JSON_STEPS);
    ck_assert_str_eq(tu_str(tu_find_step(j, 1), "state"), "error");
    ck_assert_str_eq(tu_str(tu_find_step(j, 2), "state"), "success"); /* plan Ok */
    ck_assert_str_eq(tu_str(tu_find_step(j, 3), "state"), "pending"); /* run Ok */
    ck_assert_str_eq(tu_str(tu_find_step(j, 4), "state"), "error");   /* plan BadPlan */
    json_decref(j);
    ck_assert_int_eq(tu_state(w, id), DF_PLAN_STOPPED);
    ck_assert_int_eq(atomic_load(&ok_runs), 0);

    /* a class that is not registered, planned from inside */
    ck_assert(!tu_trigger_opts(w, "Multi", plan_of("Nope", NULL), NULL, id, &err));
    ck_assert_msg(strstr(err.text, "Nope") != NULL, "%s", err.text);
    df_world_free(w);
}
END_TEST

struct racer {
    df_world *w;
    const char *id;
    pthread_barrier_t *go;
    int rc;
};

static void *race_trigger(void *arg)
{
    struct racer *r = arg;
    struct df_trigger_opts opts = {.plan_id = r->id};
    char out[DF_UUID_BUF];
    df_error err;

    pthread_barrier_wait(r->go);
    r->rc = df_trigger(r->w, "Ok", json_object(), &opts, out, NULL, &err);
    return NULL;
}

/* Eight triggers with one fixed id at the same moment (Foreman retrying a launch): one plan. */
START_TEST(racing_triggers_with_one_id_make_one_plan)
{
    df_world *w = world();
    char id[DF_UUID_BUF];
    pthread_t t[8];
    struct racer r[8];
    pthread_barrier_t go;
    int created = 0;

    tu_uuid(id);
    pthread_barrier_init(&go, NULL, 8);
    for (int i = 0; i < 8; i++) {
        r[i] = (struct racer){w, id, &go, 0};
        pthread_create(&t[i], NULL, race_trigger, &r[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        ck_assert(r[i].rc == 0 || r[i].rc == -EEXIST);
        created += r[i].rc == 0;
    }
    pthread_barrier_destroy(&go);
    ck_assert_int_eq(created, 1);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_int_eq(atomic_load(&ok_runs), 1);
    df_world_free(w);
}
END_TEST

START_TEST(trigger_refuses_bad_requests)
{
    df_world *w = world();
    char id[DF_UUID_BUF], given[DF_UUID_BUF], out[DF_UUID_BUF];
    struct df_trigger_opts opts = {0};
    struct df_plan_info info;
    bool planned = true;
    df_error err;

    /* unknown class: nothing is created */
    tu_uuid(given);
    opts.plan_id = given;
    err.text[0] = '\0';
    ck_assert_int_eq(df_trigger(w, "NoSuchClass", json_object(), &opts, out, &planned, &err),
                     -ENOENT);
    ck_assert_msg(strstr(err.text, "NoSuchClass") != NULL, "%s", err.text);
    ck_assert_int_eq(df_plan_get_info(w, given, &info), -ENOENT);
    ck_assert_uint_eq(count_plans(w, -1), 0);

    /* ids that are not UUIDs */
    opts.plan_id = "not-a-uuid";
    ck_assert_int_eq(df_trigger(w, "Ok", json_object(), &opts, out, &planned, &err), -EINVAL);
    opts.plan_id = "";
    ck_assert_int_eq(df_trigger(w, "Ok", json_object(), &opts, out, &planned, &err), -EINVAL);
    ck_assert_uint_eq(count_plans(w, -1), 0);

    /* a given id is used, and only once: in memory and after it was stored */
    opts.plan_id = given;
    ck_assert(tu_trigger_opts(w, "Wait", json_object(), &opts, id, NULL));
    ck_assert_str_eq(id, given);
    ck_assert_int_eq(df_trigger(w, "Ok", json_object(), &opts, out, &planned, &err), -EEXIST);
    ck_assert(wait_until(suspended(w, given, 2), 10));
    tu_event(w, given, 2, DF_EVENT_USER, NULL, 0);
    tu_expect(w, given, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    df_world_sync(w);
    ck_assert_int_eq(df_trigger(w, "Ok", json_object(), &opts, out, &planned, &err), -EEXIST);
    ck_assert_msg(err.text[0] != '\0', "no message");
    ck_assert_uint_eq(count_plans(w, -1), 1);
    ck_assert_int_eq(atomic_load(&ok_runs), 0);
    df_world_free(w);
}
END_TEST

/* ---- output references --------------------------------------------------------------- */

static int produce_run(df_action *a, const df_event *ev)
{
    (void)ev;
    json_object_set_new(df_action_output(a), "y", json_pack("{s:[i, i]}", "deep", 1, 2));
    json_object_set_new(df_action_output(a), "s", json_string("str"));
    return 0;
}

static atomic_int consume_runs;

static int consume_run(df_action *a, const df_event *ev)
{
    (void)ev;
    atomic_fetch_add(&consume_runs, 1);
    json_object_set(df_action_output(a), "seen", df_action_input(a));
    return 0;
}

/* Producer, then Consumer with references picked by args["keys"]: "ok" or "missing". */
static int refs_plan(df_action *a, json_t *args)
{
    const char *which = json_string_value(json_object_get(args, "keys"));
    df_action *p = df_plan_action(a, "Producer", args);
    json_t *input;

    if (p == NULL)
        return -1;
    if (strcmp(which, "ok") == 0)
        input = json_pack("{s:o, s:[o], s:i}", "x", df_output_ref(p, "y", "deep", NULL), "z",
                          df_output_ref(p, "s", NULL), "lit", 5);
    else if (strcmp(which, "missing") == 0)
        input = json_pack("{s:o}", "x", df_output_ref(p, "nope", NULL));
    else
        input = json_pack("{s:o}", "x", df_output_ref(p, "y", "absent", NULL));
    df_plan_action(a, "Consumer", input);
    json_decref(input);
    return df_plan_self(a, json_object());
}

START_TEST(output_references_are_dereferenced_at_run)
{
    static const struct df_action_class extra[] = {
        {.name = "Producer", .run = produce_run},
        {.name = "Consumer", .run = consume_run},
        {.name = "Refs", .plan = refs_plan},
    };
    df_world *w = world_with(NULL, extra, 3);
    char id[DF_UUID_BUF];
    json_t *j, *in, *err;
    struct df_plan_info info;

    atomic_store(&consume_runs, 0);
    info = tu_run(w, "Refs", json_pack("{s:s}", "keys", "ok"), id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    j = tu_json(w, id, DF_JSON_ACTIONS);
    in = json_object_get(tu_find_action(j, 3), "input");
    tu_flow_eq(in, "{\"x\":[1,2],\"z\":[\"str\"],\"lit\":5}");
    tu_flow_eq(json_object_get(json_object_get(tu_find_action(j, 3), "output"), "seen"),
               "{\"x\":[1,2],\"z\":[\"str\"],\"lit\":5}");
    json_decref(j);

    /* a missing key is the consumer's KeyError; the run itself never starts */
    info = tu_run(w, "Refs", json_pack("{s:s}", "keys", "missing"), id);
    expect_info(&info, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    j = tu_json(w, id, DF_JSON_STEPS);
    err = json_object_get(tu_find_step(j, 5), "error");
    ck_assert_str_eq(tu_str(err, "exception_class"), "KeyError");
    ck_assert_str_eq(tu_str(err, "message"), "key not found: \"nope\"");
    ck_assert_str_eq(tu_str(tu_find_step(j, 3), "state"), "success");
    json_decref(j);

    info = tu_run(w, "Refs", json_pack("{s:s}", "keys", "nested"), id);
    expect_info(&info, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    ck_assert_str_eq(tu_step_error(w, id, 5), "key not found: \"absent\"");
    ck_assert_int_eq(atomic_load(&consume_runs), 1);
    df_world_free(w);
}
END_TEST

/* ---- parallel run, finalize ---------------------------------------------------------- */

static atomic_int met;

/* Each of two waits for the other to have started: serialized, they would fail. */
static int rendezvous_run(df_action *a, const df_event *ev)
{
    (void)ev;
    atomic_fetch_add(&met, 1);
    if (!wait_until(atomic_load(&met) >= 2, 10))
        return df_action_error(a, "the other action never started");
    return 0;
}

START_TEST(independent_actions_run_in_parallel)
{
    static const struct df_action_class extra[] = {{.name = "Rendezvous", .run = rendezvous_run}};
    df_world *w = world_with(&(struct df_world_config){.pool_size = 2}, extra, 1);
    char id[DF_UUID_BUF];
    struct df_plan_info info;

    atomic_store(&met, 0);
    info = tu_run(w, "Multi", plan_of("Rendezvous", "Rendezvous", NULL), id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    df_world_free(w);
}
END_TEST

START_TEST(finalize_runs_in_order_after_the_run_phase)
{
    df_world *w = world();
    char id[DF_UUID_BUF];
    struct df_plan_info info;

    info = tu_run(w, "Multi", plan_of("Fin", "Ok", "Fin", "Fin", NULL), id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_str_eq(fin_order, "245");
    /* every run step was done before the first finalize */
    ck_assert_int_eq(atomic_load(&fin_runs_seen), 4);
    ck_assert_str_eq(tu_step_state(w, id, 4), "success");

    /* no finalize at all when the run phase failed */
    atomic_store(&fin_count, 0);
    info = tu_run(w, "Multi", plan_of("Fin", "Fail", NULL), id);
    expect_info(&info, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    ck_assert_int_eq(atomic_load(&fin_count), 0);
    ck_assert_str_eq(tu_step_state(w, id, 4), "pending");
    df_world_free(w);
}
END_TEST

/* ---- states, results, history -------------------------------------------------------- */

START_TEST(plan_states_and_results)
{
    df_world *w = world();
    char id[DF_UUID_BUF], later[DF_UUID_BUF];
    struct df_plan_info info;
    struct df_trigger_opts delayed = {.delayed = true, .start_at = wall_now() + 3600};
    unsigned n = 0;

    info = tu_run(w, "Ok", json_object(), id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    info = tu_run(w, "Multi", plan_of("FailSkip", "Ok", NULL), id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_WARNING);
    info = tu_run(w, "FailFail", json_object(), id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    info = tu_run(w, "Fail", json_object(), id);
    expect_info(&info, DF_PLAN_PAUSED, DF_RESULT_ERROR);

    /* running with a suspended step, and scheduled: pending */
    ck_assert(tu_trigger_opts(w, "Wait", json_object(), NULL, id, NULL));
    ck_assert(wait_until(suspended(w, id, 2), 10));
    ck_assert_int_eq(df_plan_get_info(w, id, &info), 0);
    expect_info(&info, DF_PLAN_RUNNING, DF_RESULT_PENDING);
    ck_assert(tu_trigger_opts(w, "Ok", json_object(), &delayed, later, NULL));
    ck_assert_int_eq(df_plan_get_info(w, later, &info), 0);
    expect_info(&info, DF_PLAN_SCHEDULED, DF_RESULT_PENDING);

    /* cancelled: only a cancelled delayed plan */
    ck_assert_int_eq(df_plan_cancel(w, later, false, &n, NULL), 0);
    ck_assert_uint_eq(n, 1);
    info = tu_wait(w, later);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_CANCELLED);
    ck_assert_str_eq(tu_step_state(w, later, 1), "cancelled");
    ck_assert_msg(strstr(tu_history(w, later), "Delayed task cancelled") != NULL, "%s",
                  tu_history(w, later));
    ck_assert_int_eq(atomic_load(&ok_runs), 2);
    df_world_free(w);
}
END_TEST

START_TEST(execution_history)
{
    df_world *w = world();
    char id[DF_UUID_BUF];
    struct df_trigger_opts delayed = {.delayed = true, .frozen = true};
    double t0 = (double)time(NULL);
    json_t *j, *e;
    size_t i;

    tu_run(w, "Ok", json_object(), id);
    ck_assert_str_eq(tu_history(w, id), "start execution,finish execution");
    j = tu_json(w, id, 0);
    json_array_foreach(json_object_get(j, "execution_history"), i, e)
    {
        ck_assert_str_eq(tu_str(e, "world_id"), df_world_id(w));
        ck_assert(json_is_integer(json_object_get(e, "time")));
        ck_assert_int_ge(json_integer_value(json_object_get(e, "time")), (json_int_t)t0);
        ck_assert_int_le(json_integer_value(json_object_get(e, "time")), (json_int_t)time(NULL));
    }
    json_decref(j);

    atomic_store(&flaky_fail, true);
    tu_run(w, "Flaky", json_object(), id);
    ck_assert_str_eq(tu_history(w, id), "start execution,pause execution");
    atomic_store(&flaky_fail, false);
    ck_assert_int_eq(df_plan_resume(w, id, NULL), 0);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_str_eq(tu_history(w, id),
                     "start execution,pause execution,start execution,finish execution");

    ck_assert(tu_trigger_opts(w, "Ok", json_object(), &delayed, id, NULL));
    ck_assert_str_eq(tu_history(w, id), "delay");
    ck_assert_int_eq(df_plan_unfreeze(w, id, NULL), 0);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_str_eq(tu_history(w, id), "delay,start execution,finish execution");
    df_world_free(w);
}
END_TEST

/* ---- suspend and events -------------------------------------------------------------- */

START_TEST(a_suspended_step_frees_its_worker)
{
    df_world *w = world_with(&(struct df_world_config){.pool_size = 1}, NULL, 0);
    char waiting[DF_UUID_BUF], other[DF_UUID_BUF], second[DF_UUID_BUF];
    struct df_plan_info info;

    ck_assert(tu_trigger_opts(w, "Wait", json_object(), NULL, waiting, NULL));
    ck_assert(wait_until(suspended(w, waiting, 2), 10));
    ck_assert(tu_trigger_opts(w, "Wait", json_object(), NULL, second, NULL));
    ck_assert(wait_until(suspended(w, second, 2), 10));
    info = tu_run(w, "Ok", json_object(), other);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_int_eq(tu_state(w, waiting), DF_PLAN_RUNNING);
    tu_event(w, waiting, 2, DF_EVENT_USER, NULL, 0);
    tu_event(w, second, 2, DF_EVENT_USER, NULL, 0);
    tu_expect(w, waiting, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    tu_expect(w, second, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    df_world_free(w);
}
END_TEST

static atomic_bool collector_busy, collector_release;

/* Appends each event's "n" to output "seen"; ends on "last"; the event with
 * "block" waits in run until the test releases it. */
static int collect_run(df_action *a, const df_event *ev)
{
    json_t *out = df_action_output(a), *seen = json_object_get(out, "seen");

    if (seen == NULL) {
        seen = json_array();
        json_object_set_new(out, "seen", seen);
    }
    if (ev == NULL) {
        df_action_suspend(a);
        return 0;
    }
    json_array_append(seen, json_object_get(ev->data, "n"));
    if (json_is_true(json_object_get(ev->data, "block"))) {
        atomic_store(&collector_busy, true);
        wait_until(atomic_load(&collector_release), 10);
    }
    if (!json_is_true(json_object_get(ev->data, "last")))
        df_action_suspend(a);
    return 0;
}

static void send_n(df_world *w, const char *id, int n, bool last, bool block)
{
    json_t *data = json_pack("{s:i, s:b, s:b}", "n", n, "last", last, "block", block);

    tu_event(w, id, 2, DF_EVENT_USER, data, 0);
    json_decref(data);
}

static void expect_seen(df_world *w, const char *id, const char *seen)
{
    json_t *out = tu_output(w, id, 1);

    tu_flow_eq(json_object_get(out, "seen"), seen);
    json_decref(out);
}

START_TEST(events_are_delivered_in_order_and_queued_while_running)
{
    static const struct df_action_class extra[] = {{.name = "Collect", .run = collect_run}};
    df_world *w = world_with(NULL, extra, 1);
    char id[DF_UUID_BUF];

    ck_assert(tu_trigger_opts(w, "Collect", json_object(), NULL, id, NULL));
    ck_assert(wait_until(suspended(w, id, 2), 10));
    for (int n = 1; n <= 6; n++)
        send_n(w, id, n, n == 6, false);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    expect_seen(w, id, "[1,2,3,4,5,6]");

    /* events sent while the step runs wait for it, none is dropped */
    atomic_store(&collector_busy, false);
    atomic_store(&collector_release, false);
    ck_assert(tu_trigger_opts(w, "Collect", json_object(), NULL, id, NULL));
    ck_assert(wait_until(suspended(w, id, 2), 10));
    send_n(w, id, 1, false, true);
    ck_assert(wait_until(atomic_load(&collector_busy), 10));
    send_n(w, id, 2, false, false);
    send_n(w, id, 3, true, false);
    ck_assert_str_eq(tu_step_state(w, id, 2), "running");
    atomic_store(&collector_release, true);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    expect_seen(w, id, "[1,2,3]");
    df_world_free(w);
}
END_TEST

/* Plans an event to itself (now, or after input "delay" seconds) and ends on it. */
static int self_event_run(df_action *a, const df_event *ev)
{
    json_t *data;
    df_event mine;

    if (ev != NULL) {
        json_object_set_new(df_action_output(a), "got", json_string(df_event_kind_name(ev->kind)));
        json_object_set_new(df_action_output(a), "got_at", json_real(wall_now()));
        json_object_set(df_action_output(a), "data", ev->data);
        return 0;
    }
    data = json_pack("{s:s}", "from", "myself");
    mine = (df_event){DF_EVENT_USER, data};
    df_action_plan_event(a, &mine, json_number_value(json_object_get(df_action_input(a), "delay")));
    json_decref(data);
    json_object_set_new(df_action_output(a), "sent_at", json_real(wall_now()));
    df_action_suspend(a);
    return 0;
}

static double out_real(df_world *w, const char *id, const char *key)
{
    json_t *out = tu_output(w, id, 1);
    double v = json_number_value(json_object_get(out, key));

    json_decref(out);
    return v;
}

START_TEST(delayed_events_use_timers)
{
    static const struct df_action_class extra[] = {{.name = "SelfEvent", .run = self_event_run}};
    df_world *w = world_with(NULL, extra, 1);
    char id[DF_UUID_BUF];
    json_t *out;
    double sent;

    /* plan_event at once: delivered after the execution that planned it */
    tu_run(w, "SelfEvent", json_pack("{s:f}", "delay", 0.0), id);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    out = tu_output(w, id, 1);
    ck_assert_str_eq(tu_str(out, "got"), "user");
    ck_assert_str_eq(tu_str(json_object_get(out, "data"), "from"), "myself");
    json_decref(out);

    /* plan_event with a delay */
    tu_run(w, "SelfEvent", json_pack("{s:f}", "delay", 0.3), id);
    ck_assert_double_ge(out_real(w, id, "got_at") - out_real(w, id, "sent_at"), 0.29);

    /* df_world_event with a delay; to a step that does not exist it is refused at once */
    ck_assert(tu_trigger_opts(w, "Wait", json_object(), NULL, id, NULL));
    ck_assert(wait_until(suspended(w, id, 2), 10));
    ck_assert_int_eq(df_world_event(w, id, 99, &(df_event){DF_EVENT_USER, NULL}, 0.3, NULL),
                     -ENOENT);
    sent = tu_now();
    tu_event(w, id, 2, DF_EVENT_USER, NULL, 0.3);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_double_ge(tu_now() - sent, 0.29);
    df_world_free(w);
}
END_TEST

/* ---- polling and timeouts ------------------------------------------------------------ */

START_TEST(polling_intervals)
{
    for (unsigned i = 0; i < 5; i++)
        ck_assert_double_eq(df_polling_interval(i), 0.5);
    for (unsigned i = 5; i < 10; i++)
        ck_assert_double_eq(df_polling_interval(i), 1);
    for (unsigned i = 10; i < 15; i++)
        ck_assert_double_eq(df_polling_interval(i), 2);
    ck_assert_double_eq(df_polling_interval(15), 4);
    ck_assert_double_eq(df_polling_interval(20), 8);
    ck_assert_double_eq(df_polling_interval(25), 16);
    ck_assert_double_eq(df_polling_interval(30), 16);
    ck_assert_double_eq(df_polling_interval(100000), 16);
}
END_TEST

/* input "fail_polls": the first polls that fail; "polls": polls until done */
static atomic_int invokes;

static int poll_invoke(df_action *a)
{
    atomic_fetch_add(&invokes, 1);
    json_object_set_new(df_action_output(a), "task", json_pack("{s:i}", "id", 7));
    return 0;
}

static int poll_poll(df_action *a)
{
    json_t *out = df_action_output(a);
    json_int_t n = json_integer_value(json_object_get(out, "polled")) + 1;
    json_int_t fails = json_integer_value(json_object_get(df_action_input(a), "fail_polls"));

    json_object_set_new(out, "polled", json_integer(n));
    if (n <= fails)
        return df_action_error(a, "poll %d failed", (int)n);
    return 0;
}

static bool poll_done(df_action *a)
{
    json_int_t n = json_integer_value(json_object_get(df_action_output(a), "polled"));
    json_int_t fails = json_integer_value(json_object_get(df_action_input(a), "fail_polls"));
    json_int_t need = json_integer_value(json_object_get(df_action_input(a), "polls"));

    return need > 0 && n - fails >= need;
}

static int poll_finish(df_action *a)
{
    json_object_set_new(df_action_output(a), "finished", json_true());
    return 0;
}

static const struct df_polling_ops poll_ops = {poll_invoke, poll_poll, poll_done, poll_finish};

static int polling_run(df_action *a, const df_event *ev)
{
    json_t *timeout = json_object_get(df_action_input(a), "timeout");

    if (ev == NULL && timeout != NULL)
        df_action_schedule_timeout(a, json_number_value(timeout));
    return df_polling_run(a, ev, &poll_ops);
}

static void expect_attempts(df_world *w, const char *id, json_int_t total, json_int_t failed)
{
    json_t *out = tu_output(w, id, 1), *pa = json_object_get(out, "poll_attempts");

    ck_assert_int_eq(json_integer_value(json_object_get(pa, "total")), total);
    ck_assert_int_eq(json_integer_value(json_object_get(pa, "failed")), failed);
    json_decref(out);
}

START_TEST(polling_retries_and_timeouts)
{
    static const struct df_action_class extra[] = {{.name = "Poller", .run = polling_run}};
    df_world *w = world_with(NULL, extra, 1);
    char done[DF_UUID_BUF], flaky[DF_UUID_BUF], broken[DF_UUID_BUF], timed[DF_UUID_BUF];
    double t0 = tu_now();
    json_t *out;

    atomic_store(&invokes, 0);
    ck_assert(tu_trigger_opts(w, "Poller", json_pack("{s:i}", "polls", 2), NULL, done, NULL));
    ck_assert(tu_trigger_opts(w, "Poller", json_pack("{s:i, s:i}", "polls", 1, "fail_polls", 2),
                              NULL, flaky, NULL));
    ck_assert(
        tu_trigger_opts(w, "Poller", json_pack("{s:i}", "fail_polls", 100), NULL, broken, NULL));
    ck_assert(tu_trigger_opts(w, "Poller", json_pack("{s:f}", "timeout", 0.2), NULL, timed, NULL));

    /* two good polls, 0.5 s apart */
    tu_expect(w, done, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    expect_attempts(w, done, 2, 0);
    out = tu_output(w, done, 1);
    ck_assert(json_is_true(json_object_get(out, "finished")));
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(out, "task"), "id")), 7);
    json_decref(out);

    /* two failed polls are retried; the third works and resets the failures */
    tu_expect(w, flaky, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    expect_attempts(w, flaky, 3, 0);

    /* three failures in a row fail the step with the poll's error */
    tu_expect(w, broken, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    expect_attempts(w, broken, 3, 3);
    ck_assert_str_eq(tu_step_error(w, broken, 2), "poll 3 failed");
    ck_assert_double_ge(tu_now() - t0, 1.45);

    /* the timeout comes before the first poll */
    tu_expect(w, timed, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    ck_assert_str_eq(tu_step_error(w, timed, 2), "Timeout exceeded.");
    ck_assert_int_eq(tu_output_int(w, timed, 1, "polled"), 0);
    ck_assert_int_eq(atomic_load(&invokes), 4);
    df_world_free(w);
}
END_TEST

/* ---- cancel -------------------------------------------------------------------------- */

static int cancellable_run(df_action *a, const df_event *ev)
{
    if (ev == NULL) {
        df_action_suspend(a);
        return 0;
    }
    json_object_set_new(df_action_output(a), "event", json_string(df_event_kind_name(ev->kind)));
    return 0;
}

START_TEST(cancel)
{
    static const struct df_action_class extra[] = {
        {.name = "Cancellable", .run = cancellable_run, .flags = DF_ACTION_CANCELLABLE},
    };
    df_world *w = world_with(NULL, extra, 1);
    char id[DF_UUID_BUF], later[DF_UUID_BUF];
    struct df_trigger_opts delayed = {.delayed = true, .start_at = wall_now() + 3600};
    unsigned n = 99;
    json_t *out;

    /* Multi: 2 Cancellable (run 3), 4 Wait (run 5), 6 Cancellable (run 7) */
    ck_assert(tu_trigger_opts(w, "Multi", plan_of("Cancellable", "Wait", "Cancellable", NULL), NULL,
                              id, NULL));
    ck_assert(wait_until(suspended(w, id, 3) && suspended(w, id, 5) && suspended(w, id, 7), 10));
    ck_assert_int_eq(df_plan_cancel(w, id, false, &n, NULL), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert(wait_until(tu_step_is(w, id, 3, "success") && tu_step_is(w, id, 7, "success"), 10));
    ck_assert_str_eq(tu_step_state(w, id, 5), "suspended");
    out = tu_output(w, id, 2);
    ck_assert_str_eq(tu_str(out, "event"), "cancel");
    json_decref(out);
    out = tu_output(w, id, 3);
    ck_assert_ptr_null(json_object_get(out, "event"));
    json_decref(out);
    tu_event(w, id, 5, DF_EVENT_USER, NULL, 0);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);

    /* force: Abort */
    ck_assert(tu_trigger_opts(w, "Cancellable", json_object(), NULL, id, NULL));
    ck_assert(wait_until(suspended(w, id, 2), 10));
    ck_assert_int_eq(df_plan_cancel(w, id, true, &n, NULL), 0);
    ck_assert_uint_eq(n, 1);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    out = tu_output(w, id, 1);
    ck_assert_str_eq(tu_str(out, "event"), "abort");
    json_decref(out);

    /* nothing to cancel in a stopped plan */
    ck_assert_int_eq(df_plan_cancel(w, id, false, &n, NULL), 0);
    ck_assert_uint_eq(n, 0);

    /* a scheduled plan is cancelled outright */
    ck_assert(tu_trigger_opts(w, "Ok", json_object(), &delayed, later, NULL));
    ck_assert_int_eq(df_plan_cancel(w, later, false, &n, NULL), 0);
    ck_assert_uint_eq(n, 1);
    tu_expect(w, later, DF_PLAN_STOPPED, DF_RESULT_CANCELLED);
    ck_assert_int_eq(atomic_load(&ok_runs), 0);
    df_world_free(w);
}
END_TEST

/* ---- resume and skip ----------------------------------------------------------------- */

START_TEST(resume_reruns_the_failed_step_then_finalize)
{
    df_world *w = world();
    char id[DF_UUID_BUF];
    df_error err;
    struct df_plan_info info;

    /* a failed run step runs again; the steps that succeeded do not */
    atomic_store(&flaky_fail, true);
    info = tu_run(w, "Multi", plan_of("Fin", "Flaky", NULL), id);
    expect_info(&info, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    ck_assert_int_eq(atomic_load(&fin_count), 0);
    atomic_store(&flaky_fail, false);
    ck_assert_int_eq(df_plan_resume(w, id, &err), 0);
    info = tu_wait(w, id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_int_eq(atomic_load(&flaky_runs), 2);
    ck_assert_int_eq(atomic_load(&ok_runs), 1);
    ck_assert_int_eq(atomic_load(&fin_count), 1);

    /* a failed finalize: the whole finalize phase runs again */
    reset_counters();
    atomic_store(&flaky_fail, true);
    info = tu_run(w, "Multi", plan_of("Fin", "FinFlaky", NULL), id);
    expect_info(&info, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    ck_assert_str_eq(fin_order, "2");
    ck_assert_str_eq(tu_step_error(w, id, 7), "finalize failed");
    atomic_store(&flaky_fail, false);
    ck_assert_int_eq(df_plan_resume(w, id, &err), 0);
    info = tu_wait(w, id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_str_eq(fin_order, "223");
    ck_assert_int_eq(atomic_load(&ok_runs), 2);

    /* only a paused plan resumes */
    err.text[0] = '\0';
    ck_assert_int_eq(df_plan_resume(w, id, &err), -EINVAL);
    ck_assert_msg(err.text[0] != '\0', "no message");
    df_world_free(w);
}
END_TEST

static atomic_int skipper_runs;

/* Fails; on resume after skip (DF_EVENT_SKIP) it notes why in the output. */
static int skipper_run(df_action *a, const df_event *ev)
{
    atomic_fetch_add(&skipper_runs, 1);
    if (ev != NULL && ev->kind == DF_EVENT_SKIP) {
        json_object_set_new(df_action_output(a), "skipped", json_string("by the user"));
        return 0;
    }
    return df_action_error(a, "skip me");
}

/* sequence { Skipper (run 3, finalize 4); Ok (run 6) }; User(Skipper.output) (run 8, fin 9) */
static int skip_plan(df_action *a, json_t *args)
{
    const char *cls = json_string_value(json_object_get(args, "class"));
    df_action *s;
    json_t *input;

    df_sequence_begin(a);
    s = df_plan_action(a, cls, args);
    df_plan_action(a, "Ok", args);
    df_sequence_end(a);
    if (s == NULL)
        return -1;
    input = json_pack("{s:o}", "x", df_output_ref(s, "y", NULL));
    df_plan_action(a, "User", input);
    json_decref(input);
    return df_plan_self(a, json_object());
}

static void expect_steps(df_world *w, const char *id, const char *const *states)
{
    json_t *j = tu_json(w, id, DF_JSON_STEPS), *s;
    size_t i;

    json_array_foreach(json_object_get(j, "steps"), i, s)
    {
        if (states[i] == NULL)
            break;
        ck_assert_msg(strcmp(tu_str(s, "state"), states[i]) == 0, "step %zu is %s, not %s", i + 1,
                      tu_str(s, "state"), states[i]);
    }
    json_decref(j);
}

START_TEST(skip_a_failed_step)
{
    static const struct df_action_class extra[] = {
        {.name = "Skipper",
         .run = skipper_run,
         .finalize = note_finalize,
         .flags = DF_ACTION_HANDLES_SKIP},
        {.name = "SkipperQuiet", .run = skipper_run, .finalize = note_finalize},
        {.name = "User", .run = ok_run, .finalize = note_finalize},
        {.name = "SkipPlan", .plan = skip_plan},
    };
    static const char *const after_skip[] = {"success", "success", "skipping", "skipped", "success",
                                             "pending", "success", "skipped",  "skipped", NULL};
    static const char *const done[] = {"success", "success", "skipped", "skipped", "success",
                                       "success", "success", "skipped", "skipped", NULL};
    df_world *w = world_with(&(struct df_world_config){.pool_size = 3}, extra, 4);
    char id[DF_UUID_BUF];
    struct df_plan_info info;
    df_error err;
    json_t *out;

    atomic_store(&skipper_runs, 0);
    info = tu_run(w, "SkipPlan", json_pack("{s:s}", "class", "Skipper"), id);
    expect_info(&info, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    ck_assert_int_eq(atomic_load(&ok_runs), 0);

    /* a successful step, a plan step and an unknown step cannot be skipped */
    ck_assert_int_eq(df_plan_skip_step(w, id, 2, &err), -EINVAL);
    ck_assert_int_eq(df_plan_skip_step(w, id, 1, &err), -EINVAL);
    ck_assert_int_eq(df_plan_skip_step(w, id, 99, &err), -ENOENT);

    ck_assert_msg(df_plan_skip_step(w, id, 3, &err) == 0, "%s", err.text);
    expect_steps(w, id, after_skip);
    ck_assert_int_eq(tu_state(w, id), DF_PLAN_PAUSED);
    ck_assert_int_eq(df_plan_resume(w, id, &err), 0);
    info = tu_wait(w, id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_WARNING);
    expect_steps(w, id, done);
    /* the sequence follower ran, the user of the output did not, no finalize ran */
    ck_assert_int_eq(atomic_load(&ok_runs), 1);
    ck_assert_int_eq(atomic_load(&fin_count), 0);
    ck_assert_int_eq(atomic_load(&skipper_runs), 2);
    out = tu_output(w, id, 2);
    ck_assert_str_eq(tu_str(out, "skipped"), "by the user");
    json_decref(out);

    /* without DF_ACTION_HANDLES_SKIP the run is not called again */
    reset_counters();
    atomic_store(&skipper_runs, 0);
    info = tu_run(w, "SkipPlan", json_pack("{s:s}", "class", "SkipperQuiet"), id);
    expect_info(&info, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    ck_assert_int_eq(df_plan_skip_step(w, id, 3, &err), 0);
    ck_assert_int_eq(df_plan_resume(w, id, &err), 0);
    info = tu_wait(w, id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_WARNING);
    ck_assert_int_eq(atomic_load(&skipper_runs), 1);
    ck_assert_int_eq(atomic_load(&ok_runs), 1);
    /* not in a stopped plan */
    ck_assert_int_eq(df_plan_skip_step(w, id, 6, &err), -EINVAL);
    df_world_free(w);
}
END_TEST

/* ---- rescue ------------------------------------------------------------------------------------
 */

START_TEST(rescue_strategies_with_auto_rescue)
{
    df_world *w = world();
    char id[DF_UUID_BUF];
    struct df_plan_info info;

    info = tu_run(w, "Fail", json_object(), id);
    expect_info(&info, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    info = tu_run(w, "FailFail", json_object(), id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    ck_assert_str_eq(tu_history(w, id), "start execution,finish execution");

    /* Skip: the failed step is skipped and the plan goes on */
    info = tu_run(w, "Multi", plan_of("FailSkip", "Ok", NULL), id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_WARNING);
    ck_assert_str_eq(tu_step_state(w, id, 3), "skipped");
    ck_assert_int_eq(atomic_load(&ok_runs), 1);

    /* suggestions combine: all Fail → Fail, all Skip → Skip, mixed → Pause */
    info = tu_run(w, "Multi", plan_of("FailFail", "FailFail", NULL), id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    info = tu_run(w, "Multi", plan_of("FailSkip", "FailSkip", NULL), id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_WARNING);
    info = tu_run(w, "Multi", plan_of("FailFail", "FailSkip", NULL), id);
    expect_info(&info, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    info = tu_run(w, "Multi", plan_of("FailFail", "Fail", NULL), id);
    expect_info(&info, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    /* a parent's own strategy counts only when its own steps failed */
    info = tu_run(w, "MultiFail", plan_of("Fail", NULL), id);
    expect_info(&info, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    df_world_free(w);
}
END_TEST

START_TEST(no_auto_rescue_pauses)
{
    df_world *w = world_with(&(struct df_world_config){.no_auto_rescue = true}, NULL, 0);
    char id[DF_UUID_BUF];
    struct df_plan_info info;

    info = tu_run(w, "FailFail", json_object(), id);
    expect_info(&info, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    info = tu_run(w, "Multi", plan_of("FailSkip", "Ok", NULL), id);
    expect_info(&info, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    ck_assert_str_eq(tu_step_state(w, id, 3), "error");
    df_world_free(w);
}
END_TEST

#define BEFORE_SET_TIME "Execution plan could not be started before set time ("

/* ---- delayed plans -----------------------------------------------------------------------------
 */

START_TEST(delayed_plans)
{
    df_world *w = world();
    char id[DF_UUID_BUF], frozen[DF_UUID_BUF], other[DF_UUID_BUF];
    double start_at = wall_now() + 0.3;
    struct df_trigger_opts o = {.delayed = true, .start_at = start_at};
    enum df_plan_state state;
    struct df_plan_info info;
    df_error err;
    json_t *out;

    /* start_at in the near future */
    ck_assert(tu_trigger_opts(w, "Stamp", json_object(), &o, id, NULL));
    state = tu_state(w, id);
    if (wall_now() < start_at) /* read before it was due */
        ck_assert_int_eq(state, DF_PLAN_SCHEDULED);
    info = tu_wait(w, id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    out = tu_output(w, id, 1);
    ck_assert_double_ge(json_number_value(json_object_get(out, "ran_at")), start_at - 0.005);
    json_decref(out);

    /* start_before already passed */
    o = (struct df_trigger_opts){.delayed = true, .start_before = wall_now() - 10};
    ck_assert(tu_trigger_opts(w, "Ok", json_object(), &o, id, NULL));
    info = tu_wait(w, id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    ck_assert_msg(strncmp(tu_step_error(w, id, 1), BEFORE_SET_TIME, strlen(BEFORE_SET_TIME)) == 0,
                  "%s", tu_step_error(w, id, 1));
    ck_assert_int_eq(atomic_load(&ok_runs), 0);

    /* frozen until unfrozen */
    o = (struct df_trigger_opts){.delayed = true, .frozen = true};
    ck_assert(tu_trigger_opts(w, "Ok", json_object(), &o, frozen, NULL));
    tu_run(w, "Stamp", json_object(), other);
    ck_assert_int_eq(tu_state(w, frozen), DF_PLAN_SCHEDULED);
    ck_assert_int_eq(atomic_load(&ok_runs), 0);
    ck_assert_msg(df_plan_unfreeze(w, frozen, &err) == 0, "%s", err.text);
    tu_expect(w, frozen, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_int_eq(atomic_load(&ok_runs), 1);
    ck_assert_int_eq(df_plan_unfreeze(w, frozen, &err), -EINVAL);
    df_world_free(w);
}
END_TEST

START_TEST(chained_plans)
{
    df_world *w = world();
    char first[DF_UUID_BUF], chained[DF_UUID_BUF], failing[DF_UUID_BUF], blocked[DF_UUID_BUF];
    const char *by_first[] = {first, NULL}, *by_failing[] = {failing, NULL};
    struct df_trigger_opts o = {.blocked_by = by_first};
    struct df_plan_info info;
    char expected[256];
    json_t *fail = json_pack("{s:b}", "fail", 1);

    /* waits for its prerequisite */
    ck_assert(tu_trigger_opts(w, "Wait", json_object(), NULL, first, NULL));
    ck_assert(tu_trigger_opts(w, "Ok", json_object(), &o, chained, NULL));
    ck_assert(wait_until(suspended(w, first, 2), 10));
    tu_run(w, "Stamp", json_object(), blocked);
    ck_assert_int_eq(tu_state(w, chained), DF_PLAN_SCHEDULED);
    tu_event(w, first, 2, DF_EVENT_USER, NULL, 0);
    info = tu_wait(w, chained);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_int_eq(atomic_load(&ok_runs), 1);

    /* a prerequisite that fails fails the chained plan */
    ck_assert(tu_trigger_opts(w, "WaitFail", json_object(), NULL, failing, NULL));
    o.blocked_by = by_failing;
    ck_assert(tu_trigger_opts(w, "Ok", json_object(), &o, blocked, NULL));
    ck_assert(wait_until(suspended(w, failing, 2), 10));
    ck_assert_int_eq(tu_state(w, blocked), DF_PLAN_SCHEDULED);
    tu_event(w, failing, 2, DF_EVENT_USER, fail, 0);
    tu_expect(w, failing, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    info = tu_wait(w, blocked);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    snprintf(expected, sizeof(expected),
             "Execution plan could not be started because some of its prerequisite execution "
             "plans failed:\n- %s",
             failing);
    ck_assert_str_eq(tu_step_error(w, blocked, 1), expected);

    /* chained on a plan that failed already */
    ck_assert(tu_trigger_opts(w, "Ok", json_object(), &o, chained, NULL));
    info = tu_wait(w, chained);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    ck_assert_str_eq(tu_step_error(w, chained, 1), expected);
    ck_assert_int_eq(atomic_load(&ok_runs), 1);
    json_decref(fail);
    df_world_free(w);
}
END_TEST

/* ---- sub-plans ----------------------------------------------------------------------- */

/* Triggers one child per input["classes"] entry with the ids of input["ids"]. */
static int create_children(df_action *a)
{
    json_t *in = df_action_input(a), *classes = json_object_get(in, "classes"), *v;
    json_t *planned_list = json_array();
    size_t i;
    int rc = 0;

    json_object_set_new(df_action_output(a), "planned", planned_list);
    json_array_foreach(classes, i, v)
    {
        char child[DF_UUID_BUF];
        bool planned = false;
        const char *cid = json_string_value(json_array_get(json_object_get(in, "ids"), i));
        rc = df_action_trigger_child(a, json_string_value(v), json_pack("{s:i}", "index", (int)i),
                                     cid, child, &planned);
        if (rc < 0)
            return -1;
        json_array_append_new(planned_list, json_boolean(planned));
        if (strcmp(child, cid) != 0)
            return df_action_error(a, "child %zu got id %s", i, child);
    }
    return 0;
}

static int parent_run(df_action *a, const df_event *ev)
{
    return df_sub_plans_run(a, ev, create_children);
}

static json_t *children_args(char ids[][DF_UUID_BUF], const char *const *classes, size_t n)
{
    json_t *args = json_pack("{s:[], s:[]}", "ids", "classes");

    for (size_t i = 0; i < n; i++) {
        tu_uuid(ids[i]);
        json_array_append_new(json_object_get(args, "ids"), json_string(ids[i]));
        json_array_append_new(json_object_get(args, "classes"), json_string(classes[i]));
    }
    return args;
}

static void expect_counts(df_world *w, const char *id, int total, int success, int failed,
                          int pending)
{
    json_t *out = tu_output(w, id, 1);
    char *s = json_dumps(out, JSON_COMPACT);

    ck_assert_msg(json_integer_value(json_object_get(out, "total_count")) == total &&
                      json_integer_value(json_object_get(out, "success_count")) == success &&
                      json_integer_value(json_object_get(out, "failed_count")) == failed &&
                      json_integer_value(json_object_get(out, "pending_count")) == pending,
                  "counts %s, expected total %d success %d failed %d pending %d", s, total, success,
                  failed, pending);
    free(s);
    json_decref(out);
}

START_TEST(sub_plans)
{
    static const struct df_action_class extra[] = {{.name = "Parent", .run = parent_run}};
    static const char *const all_ok[] = {"Ok", "Ok", "Ok"};
    static const char *const one_fails[] = {"Ok", "FailFail", "Ok"};
    df_world *w = world_with(NULL, extra, 1);
    char id[DF_UUID_BUF], ids[3][DF_UUID_BUF];
    struct df_plan_info info;
    json_t *j, *root;

    info = tu_run(w, "Parent", children_args(ids, all_ok, 3), id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    expect_counts(w, id, 3, 3, 0, 0);
    for (int i = 0; i < 3; i++) {
        tu_expect(w, ids[i], DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
        j = tu_json(w, ids[i], DF_JSON_ACTIONS);
        root = tu_find_action(j, 1);
        ck_assert_str_eq(tu_str(root, "caller_execution_plan_id"), id);
        ck_assert_int_eq(json_integer_value(json_object_get(root, "caller_action_id")), 1);
        json_decref(j);
    }

    info = tu_run(w, "Parent", children_args(ids, one_fails, 3), id);
    expect_info(&info, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    ck_assert_str_eq(tu_step_error(w, id, 2), "A sub task failed");
    expect_counts(w, id, 3, 2, 1, 0);
    tu_expect(w, ids[1], DF_PLAN_STOPPED, DF_RESULT_ERROR);
    df_world_free(w);
}
END_TEST

/* Cancel reaches the children through the helper. */
START_TEST(sub_plans_cancel_their_children)
{
    static const struct df_action_class extra[] = {
        {.name = "Parent", .run = parent_run, .flags = DF_ACTION_CANCELLABLE},
        {.name = "Cancellable", .run = cancellable_run, .flags = DF_ACTION_CANCELLABLE},
    };
    static const char *const classes[] = {"Cancellable", "Cancellable"};
    df_world *w = world_with(NULL, extra, 2);
    char id[DF_UUID_BUF], ids[2][DF_UUID_BUF];
    struct df_plan_info info;
    unsigned n = 0;
    json_t *out;

    ck_assert(tu_trigger_opts(w, "Parent", children_args(ids, classes, 2), NULL, id, NULL));
    ck_assert(wait_until(df_plan_get_info(w, ids[1], &info) == 0, 10));
    ck_assert(
        wait_until(suspended(w, ids[0], 2) && suspended(w, ids[1], 2) && suspended(w, id, 2), 10));
    ck_assert_int_eq(df_plan_cancel(w, id, false, &n, NULL), 0);
    ck_assert_uint_eq(n, 1);
    for (int i = 0; i < 2; i++) {
        tu_expect(w, ids[i], DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
        out = tu_output(w, ids[i], 1);
        ck_assert_str_eq(tu_str(out, "event"), "cancel");
        json_decref(out);
    }
    info = tu_wait(w, id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    expect_counts(w, id, 2, 2, 0, 0);
    df_world_free(w);
}
END_TEST

/* A child whose planning fails counts once; the parent still waits for the others. */
START_TEST(sub_plan_planning_failure_counts_once)
{
    static const struct df_action_class extra[] = {{.name = "Parent", .run = parent_run}};
    static const char *const classes[] = {"Ok", "BadPlan", "Wait"};
    df_world *w = world_with(NULL, extra, 1);
    char id[DF_UUID_BUF], ids[3][DF_UUID_BUF];
    struct df_plan_info info;
    json_t *out;

    ck_assert(tu_trigger_opts(w, "Parent", children_args(ids, classes, 3), NULL, id, NULL));
    /* the parent's run creates the children on a worker */
    ck_assert(wait_until(df_plan_get_info(w, ids[2], &info) == 0, 10));
    tu_expect(w, ids[0], DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    tu_expect(w, ids[1], DF_PLAN_STOPPED, DF_RESULT_ERROR);
    ck_assert(wait_until(suspended(w, ids[2], 2), 10));
    ck_assert(wait_until(suspended(w, id, 2) && tu_output_int(w, id, 1, "success_count") == 1, 10));
    /* nothing may finish the parent while the third child is running */
    ck_assert_msg(!wait_until(tu_state(w, id) != DF_PLAN_RUNNING, 1.0),
                  "the parent finished before its last child");
    expect_counts(w, id, 3, 1, 1, 1);
    out = tu_output(w, id, 1);
    tu_flow_eq(json_object_get(out, "planned"), "[true,false,true]");
    json_decref(out);
    tu_event(w, ids[2], 2, DF_EVENT_USER, NULL, 0);
    info = tu_wait(w, id);
    expect_info(&info, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    expect_counts(w, id, 3, 2, 1, 0);
    df_world_free(w);
}
END_TEST

/* ---- hooks --------------------------------------------------------------------------- */

static atomic_int hook_hits[9], hook_bad;
static atomic_int hook_stopped_result = -1;

static void note_hook(df_action *a, unsigned kind, const struct df_plan_info *plan)
{
    if (__builtin_popcount(kind) != 1 || strncmp(df_action_class_name(a), "Hooked", 6) != 0)
        atomic_fetch_add(&hook_bad, 1);
    atomic_fetch_add(&hook_hits[__builtin_ctz(kind)], 1);
    if (kind == DF_HOOK_ON(DF_PLAN_STOPPED))
        atomic_store(&hook_stopped_result, (int)plan->result);
    if (kind == DF_HOOK_ON(DF_PLAN_STOPPED) && plan->state != DF_PLAN_STOPPED)
        atomic_fetch_add(&hook_bad, 1);
}

static const struct df_hook test_hooks[] = {
    {DF_HOOK_ON(DF_PLAN_STOPPED) | DF_HOOK_SUCCESS | DF_HOOK_FAILURE, note_hook},
    {DF_HOOK_ON(DF_PLAN_RUNNING) | DF_HOOK_ON(DF_PLAN_PAUSED), note_hook},
    {0, NULL},
};

static void hooks_reset(void)
{
    for (int i = 0; i < 9; i++)
        atomic_store(&hook_hits[i], 0);
    atomic_store(&hook_bad, 0);
    atomic_store(&hook_stopped_result, -1);
}

static int hits(unsigned kind)
{
    return atomic_load(&hook_hits[__builtin_ctz(kind)]);
}

START_TEST(hooks_fire_with_the_right_kinds)
{
    static const struct df_action_class extra[] = {
        {.name = "HookedOk", .run = ok_run, .hooks = test_hooks},
        {.name = "HookedFail", .run = fail_run, .rescue = DF_RESCUE_FAIL, .hooks = test_hooks},
        {.name = "HookedPause", .run = fail_run, .hooks = test_hooks},
    };
    df_world *w = world_with(NULL, extra, 3);
    char id[DF_UUID_BUF];

    hooks_reset();
    tu_run(w, "HookedOk", json_object(), id);
    ck_assert(wait_until(hits(DF_HOOK_SUCCESS) == 1, 10));
    ck_assert_int_eq(hits(DF_HOOK_ON(DF_PLAN_STOPPED)), 1);
    ck_assert_int_eq(hits(DF_HOOK_ON(DF_PLAN_RUNNING)), 1);
    ck_assert_int_eq(hits(DF_HOOK_FAILURE), 0);
    ck_assert_int_eq(hits(DF_HOOK_ON(DF_PLAN_PAUSED)), 0);
    ck_assert_int_eq(atomic_load(&hook_stopped_result), DF_RESULT_SUCCESS);

    hooks_reset();
    tu_run(w, "HookedFail", json_object(), id);
    ck_assert(wait_until(hits(DF_HOOK_FAILURE) == 1, 10));
    ck_assert_int_eq(hits(DF_HOOK_ON(DF_PLAN_STOPPED)), 1);
    ck_assert_int_eq(hits(DF_HOOK_SUCCESS), 0);
    ck_assert_int_eq(atomic_load(&hook_stopped_result), DF_RESULT_ERROR);

    hooks_reset();
    tu_run(w, "HookedPause", json_object(), id);
    ck_assert(wait_until(hits(DF_HOOK_ON(DF_PLAN_PAUSED)) == 1, 10));
    ck_assert_int_eq(hits(DF_HOOK_ON(DF_PLAN_STOPPED)), 0);
    ck_assert_int_eq(hits(DF_HOOK_FAILURE), 0);

    /* a class without hooks fires nothing */
    hooks_reset();
    tu_run(w, "Ok", json_object(), id);
    df_world_sync(w);
    for (int i = 0; i < 9; i++)
        ck_assert_int_eq(atomic_load(&hook_hits[i]), 0);
    ck_assert_int_eq(atomic_load(&hook_bad), 0);
    df_world_free(w);
}
END_TEST

/* ---- the cleaner --------------------------------------------------------------------- */

START_TEST(clean_removes_old_stopped_plans)
{
    df_world *w = world();
    char old[DF_UUID_BUF], fresh[DF_UUID_BUF], running[DF_UUID_BUF], paused[DF_UUID_BUF];
    struct df_plan_info info;
    uint64_t removed = 99;
    double ended;
    df_error err;

    tu_run(w, "Ok", json_object(), old);
    tu_run(w, "Fail", json_object(), paused);
    ck_assert(tu_trigger_opts(w, "Wait", json_object(), NULL, running, NULL));
    ended = tu_now();
    ck_assert(wait_until(tu_now() - ended >= 1.0, 5));
    tu_run(w, "Ok", json_object(), fresh);
    ck_assert_msg(df_world_clean(w, 0.5, &removed, &err) == 0, "%s", err.text);
    ck_assert_uint_eq(removed, 1);
    ck_assert_int_eq(df_plan_get_info(w, old, &info), -ENOENT);
    ck_assert_ptr_null(df_plan_json(w, old, DF_JSON_ACTIONS));
    ck_assert_int_eq(df_plan_get_info(w, fresh, &info), 0);
    ck_assert_int_eq(df_plan_get_info(w, running, &info), 0);
    ck_assert_int_eq(df_plan_get_info(w, paused, &info), 0);
    ck_assert_int_eq(df_world_clean(w, 3600, &removed, &err), 0);
    ck_assert_uint_eq(removed, 0);
    ck_assert_uint_eq(count_plans(w, -1), 3);
    df_world_free(w);
}
END_TEST

START_TEST(the_cleaner_cleans_by_itself)
{
    df_world *w =
        world_with(&(struct df_world_config){.cleaner_age = 0.3, .cleaner_interval = 0.1}, NULL, 0);
    char done[DF_UUID_BUF], running[DF_UUID_BUF];
    struct df_plan_info info;

    ck_assert(tu_trigger_opts(w, "Wait", json_object(), NULL, running, NULL));
    tu_run(w, "Ok", json_object(), done);
    ck_assert_msg(wait_until(df_plan_get_info(w, done, &info) == -ENOENT, 10),
                  "the cleaner did not remove the plan");
    ck_assert_int_eq(df_plan_get_info(w, running, &info), 0);
    ck_assert_int_eq(info.state, DF_PLAN_RUNNING);
    df_world_free(w);
}
END_TEST

/* ---- subscriptions ------------------------------------------------------------------- */

static const char *const to_trigger[] = {"Trigger", NULL};

/* Records how it was planned. */
static int listener_plan(df_action *a, json_t *args)
{
    df_action *t = df_action_triggering(a);
    json_t *input = json_pack("{s:O, s:s?, s:i}", "args", args, "triggering_class",
                              t != NULL ? df_action_class_name(t) : NULL, "triggering_id",
                              t != NULL ? df_action_id(t) : 0);

    return df_plan_self(a, input);
}

START_TEST(subscriptions)
{
    static const struct df_action_class extra[] = {
        {.name = "Trigger", .run = ok_run},
        {.name = "Plain", .run = ok_run, .subscribe = to_trigger},
        {.name = "Listener", .plan = listener_plan, .subscribe = to_trigger},
    };
    df_world *w = world_with(NULL, extra, 3);
    char id[DF_UUID_BUF];
    struct df_plan_info info;
    json_t *j, *a, *in;

    info = tu_run(w, "Trigger", json_pack("{s:i}", "a", 1), id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_int_eq(atomic_load(&ok_runs), 2);
    j = tu_json(w, id, DF_JSON_ACTIONS);
    ck_assert_int_eq(json_array_size(json_object_get(j, "actions")), 3);
    a = tu_find_action(j, 2);
    ck_assert_str_eq(tu_str(a, "class"), "Plain");
    tu_flow_eq(json_object_get(a, "input"), "{\"a\":1}");
    ck_assert_int_eq(json_integer_value(json_object_get(a, "caller_action_id")), 1);
    a = tu_find_action(j, 3);
    in = json_object_get(a, "input");
    ck_assert_str_eq(tu_str(a, "class"), "Listener");
    tu_flow_eq(json_object_get(in, "args"), "{\"a\":1}");
    ck_assert_str_eq(tu_str(in, "triggering_class"), "Trigger");
    ck_assert_int_eq(json_integer_value(json_object_get(in, "triggering_id")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(a, "caller_action_id")), 1);
    json_decref(j);

    /* planned directly, a subscriber has no triggering action */
    tu_run(w, "Listener", json_object(), id);
    j = tu_json(w, id, DF_JSON_ACTIONS);
    ck_assert_int_eq(json_array_size(json_object_get(j, "actions")), 1);
    in = json_object_get(tu_find_action(j, 1), "input");
    ck_assert(json_is_null(json_object_get(in, "triggering_class")));
    json_decref(j);
    df_world_free(w);
}
END_TEST

/* ---- middleware ---------------------------------------------------------------------- */

static pthread_mutex_t mw_lock = PTHREAD_MUTEX_INITIALIZER;
static char mw_log[1024];
static atomic_int mw_runs;

static void mw_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void mw_note(const char *fmt, ...)
{
    size_t len;
    va_list ap;

    pthread_mutex_lock(&mw_lock);
    len = strlen(mw_log);
    if (len > 0 && len + 1 < sizeof(mw_log))
        mw_log[len++] = ' ';
    va_start(ap, fmt);
    vsnprintf(mw_log + len, sizeof(mw_log) - len, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&mw_lock);
}

static int mw_around(df_mw_call *c)
{
    const char *name = df_mw_data(c);
    int rc;

    mw_note("+%s", name);
    rc = df_mw_pass(c);
    mw_note("-%s", name);
    return rc;
}

static int mw_event(df_mw_call *c)
{
    const df_event *ev = df_mw_event(c);

    mw_note("ev:%s", ev != NULL ? df_event_kind_name(ev->kind) : "none");
    return df_mw_pass(c);
}

static int mw_cut(df_mw_call *c)
{
    mw_note("cut:%s", df_action_class_name(df_mw_action(c)));
    return 0;
}

static char w1_name[] = "W1", w2_name[] = "W2", c1_name[] = "C1";
static const struct df_middleware mw_w1 = {"W1", mw_around, mw_around, mw_around, w1_name};
static const struct df_middleware mw_w2 = {"W2", mw_around, mw_around, NULL, w2_name};
static const struct df_middleware mw_c1 = {"C1", mw_around, mw_around, mw_around, c1_name};
static const struct df_middleware mw_ev = {"Ev", NULL, mw_event, NULL, NULL};
static const struct df_middleware mw_stop = {"Stop", NULL, mw_cut, NULL, NULL};
static const struct df_middleware *const c1_chain[] = {&mw_c1, NULL};
static const struct df_middleware *const ev_chain[] = {&mw_ev, NULL};
static const struct df_middleware *const stop_chain[] = {&mw_stop, NULL};

static int mw_plan(df_action *a, json_t *args)
{
    mw_note("plan");
    return df_plan_self(a, json_deep_copy(args));
}

static int mw_run(df_action *a, const df_event *ev)
{
    atomic_fetch_add(&mw_runs, 1);
    mw_note("run");
    if (ev == NULL && json_is_true(json_object_get(df_action_input(a), "suspend")))
        df_action_suspend(a);
    return 0;
}

static int mw_finalize(df_action *a)
{
    (void)a;
    mw_note("fin");
    return 0;
}

START_TEST(middleware_chain_order)
{
    static const struct df_action_class extra[] = {
        {.name = "Mw",
         .plan = mw_plan,
         .run = mw_run,
         .finalize = mw_finalize,
         .middleware = c1_chain},
        {.name = "MwEvent", .run = mw_run, .middleware = ev_chain},
        {.name = "MwCut", .run = mw_run, .middleware = stop_chain},
    };
    df_error err;
    df_world *w = df_world_new(NULL, &err);
    char id[DF_UUID_BUF];
    struct df_plan_info info;

    for (size_t i = 0; i < 3; i++)
        ck_assert_int_eq(df_world_register(w, &extra[i], &err), 0);
    ck_assert_int_eq(df_world_register(w, &common[0], &err), 0);
    ck_assert_int_eq(df_world_use(w, &mw_w1, &err), 0);
    ck_assert_int_eq(df_world_use(w, &mw_w2, &err), 0);
    ck_assert_int_eq(df_world_start(w, &err), 0);

    mw_log[0] = '\0';
    info = tu_run(w, "Mw", json_object(), id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_str_eq(mw_log, "+W1 +W2 +C1 plan -C1 -W2 -W1 "
                             "+W1 +W2 +C1 run -C1 -W2 -W1 "
                             "+W1 +C1 fin -C1 -W1");

    /* the event each run gets */
    mw_log[0] = '\0';
    ck_assert(tu_trigger_opts(w, "MwEvent", json_pack("{s:b}", "suspend", 1), NULL, id, NULL));
    ck_assert(wait_until(suspended(w, id, 2), 10));
    tu_event(w, id, 2, DF_EVENT_USER, NULL, 0);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_str_eq(mw_log, "+W1 +W2 -W2 -W1 "
                             "+W1 +W2 ev:none run -W2 -W1 +W1 +W2 ev:user run -W2 -W1");

    /* a middleware that does not pass cuts the chain: no run */
    mw_log[0] = '\0';
    atomic_store(&mw_runs, 0);
    info = tu_run(w, "MwCut", json_object(), id);
    expect_info(&info, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_int_eq(atomic_load(&mw_runs), 0);
    ck_assert_str_eq(mw_log, "+W1 +W2 -W2 -W1 +W1 +W2 cut:MwCut -W2 -W1");
    df_world_free(w);
}
END_TEST

/* Carries args["request_id"] into the input of the action and everything it plans. */
static __thread const char *current_request;

static int request_id_plan(df_mw_call *c)
{
    const char *given = json_string_value(json_object_get(df_mw_args(c), "request_id"));
    const char *saved = current_request;
    int rc;

    if (given != NULL)
        current_request = given;
    rc = df_mw_pass(c);
    if (rc == 0 && current_request != NULL)
        json_object_set_new(df_action_input(df_mw_action(c)), "current_request_id",
                            json_string(current_request));
    current_request = saved;
    return rc;
}

static int echo_request_run(df_action *a, const df_event *ev)
{
    (void)ev;
    json_object_set(df_action_output(a), "request",
                    json_object_get(df_action_input(a), "current_request_id"));
    return 0;
}

START_TEST(middleware_carries_a_request_id)
{
    static const struct df_middleware request_mw = {"RequestId", request_id_plan, NULL, NULL, NULL};
    static const struct df_action_class extra[] = {{.name = "Echo", .run = echo_request_run}};
    df_error err;
    df_world *w = df_world_new(NULL, &err);
    char id[DF_UUID_BUF];
    json_t *j;

    for (size_t i = 0; i < sizeof(common) / sizeof(common[0]); i++)
        ck_assert_int_eq(df_world_register(w, &common[i], &err), 0);
    ck_assert_int_eq(df_world_register(w, &extra[0], &err), 0);
    ck_assert_int_eq(df_world_use(w, &request_mw, &err), 0);
    ck_assert_int_eq(df_world_start(w, &err), 0);

    tu_run(w, "Multi",
           json_pack("{s:[s, s], s:{s:i}, s:s}", "plan", "Echo", "Echo", "args", "n", 1,
                     "request_id", "req-42"),
           id);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    j = tu_json(w, id, DF_JSON_ACTIONS);
    for (int i = 1; i <= 3; i++)
        ck_assert_str_eq(
            tu_str(json_object_get(tu_find_action(j, i), "input"), "current_request_id"), "req-42");
    ck_assert_str_eq(tu_str(json_object_get(tu_find_action(j, 3), "output"), "request"), "req-42");
    json_decref(j);

    /* without one, nothing is added */
    tu_run(w, "Echo", json_object(), id);
    j = tu_json(w, id, DF_JSON_ACTIONS);
    ck_assert_ptr_null(
        json_object_get(json_object_get(tu_find_action(j, 1), "input"), "current_request_id"));
    json_decref(j);
    df_world_free(w);
}
END_TEST

/* ---- singletons, queues, progress ---------------------------------------------------- */

START_TEST(singleton_actions)
{
    static const struct df_action_class extra[] = {
        {.name = "Single", .run = wait_run, .flags = DF_ACTION_SINGLETON},
    };
    df_world *w = world_with(NULL, extra, 1);
    char first[DF_UUID_BUF], second[DF_UUID_BUF], third[DF_UUID_BUF];
    json_t *fail = json_pack("{s:b}", "fail", 1);
    df_error err;

    ck_assert(tu_trigger_opts(w, "Single", json_object(), NULL, first, NULL));
    ck_assert(wait_until(suspended(w, first, 2), 10));
    ck_assert(!tu_trigger_opts(w, "Single", json_object(), NULL, second, &err));
    ck_assert_str_eq(err.text, "Action Single is already active");
    tu_expect(w, second, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    ck_assert_str_eq(tu_step_error(w, second, 1), "Action Single is already active");
    /* also when planned by another action */
    ck_assert(!tu_trigger_opts(w, "Multi", plan_of("Single", NULL), NULL, second, &err));
    ck_assert_str_eq(err.text, "Action Single is already active");

    tu_event(w, first, 2, DF_EVENT_USER, NULL, 0);
    tu_expect(w, first, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert(tu_trigger_opts(w, "Single", json_object(), NULL, third, NULL));
    ck_assert(wait_until(suspended(w, third, 2), 10));
    /* a paused plan releases the lock too */
    tu_event(w, third, 2, DF_EVENT_USER, fail, 0);
    tu_expect(w, third, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    ck_assert(tu_trigger_opts(w, "Single", json_object(), NULL, second, NULL));
    ck_assert(wait_until(suspended(w, second, 2), 10));
    json_decref(fail);
    df_world_free(w);
}
END_TEST

/* A resumed singleton takes the lock again at run, or fails when another plan holds it. */
START_TEST(singleton_lock_on_resume)
{
    static const struct df_action_class extra[] = {
        {.name = "Single", .run = wait_run, .flags = DF_ACTION_SINGLETON},
    };
    df_world *w = world_with(NULL, extra, 1);
    char first[DF_UUID_BUF], second[DF_UUID_BUF];
    json_t *fail = json_pack("{s:b}", "fail", 1);
    df_error err;

    ck_assert(tu_trigger_opts(w, "Single", json_object(), NULL, first, NULL));
    ck_assert(wait_until(suspended(w, first, 2), 10));
    tu_event(w, first, 2, DF_EVENT_USER, fail, 0);
    tu_expect(w, first, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    ck_assert(tu_trigger_opts(w, "Single", json_object(), NULL, second, NULL));
    ck_assert(wait_until(suspended(w, second, 2), 10));

    ck_assert_int_eq(df_plan_resume(w, first, &err), 0);
    tu_expect(w, first, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    ck_assert_str_eq(tu_step_error(w, first, 2), "Action Single is already active");

    /* once the other one is done, the resumed plan gets the lock */
    tu_event(w, second, 2, DF_EVENT_USER, NULL, 0);
    tu_expect(w, second, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_int_eq(df_plan_resume(w, first, &err), 0);
    ck_assert(wait_until(suspended(w, first, 2), 10));
    ck_assert(!tu_trigger_opts(w, "Single", json_object(), NULL, second, &err));
    ck_assert_str_eq(err.text, "Action Single is already active");
    json_decref(fail);
    df_world_free(w);
}
END_TEST

static atomic_bool slow_started, slow_release;

static int slow_run(df_action *a, const df_event *ev)
{
    (void)ev;
    atomic_store(&slow_started, true);
    if (!wait_until(atomic_load(&slow_release), 10))
        return df_action_error(a, "never released");
    return 0;
}

START_TEST(named_queues)
{
    static const struct df_action_class extra[] = {
        {.name = "Slow", .run = slow_run, .queue = "slow"},
        {.name = "SlowParent", .plan = multi_plan, .run = ok_run, .queue = "slow"},
        {.name = "Lost", .run = ok_run, .queue = "nope"},
    };
    df_error err;
    df_world *w = df_world_new(&(struct df_world_config){.pool_size = 2}, &err);
    char slow[DF_UUID_BUF], id[DF_UUID_BUF];
    json_t *j;

    ck_assert_msg(df_world_add_queue(w, "slow", 1, &err) == 0, "%s", err.text);
    ck_assert_int_eq(df_world_add_queue(w, "slow", 1, &err), -EEXIST);
    for (size_t i = 0; i < sizeof(common) / sizeof(common[0]); i++)
        ck_assert_int_eq(df_world_register(w, &common[i], &err), 0);
    for (size_t i = 0; i < 3; i++)
        ck_assert_int_eq(df_world_register(w, &extra[i], &err), 0);
    ck_assert_int_eq(df_world_start(w, &err), 0);
    ck_assert_int_eq(df_world_add_queue(w, "late", 1, &err), -EBUSY);
    atomic_store(&slow_started, false);
    atomic_store(&slow_release, false);

    /* the slow queue's only worker is busy; the default queue still works */
    ck_assert(tu_trigger_opts(w, "Slow", json_object(), NULL, slow, NULL));
    ck_assert(wait_until(atomic_load(&slow_started), 10));
    tu_expect(w, tu_trigger(w, "Ok", json_object()), DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    /* a second slow plan waits for the worker */
    ck_assert(tu_trigger_opts(w, "SlowParent", plan_of("Ok", NULL), NULL, id, NULL));
    ck_assert_msg(!wait_until(tu_state(w, id) == DF_PLAN_STOPPED, 0.3),
                  "a step of the slow queue ran on another worker");
    atomic_store(&slow_release, true);
    tu_expect(w, slow, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);

    j = tu_json(w, id, DF_JSON_STEPS);
    ck_assert_str_eq(tu_str(tu_find_step(j, 4), "queue"), "slow"); /* SlowParent's run */
    ck_assert_str_eq(tu_str(tu_find_step(j, 3), "queue"), "slow"); /* its child inherits */
    ck_assert(json_is_null(json_object_get(tu_find_step(j, 2), "queue")));
    json_decref(j);
    tu_run(w, "Lost", json_object(), id);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    j = tu_json(w, id, DF_JSON_STEPS);
    ck_assert_str_eq(tu_str(tu_find_step(j, 2), "queue"), "default");
    json_decref(j);
    df_world_free(w);
}
END_TEST

static int progress_run(df_action *a, const df_event *ev)
{
    if (ev != NULL)
        return 0;
    df_action_set_progress(a, 0.25);
    df_action_suspend(a);
    return 0;
}

START_TEST(progress)
{
    static const struct df_action_class extra[] = {{.name = "Progress", .run = progress_run}};
    df_world *w = world_with(NULL, extra, 1);
    char id[DF_UUID_BUF];
    struct df_plan_info info;
    json_t *s;

    info = tu_run(w, "Multi", plan_of("Ok", "Ok", NULL), id);
    ck_assert_double_eq(info.progress, 1.0);

    ck_assert(tu_trigger_opts(w, "Multi", plan_of("Progress", "Ok", NULL), NULL, id, NULL));
    ck_assert(wait_until(suspended(w, id, 3) && tu_step_is(w, id, 5, "success"), 10));
    ck_assert_int_eq(df_plan_get_info(w, id, &info), 0);
    ck_assert_double_eq_tol(info.progress, 0.625, 1e-9);
    s = tu_step(w, id, 3);
    ck_assert_double_eq_tol(json_number_value(json_object_get(s, "progress_done")), 0.25, 1e-9);
    json_decref(s);
    tu_event(w, id, 3, DF_EVENT_USER, NULL, 0);
    info = tu_wait(w, id);
    ck_assert_double_eq(info.progress, 1.0);
    df_world_free(w);
}
END_TEST

/* ---- secrets ------------------------------------------------------------------------- */

#define SECRET_PW    "pw-7f3a9c1e"
#define SECRET_TOKEN "tk-51e2b8d0"
#define SECRET_LIST  "ls-90d4aa17"
#define SECRET_CHILD "ch-33b1c6f2"

static int secret_run(df_action *a, const df_event *ev)
{
    json_t *secrets = df_action_secrets(a), *in = df_action_input(a);
    json_t *deep =
        json_object_get(json_object_get(json_object_get(in, "nested"), "deep"), "secrets");

    if (secrets == NULL)
        return -1;
    json_object_set_new(df_action_output(a), "password_ok",
                        json_boolean(strcmp(tu_str(secrets, "password"), SECRET_PW) == 0));
    json_object_set_new(df_action_output(a), "token_ok",
                        json_boolean(strcmp(tu_str(deep, "token"), SECRET_TOKEN) == 0));
    if (ev == NULL)
        df_action_suspend(a);
    return 0;
}

static int secret_child_run(df_action *a, const df_event *ev)
{
    json_t *secrets = df_action_secrets(a);

    (void)ev;
    if (secrets == NULL)
        return -1;
    json_object_set_new(df_action_output(a), "child_ok",
                        json_boolean(strcmp(tu_str(secrets, "key"), SECRET_CHILD) == 0));
    return 0;
}

static int secret_plan(df_action *a, json_t *args)
{
    json_t *child = json_pack("{s:{s:s}}", "secrets", "key", SECRET_CHILD);

    df_plan_action(a, "SecretChild", child);
    json_decref(child);
    return df_plan_self(a, json_deep_copy(args));
}

static bool file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    size_t cap = 1 << 16, n = 0, r;
    char *buf;
    bool hit;

    if (f == NULL)
        return false;
    buf = malloc(cap);
    while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap)
            buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    hit = memmem(buf, n, needle, strlen(needle)) != NULL;
    free(buf);
    return hit;
}

static void expect_no_secret_in_files(const char *db)
{
    static const char *const secrets[] = {SECRET_PW, SECRET_TOKEN, SECRET_LIST, SECRET_CHILD};
    static const char *const suffixes[] = {"", "-wal", "-journal"};
    char path[1100];

    for (size_t s = 0; s < sizeof(suffixes) / sizeof(suffixes[0]); s++) {
        snprintf(path, sizeof(path), "%s%s", db, suffixes[s]);
        for (size_t i = 0; i < 4; i++)
            ck_assert_msg(!file_has(path, secrets[i]), "%s holds %s", path, secrets[i]);
    }
}

static void expect_redacted(df_world *w, const char *id)
{
    json_t *j = tu_json(w, id, DF_JSON_ACTIONS | DF_JSON_STEPS), *in;
    char *text = json_dumps(j, JSON_COMPACT);

    ck_assert(strstr(text, SECRET_PW) == NULL && strstr(text, SECRET_TOKEN) == NULL &&
              strstr(text, SECRET_LIST) == NULL && strstr(text, SECRET_CHILD) == NULL);
    free(text);
    in = json_object_get(tu_find_action(j, 1), "input");
    ck_assert_str_eq(tu_str(json_object_get(in, "secrets"), "password"), "[REDACTED]");
    ck_assert_str_eq(
        tu_str(json_object_get(json_object_get(json_object_get(in, "nested"), "deep"), "secrets"),
               "token"),
        "[REDACTED]");
    ck_assert_str_eq(
        tu_str(json_object_get(json_array_get(json_object_get(in, "list"), 0), "secrets"), "key"),
        "[REDACTED]");
    ck_assert_str_eq(tu_str(in, "host"), "example.com");
    in = json_object_get(tu_find_action(j, 2), "input");
    ck_assert_str_eq(tu_str(json_object_get(in, "secrets"), "key"), "[REDACTED]");
    json_decref(j);
}

START_TEST(secrets_are_redacted_and_never_stored)
{
    static const struct df_action_class extra[] = {
        {.name = "Secret", .plan = secret_plan, .run = secret_run},
        {.name = "SecretChild", .run = secret_child_run},
    };
    char db[1024], id[DF_UUID_BUF];
    df_world *w;
    json_t *out;

    tu_db_path(db, sizeof(db), "secrets");
    w = world_with(&(struct df_world_config){.database = db}, extra, 2);
    ck_assert(tu_trigger_opts(w, "Secret",
                              json_pack("{s:s, s:{s:s}, s:{s:{s:{s:s}}}, s:[{s:{s:s}}]}", "host",
                                        "example.com", "secrets", "password", SECRET_PW, "nested",
                                        "deep", "secrets", "token", SECRET_TOKEN, "list", "secrets",
                                        "key", SECRET_LIST),
                              NULL, id, NULL));
    /* steps: 1 plan Secret, 2 plan SecretChild, 3 run SecretChild, 4 run Secret */
    ck_assert(wait_until(suspended(w, id, 4) && tu_step_is(w, id, 3, "success"), 10));
    expect_redacted(w, id);
    df_world_sync(w);
    expect_no_secret_in_files(db);

    tu_event(w, id, 4, DF_EVENT_USER, NULL, 0);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    /* the actions saw the real values */
    out = tu_output(w, id, 1);
    ck_assert(json_is_true(json_object_get(out, "password_ok")));
    ck_assert(json_is_true(json_object_get(out, "token_ok")));
    json_decref(out);
    out = tu_output(w, id, 2);
    ck_assert(json_is_true(json_object_get(out, "child_ok")));
    json_decref(out);
    df_world_sync(w);
    expect_redacted(w, id);
    expect_no_secret_in_files(db);
    df_world_free(w);
    expect_no_secret_in_files(db);
    tu_db_remove(db);
}
END_TEST

/* ---- counting and listing ------------------------------------------------------------ */

START_TEST(counts_statuses_and_lists)
{
    df_world *w = world();
    char s1[DF_UUID_BUF], s2[DF_UUID_BUF], paused[DF_UUID_BUF], running[DF_UUID_BUF];
    char scheduled[DF_UUID_BUF], unknown[DF_UUID_BUF];
    struct df_trigger_opts later = {.delayed = true, .start_at = wall_now() + 3600};
    json_t *st, *list;
    size_t i;
    json_t *v;

    tu_run(w, "Ok", json_object(), s1);
    tu_run(w, "Ok", json_object(), s2);
    tu_run(w, "Fail", json_object(), paused);
    ck_assert(tu_trigger_opts(w, "Wait", json_object(), NULL, running, NULL));
    ck_assert(tu_trigger_opts(w, "Ok", json_object(), &later, scheduled, NULL));
    ck_assert(wait_until(suspended(w, running, 2), 10));
    df_world_sync(w);

    ck_assert_uint_eq(count_plans(w, DF_PLAN_STOPPED), 2);
    ck_assert_uint_eq(count_plans(w, DF_PLAN_PAUSED), 1);
    ck_assert_uint_eq(count_plans(w, DF_PLAN_RUNNING), 1);
    ck_assert_uint_eq(count_plans(w, DF_PLAN_SCHEDULED), 1);
    ck_assert_uint_eq(count_plans(w, DF_PLAN_PENDING), 0);
    ck_assert_uint_eq(count_plans(w, -1), 5);

    tu_uuid(unknown);
    {
        const char *ids[] = {s1, unknown, "garbage", paused, NULL, running, scheduled};
        st = df_plan_statuses(w, ids, 7);
    }
    ck_assert_int_eq(json_object_size(st), 4);
    tu_flow_eq(json_object_get(st, s1), "{\"state\":\"stopped\",\"result\":\"success\"}");
    tu_flow_eq(json_object_get(st, paused), "{\"state\":\"paused\",\"result\":\"error\"}");
    tu_flow_eq(json_object_get(st, running), "{\"state\":\"running\",\"result\":\"pending\"}");
    tu_flow_eq(json_object_get(st, scheduled), "{\"state\":\"scheduled\",\"result\":\"pending\"}");
    ck_assert_ptr_null(json_object_get(st, unknown));
    json_decref(st);

    list = df_plan_list(w, -1, 0, 0);
    ck_assert_int_eq(json_array_size(list), 5);
    json_decref(list);
    list = df_plan_list(w, DF_PLAN_STOPPED, 0, 0);
    ck_assert_int_eq(json_array_size(list), 2);
    /* newest first */
    ck_assert_str_eq(json_string_value(json_array_get(list, 0)), s2);
    ck_assert_str_eq(json_string_value(json_array_get(list, 1)), s1);
    json_decref(list);
    list = df_plan_list(w, -1, 0, 2);
    ck_assert_int_eq(json_array_size(list), 2);
    json_decref(list);
    list = df_plan_list(w, -1, 4, 0);
    ck_assert_int_eq(json_array_size(list), 1);
    json_decref(list);
    list = df_plan_list(w, DF_PLAN_PAUSED, 0, 0);
    ck_assert_int_eq(json_array_size(list), 1);
    json_array_foreach(list, i, v) ck_assert_str_eq(json_string_value(v), paused);
    json_decref(list);
    df_world_free(w);
}
END_TEST

/* ---- bad use ------------------------------------------------------------------------- */

static void expect_error(int rc, int expected, const df_error *err)
{
    ck_assert_int_eq(rc, expected);
    ck_assert_msg(err->text[0] != '\0', "no message for %d", expected);
}

START_TEST(bad_api_use_returns_errors)
{
    df_world *w = world();
    char unknown[DF_UUID_BUF], done[DF_UUID_BUF], id[DF_UUID_BUF];
    struct df_action_class nameless = {.name = NULL};
    df_event ev = {DF_EVENT_USER, NULL};
    struct df_plan_info info;
    unsigned n;
    df_error err;

    tu_uuid(unknown);
#define FRESH() (err.text[0] = '\0', &err)
    expect_error(df_plan_resume(w, unknown, FRESH()), -ENOENT, &err);
    expect_error(df_plan_cancel(w, unknown, false, &n, FRESH()), -ENOENT, &err);
    expect_error(df_plan_skip_step(w, unknown, 2, FRESH()), -ENOENT, &err);
    expect_error(df_world_event(w, unknown, 2, &ev, 0, FRESH()), -ENOENT, &err);
    expect_error(df_world_event(w, unknown, 2, &ev, 1, FRESH()), -ENOENT, &err);
    expect_error(df_plan_unfreeze(w, unknown, FRESH()), -ENOENT, &err);
    expect_error(df_plan_resume(w, "garbage", FRESH()), -ENOENT, &err);
    expect_error(df_plan_cancel(w, NULL, false, &n, FRESH()), -ENOENT, &err);
    ck_assert_ptr_null(df_plan_json(w, unknown, DF_JSON_ACTIONS));
    ck_assert_ptr_null(df_plan_json(w, NULL, 0));
    ck_assert_int_eq(df_plan_get_info(w, unknown, &info), -ENOENT);
    ck_assert_int_eq(df_plan_wait(w, unknown, 0.1, &info), -ENOENT);

    /* a stopped plan: no resume, no skip, no events */
    tu_run(w, "Ok", json_object(), done);
    expect_error(df_plan_resume(w, done, FRESH()), -EINVAL, &err);
    expect_error(df_plan_skip_step(w, done, 2, FRESH()), -EINVAL, &err);
    ck_assert_int_lt(df_world_event(w, done, 2, &ev, 0, FRESH()), 0);
    ck_assert(err.text[0] != '\0');

    /* a running plan: events only to its suspended run step */
    ck_assert(tu_trigger_opts(w, "Multi", plan_of("Ok", "Wait", NULL), NULL, id, NULL));
    ck_assert(wait_until(suspended(w, id, 5) && tu_step_is(w, id, 3, "success"), 10));
    ck_assert_int_lt(df_world_event(w, id, 3, &ev, 0, FRESH()), 0); /* succeeded */
    ck_assert(err.text[0] != '\0');
    ck_assert_int_lt(df_world_event(w, id, 1, &ev, 0, FRESH()), 0); /* a plan step */
    ck_assert(err.text[0] != '\0');
    ck_assert_int_lt(df_world_event(w, id, 99, &ev, 0, FRESH()), 0); /* no such step */
    ck_assert(err.text[0] != '\0');
    expect_error(df_plan_resume(w, id, FRESH()), -EINVAL, &err);
    expect_error(df_plan_skip_step(w, id, 5, FRESH()), -EINVAL, &err);
    expect_error(df_plan_unfreeze(w, id, FRESH()), -EINVAL, &err);
    ck_assert_int_eq(tu_state(w, id), DF_PLAN_RUNNING);
    tu_event(w, id, 5, DF_EVENT_USER, NULL, 0);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);

    /* registration */
    expect_error(df_world_register(w, &common[0], FRESH()), -EEXIST, &err);
    expect_error(df_world_register(w, &nameless, FRESH()), -EINVAL, &err);
    expect_error(df_world_use(w, NULL, FRESH()), -EINVAL, &err);
#undef FRESH
    df_world_free(w);
}
END_TEST

/* A world whose database cannot be opened refuses to start and to work, without crashing. */
START_TEST(a_world_that_cannot_start)
{
    df_error err = {{0}};
    df_world *w =
        df_world_new(&(struct df_world_config){.database = "/nonexistent/dir/x.db"}, &err);
    char id[DF_UUID_BUF];
    bool planned = true;

    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(df_world_register(w, &common[0], &err), 0);
    ck_assert_int_lt(df_world_start(w, &err), 0);
    ck_assert_msg(err.text[0] != '\0', "no message");
    err.text[0] = '\0';
    ck_assert_int_lt(df_trigger(w, "Ok", json_object(), NULL, id, &planned, &err), 0);
    ck_assert_msg(err.text[0] != '\0', "no message");
    df_world_free(w);

    /* freeing a world that never started */
    w = df_world_new(NULL, &err);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(df_world_register(w, &common[0], &err), 0);
    ck_assert_int_lt(df_trigger(w, "Ok", json_object(), NULL, id, &planned, &err), 0);
    df_world_free(w);
}
END_TEST

/* df_action_history works in every phase (the plan phase runs under the plan's lock). */
static int history_plan(df_action *a, json_t *args)
{
    df_action_history(a, "noted while planning");
    return df_plan_self(a, json_deep_copy(args));
}

static int history_run(df_action *a, const df_event *ev)
{
    (void)ev;
    df_action_history(a, "noted while running");
    return 0;
}

START_TEST(action_history_in_every_phase)
{
    static const struct df_action_class extra[] = {
        {.name = "Historian", .plan = history_plan, .run = history_run},
    };
    df_world *w = world_with(NULL, extra, 1);
    char id[DF_UUID_BUF];

    tu_run(w, "Historian", json_object(), id);
    ck_assert_str_eq(tu_history(w, id), "noted while planning,start execution,noted while running,"
                                        "finish execution");
    df_world_free(w);
}
END_TEST

/* ---- output chunks ------------------------------------------------------------------- */

static int chunky_run(df_action *a, const df_event *ev)
{
    (void)ev;
    df_action_output_chunk(a, json_string("first"), "stdout", 0);
    df_action_output_chunk(a, json_pack("{s:i}", "n", 2), NULL, 0);
    if (json_is_true(json_object_get(df_action_input(a), "drop"))) {
        df_action_drop_chunks(a);
        df_action_output_chunk(a, json_string("after drop"), "stderr", 0);
    }
    return 0;
}

/* What the proxy's runner action does: the result is assembled from the chunks. */
static void chunky_present(df_action *a, json_t *output)
{
    json_t *chunks = df_action_stored_chunks(a), *c, *result = json_array();
    size_t i;

    json_array_foreach(chunks, i, c) json_array_append(result, json_object_get(c, "chunk"));
    json_object_set_new(output, "result", result);
    json_decref(chunks);
}

START_TEST(output_chunks)
{
    static const struct df_action_class classes[] = {
        {.name = "Chunky", .run = chunky_run, .present = chunky_present},
    };
    df_world *w = tu_world(NULL, classes, 1);
    char kept[DF_UUID_BUF], dropped[DF_UUID_BUF];
    json_t *a;

    snprintf(kept, sizeof(kept), "%s", tu_trigger(w, "Chunky", json_object()));
    snprintf(dropped, sizeof(dropped), "%s",
             tu_trigger(w, "Chunky", json_pack("{s:b}", "drop", 1)));
    tu_wait(w, kept);
    tu_wait(w, dropped);
    df_world_sync(w); /* stopped plans now come back from the database */
    a = tu_action(w, kept, 1);
    tu_flow_eq(json_object_get(json_object_get(a, "output"), "result"), "[\"first\",{\"n\":2}]");
    json_decref(a);
    a = tu_action(w, dropped, 1);
    tu_flow_eq(json_object_get(json_object_get(a, "output"), "result"), "[\"after drop\"]");
    json_decref(a);
    df_world_free(w);
}
END_TEST

static Suite *engine_suite(void)
{
    Suite *s = suite_create("engine");
    TCase *tc = tcase_create("engine");

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, trigger_plans_in_the_callers_thread);
    tcase_add_test(tc, planning_errors);
    tcase_add_test(tc, trigger_refuses_bad_requests);
    tcase_add_test(tc, racing_triggers_with_one_id_make_one_plan);
    tcase_add_test(tc, output_chunks);
    tcase_add_test(tc, output_references_are_dereferenced_at_run);
    tcase_add_test(tc, independent_actions_run_in_parallel);
    tcase_add_test(tc, finalize_runs_in_order_after_the_run_phase);
    tcase_add_test(tc, plan_states_and_results);
    tcase_add_test(tc, execution_history);
    tcase_add_test(tc, a_suspended_step_frees_its_worker);
    tcase_add_test(tc, events_are_delivered_in_order_and_queued_while_running);
    tcase_add_test(tc, delayed_events_use_timers);
    tcase_add_test(tc, polling_intervals);
    tcase_add_test(tc, polling_retries_and_timeouts);
    tcase_add_test(tc, cancel);
    tcase_add_test(tc, resume_reruns_the_failed_step_then_finalize);
    tcase_add_test(tc, skip_a_failed_step);
    tcase_add_test(tc, rescue_strategies_with_auto_rescue);
    tcase_add_test(tc, no_auto_rescue_pauses);
    tcase_add_test(tc, delayed_plans);
    tcase_add_test(tc, chained_plans);
    tcase_add_test(tc, sub_plans);
    tcase_add_test(tc, sub_plan_planning_failure_counts_once);
    tcase_add_test(tc, sub_plans_cancel_their_children);
    tcase_add_test(tc, hooks_fire_with_the_right_kinds);
    tcase_add_test(tc, clean_removes_old_stopped_plans);
    tcase_add_test(tc, the_cleaner_cleans_by_itself);
    tcase_add_test(tc, subscriptions);
    tcase_add_test(tc, middleware_chain_order);
    tcase_add_test(tc, middleware_carries_a_request_id);
    tcase_add_test(tc, singleton_actions);
    tcase_add_test(tc, singleton_lock_on_resume);
    tcase_add_test(tc, named_queues);
    tcase_add_test(tc, progress);
    tcase_add_test(tc, secrets_are_redacted_and_never_stored);
    tcase_add_test(tc, counts_statuses_and_lists);
    tcase_add_test(tc, bad_api_use_returns_errors);
    tcase_add_test(tc, action_history_in_every_phase);
    tcase_add_test(tc, a_world_that_cannot_start);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(engine_suite());
}
