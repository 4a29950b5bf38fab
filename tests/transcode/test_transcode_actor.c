/*  transcode actor: ops driven through mb_actor_dispatch() with real
    envelopes, jobs run by hand (MUSICBUS_TRANSCODE_JOBS=0 starts no job
    thread), the outbox read back, leases, a worker process killed with
    SIGKILL in the middle of a job, and the consumer's events. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <lmdb.h>
#include <msgpack.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libavutil/error.h>
#include <libavutil/log.h>

#include "mb_actor.h"
#include "mb_blob.h"
#include "mb_envelope.h"
#include "mb_error.h"
#include "mb_log.h"
#include "mb_msgpack.h"
#include "tc_media.h"
#include "transcode.h"
#include "transcode_events.h"

/* ---- harness ------------------------------------------------------------------ */

static char s_dir[64];
static char s_env_dir[128];
static mb_actor_def_t s_def;
static MDB_env *s_env;
static transcode_state_t *s_state;
static uint64_t s_rid;

static void s_open(void)
{
    cr_assert_eq(mb_actor_open_env(&s_def, s_env_dir, &s_env), 0);
    void *state = NULL;
    cr_assert_eq(s_def.open(s_env, &state), 0);
    s_state = state;
}

static void s_close(void)
{
    if (s_env) {
        s_def.close(s_state);
        mdb_env_close(s_env);
        s_env = NULL;
        s_state = NULL;
    }
}

static void s_setup(void)
{
    av_log_set_level(AV_LOG_QUIET);
    setenv("MUSICBUS_TRANSCODE_JOBS", "0", 1);
    setenv("MUSICBUS_LOG_LEVEL", "error", 1);
    mb_log_init("test_transcode_actor");
    tc_tmpdir(s_dir, "test_transcode_actor");
    snprintf(s_env_dir, sizeof s_env_dir, "%s/transcode", s_dir);
    s_def = *transcode_actor_def();
    s_open();
}

static void s_teardown(void)
{
    s_close();
    tc_rm_rf(s_dir);
}

TestSuite(transcode_actor, .init = s_setup, .fini = s_teardown);

/*  A decoded msgpack object with the bytes it borrows from. */
typedef struct {
    msgpack_unpacked msg;
    char *bytes;
} s_obj_t;

/*  Copies `o` into *out (s_obj_free() it). */
static void s_obj_copy(const msgpack_object *o, s_obj_t *out)
{
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    msgpack_packer bp;
    msgpack_packer_init(&bp, &b, msgpack_sbuffer_write);
    mb_pack_object(&bp, o);
    size_t size = b.size;
    out->bytes = msgpack_sbuffer_release(&b);
    msgpack_unpacked_init(&out->msg);
    msgpack_unpack_next(&out->msg, out->bytes, size, NULL);
}

static void s_obj_free(s_obj_t *o)
{
    msgpack_unpacked_destroy(&o->msg);
    free(o->bytes);
    o->bytes = NULL;
}

typedef struct {
    int status;
    s_obj_t obj;           /* the reply's body, when a success */
    msgpack_unpacked body; /* unused */
    bool has_body;
    char code[64];
    char message[512];
    char field[64];
} reply_t;

static void s_reply_free(reply_t *r)
{
    if (r->has_body)
        s_obj_free(&r->obj);
    r->has_body = false;
}

/*  Dispatches op with the args `pack_args` packs (a map). */
static void s_call(const char *op, void (*pack_args)(msgpack_packer *pk, void *arg), void *arg,
                   reply_t *out)
{
    memset(out, 0, sizeof *out);
    msgpack_sbuffer req, rep;
    msgpack_sbuffer_init(&req);
    msgpack_sbuffer_init(&rep);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    mb_request_pack_head(&pk, op, ++s_rid, 0, 1);
    mb_pack_cstr(&pk, "args");
    pack_args(&pk, arg);
    mb_actor_dispatch(&s_def, s_env, s_state, req.data, req.size, &rep);
    mb_reply_t r;
    const char *why;
    cr_assert_eq(mb_reply_decode(&r, rep.data, rep.size, &why), 0);
    out->status = r.status;
    if (r.code) {
        snprintf(out->code, sizeof out->code, "%.*s", (int)r.code_len, r.code);
        snprintf(out->message, sizeof out->message, "%.*s", (int)r.message_len, r.message);
        if (r.field)
            snprintf(out->field, sizeof out->field, "%.*s", (int)r.field_len, r.field);
    }
    if (r.body) {
        s_obj_copy(r.body, &out->obj);
        out->body = out->obj.msg;
        out->has_body = true;
    }
    mb_reply_release(&r);
    msgpack_sbuffer_destroy(&req);
    msgpack_sbuffer_destroy(&rep);
}

