#include "callback/callback.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/client.h"
#include "util/util.h"

struct df_callback {
    char *url; /* the callback endpoint */
    char *cert_file, *key_file, *ca_file;
    double first_retry, max_retry, give_up_after;
    struct df_action_class cls, batch_cls;
};

/* One POST; 0 on HTTP 200, else -1 with why (status and body, or the client's reason). */
static int post(const df_callback *cb, const char *body, const char *request_id, char *why,
                size_t len)
{
    char rid[128];
    const char *headers[] = {"Accept: application/json,version=2", "Content-Type: application/json",
                             rid, NULL};
    struct df_http_tls tls = {cb->ca_file, cb->cert_file, cb->key_file};
    struct df_http_reply rep;
    int rc;

    if (request_id != NULL)
        snprintf(rid, sizeof(rid), "X-Request-Id: %s", request_id);
    else
        headers[2] = NULL;
    rc = df_http_perform(&tls,
                         &(struct df_http_request){.method = "POST",
                                                   .url = cb->url,
                                                   .body = body,
                                                   .body_len = strlen(body),
                                                   .headers = headers,
                                                   .timeout = 60},
                         &rep);
    if (rc < 0)
        snprintf(why, len, "%s", rep.error);
    else if (rep.status != 200)
        snprintf(why, len, "%ld %.512s", rep.status, rep.body);
    free(rep.body);
    return rc == 0 && rep.status == 200 ? 0 : -1;
}

static double backoff(const df_callback *cb, json_int_t attempts)
{
    double d = cb->first_retry;

    for (json_int_t i = 1; i < attempts && d < cb->max_retry; i++)
        d *= 2;
    return d < cb->max_retry ? d : cb->max_retry;
}

/* POSTs payload (steals); retries until give_up_after while the step stays suspended. */
static int deliver(df_action *a, json_t *payload)
{
    const df_callback *cb = df_action_class(a)->data;
    json_t *in = df_action_input(a), *out = df_action_output(a);
    json_int_t attempts = json_integer_value(json_object_get(out, "attempts")) + 1;
    double first = json_number_value(json_object_get(out, "first_attempt_at"));
    double now = (double)df_now_us() / 1e6;
    char *body = json_dumps(payload, JSON_COMPACT), why[768], note[900];
    int rc;

    if (first == 0)
        json_object_set_new(out, "first_attempt_at", json_real(first = now));
    json_object_set_new(out, "attempts", json_integer(attempts));
    rc = post(cb, body, json_string_value(json_object_get(in, "current_request_id")), why,
              sizeof(why));
    free(body);
    json_decref(payload);
    if (rc == 0)
        return 0;
    snprintf(note, sizeof(note), "callback attempt %lld failed: %s", (long long)attempts, why);
    df_action_history(a, note);
    if (now - first >= cb->give_up_after)
        return df_action_error(a, "Failed performing callback to Foreman server: %s", why);
    df_action_plan_event(a, &(df_event){DF_EVENT_USER, NULL}, backoff(cb, attempts));
    df_action_suspend(a);
    return 0;
}

/* {"callback": input.callback, "data": input.data} (§7.1) */
static int callback_run(df_action *a, const df_event *ev)
{
    json_t *in = df_action_input(a);

    (void)ev;
    return deliver(a, json_pack("{s:O?, s:O?}", "callback", json_object_get(in, "callback"), "data",
                                json_object_get(in, "data")));
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
static int batch_callback_run(df_action *a, const df_event *ev)
{
    json_t *in = df_action_input(a), *results = json_object_get(in, "results");
    json_t *list = json_array(), *callback;
    const char *key;

    (void)ev;
    json_object_foreach(json_object_get(in, "targets"), key, callback)
    {
        json_t *data = json_object_get(results, key);
        if (data != NULL)
            json_array_append_new(list,
                                  json_pack("{s:O, s:O}", "callback", callback, "data", data));
    }
    return deliver(a, json_pack("{s:o}", "callbacks", list));
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
    cb->first_retry = cfg->first_retry > 0 ? cfg->first_retry : 1;
    cb->max_retry = cfg->max_retry > 0 ? cfg->max_retry : 300;
    cb->give_up_after = cfg->give_up_after > 0 ? cfg->give_up_after : 86400;
    /* a POST a crash interrupted is sent again: Foreman takes a repeated callback (doc/recovery.md)
     */
    cb->cls = (struct df_action_class){
        .name = DF_CALLBACK_CLASS, .run = callback_run, .flags = DF_ACTION_RERUNNABLE, .data = cb};
    cb->batch_cls = (struct df_action_class){.name = DF_BATCH_CALLBACK_CLASS,
                                             .plan = batch_callback_plan,
                                             .run = batch_callback_run,
                                             .flags = DF_ACTION_RERUNNABLE,
                                             .data = cb};
    return cb;
}

void df_callback_free(df_callback *cb)
{
    if (cb == NULL)
        return;
    free(cb->url);
    free(cb->cert_file);
    free(cb->key_file);
    free(cb->ca_file);
    free(cb);
    df_http_global_cleanup();
}

const struct df_action_class *df_callback_class(df_callback *cb)
{
    return &cb->cls;
}

const struct df_action_class *df_callback_batch_class(df_callback *cb)
{
    return &cb->batch_cls;
}
