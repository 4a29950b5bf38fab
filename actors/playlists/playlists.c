/*  musicbus-playlists — playlists, their items, followers and
    collaborators, and each user's library.

    Every write op is one LMDB write transaction: it loads the playlist,
    checks who may do it and the If-Match precondition against the
    snapshot id stored in that same transaction, changes the record and
    the item chunks it touches, adds its event to the outbox and commits.
    LMDB lets one writer in at a time across every worker process, so two
    clients adding tracks at once both land (one after the other), and a
    client sending If-Match gets 412 when anyone changed the playlist
    since it read it. Reads take one read transaction each: a page of
    items is one snapshot.

    The consumer group "playlists" keeps a local copy of what the catalog
    publishes (tracks, albums, artists), so adds are checked against it
    and items read with their title and availability without asking the
    catalog. The library ops are in playlists_library.c. */
#include "playlists.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_alloc.h"
#include "mb_error.h"
#include "mb_id.h"
#include "mb_msgpack.h"
#include "playlists_call.h"
#include "playlists_items.h"
#include "playlists_model.h"
#include "playlists_store.h"

#define PLAYLISTS_SERVICE "playlists"
#define PLAYLISTS_MAX_DBS (PLAYLISTS_STORE_DBS + 4) /* room to grow */
#define PLAYLISTS_MAP_SIZE ((size_t)4 << 30)        /* reserved address space, not disk */
#define PLAYLISTS_GROUP "playlists"
#define PLAYLISTS_CONSUMER_BATCH 200 /* catalog events per transaction: writes wait meanwhile */
#define PLAYLISTS_TOPIC_PLAYLIST "playlists.playlist"
#define PLAYLISTS_TOPIC_FOLLOW "playlists.follow"
#define PLAYLISTS_FIELD_MAX 64 /* "body.tracks[99].positions[9999]" */

static playlists_str_t s_cstr(const char *s)
{
    return (playlists_str_t){s, strlen(s)};
}

static bool s_str_eq(playlists_str_t a, const char *b)
{
    return a.len == strlen(b) && memcmp(a.ptr, b, a.len) == 0;
}

static playlists_store_t *s_store(mb_call_t *call)
{
    return playlists_call_store(call);
}

/* ---- loading and access ----------------------------------------------------------- */

/*  Reads the caller and args.id, begins a transaction and loads the
    playlist into *p. True with *txn open; otherwise answered (401, 400,
    404, LMDB error) with nothing open. */
static bool s_open(mb_call_t *call, bool write, playlists_str_t *user, MDB_txn **txn,
                   playlists_playlist_t *p)
{
    playlists_str_t id;
    if (!playlists_call_user(call, user) ||
        !playlists_id_arg(call, mb_call_arg(call, "id"), "id", &id) ||
        !(*txn = mb_call_begin(call, write)))
        return false;
    int rc = playlists_store_get(s_store(call), *txn, id, p);
    if (rc == 0)
        return true;
    if (rc == MDB_NOTFOUND) {
        mdb_txn_abort(*txn);
        mb_call_error(call, 404, "not_found", NULL, "no playlist with id %.*s", (int)id.len,
                      id.ptr);
    } else
        mb_call_abort(call, *txn, rc);
    return false;
}

static bool s_forbidden(mb_call_t *call, MDB_txn *txn, const char *message)
{
    mdb_txn_abort(txn);
    mb_call_error(call, 403, "forbidden", NULL, "%s", message);
    return false;
}

static bool s_may_read(mb_call_t *call, MDB_txn *txn, const playlists_playlist_t *p,
                       playlists_str_t user)
{
    return playlists_can_read(p, user) ||
           s_forbidden(call, txn,
                       "this playlist is private: only its owner and collaborators see it");
}

static bool s_may_edit(mb_call_t *call, MDB_txn *txn, const playlists_playlist_t *p,
                       playlists_str_t user)
{
    return playlists_can_edit(p, user) ||
           s_forbidden(call, txn,
                       "only the owner, or a collaborator of a collaborative playlist, may "
                       "change its items");
}

static bool s_may_own(mb_call_t *call, MDB_txn *txn, const playlists_playlist_t *p,
                      playlists_str_t user)
{
    return playlists_is_owner(p, user) ||
           s_forbidden(call, txn, "only the playlist's owner may do this");
}

/*  The If-Match precondition (args.if_match, from the HTTP header): true
    when absent or satisfied; otherwise answers 412 (400 when it is not a
    string) and aborts `txn`. */
static bool s_precondition(mb_call_t *call, MDB_txn *txn, const playlists_playlist_t *p)
{
    const msgpack_object *o = mb_call_arg(call, "if_match");
    const char *s;
    size_t len;
    if (!o)
        return true;
    if (!mb_obj_str(o, &s, &len) || len > PLAYLISTS_IF_MATCH_MAX) {
        mdb_txn_abort(txn);
        mb_call_error(call, 400, "invalid", "if_match",
                      "If-Match must be a snapshot id, a list of them, or *");
        return false;
    }
    if (playlists_if_match(s, len, p->snapshot_id))
        return true;
    mdb_txn_abort(txn);
    mb_call_error(call, 412, "precondition_failed", NULL,
                  "the playlist changed: its snapshot_id is now %s", p->snapshot_id);
    return false;
}

/* ---- events ---------------------------------------------------------------------------- */

/*  Adds the playlists.playlist event of a change: `old` is the playlist
    before it (NULL for created/deleted), `change` what changed
    (details, items, collaborators; NULL for created/deleted). False after
    answering and aborting `txn`. */
static bool s_playlist_event(mb_call_t *call, MDB_txn *txn, const char *action,
                             const playlists_playlist_t *p, const playlists_playlist_t *old,
                             const char *change)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 11);
    mb_pack_cstr(&pk, "action");
    mb_pack_cstr(&pk, action);
    mb_pack_cstr(&pk, "id");
    mb_pack_cstr(&pk, p->id);
    mb_pack_cstr(&pk, "owner");
    mb_pack_cstr(&pk, p->owner);
    mb_pack_cstr(&pk, "name");
    mb_pack_cstr(&pk, p->name);
    mb_pack_cstr(&pk, "snapshot_id");
    mb_pack_cstr(&pk, p->snapshot_id);
    mb_pack_cstr(&pk, "items_total");
    msgpack_pack_uint64(&pk, p->items_total);
    mb_pack_cstr(&pk, "public");
    if (p->public_)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    mb_pack_cstr(&pk, "collaborative");
    if (p->collaborative)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    mb_pack_cstr(&pk, "collaborators");
    msgpack_pack_array(&pk, p->n_collaborators);
    for (size_t i = 0; i < p->n_collaborators; i++)
        mb_pack_cstr(&pk, p->collaborators[i]);
    mb_pack_cstr(&pk, "audience");
    playlists_pack_audience(&pk, p, old);
    mb_pack_cstr(&pk, "change");
    if (change)
        mb_pack_cstr(&pk, change);
    else
        msgpack_pack_nil(&pk);
    bool ok = playlists_call_event(call, txn, PLAYLISTS_TOPIC_PLAYLIST, s_cstr(p->id), &buf);
    msgpack_sbuffer_destroy(&buf);
    return ok;
}

