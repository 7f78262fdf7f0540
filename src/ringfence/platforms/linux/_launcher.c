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
    TAG_STATE_LOCK,
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
    str_t cwd, state_lock;
    char *arena; /* every string, NUL-terminated */
    size_t arena_used, arena_cap;
} image_t;

static void image_free(image_t *im)
{
    PyMem_Free(im->mounts);
    PyMem_Free(im->paths);
    PyMem_Free(im->ports);
    PyMem_Free(im->bpf);
    PyMem_Free(im->rlims);
    PyMem_Free(im->quotas);
    PyMem_Free(im->envp);
    PyMem_Free(im->arena);
    memset(im, 0, sizeof(*im));
}

typedef struct {
    const unsigned char *p, *end;
} cursor_t;

static int take(cursor_t *c, void *out, size_t n)
{
    if ((size_t)(c->end - c->p) < n)
        return -1;
    memcpy(out, c->p, n);
    c->p += n;
    return 0;
}

static int stash(image_t *im, const unsigned char *src, uint32_t len, str_t *out)
{
    if (memchr(src, 0, len) != NULL)
        return -1; /* a path with a NUL byte is not a path */
    if (im->arena_used + len + 1 > im->arena_cap)
        return -1;
    char *dst = im->arena + im->arena_used;
    memcpy(dst, src, len);
    dst[len] = 0;
    im->arena_used += len + 1;
    out->ptr = dst;
    out->len = len;
    return 0;
}

static int take_str(cursor_t *c, image_t *im, str_t *out, int allow_nul)
{
    uint32_t len;
    if (take(c, &len, 4) < 0)
        return -1;
    if (len == 0xFFFFFFFFu) {
        out->ptr = NULL;
        out->len = 0;
        return 0;
    }
    if ((size_t)(c->end - c->p) < len)
        return -1;
    if (allow_nul) { /* content: bytes, kept in place (the image outlives the children) */
        out->ptr = (const char *)c->p;
        out->len = len;
        c->p += len;
        return 0;
    }
    if (stash(im, c->p, len, out) < 0)
        return -1;
    c->p += len;
    return 0;
}

#define GROW(arr, n, type)                                                        \
    do {                                                                          \
        if ((n) >= MAX_ITEMS)                                                     \
            return -1;                                                            \
        type *grown_ = PyMem_Realloc((arr), sizeof(type) * ((n) + 1));            \
        if (grown_ == NULL)                                                       \
            return -1;                                                            \
        (arr) = grown_;                                                           \
    } while (0)

