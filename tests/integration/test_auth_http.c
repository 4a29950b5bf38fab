/*  Accounts, sessions and access over HTTP, end to end: a real stack
    (broker, catalog, users, gateway) per test, as a client sees it.
    Sign-up, login, refresh rotation and reuse detection, logout, password
    change, /v1/me, roles and tiers, every kind of bad input and bad token,
    and the sign-in rate limit. The gateway's checks alone (no users actor)
    are tests/gateway/test_gw_http.c's; this file checks that gateway and
    users agree: tokens the users actor signs pass the gateway, what it
    revokes stays revoked, and what the gateway lets through the actor
    answers as the contract says. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "it.h"
#include "mb_jwt.h"

static it_stack_t *s_stack;

static void s_up(void)
{
    s_stack = it_stack_new(NULL);
    cr_assert(s_stack, "the stack did not start (see the log above)");
}

static void s_down(void)
{
    it_stack_destroy(&s_stack);
}

TestSuite(auth_http, .init = s_up, .fini = s_down, .timeout = 120);

#define PASSWORD "listen-to-the-music-42"
#define NO_SUCH_ID "ZZZZZZZZZZZZZZZZZZZZZZ"

/* ---- helpers ------------------------------------------------------------------ */

/* Sends a request with an optional token and JSON body (stolen). */
static void s_send(it_http_res_t *res, const char *bearer, const char *method, const char *path,
                   json_t *body)
{
    char *url = it_stack_url(s_stack, path);
    it_http_json_as(res, bearer, method, url, body);
    json_decref(body);
    free(url);
}

/* Signs up `email` with PASSWORD; returns the user's id (caller frees). */
static char *s_signup(const char *email)
{
    json_t *user = it_call_as(s_stack, NULL, "POST", "/v1/auth/signup",
                              it_pack("{s:s, s:s, s:s, s:s}", "email", email, "password", PASSWORD,
                                      "display_name", "Listener", "country", "SE"),
                              201);
    char *id = it_str(user, "id");
    json_decref(user);
    return id;
}

typedef struct {
    char *access;
    char *refresh;
} s_tokens_t;

static void s_tokens_free(s_tokens_t *t)
{
    free(t->access);
    free(t->refresh);
    *t = (s_tokens_t){0};
}

/* Checks a Tokens document and keeps its two tokens. */
static s_tokens_t s_tokens_of(const json_t *doc)
{
    cr_assert_str_eq(it_json_str(doc, "token_type"), "Bearer");
    cr_assert_eq(it_json_int(doc, "expires_in"), 900);
    const char *refresh = it_json_str(doc, "refresh_token");
    cr_assert(refresh && strlen(refresh) == 43, "a refresh token is 43 characters of base64url");
    return (s_tokens_t){.access = it_str(doc, "access_token"),
                        .refresh = it_str(doc, "refresh_token")};
}

static s_tokens_t s_login(const char *email, const char *password)
{
    json_t *doc = it_call_as(s_stack, NULL, "POST", "/v1/auth/login",
                             it_pack("{s:s, s:s}", "email", email, "password", password), 200);
    s_tokens_t t = s_tokens_of(doc);
    json_decref(doc);
    return t;
}

static s_tokens_t s_refresh(const char *refresh)
{
    json_t *doc = it_call_as(s_stack, NULL, "POST", "/v1/auth/refresh",
                             it_pack("{s:s}", "refresh_token", refresh), 200);
    s_tokens_t t = s_tokens_of(doc);
    json_decref(doc);
    return t;
}

/* Asserts a refresh is refused with 401 and problem type `type`. */
static void s_refresh_refused(const char *refresh, const char *type)
{
    json_t *p = it_call_as(s_stack, NULL, "POST", "/v1/auth/refresh",
                           it_pack("{s:s}", "refresh_token", refresh), 401);
    cr_assert_str_eq(it_json_str(p, "type"), type, "%s", json_dumps(p, 0));
    json_decref(p);
}

/* Asserts the problem's type. */
static void s_type(json_t *problem, const char *type)
{
    const char *got = it_json_str(problem, "type");
    cr_assert(got && strcmp(got, type) == 0, "expected problem type %s, got %s", type,
              got ? got : "(none)");
    json_decref(problem);
}