/*  Adds the playlists.follow event: {action, playlist, user, owner, public}. */
static bool s_follow_event(mb_call_t *call, MDB_txn *txn, const char *action,
                           const playlists_playlist_t *p, playlists_str_t user)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    mb_pack_cstr(&pk, "action");
    mb_pack_cstr(&pk, action);
    mb_pack_cstr(&pk, "playlist");
    mb_pack_cstr(&pk, p->id);
    mb_pack_cstr(&pk, "user");
    playlists_pack_str(&pk, user);
    mb_pack_cstr(&pk, "owner");
    mb_pack_cstr(&pk, p->owner);
    mb_pack_cstr(&pk, "public");
    if (p->public_)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    bool ok = playlists_call_event(call, txn, PLAYLISTS_TOPIC_FOLLOW, s_cstr(p->id), &buf);
    msgpack_sbuffer_destroy(&buf);
    return ok;
}

/* ---- replies ------------------------------------------------------------------------------ */

typedef struct {
    playlists_store_t *store;
    MDB_txn *txn;
    msgpack_packer *pk;
    size_t packed;
} s_items_page_t;

/*  One item as answered: {added_at, added_by, track}. */
static int s_pack_item(void *arg, uint64_t pos, const playlists_item_view_t *item)
{
    (void)pos;
    s_items_page_t *page = arg;
    char at[PLAYLISTS_TIME_MAX + 1];
    playlists_time_format(item->added_at, at);
    msgpack_pack_map(page->pk, 3);
    mb_pack_cstr(page->pk, "added_at");
    mb_pack_cstr(page->pk, at);
    mb_pack_cstr(page->pk, "added_by");
    playlists_pack_str(page->pk, item->added_by);
    mb_pack_cstr(page->pk, "track");
    int rc = playlists_store_catalog_pack(page->store, page->txn, PLAYLISTS_TRACK, item->track,
                                          page->pk);
    page->packed++;
    return rc;
}

/*  Packs the paging object of items offset..offset+limit-1. Returns 0 or
    an LMDB code (then the caller answers it). */
static int s_pack_items(mb_call_t *call, msgpack_packer *pk, MDB_txn *txn,
                        const playlists_playlist_t *p, size_t limit, size_t offset)
{
    size_t total = p->items_total;
    size_t n = offset < total ? total - offset : 0;
    if (n > limit)
        n = limit;
    msgpack_pack_map(pk, 6);
    mb_pack_cstr(pk, "items");
    msgpack_pack_array(pk, n);
    s_items_page_t page = {.store = s_store(call), .txn = txn, .pk = pk};
    int rc = playlists_store_items_each(s_store(call), txn, s_cstr(p->id), offset, n, s_pack_item,
                                        &page);
    if (rc)
        return rc;
    for (; page.packed < n; page.packed++)
        msgpack_pack_nil(pk); /* keeps the array whole if the chunks ran short: never written */
    char base[PLAYLISTS_LINK_MAX];
    snprintf(base, sizeof base, "/v1/playlists/%s/items", p->id);
    playlists_call_pack_paging(pk, base, limit, offset, total);
    return 0;
}

/*  Packs the playlist as answered, with the first page of its items. */
static int s_pack_playlist(mb_call_t *call, msgpack_packer *pk, MDB_txn *txn,
                           const playlists_playlist_t *p)
{
    size_t followers;
    int rc = playlists_store_followers(s_store(call), txn, s_cstr(p->id), &followers);
    if (rc)
        return rc;
    playlists_playlist_pack_public(pk, p, followers, 1);
    mb_pack_cstr(pk, "items");
    return s_pack_items(call, pk, txn, p, PLAYLISTS_PAGE_DEFAULT, 0);
}

/*  Answers `status` with the playlist, then commits `txn` (write) or
    aborts it (read). */
static void s_answer_playlist(mb_call_t *call, MDB_txn *txn, const playlists_playlist_t *p,
                              int status, bool commit)
{
    int rc = s_pack_playlist(call, mb_call_reply(call, status), txn, p);
    if (rc)
        mb_call_abort(call, txn, rc);
    else if (commit)
        playlists_call_commit(call, txn);
    else
        mdb_txn_abort(txn);
}

/*  Answers `status` with {snapshot_id} and commits (or aborts when
    nothing changed). */
static void s_answer_snapshot(mb_call_t *call, MDB_txn *txn, const playlists_playlist_t *p,
                              int status, bool commit)
{
    msgpack_packer *pk = mb_call_reply(call, status);
    msgpack_pack_map(pk, 1);
    mb_pack_cstr(pk, "snapshot_id");
    mb_pack_cstr(pk, p->snapshot_id);
    if (commit)
        playlists_call_commit(call, txn);
    else
        mdb_txn_abort(txn);
}

/*  Writes the changed playlist `p` (bumped to its next version) with its
    event, answers and commits. `old` is it before the change. */
static void s_save_changed(mb_call_t *call, MDB_txn *txn, playlists_playlist_t *p,
                           const playlists_playlist_t *old, const char *change, bool snapshot_only,
                           int status)
{
    playlists_playlist_bump(p);
    int rc = playlists_store_put(s_store(call), txn, p);
    if (rc) {
        mb_call_abort(call, txn, rc);
        return;
    }
    if (!s_playlist_event(call, txn, "changed", p, old, change))
        return;
    if (snapshot_only)
        s_answer_snapshot(call, txn, p, status, true);
    else
        s_answer_playlist(call, txn, p, status, true);
}

/* ---- playlists ---------------------------------------------------------------------------- */

