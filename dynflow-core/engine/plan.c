/*
 * Execution plans: creation, the plan-phase DSL (plan_self, plan_action,
 * sequence, concurrence, output references), states, results and hooks.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

#define OUTPUT_REFERENCE_CLASS "Dynflow::ExecutionPlan::OutputReference"

__thread df_plan *df_planning;

df_plan *df_plan_alloc(df_world *w, const char *id)
{
    df_plan *p = df_calloc(1, sizeof(*p));

    if (id != NULL)
        snprintf(p->id, sizeof(p->id), "%s", id);
    else
        df_uuid_new(p->id);
    atomic_init(&p->refs, 1);
    pthread_mutex_init(&p->lock, NULL);
    p->w = w;
    p->state = DF_PLAN_PENDING;
    p->history = json_array();
    return p;
}

void df_plan_ref(df_plan *p)
{
    atomic_fetch_add(&p->refs, 1);
}

static void delayed_free(struct df_delayed *d)
{
    if (d == NULL)
        return;
    json_decref(d->args);
    for (size_t i = 0; i < d->n_blocked_by; i++)
        free(d->blocked_by[i]);
    free(d->blocked_by);
    free(d);
}

void df_plan_unref(df_plan *p)
{
    if (p == NULL || atomic_fetch_sub(&p->refs, 1) != 1)
        return;
    for (size_t i = 0; i < p->n_steps; i++)
        df_step_free(p->steps[i]);
    for (size_t i = 0; i < p->n_actions; i++)
        df_action_free(p->actions[i]);
    free(p->steps);
    free(p->actions);
    json_decref(p->history);
    json_decref(p->run_flow);
    json_decref(p->finalize_flow);
    df_ints_free(&p->finalize_order);
    free(p->caller_plan_id);
    free(p->label_copy);
    free(p->rescued);
    delayed_free(p->delayed);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

struct df_step *df_plan_step(df_plan *p, int id)
{
    return id >= 1 && (size_t)id <= p->n_steps ? p->steps[id - 1] : NULL;
}

struct df_action *df_plan_action_by_id(df_plan *p, int id)
{
    return id >= 1 && (size_t)id <= p->n_actions ? p->actions[id - 1] : NULL;
}

struct df_step *df_step_new(df_plan *p, enum df_step_kind kind, int action_id)
{
    struct df_step *s = df_calloc(1, sizeof(*s));

    if (p->n_steps == p->cap_steps) {
        p->cap_steps = p->cap_steps ? p->cap_steps * 2 : 8;
        p->steps = df_realloc(p->steps, p->cap_steps * sizeof(*p->steps));
    }
    p->steps[p->n_steps++] = s;
    s->id = (int)p->n_steps;
    s->action_id = action_id;
    s->kind = kind;
    s->state = DF_STEP_PENDING;
    s->progress_weight = kind == DF_STEP_PLAN_KIND ? 0 : 1;
    s->dirty = true;
    return s;
}

void df_step_free(struct df_step *s)
{
    struct df_event_node *n, *next;

    json_decref(s->error);
    df_ints_free(&s->children);
    df_ints_free(&s->requires);
    df_ints_free(&s->ref_requires);
    df_ints_free(&s->dependents);
    for (n = s->inbox.head; n != NULL; n = next) {
        next = n->next;
        json_decref(n->data);
        free(n);
    }
    free(s);
}

struct df_action *df_action_new(df_plan *p, const struct df_action_class *cls,
                                const char *class_name, int parent_id)
{
    struct df_action *a = df_calloc(1, sizeof(*a));
    struct df_step *ps;

    if (p->n_actions == p->cap_actions) {
        p->cap_actions = p->cap_actions ? p->cap_actions * 2 : 4;
        p->actions = df_realloc(p->actions, p->cap_actions * sizeof(*p->actions));
    }
    p->actions[p->n_actions++] = a;
    a->plan = p;
    a->id = (int)p->n_actions;
    a->cls = cls;
    a->class_name = df_strdup(class_name);
    a->parent_id = parent_id;
    a->input = json_object();
    a->output = json_object();
    a->chunks = json_array();
    a->dirty = DF_ACTION_DIRTY_ROW;
    ps = df_step_new(p, DF_STEP_PLAN_KIND, a->id);
    a->plan_step_id = ps->id;
    if (parent_id > 0)
        df_ints_push(&df_plan_step(p, df_plan_action_by_id(p, parent_id)->plan_step_id)->children,
                     ps->id);
    return a;
}

void df_action_free(struct df_action *a)
{
    struct df_planned_event *e, *next;

    free(a->class_name);
    free(a->caller_plan_id);
    json_decref(a->input);
    json_decref(a->input_stored);
    json_decref(a->output);
    json_decref(a->chunks);
    json_decref(a->x.output);
    json_decref(a->x.error);
    for (e = a->x.events; e != NULL; e = next) {
        next = e->next;
        json_decref(e->data);
        free(e);
    }
    free(a);
}

void df_action_mark(struct df_action *a, unsigned dirty)
{
    a->dirty |= dirty;
}

void df_plan_mark(df_plan *p, unsigned dirty)
{
    p->dirty |= dirty;
}

json_t *df_step_error_new(const char *exception_class, const char *message)
{
    return json_pack("{s:s, s:s, s:s, s:[]}", "class", "Dynflow::ExecutionPlan::Steps::Error",
                     "exception_class", exception_class, "message", message, "backtrace");
}

void df_step_set_state(df_plan *p, struct df_step *s, enum df_step_state st)
{
    (void)p;
    s->state = st;
    if (st == DF_STEP_SUCCESS || st == DF_STEP_SKIPPED)
        s->progress_done = 1;
    else if (st == DF_STEP_PENDING)
        s->progress_done = 0;
    s->dirty = true;
}

/* ---- states, results, hooks -------------------------------------------- */

