/*  mb_media — signed, expiring media URLs.

    The catalog hands a listener the URL of a track version's master
    playlist; the gateway serves everything below it from the blob store.
    Every URL under one grant shares one signed prefix, so the relative
    references inside HLS playlists stay valid without re-signing:

        /media/<token>/<version>/master.m3u8
        /media/<token>/<version>/a128/index.m3u8
        /media/<token>/<version>/a128/seg-00001.m4s

    <token> is base64url (no padding) of: expiry (8 bytes, big-endian Unix
    seconds) | entitlement (1 byte) | HMAC-SHA-256 (32 bytes) over
    "v1" | <version> | expiry | entitlement, keyed by the media secret
    (MUSICBUS_MEDIA_SECRET, or the file named by MUSICBUS_MEDIA_SECRET_FILE;
    at least 32 bytes; scripts/up makes one in the data folder).

    Entitlement says which rungs the grant may fetch: a free listener's
    grant cannot fetch a premium rung even by editing the path, because the
    rung is checked against the signed entitlement, not against the URL. */
#ifndef MB_MEDIA_H
#define MB_MEDIA_H

#include <stddef.h>
#include <stdint.h>

#define MB_MEDIA_KEY_BYTES 32
#define MB_MEDIA_TOKEN_MAX 80 /* base64url of 41 bytes is 55 characters */

typedef enum {
    MB_MEDIA_FREE = 1,    /* rungs up to 128 kbit/s */
    MB_MEDIA_PREMIUM = 2, /* every rung, lossless included */
} mb_media_entitlement_t;

typedef struct {
    unsigned char key[MB_MEDIA_KEY_BYTES]; /* derived from the secret */
} mb_media_key_t;

/*  Loads the media secret from MUSICBUS_MEDIA_SECRET, else from `file`
    when not NULL, else from the file named by MUSICBUS_MEDIA_SECRET_FILE.
    Returns 0, MB_ENOTFOUND when none is configured, MB_EINVAL when it is
    shorter than 32 bytes, MB_EIO when the file cannot be read. */
int mb_media_key_load(const char *file, mb_media_key_t *key);

/*  Writes into out[MB_MEDIA_TOKEN_MAX] the NUL-terminated token granting
    `entitlement` to `version` until `expires` (Unix seconds). Returns 0,
    or MB_EINVAL for an empty or oversized version (> 64 bytes). */
int mb_media_sign(const mb_media_key_t *key, const char *version, uint64_t expires,
                  mb_media_entitlement_t entitlement, char out[MB_MEDIA_TOKEN_MAX]);

/*  Checks `token` (len bytes) for `version` (version_len bytes) at time
    `now`. Returns 0 with *entitlement set; MB_EINVAL when malformed or
    the signature does not match (constant-time compare); MB_ETIMEDOUT when
    expired. */
int mb_media_verify(const mb_media_key_t *key, const char *token, size_t len,
                    const char *version, size_t version_len, uint64_t now,
                    mb_media_entitlement_t *entitlement);

#endif
