/*  lib/mb_jwt against an independent JWT implementation, both ways:
    tokens signed by jose (node, jwt_interop/interop.mjs) go through the
    gateway's check (gw_auth_check, i.e. mb_jwt_verify_cached), and tokens
    musicbus signs (mb_jwt_sign) are verified by jose.

    Needs node; skipped, saying so, only when node is not installed. The
    first run installs jose with `npm ci` into the build folder's copy of
    jwt_interop/ (GW_INTEROP_DIR), from package-lock.json. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "mb_error.h"
#include "mb_jwt.h"

#define S_SECRET "interop-secret-with-32-or-more-bytes-in-it"
#define S_OTHER "some-other-secret-with-32-or-more-bytes!!"

static mb_jwt_policy_t s_policy = {.iss = "musicbus", .aud = "musicbus-api", .leeway_s = 30};

static void s_setup(void)
{
    if (system("command -v node >/dev/null 2>&1") != 0)
        cr_skip_test("node is not installed: the JWT interop test with jose is skipped");
    struct stat st;
    if (stat(GW_INTEROP_DIR "/node_modules/jose/package.json", &st) != 0) {
        fprintf(stderr, "test_gw_jwt_interop: npm ci in %s\n", GW_INTEROP_DIR);
        int rc = system("npm ci --prefix '" GW_INTEROP_DIR "' --no-audit --no-fund "
                        "--loglevel=error >&2");
        cr_assert_eq(rc, 0, "npm ci failed in %s (is the npm registry reachable?)", GW_INTEROP_DIR);
    }
}

TestSuite(gw_jwt_interop, .init = s_setup, .timeout = 240);

/*  Runs `node interop.mjs ARGS` with the secret in the environment and
    `stdin_text` (or nothing) on its stdin; returns its exit code and its
    stdout (caller frees) in *out. */
