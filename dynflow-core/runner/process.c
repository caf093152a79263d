/*
 * The child-process helper (reference/protocol.md §8.6): a command in a
 * session of its own with pipes or a pseudo-terminal, read and written
 * without blocking from the runner loop, ended with SIGTERM and then SIGKILL
 * after a grace period, and reaped through a pidfd (no zombies, no SIGCHLD
 * handler, no waitpid(-1) stealing other children).  The forked child runs
 * its command only after its pid is committed to a file database, so that
 * a restart finds every process an earlier run left (doc/recovery.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner/internal.h"
#include "util/util.h"

extern char **environ;

enum { OUT, ERR, N_STREAMS };

struct df_proc {
    struct df_dispatcher *d;
    df_runner *r; /* NULL once orphaned */
    struct df_proc_spec spec;
    char *argv0;
    pid_t pid;
    int pidfd;
    int out[N_STREAMS]; /* read ends; -1 when closed (a pty uses out[OUT] only) */
    int in;             /* write end of stdin, or -1 */
    struct df_watch *watch_out[N_STREAMS], *watch_in, *watch_pid;
    char *pending; /* stdin bytes not written yet */
    size_t n_pending;
    bool close_stdin;
    bool reaped;
    int status;
    bool killing;
    uint64_t kill_timer;
    struct df_rtimer *reap_timer; /* no pidfd (out of descriptors): waitpid every 100 ms */
    struct df_proc *next;
};

static const char *const stream_type[N_STREAMS] = {"stdout", "stderr"};

static void fds_used(struct df_dispatcher *d, int delta)
{
    __atomic_add_fetch(&d->fds_used, (unsigned)delta, __ATOMIC_RELAXED);
}

static void close_fd(struct df_proc *p, int *fd, struct df_watch **wt)
{
    if (*wt != NULL) {
        df_loop_unwatch(p->d, *wt);
        *wt = NULL;
    }
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
        fds_used(p->d, -1);
    }
}

static void proc_free(struct df_proc *p)
{
    close_fd(p, &p->out[OUT], &p->watch_out[OUT]);
    close_fd(p, &p->out[ERR], &p->watch_out[ERR]);
    close_fd(p, &p->in, &p->watch_in);
    close_fd(p, &p->pidfd, &p->watch_pid);
    if (p->kill_timer != 0 && p->r != NULL)
        df_runner_cancel_timer(p->r, p->kill_timer);
    if (p->reap_timer != NULL)
        df_loop_cancel(p->d, p->reap_timer);
    free(p->pending);
    free(p->argv0);
    free(p);
}

static struct df_proc **link_of(struct df_proc *p)
{
    struct df_proc **pp = p->r != NULL ? &p->r->procs : &p->d->orphans;

    while (*pp != p)
        pp = &(*pp)->next;
    return pp;
}

/* Done when reaped and every output stream reached its end. */
static void maybe_done(struct df_proc *p)
{
    df_runner *r = p->r;

    if (!p->reaped || p->out[OUT] >= 0 || p->out[ERR] >= 0)
        return;
    *link_of(p) = p->next;
    if (r != NULL && !r->exited) {
        df_output_stream_end(r, &r->rx[0], "stdout");
        df_output_stream_end(r, &r->rx[0], "stderr");
        if (p->spec.on_exit != NULL)
            p->spec.on_exit(r, p->status, p->spec.arg);
        else
            df_runner_exit(r, p->status);
    }
    if (r != NULL)
        df_runner_mark_urgent(r); /* a runner waiting for its processes may close now */
    proc_free(p);
}

