/* frame.c - blocking frame I/O shared by the node and its Python workers
 * (see python_int.h). */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/util.h"
#include "runtime/python/python_int.h"

static int write_all(int fd, const unsigned char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            if (poll(&pfd, 1, 30000) <= 0) return -1;
            continue;
        }
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int fm_py_send(int fd, char type, const void *a, size_t alen, const void *b, size_t blen) {
    unsigned char head[5];
    fm_put_u32(head, (uint32_t)(1 + alen + blen));
    head[4] = (unsigned char)type;
    if (write_all(fd, head, 5) != 0) return -1;
    if (alen && write_all(fd, a, alen) != 0) return -1;
    if (blen && write_all(fd, b, blen) != 0) return -1;
    return 0;
}

static int read_all(int fd, unsigned char *p, size_t n, int64_t deadline_ms) {
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int wait = -1;
            if (deadline_ms >= 0) {
                int64_t left = deadline_ms - fm_mono_ms();
                if (left <= 0) return -2;
                wait = (int)left;
            }
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            int pr = poll(&pfd, 1, wait);
            if (pr == 0) return -2;
            if (pr < 0 && errno != EINTR) return -1;
            continue;
        }
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int fm_py_recv(int fd, int timeout_ms, char **payload, size_t *len) {
    int64_t deadline = timeout_ms >= 0 ? fm_mono_ms() + timeout_ms : -1;
    unsigned char head[5];
    int rc = read_all(fd, head, 5, deadline);
    if (rc) return rc;
    uint32_t n = fm_get_u32(head);
    if (n < 1 || n > FM_PY_MAX_FRAME) return -1;
    char *buf = malloc(n);
    if ((rc = read_all(fd, (unsigned char *)buf, n - 1, deadline)) != 0) {
        free(buf);
        return rc;
    }
    buf[n - 1] = '\0';
    *payload = buf;
    *len = n - 1;
    return head[4];
}
