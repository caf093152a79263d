/*
 * The project's one HTTPS client (libcurl, OpenSSL): callbacks to Foreman and
 * the forward-mode relay to the core.  df_http_perform blocks its caller;
 * http/async.h sends from a thread of its own with the same options.  Easy handles are pooled
 * between requests, so their connections and TLS sessions are reused (keep-alive) by whichever
 * thread sends next.  TLS 1.2 or newer, the peer verified against the CA with its host name
 * checked, and the client certificate when one is configured.
 */
#ifndef DF_HTTP_CLIENT_H
#define DF_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

struct df_http_tls {
    const char *ca_file;   /* NULL: the system's CAs */
    const char *cert_file; /* the client certificate and its key: both or neither */
    const char *key_file;
};

struct df_http_request {
    const char *method; /* "GET" or "POST" */
    const char *url;
    const char *body; /* POST; borrowed */
    size_t body_len;
    const char *const *headers; /* "Name: value", NULL-terminated; may be NULL */
    double timeout;             /* seconds for the whole exchange; 0: 60 */
    bool no_proxy;              /* never through a proxy of the environment (https_proxy …) */
};

/* Why no answer came. */
enum df_http_failure {
    DF_HTTP_ANSWERED = 0,
    DF_HTTP_UNREACHABLE, /* refused, reset, name not found, bad answer */
    DF_HTTP_TIMEOUT,
    DF_HTTP_TLS,       /* the handshake or a certificate check failed */
    DF_HTTP_CANCELLED, /* an asynchronous client stopped before the answer came */
};

struct df_http_reply {
    enum df_http_failure failure;
    long status;
    char content_type[128]; /* "" when the answer had none */
    char location[512];     /* the Location header, or "" */
    char *body;             /* NUL-terminated; free() it */
    size_t body_len;
    char error[256]; /* with a failure: libcurl's reason ("SSL certificate problem: …") */
};

/* Call while the process has one thread (libcurl's global init); counted. */
void df_http_global_init(void);
void df_http_global_cleanup(void);

/* Sends req and fills rep; 0 when an answer came (any status), else -1 with rep->failure
 * and rep->error.  rep->body is set in both cases. */
int df_http_perform(const struct df_http_tls *tls, const struct df_http_request *req,
                    struct df_http_reply *rep);

#endif
