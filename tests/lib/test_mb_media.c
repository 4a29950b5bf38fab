/*  mb_media: signed, expiring media URLs.

    S_VECTOR was computed outside musicbus with openssl, from the
    definitions in mb_media.h and mb_media.c:
        SECRET='musicbus-media-test-secret-0123456789abcdef'
        KEY=$(printf '%s' 'musicbus media key v1' |
              openssl dgst -sha256 -hmac "$SECRET" -binary | xxd -p -c 64)
        TAIL=$(printf '%016x02' 1700000900)          # expiry, premium
        MAC=$( (printf 'v1trk-v1-abc'; printf "$TAIL" | xxd -r -p) |
              openssl dgst -sha256 -mac HMAC -macopt hexkey:$KEY -binary | xxd -p -c 64)
        (printf "$TAIL"; printf "$MAC") | xxd -r -p | base64 -w0 | tr '+/' '-_' | tr -d '=' */
#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mb_error.h"
#include "mb_media.h"

#define S_SECRET "musicbus-media-test-secret-0123456789abcdef"
#define S_VERSION "trk-v1-abc"
#define S_EXPIRES 1700000900u
#define S_VECTOR "AAAAAGVT9IQCjdz1SFGoCL-bNiwu-VWdT1iiKXTp4UdmrJkv_jAZ5XM"

static mb_media_key_t s_key;

static void s_setup(void)
{
    setenv("MUSICBUS_MEDIA_SECRET", S_SECRET, 1);
    unsetenv("MUSICBUS_MEDIA_SECRET_FILE");
    cr_assert_eq(mb_media_key_load(NULL, &s_key), 0);
}

TestSuite(mb_media, .init = s_setup);

static int s_verify(const char *token, const char *version, uint64_t now,
                    mb_media_entitlement_t *ent)
{
    return mb_media_verify(&s_key, token, strlen(token), version, strlen(version), now, ent);
}

/*  Usage: the catalog signs a grant, the gateway checks it. */
Test(mb_media, round_trip)
{
    char token[MB_MEDIA_TOKEN_MAX];
    cr_assert_eq(mb_media_sign(&s_key, S_VERSION, S_EXPIRES, MB_MEDIA_FREE, token), 0);
    cr_assert_eq(strlen(token), 55);
    cr_assert_eq(strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                 55, "URL-safe: %s", token);
    mb_media_entitlement_t ent = 0;
    cr_assert_eq(s_verify(token, S_VERSION, S_EXPIRES - 1, &ent), 0);
    cr_assert_eq(ent, MB_MEDIA_FREE);

    cr_assert_eq(mb_media_sign(&s_key, S_VERSION, S_EXPIRES, MB_MEDIA_PREMIUM, token), 0);
    cr_assert_eq(s_verify(token, S_VERSION, 0, &ent), 0);
    cr_assert_eq(ent, MB_MEDIA_PREMIUM);
}

Test(mb_media, matches_openssl)
{
    char token[MB_MEDIA_TOKEN_MAX];
    cr_assert_eq(mb_media_sign(&s_key, S_VERSION, S_EXPIRES, MB_MEDIA_PREMIUM, token), 0);
    cr_assert_str_eq(token, S_VECTOR);
    mb_media_entitlement_t ent = 0;
    cr_assert_eq(s_verify(S_VECTOR, S_VERSION, S_EXPIRES - 100, &ent), 0);
    cr_assert_eq(ent, MB_MEDIA_PREMIUM);
}

Test(mb_media, expired)
{
    mb_media_entitlement_t ent = 0;
    cr_assert_eq(s_verify(S_VECTOR, S_VERSION, S_EXPIRES, &ent), MB_ETIMEDOUT, "at expiry");
    cr_assert_eq(s_verify(S_VECTOR, S_VERSION, S_EXPIRES + 3600, &ent), MB_ETIMEDOUT);
    /* An expired token with a bad signature is a bad token, not an
       expired one: nothing in it is believed before the MAC. */
    char bad[] = S_VECTOR;
    bad[20] = bad[20] == 'A' ? 'B' : 'A';
    cr_assert_eq(s_verify(bad, S_VERSION, S_EXPIRES + 3600, &ent), MB_EINVAL);
}

