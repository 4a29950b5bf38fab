/*  musicbus-stats — play reports, listening history, top lists, charts,
    track statistics and royalty reports.

    Writes come from two places. play.report validates a client's report
    and puts the play event in the outbox (nothing is counted there); the
    consumer group "stats" applies the events of topics play,
    catalog.track and users.user in log order, each exactly once, into
    the counts (stats_store.c). Reads walk those counts in one read
    transaction each (stats_query.c). */
#include "stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_alloc.h"
#include "mb_error.h"
#include "mb_jwt.h"
#include "mb_log.h"
#include "mb_msgpack.h"
#include "stats_play.h"
#include "stats_query.h"
#include "stats_store.h"
#include "stats_tally.h"
#include "stats_time.h"

#define STATS_SERVICE "stats"
#define STATS_MAX_DBS (STATS_STORE_DBS + 4) /* room to grow */
#define STATS_MAP_SIZE ((size_t)4 << 30)    /* 4 GiB reserved: ~ 10 M plays */
#define STATS_CONSUMER_BATCH 500 /* events per transaction: request writes wait meanwhile */
#define STATS_PAGE_DEFAULT 20    /* history items per page */
#define STATS_PAGE_MAX 50
#define STATS_TOP_DEFAULT 20 /* entries of a top list */
#define STATS_TOP_MAX 50
#define STATS_CHART_DEFAULT 50 /* entries of a chart */
#define STATS_CHART_MAX 200
#define STATS_DAYS_MAX 366             /* longest window of a chart, track stats or report */
#define STATS_TRACK_DAYS_DEFAULT 28    /* track.stats without days */
#define STATS_RANGE_4W 28              /* days of range=4w */
#define STATS_RANGE_6M 182             /* days of range=6m (26 weeks) */
#define STATS_FUTURE_MS (10 * 60000LL) /* clock skew allowed on a report's started_at */
#define STATS_CSV_MAX (48u << 20)      /* a royalty report: under the broker's 64 MiB frames */
#define STATS_CURSOR_MAX (2 * (8 + STATS_ID_MAX))
#define STATS_LINK_MAX 512

static stats_store_t *s_store(mb_call_t *call)
{
    return mb_call_state(call);
}

/* ---- small helpers ------------------------------------------------------------ */

/*  Reads the caller's auth; false after answering 401. */
static bool s_auth(mb_call_t *call, mb_jwt_claims_t *auth, stats_str_t *user)
{
    if (mb_jwt_read_auth(mb_call_request(call)->auth, auth) == 0 &&
        stats_id_valid(auth->sub, strlen(auth->sub))) {
        *user = (stats_str_t){auth->sub, strlen(auth->sub)};
        return true;
    }
    mb_call_error(call, 401, "unauthenticated", NULL, "this operation needs a signed-in user");
    return false;
}

/*  The gateway lets only admins reach admin ops; the actor checks again,
    as the bus has other clients. */
static bool s_admin(mb_call_t *call)
{
    mb_jwt_claims_t auth;
    stats_str_t user;
    if (!s_auth(call, &auth, &user))
        return false;
    if (auth.roles & MB_ROLE_ADMIN)
        return true;
    mb_call_error(call, 403, "forbidden", NULL, "this operation is for admins");
    return false;
}

static bool s_int_arg(mb_call_t *call, const char *name, int64_t min, int64_t max, int64_t fallback,
                      int64_t *out)
{
    const msgpack_object *o = mb_call_arg(call, name);
    *out = fallback;
    if (o && (!mb_obj_int(o, out) || *out < min || *out > max)) {
        mb_call_error(call, 400, "invalid", name, "%s must be an integer from %lld to %lld", name,
                      (long long)min, (long long)max);
        return false;
    }
    return true;
}

/*  Reads date argument `name` (YYYY-MM-DD) into *day; `fallback` when
    absent, or 400 when required. */
static bool s_date_arg(mb_call_t *call, const char *name, bool required, int64_t fallback,
                       int64_t *day)
{
    const msgpack_object *o = mb_call_arg(call, name);
    const char *s;
    size_t len;
    *day = fallback;
    if (!o && !required)
        return true;
    if (mb_obj_str(o, &s, &len) && stats_date_parse(s, len, day))
        return true;
    mb_call_error(call, 400, "invalid", name, "%s must be a date, YYYY-MM-DD", name);
    return false;
}

static int64_t s_today(void)
{
    return stats_day_of(stats_now_ms());
}

static void s_pack_date(msgpack_packer *pk, int64_t day)
{
    char date[STATS_DATE_LEN + 1];
    stats_date_format(day, date);
    mb_pack_cstr(pk, date);
}

