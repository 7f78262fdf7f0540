/* The Python module and the host's side of a launch, in the caller's process. */
#include "launcher.h"

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

static PyObject *launch(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    PyObject *argv_obj;
    double timeout = -1.0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*O|d", &buf, &argv_obj, &timeout))
        return NULL;
    image_t im;
    PyObject *result = NULL;
    PyObject *argv_seq = NULL;
    char **argv = NULL;
    if (parse_image(buf.buf, (size_t)buf.len, &im) < 0) {
        PyErr_SetString(PyExc_ValueError, "not a plan image of this ringfence");
        goto out;
    }
    argv_seq = PySequence_Fast(argv_obj, "argv must be a sequence of bytes");
    if (argv_seq == NULL)
        goto out;
    Py_ssize_t argc = PySequence_Fast_GET_SIZE(argv_seq);
    if (argc < 1) {
        PyErr_SetString(PyExc_ValueError, "argv must not be empty");
        goto out;
    }
    argv = PyMem_Calloc((size_t)argc + 1, sizeof(char *));
    if (argv == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    for (Py_ssize_t i = 0; i < argc; i++) {
        PyObject *a = PySequence_Fast_GET_ITEM(argv_seq, i);
        if (!PyBytes_Check(a) || (size_t)PyBytes_GET_SIZE(a) != strlen(PyBytes_AS_STRING(a))) {
            PyErr_SetString(PyExc_ValueError, "argv items must be bytes without NUL");
            goto out;
        }
        argv[i] = PyBytes_AS_STRING(a);
    }

    int errp[2], statp[2], ctlp[2];
    if (pipe2(errp, O_CLOEXEC) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto out;
    }
    if (pipe2(statp, O_CLOEXEC) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(errp[0]);
        close(errp[1]);
        goto out;
    }
    if (pipe2(ctlp, O_CLOEXEC) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(errp[0]);
        close(errp[1]);
        close(statp[0]);
        close(statp[1]);
        goto out;
    }
    int state_fd = lock_state(&im);
    struct sigaction saved[N_FORWARDED];
    struct sigaction fwd;
    memset(&fwd, 0, sizeof(fwd));
    fwd.sa_handler = on_signal;
    fwd.sa_flags = SA_RESTART;
    sigemptyset(&fwd.sa_mask);
    forward_fd = ctlp[1];
    for (size_t i = 0; i < N_FORWARDED; i++)
        sigaction(FORWARDED[i], &fwd, &saved[i]);

    pid_t pid;
    int wstatus = 0, timed_out = 0, clone_errno = 0;
    Py_BEGIN_ALLOW_THREADS
    pid = (pid_t)syscall(SYS_clone, (unsigned long)(im.ns_flags | SIGCHLD), NULL, NULL, NULL, NULL);
    if (pid == 0) {
        close(errp[0]);
        close(statp[0]);
        close(ctlp[1]);
        err_fd = errp[1];
        for (size_t i = 0; i < N_FORWARDED; i++)
            signal(FORWARDED[i], SIG_IGN);
        sandbox_main(&im, argv, ctlp[0], statp[1]);
    }
    clone_errno = errno;
    close(errp[1]);
    close(statp[1]);
    close(ctlp[0]);
    if (pid > 0) {
        int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        struct timespec start;
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (;;) {
            int wait_ms = -1;
            if (timeout >= 0) {
                struct timespec now;
                clock_gettime(CLOCK_MONOTONIC, &now);
                double left = timeout - ((double)(now.tv_sec - start.tv_sec) +
                                         (double)(now.tv_nsec - start.tv_nsec) / 1e9);
                wait_ms = left <= 0 ? 0 : (int)(left * 1000.0) + 1;
            }
            struct pollfd pf = {pidfd, POLLIN, 0};
            int rc = pidfd >= 0 ? poll(&pf, 1, wait_ms) : 1;
            if (rc < 0 && errno == EINTR)
                continue;
            if (rc == 0) {
                timed_out = 1;
                kill(pid, SIGKILL); /* pid 1 of the sandbox: its whole namespace ends */
            }
            break;
        }
        while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
        }
        if (pidfd >= 0)
            close(pidfd);
    }
    Py_END_ALLOW_THREADS
    forward_fd = -1;
    for (size_t i = 0; i < N_FORWARDED; i++)
        sigaction(FORWARDED[i], &saved[i], NULL);
    close(ctlp[1]);
    if (state_fd >= 0)
        close(state_fd);
    if (pid < 0) {
        close(errp[0]);
        close(statp[0]);
        result = Py_BuildValue("(siss)", "unsupported", clone_errno, "clone", strerror(clone_errno));
        goto out;
    }
    char ebuf[1100];
    ssize_t elen = read_all(errp[0], ebuf, sizeof(ebuf) - 1);
    int cmd_status = 0;
    ssize_t slen = read_all(statp[0], (char *)&cmd_status, sizeof(cmd_status));
    close(errp[0]);
    close(statp[0]);
    if (elen >= 5) {
        int code;
        memcpy(&code, ebuf + 1, 4);
        const char *kind = ebuf[0] == R_EXEC          ? "exec_error"
                           : ebuf[0] == R_CWD         ? "cwd_error"
                           : ebuf[0] == R_UNSUPPORTED ? "unsupported"
                                                      : "error";
        result = Py_BuildValue("(siy#)", kind, code, ebuf + 5, (Py_ssize_t)(elen - 5));
    } else if (slen == (ssize_t)sizeof(cmd_status)) {
        if (WIFSIGNALED(cmd_status))
            result = Py_BuildValue("(si)", "signal", WTERMSIG(cmd_status));
        else
            result = Py_BuildValue("(si)", "exit", WEXITSTATUS(cmd_status));
    } else if (timed_out) {
        result = Py_BuildValue("(si)", "timeout", 0);
    } else {
        result = Py_BuildValue("(siy)", "error", 0,
                               WIFSIGNALED(wstatus) ? "the sandbox's init was killed"
                                                    : "the sandbox's init ended without a report");
    }
out:
    PyMem_Free(argv);
    Py_XDECREF(argv_seq);
    image_free(&im);
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef methods[] = {
    {"launch", launch, METH_VARARGS,
     "launch(image, argv, timeout=-1) -> (kind, value[, detail]): run argv in the sandbox the "
     "image describes. kind: exit, signal, timeout, exec_error, cwd_error, unsupported, error."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_launcher", NULL, -1, methods};

PyMODINIT_FUNC PyInit__launcher(void)
{
    return PyModule_Create(&module);
}
