/*  catalog actor, audio: the consumer's apply function (catalog_audio_apply)
    fed the transcode actor's events built here, in transactions shaped
    like the runtime's (a batch transaction, a child per event); the
    track's audio object on track.get; track.stream's signed URLs checked
    with mb_media_verify(); the admins' versions list and delete; the
    events all of it publishes. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "catalog.h"
#include "catalog_harness.h"
#include "catalog_model.h"
#include "mb_error.h"
#include "mb_media.h"
#include "mb_msgpack.h"

#define SECRET "a media secret of the tests, 40 bytes.."
#define ADMIN "{\"user\":\"root\",\"tier\":\"free\",\"roles\":[\"user\",\"admin\"],\"sid\":\"s0\"}"
#define FREE "{\"user\":\"u-free\",\"tier\":\"free\",\"roles\":[\"user\"],\"sid\":\"s1\"}"
#define PREMIUM "{\"user\":\"u-prem\",\"tier\":\"premium\",\"roles\":[\"user\"],\"sid\":\"s2\"}"

/*  A loudness map as the transcode actor sends it. */
#define LOUD(i, tp, lra, gain)                                                                     \
    "{\"integrated_lufs\":" #i ",\"true_peak_dbtp\":" #tp ",\"lra_lu\":" #lra                      \
    ",\"gain_db\":" #gain "}"
#define RUNGS                                                                                      \
    "[{\"name\":\"a64\",\"bandwidth\":72000,\"average_bandwidth\":66000,"                          \
    "\"codecs\":\"mp4a.40.5\"},{\"name\":\"a128\",\"bandwidth\":140000,"                           \
    "\"average_bandwidth\":130000,\"codecs\":\"mp4a.40.2\"},{\"name\":\"a256\","                   \
    "\"bandwidth\":280000,\"average_bandwidth\":260000,\"codecs\":\"mp4a.40.2\"},"                 \
    "{\"name\":\"flac\",\"bandwidth\":1200000,\"average_bandwidth\":900000,\"codecs\":\"fLaC\"}]"

static void s_setup(void)
{
    setenv("MUSICBUS_MEDIA_SECRET", SECRET, 1);
    unsetenv("MUSICBUS_MEDIA_SECRET_FILE");
    unsetenv("MUSICBUS_STREAM_TTL");
    h_setup();
}

TestSuite(audio, .init = s_setup, .fini = th_teardown);

/* ---- feeding events --------------------------------------------------------------- */

static uint64_t s_clock_ms = 1796000000000ull; /* the broker's log time of the next event */

/*  Applies one event whose data is JSON (printf format) as the runtime
    does: a batch transaction, a child transaction for the event, kept
    only when apply returns 0. Returns what apply returned. */
