#include "proxy/http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "proxy/log.h"
#include "proxy/tls.h"
#include "util/uuid.h"

#define MAX_LISTENERS 4
/* A connection's buffer for the request line, headers and response headers (bodies live in our
 * own buffers).  libmicrohttpd zeroes it for every request: its default of 32 KiB made that
 * memset a sixth of a forwarded request's instructions.  16 KiB still holds twice nginx's
 * 8 KiB header line limit. */
#define CONNECTION_MEMORY ((size_t)16 << 10)
/* A path we answer 414 (JSON) must fit, with the rest of the request line and some headers;
 * beyond the connection's memory libmicrohttpd answers itself (doc/http-input.md). */
_Static_assert(CONNECTION_MEMORY >= 2 * SP_MAX_PATH, "a path of SP_MAX_PATH must fit");

struct listener;
struct conn;

struct mount_table {
    struct sp_mount *v;
    size_t n;
    int refs; /* under the server's lock */
};

struct sp_server {
    size_t max_body;
    struct sp_server_limits limits;
    struct sp_server_hooks hooks;
    pthread_mutex_t lock;
    struct mount_table *mounts;
    struct MHD_Daemon *daemons[MAX_LISTENERS];
    struct listener *listeners[MAX_LISTENERS];
    size_t n_daemons;
    /* The open connections, for the per-address limit and the reaper that enforces the
     * request header deadline (doc/http-server.md). */
    pthread_mutex_t conn_lock;
    pthread_cond_t wake; /* the reaper's, on CLOCK_MONOTONIC */
    struct conn *conns;
    unsigned reaped, refused; /* since the reaper's last report, under conn_lock */
    char refused_addr[64];    /* the last address refused */
    bool stopping, reaper_started;
    pthread_t reaper;
    _Atomic size_t body_memory; /* bytes reserved by request bodies in flight */
};

/* One listener's view of the server. */
struct listener {
    struct sp_server *srv;
    unsigned kind; /* 1 HTTP, 2 HTTPS */
    char *pem[3];  /* certificate, key, CA: libmicrohttpd keeps pointers to them */
};

/* One request, from its request line (on_uri) to the end of its answer. */
struct request {
    char *body;
    size_t len, cap, reserved; /* reserved: bytes of srv->body_memory this body holds */
    unsigned refused;          /* 413 or 503 once the body could not be kept */
    struct timespec start;
    struct mount_table *table; /* routed and authorized at the first call */
    struct sp_match m;
    const char *cert_rejected;
    char id[DF_UUID_BUF], addr[64];
    bool begun;       /* the first call ran */
    char *raw;        /* the path as sent, then room for its decoded form */
    size_t raw_len;   /* without the query */
    const char *path; /* decoded (in raw's allocation) once checked; NULL when refused */
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
    pthread_condattr_t monotonic;

    if (srv == NULL)
        return NULL;
    srv->max_body = max_body;
    srv->limits = (struct sp_server_limits)SP_SERVER_LIMITS_DEFAULT;
    if (hooks != NULL)
        srv->hooks = *hooks;
    pthread_mutex_init(&srv->lock, NULL);
    pthread_mutex_init(&srv->conn_lock, NULL);
    pthread_condattr_init(&monotonic);
    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
    pthread_cond_init(&srv->wake, &monotonic);
    pthread_condattr_destroy(&monotonic);
    srv->mounts = calloc(1, sizeof(*srv->mounts));
    srv->mounts->refs = 1;
    return srv;
}

void sp_server_set_limits(struct sp_server *srv, const struct sp_server_limits *limits)
{
    srv->limits = *limits;
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
    size_t n, k;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* a message may quote what the client sent (a method, a header) or be cut inside a
     * character: JSON takes UTF-8 only, and an error always has a body */
    n = strlen(msg);
    for (size_t i = 0; i < n; i += k)
        if ((k = sp_utf8_char((const unsigned char *)msg + i, n - i)) == 0) {
            msg[i] = '?';
            k = 1;
        }
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

/* One open connection: the socket context. */
struct conn {
    struct conn *prev, *next; /* srv->conns, under conn_lock */
    int fd;                   /* -1 once the reaper shut it down */
    struct sockaddr_storage addr;
    bool busy;         /* from a complete request header to the end of its answer */
    double idle_since; /* connect, or the end of the previous answer (CLOCK_MONOTONIC) */
    struct peer peer;  /* HTTPS: read at the first request */
};

static double monotonic_now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static bool same_address(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return false;
    if (a->sa_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
                      &((const struct sockaddr_in *)b)->sin_addr, sizeof(struct in_addr)) == 0;
    if (a->sa_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
    return false;
}

static void address_text(const struct sockaddr *sa, char *out, size_t len)
{
    out[0] = '\0';
    if (sa != NULL && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)len);
    else if (sa != NULL && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)len);
}

