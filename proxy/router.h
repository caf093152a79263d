/*
 * Routing: modules are mounted under a prefix ("/dynflow") and match
 * requests against their route patterns ("/tasks/:task_id/status"); the
 * request path is decoded here, segment by segment, before it is matched
 * (doc/http-input.md).
 */
#ifndef SP_ROUTER_H
#define SP_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#include "smart-proxy/module.h"

#define SP_MAX_PARAMS 8
/* The longest request path taken, as sent (escaped); longer ones get 414.  Below what a
 * connection's memory holds, so that the 414 is ours (JSON), not libmicrohttpd's. */
#define SP_MAX_PATH 8192

struct sp_mount {
    const char *prefix; /* "" for the root */
    const struct sp_route *routes;
    void *state;
    unsigned listeners; /* bit 1: HTTP, bit 2: HTTPS (enum sp_enabled) */
};

struct sp_match {
    const struct sp_mount *mount;
    const struct sp_route *route; /* NULL: the path exists with other methods (405) */
    const char *params[SP_MAX_PARAMS];
    size_t n_params;
    char allow[64]; /* methods of the path, for 405 */
    char why[160];  /* no route: a ":task_id" segment that is not a task id, or "" */
    char buf[1024]; /* storage of the params */
};

/* Length of the UTF-8 character at s[0..n) (1 to 4), or 0 when the bytes are not one (overlong
 * forms, surrogates and code points above U+10FFFF are not). */
size_t sp_utf8_char(const unsigned char *s, size_t n);
/* s[0..n) is UTF-8 text without a NUL (as a decoded query argument must be). */
bool sp_text_valid(const char *s, size_t n);
/* Percent-decodes in[0..n) into out (room for n + 1 bytes), NUL-terminated: the decoded length,
 * or -EINVAL when a '%' is not followed by two hexadecimal digits. */
long sp_percent_decode(const char *in, size_t n, char *out);
/* Decodes a request path as sent (raw[0..n), without the query) segment by segment into out
 * (room for n + 1 bytes): 0, or -EINVAL with why saying which segment and what it holds.  Each
 * segment must decode to UTF-8 text without NUL, control characters or '/', and must not be "."
 * or "..", so that the decoded path has the segments the client sent. */
int sp_path_decode(const char *raw, size_t n, char *out, char *why, size_t whylen);
/* in[0..n) with every byte outside printable ASCII percent-encoded, into out,
 * truncated to len: refused input quoted in messages and logs. */
void sp_escape(const char *in, size_t n, char *out, size_t len);

/* Matches a decoded path (without query) on a listener; false when nothing has this path. */
bool sp_route_match(const struct sp_mount *mounts, size_t n, unsigned listener, const char *method,
                    const char *path, struct sp_match *m);

#endif
