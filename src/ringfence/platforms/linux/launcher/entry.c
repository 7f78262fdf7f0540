/* A kept one-shot request, native side (plancache/native_entry.py writes it): the plan's
 * image, and every question its compile asked of the file system with the answer it got.
 *
 * The Python fast path asks those questions again in Python (plancache.facts); importing
 * what that needs costs more than the whole native launch. Here each question is asked with
 * the same system call and compared with the same fields (facts._stat_answer: type,
 * permissions, owner, device, inode, and for a regular file size, link count and mtime; a
 * listing's names and kinds; a file's whole content; an account's passwd entry; an access
 * check; the /tmp secrets). Any difference, or anything this side cannot ask, is a miss: the
 * caller takes the usual path, which compiles again. The seal over the entry was checked by
 * the caller before it came here. Runs in the caller's process while the sandbox's pid 1
 * already builds its view (it starts nothing before the host's go-ahead), without the GIL:
 * it allocates with PyMem_Raw* only. */
#include "launcher.h"

#include <dirent.h>
#include <fnmatch.h>
#include <pwd.h>

static const char ENTRY_MAGIC[8] = {'R', 'F', 'N', 'E', 1, 0, 0, 0};

enum {
    E_IMAGE = 1, E_CHECK, E_DIR_OURS, E_TOUCH, E_OPTIONS, E_PLAN,
};
enum {
    Q_STAT = 1, Q_LSTAT, Q_READLINK, Q_LISTDIR, Q_SCANDIR, Q_READ, Q_READ_NOFOLLOW, Q_PWUID,
    Q_PWNAM, Q_ACCESS, Q_TMP_SECRETS,
};


/* A path: copied NUL-terminated into `buf`, refused with a NUL byte inside. */
static int get_path(cursor_t *r, char *buf, size_t cap)
{
    const unsigned char *s;
    uint32_t len;
    if (take_bytes(r, &s, &len) < 0 || len >= cap || memchr(s, 0, len) != NULL)
        return -1;
    memcpy(buf, s, len);
    buf[len] = 0;
    return 0;
}

static int same_str(cursor_t *r, const char *now)
{
    const unsigned char *s;
    uint32_t len;
    if (take_bytes(r, &s, &len) < 0)
        return -1;
    return strlen(now) == len && memcmp(s, now, len) == 0 ? 1 : 0;
}

static int check_errno(cursor_t *r, int err)
{
    uint32_t want;
    return take(r, &want, 4) < 0 ? -1 : (int)want == err;
}

