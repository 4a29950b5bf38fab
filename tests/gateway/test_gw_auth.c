/*  auth: the bearer token and the route's x-access decide whether a
    request goes on, and how a refusal is answered (401 with its
    WWW-Authenticate challenge, 403). Tokens are made by mb_jwt_sign() or
    forged here with libsodium's HMAC-SHA-256, so the ones the library
    would never write (alg none, another secret, nbf) are covered too. */
#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "mb_error.h"
#include "mb_jwt.h"

#define S_SECRET "an-hs256-secret-of-at-least-32-bytes-for-tests"
#define S_NOW 1700000000LL

static mb_jwt_policy_t s_policy = {.iss = "musicbus", .aud = "musicbus-api", .leeway_s = 30};

static gw_auth_t *s_auth(size_t cache_slots)
{
    mb_jwt_key_t *key = mb_jwt_key_new(S_SECRET, strlen(S_SECRET));
    cr_assert_not_null(key);
    gw_auth_t *auth = gw_auth_new(&key, &s_policy, cache_slots);
    cr_assert_null(key, "the checker took the key");
    return auth;
}

/*  A token as the users actor makes it, issued at S_NOW for 15 minutes. */
static char *s_token(const char *sub, const char *tier, unsigned roles)
{
    mb_jwt_claims_t c = {.roles = roles, .iat = S_NOW, .exp = S_NOW + 900};
    snprintf(c.sub, sizeof c.sub, "%s", sub);
    snprintf(c.sid, sizeof c.sid, "sid-of-%s", sub);
    snprintf(c.tier, sizeof c.tier, "%s", tier);
    char *token = NULL;
    mb_jwt_key_t *key = mb_jwt_key_new(S_SECRET, strlen(S_SECRET));
    cr_assert_eq(mb_jwt_sign(key, &s_policy, &c, &token), 0);
    mb_jwt_key_destroy(&key);
    return token;
}

static void s_b64(char *out, size_t cap, const void *data, size_t len)
{
    sodium_bin2base64(out, cap, data, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/*  header.payload.signature with any header and payload, signed with
    `secret` (NULL: no signature at all, as alg none has). */
static char *s_forge(const char *header, const char *payload, const char *secret)
{
    char h[512], p[1024], sig[64] = "";
    s_b64(h, sizeof h, header, strlen(header));
    s_b64(p, sizeof p, payload, strlen(payload));
    char *signing = NULL;
    cr_assert(asprintf(&signing, "%s.%s", h, p) > 0);
    if (secret) {
        unsigned char mac[crypto_auth_hmacsha256_BYTES];
        crypto_auth_hmacsha256_state st;
        crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret, strlen(secret));
        crypto_auth_hmacsha256_update(&st, (const unsigned char *)signing, strlen(signing));
        crypto_auth_hmacsha256_final(&st, mac);
        s_b64(sig, sizeof sig, mac, sizeof mac);
    }
    char *token = NULL;
    cr_assert(asprintf(&token, "%s.%s", signing, sig) > 0);
    free(signing);
    return token;
}

#define S_HS256 "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define S_CLAIMS                                                                                   \
    "\"iss\":\"musicbus\",\"aud\":\"musicbus-api\",\"sub\":\"u1\",\"sid\":\"s1\","                 \
    "\"tier\":\"free\",\"roles\":[\"user\"],\"iat\":1700000000"

static char *s_bearer(const char *token)
{
    char *h = NULL;
    cr_assert(asprintf(&h, "Bearer %s", token) > 0);
    return h;
}

/*  Expects a 401 invalid_token whose challenge carries `reason`. */
static void s_expect_invalid(gw_auth_t *auth, const char *token, int64_t now, const char *reason)
{
    char *header = s_bearer(token);
    mb_jwt_claims_t claims;
    gw_auth_result_t res;
    cr_assert_eq(gw_auth_check(auth, GW_ACCESS_USER, header, now, &claims, &res), MB_EINVAL,
                 "accepted: %s", token);
    cr_assert_eq(res.status, 401);
    cr_assert_str_eq(res.type, "invalid_token");
    cr_assert_str_eq(res.error, "invalid_token");
    cr_assert_str_eq(claims.sub, "", "no claims from a refused token");
    char challenge[GW_AUTH_CHALLENGE_MAX], want[GW_AUTH_CHALLENGE_MAX];
    gw_auth_challenge(&res, challenge, sizeof challenge);
    snprintf(want, sizeof want,
             "Bearer realm=\"musicbus\", error=\"invalid_token\", error_description=\"%s\"",
             reason);
    cr_assert_str_eq(challenge, want);
    free(header);
}

/*  Usage: a user route with a valid token goes on with the token's
    claims; the same token again is answered from the cache. */
Test(gw_auth, usage)
{
    gw_auth_t *auth = s_auth(16);
    char *token = s_token("alice", "free", MB_ROLE_USER);
    char *header = s_bearer(token);
    mb_jwt_claims_t claims;
    gw_auth_result_t res;
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(gw_auth_check(auth, GW_ACCESS_USER, header, S_NOW + 60, &claims, &res), 0);
        cr_assert_str_eq(claims.sub, "alice");
        cr_assert_str_eq(claims.sid, "sid-of-alice");
        cr_assert_str_eq(claims.tier, "free");
        cr_assert_eq(claims.roles, MB_ROLE_USER);
        cr_assert_eq(res.status, 0);
    }
    free(header);
    free(token);
    gw_auth_destroy(&auth);
    gw_auth_destroy(&auth);
    cr_assert_null(auth);
}

