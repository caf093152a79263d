/*
 * bench/engine: engine throughput and latency, in memory or on a file.
 *
 *   engine --mode trivial|sub10|latency --plans N [--db FILE] [--pool N]
 *
 * trivial: N plans of one action whose run copies its input to its output;
 * sub10:   N plans each planning 10 such actions in a concurrence;
 * latency: N sequential trigger → stopped round trips.
 * Prints one JSON line; exits non-zero unless every plan ended stopped/success.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "dynflow/dynflow.h"

static double *started, *ended;
static atomic_int finished, failed;
static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int copy_run(df_action *a, const df_event *ev)
{
    (void)ev;
    json_object_update(df_action_output(a), df_action_input(a));
    return 0;
}

/* Records when a plan stopped, keyed by the index in its entry action's input. */
static void record_end(df_action *a, unsigned kind, const struct df_plan_info *plan)
{
    json_int_t i = json_integer_value(json_object_get(df_action_input(a), "i"));

    (void)kind;
    ended[i] = now();
    if (plan->result != DF_RESULT_SUCCESS)
        atomic_fetch_add(&failed, 1);
    pthread_mutex_lock(&done_lock);
    atomic_fetch_add(&finished, 1);
    pthread_cond_signal(&done_cond);
    pthread_mutex_unlock(&done_lock);
}

static int sub10_plan(df_action *a, json_t *args)
{
    json_t *input = json_pack("{s:O}", "i", json_object_get(args, "i"));

    df_plan_self(a, json_incref(input));
    df_concurrence_begin(a);
    for (int k = 0; k < 10; k++) {
        json_object_set_new(input, "k", json_integer(k));
        if (df_plan_action(a, "Bench::Copy", input) == NULL) {
            json_decref(input);
            return -1;
        }
    }
    df_concurrence_end(a);
    json_decref(input);
    return 0;
}

static const struct df_hook end_hooks[] = {{DF_HOOK_ON(DF_PLAN_STOPPED), record_end}, {0}};

static const struct df_action_class copy_class = {.name = "Bench::Copy", .run = copy_run};
static const struct df_action_class trivial_class = {
    .name = "Bench::Trivial", .run = copy_run, .hooks = end_hooks};
static const struct df_action_class sub10_class = {
    .name = "Bench::Sub10", .plan = sub10_plan, .hooks = end_hooks};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: engine --mode trivial|sub10|latency --plans N [--db FILE] [--pool N]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"mode", required_argument, NULL, 'm'},
                                         {"plans", required_argument, NULL, 'n'},
                                         {"db", required_argument, NULL, 'd'},
                                         {"pool", required_argument, NULL, 'p'},
                                         {NULL, 0, NULL, 0}};
    struct df_world_config cfg = {0};
    const char *mode = "trivial";
    long n = 1000;
    df_error err;
    df_world *w;
    int c;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
            case 'm':
                mode = optarg;
                break;
            case 'n':
                n = strtol(optarg, NULL, 10);
                break;
            case 'd':
                cfg.database = optarg;
                break;
            case 'p':
                cfg.pool_size = (unsigned)strtoul(optarg, NULL, 10);
                break;
            default:
                usage();
        }
    }
    bool sub10 = strcmp(mode, "sub10") == 0, latency = strcmp(mode, "latency") == 0;
    if (n <= 0 || (!sub10 && !latency && strcmp(mode, "trivial") != 0))
        usage();
    if (cfg.database != NULL)
        unlink(cfg.database);
    started = calloc((size_t)n, sizeof(double));
    ended = calloc((size_t)n, sizeof(double));
    w = df_world_new(&cfg, &err);
    if (w == NULL || df_world_register(w, &copy_class, &err) < 0 ||
        df_world_register(w, &trivial_class, &err) < 0 ||
        df_world_register(w, &sub10_class, &err) < 0 || df_world_start(w, &err) < 0) {
        fprintf(stderr, "bench/engine: cannot start the engine: %s\n", err.text);
        return 1;
    }
    const char *cls = sub10 ? "Bench::Sub10" : "Bench::Trivial";
    double t0 = now();
    for (long i = 0; i < n; i++) {
        char id[DF_UUID_BUF];
        bool planned;
        started[i] = now();
        if (df_trigger(w, cls, json_pack("{s:I, s:s}", "i", (json_int_t)i, "payload", "x"), NULL,
                       id, &planned, &err) < 0 ||
            !planned) {
            fprintf(stderr, "bench/engine: trigger %ld failed: %s\n", i, err.text);
            return 1;
        }
        if (latency) {
            struct df_plan_info info;
            df_plan_wait(w, id, 30, &info);
            while (atomic_load(&finished) <= i) /* the hook runs right after the state change */
                sched_yield();
        }
    }
    pthread_mutex_lock(&done_lock);
    while (atomic_load(&finished) < n)
        pthread_cond_wait(&done_cond, &done_lock);
    pthread_mutex_unlock(&done_lock);
    df_world_sync(w); /* everything is in the database too */
    double seconds = now() - t0;
    df_world_free(w);

    for (long i = 0; i < n; i++)
        started[i] = (ended[i] - started[i]) * 1000;
    qsort(started, (size_t)n, sizeof(double), cmp_double);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long actions = sub10 ? 11 : 1;
    printf("{\"mode\":\"%s\",\"plans\":%ld,\"db\":%s%s%s,\"seconds\":%.3f,\"plans_per_s\":%.0f,"
           "\"actions_per_s\":%.0f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"peak_rss_kib\":%ld,"
           "\"failed\":%d}\n",
           mode, n, cfg.database ? "\"" : "", cfg.database ? cfg.database : "null",
           cfg.database ? "\"" : "", seconds, (double)n / seconds, (double)(n * actions) / seconds,
           started[n / 2], started[n * 9 / 10], ru.ru_maxrss, atomic_load(&failed));
    free(started);
    free(ended);
    return atomic_load(&failed) == 0 ? 0 : 1;
}
