/*  End to end on the real bus: musicbus-broker, musicbus-catalog and
    musicbus-stats as processes, the catalog's track events reaching the
    stats consumer, musicbus-import-listens run twice on the same file
    (counted once), a play reported through play.report going out through
    the outbox and back in through the consumer, a malformed event skipped,
    and SIGTERM ending every process with 0; then the routes over HTTP
    through musicbus-gateway with signed tokens, the royalty report as
    text/csv. Skips when the executables are not built in this build
    folder. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "mb_client.h"
#include "mb_envelope.h"
#include "mb_error.h"
#include "mb_events.h"
#include "mb_jwt.h"
#include "mb_msgpack.h"
#include "mb_zmq.h"
#include "actor_harness.h"
#include "stats_time.h"

extern char **environ;

#define S_PROCS_MAX 5

static char s_dir[64];
static char s_bus[256];
static pid_t s_procs[S_PROCS_MAX];
static const char *s_names[S_PROCS_MAX];
static size_t s_n_procs;
static mb_client_t *s_client;
static uint64_t s_rid;

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void s_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static bool s_bin(const char *name, char *out, size_t cap)
{
    const char *dir = getenv("MUSICBUS_BIN_DIR");
    cr_assert(dir, "MUSICBUS_BIN_DIR is not set (run through ctest)");
    snprintf(out, cap, "%s/%s", dir, name);
    return access(out, X_OK) == 0;
}

/*  Starts `argv` with stdout to `out` (NULL: the log) and stderr to
    <dir>/<name>.log. */
