/*
 * The world: action classes, queues, the plans held in memory, and the
 * public entry points for triggering and inspecting plans.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/internal.h"

struct subscribers {
    const struct df_action_class **v;
    size_t n;
};

df_world *df_world_new(const struct df_world_config *cfg, df_error *err)
{
    static const struct df_world_config defaults = {0};
    df_world *w = df_calloc(1, sizeof(*w));

    (void)err;
    if (cfg == NULL)
        cfg = &defaults;
    if (cfg->world_id != NULL)
        snprintf(w->id, sizeof(w->id), "%s", cfg->world_id);
    else
        df_uuid_new(w->id);
    w->database = cfg->database != NULL && cfg->database[0] ? df_strdup(cfg->database) : NULL;
    w->auto_rescue = !cfg->no_auto_rescue;
    w->log = cfg->log;
    w->log_ctx = cfg->log_ctx;
    w->cleaner_age = cfg->cleaner_age;
    w->cleaner_interval = cfg->cleaner_interval > 0 ? cfg->cleaner_interval
                          : cfg->cleaner_age < 60   ? cfg->cleaner_age
                                                    : 60;
    w->classes = df_hash_new();
    w->subscribers = df_hash_new();
    w->plans = df_hash_new();
    w->singletons = df_hash_new();
    pthread_mutex_init(&w->plans_lock, NULL);
    pthread_cond_init(&w->plans_cond, NULL);
    pthread_mutex_init(&w->singleton_lock, NULL);
    pthread_mutex_init(&w->timers.lock, NULL);
    pthread_cond_init(&w->timers.cond, NULL);
    w->queues = df_calloc(1, sizeof(*w->queues));
    w->queues[0] = df_queue_new(w, "default", cfg->pool_size ? cfg->pool_size : 5);
    w->n_queues = 1;
    return w;
}

const char *df_world_id(const df_world *w)
{
    return w->id;
}

int df_world_add_queue(df_world *w, const char *name, unsigned pool_size, df_error *err)
{
    if (w->started)
        return df_errorf(err, -EBUSY, "queue '%s' added after the world started", name);
    for (size_t i = 0; i < w->n_queues; i++)
        if (strcmp(w->queues[i]->name, name) == 0)
            return df_errorf(err, -EEXIST, "queue '%s' exists already", name);
    w->queues = df_realloc(w->queues, (w->n_queues + 1) * sizeof(*w->queues));
    w->queues[w->n_queues++] = df_queue_new(w, name, pool_size ? pool_size : 5);
    return 0;
}

struct df_queue *df_world_queue(df_world *w, const char *name)
{
    for (size_t i = 0; name != NULL && i < w->n_queues; i++)
        if (strcmp(w->queues[i]->name, name) == 0)
            return w->queues[i];
    return w->queues[0]; /* unknown queues fall back to the default one, as in Dynflow */
}

static int add_name(df_world *w, const char *name, const struct df_action_class *cls, df_error *err)
{
    if (df_hash_get(w->classes, name) != NULL)
        return df_errorf(err, -EEXIST, "action class '%s' is registered already", name);
    df_hash_put(w->classes, name, (void *)cls);
    return 0;
}

int df_world_register(df_world *w, const struct df_action_class *cls, df_error *err)
{
    int rc;

    if (cls == NULL || cls->name == NULL || cls->name[0] == '\0')
        return df_errorf(err, -EINVAL, "an action class needs a name");
    rc = add_name(w, cls->name, cls, err);
    for (size_t i = 0; rc == 0 && cls->aliases != NULL && cls->aliases[i] != NULL; i++)
        rc = add_name(w, cls->aliases[i], cls, err);
    for (size_t i = 0; rc == 0 && cls->subscribe != NULL && cls->subscribe[i] != NULL; i++) {
        struct subscribers *s = df_hash_get(w->subscribers, cls->subscribe[i]);
        if (s == NULL) {
            s = df_calloc(1, sizeof(*s));
            df_hash_put(w->subscribers, cls->subscribe[i], s);
        }
        s->v = df_realloc(s->v, (s->n + 1) * sizeof(*s->v));
        s->v[s->n++] = cls;
    }
    return rc;
}

const struct df_action_class *df_world_class(df_world *w, const char *name)
{
    return name != NULL ? df_hash_get(w->classes, name) : NULL;
}

