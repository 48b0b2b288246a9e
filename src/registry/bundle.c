/* bundle.c - unpacking and validating uploaded bundles (see bundle.h).
 *
 * Everything is read through libarchive from memory. Paths are normalised
 * before any check; link targets are resolved lexically against the link's
 * directory. Sizes are counted from the bytes actually read, never from tar
 * headers. Nothing touches the filesystem until fm_bundle_write. */
#include "registry/bundle.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"

bool fm_name_valid(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n > 63) return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && c == '-');
        if (!ok) return false;
    }
    return true;
}

/* Normalises a relative path in place: drops "." and empty components and,
 * when allowed, resolves ".." lexically. Returns false for absolute paths
 * and for any ".." that is not allowed or would climb out of the root. */
static bool normalise(char *path, bool allow_dotdot) {
    if (path[0] == '/') return false;
    size_t len = strlen(path), o = 0, depth = 0;
    char *out = malloc(len + 1);
    const char *p = path, *end = path + len;
    while (p < end) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        size_t n = slash ? (size_t)(slash - p) : (size_t)(end - p);
        if (n == 0 || (n == 1 && p[0] == '.')) {
            /* skip */
        } else if (n == 2 && p[0] == '.' && p[1] == '.') {
            if (!allow_dotdot || depth == 0) {
                free(out);
                return false;
            }
            while (o > 0 && out[o - 1] != '/') o--; /* drop the last component */
            if (o > 0) o--;                         /* and its separator */
            depth--;
        } else {
            if (o > 0) out[o++] = '/';
            memcpy(out + o, p, n);
            o += n;
            depth++;
        }
        p += n + 1;
    }
    memcpy(path, out, o);
    path[o] = '\0';
    free(out);
    return true;
}

static int cmp_files(const void *a, const void *b) {
    return strcmp(((const fm_bundle_file *)a)->path, ((const fm_bundle_file *)b)->path);
}

void fm_bundle_destroy(fm_bundle *b) {
    if (!b) return;
    for (size_t i = 0; i < b->nfiles; i++) {
        free(b->files[i].path);
        free(b->files[i].data);
        free(b->files[i].link);
    }
    free(b->files);
    free(b);
}

const fm_bundle_file *fm_bundle_find(const fm_bundle *b, const char *path) {
    fm_bundle_file key = {.path = (char *)path};
    const fm_bundle_file *f = bsearch(&key, b->files, b->nfiles, sizeof(key), cmp_files);
    return f && !f->link ? f : NULL;
}

static bool is_link(const fm_bundle *b, const char *path, size_t len) {
    size_t lo = 0, hi = b->nfiles;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const char *m = b->files[mid].path;
        size_t ml = strlen(m);
        int c = memcmp(m, path, ml < len ? ml : len);
        if (c == 0) c = (ml > len) - (ml < len);
        if (c == 0) return b->files[mid].link != NULL;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return false;
}

/* True when a directory on the way to `path` (not `path` itself) is a link. */
static bool under_link(const fm_bundle *b, const char *path) {
    for (const char *s = strchr(path, '/'); s; s = strchr(s + 1, '/'))
        if (is_link(b, path, (size_t)(s - path))) return true;
    return false;
}

/* Resolves a link target against the bundle: lexically, but refusing to
 * walk through another link (the kernel would follow it, and its own
 * target could lead anywhere). True when the target stays inside. */
static bool link_inside(const fm_bundle *b, const char *link_path, const char *target) {
    if (target[0] == '/' || target[0] == '\0') return false;
    size_t n = strlen(link_path) + strlen(target) + 2;
    char *cur = malloc(n);
    const char *slash = strrchr(link_path, '/');
    size_t o = slash ? (size_t)(slash - link_path) : 0;
    memcpy(cur, link_path, o);
    cur[o] = '\0';
    bool ok = true;
    const char *p = target;
    while (*p && ok) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0 || (len == 1 && p[0] == '.')) {
            /* skip */
        } else if (len == 2 && p[0] == '.' && p[1] == '.') {
            if (o == 0) ok = false;
            else {
                while (o > 0 && cur[o - 1] != '/') o--;
                if (o > 0) o--;
                cur[o] = '\0';
            }
        } else {
            if (o > 0) cur[o++] = '/';
            memcpy(cur + o, p, len);
            o += len;
            cur[o] = '\0';
            /* a link in the middle of the path would be followed first */
            if ((e && e[1]) && is_link(b, cur, o)) ok = false;
        }
        p += len;
        if (*p == '/') p++;
    }
    if (o == 0) ok = false;
    free(cur);
    return ok;
}

