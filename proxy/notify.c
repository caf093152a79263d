#include "proxy/notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "proxy/log.h"
#include "smart-proxy/module.h"

static struct sockaddr_un notify_addr;
static socklen_t notify_len; /* 0: no $NOTIFY_SOCKET */

int sp_notify_open(struct sp_error *err)
{
    const char *name = getenv("NOTIFY_SOCKET");
    size_t n = name != NULL ? strlen(name) : 0;

    if (name == NULL)
        return 0;
    if ((name[0] != '/' && name[0] != '@') || n < 2 || n >= sizeof(notify_addr.sun_path))
        return sp_fail(err, -EINVAL,
                       "NOTIFY_SOCKET '%s' is not an AF_UNIX socket path or @abstract name of at "
                       "most %zu characters",
                       name, sizeof(notify_addr.sun_path) - 1);
    notify_addr.sun_family = AF_UNIX;
    memcpy(notify_addr.sun_path, name, n);
    if (name[0] == '@')
        notify_addr.sun_path[0] = '\0';
    notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    unsetenv("NOTIFY_SOCKET");
    return 0;
}

void sp_notify(const char *fmt, ...)
{
    char state[256];
    va_list ap;
    int fd;

    if (notify_len == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(state, sizeof(state), fmt, ap);
    va_end(ap);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || sendto(fd, state, strlen(state), MSG_NOSIGNAL,
                         (const struct sockaddr *)&notify_addr, notify_len) < 0)
        sp_log(SP_LOG_WARNING, NULL, "cannot tell systemd '%s' through NOTIFY_SOCKET %s%s: %s",
               state, notify_addr.sun_path[0] == '\0' ? "@" : "",
               notify_addr.sun_path + (notify_addr.sun_path[0] == '\0'), strerror(errno));
    if (fd >= 0)
        close(fd);
}