static const msgpack_object *s_get(const reply_t *r, const char *key)
{
    cr_assert(r->has_body, "no body (status %d %s: %s)", r->status, r->code, r->message);
    return mb_map_get(&r->body.data, key);
}

static void s_get_str(const msgpack_object *map, const char *key, char *out, size_t cap)
{
    const char *s;
    size_t len;
    cr_assert(mb_obj_str(mb_map_get(map, key), &s, &len), "%s is not a string", key);
    snprintf(out, cap, "%.*s", (int)len, s);
}

typedef struct {
    const char *track;
    const char *hash;
    int64_t size; /* -1: left out */
    bool no_blob;
} s_ingest_args_t;

static void s_pack_ingest(msgpack_packer *pk, void *arg)
{
    s_ingest_args_t *a = arg;
    msgpack_pack_map(pk, (a->track ? 1 : 0) + (a->no_blob ? 0 : 1));
    if (a->track) {
        mb_pack_cstr(pk, "id");
        mb_pack_cstr(pk, a->track);
    }
    if (!a->no_blob) {
        mb_pack_cstr(pk, "blob");
        msgpack_pack_map(pk, a->size >= 0 ? 2 : 1);
        mb_pack_cstr(pk, "hash");
        mb_pack_cstr(pk, a->hash);
        if (a->size >= 0) {
            mb_pack_cstr(pk, "size");
            msgpack_pack_int64(pk, a->size);
        }
    }
}

static void s_ingest(const char *track, const char *hash, reply_t *r)
{
    s_ingest_args_t a = {.track = track, .hash = hash, .size = -1};
    s_call("audio.ingest", s_pack_ingest, &a, r);
}

static void s_pack_version(msgpack_packer *pk, void *arg)
{
    msgpack_pack_map(pk, 1);
    mb_pack_cstr(pk, "version");
    mb_pack_cstr(pk, arg);
}

static void s_pack_track(msgpack_packer *pk, void *arg)
{
    msgpack_pack_map(pk, 1);
    mb_pack_cstr(pk, "id");
    mb_pack_cstr(pk, arg);
}

/*  Writes a master with libavcodec and stores it as a blob. */
static void s_master(tc_gen_t gen, char hex[MB_BLOB_HEX_LEN + 1])
{
    char path[256];
    snprintf(path, sizeof path, "%s/master.%s", s_dir, gen.format);
    int rc = tc_generate(path, &gen);
    cr_assert_eq(rc, 0, "%s", av_err2str(rc));
    cr_assert_eq(mb_blob_put_file(s_state->blobs, path, MB_BLOB_NO_LIMIT, hex, NULL, NULL), 0);
    unlink(path);
}

static void s_flac_master(double seconds, char hex[MB_BLOB_HEX_LEN + 1])
{
    s_master((tc_gen_t){.format = "flac",
                        .codec = "flac",
                        .rate = 44100,
                        .channels = 2,
                        .seconds = seconds,
                        .amplitude = 0.1,
                        .noise = true},
             hex);
}

/*  The outbox's events of `topic`: how many, and a copy of the last one's
    data (caller destroys) when `last` is given. */
static size_t s_outbox(const char *topic, s_obj_t *last)
{
    MDB_txn *txn;
    MDB_dbi dbi;
    cr_assert_eq(mdb_txn_begin(s_env, NULL, MDB_RDONLY, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "_outbox", 0, &dbi), 0);
    MDB_cursor *cur;
    cr_assert_eq(mdb_cursor_open(txn, dbi, &cur), 0);
    MDB_val k, v;
    size_t n = 0;
    if (last)
        last->bytes = NULL;
    for (MDB_cursor_op op = MDB_FIRST; mdb_cursor_get(cur, &k, &v, op) == 0; op = MDB_NEXT) {
        msgpack_unpacked msg;
        msgpack_unpacked_init(&msg);
        cr_assert_eq(msgpack_unpack_next(&msg, v.mv_data, v.mv_size, NULL), MSGPACK_UNPACK_SUCCESS);
        if (mb_obj_str_eq(mb_map_get(&msg.data, "topic"), topic)) {
            n++;
            if (last) {
                if (last->bytes)
                    s_obj_free(last);
                s_obj_copy(mb_map_get(&msg.data, "data"), last);
            }
        }
        msgpack_unpacked_destroy(&msg);
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return n;
}

static size_t s_outbox_count(const char *topic)
{
    return s_outbox(topic, NULL);
}

static void s_version(const char *version, transcode_version_t *v)
{
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(s_env, NULL, MDB_RDONLY, &txn), 0);
    cr_assert_eq(transcode_store_get_version(s_state->store, txn, version, v), 0);
    mdb_txn_abort(txn);
}

