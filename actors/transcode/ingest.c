/*  musicbus-ingest — loads a folder tree of audio files into musicbus.

        musicbus-ingest [--bus ENDPOINT] [--data DIR] [--timeout MS]
                        [--max-size BYTES] [--wait SECONDS] FOLDER

    For every audio file under FOLDER (by extension: flac wav aif aiff mp3
    m4a aac ogg oga opus), in path order:
      1. unchanged since the last run (same size and mtime as recorded in
         the state, $DATA/ingest/): counted, nothing else;
      2. probes it and reads its tags with libavformat (artist, album
         artist, album, title, track and disc number, date, ISRC, genre,
         cover art); a file that is not decodable audio is reported and
         skipped;
      3. finds or creates its artist(s), album and track in the catalog
         over the bus: artists and albums by the ids this tool recorded
         for their names (the catalog has no lookup by name), checked with
         artist.get/album.get; tracks by the recorded id, else by
         track.match (ISRC, else artist and title) within the same album,
         else track.create; a track whose tags changed is updated;
      4. writes the master into the blob store ($DATA/blobs, same host)
         and calls transcode's audio.ingest, which answers 200 without a
         new version when this master is already the track's;
      5. the embedded cover, when there is one, goes to the blob store
         and to transcode's cover.put for the album.
    A progress line (files done / total, files per second) goes to stderr;
    a summary to stdout. Exit status 0 when every file was handled (broken
    ones reported), 1 when some could not be (bus or storage errors), 2
    for bad usage. --wait makes it wait for the new versions' transcoding
    (up to SECONDS) and report how they ended. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <lmdb.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libavformat/avformat.h>
#include <libavutil/log.h>

#include "mb_alloc.h"
#include "mb_blob.h"
#include "mb_client.h"
#include "mb_config.h"
#include "mb_envelope.h"
#include "mb_error.h"
#include "mb_jwt.h"
#include "mb_log.h"
#include "mb_msgpack.h"
#include "mb_signal.h"
#include "mb_zmq.h"
#include "transcode_probe.h"

#define S_DEFAULT_MAX_SIZE (2ull << 30) /* 2 GiB, as the upload route */
#define S_DEFAULT_TIMEOUT_MS 30000
#define S_NAME_MAX 200 /* the catalog's limit on names and titles, in bytes here */
#define S_ID_MAX 64
#define S_TAG_MAX 1024

static const char *s_extensions[] = {"flac", "wav", "aif", "aiff", "mp3", "m4a",
                                     "aac",  "ogg", "oga", "opus", NULL};

typedef struct {
    char *path;
    char *why;
} s_broken_t;

typedef struct {
    mb_client_t *client;
    int timeout_ms;
    uint64_t rid;
    mb_blob_store_t *blobs;
    MDB_env *env;
    MDB_dbi files, artists, albums, tracks;
    uint64_t max_size;
    char **paths;
    size_t n_paths, cap_paths;
    /* counters */
    size_t done, unchanged, versions, duplicates, failed;
    size_t artists_created, albums_created, tracks_created, tracks_updated, covers;
    s_broken_t *broken;
    size_t n_broken;
    char (*new_versions)[S_ID_MAX + 1];
    size_t n_new;
    double t0, last_progress;
    bool tty;
} s_tool_t;

