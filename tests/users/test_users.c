/*  users actor: every op driven through mb_actor_dispatch() with real
    encoded envelopes, against an LMDB environment in a temporary folder.

    Arguments are written as JSON (jansson) and packed to msgpack the way
    the gateway does; the auth map of a signed-in call is made the way the
    gateway makes it: the access token verified with mb_jwt_verify(), its
    claims packed with mb_jwt_pack_auth(). Argon2id runs at its lowest cost
    here (MUSICBUS_PWHASH_OPSLIMIT=1, MUSICBUS_PWHASH_MEMLIMIT=8192), except
    in the timing suite. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <lmdb.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "actor_harness.h"
#include "mb_actor.h"
#include "mb_envelope.h"
#include "mb_error.h"
#include "mb_events.h"
#include "mb_jwt.h"
#include "mb_msgpack.h"
#include "users.h"
#include "users_admin.h"
#include "users_crypto.h"

#define S_SECRET "users-test-secret-0123456789abcdef0123456789" /* >= 32 bytes */
#define S_PASSWORD "correct horse battery"

/* ---- harness -------------------------------------------------------------- */

/*  A signed-in client: what login answered, and the auth map the gateway
    would make of its access token. */
typedef struct {
    char access[1024];
    char refresh[64];
    mb_jwt_claims_t claims;
} session_t;

static mb_jwt_key_t *s_key;
static mb_jwt_policy_t s_policy;

static void s_env_for_tests(void)
{
    setenv("MUSICBUS_JWT_SECRET", S_SECRET, 1);
    unsetenv("MUSICBUS_JWT_SECRET_FILE");
    unsetenv("MUSICBUS_JWT_ISS");
    unsetenv("MUSICBUS_JWT_AUD");
    unsetenv("MUSICBUS_ACCESS_TTL");
    unsetenv("MUSICBUS_REFRESH_TTL");
    unsetenv("MUSICBUS_ADMIN_PASSWORD");
    setenv("MUSICBUS_PWHASH_OPSLIMIT", "1", 1);
    setenv("MUSICBUS_PWHASH_MEMLIMIT", "8192", 1);
    setenv("MUSICBUS_LOG_LEVEL", "warn", 1);
}

static void s_open(void)
{
    th_open(users_actor_def(), "test_users", 0);
    s_key = mb_jwt_key_new(S_SECRET, strlen(S_SECRET));
    mb_jwt_policy_default(&s_policy);
}

static void s_setup(void)
{
    s_env_for_tests();
    s_open();
}

static void s_teardown(void)
{
    th_teardown();
    mb_jwt_key_destroy(&s_key);
}

TestSuite(users, .init = s_setup, .fini = s_teardown);

/*  Calls `op` as `who` (NULL: no auth map; the gateway's auth map of that
    session otherwise) with args given as JSON (printf format; NULL for
    none). */
static th_reply_t s_call_as(const session_t *who, const char *op, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_pack_auth(msgpack_packer *pk, const void *who)
{
    mb_jwt_pack_auth(pk, &((const session_t *)who)->claims);
}

static th_reply_t s_call_as(const session_t *who, const char *op, const char *fmt, ...)
{
    json_t *args = NULL;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        args = th_vjson(fmt, ap);
        va_end(ap);
    }
    return th_call_packed(op, args, who ? s_pack_auth : NULL, who);
}

#define s_call(op, ...) s_call_as(NULL, op, __VA_ARGS__)

/*  No reply body ever shows a password or its hash. */
static void s_no_secret(const json_t *user)
{
    cr_assert_null(json_object_get(user, "password_hash"));
    cr_assert_null(json_object_get(user, "password"));
    char *text = json_dumps(user, 0);
    cr_assert_null(strstr(text, "argon2"), "reply holds a hash: %s", text);
    free(text);
}

static const char *s_signup(const char *email, const char *password)
{
    th_reply_t r = th_ok(s_call("auth.signup",
                            "{\"body\":{\"email\":\"%s\",\"password\":\"%s\","
                            "\"display_name\":\"Alice\",\"country\":\"SE\"}}",
                            email, password),
                     201);
    s_no_secret(r.body);
    return th_str(r.body, "id");
}

/*  Fills *s from a login or refresh reply and checks its shape. */
static void s_session_from(th_reply_t r, session_t *s)
{
    th_ok(r, 200);
    cr_assert_str_eq(th_str(r.body, "token_type"), "Bearer");
    cr_assert_eq(json_integer_value(json_object_get(r.body, "expires_in")), 900);
    cr_assert_eq(json_object_size(r.body), 4);
    snprintf(s->access, sizeof s->access, "%s", th_str(r.body, "access_token"));
    snprintf(s->refresh, sizeof s->refresh, "%s", th_str(r.body, "refresh_token"));
    cr_assert_eq(strlen(s->refresh), 43, "32 bytes in base64url");
    const char *why = NULL;
    cr_assert_eq(
        mb_jwt_verify(s_key, &s_policy, s->access, strlen(s->access), time(NULL), &s->claims, &why),
        0, "the access token verifies: %s", why);
}

static session_t s_login(const char *email, const char *password)
{
    session_t s;
    s_session_from(
        s_call("auth.login", "{\"body\":{\"email\":\"%s\",\"password\":\"%s\"}}", email, password),
        &s);
    return s;
}

static th_reply_t s_refresh(const char *token)
{
    return s_call("auth.refresh", "{\"body\":{\"refresh_token\":\"%s\"}}", token);
}

/*  An auth map naming `user` with `roles`, as the gateway would send for
    an admin's token. */
static session_t s_as(const char *user, unsigned roles)
{
    session_t s = {.claims = {.roles = roles}};
    snprintf(s.claims.sub, sizeof s.claims.sub, "%s", user);
    snprintf(s.claims.sid, sizeof s.claims.sid, "no-such-session");
    snprintf(s.claims.tier, sizeof s.claims.tier, "free");
    return s;
}

/* ---- usage -------------------------------------------------------------------- */

