/*
 * The crash loop (doc/recovery.md): smart-proxyd with a file database, the script plugin, the
 * SSH plugin against the test sshd and a fake Foreman; batches of tasks launched, the daemon
 * killed with SIGKILL at a random moment, restarted, checked; CRASH_KILLS times (20 in make
 * check; bench/crash runs more).  Every task's command appends "<task id> <pid> <start time>" to
 * a marker file.  Prints {"case":"crash","kills":…,"lost":0,"double":0,…}.
 */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#include "../unit/daemonutil.h"
#include "../unit/foreman.h"
#include "../unit/testutil.h"

#define MAX_TASKS       4096
#define SCRIPT_PER_KILL 4
#define SSH_PER_KILL    1
#define TASK_TIMEOUT_S  30 /* the script kind's :timeout: */

struct task {
    char id[DF_UUID_BUF];
    int launched_in; /* the daemon run that acknowledged it */
    bool ssh;
};

static char dir[512], marks[600], db[600], pid_file[600], sshd_dir[700], ssh_port[16], ssh_key[600];
static bool with_ssh;
static struct task tasks[MAX_TASKS];
static int n_tasks, run_no;
static unsigned port;
static size_t marks_at_kill[MAX_TASKS]; /* bytes of the marker file when run i was killed */
static pid_t daemon_pid;
static int daemon_out = -1;

/* ---- the daemon_pid -------------------------------------------------------------------------- */

static void log_path(char *out, size_t len, int run)
{
    snprintf(out, len, "%s/proxy-%d.log", dir, run);
}

static void daemon_start(void)
{
    char settings[4096], path[700];

    run_no++;
    log_path(path, sizeof(path), run_no);
    snprintf(settings, sizeof(settings),
             ":http_port: 0\n:bind_host: 127.0.0.1\n:module_directory: %s\n"
             ":foreman_url: https://localhost:%u\n:foreman_ssl_cert: %s/client.pem\n"
             ":foreman_ssl_key: %s/client.key\n:foreman_ssl_ca: %s/ca.pem\n:log_file: %s\n",
             getenv("DYNFLOW_MODULE_DIR"), foreman_port, dir, dir, dir, path);
    scratch_write(dir, "settings.yml", settings);
    if (daemon_out >= 0)
        close(daemon_out);
    daemon_pid = start_in(dir, NULL, &daemon_out);
    snprintf(settings, sizeof(settings), "%d\n", (int)daemon_pid);
    scratch_write(dir, "daemon.pid", settings);
    port = listening_port(path, 0, "http");
    ck_assert_msg(port != 0, "smart-proxyd did not start: %s", read_until(daemon_out, "\n\n"));
}

static void daemon_kill(void)
{
    struct stat st;

    kill(daemon_pid, SIGKILL);
    finish(daemon_pid);
    marks_at_kill[run_no] = stat(marks, &st) == 0 ? (size_t)st.st_size : 0;
}

/* ---- HTTP --------------------------------------------------------------------------------- */

struct body {
    char *text;
    size_t len;
};

static size_t grow(char *data, size_t size, size_t n, void *ud)
{
    struct body *b = ud;

    b->text = realloc(b->text, b->len + size * n + 1);
    memcpy(b->text + b->len, data, size * n);
    b->len += size * n;
    b->text[b->len] = '\0';
    return size * n;
}

/* The status code, the body in *out (malloc'd); 0 when the daemon_pid did not answer. */
static long request(const char *method, const char *path, const char *json, char **out)
{
    struct body b = {calloc(1, 1), 0};
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    CURL *c = curl_easy_init();
    char url[256];
    long status = 0;

    snprintf(url, sizeof(url), "http://127.0.0.1:%u/dynflow%s", port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (json != NULL)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, grow);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    if (out != NULL)
        *out = b.text;
    else
        free(b.text);
    return status;
}

/* ---- launching ---------------------------------------------------------------------------- */

