/*
 * The HTTPS client without blocking its callers: one thread drives a libcurl
 * multi handle, at most max_connections requests are on the wire at once
 * (the rest wait their turn in order, their timeout not started), and each
 * answer goes to the caller's done function on that thread.  Requests are set
 * up by http/exchange.h, so TLS and timeouts are those of df_http_perform.
 * Used for the callbacks to Foreman (doc/callbacks.md).
 */
#ifndef DF_HTTP_ASYNC_H
#define DF_HTTP_ASYNC_H

#include "dynflow/dynflow.h"
#include "http/client.h"

typedef struct df_http_async df_http_async;

/* Called once per request, on the client's thread (or in df_http_async_free with
 * rep->failure DF_HTTP_CANCELLED); rep is borrowed (its body is freed after the call). */
typedef void (*df_http_done)(void *ud, const struct df_http_reply *rep);

/* Starts the thread; tls is copied.  NULL with err set when it cannot. */
df_http_async *df_http_async_new(const struct df_http_tls *tls, unsigned max_connections,
                                 df_error *err);
/* Queues req (url, body and headers are copied); done(ud, …) follows exactly once.  -ECANCELED
 * (and no call of done) once the client is stopping. */
int df_http_async_send(df_http_async *a, const struct df_http_request *req, df_http_done done,
                       void *ud);
/* Stops the thread at once: requests on the wire are abandoned (their outcome is unknown), and
 * every unfinished request gets done() with DF_HTTP_CANCELLED; later sends are refused. */
void df_http_async_stop(df_http_async *a);
/* Stops (when not stopped yet) and frees. */
void df_http_async_free(df_http_async *a);

#endif
