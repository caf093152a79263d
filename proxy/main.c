/*
 * smart-proxyd: reads Foreman's settings.yml and settings.d/, loads the
 * enabled modules, mounts their routes and serves them until SIGTERM.
 */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "proxy/auth.h"
#include "proxy/http.h"
#include "proxy/log.h"
#include "proxy/notify.h"
#include "proxy/root.h"
#include "proxy/settings.h"
#include "proxy/tls.h"

#define MAX_BODY (16u << 20)

static void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void log_msg(int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    sp_vlog(level, NULL, fmt, ap);
    va_end(ap);
}

/* ---- host services: ctx is the module's struct sp_running_module ------------------------- */

static void module_log(void *ctx, int level, const char *fmt, ...)
{
    const struct sp_running_module *rm = ctx;
    char prefixed[512];
    va_list ap;

    snprintf(prefixed, sizeof(prefixed), "module '%s', %s", rm->lm.m->name, fmt);
    va_start(ap, fmt);
    sp_vlog(level, NULL, prefixed, ap);
    va_end(ap);
}

static json_t *claimed_stems; /* the proxy's claimed, for module_settings_of */

static const json_t *module_settings_of(void *ctx, const char *stem)
{
    const struct sp_running_module *rm = ctx;

    json_object_set_new(claimed_stems, stem, json_true());
    return sp_module_settings(rm->root->settings, stem);
}

static int module_add_feature(void *ctx, const char *name, const json_t *capabilities)
{
    struct sp_running_module *rm = ctx;

    return sp_root_add_feature(rm->root, rm, name, NULL, capabilities);
}

static int module_add_versioned_feature(void *ctx, const char *name, const char *version,
                                        const json_t *capabilities)
{
    struct sp_running_module *rm = ctx;

    return sp_root_add_feature(rm->root, rm, name, version, capabilities);
}

static int module_mount(void *ctx, const char *prefix, const struct sp_route *routes, void *state)
{
    struct sp_running_module *rm = ctx;

    return sp_root_add_mount(rm->root, rm, prefix, routes, state);
}

static int module_load_object(void *ctx, const char *path, const struct sp_abi_expect *expect,
                              void **handle, const void **entry, char *errbuf, size_t errlen)
{
    struct sp_error err;
    int rc = sp_object_open(path, expect, handle, entry, &err);

    (void)ctx;
    if (rc < 0)
        snprintf(errbuf, errlen, "%s", err.text);
    return rc;
}

static void module_unload_object(void *ctx, void *handle)
{
    (void)ctx;
    dlclose(handle);
}

static void access_log(void *ud, const struct sp_request *req, unsigned status, double ms)
{
    (void)ud;
    sp_log(status >= 500 ? SP_LOG_ERROR : SP_LOG_INFO, req->request_id,
           "%s %s from %s: %u in %.2f ms", req->method, req->path, req->remote_addr, status, ms);
}

/* ---- modules ----------------------------------------------------------------------------------
 */

#define MAX_RELOADS 64

struct proxy {
    struct sp_settings *_Atomic settings;     /* the current settings */
    struct sp_settings *retired[MAX_RELOADS]; /* earlier ones: requests may still read them */
    size_t n_retired;
    struct sp_root root;
    struct sp_host_api *hosts;
    struct sp_server *server;
    json_t *claimed; /* settings.d stems modules asked for through settings_of */
};

static bool https_configured(const struct sp_settings *s)
{
    return sp_setting(s, "https_port") && sp_setting(s, "ssl_certificate") &&
           sp_setting(s, "ssl_private_key") && sp_setting(s, "ssl_ca_file");
}

/* HTTP when :http_port: is set; HTTPS when the certificate, its key and the CA are (§1.3), and
 * not said off (upstream core's :use_https: false, which leaves no :https_port:). */
static unsigned available_listeners(const struct proxy *px)
{
    return (sp_setting(px->settings, "http_port") != NULL ? SP_HTTP : 0) |
           (https_configured(px->settings) ? SP_HTTPS : 0);
}

/* Modules mount at "/<name>" unless their settings say ":mount:" ("/" for the standalone core). */
static void name_mount(const struct proxy *px, struct sp_running_module *m)
{
    const char *mount = json_string_value(
        json_object_get(sp_module_settings(px->settings, m->lm.m->name), "mount"));

    if (mount == NULL)
        snprintf(m->mount, sizeof(m->mount), "/%s", m->lm.m->name);
    else
        snprintf(m->mount, sizeof(m->mount), "%s", strcmp(mount, "/") == 0 ? "" : mount);
}