static void output_ready(df_runner *r, int fd, uint32_t events, void *arg)
{
    struct df_proc *p = arg;
    int s = fd == p->out[OUT] ? OUT : ERR;
    char buf[16384];
    ssize_t n = read(fd, buf, sizeof(buf));

    (void)events;
    if (n > 0) {
        if (r == NULL || r->exited)
            return;
        if (p->spec.on_output != NULL)
            p->spec.on_output(r, stream_type[s], buf, (size_t)n, p->spec.arg);
        else
            df_runner_publish(r, stream_type[s], buf, (size_t)n);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    /* EOF, or EIO from a pty whose last writer closed it */
    close_fd(p, &p->out[s], &p->watch_out[s]);
    maybe_done(p);
}

/* After the exit: what the process wrote is in the pipe now.  A pipe still open after that
 * belongs to a descendant that outlived it, which does not hold up the exit status. */
static void drain(struct df_proc *p, int s)
{
    char buf[16384];

    while (p->out[s] >= 0) {
        ssize_t n = read(p->out[s], buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close_fd(p, &p->out[s], &p->watch_out[s]);
            break;
        }
        if (p->r != NULL && !p->r->exited) {
            if (p->spec.on_output != NULL)
                p->spec.on_output(p->r, stream_type[s], buf, (size_t)n, p->spec.arg);
            else
                df_runner_publish(p->r, stream_type[s], buf, (size_t)n);
        }
    }
}

static void reap_ready(df_runner *r, int fd, uint32_t events, void *arg)
{
    struct df_proc *p = arg;
    int st;
    pid_t got = waitpid(p->pid, &st, WNOHANG);

    (void)r;
    (void)fd;
    (void)events;
    if (got == 0 || (got < 0 && errno == EINTR))
        return;
    p->reaped = true;
    p->status = got < 0 ? 255 : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    close_fd(p, &p->pidfd, &p->watch_pid);
    for (int s = 0; s < N_STREAMS; s++)
        drain(p, s);
    close_fd(p, &p->in, &p->watch_in);
    maybe_done(p);
}

static void reap_poll(df_runner *r, void *arg)
{
    struct df_proc *p = arg;

    (void)r;
    p->reap_timer = NULL;
    reap_ready(p->r, -1, 0, p);
    if (!p->reaped)
        df_loop_after(p->d, NULL, 0.1, reap_poll, p, &p->reap_timer);
}

static void stdin_ready(df_runner *r, int fd, uint32_t events, void *arg)
{
    struct df_proc *p = arg;
    ssize_t n = p->n_pending > 0 ? write(fd, p->pending, p->n_pending) : 0;

    (void)r;
    (void)events;
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n < 0) { /* EPIPE: the process closed its stdin */
        p->n_pending = 0;
        p->close_stdin = true;
    } else {
        memmove(p->pending, p->pending + n, p->n_pending - (size_t)n);
        p->n_pending -= (size_t)n;
    }
    if (p->n_pending == 0 && p->close_stdin)
        close_fd(p, &p->in, &p->watch_in);
    else if (p->n_pending == 0)
        df_loop_watch_modify(p->d, p->watch_in, 0);
}

int df_proc_write(df_proc *p, const void *buf, size_t len)
{
    if (p->in < 0)
        return -EPIPE;
    p->pending = df_realloc(p->pending, p->n_pending + len);
    memcpy(p->pending + p->n_pending, buf, len);
    p->n_pending += len;
    return df_loop_watch_modify(p->d, p->watch_in, EPOLLOUT);
}

void df_proc_close_stdin(df_proc *p)
{
    p->close_stdin = true;
    if (p->in >= 0 && p->n_pending == 0)
        close_fd(p, &p->in, &p->watch_in);
}

pid_t df_proc_pid(const df_proc *p)
{
    return p->pid;
}

static void signal_group(struct df_proc *p, int sig)
{
    if (!p->reaped && (kill(-p->pid, sig) < 0 && errno == ESRCH))
        kill(p->pid, sig);
}

static void grace_over(df_runner *r, void *arg)
{
    struct df_proc *p = arg;

    (void)r;
    p->kill_timer = 0;
    signal_group(p, SIGKILL);
}

void df_proc_kill(df_proc *p)
{
    if (p->killing || p->reaped)
        return;
    p->killing = true;
    signal_group(p, SIGTERM);
    if (p->r != NULL)
        p->kill_timer = df_runner_after(p->r, p->spec.grace_s, grace_over, p);
}

void df_proc_kill_all(df_runner *r)
{
    for (struct df_proc *p = r->procs; p != NULL; p = p->next)
        df_proc_kill(p);
}

/* The runner closes: its processes are killed now and reaped by the loop later. */
void df_proc_orphan_all(df_runner *r)
{
    while (r->procs != NULL) {
        struct df_proc *p = r->procs;
        r->procs = p->next;
        if (p->kill_timer != 0)
            df_runner_cancel_timer(r, p->kill_timer);
        p->kill_timer = 0;
        p->r = NULL;
        signal_group(p, SIGKILL);
        for (int s = 0; s < N_STREAMS; s++)
            close_fd(p, &p->out[s], &p->watch_out[s]);
        close_fd(p, &p->in, &p->watch_in);
        if (p->watch_pid != NULL)
            p->watch_pid->r = NULL;
        p->next = r->d->orphans;
        r->d->orphans = p;
    }
}

/* At shutdown: the orphans were sent SIGKILL; wait for each. */
void df_proc_free_orphans(struct df_dispatcher *d)
{
    while (d->orphans != NULL) {
        struct df_proc *p = d->orphans;
        d->orphans = p->next;
        if (!p->reaped) {
            signal_group(p, SIGKILL);
            while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
                ;
        }
        proc_free(p);
    }
}

/* ---- spawning ------------------------------------------------------------------------------- */

