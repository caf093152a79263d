/*
 * Callbacks to Foreman (reference/protocol.md §7): the action
 * Proxy::Dynflow::Callback::Action POSTs {"callback": …, "data": …} to
 * <foreman_url>/foreman_tasks/api/tasks/callback over HTTPS with the proxy's
 * client certificate.  Better than upstream's single attempt, a failed
 * delivery is retried with exponential backoff while the step stays
 * suspended (its timer survives a restart with a file database), and every
 * failed attempt is written into the plan's history.
 */
#ifndef DF_CALLBACK_H
#define DF_CALLBACK_H

#include "dynflow/dynflow.h"

#define DF_CALLBACK_CLASS       "Proxy::Dynflow::Callback::Action"
#define DF_BATCH_CALLBACK_CLASS "Proxy::Dynflow::Action::BatchCallback"

struct df_callback_config {
    const char *foreman_url; /* https://foreman.example.com */
    const char *cert_file;   /* :foreman_ssl_cert: or :ssl_certificate: */
    const char *key_file;    /* :foreman_ssl_key: or :ssl_private_key: */
    const char *ca_file;     /* :foreman_ssl_ca: or :ssl_ca_file:; NULL: the system's CAs */
    double first_retry;      /* seconds; 0: 1 */
    double max_retry;        /* seconds; 0: 300 */
    double give_up_after;    /* seconds; 0: 86400 */
};

typedef struct df_callback df_callback;

/* Copies the configuration; NULL when foreman_url is missing (err says so).  Call while the
 * process has one thread: it initializes libcurl. */
df_callback *df_callback_new(const struct df_callback_config *cfg, df_error *err);
void df_callback_free(df_callback *cb);
/* The action class, bound to this configuration: register it with the world. */
const struct df_action_class *df_callback_class(df_callback *cb);
/* Action::BatchCallback (§7.2): input {"input_hash": …, "results": <output reference>}; one
 * POST with the callbacks of every key that has a result. */
const struct df_action_class *df_callback_batch_class(df_callback *cb);

#endif