/* facts._stat_answer, compared. Returns 1 same, 0 different, -1 malformed. */
static int check_stat(cursor_t *r, const char *path, int follow)
{
    uint8_t kind;
    if (take(r, &kind, 1) < 0)
        return -1;
    struct stat st;
    int rc = follow ? stat(path, &st) : lstat(path, &st);
    if (kind == 0)
        return rc < 0 ? check_errno(r, errno) : (check_errno(r, -1), 0);
    uint32_t fmt, mode, uid, gid;
    uint64_t dev, ino, size, nlink, mtime;
    if (take(r, &fmt, 4) || take(r, &mode, 4) || take(r, &uid, 4) || take(r, &gid, 4) ||
        take(r, &dev, 8) || take(r, &ino, 8))
        return -1;
    int regular = S_ISREG(fmt);
    if (regular && (take(r, &size, 8) || take(r, &nlink, 8) || take(r, &mtime, 8)))
        return -1;
    if (rc < 0)
        return 0;
    if ((uint32_t)(st.st_mode & S_IFMT) != fmt || (uint32_t)(st.st_mode & 07777) != mode ||
        st.st_uid != uid || st.st_gid != gid || (uint64_t)st.st_dev != dev ||
        (uint64_t)st.st_ino != ino)
        return 0;
    if (!regular)
        return 1;
    uint64_t now_mtime = (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec;
    return (uint64_t)st.st_size == size && (uint64_t)st.st_nlink == nlink && now_mtime == mtime;
}

static int check_readlink(cursor_t *r, const char *path)
{
    uint8_t ok;
    if (take(r, &ok, 1) < 0)
        return -1;
    char buf[PATH_CAP];
    ssize_t n = readlink(path, buf, sizeof(buf) - 1);
    if (!ok)
        return n < 0 ? check_errno(r, errno) : (check_errno(r, -1), 0);
    if (n < 0 || n >= (ssize_t)sizeof(buf) - 1) {
        const unsigned char *s;
        uint32_t len;
        return take_bytes(r, &s, &len) < 0 ? -1 : 0;
    }
    buf[n] = 0;
    return same_str(r, buf);
}

typedef struct {
    char *name;
    int flags; /* for a scandir: 1 symlink, 2 directory, 4 regular file (facts._entry) */
} dent_t;

static int cmp_dent(const void *a, const void *b)
{
    const dent_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : x->flags - y->flags;
}

/* A directory's entries now (no . and ..), sorted; NULL with errno on failure. */
static dent_t *list_dir(const char *path, int kinds, size_t *n_out, char **arena_out)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return NULL;
    size_t n = 0, cap = 64, used = 0, acap = 4096;
    dent_t *list = PyMem_RawMalloc(cap * sizeof(dent_t));
    char *arena = PyMem_RawMalloc(acap);
    size_t *offs = PyMem_RawMalloc(cap * sizeof(size_t));
    if (list == NULL || arena == NULL || offs == NULL)
        goto fail;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        size_t len = strlen(e->d_name) + 1;
        if (n == cap) {
            cap *= 2;
            dent_t *l2 = PyMem_RawRealloc(list, cap * sizeof(dent_t));
            if (l2 == NULL)
                goto fail;
            list = l2; /* before the next realloc: a failure there frees this one */
            size_t *o2 = PyMem_RawRealloc(offs, cap * sizeof(size_t));
            if (o2 == NULL)
                goto fail;
            offs = o2;
        }
        while (used + len > acap) {
            acap *= 2;
            char *a2 = PyMem_RawRealloc(arena, acap);
            if (a2 == NULL)
                goto fail;
            arena = a2;
        }
        memcpy(arena + used, e->d_name, len);
        offs[n] = used;
        used += len;
        int flags = 0;
        if (kinds) {
            struct stat st;
            if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
                if (S_ISLNK(st.st_mode)) {
                    struct stat target;
                    flags = 1 | (fstatat(dirfd(d), e->d_name, &target, 0) == 0 && S_ISREG(target.st_mode) ? 4 : 0);
                } else {
                    flags = (S_ISDIR(st.st_mode) ? 2 : 0) | (S_ISREG(st.st_mode) ? 4 : 0);
                }
            }
        }
        list[n].flags = flags;
        n++;
    }
    closedir(d);
    for (size_t i = 0; i < n; i++)
        list[i].name = arena + offs[i];
    PyMem_RawFree(offs);
    qsort(list, n, sizeof(dent_t), cmp_dent);
    *n_out = n;
    *arena_out = arena;
    return list;
fail:
    closedir(d);
    PyMem_RawFree(list);
    PyMem_RawFree(arena);
    PyMem_RawFree(offs);
    errno = ENOMEM;
    return NULL;
}

/* A listing (names, or names and kinds) compared as a sorted list. */
static int check_listing(cursor_t *r, const char *path, int kinds)
{
    uint8_t ok;
    if (take(r, &ok, 1) < 0)
        return -1;
    size_t n = 0;
    char *arena = NULL;
    dent_t *now = list_dir(path, kinds, &n, &arena);
    int err = errno;
    if (!ok) {
        int same = now == NULL ? check_errno(r, err) : (check_errno(r, -1), 0);
        PyMem_RawFree(now);
        PyMem_RawFree(arena);
        return same;
    }
    uint32_t count;
    int result = take(r, &count, 4) < 0 ? -1 : (now != NULL && count == n);
    /* the expected entries come sorted by the writer the same way (bytes, then flags) */
    for (uint32_t i = 0; result >= 0 && i < count; i++) {
        const unsigned char *s;
        uint32_t len;
        uint8_t flags = 0;
        if (take_bytes(r, &s, &len) < 0 || (kinds && take(r, &flags, 1) < 0)) {
            result = -1;
            break;
        }
        if (result == 1 && (strlen(now[i].name) != len || memcmp(now[i].name, s, len) != 0 ||
                            (kinds && now[i].flags != flags)))
            result = 0;
    }
    PyMem_RawFree(now);
    PyMem_RawFree(arena);
    return result;
}

/* facts._read, step for step (one open, one fstat, ONE read of its limit plus one byte: a
 * /proc/sys file refuses so large a read with ENOMEM, and that is its answer too), then
 * compared with what the compile got. The content is kept whole in the entry. */
