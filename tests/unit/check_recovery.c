/*
 * Recovery with a file database (reference/engine.md §3.11 with §8 #7, #8):
 * a forked child runs plans and is killed with SIGKILL while one action is
 * inside run; a new world on the same file must find every plan where the
 * rules put it.  Also a clean shutdown and reopen.
 */
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>

#include "testutil.h"

static bool in_child;
static int ready_fd = -1;
static char marker[1100];

static double wall_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Appends "<class> <pid>" to the marker file: one line per start of a run. */
static void mark(df_action *a)
{
    int fd = open(marker, O_WRONLY | O_APPEND | O_CREAT, 0600);

    if (fd >= 0) {
        dprintf(fd, "%s %d\n", df_action_class_name(a), (int)getpid());
        close(fd);
    }
}

/* Lines of the marker file for a class, all from pid (0: any). */
static int marks(const char *cls, int pid)
{
    FILE *f = fopen(marker, "r");
    char name[64];
    int p, n = 0;

    if (f == NULL)
        return 0;
    while (fscanf(f, "%63s %d", name, &p) == 2)
        n += strcmp(name, cls) == 0 && (pid == 0 || p == pid);
    fclose(f);
    return n;
}

/* ---- actions ------------------------------------------------------------------------- */

/* In the child: tells the parent it started, then never returns. */
static int block_run(df_action *a, const df_event *ev)
{
    (void)ev;
    mark(a);
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
    mark(a);
    json_object_set_new(df_action_output(a), "after", json_true());
    return 0;
}

/* sequence { BlockSkip; After } */
static int skip_plan(df_action *a, json_t *args)
{
    df_sequence_begin(a);
    df_plan_action(a, "BlockSkip", args);
    df_plan_action(a, "After", args);
    df_sequence_end(a);
    return df_plan_self(a, json_object());
}

/* Counts its runs and the runs without an event; suspends until an event. */
static int wait_run(df_action *a, const df_event *ev)
{
    json_t *out = df_action_output(a);

    json_object_set_new(out, "runs",
                        json_integer(json_integer_value(json_object_get(out, "runs")) + 1));
    if (ev != NULL)
        return 0;
    json_object_set_new(out, "null_runs",
                        json_integer(json_integer_value(json_object_get(out, "null_runs")) + 1));
    df_action_suspend(a);
    return 0;
}

static int quick_run(df_action *a, const df_event *ev)
{
    (void)ev;
    mark(a);
    json_object_set_new(df_action_output(a), "done", json_true());
    return 0;
}

static int secret_run(df_action *a, const df_event *ev)
{
    json_t *secrets = df_action_secrets(a);

    if (secrets == NULL)
        return -1;
    json_object_set_new(df_action_output(a), "had_secret", json_true());
    if (ev == NULL)
        df_action_suspend(a);
    return 0;
}

static int stamp_run(df_action *a, const df_event *ev)
{
    (void)ev;
    mark(a);
    json_object_set_new(df_action_output(a), "ran_at", json_real(wall_now()));
    return 0;
}

/* Sub-plans: two Wait children with the ids in input "ids". */
static int create_children(df_action *a)
{
    json_t *v;
    size_t i;

    json_array_foreach(json_object_get(df_action_input(a), "ids"), i, v)
    {
        char child[DF_UUID_BUF];
        bool planned;
        if (df_action_trigger_child(a, "Wait", json_object(), json_string_value(v), child,
                                    &planned) < 0)
            return -1;
    }
    return 0;
}

static int parent_run(df_action *a, const df_event *ev)
{
    return df_sub_plans_run(a, ev, create_children);
}

/* Polling: invoked once (in the child); done once polled in the parent process. */
static int poll_invoke(df_action *a)
{
    mark(a);
    json_object_set_new(df_action_output(a), "task", json_string("t-1"));
    return 0;
}

static int poll_poll(df_action *a)
{
    json_t *out = df_action_output(a);

    json_object_set_new(out, "polled_here", json_boolean(!in_child));
    return 0;
}

static bool poll_done(df_action *a)
{
    return json_is_true(json_object_get(df_action_output(a), "polled_here"));
}

static const struct df_polling_ops poll_ops = {poll_invoke, poll_poll, poll_done, NULL};

static int poller_run(df_action *a, const df_event *ev)
{
    return df_polling_run(a, ev, &poll_ops);
}

static atomic_bool flaky_fail;

