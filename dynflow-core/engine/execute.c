/*
 * The executor: run steps are scheduled by the dependency graph (a step is
 * dispatched as soon as every step it requires has finished), finalize steps
 * run in order on one worker after the run phase succeeded, and whichever
 * worker finishes a step orchestrates what follows under the plan lock.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

static bool step_active(const struct df_step *s)
{
    return s->in_flight || s->state == DF_STEP_SUSPENDED;
}

static struct df_work *new_work(df_plan *p, int type, int step_id)
{
    struct df_work *wk = df_calloc(1, sizeof(*wk));

    wk->type = type;
    df_plan_ref(p);
    wk->plan = p;
    wk->step_id = step_id;
    return wk;
}

/* Queues one execution of a run step; the event (stolen) may be absent. */
static void dispatch(df_plan *p, struct df_step *s, bool has_event, enum df_event_kind kind,
                     json_t *data)
{
    struct df_work *wk = new_work(p, DF_WORK_STEP, s->id);

    if (!step_active(s))
        p->active++;
    s->in_flight = true;
    wk->has_event = has_event;
    wk->ev_kind = kind;
    wk->ev_data = data;
    df_queue_push(s->queue, wk);
}

static void inbox_push(struct df_step *s, enum df_event_kind kind, json_t *data)
{
    struct df_event_node *n = df_calloc(1, sizeof(*n));

    n->kind = kind;
    n->data = data;
    if (s->inbox.tail != NULL)
        s->inbox.tail->next = n;
    else
        s->inbox.head = n;
    s->inbox.tail = n;
}

static struct df_event_node *inbox_pop(struct df_step *s)
{
    struct df_event_node *n = s->inbox.head;

    if (n != NULL) {
        s->inbox.head = n->next;
        if (s->inbox.head == NULL)
            s->inbox.tail = NULL;
    }
    return n;
}

static void inbox_drop(struct df_step *s)
{
    struct df_event_node *n;

    while ((n = inbox_pop(s)) != NULL) {
        json_decref(n->data);
        free(n);
    }
}

int df_step_deliver_locked(df_plan *p, struct df_step *s, enum df_event_kind kind, json_t *data,
                           df_error *err)
{
    if (s == NULL || s->kind != DF_STEP_RUN_KIND) {
        json_decref(data);
        return df_errorf(err, -ENOENT, "plan %s has no run step %d", p->id, s ? s->id : 0);
    }
    if (s->state == DF_STEP_SUSPENDED && !s->in_flight) {
        dispatch(p, s, true, kind, data);
        return 0;
    }
    if (s->in_flight || s->state == DF_STEP_SUSPENDED || s->state == DF_STEP_RUNNING) {
        inbox_push(s, kind, data); /* delivered once the current execution is over */
        return 0;
    }
    json_decref(data);
    return df_errorf(err, -EINVAL,
                     "step %d of plan %s is %s: only a suspended step can process events", s->id,
                     p->id, df_step_state_name(s->state));
}

/* ---- output references ---------------------------------------------------- */

/* New reference: the output as the status shows it (a runner's result comes from its output
 * chunks: doc/output.md).  Plan lock held. */
static json_t *presented_output(struct df_action *a)
{
    json_t *out;

    if (a->cls == NULL || a->cls->present == NULL)
        return json_incref(a->output);
    out = json_deep_copy(a->output);
    df_presenting = a->plan;
    a->cls->present(a, out);
    df_presenting = NULL;
    return out;
}

