/*  The gateway's access checks and rate limits over HTTP: a real
    musicbus-gateway (from $MUSICBUS_BIN_DIR) with no broker behind it.
    Everything these tests look at is decided before the bus: a request
    that gets past access and limits meets the unreachable bus and is
    answered 503, which is how a test knows it went through.

    Budgets are small (--rate-default "60/min burst 3") and clients are
    told apart by X-Forwarded-For (--trust-proxy), so each test counts on
    addresses of its own. libcurl is the client: it shares no code with
    the gateway. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mb_jwt.h"

#define S_SECRET "secret-for-test-gw-http-at-least-32-bytes"
#define S_START_TIMEOUT_MS 10000

static pid_t s_pid;
static char s_dir[64];
static char s_base[128]; /* http://127.0.0.1:PORT */

static long s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*  Starts the gateway with `extra` flags (NULL-terminated), with or without
    the JWT secret, and waits for its ready file. */
static void s_start(bool with_secret, const char *const *extra)
{
    const char *bin_dir = getenv("MUSICBUS_BIN_DIR");
    cr_assert_not_null(bin_dir, "MUSICBUS_BIN_DIR is not set (run through ctest)");
    char bin[512], ready[128];
    snprintf(bin, sizeof bin, "%s/musicbus-gateway", bin_dir);
    cr_assert_eq(access(bin, X_OK), 0, "%s is not built", bin);
    snprintf(s_dir, sizeof s_dir, "/tmp/test_gw_http.XXXXXX");
    cr_assert_not_null(mkdtemp(s_dir));
    snprintf(ready, sizeof ready, "%s/ready", s_dir);
    const char *argv[32] = {bin,
                            "--http",
                            "127.0.0.1:0",
                            "--bus",
                            "tcp://127.0.0.1:9", /* nothing listens: 503s */
                            "--ready-file",
                            ready,
                            "--trust-proxy",
                            "--rate-default",
                            "60/min burst 3",
                            "--rate-signin",
                            "1/min burst 2"};
    size_t n = 12;
    for (size_t i = 0; extra && extra[i] && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    s_pid = fork();
    cr_assert_geq(s_pid, 0);
    if (s_pid == 0) {
        if (with_secret)
            setenv("MUSICBUS_JWT_SECRET", S_SECRET, 1);
        else
            unsetenv("MUSICBUS_JWT_SECRET");
        unsetenv("MUSICBUS_JWT_SECRET_FILE");
        unsetenv("MUSICBUS_JWT_ISS");
        unsetenv("MUSICBUS_JWT_AUD");
        if (!getenv("MUSICBUS_LOG_LEVEL"))
            setenv("MUSICBUS_LOG_LEVEL", "error", 1);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    long t0 = s_now_ms();
    FILE *f = NULL;
    while (!(f = fopen(ready, "r"))) {
        int status;
        cr_assert_eq(waitpid(s_pid, &status, WNOHANG), 0, "the gateway exited (0x%x)", status);
        cr_assert_lt(s_now_ms() - t0, S_START_TIMEOUT_MS, "no ready file");
        usleep(10000);
    }
    char addr[64] = "";
    cr_assert_not_null(fgets(addr, sizeof addr, f));
    fclose(f);
    addr[strcspn(addr, "\n")] = '\0';
    snprintf(s_base, sizeof s_base, "http://%s", addr);
}

static void s_stop(void)
{
    if (!s_dir[0])
        return;
    if (s_pid > 0) {
        kill(s_pid, SIGTERM);
        int status = 0;
        long t0 = s_now_ms();
        while (waitpid(s_pid, &status, WNOHANG) == 0) {
            if (s_now_ms() - t0 > 5000) {
                kill(s_pid, SIGKILL);
                waitpid(s_pid, &status, 0);
                break;
            }
            usleep(10000);
        }
        s_pid = 0;
        cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit 0 on SIGTERM (0x%x)",
                  status);
    }
    char path[128];
    snprintf(path, sizeof path, "%s/ready", s_dir);
    unlink(path);
    rmdir(s_dir);
}

static void s_setup(void)
{
    s_start(true, NULL);
}

TestSuite(gw_http, .init = s_setup, .fini = s_stop, .timeout = 60);

/* ---- a small client ------------------------------------------------------- */

typedef struct {
    long status;
    char body[4096];
    size_t body_len;
    char www_auth[256];
    char retry_after[32];
    char rl_limit[32], rl_remaining[32], rl_reset[32];
    json_t *json;
} s_res_t;

static size_t s_on_body(char *data, size_t size, size_t n, void *cls)
{
    s_res_t *res = cls;
    size_t len = size * n, room = sizeof res->body - 1 - res->body_len;
    memcpy(res->body + res->body_len, data, len < room ? len : room);
    res->body_len += len < room ? len : room;
    res->body[res->body_len] = '\0';
    return len;
}

static void s_header_value(const char *line, size_t len, const char *name, char *out, size_t size)
{
    size_t n = strlen(name);
    if (len <= n + 1 || strncasecmp(line, name, n) || line[n] != ':')
        return;
    const char *v = line + n + 1;
    size_t vlen = len - n - 1;
    while (vlen && (*v == ' ' || *v == '\t'))
        v++, vlen--;
    while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n'))
        vlen--;
    snprintf(out, size, "%.*s", (int)vlen, v);
}

static size_t s_on_header(char *data, size_t size, size_t n, void *cls)
{
    s_res_t *res = cls;
    size_t len = size * n;
    s_header_value(data, len, "WWW-Authenticate", res->www_auth, sizeof res->www_auth);
    s_header_value(data, len, "Retry-After", res->retry_after, sizeof res->retry_after);
    s_header_value(data, len, "RateLimit-Limit", res->rl_limit, sizeof res->rl_limit);
    s_header_value(data, len, "RateLimit-Remaining", res->rl_remaining, sizeof res->rl_remaining);
    s_header_value(data, len, "RateLimit-Reset", res->rl_reset, sizeof res->rl_reset);
    return len;
}

/*  One request. `token` NULL: no Authorization; `from` NULL: no
    X-Forwarded-For; `body` NULL: none. */
static s_res_t *s_req(const char *method, const char *path, const char *token, const char *from,
                      const char *body)
{
    s_res_t *res = calloc(1, sizeof *res);
    CURL *e = curl_easy_init();
    char url[512], auth[2048], xff[128];
    snprintf(url, sizeof url, "%s%s", s_base, path);
    struct curl_slist *headers = NULL;
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: %s", token);
        headers = curl_slist_append(headers, auth);
    }
    if (from) {
        snprintf(xff, sizeof xff, "X-Forwarded-For: %s", from);
        headers = curl_slist_append(headers, xff);
    }
    if (body) {
        headers = curl_slist_append(headers, "Content-Type: application/json");
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    }
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, s_on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, res);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, s_on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, res);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 10000L);
    CURLcode rc = curl_easy_perform(e);
    cr_assert_eq(rc, CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(rc));
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &res->status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(e);
    res->json = json_loadb(res->body, res->body_len, 0, NULL);
    return res;
}

