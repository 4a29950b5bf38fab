/*  Browsing the catalog through the gateway, as a client does: a real
    stack (broker, one catalog and one users worker, gateway) per test,
    spoken to over HTTP with libcurl, checked against schemas/openapi.json.
    Writes are sent with the token of an admin made and signed in by the
    harness. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "it.h"

static it_stack_t *s_stack;

static void s_up(void)
{
    s_stack = it_stack_new(NULL);
    cr_assert(s_stack, "the stack did not start (see the log above)");
    /* Catalog writes are admin-only: every call below carries its token. */
    cr_assert(it_stack_admin_login(s_stack), "no admin token (see the log above)");
}

static void s_down(void)
{
    it_stack_destroy(&s_stack);
}

TestSuite(catalog_http, .init = s_up, .fini = s_down, .timeout = 120);

/* An id of the right shape that names nothing. */
#define NO_SUCH_ID "ZZZZZZZZZZZZZZZZZZZZZZ"

static char *s_path(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *s_path(const char *fmt, ...)
{
    char *path = NULL;
    va_list ap;
    va_start(ap, fmt);
    int rc = vasprintf(&path, fmt, ap);
    va_end(ap);
    cr_assert(rc >= 0);
    return path;
}

static char *s_new_artist(const char *name)
{
    json_t *artist = it_call(s_stack, "POST", "/v1/artists", it_pack("{s:s}", "name", name), 201);
    char *id = it_str(artist, "id");
    json_decref(artist);
    return id;
}

static char *s_new_album(const char *title, const char *artist_id)
{
    json_t *album = it_call(s_stack, "POST", "/v1/albums",
                            it_pack("{s:s, s:[s]}", "title", title, "artist_ids", artist_id), 201);
    char *id = it_str(album, "id");
    json_decref(album);
    return id;
}

static char *s_new_track(const char *title, const char *artist_id, const char *album_id, int disc,
                         int number)
{
    json_t *track = it_call(s_stack, "POST", "/v1/tracks",
                            it_pack("{s:s, s:[s], s:s, s:i, s:i, s:i}", "title", title,
                                    "artist_ids", artist_id, "album_id", album_id, "disc_number",
                                    disc, "track_number", number, "duration_ms", 180000 + number),
                            201);
    cr_assert_eq(it_json_int(track, "disc_number"), disc);
    cr_assert_eq(it_json_int(track, "track_number"), number);
    char *id = it_str(track, "id");
    json_decref(track);
    return id;
}

/* Asserts that page->items are the tracks at these (disc, track) positions. */
static void s_assert_positions(const json_t *page, const int (*pos)[2], size_t n)
{
    const json_t *items = json_object_get(page, "items");
    cr_assert(json_is_array(items), "a page has items");
    cr_assert_eq(json_array_size(items), n, "expected %zu items, got %zu", n,
                 json_array_size(items));
    for (size_t i = 0; i < n; i++) {
        const json_t *t = json_array_get(items, i);
        cr_assert_eq(it_json_int(t, "disc_number"), pos[i][0], "item %zu: disc", i);
        cr_assert_eq(it_json_int(t, "track_number"), pos[i][1], "item %zu: track", i);
    }
}

Test(catalog_http, create_and_browse)
{
    /* An artist, as it comes back from create and from get. */
    json_t *artist =
        it_call(s_stack, "POST", "/v1/artists",
                it_pack("{s:s, s:[s,s]}", "name", "Nina Simone", "genres", "jazz", "soul"), 201);
    char *artist_id = it_str(artist, "id");
    cr_assert_str_eq(it_json_str(artist, "name"), "Nina Simone");
    cr_assert_eq(json_array_size(json_object_get(artist, "genres")), 2);
    cr_assert(it_json_str(artist, "created_at") && it_json_str(artist, "updated_at"));
    char *path = s_path("/v1/artists/%s", artist_id);
    json_t *got = it_call(s_stack, "GET", path, NULL, 200);
    cr_assert(json_equal(got, artist), "GET returns what create returned");
    json_decref(got);
    free(path);

    json_t *album = it_call(s_stack, "POST", "/v1/albums",
                            it_pack("{s:s, s:[s], s:s, s:s, s:s}", "title", "Pastel Blues",
                                    "artist_ids", artist_id, "release_date", "1965", "label",
                                    "Philips", "upc", "042284300121"),
                            201);
    char *album_id = it_str(album, "id");
    cr_assert_str_eq(it_json_str(album, "release_date"), "1965");

    /* Tracks created out of order come back ordered by disc, then track. */
    static const int created[][2] = {{2, 1}, {1, 3}, {1, 1}, {2, 2}, {1, 2}};
    char *track_ids[5];
    for (size_t i = 0; i < 5; i++) {
        char title[32];
        snprintf(title, sizeof title, "disc %d track %d", created[i][0], created[i][1]);
        track_ids[i] = s_new_track(title, artist_id, album_id, created[i][0], created[i][1]);
    }
    static const int ordered[][2] = {{1, 1}, {1, 2}, {1, 3}, {2, 1}, {2, 2}};

    /* The album carries the first page of its tracks. */
    path = s_path("/v1/albums/%s", album_id);
    json_t *full = it_call(s_stack, "GET", path, NULL, 200);
    cr_assert_str_eq(it_json_str(full, "title"), "Pastel Blues");
    cr_assert_str_eq(it_json_str(full, "label"), "Philips");
    const json_t *tracks = json_object_get(full, "tracks");
    cr_assert(json_is_object(tracks), "the album has a tracks page");
    s_assert_positions(tracks, ordered, 5);
    cr_assert_eq(it_json_int(tracks, "total"), 5);
    cr_assert_eq(it_json_int(tracks, "offset"), 0);
    cr_assert_eq(it_json_int(tracks, "limit"), 20);
    cr_assert(json_is_null(json_object_get(tracks, "next")), "one page only: next is null");
    cr_assert(json_is_null(json_object_get(tracks, "previous")), "first page: previous is null");
    json_decref(full);
    free(path);

    path = s_path("/v1/albums/%s/tracks", album_id);
    json_t *page = it_call(s_stack, "GET", path, NULL, 200);
    s_assert_positions(page, ordered, 5);
    json_decref(page);
    free(path);

    /* The artist's albums. */
    path = s_path("/v1/artists/%s/albums", artist_id);
    page = it_call(s_stack, "GET", path, NULL, 200);
    cr_assert_eq(it_json_int(page, "total"), 1);
    cr_assert_eq(json_array_size(json_object_get(page, "items")), 1);
    cr_assert_str_eq(it_json_str(json_array_get(json_object_get(page, "items"), 0), "id"),
                     album_id);
    json_decref(page);
    free(path);

    /* Several tracks at once, in the order asked, null for an unknown id. */
    path = s_path("/v1/tracks?ids=%s,%s,%s", track_ids[3], NO_SUCH_ID, track_ids[0]);
    json_t *list = it_call(s_stack, "GET", path, NULL, 200);
    const json_t *items = json_object_get(list, "tracks");
    cr_assert_eq(json_array_size(items), 3, "%s", path);
    cr_assert_str_eq(it_json_str(json_array_get(items, 0), "id"), track_ids[3]);
    cr_assert(json_is_null(json_array_get(items, 1)), "an unknown id gives null");
    cr_assert_str_eq(it_json_str(json_array_get(items, 2), "id"), track_ids[0]);
    json_decref(list);
    free(path);

    /* One track. */
    path = s_path("/v1/tracks/%s", track_ids[1]);
    json_t *track = it_call(s_stack, "GET", path, NULL, 200);
    cr_assert_str_eq(it_json_str(track, "album_id"), album_id);
    cr_assert_str_eq(it_json_str(track, "title"), "disc 1 track 3");
    cr_assert_eq(json_is_false(json_object_get(track, "explicit")), 1,
                 "explicit defaults to false");
    cr_assert_eq(it_json_int(track, "duration_ms"), 180003);
    json_decref(track);
    free(path);

    for (size_t i = 0; i < 5; i++)
        free(track_ids[i]);
    free(album_id);
    free(artist_id);
    json_decref(album);
    json_decref(artist);
}

/* Follows a page's next (or previous) link, a URL relative to the gateway. */
static json_t *s_follow(const json_t *page, const char *link)
{
    const char *rel = it_json_str(page, link);
    cr_assert(rel && rel[0] == '/', "%s must be a relative URL, got %s", link, rel ? rel : "null");
    return it_call(s_stack, "GET", rel, NULL, 200);
}

Test(catalog_http, paging_next_and_previous)
{
    char *artist_id = s_new_artist("The Paging Band");
    char *album_id = s_new_album("Twenty-Five", artist_id);
    for (int n = 25; n >= 1; n--) {
        char title[16];
        snprintf(title, sizeof title, "T%d", n);
        free(s_new_track(title, artist_id, album_id, 1, n));
    }

    char *path = s_path("/v1/albums/%s/tracks?limit=10", album_id);
    json_t *p1 = it_call(s_stack, "GET", path, NULL, 200);
    cr_assert_eq(it_json_int(p1, "total"), 25);
    cr_assert_eq(it_json_int(p1, "limit"), 10);
    cr_assert_eq(it_json_int(p1, "offset"), 0);
    cr_assert_eq(json_array_size(json_object_get(p1, "items")), 10);
    cr_assert_eq(it_json_int(json_array_get(json_object_get(p1, "items"), 0), "track_number"), 1);
    cr_assert(json_is_null(json_object_get(p1, "previous")));
    char *prefix = s_path("/v1/albums/%s/tracks?", album_id);
    cr_assert(strncmp(it_json_str(p1, "next"), prefix, strlen(prefix)) == 0, "next: %s",
              it_json_str(p1, "next"));

    json_t *p2 = s_follow(p1, "next");
    cr_assert_eq(it_json_int(p2, "offset"), 10);
    cr_assert_eq(it_json_int(json_array_get(json_object_get(p2, "items"), 0), "track_number"), 11);
    json_t *p3 = s_follow(p2, "next");
    cr_assert_eq(json_array_size(json_object_get(p3, "items")), 5);
    cr_assert_eq(it_json_int(json_array_get(json_object_get(p3, "items"), 4), "track_number"), 25);
    cr_assert(json_is_null(json_object_get(p3, "next")), "the last page has no next");
    json_t *back = s_follow(p3, "previous");
    cr_assert_eq(it_json_int(back, "offset"), 10);
    cr_assert(json_equal(json_object_get(back, "items"), json_object_get(p2, "items")));

    /* The album itself shows the first 20 and links to the rest. */
    free(path);
    path = s_path("/v1/albums/%s", album_id);
    json_t *album = it_call(s_stack, "GET", path, NULL, 200);
    const json_t *tracks = json_object_get(album, "tracks");
    cr_assert_eq(json_array_size(json_object_get(tracks, "items")), 20);
    cr_assert_eq(it_json_int(tracks, "total"), 25);
    json_t *rest = s_follow(tracks, "next");
    cr_assert_eq(json_array_size(json_object_get(rest, "items")), 5);

    /* An artist's albums page the same way. */
    char *more[2] = {s_new_album("Second", artist_id), s_new_album("Third", artist_id)};
    free(path);
    path = s_path("/v1/artists/%s/albums?limit=2", artist_id);
    json_t *a1 = it_call(s_stack, "GET", path, NULL, 200);
    cr_assert_eq(it_json_int(a1, "total"), 3);
    cr_assert_eq(json_array_size(json_object_get(a1, "items")), 2);
    json_t *a2 = s_follow(a1, "next");
    cr_assert_eq(json_array_size(json_object_get(a2, "items")), 1);
    cr_assert(json_is_null(json_object_get(a2, "next")));

    json_decref(a2);
    json_decref(a1);
    free(more[0]);
    free(more[1]);
    json_decref(rest);
    json_decref(album);
    json_decref(back);
    json_decref(p3);
    json_decref(p2);
    json_decref(p1);
    free(prefix);
    free(path);
    free(album_id);
    free(artist_id);
}

Test(catalog_http, patch)
{
    json_t *artist = it_call(s_stack, "POST", "/v1/artists",
                             it_pack("{s:s, s:[s]}", "name", "Old Name", "genres", "folk"), 201);
    char *artist_id = it_str(artist, "id");
    char *path = s_path("/v1/artists/%s", artist_id);
    json_t *patched = it_call(s_stack, "PATCH", path, it_pack("{s:s}", "name", "New Name"), 200);
    cr_assert_str_eq(it_json_str(patched, "name"), "New Name");
    cr_assert(json_equal(json_object_get(patched, "genres"), json_object_get(artist, "genres")),
              "fields left out of a PATCH do not change");
    cr_assert_str_eq(it_json_str(patched, "created_at"), it_json_str(artist, "created_at"));
    json_t *got = it_call(s_stack, "GET", path, NULL, 200);
    cr_assert(json_equal(got, patched), "GET shows the patched artist");
    json_decref(got);
    json_decref(patched);
    free(path);

    /* null clears an optional field of an album. */
    json_t *album = it_call(
        s_stack, "POST", "/v1/albums",
        it_pack("{s:s, s:[s], s:s}", "title", "A", "artist_ids", artist_id, "label", "Label"), 201);
    char *album_id = it_str(album, "id");
    path = s_path("/v1/albums/%s", album_id);
    patched = it_call(s_stack, "PATCH", path, it_pack("{s:n}", "label"), 200);
    cr_assert(json_is_null(json_object_get(patched, "label")), "label cleared");
    cr_assert_str_eq(it_json_str(patched, "title"), "A");
    json_decref(patched);
    free(path);

    /* Moving a track changes the album's order. */
    char *t1 = s_new_track("one", artist_id, album_id, 1, 1);
    char *t2 = s_new_track("two", artist_id, album_id, 1, 2);
    path = s_path("/v1/tracks/%s", t1);
    patched = it_call(s_stack, "PATCH", path, it_pack("{s:i}", "track_number", 3), 200);
    cr_assert_eq(it_json_int(patched, "track_number"), 3);
    json_decref(patched);
    free(path);
    path = s_path("/v1/albums/%s/tracks", album_id);
    json_t *page = it_call(s_stack, "GET", path, NULL, 200);
    cr_assert_str_eq(it_json_str(json_array_get(json_object_get(page, "items"), 0), "id"), t2);
    cr_assert_str_eq(it_json_str(json_array_get(json_object_get(page, "items"), 1), "id"), t1);
    json_decref(page);
    free(path);

    /* A position already taken is a conflict. */
    path = s_path("/v1/tracks/%s", t2);
    json_decref(it_call(s_stack, "PATCH", path, it_pack("{s:i}", "track_number", 3), 409));
    free(path);

    json_decref(
        it_call(s_stack, "PATCH", "/v1/artists/" NO_SUCH_ID, it_pack("{s:s}", "name", "x"), 404));

    free(t1);
    free(t2);
    free(album_id);
    json_decref(album);
    free(artist_id);
    json_decref(artist);
}

Test(catalog_http, delete)
{
    char *artist_id = s_new_artist("Leaving Soon");
    char *album_id = s_new_album("Last One", artist_id);
    char *track_id = s_new_track("Goodbye", artist_id, album_id, 1, 1);
    char *artist_path = s_path("/v1/artists/%s", artist_id);
    char *album_path = s_path("/v1/albums/%s", album_id);
    char *track_path = s_path("/v1/tracks/%s", track_id);

    /* What others still name cannot go. */
    json_t *problem = it_call(s_stack, "DELETE", artist_path, NULL, 409);
    json_decref(problem);
    json_decref(it_call(s_stack, "DELETE", album_path, NULL, 409));
    json_decref(it_call(s_stack, "GET", artist_path, NULL, 200));

    json_decref(it_call(s_stack, "DELETE", track_path, NULL, 204));
    json_decref(it_call(s_stack, "GET", track_path, NULL, 404));
    json_decref(it_call(s_stack, "DELETE", track_path, NULL, 404));
    json_decref(it_call(s_stack, "DELETE", album_path, NULL, 204));
    json_decref(it_call(s_stack, "GET", album_path, NULL, 404));
    json_decref(it_call(s_stack, "DELETE", artist_path, NULL, 204));
    json_decref(it_call(s_stack, "GET", artist_path, NULL, 404));

    free(track_path);
    free(album_path);
    free(artist_path);
    free(track_id);
    free(album_id);
    free(artist_id);
}

Test(catalog_http, not_found_and_method_not_allowed)
{
    json_decref(it_call(s_stack, "GET", "/v1/artists/" NO_SUCH_ID, NULL, 404));
    json_decref(it_call(s_stack, "GET", "/v1/albums/" NO_SUCH_ID, NULL, 404));
    json_decref(it_call(s_stack, "GET", "/v1/tracks/" NO_SUCH_ID, NULL, 404));
    json_decref(it_call(s_stack, "GET", "/v1/no-such-route", NULL, 404));

    /* 405 names the methods the path has (RFC 9110, 15.5.6). */
    char *url = it_stack_url(s_stack, "/v1/artists/" NO_SUCH_ID);
    it_http_res_t res;
    it_http(&res, "PUT", url, "application/json", "{}", 2, 0);
    it_assert_problem(&res, 405, "PUT /v1/artists/{id}");
    cr_assert(res.allow && strstr(res.allow, "GET") && strstr(res.allow, "PATCH") &&
                  strstr(res.allow, "DELETE"),
              "Allow: %s", res.allow ? res.allow : "(none)");
    it_http_res_release(&res);
    free(url);
    json_decref(it_call(s_stack, "DELETE", "/v1/artists", NULL, 405));
}

Test(catalog_http, bad_requests_name_the_field)
{
    json_decref(
        it_problem(s_stack, "POST", "/v1/artists", it_pack("{s:i}", "name", 5), 400, "body.name"));
    json_decref(
        it_problem(s_stack, "POST", "/v1/artists", it_pack("{s:s}", "name", ""), 400, "body.name"));
    json_decref(
        it_problem(s_stack, "GET", "/v1/albums/" NO_SUCH_ID "/tracks?limit=0", NULL, 400, "limit"));
    json_decref(it_problem(s_stack, "GET", "/v1/albums/" NO_SUCH_ID "/tracks?limit=ten", NULL, 400,
                           "limit"));
    json_decref(it_problem(s_stack, "GET", "/v1/artists/" NO_SUCH_ID "/albums?offset=-1", NULL, 400,
                           "offset"));

    char *artist_id = s_new_artist("Validator");
    char *album_id = s_new_album("Checks", artist_id);
    json_decref(it_problem(s_stack, "POST", "/v1/tracks",
                           it_pack("{s:s, s:[s], s:s, s:i, s:i, s:s}", "title", "t", "artist_ids",
                                   artist_id, "album_id", album_id, "track_number", 1,
                                   "duration_ms", 1000, "isrc", "not-an-isrc"),
                           400, "body.isrc"));
    json_decref(
        it_problem(s_stack, "POST", "/v1/tracks",
                   it_pack("{s:s, s:[s], s:s, s:i, s:i}", "title", "t", "artist_ids", artist_id,
                           "album_id", album_id, "track_number", 0, "duration_ms", 1000),
                   400, "body.track_number"));
    /* Ids that name nothing are a 400 too, from the catalog this time. */
    json_t *problem =
        it_problem(s_stack, "POST", "/v1/albums",
                   it_pack("{s:s, s:[s]}", "title", "x", "artist_ids", NO_SUCH_ID), 400, NULL);
    const char *field = it_json_str(problem, "field");
    cr_assert(field && strncmp(field, "body.artist_ids", 15) == 0, "field: %s",
              field ? field : "(none)");
    json_decref(problem);
    /* Two tracks at one position: conflict. */
    free(s_new_track("first", artist_id, album_id, 1, 1));
    json_decref(
        it_call(s_stack, "POST", "/v1/tracks",
                it_pack("{s:s, s:[s], s:s, s:i, s:i}", "title", "again", "artist_ids", artist_id,
                        "album_id", album_id, "track_number", 1, "duration_ms", 1),
                409));
    free(album_id);
    free(artist_id);
}

Test(catalog_http, bodies_too_large_of_the_wrong_type_or_malformed)
{
    char *url = it_stack_url(s_stack, "/v1/artists");
    it_http_res_t res;
    it_http_opts_t admin = {.bearer = it_stack_token(s_stack)};

    /* One byte over 1 MiB. */
    size_t size = (1u << 20) + 1;
    char *big = malloc(size + 1);
    cr_assert(big);
    memset(big, 'a', size);
    memcpy(big, "{\"name\":\"", 9);
    memcpy(big + size - 2, "\"}", 2);
    big[size] = '\0';
    it_http_ex(&res, "POST", url, "application/json", big, size, &admin);
    it_assert_problem(&res, 413, "POST 1 MiB + 1 byte");
    it_http_res_release(&res);
    free(big);

    it_http_ex(&res, "POST", url, "text/plain", "{\"name\":\"x\"}", 12, &admin);
    it_assert_problem(&res, 415, "POST text/plain");
    it_http_res_release(&res);

    it_http_ex(&res, "POST", url, "application/json", "{\"name\": ", 9, &admin);
    it_assert_problem(&res, 400, "POST malformed JSON");
    it_http_res_release(&res);

    it_http_ex(&res, "POST", url, "application/json", "[1, 2]", 6, &admin);
    it_assert_problem(&res, 400, "POST an array");
    it_http_res_release(&res);

    it_http_ex(&res, "POST", url, "application/json", "{\"name\":\"x\"} trailing", 21, &admin);
    it_assert_problem(&res, 400, "POST JSON followed by garbage");
    it_http_res_release(&res);

    it_http_ex(&res, "POST", url, "application/json", "", 0, &admin);
    it_assert_problem(&res, 400, "POST no body");
    it_http_res_release(&res);

    /* Still serving after all that. */
    it_http_ex(&res, "POST", url, "application/json; charset=utf-8", "{\"name\":\"fine\"}", 15,
               &admin);
    cr_assert_eq(res.status, 201, "%s", res.body);
    it_http_res_release(&res);
    free(url);
}
