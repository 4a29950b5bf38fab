/*  stats_store — LMDB layout and event application (stats_store.h). */
#include "stats_store.h"

#include <stdlib.h>
#include <string.h>

#include "mb_alloc.h"
#include "mb_error.h"
#include "mb_log.h"
#include "mb_msgpack.h"
#include "stats_time.h"

struct stats_store {
    MDB_dbi dbi[STATS_DB_COUNT];
    MDB_dbi offsets; /* the runtime's "_offsets" (mb_events.h), read for log order */
};

static const struct {
    const char *name;
    unsigned flags;
} s_dbs[STATS_DB_COUNT] = {
    [STATS_DB_SEEN] = {"seen", 0},
    [STATS_DB_TRACKS] = {"tracks", 0},
    [STATS_DB_USERS] = {"users", 0},
    [STATS_DB_REPORTED] = {"reported", 0},
    [STATS_DB_HISTORY] = {"history", 0},
    [STATS_DB_TRACK_DAY] = {"track_day", 0},
    [STATS_DB_ARTIST_DAY] = {"artist_day", 0},
    [STATS_DB_LISTENERS_DAY] = {"listeners_day", MDB_DUPSORT},
    [STATS_DB_LISTENERS] = {"listeners", MDB_DUPSORT},
    [STATS_DB_CHART] = {"chart", 0},
    [STATS_DB_USER_TRACK_DAY] = {"user_track_day", 0},
    [STATS_DB_USER_TRACK] = {"user_track", 0},
    [STATS_DB_USER_ARTIST_DAY] = {"user_artist_day", 0},
    [STATS_DB_USER_ARTIST] = {"user_artist", 0},
    [STATS_DB_TRACK_TOTALS] = {"track_totals", 0},
};

/* ---- keys ------------------------------------------------------------------ */

void stats_key_init(stats_key_t *k)
{
    k->len = 0;
}

void stats_key_raw(stats_key_t *k, const void *data, size_t len)
{
    if (len > sizeof k->b - k->len)
        return;
    if (len)
        memcpy(k->b + k->len, data, len);
    k->len += len;
}

void stats_key_id(stats_key_t *k, stats_str_t id)
{
    if (id.len > 255 || id.len + 1 > sizeof k->b - k->len)
        return;
    k->b[k->len++] = (uint8_t)id.len;
    stats_key_raw(k, id.ptr, id.len);
}

void stats_key_u32(stats_key_t *k, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    stats_key_raw(k, b, 4);
}

void stats_put_u64(void *p, uint64_t v)
{
    uint8_t *b = p;
    for (int i = 7; i >= 0; i--, v >>= 8)
        b[i] = (uint8_t)v;
}

void stats_key_u64(stats_key_t *k, uint64_t v)
{
    uint8_t b[8];
    stats_put_u64(b, v);
    stats_key_raw(k, b, 8);
}

uint32_t stats_get_u32(const void *p)
{
    const uint8_t *b = p;
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

uint64_t stats_get_u64(const void *p)
{
    const uint8_t *b = p;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | b[i];
    return v;
}

static MDB_val s_val(const stats_key_t *k)
{
    return (MDB_val){.mv_size = k->len, .mv_data = (void *)k->b};
}

/* ---- opening ------------------------------------------------------------------ */

int stats_store_open(MDB_env *env, stats_store_t **self_p)
{
    stats_store_t *self = mb_calloc(1, sizeof *self);
    MDB_txn *txn;
    int rc = mdb_txn_begin(env, NULL, 0, &txn);
    for (int i = 0; rc == 0 && i < STATS_DB_COUNT; i++)
        rc = mdb_dbi_open(txn, s_dbs[i].name, MDB_CREATE | s_dbs[i].flags, &self->dbi[i]);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "_offsets", MDB_CREATE, &self->offsets);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc) {
        mb_error(0, "stats: cannot open the databases: %s", mdb_strerror(rc));
        free(self);
        return rc;
    }
    *self_p = self;
    return 0;
}

void stats_store_destroy(stats_store_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free(*self_p);
    *self_p = NULL;
}

MDB_dbi stats_store_dbi(stats_store_t *self, stats_db_t db)
{
    return self->dbi[db];
}

