/*
 * The web console (reference/engine.md §6), server-side HTML: the list of
 * plans with a state filter and pages, a plan's steps, actions and history,
 * and the resume, cancel and skip actions.  Every value is HTML-escaped.
 */
#ifndef DF_CONSOLE_H
#define DF_CONSOLE_H

#include <stddef.h>

#include "dynflow/dynflow.h"

struct df_console_page {
    unsigned status;
    const char *content_type;
    char *body;         /* malloc'ed */
    char location[256]; /* for 303 answers */
};

/* GET <base>/ : plans, newest first; state NULL = all but stopped, "all" = all. */
void df_console_index(df_world *w, const char *base, const char *state, unsigned page,
                      struct df_console_page *out);
/* GET <base>/:id */
void df_console_plan(df_world *w, const char *base, const char *id, const char *notice,
                     struct df_console_page *out);
/* POST <base>/:id/resume, /cancel, /skip/:step: a 303 back to the plan with a notice. */
void df_console_act(df_world *w, const char *base, const char *id, const char *what, int step,
                    struct df_console_page *out);

#endif
