/*
 * Continuous output (reference/protocol.md §8.1): records
 * {output_type, output, timestamp} buffered per receiver.  Output is valid
 * UTF-8 in JSON: invalid bytes become U+FFFD and a character split between
 * two reads is carried over whole.  A task's output is capped; the cap
 * leaves one record saying so.  Records go to the action (and so to the
 * store) once a second, or as soon as a receiver holds DELIVER_BYTES of
 * them, so a fast writer never has more than that waiting here (doc/output.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner/internal.h"
#include "util/util.h"

static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */

#define DELIVER_BYTES (1u << 20)

/* Length of the UTF-8 sequence a lead byte starts, or 0 for a byte that cannot lead. */
static size_t utf8_seq_len(unsigned char c)
{
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return 2;
    if (c >= 0xe0 && c <= 0xef)
        return 3;
    if (c >= 0xf0 && c <= 0xf4)
        return 4;
    return 0;
}

/* Whether s[1] may follow lead byte s[0] (no overlongs, surrogates or > U+10FFFF). */
static bool second_byte_ok(unsigned char lead, unsigned char c)
{
    if ((c & 0xc0) != 0x80)
        return false;
    switch (lead) {
        case 0xe0:
            return c >= 0xa0;
        case 0xed:
            return c <= 0x9f;
        case 0xf0:
            return c >= 0x90;
        case 0xf4:
            return c <= 0x8f;
        default:
            return true;
    }
}

/* How many bytes of s[0..avail) form a valid prefix of the sequence s[0] starts. */
static size_t valid_prefix(const unsigned char *s, size_t need, size_t avail)
{
    size_t i = 1;

    if (avail < 2)
        return 1;
    if (!second_byte_ok(s[0], s[1]))
        return 1;
    for (i = 2; i < need && i < avail; i++)
        if ((s[i] & 0xc0) != 0x80)
            return i;
    return i;
}

size_t df_utf8_sanitize(const char *in, size_t len, char *out, struct df_utf8_carry *carry,
                        bool final)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t i = 0, o = 0;

    carry->len = 0;
    while (i < len) {
        size_t need = utf8_seq_len(s[i]), ok;
        if (need == 1) {
            out[o++] = (char)s[i++];
            continue;
        }
        if (need == 0) {
            memcpy(out + o, replacement, 3);
            o += 3;
            i++;
            continue;
        }
        ok = valid_prefix(s + i, need, len - i);
        if (ok == need) {
            memcpy(out + o, s + i, need);
            o += need;
            i += need;
        } else if (i + ok == len && !final) {
            memcpy(carry->bytes, s + i, ok); /* the rest comes with the next read */
            carry->len = ok;
            i = len;
        } else {
            memcpy(out + o, replacement, 3); /* one U+FFFD per maximal invalid prefix */
            o += 3;
            i += ok;
        }
    }
    out[o] = '\0';
    return o;
}

static const char *type_name(const char *type)
{
    return type != NULL ? type : "debug";
}

void df_output_record(df_runner *r, struct df_receiver *rx, const char *type, const char *text,
                      size_t len)
{
    uint64_t cap = r->d->cfg.output_cap;
    char msg[160];
    json_t *rec;

    if (r->exited || r->truncated)
        return;
    if (r->output_bytes + len > cap) {
        r->truncated = true;
        snprintf(msg, sizeof(msg),
                 "Output truncated: the task wrote more than %llu bytes; the rest is dropped",
                 (unsigned long long)cap);
        text = msg;
        len = strlen(msg);
        type = "debug";
    }
    r->output_bytes += len;
    rec = json_pack("{s:s, s:s%, s:f}", "output_type", type_name(type), "output", text, len,
                    "timestamp", (double)df_now_us() / 1e6);
    if (json_array_size(rx->records) == 0)
        rx->pending_bytes = 0; /* delivered since */
    json_array_append_new(rx->records, rec);
    rx->pending_bytes += len;
    if (rx->pending_bytes >= DELIVER_BYTES)
        df_runner_mark_urgent(r);
}

static struct df_utf8_carry *carry_of(struct df_receiver *rx, const char *type)
{
    return &rx->carry[type != NULL && strcmp(type, "stderr") == 0 ? 1 : 0];
}

static void stream(df_runner *r, struct df_receiver *rx, const char *type, const char *buf,
                   size_t len, bool final)
{
    struct df_utf8_carry *carry = carry_of(rx, type), held = *carry;
    char *joined = NULL, *clean;
    size_t n;

    if (held.len > 0) { /* the character split by the last read comes first */
        joined = df_malloc(held.len + len);
        memcpy(joined, held.bytes, held.len);
        memcpy(joined + held.len, buf, len);
        buf = joined;
        len += held.len;
    }
    clean = df_malloc(3 * len + 1);
    n = df_utf8_sanitize(buf, len, clean, carry, final);
    if (n > 0)
        df_output_record(r, rx, type, clean, n);
    free(clean);
    free(joined);
}

void df_output_stream(df_runner *r, struct df_receiver *rx, const char *type, const char *buf,
                      size_t len)
{
    if (len > 0)
        stream(r, rx, type, buf, len, false);
}

void df_output_stream_end(df_runner *r, struct df_receiver *rx, const char *type)
{
    if (carry_of(rx, type)->len > 0)
        stream(r, rx, type, "", 0, true);
}
