/*
 * Execution: parallel steps, finalize, suspend and events, polling,
 * timeouts, cancel, resume, skip, rescue strategies, delayed and chained
 * plans, sub-plans, hooks, the cleaner, singletons, queues, progress,
 * counts, and bad use of the API (reference/engine.md §2–§3).
 */
#include <stdatomic.h>

#include "testutil.h"

static int ok_run(df_action *a, const df_event *ev)
{
    (void)ev;
    json_object_set_new(df_action_output(a), "y", json_integer(1));
    return 0;
}

static int fail_run(df_action *a, const df_event *ev)
{
    (void)ev;
    return df_action_error(a, "failed on purpose");
}

/* ---- parallelism and finalize --------------------------------------------------- */

static atomic_int started;

/* Each of two actions waits for the other to have started: serialised, both fail. */
static int rendezvous_run(df_action *a, const df_event *ev)
{
    (void)ev;
    atomic_fetch_add(&started, 1);
    if (!WAIT_UNTIL(atomic_load(&started) >= 2, 10))
        return df_action_error(a, "the other action never started");
    return 0;
}

static int pair_plan(df_action *a, json_t *args)
{
    df_plan_action(a, "Rendezvous", args);
    df_plan_action(a, "Rendezvous", args);
    return df_plan_self(a, json_object());
}

static char order[64];
static atomic_int finalized;

static int note_finalize(df_action *a)
{
    char c[2] = {(char)('0' + df_action_id(a)), 0};

    strncat(order, c, sizeof(order) - strlen(order) - 1);
    atomic_fetch_add(&finalized, 1);
    return 0;
}

static int finalize_plan(df_action *a, json_t *args)
{
    df_plan_action(a, "Fin", args);
    df_plan_action(a, "Fin", args);
    df_plan_action(a, json_is_true(json_object_get(args, "fail")) ? "Fail" : "Ok", args);
    return df_plan_self(a, json_object());
}

START_TEST(parallel_steps_and_finalize)
{
    static const struct df_action_class classes[] = {
        {.name = "Rendezvous", .run = rendezvous_run},
        {.name = "Pair", .plan = pair_plan},
        {.name = "Fin", .run = ok_run, .finalize = note_finalize},
        {.name = "Ok", .run = ok_run},
        {.name = "Fail", .run = fail_run},
        {.name = "Finalizing", .plan = finalize_plan},
    };
    df_world *w = tu_world(NULL, classes, 6);
    const char *id = tu_trigger(w, "Pair", json_object());

    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);

    order[0] = '\0';
    id = tu_trigger(w, "Finalizing", json_object());
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_str_eq(order, "23");
    /* a failed run phase skips the finalize phase */
    atomic_store(&finalized, 0);
    id = tu_trigger(w, "Finalizing", json_pack("{s:b}", "fail", 1));
    tu_expect(w, id, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    ck_assert_int_eq(atomic_load(&finalized), 0);
    ck_assert_str_eq(tu_step_state(w, id, 4), "pending");
    /* resume re-runs the failed step (it fails again) and still no finalize */
    ck_assert_int_eq(df_plan_resume(w, id, NULL), 0);
    tu_expect(w, id, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    ck_assert_int_eq(atomic_load(&finalized), 0);
    df_world_free(w);
}
END_TEST

/* ---- suspend and events ------------------------------------------------------------- */

static atomic_bool in_run, release_run;

/* Records every event's "n"; the first event blocks until the test releases it. */
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
    if (json_array_size(seen) == 1) {
        atomic_store(&in_run, true);
        WAIT_UNTIL(atomic_load(&release_run), 10);
    }
    if (json_is_true(json_object_get(ev->data, "last")))
        return 0;
    df_action_suspend(a);
    return 0;
}

static void send(df_world *w, const char *id, int n, bool last, double delay)
{
    json_t *data = json_pack("{s:i, s:b}", "n", n, "last", last);
    df_event ev = {DF_EVENT_USER, data};
    df_error err;

    ck_assert_msg(df_world_event(w, id, 2, &ev, delay, &err) == 0, "%s", err.text);
    json_decref(data);
}

