#include "util/secrets.h"

#include <string.h>

static const char *const secret_keys[] = {
    "ssh_password",     "key_passphrase",          "effective_user_password",
    "ansible_password", "ansible_become_password",
};

bool df_secret_key(const char *key)
{
    for (size_t i = 0; i < sizeof(secret_keys) / sizeof(secret_keys[0]); i++)
        if (strcmp(key, secret_keys[i]) == 0)
            return true;
    return false;
}

/* A secret: null stays null (Foreman sends unset passwords so), anything else is replaced. */
static json_t *redact_value(json_t *v, bool *had)
{
    if (json_is_null(v))
        return json_null();
    *had = true;
    return json_string(DF_REDACTED);
}

static json_t *redact_object(json_t *secrets, bool *had)
{
    json_t *r = json_object(), *v;
    const char *k;

    json_object_foreach(secrets, k, v) json_object_set_new(r, k, redact_value(v, had));
    return r;
}

json_t *df_redact_secrets(json_t *in, bool *had)
{
    json_t *out, *v;
    const char *k;
    size_t i;

    if (json_is_object(in)) {
        out = json_object();
        json_object_foreach(in, k, v)
        {
            if (strcmp(k, "secrets") == 0 && json_is_object(v))
                json_object_set_new(out, k, redact_object(v, had));
            else if (strcmp(k, "secrets") == 0 || df_secret_key(k))
                json_object_set_new(out, k, redact_value(v, had));
            else
                json_object_set_new(out, k, df_redact_secrets(v, had));
        }
        return out;
    }
    if (json_is_array(in)) {
        out = json_array();
        json_array_foreach(in, i, v) json_array_append_new(out, df_redact_secrets(v, had));
        return out;
    }
    return json_incref(in);
}

static bool is_redacted(json_t *v)
{
    return json_is_string(v) && strcmp(json_string_value(v), DF_REDACTED) == 0;
}

bool df_json_has_redacted_secrets(json_t *in)
{
    json_t *v, *s;
    const char *k, *sk;
    size_t i;

    if (json_is_array(in)) {
        json_array_foreach(in, i, v) if (df_json_has_redacted_secrets(v)) return true;
        return false;
    }
    json_object_foreach(in, k, v)
    {
        bool secrets = strcmp(k, "secrets") == 0;
        if ((secrets || df_secret_key(k)) && is_redacted(v))
            return true;
        if (secrets && json_is_object(v)) {
            json_object_foreach(v, sk, s) if (is_redacted(s)) return true;
        } else if (df_json_has_redacted_secrets(v)) {
            return true;
        }
    }
    return false;
}
