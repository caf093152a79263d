#include "callback/callback.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/async.h"
#include "util/hash.h"
#include "util/util.h"

struct df_callback {
    char *url; /* the callback endpoint */
    char *cert_file, *key_file, *ca_file;
    unsigned max_connections;
    double timeout, first_retry, max_retry, give_up_after;
    struct df_action_class cls, batch_cls;
    df_world *w;
    df_http_async *http;  /* the delivery thread; from df_callback_register */
    pthread_mutex_t lock; /* waiting */
    df_hash *waiting;     /* "plan/step" -> struct waiting: callbacks in backoff */
};

/* A callback waiting for its next attempt; woken early when another one got through. */
struct waiting {
    struct waiting *next; /* while being woken */
    char key[DF_UUID_BUF + 16];
    char plan_id[DF_UUID_BUF];
    int step_id;
    json_int_t attempt; /* the attempt that failed */
};

/* One attempt on the wire. */
struct delivery {
    df_callback *cb;
    char plan_id[DF_UUID_BUF];
    int step_id;
    json_int_t attempt;
};

static double backoff(const df_callback *cb, json_int_t attempts)
{
    double d = cb->first_retry;

    for (json_int_t i = 1; i < attempts && d < cb->max_retry; i++)
        d *= 2;
    return d < cb->max_retry ? d : cb->max_retry;
}

/* Tells the step how its attempt ended (and thereby wakes it). */
static void tell(df_callback *cb, const char *plan_id, int step_id, json_int_t attempt,
                 const char *outcome, const char *why)
{
    json_t *data = json_pack("{s:I, s:s}", "attempt", (json_int_t)attempt, "outcome", outcome);
    df_error err;

    if (why != NULL)
        json_object_set_new(data, "error", json_string(why));
    /* fails only when the plan is gone or no longer running: nothing waits then */
    df_world_event(cb->w, plan_id, step_id, &(df_event){DF_EVENT_USER, data}, 0, &err);
    json_decref(data);
}

static void take_waiting(void *ud, const char *key, void *value)
{
    struct waiting **list = ud, *w = value;

    (void)key;
    w->next = *list;
    *list = w;
}

/* Foreman answers again: every callback in backoff is retried now instead of at its timer
 * (doc/callbacks.md, recovery). */
static void wake_waiting(df_callback *cb)
{
    struct waiting *list = NULL, *w;
    df_hash *all;

    pthread_mutex_lock(&cb->lock);
    all = cb->waiting;
    if (df_hash_count(all) > 0)
        cb->waiting = df_hash_new();
    else
        all = NULL;
    pthread_mutex_unlock(&cb->lock);
    if (all == NULL)
        return;
    df_hash_each(all, take_waiting, &list);
    df_hash_free(all);
    while ((w = list) != NULL) {
        list = w->next;
        tell(cb, w->plan_id, w->step_id, w->attempt, "retry", NULL);
        free(w);
    }
}

static void waiting_key(char *key, size_t len, df_action *a)
{
    snprintf(key, len, "%s/%d", df_action_plan_id(a), df_action_run_step_id(a));
}

static void wait_for_retry(df_callback *cb, df_action *a, json_int_t attempt)
{
    struct waiting *w = df_calloc(1, sizeof(*w));

    waiting_key(w->key, sizeof(w->key), a);
    snprintf(w->plan_id, sizeof(w->plan_id), "%s", df_action_plan_id(a));
    w->step_id = df_action_run_step_id(a);
    w->attempt = attempt;
    pthread_mutex_lock(&cb->lock);
    free(df_hash_del(cb->waiting, w->key));
    df_hash_put(cb->waiting, w->key, w);
    pthread_mutex_unlock(&cb->lock);
}

static void stop_waiting(df_callback *cb, df_action *a)
{
    char key[DF_UUID_BUF + 16];

    waiting_key(key, sizeof(key), a);
    pthread_mutex_lock(&cb->lock);
    free(df_hash_del(cb->waiting, key));
    pthread_mutex_unlock(&cb->lock);
}

/* On the delivery thread: the answer (or why none came) goes to the step. */
static void delivered(void *ud, const struct df_http_reply *rep)
{
    struct delivery *d = ud;
    char why[768];

    if (rep->failure == DF_HTTP_CANCELLED) { /* stopping: the step stays suspended, and a
                                                restart with a file database sends again */
        free(d);
        return;
    }
    if (rep->failure == DF_HTTP_ANSWERED && rep->status == 200) {
        tell(d->cb, d->plan_id, d->step_id, d->attempt, "delivered", NULL);
        wake_waiting(d->cb);
    } else {
        if (rep->failure != DF_HTTP_ANSWERED)
            snprintf(why, sizeof(why), "%s", rep->error);
        else
            snprintf(why, sizeof(why), "%ld %.512s", rep->status, rep->body);
        tell(d->cb, d->plan_id, d->step_id, d->attempt, "failed", why);
    }
    free(d);
}