/*  What a file's tags say. */
typedef struct {
    char artist[S_NAME_MAX + 1];
    char album_artist[S_NAME_MAX + 1];
    char album[S_NAME_MAX + 1];
    char title[S_NAME_MAX + 1];
    char date[11];
    char isrc[13];
    char genre[51];
    int track, disc;
    AVPacket *cover; /* the attached picture, or NULL */
} s_tags_t;

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void s_report_broken(s_tool_t *t, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_report_broken(s_tool_t *t, const char *path, const char *fmt, ...)
{
    char why[600];
    va_list args;
    va_start(args, fmt);
    vsnprintf(why, sizeof why, fmt, args);
    va_end(args);
    t->broken = mb_realloc(t->broken, (t->n_broken + 1) * sizeof *t->broken);
    t->broken[t->n_broken++] = (s_broken_t){mb_strdup(path), mb_strdup(why)};
    fprintf(stderr, "%sskipped %s: %s\n", t->tty ? "\r\033[K" : "", path, why);
}

/* ---- the bus ------------------------------------------------------------------ */

/*  A request: op, rid, the admin auth map this tool acts with, args
    packed by `pack`. Waits for the reply with its rid. Returns 0 with *rep
    (release it), or MB_ETIMEDOUT / MB_EIO / MB_EINTR. */
static int s_call(s_tool_t *t, const char *service, const char *op,
                  void (*pack)(msgpack_packer *pk, const void *arg), const void *arg,
                  mb_reply_t *rep)
{
    msgpack_sbuffer req;
    msgpack_sbuffer_init(&req);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    uint64_t rid = ++t->rid;
    mb_request_pack_head(&pk, op, rid, (uint32_t)t->timeout_ms, 2);
    mb_pack_cstr(&pk, "auth");
    mb_jwt_claims_t claims = {.roles = MB_ROLE_ADMIN | MB_ROLE_USER};
    snprintf(claims.sub, sizeof claims.sub, "musicbus-ingest");
    snprintf(claims.sid, sizeof claims.sid, "batch");
    snprintf(claims.tier, sizeof claims.tier, "premium");
    mb_jwt_pack_auth(&pk, &claims);
    mb_pack_cstr(&pk, "args");
    pack(&pk, arg);
    double deadline = s_now() + t->timeout_ms / 1000.0;
    zmq_msg_t msg;
    int rc = mb_client_call(t->client, service, req.data, req.size, t->timeout_ms, &msg);
    msgpack_sbuffer_destroy(&req);
    while (rc == 0) {
        const char *why;
        int drc = mb_reply_decode(rep, zmq_msg_data(&msg), zmq_msg_size(&msg), &why);
        zmq_msg_close(&msg);
        if (drc == 0 && rep->rid == rid)
            return 0;
        if (drc == 0)
            mb_reply_release(rep);
        /* A late reply to an earlier request that timed out: keep waiting. */
        zmq_pollitem_t item = {.socket = mb_client_socket(t->client), .events = ZMQ_POLLIN};
        for (;;) {
            rc = mb_client_recv(t->client, &msg);
            if (rc != MB_EAGAIN && rc != MB_EPROTO)
                break;
            int left = (int)((deadline - s_now()) * 1000);
            if (left <= 0)
                return MB_ETIMEDOUT;
            if (rc == MB_EAGAIN && zmq_poll(&item, 1, left) < 0)
                return errno == EINTR ? MB_EINTR : MB_EIO;
        }
    }
    return rc;
}

static bool s_reply_str(const mb_reply_t *rep, const char *key, char *out, size_t cap)
{
    const char *s;
    size_t len;
    if (!rep->body || !mb_obj_str(mb_map_get(rep->body, key), &s, &len) || len >= cap)
        return false;
    memcpy(out, s, len);
    out[len] = '\0';
    return true;
}

static void s_pack_id(msgpack_packer *pk, const void *arg)
{
    msgpack_pack_map(pk, 1);
    mb_pack_cstr(pk, "id");
    mb_pack_cstr(pk, arg);
}

/*  True when catalog record `op` (artist.get, album.get, track.get) of
    `id` exists; *err set on a bus failure. */
static bool s_exists(s_tool_t *t, const char *op, const char *id, int *err)
{
    mb_reply_t rep;
    *err = s_call(t, "catalog", op, s_pack_id, id, &rep);
    if (*err)
        return false;
    bool found = rep.status == 200;
    if (rep.status != 200 && rep.status != 404)
        *err = MB_EIO;
    mb_reply_release(&rep);
    return found;
}

/* ---- state: what earlier runs made ------------------------------------------------ */

/*  Lower-case ASCII, blanks folded: the key a name is remembered by. */
static void s_norm(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    bool space = false;
    for (const char *p = in; *p && n + 1 < cap; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == ' ' || c == '\t') {
            space = n > 0;
            continue;
        }
        if (space && n + 2 < cap)
            out[n++] = ' ';
        space = false;
        out[n++] = (char)(c < 0x80 ? tolower(c) : c);
    }
    out[n] = '\0';
}

static int s_state_get(s_tool_t *t, MDB_dbi dbi, const char *key, char *out, size_t cap)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(t->env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return rc;
    MDB_val k = {strlen(key), (void *)key}, v;
    rc = mdb_get(txn, dbi, &k, &v);
    if (rc == 0) {
        size_t n = v.mv_size < cap - 1 ? v.mv_size : cap - 1;
        memcpy(out, v.mv_data, n);
        out[n] = '\0';
    }
    mdb_txn_abort(txn);
    return rc;
}

static int s_state_put(s_tool_t *t, MDB_dbi dbi, const char *key, const void *val, size_t len)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(t->env, NULL, 0, &txn);
    if (rc)
        return rc;
    MDB_val k = {strlen(key), (void *)key}, v = {len, (void *)val};
    rc = mdb_put(txn, dbi, &k, &v, 0);
    return rc == 0 ? mdb_txn_commit(txn) : (mdb_txn_abort(txn), rc);
}

/*  A file's record: "<size> <mtime ns> <master hex> <track id>". */
static bool s_unchanged(s_tool_t *t, const char *path, const struct stat *st)
{
    char rec[256];
    if (s_state_get(t, t->files, path, rec, sizeof rec) != 0)
        return false;
    unsigned long long size, mtime;
    char master[MB_BLOB_HEX_LEN + 1], track[S_ID_MAX + 1];
    if (sscanf(rec, "%llu %llu %64s %64s", &size, &mtime, master, track) != 4)
        return false;
    unsigned long long now_mtime = (unsigned long long)st->st_mtim.tv_sec * 1000000000ull +
                                   (unsigned long long)st->st_mtim.tv_nsec;
    return size == (unsigned long long)st->st_size && mtime == now_mtime;
}

static void s_remember_file(s_tool_t *t, const char *path, const struct stat *st,
                            const char *master, const char *track)
{
    char rec[256];
    int n = snprintf(rec, sizeof rec, "%llu %llu %s %s", (unsigned long long)st->st_size,
                     (unsigned long long)st->st_mtim.tv_sec * 1000000000ull +
                         (unsigned long long)st->st_mtim.tv_nsec,
                     master, track);
    s_state_put(t, t->files, path, rec, (size_t)n);
    s_state_put(t, t->tracks, track, path, strlen(path));
}

/* ---- tags ------------------------------------------------------------------------ */

static const char *s_tag(AVFormatContext *fmt, int stream, const char *const *keys)
{
    for (const char *const *k = keys; *k; k++) {
        AVDictionaryEntry *e = av_dict_get(fmt->metadata, *k, NULL, 0);
        if (!e && stream >= 0)
            e = av_dict_get(fmt->streams[stream]->metadata, *k, NULL, 0);
        if (e && e->value[0])
            return e->value;
    }
    return NULL;
}

