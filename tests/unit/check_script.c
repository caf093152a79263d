/*
 * The script plugin (plugins/script), loaded from its .so into a world:
 * every input and output format, exit-code mapping and retries with state,
 * the line protocol, timeouts, secrets, unknown kinds and bad settings.
 */
#include <dlfcn.h>
#include <sys/stat.h>

#include "dynflow/plugin.h"
#include "runner/dispatcher.h"
#include "testutil.h"

static char dir[512];
static void *handle;
static const struct df_plugin *plugin;
static void *plugin_state;

static void host_log(void *ctx, int level, const char *fmt, ...)
{
    (void)ctx, (void)level, (void)fmt;
}

static void setup(void)
{
    char path[1024];

    scratch_new(dir, sizeof(dir), "script");
    snprintf(path, sizeof(path), "%s/script.so", getenv("SCRIPT_PLUGIN_DIR"));
    handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    ck_assert_msg(handle != NULL, "%s", dlerror());
    plugin = dlsym(handle, DF_PLUGIN_SYMBOL);
    ck_assert_ptr_nonnull(plugin);
    ck_assert_str_eq(plugin->operations[0].name, "script");
    ck_assert_int_eq(plugin->operations[0].kind, DF_LAUNCH_BATCH);
}

static void teardown(void)
{
    dlclose(handle);
    scratch_remove(dir);
}

/* A file in the scratch directory: an executable script or data. */
static const char *file(const char *name, const char *text, mode_t mode)
{
    static char paths[8][1024];
    static int next;
    char *p = paths[next++ % 8];

    scratch_write(dir, name, text);
    snprintf(p, 1024, "%s/%s", dir, name);
    chmod(p, mode);
    return p;
}

static const char *script(const char *name, const char *body)
{
    char text[4096];

    snprintf(text, sizeof(text), "#!/bin/sh\n%s\n", body);
    return file(name, text, 0755);
}

static struct df_plugin_host host;

/* A world with the plugin started on settings (steals); NULL and err when init failed. */
static df_world *world_with(json_t *settings, df_error *err)
{
    df_world *w = df_world_new(NULL, err);

    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(
        df_runner_configure(w, &(struct df_runner_config){.refresh_interval = 0.05}, err), 0);
    host = (struct df_plugin_host){.abi_major = DF_PLUGIN_ABI_MAJOR,
                                   .abi_minor = DF_PLUGIN_ABI_MINOR,
                                   .struct_size = sizeof(host),
                                   .world = w,
                                   .log = host_log};
    if (plugin->init(&host, settings, &plugin_state, err) < 0) {
        json_decref(settings);
        df_world_free(w);
        return NULL;
    }
    json_decref(settings);
    ck_assert_msg(df_world_start(w, err) == 0, "%s", err->text);
    return w;
}

static df_world *world_of(json_t *tasks)
{
    df_error err;
    df_world *w = world_with(json_pack("{s:b, s:o}", "enabled", 1, "tasks", tasks), &err);

    ck_assert_msg(w != NULL, "%s", err.text);
    return w;
}

static void world_done(df_world *w)
{
    df_world_free(w);
    plugin->shutdown(plugin_state);
}

/* Runs a task of kind with input (steals) to its end; its output into *out (new reference). */
static struct df_plan_info run_task(df_world *w, const char *kind, json_t *input, json_t **out)
{
    char id[DF_UUID_BUF];
    struct df_plan_info info = tu_run(w, "Proxy::Script::Actions::RunScript",
                                      json_pack("{s:s, s:o, s:{s:s}}", "kind", kind, "input", input,
                                                "secrets", "token", "s3cr3t-t0ken"),
                                      id);

    *out = tu_output(w, id, 1);
    return info;
}

static const char *data_str(const json_t *out, const char *key)
{
    return json_string_value(json_object_get(json_object_get(out, "data"), key));
}

/* ---- input formats ------------------------------------------------------------------------- */

START_TEST(input_as_environment)
{
    df_world *w = world_of(json_pack(
        "[{s:s, s:s, s:{s:s}}]", "kind", "env", "command",
        script("env.sh", "echo \"$INPUT_NAME $INPUT_COUNT $INPUT_LIST $TASK_KIND $FROM_SETTINGS "
                         "$EXECUTION_COUNT $MAX_RETRIES\"; test -n \"$TASK_ID\""),
        "env", "FROM_SETTINGS", "yes"));
    json_t *out;

    run_task(w, "env", json_pack("{s:s, s:i, s:[i,i]}", "name", "web1", "count", 3, "list", 1, 2),
             &out);
    ck_assert_str_eq(tu_records_text(out, "stdout"), "web1 3 [1,2] env yes 1 0\n");
    ck_assert_int_eq(json_integer_value(json_object_get(out, "exit_status")), 0);
    json_decref(out);
    world_done(w);
}
END_TEST

