/*
 * dynflow.so: the /dynflow API mounted in smart-proxyd, running the executor
 * in-process (internal mode).  Routes adapt the host's requests to the task
 * API of libdynflow-core (reference/protocol.md §2.1).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "callback/callback.h"
#include "console/console.h"
#include "plugins.h"
#include "runner/dispatcher.h"
#include "smart-proxy/module.h"

struct dynflow {
    const struct sp_host_api *host;
    df_world *w;
    df_api *api;
    df_callback *callback;
    df_plugins *plugins;
    struct sp_route routes[32]; /* the table below, with the console's auth from the settings */
};

typedef void (*api_fn)(df_api *api, const struct df_api_request *req, struct df_api_response *res);

static int respond(const struct sp_request *req, struct sp_response *res, api_fn fn,
                   struct dynflow *df, bool done_event)
{
    struct df_api_request ar = {
        .task_id = req->n_params > 0 ? req->params[0] : NULL,
        .body = req->body,
        .body_len = req->body_len,
        .state = req->query(req, "state"),
        .host = req->header(req, "Host"),
        .forwarded_for = req->header(req, "X-Forwarded-For"),
        .authorization = req->header(req, "Authorization"),
        .request_id = req->request_id,
        .https = req->https != 0,
    };
    struct df_api_response out = {0};

    if (fn != NULL)
        fn(df->api, &ar, &out);
    else
        df_api_event(df->api, &ar, done_event, &out);
    res->status = out.status;
    res->content_type = "application/json";
    res->body = out.body != NULL ? json_dumps(out.body, JSON_COMPACT) : strdup("");
    res->body_len = res->body != NULL ? strlen(res->body) : 0;
    res->free_body = free;
    json_decref(out.body);
    return 0;
}

#define ROUTE(handler, fn)                                                                         \
    static int handler(void *state, const struct sp_request *req, struct sp_response *res)         \
    {                                                                                              \
        return respond(req, res, fn, state, false);                                                \
    }

ROUTE(bulk_status, df_api_bulk_status)
ROUTE(launch, df_api_launch)
ROUTE(trigger, df_api_trigger)
ROUTE(cancel, df_api_cancel)
ROUTE(status, df_api_status)
ROUTE(count, df_api_count)
ROUTE(statuses, df_api_statuses)
ROUTE(operations, df_api_operations)

static int update(void *state, const struct sp_request *req, struct sp_response *res)
{
    return respond(req, res, NULL, state, false);
}

static int done(void *state, const struct sp_request *req, struct sp_response *res)
{
    return respond(req, res, NULL, state, true);
}

#define CONSOLE_BASE "/dynflow/console"

static int page(struct sp_response *res, struct df_console_page *p)
{
    res->status = p->status;
    res->content_type = p->content_type;
    res->body = p->body;
    res->body_len = strlen(p->body);
    res->free_body = free;
    if (p->status == 303)
        res->location = strdup(p->location);
    return 0;
}

static int console_index(void *state, const struct sp_request *req, struct sp_response *res)
{
    struct dynflow *df = state;
    const char *pg = req->query(req, "page");
    struct df_console_page p = {0};

    df_console_index(df->w, CONSOLE_BASE, req->query(req, "state"),
                     pg ? (unsigned)strtoul(pg, NULL, 10) : 0, &p);
    return page(res, &p);
}

static int console_plan(void *state, const struct sp_request *req, struct sp_response *res)
{
    struct dynflow *df = state;
    struct df_console_page p = {0};

    df_console_plan(df->w, CONSOLE_BASE, req->params[0], req->query(req, "notice"), &p);
    return page(res, &p);
}

static int console_act(void *state, const struct sp_request *req, struct sp_response *res)
{
    struct dynflow *df = state;
    struct df_console_page p = {0};
    const char *what = strrchr(req->path, '/') + 1;

    if (req->n_params > 1) /* /:id/skip/:step */
        df_console_act(df->w, CONSOLE_BASE, req->params[0], "skip", atoi(req->params[1]), &p);
    else
        df_console_act(df->w, CONSOLE_BASE, req->params[0], what, 0, &p);
    return page(res, &p);
}

