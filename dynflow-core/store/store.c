/*
 * SQLite persistence of the engine (see store.h).
 *
 * Every statement is prepared once at open.  Write statements live on the writer connection and
 * run only between store_write_begin() and commit/rollback, with the writer lock held; read
 * statements live on the reader connection and run under the reader lock.  An in-memory database
 * has a single connection, so there the two connections and the two locks are one.
 */
#include "store/store.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCHEMA_VERSION 2
#define STR_(x)        #x
#define STR(x)         STR_(x)

#define MEMORY_NAME ":memory:"
#define STATUS_BUF  16

static const char schema_v1_sql[] =
    "CREATE TABLE dynflow_execution_plans ("
    " uuid TEXT NOT NULL PRIMARY KEY, state TEXT, result TEXT,"
    " started_at INTEGER, ended_at INTEGER, real_time REAL, execution_time REAL,"
    " label TEXT, class TEXT DEFAULT 'Dynflow::ExecutionPlan', root_plan_step_id INTEGER,"
    " run_flow TEXT, finalize_flow TEXT, execution_history TEXT,"
    " caller_execution_plan_id TEXT, caller_action_id INTEGER, data TEXT);"
    "CREATE INDEX dynflow_execution_plans_state_index ON dynflow_execution_plans (state);"
    "CREATE INDEX dynflow_execution_plans_caller_index"
    " ON dynflow_execution_plans (caller_execution_plan_id, caller_action_id);"
    "CREATE INDEX dynflow_execution_plans_ended_at_index ON dynflow_execution_plans (ended_at);"
    "CREATE TABLE dynflow_actions ("
    " execution_plan_uuid TEXT NOT NULL, id INTEGER NOT NULL,"
    " caller_execution_plan_id TEXT, caller_action_id INTEGER, class TEXT,"
    " plan_step_id INTEGER, run_step_id INTEGER, finalize_step_id INTEGER,"
    " input TEXT, output TEXT, data TEXT,"
    " PRIMARY KEY (execution_plan_uuid, id));"
    /* Plans and actions keep their rowid: their JSON columns make rows large.  The tables below
     * have small rows, so clustering them on their key saves the separate key index. */
    "CREATE TABLE dynflow_steps ("
    " execution_plan_uuid TEXT NOT NULL, id INTEGER NOT NULL, action_id INTEGER, state TEXT,"
    " started_at INTEGER, ended_at INTEGER, real_time REAL, execution_time REAL,"
    " progress_done REAL, progress_weight REAL, class TEXT, action_class TEXT, queue TEXT,"
    " error TEXT, children TEXT, requires TEXT,"
    " PRIMARY KEY (execution_plan_uuid, id)) WITHOUT ROWID;"
    "CREATE TABLE dynflow_delayed_plans ("
    " execution_plan_uuid TEXT NOT NULL PRIMARY KEY, start_at INTEGER, start_before INTEGER,"
    " frozen INTEGER NOT NULL DEFAULT 0, serialized_args TEXT) WITHOUT ROWID;"
    "CREATE TABLE dynflow_output_chunks ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, execution_plan_uuid TEXT NOT NULL,"
    " action_id INTEGER NOT NULL, kind TEXT, timestamp INTEGER, chunk TEXT);"
    "CREATE INDEX dynflow_output_chunks_execution_plan_uuid_action_id_index"
    " ON dynflow_output_chunks (execution_plan_uuid, action_id);"
    /* The primary key is the index on execution_plan_uuid. */
    "CREATE TABLE dynflow_execution_plan_dependencies ("
    " execution_plan_uuid TEXT NOT NULL, blocked_by_uuid TEXT NOT NULL,"
    " PRIMARY KEY (execution_plan_uuid, blocked_by_uuid)) WITHOUT ROWID;"
    "CREATE INDEX dynflow_execution_plan_dependencies_blocked_by_uuid_index"
    " ON dynflow_execution_plan_dependencies (blocked_by_uuid);"
    "CREATE TABLE dynflow_timers ("
    " id INTEGER PRIMARY KEY, execution_plan_uuid TEXT NOT NULL, step_id INTEGER,"
    " due_at INTEGER, event TEXT);";

/* Version 2: the facts a restart needs about runners (doc/recovery.md).  A runner's start is
 * committed before the runner starts, and each of its processes (its pid, the start time the
 * kernel gives it and the boot it ran in) before that process runs its command. */
static const char schema_v2_sql[] =
    "CREATE TABLE dynflow_runner_starts ("
    " runner_id TEXT NOT NULL PRIMARY KEY, execution_plan_uuid TEXT NOT NULL,"
    " step_id INTEGER NOT NULL, started_at INTEGER) WITHOUT ROWID;"
    "CREATE INDEX dynflow_runner_starts_execution_plan_uuid_index"
    " ON dynflow_runner_starts (execution_plan_uuid);"
    "CREATE TABLE dynflow_runner_processes ("
    " runner_id TEXT NOT NULL, pid INTEGER NOT NULL, start_ticks INTEGER NOT NULL,"
    " boot_id TEXT NOT NULL, outcome TEXT, PRIMARY KEY (runner_id, pid)) WITHOUT ROWID;";

static const char schema_version_sql[] =
    "DELETE FROM dynflow_schema_info;"
    "INSERT INTO dynflow_schema_info (version) VALUES (" STR(SCHEMA_VERSION) ");";

/* busy_timeout first: the journal mode change may have to wait for another process. */
#define PRAGMAS_COMMON                                                                             \
    "PRAGMA busy_timeout = 5000; PRAGMA cache_size = -8192; PRAGMA temp_store = MEMORY;"
/* An in-memory database cannot use WAL; OFF would leave ROLLBACK undefined. */
static const char pragmas_memory[] =
    PRAGMAS_COMMON "PRAGMA journal_mode = MEMORY; PRAGMA synchronous = OFF;";
static const char pragmas_writer[] =
    PRAGMAS_COMMON "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;";
static const char pragmas_reader[] = PRAGMAS_COMMON;

/*
 * Parameter numbers of the statements of each table.  A SELECT lists the same columns in the same
 * order, so column n of a row is read with the helpers below under the same number.  The UPDATE
 * statements use these numbers too, so one bind function serves the INSERT and the UPDATE.
 */
enum {
    PL_UUID = 1,
    PL_LABEL,
    PL_ROOT_STEP,
    PL_RUN_FLOW,
    PL_FINALIZE_FLOW,
    PL_CALLER_PLAN,
    PL_CALLER_ACTION,
    PL_STATE,
    PL_RESULT,
    PL_STARTED,
    PL_ENDED,
    PL_REAL_TIME,
    PL_EXEC_TIME,
    PL_HISTORY,
    PL_DATA,
};
#define PLAN_COLS                                                                                  \
    "uuid, label, root_plan_step_id, run_flow, finalize_flow, caller_execution_plan_id,"           \
    " caller_action_id, state, result, started_at, ended_at, real_time, execution_time,"           \
    " execution_history, data"

enum {
    ST_PLAN = 1,
    ST_ID,
    ST_ACTION,
    ST_STATE,
    ST_KIND,
    ST_ACTION_CLASS,
    ST_QUEUE,
    ST_STARTED,
    ST_ENDED,
    ST_REAL_TIME,
    ST_EXEC_TIME,
    ST_DONE,
    ST_WEIGHT,
    ST_ERROR,
    ST_CHILDREN,
    ST_REQUIRES,
};
#define STEP_COLS                                                                                  \
    "execution_plan_uuid, id, action_id, state, class, action_class, queue, started_at,"           \
    " ended_at, real_time, execution_time, progress_done, progress_weight, error, children,"       \
    " requires"

