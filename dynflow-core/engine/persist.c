/*
 * Write-behind persistence.  Changes are made in memory and the plan is
 * queued; one writer thread writes every queued plan's dirty rows in one
 * transaction per batch.  A plan queued many times before the writer gets to
 * it is written once.  With a file database, callers that must not act before
 * a change is durable wait with df_writer_sync().
 *
 * A batch that fails (disk full, I/O error) is rolled back and nothing of it
 * counts as written: its plans are marked dirty again back to what the last
 * committed batch stored, and the batch is retried after a growing pause
 * while the engine reports the failure (doc/persistence.md).
 *
 * Loading turns rows back into plans, for inspection and for recovery.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/internal.h"

/* Pause before retrying a failed batch: doubles from the first to the last. */
#define RETRY_FIRST_US 50000
#define RETRY_MAX_US   1000000
/* While writes keep failing, the error is logged again this often. */
#define RELOG_US 60000000

struct df_wop {
    struct df_wop *next;
    enum { WOP_PLAN, WOP_TIMER_PUT, WOP_TIMER_DEL, WOP_CLEAN } type;
    df_plan *plan;         /* WOP_PLAN: a reference */
    struct df_timer timer; /* WOP_TIMER_*: data is an owned event copy */
    int64_t ended_before;  /* WOP_CLEAN */
    uint64_t removed;
    int rc;
    df_error err;
    bool done;
};

static void writer_push(df_world *w, struct df_wop *op)
{
    struct df_writer *wr = &w->writer;

    op->next = NULL;
    if (wr->tail != NULL)
        wr->tail->next = op;
    else
        wr->head = op;
    wr->tail = op;
    wr->n_ops++;
    pthread_cond_signal(&wr->cond);
}

void df_writer_throttle(df_world *w)
{
    struct df_writer *wr = &w->writer;

    pthread_mutex_lock(&wr->lock);
    while (wr->running && !wr->failing && wr->n_ops > DF_WRITER_BACKLOG)
        pthread_cond_wait(&wr->done_cond, &wr->lock);
    pthread_mutex_unlock(&wr->lock);
}

void df_writer_plan(df_world *w, df_plan *p)
{
    struct df_writer *wr = &w->writer;

    pthread_mutex_lock(&wr->lock);
    if (!p->queued) {
        struct df_wop *op = df_calloc(1, sizeof(*op));
        op->type = WOP_PLAN;
        df_plan_ref(p);
        op->plan = p;
        p->queued = true;
        writer_push(w, op);
    }
    pthread_mutex_unlock(&wr->lock);
}

void df_writer_timer_put(df_world *w, const struct df_timer *t)
{
    struct df_wop *op = df_calloc(1, sizeof(*op));

    op->type = WOP_TIMER_PUT;
    op->timer = *t;
    op->timer.data = t->data != NULL ? json_deep_copy(t->data) : NULL;
    pthread_mutex_lock(&w->writer.lock);
    writer_push(w, op);
    pthread_mutex_unlock(&w->writer.lock);
}

void df_writer_timer_delete(df_world *w, int64_t id)
{
    struct df_wop *op = df_calloc(1, sizeof(*op));

    op->type = WOP_TIMER_DEL;
    op->timer.id = id;
    pthread_mutex_lock(&w->writer.lock);
    writer_push(w, op);
    pthread_mutex_unlock(&w->writer.lock);
}

int df_writer_clean(df_world *w, int64_t ended_before, uint64_t *removed, df_error *err)
{
    struct df_wop op = {.type = WOP_CLEAN, .ended_before = ended_before};
    struct df_writer *wr = &w->writer;

    pthread_mutex_lock(&wr->lock);
    writer_push(w, &op);
    while (!op.done)
        pthread_cond_wait(&wr->done_cond, &wr->lock);
    pthread_mutex_unlock(&wr->lock);
    if (removed != NULL)
        *removed = op.removed;
    if (op.rc < 0 && err != NULL)
        *err = op.err;
    return op.rc;
}

int df_writer_sync(df_world *w, bool through_failures, df_error *err)
{
    struct df_writer *wr = &w->writer;
    uint64_t target;
    int rc = 0;

    if (!wr->running)
        return 0;
    pthread_mutex_lock(&wr->lock);
    /* Queued work goes into the next batch; work already taken is in the current one.  A
     * failed batch goes back to the head of the queue, so the next commit covers it too. */
    target = wr->head != NULL ? wr->batch_started + 1 : wr->batch_started;
    while (wr->batch_done < target) {
        if (wr->failing && (!through_failures || wr->releasing)) {
            rc = through_failures ? -ECANCELED : -EIO;
            if (err != NULL)
                *err = wr->failure;
            break;
        }
        pthread_cond_wait(&wr->done_cond, &wr->lock);
    }
    pthread_mutex_unlock(&wr->lock);
    return rc;
}

