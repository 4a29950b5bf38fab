/*  Plays counted exactly once, end to end: POST /v1/me/plays is
    idempotent by client_id; plays published straight onto the bus (topic
    "play", as musicbus-import-listens and the outbox do) are counted
    exactly once although the stats worker, or the broker, is killed with
    kill -9 at random moments while they are consumed, also with two
    workers consuming at once; a malformed play event is skipped and the
    events after it still counted.

    Counts are read as an admin through GET /v1/tracks/{id}/stats; how far
    the consumer got is read from the stats actor's LMDB environment
    itself (its "_offsets" database, lib/mb_events.h), read-only, which
    tells where each kill landed. Seeds are printed; IT_SEED=<n> replays
    one. */
#include <criterion/criterion.h>
#include <lmdb.h>
#include <msgpack.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "it.h"
#include "mb_error.h"
#include "mb_events.h"

static it_stack_t *s_stack;

static void s_down(void)
{
    it_stack_destroy(&s_stack);
}

TestSuite(stats, .fini = s_down, .timeout = 120);

#define PLAYS 2000          /* published per crash test */
#define TRACKS 4            /* they are spread over */
#define USERS 50            /* and listened to by */
#define PUBLISH_BATCH 250   /* events per bus.publish */
#define STREAM_MS 45000     /* a play that counts as a stream */
#define SHORT_MS 10000      /* one that does not (every third) */
#define COUNT_WAIT_MS 30000 /* for the counts to reach what was published */

static void s_sleep_ms(long ms)
{
    if (ms > 0)
        usleep((useconds_t)ms * 1000);
}

/* The seed of this test's choices: IT_SEED, else the clock. */
static unsigned s_seed(const char *test)
{
    const char *env = getenv("IT_SEED");
    unsigned seed = env && *env ? (unsigned)strtoul(env, NULL, 10)
                                : (unsigned)time(NULL) ^ (unsigned)getpid() << 8;
    srandom(seed);
    fprintf(stderr, "it: %s: seed %u (IT_SEED=%u replays it)\n", test, seed, seed);
    return seed;
}

static long s_rand(long lo, long hi)
{
    return lo + random() % (hi - lo + 1);
}

static void s_up(const it_stack_opts_t *opts)
{
    s_stack = it_stack_new(opts);
    cr_assert(s_stack, "the stack did not start (see the log above)");
}

/* ---- reading the counts ------------------------------------------------------------ */

typedef struct {
    long plays, streams, listeners;
} s_counts_t;

/* all_time of one track as GET /v1/tracks/{id}/stats answers it (as
   admin); plays -1 while stats knows nothing of it (404). */
static s_counts_t s_track_counts(const char *track)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/tracks/%s/stats", track);
    char *url = it_stack_url(s_stack, path);
    it_http_res_t res;
    it_http_json_as(&res, it_stack_token(s_stack), "GET", url, NULL);
    free(url);
    s_counts_t c = {-1, -1, -1};
    if (res.status == 200) {
        const json_t *all = json_object_get(res.json, "all_time");
        c = (s_counts_t){it_json_int(all, "plays"), it_json_int(all, "streams"),
                         it_json_int(all, "listeners")};
        cr_assert(c.plays >= 0 && c.streams >= 0, "all_time has counts: %s", res.body);
    } else
        cr_assert(res.status == 404 || res.status == 503 || res.status == 504 || res.status == 0,
                  "GET %s: %ld %s", path, res.status, res.body);
    it_http_res_release(&res);
    return c;
}

/* Sum over the crash tests' tracks. */
static s_counts_t s_total_counts(void)
{
    s_counts_t sum = {0, 0, 0};
    for (int t = 0; t < TRACKS; t++) {
        char track[32];
        snprintf(track, sizeof track, "it-track-%d", t);
        s_counts_t c = s_track_counts(track);
        if (c.plays < 0)
            return (s_counts_t){-1, -1, -1};
        sum.plays += c.plays;
        sum.streams += c.streams;
        sum.listeners += c.listeners;
    }
    return sum;
}