/* ---- records ------------------------------------------------------------------- */

void stats_record_release(stats_record_t *rec)
{
    if (rec->data) {
        msgpack_unpacked_destroy(&rec->msg);
        free(rec->data);
    }
    rec->data = NULL;
}

/*  Copies and decodes the value of `key` in `db` into *rec. */
static int s_load(stats_store_t *self, MDB_txn *txn, stats_db_t db, const stats_key_t *key,
                  stats_record_t *rec)
{
    rec->data = NULL;
    MDB_val k = s_val(key), v;
    int rc = mdb_get(txn, self->dbi[db], &k, &v);
    if (rc)
        return rc;
    rec->data = mb_malloc(v.mv_size ? v.mv_size : 1);
    memcpy(rec->data, v.mv_data, v.mv_size);
    msgpack_unpacked_init(&rec->msg);
    size_t used = 0;
    if (msgpack_unpack_next(&rec->msg, rec->data, v.mv_size, &used) != MSGPACK_UNPACK_SUCCESS ||
        rec->msg.data.type != MSGPACK_OBJECT_MAP)
        return MDB_CORRUPTED;
    return 0;
}

static stats_str_t s_str_or_null(const msgpack_object *o)
{
    const char *s;
    size_t len;
    return mb_obj_str(o, &s, &len) ? (stats_str_t){s, len} : (stats_str_t){NULL, 0};
}

/*  Reads artist_ids (an array of ids) into t. False when malformed. */
static bool s_artists(const msgpack_object *o, stats_track_t *t)
{
    t->n_artists = 0;
    if (!o || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > STATS_ARTISTS_MAX)
        return false;
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        stats_str_t a = s_str_or_null(&o->via.array.ptr[i]);
        if (!stats_id_valid(a.ptr, a.len))
            return false;
        t->artist_ids[t->n_artists++] = a;
    }
    return true;
}

int stats_store_track_get(stats_store_t *self, MDB_txn *txn, stats_str_t id, stats_record_t *rec,
                          stats_track_t *t)
{
    memset(t, 0, sizeof *t);
    stats_key_t key;
    stats_key_init(&key);
    stats_key_raw(&key, id.ptr, id.len);
    int rc = s_load(self, txn, STATS_DB_TRACKS, &key, rec);
    if (rc)
        return rc;
    const msgpack_object *m = &rec->msg.data;
    t->title = s_str_or_null(mb_map_get(m, "title"));
    t->album_id = s_str_or_null(mb_map_get(m, "album_id"));
    t->isrc = s_str_or_null(mb_map_get(m, "isrc"));
    mb_obj_int(mb_map_get(m, "duration_ms"), &t->duration_ms);
    mb_obj_bool(mb_map_get(m, "deleted"), &t->deleted);
    if (!t->title.ptr || !s_artists(mb_map_get(m, "artist_ids"), t))
        return MDB_CORRUPTED;
    return 0;
}

static void s_pack_str_or_nil(msgpack_packer *pk, stats_str_t s)
{
    if (s.ptr)
        mb_pack_strn(pk, s.ptr, s.len);
    else
        msgpack_pack_nil(pk);
}

void stats_track_pack(msgpack_packer *pk, stats_str_t id, const stats_track_t *t)
{
    msgpack_pack_map(pk, 6);
    mb_pack_cstr(pk, "id");
    mb_pack_strn(pk, id.ptr, id.len);
    mb_pack_cstr(pk, "title");
    mb_pack_strn(pk, t->title.ptr ? t->title.ptr : "", t->title.len);
    mb_pack_cstr(pk, "artist_ids");
    msgpack_pack_array(pk, t->n_artists);
    for (size_t i = 0; i < t->n_artists; i++)
        mb_pack_strn(pk, t->artist_ids[i].ptr, t->artist_ids[i].len);
    mb_pack_cstr(pk, "album_id");
    s_pack_str_or_nil(pk, t->album_id);
    mb_pack_cstr(pk, "isrc");
    s_pack_str_or_nil(pk, t->isrc);
    mb_pack_cstr(pk, "duration_ms");
    msgpack_pack_int64(pk, t->duration_ms);
}

