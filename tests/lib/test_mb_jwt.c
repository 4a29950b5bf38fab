/*  mb_jwt: HS256 tokens signed and verified with libsodium.

    Tokens under test that mb_jwt_sign() did not make are built here from
    a header and payload written as JSON text, signed with libsodium's
    HMAC-SHA-256 directly (s_forge), or taken verbatim from a vector that
    openssl computed (see S_VECTOR). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mb_error.h"
#include "mb_jwt.h"
#include "mb_msgpack.h"

#define S_SECRET "musicbus-test-vector-secret-0123456789abcdef" /* 44 bytes */
#define S_NOW 1700000100                                        /* inside the vector's life */

/*  Computed outside musicbus, with the header {"typ":"JWT","alg":"HS256"}
    (keys in the other order than mb_jwt_sign writes, so the JSON path of
    the header check runs), an aud array, and the payload
    {"iss":"musicbus","aud":["other","musicbus-api"],"sub":"user-1",
     "iat":1700000000,"exp":1700000900,"jti":"jti-1","sid":"sid-1",
     "tier":"premium","roles":["user","admin"]}:
        b64u() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
        H=$(printf '%s' "$HEADER" | b64u); P=$(printf '%s' "$PAYLOAD" | b64u)
        S=$(printf '%s' "$H.$P" | openssl dgst -sha256 -hmac "$SECRET" -binary | b64u)
        echo "$H.$P.$S"                                                      */
#define S_VECTOR                                                                                   \
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9."                                                        \
    "eyJpc3MiOiJtdXNpY2J1cyIsImF1ZCI6WyJvdGhlciIsIm11c2ljYnVzLWFwaSJdLCJzdWIiOiJ1c2VyLTEiLCJpYXQi" \
    "OjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDkwMCwianRpIjoianRpLTEiLCJzaWQiOiJzaWQtMSIsInRpZXIiOiJwcmVt" \
    "aXVtIiwicm9sZXMiOlsidXNlciIsImFkbWluIl19."                                                    \
    "mv8TUf-p-NX5vYVOCqYcehqseMWemEHuN8pjeiG7aVE"

/*  The same payload signed by openssl as HS512. */
#define S_VECTOR_HS512                                                                             \
    "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9."                                                        \
    "eyJpc3MiOiJtdXNpY2J1cyIsImF1ZCI6WyJvdGhlciIsIm11c2ljYnVzLWFwaSJdLCJzdWIiOiJ1c2VyLTEiLCJpYXQi" \
    "OjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDkwMCwianRpIjoianRpLTEiLCJzaWQiOiJzaWQtMSIsInRpZXIiOiJwcmVt" \
    "aXVtIiwicm9sZXMiOlsidXNlciIsImFkbWluIl19."                                                    \
    "wiAGcb_0MjpzhyEC8IfI2WOp9jkuXmT0Oldttg6gbqiaHYPewynBu7kA6siqQPTR1FBbJ-OXI9KzWHbrwjd5mA"

/*  A payload with every claim, valid at S_NOW; %s slots let tests change
    one piece at a time. */
#define S_GOOD_HEADER "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define S_GOOD_CLAIMS                                                                              \
    "\"iss\":\"musicbus\",\"aud\":\"musicbus-api\",\"sub\":\"u1\",\"iat\":1700000000,"             \
    "\"jti\":\"j1\",\"sid\":\"s1\",\"tier\":\"free\",\"roles\":[\"user\"]"
#define S_GOOD_PAYLOAD "{" S_GOOD_CLAIMS ",\"exp\":1700000900}"

static mb_jwt_key_t *s_key;
static mb_jwt_policy_t s_policy;

static void s_setup(void)
{
    cr_assert_geq(sodium_init(), 0);
    s_key = mb_jwt_key_new(S_SECRET, strlen(S_SECRET));
    cr_assert_not_null(s_key);
    s_policy = (mb_jwt_policy_t){.iss = "musicbus", .aud = "musicbus-api", .leeway_s = 30};
}

static void s_teardown(void)
{
    mb_jwt_key_destroy(&s_key);
}

TestSuite(mb_jwt, .init = s_setup, .fini = s_teardown);

static char *s_b64u(const void *data, size_t len)
{
    size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *out = malloc(cap);
    sodium_bin2base64(out, cap, data, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return out;
}

/*  header.payload.signature from JSON text, HMAC-SHA-256 with `secret`. */
static char *s_forge(const char *header, const char *payload, const char *secret)
{
    char *h = s_b64u(header, strlen(header)), *p = s_b64u(payload, strlen(payload));
    char *signing;
    cr_assert(asprintf(&signing, "%s.%s", h, p) > 0);
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret, strlen(secret));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)signing, strlen(signing));
    crypto_auth_hmacsha256_final(&st, mac);
    char *s = s_b64u(mac, sizeof mac);
    char *token;
    cr_assert(asprintf(&token, "%s.%s", signing, s) > 0);
    free(h), free(p), free(signing), free(s);
    return token;
}