int df_writer_health(df_world *w, df_error *err)
{
    struct df_writer *wr = &w->writer;
    int rc = 0;

    pthread_mutex_lock(&wr->lock);
    if (wr->failing) {
        rc = -EIO;
        if (err != NULL)
            *err = wr->failure;
    }
    pthread_mutex_unlock(&wr->lock);
    return rc;
}

/* ---- writing rows ------------------------------------------------------------ */

static char *dump(json_t *j)
{
    return j != NULL ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
}

static char *dump_ints(const struct df_ints *a)
{
    json_t *j = json_array();
    char *s;

    for (size_t i = 0; i < a->n; i++)
        json_array_append_new(j, json_integer(a->v[i]));
    s = dump(j);
    json_decref(j);
    return s;
}

static int write_plan_row(store *st, df_plan *p, df_error *err)
{
    char *run_flow = dump(p->run_flow), *fin_flow = dump(p->finalize_flow);
    char *history = dump(p->history);
    json_t *data = json_pack("{s:s?}", "rescued", p->rescued);
    char *data_s = dump(data);
    double exec = 0;
    struct store_plan_row r;
    int rc;

    for (size_t i = 0; i < p->n_steps; i++)
        exec += p->steps[i]->execution_time;
    r = (struct store_plan_row){
        .uuid = p->id,
        .state = df_plan_state_name(p->state),
        .result = df_result_name(df_plan_result_locked(p)),
        .label = p->label,
        .started_at = p->started_at,
        .ended_at = p->ended_at,
        .real_time = p->ended_at && p->started_at ? (double)(p->ended_at - p->started_at) / 1e6 : 0,
        .execution_time = exec,
        .execution_time_null = !p->execution_time_set,
        .root_plan_step_id = 1,
        .run_flow = run_flow,
        .finalize_flow = fin_flow,
        .execution_history = history,
        .caller_plan_uuid = p->caller_plan_id,
        .caller_action_id = p->caller_action_id,
        .data = data_s};
    rc = p->stored && !(p->dirty & DF_PLAN_DIRTY_ROW) ? store_update_plan(st, &r, err)
                                                      : store_put_plan(st, &r, err);
    free(run_flow);
    free(fin_flow);
    free(history);
    free(data_s);
    json_decref(data);
    return rc;
}

static const char *const step_kinds[] = {"plan", "run", "finalize"};

static int write_step(store *st, df_plan *p, struct df_step *s, df_error *err)
{
    struct df_action *a = df_plan_action_by_id(p, s->action_id);
    char *error = dump(s->error), *children = NULL, *requires = NULL;
    struct store_step_row r;
    int rc;

    if (s->kind == DF_STEP_PLAN_KIND) {
        children = dump_ints(&s->children);
    } else if (s->requires.n > 0) {
        char *all = dump_ints(&s->requires), *refs = dump_ints(&s->ref_requires);
        size_t len = strlen(all) + strlen(refs) + 16;
        requires = df_malloc(len);
        snprintf(requires, len, "{\"all\":%s,\"ref\":%s}", all, refs);
        free(all);
        free(refs);
    }
    r = (struct store_step_row){
        .plan_uuid = p->id,
        .id = s->id,
        .action_id = s->action_id,
        .state = df_step_state_name(s->state),
        .kind = step_kinds[s->kind],
        .action_class = a->class_name,
        .queue = s->queue ? s->queue->name : NULL,
        .started_at = s->started_at,
        .ended_at = s->ended_at,
        .real_time = s->started_at && s->ended_at ? (double)(s->ended_at - s->started_at) / 1e6 : 0,
        .execution_time = s->execution_time,
        .progress_done = s->progress_done,
        .progress_weight = s->progress_weight,
        .error = error,
        .children = children,
        .requires = requires};
    rc = store_put_step(st, &r, err);
    free(error);
    free(children);
    free(requires);
    return rc;
}

