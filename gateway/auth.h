/*  auth — who may call a route: the bearer token and the route's x-access.

        gw_auth_t *auth = gw_auth_new (&key, &policy, 1024);   // takes the key
        mb_jwt_claims_t claims;
        gw_auth_result_t res;
        if (gw_auth_check (auth, route->access, authorization_header,
                           time (NULL), &claims, &res) != 0)
            ... answer res.status (401 or 403), res.type, res.detail, and
                the WWW-Authenticate value gw_auth_challenge() writes ...
        ... else pack claims as the envelope's auth (mb_jwt_pack_auth) ...

    Access levels (schemas/README.md):
      public   the Authorization header is not even looked at; no auth
      user     any token that verifies (lib/mb_jwt: HS256 only, exp, nbf,
               iss, aud, constant-time signature compare)
      premium  tier "premium", or the admin role
      admin    the admin role

    A missing token (no Authorization header, or another scheme than
    Bearer) is a 401 whose challenge is plain `Bearer realm="musicbus"`
    (RFC 6750 3: no error code when the client sent no credentials); a
    token that does not verify is a 401 with error="invalid_token" and the
    reason; a valid token without the level is a 403 with
    error="insufficient_scope".

    Tokens that verified are kept in mb_jwt's cache, so a client sending
    the same token again costs one constant-time compare, not an HMAC and
    a JSON parse. Not thread-safe (the cache): one gw_auth_t per thread. */
#ifndef GW_AUTH_H
#define GW_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "mb_jwt.h"
#include "routes.h"

#define GW_AUTH_REALM "musicbus"
#define GW_AUTH_CHALLENGE_MAX 160 /* bytes of a WWW-Authenticate value, NUL included */

typedef struct gw_auth gw_auth_t;

/*  Why a request may not go on. All strings are static. */
typedef struct {
    int status;         /* 401, 403, or 503 (no key configured) */
    const char *type;   /* problem type: "unauthenticated", "invalid_token",
                           "forbidden", "unavailable" */
    const char *detail; /* problem detail, for people */
    const char *error;  /* RFC 6750 error code for the challenge, NULL for none */
    const char *reason; /* error_description, NULL for none */
} gw_auth_result_t;

/*  Makes the checker. Takes ownership of *key_p (nulled; destroyed with
    the checker); a NULL *key_p (no secret configured) makes a checker
    that answers 503 "unavailable" on every route that is not public.
    `policy` is copied (its strings stay borrowed). `cache_slots`
    verified tokens are remembered (0: none). Never NULL. */
gw_auth_t *gw_auth_new(mb_jwt_key_t **key_p, const mb_jwt_policy_t *policy, size_t cache_slots);

/*  Wipes the key and the cache and frees the checker; nulls *self_p.
    Safe to call twice. */
void gw_auth_destroy(gw_auth_t **self_p);

/*  Finds the token in the value of an Authorization header: the scheme
    "Bearer" (any case), blanks, then the token (RFC 6750 b64token
    characters), optionally followed by blanks. Returns 0 with *token and
    *len pointing into `header`; MB_ENOTFOUND when `header` is NULL or of
    another scheme; MB_EINVAL when it is "Bearer" with no token or with
    characters a token cannot have. */
int gw_auth_bearer(const char *header, const char **token, size_t *len);

/*  Checks a request for a route of level `access` carrying Authorization
    header `header` (NULL when absent) at time `now` (Unix seconds).
    Returns 0 when it may go on: *claims holds the token's claims (zeroed
    for public routes, which need none). Otherwise returns MB_EINVAL
    with *res saying how to answer, and *claims zeroed -- except for a 403,
    where *claims holds the valid token's claims (its user can still be
    counted by the rate limiter). */
int gw_auth_check(gw_auth_t *self, gw_access_t access, const char *header, int64_t now,
                  mb_jwt_claims_t *claims, gw_auth_result_t *res);

/*  Writes the WWW-Authenticate value for `res` into out[size] (size
    GW_AUTH_CHALLENGE_MAX is always enough):
    `Bearer realm="musicbus"`, with `, error="...", error_description="..."`
    when res->error is set. */
void gw_auth_challenge(const gw_auth_result_t *res, char *out, size_t size);

/*  True when the checker has a key (a secret was configured). */
int gw_auth_has_key(const gw_auth_t *self);

#endif
