/*
 * One remote command: an exec channel on the job's session, opened, given a
 * pty when asked (the remote merges stderr into stdout then, as ssh -tt),
 * fed its stdin and read until it ends.  Every call does what the session
 * allows now and returns; the job calls again when the socket is ready.
 */
#include <stdlib.h>
#include <string.h>

#include "ssh.h"

static void exit_status_cb(ssh_session s, ssh_channel ch, int status, void *ud)
{
    struct rex_cmd *c = ud;

    (void)s, (void)ch;
    c->exit_status = status;
}

/* Died by a signal: OpenSSH reports no exit status then (§1.8: upstream says 255). */
static void exit_signal_cb(ssh_session s, ssh_channel ch, const char *signal, int core,
                           const char *errmsg, const char *lang, void *ud)
{
    struct rex_cmd *c = ud;

    (void)s, (void)ch, (void)signal, (void)core, (void)errmsg, (void)lang;
    c->signaled = true;
}

struct rex_cmd *rex_cmd_new(const char *command, bool pty, const char *input, size_t input_len)
{
    struct rex_cmd *c = calloc(1, sizeof(*c));

    if (c == NULL || (c->command = strdup(command)) == NULL)
        abort();
    c->pty = pty;
    c->exit_status = -1;
    if (input != NULL) {
        c->input = malloc(input_len + 1);
        if (c->input == NULL)
            abort();
        memcpy(c->input, input, input_len);
        c->input_len = input_len;
    }
    return c;
}

void rex_cmd_free(struct rex_cmd *c)
{
    if (c == NULL)
        return;
    if (c->ch != NULL) {
        ssh_remove_channel_callbacks(c->ch, &c->cb);
        ssh_channel_free(c->ch);
    }
    free(c->command);
    free(c->input);
    free(c);
}

int rex_cmd_write(struct rex_cmd *c, const char *buf, size_t len)
{
    char *grown = realloc(c->input, c->input_len + len + 1);

    if (grown == NULL)
        abort();
    memcpy(grown + c->input_len, buf, len);
    c->input = grown;
    c->input_len += len;
    return 0;
}

static int open_channel(struct rex_job *job, struct rex_cmd *c)
{
    int rc;

    if (c->ch == NULL) {
        c->ch = ssh_channel_new(job->s);
        if (c->ch == NULL)
            return -1;
        c->cb = (struct ssh_channel_callbacks_struct){
            .userdata = c,
            .channel_exit_status_function = exit_status_cb,
            .channel_exit_signal_function = exit_signal_cb,
        };
        ssh_callbacks_init(&c->cb);
        ssh_set_channel_callbacks(c->ch, &c->cb);
    }
    rc = ssh_channel_open_session(c->ch);
    return rc == SSH_AGAIN ? 0 : rc == SSH_OK ? 1 : -1;
}

static int feed_stdin(struct rex_cmd *c)
{
    while (c->input_off < c->input_len) {
        int n = ssh_channel_write(c->ch, c->input + c->input_off,
                                  (uint32_t)(c->input_len - c->input_off));
        if (n < 0 && (ssh_channel_is_closed(c->ch) || ssh_channel_is_eof(c->ch))) {
            c->input_off = c->input_len; /* the command ended: what it did not read is dropped */
            return 0;
        }
        if (n < 0)
            return -1;
        if (n == 0)
            return 0;
        c->input_off += (size_t)n;
    }
    if (!c->keep_stdin && !c->eof_sent) {
        if (ssh_channel_send_eof(c->ch) == SSH_ERROR)
            return -1;
        c->eof_sent = true;
    }
    return 0;
}

static int read_output(struct rex_job *job, struct rex_cmd *c)
{
    char buf[16384];

    for (int is_stderr = 0; is_stderr < 2; is_stderr++) {
        int n;
        while ((n = ssh_channel_read_nonblocking(c->ch, buf, sizeof(buf), is_stderr)) > 0)
            if (c->on_data != NULL)
                c->on_data(job, buf, (size_t)n, is_stderr);
        if (n == SSH_ERROR)
            return -1;
    }
    return 0;
}

int rex_cmd_pump(struct rex_job *job, struct rex_cmd *c)
{
    int rc;

    switch (c->state) {
        case CMD_OPEN:
            rc = open_channel(job, c);
            if (rc <= 0)
                return rc;
            c->state = c->pty ? CMD_PTY : CMD_EXEC;
            /* fall through */
        case CMD_PTY:
            if (c->state == CMD_PTY) {
                rc = ssh_channel_request_pty_size(c->ch, "xterm", 80, 24);
                if (rc == SSH_AGAIN)
                    return 0;
                if (rc != SSH_OK)
                    return -1;
                c->state = CMD_EXEC;
            }
            /* fall through */
        case CMD_EXEC:
            rc = ssh_channel_request_exec(c->ch, c->command);
            if (rc == SSH_AGAIN)
                return 0;
            if (rc != SSH_OK)
                return -1;
            c->state = CMD_IO;
            /* fall through */
        case CMD_IO:
            if (feed_stdin(c) < 0 || read_output(job, c) < 0)
                return -1;
            if (!ssh_channel_is_eof(c->ch) && !ssh_channel_is_closed(c->ch))
                return 0;
            if (read_output(job, c) < 0)
                return -1;
            c->state = CMD_CLOSE;
            /* fall through */
        case CMD_CLOSE:
            /* the exit status comes after EOF, before the close: reading processes the packets */
            if (read_output(job, c) < 0 && !ssh_channel_is_closed(c->ch))
                return -1;
            if (c->exit_status < 0 && !c->signaled && !ssh_channel_is_closed(c->ch))
                return 0;
            c->state = CMD_DONE;
            /* fall through */
        case CMD_DONE:
            return 1;
    }
    return -1;
}
