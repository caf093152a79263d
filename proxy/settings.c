#include "proxy/settings.h"

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/tls.h"

enum kind {
    K_STRING,
    K_PORT,
    K_BOOL,
    K_LIST,      /* one scalar or a list of them, kept as a list of strings */
    K_LOG_LEVEL, /* UNKNOWN FATAL ERROR WARN INFO DEBUG, any case */
    K_ENABLED,   /* true, false, http, https */
    K_POSITIVE,  /* an integer from 1 to INT_MAX */
};

struct key {
    const char *name;
    enum kind kind;
    const char *def; /* JSON text, or NULL for no default */
};

/* The smart-proxy's global keys we use; other keys of settings.yml are kept as they are. */
static const struct key global_keys[] = {
    {"http_port", K_PORT, NULL},
    {"https_port", K_PORT, "8443"},
    {"bind_host", K_LIST, "[\"*\"]"},
    {"ssl_certificate", K_STRING, NULL},
    {"ssl_private_key", K_STRING, NULL},
    {"ssl_ca_file", K_STRING, NULL},
    {"ssl_disabled_ciphers", K_LIST, "[]"},
    {"tls_disabled_versions", K_LIST, "[]"},
    {"trusted_hosts", K_LIST, NULL},
    {"forward_verify", K_BOOL, "true"},
    {"foreman_url", K_STRING, NULL},
    {"foreman_ssl_cert", K_STRING, NULL},
    {"foreman_ssl_key", K_STRING, NULL},
    {"foreman_ssl_ca", K_STRING, NULL},
    {"log_file", K_STRING, "\"STDOUT\""},
    {"log_level", K_LOG_LEVEL, "\"INFO\""},
    {"settings_directory", K_STRING, NULL},
    {"module_directory", K_STRING, NULL},
    /* the HTTP server's limits (doc/http-server.md); unset: SP_SERVER_LIMITS_DEFAULT */
    {"max_connections", K_POSITIVE, NULL},
    {"max_connections_per_address", K_POSITIVE, NULL},
    {"request_header_timeout", K_POSITIVE, NULL},
    {"max_body_memory", K_POSITIVE, NULL},
    {NULL, K_STRING, NULL},
};

static const struct key module_keys[] = {
    {"enabled", K_ENABLED, "false"},
    {"mount", K_STRING, NULL},
    {NULL, K_STRING, NULL},
};

static const char *const kind_names[] = {
    [K_STRING] = "a string",
    [K_PORT] = "a port number (0-65535; 0: any free port, which the log names)",
    [K_BOOL] = "true or false",
    [K_LIST] = "a value or a list of values",
    [K_LOG_LEVEL] = "one of UNKNOWN, FATAL, ERROR, WARN, INFO, DEBUG",
    [K_ENABLED] = "true, false, http or https",
    [K_POSITIVE] = "a whole number from 1 to 2147483647",
};

static json_t *scalar_string(json_t *v)
{
    char buf[64];

    if (json_is_string(v))
        return json_incref(v);
    if (json_is_integer(v))
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(buf, sizeof(buf), "%.15g", json_real_value(v)); /* tls_disabled_versions: 1.1 */
    else
        return NULL;
    return json_string(buf);
}

static json_t *as_list(json_t *v)
{
    json_t *list = json_array(), *item, *s;
    size_t i;

    if (!json_is_array(v)) {
        s = scalar_string(v);
        if (s == NULL) {
            json_decref(list);
            return NULL;
        }
        json_array_append_new(list, s);
        return list;
    }
    json_array_foreach(v, i, item)
    {
        s = scalar_string(item);
        if (s == NULL) {
            json_decref(list);
            return NULL;
        }
        json_array_append_new(list, s);
    }
    return list;
}

static json_t *as_port(json_t *v)
{
    long long port = -1;
    char *end;

    if (json_is_integer(v))
        port = json_integer_value(v);
    else if (json_is_string(v) && json_string_value(v)[0] != '\0') {
        port = strtoll(json_string_value(v), &end, 10);
        if (*end != '\0')
            port = -1;
    }
    return port >= 0 && port <= 65535 ? json_integer(port) : NULL;
}

static json_t *as_log_level(json_t *v)
{
    static const char *const levels[] = {"UNKNOWN", "FATAL", "ERROR", "WARN", "INFO", "DEBUG"};

    for (size_t i = 0; json_is_string(v) && i < sizeof(levels) / sizeof(levels[0]); i++)
        if (strcasecmp(json_string_value(v), levels[i]) == 0)
            return json_string(levels[i]);
    return NULL;
}

static json_t *as_enabled(json_t *v)
{
    if (json_is_boolean(v) || json_is_null(v))
        return json_boolean(json_is_true(v));
    if (json_is_string(v) &&
        (strcmp(json_string_value(v), "http") == 0 || strcmp(json_string_value(v), "https") == 0))
        return json_incref(v);
    return NULL;
}

