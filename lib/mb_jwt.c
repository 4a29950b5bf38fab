/*  mb_jwt — HS256 JSON Web Tokens; see mb_jwt.h. */
#include "mb_jwt.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mb_alloc.h"
#include "mb_config.h"
#include "mb_error.h"
#include "mb_id.h"
#include "mb_log.h"
#include "mb_msgpack.h"

#define S_MAC_LEN crypto_auth_hmacsha256_BYTES /* 32 */
/*  base64url without padding of the 32-byte MAC. */
#define S_SIG_B64_LEN 43
/*  A header is a handful of keys; anything longer is not one of ours. */
#define S_HEADER_B64_MAX 256
#define S_HEADER_MAX (S_HEADER_B64_MAX / 4 * 3)
/*  The payload, decoded, can be at most 3/4 of the token. */
#define S_PAYLOAD_MAX (MB_JWT_TOKEN_MAX / 4 * 3)
#define S_ROLE_NAME_MAX 32
#define S_LEEWAY_MAX 300
/*  Timestamps are kept within what int64_t seconds and JSON doubles both
    hold exactly. */
#define S_TIME_MAX ((int64_t)1 << 52)

/*  The header mb_jwt_sign() writes, {"alg":"HS256","typ":"JWT"}, in
    base64url: a token with exactly this header skips the JSON parse of its
    header. */