static int s_apply(const char *topic, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int s_apply(const char *topic, const char *key, const char *fmt, ...)
{
    char *text;
    va_list ap;
    va_start(ap, fmt);
    cr_assert(vasprintf(&text, fmt, ap) >= 0);
    va_end(ap);
    json_error_t err;
    json_t *data = json_loads(text, JSON_DECODE_ANY, &err);
    cr_assert_not_null(data, "bad test JSON (%s): %s", err.text, text);
    free(text);
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    th_pack_json(&pk, data);
    json_decref(data);
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    cr_assert_eq(msgpack_unpack_next(&msg, buf.data, buf.size, NULL), MSGPACK_UNPACK_SUCCESS);
    mb_event_t ev = {.seq = 1,
                     .topic = topic,
                     .topic_len = strlen(topic),
                     .key = key ? key : "",
                     .key_len = key ? strlen(key) : 0,
                     .time = s_clock_ms++,
                     .data = &msg.data};
    MDB_txn *batch, *child;
    cr_assert_eq(mdb_txn_begin(th_env, NULL, 0, &batch), 0);
    cr_assert_eq(mdb_txn_begin(th_env, batch, 0, &child), 0);
    int rc = catalog_audio_apply(child, &ev, th_state);
    if (rc == 0)
        cr_assert_eq(mdb_txn_commit(child), 0);
    else
        mdb_txn_abort(child);
    cr_assert_eq(mdb_txn_commit(batch), 0);
    msgpack_unpacked_destroy(&msg);
    msgpack_sbuffer_destroy(&buf);
    return rc;
}

static void s_uploaded(const char *track, const char *version, bool lossless)
{
    cr_assert_eq(s_apply("audio.uploaded", version,
                         "{\"track_id\":\"%s\",\"version\":\"%s\",\"master\":\"%064d\","
                         "\"format\":\"flac\",\"codec\":\"flac\",\"sample_rate\":44100,"
                         "\"channels\":2,\"duration_ms\":201000,\"lossless\":%s}",
                         track, version, 0, lossless ? "true" : "false"),
                 0);
}

static void s_ready(const char *track, const char *version, const char *loudness)
{
    cr_assert_eq(s_apply("audio.ready", version,
                         "{\"track_id\":\"%s\",\"version\":\"%s\",\"loudness\":%s,"
                         "\"rungs\":" RUNGS ",\"duration_ms\":201013}",
                         track, version, loudness),
                 0);
}

static void s_failed(const char *track, const char *version, const char *reason)
{
    cr_assert_eq(s_apply("audio.failed", version,
                         "{\"track_id\":\"%s\",\"version\":\"%s\",\"reason\":\"%s\"}", track,
                         version, reason),
                 0);
}

/* ---- reading what the catalog says ----------------------------------------------- */

static const char *s_track(void)
{
    const char *artist = h_new_artist("Portishead");
    const char *album = h_new_album("Dummy", artist, "1994-08-22");
    return h_new_track(album, artist, 1, 1);
}

static const json_t *s_audio_of(const char *track)
{
    th_reply_t r = th_ok(h_call("track.get", "{\"id\":\"%s\"}", track), 200);
    const json_t *audio = json_object_get(r.body, "audio");
    cr_assert(json_is_object(audio), "a track always has its audio object");
    cr_assert_eq(json_object_size(audio), 6,
                 "audio is {status, version, failure_reason, "
                 "loudness, gain_db, lossless}");
    return audio;
}

static double s_num(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    cr_assert(json_is_number(v), "no number %s", key);
    return json_number_value(v);
}

static void s_expect_audio(const char *track, const char *status, const char *version)
{
    const json_t *audio = s_audio_of(track);
    cr_assert_str_eq(th_str(audio, "status"), status);
    const json_t *v = json_object_get(audio, "version");
    if (version)
        cr_assert_str_eq(json_string_value(v), version);
    else
        cr_assert(json_is_null(v), "no current version while %s", status);
}

/*  The admins' list of versions. */
static const json_t *s_versions(const char *track)
{
    th_reply_t r = th_ok(h_call_as(ADMIN, "track.audio_versions", "{\"id\":\"%s\"}", track), 200);
    cr_assert_str_eq(th_str(r.body, "track_id"), track);
    const json_t *versions = json_object_get(r.body, "versions");
    cr_assert(json_is_array(versions));
    return versions;
}

/*  Checks the newest outbox entry is catalog.track "updated" carrying the
    track as track.get answers it now. */
static void s_expect_track_event(size_t before, const char *track)
{
    th_reply_t r = th_ok(h_call("track.get", "{\"id\":\"%s\"}", track), 200);
    h_expect_event(before, "catalog.track", track, "updated", r.body);
}

/* ---- the consumer ------------------------------------------------------------------ */

Test(audio, usage_uploaded_processing_then_ready_with_loudness)
{
    const char *track = s_track();
    th_reply_t created = th_ok(h_call("track.get", "{\"id\":\"%s\"}", track), 200);
    const char *updated_at = th_str(created.body, "updated_at");
    s_expect_audio(track, "none", NULL);
    const json_t *audio = s_audio_of(track);
    cr_assert(json_is_null(json_object_get(audio, "loudness")));
    cr_assert(json_is_null(json_object_get(audio, "gain_db")));
    cr_assert(json_is_false(json_object_get(audio, "lossless")));

    size_t before = th_outbox_count();
    s_uploaded(track, "v1", true);
    s_expect_audio(track, "processing", NULL);
    s_expect_track_event(before, track);

    before = th_outbox_count();
    s_ready(track, "v1", LOUD(-9.5, -0.3, 6.1, -4.5));
    s_expect_audio(track, "ready", "v1");
    s_expect_track_event(before, track);
    audio = s_audio_of(track);
    const json_t *loudness = json_object_get(audio, "loudness");
    cr_assert_eq(json_object_size(loudness), 3);
    cr_assert_float_eq(s_num(loudness, "integrated_lufs"), -9.5, 1e-9);
    cr_assert_float_eq(s_num(loudness, "true_peak_dbtp"), -0.3, 1e-9);
    cr_assert_float_eq(s_num(loudness, "lra_lu"), 6.1, 1e-9);
    cr_assert_float_eq(s_num(audio, "gain_db"), -4.5, 1e-9, "the transcode actor's gain");
    cr_assert(json_is_true(json_object_get(audio, "lossless")), "from audio.uploaded");
    cr_assert(json_is_null(json_object_get(audio, "failure_reason")));

    th_reply_t now = th_ok(h_call("track.get", "{\"id\":\"%s\"}", track), 200);
    cr_assert(strcmp(th_str(now.body, "updated_at"), updated_at) >= 0, "updated_at moves on");
    /* Listings carry it too. */
    th_reply_t page =
        th_ok(h_call("album.tracks", "{\"id\":\"%s\"}", th_str(now.body, "album_id")), 200);
    const json_t *item = json_array_get(json_object_get(page.body, "items"), 0);
    cr_assert_str_eq(th_str(json_object_get(item, "audio"), "status"), "ready");

    const json_t *versions = s_versions(track);
    cr_assert_eq(json_array_size(versions), 1);
    const json_t *v = json_array_get(versions, 0);
    cr_assert_str_eq(th_str(v, "version"), "v1");
    cr_assert_str_eq(th_str(v, "status"), "ready");
    cr_assert(json_is_true(json_object_get(v, "current")));
    cr_assert(h_rfc3339(th_str(v, "created_at")));
    cr_assert_eq(json_array_size(json_object_get(v, "rungs")), 4);
    cr_assert_eq(th_int(v, "duration_ms"), 201013, "audio.ready's duration wins");
    cr_assert_float_eq(s_num(json_object_get(v, "loudness"), "gain_db"), -4.5, 1e-9);
}

Test(audio, a_newer_version_becomes_current_once_ready)
{
    const char *track = s_track();
    s_uploaded(track, "v1", false);
    s_ready(track, "v1", LOUD(-9.5, -0.3, 6.1, -4.5));
    size_t before = th_outbox_count();
    s_uploaded(track, "v2", true);
    cr_assert_eq(th_outbox_count(), before, "v1 still plays: the track did not change");
    s_expect_audio(track, "ready", "v1");
    s_ready(track, "v2", LOUD(-14, -2, 5, 0));
    s_expect_audio(track, "ready", "v2");
    s_expect_track_event(before, track);
    const json_t *audio = s_audio_of(track);
    cr_assert_float_eq(s_num(audio, "gain_db"), 0, 1e-9);
    cr_assert(json_is_true(json_object_get(audio, "lossless")));
    const json_t *versions = s_versions(track);
    cr_assert_eq(json_array_size(versions), 2);
    cr_assert_str_eq(th_str(json_array_get(versions, 0), "version"), "v2", "newest first");
    cr_assert(json_is_true(json_object_get(json_array_get(versions, 0), "current")));
    cr_assert(json_is_false(json_object_get(json_array_get(versions, 1), "current")));
}

Test(audio, a_failed_newer_version_keeps_the_older_ready_one)
{
    const char *track = s_track();
    s_uploaded(track, "v1", false);
    s_ready(track, "v1", LOUD(-9.5, -0.3, 6.1, -4.5));
    size_t before = th_outbox_count();
    s_uploaded(track, "v2", false);
    s_failed(track, "v2", "decoder: invalid data found");
    cr_assert_eq(th_outbox_count(), before, "nothing a listener sees changed");
    s_expect_audio(track, "ready", "v1");
    cr_assert(json_is_null(json_object_get(s_audio_of(track), "failure_reason")));
    const json_t *versions = s_versions(track);
    cr_assert_str_eq(th_str(json_array_get(versions, 0), "status"), "failed");
    cr_assert_str_eq(th_str(json_array_get(versions, 0), "reason"), "decoder: invalid data found");
    cr_assert_str_eq(th_str(json_array_get(versions, 1), "status"), "ready");
}

Test(audio, only_failures_make_the_track_failed_with_the_newest_reason)
{
    const char *track = s_track();
    s_uploaded(track, "v1", false);
    s_failed(track, "v1", "first");
    s_expect_audio(track, "failed", NULL);
    s_uploaded(track, "v2", false);
    s_expect_audio(track, "processing", NULL);
    size_t before = th_outbox_count();
    s_failed(track, "v2", "second");
    s_expect_track_event(before, track);
    const json_t *audio = s_audio_of(track);
    cr_assert_str_eq(th_str(audio, "status"), "failed");
    cr_assert_str_eq(th_str(audio, "failure_reason"), "second");
    cr_assert(json_is_null(json_object_get(audio, "loudness")));
    /* A retry that succeeds makes the version ready. */
    s_ready(track, "v1", LOUD(-20, -6, 3, 5));
    s_expect_audio(track, "ready", "v1");
    cr_assert_float_eq(s_num(s_audio_of(track), "gain_db"), 5, 1e-9);
}

Test(audio, events_out_of_order_and_redelivered_change_nothing_twice)
{
    const char *track = s_track();
    /* ready before uploaded (say uploaded was published by another path) */
    s_ready(track, "v1", LOUD(-9.5, -0.3, 6.1, -4.5));
    s_expect_audio(track, "ready", "v1");
    size_t before = th_outbox_count();
    th_reply_t first = th_ok(h_call("track.get", "{\"id\":\"%s\"}", track), 200);
    const json_t *list = s_versions(track);
    char *versions = json_dumps(list, JSON_SORT_KEYS);
    /* Redelivery: every event again, and late ones that would go back. */
    s_ready(track, "v1", LOUD(-9.5, -0.3, 6.1, -4.5));
    s_uploaded(track, "v1", false);
    s_failed(track, "v1", "late failure of a version that plays");
    cr_assert_eq(th_outbox_count(), before, "no event for a change that is none");
    th_reply_t again = th_ok(h_call("track.get", "{\"id\":\"%s\"}", track), 200);
    cr_assert(json_equal(first.body, again.body), "the track is untouched, updated_at too");
    char *now = json_dumps(s_versions(track), JSON_SORT_KEYS);
    cr_assert_str_eq(now, versions);
    free(now);
    free(versions);
}

Test(audio, duplicate_delivery_of_a_whole_sequence_is_idempotent)
{
    const char *track = s_track();
    for (int round = 0; round < 3; round++) {
        size_t before = th_outbox_count();
        s_uploaded(track, "v1", true);
        s_ready(track, "v1", LOUD(-9.5, -0.3, 6.1, -4.5));
        s_uploaded(track, "v2", false);
        s_failed(track, "v2", "boom");
        cr_assert_eq(th_outbox_count() - before, round == 0 ? 2 : 0,
                     "round %d: processing, then ready; nothing after", round);
        cr_assert_eq(json_array_size(s_versions(track)), 2);
        s_expect_audio(track, "ready", "v1");
    }
}

Test(audio, events_for_unknown_tracks_are_ignored)
{
    size_t before = th_outbox_count();
    cr_assert_eq(s_apply("audio.uploaded", "v1",
                         "{\"track_id\":\"NoSuchTrack\",\"version\":\"v1\",\"lossless\":true}"),
                 0, "not malformed: applied as nothing, the consumer goes on");
    cr_assert_eq(s_apply("audio.ready", "v1",
                         "{\"track_id\":\"NoSuchTrack\",\"version\":\"v1\",\"loudness\":" LOUD(
                             -9, -1, 2, -5) "}"),
                 0);
    cr_assert_eq(th_outbox_count(), before);
    th_expect_error(h_call_as(ADMIN, "track.audio_versions", "{\"id\":\"NoSuchTrack\"}"), 404,
                   "not_found", NULL);
}

Test(audio, malformed_events_are_skipped_with_einval)
{
    const char *track = s_track();
    static const struct {
        const char *topic, *data;
    } bad[] = {
        {"audio.uploaded", "[1,2]"},
        {"audio.uploaded", "{\"version\":\"v1\"}"},
        {"audio.uploaded", "{\"track_id\":7,\"version\":\"v1\"}"},
        {"audio.uploaded", "{\"track_id\":\"\",\"version\":\"v1\"}"},
        {"audio.uploaded", "{\"track_id\":\"%s\"}"},
        {"audio.uploaded", "{\"track_id\":\"%s\",\"version\":\"\"}"},
        {"audio.uploaded", "{\"track_id\":\"%s\",\"version\":\"../etc\"}"},
        {"audio.uploaded", "{\"track_id\":\"%s\",\"version\":\"a/b\"}"},
        {"audio.uploaded", "{\"track_id\":\"%s\",\"version\":\".hidden\"}"},
        {"audio.uploaded", "{\"track_id\":\"%s\",\"version\":\"v1\",\"lossless\":\"yes\"}"},
        {"audio.uploaded", "{\"track_id\":\"%s\",\"version\":\"v1\",\"duration_ms\":-5}"},
        {"audio.ready", "{\"track_id\":\"%s\",\"version\":\"v1\",\"loudness\":\"loud\"}"},
        {"audio.ready",
         "{\"track_id\":\"%s\",\"version\":\"v1\",\"loudness\":{\"integrated_lufs\":\"x\"}}"},
        {"audio.ready", "{\"track_id\":\"%s\",\"version\":\"v1\",\"rungs\":{}}"},
        {"audio.ready", "{\"track_id\":\"%s\",\"version\":\"v1\",\"rungs\":[{\"bandwidth\":1}]}"},
        {"audio.ready",
         "{\"track_id\":\"%s\",\"version\":\"v1\",\"rungs\":[{\"name\":\"a\",\"bandwidth\":-1}]}"},
        {"audio.failed", "{\"track_id\":\"%s\",\"version\":\"v1\",\"reason\":42}"},
        {"audio.deleted", "{\"track_id\":\"%s\",\"version\":\"v1\"}"},
    };
    size_t before = th_outbox_count();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(s_apply(bad[i].topic, "v1", bad[i].data, track), MB_EINVAL, "%s %s",
                     bad[i].topic, bad[i].data);
    /* 65 bytes of version: too long for a media URL's grant. */
    char *longer = h_repeat('v', CATALOG_VERSION_MAX + 1);
    cr_assert_eq(
        s_apply("audio.uploaded", "v", "{\"track_id\":\"%s\",\"version\":\"%s\"}", track, longer),
        MB_EINVAL);
    free(longer);
    cr_assert_eq(th_outbox_count(), before, "a skipped event publishes nothing");
    cr_assert_eq(json_array_size(s_versions(track)), 0, "and writes nothing");
    s_expect_audio(track, "none", NULL);
    /* The consumer goes on with the next good one. */
    s_uploaded(track, "v1", false);
    s_expect_audio(track, "processing", NULL);
}

Test(audio, missing_gain_is_computed_and_reasons_are_made_safe)
{
    const char *track = s_track();
    cr_assert_eq(s_apply("audio.ready", "v1",
                         "{\"track_id\":\"%s\",\"version\":\"v1\",\"loudness\":"
                         "{\"integrated_lufs\":-8,\"true_peak_dbtp\":0.5,\"lra_lu\":4}}",
                         track),
                 0);
    /* min(-14 - -8, -1 - 0.5) = min(-6, -1.5) */
    cr_assert_float_eq(s_num(s_audio_of(track), "gain_db"), -6, 1e-9);
    cr_assert_eq(s_apply("audio.failed", "v2",
                         "{\"track_id\":\"%s\",\"version\":\"v2\",\"reason\":null}", track),
                 0);
    cr_assert_str_eq(th_str(json_array_get(s_versions(track), 0), "reason"), "no reason given");
}

Test(audio, at_most_64_versions_and_tombstones_make_room_first)
{
    const char *track = s_track();
    char version[16];
    for (int i = 0; i < 64; i++) {
        snprintf(version, sizeof version, "v%02d", i);
        s_uploaded(track, version, false);
    }
    cr_assert_eq(
        s_apply("audio.uploaded", "v64", "{\"track_id\":\"%s\",\"version\":\"v64\"}", track),
        MB_EINVAL, "a 65th version processing is refused");
    th_ok(h_call_as(ADMIN, "track.audio_version_delete", "{\"id\":\"%s\",\"version\":\"v00\"}",
                   track),
         204);
    s_uploaded(track, "v64", false);
    const json_t *versions = s_versions(track);
    cr_assert_eq(json_array_size(versions), 64);
    cr_assert_str_eq(th_str(json_array_get(versions, 0), "version"), "v64");
    cr_assert_str_eq(th_str(json_array_get(versions, 63), "version"), "v01");
}

Test(audio, track_update_keeps_audio_and_refuses_to_set_it)
{
    const char *track = s_track();
    s_ready(track, "v1", LOUD(-9.5, -0.3, 6.1, -4.5));
    th_reply_t r = th_ok(
        h_call("track.update", "{\"id\":\"%s\",\"body\":{\"title\":\"Sour Times\"}}", track), 200);
    cr_assert_str_eq(th_str(json_object_get(r.body, "audio"), "version"), "v1");
    th_expect_invalid(
        h_call("track.update", "{\"id\":\"%s\",\"body\":{\"audio\":{\"status\":\"none\"}}}", track),
        "body.audio");
    th_expect_invalid(h_call("track.create",
                            "{\"body\":{\"title\":\"x\",\"artist_ids\":[\"a\"],\"album_id\":\"b\","
                            "\"track_number\":9,\"duration_ms\":1,\"audio\":null}}"),
                     "body.audio");
}

/* ---- track.stream ------------------------------------------------------------------- */

static mb_media_key_t s_key(void)
{
    mb_media_key_t key;
    cr_assert_eq(mb_media_key_load(NULL, &key), 0);
    return key;
}

/*  Checks the grant's URL names its version's master playlist, then
    returns what mb_media_verify() says of its token for `version` at
    `now`, setting *entitlement. */
static int s_verify(const json_t *body, const char *version, uint64_t now,
                    mb_media_entitlement_t *entitlement)
{
    const char *url = th_str(body, "url");
    cr_assert_eq(strncmp(url, "/media/", 7), 0, "%s", url);
    const char *token = url + 7;
    const char *slash = strchr(token, '/');
    cr_assert_not_null(slash);
    char tail[128];
    snprintf(tail, sizeof tail, "/%s/master.m3u8", th_str(body, "version"));
    cr_assert_str_eq(slash, tail, "the URL names the version's master playlist");
    mb_media_key_t key = s_key();
    return mb_media_verify(&key, token, (size_t)(slash - token), version, strlen(version), now,
                           entitlement);
}

static uint64_t s_parse_time(const char *s)
{
    struct tm tm = {0};
    cr_assert_not_null(strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm), "%s", s);
    cr_assert_eq(strlen(s), 20, "whole seconds: %s", s);
    return (uint64_t)timegm(&tm);
}

