/*
 * The runner dispatcher (reference/protocol.md §8.4): starts runners for
 * suspended actions (at most max_concurrent at once, the rest wait in launch
 * order), delivers their output as Runner::Update events once per refresh
 * interval or at once when they end or are polled, and forwards kills and
 * external events to them.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "runner/internal.h"
#include "util/util.h"

static const char dispatcher_key[] = "runner-dispatcher";

/* Descriptors kept for everything else the daemon does (listeners, database, callbacks). */
#define RESERVED_FDS 128u
/* What a process runner holds: stdin, stdout, stderr and its pidfd.  A runner starts only when
 * this many are left in the budget, so running out of descriptors delays runners. */
#define FDS_PER_RUNNER 4u

/* ---- the runner's own services ---------------------------------------------------------- */

const json_t *df_runner_input(const df_runner *r)
{
    return r->input;
}

const json_t *df_runner_secrets(const df_runner *r)
{
    return json_object_get(r->input, "secrets");
}

const char *df_runner_id(const df_runner *r)
{
    return r->id;
}

const char *df_runner_plan_id(const df_runner *r)
{
    return r->rx[0].plan_id;
}

void *df_runner_class_data(const df_runner *r)
{
    return r->cls->data;
}

void *df_runner_data(const df_runner *r)
{
    return r->data;
}

void df_runner_set_data(df_runner *r, void *data)
{
    r->data = data;
}

void df_runner_mark_urgent(df_runner *r)
{
    struct df_dispatcher *d = r->d;

    if (r->urgent)
        return;
    r->urgent = true;
    if (d->n_urgent == d->cap_urgent) {
        d->cap_urgent = d->cap_urgent ? 2 * d->cap_urgent : 64;
        d->urgent = df_realloc(d->urgent, d->cap_urgent * sizeof(*d->urgent));
    }
    d->urgent[d->n_urgent++] = r;
}

static void vlog(struct df_dispatcher *d, int level, const char *fmt, va_list ap)
{
    if (d->cfg.log != NULL)
        d->cfg.log(d->cfg.log_ctx, level, fmt, ap);
}

void df_dlog(struct df_dispatcher *d, int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(d, level, fmt, ap);
    va_end(ap);
}

void df_runner_log(df_runner *r, int level, const char *fmt, ...)
{
    char prefixed[512];
    va_list ap;

    snprintf(prefixed, sizeof(prefixed), "runner %s (plan %s): %s", r->id, r->rx[0].plan_id, fmt);
    va_start(ap, fmt);
    vlog(r->d, level, prefixed, ap);
    va_end(ap);
}

void df_runner_publish(df_runner *r, const char *type, const char *buf, size_t len)
{
    df_output_stream(r, &r->rx[0], type, buf, len);
}

void df_runner_publish_text(df_runner *r, const char *type, const char *fmt, ...)
{
    char *text = NULL;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    df_output_stream(r, &r->rx[0], type != NULL ? type : "debug", text, (size_t)n);
    df_output_stream_end(r, &r->rx[0], type != NULL ? type : "debug");
    free(text);
}

void df_runner_exit(df_runner *r, int status)
{
    if (r->exited)
        return;
    for (size_t i = 0; i < r->n_rx; i++) {
        df_output_stream_end(r, &r->rx[i], "stdout");
        df_output_stream_end(r, &r->rx[i], "stderr");
    }
    r->exited = true;
    r->exit_status = status;
    r->exit_ts = (double)df_now_us() / 1e6;
    df_runner_mark_urgent(r);
}

bool df_runner_exited(const df_runner *r)
{
    return r->exited;
}

void df_runner_exception(df_runner *r, const char *context, const char *kind, const char *message,
                         bool fatal)
{
    if (kind == NULL)
        kind = "RuntimeError";
    df_runner_log(r, fatal ? DF_LOG_ERROR : DF_LOG_WARNING, "%s: %s - %s", context, kind, message);
    for (size_t i = 0; i < r->n_rx; i++) /* a group runner tells every target (§8.3) */
        if (r->n_rx == 1 || r->rx[i].key != NULL) {
            char *text = NULL;
            int n = asprintf(&text, "%s: %s - %s", context, kind, message);
            if (n < 0)
                abort();
            df_output_record(r, &r->rx[i], "debug", text, (size_t)n);
            free(text);
        }
    if (fatal)
        df_runner_exit(r, DF_EXIT_EXCEPTION);
}

