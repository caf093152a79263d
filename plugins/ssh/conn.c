/*
 * Connecting (reference/plugins.md §1.3, §1.7, §1.8): one non-blocking
 * libssh session per job; the host key against known_hosts (accept-new, a
 * CA file, or a pinned key; first_execution forgets the old key first);
 * then the auth methods in upstream's order, each failure kept for the
 * combined message.
 */
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ssh.h"

extern char **environ;

static const char *const method_names[] = {"password", "publickey", "gssapi-with-mic"};

/* The proxy user's known_hosts (HOME decides, as for OpenSSH's ssh). */
static void known_hosts_path(char *out, size_t len)
{
    const char *home = getenv("HOME");

    snprintf(out, len, "%s/.ssh/known_hosts", home ? home : "/root");
}

/* first_execution: ssh-keygen -R, as upstream; a missing ssh-keygen only warns. */
static void forget_host_key(struct rex_job *job, const char *file)
{
    char name[300];
    const char *argv[] = {"ssh-keygen", "-R", name, "-f", file, NULL};
    pid_t pid;
    int st;

    if (job->port == 22)
        snprintf(name, sizeof(name), "%s", job->host);
    else
        snprintf(name, sizeof(name), "[%s]:%d", job->host, job->port);
    if (access(file, F_OK) < 0)
        return;
    if (posix_spawnp(&pid, "ssh-keygen", NULL, NULL, (char *const *)argv, environ) != 0) {
        df_runner_log(job->r, DF_LOG_WARNING, "cannot run ssh-keygen -R %s: %s", name,
                      strerror(errno));
        return;
    }
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
}

/* The private key, with its certificate (<key>-cert.pub) when there is one. */
static ssh_key load_key(struct rex_job *job)
{
    const char *file = job->plugin->s.key_file;
    char cert_file[1024];
    ssh_key key = NULL, cert = NULL;

    if (ssh_pki_import_privkey_file(file, job->passphrase, NULL, NULL, &key) != SSH_OK)
        return NULL; /* missing, or encrypted and no (right) passphrase: method skipped */
    snprintf(cert_file, sizeof(cert_file), "%s-cert.pub", file);
    if (access(cert_file, R_OK) == 0 && ssh_pki_import_cert_file(cert_file, &cert) == SSH_OK) {
        ssh_pki_copy_cert_to_privkey(cert, key);
        ssh_key_free(cert);
    }
    return key;
}

/* :ssh_ca_known_hosts_file: needs the host's certificate, which libssh 0.10 cannot negotiate:
 * ssh-keyscan -c fetches it while the session connects (hostcert.c checks it). */
static void keyscan_output(df_runner *r, const char *type, const char *buf, size_t len, void *arg)
{
    struct rex_job *job = arg;

    (void)r;
    if (strcmp(type, "stdout") != 0 || job->keyscan_len + len > 256 * 1024)
        return;
    job->keyscan = realloc(job->keyscan, job->keyscan_len + len + 1);
    if (job->keyscan == NULL)
        abort();
    memcpy(job->keyscan + job->keyscan_len, buf, len);
    job->keyscan_len += len;
    job->keyscan[job->keyscan_len] = '\0';
}

static void keyscan_exit(df_runner *r, int status, void *arg)
{
    struct rex_job *job = arg;

    (void)r, (void)status; /* what it found counts, not how it ended */
    job->keyscan_done = true;
    rex_pump(job);
}

static int start_keyscan(struct rex_job *job)
{
    char port[16], timeout[16];
    const char *argv[] = {"ssh-keyscan", "-c", "-T", timeout, "-p", port, job->host, NULL};
    const struct df_proc_spec spec = {
        .argv = argv, .on_output = keyscan_output, .on_exit = keyscan_exit, .arg = job};

    snprintf(port, sizeof(port), "%d", job->port);
    snprintf(timeout, sizeof(timeout), "%d", REX_CONNECT_TIMEOUT);
    return df_proc_spawn(job->r, &spec, NULL);
}

static void add_method(struct rex_job *job, enum rex_auth m)
{
    job->methods[job->n_methods++] = m;
}

static int set_options(struct rex_job *job, const char *known_hosts)
{
    const struct rex_settings *st = &job->plugin->s;
    long timeout = REX_CONNECT_TIMEOUT;
    int verbosity = st->log_level;

    if (ssh_options_set(job->s, SSH_OPTIONS_HOST, job->host) < 0)
        return -1;
    ssh_options_parse_config(job->s, NULL); /* ~/.ssh/config: ProxyJump and friends (#36456) */
    if (ssh_options_set(job->s, SSH_OPTIONS_PORT, &job->port) < 0 ||
        ssh_options_set(job->s, SSH_OPTIONS_USER, job->user) < 0 ||
        ssh_options_set(job->s, SSH_OPTIONS_KNOWNHOSTS, known_hosts) < 0 ||
        ssh_options_set(job->s, SSH_OPTIONS_TIMEOUT, &timeout) < 0 ||
        ssh_options_set(job->s, SSH_OPTIONS_LOG_VERBOSITY, &verbosity) < 0)
        return -1;
    ssh_set_blocking(job->s, 0);
    return 0;
}

