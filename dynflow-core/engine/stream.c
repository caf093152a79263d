/*
 * A status document written piece by piece (doc/output.md).  The document is built as
 * df_plan_json would build it, except that each action's output chunks are a placeholder; it is
 * then serialized into segments: compact JSON text, and for each placeholder the action's
 * chunks, read from the store in batches of rows (and last the chunks memory still holds) as
 * the reader asks for bytes.  Each stored chunk is a JSON array of records; the placeholder
 * becomes one array of all of them, as Dynflow's output.result.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

#define BATCH_ROWS  64
#define BATCH_BYTES (256u * 1024) /* a batch stops after the row that passes this */

__thread df_json_stream *df_streaming;

struct chunks_src {
    json_t *placeholder; /* borrowed from the document while it is built */
    char plan_id[DF_UUID_BUF];
    int action_id;
    int64_t below;  /* store rows with an id below this (0: none) */
    json_t *memory; /* the chunk arrays memory held, after the stored ones */
};

struct segment {
    char *text; /* NULL: the chunks of src */
    size_t len;
    struct chunks_src *src;
};

struct df_json_stream {
    df_world *w;
    struct chunks_src *srcs;
    size_t n_srcs, cap_srcs;
    struct segment *segs;
    size_t n_segs, cap_segs;
    /* reading */
    size_t seg;      /* the segment being read */
    int phase;       /* chunks: 0 "[", 1 store rows, 2 memory, 3 "]" */
    int64_t after;   /* chunks: the last store row read */
    unsigned rows;   /* chunks: rows in the batch being read */
    size_t mem_next; /* chunks: the next memory chunk */
    bool any;        /* chunks: a record went out (the next one needs a comma) */
    char *buf;       /* the piece being read */
    size_t len, off, cap;
};

void df_json_stream_add_chunks(df_json_stream *s, json_t *placeholder, struct df_action *a)
{
    struct chunks_src *src;
    json_t *c;
    size_t i;

    if (s->n_srcs == s->cap_srcs) {
        s->cap_srcs = s->cap_srcs ? 2 * s->cap_srcs : 4;
        s->srcs = df_realloc(s->srcs, s->cap_srcs * sizeof(*s->srcs));
    }
    src = &s->srcs[s->n_srcs++];
    src->placeholder = placeholder;
    memcpy(src->plan_id, a->plan->id, sizeof(src->plan_id));
    src->action_id = a->id;
    src->below = df_chunks_store_below(a);
    src->memory = json_array(); /* their arrays, never changed; not the containers (the writer
                                   adds "id" to those) */
    json_array_foreach(a->chunks, i, c) json_array_append(src->memory, json_object_get(c, "chunk"));
}

/* ---- building: the document into segments ------------------------------------------------- */

static struct segment *segment_add(df_json_stream *s)
{
    if (s->n_segs == s->cap_segs) {
        s->cap_segs = s->cap_segs ? 2 * s->cap_segs : 8;
        s->segs = df_realloc(s->segs, s->cap_segs * sizeof(*s->segs));
    }
    s->segs[s->n_segs] = (struct segment){0};
    return &s->segs[s->n_segs++];
}

static struct segment *text_segment(df_json_stream *s)
{
    struct segment *last = s->n_segs > 0 ? &s->segs[s->n_segs - 1] : NULL;

    return last != NULL && last->src == NULL ? last : segment_add(s);
}

static int append_text(const char *text, size_t len, void *ud)
{
    struct segment *seg = text_segment(ud);

    seg->text = df_realloc(seg->text, seg->len + len + 1);
    memcpy(seg->text + seg->len, text, len);
    seg->len += len;
    return 0;
}

static struct chunks_src *source_of(df_json_stream *s, const json_t *v)
{
    for (size_t i = 0; i < s->n_srcs; i++)
        if (s->srcs[i].placeholder == v)
            return &s->srcs[i];
    return NULL;
}

static bool holds_placeholder(df_json_stream *s, json_t *v)
{
    const char *k;
    json_t *x;
    size_t i;

    if (source_of(s, v) != NULL)
        return true;
    if (json_is_array(v))
        json_array_foreach(v, i, x) if (holds_placeholder(s, x)) return true;
    if (json_is_object(v))
        json_object_foreach(v, k, x) if (holds_placeholder(s, x)) return true;
    return false;
}

static void emit(df_json_stream *s, json_t *v);