static void hash_bundle(fm_bundle *b) {
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    for (size_t i = 0; i < b->nfiles; i++) {
        const fm_bundle_file *f = &b->files[i];
        /* tag, path, NUL, length (8 bytes LE), content: unambiguous framing */
        const char *tag = f->link ? "L" : "F";
        const char *content = f->link ? f->link : f->data;
        size_t len = f->link ? strlen(f->link) : f->len;
        unsigned char lenbuf[8];
        for (int k = 0; k < 8; k++) lenbuf[k] = (unsigned char)((uint64_t)len >> (8 * k));
        EVP_DigestUpdate(md, tag, 1);
        EVP_DigestUpdate(md, f->path, strlen(f->path) + 1);
        EVP_DigestUpdate(md, lenbuf, 8);
        EVP_DigestUpdate(md, content, len);
    }
    unsigned char digest[32];
    unsigned int dlen = 0;
    EVP_DigestFinal_ex(md, digest, &dlen);
    EVP_MD_CTX_free(md);
    fm_hex(digest, 32, b->version);
}

typedef struct {
    char *path;
    char *target;
} hardlink;

fm_status fm_bundle_from_archive(const void *data, size_t len, fm_bundle **out, fm_err *err) {
    *out = NULL;
    struct archive *a = archive_read_new();
    archive_read_support_filter_gzip(a);
    archive_read_support_filter_none(a);
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    fm_bundle *b = calloc(1, sizeof(*b));
    size_t cap = 0;
    hardlink *hl = NULL;
    size_t nhl = 0;
    fm_status st = FM_OK;

    if (len == 0) {
        st = fm_err_set(err, FM_INVALID_BUNDLE, "empty body: expected a tar.gz of the deployment");
        goto done;
    }
    if (archive_read_open_memory(a, data, len) != ARCHIVE_OK) {
        st = fm_err_set(err, FM_INVALID_BUNDLE, "not a tar.gz archive: %s",
                        archive_error_string(a) ? archive_error_string(a) : "unreadable");
        goto done;
    }
    struct archive_entry *e;
    for (;;) {
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF) break;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            st = fm_err_set(err, FM_INVALID_BUNDLE, "not a valid tar.gz archive: %s",
                            archive_error_string(a) ? archive_error_string(a) : "read error");
            goto done;
        }
        const char *raw = archive_entry_pathname(e);
        if (!raw) raw = "";
        if (raw[0] == '/') {
            st = fm_err_set(err, FM_INVALID_BUNDLE, "absolute path in bundle: %s", raw);
            goto done;
        }
        char *path = strdup(raw);
        if (!normalise(path, false)) {
            st = fm_err_set(err, FM_INVALID_BUNDLE, "path leaves the bundle: %s", raw);
            free(path);
            goto done;
        }
        mode_t type = archive_entry_filetype(e);
        if (path[0] == '\0' || type == AE_IFDIR) {
            free(path);
            continue;
        }
        const char *hardtarget = archive_entry_hardlink(e);
        if (hardtarget) {
            char *t = strdup(hardtarget);
            if (t[0] == '/' || !normalise(t, false)) {
                st = fm_err_set(err, FM_INVALID_BUNDLE, "hard link leaves the bundle: %s -> %s",
                                path, hardtarget);
                free(t);
                free(path);
                goto done;
            }
            hl = realloc(hl, (nhl + 1) * sizeof(*hl));
            hl[nhl++] = (hardlink){path, t};
            continue;
        }
        if (type != AE_IFREG && type != AE_IFLNK) {
            st = fm_err_set(err, FM_INVALID_BUNDLE,
                            "unsupported entry type in bundle (only files, directories and "
                            "links): %s",
                            path);
            free(path);
            goto done;
        }
        if (b->nfiles + nhl >= FM_BUNDLE_MAX_FILES) {
            st = fm_err_set(err, FM_INVALID_BUNDLE, "too many files in bundle (more than %d)",
                            FM_BUNDLE_MAX_FILES);
            free(path);
            goto done;
        }
        if (b->nfiles == cap) {
            cap = cap ? cap * 2 : 64;
            b->files = realloc(b->files, cap * sizeof(*b->files));
        }
        fm_bundle_file *f = &b->files[b->nfiles++];
        memset(f, 0, sizeof(*f));
        f->path = path;
        if (type == AE_IFLNK) {
            const char *target = archive_entry_symlink(e);
            f->link = strdup(target ? target : ""); /* checked once all entries are known */
            continue;
        }
        size_t fcap = 4096, flen = 0;
        char *buf = malloc(fcap);
        for (;;) {
            if (flen + 65536 + 1 > fcap) {
                while (flen + 65536 + 1 > fcap) fcap *= 2;
                buf = realloc(buf, fcap);
            }
            la_ssize_t n = archive_read_data(a, buf + flen, 65536);
            if (n < 0) {
                free(buf);
                st = fm_err_set(err, FM_INVALID_BUNDLE, "corrupt archive while reading %s: %s",
                                path, archive_error_string(a));
                goto done;
            }
            if (n == 0) break;
            flen += (size_t)n;
            if (b->total_bytes + flen > FM_BUNDLE_MAX_BYTES) {
                free(buf);
                st = fm_err_set(err, FM_INVALID_BUNDLE,
                                "bundle too large: more than %u MiB unpacked (at %s)",
                                FM_BUNDLE_MAX_BYTES >> 20, path);
                goto done;
            }
        }
        buf[flen] = '\0';
        f->data = buf;
        f->len = flen;
        b->total_bytes += flen;
    }
    /* Hard links become copies of their (regular) target. */
    if (b->nfiles + nhl > FM_BUNDLE_MAX_FILES) {
        st = fm_err_set(err, FM_INVALID_BUNDLE, "too many files in bundle (more than %d)",
                        FM_BUNDLE_MAX_FILES);
        goto done;
    }
    qsort(b->files, b->nfiles, sizeof(*b->files), cmp_files);
    size_t nregular = b->nfiles;
    b->files = realloc(b->files, (b->nfiles + nhl + 1) * sizeof(*b->files));
    for (size_t i = 0; i < nhl; i++) {
        fm_bundle_file key = {.path = hl[i].target};
        const fm_bundle_file *t = bsearch(&key, b->files, nregular, sizeof(key), cmp_files);
        if (!t || t->link) {
            st = fm_err_set(err, FM_INVALID_BUNDLE,
                            "hard link to a missing or non-regular file: %s -> %s", hl[i].path,
                            hl[i].target);
            goto done;
        }
        if (b->total_bytes + t->len > FM_BUNDLE_MAX_BYTES) {
            st = fm_err_set(err, FM_INVALID_BUNDLE, "bundle too large: more than %u MiB unpacked",
                            FM_BUNDLE_MAX_BYTES >> 20);
            goto done;
        }
        fm_bundle_file *f = &b->files[b->nfiles++]; /* no realloc: t stays valid */
        f->path = hl[i].path;
        hl[i].path = NULL;
        f->data = malloc(t->len + 1);
        memcpy(f->data, t->data, t->len + 1);
        f->len = t->len;
        f->link = NULL;
        b->total_bytes += t->len;
    }
    qsort(b->files, b->nfiles, sizeof(*b->files), cmp_files);
    for (size_t i = 1; i < b->nfiles; i++) {
        if (strcmp(b->files[i - 1].path, b->files[i].path) == 0) {
            st = fm_err_set(err, FM_INVALID_BUNDLE, "duplicate path in bundle: %s",
                            b->files[i].path);
            goto done;
        }
    }
    /* Links: nothing may live under a link, and targets must stay inside
     * without passing through another link. */
    for (size_t i = 0; i < b->nfiles; i++) {
        const fm_bundle_file *f = &b->files[i];
        if (under_link(b, f->path)) {
            st = fm_err_set(err, FM_INVALID_BUNDLE, "entry under a linked directory: %s", f->path);
            goto done;
        }
        if (f->link && !link_inside(b, f->path, f->link)) {
            st = fm_err_set(err, FM_INVALID_BUNDLE, "link leaves the bundle: %s -> %s", f->path,
                            f->link);
            goto done;
        }
    }
    hash_bundle(b);
