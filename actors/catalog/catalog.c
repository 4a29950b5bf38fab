/*  musicbus-catalog — artists, albums and tracks.

    Answers the catalog's bus ops (README.md) from LMDB. Each write op runs
    in one write transaction: it checks what it refers to, moves the index
    entries and writes the record, then commits or aborts as a whole, so
    several worker processes sharing the environment never see half a
    change. Reads pack stored records verbatim. */
#include "catalog.h"

#include <stdio.h>
#include <string.h>

#include "catalog_model.h"
#include "catalog_store.h"
#include "mb_error.h"
#include "mb_id.h"
#include "mb_msgpack.h"

#define CATALOG_SERVICE "catalog"
#define CATALOG_MAX_DBS 8       /* CATALOG_STORE_DBS, with room to grow */
#define CATALOG_PAGE_DEFAULT 20 /* items per page when limit is absent */
#define CATALOG_PAGE_MAX 50
#define CATALOG_OFFSET_MAX 100000
#define CATALOG_GET_MANY_MAX 50 /* ids per track.get_many */
#define CATALOG_LINK_MAX 1024   /* a next/previous URL: room for a percent-encoded id */

static const char *s_kind_names[] = {"artist", "album", "track"};

static catalog_store_t *s_store(mb_call_t *call)
{
    return mb_call_state(call);
}

/* ---- transactions ----------------------------------------------------- */

/*  Returns a new transaction, or NULL after answering the LMDB error. */
static MDB_txn *s_begin(mb_call_t *call, bool write)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(mb_call_env(call), NULL, write ? 0 : MDB_RDONLY, &txn);
    if (rc) {
        mb_call_db_error(call, rc);
        return NULL;
    }
    return txn;
}

/*  Aborts `txn` and answers LMDB result `rc`. */
static void s_fail(mb_call_t *call, MDB_txn *txn, int rc)
{
    mdb_txn_abort(txn);
    mb_call_db_error(call, rc);
}

/*  Packs a record into a new buffer, the caller's to destroy. */
static msgpack_sbuffer s_packed(const void *record, catalog_kind_t kind)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    if (kind == CATALOG_ARTISTS)
        catalog_artist_pack(&pk, record);
    else if (kind == CATALOG_ALBUMS)
        catalog_album_pack(&pk, record);
    else
        catalog_track_pack(&pk, record);
    return buf;
}

/*  Writes `record` under `id`, commits, and answers `status` with the
    record. Consumes `txn` whatever happens. */
static void s_save(mb_call_t *call, MDB_txn *txn, catalog_kind_t kind, catalog_str_t id,
                   const void *record, int status)
{
    msgpack_sbuffer buf = s_packed(record, kind);
    int rc = catalog_store_put(s_store(call), txn, kind, id, buf.data, buf.size);
    if (rc)
        s_fail(call, txn, rc);
    else if ((rc = mdb_txn_commit(txn)) != 0)
        mb_call_db_error(call, rc);
    else
        mb_pack_raw(mb_call_reply(call, status), buf.data, buf.size);
    msgpack_sbuffer_destroy(&buf);
}

/*  Deletes record `id`, commits, and answers 204. Consumes `txn`. */
static void s_remove(mb_call_t *call, MDB_txn *txn, catalog_kind_t kind, catalog_str_t id)
{
    int rc = catalog_store_del(s_store(call), txn, kind, id);
    if (rc)
        s_fail(call, txn, rc);
    else if ((rc = mdb_txn_commit(txn)) != 0)
        mb_call_db_error(call, rc);
    else
        msgpack_pack_nil(mb_call_reply(call, 204));
}

/* ---- arguments -------------------------------------------------------------- */

static bool s_id(mb_call_t *call, catalog_str_t *id)
{
    return catalog_id_arg(call, mb_call_arg(call, "id"), "id", id);
}

