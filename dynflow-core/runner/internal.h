/*
 * The runner dispatcher's insides: one thread with an epoll loop, timers in a
 * binary heap and a periodic refresh tick; runners, their receivers (the
 * suspended actions their output goes to) and their child processes.
 *
 * Everything below is touched by the runner thread only, except the
 * command queue (d->lock) through which worker threads start, kill, poll
 * and send events to runners.
 */
#ifndef DF_RUNNER_INTERNAL_H
#define DF_RUNNER_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "dynflow/runner.h"
#include "runner/dispatcher.h"
#include "util/hash.h"

struct df_watch {
    df_runner *r;
    int fd;
    df_runner_fd_fn cb;
    void *arg;
    bool dead;             /* unwatched during this loop round; freed at its end */
    struct df_watch *next; /* the runner's watches, or the dead list */
};

struct df_rtimer {
    int64_t due; /* monotonic microseconds */
    uint64_t id;
    size_t index; /* position in the heap */
    df_runner *r;
    df_runner_timer_fn cb;
    void *arg;
    struct df_rtimer *next; /* the runner's timers */
};

/* A stream's incomplete UTF-8 character, kept for the next chunk. */
struct df_utf8_carry {
    char bytes[4];
    size_t len;
};

/* Where output goes: the runner's action, or a group runner's target. */
struct df_receiver {
    char *key; /* the target key; NULL for the runner's own action */
    char plan_id[DF_UUID_BUF];
    int step_id;
    json_t *records;               /* pending, not delivered yet */
    size_t pending_bytes;          /* output bytes in records */
    struct df_utf8_carry carry[2]; /* stdout, stderr */
    bool has_exit;
    int exit_status;
};

enum df_runner_state { DF_RUNNER_WAITING, DF_RUNNER_ACTIVE, DF_RUNNER_CLOSING };

struct df_runner {
    struct df_dispatcher *d;
    const struct df_runner_class *cls;
    char id[DF_UUID_BUF];
    json_t *input; /* a copy, secrets included: memory only */
    void *data;
    enum df_runner_state state;
    struct df_runner *next_waiting;

    struct df_receiver *rx; /* rx[0]: the runner's action; then a group's targets */
    size_t n_rx;
    bool exited;
    bool final_sent; /* the updates with the exit status went out */
    int exit_status;
    double exit_ts;
    bool urgent;   /* deliver at the end of this loop round */
    bool deferred; /* start found no descriptors: back to the queue */
    bool progress_set;
    double progress;
    json_t *output_data; /* output.data keys set since the last update */
    uint64_t output_bytes;
    bool truncated;

    struct df_watch *watches;
    struct df_rtimer *timers;
    struct df_proc *procs;
    unsigned n_fds; /* descriptors the runner holds, for the budget */
};

struct df_cmd {
    enum { CMD_START, CMD_KILL, CMD_EVENT, CMD_REFRESH } type;
    df_runner *runner; /* CMD_START */
    char id[DF_UUID_BUF];
    json_t *data; /* CMD_EVENT */
    struct df_cmd *next;
};

struct df_dispatcher {
    df_world *w;
    struct df_runner_config cfg;
    pthread_t thread;
    bool thread_started;
    int epfd, wakefd;

    pthread_mutex_t lock;
    struct df_cmd *head, *tail;
    bool stopping;

    /* runner thread only */
    df_hash *live; /* id → runner from df_dispatcher_start() to its end; under lock */

    df_hash *runners; /* id → runner */
    df_runner *wait_head, *wait_tail;
    unsigned n_active, n_waiting;
    df_runner **urgent; /* runners with output to deliver now */
    size_t n_urgent, cap_urgent;
    struct df_rtimer **heap;
    size_t n_heap, cap_heap;
    uint64_t next_timer_id;
    int64_t next_tick;
    struct df_watch *dead_watches;
    struct df_proc *orphans;          /* processes of closed runners, until reaped */
    struct df_action_class **classes; /* the runner classes' action classes */
    size_t n_classes;
    unsigned fd_budget; /* descriptors runners may hold */
    bool fd_short;      /* a start ran out of descriptors: wait for a runner to close */
    unsigned fds_used;
};

