/* test_bundle.c - registry/bundle.h: fm_bundle_from_archive on tar and
 * tar.gz archives built in memory with libarchive (sorting, content-only
 * version hash, path/link/type/count/size refusals, bare and "./" names,
 * hard links (copies, counted against the limits, no duplicate paths),
 * links to directories and links through links), fm_bundle_find,
 * fm_bundle_write into a temporary directory, and fm_name_valid. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cmocka.h>

#include "fm_test.h"

#include "core/util.h"
#include "registry/bundle.h"

#define MiB (1024u * 1024u)


/* ------------------------------------------------------------------ archive builder */

typedef struct {
    struct archive *a;
    char *buf;
    size_t len, cap;
} arc;

static la_ssize_t arc_write_cb(struct archive *a, void *ud, const void *p, size_t n) {
    (void)a;
    arc *w = ud;
    if (w->len + n > w->cap) {
        while (w->len + n > w->cap) w->cap = w->cap ? w->cap * 2 : 65536;
        w->buf = realloc(w->buf, w->cap);
        assert_non_null(w->buf);
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
    return (la_ssize_t)n;
}

static void arc_open(arc *w, bool gzip) {
    memset(w, 0, sizeof(*w));
    w->a = archive_write_new();
    assert_int_equal(archive_write_set_format_pax_restricted(w->a), ARCHIVE_OK);
    if (gzip) {
        assert_int_equal(archive_write_add_filter_gzip(w->a), ARCHIVE_OK);
        assert_int_equal(archive_write_set_filter_option(w->a, "gzip", "compression-level", "1"),
                         ARCHIVE_OK);
    }
    /* no padding after the last block: the buffer is exactly the archive */
    assert_int_equal(archive_write_set_bytes_in_last_block(w->a, 1), ARCHIVE_OK);
    assert_int_equal(archive_write_open(w->a, w, NULL, arc_write_cb, NULL), ARCHIVE_OK);
}

typedef struct {
    int64_t mtime;
    int64_t uid;
    const char *uname;
} meta;

static const meta default_meta = {1700000000, 1000, "dev"};

/* Entry names and hard-link targets are stored exactly as given: bare
 * ("index.js") unless a test spells out "./" or other forms. */
static struct archive_entry *new_entry(const char *path, unsigned type, const meta *m) {
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, path);
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, type == AE_IFDIR ? 0755 : 0644);
    archive_entry_set_mtime(e, (time_t)m->mtime, 0);
    archive_entry_set_uid(e, m->uid);
    archive_entry_set_gid(e, m->uid);
    archive_entry_set_uname(e, m->uname);
    return e;
}

static void arc_file_meta(arc *w, const char *path, const void *data, size_t len, const meta *m) {
    struct archive_entry *e = new_entry(path, AE_IFREG, m);
    archive_entry_set_size(e, (la_int64_t)len);
    int r = archive_write_header(w->a, e);
    if (r != ARCHIVE_OK) fail_msg("write_header %s: %s", path, archive_error_string(w->a));
    if (len) assert_int_equal(archive_write_data(w->a, data, len), (la_ssize_t)len);
    archive_entry_free(e);
}

static void arc_file(arc *w, const char *path, const char *text) {
    arc_file_meta(w, path, text, strlen(text), &default_meta);
}

/* A regular file of `size` zero bytes (compresses to almost nothing). */
static void arc_zeros(arc *w, const char *path, size_t size) {
    static char zeros[1 << 20];
    struct archive_entry *e = new_entry(path, AE_IFREG, &default_meta);
    archive_entry_set_size(e, (la_int64_t)size);
    assert_int_equal(archive_write_header(w->a, e), ARCHIVE_OK);
    for (size_t left = size; left;) {
        size_t n = left < sizeof(zeros) ? left : sizeof(zeros);
        assert_int_equal(archive_write_data(w->a, zeros, n), (la_ssize_t)n);
        left -= n;
    }
    archive_entry_free(e);
}

static void arc_symlink(arc *w, const char *path, const char *target) {
    struct archive_entry *e = new_entry(path, AE_IFLNK, &default_meta);
    archive_entry_set_symlink(e, target);
    archive_entry_set_size(e, 0);
    int r = archive_write_header(w->a, e);
    if (r != ARCHIVE_OK) fail_msg("write_header %s: %s", path, archive_error_string(w->a));
    archive_entry_free(e);
}

static void arc_hardlink(arc *w, const char *path, const char *target) {
    struct archive_entry *e = new_entry(path, AE_IFREG, &default_meta);
    archive_entry_set_hardlink(e, target);
    archive_entry_set_size(e, 0);
    int r = archive_write_header(w->a, e);
    if (r != ARCHIVE_OK) fail_msg("write_header %s: %s", path, archive_error_string(w->a));
    archive_entry_free(e);
}