static void s_pack_time(msgpack_packer *pk, int64_t ms)
{
    char t[STATS_TIME_MAX + 1];
    stats_time_format(ms, t);
    mb_pack_cstr(pk, t);
}

/*  Packs what stats knows of track `id` as "track": the public view, or
    nil when no catalog event named it. */
static int s_pack_track(mb_call_t *call, MDB_txn *txn, msgpack_packer *pk, stats_str_t id)
{
    stats_record_t rec;
    stats_track_t t;
    int rc = stats_store_track_get(s_store(call), txn, id, &rec, &t);
    mb_pack_cstr(pk, "track");
    if (rc == 0)
        stats_track_pack(pk, id, &t);
    else
        msgpack_pack_nil(pk);
    stats_record_release(&rec);
    return rc == MDB_NOTFOUND || rc == MDB_CORRUPTED ? 0 : rc;
}

/* ---- play.report ------------------------------------------------------------------- */

/*  True when every key of map `body` is one of `allowed`; otherwise
    answers 400 naming the first other one. */
static bool s_only_keys(mb_call_t *call, const msgpack_object *map, const char *path,
                        const char *const *allowed)
{
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        bool known = false;
        for (size_t a = 0; !known && allowed[a]; a++)
            known = mb_obj_str_eq(k, allowed[a]);
        if (!known) {
            const char *s = "";
            size_t len = 0;
            mb_obj_str(k, &s, &len);
            char field[96];
            snprintf(field, sizeof field, "%s.%.*s", path, (int)(len > 40 ? 40 : len), s);
            mb_call_error(call, 400, "invalid", field, "%s is not a field of a play report", field);
            return false;
        }
    }
    return true;
}

static bool s_client_id_valid(const char *s, size_t len)
{
    if (len == 0 || len > STATS_CLIENT_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] < '!' || s[i] > '~')
            return false;
    return true;
}

static bool s_bad(mb_call_t *call, const char *field, const char *message)
{
    mb_call_error(call, 400, "invalid", field, "%s", message);
    return false;
}

/*  Reads a play report body into *p and *client_id. False after
    answering 400. */
static bool s_read_report(mb_call_t *call, const msgpack_object *body, stats_play_t *p,
                          stats_str_t *client_id)
{
    static const char *const fields[] = {"track_id", "started_at", "ms_played",
                                         "context",  "client_id",  NULL};
    static const char *const context_fields[] = {"type", "id", NULL};
    if (!body || body->type != MSGPACK_OBJECT_MAP)
        return s_bad(call, "body", "the body must be an object");
    if (!s_only_keys(call, body, "body", fields))
        return false;
    const char *s;
    size_t len;
    if (!mb_obj_str(mb_map_get(body, "track_id"), &s, &len) || !stats_id_valid(s, len))
        return s_bad(call, "body.track_id", "track_id must be a track id");
    p->track = (stats_str_t){s, len};
    if (!mb_obj_str(mb_map_get(body, "started_at"), &s, &len) ||
        !stats_time_parse(s, len, &p->started_at))
        return s_bad(call, "body.started_at",
                     "started_at must be an RFC 3339 time, such as 2026-11-28T02:10:00.123Z");
    if (p->started_at < STATS_TIME_MIN || p->started_at > stats_now_ms() + STATS_FUTURE_MS)
        return s_bad(call, "body.started_at",
                     "started_at must be after 2000 and not in the future");
    if (!mb_obj_int(mb_map_get(body, "ms_played"), &p->ms_played) || p->ms_played < 0 ||
        p->ms_played > STATS_MS_PLAYED_MAX)
        return s_bad(call, "body.ms_played", "ms_played must be an integer from 0 to 86400000");
    const msgpack_object *ctx = mb_map_get(body, "context");
    if (!ctx || ctx->type != MSGPACK_OBJECT_MAP)
        return s_bad(call, "body.context", "context must be an object {type, id}");
    if (!s_only_keys(call, ctx, "body.context", context_fields))
        return false;
    if (!mb_obj_str(mb_map_get(ctx, "type"), &s, &len) || !stats_context_parse(s, len, &p->context))
        return s_bad(call, "body.context.type",
                     "context.type must be album, playlist, search, radio or other");
    const msgpack_object *cid = mb_map_get(ctx, "id");
    if (cid && cid->type != MSGPACK_OBJECT_NIL) {
        if (!mb_obj_str(cid, &s, &len) || len == 0 || len > STATS_CONTEXT_ID_MAX ||
            memchr(s, '\0', len))
            return s_bad(call, "body.context.id", "context.id must be a string of 1 to 128 bytes");
        p->context_id = (stats_str_t){s, len};
    }
    if (!mb_obj_str(mb_map_get(body, "client_id"), &s, &len) || !s_client_id_valid(s, len))
        return s_bad(call, "body.client_id",
                     "client_id must be 1 to 64 printable ASCII characters without spaces");
    *client_id = (stats_str_t){s, len};
    return true;
}