const struct df_action_class *const *df_world_subscribers(df_world *w, const char *name, size_t *n)
{
    const struct df_action_class *cls = df_world_class(w, name);
    struct subscribers *s = cls != NULL ? df_hash_get(w->subscribers, cls->name) : NULL;

    *n = s != NULL ? s->n : 0;
    return s != NULL ? s->v : NULL;
}

int df_world_use(df_world *w, const struct df_middleware *mw, df_error *err)
{
    if (mw == NULL)
        return df_errorf(err, -EINVAL, "no middleware given");
    w->mw = df_realloc(w->mw, (w->n_mw + 1) * sizeof(*w->mw));
    w->mw[w->n_mw++] = mw;
    return 0;
}

/* ---- singleton locks ---------------------------------------------------------- */

int df_world_singleton_acquire(df_world *w, const char *cls, const char *plan_id)
{
    char *owner;
    int rc = 0;

    pthread_mutex_lock(&w->singleton_lock);
    owner = df_hash_get(w->singletons, cls);
    if (owner == NULL)
        df_hash_put(w->singletons, cls, df_strdup(plan_id));
    else if (strcmp(owner, plan_id) != 0)
        rc = -EBUSY;
    pthread_mutex_unlock(&w->singleton_lock);
    return rc;
}

void df_world_singleton_release(df_world *w, const char *cls, const char *plan_id)
{
    char *owner;

    pthread_mutex_lock(&w->singleton_lock);
    owner = df_hash_get(w->singletons, cls);
    if (owner != NULL && strcmp(owner, plan_id) == 0)
        free(df_hash_del(w->singletons, cls));
    pthread_mutex_unlock(&w->singleton_lock);
}

/* ---- plans in memory ------------------------------------------------------------- */

void df_world_hold(df_world *w, df_plan *p)
{
    pthread_mutex_lock(&w->plans_lock);
    df_plan_ref(p);
    p->in_memory = true;
    df_hash_put(w->plans, p->id, p);
    pthread_mutex_unlock(&w->plans_lock);
}

/* df_world_hold for a new plan: -EEXIST when a plan with its id is in memory already (two
 * triggers with the same fixed id, e.g. Foreman retrying a launch, race no further). */
static int hold_new(df_world *w, df_plan *p)
{
    int rc = 0;

    pthread_mutex_lock(&w->plans_lock);
    if (df_hash_get(w->plans, p->id) != NULL) {
        rc = -EEXIST;
    } else {
        df_plan_ref(p);
        p->in_memory = true;
        df_hash_put(w->plans, p->id, p);
    }
    pthread_mutex_unlock(&w->plans_lock);
    return rc;
}

void df_world_release(df_world *w, df_plan *p)
{
    bool drop = false;

    pthread_mutex_lock(&w->plans_lock);
    pthread_mutex_lock(&p->lock);
    if (p->in_memory && p->state == DF_PLAN_STOPPED && p->dirty == 0 && !p->queued) {
        p->in_memory = false;
        df_hash_del(w->plans, p->id);
        drop = true;
    }
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&w->plans_lock);
    if (drop)
        df_plan_unref(p);
}

df_plan *df_world_plan(df_world *w, const char *id, bool keep)
{
    df_plan *p, *other;

    pthread_mutex_lock(&w->plans_lock);
    p = df_hash_get(w->plans, id);
    if (p != NULL)
        df_plan_ref(p);
    pthread_mutex_unlock(&w->plans_lock);
    if (p != NULL || !df_uuid_valid(id))
        return p;
    p = df_persist_load(w, id);
    if (p == NULL || !keep || p->state == DF_PLAN_STOPPED)
        return p;
    pthread_mutex_lock(&w->plans_lock);
    other = df_hash_get(w->plans, id);
    if (other != NULL) {
        df_plan_ref(other);
    } else {
        df_plan_ref(p);
        p->in_memory = true;
        df_hash_put(w->plans, p->id, p);
    }
    pthread_mutex_unlock(&w->plans_lock);
    if (other != NULL) {
        df_plan_unref(p);
        return other;
    }
    return p;
}