START_TEST(input_as_json_on_stdin_in_a_file_and_as_args)
{
    df_world *w = world_of(json_pack(
        "[{s:s, s:s, s:s}, {s:s, s:s, s:s}, {s:s, s:s, s:[s], s:s}]", "kind", "stdin", "command",
        script("stdin.sh", "cat"), "input_format", "json_stdin", "kind", "file", "command",
        script("file.sh", "cat \"$INPUT_FILE\"; ls -l \"$INPUT_FILE\" | cut -c1-10 >&2"),
        "input_format", "json_file", "kind", "args", "command",
        script("args.sh", "for a in \"$@\"; do echo \"[$a]\"; done"), "args", "--first",
        "input_format", "args"));
    json_t *out;

    run_task(w, "stdin", json_pack("{s:s}", "a", "b"), &out);
    ck_assert_str_eq(tu_records_text(out, "stdout"), "{\"a\":\"b\"}");
    json_decref(out);
    run_task(w, "file", json_pack("{s:i}", "n", 1), &out);
    ck_assert_str_eq(tu_records_text(out, "stdout"), "{\"n\":1}");
    ck_assert_str_eq(tu_records_text(out, "stderr"), "-rw-------\n"); /* private */
    json_decref(out);
    run_task(w, "args", json_pack("{s:s}", "opt", "x y"), &out);
    ck_assert_str_eq(tu_records_text(out, "stdout"), "[--first]\n[--opt=x y]\n");
    json_decref(out);
    world_done(w);
}
END_TEST

/* :shell: true: input values reach the command only as environment, never as its code. */
START_TEST(shell_command_lines_never_take_input)
{
    char marker[600], evil[2048];
    df_world *w;
    json_t *out;

    snprintf(marker, sizeof(marker), "%s/pwned", dir);
    snprintf(evil, sizeof(evil), "$(touch %s); touch %s `touch %s`", marker, marker, marker);
    w = world_of(json_pack("[{s:s, s:b, s:s}]", "kind", "sh", "shell", 1, "command",
                           "echo \"got: $INPUT_VALUE\""));
    run_task(w, "sh", json_pack("{s:s}", "value", evil), &out);
    /* the text came back verbatim, and nothing in it ran */
    ck_assert_msg(strncmp(tu_records_text(out, "stdout"), "got: ", 5) == 0 &&
                      strstr(tu_records_text(out, "stdout"), evil) != NULL,
                  "%s", tu_records_text(out, NULL));
    json_decref(out);
    ck_assert_int_eq(access(marker, F_OK), -1);
    world_done(w);
}
END_TEST

/* ---- output formats and the line protocol -------------------------------------------------- */

START_TEST(output_formats)
{
    df_world *w = world_of(json_pack(
        "[{s:s, s:s, s:s}, {s:s, s:s, s:s}, {s:s, s:s, s:s}, {s:s, s:s, s:s}]", "kind", "json",
        "command", script("json.sh", "echo '{\"size\": 42,'; echo '\"ok\": true}'"),
        "output_format", "json", "kind", "scalar", "command", script("scalar.sh", "echo 7"),
        "output_format", "json", "kind", "bad", "command", script("bad.sh", "echo 'not json'"),
        "output_format", "json", "kind", "quiet", "command",
        script("quiet.sh", "echo hidden; echo shown >&2"), "output_format", "exit_code_only"));
    json_t *out;

    run_task(w, "json", json_object(), &out);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(out, "data"), "size")), 42);
    ck_assert(json_is_true(json_object_get(json_object_get(out, "data"), "ok")));
    ck_assert_str_eq(tu_records_text(out, "stdout"), "");
    json_decref(out);
    run_task(w, "scalar", json_object(), &out);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(out, "data"), "result")),
                     7);
    json_decref(out);
    ck_assert_int_eq(run_task(w, "bad", json_object(), &out).result, DF_RESULT_ERROR);
    ck_assert_msg(strstr(tu_records_text(out, "debug"), "The output of 'bad' is not JSON") != NULL,
                  "%s", tu_records_text(out, NULL));
    json_decref(out);
    run_task(w, "quiet", json_object(), &out);
    ck_assert_str_eq(tu_records_text(out, "stdout"), "");
    ck_assert_str_eq(tu_records_text(out, "stderr"), "shown\n");
    json_decref(out);
    world_done(w);
}
END_TEST