static int start_module(struct proxy *px, const char *name, json_t *settings,
                        struct sp_running_module *rm, struct sp_host_api *host)
{
    const char *dir = sp_setting_str(px->settings, "module_directory");
    char path[4096], why[512] = "";
    struct sp_error err;
    int rc;

    snprintf(path, sizeof(path), "%s/%s.so", dir ? dir : MODULEDIR, name);
    if (access(path, F_OK) < 0 && errno == ENOENT)
        return 1; /* settings of what a module loads (a dynflow plugin)? see start_modules */
    rc = sp_module_open(path, &rm->lm, &err);
    if (rc < 0) {
        log_msg(SP_LOG_ERROR, "%s", err.text);
        return rc;
    }
    rm->root = &px->root;
    *host = (struct sp_host_api){.abi_major = SP_MODULE_ABI_MAJOR,
                                 .abi_minor = SP_MODULE_ABI_MINOR,
                                 .struct_size = sizeof(*host),
                                 .ctx = rm,
                                 .log = module_log,
                                 .global_settings = px->settings->global,
                                 .settings_of = module_settings_of,
                                 .add_feature = module_add_feature,
                                 .load_object = module_load_object,
                                 .unload_object = module_unload_object,
                                 .mount = module_mount,
                                 .add_versioned_feature = module_add_versioned_feature};
    rc = rm->lm.m->init(host, settings, &rm->state, why, sizeof(why));
    rm->listeners = sp_module_enabled(px->settings, name) & available_listeners(px);
    rm->state_name = rc == 0 ? "running" : "failed";
    name_mount(px, rm);
    if (rc < 0) {
        log_msg(SP_LOG_ERROR, "Couldn't enable '%s': %s", name, why);
        sp_module_close(&rm->lm);
    } else
        log_msg(SP_LOG_INFO, "module '%s' %s loaded from %s", name, rm->lm.m->version, path);
    return rc;
}

static void check_claimed(struct proxy *px, json_t *missing);

static int start_modules(struct proxy *px)
{
    size_t n = json_object_size(px->settings->modules), i = 0;
    json_t *settings, *missing = json_array();
    const char *name;
    int rc;

    px->claimed = claimed_stems = json_object();
    px->root.modules = calloc(n + 1, sizeof(*px->root.modules));
    px->hosts = calloc(n + 1, sizeof(*px->hosts));
    px->root.settings = px->settings;
    json_object_foreach(px->settings->modules, name, settings)
    {
        if (sp_module_enabled(px->settings, name) == SP_DISABLED)
            continue;
        rc = start_module(px, name, settings, &px->root.modules[i], &px->hosts[i]);
        if (rc < 0) {
            json_decref(missing);
            return -1; /* at start, every module error is fatal */
        }
        if (rc == 0)
            px->root.n_modules = ++i;
        else
            json_array_append_new(missing, json_string(name));
    }
    check_claimed(px, missing);
    return 0;
}

/* An enabled settings.d file with no module of its name, which no module read either, is
 * someone else's (Foreman's installer writes one per smart-proxy plugin): said, then left. */
static void check_claimed(struct proxy *px, json_t *missing)
{
    const char *dir = sp_setting_str(px->settings, "module_directory");
    json_t *name;
    size_t k;

    json_array_foreach(missing, k, name)
    {
        if (json_object_get(px->claimed, json_string_value(name)) == NULL)
            log_msg(SP_LOG_WARNING,
                    "settings.d/%s.yml enables '%s', but %s/%s.so does not exist and no module "
                    "reads that file: ignored",
                    json_string_value(name), json_string_value(name), dir ? dir : MODULEDIR,
                    json_string_value(name));
    }
    json_decref(missing);
}

/* The routes of the running modules (again after a reload: a module may change them, and
 * requests in flight keep the table they matched in). */
static void mount_all(struct proxy *px)
{
    size_t n = px->root.n_modules + 1;
    struct sp_mount *mounts = calloc(n + px->root.n_mounts, sizeof(*mounts));

    mounts[0] = (struct sp_mount){"", sp_root_routes(), &px->root, SP_BOTH};
    for (size_t i = 0; i < px->root.n_modules; i++) {
        struct sp_running_module *m = &px->root.modules[i];
        mounts[i + 1] =
            (struct sp_mount){m->mount, m->lm.m->routes(m->state), m->state, m->listeners};
    }
    for (size_t i = 0; i < px->root.n_mounts; i++) {
        const struct sp_extra_mount *em = &px->root.mounts[i];
        mounts[n++] = (struct sp_mount){em->prefix, em->routes, em->state, em->owner->listeners};
    }
    sp_server_mount(px->server, mounts, n);
    free(mounts);
}

