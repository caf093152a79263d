/*
 * The runner framework (reference/protocol.md §8): the runner action, the
 * dispatcher's refresh batching, on-demand refresh, kill, timeouts, the
 * concurrency queue, the child-process helper (pipes, pty, stdin, ENOENT,
 * process trees), UTF-8 output, the output cap and restarts.
 */
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "dynflow/runner.h"
#include "runner/dispatcher.h"
#include "runner/internal.h"
#include "testutil.h"

/* ---- test runners ------------------------------------------------------------------------ */

/* Test::Command: input {"argv": [...], "pty": bool, "stdin": "text", "timeout": s, "grace": s}. */
static int command_start(df_runner *r)
{
    const json_t *in = df_runner_input(r), *v;
    const char *argv[16] = {0};
    const char *stdin_text = json_string_value(json_object_get(in, "stdin"));
    struct df_proc_spec spec = {
        .argv = argv,
        .pty = json_is_true(json_object_get(in, "pty")),
        .stdin_pipe = stdin_text != NULL,
        .grace_s = json_number_value(json_object_get(in, "grace")),
    };
    df_proc *p;
    size_t i;

    json_array_foreach(json_object_get(in, "argv"), i, v) if (i < 15) argv[i] =
        json_string_value(v);
    if (df_proc_spawn(r, &spec, &p) < 0)
        return -1;
    df_runner_set_data(r, p);
    if (stdin_text != NULL && *stdin_text != '\0')
        df_proc_write(p, stdin_text, strlen(stdin_text));
    df_runner_set_timeout(r, json_number_value(json_object_get(in, "timeout")));
    return 0;
}

/* An update/done body {"stdin": "…"} goes to the process; {"close": true} closes its stdin. */
static void command_event(df_runner *r, const json_t *data)
{
    df_proc *p = df_runner_data(r);
    const char *text = json_string_value(json_object_get(data, "stdin"));

    if (text != NULL)
        df_proc_write(p, text, strlen(text));
    if (json_is_true(json_object_get(data, "close")))
        df_proc_close_stdin(p);
}

static const struct df_runner_ops command_ops = {.start = command_start,
                                                 .external_event = command_event};
static const struct df_runner_class command_class = {.name = "Test::Command", .ops = &command_ops};

/* Test::Publisher: input {"chunks": [[type, text], …], "every": s, "exit": n, "hex": bool};
 * publishes one chunk per timer tick ("every" 0: all at start), then exits unless "exit" is
 * null.  With "hex", texts are hexadecimal bytes (JSON strings cannot carry broken UTF-8). */
struct publisher {
    size_t next;
};

static void publish_next(df_runner *r, void *arg)
{
    struct publisher *pb = df_runner_data(r);
    const json_t *in = df_runner_input(r), *chunks = json_object_get(in, "chunks");
    double every = json_number_value(json_object_get(in, "every"));

    (void)arg;
    while (pb->next < json_array_size(chunks)) {
        const json_t *c = json_array_get(chunks, pb->next++);
        const char *text = json_string_value(json_array_get(c, 1));
        size_t len = json_string_length(json_array_get(c, 1));
        char bytes[256];
        if (json_is_true(json_object_get(in, "hex"))) {
            for (len = 0; text[2 * len] != '\0' && len < sizeof(bytes); len++)
                sscanf(text + 2 * len, "%2hhx", (unsigned char *)&bytes[len]);
            text = bytes;
        }
        df_runner_publish(r, json_string_value(json_array_get(c, 0)), text, len);
        if (every > 0) {
            df_runner_after(r, every, publish_next, NULL);
            return;
        }
    }
    if (json_is_integer(json_object_get(in, "exit")))
        df_runner_exit(r, (int)json_integer_value(json_object_get(in, "exit")));
}

static int publisher_start(df_runner *r)
{
    df_runner_set_data(r, calloc(1, sizeof(struct publisher)));
    publish_next(r, NULL);
    return 0;
}

static void publisher_kill(df_runner *r)
{
    df_runner_publish_text(r, "debug", "killed");
    df_runner_exit(r, 143);
}

static void publisher_close(df_runner *r)
{
    free(df_runner_data(r));
}

static const struct df_runner_ops publisher_ops = {
    .start = publisher_start, .kill = publisher_kill, .close = publisher_close};
static const struct df_runner_class publisher_class = {.name = "Test::Publisher",
                                                       .ops = &publisher_ops};

/* Test::GroupR (a group runner, §8.3 Parent): output for the first target only, a non-fatal
 * exception for everyone, then an exit status of 7 for the second target and 0 for the rest. */
