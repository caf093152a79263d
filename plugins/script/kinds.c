/*
 * settings.d/script.yml: the task kinds.  Every mistake is refused at start
 * with the file, the task (index and kind), the key and what was expected.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "script.h"

#define SETTINGS "settings.d/script.yml"

static int fail(df_error *err, size_t i, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(df_error *err, size_t i, const char *kind, const char *fmt, ...)
{
    char what[400];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    snprintf(err->text, sizeof(err->text), SETTINGS ": task %zu (%s): %s", i + 1,
             kind ? kind : "no :kind:", what);
    return -1;
}

static char *dup_str(const char *s)
{
    char *d = strdup(s);

    if (d == NULL)
        abort();
    return d;
}

static int parse_enum(const json_t *v, const char *const *names, int fallback)
{
    if (v == NULL || json_is_null(v))
        return fallback;
    for (int i = 0; names[i] != NULL; i++)
        if (json_is_string(v) && strcmp(json_string_value(v), names[i]) == 0)
            return i;
    return -1;
}

static bool codes_ok(const json_t *v)
{
    const json_t *c;
    size_t i;

    if (!json_is_array(v))
        return false;
    json_array_foreach(v, i, c) if (!json_is_integer(c)) return false;
    return true;
}

/* :exit_codes: { :success: [0], :retry: [75], :failure: [] } */
static int parse_exit_codes(struct task_kind *k, const json_t *v, size_t i, df_error *err)
{
    const json_t *success = json_object_get(v, "success"), *retry = json_object_get(v, "retry");
    const json_t *failure = json_object_get(v, "failure");

    if (v != NULL && !json_is_object(v))
        return fail(err, i, k->kind, ":exit_codes: must be a map of :success:, :retry:, :failure:");
    if ((success && !codes_ok(success)) || (retry && !codes_ok(retry)) ||
        (failure && !codes_ok(failure)))
        return fail(err, i, k->kind, ":exit_codes: lists must hold integers");
    k->success = success ? json_copy((json_t *)success) : json_pack("[i]", 0);
    k->retry = retry ? json_copy((json_t *)retry) : json_array();
    return 0;
}

static int parse_command(struct task_kind *k, const json_t *t, size_t i, df_error *err)
{
    const json_t *cmd = json_object_get(t, "command"), *args = json_object_get(t, "args"), *a;
    size_t n;

    if (!json_is_string(cmd) || json_string_length(cmd) == 0)
        return fail(err, i, k->kind, ":command: must be a command (a string)");
    if (args != NULL && !json_is_array(args))
        return fail(err, i, k->kind, ":args: must be a list of strings");
    if (k->shell && args != NULL)
        return fail(err, i, k->kind, ":args: cannot go with :shell: true (put them in :command:)");
    if (k->shell) {
        const char *argv[] = {"/bin/sh", "-c", json_string_value(cmd)};
        k->argc = 3;
        k->argv = calloc(4, sizeof(char *));
        for (size_t j = 0; j < 3; j++)
            k->argv[j] = dup_str(argv[j]);
        return 0;
    }
    k->argc = 1 + json_array_size(args);
    k->argv = calloc(k->argc + 1, sizeof(char *));
    k->argv[0] = dup_str(json_string_value(cmd));
    json_array_foreach(args, n, a)
    {
        if (!json_is_string(a))
            return fail(err, i, k->kind, ":args: must be a list of strings (item %zu is not)",
                        n + 1);
        k->argv[n + 1] = dup_str(json_string_value(a));
    }
    return 0;
}

static int parse_env(struct task_kind *k, const json_t *env, size_t i, df_error *err)
{
    const char *key;
    const json_t *v;

    if (env == NULL)
        return 0;
    if (!json_is_object(env))
        return fail(err, i, k->kind, ":env: must be a map of names to values");
    k->env = calloc(json_object_size(env) + 1, sizeof(char *));
    json_object_foreach((json_t *)env, key, v)
    {
        char *kv = NULL;
        int n;
        if (json_is_string(v))
            n = asprintf(&kv, "%s=%s", key, json_string_value(v));
        else if (json_is_integer(v))
            n = asprintf(&kv, "%s=%lld", key, (long long)json_integer_value(v));
        else
            return fail(err, i, k->kind, ":env: %s must be a string or an integer", key);
        if (n < 0)
            abort();
        k->env[k->n_env++] = kv;
    }
    return 0;
}

static double seconds(const json_t *v)
{
    return json_is_number(v) ? json_number_value(v) : 0;
}

