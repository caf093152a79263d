/* smart-proxyd as a child process for the HTTP-level suites (header-only). */
#ifndef DAEMONUTIL_H
#define DAEMONUTIL_H

#include <check.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The scratch directory with settings.yml and settings.d/ the daemon runs with. */
static char workdir[512];

static inline unsigned free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    getsockname(fd, (struct sockaddr *)&sa, &len);
    close(fd);
    return ntohs(sa.sin_port);
}

/* Runs smart-proxyd with dir/settings.yml; its stderr goes to a pipe. */
static inline pid_t start_in(const char *dir, const char *extra_arg, int *err_fd)
{
    char config[700];
    int fds[2];
    pid_t pid;

    snprintf(config, sizeof(config), "%s/settings.yml", dir);
    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        dup2(fds[1], 1);
        close(fds[0]);
        execl(getenv("SMART_PROXYD"), "smart-proxyd", "--config", config, extra_arg, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    *err_fd = fds[0];
    return pid;
}

/* Runs smart-proxyd with the test's settings; its stderr goes to a pipe. */
static inline pid_t start(const char *extra_arg, int *err_fd)
{
    return start_in(workdir, extra_arg, err_fd);
}

/* Reads the child's output until it contains needle (or it ends); returns what was read. */
static inline const char *read_until(int fd, const char *needle)
{
    static char buf[8192];
    size_t len = 0;
    ssize_t n;

    buf[0] = '\0';
    while (strstr(buf, needle) == NULL && len < sizeof(buf) - 1 &&
           (n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0) {
        len += (size_t)n;
        buf[len] = '\0';
    }
    return buf;
}

static inline int finish(pid_t pid)
{
    int status;

    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Polls a file until it contains needle (for up to 10 s); the whole file is searched, however
 * long a daemon's log has grown. */
static inline bool file_has(const char *path, const char *needle)
{
    for (int i = 0; i < 1000; i++) {
        FILE *f = fopen(path, "r");
        char *text = NULL;
        size_t cap = 0;
        bool found = f != NULL && getdelim(&text, &cap, '\0', f) > 0 && strstr(text, needle);
        free(text);
        if (f != NULL)
            fclose(f);
        if (found)
            return true;
        usleep(10000);
    }
    return false;
}

/* The size of a file now, 0 when there is none: where a start's log lines will begin. */
static inline long file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* The port a start of the daemon got for scheme ("http" or "https"), from the first line
 * "listening on <scheme>://<host>:<port>" of its log after byte from (the log's size before that
 * start): settings with port 0 let it bind any free port.  0 when there is none within 10 s. */
static inline unsigned listening_port(const char *log_path, long from, const char *scheme)
{
    static char text[65536];
    char needle[64];
    const char *at;

    snprintf(needle, sizeof(needle), "listening on %s://", scheme);
    for (int i = 0; i < 1000; i++, usleep(10000)) {
        FILE *f = fopen(log_path, "r");
        size_t n =
            f != NULL && fseek(f, from, SEEK_SET) == 0 ? fread(text, 1, sizeof(text) - 1, f) : 0;
        if (f != NULL)
            fclose(f);
        text[n] = '\0';
        if ((at = strstr(text, needle)) != NULL && (at = strchr(at + strlen(needle), ':')) != NULL)
            return (unsigned)strtoul(at + 1, NULL, 10);
    }
    return 0;
}

#endif