static bool s_int_arg(mb_call_t *call, const char *name, int64_t min, int64_t max, int64_t fallback,
                      size_t *out)
{
    const msgpack_object *o = mb_call_arg(call, name);
    int64_t value = fallback;
    if (o && (!mb_obj_int(o, &value) || value < min || value > max)) {
        mb_call_error(call, 400, "invalid", name, "%s must be an integer from %lld to %lld", name,
                      (long long)min, (long long)max);
        return false;
    }
    *out = (size_t)value;
    return true;
}

static bool s_paging_args(mb_call_t *call, size_t *limit, size_t *offset)
{
    return s_int_arg(call, "limit", 1, CATALOG_PAGE_MAX, CATALOG_PAGE_DEFAULT, limit) &&
           s_int_arg(call, "offset", 0, CATALOG_OFFSET_MAX, 0, offset);
}

/* ---- what a write refers to ------------------------------------------------ */

static void s_not_found(mb_call_t *call, catalog_kind_t kind, catalog_str_t id)
{
    mb_call_error(call, 404, "not_found", NULL, "no %s with id %.*s", s_kind_names[kind],
                  (int)id.len, id.ptr);
}

/*  True when every artist exists; otherwise answers (400 naming the first
    missing one, or the LMDB error) and aborts `txn`. */
static bool s_artists_exist(mb_call_t *call, MDB_txn *txn, const catalog_str_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc;
        if (catalog_store_exists(s_store(call), txn, CATALOG_ARTISTS, ids[i], &rc))
            continue;
        if (rc) {
            s_fail(call, txn, rc);
            return false;
        }
        mdb_txn_abort(txn);
        char field[48];
        snprintf(field, sizeof field, "body.artist_ids[%zu]", i);
        mb_call_error(call, 400, "invalid", field, "no artist with id %.*s", (int)ids[i].len,
                      ids[i].ptr);
        return false;
    }
    return true;
}

/*  True when the track's album exists and its position there is free;
    otherwise answers (400, 409 or the LMDB error) and aborts `txn`. Call
    after unlinking the track's old position. */
static bool s_place_free(mb_call_t *call, MDB_txn *txn, const catalog_track_t *t)
{
    int rc;
    bool taken = false;
    if (t->album_id_given &&
        !catalog_store_exists(s_store(call), txn, CATALOG_ALBUMS, t->album_id, &rc)) {
        if (rc) {
            s_fail(call, txn, rc);
            return false;
        }
        mdb_txn_abort(txn);
        mb_call_error(call, 400, "invalid", "body.album_id", "no album with id %.*s",
                      (int)t->album_id.len, t->album_id.ptr);
        return false;
    }
    rc = catalog_store_position_taken(s_store(call), txn, t->album_id, t->disc_number,
                                      t->track_number, &taken);
    if (rc) {
        s_fail(call, txn, rc);
        return false;
    }
    if (taken) {
        mdb_txn_abort(txn);
        mb_call_error(call, 409, "conflict", "body.track_number",
                      "album %.*s already has a track at disc %lld, track %lld",
                      (int)t->album_id.len, t->album_id.ptr, (long long)t->disc_number,
                      (long long)t->track_number);
        return false;
    }
    return true;
}

/*  Refuses (409, aborting `txn`) while `index` still lists something under
    `id`; true when it lists nothing. */
static bool s_unreferenced(mb_call_t *call, MDB_txn *txn, catalog_index_t index, catalog_str_t id,
                           const char *what)
{
    size_t count;
    int rc = catalog_store_count(s_store(call), txn, index, id, &count);
    if (rc) {
        s_fail(call, txn, rc);
        return false;
    }
    if (count > 0) {
        mdb_txn_abort(txn);
        mb_call_error(call, 409, "conflict", NULL, "%.*s still has %zu %s%s; delete them first",
                      (int)id.len, id.ptr, count, what, count == 1 ? "" : "s");
        return false;
    }
    return true;
}

/*  Checks the id argument, begins a write transaction and loads record
    `id`. True with *txn and *rec (release it); otherwise answered (400,
    404, LMDB error) with nothing to release. */
