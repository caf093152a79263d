#include "http/client.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/exchange.h"
#include "util/util.h"

/* More than the largest status document the engine writes (64 MiB of output). */
#define MAX_REPLY ((size_t)256 << 20)

/* Idle clients, kept between requests so that their connections (and TLS sessions) are
 * reused instead of a new handshake per request, whichever thread sends next.  A client
 * serves one request at a time: a thread takes one, sends, and gives it back.  The last
 * one given back is the next one taken, its connection the warmest. */
#define IDLE_MAX 16

static pthread_mutex_t idle_lock = PTHREAD_MUTEX_INITIALIZER;
static CURL *idle[IDLE_MAX];
static size_t n_idle;
static unsigned users; /* df_http_global_init calls not yet cleaned up */

static CURL *take_client(void)
{
    CURL *c = NULL;

    pthread_mutex_lock(&idle_lock);
    if (n_idle > 0)
        c = idle[--n_idle];
    pthread_mutex_unlock(&idle_lock);
    return c != NULL ? c : curl_easy_init();
}

static void give_back(CURL *c)
{
    curl_easy_reset(c); /* options (and the pointers they hold) go, live connections stay */
    pthread_mutex_lock(&idle_lock);
    if (n_idle < IDLE_MAX) {
        idle[n_idle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&idle_lock);
    curl_easy_cleanup(c); /* a no-op on NULL */
}

void df_http_global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    pthread_mutex_lock(&idle_lock);
    users++;
    pthread_mutex_unlock(&idle_lock);
}

void df_http_global_cleanup(void)
{
    pthread_mutex_lock(&idle_lock);
    if (users > 0 && --users == 0)
        while (n_idle > 0)
            curl_easy_cleanup(idle[--n_idle]);
    pthread_mutex_unlock(&idle_lock);
    curl_global_cleanup();
}

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    struct df_http_reply *rep = ud;
    size_t take = size * n;

    if (rep->body_len + take > MAX_REPLY)
        return 0; /* libcurl stops with a write error */
    rep->body = df_realloc(rep->body, rep->body_len + take + 1);
    memcpy(rep->body + rep->body_len, data, take);
    rep->body_len += take;
    rep->body[rep->body_len] = '\0';
    return take;
}

/* Keeps a header's value (without CR LF) when the line is "name: value". */
static void keep_header(const char *line, size_t len, const char *name, char *out, size_t cap)
{
    size_t n = strlen(name), v;

    if (len <= n + 1 || strncasecmp(line, name, n) != 0 || line[n] != ':')
        return;
    for (v = n + 1; v < len && line[v] == ' '; v++)
        ;
    len -= v;
    while (len > 0 && (line[v + len - 1] == '\r' || line[v + len - 1] == '\n'))
        len--;
    snprintf(out, cap, "%.*s", (int)len, line + v);
}

static size_t on_header(char *line, size_t size, size_t n, void *ud)
{
    struct df_http_reply *rep = ud;

    keep_header(line, size * n, "Content-Type", rep->content_type, sizeof(rep->content_type));
    keep_header(line, size * n, "Location", rep->location, sizeof(rep->location));
    return size * n;
}

static enum df_http_failure failure_of(CURLcode rc)
{
    switch (rc) {
        case CURLE_OPERATION_TIMEDOUT:
            return DF_HTTP_TIMEOUT;
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CIPHER:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_ISSUER_ERROR:
        case CURLE_SSL_INVALIDCERTSTATUS:
        case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
            return DF_HTTP_TLS;
        default:
            return DF_HTTP_UNREACHABLE;
    }
}

static void set_tls(CURL *c, const struct df_http_tls *tls)
{
    curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (tls == NULL)
        return;
    if (tls->ca_file != NULL)
        curl_easy_setopt(c, CURLOPT_CAINFO, tls->ca_file);
    if (tls->cert_file != NULL && tls->key_file != NULL) {
        curl_easy_setopt(c, CURLOPT_SSLCERT, tls->cert_file);
        curl_easy_setopt(c, CURLOPT_SSLKEY, tls->key_file);
    }
}

int df_http_exchange_begin(struct df_http_exchange *x, const struct df_http_tls *tls,
                           const struct df_http_request *req, struct df_http_reply *rep)
{
    long timeout_ms = (long)((req->timeout > 0 ? req->timeout : 60) * 1000);
    CURL *c;

    memset(rep, 0, sizeof(*rep));
    rep->body = df_strdup("");
    x->rep = rep;
    x->headers = NULL;
    x->errbuf[0] = '\0';
    x->c = c = take_client();
    if (c == NULL) {
        rep->failure = DF_HTTP_UNREACHABLE;
        snprintf(rep->error, sizeof(rep->error), "cannot create an HTTP client");
        return -1;
    }
    for (const char *const *h = req->headers; h != NULL && *h != NULL; h++)
        x->headers = curl_slist_append(x->headers, *h);
    x->headers = curl_slist_append(x->headers, "Expect:"); /* no 100-continue round trip */
    curl_easy_setopt(c, CURLOPT_URL, req->url);
    if (strcmp(req->method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body != NULL ? req->body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, x->headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, rep);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, rep);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 10000 ? timeout_ms : 10000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (req->no_proxy)
        curl_easy_setopt(c, CURLOPT_PROXY, "");
    set_tls(c, tls);
    return 0;
}

int df_http_exchange_end(struct df_http_exchange *x, CURLcode rc)
{
    struct df_http_reply *rep = x->rep;

    curl_easy_getinfo(x->c, CURLINFO_RESPONSE_CODE, &rep->status);
    curl_easy_setopt(x->c, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(x->headers);
    give_back(x->c);
    x->c = NULL;
    x->headers = NULL;
    if (rc == CURLE_OK)
        return 0;
    rep->failure = failure_of(rc);
    snprintf(rep->error, sizeof(rep->error), "%s",
             x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
    return -1;
}

int df_http_perform(const struct df_http_tls *tls, const struct df_http_request *req,
                    struct df_http_reply *rep)
{
    struct df_http_exchange x;

    if (df_http_exchange_begin(&x, tls, req, rep) < 0)
        return -1;
    return df_http_exchange_end(&x, curl_easy_perform(x.c));
}