/* Waits until the plays counted reach `plays` (or COUNT_WAIT_MS pass),
   then a little longer, and returns what is counted then: a consumer
   that applied something twice would show it by now. */
static s_counts_t s_settled_counts(long plays)
{
    long deadline = it_now_ms() + COUNT_WAIT_MS;
    s_counts_t c;
    while ((c = s_total_counts()).plays != plays && it_now_ms() < deadline)
        s_sleep_ms(50);
    s_sleep_ms(500);
    return s_total_counts();
}

/* ---- the consumer's offset, straight from LMDB ----------------------------------------- */

/* The stats group's stored offset (next seq to handle) and skipped count;
   zeros before the first batch. */
static void s_offset(uint64_t *next, uint64_t *skipped)
{
    *next = *skipped = 0;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/stats", it_stack_data_dir(s_stack));
    MDB_env *env;
    cr_assert_eq(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 64);
    int rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS, 0600);
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    if (rc == 0)
        rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "_offsets", 0, &dbi);
    MDB_val k = {.mv_size = 11, .mv_data = "stats.plays"}, v; /* the plays group */
    if (rc == 0 && mdb_get(txn, dbi, &k, &v) == 0 && v.mv_size == 16) {
        const unsigned char *b = v.mv_data;
        for (int i = 0; i < 8; i++) {
            *next = *next << 8 | b[i];
            *skipped = *skipped << 8 | b[8 + i];
        }
    }
    if (txn)
        mdb_txn_abort(txn);
    mdb_env_close(env);
}

/* ---- publishing plays ----------------------------------------------------------------- */

/* Packs play number i into *buf: the event data of lib's play contract
   (actors/stats/stats_play.h), and its key c:<user>:<client id>. */
static void s_pack_play(msgpack_sbuffer *buf, char *key, size_t key_size, int i, int64_t base_ms)
{
    char user[32], track[32];
    snprintf(user, sizeof user, "it-user-%d", i % USERS);
    snprintf(track, sizeof track, "it-track-%d", i % TRACKS);
    snprintf(key, key_size, "c:%s:play-%d", user, i);
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
    msgpack_pack_str_with_body(&pk, "user", 4);
    msgpack_pack_str_with_body(&pk, user, strlen(user));
    msgpack_pack_str_with_body(&pk, "track", 5);
    msgpack_pack_str_with_body(&pk, track, strlen(track));
    msgpack_pack_str_with_body(&pk, "started_at", 10);
    msgpack_pack_uint64(&pk, (uint64_t)(base_ms + i * 1000LL));
    msgpack_pack_str_with_body(&pk, "ms_played", 9);
    msgpack_pack_uint32(&pk, i % 3 == 0 ? SHORT_MS : STREAM_MS);
    msgpack_pack_str_with_body(&pk, "context", 7);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, "radio", 5);
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_nil(&pk);
    msgpack_pack_str_with_body(&pk, "source", 6);
    msgpack_pack_str_with_body(&pk, "client", 6);
}

/* Expected counts of plays [0, n). */
static s_counts_t s_expected(int n)
{
    s_counts_t c = {n, 0, 0};
    for (int i = 0; i < n; i++)
        c.streams += i % 3 != 0;
    /* Listeners per track, summed: users who streamed it. */
    for (int t = 0; t < TRACKS; t++)
        for (int u = 0; u < USERS; u++) {
            bool streamed = false;
            for (int i = t; i < n && !streamed; i += TRACKS)
                streamed = i % USERS == u && i % 3 != 0;
            c.listeners += streamed;
        }
    return c;
}

/* Publishes plays [from, to) in batches; returns the last seq. Each
   batch is retried (at most 20 s) while the broker is away: a batch that
   timed out may have been written, and its retry then writes the same
   plays again, which the consumer must count once (same keys). */
