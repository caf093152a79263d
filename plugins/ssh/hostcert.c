/*
 * Host certificates (reference/plugins.md §1.7, :ssh_ca_known_hosts_file:).
 *
 * OpenSSH checks a host against "@cert-authority <patterns> <CA key>" lines
 * with StrictHostKeyChecking=yes.  libssh 0.10 neither negotiates certificate
 * host keys nor reads those lines, so the check is done here: the session
 * proves that the host holds the private half of its plain host key, and an
 * OpenSSH certificate for that same key (fetched with ssh-keyscan -c) binds
 * it to the host name, once its CA signature, type, validity, principals and
 * critical options check out as OpenSSH checks them.
 */
#include <ctype.h>
#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ssh.h"

#define CERT_SUFFIX         "-cert-v01@openssh.com"
#define SSH2_CERT_TYPE_HOST 2

/* A view of bytes in a blob. */
struct span {
    const uint8_t *p;
    size_t n;
};

/* ---- the wire format (RFC 4251 §5) ------------------------------------------------------- */

static bool take(struct span *in, size_t n, struct span *out)
{
    if (in->n < n)
        return false;
    *out = (struct span){in->p, n};
    in->p += n;
    in->n -= n;
    return true;
}

static bool take_u32(struct span *in, uint32_t *v)
{
    struct span b;

    if (!take(in, 4, &b))
        return false;
    *v = (uint32_t)b.p[0] << 24 | (uint32_t)b.p[1] << 16 | (uint32_t)b.p[2] << 8 | b.p[3];
    return true;
}

static bool take_u64(struct span *in, uint64_t *v)
{
    uint32_t hi, lo;

    if (!take_u32(in, &hi) || !take_u32(in, &lo))
        return false;
    *v = (uint64_t)hi << 32 | lo;
    return true;
}

static bool take_string(struct span *in, struct span *s)
{
    uint32_t n;

    return take_u32(in, &n) && take(in, n, s);
}

static bool span_is(struct span s, const char *text)
{
    return s.n == strlen(text) && memcmp(s.p, text, s.n) == 0;
}

static bool span_eq(struct span a, struct span b)
{
    return a.n == b.n && memcmp(a.p, b.p, a.n) == 0;
}

/* New buffer with the decoded base64 text (len bytes of it); NULL when it is not base64. */
static uint8_t *decode_base64(const char *text, size_t len, size_t *out_len)
{
    uint8_t *buf;
    int n;

    if (len == 0 || len % 4 != 0 || len > 65536)
        return NULL;
    buf = malloc(len / 4 * 3 + 1);
    if (buf == NULL)
        abort();
    n = EVP_DecodeBlock(buf, (const unsigned char *)text, (int)len);
    if (n < 0) {
        free(buf);
        return NULL;
    }
    *out_len = (size_t)n - (text[len - 1] == '=') - (text[len - 2] == '=');
    return buf;
}

/* ---- the certificate (OpenSSH's PROTOCOL.certkeys) ----------------------------------------- */

struct host_cert {
    char key_type[32]; /* the plain type: "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256" */
    struct span key;   /* the public key's fields, as in the plain key's blob */
    uint32_t type;     /* 1 user, 2 host */
    struct span principals;
    uint64_t valid_after, valid_before;
    struct span critical;
    struct span ca_key;    /* the CA's public key blob */
    struct span signature; /* over everything before it */
    struct span signed_part;
};

/* The number of public-key fields that follow the nonce, by plain type; 0: unsupported. */
static int key_fields(const char *type)
{
    if (strcmp(type, "ssh-ed25519") == 0)
        return 1;
    if (strcmp(type, "ssh-rsa") == 0 || strncmp(type, "ecdsa-sha2-", 11) == 0)
        return 2; /* e and n; curve and point */
    return 0;
}