static void s_answer_report(mb_call_t *call, stats_str_t client_id, bool stream)
{
    msgpack_packer *pk = mb_call_reply(call, 202);
    msgpack_pack_map(pk, 2);
    mb_pack_cstr(pk, "id");
    mb_pack_strn(pk, client_id.ptr, client_id.len);
    mb_pack_cstr(pk, "counted_as_stream");
    if (stream)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

/*  Puts the play event in the outbox; counting is the consumer's. The
    report is remembered under its key, so a retry is answered the same
    without a second event, and a client id reused for another play is
    refused. */
static void s_handle_play_report(mb_call_t *call)
{
    mb_jwt_claims_t auth;
    stats_play_t p = {.source = STATS_SOURCE_CLIENT};
    stats_str_t client_id;
    if (!s_auth(call, &auth, &p.user) ||
        !s_read_report(call, mb_call_arg(call, "body"), &p, &client_id))
        return;
    char key[STATS_KEY_MAX + 1];
    if (stats_play_client_key(p.user, client_id, key) == 0) {
        mb_call_error(call, 400, "invalid", "body.client_id", "client_id is too long");
        return;
    }
    MDB_txn *txn = mb_call_begin(call, true);
    if (!txn)
        return;
    stats_record_t rec;
    stats_track_t t;
    int rc = stats_store_track_get(s_store(call), txn, p.track, &rec, &t);
    stats_record_release(&rec);
    if (rc == MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        mb_call_error(call, 404, "not_found", "body.track_id", "no track with id %.*s",
                      (int)p.track.len, p.track.ptr);
        return;
    }
    if (rc && rc != MDB_CORRUPTED) {
        mb_call_abort(call, txn, rc);
        return;
    }
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    stats_play_pack(&pk, &p);
    MDB_dbi reported = stats_store_dbi(s_store(call), STATS_DB_REPORTED);
    MDB_val k = {.mv_size = strlen(key), .mv_data = key}, v;
    rc = mdb_get(txn, reported, &k, &v);
    if (rc == 0) {
        bool same = v.mv_size == buf.size && memcmp(v.mv_data, buf.data, buf.size) == 0;
        mdb_txn_abort(txn);
        if (same)
            s_answer_report(call, client_id, stats_play_is_stream(&p));
        else
            mb_call_error(call, 409, "conflict", "body.client_id",
                          "client_id %.*s was already used for another play", (int)client_id.len,
                          client_id.ptr);
    } else if (rc != MDB_NOTFOUND)
        mb_call_abort(call, txn, rc);
    else {
        v = (MDB_val){.mv_size = buf.size, .mv_data = buf.data};
        rc = mdb_put(txn, reported, &k, &v, 0);
        if (rc)
            mb_call_abort(call, txn, rc);
        else if (mb_call_outbox_add(call, txn, STATS_TOPIC_PLAY, key, buf.data, buf.size) != 0)
            mdb_txn_abort(txn);
        else if ((rc = mdb_txn_commit(txn)) != 0)
            mb_call_db_error(call, rc);
        else
            s_answer_report(call, client_id, stats_play_is_stream(&p));
    }
    msgpack_sbuffer_destroy(&buf);
}

/* ---- history.get ---------------------------------------------------------------------- */

/*  A cursor is the hex of the last item's started_at (8 bytes, big-endian)
    and track id: opaque to clients, and stable across writes. */
static void s_cursor_format(int64_t started_at, stats_str_t track, char *out)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t b[8];
    stats_put_u64(b, (uint64_t)started_at);
    size_t n = 0;
    for (size_t i = 0; i < 8 + track.len; i++) {
        uint8_t c = i < 8 ? b[i] : (uint8_t)track.ptr[i - 8];
        out[n++] = hex[c >> 4];
        out[n++] = hex[c & 15];
    }
    out[n] = '\0';
}

