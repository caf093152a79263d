/*
 * The script plugin: local commands from settings.d/script.yml as tasks
 * (operation "script", one child plan per input key).
 */
#ifndef SCRIPT_PLUGIN_H
#define SCRIPT_PLUGIN_H

#include <jansson.h>
#include <stdbool.h>

#include "dynflow/plugin.h"

#define SCRIPT_ACTION "Proxy::Script::Actions::RunScript"

enum input_format { INPUT_ENV, INPUT_JSON_STDIN, INPUT_JSON_FILE, INPUT_ARGS };
enum output_format { OUTPUT_TEXT, OUTPUT_JSON, OUTPUT_EXIT_CODE_ONLY };

/* One :tasks: entry. */
struct task_kind {
    char *kind;
    char **argv; /* the command and :args:, or /bin/sh -c <command line> */
    size_t argc;
    bool shell;
    enum input_format input;
    enum output_format output;
    double timeout, grace;   /* seconds; 0: none / the framework's 10 */
    json_t *success, *retry; /* arrays of exit codes */
    int max_retries;
    char *working_directory;
    char **env; /* "KEY=value" from :env: */
    size_t n_env;
};

struct script_plugin {
    struct df_runner_class cls; /* cls.data points back here */
    const struct df_plugin_host *host;
    struct task_kind *kinds;
    size_t n_kinds;
};

/* kinds.c: settings.d/script.yml into kinds; -1 with err naming the task and the key. */
int script_kinds_load(struct script_plugin *sp, const json_t *settings, df_error *err);
void script_kinds_free(struct script_plugin *sp);
const struct task_kind *script_kind(const struct script_plugin *sp, const char *name);
bool script_code_in(const json_t *codes, int code);

/* run.c: the runner of one task. */
extern const struct df_runner_ops script_runner_ops;
int script_check_input(const struct df_runner_class *cls, const json_t *input, df_error *err);

/* protocol.c: "::name k=v::text" lines on stdout.  True when line (without its newline) was
 * one and was applied; state collects ::set-state. */
bool script_protocol_line(df_runner *r, const char *line, size_t len, json_t *state);

#endif