#define READ_LIMIT (1 << 22)
static int check_read(cursor_t *r, const char *path, int nofollow)
{
    uint8_t kind;
    if (take(r, &kind, 1) < 0)
        return -1;
    int err = 0, fmt = -1;
    char *buf = NULL;
    ssize_t n = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (nofollow ? O_NOFOLLOW : 0));
    struct stat st;
    if (fd < 0) {
        err = errno;
    } else if (fstat(fd, &st) < 0) {
        err = errno;
    } else if (!S_ISREG(st.st_mode)) {
        fmt = (int)(st.st_mode & S_IFMT);
    } else if ((buf = PyMem_RawMalloc(READ_LIMIT + 1)) == NULL) {
        err = ENOMEM; /* not the file's answer: a miss below, never a false hit */
        kind = 255;
    } else {
        n = read(fd, buf, READ_LIMIT + 1);
        if (n < 0)
            err = errno;
    }
    if (fd >= 0)
        close(fd);
    int result;
    if (kind == 0) { /* an error */
        result = check_errno(r, err ? err : -1);
        if (!err && result == 1)
            result = 0;
    } else if (kind == 2) { /* not a regular file: its type */
        uint32_t want;
        result = take(r, &want, 4) < 0 ? -1 : fmt >= 0 && (uint32_t)fmt == want;
    } else if (kind == 1) {
        const unsigned char *want;
        uint32_t len;
        if (take_bytes(r, &want, &len) < 0)
            result = -1;
        else
            result = !err && fmt < 0 && n == (ssize_t)len && memcmp(buf, want, len) == 0;
    } else {
        result = 0;
        r->p = r->end; /* no memory to ask: a miss */
    }
    PyMem_RawFree(buf);
    return result;
}

static int check_passwd(cursor_t *r, const char *key, int by_uid)
{
    uint8_t ok;
    if (take(r, &ok, 1) < 0)
        return -1;
    char buf[16384];
    struct passwd pw, *found = NULL;
    int rc;
    if (by_uid) {
        char *end;
        unsigned long uid = strtoul(key, &end, 10);
        if (*end != 0)
            return -1;
        rc = getpwuid_r((uid_t)uid, &pw, buf, sizeof(buf), &found);
    } else {
        rc = getpwnam_r(key, &pw, buf, sizeof(buf), &found);
    }
    if (rc != 0 && found == NULL) { /* ERANGE, an NSS error: cannot tell, so a miss */
        if (ok)
            r->p = r->end;
        return 0;
    }
    if (!ok)
        return found == NULL;
    uint32_t uid, gid;
    int same = found != NULL;
    int a = same_str(r, found ? found->pw_name : "");
    int b = same_str(r, found ? found->pw_passwd : "");
    if (a < 0 || b < 0 || take(r, &uid, 4) || take(r, &gid, 4))
        return -1;
    int c = same_str(r, found ? found->pw_gecos : "");
    int d = same_str(r, found ? found->pw_dir : "");
    int e = same_str(r, found ? found->pw_shell : "");
    if (c < 0 || d < 0 || e < 0)
        return -1;
    return same && a && b && c && d && e && found->pw_uid == uid && found->pw_gid == gid;
}

static int check_access(cursor_t *r, const char *path)
{
    uint32_t mode;
    uint8_t kind;
    if (take(r, &mode, 4) < 0 || take(r, &kind, 1) < 0)
        return -1;
    int rc = access(path, (int)mode);
    if (kind == 0)
        return rc < 0 && errno != EACCES && errno != ENOENT ? check_errno(r, errno)
                                                            : (check_errno(r, -1), 0);
    uint8_t want;
    if (take(r, &want, 1) < 0)
        return -1;
    return (rc == 0) == (want != 0);
}

/* tmp_entries.secrets_in: the top-level, non-symlink entries of `dir` whose name matches a
 * pattern (fnmatchcase: no FNM_PATHNAME, no FNM_PERIOD, and a backslash is itself). */
static int check_tmp_secrets(cursor_t *r, const char *dir)
{
    uint32_t npat;
    if (take(r, &npat, 4) < 0 || npat > 256)
        return -1;
    char patterns[256][256];
    for (uint32_t i = 0; i < npat; i++)
        if (get_path(r, patterns[i], sizeof(patterns[i])) < 0)
            return -1;
    size_t n = 0;
    char *arena = NULL;
    dent_t *now = list_dir(dir, 1, &n, &arena);
    uint32_t count;
    if (take(r, &count, 4) < 0) {
        PyMem_RawFree(now);
        PyMem_RawFree(arena);
        return -1;
    }
    int result = 1;
    size_t seen = 0;
    for (size_t i = 0; now != NULL && i < n; i++) {
        if (now[i].flags & 1)
            continue; /* symlinks are left out: anyone can make one in /tmp */
        int hit = 0;
        for (uint32_t k = 0; k < npat && !hit; k++)
            hit = fnmatch(patterns[k], now[i].name, FNM_NOESCAPE) == 0;
        if (!hit)
            continue;
        char full[PATH_CAP];
        snprintf(full, sizeof(full), "%s/%s", dir, now[i].name);
        if (seen >= count) {
            result = 0;
            continue;
        }
        if (same_str(r, full) != 1)
            result = 0;
        seen++;
    }
    if (now == NULL && count != 0)
        result = 0;
    for (; seen < count; seen++) { /* expected ones not seen now */
        const unsigned char *s;
        uint32_t len;
        if (take_bytes(r, &s, &len) < 0)
            result = -1;
        else if (result == 1)
            result = 0;
    }
    PyMem_RawFree(now);
    PyMem_RawFree(arena);
    return result;
}

