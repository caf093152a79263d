/*
 * Fault injection (doc/persistence.md).  The engine: the database's writes
 * fail with SQLITE_FULL or SQLITE_IOERR while plans run; no step may start
 * whose running state is not committed, the engine says so (df_world_writable,
 * its log), and once writes work again every plan is stored and finishes: the
 * file database is opened again and checked.  smart-proxyd, with faultshim.so
 * preloaded: launches get 503 JSON while the writes fail and every acknowledged
 * task is stored afterwards; an allocation that fails in the request path gets
 * 503 (or a closed connection) and the daemon keeps serving.
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "../unit/daemonutil.h"
#include "../unit/httputil.h"
#include "../unit/testutil.h"
#include "faultshim.h"
#include "faultvfs.h"

#define PLANS 10

static atomic_int armed; /* the SQLite error writes fail with; 0: none */
static char db_path[700];
static atomic_int started, uncommitted;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char logged[8192];

static const int errors[] = {SQLITE_FULL, SQLITE_IOERR_WRITE};
static const char *const reasons[] = {"database or disk is full", "disk I/O error"};

static void capture_log(void *ctx, int level, const char *fmt, va_list ap)
{
    char line[1024];
    size_t len;

    (void)ctx;
    vsnprintf(line, sizeof(line), fmt, ap);
    pthread_mutex_lock(&log_lock);
    len = strlen(logged);
    snprintf(logged + len, sizeof(logged) - len, "%d %s\n", level, line);
    pthread_mutex_unlock(&log_lock);
}

static bool log_has(int level, const char *needle)
{
    char prefix[8];
    bool found;

    snprintf(prefix, sizeof(prefix), "%d ", level);
    pthread_mutex_lock(&log_lock);
    found = false;
    for (const char *line = logged; line != NULL && *line != '\0' && !found;) {
        const char *end = strchr(line, '\n');
        found = strncmp(line, prefix, strlen(prefix)) == 0 && strstr(line, needle) != NULL &&
                (end == NULL || strstr(line, needle) < end);
        line = end != NULL ? end + 1 : NULL;
    }
    pthread_mutex_unlock(&log_lock);
    return found;
}

/* Whether the database says this action's run step is running, read on a connection of
 * its own (what a restart would find). */
static bool running_committed(df_action *a)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    bool ok = false;

    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db,
                           "SELECT state FROM dynflow_steps WHERE execution_plan_uuid = ?1"
                           " AND id = ?2",
                           -1, &s, NULL) == SQLITE_OK) {
        sqlite3_bind_text(s, 1, df_action_plan_id(a), -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 2, df_action_run_step_id(a));
        ok = sqlite3_step(s) == SQLITE_ROW &&
             strcmp((const char *)sqlite3_column_text(s, 0), "running") == 0;
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return ok;
}

static int step_run(df_action *a, const df_event *ev)
{
    (void)ev;
    if (!running_committed(a))
        atomic_fetch_add(&uncommitted, 1);
    atomic_fetch_add(&started, 1);
    return 0;
}

/* Two steps in sequence: the second starts after the first one's end was written. */
static int entry_plan(df_action *a, json_t *args)
{
    json_t *none = json_object();
    int rc = 0;

    (void)args;
    df_sequence_begin(a);
    for (int i = 0; i < 2 && rc == 0; i++)
        if (df_plan_action(a, "Faults::Step", none) == NULL)
            rc = -1;
    df_sequence_end(a);
    json_decref(none);
    return rc < 0 ? rc : df_plan_self(a, json_object());
}

static const struct df_action_class classes[] = {
    {.name = "Faults::Entry", .plan = entry_plan},
    {.name = "Faults::Step", .run = step_run},
};

static df_world *open_world(void)
{
    struct df_world_config cfg = {.database = db_path, .log = capture_log};

    return tu_world(&cfg, classes, sizeof(classes) / sizeof(classes[0]));
}

static void setup(void)
{
    ck_assert_int_eq(faultvfs_install(&armed), SQLITE_OK);
    scratch_new(workdir, sizeof(workdir), "faults");
    snprintf(db_path, sizeof(db_path), "%s/dynflow.db", workdir);
}

static void teardown(void)
{
    atomic_store(&armed, 0);
    scratch_remove(workdir);
}

static int64_t query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s;
    int64_t v = -1;

    ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