static int write_action(store *st, df_plan *p, struct df_action *a, df_error *err)
{
    bool full = !a->stored || (a->dirty & DF_ACTION_DIRTY_ROW);
    char *input = full || (a->dirty & DF_ACTION_DIRTY_INPUT)
                      ? dump(a->input_stored ? a->input_stored : a->input)
                      : NULL;
    char *output = dump(a->output);
    json_t *data = json_pack("{s:i, s:b}", "parent_id", a->parent_id, "has_refs", a->has_refs);
    char *data_s = dump(data);
    struct store_action_row r = {.plan_uuid = p->id,
                                 .id = a->id,
                                 .action_class = a->class_name,
                                 .plan_step_id = a->plan_step_id,
                                 .run_step_id = a->run_step_id,
                                 .finalize_step_id = a->finalize_step_id,
                                 .caller_plan_uuid = a->caller_plan_id,
                                 .caller_action_id =
                                     a->caller_plan_id ? a->caller_action_id : a->parent_id,
                                 .input = input,
                                 .output = output,
                                 .data = data_s};
    int rc = full ? store_put_action(st, &r, err) : store_update_action(st, &r, err);

    free(input);
    free(output);
    free(data_s);
    json_decref(data);
    return rc;
}

/* Appends the new chunks; each gets its row id ("id").  With a file database the chunks an
 * earlier batch committed leave memory (doc/output.md); those of a batch that failed stay, to be
 * written again (doc/persistence.md). */
static int write_chunks(store *st, df_plan *p, struct df_action *a, df_error *err)
{
    int rc = 0;

    if (p->w->durable)
        df_chunks_forget_committed(a);
    if (a->chunks_drop) {
        rc = store_drop_chunks(st, p->id, a->id, err);
        a->chunks_drop = false;
        a->drop_written = true;
    }
    for (; rc == 0 && a->chunks_stored < json_array_size(a->chunks); a->chunks_stored++) {
        json_t *c = json_array_get(a->chunks, a->chunks_stored);
        char *chunk = dump(json_object_get(c, "chunk"));
        struct store_chunk_row r = {
            .plan_uuid = p->id,
            .action_id = a->id,
            .kind = json_string_value(json_object_get(c, "kind")),
            .timestamp = (int64_t)(json_number_value(json_object_get(c, "timestamp")) * 1e6),
            .chunk = chunk};
        int64_t id = 0;
        rc = store_add_chunk(st, &r, &id, err);
        if (rc == 0) {
            json_object_set_new(c, "id", json_integer(id));
            a->last_chunk_id = id;
        }
        free(chunk);
    }
    return rc;
}

static int write_delayed(store *st, df_plan *p, df_error *err)
{
    struct df_delayed *d = p->delayed;
    int rc = 0;

    if (d->deleted) {
        if (d->stored)
            rc = store_delete_delayed(st, p->id, err);
        d->stored = false;
        d->dirty = false;
        return rc;
    }
    if (!d->dirty)
        return 0;
    char *args = dump(d->args);
    struct store_delayed_row r = {.plan_uuid = p->id,
                                  .start_at = d->start_at,
                                  .start_before = d->start_before,
                                  .frozen = d->frozen,
                                  .args = args};
    rc = store_put_delayed(st, &r, err);
    for (size_t i = 0; rc == 0 && !d->stored && i < d->n_blocked_by; i++)
        rc = store_add_dependency(st, p->id, d->blocked_by[i], err);
    free(args);
    d->stored = rc == 0;
    d->dirty = false;
    return rc;
}

static int write_plan(store *st, df_plan *p, df_error *err)
{
    int rc = 0;

    pthread_mutex_lock(&p->lock);
    if (p->dirty || !p->stored)
        rc = write_plan_row(st, p, err);
    for (size_t i = 0; rc == 0 && i < p->n_steps; i++)
        if (p->steps[i]->dirty) {
            rc = write_step(st, p, p->steps[i], err);
            p->steps[i]->dirty = false;
        }
    for (size_t i = 0; rc == 0 && i < p->n_actions; i++) {
        struct df_action *a = p->actions[i];
        if (a->dirty || !a->stored)
            rc = write_action(st, p, a, err);
        if (rc == 0)
            rc = write_chunks(st, p, a, err);
        a->stored = true;
        a->dirty = 0;
    }
    if (rc == 0 && p->delayed != NULL)
        rc = write_delayed(st, p, err);
    p->stored = true;
    p->dirty = 0;
    pthread_mutex_unlock(&p->lock);
    return rc;
}

