/*  musicbus-catalog — artists, albums and tracks, and what listeners can
    play of them.

    Answers the catalog's bus ops (README.md) from LMDB. Each write op runs
    in one write transaction: it checks what it refers to, moves the index
    entries, writes the record and adds its event to the outbox, then
    commits or aborts as a whole, so several worker processes sharing the
    environment never see half a change, and an event exists exactly when
    its change does. Reads pack stored records verbatim.

    The consumer group "catalog-audio" applies the transcode actor's
    events (audio.uploaded, audio.ready, audio.failed) to each track's
    list of audio versions (catalog_audio.h) and keeps the track's "audio"
    object in step, publishing catalog.track "updated" in the same
    transaction when that object changes. track.stream signs a media URL
    for the track's current version (lib/mb_media.h). */
#include "catalog.h"

#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "catalog_audio.h"
#include "catalog_model.h"
#include "catalog_store.h"
#include "mb_alloc.h"
#include "mb_config.h"
#include "mb_error.h"
#include "mb_id.h"
#include "mb_jwt.h"
#include "mb_log.h"
#include "mb_media.h"
#include "mb_msgpack.h"

#define CATALOG_SERVICE "catalog"
#define CATALOG_MAX_DBS 12      /* CATALOG_STORE_DBS, with room to grow */
#define CATALOG_PAGE_DEFAULT 20 /* items per page when limit is absent */
#define CATALOG_PAGE_MAX 50
#define CATALOG_OFFSET_MAX 100000
#define CATALOG_GET_MANY_MAX 50 /* ids per track.get_many */
#define CATALOG_LINK_MAX 1024   /* a next/previous URL: room for a percent-encoded id */
#define CATALOG_MATCH_MAX 1000  /* queries per track.match */
#define CATALOG_AUDIO_GROUP "catalog-audio"
#define CATALOG_AUDIO_BATCH 200 /* events per consumer transaction (request writes wait) */
#define CATALOG_ENV_STREAM_TTL "MUSICBUS_STREAM_TTL" /* seconds a stream URL is valid */
#define CATALOG_STREAM_TTL_DEFAULT (6 * 3600)
#define CATALOG_STREAM_TTL_MIN 60
#define CATALOG_STREAM_TTL_MAX (7 * 86400)
#define CATALOG_FREE_KBPS 128 /* highest rung a free listener's grant reaches (mb_media.h) */
#define CATALOG_URL_MAX (16 + MB_MEDIA_TOKEN_MAX + CATALOG_VERSION_MAX + 16)

static const char *s_kind_names[] = {"artist", "album", "track"};
/*  Event topics, by catalog_kind_t. */
static const char *s_topics[] = {"catalog.artist", "catalog.album", "catalog.track"};

/*  What the open hook makes: shared by the request handlers (main thread)
    and the consumer (a thread of its own); nothing here changes after
    open, so no lock is needed. */
typedef struct {
    catalog_store_t *store;
    mb_media_key_t media_key; /* signs stream URLs */
    bool media_ready;         /* a media secret was configured */
    long stream_ttl_s;        /* seconds a stream URL is valid */
} s_state_t;

/*  --media-secret-file, else NULL (catalog_set_media_secret_file()). */
static const char *s_media_secret_file;

void catalog_set_media_secret_file(const char *path)
{
    s_media_secret_file = path;
}