static const char s_header_b64[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

static const struct {
    const char *name;
    unsigned bit;
} s_roles[] = {{"user", MB_ROLE_USER}, {"admin", MB_ROLE_ADMIN}};
#define S_N_ROLES (sizeof s_roles / sizeof s_roles[0])

struct mb_jwt_key {
    /*  HMAC state right after keying: inner and outer hashes have taken
        their padded key blocks. Each MAC starts from a copy, so the key is
        hashed once per process, not once per token. */
    crypto_auth_hmacsha256_state keyed;
};

static void s_sodium_init(void)
{
    if (sodium_init() < 0) {
        mb_error(0, "libsodium failed to initialise");
        abort();
    }
}

/* ---- policy and keys ----------------------------------------------------- */

void mb_jwt_policy_default(mb_jwt_policy_t *policy)
{
    policy->iss = mb_config_env(MB_JWT_ENV_ISS, MB_JWT_DEFAULT_ISS);
    policy->aud = mb_config_env(MB_JWT_ENV_AUD, MB_JWT_DEFAULT_AUD);
    policy->leeway_s =
        (int)mb_config_env_long(MB_JWT_ENV_LEEWAY, MB_JWT_DEFAULT_LEEWAY, 0, S_LEEWAY_MAX);
}

mb_jwt_key_t *mb_jwt_key_new(const void *secret, size_t len)
{
    if (!secret || len < MB_JWT_SECRET_MIN || len > MB_JWT_SECRET_MAX)
        return NULL;
    s_sodium_init();
    /* Guarded pages, wiped by sodium_free(): the keyed state is as good
       as the secret to whoever reads it. */
    mb_jwt_key_t *self = sodium_malloc(sizeof *self);
    if (!self) {
        mb_error(0, "out of memory");
        abort();
    }
    crypto_auth_hmacsha256_init(&self->keyed, secret, len);
    return self;
}

void mb_jwt_key_destroy(mb_jwt_key_t **self_p)
{
    if (self_p && *self_p) {
        sodium_free(*self_p);
        *self_p = NULL;
    }
}

int mb_jwt_key_load(const char *file, mb_jwt_key_t **key_p)
{
    *key_p = NULL;
    const char *from_env = file ? NULL : mb_config_env(MB_JWT_ENV_SECRET, NULL);
    if (!file && !from_env)
        file = mb_config_env(MB_JWT_ENV_SECRET_FILE, NULL);
    if (!file && !from_env) {
        mb_error(0,
                 "no JWT secret: set %s, or %s / --jwt-secret-file to a file holding at least "
                 "%d bytes",
                 MB_JWT_ENV_SECRET, MB_JWT_ENV_SECRET_FILE, MB_JWT_SECRET_MIN);
        return MB_ENOTFOUND;
    }
    unsigned char buf[MB_JWT_SECRET_MAX + 1];
    size_t len;
    const char *source = from_env ? MB_JWT_ENV_SECRET : file;
    if (mb_config_secret("JWT secret", from_env, file, buf, sizeof buf, &len))
        return MB_EIO;
    int rc = 0;
    if (len < MB_JWT_SECRET_MIN) {
        mb_error(0,
                 "JWT secret from %s is %zu bytes; at least %d are needed (e.g. head -c 48 "
                 "/dev/urandom | base64)",
                 source, len, MB_JWT_SECRET_MIN);
        rc = MB_EINVAL;
    } else if (len > MB_JWT_SECRET_MAX) {
        mb_error(0, "JWT secret from %s is longer than %d bytes", source, MB_JWT_SECRET_MAX);
        rc = MB_EINVAL;
    } else
        *key_p = mb_jwt_key_new(buf, len);
    sodium_memzero(buf, sizeof buf);
    return rc;
}

/* ---- signing ------------------------------------------------------------------ */

static void s_mac(const mb_jwt_key_t *key, const void *data, size_t len,
                  unsigned char mac[S_MAC_LEN])
{
    crypto_auth_hmacsha256_state state = key->keyed;
    crypto_auth_hmacsha256_update(&state, data, len);
    crypto_auth_hmacsha256_final(&state, mac);
    sodium_memzero(&state, sizeof state);
}

static bool s_text_ok(const char *s, size_t max)
{
    size_t len = strnlen(s, max + 1);
    return len > 0 && len <= max;
}

/*  Appends the base64url form of `len` bytes to out at *used. */
static void s_append_b64(char *out, size_t *used, const void *data, size_t len)
{
    size_t b64 = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_bin2base64(out + *used, b64, data, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    *used += b64 - 1; /* the length counts the NUL */
}

int mb_jwt_sign(const mb_jwt_key_t *key, const mb_jwt_policy_t *policy,
                const mb_jwt_claims_t *claims, char **token)
{
    *token = NULL;
    if (!key || !policy || !policy->iss || !*policy->iss || !policy->aud || !*policy->aud ||
        !s_text_ok(claims->sub, MB_JWT_ID_MAX) || !s_text_ok(claims->sid, MB_JWT_ID_MAX) ||
        !s_text_ok(claims->tier, MB_JWT_TIER_MAX) ||
        strnlen(claims->jti, MB_JWT_ID_MAX + 1) > MB_JWT_ID_MAX)
        return MB_EINVAL;
    char jti[MB_JWT_ID_MAX + 1];
    if (claims->jti[0])
        memcpy(jti, claims->jti, sizeof jti);
    else
        mb_id_new(jti);

    json_t *roles = json_array();
    for (size_t i = 0; i < S_N_ROLES; i++)
        if (claims->roles & s_roles[i].bit)
            json_array_append_new(roles, json_string(s_roles[i].name));
    if (json_array_size(roles) == 0) {
        json_decref(roles);
        return MB_EINVAL;
    }
    /* Registered claims first, in RFC 7519's order, then ours. */
    json_t *payload = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:o}", "iss", policy->iss,
                                "aud", policy->aud, "sub", claims->sub, "iat",
                                (json_int_t)claims->iat, "exp", (json_int_t)claims->exp, "jti", jti,
                                "sid", claims->sid, "tier", claims->tier, "roles", roles);
    char *json = payload ? json_dumps(payload, JSON_COMPACT) : NULL;
    json_decref(payload);
    if (!json)
        return MB_EINVAL; /* a string that is not UTF-8 */
    size_t json_len = strlen(json);

    size_t cap = sizeof s_header_b64 +
                 sodium_base64_ENCODED_LEN(json_len, sodium_base64_VARIANT_URLSAFE_NO_PADDING) + 1 +
                 S_SIG_B64_LEN + 1;
    char *out = mb_malloc(cap);
    size_t used = sizeof s_header_b64 - 1;
    memcpy(out, s_header_b64, used);
    out[used++] = '.';
    s_append_b64(out, &used, json, json_len);
    free(json);
    unsigned char mac[S_MAC_LEN];
    s_mac(key, out, used, mac);
    out[used++] = '.';
    s_append_b64(out, &used, mac, sizeof mac);
    out[used] = '\0';
    *token = out;
    return 0;
}

/* ---- verifying ----------------------------------------------------------------- */

/*  Decodes base64url without padding into out (at most `cap` bytes).
    Returns the decoded length, or -1 when `b64` is not exactly that (a
    character outside the alphabet, padding, or stray bits at the end). */
