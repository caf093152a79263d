/*
 * Bad launch input through a running smart-proxyd (doc/api-input.md): wrong types get a 422
 * naming the field and create nothing, whichever plugin's input it is (script, ssh, testplug);
 * a retried launch answers with the parent that has its tasks, another input with the same
 * task ids is a 409; secrets in any shape never reach the database file, the log or a response.
 */
#include <signal.h>
#include <sys/stat.h>

#include "daemonutil.h"
#include "httputil.h"
#include "testutil.h"

#define TASK_A "11111111-1111-4111-8111-111111111111"
#define TASK_B "22222222-2222-4222-8222-222222222222"
#define TASK_C "33333333-3333-4333-8333-333333333333"

static pid_t daemon_pid;
static int daemon_out;
static char log_path[600], db_path[600];

static void install_plugin(const char *from, const char *name)
{
    char cmd[2048];

    snprintf(cmd, sizeof(cmd), "cp %s/%s.so %s/plugins/", from, name, workdir);
    ck_assert_int_eq(system(cmd), 0);
}

/* smart-proxyd over HTTP with a file database and the testplug, script and ssh plugins. */
static void setup(void)
{
    char settings[2048], dynflow[2048], sub[600];
    long from;

    scratch_new(workdir, sizeof(workdir), "input");
    snprintf(log_path, sizeof(log_path), "%s/proxy.log", workdir);
    snprintf(db_path, sizeof(db_path), "%s/dynflow.sqlite", workdir);
    snprintf(sub, sizeof(sub), "%s/settings.d", workdir);
    mkdir(sub, 0700);
    snprintf(sub, sizeof(sub), "%s/plugins", workdir);
    mkdir(sub, 0700);
    install_plugin(getenv("PLUGIN_FIXTURES"), "testplug");
    install_plugin(getenv("SCRIPT_PLUGIN_DIR"), "script");
    install_plugin(getenv("SSH_PLUGIN_DIR"), "ssh");
    snprintf(settings, sizeof(settings),
             ":http_port: 0\n:bind_host: 127.0.0.1\n:module_directory: %s\n:log_file: %s\n"
             ":log_level: DEBUG\n",
             getenv("DYNFLOW_MODULE_DIR"), log_path);
    scratch_write(workdir, "settings.yml", settings);
    snprintf(dynflow, sizeof(dynflow),
             ":enabled: true\n:plugin_directory: %s/plugins\n:database: %s\n", workdir, db_path);
    scratch_write(workdir, "settings.d/dynflow.yml", dynflow);
    scratch_write(workdir, "settings.d/testplug.yml", ":enabled: true\n");
    scratch_write(workdir, "settings.d/remote_execution_ssh.yml", ":enabled: true\n");
    scratch_write(workdir, "settings.d/script.yml",
                  ":enabled: true\n:tasks:\n  - :kind: hello\n    :command: /bin/true\n");
    from = file_size(log_path);
    daemon_pid = start(NULL, &daemon_out);
    port = listening_port(log_path, from, "http");
    ck_assert_msg(port != 0, "smart-proxyd did not start: %s", read_until(daemon_out, "\n\n"));
}

/* Stops the daemon (its database and log are complete afterwards). */
static void stop_daemon(void)
{
    if (daemon_pid <= 0)
        return;
    kill(daemon_pid, SIGTERM);
    ck_assert_int_eq(finish(daemon_pid), 0);
    close(daemon_out);
    daemon_pid = 0;
}

static void teardown(void)
{
    stop_daemon();
    scratch_remove(workdir);
}

static struct reply launch(const char *body)
{
    return call("POST", "/dynflow/tasks/launch", body, NULL);
}

static long task_count(void)
{
    struct reply r = call("GET", "/dynflow/tasks/count", NULL, NULL);
    json_t *j = json_loads(r.body, 0, NULL);
    long n = (long)json_integer_value(json_object_get(j, "count"));

    json_decref(j);
    return n;
}

