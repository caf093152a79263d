/*
 * The task ids of batch launches (doc/api-input.md).  Foreman retries a launch whose answer it
 * did not get, with the same ids, and a retry must neither fail the tasks nor run them twice.
 * An id is claimed from the moment its launch is accepted (the batch parent creates the task a
 * moment later, on a worker) and belongs to the database once the task exists.  The same ids with
 * the same input (secrets aside: they are compared redacted) answer with the parent that has
 * them; another input, or ids of which only some are taken, are a conflict.
 */
#ifndef DF_API_CLAIMS_H
#define DF_API_CLAIMS_H

#include "dynflow/dynflow.h"

typedef struct df_claims df_claims;

/* Creates the world's claims; the world frees them.  Before df_world_start(). */
int df_claims_attach(df_world *w, df_error *err);
df_claims *df_claims_of(df_world *w);

/* For a checked batch input (borrowed): 0 when none of its ids is taken: they are claimed now
 * for a new parent, whose id goes into parent_id; 1 when every id is taken, by one parent, with
 * the same input: that parent's id into parent_id; -EEXIST otherwise, with err saying which id
 * and why. */
int df_claims_take(df_claims *c, df_world *w, const json_t *input, char parent_id[DF_UUID_BUF],
                   df_error *err);
/* The launch of parent_id did not happen: the ids of its input are free again. */
void df_claims_drop(df_claims *c, const json_t *input, const char *parent_id);
/* The task key was created (or could not be): from now on the database answers for it. */
void df_claims_created(df_claims *c, const char *key);

#endif