void df_runner_progress(df_runner *r, double done)
{
    r->progress_set = true;
    r->progress = done < 0 ? 0 : done > 1 ? 1 : done;
}

void df_runner_set_output(df_runner *r, const char *key, json_t *value)
{
    if (r->output_data == NULL)
        r->output_data = json_object();
    json_object_set_new(r->output_data, key, value);
}

/* ---- group runners ---------------------------------------------------------------------- */

size_t df_runner_add_receiver(df_runner *r, const char *key, const char *plan_id, int step_id)
{
    struct df_receiver *rx;

    r->rx = df_realloc(r->rx, (r->n_rx + 1) * sizeof(*r->rx));
    rx = &r->rx[r->n_rx];
    *rx = (struct df_receiver){
        .key = key != NULL ? df_strdup(key) : NULL, .step_id = step_id, .records = json_array()};
    snprintf(rx->plan_id, sizeof(rx->plan_id), "%s", plan_id);
    return r->n_rx++;
}

struct df_receiver *df_runner_receiver(df_runner *r, const char *key)
{
    for (size_t i = 1; i < r->n_rx; i++)
        if (strcmp(r->rx[i].key, key) == 0)
            return &r->rx[i];
    return NULL;
}

size_t df_runner_target_count(const df_runner *r)
{
    return r->n_rx - 1;
}

const char *df_runner_target(const df_runner *r, size_t i)
{
    return i + 1 < r->n_rx ? r->rx[i + 1].key : NULL;
}

void df_runner_publish_for(df_runner *r, const char *target, const char *type, const char *buf,
                           size_t len)
{
    struct df_receiver *rx = df_runner_receiver(r, target);

    if (rx != NULL)
        df_output_stream(r, rx, type, buf, len);
}

void df_runner_broadcast(df_runner *r, const char *type, const char *text)
{
    for (size_t i = 1; i < r->n_rx; i++)
        df_output_record(r, &r->rx[i], type, text, strlen(text));
}

void df_runner_exit_for(df_runner *r, const char *target, int status)
{
    struct df_receiver *rx = df_runner_receiver(r, target);

    if (rx != NULL) {
        rx->has_exit = true;
        rx->exit_status = status;
    }
}

/* ---- watches and timers ----------------------------------------------------------------- */

int df_runner_watch(df_runner *r, int fd, uint32_t events, df_runner_fd_fn cb, void *arg)
{
    struct df_watch *wt;
    int rc = df_loop_watch(r->d, r, fd, events, cb, arg, &wt);

    if (rc == 0) {
        wt->next = r->watches;
        r->watches = wt;
    }
    return rc;
}

static struct df_watch *find_watch(df_runner *r, int fd, struct df_watch ***link)
{
    struct df_watch **pp = &r->watches;

    while (*pp != NULL && (*pp)->fd != fd)
        pp = &(*pp)->next;
    if (link != NULL)
        *link = pp;
    return *pp;
}

int df_runner_watch_modify(df_runner *r, int fd, uint32_t events)
{
    struct df_watch *wt = find_watch(r, fd, NULL);

    if (wt == NULL)
        return -ENOENT;
    return df_loop_watch_modify(r->d, wt, events);
}

void df_runner_unwatch(df_runner *r, int fd)
{
    struct df_watch **link, *wt = find_watch(r, fd, &link);

    if (wt != NULL) {
        *link = wt->next;
        df_loop_unwatch(r->d, wt);
    }
}

uint64_t df_runner_after(df_runner *r, double seconds, df_runner_timer_fn cb, void *arg)
{
    struct df_rtimer *t;
    uint64_t id = df_loop_after(r->d, r, seconds, cb, arg, &t);

    t->next = r->timers;
    r->timers = t;
    return id;
}

uint64_t df_runner_loop_after(df_world *w, double seconds, df_runner_timer_fn cb, void *arg)
{
    return df_loop_after(df_dispatcher_of(w), NULL, seconds, cb, arg, NULL);
}