Test(gw_auth, missing_token_is_a_plain_challenge)
{
    gw_auth_t *auth = s_auth(0);
    const char *headers[] = {NULL, "", "Basic YWxpY2U6c2VjcmV0", "Bearerish abc", "Token abc"};
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        mb_jwt_claims_t claims;
        gw_auth_result_t res;
        cr_assert_eq(gw_auth_check(auth, GW_ACCESS_USER, headers[i], S_NOW, &claims, &res),
                     MB_EINVAL);
        cr_assert_eq(res.status, 401, "%s", headers[i] ? headers[i] : "(none)");
        cr_assert_str_eq(res.type, "unauthenticated");
        cr_assert_null(res.error, "RFC 6750 3.1: no error code without credentials");
        char challenge[GW_AUTH_CHALLENGE_MAX];
        gw_auth_challenge(&res, challenge, sizeof challenge);
        cr_assert_str_eq(challenge, "Bearer realm=\"musicbus\"");
    }
    gw_auth_destroy(&auth);
}

Test(gw_auth, bearer_parsing)
{
    const char *token;
    size_t len;
    cr_assert_eq(gw_auth_bearer("Bearer abc.def-_~+/==", &token, &len), 0);
    cr_assert_eq(len, strlen("abc.def-_~+/=="));
    cr_assert_eq(gw_auth_bearer("  bearer \t abc  ", &token, &len), 0, "scheme in any case");
    cr_assert_eq(len, 3);
    cr_assert_eq(strncmp(token, "abc", 3), 0);
    cr_assert_eq(gw_auth_bearer("BEARER x", &token, &len), 0);
    cr_assert_eq(gw_auth_bearer(NULL, &token, &len), MB_ENOTFOUND);
    cr_assert_eq(gw_auth_bearer("Basic abc", &token, &len), MB_ENOTFOUND);
    cr_assert_eq(gw_auth_bearer("Bearerabc", &token, &len), MB_ENOTFOUND);
    cr_assert_eq(gw_auth_bearer("Bearer", &token, &len), MB_EINVAL);
    cr_assert_eq(gw_auth_bearer("Bearer   ", &token, &len), MB_EINVAL);
    cr_assert_eq(gw_auth_bearer("Bearer a b", &token, &len), MB_EINVAL);
    cr_assert_eq(gw_auth_bearer("Bearer a,b", &token, &len), MB_EINVAL);
    cr_assert_eq(gw_auth_bearer("Bearer a=b", &token, &len), MB_EINVAL, "'=' only at the end");
    cr_assert_eq(gw_auth_bearer("Bearer \"abc\"", &token, &len), MB_EINVAL);
}

