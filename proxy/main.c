/*
 * smart-proxyd: reads Foreman's settings.yml and settings.d/, loads the
 * enabled modules, mounts their routes and serves them until SIGTERM.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/http.h"
#include "proxy/root.h"
#include "proxy/settings.h"

#define MAX_BODY (16u << 20)

static const char *const level_names[] = {[SP_LOG_ERROR] = "ERROR",
                                          [SP_LOG_WARNING] = "WARN",
                                          [SP_LOG_INFO] = "INFO",
                                          [SP_LOG_DEBUG] = "DEBUG"};

static void vlog(int level, const char *request_id, const char *fmt, va_list ap)
{
    char when[32], msg[2048];
    time_t now = time(NULL);
    struct tm tm;

    gmtime_r(&now, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    fprintf(stderr, "%s %s [%.8s] %s\n", when,
            level >= SP_LOG_ERROR && level <= SP_LOG_DEBUG && level_names[level]
                ? level_names[level]
                : "INFO",
            request_id ? request_id : "-", msg);
}

static void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void log_msg(int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(level, NULL, fmt, ap);
    va_end(ap);
}

/* The modules' log, through the host services table. */
static void module_log(void *ctx, int level, const char *fmt, ...)
{
    char prefixed[512];
    va_list ap;

    snprintf(prefixed, sizeof(prefixed), "module '%s', %s", (const char *)ctx, fmt);
    va_start(ap, fmt);
    vlog(level, NULL, prefixed, ap);
    va_end(ap);
}

static void access_log(void *ud, const struct sp_request *req, unsigned status, double ms)
{
    (void)ud;
    fprintf(stderr, "%s %s %u %.2fms [%.8s] %s\n", req->method, req->path, status, ms,
            req->request_id, req->remote_addr);
}

/* ---- authorization (reference/protocol.md §1.5) ------------------------------------------- */

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

static unsigned authorize(void *ud, const struct sp_request *req, unsigned auth, char *why,
                          size_t len)
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

/* ---- modules ----------------------------------------------------------------------------------
 */

struct proxy {
    struct sp_settings settings;
    struct sp_root root;
    struct sp_host_api *hosts;
    struct sp_server *server;
};

/* HTTP when :http_port: is set; HTTPS needs a certificate, its key and the CA (§1.3).
 * HTTPS listeners are not built yet, so only HTTP is offered. */
static unsigned available_listeners(const struct proxy *px)
{
    return sp_setting(&px->settings, "http_port") != NULL ? SP_HTTP : 0;
}

static int start_module(struct proxy *px, const char *name, json_t *settings,
                        struct sp_running_module *rm, struct sp_host_api *host)
{
    const char *dir = sp_setting_str(&px->settings, "module_directory");
    char path[4096], why[512] = "";
    struct sp_error err;
    int rc;

    snprintf(path, sizeof(path), "%s/%s.so", dir ? dir : MODULEDIR, name);
    rc = sp_module_open(path, &rm->lm, &err);
    if (rc < 0) {
        log_msg(SP_LOG_ERROR, "%s", err.text);
        return rc;
    }
    *host = (struct sp_host_api){.abi_major = SP_MODULE_ABI_MAJOR,
                                 .abi_minor = SP_MODULE_ABI_MINOR,
                                 .struct_size = sizeof(*host),
                                 .ctx = (void *)rm->lm.m->name,
                                 .log = module_log,
                                 .global_settings = px->settings.global};
    rc = rm->lm.m->init(host, settings, &rm->state, why, sizeof(why));
    rm->listeners = sp_module_enabled(&px->settings, name) & available_listeners(px);
    rm->state_name = rc == 0 ? "running" : "failed";
    if (rc < 0)
        log_msg(SP_LOG_ERROR, "Couldn't enable '%s': %s", name, why);
    else
        log_msg(SP_LOG_INFO, "module '%s' %s loaded from %s", name, rm->lm.m->version, path);
    return rc;
}

static int start_modules(struct proxy *px)
{
    size_t n = json_object_size(px->settings.modules), i = 0;
    json_t *settings;
    const char *name;

    px->root.modules = calloc(n + 1, sizeof(*px->root.modules));
    px->hosts = calloc(n + 1, sizeof(*px->hosts));
    json_object_foreach(px->settings.modules, name, settings)
    {
        if (sp_module_enabled(&px->settings, name) == SP_DISABLED)
            continue;
        if (start_module(px, name, settings, &px->root.modules[i], &px->hosts[i]) < 0)
            return -1; /* at start, every module error is fatal */
        i++;
    }
    px->root.n_modules = i;
    px->root.settings = &px->settings;
    return 0;
}

