/* cli_pack.c - turns a deployment directory into the tar.gz that
 * `fnmesh deploy` uploads.
 *
 * Two passes: walk the tree (lstat only, symlinks are never followed) into a
 * list of entries, sort it by relative path, then write every entry with
 * libarchive into a memory buffer. The output is byte-for-byte reproducible
 * for the same tree: sorted order, mtime 0, owner 0, normalised modes, no
 * gzip timestamp, raw path bytes (pax hdrcharset=BINARY).
 *
 * It does not check what the server checks (path traversal, links leaving
 * the bundle, size limits): the node is the authority and says why. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>

#include "cli/cli_int.h"

typedef struct pack_entry {
    char *rel;   /* path relative to the root, '/'-separated, owned */
    mode_t mode; /* from lstat */
    int64_t size;
} pack_entry;

typedef struct pack_list {
    pack_entry *v;
    size_t n, cap;
} pack_list;

static bool is_skipped_dir(const char *name) {
    return strcmp(name, ".git") == 0 || strcmp(name, "fnmesh-data") == 0;
}

/* Takes ownership of `rel` (freed on failure too). */
static int list_add(pack_list *l, char *rel, const struct stat *st) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        pack_entry *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            free(rel);
            return fm_cli_nomem();
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (pack_entry){rel, st->st_mode, (int64_t)st->st_size};
    return FM_CLI_OK;
}

static void list_dispose(pack_list *l) {
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].rel);
    free(l->v);
}

static int walk(const char *root, const char *rel, pack_list *l);

/* Adds the child `name` of directory `rel` (NULL = the root). */
static int walk_child(const char *root, const char *rel, const char *name, pack_list *l) {
    char *crel = rel ? fm_cli_fmt("%s/%s", rel, name) : fm_cli_fmt("%s", name);
    char *path = crel ? fm_cli_fmt("%s/%s", root, crel) : NULL;
    if (!path) {
        free(crel);
        return fm_cli_nomem();
    }
    struct stat st;
    int rc = FM_CLI_OK;
    if (lstat(path, &st) != 0) {
        fprintf(stderr, "error: cannot read %s: %s\n", path, strerror(errno));
        free(crel);
        rc = FM_CLI_ERR;
    } else if (S_ISDIR(st.st_mode) && is_skipped_dir(name)) {
        free(crel);
    } else if (S_ISDIR(st.st_mode)) {
        rc = list_add(l, crel, &st);
        if (rc == FM_CLI_OK) rc = walk(root, crel, l);
    } else if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) {
        rc = list_add(l, crel, &st);
    } else {
        fprintf(stderr, "warning: skipping %s (not a regular file, directory or symlink)\n", path);
        free(crel);
    }
    free(path);
    return rc;
}

/* Lists the entries below directory `rel` (NULL = the root), recursively. */
static int walk(const char *root, const char *rel, pack_list *l) {
    char *path = rel ? fm_cli_fmt("%s/%s", root, rel) : fm_cli_fmt("%s", root);
    if (!path) return fm_cli_nomem();
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stderr, "error: cannot read %s: %s\n", path, strerror(errno));
        free(path);
        return FM_CLI_ERR;
    }
    int rc = FM_CLI_OK;
    struct dirent *de;
    while (rc == FM_CLI_OK && (errno = 0, de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            rc = walk_child(root, rel, de->d_name, l);
    }
    if (rc == FM_CLI_OK && errno != 0) {
        fprintf(stderr, "error: cannot read %s: %s\n", path, strerror(errno));
        rc = FM_CLI_ERR;
    }
    closedir(d);
    free(path);
    return rc;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const pack_entry *)a)->rel, ((const pack_entry *)b)->rel);
}

/* ---- writing --------------------------------------------------------- */

static la_ssize_t on_write(struct archive *a, void *ud, const void *p, size_t n) {
    fm_cli_buf *out = ud;
    fm_cli_buf_append(out, p, n);
    if (out->oom) {
        archive_set_error(a, ENOMEM, "out of memory");
        return -1;
    }
    return (la_ssize_t)n;
}

static int archive_fail(struct archive *a, const char *what) {
    const char *msg = archive_error_string(a);
    fprintf(stderr, "error: cannot pack %s: %s\n", what, msg ? msg : "libarchive error");
    return FM_CLI_ERR;
}

