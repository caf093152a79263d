/*
 * Unit tests of the SQLite store.  Most tests run twice (tcase loop index _i): once on an
 * in-memory database and once on a file database.  Rows read back are written as text lines
 * into a log (NULL shown as "~") and compared with the expected text.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"

enum { IN_MEMORY, IN_FILE };

static char db_path[512]; /* the file database of the current test, "" if none */

static const char *tmpdir(void)
{
    const char *dir = getenv("TEST_TMPDIR");

    return dir && *dir ? dir : "/tmp";
}

static const char *new_db_path(void)
{
    static int seq;

    snprintf(db_path, sizeof(db_path), "%s/check_store-%d-%d.db", tmpdir(), (int)getpid(), ++seq);
    return db_path;
}

static void remove_db(void)
{
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    char path[600];

    if (!db_path[0])
        return;
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        snprintf(path, sizeof(path), "%s%s", db_path, suffixes[i]);
        unlink(path);
    }
    db_path[0] = '\0';
}

static store *open_ok(const char *path)
{
    df_error err = {""};
    store *st = store_open(path, &err);

    ck_assert_msg(st != NULL, "store_open: %s", err.text);
    return st;
}

static store *open_kind(int kind)
{
    return open_ok(kind == IN_MEMORY ? NULL : new_db_path());
}

static void begin(store *st)
{
    df_error err = {""};

    ck_assert_msg(store_write_begin(st, &err) == 0, "%s", err.text);
}

static void commit(store *st)
{
    df_error err = {""};

    ck_assert_msg(store_write_commit(st, &err) == 0, "%s", err.text);
}

/* ---- the log of rows read back ------------------------------------------------------------ */

struct log {
    char text[8192];
    size_t len;
};

__attribute__((format(printf, 2, 3))) static int log_add(struct log *l, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    l->len += (size_t)vsnprintf(l->text + l->len, sizeof(l->text) - l->len, fmt, ap);
    va_end(ap);
    ck_assert_uint_lt(l->len, sizeof(l->text));
    return 0;
}

static void log_reset(struct log *l)
{
    l->len = 0;
    l->text[0] = '\0';
}

static const char *n(const char *s)
{
    return s ? s : "~";
}

static int log_plan(void *ud, const struct store_plan_row *r)
{
    char exec[32] = "~";

    if (!r->execution_time_null)
        snprintf(exec, sizeof(exec), "%g", r->execution_time);
    return log_add(ud,
                   "plan %s %s/%s label=%s time=%lld-%lld real=%g exec=%s root=%d run=%s"
                   " fin=%s hist=%s caller=%s/%d data=%s\n",
                   r->uuid, n(r->state), n(r->result), n(r->label), (long long)r->started_at,
                   (long long)r->ended_at, r->real_time, exec, r->root_plan_step_id, n(r->run_flow),
                   n(r->finalize_flow), n(r->execution_history), n(r->caller_plan_uuid),
                   r->caller_action_id, n(r->data));
}

static int log_step(void *ud, const struct store_step_row *r)
{
    return log_add(ud,
                   "step %s/%d action=%d %s %s %s queue=%s time=%lld-%lld real=%g exec=%g"
                   " progress=%g/%g error=%s children=%s requires=%s\n",
                   r->plan_uuid, r->id, r->action_id, n(r->state), n(r->kind), n(r->action_class),
                   n(r->queue), (long long)r->started_at, (long long)r->ended_at, r->real_time,
                   r->execution_time, r->progress_done, r->progress_weight, n(r->error),
                   n(r->children), n(r->requires));
}

static int log_action(void *ud, const struct store_action_row *r)
{
    return log_add(ud, "action %s/%d %s steps=%d/%d/%d caller=%s/%d input=%s output=%s data=%s\n",
                   r->plan_uuid, r->id, n(r->action_class), r->plan_step_id, r->run_step_id,
                   r->finalize_step_id, n(r->caller_plan_uuid), r->caller_action_id, n(r->input),
                   n(r->output), n(r->data));
}

static int log_chunk(void *ud, const struct store_chunk_row *r)
{
    return log_add(ud, "chunk %s/%d %s at=%lld %s\n", r->plan_uuid, r->action_id, n(r->kind),
                   (long long)r->timestamp, n(r->chunk));
}

static int log_uuid(void *ud, const char *uuid)
{
    return log_add(ud, "%s ", uuid);
}

static int log_child(void *ud, const char *uuid, const char *state, const char *result)
{
    return log_add(ud, "%s:%s/%s ", uuid, n(state), n(result));
}

static int log_delayed(void *ud, const struct store_delayed_row *r)
{
    return log_add(ud, "delayed %s at=%lld before=%lld frozen=%d args=%s\n", r->plan_uuid,
                   (long long)r->start_at, (long long)r->start_before, r->frozen, n(r->args));
}

static int log_timer(void *ud, const struct store_timer_row *r)
{
    return log_add(ud, "timer %lld %s/%d due=%lld %s\n", (long long)r->id, r->plan_uuid, r->step_id,
                   (long long)r->due_at, n(r->event));
}

/* Loads a whole plan into a fresh log; returns store_load_plan()'s result. */
static int load(store *st, const char *uuid, struct log *l)
{
    const struct store_plan_loader ld = {
        .ud = l,
        .plan = log_plan,
        .step = log_step,
        .action = log_action,
        .chunk = log_chunk,
    };

    log_reset(l);
    return store_load_plan(st, uuid, &ld, NULL);
}

static void assert_loads(store *st, const char *uuid, const char *expected)
{
    struct log l;

    ck_assert_int_eq(load(st, uuid, &l), 0);
    ck_assert_str_eq(l.text, expected);
}

/* ---- rows ------------------------------------------------------------------------------- */