static bool parse_cert(struct span blob, struct host_cert *c)
{
    struct span in = blob, type, skip, field;
    size_t plain_len;
    uint64_t serial;
    int fields;

    if (!take_string(&in, &type) || type.n <= strlen(CERT_SUFFIX) ||
        memcmp(type.p + type.n - strlen(CERT_SUFFIX), CERT_SUFFIX, strlen(CERT_SUFFIX)) != 0)
        return false;
    plain_len = type.n - strlen(CERT_SUFFIX);
    if (plain_len >= sizeof(c->key_type))
        return false;
    memcpy(c->key_type, type.p, plain_len);
    c->key_type[plain_len] = '\0';
    if ((fields = key_fields(c->key_type)) == 0 || !take_string(&in, &skip)) /* the nonce */
        return false;
    c->key.p = in.p;
    for (int i = 0; i < fields; i++)
        if (!take_string(&in, &field))
            return false;
    c->key.n = (size_t)(in.p - c->key.p);
    if (!take_u64(&in, &serial) || !take_u32(&in, &c->type) || !take_string(&in, &skip) ||
        !take_string(&in, &c->principals) || !take_u64(&in, &c->valid_after) ||
        !take_u64(&in, &c->valid_before) || !take_string(&in, &c->critical) ||
        !take_string(&in, &skip) || !take_string(&in, &skip) || !take_string(&in, &c->ca_key))
        return false;
    c->signed_part = (struct span){blob.p, (size_t)(in.p - blob.p)};
    return take_string(&in, &c->signature) && in.n == 0;
}

/* Whether the certificate is for this plain key (its blob as libssh exports it). */
static bool cert_is_for(const struct host_cert *c, struct span plain)
{
    struct span type;

    return take_string(&plain, &type) && span_is(type, c->key_type) && span_eq(plain, c->key);
}

static bool listed_principal(const struct host_cert *c, const char *host)
{
    struct span in = c->principals, name;

    while (take_string(&in, &name))
        if (span_is(name, host))
            return true;
    return false;
}

/* OpenSSH's text for a check that failed; NULL when the certificate is good now. */
static const char *cert_problem(const struct host_cert *c, const char *host, uint64_t now)
{
    if (c->type != SSH2_CERT_TYPE_HOST)
        return "not a host certificate";
    if (now < c->valid_after)
        return "not yet valid";
    if (now >= c->valid_before)
        return "expired";
    if (c->principals.n == 0)
        return "certificate lacks principal list";
    if (!listed_principal(c, host))
        return "name is not a listed principal";
    if (c->critical.n != 0) /* none is defined for host certificates */
        return "unsupported critical option";
    return NULL;
}

/* ---- the CA's signature (OpenSSL) -------------------------------------------------------- */

static EVP_PKEY *ed25519_key(struct span in)
{
    struct span pk;

    if (!take_string(&in, &pk) || pk.n != 32)
        return NULL;
    return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pk.p, pk.n);
}

static EVP_PKEY *key_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY *key = NULL;

    if (ctx != NULL && params != NULL && EVP_PKEY_fromdata_init(ctx) > 0)
        EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params);
    OSSL_PARAM_free(params);
    EVP_PKEY_CTX_free(ctx);
    return key;
}

static EVP_PKEY *rsa_key(struct span in)
{
    struct span e, n;
    OSSL_PARAM_BLD *bld;
    BIGNUM *bn_e, *bn_n;
    EVP_PKEY *key = NULL;

    if (!take_string(&in, &e) || !take_string(&in, &n) || n.n > 2048)
        return NULL;
    bn_e = BN_bin2bn(e.p, (int)e.n, NULL);
    bn_n = BN_bin2bn(n.p, (int)n.n, NULL);
    bld = OSSL_PARAM_BLD_new();
    if (bn_e != NULL && bn_n != NULL && bld != NULL &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e))
        key = key_from_params("RSA", bld);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_e);
    BN_free(bn_n);
    return key;
}

static const char *curve_of(struct span id)
{
    if (span_is(id, "nistp256"))
        return "prime256v1";
    if (span_is(id, "nistp384"))
        return "secp384r1";
    if (span_is(id, "nistp521"))
        return "secp521r1";
    return NULL;
}