static void arc_special(arc *w, const char *path, unsigned type) {
    struct archive_entry *e = new_entry(path, type, &default_meta);
    if (type == AE_IFCHR || type == AE_IFBLK) archive_entry_set_rdev(e, makedev(1, 3));
    archive_entry_set_size(e, 0);
    assert_int_equal(archive_write_header(w->a, e), ARCHIVE_OK);
    archive_entry_free(e);
}

static void arc_dir(arc *w, const char *path) {
    struct archive_entry *e = new_entry(path, AE_IFDIR, &default_meta);
    archive_entry_set_size(e, 0);
    assert_int_equal(archive_write_header(w->a, e), ARCHIVE_OK);
    archive_entry_free(e);
}

/* Finishes the archive; returns the owned bytes. */
static char *arc_close(arc *w, size_t *len) {
    assert_int_equal(archive_write_close(w->a), ARCHIVE_OK);
    archive_write_free(w->a);
    *len = w->len;
    return w->buf;
}

/* ------------------------------------------------------------------ helpers */

static fm_bundle *load_ok(const char *data, size_t len) {
    fm_bundle *b = NULL;
    fm_err err = FM_ERR_INIT;
    fm_status st = fm_bundle_from_archive(data, len, &b, &err);
    if (st != FM_OK) fail_msg("bundle refused: %s", err.msg);
    assert_non_null(b);
    return b;
}

/* Loads the archive (freeing it), expects a refusal whose message holds every
 * string of `needles` (NULL-terminated). */
static void expect_refused(char *data, size_t len, const char *const *needles) {
    fm_bundle *b = (fm_bundle *)(uintptr_t)1;
    fm_err err = FM_ERR_INIT;
    fm_status st = fm_bundle_from_archive(data, len, &b, &err);
    free(data);
    if (st == FM_OK) {
        fm_bundle_destroy(b);
        fail_msg("bundle accepted, expected a refusal naming \"%s\"", needles[0]);
    }
    assert_int_equal(st, FM_INVALID_BUNDLE);
    assert_int_equal(err.status, FM_INVALID_BUNDLE);
    assert_null(b);
    for (const char *const *n = needles; *n; n++) assert_contains(err.msg, *n);
    fm_err_clear(&err);
}

static void assert_hex64(const char *v) {
    assert_int_equal(strlen(v), 64);
    for (size_t i = 0; i < 64; i++)
        if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f')))
            fail_msg("not lowercase hex: %s", v);
}

/* Version of a bundle built from (path, content) pairs. */
static void version_of(const char *const *pairs, size_t npairs, bool gzip, char out[65]) {
    arc w;
    arc_open(&w, gzip);
    for (size_t i = 0; i < npairs; i++) arc_file(&w, pairs[2 * i], pairs[2 * i + 1]);
    size_t len;
    char *data = arc_close(&w, &len);
    fm_bundle *b = load_ok(data, len);
    memcpy(out, b->version, 65);
    fm_bundle_destroy(b);
    free(data);
}

/* ------------------------------------------------------------------ tests */

static void test_files_sorted_with_contents(void **state) {
    (void)state;
    arc w;
    arc_open(&w, true);
    arc_file(&w, "z.js", "export const z = 1;\n");
    arc_dir(&w, "lib/");
    arc_file(&w, "lib/b.js", "b");
    arc_file(&w, "a.js", "aa");
    arc_file(&w, "lib/a.js", "");
    size_t len;
    char *data = arc_close(&w, &len);
    fm_bundle *b = load_ok(data, len);
    free(data);

    static const char *want_paths[] = {"a.js", "lib/a.js", "lib/b.js", "z.js"};
    static const char *want_data[] = {"aa", "", "b", "export const z = 1;\n"};
    assert_int_equal(b->nfiles, 4);
    size_t total = 0;
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(b->files[i].path, want_paths[i]);
        assert_null(b->files[i].link);
        assert_non_null(b->files[i].data);
        assert_int_equal(b->files[i].len, strlen(want_data[i]));
        assert_memory_equal(b->files[i].data, want_data[i], b->files[i].len);
        assert_int_equal(b->files[i].data[b->files[i].len], '\0');
        total += b->files[i].len;
    }
    assert_int_equal(b->total_bytes, total);
    assert_hex64(b->version);
    fm_bundle_destroy(b);
}

static void test_binary_content_kept(void **state) {
    (void)state;
    arc w;
    arc_open(&w, false);
    static const char bin[] = {'\0', 'x', '\0', '\xff', '\x80', 'y'};
    arc_file_meta(&w, "data.bin", bin, sizeof(bin), &default_meta);
    size_t len;
    char *data = arc_close(&w, &len);
    fm_bundle *b = load_ok(data, len);
    free(data);
    assert_int_equal(b->nfiles, 1);
    assert_int_equal(b->files[0].len, sizeof(bin));
    assert_memory_equal(b->files[0].data, bin, sizeof(bin));
    assert_int_equal(b->total_bytes, sizeof(bin));
    fm_bundle_destroy(b);
}