static json_t *deref(df_plan *p, json_t *v, json_t **error)
{
    json_t *out, *x;
    const char *k;
    size_t i;

    if (json_is_array(v)) {
        out = json_array();
        json_array_foreach(v, i, x) json_array_append_new(out, deref(p, x, error));
        return out;
    }
    if (!json_is_object(v))
        return json_incref(v);
    x = json_object_get(v, "class");
    if (json_is_string(x) &&
        strcmp(json_string_value(x), "Dynflow::ExecutionPlan::OutputReference") == 0) {
        struct df_action *ra =
            df_plan_action_by_id(p, (int)json_integer_value(json_object_get(v, "action_id")));
        json_t *shown = ra != NULL ? presented_output(ra) : NULL, *cur = shown;
        json_array_foreach(json_object_get(v, "subkeys"), i, x)
        {
            json_t *next = json_object_get(cur, json_string_value(x));
            if (next == NULL && *error == NULL) {
                char msg[256];
                snprintf(msg, sizeof(msg), "key not found: \"%s\"", json_string_value(x));
                *error = df_step_error_new("KeyError", msg);
            }
            cur = next;
        }
        cur = cur != NULL ? json_incref(cur) : json_null();
        json_decref(shown);
        return cur;
    }
    out = json_object();
    json_object_foreach(v, k, x) json_object_set_new(out, k, deref(p, x, error));
    return out;
}

/* Replaces references by values; the stored input keeps the values after the first run. */
static int dereference_input(df_plan *p, struct df_action *a)
{
    json_t *error = NULL, *input;

    if (!a->has_refs)
        return 0;
    input = deref(p, a->input, &error);
    if (error != NULL) {
        json_decref(input);
        json_decref(a->x.error);
        a->x.error = error;
        return -1;
    }
    json_decref(a->input);
    a->input = input;
    if (a->input_stored != NULL) {
        bool had = false;
        json_decref(a->input_stored);
        a->input_stored = df_redact_secrets(input, &had);
    }
    a->has_refs = false;
    df_action_mark(a, DF_ACTION_DIRTY_INPUT);
    return 0;
}

/* ---- one execution of an action's code ----------------------------------- */

/* Marks the step running and prepares the action's working output; with a
 * file database the change is committed before the action's code starts: while
 * the database cannot be written, this waits (doc/persistence.md).
 * Called with the plan lock held; returns with it released. */
static int begin_exec(df_plan *p, struct df_action *a, struct df_step *s, enum df_phase phase,
                      bool skipping)
{
    df_error err;
    int rc;

    if (!skipping)
        df_step_set_state(p, s, DF_STEP_RUNNING);
    if (s->started_at == 0)
        s->started_at = df_now_us();
    a->x.phase = phase;
    a->x.output = json_deep_copy(a->output);
    a->x.suspend = false;
    a->x.progress_set = false;
    rc = dereference_input(p, a);
    pthread_mutex_unlock(&p->lock);
    df_plan_commit(p);
    if (p->w->durable && df_writer_sync(p->w, true, &err) < 0 && rc == 0)
        rc = df_action_error(a, "the step was not started: %s", err.text);
    return rc;
}

/* Publishes the working output and maps the outcome to a step state. */
static void end_exec(df_plan *p, struct df_action *a, struct df_step *s, int rc,
                     enum df_step_state ok_state, double seconds)
{
    s->execution_time += seconds;
    s->ended_at = df_now_us();
    if (a->x.output != NULL) {
        json_decref(a->output);
        a->output = a->x.output;
        a->x.output = NULL;
        df_action_mark(a, DF_ACTION_DIRTY_OUTPUT);
    }
    if (a->x.progress_set)
        s->progress_done = a->x.progress;
    if (rc < 0 || a->x.error != NULL) {
        json_decref(s->error);
        s->error = a->x.error != NULL
                       ? a->x.error
                       : df_step_error_new("RuntimeError", "the action failed without a message");
        a->x.error = NULL;
        df_step_set_state(p, s, DF_STEP_ERROR);
    } else if (a->x.suspend && s->kind == DF_STEP_RUN_KIND) {
        df_step_set_state(p, s, DF_STEP_SUSPENDED);
        if (!a->x.progress_set && s->progress_done == 0)
            s->progress_done = 0.5;
    } else {
        df_step_set_state(p, s, ok_state);
    }
    a->x.phase = DF_PHASE_PRESENT;
}