static bool s_open_record(mb_call_t *call, catalog_kind_t kind, catalog_str_t *id, MDB_txn **txn,
                          catalog_record_t *rec)
{
    if (!s_id(call, id) || !(*txn = s_begin(call, true)))
        return false;
    int rc = catalog_store_load(s_store(call), *txn, kind, *id, rec);
    if (rc == 0)
        return true;
    catalog_record_release(rec);
    if (rc == MDB_NOTFOUND) {
        mdb_txn_abort(*txn);
        s_not_found(call, kind, *id);
    } else
        s_fail(call, *txn, rc);
    return false;
}

/* ---- pages --------------------------------------------------------------------- */

typedef struct {
    mb_call_t *call;
    MDB_txn *txn;
    msgpack_packer *pk;
    catalog_kind_t kind; /* what the index entries name */
    size_t packed;       /* items packed so far */
} s_page_t;

static int s_pack_item(void *arg, catalog_str_t id)
{
    s_page_t *page = arg;
    MDB_val value;
    int rc = catalog_store_get(s_store(page->call), page->txn, page->kind, id, &value);
    if (rc == 0)
        mb_pack_raw(page->pk, value.mv_data, value.mv_size);
    else if (rc == MDB_NOTFOUND)
        msgpack_pack_nil(page->pk); /* an index entry outliving its record: never written */
    else
        return rc;
    page->packed++;
    return 0;
}

/*  Packs "/v1/<collection>/<id>/<list>?offset=N&limit=N", the id
    percent-encoded. */
static void s_pack_link(msgpack_packer *pk, const char *collection, catalog_str_t id,
                        const char *list, size_t offset, size_t limit)
{
    char link[CATALOG_LINK_MAX];
    size_t n = (size_t)snprintf(link, sizeof link, "/v1/%s/", collection);
    for (size_t i = 0; i < id.len && n + 3 < sizeof link; i++) {
        unsigned char c = (unsigned char)id.ptr[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            (c && strchr("-._~", c)))
            link[n++] = (char)c;
        else
            n += (size_t)snprintf(link + n, sizeof link - n, "%%%02X", c);
    }
    snprintf(link + n, sizeof link - n, "/%s?offset=%zu&limit=%zu", list, offset, limit);
    mb_pack_cstr(pk, link);
}

/*  Packs a paging object over the entries of `index` under `key`, which
    name records of `kind`; `collection`/`list` make the next and previous
    links. Returns 0 or an LMDB code (then the caller answers it). */
static int s_pack_page(mb_call_t *call, msgpack_packer *pk, MDB_txn *txn, catalog_index_t index,
                       catalog_kind_t kind, catalog_str_t key, const char *collection,
                       const char *list, size_t limit, size_t offset)
{
    size_t total;
    int rc = catalog_store_count(s_store(call), txn, index, key, &total);
    if (rc)
        return rc;
    size_t n = offset < total ? total - offset : 0;
    if (n > limit)
        n = limit;
    msgpack_pack_map(pk, 6);
    mb_pack_cstr(pk, "items");
    msgpack_pack_array(pk, n);
    s_page_t page = {.call = call, .txn = txn, .pk = pk, .kind = kind};
    rc = catalog_store_page(s_store(call), txn, index, key, offset, n, s_pack_item, &page);
    if (rc)
        return rc;
    for (; page.packed < n; page.packed++)
        msgpack_pack_nil(pk); /* keeps the array whole if the index ran short */
    mb_pack_cstr(pk, "limit");
    msgpack_pack_uint64(pk, limit);
    mb_pack_cstr(pk, "offset");
    msgpack_pack_uint64(pk, offset);
    mb_pack_cstr(pk, "total");
    msgpack_pack_uint64(pk, total);
    mb_pack_cstr(pk, "next");
    if (offset + limit < total)
        s_pack_link(pk, collection, key, list, offset + limit, limit);
    else
        msgpack_pack_nil(pk);
    mb_pack_cstr(pk, "previous");
    if (offset > 0)
        s_pack_link(pk, collection, key, list, offset > limit ? offset - limit : 0, limit);
    else
        msgpack_pack_nil(pk);
    return 0;
}