/*  Copies `in` trimmed, cut to the catalog's limit at a character
    boundary. */
static void s_copy_name(const char *in, char *out, size_t cap)
{
    while (*in == ' ')
        in++;
    size_t n = strlen(in);
    while (n > 0 && in[n - 1] == ' ')
        n--;
    if (n > cap - 1) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)in[n] & 0xc0) == 0x80)
            n--;
    }
    memcpy(out, in, n);
    out[n] = '\0';
}

static int s_number(const char *s, int max)
{
    int v = s ? atoi(s) : 0; /* "3/12" reads 3 */
    return v >= 1 && v <= max ? v : 0;
}

/*  YYYY, YYYY-MM or YYYY-MM-DD out of whatever the date tag holds. */
static void s_date(const char *s, char out[11])
{
    out[0] = '\0';
    if (!s)
        return;
    size_t n = 0;
    while (n < 10 && (s[n] == '-' || (s[n] >= '0' && s[n] <= '9')))
        n++;
    if (n == 10 || n == 7 || n == 4) {
        memcpy(out, s, n);
        out[n] = '\0';
    } else if (n >= 4) {
        memcpy(out, s, 4);
        out[4] = '\0';
    }
}

static void s_isrc(const char *s, char out[13])
{
    out[0] = '\0';
    if (!s)
        return;
    size_t n = 0;
    for (; *s && n < 13; s++)
        if (*s != '-' && *s != ' ')
            out[n++] = (char)toupper((unsigned char)*s);
    if (n != 12)
        n = 0;
    out[n] = '\0';
}

static const char *s_basename_no_ext(const char *path, char *out, size_t cap)
{
    const char *slash = strrchr(path, '/');
    s_copy_name(slash ? slash + 1 : path, out, cap);
    char *dot = strrchr(out, '.');
    if (dot && dot != out)
        *dot = '\0';
    return out;
}

/*  The folder holding `path`, as a last resort for the album's title. */
static void s_parent_name(const char *path, char *out, size_t cap)
{
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path);
    char *slash = strrchr(copy, '/');
    if (slash)
        *slash = '\0';
    slash = strrchr(copy, '/');
    s_copy_name(slash ? slash + 1 : copy, out, cap);
}

static int s_read_tags(const char *path, s_tags_t *tags)
{
    memset(tags, 0, sizeof *tags);
    AVFormatContext *fmt = NULL;
    int rc = transcode_open_input(path, &fmt);
    if (rc < 0)
        return rc;
    avformat_find_stream_info(fmt, NULL);
    int audio = av_find_best_stream(fmt, AVMEDIA_TYPE_AUDIO, -1, -1, NULL, 0);
    static const char *const artist[] = {"artist", "performer", NULL};
    static const char *const album_artist[] = {"album_artist", "albumartist", "album artist", NULL};
    static const char *const album[] = {"album", NULL};
    static const char *const title[] = {"title", NULL};
    static const char *const track[] = {"track", "tracknumber", NULL};
    static const char *const disc[] = {"disc", "discnumber", NULL};
    static const char *const date[] = {"date", "year", "originaldate", NULL};
    static const char *const isrc[] = {"isrc", "TSRC", NULL};
    static const char *const genre[] = {"genre", NULL};
    const char *v;
    if ((v = s_tag(fmt, audio, artist)))
        s_copy_name(v, tags->artist, sizeof tags->artist);
    if ((v = s_tag(fmt, audio, album_artist)))
        s_copy_name(v, tags->album_artist, sizeof tags->album_artist);
    if ((v = s_tag(fmt, audio, album)))
        s_copy_name(v, tags->album, sizeof tags->album);
    if ((v = s_tag(fmt, audio, title)))
        s_copy_name(v, tags->title, sizeof tags->title);
    if ((v = s_tag(fmt, audio, genre)))
        s_copy_name(v, tags->genre, sizeof tags->genre);
    tags->track = s_number(s_tag(fmt, audio, track), 999);
    tags->disc = s_number(s_tag(fmt, audio, disc), 99);
    s_date(s_tag(fmt, audio, date), tags->date);
    s_isrc(s_tag(fmt, audio, isrc), tags->isrc);
    for (unsigned i = 0; i < fmt->nb_streams; i++) {
        AVStream *st = fmt->streams[i];
        if ((st->disposition & AV_DISPOSITION_ATTACHED_PIC) && st->attached_pic.size > 0) {
            tags->cover = av_packet_clone(&st->attached_pic);
            break;
        }
    }
    avformat_close_input(&fmt);
    return 0;
}

/* ---- catalog records ------------------------------------------------------------- */

typedef struct {
    const char *name;
    const char *genre;
} s_artist_args_t;

static void s_pack_artist(msgpack_packer *pk, const void *arg)
{
    const s_artist_args_t *a = arg;
    msgpack_pack_map(pk, 1);
    mb_pack_cstr(pk, "body");
    msgpack_pack_map(pk, 1);
    mb_pack_cstr(pk, "name");
    mb_pack_cstr(pk, a->name);
}

/*  The artist named `name`: the id recorded for it when the catalog
    still has it, else a new one. Returns 0, or a bus/refusal error
    (with *why). */
