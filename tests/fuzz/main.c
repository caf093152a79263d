/*
 * Without libFuzzer, a fuzz target runs in make check: every file of its
 * corpus directory, then a fixed number of deterministic mutations of them
 * (byte flips, insertions, truncations), so crashes found once stay found.
 *   fuzz_NAME CORPUS_DIR [ITERATIONS]
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_INPUT 65536

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static size_t mutate(uint8_t *buf, size_t len)
{
    static const char *const tokens[] = {"{",
                                         "}",
                                         "[",
                                         "]",
                                         "\"",
                                         ":",
                                         ",",
                                         "null",
                                         "true",
                                         "\"input\"",
                                         "\"operation\"",
                                         "\"task_ids\"",
                                         "-",
                                         ":enabled:",
                                         "\n",
                                         "  ",
                                         "&a",
                                         "*a",
                                         "\\u0000",
                                         "/",
                                         "%",
                                         "%00",
                                         "%2F",
                                         "%C3%A9",
                                         "00000000-0000-4000-8000-000000000001"};
    size_t pos = len ? next() % len : 0;

    switch (next() % 4) {
        case 0:
            if (len)
                buf[pos] ^= (uint8_t)(1u << (next() % 8));
            return len;
        case 1: { /* insert a token */
            const char *t = tokens[next() % (sizeof(tokens) / sizeof(tokens[0]))];
            size_t n = strlen(t);
            if (len + n >= FUZZ_MAX_INPUT)
                return len;
            memmove(buf + pos + n, buf + pos, len - pos);
            memcpy(buf + pos, t, n);
            return len + n;
        }
        case 2:
            return pos; /* truncate */
        default:
            if (len)
                buf[pos] = (uint8_t)next();
            return len;
    }
}

int main(int argc, char **argv)
{
    static uint8_t seeds[64][FUZZ_MAX_INPUT], buf[FUZZ_MAX_INPUT];
    size_t lens[64], n = 0;
    long iterations = argc > 2 ? strtol(argv[2], NULL, 10) : 2000;
    struct dirent *e;
    DIR *d;

    if (argc < 2 || (d = opendir(argv[1])) == NULL) {
        fprintf(stderr, "usage: %s CORPUS_DIR [ITERATIONS]\n", argv[0]);
        return 2;
    }
    while ((e = readdir(d)) != NULL && n < 64) {
        char path[4096];
        FILE *f;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", argv[1], e->d_name);
        if ((f = fopen(path, "rb")) == NULL)
            continue;
        lens[n] = fread(seeds[n], 1, FUZZ_MAX_INPUT, f);
        fclose(f);
        LLVMFuzzerTestOneInput(seeds[n], lens[n]);
        n++;
    }
    closedir(d);
    for (long i = 0; n > 0 && i < iterations; i++) {
        size_t k = next() % n, len = lens[k];
        memcpy(buf, seeds[k], len);
        for (int m = 1 + (int)(next() % 4); m > 0; m--)
            len = mutate(buf, len);
        LLVMFuzzerTestOneInput(buf, len);
    }
    printf("%s: %zu seeds, %ld mutations, no crash\n", argv[0], n, iterations);
    return 0;
}
