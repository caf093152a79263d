/*
 * Engine internals shared by the files of dynflow-core/engine.
 *
 * Locking: world->plans_lock guards the table of plans held in memory; each
 * plan's lock guards its state, steps, actions' published fields and event
 * inboxes.  Lock order: plans_lock before a plan lock.  Run and finalize code
 * executes with no lock held and touches only its own action's working output
 * (struct df_exec).  The writer thread serializes a plan under its lock.
 */
#ifndef DF_INTERNAL_H
#define DF_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "dynflow/dynflow.h"
#include "store/store.h"
#include "util/hash.h"
#include "util/secrets.h"
#include "util/util.h"

typedef struct df_plan df_plan;
struct df_queue;

/* ---- flows (flow.c) ---------------------------------------------------- */

/* Dynflow's flow tree, kept only to report run_flow as ["S"/"C", …]. */
struct df_flow {
    char type; /* 'A' atom, 'S' sequence, 'C' concurrence */
    int step_id;
    struct df_flow **subs;
    size_t n, cap;
};

struct df_flow *df_flow_new(char type);
struct df_flow *df_flow_atom(int step_id);
void df_flow_free(struct df_flow *f);
/* Dynflow's add_and_resolve: required(step) lists the steps a step needs. */
void df_flow_add_and_resolve(struct df_flow *f, struct df_flow *added,
                             const struct df_ints *(*required)(void *ud, int step_id), void *ud);
/* The root run flow after planning: a single child replaces the root. */
struct df_flow *df_flow_finish_root(struct df_flow *root);
/* New reference: the compact encoding. */
json_t *df_flow_encode(const struct df_flow *f);

/* ---- steps and actions ------------------------------------------------- */

struct df_event_node {
    struct df_event_node *next;
    enum df_event_kind kind;
    json_t *data; /* owned, may be NULL */
};

struct df_inbox {
    struct df_event_node *head, *tail;
};

struct df_step {
    int id;
    int action_id;
    enum df_step_kind kind;
    enum df_step_state state;
    json_t *error; /* Steps::Error hash or NULL */
    int64_t started_at, ended_at;
    double execution_time;
    double progress_done, progress_weight;
    struct df_queue *queue;      /* run and finalize steps */
    struct df_ints children;     /* plan step: plan steps of the actions it planned */
    struct df_ints requires;     /* run step: steps it waits for (references and sequences) */
    struct df_ints ref_requires; /* the subset coming from output references */
    struct df_ints dependents;   /* reverse of requires */
    int waiting;                 /* requires not yet finished */
    bool in_flight;              /* a work item for it is queued or executing */
    bool dirty;
    struct df_inbox inbox;
};

enum df_phase { DF_PHASE_PLAN, DF_PHASE_RUN, DF_PHASE_FINALIZE, DF_PHASE_PRESENT };

/* What one execution of an action's code produces; owned by the executing thread. */
struct df_planned_event {
    struct df_planned_event *next;
    enum df_event_kind kind;
    json_t *data;
    double delay_s;
};

struct df_exec {
    enum df_phase phase;
    json_t *output; /* working copy while run/finalize executes */
    bool suspend;
    json_t *error; /* set by df_action_error */
    bool progress_set;
    double progress;
    struct df_planned_event *events;
    df_action *triggering; /* plan phase of a subscriber */
};

#define DF_ACTION_DIRTY_ROW    0x1u /* whole row */
#define DF_ACTION_DIRTY_INPUT  0x2u
#define DF_ACTION_DIRTY_OUTPUT 0x4u

struct df_action {
    df_plan *plan;
    int id;
    const struct df_action_class *cls; /* NULL: the class is not registered here */
    char *class_name;
    int plan_step_id, run_step_id, finalize_step_id;
    int parent_id;         /* planning parent in this plan, 0 for the entry action */
    char *caller_plan_id;  /* entry action of a sub-plan: the parent plan */
    int caller_action_id;  /* with caller_plan_id: the action in the parent plan */
    json_t *input;         /* with secrets: memory only */
    json_t *input_stored;  /* redacted copy when the input has secrets, else NULL */
    json_t *output;        /* published output */
    json_t *chunks;        /* [{"chunk", "kind", "timestamp", "id" once written}…]: not yet
                              committed (file database), or all of them (in memory) */
    size_t chunks_stored;  /* chunks already written */
    int64_t last_chunk_id; /* the row id of the last chunk written; 0: unknown (loaded) */
    bool chunks_drop;      /* stored chunks must be deleted */
    /* What the last committed batch stored (the writer's; a failed batch goes back to it) */
    size_t chunks_committed; /* of chunks_stored, those committed */
    bool drop_written;       /* the chunks were deleted in a batch not yet committed */
    bool committed;
    bool has_refs; /* input holds output references */
    bool secrets_lost;
    bool stored;
    unsigned dirty;
    struct df_exec x;
};