static void s_free(s_res_t *res)
{
    json_decref(res->json);
    free(res);
}

static const char *s_type(const s_res_t *res)
{
    return json_string_value(json_object_get(res->json, "type"));
}

/*  "Bearer <token>" for a token signed with `secret`, valid from now on
    for `ttl` seconds (negative: expired). */
static char *s_bearer(const char *secret, const char *sub, const char *tier, unsigned roles,
                      long ttl)
{
    mb_jwt_key_t *key = mb_jwt_key_new(secret, strlen(secret));
    mb_jwt_policy_t policy = {.iss = "musicbus", .aud = "musicbus-api", .leeway_s = 30};
    mb_jwt_claims_t c = {.roles = roles};
    c.iat = time(NULL) - (ttl < 0 ? 3600 : 0);
    c.exp = c.iat + (ttl < 0 ? 60 : ttl);
    snprintf(c.sub, sizeof c.sub, "%s", sub);
    snprintf(c.sid, sizeof c.sid, "session-%s", sub);
    snprintf(c.tier, sizeof c.tier, "%s", tier);
    char *token = NULL, *header = NULL;
    cr_assert_eq(mb_jwt_sign(key, &policy, &c, &token), 0);
    cr_assert(asprintf(&header, "Bearer %s", token) > 0);
    free(token);
    mb_jwt_key_destroy(&key);
    return header;
}

