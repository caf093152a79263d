/*
 * SQLite persistence of the engine: one schema, prepared statements, no
 * read-before-write.  The engine's single writer thread calls the write
 * functions between store_write_begin() and store_write_commit(); readers may
 * call the read functions from any thread.
 *
 * A file database uses WAL and two connections (one writer, one reader); an
 * in-memory database has one connection shared under a lock.
 *
 * Times are integer microseconds since the epoch (0 = NULL).  JSON columns
 * hold compact JSON text.  All strings handed to callbacks are borrowed for the
 * duration of the callback.
 */
#ifndef DF_STORE_H
#define DF_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dynflow/dynflow.h"

typedef struct store store;

struct store_plan_row {
    const char *uuid;
    const char *state;
    const char *result;
    const char *label;
    int64_t started_at, ended_at; /* µs, 0 = NULL */
    double real_time;
    double execution_time;
    bool execution_time_null;
    int root_plan_step_id;
    const char *run_flow;          /* JSON text */
    const char *finalize_flow;     /* JSON text */
    const char *execution_history; /* JSON text */
    const char *caller_plan_uuid;  /* NULL unless a sub-plan */
    int caller_action_id;          /* 0 = NULL */
    const char *data;              /* JSON text: engine extras, may be NULL */
};

struct store_step_row {
    const char *plan_uuid;
    int id;
    int action_id;
    const char *state;
    const char *kind; /* "plan", "run", "finalize" */
    const char *action_class;
    const char *queue; /* NULL for plan steps */
    int64_t started_at, ended_at;
    double real_time, execution_time;
    double progress_done, progress_weight;
    const char *error;    /* JSON text or NULL */
    const char *children; /* JSON text or NULL (plan steps) */
    const char *requires; /* JSON text or NULL (run steps: DAG edges) */
};

struct store_action_row {
    const char *plan_uuid;
    int id;
    const char *action_class;
    int plan_step_id, run_step_id, finalize_step_id; /* 0 = NULL */
    const char *caller_plan_uuid;                    /* NULL */
    int caller_action_id;                            /* 0 = NULL */
    const char *input;                               /* JSON text, secrets already redacted */
    const char *output;                              /* JSON text */
    const char *data;                                /* JSON text: engine extras, may be NULL */
};

struct store_chunk_row {
    const char *plan_uuid;
    int action_id;
    const char *kind; /* may be NULL */
    int64_t timestamp;
    const char *chunk; /* JSON text */
    int64_t id;        /* the row id (store_each_chunk); increases with every chunk added */
};

struct store_delayed_row {
    const char *plan_uuid;
    int64_t start_at, start_before; /* 0 = NULL */
    bool frozen;
    const char *args; /* JSON text: the serialized trigger arguments */
};

struct store_timer_row {
    int64_t id;
    const char *plan_uuid;
    int step_id;
    int64_t due_at;
    const char *event; /* JSON text: {"kind": …, "data": …} */
};

/* Runner facts (doc/recovery.md): committed before the runner, or its process, starts. */
struct store_runner_start_row {
    const char *runner_id;
    const char *plan_uuid;
    int step_id; /* the step the runner reports to */
    int64_t started_at;
};

struct store_runner_process_row {
    const char *runner_id;
    int64_t pid;         /* also its process group and session */
    int64_t start_ticks; /* field 22 of /proc/<pid>/stat: tells a reused pid */
    const char *boot_id; /* /proc/sys/kernel/random/boot_id when it started */
    const char *outcome; /* NULL until a restart found out what became of it */
};

/* Opens (and creates or migrates) the database; path NULL or "" = in-memory.
 * NULL on failure with err naming the file and SQLite's reason. */
store *store_open(const char *path, df_error *err);
void store_close(store *st);
bool store_is_memory(const store *st);

/* ---- writer thread only ---------------------------------------------- */
int store_write_begin(store *st, df_error *err);
int store_write_commit(store *st, df_error *err);
int store_write_rollback(store *st);

int store_put_plan(store *st, const struct store_plan_row *r, df_error *err);
/* UPDATE of state, result, started_at, ended_at, real_time, execution_time,
 * execution_history, data only. */
int store_update_plan(store *st, const struct store_plan_row *r, df_error *err);
int store_put_step(store *st, const struct store_step_row *r, df_error *err);
int store_put_action(store *st, const struct store_action_row *r, df_error *err);
/* UPDATE of output (and input when r->input is not NULL) only. */
int store_update_action(store *st, const struct store_action_row *r, df_error *err);
/* *id (may be NULL) gets the new row's id. */
int store_add_chunk(store *st, const struct store_chunk_row *r, int64_t *id, df_error *err);
int store_drop_chunks(store *st, const char *plan_uuid, int action_id, df_error *err);
int store_put_delayed(store *st, const struct store_delayed_row *r, df_error *err);
int store_delete_delayed(store *st, const char *plan_uuid, df_error *err);
int store_add_dependency(store *st, const char *plan_uuid, const char *blocked_by, df_error *err);
int store_put_timer(store *st, const struct store_timer_row *r, df_error *err);
int store_delete_timer(store *st, int64_t id, df_error *err);
/* Deletes the plans (and their steps, actions, chunks, delayed rows, timers,
 * dependencies) that are stopped and ended at or before ended_before. */
