/*
 * Forward mode end to end: a core (smart-proxyd with dynflow.so mounted at /
 * over HTTPS) and a proxy relaying /dynflow to it.  A launch, status, cancel
 * and callback cycle through the pair; the core's features at the proxy; the
 * headers that reach the core; cores that must not be talked to (G11:
 * expired, another CA, another name, TLS 1.1 only) and a proxy without a
 * client certificate; a core that is down or slow, and the other clients of a
 * proxy waiting for a slow core; a switch between internal
 * and forward mode by SIGHUP while a client polls.
 */
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include "daemonutil.h"
#include "foreman.h"
#include "httputil.h"
#include "testutil.h"

static char certs[512];                    /* made once for the whole suite */
static char core_dir[600], proxy_dir[600]; /* settings.yml and settings.d/ of each */
static pid_t core_pid, proxy_pid;
static int core_out, proxy_out;
static unsigned core_port;

static void write_file(const char *dir, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void write_file(const char *dir, const char *name, const char *fmt, ...)
{
    char text[4096];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    scratch_write(dir, name, text);
}

static void make_dir(char *out, size_t len, const char *name)
{
    char sub[700];

    snprintf(out, len, "%s/%s", workdir, name);
    mkdir(out, 0700);
    snprintf(sub, sizeof(sub), "%s/settings.d", out);
    mkdir(sub, 0700);
    snprintf(sub, sizeof(sub), "%s/plugins", out);
    mkdir(sub, 0700);
    snprintf(sub, sizeof(sub), "cp %s/testplug.so %s/plugins/", getenv("PLUGIN_FIXTURES"), out);
    ck_assert_int_eq(system(sub), 0);
    scratch_write(out, "settings.d/testplug.yml", ":enabled: true\n");
}

static bool log_has(const char *dir, const char *file, const char *needle)
{
    char path[700];

    snprintf(path, sizeof(path), "%s/%s", dir, file);
    return file_has(path, needle);
}

/* The whole of a log now (the first 64 KiB). */
static const char *log_text(const char *dir, const char *file)
{
    static char text[65536];
    char path[700];
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "%s/%s", dir, file);
    f = fopen(path, "r");
    n = f != NULL ? fread(text, 1, sizeof(text) - 1, f) : 0;
    if (f != NULL)
        fclose(f);
    text[n] = '\0';
    return text;
}

/* The core: dynflow at / over HTTPS only, callbacks to the fake Foreman. */
static void core_start(void)
{
    core_port = free_port();
    write_file(core_dir, "settings.yml",
               ":https_port: %u\n:bind_host: 127.0.0.1\n:module_directory: %s\n"
               ":ssl_certificate: %s/server.pem\n:ssl_private_key: %s/server.key\n"
               ":ssl_ca_file: %s/ca.pem\n:foreman_url: https://localhost:%u\n"
               ":foreman_ssl_cert: %s/client.pem\n:foreman_ssl_key: %s/client.key\n"
               ":foreman_ssl_ca: %s/ca.pem\n:log_file: %s/core.log\n:log_level: DEBUG\n",
               core_port, getenv("DYNFLOW_MODULE_DIR"), certs, certs, certs, foreman_port, certs,
               certs, certs, core_dir);
    write_file(core_dir, "settings.d/dynflow.yml",
               ":enabled: true\n:mount: /\n:plugin_directory: %s/plugins\n"
               ":runner_refresh_interval: 3600\n",
               core_dir);
    core_pid = start_in(core_dir, NULL, &core_out);
    ck_assert_msg(log_has(core_dir, "core.log", "listening on"), "the core did not start: %s",
                  read_until(core_out, "\n\n"));
}

/* settings.d/dynflow.yml of the proxy: forward to url, or internal mode when url is NULL. */
static void proxy_mode(const char *url, const char *extra)
{
    if (url != NULL)
        write_file(proxy_dir, "settings.d/dynflow.yml",
                   ":enabled: true\n:external_core: true\n:core_url: %s\n:core_timeout: 2\n"
                   ":plugin_directory: %s/plugins\n%s",
                   url, proxy_dir, extra ? extra : "");
    else
        write_file(proxy_dir, "settings.d/dynflow.yml",
                   ":enabled: true\n:plugin_directory: %s/plugins\n%s", proxy_dir,
                   extra ? extra : "");
}

