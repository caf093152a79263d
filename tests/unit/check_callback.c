/*
 * Callbacks to a fake Foreman that is a real HTTPS server requiring a client
 * certificate: the exact payload, retries while Foreman answers 500, the
 * history of failed attempts, and giving up (reference/protocol.md §7).
 * Delivery never holds a worker (doc/callbacks.md): with a Foreman that
 * accepts requests and answers none, plans still run and at most the
 * configured number of POSTs is on the wire; when Foreman comes back, every
 * callback arrives once and the waiting ones are retried at once.  Through a
 * real smart-proxyd with a file database: the API answers meanwhile, SIGTERM
 * stops it in time, and the callbacks queued arrive after the restart.
 */
#include <check.h>
#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "callback/callback.h"
#include "daemonutil.h"
#include "foreman.h"
#include "httputil.h"

static char certs[512];
#include "testutil.h"

static atomic_int hello_runs;

/* Shareable: the runner's output goes to Foreman through the callback action (§6.8). */
static int hello_plan(df_action *a, json_t *args)
{
    json_t *callback = json_object_get(args, "callback"), *input;
    df_action *cb;

    if (df_plan_self(a, json_pack("{s:O?}", "task_id", json_object_get(callback, "task_id"))) < 0)
        return -1;
    input = json_pack("{s:O, s:o}", "callback", callback, "data", df_output_ref(a, NULL));
    cb = df_plan_action(a, DF_CALLBACK_CLASS, input);
    json_decref(input);
    return cb != NULL ? 0 : -1;
}

static int hello_run(df_action *a, const df_event *ev)
{
    (void)ev;
    atomic_fetch_add(&hello_runs, 1);
    json_object_set_new(df_action_output(a), "result", json_string("Hello World"));
    return 0;
}

static void path_in(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", certs, name);
}

static void setup(void)
{
    scratch_new(certs, sizeof(certs), "callback");
    scratch_certs(certs);
    foreman_start(certs);
}

static void teardown(void)
{
    foreman_stop();
    scratch_remove(certs);
}

/* A world whose callbacks go to the fake Foreman with the client certificate `who`; retries
 * after 0.05 s, at most 0.2 s apart, unless retry says otherwise. */
static df_world *world_with(const char *who, const struct df_callback_config *retry,
                            df_callback **cb)
{
    static const struct df_action_class hello = {
        .name = "Test::Hello", .plan = hello_plan, .run = hello_run};
    char url[128], cert[600], key[600], ca[600];
    df_error err;
    df_world *w;

    snprintf(url, sizeof(url), "https://localhost:%u/some/sub/path", foreman_port);
    snprintf(cert, sizeof(cert), "%s/%s.pem", certs, who);
    snprintf(key, sizeof(key), "%s/%s.key", certs, who);
    path_in(ca, sizeof(ca), "ca.pem");
    *cb = df_callback_new(&(struct df_callback_config){.foreman_url = url,
                                                       .cert_file = cert,
                                                       .key_file = key,
                                                       .ca_file = ca,
                                                       .first_retry = retry->first_retry,
                                                       .max_retry = retry->max_retry,
                                                       .give_up_after = retry->give_up_after},
                          &err);
    ck_assert_msg(*cb != NULL, "%s", err.text);
    w = df_world_new(NULL, &err);
    ck_assert_msg(df_callback_register(*cb, w, &err) == 0, "%s", err.text);
    ck_assert_int_eq(df_world_register(w, &hello, &err), 0);
    ck_assert_int_eq(df_world_start(w, &err), 0);
    return w;
}

static df_world *world_for(const char *who, double give_up, df_callback **cb)
{
    return world_with(who,
                      &(struct df_callback_config){
                          .first_retry = 0.05, .max_retry = 0.2, .give_up_after = give_up},
                      cb);
}

static bool history_has(df_world *w, const char *id, const char *prefix)
{
    json_t *j = df_plan_json(w, id, 0), *e;
    size_t i;
    bool hit = false;

    json_array_foreach(json_object_get(j, "execution_history"), i, e) hit =
        hit || strncmp(tu_str(e, "name"), prefix, strlen(prefix)) == 0;
    json_decref(j);
    return hit;
}

