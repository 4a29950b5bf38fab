/*  stats actor: the consumer's apply function fed events built here, and
    every op driven through mb_actor_dispatch() with real encoded
    envelopes, against an LMDB environment in a temporary folder.

    Events and arguments are written as JSON and packed to msgpack the way
    the gateway and the bus do; reply bodies are turned back into JSON. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <lmdb.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_actor.h"
#include "mb_envelope.h"
#include "mb_error.h"
#include "mb_jwt.h"
#include "mb_msgpack.h"
#include "stats.h"
#include "actor_harness.h"
#include "stats_store.h"
#include "stats_time.h"

/* ---- harness ------------------------------------------------------------------- */

static int64_t s_today; /* days since the epoch, now */

static void s_setup(void)
{
    th_tmpdir(th_dir, "test_stats");
    th_def = *stats_actor_def();
    th_def.map_size = (size_t)256 << 20;
    cr_assert_eq(mb_actor_open_env(&th_def, th_dir, &th_env), 0);
    cr_assert_eq(th_def.open(th_env, &th_state), 0);
    s_today = stats_day_of(stats_now_ms());
}

static void s_teardown(void)
{
    th_teardown();
}

TestSuite(stats, .init = s_setup, .fini = s_teardown);

/*  Who calls: the auth map the gateway makes for a user signed in as a
    free user, an admin when `admin`. */
typedef struct {
    const char *user;
    bool admin;
} s_who_t;

static void s_pack_auth(msgpack_packer *pk, const void *arg)
{
    const s_who_t *who = arg;
    mb_jwt_claims_t claims = {.roles = MB_ROLE_USER | (who->admin ? MB_ROLE_ADMIN : 0)};
    snprintf(claims.sub, sizeof claims.sub, "%s", who->user);
    snprintf(claims.sid, sizeof claims.sid, "session-of-%s", who->user);
    snprintf(claims.tier, sizeof claims.tier, "free");
    mb_jwt_pack_auth(pk, &claims);
}

/*  Calls `op` as `user` (NULL: no auth map), an admin when `admin`, with
    args given as printf-formatted JSON (NULL for none). */
static th_reply_t s_call_as(const char *user, bool admin, const char *op, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static th_reply_t s_call_as(const char *user, bool admin, const char *op, const char *fmt, ...)
{
    json_t *args = NULL;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        args = th_vjson(fmt, ap);
        va_end(ap);
    }
    s_who_t who = {user, admin};
    return th_call_packed(op, args, user ? s_pack_auth : NULL, &who);
}

static th_reply_t s_ok(th_reply_t r, int status)
{
    cr_assert_eq(r.status, status, "status %d (%s: %s, field %s), expected %d", r.status, r.code,
                 r.message, r.field, status);
    cr_assert_not_null(r.body);
    return r;
}

/* ---- events -------------------------------------------------------------------- */

/*  Applies one event at log position `seq` (0: no log order) whose data
    is JSON (a new reference, taken) in a transaction of its own,
    committed when applied. Returns what apply returned; *outcome and
    *why as stats_store_apply() sets them. */
static int s_apply_at(uint64_t seq, const char *topic, const char *key, json_t *data,
                      stats_outcome_t *outcome, const char **why)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    th_pack_json(&pk, data);
    json_decref(data);
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    cr_assert_eq(msgpack_unpack_next(&msg, buf.data, buf.size, NULL), MSGPACK_UNPACK_SUCCESS);
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(th_env, NULL, 0, &txn), 0);
    stats_outcome_t ignored;
    const char *ignored_why;
    mb_event_t ev = {.seq = seq,
                     .topic = topic,
                     .topic_len = strlen(topic),
                     .key = key,
                     .key_len = key ? strlen(key) : 0,
                     .data = &msg.data};
    int rc = stats_store_apply(th_state, txn, &ev, outcome ? outcome : &ignored,
                               why ? why : &ignored_why);
    /* ...and the runtime's entry point agrees with it. */
    MDB_txn *child;
    cr_assert_eq(mdb_txn_begin(th_env, txn, 0, &child), 0);
    if (rc == 0 || rc == MB_EINVAL) {
        /* Applying again inside a child of the same transaction must be a
           duplicate (plays) or the same result; then throw the child away. */
        int again = stats_apply(child, &ev, th_state);
        cr_assert_eq(again, rc, "stats_apply %d, stats_store_apply %d", again, rc);
    }
    mdb_txn_abort(child);
    if (rc == 0)
        cr_assert_eq(mdb_txn_commit(txn), 0);
    else
        mdb_txn_abort(txn);
    msgpack_unpacked_destroy(&msg);
    msgpack_sbuffer_destroy(&buf);
    return rc;
}

static int s_apply_full(const char *topic, const char *key, json_t *data, stats_outcome_t *outcome,
                        const char **why)
{
    return s_apply_at(0, topic, key, data, outcome, why);
}

static int s_apply(const char *topic, const char *key, json_t *data)
{
    return s_apply_full(topic, key, data, NULL, NULL);
}

/*  The catalog made track `id` by `artists` (a JSON array). */
static void s_track(const char *id, const char *title, const char *artists, const char *isrc,
                    int duration_ms)
{
    json_t *t = th_json("{\"id\":\"%s\",\"artist_ids\":%s,\"album_id\":\"al-%s\","
                       "\"duration_ms\":%d,\"track_number\":1,\"explicit\":false}",
                       id, artists, id, duration_ms);
    json_object_set_new(t, "title", json_string(title));
    json_object_set_new(t, "isrc", isrc ? json_string(isrc) : json_null());
    json_t *data = th_json("{\"action\":\"created\",\"id\":\"%s\"}", id);
    json_object_set_new(data, "object", t);
    cr_assert_eq(s_apply("catalog.track", id, data), 0);
}

static void s_user(const char *id, const char *country)
{
    char c[8] = "null";
    if (country)
        snprintf(c, sizeof c, "\"%s\"", country);
    cr_assert_eq(s_apply("users.user", id,
                         th_json("{\"action\":\"created\",\"id\":\"%s\",\"user\":{\"id\":\"%s\","
                                "\"country\":%s,\"tier\":\"free\",\"roles\":[\"user\"],"
                                "\"display_name\":\"x\",\"created_at\":\"2026-01-01T00:00:00Z\"}}",
                                id, id, c)),
                 0);
}