/* Copies the content of regular file `path`, which must be `size` bytes. */
static int copy_file(struct archive *a, const char *path, int64_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        fprintf(stderr, "error: cannot read %s: %s\n", path, strerror(errno));
        return FM_CLI_ERR;
    }
    char buf[32768];
    int64_t total = 0;
    int rc = FM_CLI_OK;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            fprintf(stderr, "error: cannot read %s: %s\n", path, strerror(errno));
            rc = FM_CLI_ERR;
            break;
        }
        if (n == 0 || (total += n) > size) {
            if (total != size) {
                fprintf(stderr, "error: %s changed while it was being packed\n", path);
                rc = FM_CLI_ERR;
            }
            break;
        }
        if (archive_write_data(a, buf, (size_t)n) < 0) {
            rc = archive_fail(a, path);
            break;
        }
    }
    close(fd);
    return rc;
}

/* Fills `ae` for entry `e` (at `path` on disk). */
static int describe(struct archive_entry *ae, const pack_entry *e, const char *path) {
    archive_entry_set_pathname(ae, e->rel);
    archive_entry_set_mtime(ae, 0, 0);
    archive_entry_set_uid(ae, 0);
    archive_entry_set_gid(ae, 0);
    if (S_ISDIR(e->mode)) {
        archive_entry_set_filetype(ae, AE_IFDIR);
        archive_entry_set_perm(ae, 0755);
    } else if (S_ISREG(e->mode)) {
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_perm(ae, (e->mode & 0111) ? 0755 : 0644);
        archive_entry_set_size(ae, e->size);
    } else {
        char target[PATH_MAX];
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n < 0) {
            fprintf(stderr, "error: cannot read link %s: %s\n", path, strerror(errno));
            return FM_CLI_ERR;
        }
        target[n] = '\0';
        archive_entry_set_filetype(ae, AE_IFLNK);
        archive_entry_set_perm(ae, 0777);
        archive_entry_set_symlink(ae, target);
    }
    return FM_CLI_OK;
}

static int write_entry(struct archive *a, const char *root, const pack_entry *e) {
    char *path = fm_cli_fmt("%s/%s", root, e->rel);
    struct archive_entry *ae = path ? archive_entry_new() : NULL;
    if (!ae) {
        free(path);
        return fm_cli_nomem();
    }
    int rc = describe(ae, e, path);
    if (rc == FM_CLI_OK && archive_write_header(a, ae) != ARCHIVE_OK) rc = archive_fail(a, path);
    if (rc == FM_CLI_OK && S_ISREG(e->mode)) rc = copy_file(a, path, e->size);
    archive_entry_free(ae);
    free(path);
    return rc;
}

static int open_archive(struct archive *a, fm_cli_buf *out) {
    if (archive_write_add_filter_gzip(a) != ARCHIVE_OK ||
        archive_write_set_filter_option(a, "gzip", "timestamp", NULL) != ARCHIVE_OK ||
        archive_write_set_format_gnutar(a) != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK ||
        archive_write_open(a, out, NULL, on_write, NULL) != ARCHIVE_OK)
        return archive_fail(a, "the bundle");
    return FM_CLI_OK;
}

static int write_all(const char *root, const pack_list *l, fm_cli_buf *out) {
    struct archive *a = archive_write_new();
    if (!a) return fm_cli_nomem();
    int rc = open_archive(a, out);
    for (size_t i = 0; rc == FM_CLI_OK && i < l->n; i++)
        rc = write_entry(a, root, &l->v[i]);
    if (rc == FM_CLI_OK && archive_write_close(a) != ARCHIVE_OK) rc = archive_fail(a, "the bundle");
    archive_write_free(a);
    if (rc == FM_CLI_OK && out->oom) rc = fm_cli_nomem();
    return rc;
}

int fm_cli_pack(const char *dir, fm_cli_buf *out) {
    char *root = fm_cli_fmt("%s", dir);
    if (!root) return fm_cli_nomem();
    size_t n = strlen(root);
    while (n > 1 && root[n - 1] == '/')
        root[--n] = '\0';
    pack_list l = {0};
    int rc = walk(root, NULL, &l);
    if (rc == FM_CLI_OK) {
        if (l.n > 0) qsort(l.v, l.n, sizeof *l.v, cmp_entry);
        rc = write_all(root, &l, out);
    }
    list_dispose(&l);
    free(root);
    return rc;
}
