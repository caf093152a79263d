/*
 * The task API in-process with test action classes (reference/protocol.md
 * §11: api_test, helpers_test OTP sequence, task_launcher_test).
 */
#include "api/api.h"
#include "api/claims.h"
#include "testutil.h"

static df_world *w;
static df_api *api;

static int echo_run(df_action *a, const df_event *ev)
{
    (void)ev;
    json_object_update(df_action_output(a), df_action_input(a));
    return 0;
}

/* Suspends until any event; cancellable. */
static int wait_run(df_action *a, const df_event *ev)
{
    if (ev == NULL) {
        df_action_suspend(a);
        return 0;
    }
    json_object_set(df_action_output(a), "event", ev->data ? ev->data : json_null());
    return 0;
}

static const struct df_action_class classes[] = {
    {.name = "Test::Echo", .run = echo_run},
    {.name = "Test::Wait", .run = wait_run, .flags = DF_ACTION_CANCELLABLE},
};

static void setup(void)
{
    df_error err;

    w = df_world_new(NULL, &err);
    ck_assert_int_eq(df_api_register_classes(w, &err), 0);
    for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
        ck_assert_int_eq(df_world_register(w, &classes[i], &err), 0);
    ck_assert_int_eq(df_world_start(w, &err), 0);
    api = df_api_new(w);
    ck_assert_int_eq(
        df_api_register_operation(
            api, &(struct df_plugin_operation){"single", DF_LAUNCH_SINGLE, NULL}, &err),
        0);
    ck_assert_int_eq(df_api_register_operation(
                         api, &(struct df_plugin_operation){"ssh", DF_LAUNCH_BATCH, NULL}, &err),
                     0);
    ck_assert_int_eq(df_api_register_operation(
                         api, &(struct df_plugin_operation){"ssh", DF_LAUNCH_BATCH, NULL}, &err),
                     -EEXIST);
}

static void teardown(void)
{
    df_world_free(w);
    df_api_free(api);
}

/* Calls handler with body; returns the response (body is a new reference). */
static struct df_api_response
call(void (*handler)(df_api *, const struct df_api_request *, struct df_api_response *),
     const char *task_id, const char *body, const char *xff, const char *auth)
{
    struct df_api_request req = {.task_id = task_id,
                                 .body = body,
                                 .body_len = body ? strlen(body) : 0,
                                 .host = "proxy:9090",
                                 .forwarded_for = xff,
                                 .authorization = auth};
    struct df_api_response res = {0};

    handler(api, &req, &res);
    if (res.stream != NULL) { /* the status routes stream their body: read it whole */
        res.body = tu_stream_json(res.stream);
        res.stream = NULL;
    }
    return res;
}

static struct df_api_response event(const char *task_id, const char *body, const char *auth,
                                    bool done)
{
    struct df_api_request req = {
        .task_id = task_id, .body = body, .body_len = strlen(body), .authorization = auth};
    struct df_api_response res = {0};

    df_api_event(api, &req, done, &res);
    return res;
}

static const char *entry_input(const char *id, const char *key)
{
    static char out[256];
    json_t *a = tu_action(w, id, 1);

    snprintf(out, sizeof(out), "%s", tu_str(json_object_get(a, "input"), key));
    json_decref(a);
    return out;
}

START_TEST(trigger_and_callback_host)
{
    struct df_api_response r =
        call(df_api_trigger, NULL, "{\"action_name\":\"Test::Echo\",\"action_input\":{\"a\":1}}",
             "somehost.example.com:9000", NULL);
    char id[DF_UUID_BUF];

    ck_assert_int_eq(r.status, 200);
    snprintf(id, sizeof(id), "%s", tu_str(r.body, "task_id"));
    json_decref(r.body);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_str_eq(entry_input(id, "callback_host"), "http://somehost.example.com:9000");

    r = call(df_api_trigger, NULL, "{\"action_name\":\"Test::Echo\",\"action_input\":{}}", NULL,
             NULL);
    snprintf(id, sizeof(id), "%s", tu_str(r.body, "task_id"));
    json_decref(r.body);
    tu_wait(w, id);
    ck_assert_str_eq(entry_input(id, "callback_host"), "http://proxy:9090");
}
END_TEST