static uint64_t s_publish(int from, int to, int64_t base_ms)
{
    mb_events_t *bus = mb_events_new(it_stack_endpoint(s_stack));
    cr_assert(bus);
    mb_events_set_timeout(bus, 3000);
    uint64_t last = 0;
    for (int i = from; i < to; i += PUBLISH_BATCH) {
        int n = to - i < PUBLISH_BATCH ? to - i : PUBLISH_BATCH;
        msgpack_sbuffer bufs[PUBLISH_BATCH];
        char keys[PUBLISH_BATCH][64];
        mb_event_out_t events[PUBLISH_BATCH];
        for (int k = 0; k < n; k++) {
            msgpack_sbuffer_init(&bufs[k]);
            s_pack_play(&bufs[k], keys[k], sizeof keys[k], i + k, base_ms);
            events[k] = (mb_event_out_t){
                .topic = "play", .key = keys[k], .data = bufs[k].data, .data_len = bufs[k].size};
        }
        uint64_t first = 0;
        long deadline = it_now_ms() + 20000;
        int rc;
        while ((rc = mb_events_publish_batch(bus, events, (size_t)n, &first)) != 0 &&
               it_now_ms() < deadline) {
            fprintf(stderr, "it: publish of plays %d..%d: %s (%s); again\n", i, i + n - 1,
                    mb_strerror(rc), mb_events_error(bus));
            s_sleep_ms(100);
        }
        cr_assert_eq(rc, 0, "publishing plays %d..%d: %s", i, i + n - 1, mb_events_error(bus));
        last = first + (uint64_t)n - 1;
        for (int k = 0; k < n; k++)
            msgpack_sbuffer_destroy(&bufs[k]);
    }
    mb_events_destroy(&bus);
    return last;
}

static int64_t s_base_ms(void)
{
    /* Plays of the last hour, one second apart: all in the past, all
       inside the default windows. */
    return (int64_t)time(NULL) * 1000 - 3600 * 1000;
}

/* Asserts the settled counts are exactly those of plays [0, n). */
static void s_assert_counted_once(int n, const char *what)
{
    s_counts_t want = s_expected(n);
    s_counts_t got = s_settled_counts(want.plays);
    uint64_t next, skipped;
    s_offset(&next, &skipped);
    fprintf(stderr,
            "it: %s: counted %ld plays, %ld streams, %ld listeners (want %ld, %ld, %ld); "
            "offset %llu, skipped %llu\n",
            what, got.plays, got.streams, got.listeners, want.plays, want.streams, want.listeners,
            (unsigned long long)next, (unsigned long long)skipped);
    cr_assert_eq(got.plays, want.plays, "%s: plays counted %ld, published %ld", what, got.plays,
                 want.plays);
    cr_assert_eq(got.streams, want.streams, "%s: streams %ld, want %ld", what, got.streams,
                 want.streams);
    cr_assert_eq(got.listeners, want.listeners, "%s: listeners %ld, want %ld", what, got.listeners,
                 want.listeners);
    cr_assert_eq(skipped, 0, "%s: no valid play is skipped", what);
}

/* ---- kill -9 of the stats worker ---------------------------------------------------------- */

/* SIGKILLs a worker and reaps it. */
static void s_kill(int proc)
{
    cr_assert_eq(it_stack_signal(s_stack, proc, SIGKILL), 0, "the worker is running");
    int status = it_stack_wait(s_stack, proc, 5000);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "killed (0x%x)", status);
}

/* Waits (at most timeout_ms) until the consumer's offset moves past
   `from`: a batch was committed. Returns the offset. */
static uint64_t s_wait_progress(uint64_t from, long timeout_ms)
{
    uint64_t next, skipped;
    long deadline = it_now_ms() + timeout_ms;
    do {
        s_offset(&next, &skipped);
        if (next > from)
            break;
        usleep(200);
    } while (it_now_ms() < deadline);
    return next;
}

#define KILL_ROUNDS_MAX 8