static int s_job(const char *version, transcode_job_t *job)
{
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(s_env, NULL, MDB_RDONLY, &txn), 0);
    int rc = transcode_store_get_job(s_state->store, txn, version, job);
    mdb_txn_abort(txn);
    return rc;
}

static void s_put_job(const char *version, const transcode_job_t *job)
{
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(s_env, NULL, 0, &txn), 0);
    cr_assert_eq(transcode_store_put_job(s_state->store, txn, version, job), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
}

static char *s_hls(const char *fmt, const char *version)
{
    static char paths[4][512];
    static int next;
    char *p = paths[next++ % 4];
    char rest[256];
    snprintf(rest, sizeof rest, fmt, version);
    snprintf(p, 512, "%s/blobs/hls/%.256s", s_dir, rest);
    return p;
}

/*  Folders under hls/ whose name starts with .tmp- */
static int s_tmp_dirs(void)
{
    char path[256];
    snprintf(path, sizeof path, "%s/blobs/hls", s_dir);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strncmp(e->d_name, ".tmp-", 5) == 0;
    closedir(d);
    return n;
}

static void s_run_job(bool expect)
{
    bool ran = false;
    cr_assert_eq(transcode_jobs_run_one(s_state->jobs, &ran), 0);
    cr_assert_eq(ran, expect);
}

/* ---- tests ----------------------------------------------------------------------------- */

Test(transcode_actor, usage_ingest_then_the_job_makes_the_version_ready)
{
    char hex[MB_BLOB_HEX_LEN + 1];
    s_flac_master(10, hex);
    reply_t r;
    s_ingest("trackA", hex, &r);
    cr_assert_eq(r.status, 202, "%d %s: %s", r.status, r.code, r.message);
    char version[64], status[32];
    s_get_str(&r.body.data, "version", version, sizeof version);
    s_get_str(&r.body.data, "status", status, sizeof status);
    cr_assert_str_eq(status, "processing");
    cr_assert_eq(s_get(&r, "lossless")->type, MSGPACK_OBJECT_BOOLEAN);
    s_reply_free(&r);

    /* audio.uploaded went into the outbox with the ingest. */
    s_obj_t ev;
    cr_assert_eq(s_outbox(TRANSCODE_TOPIC_UPLOADED, &ev), 1);
    cr_assert(mb_obj_str_eq(mb_map_get(&ev.msg.data, "track_id"), "trackA"));
    cr_assert(mb_obj_str_eq(mb_map_get(&ev.msg.data, "version"), version));
    cr_assert(mb_obj_str_eq(mb_map_get(&ev.msg.data, "master"), hex));
    bool lossless = false;
    int64_t duration = 0;
    cr_assert(mb_obj_bool(mb_map_get(&ev.msg.data, "lossless"), &lossless) && lossless);
    cr_assert(mb_obj_int(mb_map_get(&ev.msg.data, "duration_ms"), &duration) && duration == 10000);
    s_obj_free(&ev);

    transcode_version_t *v = malloc(sizeof *v);
    s_version(version, v);
    cr_assert_eq(v->status, TRANSCODE_QUEUED);
    cr_assert_not(tc_exists(s_hls("%s", version)));

    s_run_job(true);
    s_version(version, v);
    cr_assert_eq(v->status, TRANSCODE_READY, "%s", v->reason);
    cr_assert_eq(v->attempts, 1);
    cr_assert(tc_exists(s_hls("%s/master.m3u8", version)));
    cr_assert(tc_exists(s_hls("%s/master-free.m3u8", version)));
    cr_assert(tc_exists(s_hls("%s/flac/init.mp4", version)));
    cr_assert_eq(s_tmp_dirs(), 0);
    transcode_job_t job;
    cr_assert_eq(s_job(version, &job), MDB_NOTFOUND);
    s_run_job(false);

    cr_assert_eq(s_outbox(TRANSCODE_TOPIC_READY, &ev), 1);
    const msgpack_object *loud = mb_map_get(&ev.msg.data, "loudness");
    cr_assert_not_null(loud);
    cr_assert_not_null(mb_map_get(loud, "integrated_lufs"));
    cr_assert_not_null(mb_map_get(loud, "true_peak_dbtp"));
    cr_assert_not_null(mb_map_get(loud, "lra_lu"));
    cr_assert_not_null(mb_map_get(loud, "gain_db"));
    const msgpack_object *rungs = mb_map_get(&ev.msg.data, "rungs");
    cr_assert_eq(rungs->type, MSGPACK_OBJECT_ARRAY);
    cr_assert_eq(rungs->via.array.size, 5);
    cr_assert(mb_obj_str_eq(mb_map_get(&rungs->via.array.ptr[4], "codecs"), "fLaC"));
    int64_t bw = 0;
    cr_assert(mb_obj_int(mb_map_get(&rungs->via.array.ptr[1], "bandwidth"), &bw) && bw > 0);
    s_obj_free(&ev);

    s_call("audio.status", s_pack_version, version, &r);
    cr_assert_eq(r.status, 200);
    s_get_str(&r.body.data, "status", status, sizeof status);
    cr_assert_str_eq(status, "ready");
    s_reply_free(&r);
    s_call("audio.versions", s_pack_track, "trackA", &r);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(s_get(&r, "versions")->via.array.size, 1);
    s_reply_free(&r);
    free(v);
}