void df_plan_history(df_plan *p, const char *name)
{
    json_array_append_new(p->history,
                          json_pack("{s:I, s:s, s:s}", "time", (json_int_t)(df_now_us() / 1000000),
                                    "name", name, "world_id", df_world_id(p->w)));
    df_plan_mark(p, DF_PLAN_DIRTY_META);
}

enum df_result df_plan_result_locked(df_plan *p)
{
    bool error = false, warning = false, all_success = true;

    for (size_t i = 0; i < p->n_steps; i++) {
        switch (p->steps[i]->state) {
            case DF_STEP_CANCELLED:
                return DF_RESULT_CANCELLED;
            case DF_STEP_ERROR:
                error = true;
                break;
            case DF_STEP_SKIPPING:
            case DF_STEP_SKIPPED:
                warning = true;
                break;
            case DF_STEP_SUCCESS:
                break;
            default:
                all_success = false;
        }
        all_success = all_success && p->steps[i]->state == DF_STEP_SUCCESS;
    }
    if (error)
        return DF_RESULT_ERROR;
    if (warning)
        return DF_RESULT_WARNING;
    return all_success && p->n_steps > 0 ? DF_RESULT_SUCCESS : DF_RESULT_PENDING;
}

double df_plan_progress_locked(df_plan *p)
{
    double done = 0, total = 0;

    if (p->state == DF_PLAN_PENDING || p->state == DF_PLAN_PLANNED || p->state == DF_PLAN_SCHEDULED)
        return 0;
    for (size_t i = 0; i < p->n_steps; i++) {
        struct df_step *s = p->steps[i];
        if (s->kind == DF_STEP_PLAN_KIND)
            continue;
        done += s->progress_done * s->progress_weight;
        total += s->progress_weight;
    }
    return total > 0 ? done / total : 1;
}

void df_plan_info_locked(df_plan *p, struct df_plan_info *out)
{
    memcpy(out->id, p->id, sizeof(out->id));
    out->state = p->state;
    out->result = df_plan_result_locked(p);
    out->progress = df_plan_progress_locked(p);
    out->label = p->label;
}

unsigned df_plan_hook_kinds(enum df_plan_state s, enum df_result r)
{
    unsigned kinds = DF_HOOK_ON(s);

    if (s == DF_PLAN_STOPPED)
        kinds |= r == DF_RESULT_SUCCESS ? DF_HOOK_SUCCESS : DF_HOOK_FAILURE;
    return kinds;
}

static void singleton_release(df_plan *p)
{
    for (size_t i = 0; i < p->n_actions; i++) {
        const struct df_action_class *cls = p->actions[i]->cls;
        if (cls != NULL && (cls->flags & DF_ACTION_SINGLETON))
            df_world_singleton_release(p->w, cls->name, p->id);
    }
}

