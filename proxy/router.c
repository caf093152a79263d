#include "proxy/router.h"

#include <stdio.h>
#include <string.h>

/* The path below the mount's prefix, or NULL when the prefix does not apply. */
static const char *below(const char *prefix, const char *path)
{
    size_t n = strlen(prefix);

    if (strncmp(path, prefix, n) != 0 || (path[n] != '/' && path[n] != '\0'))
        return NULL;
    return path[n] != '\0' ? path + n : "/";
}

/* Compares one pattern with a path segment by segment, collecting ":name" values. */
static bool pattern_match(const char *pattern, const char *path, struct sp_match *m)
{
    size_t used = 0;

    m->n_params = 0;
    while (*pattern != '\0' && *path != '\0') {
        if (strcmp(pattern, "/*") == 0)
            return true; /* the rest of the path, whatever it is */
        size_t plen = strcspn(pattern + 1, "/") + 1, slen = strcspn(path + 1, "/") + 1;
        if (pattern[0] != '/' || path[0] != '/')
            return false;
        if (pattern[1] == ':') {
            if (slen < 2 || m->n_params == SP_MAX_PARAMS || used + slen > sizeof(m->buf))
                return false;
            memcpy(m->buf + used, path + 1, slen - 1);
            m->buf[used + slen - 1] = '\0';
            m->params[m->n_params++] = m->buf + used;
            used += slen;
        } else if (plen != slen || strncmp(pattern, path, plen) != 0) {
            return false;
        }
        pattern += plen;
        path += slen;
    }
    return *pattern == '\0' && (*path == '\0' || strcmp(path, "/") == 0);
}

static void allow_add(struct sp_match *m, const char *method)
{
    size_t len = strlen(m->allow);

    if (strstr(m->allow, method) == NULL)
        snprintf(m->allow + len, sizeof(m->allow) - len, "%s%s", len ? ", " : "", method);
}

bool sp_route_match(const struct sp_mount *mounts, size_t n, unsigned listener, const char *method,
                    const char *path, struct sp_match *m)
{
    bool found = false;

    memset(m, 0, sizeof(*m));
    for (size_t i = 0; i < n; i++) {
        const char *rest = (mounts[i].listeners & listener) ? below(mounts[i].prefix, path) : NULL;
        for (const struct sp_route *r = mounts[i].routes; rest != NULL && r->method != NULL; r++) {
            if (!pattern_match(r->pattern, rest, m))
                continue;
            found = true;
            allow_add(m, r->method);
            if (strcmp(r->method, method) == 0) {
                m->mount = &mounts[i];
                m->route = r;
                return true;
            }
        }
    }
    m->n_params = 0;
    return found;
}
