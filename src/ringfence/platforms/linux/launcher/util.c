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

const char *errtext(int code)
{
    /* strerrordesc_np: the English text, a table lookup (strerror may take locale locks) */
    const char *text = strerrordesc_np(code);
    return text ? text : "Unknown error";
}

/* fork() from a clone of a multithreaded process can wait forever on a malloc lock another
 * thread held at the clone (glibc takes them all around fork): a raw clone takes none. */
pid_t rf_fork(void)
{
    return (pid_t)syscall(SYS_clone, (unsigned long)SIGCHLD, NULL, NULL, NULL, NULL);
}

/* Close every descriptor but `keep` (and keep stays sorted afterwards). */
/* close_range, or where it is refused (a kernel before 5.9, a container's seccomp profile)
 * each descriptor the limit allows: nothing of the host's may stay open. */
static void close_from(unsigned low, unsigned high)
{
    if (syscall(SYS_close_range, low, high, 0) == 0)
        return;
    struct rlimit lim;
    unsigned top = getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY &&
                           lim.rlim_cur < (rlim_t)(1U << 20)
                       ? (unsigned)lim.rlim_cur
                       : 1U << 20;
    for (unsigned fd = low; fd <= high && fd < top; fd++)
        close((int)fd);
}

void close_all_but(int *keep, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
            int t = keep[j];
            keep[j] = keep[j - 1];
            keep[j - 1] = t;
        }
    unsigned low = 0;
    for (int i = 0; i < n; i++) {
        if (keep[i] < 0 || (unsigned)keep[i] < low)
            continue;
        if ((unsigned)keep[i] > low)
            close_from(low, (unsigned)keep[i] - 1);
        low = (unsigned)keep[i] + 1;
    }
    close_from(low, ~0U);
}

/* The host's signal handlers are not ours: every caught signal back to its default (pid 1 of
 * a pid namespace then drops what the command sends it), no alternate stack. */
void reset_signals(void)
{
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction old;
        if (sigaction(sig, NULL, &old) == 0 && old.sa_handler != SIG_IGN &&
            old.sa_handler != SIG_DFL)
            signal(sig, SIG_DFL);
    }
    stack_t none = {.ss_flags = SS_DISABLE};
    sigaltstack(&none, NULL);
}

int take(cursor_t *c, void *out, size_t n)
{
    if ((size_t)(c->end - c->p) < n)
        return -1;
    memcpy(out, c->p, n);
    c->p += n;
    return 0;
}

/* A u32 length and that many bytes; *s points into the data (not NUL-terminated). */
int take_bytes(cursor_t *c, const unsigned char **s, uint32_t *len)
{
    if (take(c, len, 4) < 0 || (size_t)(c->end - c->p) < *len)
        return -1;
    *s = c->p;
    c->p += *len;
    return 0;
}
