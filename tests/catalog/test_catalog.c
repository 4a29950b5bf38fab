/*  catalog actor: every op of artists, albums and tracks driven through
    mb_actor_dispatch() with real encoded envelopes, against an LMDB
    environment in a temporary folder (catalog_harness.h). */
#include <criterion/criterion.h>
#include <ftw.h>
#include <jansson.h>
#include <lmdb.h>
#include <msgpack.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog.h"
#include "catalog_harness.h"
#include "mb_actor.h"
#include "mb_envelope.h"
#include "mb_events.h"
#include "mb_msgpack.h"

TestSuite(catalog, .init = h_setup, .fini = th_teardown);

/* ---- artists ------------------------------------------------------------------ */

Test(catalog, usage_artist_create_get_patch_delete)
{
    th_reply_t r =
        h_call("artist.create", "{\"body\":{\"name\":\"Nina Simone\",\"genres\":[\"jazz\"]}}");
    th_ok(r, 201);
    const char *id = th_str(r.body, "id");
    cr_assert_eq(strlen(id), 22);
    cr_assert_str_eq(th_str(r.body, "name"), "Nina Simone");
    cr_assert_eq(json_array_size(json_object_get(r.body, "genres")), 1);
    cr_assert(h_rfc3339(th_str(r.body, "created_at")));
    cr_assert_str_eq(th_str(r.body, "created_at"), th_str(r.body, "updated_at"));

    th_reply_t got = th_ok(h_call("artist.get", "{\"id\":\"%s\"}", id), 200);
    cr_assert(json_equal(got.body, r.body), "get answers what create stored");

    usleep(2000);
    th_reply_t patched = th_ok(
        h_call("artist.update", "{\"id\":\"%s\",\"body\":{\"name\":\"Eunice Waymon\"}}", id), 200);
    cr_assert_str_eq(th_str(patched.body, "name"), "Eunice Waymon");
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(patched.body, "genres"), 0)),
                     "jazz", "fields not given are kept");
    cr_assert_str_eq(th_str(patched.body, "created_at"), th_str(r.body, "created_at"));
    cr_assert(strcmp(th_str(patched.body, "updated_at"), th_str(r.body, "updated_at")) > 0);
    got = th_ok(h_call("artist.get", "{\"id\":\"%s\"}", id), 200);
    cr_assert(json_equal(got.body, patched.body));

    th_reply_t gone = th_ok(h_call("artist.delete", "{\"id\":\"%s\"}", id), 204);
    cr_assert(json_is_null(gone.body));
    th_expect_error(h_call("artist.get", "{\"id\":\"%s\"}", id), 404, "not_found", NULL);
    th_expect_error(h_call("artist.delete", "{\"id\":\"%s\"}", id), 404, "not_found", NULL);
}

Test(catalog, artist_patch_replaces_genres_and_checks_them)
{
    const char *id = h_new_artist("A");
    th_reply_t r = th_ok(
        h_call("artist.update", "{\"id\":\"%s\",\"body\":{\"genres\":[\"a\",\"b\"]}}", id), 200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "genres")), 2);
    th_expect_invalid(
        h_call("artist.update", "{\"id\":\"%s\",\"body\":{\"genres\":[\"a\",\"a\"]}}", id),
        "body.genres[1]");
    th_expect_invalid(h_call("artist.update", "{\"id\":\"%s\",\"body\":{\"name\":null}}", id),
                     "body.name");
    r = th_ok(h_call("artist.get", "{\"id\":\"%s\"}", id), 200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "genres")), 2,
                 "a refused patch changes nothing");
}

/* ---- albums ------------------------------------------------------------------- */

Test(catalog, album_create_get_patch_delete)
{
    const char *artist = h_new_artist("Miles Davis");
    th_reply_t r = th_ok(h_call("album.create",
                            "{\"body\":{\"title\":\"Kind of Blue\",\"artist_ids\":[\"%s\"],"
                            "\"release_date\":\"1959-08-17\",\"label\":\"Columbia\","
                            "\"upc\":\"074646493523\",\"genres\":[\"jazz\",\"modal\"]}}",
                            artist),
                     201);
    const char *id = th_str(r.body, "id");
    cr_assert_str_eq(th_str(r.body, "title"), "Kind of Blue");
    cr_assert_str_eq(th_str(r.body, "release_date"), "1959-08-17");
    cr_assert_str_eq(th_str(r.body, "label"), "Columbia");
    cr_assert_str_eq(th_str(r.body, "upc"), "074646493523");

    th_reply_t got = th_ok(h_call("album.get", "{\"id\":\"%s\"}", id), 200);
    json_t *tracks = json_object_get(got.body, "tracks");
    cr_assert_not_null(tracks, "album.get includes its first page of tracks");
    cr_assert_eq(th_int(tracks, "total"), 0);
    cr_assert_eq(th_int(tracks, "limit"), 20);
    cr_assert(json_is_null(json_object_get(tracks, "next")));
    json_object_del(got.body, "tracks");
    cr_assert(json_equal(got.body, r.body));

    r = th_ok(h_call("album.update",
                    "{\"id\":\"%s\",\"body\":{\"label\":null,\"upc\":\"4006381333931\"}}", id),
             200);
    cr_assert(json_is_null(json_object_get(r.body, "label")), "null clears an optional field");
    cr_assert_str_eq(th_str(r.body, "upc"), "4006381333931");
    cr_assert_str_eq(th_str(r.body, "title"), "Kind of Blue");

    th_ok(h_call("album.delete", "{\"id\":\"%s\"}", id), 204);
    th_expect_error(h_call("album.get", "{\"id\":\"%s\"}", id), 404, "not_found", NULL);
    th_reply_t albums = th_ok(h_call("artist.albums", "{\"id\":\"%s\"}", artist), 200);
    cr_assert_eq(th_int(albums.body, "total"), 0, "deleting an album unlists it");
    th_ok(h_call("artist.delete", "{\"id\":\"%s\"}", artist), 204);
}

Test(catalog, album_optional_fields_default_to_null)
{
    const char *artist = h_new_artist("A");
    th_reply_t r =
        th_ok(h_call("album.create", "{\"body\":{\"title\":\"T\",\"artist_ids\":[\"%s\"]}}", artist),
             201);
    cr_assert(json_is_null(json_object_get(r.body, "release_date")));
    cr_assert(json_is_null(json_object_get(r.body, "label")));
    cr_assert(json_is_null(json_object_get(r.body, "upc")));
    cr_assert_eq(json_array_size(json_object_get(r.body, "genres")), 0);
}

Test(catalog, album_artists_must_exist)
{
    const char *a = h_new_artist("A");
    th_expect_invalid(h_call("album.create",
                            "{\"body\":{\"title\":\"T\",\"artist_ids\":[\"%s\",\"nobody\"]}}", a),
                     "body.artist_ids[1]");
    th_reply_t albums = th_ok(h_call("artist.albums", "{\"id\":\"%s\"}", a), 200);
    cr_assert_eq(th_int(albums.body, "total"), 0, "a refused create writes nothing");
}

