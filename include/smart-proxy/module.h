/*
 * The ABI between the host proxy (smart-proxyd) and its modules (dynflow.so).
 *
 * A module exports one data symbol, sp_module_entry, declared with
 * SP_MODULE_DECLARE().  The host checks the magic number, the ABI version
 * (same major, module minor <= host minor), the struct size, the build
 * signature and that the name equals the file stem and the settings.d stem
 * before it calls anything.  Host services reach the module as a function
 * table passed to init(); the module links no host symbols.
 *
 * ABI changelog (newest first):
 *   1.3  sp_response.read/reader/free_reader: a body produced piece by piece while it is sent;
 *        host service add_versioned_feature (a feature's version in GET /version)
 *   1.2  a pattern's last segment may be "*" (the rest of the path); sp_request.query_string;
 *        a response's content_type may live in its body's allocation; sp_module.features
 *   1.1  host services settings_of, add_feature, load_object, unload_object, mount
 *   1.0  first release
 */
#ifndef SMART_PROXY_MODULE_H
#define SMART_PROXY_MODULE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define SP_MODULE_MAGIC     0x50584d31u /* "PXM1": tells "not a module" from "wrong version" */
#define SP_MODULE_ABI_MAJOR 1u          /* bumped when anything is removed or changes meaning */
#define SP_MODULE_ABI_MINOR 3u          /* bumped when a field or callback is appended */
#define SP_MODULE_SYMBOL    "sp_module_entry"
#define SP_STR_(x)          #x
#define SP_STR(x)           SP_STR_(x)
/* json_t crosses this boundary: a module built against another jansson major is refused. */
#define SP_MODULE_BUILD_SIG                                                                        \
    "jansson" SP_STR(JANSSON_MAJOR_VERSION) ",ptr" SP_STR(__SIZEOF_POINTER__)

/* A request as a handler sees it; everything is borrowed for the call. */
struct sp_request {
    const char *method;
    const char *path;          /* below the module's mount point, decoded: each segment is UTF-8
                                  text without NUL, control characters or '/' */
    const char *const *params; /* values of the ":name" segments, in pattern order */
    size_t n_params;
    const char *body; /* not NUL-terminated */
    size_t body_len;
    const char *(*header)(const struct sp_request *req, const char *name);
    const char *(*query)(const struct sp_request *req, const char *name);
    int https;                    /* 1 over the HTTPS listener */
    const char *peer_cert_cn;     /* client certificate subject CN, or NULL */
    const char *peer_cert_serial; /* hexadecimal, or NULL */
    const char *remote_addr;
    const char *request_id; /* X-Request-Id or a new UUID */
    void *host;             /* the host's own, for the header/query functions */
    /* 1.2: the query arguments percent-encoded again, "k=v&k2=v2" ("" without any), into out;
     * the length it needs (without the NUL), as snprintf */
    size_t (*query_string)(const struct sp_request *req, char *out, size_t len);
};

/* Filled by a handler; the host owns it afterwards. */
struct sp_response {
    unsigned status;
    const char *content_type; /* static, or in body's allocation; NULL: application/json */
    char *body;               /* the host calls free_body(body) after sending */
    size_t body_len;
    void (*free_body)(void *body);
    char *location; /* optional Location header (redirects); the host free()s it */
    /* 1.3, optional: the body comes from read(reader, buf, max) instead (body stays NULL), sent
     * with chunked encoding as the client takes it: the byte count, 0 at the end, or a negative
     * errno (the connection is closed: the client sees a truncated reply).  The host calls
     * free_reader(reader) once, when the reply is done or abandoned. */
    long (*read)(void *reader, char *buf, size_t max);
    void *reader;
    void (*free_reader)(void *reader);
};

typedef int (*sp_handler_fn)(void *state, const struct sp_request *req, struct sp_response *res);

/* Who may call a route (reference/protocol.md §1.5). */
#define SP_AUTH_NONE          0x0u
#define SP_AUTH_TRUSTED_HOSTS 0x1u /* :trusted_hosts: (client certificate CN, or reverse DNS) */
#define SP_AUTH_CLIENT_CERT   0x2u /* a client certificate over HTTPS */
#define SP_AUTH_ANY           (SP_AUTH_TRUSTED_HOSTS | SP_AUTH_CLIENT_CERT)
/* An Authorization header replaces the checks above; the module verifies the token. */
#define SP_AUTH_TOKEN 0x4u