static int s_node(const char *secret, const char *stdin_text, const char *args, char **out)
{
    setenv("MUSICBUS_JWT_SECRET", secret, 1);
    char *cmd = NULL;
    /* Tokens are base64url and dots, claims JSON without single quotes:
       both are safe inside single quotes. */
    cr_assert(asprintf(&cmd, "printf '%%s' '%s' | node '%s/interop.mjs' %s",
                       stdin_text ? stdin_text : "", GW_INTEROP_DIR, args) > 0);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = '\0';
    int status = pclose(p);
    free(cmd);
    buf[strcspn(buf, "\n")] = '\0';
    *out = strdup(buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/*  A token jose signs for `claims` with `alg`. */
static char *s_jose_sign(const char *secret, const char *claims, const char *alg)
{
    char *args = NULL, *token = NULL;
    cr_assert(asprintf(&args, "sign '%s' %s", claims, alg) > 0);
    int rc = s_node(secret, NULL, args, &token);
    cr_assert_eq(rc, 0, "jose could not sign");
    cr_assert_gt(strlen(token), 10);
    free(args);
    return token;
}

static gw_auth_t *s_auth(void)
{
    mb_jwt_key_t *key = mb_jwt_key_new(S_SECRET, strlen(S_SECRET));
    return gw_auth_new(&key, &s_policy, 64);
}

/*  The gateway's verdict on `token` for an admin route. */
static int s_check(gw_auth_t *auth, const char *token, mb_jwt_claims_t *claims,
                   gw_auth_result_t *res)
{
    char *header = NULL;
    cr_assert(asprintf(&header, "Bearer %s", token) > 0);
    int rc = gw_auth_check(auth, GW_ACCESS_ADMIN, header, (int64_t)time(NULL), claims, res);
    free(header);
    return rc;
}

static char *s_claims(const char *aud_json, long exp_from_now)
{
    long now = (long)time(NULL);
    char *claims = NULL;
    cr_assert(asprintf(&claims,
                       "{\"iss\":\"musicbus\",\"aud\":%s,\"sub\":\"user-from-jose\","
                       "\"sid\":\"sess-1\",\"tier\":\"premium\",\"roles\":[\"user\",\"admin\"],"
                       "\"iat\":%ld,\"exp\":%ld,\"jti\":\"jose-1\"}",
                       aud_json, now, now + exp_from_now) > 0);
    return claims;
}

/*  Usage: jose signs, the gateway accepts and reads every claim. */
Test(gw_jwt_interop, jose_token_accepted_by_the_gateway)
{
    gw_auth_t *auth = s_auth();
    const char *auds[] = {"\"musicbus-api\"", "[\"other-api\",\"musicbus-api\"]"};
    for (size_t i = 0; i < 2; i++) {
        char *claims = s_claims(auds[i], 900);
        char *token = s_jose_sign(S_SECRET, claims, "HS256");
        mb_jwt_claims_t c;
        gw_auth_result_t res;
        for (int pass = 0; pass < 2; pass++) { /* verified, then from the cache */
            cr_assert_eq(s_check(auth, token, &c, &res), 0, "refused (%s): %s", auds[i],
                         res.reason ? res.reason : "?");
            cr_assert_str_eq(c.sub, "user-from-jose");
            cr_assert_str_eq(c.sid, "sess-1");
            cr_assert_str_eq(c.jti, "jose-1");
            cr_assert_str_eq(c.tier, "premium");
            cr_assert_eq(c.roles, MB_ROLE_USER | MB_ROLE_ADMIN);
        }
        free(token);
        free(claims);
    }
    gw_auth_destroy(&auth);
}

Test(gw_jwt_interop, jose_tokens_the_gateway_refuses)
{
    gw_auth_t *auth = s_auth();
    char *good = s_claims("\"musicbus-api\"", 900);
    char *expired = s_claims("\"musicbus-api\"", -3600);
    char *wrong_aud = s_claims("\"someone-else\"", 900);
    struct {
        const char *secret, *claims, *alg, *reason;
    } cases[] = {
        {S_SECRET, good, "HS384", "alg must be HS256"},
        {S_SECRET, good, "HS512", "alg must be HS256"},
        {S_SECRET, good, "none", "alg must be HS256"},
        {S_OTHER, good, "HS256", "bad signature"},
        {S_SECRET, expired, "HS256", "token expired"},
        {S_SECRET, wrong_aud, "HS256", "wrong audience"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *token = s_jose_sign(cases[i].secret, cases[i].claims, cases[i].alg);
        mb_jwt_claims_t c;
        gw_auth_result_t res;
        cr_assert_eq(s_check(auth, token, &c, &res), MB_EINVAL, "accepted: %s", cases[i].reason);
        cr_assert_eq(res.status, 401);
        cr_assert_str_eq(res.reason, cases[i].reason);
        free(token);
    }
    free(good);
    free(expired);
    free(wrong_aud);
    gw_auth_destroy(&auth);
}

Test(gw_jwt_interop, musicbus_token_verified_by_jose)
{
    mb_jwt_key_t *key = mb_jwt_key_new(S_SECRET, strlen(S_SECRET));
    mb_jwt_claims_t c = {.sub = "u-42", .sid = "s-42", .tier = "free", .roles = MB_ROLE_USER};
    c.iat = time(NULL);
    c.exp = c.iat + 900;
    char *token = NULL;
    cr_assert_eq(mb_jwt_sign(key, &s_policy, &c, &token), 0);

    char *out = NULL;
    int rc = s_node(S_SECRET, token, "verify musicbus musicbus-api", &out);
    cr_assert_eq(rc, 0, "jose refused a musicbus token: %s", out);
    json_t *doc = json_loads(out, 0, NULL);
    cr_assert_not_null(doc, "jose printed: %s", out);
    json_t *header = json_object_get(doc, "header"), *payload = json_object_get(doc, "payload");
    cr_assert_str_eq(json_string_value(json_object_get(header, "alg")), "HS256");
    cr_assert_str_eq(json_string_value(json_object_get(header, "typ")), "JWT");
    cr_assert_str_eq(json_string_value(json_object_get(payload, "sub")), "u-42");
    cr_assert_str_eq(json_string_value(json_object_get(payload, "sid")), "s-42");
    cr_assert_str_eq(json_string_value(json_object_get(payload, "tier")), "free");
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(payload, "roles"), 0)),
                     "user");
    cr_assert_eq(json_integer_value(json_object_get(payload, "exp")), c.exp);
    cr_assert_gt(json_string_length(json_object_get(payload, "jti")), 0, "a random jti");
    json_decref(doc);
    free(out);

    /* jose is not a pushover either: another secret, a changed byte, the
       wrong audience. */
    rc = s_node(S_OTHER, token, "verify musicbus musicbus-api", &out);
    cr_assert_neq(rc, 0, "jose took a token under another secret");
    free(out);
    char *tampered = strdup(token);
    char *last = tampered + strlen(tampered) - 2;
    *last = *last == 'A' ? 'B' : 'A';
    rc = s_node(S_SECRET, tampered, "verify musicbus musicbus-api", &out);
    cr_assert_neq(rc, 0, "jose took a tampered token");
    free(out);
    rc = s_node(S_SECRET, token, "verify musicbus other-api", &out);
    cr_assert_neq(rc, 0, "jose took the wrong audience");
    free(out);
    free(tampered);
    free(token);
    mb_jwt_key_destroy(&key);
}
