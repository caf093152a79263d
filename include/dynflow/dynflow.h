/*
 * libdynflow-core: the Dynflow workflow engine.
 *
 * A world owns action classes, executor queues, the persistence layer and the
 * timers.  Plans are triggered from an action class; planning runs in the
 * caller's thread, run and finalize steps run on the world's worker pools.
 *
 * Ownership follows jansson: "borrowed" values are valid for the call only,
 * "new reference" values must be json_decref()ed by the caller, and functions
 * documented as "steals" take over the caller's reference even on failure.
 *
 * Functions return 0 or a negative errno; failures describe themselves in a
 * caller-owned struct df_error.
 */
#ifndef DYNFLOW_H
#define DYNFLOW_H

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DF_UUID_BUF   37 /* 36 characters and the NUL */
#define DF_ERROR_TEXT 512

typedef struct df_world df_world;
typedef struct df_action df_action;
typedef struct df_mw_call df_mw_call;

typedef struct df_error {
    char text[DF_ERROR_TEXT];
} df_error;

enum df_plan_state {
    DF_PLAN_PENDING,
    DF_PLAN_SCHEDULED,
    DF_PLAN_PLANNING,
    DF_PLAN_PLANNED,
    DF_PLAN_RUNNING,
    DF_PLAN_PAUSED,
    DF_PLAN_STOPPED,
};
#define DF_PLAN_STATE_COUNT 7

enum df_result {
    DF_RESULT_PENDING,
    DF_RESULT_SUCCESS,
    DF_RESULT_WARNING,
    DF_RESULT_ERROR,
    DF_RESULT_CANCELLED,
};

enum df_step_state {
    DF_STEP_SCHEDULING,
    DF_STEP_PENDING,
    DF_STEP_RUNNING,
    DF_STEP_SUCCESS,
    DF_STEP_SUSPENDED,
    DF_STEP_SKIPPING,
    DF_STEP_SKIPPED,
    DF_STEP_ERROR,
    DF_STEP_CANCELLED,
};

enum df_step_kind {
    DF_STEP_PLAN_KIND,
    DF_STEP_RUN_KIND,
    DF_STEP_FINALIZE_KIND,
};

/* Rescue strategy an action suggests for itself (reference/engine.md §2.9). */
enum df_rescue {
    DF_RESCUE_DEFAULT, /* Pause, as Dynflow's rescue_strategy_for_self */
    DF_RESCUE_PAUSE,
    DF_RESCUE_SKIP,
    DF_RESCUE_FAIL,
};

const char *df_plan_state_name(enum df_plan_state s);
const char *df_result_name(enum df_result r);
const char *df_step_state_name(enum df_step_state s);
/* Returns the state for a name, or -1. */
int df_plan_state_parse(const char *name);

/* Events delivered to a suspended run step. */
enum df_event_kind {
    DF_EVENT_USER,              /* payload defined by the action */
    DF_EVENT_CANCEL,            /* Dynflow::Action::Cancellable::Cancel */
    DF_EVENT_ABORT,             /* Dynflow::Action::Cancellable::Abort (forced cancel) */
    DF_EVENT_SKIP,              /* Dynflow::Action::Skip, delivered when resuming a skipping step */
    DF_EVENT_POLL,              /* Dynflow::Action::Polling::Poll */
    DF_EVENT_TIMEOUT,           /* Dynflow::Action::Timeouts::Timeout */
    DF_EVENT_SUB_PLAN_FINISHED, /* data: {"execution_plan_id": …, "success": bool} */
    DF_EVENT_RUNNER_UPDATE,     /* Runner::Update: {"records": […], "exit_status"?: …} */
};

typedef struct df_event {
    enum df_event_kind kind;
    json_t *data; /* borrowed; may be NULL */
} df_event;

const char *df_event_kind_name(enum df_event_kind k);
/* What a JSON value is, for messages naming a field of the wrong type: "an object", "an array",
 * "a string", "a number", "true or false", "null", or "nothing" for NULL (a missing field). */
const char *df_json_type_name(const json_t *v);

/* ---------------------------------------------------------------------- */
/* Action classes                                                          */