static void s_handle_playlist_create(mb_call_t *call)
{
    playlists_str_t user;
    playlists_playlist_t *p = mb_malloc(sizeof *p);
    bool changed;
    MDB_txn *txn;
    if (!playlists_call_user(call, &user)) {
        free(p);
        return;
    }
    playlists_playlist_init(p, user);
    if (!playlists_playlist_apply(call, mb_call_arg(call, "body"), p, true, &changed) ||
        !(txn = mb_call_begin(call, true))) {
        free(p);
        return;
    }
    mb_id_new(p->id);
    int rc = playlists_store_put(s_store(call), txn, p);
    if (rc == 0)
        rc = playlists_store_follow(s_store(call), txn, s_cstr(p->id), user, playlists_now_ms(),
                                    &changed);
    if (rc)
        mb_call_abort(call, txn, rc);
    else if (s_playlist_event(call, txn, "created", p, NULL, NULL))
        s_answer_playlist(call, txn, p, 201, true);
    free(p);
}

static void s_handle_playlist_get(mb_call_t *call)
{
    playlists_str_t user;
    MDB_txn *txn;
    playlists_playlist_t *p = mb_malloc(sizeof *p);
    if (s_open(call, false, &user, &txn, p) && s_may_read(call, txn, p, user))
        s_answer_playlist(call, txn, p, 200, false);
    free(p);
}

/*  Details (name, description, public, collaborative): the owner only. */
static void s_handle_playlist_update(mb_call_t *call)
{
    playlists_str_t user;
    MDB_txn *txn;
    playlists_playlist_t *p = mb_malloc(sizeof *p), *old = mb_malloc(sizeof *old);
    bool changed;
    if (s_open(call, true, &user, &txn, p) && s_may_own(call, txn, p, user) &&
        s_precondition(call, txn, p)) {
        *old = *p;
        if (!playlists_playlist_apply(call, mb_call_arg(call, "body"), p, false, &changed))
            mdb_txn_abort(txn);
        else if (!changed)
            s_answer_playlist(call, txn, p, 200, false);
        else
            s_save_changed(call, txn, p, old, "details", false, 200);
    }
    free(old);
    free(p);
}

/*  The owner deletes the playlist; anyone else unfollows it. */
static void s_handle_playlist_delete(mb_call_t *call)
{
    playlists_str_t user;
    MDB_txn *txn;
    playlists_playlist_t *p = mb_malloc(sizeof *p);
    if (!s_open(call, true, &user, &txn, p)) {
        free(p);
        return;
    }
    bool changed = true;
    int rc;
    if (playlists_is_owner(p, user)) {
        if (!s_precondition(call, txn, p)) {
            free(p);
            return;
        }
        if ((rc = playlists_store_delete(s_store(call), txn, p)) != 0)
            mb_call_abort(call, txn, rc);
        else if (s_playlist_event(call, txn, "deleted", p, NULL, NULL)) {
            msgpack_pack_nil(mb_call_reply(call, 204));
            playlists_call_commit(call, txn);
        }
    } else if ((rc = playlists_store_unfollow(s_store(call), txn, s_cstr(p->id), user, &changed)) !=
               0)
        mb_call_abort(call, txn, rc);
    else if (!changed) {
        msgpack_pack_nil(mb_call_reply(call, 204));
        mdb_txn_abort(txn);
    } else if (s_follow_event(call, txn, "unfollowed", p, user)) {
        msgpack_pack_nil(mb_call_reply(call, 204));
        playlists_call_commit(call, txn);
    }
    free(p);
}

/* ---- listings ---------------------------------------------------------------------------------
 */

typedef struct {
    mb_call_t *call;
    MDB_txn *txn;
    msgpack_packer *pk; /* into a buffer of its own: the count comes first */
    playlists_str_t viewer;
    bool self; /* the viewer lists their own playlists */
    size_t offset, limit;
    size_t total; /* visible ones seen */
    size_t packed;
    playlists_playlist_t p;
} s_list_t;

static int s_list_one(void *arg, playlists_str_t id, int64_t added_ms)
{
    (void)added_ms;
    s_list_t *l = arg;
    int rc = playlists_store_get(s_store(l->call), l->txn, id, &l->p);
    if (rc == MDB_NOTFOUND)
        return 0; /* deletes remove follow entries with the playlist: never */
    if (rc)
        return rc;
    if (!(l->self ? playlists_can_read(&l->p, l->viewer) : l->p.public_))
        return 0;
    if (l->total++ < l->offset || l->packed >= l->limit)
        return 0;
    size_t followers;
    if ((rc = playlists_store_followers(s_store(l->call), l->txn, id, &followers)) != 0)
        return rc;
    playlists_playlist_pack_public(l->pk, &l->p, followers, 0);
    l->packed++;
    return 0;
}

/*  Answers the playlists `target` owns or follows, newest first: those
    the caller may read when they are the target, else the public ones. */
static void s_list(mb_call_t *call, playlists_str_t viewer, playlists_str_t target,
                   const char *base)
{
    size_t limit, offset;
    MDB_txn *txn;
    if (!playlists_call_paging(call, PLAYLISTS_PAGE_MAX, &limit, &offset) ||
        !(txn = mb_call_begin(call, false)))
        return;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer tmp;
    msgpack_packer_init(&tmp, &buf, msgpack_sbuffer_write);
    s_list_t *l = mb_calloc(1, sizeof *l);
    *l = (s_list_t){.call = call,
                    .txn = txn,
                    .pk = &tmp,
                    .viewer = viewer,
                    .self =
                        target.len == viewer.len && memcmp(target.ptr, viewer.ptr, viewer.len) == 0,
                    .offset = offset,
                    .limit = limit};
    int rc = playlists_store_user_playlists(s_store(call), txn, target, s_list_one, l);
    if (rc)
        mb_call_abort(call, txn, rc);
    else {
        msgpack_packer *pk = mb_call_reply(call, 200);
        msgpack_pack_map(pk, 6);
        mb_pack_cstr(pk, "items");
        msgpack_pack_array(pk, l->packed);
        if (buf.size)
            mb_pack_raw(pk, buf.data, buf.size);
        playlists_call_pack_paging(pk, base, limit, offset, l->total);
        mdb_txn_abort(txn);
    }
    free(l);
    msgpack_sbuffer_destroy(&buf);
}

static void s_handle_playlists_mine(mb_call_t *call)
{
    playlists_str_t user;
    if (playlists_call_user(call, &user))
        s_list(call, user, user, "/v1/me/playlists");
}

static void s_handle_playlists_of_user(mb_call_t *call)
{
    playlists_str_t user, target;
    char base[PLAYLISTS_LINK_MAX];
    if (!playlists_call_user(call, &user) ||
        !playlists_id_arg(call, mb_call_arg(call, "id"), "id", &target))
        return;
    snprintf(base, sizeof base, "/v1/users/%.*s/playlists", (int)target.len, target.ptr);
    s_list(call, user, target, base);
}

