#include "api/check.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "runner/dispatcher.h"
#include "util/util.h"

int df_check_task(df_world *w, const char *cls, const char *where, const json_t *action_input,
                  df_error *err)
{
    const json_t *callback = json_object_get(action_input, "callback");
    const json_t *secrets = json_object_get(action_input, "secrets");
    const struct df_runner_class *rc = df_dispatcher_runner_class(df_dispatcher_of(w), cls);
    json_t *none = NULL;
    df_error why = {{0}};
    int rc_check = 0;

    if (action_input != NULL && !json_is_object(action_input))
        return df_errorf(err, -EINVAL, "'%s' must be an object, found %s", where,
                         df_json_type_name(action_input));
    if (callback != NULL && !json_is_null(callback) && !json_is_object(callback))
        return df_errorf(err, -EINVAL,
                         "'%s.callback' must be an object with Foreman's task_id and step_id, "
                         "found %s",
                         where, df_json_type_name(callback));
    /* only the type is named: the value may be a password */
    if (secrets != NULL && !json_is_null(secrets) && !json_is_object(secrets))
        return df_errorf(err, -EINVAL, "'%s.secrets' must be an object of secret values, found %s",
                         where, df_json_type_name(secrets));
    if (rc == NULL || rc->check_input == NULL)
        return 0;
    if (action_input == NULL)
        action_input = none = json_object();
    rc_check = rc->check_input(rc, action_input, &why);
    json_decref(none);
    if (rc_check < 0)
        return df_errorf(err, -EINVAL, "'%s' for %s: %s", where, cls, why.text);
    return 0;
}

/* The class name at where ("input.action_class"), a string naming a registered class. */
static int check_class(df_world *w, const char *where, const json_t *cls, df_error *err)
{
    if (!json_is_string(cls))
        return df_errorf(err, -EINVAL, "'%s' must be a string naming an action class, found %s",
                         where, df_json_type_name(cls));
    if (!df_world_has_class(w, json_string_value(cls)))
        return df_errorf(err, -EINVAL, "'%s': unknown action class '%s'", where,
                         json_string_value(cls));
    return 0;
}

int df_check_single(df_world *w, const json_t *input, df_error *err)
{
    const json_t *cls = json_object_get(input, "action_class");

    if (check_class(w, "input.action_class", cls, err) < 0)
        return -EINVAL;
    return df_check_task(w, json_string_value(cls), "input.action_input",
                         json_object_get(input, "action_input"), err);
}

/* One entry of a batch: its key a task UUID, its class known, its input as the class wants it. */
static int check_entry(df_world *w, enum df_launcher_kind kind, const char *default_class,
                       const char *key, const json_t *entry, df_error *err)
{
    const json_t *cls = json_object_get(entry, "action_class");
    char where[DF_UUID_BUF + 32];

    if (!df_uuid_valid(key))
        return strlen(key) <= DF_UUID_BUF
                   ? df_errorf(err, -EINVAL,
                               "'input' must map task UUIDs to objects: '%s' is not a UUID", key)
                   : df_errorf(err, -EINVAL,
                               "'input' must map task UUIDs to objects: a key of %zu bytes is not "
                               "a UUID",
                               strlen(key));
    if (!json_is_object(entry))
        return df_errorf(err, -EINVAL, "'input.%s' must be an object, found %s", key,
                         df_json_type_name(entry));
    snprintf(where, sizeof(where), "input.%s.action_class", key);
    if (kind == DF_LAUNCH_GROUP || cls == NULL) { /* a group runs every entry with its runner */
        if (default_class == NULL)
            return df_errorf(err, -EINVAL, "'%s' is missing, and the operation has no default",
                             where);
        cls = NULL;
    } else if (check_class(w, where, cls, err) < 0) {
        return -EINVAL;
    }
    snprintf(where, sizeof(where), "input.%s.action_input", key);
    return df_check_task(w, cls != NULL ? json_string_value(cls) : default_class, where,
                         json_object_get(entry, "action_input"), err);
}

int df_check_batch(df_world *w, enum df_launcher_kind kind, const char *default_class,
                   const json_t *input, df_error *err)
{
    const char *key;
    json_t *entry;

    json_object_foreach((json_t *)input, key, entry)
    {
        if (check_entry(w, kind, default_class, key, entry, err) < 0)
            return -EINVAL;
    }
    return 0;
}
