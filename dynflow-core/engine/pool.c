/* Executor queues: a FIFO of work items and a fixed pool of workers each. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

struct df_queue *df_queue_new(df_world *w, const char *name, unsigned size)
{
    struct df_queue *q = df_calloc(1, sizeof(*q));

    q->name = df_strdup(name);
    q->size = size;
    q->w = w;
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->cond, NULL);
    return q;
}

void df_work_free(struct df_work *wk)
{
    df_plan_unref(wk->plan);
    json_decref(wk->ev_data);
    free(wk);
}

static void *worker(void *arg)
{
    struct df_queue *q = arg;

    pthread_mutex_lock(&q->lock);
    for (;;) {
        struct df_work *wk;
        while (q->head == NULL && !q->stop)
            pthread_cond_wait(&q->cond, &q->lock);
        if (q->stop)
            break;
        wk = q->head;
        q->head = wk->next;
        if (q->head == NULL)
            q->tail = NULL;
        pthread_mutex_unlock(&q->lock);
        df_execute_work(q->w, wk);
        pthread_mutex_lock(&q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

int df_queue_start(struct df_queue *q, df_error *err)
{
    q->threads = df_calloc(q->size, sizeof(*q->threads));
    for (; q->started < q->size; q->started++) {
        int rc = pthread_create(&q->threads[q->started], NULL, worker, q);
        if (rc != 0)
            return df_errorf(err, -rc, "cannot start worker %u of queue '%s': %s", q->started,
                             q->name, strerror(rc));
    }
    return 0;
}

void df_queue_push(struct df_queue *q, struct df_work *wk)
{
    wk->next = NULL;
    pthread_mutex_lock(&q->lock);
    if (q->tail != NULL)
        q->tail->next = wk;
    else
        q->head = wk;
    q->tail = wk;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
}

/* Busy workers finish their item; queued items are dropped (a file database
 * still has their steps, and the next start resumes them). */
void df_queue_stop(struct df_queue *q)
{
    pthread_mutex_lock(&q->lock);
    q->stop = true;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->lock);
    for (unsigned i = 0; i < q->started; i++)
        pthread_join(q->threads[i], NULL);
    q->started = 0;
}

void df_queue_free(struct df_queue *q)
{
    struct df_work *wk, *next;

    for (wk = q->head; wk != NULL; wk = next) {
        next = wk->next;
        df_work_free(wk);
    }
    free(q->threads);
    free(q->name);
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->cond);
    free(q);
}
