/*
 * Runners (reference/protocol.md §8): something started on behalf of a
 * suspended action that streams output and ends with an exit status.
 *
 * A plugin describes a runner action with struct df_runner_class; the core
 * turns it into an action class whose run step starts the runner and stays
 * suspended until the runner publishes an exit status (§8.5).  Every runner
 * callback runs on the one runner thread, which watches the runners'
 * descriptors with epoll and keeps their timers, so a runner must never
 * block: it registers its descriptors with df_runner_watch() and is called
 * back when they are ready.
 *
 * Output goes into a per-runner buffer that is delivered to the action once
 * per refresh interval, at once when the runner ends, and when a status
 * request polls it.
 */
#ifndef DYNFLOW_RUNNER_H
#define DYNFLOW_RUNNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "dynflow/dynflow.h"

typedef struct df_runner df_runner;
typedef struct df_proc df_proc;

/* Exit status "EXCEPTION": the runner could not tell how the job ended. */
#define DF_EXIT_EXCEPTION INT32_MIN

struct df_runner_ops {
    /* Starts the job: 0, or -1 after a fatal df_runner_exception(). */
    int (*start)(df_runner *r);
    /* Optional: called once per refresh interval while the runner lives. */
    void (*refresh)(df_runner *r);
    /* Optional: cancel.  NULL kills the runner's processes. */
    void (*kill)(df_runner *r);
    /* Optional: an update/done request's body for this runner (borrowed). */
    void (*external_event)(df_runner *r, const json_t *data);
    /* Optional: frees the plugin's state; the runner's processes and watches are gone. */
    void (*close)(df_runner *r);
};

struct df_runner_class {
    const char *name;           /* the action class */
    const char *const *aliases; /* NULL-terminated, may be NULL: names Foreman sends */
    const struct df_runner_ops *ops;
    /* Optional: checks an action input: at launch, for every task before any is created (a
     * bad one is a 422 with err, which should name the field: "'kind' must be a string …"),
     * and again while the task is planned (a bad input fails the plan instead of a runner).
     * A group runner's class gets each host's action_input.  Called from any thread,
     * concurrently: it must only read.  0 or -1 with err filled. */
    int (*check_input)(const struct df_runner_class *cls, const json_t *input, df_error *err);
    void *data; /* the plugin's, see df_runner_class_data() */
};

/* Registers the action class of a runner class (kept by pointer); before df_world_start(). */
int df_runner_register(df_world *w, const struct df_runner_class *cls, df_error *err);

/* ---- inside runner callbacks (the runner thread) ---------------------------------- */

/* Borrowed: the action's input, secrets included (never log or publish it). */
const json_t *df_runner_input(const df_runner *r);
/* Borrowed: the input's "secrets" object, or NULL. */
const json_t *df_runner_secrets(const df_runner *r);
const char *df_runner_id(const df_runner *r);
const char *df_runner_plan_id(const df_runner *r);
void *df_runner_class_data(const df_runner *r);
/* The plugin's per-runner state. */
void *df_runner_data(const df_runner *r);
void df_runner_set_data(df_runner *r, void *data);

/* Raw bytes of a stream ("stdout", "stderr"): invalid UTF-8 is replaced and a
 * character split between two calls stays whole. */