/* The proxy on plain HTTP for the test's client; with_cert: it has a client certificate. */
static void proxy_start(bool with_cert)
{
    char tls[2048] = "";

    if (with_cert)
        snprintf(tls, sizeof(tls),
                 ":foreman_ssl_cert: %s/client.pem\n:foreman_ssl_key: %s/client.key\n", certs,
                 certs);
    port = free_port();
    write_file(proxy_dir, "settings.yml",
               ":http_port: %u\n:bind_host: 127.0.0.1\n:module_directory: %s\n"
               ":foreman_ssl_ca: %s/ca.pem\n%s:log_file: %s/proxy.log\n:log_level: DEBUG\n",
               port, getenv("DYNFLOW_MODULE_DIR"), certs, tls, proxy_dir);
    proxy_pid = start_in(proxy_dir, NULL, &proxy_out);
    ck_assert_msg(log_has(proxy_dir, "proxy.log", "listening on"), "the proxy did not start: %s",
                  read_until(proxy_out, "\n\n"));
}

static void stop_daemon(pid_t *pid, int *out)
{
    if (*pid <= 0)
        return;
    kill(*pid, SIGTERM);
    int rc = finish(*pid);
    ck_assert_msg(rc == 0, "smart-proxyd exited with %d: %s", rc, read_until(*out, "\n\n\n\n"));
    close(*out);
    *pid = 0;
}

/* Once for the suite: certificates take a while. */
static void make_certs(void)
{
    scratch_new(certs, sizeof(certs), "forward-certs");
    scratch_certs(certs);
}

static void remove_certs(void)
{
    scratch_remove(certs);
}

static void setup(void)
{
    scratch_new(workdir, sizeof(workdir), "forward");
    foreman_start(certs);
    make_dir(core_dir, sizeof(core_dir), "core");
    make_dir(proxy_dir, sizeof(proxy_dir), "proxy");
}

static void teardown(void)
{
    stop_daemon(&proxy_pid, &proxy_out);
    stop_daemon(&core_pid, &core_out);
    foreman_stop();
    scratch_remove(workdir);
}

static char *core_url(unsigned p)
{
    static char url[64];

    snprintf(url, sizeof(url), "https://localhost:%u", p);
    return url;
}

/* The pair: a core, and a proxy forwarding to it. */
static void pair_start(void)
{
    core_start();
    proxy_mode(core_url(core_port), NULL);
    proxy_start(true);
}

static json_t *body_json(const struct reply *r)
{
    json_t *j = json_loads(r->body, 0, NULL);

    ck_assert_msg(j != NULL, "not JSON (%ld): %s", r->status, r->body);
    return j;
}

static const char *state_of(const char *id)
{
    static char state[32];
    char path[128];
    struct reply r;

    snprintf(path, sizeof(path), "/dynflow/tasks/%s/status", id);
    r = call("GET", path, NULL, NULL);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    snprintf(state, sizeof(state), "%.31s", field(&r, "state"));
    return state;
}

#define TASK_A "11111111-1111-4111-8111-111111111111"

/* Launch, status, cancel and a callback at Foreman, all through the proxy. */
START_TEST(launch_status_cancel_callback_through_the_pair)
{
    struct reply r;
    char id[64], path[160];
    json_t *cb;

    pair_start();
    r = call("POST", "/dynflow/tasks/launch",
             "{\"operation\":\"single\",\"input\":{\"action_class\":\"Test::Echo\","
             "\"action_input\":{\"text\":\"partial\",\"stay\":true}}}",
             NULL);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    snprintf(id, sizeof(id), "%.36s", field(&r, "task_id"));
    for (int i = 0; i < 1000 && strcmp(state_of(id), "running") != 0; i++)
        usleep(10000);
    ck_assert_str_eq(state_of(id), "running");
    snprintf(path, sizeof(path), "/dynflow/tasks/%s/cancel", id);
    r = call("POST", path, "", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"canceled_steps_count\":1"));
    for (int i = 0; i < 1000 && strcmp(state_of(id), "stopped") != 0; i++)
        usleep(10000);
    ck_assert_str_eq(state_of(id), "stopped");

    r = call("POST", "/dynflow/tasks/launch",
             "{\"operation\":\"test_batch\",\"input\":{\"" TASK_A "\":{\"action_input\":{"
             "\"text\":\"hello A\",\"callback\":{\"task_id\":\"fa\",\"step_id\":3}}}}}",
             NULL);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    for (int i = 0; i < 2000 && atomic_load(&received) < 1; i++)
        usleep(10000);
    cb = callback_for("fa");
    ck_assert_ptr_nonnull(cb);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(cb, "data"), "exit_status")), 0);
    json_decref(cb);

    /* a plugin's routes are the core's too; bad input gets the core's 4xx */
    r = call("GET", "/testplug/hello", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"hello\":\"plugin\"}");
    r = call("POST", "/dynflow/tasks/launch", "{not json", NULL);
    ck_assert_int_eq(r.status, 400);
    ck_assert_ptr_nonnull(strstr(r.body, "\"error\""));
    ck_assert(log_has(core_dir, "core.log", "POST /tasks/launch from 127.0.0.1: 400"));
}
END_TEST

