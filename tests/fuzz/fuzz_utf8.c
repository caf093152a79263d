/*
 * Fuzz target: the output UTF-8 splitter (df_utf8_sanitize, doc/output.md).  The first byte
 * seeds where the rest is cut into reads, as a child's pipe would deliver it; each read goes
 * through the splitter with the carried-over bytes of the read before, as the runner does.
 * Checked: every piece is valid UTF-8 (by a decoder of its own here), the pieces together are
 * what the whole input gives in one read (a cut never changes the output), and valid input
 * comes out unchanged.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runner/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Strict UTF-8 (RFC 3629): shortest form, no surrogates, nothing above U+10FFFF. */
static bool valid_utf8(const unsigned char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        uint32_t cp;
        size_t n;
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        if ((s[i] & 0xe0) == 0xc0)
            n = 2, cp = s[i] & 0x1fu;
        else if ((s[i] & 0xf0) == 0xe0)
            n = 3, cp = s[i] & 0x0fu;
        else if ((s[i] & 0xf8) == 0xf0)
            n = 4, cp = s[i] & 0x07u;
        else
            return false;
        if (i + n > len)
            return false;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3fu);
        }
        if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
            return false;
        i += n;
    }
    return true;
}

/* The output for in[0..len) cut into reads whose lengths come from seed; a new string. */
static char *sanitize_in_reads(const uint8_t *in, size_t len, uint8_t seed, size_t *out_len)
{
    struct df_utf8_carry carry = {.len = 0};
    char *out = malloc(3 * len + 16), *joined = malloc(len + 8);
    uint32_t rng = seed * 2654435761u + 1;
    size_t at = 0, o = 0;

    do {
        size_t piece = seed == 0 ? len : 1 + (rng >> 16) % 9, held = carry.len;
        bool final;
        rng = rng * 1103515245u + 12345u;
        if (piece > len - at)
            piece = len - at;
        final = at + piece == len;
        memcpy(joined, carry.bytes, held);
        memcpy(joined + held, in + at, piece);
        size_t n = df_utf8_sanitize(joined, held + piece, out + o, &carry, final);
        if (!valid_utf8((const unsigned char *)out + o, n) || out[o + n] != '\0')
            abort();
        o += n;
        at += piece;
    } while (at < len);
    free(joined);
    *out_len = o;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t whole_len, cut_len;
    char *whole, *cut;

    if (size == 0)
        return 0;
    whole = sanitize_in_reads(data + 1, size - 1, 0, &whole_len);
    cut = sanitize_in_reads(data + 1, size - 1, data[0] | 1, &cut_len);
    if (whole_len != cut_len || memcmp(whole, cut, whole_len) != 0)
        abort(); /* a cut between two reads changed the output */
    if (valid_utf8(data + 1, size - 1) &&
        (whole_len != size - 1 || memcmp(whole, data + 1, whole_len) != 0))
        abort(); /* valid output must pass unchanged */
    free(whole);
    free(cut);
    return 0;
}
