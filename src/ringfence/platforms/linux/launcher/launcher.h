/*
 * ringfence's native launcher: one command in the sandbox a plan image describes.
 *
 * Why it exists: a one-shot `ringfence run` in Python pays for importing the runner's
 * modules on every call (docs/performance.md measures it); this builds the same boundary
 * with no import at all. It decides nothing. native_image.py encodes the plan the Python
 * compiler made (BPF already compiled); this file performs the steps sandbox_side.py,
 * mounts.py and command_init.py perform, in their order, and fails closed where they do:
 *
 *   host ── clone(user, mount, pid, ipc, uts, net) ──► pid 1: map ids, build the view
 *   (open_tree clones taken before anything is attached, every path opened without
 *   following symlinks), pivot_root, lo up, user-namespace quotas, not dumpable, no
 *   bounding set, keyring, rlimits, Landlock, no capabilities, seccomp
 *        └─ fork ──► the command: setsid, default signals, cwd, exec (PATH of its env)
 *
 * pid 1 of the sandbox is the command's init (the Python runner forks a separate init in
 * a nested pid namespace because a session serves many commands; a one-shot run has one).
 * It relays the host's signals, reaps everything, and once the command has exited ends
 * whatever it left (kill(-1) from pid 1 of its namespace) before it reports.
 *
 * Children run only async-signal-safe code on memory the host prepared before the clone:
 * no allocation, no Python.
 */
#ifndef RF_LAUNCHER_H
#define RF_LAUNCHER_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <alloca.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/filter.h>
#include <linux/seccomp.h>

/* The new mount API and friends: one number on every architecture (>= 424). */
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif
#ifndef SYS_fsconfig
#define SYS_fsconfig 431
#endif
#ifndef SYS_fsmount
#define SYS_fsmount 432
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#endif
#ifndef SYS_landlock_add_rule
#define SYS_landlock_add_rule 445
#endif
#ifndef SYS_landlock_restrict_self
#define SYS_landlock_restrict_self 446
#endif

#define RF_AT_RECURSIVE 0x8000
#define RF_OPEN_TREE_CLONE 1
#define RF_MOVE_MOUNT_F_EMPTY_PATH 0x4
#define RF_MOVE_MOUNT_T_EMPTY_PATH 0x40
#define RF_MOUNT_ATTR_RDONLY 0x1
#define RF_MOUNT_ATTR_NOSUID 0x2
#define RF_MOUNT_ATTR_NODEV 0x4
#define RF_MOUNT_ATTR_NOEXEC 0x8
#define RF_FSCONFIG_SET_FLAG 0
#define RF_FSCONFIG_SET_STRING 1
#define RF_FSCONFIG_CMD_CREATE 6
#define RF_RESOLVE_NO_SYMLINKS 0x04
#define RF_RESOLVE_IN_ROOT 0x10
#define RF_CLOSE_RANGE_CLOEXEC (1U << 2)
#define RF_LANDLOCK_RULE_PATH_BENEATH 1
#define RF_LANDLOCK_RULE_NET_PORT 2
#define RF_LANDLOCK_CREATE_RULESET_VERSION 1
#define RF_KEYCTL_JOIN_SESSION_KEYRING 1
#define RF_PR_CAP_AMBIENT 47
#define RF_PR_CAP_AMBIENT_CLEAR_ALL 4
#define RF_PR_SET_SECUREBITS 28
#define RF_SECUREBITS 0xEF /* NOROOT, NO_SETUID_FIXUP, KEEP_CAPS (off), NO_CAP_AMBIENT_RAISE: locked */
#define RF_CAP_VERSION_3 0x20080522