static EVP_PKEY *ecdsa_key(struct span in)
{
    struct span id, point;
    const char *curve;
    OSSL_PARAM_BLD *bld;
    EVP_PKEY *key = NULL;

    if (!take_string(&in, &id) || !take_string(&in, &point) || (curve = curve_of(id)) == NULL)
        return NULL;
    bld = OSSL_PARAM_BLD_new();
    if (bld != NULL && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, curve, 0) &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point.p, point.n))
        key = key_from_params("EC", bld);
    OSSL_PARAM_BLD_free(bld);
    return key;
}

/* ECDSA signatures travel as two mpints; OpenSSL wants DER. New buffer in *der. */
static int ecdsa_der(struct span sig, unsigned char **der)
{
    struct span r, s;
    ECDSA_SIG *es;
    BIGNUM *br, *bs;
    int n = -1;

    if (!take_string(&sig, &r) || !take_string(&sig, &s) || sig.n != 0)
        return -1;
    es = ECDSA_SIG_new();
    br = BN_bin2bn(r.p, (int)r.n, NULL);
    bs = BN_bin2bn(s.p, (int)s.n, NULL);
    if (es != NULL && br != NULL && bs != NULL && ECDSA_SIG_set0(es, br, bs) == 1) {
        br = bs = NULL; /* es owns them */
        n = i2d_ECDSA_SIG(es, der);
    }
    BN_free(br);
    BN_free(bs);
    ECDSA_SIG_free(es);
    return n;
}

/* The digest that goes with a signature algorithm, for the CA key's type; NULL: refused. */
static bool digest_for(const char *ca_type, struct span alg, const EVP_MD **md)
{
    if (strcmp(ca_type, "ssh-ed25519") == 0 && span_is(alg, "ssh-ed25519"))
        *md = NULL;
    else if (strcmp(ca_type, "ssh-rsa") == 0 && span_is(alg, "rsa-sha2-256"))
        *md = EVP_sha256();
    else if (strcmp(ca_type, "ssh-rsa") == 0 && span_is(alg, "rsa-sha2-512"))
        *md = EVP_sha512(); /* ssh-rsa (SHA-1) is not in OpenSSH's CASignatureAlgorithms */
    else if (strcmp(ca_type, "ecdsa-sha2-nistp256") == 0 && span_is(alg, ca_type))
        *md = EVP_sha256();
    else if (strcmp(ca_type, "ecdsa-sha2-nistp384") == 0 && span_is(alg, ca_type))
        *md = EVP_sha384();
    else if (strcmp(ca_type, "ecdsa-sha2-nistp521") == 0 && span_is(alg, ca_type))
        *md = EVP_sha512();
    else
        return false;
    return true;
}

static EVP_PKEY *public_key(const char *type, struct span fields)
{
    if (strcmp(type, "ssh-ed25519") == 0)
        return ed25519_key(fields);
    if (strcmp(type, "ssh-rsa") == 0)
        return rsa_key(fields);
    if (strncmp(type, "ecdsa-sha2-", 11) == 0)
        return ecdsa_key(fields);
    return NULL;
}

static bool signed_by_ca(const struct host_cert *c)
{
    struct span ca = c->ca_key, ca_type, sig = c->signature, alg, bytes;
    char type[32];
    const EVP_MD *md;
    unsigned char *der = NULL;
    EVP_MD_CTX *ctx;
    EVP_PKEY *key;
    bool ok = false;

    if (!take_string(&ca, &ca_type) || ca_type.n >= sizeof(type) || !take_string(&sig, &alg) ||
        !take_string(&sig, &bytes) || sig.n != 0)
        return false;
    memcpy(type, ca_type.p, ca_type.n);
    type[ca_type.n] = '\0';
    if (!digest_for(type, alg, &md) || (key = public_key(type, ca)) == NULL)
        return false;
    if (strncmp(type, "ecdsa-sha2-", 11) == 0) {
        int n = ecdsa_der(bytes, &der);
        bytes = (struct span){der, n > 0 ? (size_t)n : 0};
    }
    ctx = EVP_MD_CTX_new();
    if (ctx != NULL && bytes.n > 0 && EVP_DigestVerifyInit(ctx, NULL, md, NULL, key) == 1)
        ok = EVP_DigestVerify(ctx, bytes.p, bytes.n, c->signed_part.p, c->signed_part.n) == 1;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(key);
    OPENSSL_free(der);
    return ok;
}

