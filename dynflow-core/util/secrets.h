/*
 * The one redaction rule for secrets in task inputs (doc/api-input.md): what is kept in memory
 * only and shown as "[REDACTED]" in SQLite, logs and every JSON document.
 */
#ifndef DF_SECRETS_H
#define DF_SECRETS_H

#include <jansson.h>
#include <stdbool.h>

#define DF_REDACTED "[REDACTED]"

/* Whether key names a secret wherever it appears in an input (ssh_password, key_passphrase,
 * effective_user_password, ansible_password, ansible_become_password). */
bool df_secret_key(const char *key);
/* New reference: in with every secret replaced by "[REDACTED]" (null stays null): each value of a
 * "secrets" object, a "secrets" value of another type whole, and the value of a secret key at
 * any depth.  *had is set when something was replaced. */
json_t *df_redact_secrets(json_t *in, bool *had);
/* Whether in holds a value df_redact_secrets() replaced: it was loaded back from the database,
 * and the secrets it had are gone. */
bool df_json_has_redacted_secrets(json_t *in);

#endif