/* The accept policy: one client address holds at most limits.per_address connections over all
 * listeners.  Refused ones are closed at once and counted for the reaper's report (libmicrohttpd's
 * own per-IP limit would print a line per refused connection). */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    struct sp_server *srv = ((const struct listener *)cls)->srv;
    unsigned held = 0;
    bool ok;

    (void)addrlen;
    pthread_mutex_lock(&srv->conn_lock);
    for (const struct conn *k = srv->conns; k != NULL; k = k->next)
        held += same_address((const struct sockaddr *)&k->addr, addr);
    ok = held < srv->limits.per_address;
    if (!ok) {
        srv->refused++;
        address_text(addr, srv->refused_addr, sizeof(srv->refused_addr));
    }
    pthread_mutex_unlock(&srv->conn_lock);
    return ok ? MHD_YES : MHD_NO;
}

/* A new connection's context, in the server's list; NULL (and the connection shut down) when
 * there is no memory for it. */
static struct conn *conn_open(struct sp_server *srv, struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *fd =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *addr =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    struct conn *k = calloc(1, sizeof(*k));

    if (k == NULL) {
        shutdown(fd->connect_fd, SHUT_RDWR);
        return NULL;
    }
    k->fd = fd->connect_fd;
    if (addr != NULL && addr->client_addr != NULL)
        memcpy(&k->addr, addr->client_addr,
               addr->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                        : sizeof(struct sockaddr_in));
    k->idle_since = monotonic_now();
    pthread_mutex_lock(&srv->conn_lock);
    k->next = srv->conns;
    if (srv->conns != NULL)
        srv->conns->prev = k;
    srv->conns = k;
    pthread_mutex_unlock(&srv->conn_lock);
    return k;
}

/* Before libmicrohttpd closes the socket: the reaper never sees a descriptor reused. */
static void conn_close(struct sp_server *srv, struct conn *k)
{
    if (k == NULL)
        return;
    pthread_mutex_lock(&srv->conn_lock);
    if (k->prev != NULL)
        k->prev->next = k->next;
    else
        srv->conns = k->next;
    if (k->next != NULL)
        k->next->prev = k->prev;
    pthread_mutex_unlock(&srv->conn_lock);
    free(k);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    const struct listener *l = cls;

    if (toe == MHD_CONNECTION_NOTIFY_STARTED)
        *socket_context = conn_open(l->srv, c);
    else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        conn_close(l->srv, *socket_context);
        *socket_context = NULL;
    }
}

static struct conn *connection_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return ci != NULL ? ci->socket_context : NULL;
}

/* A request header is complete (busy) or its answer was sent: the header deadline of the
 * connection's next request counts from then. */
static void conn_busy(struct sp_server *srv, struct conn *k, bool busy)
{
    pthread_mutex_lock(&srv->conn_lock);
    k->busy = busy;
    k->idle_since = monotonic_now();
    pthread_mutex_unlock(&srv->conn_lock);
}

/* Shuts down the connections that have not completed a request header within the deadline:
 * their threads see the end of the stream and end. */
static void reap_late(struct sp_server *srv)
{
    double late = monotonic_now() - srv->limits.header_timeout;

    for (struct conn *k = srv->conns; k != NULL; k = k->next)
        if (!k->busy && k->fd >= 0 && k->idle_since <= late) {
            shutdown(k->fd, SHUT_RDWR);
            k->fd = -1;
            srv->reaped++;
        }
}