static int s_verify(const char *token, int64_t now, mb_jwt_claims_t *c, const char **why)
{
    return mb_jwt_verify(s_key, &s_policy, token, strlen(token), now, c, why);
}

/*  Asserts `token` is refused with `rc` and a reason containing `reason`. */
static void s_refused(const char *token, int rc, const char *reason)
{
    mb_jwt_claims_t c;
    const char *why = NULL;
    int got = s_verify(token, S_NOW, &c, &why);
    cr_assert_eq(got, rc, "verify gave %d (%s), expected %d (%s)", got, why ? why : "-", rc,
                 reason);
    cr_assert_not_null(why);
    cr_assert(strstr(why, reason), "reason '%s', expected '%s'", why, reason);
    cr_assert_str_empty(c.sub, "claims are cleared on failure");
}

static void s_forged_refused(const char *header, const char *payload, int rc, const char *reason)
{
    char *token = s_forge(header, payload, S_SECRET);
    s_refused(token, rc, reason);
    free(token);
}

static mb_jwt_claims_t s_claims(void)
{
    mb_jwt_claims_t c = {.roles = MB_ROLE_USER, .iat = S_NOW, .exp = S_NOW + 900};
    strcpy(c.sub, "4uLU6hMCjMI75M1A2tKUQC");
    strcpy(c.sid, "Zx9sQ2wE7rT5yU1iO3pA8s");
    strcpy(c.tier, "free");
    return c;
}

/* ---- usage --------------------------------------------------------------- */

