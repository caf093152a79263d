/* smart-proxyd as a process: --check-config, start-up, root routes, module errors, SIGTERM,
 * systemd notifications. */
#include <check.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemonutil.h"
#include "httputil.h"
#include "suite.h"

static void setup(void)
{
    char sub[600];

    scratch_new(workdir, sizeof(workdir), "daemon");
    snprintf(sub, sizeof(sub), "%s/settings.d", workdir);
    mkdir(sub, 0700);
}

static void teardown(void)
{
    scratch_remove(workdir);
}

START_TEST(check_config)
{
    int fd;
    pid_t pid;
    const char *out;

    scratch_write(workdir, "settings.yml", ":http_port: 8000\n");
    pid = start("--check-config", &fd);
    out = read_until(fd, "settings OK");
    ck_assert_ptr_nonnull(strstr(out, "settings OK"));
    ck_assert_int_eq(finish(pid), 0);
    close(fd);

    scratch_write(workdir, "settings.yml", ":http_port: eighty\n");
    pid = start("--check-config", &fd);
    out = read_until(fd, "found");
    ck_assert_ptr_nonnull(strstr(out, "settings.yml: :http_port: must be a port number"));
    ck_assert_int_eq(finish(pid), 1);
    close(fd);
}
END_TEST

START_TEST(serves_and_stops)
{
    char settings[256], dynflow[256];
    int fd;
    pid_t pid;
    const char *out;
    struct reply r;

    port = free_port();
    snprintf(settings, sizeof(settings),
             ":http_port: %u\n:bind_host: 127.0.0.1\n:module_directory: %s\n", port,
             getenv("DYNFLOW_MODULE_DIR"));
    scratch_write(workdir, "settings.yml", settings);
    snprintf(dynflow, sizeof(dynflow), ":enabled: true\n:database:\n");
    scratch_write(workdir, "settings.d/dynflow.yml", dynflow);
    scratch_write(workdir, "settings.d/disabled.yml", ":enabled: false\n");
    pid = start(NULL, &fd);
    out = read_until(fd, "listening on");
    ck_assert_msg(strstr(out, "listening on") != NULL, "%s", out);

    r = call("GET", "/features", NULL, NULL);
    ck_assert_str_eq(r.body, "[\"dynflow\"]");
    r = call("GET", "/version", NULL, NULL);
    ck_assert_ptr_nonnull(strstr(r.body, "\"modules\":{\"dynflow\":\"0.1.0\"}"));
    r = call("GET", "/v2/features", NULL, NULL);
    ck_assert_str_eq(r.body,
                     "{\"dynflow\":{\"http_enabled\":true,\"https_enabled\":false,"
                     "\"settings\":{},\"state\":\"running\",\"capabilities\":[\"single\"]}}");
    r = call("GET", "/dynflow/tasks/count", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    kill(pid, SIGTERM);
    ck_assert_int_eq(finish(pid), 0);
    close(fd);
}
END_TEST

/* settings.d files of modules that do not exist (Foreman's installer writes many) are said and
 * left; the proxy runs. */
START_TEST(settings_without_a_module_are_ignored)
{
    char settings[256];
    int fd;
    pid_t pid;
    const char *out;
    struct reply r;

    port = free_port();
    snprintf(settings, sizeof(settings),
             ":http_port: %u\n:bind_host: 127.0.0.1\n:module_directory: %s\n", port,
             getenv("DYNFLOW_MODULE_DIR"));
    scratch_write(workdir, "settings.yml", settings);
    scratch_write(workdir, "settings.d/logs.yml", ":enabled: true\n");
    pid = start(NULL, &fd);
    out = read_until(fd, "listening on");
    ck_assert_msg(strstr(out, "settings.d/logs.yml enables 'logs', but ") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "/logs.so does not exist and no module reads that file: ignored") !=
                      NULL,
                  "%s", out);
    r = call("GET", "/features", NULL, NULL);
    ck_assert_str_eq(r.body, "[]");
    kill(pid, SIGTERM);
    ck_assert_int_eq(finish(pid), 0);
    close(fd);
}
END_TEST

