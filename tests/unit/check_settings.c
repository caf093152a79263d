/* The settings reader: Foreman's symbol-key YAML, one case per key (reference/protocol.md §1, §9).
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proxy/settings.h"
#include "suite.h"

static char dir[512], path[600];

static void setup(void)
{
    char sub[600];

    scratch_new(dir, sizeof(dir), "settings");
    snprintf(sub, sizeof(sub), "%s/settings.d", dir);
    mkdir(sub, 0700);
    snprintf(path, sizeof(path), "%s/settings.yml", dir);
}

static void teardown(void)
{
    scratch_remove(dir);
}

/* Loads settings.yml with the given text; returns the load's result. */
static int load(const char *text, struct sp_settings *s, struct sp_error *err)
{
    scratch_write(dir, "settings.yml", text);
    return sp_settings_load(path, s, err);
}

static char *dump(json_t *v)
{
    static char buf[512];
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);

    snprintf(buf, sizeof(buf), "%s", s ? s : "(null)");
    free(s);
    return buf;
}

START_TEST(defaults)
{
    struct sp_settings s;
    struct sp_error err;
    char expected[700];

    ck_assert_int_eq(load("---\n", &s, &err), 0);
    ck_assert_ptr_null(sp_setting(&s, "http_port"));
    ck_assert_str_eq(dump(sp_setting(&s, "https_port")), "8443");
    ck_assert_str_eq(dump(sp_setting(&s, "bind_host")), "[\"*\"]");
    ck_assert_str_eq(dump(sp_setting(&s, "forward_verify")), "true");
    ck_assert_str_eq(dump(sp_setting(&s, "ssl_disabled_ciphers")), "[]");
    ck_assert_str_eq(dump(sp_setting(&s, "tls_disabled_versions")), "[]");
    ck_assert_ptr_null(sp_setting(&s, "trusted_hosts"));
    ck_assert_str_eq(sp_setting_str(&s, "log_file"), "STDOUT");
    ck_assert_str_eq(sp_setting_str(&s, "log_level"), "INFO");
    snprintf(expected, sizeof(expected), "%s/settings.d", dir);
    ck_assert_str_eq(sp_setting_str(&s, "settings_directory"), expected);
    sp_settings_free(&s);
}
END_TEST

START_TEST(every_key)
{
    struct sp_settings s;
    struct sp_error err;

    ck_assert_msg(load("---\n"
                       ":http_port: 8000\n"
                       ":https_port: '9090'\n"
                       ":bind_host: 127.0.0.1\n"
                       ":ssl_certificate: /etc/x/cert.pem\n"
                       ":ssl_private_key: /etc/x/key.pem\n"
                       ":ssl_ca_file: /etc/x/ca.pem\n"
                       ":ssl_disabled_ciphers: [AES128-SHA, AES256-SHA]\n"
                       ":tls_disabled_versions:\n  - 1.1\n  - '1.2'\n"
                       ":trusted_hosts:\n  - foreman.example.com\n"
                       ":forward_verify: false\n"
                       ":foreman_url: https://foreman.example.com\n"
                       ":foreman_ssl_cert: /etc/f/cert.pem\n"
                       ":foreman_ssl_key: /etc/f/key.pem\n"
                       ":foreman_ssl_ca: /etc/f/ca.pem\n"
                       ":log_file: SYSLOG\n"
                       ":log_level: debug\n"
                       ":module_directory: /usr/lib/smart-proxy/modules\n"
                       ":max_connections: 500\n"
                       ":max_connections_per_address: 20\n"
                       ":request_header_timeout: 5\n"
                       ":max_body_memory: 1048576\n"
                       ":daemon: true\n",
                       &s, &err) == 0,
                  "%s", err.text);
    ck_assert_str_eq(dump(sp_setting(&s, "http_port")), "8000");
    ck_assert_str_eq(dump(sp_setting(&s, "https_port")), "9090");
    ck_assert_str_eq(dump(sp_setting(&s, "bind_host")), "[\"127.0.0.1\"]");
    ck_assert_str_eq(sp_setting_str(&s, "ssl_certificate"), "/etc/x/cert.pem");
    ck_assert_str_eq(sp_setting_str(&s, "ssl_private_key"), "/etc/x/key.pem");
    ck_assert_str_eq(sp_setting_str(&s, "ssl_ca_file"), "/etc/x/ca.pem");
    ck_assert_str_eq(dump(sp_setting(&s, "ssl_disabled_ciphers")),
                     "[\"AES128-SHA\",\"AES256-SHA\"]");
    ck_assert_str_eq(dump(sp_setting(&s, "tls_disabled_versions")), "[\"1.1\",\"1.2\"]");
    ck_assert_str_eq(dump(sp_setting(&s, "trusted_hosts")), "[\"foreman.example.com\"]");
    ck_assert_str_eq(dump(sp_setting(&s, "forward_verify")), "false");
    ck_assert_str_eq(sp_setting_str(&s, "foreman_url"), "https://foreman.example.com");
    ck_assert_str_eq(sp_setting_str(&s, "foreman_ssl_cert"), "/etc/f/cert.pem");
    ck_assert_str_eq(sp_setting_str(&s, "foreman_ssl_key"), "/etc/f/key.pem");
    ck_assert_str_eq(sp_setting_str(&s, "foreman_ssl_ca"), "/etc/f/ca.pem");
    ck_assert_str_eq(sp_setting_str(&s, "log_file"), "SYSLOG");
    ck_assert_str_eq(sp_setting_str(&s, "log_level"), "DEBUG");
    ck_assert_str_eq(sp_setting_str(&s, "module_directory"), "/usr/lib/smart-proxy/modules");
    ck_assert_str_eq(dump(sp_setting(&s, "max_connections")), "500");
    ck_assert_str_eq(dump(sp_setting(&s, "max_connections_per_address")), "20");
    ck_assert_str_eq(dump(sp_setting(&s, "request_header_timeout")), "5");
    ck_assert_str_eq(dump(sp_setting(&s, "max_body_memory")), "1048576");
    ck_assert_str_eq(dump(sp_setting(&s, "daemon")), "true"); /* unknown keys are kept */
    sp_settings_free(&s);
}
END_TEST

