#include "util/hash.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

/* Open addressing with linear probing; deletions use backward shifting so no
 * tombstones accumulate in a table that sees millions of short-lived plans. */
struct slot {
    const char *key;
    void *value;
    uint32_t hash;
};

struct df_hash {
    struct slot *slots;
    size_t cap; /* power of two */
    size_t count;
};

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;

    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
}

df_hash *df_hash_new(void)
{
    df_hash *h = df_calloc(1, sizeof(*h));

    h->cap = 16;
    h->slots = df_calloc(h->cap, sizeof(*h->slots));
    return h;
}

void df_hash_free(df_hash *h)
{
    if (h == NULL)
        return;
    free(h->slots);
    free(h);
}

static size_t find(const df_hash *h, const char *key, uint32_t hv)
{
    size_t mask = h->cap - 1;
    size_t i = hv & mask;

    while (h->slots[i].key != NULL && (h->slots[i].hash != hv || strcmp(h->slots[i].key, key) != 0))
        i = (i + 1) & mask;
    return i;
}

static void grow(df_hash *h)
{
    struct slot *old = h->slots;
    size_t old_cap = h->cap;

    h->cap *= 2;
    h->slots = df_calloc(h->cap, sizeof(*h->slots));
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key != NULL)
            h->slots[find(h, old[i].key, old[i].hash)] = old[i];
    free(old);
}

void *df_hash_get(const df_hash *h, const char *key)
{
    size_t i = find(h, key, hash_str(key));

    return h->slots[i].key ? h->slots[i].value : NULL;
}

void df_hash_put(df_hash *h, const char *key, void *value)
{
    uint32_t hv = hash_str(key);
    size_t i;

    if ((h->count + 1) * 4 > h->cap * 3)
        grow(h);
    i = find(h, key, hv);
    if (h->slots[i].key == NULL)
        h->count++;
    h->slots[i] = (struct slot){key, value, hv};
}

void *df_hash_del(df_hash *h, const char *key)
{
    size_t mask = h->cap - 1;
    size_t i = find(h, key, hash_str(key));
    void *value = h->slots[i].value;

    if (h->slots[i].key == NULL)
        return NULL;
    h->count--;
    /* Shift following entries back so every probe chain stays unbroken. */
    for (size_t j = (i + 1) & mask; h->slots[j].key != NULL; j = (j + 1) & mask) {
        size_t home = h->slots[j].hash & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            h->slots[i] = h->slots[j];
            i = j;
        }
    }
    h->slots[i] = (struct slot){0};
    return value;
}

size_t df_hash_count(const df_hash *h)
{
    return h->count;
}

void df_hash_each(const df_hash *h, void (*fn)(void *ud, const char *key, void *value), void *ud)
{
    for (size_t i = 0; i < h->cap; i++)
        if (h->slots[i].key != NULL)
            fn(ud, h->slots[i].key, h->slots[i].value);
}
