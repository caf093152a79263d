#include "proxy/http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/tls.h"
#include "util/uuid.h"

#define MAX_LISTENERS 4
/* A connection's buffer for the request line, headers and response headers (bodies live in our
 * own buffers).  libmicrohttpd zeroes it for every request: its default of 32 KiB made that
 * memset a sixth of a forwarded request's instructions.  16 KiB still holds twice nginx's
 * 8 KiB header line limit. */
#define CONNECTION_MEMORY ((size_t)16 << 10)

struct listener;

struct mount_table {
    struct sp_mount *v;
    size_t n;
    int refs; /* under the server's lock */
};

struct sp_server {
    size_t max_body;
    struct sp_server_hooks hooks;
    pthread_mutex_t lock;
    struct mount_table *mounts;
    struct MHD_Daemon *daemons[MAX_LISTENERS];
    struct listener *listeners[MAX_LISTENERS];
    size_t n_daemons;
};

/* One listener's view of the server. */
struct listener {
    struct sp_server *srv;
    unsigned kind; /* 1 HTTP, 2 HTTPS */
    char *pem[3];  /* certificate, key, CA: libmicrohttpd keeps pointers to them */
};

struct request {
    char *body;
    size_t len, cap;
    bool too_big;
    struct timespec start;
};

static void table_unref(struct sp_server *srv, struct mount_table *t)
{
    bool last;

    pthread_mutex_lock(&srv->lock);
    last = --t->refs == 0;
    pthread_mutex_unlock(&srv->lock);
    if (last) {
        free(t->v);
        free(t);
    }
}

static struct mount_table *table_ref(struct sp_server *srv)
{
    struct mount_table *t;

    pthread_mutex_lock(&srv->lock);
    t = srv->mounts;
    t->refs++;
    pthread_mutex_unlock(&srv->lock);
    return t;
}

struct sp_server *sp_server_new(size_t max_body, const struct sp_server_hooks *hooks)
{
    struct sp_server *srv = calloc(1, sizeof(*srv));

    if (srv == NULL)
        return NULL;
    srv->max_body = max_body;
    if (hooks != NULL)
        srv->hooks = *hooks;
    pthread_mutex_init(&srv->lock, NULL);
    srv->mounts = calloc(1, sizeof(*srv->mounts));
    srv->mounts->refs = 1;
    return srv;
}

void sp_server_mount(struct sp_server *srv, const struct sp_mount *mounts, size_t n)
{
    struct mount_table *t = calloc(1, sizeof(*t)), *old;

    t->v = calloc(n ? n : 1, sizeof(*t->v));
    memcpy(t->v, mounts, n * sizeof(*mounts));
    t->n = n;
    t->refs = 1;
    pthread_mutex_lock(&srv->lock);
    old = srv->mounts;
    srv->mounts = t;
    pthread_mutex_unlock(&srv->lock);
    table_unref(srv, old);
}

void sp_response_json(struct sp_response *res, unsigned status, json_t *v)
{
    res->status = status;
    res->content_type = "application/json";
    res->body = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    res->body_len = res->body ? strlen(res->body) : 0;
    res->free_body = free;
    json_decref(v);
}

void sp_response_error(struct sp_response *res, unsigned status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sp_response_json(res, status, json_pack("{s:s}", "error", msg));
}

static const char *header(const struct sp_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->host, MHD_HEADER_KIND, name);
}

static const char *query(const struct sp_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->host, MHD_GET_ARGUMENT_KIND, name);
}

struct query_out {
    char *out;
    size_t len, used;
};

static void put(struct query_out *q, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++, q->used++)
        if (q->used + 1 < q->len)
            q->out[q->used] = p[i];
}

/* Appends s percent-encoded: RFC 3986's unreserved characters stay as they are. */
static void encode(struct query_out *q, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";

    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        char esc[3] = {'%', hex[ch >> 4], hex[ch & 15]};
        if (isalnum(ch) || strchr("-._~", ch) != NULL)
            put(q, s, 1);
        else
            put(q, esc, 3);
    }
}

static enum MHD_Result query_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    struct query_out *q = cls;

    (void)kind;
    if (value == NULL)
        return MHD_YES; /* Rack drops arguments without a value */
    if (q->used > 0)
        put(q, "&", 1);
    encode(q, key);
    put(q, "=", 1);
    encode(q, value);
    return MHD_YES;
}

