/*
 * The authorization matrix: every route of the proxy and of dynflow.so ×
 * {no client certificate, one from another CA, a CN outside :trusted_hosts:,
 * a trusted one} over HTTPS, and plain HTTP from an untrusted address.  The
 * expectations are a table keyed by route: a route added without an entry
 * fails the test.
 */
#include <check.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proxy/auth.h"
#include "proxy/http.h"
#include "proxy/module_loader.h"
#include "proxy/root.h"
#include "suite.h"

enum expect { OPEN, GUARDED, CERT };

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
    /* the console needs a client certificate over HTTPS, not a trusted CN (§4) */
    {"GET /dynflow/console", CERT},
    {"GET /dynflow/console/:id", CERT},
    {"POST /dynflow/console/:id/resume", CERT},
    {"POST /dynflow/console/:id/cancel", CERT},
    {"POST /dynflow/console/:id/skip/:step", CERT},
};

static char certs[512];
static struct sp_server *srv;
static struct sp_settings settings;
static struct sp_loaded_module lm;
static struct sp_root root;
static void *state;
static unsigned https_port, http_port;

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
            /* a stranger's certificate is valid: enough where no trusted CN is needed */
            bool refused = expect == GUARDED || (expect == CERT && i < 2);
            ck_assert_msg((st == 403) == refused, "%s %s as %s: %ld", r->method, path,
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
    failed = run_suite(s);
    curl_global_cleanup();
    return failed;
}