/* One line per round at most, however many connections an attack costs. */
static void reaper_report(struct sp_server *srv)
{
    unsigned reaped = srv->reaped, refused = srv->refused;
    char addr[64];

    if (reaped == 0 && refused == 0)
        return;
    snprintf(addr, sizeof(addr), "%s", srv->refused_addr);
    srv->reaped = srv->refused = 0;
    pthread_mutex_unlock(&srv->conn_lock);
    if (reaped > 0)
        sp_log(SP_LOG_WARNING, NULL,
               "closed %u connections without a complete request header within %u s "
               "(:request_header_timeout:)",
               reaped, srv->limits.header_timeout);
    if (refused > 0)
        sp_log(SP_LOG_WARNING, NULL,
               "refused %u connections over :max_connections_per_address: (%u), the last from %s",
               refused, srv->limits.per_address, addr);
    pthread_mutex_lock(&srv->conn_lock);
}

static void *reaper(void *arg)
{
    struct sp_server *srv = arg;
    /* a connection is closed within a quarter of the deadline (at most a second) after it */
    long period_ms = srv->limits.header_timeout >= 4 ? 1000 : srv->limits.header_timeout * 250L;
    struct timespec until;

    pthread_mutex_lock(&srv->conn_lock);
    while (!srv->stopping) {
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += (period_ms % 1000) * 1000000;
        until.tv_sec += period_ms / 1000 + until.tv_nsec / 1000000000;
        until.tv_nsec %= 1000000000;
        pthread_cond_timedwait(&srv->wake, &srv->conn_lock, &until);
        reap_late(srv);
        reaper_report(srv);
    }
    pthread_mutex_unlock(&srv->conn_lock);
    return NULL;
}

/* The connection's peer, read once. */
static const struct peer *connection_peer(struct MHD_Connection *c, struct conn *k)
{
    if (!k->peer.read) {
        peer_certificate(c, &k->peer);
        k->peer.read = true;
    }
    return &k->peer;
}

/* Takes n bytes of the server's memory for request bodies for r; false when that would pass
 * the limit. */
static bool body_reserve(struct sp_server *srv, struct request *r, size_t n)
{
    size_t used = atomic_load(&srv->body_memory);

    do {
        if (used + n > srv->limits.body_memory)
            return false;
    } while (!atomic_compare_exchange_weak(&srv->body_memory, &used, used + n));
    r->reserved += n;
    return true;
}

static void body_release(struct sp_server *srv, struct request *r)
{
    atomic_fetch_sub(&srv->body_memory, r->reserved);
    r->reserved = 0;
    free(r->body);
    r->body = NULL;
    r->len = r->cap = 0;
}

/* The Content-Length the client declared; 0 without one (chunked or no body). */
static size_t declared_length(struct MHD_Connection *c)
{
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    unsigned long long n;
    char *end;

    if (v == NULL)
        return 0;
    n = strtoull(v, &end, 10);
    return *end == '\0' && n < SIZE_MAX ? (size_t)n : SIZE_MAX;
}

static void refuse_body(struct sp_server *srv, unsigned status, size_t n, struct sp_response *res)
{
    if (status == 413)
        sp_response_error(res, 413, "the request body is larger than %zu bytes", srv->max_body);
    else
        sp_response_error(res, 503,
                          "cannot take a request body of %zu bytes: the request bodies in flight "
                          "would pass :max_body_memory: (%zu bytes); try again later",
                          n, srv->limits.body_memory);
}

/* The first call, with the header complete and no byte of the body read: routes and authorizes
 * the request, and makes room for the body it declares.  0, or -1 with res filled: that answer
 * goes out at once and libmicrohttpd closes the connection instead of reading the body. */
static int admit(struct listener *l, struct MHD_Connection *c, struct sp_request *req,
                 struct request *r, struct sp_response *res)
{
    struct sp_server *srv = l->srv;
    struct mount_table *t = r->table = table_ref(srv);
    size_t declared = declared_length(c);
    char why[256] = "";
    unsigned status;

