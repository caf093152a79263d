/* Small helpers shared by the engine: time, UUIDs, errors, allocation. */
#ifndef DF_UTIL_H
#define DF_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dynflow/dynflow.h"
#include "util/uuid.h"

#define DF_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Wall clock in microseconds since the epoch. */
int64_t df_now_us(void);
/* Monotonic clock in microseconds. */
int64_t df_mono_us(void);
/* Dynflow's "%Y-%m-%d %H:%M:%S.%L" in UTC. */
void df_format_time(int64_t us, char out[24]);

/* Writes the message into err (when not NULL) and returns code. */
int df_errorf(df_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Allocation that cannot fail: out of memory aborts, as lighttpd does. */
void *df_malloc(size_t n);
void *df_calloc(size_t n, size_t size);
void *df_realloc(void *p, size_t n);
char *df_strdup(const char *s);

/* A growable array of ints. */
struct df_ints {
    int *v;
    size_t n, cap;
};
void df_ints_push(struct df_ints *a, int x);
bool df_ints_has(const struct df_ints *a, int x);
void df_ints_free(struct df_ints *a);

#endif