Test(transcode_actor, the_same_master_again_changes_nothing)
{
    char hex[MB_BLOB_HEX_LEN + 1], v1[64], v2[64], v3[64];
    s_flac_master(3, hex);
    reply_t r;
    s_ingest("trackA", hex, &r);
    cr_assert_eq(r.status, 202);
    s_get_str(&r.body.data, "version", v1, sizeof v1);
    s_reply_free(&r);
    s_ingest("trackA", hex, &r);
    cr_assert_eq(r.status, 200);
    s_get_str(&r.body.data, "version", v2, sizeof v2);
    bool dup = false;
    cr_assert(mb_obj_bool(s_get(&r, "duplicate"), &dup) && dup);
    s_reply_free(&r);
    cr_assert_str_eq(v1, v2);
    cr_assert_eq(s_outbox_count(TRANSCODE_TOPIC_UPLOADED), 1);
    /* The same bytes for another track are another version. */
    s_ingest("trackB", hex, &r);
    cr_assert_eq(r.status, 202);
    s_get_str(&r.body.data, "version", v3, sizeof v3);
    s_reply_free(&r);
    cr_assert_str_neq(v1, v3);
    cr_assert_eq(s_outbox_count(TRANSCODE_TOPIC_UPLOADED), 2);
}

Test(transcode_actor, not_audio_is_422_with_the_reason)
{
    char hex[MB_BLOB_HEX_LEN + 1];
    char junk[50000];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)(i * 131 + 7);
    cr_assert_eq(mb_blob_put_data(s_state->blobs, junk, sizeof junk, hex, NULL), 0);
    reply_t r;
    s_ingest("trackA", hex, &r);
    cr_assert_eq(r.status, 422);
    cr_assert_str_eq(r.code, "not_audio");
    cr_assert(strstr(r.message, "not an audio file"), "%s", r.message);
    cr_assert_eq(s_outbox_count(TRANSCODE_TOPIC_UPLOADED), 0);
    s_call("audio.versions", s_pack_track, "trackA", &r);
    cr_assert_eq(s_get(&r, "versions")->via.array.size, 0);
    s_reply_free(&r);
}

