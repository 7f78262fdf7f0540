/* Per-run cgroups (cgroups.py): made by the host before the sandbox exists, joined before
 * pid 1 starts anything, read for OOM kills and removed afterwards.
 *
 * How pid 1 joins is a matter of cost. Writing a pid to `cgroup.procs` takes the kernel's
 * global threadgroup lock for writing, which waits out an RCU grace period (10-30 ms on the
 * 2-vCPU VM, most of a one-shot launch). A cgroup v1 hierarchy also has `tasks`, and a
 * single thread writing "0" there moves only itself, without that lock (the kernel's
 * cgroup_procs_write_start: neither a pid nor a thread group): ~0.05 ms. So the host opens
 * each v1 `tasks` file before the clone, and pid 1, one thread, writes "0" to each as its
 * first act (cg_join_self). The kernel checks the opener's credentials (the host's), not
 * the writer's. cgroup v2 has no such file: the host still writes pid 1's pid for it. */
#include "launcher.h"

#include <dirent.h>
#include <sys/random.h>

static int exists(const char *dir, const char *name)
{
    char path[PATH_CAP];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

static int write_knob(const char *dir, const char *name, const char *value, char *err, size_t errlen)
{
    char path[PATH_CAP];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (write_file(path, value) == 0)
        return 0;
    snprintf(err, errlen, "[Errno %d] %s: '%s'", errno, errtext(errno), path);
    return -1;
}

/* Empty cgroups left by a ringfence that was SIGKILLed: only ours (by name), only when the
 * ringfence that made them is gone, only empty ones (rmdir fails EBUSY otherwise). */
static void prune_stale(const char *parent)
{
    DIR *d = opendir(parent);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        if (strncmp(n, "ringfence-", 10) != 0)
            continue;
        const char *p = n + 10, *digits = p;
        while (*p >= '0' && *p <= '9')
            p++;
        if (p == digits || *p != '-' || strlen(p + 1) != 8 || strspn(p + 1, "0123456789abcdef") != 8)
            continue;
        long pid = strtol(digits, NULL, 10);
        if (pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue; /* its ringfence still runs, or we cannot tell */
        char path[PATH_CAP];
        snprintf(path, sizeof(path), "%s/%s", parent, n);
        rmdir(path);
    }
    closedir(d);
}

static int apply_limit(const cgsite_t *s, const char *dir, char *err, size_t errlen)
{
    char value[32];
    snprintf(value, sizeof(value), "%llu", (unsigned long long)s->limit);
    if (s->controller == CG_PIDS)
        return write_knob(dir, "pids.max", value, err, errlen);
    if (s->version == 2) {
        if (write_knob(dir, "memory.max", value, err, errlen) < 0)
            return -1;
        /* swap would let the command exceed the cap; the whole tree goes on OOM */
        if (exists(dir, "memory.swap.max") && write_knob(dir, "memory.swap.max", "0", err, errlen) < 0)
            return -1;
        if (exists(dir, "memory.oom.group") && write_knob(dir, "memory.oom.group", "1", err, errlen) < 0)
            return -1;
        return 0;
    }
    if (write_knob(dir, "memory.limit_in_bytes", value, err, errlen) < 0)
        return -1;
    if (exists(dir, "memory.memsw.limit_in_bytes") &&
        write_knob(dir, "memory.memsw.limit_in_bytes", value, err, errlen) < 0)
        return -1;
    return 0;
}

int cg_create(const image_t *im, cgrun_t *run, char *err, size_t errlen)
{
    memset(run, 0, sizeof(*run));
    if (im->n_cgroups == 0)
        return 0;
    uint32_t tag;
    if (getrandom(&tag, sizeof(tag), 0) != sizeof(tag)) {
        snprintf(err, errlen, "[Errno %d] %s", errno, errtext(errno));
        return -1;
    }
    char name[64];
    snprintf(name, sizeof(name), "ringfence-%d-%08x", (int)getpid(), tag);
    for (size_t i = 0; i < im->n_cgroups && i < CG_MAX; i++) {
        const cgsite_t *s = &im->cgroups[i];
        prune_stale(s->parent.ptr);
        char *dir = run->dirs[run->n].path;
        if (snprintf(dir, PATH_CAP, "%s/%s", s->parent.ptr, name) >= PATH_CAP) {
            snprintf(err, errlen, "cgroup path too long: %s", s->parent.ptr);
            cg_remove(run);
            return -1;
        }
        int seen = 0;
        for (size_t j = 0; j < run->n; j++)
            seen |= strcmp(run->dirs[j].path, dir) == 0;
        if (!seen && mkdir(dir, 0755) < 0) {
            snprintf(err, errlen, "[Errno %d] %s: '%s'", errno, errtext(errno), dir);
            cg_remove(run);
            return -1;
        }
        run->dirs[run->n].controller = s->controller;
        run->dirs[run->n].version = s->version;
        run->dirs[run->n].shared = seen;
        run->dirs[run->n].tasks_fd = -1;
        run->dirs[run->n].by_pid1 = 0;
        run->n++;
        if (apply_limit(s, dir, err, errlen) < 0) {
            cg_remove(run);
            return -1;
        }
        if (s->version == 1 && !seen) {
            char tasks[PATH_CAP];
            snprintf(tasks, sizeof(tasks), "%s/tasks", dir);
            int fd = open(tasks, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
            if (fd < 0) {
                snprintf(err, errlen, "[Errno %d] %s: '%s'", errno, errtext(errno), tasks);
                cg_remove(run);
                return -1;
            }
            run->dirs[run->n - 1].tasks_fd = fd;
            run->dirs[run->n - 1].by_pid1 = 1;
        }
    }
    return 0;
}

int cg_join_self(const cgrun_t *run, char *err, size_t errlen)
{
    for (size_t i = 0; i < run->n; i++) {
        const cgdir_t *d = &run->dirs[i];
        if (d->tasks_fd < 0)
            continue;
        if (write(d->tasks_fd, "0", 1) != 1) {
            snprintf(err, errlen, "[Errno %d] %s: '%s/tasks'", errno, errtext(errno), d->path);
            return -1;
        }
    }
    return 0;
}

int cg_host_joins(const cgrun_t *run)
{
    for (size_t i = 0; i < run->n; i++)
        if (!run->dirs[i].shared && !run->dirs[i].by_pid1)
            return 1;
    return 0;
}

void cg_close_tasks(cgrun_t *run)
{
    for (size_t i = 0; i < run->n; i++)
        if (run->dirs[i].tasks_fd >= 0) {
            close(run->dirs[i].tasks_fd);
            run->dirs[i].tasks_fd = -1;
        }
}

int cg_join(const cgrun_t *run, pid_t pid, char *err, size_t errlen)
{
    char value[32];
    snprintf(value, sizeof(value), "%d", (int)pid);
    for (size_t i = 0; i < run->n; i++)
        if (!run->dirs[i].shared && !run->dirs[i].by_pid1 &&
            write_knob(run->dirs[i].path, "cgroup.procs", value, err, errlen) < 0)
            return -1;
    return 0;
}

static ssize_t read_knob(const char *dir, const char *name, char *buf, size_t cap)
{
    char path[PATH_CAP];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    buf[n < 0 ? 0 : n] = 0;
    return n;
}

long cg_oom_kills(const cgrun_t *run)
{
    for (size_t i = 0; i < run->n; i++) {
        const cgdir_t *d = &run->dirs[i];
        if (d->controller != CG_MEMORY)
            continue;
        char text[4096];
        if (read_knob(d->path, d->version == 2 ? "memory.events" : "memory.oom_control", text,
                      sizeof(text)) <= 0)
            return 0;
        for (char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
            if (strncmp(line, "oom_kill ", 9) == 0)
                return strtol(line + 9, NULL, 10);
        return 0;
    }
    return 0;
}

void cg_remove(cgrun_t *run)
{
    cg_close_tasks(run);
    for (size_t i = 0; i < run->n; i++) {
        const cgdir_t *d = &run->dirs[i];
        if (d->shared)
            continue;
        struct timespec start, now;
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (;;) {
            char procs[8192];
            if (read_knob(d->path, "cgroup.procs", procs, sizeof(procs)) > 0)
                for (char *p = procs; *p;) {
                    long pid = strtol(p, &p, 10);
                    if (pid > 0)
                        kill((pid_t)pid, SIGKILL);
                    while (*p == '\n')
                        p++;
                }
            if (rmdir(d->path) == 0 || errno != EBUSY)
                break;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec - start.tv_sec >= 5)
                break;
            struct timespec ts = {0, 10000000L};
            nanosleep(&ts, NULL);
        }
    }
    run->n = 0;
}
