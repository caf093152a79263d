/*
 * End to end through a running smart-proxyd: plugins loaded from
 * :plugin_directory: (and broken ones refused), their operations and
 * features advertised, POST /dynflow/tasks/launch for single and batch
 * operations, runners polled by status requests, cancel, and the callbacks
 * reaching a fake Foreman over HTTPS with a client certificate.
 */
#include <signal.h>
#include <sys/stat.h>

#include "daemonutil.h"
#include "foreman.h"
#include "httputil.h"

static pid_t daemon_pid;
static int daemon_out;
static char log_path[600];

/* Copies a built plugin into the scratch plugin directory (the loader refuses symlinks). */
static void install_plugin(const char *from, const char *name)
{
    char cmd[2048];

    snprintf(cmd, sizeof(cmd), "cp %s/%s.so %s/plugins/", from, name, workdir);
    ck_assert_int_eq(system(cmd), 0);
}

static void setup(void)
{
    char settings[4096], dynflow[1024], sub[600];

    scratch_new(workdir, sizeof(workdir), "launch");
    snprintf(log_path, sizeof(log_path), "%s/proxy.log", workdir);
    scratch_certs(workdir);
    foreman_start(workdir);
    snprintf(sub, sizeof(sub), "%s/settings.d", workdir);
    mkdir(sub, 0700);
    snprintf(sub, sizeof(sub), "%s/plugins", workdir);
    mkdir(sub, 0700);
    install_plugin(getenv("PLUGIN_FIXTURES"), "testplug");
    install_plugin(getenv("PLUGIN_FIXTURES"), "oldplug");
    install_plugin(getenv("PLUGIN_FIXTURES"), "notaplug");
    install_plugin(getenv("SCRIPT_PLUGIN_DIR"), "script");
    port = free_port();
    snprintf(settings, sizeof(settings),
             ":http_port: %u\n:bind_host: 127.0.0.1\n:module_directory: %s\n"
             ":foreman_url: https://localhost:%u\n:foreman_ssl_cert: %s/client.pem\n"
             ":foreman_ssl_key: %s/client.key\n:foreman_ssl_ca: %s/ca.pem\n:log_file: %s\n",
             port, getenv("DYNFLOW_MODULE_DIR"), foreman_port, workdir, workdir, workdir, log_path);
    scratch_write(workdir, "settings.yml", settings);
    /* output comes with the exit status or when a status request asks, never by the clock */
    snprintf(dynflow, sizeof(dynflow),
             ":enabled: true\n:plugin_directory: %s/plugins\n:runner_refresh_interval: 3600\n",
             workdir);
    scratch_write(workdir, "settings.d/dynflow.yml", dynflow);
    scratch_write(workdir, "settings.d/testplug.yml", ":enabled: true\n");
    scratch_write(workdir, "settings.d/script.yml",
                  ":enabled: true\n:tasks:\n  - :kind: hello\n    :shell: true\n"
                  "    :command: 'echo \"hello $INPUT_WHO\"; exit \"${INPUT_CODE:-0}\"'\n");
    daemon_pid = start(NULL, &daemon_out);
    ck_assert_msg(file_has(log_path, "listening on"), "smart-proxyd did not start: %s",
                  read_until(daemon_out, "\n\n"));
}

static void teardown(void)
{
    kill(daemon_pid, SIGTERM);
    finish(daemon_pid);
    close(daemon_out);
    foreman_stop();
    scratch_remove(workdir);
}

/* New reference: a reply's body as JSON. */
static json_t *body_json(const struct reply *r)
{
    json_t *j = json_loads(r->body, 0, NULL);

    ck_assert_msg(j != NULL, "not JSON (%ld): %s", r->status, r->body);
    return j;
}

/* New reference: GET /dynflow/tasks/:id/status once the plan is stopped. */
static json_t *stopped_status(const char *id)
{
    char path[128];

    snprintf(path, sizeof(path), "/dynflow/tasks/%s/status", id);
    for (int i = 0; i < 2000; i++) {
        struct reply r = call("GET", path, NULL, NULL);
        if (r.status == 200) {
            json_t *j = body_json(&r);
            if (strcmp(json_string_value(json_object_get(j, "state")), "stopped") == 0)
                return j;
            json_decref(j);
        }
        usleep(10000);
    }
    ck_abort_msg("task %s did not stop", id);
    return NULL;
}

/* The task stops with this result. */
static void expect_result(const char *id, const char *result)
{
    json_t *status = stopped_status(id);

    ck_assert_str_eq(json_string_value(json_object_get(status, "result")), result);
    json_decref(status);
}

/* Foreman received n callback requests (within 20 s), and no more. */
static void wait_callbacks(int n)
{
    for (int i = 0; i < 2000 && atomic_load(&received) < n; i++)
        usleep(10000);
    ck_assert_int_eq(atomic_load(&received), n);
}

