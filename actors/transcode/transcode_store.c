/*  transcode_store — versions, jobs and their indexes in LMDB. */
#include "transcode_store.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mb_alloc.h"
#include "mb_error.h"
#include "mb_log.h"
#include "mb_msgpack.h"

static const char *s_status_names[] = {"queued", "running", "ready", "failed"};

struct transcode_store {
    MDB_dbi versions;        /* version id -> version map */
    MDB_dbi track_versions;  /* DUPSORT: track id -> created ms (8 bytes BE) + version id */
    MDB_dbi master_versions; /* DUPSORT: master hex -> version id */
    MDB_dbi jobs;            /* version id -> job map */
    MDB_dbi covers;          /* album id -> cover map */
};

const char *transcode_status_name(transcode_status_t status)
{
    return status <= TRANSCODE_FAILED ? s_status_names[status] : "unknown";
}

int transcode_store_open(MDB_env *env, transcode_store_t **store)
{
    *store = NULL;
    transcode_store_t *self = mb_calloc(1, sizeof *self);
    MDB_txn *txn;
    int rc = mdb_txn_begin(env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "versions", MDB_CREATE, &self->versions);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "track_versions", MDB_CREATE | MDB_DUPSORT, &self->track_versions);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "master_versions", MDB_CREATE | MDB_DUPSORT, &self->master_versions);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "jobs", MDB_CREATE, &self->jobs);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "covers", MDB_CREATE, &self->covers);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc) {
        mb_error(0, "transcode: cannot open its databases: %s", mdb_strerror(rc));
        free(self);
        return rc;
    }
    *store = self;
    return 0;
}

void transcode_store_destroy(transcode_store_t **self_p)
{
    if (self_p && *self_p) {
        free(*self_p);
        *self_p = NULL;
    }
}

/* ---- packing -------------------------------------------------------------- */

static void s_pack_kv_str(msgpack_packer *pk, const char *key, const char *value)
{
    mb_pack_cstr(pk, key);
    mb_pack_cstr(pk, value);
}

static void s_pack_kv_int(msgpack_packer *pk, const char *key, int64_t value)
{
    mb_pack_cstr(pk, key);
    msgpack_pack_int64(pk, value);
}