/* ---- wrong types ---------------------------------------------------------------------------- */

static const struct {
    const char *body;
    const char *error; /* what the 422's error says */
} wrong_types[] = {
    {"{\"operation\":\"script\",\"input\":{\"" TASK_A "\":{\"action_input\":\"kind hello\"}}}",
     "'input." TASK_A ".action_input' must be an object, found a string"},
    {"{\"operation\":\"script\",\"input\":{\"" TASK_A "\":{\"action_input\":{\"input\":{}}}}}",
     "'input." TASK_A ".action_input' for Proxy::Script::Actions::RunScript: 'kind' must be a "
     "string naming a task kind, found nothing (known: hello)"},
    {"{\"operation\":\"script\",\"input\":{\"" TASK_A "\":{\"action_input\":{\"kind\":7}}}}",
     "'input." TASK_A ".action_input' for Proxy::Script::Actions::RunScript: 'kind' must be a "
     "string naming a task kind, found a number (known: hello)"},
    {"{\"operation\":\"script\",\"input\":{\"" TASK_A "\":{\"action_input\":{\"kind\":\"hello\","
     "\"input\":[1]}}}}",
     "'input." TASK_A ".action_input' for Proxy::Script::Actions::RunScript: 'input' of a "
     "'hello' task must be an object, found an array"},
    {"{\"operation\":\"ssh\",\"input\":{\"" TASK_A "\":{\"action_input\":{\"hostname\":5,"
     "\"script\":\"true\"}}}}",
     "'input." TASK_A ".action_input' for Proxy::RemoteExecution::Ssh::Actions::RunScript: "
     "'hostname' must be a non-empty string, found a number"},
    {"{\"operation\":\"test_batch\",\"input\":{\"" TASK_A "\":{\"action_input\":{\"text\":\"a\","
     "\"callback\":\"later\"}}}}",
     "'input." TASK_A ".action_input.callback' must be an object with Foreman's task_id and "
     "step_id, found a string"},
    {"{\"operation\":\"test_batch\",\"input\":{\"" TASK_A "\":{\"action_input\":{\"text\":\"a\"}},"
     "\"" TASK_B "\":{\"action_input\":[]}}}",
     "'input." TASK_B ".action_input' must be an object, found an array"},
    {"{\"operation\":\"test_batch\",\"input\":{\"" TASK_A "\":{\"action_class\":\"No::Such\","
     "\"action_input\":{}}}}",
     "'input." TASK_A ".action_class': unknown action class 'No::Such'"},
    {"{\"operation\":\"test_batch\",\"input\":{\"" TASK_A "\":{\"action_class\":[],"
     "\"action_input\":{}}}}",
     "'input." TASK_A ".action_class' must be a string naming an action class, found an array"},
    {"{\"operation\":\"test_batch\",\"input\":{\"not-a-uuid\":{\"action_input\":{}}}}",
     "'input' must map task UUIDs to objects: 'not-a-uuid' is not a UUID"},
    {"{\"operation\":\"single\",\"input\":{\"action_class\":\"Test::Echo\",\"action_input\":7}}",
     "'input.action_input' must be an object, found a number"},
    {"{\"operation\":\"single\",\"input\":{\"action_input\":{}}}",
     "'input.action_class' must be a string naming an action class, found nothing"},
};

START_TEST(wrong_types_create_nothing)
{
    for (size_t i = 0; i < sizeof(wrong_types) / sizeof(wrong_types[0]); i++) {
        struct reply r = launch(wrong_types[i].body);
        ck_assert_msg(r.status == 422, "%s: %ld %s", wrong_types[i].body, r.status, r.body);
        ck_assert_str_eq(field(&r, "error"), wrong_types[i].error);
    }
    struct reply r =
        call("POST", "/dynflow/tasks",
             "{\"action_name\":\"Test::Echo\",\"action_input\":{\"callback\":[]}}", NULL);
    ck_assert_int_eq(r.status, 422);
    ck_assert_str_eq(field(&r, "error"), "'action_input.callback' must be an object with "
                                         "Foreman's task_id and step_id, found an array");
    ck_assert_int_eq(task_count(), 0);
}
END_TEST

