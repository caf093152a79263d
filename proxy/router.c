#include "proxy/router.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "util/uuid.h"

size_t sp_utf8_char(const unsigned char *s, size_t n)
{
    size_t len;
    unsigned cp;

    if (n == 0)
        return 0;
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        len = 2, cp = s[0] & 0x1fu;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        len = 3, cp = s[0] & 0x0fu;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        len = 4, cp = s[0] & 0x07u;
    else
        return 0; /* a continuation byte, or a lead byte of an overlong or too large form */
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3fu);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

bool sp_text_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;

    for (size_t i = 0, k; i < n; i += k)
        if (p[i] == '\0' || (k = sp_utf8_char(p + i, n - i)) == 0)
            return false;
    return true;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        return (c | 0x20) - 'a' + 10;
    return -1;
}

long sp_percent_decode(const char *in, size_t n, char *out)
{
    size_t used = 0;

    for (size_t i = 0; i < n; i++) {
        if (in[i] != '%') {
            out[used++] = in[i];
            continue;
        }
        int hi = i + 2 < n ? hex_digit(in[i + 1]) : -1, lo = hi >= 0 ? hex_digit(in[i + 2]) : -1;
        if (lo < 0)
            return -EINVAL;
        out[used++] = (char)(hi << 4 | lo);
        i += 2;
    }
    out[used] = '\0';
    return (long)used;
}

void sp_escape(const char *in, size_t n, char *out, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t used = 0;

    for (size_t i = 0; i < n && used + 4 <= len; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch > 0x20 && ch < 0x7f) {
            out[used++] = (char)ch;
        } else {
            out[used++] = '%';
            out[used++] = hex[ch >> 4];
            out[used++] = hex[ch & 15];
        }
    }
    if (len > 0)
        out[used < len ? used : len - 1] = '\0';
}

/* Why a decoded segment is refused, or NULL. */
static const char *segment_fault(const char *s, size_t n)
{
    if (!sp_text_valid(s, n))
        return memchr(s, '\0', n) != NULL ? "a NUL byte" : "bytes that are not UTF-8";
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '/')
            return "a '/'";
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return "a control character";
    }
    if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
        return "a dot segment";
    return NULL;
}

int sp_path_decode(const char *raw, size_t n, char *out, char *why, size_t whylen)
{
    char quoted[64];
    size_t used = 0, seg = 0;

    if (n == 0 || raw[0] != '/') {
        sp_escape(raw, n < 40 ? n : 40, quoted, sizeof(quoted));
        snprintf(why, whylen, "the request path '%s' does not start with '/'", quoted);
        return -EINVAL;
    }
    for (size_t i = 0; i < n; seg++) {
        const char *slash = memchr(raw + i + 1, '/', n - i - 1);
        size_t end = slash != NULL ? (size_t)(slash - raw) : n, len = end - i - 1;
        long got;
        const char *fault = NULL;

        out[used++] = '/';
        got = sp_percent_decode(raw + i + 1, len, out + used);
        if (got < 0)
            fault = "a '%' without two hexadecimal digits";
        else if ((fault = segment_fault(out + used, (size_t)got)) == NULL)
            used += (size_t)got;
        if (fault != NULL) {
            sp_escape(raw + i + 1, len < 40 ? len : 40, quoted, sizeof(quoted));
            snprintf(why, whylen, "path segment %zu ('%s') holds %s", seg + 1, quoted, fault);
            return -EINVAL;
        }
        i = end;
    }
    out[used] = '\0';
    return 0;
}

/* The path below the mount's prefix, or NULL when the prefix does not apply. */
static const char *below(const char *prefix, const char *path)
{
    size_t n = strlen(prefix);

    if (strncmp(path, prefix, n) != 0 || (path[n] != '/' && path[n] != '\0'))
        return NULL;
    return path[n] != '\0' ? path + n : "/";
}

/* The length of s's first characters that fit in max bytes: quoted text is not cut inside one. */
static size_t text_prefix(const char *s, size_t max)
{
    size_t n = 0, k, len = strlen(s);

    while (n < len && (k = sp_utf8_char((const unsigned char *)s + n, len - n)) != 0 &&
           n + k <= max)
        n += k;
    return n;
}

/* The one rule for task ids in paths: a ":task_id" parameter takes only the ids the API issues,
 * UUIDs (doc/http-input.md); anything else is no route (404), in either mode of the module. */
static bool param_fits(const char *name, size_t len, const char *value)
{
    return len != strlen(":task_id") || strncmp(name, ":task_id", len) != 0 || df_uuid_valid(value);
}

/* Compares one pattern with a path segment by segment, collecting ":name" values.  A path that
 * matches but for the shape of a task id is no match, with why saying so. */
static bool pattern_match(const char *pattern, const char *path, struct sp_match *m)
{
    const char *not_id = NULL;
    size_t used = 0;
    bool rest = false;

    m->n_params = 0;
    while (*pattern != '\0' && *path != '\0') {
        if (strcmp(pattern, "/*") == 0) {
            rest = true; /* the rest of the path, whatever it is */
            break;
        }
        size_t plen = strcspn(pattern + 1, "/") + 1, slen = strcspn(path + 1, "/") + 1;
        if (pattern[0] != '/' || path[0] != '/')
            return false;
        if (pattern[1] == ':') {
            if (slen < 2 || m->n_params == SP_MAX_PARAMS || used + slen > sizeof(m->buf))
                return false;
            memcpy(m->buf + used, path + 1, slen - 1);
            m->buf[used + slen - 1] = '\0';
            if (!param_fits(pattern + 1, plen - 1, m->buf + used) && not_id == NULL)
                not_id = m->buf + used;
            m->params[m->n_params++] = m->buf + used;
            used += slen;
        } else if (plen != slen || strncmp(pattern, path, plen) != 0) {
            return false;
        }
        pattern += plen;
        path += slen;
    }
    if (!rest && (*pattern != '\0' || (*path != '\0' && strcmp(path, "/") != 0)))
        return false;
    if (not_id != NULL) {
        size_t n = text_prefix(not_id, 40);
        snprintf(m->why, sizeof(m->why), "'%.*s%s' is not a task id (a UUID)", (int)n, not_id,
                 not_id[n] != '\0' ? "..." : "");
        return false;
    }
    return true;
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
            if (!pattern_match(r->pattern, rest, m)) {
                if (m->why[0] != '\0')
                    return false; /* no later pattern (a wildcard) takes what is not a task id */
                continue;
            }
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