enum {
    AC_PLAN = 1,
    AC_ID,
    AC_CLASS,
    AC_PLAN_STEP,
    AC_RUN_STEP,
    AC_FINALIZE_STEP,
    AC_CALLER_PLAN,
    AC_CALLER_ACTION,
    AC_DATA,
    AC_INPUT,
    AC_OUTPUT,
};
#define ACTION_COLS                                                                                \
    "execution_plan_uuid, id, class, plan_step_id, run_step_id, finalize_step_id,"                 \
    " caller_execution_plan_id, caller_action_id, data, input, output"

enum { CH_PLAN = 1, CH_ACTION, CH_KIND, CH_TIMESTAMP, CH_CHUNK };
#define CHUNK_COLS "execution_plan_uuid, action_id, kind, timestamp, chunk"

enum { DL_PLAN = 1, DL_START_AT, DL_START_BEFORE, DL_FROZEN, DL_ARGS };
#define DELAYED_COLS "execution_plan_uuid, start_at, start_before, frozen, serialized_args"

enum { TM_ID = 1, TM_PLAN, TM_STEP, TM_DUE_AT, TM_EVENT };
#define TIMER_COLS "id, execution_plan_uuid, step_id, due_at, event"

#define OLD_PLAN_COND "state = 'stopped' AND ended_at IS NOT NULL AND ended_at <= ?1"
#define OLD_PLANS     "(SELECT uuid FROM dynflow_execution_plans WHERE " OLD_PLAN_COND ")"
#define LIST_ORDER    " ORDER BY started_at DESC NULLS LAST, uuid LIMIT ?2 OFFSET ?3"

enum { RS_RUNNER = 1, RS_PLAN, RS_STEP, RS_STARTED };
enum { RP_RUNNER = 1, RP_PID, RP_START_TICKS, RP_BOOT_ID, RP_OUTCOME };
#define RUNNER_PROCESS_COLS "runner_id, pid, start_ticks, boot_id, outcome"
/* Runners whose step is neither suspended nor running (a crash interrupted it, and the runner
 * action runs it again): their outcome is stored, their facts can go. */
#define ENDED_RUNNERS                                                                              \
    "(SELECT runner_id FROM dynflow_runner_starts r WHERE NOT EXISTS (SELECT 1 FROM dynflow_steps" \
    " s WHERE s.execution_plan_uuid = r.execution_plan_uuid AND s.id = r.step_id"                  \
    " AND s.state IN ('suspended', 'running')))"
#define OLD_RUNNERS                                                                                \
    "(SELECT runner_id FROM dynflow_runner_starts WHERE execution_plan_uuid IN " OLD_PLANS ")"

enum stmt_id {
    /* writer connection */
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_PUT_PLAN,
    S_UPDATE_PLAN,
    S_PUT_STEP,
    S_PUT_ACTION,
    S_UPDATE_ACTION,
    S_ADD_CHUNK,
    S_DROP_CHUNKS,
    S_PUT_DELAYED,
    S_DELETE_DELAYED,
    S_ADD_DEPENDENCY,
    S_PUT_TIMER,
    S_DELETE_TIMER,
    /* store_delete_old_plans() runs these in order: the plans go last, as the others select
     * their rows through them. */
    S_DEL_OLD_STEPS,
    S_DEL_OLD_ACTIONS,
    S_DEL_OLD_CHUNKS,
    S_DEL_OLD_DELAYED,
    S_DEL_OLD_TIMERS,
    S_DEL_OLD_DEPENDENCIES,
    S_DEL_OLD_RUNNER_PROCESSES,
    S_DEL_OLD_RUNNER_STARTS,
    S_DEL_OLD_PLANS,
    S_PUT_RUNNER_START,
    S_PUT_RUNNER_PROCESS,
    S_SET_RUNNER_PROCESS_OUTCOME,
    S_DEL_ENDED_RUNNER_PROCESSES,
    S_DEL_ENDED_RUNNER_STARTS,
    /* reader connection */
    S_READ_BEGIN,
    S_READ_END,
    S_LOAD_PLAN,
    S_LOAD_STEPS,
    S_LOAD_ACTIONS,
    S_LOAD_CHUNKS,
    S_CHUNKS_OF,
    S_PLANS_IN_STATE,
    S_COUNT_ALL,
    S_COUNT_STATE,
    S_STATUS,
    S_LIST_ALL,
    S_LIST_STATE,
    S_CHILDREN,
    S_STATUSES,
    S_DELAYED,
    S_DEPENDENCIES,
    S_TIMERS,
    S_MAX_TIMER,
    S_RUNNER_STARTED,
    S_RUNNER_OF_STEP,
    S_RUNNER_PROCESSES,
    S_MAX_CHUNK,
    S_COUNT
};
#define S_FIRST_READ S_READ_BEGIN