static catalog_store_t *s_store(mb_call_t *call)
{
    return ((s_state_t *)mb_call_state(call))->store;
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

/*  Packs an event's data {"action", "id", "object"} into a new buffer,
    the caller's to destroy; `object` NULL packs nil. */
static msgpack_sbuffer s_event_data(const char *action, catalog_str_t id,
                                    const msgpack_sbuffer *object)
{
    msgpack_sbuffer data;
    msgpack_sbuffer_init(&data);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &data, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    mb_pack_cstr(&pk, "action");
    mb_pack_cstr(&pk, action);
    mb_pack_cstr(&pk, "id");
    mb_pack_strn(&pk, id.ptr, id.len);
    mb_pack_cstr(&pk, "object");
    if (object)
        mb_pack_raw(&pk, object->data, object->size);
    else
        msgpack_pack_nil(&pk);
    return data;
}

/*  Adds the event of a change to the outbox in `txn`: topic
    catalog.<kind>, key the id, data {"action", "id", "object"} where
    object is the record as stored and answered (`object` NULL: nil, for
    a delete). Returns 0, or non-zero after answering and aborting `txn`. */
static int s_event(mb_call_t *call, MDB_txn *txn, catalog_kind_t kind, const char *action,
                   catalog_str_t id, const msgpack_sbuffer *object)
{
    char key[MB_EVENT_KEY_MAX + 1];
    if (id.len > MB_EVENT_KEY_MAX || memchr(id.ptr, '\0', id.len)) {
        /* Ids the actor made are 22 base62 characters; this is a record
           written by something else. */
        mdb_txn_abort(txn);
        mb_call_error(call, 500, "internal", NULL, "this record's id cannot key an event");
        return -1;
    }
    memcpy(key, id.ptr, id.len);
    key[id.len] = '\0';
    msgpack_sbuffer data = s_event_data(action, id, object);
    int rc = mb_call_outbox_add(call, txn, s_topics[kind], key, data.data, data.size);
    msgpack_sbuffer_destroy(&data);
    if (rc)
        mdb_txn_abort(txn);
    return rc;
}

/*  Writes `record` under `id` with its event (201: "created", else
    "updated"), commits, and answers `status` with the record. Consumes
    `txn` whatever happens. */
static void s_save(mb_call_t *call, MDB_txn *txn, catalog_kind_t kind, catalog_str_t id,
                   const void *record, int status)
{
    msgpack_sbuffer buf = s_packed(record, kind);
    int rc = catalog_store_put(s_store(call), txn, kind, id, buf.data, buf.size);
    if (rc)
        mb_call_abort(call, txn, rc);
    else if (s_event(call, txn, kind, status == 201 ? "created" : "updated", id, &buf) != 0)
        ; /* answered */
    else if ((rc = mdb_txn_commit(txn)) != 0)
        mb_call_db_error(call, rc);
    else
        mb_pack_raw(mb_call_reply(call, status), buf.data, buf.size);
    msgpack_sbuffer_destroy(&buf);
}

/*  Deletes record `id` with its "deleted" event, commits, and answers
    204. Consumes `txn`. */
static void s_remove(mb_call_t *call, MDB_txn *txn, catalog_kind_t kind, catalog_str_t id)
{
    int rc = catalog_store_del(s_store(call), txn, kind, id);
    if (rc)
        mb_call_abort(call, txn, rc);
    else if (s_event(call, txn, kind, "deleted", id, NULL) != 0)
        ; /* answered */
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
            mb_call_abort(call, txn, rc);
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
            mb_call_abort(call, txn, rc);
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
        mb_call_abort(call, txn, rc);
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
        mb_call_abort(call, txn, rc);
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
    if (!s_id(call, id) || !(*txn = mb_call_begin(call, true)))
        return false;
    int rc = catalog_store_load(s_store(call), *txn, kind, *id, rec);
    if (rc == 0)
        return true;
    catalog_record_release(rec);
    if (rc == MDB_NOTFOUND) {
        mdb_txn_abort(*txn);
        s_not_found(call, kind, *id);
    } else
        mb_call_abort(call, *txn, rc);
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
    MDB_txn *txn = mb_call_begin(call, false);
    if (!txn)
        return;
    int rc;
    if (!catalog_store_exists(s_store(call), txn, owner, id, &rc)) {
        if (rc)
            mb_call_abort(call, txn, rc);
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
    MDB_txn *txn = mb_call_begin(call, false);
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
    MDB_txn *txn = mb_call_begin(call, false);
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
    MDB_txn *txn = mb_call_begin(call, false);
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

/* ---- track.match ------------------------------------------------------------------------ */

/*  One query of track.match; a null field is an absent one. */
typedef struct {
    catalog_str_t isrc, artist, title;
} s_query_t;

/*  Reads string-or-nil field `name` of query `i` into *out. */
static bool s_query_str(mb_call_t *call, uint32_t i, const char *name, const msgpack_object *o,
                        catalog_str_t *out)
{
    if (o->type == MSGPACK_OBJECT_NIL)
        return true;
    if (mb_obj_str(o, &out->ptr, &out->len) && out->len <= CATALOG_MATCH_TEXT_MAX)
        return true;
    char field[48];
    snprintf(field, sizeof field, "queries[%u].%s", i, name);
    mb_call_error(call, 400, "invalid", field, "%s must be a string of at most %d bytes, or null",
                  field, CATALOG_MATCH_TEXT_MAX);
    return false;
}

/*  Reads args.queries into q (CATALOG_MATCH_MAX slots); sets *n. False
    after answering 400. */
static bool s_match_queries(mb_call_t *call, s_query_t *q, uint32_t *n)
{
    const msgpack_object *queries = mb_call_arg(call, "queries");
    if (!queries || queries->type != MSGPACK_OBJECT_ARRAY || queries->via.array.size == 0 ||
        queries->via.array.size > CATALOG_MATCH_MAX) {
        mb_call_error(call, 400, "invalid", "queries", "queries must be a list of 1 to %d queries",
                      CATALOG_MATCH_MAX);
        return false;
    }
    *n = queries->via.array.size;
    for (uint32_t i = 0; i < *n; i++) {
        const msgpack_object *o = &queries->via.array.ptr[i];
        char field[48];
        snprintf(field, sizeof field, "queries[%u]", i);
        if (o->type != MSGPACK_OBJECT_MAP) {
            mb_call_error(call, 400, "invalid", field, "%s must be a map", field);
            return false;
        }
        q[i] = (s_query_t){{NULL, 0}, {NULL, 0}, {NULL, 0}};
        for (uint32_t k = 0; k < o->via.map.size; k++) {
            const msgpack_object *key = &o->via.map.ptr[k].key, *val = &o->via.map.ptr[k].val;
            bool ok;
            if (mb_obj_str_eq(key, "isrc"))
                ok = s_query_str(call, i, "isrc", val, &q[i].isrc);
            else if (mb_obj_str_eq(key, "artist"))
                ok = s_query_str(call, i, "artist", val, &q[i].artist);
            else if (mb_obj_str_eq(key, "title"))
                ok = s_query_str(call, i, "title", val, &q[i].title);
            else {
                mb_call_error(call, 400, "invalid", field,
                              "%s may hold only isrc, artist and title", field);
                ok = false;
            }
            if (!ok)
                return false;
        }
    }
    return true;
}

/*  Finds the track a query names: by ISRC first, else by artist and
    title. Sets *id (borrowed from the map) or returns MDB_NOTFOUND. */
static int s_match_one(catalog_store_t *store, MDB_txn *txn, const s_query_t *q, catalog_str_t *id)
{
    char isrc[CATALOG_ISRC_LEN + 1];
    int rc = MDB_NOTFOUND;
    if (q->isrc.ptr && catalog_isrc_loose(q->isrc.ptr, q->isrc.len, isrc))
        rc = catalog_store_match_isrc(store, txn, isrc, id);
    if (rc == MDB_NOTFOUND && q->artist.ptr && q->title.ptr)
        rc = catalog_store_match_name(store, txn, q->artist, q->title, id);
    return rc;
}

/*  Packs {id, artist_ids, album_id, isrc, duration_ms} of track `id`, or
    nil when it is gone. */
static int s_pack_match(catalog_store_t *store, MDB_txn *txn, msgpack_packer *pk, catalog_str_t id)
{
    MDB_val value;
    int rc = catalog_store_get(store, txn, CATALOG_TRACKS, id, &value);
    if (rc == MDB_NOTFOUND) {
        msgpack_pack_nil(pk); /* an index entry outliving its track: never written */
        return 0;
    }
    if (rc)
        return rc;
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    size_t used = 0;
    catalog_track_t t;
    /* A read transaction: the value stays put until it ends. */
    if (msgpack_unpack_next(&msg, value.mv_data, value.mv_size, &used) != MSGPACK_UNPACK_SUCCESS ||
        !catalog_track_decode(&msg.data, &t))
        rc = MDB_CORRUPTED;
    else {
        msgpack_pack_map(pk, 5);
        mb_pack_cstr(pk, "id");
        mb_pack_strn(pk, t.id.ptr, t.id.len);
        mb_pack_cstr(pk, "artist_ids");
        msgpack_pack_array(pk, t.n_artist_ids);
        for (size_t i = 0; i < t.n_artist_ids; i++)
            mb_pack_strn(pk, t.artist_ids[i].ptr, t.artist_ids[i].len);
        mb_pack_cstr(pk, "album_id");
        mb_pack_strn(pk, t.album_id.ptr, t.album_id.len);
        mb_pack_cstr(pk, "isrc");
        if (t.isrc[0])
            mb_pack_cstr(pk, t.isrc);
        else
            msgpack_pack_nil(pk);
        mb_pack_cstr(pk, "duration_ms");
        msgpack_pack_int64(pk, t.duration_ms);
    }
    msgpack_unpacked_destroy(&msg);
    return rc;
}

/*  Bus only (the play importer): {matches: [match or nil]} in query order. */
static void s_handle_track_match(mb_call_t *call)
{
    s_query_t *q = mb_calloc(CATALOG_MATCH_MAX, sizeof *q);
    uint32_t n;
    MDB_txn *txn;
    if (!s_match_queries(call, q, &n) || !(txn = mb_call_begin(call, false))) {
        free(q);
        return;
    }
    msgpack_packer *pk = mb_call_reply(call, 200);
    msgpack_pack_map(pk, 1);
    mb_pack_cstr(pk, "matches");
    msgpack_pack_array(pk, n);
    int rc = 0;
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        catalog_str_t id;
        rc = s_match_one(s_store(call), txn, &q[i], &id);
        if (rc == MDB_NOTFOUND) {
            msgpack_pack_nil(pk);
            rc = 0;
        } else if (rc == 0)
            rc = s_pack_match(s_store(call), txn, pk, id);
    }
    if (rc)
        mb_call_db_error(call, rc);
    mdb_txn_abort(txn);
    free(q);
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
    MDB_txn *txn = mb_call_begin(call, true);
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
    MDB_txn *txn = mb_call_begin(call, true);
    if (!txn || !s_artists_exist(call, txn, al.artist_ids, al.n_artist_ids))
        return;
    int rc = catalog_store_link_album(s_store(call), txn, &al);
    if (rc)
        mb_call_abort(call, txn, rc);
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
    MDB_txn *txn = mb_call_begin(call, true);
    if (!txn || !s_place_free(call, txn, &t) ||
        !s_artists_exist(call, txn, t.artist_ids, t.n_artist_ids))
        return;
    int rc = catalog_store_link_track(s_store(call), txn, &t);
    if (rc)
        mb_call_abort(call, txn, rc);
    else
        s_save(call, txn, CATALOG_TRACKS, t.id, &t, 201);
}

/* ---- updates ----------------------------------------------------------------------------- */

/*  A new name moves the name index entries of every track of the artist. */
static void s_update_artist(mb_call_t *call, MDB_txn *txn, const catalog_artist_t *old)
{
    catalog_artist_t a = *old;
    if (!catalog_artist_apply(call, mb_call_arg(call, "body"), &a, false)) {
        mdb_txn_abort(txn);
        return;
    }
    catalog_now(a.updated_at);
    int rc = catalog_store_artist_renamed(s_store(call), txn, old, &a);
    if (rc)
        mb_call_abort(call, txn, rc);
    else
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
        mb_call_abort(call, txn, rc);
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
        mb_call_abort(call, txn, rc);
        return;
    }
    if ((t.position_given && !s_place_free(call, txn, &t)) ||
        (t.artist_ids_given && !s_artists_exist(call, txn, t.artist_ids, t.n_artist_ids)))
        return;
    catalog_now(t.updated_at);
    rc = catalog_store_link_track(s_store(call), txn, &t);
    if (rc)
        mb_call_abort(call, txn, rc);
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
        mb_call_abort(call, txn, MDB_CORRUPTED);
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
        mb_call_abort(call, txn, MDB_CORRUPTED);
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
        mb_call_abort(call, txn, MDB_CORRUPTED);
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
        mb_call_abort(call, txn, rc);
    catalog_record_release(&rec);
}

static bool s_forget_versions(mb_call_t *call, MDB_txn *txn, catalog_str_t track_id);

/*  The track's audio versions go with it: audio.version_removed for each
    one tells the transcode actor to delete its files. */
static void s_handle_track_delete(mb_call_t *call)
{
    catalog_str_t id;
    MDB_txn *txn;
    catalog_record_t rec;
    catalog_track_t t;
    if (!s_open_record(call, CATALOG_TRACKS, &id, &txn, &rec))
        return;
    int rc = catalog_track_decode(&rec.msg.data, &t) ? 0 : MDB_CORRUPTED;
    if (rc == 0 && (rc = catalog_store_unlink_track(s_store(call), txn, &t)) == 0 &&
        s_forget_versions(call, txn, id))
        s_remove(call, txn, CATALOG_TRACKS, id);
    if (rc)
        mb_call_abort(call, txn, rc);
    catalog_record_release(&rec);
}

/* ---- audio: shared by the consumer and the ops ---------------------------------------------- */

/*  Loads the audio versions of track `id` into *list (empty when it has
    none); *rec holds what *list borrows (release it whatever is
    returned). Returns 0, MDB_CORRUPTED or another LMDB code. */
static int s_load_versions(catalog_store_t *store, MDB_txn *txn, catalog_str_t id,
                           catalog_record_t *rec, catalog_versions_t *list)
{
    catalog_versions_init(list);
    int rc = catalog_store_load(store, txn, CATALOG_TRACK_AUDIO, id, rec);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc == 0 && !catalog_versions_decode(&rec->msg.data, list))
        rc = MDB_CORRUPTED;
    return rc;
}