/* Events the code planned with plan_event: now (delay 0) or by a timer. */
static void flush_planned_events(df_plan *p, struct df_action *a, struct df_step *s)
{
    struct df_planned_event *e = a->x.events, *next;

    a->x.events = NULL;
    for (; e != NULL; e = next) {
        next = e->next;
        if (e->delay_s > 0) {
            struct df_timer t = {.due = df_now_us() + (int64_t)(e->delay_s * 1e6),
                                 .type = DF_TIMER_EVENT,
                                 .step_id = s->id,
                                 .kind = e->kind,
                                 .data = e->data};
            memcpy(t.plan_id, p->id, sizeof(t.plan_id));
            df_timers_add(p->w, &t);
        } else {
            df_step_deliver_locked(p, s, e->kind, e->data, NULL);
        }
        free(e);
    }
}

/* ---- orchestration ---------------------------------------------------------- */

static void plan_check_finished(df_plan *p);

static void step_done(df_plan *p, struct df_step *s)
{
    if (s->state == DF_STEP_SUSPENDED) {
        struct df_event_node *n = s->inbox.head != NULL && !s->in_flight ? inbox_pop(s) : NULL;
        if (n != NULL) {
            dispatch(p, s, true, n->kind, n->data);
            free(n);
        }
        return;
    }
    inbox_drop(s); /* Dynflow drops them too ("Message dropped") */
    if (s->state == DF_STEP_SUCCESS || s->state == DF_STEP_SKIPPED) {
        for (size_t i = 0; i < s->dependents.n; i++) {
            struct df_step *d = df_plan_step(p, s->dependents.v[i]);
            if (--d->waiting == 0 && d->state == DF_STEP_PENDING && p->state == DF_PLAN_RUNNING)
                dispatch(p, d, false, 0, NULL);
        }
    }
    plan_check_finished(p);
}

/* Singleton::run: the lock is taken again unless this plan holds it (§3.5). */
static int singleton_check(df_plan *p, struct df_action *a)
{
    const struct df_action_class *cls = a->cls;

    if (cls == NULL || !(cls->flags & DF_ACTION_SINGLETON) ||
        df_world_singleton_acquire(p->w, cls->name, p->id) == 0)
        return 0;
    return df_action_error(a, "Action %s is already active", cls->name);
}

static void execute_step(struct df_work *wk)
{
    df_plan *p = wk->plan;
    struct df_step *s;
    struct df_action *a;
    df_event ev = {wk->ev_kind, wk->ev_data};
    enum df_step_state entry;
    bool call;
    int64_t t0;
    int rc = 0;

    pthread_mutex_lock(&p->lock);
    s = df_plan_step(p, wk->step_id);
    a = df_plan_action_by_id(p, s->action_id);
    entry = s->state;
    if (p->state != DF_PLAN_RUNNING || (entry != DF_STEP_PENDING && entry != DF_STEP_ERROR &&
                                        entry != DF_STEP_SKIPPING && entry != DF_STEP_SUSPENDED)) {
        /* stale work: the plan stopped or the step already finished */
        bool was = step_active(s);
        s->in_flight = false;
        p->active -= was && !step_active(s);
        pthread_mutex_unlock(&p->lock);
        return;
    }
    if (entry == DF_STEP_SKIPPING) {
        ev = (df_event){DF_EVENT_SKIP, NULL};
        wk->has_event = true;
    }
    call =
        entry != DF_STEP_SKIPPING || (a->cls != NULL && (a->cls->flags & DF_ACTION_HANDLES_SKIP));
    rc = begin_exec(p, a, s, DF_PHASE_RUN, entry == DF_STEP_SKIPPING);
    t0 = df_mono_us();
    if (rc == 0 && call)
        rc = singleton_check(p, a);
    if (rc == 0 && call)
        rc = df_mw_execute(a, DF_PHASE_RUN, NULL, wk->has_event ? &ev : NULL);

    pthread_mutex_lock(&p->lock);
    end_exec(p, a, s, rc, entry == DF_STEP_SKIPPING ? DF_STEP_SKIPPED : DF_STEP_SUCCESS,
             (double)(df_mono_us() - t0) / 1e6);
    s->in_flight = false;
    if (!step_active(s))
        p->active--;
    flush_planned_events(p, a, s);
    step_done(p, s);
    pthread_mutex_unlock(&p->lock);
    df_plan_commit(p);
}