Test(mb_jwt, usage_sign_then_verify)
{
    mb_jwt_claims_t in = s_claims();
    in.roles = MB_ROLE_USER | MB_ROLE_ADMIN;
    strcpy(in.tier, "premium");
    char *token = NULL;
    cr_assert_eq(mb_jwt_sign(s_key, &s_policy, &in, &token), 0);
    cr_assert_not_null(token);
    cr_assert_eq(strncmp(token, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.", 37), 0,
                 "header is {\"alg\":\"HS256\",\"typ\":\"JWT\"}");

    mb_jwt_claims_t out;
    const char *why = NULL;
    cr_assert_eq(s_verify(token, S_NOW + 10, &out, &why), 0, "%s", why);
    cr_assert_str_eq(out.sub, in.sub);
    cr_assert_str_eq(out.sid, in.sid);
    cr_assert_str_eq(out.tier, "premium");
    cr_assert_eq(out.roles, MB_ROLE_USER | MB_ROLE_ADMIN);
    cr_assert_eq(out.iat, S_NOW);
    cr_assert_eq(out.exp, S_NOW + 900);
    cr_assert_eq(strlen(out.jti), 22, "an empty jti gets a random id");
    free(token);
}

Test(mb_jwt, payload_has_the_registered_claims)
{
    mb_jwt_claims_t in = s_claims();
    strcpy(in.jti, "my-jti");
    char *token;
    cr_assert_eq(mb_jwt_sign(s_key, &s_policy, &in, &token), 0);
    char *dot1 = strchr(token, '.'), *dot2 = strrchr(token, '.');
    unsigned char payload[1024];
    size_t n;
    cr_assert_eq(sodium_base642bin(payload, sizeof payload, dot1 + 1, (size_t)(dot2 - dot1 - 1),
                                   NULL, &n, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                 0);
    json_t *p = json_loadb((const char *)payload, n, JSON_REJECT_DUPLICATES, NULL);
    cr_assert(json_is_object(p));
    cr_assert_str_eq(json_string_value(json_object_get(p, "iss")), "musicbus");
    cr_assert_str_eq(json_string_value(json_object_get(p, "aud")), "musicbus-api");
    cr_assert_str_eq(json_string_value(json_object_get(p, "sub")), in.sub);
    cr_assert_str_eq(json_string_value(json_object_get(p, "sid")), in.sid);
    cr_assert_str_eq(json_string_value(json_object_get(p, "jti")), "my-jti");
    cr_assert_str_eq(json_string_value(json_object_get(p, "tier")), "free");
    cr_assert(json_is_integer(json_object_get(p, "iat")));
    cr_assert_eq(json_integer_value(json_object_get(p, "exp")), S_NOW + 900);
    json_t *roles = json_object_get(p, "roles");
    cr_assert_eq(json_array_size(roles), 1);
    cr_assert_str_eq(json_string_value(json_array_get(roles, 0)), "user");
    cr_assert_eq(json_object_size(p), 9, "iss aud sub iat exp jti sid tier roles, nothing else");
    json_decref(p);
    free(token);
}

Test(mb_jwt, known_vector_made_by_openssl_verifies)
{
    mb_jwt_claims_t c;
    const char *why = NULL;
    cr_assert_eq(s_verify(S_VECTOR, S_NOW, &c, &why), 0, "%s", why);
    cr_assert_str_eq(c.sub, "user-1");
    cr_assert_str_eq(c.sid, "sid-1");
    cr_assert_str_eq(c.jti, "jti-1");
    cr_assert_str_eq(c.tier, "premium");
    cr_assert_eq(c.roles, MB_ROLE_USER | MB_ROLE_ADMIN);
    cr_assert_eq(c.iat, 1700000000);
    cr_assert_eq(c.exp, 1700000900);
}

/*  What a standard JWT implementation checks: HMAC-SHA-256 over
    "header.payload" with the secret, base64url without padding. Done here
    by the openssl command line, when there is one. */
Test(mb_jwt, signature_is_what_openssl_computes)
{
    if (system("command -v openssl >/dev/null 2>&1") != 0) {
        cr_skip_test("no openssl command");
        return;
    }
    mb_jwt_claims_t in = s_claims();
    char *token;
    cr_assert_eq(mb_jwt_sign(s_key, &s_policy, &in, &token), 0);
    char *dot2 = strrchr(token, '.');
    char *cmd;
    /* A token holds only [A-Za-z0-9_-.]: safe inside single quotes. */
    cr_assert(asprintf(&cmd,
                       "printf '%%s' '%.*s' | openssl dgst -sha256 -hmac '%s' -binary | "
                       "base64 -w0 | tr '+/' '-_' | tr -d '='",
                       (int)(dot2 - token), token, S_SECRET) > 0);
    FILE *out = popen(cmd, "r");
    cr_assert_not_null(out);
    char sig[128] = "";
    cr_assert_not_null(fgets(sig, sizeof sig, out));
    cr_assert_eq(pclose(out), 0);
    sig[strcspn(sig, "\n")] = '\0';
    cr_assert_str_eq(sig, dot2 + 1);
    free(cmd);
    free(token);
}

/* ---- refusals ---------------------------------------------------------------- */

Test(mb_jwt, truncated_token_is_refused)
{
    size_t len = strlen(S_VECTOR);
    mb_jwt_claims_t c;
    const char *why;
    for (size_t cut = 0; cut < len; cut++)
        cr_assert_neq(mb_jwt_verify(s_key, &s_policy, S_VECTOR, cut, S_NOW, &c, &why), 0,
                      "accepted the first %zu bytes", cut);
}

Test(mb_jwt, tampered_payload_is_refused)
{
    mb_jwt_claims_t in = s_claims();
    char *token;
    cr_assert_eq(mb_jwt_sign(s_key, &s_policy, &in, &token), 0);
    /* Swap the payload for one claiming admin, keeping header and signature. */
    char *dot1 = strchr(token, '.'), *dot2 = strrchr(token, '.');
    char *evil_payload = s_b64u(S_GOOD_PAYLOAD, strlen(S_GOOD_PAYLOAD));
    char *evil;
    cr_assert(asprintf(&evil, "%.*s.%s%s", (int)(dot1 - token), token, evil_payload, dot2) > 0);
    s_refused(evil, MB_EINVAL, "bad signature");
    /* And one flipped character in the payload. */
    dot1[5] = dot1[5] == 'A' ? 'B' : 'A';
    s_refused(token, MB_EINVAL, "");
    free(evil), free(evil_payload), free(token);
}

Test(mb_jwt, tampered_signature_is_refused)
{
    char token[] = S_VECTOR;
    char *sig = strrchr(token, '.') + 1;
    sig[3] = sig[3] == 'a' ? 'b' : 'a';
    s_refused(token, MB_EINVAL, "bad signature");
    /* The last character carries 4 spare bits: flipping them is not a
       second valid spelling of the same signature. */
    char token2[] = S_VECTOR;
    char *last = token2 + strlen(token2) - 1;
    cr_assert_eq(*last, 'E');
    *last = 'F';
    s_refused(token2, MB_EINVAL, "malformed signature");
}

Test(mb_jwt, other_secret_is_refused)
{
    char *token = s_forge(S_GOOD_HEADER, S_GOOD_PAYLOAD, "another-secret-of-at-least-32-bytes!!");
    s_refused(token, MB_EINVAL, "bad signature");
    free(token);
}

Test(mb_jwt, expired_is_refused_after_the_leeway)
{
    mb_jwt_claims_t c;
    const char *why;
    cr_assert_eq(s_verify(S_VECTOR, 1700000900 + 29, &c, &why), 0, "within the leeway");
    cr_assert_eq(s_verify(S_VECTOR, 1700000900 + 30, &c, &why), MB_ETIMEDOUT);
    cr_assert_str_eq(why, "token expired");
    s_policy.leeway_s = 0;
    cr_assert_eq(s_verify(S_VECTOR, 1700000899, &c, &why), 0);
    cr_assert_eq(s_verify(S_VECTOR, 1700000900, &c, &why), MB_ETIMEDOUT);
}

Test(mb_jwt, nbf_in_the_future_is_refused)
{
    s_forged_refused(S_GOOD_HEADER, "{" S_GOOD_CLAIMS ",\"exp\":1700000900,\"nbf\":1700000200}",
                     MB_EINVAL, "not valid yet");
    char *ok = s_forge(S_GOOD_HEADER, "{" S_GOOD_CLAIMS ",\"exp\":1700000900,\"nbf\":1700000120}",
                       S_SECRET);
    mb_jwt_claims_t c;
    const char *why;
    cr_assert_eq(s_verify(ok, S_NOW, &c, &why), 0, "nbf 20 s ahead is within the leeway: %s", why);
    free(ok);
}

Test(mb_jwt, wrong_issuer_or_audience_is_refused)
{
    s_policy.iss = "someone-else";
    s_refused(S_VECTOR, MB_EINVAL, "wrong issuer");
    s_policy.iss = "musicbus";
    s_policy.aud = "admin-api";
    s_refused(S_VECTOR, MB_EINVAL, "wrong audience");
    s_policy.aud = "musicbus-api";
    s_forged_refused(S_GOOD_HEADER,
                     "{\"aud\":\"musicbus-api\",\"sub\":\"u\",\"sid\":\"s\",\"tier\":\"free\","
                     "\"roles\":[],\"exp\":1700000900}",
                     MB_EINVAL, "wrong issuer");
    s_forged_refused(S_GOOD_HEADER,
                     "{\"iss\":\"musicbus\",\"aud\":[\"x\",\"y\"],\"sub\":\"u\",\"sid\":\"s\","
                     "\"tier\":\"free\",\"roles\":[],\"exp\":1700000900}",
                     MB_EINVAL, "wrong audience");
    s_forged_refused(S_GOOD_HEADER,
                     "{\"iss\":\"musicbus\",\"aud\":7,\"sub\":\"u\",\"sid\":\"s\","
                     "\"tier\":\"free\",\"roles\":[],\"exp\":1700000900}",
                     MB_EINVAL, "wrong audience");
}

Test(mb_jwt, alg_none_is_refused)
{
    /* Unsigned, as RFC 7519 6.1 spells it, and "signed" with the secret. */
    char *h = s_b64u("{\"alg\":\"none\"}", 14), *p = s_b64u(S_GOOD_PAYLOAD, strlen(S_GOOD_PAYLOAD));
    char *unsigned_token;
    cr_assert(asprintf(&unsigned_token, "%s.%s.", h, p) > 0);
    s_refused(unsigned_token, MB_EINVAL, "alg must be HS256");
    s_forged_refused("{\"alg\":\"none\",\"typ\":\"JWT\"}", S_GOOD_PAYLOAD, MB_EINVAL,
                     "alg must be HS256");
    s_forged_refused("{\"alg\":\"None\"}", S_GOOD_PAYLOAD, MB_EINVAL, "alg must be HS256");
    free(h), free(p), free(unsigned_token);
}

Test(mb_jwt, alg_hs512_and_other_headers_are_refused)
{
    s_refused(S_VECTOR_HS512, MB_EINVAL, "alg must be HS256");
    s_forged_refused("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", S_GOOD_PAYLOAD, MB_EINVAL, "alg");
    s_forged_refused("{\"alg\":\"hs256\"}", S_GOOD_PAYLOAD, MB_EINVAL, "alg");
    s_forged_refused("{\"typ\":\"JWT\"}", S_GOOD_PAYLOAD, MB_EINVAL, "alg");
    s_forged_refused("{\"alg\":\"HS256\",\"typ\":\"JWE\"}", S_GOOD_PAYLOAD, MB_EINVAL, "typ");
    s_forged_refused("{\"alg\":\"HS256\",\"kid\":\"k1\"}", S_GOOD_PAYLOAD, MB_EINVAL,
                     "other than alg");
    s_forged_refused("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", S_GOOD_PAYLOAD, MB_EINVAL,
                     "other than alg");
    s_forged_refused("{\"alg\":\"HS256\",\"alg\":\"HS256\"}", S_GOOD_PAYLOAD, MB_EINVAL,
                     "malformed header");
    s_forged_refused("[\"HS256\"]", S_GOOD_PAYLOAD, MB_EINVAL, "malformed header");

    /* Accepted: no typ, spaces, typ in lower case. */
    const char *fine[] = {"{\"alg\":\"HS256\"}", "{ \"alg\" : \"HS256\" , \"typ\" : \"JWT\" }",
                          "{\"typ\":\"jwt\",\"alg\":\"HS256\"}"};
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
        char *token = s_forge(fine[i], S_GOOD_PAYLOAD, S_SECRET);
        mb_jwt_claims_t c;
        const char *why;
        cr_assert_eq(s_verify(token, S_NOW, &c, &why), 0, "%s: %s", fine[i], why);
        free(token);
    }
}

Test(mb_jwt, missing_parts_are_refused)
{
    const char *sig = strrchr(S_VECTOR, '.') + 1;
    const char *bad[] = {"", ".", "..", "...", "abc", "abc.def", "eyJhbGciOiJIUzI1NiJ9..", sig};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mb_jwt_claims_t c;
        const char *why = NULL;
        cr_assert_eq(s_verify(bad[i], S_NOW, &c, &why), MB_EINVAL, "'%s' accepted", bad[i]);
        cr_assert_not_null(why);
    }
    char *four;
    cr_assert(asprintf(&four, "%s.%s", S_VECTOR, sig) > 0);
    s_refused(four, MB_EINVAL, "three");
    free(four);
    /* The header and payload, with an empty signature. */
    char no_sig[] = S_VECTOR;
    strrchr(no_sig, '.')[1] = '\0';
    s_refused(no_sig, MB_EINVAL, "malformed signature");
}