static int write_timer(store *st, const struct df_timer *t, df_error *err)
{
    json_t *ev = json_pack("{s:s, s:O?}", "kind", df_event_kind_name(t->kind), "data", t->data);
    char *event = dump(ev);
    struct store_timer_row r = {.id = t->id,
                                .plan_uuid = t->plan_id,
                                .step_id = t->step_id,
                                .due_at = t->due,
                                .event = event};
    int rc = store_put_timer(st, &r, err);

    free(event);
    json_decref(ev);
    return rc;
}

static int write_op(df_world *w, struct df_wop *op, df_error *err)
{
    switch (op->type) {
        case WOP_PLAN:
            return write_plan(w->st, op->plan, err);
        case WOP_TIMER_PUT:
            return write_timer(w->st, &op->timer, err);
        case WOP_TIMER_DEL:
            return store_delete_timer(w->st, op->timer.id, err);
        case WOP_CLEAN:
            op->rc = store_delete_old_plans(w->st, op->ended_before, &op->removed, &op->err);
            return 0;
    }
    return 0;
}

static int write_batch(df_world *w, struct df_wop *ops, df_error *err)
{
    int rc = store_write_begin(w->st, err);

    for (struct df_wop *op = ops; rc == 0 && op != NULL; op = op->next)
        rc = write_op(w, op, err);
    if (rc == 0)
        rc = store_write_commit(w->st, err);
    else
        store_write_rollback(w->st);
    return rc;
}

/* The batch committed: what was written is what the database has. */
static void plan_committed(df_plan *p)
{
    pthread_mutex_lock(&p->lock);
    p->committed = p->stored;
    for (size_t i = 0; i < p->n_actions; i++) {
        struct df_action *a = p->actions[i];
        a->committed = a->stored;
        a->chunks_committed = a->chunks_stored;
        a->drop_written = false;
    }
    if (p->delayed != NULL)
        p->delayed->committed = p->delayed->stored;
    pthread_mutex_unlock(&p->lock);
}

/* The batch was rolled back: everything since the last commit is to be written again. */
static void plan_rolled_back(df_plan *p)
{
    pthread_mutex_lock(&p->lock);
    p->stored = p->committed;
    p->dirty |= DF_PLAN_DIRTY_ROW;
    for (size_t i = 0; i < p->n_steps; i++)
        p->steps[i]->dirty = true;
    for (size_t i = 0; i < p->n_actions; i++) {
        struct df_action *a = p->actions[i];
        a->stored = a->committed;
        a->dirty |= DF_ACTION_DIRTY_ROW;
        a->chunks_stored = a->chunks_committed;
        a->chunks_drop |= a->drop_written;
        a->drop_written = false;
        a->last_chunk_id = 0; /* the rows written since were rolled back: ask the store */
    }
    if (p->delayed != NULL) {
        p->delayed->stored = p->delayed->committed;
        p->delayed->dirty = true;
    }
    pthread_mutex_unlock(&p->lock);
}

static void free_ops(struct df_wop *ops)
{
    for (struct df_wop *op = ops, *next; op != NULL; op = next) {
        next = op->next;
        if (op->type == WOP_CLEAN) {
            op->done = true; /* the caller owns it */
            continue;
        }
        df_plan_unref(op->plan);
        json_decref(op->timer.data);
        free(op);
    }
}

/* Writer lock held.  A failed batch goes back to the head of the queue, in order (a timer's
 * put before its delete); a plan cleaning gets the error instead. */
static void requeue(struct df_writer *wr, struct df_wop *ops)
{
    struct df_wop *keep = NULL, *last = NULL;

    for (struct df_wop *op = ops, *next; op != NULL; op = next) {
        next = op->next;
        if (op->type == WOP_CLEAN) {
            op->rc = -EIO;
            op->err = wr->failure;
            op->done = true;
            continue;
        }
        if (op->type == WOP_PLAN)
            op->plan->queued = true;
        op->next = NULL;
        if (last != NULL)
            last->next = op;
        else
            keep = op;
        last = op;
        wr->n_ops++;
    }
    if (last == NULL)
        return;
    last->next = wr->head;
    if (wr->head == NULL)
        wr->tail = last;
    wr->head = keep;
}

/* Writer lock held: the batch goes back to the queue; the failure is reported once, then
 * every RELOG_US while it lasts. */