static msgpack_sbuffer s_packed_versions(const catalog_versions_t *list)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    catalog_versions_pack(&pk, list);
    return buf;
}

/*  Stores `list` under track `id` when its stored form differs from
    `before` (what was stored; size 0 when nothing was). Sets *changed. */
static int s_store_versions(catalog_store_t *store, MDB_txn *txn, catalog_str_t id,
                            const catalog_record_t *before, const catalog_versions_t *list,
                            bool *changed)
{
    msgpack_sbuffer buf = s_packed_versions(list);
    *changed = buf.size != before->size || memcmp(buf.data, before->data, buf.size) != 0;
    int rc =
        *changed ? catalog_store_put(store, txn, CATALOG_TRACK_AUDIO, id, buf.data, buf.size) : 0;
    msgpack_sbuffer_destroy(&buf);
    return rc;
}

/*  Copies a string into a NUL-terminated buffer of cap bytes; false when
    it does not fit or holds a NUL (then it cannot key an event). */
static bool s_cstr(catalog_str_t s, char *out, size_t cap)
{
    if (!s.ptr || s.len >= cap || memchr(s.ptr, '\0', s.len))
        return false;
    memcpy(out, s.ptr, s.len);
    out[s.len] = '\0';
    return true;
}

/*  Packs audio.version_removed {track_id, version} into a new buffer. */
static msgpack_sbuffer s_removed_data(catalog_str_t track_id, catalog_str_t version)
{
    msgpack_sbuffer data;
    msgpack_sbuffer_init(&data);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &data, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    mb_pack_cstr(&pk, "track_id");
    mb_pack_strn(&pk, track_id.ptr, track_id.len);
    mb_pack_cstr(&pk, "version");
    mb_pack_strn(&pk, version.ptr, version.len);
    return data;
}

