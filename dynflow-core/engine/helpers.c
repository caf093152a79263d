/*
 * Middleware chains and the helpers Dynflow offers action writers: polling
 * (Action::Polling), timeouts and sub-plans (Action::WithSubPlans).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

/* ---- middleware (§3.7) ---------------------------------------------------------- */

struct df_mw_call {
    df_action *a;
    enum df_phase phase;
    json_t *args;
    const df_event *ev;
    const struct df_middleware **chain;
    size_t n, pos;
    const struct df_middleware *cur;
};

static int (*phase_fn(const struct df_middleware *mw, enum df_phase phase))(df_mw_call *)
{
    switch (phase) {
        case DF_PHASE_PLAN:
            return mw->plan;
        case DF_PHASE_RUN:
            return mw->run;
        case DF_PHASE_FINALIZE:
            return mw->finalize;
        default:
            return NULL;
    }
}

static int call_action(df_mw_call *c)
{
    switch (c->phase) {
        case DF_PHASE_PLAN:
            return df_action_plan_default(c->a, c->args);
        case DF_PHASE_RUN:
            return c->a->cls->run(c->a, c->ev);
        case DF_PHASE_FINALIZE:
            return c->a->cls->finalize(c->a);
        default:
            return 0;
    }
}

int df_mw_pass(df_mw_call *c)
{
    while (c->pos < c->n) {
        const struct df_middleware *mw = c->chain[c->pos++], *saved = c->cur;
        int (*fn)(df_mw_call *) = phase_fn(mw, c->phase);
        if (fn != NULL) {
            int rc;
            c->cur = mw;
            rc = fn(c);
            c->cur = saved;
            return rc;
        }
    }
    return call_action(c);
}

df_action *df_mw_action(const df_mw_call *c)
{
    return c->a;
}

json_t *df_mw_args(const df_mw_call *c)
{
    return c->args;
}

const df_event *df_mw_event(const df_mw_call *c)
{
    return c->ev;
}

void *df_mw_data(const df_mw_call *c)
{
    return c->cur != NULL ? c->cur->data : NULL;
}

/* World middleware first, then the class's own. */
int df_mw_execute(df_action *a, enum df_phase phase, json_t *args, const df_event *ev)
{
    df_world *w = a->plan->w;
    const struct df_middleware *local[16], **chain = local;
    size_t n = 0, cap = sizeof(local) / sizeof(local[0]), need = w->n_mw;
    df_mw_call c;
    int rc;

    if (a->cls == NULL)
        return df_action_error(a, "The action class was not found: %s", a->class_name);
    for (size_t i = 0; a->cls->middleware != NULL && a->cls->middleware[i] != NULL; i++)
        need++;
    if (need > cap)
        chain = df_calloc(need, sizeof(*chain));
    for (size_t i = 0; i < w->n_mw; i++)
        chain[n++] = w->mw[i];
    for (size_t i = 0; a->cls->middleware != NULL && a->cls->middleware[i] != NULL; i++)
        chain[n++] = a->cls->middleware[i];
    c = (df_mw_call){.a = a, .phase = phase, .args = args, .ev = ev, .chain = chain, .n = n};
    rc = df_mw_pass(&c);
    if (chain != local)
        free(chain);
    return rc;
}

/* ---- polling (§3.2) ------------------------------------------------------------- */

#define POLL_MAX_RETRIES 3

double df_polling_interval(unsigned attempts)
{
    static const double intervals[] = {0.5, 1, 2, 4, 8, 16};
    unsigned i = attempts / 5;

    return i < sizeof(intervals) / sizeof(intervals[0]) ? intervals[i] : 16;
}

static json_t *poll_attempts(df_action *a)
{
    json_t *out = df_action_output(a), *pa = json_object_get(out, "poll_attempts");

    if (!json_is_object(pa)) {
        pa = json_pack("{s:i, s:i}", "total", 0, "failed", 0);
        json_object_set_new(out, "poll_attempts", pa);
    }
    return pa;
}

static json_int_t counter(json_t *obj, const char *key)
{
    return json_integer_value(json_object_get(obj, key));
}

/* A failed poll is retried until POLL_MAX_RETRIES failures in a row. */
static int poll_with_rescue(df_action *a, const struct df_polling_ops *ops)
{
    json_t *pa = poll_attempts(a);
    int rc;

    json_object_set_new(pa, "total", json_integer(counter(pa, "total") + 1));
    rc = ops->poll(a);
    if (rc == 0 && a->x.error == NULL) {
        json_object_set_new(pa, "failed", json_integer(0));
        return 0;
    }
    json_object_set_new(pa, "failed", json_integer(counter(pa, "failed") + 1));
    if (counter(pa, "failed") >= POLL_MAX_RETRIES)
        return -1;
    json_decref(a->x.error);
    a->x.error = NULL;
    return 0;
}

