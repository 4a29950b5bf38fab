/*  stats_store — the stats actor's LMDB databases, their key layout
    (actors/stats/README.md) and the consumer side: applying play, track
    and user events to the counts.

    Every function works inside the caller's transaction. Functions return
    0 or an LMDB result code (MDB_NOTFOUND, MDB_MAP_FULL, an errno...),
    except stats_store_apply*(), which also return MB_EINVAL for a
    malformed event.

    Keys are fixed binary layouts built with stats_key_t: a variable-length
    id that is not the last field is written as one length byte and the
    bytes (so a prefix names exactly one id), days as 4-byte big-endian
    unsigned days since the epoch, times as 8-byte big-endian ms, so
    memcmp order is the order listings need. Counters are 8-byte
    big-endian unsigned integers. */
#ifndef STATS_STORE_H
#define STATS_STORE_H

#include <lmdb.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mb_events.h"
#include "stats_play.h"

#define STATS_ARTISTS_MAX 20    /* artists credited on one track */
#define STATS_TITLE_MAX 1024    /* bytes of a title kept from catalog events */
#define STATS_STORE_KEY_MAX 511 /* LMDB's default largest key */

typedef enum {
    STATS_DB_SEEN,            /* event key -> "" : plays already counted */
    STATS_DB_TRACKS,          /* track id -> track map (from catalog.track) */
    STATS_DB_USERS,           /* user id -> user map (from users.user) */
    STATS_DB_REPORTED,        /* client play key -> what was reported (play.report) */
    STATS_DB_HISTORY,         /* user, started_at, track -> [ms_played, context, id, source] */
    STATS_DB_TRACK_DAY,       /* track, day -> streams, plays */
    STATS_DB_ARTIST_DAY,      /* artist, day -> streams */
    STATS_DB_LISTENERS_DAY,   /* DUPSORT track, day -> user (who streamed it that day) */
    STATS_DB_LISTENERS,       /* DUPSORT track -> user (who ever streamed it) */
    STATS_DB_CHART,           /* country, day, track -> streams (country 00 00: all) */
    STATS_DB_USER_TRACK_DAY,  /* user, day, track -> streams */
    STATS_DB_USER_TRACK,      /* user, track -> streams, all time */
    STATS_DB_USER_ARTIST_DAY, /* user, day, artist -> streams */
    STATS_DB_USER_ARTIST,     /* user, artist -> streams, all time */
    STATS_DB_TRACK_TOTALS,    /* track -> first play, last play, streams, plays */
    STATS_DB_COUNT
} stats_db_t;

/*  The consumer groups (actors/stats/README.md): track and user events
    apply in a group of their own so they never wait behind a backlog of
    plays; the plays group waits for it where log order matters. */
#define STATS_GROUP_META "stats.meta"
#define STATS_GROUP_PLAYS "stats.plays"

/*  Named databases this module opens. */
#define STATS_STORE_DBS STATS_DB_COUNT

/*  The chart key's country for the chart of every country. */
#define STATS_COUNTRY_ALL "\0\0"

typedef struct stats_store stats_store_t;

/* ---- keys --------------------------------------------------------------- */

typedef struct {
    uint8_t b[STATS_STORE_KEY_MAX];
    size_t len;
} stats_key_t;

/*  Appenders. Callers keep keys well under STATS_STORE_KEY_MAX (ids are at
    most STATS_ID_MAX bytes); an append that would overflow is dropped and
    leaves the key too short to match anything written. */
void stats_key_init(stats_key_t *k);
void stats_key_id(stats_key_t *k, stats_str_t id); /* one length byte, then the bytes */
void stats_key_raw(stats_key_t *k, const void *data, size_t len);
void stats_key_u32(stats_key_t *k, uint32_t v);
void stats_key_u64(stats_key_t *k, uint64_t v);

uint32_t stats_get_u32(const void *p);
uint64_t stats_get_u64(const void *p);
void stats_put_u64(void *p, uint64_t v);

/* ---- opening ------------------------------------------------------------ */

/*  Opens (creating) the databases in a write transaction of its own.
    Returns 0 with *self_p, or an LMDB result code (logged). */
int stats_store_open(MDB_env *env, stats_store_t **self_p);

/*  Frees the handle (the databases stay open); nulls *self_p. Safe twice. */
void stats_store_destroy(stats_store_t **self_p);

