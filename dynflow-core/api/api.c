#include "api/api.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/check.h"
#include "api/claims.h"
#include "api/launch.h"
#include "util/hash.h"
#include "util/util.h"

struct operation {
    char *name;
    enum df_launcher_kind kind;
    char *action_class; /* for batch entries without one; may be NULL */
};

struct df_api {
    df_world *w;
    struct operation *ops;
    size_t n_ops;
    pthread_mutex_t otp_lock;
    df_hash *otps; /* task id → one-time password (the value owns the key) */
};

struct otp {
    char task_id[DF_UUID_BUF + 64];
    char password[33];
};

static void error_response(struct df_api_response *res, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void error_response(struct df_api_response *res, unsigned status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    res->status = status;
    res->body = json_pack("{s:s}", "error", msg);
}

static void ok_response(struct df_api_response *res, json_t *body)
{
    res->status = 200;
    res->body = body;
}

/* jansson reports an allocation that failed while parsing as a syntax error (or not at all):
 * its allocations go through json_alloc, which counts the failures for parse_body (in any
 * thread: no thread-local variable, whose first use allocates too). */
static atomic_uint json_alloc_failures;

static void *json_alloc(size_t n)
{
    void *p = malloc(n);

    if (p == NULL)
        atomic_fetch_add(&json_alloc_failures, 1);
    return p;
}

/* The body as a JSON object, or NULL after a 400 response saying why (503: out of memory). */
static json_t *parse_body(const struct df_api_request *req, struct df_api_response *res)
{
    json_error_t je;
    unsigned failures;
    json_t *j;

    if (req->body_len == 0)
        return json_object();
    failures = atomic_load(&json_alloc_failures);
    j = json_loadb(req->body, req->body_len, 0, &je);
    if (j == NULL && atomic_load(&json_alloc_failures) != failures) {
        error_response(res, 503, "out of memory reading the request body");
        return NULL;
    }
    if (j == NULL) {
        error_response(res, 400, "the request body is not valid JSON: %s (line %d, column %d)",
                       je.text, je.line, je.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        error_response(res, 400, "the request body must be a JSON object");
        return NULL;
    }
    return j;
}

/* Where Foreman reaches this proxy back (§2.3): proxy_url, else the request's host. */
static json_t *callback_host(const struct df_api_request *req, json_t *action_input)
{
    const char *proxy_url = json_string_value(json_object_get(action_input, "proxy_url"));
    const char *host = req->forwarded_for ? req->forwarded_for : req->host;

    if (proxy_url != NULL)
        return json_string(proxy_url);
    return json_sprintf("%s://%s", req->https ? "https" : "http", host ? host : "localhost");
}

/* ---- one-time passwords (§2.2) ------------------------------------------------------ */

void df_api_generate_otp(df_api *api, const char *task_id, char otp[33])
{
    char uuid[DF_UUID_BUF];
    struct otp *o = df_calloc(1, sizeof(*o)), *old;
    size_t n = 0;

    df_uuid_new(uuid); /* 122 random bits, as SecureRandom.hex's 128 */
    for (const char *p = uuid; *p != '\0'; p++)
        if (*p != '-')
            otp[n++] = *p;
    otp[n] = '\0';
    snprintf(o->task_id, sizeof(o->task_id), "%s", task_id);
    memcpy(o->password, otp, sizeof(o->password));
    pthread_mutex_lock(&api->otp_lock);
    old = df_hash_del(api->otps, o->task_id);
    df_hash_put(api->otps, o->task_id, o);
    pthread_mutex_unlock(&api->otp_lock);
    free(old);
}

static int b64_value(char c)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c != '\0' ? strchr(alphabet, c) : NULL;

    return p != NULL ? (int)(p - alphabet) : -1;
}

/* Strict base64 into out (NUL-terminated); false on bad input. */
static bool b64_decode(const char *in, char *out, size_t cap)
{
    size_t len = strlen(in), n = 0;

    if (len % 4 != 0 || len / 4 * 3 >= cap)
        return false;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        for (int k = 0; k < 4; k++)
            v[k] = in[i + k] == '=' && i + 4 == len && k >= 2 ? 0 : b64_value(in[i + k]);
        if (v[0] < 0 || v[1] < 0 || v[2] < 0 || v[3] < 0)
            return false;
        out[n++] = (char)(v[0] << 2 | v[1] >> 4);
        if (in[i + 2] != '=')
            out[n++] = (char)((v[1] & 15) << 4 | v[2] >> 2);
        if (in[i + 3] != '=')
            out[n++] = (char)((v[2] & 3) << 6 | v[3]);
    }
    out[n] = '\0';
    return strlen(out) == n; /* no NUL inside */
}

