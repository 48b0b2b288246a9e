/* fm_test.h - small helpers shared by the cmocka unit tests. */
#ifndef FM_TEST_H
#define FM_TEST_H

#include <string.h>

/* Fails unless `needle` occurs in `hay` (which may be NULL). */
#define assert_contains(hay, needle)                                                               \
    do {                                                                                           \
        const char *h_ = (hay);                                                                    \
        if (!h_ || !strstr(h_, (needle)))                                                          \
            fail_msg("expected \"%s\" in \"%s\"", (needle), h_ ? h_ : "(null)");                   \
    } while (0)

#endif