/* ---- items
 * --------------------------------------------------------------------------------------- */

static void s_handle_items_get(mb_call_t *call)
{
    playlists_str_t user;
    MDB_txn *txn;
    size_t limit, offset;
    if (!playlists_call_paging(call, PLAYLISTS_ITEMS_PAGE_MAX, &limit, &offset))
        return;
    playlists_playlist_t *p = mb_malloc(sizeof *p);
    if (s_open(call, false, &user, &txn, p) && s_may_read(call, txn, p, user)) {
        int rc = s_pack_items(call, mb_call_reply(call, 200), txn, p, limit, offset);
        if (rc)
            mb_call_abort(call, txn, rc);
        else
            mdb_txn_abort(txn);
    }
    free(p);
}

static bool s_bad_field(mb_call_t *call, const char *field, const char *message)
{
    mb_call_error(call, 400, "invalid", field, "%s", message);
    return false;
}

/*  Names an unknown key of a body map in the error. */
static bool s_unknown_key(mb_call_t *call, const char *where, const msgpack_object *key,
                          const char *allowed)
{
    char field[PLAYLISTS_FIELD_MAX + 80];
    const char *s;
    size_t len;
    if (mb_obj_str(key, &s, &len) && playlists_id_valid(s, len))
        snprintf(field, sizeof field, "%s.%.*s", where, (int)len, s);
    else
        snprintf(field, sizeof field, "%s", where);
    mb_call_error(call, 400, "invalid", field, "%s may hold only %s", where, allowed);
    return false;
}

/*  The tracks of an add: body {uris | ids, position?}. */
typedef struct {
    playlists_str_t ids[PLAYLISTS_ADD_MAX];
    size_t n;
    const char *list; /* "body.uris" or "body.ids", for errors about one */
    int64_t position; /* -1: at the end */
} s_add_t;

static bool s_add_body(mb_call_t *call, s_add_t *a)
{
    const msgpack_object *body = mb_call_arg(call, "body"), *list = NULL;
    a->position = -1;
    if (!body || body->type != MSGPACK_OBJECT_MAP)
        return s_bad_field(call, "body", "body must be a JSON object");
    bool uri = false;
    for (uint32_t i = 0; i < body->via.map.size; i++) {
        const msgpack_object *k = &body->via.map.ptr[i].key, *v = &body->via.map.ptr[i].val;
        if (mb_obj_str_eq(k, "uris") || mb_obj_str_eq(k, "ids")) {
            if (list)
                return s_bad_field(call, "body", "give either uris or ids, not both");
            list = v;
            uri = mb_obj_str_eq(k, "uris");
        } else if (mb_obj_str_eq(k, "position")) {
            if (!mb_obj_int(v, &a->position) || a->position < 0 ||
                a->position > PLAYLISTS_ITEMS_MAX)
                return s_bad_field(call, "body.position",
                                   "position must be an integer from 0 to 10000");
        } else
            return s_unknown_key(call, "body", k, "uris or ids, and position");
    }
    a->list = uri ? "body.uris" : "body.ids";
    if (!list)
        return s_bad_field(call, "body.uris", "give the tracks to add as uris or ids");
    if (list->type != MSGPACK_OBJECT_ARRAY || list->via.array.size == 0 ||
        list->via.array.size > PLAYLISTS_ADD_MAX) {
        mb_call_error(call, 400, "invalid", a->list, "%s must be a list of 1 to %d tracks", a->list,
                      PLAYLISTS_ADD_MAX);
        return false;
    }
    a->n = list->via.array.size;
    for (size_t i = 0; i < a->n; i++)
        if (!playlists_track_ref(&list->via.array.ptr[i], uri, &a->ids[i])) {
            char field[PLAYLISTS_FIELD_MAX];
            snprintf(field, sizeof field, "%s[%zu]", a->list, i);
            mb_call_error(call, 400, "invalid", field, "%s must be %s", field,
                          uri ? "a track URI: musicbus:track:<id>" : "a track id");
            return false;
        }
    return true;
}

/*  True when every track of the add is one the catalog has and is
    available; otherwise answers 400 naming the first other one and
    aborts `txn`. */
static bool s_tracks_usable(mb_call_t *call, MDB_txn *txn, const s_add_t *a)
{
    for (size_t i = 0; i < a->n; i++) {
        bool usable;
        int rc =
            playlists_store_catalog_usable(s_store(call), txn, PLAYLISTS_TRACK, a->ids[i], &usable);
        if (rc) {
            mb_call_abort(call, txn, rc);
            return false;
        }
        if (!usable) {
            char field[PLAYLISTS_FIELD_MAX];
            snprintf(field, sizeof field, "%s[%zu]", a->list, i);
            mdb_txn_abort(txn);
            mb_call_error(call, 400, "invalid", field,
                          "no available track with id %.*s in the catalog", (int)a->ids[i].len,
                          a->ids[i].ptr);
            return false;
        }
    }
    return true;
}

/*  Saves window `w` after an edit; sets *total to the new item count.
    False after answering the LMDB error (txn aborted). */
static bool s_save_window(mb_call_t *call, MDB_txn *txn, const playlists_playlist_t *p,
                          playlists_window_t *w, uint64_t *total)
{
    int rc = playlists_store_window_save(s_store(call), txn, s_cstr(p->id), w, total);
    if (rc)
        mb_call_abort(call, txn, rc);
    return rc == 0;
}

/*  Opens the window of positions [from, to); false after answering (an
    LMDB error, or chunks that disagree with the record's total). */
static bool s_open_window(mb_call_t *call, MDB_txn *txn, const playlists_playlist_t *p,
                          uint64_t from, uint64_t to, playlists_window_t *w)
{
    int rc = playlists_store_window_open(s_store(call), txn, s_cstr(p->id), from, to, w);
    if (rc == 0 && (w->first > from || w->first + w->items.n < to))
        rc = MDB_CORRUPTED;
    if (rc)
        mb_call_abort(call, txn, rc);
    return rc == 0;
}

/*  After the item chunks were saved: moves the playlist to its next
    version with the new total, answers {snapshot_id} with `status` and
    commits. */
static void s_items_changed(mb_call_t *call, MDB_txn *txn, playlists_playlist_t *p, uint64_t total,
                            int status)
{
    playlists_playlist_t *old = mb_malloc(sizeof *old);
    *old = *p;
    p->items_total = total;
    s_save_changed(call, txn, p, old, "items", true, status);
    free(old);
}