START_TEST(events_are_queued_and_ordered)
{
    static const struct df_action_class classes[] = {
        {.name = "Collect", .run = collect_run},
        {.name = "Ok", .run = ok_run},
    };
    /* one worker: a suspended step must not hold it */
    df_world *w = tu_world(&(struct df_world_config){.pool_size = 1}, classes, 2);
    const char *id = tu_trigger(w, "Collect", json_object()), *other;
    json_t *a;

    ck_assert(WAIT_UNTIL(strcmp(tu_step_state(w, id, 2), "suspended") == 0, 10));
    other = tu_trigger(w, "Ok", json_object());
    tu_expect(w, other, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);

    send(w, id, 1, false, 0);
    ck_assert(WAIT_UNTIL(atomic_load(&in_run), 10));
    /* sent while the step runs: queued, delivered in order afterwards */
    send(w, id, 2, false, 0);
    send(w, id, 3, false, 0);
    send(w, id, 4, true, 0.05); /* through the timer */
    atomic_store(&release_run, true);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    a = tu_action(w, id, 1);
    tu_flow_eq(json_object_get(json_object_get(a, "output"), "seen"), "[1,2,3,4]");
    json_decref(a);
    df_world_free(w);
}
END_TEST

/* ---- polling and timeouts -------------------------------------------------------------- */

static atomic_int poll_failures_left;

static int poll_invoke(df_action *a)
{
    json_object_set_new(df_action_output(a), "task", json_string("external-1"));
    return 0;
}

static int poll_poll(df_action *a)
{
    if (atomic_fetch_sub(&poll_failures_left, 1) > 0)
        return df_action_error(a, "the external service is down");
    json_object_set_new(df_action_output(a), "polled", json_true());
    return 0;
}

static bool poll_done(df_action *a)
{
    json_int_t total = json_integer_value(
        json_object_get(json_object_get(df_action_output(a), "poll_attempts"), "total"));

    return json_is_true(json_object_get(df_action_output(a), "polled")) && total >= 3;
}

static const struct df_polling_ops poll_ops = {poll_invoke, poll_poll, poll_done, NULL};

static int polling_run(df_action *a, const df_event *ev)
{
    return df_polling_run(a, ev, &poll_ops);
}

static int timeout_run(df_action *a, const df_event *ev)
{
    if (ev == NULL) {
        df_action_schedule_timeout(a, 0.05);
        df_action_suspend(a);
        return 0;
    }
    return df_polling_run(a, ev, &poll_ops); /* Timeout → "Timeout exceeded." */
}