static const struct sp_route routes[] = {
    {"POST", "/tasks/status", bulk_status, SP_AUTH_ANY},
    {"POST", "/tasks/launch", launch, SP_AUTH_ANY},
    {"POST", "/tasks", trigger, SP_AUTH_ANY},
    {"POST", "/tasks/:task_id/cancel", cancel, SP_AUTH_ANY},
    {"GET", "/tasks/:task_id/status", status, SP_AUTH_ANY},
    {"GET", "/tasks/count", count, SP_AUTH_ANY},
    {"POST", "/tasks/statuses", statuses, SP_AUTH_ANY},
    {"POST", "/tasks/:task_id/update", update, SP_AUTH_ANY | SP_AUTH_TOKEN},
    {"POST", "/tasks/:task_id/done", done, SP_AUTH_ANY | SP_AUTH_TOKEN},
    {"GET", "/tasks/operations", operations, SP_AUTH_ANY},
    /* :console_auth: true: a client certificate over HTTPS (§4) */
    {"GET", "/console", console_index, SP_AUTH_CLIENT_CERT},
    {"GET", "/console/:id", console_plan, SP_AUTH_CLIENT_CERT},
    {"POST", "/console/:id/resume", console_act, SP_AUTH_CLIENT_CERT},
    {"POST", "/console/:id/cancel", console_act, SP_AUTH_CLIENT_CERT},
    {"POST", "/console/:id/skip/:step", console_act, SP_AUTH_CLIENT_CERT},
    {NULL, NULL, NULL, 0},
};

static const struct sp_route *dynflow_routes(void *state)
{
    struct dynflow *df = state;

    return df->routes;
}

/* :console_auth: false opens the console; true (the default) asks for a client certificate. */
static void set_routes(struct dynflow *df, const json_t *settings)
{
    bool open = json_is_false(json_object_get(settings, "console_auth"));
    size_t i;

    for (i = 0; routes[i].method != NULL && i + 1 < sizeof(df->routes) / sizeof(df->routes[0]);
         i++) {
        df->routes[i] = routes[i];
        if (open && strncmp(routes[i].pattern, "/console", 8) == 0)
            df->routes[i].auth = SP_AUTH_NONE;
    }
    df->routes[i] = (struct sp_route){NULL, NULL, NULL, 0};
}

static json_t *dynflow_capabilities(void *state)
{
    struct dynflow *df = state;

    return df_api_capabilities(df->api);
}

static void dynflow_shutdown(void *state)
{
    struct dynflow *df = state;

    if (df == NULL)
        return;
    df_world_free(df->w);
    df_plugins_free(df->plugins); /* after the world: plans may run plugin code until then */
    df_api_free(df->api);
    df_callback_free(df->callback);
    free(df);
}

static const char *either(const json_t *global, const char *key, const char *fallback)
{
    const char *v = json_string_value(json_object_get(global, key));

    return v != NULL ? v : json_string_value(json_object_get(global, fallback));
}

/* Callbacks go to :foreman_url: with the Foreman client certificate (§7.1); none without it. */
static int setup_callbacks(struct dynflow *df, const json_t *global, df_error *err)
{
    struct df_callback_config cfg = {
        .foreman_url = json_string_value(json_object_get(global, "foreman_url")),
        .cert_file = either(global, "foreman_ssl_cert", "ssl_certificate"),
        .key_file = either(global, "foreman_ssl_key", "ssl_private_key"),
        .ca_file = either(global, "foreman_ssl_ca", "ssl_ca_file"),
    };

    if (cfg.foreman_url == NULL)
        return 0;
    df->callback = df_callback_new(&cfg, err);
    if (df->callback == NULL)
        return -EINVAL;
    if (df_world_register(df->w, df_callback_class(df->callback), err) < 0)
        return -1;
    return df_world_register(df->w, df_callback_batch_class(df->callback), err);
}

/* The keys of settings.d/dynflow.yml this module reads, and their types. */
static const struct {
    const char *key;
    json_type type; /* JSON_INTEGER also accepts a real number of seconds */
} setting_types[] = {
    {"database", JSON_STRING},
    {"console_auth", JSON_TRUE},
    {"execution_plan_cleaner_age", JSON_INTEGER},
    {"pool_size", JSON_INTEGER},
    {"plugin_directory", JSON_STRING},
    {"max_concurrent_runners", JSON_INTEGER},
    {"runner_refresh_interval", JSON_INTEGER},
};

