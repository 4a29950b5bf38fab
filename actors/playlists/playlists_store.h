/*  playlists_store — the playlists actor's LMDB databases: playlist
    records, their items in chunks, who follows what, the users' libraries
    (liked tracks, saved albums, followed artists) and the local copy of
    what the catalog knows (fed by its events).

    Every function works inside the caller's transaction, so a handler
    makes all its changes in one write transaction and commits or aborts
    it as a whole: LMDB has one writer at a time across every worker
    process, which is what makes concurrent writers never lose each
    other's changes. Functions return 0 or an LMDB result code
    (MDB_NOTFOUND, MDB_MAP_FULL, MDB_CORRUPTED for a stored value that
    does not decode, ...), which the caller hands to mb_call_db_error()
    when it is not an expected outcome. Key layout: README.md. */
#ifndef PLAYLISTS_STORE_H
#define PLAYLISTS_STORE_H

#include <lmdb.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mb_events.h"
#include "playlists_items.h"
#include "playlists_model.h"

/*  Named databases this module opens: give mb_actor_def_t.max_dbs at
    least this. */
#define PLAYLISTS_STORE_DBS 8

/*  Items per chunk, at most: a write rewrites the chunks it touches, so
    smaller chunks make one-track writes cheaper and big moves dearer
    (README.md has the measurements behind 256). Chunks written hold at
    least a quarter of it unless the playlist is smaller. */
#define PLAYLISTS_CHUNK_MAX 256

typedef struct playlists_store playlists_store_t;

/*  What a library entry or a catalog record is. The values are the key
    prefix bytes. */
typedef enum {
    PLAYLISTS_TRACK = 't',
    PLAYLISTS_ALBUM = 'a',
    PLAYLISTS_ARTIST = 'r',
} playlists_kind_t;

/*  Opens (creating) the databases in a write transaction of its own.
    Returns 0 with *self_p, or an LMDB result code (logged). */
int playlists_store_open(MDB_env *env, playlists_store_t **self_p);

/*  Frees the handle (the databases stay open in the environment); nulls
 *self_p. Safe to call twice. */
void playlists_store_destroy(playlists_store_t **self_p);

/*  Sets the chunk size for later writes (1..PLAYLISTS_ITEMS_MAX; chunks
    already stored stay as they are and remain readable). For the
    write-cost measurements: PLAYLISTS_ITEMS_MAX stores each playlist as
    one value. Not thread-safe: call before serving. */
void playlists_store_set_chunk_max(playlists_store_t *self, size_t chunk_max);

/*  The chunk size writes use: positions closer than this share at most
    two chunks. */
size_t playlists_store_chunk_max(const playlists_store_t *self);

/* ---- playlists ----------------------------------------------------------------- */

/*  Reads playlist `id` into *p. Returns 0, MDB_NOTFOUND, MDB_CORRUPTED. */
int playlists_store_get(playlists_store_t *self, MDB_txn *txn, playlists_str_t id,
                        playlists_playlist_t *p);

/*  Writes (replacing) the record of p->id. */
int playlists_store_put(playlists_store_t *self, MDB_txn *txn, const playlists_playlist_t *p);

/*  Deletes playlist p->id with everything that hangs on it: its items,
    and its followers' follow entries (their lists lose it). */
int playlists_store_delete(playlists_store_t *self, MDB_txn *txn, const playlists_playlist_t *p);

/* ---- items ----------------------------------------------------------------------- */

/*  The chunks of a playlist that one write touches, loaded as one array.
    Edit `items` (positions relative to `first`), then save. */
typedef struct {
    playlists_dir_t dir;     /* the playlist's directory, as loaded */
    size_t c0, c1;           /* chunk entries [c0, c1) are in items */
    uint64_t first;          /* playlist position of items.v[0] */
    playlists_items_t items; /* the loaded items */
} playlists_window_t;

/*  Loads the chunks holding positions [from, to) of playlist `id` into a
    window (zeroed by the caller). With from == to, the chunk where an
    insert at `from` goes (the last one for from == total). Returns 0 or
    an LMDB code; release the window either way. */
int playlists_store_window_open(playlists_store_t *self, MDB_txn *txn, playlists_str_t id,
                                uint64_t from, uint64_t to, playlists_window_t *w);

/*  Writes the window's items back in place of the chunks it was loaded
    from, re-chunked (absorbing a neighbour chunk first when too few
    items are left), and the directory. Sets *total (may be NULL) to the
    playlist's new item count. */
int playlists_store_window_save(playlists_store_t *self, MDB_txn *txn, playlists_str_t id,
                                playlists_window_t *w, uint64_t *total);

/*  Frees what the window holds. Safe twice. */
void playlists_window_release(playlists_window_t *w);