/* SIGHUP applies new trusted hosts at once; SIGUSR1 reopens a rotated log file. */
/* Each key of settings.d/dynflow.yml with a wrong type stops the start, naming file and key. */
static const struct {
    const char *line, *message;
} bad_dynflow[] = {
    {":database: [a, b]\n", ":database: must be a string"},
    {":console_auth: sometimes\n", ":console_auth: must be true or false"},
    {":execution_plan_cleaner_age: soon\n", ":execution_plan_cleaner_age: must be a number"},
    {":pool_size: -1\n", ":pool_size: must be a number"},
    {":plugin_directory: 42\n", ":plugin_directory: must be a string"},
    {":max_concurrent_runners: lots\n", ":max_concurrent_runners: must be a number"},
    {":runner_refresh_interval: often\n", ":runner_refresh_interval: must be a number"},
};

START_TEST(bad_dynflow_settings_are_refused)
{
    char settings[256], dynflow[256], expected[256];
    int fd;
    pid_t pid;
    const char *out;

    snprintf(settings, sizeof(settings), ":http_port: %u\n:module_directory: %s\n", free_port(),
             getenv("DYNFLOW_MODULE_DIR"));
    scratch_write(workdir, "settings.yml", settings);
    snprintf(dynflow, sizeof(dynflow), ":enabled: true\n%s", bad_dynflow[_i].line);
    scratch_write(workdir, "settings.d/dynflow.yml", dynflow);
    pid = start(NULL, &fd);
    snprintf(expected, sizeof(expected), "settings.d/dynflow.yml: %s", bad_dynflow[_i].message);
    out = read_until(fd, expected);
    ck_assert_msg(strstr(out, expected) != NULL, "%s", out);
    ck_assert_int_eq(finish(pid), 1);
    close(fd);
}
END_TEST

START_TEST(reload_and_log_rotation)
{
    char settings[1024], log[600], rotated[600];
    int fd;
    pid_t pid;
    struct reply r;
    FILE *f;

    port = free_port();
    snprintf(log, sizeof(log), "%s/proxy.log", workdir);
    snprintf(rotated, sizeof(rotated), "%s/proxy.log.1", workdir);
    snprintf(settings, sizeof(settings),
             ":http_port: %u\n:bind_host: 127.0.0.1\n:module_directory: %s\n:log_file: %s\n", port,
             getenv("DYNFLOW_MODULE_DIR"), log);
    scratch_write(workdir, "settings.yml", settings);
    scratch_write(workdir, "settings.d/dynflow.yml", ":enabled: true\n");
    pid = start(NULL, &fd);
    ck_assert_msg(file_has(log, "listening on"), "smart-proxyd did not start");
    r = call("GET", "/dynflow/tasks/count", NULL, NULL);
    ck_assert_int_eq(r.status, 200);

    strncat(settings, ":trusted_hosts: [foreman.example.com]\n",
            sizeof(settings) - strlen(settings) - 1);
    scratch_write(workdir, "settings.yml", settings);
    kill(pid, SIGHUP);
    for (int i = 0; i < 500 && (r = call("GET", "/dynflow/tasks/count", NULL, NULL)).status != 403;
         i++)
        usleep(10000);
    ck_assert_int_eq(r.status, 403);
    ck_assert_msg(file_has(log, "refused GET /dynflow/tasks/count from 127.0.0.1: client "),
                  "the refusal was not logged");
    ck_assert(file_has(log, " is not in :trusted_hosts:"));
    ck_assert_int_eq(call("GET", "/features", NULL, NULL).status, 200); /* open routes stay open */

    ck_assert_int_eq(rename(log, rotated), 0);
    kill(pid, SIGUSR1);
    for (int i = 0; i < 500 && access(log, F_OK) != 0; i++) {
        call("GET", "/features", NULL, NULL);
        usleep(10000);
    }
    f = fopen(log, "r");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    kill(pid, SIGTERM);
    ck_assert_int_eq(finish(pid), 0);
    close(fd);
}
END_TEST

