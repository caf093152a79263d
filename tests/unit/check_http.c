/* The HTTP layer on loopback: routing, parameters, bodies, limits, errors, request ids, auth hook.
 */
#include <arpa/inet.h>
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "httputil.h"
#include "proxy/http.h"
#include "suite.h"

#define TASK "00000000-0000-4000-8000-000000000001"

static atomic_int handled; /* handler calls */

static int echo(void *state, const struct sp_request *req, struct sp_response *res)
{
    const char *q = req->query(req, "state");
    const char *h = req->header(req, "X-Test");

    atomic_fetch_add(&handled, 1);
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

    atomic_store(&handled, 0);
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
        call("GET", "/dynflow/tasks/" TASK "/status?state=running", NULL, "X-Test: yes");

    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(field(&r, "state"), "dynflow");
    ck_assert_str_eq(field(&r, "query"), "running");
    ck_assert_str_eq(field(&r, "header"), "yes");
    ck_assert_str_eq(field(&r, "remote"), "127.0.0.1");
    ck_assert_ptr_nonnull(strstr(r.body, "\"params\":[\"" TASK "\"]"));
    r = call("POST", "/dynflow/tasks/" TASK "/status", "{\"a\":1}",
             "Content-Type: application/json");
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
    r = call("DELETE", "/dynflow/tasks/" TASK "/status", NULL, NULL);
    ck_assert_int_eq(r.status, 405);
    ck_assert_str_eq(field(&r, "error"), "DELETE is not allowed on /dynflow/tasks/" TASK
                                         "/status (allowed: GET, POST)");
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    r = call("POST", "/dynflow/tasks/" TASK "/status", big, NULL);
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

/* A request as sent, over a socket of its own (curl would normalise it); the status, and the body
 * into body.  The server closes the connection after it (Connection: close, or an error). */
static long raw(const char *request, size_t len, char *body, size_t body_len)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct timeval tv = {.tv_sec = 10};
    static char in[65536];
    size_t got = 0;
    ssize_t n;
    long status = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    const char *start;

    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ck_assert_int_eq(send(fd, request, len, MSG_NOSIGNAL), (ssize_t)len);
    while (got + 1 < sizeof(in) && (n = recv(fd, in + got, sizeof(in) - 1 - got, 0)) > 0)
        got += (size_t)n;
    close(fd);
    in[got] = '\0';
    sscanf(in, "HTTP/1.%*c %ld", &status);
    start = strstr(in, "\r\n\r\n");
    snprintf(body, body_len, "%s", start != NULL ? start + 4 : "");
    return status;
}

static long raw_str(const char *request, char *body, size_t body_len)
{
    return raw(request, strlen(request), body, body_len);
}

/* {"error": …} holding part, or the test fails. */
static void assert_error(const char *body, const char *part)
{
    json_t *j = json_loads(body, 0, NULL);
    const char *e = json_string_value(json_object_get(j, "error"));

    ck_assert_msg(e != NULL, "not a JSON error: '%s'", body);
    ck_assert_msg(strstr(e, part) != NULL, "'%s' does not say '%s'", e, part);
    json_decref(j);
}

/* A %00 used to cut the path (POST /dynflow/tasks/%00/status ran POST /dynflow/tasks), a %2F to
 * split a segment; every segment is decoded on its own and must be text. */
START_TEST(path_segments_are_text)
{
    static const struct {
        const char *path, *says;
    } cases[] = {
        {"/dynflow/tasks/%00/status", "segment 3 ('%00') holds a NUL byte"},
        {"/dynflow/tasks%00/x", "segment 2 ('tasks%00') holds a NUL byte"},
        {"/dynflow/tasks/" TASK "%2Fstatus", "holds a '/'"},
        {"/dynflow/tasks/%ff/status", "holds bytes that are not UTF-8"},
        {"/dynflow/tasks/%c0%af/status", "holds bytes that are not UTF-8"},    /* overlong '/' */
        {"/dynflow/tasks/%ed%a0%80/status", "holds bytes that are not UTF-8"}, /* surrogate */
        {"/dynflow/tasks/a%0ab/status", "holds a control character"},
        {"/dynflow/%2e%2e/dynflow/tasks", "holds a dot segment"},
        {"/dynflow/tasks/%zz/status", "holds a '%' without two hexadecimal digits"},
        {"/dynflow/tasks/%4/status", "holds a '%' without two hexadecimal digits"},
    };
    char req[512], body[4096];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(req, sizeof(req),
                 "POST %s HTTP/1.1\r\nHost: x\r\nX-Allow: 1\r\nContent-Length: 2\r\n"
                 "Connection: close\r\n\r\n{}",
                 cases[i].path);
        ck_assert_msg(raw_str(req, body, sizeof(body)) == 400, "%s: %s", cases[i].path, body);
        assert_error(body, cases[i].says);
    }
    ck_assert_int_eq(atomic_load(&handled), 0);
    /* what is text passes, decoded: UTF-8, escaped reserved characters, '+' as itself */
    struct reply r =
        call("GET", "/dynflow/tasks/" TASK "/st%61tus?state=%C3%A9t%C3%A9+x", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(field(&r, "query"), "\xc3\xa9t\xc3\xa9 x");
    r = call("GET", "/dynflow/tasks/caf%C3%A9/status", NULL, NULL);
    ck_assert_int_eq(r.status, 404);
    ck_assert_str_eq(field(&r, "error"),
                     "no route for GET /dynflow/tasks/caf\xc3\xa9/status: 'caf\xc3\xa9' is not a "
                     "task id (a UUID)");
}
END_TEST

