#include "console/console.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

/* A growing string. */
struct buf {
    char *s;
    size_t len, cap;
};

static void put(struct buf *b, const char *text, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = df_realloc(b->s, b->cap);
    }
    memcpy(b->s + b->len, text, n);
    b->len += n;
    b->s[b->len] = '\0';
}

/* Markup: the format itself is trusted, so only constants go through it. */
static void html(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void html(struct buf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    put(b, tmp, n < (int)sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Text from plans and requests: escaped. */
static void text(struct buf *b, const char *s)
{
    for (; s != NULL && *s != '\0'; s++) {
        switch (*s) {
            case '<':
                put(b, "&lt;", 4);
                break;
            case '>':
                put(b, "&gt;", 4);
                break;
            case '&':
                put(b, "&amp;", 5);
                break;
            case '"':
                put(b, "&quot;", 6);
                break;
            case '\'':
                put(b, "&#39;", 5);
                break;
            default:
                put(b, s, 1);
        }
    }
}

static void json_text(struct buf *b, json_t *v)
{
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY);

    text(b, s);
    free(s);
}

static void head(struct buf *b, const char *title)
{
    html(b, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>");
    text(b, title);
    html(b, "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:"
            "collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
            ".success{color:#080}.error{color:#b00}.warning,.skipped,.cancelled{color:#a60}"
            "pre{background:#f6f6f6;padding:.5em;max-height:20em;overflow:auto}"
            ".notice{background:#ffc;padding:.5em}</style></head><body>\n");
}

static void finish(struct buf *b, unsigned status, struct df_console_page *out)
{
    html(b, "</body></html>\n");
    out->status = status;
    out->content_type = "text/html; charset=utf-8";
    out->body = b->s;
}

void df_console_index(df_world *w, const char *base, const char *state, unsigned page,
                      struct df_console_page *out)
{
    static const char *const states[] = {"pending", "scheduled", "planning", "planned",
                                         "running", "paused",    "stopped",  "all"};
    int filter = state == NULL ? -2 : strcmp(state, "all") == 0 ? -1 : df_plan_state_parse(state);
    json_t *ids, *id;
    struct buf b = {0};
    size_t i;

    head(&b, "Dynflow console");
    html(&b, "<h1>Execution plans</h1><p>");
    for (i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
        html(&b, "<a href=\"");
        text(&b, base);
        html(&b, "/?state=%s\">%s</a> ", states[i], states[i]);
    }
    html(&b, "</p><table><tr><th>Id</th><th>Label</th><th>State</th><th>Result</th>"
             "<th>Started at</th></tr>\n");
    /* the default view hides stopped plans, as Dynflow's console does */
    if (filter == -2) {
        ids = json_array();
        for (int s = 0; s < DF_PLAN_STATE_COUNT; s++) {
            json_t *some = s != DF_PLAN_STOPPED ? df_plan_list(w, s, 0, 200) : NULL;
            json_array_extend(ids, some);
            json_decref(some);
        }
    } else {
        ids = df_plan_list(w, filter, (size_t)page * 20, 20);
    }
    json_array_foreach(ids, i, id)
    {
        json_t *j = df_plan_json(w, json_string_value(id), 0);
        if (j == NULL)
            continue;
        const char *result = json_string_value(json_object_get(j, "result"));
        html(&b, "<tr><td><a href=\"");
        text(&b, base);
        html(&b, "/");
        text(&b, json_string_value(id));
        html(&b, "\">");
        text(&b, json_string_value(id));
        html(&b, "</a></td><td>");
        text(&b, json_string_value(json_object_get(j, "label")));
        html(&b, "</td><td>");
        text(&b, json_string_value(json_object_get(j, "state")));
        html(&b, "</td><td class=\"");
        text(&b, result);
        html(&b, "\">");
        text(&b, result);
        html(&b, "</td><td>");
        text(&b, json_string_value(json_object_get(j, "started_at")));
        html(&b, "</td></tr>\n");
        json_decref(j);
    }
    html(&b, "</table><p>");
    if (filter != -2 && page > 0)
        html(&b, "<a href=\"?state=%s&amp;page=%u\">&laquo; Prev</a> ",
             filter < 0 ? "all" : df_plan_state_name(filter), page - 1);
    if (filter != -2 && json_array_size(ids) == 20)
        html(&b, "<a href=\"?state=%s&amp;page=%u\">Next &raquo;</a>",
             filter < 0 ? "all" : df_plan_state_name(filter), page + 1);
    html(&b, "</p>");
    json_decref(ids);
    finish(&b, 200, out);
}

static void button(struct buf *b, const char *base, const char *id, const char *what)
{
    html(b, "<form method=\"post\" style=\"display:inline\" action=\"");
    text(b, base);
    html(b, "/");
    text(b, id);
    html(b, "/%s\"><button>%s</button></form> ", what, what);
}

static void steps_table(struct buf *b, const char *base, const char *id, json_t *plan)
{
    json_t *s;
    size_t i;

    html(b, "<h2>Steps</h2><table><tr><th>Id</th><th>Kind</th><th>Action</th><th>State</th>"
            "<th>Progress</th><th>Queue</th><th>Error</th><th></th></tr>\n");
    json_array_foreach(json_object_get(plan, "steps"), i, s)
    {
        const char *state = json_string_value(json_object_get(s, "state"));
        const char *cls = json_string_value(json_object_get(s, "class"));
        html(b, "<tr><td>%lld</td><td>", (long long)json_integer_value(json_object_get(s, "id")));
        text(b, cls != NULL && strrchr(cls, ':') ? strrchr(cls, ':') + 1 : cls);
        html(b, "</td><td>");
        text(b, json_string_value(json_object_get(s, "action_class")));
        html(b, "</td><td class=\"");
        text(b, state);
        html(b, "\">");
        text(b, state);
        html(b, "</td><td>%.0f%%</td><td>",
             json_number_value(json_object_get(s, "progress_done")) * 100);
        text(b, json_string_value(json_object_get(s, "queue")));
        html(b, "</td><td>");
        text(b, json_string_value(json_object_get(json_object_get(s, "error"), "message")));
        html(b, "</td><td>");
        if (state != NULL && strcmp(state, "error") == 0) {
            char what[32];
            snprintf(what, sizeof(what), "skip/%lld",
                     (long long)json_integer_value(json_object_get(s, "id")));
            button(b, base, id, what);
        }
        html(b, "</td></tr>\n");
    }
    html(b, "</table>\n");
}

void df_console_plan(df_world *w, const char *base, const char *id, const char *notice,
                     struct df_console_page *out)
{
    json_t *j = df_plan_json(w, id, DF_JSON_ACTIONS | DF_JSON_STEPS), *a, *e;
    struct buf b = {0};
    size_t i;

    head(&b, id);
    if (j == NULL) {
        html(&b, "<h1>Not found</h1><p>There is no execution plan ");
        text(&b, id);
        html(&b, ".</p>");
        finish(&b, 404, out);
        return;
    }
    if (notice != NULL) {
        html(&b, "<p class=\"notice\">");
        text(&b, notice);
        html(&b, "</p>");
    }
    html(&b, "<p><a href=\"");
    text(&b, base);
    html(&b, "/\">&laquo; all plans</a></p><h1>");
    text(&b, json_string_value(json_object_get(j, "label")));
    html(&b, "</h1><table>");
    static const char *const fields[] = {"id", "state", "result", "started_at", "ended_at"};
    for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        html(&b, "<tr><th>%s</th><td>", fields[i]);
        text(&b, json_string_value(json_object_get(j, fields[i])));
        html(&b, "</td></tr>");
    }
    html(&b, "</table><p>");
    button(&b, base, id, "resume");
    button(&b, base, id, "cancel");
    html(&b, "</p><h2>Run flow</h2><pre>");
    json_text(&b, json_object_get(j, "run_flow"));
    html(&b, "</pre>");
    steps_table(&b, base, id, j);
    html(&b, "<h2>Actions</h2>");
    json_array_foreach(json_object_get(j, "actions"), i, a)
    {
        html(&b, "<h3>%lld: ", (long long)json_integer_value(json_object_get(a, "id")));
        text(&b, json_string_value(json_object_get(a, "class")));
        html(&b, "</h3><pre>");
        json_t *io = json_pack("{s:O, s:O}", "input", json_object_get(a, "input"), "output",
                               json_object_get(a, "output"));
        json_text(&b, io);
        json_decref(io);
        html(&b, "</pre>");
    }
    html(&b, "<h2>Execution history</h2><table><tr><th>Event</th><th>Time</th><th>World</th></tr>");
    json_array_foreach(json_object_get(j, "execution_history"), i, e)
    {
        html(&b, "<tr><td>");
        text(&b, json_string_value(json_object_get(e, "name")));
        html(&b, "</td><td>%lld</td><td>",
             (long long)json_integer_value(json_object_get(e, "time")));
        text(&b, json_string_value(json_object_get(e, "world_id")));
        html(&b, "</td></tr>");
    }
    html(&b, "</table>");
    json_decref(j);
    finish(&b, 200, out);
}

/* Percent-encodes text for a query string. */
static void url_encode(const char *in, char *out, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;

    for (; *in != '\0' && n + 4 < len; in++) {
        unsigned char c = (unsigned char)*in;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
            out[n++] = (char)c;
        } else {
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    out[n] = '\0';
}

void df_console_act(df_world *w, const char *base, const char *id, const char *what, int step,
                    struct df_console_page *out)
{
    df_error err = {{0}};
    unsigned count = 0;
    char encoded[192];
    const char *notice;

    if (strcmp(what, "resume") == 0)
        notice = df_plan_resume(w, id, &err) < 0 ? err.text : "The execution was resumed";
    else if (strcmp(what, "cancel") == 0)
        notice = df_plan_cancel(w, id, false, &count, &err) < 0 ? err.text
                 : count > 0 ? "The cancel event has been propagated"
                             : "Not possible to cancel at the moment";
    else
        notice = df_plan_skip_step(w, id, step, &err) < 0 ? err.text : "The step was skipped";
    url_encode(notice, encoded, sizeof(encoded));
    out->status = 303;
    out->content_type = "text/plain";
    out->body = df_strdup("");
    snprintf(out->location, sizeof(out->location), "%s/%s?notice=%s", base, id, encoded);
}