static void test_version_ignores_metadata_order_and_compression(void **state) {
    (void)state;
    static const meta m1 = {1, 0, "root"}, m2 = {2000000000, 4242, "bob"};
    arc w;
    arc_open(&w, true);
    arc_file_meta(&w, "index.js", "one", 3, &m1);
    arc_file_meta(&w, "lib/util.js", "two", 3, &m1);
    size_t len1;
    char *d1 = arc_close(&w, &len1);

    arc_open(&w, false); /* plain tar, reversed order, other owner/time, extra dir entries */
    arc_dir(&w, "lib");
    arc_file_meta(&w, ".//lib/util.js", "two", 3, &m2);
    arc_dir(&w, "./");
    arc_file_meta(&w, "././index.js", "one", 3, &m2);
    size_t len2;
    char *d2 = arc_close(&w, &len2);

    fm_bundle *b1 = load_ok(d1, len1), *b2 = load_ok(d2, len2);
    assert_hex64(b1->version);
    assert_string_equal(b1->version, b2->version);
    fm_bundle_destroy(b1);
    fm_bundle_destroy(b2);
    free(d1);
    free(d2);
}

static void test_version_depends_on_content_and_paths(void **state) {
    (void)state;
    char base[65], other[65];
    static const char *p_base[] = {"a.js", "hello", "b.js", "world"};
    version_of(p_base, 2, true, base);
    assert_hex64(base);

    static const char *p_content[] = {"a.js", "hello", "b.js", "World"};
    version_of(p_content, 2, true, other);
    assert_string_not_equal(base, other);

    static const char *p_rename[] = {"a.js", "hello", "c.js", "world"};
    version_of(p_rename, 2, true, other);
    assert_string_not_equal(base, other);

    static const char *p_extra[] = {"a.js", "hello", "b.js", "world", "empty.txt", ""};
    version_of(p_extra, 3, true, other);
    assert_string_not_equal(base, other);

    /* framing: moving a byte between path and content changes the version */
    char f1[65], f2[65];
    static const char *p_f1[] = {"ab", "c"};
    static const char *p_f2[] = {"a", "bc"};
    version_of(p_f1, 1, false, f1);
    version_of(p_f2, 1, false, f2);
    assert_string_not_equal(f1, f2);

    /* a symlink is not a file with the target as content */
    arc w;
    arc_open(&w, false);
    arc_file(&w, "t.js", "x");
    arc_symlink(&w, "l.js", "./t.js");
    size_t len;
    char *d = arc_close(&w, &len);
    fm_bundle *bl = load_ok(d, len);
    free(d);
    arc_open(&w, false);
    arc_file(&w, "t.js", "x");
    arc_file(&w, "l.js", "./t.js");
    d = arc_close(&w, &len);
    fm_bundle *bf = load_ok(d, len);
    free(d);
    assert_string_not_equal(bl->version, bf->version);
    fm_bundle_destroy(bl);
    fm_bundle_destroy(bf);
}

static void test_refuses_path_traversal(void **state) {
    (void)state;
    static const char *bad[] = {"../x.js", "a/../../x.js", "lib/../../../x.js", "./../x.js", ".."};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        arc w;
        arc_open(&w, true);
        arc_file(&w, "ok.js", "fine");
        arc_file(&w, bad[i], "evil");
        size_t len;
        char *d = arc_close(&w, &len);
        const char *needles[] = {bad[i], NULL};
        expect_refused(d, len, needles);
    }
}

static void test_refuses_absolute_path(void **state) {
    (void)state;
    arc w;
    arc_open(&w, true);
    arc_file(&w, "/abs.js", "evil");
    size_t len;
    char *d = arc_close(&w, &len);
    const char *needles[] = {"/abs.js", NULL};
    expect_refused(d, len, needles);
}