static bool blocked_by(df_plan *p, const char *id)
{
    struct df_delayed *d = p->delayed;

    if (p->state != DF_PLAN_SCHEDULED || d == NULL)
        return false;
    for (size_t i = 0; i < d->n_blocked_by; i++)
        if (strcmp(d->blocked_by[i], id) == 0)
            return true;
    return false;
}

/* Plans chained to the one that stopped get a start attempt, which checks again under the
 * plan's lock.  A plan whose lock is busy gets one anyway: a needless attempt is harmless, and
 * waiting for its lock here (under the table's lock) could deadlock. */
static void start_unblocked(void *ud, const char *key, void *value)
{
    df_plan *stopped = ud, *p = value;
    bool start = true;

    (void)key;
    if (p == stopped)
        return;
    if (pthread_mutex_trylock(&p->lock) == 0) {
        start = blocked_by(p, stopped->id);
        pthread_mutex_unlock(&p->lock);
    }
    if (start) {
        struct df_work *wk = df_calloc(1, sizeof(*wk));
        wk->type = DF_WORK_START_DELAYED;
        df_plan_ref(p);
        wk->plan = p;
        df_queue_push(p->w->queues[0], wk);
    }
}

void df_world_notify_finished(df_world *w, df_plan *p)
{
    pthread_mutex_lock(&w->plans_lock);
    pthread_cond_broadcast(&w->plans_cond);
    if (atomic_load(&w->n_chained) > 0 && p->state == DF_PLAN_STOPPED)
        df_hash_each(w->plans, start_unblocked, p);
    pthread_mutex_unlock(&w->plans_lock);
}

/* ---- triggering -------------------------------------------------------------------- */

static int check_new_id(df_world *w, const char *id, df_error *err)
{
    char state[16], result[16];
    df_plan *p;

    if (id == NULL)
        return 0;
    if (!df_uuid_valid(id))
        return df_errorf(err, -EINVAL, "plan id '%s' is not a UUID", id);
    p = df_world_plan(w, id, false);
    if (p != NULL || store_plan_status(w->st, id, state, result, NULL) == 0) {
        df_plan_unref(p);
        return df_errorf(err, -EEXIST, "plan %s exists already", id);
    }
    return 0;
}

static void delay_plan(df_plan *p, const struct df_action_class *cls, json_t *args,
                       const struct df_trigger_opts *o)
{
    struct df_delayed *d = df_calloc(1, sizeof(*d));
    struct df_timer t = {.type = DF_TIMER_DELAYED};

    p->label = cls->name;
    df_action_new(p, cls, cls->name, 0);
    d->start_at = (int64_t)(o->start_at * 1e6);
    d->start_before = (int64_t)(o->start_before * 1e6);
    d->frozen = o->frozen;
    d->args = args;
    for (size_t i = 0; o->blocked_by != NULL && o->blocked_by[i] != NULL; i++) {
        d->blocked_by = df_realloc(d->blocked_by, (d->n_blocked_by + 1) * sizeof(char *));
        d->blocked_by[d->n_blocked_by++] = df_strdup(o->blocked_by[i]);
    }
    if (d->n_blocked_by > 0)
        atomic_fetch_add(&p->w->n_chained, 1);
    d->dirty = true;
    p->delayed = d;
    p->run_flow = json_pack("[s]", "C");
    p->finalize_flow = json_pack("[s]", "S");
    df_plan_set_state(p, DF_PLAN_SCHEDULED);
    df_plan_mark(p, DF_PLAN_DIRTY_ROW);
    memcpy(t.plan_id, p->id, sizeof(t.plan_id));
    if (!d->frozen) {
        t.due = d->start_at ? d->start_at : df_now_us();
        df_timers_add(p->w, &t);
        if (d->start_before) {
            t.due = d->start_before + 1;
            df_timers_add(p->w, &t);
        }
    }
}

