/* Helpers shared by the engine test suites (header-only: each suite is one program). */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <check.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dynflow/dynflow.h"
#include "suite.h"

static inline double tu_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Polls cond every millisecond for up to seconds; true once it holds. */
#define WAIT_UNTIL(cond, seconds)                                                                  \
    ({                                                                                             \
        double until_ = tu_now() + (seconds);                                                      \
        while (!(cond) && tu_now() < until_)                                                       \
            usleep(1000);                                                                          \
        (bool)(cond);                                                                              \
    })
#define wait_until(cond, seconds) WAIT_UNTIL(cond, seconds)

static inline df_world *tu_world(const struct df_world_config *cfg,
                                 const struct df_action_class *classes, size_t n)
{
    df_error err;
    df_world *w = df_world_new(cfg, &err);

    ck_assert_ptr_nonnull(w);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(df_world_register(w, &classes[i], &err) == 0, "%s", err.text);
    ck_assert_msg(df_world_start(w, &err) == 0, "%s", err.text);
    return w;
}

/* Triggers a plan that must plan; returns its id in a static buffer rotation. */
static inline const char *tu_trigger(df_world *w, const char *cls, json_t *args)
{
    static char ids[8][DF_UUID_BUF];
    static int next;
    char *id = ids[next++ % 8];
    bool planned;
    df_error err;

    ck_assert_msg(df_trigger(w, cls, args, NULL, id, &planned, &err) == 0, "%s", err.text);
    ck_assert_msg(planned, "planning %s failed: %s", cls, err.text);
    return id;
}

/* tu_wait and tu_expect name the caller's line when they fail. */
static inline struct df_plan_info tu_wait_at(df_world *w, const char *id, const char *file,
                                             int line)
{
    struct df_plan_info info;

    ck_assert_msg(df_plan_wait(w, id, 20, &info) == 0, "%s:%d: plan %s did not finish", file, line,
                  id);
    return info;
}
#define tu_wait(w, id) tu_wait_at(w, id, __FILE__, __LINE__)

static inline void tu_expect_at(df_world *w, const char *id, enum df_plan_state state,
                                enum df_result result, const char *file, int line)
{
    struct df_plan_info info = tu_wait_at(w, id, file, line);

    ck_assert_msg(info.state == state && info.result == result, "%s:%d: plan is %s/%s, not %s/%s",
                  file, line, df_plan_state_name(info.state), df_result_name(info.result),
                  df_plan_state_name(state), df_result_name(result));
}
#define tu_expect(w, id, state, result) tu_expect_at(w, id, state, result, __FILE__, __LINE__)

/* New reference: the step with this id from the plan's JSON. */
static inline json_t *tu_step(df_world *w, const char *id, int step_id)
{
    json_t *j = df_plan_json(w, id, DF_JSON_STEPS);
    json_t *s = json_incref(json_array_get(json_object_get(j, "steps"), (size_t)step_id - 1));

    json_decref(j);
    ck_assert_ptr_nonnull(s);
    return s;
}

static inline const char *tu_str(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));

    return s != NULL ? s : "";
}

static inline const char *tu_step_state(df_world *w, const char *id, int step_id)
{
    static __thread char state[16];
    json_t *s = tu_step(w, id, step_id);

    snprintf(state, sizeof(state), "%s", tu_str(s, "state"));
    json_decref(s);
    return state;
}

/* New reference: action number n (1-based) of the plan, with its output. */
static inline json_t *tu_action(df_world *w, const char *id, int n)
{
    json_t *j = df_plan_json(w, id, DF_JSON_ACTIONS);
    json_t *a = json_incref(json_array_get(json_object_get(j, "actions"), (size_t)n - 1));

    json_decref(j);
    ck_assert_ptr_nonnull(a);
    return a;
}

static inline void tu_flow_eq(json_t *flow, const char *expected)
{
    char *got = json_dumps(flow, JSON_COMPACT | JSON_ENCODE_ANY);

    ck_assert_str_eq(got, expected);
    free(got);
}

/* ---- scratch databases --------------------------------------------------------------- */

static inline const char *tu_tmpdir(void)
{
    const char *tmp = getenv("TEST_TMPDIR");

    return tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp";
}

/* Removes a database file and its WAL companions. */
static inline void tu_db_remove(const char *path)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    char name[1100];

    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        snprintf(name, sizeof(name), "%s%s", path, suffixes[i]);
        unlink(name);
    }
}

/* A database path no other test (or process) uses: <tmp>/<name>-<pid>-<n>-<ns>.db */
static inline void tu_db_path(char *out, size_t len, const char *name)
{
    static atomic_int seq;
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(out, len, "%s/%s-%d-%d-%ld.db", tu_tmpdir(), name, (int)getpid(),
             atomic_fetch_add(&seq, 1), ts.tv_nsec);
    tu_db_remove(out);
}

/* A new random (version 4) UUID. */
static inline void tu_uuid(char out[DF_UUID_BUF])
{
    unsigned char b[16];
    FILE *f = fopen("/dev/urandom", "rb");

    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fread(b, 1, sizeof(b), f), sizeof(b));
    fclose(f);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, DF_UUID_BUF,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

/* ---- triggering ---------------------------------------------------------------------- */

/* Triggers into id (DF_UUID_BUF); asserts the call succeeded; returns whether it planned. */
static inline bool tu_trigger_opts(df_world *w, const char *cls, json_t *args,
                                   const struct df_trigger_opts *opts, char *id, df_error *err)
{
    bool planned = false;
    df_error local;

    if (err == NULL)
        err = &local;
    ck_assert_msg(df_trigger(w, cls, args, opts, id, &planned, err) == 0, "trigger %s: %s", cls,
                  err->text);
    return planned;
}

