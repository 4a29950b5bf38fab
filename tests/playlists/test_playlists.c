/*  playlists actor: every op driven through mb_actor_dispatch() with real
    encoded envelopes, and the catalog consumer's apply function fed
    events, against an LMDB environment in a temporary folder.

    Arguments and events are written as JSON and packed to msgpack the way
    the gateway and the bus do; reply bodies are turned back into JSON.
    The environment runs with MDB_NOSYNC here (thousands of commits would
    otherwise wait for the disk); the race tests and the write
    measurement (bench_playlists.c) keep the durable default. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <lmdb.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mb_actor.h"
#include "mb_envelope.h"
#include "mb_error.h"
#include "mb_events.h"
#include "mb_jwt.h"
#include "mb_msgpack.h"
#include "actor_harness.h"
#include "playlists.h"
#include "playlists_items.h"
#include "playlists_store.h"

/* ---- harness ------------------------------------------------------------------- */

static void s_open_env(bool nosync)
{
    cr_assert_eq(mb_actor_open_env(&th_def, th_dir, &th_env), 0);
    cr_assert_eq(th_def.open(th_env, &th_state), 0);
    if (nosync)
        cr_assert_eq(mdb_env_set_flags(th_env, MDB_NOSYNC, 1), 0);
}

static void s_close_env(void)
{
    if (th_env) {
        th_def.close(th_state);
        mdb_env_close(th_env);
        th_env = NULL;
    }
}

static void s_setup(void)
{
    th_tmpdir(th_dir, "test_playlists");
    th_def = *playlists_actor_def();
    th_def.map_size = (size_t)512 << 20;
    s_open_env(true);
}

static void s_teardown(void)
{
    th_teardown();
}

TestSuite(playlists, .init = s_setup, .fini = s_teardown);

/*  The auth map the gateway makes for `who`, a user id signed in as a
    free user. */
static void s_pack_auth(msgpack_packer *pk, const void *who)
{
    const char *user = who;
    mb_jwt_claims_t claims = {.roles = MB_ROLE_USER};
    snprintf(claims.sub, sizeof claims.sub, "%s", user);
    snprintf(claims.sid, sizeof claims.sid, "session-of-%s", user);
    snprintf(claims.tier, sizeof claims.tier, "free");
    mb_jwt_pack_auth(pk, &claims);
}

/*  Calls `op` as `user` (NULL: no auth map) with args given as
    printf-formatted JSON (NULL for none). */
static th_reply_t s_call(const char *user, const char *op, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static th_reply_t s_call(const char *user, const char *op, const char *fmt, ...)
{
    json_t *args = NULL;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        args = th_vjson(fmt, ap);
        va_end(ap);
    }
    return th_call_packed(op, args, user ? s_pack_auth : NULL, user);
}

static th_reply_t s_ok(th_reply_t r, int status)
{
    cr_assert_eq(r.status, status, "status %d (%s: %s, field %s), expected %d", r.status, r.code,
                 r.message, r.field, status);
    cr_assert_not_null(r.body);
    return r;
}

/* ---- events ------------------------------------------------------------------------ */

/*  Applies one catalog event (data as JSON) through the consumer's apply
    function in a transaction of its own, committed when applied. */
static int s_apply_json(MDB_txn *txn, const char *topic, const char *key, json_t *data)
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
    mb_event_t ev = {.seq = 1,
                     .topic = topic,
                     .topic_len = strlen(topic),
                     .key = key,
                     .key_len = key ? strlen(key) : 0,
                     .data = &msg.data};
    int rc = playlists_apply(txn, &ev, th_state);
    msgpack_unpacked_destroy(&msg);
    msgpack_sbuffer_destroy(&buf);
    return rc;
}

static int s_apply(const char *topic, const char *key, json_t *data)
{
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(th_env, NULL, 0, &txn), 0);
    int rc = s_apply_json(txn, topic, key, data);
    if (rc == 0)
        cr_assert_eq(mdb_txn_commit(txn), 0);
    else
        mdb_txn_abort(txn);
    return rc;
}

/*  The catalog published tracks <prefix>0 .. <prefix>(n-1) ("t_0", ...). */
static void s_tracks(const char *prefix, int n)
{
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(th_env, NULL, 0, &txn), 0);
    for (int i = 0; i < n; i++) {
        char id[64];
        snprintf(id, sizeof id, "%s%d", prefix, i);
        json_t *data = th_json("{\"action\": \"created\", \"id\": \"%s\", \"object\": {\"id\": "
                               "\"%s\", \"title\": \"Song %s\", \"artist_ids\": [\"art1\"], "
                               "\"album_id\": \"alb1\", \"duration_ms\": %d, "
                               "\"updated_at\": \"2026-11-28T02:10:00.000Z\"}}",
                               id, id, id, 180000 + i);
        cr_assert_eq(s_apply_json(txn, "catalog.track", id, data), 0);
    }
    cr_assert_eq(mdb_txn_commit(txn), 0);
}

/*  Checks that exactly one event was added since the outbox held
    `before`, on `topic`, and returns it. */
static th_event_t s_expect_event(size_t before, const char *topic)
{
    cr_assert_eq(th_outbox_count(), before + 1, "%zu events added, expected 1",
                 th_outbox_count() - before);
    th_event_t e = th_outbox_last();
    cr_assert_str_eq(e.topic, topic);
    return e;
}

/* ---- playlists and items ------------------------------------------------------------------ */

/*  Creates a playlist of `owner`; returns its id (kept until teardown). */
static const char *s_create(const char *owner, bool public_, bool collaborative)
{
    th_reply_t r = s_ok(s_call(owner, "playlist.create",
                            "{\"body\": {\"name\": \"Mix of %s\", \"public\": %s, "
                            "\"collaborative\": %s}}",
                            owner, public_ ? "true" : "false", collaborative ? "true" : "false"),
                     201);
    return th_str(r.body, "id");
}

static const char *s_snapshot(const char *user, const char *pid)
{
    th_reply_t r = s_ok(s_call(user, "playlist.get", "{\"id\": \"%s\"}", pid), 200);
    return th_str(r.body, "snapshot_id");
}

/*  Adds tracks <prefix><first> .. <prefix><first+n-1> by id at the end. */
static th_reply_t s_add_range(const char *user, const char *pid, const char *prefix, int first, int n)
{
    size_t cap = 64 + (size_t)n * 80;
    char *ids = malloc(cap);
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len +=
            (size_t)snprintf(ids + len, cap - len, "%s\"%s%d\"", i ? "," : "", prefix, first + i);
    th_reply_t r =
        s_call(user, "playlist.items_add", "{\"id\": \"%s\", \"body\": {\"ids\": [%s]}}", pid, ids);
    free(ids);
    return r;
}

/*  Every item's track id, in order, as one string "a b c". */
static char *s_order(const char *user, const char *pid)
{
    size_t cap = 1 << 20, len = 0;
    char *out = calloc(1, cap);
    for (long long offset = 0;; offset += 100) {
        th_reply_t r = s_ok(s_call(user, "playlist.items",
                                "{\"id\": \"%s\", \"limit\": 100, \"offset\": %lld}", pid, offset),
                         200);
        json_t *items = json_object_get(r.body, "items");
        size_t i;
        json_t *item;
        json_array_foreach(items, i, item)
        {
            const char *id = th_str(json_object_get(item, "track"), "id");
            len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? " " : "", id);
        }
        if (json_is_null(json_object_get(r.body, "next")))
            break;
    }
    return out;
}

static void s_expect_order(const char *pid, const char *expected)
{
    char *got = s_order("owner", pid);
    cr_assert_str_eq(got, expected);
    free(got);
}

/* ---- tests ----------------------------------------------------------------------------------- */

