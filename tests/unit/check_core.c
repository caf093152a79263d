/*
 * smart-proxyd as the standalone core (dynflow.so mounted at "/"): whom it accepts over HTTPS
 * (its own certificate's serial, or :trusted_hosts:), the log line of each refusal, TLS 1.1
 * refused, HTTP on loopback only unless :bind_host: says otherwise; the example settings, and
 * the systemd units (with systemd-analyze verify where it exists).
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemonutil.h"
#include "foreman.h"
#include "httputil.h"
#include "suite.h"

static char log_path[700];
static pid_t pid;
static int out_fd;

static void setup(void)
{
    char sub[600];

    scratch_new(workdir, sizeof(workdir), "core");
    scratch_certs(workdir);
    snprintf(sub, sizeof(sub), "%s/settings.d", workdir);
    mkdir(sub, 0700);
    scratch_write(workdir, "settings.d/dynflow.yml", ":enabled: true\n:mount: /\n:database:\n");
    snprintf(log_path, sizeof(log_path), "%s/core.log", workdir);
    pid = 0;
}

static void teardown(void)
{
    if (pid > 0) {
        kill(pid, SIGTERM);
        ck_assert_int_eq(finish(pid), 0);
        close(out_fd);
    }
    scratch_remove(workdir);
}

/* settings.yml of a core on port: HTTPS with the test CA's server certificate, or HTTP; then
 * the lines in extra. */
static void core_settings(bool https, const char *extra)
{
    char settings[4096], tls[2048] = "";

    if (https)
        snprintf(tls, sizeof(tls),
                 ":ssl_certificate: %s/server.pem\n:ssl_private_key: %s/server.key\n"
                 ":ssl_ca_file: %s/ca.pem\n",
                 workdir, workdir, workdir);
    snprintf(settings, sizeof(settings), "%s %u\n%s:module_directory: %s\n:log_file: %s\n%s",
             https ? ":https_port:" : ":http_port:", port, tls, getenv("DYNFLOW_MODULE_DIR"),
             log_path, extra);
    scratch_write(workdir, "settings.yml", settings);
}

static void core_start(bool https, const char *extra)
{
    port = free_port();
    core_settings(https, extra);
    pid = start(NULL, &out_fd);
    ck_assert_msg(file_has(log_path, "listening on"), "the core did not start: %s",
                  read_until(out_fd, "listening on"));
}

static void assert_logged(const char *needle)
{
    ck_assert_msg(file_has(log_path, needle), "no log line with '%s'", needle);
}

/* Without :trusted_hosts: the core's own Foreman certificate is the only one it accepts. */
START_TEST(serial_of_the_foreman_certificate)
{
    char extra[700];
    struct reply r;

    snprintf(extra, sizeof(extra), ":foreman_ssl_cert: %s/client.pem\n", workdir);
    core_start(true, extra);
    r = call_tls("GET", "/tasks/count", NULL, workdir, "client", 0);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ck_assert_str_eq(r.body, "{\"count\":0,\"state\":\"all\"}");

    r = call_tls("GET", "/tasks/count", NULL, workdir, "stranger", 0);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(r.body, "{\"error\":\"SSL certificate with unexpected serial supplied\"}");
    assert_logged("refused GET /tasks/count from 127.0.0.1: client certificate CN "
                  "stranger.example.com has serial ");

    r = call_tls("GET", "/tasks/count", NULL, workdir, NULL, 0);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(r.body, "{\"error\":\"No client SSL certificate supplied\"}");
    assert_logged("refused GET /tasks/count from 127.0.0.1: no client certificate");

    r = call_tls("GET", "/tasks/count", NULL, workdir, "rogue", 0); /* the same CN, another CA */
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(r.body, "{\"error\":\"No client SSL certificate supplied\"}");
    assert_logged("refused GET /tasks/count from 127.0.0.1: the client certificate does not "
                  "verify against :ssl_ca_file: (");

    r = call_tls("GET", "/tasks/count", NULL, workdir, "client", CURL_SSLVERSION_MAX_TLSv1_1);
    ck_assert_int_eq(r.status, 0);
    r = call_tls("GET", "/features", NULL, workdir, NULL,
                 0); /* what needs no authorization stays open */
    ck_assert_int_eq(r.status, 200);
}
END_TEST