static int open_pipe(struct df_dispatcher *d, int fds[2])
{
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -errno;
    fds_used(d, 2);
    return 0;
}

static int set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -errno : 0;
}

struct child_fds {
    int in[2], out[2], err[2];
    int pty_master;
    char pty_name[64];
};

static void close_child_ends(struct df_dispatcher *d, struct child_fds *c)
{
    int *ends[] = {&c->in[0], &c->out[1], &c->err[1]};

    for (size_t i = 0; i < DF_ARRAY_SIZE(ends); i++)
        if (*ends[i] >= 0) {
            close(*ends[i]);
            *ends[i] = -1;
            fds_used(d, -1);
        }
}

static int open_pty(struct df_dispatcher *d, struct child_fds *c)
{
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);

    if (m < 0)
        return -errno;
    fds_used(d, 1);
    c->pty_master = m;
    if (grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, c->pty_name, sizeof(c->pty_name)) != 0)
        return -errno;
    return 0;
}

/* The pipes or the pty the child's standard descriptors become. */
static int open_child_io(struct df_dispatcher *d, const struct df_proc_spec *spec,
                         struct child_fds *c)
{
    int rc;

    if (spec->pty)
        return open_pty(d, c);
    if (spec->stdin_pipe && (rc = open_pipe(d, c->in)) < 0)
        return rc;
    if ((rc = open_pipe(d, c->out)) < 0 || (rc = open_pipe(d, c->err)) < 0)
        return rc;
    return 0;
}

/* ---- in the child, between fork and exec: async-signal-safe calls only ---- */

/* dup2() that also clears close-on-exec when from is already to. */
static int move_fd(int from, int to)
{
    if (from == to)
        return fcntl(to, F_SETFD, 0);
    return dup2(from, to) < 0 ? -1 : 0;
}

static int child_stdio(const struct df_proc_spec *spec, const struct child_fds *c)
{
    int in;

    if (spec->pty) {
        /* opened by a session leader without O_NOCTTY: it becomes the controlling terminal */
        int t = open(c->pty_name, O_RDWR);
        return t < 0 || move_fd(t, 0) < 0 || move_fd(0, 1) < 0 || move_fd(0, 2) < 0 ? -1 : 0;
    }
    in = c->in[0] >= 0 ? c->in[0] : open("/dev/null", O_RDONLY);
    return in < 0 || move_fd(in, 0) < 0 || move_fd(c->out[1], 1) < 0 || move_fd(c->err[1], 2) < 0
               ? -1
               : 0;
}

/* A session of its own, default signals, the standard descriptors; then it waits at the gate
 * until the parent committed its pid, and runs the command.  EOF at the gate (the daemon died
 * or could not record it) ends it before the command runs.  Why exec failed goes to report. */
static _Noreturn void child_main(const struct df_proc_spec *spec, const struct child_fds *c,
                                 int gate, int report, pid_t parent)
{
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigset_t none;
    ssize_t n;
    char go;
    int e;

    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL); /* fails harmlessly for SIGKILL, SIGSTOP and libc's own */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* a belt (doc/recovery.md): SIGKILL when the runner thread, i.e. the daemon, dies */
    if (setsid() < 0 || prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent ||
        child_stdio(spec, c) < 0 || (spec->cwd != NULL && chdir(spec->cwd) < 0))
        goto failed;
    while ((n = read(gate, &go, 1)) < 0 && errno == EINTR)
        ;
    if (n != 1)
        _exit(127);
    execvpe(spec->argv[0], (char *const *)spec->argv,
            spec->envp != NULL ? (char *const *)spec->envp : environ);
failed:
    e = errno;
    if (write(report, &e, sizeof(e)) < 0)
        _exit(126);
    _exit(127);
}

/* ---- in the parent ---- */

/* Waits until the child ran its command (0) or failed to (-errno); the child's end of report
 * is close-on-exec, so EOF means exec succeeded. */
static int exec_result(int report)
{
    int e = 0;
    ssize_t n;

    while ((n = read(report, &e, sizeof(e))) < 0 && errno == EINTR)
        ;
    return n == (ssize_t)sizeof(e) ? -e : 0;
}

/* Forks the child and lets it run its command once its pid is committed (doc/recovery.md):
 * a process that runs is one a restart can find.  0, or -errno with why in err. */
