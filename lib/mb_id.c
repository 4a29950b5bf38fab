/*  mb_id — random base62 ids. */
#include "mb_id.h"

#include <sodium.h>
#include <stdlib.h>

#include "mb_log.h"

static const char s_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

void mb_id_new(char out[MB_ID_LEN + 1])
{
    /* sodium_init is thread-safe and cheap after the first call; it makes
       sure the RNG is seeded before randombytes is used. */
    if (sodium_init() < 0) {
        mb_error(0, "libsodium failed to initialise");
        abort();
    }
    /* randombytes_uniform() avoids modulo bias; 22 draws of 62 give
       log2(62^22) ~ 131 bits. */
    for (int i = 0; i < MB_ID_LEN; i++)
        out[i] = s_alphabet[randombytes_uniform(62)];
    out[MB_ID_LEN] = '\0';
}

bool mb_id_valid(const char *s, size_t len)
{
    if (!s || len != MB_ID_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return false;
    }
    return true;
}