/* Runs every finalize step in order on this worker; stops at the first failure. */
static void execute_finalize(df_plan *p)
{
    bool failed = false;

    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < p->finalize_order.n && !failed; i++) {
        struct df_step *s = df_plan_step(p, p->finalize_order.v[i]);
        struct df_action *a = df_plan_action_by_id(p, s->action_id);
        int64_t t0;
        int rc;

        if (s->state == DF_STEP_SKIPPED)
            continue;
        rc = begin_exec(p, a, s, DF_PHASE_FINALIZE, false);
        t0 = df_mono_us();
        if (rc == 0)
            rc = df_mw_execute(a, DF_PHASE_FINALIZE, NULL, NULL);
        pthread_mutex_lock(&p->lock);
        end_exec(p, a, s, rc, DF_STEP_SUCCESS, (double)(df_mono_us() - t0) / 1e6);
        failed = s->state == DF_STEP_ERROR;
    }
    p->finalizing = false;
    plan_check_finished(p);
    pthread_mutex_unlock(&p->lock);
    df_plan_commit(p);
}

void df_execute_work(df_world *w, struct df_work *wk)
{
    switch (wk->type) {
        case DF_WORK_STEP:
            execute_step(wk);
            break;
        case DF_WORK_FINALIZE:
            execute_finalize(wk->plan);
            break;
        case DF_WORK_START_DELAYED:
            df_plan_start_delayed(w, wk->plan);
            break;
    }
    df_work_free(wk);
}

/* ---- rescue (§2.9) ------------------------------------------------------------ */

static int combine(int acc, int s)
{
    if (s < 0)
        return acc;
    if (acc < 0)
        return s;
    return acc == s ? acc : DF_RESCUE_PAUSE;
}

static bool action_failed(df_plan *p, struct df_action *a)
{
    int ids[3] = {a->plan_step_id, a->run_step_id, a->finalize_step_id};

    for (int i = 0; i < 3; i++) {
        struct df_step *s = df_plan_step(p, ids[i]);
        if (s != NULL && s->state == DF_STEP_ERROR)
            return true;
    }
    return false;
}

/* Action#rescue_strategy: its own suggestion when it failed, combined with
 * those of the actions it planned; -1 when nobody suggests anything. */
static int action_strategy(df_plan *p, struct df_action *a)
{
    int acc = -1;

    if (action_failed(p, a)) {
        enum df_rescue own = a->cls != NULL ? a->cls->rescue : DF_RESCUE_DEFAULT;
        acc = own == DF_RESCUE_DEFAULT ? DF_RESCUE_PAUSE : (int)own;
    }
    for (size_t i = 0; i < p->n_actions; i++)
        if (p->actions[i]->parent_id == a->id)
            acc = combine(acc, action_strategy(p, p->actions[i]));
    return acc;
}

static void skip_step(df_plan *p, struct df_step *s);

static void skip_dependants(df_plan *p, struct df_step *s)
{
    struct df_action *a = df_plan_action_by_id(p, s->action_id);
    struct df_step *fin = df_plan_step(p, a->finalize_step_id);

    if (s->kind == DF_STEP_RUN_KIND && fin != NULL && fin != s)
        skip_step(p, fin);
    for (size_t i = 0; i < s->dependents.n; i++) {
        struct df_step *d = df_plan_step(p, s->dependents.v[i]);
        if (df_ints_has(&d->ref_requires, s->id))
            skip_step(p, d);
    }
}

