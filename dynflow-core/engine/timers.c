/*
 * The world's clock: a binary heap of timers served by one thread.  Event
 * timers are also written to the database so they survive a restart.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/internal.h"

static void heap_swap(struct df_timers *t, size_t a, size_t b)
{
    struct df_timer x = t->heap[a];

    t->heap[a] = t->heap[b];
    t->heap[b] = x;
}

static void heap_push(struct df_timers *t, const struct df_timer *tm)
{
    size_t i;

    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->heap = df_realloc(t->heap, t->cap * sizeof(*t->heap));
    }
    i = t->n++;
    t->heap[i] = *tm;
    while (i > 0 && t->heap[(i - 1) / 2].due > t->heap[i].due) {
        heap_swap(t, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static struct df_timer heap_pop(struct df_timers *t)
{
    struct df_timer top = t->heap[0];
    size_t i = 0;

    t->heap[0] = t->heap[--t->n];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < t->n && t->heap[l].due < t->heap[m].due)
            m = l;
        if (r < t->n && t->heap[r].due < t->heap[m].due)
            m = r;
        if (m == i)
            break;
        heap_swap(t, i, m);
        i = m;
    }
    return top;
}

void df_timers_add(df_world *w, const struct df_timer *tm)
{
    struct df_timer copy = *tm;

    if (copy.type == DF_TIMER_EVENT && w->durable && copy.id == 0) {
        copy.id = atomic_fetch_add(&w->next_timer_id, 1) + 1;
        df_writer_timer_put(w, &copy);
    }
    pthread_mutex_lock(&w->timers.lock);
    if (w->timers.stop) {
        /* shutting down: a durable timer is in the database already, the rest ends here */
        pthread_mutex_unlock(&w->timers.lock);
        json_decref(copy.data);
        return;
    }
    heap_push(&w->timers, &copy);
    pthread_cond_signal(&w->timers.cond);
    pthread_mutex_unlock(&w->timers.lock);
}

static void fire(df_world *w, struct df_timer *tm)
{
    switch (tm->type) {
        case DF_TIMER_EVENT:
            if (tm->id != 0)
                df_writer_timer_delete(w, tm->id);
            df_world_fire_event(w, tm);
            break;
        case DF_TIMER_DELAYED: {
            df_plan *p = df_world_plan(w, tm->plan_id, true);
            if (p != NULL) {
                struct df_work *wk = df_calloc(1, sizeof(*wk));
                wk->type = DF_WORK_START_DELAYED;
                wk->plan = p;
                df_queue_push(w->queues[0], wk);
            }
            break;
        }
        case DF_TIMER_CLEANER: {
            struct df_timer next = {.type = DF_TIMER_CLEANER};
            df_world_clean(w, w->cleaner_age, NULL, NULL);
            next.due = df_now_us() + (int64_t)(w->cleaner_interval * 1e6);
            df_timers_add(w, &next);
            break;
        }
    }
}

static void *timer_thread(void *arg)
{
    df_world *w = arg;
    struct df_timers *t = &w->timers;

    pthread_mutex_lock(&t->lock);
    while (!t->stop) {
        int64_t now = df_now_us();
        if (t->n > 0 && t->heap[0].due <= now) {
            struct df_timer tm = heap_pop(t);
            pthread_mutex_unlock(&t->lock);
            fire(w, &tm);
            pthread_mutex_lock(&t->lock);
        } else if (t->n > 0) {
            struct timespec ts = {.tv_sec = (time_t)(t->heap[0].due / 1000000),
                                  .tv_nsec = (long)(t->heap[0].due % 1000000) * 1000};
            pthread_cond_timedwait(&t->cond, &t->lock, &ts);
        } else {
            pthread_cond_wait(&t->cond, &t->lock);
        }
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

int df_timers_start(df_world *w, df_error *err)
{
    int rc;

    rc = pthread_create(&w->timers.thread, NULL, timer_thread, w);
    if (rc != 0)
        return df_errorf(err, -rc, "cannot start the timer thread: %s", strerror(rc));
    w->timers.running = true;
    return 0;
}

/* Pending timers are dropped; persisted ones are loaded again at the next start. */
void df_timers_stop(df_world *w)
{
    struct df_timers *t = &w->timers;

    if (!t->running)
        return;
    pthread_mutex_lock(&t->lock);
    t->stop = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    t->running = false;
    for (size_t i = 0; i < t->n; i++)
        json_decref(t->heap[i].data);
    free(t->heap);
    t->heap = NULL;
    t->n = t->cap = 0;
}