static int s_artist(s_tool_t *t, const char *name, char id[S_ID_MAX + 1], char *why, size_t wl)
{
    char key[S_NAME_MAX + 1];
    s_norm(name, key, sizeof key);
    int err = 0;
    if (s_state_get(t, t->artists, key, id, S_ID_MAX + 1) == 0 &&
        s_exists(t, "artist.get", id, &err))
        return 0;
    if (err) {
        snprintf(why, wl, "the catalog did not answer artist.get: %s", mb_strerror(err));
        return err;
    }
    s_artist_args_t a = {.name = name};
    mb_reply_t rep;
    int rc = s_call(t, "catalog", "artist.create", s_pack_artist, &a, &rep);
    if (rc) {
        snprintf(why, wl, "the catalog did not answer artist.create: %s", mb_strerror(rc));
        return rc;
    }
    if (rep.status != 201 || !s_reply_str(&rep, "id", id, S_ID_MAX + 1)) {
        snprintf(why, wl, "artist '%s' refused: %d %.*s", name, rep.status, (int)rep.message_len,
                 rep.message ? rep.message : "");
        mb_reply_release(&rep);
        return MB_EINVAL;
    }
    mb_reply_release(&rep);
    t->artists_created++;
    s_state_put(t, t->artists, key, id, strlen(id));
    return 0;
}

typedef struct {
    const char *title, *artist_id, *date, *genre;
} s_album_args_t;

static void s_pack_album(msgpack_packer *pk, const void *arg)
{
    const s_album_args_t *a = arg;
    msgpack_pack_map(pk, 1);
    mb_pack_cstr(pk, "body");
    msgpack_pack_map(pk, 2 + (a->date[0] != '\0') + (a->genre[0] != '\0'));
    mb_pack_cstr(pk, "title");
    mb_pack_cstr(pk, a->title);
    mb_pack_cstr(pk, "artist_ids");
    msgpack_pack_array(pk, 1);
    mb_pack_cstr(pk, a->artist_id);
    if (a->date[0]) {
        mb_pack_cstr(pk, "release_date");
        mb_pack_cstr(pk, a->date);
    }
    if (a->genre[0]) {
        mb_pack_cstr(pk, "genres");
        msgpack_pack_array(pk, 1);
        mb_pack_cstr(pk, a->genre);
    }
}

static int s_album(s_tool_t *t, const s_tags_t *tags, const char *artist_id, char id[S_ID_MAX + 1],
                   char *why, size_t wl)
{
    char key[S_ID_MAX + S_NAME_MAX + 2], norm[S_NAME_MAX + 1];
    s_norm(tags->album, norm, sizeof norm);
    snprintf(key, sizeof key, "%s/%s", artist_id, norm);
    int err = 0;
    if (s_state_get(t, t->albums, key, id, S_ID_MAX + 1) == 0 && s_exists(t, "album.get", id, &err))
        return 0;
    if (err) {
        snprintf(why, wl, "the catalog did not answer album.get: %s", mb_strerror(err));
        return err;
    }
    s_album_args_t a = {
        .title = tags->album, .artist_id = artist_id, .date = tags->date, .genre = tags->genre};
    mb_reply_t rep;
    for (int pass = 0; pass < 2; pass++) {
        int rc = s_call(t, "catalog", "album.create", s_pack_album, &a, &rep);
        if (rc) {
            snprintf(why, wl, "the catalog did not answer album.create: %s", mb_strerror(rc));
            return rc;
        }
        if (rep.status == 201)
            break;
        /* A date or genre the catalog will not take is dropped, not fatal. */
        bool optional = rep.field && (rep.field_len >= 12) &&
                        (!strncmp(rep.field, "body.release_date", rep.field_len) ||
                         !strncmp(rep.field, "body.genres", 11));
        if (pass == 0 && optional) {
            mb_reply_release(&rep);
            a.date = "";
            a.genre = "";
            continue;
        }
        snprintf(why, wl, "album '%s' refused: %d %.*s", tags->album, rep.status,
                 (int)rep.message_len, rep.message ? rep.message : "");
        mb_reply_release(&rep);
        return MB_EINVAL;
    }
    bool ok = s_reply_str(&rep, "id", id, S_ID_MAX + 1);
    mb_reply_release(&rep);
    if (!ok) {
        snprintf(why, wl, "album.create answered no id");
        return MB_EINVAL;
    }
    t->albums_created++;
    s_state_put(t, t->albums, key, id, strlen(id));
    return 0;
}

typedef struct {
    const s_tags_t *tags;
    const char *artist_id, *album_id;
    int64_t duration_ms;
    const char *id; /* for update */
} s_track_args_t;

static void s_pack_track_body(msgpack_packer *pk, const s_track_args_t *a)
{
    const s_tags_t *g = a->tags;
    msgpack_pack_map(pk, 6 + (g->isrc[0] != '\0'));
    mb_pack_cstr(pk, "title");
    mb_pack_cstr(pk, g->title);
    mb_pack_cstr(pk, "artist_ids");
    msgpack_pack_array(pk, 1);
    mb_pack_cstr(pk, a->artist_id);
    mb_pack_cstr(pk, "album_id");
    mb_pack_cstr(pk, a->album_id);
    mb_pack_cstr(pk, "disc_number");
    msgpack_pack_int(pk, g->disc);
    mb_pack_cstr(pk, "track_number");
    msgpack_pack_int(pk, g->track);
    mb_pack_cstr(pk, "duration_ms");
    msgpack_pack_int64(pk, a->duration_ms);
    if (g->isrc[0]) {
        mb_pack_cstr(pk, "isrc");
        mb_pack_cstr(pk, g->isrc);
    }
}

static void s_pack_track_create(msgpack_packer *pk, const void *arg)
{
    msgpack_pack_map(pk, 1);
    mb_pack_cstr(pk, "body");
    s_pack_track_body(pk, arg);
}

