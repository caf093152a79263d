/*
 * The script runner (reference/plugins.md §1.4–§1.6): connect, preflight
 * (noexec and effective-user checks), upload the script and the wrapper,
 * run the wrapper under a pty answering password prompts, stream its
 * output, and clean up.  Each step is one remote command with upstream's
 * text and error messages; a cancel or timeout kills the remote process
 * tree through the pid file the wrapper writes.
 */
#include <libssh/server.h> /* ssh_send_keepalive works for clients too (§1.8) */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "ssh.h"

enum step {
    STEP_CONNECT,
    STEP_SETUP,          /* setup.c's first script */
    STEP_PREFLIGHT_USER, /* the preflight script as the effective user, under a pty */
    STEP_UPLOAD,         /* setup.c's second script, when switching user */
    STEP_RUN,
    STEP_CLEANUP,
    STEP_DONE,
};

static void fail(struct rex_job *job, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "Error initializing command: <Class> - <message>" and EXCEPTION (§1.4 step 7). */
static void fail(struct rex_job *job, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(job->error, sizeof(job->error), fmt, ap);
    va_end(ap);
    df_runner_exception(job->r, "Error initializing command", NULL, job->error, true);
}

/* ---- password prompts (§1.5) ----------------------------------------------------------------- */

static bool prompt_in(const struct rex_job *job, const char *text)
{
    if (strcmp(job->method, "sudo") == 0)
        return strstr(text, "rex login: ") != NULL;
    if (strcmp(job->method, "dzdo") == 0)
        return strcasestr(text, "password") != NULL;
    return strcasestr(text, "Password: ") != NULL;
}

/* A prompt split across two reads is found too: the end of the last chunk goes in front. */
static bool saw_prompt(struct rex_job *job, const char *buf, size_t len)
{
    char text[sizeof(job->prompt_tail) + 16384 + 1];
    size_t keep, n = job->prompt_len;

    if (len > 16384)
        len = 16384;
    memcpy(text, job->prompt_tail, n);
    memcpy(text + n, buf, len);
    n += len;
    text[n] = '\0';
    for (size_t i = 0; i < n; i++) /* NUL bytes would hide the rest from strstr */
        if (text[i] == '\0')
            text[i] = ' ';
    keep = n < sizeof(job->prompt_tail) - 1 ? n : sizeof(job->prompt_tail) - 1;
    memcpy(job->prompt_tail, text + n - keep, keep);
    job->prompt_len = keep;
    if (!prompt_in(job, text))
        return false;
    job->prompt_len = 0; /* answered: this prompt is not seen again */
    return true;
}

static void answer_prompts(struct rex_job *job, const char *buf, size_t len)
{
    const char *pw = job->effective_password ? job->effective_password : "";

    if (!rex_switching(job) || !saw_prompt(job, buf, len))
        return;
    rex_cmd_write(job->cmd, pw, strlen(pw));
    rex_cmd_write(job->cmd, "\n", 1);
    job->password_sent = true;
}

/* After the password went out, a chunk that holds it is dropped whole (§1.5). */
static bool holds_password(const struct rex_job *job, const char *buf, size_t len)
{
    const char *pw = job->effective_password;

    return job->password_sent && pw != NULL && *pw != '\0' && memmem(buf, len, pw, strlen(pw));
}

static void preflight_output(struct rex_job *job, const char *buf, size_t len, bool is_stderr)
{
    (void)is_stderr;
    answer_prompts(job, buf, len);
}

static bool blank(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != '\r' && buf[i] != '\n')
            return false;
    return true;
}

static void script_output(struct rex_job *job, const char *buf, size_t len, bool is_stderr)
{
    answer_prompts(job, buf, len);
    if (holds_password(job, buf, len))
        return;
    df_runner_publish(job->r, is_stderr ? "stderr" : "stdout", buf, len);
    if (!is_stderr && !blank(buf, len)) /* the power action's marker */
        job->last_stdout_starts_power = (len >= 12 && memcmp(buf, "restart host", 12) == 0) ||
                                        (len >= 13 && memcmp(buf, "shutdown host", 13) == 0);
}