static pid_t s_spawn(const char *name, char *const argv[], const char *out)
{
    char log[128];
    snprintf(log, sizeof log, "%s/%s.log", s_dir, name);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out ? out : log,
                                     O_WRONLY | O_CREAT | O_TRUNC | (out ? 0 : O_APPEND), 0644);
    pid_t pid;
    cr_assert_eq(posix_spawn(&pid, argv[0], &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

/*  Waits for a ready file and copies its text into out. */
static void s_wait_ready(const char *path, pid_t pid, char *out, size_t cap)
{
    int64_t until = s_now_ms() + 15000;
    for (;;) {
        FILE *f = fopen(path, "r");
        if (f) {
            bool got = fgets(out, (int)cap, f) != NULL;
            fclose(f);
            if (got) {
                out[strcspn(out, "\r\n")] = '\0';
                return;
            }
        }
        int status;
        cr_assert_neq(waitpid(pid, &status, WNOHANG), pid, "%s exited before it was ready", path);
        cr_assert(s_now_ms() < until, "no ready file %s in 15 s", path);
        s_sleep_ms(20);
    }
}

/*  Starts an actor or the broker and waits until it is ready. */
static void s_start(const char *name, const char *bin, bool broker)
{
    char ready[128], data[128], got[256];
    snprintf(ready, sizeof ready, "%s/%s.ready", s_dir, name);
    snprintf(data, sizeof data, "%s/data", s_dir);
    char *argv[12];
    size_t n = 0;
    argv[n++] = (char *)bin;
    argv[n++] = broker ? "--bind" : "--bus";
    argv[n++] = broker ? "tcp://127.0.0.1:*" : s_bus;
    argv[n++] = "--data";
    argv[n++] = data;
    argv[n++] = "--ready-file";
    argv[n++] = ready;
    if (!broker) {
        argv[n++] = "--map-size";
        argv[n++] = "256";
    }
    argv[n] = NULL;
    cr_assert(s_n_procs < S_PROCS_MAX);
    pid_t pid = s_spawn(name, argv, NULL);
    s_names[s_n_procs] = name;
    s_procs[s_n_procs++] = pid;
    s_wait_ready(ready, pid, got, sizeof got);
    if (broker)
        snprintf(s_bus, sizeof s_bus, "%s", got);
}

static void s_teardown(void)
{
    mb_client_destroy(&s_client);
    for (size_t i = s_n_procs; i-- > 0;) {
        kill(s_procs[i], SIGTERM);
        int status = 0;
        waitpid(s_procs[i], &status, 0);
        cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s did not exit 0 on SIGTERM",
                  s_names[i]);
    }
    s_n_procs = 0;
    mb_zmq_shutdown();
    if (!getenv("STATS_TEST_KEEP"))
        th_rmdir(s_dir);
}

TestSuite(stats_bus, .fini = s_teardown, .timeout = 120);

/*  Calls `op` of `service` with args as JSON (a new reference, taken),
    as `user` (NULL: no auth) with the admin role when `admin`. Returns
    the reply as {"status": n, "body": ..., "error": {...}} (caller frees). */
static json_t *s_call(const char *service, const char *op, const char *user, bool admin,
                      json_t *args)
{
    msgpack_sbuffer req;
    msgpack_sbuffer_init(&req);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    uint64_t rid = ++s_rid;
    mb_request_pack_head(&pk, op, rid, 10000, (user != NULL) + (args != NULL));
    if (user) {
        mb_jwt_claims_t claims = {.roles = MB_ROLE_USER | (admin ? MB_ROLE_ADMIN : 0)};
        snprintf(claims.sub, sizeof claims.sub, "%s", user);
        snprintf(claims.sid, sizeof claims.sid, "s");
        snprintf(claims.tier, sizeof claims.tier, "free");
        mb_pack_cstr(&pk, "auth");
        mb_jwt_pack_auth(&pk, &claims);
    }
    if (args) {
        mb_pack_cstr(&pk, "args");
        th_pack_json(&pk, args);
        json_decref(args);
    }
    json_t *out = NULL;
    for (int tries = 0; !out && tries < 3; tries++) {
        zmq_msg_t msg;
        int rc = mb_client_call(s_client, service, req.data, req.size, 10000, &msg);
        cr_assert_eq(rc, 0, "%s %s: %s", service, op, mb_strerror(rc));
        mb_reply_t rep;
        const char *why;
        cr_assert_eq(mb_reply_decode(&rep, zmq_msg_data(&msg), zmq_msg_size(&msg), &why), 0);
        zmq_msg_close(&msg);
        if (rep.rid == rid) {
            out = json_object();
            json_object_set_new(out, "status", json_integer(rep.status));
            if (rep.body)
                json_object_set_new(out, "body", th_to_json(rep.body));
            if (rep.code)
                json_object_set_new(out, "error", json_stringn(rep.code, rep.code_len));
        }
        mb_reply_release(&rep);
    }
    msgpack_sbuffer_destroy(&req);
    cr_assert_not_null(out);
    return out;
}

static int s_status(const json_t *r)
{
    return (int)json_integer_value(json_object_get(r, "status"));
}

static const char *s_id_of(json_t *r)
{
    cr_assert_eq(s_status(r), 201, "create answered %d", s_status(r));
    return json_string_value(json_object_get(json_object_get(r, "body"), "id"));
}

/*  Polls track.stats of `track` until all_time.plays is `plays` (10 s). */
static json_t *s_wait_plays(const char *track, long long plays)
{
    int64_t until = s_now_ms() + 10000;
    for (;;) {
        json_t *r = s_call("stats", "track.stats", "admin", true, th_json("{\"id\":\"%s\"}", track));
        long long now = -1;
        if (s_status(r) == 200)
            now = json_integer_value(
                json_object_get(json_object_get(json_object_get(r, "body"), "all_time"), "plays"));
        if (now == plays)
            return r;
        json_decref(r);
        cr_assert(s_now_ms() < until, "track %s: %lld plays, waited for %lld", track, now, plays);
        s_sleep_ms(50);
    }
}

/*  Runs the importer on `file`; returns its JSON summary (stdout). */
static json_t *s_import(const char *bin, const char *file)
{
    char out[128], unmatched[128];
    snprintf(out, sizeof out, "%s/import.out", s_dir);
    snprintf(unmatched, sizeof unmatched, "%s/unmatched.jsonl", s_dir);
    char *argv[] = {(char *)bin,   "--bus",   s_bus,     "--user",     "u1",
                    "--unmatched", unmatched, "--quiet", (char *)file, NULL};
    pid_t pid = s_spawn("import", argv, out);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the importer failed (see %s)", s_dir);
    json_error_t err;
    json_t *summary = json_load_file(out, 0, &err);
    cr_assert_not_null(summary, "no summary: %s", err.text);
    return summary;
}

static long long s_get(const json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

Test(stats_bus, plays_from_the_importer_and_from_clients_are_counted_once)
{
    char broker[PATH_MAX], catalog[PATH_MAX], stats[PATH_MAX], importer[PATH_MAX];
    if (!s_bin("musicbus-broker", broker, sizeof broker) ||
        !s_bin("musicbus-catalog", catalog, sizeof catalog) ||
        !s_bin("musicbus-stats", stats, sizeof stats) ||
        !s_bin("musicbus-import-listens", importer, sizeof importer))
        cr_skip_test("broker, catalog, stats or importer not built in this build folder");
    th_tmpdir(s_dir, "test_stats_bus");
    s_start("broker", broker, true);
    s_start("catalog", catalog, false);
    s_start("stats", stats, false);
    s_client = mb_client_new(s_bus);

    /* The catalog: two tracks; their catalog.track events reach stats. */
    json_t *r =
        s_call("catalog", "artist.create", "admin", true, th_json("{\"body\":{\"name\":\"ABBA\"}}"));
    char artist[64], album[64], queen[64], jingle[64];
    snprintf(artist, sizeof artist, "%s", s_id_of(r));
    json_decref(r);
    r = s_call("catalog", "album.create", "admin", true,
               th_json("{\"body\":{\"title\":\"Arrival\",\"artist_ids\":[\"%s\"]}}", artist));
    snprintf(album, sizeof album, "%s", s_id_of(r));
    json_decref(r);
    r = s_call("catalog", "track.create", "admin", true,
               th_json("{\"body\":{\"title\":\"Dancing Queen\",\"artist_ids\":[\"%s\"],"
                      "\"album_id\":\"%s\",\"track_number\":1,\"duration_ms\":231000,"
                      "\"isrc\":\"SEAYD7601020\"}}",
                      artist, album));
    snprintf(queen, sizeof queen, "%s", s_id_of(r));
    json_decref(r);
    r = s_call("catalog", "track.create", "admin", true,
               th_json("{\"body\":{\"title\":\"Jingle\",\"artist_ids\":[\"%s\"],"
                      "\"album_id\":\"%s\",\"track_number\":2,\"duration_ms\":20000}}",
                      artist, album));
    snprintf(jingle, sizeof jingle, "%s", s_id_of(r));
    json_decref(r);
    json_decref(s_wait_plays(queen, 0));
    json_decref(s_wait_plays(jingle, 0));

    /* u1 lives in Sweden (as the users actor would say). */
    mb_events_t *bus = mb_events_new(s_bus);
    const char *user_event = "\x83\xa6"
                             "action\xa7"
                             "created\xa2id\xa2u1\xa4user\x82\xa2id\xa2u1"
                             "\xa7"
                             "country\xa2SE";
    cr_assert_eq(mb_events_publish(bus, "users.user", "u1", user_event, strlen(user_event), NULL),
                 0, "%s", mb_events_error(bus));
    /* A malformed play: skipped, the consumer goes on. */
    cr_assert_eq(mb_events_publish(bus, "play", "c:u1:bad", "\x81\xa4user\xa2u1", 9, NULL), 0);

    /* Listens: two of Dancing Queen (by ISRC, by name), one of Jingle,
       one unknown, one malformed. */
    char file[128];
    snprintf(file, sizeof file, "%s/listens.jsonl", s_dir);
    FILE *f = fopen(file, "w");
    fprintf(f, "{\"listen_type\":\"import\",\"payload\":["
               "{\"listened_at\":1700000000,\"track_metadata\":{\"artist_name\":\"X\","
               "\"track_name\":\"Y\",\"additional_info\":{\"isrc\":\"se-ayd-76-01020\"}}},"
               "{\"listened_at\":1700000300,\"track_metadata\":{\"artist_name\":\"abba\","
               "\"track_name\":\"Dancing Queen!\"}}]}\n"
               "{\"listened_at\":1700000600,\"track_metadata\":{\"artist_name\":\"ABBA\","
               "\"track_name\":\"Jingle\"}}\n"
               "{\"listened_at\":1700000900,\"track_metadata\":{\"artist_name\":\"Nobody\","
               "\"track_name\":\"Nothing\"}}\n"
               "{\"listened_at\":1700001200,\"track_metadata\":{}}\n");
    fclose(f);
    for (int run = 0; run < 2; run++) {
        json_t *sum = s_import(importer, file);
        cr_assert_eq(s_get(sum, "read"), 5);
        cr_assert_eq(s_get(sum, "matched"), 3);
        cr_assert_eq(s_get(sum, "unmatched"), 1);
        cr_assert_eq(s_get(sum, "rejected"), 1);
        cr_assert_eq(s_get(sum, "published"), 3, "every run publishes; the consumer dedupes");
        json_decref(sum);
    }

    /* A client's report, sent twice, after the imports in the log: once it
       is counted, everything before it is too. */
    char started[STATS_TIME_MAX + 1];
    stats_time_format(1700003600000LL, started);
    for (int i = 0; i < 2; i++) {
        r = s_call("stats", "play.report", "u1", false,
                   th_json("{\"body\":{\"track_id\":\"%s\",\"started_at\":\"%s\",\"ms_played\":"
                          "100000,\"context\":{\"type\":\"album\",\"id\":\"%s\"},"
                          "\"client_id\":\"phone-1\"}}",
                          queen, started, album));
        cr_assert_eq(s_status(r), 202);
        json_decref(r);
    }
    r = s_wait_plays(queen, 3);
    json_t *all = json_object_get(json_object_get(r, "body"), "all_time");
    cr_assert_eq(s_get(all, "streams"), 3);
    cr_assert_eq(s_get(all, "listeners"), 1);
    json_decref(r);
    r = s_wait_plays(jingle, 1);
    all = json_object_get(json_object_get(r, "body"), "all_time");
    cr_assert_eq(s_get(all, "streams"), 0, "20 seconds is not a stream");
    json_decref(r);

    r = s_call("stats", "history.get", "u1", false, NULL);
    cr_assert_eq(json_array_size(json_object_get(json_object_get(r, "body"), "items")), 4);
    json_decref(r);
    r = s_call("stats", "charts.top_tracks", NULL, false,
               th_json("{\"date\":\"2023-11-14\",\"country\":\"SE\"}"));
    json_t *items = json_object_get(json_object_get(r, "body"), "items");
    cr_assert_eq(json_array_size(items), 1);
    cr_assert_eq(s_get(json_array_get(items, 0), "streams"), 3);
    json_decref(r);

    /* The unmatched report names the unknown listen. */
    char path[128];
    snprintf(path, sizeof path, "%s/unmatched.jsonl", s_dir);
    f = fopen(path, "r");
    char line[1024];
    int unmatched = 0, rejected = 0;
    while (fgets(line, sizeof line, f)) {
        unmatched += strstr(line, "\"unmatched\"") && strstr(line, "Nobody");
        rejected += strstr(line, "\"rejected\"") != NULL;
    }
    fclose(f);
    cr_assert_eq(unmatched, 1);
    cr_assert_eq(rejected, 1);
    mb_events_destroy(&bus);
}

/* ---- over HTTP, through the gateway ------------------------------------------------ */

typedef struct {
    long status;
    char *body;
    size_t len;
    char type[128];
    char disposition[256];
} s_http_t;

static size_t s_http_body(char *data, size_t size, size_t n, void *arg)
{
    s_http_t *r = arg;
    r->body = realloc(r->body, r->len + size * n + 1);
    memcpy(r->body + r->len, data, size * n);
    r->len += size * n;
    r->body[r->len] = '\0';
    return size * n;
}

static size_t s_http_header(char *data, size_t size, size_t n, void *arg)
{
    s_http_t *r = arg;
    size_t len = size * n;
    if (len > 14 && strncasecmp(data, "Content-Type: ", 14) == 0)
        snprintf(r->type, sizeof r->type, "%.*s", (int)strcspn(data + 14, "\r\n"), data + 14);
    if (len > 21 && strncasecmp(data, "Content-Disposition: ", 21) == 0)
        snprintf(r->disposition, sizeof r->disposition, "%.*s", (int)strcspn(data + 21, "\r\n"),
                 data + 21);
    return len;
}

/*  One HTTP request to the gateway at `addr`; the caller frees r.body. */
static s_http_t s_http(const char *addr, const char *method, const char *path, const char *token,
                       const char *body)
{
    s_http_t r = {0};
    char url[512], auth[1200];
    snprintf(url, sizeof url, "http://%s%s", addr, path);
    CURL *c = curl_easy_init();
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        headers = curl_slist_append(headers, auth);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s_http_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, s_http_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    cr_assert_eq(curl_easy_perform(c), CURLE_OK, "%s %s", method, path);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    if (!r.body)
        r.body = calloc(1, 1);
    return r;
}

static char *s_token(mb_jwt_key_t *key, const char *user, bool admin)
{
    mb_jwt_policy_t policy;
    mb_jwt_policy_default(&policy);
    mb_jwt_claims_t claims = {.roles = MB_ROLE_USER | (admin ? MB_ROLE_ADMIN : 0),
                              .iat = time(NULL),
                              .exp = time(NULL) + 600};
    snprintf(claims.sub, sizeof claims.sub, "%s", user);
    snprintf(claims.sid, sizeof claims.sid, "session-%s", user);
    snprintf(claims.tier, sizeof claims.tier, "free");
    char *token = NULL;
    cr_assert_eq(mb_jwt_sign(key, &policy, &claims, &token), 0);
    return token;
}

Test(stats_bus, the_routes_answer_over_http_and_the_royalty_report_is_csv)
{
    char broker[PATH_MAX], catalog[PATH_MAX], stats[PATH_MAX], gateway[PATH_MAX];
    const char *src = getenv("MUSICBUS_SOURCE_DIR");
    if (!s_bin("musicbus-broker", broker, sizeof broker) ||
        !s_bin("musicbus-catalog", catalog, sizeof catalog) ||
        !s_bin("musicbus-stats", stats, sizeof stats) ||
        !s_bin("musicbus-gateway", gateway, sizeof gateway) || !src)
        cr_skip_test("broker, catalog, stats or gateway not built in this build folder");
    th_tmpdir(s_dir, "test_stats_http");
    s_start("broker", broker, true);
    s_start("catalog", catalog, false);
    s_start("stats", stats, false);
    s_client = mb_client_new(s_bus);

    /* The gateway, serving the source tree's schema, with a secret of its own. */
    char secret[128], schema[PATH_MAX], ready[128], data[128], addr[128];
    snprintf(secret, sizeof secret, "%s/jwt.secret", s_dir);
    FILE *f = fopen(secret, "w");
    fprintf(f, "stats-test-secret-of-more-than-thirty-two-bytes-0123456789");
    fclose(f);
    chmod(secret, 0600);
    snprintf(schema, sizeof schema, "%s/schemas/openapi.json", src);
    snprintf(ready, sizeof ready, "%s/gateway.ready", s_dir);
    snprintf(data, sizeof data, "%s/data", s_dir);
    char *argv[] = {gateway, "--http",   "127.0.0.1:0", "--bus",
                    s_bus,   "--schema", schema,        "--jwt-secret-file",
                    secret,  "--data",   data,          "--ready-file",
                    ready,   NULL};
    pid_t pid = s_spawn("gateway", argv, NULL);
    s_names[s_n_procs] = "gateway";
    s_procs[s_n_procs++] = pid;
    s_wait_ready(ready, pid, addr, sizeof addr);
    mb_jwt_key_t *key;
    cr_assert_eq(mb_jwt_key_load(secret, &key), 0);
    char *user = s_token(key, "u1", false), *admin = s_token(key, "boss", true);

    json_t *r =
        s_call("catalog", "artist.create", "admin", true, th_json("{\"body\":{\"name\":\"ABBA\"}}"));
    char artist[64], album[64], track[64];
    snprintf(artist, sizeof artist, "%s", s_id_of(r));
    json_decref(r);
    r = s_call("catalog", "album.create", "admin", true,
               th_json("{\"body\":{\"title\":\"Arrival\",\"artist_ids\":[\"%s\"]}}", artist));
    snprintf(album, sizeof album, "%s", s_id_of(r));
    json_decref(r);
    r = s_call("catalog", "track.create", "admin", true,
               th_json("{\"body\":{\"title\":\"Dancing Queen, live\",\"artist_ids\":[\"%s\"],"
                      "\"album_id\":\"%s\",\"track_number\":1,\"duration_ms\":231000,"
                      "\"isrc\":\"SEAYD7601020\"}}",
                      artist, album));
    snprintf(track, sizeof track, "%s", s_id_of(r));
    json_decref(r);
    json_decref(s_wait_plays(track, 0));

    char body[512], path[256];
    snprintf(body, sizeof body,
             "{\"track_id\":\"%s\",\"started_at\":\"2026-03-02T10:00:00Z\",\"ms_played\":45000,"
             "\"context\":{\"type\":\"album\",\"id\":\"%s\"},\"client_id\":\"web-1\"}",
             track, album);
    s_http_t h = s_http(addr, "POST", "/v1/me/plays", NULL, body);
    cr_assert_eq(h.status, 401, "%s", h.body);
    free(h.body);
    h = s_http(addr, "POST", "/v1/me/plays", user, "{\"track_id\":\"x\"}");
    cr_assert_eq(h.status, 400, "the gateway checks the body against the schema: %s", h.body);
    free(h.body);
    h = s_http(addr, "POST", "/v1/me/plays", user, body);
    cr_assert_eq(h.status, 202, "%s", h.body);
    cr_assert(strstr(h.body, "\"counted_as_stream\":true"), "%s", h.body);
    free(h.body);
    json_decref(s_wait_plays(track, 1));

    h = s_http(addr, "GET", "/v1/me/history?limit=5", user, NULL);
    cr_assert_eq(h.status, 200, "%s", h.body);
    cr_assert(strstr(h.body, "2026-03-02T10:00:00.000Z"), "%s", h.body);
    free(h.body);
    h = s_http(addr, "GET", "/v1/me/top/tracks?range=all", user, NULL);
    cr_assert_eq(h.status, 200, "%s", h.body);
    cr_assert(strstr(h.body, track), "%s", h.body);
    free(h.body);
    h = s_http(addr, "GET", "/v1/me/top/artists?range=1y", user, NULL);
    cr_assert_eq(h.status, 400, "%s", h.body);
    free(h.body);
    h = s_http(addr, "GET", "/v1/charts/top-tracks?date=2026-03-02&days=7", NULL, NULL);
    cr_assert_eq(h.status, 200, "%s", h.body);
    cr_assert(strstr(h.body, "\"streams\":1"), "%s", h.body);
    free(h.body);
    snprintf(path, sizeof path, "/v1/tracks/%s/stats?date=2026-03-02&days=2", track);
    h = s_http(addr, "GET", path, user, NULL);
    cr_assert_eq(h.status, 403, "%s", h.body);
    free(h.body);
    h = s_http(addr, "GET", path, admin, NULL);
    cr_assert_eq(h.status, 200, "%s", h.body);
    free(h.body);

    h = s_http(addr, "GET", "/v1/reports/royalties?from=2026-03-01&to=2026-03-31", admin, NULL);
    cr_assert_eq(h.status, 200, "%s", h.body);
    cr_assert(strncmp(h.type, "text/csv", 8) == 0, "Content-Type %s", h.type);
    cr_assert(strstr(h.disposition, "royalties-2026-03-01-2026-03-31.csv"), "%s", h.disposition);
    char expect[256];
    snprintf(expect, sizeof expect,
             "track_id,isrc,title,artist_ids,streams\r\n%s,SEAYD7601020,\"Dancing Queen, "
             "live\",%s,1\r\n",
             track, artist);
    cr_assert_str_eq(h.body, expect);
    free(h.body);
    h = s_http(addr, "GET", "/v1/reports/royalties?from=2026-03-01", admin, NULL);
    cr_assert_eq(h.status, 400, "to is required: %s", h.body);
    free(h.body);
    free(user);
    free(admin);
    mb_jwt_key_destroy(&key);
}
