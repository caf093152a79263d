/*
 * Remote execution end to end, as Foreman does it: smart-proxyd with the SSH
 * plugin, a Foreman-shaped batch launch (reference/protocol.md §6.7) against
 * a real sshd on 127.0.0.1, and the callbacks at a fake Foreman over HTTPS
 * with client certificates.  Also the feature and GET /ssh/pubkey.
 */
#include <signal.h>
#include <sys/stat.h>

#include "daemonutil.h"
#include "foreman.h"
#include "httputil.h"

static char sshd_dir[600], log_path[700], ssh_port[16], ssh_key[700];
static pid_t daemon_pid;
static int daemon_out;

/* A value of the sshd environment file. */
static void env_value(const char *key, char *out, size_t len)
{
    char path[700], line[1024], prefix[128];
    FILE *f;

    snprintf(path, sizeof(path), "%s/env", sshd_dir);
    snprintf(prefix, sizeof(prefix), "export %s=", key);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    out[0] = '\0';
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, prefix, strlen(prefix)) == 0)
            snprintf(out, len, "%.*s", (int)strcspn(line + strlen(prefix), "\n"),
                     line + strlen(prefix));
    fclose(f);
    ck_assert_msg(out[0] != '\0', "%s is not in %s", key, path);
}

static void setup(void)
{
    char cmd[1400], settings[4096], dynflow[1024], rex[1024], sub[800];

    scratch_new(workdir, sizeof(workdir), "rex");
    snprintf(sshd_dir, sizeof(sshd_dir), "%s/sshd", workdir);
    snprintf(cmd, sizeof(cmd), "%s/sshd.sh start %s >/dev/null", getenv("SSH_SCRIPTS"), sshd_dir);
    ck_assert_msg(system(cmd) == 0, "cannot start sshd");
    env_value("SSH_PORT", ssh_port, sizeof(ssh_port));
    env_value("SSH_KEY", ssh_key, sizeof(ssh_key));
    scratch_certs(workdir);
    foreman_start(workdir);
    snprintf(sub, sizeof(sub), "%s/settings.d", workdir);
    mkdir(sub, 0700);
    snprintf(sub, sizeof(sub), "%s/plugins", workdir);
    mkdir(sub, 0700);
    snprintf(cmd, sizeof(cmd), "cp %s/ssh.so %s/plugins/", getenv("SSH_PLUGIN_DIR"), workdir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(log_path, sizeof(log_path), "%s/proxy.log", workdir);
    port = free_port();
    snprintf(settings, sizeof(settings),
             ":http_port: %u\n:bind_host: 127.0.0.1\n:module_directory: %s\n"
             ":foreman_url: https://localhost:%u\n:foreman_ssl_cert: %s/client.pem\n"
             ":foreman_ssl_key: %s/client.key\n:foreman_ssl_ca: %s/ca.pem\n:log_file: %s\n",
             port, getenv("DYNFLOW_MODULE_DIR"), foreman_port, workdir, workdir, workdir, log_path);
    scratch_write(workdir, "settings.yml", settings);
    snprintf(dynflow, sizeof(dynflow), ":enabled: true\n:plugin_directory: %s/plugins\n", workdir);
    scratch_write(workdir, "settings.d/dynflow.yml", dynflow);
    snprintf(rex, sizeof(rex), ":enabled: true\n:ssh_identity_key_file: %s\n", ssh_key);
    scratch_write(workdir, "settings.d/remote_execution_ssh.yml", rex);
    /* the proxy user's known_hosts: the daemon's HOME */
    setenv("HOME", workdir, 1);
    snprintf(sub, sizeof(sub), "%s/.ssh", workdir);
    mkdir(sub, 0700);
    daemon_pid = start(NULL, &daemon_out);
    ck_assert_msg(file_has(log_path, "listening on"), "smart-proxyd did not start: %s",
                  read_until(daemon_out, "\n\n"));
}

static void teardown(void)
{
    char cmd[1400];

    kill(daemon_pid, SIGTERM);
    finish(daemon_pid);
    close(daemon_out);
    foreman_stop();
    snprintf(cmd, sizeof(cmd), "%s/sshd.sh stop %s", getenv("SSH_SCRIPTS"), sshd_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot stop sshd in %s\n", sshd_dir);
    scratch_remove(workdir);
}

START_TEST(feature_and_public_key)
{
    struct reply r = call("GET", "/features", NULL, NULL);
    char path[800], key[4096] = "";
    FILE *f;

    ck_assert_str_eq(r.body, "[\"dynflow\",\"script\"]");
    /* the SSH plugin's feature with its version, as upstream's smart_proxy_remote_execution_ssh */
    r = call("GET", "/version", NULL, NULL);
    ck_assert_msg(strstr(r.body, "\"modules\":{\"dynflow\":\"0.1.0\",\"script\":\"0.1.0\"}") !=
                      NULL,
                  "%s", r.body);
    r = call("GET", "/dynflow/tasks/operations", NULL, NULL);
    ck_assert_str_eq(r.body, "[\"single\",\"ssh\"]");
    r = call("GET", "/ssh/pubkey", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    snprintf(path, sizeof(path), "%s.pub", ssh_key);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert(fread(key, 1, sizeof(key) - 1, f) > 0);
    fclose(f);
    ck_assert_str_eq(r.body, key);
}
END_TEST

#define HOST_A "6c23de44-45f5-4aed-8169-139136711222"
#define HOST_B "7d34ef55-56a6-4bfe-9270-24a247822333"

/* One host's entry as Foreman builds it (§6.7). */
static void entry(char *out, size_t len, const char *key, const char *task, const char *script)
{
    snprintf(out, len,
             "\"%s\":{\"action_class\":\"Proxy::RemoteExecution::Ssh::Actions::RunScript\","
             "\"action_input\":{\"ssh_user\":\"rexuser\",\"effective_user\":\"rexuser\","
             "\"effective_user_method\":\"sudo\",\"cleanup_working_dirs\":true,"
             "\"remote_working_dir\":\"/var/tmp\",\"ssh_port\":%s,\"proxy_operation_name\":\"ssh\","
             "\"time_to_pickup\":86400,\"hostname\":\"127.0.0.1\",\"script\":\"%s\","
             "\"execution_timeout_interval\":null,\"secrets\":{\"ssh_password\":null,"
             "\"key_passphrase\":null,\"effective_user_password\":null},"
             "\"use_batch_triggering\":true,\"first_execution\":false,"
             "\"alternative_names\":{\"fqdn\":\"host.example.com\"},"
             "\"connection_options\":{\"retry_interval\":15,\"retry_count\":4,"
             "\"proxy_batch_triggering\":true},\"proxy_url\":\"https://proxy.example.com:9090\","
             "\"proxy_action_name\":\"Proxy::RemoteExecution::Ssh::Actions::RunScript\","
             "\"callback\":{\"task_id\":\"%s\",\"step_id\":3}}}",
             key, ssh_port, script, task);
}

START_TEST(foreman_shaped_batch)
{
    char a[4096], b[4096], body[9000];
    struct reply r;
    json_t *ca, *cb, *data;

    entry(a, sizeof(a), HOST_A, "task-a", "#!/bin/sh\\nuptime >/dev/null && echo up\\n");
    entry(b, sizeof(b), HOST_B, "task-b", "#!/bin/sh\\necho failing\\nexit 3\\n");
    snprintf(body, sizeof(body), "{\"operation\":\"ssh\",\"input\":{%s,%s},\"options\":{}}", a, b);
    r = call("POST", "/dynflow/tasks/launch", body, "Content-Type: application/json");
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strstr(r.body, "{\"parent\":{\"result\":\"success\",\"task_id\":\"") == r.body,
                  "%s", r.body);
    for (int i = 0; i < 3000 && atomic_load(&received) < 2; i++)
        usleep(10000);
    ck_assert_int_eq(atomic_load(&received), 2);
    ca = callback_for("task-a");
    cb = callback_for("task-b");
    ck_assert_ptr_nonnull(ca);
    ck_assert_ptr_nonnull(cb);
    data = json_object_get(ca, "data");
    ck_assert_int_eq(json_integer_value(json_object_get(data, "exit_status")), 0);
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(data, "result"), 0), "output")),
                     "up\r\n");
    ck_assert(json_is_string(json_object_get(data, "runner_id")));
    ck_assert(json_is_real(json_object_get(data, "exit_status_timestamp")));
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(cb, "data"), "exit_status")), 3);
    ck_assert_str_eq(client_cns[0], "foreman.example.com");
    json_decref(ca);
    json_decref(cb);
    /* Foreman polls the child by its key afterwards */
    r = call("GET", "/dynflow/tasks/" HOST_B "/status", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"label\":\"Proxy::RemoteExecution::Ssh::Actions::"
                                         "RunScript\""));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rex");
    TCase *tc = tcase_create("rex");
    int failed;

    curl_global_init(CURL_GLOBAL_ALL);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, feature_and_public_key);
    tcase_add_test(tc, foreman_shaped_batch);
    suite_add_tcase(s, tc);
    failed = run_suite(s);
    curl_global_cleanup();
    return failed;
}