done:
    for (size_t i = 0; i < nhl; i++) {
        free(hl[i].path);
        free(hl[i].target);
    }
    free(hl);
    archive_read_free(a);
    if (st != FM_OK) {
        fm_bundle_destroy(b);
        return st;
    }
    *out = b;
    return FM_OK;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

fm_status fm_bundle_write(const fm_bundle *b, const char *dir, fm_err *err) {
    char path[4096];
    for (size_t i = 0; i < b->nfiles; i++) {
        const fm_bundle_file *f = &b->files[i];
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, f->path) >= sizeof(path))
            return fm_err_set(err, FM_INVALID_BUNDLE, "path too long: %s", f->path);
        char *slash = strrchr(path, '/');
        *slash = '\0';
        if (fm_mkdirs(path, 0755) != 0)
            return fm_err_set(err, FM_INTERNAL, "cannot create %s: %s", path, strerror(errno));
        *slash = '/';
        if (f->link) {
            if (symlink(f->link, path) != 0)
                return fm_err_set(err, FM_INTERNAL, "cannot link %s: %s", f->path,
                                  strerror(errno));
            continue;
        }
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0 || write_all(fd, f->data, f->len) != 0) {
            int e = errno;
            if (fd >= 0) close(fd);
            return fm_err_set(err, FM_INTERNAL, "cannot write %s: %s", f->path, strerror(e));
        }
        close(fd);
    }
    return FM_OK;
}