static int flaky_run(df_action *a, const df_event *ev)
{
    (void)ev;
    if (atomic_load(&flaky_fail))
        return df_action_error(a, "flaky failure");
    return 0;
}

static const struct df_action_class classes[] = {
    {.name = "BlockPause", .run = block_run},
    {.name = "BlockFail", .run = block_run, .rescue = DF_RESCUE_FAIL},
    {.name = "BlockSkip", .run = block_run, .rescue = DF_RESCUE_SKIP},
    {.name = "BlockRerun", .run = block_run, .flags = DF_ACTION_RERUNNABLE},
    {.name = "After", .run = after_run},
    {.name = "SkipPlan", .plan = skip_plan},
    {.name = "Wait", .run = wait_run},
    {.name = "Quick", .run = quick_run},
    {.name = "Secret", .run = secret_run},
    {.name = "Stamp", .run = stamp_run},
    {.name = "Flaky", .run = flaky_run},
    {.name = "Parent", .run = parent_run},
    {.name = "Poller", .run = poller_run},
};
#define N_CLASSES (sizeof(classes) / sizeof(classes[0]))

/* ---- the child ----------------------------------------------------------------------- */

enum {
    P_PAUSE,
    P_FAIL,
    P_SKIP,
    P_WAIT,
    P_DONE,
    P_SECRET,
    P_DELAYED,
    P_PARENT,
    P_POLL,
    P_TIMED,
    P_RERUN,
    N_PLANS
};
static char ids[N_PLANS][DF_UUID_BUF], children[2][DF_UUID_BUF];
static const char *const plan_class[N_PLANS] = {"BlockPause", "BlockFail", "SkipPlan",  "Wait",
                                                "Quick",      "Secret",    "Stamp",     "Parent",
                                                "Poller",     "Wait",      "BlockRerun"};
static double delayed_at;

static bool child_step_is(df_world *w, const char *id, int step_id, const char *state)
{
    json_t *j = df_plan_json(w, id, DF_JSON_STEPS);
    json_t *s = json_array_get(json_object_get(j, "steps"), (size_t)step_id - 1);
    bool is = strcmp(tu_str(s, "state"), state) == 0;

    json_decref(j);
    return is;
}

static bool child_stopped(df_world *w, const char *id)
{
    struct df_plan_info info;

    return df_plan_get_info(w, id, &info) == 0 && info.state == DF_PLAN_STOPPED;
}

/* Starts the plans, tells the parent once they are where they should be, waits to be killed. */
static void child_main(const char *db, int fd)
{
    struct df_world_config cfg = {.database = db, .pool_size = 8};
    struct df_trigger_opts later;
    struct df_plan_info info;
    char msg[1 + sizeof(double)];
    df_world *w;
    df_error err;
    bool planned;

    in_child = true;
    ready_fd = fd;
    w = df_world_new(&cfg, &err);
    for (size_t i = 0; w != NULL && i < N_CLASSES; i++)
        if (df_world_register(w, &classes[i], &err) < 0)
            _exit(2);
    if (w == NULL || df_world_start(w, &err) < 0)
        _exit(2);
    for (int i = 0; i < N_PLANS; i++) {
        struct df_trigger_opts o = {.plan_id = ids[i]};
        json_t *args;
        if (i == P_DELAYED)
            continue;
        args = json_object();
        if (i == P_PARENT)
            json_object_set_new(args, "ids", json_pack("[s, s]", children[0], children[1]));
        if (i == P_SECRET)
            json_object_set_new(args, "secrets", json_pack("{s:s}", "password", "hunter2"));
        if (df_trigger(w, plan_class[i], args, &o, NULL, &planned, &err) < 0 || !planned)
            _exit(2);
    }
    if (!wait_until(child_step_is(w, ids[P_WAIT], 2, "suspended") &&
                        child_step_is(w, ids[P_SECRET], 2, "suspended") &&
                        child_stopped(w, ids[P_DONE]) &&
                        child_step_is(w, ids[P_PARENT], 2, "suspended") &&
                        child_step_is(w, ids[P_POLL], 2, "suspended") &&
                        child_step_is(w, ids[P_TIMED], 2, "suspended") &&
                        df_plan_get_info(w, children[1], &info) == 0 &&
                        child_step_is(w, children[0], 2, "suspended") &&
                        child_step_is(w, children[1], 2, "suspended"),
                    10))
        _exit(4);
    /* a plan and an event for later: they must survive the crash */
    delayed_at = wall_now() + 2;
    later = (struct df_trigger_opts){
        .plan_id = ids[P_DELAYED], .delayed = true, .start_at = delayed_at};
    if (df_trigger(w, "Stamp", json_object(), &later, NULL, &planned, &err) < 0 ||
        df_world_event(w, ids[P_TIMED], 2, &(df_event){DF_EVENT_USER, NULL}, 2, &err) < 0)
        _exit(5);
    df_world_sync(w);
    msg[0] = 'R';
    memcpy(msg + 1, &delayed_at, sizeof(delayed_at));
    if (write(fd, msg, sizeof(msg)) != (ssize_t)sizeof(msg))
        _exit(3);
    for (;;)
        pause();
}