/* ---- dispatcher.c ---------------------------------------------------------- */
/* To the daemon's log, if configured. */
void df_dlog(struct df_dispatcher *d, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The runner's start found no free descriptor: it goes back to the head of the queue. */
void df_runner_defer(df_runner *r);
void df_runner_mark_urgent(df_runner *r);
/* Adds a receiver; returns its index. */
size_t df_runner_add_receiver(df_runner *r, const char *key, const char *plan_id, int step_id);
struct df_receiver *df_runner_receiver(df_runner *r, const char *key);

/* ---- action.c --------------------------------------------------------------- */
/* A new action class for a runner class (the dispatcher frees it). */
struct df_action_class *df_runner_action_class(const struct df_runner_class *cls);
/* The runner class behind an action class made by df_runner_action_class(). */
const struct df_runner_class *df_runner_class_of(const struct df_action_class *ac);
/* The group variants (OutputCollector, BatchRunner), one by one; NULL after the last. */
const struct df_action_class *df_runner_group_classes(size_t i);

/* ---- output.c --------------------------------------------------------------- */
/* Appends a record to rx (text copied, len bytes of valid UTF-8). */
void df_output_record(df_runner *r, struct df_receiver *rx, const char *type, const char *text,
                      size_t len);
/* Raw stream bytes: sanitized, split characters carried over, capped. */
void df_output_stream(df_runner *r, struct df_receiver *rx, const char *type, const char *buf,
                      size_t len);
/* Flushes a stream's carried-over bytes (as U+FFFD) at its end. */
void df_output_stream_end(df_runner *r, struct df_receiver *rx, const char *type);
/* Writes valid UTF-8 for in[0..len) into out (capacity >= 3 * len + 1); *carry gets an
 * incomplete trailing character unless final.  Returns the length written. */
size_t df_utf8_sanitize(const char *in, size_t len, char *out, struct df_utf8_carry *carry,
                        bool final);

/* ---- process.c -------------------------------------------------------------- */
/* Kills (SIGKILL) and forgets a closing runner's processes; they are reaped later. */
void df_proc_orphan_all(df_runner *r);
void df_proc_kill_all(df_runner *r);
void df_proc_free_orphans(struct df_dispatcher *d);

/* ---- recovery.c (doc/recovery.md) --------------------------------------------- */
/* Commit the runner's start, or a process's pid and start time, with a file database (runner
 * thread; 0 with an in-memory one). */
int df_runner_record_start(df_runner *r, df_error *err);
int df_runner_record_process(df_runner *r, pid_t pid, df_error *err);
/* Whether a runner of an earlier process may have started (its start is recorded, or cannot be
 * told). */
bool df_runner_was_started(df_world *w, const char *runner_id);
/* Whether a runner was recorded as started for the step (its id in runner_id): a crash may
 * interrupt the step's first run after its runner started and before the step was stored. */
bool df_runner_started_for_step(df_world *w, const char *plan_id, int step_id,
                                char runner_id[DF_UUID_BUF]);
/* Appends a debug record per recorded process of the runner saying what became of it. */
void df_runner_restart_notes(df_world *w, const char *runner_id, json_t *records, double ts);
/* The world's recovery hook: ends the process groups an earlier run left behind. */
void df_runner_sweep(void *dispatcher);

/* ---- loop.c ------------------------------------------------------------------ */
int df_loop_init(struct df_dispatcher *d, df_error *err);
void df_loop_fini(struct df_dispatcher *d);
void *df_loop_main(void *arg);
void df_loop_wake(struct df_dispatcher *d);
/* Watches and timers of an orphaned process (r NULL). */
int df_loop_watch(struct df_dispatcher *d, df_runner *r, int fd, uint32_t events,
                  df_runner_fd_fn cb, void *arg, struct df_watch **out);
int df_loop_watch_modify(struct df_dispatcher *d, struct df_watch *wt, uint32_t events);
void df_loop_unwatch(struct df_dispatcher *d, struct df_watch *wt);
uint64_t df_loop_after(struct df_dispatcher *d, df_runner *r, double seconds, df_runner_timer_fn cb,
                       void *arg, struct df_rtimer **out);
void df_loop_cancel(struct df_dispatcher *d, struct df_rtimer *t);
void df_dispatcher_run_commands(struct df_dispatcher *d);
void df_dispatcher_tick(struct df_dispatcher *d);
void df_dispatcher_flush(struct df_dispatcher *d);

#endif