int stats_store_user_get(stats_store_t *self, MDB_txn *txn, stats_str_t user,
                         char country[STATS_COUNTRY_LEN + 1], bool *deleted, bool *known)
{
    bool ignored;
    known = known ? known : &ignored;
    country[0] = '\0';
    *deleted = *known = false;
    stats_key_t key;
    stats_key_init(&key);
    stats_key_raw(&key, user.ptr, user.len);
    stats_record_t rec;
    int rc = s_load(self, txn, STATS_DB_USERS, &key, &rec);
    if (rc == 0) {
        *known = true;
        stats_str_t c = s_str_or_null(mb_map_get(&rec.msg.data, "country"));
        if (stats_country_valid(c.ptr, c.len)) {
            memcpy(country, c.ptr, STATS_COUNTRY_LEN);
            country[STATS_COUNTRY_LEN] = '\0';
        }
        mb_obj_bool(mb_map_get(&rec.msg.data, "deleted"), deleted);
    }
    stats_record_release(&rec);
    return rc == MDB_NOTFOUND || rc == MDB_CORRUPTED ? 0 : rc;
}

int stats_store_totals_get(stats_store_t *self, MDB_txn *txn, stats_str_t track,
                           stats_totals_t *totals)
{
    memset(totals, 0, sizeof *totals);
    MDB_val k = {.mv_size = track.len, .mv_data = (void *)track.ptr}, v;
    int rc = mdb_get(txn, self->dbi[STATS_DB_TRACK_TOTALS], &k, &v);
    if (rc)
        return rc;
    if (v.mv_size != 32)
        return MDB_CORRUPTED;
    const uint8_t *b = v.mv_data;
    totals->first_ms = stats_get_u64(b);
    totals->last_ms = stats_get_u64(b + 8);
    totals->streams = stats_get_u64(b + 16);
    totals->plays = stats_get_u64(b + 24);
    return 0;
}

/* ---- counters -------------------------------------------------------------------- */

/*  Adds delta[i] to each of the `n` 8-byte counters stored under `key`
    (creating them at zero). */
static int s_add(stats_store_t *self, MDB_txn *txn, stats_db_t db, const stats_key_t *key,
                 const uint64_t *delta, size_t n)
{
    MDB_val k = s_val(key), v;
    uint64_t now[4] = {0};
    int rc = mdb_get(txn, self->dbi[db], &k, &v);
    if (rc == 0) {
        if (v.mv_size != n * 8)
            return MDB_CORRUPTED;
        for (size_t i = 0; i < n; i++)
            now[i] = stats_get_u64((const uint8_t *)v.mv_data + 8 * i);
    } else if (rc != MDB_NOTFOUND)
        return rc;
    uint8_t buf[32];
    for (size_t i = 0; i < n; i++)
        stats_put_u64(buf + 8 * i, now[i] + delta[i]);
    v = (MDB_val){.mv_size = n * 8, .mv_data = buf};
    return mdb_put(txn, self->dbi[db], &k, &v, 0);
}

static int s_add1(stats_store_t *self, MDB_txn *txn, stats_db_t db, const stats_key_t *key)
{
    const uint64_t one = 1;
    return s_add(self, txn, db, key, &one, 1);
}

/*  Adds `user` to the duplicate set under `key` (already there is fine). */
static int s_set_add(stats_store_t *self, MDB_txn *txn, stats_db_t db, const stats_key_t *key,
                     stats_str_t user)
{
    MDB_val k = s_val(key), v = {.mv_size = user.len, .mv_data = (void *)user.ptr};
    int rc = mdb_put(txn, self->dbi[db], &k, &v, MDB_NODUPDATA);
    return rc == MDB_KEYEXIST ? 0 : rc;
}

/* ---- plays ------------------------------------------------------------------------ */