static const char *type_name(json_type t)
{
    return t == JSON_STRING ? "a string" : t == JSON_TRUE ? "true or false" : "a number";
}

static bool type_ok(const json_t *v, json_type t)
{
    return json_is_null(v) || (t == JSON_STRING && json_is_string(v)) ||
           (t == JSON_TRUE && json_is_boolean(v)) ||
           (t == JSON_INTEGER && json_is_number(v) && json_number_value(v) >= 0);
}

static int check_settings(const json_t *settings, df_error *err)
{
    for (size_t i = 0; i < sizeof(setting_types) / sizeof(setting_types[0]); i++) {
        const json_t *v = json_object_get(settings, setting_types[i].key);
        if (v != NULL && !type_ok(v, setting_types[i].type))
            return snprintf(err->text, sizeof(err->text), "settings.d/dynflow.yml: :%s: must be %s",
                            setting_types[i].key, type_name(setting_types[i].type)),
                   -EINVAL;
    }
    return 0;
}

static double number(const json_t *settings, const char *key, double fallback)
{
    const json_t *v = json_object_get(settings, key);

    return json_is_number(v) ? json_number_value(v) : fallback;
}

/* The host's log for the runner dispatcher. */
static void runner_log(void *ctx, int level, const char *fmt, va_list ap)
{
    const struct sp_host_api *host = ctx;
    char msg[1024];

    vsnprintf(msg, sizeof(msg), fmt, ap);
    host->log(host->ctx, level, "%s", msg);
}

static int setup_runners(struct dynflow *df, const json_t *settings, df_error *err)
{
    struct df_runner_config cfg = {
        .refresh_interval = number(settings, "runner_refresh_interval", 1),
        .max_concurrent = (unsigned)number(settings, "max_concurrent_runners", 1000),
        .log = df->host != NULL ? runner_log : NULL,
        .log_ctx = (void *)df->host,
    };
    const char *dir = json_string_value(json_object_get(settings, "plugin_directory"));

    if (df_runner_configure(df->w, &cfg, err) < 0)
        return -1;
    if (df->host != NULL && df->host->abi_minor >= 1)
        df->plugins = df_plugins_load(df->host, df->w, dir != NULL ? dir : PLUGINDIR);
    return 0;
}

/* settings.d/dynflow.yml: :database:, :pool_size:, :execution_plan_cleaner_age: (1800),
 * :plugin_directory:, :max_concurrent_runners:, :runner_refresh_interval:. */
static int dynflow_init(const struct sp_host_api *host, const json_t *settings, void **state,
                        char *errbuf, size_t errlen)
{
    struct dynflow *df = calloc(1, sizeof(*df));
    struct df_world_config cfg;
    df_error err = {{0}};

    if (df == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return -ENOMEM;
    }
    df->host = host;
    if (check_settings(settings, &err) < 0) {
        snprintf(errbuf, errlen, "%s", err.text);
        free(df);
        return -EINVAL;
    }
    cfg = (struct df_world_config){
        .database = json_string_value(json_object_get(settings, "database")),
        .pool_size = (unsigned)number(settings, "pool_size", 0),
        .cleaner_age = number(settings, "execution_plan_cleaner_age", 1800),
    };
    df->w = df_world_new(&cfg, &err);
    if (df->w == NULL || df_api_register_classes(df->w, &err) < 0 ||
        setup_callbacks(df, host != NULL ? host->global_settings : NULL, &err) < 0 ||
        setup_runners(df, settings, &err) < 0 || df_world_start(df->w, &err) < 0) {
        snprintf(errbuf, errlen, "cannot start the executor: %s", err.text);
        dynflow_shutdown(df);
        return -EIO;
    }
    set_routes(df, settings);
    df->api = df_api_new(df->w);
    df_api_register_operation(
        df->api, &(struct df_plugin_operation){"single", DF_LAUNCH_SINGLE, NULL}, NULL);
    if (df->plugins != NULL)
        df_plugins_publish(df->plugins, df->api);
    *state = df;
    return 0;
}

SP_MODULE_DECLARE(.name = "dynflow", .version = "0.1.0", .init = dynflow_init,
                  .routes = dynflow_routes, .capabilities = dynflow_capabilities,
                  .shutdown = dynflow_shutdown);
