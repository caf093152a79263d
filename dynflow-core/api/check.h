/*
 * Launch requests checked before anything is created (doc/api-input.md): the types every task
 * input needs, then the check of the runner class that will run it (struct df_runner_class's
 * check_input, the plugin's own rule).  A failed check is a 422 whose text names the field.
 */
#ifndef DF_API_CHECK_H
#define DF_API_CHECK_H

#include "dynflow/plugin.h"

/* One task's action_input (borrowed; NULL: none, checked as {}) for class cls, called where
 * ("input.<id>.action_input") in messages.  0, or -EINVAL with err naming the field. */
int df_check_task(df_world *w, const char *cls, const char *where, const json_t *action_input,
                  df_error *err);
/* A single launch's input: {"action_class": "…", "action_input": {…}}. */
int df_check_single(df_world *w, const json_t *input, df_error *err);
/* A batch or group launch's input: {"<task UUID>": {"action_class"?, "action_input"}, …};
 * default_class runs the entries without one (batch) or all of them (group). */
int df_check_batch(df_world *w, enum df_launcher_kind kind, const char *default_class,
                   const json_t *input, df_error *err);

#endif