struct rf_mount_attr {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};
struct rf_open_how {
    uint64_t flags, mode, resolve;
};
struct rf_ruleset_attr {
    uint64_t handled_fs, handled_net, scoped;
};
struct rf_path_beneath {
    uint64_t allowed;
    int32_t parent_fd;
} __attribute__((packed));
struct rf_net_port {
    uint64_t allowed, port;
};
struct rf_cap_header {
    uint32_t version;
    int pid;
};
struct rf_cap_data {
    uint32_t effective, permitted, inheritable;
};

/* ---- the image (native_image.py) ---- */

enum {
    TAG_NAMESPACES = 1, TAG_IDS, TAG_MOUNT, TAG_LANDLOCK, TAG_LANDLOCK_PATH,
    TAG_LANDLOCK_PORT, TAG_SECCOMP, TAG_RLIMIT, TAG_USERNS_LIMIT, TAG_ENV, TAG_CWD,
    TAG_STATE_LOCK, TAG_CGROUP, TAG_GUARD_PYTHON, TAG_GUARD_BOOT, TAG_GUARD_RULES,
    TAG_GUARD_BPF, TAG_GUARD_LOCK,
};
enum {
    K_BIND = 1, K_TMPFS, K_PROC, K_DEVPTS, K_MASK, K_SYMLINK, K_REMOUNT_RO, K_FILE, K_OVERLAY,
};
#define B_READONLY 1
#define B_NOSUID 2
#define B_NODEV 4
#define B_NOEXEC 8
#define B_RECURSIVE 16
#define B_IS_DIR 32
#define B_CREATE 64

#define MAX_ITEMS 65536
#define PATH_CAP 4096

typedef struct {
    const char *ptr; /* NUL-terminated copy in the arena; NULL when absent */
    uint32_t len;
} str_t;

typedef struct {
    int kind, bits;
    uint32_t mode;
    str_t target, source, size, content, why;
} mount_t;

typedef struct {
    uint64_t access;
    int required;
    str_t path;
} llpath_t;

typedef struct {
    uint64_t access, port;
} llport_t;

typedef struct {
    uint32_t resource;
    uint64_t value;
} rlim_t_;

typedef struct {
    uint64_t value;
    str_t name;
} quota_t;

enum { CG_MEMORY = 1, CG_PIDS = 2 };
#define CG_MAX 4

typedef struct {
    int controller, version;
    uint64_t limit;
    str_t parent;
} cgsite_t;

typedef struct {
    uint64_t ns_flags;
    uint32_t uid, gid;
    int have_ids, have_landlock;
    uint32_t ll_abi;
    uint64_t ll_fs, ll_net, ll_scoped;
    mount_t *mounts;
    size_t n_mounts;
    llpath_t *paths;
    size_t n_paths;
    llport_t *ports;
    size_t n_ports;
    struct sock_filter *bpf;
    size_t n_bpf;
    rlim_t_ *rlims;
    size_t n_rlims;
    quota_t *quotas;
    size_t n_quotas;
    char **envp; /* NULL-terminated */
    size_t n_env;
    cgsite_t *cgroups;
    size_t n_cgroups;
    str_t cwd, state_lock;
    /* The name guard (guard.c): absent when the plan has none. */
    str_t guard_python, guard_boot, guard_rules, guard_lock;
    struct sock_filter *guard_bpf;
    size_t n_guard_bpf;
    int *scratch; /* 2 x n_mounts ints for build_view, allocated before the clone */
    char *arena; /* every string, NUL-terminated */
    size_t arena_used, arena_cap;
} image_t;