static void s_pack_kv_bool(msgpack_packer *pk, const char *key, bool value)
{
    mb_pack_cstr(pk, key);
    if (value)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

/*  RFC 3339 UTC with milliseconds. */
static void s_time(int64_t ms, char out[32])
{
    if (ms < 0)
        ms = 0;
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, 24, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03uZ", (unsigned)(ms % 1000));
}

/*  Figures are rounded to 0.01: what a player applies, not noise. */
static double s_round2(double x)
{
    return round(x * 100.0) / 100.0;
}

void transcode_version_pack(msgpack_packer *pk, const transcode_version_t *v)
{
    const transcode_probe_t *p = &v->probe;
    char created[32], updated[32];
    s_time(v->created_ms, created);
    s_time(v->updated_ms, updated);
    msgpack_pack_map(pk, 20);
    s_pack_kv_str(pk, "version", v->version);
    s_pack_kv_str(pk, "track_id", v->track_id);
    s_pack_kv_str(pk, "status", transcode_status_name(v->status));
    mb_pack_cstr(pk, "reason");
    if (v->reason[0])
        mb_pack_cstr(pk, v->reason);
    else
        msgpack_pack_nil(pk);
    s_pack_kv_str(pk, "master", v->master);
    s_pack_kv_int(pk, "size", (int64_t)v->size);
    s_pack_kv_str(pk, "format", p->format);
    s_pack_kv_str(pk, "codec", p->codec);
    s_pack_kv_int(pk, "sample_rate", p->sample_rate);
    s_pack_kv_int(pk, "channels", p->channels);
    s_pack_kv_int(pk, "bits", p->bits);
    s_pack_kv_int(pk, "duration_ms",
                  v->status == TRANSCODE_READY ? v->result.duration_ms : p->duration_ms);
    s_pack_kv_bool(pk, "lossless", p->lossless);
    s_pack_kv_int(pk, "attempts", v->attempts);
    s_pack_kv_str(pk, "created_at", created);
    s_pack_kv_int(pk, "created_ms", v->created_ms);
    s_pack_kv_str(pk, "updated_at", updated);
    s_pack_kv_int(pk, "updated_ms", v->updated_ms);
    const transcode_ladder_result_t *r = &v->result;
    mb_pack_cstr(pk, "loudness");
    if (v->status != TRANSCODE_READY)
        msgpack_pack_nil(pk);
    else {
        msgpack_pack_map(pk, 4);
        mb_pack_cstr(pk, "integrated_lufs");
        msgpack_pack_double(pk, s_round2(r->loudness.integrated_lufs));
        mb_pack_cstr(pk, "true_peak_dbtp");
        msgpack_pack_double(pk, s_round2(r->loudness.true_peak_dbtp));
        mb_pack_cstr(pk, "lra_lu");
        msgpack_pack_double(pk, s_round2(r->loudness.range_lu));
        mb_pack_cstr(pk, "gain_db");
        msgpack_pack_double(pk, s_round2(r->gain_db));
    }
    mb_pack_cstr(pk, "rungs");
    if (v->status != TRANSCODE_READY)
        msgpack_pack_nil(pk);
    else {
        msgpack_pack_array(pk, (uint32_t)r->n_rungs);
        for (size_t i = 0; i < r->n_rungs; i++) {
            const transcode_rung_t *g = &r->rungs[i];
            msgpack_pack_map(pk, 9);
            s_pack_kv_str(pk, "name", g->name);
            s_pack_kv_str(pk, "codecs", g->codecs);
            s_pack_kv_int(pk, "bandwidth", (int64_t)g->bandwidth);
            s_pack_kv_int(pk, "average_bandwidth", (int64_t)g->average_bandwidth);
            s_pack_kv_int(pk, "bitrate", g->bitrate);
            s_pack_kv_int(pk, "sample_rate", g->sample_rate);
            s_pack_kv_int(pk, "channels", g->channels);
            s_pack_kv_int(pk, "segments", g->segments);
            s_pack_kv_bool(pk, "free", g->free_tier);
        }
    }
}

/* ---- unpacking ----------------------------------------------------------------- */

static bool s_get_str(const msgpack_object *map, const char *key, char *out, size_t cap)
{
    const msgpack_object *o = mb_map_get(map, key);
    const char *s;
    size_t len;
    if (o && o->type == MSGPACK_OBJECT_NIL) {
        out[0] = '\0';
        return true;
    }
    if (!mb_obj_str(o, &s, &len) || len >= cap)
        return false;
    memcpy(out, s, len);
    out[len] = '\0';
    return true;
}

static bool s_get_int(const msgpack_object *map, const char *key, int64_t *out)
{
    return mb_obj_int(mb_map_get(map, key), out);
}

static bool s_get_double(const msgpack_object *map, const char *key, double *out)
{
    const msgpack_object *o = mb_map_get(map, key);
    int64_t i;
    if (o && (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)) {
        *out = o->via.f64;
        return true;
    }
    if (mb_obj_int(o, &i)) {
        *out = (double)i;
        return true;
    }
    return false;
}

static bool s_decode_result(const msgpack_object *map, transcode_version_t *v)
{
    transcode_ladder_result_t *r = &v->result;
    r->duration_ms = v->probe.duration_ms;
    const msgpack_object *loud = mb_map_get(map, "loudness");
    if (loud && loud->type == MSGPACK_OBJECT_MAP) {
        if (!s_get_double(loud, "integrated_lufs", &r->loudness.integrated_lufs) ||
            !s_get_double(loud, "true_peak_dbtp", &r->loudness.true_peak_dbtp) ||
            !s_get_double(loud, "lra_lu", &r->loudness.range_lu) ||
            !s_get_double(loud, "gain_db", &r->gain_db))
            return false;
    }
    const msgpack_object *rungs = mb_map_get(map, "rungs");
    if (!rungs || rungs->type != MSGPACK_OBJECT_ARRAY)
        return true;
    if (rungs->via.array.size > TRANSCODE_RUNGS_MAX)
        return false;
    for (uint32_t i = 0; i < rungs->via.array.size; i++) {
        const msgpack_object *o = &rungs->via.array.ptr[i];
        transcode_rung_t *g = &r->rungs[i];
        int64_t bw, abw, bitrate, rate, channels, segments;
        bool free_tier;
        if (!s_get_str(o, "name", g->name, sizeof g->name) ||
            !s_get_str(o, "codecs", g->codecs, sizeof g->codecs) ||
            !s_get_int(o, "bandwidth", &bw) || !s_get_int(o, "average_bandwidth", &abw) ||
            !s_get_int(o, "bitrate", &bitrate) || !s_get_int(o, "sample_rate", &rate) ||
            !s_get_int(o, "channels", &channels) || !s_get_int(o, "segments", &segments) ||
            !mb_obj_bool(mb_map_get(o, "free"), &free_tier))
            return false;
        g->bandwidth = (uint64_t)bw;
        g->average_bandwidth = (uint64_t)abw;
        g->bitrate = (int)bitrate;
        g->sample_rate = (int)rate;
        g->channels = (int)channels;
        g->segments = (unsigned)segments;
        g->free_tier = free_tier;
        if (strcmp(g->codecs, "fLaC") == 0)
            r->lossless = true;
    }
    r->n_rungs = rungs->via.array.size;
    return true;
}

static bool s_decode_version(const void *data, size_t size, transcode_version_t *v)
{
    memset(v, 0, sizeof *v);
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    bool ok = msgpack_unpack_next(&msg, data, size, NULL) == MSGPACK_UNPACK_SUCCESS;
    const msgpack_object *m = &msg.data;
    char status[16];
    int64_t n_size, rate, channels, bits, duration, attempts, created, updated;
    ok = ok && m->type == MSGPACK_OBJECT_MAP &&
         s_get_str(m, "version", v->version, sizeof v->version) &&
         s_get_str(m, "track_id", v->track_id, sizeof v->track_id) &&
         s_get_str(m, "status", status, sizeof status) &&
         s_get_str(m, "reason", v->reason, sizeof v->reason) &&
         s_get_str(m, "master", v->master, sizeof v->master) && s_get_int(m, "size", &n_size) &&
         s_get_str(m, "format", v->probe.format, sizeof v->probe.format) &&
         s_get_str(m, "codec", v->probe.codec, sizeof v->probe.codec) &&
         s_get_int(m, "sample_rate", &rate) && s_get_int(m, "channels", &channels) &&
         s_get_int(m, "bits", &bits) && s_get_int(m, "duration_ms", &duration) &&
         mb_obj_bool(mb_map_get(m, "lossless"), &v->probe.lossless) &&
         s_get_int(m, "attempts", &attempts) && s_get_int(m, "created_ms", &created) &&
         s_get_int(m, "updated_ms", &updated);
    if (ok) {
        v->size = (uint64_t)n_size;
        v->probe.sample_rate = (int)rate;
        v->probe.channels = (int)channels;
        v->probe.bits = (int)bits;
        v->probe.duration_ms = duration;
        v->attempts = (uint32_t)attempts;
        v->created_ms = created;
        v->updated_ms = updated;
        int i = 0;
        while (i < 4 && strcmp(status, s_status_names[i]) != 0)
            i++;
        ok = i < 4;
        v->status = (transcode_status_t)i;
    }
    ok = ok && s_decode_result(m, v);
    msgpack_unpacked_destroy(&msg);
    return ok;
}

/* ---- versions ----------------------------------------------------------------- */

static MDB_val s_val(const void *data, size_t size)
{
    return (MDB_val){.mv_size = size, .mv_data = (void *)data};
}

static MDB_val s_cval(const char *s)
{
    return s_val(s, strlen(s));
}

/*  The track index's value: created ms, big-endian, then the version id:
    a track's versions sort oldest first. */
static void s_track_entry(const transcode_version_t *v, unsigned char out[8 + MB_ID_LEN])
{
    uint64_t ms = (uint64_t)v->created_ms;
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)(ms >> (56 - 8 * i));
    memcpy(out + 8, v->version, MB_ID_LEN);
}