Test(mb_jwt, garbage_base64_is_refused)
{
    char token[] = S_VECTOR;
    char *dot1 = strchr(token, '.');
    dot1[3] = '+'; /* standard base64, not base64url */
    s_refused(token, MB_EINVAL, "");
    char padded[sizeof S_VECTOR + 2];
    snprintf(padded, sizeof padded, "%s==", S_VECTOR);
    s_refused(padded, MB_EINVAL, "malformed signature");
    s_refused("!!!!.????.$$$$", MB_EINVAL, "malformed header");
    s_refused(
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e y.mv8TUf-p-NX5vYVOCqYcehqseMWemEHuN8pjeiG7aVE",
        MB_EINVAL, "bad signature");
}

Test(mb_jwt, payload_must_be_a_json_object_with_the_claims)
{
    s_forged_refused(S_GOOD_HEADER, "[1,2]", MB_EINVAL, "not a JSON object");
    s_forged_refused(S_GOOD_HEADER, "{\"exp\":", MB_EINVAL, "not JSON");
    s_forged_refused(S_GOOD_HEADER, "{" S_GOOD_CLAIMS ",\"exp\":1700000900,\"sub\":\"u2\"}",
                     MB_EINVAL, "not JSON"); /* duplicate key */
    s_forged_refused(S_GOOD_HEADER, "{" S_GOOD_CLAIMS "}", MB_EINVAL, "exp");
    s_forged_refused(S_GOOD_HEADER, "{" S_GOOD_CLAIMS ",\"exp\":\"1700000900\"}", MB_EINVAL, "exp");
    s_forged_refused(S_GOOD_HEADER,
                     "{\"iss\":\"musicbus\",\"aud\":\"musicbus-api\",\"sid\":\"s\",\"tier\":"
                     "\"free\",\"roles\":[],\"exp\":1700000900}",
                     MB_EINVAL, "sub");
    s_forged_refused(S_GOOD_HEADER,
                     "{\"iss\":\"musicbus\",\"aud\":\"musicbus-api\",\"sub\":\"\",\"sid\":\"s\","
                     "\"tier\":\"free\",\"roles\":[],\"exp\":1700000900}",
                     MB_EINVAL, "sub");
    s_forged_refused(S_GOOD_HEADER,
                     "{\"iss\":\"musicbus\",\"aud\":\"musicbus-api\",\"sub\":\"u\",\"tier\":"
                     "\"free\",\"roles\":[],\"exp\":1700000900}",
                     MB_EINVAL, "sid");
    s_forged_refused(S_GOOD_HEADER,
                     "{\"iss\":\"musicbus\",\"aud\":\"musicbus-api\",\"sub\":\"u\",\"sid\":\"s\","
                     "\"roles\":[],\"exp\":1700000900}",
                     MB_EINVAL, "tier");
    s_forged_refused(S_GOOD_HEADER,
                     "{\"iss\":\"musicbus\",\"aud\":\"musicbus-api\",\"sub\":\"u\",\"sid\":\"s\","
                     "\"tier\":\"free\",\"roles\":\"admin\",\"exp\":1700000900}",
                     MB_EINVAL, "roles");
    s_forged_refused(S_GOOD_HEADER,
                     "{\"iss\":\"musicbus\",\"aud\":\"musicbus-api\",\"sub\":\"u\",\"sid\":\"s\","
                     "\"tier\":\"free\",\"roles\":[1],\"exp\":1700000900}",
                     MB_EINVAL, "roles");
    /* A sub longer than MB_JWT_ID_MAX. */
    char payload[512];
    snprintf(payload, sizeof payload,
             "{\"iss\":\"musicbus\",\"aud\":\"musicbus-api\",\"sub\":\"%0*d\",\"sid\":\"s\","
             "\"tier\":\"free\",\"roles\":[],\"exp\":1700000900}",
             MB_JWT_ID_MAX + 1, 0);
    s_forged_refused(S_GOOD_HEADER, payload, MB_EINVAL, "sub");
}

