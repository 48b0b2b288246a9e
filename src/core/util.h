/* util.h - small shared helpers: clocks, hashing, hex, JSON, logging.
 *
 * Everything here is thread-safe and allocation-free unless it says it
 * returns an owned buffer. */
#ifndef FM_UTIL_H
#define FM_UTIL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* Monotonic milliseconds / microseconds; wall-clock milliseconds since the epoch. */
int64_t fm_mono_ms(void);
int64_t fm_mono_us(void);
/* This process's resident memory in bytes (0 if unknown): one pread of
 * /proc/self/statm, kept open. */
size_t fm_process_rss(void);
int64_t fm_wall_ms(void);
/* Formats wall ms as RFC 3339 UTC ("2026-11-22T03:04:05Z") into buf (>= 32 bytes). */
void fm_rfc3339(int64_t wall_ms, char *buf, size_t size);

/* Parses a point in time into wall ms: unix seconds ("1764615600"), RFC 3339
 * ("2026-12-01T19:00:00Z", fraction and +hh:mm offsets allowed) or a
 * duration back from now_ms ("500ms", "90s", "15m", "2h", "7d"). Returns
 * false when the text is none of these. */
bool fm_parse_time(const char *s, int64_t now_ms, int64_t *out_ms);
/* Reads the decimal digits that start s[0..len) into *out; returns how many
 * there were (0 when none, or when the value overflows 64 bits). */
size_t fm_parse_u64(const char *s, size_t len, uint64_t *out);
/* The two non-numeric forms alone (s need not be NUL-terminated). */
bool fm_parse_rfc3339(const char *s, size_t len, int64_t *ms);
bool fm_parse_duration_ago(const char *s, size_t len, int64_t now_ms, int64_t *ms);
/* A duration with its unit ("500ms", "90s", "15m", "2h", "7d") in ms. */
bool fm_parse_duration(const char *s, size_t len, int64_t *ms);
/* "512MB", "2GiB", "64k", "1048576" (bytes): K/M/G/T, with or without "i"
 * and "B", are powers of 1024. False when malformed or over 2^62. */
bool fm_parse_size(const char *s, int64_t *bytes);

/* Lowercase hex of `len` bytes into out (2*len+1 bytes). */
void fm_hex(const unsigned char *in, size_t len, char *out);
/* Fills out with `nbytes` random bytes as hex (2*nbytes+1). Returns false on failure. */
bool fm_random_hex(char *out, size_t nbytes);
/* Constant-time comparison of two byte strings (length differences leak only length). */
bool fm_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

/* A JSON string from possibly invalid UTF-8 (invalid bytes become U+FFFD). New reference. */
json_t *fm_json_str(const char *s);
json_t *fm_json_strn(const char *s, size_t len);
/* Parses JSON text (any value). On failure returns NULL and sets err to
 * FM_INVALID_JSON with "line L, column C (position P): reason" and details.position. */
json_t *fm_json_parse(const char *buf, size_t len, fm_err *err);
/* Parses JSON text made by a runtime (not user input): like fm_json_parse,
 * but unpaired surrogate escapes become U+FFFD instead of an error. NULL when
 * the text is not JSON. New reference. */
json_t *fm_json_parse_value(const char *buf, size_t len);
/* Serialises compactly (JSON_COMPACT|JSON_ENCODE_ANY); owned malloc'd string. */
char *fm_json_dump(const json_t *v, size_t *len_out);
/* JSON text (UTF-8, owned malloc'd, NUL-terminated, *len_out its length) of
 * the UTF-16 string u[0..n), byte for byte as ECMAScript's JSON.stringify
 * writes it: \b \t \n \f \r \" \\ escaped, other controls as \u00xx,
 * a lone surrogate as \udxxx (lowercase hex), everything else as UTF-8. */
char *fm_json_quote_utf16(const uint16_t *u, size_t n, size_t *len_out);
/* Writes the decimal digits of v at out (at least 21 bytes); returns their count. */
size_t fm_i64_to_dec(int64_t v, char *out);

/* Bytes in the value model. JSON has no binary type, so a bytes value is
 * the object {"$bytes": "<standard base64>"} everywhere values are JSON or
 * jansson (HTTP bodies, JSON-RPC, the mesh); each runtime turns it into its
 * own binary type (Uint8Array, bytes, FM_BYTES) and back. */
#define FM_BYTES_KEY "$bytes"
/* True when v is a bytes value (an object whose only member is a string "$bytes"). */
bool fm_json_is_bytes(const json_t *v);
/* Decoded length of a bytes value; SIZE_MAX when v is not one or its base64
 * is malformed (such an object is then an ordinary map). */
size_t fm_json_bytes_len(const json_t *v);
/* Decoded length of base64 text, SIZE_MAX when it is malformed (no decoding). */
size_t fm_base64_decoded_len(const char *s, size_t len);
/* A bytes value holding a copy of p[0..n). New reference. */
json_t *fm_json_bytes(const void *p, size_t n);
/* The decoded bytes of a bytes value: owned malloc'd buffer (NUL-terminated
 * for convenience), length in *n; NULL when v is not valid bytes. */
unsigned char *fm_json_bytes_decode(const json_t *v, size_t *n);
/* Checks every bytes value inside v (any depth): FM_BAD_REQUEST naming the
 * first one whose base64 is malformed. Cheap for values without any. */
fm_status fm_json_check_bytes(const json_t *v, fm_err *err);
/* Standard base64 (RFC 4648, padded). Owned results; decode returns NULL on
 * malformed input. */
char *fm_base64_encode(const void *p, size_t n, size_t *out_len);
unsigned char *fm_base64_decode(const char *s, size_t len, size_t *out_len);

/* Logging: one JSON object per line on stderr. `kv` (may be NULL) is merged
 * into the line and is borrowed. */
typedef enum { FM_LOG_DEBUG, FM_LOG_INFO, FM_LOG_WARN, FM_LOG_ERROR } fm_log_level;
void fm_log_set_level(fm_log_level min);
void fm_log(fm_log_level lvl, json_t *kv, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
const char *fm_log_level_name(fm_log_level lvl);

/* Reads a whole file into an owned NUL-terminated buffer. */
char *fm_read_file(const char *path, size_t *len_out);
/* mkdir -p; returns 0 or -1 with errno. */
int fm_mkdirs(const char *path, unsigned mode);
/* rm -rf (no symlink following); returns 0 or -1. */
int fm_rmtree(const char *path);

#endif