static bool loopback(const char *host)
{
    struct in_addr a;

    return inet_pton(AF_INET, host, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

/* The core checks no client over HTTP: said when :bind_host: opens that beyond loopback. */
static void warn_open_http(const struct sp_settings *s)
{
    json_t *host;
    size_t i;

    if (!s->core || sp_setting(s, "http_port") == NULL)
        return;
    json_array_foreach(sp_setting(s, "bind_host"), i, host)
    {
        if (!loopback(json_string_value(host)))
            log_msg(SP_LOG_WARNING,
                    "%s: :bind_host: %s opens the core's HTTP port %lld beyond loopback, and the "
                    "core checks no client over HTTP: anyone who reaches it can run jobs",
                    s->path, json_string_value(host),
                    (long long)json_integer_value(sp_setting(s, "http_port")));
    }
}

static int listen_on(struct proxy *px, unsigned port, const struct sp_tls *tls)
{
    struct sp_error err;
    json_t *host;
    size_t i;

    json_array_foreach(sp_setting(px->settings, "bind_host"), i, host)
    {
        unsigned bound;
        if (sp_server_listen(px->server, json_string_value(host), port, tls, &bound, &err) < 0) {
            log_msg(SP_LOG_ERROR, "%s", err.text);
            return -1;
        }
        log_msg(SP_LOG_INFO, "listening on %s://%s:%u", tls ? "https" : "http",
                json_string_value(host), bound);
    }
    return 0;
}

static int listen_all(struct proxy *px)
{
    const struct sp_settings *s = px->settings;
    char priorities[1024], why[256];
    struct sp_tls tls = {.cert_file = sp_setting_str(s, "ssl_certificate"),
                         .key_file = sp_setting_str(s, "ssl_private_key"),
                         .ca_file = sp_setting_str(s, "ssl_ca_file"),
                         .priorities = priorities};

    if (sp_tls_priorities(s, priorities, sizeof(priorities), why, sizeof(why)) < 0) {
        log_msg(SP_LOG_ERROR, "%s: %s", px->settings->path, why);
        return -1;
    }
    if (available_listeners(px) == 0)
        log_msg(SP_LOG_WARNING, "neither :http_port: nor the SSL settings are set: not listening");
    warn_open_http(s);
    if (sp_setting(s, "http_port") != NULL &&
        listen_on(px, (unsigned)json_integer_value(sp_setting(s, "http_port")), NULL) < 0)
        return -1;
    if (https_configured(s) &&
        listen_on(px, (unsigned)json_integer_value(sp_setting(s, "https_port")), &tls) < 0)
        return -1;
    return 0;
}

/* Connections take a descriptor each (up to :max_connections: per listener): the soft limit
 * goes up to the hard one, as the runner dispatcher does too. */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_msg(SP_LOG_WARNING, "cannot raise the descriptor limit to %llu: %s",
                    (unsigned long long)rl.rlim_max, strerror(errno));
    }
}

/* The HTTP server's limits: settings.yml's, SP_SERVER_LIMITS_DEFAULT for those it leaves out. */
static void set_limits(struct proxy *px)
{
    struct sp_server_limits limits = SP_SERVER_LIMITS_DEFAULT;
    const struct sp_settings *s = px->settings;
    json_t *v;

    if ((v = sp_setting(s, "max_connections")) != NULL)
        limits.max_connections = (unsigned)json_integer_value(v);
    if ((v = sp_setting(s, "max_connections_per_address")) != NULL)
        limits.per_address = (unsigned)json_integer_value(v);
    if ((v = sp_setting(s, "request_header_timeout")) != NULL)
        limits.header_timeout = (unsigned)json_integer_value(v);
    if ((v = sp_setting(s, "max_body_memory")) != NULL)
        limits.body_memory = (size_t)json_integer_value(v);
    sp_server_set_limits(px->server, &limits);
}

static void stop(struct proxy *px)
{
    if (px->server != NULL)
        sp_server_free(px->server);
    for (size_t i = 0; i < px->root.n_modules; i++) {
        struct sp_running_module *m = &px->root.modules[i];
        if (m->state_name != NULL && strcmp(m->state_name, "running") == 0)
            m->lm.m->shutdown(m->state);
        sp_module_close(&m->lm);
    }
    sp_root_free_features(&px->root);
    json_decref(px->claimed);
    free(px->root.modules);
    free(px->hosts);
    for (size_t i = 0; i < px->n_retired; i++) {
        sp_settings_free(px->retired[i]);
        free(px->retired[i]);
    }
    sp_settings_free(px->settings);
    free(px->settings);
    sp_log_close();
}