/* Without :foreman_ssl_cert: the serial is that of :ssl_certificate:. */
START_TEST(serial_of_the_server_certificate)
{
    struct reply r;

    core_start(true, "");
    r = call_tls("GET", "/tasks/count", NULL, workdir, "server", 0);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    r = call_tls("GET", "/tasks/count", NULL, workdir, "client", 0);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(r.body, "{\"error\":\"SSL certificate with unexpected serial supplied\"}");
}
END_TEST

/* With :trusted_hosts: the CN decides, whatever the serial. */
START_TEST(trusted_hosts_replace_the_serial)
{
    char extra[700];
    struct reply r;

    snprintf(extra, sizeof(extra),
             ":foreman_ssl_cert: %s/client.pem\n:trusted_hosts: [Stranger.example.com]\n", workdir);
    core_start(true, extra);
    r = call_tls("GET", "/tasks/count", NULL, workdir, "stranger", 0);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    r = call_tls("GET", "/tasks/count", NULL, workdir, "client", 0);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(r.body, "{\"error\":\"Untrusted client foreman.example.com attempted to "
                             "access /tasks/count. Check :trusted_hosts: in settings.yml\"}");
    assert_logged("refused GET /tasks/count from 127.0.0.1: client certificate CN "
                  "foreman.example.com is not in :trusted_hosts:");
}
END_TEST

/* The core runs a plugin's job and calls Foreman back itself, with its Foreman certificate. */
START_TEST(job_calls_foreman_back)
{
    char extra[2048], dynflow[1024], cmd[1024], sub[600];
    struct reply r;
    json_t *cb;

    foreman_start(workdir);
    snprintf(sub, sizeof(sub), "%s/plugins", workdir);
    mkdir(sub, 0700);
    snprintf(cmd, sizeof(cmd), "cp %s/script.so %s/", getenv("SCRIPT_PLUGIN_DIR"), sub);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(dynflow, sizeof(dynflow), ":enabled: true\n:mount: /\n:plugin_directory: %s\n", sub);
    scratch_write(workdir, "settings.d/dynflow.yml", dynflow);
    scratch_write(workdir, "settings.d/script.yml",
                  ":enabled: true\n:tasks:\n  - :kind: hello\n    :shell: true\n"
                  "    :command: 'echo \"hello $INPUT_WHO\"'\n");
    snprintf(extra, sizeof(extra),
             ":foreman_url: https://localhost:%u\n:foreman_ssl_cert: %s/client.pem\n"
             ":foreman_ssl_key: %s/client.key\n:foreman_ssl_ca: %s/ca.pem\n",
             foreman_port, workdir, workdir, workdir);
    core_start(true, extra);
    r = call_tls("POST", "/tasks/launch",
                 "{\"operation\":\"script\",\"input\":{\"11111111-1111-4111-8111-111111111111\":"
                 "{\"action_input\":{\"kind\":\"hello\",\"input\":{\"who\":\"core\"},"
                 "\"callback\":{\"task_id\":\"fa\",\"step_id\":3}}}}}",
                 workdir, "client", 0);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    for (int i = 0; i < 2000 && atomic_load(&received) == 0; i++)
        usleep(10000);
    cb = callback_for("fa");
    ck_assert_msg(cb != NULL, "no callback at Foreman");
    ck_assert_str_eq(client_cns[0], "foreman.example.com");
    ck_assert_str_eq(
        json_string_value(json_object_get(
            json_array_get(json_object_get(json_object_get(cb, "data"), "result"), 0), "output")),
        "hello core\n");
    json_decref(cb);
    kill(pid, SIGTERM);
    ck_assert_int_eq(finish(pid), 0);
    close(out_fd);
    pid = 0;
    foreman_stop();
}
END_TEST

