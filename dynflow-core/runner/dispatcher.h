/*
 * The runner dispatcher (reference/protocol.md §8.4): the executor side of
 * runners.  One per world, created by the first df_runner_register().
 */
#ifndef DF_RUNNER_DISPATCHER_H
#define DF_RUNNER_DISPATCHER_H

#include "dynflow/runner.h"

struct df_runner_config {
    double refresh_interval; /* seconds between deliveries of output; 0: 1 */
    unsigned max_concurrent; /* runners running at once; 0: 1000 */
    uint64_t output_cap;     /* bytes of output per task; 0: 64 MiB */
    /* Optional: the daemon's log. */
    void (*log)(void *ctx, int level, const char *fmt, va_list ap);
    void *log_ctx;
};

/* Sets the dispatcher's configuration (creating it); before the first runner starts
 * (-EBUSY after). */
int df_runner_configure(df_world *w, const struct df_runner_config *cfg, df_error *err);

/* Figures for tests and benchmarks. */
struct df_runner_stats {
    unsigned active, waiting;
    unsigned fd_budget, fds_used;
};
int df_runner_stats(df_world *w, struct df_runner_stats *out);

/* The dispatcher's commands, from any thread; unknown runner ids are ignored. */
typedef struct df_dispatcher df_dispatcher;
df_dispatcher *df_dispatcher_of(df_world *w);
/* Starts a runner for a suspended action; input copied.  targets (borrowed,
 * may be NULL) makes a group runner: {key: {"execution_plan_id", "run_step_id"}}. */
int df_dispatcher_start(df_dispatcher *d, const struct df_runner_class *cls, const char *id,
                        const json_t *input, const char *plan_id, int step_id,
                        const json_t *targets);
/* Whether a runner of that id was started in this process and has not ended (any thread). */
bool df_dispatcher_has(df_dispatcher *d, const char *id);
void df_dispatcher_kill(df_dispatcher *d, const char *id);
void df_dispatcher_event(df_dispatcher *d, const char *id, const json_t *data);
void df_dispatcher_refresh(df_dispatcher *d, const char *id);
/* The registered runner class of that action name (or alias), or NULL. */
const struct df_runner_class *df_dispatcher_runner_class(df_dispatcher *d, const char *name);

/* The actions of a group run (§6.5): one collector per host, one runner for all. */
#define DF_OUTPUT_COLLECTOR_CLASS "Proxy::Dynflow::Action::OutputCollector"
#define DF_BATCH_RUNNER_CLASS     "Proxy::Dynflow::Action::BatchRunner"

#endif