static void test_refuses_symlinks_leaving_bundle(void **state) {
    (void)state;
    static const struct {
        const char *path, *target;
    } bad[] = {
        {"evil", "../../etc/passwd"},
        {"evil", "/etc/passwd"},
        {"evil", ".."},
        {"lib/evil", "../../x.js"},
        {"lib/deep/evil", "../../../secret"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        arc w;
        arc_open(&w, true);
        arc_file(&w, "index.js", "x");
        arc_symlink(&w, bad[i].path, bad[i].target);
        size_t len;
        char *d = arc_close(&w, &len);
        const char *needles[] = {bad[i].path, bad[i].target, NULL};
        expect_refused(d, len, needles);
    }
}

static void test_refuses_bad_hard_links(void **state) {
    (void)state;
    arc w;
    arc_open(&w, true);
    arc_file(&w, "index.js", "x");
    arc_hardlink(&w, "copy.js", "missing.js");
    size_t len;
    char *d = arc_close(&w, &len);
    const char *n1[] = {"copy.js", "missing.js", NULL};
    expect_refused(d, len, n1);

    arc_open(&w, true);
    arc_file(&w, "index.js", "x");
    arc_hardlink(&w, "copy.js", "../outside.js");
    d = arc_close(&w, &len);
    const char *n2[] = {"copy.js", "../outside.js", NULL};
    expect_refused(d, len, n2);

    /* a hard link to a symlink is not a link to a regular file */
    arc_open(&w, true);
    arc_file(&w, "index.js", "x");
    arc_symlink(&w, "sym.js", "./index.js");
    arc_hardlink(&w, "copy.js", "sym.js");
    d = arc_close(&w, &len);
    const char *n3[] = {"copy.js", "sym.js", NULL};
    expect_refused(d, len, n3);
}

static void test_refuses_special_files(void **state) {
    (void)state;
    static const struct {
        const char *path;
        unsigned type;
    } bad[] = {{"dev/null", AE_IFCHR}, {"pipe", AE_IFIFO}, {"disk", AE_IFBLK}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        arc w;
        arc_open(&w, true);
        arc_file(&w, "index.js", "x");
        arc_special(&w, bad[i].path, bad[i].type);
        size_t len;
        char *d = arc_close(&w, &len);
        const char *needles[] = {bad[i].path, NULL};
        expect_refused(d, len, needles);
    }
}

static void test_refuses_duplicate_paths(void **state) {
    (void)state;
    arc w;
    arc_open(&w, false);
    arc_file(&w, "a.js", "1");
    arc_file(&w, "b.js", "2");
    arc_file(&w, "././a.js", "3"); /* same path once normalised */
    size_t len;
    char *d = arc_close(&w, &len);
    const char *needles[] = {"duplicate", "a.js", NULL};
    expect_refused(d, len, needles);
}

static void test_refuses_hard_link_over_existing_path(void **state) {
    (void)state;
    /* a hard link whose own path is already a file is a duplicate, whichever
     * entry comes first in the archive */
    arc w;
    arc_open(&w, false);
    arc_file(&w, "a.js", "first");
    arc_file(&w, "b.js", "second");
    arc_hardlink(&w, "a.js", "b.js");
    size_t len;
    char *d = arc_close(&w, &len);
    const char *needles[] = {"duplicate", "a.js", NULL};
    expect_refused(d, len, needles);

    arc_open(&w, false);
    arc_file(&w, "b.js", "second");
    arc_hardlink(&w, "a.js", "b.js");
    arc_file(&w, "a.js", "first");
    d = arc_close(&w, &len);
    expect_refused(d, len, needles);

    /* two hard links with the same path */
    arc_open(&w, false);
    arc_file(&w, "b.js", "second");
    arc_hardlink(&w, "a.js", "b.js");
    arc_hardlink(&w, "a.js", "b.js");
    d = arc_close(&w, &len);
    expect_refused(d, len, needles);
}

static char *many_files(size_t n, size_t *len) {
    arc w;
    arc_open(&w, false);
    char path[32];
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "f/%05zu.js", i);
        arc_file_meta(&w, path, "x", 1, &default_meta);
    }
    return arc_close(&w, len);
}

static void test_file_count_limit(void **state) {
    (void)state;
    size_t len;
    char *d = many_files(FM_BUNDLE_MAX_FILES, &len);
    fm_bundle *b = load_ok(d, len);
    free(d);
    assert_int_equal(b->nfiles, FM_BUNDLE_MAX_FILES);
    assert_string_equal(b->files[0].path, "f/00000.js");
    assert_string_equal(b->files[FM_BUNDLE_MAX_FILES - 1].path, "f/09999.js");
    fm_bundle_destroy(b);

    d = many_files(FM_BUNDLE_MAX_FILES + 1, &len);
    const char *needles[] = {"too many files", "10000", NULL};
    expect_refused(d, len, needles);
}

/* `nfiles` files f/NNNNN.js and `nlinks` hard links h/NNNNN.js to
 * f/00000.js, the links before or after the files. */
static char *files_and_hard_links(size_t nfiles, size_t nlinks, bool links_first, size_t *len) {
    arc w;
    arc_open(&w, false);
    char path[32];
    for (int pass = 0; pass < 2; pass++) {
        if ((pass == 0) == links_first) {
            for (size_t i = 0; i < nlinks; i++) {
                snprintf(path, sizeof(path), "h/%05zu.js", i);
                arc_hardlink(&w, path, "f/00000.js");
            }
        } else {
            for (size_t i = 0; i < nfiles; i++) {
                snprintf(path, sizeof(path), "f/%05zu.js", i);
                arc_file_meta(&w, path, "x", 1, &default_meta);
            }
        }
    }
    return arc_close(&w, len);
}

static void test_hard_links_count_towards_file_limit(void **state) {
    (void)state;
    /* 9998 files + 2 hard links: exactly at the limit */
    size_t len;
    char *d = files_and_hard_links(FM_BUNDLE_MAX_FILES - 2, 2, true, &len);
    fm_bundle *b = load_ok(d, len);
    free(d);
    assert_int_equal(b->nfiles, FM_BUNDLE_MAX_FILES);
    const fm_bundle_file *h = fm_bundle_find(b, "h/00001.js");
    assert_non_null(h);
    assert_string_equal(h->data, "x");
    fm_bundle_destroy(b);

    /* 9999 files + 2 hard links, links after the files, then before them */
    const char *needles[] = {"too many files", "10000", NULL};
    d = files_and_hard_links(FM_BUNDLE_MAX_FILES - 1, 2, false, &len);
    expect_refused(d, len, needles);
    d = files_and_hard_links(FM_BUNDLE_MAX_FILES - 1, 2, true, &len);
    expect_refused(d, len, needles);
}