static int trigger(df_world *w, const char *class_name, json_t *args,
                   const struct df_trigger_opts *o, struct df_action *caller, char id[DF_UUID_BUF],
                   bool *planned, df_error *err)
{
    static const struct df_trigger_opts none = {0};
    const struct df_action_class *cls = df_world_class(w, class_name);
    df_plan *p;
    bool ok = true;
    int rc;

    if (o == NULL)
        o = &none;
    if (cls == NULL) {
        json_decref(args);
        return df_errorf(err, -ENOENT, "unknown action class '%s'", class_name ? class_name : "");
    }
    if (!w->started) {
        json_decref(args);
        return df_errorf(err, -EAGAIN, "the engine is not started");
    }
    if (caller == NULL)
        df_writer_throttle(w);
    if (args == NULL)
        args = json_object();
    rc = check_new_id(w, o->plan_id, err);
    if (rc < 0) {
        json_decref(args);
        return rc;
    }
    p = df_plan_alloc(w, o->plan_id);
    if (hold_new(w, p) < 0) {
        df_plan_unref(p);
        json_decref(args);
        return df_errorf(err, -EEXIST, "plan %s exists already", o->plan_id);
    }
    pthread_mutex_lock(&p->lock);
    if (o->delayed || o->blocked_by != NULL || o->frozen) {
        if (caller != NULL) {
            p->caller_plan_id = df_strdup(caller->plan->id);
            p->caller_action_id = caller->id;
        }
        delay_plan(p, cls, args, o);
    } else {
        ok = df_plan_plan(p, cls, args, caller ? caller->plan->id : NULL, caller ? caller->id : 0,
                          err);
        json_decref(args);
        if (ok)
            df_plan_execute_locked(p);
    }
    pthread_mutex_unlock(&p->lock);
    df_plan_commit(p);
    if (id != NULL)
        memcpy(id, p->id, DF_UUID_BUF);
    if (planned != NULL)
        *planned = ok;
    df_plan_unref(p);
    return 0;
}

int df_trigger(df_world *w, const char *class_name, json_t *args,
               const struct df_trigger_opts *opts, char id[DF_UUID_BUF], bool *planned,
               df_error *err)
{
    return trigger(w, class_name, args, opts, NULL, id, planned, err);
}

/* Whether plan id exists as a child of a (its step runs again after a crash interrupted it). */
static bool child_of(df_world *w, const char *id, const struct df_action *a)
{
    df_plan *p = id != NULL ? df_world_plan(w, id, false) : NULL;
    bool mine;

    if (p == NULL)
        return false;
    pthread_mutex_lock(&p->lock);
    mine = p->caller_plan_id != NULL && strcmp(p->caller_plan_id, a->plan->id) == 0 &&
           p->caller_action_id == a->id;
    pthread_mutex_unlock(&p->lock);
    df_plan_unref(p);
    return mine;
}

int df_action_trigger_child(df_action *a, const char *class_name, json_t *args, const char *plan_id,
                            char child_id[DF_UUID_BUF], bool *planned)
{
    struct df_trigger_opts o = {.plan_id = plan_id};
    df_error err;
    bool ok = false;
    int rc;

    if (child_of(a->plan->w, plan_id, a)) { /* made before the crash: counted, not made again */
        json_decref(args);
        if (child_id != NULL)
            snprintf(child_id, DF_UUID_BUF, "%s", plan_id);
        if (planned != NULL)
            *planned = true;
        df_sub_plans_count_child(a);
        return 0;
    }
    rc = trigger(a->plan->w, class_name, args, &o, a, child_id, &ok, &err);

    if (planned != NULL)
        *planned = ok;
    if (rc < 0)
        df_action_error(a, "%s", err.text);
    else
        df_sub_plans_count_child(a);
    return rc;
}

static void fail_delayed(df_plan *p, const char *notice, const char *message)
{
    struct df_step *root = df_plan_step(p, 1);

    json_decref(root->error);
    root->error = df_step_error_new("RuntimeError", message);
    df_step_set_state(p, root, DF_STEP_ERROR);
    p->delayed->deleted = true;
    df_plan_history(p, notice);
    df_plan_set_state(p, DF_PLAN_STOPPED);
}

/* Prerequisites: "" when all stopped fine, else the failed ones; NULL while some still run. */
static char *prerequisites(df_world *w, struct df_delayed *d)
{
    char *failed = df_strdup("");

    for (size_t i = 0; i < d->n_blocked_by; i++) {
        char state[16] = "", result[16] = "";
        df_plan *q = df_world_plan(w, d->blocked_by[i], false);
        if (q != NULL) {
            pthread_mutex_lock(&q->lock);
            snprintf(state, sizeof(state), "%s", df_plan_state_name(q->state));
            snprintf(result, sizeof(result), "%s", df_result_name(df_plan_result_locked(q)));
            pthread_mutex_unlock(&q->lock);
            df_plan_unref(q);
        } else {
            store_plan_status(w->st, d->blocked_by[i], state, result, NULL);
        }
        if (strcmp(state, "stopped") != 0 && state[0] != '\0') {
            free(failed);
            return NULL;
        }
        if (strcmp(result, "error") == 0) {
            size_t len = strlen(failed);
            failed = df_realloc(failed, len + strlen(d->blocked_by[i]) + 4);
            sprintf(failed + len, "\n- %s", d->blocked_by[i]);
        }
    }
    return failed;
}