int df_polling_run(df_action *a, const df_event *ev, const struct df_polling_ops *ops)
{
    int rc;

    if (ev == NULL) {
        bool started = json_object_get(df_action_output(a), "task") != NULL;
        rc = started ? poll_with_rescue(a, ops) : -1;
        if (rc < 0) {
            json_decref(a->x.error);
            a->x.error = NULL;
            rc = ops->invoke(a);
        }
    } else if (ev->kind == DF_EVENT_POLL) {
        rc = poll_with_rescue(a, ops);
    } else if (ev->kind == DF_EVENT_TIMEOUT) {
        return df_action_error(a, "Timeout exceeded.");
    } else {
        return df_action_error(a, "unrecognized event '%s'", df_event_kind_name(ev->kind));
    }
    if (rc < 0 || a->x.error != NULL)
        return -1;
    if (ops->done(a))
        return ops->on_finish != NULL ? ops->on_finish(a) : 0;
    df_event poll = {DF_EVENT_POLL, NULL};
    df_action_plan_event(a, &poll,
                         df_polling_interval((unsigned)counter(poll_attempts(a), "total")));
    df_action_suspend(a);
    return 0;
}

/* ---- sub-plans (§3.4) ----------------------------------------------------------- */

static void set_count(json_t *out, const char *key, json_int_t v)
{
    json_object_set_new(out, key, json_integer(v));
}

/* on_finish NULL: a failed child fails the run step; else on_finish runs once all children
 * ended, and the caller checks for failed children later (df_sub_plans_check). */
static int try_to_finish(df_action *a, int (*on_finish)(df_action *a))
{
    json_t *out = df_action_output(a);
    json_int_t total = counter(out, "total_count"), failed = counter(out, "failed_count");
    json_int_t success = counter(out, "success_count");

    set_count(out, "pending_count", total - success - failed);
    df_action_set_progress(a, total > 0 ? (double)(success + failed) / (double)total : 0.1);
    if (total - success - failed > 0) {
        df_action_suspend(a);
        return 0;
    }
    if (on_finish != NULL)
        return on_finish(a);
    return df_sub_plans_check(a);
}

int df_sub_plans_check(df_action *a)
{
    if (counter(df_action_output(a), "failed_count") > 0)
        return df_action_error(a, "A sub task failed");
    return 0;
}

struct child_counts {
    json_int_t success, failed;
    df_world *w;
    bool cancel, force;
};

static int count_child(void *ud, const char *uuid, const char *state, const char *result)
{
    struct child_counts *c = ud;
    bool done = strcmp(state, "stopped") == 0 || strcmp(state, "paused") == 0;

    if (c->cancel && !done)
        df_plan_cancel(c->w, uuid, c->force, NULL, NULL);
    if (done && strcmp(state, "stopped") == 0 && strcmp(result, "success") == 0)
        c->success++;
    else if (done)
        c->failed++;
    return 0;
}

static int each_child(df_action *a, struct child_counts *c)
{
    df_error err;

    c->w = a->plan->w;
    if (df_writer_sync(c->w, true, &err) < 0)
        return df_action_error(a, "counting the sub-plans of action %d failed: %s", a->id,
                               err.text);
    if (store_each_child(c->w->st, a->plan->id, a->id, count_child, c, &err) < 0)
        return df_action_error(a, "counting the sub-plans of action %d failed: %s", a->id,
                               err.text);
    return 0;
}

void df_sub_plans_count_child(df_action *a)
{
    json_t *out = df_action_output(a);

    if (!json_is_integer(json_object_get(out, "total_count")))
        return;
    set_count(out, "total_count", counter(out, "total_count") + 1);
}

int df_sub_plans_run(df_action *a, const df_event *ev, int (*create)(df_action *a))
{
    return df_sub_plans_run_collect(a, ev, create, NULL);
}

int df_sub_plans_run_collect(df_action *a, const df_event *ev, int (*create)(df_action *a),
                             int (*on_finish)(df_action *a))
{
    json_t *out = df_action_output(a);
    struct child_counts c = {0};

    if (ev == NULL && !json_is_integer(json_object_get(out, "total_count"))) {
        set_count(out, "total_count", 0);
        set_count(out, "failed_count", 0);
        set_count(out, "success_count", 0);
        if (create(a) < 0)
            return -1;
        return try_to_finish(a, on_finish);
    }
    if (ev == NULL) {
        /* resumed or restarted: the database knows how the children ended */
        if (each_child(a, &c) < 0)
            return -1;
        set_count(out, "success_count", c.success);
        set_count(out, "failed_count", c.failed);
        return try_to_finish(a, on_finish);
    }
    switch (ev->kind) {
        case DF_EVENT_SUB_PLAN_FINISHED: {
            bool ok = json_is_true(json_object_get(ev->data, "success"));
            const char *key = ok ? "success_count" : "failed_count";
            set_count(out, key, counter(out, key) + 1);
            return try_to_finish(a, on_finish);
        }
        case DF_EVENT_CANCEL:
        case DF_EVENT_ABORT:
            c.cancel = true;
            c.force = ev->kind == DF_EVENT_ABORT;
            if (each_child(a, &c) < 0)
                return -1;
            df_action_suspend(a);
            return 0;
        default:
            return df_action_error(a, "unrecognized event '%s'", df_event_kind_name(ev->kind));
    }
}