/* Plan hooks (reference/engine.md §3.6): one bit per plan state, plus success/failure. */
#define DF_HOOK_ON(state) (1u << (state))
#define DF_HOOK_SUCCESS   (1u << 7)
#define DF_HOOK_FAILURE   (1u << 8)
#define DF_HOOK_ALL       0x1ffu

struct df_plan_info {
    char id[DF_UUID_BUF];
    enum df_plan_state state;
    enum df_result result;
    double progress;   /* 0..1 */
    const char *label; /* borrowed: the entry action's class name, static storage */
};

struct df_hook {
    unsigned on; /* DF_HOOK_* mask; 0 ends a table */
    /* Runs after the plan entered a state, outside any engine lock; kind is the
     * single DF_HOOK_* bit that fired.  Errors are the hook's own business. */
    void (*fn)(df_action *a, unsigned kind, const struct df_plan_info *plan);
};

#define DF_ACTION_CANCELLABLE  0x1u /* receives DF_EVENT_CANCEL/ABORT */
#define DF_ACTION_SINGLETON    0x2u /* one active plan with this action at a time */
#define DF_ACTION_HANDLES_SKIP 0x4u /* run gets DF_EVENT_SKIP when a skipped step resumes */
#define DF_ACTION_POLLED       0x8u /* WithExternalPolling: a status request sends DF_EVENT_POLL */
/* A run step a crash interrupted runs again (without an event) instead of ending "Abnormal
 * termination": running it twice is harmless (a callback to Foreman). */
#define DF_ACTION_RERUNNABLE 0x10u

struct df_middleware;

struct df_action_class {
    const char *name;
    const char *const *aliases; /* NULL-terminated, may be NULL */

    /* Plan phase.  NULL means df_plan_self(a, args).  args is borrowed. */
    int (*plan)(df_action *a, json_t *args);
    /* Run phase; its presence gives the action a run step.  ev is NULL on the
     * first run, on resume and after a restart.  Return 0 (success, or
     * suspended when df_action_suspend() was called) or -1 after
     * df_action_error(). */
    int (*run)(df_action *a, const df_event *ev);
    /* Finalize phase; its presence gives the action a finalize step. */
    int (*finalize)(df_action *a);
    /* Optional: adjust the output shown in status JSON (Dynflow's Present
     * phase).  output is a private copy the function may change. */
    void (*present)(df_action *a, json_t *output);

    enum df_rescue rescue;
    const char *queue;            /* NULL: the planning parent's queue, else "default" */
    unsigned flags;               /* DF_ACTION_* */
    const char *const *subscribe; /* NULL-terminated class names this action subscribes to */
    const struct df_hook *hooks;  /* { 0 }-terminated, may be NULL */
    const struct df_middleware *const *middleware; /* NULL-terminated, may be NULL */
    void *data;                                    /* free for the class's own use */
};

/* ---------------------------------------------------------------------- */
/* Middleware (reference/engine.md §3.7): each function calls df_mw_pass() */
/* to continue the chain, or returns without calling it to cut it short.   */

struct df_middleware {
    const char *name;
    int (*plan)(df_mw_call *call);
    int (*run)(df_mw_call *call);
    int (*finalize)(df_mw_call *call);
    void *data;
};

int df_mw_pass(df_mw_call *call);
df_action *df_mw_action(const df_mw_call *call);
json_t *df_mw_args(const df_mw_call *call);          /* plan phase: borrowed args */
const df_event *df_mw_event(const df_mw_call *call); /* run phase: may be NULL */
void *df_mw_data(const df_mw_call *call);            /* the middleware's data */

/* ---------------------------------------------------------------------- */
/* World                                                                   */

/* Levels of a log message (syslog's numbers, as the host's). */
enum df_log_level { DF_LOG_ERROR = 3, DF_LOG_WARNING = 4, DF_LOG_INFO = 6, DF_LOG_DEBUG = 7 };

