/*
 * The /dynflow task API (reference/protocol.md §2, §6): request validation,
 * launchers, one-time passwords, JSON responses.  It knows nothing of HTTP
 * servers: a handler takes a small request and fills a status and a JSON body.
 */
#ifndef DF_API_H
#define DF_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "dynflow/plugin.h"

typedef struct df_api df_api;

struct df_api_request {
    const char *task_id; /* the ":task_id" of the path, or NULL */
    const char *body;    /* not NUL-terminated */
    size_t body_len;
    const char *state;         /* ?state= of /tasks/count, or NULL */
    const char *host;          /* Host header */
    const char *forwarded_for; /* X-Forwarded-For header */
    const char *authorization; /* Authorization header */
    const char *request_id;
    bool https;
};

struct df_api_response {
    unsigned status;
    json_t *body;           /* new reference; NULL: an empty body (or the stream) */
    df_json_stream *stream; /* the status routes: the body to stream instead (doc/output.md) */
};

/* Registers the API's own action classes (the batch parent) and attaches its claims on task ids
 * (api/claims.h); before df_world_start(). */
int df_api_register_classes(df_world *w, df_error *err);
df_api *df_api_new(df_world *w);
void df_api_free(df_api *api);
/* Registers an operation (strings copied); operations are listed in registration order. */
int df_api_register_operation(df_api *api, const struct df_plugin_operation *op, df_error *err);
/* New reference: the operation names, sorted (for /v2/features capabilities). */
json_t *df_api_capabilities(df_api *api);
/* A new one-time password for a task: 32 hexadecimal characters, replacing any earlier one. */
void df_api_generate_otp(df_api *api, const char *task_id, char otp[33]);

void df_api_launch(df_api *api, const struct df_api_request *req, struct df_api_response *res);
void df_api_trigger(df_api *api, const struct df_api_request *req, struct df_api_response *res);
void df_api_status(df_api *api, const struct df_api_request *req, struct df_api_response *res);
void df_api_statuses(df_api *api, const struct df_api_request *req, struct df_api_response *res);
void df_api_bulk_status(df_api *api, const struct df_api_request *req, struct df_api_response *res);
void df_api_cancel(df_api *api, const struct df_api_request *req, struct df_api_response *res);
void df_api_count(df_api *api, const struct df_api_request *req, struct df_api_response *res);
void df_api_operations(df_api *api, const struct df_api_request *req, struct df_api_response *res);
/* POST /tasks/:id/update and /done: done clears the token. */
void df_api_event(df_api *api, const struct df_api_request *req, bool done,
                  struct df_api_response *res);

#endif
