/*
 * Floods against smart-proxyd's HTTPS listener (doc/http-server.md): idle and slowloris
 * connections from one untrusted address while a trusted client (Foreman) is served;
 * uploads without a client certificate; more request bodies in flight than
 * :max_body_memory: allows.  The attacker connects from 127.0.0.2 (127.0.0.3 for the
 * uploads), the trusted client from 127.0.0.1, so the per-address limit is seen on one
 * machine.  Each test prints its figures as a JSON line.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "daemonutil.h"
#include "testutil.h"

/* The daemon's limits in this suite: the defaults but for a short header deadline. */
#define HEADER_TIMEOUT 2           /* s, :request_header_timeout: */
#define PER_ADDRESS    100         /* :max_connections_per_address:'s default */
#define BODY_MEMORY    (64u << 20) /* :max_body_memory:'s default */
#define MAX_BODY       (16u << 20) /* smart-proxyd's largest request body */

/* The bounds stated in doc/http-server.md: threads over the idle daemon's, RSS growth. */
#define EXTRA_THREADS (PER_ADDRESS + 16)
#define EXTRA_RSS_KIB (64 << 10)

/* Under AddressSanitizer (the daemon is built as this program is) freed memory waits in a
 * quarantine of up to 256 MiB, so RSS says nothing about what the daemon keeps. */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_MEANINGFUL false
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RSS_MEANINGFUL false
#endif
#endif
#ifndef RSS_MEANINGFUL
#define RSS_MEANINGFUL true
#endif

#define MAX(a, b) ((a) > (b) ? (a) : (b))

static char certs[512];
static pid_t daemon_pid;
static unsigned https_port;

/* ---- the daemon ------------------------------------------------------------------------------ */

/* A field of /proc/PID/status ("Threads", "VmRSS"), as a number. */
static long proc_status(const char *field)
{
    char path[64], line[256];
    size_t n = strlen(field);
    long v = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)daemon_pid);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    while (v < 0 && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            v = strtol(line + n + 1, NULL, 10);
    fclose(f);
    return v;
}

/* The daemon with HTTPS only; its output goes to a file (floods make libmicrohttpd write a
 * line per failed handshake to stderr, and a pipe nobody reads would stall it). */
static void daemon_start(void)
{
    char text[4096], out[700], log[700];
    long from;
    int fd;

    snprintf(text, sizeof(text),
             ":https_port: 0\n:bind_host: 127.0.0.1\n:module_directory: %s\n"
             ":ssl_certificate: %s/server.pem\n:ssl_private_key: %s/server.key\n"
             ":ssl_ca_file: %s/ca.pem\n:trusted_hosts: [foreman.example.com]\n"
             ":log_file: %s/proxy.log\n:request_header_timeout: %d\n",
             getenv("DYNFLOW_MODULE_DIR"), certs, certs, certs, workdir, HEADER_TIMEOUT);
    scratch_write(workdir, "settings.yml", text);
    snprintf(out, sizeof(out), "%s/settings.d", workdir);
    mkdir(out, 0700);
    scratch_write(workdir, "settings.d/dynflow.yml", ":enabled: true\n");
    snprintf(log, sizeof(log), "%s/proxy.log", workdir);
    from = file_size(log);
    snprintf(out, sizeof(out), "%s/stderr.log", workdir);
    daemon_pid = fork();
    if (daemon_pid == 0) {
        fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        snprintf(text, sizeof(text), "%s/settings.yml", workdir);
        execl(getenv("SMART_PROXYD"), "smart-proxyd", "--config", text, (char *)NULL);
        _exit(127);
    }
    https_port = listening_port(log, from, "https");
    ck_assert_msg(https_port != 0, "smart-proxyd did not start");
}

static void setup(void)
{
    struct rlimit rl;

    /* 2,500 attacker sockets and the clients' */
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = rl.rlim_max;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    ck_assert_msg(rl.rlim_cur >= 4096, "the hard descriptor limit %llu is below 4096",
                  (unsigned long long)rl.rlim_cur);
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_ALL);
    gnutls_global_init();
    scratch_new(certs, sizeof(certs), "flood-certs");
    scratch_certs(certs);
    scratch_new(workdir, sizeof(workdir), "flood");
    daemon_start();
}