/* New reference: the value in its normal form, or NULL when it has the wrong type. */
static json_t *normalize(enum kind kind, json_t *v)
{
    switch (kind) {
        case K_STRING:
            return json_is_string(v) ? json_incref(v) : NULL;
        case K_PORT:
            return as_port(v);
        case K_BOOL:
            return json_is_boolean(v) ? json_incref(v) : NULL;
        case K_LIST:
            return as_list(v);
        case K_LOG_LEVEL:
            return as_log_level(v);
        case K_ENABLED:
            return as_enabled(v);
        case K_POSITIVE:
            return json_is_integer(v) && json_integer_value(v) >= 1 &&
                           json_integer_value(v) <= INT_MAX
                       ? json_incref(v)
                       : NULL;
    }
    return NULL;
}

static int wrong_type(const char *path, const char *name, enum kind kind, json_t *v,
                      struct sp_error *err)
{
    char *found = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    int rc = sp_fail(err, -EINVAL, "%s: :%s: must be %s, found %s", path, name, kind_names[kind],
                     found ? found : "?");

    free(found);
    return rc;
}

/* Checks the known keys of one file and fills in their defaults. */
static int apply_keys(const char *path, json_t *obj, const struct key *keys, struct sp_error *err)
{
    for (const struct key *k = keys; k->name != NULL; k++) {
        json_t *v = json_object_get(obj, k->name), *norm;
        if (v == NULL || json_is_null(v)) {
            json_object_del(obj, k->name);
            if (k->def != NULL)
                json_object_set_new(obj, k->name, json_loads(k->def, JSON_DECODE_ANY, NULL));
            continue;
        }
        norm = normalize(k->kind, v);
        if (norm == NULL)
            return wrong_type(path, k->name, k->kind, v, err);
        json_object_set_new(obj, k->name, norm);
    }
    return 0;
}

static bool given(json_t *obj, const char *key)
{
    return json_object_get(obj, key) != NULL && !json_is_null(json_object_get(obj, key));
}

/* Gives the smart-proxy key `to` the upstream key's value (stolen) unless it has another. */
static int upstream_into(const char *path, json_t *obj, const char *from, json_t *value,
                         const char *to, enum kind kind, struct sp_error *err)
{
    json_t *mine = json_object_get(obj, to), *norm;
    char *a, *b;
    int rc = 0;

    if (!given(obj, to)) {
        json_object_set_new(obj, to, value);
        return 0;
    }
    norm = normalize(kind, mine);
    if (norm != NULL && !json_equal(norm, value)) { /* a wrong type: apply_keys names it */
        a = json_dumps(json_object_get(obj, from), JSON_ENCODE_ANY | JSON_COMPACT);
        b = json_dumps(mine, JSON_ENCODE_ANY | JSON_COMPACT);
        rc = sp_fail(err, -EINVAL, "%s: :%s: %s and :%s: %s disagree: set one of them", path, from,
                     a ? a : "?", to, b ? b : "?");
        free(a);
        free(b);
    }
    json_decref(norm);
    json_decref(value);
    return rc;
}

/* smart_proxy_dynflow_core's settings.yml keys (reference/protocol.md §9.3), read in either
 * role: :listen: is :bind_host:; :port: and :use_https: go together (either one absent takes
 * upstream's default, '8008' or false): :port: is :https_port: with :use_https: true, else
 * :http_port:, and :use_https: false means no HTTPS listener. */
static int upstream_keys(const char *path, json_t *obj, struct sp_error *err)
{
    json_t *listen = json_object_get(obj, "listen"), *port = json_object_get(obj, "port"),
           *https = json_object_get(obj, "use_https"), *p = NULL;
    const char *to;
    int rc = 0;

    if (listen != NULL && !json_is_string(listen))
        return wrong_type(path, "listen", K_STRING, listen, err);
    if (port != NULL && (p = as_port(port)) == NULL)
        return wrong_type(path, "port", K_PORT, port, err);
    if (https != NULL && !json_is_boolean(https))
        return wrong_type(path, "use_https", K_BOOL, https, err);
    if (listen != NULL)
        rc = upstream_into(path, obj, "listen", json_pack("[O]", listen), "bind_host", K_LIST, err);
    if (port != NULL || https != NULL) {
        if (https == NULL)
            json_object_set_new(obj, "use_https", https = json_false());
        to = json_is_true(https) ? "https_port" : "http_port";
        if (p == NULL && !given(obj, to))
            p = json_integer(8008); /* upstream's default */
        if (p != NULL)
            json_object_set(obj, "port", p);
        if (p != NULL && rc == 0)
            rc = upstream_into(path, obj, "port", p, to, K_PORT, err);
        else
            json_decref(p);
    }
    if (rc == 0 && json_is_false(https) && given(obj, "https_port"))
        rc = upstream_into(path, obj, "use_https", json_null(), "https_port", K_PORT, err);
    return rc;
}