/*  Answers a page of `index` under the record named by args.id, 404 when
    that record does not exist. */
static void s_answer_page(mb_call_t *call, catalog_kind_t owner, catalog_index_t index,
                          catalog_kind_t kind, const char *collection, const char *list)
{
    catalog_str_t id;
    size_t limit, offset;
    if (!s_id(call, &id) || !s_paging_args(call, &limit, &offset))
        return;
    MDB_txn *txn = s_begin(call, false);
    if (!txn)
        return;
    int rc;
    if (!catalog_store_exists(s_store(call), txn, owner, id, &rc)) {
        if (rc)
            s_fail(call, txn, rc);
        else {
            mdb_txn_abort(txn);
            s_not_found(call, owner, id);
        }
        return;
    }
    rc = s_pack_page(call, mb_call_reply(call, 200), txn, index, kind, id, collection, list, limit,
                     offset);
    if (rc)
        mb_call_db_error(call, rc);
    mdb_txn_abort(txn);
}

/* ---- reads ------------------------------------------------------------------------ */

/*  Answers record args.id of `kind` as stored. */
static void s_answer_record(mb_call_t *call, catalog_kind_t kind)
{
    catalog_str_t id;
    if (!s_id(call, &id))
        return;
    MDB_txn *txn = s_begin(call, false);
    if (!txn)
        return;
    MDB_val value;
    int rc = catalog_store_get(s_store(call), txn, kind, id, &value);
    if (rc == 0)
        mb_pack_raw(mb_call_reply(call, 200), value.mv_data, value.mv_size);
    else if (rc == MDB_NOTFOUND)
        s_not_found(call, kind, id);
    else
        mb_call_db_error(call, rc);
    mdb_txn_abort(txn);
}

static void s_handle_artist_get(mb_call_t *call)
{
    s_answer_record(call, CATALOG_ARTISTS);
}

static void s_handle_track_get(mb_call_t *call)
{
    s_answer_record(call, CATALOG_TRACKS);
}

static void s_handle_artist_albums(mb_call_t *call)
{
    s_answer_page(call, CATALOG_ARTISTS, CATALOG_ARTIST_ALBUMS, CATALOG_ALBUMS, "artists",
                  "albums");
}

static void s_handle_album_tracks(mb_call_t *call)
{
    s_answer_page(call, CATALOG_ALBUMS, CATALOG_ALBUM_TRACKS, CATALOG_TRACKS, "albums", "tracks");
}

/*  The stored album plus "tracks": the first page of its tracks. */
static void s_handle_album_get(mb_call_t *call)
{
    catalog_str_t id;
    if (!s_id(call, &id))
        return;
    MDB_txn *txn = s_begin(call, false);
    if (!txn)
        return;
    MDB_val value;
    int rc = catalog_store_get(s_store(call), txn, CATALOG_ALBUMS, id, &value);
    msgpack_unpacked album;
    msgpack_unpacked_init(&album);
    size_t used = 0;
    if (rc == MDB_NOTFOUND)
        s_not_found(call, CATALOG_ALBUMS, id);
    else if (rc == 0 && (msgpack_unpack_next(&album, value.mv_data, value.mv_size, &used) !=
                             MSGPACK_UNPACK_SUCCESS ||
                         album.data.type != MSGPACK_OBJECT_MAP))
        rc = MDB_CORRUPTED;
    else if (rc == 0) {
        msgpack_packer *pk = mb_call_reply(call, 200);
        const msgpack_object_map *map = &album.data.via.map;
        msgpack_pack_map(pk, map->size + 1);
        for (uint32_t i = 0; i < map->size; i++) {
            mb_pack_object(pk, &map->ptr[i].key);
            mb_pack_object(pk, &map->ptr[i].val);
        }
        mb_pack_cstr(pk, "tracks");
        rc = s_pack_page(call, pk, txn, CATALOG_ALBUM_TRACKS, CATALOG_TRACKS, id, "albums",
                         "tracks", CATALOG_PAGE_DEFAULT, 0);
    }
    if (rc && rc != MDB_NOTFOUND)
        mb_call_db_error(call, rc);
    msgpack_unpacked_destroy(&album);
    mdb_txn_abort(txn);
}