void df_plan_set_state(df_plan *p, enum df_plan_state s)
{
    static const char *const notices[] = {
        [DF_PLAN_RUNNING] = "start execution",
        [DF_PLAN_PAUSED] = "pause execution",
        [DF_PLAN_STOPPED] = "finish execution",
        [DF_PLAN_SCHEDULED] = "delay",
    };

    p->state = s;
    if (s == DF_PLAN_PLANNING)
        p->started_at = df_now_us();
    if (s == DF_PLAN_STOPPED) {
        p->ended_at = df_now_us();
        p->execution_time_set = true;
    }
    if ((size_t)s < sizeof(notices) / sizeof(notices[0]) && notices[s] != NULL)
        df_plan_history(p, notices[s]);
    if (s == DF_PLAN_PAUSED || s == DF_PLAN_STOPPED)
        singleton_release(p);
    p->post_hooks |= df_plan_hook_kinds(s, df_plan_result_locked(p));
    if (s == DF_PLAN_PAUSED || s == DF_PLAN_STOPPED)
        p->post_finished = true;
    df_plan_mark(p, DF_PLAN_DIRTY_META);
}

static void run_hooks(df_plan *p, unsigned kinds, const struct df_plan_info *info)
{
    for (size_t i = 0; i < p->n_actions; i++) {
        struct df_action *a = p->actions[i];
        const struct df_hook *h;
        if (a->cls == NULL || a->cls->hooks == NULL)
            continue;
        for (h = a->cls->hooks; h->on != 0; h++)
            for (unsigned bit = 1; bit <= DF_HOOK_FAILURE; bit <<= 1)
                if ((kinds & bit) && (h->on & bit))
                    h->fn(a, bit, info);
    }
}

/* Notifies the parent action of a sub-plan that has paused or stopped. */
static void notify_caller(df_plan *p, const struct df_plan_info *info)
{
    df_plan *parent;
    struct df_action *pa;
    json_t *data;

    if (p->caller_plan_id == NULL)
        return;
    parent = df_world_plan(p->w, p->caller_plan_id, true);
    if (parent == NULL)
        return;
    data = json_pack("{s:s, s:b}", "execution_plan_id", p->id, "success",
                     info->state == DF_PLAN_STOPPED && info->result == DF_RESULT_SUCCESS);
    pthread_mutex_lock(&parent->lock);
    pa = df_plan_action_by_id(parent, p->caller_action_id);
    if (pa != NULL && pa->run_step_id > 0)
        df_step_deliver_locked(parent, df_plan_step(parent, pa->run_step_id),
                               DF_EVENT_SUB_PLAN_FINISHED, data, NULL);
    else
        json_decref(data);
    pthread_mutex_unlock(&parent->lock);
    df_plan_commit(parent);
    df_plan_unref(parent);
}

void df_plan_commit(df_plan *p)
{
    struct df_plan_info info;
    unsigned kinds;
    bool finished;

    pthread_mutex_lock(&p->lock);
    kinds = p->post_hooks;
    finished = p->post_finished;
    p->post_hooks = 0;
    p->post_finished = false;
    df_plan_info_locked(p, &info);
    pthread_mutex_unlock(&p->lock);

    df_writer_plan(p->w, p);
    if (kinds != 0)
        run_hooks(p, kinds, &info);
    if (finished) {
        df_world_notify_finished(p->w, p);
        notify_caller(p, &info);
    }
}

/* ---- planning ------------------------------------------------------------ */

static struct df_frame *top_frame(df_plan *p)
{
    return &p->planning->frames[p->planning->n - 1];
}

static void frame_push(df_plan *p, char type)
{
    struct df_planning *pl = p->planning;

    if (pl->n == pl->cap) {
        pl->cap = pl->cap ? pl->cap * 2 : 8;
        pl->frames = df_realloc(pl->frames, pl->cap * sizeof(*pl->frames));
    }
    pl->frames[pl->n++] = (struct df_frame){.flow = df_flow_new(type)};
}

static const struct df_ints *ref_requires(void *ud, int step_id)
{
    return &df_plan_step(ud, step_id)->ref_requires;
}

/* The steps of a finished child that nothing else in the child waits for. */
static void sinks(df_plan *p, const struct df_ints *steps, struct df_ints *out)
{
    out->n = 0;
    for (size_t i = 0; i < steps->n; i++) {
        const struct df_ints *deps = &df_plan_step(p, steps->v[i])->dependents;
        bool inner = false;
        for (size_t d = 0; d < deps->n && !inner; d++)
            inner = df_ints_has(steps, deps->v[d]);
        if (!inner)
            df_ints_push(out, steps->v[i]);
    }
}