static json_t *s_play_data(const char *user, const char *track, int64_t started_at, int ms,
                           const char *source)
{
    return th_json("{\"user\":\"%s\",\"track\":\"%s\",\"started_at\":%lld,\"ms_played\":%d,"
                  "\"context\":{\"type\":\"album\",\"id\":\"al-%s\"},\"source\":\"%s\"}",
                  user, track, (long long)started_at, ms, track, source);
}

/*  A client play with key c:<user>:<client_id>. Returns the outcome. */
static stats_outcome_t s_play(const char *user, const char *track, int64_t started_at, int ms,
                              const char *client_id)
{
    char key[256];
    snprintf(key, sizeof key, "c:%s:%s", user, client_id);
    stats_outcome_t out;
    const char *why = NULL;
    int rc =
        s_apply_full("play", key, s_play_data(user, track, started_at, ms, "client"), &out, &why);
    cr_assert_eq(rc, 0, "play refused: %s", why ? why : "?");
    return out;
}

/*  Noon (UTC) of day `day`, plus `ms`. */
static int64_t s_noon(int64_t day, int64_t ms)
{
    return day * STATS_MS_PER_DAY + STATS_MS_PER_DAY / 2 + ms;
}

static void s_date(int64_t day, char out[STATS_DATE_LEN + 1])
{
    stats_date_format(day, out);
}

/*  Applies every event in the outbox to the consumer and empties it, as
    the runtime and the bus would. Returns how many there were. */
static size_t s_deliver_outbox(void)
{
    MDB_txn *txn;
    MDB_dbi outbox;
    cr_assert_eq(mdb_txn_begin(th_env, NULL, 0, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "_outbox", 0, &outbox), 0);
    MDB_cursor *cur;
    cr_assert_eq(mdb_cursor_open(txn, outbox, &cur), 0);
    MDB_val k, v;
    size_t n = 0;
    json_t *events = json_array();
    while (mdb_cursor_get(cur, &k, &v, n ? MDB_NEXT : MDB_FIRST) == 0) {
        msgpack_unpacked msg;
        msgpack_unpacked_init(&msg);
        cr_assert_eq(msgpack_unpack_next(&msg, v.mv_data, v.mv_size, NULL), MSGPACK_UNPACK_SUCCESS);
        json_array_append_new(events, th_to_json(&msg.data));
        msgpack_unpacked_destroy(&msg);
        n++;
    }
    mdb_cursor_close(cur);
    cr_assert_eq(mdb_drop(txn, outbox, 0), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        const char *why = NULL;
        int rc = s_apply_full(th_str(e, "topic"), th_str(e, "key"),
                              json_incref(json_object_get(e, "data")), NULL, &why);
        cr_assert_eq(rc, 0, "the outbox held an event the consumer refuses: %s", why);
    }
    json_decref(events);
    return n;
}

/* ---- the usage example ------------------------------------------------------------ */

Test(stats, a_reported_play_goes_through_the_outbox_and_is_counted)
{
    s_track("t1", "Song", "[\"a1\"]", "SEABC2600001", 200000);
    s_user("u1", "SE");
    char started[STATS_TIME_MAX + 1];
    stats_time_format(s_noon(s_today - 1, 0), started);
    th_reply_t r =
        s_ok(s_call_as("u1", false, "play.report",
                       "{\"body\":{\"track_id\":\"t1\",\"started_at\":\"%s\","
                       "\"ms_played\":45000,\"context\":{\"type\":\"album\",\"id\":\"al1\"},"
                       "\"client_id\":\"0f6c-1\"}}",
                       started),
             202);
    cr_assert_str_eq(th_str(r.body, "id"), "0f6c-1");
    cr_assert(json_is_true(json_object_get(r.body, "counted_as_stream")));
    /* Nothing is counted until the event comes back from the bus. */
    r = s_ok(s_call_as("u1", false, "history.get", NULL), 200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "items")), 0);
    cr_assert_eq(s_deliver_outbox(), 1);

    r = s_ok(s_call_as("u1", false, "history.get", NULL), 200);
    json_t *items = json_object_get(r.body, "items");
    cr_assert_eq(json_array_size(items), 1);
    json_t *it = json_array_get(items, 0);
    cr_assert_str_eq(th_str(it, "track_id"), "t1");
    cr_assert_str_eq(th_str(it, "played_at"), started);
    cr_assert_eq(th_int(it, "ms_played"), 45000);
    cr_assert(json_is_true(json_object_get(it, "counted_as_stream")));
    cr_assert_str_eq(th_str(json_object_get(it, "context"), "type"), "album");
    cr_assert_str_eq(th_str(json_object_get(it, "context"), "id"), "al1");
    cr_assert_str_eq(th_str(it, "source"), "client");
    cr_assert_str_eq(th_str(json_object_get(it, "track"), "title"), "Song");
    cr_assert(json_is_null(json_object_get(r.body, "cursor")));

    char date[STATS_DATE_LEN + 1];
    s_date(s_today - 1, date);
    r = s_ok(
        s_call_as(NULL, false, "charts.top_tracks", "{\"date\":\"%s\",\"country\":\"SE\"}", date),
        200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "items")), 1);
    cr_assert_eq(th_int(json_array_get(json_object_get(r.body, "items"), 0), "streams"), 1);
}

/* ---- the consumer ------------------------------------------------------------------- */

static json_t *s_track_stats(const char *id, int64_t last_day, int days)
{
    char date[STATS_DATE_LEN + 1];
    s_date(last_day, date);
    return s_ok(s_call_as("admin", true, "track.stats",
                          "{\"id\":\"%s\",\"date\":\"%s\",\"days\":%d}", id, date, days),
                200)
        .body;
}

