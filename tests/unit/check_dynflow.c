/*
 * dynflow.so over HTTP: the module is loaded by the proxy's loader, mounted
 * under /dynflow on a loopback listener and driven with libcurl
 * (reference/protocol.md §2.1, §11 api_test).
 */
#include <check.h>
#include <stdlib.h>
#include <unistd.h>

#include "httputil.h"
#include "proxy/http.h"
#include "proxy/module_loader.h"
#include "suite.h"

#define TASK "00000000-0000-4000-8000-000000000002"

static struct sp_server *srv;
static struct sp_loaded_module lm;
static void *state;

static void setup(void)
{
    char path[600], why[512];
    struct sp_error err;
    struct sp_mount mount;
    json_t *settings = json_pack("{s:b}", "enabled", 1);

    snprintf(path, sizeof(path), "%s/dynflow.so", getenv("DYNFLOW_MODULE_DIR"));
    ck_assert_msg(sp_module_open(path, &lm, &err) == 0, "%s", err.text);
    ck_assert_msg(lm.m->init(NULL, settings, &state, why, sizeof(why)) == 0, "%s", why);
    json_decref(settings);
    mount = (struct sp_mount){"/dynflow", lm.m->routes(state), state, 1};
    srv = sp_server_new(1 << 20, NULL);
    sp_server_mount(srv, &mount, 1);
    ck_assert_msg(sp_server_listen(srv, "127.0.0.1", 0, NULL, &port, &err) == 0, "%s", err.text);
}

static void teardown(void)
{
    sp_server_free(srv);
    lm.m->shutdown(state);
    sp_module_close(&lm);
}

START_TEST(operations_and_count)
{
    struct reply r = call("GET", "/dynflow/tasks/operations", NULL, NULL);

    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "[\"single\"]");
    r = call("GET", "/dynflow/tasks/count", NULL, NULL);
    ck_assert_str_eq(r.body, "{\"count\":0,\"state\":\"all\"}");
    r = call("GET", "/dynflow/tasks/count?state=stopped", NULL, NULL);
    ck_assert_str_eq(r.body, "{\"count\":0,\"state\":\"stopped\"}");
    r = call("GET", "/dynflow/tasks/count?state=bogus", NULL, NULL);
    ck_assert_str_eq(r.body, "{\"count\":0,\"state\":\"bogus\"}");
}
END_TEST

/* Bad input gets a 4xx with {"error": …} and changes nothing. */
START_TEST(bad_input)
{
    static const struct {
        const char *method, *path, *body;
        long status;
        const char *error;
    } cases[] = {
        {"POST", "/dynflow/tasks/launch", "{\"operation\":\"nope\",\"input\":{}}", 404,
         "Unknown operation 'nope' requested."},
        {"POST", "/dynflow/tasks/launch", "{\"input\":{}}", 422,
         "'operation' must be a string naming an operation"},
        {"POST", "/dynflow/tasks/launch", "{\"operation\":\"single\"}", 422,
         "'input' must be a JSON object"},
        {"POST", "/dynflow/tasks/launch", "[1,2]", 400, "the request body must be a JSON object"},
        {"POST", "/dynflow/tasks/launch", "{\"operation\":", 400, NULL},
        {"POST", "/dynflow/tasks/launch",
         "{\"operation\":\"single\",\"input\":{\"action_class\":\"Nope\"}}", 422,
         "'input.action_class': unknown action class 'Nope'"},
        {"POST", "/dynflow/tasks", "{\"action_input\":{}}", 422,
         "'action_name' must be a string and 'action_input' an object"},
        {"POST", "/dynflow/tasks/statuses", "{}", 422,
         "'task_ids' needs to be provided and be a non-empty array of task UUIDs"},
        {"POST", "/dynflow/tasks/statuses", "{\"task_ids\":[]}", 422,
         "'task_ids' needs to be provided and be a non-empty array of task UUIDs"},
        {"POST", "/dynflow/tasks/status", "{\"task_ids\":[1]}", 422,
         "'task_ids' must hold strings; item 0 does not"},
        {"GET", "/dynflow/tasks/00000000-0000-4000-8000-000000000001/status", NULL, 404,
         "Task 00000000-0000-4000-8000-000000000001 not found"},
        {"POST", "/dynflow/tasks/garbage/cancel", "", 404,
         "no route for POST /dynflow/tasks/garbage/cancel: 'garbage' is not a task id (a UUID)"},
        {"POST", "/dynflow/tasks/00000000-0000-4000-8000-000000000001/cancel", "", 404,
         "Task 00000000-0000-4000-8000-000000000001 not found"},
        {"POST", "/dynflow/tasks/00000000-0000-4000-8000-000000000001/done", "{\"step_id\":\"x\"}",
         422, "'step_id' must be a step number"},
        {"DELETE", "/dynflow/tasks/count", NULL, 405, NULL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct reply r = call(cases[i].method, cases[i].path, cases[i].body, NULL);
        ck_assert_msg(r.status == cases[i].status, "%s %s: %ld %s", cases[i].method, cases[i].path,
                      r.status, r.body);
        if (cases[i].error != NULL)
            ck_assert_str_eq(field(&r, "error"), cases[i].error);
        else
            ck_assert_str_ne(field(&r, "error"), "(null)");
    }
    ck_assert_str_eq(call("GET", "/dynflow/tasks/count", NULL, NULL).body,
                     "{\"count\":0,\"state\":\"all\"}");
}
END_TEST

/* A batch whose only child cannot be planned: the parent ends stopped/error. */
START_TEST(launch_status_statuses)
{
    static const char child[] = "11111111-1111-4111-8111-111111111111";
    char body[512], path[128], ids[128];
    struct reply r;
    json_t *j;
    const char *id;

    snprintf(body, sizeof(body),
             "{\"operation\":\"single\",\"input\":{\"action_class\":"
             "\"Proxy::Dynflow::Action::Batch\",\"action_input\":{\"input_hash\":{\"%s\":"
             "{\"action_class\":\"Missing\",\"action_input\":{\"note\":\"<b>bold</b>\","
             "\"secrets\":{\"pw\":\"s3cr3t\"}}}},"
             "\"launcher\":{\"callback\":\"http://proxy\"}}}}",
             child);
    r = call("POST", "/dynflow/tasks/launch", body, "Host: proxy.example.com:9090");
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(field(&r, "result"), "success");
    j = json_loads(r.body, 0, NULL);
    id = json_string_value(json_object_get(j, "task_id"));
    snprintf(path, sizeof(path), "/dynflow/tasks/%s/status", id);
    for (int i = 0; i < 2000; i++) {
        r = call("GET", path, NULL, NULL);
        if (strcmp(field(&r, "state"), "stopped") == 0)
            break;
        usleep(5000);
    }
    ck_assert_str_eq(field(&r, "state"), "stopped");
    ck_assert_str_eq(field(&r, "result"), "error");
    ck_assert_ptr_null(strstr(r.body, "s3cr3t"));
    ck_assert_ptr_nonnull(strstr(r.body, "\"callback_host\":\"http://proxy.example.com:9090\""));
    snprintf(ids, sizeof(ids), "{\"task_ids\":[\"%s\",\"%s\"]}", id, child);
    r = call("POST", "/dynflow/tasks/statuses", ids, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"label\":\"Proxy::Dynflow::Action::Batch\""));
    r = call("POST", "/dynflow/tasks/status", ids, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"state\":\"stopped\",\"result\":\"error\""));
    /* the console shows it, every value escaped */
    snprintf(path, sizeof(path), "/dynflow/console/%s", id);
    r = call("GET", path, NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "Proxy::Dynflow::Action::Batch"));
    ck_assert_ptr_nonnull(strstr(r.body, "&lt;b&gt;bold&lt;/b&gt;"));
    ck_assert_ptr_null(strstr(r.body, "<b>bold</b>"));
    ck_assert_ptr_null(strstr(r.body, "s3cr3t"));
    r = call("GET", "/dynflow/console?state=all", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, id));
    r = call("GET", "/dynflow/console/00000000-0000-4000-8000-000000000009", NULL, NULL);
    ck_assert_int_eq(r.status, 404);
    snprintf(path, sizeof(path), "/dynflow/console/%s/resume", id);
    r = call("POST", path, "", NULL);
    ck_assert_int_eq(r.status, 303); /* back to the plan, which says it cannot be resumed */
    snprintf(path, sizeof(path), "/dynflow/tasks/%s/cancel", id);
    r = call("POST", path, "", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(strstr(r.body, "\"canceled_steps_count\":0") != NULL, 1);
    json_decref(j);
}
END_TEST