/* A child (a closed block or one atom) joins a frame. */
static void frame_take(df_plan *p, struct df_frame *f, const struct df_ints *child)
{
    if (child->n == 0)
        return;
    for (size_t i = 0; i < child->n; i++)
        df_ints_push(&f->steps, child->v[i]);
    if (f->flow->type == 'S')
        sinks(p, child, &f->prev);
}

static void frame_pop(df_plan *p)
{
    struct df_planning *pl = p->planning;
    struct df_frame f = pl->frames[--pl->n];
    struct df_frame *parent = top_frame(p);

    df_flow_add_and_resolve(parent->flow, f.flow, ref_requires, p);
    frame_take(p, parent, &f.steps);
    df_ints_free(&f.steps);
    df_ints_free(&f.prev);
}

static void require(df_plan *p, struct df_step *s, int required)
{
    if (df_ints_has(&s->requires, required))
        return;
    df_ints_push(&s->requires, required);
    df_ints_push(&df_plan_step(p, required)->dependents, s->id);
}

/* Output references anywhere in the input become dependencies. */
static int collect_refs(df_plan *p, struct df_step *s, json_t *v)
{
    json_t *x;
    const char *k;
    size_t i;

    if (json_is_array(v)) {
        json_array_foreach(v, i, x) if (collect_refs(p, s, x) < 0) return -1;
        return 0;
    }
    if (!json_is_object(v))
        return 0;
    x = json_object_get(v, "class");
    if (json_is_string(x) && strcmp(json_string_value(x), OUTPUT_REFERENCE_CLASS) == 0) {
        json_t *step = json_object_get(v, "step_id");
        struct df_step *rs = df_plan_step(p, (int)json_integer_value(step));
        if (!json_is_integer(step) || rs == NULL || rs->kind != DF_STEP_RUN_KIND) {
            df_action_error(df_plan_action_by_id(p, s->action_id),
                            "output reference to action %lld, which has no run step",
                            (long long)json_integer_value(json_object_get(v, "action_id")));
            return -1;
        }
        if (!df_ints_has(&s->ref_requires, rs->id))
            df_ints_push(&s->ref_requires, rs->id);
        require(p, s, rs->id);
        return 0;
    }
    json_object_foreach(v, k, x) if (collect_refs(p, s, x) < 0) return -1;
    return 0;
}

static struct df_queue *action_queue(df_plan *p, struct df_action *a)
{
    struct df_action *parent = df_plan_action_by_id(p, a->parent_id);
    const char *name = a->cls != NULL ? a->cls->queue : NULL;

    if (name == NULL && parent != NULL && parent->cls != NULL)
        name = parent->cls->queue;
    return df_world_queue(p->w, name);
}

static void add_run_step(df_plan *p, struct df_action *a)
{
    struct df_step *s = df_step_new(p, DF_STEP_RUN_KIND, a->id);
    struct df_ints atom = {0};

    a->run_step_id = s->id;
    s->queue = action_queue(p, a);
    if (collect_refs(p, s, a->input) == 0)
        a->has_refs = s->ref_requires.n > 0;
    /* Explicit sequences: wait for the previous child of the nearest one that has one. */
    for (size_t i = p->planning->n; i-- > 0;) {
        struct df_frame *f = &p->planning->frames[i];
        if (f->flow->type == 'S' && f->prev.n > 0) {
            for (size_t k = 0; k < f->prev.n; k++)
                require(p, s, f->prev.v[k]);
            break;
        }
    }
    df_flow_add_and_resolve(top_frame(p)->flow, df_flow_atom(s->id), ref_requires, p);
    df_ints_push(&atom, s->id);
    frame_take(p, top_frame(p), &atom);
    df_ints_free(&atom);
}

int df_plan_self(df_action *a, json_t *input)
{
    df_plan *p = a->plan;
    bool had = false;

    if (a->x.phase != DF_PHASE_PLAN || p->planning == NULL || a->run_step_id ||
        a->finalize_step_id) {
        json_decref(input);
        return df_action_error(a, "plan_self called outside the plan phase or twice");
    }
    if (!json_is_object(input)) {
        json_decref(input);
        return df_action_error(a, "plan_self needs a JSON object as input");
    }
    json_decref(a->input);
    a->input = input;
    json_decref(a->input_stored);
    a->input_stored = df_redact_secrets(input, &had);
    if (!had) {
        json_decref(a->input_stored);
        a->input_stored = NULL;
    }
    if (a->cls != NULL && a->cls->run != NULL)
        add_run_step(p, a);
    if (a->x.error != NULL)
        return -1;
    if (a->cls != NULL && a->cls->finalize != NULL) {
        struct df_step *s = df_step_new(p, DF_STEP_FINALIZE_KIND, a->id);
        a->finalize_step_id = s->id;
        s->queue = action_queue(p, a);
        df_ints_push(&p->finalize_order, s->id);
    }
    return 0;
}

