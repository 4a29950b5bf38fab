/*  catalog_store — see catalog_store.h; key layout in README.md. */
#include "catalog_store.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mb_alloc.h"
#include "mb_log.h"

/*  An artist's albums sort by release date: the date is stored padded
    with NULs to this width, so "2001" < "2001-05" < "2001-05-20" and an
    unknown date (all NULs) sorts first. */
#define S_DATE_WIDTH CATALOG_DATE_MAX
/*  Big-endian disc (2 bytes) then track number (2 bytes): memcmp order
    is play order. */
#define S_POSITION_WIDTH 4
/*  Longest index value: a date or position, then an id of up to
    CATALOG_ID_MAX characters of up to 4 bytes each. */
#define S_VALUE_MAX (S_DATE_WIDTH + 4 * CATALOG_ID_MAX)

struct catalog_store {
    MDB_dbi records[3]; /* by catalog_kind_t */
    MDB_dbi indexes[3]; /* by catalog_index_t, all MDB_DUPSORT */
};

static const char *s_record_names[] = {"artists", "albums", "tracks"};
static const char *s_index_names[] = {"artist_albums", "album_tracks", "artist_tracks"};

/*  Bytes of each index value before the id it names. */
static const size_t s_index_prefix[] = {S_DATE_WIDTH, S_POSITION_WIDTH, 0};

static MDB_val s_val(catalog_str_t s)
{
    return (MDB_val){.mv_size = s.len, .mv_data = (void *)s.ptr};
}

int catalog_store_open(MDB_env *env, catalog_store_t **self_p)
{
    catalog_store_t *self = mb_calloc(1, sizeof *self);
    MDB_txn *txn;
    int rc = mdb_txn_begin(env, NULL, 0, &txn);
    for (int i = 0; rc == 0 && i < 3; i++)
        rc = mdb_dbi_open(txn, s_record_names[i], MDB_CREATE, &self->records[i]);
    for (int i = 0; rc == 0 && i < 3; i++)
        rc = mdb_dbi_open(txn, s_index_names[i], MDB_CREATE | MDB_DUPSORT, &self->indexes[i]);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc) {
        mb_error(0, "catalog: cannot open databases: %s", mdb_strerror(rc));
        free(self);
        return rc;
    }
    *self_p = self;
    return 0;
}

void catalog_store_destroy(catalog_store_t **self_p)
{
    if (self_p && *self_p) {
        free(*self_p);
        *self_p = NULL;
    }
}

/* ---- records ----------------------------------------------------------- */

int catalog_store_get(catalog_store_t *self, MDB_txn *txn, catalog_kind_t kind, catalog_str_t id,
                      MDB_val *value)
{
    MDB_val key = s_val(id);
    return mdb_get(txn, self->records[kind], &key, value);
}

int catalog_store_load(catalog_store_t *self, MDB_txn *txn, catalog_kind_t kind, catalog_str_t id,
                       catalog_record_t *rec)
{
    memset(rec, 0, sizeof *rec);
    msgpack_unpacked_init(&rec->msg);
    MDB_val value;
    int rc = catalog_store_get(self, txn, kind, id, &value);
    if (rc)
        return rc;
    rec->data = mb_malloc(value.mv_size ? value.mv_size : 1);
    rec->size = value.mv_size;
    memcpy(rec->data, value.mv_data, value.mv_size);
    size_t offset = 0;
    if (msgpack_unpack_next(&rec->msg, rec->data, rec->size, &offset) != MSGPACK_UNPACK_SUCCESS ||
        rec->msg.data.type != MSGPACK_OBJECT_MAP)
        return MDB_CORRUPTED;
    return 0;
}

void catalog_record_release(catalog_record_t *rec)
{
    msgpack_unpacked_destroy(&rec->msg);
    free(rec->data);
    rec->data = NULL;
    rec->size = 0;
}

