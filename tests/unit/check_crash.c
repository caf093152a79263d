/*
 * Crash recovery with a file database: a forked child runs plans and is
 * killed with SIGKILL in the middle; the parent reopens the database and
 * checks what the engine recovered.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dynflow/dynflow.h"
#include "suite.h"

static bool in_child;
static int ready_fd = -1;
static char marker_path[256];

/* Blocks forever in the child (after telling the parent it started); runs
 * normally in the parent, so a second start would show in the marker file. */
static int block_run(df_action *a, const df_event *ev)
{
    int fd = open(marker_path, O_WRONLY | O_APPEND | O_CREAT, 0600);

    (void)ev;
    dprintf(fd, "%s\n", df_action_plan_id(a));
    close(fd);
    if (in_child) {
        if (write(ready_fd, "B", 1) != 1)
            _exit(3);
        for (;;)
            pause();
    }
    return 0;
}

static int after_run(df_action *a, const df_event *ev)
{
    (void)ev;
    json_object_set_new(df_action_output(a), "after", json_true());
    return 0;
}

/* Counts its executions; suspends on the first run of each process, ends on an event. */
static int wait_run(df_action *a, const df_event *ev)
{
    json_t *out = df_action_output(a);
    json_int_t runs = json_integer_value(json_object_get(out, "runs"));

    if (ev != NULL)
        return 0;
    json_object_set_new(out, "runs", json_integer(runs + 1));
    df_action_suspend(a);
    return 0;
}

static int secret_run(df_action *a, const df_event *ev)
{
    json_t *secrets = df_action_secrets(a);

    if (secrets == NULL)
        return -1;
    if (ev == NULL)
        df_action_suspend(a);
    return 0;
}

static int quick_run(df_action *a, const df_event *ev)
{
    (void)ev;
    json_object_set_new(df_action_output(a), "done", json_true());
    return 0;
}

static int skip_plan(df_action *a, json_t *args)
{
    df_sequence_begin(a);
    if (df_plan_action(a, "Crash::BlockSkip", args) == NULL ||
        df_plan_action(a, "Crash::After", args) == NULL)
        return -1;
    df_sequence_end(a);
    return df_plan_self(a, json_object());
}

static const struct df_action_class classes[] = {
    {.name = "Crash::Block", .run = block_run},
    {.name = "Crash::BlockFail", .run = block_run, .rescue = DF_RESCUE_FAIL},
    {.name = "Crash::BlockSkip", .run = block_run, .rescue = DF_RESCUE_SKIP},
    {.name = "Crash::After", .run = after_run},
    {.name = "Crash::SkipParent", .plan = skip_plan},
    {.name = "Crash::Wait", .run = wait_run},
    {.name = "Crash::Secret", .run = secret_run},
    {.name = "Crash::Quick", .run = quick_run},
};

enum { P_BLOCK, P_FAIL, P_SKIP, P_WAIT, P_SECRET, P_QUICK, P_DELAYED, P_TIMER, N_PLANS };
static const char *const plan_ids[N_PLANS] = {
    "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002",
    "00000000-0000-4000-8000-000000000003", "00000000-0000-4000-8000-000000000004",
    "00000000-0000-4000-8000-000000000005", "00000000-0000-4000-8000-000000000006",
    "00000000-0000-4000-8000-000000000007", "00000000-0000-4000-8000-000000000008",
};

static char db_path[256];

static df_world *start_world(void)
{
    struct df_world_config cfg = {.database = db_path};
    df_error err;
    df_world *w = df_world_new(&cfg, &err);

    ck_assert_ptr_nonnull(w);
    for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
        ck_assert_int_eq(df_world_register(w, &classes[i], &err), 0);
    ck_assert_msg(df_world_start(w, &err) == 0, "start: %s", err.text);
    return w;
}

static void trigger(df_world *w, int which, const char *cls, json_t *args, double start_at)
{
    struct df_trigger_opts o = {
        .plan_id = plan_ids[which], .delayed = start_at > 0, .start_at = start_at};
    char id[DF_UUID_BUF];
    bool planned;
    df_error err;

    if (df_trigger(w, cls, args, &o, id, &planned, &err) != 0 || !planned)
        _exit(4);
}

/* Polls the plan's first run step until it is in state. */
static bool step_reaches(df_world *w, const char *plan_id, const char *state, double seconds)
{
    for (int i = 0; i < seconds * 100; i++) {
        json_t *j = df_plan_json(w, plan_id, DF_JSON_STEPS), *s;
        size_t k;
        bool hit = false;
        json_array_foreach(json_object_get(j, "steps"), k, s) hit =
            hit || strcmp(json_string_value(json_object_get(s, "state")), state) == 0;
        json_decref(j);
        if (hit)
            return true;
        usleep(10000);
    }
    return false;
}

