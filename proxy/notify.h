/*
 * systemd's readiness protocol (sd_notify(3), Type=notify) without libsystemd: one datagram per
 * state change to the AF_UNIX socket $NOTIFY_SOCKET names (a leading '@': the abstract
 * namespace).  Without $NOTIFY_SOCKET nothing is sent.
 */
#ifndef SP_NOTIFY_H
#define SP_NOTIFY_H

#include "proxy/error.h"

/* Takes $NOTIFY_SOCKET and unsets it, so that child processes (the jobs) do not inherit it;
 * call before any thread starts.  0, or -EINVAL with err when it names no AF_UNIX socket. */
int sp_notify_open(struct sp_error *err);

/* Sends the state ("READY=1\nMAINPID=42"); a failure is logged, not returned: the service
 * runs on, and systemd's own timeout says the rest. */
void sp_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