static json_t *entry_output(json_t *status)
{
    return json_object_get(json_array_get(json_object_get(status, "actions"), 0), "output");
}

START_TEST(plugins_are_loaded_and_advertised)
{
    struct reply r = call("GET", "/features", NULL, NULL);

    ck_assert_str_eq(r.body, "[\"dynflow\",\"testplug_feature\"]");
    r = call("GET", "/version", NULL, NULL);
    ck_assert_msg(strstr(r.body, "\"modules\":{\"dynflow\":\"0.1.0\",\"testplug_feature\":"
                                 "\"1.2.3\"}") != NULL,
                  "%s", r.body);
    r = call("GET", "/dynflow/tasks/operations", NULL, NULL);
    ck_assert_str_eq(r.body, "[\"single\",\"script\",\"test_batch\",\"test_group\"]");
    r = call("GET", "/v2/features", NULL, NULL);
    ck_assert_msg(
        strstr(r.body, "\"capabilities\":[\"script\",\"single\",\"test_batch\",\"test_group\"]") !=
            NULL,
        "%s", r.body);
    ck_assert_msg(strstr(r.body, "\"testplug_feature\":{\"http_enabled\":true,\"https_enabled\":"
                                 "false,\"settings\":{},\"state\":\"running\"") != NULL,
                  "%s", r.body);
    ck_assert(file_has(log_path, "plugin 'testplug' 1.2.3 loaded from"));
    r = call("GET", "/testplug/hello", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"hello\":\"plugin\"}");
    ck_assert(file_has(log_path, "/oldplug.so: dynflow plugin ABI 0.1, this release supports "
                                 "1.0-1.1"));
    ck_assert(file_has(log_path, "/notaplug.so: not a dynflow plugin or from an incompatible "
                                 "release (magic 12345678, expected 44465031)"));
}
END_TEST

START_TEST(launch_single)
{
    struct reply r = call("POST", "/dynflow/tasks/launch",
                          "{\"operation\":\"single\",\"input\":{\"action_class\":\"Test::Trivial\","
                          "\"action_input\":{\"a\":1}}}",
                          NULL);
    json_t *status;

    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(field(&r, "result"), "success");
    status = stopped_status(field(&r, "task_id"));
    ck_assert_str_eq(json_string_value(json_object_get(status, "result")), "success");
    ck_assert(json_is_true(json_object_get(entry_output(status), "ok")));
    json_decref(status);

    r = call("POST", "/dynflow/tasks/launch",
             "{\"operation\":\"single\",\"input\":{\"action_class\":\"No::Such\"}}", NULL);
    ck_assert_int_eq(r.status, 422);
    ck_assert_ptr_nonnull(strstr(r.body, "No::Such"));
}
END_TEST

#define TASK_A "11111111-1111-4111-8111-111111111111"
#define TASK_B "22222222-2222-4222-8222-222222222222"

START_TEST(batch_launch_calls_foreman_back)
{
    struct reply r = call(
        "POST", "/dynflow/tasks/launch",
        "{\"operation\":\"test_batch\",\"input\":{"
        "\"" TASK_A "\":{\"action_input\":{\"text\":\"hello A\",\"callback\":{\"task_id\":\"fa\","
        "\"step_id\":3}}},"
        "\"" TASK_B "\":{\"action_input\":{\"text\":\"hello B\",\"exit\":3,\"callback\":{"
        "\"task_id\":\"fb\",\"step_id\":3}}}}}",
        NULL);
    json_t *body = body_json(&r), *a, *b;

    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(body, "parent"), "result")),
                     "success");
    json_decref(body);
    wait_callbacks(2);
    a = callback_for("fa");
    b = callback_for("fb");
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_msg(strncmp(bodies[0], "{\"callback\":{\"task_id\":", 23) == 0, "%s", bodies[0]);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(a, "callback"), "step_id")),
                     3);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(a, "data"), "exit_status")),
                     0);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(b, "data"), "exit_status")),
                     3);
    ck_assert_str_eq(
        json_string_value(json_object_get(
            json_array_get(json_object_get(json_object_get(a, "data"), "result"), 0), "output")),
        "hello A");
    ck_assert_str_eq(client_cns[0], "foreman.example.com");
    json_decref(a);
    json_decref(b);

    /* the children have the keys as their ids; B failed in finalize after calling back */
    expect_result(TASK_A, "success");
    expect_result(TASK_B, "error");
}
END_TEST

