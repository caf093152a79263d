/*
 * Idle connections (beyond upstream, whose ControlMaster ends with the job):
 * a healthy, authenticated session is kept for :connection_idle_timeout:
 * seconds after its job and handed to the next job for the same host, port,
 * user, identity, credentials and host-key policy, which then skips the TCP
 * connect, the key exchange and the authentication.  A session that went
 * stale in the meantime is noticed by that job's first command and replaced
 * by a new connection (job.c).  Only the runner thread touches the pool.
 */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ssh.h"

struct rex_idle {
    struct rex_idle *next;
    char *key; /* rex_pool_key() */
    char *host_port;
    ssh_session s;
    double since; /* monotonic seconds */
};

static double mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void idle_free(struct rex_idle *c)
{
    ssh_disconnect(c->s);
    ssh_free(c->s);
    free(c->key);
    free(c->host_port);
    free(c);
}

/* "host:port", what host-key changes and first_execution drop. */
static char *host_port(const struct rex_job *job)
{
    return rex_printf("%s:%d", job->host, job->port);
}

/* The secrets go in as a digest: two jobs with other passwords do not share a session. */
static void credentials_digest(const struct rex_job *job, char out[65])
{
    unsigned char md[32];
    unsigned int len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    const char *parts[] = {job->password ? job->password : "",
                           job->passphrase ? job->passphrase : ""};

    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        abort();
    for (size_t i = 0; i < 2; i++)
        EVP_DigestUpdate(ctx, parts[i], strlen(parts[i]) + 1);
    EVP_DigestFinal_ex(ctx, md, &len);
    EVP_MD_CTX_free(ctx);
    for (size_t i = 0; i < sizeof(md); i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

char *rex_pool_key(const struct rex_job *job)
{
    const struct rex_settings *st = &job->plugin->s;
    char digest[65];

    credentials_digest(job, digest);
    return rex_printf("%s:%d\n%s\n%s\n%s\n%s", job->host, job->port, job->user, st->key_file,
                      job->pinned_key      ? job->pinned_key
                      : st->ca_known_hosts ? "ca"
                                           : "tofu",
                      digest);
}

static void expire(df_runner *r, void *arg);

/* One sweep timer while the pool holds anything. */
static void arm(struct rex_pool *p)
{
    if (!p->armed && p->head != NULL) {
        p->armed = true;
        df_runner_loop_after(p->world, p->idle_s / 2, expire, p);
    }
}

static void expire(df_runner *r, void *arg)
{
    struct rex_pool *p = arg;
    double now = mono();

    (void)r;
    p->armed = false;
    for (struct rex_idle **pp = &p->head; *pp != NULL;) {
        struct rex_idle *c = *pp;
        if (now - c->since < p->idle_s) {
            pp = &c->next;
            continue;
        }
        *pp = c->next;
        idle_free(c);
        p->n--;
    }
    arm(p);
}

ssh_session rex_pool_take(struct rex_pool *p, const char *key)
{
    double now = mono();

    for (struct rex_idle **pp = &p->head; *pp != NULL; pp = &(*pp)->next) {
        struct rex_idle *c = *pp;
        ssh_session s = c->s;
        if (strcmp(c->key, key) != 0 || now - c->since >= p->idle_s)
            continue;
        *pp = c->next;
        p->n--;
        c->s = NULL;
        free(c->key);
        free(c->host_port);
        free(c);
        return s;
    }
    return NULL;
}

void rex_pool_put(struct rex_pool *p, const struct rex_job *job, ssh_session s)
{
    struct rex_idle *c, **last;

    if (p->idle_s <= 0 || p->max == 0) {
        ssh_disconnect(s);
        ssh_free(s);
        return;
    }
    if (p->n == p->max) { /* the oldest goes: new ones are at the head */
        for (last = &p->head; (*last)->next != NULL; last = &(*last)->next)
            ;
        idle_free(*last);
        *last = NULL;
        p->n--;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        abort();
    *c = (struct rex_idle){.next = p->head,
                           .key = rex_pool_key(job),
                           .host_port = host_port(job),
                           .s = s,
                           .since = mono()};
    p->head = c;
    p->n++;
    arm(p);
}

void rex_pool_forget(struct rex_pool *p, const struct rex_job *job)
{
    char *hp = host_port(job);

    for (struct rex_idle **pp = &p->head; *pp != NULL;) {
        struct rex_idle *c = *pp;
        if (strcmp(c->host_port, hp) != 0) {
            pp = &c->next;
            continue;
        }
        *pp = c->next;
        idle_free(c);
        p->n--;
    }
    free(hp);
}

void rex_pool_clear(struct rex_pool *p)
{
    while (p->head != NULL) {
        struct rex_idle *c = p->head;
        p->head = c->next;
        idle_free(c);
    }
    p->n = 0;
}