/* ---- tests ----------------------------------------------------------------- */

/*  Usage: a valid token passes /v1/me's check (and meets the missing
    bus); no token is a 401 with a plain Bearer challenge. */
Test(gw_http, usage)
{
    char *alice = s_bearer(S_SECRET, "alice", "free", MB_ROLE_USER, 900);
    s_res_t *r = s_req("GET", "/v1/me", alice, "192.0.2.1", NULL);
    cr_assert_eq(r->status, 503, "through to the (missing) bus: %ld %s", r->status, r->body);
    cr_assert_str_eq(r->www_auth, "");
    cr_assert_str_eq(r->rl_limit, "3", "counted on the default budget");
    cr_assert_str_eq(r->rl_remaining, "2");
    cr_assert_str_eq(r->rl_reset, "1", "back at rest in 1 s");
    s_free(r);

    r = s_req("GET", "/v1/me", NULL, "192.0.2.1", NULL);
    cr_assert_eq(r->status, 401, "%s", r->body);
    cr_assert_str_eq(r->www_auth, "Bearer realm=\"musicbus\"");
    cr_assert_str_eq(s_type(r), "unauthenticated");
    s_free(r);
    free(alice);
}

Test(gw_http, bad_tokens_are_401_with_the_reason)
{
    struct {
        char *token;
        const char *reason;
    } cases[] = {
        {s_bearer(S_SECRET, "bob", "free", MB_ROLE_USER, -1), "token expired"},
        {s_bearer("another-secret-which-is-also-32-bytes-long", "bob", "free", MB_ROLE_USER, 900),
         "bad signature"},
        /* {"alg":"none"} . {"sub":"bob"} . (no signature) */
        {strdup("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJib2IifQ."), "alg must be HS256"},
        {strdup("Bearer garbage"), "not three dot-separated parts"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char from[32];
        snprintf(from, sizeof from, "192.0.2.%zu", 10 + i);
        s_res_t *r = s_req("GET", "/v1/me", cases[i].token, from, NULL);
        cr_assert_eq(r->status, 401, "%s: %ld %s", cases[i].reason, r->status, r->body);
        char want[256];
        snprintf(want, sizeof want,
                 "Bearer realm=\"musicbus\", error=\"invalid_token\", error_description=\"%s\"",
                 cases[i].reason);
        cr_assert_str_eq(r->www_auth, want);
        cr_assert_str_eq(s_type(r), "invalid_token");
        s_free(r);
        free(cases[i].token);
    }
}

/*  Catalog writes are for admins; reads ignore Authorization. */
Test(gw_http, roles_and_public_routes)
{
    char *user = s_bearer(S_SECRET, "u1", "premium", MB_ROLE_USER, 900);
    char *admin = s_bearer(S_SECRET, "a1", "free", MB_ROLE_USER | MB_ROLE_ADMIN, 900);
    const char *artist = "{\"name\":\"Queen\"}";
    s_res_t *r = s_req("POST", "/v1/artists", NULL, "192.0.2.20", artist);
    cr_assert_eq(r->status, 401, "%s", r->body);
    s_free(r);
    r = s_req("POST", "/v1/artists", user, "192.0.2.20", artist);
    cr_assert_eq(r->status, 403, "%s", r->body);
    cr_assert_str_eq(s_type(r), "forbidden");
    cr_assert_str_eq(r->www_auth, "Bearer realm=\"musicbus\", error=\"insufficient_scope\", "
                                  "error_description=\"admin role required\"");
    s_free(r);
    r = s_req("DELETE", "/v1/tracks/abc", user, "192.0.2.20", NULL);
    cr_assert_eq(r->status, 403, "%s", r->body);
    s_free(r);
    r = s_req("POST", "/v1/artists", admin, "192.0.2.20", artist);
    cr_assert_eq(r->status, 503, "an admin gets through: %ld %s", r->status, r->body);
    s_free(r);
    r = s_req("GET", "/v1/tracks/abc", "Bearer garbage", "192.0.2.21", NULL);
    cr_assert_eq(r->status, 503, "public: the header is not looked at: %ld %s", r->status, r->body);
    s_free(r);
    free(user);
    free(admin);
}

Test(gw_http, rate_limit_429)
{
    for (int i = 0; i < 3; i++) {
        s_res_t *r = s_req("GET", "/v1/tracks/abc", NULL, "198.51.100.1", NULL);
        cr_assert_eq(r->status, 503, "%s", r->body);
        char want[8];
        snprintf(want, sizeof want, "%d", 2 - i);
        cr_assert_str_eq(r->rl_remaining, want);
        s_free(r);
    }
    s_res_t *r = s_req("GET", "/v1/tracks/abc", NULL, "198.51.100.1", NULL);
    cr_assert_eq(r->status, 429, "%s", r->body);
    cr_assert_str_eq(s_type(r), "rate_limited");
    cr_assert_str_eq(r->retry_after, "1", "one a second, rounded up");
    cr_assert_str_eq(r->rl_remaining, "0");
    cr_assert_str_eq(r->rl_limit, "3");
    s_free(r);
    /* Another address, and X-Forwarded-For's last entry is the one. */
    r = s_req("GET", "/v1/tracks/abc", NULL, "198.51.100.1, 198.51.100.2", NULL);
    cr_assert_eq(r->status, 503, "%s", r->body);
    s_free(r);
    /* Signed-in users count per user, whatever their address. */
    char *carol = s_bearer(S_SECRET, "carol", "free", MB_ROLE_USER, 900);
    for (int i = 0; i < 3; i++) {
        r = s_req("GET", "/v1/me", carol, "198.51.100.1", NULL);
        cr_assert_eq(r->status, 503, "%s", r->body);
        s_free(r);
    }
    r = s_req("GET", "/v1/me", carol, "198.51.100.9", NULL);
    cr_assert_eq(r->status, 429, "%s", r->body);
    s_free(r);
    free(carol);
    /* Refused tokens count per address too. */
    for (int i = 0; i < 3; i++) {
        r = s_req("GET", "/v1/me", "Bearer x.y.z", "198.51.100.3", NULL);
        cr_assert_eq(r->status, 401, "%s", r->body);
        s_free(r);
    }
    r = s_req("GET", "/v1/me", "Bearer x.y.z", "198.51.100.3", NULL);
    cr_assert_eq(r->status, 429, "guessing tokens is limited: %s", r->body);
    s_free(r);
    /* The gateway's own routes are not counted. */
    for (int i = 0; i < 5; i++) {
        r = s_req("GET", "/healthz", NULL, "198.51.100.1", NULL);
        cr_assert_eq(r->status, 200);
        cr_assert_str_eq(r->rl_limit, "");
        s_free(r);
    }
}

/*  Sign-in: per address and per (normalised) email. */
Test(gw_http, signin_budget)
{
    const char *login = "{\"email\":\"Dave@Example.com\",\"password\":\"not-checked-here\"}";
    const char *login2 = "{\"email\":\" dave@example.COM\",\"password\":\"not-checked-here\"}";
    s_res_t *r = s_req("POST", "/v1/auth/login", NULL, "203.0.113.1", login);
    cr_assert_eq(r->status, 503, "%s", r->body);
    cr_assert_str_eq(r->rl_limit, "2", "the signin budget");
    s_free(r);
    r = s_req("POST", "/v1/auth/login", NULL, "203.0.113.2", login2);
    cr_assert_eq(r->status, 503, "%s", r->body);
    s_free(r);
    r = s_req("POST", "/v1/auth/login", NULL, "203.0.113.3", login);
    cr_assert_eq(r->status, 429, "the account's burst is spent: %s", r->body);
    cr_assert_str_eq(r->retry_after, "60");
    s_free(r);
    /* One address trying many accounts. */
    const char *other[] = {"{\"email\":\"e1@x.com\",\"password\":\"p\"}",
                           "{\"email\":\"e2@x.com\",\"password\":\"p\"}",
                           "{\"email\":\"e3@x.com\",\"password\":\"p\"}"};
    for (int i = 0; i < 3; i++) {
        r = s_req("POST", "/v1/auth/login", NULL, "203.0.113.9", other[i]);
        cr_assert_eq(r->status, i < 2 ? 503 : 429, "attempt %d: %s", i + 1, r->body);
        s_free(r);
    }
    /* A body that is not even valid is counted all the same. */
    r = s_req("POST", "/v1/auth/login", NULL, "203.0.113.9", "{\"email\":");
    cr_assert_eq(r->status, 429, "%s", r->body);
    s_free(r);
}

/*  Gateways started by the test itself. */
TestSuite(gw_http_start, .fini = s_stop, .timeout = 60);

Test(gw_http_start, no_secret_means_503_for_guarded_routes)
{
    s_start(false, NULL);
    char *alice = s_bearer(S_SECRET, "alice", "free", MB_ROLE_USER, 900);
    s_res_t *r = s_req("GET", "/v1/me", alice, "192.0.2.1", NULL);
    cr_assert_eq(r->status, 503, "%s", r->body);
    cr_assert_str_eq(s_type(r), "unavailable");
    s_free(r);
    free(alice);
}

Test(gw_http_start, bad_settings_stop_the_start)
{
    const char *bin_dir = getenv("MUSICBUS_BIN_DIR");
    cr_assert_not_null(bin_dir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "MUSICBUS_JWT_SECRET=%s MUSICBUS_LOG_LEVEL=error timeout 10 %s/musicbus-gateway "
             "--http 127.0.0.1:0 --rate-signin '10/fortnight' 2>/dev/null",
             S_SECRET, bin_dir);
    int status = system(cmd);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "a bad budget: exit 1 (0x%x)", status);
    snprintf(cmd, sizeof cmd,
             "MUSICBUS_JWT_SECRET=short timeout 10 %s/musicbus-gateway --http 127.0.0.1:0 "
             "2>/dev/null",
             bin_dir);
    status = system(cmd);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "a short secret: exit 1 (0x%x)",
              status);
}

Test(gw_http_start, secret_from_a_file)
{
    char path[] = "/tmp/test_gw_http_secret.XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, S_SECRET "\n", strlen(S_SECRET) + 1), (ssize_t)strlen(S_SECRET) + 1);
    close(fd);
    const char *extra[] = {"--jwt-secret-file", path, NULL};
    s_start(false, extra);
    char *alice = s_bearer(S_SECRET, "alice", "free", MB_ROLE_USER, 900);
    s_res_t *r = s_req("GET", "/v1/me", alice, "192.0.2.1", NULL);
    cr_assert_eq(r->status, 503, "%s", r->body);
    cr_assert_str_neq(s_type(r), "unavailable", "the token was checked: %s", r->body);
    s_free(r);
    free(alice);
    unlink(path);
}