static void s_pack_track_update(msgpack_packer *pk, const void *arg)
{
    const s_track_args_t *a = arg;
    msgpack_pack_map(pk, 2);
    mb_pack_cstr(pk, "id");
    mb_pack_cstr(pk, a->id);
    mb_pack_cstr(pk, "body");
    s_pack_track_body(pk, a);
}

static void s_pack_match(msgpack_packer *pk, const void *arg)
{
    const s_track_args_t *a = arg;
    msgpack_pack_map(pk, 1);
    mb_pack_cstr(pk, "queries");
    msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, 2 + (a->tags->isrc[0] != '\0'));
    mb_pack_cstr(pk, "artist");
    mb_pack_cstr(pk, a->tags->artist);
    mb_pack_cstr(pk, "title");
    mb_pack_cstr(pk, a->tags->title);
    if (a->tags->isrc[0]) {
        mb_pack_cstr(pk, "isrc");
        mb_pack_cstr(pk, a->tags->isrc);
    }
}

/*  True when the stored track `rec` already says what the tags say. */
static bool s_track_same(const msgpack_object *rec, const s_track_args_t *a)
{
    int64_t disc = 0, track = 0, duration = 0;
    const msgpack_object *ids = mb_map_get(rec, "artist_ids");
    const msgpack_object *isrc = mb_map_get(rec, "isrc");
    bool isrc_same = a->tags->isrc[0] ? mb_obj_str_eq(isrc, a->tags->isrc)
                                      : (!isrc || isrc->type == MSGPACK_OBJECT_NIL);
    return mb_obj_str_eq(mb_map_get(rec, "title"), a->tags->title) &&
           mb_obj_str_eq(mb_map_get(rec, "album_id"), a->album_id) &&
           mb_obj_int(mb_map_get(rec, "disc_number"), &disc) && disc == a->tags->disc &&
           mb_obj_int(mb_map_get(rec, "track_number"), &track) && track == a->tags->track &&
           mb_obj_int(mb_map_get(rec, "duration_ms"), &duration) &&
           llabs(duration - a->duration_ms) < 1000 && ids && ids->type == MSGPACK_OBJECT_ARRAY &&
           ids->via.array.size == 1 && mb_obj_str_eq(&ids->via.array.ptr[0], a->artist_id) &&
           isrc_same;
}

/*  Updates track `id` when the tags changed. */
static int s_track_refresh(s_tool_t *t, s_track_args_t *a, const char *id, char *why, size_t wl)
{
    mb_reply_t rep;
    int rc = s_call(t, "catalog", "track.get", s_pack_id, id, &rep);
    if (rc) {
        snprintf(why, wl, "the catalog did not answer track.get: %s", mb_strerror(rc));
        return rc;
    }
    bool same = rep.status == 200 && rep.body && s_track_same(rep.body, a);
    mb_reply_release(&rep);
    if (same)
        return 0;
    a->id = id;
    if ((rc = s_call(t, "catalog", "track.update", s_pack_track_update, a, &rep)) != 0) {
        snprintf(why, wl, "the catalog did not answer track.update: %s", mb_strerror(rc));
        return rc;
    }
    if (rep.status != 200) {
        snprintf(why, wl, "track update refused: %d %.*s", rep.status, (int)rep.message_len,
                 rep.message ? rep.message : "");
        rc = MB_EINVAL;
    } else
        t->tracks_updated++;
    mb_reply_release(&rep);
    return rc;
}

/*  The track for this file: recorded, else matched in the same album,
    else created. */
static int s_track(s_tool_t *t, const char *path, s_track_args_t *a, char id[S_ID_MAX + 1],
                   char *why, size_t wl)
{
    char rec[256], master[MB_BLOB_HEX_LEN + 1];
    unsigned long long size, mtime;
    int err = 0;
    if (s_state_get(t, t->files, path, rec, sizeof rec) == 0 &&
        sscanf(rec, "%llu %llu %64s %64s", &size, &mtime, master, id) == 4 &&
        s_exists(t, "track.get", id, &err))
        return s_track_refresh(t, a, id, why, wl);
    if (err) {
        snprintf(why, wl, "the catalog did not answer: %s", mb_strerror(err));
        return err;
    }
    mb_reply_t rep;
    int rc = s_call(t, "catalog", "track.match", s_pack_match, a, &rep);
    if (rc) {
        snprintf(why, wl, "the catalog did not answer track.match: %s", mb_strerror(rc));
        return rc;
    }
    const msgpack_object *matches = rep.body ? mb_map_get(rep.body, "matches") : NULL;
    bool found = false;
    if (rep.status == 200 && matches && matches->type == MSGPACK_OBJECT_ARRAY &&
        matches->via.array.size == 1) {
        const msgpack_object *m = &matches->via.array.ptr[0];
        const char *s;
        size_t len;
        /* Only the same album's track is this file's: a song on a
           compilation is another track. */
        if (m->type == MSGPACK_OBJECT_MAP &&
            mb_obj_str_eq(mb_map_get(m, "album_id"), a->album_id) &&
            mb_obj_str(mb_map_get(m, "id"), &s, &len) && len <= S_ID_MAX) {
            memcpy(id, s, len);
            id[len] = '\0';
            /* Another file of ours already is that track (two songs with
               one title on one album): this one is a track of its own. */
            char owner[4096];
            found =
                s_state_get(t, t->tracks, id, owner, sizeof owner) != 0 || strcmp(owner, path) == 0;
        }
    }
    mb_reply_release(&rep);
    if (found)
        return s_track_refresh(t, a, id, why, wl);
    if ((rc = s_call(t, "catalog", "track.create", s_pack_track_create, a, &rep)) != 0) {
        snprintf(why, wl, "the catalog did not answer track.create: %s", mb_strerror(rc));
        return rc;
    }
    if (rep.status != 201 || !s_reply_str(&rep, "id", id, S_ID_MAX + 1)) {
        snprintf(why, wl, "track '%s' refused: %d %.*s", a->tags->title, rep.status,
                 (int)rep.message_len, rep.message ? rep.message : "");
        mb_reply_release(&rep);
        return MB_EINVAL;
    }
    mb_reply_release(&rep);
    t->tracks_created++;
    return 0;
}

