/*
 * The runner thread: one epoll loop for every runner's descriptors, a binary
 * heap of timers (process grace periods, timeouts, retries) and one periodic
 * refresh tick that delivers buffered output, as Dynflow's Ticker does.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "runner/internal.h"
#include "util/util.h"

#define MAX_EVENTS 128

int df_loop_init(struct df_dispatcher *d, df_error *err)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};

    d->epfd = epoll_create1(EPOLL_CLOEXEC);
    d->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (d->epfd < 0 || d->wakefd < 0 || epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->wakefd, &ev) < 0)
        return df_errorf(err, -errno, "cannot set up the runner loop: %s", strerror(errno));
    return 0;
}

void df_loop_fini(struct df_dispatcher *d)
{
    struct df_watch *wt, *next;

    for (wt = d->dead_watches; wt != NULL; wt = next) {
        next = wt->next;
        free(wt);
    }
    d->dead_watches = NULL;
    for (size_t i = 0; i < d->n_heap; i++)
        free(d->heap[i]);
    free(d->heap);
    d->heap = NULL;
    d->n_heap = 0;
    if (d->epfd >= 0)
        close(d->epfd);
    if (d->wakefd >= 0)
        close(d->wakefd);
    d->epfd = d->wakefd = -1;
}

void df_loop_wake(struct df_dispatcher *d)
{
    uint64_t one = 1;

    if (write(d->wakefd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        abort(); /* an eventfd write cannot fail otherwise */
}

/* ---- watches ------------------------------------------------------------------------- */

int df_loop_watch(struct df_dispatcher *d, df_runner *r, int fd, uint32_t events,
                  df_runner_fd_fn cb, void *arg, struct df_watch **out)
{
    struct df_watch *wt = df_calloc(1, sizeof(*wt));
    struct epoll_event ev = {.events = events, .data.ptr = wt};

    *wt = (struct df_watch){.r = r, .fd = fd, .cb = cb, .arg = arg};
    if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int rc = -errno;
        free(wt);
        return rc;
    }
    *out = wt;
    return 0;
}

int df_loop_watch_modify(struct df_dispatcher *d, struct df_watch *wt, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = wt};

    return epoll_ctl(d->epfd, EPOLL_CTL_MOD, wt->fd, &ev) < 0 ? -errno : 0;
}

/* The watch stops now; its memory lives until the end of the loop round, because
 * an event for it may still wait in this round's batch. */
void df_loop_unwatch(struct df_dispatcher *d, struct df_watch *wt)
{
    epoll_ctl(d->epfd, EPOLL_CTL_DEL, wt->fd, NULL);
    wt->dead = true;
    wt->next = d->dead_watches;
    d->dead_watches = wt;
}

static void free_dead_watches(struct df_dispatcher *d)
{
    struct df_watch *wt = d->dead_watches, *next;

    d->dead_watches = NULL;
    for (; wt != NULL; wt = next) {
        next = wt->next;
        free(wt);
    }
}

/* ---- timers: a binary min-heap on due time ---------------------------------------------- */

static void heap_swap(struct df_dispatcher *d, size_t a, size_t b)
{
    struct df_rtimer *t = d->heap[a];

    d->heap[a] = d->heap[b];
    d->heap[b] = t;
    d->heap[a]->index = a;
    d->heap[b]->index = b;
}

static void heap_up(struct df_dispatcher *d, size_t i)
{
    while (i > 0 && d->heap[(i - 1) / 2]->due > d->heap[i]->due) {
        heap_swap(d, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(struct df_dispatcher *d, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < d->n_heap && d->heap[l]->due < d->heap[m]->due)
            m = l;
        if (r < d->n_heap && d->heap[r]->due < d->heap[m]->due)
            m = r;
        if (m == i)
            return;
        heap_swap(d, i, m);
        i = m;
    }
}

static void heap_remove(struct df_dispatcher *d, struct df_rtimer *t)
{
    size_t i = t->index;

    d->n_heap--;
    if (i != d->n_heap) {
        d->heap[i] = d->heap[d->n_heap];
        d->heap[i]->index = i;
        heap_down(d, i);
        heap_up(d, i);
    }
}

uint64_t df_loop_after(struct df_dispatcher *d, df_runner *r, double seconds, df_runner_timer_fn cb,
                       void *arg, struct df_rtimer **out)
{
    struct df_rtimer *t = df_calloc(1, sizeof(*t));

    *t = (struct df_rtimer){.due = df_mono_us() + (int64_t)(seconds * 1e6),
                            .id = ++d->next_timer_id,
                            .r = r,
                            .cb = cb,
                            .arg = arg};
    if (d->n_heap == d->cap_heap) {
        d->cap_heap = d->cap_heap ? 2 * d->cap_heap : 64;
        d->heap = df_realloc(d->heap, d->cap_heap * sizeof(*d->heap));
    }
    t->index = d->n_heap;
    d->heap[d->n_heap++] = t;
    heap_up(d, t->index);
    if (out != NULL)
        *out = t;
    return t->id;
}

/* Unlinks t from its runner's list, takes it out of the heap and frees it. */
void df_loop_cancel(struct df_dispatcher *d, struct df_rtimer *t)
{
    if (t->r != NULL) {
        struct df_rtimer **pp = &t->r->timers;
        while (*pp != NULL && *pp != t)
            pp = &(*pp)->next;
        if (*pp == t)
            *pp = t->next;
    }
    heap_remove(d, t);
    free(t);
}

static void run_due_timers(struct df_dispatcher *d, int64_t now)
{
    while (d->n_heap > 0 && d->heap[0]->due <= now) {
        struct df_rtimer *t = d->heap[0];
        df_runner *r = t->r;
        df_runner_timer_fn cb = t->cb;
        void *arg = t->arg;
        df_loop_cancel(d, t);
        cb(r, arg);
    }
}

static int wait_ms(const struct df_dispatcher *d, int64_t now)
{
    int64_t until = d->next_tick;

    if (d->n_heap > 0 && d->heap[0]->due < until)
        until = d->heap[0]->due;
    if (d->n_urgent > 0 || until <= now)
        return 0;
    return (int)((until - now + 999) / 1000);
}

void *df_loop_main(void *arg)
{
    struct df_dispatcher *d = arg;
    struct epoll_event evs[MAX_EVENTS];
    int64_t interval = (int64_t)(d->cfg.refresh_interval * 1e6);

    d->next_tick = df_mono_us() + interval;
    for (;;) {
        int64_t now = df_mono_us();
        int n = epoll_wait(d->epfd, evs, MAX_EVENTS, wait_ms(d, now));
        bool stop;

        for (int i = 0; i < n; i++) {
            struct df_watch *wt = evs[i].data.ptr;
            if (wt == NULL) {
                uint64_t v;
                if (read(d->wakefd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                    abort();
            } else if (!wt->dead) {
                wt->cb(wt->r, wt->fd, evs[i].events, wt->arg);
            }
        }
        df_dispatcher_run_commands(d);
        now = df_mono_us();
        run_due_timers(d, now);
        if (now >= d->next_tick) {
            df_dispatcher_tick(d);
            d->next_tick = now + interval;
        }
        df_dispatcher_flush(d);
        free_dead_watches(d);
        pthread_mutex_lock(&d->lock);
        stop = d->stopping && d->head == NULL;
        pthread_mutex_unlock(&d->lock);
        if (stop)
            return NULL;
    }
}
