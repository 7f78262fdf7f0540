/* The sandbox's file-system view (mounts.py), built by pid 1. */
#include "launcher.h"

#include <sys/file.h>

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
    die(errno, "cannot open mount source %s: %s", path, errtext(errno));
}

#define OVERLAY_ATTEMPTS 6

static int overlay_tree(const mount_t *m)
{
    char upper[PATH_CAP], work[PATH_CAP];
    if (snprintf(upper, sizeof(upper), "%s/upper", m->source.ptr) >= (int)sizeof(upper) ||
        snprintf(work, sizeof(work), "%s/work", m->source.ptr) >= (int)sizeof(work))
        die(ENAMETOOLONG, "the /tmp layer's path is too long: %s", m->source.ptr);
    int fds[3] = {host_source(m->target.ptr), host_source(upper), host_source(work)};
    /* Sandboxes of one workspace mount its layer one at a time (mounts.py, overlay_tree). */
    int turn = openat2_(fds[2], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC, RF_RESOLVE_NO_SYMLINKS);
    /* Best effort, and waited for at most 2 s (mounts.py, _take_turn: a reduced-isolation
     * command can reach the layer and hold the lock); past that the retries below remain. */
    for (int tries = 0; turn >= 0 && tries < 400; tries++) {
        if (flock(turn, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK)
            break;
        struct timespec ts = {0, 5000000L};
        nanosleep(&ts, NULL);
    }
    char lower_o[64], upper_o[64], work_o[64];
    snprintf(lower_o, sizeof(lower_o), "lowerdir=/proc/self/fd/%d", fds[0]);
    snprintf(upper_o, sizeof(upper_o), "upperdir=/proc/self/fd/%d", fds[1]);
    snprintf(work_o, sizeof(work_o), "workdir=/proc/self/fd/%d", fds[2]);
    const char *opts[] = {lower_o, upper_o, work_o, "userxattr", "index=off"};
    int tree = -1;
    for (int attempt = 0; attempt < OVERLAY_ATTEMPTS; attempt++) {
        tree = new_fs("overlay", opts, 5, attributes(m, 1), "ringfence-tmp");
        if (tree >= 0 || (errno != ENOENT && errno != EINVAL) || attempt == OVERLAY_ATTEMPTS - 1)
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
            m->source.ptr, m->target.ptr, errtext(errno));
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    if (turn >= 0)
        close(turn); /* the next sandbox's turn */
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
        die(errno, "dup: %s", errtext(errno));
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
                    die(errno, "cannot create mount point %s: %s", m->target.ptr, errtext(errno));
                close(fd);
            } else if (last && m->kind == K_SYMLINK) {
                close(cur);
                return;
            } else if (mkdirat(cur, name, 0755) < 0) {
                die(errno, "cannot create mount point %s: %s", m->target.ptr, errtext(errno));
            }
            nxt = openat2_(cur, name, O_PATH | O_CLOEXEC, RF_RESOLVE_NO_SYMLINKS | RF_RESOLVE_IN_ROOT);
        }
        if (nxt < 0)
            die(errno, "cannot open mount point %s: %s", m->target.ptr, errtext(errno));
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
        die(errno, "cannot open mount point %s: %s", m->target.ptr, errtext(errno));
    }
    create_point(a, m);
    fd = open_in_root(a->root, m->target.ptr, O_PATH | O_CLOEXEC);
    if (fd < 0)
        die(errno, "cannot open mount point %s: %s", m->target.ptr, errtext(errno));
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
/* A host /tmp entry the plan masks that is gone by now: nothing left to hide (mounts.py,
 * _vanished: /tmp's entries come and go; only their owner or root may remove them). */
static int vanished(assembler_t *a, const mount_t *m)
{
    const char *slash = strrchr(m->target.ptr, '/');
    if (m->kind != K_MASK || (m->bits & B_CREATE) || slash != m->target.ptr + 4 ||
        strncmp(m->target.ptr, "/tmp/", 5) != 0)
        return 0;
    int fd = open_in_root(a->root, m->target.ptr, O_PATH | O_CLOEXEC);
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    return errno == ENOENT;
}

static int apply_op(assembler_t *a, const mount_t *m, int source_tree, int *keep)
{
    *keep = -1;
    if (vanished(a, m))
        return 0;
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

int build_view(const image_t *im)
{
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        die(errno, "cannot make the sandbox's mounts private: %s", errtext(errno));
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
    int *sources = im->scratch, *keep = im->scratch + im->n_mounts;
    int root_src = host_source(im->mounts[0].source.ptr);
    int root = clone_tree(root_src, 1);
    if (root < 0)
        die(errno, "cannot clone the root: %s", errtext(errno));
    close(root_src);
    if (set_attr(root, RF_MOUNT_ATTR_RDONLY | RF_MOUNT_ATTR_NOSUID | RF_MOUNT_ATTR_NODEV, 1) < 0)
        die(errno, "cannot make the root read-only: %s", errtext(errno));
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
                m->why.ptr ? m->why.ptr : "", errtext(errno));
        }
        close(src);
        unsigned attrs = attributes(m, 1);
        if (attrs && set_attr(tree, attrs, 1) < 0)
            die(errno, "mount step bind %s failed: %s", m->target.ptr, errtext(errno));
        sources[i] = tree;
    }
    /* Phase 2: the new root at a staging point in this (private) namespace. */
    int stage = open("/tmp", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (stage < 0 || attach(root, stage) < 0)
        die(errno, "cannot stage the sandbox's root: %s", errtext(errno));
    close(stage);
    assembler_t a = {root, -1};
    for (size_t i = 1; i < im->n_mounts; i++) {
        const mount_t *m = &im->mounts[i];
        if (apply_op(&a, m, sources[i], &keep[i]) < 0)
            die(errno, "mount step %s %s (%s) failed: %s", kind_name(m->kind), m->target.ptr,
                m->why.ptr ? m->why.ptr : "", errtext(errno));
    }
    for (size_t i = 1; i < im->n_mounts; i++) {
        if (keep[i] >= 0) {
            if (set_attr(keep[i], RF_MOUNT_ATTR_RDONLY, 0) < 0)
                die(errno, "cannot seal the mask on %s: %s", im->mounts[i].target.ptr,
                    errtext(errno));
            close(keep[i]);
        }
    }
    if (a.empty_src >= 0)
        close(a.empty_src);
    setrlimit(RLIMIT_NOFILE, &nofile);
    return root;
}

void pivot_into(int root)
{
    if (fchdir(root) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 || umount2(".", MNT_DETACH) < 0 ||
        chdir("/") < 0)
        die(errno, "cannot enter the sandbox's view (pivot_root): %s", errtext(errno));
    close(root);
}