static int s_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static bool s_cursor_parse(const char *s, size_t len, uint8_t *buf, stats_history_pos_t *pos)
{
    if (len % 2 || len < 2 * 9 || len > STATS_CURSOR_MAX)
        return false;
    for (size_t i = 0; i < len / 2; i++) {
        int hi = s_hex(s[2 * i]), lo = s_hex(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        buf[i] = (uint8_t)(hi << 4 | lo);
    }
    pos->first = false;
    pos->started_at = (int64_t)stats_get_u64(buf);
    pos->track = (stats_str_t){(const char *)buf + 8, len / 2 - 8};
    return pos->started_at >= 0 && stats_id_valid(pos->track.ptr, pos->track.len);
}

typedef struct {
    mb_call_t *call;
    MDB_txn *txn;
    msgpack_packer *pk;
    size_t n;
    int64_t last_at;
    char last_track[STATS_ID_MAX];
    size_t last_track_len;
} s_history_t;

static int s_pack_history_item(void *arg, const stats_history_item_t *item)
{
    s_history_t *h = arg;
    msgpack_packer *pk = h->pk;
    msgpack_pack_map(pk, 7);
    mb_pack_cstr(pk, "track_id");
    mb_pack_strn(pk, item->track.ptr, item->track.len);
    int rc = s_pack_track(h->call, h->txn, pk, item->track);
    mb_pack_cstr(pk, "played_at");
    s_pack_time(pk, item->started_at);
    mb_pack_cstr(pk, "ms_played");
    msgpack_pack_int64(pk, item->ms_played);
    mb_pack_cstr(pk, "counted_as_stream");
    if (item->ms_played >= STATS_STREAM_MS)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    mb_pack_cstr(pk, "context");
    msgpack_pack_map(pk, 2);
    mb_pack_cstr(pk, "type");
    mb_pack_strn(pk, item->context.ptr, item->context.len);
    mb_pack_cstr(pk, "id");
    if (item->context_id.ptr)
        mb_pack_strn(pk, item->context_id.ptr, item->context_id.len);
    else
        msgpack_pack_nil(pk);
    mb_pack_cstr(pk, "source");
    mb_pack_strn(pk, item->source.ptr, item->source.len);
    h->n++;
    h->last_at = item->started_at;
    h->last_track_len = item->track.len < STATS_ID_MAX ? item->track.len : STATS_ID_MAX;
    memcpy(h->last_track, item->track.ptr, h->last_track_len);
    return rc;
}

/*  Newest first. Items are packed into a buffer of their own because the
    count is known only at the end. */
static void s_handle_history_get(mb_call_t *call)
{
    mb_jwt_claims_t auth;
    stats_str_t user;
    int64_t limit;
    if (!s_auth(call, &auth, &user) ||
        !s_int_arg(call, "limit", 1, STATS_PAGE_MAX, STATS_PAGE_DEFAULT, &limit))
        return;
    stats_history_pos_t pos = {.first = true};
    uint8_t cursor_buf[STATS_CURSOR_MAX / 2];
    const msgpack_object *c = mb_call_arg(call, "cursor");
    const char *s;
    size_t len;
    if (c && !(mb_obj_str(c, &s, &len) && s_cursor_parse(s, len, cursor_buf, &pos))) {
        mb_call_error(call, 400, "invalid", "cursor", "cursor is not one this service gave");
        return;
    }
    MDB_txn *txn = mb_call_begin(call, false);
    if (!txn)
        return;
    msgpack_sbuffer items;
    msgpack_sbuffer_init(&items);
    msgpack_packer ipk;
    msgpack_packer_init(&ipk, &items, msgpack_sbuffer_write);
    s_history_t h = {.call = call, .txn = txn, .pk = &ipk};
    bool more;
    int rc = stats_query_history(s_store(call), txn, user, &pos, (size_t)limit, s_pack_history_item,
                                 &h, &more);
    mdb_txn_abort(txn);
    if (rc) {
        mb_call_db_error(call, rc);
        msgpack_sbuffer_destroy(&items);
        return;
    }
    msgpack_packer *pk = mb_call_reply(call, 200);
    msgpack_pack_map(pk, 4);
    mb_pack_cstr(pk, "items");
    msgpack_pack_array(pk, h.n);
    mb_pack_raw(pk, items.data, items.size);
    mb_pack_cstr(pk, "limit");
    msgpack_pack_int64(pk, limit);
    char cursor[STATS_CURSOR_MAX + 1], link[STATS_LINK_MAX];
    mb_pack_cstr(pk, "cursor");
    if (more) {
        s_cursor_format(h.last_at, (stats_str_t){h.last_track, h.last_track_len}, cursor);
        mb_pack_cstr(pk, cursor);
        snprintf(link, sizeof link, "/v1/me/history?cursor=%s&limit=%lld", cursor,
                 (long long)limit);
    } else
        msgpack_pack_nil(pk);
    mb_pack_cstr(pk, "next");
    if (more)
        mb_pack_cstr(pk, link);
    else
        msgpack_pack_nil(pk);
    msgpack_sbuffer_destroy(&items);
}

/* ---- top lists and charts ----------------------------------------------------------------- */

/*  Packs entries [0, limit) of a sorted tally as items. With `tracks`,
    each item is {rank, track_id, track, streams}; otherwise {rank,
    artist_id, streams}. */
static int s_pack_ranked(mb_call_t *call, MDB_txn *txn, msgpack_packer *pk, stats_tally_t *t,
                         size_t limit, bool tracks)
{
    size_t n = stats_tally_size(t) < limit ? stats_tally_size(t) : limit;
    msgpack_pack_array(pk, n);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const void *key;
        size_t len;
        uint64_t count;
        stats_tally_entry(t, i, &key, &len, &count);
        msgpack_pack_map(pk, tracks ? 4 : 3);
        mb_pack_cstr(pk, "rank");
        msgpack_pack_uint64(pk, i + 1);
        mb_pack_cstr(pk, tracks ? "track_id" : "artist_id");
        mb_pack_strn(pk, key, len);
        if (tracks)
            rc = s_pack_track(call, txn, pk, (stats_str_t){key, len});
        mb_pack_cstr(pk, "streams");
        msgpack_pack_uint64(pk, count);
    }
    return rc;
}