Test(transcode_actor, bad_arguments_are_400)
{
    char hex[MB_BLOB_HEX_LEN + 1];
    s_flac_master(1, hex);
    reply_t r;
    s_ingest_args_t a = {.hash = hex, .size = -1};
    s_call("audio.ingest", s_pack_ingest, &a, &r);
    cr_assert_eq(r.status, 400);
    cr_assert_str_eq(r.field, "id");
    a = (s_ingest_args_t){.track = "bad/id", .hash = hex, .size = -1};
    s_call("audio.ingest", s_pack_ingest, &a, &r);
    cr_assert_str_eq(r.field, "id");
    a = (s_ingest_args_t){.track = "t", .no_blob = true};
    s_call("audio.ingest", s_pack_ingest, &a, &r);
    cr_assert_str_eq(r.field, "blob.hash");
    a = (s_ingest_args_t){.track = "t", .hash = "ABC", .size = -1};
    s_call("audio.ingest", s_pack_ingest, &a, &r);
    cr_assert_str_eq(r.field, "blob.hash");
    a = (s_ingest_args_t){.track = "t",
                          .hash =
                              "00000000000000000000000000000000000000000000000000000000000000ff",
                          .size = -1};
    s_call("audio.ingest", s_pack_ingest, &a, &r);
    cr_assert_eq(r.status, 400);
    cr_assert(strstr(r.message, "no blob"), "%s", r.message);
    a = (s_ingest_args_t){.track = "t", .hash = hex, .size = 3};
    s_call("audio.ingest", s_pack_ingest, &a, &r);
    cr_assert_str_eq(r.field, "blob.size");
    s_call("audio.status", s_pack_version, "nope", &r);
    cr_assert_eq(r.status, 400);
    s_call("audio.status", s_pack_version, "AAAAAAAAAAAAAAAAAAAAAA", &r);
    cr_assert_eq(r.status, 404);
}

Test(transcode_actor, a_master_that_cannot_be_read_fails_with_audio_failed)
{
    char hex[MB_BLOB_HEX_LEN + 1], version[64];
    s_flac_master(2, hex);
    reply_t r;
    s_ingest("trackA", hex, &r);
    s_get_str(&r.body.data, "version", version, sizeof version);
    s_reply_free(&r);
    cr_assert_eq(mb_blob_remove(s_state->blobs, hex), 0);
    s_run_job(true);
    transcode_version_t *v = malloc(sizeof *v);
    s_version(version, v);
    cr_assert_eq(v->status, TRANSCODE_FAILED);
    cr_assert(strstr(v->reason, "not in the blob store"), "%s", v->reason);
    s_obj_t ev;
    cr_assert_eq(s_outbox(TRANSCODE_TOPIC_FAILED, &ev), 1);
    cr_assert(mb_obj_str_eq(mb_map_get(&ev.msg.data, "version"), version));
    cr_assert_not_null(mb_map_get(&ev.msg.data, "reason"));
    s_obj_free(&ev);
    cr_assert_not(tc_exists(s_hls("%s", version)));
    cr_assert_eq(s_tmp_dirs(), 0);
    /* A failed version does not block the same master uploaded again. */
    s_flac_master(2, hex);
    s_ingest("trackA", hex, &r);
    cr_assert_eq(r.status, 202);
    s_reply_free(&r);
    free(v);
}

/*  Waits up to `ms` for a .tmp folder holding a segment of a256. */
static bool s_wait_for_segments(const char *version, int ms)
{
    char hls[256];
    snprintf(hls, sizeof hls, "%s/blobs/hls", s_dir);
    for (int waited = 0; waited < ms; waited += 10) {
        DIR *d = opendir(hls);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (strncmp(e->d_name, ".tmp-", 5) || strncmp(e->d_name + 5, version, 22))
                continue;
            char seg[1024];
            snprintf(seg, sizeof seg, "%s/%s/a256/seg-00001.m4s", hls, e->d_name);
            if (tc_exists(seg)) {
                closedir(d);
                return true;
            }
        }
        if (d)
            closedir(d);
        usleep(10000);
    }
    return false;
}

