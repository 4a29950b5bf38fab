/*  catalog_store — see catalog_store.h; key layout in README.md. */
#include "catalog_store.h"

#include <sodium.h>
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
/*  Keys of the name index: the normalised artist name, a NUL, the
    normalised title. LMDB keys stop at 511 bytes, so a longer key keeps
    its first S_NAME_HEAD bytes, then 0xff (never a byte of UTF-8, so it
    cannot look like a short key), then a BLAKE2b-256 of the whole key. */
#define S_NAME_KEY_MAX 480
#define S_NAME_HASH 32
#define S_NAME_HEAD (S_NAME_KEY_MAX - 1 - S_NAME_HASH)

#define S_N_INDEXES 5

#define S_N_RECORDS 4

struct catalog_store {
    MDB_dbi records[S_N_RECORDS]; /* by catalog_kind_t */
    MDB_dbi indexes[S_N_INDEXES]; /* by catalog_index_t, all MDB_DUPSORT */
};

static const char *s_record_names[S_N_RECORDS] = {"artists", "albums", "tracks", "track_audio"};
static const char *s_index_names[S_N_INDEXES] = {"artist_albums", "album_tracks", "artist_tracks",
                                                 "isrc_tracks", "name_tracks"};

/*  Bytes of each index value before the id it names. */
static const size_t s_index_prefix[S_N_INDEXES] = {S_DATE_WIDTH, S_POSITION_WIDTH, 0, 0, 0};

/*  The first index that track.match added: those from here on may be
    missing in data written before them, and are then built at open. */
#define S_FIRST_MATCH_INDEX CATALOG_ISRC_TRACKS

static int s_build_match_indexes(catalog_store_t *self, MDB_txn *txn, size_t *tracks);
static int s_add_audio_objects(catalog_store_t *self, MDB_txn *txn, size_t *tracks);

static MDB_val s_val(catalog_str_t s)
{
    return (MDB_val){.mv_size = s.len, .mv_data = (void *)s.ptr};
}

int catalog_store_open(MDB_env *env, catalog_store_t **self_p)
{
    catalog_store_t *self = mb_calloc(1, sizeof *self);
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(env, NULL, 0, &txn);
    for (int i = 0; rc == 0 && i < CATALOG_TRACK_AUDIO; i++)
        rc = mdb_dbi_open(txn, s_record_names[i], MDB_CREATE, &self->records[i]);
    bool add_audio = false;
    if (rc == 0) {
        rc = mdb_dbi_open(txn, s_record_names[CATALOG_TRACK_AUDIO], 0,
                          &self->records[CATALOG_TRACK_AUDIO]);
        if (rc == MDB_NOTFOUND) {
            add_audio = true;
            rc = mdb_dbi_open(txn, s_record_names[CATALOG_TRACK_AUDIO], MDB_CREATE,
                              &self->records[CATALOG_TRACK_AUDIO]);
        }
    }
    for (int i = 0; rc == 0 && i < S_FIRST_MATCH_INDEX; i++)
        rc = mdb_dbi_open(txn, s_index_names[i], MDB_CREATE | MDB_DUPSORT, &self->indexes[i]);
    bool build = false;
    for (int i = S_FIRST_MATCH_INDEX; rc == 0 && i < S_N_INDEXES; i++) {
        rc = mdb_dbi_open(txn, s_index_names[i], MDB_DUPSORT, &self->indexes[i]);
        if (rc == MDB_NOTFOUND) {
            build = true;
            rc = mdb_dbi_open(txn, s_index_names[i], MDB_CREATE | MDB_DUPSORT, &self->indexes[i]);
        }
    }
    size_t built = 0, upgraded = 0;
    if (rc == 0 && build)
        rc = s_build_match_indexes(self, txn, &built);
    if (rc == 0 && add_audio)
        rc = s_add_audio_objects(self, txn, &upgraded);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc == 0 && built)
        mb_info(0, "catalog: built the ISRC and name indexes from %zu stored tracks", built);
    if (rc == 0 && upgraded)
        mb_info(0, "catalog: gave %zu stored tracks their audio object", upgraded);
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
static int s_add_val(catalog_store_t *self, MDB_txn *txn, catalog_index_t index, MDB_val key,
                     MDB_val value)
{
    int rc = mdb_put(txn, self->indexes[index], &key, &value, MDB_NODUPDATA);
    return rc == MDB_KEYEXIST ? 0 : rc;
}