static const char *const stmt_sql[S_COUNT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_PUT_PLAN] = "INSERT OR REPLACE INTO dynflow_execution_plans (" PLAN_COLS ")"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    [S_UPDATE_PLAN] = "UPDATE dynflow_execution_plans SET state = ?8, result = ?9,"
                      " started_at = ?10, ended_at = ?11, real_time = ?12, execution_time = ?13,"
                      " execution_history = ?14, data = ?15 WHERE uuid = ?1",
    [S_PUT_STEP] = "INSERT OR REPLACE INTO dynflow_steps (" STEP_COLS ")"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    [S_PUT_ACTION] = "INSERT OR REPLACE INTO dynflow_actions (" ACTION_COLS ")"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    [S_UPDATE_ACTION] = "UPDATE dynflow_actions SET input = coalesce(?10, input), output = ?11"
                        " WHERE execution_plan_uuid = ?1 AND id = ?2",
    [S_ADD_CHUNK] = "INSERT INTO dynflow_output_chunks (" CHUNK_COLS ") VALUES (?, ?, ?, ?, ?)",
    [S_DROP_CHUNKS] = "DELETE FROM dynflow_output_chunks"
                      " WHERE execution_plan_uuid = ?1 AND action_id = ?2",
    [S_PUT_DELAYED] = "INSERT OR REPLACE INTO dynflow_delayed_plans (" DELAYED_COLS ")"
                      " VALUES (?, ?, ?, ?, ?)",
    [S_DELETE_DELAYED] = "DELETE FROM dynflow_delayed_plans WHERE execution_plan_uuid = ?1",
    [S_ADD_DEPENDENCY] = "INSERT OR IGNORE INTO dynflow_execution_plan_dependencies"
                         " (execution_plan_uuid, blocked_by_uuid) VALUES (?1, ?2)",
    [S_PUT_TIMER] = "INSERT OR REPLACE INTO dynflow_timers (" TIMER_COLS ") VALUES (?, ?, ?, ?, ?)",
    [S_DELETE_TIMER] = "DELETE FROM dynflow_timers WHERE id = ?1",
    [S_DEL_OLD_STEPS] = "DELETE FROM dynflow_steps WHERE execution_plan_uuid IN " OLD_PLANS,
    [S_DEL_OLD_ACTIONS] = "DELETE FROM dynflow_actions WHERE execution_plan_uuid IN " OLD_PLANS,
    [S_DEL_OLD_CHUNKS] =
        "DELETE FROM dynflow_output_chunks WHERE execution_plan_uuid IN " OLD_PLANS,
    [S_DEL_OLD_DELAYED] =
        "DELETE FROM dynflow_delayed_plans WHERE execution_plan_uuid IN " OLD_PLANS,
    [S_DEL_OLD_TIMERS] = "DELETE FROM dynflow_timers WHERE execution_plan_uuid IN " OLD_PLANS,
    [S_DEL_OLD_DEPENDENCIES] =
        "DELETE FROM dynflow_execution_plan_dependencies"
        " WHERE execution_plan_uuid IN " OLD_PLANS " OR blocked_by_uuid IN " OLD_PLANS,
    [S_DEL_OLD_RUNNER_PROCESSES] =
        "DELETE FROM dynflow_runner_processes WHERE runner_id IN " OLD_RUNNERS,
    [S_DEL_OLD_RUNNER_STARTS] =
        "DELETE FROM dynflow_runner_starts WHERE execution_plan_uuid IN " OLD_PLANS,
    [S_DEL_OLD_PLANS] = "DELETE FROM dynflow_execution_plans WHERE " OLD_PLAN_COND,
    [S_PUT_RUNNER_START] = "INSERT OR REPLACE INTO dynflow_runner_starts"
                           " (runner_id, execution_plan_uuid, step_id, started_at)"
                           " VALUES (?1, ?2, ?3, ?4)",
    [S_PUT_RUNNER_PROCESS] = "INSERT OR REPLACE INTO dynflow_runner_processes"
                             " (" RUNNER_PROCESS_COLS ") VALUES (?1, ?2, ?3, ?4, ?5)",
    [S_SET_RUNNER_PROCESS_OUTCOME] = "UPDATE dynflow_runner_processes SET outcome = ?5"
                                     " WHERE runner_id = ?1 AND pid = ?2",
    [S_DEL_ENDED_RUNNER_PROCESSES] =
        "DELETE FROM dynflow_runner_processes WHERE runner_id IN " ENDED_RUNNERS,
    [S_DEL_ENDED_RUNNER_STARTS] =
        "DELETE FROM dynflow_runner_starts WHERE runner_id IN " ENDED_RUNNERS,
    [S_READ_BEGIN] = "BEGIN",
    [S_READ_END] = "COMMIT",
    [S_LOAD_PLAN] = "SELECT " PLAN_COLS " FROM dynflow_execution_plans WHERE uuid = ?1",
    [S_LOAD_STEPS] = "SELECT " STEP_COLS " FROM dynflow_steps"
                     " WHERE execution_plan_uuid = ?1 ORDER BY id",
    [S_LOAD_ACTIONS] = "SELECT " ACTION_COLS " FROM dynflow_actions"
                       " WHERE execution_plan_uuid = ?1 ORDER BY id",
    [S_LOAD_CHUNKS] = "SELECT " CHUNK_COLS " FROM dynflow_output_chunks"
                      " WHERE execution_plan_uuid = ?1 ORDER BY id",
    [S_CHUNKS_OF] = "SELECT id, chunk FROM dynflow_output_chunks"
                    " WHERE execution_plan_uuid = ?1 AND action_id = ?2 AND id > ?3 AND id < ?4"
                    " ORDER BY id LIMIT ?5",
    [S_PLANS_IN_STATE] = "SELECT uuid FROM dynflow_execution_plans WHERE state = ?1 ORDER BY uuid",
    [S_COUNT_ALL] = "SELECT count(*) FROM dynflow_execution_plans",
    [S_COUNT_STATE] = "SELECT count(*) FROM dynflow_execution_plans WHERE state = ?1",
    [S_STATUS] = "SELECT state, result FROM dynflow_execution_plans WHERE uuid = ?1",
    /* ?1 is bound but unused here, so both list statements take the same parameters. */
    [S_LIST_ALL] = "SELECT uuid FROM dynflow_execution_plans" LIST_ORDER,
    [S_LIST_STATE] = "SELECT uuid FROM dynflow_execution_plans WHERE state = ?1" LIST_ORDER,
    [S_CHILDREN] = "SELECT uuid, state, result FROM dynflow_execution_plans"
                   " WHERE caller_execution_plan_id = ?1 AND caller_action_id = ?2 ORDER BY uuid",
    [S_STATUSES] = "SELECT uuid, state, result FROM dynflow_execution_plans"
                   " WHERE uuid IN (SELECT value FROM json_each(?1))",
    [S_DELAYED] = "SELECT " DELAYED_COLS " FROM dynflow_delayed_plans"
                  " ORDER BY start_at NULLS LAST, execution_plan_uuid",
    [S_DEPENDENCIES] = "SELECT blocked_by_uuid FROM dynflow_execution_plan_dependencies"
                       " WHERE execution_plan_uuid = ?1 ORDER BY blocked_by_uuid",
    [S_TIMERS] = "SELECT " TIMER_COLS " FROM dynflow_timers ORDER BY due_at, id",
    [S_MAX_TIMER] = "SELECT coalesce(max(id), 0) FROM dynflow_timers",
    [S_RUNNER_STARTED] = "SELECT 1 FROM dynflow_runner_starts WHERE runner_id = ?1",
    [S_RUNNER_OF_STEP] = "SELECT runner_id FROM dynflow_runner_starts"
                         " WHERE execution_plan_uuid = ?1 AND step_id = ?2 ORDER BY started_at DESC"
                         " LIMIT 1",
    /* ?1 NULL: every runner's */
    [S_RUNNER_PROCESSES] = "SELECT " RUNNER_PROCESS_COLS " FROM dynflow_runner_processes"
                           " WHERE ?1 IS NULL OR runner_id = ?1 ORDER BY runner_id, pid",
    [S_MAX_CHUNK] = "SELECT coalesce(max(id), 0) FROM dynflow_output_chunks"
                    " WHERE execution_plan_uuid = ?1 AND action_id = ?2",
};

struct store {
    char *name; /* the path, or ":memory:" */
    bool memory;
    bool in_tx;         /* between store_write_begin() and commit/rollback */
    sqlite3 *wdb, *rdb; /* one connection when in memory */
    pthread_mutex_t locks[2];
    pthread_mutex_t *wlock; /* held from store_write_begin() to commit/rollback */
    pthread_mutex_t *rlock; /* the same lock as wlock when in memory */
    sqlite3_stmt *stmt[S_COUNT];
};

/* ---- errors ----------------------------------------------------------- */

static int sqlite_errno(int rc)
{
    return rc == SQLITE_NOMEM ? -ENOMEM : -EIO;
}

/* Writes "store: <what> failed: <why>" into err and returns rc. */
__attribute__((format(printf, 4, 0))) static int vfail(df_error *err, int rc, const char *why,
                                                       const char *what, va_list ap)
{
    char buf[256];

    if (err) {
        vsnprintf(buf, sizeof(buf), what, ap);
        snprintf(err->text, sizeof(err->text), "store: %s failed: %s", buf, why);
    }
    return rc;
}

__attribute__((format(printf, 4, 5))) static int fail(df_error *err, int rc, const char *why,
                                                      const char *what, ...)
{
    va_list ap;

    va_start(ap, what);
    vfail(err, rc, why, what, ap);
    va_end(ap);
    return rc;
}

static int open_fail(const store *st, sqlite3 *db, df_error *err)
{
    if (err)
        snprintf(err->text, sizeof(err->text), "store: cannot open database '%s': %s", st->name,
                 db ? sqlite3_errmsg(db) : "out of memory");
    return db ? sqlite_errno(sqlite3_errcode(db)) : -ENOMEM;
}

/* ---- binding and reading columns ---------------------------------------- */

static void bind_text(sqlite3_stmt *s, int n, const char *text)
{
    /* The caller's strings outlive the statement's step; bindings are renewed before each use. */
    if (text)
        sqlite3_bind_text(s, n, text, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, n);
}

/* Times and optional ids: 0 is NULL. */
static void bind_opt(sqlite3_stmt *s, int n, int64_t v)
{
    if (v)
        sqlite3_bind_int64(s, n, v);
    else
        sqlite3_bind_null(s, n);
}

