#include "proxy/settings.h"

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
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
    {NULL, K_STRING, NULL},
};

/* smart_proxy_dynflow_core's own settings.yml keys (reference/protocol.md §9.3): refused, with
 * the key that says it here, rather than a core that listens elsewhere than asked. */
static const struct {
    const char *name, *instead;
} core_keys[] = {
    {"listen", ":bind_host:"},
    {"port", ":https_port: (HTTPS) or :http_port: (HTTP)"},
    {"use_https", ":https_port: with the :ssl_*: files, or :http_port:"},
};

static const struct key module_keys[] = {
    {"enabled", K_ENABLED, "false"},
    {"mount", K_STRING, NULL},
    {NULL, K_STRING, NULL},
};

static const char *const kind_names[] = {
    [K_STRING] = "a string",
    [K_PORT] = "a port number (1-65535)",
    [K_BOOL] = "true or false",
    [K_LIST] = "a value or a list of values",
    [K_LOG_LEVEL] = "one of UNKNOWN, FATAL, ERROR, WARN, INFO, DEBUG",
    [K_ENABLED] = "true, false, http or https",
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
    return port >= 1 && port <= 65535 ? json_integer(port) : NULL;
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
    }
    return NULL;
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
        if (norm == NULL) {
            char *found = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
            int rc = sp_fail(err, -EINVAL, "%s: :%s: must be %s, found %s", path, k->name,
                             kind_names[k->kind], found ? found : "?");
            free(found);
            return rc;
        }
        json_object_set_new(obj, k->name, norm);
    }
    return 0;
}

static int refuse_core_keys(const char *path, json_t *obj, struct sp_error *err)
{
    for (size_t i = 0; i < sizeof(core_keys) / sizeof(core_keys[0]); i++)
        if (json_object_get(obj, core_keys[i].name) != NULL)
            return sp_fail(err, -EINVAL,
                           "%s: :%s: is smart_proxy_dynflow_core's key; smart-proxyd reads %s",
                           path, core_keys[i].name, core_keys[i].instead);
    return 0;
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
    bind_given = rc == 0 && json_object_get(s->global, "bind_host") != NULL &&
                 !json_is_null(json_object_get(s->global, "bind_host"));
    if (rc == 0)
        rc = refuse_core_keys(path, s->global, err);
    if (rc == 0)
        rc = apply_keys(path, s->global, global_keys, err);
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