static void s_top(mb_call_t *call, stats_top_t what)
{
    mb_jwt_claims_t auth;
    stats_str_t user;
    int64_t limit;
    if (!s_auth(call, &auth, &user) ||
        !s_int_arg(call, "limit", 1, STATS_TOP_MAX, STATS_TOP_DEFAULT, &limit))
        return;
    const msgpack_object *r = mb_call_arg(call, "range");
    const char *range = "4w";
    int64_t days = STATS_RANGE_4W;
    if (r && mb_obj_str_eq(r, "6m"))
        range = "6m", days = STATS_RANGE_6M;
    else if (r && mb_obj_str_eq(r, "all"))
        range = "all", days = 0;
    else if (r && !mb_obj_str_eq(r, "4w")) {
        mb_call_error(call, 400, "invalid", "range", "range must be 4w, 6m or all");
        return;
    }
    MDB_txn *txn = mb_call_begin(call, false);
    if (!txn)
        return;
    int64_t today = s_today();
    stats_tally_t *t = stats_tally_new();
    int rc = stats_query_top(s_store(call), txn, what, user, days == 0, today - days + 1, today, t);
    if (rc == 0) {
        stats_tally_sort(t);
        msgpack_packer *pk = mb_call_reply(call, 200);
        msgpack_pack_map(pk, 4);
        mb_pack_cstr(pk, "range");
        mb_pack_cstr(pk, range);
        mb_pack_cstr(pk, "limit");
        msgpack_pack_int64(pk, limit);
        mb_pack_cstr(pk, "total");
        msgpack_pack_uint64(pk, stats_tally_size(t));
        mb_pack_cstr(pk, "items");
        rc = s_pack_ranked(call, txn, pk, t, (size_t)limit, what == STATS_TOP_TRACKS);
    }
    if (rc)
        mb_call_db_error(call, rc);
    stats_tally_destroy(&t);
    mdb_txn_abort(txn);
}

static void s_handle_top_tracks(mb_call_t *call)
{
    s_top(call, STATS_TOP_TRACKS);
}

static void s_handle_top_artists(mb_call_t *call)
{
    s_top(call, STATS_TOP_ARTISTS);
}

/*  Reads `date` (the window's last day) and `days` into [*from, *to]. */
static bool s_window(mb_call_t *call, int64_t default_date, int64_t default_days, int64_t *from,
                     int64_t *to)
{
    int64_t days;
    if (!s_date_arg(call, "date", false, default_date, to) ||
        !s_int_arg(call, "days", 1, STATS_DAYS_MAX, default_days, &days))
        return false;
    *from = *to - days + 1;
    return true;
}

/*  The chart of streams per track over `days` days ending on `date`
    (default: yesterday, the last whole day), of every country or of one. */