static void add_script_entry(json_t *input, const char *id)
{
    /* 0.1 to 0.8 s: some end before the kill, some run across it, most wait for a slot */
    json_t *args = json_pack("{s:s, s:f}", "token", id, "sleep", 0.1 + (rand() % 8) / 10.0);

    json_object_set_new(input, id,
                        json_pack("{s:{s:s, s:o, s:{s:s, s:i}}}", "action_input", "kind", "mark",
                                  "input", args, "callback", "task_id", id, "step_id", 3));
}

static void add_ssh_entry(json_t *input, const char *id)
{
    char script[1024];

    snprintf(script, sizeof(script),
             "echo %s $$ $(cut -d' ' -f22 /proc/$$/stat) ssh >> %s; sleep 0.5", id, marks);
    json_object_set_new(input, id,
                        json_pack("{s:s, s:{s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:{s:s, s:i}}}",
                                  "action_class", "Proxy::RemoteExecution::Ssh::Actions::RunScript",
                                  "action_input", "ssh_user", "rexuser", "effective_user",
                                  "rexuser", "effective_user_method", "sudo", "ssh_port",
                                  atoi(ssh_port), "proxy_operation_name", "ssh", "hostname",
                                  "127.0.0.1", "script", script, "remote_working_dir", "/var/tmp",
                                  "callback", "task_id", id, "step_id", 3));
}

/* One launch of n tasks of an operation; the ids it acknowledged join the tasks. */
static void launch(const char *operation, int n, bool ssh)
{
    json_t *input = json_object(), *req;
    char ids[64][DF_UUID_BUF], *text;
    long status;

    for (int i = 0; i < n && n_tasks + i < MAX_TASKS; i++) {
        tu_uuid(ids[i]);
        (ssh ? add_ssh_entry : add_script_entry)(input, ids[i]);
    }
    req = json_pack("{s:s, s:o}", "operation", operation, "input", input);
    text = json_dumps(req, JSON_COMPACT);
    status = request("POST", "/tasks/launch", text, NULL);
    ck_assert_msg(status == 200, "launch of %s answered %ld", operation, status);
    for (int i = 0; i < n && n_tasks < MAX_TASKS; i++) {
        struct task *t = &tasks[n_tasks++];
        memcpy(t->id, ids[i], sizeof(t->id));
        t->launched_in = run_no;
        t->ssh = ssh;
    }
    free(text);
    json_decref(req);
}

/* ---- checks ------------------------------------------------------------------------------- */

struct tally {
    int lost, doubled, never_ran, stuck, orphans, integrity, unknown, ran_after_restart;
};

static void check_integrity(struct tally *t)
{
    sqlite3 *h;
    sqlite3_stmt *s;
    bool ok = false;

    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(h, "PRAGMA integrity_check", -1, &s, NULL) == SQLITE_OK) {
        ok = sqlite3_step(s) == SQLITE_ROW &&
             strcmp((const char *)sqlite3_column_text(s, 0), "ok") == 0;
        sqlite3_finalize(s);
    }
    sqlite3_close(h);
    t->integrity += !ok;
}

/* Every acknowledged task is known to the daemon_pid. */
static void check_known(struct tally *t)
{
    for (int i = 0; i < n_tasks; i++) {
        char path[128];
        snprintf(path, sizeof(path), "/tasks/%.36s/status", tasks[i].id);
        if (request("GET", path, NULL, NULL) != 200) {
            fprintf(stderr, "crash: task %s (launched in run %d) is lost\n", tasks[i].id,
                    tasks[i].launched_in);
            t->lost++;
        }
    }
}

/* State, process group and start time of a process (fields 3, 5 and 22 of /proc/<pid>/stat);
 * false when there is none. */
static bool proc_stat(pid_t pid, char *state, int *pgrp, long long *ticks)
{
    char path[64], buf[1024], *p;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if ((f = fopen(path, "r")) == NULL)
        return false;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')');
    return p != NULL &&
           sscanf(p + 1,
                  " %c %*d %d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d"
                  " %*d %lld",
                  state, pgrp, ticks) == 3;
}

