/*
 * Output chunks (Dynflow's dynflow_output_chunks): an action appends them while it runs and
 * they are the store's rows, written append-only by the writer thread.  With a file database
 * memory holds only the chunks not yet committed; everything else is read back from the store
 * when it is presented (doc/output.md).  An in-memory database is memory anyway: there the
 * chunks stay in a->chunks, so that nothing reads the store under a plan lock (the in-memory
 * store's one lock is held by the writer while it takes plan locks).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

int df_action_output_chunk(df_action *a, json_t *chunk, const char *kind, double ts)
{
    json_t *rec;

    if (ts <= 0)
        ts = (double)df_now_us() / 1e6;
    rec = json_pack("{s:o, s:o, s:f}", "chunk", chunk, "kind",
                    kind != NULL ? json_string(kind) : json_null(), "timestamp", ts);
    pthread_mutex_lock(&a->plan->lock);
    json_array_append_new(a->chunks, rec);
    pthread_mutex_unlock(&a->plan->lock);
    return 0;
}

void df_action_drop_chunks(df_action *a)
{
    pthread_mutex_lock(&a->plan->lock);
    json_array_clear(a->chunks);
    a->chunks_stored = a->chunks_committed = 0;
    a->chunks_drop = true;
    pthread_mutex_unlock(&a->plan->lock);
}

void df_chunks_forget_committed(struct df_action *a)
{
    for (; a->chunks_committed > 0; a->chunks_committed--, a->chunks_stored--)
        json_array_remove(a->chunks, 0);
}

int64_t df_chunks_store_below(struct df_action *a)
{
    json_t *first = json_array_get(a->chunks, 0);
    int64_t last = a->last_chunk_id;

    if (!a->plan->w->durable || a->chunks_drop)
        return 0;
    /* rows are added in order: those before the first chunk memory holds are not in memory */
    if (json_is_integer(json_object_get(first, "id")))
        return json_integer_value(json_object_get(first, "id"));
    /* memory holds no written chunk: every row there is so far (a stream reads later, when the
     * chunks in memory may have rows too) */
    if (last == 0 && store_max_chunk_id(a->plan->w->st, a->plan->id, a->id, &last, NULL) < 0)
        return INT64_MAX;
    a->last_chunk_id = last;
    return last + 1;
}

static int add_stored(void *ud, const struct store_chunk_row *r)
{
    json_t *chunk = json_loads(r->chunk, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);

    if (chunk != NULL)
        json_array_append_new(ud, json_pack("{s:o}", "chunk", chunk));
    return 0;
}

/* The stored chunks (without kind and timestamp) then those in memory; plan lock held. */
static json_t *all_chunks_locked(struct df_action *a)
{
    json_t *out = json_array(), *c;
    int64_t below = df_chunks_store_below(a);
    size_t i;

    if (below > 0)
        store_each_chunk(a->plan->w->st, a->plan->id, a->id, 0, below, UINT32_MAX, add_stored, out,
                         NULL);
    /* new containers: the writer adds "id" to those in memory, maybe while the caller reads */
    json_array_foreach(a->chunks, i, c) json_array_append_new(
        out, json_pack("{s:O, s:O?, s:O?}", "chunk", json_object_get(c, "chunk"), "kind",
                       json_object_get(c, "kind"), "timestamp", json_object_get(c, "timestamp")));
    return out;
}

json_t *df_action_stored_chunks(df_action *a)
{
    bool locked = df_presenting == a->plan; /* present() runs under the plan lock */
    json_t *all;

    if (!locked)
        pthread_mutex_lock(&a->plan->lock);
    all = all_chunks_locked(a);
    if (!locked)
        pthread_mutex_unlock(&a->plan->lock);
    return all;
}

void df_action_present_chunks(df_action *a, json_t *output, const char *key)
{
    json_t *chunks, *result, *c;
    size_t i;

    if (df_streaming != NULL) {
        json_t *placeholder = json_object();
        json_object_set_new(output, key, placeholder);
        df_json_stream_add_chunks(df_streaming, placeholder, a);
        return;
    }
    chunks = all_chunks_locked(a); /* present() runs under the plan lock */
    result = json_array();
    json_array_foreach(chunks, i, c) json_array_extend(result, json_object_get(c, "chunk"));
    json_decref(chunks);
    json_object_set_new(output, key, result);
}