/* ---- the known_hosts file: @cert-authority and @revoked lines ------------------------------ */

/* "|1|<salt>|<hash>": HMAC-SHA1 of the name with the salt. */
static bool hashed_name_matches(const char *pattern, const char *name)
{
    const char *salt = pattern + 3, *bar = strchr(salt, '|');
    uint8_t *key, *want, mac[EVP_MAX_MD_SIZE];
    size_t key_len = 0, want_len = 0;
    unsigned mac_len = 0;
    bool ok = false;

    if (bar == NULL)
        return false;
    key = decode_base64(salt, (size_t)(bar - salt), &key_len);
    want = decode_base64(bar + 1, strlen(bar + 1), &want_len);
    if (key != NULL && want != NULL &&
        HMAC(EVP_sha1(), key, (int)key_len, (const unsigned char *)name, strlen(name), mac,
             &mac_len) != NULL)
        ok = mac_len == want_len && CRYPTO_memcmp(mac, want, mac_len) == 0;
    free(key);
    free(want);
    return ok;
}

/* OpenSSH's match_pattern: '*' any run, '?' one character, nothing else special (so
 * "[host]:port" is literal), case-insensitive. */
static bool wildcard_match(const char *pat, const char *s)
{
    const char *star = NULL, *resume = NULL;

    while (*s != '\0') {
        if (*pat == '*') {
            star = pat++;
            resume = s;
        } else if (*pat == '?' || tolower((unsigned char)*pat) == tolower((unsigned char)*s)) {
            pat++;
            s++;
        } else if (star != NULL) {
            pat = star + 1;
            s = ++resume;
        } else {
            return false;
        }
    }
    while (*pat == '*')
        pat++;
    return *pat == '\0';
}

/* OpenSSH's pattern lists: comma-separated, '!' negates and wins. */
static bool patterns_match(char *list, const char *name)
{
    bool matched = false;

    for (char *save = NULL, *p = strtok_r(list, ",", &save); p != NULL;
         p = strtok_r(NULL, ",", &save)) {
        bool negated = *p == '!';
        const char *pat = p + negated;
        bool hit = strncmp(pat, "|1|", 3) == 0 ? hashed_name_matches(pat, name)
                                               : wildcard_match(pat, name);
        if (hit && negated)
            return false;
        matched = matched || hit;
    }
    return matched;
}

struct ca_file_view {
    bool ca_listed; /* the certificate's CA is a @cert-authority for the name */
    bool revoked;   /* the host key, its certificate or the CA is @revoked */
    bool any_ca;    /* the file has a @cert-authority line for the name at all */
};

/* One line: "@marker patterns type base64 [comment]". */
static void read_line(char *line, const char *name, struct span cert, struct span plain,
                      struct span ca, struct ca_file_view *v)
{
    char *save = NULL, *marker = strtok_r(line, " \t\r\n", &save);
    char *patterns = strtok_r(NULL, " \t\r\n", &save);
    char *type = strtok_r(NULL, " \t\r\n", &save), *b64 = strtok_r(NULL, " \t\r\n", &save);
    bool authority, revoked;
    uint8_t *blob;
    size_t len;

    if (marker == NULL || b64 == NULL || type == NULL)
        return;
    authority = strcmp(marker, "@cert-authority") == 0;
    revoked = strcmp(marker, "@revoked") == 0;
    if (!(authority || revoked) || !patterns_match(patterns, name))
        return;
    if ((blob = decode_base64(b64, strlen(b64), &len)) == NULL)
        return;
    struct span key = {blob, len};
    if (authority) {
        v->any_ca = true;
        v->ca_listed = v->ca_listed || span_eq(key, ca);
    } else {
        v->revoked = v->revoked || span_eq(key, ca) || span_eq(key, plain) || span_eq(key, cert);
    }
    free(blob);
}

static int read_ca_file(const char *path, const char *name, struct span cert, struct span plain,
                        struct span ca, struct ca_file_view *v)
{
    FILE *f = fopen(path, "r");
    char line[16384];

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        read_line(line, name, cert, plain, ca, v);
    fclose(f);
    return 0;
}