static void s_handle_charts_top_tracks(mb_call_t *call)
{
    int64_t from, to, limit;
    if (!s_window(call, s_today() - 1, 1, &from, &to) ||
        !s_int_arg(call, "limit", 1, STATS_CHART_MAX, STATS_CHART_DEFAULT, &limit))
        return;
    const msgpack_object *c = mb_call_arg(call, "country");
    const char *s = NULL;
    size_t len = 0;
    char country[STATS_COUNTRY_LEN + 1] = "";
    if (c && !(mb_obj_str(c, &s, &len) && stats_country_valid(s, len))) {
        mb_call_error(call, 400, "invalid", "country",
                      "country must be an ISO 3166-1 alpha-2 code in capitals");
        return;
    }
    if (c)
        memcpy(country, s, STATS_COUNTRY_LEN);
    MDB_txn *txn = mb_call_begin(call, false);
    if (!txn)
        return;
    stats_tally_t *t = stats_tally_new();
    int rc = stats_query_chart(s_store(call), txn, c ? country : NULL, from, to, t);
    if (rc == 0) {
        stats_tally_sort(t);
        msgpack_packer *pk = mb_call_reply(call, 200);
        msgpack_pack_map(pk, 6);
        mb_pack_cstr(pk, "date");
        s_pack_date(pk, to);
        mb_pack_cstr(pk, "days");
        msgpack_pack_int64(pk, to - from + 1);
        mb_pack_cstr(pk, "from");
        s_pack_date(pk, from);
        mb_pack_cstr(pk, "country");
        if (c)
            mb_pack_cstr(pk, country);
        else
            msgpack_pack_nil(pk);
        mb_pack_cstr(pk, "total");
        msgpack_pack_uint64(pk, stats_tally_size(t));
        mb_pack_cstr(pk, "items");
        rc = s_pack_ranked(call, txn, pk, t, (size_t)limit, true);
    }
    if (rc)
        mb_call_db_error(call, rc);
    stats_tally_destroy(&t);
    mdb_txn_abort(txn);
}

/* ---- track.stats --------------------------------------------------------------------------- */

static void s_pack_bool_time(msgpack_packer *pk, const char *name, bool known, int64_t ms)
{
    mb_pack_cstr(pk, name);
    if (known)
        s_pack_time(pk, ms);
    else
        msgpack_pack_nil(pk);
}

/*  Streams, plays and distinct listeners per day, over the period and of
    all time. Listeners are counted exactly (sets of user ids). */
static void s_handle_track_stats(mb_call_t *call)
{
    int64_t from, to;
    const char *s;
    size_t len;
    if (!s_admin(call))
        return;
    if (!mb_obj_str(mb_call_arg(call, "id"), &s, &len) || !stats_id_valid(s, len)) {
        mb_call_error(call, 400, "invalid", "id", "id must be a track id");
        return;
    }
    stats_str_t id = {s, len};
    if (!s_window(call, s_today(), STATS_TRACK_DAYS_DEFAULT, &from, &to))
        return;
    MDB_txn *txn = mb_call_begin(call, false);
    if (!txn)
        return;
    stats_totals_t totals;
    int rc = stats_store_totals_get(s_store(call), txn, id, &totals);
    bool played = rc == 0;
    stats_record_t rec;
    stats_track_t t;
    int known = stats_store_track_get(s_store(call), txn, id, &rec, &t);
    stats_record_release(&rec);
    if (rc == MDB_NOTFOUND && known == MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        mb_call_error(call, 404, "not_found", NULL, "no track with id %.*s", (int)len, s);
        return;
    }
    stats_track_day_t *days = mb_calloc((size_t)(to - from + 1), sizeof *days);
    stats_tally_t *listeners = stats_tally_new();
    uint64_t all_listeners = 0;
    if (rc == MDB_NOTFOUND)
        rc = 0;
    if (rc == 0)
        rc = stats_query_track_days(s_store(call), txn, id, from, to, days, listeners,
                                    &all_listeners);
    if (rc == 0) {
        msgpack_packer *pk = mb_call_reply(call, 200);
        msgpack_pack_map(pk, 7);
        mb_pack_cstr(pk, "track_id");
        mb_pack_strn(pk, s, len);
        rc = s_pack_track(call, txn, pk, id);
        mb_pack_cstr(pk, "from");
        s_pack_date(pk, from);
        mb_pack_cstr(pk, "to");
        s_pack_date(pk, to);
        mb_pack_cstr(pk, "days");
        msgpack_pack_array(pk, (size_t)(to - from + 1));
        uint64_t streams = 0, plays = 0;
        for (int64_t i = 0; i <= to - from; i++) {
            msgpack_pack_map(pk, 4);
            mb_pack_cstr(pk, "date");
            s_pack_date(pk, days[i].day);
            mb_pack_cstr(pk, "streams");
            msgpack_pack_uint64(pk, days[i].streams);
            mb_pack_cstr(pk, "plays");
            msgpack_pack_uint64(pk, days[i].plays);
            mb_pack_cstr(pk, "listeners");
            msgpack_pack_uint64(pk, days[i].listeners);
            streams += days[i].streams;
            plays += days[i].plays;
        }
        mb_pack_cstr(pk, "period");
        msgpack_pack_map(pk, 3);
        mb_pack_cstr(pk, "streams");
        msgpack_pack_uint64(pk, streams);
        mb_pack_cstr(pk, "plays");
        msgpack_pack_uint64(pk, plays);
        mb_pack_cstr(pk, "listeners");
        msgpack_pack_uint64(pk, stats_tally_size(listeners));
        mb_pack_cstr(pk, "all_time");
        msgpack_pack_map(pk, 5);
        mb_pack_cstr(pk, "streams");
        msgpack_pack_uint64(pk, totals.streams);
        mb_pack_cstr(pk, "plays");
        msgpack_pack_uint64(pk, totals.plays);
        mb_pack_cstr(pk, "listeners");
        msgpack_pack_uint64(pk, all_listeners);
        s_pack_bool_time(pk, "first_played_at", played, (int64_t)totals.first_ms);
        s_pack_bool_time(pk, "last_played_at", played, (int64_t)totals.last_ms);
    }
    if (rc)
        mb_call_db_error(call, rc);
    stats_tally_destroy(&listeners);
    free(days);
    mdb_txn_abort(txn);
}