bool catalog_store_exists(catalog_store_t *self, MDB_txn *txn, catalog_kind_t kind,
                          catalog_str_t id, int *rc)
{
    MDB_val value;
    int found = catalog_store_get(self, txn, kind, id, &value);
    *rc = found == MDB_NOTFOUND ? 0 : found;
    return found == 0;
}

int catalog_store_put(catalog_store_t *self, MDB_txn *txn, catalog_kind_t kind, catalog_str_t id,
                      const void *data, size_t size)
{
    MDB_val key = s_val(id);
    MDB_val value = {.mv_size = size, .mv_data = (void *)data};
    return mdb_put(txn, self->records[kind], &key, &value, 0);
}

int catalog_store_del(catalog_store_t *self, MDB_txn *txn, catalog_kind_t kind, catalog_str_t id)
{
    MDB_val key = s_val(id);
    return mdb_del(txn, self->records[kind], &key, NULL);
}

/* ---- index entries --------------------------------------------------------- */

/*  Builds an index value: `prefix_len` bytes of `prefix`, then the id. */
static MDB_val s_entry(uint8_t buf[S_VALUE_MAX], const void *prefix, size_t prefix_len,
                       catalog_str_t id)
{
    memcpy(buf, prefix, prefix_len);
    memcpy(buf + prefix_len, id.ptr, id.len);
    return (MDB_val){.mv_size = prefix_len + id.len, .mv_data = buf};
}

static MDB_val s_album_entry(uint8_t buf[S_VALUE_MAX], const catalog_album_t *al)
{
    uint8_t date[S_DATE_WIDTH] = {0};
    if (al->release_date.ptr)
        memcpy(date, al->release_date.ptr, al->release_date.len);
    return s_entry(buf, date, sizeof date, al->id);
}

static void s_position(uint8_t out[S_POSITION_WIDTH], int64_t disc, int64_t track)
{
    out[0] = (uint8_t)(disc >> 8);
    out[1] = (uint8_t)disc;
    out[2] = (uint8_t)(track >> 8);
    out[3] = (uint8_t)track;
}

static MDB_val s_track_entry(uint8_t buf[S_VALUE_MAX], const catalog_track_t *t)
{
    uint8_t position[S_POSITION_WIDTH];
    s_position(position, t->disc_number, t->track_number);
    return s_entry(buf, position, sizeof position, t->id);
}

/*  Adding an entry that is already there is not an error: MDB_NODUPDATA
    just says so. */
static int s_add(catalog_store_t *self, MDB_txn *txn, catalog_index_t index, catalog_str_t key,
                 MDB_val value)
{
    MDB_val k = s_val(key);
    int rc = mdb_put(txn, self->indexes[index], &k, &value, MDB_NODUPDATA);
    return rc == MDB_KEYEXIST ? 0 : rc;
}

static int s_remove(catalog_store_t *self, MDB_txn *txn, catalog_index_t index, catalog_str_t key,
                    MDB_val value)
{
    MDB_val k = s_val(key);
    int rc = mdb_del(txn, self->indexes[index], &k, &value);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int catalog_store_link_album(catalog_store_t *self, MDB_txn *txn, const catalog_album_t *al)
{
    uint8_t buf[S_VALUE_MAX];
    MDB_val entry = s_album_entry(buf, al);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < al->n_artist_ids; i++)
        rc = s_add(self, txn, CATALOG_ARTIST_ALBUMS, al->artist_ids[i], entry);
    return rc;
}

int catalog_store_unlink_album(catalog_store_t *self, MDB_txn *txn, const catalog_album_t *al)
{
    uint8_t buf[S_VALUE_MAX];
    MDB_val entry = s_album_entry(buf, al);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < al->n_artist_ids; i++)
        rc = s_remove(self, txn, CATALOG_ARTIST_ALBUMS, al->artist_ids[i], entry);
    return rc;
}