START_TEST(delivered_after_retries)
{
    df_callback *cb;
    df_world *w = world_for("client", 0, &cb);
    const char *id;

    atomic_store(&failures_left, 2);
    id = tu_trigger(w, "Test::Hello",
                    json_pack("{s:{s:s, s:i}}", "callback", "task_id", "123", "step_id", 123));
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    ck_assert_int_eq(atomic_load(&received), 3);
    /* the exact upstream payload, key order included */
    ck_assert_str_eq(bodies[2],
                     "{\"callback\":{\"task_id\":\"123\",\"step_id\":123},\"data\":{\"result\":"
                     "\"Hello World\"}}");
    ck_assert_str_eq(client_cns[0], "foreman.example.com");
    ck_assert(
        history_has(w, id, "callback attempt 1 failed: 500 {\"error\":\"Foreman is restarting\"}"));
    ck_assert(history_has(w, id, "callback attempt 2 failed: 500"));
    df_world_free(w);
    df_callback_free(cb);
}
END_TEST

START_TEST(gives_up_and_refuses_strangers)
{
    df_callback *cb;
    df_world *w = world_for("rogue", 0.3, &cb); /* a certificate Foreman's CA did not sign */
    const char *id;
    json_t *s;

    atomic_store(&failures_left, 0);
    id = tu_trigger(w, "Test::Hello",
                    json_pack("{s:{s:s, s:i}}", "callback", "task_id", "9", "step_id", 3));
    tu_expect(w, id, DF_PLAN_PAUSED, DF_RESULT_ERROR);
    s = tu_step(w, id, 4);
    ck_assert_str_eq(tu_str(json_object_get(s, "error"), "message"),
                     "Failed performing callback to Foreman server: 403 {\"error\":\"No client "
                     "SSL certificate supplied\"}");
    json_decref(s);
    ck_assert_int_eq(atomic_load(&received), 0); /* refused before Foreman's handler */
    ck_assert(history_has(w, id, "callback attempt 2 failed: 403"));
    df_world_free(w);
    df_callback_free(cb);
}
END_TEST

/* Triggers n Test::Hello plans whose callbacks carry the Foreman task ids prefix0, prefix1, …;
 * their plan ids go to ids. */
static void trigger_hellos(df_world *w, int n, const char *prefix, char (*ids)[DF_UUID_BUF])
{
    for (int i = 0; i < n; i++) {
        char task[48];
        snprintf(task, sizeof(task), "%s%d", prefix, i);
        snprintf(
            ids[i], DF_UUID_BUF, "%s",
            tu_trigger(w, "Test::Hello",
                       json_pack("{s:{s:s, s:i}}", "callback", "task_id", task, "step_id", 1)));
    }
}

