/* The name guard for a native run (steps.start_guard and friends), started only when needed.
 *
 * The guard's supervisor is Python (nameguard, gitguard). The Python runner forks it from an
 * init that has it imported already; a native run has no Python in the sandbox, and starting
 * one costs more than the whole launch. Many commands make no call the guard answers (`true`,
 * `ls`, `git log`): for them it never needs to run. So pid 1 forks this stub where the Python
 * init forks the supervisor (after Landlock, before the capabilities go and the filters come),
 * hands it the guard filter's listener the same way (pidfd_getfd while pid 1 is dumpable for
 * that moment), and the stub waits. The first call the filter sends to the guard waits in the
 * kernel, unanswered, while the stub executes the Python supervisor on the same descriptors
 * (guard_exec.py): nothing is answered before the supervisor is up, so nothing passes
 * unchecked. A command that never makes such a call ends with the stub never having run any
 * Python: the stub answers pid 1's end-of-command reset itself, as the supervisor does when it
 * answered nothing (steps._asked).
 *
 * The stub keeps only CAP_SYS_PTRACE (the supervisor reads the command's memory), raised in
 * the ambient set so the exec keeps it (pid 1 put it in the inheritable set before the
 * bounding set was cleared); it is not under the seccomp filters (forked before them) and
 * sits in the command's outer Landlock domain, which pid 1 then leaves for a nested one that
 * may not signal it. */
#include "launcher.h"

#include <sys/mman.h>
#include <sys/socket.h>

#define CAP_SYS_PTRACE_ 19
#define PR_CAP_AMBIENT_RAISE_ 2
#define SECCOMP_FILTER_FLAG_NEW_LISTENER_ (1UL << 3)
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV_ (1UL << 5)

static const char RESET_DONE[] = "{\"kind\": \"guard_reset\"}";
static const char STARTED[] = "{\"kind\": \"guard_started\"}";

/* Before the bounding set is cleared: CAP_SYS_PTRACE inheritable, for the stub's ambient. */
void guard_keep_ptrace_inheritable(void)
{
    struct rf_cap_header h = {RF_CAP_VERSION_3, 0};
    struct rf_cap_data d[2];
    if (syscall(SYS_capget, &h, d) < 0)
        die(errno, "capget: %s", errtext(errno));
    d[0].inheritable |= 1u << CAP_SYS_PTRACE_;
    if (syscall(SYS_capset, &h, d) < 0)
        die(errno, "cannot keep CAP_SYS_PTRACE for the name guard: %s", errtext(errno));
}

