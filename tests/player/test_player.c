/*  A real player through the gateway: broker, catalog, users, transcode
    and gateway as real processes (127.0.0.1, ports the OS picks), a 30 s
    FLAC master uploaded by an admin over HTTP, and hls.js in headless
    Debian Chromium (player.mjs, driven by playwright-core) playing the
    signed master playlist of a premium and of a free listener: levels,
    currentTime, forced rung switches. See README.md.

    The stack comes from tests/integration's harness (it_harness): broker,
    catalog, users, transcode and gateway, sharing the stack's signing and
    media secrets.

    Fails, saying what to install, when node or Chromium is missing
    (scripts/test installs both). The first run puts hls.js and
    playwright-core into the build folder's copy of this folder with
    `npm ci` (PLAYER_DIR). */
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "it.h"
#include "stack.h"
#include "tc_media.h"

#define S_TRACK_S 30.0
#define S_AUDIO_READY_MS 120000 /* transcoding on a loaded 2-core machine */
#define S_PLAYER_MS 200000      /* player.mjs's own watchdog is 150 s */
#define S_PASSWORD "player-pass-Zk48q"
#define S_RUNGS_MAX 16

static it_stack_t *s_stack;
static char s_origin[300];     /* http://127.0.0.1:PORT of the gateway */
static char s_node[4096];      /* node, found on PATH */
static const char *s_chromium; /* PLAYER_CHROMIUM or /usr/bin/chromium */

static void s_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void s_say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "test_player[%d]: ", (int)getpid());
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void s_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/*  `name` found on PATH, into out. */
static bool s_which(const char *name, char *out, size_t cap)
{
    const char *path = getenv("PATH");
    char *copy = strdup(path ? path : "/usr/local/bin:/usr/bin:/bin");
    bool found = false;
    for (char *save = NULL, *dir = strtok_r(copy, ":", &save); dir && !found;
         dir = strtok_r(NULL, ":", &save)) {
        snprintf(out, cap, "%s/%s", dir, name);
        found = access(out, X_OK) == 0;
    }
    free(copy);
    return found;
}

/*  it_call_as() with a borrowed body (may be NULL). */
static json_t *s_call(const char *bearer, const char *method, const char *path, json_t *body,
                      long expect)
{
    return it_call_as(s_stack, bearer, method, path, body ? json_incref(body) : NULL, expect);
}

static void s_setup(void)
{
    cr_assert(s_which("node", s_node, sizeof s_node),
              "node is not installed (scripts/test installs it)");
    s_chromium = getenv("PLAYER_CHROMIUM") ? getenv("PLAYER_CHROMIUM") : "/usr/bin/chromium";
    cr_assert_eq(access(s_chromium, X_OK), 0,
                 "%s is not installed (scripts/test installs Debian's chromium)", s_chromium);
    struct stat st;
    if (stat(PLAYER_DIR "/node_modules/hls.js/package.json", &st) != 0 ||
        stat(PLAYER_DIR "/node_modules/playwright-core/package.json", &st) != 0) {
        s_say("npm ci in %s", PLAYER_DIR);
        int rc =
            system("npm ci --prefix '" PLAYER_DIR "' --no-audit --no-fund --loglevel=error >&2");
        cr_assert_eq(rc, 0, "npm ci failed in %s (is the npm registry reachable?)", PLAYER_DIR);
    }
    it_stack_opts_t opts = {.catalogs = 1, .users = 1, .transcodes = 1};
    s_stack = it_stack_new(&opts);
    cr_assert_not_null(s_stack, "the stack did not start");
    char *origin = it_stack_url(s_stack, "");
    snprintf(s_origin, sizeof s_origin, "%s", origin);
    free(origin);
}

static void s_teardown(void)
{
    it_stack_destroy(&s_stack);
}

TestSuite(player, .init = s_setup, .fini = s_teardown, .timeout = 360);

/* ---- the track ------------------------------------------------------------ */

static char *s_new(const char *admin, const char *path, json_t *body)
{
    json_t *doc = s_call(admin, "POST", path, body, 201);
    json_decref(body);
    char *id = it_str(doc, "id");
    json_decref(doc);
    return id;
}

/*  Makes a 30 s FLAC master (sine and noise, 44.1 kHz, stereo), uploads it
    as the admin and waits until the catalog shows the track's audio ready.
    Returns the track id (caller frees). */
