/*
 * dynflow.so: the /dynflow API mounted in smart-proxyd.  In internal mode it
 * runs the executor in-process and its routes adapt the host's requests to the
 * task API of libdynflow-core (reference/protocol.md §2.1); in forward mode
 * (:external_core: true) every request goes to the core at :core_url:
 * (forward.c).  A reload may switch between the two: the host mounts the
 * routes of the new mode, requests in flight finish on the old path, and the
 * executor, once started, runs until shutdown (a switch to forward mode parks
 * it; it refuses to when tasks are unfinished and the database is in memory).
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "callback/callback.h"
#include "console/console.h"
#include "forward.h"
#include "plugins.h"
#include "runner/dispatcher.h"
#include "smart-proxy/module.h"

#define MAX_PREFIXES 8
#define REFRESH_S    60 /* how often the core's features are read again */

struct dynflow;

/* A plugin's mount point that forward mode relays to the core. */
struct prefix {
    struct dynflow *df;
    char path[128];
};

struct dynflow {
    const struct sp_host_api *host;
    /* internal mode: started at init or at the first switch to it, then kept until shutdown */
    df_world *w;
    df_api *api;
    df_callback *callback;
    df_plugins *plugins;
    bool file_db;
    struct sp_route routes[32]; /* the table below, with the console's auth from the settings */
    /* forward mode */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool forward;          /* under lock: the mode */
    df_forward *fwd;       /* under lock: the last relay; kept in internal mode for the requests
                              that matched the forward routes before the switch */
    json_t *core_features; /* under lock: the core's /v2/features */
    bool refresh_now, stopping, refresher_started;
    pthread_t refresher;
    struct prefix prefixes[MAX_PREFIXES];
    size_t n_prefixes;
};

typedef void (*api_fn)(df_api *api, const struct df_api_request *req, struct df_api_response *res);

/* The reply when an allocation failed building one: static, never freed. */
static const char out_of_memory[] = "{\"error\":\"out of memory: the reply could not be built\"}";

static void keep_static(void *body)
{
    (void)body;
}

struct text {
    char *s;
    size_t len, cap;
    bool failed;
};

static int append_text(const char *buf, size_t n, void *ud)
{
    struct text *t = ud;

    if (!t->failed && t->len + n + 1 > t->cap) {
        size_t cap = (t->len + n + 1) * 2;
        char *s = realloc(t->s, cap);
        t->failed = s == NULL;
        if (s != NULL) {
            t->s = s;
            t->cap = cap;
        }
    }
    if (t->failed)
        return -1;
    memcpy(t->s + t->len, buf, n);
    t->len += n;
    t->s[t->len] = '\0';
    return 0;
}

/* json_dumps(), but NULL when a write failed: jansson (2.14) ignores a failed write of an
 * object's key and returns the JSON without it. */
static char *dump_json(const json_t *j)
{
    struct text t = {0};

    if (json_dump_callback(j, append_text, &t, JSON_COMPACT) < 0 || t.failed || t.s == NULL) {
        free(t.s);
        return NULL;
    }
    return t.s;
}

/* A JSON reply (body steals; NULL: empty unless failed), or 503 when it cannot be built. */
static void reply_json(struct sp_response *res, unsigned status, json_t *body, bool failed)
{
    char *text = body != NULL ? dump_json(body) : failed ? NULL : strdup("");

    json_decref(body);
    res->content_type = "application/json";
    if (text == NULL) {
        res->status = 503;
        res->body = (char *)out_of_memory;
        res->body_len = sizeof(out_of_memory) - 1;
        res->free_body = keep_static;
        return;
    }
    res->status = status;
    res->body = text;
    res->body_len = strlen(text);
    res->free_body = free;
}

struct status_reader {
    const struct sp_host_api *host;
    df_json_stream *stream;
};

static long read_stream(void *reader, char *buf, size_t max)
{
    struct status_reader *sr = reader;
    df_error err;
    long n = df_json_stream_read(sr->stream, buf, max, &err);

    if (n < 0 && sr->host != NULL)
        sr->host->log(sr->host->ctx, SP_LOG_ERROR, "a status reply is cut short: %s", err.text);
    return n;
}