Test(playlists, create_add_and_read_back)
{
    s_tracks("t", 5);
    size_t before = th_outbox_count();
    th_reply_t r = s_ok(s_call("owner", "playlist.create",
                            "{\"body\": {\"name\": \"Road trip\", \"description\": \"loud\"}}"),
                     201);
    const char *pid = th_str(r.body, "id");
    cr_assert_str_eq(th_str(r.body, "name"), "Road trip");
    cr_assert_str_eq(th_str(r.body, "description"), "loud");
    cr_assert_str_eq(th_str(r.body, "owner"), "owner");
    cr_assert(json_is_true(json_object_get(r.body, "public")), "public by default");
    cr_assert(json_is_false(json_object_get(r.body, "collaborative")));
    cr_assert_eq(th_int(r.body, "followers"), 1, "the owner follows their playlist");
    cr_assert_eq(th_int(r.body, "items_total"), 0);
    cr_assert_eq(strlen(th_str(r.body, "snapshot_id")), 16);
    cr_assert_eq(json_array_size(json_object_get(r.body, "collaborators")), 0);
    cr_assert_eq(th_int(json_object_get(r.body, "items"), "total"), 0);
    th_event_t e = s_expect_event(before, "playlists.playlist");
    cr_assert_str_eq(e.key, pid);
    cr_assert_str_eq(th_str(e.data, "action"), "created");
    cr_assert_str_eq(th_str(e.data, "owner"), "owner");
    cr_assert_str_eq(th_str(e.data, "snapshot_id"), th_str(r.body, "snapshot_id"));
    cr_assert_eq(json_array_size(json_object_get(e.data, "audience")), 1);

    /* Add by URI and by id; read the items back with their track info. */
    const char *snap0 = th_str(r.body, "snapshot_id");
    before = th_outbox_count();
    r = s_ok(s_call("owner", "playlist.items_add",
                    "{\"id\": \"%s\", \"body\": {\"uris\": [\"musicbus:track:t0\", "
                    "\"musicbus:track:t1\"]}}",
                    pid),
             201);
    const char *snap1 = th_str(r.body, "snapshot_id");
    cr_assert_str_neq(snap1, snap0, "every change makes a new snapshot id");
    e = s_expect_event(before, "playlists.playlist");
    cr_assert_str_eq(th_str(e.data, "action"), "changed");
    cr_assert_str_eq(th_str(e.data, "change"), "items");
    cr_assert_str_eq(th_str(e.data, "snapshot_id"), snap1);
    cr_assert_eq(th_int(e.data, "items_total"), 2);

    r = s_ok(s_call("owner", "playlist.items", "{\"id\": \"%s\"}", pid), 200);
    cr_assert_eq(th_int(r.body, "total"), 2);
    cr_assert_eq(th_int(r.body, "limit"), 20);
    cr_assert(json_is_null(json_object_get(r.body, "next")));
    json_t *item = json_array_get(json_object_get(r.body, "items"), 1);
    cr_assert_str_eq(th_str(item, "added_by"), "owner");
    cr_assert_eq(strlen(th_str(item, "added_at")), 24);
    json_t *track = json_object_get(item, "track");
    cr_assert_str_eq(th_str(track, "id"), "t1");
    cr_assert_str_eq(th_str(track, "uri"), "musicbus:track:t1");
    cr_assert_str_eq(th_str(track, "title"), "Song t1");
    cr_assert_eq(th_int(track, "duration_ms"), 180001);
    cr_assert_str_eq(th_str(track, "album_id"), "alb1");
    cr_assert(json_is_true(json_object_get(track, "available")));

    r = s_ok(s_call("owner", "playlist.get", "{\"id\": \"%s\"}", pid), 200);
    cr_assert_eq(th_int(r.body, "items_total"), 2);
    cr_assert_str_eq(th_str(r.body, "snapshot_id"), snap1);
    cr_assert_eq(json_array_size(json_object_get(json_object_get(r.body, "items"), "items")), 2);
}

Test(playlists, create_refuses_bad_bodies)
{
    th_expect_error(s_call(NULL, "playlist.create", "{\"body\": {\"name\": \"x\"}}"), 401,
                   "unauthenticated", NULL);
    th_expect_error(s_call("bad user!", "playlist.create", "{\"body\": {\"name\": \"x\"}}"), 401,
                   "unauthenticated", NULL);
    th_expect_error(s_call("u", "playlist.create", NULL), 400, "invalid", "body");
    th_expect_error(s_call("u", "playlist.create", "{\"body\": []}"), 400, "invalid", "body");
    th_expect_error(s_call("u", "playlist.create", "{\"body\": {}}"), 400, "invalid", "body.name");
    th_expect_error(s_call("u", "playlist.create", "{\"body\": {\"name\": \"\"}}"), 400, "invalid",
                   "body.name");
    char name[120];
    memset(name, 'n', 101);
    name[101] = '\0';
    th_expect_error(s_call("u", "playlist.create", "{\"body\": {\"name\": \"%s\"}}", name), 400,
                   "invalid", "body.name");
    name[100] = '\0';
    s_ok(s_call("u", "playlist.create", "{\"body\": {\"name\": \"%s\"}}", name), 201);
    th_expect_error(s_call("u", "playlist.create", "{\"body\": {\"name\": \"a\\u0001b\"}}"), 400,
                   "invalid", "body.name");
    th_expect_error(s_call("u", "playlist.create", "{\"body\": {\"name\": \"x\", \"public\": 1}}"),
                   400, "invalid", "body.public");
    th_expect_error(
        s_call("u", "playlist.create", "{\"body\": {\"name\": \"x\", \"collaborative\": \"y\"}}"),
        400, "invalid", "body.collaborative");
    th_expect_error(
        s_call("u", "playlist.create", "{\"body\": {\"name\": \"x\", \"description\": 5}}"), 400,
        "invalid", "body.description");
    th_expect_error(s_call("u", "playlist.create", "{\"body\": {\"name\": \"x\", \"color\": 5}}"),
                   400, "invalid", "body.color");
    s_ok(s_call("u", "playlist.create", "{\"body\": {\"name\": \"Zoë ♫\", \"description\": null}}"),
         201);
}

Test(playlists, unknown_and_malformed_ids)
{
    th_expect_error(s_call("u", "playlist.get", "{\"id\": \"nope\"}"), 404, "not_found", NULL);
    th_expect_error(s_call("u", "playlist.items", "{\"id\": \"nope\"}"), 404, "not_found", NULL);
    th_expect_error(
        s_call("u", "playlist.items_add", "{\"id\": \"nope\", \"body\": {\"ids\": [\"t0\"]}}"), 404,
        "not_found", NULL);
    th_expect_error(s_call("u", "playlist.get", "{\"id\": \"a/b\"}"), 400, "invalid", "id");
    th_expect_error(s_call("u", "playlist.get", "{\"id\": 5}"), 400, "invalid", "id");
    th_expect_error(s_call("u", "playlist.get", NULL), 400, "invalid", "id");
    th_expect_error(s_call("u", "playlist.nothing", NULL), 404, "unknown_op", NULL);
}

Test(playlists, private_playlists_are_for_owner_and_collaborators)
{
    s_tracks("t", 3);
    const char *pid = s_create("owner", false, false);
    s_ok(s_call("owner", "playlist.get", "{\"id\": \"%s\"}", pid), 200);
    th_expect_error(s_call("eve", "playlist.get", "{\"id\": \"%s\"}", pid), 403, "forbidden", NULL);
    th_expect_error(s_call("eve", "playlist.items", "{\"id\": \"%s\"}", pid), 403, "forbidden",
                   NULL);
    th_expect_error(s_call("eve", "playlist.follow", "{\"id\": \"%s\"}", pid), 403, "forbidden",
                   NULL);
    th_expect_error(
        s_call("eve", "playlist.items_add", "{\"id\": \"%s\", \"body\": {\"ids\": [\"t0\"]}}", pid),
        403, "forbidden", NULL);

    /* A collaborator named while the playlist is not collaborative has no
       rights yet; making it collaborative gives them read and edit. */
    s_ok(s_call("owner", "playlist.collaborators_add",
                "{\"id\": \"%s\", \"body\": {\"user_ids\": [\"bob\"]}}", pid),
         200);
    th_expect_error(s_call("bob", "playlist.get", "{\"id\": \"%s\"}", pid), 403, "forbidden", NULL);
    s_ok(s_call("owner", "playlist.update", "{\"id\": \"%s\", \"body\": {\"collaborative\": true}}",
                pid),
         200);
    s_ok(s_call("bob", "playlist.get", "{\"id\": \"%s\"}", pid), 200);
    s_ok(
        s_call("bob", "playlist.items_add", "{\"id\": \"%s\", \"body\": {\"ids\": [\"t1\"]}}", pid),
        201);
    th_expect_error(s_call("eve", "playlist.get", "{\"id\": \"%s\"}", pid), 403, "forbidden", NULL);

    /* Private playlists do not show in other users' listings. */
    th_reply_t r = s_ok(s_call("eve", "playlists.of_user", "{\"id\": \"owner\"}"), 200);
    cr_assert_eq(th_int(r.body, "total"), 0);
    r = s_ok(s_call("owner", "playlists.mine", NULL), 200);
    cr_assert_eq(th_int(r.body, "total"), 1);
}

Test(playlists, public_playlists_are_read_and_followed_by_anyone)
{
    s_tracks("t", 3);
    const char *pid = s_create("owner", true, false);
    s_ok(s_call("owner", "playlist.items_add", "{\"id\": \"%s\", \"body\": {\"ids\": [\"t0\"]}}",
                pid),
         201);
    s_ok(s_call("eve", "playlist.get", "{\"id\": \"%s\"}", pid), 200);
    s_ok(s_call("eve", "playlist.items", "{\"id\": \"%s\"}", pid), 200);
    th_expect_error(
        s_call("eve", "playlist.items_add", "{\"id\": \"%s\", \"body\": {\"ids\": [\"t1\"]}}", pid),
        403, "forbidden", NULL);
    th_expect_error(
        s_call("eve", "playlist.update", "{\"id\": \"%s\", \"body\": {\"name\": \"x\"}}", pid), 403,
        "forbidden", NULL);

    size_t before = th_outbox_count();
    th_reply_t r = s_call("eve", "playlist.follow", "{\"id\": \"%s\"}", pid);
    cr_assert_eq(r.status, 204);
    th_event_t e = s_expect_event(before, "playlists.follow");
    cr_assert_str_eq(th_str(e.data, "action"), "followed");
    cr_assert_str_eq(th_str(e.data, "user"), "eve");
    cr_assert_str_eq(th_str(e.data, "playlist"), pid);
    cr_assert_eq(s_call("eve", "playlist.follow", "{\"id\": \"%s\"}", pid).status, 204);
    cr_assert_eq(th_outbox_count(), before + 1, "following again changes nothing");
    r = s_ok(s_call("eve", "playlist.get", "{\"id\": \"%s\"}", pid), 200);
    cr_assert_eq(th_int(r.body, "followers"), 2);
    r = s_ok(s_call("eve", "playlists.mine", NULL), 200);
    cr_assert_eq(th_int(r.body, "total"), 1);
    cr_assert_str_eq(th_str(json_array_get(json_object_get(r.body, "items"), 0), "id"), pid);

    /* DELETE by someone else than the owner unfollows. */
    cr_assert_eq(s_call("eve", "playlist.delete", "{\"id\": \"%s\"}", pid).status, 204);
    r = s_ok(s_call("eve", "playlists.mine", NULL), 200);
    cr_assert_eq(th_int(r.body, "total"), 0);
    s_ok(s_call("owner", "playlist.get", "{\"id\": \"%s\"}", pid), 200);
    cr_assert_eq(s_call("eve", "playlist.follow", "{\"id\": \"%s\"}", pid).status, 204);
    cr_assert_eq(s_call("eve", "playlist.unfollow", "{\"id\": \"%s\"}", pid).status, 204);
    th_expect_error(s_call("owner", "playlist.unfollow", "{\"id\": \"%s\"}", pid), 409, "conflict",
                   NULL);

    /* Made private: gone from the follower's listing and unreadable. */
    cr_assert_eq(s_call("eve", "playlist.follow", "{\"id\": \"%s\"}", pid).status, 204);
    s_ok(s_call("owner", "playlist.update", "{\"id\": \"%s\", \"body\": {\"public\": false}}", pid),
         200);
    r = s_ok(s_call("eve", "playlists.mine", NULL), 200);
    cr_assert_eq(th_int(r.body, "total"), 0);
    th_expect_error(s_call("eve", "playlist.get", "{\"id\": \"%s\"}", pid), 403, "forbidden", NULL);
    cr_assert_eq(s_call("eve", "playlist.unfollow", "{\"id\": \"%s\"}", pid).status, 204,
                 "a follower may always stop following");
}