Test(stats, a_play_counts_as_a_stream_from_30_seconds_on)
{
    s_track("t1", "Song", "[\"a1\"]", NULL, 200000);
    int64_t day = s_today - 3;
    cr_assert_eq(s_play("u1", "t1", s_noon(day, 0), 29999, "p1"), STATS_APPLIED);
    cr_assert_eq(s_play("u2", "t1", s_noon(day, 1), 30000, "p2"), STATS_APPLIED);
    cr_assert_eq(s_play("u3", "t1", s_noon(day, 2), 0, "p3"), STATS_APPLIED);
    json_t *st = s_track_stats("t1", day, 1);
    json_t *d = json_array_get(json_object_get(st, "days"), 0);
    cr_assert_eq(th_int(d, "streams"), 1);
    cr_assert_eq(th_int(d, "plays"), 3);
    cr_assert_eq(th_int(d, "listeners"), 1, "listeners are users who streamed it");
    json_t *all = json_object_get(st, "all_time");
    cr_assert_eq(th_int(all, "streams"), 1);
    cr_assert_eq(th_int(all, "plays"), 3);
    /* Every play is in the history; only streams make top lists. */
    th_reply_t r = s_ok(s_call_as("u1", false, "history.get", NULL), 200);
    json_t *it = json_array_get(json_object_get(r.body, "items"), 0);
    cr_assert(json_is_false(json_object_get(it, "counted_as_stream")));
    r = s_ok(s_call_as("u1", false, "top.tracks", "{\"range\":\"all\"}"), 200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "items")), 0);
    r = s_ok(s_call_as("u2", false, "top.tracks", "{\"range\":\"all\"}"), 200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "items")), 1);
}

Test(stats, a_play_delivered_twice_counts_once)
{
    s_track("t1", "Song", "[\"a1\",\"a2\"]", NULL, 200000);
    int64_t at = s_noon(s_today - 1, 0);
    cr_assert_eq(s_play("u1", "t1", at, 60000, "same"), STATS_APPLIED);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(s_play("u1", "t1", at, 60000, "same"), STATS_DUPLICATE);
    /* The key decides, not the content: an import of the same listen has
       another key and counts (the importer's keys repeat across re-runs,
       and those count once). */
    char key[128];
    snprintf(key, sizeof key, "i:u1:%lld:t1", (long long)(at / 1000));
    stats_outcome_t out;
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(
            s_apply_full("play", key, s_play_data("u1", "t1", at, 60000, "import"), &out, NULL), 0);
        cr_assert_eq(out, i == 0 ? STATS_APPLIED : STATS_DUPLICATE);
    }
    json_t *st = s_track_stats("t1", s_today - 1, 1);
    cr_assert_eq(th_int(json_array_get(json_object_get(st, "days"), 0), "streams"), 2);
    th_reply_t r = s_ok(s_call_as("u1", false, "top.artists", "{\"range\":\"4w\"}"), 200);
    json_t *items = json_object_get(r.body, "items");
    cr_assert_eq(json_array_size(items), 2);
    cr_assert_eq(th_int(json_array_get(items, 0), "streams"), 2);
    cr_assert_str_eq(th_str(json_array_get(items, 0), "artist_id"), "a1");
    cr_assert_str_eq(th_str(json_array_get(items, 1), "artist_id"), "a2");
}

Test(stats, malformed_events_are_rejected_with_a_reason_and_the_rest_applies)
{
    s_track("t1", "Song", "[\"a1\"]", NULL, 200000);
    int64_t at = s_noon(s_today - 1, 0);
    static const struct {
        const char *topic, *key, *data, *reason; /* a word the reason must hold */
    } bad[] = {
        {"play", "c:u1:x", "[1,2]", "map"},
        {"play", "c:u1:x", "{\"track\":\"t1\"}", "user"},
        {"play", "c:u1:x", "{\"user\":\"u:1\",\"track\":\"t1\"}", "user"},
        {"play", "c:u1:x", "{\"user\":\"u1\",\"track\":\"\"}", "track"},
        {"play", "c:u1:x", "{\"user\":\"u1\",\"track\":\"t1\",\"started_at\":\"yesterday\"}",
         "started_at"},
        {"play", "c:u1:x", "{\"user\":\"u1\",\"track\":\"t1\",\"started_at\":5}", "started_at"},
        {"play", "c:u1:x",
         "{\"user\":\"u1\",\"track\":\"t1\",\"started_at\":%lld,\"ms_played\":-1}", "ms_played"},
        {"play", "c:u1:x",
         "{\"user\":\"u1\",\"track\":\"t1\",\"started_at\":%lld,\"ms_played\":86400001}",
         "ms_played"},
        {"play", "c:u1:x",
         "{\"user\":\"u1\",\"track\":\"t1\",\"started_at\":%lld,\"ms_played\":1,\"context\":"
         "{\"type\":\"party\"},\"source\":\"client\"}",
         "context"},
        {"play", "c:u1:x",
         "{\"user\":\"u1\",\"track\":\"t1\",\"started_at\":%lld,\"ms_played\":1,\"context\":"
         "{\"type\":\"radio\"},\"source\":\"fax\"}",
         "source"},
        /* well-formed data under a key that is not the play's */
        {"play", "c:u2:x",
         "{\"user\":\"u1\",\"track\":\"t1\",\"started_at\":%lld,\"ms_played\":1,\"context\":"
         "{\"type\":\"radio\"},\"source\":\"client\"}",
         "key"},
        {"play", "i:u1:123:t2",
         "{\"user\":\"u1\",\"track\":\"t1\",\"started_at\":%lld,\"ms_played\":1,\"context\":"
         "{\"type\":\"radio\"},\"source\":\"import\"}",
         "key"},
        {"play", NULL,
         "{\"user\":\"u1\",\"track\":\"t1\",\"started_at\":%lld,\"ms_played\":1,\"context\":"
         "{\"type\":\"radio\"},\"source\":\"client\"}",
         "key"},
        {"catalog.track", "t9", "{\"action\":\"renamed\",\"id\":\"t9\"}", "action"},
        {"catalog.track", "t9", "{\"action\":\"created\",\"id\":\"t9\"}", "object"},
        {"catalog.track", "t9",
         "{\"action\":\"created\",\"id\":\"t9\",\"object\":{\"id\":\"t8\",\"title\":\"x\","
         "\"artist_ids\":[]}}",
         "id"},
        {"catalog.track", "t9",
         "{\"action\":\"updated\",\"id\":\"t9\",\"object\":{\"id\":\"t9\",\"title\":\"x\","
         "\"artist_ids\":\"a1\"}}",
         "artist_ids"},
        {"users.user", "u9", "{\"action\":\"created\",\"id\":\"u9\"}", "user"},
        {"users.user", "u9",
         "{\"action\":\"updated\",\"id\":\"u9\",\"user\":{\"id\":\"u9\",\"country\":\"se\"}}",
         "country"},
        {"weather", "x", "{}", "topic"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char data[512];
        snprintf(data, sizeof data, bad[i].data, (long long)at);
        const char *why = NULL;
        int rc = s_apply_full(bad[i].topic, bad[i].key, th_json("%s", data), NULL, &why);
        cr_assert_eq(rc, MB_EINVAL, "event %zu (%s) was not refused", i, data);
        cr_assert_not_null(why);
        cr_assert(strstr(why, bad[i].reason), "event %zu: reason '%s' does not mention %s", i, why,
                  bad[i].reason);
    }
    /* None of them counted anything, and the consumer goes on. */
    cr_assert_eq(s_play("u1", "t1", at, 40000, "good"), STATS_APPLIED);
    json_t *st = s_track_stats("t1", s_today - 1, 1);
    cr_assert_eq(th_int(json_object_get(st, "all_time"), "plays"), 1);
    th_expect_error(s_call_as("admin", true, "track.stats", "{\"id\":\"t9\"}"), 404, "not_found",
                   NULL);
}

Test(stats, a_play_of_a_track_the_catalog_never_announced_counts_without_artists)
{
    int64_t at = s_noon(s_today - 1, 0);
    cr_assert_eq(s_play("u1", "ghost", at, 40000, "p"), STATS_APPLIED);
    json_t *st = s_track_stats("ghost", s_today - 1, 1);
    cr_assert(json_is_null(json_object_get(st, "track")));
    cr_assert_eq(th_int(json_object_get(st, "all_time"), "streams"), 1);
    th_reply_t r = s_ok(s_call_as("u1", false, "top.artists", NULL), 200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "items")), 0);
}

