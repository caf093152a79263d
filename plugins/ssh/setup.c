/*
 * The remote side of a job's start (reference/plugins.md §1.4 steps 1–2):
 * upstream runs one ssh command per step (mkdir, tee per file, the preflight
 * script, setfacl, rm).  Each exec channel costs the host a login shell, so
 * the steps that need no terminal go as one POSIX sh script on stdin; file
 * contents travel base64-encoded in here-documents (exact bytes, no argument
 * length limit).  A failing step prints "rex-step <step> <exit code>" on
 * stderr and stops, and the job turns it into upstream's message.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ssh.h"

#define PREFLIGHT_SCRIPT "#!/bin/sh\nexec true\n"

enum setup_step {
    STEP_MKDIR = 1,
    STEP_UPLOAD_PREFLIGHT,
    STEP_RUN_PREFLIGHT,
    STEP_ACL_PREFLIGHT,
    STEP_UPLOAD_SCRIPT,
    STEP_UPLOAD_WRAPPER,
    STEP_UPLOAD_OUTPUT,
    STEP_ACL,
};

bool rex_switching(const struct rex_job *job)
{
    return job->effective_user != NULL && strcmp(job->effective_user, job->user) != 0;
}

char *rex_printf(const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;

    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        abort();
    va_end(ap);
    return s;
}

char *rex_as_user(const struct rex_job *job, const char *path)
{
    if (!rex_switching(job))
        return rex_printf("%s", path);
    if (strcmp(job->method, "sudo") == 0)
        return rex_printf("sudo -p 'rex login: ' -u %s %s", job->effective_user, path);
    if (strcmp(job->method, "dzdo") == 0)
        return rex_printf("dzdo -u %s %s", job->effective_user, path);
    return rex_printf("su - %s -c 'exec %s < /dev/null '", job->effective_user, path);
}

/* The wrapper of §1.4, exactly: the script runs as "<prefix><script> < /dev/null", or for su
 * inside the quoted command. */
static char *wrapper(const struct rex_job *job)
{
    const char *d = job->remote_dir;
    char *script = rex_printf("%s/script", d), *run, *text;

    if (rex_switching(job) && strcmp(job->method, "su") == 0) {
        run = rex_as_user(job, script);
    } else {
        char *prefixed = rex_as_user(job, script);
        run = rex_printf("%s < /dev/null", prefixed);
        free(prefixed);
    }
    text = rex_printf("if [ \"$1\" = \"inner\" ]; then\n"
                      "  echo $$ > %s/pid\n"
                      "  (\n"
                      "    %s\n"
                      "    echo $? >%s/exit_code\n"
                      "  ) | tee %s/output\n"
                      "  if [ -f %s/exit_code ] && [ $(wc -l < %s/exit_code) -gt 0 ]; then\n"
                      "    exit $(cat %s/exit_code)\n"
                      "  else\n"
                      "    exit 1\n"
                      "  fi\n"
                      "else\n"
                      "  UNSHARE=''\n"
                      "  if unshare --fork --kill-child true >/dev/null 2>/dev/null; then\n"
                      "      UNSHARE='unshare --fork --kill-child'\n"
                      "  fi\n"
                      "  exec $UNSHARE \"$0\" inner\n"
                      "fi\n",
                      d, run, d, d, d, d, d);
    free(script);
    free(run);
    return text;
}

static void base64(FILE *out, const unsigned char *data, size_t len)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)data[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)data[i + 1] << 8;
        if (i + 2 < len)
            v |= data[i + 2];
        fputc(abc[(v >> 18) & 63], out);
        fputc(abc[(v >> 12) & 63], out);
        fputc(i + 1 < len ? abc[(v >> 6) & 63] : '=', out);
        fputc(i + 2 < len ? abc[v & 63] : '=', out);
        if (i % 57 == 54)
            fputc('\n', out);
    }
    fputc('\n', out);
}