Test(catalog, artist_albums_by_release_date_and_moved_by_patch)
{
    const char *a = h_new_artist("A");
    const char *b = h_new_artist("B");
    const char *late = h_new_album("late", a, "2010");
    const char *early = h_new_album("early", a, "1999-05-01");
    const char *mid = h_new_album("mid", a, "2005-02");
    th_reply_t r = th_ok(h_call("artist.albums", "{\"id\":\"%s\"}", a), 200);
    json_t *items = json_object_get(r.body, "items");
    cr_assert_eq(json_array_size(items), 3);
    cr_assert_str_eq(th_str(json_array_get(items, 0), "id"), early);
    cr_assert_str_eq(th_str(json_array_get(items, 1), "id"), mid);
    cr_assert_str_eq(th_str(json_array_get(items, 2), "id"), late);

    /* Moving "late" to artist B and to 1990: leaves A, first under B. */
    th_ok(h_call("album.update",
                "{\"id\":\"%s\",\"body\":{\"artist_ids\":[\"%s\"],\"release_date\":\"1990\"}}",
                late, b),
         200);
    r = th_ok(h_call("artist.albums", "{\"id\":\"%s\"}", a), 200);
    cr_assert_eq(th_int(r.body, "total"), 2);
    r = th_ok(h_call("artist.albums", "{\"id\":\"%s\"}", b), 200);
    cr_assert_eq(th_int(r.body, "total"), 1);
    cr_assert_str_eq(th_str(json_array_get(json_object_get(r.body, "items"), 0), "id"), late);

    /* A new release date reorders within the artist. */
    th_ok(
        h_call("album.update", "{\"id\":\"%s\",\"body\":{\"release_date\":\"2020-01-01\"}}", early),
        200);
    r = th_ok(h_call("artist.albums", "{\"id\":\"%s\",\"limit\":1,\"offset\":1}", a), 200);
    items = json_object_get(r.body, "items");
    cr_assert_eq(json_array_size(items), 1);
    cr_assert_str_eq(th_str(json_array_get(items, 0), "id"), early);
    char prev[128];
    snprintf(prev, sizeof prev, "/v1/artists/%s/albums?offset=0&limit=1", a);
    cr_assert_str_eq(th_str(r.body, "previous"), prev);
    cr_assert(json_is_null(json_object_get(r.body, "next")));
    th_expect_invalid(
        h_call("album.update", "{\"id\":\"%s\",\"body\":{\"artist_ids\":[\"ghost\"]}}", mid),
        "body.artist_ids[0]");
}

/* ---- tracks ----------------------------------------------------------------------- */

Test(catalog, track_create_get_patch_delete)
{
    const char *artist = h_new_artist("Queen");
    const char *album = h_new_album("A Night at the Opera", artist, "1975-11-21");
    th_reply_t r = th_ok(h_call("track.create",
                            "{\"body\":{\"title\":\"Bohemian Rhapsody\",\"artist_ids\":[\"%s\"],"
                            "\"album_id\":\"%s\",\"track_number\":11,\"duration_ms\":354320,"
                            "\"isrc\":\"GB-UM7-15-14501\",\"explicit\":false}}",
                            artist, album),
                     201);
    const char *id = th_str(r.body, "id");
    cr_assert_str_eq(th_str(r.body, "isrc"), "GBUM71514501", "ISRC stored without hyphens");
    cr_assert_eq(th_int(r.body, "disc_number"), 1, "disc defaults to 1");
    cr_assert_eq(th_int(r.body, "track_number"), 11);
    cr_assert_eq(th_int(r.body, "duration_ms"), 354320);
    cr_assert(json_is_false(json_object_get(r.body, "explicit")));
    cr_assert_str_eq(th_str(r.body, "album_id"), album);

    th_reply_t got = th_ok(h_call("track.get", "{\"id\":\"%s\"}", id), 200);
    cr_assert(json_equal(got.body, r.body));

    r = th_ok(h_call("track.update",
                    "{\"id\":\"%s\",\"body\":{\"explicit\":true,\"isrc\":null,\"duration_ms\":1}}",
                    id),
             200);
    cr_assert(json_is_true(json_object_get(r.body, "explicit")));
    cr_assert(json_is_null(json_object_get(r.body, "isrc")));
    cr_assert_eq(th_int(r.body, "duration_ms"), 1);
    cr_assert_str_eq(th_str(r.body, "title"), "Bohemian Rhapsody");

    th_ok(h_call("track.delete", "{\"id\":\"%s\"}", id), 204);
    th_expect_error(h_call("track.get", "{\"id\":\"%s\"}", id), 404, "not_found", NULL);
    th_reply_t list = th_ok(h_call("album.tracks", "{\"id\":\"%s\"}", album), 200);
    cr_assert_eq(th_int(list.body, "total"), 0);
    th_ok(h_call("album.delete", "{\"id\":\"%s\"}", album), 204);
    th_ok(h_call("artist.delete", "{\"id\":\"%s\"}", artist), 204);
}

Test(catalog, album_tracks_ordered_by_disc_then_track)
{
    const char *artist = h_new_artist("A");
    const char *album = h_new_album("Double", artist, "2000");
    const int order[][2] = {{2, 1}, {1, 10}, {1, 2}, {2, 300}, {1, 1}, {2, 20}};
    const int sorted[][2] = {{1, 1}, {1, 2}, {1, 10}, {2, 1}, {2, 20}, {2, 300}};
    for (size_t i = 0; i < 6; i++)
        h_new_track(album, artist, order[i][0], order[i][1]);
    th_reply_t r = th_ok(h_call("album.tracks", "{\"id\":\"%s\"}", album), 200);
    json_t *items = json_object_get(r.body, "items");
    cr_assert_eq(json_array_size(items), 6);
    for (size_t i = 0; i < 6; i++) {
        cr_assert_eq(th_int(json_array_get(items, i), "disc_number"), sorted[i][0]);
        cr_assert_eq(th_int(json_array_get(items, i), "track_number"), sorted[i][1]);
    }
}

Test(catalog, paging_next_and_previous)
{
    const char *artist = h_new_artist("A");
    const char *album = h_new_album("Long", artist, "2000");
    for (int i = 1; i <= 45; i++)
        h_new_track(album, artist, 1, i);
    char next[128];

    th_reply_t r = th_ok(h_call("album.tracks", "{\"id\":\"%s\"}", album), 200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "items")), 20);
    cr_assert_eq(th_int(r.body, "limit"), 20);
    cr_assert_eq(th_int(r.body, "offset"), 0);
    cr_assert_eq(th_int(r.body, "total"), 45);
    snprintf(next, sizeof next, "/v1/albums/%s/tracks?offset=20&limit=20", album);
    cr_assert_str_eq(th_str(r.body, "next"), next);
    cr_assert(json_is_null(json_object_get(r.body, "previous")));

    r = th_ok(h_call("album.tracks", "{\"id\":\"%s\",\"offset\":40,\"limit\":20}", album), 200);
    json_t *items = json_object_get(r.body, "items");
    cr_assert_eq(json_array_size(items), 5);
    cr_assert_eq(th_int(json_array_get(items, 0), "track_number"), 41);
    cr_assert(json_is_null(json_object_get(r.body, "next")));
    snprintf(next, sizeof next, "/v1/albums/%s/tracks?offset=20&limit=20", album);
    cr_assert_str_eq(th_str(r.body, "previous"), next);

    r = th_ok(h_call("album.tracks", "{\"id\":\"%s\",\"offset\":5,\"limit\":50}", album), 200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "items")), 40);
    snprintf(next, sizeof next, "/v1/albums/%s/tracks?offset=0&limit=50", album);
    cr_assert_str_eq(th_str(r.body, "previous"), next, "previous never goes below 0");

    r = th_ok(h_call("album.tracks", "{\"id\":\"%s\",\"offset\":100}", album), 200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "items")), 0);
    cr_assert_eq(th_int(r.body, "total"), 45);
    cr_assert(json_is_null(json_object_get(r.body, "next")));

    r = th_ok(h_call("album.get", "{\"id\":\"%s\"}", album), 200);
    json_t *first = json_object_get(r.body, "tracks");
    cr_assert_eq(json_array_size(json_object_get(first, "items")), 20);
    cr_assert_eq(th_int(first, "total"), 45);
    snprintf(next, sizeof next, "/v1/albums/%s/tracks?offset=20&limit=20", album);
    cr_assert_str_eq(th_str(first, "next"), next);
}

