/*
 * The SSH plugin (reference/plugins.md §1): Foreman's remote execution over
 * libssh.  Every session is non-blocking and driven by the runner thread:
 * a job is a sequence of commands, each an exec channel on the job's one
 * session, advanced whenever the session's socket is ready.
 */
#ifndef REX_SSH_PLUGIN_H
#define REX_SSH_PLUGIN_H

#include <jansson.h>
#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <stdbool.h>

#include "dynflow/plugin.h"

#define SSH_ACTION     "Proxy::RemoteExecution::Ssh::Actions::RunScript"
#define SSH_ACTION_OLD "ForemanRemoteExecutionCore::Actions::RunScript"

#define REX_CONNECT_TIMEOUT 30  /* seconds, for libssh and ssh-keyscan */
#define REX_POOL_MAX        256 /* idle sessions kept at most (each a descriptor) */

/* settings.d/remote_execution_ssh.yml (§1.2) */
struct rex_settings {
    char *key_file;           /* :ssh_identity_key_file: */
    char *remote_working_dir; /* :remote_working_dir: */
    char *local_working_dir;  /* :local_working_dir: */
    bool kerberos;            /* :kerberos_auth: */
    double keepalive;         /* seconds between keepalives (OpenSSH's ServerAliveInterval 15) */
    int log_level;            /* :ssh_log_level: as SSH_LOG_* */
    bool cleanup;             /* :cleanup_working_dirs: */
    char *ca_known_hosts;     /* :ssh_ca_known_hosts_file: */
    char *user_ca_pubkey;     /* :ssh_user_ca_public_key_file: */
    double idle_timeout;      /* :connection_idle_timeout: (0: a session ends with its job) */
};

/* Idle sessions kept for the next job (pool.c); the runner thread's only. */
struct rex_pool {
    struct rex_idle *head; /* newest first */
    size_t n, max;
    double idle_s;
    bool armed; /* the sweep timer runs */
    df_world *world;
};

struct rex_plugin {
    struct df_runner_class cls; /* cls.data points back here */
    const struct df_plugin_host *host;
    struct rex_settings s;
    struct rex_pool *pool;
};

/* ---- commands: one exec channel each (cmd.c) ---------------------------------------- */

struct rex_job;

struct rex_cmd {
    ssh_channel ch;
    enum { CMD_OPEN, CMD_PTY, CMD_EXEC, CMD_IO, CMD_CLOSE, CMD_DONE } state;
    char *command;
    bool pty;
    char *input; /* written to stdin, then EOF unless keep_stdin */
    size_t input_len, input_off;
    bool keep_stdin; /* stdin stays open (password prompts) */
    bool eof_sent;
    int exit_status; /* -1 until known */
    bool signaled;
    struct ssh_channel_callbacks_struct cb;
    /* Output as it arrives; NULL drops it. */
    void (*on_data)(struct rex_job *job, const char *buf, size_t len, bool is_stderr);
};

/* New command (copied); input may be NULL. */
struct rex_cmd *rex_cmd_new(const char *command, bool pty, const char *input, size_t input_len);
void rex_cmd_free(struct rex_cmd *c);
/* Advances c on the job's session: 1 done (c->exit_status set), 0 waiting, -1 broken. */
int rex_cmd_pump(struct rex_job *job, struct rex_cmd *c);
/* More stdin for a running command (a password). */
int rex_cmd_write(struct rex_cmd *c, const char *buf, size_t len);

/* ---- the connection (conn.c) ------------------------------------------------------------- */

/* Starts connecting, or takes an idle session: session options, known hosts (§1.7); -1 with
 * job->error set (or empty when the runner ended or waits for descriptors). */
int rex_conn_begin(struct rex_job *job);
/* A new connection instead of an idle session that turned out stale. */
int rex_conn_restart(struct rex_job *job);
/* 1 authenticated, 0 waiting, -1 failed with job->error set. */
int rex_conn_pump(struct rex_job *job);

/* ---- host certificates (hostcert.c) ------------------------------------------------------- */

/* Whether server_key is certified for host:port by a certificate authority of ca_file (§1.7);
 * the certificate is looked for in keyscan, the output of ssh-keyscan -c.  0, or -1 with why
 * filled. */