/* ---- retried launches ----------------------------------------------------------------------- */

static const char *batch_of(const char *a_text, const char *b_key, const char *password)
{
    static char body[1024];

    snprintf(body, sizeof(body),
             "{\"operation\":\"test_batch\",\"input\":{"
             "\"" TASK_A "\":{\"action_input\":{\"text\":\"%s\",\"secrets\":{\"ssh_password\":"
             "\"%s\"}}},\"%s\":{\"action_input\":{\"text\":\"b\"}}}}",
             a_text, password, b_key);
    return body;
}

static const char *parent_of(const struct reply *r)
{
    static char id[64];
    json_t *j = json_loads(r->body, 0, NULL);
    json_t *parent = json_object_get(j, "parent");

    ck_assert_msg(r->status == 200, "%ld %s", r->status, r->body);
    ck_assert_str_eq(json_string_value(json_object_get(parent, "result")), "success");
    snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(parent, "task_id")));
    ck_assert_uint_eq(json_object_size(j), 1);
    ck_assert_uint_eq(json_object_size(parent), 2);
    json_decref(j);
    return id;
}

static bool exists(const char *id)
{
    char path[128];

    snprintf(path, sizeof(path), "/dynflow/tasks/%s/status", id);
    return call("GET", path, NULL, NULL).status == 200;
}

START_TEST(retried_launch_answers_with_its_parent)
{
    char parent[64];
    struct reply r;

    r = launch(batch_of("a", TASK_B, "pw1"));
    snprintf(parent, sizeof(parent), "%s", parent_of(&r));
    /* at once (the parent may still be creating its tasks), and once they exist */
    r = launch(batch_of("a", TASK_B, "pw1"));
    ck_assert_str_eq(parent_of(&r), parent);
    ck_assert(WAIT_UNTIL(exists(TASK_A) && exists(TASK_B), 10));
    r = launch(batch_of("a", TASK_B, "pw2")); /* secrets are not compared */
    ck_assert_str_eq(parent_of(&r), parent);

    r = launch(batch_of("changed", TASK_B, "pw1"));
    ck_assert_int_eq(r.status, 409);
    ck_assert_str_eq(field(&r, "error"), "task " TASK_A " was launched already with another input");
    r = launch(batch_of("a", TASK_C, "pw1"));
    ck_assert_int_eq(r.status, 409);
    ck_assert_msg(strstr(field(&r, "error"), "task " TASK_C " was not") != NULL, "%s", r.body);
    ck_assert(!exists(TASK_C));
    ck_assert_int_eq(task_count(), 3); /* the parent and its two tasks */
}
END_TEST

/* ---- secrets -------------------------------------------------------------------------------- */

/* Whether a file (missing: no) holds needle anywhere, binary or not. */
static bool file_holds(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    size_t cap = 1 << 20, len = 0, n;
    char *buf = malloc(cap);
    bool found;

    while (f != NULL && (n = fread(buf + len, 1, cap - len, f)) > 0)
        if ((len += n) == cap)
            buf = realloc(buf, cap *= 2);
    if (f != NULL)
        fclose(f);
    found = memmem(buf, len, needle, strlen(needle)) != NULL;
    free(buf);
    return found;
}

static void expect_no_canary(const struct reply *r, const char *what)
{
    ck_assert_msg(strstr(r->body, "CANARY") == NULL, "%s: %s", what, r->body);
}

/* A request whose reply must not show a canary; its status. */
static long clean(const char *method, const char *path, const char *body)
{
    struct reply r = call(method, path, body, NULL);

    expect_no_canary(&r, path);
    return r.status;
}