/* Forks the child, waits until four actions block inside run and the rest
 * is settled, then kills it.  Returns the child's pid. */
static pid_t run_and_kill(const char *db)
{
    int fds[2], blocks = 0, status;
    bool ready = false;
    pid_t pid;
    char c;

    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        child_main(db, fds[1]);
    }
    close(fds[1]);
    while ((blocks < 4 || !ready) && read(fds[0], &c, 1) == 1) {
        blocks += c == 'B';
        /* 'R' comes with the time the delayed plan is due, in one write */
        if (c == 'R')
            ready = read(fds[0], &delayed_at, sizeof(delayed_at)) == sizeof(delayed_at);
    }
    close(fds[0]);
    ck_assert_msg(blocks == 4 && ready, "the child did not get ready (%d blocks, ready %d)", blocks,
                  ready);
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    return pid;
}

static bool history_has(df_world *w, const char *id, const char *name)
{
    return strstr(tu_history(w, id), name) != NULL;
}

START_TEST(kill_and_recover)
{
    char db[1024];
    enum df_plan_state state;
    df_world *w;
    pid_t pid;
    json_t *out;

    tu_db_path(db, sizeof(db), "recovery");
    snprintf(marker, sizeof(marker), "%s.marker", db);
    unlink(marker);
    for (int i = 0; i < N_PLANS; i++)
        tu_uuid(ids[i]);
    tu_uuid(children[0]);
    tu_uuid(children[1]);
    pid = run_and_kill(db);

    w = tu_world(&(struct df_world_config){.database = db}, classes, N_CLASSES);

    /* the delayed plan is still there, waiting */
    state = tu_state(w, ids[P_DELAYED]);
    if (wall_now() < delayed_at) /* read before it was due */
        ck_assert_int_eq(state, DF_PLAN_SCHEDULED);

    /* Pause: the running step failed, the plan paused */
    tu_expect(w, ids[P_PAUSE], DF_PLAN_PAUSED, DF_RESULT_ERROR);
    ck_assert_str_eq(tu_step_state(w, ids[P_PAUSE], 2), "error");
    ck_assert_str_eq(tu_step_error(w, ids[P_PAUSE], 2),
                     "Abnormal termination (previous state: running)");
    ck_assert(history_has(w, ids[P_PAUSE], "terminate execution"));

    /* Fail: stopped (Dynflow leaves it paused, §8 #8) */
    tu_expect(w, ids[P_FAIL], DF_PLAN_STOPPED, DF_RESULT_ERROR);
    ck_assert_str_eq(tu_step_error(w, ids[P_FAIL], 2),
                     "Abnormal termination (previous state: running)");
    ck_assert(history_has(w, ids[P_FAIL], "terminate execution"));

    /* Skip: the step is skipped and its sequence follower runs */
    tu_expect(w, ids[P_SKIP], DF_PLAN_STOPPED, DF_RESULT_WARNING);
    ck_assert_str_eq(tu_step_state(w, ids[P_SKIP], 3), "skipped");
    ck_assert_str_eq(tu_step_state(w, ids[P_SKIP], 5), "success");
    ck_assert(history_has(w, ids[P_SKIP], "terminate execution"));
    ck_assert_int_eq(marks("After", 0), 1);

    /* the suspended step runs again without an event, then ends on one */
    ck_assert(wait_until(tu_output_int(w, ids[P_WAIT], 1, "null_runs") == 2 &&
                             tu_step_is(w, ids[P_WAIT], 2, "suspended"),
                         10));
    ck_assert(!history_has(w, ids[P_WAIT], "terminate execution"));
    tu_event(w, ids[P_WAIT], 2, DF_EVENT_USER, NULL, 0);
    tu_expect(w, ids[P_WAIT], DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_int_eq(tu_output_int(w, ids[P_WAIT], 1, "runs"), 3);

    /* a finished plan stays as it was */
    tu_expect(w, ids[P_DONE], DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    out = tu_output(w, ids[P_DONE], 1);
    ck_assert(json_is_true(json_object_get(out, "done")));
    json_decref(out);

    /* the secrets did not survive: the action says so when it asks for them */
    tu_expect(w, ids[P_SECRET], DF_PLAN_PAUSED, DF_RESULT_ERROR);
    ck_assert_msg(strstr(tu_step_error(w, ids[P_SECRET], 2), "secrets") != NULL &&
                      strstr(tu_step_error(w, ids[P_SECRET], 2), "are gone") != NULL,
                  "%s", tu_step_error(w, ids[P_SECRET], 2));

    /* the delayed plan runs when due */
    tu_expect(w, ids[P_DELAYED], DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    out = tu_output(w, ids[P_DELAYED], 1);
    ck_assert_double_ge(json_number_value(json_object_get(out, "ran_at")), delayed_at - 0.01);
    json_decref(out);

    /* the timed event sent before the crash arrives */
    tu_expect(w, ids[P_TIMED], DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_int_eq(tu_output_int(w, ids[P_TIMED], 1, "runs"), 3);

    /* the sub-plans parent counts again and finishes with its children */
    ck_assert(wait_until(tu_output_int(w, children[0], 1, "null_runs") == 2 &&
                             tu_output_int(w, children[1], 1, "null_runs") == 2 &&
                             tu_step_is(w, children[1], 2, "suspended"),
                         10));
    ck_assert_int_eq(tu_state(w, ids[P_PARENT]), DF_PLAN_RUNNING);
    tu_event(w, children[0], 2, DF_EVENT_USER, NULL, 0);
    tu_event(w, children[1], 2, DF_EVENT_USER, NULL, 0);
    tu_expect(w, ids[P_PARENT], DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_int_eq(tu_output_int(w, ids[P_PARENT], 1, "success_count"), 2);
    ck_assert_int_eq(tu_output_int(w, ids[P_PARENT], 1, "total_count"), 2);
    ck_assert_int_eq(tu_output_int(w, ids[P_PARENT], 1, "failed_count"), 0);

    /* a rerunnable step a crash interrupted runs again, here, and the plan ends */
    tu_expect(w, ids[P_RERUN], DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert(!history_has(w, ids[P_RERUN], "terminate execution"));
    ck_assert_int_eq(marks("BlockRerun", pid), 1);
    ck_assert_int_eq(marks("BlockRerun", getpid()), 1);

    /* polling resumes by polling the task it started, not by starting another */
    tu_expect(w, ids[P_POLL], DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_int_eq(marks("Poller", 0), 1);

    /* no run started twice: each killed run once (in the child), nothing else again */
    ck_assert_int_eq(marks("BlockPause", pid), 1);
    ck_assert_int_eq(marks("BlockFail", pid), 1);
    ck_assert_int_eq(marks("BlockSkip", pid), 1);
    ck_assert_int_eq(marks("BlockPause", 0), 1);
    ck_assert_int_eq(marks("BlockFail", 0), 1);
    ck_assert_int_eq(marks("BlockSkip", 0), 1);
    ck_assert_int_eq(marks("Quick", 0), 1);
    ck_assert_int_eq(marks("Stamp", 0), 1);

    /* resuming the paused plan runs its step again, now in this process */
    ck_assert_int_eq(df_plan_resume(w, ids[P_PAUSE], NULL), 0);
    tu_expect(w, ids[P_PAUSE], DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_int_eq(marks("BlockPause", getpid()), 1);
    df_world_free(w);
    tu_db_remove(db);
    unlink(marker);
}
END_TEST

START_TEST(clean_restart_keeps_plans)
{
    char db[1024], done[DF_UUID_BUF], paused[DF_UUID_BUF], waiting[DF_UUID_BUF];
    struct df_world_config cfg;
    df_world *w;
    struct df_plan_info info;
    json_t *out;
    uint64_t n;

    tu_db_path(db, sizeof(db), "restart");
    snprintf(marker, sizeof(marker), "%s.marker", db);
    unlink(marker);
    cfg = (struct df_world_config){.database = db};
    w = tu_world(&cfg, classes, N_CLASSES);
    atomic_store(&flaky_fail, true);
    tu_run(w, "Quick", json_object(), done);
    tu_run(w, "Flaky", json_object(), paused);
    ck_assert(tu_trigger_opts(w, "Wait", json_object(), NULL, waiting, NULL));
    ck_assert(wait_until(tu_step_is(w, waiting, 2, "suspended"), 10));
    df_world_free(w);

    atomic_store(&flaky_fail, false);
    w = tu_world(&cfg, classes, N_CLASSES);
    ck_assert_int_eq(df_plan_get_info(w, done, &info), 0);
    ck_assert_int_eq(info.state, DF_PLAN_STOPPED);
    ck_assert_int_eq(info.result, DF_RESULT_SUCCESS);
    ck_assert_str_eq(info.label, "Quick");
    out = tu_output(w, done, 1);
    ck_assert(json_is_true(json_object_get(out, "done")));
    json_decref(out);
    ck_assert_str_eq(tu_history(w, done), "start execution,finish execution");
    ck_assert_int_eq(df_plan_count(w, DF_PLAN_STOPPED, &n, NULL), 0);
    ck_assert_uint_eq(n, 1);

    /* the paused plan stays paused and resumes */
    tu_expect(w, paused, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    ck_assert_int_eq(df_plan_resume(w, paused, NULL), 0);
    tu_expect(w, paused, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);

    /* the suspended step runs again without an event and ends on one */
    ck_assert(wait_until(tu_output_int(w, waiting, 1, "null_runs") == 2 &&
                             tu_step_is(w, waiting, 2, "suspended"),
                         10));
    ck_assert(!history_has(w, waiting, "terminate execution"));
    tu_event(w, waiting, 2, DF_EVENT_USER, NULL, 0);
    tu_expect(w, waiting, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_int_eq(marks("Quick", 0), 1);
    df_world_free(w);
    tu_db_remove(db);
    unlink(marker);
}
END_TEST

/* A damaged database: a plan whose rows do not fit together is refused, not loaded, and
 * recovery goes on with the others. */
START_TEST(damaged_rows_are_refused)
{
    char db[1024], quick[DF_UUID_BUF], waiting[DF_UUID_BUF];
    struct df_world_config cfg;
    struct df_plan_info info;
    char sql[512];
    sqlite3 *conn;
    df_world *w;

    tu_db_path(db, sizeof(db), "damaged");
    snprintf(marker, sizeof(marker), "%s.marker", db);
    cfg = (struct df_world_config){.database = db};
    w = tu_world(&cfg, classes, N_CLASSES);
    tu_run(w, "Quick", json_object(), quick);
    ck_assert(tu_trigger_opts(w, "Wait", json_object(), NULL, waiting, NULL));
    ck_assert(wait_until(tu_step_is(w, waiting, 2, "suspended"), 10));
    df_world_free(w);

    ck_assert_int_eq(sqlite3_open(db, &conn), SQLITE_OK);
    snprintf(sql, sizeof(sql),
             "UPDATE dynflow_steps SET action_id = 99 WHERE id = 2 AND "
             "execution_plan_uuid = '%s';"
             "UPDATE dynflow_execution_plans SET state = 'running' WHERE uuid = '%s';",
             quick, quick);
    ck_assert_int_eq(sqlite3_exec(conn, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(conn);

    w = tu_world(&cfg, classes, N_CLASSES);
    ck_assert_ptr_null(df_plan_json(w, quick, DF_JSON_ACTIONS));
    ck_assert_int_eq(df_plan_get_info(w, quick, &info), -ENOENT);
    ck_assert(wait_until(tu_step_is(w, waiting, 2, "suspended"), 10));
    tu_event(w, waiting, 2, DF_EVENT_USER, NULL, 0);
    tu_expect(w, waiting, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    df_world_free(w);
    tu_db_remove(db);
    unlink(marker);
}
END_TEST

static Suite *recovery_suite(void)
{
    Suite *s = suite_create("recovery");
    TCase *tc = tcase_create("recovery");

    tcase_set_timeout(tc, 40);
    tcase_add_test(tc, kill_and_recover);
    tcase_add_test(tc, clean_restart_keeps_plans);
    tcase_add_test(tc, damaged_rows_are_refused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(recovery_suite());
}