static int parse_record(image_t *im, int tag, cursor_t *r)
{
    switch (tag) {
    case TAG_NAMESPACES:
        return take(r, &im->ns_flags, 8);
    case TAG_IDS:
        im->have_ids = 1;
        return take(r, &im->uid, 4) | take(r, &im->gid, 4);
    case TAG_MOUNT: {
        GROW(im->mounts, im->n_mounts, mount_t);
        mount_t *m = &im->mounts[im->n_mounts];
        uint8_t kind, bits;
        if (take(r, &kind, 1) || take(r, &bits, 1) || take(r, &m->mode, 4))
            return -1;
        m->kind = kind;
        m->bits = bits;
        if (kind < K_BIND || kind > K_OVERLAY)
            return -1;
        if (take_str(r, im, &m->target, 0) || take_str(r, im, &m->source, 0) ||
            take_str(r, im, &m->size, 0) || take_str(r, im, &m->content, 1) ||
            take_str(r, im, &m->why, 0))
            return -1;
        if (m->target.ptr == NULL || m->target.ptr[0] != '/')
            return -1;
        im->n_mounts++;
        return 0;
    }
    case TAG_LANDLOCK:
        im->have_landlock = 1;
        return take(r, &im->ll_abi, 4) | take(r, &im->ll_fs, 8) | take(r, &im->ll_net, 8) |
               take(r, &im->ll_scoped, 8);
    case TAG_LANDLOCK_PATH: {
        GROW(im->paths, im->n_paths, llpath_t);
        llpath_t *p = &im->paths[im->n_paths];
        uint8_t required;
        if (take(r, &p->access, 8) || take(r, &required, 1))
            return -1;
        p->required = required != 0;
        if (stash(im, r->p, (uint32_t)(r->end - r->p), &p->path) < 0)
            return -1;
        r->p = r->end;
        im->n_paths++;
        return 0;
    }
    case TAG_LANDLOCK_PORT: {
        GROW(im->ports, im->n_ports, llport_t);
        llport_t *p = &im->ports[im->n_ports];
        if (take(r, &p->access, 8) || take(r, &p->port, 8))
            return -1;
        im->n_ports++;
        return 0;
    }
    case TAG_SECCOMP: {
        size_t n = (size_t)(r->end - r->p);
        if (im->bpf != NULL || n == 0 || n % sizeof(struct sock_filter) || n / 8 > BPF_MAXINSNS)
            return -1;
        im->bpf = PyMem_Malloc(n);
        if (im->bpf == NULL)
            return -1;
        memcpy(im->bpf, r->p, n);
        im->n_bpf = n / sizeof(struct sock_filter);
        r->p = r->end;
        return 0;
    }
    case TAG_RLIMIT: {
        GROW(im->rlims, im->n_rlims, rlim_t_);
        rlim_t_ *l = &im->rlims[im->n_rlims];
        if (take(r, &l->resource, 4) || take(r, &l->value, 8))
            return -1;
        im->n_rlims++;
        return 0;
    }
    case TAG_USERNS_LIMIT: {
        GROW(im->quotas, im->n_quotas, quota_t);
        quota_t *q = &im->quotas[im->n_quotas];
        if (take(r, &q->value, 8))
            return -1;
        if (stash(im, r->p, (uint32_t)(r->end - r->p), &q->name) < 0 || q->name.len == 0 ||
            strchr(q->name.ptr, '/') != NULL)
            return -1;
        r->p = r->end;
        im->n_quotas++;
        return 0;
    }
    case TAG_ENV: {
        GROW(im->envp, im->n_env + 1, char *);
        str_t s;
        if (stash(im, r->p, (uint32_t)(r->end - r->p), &s) < 0 || strchr(s.ptr, '=') == NULL)
            return -1;
        im->envp[im->n_env++] = (char *)s.ptr;
        r->p = r->end;
        return 0;
    }
    case TAG_CWD:
        if (stash(im, r->p, (uint32_t)(r->end - r->p), &im->cwd) < 0)
            return -1;
        r->p = r->end;
        return 0;
    case TAG_STATE_LOCK:
        if (stash(im, r->p, (uint32_t)(r->end - r->p), &im->state_lock) < 0)
            return -1;
        r->p = r->end;
        return 0;
    default:
        return -1; /* an image from another version: never guess */
    }
}

static const char MAGIC[8] = {'R', 'F', 'N', 'I', 1, 0, 0, 0};

static int parse_image(const unsigned char *data, size_t size, image_t *im)
{
    memset(im, 0, sizeof(*im));
    if (size < sizeof(MAGIC) || memcmp(data, MAGIC, sizeof(MAGIC)) != 0)
        return -1;
    im->arena_cap = size + 1; /* every string is shorter than its record */
    im->arena = PyMem_Malloc(im->arena_cap);
    im->envp = PyMem_Malloc(sizeof(char *));
    if (im->arena == NULL || im->envp == NULL)
        return -1;
    cursor_t c = {data + sizeof(MAGIC), data + size};
    while (c.p < c.end) {
        uint8_t tag;
        uint32_t len;
        if (take(&c, &tag, 1) || take(&c, &len, 4) || (size_t)(c.end - c.p) < len)
            return -1;
        cursor_t r = {c.p, c.p + len};
        if (parse_record(im, tag, &r) < 0 || r.p != r.end)
            return -1;
        c.p += len;
    }
    im->envp[im->n_env] = NULL;
    if (!im->have_ids || !im->have_landlock || im->bpf == NULL || im->cwd.ptr == NULL ||
        im->n_mounts == 0)
        return -1;
    const mount_t *root = &im->mounts[0];
    if (root->kind != K_BIND || strcmp(root->target.ptr, "/") != 0 || root->source.ptr == NULL)
        return -1;
    uint64_t needed = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID;
    uint64_t known = needed | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS;
    if ((im->ns_flags & needed) != needed || (im->ns_flags & ~known) != 0)
        return -1;
    return 0;
}

/* ---- failing, from a child: a record on the error pipe, then exit ---- */

enum { R_SANDBOX = 'S', R_UNSUPPORTED = 'U', R_EXEC = 'X', R_CWD = 'C' };

static int err_fd = -1;

static void report(char kind, int code, const char *fmt, ...)
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

__attribute__((noreturn, format(printf, 2, 3))) static void die(int code, const char *fmt, ...)
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

