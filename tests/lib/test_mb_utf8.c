#include <criterion/criterion.h>

#include "mb_utf8.h"

Test(mb_utf8, counts_code_points_of_valid_text)
{
    size_t chars = 99;
    cr_assert(mb_utf8_chars("Bj\xc3\xb6rk \xe2\x99\xab \xf0\x9f\x8e\xb5", 15, &chars));
    cr_assert_eq(chars, 9);
    cr_assert(mb_utf8_chars("", 0, &chars));
    cr_assert_eq(chars, 0);
}

Test(mb_utf8, refuses_what_is_not_utf8)
{
    size_t chars = 7;
    cr_assert_not(mb_utf8_chars("\xc0\xaf", 2, &chars), "overlong");
    cr_assert_not(mb_utf8_chars("\xe0\x80\xaf", 3, &chars), "overlong, three bytes");
    cr_assert_not(mb_utf8_chars("\xed\xa0\x80", 3, &chars), "UTF-16 surrogate");
    cr_assert_not(mb_utf8_chars("\xf4\x90\x80\x80", 4, &chars), "past U+10FFFF");
    cr_assert_not(mb_utf8_chars("\xe2\x99", 2, &chars), "truncated");
    cr_assert_not(mb_utf8_chars("\xff", 1, &chars), "never a lead byte");
    cr_assert_not(mb_utf8_chars("a\x80", 2, &chars), "a lone continuation byte");
    cr_assert_eq(chars, 7, "untouched on refusal");
}