static void test_size_limit(void **state) {
    (void)state;
    /* exactly 50 MiB over two files is accepted */
    arc w;
    arc_open(&w, true);
    arc_zeros(&w, "a.bin", 20 * MiB);
    arc_zeros(&w, "b.bin", 30 * MiB);
    size_t len;
    char *d = arc_close(&w, &len);
    fm_bundle *b = load_ok(d, len);
    free(d);
    assert_int_equal(b->total_bytes, FM_BUNDLE_MAX_BYTES);
    assert_int_equal(b->nfiles, 2);
    assert_int_equal(b->files[1].len, 30 * MiB);
    fm_bundle_destroy(b);

    /* one byte more in a single file */
    arc_open(&w, true);
    arc_zeros(&w, "big.bin", FM_BUNDLE_MAX_BYTES + 1);
    d = arc_close(&w, &len);
    const char *n1[] = {"too large", "50 MiB", "big.bin", NULL};
    expect_refused(d, len, n1);

    /* the sum over files counts, and the culprit is the file crossing the limit */
    arc_open(&w, true);
    arc_zeros(&w, "first.bin", 30 * MiB);
    arc_zeros(&w, "second.bin", 20 * MiB + 1);
    d = arc_close(&w, &len);
    const char *n2[] = {"too large", "second.bin", NULL};
    expect_refused(d, len, n2);

    /* hard-link copies count too */
    arc_open(&w, true);
    arc_zeros(&w, "data.bin", 30 * MiB);
    arc_hardlink(&w, "copy.bin", "data.bin");
    d = arc_close(&w, &len);
    const char *n3[] = {"too large", NULL};
    expect_refused(d, len, n3);
}

static void test_refuses_non_archives(void **state) {
    (void)state;
    /* empty input */
    fm_bundle *b = NULL;
    fm_err err = FM_ERR_INIT;
    assert_int_equal(fm_bundle_from_archive("", 0, &b, &err), FM_INVALID_BUNDLE);
    assert_null(b);
    assert_contains(err.msg, "empty");
    fm_err_clear(&err);

    /* plain text */
    const char *txt = "export function hello() { return 'this is not a tarball'; }\n";
    char *d = strdup(txt);
    const char *n1[] = {"tar", NULL};
    expect_refused(d, strlen(txt), n1);

    /* 2 KiB of text: long enough for a tar header, still not one */
    d = malloc(2048);
    memset(d, 'A', 2048);
    const char *n2[] = {"tar", NULL};
    expect_refused(d, 2048, n2);

    /* gzip of something that is not a tar */
    arc w;
    memset(&w, 0, sizeof(w));
    w.a = archive_write_new();
    assert_int_equal(archive_write_set_format_raw(w.a), ARCHIVE_OK);
    assert_int_equal(archive_write_add_filter_gzip(w.a), ARCHIVE_OK);
    assert_int_equal(archive_write_open(w.a, &w, NULL, arc_write_cb, NULL), ARCHIVE_OK);
    arc_file(&w, "x", "just some text inside gzip, long enough to not look like anything");
    size_t len;
    d = arc_close(&w, &len);
    assert_true(len > 2 && (unsigned char)d[0] == 0x1f && (unsigned char)d[1] == 0x8b);
    const char *n3[] = {"tar", NULL};
    expect_refused(d, len, n3);
}

static void test_refuses_truncated_archive(void **state) {
    (void)state;
    arc w;
    arc_open(&w, true);
    char text[8192];
    for (size_t i = 0; i < sizeof(text); i++) text[i] = (char)('a' + (i * 7919) % 26);
    arc_file_meta(&w, "index.js", text, sizeof(text), &default_meta);
    arc_file(&w, "other.js", "y");
    size_t len;
    char *d = arc_close(&w, &len);
    /* cut the compressed stream in the middle */
    const char *needles[] = {"archive", NULL};
    expect_refused(d, len / 2, needles);
}