/* ---- plans ------------------------------------------------------------- */

#define DF_PLAN_DIRTY_ROW  0x1u /* whole row */
#define DF_PLAN_DIRTY_META 0x2u

struct df_delayed {
    int64_t start_at, start_before; /* µs, 0 = unset */
    bool frozen;
    json_t *args;      /* trigger arguments */
    char **blocked_by; /* chain prerequisites */
    size_t n_blocked_by;
    bool dirty, deleted, stored;
    bool committed; /* stored as of the last committed batch */
};

struct df_plan {
    char id[DF_UUID_BUF];
    atomic_int refs;
    pthread_mutex_t lock;
    df_world *w;
    enum df_plan_state state;
    const char *label; /* the entry class's name, or label_copy */
    char *label_copy;  /* loaded plan whose class is not registered */
    int64_t started_at, ended_at;
    bool execution_time_set;
    json_t *history; /* [{"time", "name", "world_id"}…] */
    json_t *run_flow, *finalize_flow;
    struct df_step **steps; /* steps[id - 1] */
    size_t n_steps, cap_steps;
    struct df_action **actions; /* actions[id - 1] */
    size_t n_actions, cap_actions;
    struct df_ints finalize_order;
    char *caller_plan_id; /* sub-plan: parent plan and action */
    int caller_action_id;
    struct df_delayed *delayed;
    int active;            /* run steps in flight or suspended */
    bool finalizing;       /* the finalize work item is queued or running */
    bool finalize_pending; /* the finalize phase has yet to run in this execution */
    unsigned post_hooks;   /* hooks to run once the lock is released */
    bool post_finished;    /* paused or stopped: wake waiters, tell the caller */
    bool in_memory;        /* in world->plans */
    char *rescued;         /* failed step sets already rescued: ",3,5;,7" */
    unsigned dirty;
    bool stored;
    bool committed;               /* stored as of the last committed batch */
    bool queued;                  /* in the writer queue (guarded by the writer lock) */
    struct df_planning *planning; /* only while planning */
};

/* Plan-phase scope: Dynflow's flow stack plus our dependency frames. */
struct df_frame {
    struct df_flow *flow;
    struct df_ints steps; /* run steps added inside this frame */
    struct df_ints prev;  /* sequence: last steps of the previous child */
};

struct df_planning {
    struct df_frame *frames;
    size_t n, cap;
    json_t *error; /* first planning error */
};

df_plan *df_plan_alloc(df_world *w, const char *id);
void df_plan_ref(df_plan *p);
void df_plan_unref(df_plan *p);
struct df_step *df_plan_step(df_plan *p, int id);
struct df_action *df_plan_action_by_id(df_plan *p, int id);
/* Plan result from all steps (§2.2); lock held. */
enum df_result df_plan_result_locked(df_plan *p);
double df_plan_progress_locked(df_plan *p);
void df_plan_info_locked(df_plan *p, struct df_plan_info *out);
void df_plan_history(df_plan *p, const char *name);
/* Sets the state with its side effects (times, history); lock held.  Hooks
 * are run later by df_plan_run_hooks() with no lock. */
void df_plan_set_state(df_plan *p, enum df_plan_state s);
/* After a locked section: queues the plan for writing, runs hooks, wakes
 * waiters and tells a parent plan that this sub-plan finished.  No lock held. */
void df_plan_commit(df_plan *p);
unsigned df_plan_hook_kinds(enum df_plan_state s, enum df_result r);
json_t *df_step_error_new(const char *exception_class, const char *message);
void df_step_set_state(df_plan *p, struct df_step *s, enum df_step_state st);
void df_action_mark(struct df_action *a, unsigned dirty);
void df_plan_mark(df_plan *p, unsigned dirty);

/* ---- world ------------------------------------------------------------- */

struct df_work {
    struct df_work *next;
    enum { DF_WORK_STEP, DF_WORK_FINALIZE, DF_WORK_START_DELAYED } type;
    df_plan *plan; /* a reference */
    int step_id;
    bool has_event;
    enum df_event_kind ev_kind;
    json_t *ev_data; /* owned */
};