/* ExecutionPlan#skip for one step and, recursively, the steps that use it. */
static void skip_step(df_plan *p, struct df_step *s)
{
    if (s->kind == DF_STEP_RUN_KIND && s->state == DF_STEP_ERROR)
        df_step_set_state(p, s, DF_STEP_SKIPPING);
    else if (s->state == DF_STEP_PENDING || s->state == DF_STEP_ERROR)
        df_step_set_state(p, s, DF_STEP_SKIPPED);
    else
        return;
    skip_dependants(p, s);
}

/* "3,5," for the failed steps: auto-rescue runs once per distinct set. */
static bool first_rescue_of(df_plan *p)
{
    char set[1024];
    size_t len = 0;

    set[0] = ';';
    len = 1;
    for (size_t i = 0; i < p->n_steps && len + 16 < sizeof(set); i++)
        if (p->steps[i]->state == DF_STEP_ERROR)
            len += (size_t)snprintf(set + len, sizeof(set) - len, "%d,", p->steps[i]->id);
    set[len++] = ';';
    set[len] = '\0';
    if (p->rescued != NULL && strstr(p->rescued, set) != NULL)
        return false;
    len = p->rescued ? strlen(p->rescued) : 0;
    p->rescued = df_realloc(p->rescued, len + strlen(set) + 1);
    strcpy(p->rescued + len, set);
    return true;
}

static int plan_rescue_strategy(df_plan *p)
{
    int s = p->n_actions > 0 ? action_strategy(p, p->actions[0]) : -1;

    return s < 0 ? DF_RESCUE_SKIP : s;
}

/* A plan whose steps failed: pause, stop, or skip the failures and go on. */
static void plan_failed(df_plan *p)
{
    if (!p->w->auto_rescue || df_plan_result_locked(p) != DF_RESULT_ERROR || !first_rescue_of(p)) {
        df_plan_set_state(p, DF_PLAN_PAUSED);
        return;
    }
    switch (plan_rescue_strategy(p)) {
        case DF_RESCUE_SKIP:
            for (size_t i = 0; i < p->n_steps; i++)
                if (p->steps[i]->state == DF_STEP_ERROR && p->steps[i]->kind != DF_STEP_PLAN_KIND)
                    skip_step(p, p->steps[i]);
            df_plan_execute_locked(p);
            break;
        case DF_RESCUE_FAIL:
            df_plan_set_state(p, DF_PLAN_STOPPED);
            break;
        default:
            df_plan_set_state(p, DF_PLAN_PAUSED);
    }
}

static void plan_check_finished(df_plan *p)
{
    bool errors = false, pending = false;

    if (p->active > 0 || p->finalizing || p->state != DF_PLAN_RUNNING)
        return;
    for (size_t i = 0; i < p->n_steps; i++) {
        struct df_step *s = p->steps[i];
        /* a finalize step that failed before a resume is reset when the phase runs again */
        bool stale = s->kind == DF_STEP_FINALIZE_KIND && p->finalize_pending;
        errors = errors || (s->state == DF_STEP_ERROR && !stale);
        pending = pending || (s->kind == DF_STEP_RUN_KIND && s->state != DF_STEP_SUCCESS &&
                              s->state != DF_STEP_SKIPPED);
    }
    if (errors || pending) {
        plan_failed(p);
        return;
    }
    if (p->finalize_pending) {
        /* the whole finalize phase runs (again) from its start (§2.6) */
        struct df_queue *q = NULL;
        p->finalize_pending = false;
        for (size_t i = 0; i < p->finalize_order.n; i++) {
            struct df_step *f = df_plan_step(p, p->finalize_order.v[i]);
            if (f->state == DF_STEP_SKIPPED)
                continue;
            df_step_set_state(p, f, DF_STEP_PENDING);
            q = q != NULL ? q : f->queue;
        }
        if (q != NULL) {
            p->finalizing = true;
            df_queue_push(q, new_work(p, DF_WORK_FINALIZE, 0));
            return;
        }
    }
    df_plan_set_state(p, DF_PLAN_STOPPED);
}