Test(catalog, get_many_keeps_order_with_null_for_unknown)
{
    const char *artist = h_new_artist("A");
    const char *album = h_new_album("Al", artist, "2000");
    const char *t1 = h_new_track(album, artist, 1, 1);
    const char *t2 = h_new_track(album, artist, 1, 2);
    th_reply_t r = th_ok(
        h_call("track.get_many", "{\"ids\":[\"%s\",\"nope\",\"%s\",\"%s\"]}", t2, t1, t2), 200);
    json_t *tracks = json_object_get(r.body, "tracks");
    cr_assert_eq(json_array_size(tracks), 4);
    cr_assert_str_eq(th_str(json_array_get(tracks, 0), "id"), t2);
    cr_assert(json_is_null(json_array_get(tracks, 1)));
    cr_assert_str_eq(th_str(json_array_get(tracks, 2), "id"), t1);
    cr_assert_str_eq(th_str(json_array_get(tracks, 3), "id"), t2);

    char ids[64 * 52] = "";
    for (int i = 0; i < 51; i++)
        strcat(ids, i ? ",\"x\"" : "\"x\"");
    th_expect_invalid(h_call("track.get_many", "{\"ids\":[%s]}", ids), "ids");
    th_expect_invalid(h_call("track.get_many", "{\"ids\":[]}"), "ids");
    th_expect_invalid(h_call("track.get_many", "{\"ids\":\"a,b\"}"), "ids");
    th_expect_invalid(h_call("track.get_many", "{}"), "ids");
    th_expect_invalid(h_call("track.get_many", "{\"ids\":[\"a\",7]}"), "ids[1]");
    th_expect_invalid(h_call("track.get_many", "{\"ids\":[\"a\",\"\"]}"), "ids[1]");
}

Test(catalog, patch_moves_track_within_and_between_albums)
{
    const char *artist = h_new_artist("A");
    const char *one = h_new_album("One", artist, "2000");
    const char *two = h_new_album("Two", artist, "2001");
    const char *a = h_new_track(one, artist, 1, 1);
    const char *b = h_new_track(one, artist, 1, 2);

    /* Taken positions are refused, on create and on patch. */
    th_expect_error(
        h_call("track.create",
               "{\"body\":{\"title\":\"dup\",\"artist_ids\":[\"%s\"],\"album_id\":\"%s\","
               "\"track_number\":2,\"duration_ms\":1}}",
               artist, one),
        409, "conflict", "body.track_number");
    th_expect_error(h_call("track.update", "{\"id\":\"%s\",\"body\":{\"track_number\":2}}", a), 409,
                   "conflict", "body.track_number");
    /* Patching a track to its own position is no conflict. */
    th_ok(h_call("track.update", "{\"id\":\"%s\",\"body\":{\"track_number\":1}}", a), 200);

    th_ok(h_call("track.update", "{\"id\":\"%s\",\"body\":{\"track_number\":3}}", a), 200);
    th_reply_t r = th_ok(h_call("album.tracks", "{\"id\":\"%s\"}", one), 200);
    json_t *items = json_object_get(r.body, "items");
    cr_assert_eq(json_array_size(items), 2);
    cr_assert_str_eq(th_str(json_array_get(items, 0), "id"), b);
    cr_assert_str_eq(th_str(json_array_get(items, 1), "id"), a);

    th_ok(h_call("track.update", "{\"id\":\"%s\",\"body\":{\"album_id\":\"%s\"}}", a, two), 200);
    r = th_ok(h_call("album.tracks", "{\"id\":\"%s\"}", one), 200);
    cr_assert_eq(th_int(r.body, "total"), 1);
    r = th_ok(h_call("album.tracks", "{\"id\":\"%s\"}", two), 200);
    cr_assert_eq(th_int(r.body, "total"), 1);
    cr_assert_str_eq(th_str(json_array_get(json_object_get(r.body, "items"), 0), "id"), a);
    th_expect_invalid(
        h_call("track.update", "{\"id\":\"%s\",\"body\":{\"album_id\":\"nowhere\"}}", a),
        "body.album_id");
    r = th_ok(h_call("track.get", "{\"id\":\"%s\"}", a), 200);
    cr_assert_str_eq(th_str(r.body, "album_id"), two, "a refused move changes nothing");
    r = th_ok(h_call("album.tracks", "{\"id\":\"%s\"}", two), 200);
    cr_assert_eq(th_int(r.body, "total"), 1);
}

/* ---- integrity --------------------------------------------------------------- */

Test(catalog, deletes_refused_while_referenced)
{
    const char *artist = h_new_artist("A");
    const char *guest = h_new_artist("Guest");
    const char *album = h_new_album("Al", artist, "2000");
    th_expect_error(h_call("artist.delete", "{\"id\":\"%s\"}", artist), 409, "conflict", NULL);

    th_reply_t r = th_ok(h_call("track.create",
                            "{\"body\":{\"title\":\"feat\",\"artist_ids\":[\"%s\",\"%s\"],"
                            "\"album_id\":\"%s\",\"track_number\":1,\"duration_ms\":1}}",
                            artist, guest, album),
                     201);
    const char *track = th_str(r.body, "id");
    th_expect_error(h_call("album.delete", "{\"id\":\"%s\"}", album), 409, "conflict", NULL);
    th_expect_error(h_call("artist.delete", "{\"id\":\"%s\"}", guest), 409, "conflict", NULL);

    /* Dropping the guest from the track frees the guest. */
    th_ok(
        h_call("track.update", "{\"id\":\"%s\",\"body\":{\"artist_ids\":[\"%s\"]}}", track, artist),
        200);
    th_ok(h_call("artist.delete", "{\"id\":\"%s\"}", guest), 204);

    th_ok(h_call("track.delete", "{\"id\":\"%s\"}", track), 204);
    th_ok(h_call("album.delete", "{\"id\":\"%s\"}", album), 204);
    th_ok(h_call("artist.delete", "{\"id\":\"%s\"}", artist), 204);
}

Test(catalog, track_references_must_exist)
{
    const char *artist = h_new_artist("A");
    const char *album = h_new_album("Al", artist, "2000");
    th_expect_invalid(
        h_call("track.create",
               "{\"body\":{\"title\":\"t\",\"artist_ids\":[\"%s\"],\"album_id\":\"nope\","
               "\"track_number\":1,\"duration_ms\":1}}",
               artist),
        "body.album_id");
    th_expect_invalid(h_call("track.create",
                            "{\"body\":{\"title\":\"t\",\"artist_ids\":[\"%s\",\"nope\"],"
                            "\"album_id\":\"%s\",\"track_number\":1,\"duration_ms\":1}}",
                            artist, album),
                     "body.artist_ids[1]");
    th_reply_t r = th_ok(h_call("album.tracks", "{\"id\":\"%s\"}", album), 200);
    cr_assert_eq(th_int(r.body, "total"), 0);
}

Test(catalog, unknown_ids_are_404)
{
    const char *ops[] = {"artist.get", "artist.update", "artist.delete", "artist.albums",
                         "album.get",  "album.update",  "album.delete",  "album.tracks",
                         "track.get",  "track.update",  "track.delete"};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
        th_expect_error(h_call(ops[i], "{\"id\":\"4uLU6hMCjMI75M1A2tKUQC\",\"body\":{}}"), 404,
                       "not_found", NULL);
    th_expect_error(h_call("track.frobnicate", "{}"), 404, "unknown_op", NULL);
}

/* ---- validation ----------------------------------------------------------------- */