static bool equal_constant_time(const char *a, const char *b, size_t n)
{
    unsigned char diff = 0;

    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

/* "Basic base64(task_id:otp)" for this task; done clears the password. */
static bool token_valid(df_api *api, const char *task_id, const char *authorization, bool clear)
{
    char plain[256], *colon;
    struct otp *o;
    bool ok = false;

    if (strncmp(authorization, "Basic ", 6) != 0 ||
        !b64_decode(authorization + 6, plain, sizeof(plain)))
        return false;
    colon = strchr(plain, ':');
    if (colon == NULL)
        return false;
    *colon = '\0';
    if (strcmp(plain, task_id) != 0)
        return false;
    pthread_mutex_lock(&api->otp_lock);
    o = df_hash_get(api->otps, task_id);
    ok = o != NULL && strlen(colon + 1) == strlen(o->password) &&
         equal_constant_time(colon + 1, o->password, strlen(o->password));
    if (ok && clear)
        free(df_hash_del(api->otps, task_id));
    pthread_mutex_unlock(&api->otp_lock);
    return ok;
}

/* ---- launching (§6) ------------------------------------------------------------------- */

static const struct operation *find_operation(df_api *api, const char *name)
{
    for (size_t i = 0; name != NULL && i < api->n_ops; i++)
        if (strcmp(api->ops[i].name, name) == 0)
            return &api->ops[i];
    return NULL;
}

#define OUT_OF_MEMORY_ARGS "out of memory building the task's input; nothing was created"

/* New reference: a copy of input (NULL: {}) with the callback host, or NULL when an
 * allocation failed (the task must not be created without it). */
static json_t *task_args(const struct df_api_request *req, json_t *input)
{
    json_t *args = input != NULL ? json_deep_copy(input) : json_object();

    if (args != NULL && json_object_set_new(args, "callback_host", callback_host(req, args)) < 0) {
        json_decref(args);
        return NULL;
    }
    return args;
}

/* TaskLauncher::Single: {"result": "success", "task_id"} or {"result": "error", "errors"}. */
static json_t *launch_single(df_api *api, const struct df_api_request *req, json_t *input,
                             unsigned *status)
{
    const char *cls = json_string_value(json_object_get(input, "action_class"));
    json_t *action_input = json_object_get(input, "action_input"), *args;
    char id[DF_UUID_BUF];
    bool planned;
    df_error err;
    int rc;

    if (df_check_single(api->w, input, &err) < 0) {
        *status = 422;
        return json_pack("{s:s}", "error", err.text);
    }
    args = task_args(req, action_input);
    if (args == NULL) {
        *status = 503;
        return json_pack("{s:s}", "error", OUT_OF_MEMORY_ARGS);
    }
    rc = df_trigger(api->w, cls, args, NULL, id, &planned, &err);
    if (rc < 0) {
        *status = rc == -ENOENT ? 422 : 500;
        return json_pack("{s:s}", "error", err.text);
    }
    *status = 200;
    if (!planned)
        return json_pack("{s:s, s:[s]}", "result", "error", "errors", err.text);
    return json_pack("{s:s, s:s}", "result", "success", "task_id", id);
}

/* What a batch launch answers when its parent exists (§6.4). */
static json_t *launched(const char *parent)
{
    return json_pack("{s:{s:s, s:s}}", "parent", "result", "success", "task_id", parent);
}

/* TaskLauncher::Batch: one parent plan; its run phase plans a child per key (batch_create).
 * A retry of a launch answers with the parent that has its tasks (api/claims.h). */
static json_t *launch_batch(df_api *api, const struct df_api_request *req,
                            const struct operation *op, json_t *input, json_t *options,
                            unsigned *status)
{
    json_t *first =
        json_object_get(json_object_iter_value(json_object_iter(input)), "action_input");
    struct df_trigger_opts opts = {0};
    char id[DF_UUID_BUF], parent[DF_UUID_BUF];
    json_t *args;
    bool planned;
    df_error err;
    int rc;

    if (df_check_batch(api->w, op->kind, op->action_class, input, &err) < 0) {
        *status = 422;
        return json_pack("{s:s}", "error", err.text);
    }
    rc = df_claims_take(df_claims_of(api->w), api->w, input, parent, &err);
    if (rc < 0) {
        *status = 409;
        return json_pack("{s:s}", "error", err.text);
    }
    *status = 200;
    if (rc > 0)
        return launched(parent);
    args = json_pack("{s:O, s:{s:s, s:o, s:O, s:s?}}", "input_hash", input, "launcher", "operation",
                     op->name, "callback", callback_host(req, first), "options", options,
                     "action_class", op->action_class);
    if (args == NULL) {
        df_claims_drop(df_claims_of(api->w), input, parent);
        *status = 503;
        return json_pack("{s:s}", "error", OUT_OF_MEMORY_ARGS);
    }
    opts.plan_id = parent;
    if (df_trigger(api->w, op->kind == DF_LAUNCH_GROUP ? DF_GROUP_CLASS : DF_BATCH_CLASS, args,
                   &opts, id, &planned, &err) < 0 ||
        !planned) {
        df_claims_drop(df_claims_of(api->w), input, parent);
        return json_pack("{s:{s:s, s:[s]}}", "parent", "result", "error", "errors", err.text);
    }
    return launched(id);
}

void df_api_launch(df_api *api, const struct df_api_request *req, struct df_api_response *res)
{
    json_t *body = parse_body(req, res), *input, *options;
    const char *op_name;
    const struct operation *op;
    df_error err;

    if (body == NULL)
        return;
    op_name = json_string_value(json_object_get(body, "operation"));
    input = json_object_get(body, "input");
    options = json_object_get(body, "options");
    op = find_operation(api, op_name);
    if (op_name == NULL)
        error_response(res, 422, "'operation' must be a string naming an operation");
    else if (op == NULL)
        error_response(res, 404, "Unknown operation '%s' requested.", op_name);
    else if (!json_is_object(input))
        error_response(res, 422, "'input' must be a JSON object");
    else if (options != NULL && !json_is_object(options))
        error_response(res, 422, "'options' must be a JSON object");
    else if (op->kind == DF_LAUNCH_SINGLE)
        res->body = launch_single(api, req, input, &res->status);
    else if (options != NULL)
        res->body = launch_batch(api, req, op, input, options, &res->status);
    else {
        options = json_object();
        res->body = launch_batch(api, req, op, input, options, &res->status);
        json_decref(options);
    }
    /* acknowledged means committed: a kill -9 right after the answer loses no task (the crash
     * loop found it, doc/recovery.md); a launch whose commit fails is not acknowledged */
    if (res->status == 200 && df_world_commit(api->w, &err) < 0) {
        json_decref(res->body);
        res->body = NULL;
        error_response(res, 503,
                       "the launch was not stored: %s; it stays in memory and is stored when "
                       "the database can be written again (a retry with the same task ids "
                       "answers with it)",
                       err.text);
    }
    json_decref(body);
}

/* The batch parent: one child plan per input key, the key as its id (§6.4). */
static int batch_create(df_action *a)
{
    json_t *in = df_action_input(a), *hash = json_object_get(in, "input_hash"), *v;
    json_t *launcher = json_object_get(in, "launcher");
    const char *callback = json_string_value(json_object_get(launcher, "callback"));
    const char *default_class = json_string_value(json_object_get(launcher, "action_class"));
    const char *key;

    json_object_foreach(hash, key, v)
    {
        json_t *args = json_deep_copy(json_object_get(v, "action_input"));
        const char *cls = json_string_value(json_object_get(v, "action_class"));
        char id[DF_UUID_BUF];
        if (cls == NULL)
            cls = default_class;
        bool planned;
        if (!json_is_object(args)) {
            json_decref(args);
            args = json_object();
        }
        json_object_set_new(args, "callback_host", json_string(callback ? callback : ""));
        if (df_action_trigger_child(a, cls ? cls : "", args, key, id, &planned) < 0)
            df_action_error(a, "cannot plan the task for %s", key); /* counted as failed */
        df_claims_created(df_claims_of(df_action_world(a)), key);
    }
    return 0;
}

static int batch_run(df_action *a, const df_event *ev)
{
    return df_sub_plans_run(a, ev, batch_create);
}

static const struct df_action_class batch_class = {
    .name = DF_BATCH_CLASS,
    .run = batch_run,
    .rescue = DF_RESCUE_FAIL,
    /* a crash while the children are made: the step runs again and makes the missing ones */
    .flags = DF_ACTION_CANCELLABLE | DF_ACTION_RERUNNABLE,
};

void df_api_trigger(df_api *api, const struct df_api_request *req, struct df_api_response *res)
{
    json_t *body = parse_body(req, res), *input, *args;
    const char *cls;
    char id[DF_UUID_BUF];
    bool planned;
    df_error err;

    if (body == NULL)
        return;
    cls = json_string_value(json_object_get(body, "action_name"));
    input = json_object_get(body, "action_input");
    if (cls == NULL || (input != NULL && !json_is_object(input))) {
        error_response(res, 422, "'action_name' must be a string and 'action_input' an object");
    } else if (df_check_task(api->w, cls, "action_input", input, &err) < 0) {
        error_response(res, 422, "%s", err.text);
    } else {
        args = task_args(req, input);
        if (args == NULL)
            error_response(res, 503, OUT_OF_MEMORY_ARGS);
        else if (df_trigger(api->w, cls, args, NULL, id, &planned, &err) < 0)
            error_response(res, 422, "%s", err.text);
        else
            ok_response(res, json_pack("{s:s}", "task_id", id));
    }
    json_decref(body);
}

/* ---- inspecting and controlling -------------------------------------------------------------- */

/* The status side effect (§2.3): running runners are polled; the JSON shows what arrived so far.
 * The body streams: a task's output (up to the 64 MiB cap) is read from the store as the
 * client reads the reply (doc/output.md). */
void df_api_status(df_api *api, const struct df_api_request *req, struct df_api_response *res)
{
    df_plan_poll(api->w, req->task_id);
    res->stream = df_plan_stream(api->w, req->task_id, DF_JSON_ACTIONS);
    if (res->stream == NULL)
        error_response(res, 404, "Task %s not found", req->task_id);
    else
        res->status = 200;
}

/* The task_ids array of the body, or NULL after a response saying why. */
static json_t *task_ids(const struct df_api_request *req, bool required,
                        struct df_api_response *res, json_t **body)
{
    json_t *ids, *v;
    size_t i;

    *body = parse_body(req, res);
    if (*body == NULL)
        return NULL;
    ids = json_object_get(*body, "task_ids");
    if (ids == NULL && !required)
        return json_array();
    if (!json_is_array(ids) || (required && json_array_size(ids) == 0)) {
        error_response(res, 422,
                       "'task_ids' needs to be provided and be a non-empty array of task UUIDs");
        return NULL;
    }
    json_array_foreach(ids, i, v) if (!json_is_string(v))
    {
        error_response(res, 422, "'task_ids' must hold strings; item %zu does not", i);
        return NULL;
    }
    return json_incref(ids);
}

/* As the status of each task, streamed the same way. */
void df_api_statuses(df_api *api, const struct df_api_request *req, struct df_api_response *res)
{
    json_t *body, *ids = task_ids(req, true, res, &body), *v;
    const char **list;
    size_t i;

    if (ids != NULL) {
        list = df_calloc(json_array_size(ids) + 1, sizeof(*list));
        json_array_foreach(ids, i, v)
        {
            list[i] = json_string_value(v);
            df_plan_poll(api->w, list[i]);
        }
        res->stream = df_plans_stream(api->w, list, json_array_size(ids), DF_JSON_ACTIONS);
        res->status = 200;
        free(list);
    }
    json_decref(ids);
    json_decref(body);
}

void df_api_bulk_status(df_api *api, const struct df_api_request *req, struct df_api_response *res)
{
    json_t *body, *ids = task_ids(req, false, res, &body), *v;
    const char **list;
    size_t i;

    if (ids != NULL) {
        list = df_calloc(json_array_size(ids) + 1, sizeof(*list));
        json_array_foreach(ids, i, v) list[i] = json_string_value(v);
        ok_response(res, df_plan_statuses(api->w, list, json_array_size(ids)));
        free(list);
    }
    json_decref(ids);
    json_decref(body);
}

void df_api_cancel(df_api *api, const struct df_api_request *req, struct df_api_response *res)
{
    unsigned count = 0;
    df_error err;

    if (df_plan_cancel(api->w, req->task_id, false, &count, &err) < 0)
        error_response(res, 404, "Task %s not found", req->task_id);
    else
        ok_response(res, json_pack("{s:s, s:i}", "task_id", req->task_id, "canceled_steps_count",
                                   (int)count));
}

void df_api_count(df_api *api, const struct df_api_request *req, struct df_api_response *res)
{
    const char *state = req->state != NULL && req->state[0] != '\0' ? req->state : "all";
    int s = strcmp(state, "all") == 0 ? -1 : df_plan_state_parse(state);
    uint64_t count = 0;
    df_error err;

    /* an unknown state counts nothing, as upstream */
    if ((strcmp(state, "all") == 0 || s >= 0) && df_plan_count(api->w, s, &count, &err) < 0) {
        error_response(res, 503, "counting tasks failed: %s", err.text);
        return;
    }
    ok_response(res, json_pack("{s:I, s:s}", "count", (json_int_t)count, "state", state));
}

void df_api_operations(df_api *api, const struct df_api_request *req, struct df_api_response *res)
{
    json_t *ops = json_array();

    (void)req;
    for (size_t i = 0; i < api->n_ops; i++)
        json_array_append_new(ops, json_string(api->ops[i].name));
    ok_response(res, ops);
}

/* The step id as an integer or a string of digits, as Ruby's to_i accepts it. */
static int step_id_of(json_t *v)
{
    char *end;
    long id;

    if (json_is_integer(v))
        return (int)json_integer_value(v);
    if (!json_is_string(v))
        return -1;
    id = strtol(json_string_value(v), &end, 10);
    return *end == '\0' && end != json_string_value(v) && id >= 0 && id < 1 << 30 ? (int)id : -1;
}

void df_api_event(df_api *api, const struct df_api_request *req, bool done,
                  struct df_api_response *res)
{
    json_t *body;
    df_event ev = {DF_EVENT_USER, NULL};
    int step;

    if (req->authorization != NULL && !token_valid(api, req->task_id, req->authorization, done)) {
        error_response(res, 403, "Invalid username or password supplied");
        return;
    }
    body = parse_body(req, res);
    if (body == NULL)
        return;
    step = step_id_of(json_object_get(body, "step_id"));
    if (step < 0) {
        error_response(res, 422, "'step_id' must be a step number");
    } else {
        /* like upstream, the reply does not wait for the delivery */
        ev.data = body;
        df_world_event(api->w, req->task_id, step, &ev, 0, NULL);
        res->status = 200;
        res->body = NULL;
    }
    json_decref(body);
}

/* ---- the API object ------------------------------------------------------------------------- */

df_api *df_api_new(df_world *w)
{
    df_api *api = df_calloc(1, sizeof(*api));

    api->w = w;
    json_set_alloc_funcs(json_alloc, free); /* process-wide: the same malloc and free */
    pthread_mutex_init(&api->otp_lock, NULL);
    api->otps = df_hash_new();
    return api;
}

/* Registers the API's own action classes; before df_world_start(). */
int df_api_register_classes(df_world *w, df_error *err)
{
    if (df_claims_attach(w, err) < 0 || df_world_register(w, &batch_class, err) < 0)
        return -1;
    return df_world_register(w, &df_group_launcher_class, err);
}

static void free_otp(void *ud, const char *key, void *value)
{
    (void)ud;
    (void)key;
    free(value);
}

void df_api_free(df_api *api)
{
    if (api == NULL)
        return;
    for (size_t i = 0; i < api->n_ops; i++) {
        free(api->ops[i].name);
        free(api->ops[i].action_class);
    }
    free(api->ops);
    df_hash_each(api->otps, free_otp, NULL);
    df_hash_free(api->otps);
    pthread_mutex_destroy(&api->otp_lock);
    free(api);
    json_set_alloc_funcs(malloc, free); /* json_alloc goes when the library is unloaded */
}

int df_api_register_operation(df_api *api, const struct df_plugin_operation *op, df_error *err)
{
    if (find_operation(api, op->name) != NULL)
        return df_errorf(err, -EEXIST, "operation '%s' is registered already", op->name);
    if (op->kind == DF_LAUNCH_GROUP && op->action_class == NULL)
        return df_errorf(err, -EINVAL, "group operation '%s' needs the class of its runner",
                         op->name);
    api->ops = df_realloc(api->ops, (api->n_ops + 1) * sizeof(*api->ops));
    api->ops[api->n_ops++] = (struct operation){
        df_strdup(op->name), op->kind, op->action_class ? df_strdup(op->action_class) : NULL};
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

json_t *df_api_capabilities(df_api *api)
{
    json_t **v = df_calloc(api->n_ops + 1, sizeof(*v)), *out = json_array();

    for (size_t i = 0; i < api->n_ops; i++)
        v[i] = json_string(api->ops[i].name);
    qsort(v, api->n_ops, sizeof(*v), cmp_str);
    for (size_t i = 0; i < api->n_ops; i++)
        json_array_append_new(out, v[i]);
    free(v);
    return out;
}