/* Whether a process other than a zombie is in process group pgid. */
static bool group_alive(pid_t pgid)
{
    DIR *d;
    struct dirent *e;
    bool alive = false;

    if (kill(-pgid, 0) < 0 && errno == ESRCH)
        return false;
    if ((d = opendir("/proc")) == NULL)
        return true;
    while (!alive && (e = readdir(d)) != NULL) {
        char state;
        int pgrp;
        long long ticks;
        alive = atoi(e->d_name) > 0 && proc_stat(atoi(e->d_name), &state, &pgrp, &ticks) &&
                pgrp == pgid && state != 'Z' && state != 'X';
    }
    closedir(d);
    return alive;
}

/* No local process a task started before the last kill is alive (a pid now in use by a process
 * with another start time was handed out again: not ours). */
static void check_orphans(struct tally *t)
{
    FILE *f = fopen(marks, "r");
    char id[64], kind[8];
    int pid;
    long long ticks;
    char line[256];

    while (f != NULL && (size_t)ftell(f) < marks_at_kill[run_no - 1] &&
           fgets(line, sizeof(line), f) != NULL) {
        kind[0] = '\0';
        if (sscanf(line, "%63s %d %lld %7s", id, &pid, &ticks, kind) < 3 || kind[0] != '\0')
            continue; /* ssh: the remote side, see doc/recovery.md */
        char state;
        int pgrp;
        long long now;
        if ((!proc_stat(pid, &state, &pgrp, &now) || now == ticks) && group_alive(pid)) {
            fprintf(stderr, "crash: process group %d of task %s outlived the restart\n", pid, id);
            t->orphans++;
        }
    }
    if (f != NULL)
        fclose(f);
}

/* The run in which the marker at offset was written. */
static int run_of(long offset)
{
    int r = 1;

    while (r < run_no && (size_t)offset >= marks_at_kill[r])
        r++;
    return r;
}

/* Marker lines of a task, and the run of the first. */
static int count_marks(const char *tid, int *first_run)
{
    FILE *f = fopen(marks, "r");
    char line[256];
    int n = 0;

    *first_run = 0;
    while (f != NULL) {
        long at = ftell(f);
        if (fgets(line, sizeof(line), f) == NULL)
            break;
        if (strncmp(line, tid, strlen(tid)) == 0 && line[strlen(tid)] == ' ') {
            if (n++ == 0)
                *first_run = run_of(at);
        }
    }
    if (f != NULL)
        fclose(f);
    return n;
}

/* The task's status (its body in *body, malloc'd): whether the plan is stopped. */
static bool task_stopped(const struct task *t, char **body)
{
    char path[128];
    json_t *j;
    bool stopped;

    snprintf(path, sizeof(path), "/tasks/%.36s/status", t->id);
    request("GET", path, NULL, body);
    j = json_loads(*body, 0, NULL);
    stopped = json_is_string(json_object_get(j, "state")) &&
              strcmp(json_string_value(json_object_get(j, "state")), "stopped") == 0;
    json_decref(j);
    return stopped;
}

static bool all_stopped(void)
{
    for (int i = 0; i < n_tasks; i++) {
        char *body = NULL;
        bool stopped = task_stopped(&tasks[i], &body);
        free(body);
        if (!stopped)
            return false;
    }
    return true;
}

/* At the end: each task ran at most once; one that never ran ended saying its outcome is
 * unknown; the others ran. */
static void check_outcomes(struct tally *t)
{
    for (int i = 0; i < n_tasks; i++) {
        char *body = NULL;
        int first_run, n = count_marks(tasks[i].id, &first_run);
        bool unknown, stopped = task_stopped(&tasks[i], &body);

        unknown = strstr(body, "restarted while the job was running") != NULL ||
                  strstr(body, "Abnormal termination") != NULL;
        if (!stopped) {
            fprintf(stderr, "crash: task %s (%s) did not end: %.600s\n", tasks[i].id,
                    tasks[i].ssh ? "ssh" : "script", body);
            t->stuck++;
        }
        t->unknown += unknown;
        if (n > 1) {
            fprintf(stderr, "crash: task %s (%s) ran %d times: %s\n", tasks[i].id,
                    tasks[i].ssh ? "ssh" : "script", n, body);
            t->doubled++;
        }
        if (n == 0 && !unknown) {
            fprintf(stderr, "crash: task %s never ran and does not say why: %s\n", tasks[i].id,
                    body);
            t->never_ran++;
        }
        t->ran_after_restart += n == 1 && first_run > tasks[i].launched_in;
        free(body);
    }
}