static struct store_plan_row plan_row(const char *uuid, const char *state, int64_t started_at,
                                      int64_t ended_at)
{
    return (struct store_plan_row){
        .uuid = uuid,
        .state = state,
        .result = "pending",
        .label = "Main",
        .started_at = started_at,
        .ended_at = ended_at,
        .real_time = 1.5,
        .execution_time = 0.25,
        .root_plan_step_id = 1,
        .run_flow = "{\"r\":1}",
        .finalize_flow = "[]",
        .execution_history = "[]",
    };
}

static void put_plan(store *st, const struct store_plan_row *r)
{
    df_error err = {""};

    begin(st);
    ck_assert_msg(store_put_plan(st, r, &err) == 0, "%s", err.text);
    commit(st);
}

static void put_plan_in(store *st, const char *uuid, const char *state, int64_t started_at,
                        int64_t ended_at)
{
    struct store_plan_row r = plan_row(uuid, state, started_at, ended_at);

    put_plan(st, &r);
}

/* A plan with one row in every table that belongs to a plan. */
static void put_full_plan(store *st, const char *uuid, const char *state, int64_t ended_at,
                          int64_t timer_id)
{
    struct store_plan_row p = plan_row(uuid, state, 1, ended_at);
    struct store_step_row s = {.plan_uuid = uuid,
                               .id = 1,
                               .action_id = 1,
                               .state = "success",
                               .kind = "plan",
                               .action_class = "Main"};
    struct store_action_row a = {
        .plan_uuid = uuid, .id = 1, .action_class = "Main", .input = "{}", .output = "{}"};
    struct store_chunk_row c = {
        .plan_uuid = uuid, .action_id = 1, .timestamp = 5, .chunk = "\"out\""};
    struct store_delayed_row d = {.plan_uuid = uuid, .start_at = 10, .args = "[]"};
    struct store_timer_row t = {
        .id = timer_id, .plan_uuid = uuid, .step_id = 1, .due_at = 7, .event = "{}"};

    begin(st);
    ck_assert_int_eq(store_put_plan(st, &p, NULL), 0);
    ck_assert_int_eq(store_put_step(st, &s, NULL), 0);
    ck_assert_int_eq(store_put_action(st, &a, NULL), 0);
    ck_assert_int_eq(store_add_chunk(st, &c, NULL, NULL), 0);
    ck_assert_int_eq(store_put_delayed(st, &d, NULL), 0);
    ck_assert_int_eq(store_put_timer(st, &t, NULL), 0);
    commit(st);
}

/* ---- opening ------------------------------------------------------------------------------ */

START_TEST(test_open_memory)
{
    static const char *const paths[] = {NULL, "", ":memory:"};

    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        store *st = open_ok(paths[i]);
        uint64_t count = 1;
        int64_t id = 1;

        ck_assert(store_is_memory(st));
        ck_assert_int_eq(store_count_plans(st, NULL, &count, NULL), 0);
        ck_assert_uint_eq(count, 0);
        ck_assert_int_eq(store_max_timer_id(st, &id, NULL), 0);
        ck_assert_int_eq(id, 0);
        store_close(st);
    }
}
END_TEST

START_TEST(test_open_file)
{
    store *st = open_kind(IN_FILE);

    ck_assert(!store_is_memory(st));
    ck_assert_int_eq(access(db_path, F_OK), 0);
    store_close(st);
}
END_TEST

START_TEST(test_reopen_keeps_data)
{
    store *st = open_kind(IN_FILE);

    put_full_plan(st, "p1", "stopped", 9, 1);
    store_close(st);
    st = open_ok(db_path);
    assert_loads(st, "p1",
                 "plan p1 stopped/pending label=Main time=1-9 real=1.5 exec=0.25 root=1"
                 " run={\"r\":1} fin=[] hist=[] caller=~/0 data=~\n"
                 "step p1/1 action=1 success plan Main queue=~ time=0-0 real=0 exec=0"
                 " progress=0/0 error=~ children=~ requires=~\n"
                 "action p1/1 Main steps=0/0/0 caller=~/0 input={} output={} data=~\n"
                 "chunk p1/1 ~ at=5 \"out\"\n");
    store_close(st);
}
END_TEST

START_TEST(test_newer_schema_refused)
{
    const char *path = new_db_path();
    df_error err = {""};
    sqlite3 *db;

    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db,
                                  "CREATE TABLE dynflow_schema_info (version INTEGER);"
                                  "INSERT INTO dynflow_schema_info VALUES (25)",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);

    ck_assert_ptr_null(store_open(path, &err));
    ck_assert_msg(strstr(err.text, path) && strstr(err.text, "version 25") &&
                      strstr(err.text, "version 2"),
                  "%s", err.text);
}
END_TEST

/* A version 1 database (before the runner facts) gets the new tables and keeps its plans. */
START_TEST(test_version_1_is_migrated)
{
    const char *path = new_db_path();
    df_error err = {""};
    store *st = store_open(path, &err);
    struct store_runner_start_row start = {"r1", "p1", 2, 7};
    sqlite3 *db;

    ck_assert_msg(st != NULL, "%s", err.text);
    store_close(st);
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db,
                                  "DROP TABLE dynflow_runner_starts;"
                                  "DROP TABLE dynflow_runner_processes;"
                                  "UPDATE dynflow_schema_info SET version = 1",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);

    st = store_open(path, &err);
    ck_assert_msg(st != NULL, "%s", err.text);
    ck_assert_int_eq(store_runner_started(st, "r1", NULL), -ENOENT);
    ck_assert_int_eq(store_write_begin(st, &err), 0);
    ck_assert_int_eq(store_put_runner_start(st, &start, &err), 0);
    ck_assert_int_eq(store_write_commit(st, &err), 0);
    ck_assert_int_eq(store_runner_started(st, "r1", NULL), 0);
    store_close(st);
}
END_TEST

START_TEST(test_unwritable_path)
{
    char path[600], expected[700];
    df_error err = {""};

    snprintf(path, sizeof(path), "%s/check_store-no-such-dir-%d/x.db", tmpdir(), (int)getpid());
    ck_assert_ptr_null(store_open(path, &err));
    snprintf(expected, sizeof(expected),
             "store: cannot open database '%s': unable to open database file", path);
    ck_assert_str_eq(err.text, expected);
}
END_TEST