static size_t query_string(const struct sp_request *req, char *out, size_t len)
{
    struct query_out q = {out, len, 0};

    MHD_get_connection_values(req->host, MHD_GET_ARGUMENT_KIND, query_arg, &q);
    if (len > 0)
        out[q.used < len ? q.used : len - 1] = '\0';
    return q.used;
}

/* What a TLS connection's client certificate says, read at its first request: verifying the
 * certificate costs more than serving a request, and it cannot change on the connection
 * (renegotiation ends it).  CN and serial of one that verifies against the CA; why not for one
 * that does not (treated as none); all empty when there is none. */
struct peer {
    bool read;
    char cn[256], serial[64], rejected[256];
};

static void peer_rejected(struct peer *p, unsigned status)
{
    gnutls_datum_t text = {NULL, 0};
    size_t n;

    if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &text, 0) == 0)
        snprintf(p->rejected, sizeof(p->rejected), "%s", (const char *)text.data);
    else
        snprintf(p->rejected, sizeof(p->rejected), "verification status 0x%x", status);
    gnutls_free(text.data);
    for (n = strlen(p->rejected); n > 0 && p->rejected[n - 1] == ' '; n--)
        p->rejected[n - 1] = '\0'; /* GnuTLS ends each sentence with a space */
}

static void peer_certificate(struct MHD_Connection *c, struct peer *p)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    gnutls_session_t session = ci != NULL ? ci->tls_session : NULL;
    const gnutls_datum_t *peers;
    gnutls_x509_crt_t crt;
    unsigned status = 0, n = 0;
    size_t size = sizeof(p->cn);

    p->cn[0] = p->serial[0] = p->rejected[0] = '\0';
    peers = session != NULL ? gnutls_certificate_get_peers(session, &n) : NULL;
    if (peers == NULL || n == 0)
        return;
    if (gnutls_certificate_verify_peers2(session, &status) < 0 || status != 0) {
        peer_rejected(p, status != 0 ? status : GNUTLS_CERT_INVALID);
        return;
    }
    if (gnutls_x509_crt_init(&crt) < 0)
        return;
    if (gnutls_x509_crt_import(crt, &peers[0], GNUTLS_X509_FMT_DER) != 0 ||
        gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, p->cn, &size) != 0 ||
        sp_tls_serial(crt, p->serial, sizeof(p->serial)) != 0) {
        p->cn[0] = p->serial[0] = '\0';
        snprintf(p->rejected, sizeof(p->rejected), "it has no readable CN or serial");
    }
    gnutls_x509_crt_deinit(crt);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    const struct listener *l = cls;

    (void)c;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED && l->kind == 2)
        *socket_context = calloc(1, sizeof(struct peer));
    else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        free(*socket_context);
        *socket_context = NULL;
    }
}

/* The connection's peer, read once (into fallback when there was no room to keep it). */
static const struct peer *connection_peer(struct MHD_Connection *c, struct peer *fallback)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct peer *p = ci != NULL && ci->socket_context != NULL ? ci->socket_context : fallback;

    if (!p->read) {
        peer_certificate(c, p);
        p->read = true;
    }
    return p;
}

static void remote_address(struct MHD_Connection *c, char *out, size_t len)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci != NULL ? ci->client_addr : NULL;

    out[0] = '\0';
    if (sa != NULL && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)len);
    else if (sa != NULL && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)len);
}

/* Routes, authorizes and runs the handler; fills res. */
static void dispatch(struct listener *l, struct sp_request *req, const char *cert_rejected,
                     struct request *r, struct sp_response *res)
{
    struct mount_table *t = table_ref(l->srv);
    struct sp_match m;
    char why[256] = "";
    unsigned status;

    if (!sp_route_match(t->v, t->n, l->kind, req->method, req->path, &m)) {
        sp_response_error(res, 404, "no route for %s %s", req->method, req->path);
    } else if (m.route == NULL) {
        sp_response_error(res, 405, "%s is not allowed on %s (allowed: %s)", req->method, req->path,
                          m.allow);
    } else if (r->too_big) {
        sp_response_error(res, 413, "the request body is larger than %zu bytes", l->srv->max_body);
    } else if (l->srv->hooks.authorize != NULL &&
               (status = l->srv->hooks.authorize(l->srv->hooks.ud, req, cert_rejected,
                                                 m.route->auth, why, sizeof(why))) != 0) {
        sp_response_error(res, status, "%s", why);
    } else {
        const char *full = req->path, *below = full + strlen(m.mount->prefix);
        req->params = m.params;
        req->n_params = m.n_params;
        req->path = below[0] != '\0' ? below : "/";
        if (m.route->handler(m.mount->state, req, res) < 0 && res->body == NULL)
            sp_response_error(res, 500, "%s %s failed", req->method, full);
        req->path = full;
    }
    table_unref(l->srv, t);
}