void df_plan_execute_locked(df_plan *p)
{
    df_plan_set_state(p, DF_PLAN_RUNNING);
    p->finalize_pending = true;
    for (size_t i = 0; i < p->n_actions; i++) {
        const struct df_action_class *cls = p->actions[i]->cls;
        if (cls != NULL && (cls->flags & DF_ACTION_SINGLETON))
            df_world_singleton_acquire(p->w, cls->name, p->id);
    }
    p->active = 0; /* recounted: a plan loaded from the database has suspended steps */
    for (size_t i = 0; i < p->n_steps; i++) {
        struct df_step *s = p->steps[i];
        p->active += s->kind == DF_STEP_RUN_KIND && step_active(s);
        s->waiting = 0;
        for (size_t r = 0; r < s->requires.n; r++) {
            enum df_step_state rs = df_plan_step(p, s->requires.v[r])->state;
            s->waiting += rs != DF_STEP_SUCCESS && rs != DF_STEP_SKIPPED;
        }
    }
    for (size_t i = 0; i < p->n_steps; i++) {
        struct df_step *s = p->steps[i];
        if (s->kind != DF_STEP_RUN_KIND || s->in_flight)
            continue;
        if (s->state == DF_STEP_ERROR || s->state == DF_STEP_SKIPPING ||
            s->state == DF_STEP_SUSPENDED || (s->state == DF_STEP_PENDING && s->waiting == 0))
            dispatch(p, s, false, 0, NULL);
    }
    plan_check_finished(p);
}

/* ---- recovery after a restart (§3.11, with §8 #7 and #8 fixed) ------------------- */

void df_plan_recover_locked(df_plan *p)
{
    bool terminated = false;

    for (size_t i = 0; i < p->n_steps; i++) {
        struct df_step *s = p->steps[i];
        struct df_action *a = df_plan_action_by_id(p, s->action_id);
        if (s->state != DF_STEP_RUNNING)
            continue;
        if (s->kind == DF_STEP_RUN_KIND && a->cls != NULL &&
            (a->cls->flags & DF_ACTION_RERUNNABLE)) {
            df_step_set_state(p, s, DF_STEP_SUSPENDED); /* runs again with no event */
            continue;
        }
        json_decref(s->error);
        s->error =
            df_step_error_new("RuntimeError", "Abnormal termination (previous state: running)");
        df_step_set_state(p, s, DF_STEP_ERROR);
        terminated = true;
    }
    if (terminated)
        df_plan_history(p, "terminate execution");
    switch (p->state) {
        case DF_PLAN_PLANNING:
            df_plan_set_state(p, DF_PLAN_STOPPED);
            break;
        case DF_PLAN_PLANNED:
            df_plan_execute_locked(p);
            break;
        case DF_PLAN_RUNNING:
        case DF_PLAN_PAUSED:
            if (df_plan_result_locked(p) != DF_RESULT_ERROR) {
                df_plan_execute_locked(p);
            } else if (p->state == DF_PLAN_RUNNING) {
                p->state = DF_PLAN_PAUSED;
                if (!p->w->auto_rescue)
                    df_plan_set_state(p, DF_PLAN_PAUSED);
                else
                    plan_failed(p);
            }
            break;
        default:
            break;
    }
}

/* ---- control ------------------------------------------------------------------- */

static df_plan *plan_for(df_world *w, const char *id, df_error *err)
{
    df_plan *p = id != NULL ? df_world_plan(w, id, true) : NULL;

    if (p == NULL)
        df_errorf(err, -ENOENT, "plan %s not found", id ? id : "(null)");
    return p;
}