/* Column helpers take the parameter number (1-based) of the column. */
static const char *col_text(sqlite3_stmt *s, int n)
{
    return (const char *)sqlite3_column_text(s, n - 1);
}

static int64_t col_int64(sqlite3_stmt *s, int n)
{
    return sqlite3_column_int64(s, n - 1);
}

static int col_int(sqlite3_stmt *s, int n)
{
    return sqlite3_column_int(s, n - 1);
}

static double col_double(sqlite3_stmt *s, int n)
{
    return sqlite3_column_double(s, n - 1);
}

/* ---- running statements ------------------------------------------------- */

/* Write statements are only valid inside a write transaction, under the writer lock. */
static sqlite3_stmt *wstmt(store *st, enum stmt_id id)
{
    assert(st->in_tx);
    return st->stmt[id];
}

/* Runs a statement that returns no rows; with must_change, changing no row is -ENOENT. */
__attribute__((format(printf, 4, 5))) static int step_write(sqlite3_stmt *s, bool must_change,
                                                            df_error *err, const char *what, ...)
{
    sqlite3 *db = sqlite3_db_handle(s);
    int rc = sqlite3_step(s);
    int ret = 0;
    va_list ap;

    va_start(ap, what);
    if (rc != SQLITE_DONE)
        ret = vfail(err, sqlite_errno(rc), sqlite3_errmsg(db), what, ap);
    else if (must_change && sqlite3_changes(db) == 0)
        ret = vfail(err, -ENOENT, "not found", what, ap);
    va_end(ap);
    sqlite3_reset(s);
    return ret;
}

typedef int row_fn(sqlite3_stmt *s, void *ctx);

/* Calls fn for each row; a non-zero return from fn stops the query and is returned. */
__attribute__((format(printf, 5, 6))) static int query(sqlite3_stmt *s, row_fn *fn, void *ctx,
                                                       df_error *err, const char *what, ...)
{
    va_list ap;
    int rc, ret = 0;

    /* A callback calling the function that called it would restart the running statement. */
    if (sqlite3_stmt_busy(s)) {
        va_start(ap, what);
        vfail(err, -EBUSY, "called again from its own callback", what, ap);
        va_end(ap);
        return -EBUSY;
    }
    while ((rc = sqlite3_step(s)) == SQLITE_ROW && !(ret = fn(s, ctx)))
        ;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        va_start(ap, what);
        ret = vfail(err, sqlite_errno(rc), sqlite3_errmsg(sqlite3_db_handle(s)), what, ap);
        va_end(ap);
    }
    sqlite3_reset(s);
    return ret;
}

/*
 * Reads of several statements share one snapshot.  The writer thread reading an in-memory
 * store inside its own transaction (or a nested read) is already in one.
 */
static int read_begin(store *st, bool *began, df_error *err)
{
    int rc;

    *began = false;
    if (!sqlite3_get_autocommit(st->rdb))
        return 0;
    rc = step_write(st->stmt[S_READ_BEGIN], false, err, "starting a read of '%s'", st->name);
    *began = rc == 0;
    return rc;
}

static void read_end(store *st, bool began)
{
    if (began)
        step_write(st->stmt[S_READ_END], false, NULL, "ending a read of '%s'", st->name);
}

/* ---- open and close ----------------------------------------------------- */

static int open_conn(store *st, sqlite3 **db, int flags, const char *pragmas, df_error *err)
{
    /* NOMUTEX: the store's locks serialize every use of a connection. */
    int rc = sqlite3_open_v2(st->name, db, flags | SQLITE_OPEN_NOMUTEX, NULL);

    if (rc == SQLITE_OK)
        rc = sqlite3_exec(*db, pragmas, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : open_fail(st, *db, err);
}

static int read_version(sqlite3 *db, int64_t *version)
{
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(db, "SELECT max(version) FROM dynflow_schema_info", -1, &s, NULL);

    if (rc != SQLITE_OK)
        return rc;
    if (sqlite3_step(s) == SQLITE_ROW)
        *version = sqlite3_column_int64(s, 0);
    return sqlite3_finalize(s);
}

/* Creates the schema of a new database; refuses one written by a newer version. */
static int init_schema(store *st, df_error *err)
{
    sqlite3 *db = st->wdb;
    int64_t version = 0;
    int rc, ret = 0;

    rc = sqlite3_exec(db,
                      "BEGIN IMMEDIATE; CREATE TABLE IF NOT EXISTS dynflow_schema_info"
                      " (version INTEGER NOT NULL DEFAULT 0)",
                      NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = read_version(db, &version);
    if (rc == SQLITE_OK && version < 1)
        rc = sqlite3_exec(db, schema_v1_sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK && version < 2)
        rc = sqlite3_exec(db, schema_v2_sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK && version < SCHEMA_VERSION)
        rc = sqlite3_exec(db, schema_version_sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK && version <= SCHEMA_VERSION)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);

    if (rc != SQLITE_OK) {
        ret = open_fail(st, db, err);
    } else if (version > SCHEMA_VERSION) {
        if (err)
            snprintf(err->text, sizeof(err->text),
                     "store: database '%s' has schema version %" PRId64
                     ", newer than version %d supported here",
                     st->name, version, SCHEMA_VERSION);
        ret = -ENOTSUP;
    }
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return ret;
}

static int prepare_all(store *st, df_error *err)
{
    for (int id = 0; id < S_COUNT; id++) {
        sqlite3 *db = id < S_FIRST_READ ? st->wdb : st->rdb;

        if (sqlite3_prepare_v3(db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &st->stmt[id],
                               NULL) != SQLITE_OK)
            return open_fail(st, db, err);
    }
    return 0;
}

static int open_db(store *st, df_error *err)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    int rc = open_conn(st, &st->wdb, flags, st->memory ? pragmas_memory : pragmas_writer, err);

    if (!rc)
        rc = init_schema(st, err);
    if (rc)
        return rc;
    if (st->memory)
        st->rdb = st->wdb;
    else
        rc = open_conn(st, &st->rdb, SQLITE_OPEN_READONLY, pragmas_reader, err);
    return rc ? rc : prepare_all(st, err);
}

/* Recursive, so that a callback of a read may read again, and the writer thread may read an
 * in-memory store inside its own transaction. */
static void init_lock(pthread_mutex_t *lock)
{
    pthread_mutexattr_t attr;

    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(lock, &attr);
    pthread_mutexattr_destroy(&attr);
}

store *store_open(const char *path, df_error *err)
{
    store *st = calloc(1, sizeof(*st));
    bool memory = !path || !*path || !strcmp(path, MEMORY_NAME);

    if (!st || !(st->name = strdup(memory ? MEMORY_NAME : path))) {
        free(st);
        fail(err, -ENOMEM, "out of memory", "opening database '%s'", memory ? MEMORY_NAME : path);
        return NULL;
    }
    st->memory = memory;
    init_lock(&st->locks[0]);
    init_lock(&st->locks[1]);
    st->wlock = &st->locks[0];
    st->rlock = memory ? st->wlock : &st->locks[1];
    if (open_db(st, err)) {
        store_close(st);
        return NULL;
    }
    return st;
}

void store_close(store *st)
{
    if (!st)
        return;
    if (st->in_tx)
        store_write_rollback(st);
    for (int id = 0; id < S_COUNT; id++)
        sqlite3_finalize(st->stmt[id]);
    if (st->rdb != st->wdb)
        sqlite3_close(st->rdb);
    sqlite3_close(st->wdb);
    pthread_mutex_destroy(&st->locks[0]);
    pthread_mutex_destroy(&st->locks[1]);
    free(st->name);
    free(st);
}

