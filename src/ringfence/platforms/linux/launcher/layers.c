/* Ids, loopback, quotas, capabilities, limits, Landlock and seccomp (the layers). */
#include "launcher.h"

/* ---- the layers ---- */

void map_ids(const image_t *im)
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
           errtext(errno));
    _exit(125);
}

void loopback_up(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq req;
    memset(&req, 0, sizeof(req));
    strcpy(req.ifr_name, "lo");
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &req) < 0)
        die(errno, "cannot bring up the sandbox's loopback: %s", errtext(errno));
    req.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &req) < 0)
        die(errno, "cannot bring up the sandbox's loopback: %s", errtext(errno));
    close(s);
}

void userns_quotas(const image_t *im)
{
    for (size_t i = 0; i < im->n_quotas; i++) {
        char path[PATH_CAP], value[32];
        snprintf(path, sizeof(path), "/proc/sys/user/%s", im->quotas[i].name.ptr);
        snprintf(value, sizeof(value), "%llu\n", (unsigned long long)im->quotas[i].value);
        if (write_file(path, value) < 0 && errno != ENOENT)
            die(errno, "cannot set %s in the sandbox: %s", path, errtext(errno));
    }
}

void drop_bounding(void)
{
    for (unsigned long cap = 0;; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
            if (errno == EINVAL)
                break; /* past the last capability this kernel knows */
            die(errno, "cannot clear the capability bounding set: %s", errtext(errno));
        }
    }
}

void drop_all_caps(void)
{
    if (prctl(RF_PR_SET_SECUREBITS, RF_SECUREBITS, 0, 0, 0) < 0 ||
        prctl(RF_PR_CAP_AMBIENT, RF_PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
        die(errno, "cannot drop capabilities: %s", errtext(errno));
    struct rf_cap_header h = {RF_CAP_VERSION_3, 0};
    struct rf_cap_data d[2];
    memset(d, 0, sizeof(d));
    if (syscall(SYS_capset, &h, d) < 0)
        die(errno, "cannot drop capabilities: %s", errtext(errno));
}

void set_rlimits(const image_t *im)
{
    for (size_t i = 0; i < im->n_rlims; i++) {
        struct rlimit cur;
        if (getrlimit(im->rlims[i].resource, &cur) < 0)
            die(errno, "getrlimit: %s", errtext(errno));
        rlim_t wanted = im->rlims[i].value;
        /* CPU: SIGXCPU at the limit, SIGKILL a second later (steps.set_rlimits) */
        rlim_t hard = im->rlims[i].resource == RLIMIT_CPU ? wanted + 1 : wanted;
        if (cur.rlim_max != RLIM_INFINITY && cur.rlim_max < hard)
            hard = cur.rlim_max;
        struct rlimit next = {wanted < hard ? wanted : hard, hard};
        if (setrlimit(im->rlims[i].resource, &next) < 0)
            die(errno, "cannot set a resource limit: %s", errtext(errno));
    }
}

#define LL_FILE_ACCESS ((1ULL << 0) | (1ULL << 1) | (1ULL << 2) | (1ULL << 14) | (1ULL << 15))
#define LL_DEVICE_ACCESS ((1ULL << 0) | (1ULL << 1) | (1ULL << 2) | (1ULL << 3) | (1ULL << 14) | (1ULL << 15))

static void ll_add(int ruleset, int fd, uint64_t access, uint64_t handled, const char *what)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        die(errno, "Landlock step fstat of rule path '%s' failed: %s", what, errtext(errno));
    if (!S_ISDIR(st.st_mode))
        access &= LL_FILE_ACCESS;
    uint64_t allowed = access & handled;
    if (allowed == 0)
        return; /* the kernel refuses an empty grant; granting nothing is the default */
    struct rf_path_beneath pb = {allowed, fd};
    if (syscall(SYS_landlock_add_rule, ruleset, RF_LANDLOCK_RULE_PATH_BENEATH, &pb, 0) < 0)
        die(errno, "Landlock step landlock_add_rule for '%s' failed: %s", what, errtext(errno));
}

int create_ruleset(const image_t *im)
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
        die(errno, "Landlock step landlock_create_ruleset failed: %s", errtext(errno));
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
                errtext(errno));
        }
        ll_add(ruleset, fd, p->access, im->ll_fs, p->path.ptr);
        close(fd);
    }
    for (size_t i = 0; i < im->n_ports; i++) {
        struct rf_net_port np = {im->ports[i].access & im->ll_net, im->ports[i].port};
        if (syscall(SYS_landlock_add_rule, ruleset, RF_LANDLOCK_RULE_NET_PORT, &np, 0) < 0)
            die(errno, "Landlock step landlock_add_rule for TCP port %llu failed: %s",
                (unsigned long long)np.port, errtext(errno));
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

void restrict_self(int ruleset)
{
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        die(errno, "Landlock step prctl(PR_SET_NO_NEW_PRIVS) failed: %s", errtext(errno));
    if (syscall(SYS_landlock_restrict_self, ruleset, 0) < 0) {
        if (errno == EPERM)
            die(EPERM,
                "Landlock refused a nested domain (EPERM): this runs inside a ringfence "
                "sandbox whose name guard forbids nesting (its emulated file calls would "
                "bypass the inner rules). Run the outer sandbox with --no-default-protect, "
                "or run this outside it");
        die(errno, "Landlock step landlock_restrict_self failed: %s", errtext(errno));
    }
    close(ruleset);
}

void install_seccomp(const image_t *im)
{
    struct sock_fprog prog = {(unsigned short)im->n_bpf, im->bpf};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        die(errno, "cannot set no_new_privs before the seccomp filter: %s", errtext(errno));
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) {
        if (errno == ENOMEM)
            die(ENOMEM,
                "the kernel refused another seccomp filter: the filters already stacked on "
                "this process (from an outer sandbox or container) are too long in total");
        die(errno,
            "the kernel refused ringfence's seccomp filter (%s); this is a ringfence bug, "
            "please report it with `ringfence doctor` output",
            errtext(errno));
    }
}