static void child(int fd)
{
    df_world *w;
    struct df_plan_info info;

    in_child = true;
    ready_fd = fd;
    w = start_world();
    trigger(w, P_QUICK, "Crash::Quick", json_object(), 0);
    df_plan_wait(w, plan_ids[P_QUICK], 10, &info);
    trigger(w, P_WAIT, "Crash::Wait", json_object(), 0);
    trigger(w, P_SECRET, "Crash::Secret", json_pack("{s:{s:s}}", "secrets", "password", "s3cr3t"),
            0);
    if (!step_reaches(w, plan_ids[P_WAIT], "suspended", 10) ||
        !step_reaches(w, plan_ids[P_SECRET], "suspended", 10))
        _exit(5);
    trigger(w, P_TIMER, "Crash::Wait", json_object(), 0);
    if (!step_reaches(w, plan_ids[P_TIMER], "suspended", 10))
        _exit(5);
    /* an event due after the restart: its timer is in the database */
    if (df_world_event(w, plan_ids[P_TIMER], 2, &(df_event){DF_EVENT_USER, NULL}, 1.5, NULL) < 0)
        _exit(7);
    trigger(w, P_DELAYED, "Crash::Quick", json_object(), (double)time(NULL) + 2);
    trigger(w, P_BLOCK, "Crash::Block", json_object(), 0);
    trigger(w, P_FAIL, "Crash::BlockFail", json_object(), 0);
    trigger(w, P_SKIP, "Crash::SkipParent", json_object(), 0);
    df_world_sync(w);
    if (write(fd, "R", 1) != 1)
        _exit(6);
    for (;;)
        pause();
}

static int marker_lines(void)
{
    FILE *f = fopen(marker_path, "r");
    int n = 0, c;

    while (f != NULL && (c = fgetc(f)) != EOF)
        n += c == '\n';
    if (f != NULL)
        fclose(f);
    return n;
}

static json_t *run_step(df_world *w, const char *plan_id, int nth)
{
    json_t *j = df_plan_json(w, plan_id, DF_JSON_STEPS), *s, *found = NULL;
    size_t k;

    json_array_foreach(json_object_get(j, "steps"), k,
                       s) if (strstr(json_string_value(json_object_get(s, "class")), "RunStep") &&
                              nth-- == 0) found = json_incref(s);
    json_decref(j);
    return found;
}

static bool history_has(df_world *w, const char *plan_id, const char *name)
{
    json_t *j = df_plan_json(w, plan_id, 0), *e;
    size_t k;
    bool hit = false;

    json_array_foreach(json_object_get(j, "execution_history"), k, e) hit =
        hit || strcmp(json_string_value(json_object_get(e, "name")), name) == 0;
    json_decref(j);
    return hit;
}

static void expect(df_world *w, int which, enum df_plan_state state, enum df_result result)
{
    struct df_plan_info info;

    ck_assert_int_eq(df_plan_wait(w, plan_ids[which], 10, &info), 0);
    ck_assert_msg(info.state == state && info.result == result, "plan %d is %s/%s, not %s/%s",
                  which, df_plan_state_name(info.state), df_result_name(info.result),
                  df_plan_state_name(state), df_result_name(result));
}

