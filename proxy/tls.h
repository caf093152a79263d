/* The HTTPS listener's TLS: its GnuTLS priority string from the settings (§1.4), and
 * certificate serials (the standalone core accepts clients by serial, §3.2). */
#ifndef SP_TLS_H
#define SP_TLS_H

#include <gnutls/x509.h>
#include <stddef.h>

#include "proxy/settings.h"

/* "NORMAL:-VERS-TLS1.1:-VERS-TLS1.0", minus :tls_disabled_versions: and :ssl_disabled_ciphers:.
 * 0, or -EINVAL with why naming the first entry that cannot be applied. */
int sp_tls_priorities(const struct sp_settings *s, char *out, size_t len, char *why,
                      size_t why_len);

/* The serial of crt in lower-case hexadecimal, as it reaches sp_request.peer_cert_serial.
 * 0, or a GnuTLS error code (out is then ""). */
int sp_tls_serial(gnutls_x509_crt_t crt, char *out, size_t len);
/* The serial of the first certificate in a PEM file.  0, or -EINVAL with err naming the file. */
int sp_tls_file_serial(const char *path, char *out, size_t len, struct sp_error *err);

#endif