START_TEST(secrets_in_any_shape_stay_in_memory)
{
    char path[128], wal[700];
    struct reply r;

    /* a secrets value that is not an object is refused, and says only what it is */
    ck_assert_int_eq(clean("POST", "/dynflow/tasks/launch",
                           "{\"operation\":\"test_batch\",\"input\":{\"" TASK_A "\":{"
                           "\"action_input\":{\"secrets\":\"CANARY-string\"}}}}"),
                     422);
    ck_assert_int_eq(clean("POST", "/dynflow/tasks/launch",
                           "{\"operation\":\"single\",\"input\":{\"action_class\":\"Test::Echo\","
                           "\"action_input\":{\"secrets\":[\"CANARY-array\"]}}}"),
                     422);
    ck_assert_int_eq(clean("POST", "/dynflow/tasks",
                           "{\"action_name\":\"Test::Echo\",\"action_input\":{\"secrets\":"
                           "\"CANARY-trigger\"}}"),
                     422);
    /* the known secret keys are redacted wherever they are */
    r = launch("{\"operation\":\"test_batch\",\"input\":{\"" TASK_A "\":{\"action_input\":{"
               "\"text\":\"visible\",\"effective_user_password\":\"CANARY-top\","
               "\"connection_options\":{\"ssh_password\":\"CANARY-nested\"},"
               "\"hosts\":[{\"ansible_become_password\":\"CANARY-in-array\"}],"
               "\"secrets\":{\"key_passphrase\":\"CANARY-object\",\"ssh_password\":null}}}}}");
    expect_no_canary(&r, "launch");
    ck_assert_int_eq(r.status, 200);
    r = call("POST", "/dynflow/tasks",
             "{\"action_name\":\"Test::Echo\",\"action_input\":{\"text\":\"t\","
             "\"ansible_password\":\"CANARY-trigger-top\"}}",
             NULL);
    expect_no_canary(&r, "trigger");
    ck_assert_int_eq(r.status, 200);
    ck_assert(WAIT_UNTIL(exists(TASK_A), 10));
    snprintf(path, sizeof(path), "/dynflow/tasks/%s/status", TASK_A);
    ck_assert(WAIT_UNTIL(strstr(call("GET", path, NULL, NULL).body, "\"stopped\"") != NULL, 10));
    r = call("GET", path, NULL, NULL);
    expect_no_canary(&r, path);
    ck_assert_ptr_nonnull(strstr(r.body, "\"effective_user_password\":\"[REDACTED]\""));
    ck_assert_ptr_nonnull(strstr(r.body, "\"ssh_password\":null"));
    ck_assert_int_eq(clean("POST", "/dynflow/tasks/statuses", "{\"task_ids\":[\"" TASK_A "\"]}"),
                     200);
    ck_assert_int_eq(clean("POST", "/dynflow/tasks/status", "{\"task_ids\":[\"" TASK_A "\"]}"),
                     200);
    ck_assert_int_eq(clean("GET", "/dynflow/console?state=all", NULL), 200);
    snprintf(path, sizeof(path), "/dynflow/console/%s", TASK_A);
    ck_assert_int_eq(clean("GET", path, NULL), 200);

    stop_daemon();
    snprintf(wal, sizeof(wal), "%s-wal", db_path);
    ck_assert(file_holds(db_path, "visible") || file_holds(wal, "visible")); /* it was stored */
    ck_assert(!file_holds(db_path, "CANARY") && !file_holds(wal, "CANARY"));
    ck_assert(!file_holds(log_path, "CANARY"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("input");
    TCase *tc = tcase_create("launch");
    int failed;

    curl_global_init(CURL_GLOBAL_ALL);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, wrong_types_create_nothing);
    tcase_add_test(tc, retried_launch_answers_with_its_parent);
    tcase_add_test(tc, secrets_in_any_shape_stay_in_memory);
    suite_add_tcase(s, tc);
    failed = run_suite(s);
    curl_global_cleanup();
    return failed;
}