Test(audio, usage_stream_signs_the_current_version_by_tier)
{
    const char *track = s_track();
    s_uploaded(track, "v1", true);
    s_ready(track, "v1", LOUD(-9.5, -0.3, 6.1, -4.5));
    uint64_t before = (uint64_t)time(NULL);
    th_reply_t r = th_ok(h_call_as(FREE, "track.stream", "{\"id\":\"%s\"}", track), 200);
    uint64_t after = (uint64_t)time(NULL);
    cr_assert_eq(json_object_size(r.body), 7);
    cr_assert_str_eq(th_str(r.body, "version"), "v1");
    cr_assert_str_eq(th_str(r.body, "tier"), "free");
    cr_assert_eq(th_int(r.body, "max_bitrate_kbps"), 128);
    cr_assert_float_eq(s_num(r.body, "gain_db"), -4.5, 1e-9);
    const json_t *loudness = json_object_get(r.body, "loudness");
    cr_assert_eq(json_object_size(loudness), 3);
    cr_assert_float_eq(s_num(loudness, "integrated_lufs"), -9.5, 1e-9);
    uint64_t expires = s_parse_time(th_str(r.body, "expires_at"));
    cr_assert(expires >= before + 6 * 3600 && expires <= after + 6 * 3600, "six hours by default");

    mb_media_entitlement_t ent = 0;
    cr_assert_eq(s_verify(r.body, "v1", after, &ent), 0, "the signature verifies");
    cr_assert_eq(ent, MB_MEDIA_FREE);
    cr_assert_eq(s_verify(r.body, "v1", expires - 1, &ent), 0);
    cr_assert_eq(s_verify(r.body, "v1", expires + 1, &ent), MB_ETIMEDOUT, "and expires");
    s_uploaded(track, "v2", true);
    s_ready(track, "v2", LOUD(-14, -2, 5, 0));
    cr_assert_eq(s_verify(r.body, "v2", after, &ent), MB_EINVAL, "for that version only");

    r = th_ok(h_call_as(PREMIUM, "track.stream", "{\"id\":\"%s\"}", track), 200);
    cr_assert_str_eq(th_str(r.body, "tier"), "premium");
    cr_assert_str_eq(th_str(r.body, "version"), "v2", "the current version");
    cr_assert(json_is_null(json_object_get(r.body, "max_bitrate_kbps")));
    cr_assert_eq(s_verify(r.body, "v2", after, &ent), 0);
    cr_assert_eq(ent, MB_MEDIA_PREMIUM);

    r = th_ok(h_call_as(ADMIN, "track.stream", "{\"id\":\"%s\"}", track), 200);
    cr_assert_str_eq(th_str(r.body, "tier"), "premium", "admins count as premium");
    cr_assert_eq(s_verify(r.body, "v2", after, &ent), 0);
    cr_assert_eq(ent, MB_MEDIA_PREMIUM);
}

