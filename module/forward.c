#include "forward.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct df_forward {
    atomic_int refs;
    const struct sp_host_api *host;
    char *url; /* scheme://authority of :core_url: (URI.join drops its path, §3.1) */
    double timeout;
    struct df_http_tls tls;
};

static char *dup_or_null(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

/* 127.0.0.0/8, [::1] and localhost (authority: host[:port]): where a plaintext core may be. */
static bool loopback(const char *authority, size_t len)
{
    size_t host_len = authority[0] == '[' ? strcspn(authority, "]") + 1 : strcspn(authority, ":");
    char host[64];
    struct in_addr a;

    if (host_len > len || host_len >= sizeof(host) ||
        (host_len < len && authority[host_len] != ':'))
        return false;
    snprintf(host, sizeof(host), "%.*s", (int)host_len, authority);
    if (strcasecmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0)
        return true;
    return inet_pton(AF_INET, host, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

/* Checks :core_url: and keeps its scheme and authority. */
static int parse_url(df_forward *f, const char *url, char *err, size_t errlen)
{
    bool tls = strncmp(url, "https://", 8) == 0;
    const char *authority = url + (tls ? 8 : 7);
    size_t len = strcspn(authority, "/?#");

    if (!tls && strncmp(url, "http://", 7) != 0) {
        snprintf(err, errlen, "settings.d/dynflow.yml: :core_url: '%s' is not an http(s) URL", url);
        return -EINVAL;
    }
    if (len == 0) {
        snprintf(err, errlen, "settings.d/dynflow.yml: :core_url: '%s' has no host", url);
        return -EINVAL;
    }
    if (!tls && !loopback(authority, len)) {
        snprintf(err, errlen,
                 "settings.d/dynflow.yml: :core_url: '%s' is plaintext HTTP to a host that is "
                 "not loopback; use https://",
                 url);
        return -EINVAL;
    }
    if (!tls)
        f->host->log(f->host->ctx, SP_LOG_WARNING,
                     "forward mode: the core at %s is reached without TLS (loopback only)", url);
    f->url = malloc(len + 9);
    if (f->url != NULL)
        snprintf(f->url, len + 9, "%s%.*s", tls ? "https://" : "http://", (int)len, authority);
    return f->url != NULL ? 0 : -ENOMEM;
}

df_forward *df_forward_new(const struct sp_host_api *host, const json_t *settings,
                           const struct df_http_tls *tls, char *err, size_t errlen)
{
    const char *url = json_string_value(json_object_get(settings, "core_url"));
    const json_t *timeout = json_object_get(settings, "core_timeout");
    df_forward *f;

    if (url == NULL) {
        snprintf(err, errlen, "settings.d/dynflow.yml: :external_core: true needs :core_url:");
        return NULL;
    }
    if (timeout != NULL && !(json_is_number(timeout) && json_number_value(timeout) > 0)) {
        snprintf(err, errlen,
                 "settings.d/dynflow.yml: :core_timeout: must be a number of seconds above 0");
        return NULL;
    }
    f = calloc(1, sizeof(*f));
    if (f == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&f->refs, 1);
    f->host = host;
    f->timeout = timeout != NULL ? json_number_value(timeout) : 60;
    f->tls = (struct df_http_tls){dup_or_null(tls->ca_file), dup_or_null(tls->cert_file),
                                  dup_or_null(tls->key_file)};
    if (parse_url(f, url, err, errlen) < 0) {
        df_forward_unref(f);
        return NULL;
    }
    return f;
}

df_forward *df_forward_ref(df_forward *f)
{
    if (f != NULL)
        atomic_fetch_add(&f->refs, 1);
    return f;
}

void df_forward_unref(df_forward *f)
{
    if (f == NULL || atomic_fetch_sub(&f->refs, 1) != 1)
        return;
    free(f->url);
    free((char *)f->tls.ca_file);
    free((char *)f->tls.cert_file);
    free((char *)f->tls.key_file);
    free(f);
}

const char *df_forward_url(const df_forward *f)
{
    return f->url;
}

/* "Name: value" of an incoming header, or of fallback when there is none; false: neither. */
static bool relay_header(const struct sp_request *req, const char *name, const char *as,
                         const char *fallback, char *out, size_t len)
{
    const char *v = req->header(req, name);

    if (v == NULL)
        v = fallback;
    if (v != NULL)
        snprintf(out, len, "%s: %s", as, v);
    return v != NULL;
}

/* Appends path percent-encoded again (the host hands it over decoded): RFC 3986's pchar and
 * '/' stay as they are. */
static void encode_path(char *out, const char *path)
{
    static const char hex[] = "0123456789ABCDEF";

    for (; *path != '\0'; path++) {
        unsigned char ch = (unsigned char)*path;
        if (isalnum(ch) || strchr("-._~!$&'()*+,;=:@/", ch) != NULL) {
            *out++ = (char)ch;
        } else {
            *out++ = '%';
            *out++ = hex[ch >> 4];
            *out++ = hex[ch & 15];
        }
    }
    *out = '\0';
}

/* The target: the core's URL, the path and, for GET, the query (§3.1). */
static char *target(const df_forward *f, const char *prefix, const struct sp_request *req)
{
    bool get = strcmp(req->method, "GET") == 0;
    size_t qlen = get && req->query_string != NULL ? req->query_string(req, NULL, 0) : 0;
    size_t base = strlen(f->url) + strlen(prefix);
    size_t n = base + 3 * strlen(req->path) + qlen + 2;
    char *url = malloc(n);

    if (url == NULL)
        return NULL;
    snprintf(url, n, "%s%s", f->url, prefix);
    encode_path(url + base, req->path);
    if (qlen > 0) {
        strcat(url, "?");
        req->query_string(req, url + strlen(url), qlen + 1);
    }
    return url;
}

static int error_json(struct sp_response *res, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int error_json(struct sp_response *res, unsigned status, const char *fmt, ...)
{
    char msg[768];
    va_list ap;

    json_t *body;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    body = json_pack("{s:s}", "error", msg);
    res->status = status;
    res->content_type = "application/json";
    res->body = json_dumps(body, JSON_COMPACT);
    res->body_len = res->body != NULL ? strlen(res->body) : 0;
    res->free_body = free;
    json_decref(body);
    return 0;
}

/* The core's answer as ours: status, body, and the content type kept after the body in the
 * same allocation (it must live until the host has sent the headers). */
static int answer(struct sp_response *res, struct df_http_reply *rep)
{
    size_t ct = strlen(rep->content_type);
    char *body = realloc(rep->body, rep->body_len + ct + 2);

    if (body == NULL) {
        free(rep->body);
        return error_json(res, 500, "out of memory for the core's answer");
    }
    memcpy(body + rep->body_len + 1, rep->content_type, ct + 1);
    res->status = (unsigned)rep->status;
    res->body = body;
    res->body_len = rep->body_len;
    res->content_type = ct > 0 ? body + rep->body_len + 1 : "application/json";
    res->free_body = free;
    res->location = rep->location[0] != '\0' ? strdup(rep->location) : NULL;
    return 0;
}

/* No answer: 504 after :core_timeout:, 502 otherwise; TLS failures are errors in the log. */
static int unreachable(df_forward *f, const struct sp_request *req, struct df_http_reply *rep,
                       struct sp_response *res)
{
    f->host->log(f->host->ctx, rep->failure == DF_HTTP_TLS ? SP_LOG_ERROR : SP_LOG_WARNING,
                 "[%s] %s %s: %s with the core at %s failed: %s", req->request_id, req->method,
                 req->path, rep->failure == DF_HTTP_TLS ? "TLS" : "the connection", f->url,
                 rep->error);
    free(rep->body);
    return error_json(res, rep->failure == DF_HTTP_TIMEOUT ? 504 : 502,
                      "core at %s unreachable: %s", f->url, rep->error);
}

int df_forward_relay(df_forward *f, const char *prefix, const struct sp_request *req,
                     struct sp_response *res)
{
    char accept[256], type[256], host[300], auth[4096], rid[128];
    const char *headers[6] = {accept, type};
    size_t n = 2;
    struct df_http_reply rep;
    char *url = target(f, prefix, req);

    if (url == NULL)
        return error_json(res, 500, "out of memory for %s %s", req->method, req->path);
    relay_header(req, "Accept", "Accept", "application/json,version=2", accept, sizeof(accept));
    relay_header(req, "Content-Type", "Content-Type", "application/json", type, sizeof(type));
    if (relay_header(req, "Host", "X-Forwarded-For", NULL, host, sizeof(host)))
        headers[n++] = host;
    if (relay_header(req, "Authorization", "Authorization", NULL, auth, sizeof(auth)))
        headers[n++] = auth;
    snprintf(rid, sizeof(rid), "X-Request-Id: %s", req->request_id);
    headers[n++] = rid;
    headers[n] = NULL;
    int rc = df_http_perform(&f->tls,
                             &(struct df_http_request){.method = req->method,
                                                       .url = url,
                                                       .body = req->body,
                                                       .body_len = req->body_len,
                                                       .headers = headers,
                                                       .timeout = f->timeout,
                                                       .no_proxy = true},
                             &rep);
    free(url);
    return rc == 0 ? answer(res, &rep) : unreachable(f, req, &rep, res);
}

json_t *df_forward_features(df_forward *f, char *err, size_t errlen)
{
    static const char *const headers[] = {"Accept: application/json", NULL};
    char url[600];
    struct df_http_reply rep;
    json_t *features = NULL;

    snprintf(url, sizeof(url), "%s/v2/features", f->url);
    if (df_http_perform(&f->tls,
                        &(struct df_http_request){.method = "GET",
                                                  .url = url,
                                                  .headers = headers,
                                                  .timeout = f->timeout,
                                                  .no_proxy = true},
                        &rep) < 0)
        snprintf(err, errlen, "%s", rep.error);
    else if (rep.status != 200)
        snprintf(err, errlen, "GET %s answered %ld: %.200s", url, rep.status, rep.body);
    else {
        features = json_loads(rep.body, 0, NULL); /* json_is_object() is a macro */
        if (!json_is_object(features))
            snprintf(err, errlen, "GET %s answered something that is not a JSON object", url);
    }
    free(rep.body);
    if (json_is_object(features))
        return features;
    json_decref(features);
    return NULL;
}