static char *s_track(const char *admin)
{
    char *artist = s_new(admin, "/v1/artists", it_pack("{s:s}", "name", "The Players"));
    char *album = s_new(admin, "/v1/albums",
                        it_pack("{s:s, s:[s]}", "title", "Headless", "artist_ids", artist));
    char *track = s_new(admin, "/v1/tracks",
                        it_pack("{s:s, s:[s], s:s, s:i, s:i, s:i}", "title", "Level Switch",
                                "artist_ids", artist, "album_id", album, "disc_number", 1,
                                "track_number", 1, "duration_ms", (int)(S_TRACK_S * 1000)));
    char master[4200];
    snprintf(master, sizeof master, "%s/master.flac", it_stack_data_dir(s_stack));
    tc_gen_t gen = {.format = "flac",
                    .codec = "flac",
                    .rate = 44100,
                    .channels = 2,
                    .seconds = S_TRACK_S,
                    .amplitude = 0.25,
                    .freq = 440,
                    .noise = true};
    cr_assert_eq(tc_generate(master, &gen), 0, "could not write %s", master);
    FILE *f = fopen(master, "rb");
    cr_assert_not_null(f);
    long len = (fseek(f, 0, SEEK_END), ftell(f));
    rewind(f);
    char *bytes = malloc((size_t)len);
    cr_assert_eq(fread(bytes, 1, (size_t)len, f), (size_t)len);
    fclose(f);

    char url[512];
    snprintf(url, sizeof url, "%s/v1/tracks/%s/audio", s_origin, track);
    it_http_opts_t opts = {.bearer = admin, .timeout_ms = 60000};
    it_http_res_t res;
    long t0 = it_now_ms();
    it_http_ex(&res, "PUT", url, "audio/flac", bytes, (size_t)len, &opts);
    cr_assert_eq(res.status, 202, "PUT audio: %ld %s%s", res.status, res.body, res.error);
    s_say("uploaded a %.0f s FLAC master (%ld bytes): version %s", S_TRACK_S, len,
          it_json_str(res.json, "version"));
    it_http_res_release(&res);
    free(bytes);

    char path[256];
    snprintf(path, sizeof path, "/v1/tracks/%s", track);
    long deadline = it_now_ms() + S_AUDIO_READY_MS;
    for (;;) {
        json_t *doc = s_call(NULL, "GET", path, NULL, 200);
        json_t *audio = json_object_get(doc, "audio");
        const char *status = it_json_str(audio, "status");
        cr_assert_not_null(status, "the track has no audio.status");
        bool ready = strcmp(status, "ready") == 0;
        cr_assert_str_neq(status, "failed", "transcoding failed: %s",
                          it_json_str(audio, "failure_reason"));
        json_decref(doc);
        if (ready)
            break;
        cr_assert_lt(it_now_ms(), deadline, "audio not ready within %d ms (status %s)",
                     S_AUDIO_READY_MS, status);
        s_sleep_ms(100);
    }
    s_say("audio ready %ld ms after the upload", it_now_ms() - t0);
    free(artist);
    free(album);
    return track;
}

/* ---- listeners ------------------------------------------------------------ */

/*  Signs up `email` and returns the account's id (caller frees). */
static char *s_signup(const char *email)
{
    json_t *body = it_pack("{s:s, s:s, s:s, s:s}", "email", email, "password", S_PASSWORD,
                           "display_name", "Listener", "country", "DE");
    json_t *user = s_call(NULL, "POST", "/v1/auth/signup", body, 201);
    json_decref(body);
    char *id = it_str(user, "id");
    json_decref(user);
    return id;
}

/*  Signs `email` in; returns its access token (caller frees). */
static char *s_login(const char *email)
{
    json_t *body = it_pack("{s:s, s:s}", "email", email, "password", S_PASSWORD);
    json_t *tokens = s_call(NULL, "POST", "/v1/auth/login", body, 200);
    json_decref(body);
    char *token = it_str(tokens, "access_token");
    json_decref(tokens);
    return token;
}

typedef struct {
    char name[16];
    long bandwidth;
} s_rung_t;

/*  The value of attribute `name` in an #EXT-X-STREAM-INF attribute list,
    or -1 (AVERAGE-BANDWIDTH is not BANDWIDTH: names are whole). */
static long s_attr_long(const char *attrs, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = attrs; *p;) {
        if (strncmp(p, name, n) == 0 && p[n] == '=')
            return strtol(p + n + 1, NULL, 10);
        bool quoted = false; /* to the next comma outside quotes */
        while (*p && (quoted || *p != ',')) {
            quoted ^= *p == '"';
            p++;
        }
        if (*p == ',')
            p++;
    }
    return -1;
}

/*  Fetches a grant's master playlist from the gateway and reads its
    rungs (name: the URI's folder; BANDWIDTH) in order. Returns how many. */