/* The next datagram on sock (within 10 s), or "" */
static char *notification(int sock)
{
    static char msg[512];
    struct pollfd p = {.fd = sock, .events = POLLIN};
    ssize_t n = poll(&p, 1, 10000) == 1 ? recv(sock, msg, sizeof(msg) - 1, 0) : -1;

    msg[n > 0 ? n : 0] = '\0';
    return msg;
}

/* Can a TCP connection to 127.0.0.1:port be made now? */
static bool accepts(unsigned p)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)p),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;

    close(fd);
    return ok;
}

/* Type=notify: READY=1 (with MAINPID) once the port accepts, RELOADING=1 and READY=1 around a
 * SIGHUP, STOPPING=1 at SIGTERM; over an abstract AF_UNIX socket, the way systemd listens. */
START_TEST(notifies_systemd)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char settings[256], name[64], ready[64];
    int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0), fd;
    pid_t pid;

    snprintf(name, sizeof(name), "@smart-proxyd-check-%d", getpid());
    memcpy(sa.sun_path + 1, name + 1, strlen(name) - 1);
    ck_assert_int_eq(bind(sock, (struct sockaddr *)&sa,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(name))),
                     0);
    setenv("NOTIFY_SOCKET", name, 1);
    port = free_port();
    snprintf(settings, sizeof(settings),
             ":http_port: %u\n:bind_host: 127.0.0.1\n:module_directory: %s\n", port,
             getenv("DYNFLOW_MODULE_DIR"));
    scratch_write(workdir, "settings.yml", settings);
    scratch_write(workdir, "settings.d/dynflow.yml", ":enabled: true\n");
    pid = start(NULL, &fd);
    snprintf(ready, sizeof(ready), "READY=1\nMAINPID=%d", (int)pid);
    ck_assert_str_eq(notification(sock), ready); /* the first message, and then it accepts */
    ck_assert(accepts(port));
    ck_assert_int_eq(call("GET", "/dynflow/tasks/count", NULL, NULL).status, 200);

    kill(pid, SIGHUP);
    ck_assert_str_eq(strtok(notification(sock), "\n"), "RELOADING=1");
    ck_assert_str_eq(strtok(NULL, "="), "MONOTONIC_USEC");
    ck_assert_str_eq(notification(sock), "READY=1");
    kill(pid, SIGTERM);
    ck_assert_str_eq(notification(sock), "STOPPING=1");
    ck_assert_int_eq(finish(pid), 0);
    close(fd);
    close(sock);
}
END_TEST

/* An unusable NOTIFY_SOCKET stops the start with a message naming it. */
START_TEST(bad_notify_socket_is_refused)
{
    char settings[256];
    const char *out;
    int fd;
    pid_t pid;

    setenv("NOTIFY_SOCKET", "relative/socket", 1);
    snprintf(settings, sizeof(settings), ":http_port: %u\n:bind_host: 127.0.0.1\n", free_port());
    scratch_write(workdir, "settings.yml", settings);
    pid = start(NULL, &fd);
    out = read_until(fd, "NOTIFY_SOCKET");
    ck_assert_msg(strstr(out, "NOTIFY_SOCKET 'relative/socket' is not an AF_UNIX socket") != NULL,
                  "%s", out);
    ck_assert_int_eq(finish(pid), 1);
    close(fd);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("daemon");
    TCase *tc = tcase_create("daemon");
    int failed;

    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_ALL);
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, check_config);
    tcase_add_test(tc, serves_and_stops);
    tcase_add_test(tc, settings_without_a_module_are_ignored);
    tcase_add_test(tc, reload_and_log_rotation);
    tcase_add_test(tc, notifies_systemd);
    tcase_add_test(tc, bad_notify_socket_is_refused);
    tcase_add_loop_test(tc, bad_dynflow_settings_are_refused, 0,
                        sizeof(bad_dynflow) / sizeof(bad_dynflow[0]));
    suite_add_tcase(s, tc);
    failed = run_suite(s);
    curl_global_cleanup();
    return failed;
}
