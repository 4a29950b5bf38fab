/*  mb_error: every code has its own description. */
#include <criterion/criterion.h>
#include <string.h>

#include "mb_error.h"

Test(mb_error, describes_a_code)
{
    cr_assert_str_eq(mb_strerror(MB_ETIMEDOUT), "timed out");
    cr_assert_str_eq(mb_strerror(MB_OK), "success");
}

Test(mb_error, every_code_is_distinct_and_known)
{
    for (int a = MB_ENOTYET; a <= MB_OK; a++) {
        cr_assert_neq(strcmp(mb_strerror(a), "unknown error"), 0, "code %d", a);
        for (int b = a + 1; b <= MB_OK; b++)
            cr_assert_neq(strcmp(mb_strerror(a), mb_strerror(b)), 0, "%d vs %d", a, b);
    }
}

Test(mb_error, unknown_codes_never_return_null)
{
    cr_assert_str_eq(mb_strerror(-1000), "unknown error");
    cr_assert_str_eq(mb_strerror(42), "unknown error");
}