/*  Updates first/last play and the all-time counts of the track. */
static int s_totals(stats_store_t *self, MDB_txn *txn, const stats_play_t *p, bool stream)
{
    stats_totals_t t;
    int rc = stats_store_totals_get(self, txn, p->track, &t);
    if (rc == MDB_NOTFOUND)
        t.first_ms = t.last_ms = (uint64_t)p->started_at;
    else if (rc)
        return rc;
    if ((uint64_t)p->started_at < t.first_ms)
        t.first_ms = (uint64_t)p->started_at;
    if ((uint64_t)p->started_at > t.last_ms)
        t.last_ms = (uint64_t)p->started_at;
    t.streams += stream;
    t.plays++;
    uint8_t buf[32];
    stats_put_u64(buf, t.first_ms);
    stats_put_u64(buf + 8, t.last_ms);
    stats_put_u64(buf + 16, t.streams);
    stats_put_u64(buf + 24, t.plays);
    MDB_val k = {.mv_size = p->track.len, .mv_data = (void *)p->track.ptr};
    MDB_val v = {.mv_size = sizeof buf, .mv_data = buf};
    return mdb_put(txn, self->dbi[STATS_DB_TRACK_TOTALS], &k, &v, 0);
}

static int s_history(stats_store_t *self, MDB_txn *txn, const stats_play_t *p)
{
    stats_key_t key;
    stats_key_init(&key);
    stats_key_id(&key, p->user);
    stats_key_u64(&key, (uint64_t)p->started_at);
    stats_key_raw(&key, p->track.ptr, p->track.len);
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_uint64(&pk, (uint64_t)p->ms_played);
    mb_pack_cstr(&pk, stats_context_name(p->context));
    s_pack_str_or_nil(&pk, p->context_id);
    mb_pack_cstr(&pk, stats_source_name(p->source));
    MDB_val k = s_val(&key), v = {.mv_size = buf.size, .mv_data = buf.data};
    int rc = mdb_put(txn, self->dbi[STATS_DB_HISTORY], &k, &v, 0);
    msgpack_sbuffer_destroy(&buf);
    return rc;
}

/*  The per-user counts behind top lists: per day (summed over 4 weeks or
    6 months at read time) and all time, for the track and each artist. */
static int s_user_counts(stats_store_t *self, MDB_txn *txn, const stats_play_t *p, uint32_t day,
                         const stats_str_t *artists, size_t n_artists)
{
    stats_key_t key;
    stats_key_init(&key);
    stats_key_id(&key, p->user);
    stats_key_u32(&key, day);
    stats_key_raw(&key, p->track.ptr, p->track.len);
    int rc = s_add1(self, txn, STATS_DB_USER_TRACK_DAY, &key);
    stats_key_init(&key);
    stats_key_id(&key, p->user);
    stats_key_raw(&key, p->track.ptr, p->track.len);
    if (rc == 0)
        rc = s_add1(self, txn, STATS_DB_USER_TRACK, &key);
    for (size_t i = 0; rc == 0 && i < n_artists; i++) {
        stats_key_init(&key);
        stats_key_id(&key, p->user);
        stats_key_u32(&key, day);
        stats_key_raw(&key, artists[i].ptr, artists[i].len);
        rc = s_add1(self, txn, STATS_DB_USER_ARTIST_DAY, &key);
        stats_key_init(&key);
        stats_key_id(&key, p->user);
        stats_key_raw(&key, artists[i].ptr, artists[i].len);
        if (rc == 0)
            rc = s_add1(self, txn, STATS_DB_USER_ARTIST, &key);
    }
    return rc;
}

/*  The per-track counts of a stream: artists' days, listener sets,
    charts (every country, and the user's). */
static int s_stream_counts(stats_store_t *self, MDB_txn *txn, const stats_play_t *p, uint32_t day,
                           const stats_str_t *artists, size_t n_artists, const char *country)
{
    stats_key_t key;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n_artists; i++) {
        stats_key_init(&key);
        stats_key_id(&key, artists[i]);
        stats_key_u32(&key, day);
        rc = s_add1(self, txn, STATS_DB_ARTIST_DAY, &key);
    }
    stats_key_init(&key);
    stats_key_id(&key, p->track);
    stats_key_u32(&key, day);
    if (rc == 0)
        rc = s_set_add(self, txn, STATS_DB_LISTENERS_DAY, &key, p->user);
    stats_key_init(&key);
    stats_key_raw(&key, p->track.ptr, p->track.len);
    if (rc == 0)
        rc = s_set_add(self, txn, STATS_DB_LISTENERS, &key, p->user);
    for (int pass = 0; rc == 0 && pass < 2; pass++) {
        if (pass == 1 && !country[0])
            break;
        stats_key_init(&key);
        stats_key_raw(&key, pass == 0 ? STATS_COUNTRY_ALL : country, STATS_COUNTRY_LEN);
        stats_key_u32(&key, day);
        stats_key_raw(&key, p->track.ptr, p->track.len);
        rc = s_add1(self, txn, STATS_DB_CHART, &key);
    }
    return rc;
}