/* host_public_key "<type> <base64>" pins the key (§1.7): a known_hosts file of its own in
 * <local_working_dir>/foreman-ssh-cmd-<runner id>, removed with the job. */
static int pin_host_key(struct rex_job *job, char *path, size_t len)
{
    FILE *f;

    job->local_dir =
        rex_printf("%s/foreman-ssh-cmd-%s", job->plugin->s.local_working_dir, df_runner_id(job->r));
    if (mkdir(job->local_dir, 0700) < 0 && errno != EEXIST) {
        snprintf(job->error, sizeof(job->error), "cannot create %s: %s", job->local_dir,
                 strerror(errno));
        return -1;
    }
    snprintf(path, len, "%s/known_hosts", job->local_dir);
    f = fopen(path, "w");
    if (f == NULL) {
        snprintf(job->error, sizeof(job->error), "cannot write %.900s: %s", path, strerror(errno));
        return -1;
    }
    if (job->port == 22)
        fprintf(f, "%s %s\n", job->host, job->pinned_key);
    else
        fprintf(f, "[%s]:%d %s\n", job->host, job->port, job->pinned_key);
    fclose(f);
    return 0;
}

/* An idle session of an earlier job with the same host, user, identity and credentials. */
static bool take_idle(struct rex_job *job)
{
    char *key = rex_pool_key(job);

    job->s = rex_pool_take(job->plugin->pool, key);
    free(key);
    if (job->s == NULL)
        return false;
    job->connected = job->host_checked = job->authenticated = job->reused = true;
    return true;
}

int rex_conn_begin(struct rex_job *job)
{
    if (job->first_execution)
        rex_pool_forget(job->plugin->pool, job); /* the host may be a new machine */
    else if (take_idle(job))
        return 0;
    return rex_conn_restart(job);
}

int rex_conn_restart(struct rex_job *job)
{
    const struct rex_settings *st = &job->plugin->s;
    char known_hosts[1024];

    if (job->s != NULL)
        ssh_free(job->s);
    job->s = NULL;
    job->connected = job->host_checked = job->authenticated = job->reused = false;
    job->n_methods = job->method_i = 0; /* a reused session had none */

    if (job->pinned_key != NULL) {
        if (pin_host_key(job, known_hosts, sizeof(known_hosts)) < 0)
            return -1;
    } else if (st->ca_known_hosts != NULL) {
        snprintf(known_hosts, sizeof(known_hosts), "%s", st->ca_known_hosts);
    } else {
        known_hosts_path(known_hosts, sizeof(known_hosts));
    }
    if (job->first_execution && st->ca_known_hosts == NULL && job->pinned_key == NULL)
        forget_host_key(job, known_hosts);
    if (st->ca_known_hosts != NULL && job->pinned_key == NULL && start_keyscan(job) < 0)
        return -1; /* the runner ended, or waits for descriptors */
    job->s = ssh_new();
    if (job->s == NULL || set_options(job, known_hosts) < 0) {
        snprintf(job->error, sizeof(job->error), "cannot set up an SSH session to %s: %s",
                 job->host, job->s ? ssh_get_error(job->s) : "out of memory");
        return -1;
    }
    if (job->password != NULL)
        add_method(job, AUTH_PASSWORD);
    if ((job->key = load_key(job)) != NULL)
        add_method(job, AUTH_PUBLICKEY);
    if (st->kerberos)
        add_method(job, AUTH_GSSAPI);
    if (job->n_methods == 0) {
        snprintf(job->error, sizeof(job->error), "There are no available authentication methods");
        return -1;
    }
    return 0;
}

/* Every method fails with the same reason when the host cannot be reached (as upstream, whose
 * ssh runs once per method). */
static void all_failed(struct rex_job *job, const char *reason)
{
    size_t n = (size_t)snprintf(job->error, sizeof(job->error),
                                "Could not establish connection to remote host using any "
                                "available authentication method, tried ");

    for (size_t i = 0; i < job->n_methods && n < sizeof(job->error); i++)
        n += (size_t)snprintf(job->error + n, sizeof(job->error) - n, "%s%s", i ? ", " : "",
                              method_names[job->methods[i]]);
    for (size_t i = 0; i < job->n_methods && n < sizeof(job->error); i++) {
        const char *why = reason;
        char *mine = NULL;
        if (why == NULL && job->auth_errors != NULL) { /* per method, '\0'-separated */
            mine = job->auth_errors;
            for (size_t j = 0; j < i; j++)
                mine += strlen(mine) + 1;
            why = mine;
        }
        n += (size_t)snprintf(job->error + n, sizeof(job->error) - n,
                              "\n\nAuthentication method '%s' failed with:\n%s",
                              method_names[job->methods[i]], why ? why : "");
    }
}