static void cancel_delayed(df_plan *p)
{
    struct df_step *root = df_plan_step(p, 1);

    if (root != NULL)
        df_step_set_state(p, root, DF_STEP_CANCELLED);
    if (p->delayed != NULL)
        p->delayed->deleted = true;
    df_plan_history(p, "Delayed task cancelled");
    df_plan_set_state(p, DF_PLAN_STOPPED);
}

int df_plan_cancel(df_world *w, const char *plan_id, bool force, unsigned *count, df_error *err)
{
    df_plan *p = plan_for(w, plan_id, err);
    unsigned n = 0;

    if (p == NULL)
        return -ENOENT;
    pthread_mutex_lock(&p->lock);
    if (p->state == DF_PLAN_SCHEDULED) {
        cancel_delayed(p);
        n = 1;
    } else if (p->state == DF_PLAN_RUNNING) {
        for (size_t i = 0; i < p->n_steps; i++) {
            struct df_step *s = p->steps[i];
            struct df_action *a = df_plan_action_by_id(p, s->action_id);
            if (s->kind != DF_STEP_RUN_KIND || a->cls == NULL ||
                !(a->cls->flags & DF_ACTION_CANCELLABLE) ||
                (s->state != DF_STEP_RUNNING && s->state != DF_STEP_SUSPENDED))
                continue;
            if (df_step_deliver_locked(p, s, force ? DF_EVENT_ABORT : DF_EVENT_CANCEL, NULL,
                                       NULL) == 0)
                n++;
        }
    }
    pthread_mutex_unlock(&p->lock);
    df_plan_commit(p);
    df_plan_unref(p);
    if (count != NULL)
        *count = n;
    return 0;
}

void df_plan_poll(df_world *w, const char *plan_id)
{
    df_plan *p;

    pthread_mutex_lock(&w->plans_lock);
    p = df_hash_get(w->plans, plan_id);
    if (p != NULL)
        df_plan_ref(p);
    pthread_mutex_unlock(&w->plans_lock);
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; p->state == DF_PLAN_RUNNING && i < p->n_steps; i++) {
        struct df_step *s = p->steps[i];
        struct df_action *a = df_plan_action_by_id(p, s->action_id);
        if (s->kind == DF_STEP_RUN_KIND && s->state == DF_STEP_SUSPENDED && s->inbox.head == NULL &&
            a->cls != NULL && (a->cls->flags & DF_ACTION_POLLED))
            df_step_deliver_locked(p, s, DF_EVENT_POLL, NULL, NULL);
    }
    pthread_mutex_unlock(&p->lock);
    df_plan_unref(p);
}

int df_plan_resume(df_world *w, const char *plan_id, df_error *err)
{
    df_plan *p = plan_for(w, plan_id, err);
    int rc = 0;

    if (p == NULL)
        return -ENOENT;
    pthread_mutex_lock(&p->lock);
    if (p->state != DF_PLAN_PAUSED)
        rc = df_errorf(err, -EINVAL, "plan %s is %s: only a paused plan can be resumed", p->id,
                       df_plan_state_name(p->state));
    else
        df_plan_execute_locked(p);
    pthread_mutex_unlock(&p->lock);
    df_plan_commit(p);
    df_plan_unref(p);
    return rc;
}

int df_plan_skip_step(df_world *w, const char *plan_id, int step_id, df_error *err)
{
    df_plan *p = plan_for(w, plan_id, err);
    struct df_step *s;
    int rc = 0;

    if (p == NULL)
        return -ENOENT;
    pthread_mutex_lock(&p->lock);
    s = df_plan_step(p, step_id);
    if (p->state != DF_PLAN_PAUSED)
        rc = df_errorf(err, -EINVAL, "plan %s is %s: steps can be skipped only in a paused plan",
                       p->id, df_plan_state_name(p->state));
    else if (s == NULL)
        rc = df_errorf(err, -ENOENT, "plan %s has no step %d", p->id, step_id);
    else if (s->state != DF_STEP_ERROR || s->kind == DF_STEP_PLAN_KIND)
        rc = df_errorf(err, -EINVAL, "step %d of plan %s is %s: only a failed step can be skipped",
                       step_id, p->id, df_step_state_name(s->state));
    else
        skip_step(p, s);
    pthread_mutex_unlock(&p->lock);
    df_plan_commit(p);
    df_plan_unref(p);
    return rc;
}

