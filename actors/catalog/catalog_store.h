/*  catalog_store — the catalog's LMDB databases: records by id, the
    indexes that list an artist's albums and tracks and an album's tracks,
    and the two that find a track by ISRC or by artist name and title
    (track.match).

    Every function works inside the caller's transaction, so a handler
    makes all its changes in one write transaction and commits or aborts
    it as a whole. Functions return 0 or an LMDB result code (MDB_NOTFOUND,
    MDB_MAP_FULL, ...), which the caller hands to mb_call_db_error() when
    it is not an expected outcome. Key layout: actors/catalog/README.md. */
#ifndef CATALOG_STORE_H
#define CATALOG_STORE_H

#include <lmdb.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>

#include "catalog_model.h"

/*  Named databases this module opens: give mb_actor_def_t.max_dbs at
    least this. */
#define CATALOG_STORE_DBS 9

typedef struct catalog_store catalog_store_t;

typedef enum {
    CATALOG_ARTISTS,     /* artist id -> artist record */
    CATALOG_ALBUMS,      /* album id  -> album record */
    CATALOG_TRACKS,      /* track id  -> track record */
    CATALOG_TRACK_AUDIO, /* track id  -> its audio versions (catalog_audio.h) */
} catalog_kind_t;

typedef enum {
    CATALOG_ARTIST_ALBUMS, /* artist id -> release date + album id, by date */
    CATALOG_ALBUM_TRACKS,  /* album id  -> disc + track number + track id, in order */
    CATALOG_ARTIST_TRACKS, /* artist id -> track id */
    CATALOG_ISRC_TRACKS,   /* ISRC (12 bytes) -> track id */
    CATALOG_NAME_TRACKS,   /* match key of an artist name and a title -> track id */
} catalog_index_t;

/*  A stored record copied out of LMDB and decoded: stays valid after
    writes in the same transaction, which a pointer into the map does not. */
typedef struct {
    char *data; /* owned copy of the value */
    size_t size;
    msgpack_unpacked msg; /* msg.data is the decoded map, borrowing `data` */
} catalog_record_t;

/*  Opens (creating) the databases in a write transaction of its own.
    When the ISRC and name indexes do not exist yet but tracks do (data
    written before they were introduced), they are built from every
    stored track in that same transaction, once: whoever opens first
    builds them, the other processes find them there. Likewise, when
    track_audio does not exist yet, every stored track is rewritten with
    its "audio" object ("none"), so that every track answered has one.
    Returns 0 with *self_p, or an LMDB result code (logged). */
int catalog_store_open(MDB_env *env, catalog_store_t **self_p);

/*  Frees the handle (the databases stay open in the environment); nulls
 *self_p. Safe to call twice. */
void catalog_store_destroy(catalog_store_t **self_p);

/*  Looks up record `id` of `kind`. Returns 0 with *value pointing into the
    map (valid until the next write in `txn` or its end), MDB_NOTFOUND, or
    another LMDB code. */
int catalog_store_get(catalog_store_t *self, MDB_txn *txn, catalog_kind_t kind, catalog_str_t id,
                      MDB_val *value);

/*  As catalog_store_get(), then copies and decodes the value into *rec,
    which the caller releases with catalog_record_release() whatever is
    returned. A value that is not msgpack gives MDB_CORRUPTED. */
int catalog_store_load(catalog_store_t *self, MDB_txn *txn, catalog_kind_t kind, catalog_str_t id,
                       catalog_record_t *rec);
void catalog_record_release(catalog_record_t *rec);

/*  True when record `id` of `kind` exists; *rc gets any LMDB error other
    than MDB_NOTFOUND (then false is returned). */
bool catalog_store_exists(catalog_store_t *self, MDB_txn *txn, catalog_kind_t kind,
                          catalog_str_t id, int *rc);

/*  Writes (replacing) or deletes record `id` of `kind`. */
int catalog_store_put(catalog_store_t *self, MDB_txn *txn, catalog_kind_t kind, catalog_str_t id,
                      const void *data, size_t size);
int catalog_store_del(catalog_store_t *self, MDB_txn *txn, catalog_kind_t kind, catalog_str_t id);

/*  Adds (link) or removes (unlink) every index entry of a record: album
    under each of its artists; track under its album at its position,
    under each of its artists, under its ISRC (when it has one) and under
    the match key of each of its artists' names with its title. The names
    are read from the artist records in `txn`: link after checking the
    artists exist. Unlinking an entry that is not there is not an error.
    Link before put and unlink with the record as it was stored. */
int catalog_store_link_album(catalog_store_t *self, MDB_txn *txn, const catalog_album_t *al);
int catalog_store_unlink_album(catalog_store_t *self, MDB_txn *txn, const catalog_album_t *al);
int catalog_store_link_track(catalog_store_t *self, MDB_txn *txn, const catalog_track_t *t);
int catalog_store_unlink_track(catalog_store_t *self, MDB_txn *txn, const catalog_track_t *t);

/*  Moves the name index entries of every track of artist `old` (found
    through the artist_tracks index) from its old name to the name of
    `renamed` (the same artist as it will be stored). Does nothing when
    both names normalise alike. Call before putting `renamed`. */
int catalog_store_artist_renamed(catalog_store_t *self, MDB_txn *txn, const catalog_artist_t *old,
                                 const catalog_artist_t *renamed);

/*  Finds a track by ISRC (the 12-character stored form): sets *id to the
    track id, borrowed from the map (valid until the next write in `txn`
    or its end). When several tracks share the ISRC, the smallest id in
    byte order. Returns 0, MDB_NOTFOUND or an LMDB code. */
int catalog_store_match_isrc(catalog_store_t *self, MDB_txn *txn, const char *isrc,
                             catalog_str_t *id);

/*  Finds a track by an artist name and a title as given (normalised here
    with catalog_match_normalise(); each at most CATALOG_MATCH_TEXT_MAX
    bytes): sets *id as catalog_store_match_isrc() does. MDB_NOTFOUND
    also when either normalises to nothing or is too long. */
int catalog_store_match_name(catalog_store_t *self, MDB_txn *txn, catalog_str_t artist,
                             catalog_str_t title, catalog_str_t *id);

/*  Sets *taken when album `album_id` already has a track at disc/track.
    Returns 0 or an LMDB code. */
int catalog_store_position_taken(catalog_store_t *self, MDB_txn *txn, catalog_str_t album_id,
                                 int64_t disc, int64_t track, bool *taken);

/*  Sets *count to the number of entries under `key` in `index`. */
int catalog_store_count(catalog_store_t *self, MDB_txn *txn, catalog_index_t index,
                        catalog_str_t key, size_t *count);

/*  Called for each entry of a page with the id the entry names; returns
    0 to go on, anything else to stop (returned by catalog_store_page). */
typedef int(catalog_each_fn)(void *arg, catalog_str_t id);

/*  Calls `each` for entries offset .. offset+limit-1 under `key` in
    `index`, in index order. Returns 0, what `each` returned, or an LMDB
    code. */
int catalog_store_page(catalog_store_t *self, MDB_txn *txn, catalog_index_t index,
                       catalog_str_t key, size_t offset, size_t limit, catalog_each_fn *each,
                       void *arg);

#endif