void df_runner_publish(df_runner *r, const char *type, const char *buf, size_t len);
/* One record of text; type NULL is "debug". */
void df_runner_publish_text(df_runner *r, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "<context>: <kind> - <message>" as a debug record (upstream's publish_exception; kind NULL is
 * "RuntimeError"); fatal also ends the runner with "EXCEPTION". */
void df_runner_exception(df_runner *r, const char *context, const char *kind, const char *message,
                         bool fatal);
/* Ends the runner with an exit status (or DF_EXIT_EXCEPTION); later output is dropped. */
void df_runner_exit(df_runner *r, int status);
bool df_runner_exited(const df_runner *r);
/* After seconds: "Timeout for execution passed, trying to stop the job", then kill.  Returns
 * the timer (df_runner_cancel_timer), or 0 when seconds <= 0. */
uint64_t df_runner_set_timeout(df_runner *r, double seconds);
/* Progress of the action's run step, 0..1. */
void df_runner_progress(df_runner *r, double done);
/* Sets output.data[key] of the action (steals value). */
void df_runner_set_output(df_runner *r, const char *key, json_t *value);

/* Calls cb when fd is ready (EPOLLIN/EPOLLOUT bits).  The runner still owns fd. */
typedef void (*df_runner_fd_fn)(df_runner *r, int fd, uint32_t events, void *arg);
int df_runner_watch(df_runner *r, int fd, uint32_t events, df_runner_fd_fn cb, void *arg);
int df_runner_watch_modify(df_runner *r, int fd, uint32_t events);
void df_runner_unwatch(df_runner *r, int fd);

/* Calls cb once after seconds; returns a timer id (> 0) for df_runner_cancel_timer(). */
typedef void (*df_runner_timer_fn)(df_runner *r, void *arg);
uint64_t df_runner_after(df_runner *r, double seconds, df_runner_timer_fn cb, void *arg);
void df_runner_cancel_timer(df_runner *r, uint64_t id);

/* A timer of no runner, for a plugin's own housekeeping; cb gets r NULL.  Only on the runner
 * thread (from a runner callback or another such timer); pending ones go with the world. */
uint64_t df_runner_loop_after(df_world *w, double seconds, df_runner_timer_fn cb, void *arg);

/* level: enum df_log_level (dynflow.h) */
void df_runner_log(df_runner *r, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- group runners (§8.3 Parent): one runner, many targets -------------------------- */

/* The targets of a group runner, in input order. */
size_t df_runner_target_count(const df_runner *r);
const char *df_runner_target(const df_runner *r, size_t i); /* the target's key */
void df_runner_publish_for(df_runner *r, const char *target, const char *type, const char *buf,
                           size_t len);
/* One record to every target. */
void df_runner_broadcast(df_runner *r, const char *type, const char *text);
/* A target's own exit status; the others get the runner's. */
void df_runner_exit_for(df_runner *r, const char *target, int status);

/* ---- child processes --------------------------------------------------------------- */

struct df_proc_spec {
    const char *const *argv; /* argv[0] is looked up in PATH unless it has a '/' */
    const char *const *envp; /* NULL-terminated "KEY=value"; NULL: the daemon's environment */
    const char *cwd;         /* NULL: the daemon's */
    bool pty;                /* one pseudo-terminal for stdin, stdout and stderr */
    bool stdin_pipe;         /* stdin a pipe (df_proc_write); else /dev/null */
    double grace_s;          /* SIGTERM, then SIGKILL after this; 0: 10 s */
    /* Optional: each chunk of output; NULL publishes it with df_runner_publish(). */
    void (*on_output)(df_runner *r, const char *type, const char *buf, size_t len, void *arg);
    /* Optional: the process ended and its output was read; status is the exit code,
     * or 128 + signal number.  NULL ends the runner with that status. */
    void (*on_exit)(df_runner *r, int status, void *arg);
    void *arg;
};

/* Starts a process in a session of its own.  When the command cannot start
 * (ENOENT, EACCES …) a debug record "Error running command '<argv>': RuntimeError - …"
 * is published, the runner ends with "EXCEPTION" and a negative errno returns.  Out of
 * descriptors, nothing is published: the runner waits for free ones and starts again. */
int df_proc_spawn(df_runner *r, const struct df_proc_spec *spec, df_proc **out);
/* Queues bytes for stdin (stdin_pipe). */
int df_proc_write(df_proc *p, const void *buf, size_t len);
void df_proc_close_stdin(df_proc *p);
/* SIGTERM to the process group, SIGKILL after the grace period. */
void df_proc_kill(df_proc *p);
pid_t df_proc_pid(const df_proc *p);

#endif
