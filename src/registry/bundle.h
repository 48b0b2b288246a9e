/* bundle.h - a deployment's source bundle: unpacked, validated, hashed.
 *
 * A bundle is made from an uploaded tar(.gz) held in memory. Unpacking
 * refuses anything that could escape the bundle (absolute paths, "..",
 * links pointing outside) and enforces the size limits, so a bundle that
 * exists is safe to write under a directory. Files are kept sorted by path;
 * the version id is the SHA-256 of the normalised content, independent of
 * tar metadata. The bundle owns all its memory. */
#ifndef FM_BUNDLE_H
#define FM_BUNDLE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/status.h"

#define FM_BUNDLE_MAX_FILES 10000
#define FM_BUNDLE_MAX_BYTES (50u * 1024 * 1024)

typedef struct fm_bundle_file {
    char *path;      /* normalised relative path, no "./", no trailing "/" */
    char *data;      /* content (NUL-terminated for convenience), NULL for links */
    size_t len;
    char *link;      /* symlink target as stored, or NULL */
} fm_bundle_file;

typedef struct fm_bundle {
    fm_bundle_file *files; /* sorted by path (strcmp) */
    size_t nfiles;
    size_t total_bytes;
    char version[65];      /* SHA-256 hex of the normalised content */
} fm_bundle;

/* Unpacks and validates a tar or tar.gz. On failure returns
 * FM_INVALID_BUNDLE with a message naming the culprit. */
fm_status fm_bundle_from_archive(const void *data, size_t len, fm_bundle **out, fm_err *err);
void fm_bundle_destroy(fm_bundle *b);

/* Finds a regular file by normalised path (NULL if absent or a link). */
const fm_bundle_file *fm_bundle_find(const fm_bundle *b, const char *path);

/* Writes the bundle under `dir` (which must exist). */
fm_status fm_bundle_write(const fm_bundle *b, const char *dir, fm_err *err);

/* True when `name` is a valid deployment name: [a-z0-9][a-z0-9-]{0,62}. */
bool fm_name_valid(const char *name);

#endif