/* Each wrong type names the file, the key and what was expected. */
START_TEST(wrong_types)
{
    static const struct {
        const char *text, *message;
    } cases[] = {
        {":https_port: abc\n", ":https_port: must be a port number (0-65535; 0: any free port, "
                               "which the log names), found \"abc\""},
        {":http_port: 70000\n", ":http_port: must be a port number (0-65535; 0: any free port, "
                                "which the log names), found 70000"},
        {":forward_verify: maybe\n", ":forward_verify: must be true or false, found \"maybe\""},
        {":log_level: LOUD\n",
         ":log_level: must be one of UNKNOWN, FATAL, ERROR, WARN, INFO, DEBUG"},
        {":trusted_hosts: {a: 1}\n", ":trusted_hosts: must be a value or a list of values"},
        {":foreman_url: [1]\n", ":foreman_url: must be a string, found [1]"},
        {":listen: [a, b]\n", ":listen: must be a string, found [\"a\",\"b\"]"},
        {":port: eighty\n", ":port: must be a port number (0-65535; 0: any free port, which the "
                            "log names), found \"eighty\""},
        {":use_https: 'true'\n", ":use_https: must be true or false, found \"true\""},
        {":max_connections: 0\n",
         ":max_connections: must be a whole number from 1 to 2147483647, found 0"},
        {":max_connections_per_address: many\n",
         ":max_connections_per_address: must be a whole number from 1 to 2147483647"},
        {":request_header_timeout: 2.5\n", ":request_header_timeout: must be a whole number"},
        {":max_body_memory: 4294967296\n", ":max_body_memory: must be a whole number"},
    };
    struct sp_settings s;
    struct sp_error err;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ck_assert_int_eq(load(cases[i].text, &s, &err), -EINVAL);
        ck_assert_msg(strstr(err.text, path) != NULL, "no file name in: %s", err.text);
        ck_assert_msg(strstr(err.text, cases[i].message) != NULL, "%s", err.text);
    }
    ck_assert_int_eq(load("- a\n- b\n", &s, &err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err.text, "the top level must be a mapping"));
    ck_assert_int_eq(load(":a: [\n", &s, &err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err.text, "line "));
    unlink(path);
    ck_assert_int_eq(sp_settings_load(path, &s, &err), -ENOENT);
    ck_assert_ptr_nonnull(strstr(err.text, path));
}
END_TEST

START_TEST(modules)
{
    struct sp_settings s;
    struct sp_error err;

    scratch_write(dir, "settings.d/dynflow.yml",
                  "---\n:enabled: https\n:database:\n:console_auth: true\n"
                  ":execution_plan_cleaner_age: 1800\n");
    scratch_write(dir, "settings.d/script.yml", ":enabled: true\n");
    scratch_write(dir, "settings.d/ansible.yml", ":enabled: http\n");
    scratch_write(dir, "settings.d/salt.yml", ":enabled: false\n");
    scratch_write(dir, "settings.d/ignored.yml.example", ":enabled: true\n");
    ck_assert_msg(load(":http_port: 8000\n", &s, &err) == 0, "%s", err.text);
    ck_assert_int_eq(sp_module_enabled(&s, "dynflow"), SP_HTTPS);
    ck_assert_int_eq(sp_module_enabled(&s, "script"), SP_BOTH);
    ck_assert_int_eq(sp_module_enabled(&s, "ansible"), SP_HTTP);
    ck_assert_int_eq(sp_module_enabled(&s, "salt"), SP_DISABLED);
    ck_assert_int_eq(sp_module_enabled(&s, "missing"), SP_DISABLED);
    ck_assert_ptr_null(sp_module_settings(&s, "ignored"));
    ck_assert(json_is_null(json_object_get(sp_module_settings(&s, "dynflow"), "database")));
    ck_assert_int_eq(json_integer_value(json_object_get(sp_module_settings(&s, "dynflow"),
                                                        "execution_plan_cleaner_age")),
                     1800);
    sp_settings_free(&s);

    scratch_write(dir, "settings.d/salt.yml", ":enabled: sometimes\n");
    ck_assert_int_eq(load(":http_port: 8000\n", &s, &err), -EINVAL);
    ck_assert_ptr_nonnull(
        strstr(err.text, "settings.d/salt.yml: :enabled: must be true, false, http or https"));
}
END_TEST

