/* The sandbox's resolver for a native run (network/dns_stub.py): every lookup gets NXDOMAIN
 * at once, and the host names asked go to the host for the report.
 *
 * With the network off nothing a lookup returns can be reached; a lookup that waits or fails
 * as "temporary" only makes tools retry. The Python runner hands these sockets to the host,
 * which parses queries in Python. Here the parser is C, so it runs in a process of its own
 * inside the sandbox, forked by pid 1 after every layer is on (Landlock, no capabilities,
 * seccomp, not dumpable): whatever a crafted packet could do to it, the command could do
 * itself. It holds only its sockets and the write end of the names pipe; the host checks
 * each name again before it shows it. Same rules as dns_stub.py: no compression pointers
 * followed, sizes checked before every read, answers never larger than query + header. */
#include "launcher.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#define DNS_PORT 53
#define MAX_PACKET 1232
#define MAX_NAME 255
#define MAX_LABEL 63
#define QR 0x8000
#define RD 0x0100
#define RA 0x0080
#define FORMERR 1
#define NXDOMAIN 3
#define NOTIMP 4
#define RECENT 16
#define TCP_MAX 32
#define TCP_IDLE_MS 2000
#define TCP_QUERIES 16
#define UDP_BURST 64
#define NAME_BUF 384 /* a name read while its wire form is <= 255 bytes, plus one label */

int dns_open(int socks[DNS_SOCKS])
{
    int n = 0;
    for (int v6 = 0; v6 < 2; v6++) {
        for (int stream = 0; stream < 2; stream++) {
            int s = socket(v6 ? AF_INET6 : AF_INET, (stream ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
            if (s < 0)
                continue;
            int ok;
            if (v6) {
                int one = 1;
                struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(DNS_PORT),
                                         .sin6_addr = IN6ADDR_LOOPBACK_INIT};
                ok = setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == 0 &&
                     bind(s, (struct sockaddr *)&a, sizeof(a)) == 0;
            } else {
                struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(DNS_PORT),
                                        .sin_addr = {htonl(INADDR_LOOPBACK)}};
                ok = bind(s, (struct sockaddr *)&a, sizeof(a)) == 0;
            }
            if (ok && stream)
                ok = listen(s, 64) == 0;
            if (!ok) {
                close(s);
                continue;
            }
            socks[n++] = s;
        }
    }
    return n;
}

static int label_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* The answer to one query in `out` (its length; 0: none) and the host name worth keeping in
 * `name` (empty: none). */
static size_t answer(const unsigned char *q, size_t len, unsigned char *out, char *name)
{
    name[0] = 0;
    if (len < 12 || len > MAX_PACKET)
        return 0;
    unsigned flags = (unsigned)q[2] << 8 | q[3];
    unsigned qdcount = (unsigned)q[4] << 8 | q[5];
    if (flags & QR)
        return 0; /* a response: answering it could start a loop */
    int rcode = 0;
    size_t pos = 12, nlen = 0;
    int host = 1;
    if (((flags >> 11) & 0xF) != 0)
        rcode = NOTIMP;
    else if (qdcount != 1)
        rcode = FORMERR;
    else {
        rcode = FORMERR;
        while (pos < len && pos - 12 <= MAX_NAME) {
            unsigned l = q[pos];
            if (l == 0) {
                pos++;
                rcode = 0;
                break;
            }
            if (l > MAX_LABEL || pos + 1 + l > len || nlen + l + 2 >= NAME_BUF)
                break;
            if (nlen)
                name[nlen++] = '.';
            for (unsigned i = 0; i < l; i++) {
                unsigned char c = q[pos + 1 + i];
                if (c >= 'A' && c <= 'Z')
                    c = (unsigned char)(c - 'A' + 'a');
                host &= label_byte(c);
                name[nlen++] = (char)c;
            }
            pos += 1 + l;
        }
        if (rcode == 0 && pos + 4 > len)
            rcode = FORMERR;
    }
    name[nlen] = 0;
    unsigned out_flags = QR | (flags & (0xFu << 11)) | (flags & RD) | RA;
    memcpy(out, q, 2);
    memset(out + 2, 0, 10);
    if (rcode != 0) {
        name[0] = 0;
        out_flags |= (unsigned)rcode;
        out[2] = (unsigned char)(out_flags >> 8);
        out[3] = (unsigned char)out_flags;
        return 12;
    }
    unsigned qtype = (unsigned)q[pos] << 8 | q[pos + 1];
    unsigned qclass = (unsigned)q[pos + 2] << 8 | q[pos + 3];
    int kept = host && nlen > 0 && (qtype == 1 || qtype == 28 || qtype == 64 || qtype == 65 || qtype == 255) &&
               (qclass == 1 || qclass == 255);
    if (!kept)
        name[0] = 0;
    out_flags |= NXDOMAIN;
    out[2] = (unsigned char)(out_flags >> 8);
    out[3] = (unsigned char)out_flags;
    out[5] = 1;
    memcpy(out + 12, q + 12, pos + 4 - 12);
    return pos + 4;
}

typedef struct {
    char names[RECENT][NAME_BUF];
    int next;
    int fd;
} namelog_t;