static void group_exit(df_runner *r, void *arg)
{
    (void)arg;
    df_runner_exit_for(r, df_runner_target(r, 1), 7);
    df_runner_exit(r, 0);
}

static int group_start(df_runner *r)
{
    ck_assert_uint_eq(df_runner_target_count(r), 2);
    df_runner_publish_for(r, df_runner_target(r, 0), "stdout", "a1", 2);
    df_runner_exception(r, "Runner error", NULL, "boom", false);
    df_runner_after(r, 0.05, group_exit, NULL);
    return 0;
}

static const struct df_runner_ops group_ops = {.start = group_start};
static const struct df_runner_class group_class = {.name = "Test::GroupR", .ops = &group_ops};

/* Test::Ticker: publishes a line per refresh and ends in its third (as a polling plugin does). */
static int ticker_start(df_runner *r)
{
    df_runner_set_data(r, calloc(1, sizeof(int)));
    return 0;
}

static void ticker_refresh(df_runner *r)
{
    int *n = df_runner_data(r);

    df_runner_publish_text(r, "stdout", "tick %d\n", ++*n);
    if (*n == 3)
        df_runner_exit(r, 0);
}

static void ticker_close(df_runner *r)
{
    free(df_runner_data(r));
}

static const struct df_runner_ops ticker_ops = {
    .start = ticker_start, .refresh = ticker_refresh, .close = ticker_close};
static const struct df_runner_class ticker_class = {.name = "Test::Ticker", .ops = &ticker_ops};

/* Counts the Runner::Update events the runner actions receive. */
static atomic_int updates;

static int count_updates(df_mw_call *call)
{
    const df_event *ev = df_mw_event(call);

    if (ev != NULL && ev->kind == DF_EVENT_RUNNER_UPDATE)
        atomic_fetch_add(&updates, 1);
    return df_mw_pass(call);
}

static const struct df_middleware counter = {.name = "count updates", .run = count_updates};

static df_world *world(const char *db, double refresh, unsigned max_concurrent, uint64_t cap)
{
    struct df_world_config cfg = {.database = db};
    struct df_runner_config rc = {
        .refresh_interval = refresh, .max_concurrent = max_concurrent, .output_cap = cap};
    df_error err;
    df_world *w = df_world_new(&cfg, &err);

    ck_assert_ptr_nonnull(w);
    ck_assert_msg(df_runner_configure(w, &rc, &err) == 0, "%s", err.text);
    ck_assert_msg(df_runner_register(w, &command_class, &err) == 0, "%s", err.text);
    ck_assert_msg(df_runner_register(w, &publisher_class, &err) == 0, "%s", err.text);
    ck_assert_msg(df_runner_register(w, &group_class, &err) == 0, "%s", err.text);
    ck_assert_msg(df_runner_register(w, &ticker_class, &err) == 0, "%s", err.text);
    ck_assert_msg(df_world_use(w, &counter, &err) == 0, "%s", err.text);
    ck_assert_msg(df_world_start(w, &err) == 0, "%s", err.text);
    return w;
}

/* New reference: the runner action's output (action 1). */
static json_t *output(df_world *w, const char *id)
{
    return tu_output(w, id, 1);
}

static const char *run_command(df_world *w, char *id, json_t *input)
{
    tu_run(w, "Test::Command", input, id);
    return id;
}

/* ---- the process helper ------------------------------------------------------------------ */

START_TEST(stdout_stderr_and_exit_code)
{
    df_world *w = world(NULL, 0.05, 0, 0);
    char id[DF_UUID_BUF];
    json_t *out;

    run_command(w, id,
                json_pack("{s:[s,s,s]}", "argv", "sh", "-c", "echo out; echo err >&2; exit 5"));
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    out = output(w, id);
    ck_assert_int_eq(json_integer_value(json_object_get(out, "exit_status")), 5);
    ck_assert_str_eq(tu_records_text(out, "stdout"), "out\n");
    ck_assert_str_eq(tu_records_text(out, "stderr"), "err\n");
    ck_assert(json_is_real(json_object_get(out, "exit_status_timestamp")));
    ck_assert(json_is_string(json_object_get(out, "runner_id")));
    ck_assert(json_is_real(
        json_object_get(json_array_get(json_object_get(out, "result"), 0), "timestamp")));
    json_decref(out);
    ck_assert_str_eq(tu_step_error(w, id, 3), "Script execution failed");

    run_command(w, id, json_pack("{s:[s,s,s]}", "argv", "sh", "-c", "echo fine"));
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_int_eq(tu_output_int(w, id, 1, "exit_status"), 0);
    df_world_free(w);
}
END_TEST