static int openat2_(int dirfd, const char *path, uint64_t flags, uint64_t resolve)
{
    struct rf_open_how how = {flags, 0, resolve};
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

static int write_file(const char *path, const char *text)
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

static unsigned attributes(const mount_t *m, int readonly)
{
    unsigned a = (m->bits & B_READONLY) && readonly ? RF_MOUNT_ATTR_RDONLY : 0;
    if (m->bits & B_NOSUID)
        a |= RF_MOUNT_ATTR_NOSUID;
    if (m->bits & B_NODEV)
        a |= RF_MOUNT_ATTR_NODEV;
    if (m->bits & B_NOEXEC)
        a |= RF_MOUNT_ATTR_NOEXEC;
    return a;
}

static int set_attr(int fd, uint64_t attrs, int recursive)
{
    struct rf_mount_attr a = {attrs, 0, 0, 0};
    return (int)syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | (recursive ? RF_AT_RECURSIVE : 0),
                        &a, sizeof(a));
}

static int clone_tree(int fd, int recursive)
{
    unsigned flags = RF_OPEN_TREE_CLONE | O_CLOEXEC | AT_EMPTY_PATH;
    if (recursive)
        flags |= RF_AT_RECURSIVE;
    return (int)syscall(SYS_open_tree, fd, "", flags);
}

static int attach(int tree, int target)
{
    return (int)syscall(SYS_move_mount, tree, "", target, "",
                        RF_MOVE_MOUNT_F_EMPTY_PATH | RF_MOVE_MOUNT_T_EMPTY_PATH);
}

/* A detached mount of a fresh file system; options as "key=value" or "flag" strings. */
static int new_fs(const char *type, const char *const *options, size_t n, unsigned attrs,
                  const char *source)
{
    int fs = (int)syscall(SYS_fsopen, type, 1 /* FSOPEN_CLOEXEC */);
    if (fs < 0)
        return -1;
    int rc = (int)syscall(SYS_fsconfig, fs, RF_FSCONFIG_SET_STRING, "source",
                          source ? source : type, 0);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char key[64];
        const char *eq = strchr(options[i], '=');
        if (eq == NULL) {
            rc = (int)syscall(SYS_fsconfig, fs, RF_FSCONFIG_SET_FLAG, options[i], NULL, 0);
            continue;
        }
        size_t klen = (size_t)(eq - options[i]);
        if (klen >= sizeof(key)) {
            errno = EINVAL;
            rc = -1;
            break;
        }
        memcpy(key, options[i], klen);
        key[klen] = 0;
        rc = (int)syscall(SYS_fsconfig, fs, RF_FSCONFIG_SET_STRING, key, eq + 1, 0);
    }
    if (rc == 0)
        rc = (int)syscall(SYS_fsconfig, fs, RF_FSCONFIG_CMD_CREATE, NULL, NULL, 0);
    int mnt = rc == 0 ? (int)syscall(SYS_fsmount, fs, 1 /* FSMOUNT_CLOEXEC */, attrs) : -1;
    int saved = errno;
    close(fs);
    errno = saved;
    return mnt;
}

/* ---- the view (mounts.py) ---- */

static int host_source(const char *path)
{
    int fd = openat2_(AT_FDCWD, path, O_PATH | O_CLOEXEC, RF_RESOLVE_NO_SYMLINKS);
    if (fd >= 0)
        return fd;
    if (errno == ELOOP)
        die(ELOOP,
            "refusing to mount %s: a symlink appeared on its path since the policy was "
            "compiled (possibly planted by an earlier command); inspect it and run again",
            path);
    die(errno, "cannot open mount source %s: %s", path, strerror(errno));
}

#define OVERLAY_ATTEMPTS 6

static int overlay_tree(const mount_t *m)
{
    char upper[PATH_CAP], work[PATH_CAP];
    if (snprintf(upper, sizeof(upper), "%s/upper", m->source.ptr) >= (int)sizeof(upper) ||
        snprintf(work, sizeof(work), "%s/work", m->source.ptr) >= (int)sizeof(work))
        die(ENAMETOOLONG, "the /tmp layer's path is too long: %s", m->source.ptr);
    int fds[3] = {host_source(m->target.ptr), host_source(upper), host_source(work)};
    char lower_o[64], upper_o[64], work_o[64];
    snprintf(lower_o, sizeof(lower_o), "lowerdir=/proc/self/fd/%d", fds[0]);
    snprintf(upper_o, sizeof(upper_o), "upperdir=/proc/self/fd/%d", fds[1]);
    snprintf(work_o, sizeof(work_o), "workdir=/proc/self/fd/%d", fds[2]);
    const char *opts[] = {lower_o, upper_o, work_o, "userxattr", "index=off"};
    int tree = -1;
    for (int attempt = 0; attempt < OVERLAY_ATTEMPTS; attempt++) {
        tree = new_fs("overlay", opts, 5, attributes(m, 1), "ringfence-tmp");
        if (tree >= 0 || errno != ENOENT || attempt == OVERLAY_ATTEMPTS - 1)
            break;
        /* another sandbox of this workspace mounting the same layer: work/work is remade */
        struct timespec ts = {0, 5000000L << attempt};
        nanosleep(&ts, NULL);
    }
    if (tree < 0)
        die(errno,
            "cannot mount this workspace's /tmp layer (%s) over the host's %s: %s. The layer's "
            "file system must support overlayfs upper directories (ext4, xfs, btrfs; tmpfs on "
            "Linux >= 6.6); point XDG_CACHE_HOME at one, or run `ringfence doctor`",
            m->source.ptr, m->target.ptr, strerror(errno));
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    return tree;
}