Test(stats, exactly_once_when_the_stats_worker_is_killed)
{
    s_seed("stats worker kill -9");
    it_stack_opts_t opts = {.stats = 0};
    s_up(&opts);
    cr_assert(it_stack_sign_admin(s_stack));
    /* The whole stream is published before any consumer runs, so each
       worker starts with a backlog (batches of 500 events, each applied
       in one transaction). Consuming it takes milliseconds, so a worker
       is killed either at a random moment of its start-up, or a random
       few ms after its first commit: inside a later batch's transaction,
       or between two. */
    uint64_t head = s_publish(0, PLAYS, s_base_ms());
    uint64_t before = 0, after = 0, skipped;
    int kills = 0, mid = 0;
    for (int round = 0; round < KILL_ROUNDS_MAX && after <= head; round++) {
        s_offset(&before, &skipped);
        int proc = it_stack_spawn(s_stack, IT_STATS);
        cr_assert_geq(proc, 0);
        bool early = round % 3 == 2;
        long t0 = it_now_ms(), jitter = s_rand(0, early ? 40 : 8);
        if (!early)
            s_wait_progress(before, 10000);
        s_sleep_ms(jitter);
        s_kill(proc);
        s_offset(&after, &skipped);
        kills++;
        mid += after > before && after <= head;
        fprintf(stderr, "it: kill %d %s, %ld ms after the start: offset %llu -> %llu of %llu\n",
                kills, early ? "in start-up" : "after a commit", it_now_ms() - t0,
                (unsigned long long)before, (unsigned long long)after,
                (unsigned long long)head + 1);
    }
    fprintf(stderr, "it: %d kills, %d of them after some progress and before the end\n", kills,
            mid);
    cr_assert_geq(kills, 2, "the worker was killed more than once before it finished");
    cr_assert_geq(it_stack_start(s_stack, IT_STATS, NULL), 0);
    s_assert_counted_once(PLAYS, "after kill -9 of the worker");
}

/* ---- kill -9 of the broker --------------------------------------------------------------- */

/* The consumer's calls give up after 2 s instead of 5: a fetch lost with
   the broker is retried sooner, which keeps the test short. */
static const char *const s_fast_env[] = {"MUSICBUS_TIMEOUT_MS=2000", NULL};

static void s_restart_broker(const char *endpoint)
{
    int broker = it_stack_find(s_stack, IT_BROKER, 0);
    cr_assert_geq(broker, 0);
    cr_assert_eq(it_stack_signal(s_stack, broker, SIGKILL), 0);
    it_stack_wait(s_stack, broker, 5000);
    cr_assert_geq(it_stack_start(s_stack, IT_BROKER, endpoint), 0,
                  "a broker restarts on %s and the same data", endpoint);
}

Test(stats, exactly_once_when_the_broker_is_killed)
{
    s_seed("broker kill -9");
    it_stack_opts_t opts = {.stats = 1, .worker_env = s_fast_env};
    s_up(&opts);
    cr_assert(it_stack_sign_admin(s_stack));
    char endpoint[256];
    snprintf(endpoint, sizeof endpoint, "%s", it_stack_endpoint(s_stack));
    int64_t base = s_base_ms();
    /* Four parts of the stream. Once the consumer has caught up (it is
       alive and long-polling the current broker), half a part is
       published and the broker killed 0..4 ms later, while the consumer
       fetches or applies it; the new broker on the same endpoint and data
       then takes the other half. */
    enum { PARTS = 4, PART = PLAYS / PARTS };
    uint64_t head = 0;
    for (int part = 0; part < PARTS; part++) {
        if (head) {
            uint64_t next = s_wait_progress(head, 20000);
            cr_assert_gt(next, head, "the consumer got past seq %llu (offset %llu)",
                         (unsigned long long)head, (unsigned long long)next);
        }
        int from = part * PART;
        head = s_publish(from, from + PART / 2, base);
        long jitter = s_rand(0, 4);
        s_sleep_ms(jitter);
        uint64_t before, skipped;
        s_offset(&before, &skipped);
        s_restart_broker(endpoint);
        fprintf(stderr, "it: broker killed %ld ms after seq %llu was acknowledged (offset %llu)\n",
                jitter, (unsigned long long)head, (unsigned long long)before);
        head = s_publish(from + PART / 2, from + PART, base);
    }
    /* What was acknowledged before the kills is still in the log. */
    s_assert_counted_once(PLAYS, "after kill -9 of the broker");
}

