/* Authorization shared by every module's routes (reference/protocol.md §1.5, §3.2, §4). */
#ifndef SP_AUTH_H
#define SP_AUTH_H

#include <stddef.h>

#include "proxy/settings.h"
#include "smart-proxy/module.h"

/* The server's authorize hook; ud is the struct sp_settings.  0 to allow, else 403 with why as
 * upstream words it, and a log line naming the check that failed:
 *   the proxy: "Untrusted client <name> attempted to access <path>. Check :trusted_hosts: in
 *   settings.yml", "could not read client cert from environment", "No client SSL certificate
 *   supplied";
 *   the core (HTTPS only): "No client SSL certificate supplied", the untrusted-client message
 *   when :trusted_hosts: is set, else "SSL certificate with unexpected serial supplied".
 * A certificate the CA did not sign (cert_rejected says why) counts as none. */
unsigned sp_authorize(void *ud, const struct sp_request *req, const char *cert_rejected,
                      unsigned auth, char *why, size_t len);

#endif
