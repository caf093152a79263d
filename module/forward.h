/*
 * Forward mode (reference/protocol.md §3.1): every request is relayed to a
 * standalone core at :core_url: through the project's HTTPS client (TLS 1.2
 * or newer, the peer verified against :foreman_ssl_ca:/:ssl_ca_file: with its
 * host name checked, the proxy's :foreman_ssl_cert:/:ssl_certificate: as the
 * client certificate).  A relay is reference-counted: a reload makes a new
 * one, and the requests in flight finish with the one they took.
 */
#ifndef DYNFLOW_MODULE_FORWARD_H
#define DYNFLOW_MODULE_FORWARD_H

#include <jansson.h>

#include "http/client.h"
#include "smart-proxy/module.h"

typedef struct df_forward df_forward;

/* From settings.d/dynflow.yml (:core_url:, :core_timeout:) and the TLS files of settings.yml
 * (copied); one reference.  NULL with err naming the key and the reason.  A plaintext http:// core
 * is only accepted on loopback, with a warning in the log. */
df_forward *df_forward_new(const struct sp_host_api *host, const json_t *settings,
                           const struct df_http_tls *tls, char *err, size_t errlen);
df_forward *df_forward_ref(df_forward *f);
void df_forward_unref(df_forward *f);
/* "https://core.example.com:8008", for messages. */
const char *df_forward_url(const df_forward *f);

/* Relays req to the core as prefix + req->path (prefix "" for /dynflow, "/ssh" for a
 * plugin's routes) and fills res with the core's status, content type and body; 502 or 504
 * with {"error": "core at <url> unreachable: <reason>"} when no answer comes. */
int df_forward_relay(df_forward *f, const char *prefix, const struct sp_request *req,
                     struct sp_response *res);

/* New reference: the core's GET /v2/features, or NULL with err saying why. */
json_t *df_forward_features(df_forward *f, char *err, size_t errlen);

#endif