/*  Stores `next` as the meta group's offset, as its consumer would. */
static void s_meta_offset(uint64_t next)
{
    MDB_txn *txn;
    MDB_dbi offsets;
    cr_assert_eq(mdb_txn_begin(th_env, NULL, 0, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "_offsets", 0, &offsets), 0);
    uint8_t v[16] = {0};
    stats_put_u64(v, next);
    MDB_val k = {.mv_size = strlen(STATS_GROUP_META), .mv_data = STATS_GROUP_META};
    MDB_val val = {.mv_size = sizeof v, .mv_data = v};
    cr_assert_eq(mdb_put(txn, offsets, &k, &val, 0), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
}

Test(stats, a_play_of_an_unknown_track_waits_until_the_meta_group_is_past_it)
{
    int64_t at = s_noon(s_today - 1, 0);
    char key[64] = "c:u1:w";
    const char *why = NULL;
    /* Log: seq 10 creates track t1 (the meta group has not applied it),
       seq 20 is a play of it. The play waits: applied now, it would lose
       its artist. */
    cr_assert_eq(
        s_apply_at(20, "play", key, s_play_data("u1", "t1", at, 40000, "client"), NULL, &why),
        MB_ENOTYET);
    cr_assert(strstr(why, "waiting"));
    s_meta_offset(15);
    s_track("t1", "Song", "[\"a1\"]", NULL, 200000);
    s_user("u1", "SE");
    cr_assert_eq(
        s_apply_at(20, "play", key, s_play_data("u1", "t1", at, 40000, "client"), NULL, NULL), 0);
    th_reply_t r = s_ok(s_call_as("u1", false, "top.artists", NULL), 200);
    cr_assert_str_eq(th_str(json_array_get(json_object_get(r.body, "items"), 0), "artist_id"), "a1");
    /* A track no event before the play named, once the meta group is past
       the play: counted without artists, no more waiting. */
    cr_assert_eq(s_apply_at(30, "play", "c:u1:x", s_play_data("u1", "ghost", at, 40000, "client"),
                            NULL, NULL),
                 MB_ENOTYET);
    s_meta_offset(31);
    cr_assert_eq(s_apply_at(30, "play", "c:u1:x", s_play_data("u1", "ghost", at, 40000, "client"),
                            NULL, NULL),
                 0);
    /* Known track and user: never waits, whatever the offsets. */
    cr_assert_eq(s_apply_at(1000, "play", "c:u1:y", s_play_data("u1", "t1", at, 40000, "client"),
                            NULL, NULL),
                 0);
}

/* ---- play.report --------------------------------------------------------------------- */

static th_reply_t s_report(const char *user, const char *body)
{
    return s_call_as(user, false, "play.report", "{\"body\":%s}", body);
}

Test(stats, a_retried_report_is_answered_the_same_and_makes_one_event)
{
    s_track("t1", "Song", "[\"a1\"]", NULL, 200000);
    const char *body = "{\"track_id\":\"t1\",\"started_at\":\"2026-01-10T10:00:00+01:00\","
                       "\"ms_played\":12000,\"context\":{\"type\":\"search\"},"
                       "\"client_id\":\"retry-me\"}";
    for (int i = 0; i < 3; i++) {
        th_reply_t r = s_ok(s_report("u1", body), 202);
        cr_assert(json_is_false(json_object_get(r.body, "counted_as_stream")));
        cr_assert_str_eq(th_str(r.body, "id"), "retry-me");
    }
    /* The same client id for another play is a client bug: refused. */
    th_expect_error(s_report("u1", "{\"track_id\":\"t1\",\"started_at\":\"2026-01-10T10:00:00Z\","
                                  "\"ms_played\":12000,\"context\":{\"type\":\"search\"},"
                                  "\"client_id\":\"retry-me\"}"),
                   409, "conflict", "body.client_id");
    /* Another user may use the same client id: keys are per user. */
    s_ok(s_report("u2", body), 202);
    cr_assert_eq(s_deliver_outbox(), 2);
    json_t *st = s_track_stats("t1", stats_days_from_civil(2026, 1, 10), 1);
    cr_assert_eq(th_int(json_object_get(st, "all_time"), "plays"), 2);
    /* started_at kept its offset: 10:00+01:00 is 09:00Z. */
    th_reply_t r = s_ok(s_call_as("u1", false, "history.get", NULL), 200);
    cr_assert_str_eq(th_str(json_array_get(json_object_get(r.body, "items"), 0), "played_at"),
                     "2026-01-10T09:00:00.000Z");
}

Test(stats, a_report_is_checked_field_by_field)
{
    s_track("t1", "Song", "[\"a1\"]", NULL, 200000);
    const char *ok_ctx = "\"context\":{\"type\":\"radio\"}";
    static char body[1024];
#define S_BODY(...) (snprintf(body, sizeof body, __VA_ARGS__), body)
    th_expect_error(s_call_as(NULL, false, "play.report", "{\"body\":{}}"), 401, "unauthenticated",
                   NULL);
    th_expect_error(s_report("u1", "[]"), 400, "invalid", "body");
    th_expect_error(
        s_report("u1", S_BODY("{\"track_id\":\"t1\",\"started_at\":\"2026-01-01T00:00:00Z\","
                              "\"ms_played\":1,%s,\"client_id\":\"c\",\"extra\":1}",
                              ok_ctx)),
        400, "invalid", "body.extra");
    th_expect_error(
        s_report("u1", S_BODY("{\"track_id\":\"a:b\",\"started_at\":\"2026-01-01T00:00:00Z\","
                              "\"ms_played\":1,%s,\"client_id\":\"c\"}",
                              ok_ctx)),
        400, "invalid", "body.track_id");
    static const char *const bad_times[] = {"\"2026-02-30T00:00:00Z\"", "\"2026-01-01\"",
                                            "\"2026-01-01T00:00:00\"",  "1767225600000",
                                            "\"1999-12-31T23:59:59Z\"", "\"2999-01-01T00:00:00Z\"",
                                            "\"2026-01-01T24:00:00Z\""};
    for (size_t i = 0; i < sizeof bad_times / sizeof *bad_times; i++)
        th_expect_error(s_report("u1", S_BODY("{\"track_id\":\"t1\",\"started_at\":%s,"
                                             "\"ms_played\":1,%s,\"client_id\":\"c\"}",
                                             bad_times[i], ok_ctx)),
                       400, "invalid", "body.started_at");
    th_expect_error(
        s_report("u1", S_BODY("{\"track_id\":\"t1\",\"started_at\":\"2026-01-01T00:00:00Z\","
                              "\"ms_played\":86400001,%s,\"client_id\":\"c\"}",
                              ok_ctx)),
        400, "invalid", "body.ms_played");
    th_expect_error(s_report("u1", "{\"track_id\":\"t1\",\"started_at\":\"2026-01-01T00:00:00Z\","
                                  "\"ms_played\":1,\"context\":{\"type\":\"party\"},"
                                  "\"client_id\":\"c\"}"),
                   400, "invalid", "body.context.type");
    th_expect_error(s_report("u1", "{\"track_id\":\"t1\",\"started_at\":\"2026-01-01T00:00:00Z\","
                                  "\"ms_played\":1,\"context\":{\"type\":\"album\",\"id\":\"\"},"
                                  "\"client_id\":\"c\"}"),
                   400, "invalid", "body.context.id");
    th_expect_error(
        s_report("u1", S_BODY("{\"track_id\":\"t1\",\"started_at\":\"2026-01-01T00:00:00Z\","
                              "\"ms_played\":1,%s,\"client_id\":\"has space\"}",
                              ok_ctx)),
        400, "invalid", "body.client_id");
    th_expect_error(
        s_report("u1", S_BODY("{\"track_id\":\"t1\",\"started_at\":\"2026-01-01T00:00:00Z\","
                              "\"ms_played\":1,%s,\"client_id\":\"%065d\"}",
                              ok_ctx, 0)),
        400, "invalid", "body.client_id");
    th_expect_error(
        s_report("u1", S_BODY("{\"track_id\":\"nope\",\"started_at\":\"2026-01-01T00:00:00Z\","
                              "\"ms_played\":1,%s,\"client_id\":\"c\"}",
                              ok_ctx)),
        404, "not_found", "body.track_id");
    /* Nothing refused reached the outbox. */
    cr_assert_eq(s_deliver_outbox(), 0);
    s_ok(s_report("u1", S_BODY("{\"track_id\":\"t1\",\"started_at\":\"2026-01-01T00:00:00.5Z\","
                               "\"ms_played\":0,%s,\"client_id\":\"%064d\"}",
                               ok_ctx, 0)),
         202);
    cr_assert_eq(s_deliver_outbox(), 1);
#undef S_BODY
}

/* ---- history ----------------------------------------------------------------------------- */

Test(stats, history_pages_newest_first_with_a_cursor)
{
    s_track("t1", "One", "[\"a1\"]", NULL, 200000);
    s_track("t2", "Two", "[\"a1\"]", NULL, 200000);
    /* 45 plays, two of them at the same instant (different tracks). */
    for (int i = 0; i < 44; i++) {
        char id[16];
        snprintf(id, sizeof id, "p%d", i);
        s_play("u1", "t1", s_noon(s_today - 50 + i, 0), 40000, id);
    }
    s_play("u1", "t2", s_noon(s_today - 50 + 43, 0), 40000, "same-instant");
    s_play("u2", "t1", s_noon(s_today, 0), 40000, "other-user");
    int64_t prev = INT64_MAX;
    char cursor[256] = "";
    size_t seen = 0, pages = 0;
    for (;;) {
        th_reply_t r = cursor[0] ? s_call_as("u1", false, "history.get",
                                          "{\"limit\":20,\"cursor\":\"%s\"}", cursor)
                              : s_call_as("u1", false, "history.get", "{\"limit\":20}");
        s_ok(r, 200);
        pages++;
        json_t *items = json_object_get(r.body, "items");
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it)
        {
            int64_t at;
            const char *s = th_str(it, "played_at");
            cr_assert(stats_time_parse(s, strlen(s), &at));
            cr_assert_leq(at, prev, "newest first");
            prev = at;
            seen++;
        }
        json_t *c = json_object_get(r.body, "cursor");
        if (json_is_null(c)) {
            cr_assert(json_is_null(json_object_get(r.body, "next")));
            break;
        }
        cr_assert_eq(json_array_size(items), 20);
        snprintf(cursor, sizeof cursor, "%s", json_string_value(c));
        cr_assert(strstr(th_str(r.body, "next"), cursor));
    }
    cr_assert_eq(seen, 45, "every play once, none of another user");
    cr_assert_eq(pages, 3);
    th_expect_error(s_call_as("u1", false, "history.get", "{\"cursor\":\"zz\"}"), 400, "invalid",
                   "cursor");
    th_expect_error(s_call_as("u1", false, "history.get", "{\"limit\":51}"), 400, "invalid",
                   "limit");
    th_expect_error(s_call_as(NULL, false, "history.get", NULL), 401, "unauthenticated", NULL);
    /* Another user's first page holds only theirs. */
    th_reply_t r = s_ok(s_call_as("u2", false, "history.get", NULL), 200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "items")), 1);
}