/* Port 0 is any free port, which the daemon's "listening on" log line names: how the daemon
 * suites start it. */
START_TEST(port_zero)
{
    struct sp_settings s;
    struct sp_error err;

    ck_assert_msg(load(":http_port: 0\n:https_port: 0\n", &s, &err) == 0, "%s", err.text);
    ck_assert_str_eq(dump(sp_setting(&s, "http_port")), "0");
    ck_assert_str_eq(dump(sp_setting(&s, "https_port")), "0");
    sp_settings_free(&s);
    ck_assert_int_eq(load(":http_port: -1\n", &s, &err), -EINVAL);
}
END_TEST

START_TEST(yaml_scalars)
{
    struct sp_settings s;
    struct sp_error err;

    ck_assert_msg(load(":a: yes\n:b: off\n:c: ~\n:d: 0x1f\n:e: -12\n:f: 2.5\n:g: 1.2.3.4\n"
                       ":h: '8000'\n:i: :symbol\n:j: &x [1, 2]\n:k: *x\n:l: \"true\"\n",
                       &s, &err) == 0,
                  "%s", err.text);
    ck_assert_str_eq(dump(sp_setting(&s, "a")), "true");
    ck_assert_str_eq(dump(sp_setting(&s, "b")), "false");
    ck_assert_str_eq(dump(sp_setting(&s, "c")), "null");
    ck_assert_str_eq(dump(sp_setting(&s, "d")), "31");
    ck_assert_str_eq(dump(sp_setting(&s, "e")), "-12");
    ck_assert_str_eq(dump(sp_setting(&s, "f")), "2.5");
    ck_assert_str_eq(dump(sp_setting(&s, "g")), "\"1.2.3.4\"");
    ck_assert_str_eq(dump(sp_setting(&s, "h")), "\"8000\"");
    ck_assert_str_eq(dump(sp_setting(&s, "i")), "\"symbol\"");
    ck_assert_str_eq(dump(sp_setting(&s, "k")), "[1,2]");
    ck_assert_str_eq(dump(sp_setting(&s, "l")), "\"true\"");
    sp_settings_free(&s);
}
END_TEST

/* A module at "/" makes the core: loopback unless :bind_host: is given, and the serial of its
 * certificate, which must be readable; upstream core keys are refused with their names here. */
START_TEST(core)
{
    struct sp_settings s;
    struct sp_error err;
    char text[1024];

    scratch_write(dir, "settings.d/dynflow.yml", ":enabled: true\n:mount: /\n");
    ck_assert_int_eq(load("---\n", &s, &err), 0);
    ck_assert(s.core);
    ck_assert_str_eq(dump(sp_setting(&s, "bind_host")), "[\"127.0.0.1\"]");
    ck_assert_str_eq(s.core_serial, "");
    sp_settings_free(&s);
    ck_assert_int_eq(load(":bind_host: '*'\n", &s, &err), 0);
    ck_assert_str_eq(dump(sp_setting(&s, "bind_host")), "[\"*\"]");
    sp_settings_free(&s);

    scratch_certs(dir);
    snprintf(text, sizeof(text), ":ssl_certificate: %s/server.pem\n", dir);
    ck_assert_int_eq(load(text, &s, &err), 0);
    ck_assert_uint_ge(strlen(s.core_serial), 2);
    sp_settings_free(&s);
    snprintf(text, sizeof(text), ":foreman_ssl_cert: %s/missing.pem\n", dir);
    ck_assert_int_eq(load(text, &s, &err), -EINVAL);
    ck_assert_msg(strstr(err.text, "settings.yml: the core accepts clients by the serial of ") &&
                      strstr(err.text, "missing.pem: cannot read the certificate"),
                  "%s", err.text);

    /* upstream's :port: alone: HTTP, still on loopback */
    ck_assert_int_eq(load(":port: 8008\n", &s, &err), 0);
    ck_assert(s.core);
    ck_assert_str_eq(dump(sp_setting(&s, "http_port")), "8008");
    ck_assert_str_eq(dump(sp_setting(&s, "bind_host")), "[\"127.0.0.1\"]");
    sp_settings_free(&s);

    scratch_write(dir, "settings.d/dynflow.yml", ":enabled: false\n:mount: /\n");
    ck_assert_int_eq(load("---\n", &s, &err), 0);
    ck_assert(!s.core);
    ck_assert_str_eq(dump(sp_setting(&s, "bind_host")), "[\"*\"]");
    sp_settings_free(&s);
}
END_TEST