START_TEST(test_not_a_database)
{
    const char *path = new_db_path();
    df_error err = {""};
    FILE *f = fopen(path, "w");

    ck_assert_ptr_nonnull(f);
    fputs("this is not an SQLite database, not even close to one; it is long enough\n", f);
    fclose(f);
    ck_assert_ptr_null(store_open(path, &err));
    ck_assert_msg(strstr(err.text, path) && strstr(err.text, "not a database"), "%s", err.text);
}
END_TEST

/* ---- plans ------------------------------------------------------------------------------ */

START_TEST(test_plan_round_trip)
{
    store *st = open_kind(_i);
    struct store_plan_row full = {
        .uuid = "p1",
        .state = "running",
        .result = "pending",
        .label = "Main",
        .started_at = 1700000000123456,
        .ended_at = 1700000000999999,
        .real_time = 2.5,
        .execution_time = 0.75,
        .root_plan_step_id = 1,
        .run_flow = "{\"class\":\"x\"}",
        .finalize_flow = "[1]",
        .execution_history = "[{\"name\":\"start\"}]",
        .caller_plan_uuid = "p0",
        .caller_action_id = 3,
        .data = "{\"k\":1}",
    };
    struct store_plan_row nulls = {.uuid = "p2", .execution_time_null = true};

    put_plan(st, &full);
    put_plan(st, &nulls);
    assert_loads(st, "p1",
                 "plan p1 running/pending label=Main time=1700000000123456-1700000000999999"
                 " real=2.5 exec=0.75 root=1 run={\"class\":\"x\"} fin=[1]"
                 " hist=[{\"name\":\"start\"}] caller=p0/3 data={\"k\":1}\n");
    assert_loads(st, "p2",
                 "plan p2 ~/~ label=~ time=0-0 real=0 exec=~ root=0 run=~ fin=~ hist=~"
                 " caller=~/0 data=~\n");

    /* put replaces the whole row */
    nulls.uuid = "p1";
    put_plan(st, &nulls);
    assert_loads(st, "p1",
                 "plan p1 ~/~ label=~ time=0-0 real=0 exec=~ root=0 run=~ fin=~ hist=~"
                 " caller=~/0 data=~\n");
    store_close(st);
}
END_TEST

START_TEST(test_update_plan)
{
    store *st = open_kind(_i);
    struct store_plan_row r = plan_row("p1", "planning", 0, 0);
    df_error err = {""};

    r.caller_plan_uuid = "p0";
    r.caller_action_id = 2;
    put_plan(st, &r);

    r = (struct store_plan_row){
        .uuid = "p1",
        .state = "stopped",
        .result = "success",
        .label = "Other",
        .started_at = 100,
        .ended_at = 200,
        .real_time = 9,
        .execution_time = 4,
        .root_plan_step_id = 7,
        .run_flow = "X",
        .finalize_flow = "Y",
        .execution_history = "[1]",
        .data = "{}",
    };
    begin(st);
    ck_assert_int_eq(store_update_plan(st, &r, NULL), 0);
    r.uuid = "nope";
    ck_assert_int_eq(store_update_plan(st, &r, &err), -ENOENT);
    commit(st);
    ck_assert_str_eq(err.text, "store: updating plan nope failed: not found");

    /* label, root step, flows and caller are left alone */
    assert_loads(st, "p1",
                 "plan p1 stopped/success label=Main time=100-200 real=9 exec=4 root=1"
                 " run={\"r\":1} fin=[] hist=[1] caller=p0/2 data={}\n");

    r.uuid = "p1";
    r.execution_time_null = true;
    r.data = NULL;
    begin(st);
    ck_assert_int_eq(store_update_plan(st, &r, NULL), 0);
    commit(st);
    assert_loads(st, "p1",
                 "plan p1 stopped/success label=Main time=100-200 real=9 exec=~ root=1"
                 " run={\"r\":1} fin=[] hist=[1] caller=p0/2 data=~\n");
    store_close(st);
}
END_TEST

START_TEST(test_steps)
{
    store *st = open_kind(_i);
    struct store_step_row run = {
        .plan_uuid = "p1",
        .id = 3,
        .action_id = 2,
        .state = "running",
        .kind = "run",
        .action_class = "Actions::Run",
        .queue = "default",
        .started_at = 11,
        .ended_at = 12,
        .real_time = 0.5,
        .execution_time = 0.25,
        .progress_done = 0.5,
        .progress_weight = 2,
        .error = "{\"message\":\"x\"}",
        .requires = "[2]",
    };
    struct store_step_row plan = {
        .plan_uuid = "p1",
        .id = 1,
        .action_id = 1,
        .state = "success",
        .kind = "plan",
        .action_class = "Main",
        .children = "[2]",
    };
    struct store_step_row other = {.plan_uuid = "p2", .id = 2, .state = "pending"};

    put_plan_in(st, "p1", "running", 1, 0);
    begin(st);
    ck_assert_int_eq(store_put_step(st, &run, NULL), 0);
    ck_assert_int_eq(store_put_step(st, &plan, NULL), 0);
    ck_assert_int_eq(store_put_step(st, &other, NULL), 0);
    commit(st);

    struct log l;

    ck_assert_int_eq(load(st, "p1", &l), 0);
    ck_assert_str_eq(strchr(l.text, '\n') + 1,
                     "step p1/1 action=1 success plan Main queue=~ time=0-0 real=0 exec=0"
                     " progress=0/0 error=~ children=[2] requires=~\n"
                     "step p1/3 action=2 running run Actions::Run queue=default time=11-12"
                     " real=0.5 exec=0.25 progress=0.5/2 error={\"message\":\"x\"} children=~"
                     " requires=[2]\n");

    /* put replaces the whole row */
    run.state = "success";
    run.error = NULL;
    run.queue = NULL;
    begin(st);
    ck_assert_int_eq(store_put_step(st, &run, NULL), 0);
    commit(st);
    ck_assert_int_eq(load(st, "p1", &l), 0);
    ck_assert_ptr_nonnull(strstr(l.text, "step p1/3 action=2 success run Actions::Run queue=~"
                                         " time=11-12 real=0.5 exec=0.25 progress=0.5/2 error=~"
                                         " children=~ requires=[2]\n"));
    store_close(st);
}
END_TEST