int transcode_store_put_version(transcode_store_t *self, MDB_txn *txn, const transcode_version_t *v,
                                bool is_new)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    transcode_version_pack(&pk, v);
    MDB_val key = s_cval(v->version), val = s_val(buf.data, buf.size);
    int rc = mdb_put(txn, self->versions, &key, &val, 0);
    msgpack_sbuffer_destroy(&buf);
    if (rc || !is_new)
        return rc;
    unsigned char entry[8 + MB_ID_LEN];
    s_track_entry(v, entry);
    MDB_val tkey = s_cval(v->track_id), tval = s_val(entry, sizeof entry);
    if ((rc = mdb_put(txn, self->track_versions, &tkey, &tval, 0)) != 0)
        return rc;
    MDB_val mkey = s_cval(v->master), mval = s_cval(v->version);
    return mdb_put(txn, self->master_versions, &mkey, &mval, 0);
}

int transcode_store_get_version(transcode_store_t *self, MDB_txn *txn, const char *version,
                                transcode_version_t *v)
{
    MDB_val key = s_cval(version), val;
    int rc = mdb_get(txn, self->versions, &key, &val);
    if (rc)
        return rc;
    return s_decode_version(val.mv_data, val.mv_size, v) ? 0 : MDB_CORRUPTED;
}