static int s_remove_val(catalog_store_t *self, MDB_txn *txn, catalog_index_t index, MDB_val key,
                        MDB_val value)
{
    int rc = mdb_del(txn, self->indexes[index], &key, &value);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int s_add(catalog_store_t *self, MDB_txn *txn, catalog_index_t index, catalog_str_t key,
                 MDB_val value)
{
    return s_add_val(self, txn, index, s_val(key), value);
}

static int s_remove(catalog_store_t *self, MDB_txn *txn, catalog_index_t index, catalog_str_t key,
                    MDB_val value)
{
    return s_remove_val(self, txn, index, s_val(key), value);
}

/* ---- the match indexes ------------------------------------------------------ */

typedef struct {
    uint8_t bytes[S_NAME_KEY_MAX];
    size_t len;
} s_name_key_t;

/*  Builds the name index key of an artist name and a title. False when
    either normalises to nothing or is longer than a query may be: such a
    pair has no entry and matches nothing. */
static bool s_name_key(catalog_str_t artist, catalog_str_t title, s_name_key_t *key)
{
    if (artist.len > CATALOG_MATCH_TEXT_MAX || title.len > CATALOG_MATCH_TEXT_MAX)
        return false;
    char full[2 * CATALOG_MATCH_TEXT_MAX + 1];
    size_t a = catalog_match_normalise(artist.ptr, artist.len, full);
    if (a == 0)
        return false;
    full[a] = '\0';
    size_t t = catalog_match_normalise(title.ptr, title.len, full + a + 1);
    if (t == 0)
        return false;
    size_t n = a + 1 + t;
    if (n <= S_NAME_KEY_MAX) {
        memcpy(key->bytes, full, n);
        key->len = n;
    } else {
        memcpy(key->bytes, full, S_NAME_HEAD);
        key->bytes[S_NAME_HEAD] = 0xff;
        crypto_generichash(key->bytes + S_NAME_HEAD + 1, S_NAME_HASH, (const uint8_t *)full, n,
                           NULL, 0);
        key->len = S_NAME_KEY_MAX;
    }
    return true;
}

static bool s_str_eq(catalog_str_t a, catalog_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/*  Adds (or removes) the name index entries of track `t`: one per artist,
    under the artist's name and the track's title. Names are read from the
    artist records in `txn`, except the name of artist `as` (when not
    NULL), which is taken from it. An artist whose record is missing has
    no entry: it cannot be matched by a name nobody knows. */
static int s_track_names(catalog_store_t *self, MDB_txn *txn, const catalog_track_t *t,
                         const catalog_artist_t *as, bool add)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < t->n_artist_ids; i++) {
        catalog_record_t rec;
        catalog_artist_t a;
        catalog_str_t name;
        bool loaded = false;
        if (as && s_str_eq(as->id, t->artist_ids[i]))
            name = as->name;
        else {
            rc = catalog_store_load(self, txn, CATALOG_ARTISTS, t->artist_ids[i], &rec);
            loaded = true;
            if (rc == 0 && !catalog_artist_decode(&rec.msg.data, &a))
                rc = MDB_CORRUPTED;
            name = rc == 0 ? a.name : (catalog_str_t){NULL, 0};
        }
        s_name_key_t key;
        if (rc == 0 && s_name_key(name, t->title, &key)) {
            MDB_val k = {.mv_size = key.len, .mv_data = key.bytes};
            rc = add ? s_add_val(self, txn, CATALOG_NAME_TRACKS, k, s_val(t->id))
                     : s_remove_val(self, txn, CATALOG_NAME_TRACKS, k, s_val(t->id));
        }
        if (loaded)
            catalog_record_release(&rec);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    return rc;
}

static catalog_str_t s_isrc(const catalog_track_t *t)
{
    return (catalog_str_t){t->isrc, strlen(t->isrc)};
}

/*  Gives every stored track its ISRC and name entries. */
static int s_build_match_indexes(catalog_store_t *self, MDB_txn *txn, size_t *tracks)
{
    *tracks = 0;
    MDB_cursor *cursor;
    int rc = mdb_cursor_open(txn, self->records[CATALOG_TRACKS], &cursor);
    if (rc)
        return rc;
    MDB_val key, value;
    rc = mdb_cursor_get(cursor, &key, &value, MDB_FIRST);
    while (rc == 0) {
        /* A copy: the writes below must not pull the record from under us. */
        char *data = mb_malloc(value.mv_size ? value.mv_size : 1);
        memcpy(data, value.mv_data, value.mv_size);
        msgpack_unpacked msg;
        msgpack_unpacked_init(&msg);
        size_t used = 0;
        catalog_track_t t;
        if (msgpack_unpack_next(&msg, data, value.mv_size, &used) == MSGPACK_UNPACK_SUCCESS &&
            catalog_track_decode(&msg.data, &t)) {
            if (t.isrc[0])
                rc = s_add(self, txn, CATALOG_ISRC_TRACKS, s_isrc(&t), s_val(t.id));
            if (rc == 0)
                rc = s_track_names(self, txn, &t, NULL, true);
            (*tracks)++;
        } else
            mb_warn(0, "catalog: stored track %.*s does not decode; not indexed for matching",
                    (int)key.mv_size, (const char *)key.mv_data);
        msgpack_unpacked_destroy(&msg);
        free(data);
        if (rc == 0)
            rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT);
    }
    mdb_cursor_close(cursor);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/*  Rewrites every stored track in its current form, which has the
    "audio" object (status none) that tracks written before it lack.
    Neither updated_at nor any event: nothing a listener sees changed. */
static int s_add_audio_objects(catalog_store_t *self, MDB_txn *txn, size_t *tracks)
{
    *tracks = 0;
    MDB_cursor *cursor;
    int rc = mdb_cursor_open(txn, self->records[CATALOG_TRACKS], &cursor);
    if (rc)
        return rc;
    MDB_val key, value;
    rc = mdb_cursor_get(cursor, &key, &value, MDB_FIRST);
    while (rc == 0) {
        msgpack_unpacked msg;
        msgpack_unpacked_init(&msg);
        size_t used = 0;
        catalog_track_t t;
        if (msgpack_unpack_next(&msg, value.mv_data, value.mv_size, &used) ==
                MSGPACK_UNPACK_SUCCESS &&
            catalog_track_decode(&msg.data, &t)) {
            msgpack_sbuffer buf;
            msgpack_sbuffer_init(&buf);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
            catalog_track_pack(&pk, &t);
            /* The record is packed before the write moves anything, and
               the cursor is put back on the key after it. */
            uint8_t id[511];
            MDB_val at = {.mv_size = key.mv_size < sizeof id ? key.mv_size : sizeof id,
                          .mv_data = id};
            memcpy(id, key.mv_data, at.mv_size);
            MDB_val packed = {.mv_size = buf.size, .mv_data = buf.data};
            rc = mdb_put(txn, self->records[CATALOG_TRACKS], &at, &packed, 0);
            if (rc == 0)
                rc = mdb_cursor_get(cursor, &at, &value, MDB_SET_KEY);
            msgpack_sbuffer_destroy(&buf);
            (*tracks)++;
        } else
            mb_warn(0, "catalog: stored track %.*s does not decode; left without audio",
                    (int)key.mv_size, (const char *)key.mv_data);
        msgpack_unpacked_destroy(&msg);
        if (rc == 0)
            rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT);
    }
    mdb_cursor_close(cursor);
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
    if (rc == 0 && t->isrc[0])
        rc = s_add(self, txn, CATALOG_ISRC_TRACKS, s_isrc(t), s_val(t->id));
    if (rc == 0)
        rc = s_track_names(self, txn, t, NULL, true);
    return rc;
}

