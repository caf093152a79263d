/* Who may call a route (reference/protocol.md §1.5): trusted hosts and client certificates. */
#include "proxy/auth.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

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

unsigned sp_authorize(void *ud, const struct sp_request *req, unsigned auth, char *why, size_t len)
{
    const struct sp_settings *s = ud;
    json_t *trusted = sp_setting(s, "trusted_hosts");
    char name[NI_MAXHOST];

    if ((auth & SP_AUTH_TOKEN) && req->header(req, "Authorization") != NULL)
        return 0; /* the module checks the token itself */
    if ((auth & SP_AUTH_TRUSTED_HOSTS) && trusted != NULL) {
        if (req->https && req->peer_cert_cn == NULL) {
            snprintf(why, len, "could not read client cert from environment");
            return 403;
        }
        if (req->https)
            snprintf(name, sizeof(name), "%s", req->peer_cert_cn);
        else
            client_name(req->remote_addr, json_is_true(sp_setting(s, "forward_verify")), name,
                        sizeof(name));
        for (char *p = name; *p != '\0'; p++)
            *p = (char)tolower((unsigned char)*p);
        if (!listed(trusted, name)) {
            snprintf(why, len,
                     "Untrusted client %s attempted to access %s. Check :trusted_hosts: in "
                     "settings.yml",
                     name, req->path);
            return 403;
        }
    }
    if ((auth & SP_AUTH_CLIENT_CERT) && req->https && req->peer_cert_cn == NULL) {
        snprintf(why, len, "No client SSL certificate supplied");
        return 403;
    }
    return 0;
}
