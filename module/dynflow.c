/*
 * dynflow.so: the /dynflow API mounted in smart-proxyd, running the executor
 * in-process (internal mode).  Routes adapt the host's requests to the task
 * API of libdynflow-core (reference/protocol.md §2.1).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "callback/callback.h"
#include "console/console.h"
#include "smart-proxy/module.h"

struct dynflow {
    const struct sp_host_api *host;
    df_world *w;
    df_api *api;
    df_callback *callback;
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
    return df->callback != NULL ? df_world_register(df->w, df_callback_class(df->callback), err)
                                : -EINVAL;
}

/* settings.d/dynflow.yml: :database:, :pool_size:, :execution_plan_cleaner_age: (1800). */
static int dynflow_init(const struct sp_host_api *host, const json_t *settings, void **state,
                        char *errbuf, size_t errlen)
{
    struct dynflow *df = calloc(1, sizeof(*df));
    json_t *age = json_object_get(settings, "execution_plan_cleaner_age");
    json_t *pool = json_object_get(settings, "pool_size");
    struct df_world_config cfg = {
        .database = json_string_value(json_object_get(settings, "database")),
        .pool_size = json_is_integer(pool) ? (unsigned)json_integer_value(pool) : 0,
        .cleaner_age = json_is_number(age) ? json_number_value(age) : 1800,
    };
    df_error err = {{0}};

    if (df == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return -ENOMEM;
    }
    df->host = host;
    df->w = df_world_new(&cfg, &err);
    if (df->w == NULL || df_api_register_classes(df->w, &err) < 0 ||
        setup_callbacks(df, host != NULL ? host->global_settings : NULL, &err) < 0 ||
        df_world_start(df->w, &err) < 0) {
        snprintf(errbuf, errlen, "cannot start the executor: %s", err.text);
        dynflow_shutdown(df);
        return -EIO;
    }
    set_routes(df, settings);
    df->api = df_api_new(df->w);
    df_api_register_operation(df->api, "single", DF_LAUNCH_SINGLE, NULL);
    *state = df;
    return 0;
}

SP_MODULE_DECLARE(.name = "dynflow", .version = "0.1.0", .init = dynflow_init,
                  .routes = dynflow_routes, .capabilities = dynflow_capabilities,
                  .shutdown = dynflow_shutdown);