static void note_failure(df_world *w, const df_error *err, struct df_wop *ops)
{
    struct df_writer *wr = &w->writer;
    int64_t now = df_now_us();
    bool first = !wr->failing;

    snprintf(wr->failure.text, sizeof(wr->failure.text),
             "cannot write to the database '%s': %.400s",
             w->database ? w->database : ":memory:", err->text);
    requeue(wr, ops);
    if (first)
        wr->failing_since = now;
    wr->failing = true;
    wr->attempts++;
    if (first || now - wr->logged_at >= RELOG_US) {
        wr->logged_at = now;
        df_world_log(w, DF_LOG_ERROR,
                     "%s; %zu queued writes are kept in memory and tried again every %.1f s at "
                     "most; steps do not start and new tasks are refused until then",
                     wr->failure.text, wr->n_ops, RETRY_MAX_US / 1e6);
    }
}

static void note_success(df_world *w)
{
    struct df_writer *wr = &w->writer;

    if (wr->failing)
        df_world_log(w, DF_LOG_INFO,
                     "writing to the database '%s' works again after %.1f s and %u failed "
                     "attempts; every change kept in memory is stored",
                     w->database ? w->database : ":memory:",
                     (double)(df_now_us() - wr->failing_since) / 1e6, wr->attempts);
    wr->failing = false;
    wr->attempts = 0;
}

/* Writer lock held: waits out the pause after a failed batch (not when stopping). */
static void retry_pause(struct df_writer *wr)
{
    unsigned shift = wr->attempts > 6 ? 5 : wr->attempts - 1;
    int64_t pause = (int64_t)RETRY_FIRST_US << shift;
    struct timespec until;

    if (pause > RETRY_MAX_US)
        pause = RETRY_MAX_US;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)(pause / 1000000);
    until.tv_nsec += (long)(pause % 1000000) * 1000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    while (!wr->stop && pthread_cond_timedwait(&wr->cond, &wr->lock, &until) == 0)
        ;
}

static void *writer_thread(void *arg)
{
    df_world *w = arg;
    struct df_writer *wr = &w->writer;

    pthread_mutex_lock(&wr->lock);
    for (;;) {
        struct df_wop *ops, *op;
        uint64_t batch;
        df_error err = {{0}};
        int rc;
        while (wr->head == NULL && !wr->stop)
            pthread_cond_wait(&wr->cond, &wr->lock);
        if (wr->head == NULL)
            break;
        ops = wr->head;
        wr->head = wr->tail = NULL;
        wr->n_ops = 0;
        batch = ++wr->batch_started;
        for (op = ops; op != NULL; op = op->next)
            if (op->type == WOP_PLAN)
                op->plan->queued = false;
        pthread_mutex_unlock(&wr->lock);

        rc = write_batch(w, ops, &err);
        for (op = ops; op != NULL; op = op->next) {
            if (op->type != WOP_PLAN)
                continue;
            if (rc < 0) {
                plan_rolled_back(op->plan);
            } else {
                plan_committed(op->plan);
                df_world_release(w, op->plan);
            }
        }

        pthread_mutex_lock(&wr->lock);
        if (rc == 0) {
            note_success(w);
            wr->batch_done = batch;
            free_ops(ops);
        } else {
            note_failure(w, &err, ops);
        }
        pthread_cond_broadcast(&wr->done_cond);
        if (rc < 0 && wr->stop && wr->attempts > 1)
            break; /* stopping: one more try was made */
        if (rc < 0)
            retry_pause(wr);
    }
    if (wr->head != NULL)
        df_world_log(w, DF_LOG_ERROR,
                     "stopping with %zu queued writes that could not be written: %s; the database "
                     "keeps its last "
                     "committed state",
                     wr->n_ops, wr->failure.text);
    free_ops(wr->head);
    wr->head = wr->tail = NULL;
    pthread_mutex_unlock(&wr->lock);
    return NULL;
}

void df_writer_release(df_world *w)
{
    struct df_writer *wr = &w->writer;

    if (!wr->running)
        return;
    pthread_mutex_lock(&wr->lock);
    wr->releasing = true;
    pthread_cond_broadcast(&wr->done_cond);
    pthread_mutex_unlock(&wr->lock);
}

int df_writer_start(df_world *w, df_error *err)
{
    struct df_writer *wr = &w->writer;
    int rc;

    pthread_mutex_init(&wr->lock, NULL);
    pthread_cond_init(&wr->cond, NULL);
    pthread_cond_init(&wr->done_cond, NULL);
    rc = pthread_create(&wr->thread, NULL, writer_thread, w);
    if (rc != 0)
        return df_errorf(err, -rc, "cannot start the database writer: %s", strerror(rc));
    wr->running = true;
    return 0;
}

