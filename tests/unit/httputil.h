/* A libcurl client for the HTTP-level suites (header-only: each suite is one program). */
#ifndef HTTPUTIL_H
#define HTTPUTIL_H

#include <check.h>
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static unsigned port;

struct reply {
    long status;
    char body[4096];
    size_t len;
    char request_id[64];
    char content_type[128];
};

static inline size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    struct reply *r = ud;
    size_t take = size * n;

    if (r->len + take >= sizeof(r->body))
        take = sizeof(r->body) - 1 - r->len;
    memcpy(r->body + r->len, data, take);
    r->len += take;
    r->body[r->len] = '\0';
    return size * n;
}

static inline size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    struct reply *r = ud;

    if (strncasecmp(data, "X-Request-Id: ", 14) == 0)
        snprintf(r->request_id, sizeof(r->request_id), "%.*s", (int)strcspn(data + 14, "\r\n"),
                 data + 14);
    if (strncasecmp(data, "Content-Type: ", 14) == 0)
        snprintf(r->content_type, sizeof(r->content_type), "%.*s", (int)strcspn(data + 14, "\r\n"),
                 data + 14);
    return size * n;
}

static inline struct reply call(const char *method, const char *path, const char *body,
                                const char *hdr)
{
    struct reply r = {0};
    struct curl_slist *headers = hdr ? curl_slist_append(NULL, hdr) : NULL;
    char url[1024];
    CURL *c = curl_easy_init();

    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_cleanup(c);
    curl_slist_free_all(headers);
    return r;
}

/* A request over HTTPS (body: NULL for none), trusting certs/ca.pem, as client NAME
 * (certs/NAME.pem and .key; NULL: no certificate), offering at most TLS max_tls (0: any) and,
 * when suite is not NULL, only that OpenSSL cipher suite (TLS 1.2).  status 0: the handshake
 * failed. */
static inline struct reply call_tls_suite(const char *method, const char *path, const char *body,
                                          const char *certs, const char *name, long max_tls,
                                          const char *suite)
{
    char url[1024], cert[600], key[600], ca[600];
    struct reply r = {0};
    CURL *c = curl_easy_init();

    snprintf(url, sizeof(url), "https://127.0.0.1:%u%s", port, path);
    snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    if (name != NULL) {
        snprintf(cert, sizeof(cert), "%s/%s.pem", certs, name);
        snprintf(key, sizeof(key), "%s/%s.key", certs, name);
        curl_easy_setopt(c, CURLOPT_SSLCERT, cert);
        curl_easy_setopt(c, CURLOPT_SSLKEY, key);
    }
    if (max_tls != 0)
        curl_easy_setopt(c, CURLOPT_SSLVERSION, CURL_SSLVERSION_TLSv1_0 | max_tls);
    if (suite != NULL) {
        curl_easy_setopt(c, CURLOPT_SSLVERSION,
                         CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_TLSv1_2);
        curl_easy_setopt(c, CURLOPT_SSL_CIPHER_LIST, suite);
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_cleanup(c);
    return r;
}

static inline struct reply call_tls(const char *method, const char *path, const char *body,
                                    const char *certs, const char *name, long max_tls)
{
    return call_tls_suite(method, path, body, certs, name, max_tls, NULL);
}

static inline const char *field(const struct reply *r, const char *key)
{
    static char out[1024];
    json_t *j = json_loads(r->body, 0, NULL);

    ck_assert_msg(j != NULL, "not JSON: %s", r->body);
    snprintf(out, sizeof(out), "%s", json_string_value(json_object_get(j, key)) ?: "(null)");
    json_decref(j);
    return out;
}

#endif