/*  True when the meta group has not handled the log up to `seq` yet. */
static int s_meta_behind(stats_store_t *self, MDB_txn *txn, uint64_t seq, bool *behind)
{
    MDB_val k = {.mv_size = strlen(STATS_GROUP_META), .mv_data = STATS_GROUP_META}, v;
    int rc = mdb_get(txn, self->offsets, &k, &v);
    *behind = rc == MDB_NOTFOUND;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc == 0 && v.mv_size < 8)
        rc = MDB_CORRUPTED;
    if (rc == 0)
        *behind = stats_get_u64(v.mv_data) <= seq; /* `next`: the first seq not handled */
    return rc;
}

int stats_store_apply_play(stats_store_t *self, MDB_txn *txn, const mb_event_t *event,
                           stats_outcome_t *outcome, const char **why)
{
    stats_outcome_t ignored;
    outcome = outcome ? outcome : &ignored;
    *outcome = STATS_APPLIED;
    stats_play_t p;
    if ((*why = stats_play_decode(event->data, &p)) != NULL ||
        (*why = stats_play_check_key(event->key, event->key_len, &p)) != NULL)
        return MB_EINVAL;
    char country[STATS_COUNTRY_LEN + 1];
    bool deleted, user_known;
    int rc = stats_store_user_get(self, txn, p.user, country, &deleted, &user_known);
    if (rc)
        return rc;
    if (deleted) {
        *outcome = STATS_IGNORED; /* erased: keep nothing of theirs, not even the key */
        return 0;
    }
    MDB_val k = {.mv_size = event->key_len, .mv_data = (void *)event->key};
    MDB_val v = {.mv_size = 0, .mv_data = ""};
    rc = mdb_put(txn, self->dbi[STATS_DB_SEEN], &k, &v, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST) {
        *outcome = STATS_DUPLICATE;
        return 0;
    }
    if (rc)
        return rc;

    /* The artists as the catalog credits them now; copied because the
       writes below may move the page the record was read from. */
    char artist_buf[STATS_ARTISTS_MAX][STATS_ID_MAX];
    stats_str_t artists[STATS_ARTISTS_MAX];
    size_t n_artists = 0;
    stats_record_t rec;
    stats_track_t t;
    rc = stats_store_track_get(self, txn, p.track, &rec, &t);
    bool track_known = rc == 0 || rc == MDB_CORRUPTED;
    if (rc == 0)
        for (; n_artists < t.n_artists; n_artists++) {
            memcpy(artist_buf[n_artists], t.artist_ids[n_artists].ptr, t.artist_ids[n_artists].len);
            artists[n_artists] = (stats_str_t){artist_buf[n_artists], t.artist_ids[n_artists].len};
        }
    stats_record_release(&rec);
    if (rc && rc != MDB_NOTFOUND && rc != MDB_CORRUPTED)
        return rc;
    if ((!track_known || !user_known) && event->seq > 0) {
        bool behind;
        if ((rc = s_meta_behind(self, txn, event->seq, &behind)) != 0)
            return rc;
        if (behind) {
            *why = "waiting for the track and user events before this play";
            return MB_ENOTYET;
        }
    }

    bool stream = stats_play_is_stream(&p);
    uint32_t day = (uint32_t)stats_day_of(p.started_at);
    stats_key_t tk;
    stats_key_init(&tk);
    stats_key_id(&tk, p.track);
    stats_key_u32(&tk, day);
    const uint64_t track_delta[2] = {stream, 1};
    rc = s_history(self, txn, &p);
    if (rc == 0)
        rc = s_totals(self, txn, &p, stream);
    if (rc == 0)
        rc = s_add(self, txn, STATS_DB_TRACK_DAY, &tk, track_delta, 2);
    if (rc == 0 && stream)
        rc = s_stream_counts(self, txn, &p, day, artists, n_artists, country);
    if (rc == 0 && stream)
        rc = s_user_counts(self, txn, &p, day, artists, n_artists);
    return rc;
}