/* A streamed body (ABI 1.3): libmicrohttpd asks for the next bytes as the client takes them. */
static ssize_t read_body(void *cls, uint64_t pos, char *buf, size_t max)
{
    const struct sp_response *res = cls;
    long n = res->read(res->reader, buf, max);

    (void)pos;
    return n > 0    ? (ssize_t)n
           : n == 0 ? MHD_CONTENT_READER_END_OF_STREAM
                    : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void free_reader(void *cls)
{
    struct sp_response *res = cls;

    if (res->free_reader != NULL)
        res->free_reader(res->reader);
    free(res);
}

static struct MHD_Response *stream_response(struct sp_response *res)
{
    struct sp_response *kept = malloc(sizeof(*kept));
    struct MHD_Response *mr;

    if (kept == NULL) {
        if (res->free_reader != NULL)
            res->free_reader(res->reader);
        return NULL;
    }
    *kept = *res;
    mr = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, read_body, kept,
                                           free_reader);
    if (mr == NULL) /* libmicrohttpd calls free_reader only for a response it created */
        free_reader(kept);
    return mr;
}

static enum MHD_Result respond(struct MHD_Connection *c, struct sp_request *req,
                               struct sp_response *res)
{
    struct MHD_Response *mr;
    enum MHD_Result ok;

    if (res->read != NULL)
        mr = stream_response(res);
    else
        mr = MHD_create_response_from_buffer_with_free_callback(
            res->body_len, res->body, res->free_body ? res->free_body : free);
    if (mr == NULL)
        return MHD_NO;
    MHD_add_response_header(mr, "Content-Type",
                            res->content_type ? res->content_type : "application/json");
    MHD_add_response_header(mr, "X-Request-Id", req->request_id);
    if (res->location != NULL)
        MHD_add_response_header(mr, "Location", res->location);
    MHD_add_response_header(mr, "Server", "smart-proxyd/" PACKAGE_VERSION);
    ok = MHD_queue_response(c, res->status ? res->status : 200, mr);
    MHD_destroy_response(mr);
    free(res->location);
    return ok;
}

static bool body_append(struct request *r, size_t max, const char *data, size_t n)
{
    if (r->too_big || r->len + n > max) {
        r->too_big = true;
        return true; /* keep reading: the answer is 413, not a reset connection */
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = (r->len + n + 1) * 2;
        char *b = realloc(r->body, cap > max + 1 ? max + 1 : cap);
        if (b == NULL)
            return false;
        r->body = b;
        r->cap = cap > max + 1 ? max + 1 : cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
    return true;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls)
{
    struct listener *l = cls;
    struct request *r = *req_cls;
    struct sp_response res = {0};
    struct peer own = {.read = false};
    const struct peer *p = NULL;
    char id[DF_UUID_BUF], addr[64];
    struct timespec end;
    enum MHD_Result ok;

    (void)version;
    if (r == NULL) {
        r = calloc(1, sizeof(*r));
        if (r == NULL)
            return MHD_NO;
        clock_gettime(CLOCK_MONOTONIC, &r->start);
        *req_cls = r;
        return MHD_YES;
    }
    if (*upload_size != 0) {
        bool kept = body_append(r, l->srv->max_body, upload, *upload_size);
        *upload_size = 0;
        return kept ? MHD_YES : MHD_NO;
    }
    struct sp_request req = {.method = method,
                             .path = url,
                             .body = r->body ? r->body : "",
                             .body_len = r->len,
                             .header = header,
                             .query = query,
                             .query_string = query_string,
                             .https = l->kind == 2,
                             .host = c};
    const char *given = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    if (given != NULL && given[0] != '\0' && strlen(given) < sizeof(id))
        snprintf(id, sizeof(id), "%s", given);
    else
        df_uuid_new(id);
    req.request_id = id;
    remote_address(c, addr, sizeof(addr));
    req.remote_addr = addr;
    if (l->kind == 2) {
        p = connection_peer(c, &own);
        req.peer_cert_cn = p->cn[0] ? p->cn : NULL;
        req.peer_cert_serial = p->serial[0] ? p->serial : NULL;
    }
    dispatch(l, &req, p != NULL && p->rejected[0] ? p->rejected : NULL, r, &res);
    ok = respond(c, &req, &res);
    clock_gettime(CLOCK_MONOTONIC, &end);
    if (l->srv->hooks.access != NULL)
        l->srv->hooks.access(l->srv->hooks.ud, &req, res.status ? res.status : 200,
                             (double)(end.tv_sec - r->start.tv_sec) * 1e3 +
                                 (double)(end.tv_nsec - r->start.tv_nsec) / 1e6);
    return ok;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct request *r = *req_cls;

    (void)cls;
    (void)c;
    (void)toe;
    if (r != NULL) {
        free(r->body);
        free(r);
        *req_cls = NULL;
    }
}

static char *read_pem(const char *what, const char *path, struct sp_error *err)
{
    FILE *f = path != NULL ? fopen(path, "rb") : NULL;
    char *buf = NULL;
    long len;

    if (f == NULL) {
        sp_fail(err, -errno, "cannot read %s %s: %s", what, path ? path : "(unset)",
                path ? strerror(errno) : "not configured");
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) > 0 && len < (1 << 20) &&
        fseek(f, 0, SEEK_SET) == 0 && (buf = calloc(1, (size_t)len + 1)) != NULL &&
        fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf == NULL)
        sp_fail(err, -EIO, "cannot read %s %s: empty or unreadable", what, path);
    return buf;
}

