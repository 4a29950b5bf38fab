/*  mb_jwt — access tokens: JSON Web Tokens (RFC 7519) signed with HS256
    (HMAC-SHA-256, RFC 7518 3.2) through libsodium. The users actor signs
    them; the gateway verifies one on every authenticated request, then
    turns its claims into the request envelope's `auth` map.

        mb_jwt_key_t *key;
        if (mb_jwt_key_load (NULL, &key) != 0)     // MUSICBUS_JWT_SECRET[_FILE]
            return 1;                                // the reason is logged
        mb_jwt_policy_t policy;
        mb_jwt_policy_default (&policy);             // iss, aud, leeway
        mb_jwt_claims_t claims;
        const char *why;
        if (mb_jwt_verify (key, &policy, token, len, time (NULL), &claims, &why) != 0)
            ... 401, with `why` as the description ...

    Tokens are header.payload.signature, each part base64url without
    padding. The header is {"alg":"HS256","typ":"JWT"}; the payload holds
    iss, aud (a string), sub, iat, exp, jti, sid, tier and roles (an array
    of role names). Any JWT library given the same secret verifies them.

    Verification takes no lock, makes no syscall and allocates only what
    jansson needs to parse the payload (a few hundred bytes), so it is
    cheap enough for every request. It checks, in this order: size,
    three parts, the header (exactly alg HS256, typ JWT optional, nothing
    else), the signature (constant-time compare, before anything in the
    payload is looked at), then the claims: exp, nbf, iss, aud, and the
    shape of sub, sid, jti, tier and roles. */
#ifndef MB_JWT_H
#define MB_JWT_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#define MB_JWT_ENV_SECRET "MUSICBUS_JWT_SECRET"           /* the secret itself */
#define MB_JWT_ENV_SECRET_FILE "MUSICBUS_JWT_SECRET_FILE" /* a file holding it */
#define MB_JWT_ENV_ISS "MUSICBUS_JWT_ISS"
#define MB_JWT_DEFAULT_ISS "musicbus"
#define MB_JWT_ENV_AUD "MUSICBUS_JWT_AUD"
#define MB_JWT_DEFAULT_AUD "musicbus-api"
#define MB_JWT_ENV_LEEWAY "MUSICBUS_JWT_LEEWAY" /* seconds of clock skew allowed */
#define MB_JWT_DEFAULT_LEEWAY 30

#define MB_JWT_SECRET_MIN 32   /* bytes: the key must be at least the MAC's size */
#define MB_JWT_SECRET_MAX 4096 /* bytes: anything longer is not a secret but a mistake */
#define MB_JWT_TOKEN_MAX 8192  /* bytes of a token mb_jwt_verify() looks at */
#define MB_JWT_ID_MAX 64       /* bytes of sub, sid and jti */
#define MB_JWT_TIER_MAX 16     /* bytes of tier */
#define MB_JWT_ROLES_MAX 16    /* entries of roles */

/*  Role bits. Role names in tokens and auth maps: "user", "admin". */
enum {
    MB_ROLE_USER = 1u << 0,
    MB_ROLE_ADMIN = 1u << 1,
};

/*  The claims musicbus puts in a token. Strings are NUL-terminated. */
typedef struct {
    char sub[MB_JWT_ID_MAX + 1];    /* the user's id */
    char sid[MB_JWT_ID_MAX + 1];    /* the session (logout revokes it) */
    char jti[MB_JWT_ID_MAX + 1];    /* this token's id; "" when absent */
    char tier[MB_JWT_TIER_MAX + 1]; /* "free" or "premium" */
    unsigned roles;                 /* MB_ROLE_* bits; unknown role names are ignored */
    int64_t iat;                    /* issued at, Unix seconds; 0 when absent */
    int64_t exp;                    /* expires at, Unix seconds */
} mb_jwt_claims_t;

/*  What is checked besides the signature, and what mb_jwt_sign() writes.
    The strings are borrowed. */
typedef struct {
    const char *iss; /* issuer: written by sign; verify requires it equal (NULL: unchecked) */
    const char *aud; /* audience: written by sign; verify requires it equal to aud, or
                        listed in an aud array (NULL: unchecked) */
    int leeway_s;    /* verify: seconds of clock skew allowed on exp and nbf */
} mb_jwt_policy_t;

typedef struct mb_jwt_key mb_jwt_key_t;

/*  Fills *policy from MUSICBUS_JWT_ISS, MUSICBUS_JWT_AUD and
    MUSICBUS_JWT_LEEWAY (0..300), else the defaults. The strings point
    into the environment: don't change it while the policy is in use. */
void mb_jwt_policy_default(mb_jwt_policy_t *policy);

/*  Makes a key from `len` bytes of `secret` (copied, then precomputed
    into HMAC state kept in guarded memory that is wiped on destroy).
    Returns NULL when len is below MB_JWT_SECRET_MIN or above
    MB_JWT_SECRET_MAX. */
mb_jwt_key_t *mb_jwt_key_new(const void *secret, size_t len);