/* ---- masters and covers ------------------------------------------------------------ */

typedef struct {
    const char *id, *hash;
    uint64_t size;
} s_blob_args_t;

static void s_pack_blob(msgpack_packer *pk, const void *arg)
{
    const s_blob_args_t *a = arg;
    msgpack_pack_map(pk, 2);
    mb_pack_cstr(pk, "id");
    mb_pack_cstr(pk, a->id);
    mb_pack_cstr(pk, "blob");
    msgpack_pack_map(pk, 2);
    mb_pack_cstr(pk, "hash");
    mb_pack_cstr(pk, a->hash);
    mb_pack_cstr(pk, "size");
    msgpack_pack_uint64(pk, a->size);
}

static int s_cover(s_tool_t *t, const char *album_id, const AVPacket *pic)
{
    char hex[MB_BLOB_HEX_LEN + 1];
    int rc = mb_blob_put_data(t->blobs, pic->data, (size_t)pic->size, hex, NULL);
    if (rc)
        return rc;
    s_blob_args_t a = {.id = album_id, .hash = hex, .size = (uint64_t)pic->size};
    mb_reply_t rep;
    if ((rc = s_call(t, "transcode", "cover.put", s_pack_blob, &a, &rep)) != 0)
        return rc;
    if (rep.status == 201)
        t->covers++;
    else if (rep.status != 200)
        fprintf(stderr, "%scover of album %s refused: %d %.*s\n", t->tty ? "\r\033[K" : "",
                album_id, rep.status, (int)rep.message_len, rep.message ? rep.message : "");
    mb_reply_release(&rep);
    return 0;
}

/*  Handles one file. Returns 0 (done, or broken and reported) or an
    error that is not the file's fault. */
/*  1 + the number of files before paths[i] in its folder. */
static int s_place_in_folder(const s_tool_t *t, size_t i)
{
    const char *slash = strrchr(t->paths[i], '/');
    size_t dir_len = slash ? (size_t)(slash - t->paths[i]) : 0;
    int place = 1;
    for (size_t j = 0; j < i; j++)
        if (strncmp(t->paths[j], t->paths[i], dir_len) == 0 && t->paths[j][dir_len] == '/' &&
            !strchr(t->paths[j] + dir_len + 1, '/'))
            place++;
    return place > 999 ? 999 : place;
}

static int s_file(s_tool_t *t, size_t index)
{
    const char *path = t->paths[index];
    struct stat st;
    if (stat(path, &st) != 0) {
        s_report_broken(t, path, "%s", strerror(errno));
        return 0;
    }
    if (s_unchanged(t, path, &st)) {
        t->unchanged++;
        return 0;
    }
    transcode_probe_t probe;
    char why[600];
    int rc = transcode_probe(path, &probe, why, sizeof why);
    if (rc == MB_EPROTO) {
        s_report_broken(t, path, "%s", why);
        return 0;
    }
    if (rc) {
        s_report_broken(t, path, "%s", why);
        return 0;
    }
    s_tags_t tags;
    if (s_read_tags(path, &tags) != 0) {
        s_report_broken(t, path, "its tags cannot be read");
        return 0;
    }
    if (!tags.title[0])
        s_basename_no_ext(path, tags.title, sizeof tags.title);
    if (!tags.artist[0])
        snprintf(tags.artist, sizeof tags.artist, "%s",
                 tags.album_artist[0] ? tags.album_artist : "Unknown Artist");
    if (!tags.album[0])
        s_parent_name(path, tags.album, sizeof tags.album);
    if (!tags.album[0])
        snprintf(tags.album, sizeof tags.album, "%s", tags.title);
    if (!tags.disc)
        tags.disc = 1;
    char artist_id[S_ID_MAX + 1], album_artist_id[S_ID_MAX + 1], album_id[S_ID_MAX + 1],
        track_id[S_ID_MAX + 1];
    const char *album_artist = tags.album_artist[0] ? tags.album_artist : tags.artist;
    rc = s_artist(t, tags.artist, artist_id, why, sizeof why);
    if (rc == 0)
        rc = strcmp(album_artist, tags.artist) == 0
                 ? (snprintf(album_artist_id, sizeof album_artist_id, "%s", artist_id), 0)
                 : s_artist(t, album_artist, album_artist_id, why, sizeof why);
    if (rc == 0)
        rc = s_album(t, &tags, album_artist_id, album_id, why, sizeof why);
    if (rc == 0 && !tags.track)
        tags.track = s_place_in_folder(t, index); /* no track number: its place in the folder */
    s_track_args_t ta = {.tags = &tags,
                         .artist_id = artist_id,
                         .album_id = album_id,
                         .duration_ms = probe.duration_ms};
    if (rc == 0)
        rc = s_track(t, path, &ta, track_id, why, sizeof why);
    char hex[MB_BLOB_HEX_LEN + 1] = "";
    uint64_t size = 0;
    bool created = false;
    if (rc == 0 && (rc = mb_blob_put_file(t->blobs, path, t->max_size, hex, &size, &created)) != 0)
        snprintf(why, sizeof why, "cannot store the master: %s",
                 rc == MB_ETOOBIG ? "larger than --max-size" : mb_strerror(rc));
    mb_reply_t rep;
    if (rc == 0) {
        s_blob_args_t a = {.id = track_id, .hash = hex, .size = size};
        if ((rc = s_call(t, "transcode", "audio.ingest", s_pack_blob, &a, &rep)) != 0)
            snprintf(why, sizeof why, "transcode did not answer audio.ingest: %s", mb_strerror(rc));
    }
    if (rc == 0) {
        char version[S_ID_MAX + 1] = "";
        s_reply_str(&rep, "version", version, sizeof version);
        if (rep.status == 202) {
            t->versions++;
            t->new_versions = mb_realloc(t->new_versions, (t->n_new + 1) * sizeof *t->new_versions);
            snprintf(t->new_versions[t->n_new++], S_ID_MAX + 1, "%s", version);
        } else if (rep.status == 200)
            t->duplicates++;
        else {
            snprintf(why, sizeof why, "audio.ingest refused it: %d %.*s", rep.status,
                     (int)rep.message_len, rep.message ? rep.message : "");
            if (created)
                mb_blob_remove(t->blobs, hex);
            rc = rep.status == 422 ? MB_EPROTO : MB_EIO;
        }
        mb_reply_release(&rep);
    }
    if (rc == 0 && tags.cover)
        s_cover(t, album_id, tags.cover);
    av_packet_free(&tags.cover);
    if (rc == 0) {
        s_remember_file(t, path, &st, hex, track_id);
        return 0;
    }
    s_report_broken(t, path, "%s", why);
    /* Refusals (4xx) are the file's; anything else may be the service's. */
    if (rc == MB_EINVAL || rc == MB_EPROTO)
        return 0;
    t->failed++;
    return rc;
}