Test(users, usage_signup_login_me_refresh_logout)
{
    th_reply_t r =
        th_ok(s_call("auth.signup",
                    "{\"body\":{\"email\":\"  Alice@Example.COM \",\"password\":\"" S_PASSWORD
                    "\",\"display_name\":\"Alice Liddell\",\"country\":\"GB\"}}"),
             201);
    const char *id = th_str(r.body, "id");
    cr_assert_eq(strlen(id), 22);
    cr_assert_str_eq(th_str(r.body, "email"), "alice@example.com", "trimmed and lower-cased");
    cr_assert_str_eq(th_str(r.body, "display_name"), "Alice Liddell");
    cr_assert_str_eq(th_str(r.body, "country"), "GB");
    cr_assert_str_eq(th_str(r.body, "tier"), "free");
    json_t *roles = json_object_get(r.body, "roles");
    cr_assert_eq(json_array_size(roles), 1);
    cr_assert_str_eq(json_string_value(json_array_get(roles, 0)), "user");
    cr_assert_str_eq(th_str(r.body, "created_at"), th_str(r.body, "updated_at"));
    s_no_secret(r.body);

    session_t s = s_login("ALICE@example.com", S_PASSWORD);
    cr_assert_str_eq(s.claims.sub, id);
    cr_assert_str_eq(s.claims.tier, "free");
    cr_assert_eq(s.claims.roles, MB_ROLE_USER);
    cr_assert_eq(strlen(s.claims.sid), 22);
    cr_assert_eq(strlen(s.claims.jti), 22);
    cr_assert_eq(s.claims.exp - s.claims.iat, 900, "15 minutes");

    th_reply_t me = th_ok(s_call_as(&s, "me.get", NULL), 200);
    r.body = json_deep_copy(r.body);
    cr_assert(json_equal(me.body, r.body), "me.get answers what signup stored");
    json_decref(r.body);

    session_t next;
    s_session_from(s_refresh(s.refresh), &next);
    cr_assert_str_neq(next.refresh, s.refresh, "rotated");
    cr_assert_str_eq(next.claims.sid, s.claims.sid, "same session");
    cr_assert_str_neq(next.claims.jti, s.claims.jti);

    cr_assert(json_is_null(th_ok(s_call_as(&next, "auth.logout", NULL), 204).body));
    th_expect_error(s_refresh(next.refresh), 401, "invalid_refresh_token", NULL);
}

/* ---- signup rules ------------------------------------------------------------------ */

static th_reply_t s_signup_body(const char *body)
{
    return s_call("auth.signup", "{\"body\":%s}", body);
}

#define S_FIELDS(email, password, name, country)                                                   \
    "{\"email\":" email ",\"password\":" password ",\"display_name\":" name                        \
    ",\"country\":" country "}"
#define S_OK_EMAIL "\"a@example.com\""
#define S_OK_PASSWORD "\"" S_PASSWORD "\""
#define S_OK_NAME "\"Alice\""
#define S_OK_COUNTRY "\"SE\""

Test(users, signup_email_rules_name_the_field)
{
    const char *bad[] = {"\"\"",
                         "\"   \"",
                         "\"alice\"",
                         "\"@example.com\"",
                         "\"alice@\"",
                         "\"alice@example\"",
                         "\"a@b@example.com\"",
                         "\"al ice@example.com\"",
                         "\"alice@exa_mple.com\"",
                         "\"alice@.example.com\"",
                         "\"alice@example..com\"",
                         "\"alice@-x.com\"",
                         "\"<alice>@example.com\"",
                         "\"alice@example.com.\"",
                         "42",
                         "null",
                         "[\"a@example.com\"]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"email\":%s,\"password\":" S_OK_PASSWORD ",\"display_name\":" S_OK_NAME
                 ",\"country\":" S_OK_COUNTRY "}",
                 bad[i]);
        th_reply_t r = s_signup_body(body);
        cr_assert_eq(r.status, 400, "email %s accepted", bad[i]);
        th_expect_invalid(r, "body.email");
    }
    th_expect_invalid(s_signup_body("{\"password\":" S_OK_PASSWORD ",\"display_name\":" S_OK_NAME
                                   ",\"country\":" S_OK_COUNTRY "}"),
                     "body.email");
    /* A local part over 64 bytes. */
    char body[512];
    snprintf(body, sizeof body,
             S_FIELDS("\"%065d@example.com\"", S_OK_PASSWORD, S_OK_NAME, S_OK_COUNTRY), 0);
    th_expect_invalid(s_signup_body(body), "body.email");
    /* Accepted: internationalised and sub-addressed addresses. */
    th_ok(s_signup_body(S_FIELDS("\"bj\\u00f6rk+music@m\\u00fasica.is\"", S_OK_PASSWORD, S_OK_NAME,
                                S_OK_COUNTRY)),
         201);
}

Test(users, signup_password_rules_each_have_a_code)
{
    th_expect_invalid(s_signup_body("{\"email\":" S_OK_EMAIL ",\"display_name\":" S_OK_NAME
                                   ",\"country\":" S_OK_COUNTRY "}"),
                     "body.password");
    th_expect_invalid(s_signup_body(S_FIELDS(S_OK_EMAIL, "1234567890123", S_OK_NAME, S_OK_COUNTRY)),
                     "body.password");
    th_expect_error(s_signup_body(S_FIELDS(S_OK_EMAIL, "\"short\"", S_OK_NAME, S_OK_COUNTRY)), 400,
                   "password_too_short", "body.password");
    /* 9 characters, 18 bytes: the rule counts characters. */
    th_expect_error(s_signup_body(S_FIELDS(S_OK_EMAIL,
                                          "\"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
                                          "\\u00e9\\u00e9\\u00e9\"",
                                          S_OK_NAME, S_OK_COUNTRY)),
                   400, "password_too_short", "body.password");
    const char *common[] = {"\"1234567890\"", "\"Password123\"", "\"QWERTYUIOP\"",
                            "\"iloveyou123\"", "\"zzzzzzzzzzzz\""};
    for (size_t i = 0; i < sizeof common / sizeof common[0]; i++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"email\":" S_OK_EMAIL ",\"password\":%s,\"display_name\":" S_OK_NAME
                 ",\"country\":" S_OK_COUNTRY "}",
                 common[i]);
        th_expect_error(s_signup_body(body), 400, "password_too_common", "body.password");
    }
    char *long_pw = malloc(300);
    memset(long_pw, 'x', 299);
    long_pw[0] = 'y';
    long_pw[299] = '\0';
    char *body;
    cr_assert(asprintf(&body, S_FIELDS(S_OK_EMAIL, "\"%s\"", S_OK_NAME, S_OK_COUNTRY), long_pw) >
              0);
    th_expect_error(s_signup_body(body), 400, "password_too_long", "body.password");
    free(body);
    free(long_pw);
    /* Exactly 10 characters that are not common: fine. */
    th_ok(s_signup_body(S_FIELDS(S_OK_EMAIL, "\"k7#pQ2!vXz\"", S_OK_NAME, S_OK_COUNTRY)), 201);
}