/*  Loads the key from, in this order: the file `file` (a --jwt-secret-file
    flag; NULL when not given), environment variable MUSICBUS_JWT_SECRET
    (its bytes), or the file named by MUSICBUS_JWT_SECRET_FILE. A file's
    bytes are the secret, less one trailing "\n" or "\r\n". Returns 0 with
    *key_p (destroy it), or, after logging one clear error line:
    MB_ENOTFOUND when no secret is configured, MB_EIO when the file cannot
    be read, MB_EINVAL when the secret is shorter than MB_JWT_SECRET_MIN
    bytes (or longer than MB_JWT_SECRET_MAX). Warns when the file can be
    read by group or others. */
int mb_jwt_key_load(const char *file, mb_jwt_key_t **key_p);

/*  Wipes and frees the key; nulls *self_p. Safe to call twice. */
void mb_jwt_key_destroy(mb_jwt_key_t **self_p);

/*  Signs `claims` with iss and aud from `policy` into a new token
    (*token, NUL-terminated, the caller's to free). An empty claims->jti
    gets a random id. Returns 0, or MB_EINVAL when sub, sid or tier is
    empty or too long, jti is too long, roles has no known bit, or
    policy->iss/aud is NULL or empty. */
int mb_jwt_sign(const mb_jwt_key_t *key, const mb_jwt_policy_t *policy,
                const mb_jwt_claims_t *claims, char **token);

/*  Verifies `len` bytes of `token` at time `now` (Unix seconds) and fills
    *claims. Returns 0; MB_ETOOBIG when len > MB_JWT_TOKEN_MAX;
    MB_ETIMEDOUT when the token expired (now >= exp + leeway); MB_EINVAL
    for anything else (malformed, other algorithm, bad signature, not valid
    yet, wrong iss or aud, a claim missing or of the wrong shape). On error
    *why is a static English reason ("bad signature", "token expired")
    fit for a WWW-Authenticate error_description, and *claims is zeroed.
    Required claims: sub, sid, tier (1..their max bytes), roles (an array
    of at most MB_JWT_ROLES_MAX strings), exp (a number); optional: iat,
    nbf (numbers), jti (a string), and iss/aud unless the policy names
    them. */
int mb_jwt_verify(const mb_jwt_key_t *key, const mb_jwt_policy_t *policy, const char *token,
                  size_t len, int64_t now, mb_jwt_claims_t *claims, const char **why);

/* ---- a cache of verified tokens ----------------------------------------
   A client sends the same access token with every request for up to its
   whole lifetime. The gateway can remember the tokens it verified: a hit
   costs one constant-time compare of the token bytes instead of the HMAC
   and the JSON parse (about 0.3 us instead of about 12 us here). exp and
   nbf are still checked against `now` on every hit, so a cached token
   expires exactly like a fresh one. Only tokens that verified are
   entered, so only holders of valid tokens can evict entries. Not
   thread-safe: one cache per thread. */

typedef struct mb_jwt_cache mb_jwt_cache_t;

#define MB_JWT_CACHE_TOKEN_MAX 1024 /* longer tokens are verified, never cached */

/*  Makes a cache of `slots` entries (rounded up to a power of two, at
    least 1), for tokens of one key and one policy. Never NULL. */
mb_jwt_cache_t *mb_jwt_cache_new(size_t slots);

/*  Wipes and frees the cache; nulls *self_p. Safe to call twice. */
void mb_jwt_cache_destroy(mb_jwt_cache_t **self_p);

/*  As mb_jwt_verify(), answered from `cache` when it holds this exact
    token, and entering the token in it when it verifies. The cache must
    only ever be used with the same key and policy. */
int mb_jwt_verify_cached(mb_jwt_cache_t *cache, const mb_jwt_key_t *key,
                         const mb_jwt_policy_t *policy, const char *token, size_t len, int64_t now,
                         mb_jwt_claims_t *claims, const char **why);

/* ---- the request envelope's auth map -----------------------------------
   The gateway packs a verified token's claims as the envelope's "auth"
   map; actors read it back. One definition here keeps both sides equal:
       {"user": sub, "tier": tier, "roles": ["user", "admin"...], "sid": sid} */

/*  Packs the auth map of `claims` (4 entries). */
void mb_jwt_pack_auth(msgpack_packer *pk, const mb_jwt_claims_t *claims);

/*  Reads an auth map (the envelope's, may be NULL) into *claims: user
    into sub, tier, roles, sid (jti, iat, exp left 0/empty). Returns 0,
    or MB_EINVAL when auth is absent, not a map, or user is not a string
    of 1..MB_JWT_ID_MAX bytes. tier, roles and sid are optional
    (empty/0 when absent or malformed). */
int mb_jwt_read_auth(const msgpack_object *auth, mb_jwt_claims_t *claims);

/*  Returns the MB_ROLE_* bit named by `name` (`len` bytes), or 0. */
unsigned mb_jwt_role_bit(const char *name, size_t len);

#endif