Test(playlists, collaborators)
{
    s_tracks("t", 3);
    const char *pid = s_create("owner", false, true);
    size_t before = th_outbox_count();
    th_reply_t r = s_ok(s_call("owner", "playlist.collaborators_add",
                            "{\"id\": \"%s\", \"body\": {\"user_ids\": [\"bob\", \"cat\", "
                            "\"bob\"]}}",
                            pid),
                     200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "collaborators")), 2);
    th_event_t e = s_expect_event(before, "playlists.playlist");
    cr_assert_str_eq(th_str(e.data, "change"), "collaborators");
    cr_assert_eq(json_array_size(json_object_get(e.data, "audience")), 3);

    th_expect_error(s_call("owner", "playlist.collaborators_add",
                          "{\"id\": \"%s\", \"body\": {\"user_ids\": [\"owner\"]}}", pid),
                   400, "invalid", "body.user_ids[0]");
    th_expect_error(s_call("bob", "playlist.collaborators_add",
                          "{\"id\": \"%s\", \"body\": {\"user_ids\": [\"dan\"]}}", pid),
                   403, "forbidden", NULL);
    th_expect_error(s_call("owner", "playlist.collaborators_add",
                          "{\"id\": \"%s\", \"body\": {\"user_ids\": []}}", pid),
                   400, "invalid", "body.user_ids");
    th_expect_error(s_call("owner", "playlist.collaborators_add",
                          "{\"id\": \"%s\", \"body\": {\"ids\": [\"x\"]}}", pid),
                   400, "invalid", "body.ids");

    /* A collaborator edits items but not the details. */
    s_ok(
        s_call("bob", "playlist.items_add", "{\"id\": \"%s\", \"body\": {\"ids\": [\"t2\"]}}", pid),
        201);
    r = s_ok(s_call("owner", "playlist.items", "{\"id\": \"%s\"}", pid), 200);
    cr_assert_str_eq(th_str(json_array_get(json_object_get(r.body, "items"), 0), "added_by"), "bob");
    th_expect_error(
        s_call("bob", "playlist.update", "{\"id\": \"%s\", \"body\": {\"name\": \"x\"}}", pid), 403,
        "forbidden", NULL);
    /* DELETE by a collaborator only unfollows: the playlist stays. */
    cr_assert_eq(s_call("bob", "playlist.delete", "{\"id\": \"%s\"}", pid).status, 204);
    s_ok(s_call("owner", "playlist.get", "{\"id\": \"%s\"}", pid), 200);

    /* Bob removes only himself; Cat cannot remove Bob. */
    th_expect_error(s_call("cat", "playlist.collaborators_remove",
                          "{\"id\": \"%s\", \"body\": {\"user_ids\": [\"bob\"]}}", pid),
                   403, "forbidden", NULL);
    r = s_ok(s_call("bob", "playlist.collaborators_remove",
                    "{\"id\": \"%s\", \"body\": {\"user_ids\": [\"bob\"]}}", pid),
             200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "collaborators")), 1);
    th_expect_error(
        s_call("bob", "playlist.items_add", "{\"id\": \"%s\", \"body\": {\"ids\": [\"t2\"]}}", pid),
        403, "forbidden", NULL);
    /* Turning collaborative off takes Cat's rights away, and tells Cat. */
    before = th_outbox_count();
    s_ok(s_call("owner", "playlist.update",
                "{\"id\": \"%s\", \"body\": {\"collaborative\": false}}", pid),
         200);
    e = s_expect_event(before, "playlists.playlist");
    cr_assert_str_eq(th_str(e.data, "change"), "details");
    json_t *aud = json_object_get(e.data, "audience");
    cr_assert_eq(json_array_size(aud), 2, "the owner and the collaborator who lost access");
    th_expect_error(s_call("cat", "playlist.items", "{\"id\": \"%s\"}", pid), 403, "forbidden",
                   NULL);
}

Test(playlists, order_positions_and_duplicates)
{
    s_tracks("t", 6);
    const char *pid = s_create("owner", true, false);
    s_ok(s_add_range("owner", pid, "t", 0, 3), 201);
    s_expect_order(pid, "t0 t1 t2");
    s_ok(s_call("owner", "playlist.items_add",
                "{\"id\": \"%s\", \"body\": {\"ids\": [\"t3\", \"t4\"], \"position\": 1}}", pid),
         201);
    s_expect_order(pid, "t0 t3 t4 t1 t2");
    s_ok(s_call("owner", "playlist.items_add",
                "{\"id\": \"%s\", \"body\": {\"ids\": [\"t5\"], \"position\": 0}}", pid),
         201);
    s_ok(s_call("owner", "playlist.items_add",
                "{\"id\": \"%s\", \"body\": {\"ids\": [\"t5\"], \"position\": 6}}", pid),
         201);
    s_expect_order(pid, "t5 t0 t3 t4 t1 t2 t5");
    th_expect_error(s_call("owner", "playlist.items_add",
                          "{\"id\": \"%s\", \"body\": {\"ids\": [\"t5\"], \"position\": 8}}", pid),
                   400, "invalid", "body.position");

    /* Duplicates: the same track several times, each its own item. */
    s_ok(s_call("owner", "playlist.items_add",
                "{\"id\": \"%s\", \"body\": {\"uris\": [\"musicbus:track:t0\", "
                "\"musicbus:track:t0\"]}}",
                pid),
         201);
    s_expect_order(pid, "t5 t0 t3 t4 t1 t2 t5 t0 t0");
    /* With positions only those go; without, every occurrence. */
    s_ok(s_call("owner", "playlist.items_remove",
                "{\"id\": \"%s\", \"body\": {\"tracks\": [{\"id\": \"t0\", \"positions\": [7]}]}}",
                pid),
         200);
    s_expect_order(pid, "t5 t0 t3 t4 t1 t2 t5 t0");
    th_expect_error(s_call("owner", "playlist.items_remove",
                          "{\"id\": \"%s\", \"body\": {\"tracks\": [{\"id\": \"t0\", "
                          "\"positions\": [2]}]}}",
                          pid),
                   400, "invalid", "body.tracks[0].positions[0]");
    th_expect_error(s_call("owner", "playlist.items_remove",
                          "{\"id\": \"%s\", \"body\": {\"tracks\": [{\"id\": \"t0\", "
                          "\"positions\": [1, 8]}]}}",
                          pid),
                   400, "invalid", "body.tracks[0].positions[1]");
    s_expect_order(pid, "t5 t0 t3 t4 t1 t2 t5 t0");
    th_reply_t r = s_ok(s_call("owner", "playlist.items_remove",
                            "{\"id\": \"%s\", \"body\": {\"tracks\": [{\"uri\": "
                            "\"musicbus:track:t5\"}, {\"id\": \"t3\", \"positions\": [2]}]}}",
                            pid),
                     200);
    s_expect_order(pid, "t0 t4 t1 t2 t0");
    /* Removing what is not there makes no new version. */
    const char *snap = th_str(r.body, "snapshot_id");
    size_t before = th_outbox_count();
    r = s_ok(s_call("owner", "playlist.items_remove",
                    "{\"id\": \"%s\", \"body\": {\"tracks\": [{\"id\": \"t5\"}]}}", pid),
             200);
    cr_assert_str_eq(th_str(r.body, "snapshot_id"), snap);
    cr_assert_eq(th_outbox_count(), before);
}