/* ---- the loop ------------------------------------------------------------------------------ */

/* A value of sshd.sh's environment file ("export KEY=value" lines). */
static void env_value(const char *path, const char *key, char *out, size_t len)
{
    FILE *f = fopen(path, "r");
    char line[1024], prefix[128];
    size_t n = (size_t)snprintf(prefix, sizeof(prefix), "export %s=", key);

    out[0] = '\0';
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, prefix, n) == 0)
            snprintf(out, len, "%.*s", (int)strcspn(line + n, "\n"), line + n);
    if (f != NULL)
        fclose(f);
}

static void start_sshd(void)
{
    char cmd[1600], env[800];

    snprintf(sshd_dir, sizeof(sshd_dir), "%s/sshd", dir);
    snprintf(cmd, sizeof(cmd), "%s/sshd.sh start %s >/dev/null 2>&1", getenv("SSH_SCRIPTS"),
             sshd_dir);
    with_ssh = system(cmd) == 0;
    if (!with_ssh) {
        printf("crash: no SSH tasks: tests/ssh/sshd.sh could not start sshd (it needs root)\n");
        return;
    }
    snprintf(env, sizeof(env), "%s/env", sshd_dir);
    env_value(env, "SSH_PORT", ssh_port, sizeof(ssh_port));
    env_value(env, "SSH_KEY", ssh_key, sizeof(ssh_key));
}

static void setup(void)
{
    char cmd[1600], text[2048], sub[700];

    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    scratch_new(dir, sizeof(dir), "crash");
    chmod(dir, 0755); /* the ssh tasks' user writes the marker file */
    snprintf(marks, sizeof(marks), "%s/marks", dir);
    scratch_write(dir, "marks", "");
    chmod(marks, 0666);
    snprintf(db, sizeof(db), "%s/dynflow.db", dir);
    snprintf(pid_file, sizeof(pid_file), "%s/daemon.pid", dir);
    scratch_certs(dir);
    start_sshd();
    snprintf(sub, sizeof(sub), "%s/settings.d", dir);
    mkdir(sub, 0700);
    snprintf(sub, sizeof(sub), "%s/plugins", dir);
    mkdir(sub, 0700);
    if (with_ssh)
        snprintf(cmd, sizeof(cmd), "cp %s/script.so %s/ssh.so %s/plugins/",
                 getenv("SCRIPT_PLUGIN_DIR"), getenv("SSH_PLUGIN_DIR"), dir);
    else
        snprintf(cmd, sizeof(cmd), "cp %s/script.so %s/plugins/", getenv("SCRIPT_PLUGIN_DIR"), dir);
    ck_assert_int_eq(system(cmd), 0);
    /* few slots: most tasks wait in the queue when the daemon_pid is killed */
    snprintf(text, sizeof(text),
             ":enabled: true\n:database: %s\n:plugin_directory: %s/plugins\n"
             ":max_concurrent_runners: 4\n",
             db, dir);
    scratch_write(dir, "settings.d/dynflow.yml", text);
    snprintf(text, sizeof(text),
             ":enabled: true\n:tasks:\n  - :kind: mark\n    :shell: true\n    :timeout: %d\n"
             "    :command: 'echo \"$INPUT_TOKEN $$ $(cut -d\" \" -f22 /proc/$$/stat)\" >> %s;"
             " sleep \"$INPUT_SLEEP\"'\n",
             TASK_TIMEOUT_S, marks);
    scratch_write(dir, "settings.d/script.yml", text);
    if (with_ssh) {
        snprintf(text, sizeof(text), ":enabled: true\n:ssh_identity_key_file: %s\n", ssh_key);
        scratch_write(dir, "settings.d/remote_execution_ssh.yml", text);
        setenv("HOME", dir, 1); /* the daemon's known_hosts */
        snprintf(sub, sizeof(sub), "%s/.ssh", dir);
        mkdir(sub, 0700);
    }
}