int df_world_event(df_world *w, const char *plan_id, int step_id, const df_event *ev,
                   double delay_s, df_error *err)
{
    df_plan *p = plan_for(w, plan_id, err);
    json_t *data = ev->data != NULL ? json_deep_copy(ev->data) : NULL;
    int rc = 0;

    if (p == NULL) {
        json_decref(data);
        return -ENOENT;
    }
    pthread_mutex_lock(&p->lock);
    if (p->state != DF_PLAN_RUNNING) {
        json_decref(data);
        rc = df_errorf(err, -EINVAL, "plan %s is %s: only a running plan receives events", p->id,
                       df_plan_state_name(p->state));
    } else if (delay_s > 0 && (df_plan_step(p, step_id) == NULL ||
                               df_plan_step(p, step_id)->kind != DF_STEP_RUN_KIND)) {
        json_decref(data);
        rc = df_errorf(err, -ENOENT, "plan %s has no run step %d", p->id, step_id);
    } else if (delay_s > 0) {
        struct df_timer t = {.due = df_now_us() + (int64_t)(delay_s * 1e6),
                             .type = DF_TIMER_EVENT,
                             .step_id = step_id,
                             .kind = ev->kind,
                             .data = data};
        memcpy(t.plan_id, p->id, sizeof(t.plan_id));
        df_timers_add(w, &t);
    } else {
        rc = df_step_deliver_locked(p, df_plan_step(p, step_id), ev->kind, data, err);
    }
    pthread_mutex_unlock(&p->lock);
    df_plan_commit(p);
    df_plan_unref(p);
    return rc;
}

void df_world_fire_event(df_world *w, const struct df_timer *t)
{
    df_plan *p = df_world_plan(w, t->plan_id, true);

    if (p == NULL) {
        json_decref(t->data);
        return;
    }
    pthread_mutex_lock(&p->lock);
    if (p->state == DF_PLAN_RUNNING)
        df_step_deliver_locked(p, df_plan_step(p, t->step_id), t->kind, t->data, NULL);
    else
        json_decref(t->data);
    pthread_mutex_unlock(&p->lock);
    df_plan_commit(p);
    df_plan_unref(p);
}

/* ---- run-phase API ----------------------------------------------------------- */

void df_action_suspend(df_action *a)
{
    a->x.suspend = true;
}

int df_action_plan_event(df_action *a, const df_event *ev, double delay_s)
{
    struct df_planned_event *e = df_calloc(1, sizeof(*e)), **tail = &a->x.events;

    e->kind = ev->kind;
    e->data = ev->data != NULL ? json_deep_copy(ev->data) : NULL;
    e->delay_s = delay_s;
    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = e;
    return 0;
}

int df_action_schedule_timeout(df_action *a, double seconds)
{
    df_event ev = {DF_EVENT_TIMEOUT, NULL};

    return df_action_plan_event(a, &ev, seconds > 0 ? seconds : 0.001);
}

void df_action_history(df_action *a, const char *name)
{
    bool locked = df_planning == a->plan; /* the plan phase runs under the plan lock */

    if (!locked)
        pthread_mutex_lock(&a->plan->lock);
    df_plan_history(a->plan, name);
    if (!locked)
        pthread_mutex_unlock(&a->plan->lock);
}

void df_action_set_progress(df_action *a, double done)
{
    a->x.progress_set = true;
    a->x.progress = done < 0 ? 0 : done > 1 ? 1 : done;
}