/* ---- royalty.report
 * ------------------------------------------------------------------------------- */

/*  Appends `s` as one CSV field (RFC 4180: quoted when it holds a comma, a
    quote or a line break; quotes doubled). */
static void s_csv_field(msgpack_sbuffer *csv, const char *s, size_t len)
{
    bool quote = false;
    for (size_t i = 0; !quote && i < len; i++)
        quote = s[i] == ',' || s[i] == '"' || s[i] == '\n' || s[i] == '\r';
    if (!quote) {
        msgpack_sbuffer_write(csv, s, len);
        return;
    }
    msgpack_sbuffer_write(csv, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"')
            msgpack_sbuffer_write(csv, "\"", 1);
        msgpack_sbuffer_write(csv, s + i, 1);
    }
    msgpack_sbuffer_write(csv, "\"", 1);
}

/*  Appends one row: track_id,isrc,title,artist_ids,streams. */
static int s_csv_row(mb_call_t *call, MDB_txn *txn, msgpack_sbuffer *csv, stats_str_t id,
                     uint64_t streams)
{
    stats_record_t rec;
    stats_track_t t;
    int rc = stats_store_track_get(s_store(call), txn, id, &rec, &t);
    if (rc)
        memset(&t, 0, sizeof t);
    s_csv_field(csv, id.ptr, id.len);
    msgpack_sbuffer_write(csv, ",", 1);
    if (t.isrc.ptr)
        s_csv_field(csv, t.isrc.ptr, t.isrc.len);
    msgpack_sbuffer_write(csv, ",", 1);
    if (t.title.ptr)
        s_csv_field(csv, t.title.ptr, t.title.len);
    msgpack_sbuffer_write(csv, ",", 1);
    char artists[STATS_ARTISTS_MAX * (STATS_ID_MAX + 1) + 1];
    size_t n = 0;
    for (size_t i = 0; i < t.n_artists; i++)
        n += (size_t)snprintf(artists + n, sizeof artists - n, "%s%.*s", i ? ";" : "",
                              (int)t.artist_ids[i].len, t.artist_ids[i].ptr);
    s_csv_field(csv, artists, n);
    char count[32];
    int m = snprintf(count, sizeof count, ",%llu\r\n", (unsigned long long)streams);
    msgpack_sbuffer_write(csv, count, (size_t)m);
    stats_record_release(&rec);
    return rc == MDB_NOTFOUND || rc == MDB_CORRUPTED ? 0 : rc;
}

/*  Streams per track (with its ISRC) from `from` to `to` inclusive: what
    a label is paid on. Every country, every source; plays under 30
    seconds are not streams and are not in it. */