/* A step that stops the script when it fails, saying which and with what. */
static void step(FILE *out, enum setup_step s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void step(FILE *out, enum setup_step s, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfprintf(out, fmt, ap);
    va_end(ap);
    fprintf(out, " || { echo \"rex-step %d $?\" >&2; exit 1; }\n", s);
}

/* upload(data, path, mode) = tee <path> && chmod <mode> <path> with data on stdin (§1.4). */
static void upload(FILE *out, enum setup_step s, const char *path, const char *mode,
                   const char *data, size_t len)
{
    step(out, s, "base64 -d <<'REX_BASE64_END' | tee %s >/dev/null && chmod %s %s", path, mode,
         path);
    base64(out, (const unsigned char *)data, len);
    fprintf(out, "REX_BASE64_END\n");
}

/* The script with every \r taken out (§1.1). */
static char *strip_cr(const char *s, size_t *len)
{
    char *out = malloc(strlen(s) + 1);
    size_t n = 0;

    if (out == NULL)
        abort();
    for (; *s != '\0'; s++)
        if (*s != '\r')
            out[n++] = *s;
    out[n] = '\0';
    *len = n;
    return out;
}

char *rex_setup_script(const struct rex_job *job, enum rex_phase phase)
{
    const char *d = job->remote_dir;
    char *text = NULL, *script_path = rex_printf("%s/script", d), *body, *wrap;
    size_t len = 0, body_len;
    FILE *out = open_memstream(&text, &len);

    if (out == NULL)
        abort();
    if (phase == PHASE_PREFLIGHT) {
        step(out, STEP_MKDIR, "mkdir -p %s", d);
        upload(out, STEP_UPLOAD_PREFLIGHT, script_path, "0500", PREFLIGHT_SCRIPT,
               strlen(PREFLIGHT_SCRIPT));
        step(out, STEP_RUN_PREFLIGHT, "%s", script_path);
        if (rex_switching(job))
            step(out, STEP_ACL_PREFLIGHT, "setfacl -m u:%s:rx %s", job->effective_user,
                 script_path);
    }
    if (phase == PHASE_UPLOAD || !rex_switching(job)) {
        fprintf(out, "rm %s\n", script_path);
        body = strip_cr(job->script, &body_len);
        upload(out, STEP_UPLOAD_SCRIPT, script_path, "0500", body, body_len);
        wrap = wrapper(job);
        fprintf(out, "W=%s/script-wrapper\n", d);
        upload(out, STEP_UPLOAD_WRAPPER, "$W", "0500", wrap, strlen(wrap));
        fprintf(out, "O=%s/output\n", d);
        upload(out, STEP_UPLOAD_OUTPUT, "$O", "0600", "", 0);
        if (rex_switching(job))
            step(out, STEP_ACL, "{ setfacl -m u:%s:rx $W %s && setfacl -m u:%s:rw $O; }",
                 job->effective_user, script_path, job->effective_user);
        free(body);
        free(wrap);
    }
    fclose(out);
    free(script_path);
    return text;
}

/* Upstream's message for the step a setup script said failed (§1.4). */
void rex_setup_failure(const struct rex_job *job, const char *err_text, int status, char *msg,
                       size_t len)
{
    const char *d = job->remote_dir, *mark = err_text ? strstr(err_text, "rex-step ") : NULL;
    int s = 0, code = status;

    if (mark != NULL && sscanf(mark, "rex-step %d %d", &s, &code) != 2)
        s = 0;
    switch (s) {
        case STEP_MKDIR:
            snprintf(msg, len, "Unable to create directory %s on remote system, exit code: %d", d,
                     code);
            break;
        case STEP_UPLOAD_PREFLIGHT:
        case STEP_UPLOAD_SCRIPT:
            snprintf(msg, len, "Unable to upload file to %s/script on remote system, exit code: %d",
                     d, code);
            break;
        case STEP_UPLOAD_WRAPPER:
            snprintf(msg, len,
                     "Unable to upload file to %s/script-wrapper on remote system, exit code: %d",
                     d, code);
            break;
        case STEP_UPLOAD_OUTPUT:
            snprintf(msg, len, "Unable to upload file to %s/output on remote system, exit code: %d",
                     d, code);
            break;
        case STEP_RUN_PREFLIGHT:
            snprintf(msg, len, "Failed to execute script on remote machine, exit code: %d.", code);
            break;
        case STEP_ACL_PREFLIGHT:
        case STEP_ACL:
            snprintf(
                msg, len,
                "Failed to set the permissions for the effective user with setfacl, exit code: "
                "%d (is the acl package installed on the host?)",
                code);
            break;
        default:
            snprintf(msg, len, "Unable to prepare %s on remote system, exit code: %d", d, code);
    }
}