START_TEST(launch_single_and_batch)
{
    static const char a[] = "aaaaaaaa-0000-4000-8000-000000000001",
                      b[] = "aaaaaaaa-0000-4000-8000-000000000002";
    char body[512], parent[DF_UUID_BUF];
    struct df_api_response r = call(
        df_api_launch, NULL,
        "{\"operation\":\"single\",\"input\":{\"action_class\":\"Test::Echo\",\"action_input\":"
        "{\"x\":1,\"proxy_url\":\"https://proxy.example.com:9090\"}}}",
        NULL, NULL);
    char id[DF_UUID_BUF];

    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(tu_str(r.body, "result"), "success");
    snprintf(id, sizeof(id), "%s", tu_str(r.body, "task_id"));
    json_decref(r.body);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_str_eq(entry_input(id, "callback_host"), "https://proxy.example.com:9090");

    snprintf(body, sizeof(body),
             "{\"operation\":\"ssh\",\"input\":{\"%s\":{\"action_input\":{\"n\":\"A\"},"
             "\"action_class\":\"Test::Echo\"},\"%s\":{\"action_input\":{\"n\":\"B\"},"
             "\"action_class\":\"Test::Echo\"}}}",
             a, b);
    r = call(df_api_launch, NULL, body, NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(json_object_size(r.body), 1); /* only "parent" */
    ck_assert_str_eq(tu_str(json_object_get(r.body, "parent"), "result"), "success");
    snprintf(parent, sizeof(parent), "%s", tu_str(json_object_get(r.body, "parent"), "task_id"));
    json_decref(r.body);
    tu_expect(w, parent, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    /* the children have the keys as their ids and their own input */
    tu_expect(w, a, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_str_eq(entry_input(a, "n"), "A");
    ck_assert_str_eq(entry_input(b, "n"), "B");
    ck_assert_str_eq(entry_input(b, "callback_host"), "http://proxy:9090");
}
END_TEST

START_TEST(counts_statuses_and_cancel)
{
    char ids[5][DF_UUID_BUF], body[512];
    struct df_api_response r = {0};
    json_int_t before;
    struct df_api_request q = {.state = "stopped"};
    df_api_count(api, &q, &r);
    before = json_integer_value(json_object_get(r.body, "count"));
    json_decref(r.body);
    for (int i = 0; i < 5; i++) {
        snprintf(ids[i], sizeof(ids[i]), "%s", tu_trigger(w, "Test::Echo", json_object()));
        tu_wait(w, ids[i]);
    }
    r = (struct df_api_response){0};
    df_api_count(api, &q, &r);
    ck_assert_int_eq(json_integer_value(json_object_get(r.body, "count")), before + 5);
    ck_assert_str_eq(tu_str(r.body, "state"), "stopped");
    json_decref(r.body);

    snprintf(body, sizeof(body), "{\"task_ids\":[\"%s\",\"%s\",\"%s\",\"%s\",\"%s\"]}", ids[0],
             ids[1], ids[2], ids[3], ids[4]);
    r = call(df_api_statuses, NULL, body, NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    for (int i = 0; i < 5; i++)
        ck_assert_str_eq(tu_str(json_object_get(r.body, ids[i]), "state"), "stopped");
    json_decref(r.body);

    /* cancel a suspended cancellable action: it gets the Cancel event and finishes */
    const char *waiting = tu_trigger(w, "Test::Wait", json_object());
    char wid[DF_UUID_BUF];
    snprintf(wid, sizeof(wid), "%s", waiting);
    ck_assert(WAIT_UNTIL(strcmp(tu_step_state(w, wid, 2), "suspended") == 0, 10));
    r = call(df_api_cancel, wid, "", NULL, NULL);
    ck_assert_int_eq(json_integer_value(json_object_get(r.body, "canceled_steps_count")), 1);
    json_decref(r.body);
    tu_expect(w, wid, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
}
END_TEST

/* helpers_test: update ok → wrong password → other task → done ok → the same token again. */
START_TEST(one_time_passwords)
{
    const char *id = tu_trigger(w, "Test::Wait", json_object());
    char tid[DF_UUID_BUF], otp[33], plain[128], auth[300];
    struct df_api_response r;

    snprintf(tid, sizeof(tid), "%s", id);
    ck_assert(WAIT_UNTIL(strcmp(tu_step_state(w, tid, 2), "suspended") == 0, 10));
    df_api_generate_otp(api, tid, otp);
    ck_assert_int_eq(strlen(otp), 32);
    snprintf(plain, sizeof(plain), "%s:%s", tid, otp);
    /* base64 of "task:otp", as Foreman sends it */
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(plain), o = 0;
    char enc[256];
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)plain[i] << 16 |
                     (i + 1 < n ? (unsigned char)plain[i + 1] << 8 : 0) |
                     (i + 2 < n ? (unsigned char)plain[i + 2] : 0);
        enc[o++] = tbl[v >> 18 & 63];
        enc[o++] = tbl[v >> 12 & 63];
        enc[o++] = i + 1 < n ? tbl[v >> 6 & 63] : '=';
        enc[o++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    enc[o] = '\0';
    snprintf(auth, sizeof(auth), "Basic %s", enc);

    r = event(tid, "{\"step_id\":2,\"n\":1}", auth, false); /* update */
    ck_assert_int_eq(r.status, 200);
    r = event(tid, "{\"step_id\":2}", "Basic d3Jvbmc6cGFzcw==", false);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(tu_str(r.body, "error"), "Invalid username or password supplied");
    json_decref(r.body);
    r = event("00000000-0000-4000-8000-000000000077", "{\"step_id\":2}", auth, false);
    ck_assert_int_eq(r.status, 403);
    json_decref(r.body);
    r = event(tid, "{\"step_id\":2}", auth, true);
    ck_assert_int_eq(r.status, 200);
    r = event(tid, "{\"step_id\":2}", auth, true); /* done cleared it */
    ck_assert_int_eq(r.status, 403);
    json_decref(r.body);
    tu_expect(w, tid, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
}
END_TEST

/* Claims on the task ids of a launch that the parent has not created yet (api/claims.h). */
START_TEST(claims_in_flight)
{
    json_t *input = json_pack("{s:{s:{s:s, s:{s:s}}}}", "11111111-1111-4111-8111-111111111111",
                              "action_input", "text", "a", "secrets", "ssh_password", "pw1");
    json_t *retry = json_deep_copy(input), *other = json_deep_copy(input);
    df_claims *c = df_claims_of(w);
    char parent[DF_UUID_BUF], again[DF_UUID_BUF];
    df_error err;

    json_object_set_new(
        json_object_get(json_object_get(json_object_get(retry, "11111111-1111-4111-8111-"
                                                               "111111111111"),
                                        "action_input"),
                        "secrets"),
        "ssh_password", json_string("pw2"));
    json_object_set_new(json_object_get(json_object_get(other, "11111111-1111-4111-8111-"
                                                               "111111111111"),
                                        "action_input"),
                        "text", json_string("b"));
    ck_assert_int_eq(df_claims_take(c, w, input, parent, &err), 0);
    ck_assert_uint_eq(strlen(parent), 36);
    ck_assert_int_eq(df_claims_take(c, w, retry, again, &err), 1);
    ck_assert_str_eq(again, parent);
    ck_assert_int_eq(df_claims_take(c, w, other, again, &err), -EEXIST);
    ck_assert_str_eq(err.text, "task 11111111-1111-4111-8111-111111111111 was launched already "
                               "with another input");
    /* the launch did not happen: the id is free for another input */
    df_claims_drop(c, input, parent);
    ck_assert_int_eq(df_claims_take(c, w, other, again, &err), 0);
    ck_assert_str_ne(again, parent);
    /* created (here: its creation failed): the database answers, and it has no such task */
    df_claims_created(c, "11111111-1111-4111-8111-111111111111");
    ck_assert_int_eq(df_claims_take(c, w, input, parent, &err), 0);
    df_claims_drop(c, input, parent);
    json_decref(input);
    json_decref(retry);
    json_decref(other);
}
END_TEST

/* A retry while the parent is between its tasks: one created (the database knows its parent),
 * one still claimed in flight; both name the same parent. */
START_TEST(claims_while_the_parent_creates)
{
    json_t *input = json_pack("{s:{s:s, s:{s:s}}, s:{s:s, s:{s:s}}}",
                              "22222222-2222-4222-8222-222222222222", "action_class", "Test::Echo",
                              "action_input", "text", "b", "11111111-1111-4111-8111-111111111111",
                              "action_class", "Test::Echo", "action_input", "text", "a");
    json_t *created =
        json_pack("{s:{s:O}, s:{}}", "input_hash", "11111111-1111-4111-8111-111111111111",
                  json_object_get(input, "11111111-1111-4111-8111-111111111111"), "launcher");
    df_claims *c = df_claims_of(w);
    struct df_trigger_opts opts = {0};
    char parent[DF_UUID_BUF], again[DF_UUID_BUF], id[DF_UUID_BUF];
    bool planned;
    df_error err;

    ck_assert_int_eq(df_claims_take(c, w, input, parent, &err), 0);
    /* the parent, as if it had created the second task only so far */
    opts.plan_id = parent;
    ck_assert_int_eq(
        df_trigger(w, "Proxy::Dynflow::Action::Batch", created, &opts, id, &planned, &err), 0);
    tu_expect(w, parent, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_int_eq(df_claims_take(c, w, input, again, &err), 1);
    ck_assert_str_eq(again, parent);
    df_claims_drop(c, input, parent);
    json_decref(input);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("api");

    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, trigger_and_callback_host);
    tcase_add_test(tc, launch_single_and_batch);
    tcase_add_test(tc, counts_statuses_and_cancel);
    tcase_add_test(tc, one_time_passwords);
    tcase_add_test(tc, claims_in_flight);
    tcase_add_test(tc, claims_while_the_parent_creates);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
