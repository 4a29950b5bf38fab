/*  mb_alloc: never NULL, aborts on out of memory. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mb_alloc.h"

/* Under AddressSanitizer an impossible malloc must return NULL (as libc's
   does) rather than end in ASan's own report, so the abort path is tested. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}

Test(mb_alloc, usage)
{
    char *name = mb_strdup("catalog");
    cr_assert_str_eq(name, "catalog");
    free(name);

    int *counts = mb_calloc(16, sizeof *counts);
    for (int i = 0; i < 16; i++)
        cr_assert_eq(counts[i], 0);
    counts = mb_realloc(counts, 1024 * sizeof *counts);
    counts[1023] = 7;
    cr_assert_eq(counts[1023], 7);
    free(counts);
}

Test(mb_alloc, strndup_stops_at_len_and_terminates)
{
    char *s = mb_strndup("track.get", 5);
    cr_assert_str_eq(s, "track");
    free(s);
    char *bytes = mb_strndup("a\0b", 3);
    cr_assert_eq(memcmp(bytes, "a\0b\0", 4), 0);
    free(bytes);
}

Test(mb_alloc, zero_sizes_still_return_memory)
{
    void *a = mb_malloc(0), *b = mb_calloc(0, 8), *c = mb_realloc(NULL, 0);
    cr_assert_not_null(a);
    cr_assert_not_null(b);
    cr_assert_not_null(c);
    free(a);
    free(b);
    free(c);
}

Test(mb_alloc, out_of_memory_aborts, .signal = SIGABRT)
{
    volatile size_t huge = SIZE_MAX / 2;
    void *p = mb_malloc(huge);
    free(p);
}
