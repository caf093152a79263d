/* Fuzz target: any settings.yml is read or refused with a message, never a crash. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "proxy/settings.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[] = "/tmp/fuzz-settings-XXXXXX";
    struct sp_settings s;
    struct sp_error err;
    int fd = mkstemp(path);

    if (fd < 0 || write(fd, data, size) != (ssize_t)size) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    close(fd);
    if (sp_settings_load(path, &s, &err) == 0)
        sp_settings_free(&s);
    unlink(path);
    return 0;
}