Test(catalog, every_broken_rule_names_its_field)
{
    const char *ar = h_new_artist("A");
    const char *al = h_new_album("Al", ar, "2000");
    char *n201 = h_repeat('n', 201), *g51 = h_repeat('g', 51), *id65 = h_repeat('i', 65);

    /* artist */
    th_expect_invalid(h_call("artist.create", "{}"), "body");
    th_expect_invalid(h_call("artist.create", "{\"body\":[]}"), "body");
    th_expect_invalid(h_call("artist.create", "{\"body\":\"x\"}"), "body");
    th_expect_invalid(h_call("artist.create", "{\"body\":{}}"), "body.name");
    th_expect_invalid(h_call("artist.create", "{\"body\":{\"name\":\"\"}}"), "body.name");
    th_expect_invalid(h_call("artist.create", "{\"body\":{\"name\":5}}"), "body.name");
    th_expect_invalid(h_call("artist.create", "{\"body\":{\"name\":\"%s\"}}", n201), "body.name");
    th_expect_invalid(h_call("artist.create", "{\"body\":{\"name\":\"a\",\"genres\":\"rock\"}}"),
                     "body.genres");
    th_expect_invalid(h_call("artist.create",
                            "{\"body\":{\"name\":\"a\",\"genres\":[\"1\",\"2\",\"3\",\"4\",\"5\","
                            "\"6\",\"7\",\"8\",\"9\",\"10\",\"11\"]}}"),
                     "body.genres");
    th_expect_invalid(
        h_call("artist.create", "{\"body\":{\"name\":\"a\",\"genres\":[\"rock\",\"\"]}}"),
        "body.genres[1]");
    th_expect_invalid(
        h_call("artist.create", "{\"body\":{\"name\":\"a\",\"genres\":[\"%s\"]}}", g51),
        "body.genres[0]");
    th_expect_invalid(h_call("artist.create", "{\"body\":{\"name\":\"a\",\"extra\":1}}"),
                     "body.extra");

    /* album */
    th_expect_invalid(h_call("album.create", "{\"body\":{\"artist_ids\":[\"%s\"]}}", ar),
                     "body.title");
    th_expect_invalid(h_call("album.create", "{\"body\":{\"title\":\"t\"}}"), "body.artist_ids");
    th_expect_invalid(h_call("album.create", "{\"body\":{\"title\":\"t\",\"artist_ids\":[]}}"),
                     "body.artist_ids");
    th_expect_invalid(
        h_call("album.create", "{\"body\":{\"title\":\"t\",\"artist_ids\":\"%s\"}}", ar),
        "body.artist_ids");
    th_expect_invalid(
        h_call("album.create", "{\"body\":{\"title\":\"t\",\"artist_ids\":[\"%s\",3]}}", ar),
        "body.artist_ids[1]");
    th_expect_invalid(h_call("album.create",
                            "{\"body\":{\"title\":\"t\",\"artist_ids\":[\"%s\",\"%s\"]}}", ar, ar),
                     "body.artist_ids[1]");
    th_expect_invalid(
        h_call("album.create", "{\"body\":{\"title\":\"t\",\"artist_ids\":[\"%s\"]}}", id65),
        "body.artist_ids[0]");
    const char *bad_dates[] = {"\"2020-13\"", "\"2021-02-29\"", "\"20\"",
                               "2020",        "\"2020-1-1\"",   "\"2020-04-31\""};
    for (size_t i = 0; i < sizeof bad_dates / sizeof *bad_dates; i++)
        th_expect_invalid(h_call("album.create",
                                "{\"body\":{\"title\":\"t\",\"artist_ids\":[\"%s\"],"
                                "\"release_date\":%s}}",
                                ar, bad_dates[i]),
                         "body.release_date");
    th_ok(h_call(
             "album.create",
             "{\"body\":{\"title\":\"t\",\"artist_ids\":[\"%s\"],\"release_date\":\"2024-02-29\"}}",
             ar),
         201);
    const char *bad_upcs[] = {"\"12345\"", "\"12345678901a\"", "\"12345678901234\"",
                              "123456789012"};
    for (size_t i = 0; i < sizeof bad_upcs / sizeof *bad_upcs; i++)
        th_expect_invalid(h_call("album.create",
                                "{\"body\":{\"title\":\"t\",\"artist_ids\":[\"%s\"],\"upc\":%s}}",
                                ar, bad_upcs[i]),
                         "body.upc");
    th_expect_invalid(h_call("album.create",
                            "{\"body\":{\"title\":\"t\",\"artist_ids\":[\"%s\"],\"label\":\"\"}}",
                            ar),
                     "body.label");
    th_expect_invalid(h_call("album.create",
                            "{\"body\":{\"title\":\"t\",\"artist_ids\":[\"%s\"],\"label\":\"%s\"}}",
                            ar, n201),
                     "body.label");

    /* track: a valid body with one field replaced */
    const char *base = "{\"body\":{\"title\":\"t\",\"artist_ids\":[\"%s\"],\"album_id\":\"%s\","
                       "\"track_number\":1,\"duration_ms\":1%s}}";
    struct {
        const char *extra, *field;
    } cases[] = {
        {",\"disc_number\":0", "body.disc_number"},
        {",\"disc_number\":100", "body.disc_number"},
        {",\"disc_number\":\"1\"", "body.disc_number"},
        {",\"track_number\":0", "body.track_number"},
        {",\"track_number\":1000", "body.track_number"},
        {",\"duration_ms\":-1", "body.duration_ms"},
        {",\"duration_ms\":86400001", "body.duration_ms"},
        {",\"duration_ms\":1.5", "body.duration_ms"},
        {",\"duration_ms\":\"300\"", "body.duration_ms"},
        {",\"isrc\":\"us-rc1-76-07839\"", "body.isrc"},
        {",\"isrc\":\"USRC1760783\"", "body.isrc"},
        {",\"isrc\":\"USRC1-76-07839\"", "body.isrc"},
        {",\"isrc\":\"US-RC1-76-0783X\"", "body.isrc"},
        {",\"isrc\":12", "body.isrc"},
        {",\"explicit\":\"yes\"", "body.explicit"},
        {",\"explicit\":1", "body.explicit"},
        {",\"title\":null", "body.title"},
        {",\"album_id\":\"\"", "body.album_id"},
        {",\"album\":\"x\"", "body.album"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        th_expect_invalid(h_call("track.create", base, ar, al, cases[i].extra), cases[i].field);
    th_expect_invalid(
        h_call("track.create",
               "{\"body\":{\"title\":\"t\",\"artist_ids\":[\"%s\"],\"album_id\":\"%s\","
               "\"duration_ms\":1}}",
               ar, al),
        "body.track_number");
    th_expect_invalid(
        h_call("track.create",
               "{\"body\":{\"title\":\"t\",\"artist_ids\":[\"%s\"],\"album_id\":\"%s\","
               "\"track_number\":1}}",
               ar, al),
        "body.duration_ms");
    th_expect_invalid(h_call("track.create",
                            "{\"body\":{\"title\":\"t\",\"artist_ids\":[\"%s\"],\"track_number\":1,"
                            "\"duration_ms\":1}}",
                            ar),
                     "body.album_id");
    /* 2.0 is an integer to JSON Schema; both ISRC forms are accepted. */
    th_reply_t r =
        th_ok(h_call("track.create", base, ar, al, ",\"disc_number\":2.0,\"isrc\":\"USRC17607839\""),
             201);
    cr_assert_eq(th_int(r.body, "disc_number"), 2);
    cr_assert_str_eq(th_str(r.body, "isrc"), "USRC17607839");

    /* arguments beside the body */
    th_expect_invalid(h_call("artist.get", "{}"), "id");
    th_expect_invalid(h_call("artist.get", NULL), "id");
    th_expect_invalid(h_call("artist.get", "{\"id\":\"\"}"), "id");
    th_expect_invalid(h_call("artist.get", "{\"id\":5}"), "id");
    th_expect_invalid(h_call("track.get", "{\"id\":\"%s\"}", id65), "id");
    th_expect_invalid(h_call("album.tracks", "{\"id\":\"%s\",\"limit\":0}", al), "limit");
    th_expect_invalid(h_call("album.tracks", "{\"id\":\"%s\",\"limit\":51}", al), "limit");
    th_expect_invalid(h_call("album.tracks", "{\"id\":\"%s\",\"limit\":\"20\"}", al), "limit");
    th_expect_invalid(h_call("artist.albums", "{\"id\":\"%s\",\"offset\":-1}", ar), "offset");
    th_expect_invalid(h_call("artist.albums", "{\"id\":\"%s\",\"offset\":100001}", ar), "offset");
    th_expect_invalid(h_call("album.update", "{\"id\":\"%s\"}", al), "body");
    th_expect_invalid(h_call("album.update", "{\"id\":\"%s\",\"body\":null}", al), "body");
    th_expect_invalid(h_call("album.update", "{\"id\":\"%s\",\"body\":{\"id\":\"x\"}}", al),
                     "body.id");
    free(n201);
    free(g51);
    free(id65);
}

Test(catalog, malformed_input_is_400_not_a_crash)
{
    const size_t huge = 1 << 20;
    char *big = h_repeat('x', huge);
    th_expect_invalid(h_call("artist.create", "{\"body\":{\"name\":\"%s\"}}", big), "body.name");
    th_expect_invalid(h_call("artist.get", "{\"id\":\"%s\"}", big), "id");
    th_expect_invalid(h_call("artist.create", "{\"body\":{\"%s\":1}}", big), "body");
    free(big);

    /* Bytes JSON cannot carry: invalid UTF-8, a non-string key, binary. */
    msgpack_sbuffer req;
    msgpack_sbuffer_init(&req);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    mb_request_pack_head(&pk, "artist.create", 77, 0, 1);
    mb_pack_cstr(&pk, "args");
    msgpack_pack_map(&pk, 1);
    mb_pack_cstr(&pk, "body");
    msgpack_pack_map(&pk, 1);
    mb_pack_cstr(&pk, "name");
    mb_pack_strn(&pk, "\xff\xfe", 2);
    th_expect_invalid(th_dispatch(req.data, req.size, 77), "body.name");

    msgpack_sbuffer_clear(&req);
    mb_request_pack_head(&pk, "artist.create", 78, 0, 1);
    mb_pack_cstr(&pk, "args");
    msgpack_pack_map(&pk, 1);
    mb_pack_cstr(&pk, "body");
    msgpack_pack_map(&pk, 1);
    msgpack_pack_int(&pk, 1);
    mb_pack_cstr(&pk, "x");
    th_expect_invalid(th_dispatch(req.data, req.size, 78), "body");

    msgpack_sbuffer_clear(&req);
    mb_request_pack_head(&pk, "track.get", 79, 0, 1);
    mb_pack_cstr(&pk, "args");
    msgpack_pack_map(&pk, 1);
    mb_pack_cstr(&pk, "id");
    msgpack_pack_bin(&pk, 3);
    msgpack_pack_bin_body(&pk, "abc", 3);
    th_expect_invalid(th_dispatch(req.data, req.size, 79), "id");

    /* A surrogate encoded in UTF-8 and an overlong form are not UTF-8. */
    msgpack_sbuffer_clear(&req);
    mb_request_pack_head(&pk, "artist.create", 80, 0, 1);
    mb_pack_cstr(&pk, "args");
    msgpack_pack_map(&pk, 1);
    mb_pack_cstr(&pk, "body");
    msgpack_pack_map(&pk, 1);
    mb_pack_cstr(&pk, "name");
    mb_pack_strn(&pk, "a\xed\xa0\x80", 4);
    th_expect_invalid(th_dispatch(req.data, req.size, 80), "body.name");

    /* Not a request at all: the runtime answers 400 itself. */
    th_reply_t r = th_dispatch("\x93\x01\x02\x03", 4, 0);
    cr_assert_eq(r.status, 400);
    msgpack_sbuffer_destroy(&req);

    /* 200 characters of 4 bytes each is 800 bytes and still a valid name. */
    char name[802] = "";
    for (int i = 0; i < 200; i++)
        strcat(name, "\xf0\x9f\x8e\xb5");
    th_ok(h_call("artist.create", "{\"body\":{\"name\":\"%s\"}}", name), 201);
    strcat(name, "a");
    th_expect_invalid(h_call("artist.create", "{\"body\":{\"name\":\"%s\"}}", name), "body.name");
}

/* ---- storage full ------------------------------------------------------------------ */

TestSuite(catalog_full, .fini = th_teardown);

Test(catalog_full, map_full_is_507_and_keeps_what_was_written)
{
    h_open(64 * 1024);
    const char *first = h_new_artist("First");
    int status = 201, created = 1;
    char *name = h_repeat('m', 190);
    for (int i = 0; i < 5000 && status == 201; i++) {
        th_reply_t r =
            h_call("artist.create", "{\"body\":{\"name\":\"%s\",\"genres\":[\"g%d\"]}}", name, i);
        status = r.status;
        if (status == 201)
            created++;
        else
            th_expect_error(r, 507, "storage_full", NULL);
    }
    free(name);
    cr_assert_eq(status, 507, "a 64 KiB map fills up (created %d)", created);
    cr_assert_gt(created, 1);
    th_reply_t r = th_ok(h_call("artist.get", "{\"id\":\"%s\"}", first), 200);
    cr_assert_str_eq(th_str(r.body, "name"), "First");
    /* Whatever else is tried on a full map is answered, and leaves the
       data as it was: a write either fits or is refused whole. */
    r = h_call("album.create", "{\"body\":{\"title\":\"t\",\"artist_ids\":[\"%s\"]}}", first);
    cr_assert(r.status == 201 || r.status == 507, "status %d", r.status);
    for (int i = 0; i < 20; i++) {
        r = h_call("artist.update", "{\"id\":\"%s\",\"body\":{\"genres\":[\"%d\"]}}", first, i);
        cr_assert(r.status == 200 || r.status == 507, "status %d", r.status);
    }
    r = th_ok(h_call("artist.get", "{\"id\":\"%s\"}", first), 200);
    cr_assert_str_eq(th_str(r.body, "name"), "First");
    r = th_ok(h_call("artist.albums", "{\"id\":\"%s\"}", first), 200);
    cr_assert(th_int(r.body, "total") <= 1);
}

/* ---- events ------------------------------------------------------------------------ */

Test(catalog, usage_every_change_is_one_event)
{
    cr_assert_eq(th_outbox_count(), 0);
    size_t n = th_outbox_count();
    th_reply_t r = th_ok(h_call("artist.create", "{\"body\":{\"name\":\"Nina Simone\"}}"), 201);
    char artist[64];
    snprintf(artist, sizeof artist, "%s", th_str(r.body, "id"));
    h_expect_event(n++, "catalog.artist", artist, "created", r.body);
    r = th_ok(h_call("artist.update", "{\"id\":\"%s\",\"body\":{\"genres\":[\"jazz\"]}}", artist),
             200);
    h_expect_event(n++, "catalog.artist", artist, "updated", r.body);

    r = th_ok(h_call("album.create",
                    "{\"body\":{\"title\":\"Pastel Blues\",\"artist_ids\":[\"%s\"]}}", artist),
             201);
    char album[64];
    snprintf(album, sizeof album, "%s", th_str(r.body, "id"));
    h_expect_event(n++, "catalog.album", album, "created", r.body);
    r = th_ok(h_call("album.update", "{\"id\":\"%s\",\"body\":{\"label\":\"Philips\"}}", album),
             200);
    h_expect_event(n++, "catalog.album", album, "updated", r.body);

    r = th_ok(h_call("track.create",
                    "{\"body\":{\"title\":\"Sinnerman\",\"artist_ids\":[\"%s\"],"
                    "\"album_id\":\"%s\",\"track_number\":1,\"duration_ms\":622000}}",
                    artist, album),
             201);
    char track[64];
    snprintf(track, sizeof track, "%s", th_str(r.body, "id"));
    h_expect_event(n++, "catalog.track", track, "created", r.body);
    r = th_ok(h_call("track.update", "{\"id\":\"%s\",\"body\":{\"isrc\":\"NLA506500044\"}}", track),
             200);
    h_expect_event(n++, "catalog.track", track, "updated", r.body);

    th_ok(h_call("track.delete", "{\"id\":\"%s\"}", track), 204);
    h_expect_event(n++, "catalog.track", track, "deleted", NULL);
    th_ok(h_call("album.delete", "{\"id\":\"%s\"}", album), 204);
    h_expect_event(n++, "catalog.album", album, "deleted", NULL);
    th_ok(h_call("artist.delete", "{\"id\":\"%s\"}", artist), 204);
    h_expect_event(n++, "catalog.artist", artist, "deleted", NULL);

    /* Reads publish nothing. */
    h_call("artist.get", "{\"id\":\"%s\"}", artist);
    h_call("track.match", "{\"queries\":[{\"isrc\":\"NLA506500044\"}]}");
    cr_assert_eq(th_outbox_count(), n);
}

Test(catalog, refused_writes_publish_nothing)
{
    const char *artist = h_new_artist("A");
    const char *album = h_new_album("B", artist, "2001");
    const char *track = h_new_track(album, artist, 1, 1);
    size_t n = th_outbox_count();
    th_expect_invalid(h_call("artist.create", "{\"body\":{}}"), "body.name");
    th_expect_invalid(h_call("artist.update", "{\"id\":\"%s\",\"body\":{\"name\":\"\"}}", artist),
                     "body.name");
    th_expect_error(h_call("artist.update", "{\"id\":\"nope\",\"body\":{\"name\":\"x\"}}"), 404,
                   "not_found", NULL);
    th_expect_error(h_call("artist.delete", "{\"id\":\"%s\"}", artist), 409, "conflict", NULL);
    th_expect_error(h_call("album.delete", "{\"id\":\"%s\"}", album), 409, "conflict", NULL);
    th_expect_invalid(
        h_call("album.create", "{\"body\":{\"title\":\"t\",\"artist_ids\":[\"nope\"]}}"),
        "body.artist_ids[0]");
    th_expect_error(h_call("track.create",
                          "{\"body\":{\"title\":\"t\",\"artist_ids\":[\"%s\"],\"album_id\":\"%s\","
                          "\"track_number\":1,\"duration_ms\":1}}",
                          artist, album),
                   409, "conflict", "body.track_number");
    th_expect_invalid(
        h_call("track.update", "{\"id\":\"%s\",\"body\":{\"artist_ids\":[\"nope\"]}}", track),
        "body.artist_ids[0]");
    th_expect_invalid(h_call("track.update", "{\"id\":\"%s\",\"body\":{\"isrc\":\"bad\"}}", track),
                     "body.isrc");
    th_expect_error(h_call("track.delete", "{\"id\":\"nope\"}"), 404, "not_found", NULL);
    cr_assert_eq(th_outbox_count(), n, "a refused write leaves no event");
}

/* ---- track.match ------------------------------------------------------------------- */

/*  Creates a track named `title` by `artists` (a JSON list of ids) with
    `isrc` (JSON: a quoted string or null) on `album` at track `number`. */
static const char *s_titled_track(const char *album, const char *artists, const char *title,
                                  const char *isrc, int number)
{
    th_reply_t r = th_ok(h_call("track.create",
                            "{\"body\":{\"title\":\"%s\",\"artist_ids\":%s,\"album_id\":\"%s\","
                            "\"track_number\":%d,\"duration_ms\":%d,\"isrc\":%s}}",
                            title, artists, album, number, 1000 + number, isrc),
                     201);
    return th_str(r.body, "id");
}

/*  Answers track.match for `queries` (a JSON list) and returns matches. */
static const json_t *s_match(const char *queries)
{
    th_reply_t r = th_ok(h_call("track.match", "{\"queries\":%s}", queries), 200);
    cr_assert_eq(json_object_size(r.body), 1);
    const json_t *matches = json_object_get(r.body, "matches");
    cr_assert(json_is_array(matches));
    return matches;
}

/*  The id matched by the one query `query`, or NULL for nil. */
static const char *s_match_id(const char *query)
{
    char list[4096];
    snprintf(list, sizeof list, "[%s]", query);
    const json_t *matches = s_match(list);
    cr_assert_eq(json_array_size(matches), 1);
    const json_t *m = json_array_get(matches, 0);
    return json_is_null(m) ? NULL : th_str(m, "id");
}

static void s_expect_match(const char *query, const char *id)
{
    const char *got = s_match_id(query);
    cr_assert_not_null(got, "%s matches nothing; expected %s", query, id);
    cr_assert_str_eq(got, id, "%s", query);
}

static void s_expect_no_match(const char *query)
{
    const char *got = s_match_id(query);
    cr_assert_null(got, "%s matches %s; expected nil", query, got);
}

Test(catalog, usage_track_match_by_isrc_then_names)
{
    const char *beatles = h_new_artist("The Beatles");
    const char *album = h_new_album("Abbey Road", beatles, "1969");
    char artists[64];
    snprintf(artists, sizeof artists, "[\"%s\"]", beatles);
    const char *track = s_titled_track(album, artists, "Come Together", "\"GB-AYE-69-00531\"", 1);
    const char *other = s_titled_track(album, artists, "Something", "null", 2);

    const json_t *matches = s_match("[{\"isrc\":\"GBAYE6900531\"},{\"isrc\":\"GBAYE6900532\"}]");
    cr_assert_eq(json_array_size(matches), 2);
    const json_t *m = json_array_get(matches, 0);
    cr_assert_eq(json_object_size(m), 5,
                 "a match is {id, artist_ids, album_id, isrc, duration_ms}");
    cr_assert_str_eq(th_str(m, "id"), track);
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(m, "artist_ids"), 0)),
                     beatles);
    cr_assert_str_eq(th_str(m, "album_id"), album);
    cr_assert_str_eq(th_str(m, "isrc"), "GBAYE6900531");
    cr_assert_eq(th_int(m, "duration_ms"), 1001);
    cr_assert(json_is_null(json_array_get(matches, 1)), "an unknown ISRC is nil");

    /* ISRCs as importers write them: any case, hyphens, spaces. */
    s_expect_match("{\"isrc\":\"gb-aye-69-00531\"}", track);
    s_expect_match("{\"isrc\":\"GB AYE 69 00531\"}", track);
    s_expect_no_match("{\"isrc\":\"not an isrc\"}");
    /* No ISRC match: the names decide, and the match of a track without
       an ISRC says nil. */
    s_expect_match("{\"isrc\":\"GBAYE6900599\",\"artist\":\"Beatles\",\"title\":\"come together\"}",
                   track);
    s_expect_match("{\"isrc\":null,\"artist\":\"The Beatles\",\"title\":\"Something\"}", other);
    m = json_array_get(s_match("[{\"artist\":\"beatles\",\"title\":\"something\"}]"), 0);
    cr_assert(json_is_null(json_object_get(m, "isrc")));
    /* An ISRC match wins over the names. */
    s_expect_match("{\"isrc\":\"GBAYE6900531\",\"artist\":\"The Beatles\",\"title\":\"Something\"}",
                   track);
    /* Both names are needed. */
    s_expect_no_match("{\"artist\":\"The Beatles\"}");
    s_expect_no_match("{\"title\":\"Something\"}");
    s_expect_no_match("{}");
    s_expect_no_match("{\"artist\":\"The Rolling Stones\",\"title\":\"Something\"}");
}

