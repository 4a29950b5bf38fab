/*  stats_query — read-side walks over the stats databases (stats_query.h). */
#include "stats_query.h"

#include <string.h>

#include "mb_msgpack.h"

/*  Calls `each` for every key of `db` in [lo, hi) (memcmp order). */
typedef int(s_range_fn)(void *arg, const MDB_val *key, const MDB_val *value);

static int s_range(stats_store_t *store, MDB_txn *txn, stats_db_t db, const stats_key_t *lo,
                   const stats_key_t *hi, s_range_fn *each, void *arg)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, stats_store_dbi(store, db), &cur);
    if (rc)
        return rc;
    MDB_val k = {.mv_size = lo->len, .mv_data = (void *)lo->b}, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        size_t n = k.mv_size < hi->len ? k.mv_size : hi->len;
        int c = memcmp(k.mv_data, hi->b, n);
        if (c > 0 || (c == 0 && k.mv_size >= hi->len))
            break;
        if ((rc = each(arg, &k, &v)) != 0)
            break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---- history ------------------------------------------------------------------- */

static bool s_history_item(const MDB_val *k, const MDB_val *v, size_t prefix,
                           stats_history_item_t *item, msgpack_unpacked *msg)
{
    if (k->mv_size < prefix + 8 + 1)
        return false;
    const char *key = k->mv_data;
    item->started_at = (int64_t)stats_get_u64(key + prefix);
    item->track = (stats_str_t){key + prefix + 8, k->mv_size - prefix - 8};
    size_t used = 0;
    if (msgpack_unpack_next(msg, v->mv_data, v->mv_size, &used) != MSGPACK_UNPACK_SUCCESS ||
        msg->data.type != MSGPACK_OBJECT_ARRAY || msg->data.via.array.size != 4)
        return false;
    const msgpack_object *a = msg->data.via.array.ptr;
    const char *s;
    size_t len;
    if (!mb_obj_int(&a[0], &item->ms_played) || !mb_obj_str(&a[1], &s, &len))
        return false;
    item->context = (stats_str_t){s, len};
    item->context_id = mb_obj_str(&a[2], &s, &len) ? (stats_str_t){s, len} : (stats_str_t){0};
    if (!mb_obj_str(&a[3], &s, &len))
        return false;
    item->source = (stats_str_t){s, len};
    return true;
}

int stats_query_history(stats_store_t *store, MDB_txn *txn, stats_str_t user,
                        const stats_history_pos_t *pos, size_t limit, stats_history_fn *each,
                        void *arg, bool *more)
{
    *more = false;
    stats_key_t prefix, start;
    stats_key_init(&prefix);
    stats_key_id(&prefix, user);
    start = prefix;
    if (pos->first)
        stats_key_raw(&start, "\xff\xff\xff\xff\xff\xff\xff\xff\xff", 9);
    else {
        stats_key_u64(&start, (uint64_t)pos->started_at);
        stats_key_raw(&start, pos->track.ptr, pos->track.len);
    }
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, stats_store_dbi(store, STATS_DB_HISTORY), &cur);
    if (rc)
        return rc;
    /* Stand on the first key >= start, then step back: the newest play
       strictly older than the position. */
    MDB_val k = {.mv_size = start.len, .mv_data = start.b}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    rc = rc == MDB_NOTFOUND ? mdb_cursor_get(cur, &k, &v, MDB_LAST)
                            : (rc ? rc : mdb_cursor_get(cur, &k, &v, MDB_PREV));
    size_t done = 0;
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_PREV)) {
        if (k.mv_size < prefix.len || memcmp(k.mv_data, prefix.b, prefix.len) != 0)
            break;
        if (done == limit) {
            *more = true;
            break;
        }
        stats_history_item_t item;
        if (!s_history_item(&k, &v, prefix.len, &item, &msg)) {
            rc = MDB_CORRUPTED;
            break;
        }
        if ((rc = each(arg, &item)) != 0)
            break;
        done++;
    }
    msgpack_unpacked_destroy(&msg);
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---- tallies over key ranges ------------------------------------------------------ */

typedef struct {
    stats_tally_t *tally;
    size_t skip; /* bytes of key before the id counted */
} s_tally_arg_t;

static int s_tally_each(void *arg_, const MDB_val *key, const MDB_val *value)
{
    s_tally_arg_t *arg = arg_;
    if (value->mv_size != 8 || key->mv_size <= arg->skip)
        return MDB_CORRUPTED;
    stats_tally_add(arg->tally, (const char *)key->mv_data + arg->skip, key->mv_size - arg->skip,
                    stats_get_u64(value->mv_data));
    return 0;
}