/* ---- the walk -------------------------------------------------------------------- */

static bool s_is_audio(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot)
        return false;
    for (const char *const *e = s_extensions; *e; e++)
        if (strcasecmp(dot + 1, *e) == 0)
            return true;
    return false;
}

static void s_walk(s_tool_t *t, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        s_report_broken(t, dir, "cannot open the folder: %s", strerror(errno));
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char *path;
        if (asprintf(&path, "%s/%s", dir, e->d_name) < 0)
            abort();
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            s_walk(t, path);
            free(path);
        } else if (S_ISREG(st.st_mode) && s_is_audio(e->d_name)) {
            if (t->n_paths == t->cap_paths) {
                t->cap_paths = t->cap_paths ? t->cap_paths * 2 : 256;
                t->paths = mb_realloc(t->paths, t->cap_paths * sizeof *t->paths);
            }
            t->paths[t->n_paths++] = path;
        } else
            free(path);
    }
    closedir(d);
}

static int s_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void s_progress(s_tool_t *t, bool last)
{
    double now = s_now();
    if (!last && now - t->last_progress < (t->tty ? 0.2 : 5.0))
        return;
    t->last_progress = now;
    double rate = now > t->t0 ? (double)t->done / (now - t->t0) : 0;
    fprintf(stderr, "%s[%zu/%zu] %.1f files/s, %zu new versions, %zu broken%s",
            t->tty ? "\r\033[K" : "", t->done, t->n_paths, rate, t->versions, t->n_broken,
            t->tty && !last ? "" : "\n");
}

static void s_pack_version(msgpack_packer *pk, const void *arg)
{
    msgpack_pack_map(pk, 1);
    mb_pack_cstr(pk, "version");
    mb_pack_cstr(pk, arg);
}

/*  --wait: polls audio.status of the new versions until each is ready or
    failed, or `seconds` pass. */
static void s_wait(s_tool_t *t, int seconds)
{
    size_t ready = 0, failed = 0, pending = t->n_new;
    double until = s_now() + seconds;
    bool *finished = mb_calloc(t->n_new + 1, sizeof *finished);
    while (pending > 0 && s_now() < until && !mb_signal_stop_requested()) {
        for (size_t i = 0; i < t->n_new; i++) {
            if (finished[i])
                continue;
            mb_reply_t rep;
            if (s_call(t, "transcode", "audio.status", s_pack_version, t->new_versions[i], &rep))
                continue;
            char status[16] = "";
            s_reply_str(&rep, "status", status, sizeof status);
            if (!strcmp(status, "ready") || !strcmp(status, "failed")) {
                finished[i] = true;
                pending--;
                if (!strcmp(status, "ready"))
                    ready++;
                else {
                    char reason[256] = "";
                    s_reply_str(&rep, "reason", reason, sizeof reason);
                    fprintf(stderr, "version %s failed: %s\n", t->new_versions[i], reason);
                    failed++;
                }
            }
            mb_reply_release(&rep);
        }
        if (pending > 0) {
            fprintf(stderr, "%stranscoding: %zu ready, %zu failed, %zu waiting%s",
                    t->tty ? "\r\033[K" : "", ready, failed, pending, t->tty ? "" : "\n");
            usleep(500000);
        }
    }
    printf("transcoded: %zu ready, %zu failed, %zu still waiting\n", ready, failed, pending);
    free(finished);
}