void df_runner_cancel_timer(df_runner *r, uint64_t id)
{
    struct df_rtimer *t = r->timers;

    while (t != NULL && t->id != id)
        t = t->next;
    if (t != NULL)
        df_loop_cancel(r->d, t);
}

static void timeout_fired(df_runner *r, void *arg)
{
    (void)arg;
    df_runner_publish_text(r, "debug", "Timeout for execution passed, trying to stop the job");
    if (r->cls->ops->kill != NULL)
        r->cls->ops->kill(r);
    else
        df_proc_kill_all(r);
}

uint64_t df_runner_set_timeout(df_runner *r, double seconds)
{
    return seconds > 0 ? df_runner_after(r, seconds, timeout_fired, NULL) : 0;
}

/* ---- lifecycle (runner thread) ------------------------------------------------------------ */

static void runner_free(df_runner *r)
{
    pthread_mutex_lock(&r->d->lock);
    if (df_hash_get(r->d->live, r->id) == r)
        df_hash_del(r->d->live, r->id);
    pthread_mutex_unlock(&r->d->lock);
    for (size_t i = 0; i < r->n_rx; i++) {
        free(r->rx[i].key);
        json_decref(r->rx[i].records);
    }
    free(r->rx);
    json_decref(r->output_data);
    json_decref(r->input);
    free(r);
}

void df_runner_defer(df_runner *r)
{
    r->deferred = true;
}

static void fd_retry(df_runner *r, void *arg)
{
    struct df_dispatcher *d = arg;

    (void)r;
    d->fd_short = false;
}

static void drop_watches_and_timers(struct df_dispatcher *d, df_runner *r)
{
    while (r->watches != NULL) {
        struct df_watch *wt = r->watches;
        r->watches = wt->next;
        df_loop_unwatch(d, wt);
    }
    while (r->timers != NULL)
        df_loop_cancel(d, r->timers);
}

/* Out of descriptors: the runner waits at the head of the queue until another runner closes
 * (or a second passes, when none runs); it is delayed, not failed. */
static void requeue(struct df_dispatcher *d, df_runner *r)
{
    r->deferred = false;
    df_proc_orphan_all(r);
    drop_watches_and_timers(d, r);
    if (r->cls->ops->close != NULL)
        r->cls->ops->close(r);
    r->data = NULL;
    json_array_clear(r->rx[0].records);
    r->output_bytes = 0;
    r->state = DF_RUNNER_WAITING;
    d->n_active--;
    r->next_waiting = d->wait_head;
    d->wait_head = r;
    if (d->wait_tail == NULL)
        d->wait_tail = r;
    d->n_waiting++;
    if (!d->fd_short)
        df_dlog(d, DF_LOG_WARNING,
                "runners: out of file descriptors (%u in use by runners); runner %s waits",
                d->fds_used, r->id);
    d->fd_short = true;
    if (d->n_active == 0)
        df_loop_after(d, NULL, 1, fd_retry, d, NULL);
}

/* The runner's start could not be recorded: it waits at the head of the queue and tries again
 * in a second. */
static void start_later(struct df_dispatcher *d, df_runner *r, const df_error *err)
{
    df_dlog(d, DF_LOG_ERROR, "runner %s waits: its start cannot be recorded: %s", r->id, err->text);
    r->next_waiting = d->wait_head;
    d->wait_head = r;
    if (d->wait_tail == NULL)
        d->wait_tail = r;
    d->n_waiting++;
    d->fd_short = true;
    df_loop_after(d, NULL, 1, fd_retry, d, NULL);
}

static void activate(struct df_dispatcher *d, df_runner *r)
{
    df_error err;
    int rc;

    /* Committed first: after a crash, a runner without this fact never started and starts
     * again; one with it may have done anything (doc/recovery.md). */
    if (df_runner_record_start(r, &err) < 0) {
        start_later(d, r, &err);
        return;
    }
    r->state = DF_RUNNER_ACTIVE;
    d->n_active++;
    rc = r->cls->ops->start(r);
    if (r->deferred && !r->exited)
        requeue(d, r);
    else if (rc < 0 && !r->exited)
        df_runner_exception(r, "Runner error", NULL, "the runner failed to start", true);
}

