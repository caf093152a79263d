/*
 * The SSH plugin against a real sshd on 127.0.0.1 (tests/ssh/sshd.sh):
 * exit codes, the pty, CR stripping, auth methods and their fallback,
 * host keys, effective users with password prompts, cancel, timeout and
 * cleanup (reference/plugins.md §4.5).
 */
#include <dlfcn.h>
#include <signal.h>
#include <sys/stat.h>

#include "dynflow/plugin.h"
#include "runner/dispatcher.h"
#include "testutil.h"

static char env_dir[512], home[700];
static json_t *env; /* DIR/env as an object */
static void *handle;
static const struct df_plugin *plugin;
static void *plugin_state;
static struct df_plugin_host host;

static const char *E(const char *key)
{
    const char *v = json_string_value(json_object_get(env, key));

    ck_assert_msg(v != NULL, "%s is not in the sshd environment", key);
    return v;
}

static int port_of(const char *key)
{
    return atoi(E(key));
}

static void read_env(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024];

    ck_assert_msg(f != NULL, "no %s", path);
    env = json_object();
    while (fgets(line, sizeof(line), f) != NULL) {
        char *eq = strchr(line, '=');
        if (strncmp(line, "export ", 7) != 0 || eq == NULL)
            continue;
        *eq = '\0';
        eq[strcspn(eq + 1, "\n") + 1] = '\0';
        json_object_set_new(env, line + 7, json_string(eq + 1));
    }
    fclose(f);
}

static void suite_setup(void)
{
    char cmd[1200], path[1024];

    snprintf(env_dir, sizeof(env_dir), "%s/sshd-%d", tu_tmpdir(), getpid());
    snprintf(cmd, sizeof(cmd), "%s/sshd.sh start %s >/dev/null", getenv("SSH_SCRIPTS"), env_dir);
    ck_assert_msg(system(cmd) == 0, "cannot start sshd: %s", cmd);
    snprintf(path, sizeof(path), "%s/env", env_dir);
    read_env(path);
    snprintf(path, sizeof(path), "%s/ssh.so", getenv("SSH_PLUGIN_DIR"));
    handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    ck_assert_msg(handle != NULL, "%s", dlerror());
    plugin = dlsym(handle, DF_PLUGIN_SYMBOL);
    ck_assert_ptr_nonnull(plugin);
}