/* One runner for every host; one callback to Foreman with every host's result (§6.5, §7.2). */
START_TEST(group_launch_calls_foreman_back_once)
{
    struct reply r =
        call("POST", "/dynflow/tasks/launch",
             "{\"operation\":\"test_group\",\"input\":{"
             "\"" TASK_A "\":{\"action_input\":{\"text\":\"A\",\"callback\":{\"task_id\":\"fa\","
             "\"step_id\":3}}},"
             "\"" TASK_B "\":{\"action_input\":{\"text\":\"B\",\"exit\":2,\"callback\":{"
             "\"task_id\":\"fb\",\"step_id\":3}}}}}",
             NULL);
    json_t *body = body_json(&r), *callbacks, *a, *b;

    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(body, "parent"), "result")),
                     "success");
    json_decref(body);
    expect_result(TASK_A, "success");
    expect_result(TASK_B, "error");
    wait_callbacks(1);
    body = json_loads(bodies[0], 0, NULL);
    callbacks = json_object_get(body, "callbacks");
    ck_assert_uint_eq(json_array_size(callbacks), 2);
    a = json_object_get(json_array_get(callbacks, 0), "data");
    b = json_object_get(json_array_get(callbacks, 1), "data");
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(json_array_get(callbacks, 0), "callback"), "task_id")),
                     "fa");
    ck_assert_int_eq(json_integer_value(json_object_get(a, "exit_status")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(b, "exit_status")), 2);
    ck_assert_str_eq(json_string_value(json_object_get(a, "runner_id")),
                     json_string_value(json_object_get(b, "runner_id")));
    ck_assert_ptr_nonnull(strstr(bodies[0], "\"output\":\"hello A\""));
    ck_assert_ptr_nonnull(strstr(bodies[0], "\"output\":\"hello B\""));
    ck_assert_ptr_nonnull(strstr(bodies[0], "\"output\":\"done\""));
    json_decref(body);
}
END_TEST

/* The script plugin end to end: a batch of two commands, both callbacks at Foreman. */
START_TEST(script_tasks_call_foreman_back)
{
    struct reply r =
        call("POST", "/dynflow/tasks/launch",
             "{\"operation\":\"script\",\"input\":{"
             "\"" TASK_A "\":{\"action_input\":{\"kind\":\"hello\",\"input\":{\"who\":\"A\"},"
             "\"callback\":{\"task_id\":\"fa\",\"step_id\":3}}},"
             "\"" TASK_B "\":{\"action_input\":{\"kind\":\"hello\",\"input\":{\"who\":\"B\","
             "\"code\":4},\"callback\":{\"task_id\":\"fb\",\"step_id\":3}}}}}",
             NULL);
    json_t *ca, *cb, *a, *b;

    ck_assert_int_eq(r.status, 200);
    wait_callbacks(2);
    ca = callback_for("fa");
    cb = callback_for("fb");
    a = json_object_get(ca, "data");
    b = json_object_get(cb, "data");
    ck_assert_int_eq(json_integer_value(json_object_get(a, "exit_status")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(b, "exit_status")), 4);
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(a, "result"), 0), "output")),
                     "hello A\n");
    json_decref(ca);
    json_decref(cb);
    expect_result(TASK_B, "error");
}
END_TEST

/* GET status polls a running runner: its output shows before it ends; cancel kills it. */
START_TEST(status_polls_running_runners)
{
    struct reply r = call("POST", "/dynflow/tasks/launch",
                          "{\"operation\":\"single\",\"input\":{\"action_class\":\"Test::Echo\","
                          "\"action_input\":{\"text\":\"partial\",\"stay\":true}}}",
                          NULL);
    char id[64], path[160];
    bool seen = false;
    json_t *status;

    ck_assert_int_eq(r.status, 200);
    snprintf(id, sizeof(id), "%.36s", field(&r, "task_id"));
    snprintf(path, sizeof(path), "/dynflow/tasks/%s/status", id);
    for (int i = 0; i < 1000 && !seen; i++) {
        r = call("GET", path, NULL, NULL);
        seen = strstr(r.body, "\"output\":\"partial\"") != NULL;
        if (!seen)
            usleep(10000);
    }
    ck_assert_msg(seen, "%s", r.body);
    ck_assert_str_eq(field(&r, "state"), "running");
    snprintf(path, sizeof(path), "/dynflow/tasks/%s/cancel", id);
    r = call("POST", path, "", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"canceled_steps_count\":1"));
    status = stopped_status(id);
    ck_assert_int_eq(json_integer_value(json_object_get(entry_output(status), "exit_status")), 143);
    json_decref(status);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("launch");
    TCase *tc = tcase_create("launch");
    int failed;

    curl_global_init(CURL_GLOBAL_ALL);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, plugins_are_loaded_and_advertised);
    tcase_add_test(tc, launch_single);
    tcase_add_test(tc, batch_launch_calls_foreman_back);
    tcase_add_test(tc, group_launch_calls_foreman_back_once);
    tcase_add_test(tc, script_tasks_call_foreman_back);
    tcase_add_test(tc, status_polls_running_runners);
    suite_add_tcase(s, tc);
    failed = run_suite(s);
    curl_global_cleanup();
    return failed;
}