Test(audio, stream_ttl_comes_from_the_environment)
{
    setenv("MUSICBUS_STREAM_TTL", "120", 1);
    th_reopen();
    const char *track = s_track();
    s_ready(track, "v1", LOUD(-9.5, -0.3, 6.1, -4.5));
    uint64_t before = (uint64_t)time(NULL);
    th_reply_t r = th_ok(h_call_as(FREE, "track.stream", "{\"id\":\"%s\"}", track), 200);
    uint64_t expires = s_parse_time(th_str(r.body, "expires_at"));
    cr_assert(expires >= before + 120 && expires <= (uint64_t)time(NULL) + 120);
    mb_media_entitlement_t ent;
    cr_assert_eq(s_verify(r.body, "v1", expires, &ent), MB_ETIMEDOUT);
}

Test(audio, stream_refusals)
{
    const char *track = s_track();
    th_expect_error(h_call("track.stream", "{\"id\":\"%s\"}", track), 401, "unauthenticated", NULL);
    th_expect_error(h_call_as(FREE, "track.stream", "{\"id\":\"NoSuchTrack\"}"), 404, "not_found",
                   NULL);
    th_expect_invalid(h_call_as(FREE, "track.stream", "{\"id\":\"\"}"), "id");
    th_reply_t r = h_call_as(FREE, "track.stream", "{\"id\":\"%s\"}", track);
    th_expect_error(r, 409, "no_audio", NULL);
    cr_assert(strstr(r.message, "none"), "%s", r.message);
    s_uploaded(track, "v1", false);
    r = h_call_as(FREE, "track.stream", "{\"id\":\"%s\"}", track);
    th_expect_error(r, 409, "no_audio", NULL);
    cr_assert(strstr(r.message, "processing"), "%s", r.message);
    s_failed(track, "v1", "nope");
    th_expect_error(h_call_as(FREE, "track.stream", "{\"id\":\"%s\"}", track), 409, "no_audio",
                   NULL);
}

