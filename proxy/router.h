/*
 * Routing: modules are mounted under a prefix ("/dynflow") and match
 * requests against their route patterns ("/tasks/:task_id/status").
 */
#ifndef SP_ROUTER_H
#define SP_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#include "smart-proxy/module.h"

#define SP_MAX_PARAMS 8

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
    char buf[1024]; /* storage of the params */
};

/* Matches path (without query) on a listener; false when nothing has this path. */
bool sp_route_match(const struct sp_mount *mounts, size_t n, unsigned listener, const char *method,
                    const char *path, struct sp_match *m);

#endif