/* Triggers a plan that must plan, waits until it is paused or stopped, fills id. */
static inline struct df_plan_info tu_run(df_world *w, const char *cls, json_t *args, char *id)
{
    ck_assert_msg(tu_trigger_opts(w, cls, args, NULL, id, NULL), "planning %s failed", cls);
    return tu_wait(w, id);
}

/* ---- inspecting ---------------------------------------------------------------------- */

/* New reference: the plan's JSON, which must exist. */
static inline json_t *tu_json(df_world *w, const char *id, unsigned flags)
{
    json_t *j = df_plan_json(w, id, flags);

    ck_assert_msg(j != NULL, "no JSON for plan %s", id);
    return j;
}

/* Borrowed: the element of j[key] whose "id" is id, or NULL. */
static inline json_t *tu_find_id(json_t *j, const char *key, int id)
{
    json_t *e;
    size_t i;

    json_array_foreach(json_object_get(j, key), i, e)
    {
        if (json_integer_value(json_object_get(e, "id")) == id)
            return e;
    }
    return NULL;
}

/* Borrowed, from a plan JSON made with DF_JSON_STEPS / DF_JSON_ACTIONS. */
static inline json_t *tu_find_step(json_t *plan, int step_id)
{
    return tu_find_id(plan, "steps", step_id);
}

static inline json_t *tu_find_action(json_t *plan, int action_id)
{
    return tu_find_id(plan, "actions", action_id);
}

static inline enum df_plan_state tu_state(df_world *w, const char *id)
{
    struct df_plan_info info;

    ck_assert_int_eq(df_plan_get_info(w, id, &info), 0);
    return info.state;
}

static inline bool tu_step_is(df_world *w, const char *id, int step_id, const char *state)
{
    return strcmp(tu_step_state(w, id, step_id), state) == 0;
}

/* The names of the plan's execution history joined by ',' (static per thread). */
static inline const char *tu_history(df_world *w, const char *id)
{
    static __thread char names[1024];
    json_t *j = tu_json(w, id, 0), *e;
    size_t i;

    names[0] = '\0';
    json_array_foreach(json_object_get(j, "execution_history"), i, e)
    {
        if (i > 0)
            strncat(names, ",", sizeof(names) - strlen(names) - 1);
        strncat(names, tu_str(e, "name"), sizeof(names) - strlen(names) - 1);
    }
    json_decref(j);
    return names;
}

/* The message of a step's error, or "" (static per thread). */
static inline const char *tu_step_error(df_world *w, const char *id, int step_id)
{
    static __thread char msg[DF_ERROR_TEXT];
    json_t *s = tu_step(w, id, step_id);

    snprintf(msg, sizeof(msg), "%s", tu_str(json_object_get(s, "error"), "message"));
    json_decref(s);
    return msg;
}

/* New reference: the output of action action_id. */
/* New reference: the document of a stream, read in small pieces; the stream is freed. */
static inline json_t *tu_stream_json(df_json_stream *s)
{
    char *text = NULL, piece[1000];
    size_t len = 0;
    long n;
    json_error_t je;
    json_t *j;

    while ((n = df_json_stream_read(s, piece, sizeof(piece), NULL)) > 0) {
        text = realloc(text, len + (size_t)n + 1);
        memcpy(text + len, piece, (size_t)n);
        len += (size_t)n;
    }
    ck_assert_int_eq(n, 0);
    df_json_stream_free(s);
    j = json_loadb(text != NULL ? text : "", len, JSON_ALLOW_NUL, &je);
    ck_assert_msg(j != NULL, "the streamed document is not JSON: %s", je.text);
    free(text);
    return j;
}

static inline json_t *tu_output(df_world *w, const char *id, int action_id)
{
    json_t *j = tu_json(w, id, DF_JSON_ACTIONS);
    json_t *out = json_incref(json_object_get(tu_find_action(j, action_id), "output"));

    json_decref(j);
    ck_assert_msg(out != NULL, "plan %s has no action %d", id, action_id);
    return out;
}

static inline json_int_t tu_output_int(df_world *w, const char *id, int action_id, const char *key)
{
    json_t *out = tu_output(w, id, action_id);
    json_int_t v = json_integer_value(json_object_get(out, key));

    json_decref(out);
    return v;
}

/* Sends an event that must be accepted; data is borrowed. */
static inline void tu_event(df_world *w, const char *id, int step_id, enum df_event_kind kind,
                            json_t *data, double delay)
{
    df_event ev = {kind, data};
    df_error err;

    ck_assert_msg(df_world_event(w, id, step_id, &ev, delay, &err) == 0, "event: %s", err.text);
}

/* The "output" of a runner output's records of one type (NULL: all) joined, in a static buffer. */
static inline const char *tu_records_text(const json_t *out, const char *type)
{
    static char buf[65536];
    const json_t *rec;
    size_t i, n = 0;

    buf[0] = '\0';
    json_array_foreach(json_object_get(out, "result"), i, rec)
    {
        const char *t = json_string_value(json_object_get(rec, "output_type"));
        if (type != NULL && (t == NULL || strcmp(t, type) != 0))
            continue;
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s",
                              json_string_value(json_object_get(rec, "output")));
        if (n >= sizeof(buf))
            break;
    }
    return buf;
}

/* No such process, or a zombie waiting for init to reap it. */
static inline bool tu_process_gone(pid_t pid)
{
    char path[64], stat[256] = "";
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if ((f = fopen(path, "r")) == NULL)
        return true;
    if (fgets(stat, sizeof(stat), f) == NULL)
        stat[0] = '\0';
    fclose(f);
    return strstr(stat, ") Z ") != NULL;
}

#endif