START_TEST(test_actions)
{
    store *st = open_kind(_i);
    struct store_action_row sub = {
        .plan_uuid = "p1",
        .id = 2,
        .action_class = "Sub",
        .plan_step_id = 2,
        .run_step_id = 3,
        .finalize_step_id = 4,
        .caller_plan_uuid = "p0",
        .caller_action_id = 5,
        .input = "{\"a\":1}",
        .output = "{}",
        .data = "{\"d\":1}",
    };
    struct store_action_row main_action = {.plan_uuid = "p1", .id = 1, .action_class = "Main"};
    df_error err = {""};

    put_plan_in(st, "p1", "running", 1, 0);
    begin(st);
    ck_assert_int_eq(store_put_action(st, &sub, NULL), 0);
    ck_assert_int_eq(store_put_action(st, &main_action, NULL), 0);
    commit(st);

    struct log l;

    ck_assert_int_eq(load(st, "p1", &l), 0);
    ck_assert_str_eq(strchr(l.text, '\n') + 1,
                     "action p1/1 Main steps=0/0/0 caller=~/0 input=~ output=~ data=~\n"
                     "action p1/2 Sub steps=2/3/4 caller=p0/5 input={\"a\":1} output={}"
                     " data={\"d\":1}\n");

    /* update: output only, input only when given; the other columns are left alone */
    struct store_action_row upd = {
        .plan_uuid = "p1", .id = 2, .action_class = "X", .output = "{\"o\":1}"};

    begin(st);
    ck_assert_int_eq(store_update_action(st, &upd, NULL), 0);
    commit(st);
    ck_assert_int_eq(load(st, "p1", &l), 0);
    ck_assert_ptr_nonnull(strstr(l.text, "action p1/2 Sub steps=2/3/4 caller=p0/5"
                                         " input={\"a\":1} output={\"o\":1} data={\"d\":1}\n"));

    upd.input = "{\"a\":\"[redacted]\"}";
    upd.output = NULL;
    begin(st);
    ck_assert_int_eq(store_update_action(st, &upd, NULL), 0);
    upd.id = 9;
    ck_assert_int_eq(store_update_action(st, &upd, &err), -ENOENT);
    commit(st);
    ck_assert_str_eq(err.text, "store: updating action 9 of plan p1 failed: not found");
    ck_assert_int_eq(load(st, "p1", &l), 0);
    ck_assert_ptr_nonnull(strstr(l.text, "action p1/2 Sub steps=2/3/4 caller=p0/5"
                                         " input={\"a\":\"[redacted]\"} output=~"
                                         " data={\"d\":1}\n"));
    store_close(st);
}
END_TEST

static int log_chunk_of(void *ud, const struct store_chunk_row *r)
{
    struct log *l = ud;
    size_t n = strlen(l->text);

    snprintf(l->text + n, sizeof(l->text) - n, "%s\n", r->chunk);
    return 0;
}

START_TEST(test_chunks)
{
    store *st = open_kind(_i);
    static const struct store_chunk_row chunks[] = {
        {"p1", 2, "stdout", 30, "\"c\"", 0},    {"p1", 1, NULL, 0, "\"a\"", 0},
        {"p1", 2, "stderr", 10, "\"b\"", 0},    {"p2", 1, "stdout", 1, "\"other\"", 0},
        {"p1", 1, "stdout", 5, "{\"d\":1}", 0},
    };
    int64_t ids[5];
    struct log l;

    put_plan_in(st, "p1", "running", 1, 0);
    begin(st);
    for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
        ck_assert_int_eq(store_add_chunk(st, &chunks[i], &ids[i], NULL), 0);
        ck_assert(i == 0 || ids[i] > ids[i - 1]);
    }
    commit(st);

    /* one action's chunks by id: after < id < before, at most limit */
    l.text[0] = '\0';
    ck_assert_int_eq(store_each_chunk(st, "p1", 1, 0, INT64_MAX, 10, log_chunk_of, &l, NULL), 0);
    ck_assert_str_eq(l.text, "\"a\"\n{\"d\":1}\n");
    l.text[0] = '\0';
    ck_assert_int_eq(store_each_chunk(st, "p1", 1, ids[1], INT64_MAX, 10, log_chunk_of, &l, NULL),
                     0);
    ck_assert_str_eq(l.text, "{\"d\":1}\n");
    l.text[0] = '\0';
    ck_assert_int_eq(store_each_chunk(st, "p1", 1, 0, ids[4], 10, log_chunk_of, &l, NULL), 0);
    ck_assert_str_eq(l.text, "\"a\"\n");
    l.text[0] = '\0';
    ck_assert_int_eq(store_each_chunk(st, "p1", 2, 0, INT64_MAX, 1, log_chunk_of, &l, NULL), 0);
    ck_assert_str_eq(l.text, "\"c\"\n");

    ck_assert_int_eq(load(st, "p1", &l), 0);
    ck_assert_str_eq(strchr(l.text, '\n') + 1, "chunk p1/2 stdout at=30 \"c\"\n"
                                               "chunk p1/1 ~ at=0 \"a\"\n"
                                               "chunk p1/2 stderr at=10 \"b\"\n"
                                               "chunk p1/1 stdout at=5 {\"d\":1}\n");

    begin(st);
    ck_assert_int_eq(store_drop_chunks(st, "p1", 1, NULL), 0);
    ck_assert_int_eq(store_add_chunk(st, &chunks[1], NULL, NULL), 0);
    commit(st);
    ck_assert_int_eq(load(st, "p1", &l), 0);
    ck_assert_str_eq(strchr(l.text, '\n') + 1, "chunk p1/2 stdout at=30 \"c\"\n"
                                               "chunk p1/2 stderr at=10 \"b\"\n"
                                               "chunk p1/1 ~ at=0 \"a\"\n");
    store_close(st);
}
END_TEST