/*  Called with each item of a page and its position; returns 0 to go on,
    anything else to stop (returned by playlists_store_items_each). The
    view borrows from the map: valid until the transaction writes or ends. */
typedef int(playlists_item_fn)(void *arg, uint64_t pos, const playlists_item_view_t *item);

/*  Calls `each` for items offset .. offset+limit-1 of playlist `id`, in
    order (fewer at the end). Returns 0, what `each` returned, or an LMDB
    code. */
int playlists_store_items_each(playlists_store_t *self, MDB_txn *txn, playlists_str_t id,
                               uint64_t offset, uint64_t limit, playlists_item_fn *each, void *arg);

/* ---- follows ------------------------------------------------------------------------ */

/*  Makes `user` follow playlist `pid` (at time `ms`); *changed is false
    when they already did. */
int playlists_store_follow(playlists_store_t *self, MDB_txn *txn, playlists_str_t pid,
                           playlists_str_t user, int64_t ms, bool *changed);

/*  Ends `user`'s follow of `pid`; *changed is false when there was none. */
int playlists_store_unfollow(playlists_store_t *self, MDB_txn *txn, playlists_str_t pid,
                             playlists_str_t user, bool *changed);

/*  Sets *yes when `user` follows `pid`. */
int playlists_store_follows(playlists_store_t *self, MDB_txn *txn, playlists_str_t pid,
                            playlists_str_t user, bool *yes);

/*  Sets *count to the number of followers of `pid` (its owner included). */
int playlists_store_followers(playlists_store_t *self, MDB_txn *txn, playlists_str_t pid,
                              size_t *count);

/*  Called for each id of a listing with when it was added (ms); returns
    0 to go on, anything else to stop. `id` borrows from the map. */
typedef int(playlists_id_fn)(void *arg, playlists_str_t id, int64_t added_ms);

/*  Calls `each` for every playlist `user` follows (owned ones included),
    most recently followed first. */
int playlists_store_user_playlists(playlists_store_t *self, MDB_txn *txn, playlists_str_t user,
                                   playlists_id_fn *each, void *arg);

/* ---- library --------------------------------------------------------------------------- */

/*  Adds `id` to `user`'s library of `kind` at time `stamp` (ms * 64 + a
    tie-breaker below 64, so the ids of one batch list in the order
    given); *changed is false when it was there (its time is kept). */
int playlists_store_library_add(playlists_store_t *self, MDB_txn *txn, playlists_kind_t kind,
                                playlists_str_t user, playlists_str_t id, uint64_t stamp,
                                bool *changed);

/*  Removes `id`; *changed is false when it was not there. */
int playlists_store_library_remove(playlists_store_t *self, MDB_txn *txn, playlists_kind_t kind,
                                   playlists_str_t user, playlists_str_t id, bool *changed);

/*  Sets *yes when `id` is in the library. */
int playlists_store_library_contains(playlists_store_t *self, MDB_txn *txn, playlists_kind_t kind,
                                     playlists_str_t user, playlists_str_t id, bool *yes);

/*  Sets *count to the size of the library. */
int playlists_store_library_count(playlists_store_t *self, MDB_txn *txn, playlists_kind_t kind,
                                  playlists_str_t user, size_t *count);

/*  Calls `each` for entries offset .. offset+limit-1, newest first. */
int playlists_store_library_page(playlists_store_t *self, MDB_txn *txn, playlists_kind_t kind,
                                 playlists_str_t user, size_t offset, size_t limit,
                                 playlists_id_fn *each, void *arg);

/* ---- what the catalog knows ------------------------------------------------------------ */

/*  Sets *usable when the catalog has published `id` of `kind` and it is
    neither deleted nor unavailable: what may be added to a playlist or
    a library. */
int playlists_store_catalog_usable(playlists_store_t *self, MDB_txn *txn, playlists_kind_t kind,
                                   playlists_str_t id, bool *usable);

/*  Packs what the local catalog copy has about `id`: a map {id, uri
    (tracks), title or name, artist_ids, album_id, duration_ms (tracks),
    available}; an id the catalog never published packs as {id, uri?,
    available: false}. */
int playlists_store_catalog_pack(playlists_store_t *self, MDB_txn *txn, playlists_kind_t kind,
                                 playlists_str_t id, msgpack_packer *pk);

/*  Applies one catalog event (topic catalog.track, catalog.album or
    catalog.artist; data {action, id, object}). created/updated store the
    object's title (name), artist_ids, album_id, duration_ms and
    `available` (absent: true), unless the stored copy is newer
    (updated_at) or deleted; deleted marks it deleted for good (items and
    library entries stay and read as unavailable). Returns 0, MB_EINVAL
    with *why for a malformed event, or an LMDB code. */
int playlists_store_apply_catalog(playlists_store_t *self, MDB_txn *txn, const mb_event_t *event,
                                  const char **why);

#endif
