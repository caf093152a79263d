/*
 * :ssl_disabled_ciphers: holds OpenSSL cipher-suite names (Ruby's smart-proxy
 * hands them to OpenSSL).  GnuTLS priorities remove algorithms, not suites,
 * so a suite name removes its bulk cipher for every key exchange: a stricter
 * setting than asked for, never a weaker one.  GnuTLS cipher names
 * ("AES-128-CBC") are accepted as they are.
 *
 * Certificate serials are written here too, in the one format the listener (a client's) and
 * the core's settings (its own) compare.
 */
#include "proxy/tls.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <string.h>

/* An OpenSSL suite's bulk cipher, by the part of its name that says it. */
static const struct {
    const char *suite_part; /* matched at the end of the name, before any MAC */
    const char *gnutls;
} ciphers[] = {
    {"AES128-GCM-SHA256", "AES-128-GCM"},
    {"AES256-GCM-SHA384", "AES-256-GCM"},
    {"AES128-CCM", "AES-128-CCM"},
    {"AES256-CCM", "AES-256-CCM"},
    {"AES128-SHA256", "AES-128-CBC"},
    {"AES256-SHA384", "AES-256-CBC"},
    {"AES256-SHA256", "AES-256-CBC"},
    {"AES128-SHA", "AES-128-CBC"},
    {"AES256-SHA", "AES-256-CBC"},
    {"CHACHA20-POLY1305", "CHACHA20-POLY1305"},
    {"CAMELLIA128-SHA256", "CAMELLIA-128-CBC"},
    {"CAMELLIA256-SHA384", "CAMELLIA-256-CBC"},
    {"CAMELLIA128-SHA", "CAMELLIA-128-CBC"},
    {"CAMELLIA256-SHA", "CAMELLIA-256-CBC"},
    {"DES-CBC3-SHA", "3DES-CBC"},
    {"RC4-SHA", "ARCFOUR-128"},
    {"RC4-MD5", "ARCFOUR-128"},
};

static const char *const gnutls_ciphers[] = {
    "AES-128-GCM",      "AES-256-GCM",      "AES-128-CCM",       "AES-256-CCM",
    "AES-128-CBC",      "AES-256-CBC",      "CHACHA20-POLY1305", "CAMELLIA-128-CBC",
    "CAMELLIA-256-CBC", "CAMELLIA-128-GCM", "CAMELLIA-256-GCM",  "3DES-CBC",
    "ARCFOUR-128",
};

static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), m = strlen(tail);

    return n >= m && strcmp(s + n - m, tail) == 0 && (n == m || s[n - m - 1] == '-');
}

static const char *gnutls_cipher(const char *name)
{
    for (size_t i = 0; i < sizeof(gnutls_ciphers) / sizeof(gnutls_ciphers[0]); i++)
        if (strcmp(name, gnutls_ciphers[i]) == 0)
            return gnutls_ciphers[i];
    for (size_t i = 0; i < sizeof(ciphers) / sizeof(ciphers[0]); i++)
        if (ends_with(name, ciphers[i].suite_part))
            return ciphers[i].gnutls;
    return NULL;
}

static int append(char *out, size_t len, const char *what, const char *name)
{
    size_t used = strlen(out);
    int n = snprintf(out + used, len - used, ":-%s%s", what, name);

    return n < 0 || (size_t)n >= len - used ? -ENOSPC : 0;
}

int sp_tls_priorities(const struct sp_settings *s, char *out, size_t len, char *why, size_t why_len)
{
    json_t *v;
    size_t i;

    snprintf(out, len, "NORMAL:-VERS-TLS1.1:-VERS-TLS1.0");
    json_array_foreach(sp_setting(s, "tls_disabled_versions"), i, v)
    {
        if (append(out, len, "VERS-TLS", json_string_value(v)) < 0)
            goto too_long;
    }
    json_array_foreach(sp_setting(s, "ssl_disabled_ciphers"), i, v)
    {
        const char *cipher = gnutls_cipher(json_string_value(v));
        if (cipher == NULL) {
            snprintf(why, why_len,
                     ":ssl_disabled_ciphers: unknown cipher suite '%s' (expected an OpenSSL "
                     "suite name such as ECDHE-RSA-AES128-SHA, or a GnuTLS cipher name)",
                     json_string_value(v));
            return -EINVAL;
        }
        if (strstr(out, cipher) == NULL && append(out, len, "", cipher) < 0)
            goto too_long;
    }
    return 0;
too_long:
    snprintf(why, why_len, ":tls_disabled_versions: and :ssl_disabled_ciphers: are too long");
    return -EINVAL;
}

int sp_tls_serial(gnutls_x509_crt_t crt, char *out, size_t len)
{
    unsigned char raw[64];
    size_t raw_len = sizeof(raw);
    int rc = gnutls_x509_crt_get_serial(crt, raw, &raw_len);

    out[0] = '\0';
    for (size_t i = 0; rc == 0 && i < raw_len && 2 * i + 2 < len; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return rc;
}

int sp_tls_file_serial(const char *path, char *out, size_t len, struct sp_error *err)
{
    gnutls_datum_t pem = {NULL, 0};
    gnutls_x509_crt_t crt;
    int rc = gnutls_load_file(path, &pem);

    if (rc < 0)
        return sp_fail(err, -EINVAL, "cannot read the certificate %s: %s", path,
                       gnutls_strerror(rc));
    rc = gnutls_x509_crt_init(&crt);
    if (rc == 0) {
        rc = gnutls_x509_crt_import(crt, &pem, GNUTLS_X509_FMT_PEM);
        if (rc == 0)
            rc = sp_tls_serial(crt, out, len);
        gnutls_x509_crt_deinit(crt);
    }
    gnutls_free(pem.data);
    return rc < 0
               ? sp_fail(err, -EINVAL, "%s is not a PEM certificate: %s", path, gnutls_strerror(rc))
               : 0;
}