Test(catalog, track_match_normalises_names)
{
    const char *a = h_new_artist("Guns N' Roses");
    const char *b = h_new_artist("Jay-Z");
    const char *c = h_new_artist("R.E.M.");
    const char *d = h_new_artist("Sigur R\u00f3s");
    const char *album = h_new_album("Mix", a, "2000");
    char list[256];
    snprintf(list, sizeof list, "[\"%s\"]", a);
    const char *t1 = s_titled_track(album, list, "Sweet Child O' Mine (Live)", "null", 1);
    snprintf(list, sizeof list, "[\"%s\"]", b);
    const char *t2 = s_titled_track(album, list, "Hard Knock Life [Ghetto Anthem]", "null", 2);
    snprintf(list, sizeof list, "[\"%s\"]", c);
    const char *t3 = s_titled_track(album, list, "Don\u2019t Go Back to Rockville", "null", 3);
    snprintf(list, sizeof list, "[\"%s\"]", d);
    const char *t4 = s_titled_track(album, list, "Hopp\u00edpolla", "null", 4);
    const char *t5 = s_titled_track(album, list, "The Day", "null", 5);

    s_expect_match("{\"artist\":\"guns n roses\",\"title\":\"sweet child o mine live\"}", t1);
    s_expect_match("{\"artist\":\"  GUNS  N\u2019 ROSES \",\"title\":\"Sweet Child O\u2019 Mine - "
                   "Live\"}",
                   t1);
    s_expect_match("{\"artist\":\"Jay Z\",\"title\":\"hard knock life (ghetto anthem)\"}", t2);
    s_expect_match("{\"artist\":\"JAY-Z\",\"title\":\"Hard\\tKnock\\nLife, Ghetto Anthem!\"}", t2);
    s_expect_match("{\"artist\":\"REM\",\"title\":\"dont go back to rockville\"}", t3);
    s_expect_match("{\"artist\":\"r.e.m\",\"title\":\"Don't Go Back To Rockville?\"}", t3);
    s_expect_match("{\"artist\":\"the R.E.M.\",\"title\":\"\\\"Don't Go Back To Rockville\\\"\"}",
                   t3);
    /* Non-ASCII letters are kept as they are: no folding. */
    s_expect_match("{\"artist\":\"SIGUR R\u00f3S\",\"title\":\"hopp\u00edpolla\"}", t4);
    s_expect_no_match("{\"artist\":\"Sigur Ros\",\"title\":\"Hoppipolla\"}");
    s_expect_no_match("{\"artist\":\"SIGUR R\u00d3S\",\"title\":\"hopp\u00edpolla\"}");
    /* A leading "the " goes from titles too. */
    s_expect_match("{\"artist\":\"Sigur R\u00f3s\",\"title\":\"day\"}", t5);
    /* Punctuation is not a name. */
    s_expect_no_match("{\"artist\":\"?!\",\"title\":\"(...)\"}");
    /* Words stay apart. */
    s_expect_no_match("{\"artist\":\"gunsnroses\",\"title\":\"sweet child o mine live\"}");
}