static size_t s_master_rungs(const char *url, s_rung_t *rungs)
{
    it_http_res_t res;
    it_http(&res, "GET", url, NULL, NULL, 0, 0);
    cr_assert_eq(res.status, 200, "GET %s: %ld %s", url, res.status, res.body);
    cr_assert_str_eq(res.content_type, "application/vnd.apple.mpegurl");
    size_t n = 0;
    long bandwidth = -1;
    for (char *save = NULL, *line = strtok_r(res.body, "\r\n", &save); line;
         line = strtok_r(NULL, "\r\n", &save)) {
        if (strncmp(line, "#EXT-X-STREAM-INF:", 18) == 0) {
            bandwidth = s_attr_long(line + 18, "BANDWIDTH");
        } else if (line[0] != '#' && bandwidth > 0) {
            cr_assert_lt(n, S_RUNGS_MAX);
            snprintf(rungs[n].name, sizeof rungs[n].name, "%.*s", (int)strcspn(line, "/"), line);
            rungs[n++].bandwidth = bandwidth;
            bandwidth = -1;
        }
    }
    it_http_res_release(&res);
    return n;
}

/*  The grant of `token` for the track: the absolute master URL into url,
    the rungs its master lists into rungs, "name:bw,..." into arg. */
static size_t s_grant(const char *token, const char *track, const char *tier, char *url,
                      size_t url_cap, s_rung_t *rungs, char *arg, size_t arg_cap)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/tracks/%s/stream", track);
    json_t *grant = s_call(token, "GET", path, NULL, 200);
    cr_assert_str_eq(it_json_str(grant, "tier"), tier);
    snprintf(url, url_cap, "%s%s", s_origin, it_json_str(grant, "url"));
    json_t *max = json_object_get(grant, "max_bitrate_kbps");
    s_say("%s grant: max_bitrate_kbps %s, %s", tier,
          json_is_integer(max) ? "128" : "null (every rung)", url);
    json_decref(grant);
    size_t n = s_master_rungs(url, rungs);
    size_t used = 0;
    arg[0] = '\0';
    for (size_t i = 0; i < n; i++)
        used += (size_t)snprintf(arg + used, arg_cap - used, "%s%s:%ld", i ? "," : "",
                                 rungs[i].name, rungs[i].bandwidth);
    cr_assert_lt(used, arg_cap);
    s_say("%s master playlist lists %zu rungs: %s", tier, n, arg);
    return n;
}

static bool s_has_rung(const s_rung_t *rungs, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(rungs[i].name, name) == 0)
            return true;
    return false;
}

/*  Runs player.mjs; returns its exit status (-1: killed) and its stdout,
    parsed, in *result (NULL when it is not one JSON document). */
