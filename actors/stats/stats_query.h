/*  stats_query — the read side: listening history pages, top lists over
    a window of days, charts, a track's days and a period's streams, all
    read inside the caller's (read-only) transaction.

    Windows of days are inclusive [from, to], days since the epoch.
    Aggregations fill a stats_tally_t the caller made, so their memory is
    proportional to the distinct ids in the window, not to the plays.
    Functions return 0 or an LMDB result code. */
#ifndef STATS_QUERY_H
#define STATS_QUERY_H

#include <lmdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stats_play.h"
#include "stats_store.h"
#include "stats_tally.h"

/*  Where a history page starts: the position of the last play of the page
    before (exclusive), or the newest play when `first`. */
typedef struct {
    bool first;
    int64_t started_at;
    stats_str_t track;
} stats_history_pos_t;

/*  One play of a user's history, borrowed from the map (valid during the
    callback). */
typedef struct {
    int64_t started_at;
    stats_str_t track;
    int64_t ms_played;
    stats_str_t context; /* its type's name */
    stats_str_t context_id;
    stats_str_t source;
} stats_history_item_t;

/*  Returns 0 to go on; anything else stops the walk and is returned. */
typedef int(stats_history_fn)(void *arg, const stats_history_item_t *item);

/*  Calls `each` for up to `limit` plays of `user` older than `pos`, newest
    first, and sets *more when older plays remain. A stored value that does
    not decode gives MDB_CORRUPTED. */
int stats_query_history(stats_store_t *store, MDB_txn *txn, stats_str_t user,
                        const stats_history_pos_t *pos, size_t limit, stats_history_fn *each,
                        void *arg, bool *more);

typedef enum { STATS_TOP_TRACKS, STATS_TOP_ARTISTS } stats_top_t;

/*  Adds to `tally` the streams of `user` per track (or per artist) on
    days from..to, or of all time when `all`. */
int stats_query_top(stats_store_t *store, MDB_txn *txn, stats_top_t what, stats_str_t user,
                    bool all, int64_t from, int64_t to, stats_tally_t *tally);

/*  Adds to `tally` the streams per track on days from..to in `country`
    (two capitals), or in every country when country is NULL. */
int stats_query_chart(stats_store_t *store, MDB_txn *txn, const char *country, int64_t from,
                      int64_t to, stats_tally_t *tally);

/*  One day of a track. */
typedef struct {
    int64_t day;
    uint64_t streams, plays, listeners;
} stats_track_day_t;

/*  Fills days[0 .. to-from] (the caller's array) with the track's streams,
    plays and distinct listeners of each day; adds every listener of the
    period to `listeners` (so its size is the period's distinct
    listeners); sets *all_time_listeners. */
int stats_query_track_days(stats_store_t *store, MDB_txn *txn, stats_str_t track, int64_t from,
                           int64_t to, stats_track_day_t *days, stats_tally_t *listeners,
                           uint64_t *all_time_listeners);

#endif
