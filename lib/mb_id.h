/*  mb_id — opaque resource ids.

    An id is 22 characters of base62 (A-Z a-z 0-9): 128 random bits from
    libsodium, the shape of Spotify's ids. */
#ifndef MB_ID_H
#define MB_ID_H

#include <stdbool.h>
#include <stddef.h>

#define MB_ID_LEN 22

/*  Writes a new random id and a NUL into out[MB_ID_LEN + 1]. */
void mb_id_new(char out[MB_ID_LEN + 1]);

/*  True when `s` (len bytes) has the shape of an id. */
bool mb_id_valid(const char *s, size_t len);

#endif
