/*
 * The authorization matrix: every route of the proxy and of dynflow.so ×
 * {no client certificate, one from another CA, a CN outside :trusted_hosts:,
 * a trusted one} over HTTPS, and plain HTTP from an untrusted address.  The
 * expectations are a table keyed by route: a route added without an entry
 * fails the test.  The console again through a running smart-proxyd, with
 * :console_auth: true and false: a stranger neither lists nor cancels tasks.
 */
#include <check.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemonutil.h"
#include "httputil.h"
#include "proxy/auth.h"
#include "proxy/http.h"
#include "proxy/module_loader.h"
#include "proxy/root.h"
#include "suite.h"
#include "testutil.h"

enum expect { OPEN, GUARDED };

static const struct {
    const char *route;
    enum expect expect;
} table[] = {
    {"GET /features", OPEN},
    {"GET /version", OPEN},
    {"GET /v2/features", GUARDED},
    {"POST /dynflow/tasks/status", GUARDED},
    {"POST /dynflow/tasks/launch", GUARDED},
    {"POST /dynflow/tasks", GUARDED},
    {"POST /dynflow/tasks/:task_id/cancel", GUARDED},
    {"GET /dynflow/tasks/:task_id/status", GUARDED},
    {"GET /dynflow/tasks/count", GUARDED},
    {"POST /dynflow/tasks/statuses", GUARDED},
    {"POST /dynflow/tasks/:task_id/update", GUARDED}, /* without a token */
    {"POST /dynflow/tasks/:task_id/done", GUARDED},
    {"GET /dynflow/tasks/operations", GUARDED},
    /* the console: the API's rules (doc/api-input.md) */
    {"GET /dynflow/console", GUARDED},
    {"GET /dynflow/console/:id", GUARDED},
    {"POST /dynflow/console/:id/resume", GUARDED},
    {"POST /dynflow/console/:id/cancel", GUARDED},
    {"POST /dynflow/console/:id/skip/:step", GUARDED},
};

static char certs[512];
static struct sp_server *srv;
static struct sp_settings settings;
static struct sp_loaded_module lm;
static struct sp_root root;
static void *state;
static unsigned https_port, http_port;
static pid_t daemon_pid;
static int daemon_out;
static char log_path[600];

static size_t discard(char *data, size_t size, size_t n, void *ud)
{
    (void)data;
    (void)ud;
    return size * n;
}

static long request(const char *method, const char *path, const char *who, bool https)
{
    char url[256], cert[600], key[600], ca[600];
    long status = 0;
    CURL *c = curl_easy_init();

    snprintf(url, sizeof(url), "%s://127.0.0.1:%u%s", https ? "https" : "http",
             https ? https_port : http_port, path);
    snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    if (strcmp(method, "POST") == 0)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "{}");
    if (who != NULL) {
        snprintf(cert, sizeof(cert), "%s/%s.pem", certs, who);
        snprintf(key, sizeof(key), "%s/%s.key", certs, who);
        curl_easy_setopt(c, CURLOPT_SSLCERT, cert);
        curl_easy_setopt(c, CURLOPT_SSLKEY, key);
    }
    ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    return status;
}

static void setup(void)
{
    char cert[600], key[600], ca[600], yml[600], path[600], why[256];
    struct sp_error err;
    FILE *f;

    scratch_new(certs, sizeof(certs), "auth");
    scratch_certs(certs);
    snprintf(yml, sizeof(yml), "%s/settings.yml", certs);
    f = fopen(yml, "w");
    fputs(":trusted_hosts: [foreman.example.com]\n:forward_verify: true\n", f);
    fclose(f);
    ck_assert_int_eq(sp_settings_load(yml, &settings, &err), 0);
    snprintf(path, sizeof(path), "%s/dynflow.so", getenv("DYNFLOW_MODULE_DIR"));
    ck_assert_msg(sp_module_open(path, &lm, &err) == 0, "%s", err.text);
    ck_assert_int_eq(lm.m->init(NULL, NULL, &state, why, sizeof(why)), 0);
    root = (struct sp_root){.settings = &settings};
    struct sp_mount mounts[] = {{"", sp_root_routes(), &root, SP_BOTH},
                                {"/dynflow", lm.m->routes(state), state, SP_BOTH}};
    snprintf(cert, sizeof(cert), "%s/server.pem", certs);
    snprintf(key, sizeof(key), "%s/server.key", certs);
    snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
    srv = sp_server_new(1 << 20,
                        &(struct sp_server_hooks){.ud = &settings, .authorize = sp_authorize});
    sp_server_mount(srv, mounts, 2);
    ck_assert_int_eq(
        sp_server_listen(srv, "127.0.0.1", 0,
                         &(struct sp_tls){.cert_file = cert, .key_file = key, .ca_file = ca},
                         &https_port, &err),
        0);
    ck_assert_int_eq(sp_server_listen(srv, "127.0.0.1", 0, NULL, &http_port, &err), 0);
}

