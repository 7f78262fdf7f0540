/* pid 1 of the sandbox: the command's init, and the command's start. */
#include "launcher.h"

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

/* pid 1: the command's init. Returns nothing: writes the wait status, then exits. */
__attribute__((noreturn)) void sandbox_main(const image_t *im, char *const *argv,
                                                    const sandbox_fds_t *fds_in)
{
    int ctl_r = fds_in->ctl_r, status_w = fds_in->status_w, go_r = fds_in->go_r;
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    /* The host's go-ahead: it has put this process in the run's cgroups. */
    char go;
    if (read(go_r, &go, 1) != 1)
        _exit(0);
    close(go_r);
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
    drop_bounding();
    syscall(SYS_keyctl, RF_KEYCTL_JOIN_SESSION_KEYRING, NULL, 0, 0, 0); /* best effort */
    set_rlimits(im);
    restrict_self(ruleset);
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

    sigset_t mask, old;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, &old);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        die(errno, "signalfd: %s", errtext(errno));
    pid_t child = start_command(im, argv, &old);
    if (child < 0)
        die(errno, "cannot start the command: fork failed: %s", errtext(errno));
    int status = 0, ended = 0;
    while (!ended) {
        struct pollfd fds[2] = {{sfd, POLLIN, 0}, {ctl_r, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            die(errno, "poll: %s", errtext(errno));
        }
        if (fds[1].revents) {
            unsigned char sigs[64];
            ssize_t n = read(ctl_r, sigs, sizeof(sigs));
            if (n == 0)
                _exit(0); /* the host is gone: so is the sandbox */
            for (ssize_t i = 0; i < n; i++)
                if (kill(-child, sigs[i]) < 0)
                    kill(child, sigs[i]);
        }
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
            }
        }
    }
    /* Nothing of the command may outlive it: pid 1 of its namespace ends the rest. */
    kill(-1, SIGKILL);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {
    }
    ssize_t unused = write(status_w, &status, sizeof(status));
    (void)unused;
    _exit(0);
}