static void start_waiting(struct df_dispatcher *d)
{
    while (d->wait_head != NULL && d->n_active < d->cfg.max_concurrent && !d->fd_short &&
           d->fds_used + FDS_PER_RUNNER <= d->fd_budget && !d->stopping) {
        df_runner *r = d->wait_head;
        d->wait_head = r->next_waiting;
        if (d->wait_head == NULL)
            d->wait_tail = NULL;
        d->n_waiting--;
        activate(d, r);
    }
}

static void remove_waiting(struct df_dispatcher *d, df_runner *r)
{
    df_runner **pp = &d->wait_head, *prev = NULL;

    while (*pp != NULL && *pp != r) {
        prev = *pp;
        pp = &(*pp)->next_waiting;
    }
    if (*pp == NULL)
        return;
    *pp = r->next_waiting;
    if (d->wait_tail == r)
        d->wait_tail = prev;
    d->n_waiting--;
}

/* After the last update: the runner's processes, watches and timers go, then the runner. */
static void runner_close(struct df_dispatcher *d, df_runner *r)
{
    df_proc_orphan_all(r);
    drop_watches_and_timers(d, r);
    d->fd_short = false; /* its descriptors are free now */
    if (r->state != DF_RUNNER_WAITING && r->cls->ops->close != NULL)
        r->cls->ops->close(r);
    if (r->state == DF_RUNNER_WAITING)
        remove_waiting(d, r);
    df_hash_del(d->runners, r->id);
    if (r->state == DF_RUNNER_ACTIVE)
        d->n_active--;
    runner_free(r);
}

static json_t *exit_json(int status)
{
    return status == DF_EXIT_EXCEPTION ? json_string("EXCEPTION") : json_integer(status);
}

/* One Runner::Update to a receiver (§8.2); its pending records go with it. */
static void deliver(struct df_dispatcher *d, df_runner *r, struct df_receiver *rx, bool main)
{
    json_t *data = json_pack("{s:o}", "records", rx->records);
    df_event ev = {DF_EVENT_RUNNER_UPDATE, data};
    df_error err;

    rx->records = json_array();
    if (r->exited) {
        int status = rx->has_exit ? rx->exit_status : r->exit_status;
        json_object_set_new(data, "exit_status", exit_json(status));
        json_object_set_new(data, "exit_status_timestamp", json_real(r->exit_ts));
    }
    if (main && r->progress_set)
        json_object_set_new(data, "progress", json_real(r->progress));
    if (main && r->output_data != NULL) {
        json_object_set_new(data, "data", r->output_data);
        r->output_data = NULL;
    }
    if (df_world_event(d->w, rx->plan_id, rx->step_id, &ev, 0, &err) < 0)
        df_dlog(d, DF_LOG_WARNING, "runner %s: the update for plan %s, step %d is lost: %s", r->id,
                rx->plan_id, rx->step_id, err.text);
    json_decref(data);
}

/* Updates for every receiver with something new; all of them once the runner ended (§8.3). */
static void generate_updates(struct df_dispatcher *d, df_runner *r)
{
    bool group = r->n_rx > 1;

    if (r->final_sent)
        return; /* closing waits for its processes: the exit status went out already */
    r->final_sent = r->exited;

    for (size_t i = group ? 1 : 0; i < r->n_rx; i++)
        if (r->exited || json_array_size(r->rx[i].records) > 0)
            deliver(d, r, &r->rx[i], !group);
    if (group && r->exited)
        deliver(d, r, &r->rx[0], true); /* the parent's own, empty update */
    else if (group && (r->progress_set || r->output_data != NULL))
        deliver(d, r, &r->rx[0], true);
    r->progress_set = false;
}

static void refresh(struct df_dispatcher *d, df_runner *r)
{
    if (r->state != DF_RUNNER_ACTIVE || r->exited)
        return; /* an ended runner is the flush's: it delivers once and closes */
    if (r->cls->ops->refresh != NULL)
        r->cls->ops->refresh(r);
    if (r->urgent)
        return; /* it ended (or has news) in its refresh: the flush delivers and closes it */
    generate_updates(d, r);
}