typedef struct {
    int root;
    int empty_src;
} assembler_t;

static int open_in_root(int root, const char *path, uint64_t flags)
{
    const char *rel = path;
    while (*rel == '/')
        rel++;
    if (*rel == 0)
        rel = ".";
    return openat2_(root, rel, flags, RF_RESOLVE_IN_ROOT | RF_RESOLVE_NO_SYMLINKS);
}

/* The mount point (and missing parents), only ever inside a tmpfs this plan mounted. */
static void create_point(assembler_t *a, const mount_t *m)
{
    char buf[PATH_CAP];
    if (m->target.len >= sizeof(buf))
        die(ENAMETOOLONG, "mount point too long: %s", m->target.ptr);
    memcpy(buf, m->target.ptr, m->target.len + 1);
    int cur = dup(a->root);
    if (cur < 0)
        die(errno, "dup: %s", strerror(errno));
    char *save = NULL;
    char *name = strtok_r(buf, "/", &save);
    while (name != NULL) {
        char *next_name = strtok_r(NULL, "/", &save);
        int last = next_name == NULL;
        int nxt = openat2_(cur, name, O_PATH | O_CLOEXEC, RF_RESOLVE_NO_SYMLINKS | RF_RESOLVE_IN_ROOT);
        if (nxt < 0 && errno == ENOENT) {
            if (last && !(m->bits & B_IS_DIR) && m->kind != K_SYMLINK) {
                int fd = openat(cur, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
                if (fd < 0)
                    die(errno, "cannot create mount point %s: %s", m->target.ptr, strerror(errno));
                close(fd);
            } else if (last && m->kind == K_SYMLINK) {
                close(cur);
                return;
            } else if (mkdirat(cur, name, 0755) < 0) {
                die(errno, "cannot create mount point %s: %s", m->target.ptr, strerror(errno));
            }
            nxt = openat2_(cur, name, O_PATH | O_CLOEXEC, RF_RESOLVE_NO_SYMLINKS | RF_RESOLVE_IN_ROOT);
        }
        if (nxt < 0)
            die(errno, "cannot open mount point %s: %s", m->target.ptr, strerror(errno));
        close(cur);
        cur = nxt;
        name = next_name;
    }
    close(cur);
}

static int target_fd(assembler_t *a, const mount_t *m)
{
    int fd = open_in_root(a->root, m->target.ptr, O_PATH | O_CLOEXEC);
    if (fd >= 0)
        return fd;
    if (errno != ENOENT || !(m->bits & B_CREATE)) {
        if (errno == ELOOP)
            die(ELOOP, "refusing to mount on %s: it is or passes through a symlink",
                m->target.ptr);
        die(errno, "cannot open mount point %s: %s", m->target.ptr, strerror(errno));
    }
    create_point(a, m);
    fd = open_in_root(a->root, m->target.ptr, O_PATH | O_CLOEXEC);
    if (fd < 0)
        die(errno, "cannot open mount point %s: %s", m->target.ptr, strerror(errno));
    return fd;
}

static int empty_file_clone(assembler_t *a)
{
    if (a->empty_src < 0) {
        const char *opts[] = {"mode=0000", "size=4k"};
        int scratch = new_fs("tmpfs", opts, 2, RF_MOUNT_ATTR_NOSUID | RF_MOUNT_ATTR_NODEV, NULL);
        if (scratch < 0)
            return -1;
        int fd = openat(scratch, "empty", O_CREAT | O_WRONLY | O_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        close(fd);
        a->empty_src = scratch;
    }
    return (int)syscall(SYS_open_tree, a->empty_src, "empty", RF_OPEN_TREE_CLONE | O_CLOEXEC);
}

static int file_tree(const mount_t *m)
{
    char size[32];
    snprintf(size, sizeof(size), "size=%u", m->content.len + 8192);
    const char *opts[] = {"mode=0700", size, "nr_inodes=4"};
    int scratch = new_fs("tmpfs", opts, 3,
                         RF_MOUNT_ATTR_NOSUID | RF_MOUNT_ATTR_NODEV | RF_MOUNT_ATTR_NOEXEC, NULL);
    if (scratch < 0)
        return -1;
    int fd = openat(scratch, "file", O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    const char *p = m->content.ptr;
    size_t left = m->content.len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        left -= (size_t)n;
    }
    if (fchmod(fd, m->mode & 0444) < 0)
        return -1;
    close(fd);
    int tree = (int)syscall(SYS_open_tree, scratch, "file", RF_OPEN_TREE_CLONE | O_CLOEXEC);
    close(scratch);
    if (tree < 0 || set_attr(tree, attributes(m, 1), 0) < 0)
        return -1;
    return tree;
}

static const char *kind_name(int kind)
{
    static const char *const names[] = {"?", "bind", "tmpfs", "proc", "devpts", "mask",
                                        "symlink", "remount_ro", "file", "overlay"};
    return kind >= K_BIND && kind <= K_OVERLAY ? names[kind] : "?";
}

/* One op after the staging; returns -1 with errno for "mount step ... failed". */
static int apply_op(assembler_t *a, const mount_t *m, int source_tree, int *keep)
{
    *keep = -1;
    if (m->kind == K_SYMLINK) {
        char parent[PATH_CAP];
        const char *slash = strrchr(m->target.ptr, '/');
        size_t plen = (size_t)(slash - m->target.ptr);
        if (plen >= sizeof(parent))
            return errno = ENAMETOOLONG, -1;
        memcpy(parent, m->target.ptr, plen);
        parent[plen] = 0;
        int dir = open_in_root(a->root, plen ? parent : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir < 0)
            return -1;
        int rc = symlinkat(m->source.ptr ? m->source.ptr : "", dir, slash + 1);
        int saved = errno;
        close(dir);
        errno = saved;
        return rc;
    }
    if (m->kind == K_REMOUNT_RO) {
        int fd = target_fd(a, m);
        int rc = set_attr(fd, attributes(m, 1), 0);
        int saved = errno;
        close(fd);
        errno = saved;
        return rc;
    }
    int tree = -1;
    char mode[32], size[80];
    switch (m->kind) {
    case K_BIND:
    case K_OVERLAY:
        if (source_tree < 0)
            return errno = EINVAL, -1;
        tree = source_tree;
        break;
    case K_TMPFS: {
        snprintf(mode, sizeof(mode), "mode=%o", m->mode);
        const char *opts[2] = {mode, size};
        if (m->size.ptr != NULL && snprintf(size, sizeof(size), "size=%s", m->size.ptr) >= (int)sizeof(size))
            return errno = EINVAL, -1;
        tree = new_fs("tmpfs", opts, m->size.ptr ? 2 : 1, attributes(m, 1), NULL);
        break;
    }
    case K_PROC:
        tree = new_fs("proc", NULL, 0, attributes(m, 1), NULL);
        break;
    case K_DEVPTS: {
        const char *opts[] = {"newinstance", "ptmxmode=0666", "mode=0620"};
        tree = new_fs("devpts", opts, 3, attributes(m, 1), NULL);
        break;
    }
    case K_MASK:
        if (m->bits & B_IS_DIR) {
            snprintf(mode, sizeof(mode), "mode=%04o", m->mode);
            const char *opts[] = {mode, "size=64k"};
            tree = new_fs("tmpfs", opts, 2, attributes(m, 0), NULL);
            if (tree >= 0 && (m->bits & B_READONLY))
                *keep = tree; /* read-only once the view is built */
        } else {
            tree = empty_file_clone(a);
            if (tree >= 0 && set_attr(tree, attributes(m, 1), 0) < 0)
                return -1;
        }
        break;
    case K_FILE:
        tree = file_tree(m);
        break;
    default:
        return errno = EINVAL, -1;
    }
    if (tree < 0)
        return -1;
    int target = target_fd(a, m);
    int rc = attach(tree, target);
    int saved = errno;
    close(target);
    if (*keep < 0)
        close(tree);
    errno = saved;
    return rc;
}

static int build_view(const image_t *im)
{
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        die(errno, "cannot make the sandbox's mounts private: %s", strerror(errno));
    /* Phase 1: every host source, while the host view is intact. */
    size_t held = 0;
    for (size_t i = 1; i < im->n_mounts; i++)
        held += im->mounts[i].kind == K_BIND || im->mounts[i].kind == K_OVERLAY;
    struct rlimit nofile;
    getrlimit(RLIMIT_NOFILE, &nofile);
    struct rlimit raised = nofile;
    if (nofile.rlim_cur != RLIM_INFINITY && nofile.rlim_cur < held + 256) {
        raised.rlim_cur = nofile.rlim_max == RLIM_INFINITY || nofile.rlim_max > held + 256
                              ? held + 256
                              : nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &raised);
    }
    int *sources = alloca(sizeof(int) * im->n_mounts);
    int *keep = alloca(sizeof(int) * im->n_mounts);
    int root_src = host_source(im->mounts[0].source.ptr);
    int root = clone_tree(root_src, 1);
    if (root < 0)
        die(errno, "cannot clone the root: %s", strerror(errno));
    close(root_src);
    if (set_attr(root, RF_MOUNT_ATTR_RDONLY | RF_MOUNT_ATTR_NOSUID | RF_MOUNT_ATTR_NODEV, 1) < 0)
        die(errno, "cannot make the root read-only: %s", strerror(errno));
    for (size_t i = 1; i < im->n_mounts; i++) {
        const mount_t *m = &im->mounts[i];
        sources[i] = -1;
        if (m->kind == K_OVERLAY) {
            sources[i] = overlay_tree(m);
            continue;
        }
        if (m->kind != K_BIND || m->source.ptr == NULL)
            continue;
        int src = host_source(m->source.ptr);
        int tree = clone_tree(src, m->bits & B_RECURSIVE);
        if (tree < 0) {
            if (errno == EMFILE)
                die(EMFILE,
                    "the sandbox's view has %zu host paths to bind, more than this process may "
                    "hold open while it builds the view: raise the hard limit (`ulimit -Hn`), or "
                    "protect a directory instead of many paths in it",
                    held);
            die(errno, "mount step bind %s (%s) failed: %s", m->target.ptr,
                m->why.ptr ? m->why.ptr : "", strerror(errno));
        }
        close(src);
        unsigned attrs = attributes(m, 1);
        if (attrs && set_attr(tree, attrs, 1) < 0)
            die(errno, "mount step bind %s failed: %s", m->target.ptr, strerror(errno));
        sources[i] = tree;
    }
    /* Phase 2: the new root at a staging point in this (private) namespace. */
    int stage = open("/tmp", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (stage < 0 || attach(root, stage) < 0)
        die(errno, "cannot stage the sandbox's root: %s", strerror(errno));
    close(stage);
    assembler_t a = {root, -1};
    for (size_t i = 1; i < im->n_mounts; i++) {
        const mount_t *m = &im->mounts[i];
        if (apply_op(&a, m, sources[i], &keep[i]) < 0)
            die(errno, "mount step %s %s (%s) failed: %s", kind_name(m->kind), m->target.ptr,
                m->why.ptr ? m->why.ptr : "", strerror(errno));
    }
    for (size_t i = 1; i < im->n_mounts; i++) {
        if (keep[i] >= 0) {
            if (set_attr(keep[i], RF_MOUNT_ATTR_RDONLY, 0) < 0)
                die(errno, "cannot seal the mask on %s: %s", im->mounts[i].target.ptr,
                    strerror(errno));
            close(keep[i]);
        }
    }
    if (a.empty_src >= 0)
        close(a.empty_src);
    setrlimit(RLIMIT_NOFILE, &nofile);
    return root;
}

static void pivot_into(int root)
{
    if (fchdir(root) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 || umount2(".", MNT_DETACH) < 0 ||
        chdir("/") < 0)
        die(errno, "cannot enter the sandbox's view (pivot_root): %s", strerror(errno));
    close(root);
}

/* ---- the layers ---- */

static void map_ids(const image_t *im)
{
    char line[64];
    if (write_file("/proc/self/setgroups", "deny") < 0)
        goto fail;
    snprintf(line, sizeof(line), "%u %u 1\n", im->uid, im->uid);
    if (write_file("/proc/self/uid_map", line) < 0)
        goto fail;
    snprintf(line, sizeof(line), "%u %u 1\n", im->gid, im->gid);
    if (write_file("/proc/self/gid_map", line) < 0)
        goto fail;
    return;
fail:
    report(R_UNSUPPORTED, errno,
           "created a user namespace but cannot map user ids in it (%s); this happens inside "
           "another sandbox or a restricted container. ringfence will not run the command "
           "without its namespaces unless you opt in to reduced isolation (--isolation "
           "reduced), which protects less: `ringfence explain --isolation reduced` lists what; "
           "`ringfence doctor` shows what is missing",
           strerror(errno));
    _exit(125);
}

static void loopback_up(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq req;
    memset(&req, 0, sizeof(req));
    strcpy(req.ifr_name, "lo");
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &req) < 0)
        die(errno, "cannot bring up the sandbox's loopback: %s", strerror(errno));
    req.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &req) < 0)
        die(errno, "cannot bring up the sandbox's loopback: %s", strerror(errno));
    close(s);
}