static bool is_settings_file(const struct dirent *d)
{
    size_t n = strlen(d->d_name);

    return d->d_name[0] != '.' && n > 4 && strcmp(d->d_name + n - 4, ".yml") == 0;
}

static int load_modules(struct sp_settings *s, const char *dir, struct sp_error *err)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int rc = 0;

    if (d == NULL)
        return errno == ENOENT ? 0
                               : sp_fail(err, -errno, "cannot read the settings directory %s: %s",
                                         dir, strerror(errno));
    while (rc == 0 && (e = readdir(d)) != NULL) {
        char path[4096], name[256];
        json_t *obj;
        if (!is_settings_file(e))
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        snprintf(name, sizeof(name), "%.*s", (int)(strlen(e->d_name) - 4), e->d_name);
        rc = sp_yaml_load(path, &obj, err);
        if (rc == 0)
            rc = apply_keys(path, obj, module_keys, err);
        if (obj != NULL)
            json_object_set_new(s->modules, name, obj);
    }
    closedir(d);
    return rc;
}

/* The standalone core: a module at "/", loopback unless told otherwise (upstream's :listen:
 * default), clients accepted by the serial of its own certificate (reference/protocol.md §3.2). */
static int core_settings(struct sp_settings *s, bool bind_given, struct sp_error *err)
{
    const char *name, *cert;
    json_t *m;

    json_object_foreach(s->modules, name, m)
    {
        const char *mount = json_string_value(json_object_get(m, "mount"));
        s->core = s->core ||
                  (sp_module_enabled(s, name) != SP_DISABLED && mount && strcmp(mount, "/") == 0);
    }
    if (!s->core)
        return 0;
    if (!bind_given)
        json_object_set_new(s->global, "bind_host", json_pack("[s]", "127.0.0.1"));
    cert = sp_setting_str(s, "foreman_ssl_cert") ? sp_setting_str(s, "foreman_ssl_cert")
                                                 : sp_setting_str(s, "ssl_certificate");
    if (cert != NULL && sp_tls_file_serial(cert, s->core_serial, sizeof(s->core_serial), err) < 0) {
        char why[SP_ERROR_TEXT];
        snprintf(why, sizeof(why), "%s", err->text);
        return sp_fail(err, -EINVAL, "%s: the core accepts clients by the serial of %s: %s",
                       s->path, cert, why);
    }
    return 0;
}

int sp_settings_load(const char *path, struct sp_settings *s, struct sp_error *err)
{
    char *copy, dir[4096];
    bool bind_given;
    int rc;

    memset(s, 0, sizeof(*s));
    s->path = strdup(path);
    s->modules = json_object();
    rc = sp_yaml_load(path, &s->global, err);
    if (rc == 0)
        rc = upstream_keys(path, s->global, err);
    bind_given = rc == 0 && given(s->global, "bind_host");
    if (rc == 0)
        rc = apply_keys(path, s->global, global_keys, err);
    if (rc == 0 && json_is_false(sp_setting(s, "use_https")))
        json_object_del(s->global, "https_port"); /* upstream's HTTP-only core: no HTTPS */
    if (rc == 0 && sp_setting(s, "settings_directory") == NULL) {
        copy = strdup(path);
        snprintf(dir, sizeof(dir), "%s/settings.d", dirname(copy));
        free(copy);
        json_object_set_new(s->global, "settings_directory", json_string(dir));
    }
    if (rc == 0)
        rc = load_modules(s, sp_setting_str(s, "settings_directory"), err);
    if (rc == 0)
        rc = core_settings(s, bind_given, err);
    if (rc < 0)
        sp_settings_free(s);
    return rc;
}

void sp_settings_free(struct sp_settings *s)
{
    free(s->path);
    json_decref(s->global);
    json_decref(s->modules);
    memset(s, 0, sizeof(*s));
}

json_t *sp_setting(const struct sp_settings *s, const char *key)
{
    return json_object_get(s->global, key);
}

const char *sp_setting_str(const struct sp_settings *s, const char *key)
{
    return json_string_value(sp_setting(s, key));
}

json_t *sp_module_settings(const struct sp_settings *s, const char *module)
{
    return json_object_get(s->modules, module);
}

enum sp_enabled sp_module_enabled(const struct sp_settings *s, const char *module)
{
    json_t *v = json_object_get(sp_module_settings(s, module), "enabled");

    if (json_is_true(v))
        return SP_BOTH;
    if (json_is_string(v))
        return strcmp(json_string_value(v), "http") == 0 ? SP_HTTP : SP_HTTPS;
    return SP_DISABLED;
}