/*  {"tracks": [...]} in the order asked, null for an unknown id. */
static void s_handle_track_get_many(mb_call_t *call)
{
    const msgpack_object *ids = mb_call_arg(call, "ids");
    if (ids == NULL || ids->type != MSGPACK_OBJECT_ARRAY || ids->via.array.size == 0 ||
        ids->via.array.size > CATALOG_GET_MANY_MAX) {
        mb_call_error(call, 400, "invalid", "ids", "ids must be a list of 1 to %d track ids",
                      CATALOG_GET_MANY_MAX);
        return;
    }
    catalog_str_t id[CATALOG_GET_MANY_MAX];
    for (uint32_t i = 0; i < ids->via.array.size; i++) {
        char field[16];
        snprintf(field, sizeof field, "ids[%u]", i);
        if (!catalog_id_arg(call, &ids->via.array.ptr[i], field, &id[i]))
            return;
    }
    MDB_txn *txn = s_begin(call, false);
    if (!txn)
        return;
    msgpack_packer *pk = mb_call_reply(call, 200);
    msgpack_pack_map(pk, 1);
    mb_pack_cstr(pk, "tracks");
    msgpack_pack_array(pk, ids->via.array.size);
    s_page_t page = {.call = call, .txn = txn, .pk = pk, .kind = CATALOG_TRACKS};
    int rc = 0;
    for (uint32_t i = 0; rc == 0 && i < ids->via.array.size; i++)
        rc = s_pack_item(&page, id[i]);
    if (rc)
        mb_call_db_error(call, rc);
    mdb_txn_abort(txn);
}

/* ---- creates -------------------------------------------------------------------------- */

/*  Gives a new record its id and timestamps. */
static void s_stamp_new(char id[MB_ID_LEN + 1], catalog_str_t *id_field, char *created_at,
                        char *updated_at)
{
    mb_id_new(id);
    *id_field = (catalog_str_t){id, MB_ID_LEN};
    catalog_now(created_at);
    memcpy(updated_at, created_at, CATALOG_TIME_MAX + 1);
}

static void s_handle_artist_create(mb_call_t *call)
{
    catalog_artist_t a;
    catalog_artist_init(&a);
    if (!catalog_artist_apply(call, mb_call_arg(call, "body"), &a, true))
        return;
    char id[MB_ID_LEN + 1];
    s_stamp_new(id, &a.id, a.created_at, a.updated_at);
    MDB_txn *txn = s_begin(call, true);
    if (txn)
        s_save(call, txn, CATALOG_ARTISTS, a.id, &a, 201);
}

static void s_handle_album_create(mb_call_t *call)
{
    catalog_album_t al;
    catalog_album_init(&al);
    if (!catalog_album_apply(call, mb_call_arg(call, "body"), &al, true))
        return;
    char id[MB_ID_LEN + 1];
    s_stamp_new(id, &al.id, al.created_at, al.updated_at);
    MDB_txn *txn = s_begin(call, true);
    if (!txn || !s_artists_exist(call, txn, al.artist_ids, al.n_artist_ids))
        return;
    int rc = catalog_store_link_album(s_store(call), txn, &al);
    if (rc)
        s_fail(call, txn, rc);
    else
        s_save(call, txn, CATALOG_ALBUMS, al.id, &al, 201);
}

static void s_handle_track_create(mb_call_t *call)
{
    catalog_track_t t;
    catalog_track_init(&t);
    if (!catalog_track_apply(call, mb_call_arg(call, "body"), &t, true))
        return;
    char id[MB_ID_LEN + 1];
    s_stamp_new(id, &t.id, t.created_at, t.updated_at);
    MDB_txn *txn = s_begin(call, true);
    if (!txn || !s_place_free(call, txn, &t) ||
        !s_artists_exist(call, txn, t.artist_ids, t.n_artist_ids))
        return;
    int rc = catalog_store_link_track(s_store(call), txn, &t);
    if (rc)
        s_fail(call, txn, rc);
    else
        s_save(call, txn, CATALOG_TRACKS, t.id, &t, 201);
}