START_TEST(kill_and_recover)
{
    const char *tmp = getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/tmp";
    int fds[2], blocks = 0;
    bool ready = false;
    char c;
    pid_t pid;
    df_world *w;
    json_t *step, *j;
    struct df_plan_info info;
    df_event ev = {DF_EVENT_USER, NULL};
    FILE *db;
    char buf[4096];
    size_t n;

    snprintf(db_path, sizeof(db_path), "%s/crash-%d.db", tmp, getpid());
    snprintf(marker_path, sizeof(marker_path), "%s/crash-%d.marker", tmp, getpid());
    unlink(db_path);
    unlink(marker_path);
    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        child(fds[1]);
    }
    close(fds[1]);
    while ((blocks < 3 || !ready) && read(fds[0], &c, 1) == 1) {
        blocks += c == 'B';
        ready = ready || c == 'R';
    }
    ck_assert_msg(blocks == 3 && ready, "the child did not get ready (%d blocks)", blocks);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(fds[0]);

    w = start_world();
    /* the step that was running failed; the plan followed its rescue strategy */
    expect(w, P_BLOCK, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    step = run_step(w, plan_ids[P_BLOCK], 0);
    ck_assert_str_eq(json_string_value(json_object_get(step, "state")), "error");
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(step, "error"), "message")),
                     "Abnormal termination (previous state: running)");
    json_decref(step);
    ck_assert(history_has(w, plan_ids[P_BLOCK], "terminate execution"));
    expect(w, P_FAIL, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    expect(w, P_SKIP, DF_PLAN_STOPPED, DF_RESULT_WARNING);
    step = run_step(w, plan_ids[P_SKIP], 1);
    ck_assert_str_eq(json_string_value(json_object_get(step, "state")), "success");
    json_decref(step);
    /* nothing ran twice: three starts before the kill, none after */
    ck_assert_int_eq(marker_lines(), 3);

    /* the suspended step ran again with no event and still takes events */
    ck_assert(step_reaches(w, plan_ids[P_WAIT], "suspended", 10));
    df_error err;
    ck_assert_msg(df_world_event(w, plan_ids[P_WAIT], 2, &ev, 0, &err) == 0, "event: %s", err.text);
    expect(w, P_WAIT, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    j = df_plan_json(w, plan_ids[P_WAIT], DF_JSON_ACTIONS);
    ck_assert_int_eq(
        json_integer_value(json_object_get(
            json_object_get(json_array_get(json_object_get(j, "actions"), 0), "output"), "runs")),
        2);
    json_decref(j);

    /* secrets were never written, so the action cannot go on without them */
    expect(w, P_SECRET, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    step = run_step(w, plan_ids[P_SECRET], 0);
    ck_assert_ptr_nonnull(strstr(
        json_string_value(json_object_get(json_object_get(step, "error"), "message")), "are gone"));
    json_decref(step);
    df_world_sync(w);
    db = fopen(db_path, "rb");
    ck_assert_ptr_nonnull(db);
    while ((n = fread(buf, 1, sizeof(buf), db)) > 0)
        ck_assert_ptr_null(memmem(buf, n, "s3cr3t", 6));
    fclose(db);

    /* finished plans stay finished; the delayed plan survived and runs when due */
    ck_assert_int_eq(df_plan_get_info(w, plan_ids[P_QUICK], &info), 0);
    ck_assert_int_eq(info.state, DF_PLAN_STOPPED);
    expect(w, P_DELAYED, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    expect(w, P_TIMER, DF_PLAN_STOPPED, DF_RESULT_SUCCESS); /* nobody sent it an event here */
    df_world_free(w);

    /* a clean restart keeps stopped plans queryable */
    w = start_world();
    ck_assert_int_eq(df_plan_get_info(w, plan_ids[P_WAIT], &info), 0);
    ck_assert_int_eq(info.result, DF_RESULT_SUCCESS);
    df_world_free(w);
    unlink(db_path);
    unlink(marker_path);
}
END_TEST

/* A damaged database: a plan whose rows do not fit together is refused, not loaded. */
START_TEST(damaged_rows_are_refused)
{
    const char *tmp = getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/tmp";
    df_world *w;
    sqlite3 *db;
    struct df_plan_info info;

    snprintf(db_path, sizeof(db_path), "%s/damaged-%d.db", tmp, getpid());
    unlink(db_path);
    w = start_world();
    trigger(w, P_QUICK, "Crash::Quick", json_object(), 0);
    trigger(w, P_WAIT, "Crash::Quick", json_object(), 0);
    ck_assert_int_eq(df_plan_wait(w, plan_ids[P_QUICK], 10, &info), 0);
    ck_assert_int_eq(df_plan_wait(w, plan_ids[P_WAIT], 10, &info), 0);
    df_world_free(w);

    ck_assert_int_eq(sqlite3_open(db_path, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db,
                                  "UPDATE dynflow_steps SET action_id = 99 WHERE id = 2 AND "
                                  "execution_plan_uuid = '00000000-0000-4000-8000-000000000006';"
                                  "UPDATE dynflow_execution_plans SET state = 'running';",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);

    w = start_world(); /* recovery meets the damaged plan and goes on */
    ck_assert_ptr_null(df_plan_json(w, plan_ids[P_QUICK], DF_JSON_ACTIONS));
    ck_assert_int_eq(df_plan_get_info(w, plan_ids[P_QUICK], &info), -ENOENT);
    expect(w, P_WAIT, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    df_world_free(w);
    unlink(db_path);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("crash");
    TCase *tc = tcase_create("recovery");
    int failed;

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, kill_and_recover);
    tcase_add_test(tc, damaged_rows_are_refused);
    suite_add_tcase(s, tc);
    failed = run_suite(s);
    return failed;
}
