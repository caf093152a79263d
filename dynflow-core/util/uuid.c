#include "util/uuid.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* Random bytes come in blocks: one getrandom() call serves many UUIDs. */
static void random_bytes(unsigned char *out, size_t n)
{
    static __thread unsigned char pool[256];
    static __thread size_t left;

    while (n > 0) {
        if (left == 0) {
            size_t got = 0;
            while (got < sizeof(pool)) {
                ssize_t r = getrandom(pool + got, sizeof(pool) - got, 0);
                if (r < 0 && errno != EINTR)
                    abort();
                if (r > 0)
                    got += (size_t)r;
            }
            left = sizeof(pool);
        }
        size_t take = n < left ? n : left;
        memcpy(out, pool + sizeof(pool) - left, take);
        left -= take;
        out += take;
        n -= take;
    }
}

void df_uuid_new(char out[DF_UUID_BUF])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    char *p = out;

    random_bytes(b, sizeof(b));
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[b[i] >> 4];
        *p++ = hex[b[i] & 15];
    }
    *p = '\0';
}

bool df_uuid_valid(const char *s)
{
    if (s == NULL || strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !strchr("0123456789abcdefABCDEF", s[i]))
            return false;
    }
    return true;
}