static int parse_kind(struct task_kind *k, const json_t *t, size_t i, df_error *err)
{
    static const char *const inputs[] = {"env", "json_stdin", "json_file", "args", NULL};
    static const char *const outputs[] = {"text", "json", "exit_code_only", NULL};
    const json_t *kind = json_object_get(t, "kind"), *shell = json_object_get(t, "shell");
    const json_t *wd = json_object_get(t, "working_directory");
    const json_t *retries = json_object_get(t, "max_retries");
    int in, out;

    if (!json_is_object(t))
        return fail(err, i, NULL, "must be a map with :kind: and :command:");
    if (!json_is_string(kind) || json_string_length(kind) == 0)
        return fail(err, i, NULL, ":kind: must be a name");
    k->kind = dup_str(json_string_value(kind));
    if (shell != NULL && !json_is_boolean(shell))
        return fail(err, i, k->kind, ":shell: must be true or false");
    k->shell = json_is_true(shell);
    in = parse_enum(json_object_get(t, "input_format"), inputs, INPUT_ENV);
    out = parse_enum(json_object_get(t, "output_format"), outputs, OUTPUT_TEXT);
    if (in < 0)
        return fail(err, i, k->kind, ":input_format: must be env, json_stdin, json_file or args");
    if (out < 0)
        return fail(err, i, k->kind, ":output_format: must be text, json or exit_code_only");
    if (k->shell && in == INPUT_ARGS)
        return fail(err, i, k->kind,
                    ":input_format: args cannot go with :shell: true (input never becomes part "
                    "of a command line)");
    k->input = (enum input_format)in;
    k->output = (enum output_format)out;
    if (json_object_get(t, "timeout") && seconds(json_object_get(t, "timeout")) <= 0)
        return fail(err, i, k->kind, ":timeout: must be a positive number of seconds");
    if (json_object_get(t, "grace_period") && seconds(json_object_get(t, "grace_period")) <= 0)
        return fail(err, i, k->kind, ":grace_period: must be a positive number of seconds");
    k->timeout = seconds(json_object_get(t, "timeout"));
    k->grace = seconds(json_object_get(t, "grace_period"));
    if (retries != NULL && (!json_is_integer(retries) || json_integer_value(retries) < 0))
        return fail(err, i, k->kind, ":max_retries: must be a number >= 0");
    k->max_retries = retries ? (int)json_integer_value(retries) : 0;
    if (wd != NULL && (!json_is_string(wd) || json_string_value(wd)[0] != '/'))
        return fail(err, i, k->kind, ":working_directory: must be an absolute path");
    k->working_directory = wd ? dup_str(json_string_value(wd)) : NULL;
    if (parse_command(k, t, i, err) < 0 || parse_env(k, json_object_get(t, "env"), i, err) < 0)
        return -1;
    return parse_exit_codes(k, json_object_get(t, "exit_codes"), i, err);
}

int script_kinds_load(struct script_plugin *sp, const json_t *settings, df_error *err)
{
    const json_t *tasks = json_object_get(settings, "tasks"), *t;
    size_t i;

    if (tasks != NULL && !json_is_array(tasks)) {
        snprintf(err->text, sizeof(err->text), SETTINGS ": :tasks: must be a list of tasks");
        return -1;
    }
    sp->kinds = calloc(json_array_size(tasks) + 1, sizeof(*sp->kinds));
    json_array_foreach(tasks, i, t)
    {
        struct task_kind *k = &sp->kinds[sp->n_kinds++];
        if (parse_kind(k, t, i, err) < 0)
            return -1;
        if (script_kind(sp, k->kind) != k)
            return fail(err, i, k->kind, ":kind: '%s' is defined twice", k->kind);
    }
    return 0;
}

void script_kinds_free(struct script_plugin *sp)
{
    for (size_t i = 0; i < sp->n_kinds; i++) {
        struct task_kind *k = &sp->kinds[i];
        for (size_t j = 0; k->argv != NULL && k->argv[j] != NULL; j++)
            free(k->argv[j]);
        for (size_t j = 0; j < k->n_env; j++)
            free(k->env[j]);
        free(k->argv);
        free(k->env);
        free(k->kind);
        free(k->working_directory);
        json_decref(k->success);
        json_decref(k->retry);
    }
    free(sp->kinds);
}

const struct task_kind *script_kind(const struct script_plugin *sp, const char *name)
{
    for (size_t i = 0; name != NULL && i < sp->n_kinds; i++)
        if (strcmp(sp->kinds[i].kind, name) == 0)
            return &sp->kinds[i];
    return NULL;
}

bool script_code_in(const json_t *codes, int code)
{
    const json_t *c;
    size_t i;

    json_array_foreach(codes, i, c) if (json_integer_value(c) == code) return true;
    return false;
}
