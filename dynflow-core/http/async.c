#include "http/async.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/exchange.h"
#include "util/util.h"

/* One request: a copy of what was asked, and its exchange once on the wire. */
struct job {
    struct job *next;
    char *method, *url, *body;
    size_t body_len;
    char **headers; /* NULL-terminated copies */
    double timeout;
    bool no_proxy;
    df_http_done done;
    void *ud;
    struct df_http_exchange x;
    struct df_http_reply rep;
};

struct df_http_async {
    struct df_http_tls tls; /* owned copies */
    unsigned max;           /* requests on the wire at most */
    CURLM *multi;
    pthread_t thread;
    pthread_mutex_t lock; /* the lists, the counts, stopping */
    struct job *queued, *queued_tail;
    struct job *active; /* on the wire (in the multi handle) */
    size_t n_active;
    bool stopping;
};

static char *dup_or_null(const char *s)
{
    return s != NULL ? df_strdup(s) : NULL;
}

static struct job *job_new(const struct df_http_request *req, df_http_done done, void *ud)
{
    struct job *j = df_calloc(1, sizeof(*j));
    size_t n = 0;

    j->method = df_strdup(req->method);
    j->url = df_strdup(req->url);
    j->body = df_malloc(req->body_len + 1);
    if (req->body_len > 0)
        memcpy(j->body, req->body, req->body_len);
    j->body[req->body_len] = '\0';
    j->body_len = req->body_len;
    while (req->headers != NULL && req->headers[n] != NULL)
        n++;
    j->headers = df_calloc(n + 1, sizeof(*j->headers));
    for (size_t i = 0; i < n; i++)
        j->headers[i] = df_strdup(req->headers[i]);
    j->timeout = req->timeout;
    j->no_proxy = req->no_proxy;
    j->done = done;
    j->ud = ud;
    return j;
}

/* Tells the caller (outside the lock) and frees the job. */
static void job_finish(struct job *j)
{
    j->done(j->ud, &j->rep);
    free(j->rep.body);
    for (char **h = j->headers; *h != NULL; h++)
        free(*h);
    free(j->headers);
    free(j->method);
    free(j->url);
    free(j->body);
    free(j);
}

static void unlink_active(df_http_async *a, struct job *j)
{
    struct job **p = &a->active;

    while (*p != j)
        p = &(*p)->next;
    *p = j->next;
    a->n_active--;
}

/* Puts queued requests on the wire while there is room; returns those that could not start.
 * Called with the lock held. */
static struct job *start_queued(df_http_async *a)
{
    struct job *failed = NULL;

    while (a->queued != NULL && a->n_active < a->max) {
        struct job *j = a->queued;
        struct df_http_request req = {
            j->method,  j->url,     j->body, j->body_len, (const char *const *)j->headers,
            j->timeout, j->no_proxy};
        a->queued = j->next;
        if (a->queued == NULL)
            a->queued_tail = NULL;
        if (df_http_exchange_begin(&j->x, &a->tls, &req, &j->rep) < 0) {
            j->next = failed;
            failed = j;
            continue;
        }
        curl_easy_setopt(j->x.c, CURLOPT_PRIVATE, j);
        curl_multi_add_handle(a->multi, j->x.c);
        j->next = a->active;
        a->active = j;
        a->n_active++;
    }
    return failed;
}

/* Hands every finished transfer to its caller. */
static void collect_finished(df_http_async *a)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(a->multi, &left)) != NULL) {
        struct job *j;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&j);
        curl_multi_remove_handle(a->multi, j->x.c);
        df_http_exchange_end(&j->x, msg->data.result);
        pthread_mutex_lock(&a->lock);
        unlink_active(a, j);
        pthread_mutex_unlock(&a->lock);
        job_finish(j);
    }
}