static void emit_key(df_json_stream *s, const char *key)
{
    json_t *k = json_string(key);

    json_dump_callback(k, append_text, s, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(k);
    append_text(":", 1, s);
}

/* Compact JSON as json_dumps(v, JSON_COMPACT) writes it, placeholders made segments. */
static void emit(df_json_stream *s, json_t *v)
{
    struct chunks_src *src = source_of(s, v);
    const char *k, *sep = "";
    json_t *x;
    size_t i;

    if (src != NULL) {
        segment_add(s)->src = src;
    } else if (!holds_placeholder(s, v)) {
        json_dump_callback(v, append_text, s, JSON_COMPACT | JSON_ENCODE_ANY);
    } else if (json_is_array(v)) {
        append_text("[", 1, s);
        json_array_foreach(v, i, x)
        {
            append_text(sep, strlen(sep), s);
            emit(s, x);
            sep = ",";
        }
        append_text("]", 1, s);
    } else {
        append_text("{", 1, s);
        json_object_foreach(v, k, x)
        {
            append_text(sep, strlen(sep), s);
            emit_key(s, k);
            emit(s, x);
            sep = ",";
        }
        append_text("}", 1, s);
    }
}

static df_json_stream *stream_new(df_world *w)
{
    df_json_stream *s = df_calloc(1, sizeof(*s));

    s->w = w;
    return s;
}

/* The plan's document with placeholders (new reference), or NULL. */
static json_t *plan_document(df_json_stream *s, const char *plan_id, unsigned flags)
{
    df_plan *p = plan_id != NULL ? df_world_plan(s->w, plan_id, false) : NULL;
    json_t *j;

    if (p == NULL)
        return NULL;
    pthread_mutex_lock(&p->lock);
    df_streaming = s;
    j = df_plan_to_json_locked(p, flags);
    df_streaming = NULL;
    pthread_mutex_unlock(&p->lock);
    df_plan_unref(p);
    return j;
}

/* Serializes doc (steals) into segments. */
static df_json_stream *finish(df_json_stream *s, json_t *doc)
{
    emit(s, doc);
    json_decref(doc);
    for (size_t i = 0; i < s->n_srcs; i++)
        s->srcs[i].placeholder = NULL;
    return s;
}

df_json_stream *df_plan_stream(df_world *w, const char *plan_id, unsigned flags)
{
    df_json_stream *s = stream_new(w);
    json_t *doc = plan_document(s, plan_id, flags);

    if (doc == NULL) {
        df_json_stream_free(s);
        return NULL;
    }
    return finish(s, doc);
}

df_json_stream *df_plans_stream(df_world *w, const char *const *ids, size_t n, unsigned flags)
{
    df_json_stream *s = stream_new(w);
    json_t *doc = json_object();

    for (size_t i = 0; i < n; i++) {
        json_t *j = json_object_get(doc, ids[i]) == NULL ? plan_document(s, ids[i], flags) : NULL;
        if (j != NULL)
            json_object_set_new(doc, ids[i], j);
    }
    return finish(s, doc);
}

void df_json_stream_free(df_json_stream *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n_srcs; i++)
        json_decref(s->srcs[i].memory);
    for (size_t i = 0; i < s->n_segs; i++)
        free(s->segs[i].text);
    free(s->srcs);
    free(s->segs);
    free(s->buf);
    free(s);
}

/* ---- reading ----------------------------------------------------------------------------- */

static void piece_append(df_json_stream *s, const char *text, size_t len)
{
    if (s->len + len > s->cap) {
        s->cap = s->len + len > 2 * s->cap ? s->len + len : 2 * s->cap;
        s->buf = df_realloc(s->buf, s->cap);
    }
    memcpy(s->buf + s->len, text, len);
    s->len += len;
}

/* The records of a chunk's JSON text ("[r1,r2]" → "r1,r2"), after a comma when needed. */
static void piece_records(df_json_stream *s, const char *text, size_t len)
{
    if (len < 3 || text[0] != '[' || text[len - 1] != ']')
        return; /* not an array (only arrays are concatenated), or an empty one */
    if (s->any)
        piece_append(s, ",", 1);
    piece_append(s, text + 1, len - 2);
    s->any = true;
}

static int add_row(void *ud, const struct store_chunk_row *r)
{
    df_json_stream *s = ud;

    s->after = r->id;
    s->rows++;
    if (r->chunk != NULL)
        piece_records(s, r->chunk, strlen(r->chunk));
    return s->len >= BATCH_BYTES;
}

/* The next piece of a chunks segment into s->buf (it may be empty); a negative errno if the
 * store failed. */
static int chunks_piece(df_json_stream *s, struct chunks_src *src, df_error *err)
{
    json_t *c;
    char *text;
    int rc;

    switch (s->phase) {
        case 0:
            piece_append(s, "[", 1);
            s->phase = src->below > 0 ? 1 : 2;
            return 0;
        case 1:
            s->rows = 0;
            rc = store_each_chunk(s->w->st, src->plan_id, src->action_id, s->after, src->below,
                                  BATCH_ROWS, add_row, s, err);
            if (rc < 0)
                return rc;
            if (rc == 0 && s->rows < BATCH_ROWS)
                s->phase = 2; /* the last batch */
            return 0;
        case 2:
            if (s->mem_next == json_array_size(src->memory)) {
                s->phase = 3;
                return 0;
            }
            c = json_array_get(src->memory, s->mem_next++);
            text = json_is_array(c) ? json_dumps(c, JSON_COMPACT) : NULL;
            if (text != NULL)
                piece_records(s, text, strlen(text));
            free(text);
            return 0;
        default:
            piece_append(s, "]", 1);
            s->phase = 0;
            s->after = 0;
            s->mem_next = 0;
            s->any = false;
            s->seg++;
            return 0;
    }
}

long df_json_stream_read(df_json_stream *s, char *buf, size_t max, df_error *err)
{
    while (s->off == s->len) {
        struct segment *seg;
        int rc;
        s->off = s->len = 0;
        if (s->seg == s->n_segs)
            return 0;
        seg = &s->segs[s->seg];
        if (seg->src == NULL) {
            piece_append(s, seg->text, seg->len);
            free(seg->text);
            seg->text = NULL;
            s->seg++;
        } else if ((rc = chunks_piece(s, seg->src, err)) < 0) {
            return rc;
        }
    }
    size_t n = s->len - s->off < max ? s->len - s->off : max;
    memcpy(buf, s->buf + s->off, n);
    s->off += n;
    return (long)n;
}