/* ---- steps -------------------------------------------------------------------------------------
 */

static void setup_output(struct rex_job *job, const char *buf, size_t len, bool is_stderr)
{
    if (!is_stderr || job->err_len + len > 65536)
        return;
    job->err_text = realloc(job->err_text, job->err_len + len + 1);
    if (job->err_text == NULL)
        abort();
    memcpy(job->err_text + job->err_len, buf, len);
    job->err_len += len;
    job->err_text[job->err_len] = '\0';
}

static struct rex_cmd *setup_command(struct rex_job *job, enum rex_phase phase)
{
    char *script = rex_setup_script(job, phase);
    struct rex_cmd *c = rex_cmd_new("sh -s", false, script, strlen(script));

    c->on_data = setup_output;
    free(script);
    job->err_len = 0;
    return c;
}

static struct rex_cmd *command_for(struct rex_job *job, enum step step)
{
    struct rex_cmd *c = NULL;
    char *text = NULL, *script = rex_printf("%s/script", job->remote_dir);

    switch (step) {
        case STEP_SETUP:
            c = setup_command(job, PHASE_PREFLIGHT);
            break;
        case STEP_PREFLIGHT_USER:
            text = rex_as_user(job, script);
            c = rex_cmd_new(text, true, NULL, 0);
            c->keep_stdin = true;
            c->on_data = preflight_output;
            break;
        case STEP_UPLOAD:
            c = setup_command(job, PHASE_UPLOAD);
            break;
        case STEP_RUN:
            text = rex_printf("%s/script-wrapper", job->remote_dir);
            c = rex_cmd_new(text, true, NULL, 0);
            c->keep_stdin = true;
            c->on_data = script_output;
            break;
        case STEP_CLEANUP:
            text = rex_printf("rm -rf %s", job->remote_dir);
            c = rex_cmd_new(text, false, NULL, 0);
            break;
        default:
            break;
    }
    free(text);
    free(script);
    return c;
}

/* Whether a step applies to this job. */
static bool wanted(const struct rex_job *job, enum step step)
{
    switch (step) {
        case STEP_PREFLIGHT_USER:
        case STEP_UPLOAD:
            return rex_switching(job);
        case STEP_CLEANUP:
            return job->cleanup;
        case STEP_RUN:
            return !job->killed;
        default:
            return true;
    }
}

/* A step's command ended with status: false (after the failure was published) to stop. */
static bool check_step(struct rex_job *job, enum step step, int status)
{
    char msg[1024];

    if (status == 0 || step == STEP_RUN)
        return true;
    switch (step) {
        case STEP_SETUP:
        case STEP_UPLOAD:
            rex_setup_failure(job, job->err_text, status, msg, sizeof(msg));
            fail(job, "%s", msg);
            return false;
        case STEP_PREFLIGHT_USER:
            fail(job, "Failed to change to effective user, exit code: %d", status);
            return false;
        case STEP_CLEANUP:
            df_runner_publish_text(job->r, "debug",
                                   "Error when removing remote working dir: exit code %d", status);
            return true;
        default:
            return true;
    }
}

static void forget_session(struct rex_job *job)
{
    if (job->watching)
        df_runner_unwatch(job->r, job->fd);
    job->watching = false;
    rex_cmd_free(job->cmd);
    job->cmd = NULL;
    if (job->event != NULL) {
        ssh_event_remove_session(job->event, job->s);
        ssh_event_free(job->event);
        job->event = NULL;
    }
}

