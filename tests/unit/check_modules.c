/* The module loader refuses every broken module with a message naming the file, found and expected.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proxy/module_loader.h"
#include "suite.h"

static char fixture[600];

static const char *fixture_path(const char *name)
{
    const char *dir = getenv("MODULE_FIXTURES");

    ck_assert_msg(dir != NULL, "MODULE_FIXTURES is not set (run through make check)");
    snprintf(fixture, sizeof(fixture), "%s/%s.so", dir, name);
    return fixture;
}

START_TEST(good_module_loads)
{
    struct sp_loaded_module lm;
    struct sp_error err;
    void *state = (void *)1;
    char text[64];

    ck_assert_msg(sp_module_open(fixture_path("good"), &lm, &err) == 0, "%s", err.text);
    ck_assert_str_eq(lm.m->name, "good");
    ck_assert_int_eq(lm.m->init(NULL, NULL, &state, text, sizeof(text)), 0);
    ck_assert_ptr_null(lm.m->routes(state)[0].method);
    lm.m->shutdown(state);
    sp_module_close(&lm);
}
END_TEST

static const struct {
    const char *fixture;
    int rc;
    const char *message;
} refused[] = {
    {"badmagic", -ENOTSUP,
     "not a smart-proxy module or from an incompatible release "
     "(magic 12345678, expected 50584d31)"},
    {"newabi", -ENOTSUP, "module ABI 2.3, this release supports 1.0-1.3"},
    {"newminor", -ENOTSUP, "module ABI 1.99, this release supports 1.0-1.3"},
    {"mangled", -EINVAL, "module data is mangled"},
    {"badsig", -ENOTSUP, "not binary compatible (built for jansson1,ptr8, running jansson2,ptr8)"},
    {"othername", -EINVAL, "name mismatch (declares 'dynflow', the file stem is 'othername')"},
    {"nosymbol", -ENOENT, "not a smart-proxy module (no symbol sp_module_entry)"},
    {"missing", -ENOENT, "cannot load: No such file or directory"},
};

START_TEST(broken_modules_are_refused)
{
    struct sp_loaded_module lm;
    struct sp_error err;
    const char *path = fixture_path(refused[_i].fixture);

    ck_assert_int_eq(sp_module_open(path, &lm, &err), refused[_i].rc);
    ck_assert_msg(strncmp(err.text, path, strlen(path)) == 0, "no file name: %s", err.text);
    ck_assert_msg(strstr(err.text, refused[_i].message) != NULL, "%s", err.text);
    ck_assert_ptr_null(lm.handle);
}
END_TEST

START_TEST(unsafe_files_are_refused)
{
    const char *tmp = getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/tmp";
    char path[600], cmd[1400];
    struct sp_loaded_module lm;
    struct sp_error err;
    FILE *f;

    snprintf(path, sizeof(path), "%s/good-%d.so", tmp, getpid());
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", fixture_path("good"), path);
    ck_assert_int_eq(system(cmd), 0);
    chmod(path, 0666);
    ck_assert_int_eq(sp_module_open(path, &lm, &err), -EPERM);
    ck_assert_ptr_nonnull(strstr(err.text, "refused: writable by everyone (mode 0666)"));
    unlink(path);

    ck_assert_int_eq(sp_module_open(tmp, &lm, &err), -EPERM);
    ck_assert_ptr_nonnull(strstr(err.text, "refused: not a regular file"));

    snprintf(path, sizeof(path), "%s/text-%d.so", tmp, getpid());
    f = fopen(path, "w");
    fputs("not an ELF file\n", f);
    fclose(f);
    ck_assert_int_eq(sp_module_open(path, &lm, &err), -ENOENT);
    ck_assert_ptr_nonnull(strstr(err.text, "cannot load: "));
    ck_assert_ptr_nonnull(strstr(err.text, "(check its dependencies with ldd)"));
    unlink(path);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("modules");
    TCase *tc = tcase_create("loader");
    int failed;

    tcase_add_test(tc, good_module_loads);
    tcase_add_loop_test(tc, broken_modules_are_refused, 0, sizeof(refused) / sizeof(refused[0]));
    tcase_add_test(tc, unsafe_files_are_refused);
    suite_add_tcase(s, tc);
    failed = run_suite(s);
    return failed;
}
