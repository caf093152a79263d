/*
 * The line protocol of script tasks: lines on stdout of the form
 *   ::progress percent=N::text      progress of the step, and text as a debug record
 *   ::set-output key=K::value       output.data.K = value
 *   ::set-state key=K::value        STATE_K=value for the later attempts
 *   ::log level=L::text             a debug record "[L] text"
 * are taken out of the output and applied.  Anything else is output.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "script.h"

struct directive {
    char name[16];
    char param[16];   /* the parameter's name ("percent", "key", "level") */
    char value[128];  /* its value */
    const char *text; /* after the closing "::" */
    size_t text_len;
};

/* "::name param=value::text" */
static bool parse(const char *line, size_t len, struct directive *d)
{
    const char *end = line + len, *p = line + 2, *sp, *eq, *close;

    if (len < 5 || line[0] != ':' || line[1] != ':')
        return false;
    close = memmem(p, (size_t)(end - p), "::", 2);
    sp = close ? memchr(p, ' ', (size_t)(close - p)) : NULL;
    eq = sp ? memchr(sp, '=', (size_t)(close - sp)) : NULL;
    if (eq == NULL || (size_t)(sp - p) >= sizeof(d->name) ||
        (size_t)(eq - sp - 1) >= sizeof(d->param) || (size_t)(close - eq - 1) >= sizeof(d->value))
        return false;
    snprintf(d->name, sizeof(d->name), "%.*s", (int)(sp - p), p);
    snprintf(d->param, sizeof(d->param), "%.*s", (int)(eq - sp - 1), sp + 1);
    snprintf(d->value, sizeof(d->value), "%.*s", (int)(close - eq - 1), eq + 1);
    d->text = close + 2;
    d->text_len = (size_t)(end - d->text);
    return true;
}

/* Keys become STATE_<KEY> environment names: letters, digits and '_' only. */
static bool name_ok(const char *s)
{
    return s[0] != '\0' && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                     "0123456789_") == strlen(s);
}

static bool is(const struct directive *d, const char *name, const char *param)
{
    return strcmp(d->name, name) == 0 && strcmp(d->param, param) == 0 && d->value[0] != '\0';
}

bool script_protocol_line(df_runner *r, const char *line, size_t len, json_t *state)
{
    struct directive d;
    char *end;

    if (!parse(line, len, &d))
        return false;
    if (is(&d, "progress", "percent")) {
        double pct = strtod(d.value, &end);
        if (*end != '\0')
            return false;
        df_runner_progress(r, pct / 100);
        if (d.text_len > 0)
            df_runner_publish_text(r, "debug", "%.*s", (int)d.text_len, d.text);
    } else if ((is(&d, "set-output", "key") || is(&d, "set-state", "key")) && name_ok(d.value)) {
        json_t *v = json_stringn(d.text, d.text_len); /* NULL: not UTF-8, so plain output */
        if (v == NULL)
            return false;
        if (strcmp(d.name, "set-output") == 0)
            df_runner_set_output(r, d.value, v);
        else
            json_object_set_new(state, d.value, v);
    } else if (is(&d, "log", "level") &&
               (strcmp(d.value, "info") == 0 || strcmp(d.value, "warn") == 0 ||
                strcmp(d.value, "error") == 0)) {
        df_runner_publish_text(r, "debug", "[%s] %.*s", d.value, (int)d.text_len, d.text);
    } else {
        return false;
    }
    return true;
}