static void listener_free(struct listener *l)
{
    if (l == NULL)
        return;
    for (int i = 0; i < 3; i++)
        free(l->pem[i]);
    free(l);
}

int sp_server_listen(struct sp_server *srv, const char *bind, unsigned port,
                     const struct sp_tls *tls, unsigned *bound, struct sp_error *err)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    /* A thread per connection: a handler may wait (a relay to a slow core waits up to
     * :core_timeout:), and then only its own client waits with it. */
    unsigned flags =
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;
    struct listener *l;
    struct MHD_Daemon *d;
    const union MHD_DaemonInfo *info;

    if (srv->n_daemons == MAX_LISTENERS)
        return sp_fail(err, -ENOSPC, "too many listeners");
    if (inet_pton(AF_INET, bind != NULL && strcmp(bind, "*") != 0 ? bind : "0.0.0.0",
                  &sa.sin_addr) != 1)
        return sp_fail(err, -EINVAL, "bind address '%s' is not an IPv4 address", bind);
    l = calloc(1, sizeof(*l));
    l->srv = srv;
    l->kind = tls != NULL ? 2 : 1;
    if (tls != NULL) {
        l->pem[0] = read_pem("ssl_certificate", tls->cert_file, err);
        l->pem[1] = l->pem[0] ? read_pem("ssl_private_key", tls->key_file, err) : NULL;
        l->pem[2] = l->pem[1] ? read_pem("ssl_ca_file", tls->ca_file, err) : NULL;
        if (l->pem[2] == NULL) {
            listener_free(l);
            return -EINVAL;
        }
        flags |= MHD_USE_TLS;
    }
    const char *priorities =
        tls != NULL && tls->priorities ? tls->priorities : "NORMAL:-VERS-TLS1.1:-VERS-TLS1.0";
    struct MHD_OptionItem tls_options[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, l->pem[0]},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, l->pem[1]},
        {MHD_OPTION_HTTPS_MEM_TRUST, 0, l->pem[2]}, /* asks for a client certificate */
        {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)priorities},
        {MHD_OPTION_END, 0, NULL},
    };
    d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, l, MHD_OPTION_SOCK_ADDR, &sa,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                         MHD_OPTION_NOTIFY_CONNECTION, on_connection, l,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
                         MHD_OPTION_CONNECTION_MEMORY_LIMIT, CONNECTION_MEMORY, MHD_OPTION_ARRAY,
                         tls != NULL ? tls_options : tls_options + 4, MHD_OPTION_END);
    if (d == NULL) {
        listener_free(l);
        return sp_fail(err, -EADDRINUSE, "cannot listen on %s://%s:%u: %s", tls ? "https" : "http",
                       bind ? bind : "*", port, strerror(errno));
    }
    info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    if (bound != NULL)
        *bound = info != NULL ? info->port : port;
    srv->daemons[srv->n_daemons] = d;
    srv->listeners[srv->n_daemons++] = l; /* lives as long as the server */
    return 0;
}

void sp_server_free(struct sp_server *srv)
{
    if (srv == NULL)
        return;
    for (size_t i = 0; i < srv->n_daemons; i++) {
        MHD_stop_daemon(srv->daemons[i]);
        listener_free(srv->listeners[i]);
    }
    table_unref(srv, srv->mounts);
    pthread_mutex_destroy(&srv->lock);
    free(srv);
}
