/*
 * bench/client: THREADS threads sending GET URL with the project's HTTPS client
 * (df_http_perform, as the forward-mode relay does: one keep-alive connection per
 * thread) for SECONDS; prints the requests per second and the CPU time (user + system)
 * the client spent per request, in microseconds.  bench/forward runs it
 * against the core: no proxy and no wrk share the cores then, so no relay built
 * on this client can forward more than that.
 *   client URL SECONDS THREADS CA CERT KEY
 */
#include "http/client.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static struct df_http_tls tls;
static struct df_http_request req = {.method = "GET", .no_proxy = true};
static atomic_long answered;
static atomic_bool stop;

static void *send_until_stopped(void *arg)
{
    struct df_http_reply rep;

    (void)arg;
    while (!atomic_load(&stop)) {
        int rc = df_http_perform(&tls, &req, &rep);

        if (rc != 0 || rep.status != 200) {
            fprintf(stderr, "client: GET %s: %s (status %ld)\n", req.url,
                    rc != 0 ? rep.error : "not 200", rep.status);
            exit(1);
        }
        free(rep.body);
        atomic_fetch_add(&answered, 1);
    }
    return NULL;
}

static double cpu_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void sleep_s(double s)
{
    struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};

    nanosleep(&t, NULL);
}

int main(int argc, char **argv)
{
    pthread_t threads[64];
    double seconds, cpu_before;
    long threads_n, before, n;

    if (argc != 7) {
        fprintf(stderr, "usage: client URL SECONDS THREADS CA CERT KEY\n");
        return 2;
    }
    req.url = argv[1];
    seconds = atof(argv[2]);
    threads_n = atol(argv[3]);
    if (seconds <= 0 || threads_n < 1 || threads_n > 64) {
        fprintf(stderr, "client: SECONDS > 0 and THREADS in 1..64\n");
        return 2;
    }
    tls = (struct df_http_tls){argv[4], argv[5], argv[6]};
    df_http_global_init();
    for (long i = 0; i < threads_n; i++)
        pthread_create(&threads[i], NULL, send_until_stopped, NULL);
    sleep_s(0.5); /* connections and handshakes out of the count */
    before = atomic_load(&answered);
    cpu_before = cpu_s();
    sleep_s(seconds);
    n = atomic_load(&answered) - before;
    printf("%.2f %.1f\n", (double)n / seconds,
           (cpu_s() - cpu_before) / (double)(n > 0 ? n : 1) * 1e6);
    atomic_store(&stop, true);
    for (long i = 0; i < threads_n; i++)
        pthread_join(threads[i], NULL);
    df_http_global_cleanup();
    return 0;
}
