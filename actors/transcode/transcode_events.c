/*  transcode_events — packing and reading the audio.* events. */
#include "transcode_events.h"

#include <math.h>
#include <string.h>

#include "mb_error.h"
#include "mb_events.h"
#include "mb_msgpack.h"

static void s_str(msgpack_packer *pk, const char *key, const char *value)
{
    mb_pack_cstr(pk, key);
    mb_pack_cstr(pk, value);
}

static void s_int(msgpack_packer *pk, const char *key, int64_t value)
{
    mb_pack_cstr(pk, key);
    msgpack_pack_int64(pk, value);
}

static void s_bool(msgpack_packer *pk, const char *key, bool value)
{
    mb_pack_cstr(pk, key);
    if (value)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

static void s_num(msgpack_packer *pk, const char *key, double value)
{
    mb_pack_cstr(pk, key);
    msgpack_pack_double(pk, round(value * 100.0) / 100.0);
}

void transcode_event_uploaded(msgpack_packer *pk, const transcode_version_t *v)
{
    msgpack_pack_map(pk, 11);
    s_str(pk, "track_id", v->track_id);
    s_str(pk, "version", v->version);
    s_str(pk, "master", v->master);
    s_int(pk, "size", (int64_t)v->size);
    s_str(pk, "format", v->probe.format);
    s_str(pk, "codec", v->probe.codec);
    s_int(pk, "sample_rate", v->probe.sample_rate);
    s_int(pk, "channels", v->probe.channels);
    s_int(pk, "bits", v->probe.bits);
    s_int(pk, "duration_ms", v->probe.duration_ms);
    s_bool(pk, "lossless", v->probe.lossless);
}

void transcode_event_ready(msgpack_packer *pk, const transcode_version_t *v)
{
    const transcode_ladder_result_t *r = &v->result;
    msgpack_pack_map(pk, 6);
    s_str(pk, "track_id", v->track_id);
    s_str(pk, "version", v->version);
    s_int(pk, "duration_ms", r->duration_ms);
    s_bool(pk, "lossless", r->lossless);
    mb_pack_cstr(pk, "loudness");
    msgpack_pack_map(pk, 4);
    s_num(pk, "integrated_lufs", r->loudness.integrated_lufs);
    s_num(pk, "true_peak_dbtp", r->loudness.true_peak_dbtp);
    s_num(pk, "lra_lu", r->loudness.range_lu);
    s_num(pk, "gain_db", r->gain_db);
    mb_pack_cstr(pk, "rungs");
    msgpack_pack_array(pk, (uint32_t)r->n_rungs);
    for (size_t i = 0; i < r->n_rungs; i++) {
        msgpack_pack_map(pk, 4);
        s_str(pk, "name", r->rungs[i].name);
        s_int(pk, "bandwidth", (int64_t)r->rungs[i].bandwidth);
        s_int(pk, "average_bandwidth", (int64_t)r->rungs[i].average_bandwidth);
        s_str(pk, "codecs", r->rungs[i].codecs);
    }
}

void transcode_event_failed(msgpack_packer *pk, const transcode_version_t *v)
{
    msgpack_pack_map(pk, 3);
    s_str(pk, "track_id", v->track_id);
    s_str(pk, "version", v->version);
    s_str(pk, "reason", v->reason[0] ? v->reason : "unknown");
}

int transcode_event_add(MDB_txn *txn, const char *topic, const transcode_version_t *v)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    if (strcmp(topic, TRANSCODE_TOPIC_UPLOADED) == 0)
        transcode_event_uploaded(&pk, v);
    else if (strcmp(topic, TRANSCODE_TOPIC_READY) == 0)
        transcode_event_ready(&pk, v);
    else
        transcode_event_failed(&pk, v);
    int rc = mb_outbox_add(txn, topic, v->version, buf.data, buf.size);
    msgpack_sbuffer_destroy(&buf);
    return rc;
}

static bool s_get_str(const msgpack_object *map, const char *key, char *out, size_t cap,
                      bool required)
{
    const msgpack_object *o = mb_map_get(map, key);
    const char *s;
    size_t len;
    if (!o || o->type == MSGPACK_OBJECT_NIL) {
        out[0] = '\0';
        return !required;
    }
    if (!mb_obj_str(o, &s, &len) || len >= cap || memchr(s, '\0', len))
        return false;
    memcpy(out, s, len);
    out[len] = '\0';
    return !required || len > 0;
}

static bool s_get_int(const msgpack_object *map, const char *key, int64_t min, int64_t max,
                      int64_t *out)
{
    const msgpack_object *o = mb_map_get(map, key);
    *out = 0;
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return true;
    return mb_obj_int(o, out) && *out >= min && *out <= max;
}

int transcode_event_read_uploaded(const msgpack_object *data, transcode_version_t *v,
                                  const char **why)
{
    memset(v, 0, sizeof *v);
    int64_t size, rate, channels, bits, duration;
    if (!data || data->type != MSGPACK_OBJECT_MAP) {
        *why = "data must be a map";
        return MB_EINVAL;
    }
    if (!s_get_str(data, "track_id", v->track_id, sizeof v->track_id, true)) {
        *why = "data.track_id must be 1..64 bytes";
        return MB_EINVAL;
    }
    if (!s_get_str(data, "version", v->version, sizeof v->version, true) ||
        !mb_id_valid(v->version, strlen(v->version))) {
        *why = "data.version must be a 22-character id";
        return MB_EINVAL;
    }
    if (!s_get_str(data, "master", v->master, sizeof v->master, true) ||
        !mb_blob_hex_valid(v->master, strlen(v->master))) {
        *why = "data.master must be a blob's 64 hex digits";
        return MB_EINVAL;
    }
    if (!s_get_int(data, "size", 0, INT64_MAX, &size) ||
        !s_get_str(data, "format", v->probe.format, sizeof v->probe.format, false) ||
        !s_get_str(data, "codec", v->probe.codec, sizeof v->probe.codec, false) ||
        !s_get_int(data, "sample_rate", 0, 10000000, &rate) ||
        !s_get_int(data, "channels", 0, 255, &channels) || !s_get_int(data, "bits", 0, 64, &bits) ||
        !s_get_int(data, "duration_ms", 0, TRANSCODE_MAX_DURATION_MS, &duration)) {
        *why = "a field of data has the wrong type or is out of range";
        return MB_EINVAL;
    }
    const msgpack_object *lossless = mb_map_get(data, "lossless");
    if (lossless && lossless->type != MSGPACK_OBJECT_NIL &&
        !mb_obj_bool(lossless, &v->probe.lossless)) {
        *why = "data.lossless must be a boolean";
        return MB_EINVAL;
    }
    v->size = (uint64_t)size;
    v->probe.sample_rate = (int)rate;
    v->probe.channels = (int)channels;
    v->probe.bits = (int)bits;
    v->probe.duration_ms = duration;
    v->status = TRANSCODE_QUEUED;
    return 0;
}