bool store_is_memory(const store *st)
{
    return st->memory;
}

/* ---- write transactions --------------------------------------------------- */

int store_write_begin(store *st, df_error *err)
{
    int rc;

    pthread_mutex_lock(st->wlock);
    rc = step_write(st->stmt[S_BEGIN], false, err, "starting a transaction on '%s'", st->name);
    if (rc)
        pthread_mutex_unlock(st->wlock);
    else
        st->in_tx = true;
    return rc;
}

/* Ends the write transaction; rolls back whatever is still open, as after a failed COMMIT or
 * statement (a failed statement may also have rolled it back already). */
static int end_write(store *st, int rc)
{
    if (!sqlite3_get_autocommit(st->wdb)) {
        int rb = step_write(st->stmt[S_ROLLBACK], false, NULL, "rolling back '%s'", st->name);

        rc = rc ? rc : rb;
    }
    st->in_tx = false;
    pthread_mutex_unlock(st->wlock);
    return rc;
}

int store_write_commit(store *st, df_error *err)
{
    return end_write(st,
                     step_write(st->stmt[S_COMMIT], false, err, "committing to '%s'", st->name));
}

int store_write_rollback(store *st)
{
    return end_write(st, 0);
}

/* ---- writes --------------------------------------------------------------- */

static void bind_plan(sqlite3_stmt *s, const struct store_plan_row *r)
{
    bind_text(s, PL_UUID, r->uuid);
    bind_text(s, PL_LABEL, r->label);
    sqlite3_bind_int(s, PL_ROOT_STEP, r->root_plan_step_id);
    bind_text(s, PL_RUN_FLOW, r->run_flow);
    bind_text(s, PL_FINALIZE_FLOW, r->finalize_flow);
    bind_text(s, PL_CALLER_PLAN, r->caller_plan_uuid);
    bind_opt(s, PL_CALLER_ACTION, r->caller_action_id);
    bind_text(s, PL_STATE, r->state);
    bind_text(s, PL_RESULT, r->result);
    bind_opt(s, PL_STARTED, r->started_at);
    bind_opt(s, PL_ENDED, r->ended_at);
    sqlite3_bind_double(s, PL_REAL_TIME, r->real_time);
    if (r->execution_time_null)
        sqlite3_bind_null(s, PL_EXEC_TIME);
    else
        sqlite3_bind_double(s, PL_EXEC_TIME, r->execution_time);
    bind_text(s, PL_HISTORY, r->execution_history);
    bind_text(s, PL_DATA, r->data);
}

int store_put_plan(store *st, const struct store_plan_row *r, df_error *err)
{
    sqlite3_stmt *s = wstmt(st, S_PUT_PLAN);

    bind_plan(s, r);
    return step_write(s, false, err, "saving plan %s", r->uuid);
}

int store_update_plan(store *st, const struct store_plan_row *r, df_error *err)
{
    sqlite3_stmt *s = wstmt(st, S_UPDATE_PLAN);

    bind_plan(s, r);
    return step_write(s, true, err, "updating plan %s", r->uuid);
}

int store_put_step(store *st, const struct store_step_row *r, df_error *err)
{
    sqlite3_stmt *s = wstmt(st, S_PUT_STEP);

    bind_text(s, ST_PLAN, r->plan_uuid);
    sqlite3_bind_int(s, ST_ID, r->id);
    sqlite3_bind_int(s, ST_ACTION, r->action_id);
    bind_text(s, ST_STATE, r->state);
    bind_text(s, ST_KIND, r->kind);
    bind_text(s, ST_ACTION_CLASS, r->action_class);
    bind_text(s, ST_QUEUE, r->queue);
    bind_opt(s, ST_STARTED, r->started_at);
    bind_opt(s, ST_ENDED, r->ended_at);
    sqlite3_bind_double(s, ST_REAL_TIME, r->real_time);
    sqlite3_bind_double(s, ST_EXEC_TIME, r->execution_time);
    sqlite3_bind_double(s, ST_DONE, r->progress_done);
    sqlite3_bind_double(s, ST_WEIGHT, r->progress_weight);
    bind_text(s, ST_ERROR, r->error);
    bind_text(s, ST_CHILDREN, r->children);
    bind_text(s, ST_REQUIRES, r->requires);
    return step_write(s, false, err, "saving step %d of plan %s", r->id, r->plan_uuid);
}

static void bind_action(sqlite3_stmt *s, const struct store_action_row *r)
{
    bind_text(s, AC_PLAN, r->plan_uuid);
    sqlite3_bind_int(s, AC_ID, r->id);
    bind_text(s, AC_CLASS, r->action_class);
    bind_opt(s, AC_PLAN_STEP, r->plan_step_id);
    bind_opt(s, AC_RUN_STEP, r->run_step_id);
    bind_opt(s, AC_FINALIZE_STEP, r->finalize_step_id);
    bind_text(s, AC_CALLER_PLAN, r->caller_plan_uuid);
    bind_opt(s, AC_CALLER_ACTION, r->caller_action_id);
    bind_text(s, AC_DATA, r->data);
    bind_text(s, AC_INPUT, r->input);
    bind_text(s, AC_OUTPUT, r->output);
}

int store_put_action(store *st, const struct store_action_row *r, df_error *err)
{
    sqlite3_stmt *s = wstmt(st, S_PUT_ACTION);

    bind_action(s, r);
    return step_write(s, false, err, "saving action %d of plan %s", r->id, r->plan_uuid);
}

int store_update_action(store *st, const struct store_action_row *r, df_error *err)
{
    sqlite3_stmt *s = wstmt(st, S_UPDATE_ACTION);

    bind_action(s, r);
    return step_write(s, true, err, "updating action %d of plan %s", r->id, r->plan_uuid);
}

int store_add_chunk(store *st, const struct store_chunk_row *r, int64_t *id, df_error *err)
{
    sqlite3_stmt *s = wstmt(st, S_ADD_CHUNK);
    int rc;

    bind_text(s, CH_PLAN, r->plan_uuid);
    sqlite3_bind_int(s, CH_ACTION, r->action_id);
    bind_text(s, CH_KIND, r->kind);
    bind_opt(s, CH_TIMESTAMP, r->timestamp);
    bind_text(s, CH_CHUNK, r->chunk);
    rc = step_write(s, false, err, "saving an output chunk of action %d of plan %s", r->action_id,
                    r->plan_uuid);
    if (rc == 0 && id != NULL)
        *id = sqlite3_last_insert_rowid(st->wdb);
    return rc;
}

int store_drop_chunks(store *st, const char *plan_uuid, int action_id, df_error *err)
{
    sqlite3_stmt *s = wstmt(st, S_DROP_CHUNKS);

    bind_text(s, 1, plan_uuid);
    sqlite3_bind_int(s, 2, action_id);
    return step_write(s, false, err, "dropping the output chunks of action %d of plan %s",
                      action_id, plan_uuid);
}

int store_put_delayed(store *st, const struct store_delayed_row *r, df_error *err)
{
    sqlite3_stmt *s = wstmt(st, S_PUT_DELAYED);

    bind_text(s, DL_PLAN, r->plan_uuid);
    bind_opt(s, DL_START_AT, r->start_at);
    bind_opt(s, DL_START_BEFORE, r->start_before);
    sqlite3_bind_int(s, DL_FROZEN, r->frozen);
    bind_text(s, DL_ARGS, r->args);
    return step_write(s, false, err, "saving delayed plan %s", r->plan_uuid);
}