/* A ":task_id" segment takes UUIDs, the ids the API issues; anything else is no route. */
START_TEST(task_ids_are_uuids)
{
    struct reply r = call("GET", "/dynflow/tasks/abc/status", NULL, NULL);

    ck_assert_int_eq(r.status, 404);
    ck_assert_str_eq(field(&r, "error"),
                     "no route for GET /dynflow/tasks/abc/status: 'abc' is not a task id (a UUID)");
    r = call("POST", "/dynflow/tasks/" TASK "x/status", "{}", NULL);
    ck_assert_int_eq(r.status, 404);
    r = call("GET", "/dynflow/tasks/abc/nothing", NULL, NULL); /* no route anyway */
    ck_assert_str_eq(field(&r, "error"), "no route for GET /dynflow/tasks/abc/nothing");
    ck_assert_int_eq(atomic_load(&handled), 0);
}
END_TEST

/* Decoded query arguments are text too (count?state=%ff was an empty 200). */
START_TEST(query_arguments_are_text)
{
    static const char *const queries[] = {"state=%ff", "state=a%00b", "%fe=1", "x&state=%c3"};
    char path[128];

    for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
        snprintf(path, sizeof(path), "/dynflow/tasks/" TASK "/status?%s", queries[i]);
        struct reply r = call("GET", path, NULL, NULL);
        ck_assert_msg(r.status == 400, "%s: %ld %s", queries[i], r.status, r.body);
        assert_error(r.body, "is not UTF-8 text without NUL bytes once percent-decoded");
    }
    ck_assert_int_eq(atomic_load(&handled), 0);
}
END_TEST

/* What libmicrohttpd would answer itself with an HTML body, or not at all, gets JSON where a check
 * of ours comes first (doc/http-input.md). */
START_TEST(framing_and_limits_are_json)
{
    static char req[SP_MAX_PATH + 512];
    char body[4096], path[SP_MAX_PATH + 16];
    static const struct {
        const char *headers;
        long status;
        const char *says;
    } cases[] = {
        {"Content-Length: 2\r\nContent-Length: 40\r\n", 400,
         "two different Content-Length headers: '2' and '40'"},
        {"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", 400,
         "both Transfer-Encoding and Content-Length are set"},
        {"Transfer-Encoding: gzip\r\n", 501, "Transfer-Encoding 'gzip' is not supported"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(req, sizeof(req),
                 "POST /dynflow/tasks HTTP/1.1\r\nHost: x\r\nX-Allow: 1\r\n%sConnection: "
                 "close\r\n\r\n{}",
                 cases[i].headers);
        ck_assert_int_eq(raw_str(req, body, sizeof(body)), cases[i].status);
        assert_error(body, cases[i].says);
    }
    /* the same Content-Length twice is one length */
    ck_assert_int_eq(raw_str("POST /dynflow/tasks HTTP/1.1\r\nHost: x\r\nX-Allow: 1\r\n"
                             "Content-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n"
                             "\r\n{}",
                             body, sizeof(body)),
                     200);
    ck_assert_int_eq(atomic_load(&handled), 1);
    /* a path longer than we take, but not than the connection's memory holds */
    memset(path, 'a', sizeof(path) - 1);
    path[0] = '/';
    path[sizeof(path) - 1] = '\0';
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
    ck_assert_int_eq(raw_str(req, body, sizeof(body)), 414);
    assert_error(body, "bytes long, more than 8192");
    /* a method that is not text still gets a JSON error */
    ck_assert_int_eq(raw_str("G\xffT /features HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                             body, sizeof(body)),
                     405);
    assert_error(body, "G?T is not allowed on /features");
}
END_TEST

/* What libmicrohttpd finds wrong before any callback of ours runs, it answers itself, with its own
 * HTML body (doc/http-input.md lists them): the status is right, nothing is handled, and the
 * server goes on serving. */
START_TEST(libmicrohttpd_answers_itself)
{
    static const struct {
        const char *head, *rest;
        long status;
    } cases[] = {
        {"GET /features HTTP/2.0\r\n", "\r\n", 505},
        {"GET /features HTTP/0.9\r\n", "\r\n", 505},
        {"GET /features\r\n", "\r\n", 400},
        {"POST /dynflow/tasks HTTP/1.1\r\n", "Content-Length: -1\r\n\r\n", 400},
        {"POST /dynflow/tasks HTTP/1.1\r\n", "Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
        {"GET /features HTTP/1.1\r\n", "No-Colon\r\n\r\n", 400},
        {"GET /features HTTP/1.1\r\n", "X-Big: %s\r\n\r\n", 431},
        {"GET /%s HTTP/1.1\r\n", "\r\n", 414},
    };
    size_t big = 40000;
    char *filler = malloc(big + 1), *req = malloc(2 * big), *head = malloc(big + 64), body[4096];

    memset(filler, 'a', big);
    filler[big] = '\0';
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(head, big + 64, cases[i].head, filler);
        int n = snprintf(req, 2 * big, "%sHost: x\r\nX-Allow: 1\r\nConnection: close\r\n", head);
        snprintf(req + n, 2 * big - (size_t)n, cases[i].rest, filler);
        ck_assert_msg(raw_str(req, body, sizeof(body)) == cases[i].status, "%.60s: %s", req, body);
    }
    free(filler);
    free(req);
    free(head);
    ck_assert_int_eq(atomic_load(&handled), 0);
    ck_assert_int_eq(call("GET", "/features", NULL, NULL).status, 200);
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
    tcase_add_test(tc, path_segments_are_text);
    tcase_add_test(tc, task_ids_are_uuids);
    tcase_add_test(tc, query_arguments_are_text);
    tcase_add_test(tc, framing_and_limits_are_json);
    tcase_add_test(tc, libmicrohttpd_answers_itself);
    tcase_add_test(tc, streamed_bodies);
    suite_add_tcase(s, tc);
    failed = run_suite(s);
    curl_global_cleanup();
    return failed;
}