static void teardown(void)
{
    sp_server_free(srv);
    lm.m->shutdown(state);
    sp_module_close(&lm);
    sp_settings_free(&settings);
    scratch_remove(certs);
}

static int expectation(const char *method, const char *prefix, const char *pattern)
{
    char key[256];

    snprintf(key, sizeof(key), "%s %s%s", method, prefix, pattern);
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (strcmp(table[i].route, key) == 0)
            return (int)table[i].expect;
    ck_abort_msg("route %s has no entry in the authorization table", key);
    return -1;
}

/* The pattern with its parameters filled in. */
static void concrete(const char *prefix, const char *pattern, char *out, size_t len)
{
    const char *p = pattern;
    size_t n = (size_t)snprintf(out, len, "%s", prefix);

    while (*p != '\0' && n < len - 40) {
        if (*p == ':') {
            n += (size_t)snprintf(out + n, len - n, "00000000-0000-4000-8000-00000000000a");
            p += strcspn(p, "/");
        } else {
            out[n++] = *p++;
            out[n] = '\0';
        }
    }
}

static void check_routes(const char *prefix, const struct sp_route *routes)
{
    for (const struct sp_route *r = routes; r->method != NULL; r++) {
        char path[256];
        int expect = expectation(r->method, prefix, r->pattern);
        concrete(prefix, r->pattern, path, sizeof(path));
        long trusted = request(r->method, path, "client", true);
        ck_assert_msg(trusted != 403, "%s %s: trusted client refused", r->method, path);
        const char *const others[] = {NULL, "rogue", "stranger"};
        for (size_t i = 0; i < 3; i++) {
            long st = request(r->method, path, others[i], true);
            ck_assert_msg((st == 403) == (expect == GUARDED), "%s %s as %s: %ld", r->method, path,
                          others[i] ? others[i] : "nobody", st);
        }
        /* over HTTP, 127.0.0.1 is "localhost", which is not trusted */
        long http = request(r->method, path, NULL, false);
        ck_assert_msg((http == 403) == (expect == GUARDED), "%s %s over HTTP: %ld", r->method, path,
                      http);
    }
}

START_TEST(every_route)
{
    check_routes("", sp_root_routes());
    check_routes("/dynflow", lm.m->routes(state));
}
END_TEST

/* ---- the console through a running smart-proxyd ------------------------------------------- */

/* smart-proxyd on HTTP and HTTPS (ports chosen by the kernel), :trusted_hosts: as given,
 * testplug loaded (Test::Echo stays until cancelled), :console_auth: as given. */