struct tick_ctx {
    struct df_dispatcher *d;
    df_runner **list;
    size_t n;
};

static void collect(void *arg, const char *key, void *value)
{
    struct tick_ctx *t = arg;

    (void)key;
    t->list[t->n++] = value;
}

void df_dispatcher_tick(struct df_dispatcher *d)
{
    struct tick_ctx t = {d, df_calloc(df_hash_count(d->runners) + 1, sizeof(df_runner *)), 0};

    df_hash_each(d->runners, collect, &t); /* refresh may close runners: not while iterating */
    for (size_t i = 0; i < t.n; i++)
        if (!t.list[i]->urgent)
            refresh(d, t.list[i]);
    free(t.list);
}

void df_dispatcher_flush(struct df_dispatcher *d)
{
    while (d->n_urgent > 0) {
        df_runner *r = d->urgent[--d->n_urgent];
        r->urgent = false;
        if (r->state == DF_RUNNER_ACTIVE) {
            generate_updates(d, r);
            if (r->exited && r->procs == NULL)
                runner_close(d, r);
        }
    }
    start_waiting(d);
}

/* ---- commands from other threads ---------------------------------------------------------- */

static void drop_command(struct df_cmd *c)
{
    if (c->runner != NULL)
        runner_free(c->runner);
    json_decref(c->data);
    free(c);
}

/* The runner thread starts with the first command, so that the configuration is settled. */
static void push_command(struct df_dispatcher *d, struct df_cmd *c)
{
    int rc = 0;

    pthread_mutex_lock(&d->lock);
    if (!d->stopping && !d->thread_started) {
        rc = pthread_create(&d->thread, NULL, df_loop_main, d);
        d->thread_started = rc == 0;
    }
    if (d->stopping || rc != 0) {
        pthread_mutex_unlock(&d->lock);
        if (rc != 0)
            df_dlog(d, DF_LOG_ERROR, "cannot start the runner thread: %s", strerror(rc));
        drop_command(c);
        return;
    }
    if (d->tail != NULL)
        d->tail->next = c;
    else
        d->head = c;
    d->tail = c;
    pthread_mutex_unlock(&d->lock);
    df_loop_wake(d);
}

static void run_start(struct df_dispatcher *d, df_runner *r)
{
    if (df_hash_get(d->runners, r->id) != NULL) {
        df_dlog(d, DF_LOG_ERROR, "runner %s is already running: not started again", r->id);
        runner_free(r);
        return;
    }
    df_hash_put(d->runners, r->id, r);
    r->next_waiting = NULL;
    if (d->wait_tail != NULL)
        d->wait_tail->next_waiting = r;
    else
        d->wait_head = r;
    d->wait_tail = r;
    d->n_waiting++;
    start_waiting(d);
}

static void run_command(struct df_dispatcher *d, struct df_cmd *c)
{
    df_runner *r = c->type == CMD_START ? NULL : df_hash_get(d->runners, c->id);

    switch (c->type) {
        case CMD_START:
            run_start(d, c->runner);
            break;
        case CMD_KILL:
            if (r != NULL && r->state == DF_RUNNER_WAITING) {
                df_runner_publish_text(r, "debug", "The task was cancelled before it started");
                r->state = DF_RUNNER_ACTIVE; /* closes through the normal path */
                d->n_active++;
                df_runner_exit(r, DF_EXIT_EXCEPTION);
                remove_waiting(d, r);
            } else if (r != NULL && !r->exited) {
                if (r->cls->ops->kill != NULL)
                    r->cls->ops->kill(r);
                else
                    df_proc_kill_all(r);
            }
            break;
        case CMD_EVENT:
            if (r != NULL && r->state == DF_RUNNER_ACTIVE && !r->exited &&
                r->cls->ops->external_event != NULL) {
                r->cls->ops->external_event(r, c->data);
                df_runner_mark_urgent(r);
            }
            break;
        case CMD_REFRESH:
            if (r != NULL && r->state == DF_RUNNER_ACTIVE && !r->exited) {
                if (r->cls->ops->refresh != NULL)
                    r->cls->ops->refresh(r);
                df_runner_mark_urgent(r);
            }
            break;
    }
}