int stats_query_top(stats_store_t *store, MDB_txn *txn, stats_top_t what, stats_str_t user,
                    bool all, int64_t from, int64_t to, stats_tally_t *tally)
{
    stats_key_t lo, hi;
    stats_key_init(&lo);
    stats_key_id(&lo, user);
    hi = lo;
    s_tally_arg_t arg = {.tally = tally, .skip = lo.len};
    stats_db_t db;
    if (all) {
        db = what == STATS_TOP_TRACKS ? STATS_DB_USER_TRACK : STATS_DB_USER_ARTIST;
        /* The smallest key above every key starting with the prefix (its
           first byte, the id's length, is never 0xff). */
        while (hi.b[hi.len - 1] == 0xff)
            hi.len--;
        hi.b[hi.len - 1]++;
    } else {
        db = what == STATS_TOP_TRACKS ? STATS_DB_USER_TRACK_DAY : STATS_DB_USER_ARTIST_DAY;
        if (from < 0)
            from = 0;
        if (to < from)
            return 0;
        stats_key_u32(&lo, (uint32_t)from);
        stats_key_u32(&hi, (uint32_t)to + 1);
        arg.skip += 4;
    }
    return s_range(store, txn, db, &lo, &hi, s_tally_each, &arg);
}

int stats_query_chart(stats_store_t *store, MDB_txn *txn, const char *country, int64_t from,
                      int64_t to, stats_tally_t *tally)
{
    if (from < 0)
        from = 0;
    if (to < from)
        return 0;
    stats_key_t lo, hi;
    stats_key_init(&lo);
    stats_key_raw(&lo, country ? country : STATS_COUNTRY_ALL, STATS_COUNTRY_LEN);
    hi = lo;
    stats_key_u32(&lo, (uint32_t)from);
    stats_key_u32(&hi, (uint32_t)to + 1);
    s_tally_arg_t arg = {.tally = tally, .skip = STATS_COUNTRY_LEN + 4};
    return s_range(store, txn, STATS_DB_CHART, &lo, &hi, s_tally_each, &arg);
}

/* ---- one track ----------------------------------------------------------------------- */

/*  Walks the duplicate set under `key` of `db`: counts it into *count and,
    when `tally` is set, adds each member. */
static int s_set_walk(stats_store_t *store, MDB_txn *txn, stats_db_t db, const stats_key_t *key,
                      uint64_t *count, stats_tally_t *tally)
{
    *count = 0;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, stats_store_dbi(store, db), &cur);
    if (rc)
        return rc;
    MDB_val k = {.mv_size = key->len, .mv_data = (void *)key->b}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
    if (rc == 0) {
        size_t n;
        rc = mdb_cursor_count(cur, &n);
        *count = n;
    }
    while (rc == 0 && tally) {
        stats_tally_add(tally, v.mv_data, v.mv_size, 1);
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int stats_query_track_days(stats_store_t *store, MDB_txn *txn, stats_str_t track, int64_t from,
                           int64_t to, stats_track_day_t *days, stats_tally_t *listeners,
                           uint64_t *all_time_listeners)
{
    int rc = 0;
    for (int64_t d = from; rc == 0 && d <= to; d++) {
        stats_track_day_t *day = &days[d - from];
        *day = (stats_track_day_t){.day = d};
        if (d < 0)
            continue;
        stats_key_t key;
        stats_key_init(&key);
        stats_key_id(&key, track);
        stats_key_u32(&key, (uint32_t)d);
        MDB_val k = {.mv_size = key.len, .mv_data = key.b}, v;
        rc = mdb_get(txn, stats_store_dbi(store, STATS_DB_TRACK_DAY), &k, &v);
        if (rc == 0 && v.mv_size != 16)
            rc = MDB_CORRUPTED;
        if (rc == 0) {
            day->streams = stats_get_u64(v.mv_data);
            day->plays = stats_get_u64((const uint8_t *)v.mv_data + 8);
        }
        if (rc == MDB_NOTFOUND)
            rc = 0;
        if (rc == 0)
            rc = s_set_walk(store, txn, STATS_DB_LISTENERS_DAY, &key, &day->listeners, listeners);
    }
    stats_key_t key;
    stats_key_init(&key);
    stats_key_raw(&key, track.ptr, track.len);
    if (rc == 0)
        rc = s_set_walk(store, txn, STATS_DB_LISTENERS, &key, all_time_listeners, NULL);
    return rc;
}