Test(gw_auth, bad_tokens_are_401_invalid_token)
{
    gw_auth_t *auth = s_auth(16);
    s_expect_invalid(auth, "garbage", S_NOW, "not three dot-separated parts");

    /* Expired: exp + leeway has passed -- fresh, and once cached. */
    char *token = s_token("bob", "free", MB_ROLE_USER);
    char *header = s_bearer(token);
    mb_jwt_claims_t claims;
    gw_auth_result_t res;
    cr_assert_eq(gw_auth_check(auth, GW_ACCESS_USER, header, S_NOW, &claims, &res), 0);
    s_expect_invalid(auth, token, S_NOW + 900 + 30, "token expired");
    cr_assert_eq(gw_auth_check(auth, GW_ACCESS_USER, header, S_NOW + 900 + 29, &claims, &res), 0,
                 "within the leeway");

    /* Tampered: one character of the payload changed. */
    char *tampered = strdup(token);
    char *dot = strchr(tampered, '.');
    dot[5] = dot[5] == 'A' ? 'B' : 'A';
    s_expect_invalid(auth, tampered, S_NOW, "bad signature");

    /* alg none, with and without a signature part; another algorithm. */
    char *none = s_forge("{\"alg\":\"none\"}", "{" S_CLAIMS ",\"exp\":1700000900}", NULL);
    s_expect_invalid(auth, none, S_NOW, "alg must be HS256");
    char *none_typ = s_forge("{\"alg\":\"none\",\"typ\":\"JWT\"}",
                             "{" S_CLAIMS ",\"exp\":1700000900}", S_SECRET);
    s_expect_invalid(auth, none_typ, S_NOW, "alg must be HS256");
    char *hs512 = s_forge("{\"alg\":\"HS512\",\"typ\":\"JWT\"}",
                          "{" S_CLAIMS ",\"exp\":1700000900}", S_SECRET);
    s_expect_invalid(auth, hs512, S_NOW, "alg must be HS256");
    char *rs256 = s_forge("{\"alg\":\"RS256\"}", "{" S_CLAIMS ",\"exp\":1700000900}", S_SECRET);
    s_expect_invalid(auth, rs256, S_NOW, "alg must be HS256");

    /* Signed with another secret. */
    char *other = s_forge(S_HS256, "{" S_CLAIMS ",\"exp\":1700000900}",
                          "another-secret-that-is-32-bytes-or-more!");
    s_expect_invalid(auth, other, S_NOW, "bad signature");

    /* Well signed, but for someone else, or not yet valid. */
    char *iss = s_forge(S_HS256,
                        "{\"iss\":\"evil\",\"aud\":\"musicbus-api\",\"sub\":\"u1\",\"sid\":\"s1\","
                        "\"tier\":\"free\",\"roles\":[\"user\"],\"exp\":1700000900}",
                        S_SECRET);
    s_expect_invalid(auth, iss, S_NOW, "wrong issuer");
    char *aud = s_forge(S_HS256,
                        "{\"iss\":\"musicbus\",\"aud\":\"other-api\",\"sub\":\"u1\",\"sid\":\"s1\","
                        "\"tier\":\"free\",\"roles\":[\"user\"],\"exp\":1700000900}",
                        S_SECRET);
    s_expect_invalid(auth, aud, S_NOW, "wrong audience");
    char *nbf = s_forge(S_HS256, "{" S_CLAIMS ",\"exp\":1700000900,\"nbf\":1700000100}", S_SECRET);
    s_expect_invalid(auth, nbf, S_NOW, "token not valid yet");
    char *ok = s_forge(S_HS256, "{" S_CLAIMS ",\"exp\":1700000900}", S_SECRET);
    char *ok_header = s_bearer(ok);
    cr_assert_eq(gw_auth_check(auth, GW_ACCESS_USER, ok_header, S_NOW, &claims, &res), 0,
                 "the forger itself makes good tokens");

    /* "Bearer" and nothing usable. */
    cr_assert_eq(gw_auth_check(auth, GW_ACCESS_USER, "Bearer a b", S_NOW, &claims, &res),
                 MB_EINVAL);
    cr_assert_eq(res.status, 401);
    cr_assert_str_eq(res.error, "invalid_token");
    cr_assert_str_eq(res.reason, "malformed Authorization header");

    free(ok_header);
    free(ok);
    free(nbf);
    free(aud);
    free(iss);
    free(other);
    free(rs256);
    free(hs512);
    free(none_typ);
    free(none);
    free(tampered);
    free(header);
    free(token);
    gw_auth_destroy(&auth);
}