static void test_allowed_normalisation_and_inside_links(void **state) {
    (void)state;
    arc w;
    arc_open(&w, true);
    arc_file(&w, "./index.js", "main");
    arc_file(&w, "lib//x.js", "x");
    arc_file(&w, "b.js", "bee");
    arc_symlink(&w, "lib/a.js", "../b.js");
    arc_symlink(&w, "cur", "./lib");
    arc_hardlink(&w, "copy.js", "b.js");
    arc_hardlink(&w, "lib/copy2.js", "./b.js");
    size_t len;
    char *d = arc_close(&w, &len);
    fm_bundle *b = load_ok(d, len);
    free(d);

    static const char *want[] = {"b.js",     "copy.js",  "cur",     "index.js",
                                 "lib/a.js", "lib/copy2.js", "lib/x.js"};
    assert_int_equal(b->nfiles, 7);
    for (size_t i = 0; i < 7; i++) assert_string_equal(b->files[i].path, want[i]);

    /* symlinks are kept as links, with the target as stored */
    assert_string_equal(b->files[4].link, "../b.js");
    assert_null(b->files[4].data);
    assert_string_equal(b->files[2].link, "./lib");

    /* hard links are copies of their target */
    const fm_bundle_file *c = fm_bundle_find(b, "copy.js");
    assert_non_null(c);
    assert_null(c->link);
    assert_int_equal(c->len, 3);
    assert_string_equal(c->data, "bee");
    c = fm_bundle_find(b, "lib/copy2.js");
    assert_non_null(c);
    assert_string_equal(c->data, "bee");
    assert_int_equal(b->total_bytes, 4 + 1 + 3 + 3 + 3);
    fm_bundle_destroy(b);
}

static void test_bare_entry_names(void **state) {
    (void)state;
    /* names stored without "./" (as `tar -C dir index.js lib` writes them),
     * including one-character names and a bare hard-link target */
    arc w;
    arc_open(&w, true);
    arc_file(&w, "index.js", "main");
    arc_file(&w, "a", "1");
    arc_file(&w, "lib/util.js", "util");
    arc_hardlink(&w, "copy.js", "index.js");
    arc_symlink(&w, "l", "index.js");
    size_t len;
    char *d = arc_close(&w, &len);
    fm_bundle *b = load_ok(d, len);
    free(d);

    static const char *want[] = {"a", "copy.js", "index.js", "l", "lib/util.js"};
    assert_int_equal(b->nfiles, 5);
    for (size_t i = 0; i < 5; i++) assert_string_equal(b->files[i].path, want[i]);
    assert_string_equal(b->files[0].data, "1");
    assert_string_equal(b->files[1].data, "main");
    assert_string_equal(b->files[2].data, "main");
    assert_string_equal(b->files[3].link, "index.js");
    assert_string_equal(b->files[4].data, "util");
    assert_int_equal(b->total_bytes, 1 + 4 + 4 + 4);
    fm_bundle_destroy(b);
}

static void test_dot_slash_prefix_normalised(void **state) {
    (void)state;
    /* "./index.js" (the way `tar -C dir .` writes names) is "index.js": same
     * paths, same contents, same version as the bare names */
    arc w;
    arc_open(&w, false);
    arc_file(&w, "./index.js", "main");
    arc_file(&w, "./lib/util.js", "util");
    arc_hardlink(&w, "./copy.js", "./index.js");
    size_t len;
    char *d = arc_close(&w, &len);
    fm_bundle *dotted = load_ok(d, len);
    free(d);

    arc_open(&w, false);
    arc_file(&w, "index.js", "main");
    arc_file(&w, "lib/util.js", "util");
    arc_hardlink(&w, "copy.js", "index.js");
    d = arc_close(&w, &len);
    fm_bundle *bare = load_ok(d, len);
    free(d);

    static const char *want[] = {"copy.js", "index.js", "lib/util.js"};
    assert_int_equal(dotted->nfiles, 3);
    for (size_t i = 0; i < 3; i++) assert_string_equal(dotted->files[i].path, want[i]);
    const fm_bundle_file *f = fm_bundle_find(dotted, "index.js");
    assert_non_null(f);
    assert_string_equal(f->data, "main");
    f = fm_bundle_find(dotted, "copy.js");
    assert_non_null(f);
    assert_string_equal(f->data, "main");
    assert_string_equal(dotted->version, bare->version);
    fm_bundle_destroy(dotted);
    fm_bundle_destroy(bare);
}

static void test_many_hard_links_to_one_file(void **state) {
    (void)state;
    /* more hard links than the initial capacity of the file array: every
     * copy must come from the target, not from memory that moved */
    arc w;
    arc_open(&w, false);
    arc_file(&w, "a.js", "shared content");
    char path[32];
    for (int i = 0; i < 200; i++) {
        snprintf(path, sizeof(path), "h%03d.js", i);
        arc_hardlink(&w, path, "a.js");
    }
    size_t len;
    char *d = arc_close(&w, &len);
    fm_bundle *b = load_ok(d, len);
    free(d);
    assert_int_equal(b->nfiles, 201);
    assert_string_equal(b->files[0].path, "a.js");
    for (size_t i = 0; i < 201; i++) {
        if (i > 0) {
            snprintf(path, sizeof(path), "h%03zu.js", i - 1);
            assert_string_equal(b->files[i].path, path);
        }
        assert_null(b->files[i].link);
        assert_int_equal(b->files[i].len, 14);
        assert_string_equal(b->files[i].data, "shared content");
    }
    assert_int_equal(b->total_bytes, 201 * 14);
    fm_bundle_destroy(b);
}