Test(catalog, track_match_finds_a_track_under_each_of_its_artists)
{
    const char *a = h_new_artist("Queen");
    const char *b = h_new_artist("David Bowie");
    const char *album = h_new_album("Hot Space", a, "1982");
    char list[128];
    snprintf(list, sizeof list, "[\"%s\",\"%s\"]", a, b);
    const char *t = s_titled_track(album, list, "Under Pressure", "null", 1);
    s_expect_match("{\"artist\":\"queen\",\"title\":\"under pressure\"}", t);
    s_expect_match("{\"artist\":\"david bowie\",\"title\":\"under pressure\"}", t);
}

Test(catalog, track_match_with_the_longest_names)
{
    /* 200 characters of 4 bytes each: keys past LMDB's limit are hashed. */
    char name[1024] = "", other[1024];
    for (int i = 0; i < 200; i++)
        strcat(name, "\xf0\x9f\x8e\xb5");
    const char *artist = h_new_artist(name);
    const char *album = h_new_album("Long", artist, "2020");
    char list[64];
    snprintf(list, sizeof list, "[\"%s\"]", artist);
    const char *t = s_titled_track(album, list, name, "null", 1);
    /* Same first 199 characters, another last one. */
    snprintf(other, sizeof other, "%.*s\xf0\x9f\x8e\xb6", 199 * 4, name);
    const char *u = s_titled_track(album, list, other, "null", 2);
    char query[3000];
    snprintf(query, sizeof query, "{\"artist\":\"%s\",\"title\":\"%s\"}", name, name);
    s_expect_match(query, t);
    snprintf(query, sizeof query, "{\"artist\":\"%s\",\"title\":\"%s\"}", name, other);
    s_expect_match(query, u);
    snprintf(query, sizeof query, "{\"artist\":\"%s\",\"title\":\"%.*s\"}", name, 198 * 4, name);
    s_expect_no_match(query);
}