static int s_del_dup(MDB_txn *txn, MDB_dbi dbi, MDB_val key, MDB_val val)
{
    int rc = mdb_del(txn, dbi, &key, &val);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int transcode_store_del_version(transcode_store_t *self, MDB_txn *txn, const transcode_version_t *v)
{
    unsigned char entry[8 + MB_ID_LEN];
    s_track_entry(v, entry);
    int rc = s_del_dup(txn, self->track_versions, s_cval(v->track_id), s_val(entry, sizeof entry));
    if (rc == 0)
        rc = s_del_dup(txn, self->master_versions, s_cval(v->master), s_cval(v->version));
    if (rc == 0)
        rc = transcode_store_del_job(self, txn, v->version);
    if (rc == 0) {
        MDB_val key = s_cval(v->version);
        rc = mdb_del(txn, self->versions, &key, NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    return rc;
}

int transcode_store_find_upload(transcode_store_t *self, MDB_txn *txn, const char *track_id,
                                const char *hex, transcode_version_t *v)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, self->master_versions, &cur);
    if (rc)
        return rc;
    MDB_val key = s_cval(hex), val;
    char id[MB_ID_LEN + 1];
    for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_KEY); rc == 0;
         rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT_DUP)) {
        if (val.mv_size != MB_ID_LEN)
            continue;
        memcpy(id, val.mv_data, MB_ID_LEN);
        id[MB_ID_LEN] = '\0';
        int grc = transcode_store_get_version(self, txn, id, v);
        if (grc == MDB_NOTFOUND)
            continue;
        if (grc) {
            rc = grc;
            break;
        }
        if (strcmp(v->track_id, track_id) == 0 && v->status != TRANSCODE_FAILED)
            break;
    }
    mdb_cursor_close(cur);
    return rc;
}

int transcode_store_master_refs(transcode_store_t *self, MDB_txn *txn, const char *hex,
                                size_t *count)
{
    *count = 0;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, self->master_versions, &cur);
    if (rc)
        return rc;
    MDB_val key = s_cval(hex), val;
    rc = mdb_cursor_get(cur, &key, &val, MDB_SET_KEY);
    if (rc == 0) {
        size_t n = 0;
        rc = mdb_cursor_count(cur, &n);
        *count = (size_t)n;
    } else if (rc == MDB_NOTFOUND)
        rc = 0;
    mdb_cursor_close(cur);
    return rc;
}

int transcode_store_track_versions(transcode_store_t *self, MDB_txn *txn, const char *track_id,
                                   int (*fn)(const transcode_version_t *v, void *arg), void *arg)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, self->track_versions, &cur);
    if (rc)
        return rc;
    transcode_version_t *v = mb_malloc(sizeof *v);
    MDB_val key = s_cval(track_id), val;
    char id[MB_ID_LEN + 1];
    for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_KEY); rc == 0;
         rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT_DUP)) {
        if (val.mv_size != 8 + MB_ID_LEN)
            continue;
        memcpy(id, (const char *)val.mv_data + 8, MB_ID_LEN);
        id[MB_ID_LEN] = '\0';
        int grc = transcode_store_get_version(self, txn, id, v);
        if (grc == MDB_NOTFOUND)
            continue;
        if (grc || (grc = fn(v, arg)) != 0) {
            rc = grc;
            break;
        }
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
    free(v);
    mdb_cursor_close(cur);
    return rc;
}

/* ---- jobs ------------------------------------------------------------------------ */