static void finish(struct rex_job *job)
{
    job->step = STEP_DONE;
    rex_cmd_free(job->kill); /* channels go before their session is disconnected */
    job->kill = NULL;
    forget_session(job);
    if (job->s != NULL && job->authenticated && !job->broken && !job->lost && !job->killed &&
        ssh_is_connected(job->s)) {
        rex_pool_put(job->plugin->pool, job, job->s);
        job->s = NULL;
    } else if (job->s != NULL) {
        ssh_disconnect(job->s);
    }
    if (!df_runner_exited(job->r))
        df_runner_exit(job->r, job->killed && job->status < 0 ? 143 : job->status);
}

/* The main command ended: its exit status, or 255 when the connection broke or the remote
 * wrapper died of a signal (§1.4 step 5).  A connection lost right after REX's power action
 * said "restart host" or "shutdown host" is the host going down as asked: success, as the
 * net-ssh runner had it (§1.5). */
static void run_ended(struct rex_job *job, int rc)
{
    struct rex_cmd *c = job->cmd;

    bool lost = rc < 0 || (c->exit_status < 0 && !c->signaled); /* no exit status came */

    job->status = lost || c->signaled ? 255 : c->exit_status;
    job->lost = lost;
    if (lost && job->last_stdout_starts_power)
        job->status = 0;
}

static void next_step(struct rex_job *job)
{
    rex_cmd_free(job->cmd);
    job->cmd = NULL;
    job->password_sent = false;
    job->prompt_len = 0;
    do
        job->step++;
    while (job->step < STEP_DONE && !wanted(job, (enum step)job->step));
    if (job->step < STEP_DONE)
        job->cmd = command_for(job, (enum step)job->step);
}

/* An idle session broke at the job's first command: connect anew.  0, or -1 after the
 * failure was published. */
static int reconnect(struct rex_job *job)
{
    forget_session(job);
    job->step = STEP_CONNECT;
    job->broken = true; /* the stale session must not go back to the pool */
    if (rex_conn_restart(job) == 0) {
        job->broken = false;
        return 0;
    }
    if (!df_runner_exited(job->r))
        fail(job, "%s", job->error[0] ? job->error : "cannot connect again");
    return -1;
}

/* Runs the steps as far as the session allows now. */
static void advance(struct rex_job *job)
{
    while (job->step != STEP_DONE && !df_runner_exited(job->r)) {
        int rc;
        if (job->step == STEP_CONNECT) {
            rc = rex_conn_pump(job);
            if (rc == 0)
                return;
            if (rc < 0) {
                df_runner_exception(job->r, "Error initializing command", NULL, job->error, true);
                finish(job);
                return;
            }
            next_step(job);
            continue;
        }
        rc = rex_cmd_pump(job, job->cmd);
        if (rc == 0)
            return;
        if (job->step == STEP_RUN) {
            run_ended(job, rc);
            if (job->lost) { /* nothing to clean up through a lost connection */
                finish(job);
                return;
            }
        } else if (rc < 0 && job->reused && job->step == STEP_SETUP) {
            if (reconnect(job) == 0)
                continue; /* the idle session went stale: a new one */
            finish(job);
            return;
        } else if (rc < 0) {
            job->broken = true;
            fail(job, "the connection to %s broke: %s", job->host, ssh_get_error(job->s));
            finish(job);
            return;
        } else if (!check_step(job, (enum step)job->step, job->cmd->exit_status)) {
            finish(job);
            return;
        }
        next_step(job);
    }
    if (job->step == STEP_DONE && !df_runner_exited(job->r))
        finish(job);
}

/* The kill command runs beside the main one; its failure is only a debug record (§1.6). */
static void advance_kill(struct rex_job *job)
{
    int rc;

    if (job->kill == NULL)
        return;
    rc = rex_cmd_pump(job, job->kill);
    if (rc == 0)
        return;
    if (rc < 0 || job->kill->exit_status != 0)
        df_runner_publish_text(job->r, "debug", "Unexpected error: kill exited with %d",
                               rc < 0 ? -1 : job->kill->exit_status);
    rex_cmd_free(job->kill);
    job->kill = NULL;
}

/* ---- the event loop ----------------------------------------------------------------------------
 */

