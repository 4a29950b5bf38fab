/*  mb_id: 22 base62 characters, random, uniform. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "mb_id.h"

Test(mb_id, usage)
{
    char id[MB_ID_LEN + 1];
    mb_id_new(id);
    cr_assert_eq(strlen(id), 22);
    cr_assert(mb_id_valid(id, strlen(id)));
}

static int s_cmp(const void *a, const void *b)
{
    return memcmp(a, b, MB_ID_LEN + 1);
}

Test(mb_id, ids_are_distinct)
{
    enum { N = 20000 };
    char(*ids)[MB_ID_LEN + 1] = malloc(N * sizeof *ids);
    for (int i = 0; i < N; i++)
        mb_id_new(ids[i]);
    qsort(ids, N, sizeof *ids, s_cmp);
    for (int i = 1; i < N; i++)
        cr_assert_neq(memcmp(ids[i - 1], ids[i], MB_ID_LEN), 0);
    free(ids);
}

Test(mb_id, every_symbol_appears_about_equally)
{
    /* 20000 ids x 22 chars = 440000 draws, ~7097 per symbol. A modulo-biased
       generator (256 % 62 = 8) would give the first 8 symbols ~+25%. */
    enum { N = 20000 };
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    long counts[62] = {0};
    char id[MB_ID_LEN + 1];
    for (int i = 0; i < N; i++) {
        mb_id_new(id);
        for (int j = 0; j < MB_ID_LEN; j++)
            counts[strchr(alphabet, id[j]) - alphabet]++;
    }
    double expected = (double)N * MB_ID_LEN / 62;
    for (int s = 0; s < 62; s++)
        cr_assert(counts[s] > expected * 0.93 && counts[s] < expected * 1.07,
                  "symbol %c seen %ld times, expected ~%.0f", alphabet[s], counts[s], expected);
}

Test(mb_id, valid_checks_length_and_alphabet)
{
    cr_assert(mb_id_valid("4uLU6hMCjMI75M1A2tKUQC", 22));
    cr_assert_not(mb_id_valid("4uLU6hMCjMI75M1A2tKUQ", 21));
    cr_assert_not(mb_id_valid("4uLU6hMCjMI75M1A2tKUQCx", 23));
    cr_assert_not(mb_id_valid("4uLU6hMCjMI75M1A2tKU-C", 22));
    cr_assert_not(mb_id_valid("4uLU6hMCjMI75M1A2tKU C", 22));
    cr_assert_not(mb_id_valid("4uLU6hMCjMI75M1A2tKU\0C", 22));
    cr_assert_not(mb_id_valid("4uLU6hMCjMI75M1A2tKU\xc3\xa9", 22));
    cr_assert_not(mb_id_valid(NULL, 22));
    cr_assert_not(mb_id_valid("", 0));
}