static ssize_t s_unb64(const char *b64, size_t len, unsigned char *out, size_t cap)
{
    size_t n = 0;
    const char *end = NULL;
    if (len == 0 ||
        sodium_base642bin(out, cap, b64, len, NULL, &n, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        end != b64 + len)
        return -1;
    return (ssize_t)n;
}

/*  True when the header is exactly {"alg":"HS256"} plus an optional
    "typ":"JWT", in any order and spacing. */
static bool s_header_ok(const char *b64, size_t len, const char **why)
{
    if (len == sizeof s_header_b64 - 1 && memcmp(b64, s_header_b64, len) == 0)
        return true;
    unsigned char header[S_HEADER_MAX];
    ssize_t n = len <= S_HEADER_B64_MAX ? s_unb64(b64, len, header, sizeof header) : -1;
    if (n < 0) {
        *why = "malformed header";
        return false;
    }
    json_t *h = json_loadb((const char *)header, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    const char *alg = json_string_value(json_object_get(h, "alg"));
    json_t *typ = json_object_get(h, "typ");
    bool ok = false;
    if (!json_is_object(h))
        *why = "malformed header";
    else if (!alg || strcmp(alg, "HS256") != 0)
        *why = "alg must be HS256";
    else if (typ && !(json_is_string(typ) && strcasecmp(json_string_value(typ), "JWT") == 0))
        *why = "typ must be JWT";
    else if (json_object_size(h) != 1 + (typ != NULL))
        *why = "header has fields other than alg and typ";
    else
        ok = true;
    json_decref(h);
    return ok;
}

/*  A NumericDate: an integer, or a number whose fraction is dropped. */
static bool s_time(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < -S_TIME_MAX || i > S_TIME_MAX)
            return false;
        *out = (int64_t)i;
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d >= (double)-S_TIME_MAX && d <= (double)S_TIME_MAX)) /* NaN fails too */
            return false;
        *out = (int64_t)d;
        return true;
    }
    return false;
}

/*  Copies string claim `v` into out (max bytes). */
static bool s_copy(const json_t *v, char *out, size_t max, bool required)
{
    if (!v)
        return !required;
    size_t len = json_string_length(v);
    if (!json_is_string(v) || (required && len == 0) || len > max ||
        memchr(json_string_value(v), '\0', len))
        return false;
    memcpy(out, json_string_value(v), len);
    out[len] = '\0';
    return true;
}

static bool s_aud_ok(const json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    size_t i;
    json_t *v;
    json_array_foreach(aud, i, v) if (json_is_string(v) &&
                                      strcmp(json_string_value(v), want) == 0) return true;
    return false;
}

static bool s_roles_ok(const json_t *roles, unsigned *bits)
{
    if (!json_is_array(roles) || json_array_size(roles) > MB_JWT_ROLES_MAX)
        return false;
    size_t i;
    json_t *v;
    json_array_foreach(roles, i, v)
    {
        if (!json_is_string(v) || json_string_length(v) > S_ROLE_NAME_MAX)
            return false;
        *bits |= mb_jwt_role_bit(json_string_value(v), json_string_length(v));
    }
    return true;
}

/*  The time checks, also run on every cache hit. */
static int s_times(const mb_jwt_policy_t *policy, int64_t now, int64_t exp, int64_t nbf,
                   const char **why)
{
    if (now >= exp + policy->leeway_s)
        return *why = "token expired", MB_ETIMEDOUT;
    if (now + policy->leeway_s < nbf)
        return *why = "token not valid yet", MB_EINVAL;
    return 0;
}

/*  Checks the claims of a payload whose signature is good; *nbf is
    INT64_MIN when the token has none. */