Test(catalog, track_match_answers_1000_queries_in_order)
{
    const char *artist = h_new_artist("Many");
    const char *album = h_new_album("Many", artist, "2020");
    char list[64], ids[10][32];
    snprintf(list, sizeof list, "[\"%s\"]", artist);
    for (int i = 0; i < 10; i++) {
        char title[32], isrc[32];
        snprintf(title, sizeof title, "Song %d", i);
        snprintf(isrc, sizeof isrc, "\"QZAAA200000%d\"", i);
        snprintf(ids[i], sizeof ids[i], "%s", s_titled_track(album, list, title, isrc, i + 1));
    }
    /* Query i asks for track i % 10 by ISRC (even i), by names (i % 3 == 1)
       or for something unknown (the rest). */
    size_t cap = 1000 * 80 + 16, len = 0;
    char *queries = malloc(cap);
    len += (size_t)snprintf(queries + len, cap - len, "[");
    for (int i = 0; i < 1000; i++) {
        const char *sep = i ? "," : "";
        if (i % 2 == 0)
            len += (size_t)snprintf(queries + len, cap - len, "%s{\"isrc\":\"QZ-AAA-20-0000%d\"}",
                                    sep, i % 10);
        else if (i % 3 == 1)
            len += (size_t)snprintf(queries + len, cap - len,
                                    "%s{\"artist\":\"many\",\"title\":\"song %d\"}", sep, i % 10);
        else
            len += (size_t)snprintf(queries + len, cap - len,
                                    "%s{\"artist\":\"many\",\"title\":\"song %d\"}", sep, 100 + i);
    }
    snprintf(queries + len, cap - len, "]");
    const json_t *matches = s_match(queries);
    cr_assert_eq(json_array_size(matches), 1000);
    for (int i = 0; i < 1000; i++) {
        const json_t *m = json_array_get(matches, (size_t)i);
        if (i % 2 == 0 || i % 3 == 1)
            cr_assert_str_eq(th_str(m, "id"), ids[i % 10], "query %d", i);
        else
            cr_assert(json_is_null(m), "query %d", i);
    }
    /* One more is too many. */
    queries[len] = '\0';
    snprintf(queries + len, cap - len, ",{}]");
    th_expect_invalid(h_call("track.match", "{\"queries\":%s}", queries), "queries");
    free(queries);
}

Test(catalog, track_match_refuses_malformed_queries)
{
    th_expect_invalid(h_call("track.match", NULL), "queries");
    th_expect_invalid(h_call("track.match", "{\"queries\":[]}"), "queries");
    th_expect_invalid(h_call("track.match", "{\"queries\":{\"isrc\":\"x\"}}"), "queries");
    th_expect_invalid(h_call("track.match", "{\"queries\":[{},7]}"), "queries[1]");
    th_expect_invalid(h_call("track.match", "{\"queries\":[{\"isrc\":12}]}"), "queries[0].isrc");
    th_expect_invalid(h_call("track.match", "{\"queries\":[{},{\"artist\":[]}]}"),
                     "queries[1].artist");
    th_expect_invalid(h_call("track.match", "{\"queries\":[{\"title\":true}]}"), "queries[0].title");
    th_expect_invalid(h_call("track.match", "{\"queries\":[{\"album\":\"x\"}]}"), "queries[0]");
    char *big = h_repeat('a', 1025);
    th_expect_invalid(h_call("track.match", "{\"queries\":[{\"title\":\"%s\"}]}", big),
                     "queries[0].title");
    free(big);
}