/* ---- catalog.track ------------------------------------------------------------------ */

static const char *s_event_head(const msgpack_object *data, const char *const *actions,
                                size_t *action, stats_str_t *id)
{
    if (!data || data->type != MSGPACK_OBJECT_MAP)
        return "data must be a map {action, id, ...}";
    const msgpack_object *a = mb_map_get(data, "action");
    for (*action = 0; actions[*action]; (*action)++)
        if (mb_obj_str_eq(a, actions[*action]))
            break;
    if (!actions[*action])
        return "data.action is not one this consumer knows";
    *id = s_str_or_null(mb_map_get(data, "id"));
    if (!stats_id_valid(id->ptr, id->len))
        return "data.id must be an id (1..64 bytes, no ':' or control characters)";
    return NULL;
}

/*  Reads a catalog track object into *t; NULL or a reason. */
static const char *s_track_object(const msgpack_object *o, stats_str_t id, stats_track_t *t)
{
    memset(t, 0, sizeof *t);
    if (!o || o->type != MSGPACK_OBJECT_MAP)
        return "data.object must be the track for created and updated";
    stats_str_t oid = s_str_or_null(mb_map_get(o, "id"));
    if (oid.len != id.len || !oid.ptr || memcmp(oid.ptr, id.ptr, id.len) != 0)
        return "data.object.id differs from data.id";
    t->title = s_str_or_null(mb_map_get(o, "title"));
    if (!t->title.ptr || t->title.len > STATS_TITLE_MAX)
        return "data.object.title must be a string of at most 1024 bytes";
    if (!s_artists(mb_map_get(o, "artist_ids"), t))
        return "data.object.artist_ids must be a list of at most 20 ids";
    const msgpack_object *f = mb_map_get(o, "album_id");
    t->album_id = s_str_or_null(f);
    if (f && f->type != MSGPACK_OBJECT_NIL && !stats_id_valid(t->album_id.ptr, t->album_id.len))
        return "data.object.album_id must be an id or nil";
    f = mb_map_get(o, "isrc");
    t->isrc = s_str_or_null(f);
    if (f && f->type != MSGPACK_OBJECT_NIL && (!t->isrc.ptr || t->isrc.len > 32))
        return "data.object.isrc must be a string or nil";
    if (t->isrc.len == 0)
        t->isrc.ptr = NULL;
    f = mb_map_get(o, "duration_ms");
    if (f && f->type != MSGPACK_OBJECT_NIL &&
        (!mb_obj_int(f, &t->duration_ms) || t->duration_ms < 0 ||
         t->duration_ms > STATS_MS_PLAYED_MAX))
        return "data.object.duration_ms must be an integer from 0 to 86400000";
    return NULL;
}

static int s_track_put(stats_store_t *self, MDB_txn *txn, stats_str_t id, const stats_track_t *t)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
    mb_pack_cstr(&pk, "title");
    mb_pack_strn(&pk, t->title.ptr ? t->title.ptr : "", t->title.len);
    mb_pack_cstr(&pk, "artist_ids");
    msgpack_pack_array(&pk, t->n_artists);
    for (size_t i = 0; i < t->n_artists; i++)
        mb_pack_strn(&pk, t->artist_ids[i].ptr, t->artist_ids[i].len);
    mb_pack_cstr(&pk, "album_id");
    s_pack_str_or_nil(&pk, t->album_id);
    mb_pack_cstr(&pk, "isrc");
    s_pack_str_or_nil(&pk, t->isrc);
    mb_pack_cstr(&pk, "duration_ms");
    msgpack_pack_int64(&pk, t->duration_ms);
    mb_pack_cstr(&pk, "deleted");
    if (t->deleted)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    MDB_val k = {.mv_size = id.len, .mv_data = (void *)id.ptr};
    MDB_val v = {.mv_size = buf.size, .mv_data = buf.data};
    int rc = mdb_put(txn, self->dbi[STATS_DB_TRACKS], &k, &v, 0);
    msgpack_sbuffer_destroy(&buf);
    return rc;
}

