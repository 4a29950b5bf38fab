/*  auth — who may call a route; see auth.h. */
#include "auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mb_alloc.h"
#include "mb_error.h"

struct gw_auth {
    mb_jwt_key_t *key; /* NULL: no secret, nothing but public routes work */
    mb_jwt_policy_t policy;
    mb_jwt_cache_t *cache; /* NULL: every token is verified in full */
};

gw_auth_t *gw_auth_new(mb_jwt_key_t **key_p, const mb_jwt_policy_t *policy, size_t cache_slots)
{
    gw_auth_t *self = mb_calloc(1, sizeof *self);
    if (key_p) {
        self->key = *key_p;
        *key_p = NULL;
    }
    self->policy = *policy;
    if (cache_slots)
        self->cache = mb_jwt_cache_new(cache_slots);
    return self;
}

void gw_auth_destroy(gw_auth_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    gw_auth_t *self = *self_p;
    mb_jwt_key_destroy(&self->key);
    mb_jwt_cache_destroy(&self->cache);
    free(self);
    *self_p = NULL;
}

int gw_auth_has_key(const gw_auth_t *self)
{
    return self->key != NULL;
}

/*  RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" /
    "+" / "/" ) *"=" */
static const char s_b64token[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/";

/*  Finds what follows "Bearer" and its blanks, less trailing blanks,
    without looking at the characters: the fast path. Returns 0,
    MB_ENOTFOUND (no header, another scheme) or MB_EINVAL (nothing). */
static int s_split(const char *header, const char **token, size_t *len)
{
    *token = NULL;
    *len = 0;
    if (!header)
        return MB_ENOTFOUND;
    header += strspn(header, " \t");
    if (strncasecmp(header, "Bearer", 6) != 0)
        return MB_ENOTFOUND;
    const char *p = header + 6;
    if (*p != '\0' && *p != ' ' && *p != '\t')
        return MB_ENOTFOUND; /* "Bearerish": another scheme */
    p += strspn(p, " \t");
    size_t n = strlen(p);
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (n == 0)
        return MB_EINVAL;
    *token = p;
    *len = n;
    return 0;
}

int gw_auth_bearer(const char *header, const char **token, size_t *len)
{
    int rc = s_split(header, token, len);
    if (rc)
        return rc;
    size_t n = strspn(*token, s_b64token);
    n += strspn(*token + n, "=");
    if (n != *len) {
        *token = NULL;
        *len = 0;
        return MB_EINVAL;
    }
    return 0;
}

static int s_deny(gw_auth_result_t *res, int status, const char *type, const char *detail,
                  const char *error, const char *reason)
{
    res->status = status;
    res->type = type;
    res->detail = detail;
    res->error = error;
    res->reason = reason;
    return MB_EINVAL;
}

int gw_auth_check(gw_auth_t *self, gw_access_t access, const char *header, int64_t now,
                  mb_jwt_claims_t *claims, gw_auth_result_t *res)
{
    memset(res, 0, sizeof *res);
    memset(claims, 0, sizeof *claims);
    if (access == GW_ACCESS_PUBLIC)
        return 0;
    if (!self->key)
        return s_deny(res, 503, "unavailable",
                      "the gateway has no JWT secret configured, so it cannot check access tokens",
                      NULL, NULL);
    /* The token's characters are not checked up front: a cache hit is an
       exact match with a token that verified, and verification refuses
       anything else. Only a refusal looks closer, for its reason. */
    const char *token;
    size_t len;
    int rc = s_split(header, &token, &len);
    if (rc == MB_ENOTFOUND)
        return s_deny(res, 401, "unauthenticated",
                      "this route needs an access token: Authorization: Bearer <token>", NULL,
                      NULL);
    if (rc)
        return s_deny(res, 401, "invalid_token", "the Authorization header is not Bearer <token>",
                      "invalid_token", "malformed Authorization header");
    const char *why = NULL;
    rc = self->cache ? mb_jwt_verify_cached(self->cache, self->key, &self->policy, token, len, now,
                                            claims, &why)
                     : mb_jwt_verify(self->key, &self->policy, token, len, now, claims, &why);
    if (rc) {
        if (gw_auth_bearer(header, &token, &len) == MB_EINVAL)
            why = "malformed Authorization header";
        return s_deny(res, 401, "invalid_token", "the access token is not valid", "invalid_token",
                      why ? why : "invalid token");
    }
    switch (access) {
    case GW_ACCESS_PREMIUM:
        if (strcmp(claims->tier, "premium") != 0 && !(claims->roles & MB_ROLE_ADMIN))
            return s_deny(res, 403, "forbidden", "this route is for premium subscribers",
                          "insufficient_scope", "premium tier required");
        break;
    case GW_ACCESS_ADMIN:
        if (!(claims->roles & MB_ROLE_ADMIN))
            return s_deny(res, 403, "forbidden", "this route is for administrators",
                          "insufficient_scope", "admin role required");
        break;
    case GW_ACCESS_USER:
    case GW_ACCESS_PUBLIC:
        break;
    }
    return 0;
}

void gw_auth_challenge(const gw_auth_result_t *res, char *out, size_t size)
{
    /* error and reason are static strings of ours with no '"' or '\\', so
       they need no quoting beyond the quotes around them. */
    if (res->error)
        snprintf(out, size, "Bearer realm=\"%s\", error=\"%s\", error_description=\"%s\"",
                 GW_AUTH_REALM, res->error, res->reason ? res->reason : res->error);
    else
        snprintf(out, size, "Bearer realm=\"%s\"", GW_AUTH_REALM);
}
