/*  musicbus-transcode — audio masters into HLS ladders.

    The main thread answers the bus ops (ingest, status, versions). Job
    threads (MUSICBUS_TRANSCODE_JOBS, default 1 per process) claim queued
    versions and run the ladder, each ladder on threads of its own, one
    per rung. The consumer group "transcode" queues versions uploaded
    through another environment and removes the files of versions the
    catalog removed. Everything the actor publishes goes through the
    outbox in the transaction of its change. */
#include "transcode.h"

#include <libavutil/log.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mb_alloc.h"
#include "mb_config.h"
#include "mb_error.h"
#include "mb_id.h"
#include "mb_log.h"
#include "mb_msgpack.h"
#include "transcode_cover.h"
#include "transcode_events.h"
#include "transcode_probe.h"

#define TRANSCODE_SERVICE "transcode"
#define TRANSCODE_MAX_DBS 8 /* TRANSCODE_STORE_DBS, with room to grow */
#define TRANSCODE_GROUP "transcode"
#define TRANSCODE_VERSIONS_MAX 1000 /* answered by audio.versions */

static const char *const s_topics[] = {TRANSCODE_TOPIC_UPLOADED, TRANSCODE_TOPIC_REMOVED, NULL};

static transcode_state_t *s_state(mb_call_t *call)
{
    return mb_call_state(call);
}

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- arguments -------------------------------------------------------------- */