struct df_world_config {
    const char *database;    /* NULL or "": in-memory SQLite; else a file (WAL) */
    unsigned pool_size;      /* workers of the default queue; 0: 5 */
    bool no_auto_rescue;     /* Dynflow's auto_rescue is on unless this is set */
    double cleaner_age;      /* seconds; 0: no plan cleaner */
    double cleaner_interval; /* seconds between cleaner runs; 0: min(age, 60) */
    const char *world_id;    /* NULL: a new UUID */
    /* Optional: the daemon's log, for what the engine has to report on its own (a database
     * that cannot be written, and that it works again); NULL: standard error. */
    void (*log)(void *ctx, int level, const char *fmt, va_list ap);
    void *log_ctx;
};

/* Creates a world; threads start in df_world_start(). NULL on failure. */
df_world *df_world_new(const struct df_world_config *cfg, df_error *err);
/* Adds a named queue with its own pool; before df_world_start(). */
int df_world_add_queue(df_world *w, const char *name, unsigned pool_size, df_error *err);
/* Registers an action class (borrowed: it must outlive the world). */
int df_world_register(df_world *w, const struct df_action_class *cls, df_error *err);
/* Appends world-wide middleware (borrowed), run outside class middleware. */
int df_world_use(df_world *w, const struct df_middleware *mw, df_error *err);
/* Opens the database, recovers what a previous process left, starts threads. */
int df_world_start(df_world *w, df_error *err);
/* Stops threads (busy workers finish their step; suspended plans stay
 * resumable in a file database), flushes, frees everything. */
void df_world_free(df_world *w);
const char *df_world_id(const df_world *w);
/* Keeps data for a layer above the engine (the runner dispatcher) under key.
 * df_world_free() calls stop(data) before it stops the worker pools and
 * release(data) after.  -EEXIST when key is taken. */
int df_world_attach(df_world *w, const void *key, void *data, void (*stop)(void *data),
                    void (*release)(void *data));
/* The data attached under key, or NULL. */
void *df_world_attachment(df_world *w, const void *key);
/* df_world_start() calls recover(data) of the data attached under key once the database is
 * open and before plans are recovered (the runner dispatcher ends what an earlier process left
 * running there).  -ENOENT when nothing is attached under key. */
int df_world_on_recovery(df_world *w, const void *key, void (*recover)(void *data));
/* Blocks until everything changed so far is committed to the database (while writes fail,
 * until they work again or the world is being freed). */
void df_world_sync(df_world *w);
/* Blocks until everything changed so far is committed; -EIO with err naming the failure as soon
 * as a write fails (the changes stay in memory and are retried: doc/persistence.md). */
int df_world_commit(df_world *w, df_error *err);
/* 0 while the database can be written; -EIO with err saying why (the database and SQLite's
 * reason) since a write failed and until one works again.  Nothing new should be created
 * meanwhile: the engine keeps every change in memory and retries, but starts no step whose
 * start is not committed (doc/persistence.md). */
int df_world_writable(df_world *w, df_error *err);

/* ---------------------------------------------------------------------- */
/* Triggering                                                              */

struct df_trigger_opts {
    const char *plan_id; /* NULL: a new UUID */
    /* Delayed plans (reference/engine.md §3.9).  0 = unset. */
    bool delayed;
    double start_at;     /* epoch seconds */
    double start_before; /* epoch seconds; missed → stopped/error */
    bool frozen;
    const char *const *blocked_by; /* chain: NULL-terminated plan ids to wait for */
};

/* Plans class_name with args (steals) and executes it.  On return 0, id holds
 * the plan id; *planned is false when planning failed (the plan exists,
 * stopped/error, and err says why).  Negative: nothing was created
 * (-ENOENT unknown class, -EEXIST duplicate id, -EINVAL bad id). */
int df_trigger(df_world *w, const char *class_name, json_t *args,
               const struct df_trigger_opts *opts, char id[DF_UUID_BUF], bool *planned,
               df_error *err);

/* Unfreezes a frozen delayed plan. */
int df_plan_unfreeze(df_world *w, const char *plan_id, df_error *err);

/* ---------------------------------------------------------------------- */
/* Inspecting                                                              */

#define DF_JSON_ACTIONS 0x1u /* add "actions": [Action#to_hash…] */
#define DF_JSON_STEPS   0x2u /* add "steps": [Step#to_hash…] */