/* The fake Foreman's threads and the daemon belong to the test's process (Check forks it). */
static void start_foreman(void)
{
    foreman_start(dir);
}

static void stop_daemon_and_foreman(void)
{
    if (daemon_pid > 0) {
        kill(daemon_pid, SIGTERM);
        finish(daemon_pid);
    }
    daemon_pid = 0;
    unlink(pid_file);
    foreman_stop();
}

/* Also after a failed test: the daemon it left (by the pid it wrote down), sshd, the files. */
static void teardown(void)
{
    char cmd[1600];
    FILE *f = fopen(pid_file, "r");
    int pid;

    if (f != NULL && fscanf(f, "%d", &pid) == 1 && pid > 0)
        kill(pid, SIGKILL);
    if (f != NULL)
        fclose(f);
    if (with_ssh) {
        snprintf(cmd, sizeof(cmd), "%s/sshd.sh stop %s >/dev/null", getenv("SSH_SCRIPTS"),
                 sshd_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "crash: cannot stop sshd in %s\n", sshd_dir);
    }
    scratch_remove(dir);
}

static int kills(void)
{
    const char *v = getenv("CRASH_KILLS");

    return v != NULL && atoi(v) > 0 ? atoi(v) : 20;
}

START_TEST(crash_loop)
{
    struct tally t = {0};
    double t0 = tu_now(), deadline;
    int n = kills();

    daemon_start();
    for (int k = 0; k < n; k++) {
        /* the first round kills at once: tasks are sure to wait in the queue */
        launch("script", k == 0 ? 3 * SCRIPT_PER_KILL : SCRIPT_PER_KILL, false);
        if (with_ssh)
            launch("ssh", SSH_PER_KILL, true);
        /* anywhere in a commit, a callback, a start or an output delivery */
        if (k > 0)
            usleep((useconds_t)(rand() % 1000000));
        daemon_kill();
        daemon_start();
        check_integrity(&t);
        check_known(&t);
        check_orphans(&t);
    }
    /* every task ends within its timeout + 60 s of the last restart */
    deadline = tu_now() + TASK_TIMEOUT_S + 60;
    while (!all_stopped() && tu_now() < deadline)
        usleep(200000);
    check_outcomes(&t);
    printf("{\"case\":\"crash\",\"kills\":%d,\"tasks\":%d,\"ssh\":%s,\"lost\":%d,\"double\":%d,"
           "\"never_ran\":%d,\"stuck\":%d,\"orphans\":%d,\"integrity_failures\":%d,"
           "\"outcome_unknown\":%d,\"ran_after_restart\":%d,\"seconds\":%.1f}\n",
           n, n_tasks, with_ssh ? "true" : "false", t.lost, t.doubled, t.never_ran, t.stuck,
           t.orphans, t.integrity, t.unknown, t.ran_after_restart, tu_now() - t0);
    fflush(stdout);
    ck_assert_int_eq(t.lost, 0);
    ck_assert_int_eq(t.doubled, 0);
    ck_assert_int_eq(t.never_ran, 0);
    ck_assert_int_eq(t.stuck, 0);
    ck_assert_int_eq(t.orphans, 0);
    ck_assert_int_eq(t.integrity, 0);
    ck_assert_int_gt(t.ran_after_restart, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("crash");
    TCase *tc = tcase_create("crash");

    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_checked_fixture(tc, start_foreman, stop_daemon_and_foreman);
    tcase_set_timeout(tc, 120 + kills() * 10);
    tcase_add_test(tc, crash_loop);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