static void free_stream(void *reader)
{
    struct status_reader *sr = reader;

    df_json_stream_free(sr->stream);
    free(sr);
}

/* The status routes' bodies are read from the store while they are sent (doc/output.md). */
static int stream_body(struct sp_response *res, df_json_stream *stream,
                       const struct sp_host_api *host)
{
    struct status_reader *sr = malloc(sizeof(*sr));

    if (sr == NULL) {
        df_json_stream_free(stream);
        return -ENOMEM;
    }
    sr->host = host;
    sr->stream = stream;
    res->read = read_stream;
    res->reader = sr;
    res->free_reader = free_stream;
    return 0;
}

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
    if (out.stream != NULL) {
        res->status = out.status;
        res->content_type = "application/json";
        if (stream_body(res, out.stream, df->host) == 0)
            return 0; /* else no memory for the reader: no body, so 503 below */
    }
    /* only update and done answer 200 with no body; else no body means an allocation failed */
    reply_json(res, out.status, out.body, out.body == NULL && (fn != NULL || out.status != 200));
    return 0;
}

/* Routes that create tasks: while the database cannot be written, 503 before anything is
 * created, as no step would start (doc/persistence.md). */
static int respond_creating(const struct sp_request *req, struct sp_response *res, api_fn fn,
                            struct dynflow *df)
{
    df_error err;
    json_t *body;

    if (df_world_writable(df->w, &err) == 0)
        return respond(req, res, fn, df, false);
    body = json_pack("{s:s+}", "error", "the task was not created: ", err.text);
    reply_json(res, 503, body, true);
    return 0;
}

#define ROUTE(handler, fn)                                                                         \
    static int handler(void *state, const struct sp_request *req, struct sp_response *res)         \
    {                                                                                              \
        return respond(req, res, fn, state, false);                                                \
    }

#define CREATING_ROUTE(handler, fn)                                                                \
    static int handler(void *state, const struct sp_request *req, struct sp_response *res)         \
    {                                                                                              \
        return respond_creating(req, res, fn, state);                                              \
    }

ROUTE(bulk_status, df_api_bulk_status)
CREATING_ROUTE(launch, df_api_launch)
CREATING_ROUTE(trigger, df_api_trigger)
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
    /* the console: the API's rules; :console_auth: false drops the certificate (set_routes) */
    {"GET", "/console", console_index, SP_AUTH_ANY},
    {"GET", "/console/:id", console_plan, SP_AUTH_ANY},
    {"POST", "/console/:id/resume", console_act, SP_AUTH_ANY},
    {"POST", "/console/:id/cancel", console_act, SP_AUTH_ANY},
    {"POST", "/console/:id/skip/:step", console_act, SP_AUTH_ANY},
    {NULL, NULL, NULL, 0},
};

/* Relays with the newest relay, which these routes (mounted once there is one) keep alive
 * until the request is done. */
static int relay_with(struct dynflow *df, const char *prefix, const struct sp_request *req,
                      struct sp_response *res)
{
    df_forward *f;
    int rc;

    pthread_mutex_lock(&df->lock);
    f = df_forward_ref(df->fwd);
    pthread_mutex_unlock(&df->lock);
    rc = df_forward_relay(f, prefix, req, res);
    df_forward_unref(f);
    return rc;
}

static int relay(void *state, const struct sp_request *req, struct sp_response *res)
{
    return relay_with(state, "", req, res);
}

static int relay_prefixed(void *state, const struct sp_request *req, struct sp_response *res)
{
    struct prefix *p = state;

    return relay_with(p->df, p->path, req, res);
}

/* Forward mode (§3.1): update/done with an Authorization header go to the core unchecked (it
 * checks the token); every other GET and POST needs a client certificate and trusted_hosts.  The
 * routes with a task id are named so that the host refuses what is not one here, as in internal
 * mode (doc/http-input.md), instead of relaying it. */
