/*
 * smart-proxyd's settings: settings.yml (the proxy's global keys) and one
 * settings.d/<module>.yml per module, read the way Foreman's smart-proxy
 * reads them (reference/protocol.md §1.2–§1.4, §9).
 */
#ifndef SP_SETTINGS_H
#define SP_SETTINGS_H

#include <jansson.h>
#include <stdbool.h>

#include "proxy/yaml.h"

/* On which listeners a module's routes exist (":enabled:"). */
enum sp_enabled {
    SP_DISABLED = 0,
    SP_HTTP = 1,
    SP_HTTPS = 2,
    SP_BOTH = 3,
};

struct sp_settings {
    char *path;      /* settings.yml */
    json_t *global;  /* every key of settings.yml, defaults applied */
    json_t *modules; /* module name → its settings.d file */
    /* An enabled module mounted at "/" (":mount: /") makes this the standalone core: it binds
     * 127.0.0.1 unless :bind_host: says otherwise, and over HTTPS it accepts the clients whose
     * CN is in :trusted_hosts: or, without them, whose certificate has core_serial. */
    bool core;
    char core_serial[64]; /* of :foreman_ssl_cert:, else :ssl_certificate:; "" without either */
};

/* Reads settings.yml and every settings.d/NAME.yml; a wrong type or an
 * unreadable file is an error naming the file, the key and what was expected.  Upstream core's
 * :listen:, :port: and :use_https: become :bind_host:, :https_port:/:http_port: (an error when
 * those say otherwise).  For the core, also the serial of its certificate. */
int sp_settings_load(const char *path, struct sp_settings *s, struct sp_error *err);
void sp_settings_free(struct sp_settings *s);

/* Borrowed; NULL when the key is unset. */
json_t *sp_setting(const struct sp_settings *s, const char *key);
const char *sp_setting_str(const struct sp_settings *s, const char *key);
/* Borrowed: the module's settings, or NULL when it has no file. */
json_t *sp_module_settings(const struct sp_settings *s, const char *module);
enum sp_enabled sp_module_enabled(const struct sp_settings *s, const char *module);

#endif