static void keep(namelog_t *log, const char *name)
{
    if (!name[0])
        return;
    for (int i = 0; i < RECENT; i++)
        if (strcmp(log->names[i], name) == 0)
            return; /* repeated among the last few: kept once */
    snprintf(log->names[log->next], sizeof(log->names[0]), "%s", name);
    log->next = (log->next + 1) % RECENT;
    char line[NAME_BUF + 1];
    int n = snprintf(line, sizeof(line), "%s\n", name);
    ssize_t unused = write(log->fd, line, (size_t)n); /* full pipe: dropped (the host says lost) */
    (void)unused;
}

typedef struct {
    int fd, answered;
    size_t used;
    long long deadline;
    unsigned char buf[MAX_PACKET + 2];
} stream_t;

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void drop(stream_t *s)
{
    close(s->fd);
    s->fd = -1;
}

/* Answer every whole message `s` holds; 0 when it must be closed. */
static int serve_stream(stream_t *s, namelog_t *log)
{
    while (s->used >= 2) {
        size_t length = (size_t)s->buf[0] << 8 | s->buf[1];
        if (length > MAX_PACKET)
            return 0;
        if (s->used < 2 + length)
            return 1;
        unsigned char out[MAX_PACKET + 2];
        char name[NAME_BUF];
        size_t n = answer(s->buf + 2, length, out + 2, name);
        keep(log, name);
        memmove(s->buf, s->buf + 2 + length, s->used - 2 - length);
        s->used -= 2 + length;
        s->answered++;
        if (n > 0) {
            out[0] = (unsigned char)(n >> 8);
            out[1] = (unsigned char)n;
            if (send(s->fd, out, n + 2, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)(n + 2))
                return 0; /* a client that does not read */
        }
        if (s->answered >= TCP_QUERIES)
            return 0;
    }
    return 1;
}

__attribute__((noreturn)) void dns_serve(const int *socks, int n, int names_w)
{
    namelog_t log;
    memset(&log, 0, sizeof(log));
    log.fd = names_w;
    static stream_t streams[TCP_MAX];
    for (int i = 0; i < TCP_MAX; i++)
        streams[i].fd = -1;
    for (int i = 0; i < n; i++)
        fcntl(socks[i], F_SETFL, O_NONBLOCK);
    for (;;) {
        struct pollfd fds[DNS_SOCKS + TCP_MAX];
        int idx[DNS_SOCKS + TCP_MAX];
        int nfds = 0;
        long long first = -1;
        for (int i = 0; i < n; i++) {
            fds[nfds] = (struct pollfd){socks[i], POLLIN, 0};
            idx[nfds++] = -1 - i;
        }
        for (int i = 0; i < TCP_MAX; i++) {
            if (streams[i].fd < 0)
                continue;
            fds[nfds] = (struct pollfd){streams[i].fd, POLLIN, 0};
            idx[nfds++] = i;
            if (first < 0 || streams[i].deadline < first)
                first = streams[i].deadline;
        }
        int wait = first < 0 ? -1 : (int)(first > now_ms() ? first - now_ms() : 0);
        if (poll(fds, (nfds_t)nfds, wait) < 0 && errno != EINTR)
            _exit(0);
        for (int k = 0; k < nfds; k++) {
            if (!fds[k].revents)
                continue;
            if (idx[k] >= 0) {
                stream_t *s = &streams[idx[k]];
                ssize_t got = recv(s->fd, s->buf + s->used, sizeof(s->buf) - s->used, MSG_DONTWAIT);
                if (got < 0 && (errno == EAGAIN || errno == EINTR))
                    continue;
                if (got <= 0) {
                    drop(s);
                    continue;
                }
                s->used += (size_t)got;
                s->deadline = now_ms() + TCP_IDLE_MS;
                if (!serve_stream(s, &log))
                    drop(s);
                continue;
            }
            int sock = socks[-1 - idx[k]];
            int type = 0;
            socklen_t tl = sizeof(type);
            getsockopt(sock, SOL_SOCKET, SO_TYPE, &type, &tl);
            if (type == SOCK_STREAM) {
                int c = accept4(sock, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (c < 0)
                    continue;
                int slot = -1;
                for (int i = 0; i < TCP_MAX && slot < 0; i++)
                    if (streams[i].fd < 0)
                        slot = i;
                if (slot < 0) {
                    close(c);
                    continue;
                }
                streams[slot].fd = c;
                streams[slot].used = 0;
                streams[slot].answered = 0;
                streams[slot].deadline = now_ms() + TCP_IDLE_MS;
                continue;
            }
            for (int burst = 0; burst < UDP_BURST; burst++) {
                unsigned char q[MAX_PACKET + 1], out[MAX_PACKET + 1];
                struct sockaddr_storage peer;
                socklen_t pl = sizeof(peer);
                ssize_t got = recvfrom(sock, q, sizeof(q), MSG_DONTWAIT, (struct sockaddr *)&peer, &pl);
                if (got < 0 && (errno == EAGAIN || errno == EINTR))
                    break;
                if (got < 0)
                    continue; /* an ICMP error queued on the socket, say */
                char name[NAME_BUF];
                size_t len = answer(q, (size_t)got, out, name);
                keep(&log, name);
                if (len > 0)
                    sendto(sock, out, len, MSG_DONTWAIT, (struct sockaddr *)&peer, pl);
            }
        }
        long long now = now_ms();
        for (int i = 0; i < TCP_MAX; i++)
            if (streams[i].fd >= 0 && streams[i].deadline <= now)
                drop(&streams[i]);
    }
}