Test(users, signup_name_country_and_shape_rules)
{
    th_expect_invalid(s_signup_body(S_FIELDS(S_OK_EMAIL, S_OK_PASSWORD, "\"\"", S_OK_COUNTRY)),
                     "body.display_name");
    th_expect_invalid(
        s_signup_body(S_FIELDS(S_OK_EMAIL, S_OK_PASSWORD, "\"a\\u0007b\"", S_OK_COUNTRY)),
        "body.display_name");
    char name[160];
    memset(name, 'n', 101);
    name[101] = '\0';
    char body[512];
    snprintf(body, sizeof body, S_FIELDS(S_OK_EMAIL, S_OK_PASSWORD, "\"%s\"", S_OK_COUNTRY), name);
    th_expect_invalid(s_signup_body(body), "body.display_name");
    th_expect_invalid(s_signup_body("{\"email\":" S_OK_EMAIL ",\"password\":" S_OK_PASSWORD
                                   ",\"country\":" S_OK_COUNTRY "}"),
                     "body.display_name");
    const char *countries[] = {"\"se\"", "\"SWE\"", "\"S\"", "\"S1\"", "null", "46"};
    for (size_t i = 0; i < sizeof countries / sizeof countries[0]; i++) {
        snprintf(body, sizeof body, S_FIELDS(S_OK_EMAIL, S_OK_PASSWORD, S_OK_NAME, "%s"),
                 countries[i]);
        th_expect_invalid(s_signup_body(body), "body.country");
    }
    th_expect_invalid(s_signup_body("{\"email\":" S_OK_EMAIL ",\"password\":" S_OK_PASSWORD
                                   ",\"display_name\":" S_OK_NAME "}"),
                     "body.country");
    th_expect_invalid(s_signup_body("{\"email\":" S_OK_EMAIL ",\"password\":" S_OK_PASSWORD
                                   ",\"display_name\":" S_OK_NAME
                                   ",\"country\":\"SE\",\"roles\":[\"admin\"]}"),
                     "body.roles");
    th_expect_invalid(s_signup_body("[]"), "body");
    th_expect_invalid(s_signup_body("\"x\""), "body");
    th_expect_invalid(s_call("auth.signup", NULL), "body");
}

Test(users, signup_duplicate_email_is_409_whatever_the_case)
{
    s_signup("bob@example.com", S_PASSWORD);
    th_expect_error(s_signup_body(S_FIELDS("\" BOB@Example.com\"", "\"another fine password\"",
                                          S_OK_NAME, S_OK_COUNTRY)),
                   409, "email_taken", "body.email");
    session_t s = s_login("bob@example.com", S_PASSWORD);
    cr_assert_str_eq(s.claims.tier, "free", "the first account is untouched");
}