/* New reference: ExecutionPlan#to_hash (+ actions/steps); NULL if unknown. */
json_t *df_plan_json(df_world *w, const char *plan_id, unsigned flags);
/* -ENOENT if unknown. */
int df_plan_get_info(df_world *w, const char *plan_id, struct df_plan_info *out);
/* Waits until the plan is paused or stopped (or timeout_s passes: -ETIMEDOUT); out may be NULL. */
int df_plan_wait(df_world *w, const char *plan_id, double timeout_s, struct df_plan_info *out);
/* Whether an action class (or alias) of that name is registered. */
bool df_world_has_class(df_world *w, const char *name);
/* Number of plans in a state (state < 0: all plans). */
int df_plan_count(df_world *w, int state, uint64_t *count, df_error *err);
/* ExecutionPlan#to_hash (as df_plan_json) written piece by piece: the output chunks that
 * actions present (df_action_present_chunks) are read from the store in batches while the
 * document is read, so a reply of any size needs a bounded amount of memory (doc/output.md). */
typedef struct df_json_stream df_json_stream;
/* NULL if the plan is unknown. */
df_json_stream *df_plan_stream(df_world *w, const char *plan_id, unsigned flags);
/* {"<id>": ExecutionPlan#to_hash, …} for the ids that exist. */
df_json_stream *df_plans_stream(df_world *w, const char *const *ids, size_t n, unsigned flags);
/* Copies up to max bytes of the document into buf: the count, 0 at its end, or a negative
 * errno (the store failed; err says why) after which the document is incomplete. */
long df_json_stream_read(df_json_stream *s, char *buf, size_t max, df_error *err);
void df_json_stream_free(df_json_stream *s);
/* New reference: {"<id>": {"state": …, "result": …}} for the ids that exist. */
json_t *df_plan_statuses(df_world *w, const char *const *ids, size_t n);
/* New reference: array of plan ids, optionally only those in a state (< 0: all),
 * newest first, at most limit (0: no limit). */
json_t *df_plan_list(df_world *w, int state, size_t offset, size_t limit);

/* ---------------------------------------------------------------------- */
/* Controlling                                                             */

/* Cancels a scheduled plan outright, or sends Cancel (Abort with force) to
 * each running or suspended step of a cancellable action.  *count = steps
 * told (1 for a scheduled plan). */
int df_plan_cancel(df_world *w, const char *plan_id, bool force, unsigned *count, df_error *err);
/* Resumes a paused plan: failed steps run again, then the finalize phase. */
int df_plan_resume(df_world *w, const char *plan_id, df_error *err);
/* Skips a failed step, its finalize step and the steps using its output. */
int df_plan_skip_step(df_world *w, const char *plan_id, int step_id, df_error *err);
/* Sends an event to a run step, after delay_s seconds (0: now).  The event
 * data is copied.  Events to a running step wait until it has finished. */
int df_world_event(df_world *w, const char *plan_id, int step_id, const df_event *ev,
                   double delay_s, df_error *err);
/* WithExternalPolling: sends DF_EVENT_POLL to each suspended step of a
 * DF_ACTION_POLLED action of a plan in memory that has no event waiting. */
void df_plan_poll(df_world *w, const char *plan_id);
/* Deletes stopped plans that ended more than age seconds ago. */
int df_world_clean(df_world *w, double age, uint64_t *removed, df_error *err);

/* ---------------------------------------------------------------------- */
/* Inside an action: plan phase                                            */

/* Gives the action its input (steals) and its run/finalize steps. */
int df_plan_self(df_action *a, json_t *input);
/* Plans another action now; args borrowed.  NULL on failure (the error is
 * recorded; return -1 from plan). */
df_action *df_plan_action(df_action *a, const char *class_name, json_t *args);
/* Explicit flow blocks; every begin needs its end. */
void df_sequence_begin(df_action *a);
void df_sequence_end(df_action *a);
void df_concurrence_begin(df_action *a);
void df_concurrence_end(df_action *a);
/* New reference: a reference to planned's future output[key1][key2]…
 * (NULL-terminated keys).  Putting it in an input makes a dependency. */
json_t *df_output_ref(df_action *planned, ...) __attribute__((sentinel));