Test(audio, stream_without_a_media_secret_is_503_and_the_rest_works)
{
    unsetenv("MUSICBUS_MEDIA_SECRET");
    th_reopen();
    const char *track = s_track();
    s_ready(track, "v1", LOUD(-9.5, -0.3, 6.1, -4.5));
    s_expect_audio(track, "ready", "v1");
    th_expect_error(h_call_as(PREMIUM, "track.stream", "{\"id\":\"%s\"}", track), 503,
                   "media_unavailable", NULL);
}

Test(audio, a_secret_too_short_stops_start_up)
{
    setenv("MUSICBUS_MEDIA_SECRET", "short", 1);
    void *state = NULL;
    cr_assert_neq(th_def.open(th_env, &state), 0);
    cr_assert_null(state);
    setenv("MUSICBUS_MEDIA_SECRET", SECRET, 1);
}

/* ---- versions (admins) --------------------------------------------------------------- */

Test(audio, versions_are_for_admins)
{
    const char *track = s_track();
    th_expect_error(h_call("track.audio_versions", "{\"id\":\"%s\"}", track), 401, "unauthenticated",
                   NULL);
    th_expect_error(h_call_as(PREMIUM, "track.audio_versions", "{\"id\":\"%s\"}", track), 403,
                   "forbidden", NULL);
    th_expect_error(
        h_call_as(FREE, "track.audio_version_delete", "{\"id\":\"%s\",\"version\":\"v1\"}", track),
        403, "forbidden", NULL);
    th_reply_t r = th_ok(h_call_as(ADMIN, "track.audio_versions", "{\"id\":\"%s\"}", track), 200);
    cr_assert(json_is_null(json_object_get(r.body, "current")));
    cr_assert_eq(json_array_size(json_object_get(r.body, "versions")), 0);
}