static void test_symlink_to_directory_inside(void **state) {
    (void)state;
    /* lib2 -> lib is a link to a directory of the bundle: accepted */
    arc w;
    arc_open(&w, false);
    arc_file(&w, "lib/x.js", "x");
    arc_symlink(&w, "lib2", "lib");
    size_t len;
    char *d = arc_close(&w, &len);
    fm_bundle *b = load_ok(d, len);
    free(d);
    assert_int_equal(b->nfiles, 2);
    assert_string_equal(b->files[0].path, "lib/x.js");
    assert_string_equal(b->files[1].path, "lib2");
    assert_string_equal(b->files[1].link, "lib");
    assert_null(fm_bundle_find(b, "lib2/x.js")); /* lookups do not follow links */

    /* written out, the link leads to the directory */
    char dir[] = "/tmp/fm_test_bundle_XXXXXX";
    assert_non_null(mkdtemp(dir));
    fm_err err = FM_ERR_INIT;
    if (fm_bundle_write(b, dir, &err) != FM_OK) fail_msg("write: %s", err.msg);
    char path[512];
    size_t n;
    snprintf(path, sizeof(path), "%s/lib2/x.js", dir);
    char *got = fm_read_file(path, &n);
    assert_non_null(got);
    assert_string_equal(got, "x");
    free(got);
    assert_int_equal(fm_rmtree(dir), 0);
    fm_bundle_destroy(b);

    /* but nothing may be stored under it: the file would land in lib/ */
    arc_open(&w, false);
    arc_file(&w, "lib/x.js", "x");
    arc_symlink(&w, "lib2", "lib");
    arc_file(&w, "lib2/x.js", "other");
    d = arc_close(&w, &len);
    const char *n1[] = {"entry under a linked directory", "lib2/x.js", NULL};
    expect_refused(d, len, n1);

    /* nor a hard-link copy */
    arc_open(&w, false);
    arc_file(&w, "lib/x.js", "x");
    arc_symlink(&w, "lib2", "lib");
    arc_hardlink(&w, "lib2/y.js", "lib/x.js");
    d = arc_close(&w, &len);
    const char *n2[] = {"entry under a linked directory", "lib2/y.js", NULL};
    expect_refused(d, len, n2);
}

static void test_symlink_target_through_symlink(void **state) {
    (void)state;
    /* a/b/s -> ../../c stays inside (c need not exist) */
    arc w;
    arc_open(&w, false);
    arc_symlink(&w, "a/b/s", "../../c");
    size_t len;
    char *d = arc_close(&w, &len);
    fm_bundle *b = load_ok(d, len);
    free(d);
    assert_int_equal(b->nfiles, 1);
    assert_string_equal(b->files[0].path, "a/b/s");
    assert_string_equal(b->files[0].link, "../../c");
    fm_bundle_destroy(b);

    /* t -> a/b/s/../../../q is "q" read lexically, but the kernel follows
     * a/b/s first and lands two levels above the bundle */
    arc_open(&w, false);
    arc_symlink(&w, "a/b/s", "../../c");
    arc_symlink(&w, "t", "a/b/s/../../../q");
    d = arc_close(&w, &len);
    const char *needles[] = {"link leaves the bundle", "t -> a/b/s/../../../q", NULL};
    expect_refused(d, len, needles);
}

static void test_refuses_symlink_chain_escape(void **state) {
    (void)state;
    /* the whole attack: a file written through t would land outside the
     * directory the bundle is written to */
    arc w;
    arc_open(&w, false);
    arc_symlink(&w, "a/b/s", "../../c");
    arc_file(&w, "c/keep", "k");
    arc_symlink(&w, "t", "a/b/s/../../../q");
    arc_file(&w, "t/evil.js", "pwned");
    size_t len;
    char *d = arc_close(&w, &len);
    const char *needles[] = {"t -> a/b/s/../../../q", NULL};
    expect_refused(d, len, needles);
}

static void test_find(void **state) {
    (void)state;
    arc w;
    arc_open(&w, false);
    arc_file(&w, "index.js", "i");
    arc_file(&w, "lib/util.js", "u");
    arc_file(&w, "lib/util.json", "{}");
    arc_symlink(&w, "link.js", "./index.js");
    size_t len;
    char *d = arc_close(&w, &len);
    fm_bundle *b = load_ok(d, len);
    free(d);

    const fm_bundle_file *f = fm_bundle_find(b, "lib/util.js");
    assert_non_null(f);
    assert_string_equal(f->path, "lib/util.js");
    assert_string_equal(f->data, "u");
    f = fm_bundle_find(b, "lib/util.json");
    assert_non_null(f);
    assert_string_equal(f->data, "{}");
    assert_non_null(fm_bundle_find(b, "index.js"));
    assert_null(fm_bundle_find(b, "link.js"));   /* a link, not a regular file */
    assert_null(fm_bundle_find(b, "lib"));       /* a directory */
    assert_null(fm_bundle_find(b, "lib/util"));  /* a prefix */
    assert_null(fm_bundle_find(b, "index.jsx")); /* longer */
    assert_null(fm_bundle_find(b, "./index.js")); /* lookups take normalised paths */
    assert_null(fm_bundle_find(b, "missing.js"));
    assert_null(fm_bundle_find(b, ""));
    fm_bundle_destroy(b);
}