static int s_claims(const json_t *p, const mb_jwt_policy_t *policy, int64_t now, mb_jwt_claims_t *c,
                    int64_t *nbf, const char **why)
{
    const json_t *v;
    *nbf = INT64_MIN;
    if (!json_is_object(p))
        return *why = "payload is not a JSON object", MB_EINVAL;
    if (!s_time(json_object_get(p, "exp"), &c->exp))
        return *why = "exp missing or not a number", MB_EINVAL;
    if ((v = json_object_get(p, "nbf")) && !s_time(v, nbf))
        return *why = "nbf not a number", MB_EINVAL;
    int rc = s_times(policy, now, c->exp, *nbf, why);
    if (rc)
        return rc;
    if ((v = json_object_get(p, "iat")) && !s_time(v, &c->iat))
        return *why = "iat not a number", MB_EINVAL;
    const char *iss = json_string_value(json_object_get(p, "iss"));
    if (policy->iss && (!iss || strcmp(iss, policy->iss) != 0))
        return *why = "wrong issuer", MB_EINVAL;
    if (policy->aud && !s_aud_ok(json_object_get(p, "aud"), policy->aud))
        return *why = "wrong audience", MB_EINVAL;
    if (!s_copy(json_object_get(p, "sub"), c->sub, MB_JWT_ID_MAX, true))
        return *why = "sub missing or malformed", MB_EINVAL;
    if (!s_copy(json_object_get(p, "sid"), c->sid, MB_JWT_ID_MAX, true))
        return *why = "sid missing or malformed", MB_EINVAL;
    if (!s_copy(json_object_get(p, "jti"), c->jti, MB_JWT_ID_MAX, false))
        return *why = "jti malformed", MB_EINVAL;
    if (!s_copy(json_object_get(p, "tier"), c->tier, MB_JWT_TIER_MAX, true))
        return *why = "tier missing or malformed", MB_EINVAL;
    if (!s_roles_ok(json_object_get(p, "roles"), &c->roles))
        return *why = "roles missing or malformed", MB_EINVAL;
    return 0;
}

static int s_verify(const mb_jwt_key_t *key, const mb_jwt_policy_t *policy, const char *token,
                    size_t len, int64_t now, mb_jwt_claims_t *claims, int64_t *nbf,
                    const char **why)
{
    memset(claims, 0, sizeof *claims);
    if (!token || len == 0)
        return *why = "empty token", MB_EINVAL;
    if (len > MB_JWT_TOKEN_MAX)
        return *why = "token too long", MB_ETOOBIG;
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    const char *end = token + len;
    if (!dot2 || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)))
        return *why = "not three dot-separated parts", MB_EINVAL;
    if (!s_header_ok(token, (size_t)(dot1 - token), why))
        return MB_EINVAL;

    unsigned char sig[S_MAC_LEN + 1], mac[S_MAC_LEN];
    if ((size_t)(end - dot2 - 1) != S_SIG_B64_LEN ||
        s_unb64(dot2 + 1, S_SIG_B64_LEN, sig, sizeof sig) != S_MAC_LEN)
        return *why = "malformed signature", MB_EINVAL;
    s_mac(key, token, (size_t)(dot2 - token), mac);
    if (sodium_memcmp(mac, sig, S_MAC_LEN) != 0)
        return *why = "bad signature", MB_EINVAL;

    /* Only now, with the bytes known to be ours, is the payload parsed. */
    unsigned char payload[S_PAYLOAD_MAX];
    ssize_t n = s_unb64(dot1 + 1, (size_t)(dot2 - dot1 - 1), payload, sizeof payload);
    if (n < 0)
        return *why = "malformed payload", MB_EINVAL;
    json_t *p = json_loadb((const char *)payload, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    int rc =
        p ? s_claims(p, policy, now, claims, nbf, why) : (*why = "payload is not JSON", MB_EINVAL);
    json_decref(p);
    if (rc)
        memset(claims, 0, sizeof *claims);
    return rc;
}

int mb_jwt_verify(const mb_jwt_key_t *key, const mb_jwt_policy_t *policy, const char *token,
                  size_t len, int64_t now, mb_jwt_claims_t *claims, const char **why)
{
    static const char *ignored;
    int64_t nbf;
    return s_verify(key, policy, token, len, now, claims, &nbf, why ? why : &ignored);
}

/* ---- the cache ---------------------------------------------------------------------- */

typedef struct {
    size_t len; /* 0: empty */
    char token[MB_JWT_CACHE_TOKEN_MAX];
    mb_jwt_claims_t claims;
    int64_t nbf;
} s_entry_t;

struct mb_jwt_cache {
    size_t mask; /* slots - 1 */
    s_entry_t *entries;
};

mb_jwt_cache_t *mb_jwt_cache_new(size_t slots)
{
    size_t n = 1;
    while (n < slots && n < ((size_t)1 << 20))
        n <<= 1;
    mb_jwt_cache_t *self = mb_calloc(1, sizeof *self);
    self->mask = n - 1;
    self->entries = mb_calloc(n, sizeof *self->entries);
    return self;
}

void mb_jwt_cache_destroy(mb_jwt_cache_t **self_p)
{
    if (self_p && *self_p) {
        mb_jwt_cache_t *self = *self_p;
        sodium_memzero(self->entries, (self->mask + 1) * sizeof *self->entries);
        free(self->entries);
        free(self);
        *self_p = NULL;
    }
}