void df_dispatcher_run_commands(struct df_dispatcher *d)
{
    struct df_cmd *c, *next;

    pthread_mutex_lock(&d->lock);
    c = d->head;
    d->head = d->tail = NULL;
    pthread_mutex_unlock(&d->lock);
    for (; c != NULL; c = next) {
        next = c->next;
        run_command(d, c);
        json_decref(c->data);
        free(c);
    }
}

static struct df_cmd *command(int type, const char *id)
{
    struct df_cmd *c = df_calloc(1, sizeof(*c));

    c->type = type;
    snprintf(c->id, sizeof(c->id), "%s", id != NULL ? id : "");
    return c;
}

int df_dispatcher_start(df_dispatcher *d, const struct df_runner_class *cls, const char *id,
                        const json_t *input, const char *plan_id, int step_id,
                        const json_t *targets)
{
    df_runner *r = df_calloc(1, sizeof(*r));
    struct df_cmd *c = command(CMD_START, id);
    const char *key;
    json_t *t;

    r->d = d;
    r->cls = cls;
    snprintf(r->id, sizeof(r->id), "%s", id);
    r->input = json_deep_copy(input);
    df_runner_add_receiver(r, NULL, plan_id, step_id);
    json_object_foreach((json_t *)targets, key, t)
    {
        const char *target_plan = json_string_value(json_object_get(t, "execution_plan_id"));
        json_int_t step = json_integer_value(json_object_get(t, "run_step_id"));
        df_runner_add_receiver(r, key, target_plan != NULL ? target_plan : key, (int)step);
    }
    c->runner = r;
    pthread_mutex_lock(&d->lock);
    if (df_hash_get(d->live, r->id) == NULL)
        df_hash_put(d->live, r->id, r);
    pthread_mutex_unlock(&d->lock);
    push_command(d, c);
    return 0;
}

bool df_dispatcher_has(df_dispatcher *d, const char *id)
{
    bool has;

    pthread_mutex_lock(&d->lock);
    has = df_hash_get(d->live, id) != NULL;
    pthread_mutex_unlock(&d->lock);
    return has;
}

void df_dispatcher_kill(df_dispatcher *d, const char *id)
{
    push_command(d, command(CMD_KILL, id));
}

void df_dispatcher_event(df_dispatcher *d, const char *id, const json_t *data)
{
    struct df_cmd *c = command(CMD_EVENT, id);

    c->data = json_deep_copy(data);
    push_command(d, c);
}

void df_dispatcher_refresh(df_dispatcher *d, const char *id)
{
    push_command(d, command(CMD_REFRESH, id));
}

/* ---- the dispatcher of a world ------------------------------------------------------------ */

/* Raises the soft descriptor limit to the hard one; runners get what the daemon does not need. */
static unsigned fd_budget(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 1024 - RESERVED_FDS;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t old = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            rl.rlim_cur = old;
    }
    return rl.rlim_cur > RESERVED_FDS * 2 ? (unsigned)(rl.rlim_cur - RESERVED_FDS)
                                          : (unsigned)rl.rlim_cur / 2;
}

static void stop(void *data)
{
    struct df_dispatcher *d = data;

    pthread_mutex_lock(&d->lock);
    d->stopping = true;
    pthread_mutex_unlock(&d->lock);
    if (d->thread_started) {
        df_loop_wake(d);
        pthread_join(d->thread, NULL);
        d->thread_started = false;
    }
}

/* After the engine stopped: processes still running are killed (their plans stay
 * suspended and end with "EXCEPTION" after a restart) and reaped. */