static void test_write_to_directory(void **state) {
    (void)state;
    arc w;
    arc_open(&w, true);
    static const char bin[] = {'a', '\0', 'b'};
    arc_file(&w, "index.js", "export function f() {}\n");
    arc_file_meta(&w, "lib/deep/data.bin", bin, sizeof(bin), &default_meta);
    arc_file(&w, "b.js", "bee");
    arc_symlink(&w, "lib/a.js", "../b.js");
    arc_hardlink(&w, "copy.js", "b.js");
    size_t len;
    char *d = arc_close(&w, &len);
    fm_bundle *b = load_ok(d, len);
    free(d);

    char dir[] = "/tmp/fm_test_bundle_XXXXXX";
    assert_non_null(mkdtemp(dir));
    fm_err err = FM_ERR_INIT;
    fm_status st = fm_bundle_write(b, dir, &err);
    if (st != FM_OK) fail_msg("write: %s", err.msg);

    char path[512];
    size_t n;
    snprintf(path, sizeof(path), "%s/index.js", dir);
    char *got = fm_read_file(path, &n);
    assert_non_null(got);
    assert_string_equal(got, "export function f() {}\n");
    free(got);

    snprintf(path, sizeof(path), "%s/lib/deep/data.bin", dir);
    got = fm_read_file(path, &n);
    assert_non_null(got);
    assert_int_equal(n, 3);
    assert_memory_equal(got, bin, 3);
    free(got);

    struct stat sb;
    snprintf(path, sizeof(path), "%s/copy.js", dir);
    assert_int_equal(lstat(path, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    got = fm_read_file(path, &n);
    assert_string_equal(got, "bee");
    free(got);

    snprintf(path, sizeof(path), "%s/lib/a.js", dir);
    assert_int_equal(lstat(path, &sb), 0);
    assert_true(S_ISLNK(sb.st_mode));
    char target[64] = {0};
    assert_int_equal(readlink(path, target, sizeof(target) - 1), 7);
    assert_string_equal(target, "../b.js");
    got = fm_read_file(path, &n); /* resolves inside the written bundle */
    assert_non_null(got);
    assert_string_equal(got, "bee");
    free(got);

    fm_bundle_destroy(b);
    assert_int_equal(fm_rmtree(dir), 0);
    assert_int_equal(lstat(dir, &sb), -1);
    assert_int_equal(errno, ENOENT);
}

static void test_name_valid(void **state) {
    (void)state;
    char name[80];
    memset(name, 'a', 63);
    name[63] = '\0';
    assert_true(fm_name_valid(name));
    memset(name, 'a', 64);
    name[64] = '\0';
    assert_false(fm_name_valid(name));

    static const char *good[] = {"a", "0", "9lives", "hello", "hello-world", "a-", "a--b",
                                 "abc123", "x1-2-3"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!fm_name_valid(good[i])) fail_msg("refused valid name \"%s\"", good[i]);
    static const char *bad[] = {"",       "-a",   "-",     "Hello", "hEllo", "a_b",  "_a",
                                "a.b",    "a/b",  "a b",   " a",    "a\n",   "caf\xc3\xa9",
                                "..",     "a%2f", "UPPER"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (fm_name_valid(bad[i])) fail_msg("accepted invalid name \"%s\"", bad[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_files_sorted_with_contents),
        cmocka_unit_test(test_binary_content_kept),
        cmocka_unit_test(test_version_ignores_metadata_order_and_compression),
        cmocka_unit_test(test_version_depends_on_content_and_paths),
        cmocka_unit_test(test_refuses_path_traversal),
        cmocka_unit_test(test_refuses_absolute_path),
        cmocka_unit_test(test_refuses_symlinks_leaving_bundle),
        cmocka_unit_test(test_refuses_bad_hard_links),
        cmocka_unit_test(test_refuses_special_files),
        cmocka_unit_test(test_refuses_duplicate_paths),
        cmocka_unit_test(test_refuses_hard_link_over_existing_path),
        cmocka_unit_test(test_file_count_limit),
        cmocka_unit_test(test_hard_links_count_towards_file_limit),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_refuses_non_archives),
        cmocka_unit_test(test_refuses_truncated_archive),
        cmocka_unit_test(test_allowed_normalisation_and_inside_links),
        cmocka_unit_test(test_bare_entry_names),
        cmocka_unit_test(test_dot_slash_prefix_normalised),
        cmocka_unit_test(test_many_hard_links_to_one_file),
        cmocka_unit_test(test_symlink_to_directory_inside),
        cmocka_unit_test(test_symlink_target_through_symlink),
        cmocka_unit_test(test_refuses_symlink_chain_escape),
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_write_to_directory),
        cmocka_unit_test(test_name_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