Test(mb_media, tampered)
{
    mb_media_entitlement_t ent = 0;
    char token[MB_MEDIA_TOKEN_MAX];
    /* Another version: the grant is for one version only. */
    cr_assert_eq(s_verify(S_VECTOR, "trk-v1-abd", 0, &ent), MB_EINVAL);
    cr_assert_eq(s_verify(S_VECTOR, "trk-v1-ab", 0, &ent), MB_EINVAL);
    /* A free grant turned premium, and a later expiry, by editing the
       token's bytes. */
    cr_assert_eq(mb_media_sign(&s_key, S_VERSION, S_EXPIRES, MB_MEDIA_FREE, token), 0);
    unsigned char raw[41];
    size_t raw_len;
    cr_assert_eq(sodium_base642bin(raw, sizeof raw, token, 55, NULL, &raw_len, NULL,
                                   sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                 0);
    cr_assert_eq(raw_len, 41);
    raw[8] = MB_MEDIA_PREMIUM;
    char forged[MB_MEDIA_TOKEN_MAX];
    sodium_bin2base64(forged, sizeof forged, raw, 41, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    cr_assert_eq(s_verify(forged, S_VERSION, 0, &ent), MB_EINVAL, "entitlement edited");
    raw[8] = MB_MEDIA_FREE;
    raw[7] ^= 0x40; /* expiry moved */
    sodium_bin2base64(forged, sizeof forged, raw, 41, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    cr_assert_eq(s_verify(forged, S_VERSION, 0, &ent), MB_EINVAL, "expiry edited");
    raw[7] ^= 0x40;
    raw[40] ^= 1; /* the MAC itself */
    sodium_bin2base64(forged, sizeof forged, raw, 41, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    cr_assert_eq(s_verify(forged, S_VERSION, 0, &ent), MB_EINVAL, "MAC edited");
    /* Every single character changed. */
    for (size_t i = 0; i < 55; i++) {
        char t[] = S_VECTOR;
        t[i] = t[i] == 'x' ? 'y' : 'x';
        cr_assert_eq(s_verify(t, S_VERSION, 0, &ent), MB_EINVAL, "character %zu", i);
    }
}

Test(mb_media, garbage)
{
    mb_media_entitlement_t ent = 0;
    const char *cases[] = {
        "",
        "x",
        "AAAAAGVT9IQCjdz1SFGoCL-bNiwu-VWdT1iiKXTp4UdmrJkv_jAZ5X",   /* one short */
        "AAAAAGVT9IQCjdz1SFGoCL-bNiwu-VWdT1iiKXTp4UdmrJkv_jAZ5XMA", /* one long */
        "AAAAAGVT9IQCjdz1SFGoCL+bNiwu/VWdT1iiKXTp4UdmrJkv_jAZ5XM",  /* not URL-safe */
        "AAAAAGVT9IQCjdz1SFGoCL-bNiwu-VWdT1iiKXTp4UdmrJkv_jAZ5X=",  /* padding */
        "AAAAAGVT9IQCjdz1SFGoCL-bNiwu-VWdT1iiKXTp4UdmrJkv_jAZ5X.",
        "AAAAAGVT9IQCjdz1SFGoCL-bNiwu-VWdT1iiKXTp4UdmrJkv_jAZ5XN", /* non-canonical tail bits */
        "AAAAAGVT9IQCjdz1SFGoCL-bNiwu-VWdT1iiKXTp4UdmrJkv_jAZ5XO",
        "AAAAAGVT9IQCjdz1SFGoCL-bNiwu-VWdT1iiKXTp4UdmrJkv_jAZ5XP",
        "AAAAAGVT9IQCjdz1SFGoCL-bNiwu-VWdT1iiKXTp4Udm\nJkv_jAZ5XM",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        cr_assert_eq(s_verify(cases[i], S_VERSION, 0, &ent), MB_EINVAL, "case %zu", i);
    /* A NUL inside the token's bytes. */
    char nul[] = S_VECTOR;
    nul[10] = '\0';
    cr_assert_eq(mb_media_verify(&s_key, nul, 55, S_VERSION, strlen(S_VERSION), 0, &ent),
                 MB_EINVAL);
    /* Versions of no length or too long. */
    char long_version[66];
    memset(long_version, 'v', 65);
    long_version[65] = '\0';
    cr_assert_eq(s_verify(S_VECTOR, "", 0, &ent), MB_EINVAL);
    cr_assert_eq(s_verify(S_VECTOR, long_version, 0, &ent), MB_EINVAL);
    char token[MB_MEDIA_TOKEN_MAX];
    cr_assert_eq(mb_media_sign(&s_key, "", 1, MB_MEDIA_FREE, token), MB_EINVAL);
    cr_assert_eq(mb_media_sign(&s_key, long_version, 1, MB_MEDIA_FREE, token), MB_EINVAL);
    long_version[64] = '\0';
    cr_assert_eq(mb_media_sign(&s_key, long_version, 1, MB_MEDIA_FREE, token), 0, "64 is fine");
    cr_assert_eq(s_verify(token, long_version, 0, &ent), 0);
    /* An entitlement that does not exist cannot be signed. */
    cr_assert_eq(mb_media_sign(&s_key, S_VERSION, 1, (mb_media_entitlement_t)3, token), MB_EINVAL);
}

Test(mb_media, another_key_refuses)
{
    mb_media_key_t other;
    setenv("MUSICBUS_MEDIA_SECRET", "another-media-secret-that-is-32-bytes-or-more", 1);
    cr_assert_eq(mb_media_key_load(NULL, &other), 0);
    mb_media_entitlement_t ent = 0;
    cr_assert_eq(mb_media_verify(&other, S_VECTOR, 55, S_VERSION, strlen(S_VERSION), 0, &ent),
                 MB_EINVAL);
}

Test(mb_media, key_sources)
{
    mb_media_key_t key;
    /* A file, with the trailing newline an editor leaves. */
    char path[] = "/tmp/test_mb_media.XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, S_SECRET "\n", sizeof S_SECRET), (ssize_t)sizeof S_SECRET);
    close(fd);
    unsetenv("MUSICBUS_MEDIA_SECRET");
    cr_assert_eq(mb_media_key_load(path, &key), 0);
    cr_assert_eq(memcmp(key.key, s_key.key, sizeof key.key), 0, "the newline is not the secret's");
    setenv("MUSICBUS_MEDIA_SECRET_FILE", path, 1);
    memset(&key, 0, sizeof key);
    cr_assert_eq(mb_media_key_load(NULL, &key), 0);
    cr_assert_eq(memcmp(key.key, s_key.key, sizeof key.key), 0);
    /* Nothing configured. */
    unsetenv("MUSICBUS_MEDIA_SECRET_FILE");
    cr_assert_eq(mb_media_key_load(NULL, &key), MB_ENOTFOUND);
    /* Too short, from the environment and from a file. */
    setenv("MUSICBUS_MEDIA_SECRET", "short", 1);
    cr_assert_eq(mb_media_key_load(NULL, &key), MB_EINVAL);
    unsetenv("MUSICBUS_MEDIA_SECRET");
    FILE *f = fopen(path, "w");
    fputs("short\n", f);
    fclose(f);
    cr_assert_eq(mb_media_key_load(path, &key), MB_EINVAL);
    unlink(path);
    cr_assert_eq(mb_media_key_load(path, &key), MB_EIO, "a file that is not there");
}