/* Writes everything still queued, then stops. */
void df_writer_stop(df_world *w)
{
    struct df_writer *wr = &w->writer;

    if (!wr->running)
        return;
    pthread_mutex_lock(&wr->lock);
    wr->stop = true;
    pthread_cond_signal(&wr->cond);
    pthread_mutex_unlock(&wr->lock);
    pthread_join(wr->thread, NULL);
    wr->running = false;
    pthread_mutex_destroy(&wr->lock);
    pthread_cond_destroy(&wr->cond);
    pthread_cond_destroy(&wr->done_cond);
}

/* ---- loading ------------------------------------------------------------------- */

static json_t *load_json(const char *text)
{
    /* JSON_ALLOW_NUL: command output may hold NUL bytes, stored as \u0000 */
    return text != NULL ? json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL) : NULL;
}

static void load_ints(const char *text_or_null, json_t *arr, struct df_ints *out)
{
    json_t *j = arr != NULL ? json_incref(arr) : load_json(text_or_null), *v;
    size_t i;

    json_array_foreach(j, i, v) df_ints_push(out, (int)json_integer_value(v));
    json_decref(j);
}

static int load_plan_row(void *ud, const struct store_plan_row *r)
{
    df_plan *p = ud;
    json_t *data = load_json(r->data);
    const char *rescued = json_string_value(json_object_get(data, "rescued"));
    int state = df_plan_state_parse(r->state);
    const struct df_action_class *cls = df_world_class(p->w, r->label);

    p->state = state >= 0 ? (enum df_plan_state)state : DF_PLAN_STOPPED;
    if (cls != NULL) {
        p->label = cls->name;
    } else if (r->label != NULL) {
        p->label_copy = df_strdup(r->label);
        p->label = p->label_copy;
    }
    p->started_at = r->started_at;
    p->ended_at = r->ended_at;
    p->execution_time_set = !r->execution_time_null;
    json_decref(p->history);
    p->history = load_json(r->execution_history);
    if (!json_is_array(p->history)) {
        json_decref(p->history);
        p->history = json_array();
    }
    p->run_flow = load_json(r->run_flow);
    p->finalize_flow = load_json(r->finalize_flow);
    if (r->caller_plan_uuid != NULL) {
        p->caller_plan_id = df_strdup(r->caller_plan_uuid);
        p->caller_action_id = r->caller_action_id;
    }
    if (rescued != NULL)
        p->rescued = df_strdup(rescued);
    json_decref(data);
    return 0;
}

static int step_kind(const char *kind)
{
    for (int i = 0; i < 3; i++)
        if (kind != NULL && strcmp(kind, step_kinds[i]) == 0)
            return i;
    return DF_STEP_RUN_KIND;
}

static int step_state(const char *name)
{
    for (int i = DF_STEP_SCHEDULING; i <= DF_STEP_CANCELLED; i++)
        if (name != NULL && strcmp(name, df_step_state_name(i)) == 0)
            return i;
    return DF_STEP_ERROR;
}

static int load_step(void *ud, const struct store_step_row *r)
{
    df_plan *p = ud;
    struct df_step *s;
    json_t *req;

    if (r->id != (int)p->n_steps + 1)
        return -EINVAL; /* step ids are dense */
    s = df_step_new(p, step_kind(r->kind), r->action_id);
    s->state = step_state(r->state);
    s->error = load_json(r->error);
    s->started_at = r->started_at;
    s->ended_at = r->ended_at;
    s->execution_time = r->execution_time;
    s->progress_done = r->progress_done;
    s->progress_weight = r->progress_weight;
    s->queue = s->kind == DF_STEP_PLAN_KIND ? NULL : df_world_queue(p->w, r->queue);
    s->dirty = false;
    if (r->children != NULL)
        load_ints(r->children, NULL, &s->children);
    req = load_json(r->requires);
    load_ints(NULL, json_object_get(req, "all"), &s->requires);
    load_ints(NULL, json_object_get(req, "ref"), &s->ref_requires);
    json_decref(req);
    return 0;
}

