/*
 * A fake Foreman for the callback tests: a real HTTPS server (the project's
 * own) that requires a client certificate from the test CA and records the
 * callbacks it receives (header-only).
 */
#ifndef FOREMAN_H
#define FOREMAN_H

#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "proxy/auth.h"
#include "proxy/http.h"
#include "proxy/settings.h"
#include "suite.h"

#define FOREMAN_MAX_BODIES 16

static char bodies[FOREMAN_MAX_BODIES][16384], client_cns[FOREMAN_MAX_BODIES][64];
static atomic_int received, failures_left; /* failures_left: answer 500 that many times first */
static struct sp_server *foreman;
static struct sp_settings foreman_settings;
static unsigned foreman_port;

static inline int foreman_callback(void *state, const struct sp_request *req,
                                   struct sp_response *res)
{
    int n = atomic_fetch_add(&received, 1);

    (void)state;
    if (n < FOREMAN_MAX_BODIES) {
        snprintf(bodies[n], sizeof(bodies[n]), "%.*s", (int)req->body_len, req->body);
        snprintf(client_cns[n], sizeof(client_cns[n]), "%s", req->peer_cert_cn);
    }
    if (atomic_fetch_sub(&failures_left, 1) > 0) {
        sp_response_error(res, 500, "Foreman is restarting");
        return 0;
    }
    sp_response_json(res, 200, json_pack("{s:s}", "message", "processing"));
    return 0;
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
    sp_server_free(foreman);
    sp_settings_free(&foreman_settings);
}

#endif
