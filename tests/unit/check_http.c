/* The HTTP layer on loopback: routing, parameters, bodies, limits, errors, request ids, auth hook.
 */
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httputil.h"
#include "proxy/http.h"
#include "suite.h"

static int echo(void *state, const struct sp_request *req, struct sp_response *res)
{
    const char *q = req->query(req, "state");
    const char *h = req->header(req, "X-Test");

    sp_response_json(
        res, 200,
        json_pack("{s:s, s:s, s:s?, s:s?, s:s#, s:[s*], s:s}", "state", (char *)state, "method",
                  req->method, "query", q, "header", h, "body", req->body, (int)req->body_len,
                  "params", req->n_params > 0 ? req->params[0] : NULL, "remote", req->remote_addr));
    return 0;
}

static int failing(void *state, const struct sp_request *req, struct sp_response *res)
{
    (void)state;
    (void)req;
    (void)res;
    return -1;
}

static const struct sp_route routes[] = {
    {"GET", "/tasks/:task_id/status", echo, SP_AUTH_NONE},
    {"POST", "/tasks/:task_id/status", echo, SP_AUTH_NONE},
    {"POST", "/tasks", echo, SP_AUTH_ANY},
    {"GET", "/broken", failing, SP_AUTH_NONE},
    {NULL, NULL, NULL, 0},
};

static const struct sp_route root_routes[] = {
    {"GET", "/features", echo, SP_AUTH_NONE},
    {NULL, NULL, NULL, 0},
};

static unsigned deny_secured(void *ud, const struct sp_request *req, const char *cert_rejected,
                             unsigned auth, char *why, size_t len)
{
    (void)ud;
    (void)cert_rejected;
    if (auth == SP_AUTH_NONE || (req->header(req, "X-Allow") != NULL))
        return 0;
    snprintf(why, len, "Untrusted client %s attempted to access %s", req->remote_addr, req->path);
    return 403;
}

static struct sp_server *srv;

static void setup(void)
{
    struct sp_server_hooks hooks = {.authorize = deny_secured};
    struct sp_mount mounts[] = {
        {"/dynflow", routes, (void *)"dynflow", 1},
        {"", root_routes, (void *)"root", 1},
    };
    struct sp_error err;

    srv = sp_server_new(64, &hooks);
    sp_server_mount(srv, mounts, 2);
    ck_assert_msg(sp_server_listen(srv, "127.0.0.1", 0, NULL, &port, &err) == 0, "%s", err.text);
    ck_assert_int_gt(port, 0);
}

static void teardown(void)
{
    sp_server_free(srv);
}