/* ---- two workers consuming at once --------------------------------------------------------- */

Test(stats, exactly_once_with_two_workers_and_kills)
{
    s_seed("two workers");
    it_stack_opts_t opts = {.stats = 0};
    s_up(&opts);
    cr_assert(it_stack_sign_admin(s_stack));
    int64_t base = s_base_ms();
    /* Two workers take on a backlog at once (each batch is applied by
       whichever commits first; the other sees the offset moved and skips
       it); one is killed a few ms after the first commit and replaced;
       then more comes in live and one is killed, then both at once. */
    static const int parts[] = {0, 700, 1400, PLAYS};
    uint64_t head = s_publish(parts[0], parts[1], base);
    cr_assert_geq(it_stack_spawn(s_stack, IT_STATS), 0);
    cr_assert_geq(it_stack_spawn(s_stack, IT_STATS), 0);
    for (int round = 0; round < 3; round++) {
        uint64_t before, after, skipped;
        s_offset(&before, &skipped);
        if (round == 0)
            s_wait_progress(before, 10000);
        else
            head = s_publish(parts[round], parts[round + 1], base);
        long jitter = s_rand(0, 8);
        s_sleep_ms(jitter);
        int victims = round == 2 ? 2 : 1;
        int first = round == 2 ? 0 : (int)s_rand(0, 1);
        int procs[2];
        for (int v = 0; v < victims; v++)
            procs[v] = it_stack_find(s_stack, IT_STATS, first + v);
        for (int v = 0; v < victims; v++)
            s_kill(procs[v]);
        s_offset(&after, &skipped);
        fprintf(stderr, "it: round %d: %d worker(s) killed, offset %llu -> %llu of %llu\n", round,
                victims, (unsigned long long)before, (unsigned long long)after,
                (unsigned long long)head + 1);
        for (int v = 0; v < victims; v++)
            cr_assert_geq(it_stack_spawn(s_stack, IT_STATS), 0);
    }
    cr_assert_geq(it_stack_find(s_stack, IT_STATS, 1), 0, "two workers run");
    s_assert_counted_once(PLAYS, "two workers");
}

/* ---- a malformed play ------------------------------------------------------------------- */

