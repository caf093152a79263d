/* A string-keyed hash table with borrowed keys (the value usually owns its key). */
#ifndef DF_HASH_H
#define DF_HASH_H

#include <stddef.h>

typedef struct df_hash df_hash;

df_hash *df_hash_new(void);
void df_hash_free(df_hash *h);
void *df_hash_get(const df_hash *h, const char *key);
/* Inserts or replaces; key must stay valid while it is in the table. */
void df_hash_put(df_hash *h, const char *key, void *value);
/* Returns the removed value or NULL. */
void *df_hash_del(df_hash *h, const char *key);
size_t df_hash_count(const df_hash *h);
/* Calls fn for each entry; fn must not change the table. */
void df_hash_each(const df_hash *h, void (*fn)(void *ud, const char *key, void *value), void *ud);

#endif