static int stop_with_7(void *ud, const struct store_step_row *r)
{
    (void)r;
    ++*(int *)ud;
    return 7;
}

START_TEST(test_load_plan_callbacks)
{
    store *st = open_kind(_i);
    int calls = 0;
    struct store_plan_loader only_steps = {.ud = &calls, .step = stop_with_7};
    struct store_plan_loader nothing = {0};
    df_error err = {""};
    struct store_step_row s = {.plan_uuid = "p1", .state = "pending"};

    put_plan_in(st, "p1", "running", 1, 0);
    begin(st);
    for (s.id = 1; s.id <= 3; s.id++)
        ck_assert_int_eq(store_put_step(st, &s, NULL), 0);
    commit(st);

    ck_assert_int_eq(store_load_plan(st, "p1", &nothing, NULL), 0);
    ck_assert_int_eq(store_load_plan(st, "p1", &only_steps, NULL), 7);
    ck_assert_int_eq(calls, 1);
    ck_assert_int_eq(store_load_plan(st, "nope", &nothing, &err), -ENOENT);
    ck_assert_str_eq(err.text, "store: loading plan nope failed: not found");
    /* the store still works after a stopped load */
    ck_assert_int_eq(store_load_plan(st, "p1", &only_steps, NULL), 7);
    ck_assert_int_eq(calls, 2);
    store_close(st);
}
END_TEST

/* ---- delayed plans, dependencies, timers ------------------------------------------------- */

START_TEST(test_delayed)
{
    store *st = open_kind(_i);
    struct store_delayed_row late = {"p1", 300, 400, false, "[1]"};
    struct store_delayed_row early = {"p2", 100, 0, true, NULL};
    struct log l = {.len = 0};

    begin(st);
    ck_assert_int_eq(store_put_delayed(st, &late, NULL), 0);
    ck_assert_int_eq(store_put_delayed(st, &early, NULL), 0);
    commit(st);
    ck_assert_int_eq(store_each_delayed(st, log_delayed, &l, NULL), 0);
    ck_assert_str_eq(l.text, "delayed p2 at=100 before=0 frozen=1 args=~\n"
                             "delayed p1 at=300 before=400 frozen=0 args=[1]\n");

    early.frozen = false;
    early.start_at = 500;
    begin(st);
    ck_assert_int_eq(store_put_delayed(st, &early, NULL), 0);
    ck_assert_int_eq(store_delete_delayed(st, "p1", NULL), 0);
    ck_assert_int_eq(store_delete_delayed(st, "nope", NULL), 0);
    commit(st);
    log_reset(&l);
    ck_assert_int_eq(store_each_delayed(st, log_delayed, &l, NULL), 0);
    ck_assert_str_eq(l.text, "delayed p2 at=500 before=0 frozen=0 args=~\n");
    store_close(st);
}
END_TEST

START_TEST(test_dependencies)
{
    store *st = open_kind(_i);
    struct log l = {.len = 0};

    begin(st);
    ck_assert_int_eq(store_add_dependency(st, "p3", "p2", NULL), 0);
    ck_assert_int_eq(store_add_dependency(st, "p3", "p1", NULL), 0);
    ck_assert_int_eq(store_add_dependency(st, "p3", "p2", NULL), 0);
    ck_assert_int_eq(store_add_dependency(st, "p2", "p1", NULL), 0);
    commit(st);
    ck_assert_int_eq(store_each_dependency(st, "p3", log_uuid, &l, NULL), 0);
    ck_assert_str_eq(l.text, "p1 p2 ");
    log_reset(&l);
    ck_assert_int_eq(store_each_dependency(st, "p1", log_uuid, &l, NULL), 0);
    ck_assert_str_eq(l.text, "");
    store_close(st);
}
END_TEST

START_TEST(test_timers)
{
    store *st = open_kind(_i);
    static const struct store_timer_row timers[] = {
        {5, "p1", 3, 300, "{\"kind\":\"poll\"}"},
        {2, "p1", 3, 100, NULL},
        {9, "p2", 1, 200, "{\"kind\":\"timeout\"}"},
    };
    struct log l = {.len = 0};
    int64_t id;

    begin(st);
    for (size_t i = 0; i < sizeof(timers) / sizeof(timers[0]); i++)
        ck_assert_int_eq(store_put_timer(st, &timers[i], NULL), 0);
    commit(st);
    ck_assert_int_eq(store_each_timer(st, log_timer, &l, NULL), 0);
    ck_assert_str_eq(l.text, "timer 2 p1/3 due=100 ~\n"
                             "timer 9 p2/1 due=200 {\"kind\":\"timeout\"}\n"
                             "timer 5 p1/3 due=300 {\"kind\":\"poll\"}\n");
    ck_assert_int_eq(store_max_timer_id(st, &id, NULL), 0);
    ck_assert_int_eq(id, 9);

    begin(st);
    ck_assert_int_eq(store_delete_timer(st, 9, NULL), 0);
    commit(st);
    ck_assert_int_eq(store_max_timer_id(st, &id, NULL), 0);
    ck_assert_int_eq(id, 5);
    store_close(st);
}
END_TEST

/* ---- queries over plans ------------------------------------------------------------------- */