/* ---- top lists ------------------------------------------------------------------------------- */

Test(stats, top_lists_cover_4_weeks_6_months_or_all_time)
{
    s_track("recent", "Recent", "[\"a1\"]", NULL, 200000);
    s_track("spring", "Spring", "[\"a2\"]", NULL, 200000);
    s_track("old", "Old", "[\"a3\",\"a1\"]", NULL, 200000);
    int n = 0;
    char id[16];
#define S_PLAYS(track, day, count)                                                                 \
    for (int i_ = 0; i_ < (count); i_++) {                                                         \
        snprintf(id, sizeof id, "p%d", n++);                                                       \
        s_play("u1", track, s_noon(day, i_), 40000, id);                                           \
    }
    S_PLAYS("recent", s_today - 2, 2);
    S_PLAYS("recent", s_today - 27, 1);  /* still in 4w (28 days counting today) */
    S_PLAYS("spring", s_today - 28, 5);  /* just out of 4w */
    S_PLAYS("spring", s_today - 181, 1); /* in 6m */
    S_PLAYS("old", s_today - 182, 10);   /* just out of 6m */
    S_PLAYS("old", s_today - 1000, 1);
#undef S_PLAYS
    struct {
        const char *range;
        const char *order[3];
        int streams[3];
    } want[] = {
        {"4w", {"recent"}, {3}},
        {"6m", {"spring", "recent"}, {6, 3}},
        {"all", {"old", "spring", "recent"}, {11, 6, 3}},
    };
    for (size_t w = 0; w < 3; w++) {
        th_reply_t r =
            s_ok(s_call_as("u1", false, "top.tracks", "{\"range\":\"%s\"}", want[w].range), 200);
        json_t *items = json_object_get(r.body, "items");
        cr_assert_str_eq(th_str(r.body, "range"), want[w].range);
        size_t expect = 0;
        while (expect < 3 && want[w].order[expect])
            expect++;
        cr_assert_eq(json_array_size(items), expect, "range %s", want[w].range);
        for (size_t i = 0; i < expect; i++) {
            json_t *it = json_array_get(items, i);
            cr_assert_str_eq(th_str(it, "track_id"), want[w].order[i]);
            cr_assert_eq(th_int(it, "streams"), want[w].streams[i]);
            cr_assert_eq(th_int(it, "rank"), (long long)i + 1);
            cr_assert_str_eq(th_str(json_object_get(it, "track"), "id"), want[w].order[i]);
        }
    }
    /* Artists: a1 is on "recent" and "old". Default range is 4w. */
    th_reply_t r = s_ok(s_call_as("u1", false, "top.artists", "{\"range\":\"all\",\"limit\":2}"), 200);
    json_t *items = json_object_get(r.body, "items");
    cr_assert_eq(json_array_size(items), 2);
    cr_assert_eq(th_int(r.body, "total"), 3);
    cr_assert_str_eq(th_str(json_array_get(items, 0), "artist_id"), "a1");
    cr_assert_eq(th_int(json_array_get(items, 0), "streams"), 14);
    cr_assert_str_eq(th_str(json_array_get(items, 1), "artist_id"), "a3");
    r = s_ok(s_call_as("u1", false, "top.artists", NULL), 200);
    cr_assert_str_eq(th_str(r.body, "range"), "4w");
    cr_assert_eq(json_array_size(json_object_get(r.body, "items")), 1);
    th_expect_error(s_call_as("u1", false, "top.tracks", "{\"range\":\"1y\"}"), 400, "invalid",
                   "range");
    /* Someone else's top list is empty. */
    r = s_ok(s_call_as("u2", false, "top.tracks", "{\"range\":\"all\"}"), 200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "items")), 0);
}