START_TEST(polling_and_timeouts)
{
    static const struct df_action_class classes[] = {
        {.name = "Poll", .run = polling_run},
        {.name = "Timeout", .run = timeout_run},
    };
    df_world *w = tu_world(NULL, classes, 2);
    const char *id;
    json_t *a, *s;

    ck_assert(df_polling_interval(0) == 0.5 && df_polling_interval(4) == 0.5);
    ck_assert(df_polling_interval(5) == 1 && df_polling_interval(10) == 2);
    ck_assert(df_polling_interval(25) == 16 && df_polling_interval(1000) == 16);

    atomic_store(&poll_failures_left, 2); /* two failures in a row are retried */
    id = tu_trigger(w, "Poll", json_object());
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    a = tu_action(w, id, 1);
    tu_flow_eq(json_object_get(json_object_get(a, "output"), "poll_attempts"),
               "{\"total\":3,\"failed\":0}");
    json_decref(a);

    atomic_store(&poll_failures_left, 3); /* the third failure in a row fails the step */
    id = tu_trigger(w, "Poll", json_object());
    tu_expect(w, id, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    s = tu_step(w, id, 2);
    ck_assert_str_eq(tu_str(json_object_get(s, "error"), "message"),
                     "the external service is down");
    json_decref(s);

    id = tu_trigger(w, "Timeout", json_object());
    tu_expect(w, id, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    s = tu_step(w, id, 2);
    ck_assert_str_eq(tu_str(json_object_get(s, "error"), "message"), "Timeout exceeded.");
    json_decref(s);
    df_world_free(w);
}
END_TEST

/* ---- cancel ------------------------------------------------------------------------------ */

static int cancellable_run(df_action *a, const df_event *ev)
{
    if (ev == NULL) {
        df_action_suspend(a);
        return 0;
    }
    if (ev->kind == DF_EVENT_CANCEL)
        return df_action_error(a, "cancelled");
    return df_action_error(a, "aborted");
}

static int hold_run(df_action *a, const df_event *ev)
{
    if (ev == NULL)
        df_action_suspend(a);
    return 0;
}

START_TEST(cancel)
{
    static const struct df_action_class classes[] = {
        {.name = "Cancellable", .run = cancellable_run, .flags = DF_ACTION_CANCELLABLE},
        {.name = "Hold", .run = hold_run},
        {.name = "Ok", .run = ok_run},
    };
    df_world *w = tu_world(NULL, classes, 3);
    const char *id = tu_trigger(w, "Cancellable", json_object()), *hold;
    struct df_trigger_opts delayed = {.delayed = true, .start_at = (double)time(NULL) + 3600};
    char did[DF_UUID_BUF];
    df_event ev = {DF_EVENT_USER, NULL};
    unsigned count = 99;
    json_t *s;

    ck_assert(WAIT_UNTIL(strcmp(tu_step_state(w, id, 2), "suspended") == 0, 10));
    ck_assert_int_eq(df_plan_cancel(w, id, false, &count, NULL), 0);
    ck_assert_int_eq(count, 1);
    tu_expect(w, id, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    s = tu_step(w, id, 2);
    ck_assert_str_eq(tu_str(json_object_get(s, "error"), "message"), "cancelled");
    json_decref(s);

    hold = tu_trigger(w, "Hold", json_object());
    ck_assert(WAIT_UNTIL(strcmp(tu_step_state(w, hold, 2), "suspended") == 0, 10));
    ck_assert_int_eq(df_plan_cancel(w, hold, true, &count, NULL), 0);
    ck_assert_int_eq(count, 0); /* not cancellable */
    ck_assert_int_eq(df_world_event(w, hold, 2, &ev, 0, NULL), 0);
    tu_expect(w, hold, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);

    /* a scheduled plan is cancelled outright */
    ck_assert_int_eq(df_trigger(w, "Ok", json_object(), &delayed, did, NULL, NULL), 0);
    ck_assert_int_eq(df_plan_cancel(w, did, false, &count, NULL), 0);
    ck_assert_int_eq(count, 1);
    tu_expect(w, did, DF_PLAN_STOPPED, DF_RESULT_CANCELLED);
    df_world_free(w);
}
END_TEST

/* ---- resume, skip, rescue ------------------------------------------------------------------ */

static atomic_int flaky_failures;

static int flaky_run(df_action *a, const df_event *ev)
{
    (void)ev;
    if (atomic_fetch_sub(&flaky_failures, 1) > 0)
        return df_action_error(a, "flaky");
    json_object_set_new(df_action_output(a), "y", json_integer(7));
    return 0;
}

/* sequence { Flaky; After }, plus Uses(Flaky.output) */
static int skip_plan(df_action *a, json_t *args)
{
    df_action *flaky;
    json_t *input;

    df_sequence_begin(a);
    flaky = df_plan_action(a, json_string_value(json_object_get(args, "first")), args);
    df_plan_action(a, "Fin", args);
    df_sequence_end(a);
    input = json_pack("{s:o}", "x", df_output_ref(flaky, "y", NULL));
    df_plan_action(a, "Fin", input);
    json_decref(input);
    return df_plan_self(a, json_object());
}

START_TEST(resume_and_skip)
{
    static const struct df_action_class classes[] = {
        {.name = "Flaky", .run = flaky_run, .finalize = note_finalize},
        {.name = "Fin", .run = ok_run, .finalize = note_finalize},
        {.name = "Skippy", .plan = skip_plan},
    };
    df_world *w = tu_world(NULL, classes, 3);
    const char *id;
    df_error err;

    /* steps: 1 Skippy, 2-4 Flaky (plan, run, finalize), 5-7 Fin, 8-10 Fin(uses) */
    atomic_store(&flaky_failures, 1);
    id = tu_trigger(w, "Skippy", json_pack("{s:s}", "first", "Flaky"));
    tu_expect(w, id, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    ck_assert_str_eq(tu_step_state(w, id, 3), "error");
    ck_assert_str_eq(tu_step_state(w, id, 6), "pending");
    atomic_store(&finalized, 0);
    ck_assert_int_eq(df_plan_resume(w, id, &err), 0);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_int_eq(atomic_load(&finalized), 3);
    ck_assert_int_eq(df_plan_resume(w, id, &err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err.text, "only a paused plan can be resumed"));
    ck_assert_int_eq(df_plan_skip_step(w, id, 3, &err), -EINVAL);

    atomic_store(&flaky_failures, 100);
    id = tu_trigger(w, "Skippy", json_pack("{s:s}", "first", "Flaky"));
    tu_expect(w, id, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    ck_assert_int_eq(df_plan_skip_step(w, id, 6, &err), -EINVAL); /* not failed */
    ck_assert_int_eq(df_plan_skip_step(w, id, 3, &err), 0);
    ck_assert_str_eq(tu_step_state(w, id, 3), "skipping");
    ck_assert_str_eq(tu_step_state(w, id, 4), "skipped"); /* its finalize */
    ck_assert_str_eq(tu_step_state(w, id, 9), "skipped"); /* uses its output */
    ck_assert_str_eq(tu_step_state(w, id, 10), "skipped");
    ck_assert_str_eq(tu_step_state(w, id, 6), "pending"); /* only follows in a sequence */
    ck_assert_int_eq(df_plan_resume(w, id, &err), 0);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_WARNING);
    ck_assert_str_eq(tu_step_state(w, id, 3), "skipped");
    ck_assert_str_eq(tu_step_state(w, id, 6), "success");
    df_world_free(w);
}
END_TEST

static int two_children_plan(df_action *a, json_t *args)
{
    df_plan_action(a, tu_str(args, "a"), args);
    df_plan_action(a, tu_str(args, "b"), args);
    return df_plan_self(a, json_object());
}

START_TEST(rescue_strategies)
{
    static const struct df_action_class classes[] = {
        {.name = "FailPause", .run = fail_run},
        {.name = "FailFail", .run = fail_run, .rescue = DF_RESCUE_FAIL},
        {.name = "FailSkip", .run = fail_run, .rescue = DF_RESCUE_SKIP},
        {.name = "Ok", .run = ok_run},
        {.name = "Two", .plan = two_children_plan},
    };
    df_world *w = tu_world(NULL, classes, 5), *manual;
    const char *id;

    id = tu_trigger(w, "Two", json_pack("{s:s, s:s}", "a", "FailPause", "b", "Ok"));
    tu_expect(w, id, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    id = tu_trigger(w, "Two", json_pack("{s:s, s:s}", "a", "FailFail", "b", "Ok"));
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    id = tu_trigger(w, "Two", json_pack("{s:s, s:s}", "a", "FailSkip", "b", "Ok"));
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_WARNING);
    ck_assert_str_eq(tu_step_state(w, id, 3), "skipped");
    id = tu_trigger(w, "Two", json_pack("{s:s, s:s}", "a", "FailSkip", "b", "FailFail"));
    tu_expect(w, id, DF_PLAN_PAUSED, DF_RESULT_ERROR); /* mixed suggestions pause */
    df_world_free(w);

    manual = tu_world(&(struct df_world_config){.no_auto_rescue = true}, classes, 5);
    id = tu_trigger(manual, "Two", json_pack("{s:s, s:s}", "a", "FailFail", "b", "Ok"));
    tu_expect(manual, id, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    df_world_free(manual);
}
END_TEST

/* ---- delayed plans ----------------------------------------------------------------------- */

static const char *delay(df_world *w, const char *cls, struct df_trigger_opts o)
{
    static char ids[4][DF_UUID_BUF];
    static int next;
    char *id = ids[next++ % 4];
    df_error err;

    o.delayed = true;
    ck_assert_msg(df_trigger(w, cls, json_object(), &o, id, NULL, &err) == 0, "%s", err.text);
    return id;
}

START_TEST(delayed_and_chained_plans)
{
    static const struct df_action_class classes[] = {
        {.name = "Ok", .run = ok_run},
        {.name = "Hold", .run = hold_run},
        {.name = "Fail", .run = fail_run, .rescue = DF_RESCUE_FAIL},
    };
    df_world *w = tu_world(NULL, classes, 3);
    double now = (double)time(NULL);
    struct df_plan_info info;
    const char *id, *prereq, *blocked, *failed;
    df_event ev = {DF_EVENT_USER, NULL};
    json_t *s, *j;

    id = delay(w, "Ok", (struct df_trigger_opts){.start_at = now + 1});
    ck_assert_int_eq(df_plan_get_info(w, id, &info), 0);
    ck_assert_int_eq(info.state, DF_PLAN_SCHEDULED);
    j = df_plan_json(w, id, 0);
    ck_assert_str_eq(tu_str(json_array_get(json_object_get(j, "execution_history"), 0), "name"),
                     "delay");
    json_decref(j);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);

    id = delay(w, "Ok", (struct df_trigger_opts){.start_at = now - 20, .start_before = now - 10});
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    s = tu_step(w, id, 1);
    ck_assert_ptr_nonnull(strstr(tu_str(json_object_get(s, "error"), "message"),
                                 "Execution plan could not be started before set time ("));
    json_decref(s);

    id = delay(w, "Ok", (struct df_trigger_opts){.frozen = true});
    ck_assert_int_eq(df_plan_wait(w, id, 0.2, &info), -ETIMEDOUT);
    ck_assert_int_eq(info.state, DF_PLAN_SCHEDULED);
    ck_assert_int_eq(df_plan_unfreeze(w, id, NULL), 0);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);

    prereq = tu_trigger(w, "Hold", json_object());
    blocked =
        delay(w, "Ok", (struct df_trigger_opts){.blocked_by = (const char *const[]){prereq, NULL}});
    ck_assert_int_eq(df_plan_wait(w, blocked, 0.2, &info), -ETIMEDOUT);
    ck_assert_int_eq(info.state, DF_PLAN_SCHEDULED);
    ck_assert(WAIT_UNTIL(strcmp(tu_step_state(w, prereq, 2), "suspended") == 0, 10));
    ck_assert_int_eq(df_world_event(w, prereq, 2, &ev, 0, NULL), 0);
    tu_expect(w, blocked, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);

    failed = tu_trigger(w, "Fail", json_object());
    tu_expect(w, failed, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    id =
        delay(w, "Ok", (struct df_trigger_opts){.blocked_by = (const char *const[]){failed, NULL}});
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    s = tu_step(w, id, 1);
    char expected[256];
    snprintf(expected, sizeof(expected),
             "Execution plan could not be started because some of its prerequisite execution "
             "plans failed:\n- %s",
             failed);
    ck_assert_str_eq(tu_str(json_object_get(s, "error"), "message"), expected);
    json_decref(s);
    df_world_free(w);
}
END_TEST

/* ---- sub-plans ------------------------------------------------------------------------------ */

static const char *const child_ids[] = {"aaaaaaaa-0000-4000-8000-000000000001",
                                        "aaaaaaaa-0000-4000-8000-000000000002",
                                        "aaaaaaaa-0000-4000-8000-000000000003"};

static int create_children(df_action *a)
{
    bool fail = json_is_true(json_object_get(df_action_input(a), "fail"));

    for (int i = 0; i < 3; i++) {
        char id[DF_UUID_BUF];
        bool planned;
        const char *cls = fail && i == 1 ? "Fail" : "Ok";
        json_t *args = json_object();
        char given[DF_UUID_BUF];
        snprintf(given, sizeof(given), "%s", child_ids[i]);
        if (fail)
            given[0] = 'b';
        if (df_action_trigger_child(a, cls, args, given, id, &planned) < 0)
            return -1;
    }
    return 0;
}

static int parent_run(df_action *a, const df_event *ev)
{
    return df_sub_plans_run(a, ev, create_children);
}

START_TEST(sub_plans)
{
    static const struct df_action_class classes[] = {
        {.name = "Ok", .run = ok_run},
        {.name = "Fail", .run = fail_run, .rescue = DF_RESCUE_FAIL},
        {.name = "Parent", .run = parent_run, .rescue = DF_RESCUE_FAIL},
    };
    df_world *w = tu_world(NULL, classes, 3);
    const char *id = tu_trigger(w, "Parent", json_object());
    json_t *a, *out, *s;

    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    out = json_object_get(a = tu_action(w, id, 1), "output");
    ck_assert_int_eq(json_integer_value(json_object_get(out, "total_count")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(out, "success_count")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(out, "pending_count")), 0);
    json_decref(a);
    a = tu_action(w, child_ids[0], 1);
    ck_assert_str_eq(tu_str(a, "caller_execution_plan_id"), id);
    ck_assert_int_eq(json_integer_value(json_object_get(a, "caller_action_id")), 1);
    json_decref(a);

    id = tu_trigger(w, "Parent", json_pack("{s:b}", "fail", 1));
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    out = json_object_get(a = tu_action(w, id, 1), "output");
    ck_assert_int_eq(json_integer_value(json_object_get(out, "failed_count")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(out, "success_count")), 2);
    json_decref(a);
    s = tu_step(w, id, 2);
    ck_assert_str_eq(tu_str(json_object_get(s, "error"), "message"), "A sub task failed");
    json_decref(s);
    df_world_free(w);
}
END_TEST

/* ---- hooks, cleaner, singletons, queues, progress, counts ---------------------------------- */

static atomic_int hook_stopped, hook_success, hook_failure, hook_running;

static void count_hook(df_action *a, unsigned kind, const struct df_plan_info *plan)
{
    (void)a;
    (void)plan;
    if (kind == DF_HOOK_ON(DF_PLAN_STOPPED))
        atomic_fetch_add(&hook_stopped, 1);
    if (kind == DF_HOOK_ON(DF_PLAN_RUNNING))
        atomic_fetch_add(&hook_running, 1);
    if (kind == DF_HOOK_SUCCESS)
        atomic_fetch_add(&hook_success, 1);
    if (kind == DF_HOOK_FAILURE)
        atomic_fetch_add(&hook_failure, 1);
}

static const struct df_hook hooks[] = {
    {DF_HOOK_ON(DF_PLAN_STOPPED) | DF_HOOK_SUCCESS | DF_HOOK_FAILURE, count_hook}, {0}};

START_TEST(hooks_fire)
{
    static const struct df_action_class classes[] = {
        {.name = "HookedOk", .run = ok_run, .hooks = hooks},
        {.name = "HookedFail", .run = fail_run, .rescue = DF_RESCUE_FAIL, .hooks = hooks},
    };
    df_world *w = tu_world(NULL, classes, 2);

    tu_wait(w, tu_trigger(w, "HookedOk", json_object()));
    ck_assert(WAIT_UNTIL(atomic_load(&hook_success) == 1, 5));
    tu_wait(w, tu_trigger(w, "HookedFail", json_object()));
    ck_assert(WAIT_UNTIL(atomic_load(&hook_failure) == 1, 5));
    ck_assert_int_eq(atomic_load(&hook_stopped), 2);
    ck_assert_int_eq(atomic_load(&hook_success), 1);
    ck_assert_int_eq(atomic_load(&hook_running), 0); /* not subscribed */
    df_world_free(w);
}
END_TEST

START_TEST(cleaner)
{
    static const struct df_action_class classes[] = {
        {.name = "Ok", .run = ok_run},
        {.name = "Hold", .run = hold_run},
    };
    df_world *w = tu_world(NULL, classes, 2), *auto_w;
    const char *done = tu_trigger(w, "Ok", json_object()), *held;
    struct df_plan_info info;
    uint64_t removed = 99;
    char done_id[DF_UUID_BUF];

    tu_wait(w, done);
    held = tu_trigger(w, "Hold", json_object());
    ck_assert(WAIT_UNTIL(strcmp(tu_step_state(w, held, 2), "suspended") == 0, 10));
    ck_assert_int_eq(df_world_clean(w, 3600, &removed, NULL), 0);
    ck_assert_int_eq(removed, 0); /* too young */
    ck_assert_int_eq(df_world_clean(w, 0, &removed, NULL), 0);
    ck_assert_int_eq(removed, 1);
    ck_assert_int_eq(df_plan_get_info(w, done, &info), -ENOENT);
    ck_assert_int_eq(df_plan_get_info(w, held, &info), 0); /* still running */
    df_world_free(w);

    auto_w = tu_world(&(struct df_world_config){.cleaner_age = 0.05, .cleaner_interval = 0.05},
                      classes, 2);
    snprintf(done_id, sizeof(done_id), "%s", tu_trigger(auto_w, "Ok", json_object()));
    tu_wait(auto_w, done_id);
    ck_assert(WAIT_UNTIL(df_plan_get_info(auto_w, done_id, &info) == -ENOENT, 10));
    df_world_free(auto_w);
}
END_TEST

static int progress_run(df_action *a, const df_event *ev)
{
    if (ev == NULL) {
        df_action_set_progress(a, 0.25);
        df_action_suspend(a);
    }
    return 0;
}

START_TEST(singletons_queues_progress)
{
    static const struct df_action_class classes[] = {
        {.name = "Single", .run = hold_run, .flags = DF_ACTION_SINGLETON},
        {.name = "Slow", .run = ok_run, .queue = "slow"},
        {.name = "Progress", .run = progress_run},
    };
    df_error err;
    df_world *w = df_world_new(NULL, &err);
    const char *first, *id;
    char second[DF_UUID_BUF];
    struct df_plan_info info;
    bool planned = true;
    df_event ev = {DF_EVENT_USER, NULL};
    json_t *s;

    for (int i = 0; i < 3; i++)
        df_world_register(w, &classes[i], &err);
    ck_assert_int_eq(df_world_add_queue(w, "slow", 2, &err), 0);
    ck_assert_int_eq(df_world_add_queue(w, "slow", 2, &err), -EEXIST);
    ck_assert_int_eq(df_world_start(w, &err), 0);

    first = tu_trigger(w, "Single", json_object());
    ck_assert_int_eq(df_trigger(w, "Single", json_object(), NULL, second, &planned, &err), 0);
    ck_assert(!planned);
    ck_assert_str_eq(err.text, "Action Single is already active");
    ck_assert(WAIT_UNTIL(strcmp(tu_step_state(w, first, 2), "suspended") == 0, 10));
    ck_assert_int_eq(df_world_event(w, first, 2, &ev, 0, NULL), 0);
    tu_expect(w, first, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    id = tu_trigger(w, "Single", json_object()); /* the lock went with the first plan */
    ck_assert(WAIT_UNTIL(strcmp(tu_step_state(w, id, 2), "suspended") == 0, 10));
    ck_assert_int_eq(df_world_event(w, id, 2, &ev, 0, NULL), 0);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);

    id = tu_trigger(w, "Slow", json_object());
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    s = tu_step(w, id, 2);
    ck_assert_str_eq(tu_str(s, "queue"), "slow");
    json_decref(s);

    id = tu_trigger(w, "Progress", json_object());
    ck_assert(WAIT_UNTIL(strcmp(tu_step_state(w, id, 2), "suspended") == 0, 10));
    ck_assert_int_eq(df_plan_get_info(w, id, &info), 0);
    ck_assert(info.progress > 0.24 && info.progress < 0.26);
    ck_assert_int_eq(df_world_event(w, id, 2, &ev, 0, NULL), 0);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_int_eq(df_plan_get_info(w, id, &info), 0);
    ck_assert(info.progress == 1.0);
    df_world_free(w);
}
END_TEST

START_TEST(counts_and_bad_use)
{
    static const struct df_action_class classes[] = {
        {.name = "Ok", .run = ok_run},
        {.name = "Hold", .run = hold_run},
    };
    df_world *w = tu_world(NULL, classes, 2);
    static const char unknown[] = "99999999-9999-4999-8999-999999999999";
    char ok[DF_UUID_BUF], held[DF_UUID_BUF];
    df_event ev = {DF_EVENT_USER, NULL};
    uint64_t n;
    df_error err;
    json_t *st, *list;

    snprintf(ok, sizeof(ok), "%s", tu_trigger(w, "Ok", json_object()));
    tu_wait(w, ok);
    snprintf(held, sizeof(held), "%s", tu_trigger(w, "Hold", json_object()));
    ck_assert(WAIT_UNTIL(strcmp(tu_step_state(w, held, 2), "suspended") == 0, 10));
    ck_assert_int_eq(df_plan_count(w, DF_PLAN_STOPPED, &n, NULL), 0);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(df_plan_count(w, DF_PLAN_RUNNING, &n, NULL), 0);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(df_plan_count(w, -1, &n, NULL), 0);
    ck_assert_int_eq(n, 2);
    df_world_sync(
        w); /* the stopped plan is answered by the database, the running one from memory */
    st = df_plan_statuses(w, (const char *const[]){ok, unknown, held, "not-a-uuid"}, 4);
    ck_assert_int_eq(json_object_size(st), 2); /* the unknown id is left out */
    tu_flow_eq(json_object_get(st, ok), "{\"state\":\"stopped\",\"result\":\"success\"}");
    tu_flow_eq(json_object_get(st, held), "{\"state\":\"running\",\"result\":\"pending\"}");
    json_decref(st);
    list = df_plan_list(w, DF_PLAN_RUNNING, 0, 0);
    ck_assert_int_eq(json_array_size(list), 1);
    ck_assert_str_eq(json_string_value(json_array_get(list, 0)), held);
    json_decref(list);

    ck_assert_int_eq(df_plan_resume(w, unknown, &err), -ENOENT);
    ck_assert_str_eq(err.text, "plan 99999999-9999-4999-8999-999999999999 not found");
    ck_assert_int_eq(df_plan_cancel(w, unknown, false, NULL, &err), -ENOENT);
    ck_assert_int_eq(df_plan_skip_step(w, unknown, 1, &err), -ENOENT);
    ck_assert_int_eq(df_world_event(w, unknown, 2, &ev, 0, &err), -ENOENT);
    ck_assert_int_eq(df_world_event(w, ok, 2, &ev, 0, &err), -EINVAL);
    ck_assert_int_eq(df_world_event(w, held, 1, &ev, 0, &err), -ENOENT); /* a plan step */
    ck_assert_int_eq(df_world_event(w, held, 42, &ev, 0, &err), -ENOENT);
    ck_assert_int_eq(df_plan_skip_step(w, held, 2, &err), -EINVAL);
    ck_assert_ptr_null(df_plan_json(w, unknown, 0));
    ck_assert_ptr_null(df_plan_json(w, "garbage", 0));
    ck_assert_ptr_null(df_plan_json(w, NULL, 0));
    ck_assert_int_eq(df_world_event(w, held, 2, &ev, 0, &err), 0);
    tu_expect(w, held, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    df_world_free(w);
}
END_TEST

/* ---- output chunks ---------------------------------------------------------------------- */

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

int main(void)
{
    Suite *s = suite_create("run");
    TCase *tc = tcase_create("run");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, parallel_steps_and_finalize);
    tcase_add_test(tc, events_are_queued_and_ordered);
    tcase_add_test(tc, polling_and_timeouts);
    tcase_add_test(tc, cancel);
    tcase_add_test(tc, resume_and_skip);
    tcase_add_test(tc, rescue_strategies);
    tcase_add_test(tc, delayed_and_chained_plans);
    tcase_add_test(tc, sub_plans);
    tcase_add_test(tc, hooks_fire);
    tcase_add_test(tc, cleaner);
    tcase_add_test(tc, singletons_queues_progress);
    tcase_add_test(tc, counts_and_bad_use);
    tcase_add_test(tc, output_chunks);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
