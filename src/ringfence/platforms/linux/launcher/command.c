/* pid 1 of the sandbox: the command's init, and the command's start. */
#include "launcher.h"

#include <sys/mman.h>

/* ---- the command ---- */

static const char *env_value(char *const *envp, const char *name)
{
    size_t n = strlen(name);
    for (; *envp != NULL; envp++)
        if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
            return *envp + n + 1;
    return NULL;
}

/* execvpe with the PATH of the command's own environment (posix_spawnp's search). */
static void exec_search(char *const *argv, char *const *envp)
{
    const char *file = argv[0];
    if (strchr(file, '/') != NULL) {
        execve(file, argv, envp);
        return;
    }
    const char *path = env_value(envp, "PATH");
    if (path == NULL)
        path = "/bin:/usr/bin";
    int seen_eacces = 0;
    size_t flen = strlen(file);
    for (const char *p = path;; p++) {
        const char *colon = strchr(p, ':');
        size_t dlen = colon ? (size_t)(colon - p) : strlen(p);
        char full[PATH_CAP];
        if (dlen + flen + 2 <= sizeof(full)) {
            if (dlen == 0) {
                memcpy(full, file, flen + 1);
            } else {
                memcpy(full, p, dlen);
                full[dlen] = '/';
                memcpy(full + dlen + 1, file, flen + 1);
            }
            execve(full, argv, envp);
            if (errno == EACCES)
                seen_eacces = 1;
            else if (errno != ENOENT && errno != ENOTDIR && errno != ESTALE && errno != ENODEV &&
                     errno != ETIMEDOUT)
                return;
        }
        if (colon == NULL)
            break;
        p = colon;
    }
    if (seen_eacces)
        errno = EACCES;
}

static pid_t start_command(const image_t *im, char *const *argv, const sigset_t *old_mask)
{
    pid_t pid = rf_fork();
    if (pid != 0)
        return pid;
    (void)old_mask;
    setsid();
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (chdir(im->cwd.ptr) < 0) {
        report(R_CWD, errno, "chdir %s: %s", im->cwd.ptr, errtext(errno));
        _exit(127);
    }
    syscall(SYS_close_range, 3, ~0U, RF_CLOSE_RANGE_CLOEXEC);
    fcntl(err_fd, F_SETFD, FD_CLOEXEC);
    exec_search(argv, im->envp);
    report(R_EXEC, errno, "%s", argv[0]);
    _exit(127);
}

/* The guard's findings go to the host as they come (the guard must never wait on a full
 * socket): each a u32 length, then the record as the guard sent it. */
static void forward_records(int gsock, int reports_w, int *open_)
{
    for (;;) {
        char rec[65536];
        ssize_t n = recv(gsock, rec, sizeof(rec), MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0) {
            *open_ = 0; /* the guard closed its end: nothing more from it */
            return;
        }
        uint32_t len = (uint32_t)n;
        if (write(reports_w, &len, 4) != 4 || write(reports_w, rec, (size_t)n) != n)
            return;
    }
}

static int is_control(const char *rec, ssize_t n, const char *kind)
{
    char want[64];
    int w = snprintf(want, sizeof(want), "{\"kind\": \"%s\"}", kind);
    return n == w && memcmp(rec, want, (size_t)w) == 0;
}

/* After the command's leftovers are gone: have the guard finish with the command (check the
 * pointer files it made) and say so (steps.guard_reset); every record goes to the host. */
static void guard_finish(int gsock, int reports_w)
{
    if (send(gsock, "R", 1, 0) != 1)
        return;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left = 10000 - ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000);
        if (left <= 0)
            return; /* too slow: the host moves what waited for it aside */
        struct pollfd pf = {gsock, POLLIN, 0};
        if (poll(&pf, 1, (int)left) <= 0)
            continue;
        char rec[65536];
        ssize_t n = recv(gsock, rec, sizeof(rec), MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0)
            return; /* the guard is gone */
        /* The guard's answer ends it; the host has no use for it (a clean end stays clean). */
        if (is_control(rec, n, "guard_reset") || is_control(rec, n, "guard_stale"))
            return;
        uint32_t len = (uint32_t)n;
        if (write(reports_w, &len, 4) != 4 || write(reports_w, rec, (size_t)n) != n)
            return;
    }
}

struct linux_dirent64_ {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* Every process of the namespace but pid 1 and the guard, killed and reaped until none is
 * left (steps.end_others); 0 if some are still there after 5 s. Lists /proc with getdents64:
 * opendir would allocate. */
static int end_others(pid_t guard)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int proc = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (proc < 0)
            return 0;
        int others = 0;
        char buf[8192];
        long n;
        while ((n = syscall(SYS_getdents64, proc, buf, sizeof(buf))) > 0) {
            for (long off = 0; off < n;) {
                struct linux_dirent64_ *d = (struct linux_dirent64_ *)(buf + off);
                off += d->d_reclen;
                char *end;
                long pid = strtol(d->d_name, &end, 10);
                if (*end != 0 || pid <= 1 || pid == guard)
                    continue;
                others++;
                kill((pid_t)pid, SIGKILL);
            }
        }
        close(proc);
        while (waitpid(-1, NULL, WNOHANG) > 0) {
        }
        if (others == 0)
            return 1;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec >= 5)
            return 0;
        struct timespec ts = {0, 500000L};
        nanosleep(&ts, NULL);
    }
}