/* Hands a new attempt with payload (steals) to the delivery thread and suspends. */
static int send_attempt(df_action *a, json_t *payload)
{
    df_callback *cb = df_action_class(a)->data;
    json_t *out = df_action_output(a);
    json_int_t attempt = json_integer_value(json_object_get(out, "attempts")) + 1;
    const char *rid = json_string_value(json_object_get(df_action_input(a), "current_request_id"));
    char rid_header[128], *body = json_dumps(payload, JSON_COMPACT);
    const char *headers[] = {"Accept: application/json,version=2", "Content-Type: application/json",
                             rid != NULL ? rid_header : NULL, NULL};
    struct delivery *d = df_calloc(1, sizeof(*d));

    json_decref(payload);
    if (json_object_get(out, "first_attempt_at") == NULL)
        json_object_set_new(out, "first_attempt_at", json_real((double)df_now_us() / 1e6));
    json_object_set_new(out, "attempts", json_integer(attempt));
    snprintf(rid_header, sizeof(rid_header), "X-Request-Id: %s", rid != NULL ? rid : "");
    *d = (struct delivery){.cb = cb, .step_id = df_action_run_step_id(a), .attempt = attempt};
    snprintf(d->plan_id, sizeof(d->plan_id), "%s", df_action_plan_id(a));
    if (df_http_async_send(cb->http,
                           &(struct df_http_request){.method = "POST",
                                                     .url = cb->url,
                                                     .body = body,
                                                     .body_len = strlen(body),
                                                     .headers = headers,
                                                     .timeout = cb->timeout},
                           delivered, d) < 0)
        free(d); /* the world is stopping: a restart sends again */
    free(body);
    df_action_suspend(a);
    return 0;
}

/* A failed attempt: history, then the next one after the backoff, or giving up. */
static int retry_later(df_action *a, json_int_t attempt, const char *why)
{
    df_callback *cb = df_action_class(a)->data;
    json_t *out = df_action_output(a), *retry;
    double first = json_number_value(json_object_get(out, "first_attempt_at"));
    char note[900];

    snprintf(note, sizeof(note), "callback attempt %lld failed: %s", (long long)attempt, why);
    df_action_history(a, note);
    if ((double)df_now_us() / 1e6 - first >= cb->give_up_after) {
        json_object_del(out, "first_attempt_at"); /* a resumed plan tries for as long again */
        return df_action_error(a, "Failed performing callback to Foreman server: %s", why);
    }
    retry = json_pack("{s:I, s:s}", "attempt", attempt, "outcome", "retry");
    df_action_plan_event(a, &(df_event){DF_EVENT_USER, retry}, backoff(cb, attempt));
    json_decref(retry);
    wait_for_retry(cb, a, attempt);
    df_action_suspend(a);
    return 0;
}

/* The run step of both classes.  ev NULL: the first run, a resume, or the first run after a
 * restart (an attempt then in flight has an unknown outcome: send again).  Events of an older
 * attempt (a timer or an answer from before a restart or a wake-up) are ignored. */
static int deliver(df_action *a, const df_event *ev, json_t *(*payload)(df_action *a))
{
    json_int_t attempts = json_integer_value(json_object_get(df_action_output(a), "attempts"));
    const char *outcome;

    if (ev == NULL)
        return send_attempt(a, payload(a));
    if (ev->kind != DF_EVENT_USER ||
        json_integer_value(json_object_get(ev->data, "attempt")) != attempts) {
        df_action_suspend(a);
        return 0;
    }
    outcome = json_string_value(json_object_get(ev->data, "outcome"));
    if (outcome != NULL && strcmp(outcome, "delivered") == 0)
        return 0;
    if (outcome != NULL && strcmp(outcome, "retry") == 0) {
        stop_waiting(df_action_class(a)->data, a);
        return send_attempt(a, payload(a));
    }
    return retry_later(a, attempts, json_string_value(json_object_get(ev->data, "error")));
}

/* {"callback": input.callback, "data": input.data} (§7.1) */
static json_t *callback_payload(df_action *a)
{
    json_t *in = df_action_input(a);

    return json_pack("{s:O?, s:O?}", "callback", json_object_get(in, "callback"), "data",
                     json_object_get(in, "data"));
}

static int callback_run(df_action *a, const df_event *ev)
{
    return deliver(a, ev, callback_payload);
}

/* Action::BatchCallback#plan: the Foreman callback of each key, and the results to come. */
static int batch_callback_plan(df_action *a, json_t *args)
{
    json_t *targets = json_object(), *v;
    const char *key;

    json_object_foreach(json_object_get(args, "input_hash"), key, v)
    {
        json_t *callback = json_object_get(json_object_get(v, "action_input"), "callback");
        if (json_is_object(callback))
            json_object_set(targets, key, callback);
    }
    return df_plan_self(a, json_pack("{s:o, s:O?}", "targets", targets, "results",
                                     json_object_get(args, "results")));
}