/*  The clear password is nowhere in the environment's file. */
Test(users, password_stored_only_as_argon2id)
{
    s_signup("carol@example.com", "a very particular password");
    char path[128];
    snprintf(path, sizeof path, "%s/data.mdb", th_dir);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    char *data = malloc((size_t)size);
    cr_assert_eq(fread(data, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    cr_assert_null(memmem(data, (size_t)size, "very particular", 15));
    cr_assert_not_null(memmem(data, (size_t)size, "$argon2id$v=19$", 15));
    free(data);
}

/* ---- login ------------------------------------------------------------------------ */

Test(users, login_failures_all_look_the_same)
{
    s_signup("dave@example.com", S_PASSWORD);
    th_reply_t wrong = s_call("auth.login", "{\"body\":{\"email\":\"dave@example.com\","
                                         "\"password\":\"not the password\"}}");
    th_reply_t unknown = s_call("auth.login", "{\"body\":{\"email\":\"nobody@example.com\","
                                           "\"password\":\"" S_PASSWORD "\"}}");
    th_reply_t odd = s_call("auth.login", "{\"body\":{\"email\":\"not an email\","
                                       "\"password\":\"" S_PASSWORD "\"}}");
    th_reply_t empty = s_call("auth.login", "{\"body\":{\"email\":\"dave@example.com\","
                                         "\"password\":\"\"}}");
    th_reply_t all[] = {wrong, unknown, odd, empty};
    for (size_t i = 0; i < 4; i++) {
        th_expect_error(all[i], 401, "invalid_credentials", "");
        cr_assert_str_eq(all[i].message, wrong.message);
        cr_assert_null(all[i].body);
    }
}

Test(users, login_bad_input_names_the_field)
{
    th_expect_invalid(s_call("auth.login", "{\"body\":{\"password\":\"x\"}}"), "body.email");
    th_expect_invalid(s_call("auth.login", "{\"body\":{\"email\":\"a@b.c\"}}"), "body.password");
    th_expect_invalid(s_call("auth.login", "{\"body\":{\"email\":7,\"password\":\"x\"}}"),
                     "body.email");
    th_expect_invalid(s_call("auth.login", "{\"body\":{\"email\":\"a@b.c\",\"password\":false}}"),
                     "body.password");
    th_expect_invalid(
        s_call("auth.login", "{\"body\":{\"email\":\"a@b.c\",\"password\":\"x\",\"otp\":1}}"),
        "body.otp");
    th_expect_invalid(s_call("auth.login", "{\"body\":[]}"), "body");
    th_expect_invalid(s_call("auth.login", NULL), "body");
}

Test(users, each_login_is_a_new_session)
{
    s_signup("erin@example.com", S_PASSWORD);
    session_t a = s_login("erin@example.com", S_PASSWORD);
    session_t b = s_login("erin@example.com", S_PASSWORD);
    cr_assert_str_neq(a.claims.sid, b.claims.sid);
    cr_assert_str_neq(a.refresh, b.refresh);
    cr_assert_str_eq(a.claims.sub, b.claims.sub);
}

/* ---- refresh -------------------------------------------------------------------------- */

Test(users, refresh_rotates_every_time)
{
    s_signup("fay@example.com", S_PASSWORD);
    session_t s = s_login("fay@example.com", S_PASSWORD);
    char seen[6][64];
    snprintf(seen[0], sizeof seen[0], "%s", s.refresh);
    for (int i = 1; i < 6; i++) {
        s_session_from(s_refresh(s.refresh), &s);
        for (int k = 0; k < i; k++)
            cr_assert_str_neq(s.refresh, seen[k]);
        snprintf(seen[i], sizeof seen[i], "%s", s.refresh);
    }
}

Test(users, reusing_a_rotated_refresh_token_revokes_the_family)
{
    s_signup("gus@example.com", S_PASSWORD);
    session_t stolen = s_login("gus@example.com", S_PASSWORD);
    session_t other = s_login("gus@example.com", S_PASSWORD);
    session_t a1, a2;
    s_session_from(s_refresh(stolen.refresh), &a1); /* the client rotates */
    s_session_from(s_refresh(a1.refresh), &a2);

    /* The thief replays the first token: the whole session goes. */
    th_expect_error(s_refresh(stolen.refresh), 401, "refresh_token_reused", NULL);
    th_expect_error(s_refresh(a2.refresh), 401, "invalid_refresh_token", NULL);
    cr_assert(strstr(s_refresh(a2.refresh).message, "revoked"));
    th_expect_error(s_refresh(a1.refresh), 401, "invalid_refresh_token", NULL);
    /* Another sign-in of the same user is another family. */
    session_t o2;
    s_session_from(s_refresh(other.refresh), &o2);
}

Test(users, refresh_refuses_bad_tokens)
{
    th_expect_invalid(s_refresh("short"), "body.refresh_token");
    th_expect_invalid(s_refresh("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+"),
                     "body.refresh_token");
    th_expect_invalid(s_refresh("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB"),
                     "body.refresh_token");
    th_expect_invalid(s_call("auth.refresh", "{\"body\":{}}"), "body.refresh_token");
    th_expect_invalid(s_call("auth.refresh", "{\"body\":{\"refresh_token\":12}}"),
                     "body.refresh_token");
    /* Well formed, never issued. */
    th_expect_error(s_refresh("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), 401,
                   "invalid_refresh_token", NULL);
}

Test(users, refresh_carries_a_new_tier)
{
    const char *id = s_signup("hal@example.com", S_PASSWORD);
    session_t s = s_login("hal@example.com", S_PASSWORD);
    session_t admin = s_as("some-admin", MB_ROLE_USER | MB_ROLE_ADMIN);
    th_ok(s_call_as(&admin, "user.set_tier", "{\"id\":\"%s\",\"body\":{\"tier\":\"premium\"}}", id),
         200);
    cr_assert_str_eq(s.claims.tier, "free", "an access token keeps what it said");
    session_t next;
    s_session_from(s_refresh(s.refresh), &next);
    cr_assert_str_eq(next.claims.tier, "premium", "the next one says premium");
}

/* ---- logout ---------------------------------------------------------------------------- */

Test(users, logout_revokes_only_its_session)
{
    s_signup("ivy@example.com", S_PASSWORD);
    session_t phone = s_login("ivy@example.com", S_PASSWORD);
    session_t laptop = s_login("ivy@example.com", S_PASSWORD);
    th_ok(s_call_as(&phone, "auth.logout", NULL), 204);
    th_expect_error(s_refresh(phone.refresh), 401, "invalid_refresh_token", NULL);
    session_t l2;
    s_session_from(s_refresh(laptop.refresh), &l2);
    th_ok(s_call_as(&phone, "auth.logout", NULL), 204); /* again: nothing left to do */

    /* Someone else's session id in your auth map changes nothing. */
    session_t mallory = s_as("mallory", MB_ROLE_USER);
    snprintf(mallory.claims.sid, sizeof mallory.claims.sid, "%s", l2.claims.sid);
    th_ok(s_call_as(&mallory, "auth.logout", NULL), 204);
    session_t l3;
    s_session_from(s_refresh(l2.refresh), &l3);

    th_expect_error(s_call("auth.logout", NULL), 401, "unauthenticated", NULL);
}

/* ---- me ---------------------------------------------------------------------------------- */

Test(users, me_update_changes_name_and_country)
{
    s_signup("jo@example.com", S_PASSWORD);
    session_t s = s_login("jo@example.com", S_PASSWORD);
    th_reply_t before = th_ok(s_call_as(&s, "me.get", NULL), 200);
    usleep(2000);
    th_reply_t r =
        th_ok(s_call_as(&s, "me.update",
                       "{\"body\":{\"display_name\":\"Jo \\u00c5berg\",\"country\":\"NO\"}}"),
             200);
    cr_assert_str_eq(th_str(r.body, "display_name"), "Jo \xc3\x85"
                                                    "berg");
    cr_assert_str_eq(th_str(r.body, "country"), "NO");
    cr_assert_str_eq(th_str(r.body, "email"), "jo@example.com");
    cr_assert_str_eq(th_str(r.body, "created_at"), th_str(before.body, "created_at"));
    cr_assert(strcmp(th_str(r.body, "updated_at"), th_str(before.body, "updated_at")) > 0);
    s_no_secret(r.body);
    th_reply_t got = th_ok(s_call_as(&s, "me.get", NULL), 200);
    cr_assert(json_equal(got.body, r.body));

    r = th_ok(s_call_as(&s, "me.update", "{\"body\":{\"country\":null}}"), 200);
    cr_assert(json_is_null(json_object_get(r.body, "country")));
    cr_assert_str_eq(th_str(r.body, "display_name"),
                     "Jo \xc3\x85"
                     "berg",
                     "kept");

    th_expect_invalid(s_call_as(&s, "me.update", "{\"body\":{\"country\":\"no\"}}"), "body.country");
    th_expect_invalid(s_call_as(&s, "me.update", "{\"body\":{\"display_name\":\"\"}}"),
                     "body.display_name");
    th_expect_invalid(s_call_as(&s, "me.update", "{\"body\":{\"display_name\":null}}"),
                     "body.display_name");
    th_expect_invalid(s_call_as(&s, "me.update", "{\"body\":{\"email\":\"x@example.com\"}}"),
                     "body.email");
    th_expect_invalid(s_call_as(&s, "me.update", "{\"body\":{\"tier\":\"premium\"}}"), "body.tier");
    th_expect_invalid(s_call_as(&s, "me.update", "{\"body\":{\"roles\":[\"admin\"]}}"),
                     "body.roles");
    th_expect_invalid(s_call_as(&s, "me.update", "{\"body\":[1]}"), "body");
    got = th_ok(s_call_as(&s, "me.get", NULL), 200);
    cr_assert_str_eq(th_str(got.body, "tier"), "free", "refused updates change nothing");
}

Test(users, me_needs_a_user)
{
    th_expect_error(s_call("me.get", NULL), 401, "unauthenticated", NULL);
    th_expect_error(s_call("me.update", "{\"body\":{\"country\":\"SE\"}}"), 401, "unauthenticated",
                   NULL);
    th_expect_error(s_call("me.password", "{\"body\":{}}"), 401, "unauthenticated", NULL);
    session_t ghost = s_as("no-such-user", MB_ROLE_USER);
    th_expect_error(s_call_as(&ghost, "me.get", NULL), 404, "not_found", NULL);
}

Test(users, malformed_auth_maps_are_unauthenticated)
{
    const char *auths[] = {"[]", "{}", "{\"user\":7}", "{\"user\":\"\"}", "\"alice\""};
    for (size_t i = 0; i < sizeof auths / sizeof auths[0]; i++) {
        json_t *auth = json_loads(auths[i], JSON_DECODE_ANY, NULL);
        msgpack_sbuffer req;
        msgpack_sbuffer_init(&req);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
        uint64_t rid = 9000 + i; /* any rid: the reply must echo it */
        mb_request_pack_head(&pk, "me.get", rid, 0, 1);
        mb_pack_cstr(&pk, "auth");
        th_pack_json(&pk, auth);
        th_reply_t r = th_dispatch(req.data, req.size, rid);
        cr_assert(r.status == 401 || r.status == 400, "auth %s gave %d", auths[i], r.status);
        if (r.status == 400)
            cr_assert_str_eq(r.code, "bad_request", "only a non-map is refused by the envelope");
        msgpack_sbuffer_destroy(&req);
        json_decref(auth);
    }
    th_expect_error(s_call("no.such_op", NULL), 404, "unknown_op", NULL);
}

/* ---- password change -------------------------------------------------------------------- */

Test(users, password_change_revokes_every_session)
{
    s_signup("kim@example.com", S_PASSWORD);
    session_t a = s_login("kim@example.com", S_PASSWORD);
    session_t b = s_login("kim@example.com", S_PASSWORD);

    th_expect_error(s_call_as(&a, "me.password",
                             "{\"body\":{\"current_password\":\"wrong one\","
                             "\"new_password\":\"a brand new password\"}}"),
                   403, "wrong_password", "body.current_password");
    th_expect_error(s_call_as(&a, "me.password",
                             "{\"body\":{\"current_password\":\"" S_PASSWORD "\","
                             "\"new_password\":\"short\"}}"),
                   400, "password_too_short", "body.new_password");
    th_expect_error(s_call_as(&a, "me.password",
                             "{\"body\":{\"current_password\":\"" S_PASSWORD "\","
                             "\"new_password\":\"password123\"}}"),
                   400, "password_too_common", "body.new_password");
    th_expect_invalid(s_call_as(&a, "me.password", "{\"body\":{\"new_password\":\"x\"}}"),
                     "body.current_password");
    th_expect_invalid(
        s_call_as(&a, "me.password", "{\"body\":{\"current_password\":\"" S_PASSWORD "\"}}"),
        "body.new_password");
    /* None of the refusals revoked anything. */
    s_session_from(s_refresh(b.refresh), &b);

    th_ok(s_call_as(&a, "me.password",
                   "{\"body\":{\"current_password\":\"" S_PASSWORD "\","
                   "\"new_password\":\"a brand new password\"}}"),
         204);
    th_expect_error(s_refresh(a.refresh), 401, "invalid_refresh_token", NULL);
    th_expect_error(s_refresh(b.refresh), 401, "invalid_refresh_token", NULL);
    th_expect_error(s_call("auth.login", "{\"body\":{\"email\":\"kim@example.com\","
                                        "\"password\":\"" S_PASSWORD "\"}}"),
                   401, "invalid_credentials", NULL);
    session_t c = s_login("kim@example.com", "a brand new password");
    s_session_from(s_refresh(c.refresh), &c);
}

/* ---- tier (admin) ---------------------------------------------------------------------- */

Test(users, set_tier_is_for_admins)
{
    const char *id = s_signup("lee@example.com", S_PASSWORD);
    session_t lee = s_login("lee@example.com", S_PASSWORD);
    th_expect_error(
        s_call_as(&lee, "user.set_tier", "{\"id\":\"%s\",\"body\":{\"tier\":\"premium\"}}", id),
        403, "forbidden", NULL);
    th_expect_error(s_call("user.set_tier", "{\"id\":\"%s\",\"body\":{\"tier\":\"premium\"}}", id),
                   401, "unauthenticated", NULL);

    session_t admin = s_as("the-admin", MB_ROLE_USER | MB_ROLE_ADMIN);
    th_reply_t r = th_ok(
        s_call_as(&admin, "user.set_tier", "{\"id\":\"%s\",\"body\":{\"tier\":\"premium\"}}", id),
        200);
    cr_assert_str_eq(th_str(r.body, "tier"), "premium");
    cr_assert_str_eq(th_str(r.body, "id"), id);
    s_no_secret(r.body);
    r = th_ok(s_call_as(&lee, "me.get", NULL), 200);
    cr_assert_str_eq(th_str(r.body, "tier"), "premium");
    r = th_ok(s_call_as(&admin, "user.set_tier", "{\"id\":\"%s\",\"body\":{\"tier\":\"free\"}}", id),
             200);
    cr_assert_str_eq(th_str(r.body, "tier"), "free");

    th_expect_invalid(
        s_call_as(&admin, "user.set_tier", "{\"id\":\"%s\",\"body\":{\"tier\":\"gold\"}}", id),
        "body.tier");
    th_expect_invalid(s_call_as(&admin, "user.set_tier", "{\"id\":\"%s\",\"body\":{}}", id),
                     "body.tier");
    th_expect_invalid(s_call_as(&admin, "user.set_tier",
                               "{\"id\":\"%s\",\"body\":{\"tier\":\"free\",\"x\":1}}", id),
                     "body.x");
    th_expect_invalid(s_call_as(&admin, "user.set_tier", "{\"body\":{\"tier\":\"free\"}}"), "id");
    th_expect_invalid(s_call_as(&admin, "user.set_tier", "{\"id\":5,\"body\":{\"tier\":\"free\"}}"),
                     "id");
    th_expect_error(
        s_call_as(&admin, "user.set_tier", "{\"id\":\"nobody\",\"body\":{\"tier\":\"free\"}}"), 404,
        "not_found", NULL);
}

/* ---- the first admin ---------------------------------------------------------------------- */

Test(users, create_admin_creates_or_promotes)
{
    users_pwhash_t cheap = {.opslimit = 1, .memlimit = 8192};
    char id[USERS_ID_MAX + 1];
    bool created;
    cr_assert_eq(users_admin_create(th_env, &cheap, "Root@Example.com", NULL, 0, id, &created),
                 MB_ENOTFOUND, "no account and no password");
    cr_assert_eq(users_admin_create(th_env, &cheap, "root@example.com", "short", 5, id, &created),
                 MB_EINVAL);
    cr_assert_eq(users_admin_create(th_env, &cheap, "not-an-email", S_PASSWORD, strlen(S_PASSWORD),
                                    id, &created),
                 MB_EINVAL);
    cr_assert_eq(users_admin_create(th_env, &cheap, " Root@Example.com", S_PASSWORD,
                                    strlen(S_PASSWORD), id, &created),
                 0);
    cr_assert(created);
    session_t root = s_login("root@example.com", S_PASSWORD);
    cr_assert_str_eq(root.claims.sub, id);
    cr_assert_eq(root.claims.roles, MB_ROLE_USER | MB_ROLE_ADMIN);
    th_reply_t me = th_ok(s_call_as(&root, "me.get", NULL), 200);
    cr_assert_str_eq(th_str(me.body, "display_name"), "root");
    cr_assert(json_is_null(json_object_get(me.body, "country")));

    /* An existing account is promoted, its password untouched. */
    const char *uid = s_signup("mo@example.com", S_PASSWORD);
    char id2[USERS_ID_MAX + 1];
    cr_assert_eq(users_admin_create(th_env, &cheap, "MO@example.com", NULL, 0, id2, &created), 0);
    cr_assert_not(created);
    cr_assert_str_eq(id2, uid);
    session_t mo = s_login("mo@example.com", S_PASSWORD);
    cr_assert_eq(mo.claims.roles, MB_ROLE_USER | MB_ROLE_ADMIN);
    th_reply_t r =
        th_ok(s_call_as(&mo, "user.set_tier", "{\"id\":\"%s\",\"body\":{\"tier\":\"premium\"}}", id),
             200);
    cr_assert_str_eq(th_str(r.body, "tier"), "premium");
    cr_assert_eq(users_admin_create(th_env, &cheap, "mo@example.com", NULL, 0, id2, &created), 0,
                 "promoting an admin again is fine");
}

/*  Runs `command` with sh; returns its exit status and the first line of
    its standard output in out. */
static int s_run(const char *command, char *out, size_t size)
{
    FILE *p = popen(command, "r");
    cr_assert_not_null(p);
    out[0] = '\0';
    if (fgets(out, (int)size, p))
        out[strcspn(out, "\n")] = '\0';
    while (fgetc(p) != EOF)
        ;
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

Test(users, executable_create_admin_and_refusing_to_start)
{
    const char *bin = getenv("MUSICBUS_BIN_DIR");
    if (!bin) {
        cr_skip_test("MUSICBUS_BIN_DIR not set (run through ctest)");
        return;
    }
    /* The executable appends /users to --data, as the actor itself does. */
    char data[80], cmd[1024], out[256];
    snprintf(data, sizeof data, "%s/data", th_dir);
    snprintf(cmd, sizeof cmd,
             "echo '" S_PASSWORD "' | %s/musicbus-users --create-admin boss@example.com "
             "--data %s 2>/dev/null",
             bin, data);
    cr_assert_eq(s_run(cmd, out, sizeof out), 0, "created from stdin");
    cr_assert_eq(strlen(out), 22, "prints the id: '%s'", out);
    char first[256];
    snprintf(first, sizeof first, "%s", out);
    snprintf(cmd, sizeof cmd,
             "MUSICBUS_ADMIN_PASSWORD=unused %s/musicbus-users --create-admin=BOSS@example.com "
             "--data %s 2>/dev/null </dev/null",
             bin, data);
    cr_assert_eq(s_run(cmd, out, sizeof out), 0, "promoting again");
    cr_assert_str_eq(out, first);
    snprintf(cmd, sizeof cmd,
             "MUSICBUS_ADMIN_PASSWORD=short %s/musicbus-users --create-admin new@example.com "
             "--data %s 2>/dev/null",
             bin, data);
    cr_assert_eq(s_run(cmd, out, sizeof out), 1, "a weak password is refused");

    /* No secret, or a short one: exit 1 with a clear line, before any bus. */
    snprintf(cmd, sizeof cmd,
             "env -u MUSICBUS_JWT_SECRET -u MUSICBUS_JWT_SECRET_FILE %s/musicbus-users --data %s "
             "--bus tcp://127.0.0.1:1 2>&1 >/dev/null | grep -c 'no JWT secret'",
             bin, data);
    cr_assert_eq(s_run(cmd, out, sizeof out), 0);
    cr_assert_str_eq(out, "1");
    snprintf(cmd, sizeof cmd,
             "MUSICBUS_JWT_SECRET=short %s/musicbus-users --data %s --bus tcp://127.0.0.1:1; "
             "echo $?",
             bin, data);
    cr_assert_eq(s_run(cmd, out, sizeof out), 0);
    cr_assert_str_eq(out, "1", "exit code 1 without a usable secret");
}

/* ---- start-up ------------------------------------------------------------------------------ */

Test(users_startup, refuses_without_a_usable_secret)
{
    s_env_for_tests();
    th_tmpdir(th_dir, "test_users");
    th_def = *users_actor_def();
    cr_assert_eq(mb_actor_open_env(&th_def, th_dir, &th_env), 0);
    unsetenv("MUSICBUS_JWT_SECRET");
    cr_assert_neq(th_def.open(th_env, &th_state), 0);
    setenv("MUSICBUS_JWT_SECRET", "only 31 bytes long, not enough", 1);
    cr_assert_neq(th_def.open(th_env, &th_state), 0);
    cr_assert_null(th_state);

    char file[96];
    snprintf(file, sizeof file, "%s/jwt.secret", th_dir);
    FILE *f = fopen(file, "w");
    fprintf(f, "%s\n", S_SECRET);
    fclose(f);
    chmod(file, 0600);
    unsetenv("MUSICBUS_JWT_SECRET");
    users_set_jwt_secret_file(file);
    cr_assert_eq(th_def.open(th_env, &th_state), 0, "--jwt-secret-file");
    users_set_jwt_secret_file(NULL);
    th_teardown();
}

/* ---- lifetimes ------------------------------------------------------------------------------ */

static void s_setup_short(void)
{
    s_env_for_tests();
    setenv("MUSICBUS_REFRESH_TTL", "1", 1);
    setenv("MUSICBUS_ACCESS_TTL", "60", 1);
    s_open();
}

TestSuite(users_short, .init = s_setup_short, .fini = s_teardown);

Test(users_short, expired_sessions_are_refused_then_forgotten)
{
    s_signup("ned@example.com", S_PASSWORD);
    th_reply_t r = th_ok(s_call("auth.login", "{\"body\":{\"email\":\"ned@example.com\","
                                          "\"password\":\"" S_PASSWORD "\"}}"),
                     200);
    cr_assert_eq(json_integer_value(json_object_get(r.body, "expires_in")), 60);
    char old[64];
    snprintf(old, sizeof old, "%s", th_str(r.body, "refresh_token"));
    usleep(1100 * 1000);
    th_reply_t e = s_refresh(old);
    th_expect_error(e, 401, "invalid_refresh_token", NULL);
    cr_assert(strstr(e.message, "expired"), "%s", e.message);
    /* The next sign-in sweeps the expired session away entirely. */
    th_ok(s_call("auth.login", "{\"body\":{\"email\":\"ned@example.com\","
                              "\"password\":\"" S_PASSWORD "\"}}"),
         200);
    e = s_refresh(old);
    th_expect_error(e, 401, "invalid_refresh_token", NULL);
    cr_assert(strstr(e.message, "unknown"), "%s", e.message);
}

Test(users, sessions_per_user_are_capped)
{
    s_signup("olga@example.com", S_PASSWORD);
    session_t first = s_login("olga@example.com", S_PASSWORD);
    session_t second = s_login("olga@example.com", S_PASSWORD);
    for (int i = 2; i < USERS_SESSIONS_MAX; i++)
        s_login("olga@example.com", S_PASSWORD);
    session_t s2;
    s_session_from(s_refresh(second.refresh), &s2); /* 50 live: all still good */
    s_login("olga@example.com", S_PASSWORD);        /* the 51st drops the oldest */
    th_expect_error(s_refresh(first.refresh), 401, "invalid_refresh_token", NULL);
    s_session_from(s_refresh(s2.refresh), &s2);
}

/* ---- timing ------------------------------------------------------------------------------------
 */

static void s_setup_costly(void)
{
    s_env_for_tests();
    setenv("MUSICBUS_PWHASH_MEMLIMIT", "33554432", 1); /* 32 MiB, t=1: ~10 ms a hash */
    s_open();
}

TestSuite(users_timing, .init = s_setup_costly, .fini = s_teardown);

static double s_login_ms(const char *email, const char *password)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    th_reply_t r =
        s_call("auth.login", "{\"body\":{\"email\":\"%s\",\"password\":\"%s\"}}", email, password);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    th_expect_error(r, 401, "invalid_credentials", NULL);
    return (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
}

static int s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/*  An unknown email costs one Argon2id run, like a wrong password: the
    answer's time does not tell whether the account exists. */
Test(users_timing, unknown_email_takes_as_long_as_a_wrong_password)
{
    s_signup("pat@example.com", S_PASSWORD);
    enum { N = 7 };
    double wrong[N], unknown[N];
    for (int i = 0; i < N; i++) {
        wrong[i] = s_login_ms("pat@example.com", "not the password");
        unknown[i] = s_login_ms("nobody@example.com", "not the password");
    }
    qsort(wrong, N, sizeof *wrong, s_cmp_double);
    qsort(unknown, N, sizeof *unknown, s_cmp_double);
    double w = wrong[N / 2], u = unknown[N / 2];
    fprintf(stderr, "login refused: wrong password %.1f ms, unknown email %.1f ms (medians)\n", w,
            u);
    cr_assert_gt(u, 2.0, "an unknown email is checked against the dummy hash (%.2f ms)", u);
    cr_assert(u > 0.5 * w && u < 2.0 * w, "wrong password %.1f ms, unknown email %.1f ms", w, u);
}

/* ---- events ---------------------------------------------------------------------------- */

/*  Checks that exactly one event was added since the outbox held
    `before`: users.user keyed by `id`, {action, id, user} where user is
    the published part of `answered` (a User as the API answers it), or
    nil when `answered` is NULL. Returns the event's user. */
static const json_t *s_expect_event(size_t before, const char *id, const char *action,
                                    const json_t *answered)
{
    cr_assert_eq(th_outbox_count(), before + 1, "%zu events added, expected 1",
                 th_outbox_count() - before);
    th_event_t e = th_outbox_last();
    cr_assert_str_eq(e.topic, "users.user");
    cr_assert_str_eq(e.key, id);
    cr_assert_eq(json_object_size(e.data), 3, "data is {action, id, user}");
    cr_assert_str_eq(th_str(e.data, "action"), action);
    cr_assert_str_eq(th_str(e.data, "id"), id);
    const json_t *user = json_object_get(e.data, "user");
    if (!answered) {
        cr_assert(json_is_null(user), "a delete carries a nil user");
        return user;
    }
    static const char *const published[] = {"id",    "country",      "tier",
                                            "roles", "display_name", "created_at"};
    cr_assert_eq(json_object_size(user), 6,
                 "user is {id, country, tier, roles, display_name, "
                 "created_at}");
    for (size_t i = 0; i < 6; i++)
        cr_assert(json_equal(json_object_get(user, published[i]),
                             json_object_get(answered, published[i])),
                  "user.%s is as answered", published[i]);
    char *text = json_dumps(e.data, 0);
    cr_assert_null(strstr(text, "@"), "no email in an event: %s", text);
    cr_assert_null(strstr(text, "argon2"), "no hash in an event: %s", text);
    free(text);
    return user;
}

Test(users, usage_account_changes_are_events)
{
    cr_assert_eq(th_outbox_count(), 0);
    th_reply_t r = th_ok(s_call("auth.signup",
                            "{\"body\":{\"email\":\"ev@example.com\",\"password\":\"" S_PASSWORD
                            "\",\"display_name\":\"Eve\",\"country\":\"FR\"}}"),
                     201);
    char id[64];
    snprintf(id, sizeof id, "%s", th_str(r.body, "id"));
    s_expect_event(0, id, "created", r.body);

    /* Signing in, refreshing and signing out change no account. */
    session_t s = s_login("ev@example.com", S_PASSWORD);
    session_t next;
    s_session_from(s_refresh(s.refresh), &next);
    th_ok(s_call_as(&next, "auth.logout", NULL), 204);
    s = s_login("ev@example.com", S_PASSWORD);
    th_ok(s_call_as(&s, "me.get", NULL), 200);
    cr_assert_eq(th_outbox_count(), 1);

    r = th_ok(s_call_as(&s, "me.update", "{\"body\":{\"display_name\":\"Eve B\"}}"), 200);
    s_expect_event(1, id, "updated", r.body);
    r = th_ok(s_call_as(&s, "me.update", "{\"body\":{\"country\":null}}"), 200);
    const json_t *user = s_expect_event(2, id, "updated", r.body);
    cr_assert(json_is_null(json_object_get(user, "country")));
    /* A PATCH that changes nothing publishes nothing. */
    th_ok(s_call_as(&s, "me.update", "{\"body\":{\"display_name\":\"Eve B\"}}"), 200);
    th_ok(s_call_as(&s, "me.update", "{\"body\":{}}"), 200);
    cr_assert_eq(th_outbox_count(), 3);

    session_t admin = s_as("the-admin", MB_ROLE_USER | MB_ROLE_ADMIN);
    r = th_ok(
        s_call_as(&admin, "user.set_tier", "{\"id\":\"%s\",\"body\":{\"tier\":\"premium\"}}", id),
        200);
    user = s_expect_event(3, id, "tier_changed", r.body);
    cr_assert_str_eq(th_str(user, "tier"), "premium");
    th_ok(s_call_as(&admin, "user.set_tier", "{\"id\":\"%s\",\"body\":{\"tier\":\"premium\"}}", id),
         200);
    cr_assert_eq(th_outbox_count(), 4, "the same tier again is no change");

    /* A password change is no event: nothing published changed. */
    th_ok(s_call_as(&s, "me.password",
                   "{\"body\":{\"current_password\":\"" S_PASSWORD
                   "\",\"new_password\":\"another fine phrase\"}}"),
         204);
    cr_assert_eq(th_outbox_count(), 4);

    th_ok(s_call_as(&admin, "user.delete", "{\"id\":\"%s\"}", id), 204);
    s_expect_event(4, id, "deleted", NULL);
}

Test(users, refused_writes_publish_nothing)
{
    const char *id = s_signup("no@example.com", S_PASSWORD);
    session_t s = s_login("no@example.com", S_PASSWORD);
    session_t admin = s_as("the-admin", MB_ROLE_USER | MB_ROLE_ADMIN);
    size_t n = th_outbox_count();
    th_expect_error(s_call("auth.signup",
                          "{\"body\":{\"email\":\"NO@example.com\",\"password\":\"" S_PASSWORD
                          "\",\"display_name\":\"x\",\"country\":\"SE\"}}"),
                   409, "email_taken", "body.email");
    th_expect_invalid(s_call("auth.signup",
                            "{\"body\":{\"email\":\"x@example.com\",\"password\":\"" S_PASSWORD
                            "\",\"display_name\":\"x\",\"country\":\"se\"}}"),
                     "body.country");
    th_expect_invalid(s_call_as(&s, "me.update", "{\"body\":{\"country\":\"xx1\"}}"),
                     "body.country");
    th_expect_error(
        s_call_as(&s, "user.set_tier", "{\"id\":\"%s\",\"body\":{\"tier\":\"premium\"}}", id), 403,
        "forbidden", NULL);
    th_expect_invalid(
        s_call_as(&admin, "user.set_tier", "{\"id\":\"%s\",\"body\":{\"tier\":\"gold\"}}", id),
        "body.tier");
    th_expect_error(s_call_as(&s, "user.delete", "{\"id\":\"%s\"}", id), 403, "forbidden", NULL);
    th_expect_error(s_call("user.delete", "{\"id\":\"%s\"}", id), 401, "unauthenticated", NULL);
    th_expect_error(s_call_as(&admin, "user.delete", "{\"id\":\"nobody\"}"), 404, "not_found", NULL);
    th_expect_invalid(s_call_as(&admin, "user.delete", "{\"id\":7}"), "id");
    th_expect_invalid(s_call_as(&admin, "user.delete", NULL), "id");
    cr_assert_eq(th_outbox_count(), n, "a refused write leaves no event");
}

/*  Entries in the users' database `name`. */
static size_t s_entries(const char *name)
{
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_stat st;
    cr_assert_eq(mdb_txn_begin(th_env, NULL, MDB_RDONLY, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, name, 0, &dbi), 0);
    cr_assert_eq(mdb_stat(txn, dbi, &st), 0);
    mdb_txn_abort(txn);
    return st.ms_entries;
}

Test(users, delete_forgets_the_account_and_its_sessions)
{
    const char *keep = s_signup("keep@example.com", S_PASSWORD);
    session_t kept = s_login("keep@example.com", S_PASSWORD);
    char id[64];
    snprintf(id, sizeof id, "%s", s_signup("gone@example.com", S_PASSWORD));
    session_t a = s_login("gone@example.com", S_PASSWORD);
    session_t b = s_login("gone@example.com", S_PASSWORD);
    session_t rotated;
    s_session_from(s_refresh(b.refresh), &rotated);
    cr_assert_eq(s_entries("sessions"), 3);
    cr_assert_eq(s_entries("refresh"), 4);

    session_t admin = s_as("the-admin", MB_ROLE_USER | MB_ROLE_ADMIN);
    th_reply_t r = th_ok(s_call_as(&admin, "user.delete", "{\"id\":\"%s\"}", id), 204);
    cr_assert(json_is_null(r.body));

    /* Only the other account's session and token are left. */
    cr_assert_eq(s_entries("users"), 1);
    cr_assert_eq(s_entries("emails"), 1);
    cr_assert_eq(s_entries("sessions"), 1);
    cr_assert_eq(s_entries("refresh"), 1);
    cr_assert_eq(s_entries("user_sessions"), 1);
    cr_assert_eq(s_entries("session_refresh"), 1);

    th_expect_error(s_call_as(&a, "me.get", NULL), 404, "not_found", NULL);
    th_expect_error(s_refresh(a.refresh), 401, "invalid_refresh_token", NULL);
    th_expect_error(s_refresh(rotated.refresh), 401, "invalid_refresh_token", NULL);
    th_expect_error(s_call("auth.login",
                          "{\"body\":{\"email\":\"gone@example.com\",\"password\":\"" S_PASSWORD
                          "\"}}"),
                   401, "invalid_credentials", NULL);
    th_expect_error(s_call_as(&admin, "user.delete", "{\"id\":\"%s\"}", id), 404, "not_found", NULL);
    /* The email is free again; the other account is untouched. */
    const char *again = s_signup("gone@example.com", S_PASSWORD);
    cr_assert_str_neq(again, id);
    r = th_ok(s_call_as(&kept, "me.get", NULL), 200);
    cr_assert_str_eq(th_str(r.body, "id"), keep);
    session_t next;
    s_session_from(s_refresh(kept.refresh), &next);
}

Test(users, create_admin_publishes_created_then_updated)
{
    users_pwhash_t cheap = {.opslimit = 1, .memlimit = 8192};
    char id[USERS_ID_MAX + 1];
    bool created;
    cr_assert_eq(users_admin_create(th_env, &cheap, "root@example.com", S_PASSWORD,
                                    strlen(S_PASSWORD), id, &created),
                 0);
    session_t root = s_login("root@example.com", S_PASSWORD);
    th_reply_t me = th_ok(s_call_as(&root, "me.get", NULL), 200);
    const json_t *user = s_expect_event(0, id, "created", me.body);
    cr_assert_eq(json_array_size(json_object_get(user, "roles")), 2);

    char uid[64];
    snprintf(uid, sizeof uid, "%s", s_signup("mo@example.com", S_PASSWORD));
    size_t n = th_outbox_count();
    cr_assert_eq(users_admin_create(th_env, &cheap, "mo@example.com", NULL, 0, id, &created), 0);
    session_t mo = s_login("mo@example.com", S_PASSWORD);
    me = th_ok(s_call_as(&mo, "me.get", NULL), 200);
    s_expect_event(n, uid, "updated", me.body);
    cr_assert_eq(users_admin_create(th_env, &cheap, "mo@example.com", NULL, 0, id, &created), 0);
    cr_assert_eq(th_outbox_count(), n + 1, "an admin already: no change, no event");
}