/* A request straight to the core over HTTPS (with the client certificate when cert); the
 * curl code, the reply in *r. */
static CURLcode core_call(const char *path, bool cert, long tls_max, struct reply *r)
{
    char url[128], ca[600], crt[600], key[600];
    CURL *c = curl_easy_init();
    CURLcode rc;

    memset(r, 0, sizeof(*r));
    snprintf(url, sizeof(url), "%s%s", core_url(core_port), path);
    snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
    snprintf(crt, sizeof(crt), "%s/client.pem", certs);
    snprintf(key, sizeof(key), "%s/client.key", certs);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    if (cert) {
        curl_easy_setopt(c, CURLOPT_SSLCERT, crt);
        curl_easy_setopt(c, CURLOPT_SSLKEY, key);
    }
    if (tls_max != 0) { /* only that version, ciphers of any security level */
        curl_easy_setopt(c, CURLOPT_SSLVERSION, CURL_SSLVERSION_TLSv1_1 | tls_max);
        curl_easy_setopt(c, CURLOPT_SSL_CIPHER_LIST, "DEFAULT:@SECLEVEL=0");
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_cleanup(c);
    return rc;
}

static json_t *dynflow_capabilities(const struct reply *r)
{
    json_t *j = body_json(r), *caps;

    caps = json_incref(json_object_get(json_object_get(j, "dynflow"), "capabilities"));
    json_decref(j);
    return caps;
}

/* /features and /v2/features at the proxy show what the core can run. */
START_TEST(features_mirror_the_core)
{
    struct reply direct, r;
    json_t *core, *proxy = NULL;

    pair_start();
    ck_assert_int_eq(core_call("/v2/features", true, 0, &direct), CURLE_OK);
    ck_assert_int_eq(direct.status, 200);
    core = dynflow_capabilities(&direct);
    ck_assert_msg(json_array_size(core) >= 3, "%s", direct.body);
    for (int i = 0; i < 1000; i++) {
        r = call("GET", "/v2/features", NULL, NULL);
        json_decref(proxy);
        proxy = dynflow_capabilities(&r);
        if (json_equal(core, proxy))
            break;
        usleep(10000);
    }
    ck_assert_msg(json_equal(core, proxy), "core %s, proxy %s", direct.body, r.body);
    /* the core's plugin features too, with the proxy's listeners */
    ck_assert_msg(strstr(r.body, "\"testplug_feature\":{\"http_enabled\":true,\"https_enabled\":"
                                 "false,\"settings\":{},\"state\":\"running\"") != NULL,
                  "%s", r.body);
    r = call("GET", "/features", NULL, NULL);
    ck_assert_str_eq(r.body, "[\"dynflow\",\"testplug_feature\"]");
    r = call("GET", "/dynflow/tasks/operations", NULL, NULL);
    ck_assert_str_eq(r.body, "[\"single\",\"test_batch\",\"test_group\"]");
    json_decref(core);
    json_decref(proxy);
}
END_TEST

/* ---- a fake core: what reaches it --------------------------------------------------------- */

static struct sp_server *fake;
static struct sp_settings fake_settings;
static atomic_int fake_hits; /* relayed requests */
static char seen[8][512];    /* method, path, query, body, X-Forwarded-For, X-Request-Id,
                                Authorization, Accept */

static void keep(int i, const char *v)
{
    snprintf(seen[i], sizeof(seen[i]), "%s", v != NULL ? v : "(none)");
}

static int fake_answer(struct sp_response *res, unsigned status, const char *body, const char *type)
{
    res->status = status;
    res->content_type = type;
    res->body = strdup(body);
    res->body_len = strlen(body);
    res->free_body = free;
    return 0;
}

static int fake_any(void *state, const struct sp_request *req, struct sp_response *res)
{
    char query[256];

    (void)state;
    if (strcmp(req->path, "/v2/features") == 0) /* the proxy's own reading of the features */
        return fake_answer(res, 404, "{}", NULL);
    atomic_fetch_add(&fake_hits, 1);
    keep(0, req->method);
    keep(1, req->path);
    req->query_string(req, query, sizeof(query));
    keep(2, query);
    snprintf(seen[3], sizeof(seen[3]), "%.*s", (int)req->body_len, req->body);
    keep(4, req->header(req, "X-Forwarded-For"));
    keep(5, req->header(req, "X-Request-Id"));
    keep(6, req->header(req, "Authorization"));
    keep(7, req->header(req, "Accept"));
    return fake_answer(res, 201, "from the core", "text/plain; charset=us-ascii");
}

/* A core that answers everything, with the certificate NAME.pem, offering GnuTLS versions. */
static unsigned fake_start(const char *name, const char *versions)
{
    static const struct sp_route routes[] = {
        {"GET", "/*", fake_any, SP_AUTH_NONE},
        {"POST", "/*", fake_any, SP_AUTH_NONE},
        {NULL, NULL, NULL, 0},
    };
    struct sp_mount mount = {"", routes, NULL, 2};
    char cert[600], key[600], ca[600], yml[600], priorities[128];
    struct sp_error err;
    unsigned p;

    snprintf(yml, sizeof(yml), "%s/foreman.yml", certs);
    ck_assert_int_eq(sp_settings_load(yml, &fake_settings, &err), 0);
    snprintf(cert, sizeof(cert), "%s/%s.pem", certs, name);
    snprintf(key, sizeof(key), "%s/%s.key", certs, name);
    snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
    snprintf(priorities, sizeof(priorities), "NORMAL:-VERS-ALL:%s", versions);
    fake = sp_server_new(1 << 20, NULL);
    sp_server_mount(fake, &mount, 1);
    ck_assert_msg(sp_server_listen(fake, "127.0.0.1", 0,
                                   &(struct sp_tls){.cert_file = cert,
                                                    .key_file = key,
                                                    .ca_file = ca,
                                                    .priorities = priorities},
                                   &p, &err) == 0,
                  "%s", err.text);
    atomic_store(&fake_hits, 0);
    return p;
}

static void fake_stop(void)
{
    sp_server_free(fake);
    sp_settings_free(&fake_settings);
    fake = NULL;
}

/* Method, path without /dynflow, query, body and the identity headers reach the core; its
 * status, content type and body come back as they were. */
START_TEST(headers_and_answers_are_relayed)
{
    unsigned p = fake_start("server", "+VERS-TLS1.3:+VERS-TLS1.2");
    char host[64], expect[128];
    struct reply r;

    proxy_mode(core_url(p), NULL);
    proxy_start(true);
    r = call("GET", "/dynflow/tasks/count?state=running&who=a%20b%26c", NULL,
             "Authorization: Basic dGFzazpzZWNyZXQ=");
    ck_assert_int_eq(r.status, 201);
    ck_assert_str_eq(r.body, "from the core");
    ck_assert_str_eq(r.content_type, "text/plain; charset=us-ascii");
    ck_assert_str_eq(seen[0], "GET");
    ck_assert_str_eq(seen[1], "/tasks/count");
    ck_assert_str_eq(seen[2], "state=running&who=a%20b%26c");
    snprintf(host, sizeof(host), "127.0.0.1:%u", port);
    ck_assert_str_eq(seen[4], host);
    ck_assert_str_eq(seen[5], r.request_id);
    ck_assert_str_eq(seen[6], "Basic dGFzazpzZWNyZXQ=");
    ck_assert_str_eq(seen[7], "*/*"); /* the client's own */

    r = call("POST", "/dynflow/tasks/" TASK_A "/done?ignored=1", "{\"exit_status\": 0}",
             "X-Request-Id: my-request-7");
    ck_assert_int_eq(r.status, 201);
    ck_assert_str_eq(seen[0], "POST");
    ck_assert_str_eq(seen[1], "/tasks/" TASK_A "/done");
    ck_assert_str_eq(seen[2], "");
    ck_assert_str_eq(seen[3], "{\"exit_status\": 0}");
    ck_assert_str_eq(seen[5], "my-request-7");
    ck_assert_str_eq(seen[6], "(none)");
    /* a path comes to the core encoded as it came */
    r = call("GET", "/dynflow/plugin/a%20b%3Fc%25/x", NULL, NULL);
    ck_assert_int_eq(r.status, 201);
    ck_assert_str_eq(seen[1], "/plugin/a b?c%/x");
    ck_assert_str_eq(seen[2], "");
    ck_assert_int_eq(atomic_load(&fake_hits), 3);
    /* the secret is not in the proxy's log */
    snprintf(expect, sizeof(expect), "GET /dynflow/tasks/count from 127.0.0.1: 201");
    ck_assert(log_has(proxy_dir, "proxy.log", expect));
    ck_assert_ptr_null(strstr(log_text(proxy_dir, "proxy.log"), "dGFzazpzZWNyZXQ"));
    fake_stop();
}
END_TEST

/* The host's path rules hold in forward mode too, before anything is relayed: a path segment
 * that is not text is 400, a task id that is not a UUID 404 (doc/http-input.md). */
START_TEST(paths_checked_before_relaying)
{
    static const struct {
        const char *method, *path;
        long status;
        const char *says;
    } cases[] = {
        {"GET", "/dynflow/tasks/abc/status", 404, "'abc' is not a task id (a UUID)"},
        {"POST", "/dynflow/tasks/abc/cancel", 404, "'abc' is not a task id (a UUID)"},
        {"POST", "/dynflow/tasks/abc/done", 404, "'abc' is not a task id (a UUID)"},
        {"POST", "/dynflow/tasks/%00/cancel", 400, "path segment 3 ('%00') holds a NUL byte"},
        {"POST", "/dynflow/tasks%2Fx", 400, "holds a '/'"},
        {"GET", "/dynflow/tasks/count?state=%ff", 400, "query argument 1 ('state')"},
    };
    unsigned p = fake_start("server", "+VERS-TLS1.3:+VERS-TLS1.2");
    struct reply r;

    proxy_mode(core_url(p), NULL);
    proxy_start(true);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        r = call(cases[i].method, cases[i].path, "{}", NULL);
        ck_assert_msg(r.status == cases[i].status, "%s: %ld %s", cases[i].path, r.status, r.body);
        ck_assert_msg(strstr(field(&r, "error"), cases[i].says) != NULL, "%s", r.body);
    }
    ck_assert_int_eq(atomic_load(&fake_hits), 0);
    r = call("GET", "/dynflow/tasks/" TASK_A "/status", NULL, NULL);
    ck_assert_int_eq(r.status, 201);
    ck_assert_str_eq(seen[1], "/tasks/" TASK_A "/status");
    ck_assert_int_eq(atomic_load(&fake_hits), 1);
    fake_stop();
}
END_TEST

