/* Who may call a route (reference/protocol.md §1.5, §3.2): trusted hosts, client certificates,
 * and for the standalone core its own certificate's serial. */
#include "proxy/auth.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "proxy/log.h"

/* The client's name over HTTP: reverse DNS, forward-verified when asked to. */
static void client_name(const char *addr, bool forward_verify, char *out, size_t len)
{
    struct sockaddr_storage ss = {0};
    struct addrinfo *ai = NULL, hints = {.ai_socktype = SOCK_STREAM};
    socklen_t sl;
    bool verified = !forward_verify;

    snprintf(out, len, "%s", addr);
    if (inet_pton(AF_INET, addr, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
        ss.ss_family = AF_INET;
        sl = sizeof(struct sockaddr_in);
    } else if (inet_pton(AF_INET6, addr, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
        ss.ss_family = AF_INET6;
        sl = sizeof(struct sockaddr_in6);
    } else {
        return;
    }
    char name[NI_MAXHOST];
    if (getnameinfo((struct sockaddr *)&ss, sl, name, sizeof(name), NULL, 0, NI_NAMEREQD) != 0)
        return;
    if (forward_verify && getaddrinfo(name, NULL, &hints, &ai) == 0) {
        for (struct addrinfo *p = ai; p != NULL && !verified; p = p->ai_next) {
            char back[INET6_ADDRSTRLEN];
            const void *a = p->ai_family == AF_INET
                                ? (const void *)&((struct sockaddr_in *)p->ai_addr)->sin_addr
                                : (const void *)&((struct sockaddr_in6 *)p->ai_addr)->sin6_addr;
            verified = inet_ntop(p->ai_family, a, back, sizeof(back)) && strcmp(back, addr) == 0;
        }
        freeaddrinfo(ai);
    }
    if (verified)
        snprintf(out, len, "%s", name);
}

static bool listed(json_t *list, const char *name)
{
    json_t *v;
    size_t i;

    json_array_foreach(list, i, v) if (strcasecmp(json_string_value(v), name) == 0) return true;
    return false;
}

/* A 403: why is the reply; the log line names the check that failed and the client. */
static unsigned refused(const struct sp_request *req, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static unsigned refused(const struct sp_request *req, const char *fmt, ...)
{
    char check[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(check, sizeof(check), fmt, ap);
    va_end(ap);
    sp_log(SP_LOG_WARNING, req->request_id, "refused %s %s from %s: %s", req->method, req->path,
           req->remote_addr, check);
    return 403;
}

/* No certificate the CA signed: none at all, or one that does not verify. */
static unsigned no_certificate(const struct sp_request *req, const char *cert_rejected,
                               const char *reply, char *why, size_t len)
{
    snprintf(why, len, "%s", reply);
    if (cert_rejected != NULL)
        return refused(req, "the client certificate does not verify against :ssl_ca_file: (%s)",
                       cert_rejected);
    return refused(req, "no client certificate");
}

/* name (lower-cased here) in :trusted_hosts:, or 403. */
static unsigned trusted_host(const struct sp_request *req, json_t *trusted, char *name, char *why,
                             size_t len)
{
    for (char *p = name; *p != '\0'; p++)
        *p = (char)tolower((unsigned char)*p);
    if (listed(trusted, name))
        return 0;
    snprintf(why, len,
             "Untrusted client %s attempted to access %s. Check :trusted_hosts: in settings.yml",
             name, req->path);
    return refused(req, "%s %s is not in :trusted_hosts:",
                   req->https ? "client certificate CN" : "client", name);
}

/* The standalone core over HTTPS: a CN in :trusted_hosts:, or without them the core's own
 * certificate serial (reference/protocol.md §3.2).  Over HTTP it checks nothing: it listens on
 * loopback unless told otherwise. */
static unsigned core_client(const struct sp_settings *s, const struct sp_request *req,
                            const char *cert_rejected, char *why, size_t len)
{
    json_t *trusted = sp_setting(s, "trusted_hosts");
    char name[NI_MAXHOST];

    if (!req->https)
        return 0;
    if (req->peer_cert_cn == NULL)
        return no_certificate(req, cert_rejected, "No client SSL certificate supplied", why, len);
    if (trusted != NULL) {
        snprintf(name, sizeof(name), "%s", req->peer_cert_cn);
        return trusted_host(req, trusted, name, why, len);
    }
    if (s->core_serial[0] != '\0' && strcmp(req->peer_cert_serial, s->core_serial) == 0)
        return 0;
    snprintf(why, len, "SSL certificate with unexpected serial supplied");
    return refused(req, "client certificate CN %s has serial %s, the core accepts only %s",
                   req->peer_cert_cn, req->peer_cert_serial,
                   s->core_serial[0] ? s->core_serial : "none (no certificate configured)");
}

unsigned sp_authorize(void *ud, const struct sp_request *req, const char *cert_rejected,
                      unsigned auth, char *why, size_t len)
{
    const struct sp_settings *s = ud;
    json_t *trusted = sp_setting(s, "trusted_hosts");
    char name[NI_MAXHOST];
    unsigned status;

    if ((auth & SP_AUTH_TOKEN) && req->header(req, "Authorization") != NULL)
        return 0; /* the module checks the token itself */
    if ((auth & SP_AUTH_ANY) == 0)
        return 0;
    if (s->core)
        return core_client(s, req, cert_rejected, why, len);
    if ((auth & SP_AUTH_TRUSTED_HOSTS) && trusted != NULL) {
        if (req->https && req->peer_cert_cn == NULL)
            return no_certificate(req, cert_rejected, "could not read client cert from environment",
                                  why, len);
        if (req->https)
            snprintf(name, sizeof(name), "%s", req->peer_cert_cn);
        else
            client_name(req->remote_addr, json_is_true(sp_setting(s, "forward_verify")), name,
                        sizeof(name));
        if ((status = trusted_host(req, trusted, name, why, len)) != 0)
            return status;
    }
    if ((auth & SP_AUTH_CLIENT_CERT) && req->https && req->peer_cert_cn == NULL)
        return no_certificate(req, cert_rejected, "No client SSL certificate supplied", why, len);
    return 0;
}