Test(mb_jwt, unknown_roles_give_no_bits)
{
    char *token = s_forge(S_GOOD_HEADER,
                          "{\"iss\":\"musicbus\",\"aud\":\"musicbus-api\",\"sub\":\"u\",\"sid\":"
                          "\"s\",\"tier\":\"free\",\"roles\":[\"root\",\"Admin\"],"
                          "\"exp\":1700000900.75}",
                          S_SECRET);
    mb_jwt_claims_t c;
    const char *why;
    cr_assert_eq(s_verify(token, S_NOW, &c, &why), 0, "%s", why);
    cr_assert_eq(c.roles, 0);
    cr_assert_eq(c.exp, 1700000900, "a fractional NumericDate is accepted");
    cr_assert_eq(c.iat, 0);
    cr_assert_str_empty(c.jti);
    free(token);
}

Test(mb_jwt, oversized_token_is_refused_unread)
{
    size_t len = MB_JWT_TOKEN_MAX + 1;
    char *big = malloc(len + 1);
    memset(big, 'A', len);
    big[len] = '\0';
    memcpy(big, S_VECTOR, strlen(S_VECTOR));
    mb_jwt_claims_t c;
    const char *why;
    cr_assert_eq(mb_jwt_verify(s_key, &s_policy, big, len, S_NOW, &c, &why), MB_ETOOBIG);
    cr_assert_str_eq(why, "token too long");

    /* Just under the limit, validly signed: the size is no problem in itself. */
    char *payload = malloc(MB_JWT_TOKEN_MAX);
    int n = snprintf(payload, MB_JWT_TOKEN_MAX, "{" S_GOOD_CLAIMS ",\"exp\":1700000900,\"pad\":\"");
    memset(payload + n, 'x', 5800);
    strcpy(payload + n + 5800, "\"}");
    char *token = s_forge(S_GOOD_HEADER, payload, S_SECRET);
    cr_assert_leq(strlen(token), MB_JWT_TOKEN_MAX);
    cr_assert_eq(s_verify(token, S_NOW, &c, &why), 0, "%s", why);
    free(token), free(payload), free(big);
}