/* ---- charts ------------------------------------------------------------------------------------
 */

Test(stats, charts_are_global_or_per_country_over_a_window_of_days)
{
    s_track("hit", "Hit", "[\"a1\"]", NULL, 200000);
    s_track("local", "Local", "[\"a2\"]", NULL, 200000);
    s_user("sven", "SE");
    s_user("sara", "SE");
    s_user("joe", "US");
    /* "nobody" never had a users.user event: global chart only. */
    int64_t d = s_today - 1;
    s_play("sven", "local", s_noon(d, 0), 40000, "1");
    s_play("sara", "local", s_noon(d, 1), 40000, "2");
    s_play("sara", "hit", s_noon(d, 2), 40000, "3");
    s_play("joe", "hit", s_noon(d, 3), 40000, "4");
    s_play("nobody", "hit", s_noon(d, 4), 40000, "5");
    s_play("joe", "hit", s_noon(d - 1, 0), 40000, "6");
    s_play("joe", "local", s_noon(d, 5), 1000, "short"); /* not a stream */
    char date[STATS_DATE_LEN + 1];
    s_date(d, date);

    th_reply_t r = s_ok(s_call_as(NULL, false, "charts.top_tracks", "{\"date\":\"%s\"}", date), 200);
    json_t *items = json_object_get(r.body, "items");
    cr_assert(json_is_null(json_object_get(r.body, "country")));
    cr_assert_eq(th_int(r.body, "days"), 1);
    cr_assert_eq(json_array_size(items), 2);
    cr_assert_str_eq(th_str(json_array_get(items, 0), "track_id"), "hit");
    cr_assert_eq(th_int(json_array_get(items, 0), "streams"), 3);
    cr_assert_eq(th_int(json_array_get(items, 1), "streams"), 2);

    r = s_ok(
        s_call_as(NULL, false, "charts.top_tracks", "{\"date\":\"%s\",\"country\":\"SE\"}", date),
        200);
    items = json_object_get(r.body, "items");
    cr_assert_str_eq(th_str(r.body, "country"), "SE");
    cr_assert_eq(json_array_size(items), 2);
    cr_assert_str_eq(th_str(json_array_get(items, 0), "track_id"), "local");
    cr_assert_eq(th_int(json_array_get(items, 0), "streams"), 2);
    cr_assert_eq(th_int(json_array_get(items, 1), "streams"), 1);

    r = s_ok(s_call_as(NULL, false, "charts.top_tracks",
                       "{\"date\":\"%s\",\"days\":2,\"country\":\"US\"}", date),
             200);
    items = json_object_get(r.body, "items");
    cr_assert_eq(json_array_size(items), 1);
    cr_assert_eq(th_int(json_array_get(items, 0), "streams"), 2);
    char from[STATS_DATE_LEN + 1];
    s_date(d - 1, from);
    cr_assert_str_eq(th_str(r.body, "from"), from);

    /* A user who moves counts for the new country from then on. */
    s_user("joe", "SE");
    s_play("joe", "local", s_noon(d, 6), 40000, "7");
    r = s_ok(
        s_call_as(NULL, false, "charts.top_tracks", "{\"date\":\"%s\",\"country\":\"SE\"}", date),
        200);
    cr_assert_eq(th_int(json_array_get(json_object_get(r.body, "items"), 0), "streams"), 3);

    /* Default: yesterday, the last whole day. */
    r = s_ok(s_call_as(NULL, false, "charts.top_tracks", NULL), 200);
    cr_assert_str_eq(th_str(r.body, "date"), date);
    th_expect_error(s_call_as(NULL, false, "charts.top_tracks", "{\"country\":\"se\"}"), 400,
                   "invalid", "country");
    th_expect_error(s_call_as(NULL, false, "charts.top_tracks", "{\"date\":\"2026-13-01\"}"), 400,
                   "invalid", "date");
    th_expect_error(s_call_as(NULL, false, "charts.top_tracks", "{\"days\":367}"), 400, "invalid",
                   "days");
}