Test(stats, a_malformed_play_is_skipped_and_later_ones_counted)
{
    s_seed("malformed play");
    it_stack_opts_t opts = {.stats = 1};
    s_up(&opts);
    cr_assert(it_stack_sign_admin(s_stack));
    int64_t base = s_base_ms();
    s_publish(0, 100, base);

    /* Three events no play can be: data that is not a map, a play with no
       track, a key that is not the play's. Valid msgpack, so the broker
       takes them. */
    mb_events_t *bus = mb_events_new(it_stack_endpoint(s_stack));
    cr_assert(bus);
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_str_with_body(&pk, "not a play", 10);
    cr_assert_eq(mb_events_publish(bus, "play", "c:it-user-1:bad-1", buf.data, buf.size, NULL), 0,
                 "%s", mb_events_error(bus));
    msgpack_sbuffer_clear(&buf);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "user", 4);
    msgpack_pack_str_with_body(&pk, "it-user-1", 9);
    msgpack_pack_str_with_body(&pk, "ms_played", 9);
    msgpack_pack_int(&pk, 40000);
    cr_assert_eq(mb_events_publish(bus, "play", "c:it-user-1:bad-2", buf.data, buf.size, NULL), 0);
    msgpack_sbuffer_clear(&buf);
    char key[64];
    s_pack_play(&buf, key, sizeof key, 100, base);
    cr_assert_eq(mb_events_publish(bus, "play", "c:someone-else:bad-3", buf.data, buf.size, NULL),
                 0);
    msgpack_sbuffer_destroy(&buf);
    mb_events_destroy(&bus);

    s_publish(100, 200, base);
    s_counts_t want = s_expected(200);
    s_counts_t got = s_settled_counts(want.plays);
    uint64_t next, skipped;
    s_offset(&next, &skipped);
    fprintf(stderr, "it: malformed: %ld plays counted, offset %llu, skipped %llu\n", got.plays,
            (unsigned long long)next, (unsigned long long)skipped);
    cr_assert_eq(got.plays, want.plays, "the plays around the bad events are counted");
    cr_assert_eq(got.streams, want.streams);
    cr_assert_eq(skipped, 3, "the three bad events are counted as skipped");
    cr_assert_eq(next, 204, "the offset moved past everything (203 events)");
    /* The worker is still there and well. */
    int proc = it_stack_find(s_stack, IT_STATS, 0);
    cr_assert_eq(it_stack_stop(s_stack, proc, IT_STOP_TIMEOUT_MS), 0, "exit 0 on SIGTERM");
}

/* ---- POST /v1/me/plays ------------------------------------------------------------------- */

/* RFC 3339 of `ms` since the epoch, UTC with milliseconds. */
static void s_rfc3339(int64_t ms, char *out, size_t size)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char day[32];
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, size, "%s.%03dZ", day, (int)(ms % 1000));
}

