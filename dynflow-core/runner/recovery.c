/*
 * What a restart needs to know about runners (doc/recovery.md).
 *
 * With a file database two facts are committed before their side effect:
 * a runner's start before the runner starts, and each of its processes
 * (pid, kernel start time, boot id) before the process runs its command.
 * After a restart, a suspended runner step whose runner has no start fact
 * never started and starts now; one with a start fact has an unknown
 * outcome.  Every recorded process group still alive is ended (SIGTERM,
 * SIGKILL after a grace period) before plans are recovered, and what became
 * of it goes into the task's output.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runner/internal.h"
#include "store/store.h"
#include "util/util.h"

/* How long processes of an earlier run get between SIGTERM and SIGKILL at a restart. */
#define SWEEP_GRACE_US 5000000
#define SWEEP_POLL_US  20000

/* ---- this host's processes ---------------------------------------------------------------- */

static char boot_id_text[64];
static pthread_once_t boot_id_once = PTHREAD_ONCE_INIT;

static void read_boot_id(void)
{
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");

    if (f == NULL || fgets(boot_id_text, sizeof(boot_id_text), f) == NULL)
        snprintf(boot_id_text, sizeof(boot_id_text), "unknown");
    boot_id_text[strcspn(boot_id_text, "\n")] = '\0';
    if (f != NULL)
        fclose(f);
}

/* This boot's id: a pid recorded in another boot names no process of ours. */
static const char *boot_id(void)
{
    pthread_once(&boot_id_once, read_boot_id);
    return boot_id_text;
}

struct proc_stat {
    char state;
    pid_t pgrp;
    int64_t start_ticks;
};

/* Fields 3 (state), 5 (pgrp) and 22 (starttime) of /proc/<pid>/stat; -errno when it is gone. */
static int read_stat(pid_t pid, struct proc_stat *out)
{
    char path[64], buf[1024], *p;
    FILE *f;
    size_t n;
    unsigned long long ticks;
    int pgrp;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if ((f = fopen(path, "r")) == NULL)
        return -errno;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* the command name (field 2) may hold spaces and parentheses: fields resume after the last ')'
     */
    if ((p = strrchr(buf, ')')) == NULL ||
        sscanf(p + 1,
               " %c %*d %d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
               &out->state, &pgrp, &ticks) != 3)
        return -EINVAL;
    out->pgrp = pgrp;
    out->start_ticks = (int64_t)ticks;
    return 0;
}

/* Whether a live (not zombie) process is in process group pgid. */
static bool group_alive(pid_t pgid)
{
    DIR *dir;
    struct dirent *e;
    bool alive = false;

    if (kill(-pgid, 0) < 0 && errno == ESRCH)
        return false;
    if ((dir = opendir("/proc")) == NULL)
        return true;
    while (!alive && (e = readdir(dir)) != NULL) {
        struct proc_stat st;
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end == '\0' && pid > 0 && read_stat((pid_t)pid, &st) == 0)
            alive = st.pgrp == pgid && st.state != 'Z' && st.state != 'X';
    }
    closedir(dir);
    return alive;
}

/* ---- recording (runner thread) -------------------------------------------------------------- */

static int put_start(store *st, const void *row, df_error *err)
{
    return store_put_runner_start(st, row, err);
}

static int put_process(store *st, const void *row, df_error *err)
{
    return store_put_runner_process(st, row, err);
}

/* A transaction of its own, serialized with the engine's writer by the store's writer lock. */
static int commit_fact(store *st, int (*put)(store *st, const void *row, df_error *err),
                       const void *row, df_error *err)
{
    int rc = store_write_begin(st, err);

    if (rc < 0)
        return rc;
    rc = put(st, row, err);
    if (rc == 0)
        return store_write_commit(st, err);
    store_write_rollback(st);
    return rc;
}

int df_runner_record_start(df_runner *r, df_error *err)
{
    store *st = df_world_durable_store(r->d->w);
    struct store_runner_start_row row = {.runner_id = r->id,
                                         .plan_uuid = r->rx[0].plan_id,
                                         .step_id = r->rx[0].step_id,
                                         .started_at = df_now_us()};

    return st != NULL ? commit_fact(st, put_start, &row, err) : 0;
}

int df_runner_record_process(df_runner *r, pid_t pid, df_error *err)
{
    store *st = df_world_durable_store(r->d->w);
    struct store_runner_process_row row = {.runner_id = r->id, .pid = pid, .boot_id = boot_id()};
    struct proc_stat ps;
    int rc;

    if (st == NULL)
        return 0;
    if ((rc = read_stat(pid, &ps)) < 0)
        return df_errorf(err, rc, "cannot read the start time of process %d: %s", (int)pid,
                         strerror(-rc));
    row.start_ticks = ps.start_ticks;
    return commit_fact(st, put_process, &row, err);
}

/* ---- after a restart ------------------------------------------------------------------------ */

bool df_runner_was_started(df_world *w, const char *runner_id)
{
    store *st = df_world_durable_store(w);

    /* without the fact (or when it cannot be read) the runner may have run: never twice */
    return st == NULL || store_runner_started(st, runner_id, NULL) != -ENOENT;
}

bool df_runner_started_for_step(df_world *w, const char *plan_id, int step_id,
                                char runner_id[DF_UUID_BUF])
{
    store *st = df_world_durable_store(w);

    return st != NULL && store_runner_of_step(st, plan_id, step_id, runner_id, NULL) == 0;
}

struct notes {
    json_t *records;
    double ts;
};

