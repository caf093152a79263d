/* What the Check suites share: running a suite, a scratch directory, test certificates. */
#ifndef SUITE_H
#define SUITE_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Runs every test of the suite; the process's exit status. */
static inline int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* A new directory under $TEST_TMPDIR (or /tmp) named after the test. */
static inline void scratch_new(char *dir, size_t len, const char *name)
{
    const char *tmp = getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/tmp";

    snprintf(dir, len, "%s/%s-%d-XXXXXX", tmp, name, getpid());
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static inline void scratch_remove(const char *dir)
{
    char cmd[1024];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static inline void scratch_write(const char *dir, const char *name, const char *text)
{
    char path[1024];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

/* CA, server and client certificates (tests/tls/make-certs.sh says which) in dir. */
static inline void scratch_certs(const char *dir)
{
    char cmd[1024];

    snprintf(cmd, sizeof(cmd), "sh '%s/make-certs.sh' '%s'", getenv("TLS_SCRIPTS"), dir);
    ck_assert_int_eq(system(cmd), 0);
}

#endif