/* The database file, opened again after the world is gone: every plan is there, stopped. */
static void expect_stored(int plans)
{
    sqlite3 *db;
    sqlite3_stmt *s;

    ck_assert_int_eq(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(s), SQLITE_ROW);
    ck_assert_str_eq((const char *)sqlite3_column_text(s, 0), "ok");
    sqlite3_finalize(s);
    ck_assert_int_eq(query_int(db, "SELECT count(*) FROM dynflow_execution_plans WHERE"
                                   " state = 'stopped' AND result = 'success'"),
                     plans);
    ck_assert_int_eq(query_int(db, "SELECT count(*) FROM dynflow_execution_plans"), plans);
    ck_assert_int_eq(query_int(db, "SELECT count(*) FROM dynflow_steps WHERE class = 'run' AND"
                                   " state = 'success'"),
                     2 * plans);
    sqlite3_close(db);
}

/* Half the plans are triggered before the writes fail, half after; the writes fail until the
 * writer has retried a few times. */
START_TEST(writes_fail_while_plans_run)
{
    char ids[PLANS][DF_UUID_BUF];
    df_world *w = open_world();
    unsigned long refused;
    uint64_t count;
    df_error err;
    double t0;

    for (int i = 0; i < PLANS; i++) {
        if (i == PLANS / 2)
            atomic_store(&armed, errors[_i]);
        snprintf(ids[i], sizeof(ids[i]), "%s", tu_trigger(w, "Faults::Entry", NULL));
    }
    ck_assert_msg(WAIT_UNTIL(df_world_writable(w, &err) < 0, 10), "the failure went unnoticed");
    ck_assert_msg(strstr(err.text, db_path) != NULL && strstr(err.text, reasons[_i]) != NULL, "%s",
                  err.text);
    /* readers that need the database current answer at once, with the reason */
    ck_assert_int_eq(df_plan_count(w, -1, &count, &err), -EIO);
    ck_assert_msg(strstr(err.text, reasons[_i]) != NULL, "%s", err.text);

    /* retried with a pause that grows, not in a busy loop */
    ck_assert(WAIT_UNTIL(faultvfs_refused() >= 4, 10));
    refused = faultvfs_refused();
    t0 = tu_now();
    while (tu_now() < t0 + 0.5)
        usleep(10000);
    ck_assert_msg(faultvfs_refused() - refused < 40, "%lu writes refused in 0.5 s",
                  faultvfs_refused() - refused);
    ck_assert_msg(log_has(DF_LOG_ERROR, db_path) && log_has(DF_LOG_ERROR, reasons[_i]), "%s",
                  logged);

    atomic_store(&armed, 0);
    for (int i = 0; i < PLANS; i++)
        tu_expect(w, ids[i], DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_int_eq(df_world_writable(w, &err), 0);
    ck_assert_msg(log_has(DF_LOG_INFO, "works again"), "%s", logged);
    df_world_free(w);

    ck_assert_int_eq(atomic_load(&uncommitted), 0);
    ck_assert_int_eq(atomic_load(&started), 2 * PLANS);
    expect_stored(PLANS);
}
END_TEST

/* The world can be freed while the writes fail: waiting workers give up, the database keeps
 * its last committed state. */
START_TEST(stop_while_writes_fail)
{
    df_world *w = open_world();
    df_error err;

    tu_expect(w, tu_trigger(w, "Faults::Entry", NULL), DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    df_world_sync(w);
    atomic_store(&armed, errors[_i]);
    tu_trigger(w, "Faults::Entry", NULL);
    ck_assert(WAIT_UNTIL(df_world_writable(w, &err) < 0, 10));
    df_world_free(w);
    ck_assert_msg(log_has(DF_LOG_ERROR, "could not be written"), "%s", logged);
    ck_assert_int_eq(atomic_load(&uncommitted), 0);
    atomic_store(&armed, 0);
    expect_stored(1);
}
END_TEST

/* ---- smart-proxyd with faultshim.so -------------------------------------------------- */

static struct fault_control *shim;
static pid_t daemon_pid;
static int daemon_out;
static char log_path[600];

#define LAUNCH_BODY                                                                                \
    "{\"operation\": \"single\", \"input\": {\"action_class\": \"Test::Trivial\", "                \
    "\"action_input\": {}}}"

/* The control file the daemon maps, mapped here too. */
static void map_control(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, sizeof(*shim)), 0);
    shim = mmap(NULL, sizeof(*shim), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ck_assert(shim != MAP_FAILED);
    close(fd);
}

static void daemon_setup(void)
{
    char text[2048], path[700];
    long from;

    scratch_new(workdir, sizeof(workdir), "faultd");
    snprintf(db_path, sizeof(db_path), "%s/dynflow.db", workdir);
    snprintf(log_path, sizeof(log_path), "%s/proxy.log", workdir);
    snprintf(path, sizeof(path), "%s/settings.d", workdir);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/plugins", workdir);
    mkdir(path, 0700);
    snprintf(text, sizeof(text), "cp %s/testplug.so %s/plugins/", getenv("PLUGIN_FIXTURES"),
             workdir);
    ck_assert_int_eq(system(text), 0);
    snprintf(text, sizeof(text),
             ":http_port: 0\n:bind_host: 127.0.0.1\n:module_directory: %s\n:log_file: %s\n",
             getenv("DYNFLOW_MODULE_DIR"), log_path);
    scratch_write(workdir, "settings.yml", text);
    snprintf(text, sizeof(text), ":enabled: true\n:database: %s\n:plugin_directory: %s/plugins\n",
             db_path, workdir);
    scratch_write(workdir, "settings.d/dynflow.yml", text);
    scratch_write(workdir, "settings.d/testplug.yml", ":enabled: true\n");
    snprintf(path, sizeof(path), "%s/control", workdir);
    map_control(path);
    setenv("FAULT_CONTROL", path, 1);
    setenv("LD_PRELOAD", getenv("FAULT_SHIM"), 1);
    from = file_size(log_path);
    daemon_pid = start(NULL, &daemon_out);
    unsetenv("LD_PRELOAD");
    port = listening_port(log_path, from, "http");
    ck_assert_msg(port != 0, "smart-proxyd did not start: %s", read_until(daemon_out, "\n\n"));
}

static void daemon_teardown(void)
{
    if (daemon_pid > 0) {
        kill(daemon_pid, SIGTERM);
        finish(daemon_pid);
    }
    close(daemon_out);
    munmap(shim, sizeof(*shim));
    scratch_remove(workdir);
}

/* POST /dynflow/tasks/launch; id: the task's, or "" unless 200. */
static struct reply launch(char id[DF_UUID_BUF])
{
    struct reply r =
        call("POST", "/dynflow/tasks/launch", LAUNCH_BODY, "Content-Type: application/json");
    json_t *j = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;

    snprintf(id, DF_UUID_BUF, "%s", j ? json_string_value(json_object_get(j, "task_id")) : "");
    json_decref(j);
    return r;
}

static struct reply status_of(const char *id)
{
    char path[128];

    snprintf(path, sizeof(path), "/dynflow/tasks/%.36s/status", id);
    return call("GET", path, NULL, NULL);
}

/* The task's status stops with result success (within 20 s). */
static void expect_success(const char *id)
{
    char path[128];
    bool stopped = false;

    snprintf(path, sizeof(path), "/dynflow/tasks/%.36s/status", id);
    for (double until = tu_now() + 20; !stopped && tu_now() < until; usleep(10000)) {
        struct reply r = call("GET", path, NULL, NULL);
        json_t *j = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
        const char *state = json_string_value(json_object_get(j, "state"));
        stopped = state != NULL && strcmp(state, "stopped") == 0;
        if (stopped)
            ck_assert_str_eq(json_string_value(json_object_get(j, "result")), "success");
        json_decref(j);
    }
    ck_assert_msg(stopped, "task %s did not stop", id);
}

static bool has_error_naming(const struct reply *r, const char *a, const char *b)
{
    json_t *j = json_loads(r->body, 0, NULL);
    const char *e = json_string_value(json_object_get(j, "error"));
    bool ok = e != NULL && strstr(e, a) != NULL && strstr(e, b) != NULL;

    json_decref(j);
    return ok;
}

#define MAX_ACKED 256

START_TEST(launch_refused_while_writes_fail)
{
    static char acked[MAX_ACKED][DF_UUID_BUF];
    size_t n = 0;
    struct reply r;
    double until;
    sqlite3 *db;

    for (; n < 3; n++)
        ck_assert_int_eq(launch(acked[n]).status, 200);
    atomic_store(&shim->write_rc, SQLITE_FULL);
    /* accepted until the writer finds out (the next batch), then refused */
    until = tu_now() + 10;
    while ((r = launch(acked[n])).status == 200 && n + 1 < MAX_ACKED && tu_now() < until)
        n++;
    ck_assert_msg(r.status == 503, "%ld %s", r.status, r.body);
    ck_assert_str_eq(r.content_type, "application/json");
    ck_assert_msg(has_error_naming(&r, db_path, "database or disk is full"), "%s", r.body);
    r = call("GET", "/dynflow/tasks/count", NULL, NULL);
    ck_assert_msg(r.status == 503 && has_error_naming(&r, db_path, "disk is full"), "%ld %s",
                  r.status, r.body);
    ck_assert_msg(file_has(log_path, "database or disk is full; "), "not logged");

    atomic_store(&shim->write_rc, 0);
    until = tu_now() + 10;
    while ((r = launch(acked[n])).status != 200 && tu_now() < until)
        usleep(10000);
    ck_assert_int_eq(r.status, 200);
    n++;
    for (size_t i = 0; i < n; i++)
        expect_success(acked[i]);
    ck_assert(file_has(log_path, "works again"));

    kill(daemon_pid, SIGTERM);
    ck_assert_int_eq(finish(daemon_pid), 0);
    daemon_pid = 0;
    ck_assert_int_eq(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    for (size_t i = 0; i < n; i++) {
        char sql[256];
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM dynflow_execution_plans WHERE uuid = '%.36s' AND"
                 " state = 'stopped' AND result = 'success'",
                 acked[i]);
        ck_assert_msg(query_int(db, sql) == 1, "task %s is not stored", acked[i]);
    }
    sqlite3_close(db);
}
END_TEST

/* A request that may find the connection closed: false then, else r is the reply. */
static bool try_call(const char *method, const char *path, const char *body, struct reply *r)
{
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    CURL *c = curl_easy_init();
    char url[256];
    CURLcode rc;

    *r = (struct reply){0};
    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_cleanup(c);
    curl_slist_free_all(headers);
    return rc == CURLE_OK && r->status != 0;
}

/* Allocations failed for one request at most this far in (the bound on K). */
#define MAX_ALLOCATIONS 3000

/* For N = 1, 2, … the N-th allocation in the daemon's request threads fails, until the request
 * makes fewer than N: the reply is 503 JSON, a closed connection or the normal reply, never a
 * crash, and the next request is served.  Prints what happened as a JSON line. */
static void fail_each_allocation(const char *what, const char *method, const char *path,
                                 const char *body)
{
    unsigned n, refused = 0, dropped = 0, answered = 0;

    snprintf(shim->thread_prefix, sizeof(shim->thread_prefix), "MHD-");
    for (n = 1; n <= MAX_ALLOCATIONS; n++) {
        int before = atomic_load(&shim->malloc_failed);
        struct reply r;
        bool replied;

        atomic_store(&shim->malloc_at, (int)n);
        replied = try_call(method, path, body, &r);
        atomic_store(&shim->malloc_at, 0);
        ck_assert_msg(waitpid(daemon_pid, NULL, WNOHANG) == 0,
                      "%s: smart-proxyd died when allocation %u failed: %s", what, n,
                      read_until(daemon_out, "\n\n"));
        if (atomic_load(&shim->malloc_failed) == before)
            break; /* the request made fewer than n allocations */
        if (!replied) {
            dropped++;
        } else if (r.status == 503) {
            ck_assert_msg(has_error_naming(&r, "", ""), "%s, allocation %u: %s", what, n, r.body);
            refused++;
        } else {
            json_t *j = json_loads(r.body, 0, NULL);
            const char *id = json_string_value(json_object_get(j, "task_id"));
            ck_assert_msg(r.status == 200 && j != NULL, "%s, allocation %u: %ld %s", what, n,
                          r.status, r.body);
            if (id != NULL) /* a task created is created whole */
                ck_assert_msg(strstr(status_of(id).body, "\"callback_host\"") != NULL,
                              "%s, allocation %u: task %s has no callback host", what, n, id);
            json_decref(j);
            answered++;
        }
        ck_assert_int_eq(call("GET", "/dynflow/tasks/count", NULL, NULL).status, 200);
    }
    /* a sanitizer's allocator comes first and cannot be replaced: nothing fails there */
    printf("{\"case\":\"malloc\",\"request\":\"%s\",\"allocations\":%u,\"bounded\":%s,"
           "\"refused_503\":%u,\"connection_closed\":%u,\"answered\":%u%s}\n",
           what, n - 1, n > MAX_ALLOCATIONS ? "true" : "false", refused, dropped, answered,
           n == 1 ? ",\"skipped\":\"the allocator cannot be replaced in this build\"" : "");
}

START_TEST(allocation_failures_in_the_request_path)
{
    char id[DF_UUID_BUF], path[128];

    ck_assert_int_eq(launch(id).status, 200);
    expect_success(id);
    snprintf(path, sizeof(path), "/dynflow/tasks/%s/status", id);
    fail_each_allocation("status", "GET", path, NULL);
    fail_each_allocation("launch", "POST", "/dynflow/tasks/launch", LAUNCH_BODY);
}
END_TEST

static Suite *faults_suite(void)
{
    Suite *s = suite_create("faults");
    TCase *tc = tcase_create("database writes");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, writes_fail_while_plans_run, 0,
                        (int)(sizeof(errors) / sizeof(errors[0])));
    tcase_add_loop_test(tc, stop_while_writes_fail, 0, (int)(sizeof(errors) / sizeof(errors[0])));
    suite_add_tcase(s, tc);
    tc = tcase_create("smart-proxyd");
    tcase_add_checked_fixture(tc, daemon_setup, daemon_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, launch_refused_while_writes_fail);
    tcase_add_test(tc, allocation_failures_in_the_request_path);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(faults_suite());
}