/* SIGHUP reads the accepted serial again; a reload that would end the core role is refused. */
START_TEST(reload)
{
    char extra[700];
    struct reply r;

    snprintf(extra, sizeof(extra), ":foreman_ssl_cert: %s/client.pem\n", workdir);
    core_start(true, extra);
    ck_assert_int_eq(call_tls("GET", "/tasks/count", NULL, workdir, "stranger", 0).status, 403);

    snprintf(extra, sizeof(extra), ":foreman_ssl_cert: %s/stranger.pem\n", workdir);
    core_settings(true, extra);
    kill(pid, SIGHUP);
    assert_logged("settings reloaded from");
    r = call_tls("GET", "/tasks/count", NULL, workdir, "stranger", 0);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ck_assert_int_eq(call_tls("GET", "/tasks/count", NULL, workdir, "client", 0).status, 403);

    scratch_write(workdir, "settings.d/dynflow.yml", ":enabled: true\n:database:\n");
    kill(pid, SIGHUP);
    assert_logged("makes smart-proxyd a proxy (no module at /), which takes a restart; the "
                  "running settings stay");
    ck_assert_int_eq(call_tls("GET", "/tasks/count", NULL, workdir, "stranger", 0).status, 200);
}
END_TEST

/* The listening socket of port, from /proc/net/tcp: its local IPv4 address in hex. */
static const char *listening_address(unsigned p)
{
    static char addr[16];
    char line[512], tail[64];
    FILE *f = fopen("/proc/net/tcp", "r");

    addr[0] = '\0';
    snprintf(tail, sizeof(tail), ":%04X 00000000:0000 0A", p);
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        char *hit = strstr(line, tail);
        if (hit != NULL && hit - line >= 8)
            snprintf(addr, sizeof(addr), "%.8s", hit - 8);
    }
    if (f != NULL)
        fclose(f);
    return addr;
}

/* Over HTTP the core checks nobody, so by default it listens on 127.0.0.1 only. */
START_TEST(http_on_loopback_only)
{
    char expected[128];
    struct reply r;
    pid_t check;
    int fd;

    core_start(false, "");
    snprintf(expected, sizeof(expected), "listening on http://127.0.0.1:%u", port);
    assert_logged(expected);
    ck_assert_str_eq(listening_address(port), "0100007F");
    r = call("GET", "/tasks/count", NULL, NULL);
    ck_assert_int_eq(r.status, 200);

    /* told otherwise, it says what that opens (checked without listening beyond loopback) */
    core_settings(false, ":bind_host: '*'\n");
    check = start("--check-config", &fd);
    ck_assert_int_eq(finish(check), 0);
    close(fd);
    assert_logged(":bind_host: * opens the core's HTTP port");
}
END_TEST

/* An upstream smart_proxy_dynflow_core settings.yml: :listen:, :port: (a string, as in upstream's
 * example) and :use_https: true are the HTTPS listener, with the serial rule. */
START_TEST(upstream_settings_serve)
{
    char settings[4096], expected[128];
    struct reply r;

    port = free_port();
    snprintf(settings, sizeof(settings),
             ":listen: 127.0.0.1\n:port: '%u'\n:use_https: true\n:ssl_certificate: %s/server.pem\n"
             ":ssl_private_key: %s/server.key\n:ssl_ca_file: %s/ca.pem\n"
             ":foreman_ssl_cert: %s/client.pem\n:module_directory: %s\n:log_file: %s\n",
             port, workdir, workdir, workdir, workdir, getenv("DYNFLOW_MODULE_DIR"), log_path);
    scratch_write(workdir, "settings.yml", settings);
    pid = start(NULL, &out_fd);
    snprintf(expected, sizeof(expected), "listening on https://127.0.0.1:%u", port);
    ck_assert_msg(file_has(log_path, expected), "the core did not start: %s",
                  read_until(out_fd, "listening on"));
    ck_assert_str_eq(listening_address(port), "0100007F");
    r = call_tls("GET", "/tasks/count", NULL, workdir, "client", 0);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ck_assert_str_eq(r.body, "{\"count\":0,\"state\":\"all\"}");
    r = call_tls("GET", "/tasks/count", NULL, workdir, "stranger", 0);
    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(r.body, "{\"error\":\"SSL certificate with unexpected serial supplied\"}");
}
END_TEST