/*  The slot of a token: FNV-1a over the last characters, which are its
    signature and so as good as random for tokens that verified. */
static size_t s_slot(const mb_jwt_cache_t *self, const char *token, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = len > 16 ? len - 16 : 0; i < len; i++)
        h = (h ^ (unsigned char)token[i]) * 1099511628211ULL;
    return (size_t)(h ^ (h >> 32)) & self->mask;
}

int mb_jwt_verify_cached(mb_jwt_cache_t *cache, const mb_jwt_key_t *key,
                         const mb_jwt_policy_t *policy, const char *token, size_t len, int64_t now,
                         mb_jwt_claims_t *claims, const char **why)
{
    static const char *ignored;
    why = why ? why : &ignored;
    if (!token || len == 0 || len > MB_JWT_CACHE_TOKEN_MAX)
        return mb_jwt_verify(key, policy, token, len, now, claims, why);
    s_entry_t *e = &cache->entries[s_slot(cache, token, len)];
    /* Constant time over the token, so probing the cache with guesses
       tells nothing about the token it holds. */
    if (e->len == len && sodium_memcmp(e->token, token, len) == 0) {
        int rc = s_times(policy, now, e->claims.exp, e->nbf, why);
        if (rc == 0)
            *claims = e->claims;
        else
            memset(claims, 0, sizeof *claims);
        return rc;
    }
    int64_t nbf;
    int rc = s_verify(key, policy, token, len, now, claims, &nbf, why);
    if (rc == 0) {
        memcpy(e->token, token, len);
        e->len = len;
        e->claims = *claims;
        e->nbf = nbf;
    }
    return rc;
}

/* ---- the auth map ----------------------------------------------------------------- */

unsigned mb_jwt_role_bit(const char *name, size_t len)
{
    for (size_t i = 0; i < S_N_ROLES; i++)
        if (strlen(s_roles[i].name) == len && memcmp(s_roles[i].name, name, len) == 0)
            return s_roles[i].bit;
    return 0;
}

void mb_jwt_pack_auth(msgpack_packer *pk, const mb_jwt_claims_t *claims)
{
    uint32_t n_roles = 0;
    for (size_t i = 0; i < S_N_ROLES; i++)
        n_roles += (claims->roles & s_roles[i].bit) != 0;
    msgpack_pack_map(pk, 4);
    mb_pack_cstr(pk, "user");
    mb_pack_cstr(pk, claims->sub);
    mb_pack_cstr(pk, "tier");
    mb_pack_cstr(pk, claims->tier);
    mb_pack_cstr(pk, "roles");
    msgpack_pack_array(pk, n_roles);
    for (size_t i = 0; i < S_N_ROLES; i++)
        if (claims->roles & s_roles[i].bit)
            mb_pack_cstr(pk, s_roles[i].name);
    mb_pack_cstr(pk, "sid");
    mb_pack_cstr(pk, claims->sid);
}

/*  Copies string `o` into out when it is 1..max bytes without NUL. */
static bool s_copy_obj(const msgpack_object *o, char *out, size_t max)
{
    const char *s;
    size_t len;
    if (!mb_obj_str(o, &s, &len) || len == 0 || len > max || memchr(s, '\0', len))
        return false;
    memcpy(out, s, len);
    out[len] = '\0';
    return true;
}

int mb_jwt_read_auth(const msgpack_object *auth, mb_jwt_claims_t *claims)
{
    memset(claims, 0, sizeof *claims);
    if (!auth || auth->type != MSGPACK_OBJECT_MAP ||
        !s_copy_obj(mb_map_get(auth, "user"), claims->sub, MB_JWT_ID_MAX)) {
        memset(claims, 0, sizeof *claims);
        return MB_EINVAL;
    }
    s_copy_obj(mb_map_get(auth, "tier"), claims->tier, MB_JWT_TIER_MAX);
    s_copy_obj(mb_map_get(auth, "sid"), claims->sid, MB_JWT_ID_MAX);
    const msgpack_object *roles = mb_map_get(auth, "roles");
    if (roles && roles->type == MSGPACK_OBJECT_ARRAY)
        for (uint32_t i = 0; i < roles->via.array.size; i++) {
            const char *s;
            size_t len;
            if (mb_obj_str(&roles->via.array.ptr[i], &s, &len))
                claims->roles |= mb_jwt_role_bit(s, len);
        }
    return 0;
}