static double mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_socket(df_runner *r, int fd, uint32_t events, void *arg)
{
    (void)r, (void)fd, (void)events;
    rex_pump(arg);
}

/* Bytes from the server are waiting: it is alive (for keepalive()).  Asked of the socket,
 * since whichever pump comes first reads them, a readiness event or the refresh tick. */
static void note_input(struct rex_job *job)
{
    int fd = job->s != NULL ? ssh_get_fd(job->s) : -1, waiting = 0;

    if (fd >= 0 && ioctl(fd, FIONREAD, &waiting) == 0 && waiting > 0)
        job->last_input = mono();
}

/* Read always; write when libssh has something queued or the TCP connect is under way. */
static void watch_socket(struct rex_job *job)
{
    uint32_t events = EPOLLIN;
    int fd = ssh_get_fd(job->s);

    if (job->step == STEP_DONE || fd < 0)
        return;
    if ((ssh_get_poll_flags(job->s) & SSH_WRITE_PENDING) || ssh_get_serverbanner(job->s) == NULL)
        events |= EPOLLOUT;
    if (!job->watching) {
        job->fd = fd;
        job->watching = df_runner_watch(job->r, fd, events, on_socket, job) == 0;
    } else {
        df_runner_watch_modify(job->r, fd, events);
    }
}

void rex_pump(struct rex_job *job)
{
    note_input(job);
    if (job->connected && job->event == NULL) {
        job->event = ssh_event_new();
        if (job->event != NULL)
            ssh_event_add_session(job->event, job->s);
    }
    if (job->event != NULL && job->step != STEP_DONE)
        ssh_event_dopoll(job->event, 0); /* exit statuses and closes of ended channels */
    advance_kill(job);
    advance(job);
    watch_socket(job);
}

/* ---- the runner -------------------------------------------------------------------------------
 */

static const char *str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));

    return s != NULL && *s != '\0' ? s : NULL;
}

/* Called at launch, for every host before any task is created, and when a task is planned. */
int rex_check_input(const struct df_runner_class *cls, const json_t *input, df_error *err)
{
    static const char *const required[] = {"hostname", "script"};
    const char *method = str(input, "effective_user_method");

    (void)cls;
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        const json_t *v = json_object_get(input, required[i]);
        if (str(input, required[i]) == NULL) {
            snprintf(err->text, sizeof(err->text), "'%s' must be a non-empty string, found %s",
                     required[i], json_is_string(v) ? "an empty one" : df_json_type_name(v));
            return -1;
        }
    }
    if (method != NULL && strcmp(method, "sudo") != 0 && strcmp(method, "dzdo") != 0 &&
        strcmp(method, "su") != 0) {
        snprintf(err->text, sizeof(err->text), "effective_user_method '%s' not supported", method);
        return -1;
    }
    return 0;
}

static void read_input(struct rex_job *job)
{
    const json_t *in = df_runner_input(job->r), *secrets = df_runner_secrets(job->r);
    const json_t *port = json_object_get(in, "ssh_port"), *cleanup;
    const char *dir = str(in, "remote_working_dir");

    job->host = str(in, "hostname");
    job->script = str(in, "script");
    job->user = str(in, "ssh_user") ? str(in, "ssh_user") : "root";
    job->effective_user = str(in, "effective_user");
    job->method = str(in, "effective_user_method") ? str(in, "effective_user_method") : "sudo";
    job->port = json_is_integer(port) ? (int)json_integer_value(port) : 22;
    job->password = str(secrets, "ssh_password");
    job->passphrase = str(secrets, "key_passphrase");
    job->effective_password = str(secrets, "effective_user_password");
    job->first_execution = json_is_true(json_object_get(in, "first_execution"));
    job->pinned_key = str(in, "host_public_key");
    cleanup = json_object_get(in, "cleanup_working_dirs");
    job->cleanup = json_is_boolean(cleanup) ? json_is_true(cleanup) : job->plugin->s.cleanup;
    job->remote_dir =
        rex_printf("%s/foreman-ssh-cmd-%s", dir ? dir : job->plugin->s.remote_working_dir,
                   df_runner_id(job->r));
    job->status = -1;
}