int stats_store_apply_track(stats_store_t *self, MDB_txn *txn, const msgpack_object *data,
                            const char **why)
{
    static const char *const actions[] = {"created", "updated", "deleted", NULL};
    size_t action;
    stats_str_t id;
    if ((*why = s_event_head(data, actions, &action, &id)) != NULL)
        return MB_EINVAL;
    stats_track_t t;
    if (action != 2) {
        if ((*why = s_track_object(mb_map_get(data, "object"), id, &t)) != NULL)
            return MB_EINVAL;
        return s_track_put(self, txn, id, &t);
    }
    /* Deleted: keep what we knew (royalty reports still name its ISRC). */
    stats_record_t rec;
    int rc = stats_store_track_get(self, txn, id, &rec, &t);
    if (rc == MDB_NOTFOUND || rc == MDB_CORRUPTED) {
        memset(&t, 0, sizeof t);
        t.title = (stats_str_t){"", 0};
        rc = 0;
    }
    t.deleted = true;
    if (rc == 0)
        rc = s_track_put(self, txn, id, &t);
    stats_record_release(&rec);
    return rc;
}

/* ---- users.user -------------------------------------------------------------------- */

static int s_user_put(stats_store_t *self, MDB_txn *txn, stats_str_t id, stats_str_t country,
                      bool deleted)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    mb_pack_cstr(&pk, "country");
    s_pack_str_or_nil(&pk, country);
    mb_pack_cstr(&pk, "deleted");
    if (deleted)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    MDB_val k = {.mv_size = id.len, .mv_data = (void *)id.ptr};
    MDB_val v = {.mv_size = buf.size, .mv_data = buf.data};
    int rc = mdb_put(txn, self->dbi[STATS_DB_USERS], &k, &v, 0);
    msgpack_sbuffer_destroy(&buf);
    return rc;
}

/*  Deletes every key of `db` that starts with `prefix` (`len` bytes). */
static int s_delete_prefix(stats_store_t *self, MDB_txn *txn, stats_db_t db, const void *prefix,
                           size_t len)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, self->dbi[db], &cur);
    if (rc)
        return rc;
    /* Seek again after each delete: where a cursor stands after
       mdb_cursor_del() at the end of a page is subtle, a seek is not. */
    for (;;) {
        MDB_val k = {.mv_size = len, .mv_data = (void *)prefix}, v;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc || k.mv_size < len || memcmp(k.mv_data, prefix, len) != 0)
            break;
        if ((rc = mdb_cursor_del(cur, 0)) != 0)
            break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/*  Removes `user` from the listener sets of every (track, day) and track
    it streamed: the keys of user_track_day and user_track say which. */