int catalog_store_link_track(catalog_store_t *self, MDB_txn *txn, const catalog_track_t *t)
{
    uint8_t buf[S_VALUE_MAX];
    int rc = s_add(self, txn, CATALOG_ALBUM_TRACKS, t->album_id, s_track_entry(buf, t));
    for (size_t i = 0; rc == 0 && i < t->n_artist_ids; i++)
        rc = s_add(self, txn, CATALOG_ARTIST_TRACKS, t->artist_ids[i], s_val(t->id));
    return rc;
}

int catalog_store_unlink_track(catalog_store_t *self, MDB_txn *txn, const catalog_track_t *t)
{
    uint8_t buf[S_VALUE_MAX];
    int rc = s_remove(self, txn, CATALOG_ALBUM_TRACKS, t->album_id, s_track_entry(buf, t));
    for (size_t i = 0; rc == 0 && i < t->n_artist_ids; i++)
        rc = s_remove(self, txn, CATALOG_ARTIST_TRACKS, t->artist_ids[i], s_val(t->id));
    return rc;
}

/* ---- reading indexes ----------------------------------------------------- */

int catalog_store_position_taken(catalog_store_t *self, MDB_txn *txn, catalog_str_t album_id,
                                 int64_t disc, int64_t track, bool *taken)
{
    *taken = false;
    MDB_cursor *cursor;
    int rc = mdb_cursor_open(txn, self->indexes[CATALOG_ALBUM_TRACKS], &cursor);
    if (rc)
        return rc;
    uint8_t position[S_POSITION_WIDTH];
    s_position(position, disc, track);
    MDB_val key = s_val(album_id);
    MDB_val value = {.mv_size = sizeof position, .mv_data = position};
    /* The first entry at or after this position, within this album. */
    rc = mdb_cursor_get(cursor, &key, &value, MDB_GET_BOTH_RANGE);
    if (rc == 0)
        *taken = value.mv_size >= sizeof position &&
                 memcmp(value.mv_data, position, sizeof position) == 0;
    mdb_cursor_close(cursor);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int catalog_store_count(catalog_store_t *self, MDB_txn *txn, catalog_index_t index,
                        catalog_str_t key, size_t *count)
{
    *count = 0;
    MDB_cursor *cursor;
    int rc = mdb_cursor_open(txn, self->indexes[index], &cursor);
    if (rc)
        return rc;
    MDB_val k = s_val(key), value;
    rc = mdb_cursor_get(cursor, &k, &value, MDB_SET_KEY);
    if (rc == 0) {
        rc = mdb_cursor_count(cursor, count);
    }
    mdb_cursor_close(cursor);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int catalog_store_page(catalog_store_t *self, MDB_txn *txn, catalog_index_t index,
                       catalog_str_t key, size_t offset, size_t limit, catalog_each_fn *each,
                       void *arg)
{
    MDB_cursor *cursor;
    int rc = mdb_cursor_open(txn, self->indexes[index], &cursor);
    if (rc)
        return rc;
    MDB_val k = s_val(key), value;
    rc = mdb_cursor_get(cursor, &k, &value, MDB_SET_KEY);
    /* LMDB has no "skip n duplicates": walking is O(offset), bounded by
       the offset limit of the API. */
    for (size_t i = 0; rc == 0 && i < offset; i++)
        rc = mdb_cursor_get(cursor, &k, &value, MDB_NEXT_DUP);
    size_t prefix = s_index_prefix[index];
    for (size_t i = 0; rc == 0 && i < limit; i++) {
        if (value.mv_size > prefix) {
            catalog_str_t id = {(const char *)value.mv_data + prefix, value.mv_size - prefix};
            rc = each(arg, id);
            if (rc)
                break;
        }
        rc = mdb_cursor_get(cursor, &k, &value, MDB_NEXT_DUP);
    }
    mdb_cursor_close(cursor);
    return rc == MDB_NOTFOUND ? 0 : rc;
}
