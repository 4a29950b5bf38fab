/*  playlists_library — the user's library: liked tracks (/v1/me/tracks),
    saved albums (/v1/me/albums) and followed artists (/v1/me/following
    ?type=artist). The three behave alike, so one function per verb takes
    the kind; the handlers in the op table pick it.

    Saving checks each id against the local copy of the catalog (it must
    be published and available); removing and asking never do, so an id
    the catalog deleted can still be removed. A batch changes what it can
    in one transaction and publishes one playlists.library event listing
    the ids that actually changed (none: no event). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_alloc.h"
#include "mb_msgpack.h"
#include "playlists.h"
#include "playlists_call.h"
#include "playlists_store.h"

#define PLAYLISTS_TOPIC_LIBRARY "playlists.library"

typedef struct {
    playlists_kind_t kind;
    const char *plural;   /* the event's kind: tracks, albums, artists */
    const char *singular; /* the key of each listed item: track, album, artist */
    const char *base;     /* the listing's URL */
} s_library_t;

static const s_library_t s_tracks = {PLAYLISTS_TRACK, "tracks", "track", "/v1/me/tracks"};
static const s_library_t s_albums = {PLAYLISTS_ALBUM, "albums", "album", "/v1/me/albums"};
static const s_library_t s_artists = {PLAYLISTS_ARTIST, "artists", "artist",
                                      "/v1/me/following?type=artist"};

/*  /v1/me/following serves artists only for now: args.type must say so. */
static bool s_type_artist(mb_call_t *call)
{
    const msgpack_object *type = mb_call_arg(call, "type");
    if (type && mb_obj_str_eq(type, "artist"))
        return true;
    mb_call_error(call, 400, "invalid", "type", "type must be artist");
    return false;
}

/*  Adds the playlists.library event {user, kind, action, ids} for the
    n ids of `changed`. */
static bool s_event(mb_call_t *call, MDB_txn *txn, const s_library_t *lib, playlists_str_t user,
                    const char *action, const playlists_str_t *changed, size_t n)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    mb_pack_cstr(&pk, "user");
    playlists_pack_str(&pk, user);
    mb_pack_cstr(&pk, "kind");
    mb_pack_cstr(&pk, lib->plural);
    mb_pack_cstr(&pk, "action");
    mb_pack_cstr(&pk, action);
    mb_pack_cstr(&pk, "ids");
    msgpack_pack_array(&pk, n);
    for (size_t i = 0; i < n; i++)
        playlists_pack_str(&pk, changed[i]);
    bool ok = playlists_call_event(call, txn, PLAYLISTS_TOPIC_LIBRARY, user, &buf);
    msgpack_sbuffer_destroy(&buf);
    return ok;
}

/*  Saves (add) or removes the ids of the request. */
static void s_change(mb_call_t *call, const s_library_t *lib, bool add)
{
    playlists_str_t user, ids[PLAYLISTS_BATCH_MAX], changed[PLAYLISTS_BATCH_MAX];
    size_t n, n_changed = 0;
    const char *field;
    MDB_txn *txn;
    if (!playlists_call_user(call, &user) || !playlists_call_ids(call, ids, &n, &field) ||
        !(txn = mb_call_begin(call, true)))
        return;
    playlists_store_t *store = playlists_call_store(call);
    uint64_t now = (uint64_t)playlists_now_ms();
    for (size_t i = 0; i < n; i++) {
        bool usable = true, did;
        int rc = 0;
        if (add)
            rc = playlists_store_catalog_usable(store, txn, lib->kind, ids[i], &usable);
        if (rc == 0 && !usable) {
            mdb_txn_abort(txn);
            char f[48];
            snprintf(f, sizeof f, "%s[%zu]", field, i);
            mb_call_error(call, 400, "invalid", f, "no available %s with id %.*s in the catalog",
                          lib->singular, (int)ids[i].len, ids[i].ptr);
            return;
        }
        /* The ids of one batch share a millisecond; the tie-breaker lists
           the first given first (newest first order). */
        if (rc == 0)
            rc = add ? playlists_store_library_add(store, txn, lib->kind, user, ids[i],
                                                   now * 64 + (63 - i), &did)
                     : playlists_store_library_remove(store, txn, lib->kind, user, ids[i], &did);
        if (rc) {
            mb_call_abort(call, txn, rc);
            return;
        }
        if (did)
            changed[n_changed++] = ids[i];
    }
    if (n_changed == 0) {
        msgpack_pack_nil(mb_call_reply(call, 204));
        mdb_txn_abort(txn);
    } else if (s_event(call, txn, lib, user, add ? "added" : "removed", changed, n_changed)) {
        msgpack_pack_nil(mb_call_reply(call, 204));
        playlists_call_commit(call, txn);
    }
}