Test(playlists, reorder_ranges)
{
    s_tracks("t", 6);
    const char *pid = s_create("owner", true, false);
    s_ok(s_add_range("owner", pid, "t", 0, 6), 201);
    const char *call = "{\"id\": \"%s\", \"body\": {\"range_start\": %d, \"insert_before\": %d, "
                       "\"range_length\": %d}}";
    char args[256];
#define REORDER(start, before, len)                                                                \
    (snprintf(args, sizeof args, call, pid, start, before, len),                                   \
     s_call("owner", "playlist.items_reorder", "%s", args))
    s_ok(REORDER(0, 6, 1), 200); /* the first to the end */
    s_expect_order(pid, "t1 t2 t3 t4 t5 t0");
    s_ok(REORDER(4, 0, 2), 200); /* the last two to the front */
    s_expect_order(pid, "t5 t0 t1 t2 t3 t4");
    s_ok(REORDER(1, 4, 2), 200); /* a range forward */
    s_expect_order(pid, "t5 t2 t0 t1 t3 t4");
    s_ok(REORDER(3, 6, 3), 200); /* a range at the end to the end: no move */
    s_expect_order(pid, "t5 t2 t0 t1 t3 t4");

    /* insert_before within [range_start, range_start + length]: nothing
       moves and the snapshot stays. */
    const char *snap = s_snapshot("owner", pid);
    th_reply_t r = s_ok(REORDER(2, 2, 2), 200);
    cr_assert_str_eq(th_str(r.body, "snapshot_id"), snap);
    r = s_ok(REORDER(2, 4, 2), 200);
    cr_assert_str_eq(th_str(r.body, "snapshot_id"), snap);
    s_expect_order(pid, "t5 t2 t0 t1 t3 t4");

    th_expect_error(REORDER(6, 0, 1), 400, "invalid", "body.range_start");
    th_expect_error(REORDER(5, 0, 2), 400, "invalid", "body.range_length");
    th_expect_error(REORDER(0, 7, 1), 400, "invalid", "body.insert_before");
    th_expect_error(REORDER(0, 2, 0), 400, "invalid", "body.range_length");
    th_expect_error(s_call("owner", "playlist.items_reorder",
                          "{\"id\": \"%s\", \"body\": {\"insert_before\": 1}}", pid),
                   400, "invalid", "body.range_start");
    th_expect_error(s_call("owner", "playlist.items_reorder",
                          "{\"id\": \"%s\", \"body\": {\"range_start\": 1}}", pid),
                   400, "invalid", "body.insert_before");
    th_expect_error(s_call("owner", "playlist.items_reorder",
                          "{\"id\": \"%s\", \"body\": {\"range_start\": -1, \"insert_before\": 0}}",
                          pid),
                   400, "invalid", "body.range_start");
    th_expect_error(s_call("owner", "playlist.items_reorder",
                          "{\"id\": \"%s\", \"body\": {\"range_start\": 0, \"insert_before\": 1, "
                          "\"snapshot_id\": \"x\"}}",
                          pid),
                   400, "invalid", "body.snapshot_id");
    s_expect_order(pid, "t5 t2 t0 t1 t3 t4");
    /* An empty playlist has nothing to move. */
    const char *empty = s_create("owner", true, false);
    snprintf(args, sizeof args, call, empty, 0, 0, 1);
    th_expect_error(s_call("owner", "playlist.items_reorder", "%s", args), 400, "invalid",
                   "body.range_start");
#undef REORDER
}

Test(playlists, malformed_item_bodies)
{
    s_tracks("t", 4);
    const char *pid = s_create("owner", true, false);
    const char *bad[][2] = {
        {"null", "body"},
        {"{}", "body.uris"},
        {"{\"uris\": \"musicbus:track:t0\"}", "body.uris"},
        {"{\"uris\": []}", "body.uris"},
        {"{\"uris\": [\"t0\"]}", "body.uris[0]"},
        {"{\"uris\": [\"musicbus:track:\"]}", "body.uris[0]"},
        {"{\"uris\": [\"musicbus:album:t0\"]}", "body.uris[0]"},
        {"{\"ids\": [\"t0\", 5]}", "body.ids[1]"},
        {"{\"ids\": [\"t0\", \"t/1\"]}", "body.ids[1]"},
        {"{\"ids\": [\"t0\"], \"uris\": [\"musicbus:track:t0\"]}", "body"},
        {"{\"ids\": [\"t0\"], \"position\": -1}", "body.position"},
        {"{\"ids\": [\"t0\"], \"position\": \"0\"}", "body.position"},
        {"{\"ids\": [\"t0\"], \"where\": 0}", "body.where"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        th_expect_error(
            s_call("owner", "playlist.items_add", "{\"id\": \"%s\", \"body\": %s}", pid, bad[i][0]),
            400, "invalid", bad[i][1]);
    /* More than 100 at once. */
    s_tracks("m", 101);
    th_expect_error(s_add_range("owner", pid, "m", 0, 101), 400, "invalid", "body.ids");
    /* An unknown track is refused by its index in the list. */
    th_expect_error(
        s_call("owner", "playlist.items_add",
               "{\"id\": \"%s\", \"body\": {\"uris\": [\"musicbus:track:t0\", "
               "\"musicbus:track:t1\", \"musicbus:track:t2\", \"musicbus:track:nope\"]}}",
               pid),
        400, "invalid", "body.uris[3]");
    th_reply_t r = s_ok(s_call("owner", "playlist.get", "{\"id\": \"%s\"}", pid), 200);
    cr_assert_eq(th_int(r.body, "items_total"), 0, "a refused add adds nothing");

    const char *bad_remove[][2] = {
        {"{}", "body.tracks"},
        {"{\"tracks\": []}", "body.tracks"},
        {"{\"tracks\": [5]}", "body.tracks[0]"},
        {"{\"tracks\": [{}]}", "body.tracks[0]"},
        {"{\"tracks\": [{\"id\": \"t0\", \"uri\": \"musicbus:track:t0\"}]}", "body.tracks[0]"},
        {"{\"tracks\": [{\"uri\": \"t0\"}]}", "body.tracks[0].uri"},
        {"{\"tracks\": [{\"id\": \"t0\", \"positions\": []}]}", "body.tracks[0].positions"},
        {"{\"tracks\": [{\"id\": \"t0\", \"positions\": [\"1\"]}]}", "body.tracks[0].positions[0]"},
        {"{\"tracks\": [{\"id\": \"t0\", \"positions\": [-1]}]}", "body.tracks[0].positions[0]"},
        {"{\"tracks\": [{\"id\": \"t0\", \"extra\": 1}]}", "body.tracks[0].extra"},
        {"{\"tracks\": [{\"id\": \"t0\"}], \"snapshot_id\": \"x\"}", "body.snapshot_id"},
    };
    for (size_t i = 0; i < sizeof bad_remove / sizeof bad_remove[0]; i++)
        th_expect_error(s_call("owner", "playlist.items_remove", "{\"id\": \"%s\", \"body\": %s}",
                              pid, bad_remove[i][0]),
                       400, "invalid", bad_remove[i][1]);
    th_expect_error(s_call("owner", "playlist.items", "{\"id\": \"%s\", \"limit\": 101}", pid), 400,
                   "invalid", "limit");
    th_expect_error(s_call("owner", "playlist.items", "{\"id\": \"%s\", \"limit\": 0}", pid), 400,
                   "invalid", "limit");
    th_expect_error(s_call("owner", "playlist.items", "{\"id\": \"%s\", \"offset\": -1}", pid), 400,
                   "invalid", "offset");
    s_ok(s_call("owner", "playlist.items", "{\"id\": \"%s\", \"limit\": 100}", pid), 200);
}

Test(playlists, ten_thousand_items_exactly)
{
    s_tracks("t", 100);
    const char *pid = s_create("owner", true, false);
    /* 9,999 items: 99 adds of 100 (the same 100 tracks: duplicates are
       fine), then 99 more. */
    for (int i = 0; i < 99; i++)
        s_ok(s_add_range("owner", pid, "t", 0, 100), 201);
    s_ok(s_add_range("owner", pid, "t", 0, 99), 201);
    th_expect_error(s_add_range("owner", pid, "t", 0, 2), 409, "playlist_full", "body.ids");
    s_ok(s_add_range("owner", pid, "t", 99, 1), 201);
    th_reply_t r = s_ok(s_call("owner", "playlist.get", "{\"id\": \"%s\"}", pid), 200);
    cr_assert_eq(th_int(r.body, "items_total"), 10000);
    th_expect_error(s_add_range("owner", pid, "t", 0, 1), 409, "playlist_full", "body.ids");
    th_expect_error(s_call("owner", "playlist.items_add",
                          "{\"id\": \"%s\", \"body\": {\"ids\": [\"t0\"], \"position\": 0}}", pid),
                   409, "playlist_full", NULL);

    /* The last page, its links, and every position in order. */
    r = s_ok(s_call("owner", "playlist.items", "{\"id\": \"%s\", \"offset\": 9950, \"limit\": 100}",
                    pid),
             200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "items")), 50);
    cr_assert_eq(th_int(r.body, "total"), 10000);
    cr_assert(json_is_null(json_object_get(r.body, "next")));
    char prev[128];
    snprintf(prev, sizeof prev, "/v1/playlists/%s/items?offset=9850&limit=100", pid);
    cr_assert_str_eq(th_str(r.body, "previous"), prev);
    cr_assert_str_eq(
        th_str(json_object_get(json_array_get(json_object_get(r.body, "items"), 49), "track"), "id"),
        "t99");
    r = s_ok(s_call("owner", "playlist.items", "{\"id\": \"%s\", \"offset\": 10000}", pid), 200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "items")), 0);
    char *order = s_order("owner", pid);
    char *p = order;
    for (int i = 0; i < 10000; i++) {
        char want[16];
        int n = snprintf(want, sizeof want, "t%d", i % 100);
        cr_assert(strncmp(p, want, (size_t)n) == 0 && (p[n] == ' ' || p[n] == '\0'),
                  "item %d is not %s", i, want);
        p += n + (p[n] == ' ');
    }
    free(order);

    /* Removing every t7 (100 of them) makes room again. */
    s_ok(s_call("owner", "playlist.items_remove",
                "{\"id\": \"%s\", \"body\": {\"tracks\": [{\"id\": \"t7\"}]}}", pid),
         200);
    r = s_ok(s_call("owner", "playlist.get", "{\"id\": \"%s\"}", pid), 200);
    cr_assert_eq(th_int(r.body, "items_total"), 9900);
    s_ok(s_add_range("owner", pid, "t", 0, 100), 201);
    /* A reorder of half the playlist across many chunks. */
    s_ok(s_call("owner", "playlist.items_reorder",
                "{\"id\": \"%s\", \"body\": {\"range_start\": 0, \"range_length\": 5000, "
                "\"insert_before\": 10000}}",
                pid),
         200);
    r = s_ok(
        s_call("owner", "playlist.items", "{\"id\": \"%s\", \"offset\": 5000, \"limit\": 1}", pid),
        200);
    cr_assert_str_eq(
        th_str(json_object_get(json_array_get(json_object_get(r.body, "items"), 0), "track"), "id"),
        "t0");
}