struct df_queue {
    char *name;
    unsigned size;
    df_world *w;
    pthread_t *threads;
    unsigned started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct df_work *head, *tail;
    bool stop;
};

struct df_timer {
    int64_t due; /* µs wall clock */
    int64_t id;  /* persisted timers: row id; 0 = memory only */
    enum { DF_TIMER_EVENT, DF_TIMER_DELAYED, DF_TIMER_CLEANER } type;
    char plan_id[DF_UUID_BUF];
    int step_id;
    enum df_event_kind kind;
    json_t *data; /* owned */
};

struct df_timers {
    pthread_t thread;
    bool running, stop;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct df_timer *heap;
    size_t n, cap;
};

struct df_wop; /* writer operation (persist.c) */

struct df_writer {
    pthread_t thread;
    bool running, stop;
    bool releasing; /* the world is being freed: waiters give up while writes fail */
    pthread_mutex_t lock;
    pthread_cond_t cond;      /* wakes the writer */
    pthread_cond_t done_cond; /* a batch committed or failed */
    struct df_wop *head, *tail;
    uint64_t batch_started, batch_done;
    size_t n_ops;  /* queued operations */
    bool trim_due; /* a batch committed since the last trim_when_idle() */
    /* Since a batch failed and until one commits (doc/persistence.md) */
    bool failing;
    df_error failure;      /* why the last batch failed */
    int64_t failing_since; /* µs */
    int64_t logged_at;     /* µs: the last error logged */
    unsigned attempts;     /* failed batches in a row */
};

struct df_world {
    char id[DF_UUID_BUF];
    char *database;
    bool auto_rescue;
    double cleaner_age, cleaner_interval;
    df_hash *classes;     /* names and aliases */
    df_hash *subscribers; /* class name → classes subscribed to it */
    const struct df_middleware **mw;
    size_t n_mw;
    struct df_queue **queues; /* queues[0] is "default" */
    size_t n_queues;
    store *st;
    bool durable; /* file database: commit before side effects */
    pthread_mutex_t plans_lock;
    pthread_cond_t plans_cond; /* a plan paused or stopped */
    df_hash *plans;            /* plans held in memory */
    pthread_mutex_t singleton_lock;
    df_hash *singletons;  /* class name → plan id owning the lock */
    atomic_int n_chained; /* delayed plans waiting for other plans */
    struct df_timers timers;
    struct df_writer writer;
    void (*log)(void *ctx, int level, const char *fmt, va_list ap);
    void *log_ctx;
    atomic_llong next_timer_id;
    bool started;
    struct df_attachment {
        const void *key;
        void *data;
        void (*stop)(void *data);
        void (*release)(void *data);
        void (*recover)(void *data);
    } attached[4];
};

