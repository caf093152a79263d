/*
 * Dynflow's run-flow tree (Flows::Sequence, Concurrence, Atom).  The engine
 * schedules by an explicit dependency graph; this tree is built with
 * Dynflow's own add_and_resolve rules only so that run_flow reads exactly as
 * Dynflow would report it.
 */
#include <stdlib.h>

#include "engine/internal.h"

struct df_flow *df_flow_new(char type)
{
    struct df_flow *f = df_calloc(1, sizeof(*f));

    f->type = type;
    return f;
}

struct df_flow *df_flow_atom(int step_id)
{
    struct df_flow *f = df_flow_new('A');

    f->step_id = step_id;
    return f;
}

void df_flow_free(struct df_flow *f)
{
    if (f == NULL)
        return;
    for (size_t i = 0; i < f->n; i++)
        df_flow_free(f->subs[i]);
    free(f->subs);
    free(f);
}

static void insert_at(struct df_flow *f, size_t at, struct df_flow *sub)
{
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 4;
        f->subs = df_realloc(f->subs, f->cap * sizeof(*f->subs));
    }
    for (size_t i = f->n; i > at; i--)
        f->subs[i] = f->subs[i - 1];
    f->subs[at] = sub;
    f->n++;
}

static void append(struct df_flow *f, struct df_flow *sub)
{
    insert_at(f, f->n, sub);
}

static void remove_at(struct df_flow *f, size_t at)
{
    for (size_t i = at; i + 1 < f->n; i++)
        f->subs[i] = f->subs[i + 1];
    f->n--;
}

static bool includes_step(const struct df_flow *f, int step_id)
{
    if (f->type == 'A')
        return f->step_id == step_id;
    for (size_t i = 0; i < f->n; i++)
        if (includes_step(f->subs[i], step_id))
            return true;
    return false;
}

static void all_steps(const struct df_flow *f, struct df_ints *out)
{
    if (f->type == 'A') {
        df_ints_push(out, f->step_id);
        return;
    }
    for (size_t i = 0; i < f->n; i++)
        all_steps(f->subs[i], out);
}

/* A child of the same kind is spliced in; a composed child with one sub-flow
 * is replaced by it; then the same for every child (AbstractComposed#flatten!). */
static void flatten(struct df_flow *f)
{
    for (size_t i = f->n; i-- > 0;) {
        struct df_flow *sub = f->subs[i];
        if (sub->type == f->type) {
            remove_at(f, i);
            for (size_t j = 0; j < sub->n; j++)
                insert_at(f, i + j, sub->subs[j]);
            sub->n = 0;
            df_flow_free(sub);
        } else if (sub->type != 'A' && sub->n == 1) {
            f->subs[i] = sub->subs[0];
            sub->n = 0;
            df_flow_free(sub);
        }
    }
    for (size_t i = 0; i < f->n; i++)
        if (f->subs[i]->type != 'A')
            flatten(f->subs[i]);
}

void df_flow_add_and_resolve(struct df_flow *f, struct df_flow *added,
                             const struct df_ints *(*required)(void *ud, int step_id), void *ud)
{
    struct df_ints ids = {0}, satisfying = {0};

    if (added->type != 'A' && added->n == 0) {
        df_flow_free(added);
        return;
    }
    all_steps(added, &ids);
    for (size_t i = 0; i < ids.n; i++) {
        const struct df_ints *req = required(ud, ids.v[i]);
        for (size_t r = 0; req != NULL && r < req->n; r++)
            for (size_t k = 0; k < f->n; k++)
                if (includes_step(f->subs[k], req->v[r]) && !df_ints_has(&satisfying, (int)k))
                    df_ints_push(&satisfying, (int)k);
    }
    if (f->type == 'S' || satisfying.n == 0) {
        append(f, added);
    } else {
        /* Concurrence: the satisfying sub-flows move into Sequence[Concurrence[…], added]. */
        struct df_flow *conc = df_flow_new('C'), *seq = df_flow_new('S');
        for (size_t i = 0; i < satisfying.n; i++)
            append(conc, f->subs[satisfying.v[i]]);
        for (size_t k = f->n; k-- > 0;)
            if (df_ints_has(&satisfying, (int)k))
                remove_at(f, k);
        append(seq, conc);
        append(seq, added);
        append(f, seq);
    }
    flatten(f);
    df_ints_free(&ids);
    df_ints_free(&satisfying);
}

struct df_flow *df_flow_finish_root(struct df_flow *root)
{
    if (root->n == 1) {
        struct df_flow *only = root->subs[0];
        root->n = 0;
        df_flow_free(root);
        return only;
    }
    return root;
}

json_t *df_flow_encode(const struct df_flow *f)
{
    json_t *a;

    if (f->type == 'A')
        return json_integer(f->step_id);
    a = json_array();
    json_array_append_new(a, json_stringn(&f->type, 1));
    for (size_t i = 0; i < f->n; i++)
        json_array_append_new(a, df_flow_encode(f->subs[i]));
    return a;
}