Test(playlists, if_match_and_stale_snapshots)
{
    s_tracks("t", 4);
    const char *pid = s_create("owner", false, true);
    s_ok(s_call("owner", "playlist.collaborators_add",
                "{\"id\": \"%s\", \"body\": {\"user_ids\": [\"bob\"]}}", pid),
         200);
    /* Both read the same version... */
    char seen[32];
    snprintf(seen, sizeof seen, "%s", s_snapshot("owner", pid));
    cr_assert_str_eq(s_snapshot("bob", pid), seen);
    /* ...Bob writes first, so Owner's write on the old version is refused. */
    th_reply_t r = s_ok(s_call("bob", "playlist.items_add",
                            "{\"id\": \"%s\", \"if_match\": \"%s\", \"body\": {\"ids\": [\"t0\"]}}",
                            pid, seen),
                     201);
    char now[32];
    snprintf(now, sizeof now, "%s", th_str(r.body, "snapshot_id"));
    size_t before = th_outbox_count();
    th_expect_error(s_call("owner", "playlist.items_add",
                          "{\"id\": \"%s\", \"if_match\": \"%s\", \"body\": {\"ids\": [\"t1\"]}}",
                          pid, seen),
                   412, "precondition_failed", NULL);
    th_expect_error(s_call("owner", "playlist.items_reorder",
                          "{\"id\": \"%s\", \"if_match\": \"%s\", \"body\": {\"range_start\": 0, "
                          "\"insert_before\": 1}}",
                          pid, seen),
                   412, "precondition_failed", NULL);
    th_expect_error(s_call("owner", "playlist.items_remove",
                          "{\"id\": \"%s\", \"if_match\": \"%s\", \"body\": {\"tracks\": "
                          "[{\"id\": \"t0\"}]}}",
                          pid, seen),
                   412, "precondition_failed", NULL);
    th_expect_error(s_call("owner", "playlist.update",
                          "{\"id\": \"%s\", \"if_match\": \"%s\", \"body\": {\"name\": \"n\"}}",
                          pid, seen),
                   412, "precondition_failed", NULL);
    th_expect_error(
        s_call("owner", "playlist.delete", "{\"id\": \"%s\", \"if_match\": \"%s\"}", pid, seen),
        412, "precondition_failed", NULL);
    cr_assert_eq(th_outbox_count(), before, "a refused write publishes nothing");
    s_expect_order(pid, "t0");
    /* Without If-Match a write applies to the latest version. */
    s_ok(s_call("owner", "playlist.items_add", "{\"id\": \"%s\", \"body\": {\"ids\": [\"t1\"]}}",
                pid),
         201);
    snprintf(now, sizeof now, "%s", s_snapshot("owner", pid));
    /* ETag forms: quoted, in a list, *; weak tags never match. */
    r = s_ok(s_call("owner", "playlist.items_add",
                    "{\"id\": \"%s\", \"if_match\": \"\\\"%s\\\"\", \"body\": {\"ids\": [\"t2\"]}}",
                    pid, now),
             201);
    snprintf(now, sizeof now, "%s", th_str(r.body, "snapshot_id"));
    r = s_ok(s_call("owner", "playlist.items_add",
                    "{\"id\": \"%s\", \"if_match\": \"\\\"zzz\\\", \\\"%s\\\"\", \"body\": "
                    "{\"ids\": [\"t3\"]}}",
                    pid, now),
             201);
    snprintf(now, sizeof now, "%s", th_str(r.body, "snapshot_id"));
    th_expect_error(s_call("owner", "playlist.items_add",
                          "{\"id\": \"%s\", \"if_match\": \"W/\\\"%s\\\"\", \"body\": {\"ids\": "
                          "[\"t3\"]}}",
                          pid, now),
                   412, "precondition_failed", NULL);
    s_ok(s_call("owner", "playlist.items_add",
                "{\"id\": \"%s\", \"if_match\": \"*\", \"body\": {\"ids\": [\"t3\"]}}", pid),
         201);
    th_expect_error(s_call("owner", "playlist.items_add",
                          "{\"id\": \"%s\", \"if_match\": 5, \"body\": {\"ids\": [\"t3\"]}}", pid),
                   400, "invalid", "if_match");
    s_expect_order(pid, "t0 t1 t2 t3 t3");
    /* Snapshot ids sort by version. */
    cr_assert(strncmp(seen, now, 6) < 0);
}

Test(playlists, patch_and_delete)
{
    s_tracks("t", 2);
    const char *pid = s_create("owner", true, false);
    s_ok(s_add_range("owner", pid, "t", 0, 2), 201);
    cr_assert_eq(s_call("eve", "playlist.follow", "{\"id\": \"%s\"}", pid).status, 204);
    char snap[32];
    snprintf(snap, sizeof snap, "%s", s_snapshot("owner", pid));
    size_t before = th_outbox_count();
    /* The same values change nothing: no new snapshot, no event. */
    th_reply_t r = s_ok(s_call("owner", "playlist.update",
                            "{\"id\": \"%s\", \"body\": {\"name\": \"Mix of owner\", \"public\": "
                            "true}}",
                            pid),
                     200);
    cr_assert_str_eq(th_str(r.body, "snapshot_id"), snap);
    cr_assert_eq(th_outbox_count(), before);
    r = s_ok(s_call("owner", "playlist.update",
                    "{\"id\": \"%s\", \"if_match\": \"%s\", \"body\": {\"name\": \"New\", "
                    "\"description\": \"d\"}}",
                    pid, snap),
             200);
    cr_assert_str_eq(th_str(r.body, "name"), "New");
    cr_assert_str_neq(th_str(r.body, "snapshot_id"), snap);
    th_event_t e = s_expect_event(before, "playlists.playlist");
    cr_assert_str_eq(th_str(e.data, "change"), "details");
    cr_assert_str_eq(th_str(e.data, "name"), "New");
    r = s_ok(s_call("owner", "playlist.update",
                    "{\"id\": \"%s\", \"body\": {\"description\": null}}", pid),
             200);
    cr_assert(json_is_null(json_object_get(r.body, "description")));
    th_expect_error(
        s_call("owner", "playlist.update", "{\"id\": \"%s\", \"body\": {\"name\": 1}}", pid), 400,
        "invalid", "body.name");

    before = th_outbox_count();
    cr_assert_eq(s_call("owner", "playlist.delete", "{\"id\": \"%s\"}", pid).status, 204);
    e = s_expect_event(before, "playlists.playlist");
    cr_assert_str_eq(th_str(e.data, "action"), "deleted");
    th_expect_error(s_call("owner", "playlist.get", "{\"id\": \"%s\"}", pid), 404, "not_found",
                   NULL);
    r = s_ok(s_call("eve", "playlists.mine", NULL), 200);
    cr_assert_eq(th_int(r.body, "total"), 0, "followers' lists lose a deleted playlist");
    r = s_ok(s_call("owner", "playlists.mine", NULL), 200);
    cr_assert_eq(th_int(r.body, "total"), 0);
}

