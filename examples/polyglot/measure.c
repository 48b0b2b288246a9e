/* C step: the number of UTF-8 characters (not bytes) of each item. */
#include <fnmesh.h>
#include <string.h>

static int64_t utf8_chars(const char *s, size_t len) {
    int64_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80) n++;
    return n;
}

FM_EXPORT(lengths, "items") {
    fm_val *items = fm_arg(ctx, 0);
    if (fm_type(items) != FM_ARRAY) return fm_error(ctx, "items must be an array of strings");
    fm_val *out = fm_array(ctx);
    for (size_t i = 0; i < fm_len(items); i++) {
        size_t len = 0;
        const char *s = fm_get_string(fm_item(items, i), &len);
        fm_push(out, fm_int64(ctx, s ? utf8_chars(s, len) : 0));
    }
    return out;
}