static int load_action(void *ud, const struct store_action_row *r)
{
    df_plan *p = ud;
    struct df_action *a;
    json_t *data;

    if (r->id != (int)p->n_actions + 1)
        return -EINVAL;
    a = df_calloc(1, sizeof(*a));
    if (p->n_actions == p->cap_actions) {
        p->cap_actions = p->cap_actions ? p->cap_actions * 2 : 4;
        p->actions = df_realloc(p->actions, p->cap_actions * sizeof(*p->actions));
    }
    p->actions[p->n_actions++] = a;
    a->plan = p;
    a->id = r->id;
    a->cls = df_world_class(p->w, r->action_class);
    a->class_name = df_strdup(r->action_class ? r->action_class : "");
    a->plan_step_id = r->plan_step_id;
    a->run_step_id = r->run_step_id;
    a->finalize_step_id = r->finalize_step_id;
    if (r->caller_plan_uuid != NULL) {
        a->caller_plan_id = df_strdup(r->caller_plan_uuid);
        a->caller_action_id = r->caller_action_id;
    }
    a->input = load_json(r->input);
    a->output = load_json(r->output);
    if (!json_is_object(a->input)) {
        json_decref(a->input);
        a->input = json_object();
    }
    if (!json_is_object(a->output)) {
        json_decref(a->output);
        a->output = json_object();
    }
    a->secrets_lost = df_json_has_redacted_secrets(a->input);
    a->chunks = json_array();
    data = load_json(r->data);
    a->parent_id = (int)json_integer_value(json_object_get(data, "parent_id"));
    a->has_refs = json_is_true(json_object_get(data, "has_refs"));
    json_decref(data);
    a->stored = a->committed = true;
    return 0;
}

static int load_chunk(void *ud, const struct store_chunk_row *r)
{
    struct df_action *a = df_plan_action_by_id(ud, r->action_id);

    if (a == NULL)
        return 0;
    json_array_append_new(a->chunks,
                          json_pack("{s:o, s:s?, s:f}", "chunk", load_json(r->chunk), "kind",
                                    r->kind, "timestamp", (double)r->timestamp / 1e6));
    a->chunks_stored++;
    a->chunks_committed++;
    return 0;
}

static bool step_of(df_plan *p, int id, enum df_step_kind kind, int action_id)
{
    struct df_step *s = df_plan_step(p, id);

    return id == 0 || (s != NULL && s->kind == kind && s->action_id == action_id);
}

/* Rows that do not fit together (a hand-edited or damaged database) are refused whole. */
static bool consistent(df_plan *p)
{
    for (size_t i = 0; i < p->n_actions; i++) {
        struct df_action *a = p->actions[i];
        if (a->plan_step_id == 0 || !step_of(p, a->plan_step_id, DF_STEP_PLAN_KIND, a->id) ||
            !step_of(p, a->run_step_id, DF_STEP_RUN_KIND, a->id) ||
            !step_of(p, a->finalize_step_id, DF_STEP_FINALIZE_KIND, a->id) || a->parent_id < 0 ||
            a->parent_id >= a->id)
            return false;
    }
    for (size_t i = 0; i < p->n_steps; i++) {
        struct df_step *s = p->steps[i];
        if (df_plan_action_by_id(p, s->action_id) == NULL)
            return false;
        for (size_t r = 0; r < s->requires.n; r++)
            if (df_plan_step(p, s->requires.v[r]) == NULL)
                return false;
        for (size_t c = 0; c < s->children.n; c++)
            if (df_plan_step(p, s->children.v[c]) == NULL)
                return false;
    }
    for (size_t i = 0; i < p->finalize_order.n; i++) {
        struct df_step *s = df_plan_step(p, p->finalize_order.v[i]);
        if (s == NULL || s->kind != DF_STEP_FINALIZE_KIND)
            return false;
    }
    return p->n_actions > 0;
}

df_plan *df_persist_load(df_world *w, const char *id)
{
    df_plan *p = df_plan_alloc(w, id);
    /* a file database keeps the output in the store (doc/output.md) */
    struct store_plan_loader ld = {p, load_plan_row, load_step, load_action,
                                   w->durable ? NULL : load_chunk};
    json_t *v;
    size_t i;

    if (store_load_plan(w->st, id, &ld, NULL) < 0) {
        df_plan_unref(p);
        return NULL;
    }
    json_array_foreach(p->finalize_flow, i, v) if (json_is_integer(v))
        df_ints_push(&p->finalize_order, (int)json_integer_value(v));
    if (!consistent(p)) {
        df_world_log(w, DF_LOG_ERROR, "plan %s in the database is inconsistent; ignoring it", id);
        df_plan_unref(p);
        return NULL;
    }
    for (size_t k = 0; k < p->n_steps; k++) {
        struct df_step *s = p->steps[k];
        for (size_t r = 0; r < s->requires.n; r++)
            df_ints_push(&df_plan_step(p, s->requires.v[r])->dependents, s->id);
    }
    p->stored = p->committed = true;
    p->dirty = 0;
    return p;
}