static int s_player(char *const args[], json_t **result)
{
    char out[4200];
    snprintf(out, sizeof out, "%s/player.json", it_stack_data_dir(s_stack));
    char script[] = PLAYER_DIR "/player.mjs";
    char *argv[8] = {s_node, script};
    size_t argc = 2;
    for (size_t i = 0; args[i] && argc < 7; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    char chromium[4200];
    snprintf(chromium, sizeof chromium, "PLAYER_CHROMIUM=%s", s_chromium);
    char *env[] = {chromium, NULL};
    long t0 = it_now_ms();
    pid_t pid = it_spawn_env(argv, env, NULL, out);
    cr_assert_gt(pid, 0);
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (it_now_ms() - t0 > S_PLAYER_MS) {
            s_say("player.mjs still running after %d ms: SIGKILL", S_PLAYER_MS);
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        s_sleep_ms(100);
    }
    s_say("player.mjs ran %ld ms, status 0x%x", it_now_ms() - t0, status);
    json_error_t err;
    *result = json_load_file(out, 0, &err);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/*  The listener named `name` in player.mjs's result. */
static json_t *s_listener(json_t *result, const char *name)
{
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(result, "listeners"), i, l)
    {
        if (strcmp(it_json_str(l, "listener") ? it_json_str(l, "listener") : "", name) == 0)
            return l;
    }
    cr_assert_fail("player.mjs reported nothing for the %s listener", name);
    return NULL;
}

/*  What the player saw of one listener, asserted again here so the test's
    verdict does not rest on the script's alone: the levels are the
    master's rungs (FLAC only where MSE plays it), playback got past 3 s,
    and each forced switch loaded segments of its rung and played on. */
static void s_assert_listener(json_t *l, const s_rung_t *rungs, size_t nrungs)
{
    const char *who = it_json_str(l, "listener");
    json_t *mse = json_object_get(l, "mse");
    bool flac = json_is_true(json_object_get(mse, "flac"));
    cr_assert(json_is_true(json_object_get(mse, "aac")), "%s: no AAC in fMP4 through MSE", who);
    size_t want = nrungs - (!flac && s_has_rung(rungs, nrungs, "flac") ? 1 : 0);
    json_t *levels = json_object_get(l, "levels");
    cr_assert_eq(json_array_size(levels), want, "%s: hls.js parsed %zu levels, the master has %zu",
                 who, json_array_size(levels), want);
    size_t i;
    json_t *level;
    json_array_foreach(levels, i, level)
    {
        const char *rung = it_json_str(level, "rung");
        cr_assert(rung && s_has_rung(rungs, nrungs, rung),
                  "%s: level %zu (%s) is no rung of the master", who, i, rung ? rung : "?");
    }
    double played = json_real_value(json_object_get(l, "played_s"));
    cr_assert_gt(played, 3.0, "%s: currentTime only reached %.2f s", who, played);
    json_t *switches = json_object_get(l, "switches");
    cr_assert_eq(json_array_size(switches), 2, "%s: %zu switches", who, json_array_size(switches));
    json_t *sw;
    json_array_foreach(switches, i, sw)
    {
        cr_assert_gt(it_json_int(sw, "segment_requests"), 0, "%s: switch %zu fetched no segment",
                     who, i);
        double at = json_number_value(json_object_get(sw, "switched_at_s"));
        double then = json_number_value(json_object_get(sw, "then_s"));
        cr_assert_gt(then, at, "%s: switch %zu: playback stopped at %.2f s", who, i, then);
    }
}

Test(player, premium_and_free_listeners_play_and_switch_rungs)
{
    char *admin = it_stack_sign(s_stack, "player-admin", NULL, "premium", true, 0);
    cr_assert_not_null(admin);
    char *track = s_track(admin);

    /* A premium listener: signed up (free), made premium by the admin,
       signed in again so the token carries the tier. And a free one. */
    char *premium_id = s_signup("premium@player.test");
    char *free_id = s_signup("free@player.test");
    char path[256];
    snprintf(path, sizeof path, "/v1/users/%s/tier", premium_id);
    json_t *body = it_pack("{s:s}", "tier", "premium");
    json_decref(s_call(admin, "PUT", path, body, 200));
    json_decref(body);
    char *premium = s_login("premium@player.test");
    char *free_token = s_login("free@player.test");

    static char premium_url[1024], free_url[1024], premium_arg[2200], free_arg[2200];
    s_rung_t premium_rungs[S_RUNGS_MAX], free_rungs[S_RUNGS_MAX];
    char rungs[1024];
    size_t np = s_grant(premium, track, "premium", premium_url, sizeof premium_url, premium_rungs,
                        rungs, sizeof rungs);
    snprintf(premium_arg, sizeof premium_arg, "premium=%s=%s", premium_url, rungs);
    size_t nf = s_grant(free_token, track, "free", free_url, sizeof free_url, free_rungs, rungs,
                        sizeof rungs);
    snprintf(free_arg, sizeof free_arg, "free=%s=%s", free_url, rungs);
    /* A lossless master: the whole ladder for premium, <= 128k for free. */
    const char *ladder[] = {"a64", "a128", "a192", "a256", "flac"};
    cr_assert_eq(np, 5, "premium master lists %zu rungs", np);
    for (size_t i = 0; i < 5; i++)
        cr_assert(s_has_rung(premium_rungs, np, ladder[i]), "premium master has no %s", ladder[i]);
    cr_assert_eq(nf, 2, "free master lists %zu rungs", nf);
    cr_assert(s_has_rung(free_rungs, nf, "a64") && s_has_rung(free_rungs, nf, "a128"));

    char *args[] = {premium_arg, free_arg, NULL};
    json_t *result = NULL;
    int rc = s_player(args, &result);
    cr_assert_not_null(result, "player.mjs printed no result (exit %d)", rc);
    char *text = json_dumps(result, JSON_COMPACT);
    s_say("player.mjs result: %s", text);
    free(text);
    json_t *failures = json_object_get(result, "failures");
    cr_assert_eq(rc, 0, "player.mjs failed (exit %d): %zu checks failed, first: %s", rc,
                 json_array_size(failures),
                 json_string_value(json_array_get(failures, 0))
                     ? json_string_value(json_array_get(failures, 0))
                     : "?");
    s_assert_listener(s_listener(result, "premium"), premium_rungs, np);
    s_assert_listener(s_listener(result, "free"), free_rungs, nf);
    json_t *refused = json_object_get(s_listener(result, "free"), "refused");
    cr_assert_eq(it_json_int(refused, "status"), 403, "a free player fetched a premium rung");

    json_decref(result);
    free(premium);
    free(free_token);
    free(premium_id);
    free(free_id);
    free(track);
    free(admin);
}
