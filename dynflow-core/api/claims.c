#include "api/claims.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util/hash.h"
#include "util/secrets.h"
#include "util/util.h"

struct claim {
    char key[DF_UUID_BUF];
    char parent[DF_UUID_BUF];
    json_t *entry; /* the launch's entry for key, redacted */
};

struct df_claims {
    pthread_mutex_t lock;
    df_hash *in_flight; /* key → struct claim (which owns the key) */
};

/* Where an id was launched from: the parent and its entry for the id (redacted, borrowed). */
struct origin {
    char parent[DF_UUID_BUF];
    json_t *entry;
    char loaded[DF_UUID_BUF]; /* the last parent read from the database, for the next id */
    json_t *loaded_json;      /* its status JSON */
};

static const char claims_key = 0;

static void free_claim(void *ud, const char *key, void *value)
{
    struct claim *cl = value;

    (void)ud, (void)key;
    json_decref(cl->entry);
    free(cl);
}

static void claims_free(void *data)
{
    df_claims *c = data;

    df_hash_each(c->in_flight, free_claim, NULL);
    df_hash_free(c->in_flight);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

int df_claims_attach(df_world *w, df_error *err)
{
    df_claims *c = df_calloc(1, sizeof(*c));

    pthread_mutex_init(&c->lock, NULL);
    c->in_flight = df_hash_new();
    if (df_world_attach(w, &claims_key, c, NULL, claims_free) < 0) {
        claims_free(c);
        return df_errorf(err, -EEXIST, "the task API is attached to this world already");
    }
    return 0;
}

df_claims *df_claims_of(df_world *w)
{
    return df_world_attachment(w, &claims_key);
}

/* The stored launch of an existing task: its batch parent (the caller of its entry action) and
 * the parent's input_hash entry for it.  -ENOENT when it has none this API can compare. */
static int stored_origin(df_world *w, const char *key, struct origin *o)
{
    json_t *child = df_plan_json(w, key, DF_JSON_ACTIONS), *entry_action;
    const char *parent;

    entry_action = json_array_get(json_object_get(child, "actions"), 0);
    parent = json_string_value(json_object_get(entry_action, "caller_execution_plan_id"));
    if (parent == NULL) {
        json_decref(child);
        return -ENOENT;
    }
    snprintf(o->parent, sizeof(o->parent), "%s", parent);
    if (strcmp(o->loaded, parent) != 0) {
        snprintf(o->loaded, sizeof(o->loaded), "%s", parent);
        json_decref(o->loaded_json);
        o->loaded_json = df_plan_json(w, parent, DF_JSON_ACTIONS);
    }
    json_decref(child);
    entry_action = json_array_get(json_object_get(o->loaded_json, "actions"), 0);
    o->entry =
        json_object_get(json_object_get(json_object_get(entry_action, "input"), "input_hash"), key);
    return o->entry != NULL ? 0 : -ENOENT;
}

/* 0: key is free; 1: taken with the same (redacted) entry, o->parent says by whom; -EEXIST. */
static int find(df_claims *c, df_world *w, const char *key, const json_t *entry, struct origin *o,
                df_error *err)
{
    struct claim *cl = df_hash_get(c->in_flight, key);
    struct df_plan_info info;

    if (cl != NULL) {
        snprintf(o->parent, sizeof(o->parent), "%s", cl->parent);
        o->entry = cl->entry;
    } else if (df_plan_get_info(w, key, &info) < 0) {
        return 0;
    } else if (stored_origin(w, key, o) < 0) {
        return df_errorf(err, -EEXIST,
                         "task %s exists already, and not from a batch launch it could be "
                         "compared with",
                         key);
    }
    if (!json_equal(o->entry, (json_t *)entry))
        return df_errorf(err, -EEXIST, "task %s was launched already with another input", key);
    return 1;
}

/* Every id of input checked against what exists: the number taken, or -EEXIST. */
static int taken(df_claims *c, df_world *w, const json_t *input, char parent[DF_UUID_BUF],
                 df_error *err)
{
    struct origin o = {.parent = "", .entry = NULL, .loaded = "", .loaded_json = NULL};
    const char *key, *free_key = NULL, *taken_key = NULL;
    json_t *entry;
    int n = 0, rc = 0;

    json_object_foreach((json_t *)input, key, entry)
    {
        bool had = false;
        json_t *redacted = df_redact_secrets(entry, &had);
        rc = find(c, w, key, redacted, &o, err);
        json_decref(redacted);
        if (rc < 0)
            break;
        if (rc == 0) {
            free_key = key;
        } else if (n++ == 0) {
            taken_key = key;
            snprintf(parent, DF_UUID_BUF, "%s", o.parent);
        } else if (strcmp(parent, o.parent) != 0) {
            rc = df_errorf(err, -EEXIST, "tasks %s and %s were launched in other batches",
                           taken_key, key);
            break;
        }
    }
    json_decref(o.loaded_json);
    if (rc >= 0 && n > 0 && free_key != NULL)
        rc = df_errorf(err, -EEXIST,
                       "task %s was launched already (in batch %s), task %s was not: a retried "
                       "launch repeats the same tasks",
                       taken_key, parent, free_key);
    return rc < 0 ? rc : n;
}

int df_claims_take(df_claims *c, df_world *w, const json_t *input, char parent_id[DF_UUID_BUF],
                   df_error *err)
{
    const char *key;
    json_t *entry;
    int n;

    pthread_mutex_lock(&c->lock);
    n = taken(c, w, input, parent_id, err);
    if (n == 0) {
        df_uuid_new(parent_id);
        json_object_foreach((json_t *)input, key, entry)
        {
            struct claim *cl = df_calloc(1, sizeof(*cl));
            bool had = false;
            snprintf(cl->key, sizeof(cl->key), "%s", key);
            snprintf(cl->parent, sizeof(cl->parent), "%s", parent_id);
            cl->entry = df_redact_secrets(entry, &had);
            df_hash_put(c->in_flight, cl->key, cl);
        }
    }
    pthread_mutex_unlock(&c->lock);
    return n < 0 ? n : n > 0;
}

void df_claims_drop(df_claims *c, const json_t *input, const char *parent_id)
{
    const char *key;
    json_t *entry;

    pthread_mutex_lock(&c->lock);
    json_object_foreach((json_t *)input, key, entry)
    {
        struct claim *cl = df_hash_get(c->in_flight, key);
        if (cl != NULL && strcmp(cl->parent, parent_id) == 0)
            free_claim(NULL, key, df_hash_del(c->in_flight, key));
    }
    pthread_mutex_unlock(&c->lock);
}

void df_claims_created(df_claims *c, const char *key)
{
    struct claim *cl;

    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    cl = df_hash_del(c->in_flight, key);
    pthread_mutex_unlock(&c->lock);
    if (cl != NULL)
        free_claim(NULL, key, cl);
}