typedef struct {
    playlists_store_t *store;
    MDB_txn *txn;
    msgpack_packer *pk;
    const s_library_t *lib;
    size_t packed;
} s_page_t;

/*  One entry: {added_at, <track|album|artist>: what the catalog says}. */
static int s_pack_entry(void *arg, playlists_str_t id, int64_t added_ms)
{
    s_page_t *page = arg;
    char at[PLAYLISTS_TIME_MAX + 1];
    playlists_time_format(added_ms, at);
    msgpack_pack_map(page->pk, 2);
    mb_pack_cstr(page->pk, "added_at");
    mb_pack_cstr(page->pk, at);
    mb_pack_cstr(page->pk, page->lib->singular);
    page->packed++;
    return playlists_store_catalog_pack(page->store, page->txn, page->lib->kind, id, page->pk);
}

/*  A page of the library, newest first. */
static void s_list(mb_call_t *call, const s_library_t *lib)
{
    playlists_str_t user;
    size_t limit, offset, total;
    MDB_txn *txn;
    if (!playlists_call_user(call, &user) ||
        !playlists_call_paging(call, PLAYLISTS_PAGE_MAX, &limit, &offset) ||
        !(txn = mb_call_begin(call, false)))
        return;
    playlists_store_t *store = playlists_call_store(call);
    int rc = playlists_store_library_count(store, txn, lib->kind, user, &total);
    if (rc) {
        mb_call_abort(call, txn, rc);
        return;
    }
    size_t n = offset < total ? total - offset : 0;
    if (n > limit)
        n = limit;
    msgpack_packer *pk = mb_call_reply(call, 200);
    msgpack_pack_map(pk, 6);
    mb_pack_cstr(pk, "items");
    msgpack_pack_array(pk, n);
    s_page_t page = {.store = store, .txn = txn, .pk = pk, .lib = lib};
    rc = playlists_store_library_page(store, txn, lib->kind, user, offset, n, s_pack_entry, &page);
    if (rc) {
        mb_call_abort(call, txn, rc);
        return;
    }
    for (; page.packed < n; page.packed++)
        msgpack_pack_nil(pk); /* the count and the entries agree in one snapshot: never */
    playlists_call_pack_paging(pk, lib->base, limit, offset, total);
    mdb_txn_abort(txn);
}

/*  [bool, ...]: whether each id is in the library, in the order asked. */
static void s_contains(mb_call_t *call, const s_library_t *lib)
{
    playlists_str_t user, ids[PLAYLISTS_BATCH_MAX];
    size_t n;
    const char *field;
    MDB_txn *txn;
    if (!playlists_call_user(call, &user) || !playlists_call_ids(call, ids, &n, &field) ||
        !(txn = mb_call_begin(call, false)))
        return;
    msgpack_packer *pk = mb_call_reply(call, 200);
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) {
        bool yes;
        int rc = playlists_store_library_contains(playlists_call_store(call), txn, lib->kind, user,
                                                  ids[i], &yes);
        if (rc) {
            mb_call_abort(call, txn, rc);
            return;
        }
        if (yes)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
    }
    mdb_txn_abort(txn);
}

void playlists_handle_tracks_save(mb_call_t *call)
{
    s_change(call, &s_tracks, true);
}

void playlists_handle_tracks_remove(mb_call_t *call)
{
    s_change(call, &s_tracks, false);
}

void playlists_handle_tracks_list(mb_call_t *call)
{
    s_list(call, &s_tracks);
}

void playlists_handle_tracks_contains(mb_call_t *call)
{
    s_contains(call, &s_tracks);
}

void playlists_handle_albums_save(mb_call_t *call)
{
    s_change(call, &s_albums, true);
}

void playlists_handle_albums_remove(mb_call_t *call)
{
    s_change(call, &s_albums, false);
}

void playlists_handle_albums_list(mb_call_t *call)
{
    s_list(call, &s_albums);
}

void playlists_handle_albums_contains(mb_call_t *call)
{
    s_contains(call, &s_albums);
}

void playlists_handle_following_add(mb_call_t *call)
{
    if (s_type_artist(call))
        s_change(call, &s_artists, true);
}

void playlists_handle_following_remove(mb_call_t *call)
{
    if (s_type_artist(call))
        s_change(call, &s_artists, false);
}

void playlists_handle_following_list(mb_call_t *call)
{
    if (s_type_artist(call))
        s_list(call, &s_artists);
}

void playlists_handle_following_contains(mb_call_t *call)
{
    if (s_type_artist(call))
        s_contains(call, &s_artists);
}