/* Each plan stopped with success, and Foreman took each one's callback exactly once. */
static void expect_delivered_once(df_world *w, int n, const char *prefix, char (*ids)[DF_UUID_BUF])
{
    for (int i = 0; i < n; i++) {
        char task[48];
        snprintf(task, sizeof(task), "%s%d", prefix, i);
        tu_expect(w, ids[i], DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
        ck_assert_msg(foreman_delivered(task) == 1, "task %s: %d callbacks", task,
                      foreman_delivered(task));
    }
}

/* Five workers, 200 plans, a Foreman that reads every request and answers none: the plans'
 * own steps all run (callbacks wait without a worker), and at most 8 POSTs (the default) are
 * on the wire.  Once Foreman answers, each callback arrives exactly once. */
START_TEST(hanging_foreman_stalls_no_plan)
{
    static char ids[200][DF_UUID_BUF];
    df_callback *cb;
    df_world *w;

    foreman_hang(true);
    w = world_for("client", 0, &cb);
    atomic_store(&hello_runs, 0);
    trigger_hellos(w, 200, "h", ids);
    ck_assert_msg(WAIT_UNTIL(atomic_load(&hello_runs) == 200, 10),
                  "only %d of 200 plans ran while Foreman hung", atomic_load(&hello_runs));
    ck_assert(WAIT_UNTIL(foreman_held_now(false) == 8, 10));
    ck_assert_int_eq(foreman_held_now(true), 8);
    foreman_hang(false);
    expect_delivered_once(w, 200, "h", ids);
    ck_assert_int_eq(atomic_load(&n_delivered), 200);
    ck_assert_int_le(foreman_held_now(true), 8);
    df_world_free(w);
    df_callback_free(cb);
}
END_TEST

/* Foreman failed the first attempt of 20 callbacks, which now wait 10 s for their next one.
 * It answers again: the first delivery that gets through (a new plan's) wakes them all,
 * instead of each waiting out its backoff. */
START_TEST(first_success_wakes_waiting_callbacks)
{
    static char ids[21][DF_UUID_BUF];
    df_callback *cb;
    df_world *w =
        world_with("client", &(struct df_callback_config){.first_retry = 10, .max_retry = 10}, &cb);
    double back;

    atomic_store(&foreman_down, true);
    trigger_hellos(w, 20, "w", ids);
    ck_assert(WAIT_UNTIL(atomic_load(&received) == 20, 10));
    atomic_store(&foreman_down, false);
    back = tu_now();
    trigger_hellos(w, 1, "probe", ids + 20);
    ck_assert(WAIT_UNTIL(atomic_load(&n_delivered) == 21, 10));
    ck_assert_msg(tu_now() - back < 5, "delivered %.2f s after Foreman came back (backoff 10 s)",
                  tu_now() - back);
    expect_delivered_once(w, 20, "w", ids);
    df_world_free(w);
    df_callback_free(cb);
}
END_TEST

/* The rule without a new plan to wake them: after Foreman has been down long enough for the
 * backoff to reach its cap, every callback arrives within the cap of Foreman answering. */
START_TEST(delivered_within_the_cap_after_an_outage)
{
    static char ids[20][DF_UUID_BUF];
    const double cap = 1;
    df_callback *cb;
    df_world *w = world_with(
        "client", &(struct df_callback_config){.first_retry = 0.1, .max_retry = cap}, &cb);
    double back;

    atomic_store(&foreman_down, true);
    trigger_hellos(w, 20, "c", ids);
    /* 0.1, 0.2, 0.4, 0.8, 1: each one has waited the cap at least once */
    ck_assert(WAIT_UNTIL(atomic_load(&received) >= 20 * 6, 20));
    atomic_store(&foreman_down, false);
    back = tu_now();
    ck_assert(WAIT_UNTIL(atomic_load(&n_delivered) == 20, 10));
    /* cap + 3 s for the sending on a loaded machine: a backoff past the cap would wait 6.4 s */
    ck_assert_msg(tu_now() - back <= cap + 3,
                  "delivered %.2f s after Foreman came back (cap %.1f s)", tu_now() - back, cap);
    expect_delivered_once(w, 20, "c", ids);
    df_world_free(w);
    df_callback_free(cb);
}
END_TEST

/* ---- through smart-proxyd, with a file database ------------------------------------ */

#define DAEMON_TASKS 200

static pid_t daemon_pid;
static int daemon_out;
static char log_path[600];

static void daemon_start(void)
{
    long from = file_size(log_path);

    daemon_pid = start(NULL, &daemon_out);
    port = listening_port(log_path, from, "http");
    ck_assert_msg(port != 0, "smart-proxyd did not start: %s", read_until(daemon_out, "\n\n"));
}

/* Each task's command appends a line to ran.log. */
static void daemon_setup(void)
{
    char settings[8192], dynflow[2048], script[2048], cmd[2400];

    scratch_new(workdir, sizeof(workdir), "callbackd");
    snprintf(log_path, sizeof(log_path), "%s/proxy.log", workdir);
    scratch_certs(workdir);
    foreman_start(workdir);
    snprintf(cmd, sizeof(cmd), "mkdir -p %s/settings.d %s/plugins && cp %s/script.so %s/plugins/",
             workdir, workdir, getenv("SCRIPT_PLUGIN_DIR"), workdir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(settings, sizeof(settings),
             ":http_port: 0\n:bind_host: 127.0.0.1\n:module_directory: %s\n"
             ":foreman_url: https://localhost:%u\n:foreman_ssl_cert: %s/client.pem\n"
             ":foreman_ssl_key: %s/client.key\n:foreman_ssl_ca: %s/ca.pem\n:log_file: %s\n",
             getenv("DYNFLOW_MODULE_DIR"), foreman_port, workdir, workdir, workdir, log_path);
    scratch_write(workdir, "settings.yml", settings);
    snprintf(dynflow, sizeof(dynflow),
             ":enabled: true\n:plugin_directory: %s/plugins\n:database: %s/dynflow.sqlite\n"
             ":callback_connections: 4\n",
             workdir, workdir);
    scratch_write(workdir, "settings.d/dynflow.yml", dynflow);
    snprintf(script, sizeof(script),
             ":enabled: true\n:tasks:\n  - :kind: mark\n    :shell: true\n"
             "    :command: 'echo \"$INPUT_WHO\" >> %s/ran.log'\n",
             workdir);
    scratch_write(workdir, "settings.d/script.yml", script);
    daemon_start();
}

static void daemon_teardown(void)
{
    if (daemon_pid > 0) {
        kill(daemon_pid, SIGTERM);
        finish(daemon_pid);
        close(daemon_out);
    }
    foreman_stop();
    scratch_remove(workdir);
}

static int lines_in(const char *name)
{
    char path[700];
    int n = 0, c;
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", workdir, name);
    if ((f = fopen(path, "r")) == NULL)
        return 0;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

/* One launch of the script tasks first … first + n - 1, each with its callback (Foreman task
 * d<first>, …). */
static void launch_marks(int first, int n)
{
    size_t cap = (size_t)n * 200 + 64, len = 0;
    char *body = malloc(cap);
    struct reply r;

    len += (size_t)snprintf(body + len, cap - len, "{\"operation\":\"script\",\"input\":{");
    for (int i = first; i < first + n; i++)
        len += (size_t)snprintf(body + len, cap - len,
                                "%s\"00000000-0000-4000-8000-%012d\":{\"action_input\":{\"kind\":"
                                "\"mark\",\"input\":{\"who\":\"%d\"},\"callback\":{\"task_id\":"
                                "\"d%d\",\"step_id\":1}}}",
                                i > first ? "," : "", i, i, i);
    snprintf(body + len, cap - len, "}}");
    r = call("POST", "/dynflow/tasks/launch", body, NULL);
    free(body);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
}

/* The slowest of n GET /dynflow/tasks/count, in seconds. */
static double slowest_count(int n)
{
    double worst = 0;

    for (int i = 0; i < n; i++) {
        double t0 = tu_now(), dt;
        struct reply r = call("GET", "/dynflow/tasks/count", NULL, NULL);
        ck_assert_int_eq(r.status, 200);
        dt = tu_now() - t0;
        worst = dt > worst ? dt : worst;
    }
    return worst;
}

/* Foreman hangs: 200 tasks all run, and one launched after their callbacks wait at Foreman too;
 * the API answers, 4 POSTs wait at Foreman (:callback_connections:) and SIGTERM stops the daemon
 * within 5 s.  After a restart with Foreman answering, each task's callback arrives
 * once; twice only for those held unanswered when the daemon stopped (their outcome was
 * unknown to it). */
START_TEST(sigterm_leaves_callbacks_queued_for_the_restart)
{
    double t0, slowest;
    int status;

    foreman_hang(true);
    launch_marks(0, DAEMON_TASKS - 1);
    ck_assert_msg(WAIT_UNTIL(lines_in("ran.log") == DAEMON_TASKS - 1, 30),
                  "%d of %d tasks ran while Foreman hung", lines_in("ran.log"), DAEMON_TASKS - 1);
    ck_assert(WAIT_UNTIL(foreman_held_now(false) >= 4, 10));
    launch_marks(DAEMON_TASKS - 1, 1);
    ck_assert_msg(WAIT_UNTIL(lines_in("ran.log") == DAEMON_TASKS, 10),
                  "a task launched while callbacks wait did not run");
    ck_assert(WAIT_UNTIL(foreman_held_now(false) == 4, 10));
    slowest = slowest_count(20);
    ck_assert_msg(slowest < 0.5, "GET /dynflow/tasks/count took %.3f s", slowest);
    t0 = tu_now();
    kill(daemon_pid, SIGTERM);
    status = finish(daemon_pid);
    close(daemon_out);
    daemon_pid = 0;
    ck_assert_msg(tu_now() - t0 <= 5, "smart-proxyd took %.1f s to stop", tu_now() - t0);
    ck_assert_int_eq(status, 0);
    ck_assert_int_eq(foreman_held_now(true), 4);
    foreman_hang(false);
    daemon_start();
    for (int i = 0; i < DAEMON_TASKS; i++) {
        char task[16];
        snprintf(task, sizeof(task), "d%d", i);
        ck_assert_msg(WAIT_UNTIL(foreman_delivered(task) >= 1, 20), "no callback for %s", task);
        ck_assert_msg(foreman_delivered(task) == 1 || foreman_held(task), "%s: %d callbacks", task,
                      foreman_delivered(task));
    }
    ck_assert_int_eq(lines_in("ran.log"), DAEMON_TASKS); /* none ran twice */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("callback");
    TCase *tc = tcase_create("callback");

    curl_global_init(CURL_GLOBAL_ALL);
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, delivered_after_retries);
    tcase_add_test(tc, gives_up_and_refuses_strangers);
    tcase_add_test(tc, hanging_foreman_stalls_no_plan);
    tcase_add_test(tc, first_success_wakes_waiting_callbacks);
    tcase_add_test(tc, delivered_within_the_cap_after_an_outage);
    suite_add_tcase(s, tc);
    tc = tcase_create("daemon");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, daemon_setup, daemon_teardown);
    tcase_add_test(tc, sigterm_leaves_callbacks_queued_for_the_restart);
    suite_add_tcase(s, tc);
    int rc = run_suite(s);
    curl_global_cleanup();
    return rc;
}