/* The JSON payload of a JWT, decoded (base64url, no padding). */
static json_t *s_claims(const char *token)
{
    const char *a = strchr(token, '.');
    cr_assert(a);
    const char *b = strchr(a + 1, '.');
    cr_assert(b);
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = (size_t)(b - a - 1), k = 0;
    unsigned char *out = malloc(n);
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = strchr(alphabet, a[1 + i]);
        cr_assert(p && *p, "payload is base64url");
        acc = acc << 6 | (unsigned)(p - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[k++] = (unsigned char)(acc >> bits);
        }
    }
    json_t *claims = json_loadb((const char *)out, k, 0, NULL);
    free(out);
    cr_assert(claims, "the payload is JSON");
    return claims;
}

/* base64url without padding of `len` bytes. Caller frees. */
static char *s_b64url(const void *data, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const unsigned char *in = data;
    char *out = malloc(len * 4 / 3 + 4);
    size_t k = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        acc = acc << 8 | in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[k++] = alphabet[(acc >> bits) & 63];
        }
    }
    if (bits > 0)
        out[k++] = alphabet[(acc << (6 - bits)) & 63];
    out[k] = '\0';
    return out;
}

static char *s_path(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *s_path(const char *fmt, ...)
{
    char *path = NULL;
    va_list ap;
    va_start(ap, fmt);
    int rc = vasprintf(&path, fmt, ap);
    va_end(ap);
    cr_assert(rc >= 0);
    return path;
}

/* ---- sign-up, login, me ------------------------------------------------------------ */

Test(auth_http, signup_login_and_me)
{
    /* The email is stored trimmed and lower-cased. */
    json_t *user =
        it_call_as(s_stack, NULL, "POST", "/v1/auth/signup",
                   it_pack("{s:s, s:s, s:s, s:s}", "email", " Alice@Example.COM ", "password",
                           PASSWORD, "display_name", "Alice", "country", "SE"),
                   201);
    cr_assert_str_eq(it_json_str(user, "email"), "alice@example.com");
    cr_assert_str_eq(it_json_str(user, "tier"), "free");
    cr_assert_str_eq(it_json_str(user, "country"), "SE");
    const json_t *roles = json_object_get(user, "roles");
    cr_assert(json_array_size(roles) == 1 &&
                  strcmp(json_string_value(json_array_get(roles, 0)), "user") == 0,
              "a new account has the role user only");
    cr_assert(!json_object_get(user, "password") && !json_object_get(user, "password_hash"),
              "never the password or its hash");
    char *id = it_str(user, "id");

    /* Same address in another case: taken. */
    json_t *p = it_problem_as(s_stack, NULL, "POST", "/v1/auth/signup",
                              it_pack("{s:s, s:s, s:s, s:s}", "email", "ALICE@example.com",
                                      "password", PASSWORD, "display_name", "Eve", "country", "SE"),
                              409, "body.email");
    s_type(p, "email_taken");

    s_tokens_t t = s_login("alice@EXAMPLE.com", PASSWORD);
    json_t *claims = s_claims(t.access);
    cr_assert_str_eq(it_json_str(claims, "sub"), id);
    cr_assert_str_eq(it_json_str(claims, "tier"), "free");
    cr_assert_str_eq(it_json_str(claims, "iss"), MB_JWT_DEFAULT_ISS);
    cr_assert_str_eq(it_json_str(claims, "aud"), MB_JWT_DEFAULT_AUD);
    json_decref(claims);

    json_t *me = it_call_as(s_stack, t.access, "GET", "/v1/me", NULL, 200);
    cr_assert(json_equal(me, user), "GET /v1/me is the account signed up");
    json_decref(me);

    /* PATCH changes what it names; null clears the country. */
    me = it_call_as(s_stack, t.access, "PATCH", "/v1/me",
                    it_pack("{s:s}", "display_name", "Alice B."), 200);
    cr_assert_str_eq(it_json_str(me, "display_name"), "Alice B.");
    cr_assert_str_eq(it_json_str(me, "country"), "SE");
    json_decref(me);
    me = it_call_as(s_stack, t.access, "PATCH", "/v1/me", it_pack("{s:n}", "country"), 200);
    cr_assert(json_is_null(json_object_get(me, "country")), "country cleared");
    cr_assert_str_eq(it_json_str(me, "display_name"), "Alice B.");
    json_decref(me);
    me = it_call_as(s_stack, t.access, "GET", "/v1/me", NULL, 200);
    cr_assert_str_eq(it_json_str(me, "display_name"), "Alice B.");
    cr_assert(json_is_null(json_object_get(me, "country")));
    json_decref(me);
    s_type(it_problem_as(s_stack, t.access, "PATCH", "/v1/me",
                         it_pack("{s:s}", "country", "Sweden"), 400, "body.country"),
           "about:blank");
    json_decref(it_problem_as(s_stack, t.access, "PATCH", "/v1/me",
                              it_pack("{s:s}", "email", "x@y.com"), 400, NULL));

    /* Wrong password and unknown account: one answer. */
    s_type(it_call_as(s_stack, NULL, "POST", "/v1/auth/login",
                      it_pack("{s:s, s:s}", "email", "alice@example.com", "password",
                              "not-the-password-1"),
                      401),
           "invalid_credentials");
    s_type(it_call_as(s_stack, NULL, "POST", "/v1/auth/login",
                      it_pack("{s:s, s:s}", "email", "nobody@example.com", "password", PASSWORD),
                      401),
           "invalid_credentials");

    s_tokens_free(&t);
    json_decref(user);
    free(id);
}

/* ---- refresh ----------------------------------------------------------------------- */

Test(auth_http, refresh_rotates_and_reuse_revokes_the_family)
{
    free(s_signup("rotate@example.com"));
    s_tokens_t t0 = s_login("rotate@example.com", PASSWORD);
    s_tokens_t other = s_login("rotate@example.com", PASSWORD); /* a second session */

    s_tokens_t t1 = s_refresh(t0.refresh);
    cr_assert_str_neq(t1.refresh, t0.refresh, "a refresh answers a new refresh token");
    json_t *c0 = s_claims(t0.access), *c1 = s_claims(t1.access);
    cr_assert_str_eq(it_json_str(c1, "sid"), it_json_str(c0, "sid"), "same session");
    cr_assert_str_neq(it_json_str(c1, "jti"), it_json_str(c0, "jti"), "a new access token");
    json_decref(c0);
    json_decref(c1);
    json_decref(it_call_as(s_stack, t1.access, "GET", "/v1/me", NULL, 200));
    s_tokens_t t2 = s_refresh(t1.refresh);

    /* t1's refresh token was spent: using it again is reuse. The whole
       family goes, so the newest token (t2's) fails too. */
    s_refresh_refused(t1.refresh, "refresh_token_reused");
    s_refresh_refused(t2.refresh, "invalid_refresh_token");
    s_refresh_refused(t0.refresh, "invalid_refresh_token");
    /* Another session of the same user is not part of that family. */
    s_tokens_t o1 = s_refresh(other.refresh);

    /* Not a token at all / a well-formed one nobody issued. */
    json_decref(it_problem_as(s_stack, NULL, "POST", "/v1/auth/refresh",
                              it_pack("{s:s}", "refresh_token", "short"), 400,
                              "body.refresh_token"));
    s_refresh_refused("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "invalid_refresh_token");

    s_tokens_free(&o1);
    s_tokens_free(&t2);
    s_tokens_free(&t1);
    s_tokens_free(&other);
    s_tokens_free(&t0);
}

Test(auth_http, logout_revokes_the_session)
{
    free(s_signup("leaving@example.com"));
    s_tokens_t t = s_login("leaving@example.com", PASSWORD);
    s_tokens_t kept = s_login("leaving@example.com", PASSWORD);
    json_decref(it_call_as(s_stack, NULL, "POST", "/v1/auth/logout", NULL, 401));
    json_decref(it_call_as(s_stack, t.access, "POST", "/v1/auth/logout", NULL, 204));
    s_refresh_refused(t.refresh, "invalid_refresh_token");
    /* Access tokens are stateless: the one in hand works until it expires
       (gateway/README.md, "Revocation takes effect within the access-token
       lifetime at most"). */
    json_decref(it_call_as(s_stack, t.access, "GET", "/v1/me", NULL, 200));
    /* Only that session ended. */
    s_tokens_t k1 = s_refresh(kept.refresh);
    s_tokens_free(&k1);
    s_tokens_free(&kept);
    s_tokens_free(&t);
}

Test(auth_http, password_change_revokes_every_session)
{
    free(s_signup("changer@example.com"));
    s_tokens_t a = s_login("changer@example.com", PASSWORD);
    s_tokens_t b = s_login("changer@example.com", PASSWORD);
    const char *next = "a-brand-new-passphrase";

    s_type(it_problem_as(s_stack, a.access, "POST", "/v1/me/password",
                         it_pack("{s:s, s:s}", "current_password", "wrong-password-123",
                                 "new_password", next),
                         403, "body.current_password"),
           "wrong_password");
    s_type(
        it_problem_as(s_stack, a.access, "POST", "/v1/me/password",
                      it_pack("{s:s, s:s}", "current_password", PASSWORD, "new_password", "short"),
                      400, "body.new_password"),
        "password_too_short");
    /* Refused changes revoked nothing. */
    s_tokens_t a1 = s_refresh(a.refresh);

    json_decref(
        it_call_as(s_stack, a1.access, "POST", "/v1/me/password",
                   it_pack("{s:s, s:s}", "current_password", PASSWORD, "new_password", next), 204));
    s_refresh_refused(a1.refresh, "invalid_refresh_token");
    s_refresh_refused(b.refresh, "invalid_refresh_token");
    s_type(it_call_as(s_stack, NULL, "POST", "/v1/auth/login",
                      it_pack("{s:s, s:s}", "email", "changer@example.com", "password", PASSWORD),
                      401),
           "invalid_credentials");
    s_tokens_t c = s_login("changer@example.com", next);
    json_decref(it_call_as(s_stack, c.access, "GET", "/v1/me", NULL, 200));
    s_tokens_free(&c);
    s_tokens_free(&a1);
    s_tokens_free(&b);
    s_tokens_free(&a);
}

/* ---- roles and tiers ---------------------------------------------------------------- */

/* Asserts `res` is a 401/403 with the challenge `challenge` (exactly). */
static void s_challenge(it_http_res_t *res, long status, const char *challenge, const char *what)
{
    it_assert_problem(res, status, what);
    const char *got = it_http_header(res, "WWW-Authenticate");
    cr_assert(got && strcmp(got, challenge) == 0, "%s: WWW-Authenticate: expected [%s], got [%s]",
              what, challenge, got ? got : "(none)");
}

Test(auth_http, roles_and_tiers)
{
    char *id = s_signup("plain@example.com");
    s_tokens_t user = s_login("plain@example.com", PASSWORD);
    const char *admin = it_stack_admin_login(s_stack);
    cr_assert(admin);
    json_t *artist = it_pack("{s:s}", "name", "Gatekept");
    char *tier_path = s_path("/v1/users/%s/tier", id);
    it_http_res_t res;

    /* No token: 401 and the bare challenge. */
    s_send(&res, NULL, "POST", "/v1/artists", json_incref(artist));
    s_challenge(&res, 401, "Bearer realm=\"musicbus\"", "POST /v1/artists, no token");
    cr_assert_str_eq(it_json_str(res.json, "type"), "unauthenticated");
    it_http_res_release(&res);
    s_send(&res, NULL, "GET", "/v1/me", NULL);
    s_challenge(&res, 401, "Bearer realm=\"musicbus\"", "GET /v1/me, no token");
    it_http_res_release(&res);
    {
        /* Another scheme is no token either. */
        char *url = it_stack_url(s_stack, "/v1/me");
        const char *const headers[] = {"Authorization: Basic YWxpY2U6c2VjcmV0", NULL};
        it_http_opts_t opts = {.headers = headers};
        it_http_ex(&res, "GET", url, NULL, NULL, 0, &opts);
        s_challenge(&res, 401, "Bearer realm=\"musicbus\"", "GET /v1/me, Basic");
        it_http_res_release(&res);
        free(url);
    }

    /* A user: 403 on admin routes, with insufficient_scope. */
    static const char *const scope = "Bearer realm=\"musicbus\", error=\"insufficient_scope\", "
                                     "error_description=\"admin role required\"";
    s_send(&res, user.access, "POST", "/v1/artists", json_incref(artist));
    s_challenge(&res, 403, scope, "POST /v1/artists as a user");
    cr_assert_str_eq(it_json_str(res.json, "type"), "forbidden");
    it_http_res_release(&res);
    s_send(&res, user.access, "PUT", tier_path, it_pack("{s:s}", "tier", "premium"));
    s_challenge(&res, 403, scope, "PUT tier as a user");
    it_http_res_release(&res);
    s_send(&res, user.access, "DELETE", "/v1/artists/" NO_SUCH_ID, NULL);
    s_challenge(&res, 403, scope, "DELETE an artist as a user");
    it_http_res_release(&res);
    /* Reads stay public, with or without a token. */
    json_decref(it_call_as(s_stack, user.access, "GET", "/v1/artists/" NO_SUCH_ID, NULL, 404));
    json_decref(it_call_as(s_stack, NULL, "GET", "/v1/artists/" NO_SUCH_ID, NULL, 404));

    /* The admin may. */
    json_t *made = it_call_as(s_stack, admin, "POST", "/v1/artists", json_incref(artist), 201);
    json_decref(made);
    json_t *u =
        it_call_as(s_stack, admin, "PUT", tier_path, it_pack("{s:s}", "tier", "premium"), 200);
    cr_assert_str_eq(it_json_str(u, "tier"), "premium");
    cr_assert_str_eq(it_json_str(u, "id"), id);
    json_decref(u);
    json_decref(it_problem_as(s_stack, admin, "PUT", tier_path, it_pack("{s:s}", "tier", "gold"),
                              400, "body.tier"));
    json_decref(it_call_as(s_stack, admin, "PUT", "/v1/users/" NO_SUCH_ID "/tier",
                           it_pack("{s:s}", "tier", "premium"), 404));

    /* The account shows it at once; the next access token carries it. */
    u = it_call_as(s_stack, user.access, "GET", "/v1/me", NULL, 200);
    cr_assert_str_eq(it_json_str(u, "tier"), "premium");
    json_decref(u);
    json_t *old = s_claims(user.access);
    cr_assert_str_eq(it_json_str(old, "tier"), "free", "the token in hand is not changed");
    json_decref(old);
    s_tokens_t renewed = s_refresh(user.refresh);
    json_t *claims = s_claims(renewed.access);
    cr_assert_str_eq(it_json_str(claims, "tier"), "premium");
    json_decref(claims);
    /* Premium is no admin. */
    s_send(&res, renewed.access, "POST", "/v1/artists", json_incref(artist));
    s_challenge(&res, 403, scope, "POST /v1/artists as premium");
    it_http_res_release(&res);
    /* And the admin's token says so. */
    claims = s_claims(admin);
    const json_t *roles = json_object_get(claims, "roles");
    cr_assert_eq(json_array_size(roles), 2);
    cr_assert_str_eq(json_string_value(json_array_get(roles, 1)), "admin");
    json_decref(claims);

    s_tokens_free(&renewed);
    s_tokens_free(&user);
    free(tier_path);
    json_decref(artist);
    free(id);
}

/* ---- bad tokens --------------------------------------------------------------------- */

/* Asserts `token` is refused on a user route and an admin route with 401
   invalid_token and exactly `reason` as the error_description. */
static void s_bad_token(const char *token, const char *reason, const char *what)
{
    char challenge[256];
    snprintf(challenge, sizeof challenge,
             "Bearer realm=\"musicbus\", error=\"invalid_token\", error_description=\"%s\"",
             reason);
    static const char *const routes[][2] = {{"GET", "/v1/me"}, {"POST", "/v1/artists"}};
    for (size_t i = 0; i < 2; i++) {
        it_http_res_t res;
        s_send(&res, token, routes[i][0], routes[i][1],
               i ? it_pack("{s:s}", "name", "Forged") : NULL);
        char label[256];
        snprintf(label, sizeof label, "%s %s with %s", routes[i][0], routes[i][1], what);
        s_challenge(&res, 401, challenge, label);
        cr_assert_str_eq(it_json_str(res.json, "type"), "invalid_token", "%s", label);
        it_http_res_release(&res);
    }
}

Test(auth_http, bad_tokens_are_refused_with_the_reason)
{
    const char *admin = it_stack_admin_login(s_stack);
    cr_assert(admin);
    const char *sub = it_stack_admin_id(s_stack);
    size_t n = strlen(admin);

    /* Truncated: a signature too short, or no signature at all. */
    char *cut = strndup(admin, n - 4);
    s_bad_token(cut, "malformed signature", "a truncated token");
    free(cut);
    cut = strndup(admin, (size_t)(strrchr(admin, '.') - admin));
    s_bad_token(cut, "not three dot-separated parts", "a token without its signature");
    free(cut);

    /* Tampered: the payload swapped for one that claims more. */
    const char *dot1 = strchr(admin, '.'), *dot2 = strrchr(admin, '.');
    char payload[512];
    int m =
        snprintf(payload, sizeof payload,
                 "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"%s\",\"iat\":%lld,\"exp\":%lld,"
                 "\"jti\":\"x\",\"sid\":\"s\",\"tier\":\"premium\",\"roles\":[\"user\",\"admin\"]}",
                 MB_JWT_DEFAULT_ISS, MB_JWT_DEFAULT_AUD, sub, (long long)time(NULL),
                 (long long)time(NULL) + 86400);
    char *p64 = s_b64url(payload, (size_t)m);
    char *tampered = NULL;
    cr_assert(asprintf(&tampered, "%.*s.%s%s", (int)(dot1 - admin), admin, p64, dot2) > 0);
    s_bad_token(tampered, "bad signature", "a tampered payload");
    free(tampered);
    /* One flipped character of the signature. */
    tampered = strdup(admin);
    tampered[n - 2] = tampered[n - 2] == 'A' ? 'B' : 'A';
    s_bad_token(tampered, "bad signature", "a flipped signature character");
    free(tampered);

    /* alg none: no signature at all. */
    static const char none_header[] = "{\"alg\":\"none\",\"typ\":\"JWT\"}";
    char *h64 = s_b64url(none_header, sizeof none_header - 1);
    char *unsigned_token = NULL;
    cr_assert(asprintf(&unsigned_token, "%s.%s.", h64, p64) > 0);
    s_bad_token(unsigned_token, "alg must be HS256", "alg none");
    free(unsigned_token);
    free(h64);
    free(p64);

    /* Expired, signed with the stack's own secret (past the 30 s leeway). */
    char *expired = it_stack_sign(s_stack, sub, NULL, NULL, true, (int64_t)time(NULL) - 120);
    cr_assert(expired);
    s_bad_token(expired, "token expired", "an expired token");
    free(expired);

    /* Right claims, another secret. */
    static const char other_secret[] = "not-the-stack-secret-but-32-bytes-long!";
    mb_jwt_key_t *key = mb_jwt_key_new(other_secret, sizeof other_secret - 1);
    cr_assert(key);
    mb_jwt_policy_t policy = {.iss = MB_JWT_DEFAULT_ISS, .aud = MB_JWT_DEFAULT_AUD};
    mb_jwt_claims_t claims = {.roles = MB_ROLE_USER | MB_ROLE_ADMIN,
                              .iat = (int64_t)time(NULL),
                              .exp = (int64_t)time(NULL) + 600};
    snprintf(claims.sub, sizeof claims.sub, "%s", sub);
    snprintf(claims.sid, sizeof claims.sid, "s");
    snprintf(claims.tier, sizeof claims.tier, "free");
    char *forged = NULL;
    cr_assert_eq(mb_jwt_sign(key, &policy, &claims, &forged), 0);
    s_bad_token(forged, "bad signature", "another secret");
    free(forged);
    /* The stack's secret but another audience. */
    mb_jwt_key_destroy(&key);
    size_t secret_len;
    const char *secret = it_stack_secret(s_stack, &secret_len);
    key = mb_jwt_key_new(secret, secret_len);
    policy.aud = "someone-else";
    cr_assert_eq(mb_jwt_sign(key, &policy, &claims, &forged), 0);
    s_bad_token(forged, "wrong audience", "another audience");
    free(forged);
    mb_jwt_key_destroy(&key);

    /* Not a token at all. */
    s_bad_token("not-a-token", "not three dot-separated parts", "garbage");

    /* And the real one still works. */
    json_decref(it_call_as(s_stack, admin, "GET", "/v1/me", NULL, 200));
}

/* ---- bad input ------------------------------------------------------------------------ */

/* POSTs raw text to the sign-up route and asserts a 400 naming `field`
   (NULL: any). */
static void s_signup_raw(const char *text, const char *field)
{
    char *url = it_stack_url(s_stack, "/v1/auth/signup");
    it_http_res_t res;
    it_http(&res, "POST", url, "application/json", text, strlen(text), 0);
    char what[256];
    snprintf(what, sizeof what, "sign-up with %.200s", text);
    it_assert_problem(&res, 400, what);
    if (field) {
        const char *got = it_json_str(res.json, "field");
        cr_assert(got && strcmp(got, field) == 0, "%s: field %s, expected %s", what,
                  got ? got : "(none)", field);
    }
    it_http_res_release(&res);
    free(url);
}

/* Signs up with one field replaced by `value` (stolen) or left out
   (value NULL) and asserts 400 on `field` with problem type `type` (NULL:
   any). */
static void s_signup_bad(const char *name, json_t *value, const char *field, const char *type)
{
    json_t *body = it_pack("{s:s, s:s, s:s, s:s}", "email", "valid@example.com", "password",
                           PASSWORD, "display_name", "Valid", "country", "SE");
    if (value)
        json_object_set_new(body, name, value);
    else
        json_object_del(body, name);
    char *text = json_dumps(body, JSON_COMPACT);
    json_t *p = it_problem_as(s_stack, NULL, "POST", "/v1/auth/signup", body, 400, field);
    if (type)
        cr_assert_str_eq(it_json_str(p, "type"), type, "%s: %s", text, it_json_str(p, "detail"));
    free(text);
    json_decref(p);
}

/* A JSON string of n times `c`, then `tail` (may be NULL). */
static json_t *s_repeat(char c, size_t n, const char *tail)
{
    size_t t = tail ? strlen(tail) : 0;
    char *text = malloc(n + t + 1);
    memset(text, c, n);
    memcpy(text + n, tail ? tail : "", t + 1);
    json_t *s = json_string(text);
    free(text);
    return s;
}

Test(auth_http, bad_input_is_400_naming_the_field)
{
    /* Malformed JSON and bodies that are not objects. */
    s_signup_raw("{\"email\": ", "body");
    s_signup_raw("[\"email\"]", "body");
    s_signup_raw("{\"email\":\"a@b.com\",\"email\":\"c@d.com\"}", NULL);
    s_signup_raw("\"just a string\"", "body");

    /* Missing fields. */
    s_signup_bad("email", NULL, "body.email", NULL);
    s_signup_bad("password", NULL, "body.password", NULL);
    s_signup_bad("display_name", NULL, "body.display_name", NULL);
    s_signup_bad("country", NULL, "body.country", NULL);

    /* Wrong types. */
    s_signup_bad("email", json_integer(5), "body.email", NULL);
    s_signup_bad("password", json_true(), "body.password", NULL);
    s_signup_bad("display_name", json_pack("[s]", "x"), "body.display_name", NULL);
    s_signup_bad("country", json_null(), "body.country", NULL);
    s_signup_bad("unexpected", json_string("x"), NULL, NULL);

    /* Oversized: past the schema's limits (the gateway) and past the
       actor's rules (the users actor). */
    s_signup_bad("display_name", s_repeat('a', 101, NULL), "body.display_name", NULL);
    s_signup_bad("password", s_repeat('a', 1025, NULL), "body.password", NULL);
    s_signup_bad("password", s_repeat('b', 257, NULL), "body.password", "password_too_long");
    s_signup_bad("email", s_repeat('c', 400, "@example.com"), "body.email", NULL);
    s_signup_bad("email", s_repeat('c', 250, "@example.com"), "body.email", "invalid");
    s_signup_bad("email", s_repeat('d', 65, "@example.com"), "body.email", "invalid");

    /* The password policy. */
    s_signup_bad("password", json_string("short1"), "body.password", "password_too_short");
    s_signup_bad("password", json_string("password123"), "body.password", "password_too_common");
    s_signup_bad("password", json_string("zzzzzzzzzzzz"), "body.password", NULL);

    /* Emails that cannot be an account's. */
    static const char *const bad_emails[] = {
        "no-at-sign.example.com", "@example.com",     "someone@",       "someone@localhost",
        "two@@example.com",       "a b@example.com",  "a@-example.com", "a@example-.com",
        "a@exa mple.com",         "a<b>@example.com", "a@example..com", "a;b@example.com",
    };
    for (size_t i = 0; i < sizeof bad_emails / sizeof bad_emails[0]; i++)
        s_signup_bad("email", json_string(bad_emails[i]), "body.email", NULL);

    /* Other fields' rules. */
    s_signup_bad("country", json_string("se"), "body.country", NULL);
    s_signup_bad("country", json_string("SWE"), "body.country", NULL);
    s_signup_bad("display_name", json_string(""), "body.display_name", NULL);
    s_signup_bad("display_name", json_string("tab\there"), "body.display_name", NULL);

    /* Login and refresh. */
    json_decref(it_problem_as(s_stack, NULL, "POST", "/v1/auth/login",
                              it_pack("{s:s}", "email", "valid@example.com"), 400,
                              "body.password"));
    json_decref(it_problem_as(s_stack, NULL, "POST", "/v1/auth/login",
                              it_pack("{s:s, s:i}", "email", "valid@example.com", "password", 1),
                              400, "body.password"));
    json_decref(it_problem_as(s_stack, NULL, "POST", "/v1/auth/refresh", it_pack("{}"), 400,
                              "body.refresh_token"));
    json_decref(it_problem_as(
        s_stack, NULL, "POST", "/v1/auth/refresh",
        it_pack("{s:s}", "refresh_token", "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"), 400,
        "body.refresh_token"));

    /* None of that made an account: the valid body still signs up. */
    free(s_signup("valid@example.com"));
}

/* ---- the sign-in rate limit ------------------------------------------------------------- */

/* A tight sign-in budget for the limiter test alone: 4 at once, then one
   every 4 s (long enough that no token comes back while the burst is
   sent, even on a loaded machine). */
#define SIGNIN_BURST 4
#define SIGNIN_PERIOD_S 4
#define SIGNIN_SPEC "1/4s burst 4"

static void s_up_limited(void)
{
    it_stack_opts_t opts = {.catalogs = 1, .users = 1, .rate_signin = SIGNIN_SPEC};
    s_stack = it_stack_new(&opts);
    cr_assert(s_stack, "the stack did not start (see the log above)");
}

static long s_header_long(const it_http_res_t *res, const char *name)
{
    const char *v = it_http_header(res, name);
    cr_assert(v, "no %s header (status %ld)", name, res->status);
    char *end;
    long n = strtol(v, &end, 10);
    cr_assert(end != v && *end == '\0', "%s: %s is not a number", name, v);
    return n;
}

Test(auth_http_limits, a_burst_over_the_signin_budget_gets_429_then_passes_after_retry_after,
     .init = s_up_limited, .fini = s_down, .timeout = 120)
{
    json_t *login = it_pack("{s:s, s:s}", "email", "burst@example.com", "password", PASSWORD);
    it_http_res_t res;
    /* The sign-up counts on the same budget (per address and email). */
    free(s_signup("burst@example.com"));
    for (int i = 1; i < SIGNIN_BURST; i++) {
        s_send(&res, NULL, "POST", "/v1/auth/login", json_incref(login));
        cr_assert_eq(res.status, 200, "login %d: %ld %s", i, res.status, res.body);
        cr_assert_eq(s_header_long(&res, "RateLimit-Limit"), SIGNIN_BURST);
        cr_assert_geq(s_header_long(&res, "RateLimit-Remaining"), 0);
        cr_assert_geq(s_header_long(&res, "RateLimit-Reset"), 1);
        it_http_res_release(&res);
    }
    s_send(&res, NULL, "POST", "/v1/auth/login", json_incref(login));
    it_assert_problem(&res, 429, "the login past the burst");
    cr_assert_str_eq(it_json_str(res.json, "type"), "rate_limited");
    long retry = s_header_long(&res, "Retry-After");
    cr_assert(retry >= 1 && retry <= SIGNIN_PERIOD_S, "Retry-After %ld: one request every %d s",
              retry, SIGNIN_PERIOD_S);
    cr_assert_eq(s_header_long(&res, "RateLimit-Limit"), SIGNIN_BURST);
    cr_assert_eq(s_header_long(&res, "RateLimit-Remaining"), 0);
    cr_assert_geq(s_header_long(&res, "RateLimit-Reset"), retry);
    it_http_res_release(&res);

    /* Refused requests count nothing, so it stays refused, not worse... */
    s_send(&res, NULL, "POST", "/v1/auth/login", json_incref(login));
    it_assert_problem(&res, 429, "again at once");
    cr_assert_leq(s_header_long(&res, "Retry-After"), retry);
    it_http_res_release(&res);
    /* ...and the same address is limited whatever email it tries. */
    s_send(&res, NULL, "POST", "/v1/auth/login",
           it_pack("{s:s, s:s}", "email", "someone-else@example.com", "password", PASSWORD));
    it_assert_problem(&res, 429, "another email from the same address");
    it_http_res_release(&res);
    /* Other budgets are untouched. */
    json_decref(it_call_as(s_stack, NULL, "GET", "/v1/artists/" NO_SUCH_ID, NULL, 404));

    /* After Retry-After seconds, it passes. */
    usleep((useconds_t)retry * 1000000u + 100000u);
    s_send(&res, NULL, "POST", "/v1/auth/login", json_incref(login));
    cr_assert_eq(res.status, 200, "after Retry-After: %ld %s", res.status, res.body);
    s_tokens_t t = s_tokens_of(res.json);
    it_http_res_release(&res);
    json_decref(it_call_as(s_stack, t.access, "GET", "/v1/me", NULL, 200));
    s_tokens_free(&t);
    json_decref(login);
}