START_TEST(routes_and_params)
{
    struct reply r =
        call("GET", "/dynflow/tasks/abc-123/status?state=running", NULL, "X-Test: yes");

    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(field(&r, "state"), "dynflow");
    ck_assert_str_eq(field(&r, "query"), "running");
    ck_assert_str_eq(field(&r, "header"), "yes");
    ck_assert_str_eq(field(&r, "remote"), "127.0.0.1");
    ck_assert_ptr_nonnull(strstr(r.body, "\"params\":[\"abc-123\"]"));
    r = call("POST", "/dynflow/tasks/abc/status", "{\"a\":1}", "Content-Type: application/json");
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(field(&r, "body"), "{\"a\":1}");
    r = call("GET", "/features", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(field(&r, "state"), "root");
}
END_TEST

START_TEST(errors_are_json)
{
    char big[200];
    struct reply r = call("GET", "/dynflow/nothing", NULL, NULL);

    ck_assert_int_eq(r.status, 404);
    ck_assert_str_eq(field(&r, "error"), "no route for GET /dynflow/nothing");
    r = call("DELETE", "/dynflow/tasks/x/status", NULL, NULL);
    ck_assert_int_eq(r.status, 405);
    ck_assert_str_eq(field(&r, "error"),
                     "DELETE is not allowed on /dynflow/tasks/x/status (allowed: GET, POST)");
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    r = call("POST", "/dynflow/tasks/x/status", big, NULL);
    ck_assert_int_eq(r.status, 413);
    ck_assert_str_eq(field(&r, "error"), "the request body is larger than 64 bytes");
    r = call("GET", "/dynflow/broken", NULL, NULL);
    ck_assert_int_eq(r.status, 500);
    ck_assert_str_eq(field(&r, "error"), "GET /dynflow/broken failed");
    r = call("GET", "/dynflowx/tasks/a/status", NULL, NULL);
    ck_assert_int_eq(r.status, 404);
}
END_TEST

START_TEST(authorization_and_request_ids)
{
    struct reply r = call("POST", "/dynflow/tasks", "{}", NULL);

    ck_assert_int_eq(r.status, 403);
    ck_assert_str_eq(field(&r, "error"),
                     "Untrusted client 127.0.0.1 attempted to access /dynflow/tasks");
    ck_assert_int_eq(strlen(r.request_id), 36); /* a new UUID */
    r = call("POST", "/dynflow/tasks", "{}", "X-Allow: 1");
    ck_assert_int_eq(r.status, 200);
    r = call("GET", "/features", NULL, "X-Request-Id: req-42");
    ck_assert_str_eq(r.request_id, "req-42");
}
END_TEST

/* ---- streamed bodies (ABI 1.3): the host pulls them from the handler's reader ------------- */

#define STREAM_BYTES (3u << 20)

struct pattern {
    size_t sent, fail_after; /* fail_after 0: never */
    int *freed;
};

static long pattern_read(void *reader, char *buf, size_t max)
{
    struct pattern *p = reader;
    size_t n = 0;

    if (p->fail_after > 0 && p->sent >= p->fail_after)
        return -EIO;
    for (; n < max && n < 1000 && p->sent < STREAM_BYTES; n++, p->sent++)
        buf[n] = (char)('a' + p->sent % 26);
    return (long)n;
}

static void pattern_free(void *reader)
{
    struct pattern *p = reader;

    ++*p->freed;
    free(p);
}

static int freed_readers;

static int streamed(void *state, const struct sp_request *req, struct sp_response *res)
{
    struct pattern *p = calloc(1, sizeof(*p));

    (void)req;
    p->fail_after = state != NULL ? 100000 : 0;
    p->freed = &freed_readers;
    res->status = 200;
    res->content_type = "text/plain";
    res->read = pattern_read;
    res->reader = p;
    res->free_reader = pattern_free;
    return 0;
}

struct received {
    size_t len;
    bool in_order;
};

static size_t on_pattern(char *data, size_t size, size_t n, void *ud)
{
    struct received *r = ud;

    for (size_t i = 0; i < size * n; i++, r->len++)
        r->in_order = r->in_order && data[i] == (char)('a' + r->len % 26);
    return size * n;
}

static CURLcode get_pattern(unsigned at, const char *path, struct received *r)
{
    char url[128];
    CURL *c = curl_easy_init();
    CURLcode rc;

    *r = (struct received){.in_order = true};
    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", at, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_pattern);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    return rc;
}

/* A reader's body arrives whole and in order; a failing reader cuts the reply short (the client
 * sees an error, not a complete reply); the reader is freed once either way. */
START_TEST(streamed_bodies)
{
    static const struct sp_route stream_routes[] = {
        {"GET", "/ok", streamed, SP_AUTH_NONE},
        {NULL, NULL, NULL, 0},
    };
    static const struct sp_route failing_routes[] = {
        {"GET", "/fails", streamed, SP_AUTH_NONE},
        {NULL, NULL, NULL, 0},
    };
    struct sp_mount mounts[] = {
        {"/s", stream_routes, NULL, 1},
        {"/f", failing_routes, (void *)"fail", 1},
    };
    struct sp_server *own = sp_server_new(64, NULL);
    struct sp_error err;
    struct received r;
    unsigned at;

    freed_readers = 0;
    sp_server_mount(own, mounts, 2);
    ck_assert_msg(sp_server_listen(own, "127.0.0.1", 0, NULL, &at, &err) == 0, "%s", err.text);
    ck_assert_int_eq(get_pattern(at, "/s/ok", &r), CURLE_OK);
    ck_assert_uint_eq(r.len, STREAM_BYTES);
    ck_assert(r.in_order);
    ck_assert_int_ne(get_pattern(at, "/f/fails", &r), CURLE_OK);
    ck_assert_uint_ge(r.len, 100000);
    ck_assert_uint_lt(r.len, STREAM_BYTES);
    sp_server_free(own);
    ck_assert_int_eq(freed_readers, 2);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("http");
    int failed;

    curl_global_init(CURL_GLOBAL_ALL);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, routes_and_params);
    tcase_add_test(tc, errors_are_json);
    tcase_add_test(tc, authorization_and_request_ids);
    tcase_add_test(tc, streamed_bodies);
    suite_add_tcase(s, tc);
    failed = run_suite(s);
    curl_global_cleanup();
    return failed;
}