Test(mb_jwt, sign_refuses_incomplete_claims)
{
    char *token = (char *)1;
    mb_jwt_claims_t c = s_claims();
    c.sub[0] = '\0';
    cr_assert_eq(mb_jwt_sign(s_key, &s_policy, &c, &token), MB_EINVAL);
    cr_assert_null(token);
    c = s_claims();
    c.roles = 0;
    cr_assert_eq(mb_jwt_sign(s_key, &s_policy, &c, &token), MB_EINVAL);
    c = s_claims();
    c.tier[0] = '\0';
    cr_assert_eq(mb_jwt_sign(s_key, &s_policy, &c, &token), MB_EINVAL);
    c = s_claims();
    mb_jwt_policy_t no_iss = {.aud = "a"};
    cr_assert_eq(mb_jwt_sign(s_key, &no_iss, &c, &token), MB_EINVAL);
    strcpy(c.sub, "\xff\xfe not utf-8");
    cr_assert_eq(mb_jwt_sign(s_key, &s_policy, &c, &token), MB_EINVAL);
}

/* ---- keys ----------------------------------------------------------------------- */

Test(mb_jwt, key_needs_32_bytes)
{
    cr_assert_null(mb_jwt_key_new("0123456789abcdef0123456789abcde", 31));
    mb_jwt_key_t *k = mb_jwt_key_new("0123456789abcdef0123456789abcdef", 32);
    cr_assert_not_null(k);
    mb_jwt_key_destroy(&k);
    cr_assert_null(k);
    mb_jwt_key_destroy(&k); /* twice is fine */
}