static void *loop(void *arg)
{
    df_http_async *a = arg;
    int running;

    for (;;) {
        struct job *failed;
        pthread_mutex_lock(&a->lock);
        if (a->stopping) {
            pthread_mutex_unlock(&a->lock);
            return NULL;
        }
        failed = start_queued(a);
        pthread_mutex_unlock(&a->lock);
        while (failed != NULL) {
            struct job *next = failed->next;
            job_finish(failed);
            failed = next;
        }
        curl_multi_perform(a->multi, &running);
        collect_finished(a);
        /* woken early by df_http_async_send and df_http_async_free */
        curl_multi_poll(a->multi, NULL, 0, 1000, NULL);
    }
}

df_http_async *df_http_async_new(const struct df_http_tls *tls, unsigned max_connections,
                                 df_error *err)
{
    df_http_async *a = df_calloc(1, sizeof(*a));
    int rc;

    a->tls = (struct df_http_tls){dup_or_null(tls->ca_file), dup_or_null(tls->cert_file),
                                  dup_or_null(tls->key_file)};
    a->max = max_connections > 0 ? max_connections : 1;
    pthread_mutex_init(&a->lock, NULL);
    a->multi = curl_multi_init();
    if (a->multi == NULL) {
        df_errorf(err, -ENOMEM, "cannot create a libcurl multi handle");
        df_http_async_free(a);
        return NULL;
    }
    /* the connection cache holds what may be on the wire, no more */
    curl_multi_setopt(a->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)a->max);
    curl_multi_setopt(a->multi, CURLMOPT_MAXCONNECTS, (long)a->max);
    if ((rc = pthread_create(&a->thread, NULL, loop, a)) != 0) {
        df_errorf(err, -rc, "cannot start the HTTP client's thread: %s", strerror(rc));
        curl_multi_cleanup(a->multi);
        a->multi = NULL;
        df_http_async_free(a);
        return NULL;
    }
    return a;
}

int df_http_async_send(df_http_async *a, const struct df_http_request *req, df_http_done done,
                       void *ud)
{
    struct job *j;

    pthread_mutex_lock(&a->lock);
    if (a->stopping) {
        pthread_mutex_unlock(&a->lock);
        return -ECANCELED;
    }
    j = job_new(req, done, ud);
    if (a->queued_tail != NULL)
        a->queued_tail->next = j;
    else
        a->queued = j;
    a->queued_tail = j;
    pthread_mutex_unlock(&a->lock);
    curl_multi_wakeup(a->multi);
    return 0;
}

static void cancel(struct job *j)
{
    if (j->rep.body == NULL)
        j->rep.body = df_strdup("");
    j->rep.failure = DF_HTTP_CANCELLED;
    snprintf(j->rep.error, sizeof(j->rep.error), "the HTTP client stopped before an answer came");
    job_finish(j);
}

void df_http_async_stop(df_http_async *a)
{
    struct job *active, *queued, *j;

    pthread_mutex_lock(&a->lock);
    if (a->stopping || a->multi == NULL) {
        a->stopping = true;
        pthread_mutex_unlock(&a->lock);
        return;
    }
    a->stopping = true;
    pthread_mutex_unlock(&a->lock);
    curl_multi_wakeup(a->multi);
    pthread_join(a->thread, NULL);
    pthread_mutex_lock(&a->lock);
    active = a->active;
    queued = a->queued;
    a->active = a->queued = a->queued_tail = NULL;
    a->n_active = 0;
    pthread_mutex_unlock(&a->lock);
    while ((j = active) != NULL) {
        active = j->next;
        curl_multi_remove_handle(a->multi, j->x.c);
        df_http_exchange_end(&j->x, CURLE_ABORTED_BY_CALLBACK);
        cancel(j);
    }
    while ((j = queued) != NULL) {
        queued = j->next;
        cancel(j);
    }
}

void df_http_async_free(df_http_async *a)
{
    if (a == NULL)
        return;
    df_http_async_stop(a);
    curl_multi_cleanup(a->multi);
    pthread_mutex_destroy(&a->lock);
    free((char *)a->tls.ca_file);
    free((char *)a->tls.cert_file);
    free((char *)a->tls.key_file);
    free(a);
}