static void planning_error(df_plan *p, struct df_action *a)
{
    struct df_step *s = df_plan_step(p, a->plan_step_id);
    json_t *error = a->x.error;

    if (error == NULL)
        error = json_incref(p->planning->error);
    if (error == NULL)
        error = df_step_error_new("RuntimeError", "planning failed without a message");
    a->x.error = NULL;
    if (p->planning->error == NULL)
        p->planning->error = json_incref(error);
    json_decref(s->error);
    s->error = error;
    df_step_set_state(p, s, DF_STEP_ERROR);
}

static int singleton_acquire(df_plan *p, struct df_action *a)
{
    if (a->cls == NULL || !(a->cls->flags & DF_ACTION_SINGLETON))
        return 0;
    if (df_world_singleton_acquire(p->w, a->cls->name, p->id) < 0)
        return df_action_error(a, "Action %s is already active", a->cls->name);
    return 0;
}

static int plan_subscribers(df_plan *p, struct df_action *a, json_t *args);

/* Action#execute_plan: the action's plan inside its own concurrence. */
static int execute_plan(df_plan *p, struct df_action *a, json_t *args, df_action *triggering)
{
    struct df_step *s = df_plan_step(p, a->plan_step_id);
    int64_t t0 = df_mono_us();
    int rc;

    s->started_at = df_now_us();
    df_step_set_state(p, s, DF_STEP_RUNNING);
    frame_push(p, 'C');
    a->x.phase = DF_PHASE_PLAN;
    a->x.triggering = triggering;
    if (a->cls == NULL)
        rc = df_action_error(a, "The action class was not found: %s", a->class_name);
    else
        rc = singleton_acquire(p, a);
    if (rc == 0)
        rc = df_mw_execute(a, DF_PHASE_PLAN, args, NULL);
    if (rc == 0 && a->x.error == NULL && p->planning->error == NULL)
        rc = plan_subscribers(p, a, args);
    frame_pop(p);
    a->x.triggering = NULL;
    s->ended_at = df_now_us();
    s->execution_time += (double)(df_mono_us() - t0) / 1e6;
    if (rc < 0 || a->x.error != NULL || p->planning->error != NULL) {
        planning_error(p, a);
        return -1;
    }
    df_step_set_state(p, s, DF_STEP_SUCCESS);
    return 0;
}

static int plan_subscribers(df_plan *p, struct df_action *a, json_t *args)
{
    size_t n;
    const struct df_action_class *const *subs = df_world_subscribers(p->w, a->class_name, &n);

    for (size_t i = 0; i < n; i++) {
        struct df_action *sub = df_action_new(p, subs[i], subs[i]->name, a->id);
        if (execute_plan(p, sub, args, a) < 0)
            return -1;
    }
    return 0;
}

/* The end of the middleware chain in the plan phase. */
int df_action_plan_default(df_action *a, json_t *args)
{
    if (a->cls->plan != NULL)
        return a->cls->plan(a, args);
    if (a->x.triggering != NULL)
        return df_plan_self(a, json_deep_copy(a->x.triggering->input));
    return df_plan_self(a, json_is_object(args) ? json_deep_copy(args) : json_object());
}

df_action *df_plan_action(df_action *parent, const char *class_name, json_t *args)
{
    df_plan *p = parent->plan;
    const struct df_action_class *cls;
    struct df_action *a;

    if (parent->x.phase != DF_PHASE_PLAN || p->planning == NULL) {
        df_action_error(parent, "plan_action(%s) called outside the plan phase", class_name);
        return NULL;
    }
    cls = df_world_class(p->w, class_name);
    a = df_action_new(p, cls, cls != NULL ? cls->name : class_name, parent->id);
    return execute_plan(p, a, args, NULL) == 0 ? a : NULL;
}

void df_sequence_begin(df_action *a)
{
    if (a->plan->planning != NULL)
        frame_push(a->plan, 'S');
}

void df_concurrence_begin(df_action *a)
{
    if (a->plan->planning != NULL)
        frame_push(a->plan, 'C');
}

void df_sequence_end(df_action *a)
{
    if (a->plan->planning != NULL && a->plan->planning->n > 1)
        frame_pop(a->plan);
}