START_TEST(test_counts_and_status)
{
    store *st = open_kind(_i);
    struct store_plan_row r = plan_row("p4", "stopped", 1, 2);
    char state[16] = "x", result[16] = "x";
    df_error err = {""};
    uint64_t count;

    put_plan_in(st, "p1", "running", 1, 0);
    put_plan_in(st, "p2", "running", 1, 0);
    put_plan_in(st, "p3", "paused", 1, 0);
    r.result = "warning";
    put_plan(st, &r);

    ck_assert_int_eq(store_count_plans(st, NULL, &count, NULL), 0);
    ck_assert_uint_eq(count, 4);
    ck_assert_int_eq(store_count_plans(st, "running", &count, NULL), 0);
    ck_assert_uint_eq(count, 2);
    ck_assert_int_eq(store_count_plans(st, "paused", &count, NULL), 0);
    ck_assert_uint_eq(count, 1);
    ck_assert_int_eq(store_count_plans(st, "planning", &count, NULL), 0);
    ck_assert_uint_eq(count, 0);

    ck_assert_int_eq(store_plan_status(st, "p4", state, result, NULL), 0);
    ck_assert_str_eq(state, "stopped");
    ck_assert_str_eq(result, "warning");
    ck_assert_int_eq(store_plan_status(st, "nope", state, result, &err), -ENOENT);
    ck_assert_str_eq(err.text, "store: reading the status of plan nope failed: not found");
    store_close(st);
}
END_TEST

static void assert_list(store *st, const char *state, size_t offset, size_t limit,
                        const char *expected)
{
    struct log l = {.len = 0};

    ck_assert_int_eq(store_list_plans(st, state, offset, limit, log_uuid, &l, NULL), 0);
    ck_assert_str_eq(l.text, expected);
}

START_TEST(test_list_plans)
{
    store *st = open_kind(_i);

    put_plan_in(st, "a", "running", 100, 0);
    put_plan_in(st, "b", "stopped", 300, 400);
    put_plan_in(st, "c", "pending", 0, 0);
    put_plan_in(st, "d", "running", 200, 0);
    put_plan_in(st, "e", "running", 300, 0);
    put_plan_in(st, "f", "pending", 0, 0);

    assert_list(st, NULL, 0, 0, "b e d a c f ");
    assert_list(st, NULL, 1, 2, "e d ");
    assert_list(st, NULL, 4, 0, "c f ");
    assert_list(st, NULL, 6, 0, "");
    assert_list(st, "running", 0, 0, "e d a ");
    assert_list(st, "running", 1, 1, "d ");
    assert_list(st, "paused", 0, 0, "");
    store_close(st);
}
END_TEST

START_TEST(test_each_child)
{
    store *st = open_kind(_i);
    struct store_plan_row r = plan_row("c2", "stopped", 1, 2);
    struct log l = {.len = 0};

    put_plan_in(st, "parent", "running", 1, 0);
    r.caller_plan_uuid = "parent";
    r.caller_action_id = 2;
    r.result = "success";
    put_plan(st, &r);
    r.uuid = "c1";
    r.state = "running";
    r.result = "pending";
    put_plan(st, &r);
    r.uuid = "c3";
    r.caller_action_id = 3;
    put_plan(st, &r);

    ck_assert_int_eq(store_each_child(st, "parent", 2, log_child, &l, NULL), 0);
    ck_assert_str_eq(l.text, "c1:running/pending c2:stopped/success ");
    log_reset(&l);
    ck_assert_int_eq(store_each_child(st, "parent", 3, log_child, &l, NULL), 0);
    ck_assert_str_eq(l.text, "c3:running/pending ");
    log_reset(&l);
    ck_assert_int_eq(store_each_child(st, "c1", 2, log_child, &l, NULL), 0);
    ck_assert_str_eq(l.text, "");
    store_close(st);
}
END_TEST

/* No order is promised: check each expected entry and the total length. */
START_TEST(test_each_status)
{
    store *st = open_kind(_i);
    struct store_plan_row r = plan_row("p2", "stopped", 1, 2);
    struct log l = {.len = 0};
    df_error err = {""};

    put_plan_in(st, "p1", "running", 1, 0);
    r.result = "success";
    put_plan(st, &r);
    put_plan_in(st, "p3", "paused", 1, 0);

    ck_assert_int_eq(store_each_status(st, "[\"p2\", \"nope\", \"p1\"]", log_child, &l, NULL), 0);
    ck_assert_ptr_nonnull(strstr(l.text, "p1:running/pending "));
    ck_assert_ptr_nonnull(strstr(l.text, "p2:stopped/success "));
    ck_assert_uint_eq(strlen(l.text), strlen("p1:running/pending p2:stopped/success "));
    log_reset(&l);
    ck_assert_int_eq(store_each_status(st, "[]", log_child, &l, NULL), 0);
    ck_assert_str_eq(l.text, "");
    ck_assert_int_eq(store_each_status(st, "[\"p1\"", log_child, &l, &err), -EIO);
    ck_assert_str_eq(err.text, "store: reading the statuses of plans failed: malformed JSON");
    store_close(st);
}
END_TEST

START_TEST(test_plans_in_states)
{
    store *st = open_kind(_i);
    static const char *const states[] = {"paused", "running", NULL};
    static const char *const none[] = {NULL};
    struct log l = {.len = 0};

    put_plan_in(st, "p1", "running", 1, 0);
    put_plan_in(st, "p2", "paused", 1, 0);
    put_plan_in(st, "p3", "stopped", 1, 2);
    put_plan_in(st, "p0", "running", 1, 0);

    ck_assert_int_eq(store_each_plan_in_states(st, states, log_uuid, &l, NULL), 0);
    ck_assert_str_eq(l.text, "p2 p0 p1 ");
    log_reset(&l);
    ck_assert_int_eq(store_each_plan_in_states(st, none, log_uuid, &l, NULL), 0);
    ck_assert_str_eq(l.text, "");
    store_close(st);
}
END_TEST

