/*  mb_media — signed, expiring media URLs; see mb_media.h.

    The key is not the secret itself but HMAC-SHA-256(secret, S_KEY_LABEL):
    a secret of any length (32..4096 bytes) gives a 32-byte key, and the
    label keeps these MACs apart from anything else the same secret might
    (wrongly) be used for. Both steps are plain HMAC-SHA-256, so a token
    can be checked with openssl alone (tests/lib/test_mb_media.c has such
    a vector). */
#include "mb_media.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mb_config.h"
#include "mb_error.h"
#include "mb_log.h"

#define S_ENV_SECRET "MUSICBUS_MEDIA_SECRET"
#define S_ENV_SECRET_FILE "MUSICBUS_MEDIA_SECRET_FILE"
#define S_SECRET_MIN 32   /* bytes: no shorter than the MAC */
#define S_SECRET_MAX 4096 /* bytes: anything longer is a mistake, not a secret */
#define S_KEY_LABEL "musicbus media key v1"
#define S_MAC_LABEL "v1"
#define S_VERSION_MAX 64
#define S_MAC_LEN crypto_auth_hmacsha256_BYTES /* 32 */
#define S_RAW_LEN (8 + 1 + S_MAC_LEN)          /* expiry | entitlement | MAC: 41 */
#define S_TOKEN_LEN 55                         /* base64url, no padding, of 41 bytes */

_Static_assert(S_TOKEN_LEN + 1 <= MB_MEDIA_TOKEN_MAX, "a token and its NUL fit");
_Static_assert(MB_MEDIA_KEY_BYTES == crypto_auth_hmacsha256_KEYBYTES, "key size");

static void s_sodium_init(void)
{
    if (sodium_init() < 0) {
        mb_error(0, "libsodium failed to initialise");
        abort();
    }
}

int mb_media_key_load(const char *file, mb_media_key_t *key)
{
    s_sodium_init();
    const char *from_env = mb_config_env(S_ENV_SECRET, NULL);
    if (!from_env && !file)
        file = mb_config_env(S_ENV_SECRET_FILE, NULL);
    if (!from_env && !file)
        return MB_ENOTFOUND; /* the caller decides whether that is an error */
    unsigned char buf[S_SECRET_MAX + 1];
    size_t len;
    const char *source = from_env ? S_ENV_SECRET : file;
    if (mb_config_secret("media secret", from_env, file, buf, sizeof buf, &len))
        return MB_EIO;
    int rc = 0;
    if (len < S_SECRET_MIN || len > S_SECRET_MAX) {
        mb_error(0, "media secret from %s is %zu bytes; it must be %d..%d bytes", source,
                 len > S_SECRET_MAX ? (size_t)S_SECRET_MAX + 1 : len, S_SECRET_MIN, S_SECRET_MAX);
        rc = MB_EINVAL;
    } else {
        crypto_auth_hmacsha256_state st;
        crypto_auth_hmacsha256_init(&st, buf, len);
        crypto_auth_hmacsha256_update(&st, (const unsigned char *)S_KEY_LABEL, strlen(S_KEY_LABEL));
        crypto_auth_hmacsha256_final(&st, key->key);
        sodium_memzero(&st, sizeof st);
    }
    sodium_memzero(buf, sizeof buf);
    return rc;
}

static void s_put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)v;
        v >>= 8;
    }
}

static uint64_t s_get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/*  MAC over "v1" | version | expiry (8, big-endian) | entitlement (1).
    `tail` is those last 9 bytes as they appear in the token. The version
    is the only part of variable length and the rest is of fixed length
    after it, so no two inputs concatenate to the same bytes. */
static void s_mac(const mb_media_key_t *key, const char *version, size_t version_len,
                  const unsigned char tail[9], unsigned char mac[S_MAC_LEN])
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key->key, sizeof key->key);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)S_MAC_LABEL, strlen(S_MAC_LABEL));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)version, version_len);
    crypto_auth_hmacsha256_update(&st, tail, 9);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof st);
}

static bool s_entitlement_ok(unsigned value)
{
    return value == MB_MEDIA_FREE || value == MB_MEDIA_PREMIUM;
}

int mb_media_sign(const mb_media_key_t *key, const char *version, uint64_t expires,
                  mb_media_entitlement_t entitlement, char out[MB_MEDIA_TOKEN_MAX])
{
    size_t version_len = version ? strnlen(version, S_VERSION_MAX + 1) : 0;
    if (version_len == 0 || version_len > S_VERSION_MAX || !s_entitlement_ok(entitlement))
        return MB_EINVAL;
    unsigned char raw[S_RAW_LEN];
    s_put_be64(raw, expires);
    raw[8] = (unsigned char)entitlement;
    s_mac(key, version, version_len, raw, raw + 9);
    sodium_bin2base64(out, MB_MEDIA_TOKEN_MAX, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return 0;
}

int mb_media_verify(const mb_media_key_t *key, const char *token, size_t len, const char *version,
                    size_t version_len, uint64_t now, mb_media_entitlement_t *entitlement)
{
    if (!token || len != S_TOKEN_LEN || !version || version_len == 0 || version_len > S_VERSION_MAX)
        return MB_EINVAL;
    unsigned char raw[S_RAW_LEN];
    size_t raw_len = 0;
    const char *end = NULL;
    if (sodium_base642bin(raw, sizeof raw, token, len, NULL, &raw_len, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) ||
        raw_len != S_RAW_LEN || end != token + len)
        return MB_EINVAL;
    /* 55 characters carry 330 bits for 328: the last character's two low
       bits must be zero, or two spellings would name one grant (and two
       cache entries at a CDN). */
    char canonical[S_TOKEN_LEN + 1];
    sodium_bin2base64(canonical, sizeof canonical, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    if (canonical[S_TOKEN_LEN - 1] != token[S_TOKEN_LEN - 1])
        return MB_EINVAL;
    unsigned char mac[S_MAC_LEN];
    s_mac(key, version, version_len, raw, mac);
    /* Signature first: nothing in the token is believed before it. */
    if (sodium_memcmp(mac, raw + 9, S_MAC_LEN) != 0)
        return MB_EINVAL;
    if (!s_entitlement_ok(raw[8]))
        return MB_EINVAL;
    if (now >= s_get_be64(raw))
        return MB_ETIMEDOUT;
    *entitlement = (mb_media_entitlement_t)raw[8];
    return 0;
}