Test(catalog, artist_rename_moves_its_tracks_in_the_name_index)
{
    const char *a = h_new_artist("Prince");
    const char *b = h_new_artist("Beatles");
    const char *c = h_new_artist("The Beatles");
    const char *album = h_new_album("Purple Rain", a, "1984");
    char list[128];
    snprintf(list, sizeof list, "[\"%s\"]", a);
    const char *t1 = s_titled_track(album, list, "Purple Rain", "null", 1);
    const char *t2 = s_titled_track(album, list, "When Doves Cry", "null", 2);
    snprintf(list, sizeof list, "[\"%s\",\"%s\"]", b, c);
    const char *t3 = s_titled_track(album, list, "Help", "null", 3);

    size_t n = th_outbox_count();
    th_reply_t r =
        th_ok(h_call("artist.update", "{\"id\":\"%s\",\"body\":{\"name\":\"The Artist\"}}", a), 200);
    h_expect_event(n, "catalog.artist", a, "updated", r.body); /* the tracks did not change */
    s_expect_no_match("{\"artist\":\"prince\",\"title\":\"purple rain\"}");
    s_expect_match("{\"artist\":\"the artist\",\"title\":\"purple rain\"}", t1);
    s_expect_match("{\"artist\":\"artist\",\"title\":\"when doves cry\"}", t2);
    /* A new name that normalises alike changes nothing. */
    th_ok(h_call("artist.update", "{\"id\":\"%s\",\"body\":{\"name\":\"ARTIST!\"}}", a), 200);
    s_expect_match("{\"artist\":\"artist\",\"title\":\"when doves cry\"}", t2);
    /* Other fields leave the index alone. */
    th_ok(h_call("artist.update", "{\"id\":\"%s\",\"body\":{\"genres\":[\"funk\"]}}", a), 200);
    s_expect_match("{\"artist\":\"artist\",\"title\":\"purple rain\"}", t1);

    /* Two artists of one track share a key; renaming one keeps the other's. */
    th_ok(h_call("artist.update", "{\"id\":\"%s\",\"body\":{\"name\":\"Wings\"}}", b), 200);
    s_expect_match("{\"artist\":\"beatles\",\"title\":\"help\"}", t3);
    s_expect_match("{\"artist\":\"wings\",\"title\":\"help\"}", t3);
    th_ok(h_call("artist.update", "{\"id\":\"%s\",\"body\":{\"name\":\"Quarrymen\"}}", c), 200);
    s_expect_no_match("{\"artist\":\"beatles\",\"title\":\"help\"}");
    s_expect_match("{\"artist\":\"quarrymen\",\"title\":\"help\"}", t3);
}

Test(catalog, track_changes_move_it_in_the_match_indexes)
{
    const char *a = h_new_artist("Massive Attack");
    const char *b = h_new_artist("Portishead");
    const char *album = h_new_album("Mezzanine", a, "1998");
    char list[128];
    snprintf(list, sizeof list, "[\"%s\"]", a);
    const char *t = s_titled_track(album, list, "Teardrop", "\"GBAAA9800001\"", 1);

    th_ok(h_call("track.update", "{\"id\":\"%s\",\"body\":{\"title\":\"Angel\"}}", t), 200);
    s_expect_no_match("{\"artist\":\"massive attack\",\"title\":\"teardrop\"}");
    s_expect_match("{\"artist\":\"massive attack\",\"title\":\"angel\"}", t);

    th_ok(h_call("track.update", "{\"id\":\"%s\",\"body\":{\"artist_ids\":[\"%s\"]}}", t, b), 200);
    s_expect_no_match("{\"artist\":\"massive attack\",\"title\":\"angel\"}");
    s_expect_match("{\"artist\":\"portishead\",\"title\":\"angel\"}", t);

    th_ok(h_call("track.update", "{\"id\":\"%s\",\"body\":{\"isrc\":\"GBAAA9800002\"}}", t), 200);
    s_expect_no_match("{\"isrc\":\"GBAAA9800001\"}");
    s_expect_match("{\"isrc\":\"GBAAA9800002\"}", t);
    th_ok(h_call("track.update", "{\"id\":\"%s\",\"body\":{\"isrc\":null}}", t), 200);
    s_expect_no_match("{\"isrc\":\"GBAAA9800002\"}");

    /* Moving it to another position or album changes no match. */
    const char *other = h_new_album("Dummy", b, "1994");
    th_ok(h_call("track.update", "{\"id\":\"%s\",\"body\":{\"album_id\":\"%s\"}}", t, other), 200);
    s_expect_match("{\"artist\":\"portishead\",\"title\":\"angel\"}", t);
    cr_assert_str_eq(
        th_str(json_array_get(s_match("[{\"artist\":\"portishead\",\"title\":\"angel\"}]"), 0),
              "album_id"),
        other);

    th_ok(h_call("track.update", "{\"id\":\"%s\",\"body\":{\"isrc\":\"GBAAA9800003\"}}", t), 200);
    th_ok(h_call("track.delete", "{\"id\":\"%s\"}", t), 204);
    s_expect_no_match("{\"artist\":\"portishead\",\"title\":\"angel\"}");
    s_expect_no_match("{\"isrc\":\"GBAAA9800003\"}");
}

Test(catalog, shared_isrc_matches_the_smallest_id)
{
    const char *a = h_new_artist("A");
    const char *album = h_new_album("B", a, "2001");
    char list[64];
    snprintf(list, sizeof list, "[\"%s\"]", a);
    char t1[32], t2[32];
    snprintf(t1, sizeof t1, "%s", s_titled_track(album, list, "x", "\"QZAAA0100001\"", 1));
    snprintf(t2, sizeof t2, "%s", s_titled_track(album, list, "x", "\"QZAAA0100001\"", 2));
    const char *first = strcmp(t1, t2) < 0 ? t1 : t2;
    s_expect_match("{\"isrc\":\"QZAAA0100001\"}", first);
    s_expect_match("{\"artist\":\"a\",\"title\":\"x\"}", first);
    th_ok(h_call("track.delete", "{\"id\":\"%s\"}", first), 204);
    const char *second = first == t1 ? t2 : t1;
    s_expect_match("{\"isrc\":\"QZAAA0100001\"}", second);
    s_expect_match("{\"artist\":\"a\",\"title\":\"x\"}", second);
}

/*  Data written before the match indexes existed: drop them and open
    again, as an upgraded actor would find the environment. */
Test(catalog, match_indexes_are_built_for_existing_tracks)
{
    const char *a = h_new_artist("Radiohead");
    const char *album = h_new_album("OK Computer", a, "1997");
    char list[64];
    snprintf(list, sizeof list, "[\"%s\"]", a);
    const char *t1 = s_titled_track(album, list, "Airbag", "\"GBAYE9700001\"", 1);
    const char *t2 = s_titled_track(album, list, "Paranoid Android", "null", 2);

    th_def.close(th_state);
    MDB_txn *txn;
    MDB_dbi dbi;
    cr_assert_eq(mdb_txn_begin(th_env, NULL, 0, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "isrc_tracks", 0, &dbi), 0);
    cr_assert_eq(mdb_drop(txn, dbi, 1), 0);
    cr_assert_eq(mdb_dbi_open(txn, "name_tracks", 0, &dbi), 0);
    cr_assert_eq(mdb_drop(txn, dbi, 1), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    cr_assert_eq(mdb_txn_begin(th_env, NULL, MDB_RDONLY, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "name_tracks", 0, &dbi), MDB_NOTFOUND);
    mdb_txn_abort(txn);

    cr_assert_eq(th_def.open(th_env, &th_state), 0);
    s_expect_match("{\"isrc\":\"GBAYE9700001\"}", t1);
    s_expect_match("{\"artist\":\"radiohead\",\"title\":\"airbag\"}", t1);
    s_expect_match("{\"artist\":\"Radiohead\",\"title\":\"Paranoid Android\"}", t2);
    /* Built once: opening again finds them and leaves them be. */
    th_def.close(th_state);
    cr_assert_eq(th_def.open(th_env, &th_state), 0);
    s_expect_match("{\"artist\":\"Radiohead\",\"title\":\"Paranoid Android\"}", t2);
}
