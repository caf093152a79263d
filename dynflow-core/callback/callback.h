/*
 * Callbacks to Foreman (doc/callbacks.md): the
 * action Proxy::Dynflow::Callback::Action POSTs {"callback": …, "data": …} to
 * <foreman_url>/foreman_tasks/api/tasks/callback over HTTPS with the proxy's
 * client certificate.  The step never holds a worker while it waits: it hands
 * the POST to the delivery thread (http/async.h, at most max_connections to
 * Foreman) and suspends until an event brings the outcome.  A failed attempt
 * goes into the plan's history and is retried with exponential backoff
 * (capped at max_retry; every waiting callback is retried at once when any
 * delivery succeeds); a suspended step is the persisted queue: after a
 * restart with a file database it sends again.
 */
#ifndef DF_CALLBACK_H
#define DF_CALLBACK_H

#include "dynflow/dynflow.h"

#define DF_CALLBACK_CLASS       "Proxy::Dynflow::Callback::Action"
#define DF_BATCH_CALLBACK_CLASS "Proxy::Dynflow::Action::BatchCallback"

struct df_callback_config {
    const char *foreman_url;  /* https://foreman.example.com */
    const char *cert_file;    /* :foreman_ssl_cert: or :ssl_certificate: */
    const char *key_file;     /* :foreman_ssl_key: or :ssl_private_key: */
    const char *ca_file;      /* :foreman_ssl_ca: or :ssl_ca_file:; NULL: the system's CAs */
    unsigned max_connections; /* POSTs on the wire at once; 0: 8 */
    double timeout;           /* seconds for one POST; 0: 30 */
    double first_retry;       /* seconds; 0: 1 */
    double max_retry;         /* seconds; 0: 30 */
    double give_up_after;     /* seconds; 0: 86400 */
};

typedef struct df_callback df_callback;

/* Copies the configuration; NULL when foreman_url is missing (err says so).  Call while the
 * process has one thread: it initializes libcurl. */
df_callback *df_callback_new(const struct df_callback_config *cfg, df_error *err);
/* Registers Callback::Action and Action::BatchCallback (§7.2: input {"input_hash": …,
 * "results": <output reference>}, one POST with the callbacks of every key that has a result)
 * with w, and starts the delivery thread, which df_world_free stops.  Once per df_callback. */
int df_callback_register(df_callback *cb, df_world *w, df_error *err);
/* After df_world_free of the world it was registered with. */
void df_callback_free(df_callback *cb);

#endif