void df_plan_start_delayed(df_world *w, df_plan *p)
{
    struct df_delayed *d;
    char *failed;
    int64_t now = df_now_us();
    char msg[DF_ERROR_TEXT];

    pthread_mutex_lock(&p->lock);
    d = p->delayed;
    pthread_mutex_unlock(&p->lock);
    failed = d != NULL && d->n_blocked_by > 0 ? prerequisites(w, d) : df_strdup("");
    pthread_mutex_lock(&p->lock);
    if (p->state != DF_PLAN_SCHEDULED || d == NULL || d->frozen) {
        /* cancelled, started already, or waiting to be unfrozen */
    } else if (failed != NULL && failed[0] != '\0') {
        snprintf(msg, sizeof(msg),
                 "Execution plan could not be started because some of its prerequisite "
                 "execution plans failed:%s",
                 failed);
        fail_delayed(p, "failed-dependency", msg);
    } else if (d->start_before && now > d->start_before) {
        char when[32];
        time_t secs = (time_t)(d->start_before / 1000000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
        snprintf(msg, sizeof(msg), "Execution plan could not be started before set time (%s)",
                 when);
        fail_delayed(p, "timeout", msg);
    } else if (failed != NULL && (d->start_at == 0 || now >= d->start_at)) {
        json_t *args = json_incref(d->args);
        d->deleted = true;
        if (df_plan_plan(p, p->actions[0]->cls, args, p->caller_plan_id, p->caller_action_id, NULL))
            df_plan_execute_locked(p);
        json_decref(args);
    }
    pthread_mutex_unlock(&p->lock);
    free(failed);
    df_plan_commit(p);
}

int df_plan_unfreeze(df_world *w, const char *plan_id, df_error *err)
{
    df_plan *p = df_world_plan(w, plan_id, true);
    struct df_timer t = {.type = DF_TIMER_DELAYED};
    int rc = 0;

    if (p == NULL)
        return df_errorf(err, -ENOENT, "plan %s not found", plan_id);
    pthread_mutex_lock(&p->lock);
    if (p->state != DF_PLAN_SCHEDULED || p->delayed == NULL || !p->delayed->frozen) {
        rc = df_errorf(err, -EINVAL, "plan %s is not a frozen delayed plan", plan_id);
    } else {
        p->delayed->frozen = false;
        p->delayed->dirty = true;
        memcpy(t.plan_id, p->id, sizeof(t.plan_id));
        t.due = p->delayed->start_at ? p->delayed->start_at : df_now_us();
        df_timers_add(w, &t);
    }
    pthread_mutex_unlock(&p->lock);
    df_plan_commit(p);
    df_plan_unref(p);
    return rc;
}

/* ---- inspecting ---------------------------------------------------------------------- */

json_t *df_plan_json(df_world *w, const char *plan_id, unsigned flags)
{
    df_plan *p = plan_id != NULL ? df_world_plan(w, plan_id, false) : NULL;
    json_t *j;

    if (p == NULL)
        return NULL;
    pthread_mutex_lock(&p->lock);
    j = df_plan_to_json_locked(p, flags);
    pthread_mutex_unlock(&p->lock);
    df_plan_unref(p);
    return j;
}

int df_plan_get_info(df_world *w, const char *plan_id, struct df_plan_info *out)
{
    df_plan *p = plan_id != NULL ? df_world_plan(w, plan_id, false) : NULL;

    if (p == NULL)
        return -ENOENT;
    pthread_mutex_lock(&p->lock);
    df_plan_info_locked(p, out);
    pthread_mutex_unlock(&p->lock);
    df_plan_unref(p);
    return 0;
}

static bool finished(enum df_plan_state s)
{
    return s == DF_PLAN_PAUSED || s == DF_PLAN_STOPPED;
}

int df_plan_wait(df_world *w, const char *plan_id, double timeout_s, struct df_plan_info *out)
{
    struct df_plan_info local;

    struct timespec deadline;
    int rc = 0;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)timeout_s;
    deadline.tv_nsec += (long)((timeout_s - (double)(time_t)timeout_s) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    if (out == NULL)
        out = &local;
    pthread_mutex_lock(&w->plans_lock);
    for (;;) {
        df_plan *p = df_hash_get(w->plans, plan_id);
        if (p == NULL) {
            pthread_mutex_unlock(&w->plans_lock);
            return df_plan_get_info(w, plan_id, out);
        }
        pthread_mutex_lock(&p->lock);
        df_plan_info_locked(p, out);
        pthread_mutex_unlock(&p->lock);
        if (finished(out->state) || rc == ETIMEDOUT)
            break;
        rc = pthread_cond_timedwait(&w->plans_cond, &w->plans_lock, &deadline);
    }
    pthread_mutex_unlock(&w->plans_lock);
    return finished(out->state) ? 0 : -ETIMEDOUT;
}

int df_plan_count(df_world *w, int state, uint64_t *count, df_error *err)
{
    int rc = df_writer_sync(w, false, err);

    if (rc < 0)
        return rc;
    return store_count_plans(w->st, state >= 0 ? df_plan_state_name(state) : NULL, count, err);
}

static void add_status(json_t *out, const char *id, const char *state, const char *result)
{
    json_object_set_new(out, id, json_pack("{s:s, s:s}", "state", state, "result", result));
}

static int add_stored_status(void *ud, const char *id, const char *state, const char *result)
{
    add_status(ud, id, state ? state : "", result ? result : "");
    return 0;
}

/* Plans held in memory answer from memory; the others come from one query. */
json_t *df_plan_statuses(df_world *w, const char *const *ids, size_t n)
{
    json_t *out = json_object(), *rest = json_array();
    char *rest_s;

    for (size_t i = 0; i < n; i++) {
        df_plan *p;
        if (ids[i] == NULL || !df_uuid_valid(ids[i]))
            continue;
        pthread_mutex_lock(&w->plans_lock);
        p = df_hash_get(w->plans, ids[i]);
        if (p != NULL) {
            pthread_mutex_lock(&p->lock);
            add_status(out, ids[i], df_plan_state_name(p->state),
                       df_result_name(df_plan_result_locked(p)));
            pthread_mutex_unlock(&p->lock);
        } else {
            json_array_append_new(rest, json_string(ids[i]));
        }
        pthread_mutex_unlock(&w->plans_lock);
    }
    if (json_array_size(rest) > 0) {
        rest_s = json_dumps(rest, JSON_COMPACT);
        store_each_status(w->st, rest_s, add_stored_status, out, NULL);
        free(rest_s);
    }
    json_decref(rest);
    return out;
}

static int list_add(void *ud, const char *uuid)
{
    return json_array_append_new(ud, json_string(uuid));
}

json_t *df_plan_list(df_world *w, int state, size_t offset, size_t limit)
{
    json_t *out = json_array();

    df_writer_sync(w, false, NULL); /* while writes fail, what the database has */
    store_list_plans(w->st, state >= 0 ? df_plan_state_name(state) : NULL, offset, limit, list_add,
                     out, NULL);
    return out;
}

int df_world_clean(df_world *w, double age, uint64_t *removed, df_error *err)
{
    int rc = df_writer_sync(w, false, err);

    if (rc < 0)
        return rc;
    return df_writer_clean(w, df_now_us() - (int64_t)(age * 1e6), removed, err);
}

void df_world_sync(df_world *w)
{
    df_writer_sync(w, true, NULL);
}

int df_world_commit(df_world *w, df_error *err)
{
    return df_writer_sync(w, false, err);
}

int df_world_writable(df_world *w, df_error *err)
{
    return df_writer_health(w, err);
}

void df_world_log(df_world *w, int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    if (w->log != NULL) {
        w->log(w->log_ctx, level, fmt, ap);
    } else {
        fputs("dynflow: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
    }
    va_end(ap);
}

/* ---- lifecycle ------------------------------------------------------------------------ */

int df_world_start(df_world *w, df_error *err)
{
    int rc;

    if (w->started)
        return df_errorf(err, -EBUSY, "the world is started already");
    w->st = store_open(w->database, err);
    if (w->st == NULL)
        return -EIO;
    w->durable = !store_is_memory(w->st);
    rc = df_writer_start(w, err);
    for (size_t i = 0; rc == 0 && i < w->n_queues; i++)
        rc = df_queue_start(w->queues[i], err);
    if (rc == 0)
        rc = df_timers_start(w, err);
    for (size_t i = 0; rc == 0 && i < DF_ARRAY_SIZE(w->attached); i++)
        if (w->attached[i].recover != NULL)
            w->attached[i].recover(w->attached[i].data);
    /* before plans are recovered: their steps run at once and may trigger plans (a batch making
     * the children a crash kept it from making, doc/recovery.md) */
    w->started = true;
    if (rc == 0)
        rc = df_persist_recover(w, err);
    if (rc == 0 && w->cleaner_age > 0) {
        struct df_timer t = {.type = DF_TIMER_CLEANER, .due = df_now_us()};
        df_timers_add(w, &t);
    }
    return rc;
}

static void drop_plan(void *ud, const char *key, void *value)
{
    (void)ud;
    (void)key;
    df_plan_unref(value);
}

static void free_subscribers(void *ud, const char *key, void *value)
{
    struct subscribers *s = value;

    (void)ud;
    (void)key;
    free(s->v);
    free(s);
}

static void free_value(void *ud, const char *key, void *value)
{
    (void)ud;
    (void)key;
    free(value);
}

int df_world_attach(df_world *w, const void *key, void *data, void (*stop)(void *data),
                    void (*release)(void *data))
{
    for (size_t i = 0; i < DF_ARRAY_SIZE(w->attached); i++) {
        struct df_attachment *at = &w->attached[i];
        if (at->key == key)
            return -EEXIST;
        if (at->key == NULL) {
            *at = (struct df_attachment){key, data, stop, release, NULL};
            return 0;
        }
    }
    return -ENOSPC;
}

int df_world_on_recovery(df_world *w, const void *key, void (*recover)(void *data))
{
    for (size_t i = 0; i < DF_ARRAY_SIZE(w->attached); i++)
        if (w->attached[i].key == key) {
            w->attached[i].recover = recover;
            return 0;
        }
    return -ENOENT;
}

store *df_world_durable_store(df_world *w)
{
    return w->durable ? w->st : NULL;
}

bool df_world_has_class(df_world *w, const char *name)
{
    return df_world_class(w, name) != NULL;
}

void *df_world_attachment(df_world *w, const void *key)
{
    for (size_t i = 0; i < DF_ARRAY_SIZE(w->attached); i++)
        if (w->attached[i].key == key)
            return w->attached[i].data;
    return NULL;
}

void df_world_free(df_world *w)
{
    if (w == NULL)
        return;
    df_writer_release(w); /* workers waiting for a database that cannot be written give up */
    for (size_t i = 0; i < DF_ARRAY_SIZE(w->attached); i++)
        if (w->attached[i].stop != NULL)
            w->attached[i].stop(w->attached[i].data);
    df_timers_stop(w);
    for (size_t i = 0; i < w->n_queues; i++)
        df_queue_stop(w->queues[i]);
    df_writer_stop(w);
    for (size_t i = 0; i < DF_ARRAY_SIZE(w->attached); i++)
        if (w->attached[i].release != NULL)
            w->attached[i].release(w->attached[i].data);
    df_hash_each(w->plans, drop_plan, NULL);
    df_hash_free(w->plans);
    for (size_t i = 0; i < w->n_queues; i++)
        df_queue_free(w->queues[i]);
    free(w->queues);
    df_hash_each(w->subscribers, free_subscribers, NULL);
    df_hash_free(w->subscribers);
    df_hash_each(w->singletons, free_value, NULL);
    df_hash_free(w->singletons);
    df_hash_free(w->classes);
    store_close(w->st);
    free(w->mw);
    free(w->database);
    pthread_mutex_destroy(&w->plans_lock);
    pthread_cond_destroy(&w->plans_cond);
    pthread_mutex_destroy(&w->singleton_lock);
    pthread_mutex_destroy(&w->timers.lock);
    pthread_cond_destroy(&w->timers.cond);
    free(w);
}
