/*
 * The runner of one script task: builds the command's environment, argv and
 * stdin from the task kind and the input, filters stdout through the line
 * protocol, maps the exit code (success, retry with backoff, failure) and
 * carries ::set-state values over to the next attempt.
 *
 * Input values never become part of a shell command line: they travel in the
 * environment, on stdin, in a file, or (without :shell:) as separate argv
 * elements.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "script.h"

#define MAX_BACKOFF 60.0

struct script_run {
    const struct task_kind *k;
    int attempt; /* 1 for the first */
    json_t *state;
    df_proc *proc;
    uint64_t timeout_timer, retry_timer;
    char *line; /* stdout after its last newline */
    size_t line_len;
    char *json_out; /* :output_format: json: all of stdout */
    size_t json_len;
    char input_file[64];
};

static const struct task_kind *kind_of(df_runner *r)
{
    const struct script_plugin *sp = df_runner_class_data(r);

    return script_kind(sp, json_string_value(json_object_get(df_runner_input(r), "kind")));
}

/* Called at launch, for every task before any is created, and when a task is planned. */
int script_check_input(const struct df_runner_class *cls, const json_t *input, df_error *err)
{
    const struct script_plugin *sp = cls->data;
    const json_t *kind_v = json_object_get(input, "kind");
    const char *kind = json_string_value(kind_v);
    const json_t *in = json_object_get(input, "input");
    size_t n = 0;

    if (script_kind(sp, kind) == NULL) {
        n = kind != NULL ? (size_t)snprintf(err->text, sizeof(err->text),
                                            "unknown script kind '%s' (known:", kind)
                         : (size_t)snprintf(err->text, sizeof(err->text),
                                            "'kind' must be a string naming a task kind, found %s "
                                            "(known:",
                                            df_json_type_name(kind_v));
        for (size_t i = 0; i < sp->n_kinds && n < sizeof(err->text); i++)
            n += (size_t)snprintf(err->text + n, sizeof(err->text) - n, "%s %s", i ? "," : "",
                                  sp->kinds[i].kind);
        if (n < sizeof(err->text))
            snprintf(err->text + n, sizeof(err->text) - n, "%s)", sp->n_kinds ? "" : " none");
        return -1;
    }
    if (in != NULL && !json_is_object(in)) {
        snprintf(err->text, sizeof(err->text), "'input' of a '%s' task must be an object, found %s",
                 kind, df_json_type_name(in));
        return -1;
    }
    return 0;
}

/* ---- environment and arguments ------------------------------------------------------------- */

struct strv {
    char **v;
    size_t n;
};

static void push(struct strv *s, char *owned)
{
    char **grown = realloc(s->v, (s->n + 2) * sizeof(char *));

    if (grown == NULL || owned == NULL)
        abort();
    s->v = grown;
    s->v[s->n++] = owned;
    s->v[s->n] = NULL;
}