int rex_hostcert_check(const char *ca_file, const char *host, int port, ssh_key server_key,
                       const char *keyscan, uint64_t now, char *why, size_t len);

/* ---- idle connections (pool.c) ----------------------------------------------------------- */

struct rex_job;
/* New string: what a session must match to be used again by job. */
char *rex_pool_key(const struct rex_job *job);
/* An idle session for key (ownership passes to the caller), or NULL. */
ssh_session rex_pool_take(struct rex_pool *p, const char *key);
/* Keeps job's healthy, authenticated session s for the next job (or ends it). */
void rex_pool_put(struct rex_pool *p, const struct rex_job *job, ssh_session s);
/* Ends the idle sessions to job's host and port (first_execution, host key or auth trouble). */
void rex_pool_forget(struct rex_pool *p, const struct rex_job *job);
void rex_pool_clear(struct rex_pool *p);

/* ---- the remote setup (setup.c) ------------------------------------------------------------ */

enum rex_phase {
    PHASE_PREFLIGHT, /* mkdir, the preflight script (and its ACL); all of it without switching */
    PHASE_UPLOAD,    /* the script, the wrapper, the output file (and their ACLs) */
};

struct rex_job;
/* New string, printf-style (out of memory aborts). */
char *rex_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
bool rex_switching(const struct rex_job *job);
/* New string: the command that runs path as the effective user (§1.5). */
char *rex_as_user(const struct rex_job *job, const char *path);
/* New string: the sh script of a phase, for "sh -s". */
char *rex_setup_script(const struct rex_job *job, enum rex_phase phase);
/* Upstream's message for a failed setup script (its stderr and exit status). */
void rex_setup_failure(const struct rex_job *job, const char *err_text, int status, char *msg,
                       size_t len);

/* ---- the job: the script runner (job.c) ---------------------------------------------------- */

extern const struct df_runner_ops rex_runner_ops;
/* Advances the job as far as its session allows now. */
void rex_pump(struct rex_job *job);
int rex_check_input(const struct df_runner_class *cls, const json_t *input, df_error *err);

enum rex_auth { AUTH_PASSWORD, AUTH_PUBLICKEY, AUTH_GSSAPI };

struct rex_job {
    df_runner *r;
    const struct rex_plugin *plugin;
    ssh_session s;
    ssh_event event; /* processes the session's packets (after EOF the channel calls do not) */
    int fd;
    bool watching;
    uint64_t pump_timer;

    /* input (§1.1) */
    const char *host, *user, *effective_user, *method, *script;
    int port;
    const char *password, *passphrase, *effective_password;
    bool first_execution, cleanup;
    char *remote_dir;       /* D = <remote_working_dir>/foreman-ssh-cmd-<runner id> */
    const char *pinned_key; /* host_public_key */
    char *local_dir;        /* for the pinned key's known_hosts */

    /* connecting */
    bool connected, host_checked, authenticated;
    bool reused;       /* the session came from the pool */
    bool broken;       /* the session is not fit to be used again */
    bool keyscan_done; /* ssh-keyscan -c ended (:ssh_ca_known_hosts_file:) */
    char *keyscan;     /* its output */
    size_t keyscan_len;
    enum rex_auth methods[3];
    size_t n_methods, method_i;
    ssh_key key;
    char *auth_errors; /* "\n\nAuthentication method '<m>' failed with:\n<why>" each */

    /* running */
    int step;
    struct rex_cmd *cmd;  /* the command of this step */
    struct rex_cmd *kill; /* kill $(cat D/pid), when cancelled */
    bool password_sent;
    char *err_text; /* stderr of a setup script */
    size_t err_len;
    char prompt_tail[64]; /* the end of the last chunk: prompts split across reads */
    size_t prompt_len;
    int status; /* the script's exit status */
    bool killed;
    double last_input, last_keepalive; /* monotonic seconds */
    bool last_stdout_starts_power;     /* "restart host" / "shutdown host" */
    bool lost;                         /* the connection went away during the run */
    char error[1024];
};

#endif
