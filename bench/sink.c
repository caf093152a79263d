/*
 * bench/sink: a stand-in Foreman for benchmarks.  It accepts callbacks on
 * POST /foreman_tasks/api/tasks/callback (single or batched, §7) and answers
 * GET /count with {"callbacks": N, "failed": M} (failed: exit_status not 0); the first
 * failed ones go to stderr, for the benchmark's log.
 * sink PORT
 */
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"

static atomic_int callbacks, failed;

struct upload {
    char *data;
    size_t len;
};

static void count(const json_t *one)
{
    const json_t *status = json_object_get(json_object_get(one, "data"), "exit_status");

    atomic_fetch_add(&callbacks, 1);
    if (!json_is_integer(status) || json_integer_value(status) != 0) {
        if (atomic_fetch_add(&failed, 1) < 5) {
            char *text = json_dumps(one, JSON_COMPACT);
            fprintf(stderr, "sink: failed callback: %.4000s\n", text ? text : "?");
            free(text);
        }
    }
}

static void count_body(const struct upload *u)
{
    json_t *j = json_loadb(u->data ? u->data : "", u->len, 0, NULL), *list, *one;
    size_t i;

    list = json_object_get(j, "callbacks");
    if (list != NULL)
        json_array_foreach(list, i, one) count(one);
    else if (json_object_get(j, "callback") != NULL)
        count(j);
    json_decref(j);
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *text)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ok;

    MHD_add_response_header(r, "Content-Type", "application/json");
    ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **req_cls)
{
    struct upload *u = *req_cls;
    char text[128];

    (void)cls, (void)version;
    if (u == NULL) {
        *req_cls = calloc(1, sizeof(struct upload));
        return *req_cls != NULL ? MHD_YES : MHD_NO;
    }
    if (*upload_size > 0) {
        char *grown = realloc(u->data, u->len + *upload_size);
        if (grown == NULL)
            return MHD_NO;
        memcpy(grown + u->len, upload, *upload_size);
        u->data = grown;
        u->len += *upload_size;
        *upload_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, "GET") == 0 && strcmp(url, "/count") == 0) {
        snprintf(text, sizeof(text), "{\"callbacks\":%d,\"failed\":%d}", atomic_load(&callbacks),
                 atomic_load(&failed));
        return reply(c, 200, text);
    }
    if (strcmp(method, "POST") == 0 && strcmp(url, "/foreman_tasks/api/tasks/callback") == 0) {
        count_body(u);
        return reply(c, 200, "{\"message\":\"processing\"}");
    }
    return reply(c, 404, "{\"error\":\"not found\"}");
}

static void done(void *cls, struct MHD_Connection *c, void **req_cls,
                 enum MHD_RequestTerminationCode why)
{
    struct upload *u = *req_cls;

    (void)cls, (void)c, (void)why;
    if (u != NULL)
        free(u->data);
    free(u);
}

int main(int argc, char **argv)
{
    return serve(argc, argv, answer, done);
}