/* {"callbacks": [{"callback": …, "data": results[key]}, …]} (§7.2) */
static json_t *batch_payload(df_action *a)
{
    json_t *in = df_action_input(a), *results = json_object_get(in, "results");
    json_t *list = json_array(), *callback;
    const char *key;

    json_object_foreach(json_object_get(in, "targets"), key, callback)
    {
        json_t *data = json_object_get(results, key);
        if (data != NULL)
            json_array_append_new(list,
                                  json_pack("{s:O, s:O}", "callback", callback, "data", data));
    }
    return json_pack("{s:o}", "callbacks", list);
}

static int batch_callback_run(df_action *a, const df_event *ev)
{
    return deliver(a, ev, batch_payload);
}

df_callback *df_callback_new(const struct df_callback_config *cfg, df_error *err)
{
    df_callback *cb;
    const char *scheme_end, *path;

    if (cfg->foreman_url == NULL || (scheme_end = strstr(cfg->foreman_url, "://")) == NULL) {
        df_errorf(err, -EINVAL, "callbacks need :foreman_url: (https://host[:port]), found '%s'",
                  cfg->foreman_url ? cfg->foreman_url : "");
        return NULL;
    }
    cb = df_calloc(1, sizeof(*cb));
    df_http_global_init(); /* now, while there is one thread; counted */
    /* URI.join with an absolute path: any path of foreman_url is dropped */
    path = strchr(scheme_end + 3, '/');
    cb->url = df_malloc(strlen(cfg->foreman_url) + 64);
    sprintf(cb->url, "%.*s/foreman_tasks/api/tasks/callback",
            (int)(path ? (size_t)(path - cfg->foreman_url) : strlen(cfg->foreman_url)),
            cfg->foreman_url);
    cb->cert_file = cfg->cert_file ? df_strdup(cfg->cert_file) : NULL;
    cb->key_file = cfg->key_file ? df_strdup(cfg->key_file) : NULL;
    cb->ca_file = cfg->ca_file ? df_strdup(cfg->ca_file) : NULL;
    cb->max_connections = cfg->max_connections > 0 ? cfg->max_connections : 8;
    cb->timeout = cfg->timeout > 0 ? cfg->timeout : 30;
    cb->first_retry = cfg->first_retry > 0 ? cfg->first_retry : 1;
    cb->max_retry = cfg->max_retry > 0 ? cfg->max_retry : 30;
    cb->give_up_after = cfg->give_up_after > 0 ? cfg->give_up_after : 86400;
    /* a callback a crash interrupted is posted again (doc/recovery.md) */
    cb->cls = (struct df_action_class){
        .name = DF_CALLBACK_CLASS, .run = callback_run, .flags = DF_ACTION_RERUNNABLE, .data = cb};
    cb->batch_cls = (struct df_action_class){.name = DF_BATCH_CALLBACK_CLASS,
                                             .plan = batch_callback_plan,
                                             .run = batch_callback_run,
                                             .flags = DF_ACTION_RERUNNABLE,
                                             .data = cb};
    pthread_mutex_init(&cb->lock, NULL);
    cb->waiting = df_hash_new();
    return cb;
}

/* df_world_free: no answer reaches the world after this (steps then still running may send:
 * their POSTs are refused and stay for a restart). */
static void stop_deliveries(void *data)
{
    df_callback *cb = data;

    df_http_async_stop(cb->http);
}

int df_callback_register(df_callback *cb, df_world *w, df_error *err)
{
    struct df_http_tls tls = {cb->ca_file, cb->cert_file, cb->key_file};
    int rc;

    if (cb->w != NULL)
        return df_errorf(err, -EBUSY, "the callbacks are registered with a world already");
    if ((rc = df_world_register(w, &cb->cls, err)) < 0 ||
        (rc = df_world_register(w, &cb->batch_cls, err)) < 0)
        return rc;
    cb->w = w;
    cb->http = df_http_async_new(&tls, cb->max_connections, err);
    if (cb->http == NULL)
        return -ENOMEM;
    if ((rc = df_world_attach(w, cb, cb, stop_deliveries, NULL)) < 0)
        return df_errorf(err, rc, "cannot attach the callback delivery to the world: %s",
                         strerror(-rc));
    return 0;
}

static void free_waiting(void *ud, const char *key, void *value)
{
    (void)ud;
    (void)key;
    free(value);
}

void df_callback_free(df_callback *cb)
{
    if (cb == NULL)
        return;
    df_http_async_free(cb->http);
    df_hash_each(cb->waiting, free_waiting, NULL);
    df_hash_free(cb->waiting);
    pthread_mutex_destroy(&cb->lock);
    free(cb->url);
    free(cb->cert_file);
    free(cb->key_file);
    free(cb->ca_file);
    free(cb);
    df_http_global_cleanup();
}
