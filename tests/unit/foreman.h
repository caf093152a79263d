/*
 * A fake Foreman for the callback tests: a real HTTPS server (the project's
 * own) that requires a client certificate from the test CA and records the
 * callbacks it receives (header-only).  It can be down (503 to everything),
 * fail a number of times (500), or hang: accept and read requests and answer
 * none until foreman_hang(false).
 */
#ifndef FOREMAN_H
#define FOREMAN_H

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/auth.h"
#include "proxy/http.h"
#include "proxy/settings.h"
#include "suite.h"

#define FOREMAN_MAX_BODIES 16
#define FOREMAN_MAX_TASKS  4096

static char bodies[FOREMAN_MAX_BODIES][16384], client_cns[FOREMAN_MAX_BODIES][64];
static atomic_int received, failures_left; /* failures_left: answer 500 that many times first */
static atomic_bool foreman_down;           /* answer 503 to everything */
/* the task id of every callback answered 200, in order (a batch: one per entry) */
static char delivered_ids[FOREMAN_MAX_TASKS][48];
static atomic_int n_delivered;
/* hanging: requests held unanswered now, the most held at once, and the task id of each one
 * held (a client that gives up on one does not know whether Foreman took it) */
static pthread_mutex_t hang_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hang_wake = PTHREAD_COND_INITIALIZER;
static bool hanging;
static int held, held_peak, n_held_ids;
static char held_ids[FOREMAN_MAX_TASKS][48];
static struct sp_server *foreman;
static struct sp_settings foreman_settings;
static unsigned foreman_port;

static inline void foreman_hang(bool on)
{
    pthread_mutex_lock(&hang_lock);
    hanging = on;
    pthread_cond_broadcast(&hang_wake);
    pthread_mutex_unlock(&hang_lock);
}

/* The task id of a single callback, or of each entry of a batch (§7). */
static inline void foreman_each_task(const char *body, void (*fn)(const char *task_id))
{
    json_t *j = json_loads(body, 0, NULL), *one;
    size_t i;

    if (json_object_get(j, "callbacks") == NULL)
        fn(json_string_value(json_object_get(json_object_get(j, "callback"), "task_id")));
    json_array_foreach(json_object_get(j, "callbacks"), i, one)
        fn(json_string_value(json_object_get(json_object_get(one, "callback"), "task_id")));
    json_decref(j);
}

static inline void note_held(const char *task_id)
{
    if (task_id != NULL && n_held_ids < FOREMAN_MAX_TASKS)
        snprintf(held_ids[n_held_ids++], sizeof(held_ids[0]), "%s", task_id);
}

static inline void note_delivered(const char *task_id)
{
    int n = atomic_fetch_add(&n_delivered, 1);

    if (task_id != NULL && n < FOREMAN_MAX_TASKS)
        snprintf(delivered_ids[n], sizeof(delivered_ids[0]), "%s", task_id);
}

/* Holds the request while Foreman hangs. */
static inline void foreman_hold(const char *body)
{
    pthread_mutex_lock(&hang_lock);
    if (hanging) {
        foreman_each_task(body, note_held);
        if (++held > held_peak)
            held_peak = held;
        while (hanging)
            pthread_cond_wait(&hang_wake, &hang_lock);
        held--;
    }
    pthread_mutex_unlock(&hang_lock);
}

static inline int foreman_callback(void *state, const struct sp_request *req,
                                   struct sp_response *res)
{
    char *body = strndup(req->body != NULL ? req->body : "", req->body_len);
    int n;

    (void)state;
    foreman_hold(body);
    n = atomic_fetch_add(&received, 1);
    if (n < FOREMAN_MAX_BODIES) {
        snprintf(bodies[n], sizeof(bodies[n]), "%s", body);
        snprintf(client_cns[n], sizeof(client_cns[n]), "%s", req->peer_cert_cn);
    }
    if (atomic_load(&foreman_down)) {
        sp_response_error(res, 503, "Foreman is down");
    } else if (atomic_fetch_sub(&failures_left, 1) > 0) {
        sp_response_error(res, 500, "Foreman is restarting");
    } else {
        foreman_each_task(body, note_delivered);
        sp_response_json(res, 200, json_pack("{s:s}", "message", "processing"));
    }
    free(body);
    return 0;
}

/* How many callbacks for a task Foreman answered with 200. */
static inline int foreman_delivered(const char *task_id)
{
    int n = 0, all = atomic_load(&n_delivered);

    for (int i = 0; i < all && i < FOREMAN_MAX_TASKS; i++)
        n += strcmp(delivered_ids[i], task_id) == 0;
    return n;
}

/* Whether a request for the task was ever held unanswered. */
static inline bool foreman_held(const char *task_id)
{
    bool hit = false;

    pthread_mutex_lock(&hang_lock);
    for (int i = 0; i < n_held_ids && !hit; i++)
        hit = strcmp(held_ids[i], task_id) == 0;
    pthread_mutex_unlock(&hang_lock);
    return hit;
}

static inline int foreman_held_now(bool peak)
{
    int n;

    pthread_mutex_lock(&hang_lock);
    n = peak ? held_peak : held;
    pthread_mutex_unlock(&hang_lock);
    return n;
}

/* Starts Foreman on 127.0.0.1 with server.pem from dir (made by scratch_certs()). */
static inline void foreman_start(const char *dir)
{
    static const struct sp_route routes[] = {
        {"POST", "/foreman_tasks/api/tasks/callback", foreman_callback, SP_AUTH_CLIENT_CERT},
        {NULL, NULL, NULL, 0},
    };
    char cert[600], key[600], ca[600], yml[600];
    struct sp_mount mount = {"", routes, NULL, 2};
    struct sp_error err;

    snprintf(yml, sizeof(yml), "%s/foreman.yml", dir);
    /* not dir/settings.d: the proxy's own there would make Foreman a proxy or a core */
    scratch_write(dir, "foreman.yml", ":settings_directory: /nonexistent\n");
    ck_assert_int_eq(sp_settings_load(yml, &foreman_settings, &err), 0);
    snprintf(cert, sizeof(cert), "%s/server.pem", dir);
    snprintf(key, sizeof(key), "%s/server.key", dir);
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    foreman = sp_server_new(
        1 << 20, &(struct sp_server_hooks){.ud = &foreman_settings, .authorize = sp_authorize});
    sp_server_mount(foreman, &mount, 1);
    ck_assert_msg(
        sp_server_listen(foreman, "127.0.0.1", 0,
                         &(struct sp_tls){.cert_file = cert, .key_file = key, .ca_file = ca},
                         &foreman_port, &err) == 0,
        "%s", err.text);
    atomic_store(&received, 0);
    atomic_store(&failures_left, 0);
    atomic_store(&foreman_down, false);
    atomic_store(&n_delivered, 0);
    held = held_peak = n_held_ids = 0;
    hanging = false;
}

/* New reference: the callback Foreman received for one of its tasks, or NULL. */
static inline json_t *callback_for(const char *foreman_task)
{
    for (int i = 0; i < atomic_load(&received) && i < FOREMAN_MAX_BODIES; i++) {
        json_t *j = json_loads(bodies[i], 0, NULL);
        const char *t =
            json_string_value(json_object_get(json_object_get(j, "callback"), "task_id"));
        if (t != NULL && strcmp(t, foreman_task) == 0)
            return j;
        json_decref(j);
    }
    return NULL;
}

static inline void foreman_stop(void)
{
    foreman_hang(false); /* the server waits for its handlers */
    sp_server_free(foreman);
    sp_settings_free(&foreman_settings);
}

#endif