static char s_file[64];

static void s_write_file(const char *content)
{
    strcpy(s_file, "/tmp/test_mb_jwt.XXXXXX");
    int fd = mkstemp(s_file);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
}

Test(mb_jwt, key_load_from_env_and_files)
{
    mb_jwt_key_t *k = (mb_jwt_key_t *)1;
    unsetenv(MB_JWT_ENV_SECRET);
    unsetenv(MB_JWT_ENV_SECRET_FILE);
    cr_assert_eq(mb_jwt_key_load(NULL, &k), MB_ENOTFOUND);
    cr_assert_null(k);

    setenv(MB_JWT_ENV_SECRET, "too short", 1);
    cr_assert_eq(mb_jwt_key_load(NULL, &k), MB_EINVAL);
    setenv(MB_JWT_ENV_SECRET, S_SECRET, 1);
    cr_assert_eq(mb_jwt_key_load(NULL, &k), 0);
    mb_jwt_claims_t c;
    const char *why;
    cr_assert_eq(mb_jwt_verify(k, &s_policy, S_VECTOR, strlen(S_VECTOR), S_NOW, &c, &why), 0);
    mb_jwt_key_destroy(&k);

    /* A file: its trailing newline is not part of the secret. */
    s_write_file(S_SECRET "\n");
    cr_assert_eq(mb_jwt_key_load(s_file, &k), 0, "the flag's file wins over the environment");
    cr_assert_eq(mb_jwt_verify(k, &s_policy, S_VECTOR, strlen(S_VECTOR), S_NOW, &c, &why), 0);
    mb_jwt_key_destroy(&k);
    unsetenv(MB_JWT_ENV_SECRET);
    setenv(MB_JWT_ENV_SECRET_FILE, s_file, 1);
    cr_assert_eq(mb_jwt_key_load(NULL, &k), 0);
    mb_jwt_key_destroy(&k);
    unlink(s_file);

    s_write_file("short\n");
    cr_assert_eq(mb_jwt_key_load(s_file, &k), MB_EINVAL);
    unlink(s_file);
    cr_assert_eq(mb_jwt_key_load(s_file, &k), MB_EIO, "a missing file");
    cr_assert_null(k);
    unsetenv(MB_JWT_ENV_SECRET_FILE);
}

Test(mb_jwt, policy_defaults_and_env)
{
    unsetenv(MB_JWT_ENV_ISS);
    unsetenv(MB_JWT_ENV_AUD);
    unsetenv(MB_JWT_ENV_LEEWAY);
    mb_jwt_policy_t p;
    mb_jwt_policy_default(&p);
    cr_assert_str_eq(p.iss, "musicbus");
    cr_assert_str_eq(p.aud, "musicbus-api");
    cr_assert_eq(p.leeway_s, 30);
    setenv(MB_JWT_ENV_ISS, "iss2", 1);
    setenv(MB_JWT_ENV_AUD, "aud2", 1);
    setenv(MB_JWT_ENV_LEEWAY, "5", 1);
    mb_jwt_policy_default(&p);
    cr_assert_str_eq(p.iss, "iss2");
    cr_assert_str_eq(p.aud, "aud2");
    cr_assert_eq(p.leeway_s, 5);
}

/* ---- the auth map -------------------------------------------------------------- */

Test(mb_jwt, auth_map_round_trip)
{
    mb_jwt_claims_t in = s_claims();
    in.roles = MB_ROLE_USER | MB_ROLE_ADMIN;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    mb_jwt_pack_auth(&pk, &in);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    cr_assert_eq(msgpack_unpack_next(&u, buf.data, buf.size, NULL), MSGPACK_UNPACK_SUCCESS);
    cr_assert_eq(u.data.via.map.size, 4);
    cr_assert(mb_obj_str_eq(mb_map_get(&u.data, "user"), in.sub));
    cr_assert(mb_obj_str_eq(mb_map_get(&u.data, "sid"), in.sid));
    cr_assert(mb_obj_str_eq(mb_map_get(&u.data, "tier"), "free"));
    const msgpack_object *roles = mb_map_get(&u.data, "roles");
    cr_assert_eq(roles->via.array.size, 2);
    cr_assert(mb_obj_str_eq(&roles->via.array.ptr[0], "user"));
    cr_assert(mb_obj_str_eq(&roles->via.array.ptr[1], "admin"));

    mb_jwt_claims_t out;
    cr_assert_eq(mb_jwt_read_auth(&u.data, &out), 0);
    cr_assert_str_eq(out.sub, in.sub);
    cr_assert_str_eq(out.sid, in.sid);
    cr_assert_str_eq(out.tier, "free");
    cr_assert_eq(out.roles, in.roles);
    cr_assert_eq(mb_jwt_read_auth(NULL, &out), MB_EINVAL);
    cr_assert_eq(mb_jwt_read_auth(roles, &out), MB_EINVAL, "not a map");
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&buf);
}

