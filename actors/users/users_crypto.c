/*  users_crypto — see users_crypto.h. */
#include "users_crypto.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "mb_config.h"
#include "mb_error.h"
#include "mb_log.h"

_Static_assert(USERS_HASH_MAX == crypto_pwhash_STRBYTES, "stored hash size");
_Static_assert(USERS_REFRESH_HASH == crypto_generichash_BYTES, "refresh hash size");

void users_pwhash_default(users_pwhash_t *p)
{
    if (sodium_init() < 0) {
        mb_error(0, "libsodium failed to initialise");
        abort();
    }
    long max_ops = crypto_pwhash_OPSLIMIT_MAX > 1000 ? 1000 : (long)crypto_pwhash_OPSLIMIT_MAX;
    long max_mem = (long)((size_t)4 << 30); /* 4 GiB: far more than any sane setting */
    p->opslimit =
        (unsigned long long)mb_config_env_long(USERS_ENV_PWHASH_OPSLIMIT, USERS_PWHASH_OPSLIMIT,
                                               (long)crypto_pwhash_OPSLIMIT_MIN, max_ops);
    p->memlimit = (size_t)mb_config_env_long(USERS_ENV_PWHASH_MEMLIMIT, (long)USERS_PWHASH_MEMLIMIT,
                                             (long)crypto_pwhash_MEMLIMIT_MIN, max_mem);
    if (p->opslimit < USERS_PWHASH_OPSLIMIT || p->memlimit < USERS_PWHASH_MEMLIMIT)
        mb_warn(0,
                "password hashing lowered to Argon2id t=%llu m=%zu KiB by %s/%s: for tests "
                "only, never on a server",
                p->opslimit, p->memlimit >> 10, USERS_ENV_PWHASH_OPSLIMIT,
                USERS_ENV_PWHASH_MEMLIMIT);
}

int users_password_hash(const users_pwhash_t *p, const char *password, size_t len,
                        char out[USERS_HASH_MAX])
{
    if (crypto_pwhash_str(out, password, len, p->opslimit, p->memlimit) != 0) {
        mb_error(0, "Argon2id hashing failed (out of memory for m=%zu KiB?)", p->memlimit >> 10);
        return MB_EIO;
    }
    return 0;
}

/*  Copies a stored hash into a NUL-terminated buffer; false when it
    cannot be one. */
static bool s_hash_str(const char *hash, size_t hash_len, char out[USERS_HASH_MAX])
{
    if (hash_len == 0 || hash_len >= USERS_HASH_MAX || memchr(hash, '\0', hash_len))
        return false;
    memcpy(out, hash, hash_len);
    out[hash_len] = '\0';
    return true;
}

bool users_password_verify(const char *hash, size_t hash_len, const char *password, size_t len)
{
    char str[USERS_HASH_MAX];
    return s_hash_str(hash, hash_len, str) && crypto_pwhash_str_verify(str, password, len) == 0;
}

bool users_password_needs_rehash(const users_pwhash_t *p, const char *hash, size_t hash_len)
{
    char str[USERS_HASH_MAX];
    return !s_hash_str(hash, hash_len, str) ||
           crypto_pwhash_str_needs_rehash(str, p->opslimit, p->memlimit) != 0;
}

void users_refresh_new(char token[USERS_REFRESH_LEN + 1], uint8_t hash[USERS_REFRESH_HASH])
{
    uint8_t bytes[USERS_REFRESH_BYTES];
    randombytes_buf(bytes, sizeof bytes);
    sodium_bin2base64(token, USERS_REFRESH_LEN + 1, bytes, sizeof bytes,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(bytes, sizeof bytes);
    crypto_generichash(hash, USERS_REFRESH_HASH, (const uint8_t *)token, USERS_REFRESH_LEN, NULL,
                       0);
}

bool users_refresh_hash(const char *token, size_t len, uint8_t hash[USERS_REFRESH_HASH])
{
    uint8_t bytes[USERS_REFRESH_BYTES + 1];
    size_t n = 0;
    const char *end = NULL;
    /* Decoding checks the alphabet and that no stray bits follow, so one
       token has one spelling and one hash. */
    if (len != USERS_REFRESH_LEN ||
        sodium_base642bin(bytes, sizeof bytes, token, len, NULL, &n, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        end != token + len || n != USERS_REFRESH_BYTES)
        return false;
    sodium_memzero(bytes, sizeof bytes);
    crypto_generichash(hash, USERS_REFRESH_HASH, (const uint8_t *)token, len, NULL, 0);
    return true;
}