Test(playlists, listings_newest_first_and_paged)
{
    const char *ids[5];
    for (int i = 0; i < 5; i++) {
        ids[i] = s_create("owner", i != 2, false);
        usleep(2000); /* distinct follow times */
    }
    th_reply_t r = s_ok(s_call("owner", "playlists.mine", "{\"limit\": 2}"), 200);
    cr_assert_eq(th_int(r.body, "total"), 5);
    json_t *items = json_object_get(r.body, "items");
    cr_assert_eq(json_array_size(items), 2);
    cr_assert_str_eq(th_str(json_array_get(items, 0), "id"), ids[4]);
    cr_assert_str_eq(th_str(json_array_get(items, 1), "id"), ids[3]);
    cr_assert_str_eq(th_str(r.body, "next"), "/v1/me/playlists?offset=2&limit=2");
    cr_assert(json_is_null(json_object_get(r.body, "previous")));
    r = s_ok(s_call("owner", "playlists.mine", "{\"limit\": 2, \"offset\": 4}"), 200);
    cr_assert_eq(json_array_size(json_object_get(r.body, "items")), 1);
    cr_assert_str_eq(th_str(json_array_get(json_object_get(r.body, "items"), 0), "id"), ids[0]);
    cr_assert_str_eq(th_str(r.body, "previous"), "/v1/me/playlists?offset=2&limit=2");

    /* Others see only the public ones; the owner sees all of them there too. */
    r = s_ok(s_call("eve", "playlists.of_user", "{\"id\": \"owner\"}"), 200);
    cr_assert_eq(th_int(r.body, "total"), 4);
    items = json_object_get(r.body, "items");
    for (size_t i = 0; i < json_array_size(items); i++)
        cr_assert_str_neq(th_str(json_array_get(items, i), "id"), ids[2]);
    r = s_ok(s_call("owner", "playlists.of_user", "{\"id\": \"owner\", \"limit\": 50}"), 200);
    cr_assert_eq(th_int(r.body, "total"), 5);
    th_expect_error(s_call("owner", "playlists.mine", "{\"limit\": 51}"), 400, "invalid", "limit");
    th_expect_error(s_call(NULL, "playlists.mine", NULL), 401, "unauthenticated", NULL);
    r = s_ok(s_call("eve", "playlists.of_user", "{\"id\": \"nobody\"}"), 200);
    cr_assert_eq(th_int(r.body, "total"), 0);
}

Test(playlists, catalog_deletes_and_takedowns_make_items_unavailable)
{
    s_tracks("t", 3);
    const char *pid = s_create("owner", true, false);
    s_ok(s_add_range("owner", pid, "t", 0, 3), 201);
    cr_assert_eq(s_apply("catalog.track", "t1",
                         th_json("{\"action\": \"deleted\", \"id\": "
                                 "\"t1\", \"object\": null}")),
                 0);
    th_reply_t r = s_ok(s_call("owner", "playlist.items", "{\"id\": \"%s\"}", pid), 200);
    json_t *items = json_object_get(r.body, "items");
    cr_assert_eq(json_array_size(items), 3, "the item stays");
    json_t *t1 = json_object_get(json_array_get(items, 1), "track");
    cr_assert_str_eq(th_str(t1, "id"), "t1");
    cr_assert(json_is_false(json_object_get(t1, "available")));
    cr_assert_str_eq(th_str(t1, "title"), "Song t1", "what was known is kept");
    cr_assert(json_is_true(
        json_object_get(json_object_get(json_array_get(items, 0), "track"), "available")));
    th_expect_error(s_call("owner", "playlist.items_add",
                          "{\"id\": \"%s\", \"body\": {\"uris\": [\"musicbus:track:t0\", "
                          "\"musicbus:track:t1\"]}}",
                          pid),
                   400, "invalid", "body.uris[1]");
    /* A redelivered created after the delete does not bring it back. */
    cr_assert_eq(
        s_apply("catalog.track", "t1",
                th_json("{\"action\": \"created\", \"id\": \"t1\", \"object\": {\"title\": "
                        "\"Song t1\", \"updated_at\": \"2026-11-28T02:10:00.000Z\"}}")),
        0);
    th_expect_error(s_call("owner", "playlist.items_add",
                          "{\"id\": \"%s\", \"body\": {\"ids\": [\"t1\"]}}", pid),
                   400, "invalid", "body.ids[0]");
    /* Taken down (available false) and back; stale updates are ignored. */
    cr_assert_eq(
        s_apply("catalog.track", "t2",
                th_json("{\"action\": \"updated\", \"id\": \"t2\", \"object\": {\"title\": "
                        "\"Song t2 (remaster)\", \"available\": false, \"updated_at\": "
                        "\"2026-11-28T03:00:00.000Z\"}}")),
        0);
    r = s_ok(s_call("owner", "playlist.items", "{\"id\": \"%s\", \"offset\": 2}", pid), 200);
    json_t *t2 = json_object_get(json_array_get(json_object_get(r.body, "items"), 0), "track");
    cr_assert(json_is_false(json_object_get(t2, "available")));
    cr_assert_str_eq(th_str(t2, "title"), "Song t2 (remaster)");
    cr_assert_eq(
        s_apply("catalog.track", "t2",
                th_json("{\"action\": \"updated\", \"id\": \"t2\", \"object\": {\"title\": "
                        "\"old\", \"updated_at\": \"2026-11-28T02:30:00.000Z\"}}")),
        0);
    r = s_ok(s_call("owner", "playlist.items", "{\"id\": \"%s\", \"offset\": 2}", pid), 200);
    t2 = json_object_get(json_array_get(json_object_get(r.body, "items"), 0), "track");
    cr_assert(json_is_false(json_object_get(t2, "available")), "an older event changes nothing");
    cr_assert_eq(
        s_apply("catalog.track", "t2",
                th_json("{\"action\": \"updated\", \"id\": \"t2\", \"object\": {\"title\": "
                        "\"Song t2\", \"available\": true, \"updated_at\": "
                        "\"2026-11-28T04:00:00.000Z\"}}")),
        0);
    s_ok(s_call("owner", "playlist.items_add", "{\"id\": \"%s\", \"body\": {\"ids\": [\"t2\"]}}",
                pid),
         201);
    /* A delete of a track never seen leaves a tombstone. */
    cr_assert_eq(s_apply("catalog.track", "t9",
                         th_json("{\"action\": \"deleted\", \"id\": \"t9\", \"object\": null}")),
                 0);
    th_expect_error(s_call("owner", "playlist.items_add",
                          "{\"id\": \"%s\", \"body\": {\"ids\": [\"t9\"]}}", pid),
                   400, "invalid", "body.ids[0]");
}

Test(playlists, malformed_catalog_events_are_skipped)
{
    cr_assert_eq(s_apply("catalog.track", "x", th_json("[1, 2]")), MB_EINVAL);
    cr_assert_eq(s_apply("catalog.track", "x", th_json("{\"action\": \"created\"}")), MB_EINVAL);
    cr_assert_eq(s_apply("catalog.track", "x", th_json("{\"action\": \"created\", \"id\": \"x\"}")),
                 MB_EINVAL);
    cr_assert_eq(s_apply("catalog.track", "x",
                         th_json("{\"action\": \"renamed\", \"id\": \"x\", \"object\": {}}")),
                 MB_EINVAL);
    cr_assert_eq(s_apply("catalog.track", "x",
                         th_json("{\"action\": \"created\", \"id\": \"x/y\", \"object\": {}}")),
                 MB_EINVAL);
    cr_assert_eq(s_apply("catalog.genre", "x",
                         th_json("{\"action\": \"created\", \"id\": \"x\", \"object\": {}}")),
                 MB_EINVAL);
    /* Fields of the wrong type are kept as unknown, not refused. */
    cr_assert_eq(s_apply("catalog.track", "x",
                         th_json("{\"action\": \"created\", \"id\": \"x\", \"object\": {\"title\": "
                                 "5, \"duration_ms\": \"long\"}}")),
                 0);
    const char *pid = s_create("owner", true, false);
    s_ok(s_call("owner", "playlist.items_add", "{\"id\": \"%s\", \"body\": {\"ids\": [\"x\"]}}",
                pid),
         201);
    th_reply_t r = s_ok(s_call("owner", "playlist.items", "{\"id\": \"%s\"}", pid), 200);
    json_t *t = json_object_get(json_array_get(json_object_get(r.body, "items"), 0), "track");
    cr_assert(json_is_null(json_object_get(t, "title")));
    cr_assert(json_is_null(json_object_get(t, "duration_ms")));
}

/* ---- the library --------------------------------------------------------------------------------
 */