/*  Adds audio.version_removed for `version` of `track_id`, keyed by the
    version. Returns 0, or non-zero after answering (the caller aborts). */
static int s_removed_event(mb_call_t *call, MDB_txn *txn, catalog_str_t track_id,
                           catalog_str_t version)
{
    char key[CATALOG_VERSION_MAX + 1];
    if (!s_cstr(version, key, sizeof key)) {
        mb_call_error(call, 500, "internal", NULL, "a stored version id cannot key an event");
        return -1;
    }
    msgpack_sbuffer data = s_removed_data(track_id, version);
    int rc = mb_call_outbox_add(call, txn, CATALOG_TOPIC_REMOVED, key, data.data, data.size);
    msgpack_sbuffer_destroy(&data);
    return rc;
}

/*  For track.delete: deletes the track's versions, with one
    audio.version_removed per version that was not removed already.
    True, or false after answering and aborting `txn`. */
static bool s_forget_versions(mb_call_t *call, MDB_txn *txn, catalog_str_t track_id)
{
    catalog_record_t rec;
    catalog_versions_t *list = mb_malloc(sizeof *list);
    bool answered = false;
    int rc = s_load_versions(s_store(call), txn, track_id, &rec, list);
    for (size_t i = 0; rc == 0 && !answered && i < list->n; i++)
        if (list->items[i].status != CATALOG_VERSION_REMOVED &&
            s_removed_event(call, txn, track_id, list->items[i].version) != 0) {
            mdb_txn_abort(txn);
            answered = true;
        }
    if (rc == 0 && !answered && rec.size > 0)
        rc = catalog_store_del(s_store(call), txn, CATALOG_TRACK_AUDIO, track_id);
    if (rc && !answered) {
        mb_call_abort(call, txn, rc);
        answered = true;
    }
    catalog_record_release(&rec);
    free(list);
    return !answered;
}