/* NUL bytes in output are output too: stored as \u0000 and read back from the database. */
START_TEST(nul_bytes_survive_storage)
{
    df_world *w = world(NULL, 0.05, 0, 0);
    char id[DF_UUID_BUF];
    json_t *out, *rec;

    run_command(w, id, json_pack("{s:[s,s,s]}", "argv", "sh", "-c", "printf 'a\\000b'"));
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    df_world_sync(w); /* stopped plans now come back from the database */
    out = output(w, id);
    rec = json_object_get(json_array_get(json_object_get(out, "result"), 0), "output");
    ck_assert_uint_eq(json_string_length(rec), 3);
    ck_assert_int_eq(memcmp(json_string_value(rec), "a\0b", 3), 0);
    json_decref(out);
    df_world_free(w);
}
END_TEST

START_TEST(missing_command_is_an_exception)
{
    df_world *w = world(NULL, 0.05, 0, 0);
    char id[DF_UUID_BUF];
    json_t *out;

    run_command(w, id, json_pack("{s:[s]}", "argv", "/nonexistent/command"));
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    out = output(w, id);
    ck_assert_str_eq(tu_str(out, "exit_status"), "EXCEPTION");
    ck_assert_str_eq(tu_records_text(out, "debug"),
                     "Error running command '/nonexistent/command': RuntimeError - No such file or "
                     "directory - /nonexistent/command");
    json_decref(out);
    df_world_free(w);
}
END_TEST

START_TEST(stdin_interaction)
{
    df_world *w = world(NULL, 0.05, 0, 0);
    const char *id =
        tu_trigger(w, "Test::Command",
                   json_pack("{s:[s,s,s], s:s}", "argv", "sh", "-c",
                             "read a; echo got $a; read b; echo got $b; cat", "stdin", "1\n"));
    json_t *out, *more = json_pack("{s:s}", "stdin", "2\n3\n"),
                 *close = json_pack("{s:b}", "close", 1);

    ck_assert(WAIT_UNTIL(tu_step_is(w, id, 2, "suspended"), 10));
    tu_event(w, id, 2, DF_EVENT_USER, more, 0);
    tu_event(w, id, 2, DF_EVENT_USER, close, 0);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    out = output(w, id);
    ck_assert_str_eq(tu_records_text(out, "stdout"), "got 1\ngot 2\n3\n");
    json_decref(out);
    json_decref(more);
    json_decref(close);
    df_world_free(w);
}
END_TEST

START_TEST(pty_merges_the_streams)
{
    df_world *w = world(NULL, 0.05, 0, 0);
    char id[DF_UUID_BUF];
    json_t *out;

    run_command(w, id,
                json_pack("{s:[s,s,s], s:b}", "argv", "sh", "-c", "tty; echo err >&2", "pty", 1));
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    out = output(w, id);
    ck_assert_msg(strstr(tu_records_text(out, "stdout"), "/dev/pts/") != NULL, "%s",
                  tu_records_text(out, NULL));
    ck_assert_msg(strstr(tu_records_text(out, "stdout"), "err") != NULL, "%s",
                  tu_records_text(out, NULL));
    ck_assert_str_eq(tu_records_text(out, "stderr"), "");
    json_decref(out);
    df_world_free(w);
}
END_TEST