/* To the daemon's log (struct df_world_config), else standard error. */
void df_world_log(df_world *w, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const struct df_action_class *df_world_class(df_world *w, const char *name);
struct df_queue *df_world_queue(df_world *w, const char *name);

/* Finds a plan in memory or loads it from the store (a new reference), or NULL. */
df_plan *df_world_plan(df_world *w, const char *id, bool keep);
/* Adds a plan to the in-memory table (takes a reference). */
void df_world_hold(df_world *w, df_plan *p);
/* Drops a stopped plan from memory once the writer has stored it. */
void df_world_release(df_world *w, df_plan *p);
/* Wakes df_plan_wait() callers; eviction of stopped plans is the writer's. */
void df_world_notify_finished(df_world *w, df_plan *p);
int df_world_singleton_acquire(df_world *w, const char *cls, const char *plan_id);
void df_world_singleton_release(df_world *w, const char *cls, const char *plan_id);
/* Classes subscribed to name (borrowed array). */
const struct df_action_class *const *df_world_subscribers(df_world *w, const char *name, size_t *n);

/* ---- pools (pool.c) ---------------------------------------------------- */
int df_queue_start(struct df_queue *q, df_error *err);
void df_queue_stop(struct df_queue *q);
void df_queue_push(struct df_queue *q, struct df_work *wk);
struct df_queue *df_queue_new(df_world *w, const char *name, unsigned size);
void df_queue_free(struct df_queue *q);
void df_work_free(struct df_work *wk);

/* ---- timers (timers.c) ------------------------------------------------- */
int df_timers_start(df_world *w, df_error *err);
void df_timers_stop(df_world *w);
/* Takes ownership of t->data. */
void df_timers_add(df_world *w, const struct df_timer *t);

/* ---- execution (execute.c) --------------------------------------------- */
void df_execute_work(df_world *w, struct df_work *wk);
/* Starts or restarts executing a planned or paused plan; lock held. */
void df_plan_execute_locked(df_plan *p);
/* Delivers an event to a step; lock held.  data is stolen. */
int df_step_deliver_locked(df_plan *p, struct df_step *s, enum df_event_kind kind, json_t *data,
                           df_error *err);
/* Recovery after a restart: running steps fail, plans follow their rescue strategy. */
void df_plan_recover_locked(df_plan *p);
/* A timer's event: delivered if the plan and step still want it. */
void df_world_fire_event(df_world *w, const struct df_timer *t);

/* ---- planning (plan.c) ------------------------------------------------- */
/* Plans p's entry action; false when planning failed. */
bool df_plan_plan(df_plan *p, const struct df_action_class *cls, json_t *args,
                  const char *caller_plan_id, int caller_action_id, df_error *err);
/* The end of the plan-phase middleware chain. */
int df_action_plan_default(df_action *a, json_t *args);
/* Runs a delayed plan that is due (worker thread). */
void df_plan_start_delayed(df_world *w, df_plan *p);
struct df_action *df_action_new(df_plan *p, const struct df_action_class *cls,
                                const char *class_name, int parent_id);
struct df_step *df_step_new(df_plan *p, enum df_step_kind kind, int action_id);
void df_action_free(struct df_action *a);
void df_step_free(struct df_step *s);
/* Counts a child in the sub-plans helper's total, when the helper is in use.  How it
 * ended arrives as DF_EVENT_SUB_PLAN_FINISHED, also when its planning failed. */
void df_sub_plans_count_child(df_action *a);
/* The plan whose lock this thread holds while calling a class's present(). */
extern __thread df_plan *df_presenting;
/* The plan this thread is planning (with its lock held). */
extern __thread df_plan *df_planning;
/* Middleware chain around a phase. */
int df_mw_execute(df_action *a, enum df_phase phase, json_t *args, const df_event *ev);

/* ---- output chunks (chunks.c, stream.c) --------------------------------- */
/* Drops the chunks a->chunks_committed counts from memory: they are in the store. */
void df_chunks_forget_committed(struct df_action *a);
/* Store rows of a's chunks that memory does not hold are those with an id below this
 * (0: none, memory holds them all).  Plan lock held. */
int64_t df_chunks_store_below(struct df_action *a);
/* The stream whose document this thread builds (with the plan lock held), or NULL. */
extern __thread df_json_stream *df_streaming;
/* Registers placeholder (borrowed) as where a's chunks go in the stream's document. */
void df_json_stream_add_chunks(df_json_stream *s, json_t *placeholder, struct df_action *a);

/* ---- JSON (json.c) ----------------------------------------------------- */
json_t *df_plan_to_json_locked(df_plan *p, unsigned flags);
json_t *df_action_to_json_locked(struct df_action *a, bool with_output);
json_t *df_step_to_json_locked(df_plan *p, struct df_step *s);

/* ---- persistence (persist.c) ------------------------------------------- */
int df_writer_start(df_world *w, df_error *err);
/* Waiters that wait through failures give up (-ECANCELED) while writes fail. */
void df_writer_release(df_world *w);
void df_writer_stop(df_world *w);
/* Queues the plan for writing (its dirty flags say what). */
void df_writer_plan(df_world *w, df_plan *p);
void df_writer_timer_put(df_world *w, const struct df_timer *t);
void df_writer_timer_delete(df_world *w, int64_t id);
int df_writer_clean(df_world *w, int64_t ended_before, uint64_t *removed, df_error *err);
/* Triggering waits while the writer is this far behind, bounding memory. */
#define DF_WRITER_BACKLOG 8192
void df_writer_throttle(df_world *w);
/* Waits until everything queued so far is committed.  A failed batch is retried
 * (doc/persistence.md): with through_failures the wait goes on until a batch commits, else it
 * ends at once with -EIO and err saying why.  -ECANCELED: df_writer_release() while failing. */
int df_writer_sync(df_world *w, bool through_failures, df_error *err);
/* 0, or -EIO with the failure of the last batch. */
int df_writer_health(df_world *w, df_error *err);
/* Loads a plan from the store (a new reference), or NULL. */
df_plan *df_persist_load(df_world *w, const char *id);
/* Reloads what a previous process left: plans, delayed plans, timers. */
int df_persist_recover(df_world *w, df_error *err);

#endif