int store_delete_delayed(store *st, const char *plan_uuid, df_error *err)
{
    sqlite3_stmt *s = wstmt(st, S_DELETE_DELAYED);

    bind_text(s, 1, plan_uuid);
    return step_write(s, false, err, "deleting delayed plan %s", plan_uuid);
}

int store_add_dependency(store *st, const char *plan_uuid, const char *blocked_by, df_error *err)
{
    sqlite3_stmt *s = wstmt(st, S_ADD_DEPENDENCY);

    bind_text(s, 1, plan_uuid);
    bind_text(s, 2, blocked_by);
    return step_write(s, false, err, "saving the dependency of plan %s on %s", plan_uuid,
                      blocked_by);
}

int store_put_timer(store *st, const struct store_timer_row *r, df_error *err)
{
    sqlite3_stmt *s = wstmt(st, S_PUT_TIMER);

    sqlite3_bind_int64(s, TM_ID, r->id);
    bind_text(s, TM_PLAN, r->plan_uuid);
    sqlite3_bind_int(s, TM_STEP, r->step_id);
    bind_opt(s, TM_DUE_AT, r->due_at);
    bind_text(s, TM_EVENT, r->event);
    return step_write(s, false, err, "saving timer %" PRId64 " of plan %s", r->id, r->plan_uuid);
}

int store_delete_timer(store *st, int64_t id, df_error *err)
{
    sqlite3_stmt *s = wstmt(st, S_DELETE_TIMER);

    sqlite3_bind_int64(s, 1, id);
    return step_write(s, false, err, "deleting timer %" PRId64, id);
}

int store_delete_old_plans(store *st, int64_t ended_before, uint64_t *removed, df_error *err)
{
    int rc = 0;

    for (int id = S_DEL_OLD_STEPS; !rc && id <= S_DEL_OLD_PLANS; id++) {
        sqlite3_stmt *s = wstmt(st, id);

        sqlite3_bind_int64(s, 1, ended_before);
        rc = step_write(s, false, err, "deleting the plans that ended by %" PRId64, ended_before);
    }
    /* The plans went last, so the change count is theirs. */
    if (!rc && removed)
        *removed = (uint64_t)sqlite3_changes64(st->wdb);
    return rc;
}

/* ---- reads ---------------------------------------------------------------- */

/* The caller's callback for the row functions below. */
struct callback {
    union {
        int (*uuid)(void *ud, const char *uuid);
        int (*child)(void *ud, const char *uuid, const char *state, const char *result);
        int (*delayed)(void *ud, const struct store_delayed_row *r);
        int (*timer)(void *ud, const struct store_timer_row *r);
        int (*process)(void *ud, const struct store_runner_process_row *r);
    } fn;
    void *ud;
};

struct load_ctx {
    const struct store_plan_loader *ld;
    bool found;
};

static int row_plan(sqlite3_stmt *s, void *ctx)
{
    struct load_ctx *c = ctx;
    struct store_plan_row r = {
        .uuid = col_text(s, PL_UUID),
        .label = col_text(s, PL_LABEL),
        .root_plan_step_id = col_int(s, PL_ROOT_STEP),
        .run_flow = col_text(s, PL_RUN_FLOW),
        .finalize_flow = col_text(s, PL_FINALIZE_FLOW),
        .caller_plan_uuid = col_text(s, PL_CALLER_PLAN),
        .caller_action_id = col_int(s, PL_CALLER_ACTION),
        .state = col_text(s, PL_STATE),
        .result = col_text(s, PL_RESULT),
        .started_at = col_int64(s, PL_STARTED),
        .ended_at = col_int64(s, PL_ENDED),
        .real_time = col_double(s, PL_REAL_TIME),
        .execution_time = col_double(s, PL_EXEC_TIME),
        .execution_time_null = sqlite3_column_type(s, PL_EXEC_TIME - 1) == SQLITE_NULL,
        .execution_history = col_text(s, PL_HISTORY),
        .data = col_text(s, PL_DATA),
    };

    c->found = true;
    return c->ld->plan ? c->ld->plan(c->ld->ud, &r) : 0;
}

static int row_step(sqlite3_stmt *s, void *ctx)
{
    const struct store_plan_loader *ld = ((struct load_ctx *)ctx)->ld;
    struct store_step_row r = {
        .plan_uuid = col_text(s, ST_PLAN),
        .id = col_int(s, ST_ID),
        .action_id = col_int(s, ST_ACTION),
        .state = col_text(s, ST_STATE),
        .kind = col_text(s, ST_KIND),
        .action_class = col_text(s, ST_ACTION_CLASS),
        .queue = col_text(s, ST_QUEUE),
        .started_at = col_int64(s, ST_STARTED),
        .ended_at = col_int64(s, ST_ENDED),
        .real_time = col_double(s, ST_REAL_TIME),
        .execution_time = col_double(s, ST_EXEC_TIME),
        .progress_done = col_double(s, ST_DONE),
        .progress_weight = col_double(s, ST_WEIGHT),
        .error = col_text(s, ST_ERROR),
        .children = col_text(s, ST_CHILDREN),
        .requires = col_text(s, ST_REQUIRES),
    };

    return ld->step(ld->ud, &r);
}

static int row_action(sqlite3_stmt *s, void *ctx)
{
    const struct store_plan_loader *ld = ((struct load_ctx *)ctx)->ld;
    struct store_action_row r = {
        .plan_uuid = col_text(s, AC_PLAN),
        .id = col_int(s, AC_ID),
        .action_class = col_text(s, AC_CLASS),
        .plan_step_id = col_int(s, AC_PLAN_STEP),
        .run_step_id = col_int(s, AC_RUN_STEP),
        .finalize_step_id = col_int(s, AC_FINALIZE_STEP),
        .caller_plan_uuid = col_text(s, AC_CALLER_PLAN),
        .caller_action_id = col_int(s, AC_CALLER_ACTION),
        .data = col_text(s, AC_DATA),
        .input = col_text(s, AC_INPUT),
        .output = col_text(s, AC_OUTPUT),
    };

    return ld->action(ld->ud, &r);
}

static int row_chunk(sqlite3_stmt *s, void *ctx)
{
    const struct store_plan_loader *ld = ((struct load_ctx *)ctx)->ld;
    struct store_chunk_row r = {
        .plan_uuid = col_text(s, CH_PLAN),
        .action_id = col_int(s, CH_ACTION),
        .kind = col_text(s, CH_KIND),
        .timestamp = col_int64(s, CH_TIMESTAMP),
        .chunk = col_text(s, CH_CHUNK),
    };

    return ld->chunk(ld->ud, &r);
}

static int load_part(store *st, enum stmt_id id, const char *uuid, row_fn *fn, struct load_ctx *c,
                     df_error *err)
{
    sqlite3_stmt *s = st->stmt[id];

    bind_text(s, 1, uuid);
    return query(s, fn, c, err, "loading plan %s", uuid);
}

static int load_plan(store *st, const char *uuid, const struct store_plan_loader *ld, df_error *err)
{
    struct load_ctx c = {.ld = ld};
    int rc = load_part(st, S_LOAD_PLAN, uuid, row_plan, &c, err);

    if (!rc && !c.found)
        rc = fail(err, -ENOENT, "not found", "loading plan %s", uuid);
    if (!rc && ld->step)
        rc = load_part(st, S_LOAD_STEPS, uuid, row_step, &c, err);
    if (!rc && ld->action)
        rc = load_part(st, S_LOAD_ACTIONS, uuid, row_action, &c, err);
    if (!rc && ld->chunk)
        rc = load_part(st, S_LOAD_CHUNKS, uuid, row_chunk, &c, err);
    return rc;
}

