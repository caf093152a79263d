/*
 * The SSH plugin's entry: settings.d/remote_execution_ssh.yml (§1.2), the
 * runner Proxy::RemoteExecution::Ssh::Actions::RunScript (and the name old
 * Foremen send), operation "ssh" (batch), feature "script", and the routes
 * GET /ssh/pubkey and /ssh/ca_pubkey.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ssh.h"

#define SETTINGS "settings.d/remote_execution_ssh.yml"

static const char *const aliases[] = {SSH_ACTION_OLD, NULL};

/* "~/x" is the proxy user's home. */
static char *path_setting(const json_t *settings, const char *key, const char *fallback)
{
    const char *v = json_string_value(json_object_get(settings, key));
    const char *home = getenv("HOME");
    char *out = NULL;

    if (v == NULL)
        v = fallback;
    if (v == NULL)
        return NULL;
    if (strncmp(v, "~/", 2) == 0 ? asprintf(&out, "%s/%s", home ? home : "/root", v + 2) < 0
                                 : (out = strdup(v)) == NULL)
        abort();
    return out;
}

static int log_level(const char *name)
{
    static const struct {
        const char *name;
        int level;
    } levels[] = {{"debug", SSH_LOG_PROTOCOL},
                  {"info", SSH_LOG_WARNING},
                  {"error", SSH_LOG_NOLOG},
                  {"fatal", SSH_LOG_NOLOG}};

    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
        if (strcmp(name, levels[i].name) == 0)
            return levels[i].level;
    return -1;
}

static int bad(df_error *err, const char *key, const char *expected)
{
    snprintf(err->text, sizeof(err->text), SETTINGS ": :%s: must be %s", key, expected);
    return -1;
}

static int check_types(const json_t *settings, df_error *err)
{
    static const char *const strings[] = {"ssh_identity_key_file",
                                          "remote_working_dir",
                                          "local_working_dir",
                                          "ssh_log_level",
                                          "mode",
                                          "ssh_ca_known_hosts_file",
                                          "ssh_user_ca_public_key_file"};
    static const char *const bools[] = {"kerberos_auth", "cleanup_working_dirs"};
    const json_t *v;

    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++)
        if ((v = json_object_get(settings, strings[i])) != NULL && !json_is_string(v) &&
            !json_is_null(v))
            return bad(err, strings[i], "a string");
    for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++)
        if ((v = json_object_get(settings, bools[i])) != NULL && !json_is_boolean(v))
            return bad(err, bools[i], "true or false");
    return 0;
}

/* A number of seconds, fallback when absent; -1 when it is there and not a number. */
static int seconds_setting(const json_t *settings, const char *key, double fallback, double *out)
{
    const json_t *v = json_object_get(settings, key);

    if (v == NULL || json_is_null(v)) {
        *out = fallback;
        return 0;
    }
    *out = json_number_value(v);
    return json_is_number(v) ? 0 : -1;
}

static int load_settings(struct rex_plugin *sp, const json_t *settings, df_error *err)
{
    const char *level = json_string_value(json_object_get(settings, "ssh_log_level"));
    const char *mode = json_string_value(json_object_get(settings, "mode"));
    struct rex_settings *st = &sp->s;

    if (check_types(settings, err) < 0)
        return -1;
    if (mode != NULL && strcmp(mode, "ssh") != 0)
        return bad(err, "mode", "ssh (pull and pull-mqtt are not supported by this proxy)");
    st->log_level = log_level(level ? level : "error");
    if (st->log_level < 0)
        return bad(err, "ssh_log_level", "one of debug, info, error, fatal");
    st->key_file = path_setting(settings, "ssh_identity_key_file", "~/.ssh/id_rsa_foreman_proxy");
    st->remote_working_dir = path_setting(settings, "remote_working_dir", "/var/tmp");
    st->local_working_dir = path_setting(settings, "local_working_dir", "/var/tmp");
    st->ca_known_hosts = path_setting(settings, "ssh_ca_known_hosts_file", NULL);
    st->user_ca_pubkey = path_setting(settings, "ssh_user_ca_public_key_file", NULL);
    st->kerberos = json_is_true(json_object_get(settings, "kerberos_auth"));
    /* not upstream keys: upstream's ssh has ServerAliveInterval=15 fixed (tests shorten it),
     * and its sessions end with their job */
    if (seconds_setting(settings, "keepalive_interval", 15, &st->keepalive) < 0 ||
        st->keepalive <= 0)
        return bad(err, "keepalive_interval", "a positive number of seconds");
    if (seconds_setting(settings, "connection_idle_timeout", 30, &st->idle_timeout) < 0 ||
        st->idle_timeout < 0)
        return bad(err, "connection_idle_timeout", "a number of seconds (0: no reuse)");
    st->cleanup = !json_is_false(json_object_get(settings, "cleanup_working_dirs"));
    return 0;
}