static const struct sp_route forward_routes[] = {
    {"POST", "/tasks/:task_id/update", relay, SP_AUTH_ANY | SP_AUTH_TOKEN},
    {"POST", "/tasks/:task_id/done", relay, SP_AUTH_ANY | SP_AUTH_TOKEN},
    {"POST", "/tasks/:task_id/cancel", relay, SP_AUTH_ANY},
    {"GET", "/tasks/:task_id/status", relay, SP_AUTH_ANY},
    {"GET", "/*", relay, SP_AUTH_ANY},
    {"POST", "/*", relay, SP_AUTH_ANY},
    {NULL, NULL, NULL, 0},
};

/* A plugin's routes, relayed in forward mode under its prefix. */
static const struct sp_route prefix_routes[] = {
    {"GET", "/*", relay_prefixed, SP_AUTH_ANY},
    {"POST", "/*", relay_prefixed, SP_AUTH_ANY},
    {NULL, NULL, NULL, 0},
};

static const struct sp_route *dynflow_routes(void *state)
{
    struct dynflow *df = state;
    bool forward;

    pthread_mutex_lock(&df->lock);
    forward = df->forward;
    pthread_mutex_unlock(&df->lock);
    return forward ? forward_routes : df->routes;
}

/* The console applies the API's rules: :trusted_hosts: and, over HTTPS, a client certificate.
 * :console_auth: false (true is the default) drops only the certificate: :trusted_hosts: still
 * applies, so an untrusted client never reads or cancels tasks there (doc/api-input.md). */
static void set_routes(struct dynflow *df, const json_t *settings)
{
    bool no_cert = json_is_false(json_object_get(settings, "console_auth"));
    size_t i;

    for (i = 0; routes[i].method != NULL && i + 1 < sizeof(df->routes) / sizeof(df->routes[0]);
         i++) {
        df->routes[i] = routes[i];
        if (no_cert && strncmp(routes[i].pattern, "/console", 8) == 0)
            df->routes[i].auth = SP_AUTH_TRUSTED_HOSTS;
    }
    df->routes[i] = (struct sp_route){NULL, NULL, NULL, 0};
}

/* Forward mode: the core's, so that Foreman never sees an operation the core cannot run. */
static json_t *dynflow_capabilities(void *state)
{
    struct dynflow *df = state;
    json_t *caps = NULL;
    bool forward;

    pthread_mutex_lock(&df->lock);
    forward = df->forward;
    if (forward)
        caps = json_deep_copy(
            json_object_get(json_object_get(df->core_features, "dynflow"), "capabilities"));
    pthread_mutex_unlock(&df->lock);
    if (!forward)
        return df_api_capabilities(df->api);
    if (json_is_array(caps))
        return caps;
    json_decref(caps);
    return json_array();
}

/* Forward mode: the core's other features (its plugins'), each with its capabilities. */
static json_t *dynflow_features(void *state)
{
    struct dynflow *df = state;
    json_t *out = json_object(), *v;
    const char *name;

    pthread_mutex_lock(&df->lock);
    if (df->forward) {
        json_object_foreach(df->core_features, name, v)
        {
            json_t *caps = json_object_get(v, "capabilities");
            if (strcmp(name, "dynflow") != 0)
                json_object_set_new(out, name,
                                    json_is_array(caps) ? json_deep_copy(caps) : json_array());
        }
    }
    pthread_mutex_unlock(&df->lock);
    return out;
}

static void stop_refresher(struct dynflow *df)
{
    if (!df->refresher_started)
        return;
    pthread_mutex_lock(&df->lock);
    df->stopping = true;
    pthread_cond_signal(&df->wake);
    pthread_mutex_unlock(&df->lock);
    pthread_join(df->refresher, NULL);
}

static void stop_internal(struct dynflow *df)
{
    df_world_free(df->w);
    df_plugins_free(df->plugins); /* after the world: plans may run plugin code until then */
    df_api_free(df->api);
    df_callback_free(df->callback);
    df->w = NULL;
    df->plugins = NULL;
    df->api = NULL;
    df->callback = NULL;
}