struct sp_route {
    const char *method;  /* NULL ends a table */
    const char *pattern; /* "/tasks/:task_id/status"; 1.2: last segment "*": anything below;
                            the host lets a ":task_id" segment take only UUIDs (else 404) */
    sp_handler_fn handler;
    unsigned auth; /* SP_AUTH_* */
};

enum sp_log_level { SP_LOG_ERROR = 3, SP_LOG_WARNING = 4, SP_LOG_INFO = 6, SP_LOG_DEBUG = 7 };

/* How every entry struct of a loadable object starts (struct sp_module, and
 * struct df_plugin of include/dynflow/plugin.h), so that one loader checks them. */
struct sp_abi_header {
    uint32_t magic;
    uint16_t abi_major, abi_minor;
    uint32_t struct_size;
    const char *name; /* == the file stem */
    const char *version;
    const char *build_sig;
};

/* What a loader expects of an object's entry. */
struct sp_abi_expect {
    const char *what;   /* "smart-proxy module", for messages */
    const char *symbol; /* the exported entry */
    uint32_t magic;
    uint16_t abi_major, abi_minor; /* same major, minor at most this */
    uint32_t min_size;             /* the struct up to its reserved fields */
    const char *build_sig;
};

/* Host services. */
struct sp_host_api {
    uint16_t abi_major, abi_minor;
    uint32_t struct_size;
    void *ctx;
    void (*log)(void *ctx, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
    const json_t *global_settings; /* borrowed: settings.yml with defaults */
    /* 1.1: borrowed, settings.d/<stem>.yml, or NULL when there is none */
    const json_t *(*settings_of)(void *ctx, const char *stem);
    /* 1.1: a feature in /features and /v2/features on this module's listeners */
    int (*add_feature)(void *ctx, const char *name, const json_t *capabilities);
    /* 1.1: dlopen()s path after the file checks and checks its entry against expect;
     * 0, or a negative errno with err naming the file, the value found and the one expected */
    int (*load_object)(void *ctx, const char *path, const struct sp_abi_expect *expect,
                       void **handle, const void **entry, char *err, size_t errlen);
    void (*unload_object)(void *ctx, void *handle);
    /* 1.1: routes under another prefix ("/ssh" for what a module loaded), on this module's
     * listeners; routes and state stay valid until shutdown */
    int (*mount)(void *ctx, const char *prefix, const struct sp_route *routes, void *state);
    /* 1.3: add_feature with the version GET /version lists for it (version may be NULL: not
     * listed there) */
    int (*add_versioned_feature)(void *ctx, const char *name, const char *version,
                                 const json_t *capabilities);
};

struct sp_module {
    uint32_t magic;
    uint16_t abi_major, abi_minor;
    uint32_t struct_size; /* sizeof(struct sp_module) as the module saw it */
    const char *name;     /* == file stem == settings.d stem */
    const char *version;
    const char *build_sig; /* SP_MODULE_BUILD_SIG */
    /* settings: borrowed, settings.d/<name>.yml.  0 or a negative errno with err filled. */
    int (*init)(const struct sp_host_api *host, const json_t *settings, void **state, char *err,
                size_t errlen);
    const struct sp_route *(*routes)(void *state); /* { NULL }-terminated, valid until shutdown */
    json_t *(*capabilities)(void *state);          /* optional: new reference, array of strings */
    int (*reload)(void *state, const json_t *settings, char *err, size_t errlen); /* optional */
    void (*shutdown)(void *state); /* frees everything init allocated */
    /* 1.2, optional: new reference, {"name": [capabilities…]}, features the module has now
     * besides its own (forward mode: the core's), in /features and /v2/features */
    json_t *(*features)(void *state);
    uintptr_t reserved[3];
};

#define SP_MODULE_DECLARE(...)                                                                     \
    __attribute__((visibility("default")))                                                         \
    const struct sp_module sp_module_entry = {.magic = SP_MODULE_MAGIC,                            \
                                              .abi_major = SP_MODULE_ABI_MAJOR,                    \
                                              .abi_minor = SP_MODULE_ABI_MINOR,                    \
                                              .struct_size = sizeof(struct sp_module),             \
                                              .build_sig = SP_MODULE_BUILD_SIG,                    \
                                              __VA_ARGS__}

#endif