int catalog_store_unlink_track(catalog_store_t *self, MDB_txn *txn, const catalog_track_t *t)
{
    uint8_t buf[S_VALUE_MAX];
    int rc = s_remove(self, txn, CATALOG_ALBUM_TRACKS, t->album_id, s_track_entry(buf, t));
    for (size_t i = 0; rc == 0 && i < t->n_artist_ids; i++)
        rc = s_remove(self, txn, CATALOG_ARTIST_TRACKS, t->artist_ids[i], s_val(t->id));
    if (rc == 0 && t->isrc[0])
        rc = s_remove(self, txn, CATALOG_ISRC_TRACKS, s_isrc(t), s_val(t->id));
    if (rc == 0)
        rc = s_track_names(self, txn, t, NULL, false);
    return rc;
}

/*  Track ids copied out of an index, to walk while writing elsewhere:
    the ids one after the other in `bytes`, id i at ends[i-1]..ends[i]. */
typedef struct {
    char *bytes;
    size_t used, cap;
    size_t *ends;
    size_t n, n_cap;
} s_ids_t;

static int s_collect(void *arg, catalog_str_t id)
{
    s_ids_t *list = arg;
    if (list->used + id.len > list->cap) {
        list->cap = 2 * (list->used + id.len) + 256;
        list->bytes = mb_realloc(list->bytes, list->cap);
    }
    if (list->n == list->n_cap) {
        list->n_cap = list->n_cap ? 2 * list->n_cap : 64;
        list->ends = mb_realloc(list->ends, list->n_cap * sizeof list->ends[0]);
    }
    memcpy(list->bytes + list->used, id.ptr, id.len);
    list->used += id.len;
    list->ends[list->n++] = list->used;
    return 0;
}