/* ---- updates ----------------------------------------------------------------------------- */

static void s_update_artist(mb_call_t *call, MDB_txn *txn, const catalog_artist_t *old)
{
    catalog_artist_t a = *old;
    if (!catalog_artist_apply(call, mb_call_arg(call, "body"), &a, false)) {
        mdb_txn_abort(txn);
        return;
    }
    catalog_now(a.updated_at);
    s_save(call, txn, CATALOG_ARTISTS, a.id, &a, 200);
}

/*  Index entries are keyed by artist and release date, so they are moved
    whatever changed: unlink as stored, link as it will be. */
static void s_update_album(mb_call_t *call, MDB_txn *txn, const catalog_album_t *old)
{
    catalog_album_t al = *old;
    if (!catalog_album_apply(call, mb_call_arg(call, "body"), &al, false)) {
        mdb_txn_abort(txn);
        return;
    }
    if (al.artist_ids_given && !s_artists_exist(call, txn, al.artist_ids, al.n_artist_ids))
        return;
    catalog_now(al.updated_at);
    int rc = catalog_store_unlink_album(s_store(call), txn, old);
    if (rc == 0)
        rc = catalog_store_link_album(s_store(call), txn, &al);
    if (rc)
        s_fail(call, txn, rc);
    else
        s_save(call, txn, CATALOG_ALBUMS, al.id, &al, 200);
}

static void s_update_track(mb_call_t *call, MDB_txn *txn, const catalog_track_t *old)
{
    catalog_track_t t = *old;
    if (!catalog_track_apply(call, mb_call_arg(call, "body"), &t, false)) {
        mdb_txn_abort(txn);
        return;
    }
    int rc = catalog_store_unlink_track(s_store(call), txn, old);
    if (rc) {
        s_fail(call, txn, rc);
        return;
    }
    if ((t.position_given && !s_place_free(call, txn, &t)) ||
        (t.artist_ids_given && !s_artists_exist(call, txn, t.artist_ids, t.n_artist_ids)))
        return;
    catalog_now(t.updated_at);
    rc = catalog_store_link_track(s_store(call), txn, &t);
    if (rc)
        s_fail(call, txn, rc);
    else
        s_save(call, txn, CATALOG_TRACKS, t.id, &t, 200);
}

static void s_handle_artist_update(mb_call_t *call)
{
    catalog_str_t id;
    MDB_txn *txn;
    catalog_record_t rec;
    catalog_artist_t old;
    if (!s_open_record(call, CATALOG_ARTISTS, &id, &txn, &rec))
        return;
    if (catalog_artist_decode(&rec.msg.data, &old))
        s_update_artist(call, txn, &old);
    else
        s_fail(call, txn, MDB_CORRUPTED);
    catalog_record_release(&rec);
}

static void s_handle_album_update(mb_call_t *call)
{
    catalog_str_t id;
    MDB_txn *txn;
    catalog_record_t rec;
    catalog_album_t old;
    if (!s_open_record(call, CATALOG_ALBUMS, &id, &txn, &rec))
        return;
    if (catalog_album_decode(&rec.msg.data, &old))
        s_update_album(call, txn, &old);
    else
        s_fail(call, txn, MDB_CORRUPTED);
    catalog_record_release(&rec);
}

static void s_handle_track_update(mb_call_t *call)
{
    catalog_str_t id;
    MDB_txn *txn;
    catalog_record_t rec;
    catalog_track_t old;
    if (!s_open_record(call, CATALOG_TRACKS, &id, &txn, &rec))
        return;
    if (catalog_track_decode(&rec.msg.data, &old))
        s_update_track(call, txn, &old);
    else
        s_fail(call, txn, MDB_CORRUPTED);
    catalog_record_release(&rec);
}