Test(audio, usage_deleting_the_current_version_falls_back_to_the_next_ready)
{
    const char *track = s_track();
    s_uploaded(track, "v1", false);
    s_ready(track, "v1", LOUD(-9.5, -0.3, 6.1, -4.5));
    s_uploaded(track, "v2", true);
    s_ready(track, "v2", LOUD(-14, -2, 5, 0));
    s_uploaded(track, "v3", false);
    s_failed(track, "v3", "bad");

    size_t before = th_outbox_count();
    th_ok(
        h_call_as(ADMIN, "track.audio_version_delete", "{\"id\":\"%s\",\"version\":\"v2\"}", track),
        204);
    s_expect_audio(track, "ready", "v1");
    cr_assert(json_is_false(json_object_get(s_audio_of(track), "lossless")));
    cr_assert_eq(th_outbox_count(), before + 2, "version_removed, then the track's update");
    s_expect_track_event(before + 1, track);

    /* The removal event, just before the track's. */
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *cursor;
    MDB_val key, value;
    cr_assert_eq(mdb_txn_begin(th_env, NULL, MDB_RDONLY, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "_outbox", 0, &dbi), 0);
    cr_assert_eq(mdb_cursor_open(txn, dbi, &cursor), 0);
    cr_assert_eq(mdb_cursor_get(cursor, &key, &value, MDB_LAST), 0);
    cr_assert_eq(mdb_cursor_get(cursor, &key, &value, MDB_PREV), 0);
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    cr_assert_eq(msgpack_unpack_next(&msg, value.mv_data, value.mv_size, NULL),
                 MSGPACK_UNPACK_SUCCESS);
    cr_assert(mb_obj_str_eq(mb_map_get(&msg.data, "topic"), "audio.version_removed"));
    cr_assert(mb_obj_str_eq(mb_map_get(&msg.data, "key"), "v2"));
    json_t *data = th_keep(th_to_json(mb_map_get(&msg.data, "data")));
    cr_assert_eq(json_object_size(data), 2);
    cr_assert_str_eq(th_str(data, "track_id"), track);
    cr_assert_str_eq(th_str(data, "version"), "v2");
    msgpack_unpacked_destroy(&msg);
    mdb_cursor_close(cursor);
    mdb_txn_abort(txn);

    const json_t *versions = s_versions(track);
    cr_assert_eq(json_array_size(versions), 2, "a removed version is not listed");
    cr_assert_str_eq(th_str(json_array_get(versions, 0), "version"), "v3");
    cr_assert_str_eq(th_str(json_array_get(versions, 1), "version"), "v1");
    cr_assert(json_is_true(json_object_get(json_array_get(versions, 1), "current")));

    /* A late or redelivered event cannot bring it back. */
    before = th_outbox_count();
    s_ready(track, "v2", LOUD(-14, -2, 5, 0));
    s_uploaded(track, "v2", true);
    s_expect_audio(track, "ready", "v1");
    cr_assert_eq(th_outbox_count(), before);
    th_expect_error(
        h_call_as(ADMIN, "track.audio_version_delete", "{\"id\":\"%s\",\"version\":\"v2\"}", track),
        404, "not_found", NULL);

    /* Removing a version that is not current changes nothing a listener sees. */
    before = th_outbox_count();
    th_ok(
        h_call_as(ADMIN, "track.audio_version_delete", "{\"id\":\"%s\",\"version\":\"v3\"}", track),
        204);
    cr_assert_eq(th_outbox_count(), before + 1, "only audio.version_removed");
    cr_assert_str_eq(th_outbox_last().topic, "audio.version_removed");

    /* The last ready one goes: nothing left to play. */
    th_ok(
        h_call_as(ADMIN, "track.audio_version_delete", "{\"id\":\"%s\",\"version\":\"v1\"}", track),
        204);
    s_expect_audio(track, "none", NULL);
    th_expect_error(h_call_as(FREE, "track.stream", "{\"id\":\"%s\"}", track), 409, "no_audio",
                   NULL);
}