/* Modules mount at "/<name>" unless their settings say ":mount:" ("/" for the standalone core). */
static void mount_all(struct proxy *px)
{
    struct sp_mount *mounts = calloc(px->root.n_modules + 1, sizeof(*mounts));

    mounts[0] = (struct sp_mount){"", sp_root_routes(), &px->root, SP_BOTH};
    for (size_t i = 0; i < px->root.n_modules; i++) {
        struct sp_running_module *m = &px->root.modules[i];
        const char *mount = json_string_value(
            json_object_get(sp_module_settings(&px->settings, m->lm.m->name), "mount"));
        if (mount == NULL)
            snprintf(m->mount, sizeof(m->mount), "/%s", m->lm.m->name);
        else
            snprintf(m->mount, sizeof(m->mount), "%s", strcmp(mount, "/") == 0 ? "" : mount);
        mounts[i + 1] =
            (struct sp_mount){m->mount, m->lm.m->routes(m->state), m->state, m->listeners};
    }
    sp_server_mount(px->server, mounts, px->root.n_modules + 1);
    free(mounts);
}

static int listen_all(struct proxy *px)
{
    json_t *port = sp_setting(&px->settings, "http_port"), *host;
    struct sp_error err;
    size_t i;

    if (port == NULL) {
        log_msg(SP_LOG_WARNING, "no :http_port: set; HTTPS listeners are not built yet");
        return 0;
    }
    json_array_foreach(sp_setting(&px->settings, "bind_host"), i, host)
    {
        unsigned bound;
        if (sp_server_listen_http(px->server, json_string_value(host),
                                  (unsigned)json_integer_value(port), &bound, &err) < 0) {
            log_msg(SP_LOG_ERROR, "%s", err.text);
            return -1;
        }
        log_msg(SP_LOG_INFO, "listening on http://%s:%u", json_string_value(host), bound);
    }
    return 0;
}

static void stop(struct proxy *px)
{
    sp_server_free(px->server);
    for (size_t i = 0; i < px->root.n_modules; i++) {
        struct sp_running_module *m = &px->root.modules[i];
        if (m->state_name != NULL && strcmp(m->state_name, "running") == 0)
            m->lm.m->shutdown(m->state);
        sp_module_close(&m->lm);
    }
    free(px->root.modules);
    free(px->hosts);
    sp_settings_free(&px->settings);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: smart-proxyd [--config FILE] [--check-config]\n"
            "  --config FILE    settings.yml (default %s/smart-proxy/settings.yml)\n"
            "  --check-config   validate the settings and exit\n",
            SYSCONFDIR);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"check-config", no_argument, NULL, 'k'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    char default_config[4096];
    const char *config = default_config;
    bool check_only = false;
    struct proxy px = {0};
    struct sp_error err;
    sigset_t signals;
    int c, sig;

    snprintf(default_config, sizeof(default_config), "%s/smart-proxy/settings.yml", SYSCONFDIR);
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        if (c == 'c')
            config = optarg;
        else if (c == 'k')
            check_only = true;
        else {
            usage(c == 'h' ? stdout : stderr);
            return c == 'h' ? 0 : 2;
        }
    }
    if (sp_settings_load(config, &px.settings, &err) < 0) {
        log_msg(SP_LOG_ERROR, "%s", err.text);
        return 1;
    }
    if (check_only) {
        printf("%s: settings OK\n", config);
        sp_settings_free(&px.settings);
        return 0;
    }
    /* signals go to the main thread only: block them before any thread starts */
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    px.server = sp_server_new(MAX_BODY, &(struct sp_server_hooks){.ud = &px.settings,
                                                                  .authorize = authorize,
                                                                  .access = access_log});
    if (start_modules(&px) < 0) {
        stop(&px);
        return 1;
    }
    mount_all(&px);
    if (listen_all(&px) < 0) {
        stop(&px);
        return 1;
    }
    while (sigwait(&signals, &sig) == 0 && sig == SIGHUP)
        log_msg(SP_LOG_WARNING, "SIGHUP: reloading the settings is not built yet");
    log_msg(SP_LOG_INFO, "stopping on signal %d", sig);
    stop(&px);
    return 0;
}