    if (!sp_route_match(t->v, t->n, l->kind, req->method, req->path, &r->m))
        sp_response_error(res, 404, "no route for %s %s%s%s", req->method, req->path,
                          r->m.why[0] ? ": " : "", r->m.why);
    else if (r->m.route == NULL)
        sp_response_error(res, 405, "%s is not allowed on %s (allowed: %s)", req->method, req->path,
                          r->m.allow);
    else if (srv->hooks.authorize != NULL &&
             (status = srv->hooks.authorize(srv->hooks.ud, req, r->cert_rejected, r->m.route->auth,
                                            why, sizeof(why))) != 0)
        sp_response_error(res, status, "%s", why);
    else if (declared > srv->max_body)
        refuse_body(srv, 413, declared, res);
    else if (declared > 0 && !body_reserve(srv, r, declared + 1))
        refuse_body(srv, 503, declared, res);
    else
        return 0;
    return -1;
}

/* The last call, with the body read: runs the handler the first call chose; fills res. */
static void dispatch(struct listener *l, struct sp_request *req, struct request *r,
                     struct sp_response *res)
{
    const char *full = req->path, *below;

    if (r->refused != 0) {
        refuse_body(l->srv, r->refused, r->len, res);
        return;
    }
    below = full + strlen(r->m.mount->prefix);
    req->params = r->m.params;
    req->n_params = r->m.n_params;
    req->path = below[0] != '\0' ? below : "/";
    if (r->m.route->handler(r->m.mount->state, req, res) < 0 && res->body == NULL)
        sp_response_error(res, 500, "%s %s failed", req->method, full);
    req->path = full;
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

/* Keeps a piece of the body; past max_body or the memory limit the rest is read and dropped,
 * and the answer is 413 or 503, not a reset connection. */
static bool body_append(struct sp_server *srv, struct request *r, const char *data, size_t n)
{
    size_t need = r->len + n + 1, cap;
    char *b;

    if (r->refused == 0 && r->len + n > srv->max_body)
        r->refused = 413;
    if (r->refused == 0 && need > r->cap) {
        cap = need * 2 < srv->max_body + 1 ? need * 2 : srv->max_body + 1;
        if (need <= r->reserved)
            cap = r->reserved; /* what the Content-Length asked for */
        if (cap > r->reserved && !body_reserve(srv, r, cap - r->reserved))
            r->refused = 503;
        else if ((b = realloc(r->body, cap)) == NULL)
            return false;
        else {
            r->body = b;
            r->cap = cap;
        }
    }
    if (r->refused != 0) {
        size_t len = r->len + n; /* for the answer's message */
        body_release(srv, r);
        r->len = len;
        return true;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
    return true;
}

/* The request as handlers see it (without its body). */
static void request_view(struct listener *l, struct MHD_Connection *c, struct request *r,
                         const char *path, const char *method, struct sp_request *req)
{
    *req = (struct sp_request){.method = method,
                               .path = path,
                               .body = r->body ? r->body : "",
                               .body_len = r->len,
                               .header = header,
                               .query = query,
                               .query_string = query_string,
                               .https = l->kind == 2,
                               .remote_addr = r->addr,
                               .request_id = r->id,
                               .host = c};
    if (l->kind == 2) {
        const struct peer *p = connection_peer(c, connection_of(c));
        req->peer_cert_cn = p->cn[0] ? p->cn : NULL;
        req->peer_cert_serial = p->serial[0] ? p->serial : NULL;
        r->cert_rejected = p->rejected[0] ? p->rejected : NULL;
    }
}

static enum MHD_Result answer(struct listener *l, struct MHD_Connection *c, struct sp_request *req,
                              struct request *r, struct sp_response *res)
{
    enum MHD_Result ok = respond(c, req, res);
    struct timespec end;

    clock_gettime(CLOCK_MONOTONIC, &end);
    if (l->srv->hooks.access != NULL)
        l->srv->hooks.access(l->srv->hooks.ud, req, res->status ? res->status : 200,
                             (double)(end.tv_sec - r->start.tv_sec) * 1e3 +
                                 (double)(end.tv_nsec - r->start.tv_nsec) / 1e6);
    return ok;
}

/* A request's own state from its request line on (libmicrohttpd hands what this returns to
 * on_request and on_completed), with the path as sent: libmicrohttpd decodes it in place before
 * on_request, where a %00 would have cut it and a %2F would be a '/' (doc/http-input.md). */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    size_t n = uri != NULL ? strcspn(uri, "?") : 0;
    struct request *r = calloc(1, sizeof(*r));

    (void)cls;
    (void)c;
    if (r == NULL || (r->raw = malloc(2 * (n + 1))) == NULL) {
        free(r);
        return NULL;
    }
    clock_gettime(CLOCK_MONOTONIC, &r->start);
    memcpy(r->raw, uri != NULL ? uri : "", n);
    r->raw[n] = '\0';
    r->raw_len = n;
    return r;
}

struct arg_check {
    unsigned n;
    char why[256];
};

static enum MHD_Result arg_valid(void *cls, enum MHD_ValueKind kind, const char *key,
                                 size_t key_size, const char *value, size_t value_size)
{
    struct arg_check *a = cls;
    char quoted[64];

    (void)kind;
    a->n++;
    if (sp_text_valid(key, key_size) && (value == NULL || sp_text_valid(value, value_size)))
        return MHD_YES;
    sp_escape(key, key_size < 40 ? key_size : 40, quoted, sizeof(quoted));
    snprintf(a->why, sizeof(a->why),
             "query argument %u ('%s') is not UTF-8 text without NUL bytes once percent-decoded",
             a->n, quoted);
    return MHD_NO;
}

/* How the body is delimited, as the request's headers say; libmicrohttpd reads the first
 * Content-Length and lets a Transfer-Encoding it does not know run to the connection's end. */
struct framing {
    const char *length, *other_length, *encoding, *bad_encoding;
};

static enum MHD_Result framing_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    struct framing *f = cls;

