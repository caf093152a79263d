/*
 * Fuzz target: a request path as sent goes through the host's decoding and route matcher
 * (proxy/router.c) against the /dynflow routes of both modes; whatever comes in, a decoded path
 * has the segments that were sent, each text, and a ":task_id" value is a UUID
 * (doc/http-input.md).  The first byte picks the method.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/router.h"
#include "util/uuid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int none(void *state, const struct sp_request *req, struct sp_response *res)
{
    (void)state;
    (void)req;
    (void)res;
    return 0;
}

/* module/dynflow.c's patterns: internal mode, forward mode, a plugin's prefix. */
static const struct sp_route internal[] = {
    {"POST", "/tasks/status", none, 0},
    {"POST", "/tasks/launch", none, 0},
    {"POST", "/tasks", none, 0},
    {"POST", "/tasks/:task_id/cancel", none, 0},
    {"GET", "/tasks/:task_id/status", none, 0},
    {"GET", "/tasks/count", none, 0},
    {"POST", "/tasks/:task_id/update", none, 0},
    {"POST", "/tasks/:task_id/done", none, 0},
    {"GET", "/console/:id", none, 0},
    {"POST", "/console/:id/skip/:step", none, 0},
    {NULL, NULL, NULL, 0},
};
static const struct sp_route forward[] = {
    {"POST", "/tasks/:task_id/done", none, 0},
    {"GET", "/*", none, 0},
    {"POST", "/*", none, 0},
    {NULL, NULL, NULL, 0},
};

static size_t slashes(const char *s, size_t n)
{
    size_t count = 0;

    for (size_t i = 0; i < n; i++)
        count += s[i] == '/';
    return count;
}

/* The decoded path has the segments that were sent, each text without control characters. */
static void check_decoded(const char *raw, size_t n, const char *path)
{
    if (path[0] != '/' || slashes(raw, n) != slashes(path, strlen(path)))
        abort();
    for (const char *p = path; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            abort();
    if (!sp_text_valid(path, strlen(path)))
        abort();
}

static void check_match(const struct sp_match *m)
{
    for (size_t i = 0; i < m->n_params; i++)
        if (m->params[i][0] == '\0' || strchr(m->params[i], '/') != NULL)
            abort();
    if (m->route != NULL && strstr(m->route->pattern, ":task_id") != NULL &&
        (m->n_params == 0 || !df_uuid_valid(m->params[0])))
        abort();
    if (!sp_text_valid(m->why, strlen(m->why)))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const methods[] = {"GET", "POST", "DELETE"};
    const struct sp_mount mounts[] = {
        {"/dynflow", internal, NULL, 1},
        {"/forward", forward, NULL, 1},
        {"/ssh", forward, NULL, 2},
    };
    char why[256] = "", *out;
    struct sp_match m;

    if (size == 0)
        return 0;
    out = malloc(size);
    if (sp_path_decode((const char *)data + 1, size - 1, out, why, sizeof(why)) == 0) {
        check_decoded((const char *)data + 1, size - 1, out);
        for (unsigned listener = 1; listener <= 2; listener++) {
            sp_route_match(mounts, 3, listener, methods[data[0] % 3], out, &m);
            check_match(&m);
        }
    } else if (why[0] == '\0' || !sp_text_valid(why, strlen(why))) {
        abort(); /* the reason goes into a JSON error */
    }
    free(out);
    return 0;
}
