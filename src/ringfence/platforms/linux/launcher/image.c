/* The plan image (native_image.py): parsed and checked before any clone. */
#include "launcher.h"

void image_free(image_t *im)
{
    PyMem_Free(im->mounts);
    PyMem_Free(im->paths);
    PyMem_Free(im->ports);
    PyMem_Free(im->bpf);
    PyMem_Free(im->rlims);
    PyMem_Free(im->quotas);
    PyMem_Free(im->cgroups);
    PyMem_Free(im->scratch);
    PyMem_Free(im->guard_bpf);
    PyMem_Free(im->envp);
    PyMem_Free(im->arena);
    memset(im, 0, sizeof(*im));
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
    case TAG_CGROUP: {
        if (im->n_cgroups >= CG_MAX)
            return -1;
        GROW(im->cgroups, im->n_cgroups, cgsite_t);
        cgsite_t *g = &im->cgroups[im->n_cgroups];
        uint8_t controller, version;
        if (take(r, &controller, 1) || take(r, &version, 1) || take(r, &g->limit, 8))
            return -1;
        if ((controller != CG_MEMORY && controller != CG_PIDS) || (version != 1 && version != 2))
            return -1;
        g->controller = controller;
        g->version = version;
        if (stash(im, r->p, (uint32_t)(r->end - r->p), &g->parent) < 0 || g->parent.ptr[0] != '/')
            return -1;
        r->p = r->end;
        im->n_cgroups++;
        return 0;
    }
    case TAG_GUARD_PYTHON:
    case TAG_GUARD_BOOT:
    case TAG_GUARD_RULES:
    case TAG_GUARD_LOCK: {
        str_t *slot = tag == TAG_GUARD_PYTHON ? &im->guard_python
                      : tag == TAG_GUARD_BOOT ? &im->guard_boot
                      : tag == TAG_GUARD_RULES ? &im->guard_rules
                                               : &im->guard_lock;
        if (slot->ptr != NULL || stash(im, r->p, (uint32_t)(r->end - r->p), slot) < 0)
            return -1;
        r->p = r->end;
        return 0;
    }
    case TAG_GUARD_BPF: {
        size_t n = (size_t)(r->end - r->p);
        if (im->guard_bpf != NULL || n == 0 || n % sizeof(struct sock_filter) || n / 8 > BPF_MAXINSNS)
            return -1;
        im->guard_bpf = PyMem_Malloc(n);
        if (im->guard_bpf == NULL)
            return -1;
        memcpy(im->guard_bpf, r->p, n);
        im->n_guard_bpf = n / sizeof(struct sock_filter);
        r->p = r->end;
        return 0;
    }
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

int parse_image(const unsigned char *data, size_t size, image_t *im)
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
    if (im->guard_bpf != NULL &&
        (im->guard_python.ptr == NULL || im->guard_boot.ptr == NULL || im->guard_rules.ptr == NULL ||
         im->guard_python.ptr[0] != '/'))
        return -1; /* a guard that could not start: never run without it */
    im->scratch = PyMem_Calloc(2 * im->n_mounts, sizeof(int));
    if (im->scratch == NULL)
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
