/*
 * The proxy's log: :log_file: (a path, STDOUT, SYSLOG, JOURNAL/JOURNALD) at
 * :log_level:, every line with the request id; SIGUSR1 reopens a log file.
 */
#ifndef SP_LOG_H
#define SP_LOG_H

#include <stdarg.h>

#include "proxy/settings.h"

/* Opens (or switches to) the log the settings name. */
int sp_log_open(const struct sp_settings *s, struct sp_error *err);
/* Reopens a log file after rotation (SIGUSR1). */
void sp_log_reopen(void);
void sp_log_close(void);

void sp_vlog(int level, const char *request_id, const char *fmt, va_list ap);
void sp_log(int level, const char *request_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