START_TEST(test_delete_old_plans)
{
    store *st = open_kind(_i);
    struct log l = {.len = 0};
    uint64_t removed = 99;

    put_full_plan(st, "old", "stopped", 100, 1);
    put_full_plan(st, "edge", "stopped", 200, 2);
    put_full_plan(st, "new", "stopped", 300, 3);
    put_full_plan(st, "running", "running", 50, 4);
    put_full_plan(st, "unended", "stopped", 0, 5);
    begin(st);
    ck_assert_int_eq(store_add_dependency(st, "new", "old", NULL), 0);
    ck_assert_int_eq(store_add_dependency(st, "old", "edge", NULL), 0);
    ck_assert_int_eq(store_add_dependency(st, "running", "new", NULL), 0);
    ck_assert_int_eq(store_delete_old_plans(st, 200, &removed, NULL), 0);
    commit(st);
    ck_assert_uint_eq(removed, 2);

    assert_list(st, NULL, 0, 0, "new running unended ");
    ck_assert_int_eq(load(st, "old", &l), -ENOENT);
    ck_assert_int_eq(load(st, "edge", &l), -ENOENT);
    ck_assert_int_eq(load(st, "new", &l), 0);
    ck_assert_int_eq(load(st, "running", &l), 0);
    ck_assert_int_eq(load(st, "unended", &l), 0);
    ck_assert_ptr_nonnull(strstr(l.text, "chunk unended/1"));

    /* a new plan under an old uuid has none of the old rows */
    put_plan_in(st, "old", "pending", 0, 0);
    assert_loads(st, "old",
                 "plan old pending/pending label=Main time=0-0 real=1.5 exec=0.25"
                 " root=1 run={\"r\":1} fin=[] hist=[] caller=~/0 data=~\n");

    log_reset(&l);
    ck_assert_int_eq(store_each_timer(st, log_timer, &l, NULL), 0);
    ck_assert_str_eq(l.text, "timer 3 new/1 due=7 {}\n"
                             "timer 4 running/1 due=7 {}\n"
                             "timer 5 unended/1 due=7 {}\n");
    log_reset(&l);
    ck_assert_int_eq(store_each_delayed(st, log_delayed, &l, NULL), 0);
    ck_assert_str_eq(l.text, "delayed new at=10 before=0 frozen=0 args=[]\n"
                             "delayed running at=10 before=0 frozen=0 args=[]\n"
                             "delayed unended at=10 before=0 frozen=0 args=[]\n");
    log_reset(&l);
    ck_assert_int_eq(store_each_dependency(st, "new", log_uuid, &l, NULL), 0);
    ck_assert_int_eq(store_each_dependency(st, "old", log_uuid, &l, NULL), 0);
    ck_assert_int_eq(store_each_dependency(st, "running", log_uuid, &l, NULL), 0);
    ck_assert_str_eq(l.text, "new ");

    begin(st);
    ck_assert_int_eq(store_delete_old_plans(st, 1000, &removed, NULL), 0);
    commit(st);
    ck_assert_uint_eq(removed, 1);
    store_close(st);
}
END_TEST

/* ---- transactions and threads ------------------------------------------------------------- */

START_TEST(test_rollback)
{
    store *st = open_kind(_i);
    struct store_plan_row r = plan_row("p1", "running", 1, 0);
    struct log l;

    begin(st);
    ck_assert_int_eq(store_put_plan(st, &r, NULL), 0);
    /* in memory the writer reads its own uncommitted rows; from a file, only committed ones */
    ck_assert_int_eq(load(st, "p1", &l), _i == IN_MEMORY ? 0 : -ENOENT);
    ck_assert_int_eq(store_write_rollback(st), 0);
    ck_assert_int_eq(load(st, "p1", &l), -ENOENT);

    /* a transaction with a failed write is rolled back, and the next one works */
    begin(st);
    ck_assert_int_eq(store_put_plan(st, &r, NULL), 0);
    ck_assert_int_eq(store_update_plan(st, &(struct store_plan_row){.uuid = "nope"}, NULL),
                     -ENOENT);
    ck_assert_int_eq(store_write_rollback(st), 0);
    ck_assert_int_eq(load(st, "p1", &l), -ENOENT);
    put_plan(st, &r);
    ck_assert_int_eq(load(st, "p1", &l), 0);
    store_close(st);
}
END_TEST

struct nested {
    store *st;
    int loaded;
    int inner_rc;
};

static int load_from_callback(void *ud, const char *uuid)
{
    struct nested *c = ud;
    struct store_plan_loader ld = {0};
    char state[16], result[16];

    if (store_load_plan(c->st, uuid, &ld, NULL) == 0 &&
        store_plan_status(c->st, uuid, state, result, NULL) == 0)
        c->loaded++;
    return 0;
}

static int reenter(void *ud, const char *uuid)
{
    struct nested *c = ud;
    struct log l = {.len = 0};

    (void)uuid;
    c->inner_rc = store_list_plans(c->st, NULL, 0, 0, log_uuid, &l, NULL);
    return 1;
}

START_TEST(test_nested_reads)
{
    store *st = open_kind(_i);
    static const char *const states[] = {"running", NULL};
    struct nested c = {.st = st};

    put_plan_in(st, "p1", "running", 1, 0);
    put_plan_in(st, "p2", "running", 2, 0);
    ck_assert_int_eq(store_each_plan_in_states(st, states, load_from_callback, &c, NULL), 0);
    ck_assert_int_eq(c.loaded, 2);
    c.loaded = 0;
    ck_assert_int_eq(store_list_plans(st, NULL, 0, 0, load_from_callback, &c, NULL), 0);
    ck_assert_int_eq(c.loaded, 2);

    /* a callback calling its own function again is refused */
    ck_assert_int_eq(store_list_plans(st, NULL, 0, 0, reenter, &c, NULL), 1);
    ck_assert_int_eq(c.inner_rc, -EBUSY);
    c.loaded = 0;
    ck_assert_int_eq(store_list_plans(st, NULL, 0, 0, load_from_callback, &c, NULL), 0);
    ck_assert_int_eq(c.loaded, 2);
    store_close(st);
}
END_TEST

#define PLANS   150
#define READERS 4

