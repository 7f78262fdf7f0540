/* The Python module and the host's side of a launch, in the caller's process. */
#include "launcher.h"

#include <dirent.h>
#include <pthread.h>

/* ---- the host side: in the caller's process ---- */

static const int FORWARDED[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};
#define N_FORWARDED (sizeof(FORWARDED) / sizeof(FORWARDED[0]))
static volatile int forward_fd = -1;

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (forward_fd >= 0) {
        ssize_t unused = write(forward_fd, &b, 1);
        (void)unused;
    }
    errno = saved;
}

static int lock_state(const image_t *im)
{
    if (im->state_lock.ptr == NULL)
        return -1;
    int fd = open(im->state_lock.ptr, O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0 && flock(fd, LOCK_SH) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static ssize_t read_all(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    while (got < cap) {
        ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

static void close_pair(int p[2])
{
    if (p[0] >= 0)
        close(p[0]);
    if (p[1] >= 0)
        close(p[1]);
    p[0] = p[1] = -1;
}

typedef struct {
    int err[2], status[2], ctl[2], go[2], names[2], reports[2], told[2];
} pipes_t;
#define N_PIPES 7

static int open_pipes(pipes_t *p)
{
    int *all[] = {p->err, p->status, p->ctl, p->go, p->names, p->reports, p->told};
    for (size_t i = 0; i < N_PIPES; i++)
        all[i][0] = all[i][1] = -1;
    for (size_t i = 0; i < N_PIPES; i++)
        if (pipe2(all[i], O_CLOEXEC) < 0)
            return -1;
    if (fcntl(p->reports[0], F_SETFL, O_NONBLOCK) < 0 || fcntl(p->told[0], F_SETFL, O_NONBLOCK) < 0)
        return -1;
    /* the resolver never waits on the host: a name that does not fit is lost (and said so) */
    return fcntl(p->names[1], F_SETFL, O_NONBLOCK);
}

static void close_pipes(pipes_t *p)
{
    close_pair(p->err);
    close_pair(p->status);
    close_pair(p->ctl);
    close_pair(p->go);
    close_pair(p->names);
    close_pair(p->reports);
    close_pair(p->told);
}

/* The guard's records as pid 1 forwards them, read while the command runs (pid 1 must never
 * wait on a full pipe). Bounded: the guard caps its findings per command itself. */
#define REPORTS_MAX (8u << 20)
typedef struct {
    char *data;
    size_t len, cap;
} growbuf_t;

/* Returns 1 when `b` is full and `keep` says not to read on: what is left stays in the pipe,
 * and its writer (the guard) finds no room, so it refuses its call (guard_tell.py). */
static int drain_into(int fd, growbuf_t *b, int keep)
{
    for (;;) {
        if (b->cap - b->len < 65536 && b->cap < REPORTS_MAX) {
            size_t cap = b->cap ? b->cap * 2 : 131072;
            char *grown = PyMem_RawRealloc(b->data, cap);
            if (grown != NULL) {
                b->data = grown;
                b->cap = cap;
            }
        }
        char sink[4096];
        int room = b->cap - b->len > 0;
        if (!room && keep)
            return 1;
        ssize_t n = room ? read(fd, b->data + b->len, b->cap - b->len) : read(fd, sink, sizeof(sink));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        if (room)
            b->len += (size_t)n;
    }
}

static void drain(int fd, growbuf_t *b)
{
    drain_into(fd, b, 0);
}

/* Wait for pid 1 (through a pidfd, so a timeout can end it); 1 if the deadline came. */
#define KILL_TREE 255  /* on the control pipe: pid 1 ends the command's tree, then reports */

/* pid 1 and every process of its pid namespace the host can see, each killed in its own
 * right: pid 1 may be starved (its command shares its uid, and may have lowered its priority
 * and pinned it to a busy CPU), and the kernel ends a namespace from pid 1's exit. */
static void kill_outright(pid_t pid)
{
    char path[64], target[128], link[128];
    snprintf(path, sizeof(path), "/proc/%d/ns/pid", (int)pid);
    ssize_t n = readlink(path, target, sizeof(target) - 1);
    kill(pid, SIGKILL);
    if (n <= 0)
        return;
    target[n] = 0;
    DIR *d = opendir("/proc");
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long other = strtol(e->d_name, &end, 10);
        if (*end != 0 || other <= 0 || other == pid)
            continue;
        snprintf(path, sizeof(path), "/proc/%ld/ns/pid", other);
        ssize_t m = readlink(path, link, sizeof(link) - 1);
        if (m == n && memcmp(link, target, (size_t)n) == 0)
            kill((pid_t)other, SIGKILL);
    }
    closedir(d);
}
#define KILL_GRACE 20.0 /* seconds it has to (sandbox_side.KILL_GRACE) before it is killed */

/* What the host reads while it waits: pid 1's forwarded records, and the names the guard
 * tells it itself (guard_tell.py). */
typedef struct {
    int fd[2];
    growbuf_t *buf[2];
    int keep[2]; /* never drop what it says (drain_into) */
} readers_t;

/* Wait for pid 1 (through a pidfd), draining what `in` reads. At the deadline pid 1 is
 * told to end the command's whole tree (its guard still checks what the command made, as in
 * the Python runner); if it has not ended KILL_GRACE seconds later, it is killed, and with
 * it the namespace. 1 if the deadline came. */
static int wait_sandbox(pid_t pid, double timeout, int *wstatus, readers_t in, int ctl_w)
{
    int timed_out = 0;
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int wait_ms = -1;
        double deadline = timed_out ? timeout + KILL_GRACE : timeout;
        if (timeout >= 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            double left = deadline - ((double)(now.tv_sec - start.tv_sec) +
                                      (double)(now.tv_nsec - start.tv_nsec) / 1e9);
            wait_ms = left <= 0 ? 0 : left > 1e6 ? 1000000000 : (int)(left * 1000.0) + 1;
        }
        int rc;
        if (pidfd >= 0) {
            struct pollfd pf[3] = {{pidfd, POLLIN, 0}, {in.fd[0], POLLIN, 0}, {in.fd[1], POLLIN, 0}};
            rc = poll(pf, 3, wait_ms);
            if (rc > 0 && (pf[1].revents || pf[2].revents)) {
                for (int i = 0; i < 2; i++) {
                    if (!pf[i + 1].revents)
                        continue;
                    if (drain_into(in.fd[i], in.buf[i], in.keep[i]) ||
                        pf[i + 1].revents & (POLLHUP | POLLERR))
                        in.fd[i] = -1; /* full, or all writers gone: poll ignores it */
                }
                if (!(pf[0].revents & POLLIN))
                    continue;
            }
        } else { /* no pidfd (an old kernel): look every 10 ms */
            drain_into(in.fd[0], in.buf[0], in.keep[0]);
            drain_into(in.fd[1], in.buf[1], in.keep[1]);
            int st;
            pid_t got = waitpid(pid, &st, WNOHANG);
            if (got == pid) {
                *wstatus = st;
                return timed_out;
            }
            if (got < 0 && errno != EINTR)
                return timed_out;
            if (wait_ms == 0) {
                rc = 0;
            } else {
                struct timespec ts = {0, 10000000L};
                nanosleep(&ts, NULL);
                continue;
            }
        }
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc == 0 && !timed_out) {
            timed_out = 1;
            unsigned char kill_tree = KILL_TREE;
            if (write(ctl_w, &kill_tree, 1) == 1)
                continue;
        }
        if (rc == 0)
            kill_outright(pid);
        break;
    }
    while (waitpid(pid, wstatus, 0) < 0 && errno == EINTR) {
    }
    if (pidfd >= 0)
        close(pidfd);
    return timed_out;
}

typedef struct {
    long oom_kills;
    char names[65536]; /* the names pipe's whole capacity */
    Py_ssize_t names_len;
    growbuf_t reports;
    growbuf_t told; /* names the guard told the host itself, each a u32 length and bytes */
    double duration;
} info_t;

static PyObject *outcome(const char *kind, int value, const char *detail, Py_ssize_t len,
                         const info_t *info)
{
    return Py_BuildValue("(siy#{sl,sy#,sy#,sy#,sd})", kind, value, detail, len, "oom_kills",
                         info ? info->oom_kills : 0L, "names", info ? info->names : "",
                         info ? info->names_len : (Py_ssize_t)0, "reports",
                         info && info->reports.data ? info->reports.data : "",
                         info ? (Py_ssize_t)info->reports.len : (Py_ssize_t)0, "told",
                         info && info->told.data ? info->told.data : "",
                         info ? (Py_ssize_t)info->told.len : (Py_ssize_t)0, "duration",
                         info ? info->duration : 0.0);
}

#define UNSHARE_HELP                                                                           \
    "cannot create unprivileged user namespaces on this host (%s). Enable them (sysctl "        \
    "kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0, or the AppArmor userns " \
    "restriction on Ubuntu), or run outside a container that forbids them; or opt in to "     \
    "reduced isolation (--isolation reduced), which protects less: `ringfence explain "        \
    "--isolation reduced` lists what. `ringfence doctor` shows what is missing"

/* The whole run, with the image parsed; the caller holds the GIL and has checked argv. */
/* Moving pid 1 into its cgroup v2 cgroup costs an RCU grace period (~10 ms on the VM):
 * done in a thread of its own while this one asks the kept request's questions again.
 * (v1 cgroups pid 1 joins itself, cheaply: cgroups.c.) */
typedef struct {
    const cgrun_t *cg;
    pid_t pid;
    char *msg;
    size_t msglen;
    int rc;
} joining_t;

static void *join_main(void *arg)
{
    joining_t *j = arg;
    j->rc = cg_join(j->cg, j->pid, j->msg, j->msglen);
    return NULL;
}

/* The whole run of an image. With `verify` (a kept request), pid 1 builds the view while the
 * host asks the request's questions again and joins it to its cgroups; pid 1 starts nothing
 * until the go-ahead, which comes only when every answer is the same (else ("miss", ...)). */
static PyObject *run_image(image_t *im, char **argv, double timeout, const unsigned char *verify,
                           size_t verify_len)
{
    pipes_t p;
    char msg[1100];
    if (open_pipes(&p) < 0) {
        close_pipes(&p);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    cgrun_t cg;
    if (cg_create(im, &cg, msg, sizeof(msg)) < 0) {
        close_pipes(&p);
        if (verify != NULL) { /* a stale request is a miss (compiled again), not an error */
            char why[600] = "";
            int same = entry_verify(verify, verify_len, why, sizeof(why));
            if (same != 1)
                return Py_BuildValue("(siy{})", "miss", 0, same < 0 ? "a malformed native entry" : why);
        }
        char full[1200];
        int n = snprintf(full, sizeof(full), "cannot set up the sandbox's cgroup: %s", msg);
        return outcome("error", 0, full, n, NULL);
    }
    int state_fd = lock_state(im);
    /* the guards of all the user's sandboxes take turns on it (statedirs.open_guard_lock) */
    int guard_lock = im->guard_bpf != NULL && im->guard_lock.ptr != NULL
                         ? open(im->guard_lock.ptr, O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)
                         : -1;
    info_t *infop = PyMem_RawCalloc(1, sizeof(info_t));
    if (infop == NULL) {
        cg_remove(&cg);
        if (state_fd >= 0)
            close(state_fd);
        if (guard_lock >= 0)
            close(guard_lock);
        close_pipes(&p);
        return PyErr_NoMemory();
    }
    struct sigaction saved[N_FORWARDED], fwd;
    memset(&fwd, 0, sizeof(fwd));
    fwd.sa_handler = on_signal;
    fwd.sa_flags = SA_RESTART;
    sigemptyset(&fwd.sa_mask);
    forward_fd = p.ctl[1];
    for (size_t i = 0; i < N_FORWARDED; i++)
        sigaction(FORWARDED[i], &fwd, &saved[i]);

    pid_t pid;
    int wstatus = 0, timed_out = 0, clone_errno = 0, join_failed = 0, verdict = 1;
    char why[600] = "";
    struct timespec began, ended_at;
    clock_gettime(CLOCK_MONOTONIC, &began);
    ended_at = began;
    Py_BEGIN_ALLOW_THREADS
    pid = (pid_t)syscall(SYS_clone, (unsigned long)(im->ns_flags | SIGCHLD), NULL, NULL, NULL, NULL);
    if (pid == 0) {
        close(p.err[0]);
        close(p.status[0]);
        close(p.ctl[1]);
        close(p.go[1]);
        close(p.names[0]);
        err_fd = p.err[1];
        reset_signals();
        for (size_t i = 0; i < N_FORWARDED; i++)
            signal(FORWARDED[i], SIG_IGN); /* the host forwards them to the command */
        /* into the run's v1 cgroups first, while this is the only thread (cgroups.c) */
        if (cg_join_self(&cg, msg, sizeof(msg)) < 0)
            die(errno, "cannot start the sandbox runner: %s", msg);
        cg_close_tasks(&cg); /* opened by root: whoever holds one may move others in */
        /* Nothing of the host's but stdio and our pipes (a listening socket or a lock of the
         * host's must not live as long as the sandbox). */
        int keep[] = {0, 1, 2, p.err[1], p.ctl[0], p.status[1], p.go[0], p.names[1],
                      p.reports[1], p.told[1], guard_lock};
        close_all_but(keep, (int)(sizeof(keep) / sizeof(keep[0])));
        sandbox_fds_t fds = {p.ctl[0], p.status[1], p.go[0], p.names[1], p.reports[1], p.told[1],
                             guard_lock};
        sandbox_main(im, argv, &fds);
    }
    clone_errno = errno;
    cg_close_tasks(&cg);
    if (pid < 0 && verify != NULL) /* a stale request is a miss, not an error */
        verdict = entry_verify(verify, verify_len, why, sizeof(why));
    close(p.err[1]);
    close(p.status[1]);
    close(p.ctl[0]);
    close(p.go[0]);
    close(p.names[1]);
    close(p.reports[1]);
    close(p.told[1]);
    p.err[1] = p.status[1] = p.ctl[0] = p.go[0] = p.names[1] = p.reports[1] = p.told[1] = -1;
    if (pid > 0) {
        joining_t j = {&cg, pid, msg, sizeof(msg), 0};
        pthread_t joiner;
        int host_joins = cg_host_joins(&cg);
        int threaded = host_joins && pthread_create(&joiner, NULL, join_main, &j) == 0;
        if (host_joins && !threaded)
            join_main(&j);
        if (verify != NULL)
            verdict = entry_verify(verify, verify_len, why, sizeof(why));
        if (threaded)
            pthread_join(joiner, NULL);
        join_failed = j.rc < 0;
        if (join_failed || verdict != 1 || write(p.go[1], "g", 1) != 1)
            kill(pid, SIGKILL); /* nothing of the command has started */
        close(p.go[1]);
        p.go[1] = -1;
        readers_t in = {{p.reports[0], p.told[0]}, {&infop->reports, &infop->told}, {0, 1}};
        timed_out = wait_sandbox(pid, timeout, &wstatus, in, p.ctl[1]);
        drain(p.reports[0], &infop->reports); /* the rest: pid 1 is gone, so are its writes */
        drain_into(p.told[0], &infop->told, 1); /* (its guard: killed with the namespace) */
        clock_gettime(CLOCK_MONOTONIC, &ended_at);
    }
    Py_END_ALLOW_THREADS
    forward_fd = -1;
    for (size_t i = 0; i < N_FORWARDED; i++)
        sigaction(FORWARDED[i], &saved[i], NULL);
    if (guard_lock >= 0)
        close(guard_lock);
    infop->oom_kills = cg_oom_kills(&cg);
    long oom = infop->oom_kills;
    cg_remove(&cg);
    if (state_fd >= 0)
        close(state_fd);
    PyObject *result;
    if (verdict != 1) {
        if (verdict < 0)
            snprintf(why, sizeof(why), "a malformed native entry");
        result = Py_BuildValue("(siy{})", "miss", 0, why);
    } else if (pid < 0) {
        int n = snprintf(msg, sizeof(msg), UNSHARE_HELP, errtext(clone_errno));
        result = outcome("unsupported", clone_errno, msg, n, NULL);
    } else {
        infop->names_len = read_all(p.names[0], infop->names, sizeof(infop->names));
        char err[1100];
        ssize_t elen = read_all(p.err[0], err, sizeof(err) - 1);
        ended_t ended = {0, 0, 0.0};
        ssize_t slen = read_all(p.status[0], (char *)&ended, sizeof(ended));
        int cmd_status = ended.status;
        /* the command's own time; the sandbox's, as the host saw it, when pid 1 said nothing
         * (a timeout killed it) */
        infop->duration = slen == (ssize_t)sizeof(ended)
                              ? ended.duration
                              : (double)(ended_at.tv_sec - began.tv_sec) +
                                    (double)(ended_at.tv_nsec - began.tv_nsec) / 1e9;
        if (elen >= 5) { /* pid 1's own word first: it says why it failed */
            int code;
            memcpy(&code, err + 1, 4);
            const char *kind = err[0] == R_EXEC          ? "exec_error"
                               : err[0] == R_CWD         ? "cwd_error"
                               : err[0] == R_UNSUPPORTED ? "unsupported"
                                                         : "error";
            result = outcome(kind, code, err + 5, elen - 5, infop);
        } else if (join_failed) {
            char full[1200];
            int n = snprintf(full, sizeof(full), "cannot start the sandbox runner: %s", msg);
            result = outcome("error", 0, full, n, NULL);
        } else if (timed_out) {
            result = outcome("timeout", 0, "", 0, infop);
        } else if (slen == (ssize_t)sizeof(ended)) {
            if (WIFSIGNALED(cmd_status))
                result = outcome("signal", WTERMSIG(cmd_status), "", 0, infop);
            else
                result = outcome("exit", WEXITSTATUS(cmd_status), "", 0, infop);
        } else if (WIFSIGNALED(wstatus) && oom > 0) {
            result = outcome("signal", SIGKILL, "", 0, infop); /* the memory cap killed pid 1 */
        } else {
            const char *w = WIFSIGNALED(wstatus) ? "the sandbox's init was killed"
                                                 : "the sandbox's init ended without a report";
            result = outcome("error", 0, w, (Py_ssize_t)strlen(w), infop);
        }
    }
    PyMem_RawFree(infop->reports.data);
    PyMem_RawFree(infop->told.data);
    PyMem_RawFree(infop);
    close_pipes(&p);
    return result;
}

/* argv as the children use it: a tuple of its own (no other thread can free an item while
 * the children read it) and a NULL-terminated array into it. */
static char **argv_of(PyObject *argv_obj, PyObject **tuple_out)
{
    PyObject *t = PySequence_Tuple(argv_obj);
    *tuple_out = t;
    if (t == NULL)
        return NULL;
    Py_ssize_t argc = PyTuple_GET_SIZE(t);
    if (argc < 1) {
        PyErr_SetString(PyExc_ValueError, "argv must not be empty");
        return NULL;
    }
    char **argv = PyMem_Calloc((size_t)argc + 1, sizeof(char *));
    if (argv == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < argc; i++) {
        PyObject *a = PyTuple_GET_ITEM(t, i);
        if (!PyBytes_Check(a) || (size_t)PyBytes_GET_SIZE(a) != strlen(PyBytes_AS_STRING(a))) {
            PyErr_SetString(PyExc_ValueError, "argv items must be bytes without NUL");
            PyMem_Free(argv);
            return NULL;
        }
        argv[i] = PyBytes_AS_STRING(a);
    }
    return argv;
}

static PyObject *launch_image(const unsigned char *data, size_t size, PyObject *argv_obj,
                              double timeout, const unsigned char *verify, size_t verify_len)
{
    image_t im;
    PyObject *result = NULL, *tuple = NULL;
    char **argv = NULL;
    if (parse_image(data, size, &im) < 0) {
        PyErr_SetString(PyExc_ValueError, "not a plan image of this ringfence");
        goto out;
    }
    argv = argv_of(argv_obj, &tuple);
    if (argv != NULL)
        result = run_image(&im, argv, timeout, verify, verify_len);
out:
    PyMem_Free(argv);
    Py_XDECREF(tuple);
    image_free(&im);
    return result;
}

static PyObject *launch(PyObject *self, PyObject *args)
{
    PyObject *image_obj, *argv_obj;
    double timeout = -1.0;
    (void)self;
    /* bytes, immutable: the file contents the children write are read from it in place */
    if (!PyArg_ParseTuple(args, "SO|d", &image_obj, &argv_obj, &timeout))
        return NULL;
    return launch_image((const unsigned char *)PyBytes_AS_STRING(image_obj),
                        (size_t)PyBytes_GET_SIZE(image_obj), argv_obj, timeout, NULL, 0);
}

/* oneshot(entry, argv): a kept request (entry.c, its seal checked by the caller), asked
 * again and, when every answer is the same, run. ("miss", 0, why, {}) otherwise. */
static PyObject *oneshot(PyObject *self, PyObject *args)
{
    PyObject *entry_obj, *argv_obj;
    (void)self;
    if (!PyArg_ParseTuple(args, "SO", &entry_obj, &argv_obj))
        return NULL;
    entry_t e;
    char why[600];
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(entry_obj);
    size_t size = (size_t)PyBytes_GET_SIZE(entry_obj);
    if (entry_parse(data, size, &e, why, sizeof(why)) <= 0)
        return Py_BuildValue("(siy{})", "miss", 0, why);
    return launch_image(e.image, e.image_len, argv_obj, e.timeout, data, size);
}

#define KEYCTL_SEARCH_ 10
#define KEYCTL_READ_ 11
#define KEY_SPEC_USER_KEYRING_ -4

/* The plan cache's sealing key (plancache/seal.py) if this user's keyring holds it: read,
 * never made here (the usual path makes it). None otherwise. */
static PyObject *secret(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    long id = syscall(SYS_keyctl, KEYCTL_SEARCH_, KEY_SPEC_USER_KEYRING_, "user",
                      "ringfence:plan-cache-seal", 0);
    unsigned char buf[64];
    long n = id < 0 ? -1 : syscall(SYS_keyctl, KEYCTL_READ_, id, buf, sizeof(buf), 0);
    if (n != 32)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)buf, n);
}

static PyMethodDef methods[] = {
    {"launch", launch, METH_VARARGS,
     "launch(image, argv, timeout=-1) -> (kind, value, detail, info): run argv in the sandbox "
     "the image describes. kind: exit, signal, timeout, exec_error, cwd_error, unsupported, error."},
    {"oneshot", oneshot, METH_VARARGS,
     "oneshot(entry, argv) -> as launch, or (\"miss\", 0, why, {}) when an answer differs."},
    {"secret", secret, METH_NOARGS, "secret() -> the plan cache's sealing key, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_launcher", NULL, -1, methods};

PyMODINIT_FUNC PyInit__launcher(void)
{
    return PyModule_Create(&module);
}