/*  Not a benchmark, a guard: verification must stay cheap enough for the
    gateway to run on every request. Prints the figure. */
Test(mb_jwt, verify_is_cheap)
{
    mb_jwt_claims_t in = s_claims();
    char *token;
    cr_assert_eq(mb_jwt_sign(s_key, &s_policy, &in, &token), 0);
    size_t len = strlen(token);
    enum { N = 20000 };
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    mb_jwt_claims_t c;
    const char *why;
    for (int i = 0; i < N; i++)
        cr_assert_eq(mb_jwt_verify(s_key, &s_policy, token, len, S_NOW, &c, &why), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double us =
        ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / N / 1e3;
    fprintf(stderr, "mb_jwt_verify: %.2f us per %zu-byte token\n", us, len);
    cr_assert_lt(us, 200.0, "verify took %.1f us", us);
    free(token);
}

Test(mb_jwt, cache_answers_the_same_and_still_expires)
{
    mb_jwt_cache_t *cache = mb_jwt_cache_new(4);
    mb_jwt_claims_t c1, c2;
    const char *why = NULL;
    size_t len = strlen(S_VECTOR);
    cr_assert_eq(mb_jwt_verify_cached(cache, s_key, &s_policy, S_VECTOR, len, S_NOW, &c1, &why), 0);
    cr_assert_eq(mb_jwt_verify_cached(cache, s_key, &s_policy, S_VECTOR, len, S_NOW, &c2, &why), 0);
    cr_assert_eq(memcmp(&c1, &c2, sizeof c1), 0, "a hit gives the claims a miss gave");
    cr_assert_str_eq(c2.sub, "user-1");
    cr_assert_eq(
        mb_jwt_verify_cached(cache, s_key, &s_policy, S_VECTOR, len, 1700000900 + 30, &c2, &why),
        MB_ETIMEDOUT, "a cached token expires");
    cr_assert_str_eq(why, "token expired");
    cr_assert_str_empty(c2.sub);

    /* A different signature is no hit, and refused. */
    char token[] = S_VECTOR;
    char *sig = strrchr(token, '.') + 1;
    sig[0] = sig[0] == 'a' ? 'b' : 'a';
    cr_assert_eq(mb_jwt_verify_cached(cache, s_key, &s_policy, token, len, S_NOW, &c2, &why),
                 MB_EINVAL);
    cr_assert_str_eq(why, "bad signature");
    /* nbf is checked on hits too. */
    char *later = s_forge(S_GOOD_HEADER,
                          "{" S_GOOD_CLAIMS ",\"exp\":1700000900,\"nbf\":1700000120}", S_SECRET);
    cr_assert_eq(
        mb_jwt_verify_cached(cache, s_key, &s_policy, later, strlen(later), S_NOW, &c2, &why), 0);
    cr_assert_eq(
        mb_jwt_verify_cached(cache, s_key, &s_policy, later, strlen(later), S_NOW - 100, &c2, &why),
        MB_EINVAL);
    cr_assert_str_eq(why, "token not valid yet");
    free(later);
    mb_jwt_cache_destroy(&cache);
    cr_assert_null(cache);
    mb_jwt_cache_destroy(&cache);
}

Test(mb_jwt, cache_hits_are_cheaper)
{
    mb_jwt_claims_t in = s_claims();
    char *token;
    cr_assert_eq(mb_jwt_sign(s_key, &s_policy, &in, &token), 0);
    size_t len = strlen(token);
    mb_jwt_cache_t *cache = mb_jwt_cache_new(64);
    enum { N = 20000 };
    struct timespec t0, t1;
    mb_jwt_claims_t c;
    const char *why;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(mb_jwt_verify_cached(cache, s_key, &s_policy, token, len, S_NOW, &c, &why), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double us =
        ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / N / 1e3;
    fprintf(stderr, "mb_jwt_verify_cached: %.2f us per hit\n", us);
    cr_assert_str_eq(c.sub, in.sub);
    cr_assert_lt(us, 20.0);
    mb_jwt_cache_destroy(&cache);
    free(token);
}
