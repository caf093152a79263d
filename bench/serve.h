/* The main() of the benchmarks' small libmicrohttpd servers (floor, sink): PORT, then serve
 * with smart-proxyd's threading options until SIGTERM or SIGINT. */
#ifndef BENCH_SERVE_H
#define BENCH_SERVE_H

#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static inline int serve(int argc, char **argv, MHD_AccessHandlerCallback answer,
                        MHD_RequestCompletedCallback done)
{
    sigset_t set;
    int sig;
    struct MHD_Daemon *d;

    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    d = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_THREAD_PER_CONNECTION,
                         (uint16_t)atoi(argv[1]), NULL, NULL, answer, NULL,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_NOTIFY_COMPLETED,
                         done, NULL, MHD_OPTION_END);
    if (d == NULL) {
        fprintf(stderr, "%s: cannot listen on port %s\n", argv[0], argv[1]);
        return 1;
    }
    sigwait(&set, &sig);
    MHD_stop_daemon(d);
    return 0;
}

#endif