/*  Sets the track's audio object to what `list` says. When that changes
    it, stamps updated_at, stores the track and sets *event to the data of
    its catalog.track "updated" event (destroy it); otherwise *event is
    left empty (size 0). `rec` holds the stored track. */
static int s_sync_track(catalog_store_t *store, MDB_txn *txn, const catalog_record_t *rec,
                        const catalog_versions_t *list, msgpack_sbuffer *event)
{
    msgpack_sbuffer_init(event);
    catalog_track_t t;
    if (!catalog_track_decode(&rec->msg.data, &t))
        return MDB_CORRUPTED;
    catalog_audio_t audio;
    catalog_versions_summary(list, &audio);
    if (catalog_audio_equal(&audio, &t.audio))
        return 0;
    t.audio = audio;
    catalog_now(t.updated_at);
    msgpack_sbuffer buf = s_packed(&t, CATALOG_TRACKS);
    int rc = catalog_store_put(store, txn, CATALOG_TRACKS, t.id, buf.data, buf.size);
    if (rc == 0)
        *event = s_event_data("updated", t.id, &buf);
    msgpack_sbuffer_destroy(&buf);
    return rc;
}

/* ---- audio: the consumer ------------------------------------------------------------------ */

/*  LMDB's errno-like codes are positive; the runtime wants negative ones
    for failures it retries. */
static int s_transient(int rc)
{
    return rc > 0 ? MB_EDB : rc;
}

/*  Applies the event to the track's loaded versions and record; the
    caller has checked the track exists. */
static int s_apply_audio(s_state_t *self, MDB_txn *txn, const mb_event_t *event,
                         const catalog_audio_event_t *ev, const catalog_record_t *track)
{
    catalog_record_t stored;
    catalog_versions_t *list = mb_malloc(sizeof *list);
    int rc = s_load_versions(self->store, txn, ev->track_id, &stored, list);
    const char *why = NULL;
    char created_at[CATALOG_TIME_MAX + 1];
    if (event->time)
        catalog_time_format((int64_t)event->time, created_at);
    else
        catalog_now(created_at);
    msgpack_sbuffer update;
    msgpack_sbuffer_init(&update);
    bool changed = false;
    if (rc == MDB_CORRUPTED)
        rc = mb_event_invalid(event, "the stored versions of track %.*s do not decode",
                              (int)ev->track_id.len, ev->track_id.ptr);
    else if (rc == 0 && catalog_versions_apply(list, ev, created_at, &why) != 0)
        rc = mb_event_invalid(event, "%s", why);
    else if (rc == 0 &&
             (rc = s_store_versions(self->store, txn, ev->track_id, &stored, list, &changed)) ==
                 0 &&
             changed) {
        rc = s_sync_track(self->store, txn, track, list, &update);
        if (rc == MDB_CORRUPTED)
            rc = mb_event_invalid(event, "stored track %.*s does not decode", (int)ev->track_id.len,
                                  ev->track_id.ptr);
    }
    if (rc == 0 && update.size > 0) {
        char key[CATALOG_ID_MAX + 1];
        rc = s_cstr(ev->track_id, key, sizeof key)
                 ? mb_outbox_add(txn, s_topics[CATALOG_TRACKS], key, update.data, update.size)
                 : mb_event_invalid(event, "track id cannot key an event");
    }
    if (rc == 0 && changed)
        mb_debug(0, "catalog: %.*s: version %.*s of track %.*s applied", (int)event->topic_len,
                 event->topic, (int)ev->v.version.len, ev->v.version.ptr, (int)ev->track_id.len,
                 ev->track_id.ptr);
    msgpack_sbuffer_destroy(&update);
    catalog_record_release(&stored);
    free(list);
    return s_transient(rc);
}