static void keep_only_ptrace(void)
{
    struct rf_cap_header h = {RF_CAP_VERSION_3, 0};
    struct rf_cap_data d[2];
    memset(d, 0, sizeof(d));
    d[0].effective = d[0].permitted = d[0].inheritable = 1u << CAP_SYS_PTRACE_;
    if (prctl(RF_PR_CAP_AMBIENT, RF_PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 ||
        syscall(SYS_capset, &h, d) < 0 ||
        prctl(RF_PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE_, CAP_SYS_PTRACE_, 0, 0) < 0)
        _exit(1); /* the listener closes with us: guarded calls then fail closed */
}

/* The guard's side of the listener's hand-over (steps.take_listener). */
static int take_listener(int sock)
{
    char msg[32];
    ssize_t n = recv(sock, msg, sizeof(msg) - 1, 0);
    if (n < 2 || msg[0] != 'L')
        return -1;
    msg[n] = 0;
    int number = (int)strtol(msg + 1, NULL, 10);
    int pidfd = (int)syscall(SYS_pidfd_open, getppid(), 0);
    if (pidfd < 0)
        return -1;
    int fd = (int)syscall(SYS_pidfd_getfd, pidfd, number, 0);
    close(pidfd);
    if (fd < 0 || send(sock, "K", 1, 0) != 1)
        return -1;
    return fd;
}

__attribute__((noreturn)) static void run_supervisor(const image_t *im, int sock, int listener,
                                                    int lock, int told)
{
    /* The rules travel in a memfd: they may be larger than a pipe holds. */
    int rules = (int)syscall(SYS_memfd_create, "ringfence-guard-rules", 0);
    if (rules < 0)
        _exit(1);
    for (size_t done = 0; done < im->guard_rules.len;) {
        ssize_t n = write(rules, im->guard_rules.ptr + done, im->guard_rules.len - done);
        if (n <= 0)
            _exit(1);
        done += (size_t)n;
    }
    lseek(rules, 0, SEEK_SET);
    if (send(sock, STARTED, sizeof(STARTED) - 1, 0) < 0)
        _exit(1);
    char a_sock[16], a_listener[16], a_lock[16], a_rules[16], a_told[16];
    snprintf(a_sock, sizeof(a_sock), "%d", sock);
    snprintf(a_listener, sizeof(a_listener), "%d", listener);
    snprintf(a_lock, sizeof(a_lock), "%d", lock);
    snprintf(a_rules, sizeof(a_rules), "%d", rules);
    snprintf(a_told, sizeof(a_told), "%d", told);
    char *const argv[] = {(char *)im->guard_python.ptr,
                          "-I",
                          "-S",
                          "-c",
                          (char *)im->guard_boot.ptr,
                          a_sock,
                          a_listener,
                          a_lock,
                          a_rules,
                          a_told,
                          NULL};
    char *const envp[] = {"LC_ALL=C.UTF-8", NULL};
    execve(im->guard_python.ptr, argv, envp);
    /* the listener closes with us: every guarded call now fails (closed); say why */
    char msg[512];
    int n = snprintf(msg, sizeof(msg), "ringfence: name guard failed: cannot execute %s: %s\n",
                     im->guard_python.ptr, errtext(errno));
    ssize_t unused = write(2, msg, (size_t)n);
    (void)unused;
    _exit(1);
}

/* The stub: waits for the first guarded call (then becomes the supervisor), or for pid 1's
 * end-of-command reset (answered: nothing was asked, nothing to forget), or for the end. */
__attribute__((noreturn)) static void stub_main(const image_t *im, int sock, int lock_in, int told)
{
    setsid(); /* out of the command's process group: its signals are not ours */
    char path[32];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", lock_in);
    int lock = open(path, O_RDONLY | O_CLOEXEC); /* an open file description of our own */
    if (lock < 0)
        _exit(1);
    keep_only_ptrace();
    int null = open("/dev/null", O_RDWR);
    if (null < 0)
        _exit(1);
    dup2(null, 0); /* stderr stays: a supervisor that fails says so there, as the Python one */
    dup2(null, 1);
    int keep[] = {0, 1, 2, sock, lock, told};
    close_all_but(keep, 6);
    int listener = take_listener(sock);
    if (listener < 0)
        _exit(0); /* pid 1 failed before it had one */
    /* what the supervisor gets must survive the exec; nothing else is left open */
    fcntl(sock, F_SETFD, 0);
    fcntl(listener, F_SETFD, 0);
    fcntl(lock, F_SETFD, 0);
    fcntl(told, F_SETFD, 0);
    for (;;) {
        struct pollfd fds[2] = {{listener, POLLIN, 0}, {sock, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            _exit(1);
        }
        if (fds[0].revents & POLLIN)
            run_supervisor(im, sock, listener, lock, told);
        if (fds[1].revents & POLLIN) {
            char msg[16];
            ssize_t n = recv(sock, msg, sizeof(msg), 0);
            if (n <= 0)
                _exit(0);
            if (n == 1 && msg[0] == 'R' &&
                send(sock, RESET_DONE, sizeof(RESET_DONE) - 1, 0) < 0)
                _exit(0);
            continue; /* 'B' (build now): nothing to build here */
        }
        if ((fds[0].revents | fds[1].revents) & (POLLHUP | POLLERR | POLLNVAL))
            _exit(0); /* the filtered tree, or pid 1, is gone */
    }
}

pid_t guard_start(const image_t *im, int lock, int told, int *sock_out)
{
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
        die(errno, "cannot start the name guard: %s", errtext(errno));
    pid_t pid = rf_fork();
    if (pid == 0) {
        close(pair[0]);
        stub_main(im, pair[1], lock, told);
    }
    if (pid < 0)
        die(errno, "cannot start the name guard: %s", errtext(errno));
    close(pair[1]);
    *sock_out = pair[0];
    return pid;
}

/* The guard's scope (sandbox_side._Server): a Landlock domain nested in the command's, with
 * signal and abstract-socket scoping, so the command cannot signal its guard. REFER handled
 * and granted everywhere: a layer that handles it not would refuse renames across dirs. */
void guard_enter_scope(const image_t *im)
{
    if (im->ll_abi < 6)
        return;
    struct rf_ruleset_attr attr = {1ULL << 13, 0, 3};
    int ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0);
    if (ruleset < 0)
        die(errno, "Landlock step landlock_create_ruleset failed: %s", errtext(errno));
    int root = open("/", O_PATH | O_CLOEXEC);
    struct rf_path_beneath pb = {1ULL << 13, root};
    if (root < 0 || syscall(SYS_landlock_add_rule, ruleset, RF_LANDLOCK_RULE_PATH_BENEATH, &pb, 0) < 0)
        die(errno, "Landlock step landlock_add_rule for '/' failed: %s", errtext(errno));
    close(root);
    restrict_self(ruleset);
}

/* The guard filter on pid 1 (the command inherits it), its listener handed to the stub. */
void guard_install(const image_t *im, int sock)
{
    struct sock_fprog prog = {(unsigned short)im->n_guard_bpf, im->guard_bpf};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        die(errno, "cannot set no_new_privs: %s", errtext(errno));
    unsigned long base = SECCOMP_FILTER_FLAG_NEW_LISTENER_;
    int listener = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                                base | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV_, &prog);
    if (listener < 0 && errno == EINVAL)
        listener = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, base, &prog);
    if (listener < 0) {
        if (errno == EINVAL || errno == ENOSYS) {
            report(R_UNSUPPORTED, errno,
                   "this kernel has no seccomp user notification (Linux 5.0+ needed); the name "
                   "guard cannot run");
            _exit(125);
        }
        die(errno, "cannot install the name-guard filter: %s", errtext(errno));
    }
    /* Not with SCM_RIGHTS: sendmsg now goes to the guard. The stub takes the listener itself
     * while pid 1 is dumpable for that moment (steps.hand_over_listener). */
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    char msg[32];
    int n = snprintf(msg, sizeof(msg), "L%d", listener);
    char ok = 0;
    if (send(sock, msg, (size_t)n, 0) != n || recv(sock, &ok, 1, 0) != 1 || ok != 'K')
        die(EPROTO, "the name guard did not take its listener");
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    close(listener);
}