/* ---- deletes ------------------------------------------------------------------------------ */

/*  Refused while albums or tracks name the artist: they would point at
    nothing. */
static void s_handle_artist_delete(mb_call_t *call)
{
    catalog_str_t id;
    MDB_txn *txn;
    catalog_record_t rec;
    if (!s_open_record(call, CATALOG_ARTISTS, &id, &txn, &rec))
        return;
    if (s_unreferenced(call, txn, CATALOG_ARTIST_ALBUMS, id, "album") &&
        s_unreferenced(call, txn, CATALOG_ARTIST_TRACKS, id, "track"))
        s_remove(call, txn, CATALOG_ARTISTS, id);
    catalog_record_release(&rec);
}

/*  Refused while the album has tracks. */
static void s_handle_album_delete(mb_call_t *call)
{
    catalog_str_t id;
    MDB_txn *txn;
    catalog_record_t rec;
    catalog_album_t al;
    if (!s_open_record(call, CATALOG_ALBUMS, &id, &txn, &rec))
        return;
    int rc = catalog_album_decode(&rec.msg.data, &al) ? 0 : MDB_CORRUPTED;
    if (rc == 0 && s_unreferenced(call, txn, CATALOG_ALBUM_TRACKS, id, "track")) {
        if ((rc = catalog_store_unlink_album(s_store(call), txn, &al)) == 0)
            s_remove(call, txn, CATALOG_ALBUMS, id);
    }
    if (rc)
        s_fail(call, txn, rc);
    catalog_record_release(&rec);
}

static void s_handle_track_delete(mb_call_t *call)
{
    catalog_str_t id;
    MDB_txn *txn;
    catalog_record_t rec;
    catalog_track_t t;
    if (!s_open_record(call, CATALOG_TRACKS, &id, &txn, &rec))
        return;
    int rc = catalog_track_decode(&rec.msg.data, &t) ? 0 : MDB_CORRUPTED;
    if (rc == 0 && (rc = catalog_store_unlink_track(s_store(call), txn, &t)) == 0)
        s_remove(call, txn, CATALOG_TRACKS, id);
    if (rc)
        s_fail(call, txn, rc);
    catalog_record_release(&rec);
}

/* ---- the actor ------------------------------------------------------------------------------ */

static int s_open(MDB_env *env, void **state)
{
    catalog_store_t *store;
    if (catalog_store_open(env, &store) != 0)
        return MB_EDB;
    *state = store;
    return 0;
}

static void s_close(void *state)
{
    catalog_store_t *store = state;
    catalog_store_destroy(&store);
}

static const mb_op_t s_ops[] = {
    {"artist.create", s_handle_artist_create},   {"artist.get", s_handle_artist_get},
    {"artist.update", s_handle_artist_update},   {"artist.delete", s_handle_artist_delete},
    {"artist.albums", s_handle_artist_albums},   {"album.create", s_handle_album_create},
    {"album.get", s_handle_album_get},           {"album.update", s_handle_album_update},
    {"album.delete", s_handle_album_delete},     {"album.tracks", s_handle_album_tracks},
    {"track.create", s_handle_track_create},     {"track.get", s_handle_track_get},
    {"track.get_many", s_handle_track_get_many}, {"track.update", s_handle_track_update},
    {"track.delete", s_handle_track_delete},     {NULL, NULL},
};

static const mb_actor_def_t s_def = {
    .name = CATALOG_SERVICE,
    .ops = s_ops,
    .max_dbs = CATALOG_MAX_DBS,
    .open = s_open,
    .close = s_close,
};

const mb_actor_def_t *catalog_actor_def(void)
{
    return &s_def;
}

/*  Tests compile this file with CATALOG_NO_MAIN to reach the handlers
    through catalog_actor_def(). */
#ifndef CATALOG_NO_MAIN
int main(int argc, char **argv)
{
    return mb_actor_main(&s_def, argc, argv);
}
#endif