int store_load_plan(store *st, const char *uuid, const struct store_plan_loader *ld, df_error *err)
{
    bool began;
    int rc;

    pthread_mutex_lock(st->rlock);
    rc = read_begin(st, &began, err);
    if (!rc)
        rc = load_plan(st, uuid, ld, err);
    read_end(st, began);
    pthread_mutex_unlock(st->rlock);
    return rc;
}

struct chunk_ctx {
    const char *plan_uuid;
    int action_id;
    int (*fn)(void *ud, const struct store_chunk_row *r);
    void *ud;
};

static int row_chunk_of(sqlite3_stmt *s, void *ctx)
{
    const struct chunk_ctx *c = ctx;
    struct store_chunk_row r = {.id = col_int64(s, 1),
                                .plan_uuid = c->plan_uuid,
                                .action_id = c->action_id,
                                .chunk = col_text(s, 2)};

    return c->fn(c->ud, &r);
}

int store_each_chunk(store *st, const char *plan_uuid, int action_id, int64_t after, int64_t before,
                     unsigned limit, int (*fn)(void *ud, const struct store_chunk_row *r), void *ud,
                     df_error *err)
{
    struct chunk_ctx c = {plan_uuid, action_id, fn, ud};
    sqlite3_stmt *s = st->stmt[S_CHUNKS_OF];
    int rc;

    pthread_mutex_lock(st->rlock);
    bind_text(s, 1, plan_uuid);
    sqlite3_bind_int(s, 2, action_id);
    sqlite3_bind_int64(s, 3, after);
    sqlite3_bind_int64(s, 4, before);
    sqlite3_bind_int(s, 5, (int)limit);
    rc = query(s, row_chunk_of, &c, err, "reading the output of action %d of plan %s", action_id,
               plan_uuid);
    pthread_mutex_unlock(st->rlock);
    return rc;
}

static int row_uuid(sqlite3_stmt *s, void *ctx)
{
    const struct callback *cb = ctx;

    return cb->fn.uuid(cb->ud, col_text(s, 1));
}

int store_each_plan_in_states(store *st, const char *const *states,
                              int (*fn)(void *ud, const char *uuid), void *ud, df_error *err)
{
    struct callback cb = {.fn.uuid = fn, .ud = ud};
    sqlite3_stmt *s = st->stmt[S_PLANS_IN_STATE];
    bool began;
    int rc;

    pthread_mutex_lock(st->rlock);
    rc = read_begin(st, &began, err);
    for (; !rc && *states; states++) {
        bind_text(s, 1, *states);
        rc = query(s, row_uuid, &cb, err, "listing the plans in state %s", *states);
    }
    read_end(st, began);
    pthread_mutex_unlock(st->rlock);
    return rc;
}

static int row_int64(sqlite3_stmt *s, void *ctx)
{
    *(int64_t *)ctx = col_int64(s, 1);
    return 0;
}

int store_count_plans(store *st, const char *state, uint64_t *count, df_error *err)
{
    sqlite3_stmt *s = st->stmt[state ? S_COUNT_STATE : S_COUNT_ALL];
    int64_t n = 0;
    int rc;

    pthread_mutex_lock(st->rlock);
    if (state)
        bind_text(s, 1, state);
    rc = query(s, row_int64, &n, err, "counting the plans in state %s", state ? state : "any");
    pthread_mutex_unlock(st->rlock);
    *count = (uint64_t)n;
    return rc;
}

struct status_ctx {
    char *state, *result;
    bool found;
};

static const char *or_empty(const char *s)
{
    return s ? s : "";
}

static int row_status(sqlite3_stmt *s, void *ctx)
{
    struct status_ctx *c = ctx;

    snprintf(c->state, STATUS_BUF, "%s", or_empty(col_text(s, 1)));
    snprintf(c->result, STATUS_BUF, "%s", or_empty(col_text(s, 2)));
    c->found = true;
    return 0;
}

int store_plan_status(store *st, const char *uuid, char state[16], char result[16], df_error *err)
{
    struct status_ctx c = {.state = state, .result = result};
    sqlite3_stmt *s = st->stmt[S_STATUS];
    int rc;

    state[0] = result[0] = '\0';
    pthread_mutex_lock(st->rlock);
    bind_text(s, 1, uuid);
    rc = query(s, row_status, &c, err, "reading the status of plan %s", uuid);
    pthread_mutex_unlock(st->rlock);
    if (!rc && !c.found)
        rc = fail(err, -ENOENT, "not found", "reading the status of plan %s", uuid);
    return rc;
}

int store_list_plans(store *st, const char *state, size_t offset, size_t limit,
                     int (*fn)(void *ud, const char *uuid), void *ud, df_error *err)
{
    struct callback cb = {.fn.uuid = fn, .ud = ud};
    sqlite3_stmt *s = st->stmt[state ? S_LIST_STATE : S_LIST_ALL];
    int rc;

    pthread_mutex_lock(st->rlock);
    bind_text(s, 1, state);
    /* A negative LIMIT is no limit. */
    sqlite3_bind_int64(s, 2, limit ? (sqlite3_int64)limit : -1);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)offset);
    rc = query(s, row_uuid, &cb, err, "listing the plans in state %s", state ? state : "any");
    pthread_mutex_unlock(st->rlock);
    return rc;
}

static int row_child(sqlite3_stmt *s, void *ctx)
{
    const struct callback *cb = ctx;

    return cb->fn.child(cb->ud, col_text(s, 1), col_text(s, 2), col_text(s, 3));
}

int store_each_child(store *st, const char *caller_uuid, int caller_action_id,
                     int (*fn)(void *ud, const char *uuid, const char *state, const char *result),
                     void *ud, df_error *err)
{
    struct callback cb = {.fn.child = fn, .ud = ud};
    sqlite3_stmt *s = st->stmt[S_CHILDREN];
    int rc;

    pthread_mutex_lock(st->rlock);
    bind_text(s, 1, caller_uuid);
    sqlite3_bind_int(s, 2, caller_action_id);
    rc = query(s, row_child, &cb, err, "listing the sub-plans of action %d of plan %s",
               caller_action_id, caller_uuid);
    pthread_mutex_unlock(st->rlock);
    return rc;
}

int store_each_status(store *st, const char *uuids_json,
                      int (*fn)(void *ud, const char *uuid, const char *state, const char *result),
                      void *ud, df_error *err)
{
    struct callback cb = {.fn.child = fn, .ud = ud};
    sqlite3_stmt *s = st->stmt[S_STATUSES];
    int rc;

    pthread_mutex_lock(st->rlock);
    bind_text(s, 1, uuids_json);
    rc = query(s, row_child, &cb, err, "reading the statuses of plans");
    pthread_mutex_unlock(st->rlock);
    return rc;
}

static int row_delayed(sqlite3_stmt *s, void *ctx)
{
    const struct callback *cb = ctx;
    struct store_delayed_row r = {
        .plan_uuid = col_text(s, DL_PLAN),
        .start_at = col_int64(s, DL_START_AT),
        .start_before = col_int64(s, DL_START_BEFORE),
        .frozen = col_int(s, DL_FROZEN) != 0,
        .args = col_text(s, DL_ARGS),
    };

    return cb->fn.delayed(cb->ud, &r);
}

int store_each_delayed(store *st, int (*fn)(void *ud, const struct store_delayed_row *r), void *ud,
                       df_error *err)
{
    struct callback cb = {.fn.delayed = fn, .ud = ud};
    int rc;

    pthread_mutex_lock(st->rlock);
    rc = query(st->stmt[S_DELAYED], row_delayed, &cb, err, "listing the delayed plans");
    pthread_mutex_unlock(st->rlock);
    return rc;
}