    (void)kind;
    if (strcasecmp(key, "Content-Length") == 0) {
        if (f->length == NULL)
            f->length = value;
        else if (strcmp(f->length, value) != 0 && f->other_length == NULL)
            f->other_length = value;
    } else if (strcasecmp(key, "Transfer-Encoding") == 0) {
        f->encoding = value;
        if (strcasecmp(value, "chunked") != 0 && f->bad_encoding == NULL)
            f->bad_encoding = value;
    }
    return MHD_YES;
}

/* Query arguments as libmicrohttpd decoded them must be text: a NUL would cut a value short, and
 * other bytes than UTF-8 cannot go into JSON.  True with res filled when one is not. */
static bool query_refused(struct MHD_Connection *c, struct sp_response *res)
{
    struct arg_check args = {0};

    MHD_get_connection_values_n(c, MHD_GET_ARGUMENT_KIND, arg_valid, &args);
    if (args.why[0] != '\0')
        sp_response_error(res, 400, "%s", args.why);
    return args.why[0] != '\0';
}

/* A body delimited two ways is refused rather than read one way (request smuggling).  True with
 * res filled then. */
static bool framing_refused(struct MHD_Connection *c, struct sp_response *res)
{
    struct framing f = {0};
    char a[64], b[64];

    MHD_get_connection_values(c, MHD_HEADER_KIND, framing_header, &f);
    if (f.other_length != NULL) {
        sp_escape(f.length, strlen(f.length), a, sizeof(a));
        sp_escape(f.other_length, strlen(f.other_length), b, sizeof(b));
        sp_response_error(res, 400, "two different Content-Length headers: '%s' and '%s'", a, b);
    } else if (f.encoding != NULL && f.length != NULL) {
        sp_response_error(res, 400, "both Transfer-Encoding and Content-Length are set");
    } else if (f.bad_encoding != NULL) {
        sp_escape(f.bad_encoding, strlen(f.bad_encoding), a, sizeof(a));
        sp_response_error(res, 501, "Transfer-Encoding '%s' is not supported, only chunked", a);
    }
    return res->status != 0;
}

/* The first call's checks, before any body is read: the path (decoded here), the query and the
 * body's framing.  0, or the status of the refusal with res filled (doc/http-input.md). */