int catalog_audio_apply(MDB_txn *txn, const mb_event_t *event, void *state)
{
    s_state_t *self = state;
    catalog_audio_event_t ev;
    const char *why = NULL;
    if (catalog_audio_event_read(event->topic, event->topic_len, event->data, &ev, &why) != 0)
        return mb_event_invalid(event, "%s", why);
    catalog_record_t track;
    int rc = catalog_store_load(self->store, txn, CATALOG_TRACKS, ev.track_id, &track);
    if (rc == MDB_NOTFOUND) {
        /* The track was deleted (or never existed): nothing to attach the
           version to. Not malformed, so not counted as skipped. */
        mb_warn(0,
                "catalog: %.*s for version %.*s of track %.*s, which the catalog does not "
                "have: ignored",
                (int)event->topic_len, event->topic, (int)ev.v.version.len, ev.v.version.ptr,
                (int)ev.track_id.len, ev.track_id.ptr);
        rc = 0;
    } else if (rc == MDB_CORRUPTED)
        rc = mb_event_invalid(event, "stored track %.*s does not decode", (int)ev.track_id.len,
                              ev.track_id.ptr);
    else if (rc == 0)
        rc = s_apply_audio(self, txn, event, &ev, &track);
    catalog_record_release(&track);
    return s_transient(rc);
}

/* ---- audio: the ops ---------------------------------------------------------------------- */

/*  Reads the caller's auth into *auth; false after answering 401. */
static bool s_auth(mb_call_t *call, mb_jwt_claims_t *auth)
{
    if (mb_jwt_read_auth(mb_call_request(call)->auth, auth) == 0)
        return true;
    mb_call_error(call, 401, "unauthenticated", NULL, "this operation needs a signed-in user");
    return false;
}

/*  The gateway lets only admins reach admin ops (x-access admin); the
    actor checks again because the bus has other clients. */
static bool s_admin(mb_call_t *call)
{
    mb_jwt_claims_t auth;
    if (!s_auth(call, &auth))
        return false;
    if (auth.roles & MB_ROLE_ADMIN)
        return true;
    mb_call_error(call, 403, "forbidden", NULL, "this operation is for admins");
    return false;
}

/*  Loads track args.id in `txn` into *rec and *t. False after answering
    (404, LMDB error) and aborting `txn`; *rec is released then. */
static bool s_load_track(mb_call_t *call, MDB_txn *txn, catalog_str_t id, catalog_record_t *rec,
                         catalog_track_t *t)
{
    int rc = catalog_store_load(s_store(call), txn, CATALOG_TRACKS, id, rec);
    if (rc == 0 && !catalog_track_decode(&rec->msg.data, t))
        rc = MDB_CORRUPTED;
    if (rc == 0)
        return true;
    catalog_record_release(rec);
    mdb_txn_abort(txn);
    if (rc == MDB_NOTFOUND)
        s_not_found(call, CATALOG_TRACKS, id);
    else
        mb_call_db_error(call, rc);
    return false;
}

/*  Packs `value` as RFC 3339 in whole seconds ("2026-11-28T08:10:00Z"). */
static void s_pack_seconds(msgpack_packer *pk, uint64_t value)
{
    time_t seconds = (time_t)value;
    struct tm tm;
    gmtime_r(&seconds, &tm);
    char text[32];
    size_t n = strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    mb_pack_strn(pk, text, n);
}

/*  Packs the stream grant. */
static void s_pack_stream(msgpack_packer *pk, const catalog_audio_t *audio, const char *version,
                          const char *token, uint64_t expires, bool premium)
{
    char url[CATALOG_URL_MAX];
    snprintf(url, sizeof url, "/media/%s/%s/master.m3u8", token, version);
    msgpack_pack_map(pk, 7);
    mb_pack_cstr(pk, "url");
    mb_pack_cstr(pk, url);
    mb_pack_cstr(pk, "expires_at");
    s_pack_seconds(pk, expires);
    mb_pack_cstr(pk, "version");
    mb_pack_cstr(pk, version);
    mb_pack_cstr(pk, "tier");
    mb_pack_cstr(pk, premium ? "premium" : "free");
    mb_pack_cstr(pk, "max_bitrate_kbps");
    if (premium)
        msgpack_pack_nil(pk);
    else
        msgpack_pack_uint32(pk, CATALOG_FREE_KBPS);
    mb_pack_cstr(pk, "loudness");
    msgpack_pack_map(pk, 3);
    mb_pack_cstr(pk, "integrated_lufs");
    catalog_number_pack(pk, audio->integrated_lufs);
    mb_pack_cstr(pk, "true_peak_dbtp");
    catalog_number_pack(pk, audio->true_peak_dbtp);
    mb_pack_cstr(pk, "lra_lu");
    catalog_number_pack(pk, audio->lra_lu);
    mb_pack_cstr(pk, "gain_db");
    catalog_number_pack(pk, audio->gain_db);
}

/*  A signed, expiring URL of the current version's master playlist, with
    the entitlement of the caller's tier (admins count as premium). 409
    "no_audio" while no version is ready; 503 "media_unavailable" when the
    actor has no media secret. */