/* ---- the check ----------------------------------------------------------------------------- */

/* OpenSSH's name for a key type in its messages. */
static const char *type_label(const char *plain_type)
{
    if (strcmp(plain_type, "ssh-ed25519") == 0)
        return "ED25519";
    if (strcmp(plain_type, "ssh-rsa") == 0 || strncmp(plain_type, "rsa-sha2-", 9) == 0)
        return "RSA";
    return strncmp(plain_type, "ecdsa-", 6) == 0 ? "ECDSA" : plain_type;
}

/* The certificate among ssh-keyscan -c's lines ("[host] <type> <base64>") for the plain key;
 * new blob, NULL when there is none. */
static uint8_t *find_cert(const char *keyscan, struct span plain, struct host_cert *c, size_t *len)
{
    char *text = strdup(keyscan), *save = NULL;

    if (text == NULL)
        abort();
    for (char *line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char *words = NULL, *w1 = strtok_r(line, " \t\r", &words);
        char *w2 = strtok_r(NULL, " \t\r", &words), *w3 = strtok_r(NULL, " \t\r", &words);
        const char *b64 = w1 != NULL && strstr(w1, CERT_SUFFIX) != NULL ? w2 : w3;
        uint8_t *blob;
        if (w1 == NULL || *w1 == '#' || b64 == NULL)
            continue;
        blob = decode_base64(b64, strlen(b64), len);
        if (blob != NULL && parse_cert((struct span){blob, *len}, c) && cert_is_for(c, plain)) {
            free(text);
            return blob;
        }
        free(blob);
    }
    free(text);
    return NULL;
}

int rex_hostcert_check(const char *ca_file, const char *host, int port, ssh_key server_key,
                       const char *keyscan, uint64_t now, char *why, size_t len)
{
    char name[300];
    const char *label = type_label(ssh_key_type_to_char(ssh_key_type(server_key)));
    const char *problem;
    char *exported = NULL;
    uint8_t *plain_blob = NULL;
    size_t plain_len = 0;
    struct ca_file_view view = {0};
    struct host_cert c;
    uint8_t *blob = NULL;
    size_t blob_len = 0;
    struct span plain;
    int rc = -1;

    if (port == 22)
        snprintf(name, sizeof(name), "%s", host);
    else
        snprintf(name, sizeof(name), "[%s]:%d", host, port);
    if (ssh_pki_export_pubkey_base64(server_key, &exported) == SSH_OK)
        plain_blob = decode_base64(exported, strlen(exported), &plain_len);
    ssh_string_free_char(exported);
    if (plain_blob == NULL) {
        snprintf(why, len, "cannot read the host key of %s", name);
        return -1;
    }
    plain = (struct span){plain_blob, plain_len};
    blob = find_cert(keyscan, plain, &c, &blob_len);
    if (blob == NULL) {
        snprintf(why, len,
                 "No %s host key is known for %s and you have requested strict checking "
                 "(the host offers no certificate for its %s key).",
                 label, name, label);
    } else if (read_ca_file(ca_file, name, (struct span){blob, blob_len}, plain, c.ca_key, &view) <
               0) {
        snprintf(why, len, "cannot read :ssh_ca_known_hosts_file: %s: %s", ca_file,
                 strerror(errno));
    } else if (view.revoked) {
        snprintf(why, len, "Host key %s-CERT of %s is revoked in %s.", label, name, ca_file);
    } else if (!view.ca_listed) {
        snprintf(why, len,
                 "No %s host key is known for %s and you have requested strict checking "
                 "(%s lists %s for it).",
                 label, name, ca_file,
                 view.any_ca ? "other certificate authorities" : "no certificate authority");
    } else if (!signed_by_ca(&c)) {
        snprintf(why, len, "Certificate invalid: the CA signature does not verify (host %s).",
                 name);
    } else if ((problem = cert_problem(&c, host, now)) != NULL) {
        snprintf(why, len, "Certificate invalid: %s (host %s).", problem, name);
    } else {
        rc = 0;
    }
    free(blob);
    free(plain_blob);
    return rc;
}