static catalog_str_t s_ids_at(const s_ids_t *list, size_t i)
{
    size_t start = i ? list->ends[i - 1] : 0;
    return (catalog_str_t){list->bytes + start, list->ends[i] - start};
}

int catalog_store_artist_renamed(catalog_store_t *self, MDB_txn *txn, const catalog_artist_t *old,
                                 const catalog_artist_t *renamed)
{
    char a[CATALOG_MATCH_TEXT_MAX], b[CATALOG_MATCH_TEXT_MAX];
    if (old->name.len <= sizeof a && renamed->name.len <= sizeof b) {
        size_t na = catalog_match_normalise(old->name.ptr, old->name.len, a);
        size_t nb = catalog_match_normalise(renamed->name.ptr, renamed->name.len, b);
        if (na == nb && memcmp(a, b, na) == 0)
            return 0;
    }
    s_ids_t list = {0};
    int rc = catalog_store_page(self, txn, CATALOG_ARTIST_TRACKS, old->id, 0, SIZE_MAX, s_collect,
                                &list);
    for (size_t i = 0; rc == 0 && i < list.n; i++) {
        catalog_record_t rec;
        catalog_track_t t;
        rc = catalog_store_load(self, txn, CATALOG_TRACKS, s_ids_at(&list, i), &rec);
        if (rc == 0 && catalog_track_decode(&rec.msg.data, &t)) {
            /* Every entry of the track goes, then every entry comes back
               with the new name: another artist of the track whose name
               normalises like the old one keeps its entry. */
            rc = s_track_names(self, txn, &t, old, false);
            if (rc == 0)
                rc = s_track_names(self, txn, &t, renamed, true);
        } else if (rc == MDB_NOTFOUND)
            rc = 0; /* an index entry outliving its track: never written */
        else if (rc == 0)
            rc = MDB_CORRUPTED;
        catalog_record_release(&rec);
    }
    free(list.bytes);
    free(list.ends);
    return rc;
}

int catalog_store_match_isrc(catalog_store_t *self, MDB_txn *txn, const char *isrc,
                             catalog_str_t *id)
{
    MDB_val key = {.mv_size = strlen(isrc), .mv_data = (void *)isrc}, value;
    /* On a DUPSORT database mdb_get answers the first (smallest) value. */
    int rc = mdb_get(txn, self->indexes[CATALOG_ISRC_TRACKS], &key, &value);
    if (rc == 0)
        *id = (catalog_str_t){value.mv_data, value.mv_size};
    return rc;
}

int catalog_store_match_name(catalog_store_t *self, MDB_txn *txn, catalog_str_t artist,
                             catalog_str_t title, catalog_str_t *id)
{
    s_name_key_t name;
    if (!s_name_key(artist, title, &name))
        return MDB_NOTFOUND;
    MDB_val key = {.mv_size = name.len, .mv_data = name.bytes}, value;
    int rc = mdb_get(txn, self->indexes[CATALOG_NAME_TRACKS], &key, &value);
    if (rc == 0)
        *id = (catalog_str_t){value.mv_data, value.mv_size};
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