static void s_handle_track_stream(mb_call_t *call)
{
    s_state_t *self = mb_call_state(call);
    mb_jwt_claims_t auth;
    catalog_str_t id;
    MDB_txn *txn;
    catalog_record_t rec;
    catalog_track_t t;
    if (!s_auth(call, &auth) || !s_id(call, &id) || !(txn = mb_call_begin(call, false)) ||
        !s_load_track(call, txn, id, &rec, &t))
        return;
    char version[CATALOG_VERSION_MAX + 1];
    char token[MB_MEDIA_TOKEN_MAX];
    bool premium = strcmp(auth.tier, "premium") == 0 || (auth.roles & MB_ROLE_ADMIN);
    uint64_t expires = (uint64_t)time(NULL) + (uint64_t)self->stream_ttl_s;
    if (t.audio.status != CATALOG_AUDIO_READY)
        mb_call_error(call, 409, "no_audio", NULL, "track %.*s has no audio ready to play (%s)",
                      (int)id.len, id.ptr, catalog_audio_status_name(t.audio.status));
    else if (!self->media_ready)
        mb_call_error(call, 503, "media_unavailable", NULL,
                      "streaming is not configured: the catalog has no media secret");
    else if (!s_cstr(t.audio.version, version, sizeof version) ||
             mb_media_sign(&self->media_key, version, expires,
                           premium ? MB_MEDIA_PREMIUM : MB_MEDIA_FREE, token) != 0)
        mb_call_error(call, 500, "internal", NULL, "the track's version cannot be signed");
    else
        s_pack_stream(mb_call_reply(call, 200), &t.audio, version, token, expires, premium);
    catalog_record_release(&rec);
    mdb_txn_abort(txn);
}

/*  Admins: the track's versions, newest first, with the current one. */
static void s_handle_track_audio_versions(mb_call_t *call)
{
    catalog_str_t id;
    MDB_txn *txn;
    catalog_record_t rec, stored;
    catalog_track_t t;
    if (!s_admin(call) || !s_id(call, &id) || !(txn = mb_call_begin(call, false)) ||
        !s_load_track(call, txn, id, &rec, &t))
        return;
    catalog_versions_t *list = mb_malloc(sizeof *list);
    int rc = s_load_versions(s_store(call), txn, id, &stored, list);
    if (rc)
        mb_call_db_error(call, rc);
    else
        catalog_versions_pack_answer(mb_call_reply(call, 200), id, list);
    catalog_record_release(&stored);
    catalog_record_release(&rec);
    free(list);
    mdb_txn_abort(txn);
}

/*  Reads args.version; false after answering 400. */
static bool s_version_arg(mb_call_t *call, catalog_str_t *version)
{
    const msgpack_object *o = mb_call_arg(call, "version");
    if (mb_obj_str(o, &version->ptr, &version->len) &&
        catalog_version_valid(version->ptr, version->len))
        return true;
    mb_call_error(call, 400, "invalid", "version",
                  "version must be 1 to %d characters of A-Z a-z 0-9 _ - .", CATALOG_VERSION_MAX);
    return false;
}

/*  Removes the version from the catalog's list (it stays as a tombstone so
    late events cannot revive it); when it was the current one, the next
    newest ready version becomes current. Publishes audio.version_removed
    so the transcode actor deletes its files, and catalog.track "updated"
    when the track's audio object changed. */
static void s_remove_version(mb_call_t *call, MDB_txn *txn, catalog_str_t id, catalog_str_t version,
                             const catalog_record_t *track)
{
    catalog_record_t stored;
    catalog_versions_t *list = mb_malloc(sizeof *list);
    msgpack_sbuffer update;
    msgpack_sbuffer_init(&update);
    bool changed;
    int i = -1, rc = s_load_versions(s_store(call), txn, id, &stored, list);
    if (rc == 0 && (i = catalog_versions_find(list, version)) < 0) {
        mdb_txn_abort(txn);
        mb_call_error(call, 404, "not_found", NULL, "track %.*s has no version %.*s", (int)id.len,
                      id.ptr, (int)version.len, version.ptr);
        goto done;
    }
    if (rc == 0) {
        list->items[i].status = CATALOG_VERSION_REMOVED;
        list->items[i].reason = (catalog_str_t){NULL, 0};
        rc = s_store_versions(s_store(call), txn, id, &stored, list, &changed);
    }
    if (rc == 0)
        rc = s_sync_track(s_store(call), txn, track, list, &update);
    if (rc) {
        mb_call_abort(call, txn, rc);
        goto done;
    }
    char key[CATALOG_ID_MAX + 1];
    bool keyed = update.size == 0 || s_cstr(id, key, sizeof key);
    if (!keyed)
        mb_call_error(call, 500, "internal", NULL, "this track's id cannot key an event");
    if (!keyed || s_removed_event(call, txn, id, version) != 0 ||
        (update.size > 0 && mb_call_outbox_add(call, txn, s_topics[CATALOG_TRACKS], key,
                                               update.data, update.size) != 0))
        mdb_txn_abort(txn);
    else if ((rc = mdb_txn_commit(txn)) != 0)
        mb_call_db_error(call, rc);
    else {
        mb_info(mb_call_rid(call), "catalog: version %.*s of track %.*s removed", (int)version.len,
                version.ptr, (int)id.len, id.ptr);
        msgpack_pack_nil(mb_call_reply(call, 204));
    }
done:
    msgpack_sbuffer_destroy(&update);
    catalog_record_release(&stored);
    free(list);
}