static void release(void *data)
{
    struct df_dispatcher *d = data;

    struct tick_ctx all = {d, df_calloc(df_hash_count(d->runners) + 1, sizeof(df_runner *)), 0};

    df_hash_each(d->runners, collect, &all);
    for (size_t i = 0; i < all.n; i++)
        runner_close(d, all.list[i]);
    free(all.list);
    df_hash_free(d->runners);
    df_hash_free(d->live);
    for (size_t i = 0; i < d->n_classes; i++)
        free(d->classes[i]);
    free(d->classes);
    df_proc_free_orphans(d);
    df_loop_fini(d);
    free(d->urgent);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

static struct df_dispatcher *dispatcher_new(df_world *w, df_error *err)
{
    struct df_dispatcher *d = df_calloc(1, sizeof(*d));
    int rc;

    d->w = w;
    d->epfd = d->wakefd = -1;
    d->cfg = (struct df_runner_config){
        .refresh_interval = 1, .max_concurrent = 1000, .output_cap = 64ull << 20};
    pthread_mutex_init(&d->lock, NULL);
    d->runners = df_hash_new();
    d->live = df_hash_new();
    d->fd_budget = fd_budget();
    rc = df_loop_init(d, err);
    for (size_t i = 0; rc == 0 && df_runner_group_classes(i) != NULL; i++)
        rc = df_world_register(w, df_runner_group_classes(i), err);
    if (rc == 0 && (rc = df_world_attach(w, dispatcher_key, d, stop, release)) < 0)
        df_errorf(err, rc, "cannot attach the runner dispatcher to the world");
    if (rc == 0)
        df_world_on_recovery(w, dispatcher_key, df_runner_sweep);
    if (rc < 0) {
        stop(d);
        release(d);
        return NULL;
    }
    return d;
}

const struct df_runner_class *df_dispatcher_runner_class(df_dispatcher *d, const char *name)
{
    for (size_t i = 0; d != NULL && name != NULL && i < d->n_classes; i++) {
        const struct df_runner_class *cls = df_runner_class_of(d->classes[i]);
        if (strcmp(cls->name, name) == 0)
            return cls;
        for (const char *const *al = cls->aliases; al != NULL && *al != NULL; al++)
            if (strcmp(*al, name) == 0)
                return cls;
    }
    return NULL;
}

df_dispatcher *df_dispatcher_of(df_world *w)
{
    return df_world_attachment(w, dispatcher_key);
}

static struct df_dispatcher *dispatcher_for(df_world *w, df_error *err)
{
    struct df_dispatcher *d = df_dispatcher_of(w);

    return d != NULL ? d : dispatcher_new(w, err);
}

int df_runner_configure(df_world *w, const struct df_runner_config *cfg, df_error *err)
{
    struct df_dispatcher *d = dispatcher_for(w, err);

    if (d == NULL)
        return -ENOMEM;
    pthread_mutex_lock(&d->lock);
    if (d->thread_started) {
        pthread_mutex_unlock(&d->lock);
        return df_errorf(err, -EBUSY, "runners are configured before the first one starts");
    }
    if (cfg->refresh_interval > 0)
        d->cfg.refresh_interval = cfg->refresh_interval;
    if (cfg->max_concurrent > 0)
        d->cfg.max_concurrent = cfg->max_concurrent;
    if (cfg->output_cap > 0)
        d->cfg.output_cap = cfg->output_cap;
    d->cfg.log = cfg->log;
    d->cfg.log_ctx = cfg->log_ctx;
    pthread_mutex_unlock(&d->lock);
    df_dlog(d, DF_LOG_INFO,
            "runners: at most %u at once, output every %.3g s; %u descriptors for runners",
            d->cfg.max_concurrent, d->cfg.refresh_interval, d->fd_budget);
    return 0;
}

int df_runner_stats(df_world *w, struct df_runner_stats *out)
{
    struct df_dispatcher *d = df_dispatcher_of(w);

    if (d == NULL)
        return -ENOENT;
    *out = (struct df_runner_stats){
        .active = __atomic_load_n(&d->n_active, __ATOMIC_RELAXED),
        .waiting = __atomic_load_n(&d->n_waiting, __ATOMIC_RELAXED),
        .fd_budget = d->fd_budget,
        .fds_used = __atomic_load_n(&d->fds_used, __ATOMIC_RELAXED),
    };
    return 0;
}

int df_runner_register(df_world *w, const struct df_runner_class *cls, df_error *err)
{
    struct df_dispatcher *d = dispatcher_for(w, err);

    struct df_action_class *ac;

    if (d == NULL)
        return -ENOMEM;
    ac = df_runner_action_class(cls);
    d->classes = df_realloc(d->classes, (d->n_classes + 1) * sizeof(*d->classes));
    d->classes[d->n_classes++] = ac;
    return df_world_register(w, ac, err);
}