static void dynflow_shutdown(void *state)
{
    struct dynflow *df = state;

    if (df == NULL)
        return;
    stop_refresher(df);
    df_forward_unref(df->fwd);
    json_decref(df->core_features);
    pthread_cond_destroy(&df->wake);
    pthread_mutex_destroy(&df->lock);
    stop_internal(df);
    df_http_global_cleanup();
    free(df);
}

static const char *either(const json_t *global, const char *key, const char *fallback)
{
    const char *v = json_string_value(json_object_get(global, key));

    return v != NULL ? v : json_string_value(json_object_get(global, fallback));
}

/* The proxy's certificate towards Foreman and the core, and the CA they are checked with. */
static struct df_http_tls tls_files(const json_t *global)
{
    return (struct df_http_tls){
        .ca_file = either(global, "foreman_ssl_ca", "ssl_ca_file"),
        .cert_file = either(global, "foreman_ssl_cert", "ssl_certificate"),
        .key_file = either(global, "foreman_ssl_key", "ssl_private_key"),
    };
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
    {"external_core", JSON_TRUE},
    {"core_url", JSON_STRING},
    {"core_timeout", JSON_INTEGER},
    {"callback_connections", JSON_INTEGER},
    {"callback_timeout", JSON_INTEGER},
    {"callback_retry_interval", JSON_INTEGER},
    {"callback_retry_max_interval", JSON_INTEGER},
    {"callback_give_up_after", JSON_INTEGER},
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

static int check_settings(const json_t *settings, char *errbuf, size_t errlen)
{
    for (size_t i = 0; i < sizeof(setting_types) / sizeof(setting_types[0]); i++) {
        const json_t *v = json_object_get(settings, setting_types[i].key);
        if (v != NULL && !type_ok(v, setting_types[i].type))
            return snprintf(errbuf, errlen, "settings.d/dynflow.yml: :%s: must be %s",
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

/* Callbacks go to :foreman_url: with the Foreman client certificate (§7.1); none without it.
 * The delivery settings: doc/callbacks.md. */
static int setup_callbacks(struct dynflow *df, const json_t *global, const json_t *settings,
                           df_error *err)
{
    struct df_http_tls tls = tls_files(global);
    struct df_callback_config cfg = {
        .foreman_url = json_string_value(json_object_get(global, "foreman_url")),
        .cert_file = tls.cert_file,
        .key_file = tls.key_file,
        .ca_file = tls.ca_file,
        .max_connections = (unsigned)number(settings, "callback_connections", 0),
        .timeout = number(settings, "callback_timeout", 0),
        .first_retry = number(settings, "callback_retry_interval", 0),
        .max_retry = number(settings, "callback_retry_max_interval", 0),
        .give_up_after = number(settings, "callback_give_up_after", 0),
    };

    if (cfg.foreman_url == NULL)
        return 0;
    df->callback = df_callback_new(&cfg, err);
    if (df->callback == NULL)
        return -EINVAL;
    return df_callback_register(df->callback, df->w, err);
}

/* The host's log for the engine and the runner dispatcher. */
static void host_log(void *ctx, int level, const char *fmt, va_list ap)
{
    const struct sp_host_api *host = ctx;
    char msg[1024];

    vsnprintf(msg, sizeof(msg), fmt, ap);
    host->log(host->ctx, level, "%s", msg);
}

static const char *plugin_directory(const json_t *settings)
{
    const char *dir = json_string_value(json_object_get(settings, "plugin_directory"));

    return dir != NULL ? dir : PLUGINDIR;
}

static int setup_runners(struct dynflow *df, const json_t *settings, df_error *err)
{
    struct df_runner_config cfg = {
        .refresh_interval = number(settings, "runner_refresh_interval", 1),
        .max_concurrent = (unsigned)number(settings, "max_concurrent_runners", 1000),
        .log = df->host != NULL ? host_log : NULL,
        .log_ctx = (void *)df->host,
    };

    if (df_runner_configure(df->w, &cfg, err) < 0)
        return -1;
    if (df->host != NULL && df->host->abi_minor >= 1)
        df->plugins = df_plugins_load(df->host, df->w, plugin_directory(settings));
    return 0;
}

/* Internal mode: the executor, its plugins and the task API.  publish: the plugins' routes and
 * features go to the host (only while it starts). */
static int start_internal(struct dynflow *df, const json_t *settings, bool publish, char *errbuf,
                          size_t errlen)
{
    const char *database = json_string_value(json_object_get(settings, "database"));
    struct df_world_config cfg = {
        .database = database,
        .pool_size = (unsigned)number(settings, "pool_size", 0),
        .cleaner_age = number(settings, "execution_plan_cleaner_age", 1800),
        .log = df->host != NULL ? host_log : NULL,
        .log_ctx = (void *)df->host,
    };
    df_error err = {{0}};

    df->file_db = database != NULL && database[0] != '\0';
    df->w = df_world_new(&cfg, &err);
    if (df->w == NULL || df_api_register_classes(df->w, &err) < 0 ||
        setup_callbacks(df, df->host != NULL ? df->host->global_settings : NULL, settings, &err) <
            0 ||
        setup_runners(df, settings, &err) < 0 || df_world_start(df->w, &err) < 0) {
        snprintf(errbuf, errlen, "cannot start the executor: %s", err.text);
        stop_internal(df); /* a later switch tries again */
        return -EIO;
    }
    df->api = df_api_new(df->w);
    df_api_register_operation(
        df->api, &(struct df_plugin_operation){"single", DF_LAUNCH_SINGLE, NULL}, NULL);
    if (df->plugins != NULL)
        df_plugins_publish(df->plugins, df->api, publish);
    return 0;
}

/* Reads the core's features now and then (REFRESH_S, and at once when asked). */
static void refresh_features(struct dynflow *df, df_forward *f)
{
    char why[512] = "";
    json_t *features = df_forward_features(f, why, sizeof(why)), *old;

    if (features == NULL) {
        df->host->log(df->host->ctx, SP_LOG_WARNING,
                      "cannot read the features of the core at %s: %s; the last ones stay",
                      df_forward_url(f), why);
        return;
    }
    pthread_mutex_lock(&df->lock);
    old = df->core_features;
    df->core_features = features;
    pthread_mutex_unlock(&df->lock);
    json_decref(old);
}

static void *refresher(void *arg)
{
    struct dynflow *df = arg;

    pthread_mutex_lock(&df->lock);
    while (!df->stopping) {
        df_forward *f = df->forward ? df_forward_ref(df->fwd) : NULL;
        struct timespec deadline;
        df->refresh_now = false;
        pthread_mutex_unlock(&df->lock);
        if (f != NULL)
            refresh_features(df, f);
        df_forward_unref(f);
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += REFRESH_S;
        pthread_mutex_lock(&df->lock);
        while (!df->stopping && !df->refresh_now &&
               pthread_cond_timedwait(&df->wake, &df->lock, &deadline) == 0)
            ;
    }
    pthread_mutex_unlock(&df->lock);
    return NULL;
}

static bool forward_wanted(const json_t *settings)
{
    return json_is_true(json_object_get(settings, "external_core"));
}

/* Plans that have not stopped: what a switch to forward mode would leave behind. */
static uint64_t unfinished(df_world *w)
{
    uint64_t all = 0, stopped = 0;
    df_error err;

    if (w == NULL || df_plan_count(w, -1, &all, &err) < 0 ||
        df_plan_count(w, DF_PLAN_STOPPED, &stopped, &err) < 0)
        return 0;
    return all - stopped;
}

static int to_forward(struct dynflow *df, const json_t *settings, char *errbuf, size_t errlen)
{
    struct df_http_tls tls = tls_files(df->host->global_settings);
    df_forward *f = df_forward_new(df->host, settings, &tls, errbuf, errlen), *old;
    uint64_t left = df->forward ? 0 : unfinished(df->w);

    if (f == NULL)
        return -EINVAL;
    if (left > 0 && !df->file_db) {
        snprintf(errbuf, errlen,
                 "cannot switch to forward mode: %llu tasks are not finished and :database: is "
                 "in memory, so they would be lost; staying in internal mode",
                 (unsigned long long)left);
        df_forward_unref(f);
        return -EBUSY;
    }
    pthread_mutex_lock(&df->lock);
    old = df->fwd;
    df->fwd = f;
    df->forward = true;
    df->refresh_now = true;
    pthread_cond_signal(&df->wake);
    pthread_mutex_unlock(&df->lock);
    df_forward_unref(old);
    if (!df->refresher_started && pthread_create(&df->refresher, NULL, refresher, df) == 0)
        df->refresher_started = true;
    df->host->log(df->host->ctx, SP_LOG_INFO, "forward mode: relaying to the core at %s%s",
                  df_forward_url(f),
                  left > 0 ? "; the executor's unfinished tasks go on when switched back" : "");
    return 0;
}

static int to_internal(struct dynflow *df, const json_t *settings, char *errbuf, size_t errlen)
{
    int rc = df->w == NULL ? start_internal(df, settings, false, errbuf, errlen) : 0;

    if (rc < 0)
        return rc;
    pthread_mutex_lock(&df->lock);
    df->forward = false;
    pthread_mutex_unlock(&df->lock);
    df->host->log(df->host->ctx, SP_LOG_INFO, "internal mode: the executor runs in-process");
    return 0;
}

static void add_prefix(void *ud, const char *path)
{
    struct dynflow *df = ud;
    struct prefix *p = &df->prefixes[df->n_prefixes];

    if (df->n_prefixes == MAX_PREFIXES || strlen(path) >= sizeof(p->path)) {
        df->host->log(df->host->ctx, SP_LOG_ERROR, "forward mode: cannot relay %s too", path);
        return;
    }
    *p = (struct prefix){.df = df};
    snprintf(p->path, sizeof(p->path), "%s", path);
    if (df->host->mount(df->host->ctx, p->path, prefix_routes, p) < 0)
        df->host->log(df->host->ctx, SP_LOG_ERROR, "forward mode: cannot mount %s", path);
    else
        df->n_prefixes++;
}

/* settings.d/dynflow.yml: :external_core: and :core_url: (forward mode), or :database:,
 * :pool_size:, :execution_plan_cleaner_age: (1800), :plugin_directory:,
 * :max_concurrent_runners:, :runner_refresh_interval: (internal mode). */
static int dynflow_init(const struct sp_host_api *host, const json_t *settings, void **state,
                        char *errbuf, size_t errlen)
{
    struct dynflow *df = calloc(1, sizeof(*df));
    int rc;

    if (df == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return -ENOMEM;
    }
    df->host = host;
    df_http_global_init(); /* while the host has one thread: libcurl's is not thread-safe */
    pthread_mutex_init(&df->lock, NULL);
    pthread_cond_init(&df->wake, NULL);
    rc = check_settings(settings, errbuf, errlen);
    if (rc == 0 && forward_wanted(settings)) {
        rc = to_forward(df, settings, errbuf, errlen);
        if (rc == 0)
            df_plugins_prefixes(host, plugin_directory(settings), add_prefix, df);
    } else if (rc == 0) {
        rc = start_internal(df, settings, true, errbuf, errlen);
    }
    if (rc < 0) {
        dynflow_shutdown(df);
        return rc;
    }
    set_routes(df, settings);
    *state = df;
    return 0;
}

/* SIGHUP: the mode again, from the settings. */
static int dynflow_reload(void *state, const json_t *settings, char *errbuf, size_t errlen)
{
    struct dynflow *df = state;
    int rc = check_settings(settings, errbuf, errlen);

    if (rc < 0)
        return rc;
    return forward_wanted(settings) ? to_forward(df, settings, errbuf, errlen)
                                    : to_internal(df, settings, errbuf, errlen);
}

SP_MODULE_DECLARE(.name = "dynflow", .version = "0.1.0", .init = dynflow_init,
                  .routes = dynflow_routes, .capabilities = dynflow_capabilities,
                  .reload = dynflow_reload, .shutdown = dynflow_shutdown,
                  .features = dynflow_features);