static int check_one(cursor_t *r, char *why, size_t whylen)
{
    uint8_t op;
    char path[PATH_CAP];
    if (take(r, &op, 1) < 0 || get_path(r, path, sizeof(path)) < 0)
        return -1;
    int same;
    switch (op) {
    case Q_STAT: same = check_stat(r, path, 1); break;
    case Q_LSTAT: same = check_stat(r, path, 0); break;
    case Q_READLINK: same = check_readlink(r, path); break;
    case Q_LISTDIR: same = check_listing(r, path, 0); break;
    case Q_SCANDIR: same = check_listing(r, path, 1); break;
    case Q_READ: same = check_read(r, path, 0); break;
    case Q_READ_NOFOLLOW: same = check_read(r, path, 1); break;
    case Q_PWUID: same = check_passwd(r, path, 1); break;
    case Q_PWNAM: same = check_passwd(r, path, 0); break;
    case Q_ACCESS: same = check_access(r, path); break;
    case Q_TMP_SECRETS: same = check_tmp_secrets(r, path); break;
    default: return -1;
    }
    if (same == 0)
        snprintf(why, whylen, "question %d about %s has another answer now", op, path);
    return same;
}

/* A directory of ringfence's state made by an effect of the compile (statedirs, caches):
 * still there, ours, not a link. */
static int dir_ours(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid();
}

/* Walks the entry's records; with `verify`, asks each question again (and checks and marks
 * the effects); without, only finds the options and the image. */
static int entry_walk(const unsigned char *data, size_t size, entry_t *out, int verify, char *why,
                      size_t whylen)
{
    memset(out, 0, sizeof(*out));
    out->timeout = -1.0;
    if (size < sizeof(ENTRY_MAGIC) || memcmp(data, ENTRY_MAGIC, sizeof(ENTRY_MAGIC)) != 0) {
        snprintf(why, whylen, "not a native entry of this ringfence");
        return -1;
    }
    cursor_t r = {data + sizeof(ENTRY_MAGIC), data + size};
    while (r.p < r.end) {
        uint8_t tag;
        uint32_t len;
        if (take(&r, &tag, 1) || take(&r, &len, 4) || (size_t)(r.end - r.p) < len)
            goto malformed;
        cursor_t rec = {r.p, r.p + len};
        r.p += len;
        char path[PATH_CAP];
        if (tag == E_PLAN || (!verify && (tag == E_CHECK || tag == E_DIR_OURS || tag == E_TOUCH)))
            continue; /* the plan itself is the Python side's (native_result) */
        switch (tag) {
        case E_IMAGE:
            out->image = rec.p;
            out->image_len = len;
            rec.p = rec.end;
            break;
        case E_CHECK: {
            int same = check_one(&rec, why, whylen);
            if (same < 0)
                goto malformed;
            if (same == 0)
                return 0;
            break;
        }
        case E_DIR_OURS:
            if (get_path(&rec, path, sizeof(path)) < 0)
                goto malformed;
            if (!dir_ours(path)) {
                snprintf(why, whylen, "ringfence's state directory %s is not as it was", path);
                return 0;
            }
            break;
        case E_TOUCH:
            if (get_path(&rec, path, sizeof(path)) < 0)
                goto malformed;
            if (utimensat(AT_FDCWD, path, NULL, AT_SYMLINK_NOFOLLOW) < 0) {
                snprintf(why, whylen, "cannot mark %s used: %s", path, errtext(errno));
                return 0;
            }
            break;
        case E_OPTIONS: {
            uint8_t audit;
            if (take(&rec, &out->timeout, 8) || take(&rec, &audit, 1))
                goto malformed;
            out->audit = audit;
            rec.p = rec.end; /* the rest is the Python side's (the audit record's parts) */
            break;
        }
        default:
            goto malformed;
        }
        if (rec.p != rec.end)
            goto malformed;
    }
    if (out->image == NULL)
        goto malformed;
    return 1;
malformed:
    snprintf(why, whylen, "a malformed native entry");
    return -1;
}

int entry_parse(const unsigned char *data, size_t size, entry_t *out, char *why, size_t whylen)
{
    return entry_walk(data, size, out, 0, why, whylen);
}

int entry_verify(const unsigned char *data, size_t size, char *why, size_t whylen)
{
    entry_t ignored;
    return entry_walk(data, size, &ignored, 1, why, whylen);
}
