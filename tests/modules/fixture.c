/*
 * One source for every fixture module of check_modules; each build of it
 * breaks one rule of the ABI through the FIXTURE_* macros.
 */
#include "smart-proxy/module.h"

#ifndef FIXTURE_MAGIC
#define FIXTURE_MAGIC SP_MODULE_MAGIC
#endif
#ifndef FIXTURE_MAJOR
#define FIXTURE_MAJOR SP_MODULE_ABI_MAJOR
#endif
#ifndef FIXTURE_MINOR
#define FIXTURE_MINOR SP_MODULE_ABI_MINOR
#endif
#ifndef FIXTURE_SIG
#define FIXTURE_SIG SP_MODULE_BUILD_SIG
#endif
#ifndef FIXTURE_INIT
#define FIXTURE_INIT fixture_init
#endif

__attribute__((unused)) static int fixture_init(const struct sp_host_api *host,
                                                const json_t *settings, void **state, char *err,
                                                size_t errlen)
{
    (void)host;
    (void)settings;
    (void)err;
    (void)errlen;
    *state = NULL;
    return 0;
}

__attribute__((unused)) static const struct sp_route *fixture_routes(void *state)
{
    static const struct sp_route none[] = {{NULL, NULL, NULL, 0}};

    (void)state;
    return none;
}

__attribute__((unused)) static void fixture_shutdown(void *state)
{
    (void)state;
}

#ifndef FIXTURE_NO_ENTRY
__attribute__((visibility("default"))) const struct sp_module sp_module_entry = {
    .magic = FIXTURE_MAGIC,
    .abi_major = FIXTURE_MAJOR,
    .abi_minor = FIXTURE_MINOR,
    .struct_size = sizeof(struct sp_module),
    .build_sig = FIXTURE_SIG,
    .name = FIXTURE_NAME,
    .version = "0.0.1",
    .init = FIXTURE_INIT,
    .routes = fixture_routes,
    .shutdown = fixture_shutdown,
};
#else
__attribute__((visibility("default"))) const int something_else = FIXTURE_NAME[0];
#endif