/* A %00 in a task's path used to cut it: POST /dynflow/tasks/%00/cancel with a trigger body ran
 * POST /dynflow/tasks and created a task.  Paths and queries that are not text create nothing. */
START_TEST(paths_that_are_not_text)
{
    static const char *const paths[] = {"/dynflow/tasks/%00/cancel", "/dynflow/tasks%00/x",
                                        "/dynflow/tasks%2F", "/dynflow/tasks/%ff/cancel"};
    static const char trigger[] = "{\"action_name\":\"Proxy::Dynflow::Action::Batch\","
                                  "\"action_input\":{\"input_hash\":{}}}";
    struct reply r;

    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        r = call("POST", paths[i], trigger, NULL);
        ck_assert_msg(r.status == 400, "%s: %ld %s", paths[i], r.status, r.body);
        ck_assert_ptr_nonnull(strstr(field(&r, "error"), "is refused: path segment"));
    }
    r = call("GET", "/dynflow/tasks/count?state=%ff", NULL, NULL);
    ck_assert_int_eq(r.status, 400);
    ck_assert_str_eq(field(&r, "error"), "query argument 1 ('state') is not UTF-8 text without "
                                         "NUL bytes once percent-decoded");
    r = call("GET", "/dynflow/tasks/count", NULL, NULL);
    ck_assert_str_eq(r.body, "{\"count\":0,\"state\":\"all\"}");
    r = call("POST", "/dynflow/tasks", trigger, NULL); /* the body itself is fine */
    ck_assert_int_eq(r.status, 200);
}
END_TEST

START_TEST(update_and_done_tokens)
{
    struct reply r;

    /* no token issued: any Authorization is refused */
    r = call("POST", "/dynflow/tasks/" TASK "/update", "{\"step_id\":2}",
             "Authorization: Basic YWJjOjEyMw==");
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(field(&r, "error"), "Invalid username or password supplied");
    r = call("POST", "/dynflow/tasks/" TASK "/done", "{\"step_id\":2}", "Authorization: Bearer x");
    ck_assert_int_eq(r.status, 403);
    /* without a token the event is accepted, as upstream (the host checked the client) */
    r = call("POST", "/dynflow/tasks/" TASK "/done", "{\"step_id\":\"15\"}", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dynflow");
    TCase *tc = tcase_create("api");
    int failed;

    curl_global_init(CURL_GLOBAL_ALL);
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, operations_and_count);
    tcase_add_test(tc, bad_input);
    tcase_add_test(tc, launch_status_statuses);
    tcase_add_test(tc, update_and_done_tokens);
    tcase_add_test(tc, paths_that_are_not_text);
    suite_add_tcase(s, tc);
    failed = run_suite(s);
    curl_global_cleanup();
    return failed;
}