Test(stats, plays_over_http_count_once_per_client_id)
{
    it_stack_opts_t opts = {.catalogs = 1, .users = 1, .stats = 1};
    s_up(&opts);
    cr_assert(it_stack_admin_login(s_stack));
    /* A track in the catalog, which stats learns of from its event. */
    json_t *a = it_call(s_stack, "POST", "/v1/artists", it_pack("{s:s}", "name", "Counted"), 201);
    char *artist = it_str(a, "id");
    json_t *b = it_call(s_stack, "POST", "/v1/albums",
                        it_pack("{s:s, s:[s]}", "title", "Once", "artist_ids", artist), 201);
    char *album = it_str(b, "id");
    json_t *t =
        it_call(s_stack, "POST", "/v1/tracks",
                it_pack("{s:s, s:[s], s:s, s:i, s:i}", "title", "Only Once", "artist_ids", artist,
                        "album_id", album, "track_number", 1, "duration_ms", 200000),
                201);
    char *track = it_str(t, "id");

    /* A listener. */
    json_decref(
        it_call_as(s_stack, NULL, "POST", "/v1/auth/signup",
                   it_pack("{s:s, s:s, s:s, s:s}", "email", "fan@example.com", "password",
                           "listen-to-the-music-42", "display_name", "Fan", "country", "NO"),
                   201));
    json_t *tokens = it_call_as(
        s_stack, NULL, "POST", "/v1/auth/login",
        it_pack("{s:s, s:s}", "email", "fan@example.com", "password", "listen-to-the-music-42"),
        200);
    char *fan = it_str(tokens, "access_token");
    json_decref(tokens);

    char started[40];
    s_rfc3339((int64_t)time(NULL) * 1000 - 600000, started, sizeof started);
    json_t *play = it_pack("{s:s, s:s, s:i, s:{s:s, s:s}, s:s}", "track_id", track, "started_at",
                           started, "ms_played", 45000, "context", "type", "album", "id", album,
                           "client_id", "3f6c-play-1");
    /* stats knows the track once the catalog's event reached it: until
       then a report of it is a 404. */
    char *url = it_stack_url(s_stack, "/v1/me/plays");
    it_http_res_t res;
    long deadline = it_now_ms() + 10000;
    for (;;) {
        it_http_json_as(&res, fan, "POST", url, play);
        if (res.status != 404 || it_now_ms() > deadline)
            break;
        it_http_res_release(&res);
        s_sleep_ms(50);
    }
    cr_assert_eq(res.status, 202, "the first report: %ld %s", res.status, res.body);
    cr_assert_str_eq(it_json_str(res.json, "id"), "3f6c-play-1");
    cr_assert(json_is_true(json_object_get(res.json, "counted_as_stream")));
    json_t *first = json_incref(res.json);
    it_http_res_release(&res);
    free(url);

    /* The same report again (a client's retry): the same answer. */
    json_t *again = it_call_as(s_stack, fan, "POST", "/v1/me/plays", json_incref(play), 202);
    cr_assert(json_equal(again, first), "a retry is answered the same");
    json_decref(again);
    /* The same client_id for another play: refused. */
    json_t *other = json_deep_copy(play);
    json_object_set_new(other, "ms_played", json_integer(5000));
    json_decref(it_problem_as(s_stack, fan, "POST", "/v1/me/plays", other, 409, "body.client_id"));
    /* A short play under another client_id: a play, not a stream. */
    json_t *second = json_deep_copy(play);
    char later[40];
    s_rfc3339((int64_t)time(NULL) * 1000 - 300000, later, sizeof later);
    json_object_set_new(second, "started_at", json_string(later));
    json_object_set_new(second, "client_id", json_string("3f6c-play-2"));
    json_object_set_new(second, "ms_played", json_integer(12000));
    json_t *ok = it_call_as(s_stack, fan, "POST", "/v1/me/plays", second, 202);
    cr_assert(json_is_false(json_object_get(ok, "counted_as_stream")));
    json_decref(ok);
    /* Bad reports. */
    json_t *bad = json_deep_copy(play);
    json_object_set_new(bad, "ms_played", json_integer(-1));
    json_decref(it_problem_as(s_stack, fan, "POST", "/v1/me/plays", bad, 400, "body.ms_played"));
    bad = json_deep_copy(play);
    json_object_set_new(bad, "track_id", json_string("ZZZZZZZZZZZZZZZZZZZZZZ"));
    json_object_set_new(bad, "client_id", json_string("3f6c-play-3"));
    json_decref(it_problem_as(s_stack, fan, "POST", "/v1/me/plays", bad, 404, "body.track_id"));
    json_decref(it_call_as(s_stack, NULL, "POST", "/v1/me/plays", json_incref(play), 401));
    /* Track stats are the admin's, not the listener's. */
    char path[128];
    snprintf(path, sizeof path, "/v1/tracks/%s/stats", track);
    json_decref(it_call_as(s_stack, fan, "GET", path, NULL, 403));

    /* Two plays counted, one of them a stream, one listener. */
    deadline = it_now_ms() + 10000;
    s_counts_t c;
    while ((c = s_track_counts(track)).plays != 2 && it_now_ms() < deadline)
        s_sleep_ms(50);
    s_sleep_ms(500);
    json_t *stats = it_call(s_stack, "GET", path, NULL, 200);
    const json_t *all = json_object_get(stats, "all_time");
    cr_assert_eq(it_json_int(all, "plays"), 2, "%s", json_dumps(stats, 0));
    cr_assert_eq(it_json_int(all, "streams"), 1);
    cr_assert_eq(it_json_int(all, "listeners"), 1);
    cr_assert_str_eq(it_json_str(json_object_get(stats, "track"), "title"), "Only Once");
    json_decref(stats);

    /* The listener's history has both, newest first. */
    json_t *history = it_call_as(s_stack, fan, "GET", "/v1/me/history", NULL, 200);
    cr_assert_eq(json_array_size(json_object_get(history, "items")), 2, "%s",
                 json_dumps(history, 0));
    json_decref(history);

    json_decref(play);
    json_decref(first);
    free(fan);
    free(track);
    free(album);
    free(artist);
    json_decref(t);
    json_decref(b);
    json_decref(a);
}