static void start_daemon(const char *trusted_hosts, const char *console_auth)
{
    char global[4096], dynflow[1024], cmd[2048];
    long from;

    scratch_new(workdir, sizeof(workdir), "console");
    snprintf(certs, sizeof(certs), "%s", workdir);
    snprintf(log_path, sizeof(log_path), "%s/proxy.log", workdir);
    scratch_certs(workdir);
    snprintf(cmd, sizeof(cmd), "mkdir %s/settings.d %s/plugins && cp %s/testplug.so %s/plugins/",
             workdir, workdir, getenv("PLUGIN_FIXTURES"), workdir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(global, sizeof(global),
             ":http_port: 0\n:https_port: 0\n:bind_host: 127.0.0.1\n:module_directory: %s\n"
             ":ssl_certificate: %s/server.pem\n:ssl_private_key: %s/server.key\n"
             ":ssl_ca_file: %s/ca.pem\n:trusted_hosts: %s\n:log_file: %s\n",
             getenv("DYNFLOW_MODULE_DIR"), workdir, workdir, workdir, trusted_hosts, log_path);
    scratch_write(workdir, "settings.yml", global);
    snprintf(dynflow, sizeof(dynflow),
             ":enabled: true\n:plugin_directory: %s/plugins\n:console_auth: %s\n", workdir,
             console_auth);
    scratch_write(workdir, "settings.d/dynflow.yml", dynflow);
    scratch_write(workdir, "settings.d/testplug.yml", ":enabled: true\n");
    from = file_size(log_path);
    daemon_pid = start(NULL, &daemon_out);
    https_port = listening_port(log_path, from, "https");
    http_port = listening_port(log_path, from, "http");
    ck_assert_msg(https_port != 0 && http_port != 0, "smart-proxyd did not start: %s",
                  read_until(daemon_out, "\n\n"));
}

static void stop_daemon(void)
{
    kill(daemon_pid, SIGTERM);
    ck_assert_int_eq(finish(daemon_pid), 0);
    close(daemon_out);
    scratch_remove(workdir);
}

static struct reply as(const char *who, const char *method, const char *path, const char *body)
{
    port = https_port;
    return call_tls(method, path, body, certs, who, 0);
}

/* A task that runs until it is cancelled; its id into id. */
static void running_task(char id[64])
{
    struct reply r = as("client", "POST", "/dynflow/tasks/launch",
                        "{\"operation\":\"single\",\"input\":{\"action_class\":\"Test::Echo\","
                        "\"action_input\":{\"stay\":true}}}");

    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    snprintf(id, 64, "%.63s", field(&r, "task_id"));
}

static const char *task_state(const char *id)
{
    char path[128];
    struct reply r;

    snprintf(path, sizeof(path), "/dynflow/tasks/%s/status", id);
    r = as("client", "GET", path, NULL);
    ck_assert_int_eq(r.status, 200);
    return field(&r, "state");
}

/* Every console route refuses strangers, with either :console_auth:; the trusted client gets
 * in.  A stranger's cancel leaves the task running; the trusted client's cancels it. */
static void console_refuses_strangers(void)
{
    static const char *const strangers[] = {NULL, "rogue", "stranger"};
    char id[64], paths[5][160];
    const char *methods[] = {"GET", "GET", "POST", "POST", "POST"};
    struct reply r;

    running_task(id);
    snprintf(paths[0], sizeof(paths[0]), "/dynflow/console?state=all");
    snprintf(paths[1], sizeof(paths[1]), "/dynflow/console/%s", id);
    snprintf(paths[2], sizeof(paths[2]), "/dynflow/console/%s/resume", id);
    snprintf(paths[3], sizeof(paths[3]), "/dynflow/console/%s/skip/3", id);
    snprintf(paths[4], sizeof(paths[4]), "/dynflow/console/%s/cancel", id);
    for (size_t p = 0; p < 5; p++) {
        for (size_t i = 0; i < 3; i++) {
            r = as(strangers[i], methods[p], paths[p], "");
            ck_assert_msg(r.status == 403, "%s %s as %s: %ld", methods[p], paths[p],
                          strangers[i] ? strangers[i] : "nobody", r.status);
            ck_assert(p > 0 || strstr(r.body, id) == NULL); /* the list: no task shows */
        }
        port = http_port; /* 127.0.0.1 is "localhost", not in :trusted_hosts: */
        r = call(methods[p], paths[p], methods[p][0] == 'P' ? "" : NULL, NULL);
        ck_assert_msg(r.status == 403, "%s %s over HTTP: %ld", methods[p], paths[p], r.status);
    }
    ck_assert_str_eq(task_state(id), "running");
    r = as("client", "GET", paths[0], NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, id));
    r = as("client", "POST", paths[4], "");
    ck_assert_int_eq(r.status, 303);
    ck_assert(WAIT_UNTIL(strcmp(task_state(id), "stopped") == 0, 10));
}

START_TEST(console_with_console_auth)
{
    start_daemon("[foreman.example.com]", "true");
    console_refuses_strangers();
    stop_daemon();
}
END_TEST

START_TEST(console_without_console_auth)
{
    start_daemon("[foreman.example.com]", "false");
    console_refuses_strangers();
    stop_daemon();
}
END_TEST

/* Over HTTP a trusted host's name (127.0.0.1 is "localhost") is enough: there is no certificate
 * to ask for. */
START_TEST(console_over_http_for_a_trusted_host)
{
    char id[64], path[160];
    struct reply r;

    start_daemon("[foreman.example.com, localhost]", "true");
    running_task(id);
    port = http_port;
    r = call("GET", "/dynflow/console?state=all", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, id));
    snprintf(path, sizeof(path), "/dynflow/console/%s/cancel", id);
    ck_assert_int_eq(call("POST", path, "", NULL).status, 303);
    ck_assert(WAIT_UNTIL(strcmp(task_state(id), "stopped") == 0, 10));
    ck_assert_int_eq(as("stranger", "GET", "/dynflow/console", NULL).status, 403);
    stop_daemon();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("auth");
    TCase *tc = tcase_create("matrix");
    int failed;

    curl_global_init(CURL_GLOBAL_ALL);
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, every_route);
    suite_add_tcase(s, tc);
    tc = tcase_create("console");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, console_with_console_auth);
    tcase_add_test(tc, console_without_console_auth);
    tcase_add_test(tc, console_over_http_for_a_trusted_host);
    suite_add_tcase(s, tc);
    failed = run_suite(s);
    curl_global_cleanup();
    return failed;
}