/* What a child reports on the error pipe before it exits: kind, errno, message. */
enum { R_SANDBOX = 'S', R_UNSUPPORTED = 'U', R_EXEC = 'X', R_CWD = 'C' };
extern int err_fd;
void report(char kind, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
__attribute__((noreturn, format(printf, 2, 3))) void die(int code, const char *fmt, ...);
/* Children of the clone may run while another host thread holds a glibc lock: they use only
 * system calls and these (no allocation, no locale). */
const char *errtext(int code);
pid_t rf_fork(void);
void close_all_but(int *keep, int n);
void reset_signals(void);
/* Reading the images and entries (both little-endian, length-prefixed): a cursor that
 * never reads past its end. */
typedef struct {
    const unsigned char *p, *end;
} cursor_t;
int take(cursor_t *c, void *out, size_t n);
int take_bytes(cursor_t *c, const unsigned char **s, uint32_t *len);

int openat2_(int dirfd, const char *path, uint64_t flags, uint64_t resolve);
int write_file(const char *path, const char *text);

int parse_image(const unsigned char *data, size_t size, image_t *im);
void image_free(image_t *im);

int build_view(const image_t *im);
void pivot_into(int root);

void map_ids(const image_t *im);
void loopback_up(void);
void userns_quotas(const image_t *im);
void drop_bounding(void);
void drop_all_caps(void);
void set_rlimits(const image_t *im);
int create_ruleset(const image_t *im);
void restrict_self(int ruleset);
void install_seccomp(const image_t *im);

/* The descriptors pid 1 gets from the host (the read or write end it uses of each pipe). */
typedef struct {
    int ctl_r;    /* the host's signals for the command */
    int status_w; /* the command's wait status, once everything of it is gone */
    int go_r;     /* the host's go-ahead: pid 1 is in the run's cgroups */
    int names_w;  /* the host names the command looked up (dns.c) */
    int reports_w; /* the name guard's findings (guard.c) */
    int told_w;    /* the guard's own line to the host (guard_tell.py) */
    int guard_lock; /* <cache>/guard.lock, opened by the host (-1: none) */
} sandbox_fds_t;

void guard_keep_ptrace_inheritable(void);
pid_t guard_start(const image_t *im, int lock, int told, int *sock_out);
void guard_enter_scope(const image_t *im);
void guard_install(const image_t *im, int sock);

__attribute__((noreturn)) void sandbox_main(const image_t *im, char *const *argv,
                                            const sandbox_fds_t *fds);

#define DNS_SOCKS 4
int dns_open(int socks[DNS_SOCKS]);
__attribute__((noreturn)) void dns_serve(const int *socks, int n, int names_w);

/* A kept one-shot request (entry.c): its image, once every answer is the same. */
typedef struct {
    const unsigned char *image;
    size_t image_len;
    double timeout; /* < 0: none */
    int audit;
} entry_t;
/* entry_parse: the options and the image (1), or -1 for a malformed entry. entry_verify:
 * 1 when every answer is the same (the effects found and marked), 0 when one differs (why
 * says which), -1 malformed. Neither needs the GIL. */
int entry_parse(const unsigned char *data, size_t size, entry_t *out, char *why, size_t whylen);
int entry_verify(const unsigned char *data, size_t size, char *why, size_t whylen);

/* What pid 1 reports once the command and everything it left are gone. */
typedef struct {
    int status;   /* the command's wait status */
    int pad;
    double duration; /* seconds from its start to its exit */
} ended_t;

/* The run's cgroups (cgroups.c), one directory per controller (shared: v2's one). */
typedef struct {
    char path[PATH_CAP];
    int controller, version, shared;
    int tasks_fd; /* v1: its `tasks`, opened by the host for pid 1 to join by (-1: none) */
    int by_pid1;  /* pid 1 joins it itself (v1), the host does not */
} cgdir_t;
typedef struct {
    cgdir_t dirs[CG_MAX];
    size_t n;
} cgrun_t;
int cg_create(const image_t *im, cgrun_t *run, char *err, size_t errlen);
int cg_join(const cgrun_t *run, pid_t pid, char *err, size_t errlen); /* v2: by the host */
int cg_join_self(const cgrun_t *run, char *err, size_t errlen);        /* v1: by pid 1 */
int cg_host_joins(const cgrun_t *run);
void cg_close_tasks(cgrun_t *run);
long cg_oom_kills(const cgrun_t *run);
void cg_remove(cgrun_t *run);

#endif