START_TEST(line_protocol)
{
    df_world *w = world_of(json_pack(
        "[{s:s, s:s}]", "kind", "proto", "command",
        script("proto.sh",
               "echo before; echo '::progress percent=50::half way'; "
               "echo '::set-output key=version::1.2.3'; echo '::log level=warn::careful'; "
               "printf '::set-output key=partial::'; sleep 0.1; printf 'joined\\n'; "
               "echo '::bogus thing::x'; echo after")));
    json_t *out;

    run_task(w, "proto", json_object(), &out);
    ck_assert_str_eq(tu_records_text(out, "stdout"), "before\n::bogus thing::x\nafter\n");
    ck_assert_str_eq(tu_records_text(out, "debug"), "half way[warn] careful");
    ck_assert_str_eq(data_str(out, "version"), "1.2.3");
    ck_assert_str_eq(data_str(out, "partial"), "joined");
    json_decref(out);
    world_done(w);
}
END_TEST

/* ---- exit codes, retries, state ------------------------------------------------------------ */

START_TEST(exit_codes_map_to_success_or_failure)
{
    df_world *w =
        world_of(json_pack("[{s:s, s:s, s:{s:[i,i]}}, {s:s, s:s}]", "kind", "three", "command",
                           script("three.sh", "exit 3"), "exit_codes", "success", 0, 3, "kind",
                           "five", "command", script("five.sh", "exit 5")));
    json_t *out;

    ck_assert_int_eq(run_task(w, "three", json_object(), &out).result, DF_RESULT_SUCCESS);
    ck_assert_int_eq(json_integer_value(json_object_get(out, "exit_status")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(out, "data"), "exit_code")),
                     3);
    json_decref(out);
    ck_assert_int_eq(run_task(w, "five", json_object(), &out).result, DF_RESULT_ERROR);
    ck_assert_int_eq(json_integer_value(json_object_get(out, "exit_status")), 5);
    json_decref(out);
    world_done(w);
}
END_TEST

START_TEST(retries_carry_state)
{
    df_world *w = world_of(json_pack(
        "[{s:s, s:s, s:{s:[i]}, s:i}, {s:s, s:s, s:{s:[i]}, s:i}]", "kind", "flaky", "command",
        script("flaky.sh",
               "echo \"try $EXECUTION_COUNT of $((MAX_RETRIES + 1)) "
               "state=${STATE_SEEN:-none}\"; echo \"::set-state key=seen::$EXECUTION_COUNT\"; "
               "[ \"$EXECUTION_COUNT\" -ge 3 ] || exit 75"),
        "exit_codes", "retry", 75, "max_retries", 3, "kind", "hopeless", "command",
        script("hopeless.sh", "exit 75"), "exit_codes", "retry", 75, "max_retries", 1));
    json_t *out;

    ck_assert_int_eq(run_task(w, "flaky", json_object(), &out).result, DF_RESULT_SUCCESS);
    ck_assert_str_eq(tu_records_text(out, "stdout"),
                     "try 1 of 4 state=none\ntry 2 of 4 state=1\ntry 3 of 4 state=2\n");
    ck_assert_str_eq(tu_records_text(out, "debug"),
                     "attempt 1 of 4 exited with 75; retrying in 1 s"
                     "attempt 2 of 4 exited with 75; retrying in 2 s");
    json_decref(out);
    ck_assert_int_eq(run_task(w, "hopeless", json_object(), &out).result, DF_RESULT_ERROR);
    ck_assert_int_eq(json_integer_value(json_object_get(out, "exit_status")), 75);
    json_decref(out);
    world_done(w);
}
END_TEST

START_TEST(timeout_kills_after_the_grace_period)
{
    df_world *w = world_of(json_pack("[{s:s, s:s, s:f, s:f}]", "kind", "stuck", "command",
                                     script("stuck.sh", "trap '' TERM; echo started; sleep 30"),
                                     "timeout", 0.3, "grace_period", 0.2));
    json_t *out;

    ck_assert_int_eq(run_task(w, "stuck", json_object(), &out).result, DF_RESULT_ERROR);
    ck_assert_int_eq(json_integer_value(json_object_get(out, "exit_status")), 137);
    ck_assert_str_eq(tu_records_text(out, "debug"),
                     "Timeout for execution passed, trying to stop the job");
    json_decref(out);
    world_done(w);
}
END_TEST