static void suite_teardown(void)
{
    char cmd[1200];

    snprintf(cmd, sizeof(cmd), "%s/sshd.sh stop %s", getenv("SSH_SCRIPTS"), env_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot stop sshd in %s\n", env_dir);
    json_decref(env);
    dlclose(handle);
}

/* Each test has a HOME of its own: its known_hosts. */
static void setup(void)
{
    char ssh_dir[800];

    snprintf(home, sizeof(home), "%s/home-%d-%ld", tu_tmpdir(), getpid(), random());
    mkdir(home, 0700);
    snprintf(ssh_dir, sizeof(ssh_dir), "%s/.ssh", home);
    mkdir(ssh_dir, 0700);
    setenv("HOME", home, 1);
}

static void host_log(void *ctx, int level, const char *fmt, ...)
{
    (void)ctx, (void)level, (void)fmt;
}

/* A world with the plugin; settings (steals) gets the test key unless it names one. */
static df_world *world_with(json_t *settings)
{
    df_error err;
    df_world *w = df_world_new(NULL, &err);

    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(
        df_runner_configure(w, &(struct df_runner_config){.refresh_interval = 0.1}, &err), 0);
    if (json_object_get(settings, "ssh_identity_key_file") == NULL)
        json_object_set_new(settings, "ssh_identity_key_file", json_string(E("SSH_KEY")));
    host = (struct df_plugin_host){.abi_major = DF_PLUGIN_ABI_MAJOR,
                                   .abi_minor = DF_PLUGIN_ABI_MINOR,
                                   .struct_size = sizeof(host),
                                   .world = w,
                                   .log = host_log};
    ck_assert_msg(plugin->init(&host, settings, &plugin_state, &err) == 0, "%s", err.text);
    json_decref(settings);
    ck_assert_msg(df_world_start(w, &err) == 0, "%s", err.text);
    return w;
}

static df_world *world(void)
{
    return world_with(json_object());
}

static void world_done(df_world *w)
{
    df_world_free(w);
    plugin->shutdown(plugin_state);
}

/* The input of §1.1 for script; extra (steals, may be NULL) is merged over it. */
static json_t *job_input(const char *script, json_t *extra)
{
    json_t *in = json_pack("{s:s, s:s, s:i, s:s, s:n, s:s, s:b, s:{s:n, s:n, s:n}}", "hostname",
                           E("SSH_HOST"), "ssh_user", E("SSH_USER"), "ssh_port",
                           port_of("SSH_PORT"), "script", script, "effective_user",
                           "effective_user_method", "sudo", "cleanup_working_dirs", 1, "secrets",
                           "ssh_password", "key_passphrase", "effective_user_password");

    if (extra != NULL) {
        json_t *secrets = json_object_get(extra, "secrets");
        if (secrets != NULL)
            json_object_update(json_object_get(in, "secrets"), secrets);
        json_object_del(extra, "secrets");
        json_object_update(in, extra);
        json_decref(extra);
    }
    return in;
}

static struct df_plan_info run_job(df_world *w, json_t *input, char *id, json_t **out)
{
    struct df_plan_info info =
        tu_run(w, "Proxy::RemoteExecution::Ssh::Actions::RunScript", input, id);

    *out = tu_output(w, id, 1);
    return info;
}

static json_int_t exit_of(const json_t *out)
{
    return json_integer_value(json_object_get(out, "exit_status"));
}

/* ---- running scripts --------------------------------------------------------------------------
 */

START_TEST(exit_codes_pty_and_cr)
{
    df_world *w = world();
    char id[DF_UUID_BUF];
    json_t *out;

    run_job(w, job_input("#!/bin/sh\r\necho out\r\necho err >&2\r\nexit 3\r\n", NULL), id, &out);
    ck_assert_int_eq(exit_of(out), 3);
    /* the pty merges stderr into stdout and ends lines with \r\n; \r of the script is gone */
    ck_assert_msg(strstr(tu_records_text(out, "stdout"), "out\r\n") != NULL, "%s",
                  tu_records_text(out, NULL));
    ck_assert_msg(strstr(tu_records_text(out, "stdout"), "err\r\n") != NULL, "%s",
                  tu_records_text(out, NULL));
    json_decref(out);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    run_job(w, job_input("echo fine", NULL), id, &out);
    ck_assert_int_eq(exit_of(out), 0);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    json_decref(out);
    world_done(w);
}
END_TEST

/* A noexec /var/tmp is found by the preflight, before the script is uploaded (§1.4). */
START_TEST(noexec_working_dir)
{
    const char *noexec = json_string_value(json_object_get(env, "NOEXEC_SSH_PORT"));
    df_world *w;
    char id[DF_UUID_BUF];
    json_t *out;

    if (noexec == NULL || *noexec == '\0') {
        fprintf(stderr, "noexec_working_dir: no mount namespaces here, not tested\n");
        return;
    }
    w = world();
    run_job(w, job_input("echo never", json_pack("{s:i}", "ssh_port", atoi(noexec))), id, &out);
    ck_assert_str_eq(json_string_value(json_object_get(out, "exit_status")), "EXCEPTION");
    ck_assert_str_eq(tu_records_text(out, NULL),
                     "Error initializing command: RuntimeError - Failed to "
                     "execute script on remote machine, exit code: 126.");
    json_decref(out);
    world_done(w);
}
END_TEST

/* ---- connecting ---------------------------------------------------------------------------------
 */

START_TEST(unreachable_port)
{
    df_world *w = world();
    char id[DF_UUID_BUF], expected[256];
    json_t *out;

    run_job(w, job_input("true", json_pack("{s:i}", "ssh_port", port_of("UNREACHABLE_PORT"))), id,
            &out);
    ck_assert_str_eq(json_string_value(json_object_get(out, "exit_status")), "EXCEPTION");
    ck_assert_msg(strstr(tu_records_text(out, "debug"),
                         "Error initializing command: RuntimeError - Could not establish "
                         "connection to remote host using any available authentication method, "
                         "tried publickey\n\nAuthentication method 'publickey' failed with:\n") !=
                      NULL,
                  "%s", tu_records_text(out, NULL));
    snprintf(expected, sizeof(expected), "port %d", port_of("UNREACHABLE_PORT"));
    ck_assert_msg(strstr(tu_records_text(out, "debug"), expected) != NULL, "%s",
                  tu_records_text(out, NULL));
    json_decref(out);
    world_done(w);
}
END_TEST

START_TEST(password_auth_and_fallback)
{
    df_world *w = world();
    char id[DF_UUID_BUF];
    json_t *out;

    /* a wrong password first, then the key works */
    run_job(w, job_input("echo via-key", json_pack("{s:{s:s}}", "secrets", "ssh_password", "bad")),
            id, &out);
    ck_assert_int_eq(exit_of(out), 0);
    json_decref(out);
    world_done(w);

    /* no key: the password alone */
    w = world_with(json_pack("{s:s}", "ssh_identity_key_file", "/nonexistent/key"));
    run_job(w,
            job_input("echo via-password",
                      json_pack("{s:{s:s}}", "secrets", "ssh_password", E("SSH_PASSWORD"))),
            id, &out);
    ck_assert_int_eq(exit_of(out), 0);
    ck_assert_msg(strstr(tu_records_text(out, "stdout"), "via-password") != NULL, "%s",
                  tu_records_text(out, NULL));
    json_decref(out);

    /* every method fails: each one's reason */
    run_job(w, job_input("true", json_pack("{s:{s:s}}", "secrets", "ssh_password", "bad")), id,
            &out);
    ck_assert_str_eq(json_string_value(json_object_get(out, "exit_status")), "EXCEPTION");
    ck_assert_msg(strstr(tu_records_text(out, "debug"),
                         "tried password\n\nAuthentication method "
                         "'password' failed with:\nrexuser@127.0.0.1: "
                         "Permission denied") != NULL,
                  "%s", tu_records_text(out, NULL));
    json_decref(out);

    /* nothing to try */
    run_job(w, job_input("true", NULL), id, &out);
    ck_assert_msg(strstr(tu_records_text(out, "debug"),
                         "There are no available authentication methods") != NULL,
                  "%s", tu_records_text(out, NULL));
    json_decref(out);
    world_done(w);
}
END_TEST

START_TEST(encrypted_key)
{
    df_world *w = world_with(json_pack("{s:s}", "ssh_identity_key_file", E("SSH_KEY_ENCRYPTED")));
    char id[DF_UUID_BUF];
    json_t *out;

    run_job(w,
            job_input("echo unlocked",
                      json_pack("{s:{s:s}}", "secrets", "key_passphrase", E("SSH_KEY_PASSPHRASE"))),
            id, &out);
    ck_assert_int_eq(exit_of(out), 0);
    json_decref(out);
    /* without the passphrase the key is skipped */
    run_job(w, job_input("true", NULL), id, &out);
    ck_assert_msg(strstr(tu_records_text(out, "debug"),
                         "There are no available authentication methods") != NULL,
                  "%s", tu_records_text(out, NULL));
    json_decref(out);
    world_done(w);
}
END_TEST

/* A key that is not authorized gets in with its certificate (<key>-cert.pub) */
START_TEST(user_certificate)
{
    df_world *w = world_with(json_pack("{s:s}", "ssh_identity_key_file", E("SSH_CERT_KEY")));
    char id[DF_UUID_BUF];
    json_t *out;

    run_job(w, job_input("echo certified", NULL), id, &out);
    ck_assert_msg(exit_of(out) == 0, "%s", tu_records_text(out, NULL));
    json_decref(out);
    world_done(w);
}
END_TEST

/* accept-new; a changed key fails; first_execution forgets the old one (§1.7) */
START_TEST(host_keys)
{
    /* a new connection for each job: an idle one would hide the new key */
    df_world *w = world_with(json_pack("{s:i}", "connection_idle_timeout", 0));
    char id[DF_UUID_BUF], cmd[1200];
    json_t *out;

    run_job(w, job_input("true", NULL), id, &out);
    ck_assert_int_eq(exit_of(out), 0);
    json_decref(out);
    snprintf(cmd, sizeof(cmd), "%s/sshd.sh rekey %s", getenv("SSH_SCRIPTS"), env_dir);
    ck_assert_int_eq(system(cmd), 0);
    run_job(w, job_input("true", NULL), id, &out);
    ck_assert_str_eq(json_string_value(json_object_get(out, "exit_status")), "EXCEPTION");
    ck_assert_msg(strstr(tu_records_text(out, "debug"), "Host key verification failed.") != NULL,
                  "%s", tu_records_text(out, NULL));
    json_decref(out);
    run_job(w, job_input("true", json_pack("{s:b}", "first_execution", 1)), id, &out);
    ck_assert_int_eq(exit_of(out), 0);
    json_decref(out);
    world_done(w);
}
END_TEST

/* host_public_key pins the host key: the right one works, another one fails */
START_TEST(pinned_host_key)
{
    df_world *w = world();
    char id[DF_UUID_BUF], path[700], key[1024] = "", wrong[1024] = "";
    json_t *out;
    FILE *f;

    snprintf(path, sizeof(path), "%s/hostkey.pub", E("SSH_ENV_DIR"));
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(fgets(key, sizeof(key), f));
    fclose(f);
    key[strcspn(key, "\n")] = '\0';
    *strrchr(key, ' ') = '\0'; /* "<type> <base64>" without the comment */
    snprintf(path, sizeof(path), "%s.pub", E("SSH_KEY"));
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(fgets(wrong, sizeof(wrong), f));
    fclose(f);
    wrong[strcspn(wrong, "\n")] = '\0';
    *strrchr(wrong, ' ') = '\0';
    run_job(w, job_input("true", json_pack("{s:s}", "host_public_key", key)), id, &out);
    ck_assert_msg(exit_of(out) == 0, "%s", tu_records_text(out, NULL));
    json_decref(out);
    run_job(w, job_input("true", json_pack("{s:s}", "host_public_key", wrong)), id, &out);
    ck_assert_msg(strstr(tu_records_text(out, "debug"), "Host key verification failed") != NULL,
                  "%s", tu_records_text(out, NULL));
    json_decref(out);
    world_done(w);
}
END_TEST

/* ---- host certificates (:ssh_ca_known_hosts_file:) --------------------------------------------
 */

static char *first_line(const char *path)
{
    static char line[1024];
    FILE *f = fopen(path, "r");

    ck_assert_msg(f != NULL, "no %s", path);
    ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
    fclose(f);
    line[strcspn(line, "\n")] = '\0';
    return line;
}

/* A CA file of "@marker patterns <CA>" lines, <CA> one of host, other, rsa, ecdsa. */
static const char *ca_file(const char *lines)
{
    static const char *const names[][2] = {{"host", "HOST_CA_PUB"},
                                           {"other", "OTHER_CA_PUB"},
                                           {"rsa", "HOST_CA_RSA_PUB"},
                                           {"ecdsa", "HOST_CA_ECDSA_PUB"}};
    static char path[800];
    char copy[1024];
    FILE *f;

    snprintf(path, sizeof(path), "%s/ca_known_hosts", home);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    snprintf(copy, sizeof(copy), "%s", lines);
    for (char *save = NULL, *l = strtok_r(copy, "\n", &save); l != NULL;
         l = strtok_r(NULL, "\n", &save)) {
        char *ca = strrchr(l, ' ');
        ck_assert_ptr_nonnull(ca);
        *ca++ = '\0';
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
            if (strcmp(ca, names[i][0]) == 0)
                fprintf(f, "%s %s\n", l, first_line(E(names[i][1])));
    }
    fclose(f);
    return path;
}

static void host_certificate(const char *validity, const char *principals, const char *ca)
{
    char cmd[1400];

    snprintf(cmd, sizeof(cmd), "%s/sshd.sh hostcert %s %s %s %s", getenv("SSH_SCRIPTS"), env_dir,
             validity, principals, ca);
    ck_assert_int_eq(system(cmd), 0);
}

static int count_in_file(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    int n = 0;

    ck_assert_msg(f != NULL, "no %s", path);
    while (fgets(line, sizeof(line), f) != NULL)
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

/* A job with the CA file of lines: it fails (what the debug record must say), or expect NULL
 * and it succeeds.  A failed host check sends no secret: sshd sees no password. */
static void certified_job(const char *lines, const char *expect)
{
    json_t *settings = json_pack("{s:s}", "ssh_ca_known_hosts_file", ca_file(lines));
    df_world *w = world_with(settings);
    char id[DF_UUID_BUF], log[700], known_hosts[800];
    json_t *out;
    int passwords;

    snprintf(log, sizeof(log), "%s/sshd.log", env_dir);
    passwords = count_in_file(log, "password for");
    run_job(w,
            job_input("echo certified", json_pack("{s:{s:s}}", "secrets", "ssh_password", "bad")),
            id, &out);
    if (expect == NULL) {
        ck_assert_msg(exit_of(out) == 0, "%s", tu_records_text(out, NULL));
    } else {
        ck_assert_str_eq(json_string_value(json_object_get(out, "exit_status")), "EXCEPTION");
        ck_assert_msg(
            strstr(tu_records_text(out, "debug"), expect) != NULL &&
                strstr(tu_records_text(out, "debug"), "\nHost key verification failed.") != NULL,
            "want %s in %s", expect, tu_records_text(out, NULL));
        ck_assert_int_eq(count_in_file(log, "password for"), passwords);
    }
    json_decref(out);
    world_done(w);
    /* StrictHostKeyChecking=yes: nothing is learnt on first use */
    snprintf(known_hosts, sizeof(known_hosts), "%s/.ssh/known_hosts", home);
    ck_assert_int_eq(access(known_hosts, F_OK), -1);
}

START_TEST(ca_known_hosts)
{
    char lines[512], name[64];

    snprintf(name, sizeof(name), "[127.0.0.1]:%d", port_of("SSH_PORT"));
    /* CAs of each key type OpenSSH makes: their signatures verify */
    host_certificate("always:forever", "127.0.0.1,localhost", "host_ca_rsa");
    certified_job("@cert-authority * rsa\n", NULL);
    host_certificate("always:forever", "127.0.0.1,localhost", "host_ca_ecdsa");
    certified_job("@cert-authority * ecdsa\n", NULL);
    certified_job("@cert-authority * host\n", "lists other certificate authorities");
    host_certificate("always:forever", "127.0.0.1,localhost", "host_ca");
    /* "[host]:port" is literal in a pattern list, '!' excludes */
    snprintf(lines, sizeof(lines), "@cert-authority other.example.com,%s host\n", name);
    certified_job(lines, NULL);
    certified_job("@cert-authority * other\n", "lists other certificate authorities");
    snprintf(lines, sizeof(lines), "@cert-authority *,!%s host\n", name);
    certified_job(lines, "lists no certificate authority");
    certified_job("@cert-authority * host\n@revoked * host\n", "is revoked in");
    host_certificate("-2d:-1d", "127.0.0.1", "host_ca");
    certified_job("@cert-authority * host\n", "Certificate invalid: expired");
    host_certificate("always:forever", "other.example.com", "host_ca");
    certified_job("@cert-authority * host\n",
                  "Certificate invalid: name is not a listed principal");
    host_certificate("always:forever", "127.0.0.1,localhost", "host_ca");
}
END_TEST

/* ---- effective users (§1.5) --------------------------------------------------------------------
 */

static json_t *as(const char *method, const char *password)
{
    return json_pack("{s:s, s:s, s:{s:s}}", "effective_user", E("EFFECTIVE_USER"),
                     "effective_user_method", method, "secrets", "effective_user_password",
                     password);
}

START_TEST(sudo_su_and_dzdo)
{
    static const struct {
        const char *method, *password_env;
    } cases[] = {
        {"sudo", "SSH_PASSWORD"}, {"su", "EFFECTIVE_USER_PASSWORD"}, {"dzdo", "SSH_PASSWORD"}};
    df_world *w = world();
    char id[DF_UUID_BUF];
    json_t *out;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *pw = E(cases[i].password_env);
        run_job(w, job_input("id -un", as(cases[i].method, pw)), id, &out);
        ck_assert_msg(exit_of(out) == 0, "%s: %s", cases[i].method, tu_records_text(out, NULL));
        ck_assert_msg(strstr(tu_records_text(out, "stdout"), "effuser") != NULL, "%s: %s",
                      cases[i].method, tu_records_text(out, NULL));
        ck_assert_msg(strstr(tu_records_text(out, NULL), pw) == NULL,
                      "%s: the password is in the output", cases[i].method);
        json_decref(out);
        run_job(w, job_input("id -un", as(cases[i].method, "wrong-password")), id, &out);
        ck_assert_str_eq(json_string_value(json_object_get(out, "exit_status")), "EXCEPTION");
        ck_assert_msg(strstr(tu_records_text(out, "debug"),
                             "Failed to change to effective user, exit "
                             "code: ") != NULL,
                      "%s: %s", cases[i].method, tu_records_text(out, NULL));
        ck_assert_msg(strstr(tu_records_text(out, NULL), "wrong-password") == NULL, "%s",
                      tu_records_text(out, NULL));
        json_decref(out);
    }
    world_done(w);
}
END_TEST

/* A host without setfacl cannot let another user run the script: said before anything runs. */
START_TEST(missing_setfacl)
{
    df_world *w = world();
    char id[DF_UUID_BUF];
    json_t *out, *in = as("sudo", E("SSH_PASSWORD"));

    json_object_set_new(in, "ssh_user", json_string(E("NOACL_USER")));
    run_job(w, job_input("id -un", in), id, &out);
    ck_assert_str_eq(json_string_value(json_object_get(out, "exit_status")), "EXCEPTION");
    ck_assert_str_eq(tu_records_text(out, NULL),
                     "Error initializing command: RuntimeError - Failed to set the permissions for "
                     "the effective user with setfacl, exit code: 127 (is the acl package "
                     "installed on the host?)");
    json_decref(out);
    world_done(w);
}
END_TEST

START_TEST(unsupported_method)
{
    df_world *w = world();
    char id[DF_UUID_BUF];
    df_error err;

    ck_assert(!tu_trigger_opts(w, "Proxy::RemoteExecution::Ssh::Actions::RunScript",
                               job_input("true", as("pbrun", "x")), NULL, id, &err));
    ck_assert_str_eq(err.text, "effective_user_method 'pbrun' not supported");
    world_done(w);
}
END_TEST

/* ---- cancel, timeout, cleanup (§1.6) -----------------------------------------------------------
 */

static pid_t pid_in(const char *path)
{
    FILE *f = fopen(path, "r");
    int pid = 0;

    if (f != NULL) {
        if (fscanf(f, "%d", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    return pid;
}

START_TEST(cancel_kills_the_remote_tree)
{
    df_world *w = world();
    char script[3000], pidfile[800];
    const char *id;
    json_t *out;
    pid_t sleeper;

    snprintf(pidfile, sizeof(pidfile), "/tmp/rex-sleeper-%d", getpid());
    unlink(pidfile);
    snprintf(script, sizeof(script), "sleep 1000 & echo $! > %s.t; mv %s.t %s; wait", pidfile,
             pidfile, pidfile);
    id = tu_trigger(w, "Proxy::RemoteExecution::Ssh::Actions::RunScript", job_input(script, NULL));
    ck_assert(WAIT_UNTIL(pid_in(pidfile) > 0, 20));
    sleeper = pid_in(pidfile);
    ck_assert_int_eq(df_plan_cancel(w, id, false, NULL, NULL), 0);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    out = tu_output(w, id, 1);
    /* as the Ruby proxy reports after a cancel: the wrapper's SIGTERM */
    ck_assert_int_eq(exit_of(out), 143);
    json_decref(out);
    ck_assert_msg(WAIT_UNTIL(tu_process_gone(sleeper), 10), "sleep %d survived", (int)sleeper);
    unlink(pidfile);
    world_done(w);
}
END_TEST

START_TEST(timeout_stops_the_job)
{
    df_world *w = world();
    char id[DF_UUID_BUF];
    json_t *out;

    run_job(
        w, job_input("echo started; sleep 30", json_pack("{s:i}", "execution_timeout_interval", 2)),
        id, &out);
    ck_assert_msg(strstr(tu_records_text(out, "debug"),
                         "Timeout for execution passed, trying to stop the "
                         "job") != NULL,
                  "%s", tu_records_text(out, NULL));
    ck_assert_int_ne(exit_of(out), 0);
    json_decref(out);
    world_done(w);
}
END_TEST

/* The running job's output (polled) has text. */
static bool shows(df_world *w, const char *id, const char *text)
{
    json_t *out;
    bool yes;

    usleep(20000); /* each poll makes the runner refresh: not too often */
    if (!tu_step_is(w, id, 2, "suspended"))
        return false;
    df_plan_poll(w, id);
    out = tu_output(w, id, 1);
    yes = strstr(tu_records_text(out, NULL), text) != NULL;
    json_decref(out);
    return yes;
}

/* Sends sig to every process of this sshd's connections (not to the listener). */
static void signal_sessions(int sig)
{
    char cmd[1024];

    snprintf(cmd, sizeof(cmd),
             "for c in $(pgrep -P $(cat %s/sshd.pid)); do kill -%d $c $(pgrep -P $c); done",
             E("SSH_ENV_DIR"), sig);
    ck_assert_int_eq(system(cmd), 0);
}

/* A server that stops answering: three keepalive intervals later the job ends with 255. */
START_TEST(dead_server_is_noticed)
{
    df_world *w = world_with(json_pack("{s:i}", "keepalive_interval", 1));
    const char *id = tu_trigger(w, "Proxy::RemoteExecution::Ssh::Actions::RunScript",
                                job_input("echo started; sleep 60", NULL));
    json_t *out;

    ck_assert(WAIT_UNTIL(shows(w, id, "started"), 20));
    signal_sessions(SIGSTOP);
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_ERROR);
    signal_sessions(SIGKILL);
    out = tu_output(w, id, 1);
    ck_assert_int_eq(exit_of(out), 255);
    ck_assert_msg(
        strstr(tu_records_text(out, "stderr"), "Timeout, server 127.0.0.1 not responding.") != NULL,
        "%s", tu_records_text(out, NULL));
    json_decref(out);
    world_done(w);
}
END_TEST

/* The sshd sessions that are open now. */
static int sessions(void)
{
    char cmd[1024];
    int n = -1;
    FILE *p;

    snprintf(cmd, sizeof(cmd), "pgrep -c -P $(cat %s/sshd.pid)", E("SSH_ENV_DIR"));
    p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    if (fscanf(p, "%d", &n) != 1)
        n = -1;
    pclose(p);
    return n;
}

static void job_says(df_world *w, json_t *input, const char *text)
{
    char id[DF_UUID_BUF];
    json_t *out;

    run_job(w, input, id, &out);
    ck_assert_msg(exit_of(out) == 0 && strstr(tu_records_text(out, "stdout"), text) != NULL, "%s",
                  tu_records_text(out, NULL));
    json_decref(out);
}

/* Beyond upstream: an idle session serves the next job with the same host, user, identity and
 * credentials; first_execution, other credentials and a session that died while idle get a
 * new connection; an idle session ends after :connection_idle_timeout:. */
START_TEST(connection_reuse)
{
    df_world *w = world();
    char log[700];
    int logins;

    snprintf(log, sizeof(log), "%s/sshd.log", env_dir);
    logins = count_in_file(log, "Accepted p");
    job_says(w, job_input("echo one", NULL), "one");
    job_says(w, job_input("echo two", NULL), "two");
    ck_assert_int_eq(count_in_file(log, "Accepted p"), logins + 1);
    job_says(w, job_input("echo new-host", json_pack("{s:b}", "first_execution", 1)), "new-host");
    ck_assert_int_eq(count_in_file(log, "Accepted p"), logins + 2);
    job_says(w, job_input("echo other", json_pack("{s:{s:s}}", "secrets", "ssh_password", "bad")),
             "other");
    ck_assert_int_eq(count_in_file(log, "Accepted p"), logins + 3);
    signal_sessions(SIGKILL);
    job_says(w, job_input("echo after-death", NULL), "after-death");
    ck_assert_int_eq(count_in_file(log, "Accepted p"), logins + 4);
    world_done(w);

    ck_assert(WAIT_UNTIL(sessions() == 0, 20));
    w = world_with(json_pack("{s:f}", "connection_idle_timeout", 0.5));
    job_says(w, job_input("echo idle", NULL), "idle");
    ck_assert_msg(WAIT_UNTIL(sessions() == 0, 10), "the idle session is still open");
    world_done(w);
}
END_TEST

/* A script that is quiet for longer than three keepalive intervals lives on: the server's
 * answers to the keepalives count, whichever pump reads them. */
START_TEST(quiet_script_outlives_keepalives)
{
    df_world *w = world_with(json_pack("{s:i}", "keepalive_interval", 1));

    job_says(w, job_input("sleep 4; echo still-here", NULL), "still-here");
    world_done(w);
}
END_TEST

/* The power action prints "restart host" and the host goes away: that is success. */
START_TEST(reboot_is_success)
{
    df_world *w = world();
    const char *id = tu_trigger(w, "Proxy::RemoteExecution::Ssh::Actions::RunScript",
                                job_input("echo 'restart host'; sleep 60", NULL));
    json_t *out;

    ck_assert(WAIT_UNTIL(shows(w, id, "restart host"), 20));
    signal_sessions(SIGKILL); /* the connection drops as the host reboots */
    tu_expect(w, id, DF_PLAN_STOPPED, DF_RESULT_SUCCESS);
    out = tu_output(w, id, 1);
    ck_assert_int_eq(exit_of(out), 0);
    json_decref(out);
    world_done(w);
}
END_TEST

START_TEST(cleanup_on_and_off)
{
    df_world *w = world();
    char id[DF_UUID_BUF], dir[256];
    json_t *out;
    struct stat st;

    run_job(w, job_input("true", NULL), id, &out);
    snprintf(dir, sizeof(dir), "/var/tmp/foreman-ssh-cmd-%s",
             json_string_value(json_object_get(out, "runner_id")));
    ck_assert_int_eq(stat(dir, &st), -1);
    json_decref(out);
    run_job(w, job_input("true", json_pack("{s:b}", "cleanup_working_dirs", 0)), id, &out);
    snprintf(dir, sizeof(dir), "/var/tmp/foreman-ssh-cmd-%s",
             json_string_value(json_object_get(out, "runner_id")));
    ck_assert_int_eq(stat(dir, &st), 0);
    json_decref(out);
    world_done(w);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ssh");
    TCase *tc = tcase_create("ssh");

    tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, exit_codes_pty_and_cr);
    tcase_add_test(tc, noexec_working_dir);
    tcase_add_test(tc, unreachable_port);
    tcase_add_test(tc, password_auth_and_fallback);
    tcase_add_test(tc, encrypted_key);
    tcase_add_test(tc, user_certificate);
    tcase_add_test(tc, host_keys);
    tcase_add_test(tc, pinned_host_key);
    tcase_add_test(tc, ca_known_hosts);
    tcase_add_test(tc, sudo_su_and_dzdo);
    tcase_add_test(tc, missing_setfacl);
    tcase_add_test(tc, unsupported_method);
    tcase_add_test(tc, cancel_kills_the_remote_tree);
    tcase_add_test(tc, timeout_stops_the_job);
    tcase_add_test(tc, cleanup_on_and_off);
    tcase_add_test(tc, dead_server_is_noticed);
    tcase_add_test(tc, reboot_is_success);
    tcase_add_test(tc, connection_reuse);
    tcase_add_test(tc, quiet_script_outlives_keepalives);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