/* ---- recovery ------------------------------------------------------------------- */

static int recover_plan(void *ud, const char *uuid)
{
    df_world *w = ud;
    df_plan *p = df_persist_load(w, uuid);

    if (p != NULL) {
        df_world_hold(w, p);
        df_plan_unref(p);
    }
    return 0;
}

static int add_blocker(void *ud, const char *blocked_by)
{
    struct df_delayed *d = ud;

    d->blocked_by = df_realloc(d->blocked_by, (d->n_blocked_by + 1) * sizeof(char *));
    d->blocked_by[d->n_blocked_by++] = df_strdup(blocked_by);
    return 0;
}

static int recover_delayed(void *ud, const struct store_delayed_row *r)
{
    df_world *w = ud;
    df_plan *p = df_world_plan(w, r->plan_uuid, true);
    struct df_delayed *d;

    if (p == NULL)
        return 0;
    d = df_calloc(1, sizeof(*d));
    d->start_at = r->start_at;
    d->start_before = r->start_before;
    d->frozen = r->frozen;
    d->args = load_json(r->args);
    d->stored = d->committed = true;
    store_each_dependency(w->st, r->plan_uuid, add_blocker, d, NULL);
    if (d->n_blocked_by > 0)
        atomic_fetch_add(&w->n_chained, 1);
    pthread_mutex_lock(&p->lock);
    if (p->delayed == NULL)
        p->delayed = d;
    else
        d->stored = d->committed = false;
    pthread_mutex_unlock(&p->lock);
    df_plan_unref(p);
    return 0;
}

static int recover_timer(void *ud, const struct store_timer_row *r)
{
    df_world *w = ud;
    json_t *ev = load_json(r->event);
    const char *kind = json_string_value(json_object_get(ev, "kind"));
    struct df_timer t = {
        .due = r->due_at, .id = r->id, .type = DF_TIMER_EVENT, .step_id = r->step_id};

    snprintf(t.plan_id, sizeof(t.plan_id), "%s", r->plan_uuid);
    for (int k = DF_EVENT_USER; k <= DF_EVENT_SUB_PLAN_FINISHED; k++)
        if (kind != NULL && strcmp(kind, df_event_kind_name(k)) == 0)
            t.kind = k;
    t.data = json_incref(json_object_get(ev, "data"));
    json_decref(ev);
    df_timers_add(w, &t);
    return 0;
}

struct recovering {
    df_plan **v;
    size_t n;
};

static void collect(void *ud, const char *key, void *value)
{
    struct recovering *r = ud;

    (void)key;
    r->v = df_realloc(r->v, (r->n + 1) * sizeof(*r->v));
    df_plan_ref(value);
    r->v[r->n++] = value;
}

static void arm_delayed(df_plan *p)
{
    struct df_timer t = {.type = DF_TIMER_DELAYED};

    memcpy(t.plan_id, p->id, sizeof(t.plan_id));
    t.due = p->delayed->start_at ? p->delayed->start_at : df_now_us();
    df_timers_add(p->w, &t);
    if (p->delayed->start_before) {
        t.due = p->delayed->start_before + 1;
        df_timers_add(p->w, &t);
    }
}

int df_persist_recover(df_world *w, df_error *err)
{
    static const char *const states[] = {"planning", "planned",   "running",
                                         "paused",   "scheduled", NULL};
    struct recovering all = {0};
    int64_t max_id = 0;
    int rc;

    rc = store_max_timer_id(w->st, &max_id, err);
    atomic_store(&w->next_timer_id, max_id);
    if (rc == 0)
        rc = store_each_plan_in_states(w->st, states, recover_plan, w, err);
    if (rc == 0)
        rc = store_each_delayed(w->st, recover_delayed, w, err);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&w->plans_lock);
    df_hash_each(w->plans, collect, &all);
    pthread_mutex_unlock(&w->plans_lock);
    for (size_t i = 0; i < all.n; i++) {
        df_plan *p = all.v[i];
        pthread_mutex_lock(&p->lock);
        if (p->state == DF_PLAN_SCHEDULED && p->delayed != NULL && !p->delayed->frozen)
            arm_delayed(p);
        else if (p->state != DF_PLAN_SCHEDULED)
            df_plan_recover_locked(p);
        pthread_mutex_unlock(&p->lock);
        df_plan_commit(p);
        df_plan_unref(p);
    }
    free(all.v);
    return store_each_timer(w->st, recover_timer, w, err);
}