static void method_failed(struct rex_job *job, const char *why)
{
    size_t used = 0, len = strlen(why) + 1;
    char *grown;

    for (size_t i = 0; i < job->method_i; i++)
        used += strlen(job->auth_errors + used) + 1;
    grown = realloc(job->auth_errors, used + len);
    if (grown == NULL)
        abort();
    memcpy(grown + used, why, len);
    job->auth_errors = grown;
    job->method_i++;
}

/* known_hosts: accept-new, or the pinned key (§1.7). */
static int check_known_host(struct rex_job *job)
{
    enum ssh_known_hosts_e known = ssh_session_is_known_server(job->s);
    const bool strict = job->pinned_key != NULL;

    switch (known) {
        case SSH_KNOWN_HOSTS_OK:
            return 0;
        case SSH_KNOWN_HOSTS_UNKNOWN:
        case SSH_KNOWN_HOSTS_NOT_FOUND:
            if (!strict && ssh_session_update_known_hosts(job->s) == SSH_OK)
                return 0; /* accept-new */
            all_failed(job, strict ? "Host key verification failed (not the pinned "
                                     "host_public_key)."
                                   : "Host key verification failed (cannot write known_hosts).");
            return -1;
        case SSH_KNOWN_HOSTS_CHANGED:
        case SSH_KNOWN_HOSTS_OTHER:
            all_failed(job, "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
                            "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
                            "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
                            "Host key verification failed.");
            return -1;
        default:
            all_failed(job, ssh_get_error(job->s));
            return -1;
    }
}

/* :ssh_ca_known_hosts_file: StrictHostKeyChecking=yes against the CA (§1.7). */
static int check_certified_host(struct rex_job *job)
{
    char why[1024], text[1100];
    ssh_key key = NULL;
    int rc;

    if (ssh_get_server_publickey(job->s, &key) != SSH_OK) {
        all_failed(job, ssh_get_error(job->s));
        return -1;
    }
    rc = rex_hostcert_check(job->plugin->s.ca_known_hosts, job->host, job->port, key,
                            job->keyscan ? job->keyscan : "", (uint64_t)time(NULL), why,
                            sizeof(why));
    ssh_key_free(key);
    if (rc == 0)
        return 0;
    snprintf(text, sizeof(text), "%s\nHost key verification failed.", why);
    all_failed(job, text);
    return -1;
}

/* 1 the host is who it should be, 0 waiting for its certificate, -1 failed. */
static int check_host(struct rex_job *job)
{
    if (job->plugin->s.ca_known_hosts == NULL || job->pinned_key != NULL)
        return check_known_host(job) < 0 ? -1 : 1;
    if (!job->keyscan_done)
        return 0;
    return check_certified_host(job) < 0 ? -1 : 1;
}

static int try_method(struct rex_job *job)
{
    switch (job->methods[job->method_i]) {
        case AUTH_PASSWORD:
            return ssh_userauth_password(job->s, NULL, job->password);
        case AUTH_PUBLICKEY:
            return ssh_userauth_publickey(job->s, NULL, job->key);
        case AUTH_GSSAPI:
            return ssh_userauth_gssapi(job->s);
    }
    return SSH_AUTH_ERROR;
}

int rex_conn_pump(struct rex_job *job)
{
    if (!job->connected) {
        int rc = ssh_connect(job->s);
        if (rc == SSH_AGAIN)
            return 0;
        if (rc != SSH_OK) {
            char why[512];
            snprintf(why, sizeof(why), "ssh: connect to host %s port %d: %s", job->host, job->port,
                     ssh_get_error(job->s));
            all_failed(job, why);
            return -1;
        }
        job->connected = true;
    }
    if (!job->host_checked) { /* before any secret goes to the host */
        int rc = check_host(job);
        if (rc < 0)
            rex_pool_forget(job->plugin->pool, job);
        if (rc <= 0)
            return rc;
        job->host_checked = true;
    }
    while (!job->authenticated && job->method_i < job->n_methods) {
        int rc = try_method(job);
        char why[512];
        if (rc == SSH_AUTH_AGAIN)
            return 0;
        if (rc == SSH_AUTH_SUCCESS) {
            job->authenticated = true;
            break;
        }
        snprintf(why, sizeof(why), "%s@%s: Permission denied (%s).", job->user, job->host,
                 rc == SSH_AUTH_ERROR ? ssh_get_error(job->s)
                                      : method_names[job->methods[job->method_i]]);
        method_failed(job, why);
    }
    if (!job->authenticated) {
        all_failed(job, NULL);
        rex_pool_forget(job->plugin->pool, job);
        return -1;
    }
    return 1;
}