static void teardown(void)
{
    kill(daemon_pid, SIGTERM);
    ck_assert_int_eq(finish(daemon_pid), 0);
    scratch_remove(workdir);
    scratch_remove(certs);
    gnutls_global_deinit();
    curl_global_cleanup();
}

/* ---- clients -----------------------------------------------------------------------------------
 */

/* A TCP connection to the daemon from source address from; -1 when refused at once. */
static int tcp_from(const char *from, bool nonblocking)
{
    struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
    int fd = socket(AF_INET, SOCK_STREAM | (nonblocking ? SOCK_NONBLOCK : 0), 0);

    ck_assert_int_ge(fd, 0);
    inet_pton(AF_INET, from, &src.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
    dst.sin_port = htons((uint16_t)https_port);
    ck_assert_msg(bind(fd, (struct sockaddr *)&src, sizeof(src)) == 0, "bind %s: %s", from,
                  strerror(errno));
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

struct tls {
    int fd;
    gnutls_session_t session;
    gnutls_certificate_credentials_t cred;
};

/* TLS on the connection fd, as client who (certs/who.pem; NULL: no certificate); false when
 * the daemon closed it before the handshake ended. */
static bool tls_handshake(struct tls *t, int fd, const char *who)
{
    char ca[600], crt[600], key[600];
    int rc;

    memset(t, 0, sizeof(*t));
    t->fd = fd;
    if (t->fd < 0)
        return false;
    snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
    ck_assert_int_eq(gnutls_certificate_allocate_credentials(&t->cred), 0);
    ck_assert_int_gt(gnutls_certificate_set_x509_trust_file(t->cred, ca, GNUTLS_X509_FMT_PEM), 0);
    if (who != NULL) {
        snprintf(crt, sizeof(crt), "%s/%s.pem", certs, who);
        snprintf(key, sizeof(key), "%s/%s.key", certs, who);
        ck_assert_int_eq(
            gnutls_certificate_set_x509_key_file(t->cred, crt, key, GNUTLS_X509_FMT_PEM), 0);
    }
    ck_assert_int_eq(gnutls_init(&t->session, GNUTLS_CLIENT), 0);
    gnutls_set_default_priority(t->session);
    gnutls_credentials_set(t->session, GNUTLS_CRD_CERTIFICATE, t->cred);
    gnutls_transport_set_int(t->session, t->fd);
    gnutls_handshake_set_timeout(t->session, 5000);
    do
        rc = gnutls_handshake(t->session);
    while (rc < 0 && !gnutls_error_is_fatal(rc));
    return rc == 0;
}

static bool tls_open(struct tls *t, const char *from, const char *who)
{
    return tls_handshake(t, tcp_from(from, false), who);
}

static void tls_close(struct tls *t)
{
    if (t->session != NULL)
        gnutls_deinit(t->session);
    if (t->cred != NULL)
        gnutls_certificate_free_credentials(t->cred);
    if (t->fd >= 0)
        close(t->fd);
    memset(t, 0, sizeof(*t));
    t->fd = -1;
}

static bool tls_send(struct tls *t, const char *data, size_t n)
{
    while (n > 0) {
        ssize_t w = gnutls_record_send(t->session, data, n);
        if (w < 0 && !gnutls_error_is_fatal((int)w))
            continue;
        if (w <= 0)
            return false;
        data += w;
        n -= (size_t)w;
    }
    return true;
}

/* What the daemon sent within seconds (until it closed the connection, or a reply with a
 * body ended); "" for nothing. */
static const char *tls_reply(struct tls *t, double seconds)
{
    static char buf[8192];
    double until = tu_now() + seconds;
    size_t len = 0;
    const char *body;

    buf[0] = '\0';
    while (len < sizeof(buf) - 1 && tu_now() < until) {
        struct pollfd p = {.fd = t->fd, .events = POLLIN};
        if (gnutls_record_check_pending(t->session) == 0 &&
            poll(&p, 1, (int)((until - tu_now()) * 1000) + 1) <= 0)
            continue;
        ssize_t n = gnutls_record_recv(t->session, buf + len, sizeof(buf) - 1 - len);
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
            continue;
        if (n <= 0)
            break;
        buf[len += (size_t)n] = '\0';
        body = strstr(buf, "\r\n\r\n");
        if (strncmp(buf, "HTTP/1.1 100", 12) == 0 && body != NULL)
            break; /* 100 Continue: the body is wanted */
        if (body != NULL && strchr(body, '}') != NULL)
            break;
    }
    return buf;
}

/* True once the daemon closed the connection (FIN or RST; TLS data before it is read). */
static bool closed_by_daemon(int fd, gnutls_session_t session)
{
    char buf[4096];
    ssize_t n;

    if (fd < 0)
        return true;
    if (session == NULL) {
        n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        return n == 0 || (n < 0 && errno != EAGAIN);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    do
        n = gnutls_record_recv(session, buf, sizeof(buf));
    while (n > 0);
    return n != GNUTLS_E_AGAIN && n != GNUTLS_E_INTERRUPTED;
}

static size_t discard(char *data, size_t size, size_t n, void *ud)
{
    (void)data;
    (void)ud;
    return size * n;
}

/* GET /dynflow/tasks/count as Foreman does: a new TLS connection with the client certificate,
 * from 127.0.0.1; the HTTP status (0: failed), the seconds it took into *took. */
static long trusted_count(double *took)
{
    char url[128], ca[600], crt[600], key[600];
    long status = 0;
    CURL *c = curl_easy_init();
    double t0 = tu_now();

    snprintf(url, sizeof(url), "https://127.0.0.1:%u/dynflow/tasks/count", https_port);
    snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
    snprintf(crt, sizeof(crt), "%s/client.pem", certs);
    snprintf(key, sizeof(key), "%s/client.key", certs);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    curl_easy_setopt(c, CURLOPT_SSLCERT, crt);
    curl_easy_setopt(c, CURLOPT_SSLKEY, key);
    curl_easy_setopt(c, CURLOPT_INTERFACE, "host!127.0.0.1");
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 5L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    *took = tu_now() - t0;
    return status;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* ---- (a) idle and slowloris connections ---------------------------------------------------------
 */

#define IDLE      2000
#define SLOWLORIS 500
#define REQUESTS  100
#define FLOOR     20

static struct tls slow[SLOWLORIS]; /* the dribbler's once it runs */
static int idle[IDLE];
static atomic_int slow_open;
static atomic_bool dribbling;

/* A byte of a request header every 200 ms on every slowloris connection, each in a TLS record
 * of its own, until told to stop; a connection whose send fails was closed by the daemon. */
static void *dribble(void *arg)
{
    static const char header[] = "GET /dynflow/tasks/count HTTP/1.1\r\nHost: localhost\r\nX-A: ";
    size_t at = 0;

    (void)arg;
    while (atomic_load(&dribbling)) {
        char byte = header[at < sizeof(header) - 1 ? at : sizeof(header) - 2];
        for (int i = 0; i < SLOWLORIS; i++)
            if (slow[i].session != NULL && gnutls_record_send(slow[i].session, &byte, 1) < 0) {
                tls_close(&slow[i]);
                atomic_fetch_sub(&slow_open, 1);
            }
        at++;
        usleep(200000);
    }
    return NULL;
}

static bool attackers_closed(void)
{
    for (int i = 0; i < IDLE; i++)
        if (!closed_by_daemon(idle[i], NULL))
            return false;
    return atomic_load(&slow_open) == 0;
}

START_TEST(idle_and_slowloris_connections_leave_foreman_served)
{
    long threads0 = proc_status("Threads"), rss0 = proc_status("VmRSS"), threads = 0, rss = 0;
    double took[REQUESTS], attack_end, closed_after, quiet[FLOOR];
    int failed = 0, handshaken;
    pthread_t dribbler;

    for (int i = 0; i < FLOOR; i++) /* the floor: the same requests without an attack */
        ck_assert_int_eq(trusted_count(&quiet[i]), 200);
    qsort(quiet, FLOOR, sizeof(quiet[0]), by_value);
    /* every connection first, so that the handshakes do not outlast the deadline of the
     * connections accepted in between */
    for (int i = 0; i < SLOWLORIS; i++)
        slow[i].fd = tcp_from("127.0.0.2", false);
    for (int i = 0; i < IDLE; i++)
        idle[i] = tcp_from("127.0.0.2", true);
    atomic_store(&slow_open, 0);
    for (int i = 0; i < SLOWLORIS; i++) {
        if (tls_handshake(&slow[i], slow[i].fd, NULL))
            atomic_fetch_add(&slow_open, 1);
        else
            tls_close(&slow[i]); /* refused at once, or the deadline passed */
    }
    handshaken = atomic_load(&slow_open);
    attack_end = tu_now();
    atomic_store(&dribbling, true);
    ck_assert_int_eq(pthread_create(&dribbler, NULL, dribble, NULL), 0);
    for (int i = 0; i < REQUESTS; i++) {
        /* after three failures the rest count as failed at the client's timeout */
        if (failed < 3 ? trusted_count(&took[i]) != 200 : (took[i] = 5, true))
            failed++;
        threads = MAX(threads, proc_status("Threads"));
        rss = MAX(rss, proc_status("VmRSS"));
    }
    /* each was opened before attack_end: all closed by then + the deadline + the reaper's
     * period and the dribbler's 200 ms, with two seconds to spare */
    closed_after = WAIT_UNTIL(attackers_closed(), attack_end + HEADER_TIMEOUT + 3 - tu_now())
                       ? tu_now() - attack_end
                       : -1;
    atomic_store(&dribbling, false);
    pthread_join(dribbler, NULL);
    qsort(took, REQUESTS, sizeof(took[0]), by_value);
    printf("{\"case\":\"flood\",\"idle\":%d,\"slowloris\":%d,\"handshakes\":%d,"
           "\"requests\":%d,\"failed\":%d,\"quiet_p50_ms\":%.1f,\"p50_ms\":%.1f,\"p99_ms\":%.1f,"
           "\"threads_idle\":%ld,"
           "\"threads_max\":%ld,\"rss_idle_kib\":%ld,\"rss_max_kib\":%ld,"
           "\"attackers_closed_after_s\":%.2f}\n",
           IDLE, SLOWLORIS, handshaken, REQUESTS, failed, quiet[FLOOR / 2] * 1e3,
           took[REQUESTS / 2] * 1e3, took[REQUESTS * 99 / 100 - 1] * 1e3, threads0, threads, rss0,
           rss, closed_after);
    fflush(stdout);
    for (int i = 0; i < SLOWLORIS; i++)
        tls_close(&slow[i]);
    for (int i = 0; i < IDLE; i++)
        if (idle[i] >= 0)
            close(idle[i]);
    ck_assert_msg(failed == 0, "%d of %d trusted requests failed", failed, REQUESTS);
    ck_assert_msg(took[REQUESTS * 99 / 100 - 1] <= 1.0, "p99 %.3f s",
                  took[REQUESTS * 99 / 100 - 1]);
    ck_assert_msg(threads <= threads0 + EXTRA_THREADS, "threads %ld -> %ld", threads0, threads);
    ck_assert_msg(!RSS_MEANINGFUL || rss <= rss0 + EXTRA_RSS_KIB, "RSS %ld -> %ld KiB", rss0, rss);
    ck_assert_msg(closed_after >= 0, "attacker connections still open %d s after the attack",
                  HEADER_TIMEOUT + 3);
}
END_TEST

/* ---- (b) uploads without a client certificate
 * ---------------------------------------------------- */

#define UPLOADS 60

/* A POST of a body as large as the daemon takes (its memory: MAX_BODY with the NUL): the
 * header, and the first 64 KiB unless the daemon closed the connection by then. */
static bool upload_start(struct tls *t, const char *extra)
{
    static char chunk[16384];
    char head[512];

    memset(chunk, 'x', sizeof(chunk));
    snprintf(head, sizeof(head),
             "POST /dynflow/tasks/launch HTTP/1.1\r\nHost: localhost\r\n"
             "Content-Type: application/json\r\nContent-Length: %u\r\n%s\r\n",
             MAX_BODY - 1, extra);
    if (!tls_send(t, head, strlen(head)))
        return false;
    for (int i = 0; i < 4 && tls_send(t, chunk, sizeof(chunk)); i++)
        ;
    return true;
}

START_TEST(uploads_without_a_certificate_are_refused_unread)
{
    static struct tls up[UPLOADS];
    long rss0 = proc_status("VmRSS"), rss = 0;
    int refused = 0;
    double t0 = tu_now();

    for (int i = 0; i < UPLOADS; i++) {
        ck_assert_msg(tls_open(&up[i], "127.0.0.3", NULL), "handshake %d failed", i);
        ck_assert(upload_start(&up[i], ""));
    }
    for (int i = 0; i < UPLOADS; i++) {
        const char *reply = tls_reply(&up[i], 3);
        ck_assert_msg(strncmp(reply, "HTTP/1.1 403", 12) == 0,
                      "upload %d: not a 403 before its body was sent: '%.200s'", i, reply);
        ck_assert_msg(strstr(reply, "application/json") != NULL &&
                          strstr(reply, "\r\n\r\n{\"error\":\"") != NULL,
                      "%s", reply);
        refused++;
        rss = MAX(rss, proc_status("VmRSS"));
    }
    printf("{\"case\":\"unauthenticated_uploads\",\"connections\":%d,\"declared_bytes\":%u,"
           "\"refused_403\":%d,\"seconds\":%.2f,\"rss_before_kib\":%ld,\"rss_max_kib\":%ld}\n",
           UPLOADS, MAX_BODY - 1, refused, tu_now() - t0, rss0, rss);
    fflush(stdout);
    for (int i = 0; i < UPLOADS; i++) {
        ck_assert_msg(WAIT_UNTIL(closed_by_daemon(up[i].fd, up[i].session), 2),
                      "upload %d: the daemon keeps the connection to read the body", i);
        tls_close(&up[i]);
    }
    ck_assert_msg(!RSS_MEANINGFUL || rss <= rss0 + 16 * 1024, "RSS %ld -> %ld KiB", rss0, rss);
}
END_TEST

/* ---- (c) bodies in flight over :max_body_memory:
 * ------------------------------------------------- */

#define HELD (BODY_MEMORY / MAX_BODY) /* uploads that fill the limit */

/* A trusted upload with Expect: 100-continue: the daemon says at once whether it takes the
 * body (100 Continue) or not (the reply, into reply). */
static bool upload_admitted(struct tls *t, const char **reply)
{
    ck_assert(tls_open(t, "127.0.0.1", "client"));
    ck_assert(upload_start(t, "Expect: 100-continue\r\n"));
    *reply = tls_reply(t, 3);
    return strncmp(*reply, "HTTP/1.1 100", 12) == 0;
}

static bool one_more_admitted(void)
{
    struct tls t;
    const char *reply;
    bool ok = upload_admitted(&t, &reply);

    tls_close(&t);
    return ok;
}

START_TEST(bodies_over_the_memory_limit_get_503)
{
    struct tls held[HELD], over;
    const char *reply;
    bool admitted;

    for (unsigned i = 0; i < HELD; i++)
        ck_assert_msg(upload_admitted(&held[i], &reply), "upload %u: '%.200s'", i, reply);
    ck_assert(!upload_admitted(&over, &reply));
    ck_assert_msg(strncmp(reply, "HTTP/1.1 503", 12) == 0, "'%.300s'", reply);
    ck_assert_msg(strstr(reply, "application/json") != NULL &&
                      strstr(reply, "would pass :max_body_memory: (67108864 bytes)") != NULL,
                  "%s", reply);
    tls_close(&over);
    /* a body that ends gives its memory back */
    tls_close(&held[0]);
    admitted = false;
    for (double until = tu_now() + 10; !admitted && tu_now() < until;)
        admitted = one_more_admitted();
    ck_assert_msg(admitted, "the memory of a closed upload was not given back");
    for (unsigned i = 1; i < HELD; i++)
        tls_close(&held[i]);
    printf("{\"case\":\"body_memory\",\"limit_bytes\":%u,\"held\":%u,\"over\":503}\n", BODY_MEMORY,
           HELD);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("flood");
    TCase *tc = tcase_create("flood");

    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, idle_and_slowloris_connections_leave_foreman_served);
    tcase_add_test(tc, uploads_without_a_certificate_are_refused_unread);
    tcase_add_test(tc, bodies_over_the_memory_limit_get_503);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