/* ---- GET /ssh/pubkey, /ssh/ca_pubkey ----------------------------------------------------------
 */

static int send_file(const char *path, struct sp_response *res)
{
    FILE *f = path != NULL ? fopen(path, "r") : NULL;
    char *body = NULL;
    size_t len = 0;

    if (f == NULL) {
        res->status = 404;
        res->content_type = "application/json";
        res->body = strdup("{\"error\":\"the key file is not there\"}");
    } else {
        FILE *mem = open_memstream(&body, &len);
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
            fwrite(buf, 1, n, mem);
        fclose(mem);
        fclose(f);
        res->status = 200;
        res->content_type = "text/plain";
        res->body = body;
    }
    res->body_len = res->body != NULL ? strlen(res->body) : 0;
    res->free_body = free;
    return 0;
}

static int pubkey(void *state, const struct sp_request *req, struct sp_response *res)
{
    const struct rex_plugin *sp = state;
    char path[1024];

    (void)req;
    snprintf(path, sizeof(path), "%s.pub", sp->s.key_file);
    return send_file(path, res);
}

static int ca_pubkey(void *state, const struct sp_request *req, struct sp_response *res)
{
    const struct rex_plugin *sp = state;

    (void)req;
    return send_file(sp->s.user_ca_pubkey, res);
}

static const struct sp_route *rex_routes(void *state)
{
    static const struct sp_route routes[] = {
        {"GET", "/pubkey", pubkey, SP_AUTH_ANY},
        {"GET", "/ca_pubkey", ca_pubkey, SP_AUTH_ANY},
        {NULL, NULL, NULL, 0},
    };

    (void)state;
    return routes;
}

/* ---- the plugin --------------------------------------------------------------------------------
 */

static void rex_shutdown(void *state)
{
    struct rex_plugin *sp = state;

    if (sp == NULL)
        return;
    free(sp->s.key_file);
    free(sp->s.remote_working_dir);
    free(sp->s.local_working_dir);
    free(sp->s.ca_known_hosts);
    free(sp->s.user_ca_pubkey);
    if (sp->pool != NULL)
        rex_pool_clear(sp->pool);
    free(sp->pool);
    free(sp);
}

static int rex_init(const struct df_plugin_host *host, const json_t *settings, void **state,
                    df_error *err)
{
    struct rex_plugin *sp = calloc(1, sizeof(*sp));

    if (sp == NULL)
        abort();
    sp->host = host;
    sp->cls = (struct df_runner_class){.name = SSH_ACTION,
                                       .aliases = aliases,
                                       .ops = &rex_runner_ops,
                                       .check_input = rex_check_input,
                                       .data = sp};
    sp->pool = calloc(1, sizeof(*sp->pool));
    if (sp->pool == NULL)
        abort();
    if (load_settings(sp, settings, err) < 0 ||
        df_runner_register(host->world, &sp->cls, err) < 0) {
        rex_shutdown(sp);
        return -1;
    }
    *sp->pool =
        (struct rex_pool){.max = REX_POOL_MAX, .idle_s = sp->s.idle_timeout, .world = host->world};
    host->log(host->ctx, DF_LOG_INFO, "identity %s, remote working dir %s", sp->s.key_file,
              sp->s.remote_working_dir);
    *state = sp;
    return 0;
}

static const struct df_plugin_operation operations[] = {
    {"ssh", DF_LAUNCH_BATCH, SSH_ACTION},
    {NULL, 0, NULL},
};

DF_PLUGIN_DECLARE(.name = "ssh", .version = "0.1.0", .settings = "remote_execution_ssh",
                  .feature = "script", .init = rex_init, .shutdown = rex_shutdown,
                  .operations = operations, .mount = "/ssh", .routes = rex_routes);