/* Secrets of the action input never reach the command, so never its output either. */
START_TEST(secrets_never_reach_the_output)
{
    df_world *w = world_of(json_pack("[{s:s, s:s}]", "kind", "dump", "command",
                                     script("dump.sh", "env; cat /proc/self/cmdline")));
    json_t *out;
    char *dumped;

    run_task(w, "dump", json_pack("{s:s}", "visible", "yes"), &out);
    dumped = json_dumps(out, 0);
    ck_assert_msg(strstr(dumped, "INPUT_VISIBLE=yes") != NULL, "%s", dumped);
    ck_assert_ptr_null(strstr(dumped, "s3cr3t-t0ken"));
    free(dumped);
    json_decref(out);
    world_done(w);
}
END_TEST

/* ---- refusals ------------------------------------------------------------------------------ */

START_TEST(unknown_kinds_fail_the_plan)
{
    df_world *w = world_of(json_pack("[{s:s, s:s}, {s:s, s:s}]", "kind", "a", "command",
                                     "/bin/true", "kind", "b", "command", "/bin/true"));
    char id[DF_UUID_BUF];
    df_error err;

    ck_assert(!tu_trigger_opts(w, "Proxy::Script::Actions::RunScript",
                               json_pack("{s:s}", "kind", "zzz"), NULL, id, &err));
    ck_assert_str_eq(err.text, "unknown script kind 'zzz' (known: a, b)");
    world_done(w);
}
END_TEST

static const struct {
    const char *yaml_like; /* for the failure message */
    const char *json;
    const char *message;
} bad_settings[] = {
    {"no command", "[{\"kind\":\"x\"}]", "task 1 (x): :command: must be a command"},
    {"no kind", "[{\"command\":\"/bin/true\"}]", "task 1 (no :kind:): :kind: must be a name"},
    {"bad input format", "[{\"kind\":\"x\",\"command\":\"/bin/true\",\"input_format\":\"xml\"}]",
     "task 1 (x): :input_format: must be env, json_stdin, json_file or args"},
    {"bad output format", "[{\"kind\":\"x\",\"command\":\"/bin/true\",\"output_format\":\"xml\"}]",
     "task 1 (x): :output_format: must be text, json or exit_code_only"},
    {"shell with args input",
     "[{\"kind\":\"x\",\"command\":\"true\",\"shell\":true,\"input_format\":\"args\"}]",
     "task 1 (x): :input_format: args cannot go with :shell: true"},
    {"twice",
     "[{\"kind\":\"x\",\"command\":\"/bin/true\"},{\"kind\":\"x\",\"command\":\"/bin/true\"}]",
     "task 2 (x): :kind: 'x' is defined twice"},
    {"bad timeout", "[{\"kind\":\"x\",\"command\":\"/bin/true\",\"timeout\":\"soon\"}]",
     "task 1 (x): :timeout: must be a positive number of seconds"},
    {"bad codes", "[{\"kind\":\"x\",\"command\":\"/bin/true\",\"exit_codes\":{\"retry\":[\"a\"]}}]",
     "task 1 (x): :exit_codes: lists must hold integers"},
    {"relative directory",
     "[{\"kind\":\"x\",\"command\":\"/bin/true\",\"working_directory\":\"tmp\"}]",
     "task 1 (x): :working_directory: must be an absolute path"},
};

START_TEST(bad_settings_are_refused)
{
    df_error err;
    json_t *tasks = json_loads(bad_settings[_i].json, 0, NULL);

    ck_assert_ptr_nonnull(tasks);
    ck_assert_ptr_null(world_with(json_pack("{s:b, s:o}", "enabled", 1, "tasks", tasks), &err));
    ck_assert_msg(strncmp(err.text, "settings.d/script.yml: ", 23) == 0, "%s", err.text);
    ck_assert_msg(strstr(err.text, bad_settings[_i].message) != NULL, "%s: %s",
                  bad_settings[_i].yaml_like, err.text);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("script");
    TCase *tc = tcase_create("script");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, input_as_environment);
    tcase_add_test(tc, input_as_json_on_stdin_in_a_file_and_as_args);
    tcase_add_test(tc, shell_command_lines_never_take_input);
    tcase_add_test(tc, output_formats);
    tcase_add_test(tc, line_protocol);
    tcase_add_test(tc, exit_codes_map_to_success_or_failure);
    tcase_add_test(tc, retries_carry_state);
    tcase_add_test(tc, timeout_kills_after_the_grace_period);
    tcase_add_test(tc, secrets_never_reach_the_output);
    tcase_add_test(tc, unknown_kinds_fail_the_plan);
    tcase_add_loop_test(tc, bad_settings_are_refused, 0,
                        sizeof(bad_settings) / sizeof(bad_settings[0]));
    suite_add_tcase(s, tc);
    return run_suite(s);
}
