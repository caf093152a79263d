/*
 * bench/floor: a bare libmicrohttpd server with smart-proxyd's threading
 * options, answering every request with a constant JSON body: the ceiling
 * bench/http compares smart-proxyd with.  floor PORT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"

static const char body[] = "{\"count\":0,\"state\":\"all\"}";

static enum MHD_Result answer(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **req_cls)
{
    struct MHD_Response *r;
    enum MHD_Result ok;

    (void)cls, (void)url, (void)method, (void)version, (void)upload, (void)upload_size;
    if (*req_cls == NULL) {
        *req_cls = (void *)1;
        return MHD_YES;
    }
    r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Content-Type", "application/json");
    ok = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ok;
}

int main(int argc, char **argv)
{
    return serve(argc, argv, answer, NULL);
}