/* ---- track stats
 * --------------------------------------------------------------------------------- */

Test(stats, track_stats_give_streams_and_exact_unique_listeners_per_day)
{
    s_track("t1", "Song", "[\"a1\"]", NULL, 200000);
    int64_t d = s_today - 5;
    /* day d: u1 twice, u2 once; day d+1: u1, u3; day d+2: nothing. */
    s_play("u1", "t1", s_noon(d, 0), 40000, "1");
    s_play("u1", "t1", s_noon(d, 1), 40000, "2");
    s_play("u2", "t1", s_noon(d, 2), 40000, "3");
    s_play("u1", "t1", s_noon(d + 1, 0), 40000, "4");
    s_play("u3", "t1", s_noon(d + 1, 1), 40000, "5");
    s_play("u4", "t1", s_noon(d - 30, 0), 40000, "6"); /* before the window */
    json_t *st = s_track_stats("t1", d + 2, 3);
    json_t *days = json_object_get(st, "days");
    cr_assert_eq(json_array_size(days), 3);
    char date[STATS_DATE_LEN + 1];
    s_date(d, date);
    cr_assert_str_eq(th_str(json_array_get(days, 0), "date"), date);
    cr_assert_eq(th_int(json_array_get(days, 0), "streams"), 3);
    cr_assert_eq(th_int(json_array_get(days, 0), "listeners"), 2);
    cr_assert_eq(th_int(json_array_get(days, 1), "streams"), 2);
    cr_assert_eq(th_int(json_array_get(days, 1), "listeners"), 2);
    cr_assert_eq(th_int(json_array_get(days, 2), "streams"), 0);
    json_t *period = json_object_get(st, "period");
    cr_assert_eq(th_int(period, "streams"), 5);
    cr_assert_eq(th_int(period, "listeners"), 3, "u1 on two days is one listener");
    json_t *all = json_object_get(st, "all_time");
    cr_assert_eq(th_int(all, "streams"), 6);
    cr_assert_eq(th_int(all, "listeners"), 4);
    char first[STATS_TIME_MAX + 1], last[STATS_TIME_MAX + 1];
    stats_time_format(s_noon(d - 30, 0), first);
    stats_time_format(s_noon(d + 1, 1), last);
    cr_assert_str_eq(th_str(all, "first_played_at"), first);
    cr_assert_str_eq(th_str(all, "last_played_at"), last);
    cr_assert_str_eq(th_str(st, "from"), date);

    th_expect_error(s_call_as("u1", false, "track.stats", "{\"id\":\"t1\"}"), 403, "forbidden",
                   NULL);
    th_expect_error(s_call_as(NULL, false, "track.stats", "{\"id\":\"t1\"}"), 401, "unauthenticated",
                   NULL);
    th_expect_error(s_call_as("admin", true, "track.stats", "{\"id\":\"nope\"}"), 404, "not_found",
                   NULL);
    /* A track the catalog announced but nobody played: zeros. */
    s_track("t2", "Quiet", "[\"a1\"]", NULL, 1000);
    st = s_track_stats("t2", s_today, 28);
    cr_assert_eq(json_array_size(json_object_get(st, "days")), 28);
    cr_assert(json_is_null(json_object_get(json_object_get(st, "all_time"), "first_played_at")));
}

