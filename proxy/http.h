/*
 * The one HTTP server of the project: libmicrohttpd listeners, request
 * bodies with a size limit, routing to mounted modules, authorization hook,
 * JSON errors, request ids and an access-log hook.
 */
#ifndef SP_HTTP_H
#define SP_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "proxy/router.h"
#include "proxy/yaml.h"

struct sp_server;

struct sp_server_hooks {
    void *ud;
    /* 0 to allow; else the HTTP status (403) with why filled. NULL: allow all.  cert_rejected:
     * why the client's certificate does not verify against the CA (req has no CN then), or NULL. */
    unsigned (*authorize)(void *ud, const struct sp_request *req, const char *cert_rejected,
                          unsigned auth, char *why, size_t len);
    /* After each request. */
    void (*access)(void *ud, const struct sp_request *req, unsigned status, double ms);
};

/* What one client may hold and how long it may take (doc/http-server.md); each at least 1. */
struct sp_server_limits {
    unsigned max_connections; /* per listener; more wait in the listen backlog */
    unsigned per_address;     /* open connections of one client address, all listeners */
    unsigned header_timeout;  /* seconds from connect (or the previous answer) to a complete
                               * request header, TLS handshake included */
    size_t body_memory;       /* bytes of request bodies in flight, all connections */
};
#define SP_SERVER_LIMITS_DEFAULT                                                                   \
    {                                                                                              \
        1000, 100, 10, (size_t)64 << 20                                                            \
    }

/* With SP_SERVER_LIMITS_DEFAULT. */
struct sp_server *sp_server_new(size_t max_body, const struct sp_server_hooks *hooks);
/* Before the first listener. */
void sp_server_set_limits(struct sp_server *srv, const struct sp_server_limits *limits);
/* Replaces the mounted modules (copied); requests in flight keep the old table. */
void sp_server_mount(struct sp_server *srv, const struct sp_mount *mounts, size_t n);
/* TLS of an HTTPS listener: PEM files; a client certificate is asked for and verified against
 * the CA, and its CN and serial reach the handlers.  TLS 1.2 and newer only. */
struct sp_tls {
    const char *cert_file, *key_file, *ca_file;
    const char *priorities; /* GnuTLS priority string; NULL: NORMAL minus TLS 1.0 and 1.1 */
};

/* Starts a listener on bind:port (port 0: any), HTTPS when tls is given; *bound gets the port. */
int sp_server_listen(struct sp_server *srv, const char *bind, unsigned port,
                     const struct sp_tls *tls, unsigned *bound, struct sp_error *err);
void sp_server_free(struct sp_server *srv);

/* A JSON {"error": message} response. */
void sp_response_error(struct sp_response *res, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A response with the JSON of v (steals v). */
void sp_response_json(struct sp_response *res, unsigned status, json_t *v);

#endif