static void s_usage(void)
{
    fprintf(stderr, "usage: musicbus-ingest [--bus ENDPOINT] [--data DIR] [--timeout MS]\n"
                    "                       [--max-size BYTES] [--wait SECONDS] FOLDER\n");
}

static int s_open_state(s_tool_t *t, const char *data)
{
    char *dir;
    if (asprintf(&dir, "%s/ingest", data) < 0)
        abort();
    mkdir(data, 0755);
    mkdir(dir, 0755);
    MDB_txn *txn = NULL;
    int rc = mdb_env_create(&t->env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(t->env, 5);
    if (rc == 0)
        rc = mdb_env_set_mapsize(t->env, (size_t)256 << 20);
    if (rc == 0)
        rc = mdb_env_open(t->env, dir, 0, 0644);
    if (rc == 0)
        rc = mdb_txn_begin(t->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "files", MDB_CREATE, &t->files);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "artists", MDB_CREATE, &t->artists);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "albums", MDB_CREATE, &t->albums);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "tracks", MDB_CREATE, &t->tracks);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc)
        fprintf(stderr, "musicbus-ingest: cannot open the state in %s: %s\n", dir,
                mdb_strerror(rc));
    free(dir);
    return rc;
}

int main(int argc, char **argv)
{
    mb_log_init("ingest");
    mb_signal_install();
    av_log_set_level(AV_LOG_QUIET);
    const char *bus = NULL, *data = NULL;
    long timeout = S_DEFAULT_TIMEOUT_MS, wait_s = -1;
    unsigned long long max_size = S_DEFAULT_MAX_SIZE;
    static const struct option options[] = {{"bus", required_argument, NULL, 'b'},
                                            {"data", required_argument, NULL, 'd'},
                                            {"timeout", required_argument, NULL, 't'},
                                            {"max-size", required_argument, NULL, 'm'},
                                            {"wait", required_argument, NULL, 'w'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        long v;
        switch (opt) {
        case 'b':
            bus = optarg;
            break;
        case 'd':
            data = optarg;
            break;
        case 't':
            if (mb_config_parse_long(optarg, 100, 3600000, &timeout) != 0) {
                s_usage();
                return 2;
            }
            break;
        case 'm':
            if (mb_config_parse_long(optarg, 1, LONG_MAX, &v) != 0) {
                s_usage();
                return 2;
            }
            max_size = (unsigned long long)v;
            break;
        case 'w':
            if (mb_config_parse_long(optarg, 0, 86400, &wait_s) != 0) {
                s_usage();
                return 2;
            }
            break;
        case 'h':
            s_usage();
            return 0;
        default:
            s_usage();
            return 2;
        }
    }
    if (optind != argc - 1) {
        s_usage();
        return 2;
    }
    bus = bus ? bus : mb_config_env(MB_ENV_BUS, MB_DEFAULT_BUS);
    data = data ? data : mb_config_env(MB_ENV_DATA, MB_DEFAULT_DATA);
    char root[4096];
    snprintf(root, sizeof root, "%s", argv[optind]);
    size_t rl = strlen(root);
    while (rl > 1 && root[rl - 1] == '/')
        root[--rl] = '\0';

    s_tool_t t = {.timeout_ms = (int)timeout, .max_size = max_size, .tty = isatty(2)};
    char *blobs_dir;
    if (asprintf(&blobs_dir, "%s/blobs", data) < 0)
        abort();
    int rc = mb_blob_store_open(blobs_dir, &t.blobs);
    free(blobs_dir);
    if (rc || s_open_state(&t, data) != 0)
        return 1;
    if (!(t.client = mb_client_new(bus)))
        return 1;
    s_walk(&t, root);
    qsort(t.paths, t.n_paths, sizeof *t.paths, s_cmp_str);
    t.t0 = s_now();
    int exit_code = 0;
    for (size_t i = 0; i < t.n_paths && !mb_signal_stop_requested(); i++) {
        if (s_file(&t, i) != 0)
            exit_code = 1;
        t.done++;
        s_progress(&t, false);
    }
    s_progress(&t, true);
    double elapsed = s_now() - t.t0;
    printf("files: %zu found, %zu done in %.1f s (%.1f files/s)\n", t.n_paths, t.done, elapsed,
           elapsed > 0 ? (double)t.done / elapsed : 0.0);
    printf("masters: %zu new versions, %zu already there, %zu files unchanged since the last run\n",
           t.versions, t.duplicates, t.unchanged);
    printf("catalog: %zu artists, %zu albums, %zu tracks created; %zu tracks updated; %zu covers\n",
           t.artists_created, t.albums_created, t.tracks_created, t.tracks_updated, t.covers);
    printf("broken: %zu\n", t.n_broken);
    for (size_t i = 0; i < t.n_broken; i++)
        printf("  %s: %s\n", t.broken[i].path, t.broken[i].why);
    if (wait_s >= 0 && t.n_new > 0)
        s_wait(&t, (int)wait_s);
    if (mb_signal_stop_requested())
        exit_code = 1;
    for (size_t i = 0; i < t.n_paths; i++)
        free(t.paths[i]);
    for (size_t i = 0; i < t.n_broken; i++) {
        free(t.broken[i].path);
        free(t.broken[i].why);
    }
    free(t.paths);
    free(t.broken);
    free(t.new_versions);
    mb_client_destroy(&t.client);
    mdb_env_close(t.env);
    mb_blob_store_destroy(&t.blobs);
    mb_zmq_shutdown();
    return exit_code;
}