/* ---- royalty report
 * ------------------------------------------------------------------------------- */

Test(stats, the_royalty_report_lists_streams_per_track_and_isrc_as_csv)
{
    s_track("t1", "Plain", "[\"a1\"]", "SEABC2600001", 200000);
    s_track("t2", "Comma, \"quoted\"", "[\"a1\",\"a2\"]", "USXYZ2600002", 200000);
    s_track("t3", "No ISRC", "[\"a3\"]", NULL, 200000);
    int64_t d0 = stats_days_from_civil(2026, 3, 1);
    int n = 0;
    char id[16];
    for (int i = 0; i < 3; i++) {
        snprintf(id, sizeof id, "%d", n++);
        s_play("u1", "t2", s_noon(d0 + i, 0), 31000, id);
    }
    snprintf(id, sizeof id, "%d", n++);
    s_play("u2", "t1", s_noon(d0 + 1, 0), 30000, id);
    snprintf(id, sizeof id, "%d", n++);
    s_play("u2", "t3", s_noon(d0 + 31, 0), 30000, id); /* April: outside */
    snprintf(id, sizeof id, "%d", n++);
    s_play("u2", "t3", s_noon(d0 + 2, 0), 29999, id); /* not a stream */
    /* The catalog deleting a track does not take its streams off. */
    cr_assert_eq(s_apply("catalog.track", "t1",
                         th_json("{\"action\":\"deleted\",\"id\":\"t1\",\"object\":null}")),
                 0);

    th_reply_t r = s_ok(s_call_as("admin", true, "royalty.report",
                               "{\"from\":\"2026-03-01\",\"to\":\"2026-03-31\"}"),
                     200);
    cr_assert_str_eq(th_str(r.body, "content_type"), "text/csv");
    cr_assert_str_eq(th_str(r.body, "filename"), "royalties-2026-03-01-2026-03-31.csv");
    cr_assert_eq(th_int(r.body, "rows"), 2);
    cr_assert_eq(th_int(r.body, "total_streams"), 4);
    cr_assert_str_eq(th_str(r.body, "csv"), "track_id,isrc,title,artist_ids,streams\r\n"
                                           "t2,USXYZ2600002,\"Comma, \"\"quoted\"\"\",a1;a2,3\r\n"
                                           "t1,SEABC2600001,Plain,a1,1\r\n");

    r = s_ok(s_call_as("admin", true, "royalty.report",
                       "{\"from\":\"2026-04-01\",\"to\":\"2026-04-30\"}"),
             200);
    cr_assert_str_eq(th_str(r.body, "csv"), "track_id,isrc,title,artist_ids,streams\r\n"
                                           "t3,,No ISRC,a3,1\r\n");
    th_expect_error(
        s_call_as("u1", false, "royalty.report", "{\"from\":\"2026-03-01\",\"to\":\"2026-03-31\"}"),
        403, "forbidden", NULL);
    th_expect_error(s_call_as("admin", true, "royalty.report",
                             "{\"from\":\"2026-03-31\",\"to\":\"2026-03-01\"}"),
                   400, "invalid", "to");
    th_expect_error(s_call_as("admin", true, "royalty.report",
                             "{\"from\":\"2025-01-01\",\"to\":\"2026-03-01\"}"),
                   400, "invalid", "to");
    th_expect_error(s_call_as("admin", true, "royalty.report", "{\"to\":\"2026-03-01\"}"), 400,
                   "invalid", "from");
}

/* ---- erasure ----------------------------------------------------------------------------------
 */

Test(stats, a_deleted_user_is_erased_and_their_later_plays_ignored)
{
    s_track("t1", "Song", "[\"a1\"]", NULL, 200000);
    s_user("gone", "SE");
    s_user("stays", "SE");
    int64_t d = s_today - 1;
    s_play("gone", "t1", s_noon(d, 0), 40000, "1");
    s_play("gone", "t1", s_noon(d, 1), 40000, "2");
    s_play("stays", "t1", s_noon(d, 2), 40000, "3");
    cr_assert_eq(s_apply("users.user", "gone",
                         th_json("{\"action\":\"deleted\",\"id\":\"gone\",\"user\":null}")),
                 0);
    th_reply_t r = s_ok(s_call_as("gone", false, "history.get", NULL), 200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "items")), 0);
    r = s_ok(s_call_as("gone", false, "top.tracks", "{\"range\":\"all\"}"), 200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "items")), 0);
    r = s_ok(s_call_as("stays", false, "history.get", NULL), 200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "items")), 1);
    /* Streams stay (they name no one); the listener sets forget the user. */
    json_t *st = s_track_stats("t1", d, 1);
    cr_assert_eq(th_int(json_array_get(json_object_get(st, "days"), 0), "streams"), 3);
    cr_assert_eq(th_int(json_array_get(json_object_get(st, "days"), 0), "listeners"), 1);
    cr_assert_eq(th_int(json_object_get(st, "all_time"), "listeners"), 1);
    /* A late delivery of the erased user's play keeps nothing. */
    cr_assert_eq(s_play("gone", "t1", s_noon(d, 0), 40000, "1"), STATS_IGNORED);
    cr_assert_eq(s_play("gone", "t1", s_noon(d, 5), 40000, "9"), STATS_IGNORED);
    r = s_ok(s_call_as("gone", false, "history.get", NULL), 200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "items")), 0);
}

Test(stats, unknown_ops_and_empty_stores_answer_cleanly)
{
    th_expect_error(s_call_as("u1", false, "play.delete", NULL), 404, "unknown_op", NULL);
    th_reply_t r = s_ok(s_call_as("u1", false, "top.tracks", NULL), 200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "items")), 0);
    r = s_ok(s_call_as(NULL, false, "charts.top_tracks", NULL), 200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "items")), 0);
    r = s_ok(s_call_as("admin", true, "royalty.report",
                       "{\"from\":\"2026-01-01\",\"to\":\"2026-01-01\"}"),
             200);
    cr_assert_str_eq(th_str(r.body, "csv"), "track_id,isrc,title,artist_ids,streams\r\n");
}