static int rex_start(df_runner *r)
{
    struct rex_job *job = calloc(1, sizeof(*job));
    const json_t *timeout = json_object_get(df_runner_input(r), "execution_timeout_interval");

    if (job == NULL)
        abort();
    job->r = r;
    job->plugin = df_runner_class_data(r);
    df_runner_set_data(r, job);
    read_input(job);
    df_runner_set_timeout(r, json_number_value(timeout)); /* from the start, connecting too */
    if (job->host == NULL || job->script == NULL) {
        fail(job, "the input needs 'hostname' and 'script'");
        return -1;
    }
    if (rex_conn_begin(job) < 0) {
        if (!df_runner_exited(r) && job->error[0] != '\0')
            df_runner_exception(r, "Error initializing command", NULL, job->error, true);
        return -1; /* or waits for descriptors (nothing was published) */
    }
    rex_pump(job);
    return 0;
}

/* ServerAliveInterval 15, ServerAliveCountMax 3 (§1.3): a keepalive every interval; three
 * intervals without a word from the server and the connection counts as broken (255). */
static void keepalive(struct rex_job *job)
{
    double now = mono(), every = job->plugin->s.keepalive;

    if (!job->authenticated)
        return;
    if (job->last_input == 0)
        job->last_input = job->last_keepalive = now;
    if (now - job->last_input > 3 * every) {
        /* what OpenSSH's ssh says on its stderr then */
        df_runner_publish_text(job->r, "stderr", "Timeout, server %s not responding.\r\n",
                               job->host);
        job->status = 255;
        job->broken = true;
        if (job->step != STEP_RUN)
            fail(job, "the connection to %s broke: the server stopped answering", job->host);
        finish(job);
    } else if (now - job->last_keepalive >= every) {
        ssh_send_keepalive(job->s);
        job->last_keepalive = now;
    }
}

/* Each tick: what the socket may not have announced, and keepalives. */
static void rex_refresh(df_runner *r)
{
    struct rex_job *job = df_runner_data(r);

    if (job != NULL && job->step != STEP_DONE)
        rex_pump(job);
    if (job != NULL && job->step != STEP_DONE)
        keepalive(job);
}

/* Cancel or timeout: kill $(cat D/pid) on a second channel once the script runs (§1.6);
 * before that, the job stops at the next step. */
static void rex_kill(df_runner *r)
{
    struct rex_job *job = df_runner_data(r);
    char *text;

    if (job == NULL || job->killed)
        return;
    job->killed = true;
    if (job->step == STEP_RUN && job->kill == NULL) {
        text = rex_printf("kill $(cat %s/pid)", job->remote_dir);
        job->kill = rex_cmd_new(text, false, NULL, 0);
        free(text);
        rex_pump(job);
    } else if (job->step == STEP_CONNECT) {
        df_runner_publish_text(r, "debug", "The job was cancelled before it connected");
        finish(job);
    }
}

static void rex_close(df_runner *r)
{
    struct rex_job *job = df_runner_data(r);

    if (job == NULL)
        return;
    rex_cmd_free(job->cmd);
    rex_cmd_free(job->kill);
    if (job->s != NULL)
        ssh_free(job->s);
    ssh_key_free(job->key);
    free(job->auth_errors);
    free(job->keyscan);
    free(job->err_text);
    free(job->remote_dir);
    if (job->local_dir != NULL) {
        char path[1100];
        snprintf(path, sizeof(path), "%s/known_hosts", job->local_dir);
        unlink(path);
        rmdir(job->local_dir);
        free(job->local_dir);
    }
    free(job);
    df_runner_set_data(r, NULL);
}

const struct df_runner_ops rex_runner_ops = {
    .start = rex_start,
    .refresh = rex_refresh,
    .kill = rex_kill,
    .close = rex_close,
};