Test(transcode_actor, a_worker_killed_mid_job_leaves_nothing_visible_and_the_job_is_done_again,
     .timeout = 300)
{
    char hex[MB_BLOB_HEX_LEN + 1], version[64];
    s_flac_master(90, hex);
    reply_t r;
    s_ingest("trackK", hex, &r);
    s_get_str(&r.body.data, "version", version, sizeof version);
    s_reply_free(&r);
    /* LMDB environments must not cross fork(): close ours, the worker
       opens its own, as a separate process would. */
    s_close();
    pid_t child = fork();
    cr_assert_geq(child, 0);
    if (child == 0) {
        s_open();
        bool ran = false;
        transcode_jobs_run_one(s_state->jobs, &ran);
        _exit(ran ? 0 : 3);
    }
    bool started = s_wait_for_segments(version, 60000);
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    cr_assert(started, "the worker never wrote a segment");
    cr_assert(WIFSIGNALED(status), "the worker finished before it was killed");

    s_open();
    cr_assert_not(tc_exists(s_hls("%s", version)), "a killed worker's output is visible");
    cr_assert_eq(s_tmp_dirs(), 1);
    transcode_version_t *v = malloc(sizeof *v);
    s_version(version, v);
    cr_assert_eq(v->status, TRANSCODE_RUNNING);
    transcode_job_t job;
    cr_assert_eq(s_job(version, &job), 0);
    cr_assert_eq(job.owner.pid, (uint32_t)child);
    cr_assert_gt(job.lease_until_ms, 0);
    cr_assert_eq(s_outbox_count(TRANSCODE_TOPIC_READY), 0);

    /* Its lease has not run out, but its owner is gone: taken at once. */
    s_run_job(true);
    s_version(version, v);
    cr_assert_eq(v->status, TRANSCODE_READY, "%s", v->reason);
    cr_assert_eq(v->attempts, 2);
    cr_assert(tc_exists(s_hls("%s/master.m3u8", version)));
    cr_assert_eq(s_tmp_dirs(), 0, "the dead worker's folder was removed");
    cr_assert_eq(s_outbox_count(TRANSCODE_TOPIC_READY), 1);
    tc_master_playlist_t pl;
    char why[256];
    cr_assert_eq(tc_parse_master(s_hls("%s/master.m3u8", version), &pl, why, sizeof why), 0, "%s",
                 why);
    cr_assert_eq(pl.n, 5);
    free(v);
}

Test(transcode_actor, leases_decide_who_takes_a_job)
{
    char hex[MB_BLOB_HEX_LEN + 1], version[64];
    s_flac_master(1, hex);
    reply_t r;
    s_ingest("trackL", hex, &r);
    s_get_str(&r.body.data, "version", version, sizeof version);
    s_reply_free(&r);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;

    /* Held by a live worker on another host, lease running: left alone. */
    transcode_job_t job = {.enqueued_ms = now_ms, .lease_until_ms = now_ms + 60000, .attempts = 1};
    snprintf(job.owner.host, sizeof job.owner.host, "elsewhere.example");
    job.owner.pid = 1;
    job.owner.token = 42;
    s_put_job(version, &job);
    s_run_job(false);

    /* Held by a live process of this host (ours): left alone too. */
    gethostname(job.owner.host, sizeof job.owner.host - 1);
    job.owner.pid = (uint32_t)getpid();
    job.owner.start = 0; /* unknown start: the pid alone counts */
    s_put_job(version, &job);
    s_run_job(false);

    /* The other host's lease ran out: taken. */
    snprintf(job.owner.host, sizeof job.owner.host, "elsewhere.example");
    job.lease_until_ms = now_ms - 1;
    s_put_job(version, &job);
    s_run_job(true);
    transcode_version_t *v = malloc(sizeof *v);
    s_version(version, v);
    cr_assert_eq(v->status, TRANSCODE_READY, "%s", v->reason);
    free(v);
}

Test(transcode_actor, attempts_run_out)
{
    char hex[MB_BLOB_HEX_LEN + 1], version[64];
    s_flac_master(1, hex);
    reply_t r;
    s_ingest("trackM", hex, &r);
    s_get_str(&r.body.data, "version", version, sizeof version);
    s_reply_free(&r);
    transcode_job_t job;
    cr_assert_eq(s_job(version, &job), 0);
    job.attempts = 3; /* three workers died on it */
    s_put_job(version, &job);
    s_run_job(false);
    transcode_version_t *v = malloc(sizeof *v);
    s_version(version, v);
    cr_assert_eq(v->status, TRANSCODE_FAILED);
    cr_assert(strstr(v->reason, "gave up after 3 attempts"), "%s", v->reason);
    cr_assert_eq(s_outbox_count(TRANSCODE_TOPIC_FAILED), 1);
    free(v);
}

/*  Applies one event through the actor's consumer, in a write txn. */
static int s_apply(const char *topic, void (*pack)(msgpack_packer *pk, void *arg), void *arg)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    pack(&pk, arg);
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    msgpack_unpack_next(&msg, buf.data, buf.size, NULL);
    mb_event_t ev = {.seq = 1,
                     .topic = topic,
                     .topic_len = strlen(topic),
                     .key = "",
                     .time = 1700000000000ull,
                     .data = &msg.data};
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(s_env, NULL, 0, &txn), 0);
    int rc = s_def.consumers[0].apply(txn, &ev, s_state);
    if (rc == 0)
        cr_assert_eq(mdb_txn_commit(txn), 0);
    else
        mdb_txn_abort(txn);
    msgpack_unpacked_destroy(&msg);
    msgpack_sbuffer_destroy(&buf);
    return rc;
}