/* Local checks come first (§3.1): trusted_hosts for everything but update/done with an
 * Authorization header, which the core checks. */
START_TEST(local_auth_before_relaying)
{
    unsigned p = fake_start("server", "+VERS-TLS1.3:+VERS-TLS1.2");
    struct reply r;

    proxy_mode(core_url(p), NULL);
    port = free_port();
    write_file(proxy_dir, "settings.yml",
               ":http_port: %u\n:bind_host: 127.0.0.1\n:module_directory: %s\n"
               ":foreman_ssl_ca: %s/ca.pem\n:foreman_ssl_cert: %s/client.pem\n"
               ":foreman_ssl_key: %s/client.key\n:trusted_hosts: [foreman.example.com]\n"
               ":log_file: %s/proxy.log\n",
               port, getenv("DYNFLOW_MODULE_DIR"), certs, certs, certs, proxy_dir);
    proxy_pid = start_in(proxy_dir, NULL, &proxy_out);
    ck_assert(log_has(proxy_dir, "proxy.log", "listening on"));
    r = call("GET", "/dynflow/tasks/count", NULL, NULL);
    ck_assert_int_eq(r.status, 403);
    ck_assert_msg(strstr(field(&r, "error"), "Untrusted client") != NULL, "%s", r.body);
    r = call("POST", "/dynflow/tasks/" TASK_A "/done", "{}", NULL);
    ck_assert_int_eq(r.status, 403);
    ck_assert_int_eq(atomic_load(&fake_hits), 0);
    r = call("POST", "/dynflow/tasks/" TASK_A "/update", "{}", "Authorization: Basic eDp5");
    ck_assert_int_eq(r.status, 201);
    ck_assert_str_eq(seen[6], "Basic eDp5");
    ck_assert_int_eq(atomic_load(&fake_hits), 1);
    fake_stop();
}
END_TEST

