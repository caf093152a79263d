/*
 * One request of the HTTPS client as a libcurl easy handle, for those who
 * drive libcurl themselves (http/async.c's multi handle).  The options — TLS
 * 1.2 or newer, the peer and its name verified, the client certificate,
 * timeouts, the reply collected into a struct df_http_reply — are the ones
 * df_http_perform uses: it is begin, curl_easy_perform, end.
 */
#ifndef DF_HTTP_EXCHANGE_H
#define DF_HTTP_EXCHANGE_H

#include <curl/curl.h>

#include "http/client.h"

struct df_http_exchange {
    CURL *c;
    struct curl_slist *headers;
    struct df_http_reply *rep; /* borrowed: filled as the answer comes, and by end */
    char errbuf[CURL_ERROR_SIZE];
};

/* Prepares x->c for req (borrowed until end: url, body and headers are not copied) and
 * clears rep.  -1 with rep->failure and rep->error when no handle could be made. */
int df_http_exchange_begin(struct df_http_exchange *x, const struct df_http_tls *tls,
                           const struct df_http_request *req, struct df_http_reply *rep);
/* Completes rep from libcurl's result rc and gives the handle back (removed from any multi
 * handle first); 0 when an answer came, as df_http_perform. */
int df_http_exchange_end(struct df_http_exchange *x, CURLcode rc);

#endif