Test(audio, version_delete_refusals)
{
    const char *track = s_track();
    s_uploaded(track, "v1", false);
    th_expect_error(h_call_as(ADMIN, "track.audio_version_delete",
                             "{\"id\":\"NoSuchTrack\",\"version\":\"v1\"}"),
                   404, "not_found", NULL);
    th_expect_error(
        h_call_as(ADMIN, "track.audio_version_delete", "{\"id\":\"%s\",\"version\":\"v9\"}", track),
        404, "not_found", NULL);
    th_expect_invalid(h_call_as(ADMIN, "track.audio_version_delete",
                               "{\"id\":\"%s\",\"version\":\"../x\"}", track),
                     "version");
    th_expect_invalid(h_call_as(ADMIN, "track.audio_version_delete", "{\"id\":\"%s\"}", track),
                     "version");
    /* A processing version may be removed too. */
    th_ok(
        h_call_as(ADMIN, "track.audio_version_delete", "{\"id\":\"%s\",\"version\":\"v1\"}", track),
        204);
    s_expect_audio(track, "none", NULL);
}

Test(audio, deleting_a_track_removes_its_versions)
{
    const char *track = s_track();
    s_uploaded(track, "v1", false);
    s_ready(track, "v1", LOUD(-9.5, -0.3, 6.1, -4.5));
    s_uploaded(track, "v2", false);
    th_ok(
        h_call_as(ADMIN, "track.audio_version_delete", "{\"id\":\"%s\",\"version\":\"v2\"}", track),
        204);
    s_uploaded(track, "v3", false);
    size_t before = th_outbox_count();
    th_ok(h_call("track.delete", "{\"id\":\"%s\"}", track), 204);
    cr_assert_eq(th_outbox_count(), before + 3,
                 "v1 and v3 removed (v2 was already), then the "
                 "track deleted");
    h_expect_event(before + 2, "catalog.track", track, "deleted", NULL);
    /* Late events for it are ignored. */
    s_ready(track, "v3", LOUD(-9.5, -0.3, 6.1, -4.5));
    cr_assert_eq(th_outbox_count(), before + 3);
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val key = {.mv_size = strlen(track), .mv_data = (void *)track}, value;
    cr_assert_eq(mdb_txn_begin(th_env, NULL, MDB_RDONLY, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "track_audio", 0, &dbi), 0);
    cr_assert_eq(mdb_get(txn, dbi, &key, &value), MDB_NOTFOUND);
    mdb_txn_abort(txn);
}

