/* Failing from a child (a record on the error pipe), and small system-call helpers. */
#include "launcher.h"

/* ---- failing, from a child: a record on the error pipe, then exit ---- */

int err_fd = -1;

void report(char kind, int code, const char *fmt, ...)
{
    char buf[1024];
    buf[0] = kind;
    memcpy(buf + 1, &code, 4);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + 5, sizeof(buf) - 5, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof(buf) - 6)
        n = (int)(sizeof(buf) - 6);
    ssize_t unused = write(err_fd, buf, (size_t)n + 5);
    (void)unused;
}

void die(int code, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    report(R_SANDBOX, code, "%s", msg);
    _exit(125);
}

/* ---- small helpers ---- */

int openat2_(int dirfd, const char *path, uint64_t flags, uint64_t resolve)
{
    struct rf_open_how how = {flags, 0, resolve};
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

int write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    ssize_t n = write(fd, text, len);
    int saved = errno;
    close(fd);
    errno = saved;
    return n == (ssize_t)len ? 0 : -1;
}