static void s_items_add(mb_call_t *call, playlists_playlist_t *p, const s_add_t *a)
{
    playlists_str_t user;
    MDB_txn *txn;
    if (!s_open(call, true, &user, &txn, p) || !s_may_edit(call, txn, p, user) ||
        !s_precondition(call, txn, p))
        return;
    uint64_t total = p->items_total;
    if (total + a->n > PLAYLISTS_ITEMS_MAX) {
        mdb_txn_abort(txn);
        mb_call_error(call, 409, "playlist_full", a->list,
                      "a playlist holds at most %d items: this one has %llu, %zu more do not fit",
                      PLAYLISTS_ITEMS_MAX, (unsigned long long)total, a->n);
        return;
    }
    uint64_t pos = a->position < 0 ? total : (uint64_t)a->position;
    if (pos > total) {
        mdb_txn_abort(txn);
        mb_call_error(call, 400, "invalid", "body.position",
                      "position %llu is past the end: the playlist has %llu items",
                      (unsigned long long)pos, (unsigned long long)total);
        return;
    }
    if (!s_tracks_usable(call, txn, a))
        return;
    playlists_item_t *add = mb_calloc(a->n, sizeof *add);
    int64_t now = playlists_now_ms();
    for (size_t i = 0; i < a->n; i++) {
        memcpy(add[i].track, a->ids[i].ptr, a->ids[i].len);
        memcpy(add[i].added_by, user.ptr, user.len);
        add[i].added_at = now;
    }
    playlists_window_t w = {0};
    if (s_open_window(call, txn, p, pos, pos, &w)) {
        playlists_items_insert(&w.items, (size_t)(pos - w.first), add, a->n);
        if (s_save_window(call, txn, p, &w, &total))
            s_items_changed(call, txn, p, total, 201);
    }
    playlists_window_release(&w);
    free(add);
}

static void s_handle_items_add(mb_call_t *call)
{
    s_add_t *a = mb_malloc(sizeof *a);
    playlists_playlist_t *p = mb_malloc(sizeof *p);
    if (s_add_body(call, a))
        s_items_add(call, p, a);
    free(p);
    free(a);
}

/*  One entry of a remove: a track, and the positions to remove it from
    (NULL: everywhere it occurs). */
typedef struct {
    playlists_str_t id;
    const msgpack_object *positions;
} s_remove_t;

/*  Reads body {tracks: [{uri | id, positions?}]}; *n entries into r
    (PLAYLISTS_ADD_MAX slots). */
static bool s_remove_body(mb_call_t *call, s_remove_t *r, size_t *n)
{
    const msgpack_object *body = mb_call_arg(call, "body"), *tracks = NULL;
    if (!body || body->type != MSGPACK_OBJECT_MAP)
        return s_bad_field(call, "body", "body must be a JSON object");
    for (uint32_t i = 0; i < body->via.map.size; i++) {
        if (!mb_obj_str_eq(&body->via.map.ptr[i].key, "tracks"))
            return s_unknown_key(call, "body", &body->via.map.ptr[i].key, "tracks");
        tracks = &body->via.map.ptr[i].val;
    }
    if (!tracks || tracks->type != MSGPACK_OBJECT_ARRAY || tracks->via.array.size == 0 ||
        tracks->via.array.size > PLAYLISTS_ADD_MAX)
        return s_bad_field(call, "body.tracks",
                           "tracks must be a list of 1 to 100 {uri or id, positions?}");
    *n = tracks->via.array.size;
    for (size_t i = 0; i < *n; i++) {
        const msgpack_object *t = &tracks->via.array.ptr[i];
        char field[PLAYLISTS_FIELD_MAX];
        snprintf(field, sizeof field, "body.tracks[%zu]", i);
        if (t->type != MSGPACK_OBJECT_MAP)
            return s_bad_field(call, field, "each track must be {uri or id, positions?}");
        bool have = false;
        r[i].positions = NULL;
        for (uint32_t k = 0; k < t->via.map.size; k++) {
            const msgpack_object *key = &t->via.map.ptr[k].key, *v = &t->via.map.ptr[k].val;
            bool uri = mb_obj_str_eq(key, "uri");
            if (uri || mb_obj_str_eq(key, "id")) {
                char f[PLAYLISTS_FIELD_MAX + 8];
                snprintf(f, sizeof f, "%s.%s", field, uri ? "uri" : "id");
                if (have)
                    return s_bad_field(call, field, "give either uri or id, not both");
                if (!playlists_track_ref(v, uri, &r[i].id))
                    return s_bad_field(
                        call, f, uri ? "uri must be musicbus:track:<id>" : "id must be a track id");
                have = true;
            } else if (mb_obj_str_eq(key, "positions")) {
                if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size == 0 ||
                    v->via.array.size > PLAYLISTS_ITEMS_MAX) {
                    char f[PLAYLISTS_FIELD_MAX + 16];
                    snprintf(f, sizeof f, "%s.positions", field);
                    return s_bad_field(call, f, "positions must be a list of 1 to 10000 integers");
                }
                r[i].positions = v;
            } else
                return s_unknown_key(call, field, key, "uri or id, and positions");
        }
        if (!have)
            return s_bad_field(call, field, "each track needs a uri or an id");
        for (uint32_t j = 0; r[i].positions && j < r[i].positions->via.array.size; j++) {
            int64_t pos;
            if (!mb_obj_int(&r[i].positions->via.array.ptr[j], &pos) || pos < 0 ||
                pos >= PLAYLISTS_ITEMS_MAX) {
                char f[PLAYLISTS_FIELD_MAX + 32];
                snprintf(f, sizeof f, "%s.positions[%u]", field, j);
                return s_bad_field(call, f, "a position is an integer from 0 to 9999");
            }
        }
    }
    return true;
}

/*  One item to remove: its position, the track expected there, and
    where the request named it (entry -1: found by looking for a track
    to remove wherever it is). */
typedef struct {
    uint64_t pos;
    playlists_str_t id;
    int entry;
    uint32_t index;
} s_target_t;

typedef struct {
    s_target_t *v;
    size_t n, cap;
    const s_remove_t *r; /* the entries, for the scan */
    size_t n_r;
} s_targets_t;

static void s_target_push(s_targets_t *t, s_target_t target)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        t->v = mb_realloc(t->v, t->cap * sizeof *t->v);
    }
    t->v[t->n++] = target;
}

/*  Scan callback: targets every item whose track an entry without
    positions names. */
