/* sourcemap.h - mapping positions in the esbuild bundle back to the
 * deployment's source files, for stack traces and error positions.
 *
 * Decodes a Source Map v3 document (the "mappings" VLQ string) once into a
 * sorted table; lookups are binary searches. Only error paths use it. */
#ifndef FM_SOURCEMAP_H
#define FM_SOURCEMAP_H

#include <stddef.h>

typedef struct fm_sourcemap fm_sourcemap;

/* Parses a source map (JSON text, `len` bytes). `strip_prefix` is removed
 * from the start of source paths. NULL when the map cannot be read. */
fm_sourcemap *fm_sourcemap_parse(const char *json, size_t len, const char *strip_prefix);
void fm_sourcemap_free(fm_sourcemap *m);

/* Maps a 1-based generated line/column to a source path (borrowed) and a
 * 1-based line/column. Returns 0, or -1 when the position has no mapping. */
int fm_sourcemap_lookup(const fm_sourcemap *m, int line, int col, const char **source,
                        int *src_line, int *src_col);

/* Rewrites every "<url>:L:C" in `text` (e.g. a JS stack) to "<source>:l:c".
 * Returns an owned string. */
char *fm_sourcemap_rewrite(const fm_sourcemap *m, const char *text, const char *url);

#endif