Test(playlists, liked_tracks)
{
    s_tracks("t", 60);
    size_t before = th_outbox_count();
    cr_assert_eq(s_call("u", "library.tracks_save", "{\"ids\": [\"t0\", \"t1\", \"t2\"]}").status,
                 204);
    th_event_t e = s_expect_event(before, "playlists.library");
    cr_assert_str_eq(e.key, "u");
    cr_assert_str_eq(th_str(e.data, "kind"), "tracks");
    cr_assert_str_eq(th_str(e.data, "action"), "added");
    cr_assert_eq(json_array_size(json_object_get(e.data, "ids")), 3);
    usleep(2000);
    /* Saving again changes only what is new. */
    cr_assert_eq(
        s_call("u", "library.tracks_save", "{\"body\": {\"ids\": [\"t2\", \"t3\"]}}").status, 204);
    e = s_expect_event(before + 1, "playlists.library");
    cr_assert_eq(json_array_size(json_object_get(e.data, "ids")), 1);
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(e.data, "ids"), 0)), "t3");
    cr_assert_eq(s_call("u", "library.tracks_save", "{\"ids\": [\"t3\"]}").status, 204);
    cr_assert_eq(th_outbox_count(), before + 2, "nothing new, no event");

    th_reply_t r = s_ok(s_call("u", "library.tracks", "{\"limit\": 3}"), 200);
    cr_assert_eq(th_int(r.body, "total"), 4);
    json_t *items = json_object_get(r.body, "items");
    const char *want[] = {"t3", "t0", "t1"}; /* newest first; one batch in the order given */
    for (int i = 0; i < 3; i++) {
        json_t *item = json_array_get(items, (size_t)i);
        cr_assert_str_eq(th_str(json_object_get(item, "track"), "id"), want[i]);
        cr_assert_eq(strlen(th_str(item, "added_at")), 24);
    }
    cr_assert_str_eq(th_str(r.body, "next"), "/v1/me/tracks?offset=3&limit=3");
    r = s_ok(s_call("u", "library.tracks_contains", "{\"ids\": [\"t0\", \"t9\", \"t3\"]}"), 200);
    cr_assert(json_is_true(json_array_get(r.body, 0)));
    cr_assert(json_is_false(json_array_get(r.body, 1)));
    cr_assert(json_is_true(json_array_get(r.body, 2)));
    r = s_ok(s_call("v", "library.tracks_contains", "{\"ids\": [\"t0\"]}"), 200);
    cr_assert(json_is_false(json_array_get(r.body, 0)), "libraries are per user");

    cr_assert_eq(s_call("u", "library.tracks_remove", "{\"ids\": [\"t0\", \"t9\"]}").status, 204);
    e = th_outbox_last();
    cr_assert_str_eq(th_str(e.data, "action"), "removed");
    cr_assert_eq(json_array_size(json_object_get(e.data, "ids")), 1);
    r = s_ok(s_call("u", "library.tracks", NULL), 200);
    cr_assert_eq(th_int(r.body, "total"), 3);

    /* Batches: 1..50 ids; unknown tracks are refused by index. */
    char ids[2048];
    size_t len = 0;
    for (int i = 0; i < 51; i++)
        len += (size_t)snprintf(ids + len, sizeof ids - len, "%s\"t%d\"", i ? "," : "", i);
    th_expect_error(s_call("u", "library.tracks_save", "{\"ids\": [%s]}", ids), 400, "invalid",
                   "ids");
    th_expect_error(s_call("u", "library.tracks_contains", "{\"ids\": [%s]}", ids), 400, "invalid",
                   "ids");
    ids[len - 6] = '\0'; /* drop ,"t50" */
    cr_assert_eq(s_call("u", "library.tracks_save", "{\"ids\": [%s]}", ids).status, 204);
    r = s_ok(s_call("u", "library.tracks", "{\"limit\": 50}"), 200);
    cr_assert_eq(th_int(r.body, "total"), 50);
    th_expect_error(s_call("u", "library.tracks_save", "{\"ids\": []}"), 400, "invalid", "ids");
    th_expect_error(s_call("u", "library.tracks_save", NULL), 400, "invalid", "ids");
    th_expect_error(s_call("u", "library.tracks_save", "{\"ids\": [\"t1\", \"zz\"]}"), 400,
                   "invalid", "ids[1]");
    th_expect_error(s_call("u", "library.tracks_save", "{\"body\": {\"ids\": [\"t1\", \"zz\"]}}"),
                   400, "invalid", "body.ids[1]");
    th_expect_error(s_call("u", "library.tracks_save", "{\"ids\": [\"a b\"]}"), 400, "invalid",
                   "ids[0]");
    th_expect_error(s_call("u", "library.tracks_save", "{\"body\": {\"ids\": [\"t1\"], \"x\": 1}}"),
                   400, "invalid", "body");
    th_expect_error(s_call(NULL, "library.tracks", NULL), 401, "unauthenticated", NULL);
    /* A liked track the catalog deletes stays, unavailable, and can go. */
    cr_assert_eq(s_apply("catalog.track", "t1",
                         th_json("{\"action\": \"deleted\", \"id\": \"t1\", \"object\": null}")),
                 0);
    r = s_ok(s_call("u", "library.tracks_contains", "{\"ids\": [\"t1\"]}"), 200);
    cr_assert(json_is_true(json_array_get(r.body, 0)));
    cr_assert_eq(s_call("u", "library.tracks_remove", "{\"ids\": [\"t1\"]}").status, 204);
}

Test(playlists, saved_albums_and_followed_artists)
{
    cr_assert_eq(
        s_apply("catalog.album", "al1",
                th_json("{\"action\": \"created\", \"id\": \"al1\", \"object\": {\"title\": "
                        "\"Album\", \"artist_ids\": [\"ar1\"]}}")),
        0);
    cr_assert_eq(
        s_apply("catalog.artist", "ar1",
                th_json("{\"action\": \"created\", \"id\": \"ar1\", \"object\": {\"name\": "
                        "\"Band\"}}")),
        0);
    cr_assert_eq(s_call("u", "library.albums_save", "{\"ids\": [\"al1\"]}").status, 204);
    th_expect_error(s_call("u", "library.albums_save", "{\"ids\": [\"ar1\"]}"), 400, "invalid",
                   "ids[0]");
    th_reply_t r = s_ok(s_call("u", "library.albums", NULL), 200);
    json_t *album = json_object_get(json_array_get(json_object_get(r.body, "items"), 0), "album");
    cr_assert_str_eq(th_str(album, "title"), "Album");
    cr_assert_eq(json_array_size(json_object_get(album, "artist_ids")), 1);
    r = s_ok(s_call("u", "library.albums_contains", "{\"ids\": [\"al1\"]}"), 200);
    cr_assert(json_is_true(json_array_get(r.body, 0)));

    size_t before = th_outbox_count();
    cr_assert_eq(
        s_call("u", "library.following_add", "{\"type\": \"artist\", \"ids\": [\"ar1\"]}").status,
        204);
    th_event_t e = s_expect_event(before, "playlists.library");
    cr_assert_str_eq(th_str(e.data, "kind"), "artists");
    th_expect_error(s_call("u", "library.following_add", "{\"ids\": [\"ar1\"]}"), 400, "invalid",
                   "type");
    th_expect_error(s_call("u", "library.following", "{\"type\": \"user\"}"), 400, "invalid",
                   "type");
    r = s_ok(s_call("u", "library.following", "{\"type\": \"artist\"}"), 200);
    json_t *artist = json_object_get(json_array_get(json_object_get(r.body, "items"), 0), "artist");
    cr_assert_str_eq(th_str(artist, "name"), "Band");
    cr_assert(json_is_true(json_object_get(artist, "available")));
    r = s_ok(s_call("u", "library.following_contains",
                    "{\"type\": \"artist\", \"ids\": [\"ar1\", \"al1\"]}"),
             200);
    cr_assert(json_is_true(json_array_get(r.body, 0)));
    cr_assert(json_is_false(json_array_get(r.body, 1)), "kinds are kept apart");
    cr_assert_eq(
        s_call("u", "library.following_remove", "{\"type\": \"artist\", \"ids\": [\"ar1\"]}")
            .status,
        204);
    r = s_ok(s_call("u", "library.following", "{\"type\": \"artist\"}"), 200);
    cr_assert_eq(th_int(r.body, "total"), 0);
    cr_assert(json_is_null(json_object_get(r.body, "next")));
}

/* ---- chunks against a model
 * ----------------------------------------------------------------------- */

/*  Random adds, removes and moves through the ops, with 4 items a chunk
    so that every edit crosses chunk boundaries, checked after each step
    against a plain array. */
Test(playlists, random_edits_match_a_model)
{
    playlists_store_set_chunk_max(th_state, 4);
    s_tracks("t", 12);
    const char *pid = s_create("owner", true, false);
    int model[400], n = 0;
    srand(42);
    for (int step = 0; step < 600; step++) {
        int op = rand() % 10;
        char args[512];
        if (op < 4 || n < 3) { /* add 1..6 at a random position */
            int k = 1 + rand() % 6, pos = rand() % (n + 1), first = rand() % 12;
            if (n + k > 400)
                continue;
            size_t len = (size_t)snprintf(args, sizeof args,
                                          "{\"id\": \"%s\", \"body\": "
                                          "{\"position\": %d, \"ids\": [",
                                          pid, pos);
            for (int i = 0; i < k; i++)
                len += (size_t)snprintf(args + len, sizeof args - len, "%s\"t%d\"", i ? "," : "",
                                        (first + i) % 12);
            snprintf(args + len, sizeof args - len, "]}}");
            s_ok(s_call("owner", "playlist.items_add", "%s", args), 201);
            memmove(model + pos + k, model + pos, (size_t)(n - pos) * sizeof *model);
            for (int i = 0; i < k; i++)
                model[pos + i] = (first + i) % 12;
            n += k;
        } else if (op == 5) { /* remove 2..4 items by position, spread out, in one request */
            int k = 2 + rand() % 3, pos[4], m = 0;
            size_t len = (size_t)snprintf(args, sizeof args,
                                          "{\"id\": \"%s\", \"body\": {\"tracks\": [", pid);
            bool gone[400] = {false};
            for (int i = 0; i < k && i < n; i++) {
                int at = rand() % n;
                if (gone[at])
                    continue;
                gone[at] = true;
                pos[m++] = at;
                len += (size_t)snprintf(args + len, sizeof args - len,
                                        "%s{\"id\": \"t%d\", \"positions\": [%d]}",
                                        m > 1 ? "," : "", model[at], at);
            }
            snprintf(args + len, sizeof args - len, "]}}");
            s_ok(s_call("owner", "playlist.items_remove", "%s", args), 200);
            int kept = 0;
            for (int i = 0; i < n; i++)
                if (!gone[i])
                    model[kept++] = model[i];
            n = kept;
            (void)pos;
        } else if (op < 6) { /* remove one item by position */
            int pos = rand() % n;
            snprintf(args, sizeof args,
                     "{\"id\": \"%s\", \"body\": {\"tracks\": [{\"id\": \"t%d\", \"positions\": "
                     "[%d]}]}}",
                     pid, model[pos], pos);
            s_ok(s_call("owner", "playlist.items_remove", "%s", args), 200);
            memmove(model + pos, model + pos + 1, (size_t)(n - pos - 1) * sizeof *model);
            n--;
        } else if (op < 7) { /* remove every occurrence of a track */
            int t = rand() % 12, kept = 0;
            snprintf(args, sizeof args,
                     "{\"id\": \"%s\", \"body\": {\"tracks\": [{\"id\": \"t%d\"}]}}", pid, t);
            s_ok(s_call("owner", "playlist.items_remove", "%s", args), 200);
            for (int i = 0; i < n; i++)
                if (model[i] != t)
                    model[kept++] = model[i];
            n = kept;
        } else { /* move a range */
            int start = rand() % n, len = 1 + rand() % (n - start), before = rand() % (n + 1);
            snprintf(args, sizeof args,
                     "{\"id\": \"%s\", \"body\": {\"range_start\": %d, \"range_length\": %d, "
                     "\"insert_before\": %d}}",
                     pid, start, len, before);
            s_ok(s_call("owner", "playlist.items_reorder", "%s", args), 200);
            if (before < start || before > start + len) {
                int tmp[400];
                memcpy(tmp, model + start, (size_t)len * sizeof *model);
                if (before < start) {
                    memmove(model + before + len, model + before,
                            (size_t)(start - before) * sizeof *model);
                    memcpy(model + before, tmp, (size_t)len * sizeof *model);
                } else {
                    memmove(model + start, model + start + len,
                            (size_t)(before - start - len) * sizeof *model);
                    memcpy(model + before - len, tmp, (size_t)len * sizeof *model);
                }
            }
        }
        char want[4096];
        size_t wl = 0;
        want[0] = '\0';
        for (int i = 0; i < n; i++)
            wl += (size_t)snprintf(want + wl, sizeof want - wl, "%st%d", i ? " " : "", model[i]);
        char *got = s_order("owner", pid);
        cr_assert_str_eq(got, want, "after step %d (op %d)", step, op);
        free(got);
    }
}