static unsigned input_refused(struct MHD_Connection *c, struct request *r, struct sp_response *res)
{
    char *decoded = r->raw + r->raw_len + 1, why[256], quoted[256];

    sp_escape(r->raw, r->raw_len < 200 ? r->raw_len : 200, quoted, sizeof(quoted));
    if (r->raw_len > SP_MAX_PATH) {
        sp_response_error(res, 414, "the request path %s... is %zu bytes long, more than %d",
                          quoted, r->raw_len, SP_MAX_PATH);
        return 414;
    }
    if (sp_path_decode(r->raw, r->raw_len, decoded, why, sizeof(why)) < 0) {
        sp_response_error(res, 400, "the request path %s is refused: %s", quoted, why);
        return 400;
    }
    r->path = decoded;
    if (query_refused(c, res) || framing_refused(c, res))
        return res->status;
    return 0;
}

/* The first call: the header is complete, the body (if any) not read yet.  The path, query and
 * framing are checked, then the route and authorization: a refusal goes out at once. */
static enum MHD_Result request_begin(struct listener *l, struct MHD_Connection *c,
                                     struct request *r, const char *method)
{
    struct conn *k = connection_of(c);
    const char *given = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    struct sp_response res = {0};
    struct sp_request req;
    char quoted[256];

    if (k == NULL)
        return MHD_NO;
    r->begun = true;
    conn_busy(l->srv, k, true);
    if (given != NULL && given[0] != '\0' && strlen(given) < sizeof(r->id))
        snprintf(r->id, sizeof(r->id), "%s", given);
    else
        df_uuid_new(r->id);
    address_text((const struct sockaddr *)&k->addr, r->addr, sizeof(r->addr));
    if (input_refused(c, r, &res) != 0) {
        sp_escape(r->raw, r->raw_len, quoted, sizeof(quoted));
        request_view(l, c, r, r->path != NULL ? r->path : quoted, method, &req);
        return answer(l, c, &req, r, &res);
    }
    request_view(l, c, r, r->path, method, &req);
    if (admit(l, c, &req, r, &res) == 0)
        return MHD_YES;
    return answer(l, c, &req, r, &res);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls)
{
    struct listener *l = cls;
    struct request *r = *req_cls;
    struct sp_response res = {0};
    struct sp_request req;

    (void)version;
    (void)url; /* decoded in place by libmicrohttpd: r->path is ours */
    if (r == NULL)
        return MHD_NO; /* on_uri had no memory */
    if (!r->begun)
        return request_begin(l, c, r, method);
    if (*upload_size != 0) {
        bool kept = body_append(l->srv, r, upload, *upload_size);
        *upload_size = 0;
        return kept ? MHD_YES : MHD_NO;
    }
    request_view(l, c, r, r->path, method, &req);
    dispatch(l, &req, r, &res);
    return answer(l, c, &req, r, &res);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct listener *l = cls;
    struct request *r = *req_cls;
    struct conn *k = connection_of(c);

    (void)toe;
    if (k != NULL)
        conn_busy(l->srv, k, false);
    if (r != NULL) {
        body_release(l->srv, r);
        if (r->table != NULL)
            table_unref(l->srv, r->table);
        free(r->raw);
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
    int rc;

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
    if (!srv->reaper_started && (rc = pthread_create(&srv->reaper, NULL, reaper, srv)) != 0) {
        listener_free(l);
        return sp_fail(err, -rc, "cannot start the connection reaper: %s", strerror(rc));
    }
    srv->reaper_started = true;
    d = MHD_start_daemon(flags, 0, on_accept, l, on_request, l, MHD_OPTION_SOCK_ADDR, &sa,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, l, MHD_OPTION_NOTIFY_CONNECTION,
                         on_connection, l, MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_CONNECTION_LIMIT,
                         srv->limits.max_connections, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                         CONNECTION_MEMORY, MHD_OPTION_ARRAY,
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
    if (srv->reaper_started) {
        pthread_mutex_lock(&srv->conn_lock);
        srv->stopping = true;
        pthread_cond_signal(&srv->wake);
        pthread_mutex_unlock(&srv->conn_lock);
        pthread_join(srv->reaper, NULL);
    }
    for (size_t i = 0; i < srv->n_daemons; i++) {
        MHD_stop_daemon(srv->daemons[i]);
        listener_free(srv->listeners[i]);
    }
    table_unref(srv, srv->mounts);
    pthread_mutex_destroy(&srv->lock);
    pthread_mutex_destroy(&srv->conn_lock);
    pthread_cond_destroy(&srv->wake);
    free(srv);
}