/*  Expects `token` on a route of level `access`: 0 (goes on) or 403. */
static void s_expect_level(gw_auth_t *auth, gw_access_t access, const char *token, int status)
{
    char *header = s_bearer(token);
    mb_jwt_claims_t claims;
    gw_auth_result_t res;
    int rc = gw_auth_check(auth, access, header, S_NOW, &claims, &res);
    if (status == 0) {
        cr_assert_eq(rc, 0, "%s refused: %d %s", gw_access_name(access), res.status,
                     res.detail ? res.detail : "");
    } else {
        cr_assert_eq(rc, MB_EINVAL, "%s let through", gw_access_name(access));
        cr_assert_eq(res.status, 403);
        cr_assert_str_eq(res.type, "forbidden");
        cr_assert_str_eq(res.error, "insufficient_scope");
        cr_assert_str_neq(claims.sub, "", "a 403 keeps the valid token's claims");
    }
    free(header);
}

Test(gw_auth, tier_and_role_checks_are_403)
{
    gw_auth_t *auth = s_auth(16);
    char *free_user = s_token("f", "free", MB_ROLE_USER);
    char *premium = s_token("p", "premium", MB_ROLE_USER);
    char *admin = s_token("a", "free", MB_ROLE_USER | MB_ROLE_ADMIN);
    s_expect_level(auth, GW_ACCESS_USER, free_user, 0);
    s_expect_level(auth, GW_ACCESS_PREMIUM, free_user, 403);
    s_expect_level(auth, GW_ACCESS_ADMIN, free_user, 403);
    s_expect_level(auth, GW_ACCESS_USER, premium, 0);
    s_expect_level(auth, GW_ACCESS_PREMIUM, premium, 0);
    s_expect_level(auth, GW_ACCESS_ADMIN, premium, 403);
    s_expect_level(auth, GW_ACCESS_USER, admin, 0);
    s_expect_level(auth, GW_ACCESS_PREMIUM, admin, 0);
    s_expect_level(auth, GW_ACCESS_ADMIN, admin, 0);

    char *header = s_bearer(free_user);
    mb_jwt_claims_t claims;
    gw_auth_result_t res;
    gw_auth_check(auth, GW_ACCESS_ADMIN, header, S_NOW, &claims, &res);
    char challenge[GW_AUTH_CHALLENGE_MAX];
    gw_auth_challenge(&res, challenge, sizeof challenge);
    cr_assert_str_eq(challenge, "Bearer realm=\"musicbus\", error=\"insufficient_scope\", "
                                "error_description=\"admin role required\"");
    free(header);
    free(free_user);
    free(premium);
    free(admin);
    gw_auth_destroy(&auth);
}

Test(gw_auth, public_routes_ignore_authorization)
{
    gw_auth_t *auth = s_auth(16);
    mb_jwt_claims_t claims;
    gw_auth_result_t res;
    cr_assert_eq(gw_auth_check(auth, GW_ACCESS_PUBLIC, "Bearer garbage", S_NOW, &claims, &res), 0);
    cr_assert_str_eq(claims.sub, "");
    char *token = s_token("alice", "free", MB_ROLE_USER);
    char *header = s_bearer(token);
    cr_assert_eq(gw_auth_check(auth, GW_ACCESS_PUBLIC, header, S_NOW, &claims, &res), 0);
    cr_assert_str_eq(claims.sub, "", "no auth on public routes, even with a good token");
    free(header);
    free(token);
    gw_auth_destroy(&auth);
}

Test(gw_auth, no_secret_means_503_except_public)
{
    mb_jwt_key_t *none = NULL;
    gw_auth_t *auth = gw_auth_new(&none, &s_policy, 16);
    cr_assert_not(gw_auth_has_key(auth));
    char *token = s_token("alice", "free", MB_ROLE_USER);
    char *header = s_bearer(token);
    mb_jwt_claims_t claims;
    gw_auth_result_t res;
    cr_assert_eq(gw_auth_check(auth, GW_ACCESS_USER, header, S_NOW, &claims, &res), MB_EINVAL);
    cr_assert_eq(res.status, 503);
    cr_assert_eq(gw_auth_check(auth, GW_ACCESS_PUBLIC, header, S_NOW, &claims, &res), 0);
    free(header);
    free(token);
    gw_auth_destroy(&auth);
}
