/* The GnuTLS priority string of the HTTPS listener, from the settings (§1.4). */
#ifndef SP_TLS_H
#define SP_TLS_H

#include <stddef.h>

#include "proxy/settings.h"

/* "NORMAL:-VERS-TLS1.1:-VERS-TLS1.0", minus :tls_disabled_versions: and :ssl_disabled_ciphers:.
 * 0, or -EINVAL with why naming the first entry that cannot be applied. */
int sp_tls_priorities(const struct sp_settings *s, char *out, size_t len, char *why,
                      size_t why_len);

#endif