/* http:// only to loopback, with a warning; anything else does not start. */
START_TEST(plaintext_core_only_on_loopback)
{
    proxy_mode("http://127.0.0.1:8008", NULL);
    proxy_start(true);
    ck_assert(log_has(proxy_dir, "proxy.log",
                      "forward mode: the core at http://127.0.0.1:8008 is reached without TLS "
                      "(loopback only)"));
    stop_daemon(&proxy_pid, &proxy_out);
    for (int i = 0; i < 2; i++) {
        static const char *const urls[] = {"http://core.example.com:8008",
                                           "http://127.example.com:8008"};
        char expect[256];
        proxy_mode(urls[i], NULL);
        proxy_pid = start_in(proxy_dir, NULL, &proxy_out);
        ck_assert_int_eq(finish(proxy_pid), 1);
        close(proxy_out);
        proxy_pid = 0;
        snprintf(expect, sizeof(expect),
                 "Couldn't enable 'dynflow': settings.d/dynflow.yml: :core_url: '%s' is "
                 "plaintext HTTP to a host that is not loopback; use https://",
                 urls[i]);
        ck_assert(log_has(proxy_dir, "proxy.log", expect));
    }
}
END_TEST

#define TLS12_13 "+VERS-TLS1.3:+VERS-TLS1.2"

/* A core the proxy must not talk to: 502, the error and the log name the check that failed,
 * and nothing reaches the core. */