static int s_scan_one(void *arg, uint64_t pos, const playlists_item_view_t *item)
{
    s_targets_t *t = arg;
    for (size_t i = 0; i < t->n_r; i++)
        if (!t->r[i].positions && item->track.len == t->r[i].id.len &&
            memcmp(item->track.ptr, t->r[i].id.ptr, item->track.len) == 0) {
            s_target_push(t, (s_target_t){pos, t->r[i].id, -1, 0});
            break;
        }
    return 0;
}

static int s_target_cmp(const void *a, const void *b)
{
    const s_target_t *x = a, *y = b;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/*  Collects what the entries remove: each named position (400 when past
    the end), and every occurrence of the tracks named without positions
    (one read of the whole playlist). Sorted by position. False after
    answering (txn aborted). */
static bool s_collect_targets(mb_call_t *call, MDB_txn *txn, const playlists_playlist_t *p,
                              const s_remove_t *r, size_t n, s_targets_t *t)
{
    bool everywhere = false;
    t->r = r;
    t->n_r = n;
    for (size_t i = 0; i < n; i++) {
        everywhere |= !r[i].positions;
        for (uint32_t j = 0; r[i].positions && j < r[i].positions->via.array.size; j++) {
            int64_t pos;
            mb_obj_int(&r[i].positions->via.array.ptr[j], &pos);
            if ((uint64_t)pos >= p->items_total) {
                char f[PLAYLISTS_FIELD_MAX + 32];
                snprintf(f, sizeof f, "body.tracks[%zu].positions[%u]", i, j);
                mdb_txn_abort(txn);
                mb_call_error(call, 400, "invalid", f,
                              "position %lld is past the end: the playlist has %llu items",
                              (long long)pos, (unsigned long long)p->items_total);
                return false;
            }
            s_target_push(t, (s_target_t){(uint64_t)pos, r[i].id, (int)i, j});
        }
    }
    int rc = everywhere ? playlists_store_items_each(s_store(call), txn, s_cstr(p->id), 0,
                                                     p->items_total, s_scan_one, t)
                        : 0;
    if (rc) {
        mb_call_abort(call, txn, rc);
        return false;
    }
    if (t->n > 1)
        qsort(t->v, t->n, sizeof *t->v, s_target_cmp);
    return true;
}

/*  Removes targets [lo, hi) (sorted, within less than a chunk of each
    other) through one window, checking each names the track there. */
static bool s_remove_cluster(mb_call_t *call, MDB_txn *txn, const playlists_playlist_t *p,
                             const s_target_t *v, size_t lo, size_t hi, uint64_t *total)
{
    playlists_window_t w = {0};
    bool ok = s_open_window(call, txn, p, v[lo].pos, v[hi - 1].pos + 1, &w);
    bool *marked = ok ? mb_calloc(w.items.n, sizeof *marked) : NULL;
    for (size_t i = lo; ok && i < hi; i++) {
        size_t k = (size_t)(v[i].pos - w.first);
        if (!s_str_eq(v[i].id, w.items.v[k].track)) {
            char f[PLAYLISTS_FIELD_MAX + 32];
            snprintf(f, sizeof f, "body.tracks[%d].positions[%u]", v[i].entry, v[i].index);
            mdb_txn_abort(txn);
            mb_call_error(call, 400, "invalid", f, "the item at position %llu is not track %.*s",
                          (unsigned long long)v[i].pos, (int)v[i].id.len, v[i].id.ptr);
            ok = false;
        }
        marked[k] = true;
    }
    if (ok) {
        playlists_items_remove_marked(&w.items, marked);
        ok = s_save_window(call, txn, p, &w, total);
    }
    free(marked);
    playlists_window_release(&w);
    return ok;
}

/*  Removal touches only the chunks holding what goes: targets are taken
    in clusters of positions less than a chunk apart, from the end of the
    playlist back so that the positions still to come do not shift. */
static void s_items_remove(mb_call_t *call, playlists_playlist_t *p, const s_remove_t *r, size_t n)
{
    playlists_str_t user;
    MDB_txn *txn;
    if (!s_open(call, true, &user, &txn, p) || !s_may_edit(call, txn, p, user) ||
        !s_precondition(call, txn, p))
        return;
    s_targets_t t = {0};
    if (s_collect_targets(call, txn, p, r, n, &t)) {
        if (t.n == 0)
            s_answer_snapshot(call, txn, p, 200, false); /* nothing to remove: no new version */
        else {
            uint64_t span = playlists_store_chunk_max(s_store(call)), total = p->items_total;
            bool ok = true;
            for (size_t hi = t.n; ok && hi > 0;) {
                size_t lo = hi - 1;
                while (lo > 0 && t.v[hi - 1].pos - t.v[lo - 1].pos < span)
                    lo--;
                ok = s_remove_cluster(call, txn, p, t.v, lo, hi, &total);
                hi = lo;
            }
            if (ok)
                s_items_changed(call, txn, p, total, 200);
        }
    }
    free(t.v);
}

static void s_handle_items_remove(mb_call_t *call)
{
    s_remove_t *r = mb_malloc(PLAYLISTS_ADD_MAX * sizeof *r);
    playlists_playlist_t *p = mb_malloc(sizeof *p);
    size_t n;
    if (s_remove_body(call, r, &n))
        s_items_remove(call, p, r, n);
    free(p);
    free(r);
}

/*  Body {range_start, insert_before, range_length? (1)}. */
static bool s_reorder_body(mb_call_t *call, int64_t *start, int64_t *before, int64_t *len)
{
    const msgpack_object *body = mb_call_arg(call, "body");
    if (!body || body->type != MSGPACK_OBJECT_MAP)
        return s_bad_field(call, "body", "body must be a JSON object");
    *start = *before = -1;
    *len = 1;
    for (uint32_t i = 0; i < body->via.map.size; i++) {
        const msgpack_object *k = &body->via.map.ptr[i].key, *v = &body->via.map.ptr[i].val;
        int64_t *out;
        const char *field;
        if (mb_obj_str_eq(k, "range_start"))
            out = start, field = "body.range_start";
        else if (mb_obj_str_eq(k, "insert_before"))
            out = before, field = "body.insert_before";
        else if (mb_obj_str_eq(k, "range_length"))
            out = len, field = "body.range_length";
        else
            return s_unknown_key(call, "body", k, "range_start, insert_before and range_length");
        if (!mb_obj_int(v, out) || *out < 0 || *out > PLAYLISTS_ITEMS_MAX)
            return s_bad_field(call, field, "must be an integer from 0 to 10000");
    }
    if (*start < 0)
        return s_bad_field(call, "body.range_start", "range_start is required");
    if (*before < 0)
        return s_bad_field(call, "body.insert_before", "insert_before is required");
    if (*len < 1)
        return s_bad_field(call, "body.range_length", "range_length must be at least 1");
    return true;
}

static void s_items_reorder(mb_call_t *call, playlists_playlist_t *p, uint64_t start,
                            uint64_t before, uint64_t len)
{
    playlists_str_t user;
    MDB_txn *txn;
    if (!s_open(call, true, &user, &txn, p) || !s_may_edit(call, txn, p, user) ||
        !s_precondition(call, txn, p))
        return;
    uint64_t total = p->items_total;
    const char *field = NULL;
    if (start >= total)
        field = "body.range_start";
    else if (start + len > total)
        field = "body.range_length";
    else if (before > total)
        field = "body.insert_before";
    if (field) {
        mdb_txn_abort(txn);
        mb_call_error(call, 400, "invalid", field,
                      "range_start %llu, range_length %llu and insert_before %llu do not fit a "
                      "playlist of %llu items",
                      (unsigned long long)start, (unsigned long long)len,
                      (unsigned long long)before, (unsigned long long)total);
        return;
    }
    if (before >= start && before <= start + len) {
        s_answer_snapshot(call, txn, p, 200, false); /* the items stay where they are */
        return;
    }
    /* A move is a removal then an insert: two windows of the chunks
       holding the range and the destination, whatever lies between. */
    playlists_window_t w = {0};
    playlists_item_t *range = NULL;
    uint64_t target = before > start ? before - len : before;
    if (s_open_window(call, txn, p, start, start + len, &w)) {
        size_t at = (size_t)(start - w.first);
        range = mb_malloc((size_t)len * sizeof *range);
        memcpy(range, w.items.v + at, (size_t)len * sizeof *range);
        memmove(w.items.v + at, w.items.v + at + len, (w.items.n - at - len) * sizeof *range);
        w.items.n -= (size_t)len;
        if (s_save_window(call, txn, p, &w, &total)) {
            playlists_window_release(&w);
            w = (playlists_window_t){0};
            if (s_open_window(call, txn, p, target, target, &w)) {
                playlists_items_insert(&w.items, (size_t)(target - w.first), range, (size_t)len);
                if (s_save_window(call, txn, p, &w, &total))
                    s_items_changed(call, txn, p, total, 200);
            }
        }
    }
    free(range);
    playlists_window_release(&w);
}

static void s_handle_items_reorder(mb_call_t *call)
{
    int64_t start, before, len;
    if (!s_reorder_body(call, &start, &before, &len))
        return;
    playlists_playlist_t *p = mb_malloc(sizeof *p);
    s_items_reorder(call, p, (uint64_t)start, (uint64_t)before, (uint64_t)len);
    free(p);
}

/* ---- followers ---------------------------------------------------------------------------------
 */

static void s_handle_follow(mb_call_t *call)
{
    playlists_str_t user;
    MDB_txn *txn;
    playlists_playlist_t *p = mb_malloc(sizeof *p);
    bool changed;
    if (s_open(call, true, &user, &txn, p) && s_may_read(call, txn, p, user)) {
        int rc = playlists_store_follow(s_store(call), txn, s_cstr(p->id), user, playlists_now_ms(),
                                        &changed);
        if (rc)
            mb_call_abort(call, txn, rc);
        else if (!changed) {
            msgpack_pack_nil(mb_call_reply(call, 204));
            mdb_txn_abort(txn);
        } else if (s_follow_event(call, txn, "followed", p, user)) {
            msgpack_pack_nil(mb_call_reply(call, 204));
            playlists_call_commit(call, txn);
        }
    }
    free(p);
}

/*  Anyone may stop following, even a playlist they may no longer read;
    the owner cannot (they delete it instead). */
static void s_handle_unfollow(mb_call_t *call)
{
    playlists_str_t user;
    MDB_txn *txn;
    playlists_playlist_t *p = mb_malloc(sizeof *p);
    bool changed;
    if (!s_open(call, true, &user, &txn, p)) {
        free(p);
        return;
    }
    int rc;
    if (playlists_is_owner(p, user)) {
        mdb_txn_abort(txn);
        mb_call_error(call, 409, "conflict", NULL,
                      "the owner follows their playlist for as long as it exists: delete it "
                      "instead");
    } else if ((rc = playlists_store_unfollow(s_store(call), txn, s_cstr(p->id), user, &changed)) !=
               0)
        mb_call_abort(call, txn, rc);
    else if (!changed) {
        msgpack_pack_nil(mb_call_reply(call, 204));
        mdb_txn_abort(txn);
    } else if (s_follow_event(call, txn, "unfollowed", p, user)) {
        msgpack_pack_nil(mb_call_reply(call, 204));
        playlists_call_commit(call, txn);
    }
    free(p);
}

/* ---- collaborators
 * ---------------------------------------------------------------------------------- */

/*  Body {user_ids: [1..50 ids]}. */
static bool s_collaborators_body(mb_call_t *call, playlists_str_t *ids, size_t *n)
{
    const msgpack_object *body = mb_call_arg(call, "body"), *list = NULL;
    if (!body || body->type != MSGPACK_OBJECT_MAP)
        return s_bad_field(call, "body", "body must be a JSON object");
    for (uint32_t i = 0; i < body->via.map.size; i++) {
        if (!mb_obj_str_eq(&body->via.map.ptr[i].key, "user_ids"))
            return s_unknown_key(call, "body", &body->via.map.ptr[i].key, "user_ids");
        list = &body->via.map.ptr[i].val;
    }
    if (!list || list->type != MSGPACK_OBJECT_ARRAY || list->via.array.size == 0 ||
        list->via.array.size > PLAYLISTS_BATCH_MAX)
        return s_bad_field(call, "body.user_ids", "user_ids must be a list of 1 to 50 user ids");
    *n = list->via.array.size;
    for (size_t i = 0; i < *n; i++) {
        char field[PLAYLISTS_FIELD_MAX];
        snprintf(field, sizeof field, "body.user_ids[%zu]", i);
        if (!playlists_id_arg(call, &list->via.array.ptr[i], field, &ids[i]))
            return false;
    }
    return true;
}

/*  The owner adds collaborators. They may edit (and read) the playlist
    while it is collaborative. */
static void s_handle_collaborators_add(mb_call_t *call)
{
    playlists_str_t ids[PLAYLISTS_BATCH_MAX], user;
    size_t n;
    MDB_txn *txn;
    if (!s_collaborators_body(call, ids, &n))
        return;
    playlists_playlist_t *p = mb_malloc(sizeof *p), *old = mb_malloc(sizeof *old);
    if (s_open(call, true, &user, &txn, p) && s_may_own(call, txn, p, user) &&
        s_precondition(call, txn, p)) {
        *old = *p;
        bool ok = true;
        for (size_t i = 0; ok && i < n; i++) {
            char field[PLAYLISTS_FIELD_MAX];
            snprintf(field, sizeof field, "body.user_ids[%zu]", i);
            if (playlists_is_owner(p, ids[i])) {
                mb_call_error(call, 400, "invalid", field, "the owner is not a collaborator");
                ok = false;
            } else if (playlists_collaborator_index(p, ids[i]) >= 0)
                continue;
            else if (p->n_collaborators == PLAYLISTS_COLLABORATORS_MAX) {
                mb_call_error(call, 409, "too_many_collaborators", field,
                              "a playlist has at most %d collaborators",
                              PLAYLISTS_COLLABORATORS_MAX);
                ok = false;
            } else {
                memcpy(p->collaborators[p->n_collaborators], ids[i].ptr, ids[i].len);
                p->collaborators[p->n_collaborators++][ids[i].len] = '\0';
            }
        }
        if (!ok)
            mdb_txn_abort(txn);
        else if (p->n_collaborators == old->n_collaborators)
            s_answer_playlist(call, txn, p, 200, false);
        else
            s_save_changed(call, txn, p, old, "collaborators", false, 200);
    }
    free(old);
    free(p);
}

/*  The owner removes collaborators; a collaborator may remove only
    themselves (leaving the playlist). */
static void s_handle_collaborators_remove(mb_call_t *call)
{
    playlists_str_t ids[PLAYLISTS_BATCH_MAX], user;
    size_t n;
    MDB_txn *txn;
    if (!s_collaborators_body(call, ids, &n))
        return;
    playlists_playlist_t *p = mb_malloc(sizeof *p), *old = mb_malloc(sizeof *old);
    if (s_open(call, true, &user, &txn, p) && s_precondition(call, txn, p)) {
        bool self_only = true;
        for (size_t i = 0; i < n; i++)
            self_only &= ids[i].len == user.len && memcmp(ids[i].ptr, user.ptr, user.len) == 0;
        if (playlists_is_owner(p, user) ||
            (self_only && playlists_collaborator_index(p, user) >= 0) ||
            s_forbidden(call, txn,
                        "only the owner may remove collaborators; a collaborator may remove "
                        "themselves")) {
            *old = *p;
            for (size_t i = 0; i < n; i++) {
                int at = playlists_collaborator_index(p, ids[i]);
                if (at < 0)
                    continue;
                memmove(p->collaborators[at], p->collaborators[at + 1],
                        (p->n_collaborators - (size_t)at - 1) * sizeof p->collaborators[0]);
                p->n_collaborators--;
            }
            if (p->n_collaborators == old->n_collaborators)
                s_answer_playlist(call, txn, p, 200, false);
            else
                s_save_changed(call, txn, p, old, "collaborators", false, 200);
        }
    }
    free(old);
    free(p);
}

/* ---- the actor
 * ------------------------------------------------------------------------------------- */

int playlists_apply(MDB_txn *txn, const mb_event_t *event, void *state)
{
    const char *why = "malformed";
    int rc = playlists_store_apply_catalog(state, txn, event, &why);
    if (rc == MB_EINVAL)
        return mb_event_invalid(event, "%s", why);
    return rc > 0 ? MB_EDB : rc; /* an errno from LMDB: transient, retried */
}

static int s_open_hook(MDB_env *env, void **state)
{
    playlists_store_t *store;
    if (playlists_store_open(env, &store) != 0)
        return MB_EDB;
    *state = store;
    return 0;
}

static void s_close_hook(void *state)
{
    playlists_store_t *store = state;
    playlists_store_destroy(&store);
}

static const mb_op_t s_ops[] = {
    {"playlist.create", s_handle_playlist_create},
    {"playlist.get", s_handle_playlist_get},
    {"playlist.update", s_handle_playlist_update},
    {"playlist.delete", s_handle_playlist_delete},
    {"playlists.mine", s_handle_playlists_mine},
    {"playlists.of_user", s_handle_playlists_of_user},
    {"playlist.items", s_handle_items_get},
    {"playlist.items_add", s_handle_items_add},
    {"playlist.items_remove", s_handle_items_remove},
    {"playlist.items_reorder", s_handle_items_reorder},
    {"playlist.follow", s_handle_follow},
    {"playlist.unfollow", s_handle_unfollow},
    {"playlist.collaborators_add", s_handle_collaborators_add},
    {"playlist.collaborators_remove", s_handle_collaborators_remove},
    {"library.tracks_save", playlists_handle_tracks_save},
    {"library.tracks_remove", playlists_handle_tracks_remove},
    {"library.tracks", playlists_handle_tracks_list},
    {"library.tracks_contains", playlists_handle_tracks_contains},
    {"library.albums_save", playlists_handle_albums_save},
    {"library.albums_remove", playlists_handle_albums_remove},
    {"library.albums", playlists_handle_albums_list},
    {"library.albums_contains", playlists_handle_albums_contains},
    {"library.following_add", playlists_handle_following_add},
    {"library.following_remove", playlists_handle_following_remove},
    {"library.following", playlists_handle_following_list},
    {"library.following_contains", playlists_handle_following_contains},
    {NULL, NULL},
};

static const char *const s_topics[] = {"catalog.track", "catalog.album", "catalog.artist", NULL};

static const mb_consumer_def_t s_consumers[] = {
    {.group = PLAYLISTS_GROUP,
     .topics = s_topics,
     .apply = playlists_apply,
     .batch = PLAYLISTS_CONSUMER_BATCH},
    {.group = NULL},
};

static const mb_actor_def_t s_def = {
    .name = PLAYLISTS_SERVICE,
    .ops = s_ops,
    .max_dbs = PLAYLISTS_MAX_DBS,
    .map_size = PLAYLISTS_MAP_SIZE,
    .open = s_open_hook,
    .close = s_close_hook,
    .consumers = s_consumers,
};

const mb_actor_def_t *playlists_actor_def(void)
{
    return &s_def;
}

/*  Tests compile this file with PLAYLISTS_NO_MAIN to reach the handlers
    through playlists_actor_def(). */
#ifndef PLAYLISTS_NO_MAIN
int main(int argc, char **argv)
{
    return mb_actor_main(&s_def, argc, argv);
}
#endif
