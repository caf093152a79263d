/* Random (version 4) UUIDs: task and request ids, for the engine and the host alike. */
#ifndef DF_UUID_H
#define DF_UUID_H

#include <stdbool.h>

#include "dynflow/dynflow.h" /* DF_UUID_BUF */

/* A random (version 4) UUID; one getrandom() call serves many. */
void df_uuid_new(char out[DF_UUID_BUF]);
/* 8-4-4-4-12 hexadecimal digits. */
bool df_uuid_valid(const char *s);

#endif