typedef struct {
    const char *track, *version, *master;
} s_event_args_t;

static void s_pack_removed(msgpack_packer *pk, void *arg)
{
    s_event_args_t *a = arg;
    msgpack_pack_map(pk, 2);
    mb_pack_cstr(pk, "track_id");
    mb_pack_cstr(pk, a->track);
    mb_pack_cstr(pk, "version");
    mb_pack_cstr(pk, a->version);
}

static void s_pack_uploaded(msgpack_packer *pk, void *arg)
{
    s_event_args_t *a = arg;
    transcode_version_t v = {.probe = {.duration_ms = 1000, .lossless = true}};
    snprintf(v.track_id, sizeof v.track_id, "%s", a->track);
    snprintf(v.version, sizeof v.version, "%s", a->version);
    snprintf(v.master, sizeof v.master, "%s", a->master);
    transcode_event_uploaded(pk, &v);
}

Test(transcode_actor, removed_versions_lose_their_files_and_unshared_master)
{
    char hex[MB_BLOB_HEX_LEN + 1], v1[64], v2[64];
    s_flac_master(2, hex);
    reply_t r;
    s_ingest("trackR", hex, &r);
    s_get_str(&r.body.data, "version", v1, sizeof v1);
    s_reply_free(&r);
    s_ingest("trackS", hex, &r); /* the same master for another track */
    s_get_str(&r.body.data, "version", v2, sizeof v2);
    s_reply_free(&r);
    s_run_job(true);
    s_run_job(true);
    cr_assert(tc_exists(s_hls("%s/master.m3u8", v1)));

    s_event_args_t a = {.track = "trackR", .version = v1};
    cr_assert_eq(s_apply(TRANSCODE_TOPIC_REMOVED, s_pack_removed, &a), 0);
    cr_assert_not(tc_exists(s_hls("%s", v1)));
    cr_assert(tc_exists(s_hls("%s/master.m3u8", v2)));
    cr_assert_eq(mb_blob_exists(s_state->blobs, hex, NULL), 0, "still used by trackS");
    reply_t st;
    s_call("audio.status", s_pack_version, v1, &st);
    cr_assert_eq(st.status, 404);
    /* Again (redelivered): nothing to do. */
    cr_assert_eq(s_apply(TRANSCODE_TOPIC_REMOVED, s_pack_removed, &a), 0);

    a = (s_event_args_t){.track = "trackS", .version = v2};
    cr_assert_eq(s_apply(TRANSCODE_TOPIC_REMOVED, s_pack_removed, &a), 0);
    cr_assert_not(tc_exists(s_hls("%s", v2)));
    cr_assert_eq(mb_blob_exists(s_state->blobs, hex, NULL), MB_ENOTFOUND, "the master went too");
}

Test(transcode_actor, uploads_made_elsewhere_are_queued_once)
{
    char hex[MB_BLOB_HEX_LEN + 1], version[MB_ID_LEN + 1];
    s_flac_master(1, hex);
    mb_id_new(version);
    s_event_args_t a = {.track = "trackE", .version = version, .master = hex};
    cr_assert_eq(s_apply(TRANSCODE_TOPIC_UPLOADED, s_pack_uploaded, &a), 0);
    cr_assert_eq(s_apply(TRANSCODE_TOPIC_UPLOADED, s_pack_uploaded, &a), 0);
    transcode_version_t *v = malloc(sizeof *v);
    s_version(version, v);
    cr_assert_eq(v->status, TRANSCODE_QUEUED);
    s_run_job(true);
    s_run_job(false);
    s_version(version, v);
    cr_assert_eq(v->status, TRANSCODE_READY, "%s", v->reason);
    /* A master this blob store lacks: skipped as malformed, not retried. */
    char other[MB_BLOB_HEX_LEN + 1];
    memset(other, 'a', MB_BLOB_HEX_LEN);
    other[MB_BLOB_HEX_LEN] = '\0';
    mb_id_new(version);
    a = (s_event_args_t){.track = "trackE", .version = version, .master = other};
    cr_assert_eq(s_apply(TRANSCODE_TOPIC_UPLOADED, s_pack_uploaded, &a), MB_EINVAL);
    free(v);
}