static pid_t read_pid(const char *path)
{
    FILE *f = fopen(path, "r");
    int pid = 0;

    if (f != NULL) {
        if (fscanf(f, "%d", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    return pid;
}

START_TEST(cancel_kills_the_process_tree)
{
    df_world *w = world(NULL, 0.05, 0, 0);
    char pidfile[512], script[2048];
    const char *id;
    unsigned count;
    df_error err;
    pid_t child;
    json_t *out;

    snprintf(pidfile, sizeof(pidfile), "%s/child-%d.pid", tu_tmpdir(), getpid());
    unlink(pidfile);
    snprintf(script, sizeof(script), "sleep 100 & echo $! > %s.tmp; mv %s.tmp %s; wait", pidfile,
             pidfile, pidfile);
    id = tu_trigger(w, "Test::Command", json_pack("{s:[s,s,s]}", "argv", "sh", "-c", script));
    ck_assert(WAIT_UNTIL(read_pid(pidfile) > 0, 10));
    child = read_pid(pidfile);
    ck_assert_int_eq(df_plan_cancel(w, id, false, &count, &err), 0);
    ck_assert_uint_eq(count, 1);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    out = output(w, id);
    ck_assert_int_eq(json_integer_value(json_object_get(out, "exit_status")), 128 + SIGTERM);
    json_decref(out);
    ck_assert_msg(WAIT_UNTIL(tu_process_gone(child), 10), "the grandchild %d survived", (int)child);
    unlink(pidfile);
    df_world_free(w);
}
END_TEST

START_TEST(timeout_then_sigkill_after_the_grace_period)
{
    df_world *w = world(NULL, 0.05, 0, 0);
    char id[DF_UUID_BUF];
    json_t *out;
    double t0 = tu_now();

    run_command(w, id,
                json_pack("{s:[s,s,s], s:f, s:f}", "argv", "sh", "-c",
                          "trap '' TERM; echo started; sleep 30", "timeout", 0.3, "grace", 0.3));
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    ck_assert(tu_now() - t0 < 10);
    out = output(w, id);
    ck_assert_int_eq(json_integer_value(json_object_get(out, "exit_status")), 128 + SIGKILL);
    ck_assert_str_eq(tu_records_text(out, "debug"),
                     "Timeout for execution passed, trying to stop the job");
    json_decref(out);
    df_world_free(w);
}
END_TEST

/* ---- the dispatcher ---------------------------------------------------------------------- */

/* Output published 40 times within a few refresh intervals arrives in a few updates. */
START_TEST(refresh_batches_output)
{
    df_world *w = world(NULL, 0.25, 0, 0);
    json_t *chunks = json_array(), *out;
    char id[DF_UUID_BUF];

    for (int i = 0; i < 40; i++)
        json_array_append_new(chunks, json_pack("[s,s]", "stdout", "x"));
    atomic_store(&updates, 0);
    tu_run(w, "Test::Publisher",
           json_pack("{s:o, s:f, s:i}", "chunks", chunks, "every", 0.02, "exit", 0), id);
    out = output(w, id);
    ck_assert_uint_eq(json_array_size(json_object_get(out, "result")), 40);
    json_decref(out);
    ck_assert_msg(atomic_load(&updates) >= 2 && atomic_load(&updates) <= 8, "%d updates",
                  atomic_load(&updates));
    df_world_free(w);
}
END_TEST

static bool output_is(df_world *w, const char *id, const char *text)
{
    json_t *out = output(w, id);
    bool same = strcmp(tu_records_text(out, NULL), text) == 0;

    json_decref(out);
    return same;
}

/* A status request (df_plan_poll) delivers pending output now, not at the next tick. */
START_TEST(poll_refreshes_on_demand)
{
    df_world *w = world(NULL, 3600, 0, 0);
    const char *id = tu_trigger(w, "Test::Publisher",
                                json_pack("{s:[[s,s]], s:n}", "chunks", "stdout", "hello", "exit"));
    json_t *out;

    ck_assert(WAIT_UNTIL(tu_step_is(w, id, 2, "suspended"), 10));
    out = output(w, id);
    ck_assert_str_eq(tu_records_text(out, NULL),
                     ""); /* nothing delivered yet: the tick is an hour away */
    json_decref(out);
    df_plan_poll(w, id);
    ck_assert(WAIT_UNTIL(output_is(w, id, "hello"), 10));
    ck_assert_int_eq(tu_state(w, id), DF_PLAN_RUNNING);
    ck_assert_int_eq(df_plan_cancel(w, id, false, NULL, NULL), 0); /* the runner's own kill */
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    out = output(w, id);
    ck_assert_str_eq(tu_records_text(out, NULL), "hellokilled");
    json_decref(out);
    df_world_free(w);
}
END_TEST

/* Runners that end inside their refresh get one final update each (and are not used after they
 * are freed: the ASan run checks). */
START_TEST(runners_ending_in_refresh)
{
    df_world *w = world(NULL, 0.02, 0, 0);
    char ids[20][DF_UUID_BUF];
    json_t *out;

    for (int i = 0; i < 20; i++)
        snprintf(ids[i], sizeof(ids[i]), "%s", tu_trigger(w, "Test::Ticker", json_object()));
    for (int i = 0; i < 20; i++) {
        tu_expect(w, ids[i], DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
        out = output(w, ids[i]);
        ck_assert_str_eq(tu_records_text(out, "stdout"), "tick 1\ntick 2\ntick 3\n");
        json_decref(out);
    }
    df_world_free(w);
}
END_TEST

/* Above max_concurrent, runners wait and start in launch order. */
START_TEST(concurrency_limit_queues_in_order)
{
    df_world *w = world(NULL, 0.05, 1, 0);
    char order[512], script[2048], ids[4][DF_UUID_BUF];
    struct df_runner_stats st;
    unsigned max_active = 0, max_waiting = 0;
    FILE *f;
    char line[64], got[64] = "";

    snprintf(order, sizeof(order), "%s/order-%d", tu_tmpdir(), getpid());
    unlink(order);
    for (int i = 0; i < 4; i++) {
        snprintf(script, sizeof(script), "echo %d >> %s; sleep 0.2", i, order);
        snprintf(
            ids[i], sizeof(ids[i]), "%s",
            tu_trigger(w, "Test::Command", json_pack("{s:[s,s,s]}", "argv", "sh", "-c", script)));
        /* launched: the next one comes after it (parallel workers would race otherwise) */
        ck_assert(WAIT_UNTIL(
            tu_step_is(w, ids[i], 2, "suspended") || tu_step_is(w, ids[i], 2, "success"), 10));
    }
    for (int i = 0; i < 4; i++) {
        while (df_plan_wait(w, ids[i], 0.01, NULL) == -ETIMEDOUT) {
            ck_assert_int_eq(df_runner_stats(w, &st), 0);
            max_active = st.active > max_active ? st.active : max_active;
            max_waiting = st.waiting > max_waiting ? st.waiting : max_waiting;
        }
        tu_expect(w, ids[i], DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    }
    ck_assert_uint_eq(max_active, 1);
    ck_assert_uint_ge(max_waiting, 2);
    f = fopen(order, "r");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof(line), f) != NULL)
        strncat(got, line, sizeof(got) - strlen(got) - 1);
    fclose(f);
    ck_assert_str_eq(got, "0\n1\n2\n3\n");
    unlink(order);
    df_world_free(w);
}
END_TEST

/* One runner, two collectors: output goes to its target, broadcasts to everyone; at the exit
 * every target and the runner's own action get an update with the same timestamp. */
START_TEST(group_runner_routes_per_target)
{
    df_world *w = world(NULL, 3600, 0, 0);
    char a[DF_UUID_BUF], b[DF_UUID_BUF], runner[DF_UUID_BUF], rid[DF_UUID_BUF];
    json_t *oa, *ob, *orun;

    tu_uuid(a);
    tu_uuid(b);
    tu_uuid(rid);
    ck_assert(tu_trigger_opts(w, DF_OUTPUT_COLLECTOR_CLASS, json_pack("{s:s}", "runner_id", rid),
                              &(struct df_trigger_opts){.plan_id = a}, a, NULL));
    ck_assert(tu_trigger_opts(w, DF_OUTPUT_COLLECTOR_CLASS, json_pack("{s:s}", "runner_id", rid),
                              &(struct df_trigger_opts){.plan_id = b}, b, NULL));
    ck_assert(WAIT_UNTIL(tu_step_is(w, a, 2, "suspended") && tu_step_is(w, b, 2, "suspended"), 10));
    atomic_store(&updates, 0);
    tu_run(w, DF_BATCH_RUNNER_CLASS,
           json_pack("{s:{s:{s:s, s:i}, s:{s:s, s:i}}, s:s, s:s}", "targets", a,
                     "execution_plan_id", a, "run_step_id", 2, b, "execution_plan_id", b,
                     "run_step_id", 2, "runner_id", rid, "runner_class", "Test::GroupR"),
           runner);
    tu_expect(w, runner, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    tu_expect(w, a, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    tu_expect(w, b, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    ck_assert_int_eq(atomic_load(&updates), 3);
    oa = output(w, a);
    ob = output(w, b);
    orun = output(w, runner);
    ck_assert_str_eq(tu_records_text(oa, NULL), "a1Runner error: RuntimeError - boom");
    ck_assert_str_eq(tu_records_text(ob, NULL), "Runner error: RuntimeError - boom");
    ck_assert_int_eq(json_integer_value(json_object_get(oa, "exit_status")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(ob, "exit_status")), 7);
    ck_assert_int_eq(json_integer_value(json_object_get(orun, "exit_status")), 0);
    ck_assert_uint_eq(json_array_size(json_object_get(orun, "result")), 0);
    ck_assert(json_equal(json_object_get(oa, "exit_status_timestamp"),
                         json_object_get(ob, "exit_status_timestamp")));
    ck_assert(json_equal(json_object_get(oa, "exit_status_timestamp"),
                         json_object_get(orun, "exit_status_timestamp")));
    ck_assert_str_eq(tu_str(oa, "runner_id"), rid);
    json_decref(oa);
    json_decref(ob);
    json_decref(orun);
    df_world_free(w);
}
END_TEST

/* In a child process with 64 descriptors, all of them taken: runners wait instead of failing,
 * and run once descriptors are free again.  Exit code 0 when they did. */
static int starved_child(void)
{
    struct rlimit rl = {64, 64};
    int held[64], n = 0, fd;
    char ids[3][DF_UUID_BUF];
    struct df_runner_stats st = {0};
    df_world *w;
    bool planned;

    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 10;
    w = world(NULL, 0.05, 0, 0);
    while (n < 64 && (fd = dup(0)) >= 0)
        held[n++] = fd;
    for (int i = 0; i < 3; i++)
        if (df_trigger(w, "Test::Command", json_pack("{s:[s,s,s]}", "argv", "sh", "-c", "echo ok"),
                       NULL, ids[i], &planned, NULL) < 0)
            return 11;
    if (!WAIT_UNTIL(df_runner_stats(w, &st) == 0 && st.waiting == 3 && st.active == 0, 10))
        return 12;
    for (int i = 0; i < 3; i++)
        if (tu_state(w, ids[i]) != DF_PLAN_RUNNING)
            return 13;
    while (n > 0)
        close(held[--n]);
    for (int i = 0; i < 3; i++) {
        struct df_plan_info info;
        if (df_plan_wait(w, ids[i], 20, &info) < 0 || info.result != DF_RESULT_SUCCESS)
            return 14;
    }
    df_world_free(w);
    return 0;
}

START_TEST(out_of_descriptors_delays_runners)
{
    pid_t pid = fork();
    int status;

    if (pid == 0)
        _exit(starved_child());
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: status %d", status);
}
END_TEST

/* ---- output ------------------------------------------------------------------------------ */

static const char *clean(const char *in, size_t len, bool final, struct df_utf8_carry *carry)
{
    static char out[256];

    df_utf8_sanitize(in, len, out, carry, final);
    return out;
}

START_TEST(utf8_is_sanitized)
{
    struct df_utf8_carry c = {{0}, 0};

    ck_assert_str_eq(clean("h\xc3\xa9llo", 6, false, &c), "h\xc3\xa9llo");
    ck_assert_uint_eq(c.len, 0);
    /* a two-byte character split at the end is carried */
    ck_assert_str_eq(clean("ab\xc3", 3, false, &c), "ab");
    ck_assert_uint_eq(c.len, 1);
    /* the same at the end of the stream is a replacement */
    ck_assert_str_eq(clean("ab\xc3", 3, true, &c), "ab\xef\xbf\xbd");
    ck_assert_uint_eq(c.len, 0);
    /* invalid bytes: 0xff, an overlong "/", a surrogate, a bad continuation */
    ck_assert_str_eq(clean("\xff", 1, false, &c), "\xef\xbf\xbd");
    ck_assert_str_eq(clean("\xc0\xaf", 2, false, &c), "\xef\xbf\xbd\xef\xbf\xbd");
    ck_assert_str_eq(clean("\xed\xa0\x80x", 4, false, &c), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdx");
    ck_assert_str_eq(clean("\xe2\x82x", 3, false, &c), "\xef\xbf\xbdx");
    /* a four-byte character split after each of its bytes */
    for (size_t cut = 1; cut < 4; cut++) {
        const char *smile = "\xf0\x9f\x98\x80";
        ck_assert_str_eq(clean(smile, cut, false, &c), "");
        ck_assert_uint_eq(c.len, cut);
    }
}
END_TEST

/* A character split between two reads reaches the output whole, never as U+FFFD. */
START_TEST(split_characters_stay_whole)
{
    df_world *w = world(NULL, 0.05, 0, 0);
    char id[DF_UUID_BUF];
    json_t *out, *rec;
    size_t i;

    /* "a😀bé" cut inside both multibyte characters, with stderr in between */
    tu_run(w, "Test::Publisher",
           json_pack("{s:[[s,s],[s,s],[s,s],[s,s]], s:i, s:b}", "chunks", "stdout", "61f09f",
                     "stdout", "988062c3", "stderr", "65", "stdout", "a9", "exit", 0, "hex", 1),
           id);
    out = output(w, id);
    ck_assert_str_eq(tu_records_text(out, "stdout"), "a\xf0\x9f\x98\x80"
                                                     "b\xc3\xa9");
    json_array_foreach(json_object_get(out, "result"), i, rec)
        ck_assert(strstr(tu_str(rec, "output"), "\xef\xbf\xbd") == NULL);
    json_decref(out);
    df_world_free(w);
}
END_TEST

START_TEST(output_cap_truncates_once)
{
    df_world *w = world(NULL, 0.05, 0, 1000);
    char big[601], id[DF_UUID_BUF];
    json_t *out, *result;

    memset(big, 'x', 600);
    big[600] = '\0';
    tu_run(w, "Test::Publisher",
           json_pack("{s:[[s,s],[s,s],[s,s]], s:i}", "chunks", "stdout", big, "stdout", big,
                     "stdout", big, "exit", 0),
           id);
    out = output(w, id);
    result = json_object_get(out, "result");
    ck_assert_uint_eq(json_array_size(result), 2);
    ck_assert_str_eq(tu_str(json_array_get(result, 1), "output_type"), "debug");
    ck_assert_msg(strncmp(tu_str(json_array_get(result, 1), "output"), "Output truncated", 16) == 0,
                  "%s", tu_str(json_array_get(result, 1), "output"));
    json_decref(out);
    df_world_free(w);
}
END_TEST

/* ---- restarts ---------------------------------------------------------------------------- */

/* kill -9 while a command runs; after the restart the step ends with "EXCEPTION" and the
 * command is not started again. */
START_TEST(restart_does_not_run_a_job_twice)
{
    char db[512], marks[512], pidfile[512], script[2048];
    char id[DF_UUID_BUF] = "";
    int pipefd[2], status;
    pid_t child;
    df_world *w;
    json_t *out;

    tu_db_path(db, sizeof(db), "runner-restart");
    snprintf(marks, sizeof(marks), "%s/marks-%d", tu_tmpdir(), getpid());
    snprintf(pidfile, sizeof(pidfile), "%s/sleeper-%d", tu_tmpdir(), getpid());
    unlink(marks);
    unlink(pidfile);
    snprintf(script, sizeof(script), "echo run >> %s; echo $$ > %s; exec sleep 100", marks,
             pidfile);
    ck_assert_int_eq(pipe(pipefd), 0);
    child = fork();
    if (child == 0) {
        df_world *cw = world(db, 0.05, 0, 0);
        const char *cid =
            tu_trigger(cw, "Test::Command", json_pack("{s:[s,s,s]}", "argv", "sh", "-c", script));
        if (!WAIT_UNTIL(tu_step_is(cw, cid, 2, "suspended") && read_pid(pidfile) > 0, 10))
            _exit(1);
        df_world_sync(cw);
        if (write(pipefd[1], cid, DF_UUID_BUF) != DF_UUID_BUF)
            _exit(1);
        pause();
        _exit(0);
    }
    close(pipefd[1]);
    ck_assert_int_eq(read(pipefd[0], id, DF_UUID_BUF), DF_UUID_BUF);
    close(pipefd[0]);
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    kill(read_pid(pidfile), SIGKILL); /* the orphaned job, in a session of its own */

    w = world(db, 0.05, 0, 0);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    out = output(w, id);
    ck_assert_str_eq(tu_str(out, "exit_status"), "EXCEPTION");
    ck_assert_msg(strstr(tu_records_text(out, "debug"), "restarted while the job was running") !=
                      NULL,
                  "%s", tu_records_text(out, NULL));
    json_decref(out);
    df_world_free(w);
    {
        FILE *f = fopen(marks, "r");
        char line[64];
        int runs = 0;
        ck_assert_ptr_nonnull(f);
        while (fgets(line, sizeof(line), f) != NULL)
            runs++;
        fclose(f);
        ck_assert_int_eq(runs, 1);
    }
    unlink(marks);
    unlink(pidfile);
    tu_db_remove(db);
}
END_TEST

/* Lines of a marker file equal to line. */
static int count_lines(const char *path, const char *line)
{
    FILE *f = fopen(path, "r");
    char buf[64];
    int n = 0;

    while (f != NULL && fgets(buf, sizeof(buf), f) != NULL)
        n += strcmp(buf, line) == 0;
    if (f != NULL)
        fclose(f);
    return n;
}

/* Alive and not a zombie waiting for init. */
static bool process_alive(pid_t pid)
{
    char path[64], buf[512], *p;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if ((f = fopen(path, "r")) == NULL)
        return false;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')');
    return p != NULL && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* kill -9 while one command runs and two wait for a free slot (one at a time): after the restart
 * the waiting ones run, once; the one that ran ends with "EXCEPTION", and the process it left
 * behind (in its process group) is stopped, which its output says (doc/recovery.md). */
START_TEST(restart_runs_queued_jobs_and_ends_leftovers)
{
    char db[512], marks[512], pidfile[512], first[2048], later[2][1024];
    char ids[3][DF_UUID_BUF];
    int pipefd[2], status;
    pid_t child, sleeper;
    df_world *w;
    json_t *out;

    tu_db_path(db, sizeof(db), "runner-queued");
    snprintf(marks, sizeof(marks), "%s/queued-marks-%d", tu_tmpdir(), getpid());
    snprintf(pidfile, sizeof(pidfile), "%s/queued-sleeper-%d", tu_tmpdir(), getpid());
    unlink(marks);
    unlink(pidfile);
    /* the shell dies with the daemon (PR_SET_PDEATHSIG); its background sleep does not */
    snprintf(first, sizeof(first), "echo A >> %s; sleep 100 & echo $! > %s; wait", marks, pidfile);
    for (int i = 0; i < 2; i++)
        snprintf(later[i], sizeof(later[i]), "echo %c >> %s", 'B' + i, marks);
    ck_assert_int_eq(pipe(pipefd), 0);
    child = fork();
    if (child == 0) {
        df_world *cw = world(db, 0.05, 1, 0);
        snprintf(
            ids[0], DF_UUID_BUF, "%s",
            tu_trigger(cw, "Test::Command", json_pack("{s:[s,s,s]}", "argv", "sh", "-c", first)));
        if (!WAIT_UNTIL(tu_step_is(cw, ids[0], 2, "suspended") && read_pid(pidfile) > 0, 10))
            _exit(1);
        for (int i = 0; i < 2; i++)
            snprintf(ids[1 + i], DF_UUID_BUF, "%s",
                     tu_trigger(cw, "Test::Command",
                                json_pack("{s:[s,s,s]}", "argv", "sh", "-c", later[i])));
        if (!WAIT_UNTIL(tu_step_is(cw, ids[1], 2, "suspended") &&
                            tu_step_is(cw, ids[2], 2, "suspended"),
                        10))
            _exit(1);
        df_world_sync(cw);
        if (write(pipefd[1], ids, sizeof(ids)) != sizeof(ids))
            _exit(1);
        pause();
        _exit(0);
    }
    close(pipefd[1]);
    ck_assert_int_eq(read(pipefd[0], ids, sizeof(ids)), sizeof(ids));
    close(pipefd[0]);
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    sleeper = read_pid(pidfile);
    ck_assert(process_alive(sleeper));

    w = world(db, 0.05, 1, 0);
    ck_assert_msg(!process_alive(sleeper), "the leftover process %d still runs", (int)sleeper);
    tu_expect(w, ids[0], DF_PLAN_STOPPED, DF_RESULT_ERROR);
    out = output(w, ids[0]);
    ck_assert_str_eq(tu_str(out, "exit_status"), "EXCEPTION");
    ck_assert_msg(strstr(tu_records_text(out, "debug"), "restarted while the job was running") &&
                      strstr(tu_records_text(out, "debug"), "stopped with SIGTERM"),
                  "%s", tu_records_text(out, NULL));
    json_decref(out);
    for (int i = 1; i < 3; i++) {
        tu_expect(w, ids[i], DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
        out = output(w, ids[i]);
        ck_assert_int_eq(json_integer_value(json_object_get(out, "exit_status")), 0);
        json_decref(out);
    }
    df_world_free(w);
    ck_assert_int_eq(count_lines(marks, "A\n"), 1);
    ck_assert_int_eq(count_lines(marks, "B\n"), 1);
    ck_assert_int_eq(count_lines(marks, "C\n"), 1);
    unlink(marks);
    unlink(pidfile);
    tu_db_remove(db);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("runner");
    TCase *proc = tcase_create("process"), *disp = tcase_create("dispatcher");
    TCase *out = tcase_create("output"), *restart = tcase_create("restart");

    tcase_add_test(proc, stdout_stderr_and_exit_code);
    tcase_add_test(proc, missing_command_is_an_exception);
    tcase_add_test(proc, nul_bytes_survive_storage);
    tcase_add_test(proc, stdin_interaction);
    tcase_add_test(proc, pty_merges_the_streams);
    tcase_add_test(proc, cancel_kills_the_process_tree);
    tcase_add_test(proc, timeout_then_sigkill_after_the_grace_period);
    tcase_add_test(disp, refresh_batches_output);
    tcase_add_test(disp, poll_refreshes_on_demand);
    tcase_add_test(disp, concurrency_limit_queues_in_order);
    tcase_add_test(disp, group_runner_routes_per_target);
    tcase_add_test(disp, runners_ending_in_refresh);
    tcase_add_test(disp, out_of_descriptors_delays_runners);
    tcase_add_test(out, utf8_is_sanitized);
    tcase_add_test(out, split_characters_stay_whole);
    tcase_add_test(out, output_cap_truncates_once);
    tcase_add_test(restart, restart_does_not_run_a_job_twice);
    tcase_add_test(restart, restart_runs_queued_jobs_and_ends_leftovers);
    suite_add_tcase(s, proc);
    suite_add_tcase(s, disp);
    suite_add_tcase(s, out);
    suite_add_tcase(s, restart);
    return run_suite(s);
}