/* ---- data written before audio existed ----------------------------------------------- */

Test(audio, tracks_stored_before_audio_get_their_audio_object_once)
{
    const char *track = s_track();
    th_reply_t r = th_ok(h_call("track.get", "{\"id\":\"%s\"}", track), 200);
    /* Store the track as an older actor did (no "audio"), without
       track_audio, and open again. */
    json_t *old = json_deep_copy(r.body);
    json_object_del(old, "audio");
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    th_pack_json(&pk, old);
    json_decref(old);
    th_def.close(th_state);
    MDB_txn *txn;
    MDB_dbi dbi;
    cr_assert_eq(mdb_txn_begin(th_env, NULL, 0, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "tracks", 0, &dbi), 0);
    MDB_val key = {.mv_size = strlen(track), .mv_data = (void *)track};
    MDB_val value = {.mv_size = buf.size, .mv_data = buf.data};
    cr_assert_eq(mdb_put(txn, dbi, &key, &value, 0), 0);
    cr_assert_eq(mdb_dbi_open(txn, "track_audio", 0, &dbi), 0);
    cr_assert_eq(mdb_drop(txn, dbi, 1), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    msgpack_sbuffer_destroy(&buf);

    cr_assert_eq(th_def.open(th_env, &th_state), 0);
    th_reply_t now = th_ok(h_call("track.get", "{\"id\":\"%s\"}", track), 200);
    cr_assert(json_equal(now.body, r.body), "the same track, audio none, updated_at kept");
    s_uploaded(track, "v1", false);
    s_expect_audio(track, "processing", NULL);
}