/* pid 1: the command's init. Returns nothing: writes the wait status, then exits. */
__attribute__((noreturn)) void sandbox_main(const image_t *im, char *const *argv,
                                            const sandbox_fds_t *fds_in)
{
    int ctl_r = fds_in->ctl_r, status_w = fds_in->status_w, go_r = fds_in->go_r;
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    map_ids(im);
    int root = build_view(im);
    pivot_into(root);
    if (im->ns_flags & CLONE_NEWNET)
        loopback_up();
    /* The resolver's sockets, on the sandbox's own loopback, before the layers forbid it. */
    int dns[DNS_SOCKS], n_dns = 0;
    if (im->ns_flags & CLONE_NEWNET)
        n_dns = dns_open(dns);
    userns_quotas(im);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    int ruleset = create_ruleset(im);
    int guarded = im->guard_bpf != NULL;
    if (guarded)
        guard_keep_ptrace_inheritable();
    drop_bounding();
    syscall(SYS_keyctl, RF_KEYCTL_JOIN_SESSION_KEYRING, NULL, 0, 0, 0); /* best effort */
    set_rlimits(im);
    restrict_self(ruleset);
    /* The host's go-ahead before anything is forked: this process is in the run's cgroups
     * (its children will be), and a kept request's answers were all the same. Until then it
     * has only built its own view, which is thrown away with it if the go-ahead never comes. */
    char go;
    if (read(go_r, &go, 1) != 1)
        _exit(0);
    close(go_r);
    int gsock = -1;
    pid_t guard = 0;
    if (guarded) {
        int lock = fds_in->guard_lock;
        if (lock < 0) /* the guards of this sandbox alone take turns on it */
            lock = (int)syscall(SYS_memfd_create, "ringfence-guard-lock", MFD_CLOEXEC);
        if (lock < 0)
            die(errno, "cannot start the name guard: %s", errtext(errno));
        guard = guard_start(im, lock, fds_in->told_w, &gsock);
        close(lock);
        guard_enter_scope(im);
    }
    drop_all_caps();
    install_seccomp(im);
    if (n_dns > 0) {
        pid_t resolver = rf_fork();
        if (resolver == 0) { /* its sockets and the names pipe, nothing else */
            int keep[DNS_SOCKS + 1];
            for (int i = 0; i < n_dns; i++)
                keep[i] = dns[i];
            keep[n_dns] = fds_in->names_w;
            close_all_but(keep, n_dns + 1);
            dns_serve(dns, n_dns, fds_in->names_w);
        }
        if (resolver < 0)
            die(errno, "cannot start the sandbox's resolver: %s", errtext(errno));
        for (int i = 0; i < n_dns; i++)
            close(dns[i]);
    }
    close(fds_in->names_w);
    close(fds_in->told_w); /* the guard's alone */
    if (guarded) /* last: the resolver is not the guard's to judge */
        guard_install(im, gsock);

    sigset_t mask, old;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, &old);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        die(errno, "signalfd: %s", errtext(errno));
    struct timespec began, finished;
    clock_gettime(CLOCK_MONOTONIC, &began);
    pid_t child = start_command(im, argv, &old);
    if (child < 0)
        die(errno, "cannot start the command: fork failed: %s", errtext(errno));
    int status = 0, ended = 0, gopen = gsock >= 0;
    while (!ended) {
        struct pollfd fds[3] = {{sfd, POLLIN, 0}, {ctl_r, POLLIN, 0}, {gsock, POLLIN, 0}};
        if (poll(fds, gopen ? 3 : 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            die(errno, "poll: %s", errtext(errno));
        }
        if (fds[1].revents) {
            unsigned char sigs[64];
            ssize_t n = read(ctl_r, sigs, sizeof(sigs));
            if (n == 0)
                _exit(0); /* the host is gone: so is the sandbox */
            for (ssize_t i = 0; i < n; i++) {
                if (sigs[i] == 255) { /* KILL_TREE (the timeout): the rest goes below */
                    kill(-child, SIGKILL);
                    kill(child, SIGKILL);
                } else if (kill(-child, sigs[i]) < 0) {
                    kill(child, sigs[i]);
                }
            }
        }
        if (gopen && fds[2].revents)
            forward_records(gsock, fds_in->reports_w, &gopen);
        if (fds[0].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof(si)) > 0) {
            }
        }
        for (;;) {
            int st;
            pid_t got = waitpid(-1, &st, WNOHANG);
            if (got <= 0)
                break;
            if (got == child) {
                status = st;
                ended = 1;
                clock_gettime(CLOCK_MONOTONIC, &finished);
            }
        }
    }
    /* Nothing of the command may outlive it, nor be left when the guard's findings are
     * counted (a leftover could still make a file it must check): pid 1 of the namespace
     * ends every process but the guard (out of this domain's scope: kill(-1) skips it). */
    kill(-1, SIGKILL);
    int gone = end_others(guard);
    if (gopen) {
        forward_records(gsock, fds_in->reports_w, &gopen);
        if (gone && gopen)
            guard_finish(gsock, fds_in->reports_w);
    }
    ended_t report = {status, 0,
                      (double)(finished.tv_sec - began.tv_sec) +
                          (double)(finished.tv_nsec - began.tv_nsec) / 1e9};
    ssize_t unused = write(status_w, &report, sizeof(report));
    (void)unused;
    _exit(0);
}
