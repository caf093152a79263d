/* Fuzz target: any body to every POST handler of the task API must get a 2xx/4xx, never a crash. */
#include <stdint.h>
#include <stdlib.h>

#include "api/api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static df_world *w;
static df_api *api;

static void teardown(void)
{
    df_world_free(w);
    df_api_free(api);
}

static void start(void)
{
    df_error err;

    w = df_world_new(NULL, &err);
    df_api_register_classes(w, &err);
    df_world_start(w, &err);
    api = df_api_new(w);
    df_api_register_operation(api, &(struct df_plugin_operation){"single", DF_LAUNCH_SINGLE, NULL},
                              NULL);
    df_api_register_operation(api, &(struct df_plugin_operation){"batch", DF_LAUNCH_BATCH, NULL},
                              NULL);
    atexit(teardown);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static void (*const handlers[])(df_api *, const struct df_api_request *,
                                    struct df_api_response *) = {
        df_api_launch,      df_api_trigger, df_api_statuses,
        df_api_bulk_status, df_api_cancel,  df_api_status};
    struct df_api_request req = {.task_id = "00000000-0000-4000-8000-000000000001",
                                 .body = (const char *)data,
                                 .body_len = size,
                                 .host = "fuzz"};

    if (api == NULL)
        start();
    for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++) {
        struct df_api_response res = {0};
        handlers[i](api, &req, &res);
        if (res.status >= 500 && res.status != 503)
            abort();
        json_decref(res.body);
        df_json_stream_free(res.stream);
    }
    struct df_api_response res = {0};
    df_api_event(api, &req, true, &res);
    json_decref(res.body);
    return 0;
}