/* ---------------------------------------------------------------------- */
/* Inside an action: any phase                                             */

/* Borrowed.  The input includes secrets; never log it. */
json_t *df_action_input(df_action *a);
/* Borrowed, mutable in run and finalize. */
json_t *df_action_output(df_action *a);
/* Borrowed: input["secrets"], or NULL.  When the secrets were lost because the
 * process restarted, returns NULL and sets the step error; return -1. */
json_t *df_action_secrets(df_action *a);
int df_action_id(const df_action *a);
int df_action_run_step_id(const df_action *a);
const char *df_action_plan_id(const df_action *a);
const char *df_action_class_name(const df_action *a);
df_world *df_action_world(const df_action *a);
const struct df_action_class *df_action_class(const df_action *a);
/* The action whose planning planned this one through a subscription, or NULL. */
df_action *df_action_triggering(const df_action *a);

/* Adds an entry to the plan's execution history (e.g. a failed delivery). */
void df_action_history(df_action *a, const char *name);
/* Records the step error (exception class RuntimeError) and returns -1. */
int df_action_error(df_action *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---------------------------------------------------------------------- */
/* Inside an action: run phase                                             */

/* After run returns, the step is suspended and its worker freed. */
void df_action_suspend(df_action *a);
/* Sends ev (data copied) to this step after delay_s (0: once this execution
 * has finished). */
int df_action_plan_event(df_action *a, const df_event *ev, double delay_s);
/* Timeouts::schedule_timeout: a DF_EVENT_TIMEOUT after seconds. */
int df_action_schedule_timeout(df_action *a, double seconds);
/* Appends an output chunk (steals chunk); kind may be NULL; ts 0: now. */
int df_action_output_chunk(df_action *a, json_t *chunk, const char *kind, double ts);
/* New reference: [{"chunk": …, "kind": …, "timestamp": …}, …], read back from the store
 * (a file database keeps only the chunks not yet committed in memory: doc/output.md). */
json_t *df_action_stored_chunks(df_action *a);
void df_action_drop_chunks(df_action *a);
/* Present phase: output[key] = the concatenation of the action's array chunks.  In a document
 * built by df_plan_stream() it is a placeholder the stream fills from the store as it is read. */
void df_action_present_chunks(df_action *a, json_t *output, const char *key);
/* Progress of this step, 0..1. */
void df_action_set_progress(df_action *a, double done);

/* Triggers a sub-plan whose caller is this action (args steals).  Returns 0
 * with child_id set; *planned false when its planning failed. */
int df_action_trigger_child(df_action *a, const char *class_name, json_t *args, const char *plan_id,
                            char child_id[DF_UUID_BUF], bool *planned);

/* Sub-plans helper (Dynflow's WithSubPlans): call from run.  create triggers
 * the children with df_action_trigger_child(); the helper keeps
 * total/failed/pending/success counts in the output, waits without a worker,
 * cancels children on Cancel, recounts after a restart, and fails with
 * "A sub task failed" when a child did not succeed. */
int df_sub_plans_run(df_action *a, const df_event *ev, int (*create)(df_action *a));
/* The same, but once every child ended on_finish runs instead of the check for failed
 * children, which the action makes later (e.g. in finalize) with df_sub_plans_check(). */
int df_sub_plans_run_collect(df_action *a, const df_event *ev, int (*create)(df_action *a),
                             int (*on_finish)(df_action *a));
/* "A sub task failed" (-1) when a child did not succeed, else 0. */
int df_sub_plans_check(df_action *a);

/* Polling helper (Dynflow's Action::Polling, §3.2). */
struct df_polling_ops {
    int (*invoke)(df_action *a); /* start the external task; fill output */
    int (*poll)(df_action *a);   /* refresh output; -1 = failed attempt */
    bool (*done)(df_action *a);
    int (*on_finish)(df_action *a); /* optional */
};
int df_polling_run(df_action *a, const df_event *ev, const struct df_polling_ops *ops);
/* The interval before poll number attempts (0-based): 0.5 s ×5, 1 s ×5, … 16 s. */
double df_polling_interval(unsigned attempts);

#endif