int store_each_dependency(store *st, const char *plan_uuid,
                          int (*fn)(void *ud, const char *blocked_by), void *ud, df_error *err)
{
    struct callback cb = {.fn.uuid = fn, .ud = ud};
    sqlite3_stmt *s = st->stmt[S_DEPENDENCIES];
    int rc;

    pthread_mutex_lock(st->rlock);
    bind_text(s, 1, plan_uuid);
    rc = query(s, row_uuid, &cb, err, "listing the dependencies of plan %s", plan_uuid);
    pthread_mutex_unlock(st->rlock);
    return rc;
}

static int row_timer(sqlite3_stmt *s, void *ctx)
{
    const struct callback *cb = ctx;
    struct store_timer_row r = {
        .id = col_int64(s, TM_ID),
        .plan_uuid = col_text(s, TM_PLAN),
        .step_id = col_int(s, TM_STEP),
        .due_at = col_int64(s, TM_DUE_AT),
        .event = col_text(s, TM_EVENT),
    };

    return cb->fn.timer(cb->ud, &r);
}

int store_each_timer(store *st, int (*fn)(void *ud, const struct store_timer_row *r), void *ud,
                     df_error *err)
{
    struct callback cb = {.fn.timer = fn, .ud = ud};
    int rc;

    pthread_mutex_lock(st->rlock);
    rc = query(st->stmt[S_TIMERS], row_timer, &cb, err, "listing the timers");
    pthread_mutex_unlock(st->rlock);
    return rc;
}

int store_max_chunk_id(store *st, const char *plan_uuid, int action_id, int64_t *id, df_error *err)
{
    sqlite3_stmt *s = st->stmt[S_MAX_CHUNK];
    int rc;

    *id = 0;
    pthread_mutex_lock(st->rlock);
    bind_text(s, 1, plan_uuid);
    sqlite3_bind_int(s, 2, action_id);
    rc = query(s, row_int64, id, err, "reading the last output chunk of action %d of plan %s",
               action_id, plan_uuid);
    pthread_mutex_unlock(st->rlock);
    return rc;
}

int store_max_timer_id(store *st, int64_t *id, df_error *err)
{
    int rc;

    *id = 0;
    pthread_mutex_lock(st->rlock);
    rc = query(st->stmt[S_MAX_TIMER], row_int64, id, err, "reading the largest timer id");
    pthread_mutex_unlock(st->rlock);
    return rc;
}

void store_release_memory(store *st)
{
    if (st->memory)
        return;
    pthread_mutex_lock(st->wlock);
    sqlite3_db_release_memory(st->wdb);
    pthread_mutex_unlock(st->wlock);
    pthread_mutex_lock(st->rlock);
    sqlite3_db_release_memory(st->rdb);
    pthread_mutex_unlock(st->rlock);
}

/* ---- runner facts (doc/recovery.md) ------------------------------------------- */

int store_put_runner_start(store *st, const struct store_runner_start_row *r, df_error *err)
{
    sqlite3_stmt *s = wstmt(st, S_PUT_RUNNER_START);

    bind_text(s, RS_RUNNER, r->runner_id);
    bind_text(s, RS_PLAN, r->plan_uuid);
    sqlite3_bind_int(s, RS_STEP, r->step_id);
    bind_opt(s, RS_STARTED, r->started_at);
    return step_write(s, false, err, "recording the start of runner %s", r->runner_id);
}

static void bind_runner_process(sqlite3_stmt *s, const struct store_runner_process_row *r)
{
    bind_text(s, RP_RUNNER, r->runner_id);
    sqlite3_bind_int64(s, RP_PID, r->pid);
    sqlite3_bind_int64(s, RP_START_TICKS, r->start_ticks);
    bind_text(s, RP_BOOT_ID, r->boot_id);
    bind_text(s, RP_OUTCOME, r->outcome);
}

int store_put_runner_process(store *st, const struct store_runner_process_row *r, df_error *err)
{
    sqlite3_stmt *s = wstmt(st, S_PUT_RUNNER_PROCESS);

    bind_runner_process(s, r);
    return step_write(s, false, err, "recording process %" PRId64 " of runner %s", r->pid,
                      r->runner_id);
}

int store_set_runner_process_outcome(store *st, const struct store_runner_process_row *r,
                                     df_error *err)
{
    sqlite3_stmt *s = wstmt(st, S_SET_RUNNER_PROCESS_OUTCOME);

    bind_runner_process(s, r);
    return step_write(s, false, err, "recording what became of process %" PRId64 " of runner %s",
                      r->pid, r->runner_id);
}

int store_delete_ended_runners(store *st, df_error *err)
{
    int rc = step_write(wstmt(st, S_DEL_ENDED_RUNNER_PROCESSES), false, err,
                        "deleting the processes of ended runners");

    return rc ? rc
              : step_write(wstmt(st, S_DEL_ENDED_RUNNER_STARTS), false, err,
                           "deleting the starts of ended runners");
}

static int row_found(sqlite3_stmt *s, void *ctx)
{
    (void)s;
    *(bool *)ctx = true;
    return 0;
}

int store_runner_started(store *st, const char *runner_id, df_error *err)
{
    sqlite3_stmt *s = st->stmt[S_RUNNER_STARTED];
    bool found = false;
    int rc;

    pthread_mutex_lock(st->rlock);
    bind_text(s, 1, runner_id);
    rc = query(s, row_found, &found, err, "reading the start of runner %s", runner_id);
    pthread_mutex_unlock(st->rlock);
    return rc ? rc : found ? 0 : -ENOENT;
}

static int row_runner_id(sqlite3_stmt *s, void *ctx)
{
    snprintf(ctx, DF_UUID_BUF, "%s", col_text(s, 1) ? col_text(s, 1) : "");
    return 0;
}

int store_runner_of_step(store *st, const char *plan_uuid, int step_id, char runner_id[DF_UUID_BUF],
                         df_error *err)
{
    sqlite3_stmt *s = st->stmt[S_RUNNER_OF_STEP];
    int rc;

    runner_id[0] = '\0';
    pthread_mutex_lock(st->rlock);
    bind_text(s, 1, plan_uuid);
    sqlite3_bind_int(s, 2, step_id);
    rc = query(s, row_runner_id, runner_id, err, "reading the runner of step %d of plan %s",
               step_id, plan_uuid);
    pthread_mutex_unlock(st->rlock);
    return rc ? rc : runner_id[0] ? 0 : -ENOENT;
}

static int row_runner_process(sqlite3_stmt *s, void *ctx)
{
    const struct callback *cb = ctx;
    struct store_runner_process_row r = {
        .runner_id = col_text(s, RP_RUNNER),
        .pid = col_int64(s, RP_PID),
        .start_ticks = col_int64(s, RP_START_TICKS),
        .boot_id = col_text(s, RP_BOOT_ID),
        .outcome = col_text(s, RP_OUTCOME),
    };

    return cb->fn.process(cb->ud, &r);
}

int store_each_runner_process(store *st, const char *runner_id,
                              int (*fn)(void *ud, const struct store_runner_process_row *r),
                              void *ud, df_error *err)
{
    sqlite3_stmt *s = st->stmt[S_RUNNER_PROCESSES];
    struct callback cb = {.fn.process = fn, .ud = ud};
    int rc;

    pthread_mutex_lock(st->rlock);
    bind_text(s, 1, runner_id);
    rc = query(s, row_runner_process, &cb, err, "reading the processes of runner %s",
               runner_id != NULL ? runner_id : "(all)");
    pthread_mutex_unlock(st->rlock);
    return rc;
}