static int s_erase_listener(stats_store_t *self, MDB_txn *txn, stats_str_t user)
{
    stats_key_t prefix;
    stats_key_init(&prefix);
    stats_key_id(&prefix, user);
    MDB_val uval = {.mv_size = user.len, .mv_data = (void *)user.ptr};
    int rc = 0;
    for (int pass = 0; rc == 0 && pass < 2; pass++) {
        stats_db_t src = pass == 0 ? STATS_DB_USER_TRACK_DAY : STATS_DB_USER_TRACK;
        stats_db_t set = pass == 0 ? STATS_DB_LISTENERS_DAY : STATS_DB_LISTENERS;
        size_t skip = pass == 0 ? 4 : 0; /* the day, before the track id */
        MDB_cursor *cur;
        if ((rc = mdb_cursor_open(txn, self->dbi[src], &cur)) != 0)
            break;
        MDB_val k = s_val(&prefix), v;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        while (rc == 0 && k.mv_size > prefix.len + skip &&
               memcmp(k.mv_data, prefix.b, prefix.len) == 0) {
            const uint8_t *rest = (const uint8_t *)k.mv_data + prefix.len;
            stats_str_t track = {(const char *)rest + skip, k.mv_size - prefix.len - skip};
            stats_key_t sk;
            stats_key_init(&sk);
            if (pass == 0) {
                stats_key_id(&sk, track);
                stats_key_raw(&sk, rest, 4);
            } else
                stats_key_raw(&sk, track.ptr, track.len);
            MDB_val sv = s_val(&sk), u = uval;
            rc = mdb_del(txn, self->dbi[set], &sv, &u);
            if (rc == 0 || rc == MDB_NOTFOUND)
                rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(cur);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    return rc;
}

/*  Erases what stats holds about one person (see stats_store.h). Counts
    that name no one (streams per track, charts) stay. */
static int s_erase_user(stats_store_t *self, MDB_txn *txn, stats_str_t user)
{
    int rc = s_erase_listener(self, txn, user);
    stats_key_t prefix;
    stats_key_init(&prefix);
    stats_key_id(&prefix, user);
    static const stats_db_t per_user[] = {STATS_DB_HISTORY, STATS_DB_USER_TRACK_DAY,
                                          STATS_DB_USER_TRACK, STATS_DB_USER_ARTIST_DAY,
                                          STATS_DB_USER_ARTIST};
    for (size_t i = 0; rc == 0 && i < sizeof per_user / sizeof *per_user; i++)
        rc = s_delete_prefix(self, txn, per_user[i], prefix.b, prefix.len);
    for (int tag = 0; rc == 0 && tag < 2; tag++) {
        stats_key_t kp;
        stats_key_init(&kp);
        stats_key_raw(&kp, tag ? "i:" : "c:", 2);
        stats_key_raw(&kp, user.ptr, user.len);
        stats_key_raw(&kp, ":", 1);
        rc = s_delete_prefix(self, txn, STATS_DB_SEEN, kp.b, kp.len);
        if (rc == 0 && tag == 0)
            rc = s_delete_prefix(self, txn, STATS_DB_REPORTED, kp.b, kp.len);
    }
    return rc;
}

int stats_store_apply_user(stats_store_t *self, MDB_txn *txn, const msgpack_object *data,
                           const char **why)
{
    static const char *const actions[] = {"created", "updated", "tier_changed", "deleted", NULL};
    size_t action;
    stats_str_t id;
    if ((*why = s_event_head(data, actions, &action, &id)) != NULL)
        return MB_EINVAL;
    if (action == 3) {
        int rc = s_erase_user(self, txn, id);
        if (rc == MDB_TXN_FULL) {
            *why = "erasing this user touches more pages than one LMDB transaction holds";
            return MB_EINVAL;
        }
        return rc ? rc : s_user_put(self, txn, id, (stats_str_t){NULL, 0}, true);
    }
    const msgpack_object *u = mb_map_get(data, "user");
    if (!u || u->type != MSGPACK_OBJECT_MAP) {
        *why = "data.user must be the user for created, updated and tier_changed";
        return MB_EINVAL;
    }
    stats_str_t uid = s_str_or_null(mb_map_get(u, "id"));
    if (uid.len != id.len || !uid.ptr || memcmp(uid.ptr, id.ptr, id.len) != 0) {
        *why = "data.user.id differs from data.id";
        return MB_EINVAL;
    }
    const msgpack_object *c = mb_map_get(u, "country");
    stats_str_t country = s_str_or_null(c);
    if (c && c->type != MSGPACK_OBJECT_NIL && !stats_country_valid(country.ptr, country.len)) {
        *why = "data.user.country must be two capitals (ISO 3166-1) or nil";
        return MB_EINVAL;
    }
    return s_user_put(self, txn, id, country, false);
}

int stats_store_apply(stats_store_t *self, MDB_txn *txn, const mb_event_t *event,
                      stats_outcome_t *outcome, const char **why)
{
#define S_IS(t) (event->topic_len == strlen(t) && memcmp(event->topic, t, event->topic_len) == 0)
    if (outcome)
        *outcome = STATS_APPLIED;
    if (S_IS(STATS_TOPIC_PLAY))
        return stats_store_apply_play(self, txn, event, outcome, why);
    if (S_IS(STATS_TOPIC_TRACK))
        return stats_store_apply_track(self, txn, event->data, why);
    if (S_IS(STATS_TOPIC_USER))
        return stats_store_apply_user(self, txn, event->data, why);
#undef S_IS
    *why = "a topic stats does not consume";
    return MB_EINVAL;
}