int transcode_store_put_job(transcode_store_t *self, MDB_txn *txn, const char *version,
                            const transcode_job_t *job)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 8);
    s_pack_kv_int(&pk, "enqueued_ms", job->enqueued_ms);
    s_pack_kv_int(&pk, "lease_until_ms", job->lease_until_ms);
    s_pack_kv_str(&pk, "host", job->owner.host);
    s_pack_kv_int(&pk, "pid", job->owner.pid);
    mb_pack_cstr(&pk, "start");
    msgpack_pack_uint64(&pk, job->owner.start);
    mb_pack_cstr(&pk, "token");
    msgpack_pack_uint64(&pk, job->owner.token);
    s_pack_kv_int(&pk, "attempts", job->attempts);
    s_pack_kv_int(&pk, "version", 1);
    MDB_val key = s_cval(version), val = s_val(buf.data, buf.size);
    int rc = mdb_put(txn, self->jobs, &key, &val, 0);
    msgpack_sbuffer_destroy(&buf);
    return rc;
}

static bool s_get_u64(const msgpack_object *map, const char *key, uint64_t *out)
{
    const msgpack_object *o = mb_map_get(map, key);
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *out = o->via.u64;
    return true;
}

static bool s_decode_job(const void *data, size_t size, transcode_job_t *job)
{
    memset(job, 0, sizeof *job);
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    bool ok = msgpack_unpack_next(&msg, data, size, NULL) == MSGPACK_UNPACK_SUCCESS;
    const msgpack_object *m = &msg.data;
    int64_t pid, attempts;
    ok = ok && m->type == MSGPACK_OBJECT_MAP && s_get_int(m, "enqueued_ms", &job->enqueued_ms) &&
         s_get_int(m, "lease_until_ms", &job->lease_until_ms) &&
         s_get_str(m, "host", job->owner.host, sizeof job->owner.host) &&
         s_get_int(m, "pid", &pid) && s_get_u64(m, "start", &job->owner.start) &&
         s_get_u64(m, "token", &job->owner.token) && s_get_int(m, "attempts", &attempts);
    if (ok) {
        job->owner.pid = (uint32_t)pid;
        job->attempts = (uint32_t)attempts;
    }
    msgpack_unpacked_destroy(&msg);
    return ok;
}

int transcode_store_get_job(transcode_store_t *self, MDB_txn *txn, const char *version,
                            transcode_job_t *job)
{
    MDB_val key = s_cval(version), val;
    int rc = mdb_get(txn, self->jobs, &key, &val);
    if (rc)
        return rc;
    return s_decode_job(val.mv_data, val.mv_size, job) ? 0 : MDB_CORRUPTED;
}

int transcode_store_del_job(transcode_store_t *self, MDB_txn *txn, const char *version)
{
    MDB_val key = s_cval(version);
    int rc = mdb_del(txn, self->jobs, &key, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int transcode_store_next_job(transcode_store_t *self, MDB_txn *txn, int64_t now_ms,
                             bool (*alive)(const transcode_owner_t *owner),
                             char version[MB_ID_LEN + 1], transcode_job_t *job)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, self->jobs, &cur);
    if (rc)
        return rc;
    bool found = false;
    MDB_val key, val;
    transcode_job_t j;
    for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
        if (key.mv_size != MB_ID_LEN || !s_decode_job(val.mv_data, val.mv_size, &j))
            continue; /* not ours to judge: left for an operator */
        bool free_now = j.lease_until_ms <= now_ms || (alive && j.owner.pid && !alive(&j.owner));
        if (free_now && (!found || j.enqueued_ms < job->enqueued_ms)) {
            found = true;
            *job = j;
            memcpy(version, key.mv_data, MB_ID_LEN);
            version[MB_ID_LEN] = '\0';
        }
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND)
        return rc;
    return found ? 0 : MDB_NOTFOUND;
}

int transcode_store_job_count(transcode_store_t *self, MDB_txn *txn, size_t *count)
{
    MDB_stat st;
    int rc = mdb_stat(txn, self->jobs, &st);
    *count = rc == 0 ? st.ms_entries : 0;
    return rc;
}

/* ---- covers ------------------------------------------------------------------------ */

int transcode_store_put_cover(transcode_store_t *self, MDB_txn *txn, const char *album_id,
                              const void *data, size_t len)
{
    MDB_val key = s_cval(album_id), val = s_val(data, len);
    return mdb_put(txn, self->covers, &key, &val, 0);
}

int transcode_store_get_cover(transcode_store_t *self, MDB_txn *txn, const char *album_id,
                              MDB_val *val)
{
    MDB_val key = s_cval(album_id);
    return mdb_get(txn, self->covers, &key, val);
}