int store_delete_old_plans(store *st, int64_t ended_before, uint64_t *removed, df_error *err);

/* Runner facts.  Besides the writer thread, the runner thread writes these in
 * transactions of its own (the writer lock serializes them). */
int store_put_runner_start(store *st, const struct store_runner_start_row *r, df_error *err);
int store_put_runner_process(store *st, const struct store_runner_process_row *r, df_error *err);
/* Sets r->outcome of the row (r->runner_id, r->pid). */
int store_set_runner_process_outcome(store *st, const struct store_runner_process_row *r,
                                     df_error *err);
/* Deletes the facts of runners whose step is neither suspended nor running. */
int store_delete_ended_runners(store *st, df_error *err);
/* The world's store when it is a file (engine/world.c), else NULL: an in-memory database
 * survives no restart, so there are no facts to keep. */
store *df_world_durable_store(df_world *w);

/* ---- readers ---------------------------------------------------------- */
struct store_plan_loader {
    void *ud;
    int (*plan)(void *ud, const struct store_plan_row *r);
    int (*step)(void *ud, const struct store_step_row *r);     /* by id */
    int (*action)(void *ud, const struct store_action_row *r); /* by id */
    int (*chunk)(void *ud, const struct store_chunk_row *r);   /* by insertion order */
};
/* Loads one plan; -ENOENT if there is none.  A callback's non-zero return
 * stops the load and is returned. */
int store_load_plan(store *st, const char *uuid, const struct store_plan_loader *ld, df_error *err);
/* Calls fn for each plan uuid whose state is one of states (NULL-terminated). */
int store_each_plan_in_states(store *st, const char *const *states,
                              int (*fn)(void *ud, const char *uuid), void *ud, df_error *err);
int store_count_plans(store *st, const char *state, uint64_t *count, df_error *err);
/* state/result of one plan; -ENOENT if none.  Buffers are ≥ 16 bytes. */
int store_plan_status(store *st, const char *uuid, char state[16], char result[16], df_error *err);
/* Newest first (started_at desc, NULLs last), state NULL = all, limit 0 = all. */
int store_list_plans(store *st, const char *state, size_t offset, size_t limit,
                     int (*fn)(void *ud, const char *uuid), void *ud, df_error *err);
/* Children of (caller plan, caller action): fn gets each child's uuid, state, result. */
int store_each_child(store *st, const char *caller_uuid, int caller_action_id,
                     int (*fn)(void *ud, const char *uuid, const char *state, const char *result),
                     void *ud, df_error *err);
/* uuid, state and result of the plans among uuids_json (a JSON array of ids), in one query. */
int store_each_status(store *st, const char *uuids_json,
                      int (*fn)(void *ud, const char *uuid, const char *state, const char *result),
                      void *ud, df_error *err);
/* The output chunks of one action with after < id < before, in id order, at most limit of them;
 * a non-zero return of fn stops the read and is returned.  Sets r->id, plan_uuid, action_id,
 * chunk only. */
int store_each_chunk(store *st, const char *plan_uuid, int action_id, int64_t after, int64_t before,
                     unsigned limit, int (*fn)(void *ud, const struct store_chunk_row *r), void *ud,
                     df_error *err);
/* The largest id among one action's output chunks (0 if none). */
int store_max_chunk_id(store *st, const char *plan_uuid, int action_id, int64_t *id, df_error *err);
int store_each_delayed(store *st, int (*fn)(void *ud, const struct store_delayed_row *r), void *ud,
                       df_error *err);
/* Plan ids plan_uuid waits for (chain prerequisites). */
int store_each_dependency(store *st, const char *plan_uuid,
                          int (*fn)(void *ud, const char *blocked_by), void *ud, df_error *err);
int store_each_timer(store *st, int (*fn)(void *ud, const struct store_timer_row *r), void *ud,
                     df_error *err);
/* Largest timer id in use (0 if none). */
int store_max_timer_id(store *st, int64_t *id, df_error *err);
/* Gives the page caches' unused memory back (a file database; in memory the pages are the
 * data).  Takes each connection's lock. */
void store_release_memory(store *st);
/* 0 when the start of the runner was recorded, -ENOENT when not. */
int store_runner_started(store *st, const char *runner_id, df_error *err);
/* The runner last recorded as started for a step; -ENOENT when none. */
int store_runner_of_step(store *st, const char *plan_uuid, int step_id, char runner_id[DF_UUID_BUF],
                         df_error *err);
/* The recorded processes of a runner (runner_id NULL: of every runner). */
int store_each_runner_process(store *st, const char *runner_id,
                              int (*fn)(void *ud, const struct store_runner_process_row *r),
                              void *ud, df_error *err);

#endif