/* smart_proxy_dynflow_core's :listen:, :port: and :use_https: (reference/protocol.md §9.3) are
 * the smart-proxy keys they name; set with those to another value, they stop the start. */
START_TEST(upstream_core_keys)
{
    static const struct {
        const char *text, *bind_host, *http_port, *https_port;
    } maps[] = {
        {":listen: 127.0.0.1\n:port: '8008'\n:use_https: true\n", "[\"127.0.0.1\"]", "(null)",
         "8008"},
        {":listen: 0.0.0.0\n:port: 9000\n", "[\"0.0.0.0\"]", "9000", "(null)"},
        {":port: 9000\n:use_https: false\n", "[\"*\"]", "9000", "(null)"},
        {":use_https: true\n", "[\"*\"]", "(null)", "8008"},
        {":use_https: false\n", "[\"*\"]", "8008", "(null)"},
        {":use_https: true\n:https_port: 8443\n", "[\"*\"]", "(null)", "8443"},
        {":use_https: false\n:http_port: 8000\n", "[\"*\"]", "8000", "(null)"},
        {":listen: 127.0.0.1\n:bind_host: [127.0.0.1]\n:port: 8008\n:http_port: '8008'\n",
         "[\"127.0.0.1\"]", "8008", "(null)"},
        {":port: 8008\n:use_https: true\n:https_port: 8008\n:http_port: 8000\n", "[\"*\"]", "8000",
         "8008"},
    };
    static const struct {
        const char *text, *message;
    } conflicts[] = {
        {":listen: 127.0.0.1\n:bind_host: '*'\n",
         ":listen: \"127.0.0.1\" and :bind_host: \"*\" disagree: set one of them"},
        {":port: 8008\n:use_https: true\n:https_port: 8443\n",
         ":port: 8008 and :https_port: 8443 disagree: set one of them"},
        {":port: '8008'\n:http_port: 8000\n",
         ":port: 8008 and :http_port: 8000 disagree: set one of them"},
        {":use_https: false\n:https_port: 8443\n",
         ":use_https: false and :https_port: 8443 disagree: set one of them"},
        {":use_https: false\n:http_port: 8000\n:https_port: 8443\n",
         ":use_https: false and :https_port: 8443 disagree"},
    };
    struct sp_settings s;
    struct sp_error err;

    for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
        ck_assert_msg(load(maps[i].text, &s, &err) == 0, "%s: %s", maps[i].text, err.text);
        ck_assert_str_eq(dump(sp_setting(&s, "bind_host")), maps[i].bind_host);
        ck_assert_str_eq(dump(sp_setting(&s, "http_port")), maps[i].http_port);
        ck_assert_str_eq(dump(sp_setting(&s, "https_port")), maps[i].https_port);
        sp_settings_free(&s);
    }
    for (size_t i = 0; i < sizeof(conflicts) / sizeof(conflicts[0]); i++) {
        ck_assert_int_eq(load(conflicts[i].text, &s, &err), -EINVAL);
        ck_assert_msg(strstr(err.text, path) != NULL, "no file name in: %s", err.text);
        ck_assert_msg(strstr(err.text, conflicts[i].message) != NULL, "%s", err.text);
    }

    /* the core: :listen: is its bind address, as :bind_host: would be */
    scratch_write(dir, "settings.d/dynflow.yml", ":enabled: true\n:mount: /\n");
    ck_assert_int_eq(load(":listen: 0.0.0.0\n:port: 8008\n:use_https: true\n", &s, &err), 0);
    ck_assert(s.core);
    ck_assert_str_eq(dump(sp_setting(&s, "bind_host")), "[\"0.0.0.0\"]");
    ck_assert_str_eq(dump(sp_setting(&s, "https_port")), "8008");
    sp_settings_free(&s);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("settings");
    TCase *tc = tcase_create("settings");
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, defaults);
    tcase_add_test(tc, every_key);
    tcase_add_test(tc, wrong_types);
    tcase_add_test(tc, modules);
    tcase_add_test(tc, port_zero);
    tcase_add_test(tc, yaml_scalars);
    tcase_add_test(tc, core);
    tcase_add_test(tc, upstream_core_keys);
    suite_add_tcase(suite, tc);
    failed = run_suite(suite);
    return failed;
}
