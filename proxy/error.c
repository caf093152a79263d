#include "proxy/error.h"

#include <stdarg.h>
#include <stdio.h>

int sp_fail(struct sp_error *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL) {
        va_start(ap, fmt);
        vsnprintf(err->text, sizeof(err->text), fmt, ap);
        va_end(ap);
    }
    return code;
}