/*  A track id: 1..64 bytes of A-Z a-z 0-9 _ - . (it keys LMDB and events). */
static bool s_track_id_valid(const char *s, size_t len)
{
    if (len == 0 || len > TRANSCODE_TRACK_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

static bool s_track_arg(mb_call_t *call, char out[TRANSCODE_TRACK_ID_MAX + 1])
{
    const char *s;
    size_t len;
    if (!mb_obj_str(mb_call_arg(call, "id"), &s, &len) || !s_track_id_valid(s, len)) {
        mb_call_error(call, 400, "invalid", "id",
                      "id must be 1 to 64 characters of A-Z a-z 0-9 _ - .");
        return false;
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return true;
}

static bool s_version_arg(mb_call_t *call, char out[MB_ID_LEN + 1])
{
    const char *s;
    size_t len;
    if (!mb_obj_str(mb_call_arg(call, "version"), &s, &len) || !mb_id_valid(s, len)) {
        mb_call_error(call, 400, "invalid", "version", "version must be a 22-character id");
        return false;
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return true;
}

/*  args.blob = {hash: 64 hex, size: uint?}; checks the blob is stored. */
static bool s_blob_arg(mb_call_t *call, char hex[MB_BLOB_HEX_LEN + 1], uint64_t *size)
{
    const msgpack_object *blob = mb_call_arg(call, "blob");
    const char *s;
    size_t len;
    if (!blob || blob->type != MSGPACK_OBJECT_MAP ||
        !mb_obj_str(mb_map_get(blob, "hash"), &s, &len) || !mb_blob_hex_valid(s, len)) {
        mb_call_error(call, 400, "invalid", "blob.hash",
                      "blob must be {hash: the blob's 64 lower-case hex digits, size}");
        return false;
    }
    memcpy(hex, s, len);
    hex[len] = '\0';
    int rc = mb_blob_exists(s_state(call)->blobs, hex, size);
    if (rc == MB_ENOTFOUND) {
        mb_call_error(call, 400, "invalid", "blob.hash", "no blob %s in the blob store", hex);
        return false;
    }
    if (rc) {
        mb_call_error(call, 500, "io_error", NULL, "the blob store cannot be read");
        return false;
    }
    int64_t given;
    const msgpack_object *o = mb_map_get(blob, "size");
    if (o && o->type != MSGPACK_OBJECT_NIL && (!mb_obj_int(o, &given) || given != (int64_t)*size)) {
        mb_call_error(call, 400, "invalid", "blob.size", "the blob holds %llu bytes",
                      (unsigned long long)*size);
        return false;
    }
    return true;
}

/* ---- ops ----------------------------------------------------------------------- */

static void s_pack_ingested(msgpack_packer *pk, const transcode_version_t *v, bool duplicate)
{
    const char *status = v->status == TRANSCODE_READY    ? "ready"
                         : v->status == TRANSCODE_FAILED ? "failed"
                                                         : "processing";
    msgpack_pack_map(pk, 9);
    mb_pack_cstr(pk, "track_id");
    mb_pack_cstr(pk, v->track_id);
    mb_pack_cstr(pk, "version");
    mb_pack_cstr(pk, v->version);
    mb_pack_cstr(pk, "status");
    mb_pack_cstr(pk, status);
    mb_pack_cstr(pk, "duplicate");
    if (duplicate)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    mb_pack_cstr(pk, "master");
    mb_pack_cstr(pk, v->master);
    mb_pack_cstr(pk, "format");
    mb_pack_cstr(pk, v->probe.format);
    mb_pack_cstr(pk, "codec");
    mb_pack_cstr(pk, v->probe.codec);
    mb_pack_cstr(pk, "duration_ms");
    msgpack_pack_int64(pk, v->probe.duration_ms);
    mb_pack_cstr(pk, "lossless");
    if (v->probe.lossless)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

/*  A master already in the blob store becomes a new version of the track:
    probed (422 when it is not audio), then the version, its job and
    audio.uploaded written in one transaction. The same master uploaded
    again for the same track (and not failed) answers the version it made
    before, 200, without a new one. */
static void s_handle_ingest(mb_call_t *call)
{
    transcode_state_t *self = s_state(call);
    transcode_version_t *v = mb_calloc(1, sizeof *v);
    uint64_t size = 0;
    if (!s_track_arg(call, v->track_id) || !s_blob_arg(call, v->master, &size))
        goto done;
    char *path = mb_blob_path(self->blobs, v->master);
    char why[512];
    int rc = transcode_probe(path, &v->probe, why, sizeof why);
    free(path);
    if (rc == MB_EPROTO) {
        mb_info(mb_call_rid(call), "transcode: refused master %s for track %s: %s", v->master,
                v->track_id, why);
        mb_call_error(call, 422, "not_audio", NULL, "%s", why);
        goto done;
    }
    if (rc) {
        mb_call_error(call, rc == MB_ENOTFOUND ? 400 : 500,
                      rc == MB_ENOTFOUND ? "invalid" : "io_error", NULL, "%s", why);
        goto done;
    }
    MDB_txn *txn;
    if ((rc = mdb_txn_begin(mb_call_env(call), NULL, 0, &txn)) != 0) {
        mb_call_db_error(call, rc);
        goto done;
    }
    transcode_version_t *old = mb_malloc(sizeof *old);
    rc = transcode_store_find_upload(self->store, txn, v->track_id, v->master, old);
    if (rc == 0) {
        mdb_txn_abort(txn);
        s_pack_ingested(mb_call_reply(call, 200), old, true);
        free(old);
        goto done;
    }
    free(old);
    if (rc != MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        mb_call_db_error(call, rc);
        goto done;
    }
    mb_id_new(v->version);
    v->size = size;
    v->status = TRANSCODE_QUEUED;
    v->created_ms = v->updated_ms = s_now_ms();
    transcode_job_t job = {.enqueued_ms = v->created_ms};
    msgpack_sbuffer event;
    msgpack_sbuffer_init(&event);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &event, msgpack_sbuffer_write);
    transcode_event_uploaded(&pk, v);
    rc = transcode_store_put_version(self->store, txn, v, true);
    if (rc == 0)
        rc = transcode_store_put_job(self->store, txn, v->version, &job);
    if (rc) {
        mdb_txn_abort(txn);
        mb_call_db_error(call, rc);
    } else if (mb_call_outbox_add(call, txn, TRANSCODE_TOPIC_UPLOADED, v->version, event.data,
                                  event.size) != 0)
        mdb_txn_abort(txn); /* answered */
    else if ((rc = mdb_txn_commit(txn)) != 0)
        mb_call_db_error(call, rc);
    else {
        mb_info(mb_call_rid(call), "transcode: version %s of track %s queued (%s %s, %.1f s)",
                v->version, v->track_id, v->probe.format, v->probe.codec,
                (double)v->probe.duration_ms / 1000.0);
        s_pack_ingested(mb_call_reply(call, 202), v, false);
        if (self->jobs)
            transcode_jobs_kick(self->jobs);
    }
    msgpack_sbuffer_destroy(&event);
done:
    free(v);
}

static void s_handle_status(mb_call_t *call)
{
    char version[MB_ID_LEN + 1];
    if (!s_version_arg(call, version))
        return;
    MDB_txn *txn = mb_call_begin(call, false);
    if (!txn)
        return;
    int rc;
    transcode_version_t *v = mb_malloc(sizeof *v);
    rc = transcode_store_get_version(s_state(call)->store, txn, version, v);
    if (rc == MDB_NOTFOUND)
        mb_call_error(call, 404, "not_found", NULL, "no audio version %s", version);
    else if (rc)
        mb_call_db_error(call, rc);
    else
        transcode_version_pack(mb_call_reply(call, 200), v);
    mdb_txn_abort(txn);
    free(v);
}

typedef struct {
    transcode_version_t *items;
    size_t n, cap;
} s_list_t;

static int s_collect(const transcode_version_t *v, void *arg)
{
    s_list_t *list = arg;
    if (list->n == TRANSCODE_VERSIONS_MAX)
        return 0;
    if (list->n == list->cap) {
        list->cap = list->cap ? list->cap * 2 : 8;
        list->items = mb_realloc(list->items, list->cap * sizeof *list->items);
    }
    list->items[list->n++] = *v;
    return 0;
}

/*  Every version the actor holds for a track, newest first, with its
    processing state (queued, running, ready, failed) and attempts. */
static void s_handle_versions(mb_call_t *call)
{
    char track[TRANSCODE_TRACK_ID_MAX + 1];
    if (!s_track_arg(call, track))
        return;
    MDB_txn *txn = mb_call_begin(call, false);
    if (!txn)
        return;
    int rc;
    s_list_t list = {0};
    rc = transcode_store_track_versions(s_state(call)->store, txn, track, s_collect, &list);
    mdb_txn_abort(txn);
    if (rc)
        mb_call_db_error(call, rc);
    else {
        msgpack_packer *pk = mb_call_reply(call, 200);
        msgpack_pack_map(pk, 2);
        mb_pack_cstr(pk, "track_id");
        mb_pack_cstr(pk, track);
        mb_pack_cstr(pk, "versions");
        msgpack_pack_array(pk, (uint32_t)list.n);
        for (size_t i = list.n; i-- > 0;)
            transcode_version_pack(pk, &list.items[i]);
    }
    free(list.items);
}

/* ---- covers -------------------------------------------------------------------- */

#define TRANSCODE_TOPIC_COVER "cover.updated"

static void s_pack_cover_answer(msgpack_packer *pk, const char *album_id, const void *cover,
                                size_t len)
{
    msgpack_pack_map(pk, 2);
    mb_pack_cstr(pk, "album_id");
    mb_pack_cstr(pk, album_id);
    mb_pack_cstr(pk, "cover");
    mb_pack_raw(pk, cover, len);
}

/*  An album's cover from an image blob (uploaded, or embedded in a
    master): three JPEG sizes stored as blobs, recorded under the album,
    cover.updated published. The same source again: 200, nothing made. */
static void s_handle_cover_put(mb_call_t *call)
{
    transcode_state_t *self = s_state(call);
    char album[TRANSCODE_TRACK_ID_MAX + 1], hex[MB_BLOB_HEX_LEN + 1];
    uint64_t size;
    if (!s_track_arg(call, album) || !s_blob_arg(call, hex, &size))
        return;
    MDB_txn *txn = mb_call_begin(call, false);
    if (!txn)
        return;
    int rc;
    MDB_val old;
    transcode_cover_t cover;
    rc = transcode_store_get_cover(self->store, txn, album, &old);
    if (rc == 0) {
        msgpack_unpacked msg;
        msgpack_unpacked_init(&msg);
        if (msgpack_unpack_next(&msg, old.mv_data, old.mv_size, NULL) == MSGPACK_UNPACK_SUCCESS &&
            transcode_cover_read(&msg.data, &cover) && strcmp(cover.source, hex) == 0) {
            s_pack_cover_answer(mb_call_reply(call, 200), album, old.mv_data, old.mv_size);
            msgpack_unpacked_destroy(&msg);
            mdb_txn_abort(txn);
            return;
        }
        msgpack_unpacked_destroy(&msg);
    }
    mdb_txn_abort(txn);
    /* Made outside any write transaction: decoding and scaling take a
       moment. */
    char why[256];
    rc = transcode_cover_make(self->blobs, hex, &cover, why, sizeof why);
    if (rc) {
        mb_call_error(call, rc == MB_EPROTO ? 422 : 500, rc == MB_EPROTO ? "not_image" : "io_error",
                      NULL, "%s", why);
        return;
    }
    msgpack_sbuffer packed, event;
    msgpack_sbuffer_init(&packed);
    msgpack_sbuffer_init(&event);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &packed, msgpack_sbuffer_write);
    transcode_cover_pack(&pk, &cover);
    msgpack_packer_init(&pk, &event, msgpack_sbuffer_write);
    s_pack_cover_answer(&pk, album, packed.data, packed.size);
    if ((rc = mdb_txn_begin(mb_call_env(call), NULL, 0, &txn)) != 0)
        mb_call_db_error(call, rc);
    else if ((rc = transcode_store_put_cover(self->store, txn, album, packed.data, packed.size))) {
        mdb_txn_abort(txn);
        mb_call_db_error(call, rc);
    } else if (mb_call_outbox_add(call, txn, TRANSCODE_TOPIC_COVER, album, event.data,
                                  event.size) != 0)
        mdb_txn_abort(txn);
    else if ((rc = mdb_txn_commit(txn)) != 0)
        mb_call_db_error(call, rc);
    else
        mb_pack_raw(mb_call_reply(call, 201), event.data, event.size);
    msgpack_sbuffer_destroy(&packed);
    msgpack_sbuffer_destroy(&event);
}

static void s_handle_cover_get(mb_call_t *call)
{
    char album[TRANSCODE_TRACK_ID_MAX + 1];
    if (!s_track_arg(call, album))
        return;
    MDB_txn *txn = mb_call_begin(call, false);
    if (!txn)
        return;
    int rc;
    MDB_val val;
    rc = transcode_store_get_cover(s_state(call)->store, txn, album, &val);
    if (rc == MDB_NOTFOUND)
        mb_call_error(call, 404, "not_found", NULL, "album %s has no cover", album);
    else if (rc)
        mb_call_db_error(call, rc);
    else
        s_pack_cover_answer(mb_call_reply(call, 200), album, val.mv_data, val.mv_size);
    mdb_txn_abort(txn);
}

/* ---- the consumer ------------------------------------------------------------------ */

/*  An upload ingested through another environment (or a tool that
    publishes audio.uploaded itself): queue it here unless known. */
static int s_apply_uploaded(MDB_txn *txn, const mb_event_t *event, transcode_state_t *self)
{
    transcode_version_t *v = mb_malloc(sizeof *v);
    const char *why;
    int rc = transcode_event_read_uploaded(event->data, v, &why);
    if (rc) {
        free(v);
        return mb_event_invalid(event, "%s", why);
    }
    transcode_version_t *known = mb_malloc(sizeof *known);
    rc = transcode_store_get_version(self->store, txn, v->version, known);
    free(known);
    if (rc == 0 || rc != MDB_NOTFOUND) {
        free(v);
        return rc == 0 ? 0 : rc; /* applied already (the local ingest), or an LMDB error */
    }
    if (mb_blob_exists(self->blobs, v->master, NULL) != 0) {
        char master[MB_BLOB_HEX_LEN + 1];
        snprintf(master, sizeof master, "%s", v->master);
        free(v);
        return mb_event_invalid(event, "its master %s is not in this blob store", master);
    }
    v->created_ms = v->updated_ms = event->time ? (int64_t)event->time : s_now_ms();
    transcode_job_t job = {.enqueued_ms = v->created_ms};
    rc = transcode_store_put_version(self->store, txn, v, true);
    if (rc == 0)
        rc = transcode_store_put_job(self->store, txn, v->version, &job);
    free(v);
    if (rc == 0 && self->jobs)
        transcode_jobs_kick(self->jobs); /* a worker may look before the commit: it polls too */
    return rc;
}

/*  The catalog removed a version: its record, job and files go, and its
    master when no other version uses it. Removing files before the
    transaction commits is safe: it is idempotent, and a retried batch
    finds the record gone or removes it then. */
static int s_apply_removed(MDB_txn *txn, const mb_event_t *event, transcode_state_t *self)
{
    const char *s;
    size_t len;
    if (!event->data || !mb_obj_str(mb_map_get(event->data, "version"), &s, &len))
        return mb_event_invalid(event, "data.version must be a string");
    if (!mb_id_valid(s, len))
        return 0; /* not a version this actor made */
    char version[MB_ID_LEN + 1];
    memcpy(version, s, len);
    version[len] = '\0';
    transcode_version_t *v = mb_malloc(sizeof *v);
    int rc = transcode_store_get_version(self->store, txn, version, v);
    if (rc == MDB_NOTFOUND) {
        free(v);
        return 0;
    }
    size_t refs = 1;
    if (rc == 0)
        rc = transcode_store_del_version(self->store, txn, v);
    if (rc == 0)
        rc = transcode_store_master_refs(self->store, txn, v->master, &refs);
    if (rc == 0) {
        if (self->jobs)
            transcode_jobs_remove_files(self->jobs, version);
        if (refs == 0)
            mb_blob_remove(self->blobs, v->master);
        mb_info(0, "transcode: version %s of track %s removed%s", version, v->track_id,
                refs == 0 ? " with its master" : "");
    }
    free(v);
    return rc;
}

static int s_apply(MDB_txn *txn, const mb_event_t *event, void *state)
{
    transcode_state_t *self = state;
    size_t n = strlen(TRANSCODE_TOPIC_UPLOADED);
    if (event->topic_len == n && memcmp(event->topic, TRANSCODE_TOPIC_UPLOADED, n) == 0)
        return s_apply_uploaded(txn, event, self);
    n = strlen(TRANSCODE_TOPIC_REMOVED);
    if (event->topic_len == n && memcmp(event->topic, TRANSCODE_TOPIC_REMOVED, n) == 0)
        return s_apply_removed(txn, event, self);
    return mb_event_invalid(event, "not a topic this consumer takes");
}

/* ---- the actor ---------------------------------------------------------------------- */

/*  FFmpeg's own messages become log lines (errors only: its info lines,
    such as the AAC encoder's statistics, are noise here). */
static void s_av_log(void *avcl, int level, const char *fmt, va_list args)
{
    (void)avcl;
    if (level > AV_LOG_ERROR)
        return;
    char line[512];
    vsnprintf(line, sizeof line, fmt, args);
    size_t len = strlen(line);
    while (len > 0 && line[len - 1] == '\n')
        line[--len] = '\0';
    mb_warn(0, "ffmpeg: %s", line);
}

static void s_close(void *state)
{
    transcode_state_t *self = state;
    if (!self)
        return;
    transcode_jobs_destroy(&self->jobs);
    mb_blob_store_destroy(&self->blobs);
    transcode_store_destroy(&self->store);
    free(self);
}

/*  The blob store is $MUSICBUS_DATA/blobs: the environment lives in
    $MUSICBUS_DATA/transcode. */
static int s_open(MDB_env *env, void **state)
{
    av_log_set_callback(s_av_log);
    transcode_state_t *self = mb_calloc(1, sizeof *self);
    const char *env_dir = NULL;
    if (mdb_env_get_path(env, &env_dir) != 0 || !env_dir) {
        free(self);
        return MB_EDB;
    }
    char *copy = mb_strdup(env_dir), *blobs_dir;
    if (asprintf(&blobs_dir, "%s/blobs", dirname(copy)) < 0)
        abort();
    free(copy);
    int rc = transcode_store_open(env, &self->store);
    if (rc == 0)
        rc = mb_blob_store_open(blobs_dir, &self->blobs);
    free(blobs_dir);
    long threads = mb_config_env_long(TRANSCODE_ENV_JOBS, 1, 0, 64);
    if (rc == 0) {
        self->jobs = transcode_jobs_new(env, self->store, self->blobs, NULL);
        if (threads > 0)
            rc = transcode_jobs_start(self->jobs, (unsigned)threads);
    }
    if (rc) {
        s_close(self);
        return rc < 0 ? rc : MB_EDB;
    }
    *state = self;
    return 0;
}

static const mb_op_t s_ops[] = {
    {"audio.ingest", s_handle_ingest},     {"audio.status", s_handle_status},
    {"audio.versions", s_handle_versions}, {"cover.put", s_handle_cover_put},
    {"cover.get", s_handle_cover_get},     {NULL, NULL},
};

static const mb_consumer_def_t s_consumers[] = {
    {.group = TRANSCODE_GROUP, .topics = s_topics, .apply = s_apply, .batch = 100},
    {.group = NULL},
};

static const mb_actor_def_t s_def = {
    .name = TRANSCODE_SERVICE,
    .ops = s_ops,
    .max_dbs = TRANSCODE_MAX_DBS,
    .open = s_open,
    .close = s_close,
    .consumers = s_consumers,
};

const mb_actor_def_t *transcode_actor_def(void)
{
    return &s_def;
}

#ifndef TRANSCODE_NO_MAIN
int main(int argc, char **argv)
{
    return mb_actor_main(&s_def, argc, argv);
}
#endif