Test(transcode_actor, stopping_gives_the_job_back_at_once, .timeout = 120)
{
    char hex[MB_BLOB_HEX_LEN + 1], version[64];
    s_flac_master(90, hex);
    reply_t r;
    s_ingest("trackT", hex, &r);
    s_get_str(&r.body.data, "version", version, sizeof version);
    s_reply_free(&r);
    cr_assert_eq(transcode_jobs_start(s_state->jobs, 1), 0);
    transcode_jobs_kick(s_state->jobs);
    cr_assert(s_wait_for_segments(version, 60000));
    transcode_jobs_destroy(&s_state->jobs); /* what SIGTERM leads to */
    transcode_version_t *v = malloc(sizeof *v);
    s_version(version, v);
    cr_assert_eq(v->status, TRANSCODE_QUEUED);
    transcode_job_t job;
    cr_assert_eq(s_job(version, &job), 0);
    cr_assert_eq(job.lease_until_ms, 0);
    cr_assert_eq(job.attempts, 0, "a stop is not the master's fault");
    cr_assert_eq(s_tmp_dirs(), 0);
    cr_assert_not(tc_exists(s_hls("%s", version)));
    free(v);
}

typedef struct {
    const char *album, *hash;
} s_cover_args_t;

static void s_pack_cover(msgpack_packer *pk, void *arg)
{
    s_cover_args_t *a = arg;
    msgpack_pack_map(pk, 2);
    mb_pack_cstr(pk, "id");
    mb_pack_cstr(pk, a->album);
    mb_pack_cstr(pk, "blob");
    msgpack_pack_map(pk, 1);
    mb_pack_cstr(pk, "hash");
    mb_pack_cstr(pk, a->hash);
}

Test(transcode_actor, covers_in_three_sizes_never_enlarged)
{
    char jpeg[256], hex[MB_BLOB_HEX_LEN + 1];
    snprintf(jpeg, sizeof jpeg, "%s/cover.jpg", s_dir);
    cr_assert_eq(tc_jpeg(jpeg, 400, 200), 0);
    cr_assert_eq(mb_blob_put_file(s_state->blobs, jpeg, MB_BLOB_NO_LIMIT, hex, NULL, NULL), 0);
    s_cover_args_t a = {.album = "albumC", .hash = hex};
    reply_t r;
    s_call("cover.put", s_pack_cover, &a, &r);
    cr_assert_eq(r.status, 201, "%d %s: %s", r.status, r.code, r.message);
    const msgpack_object *images = mb_map_get(s_get(&r, "cover"), "images");
    cr_assert_eq(images->via.array.size, 3);
    int want[3][3] = {{64, 64, 32}, {300, 300, 150}, {640, 400, 200}};
    for (int i = 0; i < 3; i++) {
        const msgpack_object *img = &images->via.array.ptr[i];
        int64_t size, w, h;
        cr_assert(mb_obj_int(mb_map_get(img, "size"), &size) && size == want[i][0]);
        cr_assert(mb_obj_int(mb_map_get(img, "width"), &w) && w == want[i][1], "width %lld",
                  (long long)w);
        cr_assert(mb_obj_int(mb_map_get(img, "height"), &h) && h == want[i][2]);
        char img_hex[MB_BLOB_HEX_LEN + 1];
        s_get_str(img, "hash", img_hex, sizeof img_hex);
        cr_assert_eq(mb_blob_exists(s_state->blobs, img_hex, NULL), 0);
        char url[128];
        s_get_str(img, "url", url, sizeof url);
        cr_assert(strncmp(url, "/covers/", 8) == 0);
    }
    s_reply_free(&r);
    cr_assert_eq(s_outbox_count("cover.updated"), 1);
    s_call("cover.put", s_pack_cover, &a, &r); /* the same image again */
    cr_assert_eq(r.status, 200);
    s_reply_free(&r);
    cr_assert_eq(s_outbox_count("cover.updated"), 1);
    s_call("cover.get", s_pack_track, "albumC", &r);
    cr_assert_eq(r.status, 200);
    s_reply_free(&r);
    s_call("cover.get", s_pack_track, "albumD", &r);
    cr_assert_eq(r.status, 404);
    /* Not an image. */
    char junk[3000];
    memset(junk, 'x', sizeof junk);
    cr_assert_eq(mb_blob_put_data(s_state->blobs, junk, sizeof junk, hex, NULL), 0);
    s_call("cover.put", s_pack_cover, &a, &r);
    cr_assert_eq(r.status, 422);
    cr_assert_str_eq(r.code, "not_image");
}
