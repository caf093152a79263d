/* Authorization shared by every module's routes (reference/protocol.md §1.5). */
#ifndef SP_AUTH_H
#define SP_AUTH_H

#include <stddef.h>

#include "proxy/settings.h"
#include "smart-proxy/module.h"

/* The server's authorize hook; ud is the struct sp_settings.  0 to allow, else 403 with why:
 * "Untrusted client <name> attempted to access <path>. Check :trusted_hosts: in settings.yml",
 * "could not read client cert from environment", "No client SSL certificate supplied". */
unsigned sp_authorize(void *ud, const struct sp_request *req, unsigned auth, char *why, size_t len);

#endif