static void s_handle_track_audio_version_delete(mb_call_t *call)
{
    catalog_str_t id, version;
    MDB_txn *txn;
    catalog_record_t rec;
    catalog_track_t t;
    if (!s_admin(call) || !s_id(call, &id) || !s_version_arg(call, &version) ||
        !(txn = mb_call_begin(call, true)) || !s_load_track(call, txn, id, &rec, &t))
        return;
    s_remove_version(call, txn, id, version, &rec);
    catalog_record_release(&rec);
}

/* ---- the actor ------------------------------------------------------------------------------ */

static int s_open(MDB_env *env, void **state)
{
    s_state_t *self = mb_calloc(1, sizeof *self);
    int rc = mb_media_key_load(s_media_secret_file, &self->media_key);
    if (rc == 0)
        self->media_ready = true;
    else if (rc == MB_ENOTFOUND)
        mb_warn(0, "catalog: no media secret (MUSICBUS_MEDIA_SECRET, MUSICBUS_MEDIA_SECRET_FILE "
                   "or --media-secret-file): track.stream answers 503");
    else {
        mb_error(0, "catalog: the media secret cannot be used: %s", mb_strerror(rc));
        free(self);
        return rc;
    }
    self->stream_ttl_s = mb_config_env_long(CATALOG_ENV_STREAM_TTL, CATALOG_STREAM_TTL_DEFAULT,
                                            CATALOG_STREAM_TTL_MIN, CATALOG_STREAM_TTL_MAX);
    if (catalog_store_open(env, &self->store) != 0) {
        sodium_memzero(self, sizeof *self);
        free(self);
        return MB_EDB;
    }
    *state = self;
    return 0;
}

static void s_close(void *state)
{
    s_state_t *self = state;
    if (self) {
        catalog_store_destroy(&self->store);
        sodium_memzero(self, sizeof *self);
        free(self);
    }
}

static const mb_op_t s_ops[] = {
    {"artist.create", s_handle_artist_create},
    {"artist.get", s_handle_artist_get},
    {"artist.update", s_handle_artist_update},
    {"artist.delete", s_handle_artist_delete},
    {"artist.albums", s_handle_artist_albums},
    {"album.create", s_handle_album_create},
    {"album.get", s_handle_album_get},
    {"album.update", s_handle_album_update},
    {"album.delete", s_handle_album_delete},
    {"album.tracks", s_handle_album_tracks},
    {"track.create", s_handle_track_create},
    {"track.get", s_handle_track_get},
    {"track.get_many", s_handle_track_get_many},
    {"track.update", s_handle_track_update},
    {"track.delete", s_handle_track_delete},
    {"track.match", s_handle_track_match},
    {"track.stream", s_handle_track_stream},
    {"track.audio_versions", s_handle_track_audio_versions},
    {"track.audio_version_delete", s_handle_track_audio_version_delete},
    {NULL, NULL},
};

static const char *const s_audio_topics[] = {CATALOG_TOPIC_UPLOADED, CATALOG_TOPIC_READY,
                                             CATALOG_TOPIC_FAILED, NULL};

/*  One group for the three topics, so a version's events apply in the
    order the transcode actor published them. */
static const mb_consumer_def_t s_consumers[] = {
    {.group = CATALOG_AUDIO_GROUP,
     .topics = s_audio_topics,
     .apply = catalog_audio_apply,
     .batch = CATALOG_AUDIO_BATCH},
    {.group = NULL},
};

static const mb_actor_def_t s_def = {
    .name = CATALOG_SERVICE,
    .ops = s_ops,
    .max_dbs = CATALOG_MAX_DBS,
    .open = s_open,
    .close = s_close,
    .consumers = s_consumers,
};

const mb_actor_def_t *catalog_actor_def(void)
{
    return &s_def;
}

/*  Tests compile this file with CATALOG_NO_MAIN to reach the handlers
    through catalog_actor_def(). */
#ifndef CATALOG_NO_MAIN
/*  Takes our own flag out of argv (--media-secret-file PATH, also as
    --media-secret-file=PATH) and hands the rest to mb_actor_main(). */
int main(int argc, char **argv)
{
    char **rest = mb_calloc((size_t)argc + 1, sizeof *rest);
    int n = 0;
    rest[n++] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--media-secret-file") == 0 && i + 1 < argc)
            catalog_set_media_secret_file(argv[++i]);
        else if (strncmp(a, "--media-secret-file=", 20) == 0)
            catalog_set_media_secret_file(a + 20);
        else
            rest[n++] = argv[i];
    }
    int rc = mb_actor_main(&s_def, n, rest);
    free(rest);
    return rc;
}
#endif