static int spawn(df_runner *r, const struct df_proc_spec *spec, const struct child_fds *c,
                 pid_t *pid, df_error *err)
{
    int gate[2], report[2], rc;
    pid_t parent = getpid();

    if (pipe2(gate, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(report, O_CLOEXEC) < 0) {
        rc = -errno;
        close(gate[0]);
        close(gate[1]);
        return rc;
    }
    *pid = fork();
    if (*pid == 0) {
        close(gate[1]); /* else the gate would never see EOF */
        close(report[0]);
        child_main(spec, c, gate[0], report[1], parent);
    }
    rc = *pid < 0 ? -errno : 0;
    close(gate[0]);
    close(report[1]);
    if (rc == 0 && (rc = df_runner_record_process(r, *pid, err)) == 0 &&
        write(gate[1], "g", 1) != 1)
        rc = -errno;
    close(gate[1]); /* without "g" the child ends at the gate */
    if (rc == 0)
        rc = exec_result(report[0]);
    close(report[0]);
    if (rc < 0 && *pid > 0)
        while (waitpid(*pid, NULL, 0) < 0 && errno == EINTR)
            ;
    return rc;
}

static void undo(struct df_dispatcher *d, struct child_fds *c)
{
    int *fds[] = {&c->in[0],  &c->in[1],  &c->out[0],    &c->out[1],
                  &c->err[0], &c->err[1], &c->pty_master};

    for (size_t i = 0; i < DF_ARRAY_SIZE(fds); i++)
        if (*fds[i] >= 0) {
            close(*fds[i]);
            fds_used(d, -1);
        }
}

static int watch_all(struct df_proc *p)
{
    int rc = 0;

    for (int s = 0; s < N_STREAMS && rc == 0; s++)
        if (p->out[s] >= 0 && (rc = set_nonblocking(p->out[s])) == 0)
            rc = df_loop_watch(p->d, p->r, p->out[s], EPOLLIN, output_ready, p, &p->watch_out[s]);
    if (rc == 0 && p->in >= 0 && (rc = set_nonblocking(p->in)) == 0)
        rc = df_loop_watch(p->d, p->r, p->in, 0, stdin_ready, p, &p->watch_in);
    if (rc == 0 && p->pidfd >= 0)
        rc = df_loop_watch(p->d, p->r, p->pidfd, EPOLLIN, reap_ready, p, &p->watch_pid);
    else if (rc == 0)
        df_loop_after(p->d, NULL, 0.1, reap_poll, p, &p->reap_timer);
    return rc;
}

/* "Error running command '<argv joined by spaces>'", as upstream's ProcessManagerCommand says. */
static void command_context(const char *const *argv, char *out, size_t len)
{
    size_t n = (size_t)snprintf(out, len, "Error running command '");

    for (size_t i = 0; argv[i] != NULL && n < len; i++)
        n += (size_t)snprintf(out + n, len - n, "%s%s", i > 0 ? " " : "", argv[i]);
    if (n < len)
        snprintf(out + n, len - n, "'");
}

int df_proc_spawn(df_runner *r, const struct df_proc_spec *spec, df_proc **out)
{
    struct df_dispatcher *d = r->d;
    struct child_fds c = {{-1, -1}, {-1, -1}, {-1, -1}, -1, ""};
    struct df_proc *p;
    char context[512];
    df_error err = {{0}};
    pid_t pid = -1;
    int rc;

    command_context(spec->argv, context, sizeof(context));
    rc = open_child_io(d, spec, &c);
    if (rc == 0)
        rc = spawn(r, spec, &c, &pid, &err);
    close_child_ends(d, &c);
    if (rc == -EMFILE || rc == -ENFILE) {
        undo(d, &c);
        df_runner_defer(r); /* nothing started: it starts again when descriptors are free */
        return rc;
    }
    if (rc < 0) {
        char why[DF_ERROR_TEXT + 256];
        undo(d, &c);
        snprintf(why, sizeof(why), "%s - %s", err.text[0] ? err.text : strerror(-rc),
                 spec->argv[0]);
        df_runner_exception(r, context, NULL, why, true);
        return rc;
    }
    p = df_calloc(1, sizeof(*p));
    *p = (struct df_proc){.d = d, .r = r, .spec = *spec, .pid = pid, .in = c.in[1]};
    p->spec.grace_s = spec->grace_s > 0 ? spec->grace_s : 10;
    p->out[OUT] = spec->pty ? c.pty_master : c.out[0];
    p->out[ERR] = spec->pty ? -1 : c.err[0];
    if (spec->pty && spec->stdin_pipe) {
        p->in = dup(c.pty_master);
        if (p->in >= 0)
            fds_used(d, 1);
    }
    p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (p->pidfd >= 0)
        fds_used(d, 1);
    p->next = r->procs;
    r->procs = p;
    rc = watch_all(p);
    if (rc < 0) { /* the process runs but cannot be watched: stop it */
        df_runner_exception(r, context, NULL, strerror(-rc), true);
        df_proc_orphan_all(r);
        return rc;
    }
    if (out != NULL)
        *out = p;
    return 0;
}
