/*
 * Fuzz target: percent-decoding, the UTF-8 check and the escaping of refused input
 * (proxy/router.c).  Decoding never grows, what has no '%' decodes to itself, escaping what was
 * decoded and decoding it again gives it back, and the escaped form is printable ASCII.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/router.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* sp_text_valid, one character at a time. */
static bool text_by_characters(const char *s, size_t n)
{
    for (size_t i = 0, k; i < n; i += k)
        if (s[i] == '\0' || (k = sp_utf8_char((const unsigned char *)s + i, n - i)) == 0)
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    char *out = malloc(size + 1), *escaped = malloc(3 * size + 4), *again = malloc(3 * size + 4);
    long n = sp_percent_decode(in, size, out);

    if (n > (long)size || (n < 0 && memchr(in, '%', size) == NULL) ||
        (memchr(in, '%', size) == NULL && (n != (long)size || memcmp(in, out, size) != 0)))
        abort();
    if (n >= 0) {
        if (out[n] != '\0' || sp_text_valid(out, (size_t)n) != text_by_characters(out, (size_t)n))
            abort();
        sp_escape(out, (size_t)n, escaped, 3 * size + 4);
        for (const char *p = escaped; *p != '\0'; p++)
            if (*p <= 0x20 || *p >= 0x7f)
                abort();
        /* every byte kept as it was is printable and no '%' came out of the decoding, or
         * escaping it again gives it back */
        if (memchr(out, '%', (size_t)n) == NULL &&
            (sp_percent_decode(escaped, strlen(escaped), again) != n ||
             memcmp(again, out, (size_t)n) != 0))
            abort();
    }
    free(out);
    free(escaped);
    free(again);
    return 0;
}
