#include "proxy/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>

#include "smart-proxy/module.h"

enum sink { SINK_STDOUT, SINK_FILE, SINK_SYSLOG, SINK_JOURNAL };

static struct {
    pthread_mutex_t lock;
    enum sink sink;
    FILE *file;
    char *path;
    int threshold; /* syslog priority: lines above it are dropped */
} log_state = {PTHREAD_MUTEX_INITIALIZER, SINK_STDOUT, NULL, NULL, SP_LOG_INFO};

static int level_of(const char *name)
{
    static const struct {
        const char *name;
        int level;
    } levels[] = {{"DEBUG", SP_LOG_DEBUG}, {"INFO", SP_LOG_INFO}, {"WARN", SP_LOG_WARNING},
                  {"ERROR", SP_LOG_ERROR}, {"FATAL", LOG_CRIT},   {"UNKNOWN", LOG_EMERG}};

    for (size_t i = 0; name != NULL && i < sizeof(levels) / sizeof(levels[0]); i++)
        if (strcasecmp(name, levels[i].name) == 0)
            return levels[i].level;
    return SP_LOG_INFO;
}

static const char *name_of(int level)
{
    return level >= SP_LOG_DEBUG     ? "DEBUG"
           : level >= SP_LOG_INFO    ? "INFO"
           : level >= SP_LOG_WARNING ? "WARN"
           : level >= SP_LOG_ERROR   ? "ERROR"
                                     : "FATAL";
}

int sp_log_open(const struct sp_settings *s, struct sp_error *err)
{
    const char *target = sp_setting_str(s, "log_file");
    enum sink sink = SINK_FILE;
    FILE *f = NULL;

    if (target == NULL || strcmp(target, "STDOUT") == 0)
        sink = SINK_STDOUT;
    else if (strcmp(target, "SYSLOG") == 0)
        sink = SINK_SYSLOG;
    else if (strcmp(target, "JOURNAL") == 0 || strcmp(target, "JOURNALD") == 0)
        sink = SINK_JOURNAL;
    else if ((f = fopen(target, "a")) == NULL)
        return sp_fail(err, -errno, "cannot open the log file %s: %s", target, strerror(errno));
    if (f != NULL)
        setvbuf(f, NULL, _IOLBF, 0);
    pthread_mutex_lock(&log_state.lock);
    if (log_state.file != NULL)
        fclose(log_state.file);
    free(log_state.path);
    log_state.file = f;
    log_state.path = f != NULL ? strdup(target) : NULL;
    log_state.sink = sink;
    log_state.threshold = level_of(sp_setting_str(s, "log_level"));
    if (sink == SINK_SYSLOG)
        openlog("smart-proxyd", LOG_PID, LOG_LOCAL5);
    pthread_mutex_unlock(&log_state.lock);
    return 0;
}

void sp_log_reopen(void)
{
    FILE *f;

    pthread_mutex_lock(&log_state.lock);
    if (log_state.sink == SINK_FILE && (f = fopen(log_state.path, "a")) != NULL) {
        setvbuf(f, NULL, _IOLBF, 0);
        fclose(log_state.file);
        log_state.file = f;
    }
    pthread_mutex_unlock(&log_state.lock);
}

void sp_log_close(void)
{
    pthread_mutex_lock(&log_state.lock);
    if (log_state.file != NULL)
        fclose(log_state.file);
    log_state.file = NULL;
    free(log_state.path);
    log_state.path = NULL;
    log_state.sink = SINK_STDOUT;
    pthread_mutex_unlock(&log_state.lock);
}

void sp_vlog(int level, const char *request_id, const char *fmt, va_list ap)
{
    char msg[2048], when[40];
    struct timespec ts;
    struct tm tm;

    if (level > log_state.threshold)
        return;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    pthread_mutex_lock(&log_state.lock);
    switch (log_state.sink) {
        case SINK_SYSLOG:
            syslog(level, "[%.8s] %s", request_id ? request_id : "-", msg);
            break;
        case SINK_JOURNAL: /* sd-daemon(3) priority prefixes on stderr */
            fprintf(stderr, "<%d>[%.8s] %s\n", level, request_id ? request_id : "-", msg);
            break;
        default:
            fprintf(log_state.sink == SINK_FILE ? log_state.file : stdout,
                    "%s.%03ldZ %.8s [%c] %s\n", when, ts.tv_nsec / 1000000,
                    request_id ? request_id : "-", name_of(level)[0], msg);
            if (log_state.sink == SINK_STDOUT)
                fflush(stdout);
    }
    pthread_mutex_unlock(&log_state.lock);
}

void sp_log(int level, const char *request_id, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    sp_vlog(level, request_id, fmt, ap);
    va_end(ap);
}
