/*
 * The HTTPS listener with client certificates on loopback, and the
 * authorization rules of reference/protocol.md §1.5 on top of it.
 */
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "httputil.h"
#include "proxy/auth.h"
#include "proxy/http.h"
#include "proxy/tls.h"
#include "suite.h"

static char certs[512];
static struct sp_server *srv;
static struct sp_settings settings;

static int whoami(void *state, const struct sp_request *req, struct sp_response *res)
{
    (void)state;
    sp_response_json(res, 200,
                     json_pack("{s:s?, s:s?, s:b}", "cn", req->peer_cert_cn, "serial",
                               req->peer_cert_serial, "https", req->https));
    return 0;
}

static const struct sp_route routes[] = {
    {"GET", "/features", whoami, SP_AUTH_NONE},
    {"GET", "/secured", whoami, SP_AUTH_ANY},
    {NULL, NULL, NULL, 0},
};

static struct reply get(const char *path, const char *name, long max_tls)
{
    return call_tls_suite("GET", path, NULL, certs, name, max_tls, NULL);
}

/* Only suite offered (TLS 1.2) */
static struct reply get_with_ciphers(const char *suite)
{
    return call_tls_suite("GET", "/features", NULL, certs, NULL, 0, suite);
}

static void setup(void)
{
    char cert[600], key[600], ca[600], yml[600];
    struct sp_mount mount = {"", routes, NULL, 2};
    struct sp_error err;
    FILE *f;

    scratch_new(certs, sizeof(certs), "tls");
    scratch_certs(certs);
    snprintf(yml, sizeof(yml), "%s/settings.yml", certs);
    f = fopen(yml, "w");
    fputs(":trusted_hosts:\n  - Foreman.example.com\n", f);
    fclose(f);
    ck_assert_msg(sp_settings_load(yml, &settings, &err) == 0, "%s", err.text);
    snprintf(cert, sizeof(cert), "%s/server.pem", certs);
    snprintf(key, sizeof(key), "%s/server.key", certs);
    snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
    srv = sp_server_new(1 << 20,
                        &(struct sp_server_hooks){.ud = &settings, .authorize = sp_authorize});
    sp_server_mount(srv, &mount, 1);
    ck_assert_msg(
        sp_server_listen(srv, "127.0.0.1", 0,
                         &(struct sp_tls){.cert_file = cert, .key_file = key, .ca_file = ca}, &port,
                         &err) == 0,
        "%s", err.text);
}

static void teardown(void)
{
    sp_server_free(srv);
    sp_settings_free(&settings);
    scratch_remove(certs);
}

START_TEST(client_certificates)
{
    struct reply r = get("/features", NULL, 0);

    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"cn\":null,\"serial\":null,\"https\":true}");
    r = get("/features", "client", 0);
    ck_assert_ptr_nonnull(strstr(r.body, "\"cn\":\"foreman.example.com\""));
    ck_assert_ptr_nonnull(strstr(r.body, "\"serial\":\""));
}
END_TEST

START_TEST(authorization_matrix)
{
    struct reply r = get("/secured", "client", 0);

    ck_assert_int_eq(r.status, 200);
    r = get("/secured", NULL, 0);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(r.body, "{\"error\":\"could not read client cert from environment\"}");
    r = get("/secured", "rogue", 0); /* signed by another CA: as good as none */
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(r.body, "{\"error\":\"could not read client cert from environment\"}");
    r = get("/secured", "stranger", 0);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(r.body, "{\"error\":\"Untrusted client stranger.example.com attempted to "
                             "access /secured. Check :trusted_hosts: in settings.yml\"}");
}
END_TEST

START_TEST(old_tls_is_refused)
{
    struct reply r = get("/features", "client", CURL_SSLVERSION_MAX_TLSv1_1);

    ck_assert_int_eq(r.status, 0);
    r = get("/features", "client", CURL_SSLVERSION_MAX_TLSv1_2);
    ck_assert_int_eq(r.status, 200);
}
END_TEST

/* :ssl_disabled_ciphers: names OpenSSL suites; their ciphers are gone from the handshake. */
START_TEST(disabled_ciphers_are_refused)
{
    struct sp_settings s;
    struct sp_error err;
    char yml[600], priorities[1024], why[256], cert[600], key[600], ca[600];
    struct sp_server *strict;
    unsigned strict_port, old_port = port;
    struct reply r;

    scratch_write(certs, "strict.yml",
                  ":ssl_disabled_ciphers: [ECDHE-RSA-AES128-GCM-SHA256, AES256-SHA]\n"
                  ":tls_disabled_versions: ['1.3']\n");
    snprintf(yml, sizeof(yml), "%s/strict.yml", certs);
    ck_assert_msg(sp_settings_load(yml, &s, &err) == 0, "%s", err.text);
    ck_assert_int_eq(sp_tls_priorities(&s, priorities, sizeof(priorities), why, sizeof(why)), 0);
    ck_assert_str_eq(priorities, "NORMAL:-VERS-TLS1.1:-VERS-TLS1.0:-VERS-TLS1.3:-AES-128-GCM:"
                                 "-AES-256-CBC");
    snprintf(cert, sizeof(cert), "%s/server.pem", certs);
    snprintf(key, sizeof(key), "%s/server.key", certs);
    snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
    strict = sp_server_new(1 << 20,
                           &(struct sp_server_hooks){.ud = &settings, .authorize = sp_authorize});
    sp_server_mount(strict, &(struct sp_mount){"", routes, NULL, 2}, 1);
    ck_assert_msg(sp_server_listen(strict, "127.0.0.1", 0,
                                   &(struct sp_tls){.cert_file = cert,
                                                    .key_file = key,
                                                    .ca_file = ca,
                                                    .priorities = priorities},
                                   &strict_port, &err) == 0,
                  "%s", err.text);
    port = strict_port;
    ck_assert_int_eq(get_with_ciphers("ECDHE-RSA-AES128-GCM-SHA256").status, 0); /* no handshake */
    r = get_with_ciphers("ECDHE-RSA-AES256-GCM-SHA384");
    ck_assert_int_eq(r.status, 200);
    port = old_port;
    sp_server_free(strict);
    sp_settings_free(&s);

    scratch_write(certs, "bad.yml", ":ssl_disabled_ciphers: [NO-SUCH-SUITE]\n");
    snprintf(yml, sizeof(yml), "%s/bad.yml", certs);
    ck_assert_int_eq(sp_settings_load(yml, &s, &err), 0);
    ck_assert_int_eq(sp_tls_priorities(&s, priorities, sizeof(priorities), why, sizeof(why)),
                     -EINVAL);
    ck_assert_msg(strstr(why, "unknown cipher suite 'NO-SUCH-SUITE'") != NULL, "%s", why);
    sp_settings_free(&s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("tls");
    int failed;

    curl_global_init(CURL_GLOBAL_ALL);
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, client_certificates);
    tcase_add_test(tc, authorization_matrix);
    tcase_add_test(tc, old_tls_is_refused);
    tcase_add_test(tc, disabled_ciphers_are_refused);
    suite_add_tcase(s, tc);
    failed = run_suite(s);
    curl_global_cleanup();
    return failed;
}