static void refused(const char *cert, const char *versions, const char *check)
{
    unsigned p = fake_start(cert, versions);
    char expect[256];
    struct reply r;

    proxy_mode(core_url(p), NULL);
    proxy_start(true);
    r = call("GET", "/dynflow/tasks/count", NULL, NULL);
    ck_assert_int_eq(r.status, 502);
    snprintf(expect, sizeof(expect), "core at https://localhost:%u unreachable: ", p);
    ck_assert_msg(strncmp(field(&r, "error"), expect, strlen(expect)) == 0, "%s", r.body);
    ck_assert_msg(strstr(r.body, check) != NULL, "%s", r.body);
    snprintf(expect, sizeof(expect), "GET /tasks/count: TLS with the core at https://localhost:%u",
             p);
    ck_assert(log_has(proxy_dir, "proxy.log", expect));
    ck_assert(log_has(proxy_dir, "proxy.log", check));
    ck_assert_int_eq(atomic_load(&fake_hits), 0);
    stop_daemon(&proxy_pid, &proxy_out);
    fake_stop();
}

START_TEST(expired_core_is_refused)
{
    refused("expired", TLS12_13, "certificate has expired");
}
END_TEST

START_TEST(core_from_another_ca_is_refused)
{
    refused("rogue-server", TLS12_13, "unable to get local issuer certificate");
}
END_TEST

START_TEST(core_with_another_name_is_refused)
{
    refused("wrongname", TLS12_13,
            "no alternative certificate subject name matches target host name 'localhost'");
}
END_TEST

START_TEST(core_offering_only_tls11_is_refused)
{
    refused("server", "+VERS-TLS1.1", "unsupported protocol");
}
END_TEST

/* The core answers a proxy without a client certificate 403, and the proxy says so; a client
 * that offers only TLS 1.1 gets no handshake from the core. */
START_TEST(core_refuses_what_it_must)
{
    struct reply r;

    core_start();
    proxy_mode(core_url(core_port), NULL);
    proxy_start(false);
    r = call("GET", "/dynflow/tasks/count", NULL, NULL);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(field(&r, "error"), "No client SSL certificate supplied");
    ck_assert(log_has(core_dir, "core.log", "GET /tasks/count from 127.0.0.1: 403"));
    ck_assert_int_ne(core_call("/tasks/count", true, CURL_SSLVERSION_MAX_TLSv1_1, &r), CURLE_OK);
    ck_assert_int_eq(core_call("/tasks/count", true, 0, &r), CURLE_OK);
    ck_assert_int_eq(r.status, 200);
}
END_TEST

START_TEST(core_down_is_502)
{
    unsigned p = free_port();
    struct reply r;

    proxy_mode(core_url(p), NULL);
    proxy_start(true);
    r = call("POST", "/dynflow/tasks/launch", "{}", NULL);
    ck_assert_int_eq(r.status, 502);
    ck_assert_msg(strstr(r.body, "unreachable: Failed to connect to localhost port") != NULL, "%s",
                  r.body);
}
END_TEST

/* The proxy started in forward mode to a core that takes connections and never answers;
 * the core's listening socket. */
static int proxy_to_a_stalled_core(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(fd, 16), 0); /* and never accept */
    getsockname(fd, (struct sockaddr *)&sa, &len);
    proxy_mode(core_url(ntohs(sa.sin_port)), NULL);
    proxy_start(true);
    return fd;
}

/* A core that takes the connection and never answers: 504 once :core_timeout: (2 s) is over. */
START_TEST(core_slow_is_504)
{
    int fd = proxy_to_a_stalled_core();
    double t0 = tu_now(), took;
    struct reply r = call("GET", "/dynflow/tasks/count", NULL, NULL);

    took = tu_now() - t0;
    ck_assert_int_eq(r.status, 504);
    ck_assert_msg(strstr(r.body, "unreachable: ") != NULL && strstr(r.body, "timed out") != NULL,
                  "%s", r.body);
    ck_assert_msg(took >= 1.9 && took < 4, "%.2f s", took);
    close(fd);
}
END_TEST

/* Connections waiting in a listening socket's accept queue. */
static unsigned accept_queue(int fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);

    ck_assert_int_eq(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len), 0);
    return ti.tcpi_unacked; /* for a listening socket: its backlog */
}

static atomic_int stalled_done;

static void *relay_to_stalled_core(void *arg)
{
    struct reply *r = arg;

    *r = call("GET", "/dynflow/tasks/count", NULL, NULL);
    atomic_fetch_add(&stalled_done, 1);
    return NULL;
}

/* Relays waiting for a core that never answers hold only their own clients: the proxy
 * answers another client at once, while they wait out :core_timeout:. */