MDB_dbi stats_store_dbi(stats_store_t *self, stats_db_t db);

/* ---- records ------------------------------------------------------------ */

/*  A stored value copied out of LMDB and decoded, so it stays valid across
    writes in the same transaction. */
typedef struct {
    char *data;
    msgpack_unpacked msg;
} stats_record_t;

void stats_record_release(stats_record_t *rec);

/*  What stats knows of a track, from the catalog's events. */
typedef struct {
    stats_str_t title;
    stats_str_t album_id; /* ptr NULL when none */
    stats_str_t isrc;     /* ptr NULL when none */
    stats_str_t artist_ids[STATS_ARTISTS_MAX];
    size_t n_artists;
    int64_t duration_ms;
    bool deleted; /* the catalog deleted it; its counts stay */
} stats_track_t;

/*  Loads track `id` into *t, which borrows from *rec (release it whatever
    is returned). Returns 0, MDB_NOTFOUND, MDB_CORRUPTED for a value that
    does not decode, or another LMDB code. */
int stats_store_track_get(stats_store_t *self, MDB_txn *txn, stats_str_t id, stats_record_t *rec,
                          stats_track_t *t);

/*  Packs the public view of a track: {id, title, artist_ids, album_id,
    isrc, duration_ms}. */
void stats_track_pack(msgpack_packer *pk, stats_str_t id, const stats_track_t *t);

/*  Sets *known (may be NULL: a users.user event named the user),
    *country (country[0] == 0 when unknown) and *deleted for `user`.
    Returns 0 (unknown users: no country, not deleted) or an LMDB code. */
int stats_store_user_get(stats_store_t *self, MDB_txn *txn, stats_str_t user,
                         char country[STATS_COUNTRY_LEN + 1], bool *deleted, bool *known);

/*  Totals of a track: 32-byte value of the track_totals database. */
typedef struct {
    uint64_t first_ms, last_ms; /* first and last play (started_at) */
    uint64_t streams, plays;    /* all time */
} stats_totals_t;

/*  Reads the totals of `track`. Returns 0, MDB_NOTFOUND or an LMDB code. */
int stats_store_totals_get(stats_store_t *self, MDB_txn *txn, stats_str_t track,
                           stats_totals_t *totals);

/* ---- applying events (the consumer) ---------------------------------------- */

typedef enum {
    STATS_APPLIED,   /* the event changed the counts */
    STATS_DUPLICATE, /* a play whose key was counted before: nothing changed */
    STATS_IGNORED,   /* a play of an erased (deleted) user: nothing kept */
} stats_outcome_t;

/*  Applies one play event in `txn`: dedupes by key in "seen", then writes
    history and, for a stream, every count. Sets *outcome (may be NULL).

    Log order with the other group: when the play names a track or user
    no event told stats about yet, and the group STATS_GROUP_META has not
    yet handled the log up to this play's seq, the event that would tell
    may still come: MB_EAGAIN (the consumer rolls the batch back and
    retries shortly). Once that group is past it, the play counts as it
    is (without artists, without country). An event with seq 0 (tests)
    never waits.

    Returns 0, MB_EINVAL with *why a static reason for a malformed event
    (nothing written), MB_EAGAIN, or an LMDB code. */
int stats_store_apply_play(stats_store_t *self, MDB_txn *txn, const mb_event_t *event,
                           stats_outcome_t *outcome, const char **why);

/*  Applies a catalog.track event {action, id, object}: keeps the track's
    title, artists, album, ISRC and duration (deleted tracks are marked,
    not forgotten: their plays are still reported). */
int stats_store_apply_track(stats_store_t *self, MDB_txn *txn, const msgpack_object *data,
                            const char **why);

/*  Applies a users.user event {action, id, user}: keeps the user's
    country; "deleted" erases the user's history and per-user counts,
    removes them from listener sets and dedupe keys, and leaves a
    tombstone so later plays of that user are ignored. */
int stats_store_apply_user(stats_store_t *self, MDB_txn *txn, const msgpack_object *data,
                           const char **why);

/*  Dispatches by the event's topic to the three above; an unknown topic
    is MB_EINVAL. */
int stats_store_apply(stats_store_t *self, MDB_txn *txn, const mb_event_t *event,
                      stats_outcome_t *outcome, const char **why);

#endif