void df_concurrence_end(df_action *a)
{
    df_sequence_end(a);
}

json_t *df_output_ref(df_action *planned, ...)
{
    json_t *subkeys = json_array();
    const char *key;
    va_list ap;

    va_start(ap, planned);
    while ((key = va_arg(ap, const char *)) != NULL)
        json_array_append_new(subkeys, json_string(key));
    va_end(ap);
    return json_pack("{s:s, s:s, s:o, s:i, s:o}", "class", OUTPUT_REFERENCE_CLASS,
                     "execution_plan_id", planned->plan->id, "step_id",
                     planned->run_step_id ? json_integer(planned->run_step_id) : json_null(),
                     "action_id", planned->id, "subkeys", subkeys);
}

static void planning_free(df_plan *p)
{
    struct df_planning *pl = p->planning;

    for (size_t i = 0; i < pl->n; i++) {
        df_flow_free(pl->frames[i].flow);
        df_ints_free(&pl->frames[i].steps);
        df_ints_free(&pl->frames[i].prev);
    }
    free(pl->frames);
    json_decref(pl->error);
    free(pl);
    p->planning = NULL;
}

static json_t *finalize_flow_encode(df_plan *p)
{
    json_t *f = json_array();

    json_array_append_new(f, json_string("S"));
    for (size_t i = 0; i < p->finalize_order.n; i++)
        json_array_append_new(f, json_integer(p->finalize_order.v[i]));
    return f;
}

bool df_plan_plan(df_plan *p, const struct df_action_class *cls, json_t *args,
                  const char *caller_plan_id, int caller_action_id, df_error *err)
{
    struct df_action *root;
    struct df_flow *flow;
    df_plan *outer;
    bool ok;

    p->planning = df_calloc(1, sizeof(*p->planning));
    frame_push(p, 'C');
    p->label = cls->name;
    df_plan_set_state(p, DF_PLAN_PLANNING);
    if (p->n_actions == 0) {
        root = df_action_new(p, cls, cls->name, 0);
        if (caller_plan_id != NULL) {
            root->caller_plan_id = df_strdup(caller_plan_id);
            root->caller_action_id = caller_action_id;
            p->caller_plan_id = df_strdup(caller_plan_id);
            p->caller_action_id = caller_action_id;
        }
    }
    root = p->actions[0];
    outer = df_planning;
    df_planning = p;
    ok = execute_plan(p, root, args, NULL) == 0;
    df_planning = outer;
    if (!ok)
        df_errorf(err, 0, "%s", json_string_value(json_object_get(p->planning->error, "message")));
    flow = df_flow_finish_root(p->planning->frames[0].flow);
    p->planning->frames[0].flow = NULL;
    json_decref(p->run_flow);
    p->run_flow = df_flow_encode(flow);
    df_flow_free(flow);
    json_decref(p->finalize_flow);
    p->finalize_flow = finalize_flow_encode(p);
    planning_free(p);
    df_plan_mark(p, DF_PLAN_DIRTY_ROW);
    df_plan_set_state(p, ok ? DF_PLAN_PLANNED : DF_PLAN_STOPPED);
    return ok;
}

/* ---- action accessors ---------------------------------------------------- */

json_t *df_action_input(df_action *a)
{
    return a->input;
}

json_t *df_action_output(df_action *a)
{
    return a->x.output != NULL ? a->x.output : a->output;
}

json_t *df_action_secrets(df_action *a)
{
    if (a->secrets_lost) {
        df_action_error(a,
                        "the secrets of action %d (%s) in plan %s are gone: they are kept in "
                        "memory only and the process restarted",
                        a->id, a->class_name, a->plan->id);
        return NULL;
    }
    return json_object_get(a->input, "secrets");
}

int df_action_id(const df_action *a)
{
    return a->id;
}

int df_action_run_step_id(const df_action *a)
{
    return a->run_step_id;
}

const char *df_action_plan_id(const df_action *a)
{
    return a->plan->id;
}

const char *df_action_class_name(const df_action *a)
{
    return a->class_name;
}

df_world *df_action_world(const df_action *a)
{
    return a->plan->w;
}

const struct df_action_class *df_action_class(const df_action *a)
{
    return a->cls;
}

df_action *df_action_triggering(const df_action *a)
{
    return a->x.triggering;
}

int df_action_error(df_action *a, const char *fmt, ...)
{
    char msg[DF_ERROR_TEXT];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_decref(a->x.error);
    a->x.error = df_step_error_new("RuntimeError", msg);
    return -1;
}