START_TEST(slow_core_stalls_only_its_own_clients)
{
    int fd = proxy_to_a_stalled_core();
    unsigned queued = accept_queue(fd);
    struct reply relayed[3], local;
    pthread_t threads[3];
    double t0;

    atomic_store(&stalled_done, 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(pthread_create(&threads[i], NULL, relay_to_stalled_core, &relayed[i]), 0);
    ck_assert_msg(WAIT_UNTIL(accept_queue(fd) >= queued + 3, 1),
                  "%u of 3 relays reached the core: the others wait behind them in the proxy",
                  accept_queue(fd) - queued);
    t0 = tu_now();
    local = call("GET", "/version", NULL, NULL);
    ck_assert_int_eq(local.status, 200);
    ck_assert_int_eq(atomic_load(&stalled_done), 0); /* answered while they all waited */
    ck_assert_msg(tu_now() - t0 < 1, "GET /version waited for the relays");
    for (int i = 0; i < 3; i++) {
        pthread_join(threads[i], NULL);
        ck_assert_int_eq(relayed[i].status, 504);
    }
    close(fd);
}
END_TEST

/* ---- switching modes by SIGHUP ------------------------------------------------------------ */

struct poller {
    pthread_t thread;
    atomic_bool stop;
    atomic_int ok, failed;
    atomic_llong count; /* the last /dynflow/tasks/count */
    char failure[512];
};

/* GET /dynflow/tasks/count over one keep-alive connection until told to stop. */
static void *poll_loop(void *arg)
{
    struct poller *p = arg;
    CURL *c = curl_easy_init();
    char url[128];

    snprintf(url, sizeof(url), "http://127.0.0.1:%u/dynflow/tasks/count", port);
    while (!atomic_load(&p->stop)) {
        struct reply r = {0};
        json_t *j;
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
        CURLcode rc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
        j = rc == CURLE_OK && r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
        if (json_is_integer(json_object_get(j, "count"))) {
            atomic_store(&p->count, json_integer_value(json_object_get(j, "count")));
            atomic_fetch_add(&p->ok, 1);
        } else if (atomic_fetch_add(&p->failed, 1) == 0) {
            snprintf(p->failure, sizeof(p->failure), "%s: %ld %.300s", curl_easy_strerror(rc),
                     r.status, r.body);
        }
        json_decref(j);
    }
    curl_easy_cleanup(c);
    return NULL;
}

static void reload_proxy(const char *url, const char *extra)
{
    proxy_mode(url, extra);
    kill(proxy_pid, SIGHUP);
}

/* Waits until the poller sees count (for up to 10 s), then for ten more answers. */
static void poller_sees(struct poller *p, long long count)
{
    int ok;

    for (int i = 0; i < 1000 && atomic_load(&p->count) != count; i++)
        usleep(10000);
    ck_assert_int_eq(atomic_load(&p->count), count);
    ok = atomic_load(&p->ok);
    for (int i = 0; i < 1000 && atomic_load(&p->ok) < ok + 10; i++)
        usleep(10000);
}

static void launch_trivial(void)
{
    struct reply r = call("POST", "/dynflow/tasks/launch",
                          "{\"operation\":\"single\",\"input\":{\"action_class\":\"Test::Trivial\","
                          "\"action_input\":{}}}",
                          NULL);

    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
}

/* Internal → forward → internal while a client polls: not one request fails. */
START_TEST(sighup_switches_modes_without_a_failed_request)
{
    struct poller p = {.count = -1};

    core_start();
    proxy_mode(NULL, NULL);
    proxy_start(true);
    launch_trivial();
    launch_trivial(); /* the proxy's executor has 2 plans, the core none */
    ck_assert_int_eq(pthread_create(&p.thread, NULL, poll_loop, &p), 0);
    poller_sees(&p, 2);
    reload_proxy(core_url(core_port), NULL);
    poller_sees(&p, 0);
    ck_assert(log_has(proxy_dir, "proxy.log", "forward mode: relaying to the core at https://"));
    launch_trivial(); /* at the core */
    poller_sees(&p, 1);
    reload_proxy(NULL, NULL);
    poller_sees(&p, 2);
    ck_assert(log_has(proxy_dir, "proxy.log", "internal mode: the executor runs in-process"));
    atomic_store(&p.stop, true);
    pthread_join(p.thread, NULL);
    ck_assert_msg(atomic_load(&p.failed) == 0, "%d failed: %s", atomic_load(&p.failed), p.failure);
    ck_assert_int_gt(atomic_load(&p.ok), 40);
}
END_TEST

static void launch_staying(char id[64])
{
    struct reply r = call("POST", "/dynflow/tasks/launch",
                          "{\"operation\":\"single\",\"input\":{\"action_class\":\"Test::Echo\","
                          "\"action_input\":{\"text\":\"x\",\"stay\":true}}}",
                          NULL);

    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    snprintf(id, 64, "%.36s", field(&r, "task_id"));
}

static long status_code(const char *id)
{
    char path[128];

    snprintf(path, sizeof(path), "/dynflow/tasks/%s/status", id);
    return call("GET", path, NULL, NULL).status;
}

/* Unfinished tasks in an in-memory database keep the proxy in internal mode. */
START_TEST(switch_refused_with_unfinished_tasks_in_memory)
{
    char id[64];

    core_start();
    proxy_mode(NULL, NULL);
    proxy_start(true);
    launch_staying(id);
    reload_proxy(core_url(core_port), NULL);
    ck_assert(log_has(proxy_dir, "proxy.log",
                      "cannot switch to forward mode: 1 tasks are not finished and :database: is "
                      "in memory"));
    ck_assert_int_eq(status_code(id), 200);
    ck_assert_str_eq(state_of(id), "running");
}
END_TEST

/* With a database file they wait while the core serves, and go on when switched back. */
START_TEST(switch_with_a_database_file_keeps_the_tasks)
{
    char id[64], db[800], path[128];
    struct reply r;

    core_start();
    snprintf(db, sizeof(db), ":database: %s/proxy.db\n", proxy_dir);
    proxy_mode(NULL, db);
    proxy_start(true);
    launch_staying(id);
    reload_proxy(core_url(core_port), db);
    ck_assert(log_has(proxy_dir, "proxy.log", "unfinished tasks go on when switched back"));
    for (int i = 0; i < 1000 && status_code(id) != 404; i++) /* the core does not know it */
        usleep(10000);
    ck_assert_int_eq(status_code(id), 404);
    reload_proxy(NULL, db);
    for (int i = 0; i < 1000 && status_code(id) != 200; i++)
        usleep(10000);
    ck_assert_str_eq(state_of(id), "running");
    snprintf(path, sizeof(path), "/dynflow/tasks/%s/cancel", id);
    r = call("POST", path, "", NULL);
    ck_assert_int_eq(r.status, 200);
    for (int i = 0; i < 1000 && strcmp(state_of(id), "stopped") != 0; i++)
        usleep(10000);
    ck_assert_str_eq(state_of(id), "stopped");
}
END_TEST

/* A switch that cannot be made keeps the mode, and a later one can still be made. */
START_TEST(failed_switch_keeps_the_mode)
{
    struct reply r;

    core_start();
    proxy_mode(core_url(core_port), NULL);
    proxy_start(true);
    launch_trivial(); /* at the core */
    reload_proxy(NULL, ":database: /nonexistent/dir/proxy.db\n");
    ck_assert(log_has(proxy_dir, "proxy.log",
                      "reload of module 'dynflow' failed: cannot start the executor: "));
    r = call("GET", "/dynflow/tasks/count", NULL, NULL);
    ck_assert_str_eq(r.body, "{\"count\":1,\"state\":\"all\"}");
    reload_proxy(NULL, NULL);
    ck_assert(log_has(proxy_dir, "proxy.log", "internal mode: the executor runs in-process"));
    r = call("GET", "/dynflow/tasks/count", NULL, NULL);
    ck_assert_str_eq(r.body, "{\"count\":0,\"state\":\"all\"}");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("forward");
    TCase *tc = tcase_create("forward");
    int failed;

    curl_global_init(CURL_GLOBAL_ALL);
    tcase_add_unchecked_fixture(tc, make_certs, remove_certs);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, launch_status_cancel_callback_through_the_pair);
    tcase_add_test(tc, features_mirror_the_core);
    tcase_add_test(tc, headers_and_answers_are_relayed);
    tcase_add_test(tc, paths_checked_before_relaying);
    tcase_add_test(tc, local_auth_before_relaying);
    tcase_add_test(tc, plaintext_core_only_on_loopback);
    tcase_add_test(tc, expired_core_is_refused);
    tcase_add_test(tc, core_from_another_ca_is_refused);
    tcase_add_test(tc, core_with_another_name_is_refused);
    tcase_add_test(tc, core_offering_only_tls11_is_refused);
    tcase_add_test(tc, core_refuses_what_it_must);
    tcase_add_test(tc, core_down_is_502);
    tcase_add_test(tc, core_slow_is_504);
    tcase_add_test(tc, slow_core_stalls_only_its_own_clients);
    tcase_add_test(tc, sighup_switches_modes_without_a_failed_request);
    tcase_add_test(tc, switch_refused_with_unfinished_tasks_in_memory);
    tcase_add_test(tc, switch_with_a_database_file_keeps_the_tasks);
    tcase_add_test(tc, failed_switch_keeps_the_mode);
    suite_add_tcase(s, tc);
    failed = run_suite(s);
    curl_global_cleanup();
    return failed;
}