static void userns_quotas(const image_t *im)
{
    for (size_t i = 0; i < im->n_quotas; i++) {
        char path[PATH_CAP], value[32];
        snprintf(path, sizeof(path), "/proc/sys/user/%s", im->quotas[i].name.ptr);
        snprintf(value, sizeof(value), "%llu\n", (unsigned long long)im->quotas[i].value);
        if (write_file(path, value) < 0 && errno != ENOENT)
            die(errno, "cannot set %s in the sandbox: %s", path, strerror(errno));
    }
}

static void drop_bounding(void)
{
    for (unsigned long cap = 0;; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
            if (errno == EINVAL)
                break; /* past the last capability this kernel knows */
            die(errno, "cannot clear the capability bounding set: %s", strerror(errno));
        }
    }
}

static void drop_all_caps(void)
{
    if (prctl(RF_PR_SET_SECUREBITS, RF_SECUREBITS, 0, 0, 0) < 0 ||
        prctl(RF_PR_CAP_AMBIENT, RF_PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
        die(errno, "cannot drop capabilities: %s", strerror(errno));
    struct rf_cap_header h = {RF_CAP_VERSION_3, 0};
    struct rf_cap_data d[2];
    memset(d, 0, sizeof(d));
    if (syscall(SYS_capset, &h, d) < 0)
        die(errno, "cannot drop capabilities: %s", strerror(errno));
}

static void set_rlimits(const image_t *im)
{
    for (size_t i = 0; i < im->n_rlims; i++) {
        struct rlimit cur;
        if (getrlimit(im->rlims[i].resource, &cur) < 0)
            die(errno, "getrlimit: %s", strerror(errno));
        rlim_t wanted = im->rlims[i].value;
        /* CPU: SIGXCPU at the limit, SIGKILL a second later (steps.set_rlimits) */
        rlim_t hard = im->rlims[i].resource == RLIMIT_CPU ? wanted + 1 : wanted;
        if (cur.rlim_max != RLIM_INFINITY && cur.rlim_max < hard)
            hard = cur.rlim_max;
        struct rlimit next = {wanted < hard ? wanted : hard, hard};
        if (setrlimit(im->rlims[i].resource, &next) < 0)
            die(errno, "cannot set a resource limit: %s", strerror(errno));
    }
}

#define LL_FILE_ACCESS ((1ULL << 0) | (1ULL << 1) | (1ULL << 2) | (1ULL << 14) | (1ULL << 15))
#define LL_DEVICE_ACCESS ((1ULL << 0) | (1ULL << 1) | (1ULL << 2) | (1ULL << 3) | (1ULL << 14) | (1ULL << 15))

static void ll_add(int ruleset, int fd, uint64_t access, uint64_t handled, const char *what)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        die(errno, "Landlock step fstat of rule path '%s' failed: %s", what, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        access &= LL_FILE_ACCESS;
    uint64_t allowed = access & handled;
    if (allowed == 0)
        return; /* the kernel refuses an empty grant; granting nothing is the default */
    struct rf_path_beneath pb = {allowed, fd};
    if (syscall(SYS_landlock_add_rule, ruleset, RF_LANDLOCK_RULE_PATH_BENEATH, &pb, 0) < 0)
        die(errno, "Landlock step landlock_add_rule for '%s' failed: %s", what, strerror(errno));
}

static int create_ruleset(const image_t *im)
{
    long kernel = syscall(SYS_landlock_create_ruleset, NULL, 0, RF_LANDLOCK_CREATE_RULESET_VERSION);
    uint32_t need = im->ll_abi;
    if (im->ll_net && need < 4)
        need = 4;
    if (im->ll_scoped && need < 6)
        need = 6;
    if (kernel < (long)need) {
        report(R_UNSUPPORTED, 0,
               "this policy needs Landlock ABI %u but the kernel offers ABI %ld: run on a newer "
               "kernel, or loosen the policy so it does not need that layer",
               need, kernel < 0 ? 0 : kernel);
        _exit(125);
    }
    struct rf_ruleset_attr attr = {im->ll_fs, im->ll_net, im->ll_scoped};
    size_t size = im->ll_scoped ? 24 : im->ll_net ? 16 : 8;
    int ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, size, 0);
    if (ruleset < 0)
        die(errno, "Landlock step landlock_create_ruleset failed: %s", strerror(errno));
    for (size_t i = 0; i < im->n_paths; i++) {
        const llpath_t *p = &im->paths[i];
        int fd = open(p->path.ptr, O_PATH | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT && !p->required)
                continue;
            if (errno == ENOENT)
                die(ENOENT,
                    "Landlock rule path '%s' does not exist; create it or remove it from the "
                    "policy (nothing was restricted)",
                    p->path.ptr);
            die(errno, "Landlock step open of rule path '%s' failed: %s", p->path.ptr,
                strerror(errno));
        }
        ll_add(ruleset, fd, p->access, im->ll_fs, p->path.ptr);
        close(fd);
    }
    for (size_t i = 0; i < im->n_ports; i++) {
        struct rf_net_port np = {im->ports[i].access & im->ll_net, im->ports[i].port};
        if (syscall(SYS_landlock_add_rule, ruleset, RF_LANDLOCK_RULE_NET_PORT, &np, 0) < 0)
            die(errno, "Landlock step landlock_add_rule for TCP port %llu failed: %s",
                (unsigned long long)np.port, strerror(errno));
    }
    /* The caller's terminal (command_init._with_terminals): it lives on the host's devpts. */
    for (int fd = 0; fd < 3; fd++) {
        if (!isatty(fd))
            continue;
        char path[32];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        int t = open(path, O_PATH | O_CLOEXEC);
        if (t < 0)
            continue;
        ll_add(ruleset, t, LL_DEVICE_ACCESS, im->ll_fs, path);
        close(t);
    }
    return ruleset;
}