/* The example settings of the core, with the test's certificates, port, database and log. */
START_TEST(example_settings_serve)
{
    char cmd[4096];
    struct reply r;

    port = free_port();
    ck_assert_int_lt(
        snprintf(cmd, sizeof(cmd),
                 "sed -e 's|/etc/foreman-proxy/ssl_cert.pem|%1$s/server.pem|' "
                 "-e 's|/etc/foreman-proxy/ssl_key.pem|%1$s/server.key|' "
                 "-e 's|/etc/foreman-proxy/foreman_ssl_cert.pem|%1$s/client.pem|' "
                 "-e 's|/etc/foreman-proxy/foreman_ssl_key.pem|%1$s/client.key|' "
                 "-e 's|/etc/foreman-proxy/[a-z_]*ca.pem|%1$s/ca.pem|' -e 's|8008|%2$u|' "
                 "-e 's|JOURNAL|%1$s/core.log|' '%3$s/settings.yml' >'%1$s/settings.yml' && "
                 "sed -e 's|/var/lib/smart-proxy-dynflow-core|%1$s|' '%3$s/settings.d/dynflow.yml' "
                 ">'%1$s/settings.d/dynflow.yml' && echo ':module_directory: %4$s' "
                 ">>'%1$s/settings.yml'",
                 workdir, port, getenv("CORE_EXAMPLE"), getenv("DYNFLOW_MODULE_DIR")),
        (int)sizeof(cmd));
    ck_assert_int_eq(system(cmd), 0);
    pid = start(NULL, &out_fd);
    ck_assert_msg(file_has(log_path, "listening on https://127.0.0.1:"),
                  "the example core did not start: %s", read_until(out_fd, "listening on"));
    r = call_tls("GET", "/tasks/count", NULL, workdir, "client", 0);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    r = call_tls("GET", "/tasks/count", NULL, workdir, "stranger", 0);
    ck_assert_int_eq(r.status, 403);
}
END_TEST

/* What the units must say, built from the .service.in files with the installation paths. */
static const char *const unit_lines[] = {
    "\nType=notify\n",        "\nExecReload=/bin/kill -HUP $MAINPID\n",
    "\nRestart=on-failure\n", "\nUser=foreman-proxy\n",
    "\nLimitNOFILE=65536\n",  "\nNoNewPrivileges=yes\n",
    "\nStateDirectory=",      "\nExecStart=/",
};

static const char *const units[] = {"smart-proxyd.service", "smart-proxy-dynflow-core.service"};

START_TEST(systemd_units)
{
    char path[700], copy[700], cmd[2048], text[4096] = "\n", out[4096] = "";
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "%s/%s", getenv("SYSTEMD_UNITS"), units[_i]);
    f = fopen(path, "r");
    ck_assert_msg(f != NULL, "no unit %s", path);
    n = fread(text + 1, 1, sizeof(text) - 2, f);
    text[n + 1] = '\0';
    fclose(f);
    for (size_t i = 0; i < sizeof(unit_lines) / sizeof(unit_lines[0]); i++)
        ck_assert_msg(strstr(text, unit_lines[i]) != NULL, "%s lacks %s", path, unit_lines[i]);
    ck_assert_msg(strchr(text, '@') == NULL, "%s has an unsubstituted @name@", path);
    ck_assert_ptr_nonnull(strstr(text, "/smart-proxyd --config /"));

    if (system("command -v systemd-analyze >/dev/null") != 0) {
        printf("systemd-analyze not found: %s not verified by it\n", units[_i]);
        return;
    }
    /* the binary is not installed yet: the built one stands in for it */
    snprintf(copy, sizeof(copy), "%s/%s", workdir, units[_i]);
    ck_assert_int_lt(
        snprintf(cmd, sizeof(cmd),
                 "sed 's|^ExecStart=[^ ]*|ExecStart=%s|' '%s' >'%s' && systemd-analyze verify '%s' "
                 "2>&1",
                 getenv("SMART_PROXYD"), path, copy, copy),
        (int)sizeof(cmd));
    f = popen(cmd, "r");
    n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = '\0';
    ck_assert_msg(pclose(f) == 0 && n == 0, "systemd-analyze verify %s: %s", units[_i], out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("core");
    int failed;

    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_ALL);
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, serial_of_the_foreman_certificate);
    tcase_add_test(tc, serial_of_the_server_certificate);
    tcase_add_test(tc, trusted_hosts_replace_the_serial);
    tcase_add_test(tc, job_calls_foreman_back);
    tcase_add_test(tc, reload);
    tcase_add_test(tc, http_on_loopback_only);
    tcase_add_test(tc, upstream_settings_serve);
    tcase_add_test(tc, example_settings_serve);
    tcase_add_loop_test(tc, systemd_units, 0, sizeof(units) / sizeof(units[0]));
    suite_add_tcase(s, tc);
    failed = run_suite(s);
    curl_global_cleanup();
    return failed;
}