struct shared {
    store *st;
    atomic_bool done;
    atomic_int errors;
    atomic_int loads;
};

struct step_count {
    int steps;
};

static int count_step(void *ud, const struct store_step_row *r)
{
    (void)r;
    ((struct step_count *)ud)->steps++;
    return 0;
}

/* Every plan is written with its three steps in one transaction: a load sees all or none. */
static int check_plan(void *ud, const char *uuid)
{
    struct shared *sh = ud;
    struct step_count c = {0};
    struct store_plan_loader ld = {.ud = &c, .step = count_step};

    if (store_load_plan(sh->st, uuid, &ld, NULL) != 0 || c.steps != 3)
        atomic_fetch_add(&sh->errors, 1);
    atomic_fetch_add(&sh->loads, 1);
    return 0;
}

static void *reader(void *arg)
{
    struct shared *sh = arg;
    char uuid[32], state[16], result[16];
    uint64_t count;
    unsigned seed = (unsigned)(uintptr_t)&seed;

    while (!atomic_load(&sh->done)) {
        snprintf(uuid, sizeof(uuid), "plan-%d", rand_r(&seed) % PLANS);
        if (store_count_plans(sh->st, "running", &count, NULL) != 0 ||
            store_list_plans(sh->st, NULL, 0, 10, check_plan, sh, NULL) != 0)
            atomic_fetch_add(&sh->errors, 1);
        if (store_plan_status(sh->st, uuid, state, result, NULL) == 0 && strcmp(state, "running"))
            atomic_fetch_add(&sh->errors, 1);
    }
    return NULL;
}

static void write_plan(store *st, int i)
{
    char uuid[32];
    struct store_plan_row p;
    struct store_step_row s = {.plan_uuid = uuid, .state = "pending", .kind = "run"};

    snprintf(uuid, sizeof(uuid), "plan-%d", i);
    p = plan_row(uuid, "running", i + 1, 0);
    begin(st);
    ck_assert_int_eq(store_put_plan(st, &p, NULL), 0);
    for (s.id = 1; s.id <= 3; s.id++)
        ck_assert_int_eq(store_put_step(st, &s, NULL), 0);
    commit(st);
}

START_TEST(test_concurrent_readers)
{
    struct shared sh = {.st = open_kind(_i)};
    pthread_t threads[READERS];
    uint64_t count;

    for (int t = 0; t < READERS; t++)
        ck_assert_int_eq(pthread_create(&threads[t], NULL, reader, &sh), 0);
    for (int i = 0; i < PLANS; i++) {
        /* halfway, the readers must have loaded something: they overlap the writes */
        for (int spins = 0; i == PLANS / 2 && atomic_load(&sh.loads) == 0 && spins < 10000; spins++)
            usleep(1000);
        write_plan(sh.st, i);
    }
    atomic_store(&sh.done, true);
    for (int t = 0; t < READERS; t++)
        pthread_join(threads[t], NULL);

    ck_assert_int_eq(atomic_load(&sh.errors), 0);
    ck_assert_int_gt(atomic_load(&sh.loads), 0);
    ck_assert_int_eq(store_count_plans(sh.st, "running", &count, NULL), 0);
    ck_assert_uint_eq(count, PLANS);
    store_close(sh.st);
}
END_TEST

/* ---- the suite ------------------------------------------------------------------------- */

static Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *open = tcase_create("open");
    TCase *rows = tcase_create("rows");

    tcase_add_checked_fixture(open, NULL, remove_db);
    tcase_add_test(open, test_open_memory);
    tcase_add_test(open, test_open_file);
    tcase_add_test(open, test_reopen_keeps_data);
    tcase_add_test(open, test_newer_schema_refused);
    tcase_add_test(open, test_version_1_is_migrated);
    tcase_add_test(open, test_unwritable_path);
    tcase_add_test(open, test_not_a_database);
    suite_add_tcase(s, open);

    tcase_add_checked_fixture(rows, NULL, remove_db);
    tcase_set_timeout(rows, 60);
    tcase_add_loop_test(rows, test_plan_round_trip, IN_MEMORY, IN_FILE + 1);
    tcase_add_loop_test(rows, test_update_plan, IN_MEMORY, IN_FILE + 1);
    tcase_add_loop_test(rows, test_steps, IN_MEMORY, IN_FILE + 1);
    tcase_add_loop_test(rows, test_actions, IN_MEMORY, IN_FILE + 1);
    tcase_add_loop_test(rows, test_chunks, IN_MEMORY, IN_FILE + 1);
    tcase_add_loop_test(rows, test_load_plan_callbacks, IN_MEMORY, IN_FILE + 1);
    tcase_add_loop_test(rows, test_delayed, IN_MEMORY, IN_FILE + 1);
    tcase_add_loop_test(rows, test_dependencies, IN_MEMORY, IN_FILE + 1);
    tcase_add_loop_test(rows, test_timers, IN_MEMORY, IN_FILE + 1);
    tcase_add_loop_test(rows, test_counts_and_status, IN_MEMORY, IN_FILE + 1);
    tcase_add_loop_test(rows, test_list_plans, IN_MEMORY, IN_FILE + 1);
    tcase_add_loop_test(rows, test_each_child, IN_MEMORY, IN_FILE + 1);
    tcase_add_loop_test(rows, test_each_status, IN_MEMORY, IN_FILE + 1);
    tcase_add_loop_test(rows, test_plans_in_states, IN_MEMORY, IN_FILE + 1);
    tcase_add_loop_test(rows, test_delete_old_plans, IN_MEMORY, IN_FILE + 1);
    tcase_add_loop_test(rows, test_rollback, IN_MEMORY, IN_FILE + 1);
    tcase_add_loop_test(rows, test_nested_reads, IN_MEMORY, IN_FILE + 1);
    tcase_add_loop_test(rows, test_concurrent_readers, IN_MEMORY, IN_FILE + 1);
    suite_add_tcase(s, rows);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(store_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