static void s_handle_royalty_report(mb_call_t *call)
{
    int64_t from, to;
    if (!s_admin(call) || !s_date_arg(call, "from", true, 0, &from) ||
        !s_date_arg(call, "to", true, 0, &to))
        return;
    if (to < from || to - from + 1 > STATS_DAYS_MAX) {
        mb_call_error(call, 400, "invalid", "to", "to must be from `from` to %d days after it",
                      STATS_DAYS_MAX - 1);
        return;
    }
    MDB_txn *txn = mb_call_begin(call, false);
    if (!txn)
        return;
    stats_tally_t *t = stats_tally_new();
    int rc = stats_query_chart(s_store(call), txn, NULL, from, to, t);
    msgpack_sbuffer csv;
    msgpack_sbuffer_init(&csv);
    static const char header[] = "track_id,isrc,title,artist_ids,streams\r\n";
    msgpack_sbuffer_write(&csv, header, sizeof header - 1);
    uint64_t total = 0;
    if (rc == 0)
        stats_tally_sort(t);
    for (size_t i = 0; rc == 0 && i < stats_tally_size(t) && csv.size <= STATS_CSV_MAX; i++) {
        const void *key;
        size_t len;
        uint64_t count;
        stats_tally_entry(t, i, &key, &len, &count);
        rc = s_csv_row(call, txn, &csv, (stats_str_t){key, len}, count);
        total += count;
    }
    if (rc)
        mb_call_db_error(call, rc);
    else if (csv.size > STATS_CSV_MAX)
        mb_call_error(call, 413, "too_large", "from",
                      "the report is over %u MiB; ask for a shorter period", STATS_CSV_MAX >> 20);
    else {
        char from_s[STATS_DATE_LEN + 1], to_s[STATS_DATE_LEN + 1], name[64];
        stats_date_format(from, from_s);
        stats_date_format(to, to_s);
        snprintf(name, sizeof name, "royalties-%s-%s.csv", from_s, to_s);
        msgpack_packer *pk = mb_call_reply(call, 200);
        msgpack_pack_map(pk, 7);
        mb_pack_cstr(pk, "content_type");
        mb_pack_cstr(pk, "text/csv");
        mb_pack_cstr(pk, "filename");
        mb_pack_cstr(pk, name);
        mb_pack_cstr(pk, "from");
        mb_pack_cstr(pk, from_s);
        mb_pack_cstr(pk, "to");
        mb_pack_cstr(pk, to_s);
        mb_pack_cstr(pk, "rows");
        msgpack_pack_uint64(pk, stats_tally_size(t));
        mb_pack_cstr(pk, "total_streams");
        msgpack_pack_uint64(pk, total);
        mb_pack_cstr(pk, "csv");
        mb_pack_strn(pk, csv.data, csv.size);
    }
    msgpack_sbuffer_destroy(&csv);
    stats_tally_destroy(&t);
    mdb_txn_abort(txn);
}

/* ---- the actor ---------------------------------------------------------------------------------
 */

int stats_apply(MDB_txn *txn, const mb_event_t *event, void *state)
{
    const char *why = NULL;
    int rc = stats_store_apply(state, txn, event, NULL, &why);
    if (rc == MB_EINVAL)
        return mb_event_invalid(event, "%s", why ? why : "malformed");
    return rc > 0 ? MB_EDB : rc; /* an errno from LMDB: transient, retried */
}

static int s_open(MDB_env *env, void **state)
{
    stats_store_t *store;
    if (stats_store_open(env, &store) != 0)
        return MB_EDB;
    *state = store;
    return 0;
}

static void s_close(void *state)
{
    stats_store_t *store = state;
    stats_store_destroy(&store);
}

static const mb_op_t s_ops[] = {
    {"play.report", s_handle_play_report},
    {"history.get", s_handle_history_get},
    {"top.tracks", s_handle_top_tracks},
    {"top.artists", s_handle_top_artists},
    {"charts.top_tracks", s_handle_charts_top_tracks},
    {"track.stats", s_handle_track_stats},
    {"royalty.report", s_handle_royalty_report},
    {NULL, NULL},
};

static const char *const s_meta_topics[] = {STATS_TOPIC_TRACK, STATS_TOPIC_USER, NULL};
static const char *const s_play_topics[] = {STATS_TOPIC_PLAY, NULL};

/*  Two groups, so what stats knows of tracks and users (which play.report
    checks, and which erasure changes) never waits behind a backlog of
    plays, such as a large import. Plays still apply in log order with
    them: a play naming a track or user not yet known waits until the meta
    group is past it (stats_store_apply_play()). */
static const mb_consumer_def_t s_consumers[] = {
    {.group = STATS_GROUP_META,
     .topics = s_meta_topics,
     .apply = stats_apply,
     .batch = STATS_CONSUMER_BATCH},
    {.group = STATS_GROUP_PLAYS,
     .topics = s_play_topics,
     .apply = stats_apply,
     .batch = STATS_CONSUMER_BATCH},
    {.group = NULL},
};

static const mb_actor_def_t s_def = {
    .name = STATS_SERVICE,
    .ops = s_ops,
    .max_dbs = STATS_MAX_DBS,
    .map_size = STATS_MAP_SIZE,
    .open = s_open,
    .close = s_close,
    .consumers = s_consumers,
};

const mb_actor_def_t *stats_actor_def(void)
{
    return &s_def;
}

/*  Tests compile this file with STATS_NO_MAIN to reach the handlers
    through stats_actor_def(). */
#ifndef STATS_NO_MAIN
int main(int argc, char **argv)
{
    return mb_actor_main(&s_def, argc, argv);
}
#endif