/*  The directory and chunk codecs refuse what they did not write. */
Test(playlists, codecs_refuse_malformed_values)
{
    playlists_dir_t dir = {0};
    uint8_t bad_dir[] = {1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 1};
    cr_assert_eq(playlists_dir_decode(bad_dir, sizeof bad_dir, &dir), MB_EPROTO,
                 "chunk number not below next_no");
    bad_dir[0] = 2;
    cr_assert_eq(playlists_dir_decode(bad_dir, sizeof bad_dir, &dir), MB_EPROTO, "format");
    cr_assert_eq(playlists_dir_decode(bad_dir, 5, &dir), MB_EPROTO, "short");
    playlists_dir_release(&dir);
    playlists_items_t items = {0};
    uint8_t chunk[] = {2, 't', '1', 1, 'u', 0, 0, 0, 0, 0, 0, 0, 1};
    cr_assert_eq(playlists_chunk_decode(chunk, sizeof chunk, 1, &items), 0);
    cr_assert_str_eq(items.v[0].track, "t1");
    cr_assert_eq(items.v[0].added_at, 1);
    cr_assert_eq(playlists_chunk_decode(chunk, sizeof chunk, 2, &items), MB_EPROTO, "count");
    cr_assert_eq(playlists_chunk_decode(chunk, sizeof chunk - 1, 1, &items), MB_EPROTO, "cut");
    chunk[0] = 0;
    cr_assert_eq(playlists_chunk_decode(chunk, sizeof chunk, 1, &items), MB_EPROTO, "empty id");
    playlists_items_release(&items);
}

/* ---- two writers at once
 * -------------------------------------------------------------------------------- */

/*  One call from a writer child: no Criterion assertion may run there
    (they talk to the runner, which only knows its direct children), so
    this reports failures as -1. Returns the reply's status and copies
    body.snapshot_id (when there is one) into snap[32]. */
static int s_child_call(const char *op, const char *args_text, char *snap)
{
    json_t *args = json_loads(args_text, 0, NULL);
    if (!args)
        return -1;
    msgpack_sbuffer req, out;
    msgpack_sbuffer_init(&req);
    msgpack_sbuffer_init(&out);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    mb_request_pack_head(&pk, op, 1, 1000, 2); /* a child process: any rid */
    mb_jwt_claims_t claims = {.roles = MB_ROLE_USER};
    snprintf(claims.sub, sizeof claims.sub, "owner");
    mb_pack_cstr(&pk, "auth");
    mb_jwt_pack_auth(&pk, &claims);
    mb_pack_cstr(&pk, "args");
    th_pack_json(&pk, args);
    json_decref(args);
    mb_actor_dispatch(&th_def, th_env, th_state, req.data, req.size, &out);
    mb_reply_t rep;
    const char *why, *sid;
    size_t len;
    int status = -1;
    if (mb_reply_decode(&rep, out.data, out.size, &why) == 0) {
        status = rep.status;
        if (rep.body && mb_obj_str(mb_map_get(rep.body, "snapshot_id"), &sid, &len) && len < 32) {
            memcpy(snap, sid, len);
            snap[len] = '\0';
        }
        mb_reply_release(&rep);
    }
    msgpack_sbuffer_destroy(&out);
    msgpack_sbuffer_destroy(&req);
    return status;
}

/*  Runs `n` adds of tracks <prefix>0.. one at a time in a child process
    with an environment of its own (as a second worker process would),
    optionally with If-Match and retrying on 412. Exits 0 when all
    landed; writes the 412 count to `fd`. */
static void s_writer(const char *pid, const char *prefix, int n, bool if_match, int fd)
{
    if (mb_actor_open_env(&th_def, th_dir, &th_env) != 0 || th_def.open(th_env, &th_state) != 0)
        _exit(2);
    int refused = 0;
    for (int i = 0; i < n; i++) {
        for (;;) {
            char args[256], snap[32] = "";
            if (if_match) {
                snprintf(args, sizeof args, "{\"id\": \"%s\"}", pid);
                if (s_child_call("playlist.get", args, snap) != 200)
                    _exit(3);
                snprintf(args, sizeof args,
                         "{\"id\": \"%s\", \"if_match\": \"%s\", \"body\": {\"ids\": "
                         "[\"%s%d\"]}}",
                         pid, snap, prefix, i);
            } else
                snprintf(args, sizeof args, "{\"id\": \"%s\", \"body\": {\"ids\": [\"%s%d\"]}}",
                         pid, prefix, i);
            int status = s_child_call("playlist.items_add", args, snap);
            if (status == 201)
                break;
            if (status != 412)
                _exit(4);
            refused++;
        }
    }
    if (write(fd, &refused, sizeof refused) != sizeof refused)
        _exit(5);
    th_def.close(th_state);
    mdb_env_close(th_env);
    _exit(0);
}

/*  Starts two writer processes on the same playlist and waits for both.
    Returns the number of 412s they got. */
static int s_race(const char *pid, int n, bool if_match)
{
    char id[64];
    snprintf(id, sizeof id, "%s", pid); /* kept JSON may go with the environment */
    pid = id;
    s_close_env(); /* the children open their own, like separate workers */
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t child[2];
    for (int c = 0; c < 2; c++) {
        child[c] = fork();
        cr_assert_neq(child[c], -1);
        if (child[c] == 0)
            s_writer(pid, c == 0 ? "a" : "b", n, if_match, fds[1]);
    }
    close(fds[1]);
    int refused = 0;
    for (int c = 0; c < 2; c++) {
        int status, r = 0;
        cr_assert_eq(waitpid(child[c], &status, 0), child[c]);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer %d failed (exit %d)", c,
                  WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        cr_assert_eq(read(fds[0], &r, sizeof r), (ssize_t)sizeof r);
        refused += r;
    }
    close(fds[0]);
    s_open_env(true);
    return refused;
}

/*  Each writer's tracks appear once each and in its own order. */
static void s_expect_interleaving(const char *pid, int n, int expected_total)
{
    char *order = s_order("owner", pid);
    int next[2] = {0, 0}, total = 0;
    for (char *tok = strtok(order, " "); tok; tok = strtok(NULL, " ")) {
        int w = tok[0] == 'a' ? 0 : 1, i = atoi(tok + 1);
        cr_assert_eq(i, next[w], "writer %c: item %d where %d was due", tok[0], i, next[w]);
        next[w]++;
        total++;
    }
    free(order);
    cr_assert_eq(next[0], n);
    cr_assert_eq(next[1], n);
    cr_assert_eq(total, expected_total);
}

Test(playlists, two_writers_racing_lose_nothing)
{
    s_tracks("a", 150);
    s_tracks("b", 150);
    const char *pid = s_create("owner", true, false);
    int refused = s_race(pid, 150, false);
    cr_assert_eq(refused, 0);
    s_expect_interleaving(pid, 150, 300);
    th_reply_t r = s_ok(s_call("owner", "playlist.get", "{\"id\": \"%s\"}", pid), 200);
    cr_assert_eq(th_int(r.body, "items_total"), 300);
}

Test(playlists, two_writers_with_if_match_retry_until_they_land)
{
    s_tracks("a", 100);
    s_tracks("b", 100);
    const char *pid = s_create("owner", true, false);
    int refused = s_race(pid, 100, true);
    cr_log_info("two writers with If-Match: %d of 200 writes got 412 and retried", refused);
    s_expect_interleaving(pid, 100, 200);
}