static void pushf(struct strv *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void pushf(struct strv *s, const char *fmt, ...)
{
    char *str = NULL;
    va_list ap;

    va_start(ap, fmt);
    if (vasprintf(&str, fmt, ap) < 0)
        abort();
    va_end(ap);
    push(s, str);
}

static void strv_free(struct strv *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
}

/* A value as text: strings as they are, everything else as compact JSON. */
static char *value_text(const json_t *v)
{
    char *s = json_is_string(v) ? strdup(json_string_value(v))
                                : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

    if (s == NULL)
        abort();
    return s;
}

static void upper(char *s)
{
    for (; *s != '\0'; s++)
        *s = (*s >= 'a' && *s <= 'z') ? (char)(*s - 32) : (*s == '-' ? '_' : *s);
}

static void push_named(struct strv *s, const char *prefix, const char *key, const json_t *v)
{
    char *text = value_text(v), *name = NULL;

    if (asprintf(&name, "%s%s", prefix, key) < 0)
        abort();
    upper(name + strlen(prefix));
    pushf(s, "%s=%s", name, text);
    free(name);
    free(text);
}

/* A small environment of our own: the daemon's would leak its settings into every task. */
static void build_env(df_runner *r, struct script_run *run, const json_t *input, struct strv *env)
{
    const struct task_kind *k = run->k;
    const char *home = getenv("HOME"), *key;
    const json_t *v;

    push(env, strdup("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
    pushf(env, "HOME=%s", home ? home : "/");
    push(env, strdup("LANG=C.UTF-8"));
    pushf(env, "TASK_ID=%s",
          json_string_value(json_object_get(df_runner_input(r), "task_id"))
              ?: df_runner_plan_id(r));
    pushf(env, "TASK_KIND=%s", k->kind);
    pushf(env, "EXECUTION_COUNT=%d", run->attempt);
    pushf(env, "MAX_RETRIES=%d", k->max_retries);
    json_object_foreach((json_t *)run->state, key, v) push_named(env, "STATE_", key, v);
    for (size_t i = 0; i < k->n_env; i++)
        push(env, strdup(k->env[i]));
    if (k->input == INPUT_ENV)
        json_object_foreach((json_t *)input, key, v) push_named(env, "INPUT_", key, v);
    if (k->input == INPUT_JSON_FILE)
        pushf(env, "INPUT_FILE=%s", run->input_file);
}

static void build_argv(const struct task_kind *k, const json_t *input, struct strv *argv)
{
    const char *key;
    const json_t *v;

    for (size_t i = 0; i < k->argc; i++)
        push(argv, strdup(k->argv[i]));
    if (k->input != INPUT_ARGS)
        return;
    json_object_foreach((json_t *)input, key, v)
    {
        char *text = value_text(v);
        pushf(argv, "--%s=%s", key, text);
        free(text);
    }
}

/* :input_format: json_file: a private file, removed when the task ends. */
static int write_input_file(df_runner *r, struct script_run *run, const json_t *input)
{
    int fd;

    snprintf(run->input_file, sizeof(run->input_file), "/tmp/dynflow-script-input-XXXXXX");
    fd = mkstemp(run->input_file); /* mode 0600 */
    if (fd < 0 || json_dumpfd(input, fd, JSON_COMPACT) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        df_runner_exception(r, "Error initializing command", NULL, strerror(e), true);
        run->input_file[0] = '\0';
        return -1;
    }
    close(fd);
    return 0;
}

/* ---- output ------------------------------------------------------------------------------ */

/* Complete lines go through the protocol; what is left of them is published in one piece. */
static void filter_lines(df_runner *r, struct script_run *run, bool final)
{
    size_t start = 0, keep = 0, out_start = 0;
    char *buf = run->line;

    while (start < run->line_len) {
        char *nl = memchr(buf + start, '\n', run->line_len - start);
        size_t end = nl ? (size_t)(nl - buf) : run->line_len;
        if (nl == NULL && !final)
            break;
        if (script_protocol_line(r, buf + start, end - start, run->state)) {
            if (start > out_start && run->k->output == OUTPUT_TEXT)
                df_runner_publish(r, "stdout", buf + out_start, start - out_start);
            out_start = nl ? end + 1 : end;
        }
        start = nl ? end + 1 : end;
    }
    if (start > out_start && run->k->output == OUTPUT_TEXT)
        df_runner_publish(r, "stdout", buf + out_start, start - out_start);
    keep = run->line_len - start;
    if (start > 0 && keep > 0)
        memmove(buf, buf + start, keep);
    run->line_len = keep;
}

static void append(char **buf, size_t *len, const char *data, size_t n)
{
    char *grown = realloc(*buf, *len + n + 1);

    if (grown == NULL)
        abort();
    memcpy(grown + *len, data, n);
    *len += n;
    grown[*len] = '\0';
    *buf = grown;
}

static void on_output(df_runner *r, const char *type, const char *buf, size_t len, void *arg)
{
    struct script_run *run = arg;

    if (strcmp(type, "stdout") != 0) {
        df_runner_publish(r, type, buf, len);
        return;
    }
    if (run->k->output == OUTPUT_JSON)
        append(&run->json_out, &run->json_len, buf, len);
    append(&run->line, &run->line_len, buf, len);
    filter_lines(r, run, false);
}

/* :output_format: json: stdout parsed into output.data (an object's keys, else "result"). */
static bool take_json(df_runner *r, struct script_run *run)
{
    json_error_t je;
    json_t *j = json_loadb(run->json_out ? run->json_out : "", run->json_len, JSON_DECODE_ANY, &je);
    const char *key;
    json_t *v;

    if (j == NULL) {
        df_runner_publish_text(r, "debug", "The output of '%s' is not JSON: %s (line %d)",
                               run->k->kind, je.text, je.line);
        return false;
    }
    if (json_is_object(j))
        json_object_foreach(j, key, v) df_runner_set_output(r, key, json_incref(v));
    else
        df_runner_set_output(r, "result", json_incref(j));
    json_decref(j);
    return true;
}

/* ---- attempts ------------------------------------------------------------------------------ */

static int spawn_attempt(df_runner *r, struct script_run *run);

static void retry(df_runner *r, void *arg)
{
    struct script_run *run = arg;

    run->retry_timer = 0;
    run->attempt++;
    spawn_attempt(r, run);
}

static void attempt_done(df_runner *r, int status, void *arg)
{
    struct script_run *run = arg;
    const struct task_kind *k = run->k;

    run->proc = NULL;
    if (run->timeout_timer != 0)
        df_runner_cancel_timer(r, run->timeout_timer);
    run->timeout_timer = 0;
    filter_lines(r, run, true);
    if (k->output == OUTPUT_JSON && script_code_in(k->success, status) && !take_json(r, run))
        status = status == 0 ? 1 : status;
    free(run->json_out);
    run->json_out = NULL;
    run->json_len = 0;
    df_runner_set_output(r, "exit_code", json_integer(status));
    if (script_code_in(k->success, status)) {
        df_runner_exit(r, 0);
    } else if (script_code_in(k->retry, status) && run->attempt <= k->max_retries) {
        double wait = run->attempt >= 7 ? MAX_BACKOFF : (double)(1 << (run->attempt - 1));
        df_runner_publish_text(r, "debug", "attempt %d of %d exited with %d; retrying in %g s",
                               run->attempt, k->max_retries + 1, status, wait);
        run->retry_timer = df_runner_after(r, wait, retry, run);
    } else {
        df_runner_exit(r, status != 0 ? status : 1);
    }
}

static int spawn_attempt(df_runner *r, struct script_run *run)
{
    const struct task_kind *k = run->k;
    const json_t *input = json_object_get(df_runner_input(r), "input");
    json_t *empty = json_object();
    struct strv env = {0}, argv = {0};
    struct df_proc_spec spec;
    char *stdin_text = NULL;
    int rc = 0;

    if (input == NULL)
        input = empty;
    if (k->input == INPUT_JSON_FILE && run->input_file[0] == '\0')
        rc = write_input_file(r, run, input);
    if (rc == 0) {
        build_env(r, run, input, &env);
        build_argv(k, input, &argv);
        spec = (struct df_proc_spec){.argv = (const char *const *)argv.v,
                                     .envp = (const char *const *)env.v,
                                     .cwd = k->working_directory,
                                     .stdin_pipe = k->input == INPUT_JSON_STDIN,
                                     .grace_s = k->grace,
                                     .on_output = on_output,
                                     .on_exit = attempt_done,
                                     .arg = run};
        rc = df_proc_spawn(r, &spec, &run->proc);
    }
    if (rc == 0 && k->input == INPUT_JSON_STDIN) {
        stdin_text = json_dumps(input, JSON_COMPACT);
        df_proc_write(run->proc, stdin_text, strlen(stdin_text));
        df_proc_close_stdin(run->proc);
    }
    if (rc == 0)
        run->timeout_timer = df_runner_set_timeout(r, k->timeout);
    free(stdin_text);
    strv_free(&env);
    strv_free(&argv);
    json_decref(empty);
    return rc < 0 ? -1 : 0;
}

static int script_start(df_runner *r)
{
    struct script_run *run = calloc(1, sizeof(*run));

    if (run == NULL)
        abort();
    run->k = kind_of(r);
    run->attempt = 1;
    run->state = json_object();
    df_runner_set_data(r, run);
    if (run->k == NULL) { /* refused at planning; here only if the settings changed */
        df_runner_exception(r, "Error initializing command", NULL, "unknown script kind", true);
        return -1;
    }
    return spawn_attempt(r, run);
}

/* Cancel: the running attempt is stopped; a task waiting to retry ends now. */
static void script_kill(df_runner *r)
{
    struct script_run *run = df_runner_data(r);

    if (run != NULL && run->proc != NULL) {
        df_proc_kill(run->proc);
    } else if (run != NULL && run->retry_timer != 0) {
        df_runner_cancel_timer(r, run->retry_timer);
        run->retry_timer = 0;
        df_runner_publish_text(r, "debug", "Cancelled while waiting to retry");
        df_runner_exit(r, 143);
    }
}

static void script_close(df_runner *r)
{
    struct script_run *run = df_runner_data(r);

    if (run == NULL)
        return;
    if (run->input_file[0] != '\0')
        unlink(run->input_file);
    json_decref(run->state);
    free(run->line);
    free(run->json_out);
    free(run);
    df_runner_set_data(r, NULL);
}

const struct df_runner_ops script_runner_ops = {
    .start = script_start,
    .kill = script_kill,
    .close = script_close,
};