static void restrict_self(int ruleset)
{
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        die(errno, "Landlock step prctl(PR_SET_NO_NEW_PRIVS) failed: %s", strerror(errno));
    if (syscall(SYS_landlock_restrict_self, ruleset, 0) < 0) {
        if (errno == EPERM)
            die(EPERM,
                "Landlock refused a nested domain (EPERM): this runs inside a ringfence "
                "sandbox whose name guard forbids nesting (its emulated file calls would "
                "bypass the inner rules). Run the outer sandbox with --no-default-protect, "
                "or run this outside it");
        die(errno, "Landlock step landlock_restrict_self failed: %s", strerror(errno));
    }
    close(ruleset);
}

static void install_seccomp(const image_t *im)
{
    struct sock_fprog prog = {(unsigned short)im->n_bpf, im->bpf};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        die(errno, "cannot set no_new_privs before the seccomp filter: %s", strerror(errno));
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) {
        if (errno == ENOMEM)
            die(ENOMEM,
                "the kernel refused another seccomp filter: the filters already stacked on "
                "this process (from an outer sandbox or container) are too long in total");
        die(errno,
            "the kernel refused ringfence's seccomp filter (%s); this is a ringfence bug, "
            "please report it with `ringfence doctor` output",
            strerror(errno));
    }
}

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
    pid_t pid = fork();
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
        report(R_CWD, errno, "chdir %s: %s", im->cwd.ptr, strerror(errno));
        _exit(127);
    }
    syscall(SYS_close_range, 3, ~0U, RF_CLOSE_RANGE_CLOEXEC);
    fcntl(err_fd, F_SETFD, FD_CLOEXEC);
    exec_search(argv, im->envp);
    report(R_EXEC, errno, "%s", argv[0]);
    _exit(127);
}

/* pid 1: the command's init. Returns nothing: writes the wait status, then exits. */
__attribute__((noreturn)) static void sandbox_main(const image_t *im, char *const *argv,
                                                    int ctl_r, int status_w)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    map_ids(im);
    int root = build_view(im);
    pivot_into(root);
    if (im->ns_flags & CLONE_NEWNET)
        loopback_up();
    userns_quotas(im);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    int ruleset = create_ruleset(im);
    drop_bounding();
    syscall(SYS_keyctl, RF_KEYCTL_JOIN_SESSION_KEYRING, NULL, 0, 0, 0); /* best effort */
    set_rlimits(im);
    restrict_self(ruleset);
    drop_all_caps();
    install_seccomp(im);

    sigset_t mask, old;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, &old);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        die(errno, "signalfd: %s", strerror(errno));
    pid_t child = start_command(im, argv, &old);
    if (child < 0)
        die(errno, "cannot start the command: fork failed: %s", strerror(errno));
    int status = 0, ended = 0;
    while (!ended) {
        struct pollfd fds[2] = {{sfd, POLLIN, 0}, {ctl_r, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            die(errno, "poll: %s", strerror(errno));
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
