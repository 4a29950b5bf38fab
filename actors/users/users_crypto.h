/*  users_crypto — the secrets of the users actor: Argon2id password
    hashes and refresh tokens, both through libsodium.

    Password hashes are crypto_pwhash_str() strings ("$argon2id$v=19$m=
    65536,t=3,p=1$salt$hash"): they carry their own salt and parameters,
    so hashes made with older parameters still verify after a change, and
    users_password_needs_rehash() says when to upgrade one.

    Refresh tokens are 32 random bytes written as 43 characters of
    base64url; only their BLAKE2b-256 hash is ever stored. */
#ifndef USERS_CRYPTO_H
#define USERS_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "users_model.h"

/*  Argon2id cost. RFC 9106 (section 4) recommends t=3 and 64 MiB when
    memory is scarce; OWASP's floor is t=2 and 19 MiB. These two
    variables exist so tests can make hashing cheap; a server keeps the
    defaults (a warning is logged when either is lowered). */
#define USERS_ENV_PWHASH_OPSLIMIT "MUSICBUS_PWHASH_OPSLIMIT" /* passes over memory */
#define USERS_ENV_PWHASH_MEMLIMIT "MUSICBUS_PWHASH_MEMLIMIT" /* bytes */
#define USERS_PWHASH_OPSLIMIT 3
#define USERS_PWHASH_MEMLIMIT ((size_t)64 << 20)

#define USERS_REFRESH_BYTES 32 /* random bytes in a refresh token */
#define USERS_REFRESH_LEN 43   /* its base64url characters, without padding */
#define USERS_REFRESH_HASH 32  /* bytes of the stored BLAKE2b hash */

typedef struct {
    unsigned long long opslimit;
    size_t memlimit;
} users_pwhash_t;

/*  Fills *p from MUSICBUS_PWHASH_OPSLIMIT / MUSICBUS_PWHASH_MEMLIMIT
    (clamped to libsodium's limits), else the defaults above. */
void users_pwhash_default(users_pwhash_t *p);

/*  Hashes `len` bytes of `password` into out (NUL-terminated). Returns 0,
    or MB_EIO when libsodium cannot (it could not get the memory). */
int users_password_hash(const users_pwhash_t *p, const char *password, size_t len,
                        char out[USERS_HASH_MAX]);

/*  True when `password` matches the stored hash (`hash_len` bytes, not
    NUL-terminated). Takes the time of one Argon2id run whatever the
    answer, as long as the hash is well formed. */
bool users_password_verify(const char *hash, size_t hash_len, const char *password, size_t len);

/*  True when the stored hash was made with other parameters than `p`. */
bool users_password_needs_rehash(const users_pwhash_t *p, const char *hash, size_t hash_len);

/*  Makes a new refresh token (token, NUL-terminated) and its hash. */
void users_refresh_new(char token[USERS_REFRESH_LEN + 1], uint8_t hash[USERS_REFRESH_HASH]);

/*  Hashes a refresh token given by a client. Returns false, hashing
    nothing, when it is not 43 characters of base64url. */
bool users_refresh_hash(const char *token, size_t len, uint8_t hash[USERS_REFRESH_HASH]);

#endif