static int add_note(void *ud, const struct store_runner_process_row *r)
{
    struct notes *n = ud;
    char *text = NULL;

    if (asprintf(&text, "Process group %" PRId64 " of this job, started before the restart, %s",
                 r->pid, r->outcome != NULL ? r->outcome : "was not checked") < 0)
        abort();
    json_array_append_new(n->records, json_pack("{s:s, s:s, s:f}", "output_type", "debug", "output",
                                                text, "timestamp", n->ts));
    free(text);
    return 0;
}

void df_runner_restart_notes(df_world *w, const char *runner_id, json_t *records, double ts)
{
    store *st = df_world_durable_store(w);
    struct notes n = {records, ts};

    if (st != NULL)
        store_each_runner_process(st, runner_id, add_note, &n, NULL);
}

/* A recorded process group of an earlier run. */
struct leftover {
    struct store_runner_process_row row; /* runner_id and boot_id owned */
    bool signalled;
    char outcome[160];
};

struct sweep {
    struct leftover *v;
    size_t n;
};

static int collect_leftover(void *ud, const struct store_runner_process_row *r)
{
    struct sweep *sw = ud;
    struct leftover *l;

    if (r->outcome != NULL)
        return 0; /* a restart before this one dealt with it */
    sw->v = df_realloc(sw->v, (sw->n + 1) * sizeof(*sw->v));
    l = &sw->v[sw->n++];
    *l = (struct leftover){.row = *r};
    l->row.runner_id = df_strdup(r->runner_id);
    l->row.boot_id = df_strdup(r->boot_id);
    return 0;
}

/* Whether the group the runner started is still there.  A pid is not given out again while a
 * process group of that id exists, so a pid in use with another start time means that the
 * group is gone. */
static bool still_running(const struct leftover *l)
{
    struct proc_stat ps;
    pid_t pid = (pid_t)l->row.pid;

    if (strcmp(l->row.boot_id, boot_id()) != 0)
        return false;
    if (read_stat(pid, &ps) == 0 && ps.start_ticks != l->row.start_ticks)
        return false;
    return group_alive(pid);
}

static bool any_alive(struct sweep *sw)
{
    for (size_t i = 0; i < sw->n; i++)
        if (sw->v[i].signalled && still_running(&sw->v[i]))
            return true;
    return false;
}

static void end_leftovers(struct sweep *sw)
{
    int64_t deadline = df_mono_us() + SWEEP_GRACE_US;
    size_t signalled = 0;

    for (size_t i = 0; i < sw->n; i++) {
        struct leftover *l = &sw->v[i];
        snprintf(l->outcome, sizeof(l->outcome), "was not running any more");
        if (!still_running(l))
            continue;
        if (kill(-(pid_t)l->row.pid, SIGTERM) < 0) {
            snprintf(l->outcome, sizeof(l->outcome),
                     "was still running and could not be stopped: %s", strerror(errno));
            continue;
        }
        l->signalled = true;
        signalled++;
    }
    while (signalled > 0 && df_mono_us() < deadline && any_alive(sw))
        usleep(SWEEP_POLL_US);
    for (size_t i = 0; i < sw->n; i++) {
        struct leftover *l = &sw->v[i];
        if (!l->signalled)
            continue;
        if (still_running(l) && kill(-(pid_t)l->row.pid, SIGKILL) == 0)
            snprintf(l->outcome, sizeof(l->outcome),
                     "was still running: it was killed with SIGKILL, %d s after SIGTERM",
                     SWEEP_GRACE_US / 1000000);
        else
            snprintf(l->outcome, sizeof(l->outcome),
                     "was still running: it was stopped with SIGTERM");
    }
}

/* The outcomes, for the tasks' output; and the facts of runners that ended go. */
static void store_outcomes(struct df_dispatcher *d, store *st, struct sweep *sw)
{
    df_error err = {{0}};
    int rc = store_write_begin(st, &err);
    bool began = rc == 0;

    for (size_t i = 0; rc == 0 && i < sw->n; i++) {
        sw->v[i].row.outcome = sw->v[i].outcome;
        rc = store_set_runner_process_outcome(st, &sw->v[i].row, &err);
    }
    if (rc == 0)
        rc = store_delete_ended_runners(st, &err);
    if (rc == 0)
        rc = store_write_commit(st, &err);
    else if (began)
        store_write_rollback(st);
    if (rc < 0)
        df_dlog(d, DF_LOG_ERROR,
                "runners: recording what became of the processes of the run "
                "before the restart failed: %s",
                err.text);
}

void df_runner_sweep(void *data)
{
    struct df_dispatcher *d = data;
    store *st = df_world_durable_store(d->w);
    struct sweep sw = {0};
    df_error err = {{0}};

    if (st == NULL)
        return;
    if (store_each_runner_process(st, NULL, collect_leftover, &sw, &err) < 0)
        df_dlog(d, DF_LOG_ERROR,
                "runners: reading the processes of the run before the restart "
                "failed: %s",
                err.text);
    end_leftovers(&sw);
    for (size_t i = 0; i < sw.n; i++)
        if (sw.v[i].signalled)
            df_dlog(d, DF_LOG_WARNING,
                    "runner %s: process group %" PRId64 ", started before the restart, %s",
                    sw.v[i].row.runner_id, sw.v[i].row.pid, sw.v[i].outcome);
    store_outcomes(d, st, &sw);
    for (size_t i = 0; i < sw.n; i++) {
        free((char *)sw.v[i].row.runner_id);
        free((char *)sw.v[i].row.boot_id);
    }
    free(sw.v);
}