/* A reload cannot turn a proxy into the core or back: the listeners' addresses (the core's
 * loopback default) and the way clients are accepted would not match. */
static int same_role(const struct sp_settings *running, const struct sp_settings *fresh,
                     struct sp_error *err)
{
    if (fresh->core == running->core)
        return 0;
    return sp_fail(err, -EINVAL, "%s makes smart-proxyd %s, which takes a restart", fresh->path,
                   fresh->core ? "the standalone core (a module at /)"
                               : "a proxy (no module at /)");
}

/* SIGHUP: the settings again; trusted hosts, logging, the modules' own settings and their
 * routes change at once, listeners and the set of modules at the next start. */
static void reload(struct proxy *px, const char *config)
{
    struct sp_settings *fresh = calloc(1, sizeof(*fresh));
    struct sp_error err;
    int rc = px->n_retired == MAX_RELOADS ? sp_fail(&err, -ENOSPC, "too many reloads, restart")
                                          : sp_settings_load(config, fresh, &err);

    if (rc == 0 &&
        ((rc = same_role(px->settings, fresh, &err)) < 0 || (rc = sp_log_open(fresh, &err)) < 0))
        sp_settings_free(fresh);
    if (rc < 0) {
        log_msg(SP_LOG_ERROR, "reload: %s; the running settings stay", err.text);
        free(fresh);
        return;
    }
    for (size_t i = 0; i < px->root.n_modules; i++) {
        struct sp_running_module *m = &px->root.modules[i];
        char why[512] = "";
        if (strcmp(m->state_name, "running") == 0 && m->lm.m->reload != NULL &&
            m->lm.m->reload(m->state, sp_module_settings(fresh, m->lm.m->name), why, sizeof(why)) <
                0)
            log_msg(SP_LOG_ERROR, "reload of module '%s' failed: %s", m->lm.m->name, why);
    }
    px->retired[px->n_retired++] = px->settings;
    px->settings = fresh; /* atomic: requests in flight finish with the settings they read */
    mount_all(px);
    log_msg(SP_LOG_INFO, "settings reloaded from %s", config);
}

static unsigned authorize(void *ud, const struct sp_request *req, const char *cert_rejected,
                          unsigned auth, char *why, size_t len)
{
    struct proxy *px = ud;

    return sp_authorize(px->settings, req, cert_rejected, auth, why, len);
}

/* CLOCK_MONOTONIC in microseconds, as systemd wants it with RELOADING=1. */
static long long monotonic_usec(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000000 + now.tv_nsec / 1000;
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
    struct proxy px = {.n_retired = 0};
    struct sp_settings *settings = calloc(1, sizeof(*settings));
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
    if (sp_settings_load(config, settings, &err) < 0 || sp_log_open(settings, &err) < 0) {
        fprintf(stderr, "smart-proxyd: %s\n", err.text);
        free(settings);
        return 1;
    }
    px.settings = settings;
    if (check_only) {
        warn_open_http(px.settings);
        printf("%s: settings OK\n", config);
        stop(&px);
        return 0;
    }
    if (sp_notify_open(&err) < 0) {
        log_msg(SP_LOG_ERROR, "%s", err.text);
        stop(&px);
        return 1;
    }
    /* signals go to the main thread only: block them before any thread starts */
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    sigaddset(&signals, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    px.server = sp_server_new(
        MAX_BODY,
        &(struct sp_server_hooks){.ud = &px, .authorize = authorize, .access = access_log});
    if (start_modules(&px) < 0) {
        stop(&px);
        return 1;
    }
    mount_all(&px);
    raise_fd_limit();
    set_limits(&px);
    if (listen_all(&px) < 0) {
        stop(&px);
        return 1;
    }
    sp_notify("READY=1\nMAINPID=%ld", (long)getpid()); /* every listener listens */
    while (sigwait(&signals, &sig) == 0 && (sig == SIGHUP || sig == SIGUSR1)) {
        if (sig == SIGUSR1) {
            sp_log_reopen();
            continue;
        }
        sp_notify("RELOADING=1\nMONOTONIC_USEC=%lld", monotonic_usec());
        reload(&px, config);
        sp_notify("READY=1");
    }
    sp_notify("STOPPING=1");
    log_msg(SP_LOG_INFO, "stopping on signal %d", sig);
    stop(&px);
    return 0;
}
