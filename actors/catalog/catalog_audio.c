/*  catalog_audio — see catalog_audio.h. */
#include "catalog_audio.h"

#include "mb_utf8.h"

#include <math.h>
#include <string.h>

#include "mb_error.h"
#include "mb_msgpack.h"

static const char *s_status_names[] = {"processing", "ready", "failed", "removed"};

#define S_NO_REASON "no reason given"
#define S_BAD_REASON "the reason given is not valid UTF-8"

/* ---- small readers ------------------------------------------------------- */

bool catalog_version_valid(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > CATALOG_VERSION_MAX || s[0] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

/*  A string of 1..max bytes of printable ASCII: rung names and codecs go
    into playlists, JSON and log lines. */
static bool s_ascii(const msgpack_object *o, size_t max, catalog_str_t *out)
{
    if (!mb_obj_str(o, &out->ptr, &out->len) || out->len == 0 || out->len > max)
        return false;
    for (size_t i = 0; i < out->len; i++)
        if (out->ptr[i] < 0x20 || out->ptr[i] > 0x7e)
            return false;
    return true;
}

/*  An optional integer >= 0 (absent or nil: -1). */
static bool s_count(const msgpack_object *o, int64_t max, int64_t *out)
{
    *out = -1;
    if (o == NULL || o->type == MSGPACK_OBJECT_NIL)
        return true;
    return mb_obj_int(o, out) && *out >= 0 && *out <= max;
}

/*  A string or nil. */
static bool s_str_or_nil(const msgpack_object *o, catalog_str_t *out)
{
    *out = (catalog_str_t){NULL, 0};
    if (o == NULL || o->type == MSGPACK_OBJECT_NIL)
        return true;
    return mb_obj_str(o, &out->ptr, &out->len);
}

static void s_pack_str(msgpack_packer *pk, catalog_str_t s)
{
    if (s.ptr)
        mb_pack_strn(pk, s.ptr, s.len);
    else
        msgpack_pack_nil(pk);
}

static void s_pack_bool(msgpack_packer *pk, bool b)
{
    if (b)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

static void s_pack_count(msgpack_packer *pk, int64_t n)
{
    if (n < 0)
        msgpack_pack_nil(pk);
    else
        msgpack_pack_int64(pk, n);
}

static bool s_same(catalog_str_t a, catalog_str_t b)
{
    return a.ptr && b.ptr && a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

double catalog_gain_db(double integrated_lufs, double true_peak_dbtp)
{
    if (isnan(integrated_lufs) || isnan(true_peak_dbtp))
        return NAN;
    return fmin(-14.0 - integrated_lufs, -1.0 - true_peak_dbtp);
}

/* ---- rungs and loudness (the same in events and stored versions) ---------- */

static bool s_rungs_read(const msgpack_object *o, catalog_version_t *v)
{
    v->n_rungs = 0;
    if (o == NULL || o->type == MSGPACK_OBJECT_NIL)
        return true;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > CATALOG_AUDIO_RUNGS_MAX)
        return false;
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        const msgpack_object *r = &o->via.array.ptr[i];
        catalog_rung_t *rung = &v->rungs[i];
        if (r->type != MSGPACK_OBJECT_MAP ||
            !s_ascii(mb_map_get(r, "name"), CATALOG_RUNG_NAME_MAX, &rung->name) ||
            !s_count(mb_map_get(r, "bandwidth"), INT64_MAX, &rung->bandwidth) ||
            !s_count(mb_map_get(r, "average_bandwidth"), INT64_MAX, &rung->average_bandwidth))
            return false;
        const msgpack_object *codecs = mb_map_get(r, "codecs");
        rung->codecs = (catalog_str_t){NULL, 0};
        if (codecs && codecs->type != MSGPACK_OBJECT_NIL &&
            !s_ascii(codecs, CATALOG_CODECS_MAX, &rung->codecs))
            return false;
    }
    v->n_rungs = o->via.array.size;
    return true;
}

static void s_rungs_pack(msgpack_packer *pk, const catalog_version_t *v)
{
    msgpack_pack_array(pk, v->n_rungs);
    for (size_t i = 0; i < v->n_rungs; i++) {
        const catalog_rung_t *r = &v->rungs[i];
        msgpack_pack_map(pk, 4);
        mb_pack_cstr(pk, "name");
        s_pack_str(pk, r->name);
        mb_pack_cstr(pk, "bandwidth");
        s_pack_count(pk, r->bandwidth);
        mb_pack_cstr(pk, "average_bandwidth");
        s_pack_count(pk, r->average_bandwidth);
        mb_pack_cstr(pk, "codecs");
        s_pack_str(pk, r->codecs);
    }
}

/*  {integrated_lufs, true_peak_dbtp, lra_lu, gain_db}; nil or absent
    leaves every figure unknown. */
static bool s_loudness_read(const msgpack_object *o, catalog_version_t *v)
{
    v->integrated_lufs = v->true_peak_dbtp = v->lra_lu = v->gain_db = NAN;
    if (o == NULL || o->type == MSGPACK_OBJECT_NIL)
        return true;
    return o->type == MSGPACK_OBJECT_MAP &&
           catalog_number_read(mb_map_get(o, "integrated_lufs"), &v->integrated_lufs) &&
           catalog_number_read(mb_map_get(o, "true_peak_dbtp"), &v->true_peak_dbtp) &&
           catalog_number_read(mb_map_get(o, "lra_lu"), &v->lra_lu) &&
           catalog_number_read(mb_map_get(o, "gain_db"), &v->gain_db);
}

static bool s_has_loudness(const catalog_version_t *v)
{
    return !isnan(v->integrated_lufs) || !isnan(v->true_peak_dbtp) || !isnan(v->lra_lu) ||
           !isnan(v->gain_db);
}

static void s_loudness_pack(msgpack_packer *pk, const catalog_version_t *v)
{
    if (!s_has_loudness(v)) {
        msgpack_pack_nil(pk);
        return;
    }
    msgpack_pack_map(pk, 4);
    mb_pack_cstr(pk, "integrated_lufs");
    catalog_number_pack(pk, v->integrated_lufs);
    mb_pack_cstr(pk, "true_peak_dbtp");
    catalog_number_pack(pk, v->true_peak_dbtp);
    mb_pack_cstr(pk, "lra_lu");
    catalog_number_pack(pk, v->lra_lu);
    mb_pack_cstr(pk, "gain_db");
    catalog_number_pack(pk, v->gain_db);
}

/* ---- the stored list ------------------------------------------------------------- */

void catalog_versions_init(catalog_versions_t *list)
{
    list->n = 0;
}

static void s_version_init(catalog_version_t *v)
{
    memset(v, 0, sizeof *v);
    v->integrated_lufs = v->true_peak_dbtp = v->lra_lu = v->gain_db = NAN;
    v->duration_ms = -1;
}

static bool s_version_decode(const msgpack_object *o, catalog_version_t *v)
{
    s_version_init(v);
    if (o->type != MSGPACK_OBJECT_MAP)
        return false;
    const msgpack_object *status = mb_map_get(o, "status");
    size_t i = 0;
    while (i < 4 && !mb_obj_str_eq(status, s_status_names[i]))
        i++;
    const msgpack_object *created = mb_map_get(o, "created_at");
    const char *s;
    size_t len;
    if (i == 4 || !mb_obj_str(mb_map_get(o, "version"), &v->version.ptr, &v->version.len) ||
        !mb_obj_str(created, &s, &len) || len > CATALOG_TIME_MAX ||
        !s_str_or_nil(mb_map_get(o, "reason"), &v->reason) ||
        !s_loudness_read(mb_map_get(o, "loudness"), v) ||
        !s_rungs_read(mb_map_get(o, "rungs"), v) ||
        !mb_obj_bool(mb_map_get(o, "lossless"), &v->lossless) ||
        !s_count(mb_map_get(o, "duration_ms"), INT64_MAX, &v->duration_ms))
        return false;
    v->status = (catalog_version_status_t)i;
    memcpy(v->created_at, s, len);
    v->created_at[len] = '\0';
    return true;
}

bool catalog_versions_decode(const msgpack_object *o, catalog_versions_t *list)
{
    catalog_versions_init(list);
    const msgpack_object *versions = mb_map_get(o, "versions");
    if (!versions || versions->type != MSGPACK_OBJECT_ARRAY ||
        versions->via.array.size > CATALOG_AUDIO_VERSIONS_MAX)
        return false;
    for (uint32_t i = 0; i < versions->via.array.size; i++)
        if (!s_version_decode(&versions->via.array.ptr[i], &list->items[i]))
            return false;
    list->n = versions->via.array.size;
    return true;
}

/*  The version as stored, or (answer) as admins see it, with "current". */
static void s_version_pack(msgpack_packer *pk, const catalog_version_t *v, bool answer,
                           bool current)
{
    msgpack_pack_map(pk, answer ? 9 : 8);
    mb_pack_cstr(pk, "version");
    s_pack_str(pk, v->version);
    mb_pack_cstr(pk, "status");
    mb_pack_cstr(pk, s_status_names[v->status]);
    mb_pack_cstr(pk, "reason");
    s_pack_str(pk, v->reason);
    mb_pack_cstr(pk, "created_at");
    mb_pack_cstr(pk, v->created_at);
    mb_pack_cstr(pk, "loudness");
    s_loudness_pack(pk, v);
    mb_pack_cstr(pk, "rungs");
    s_rungs_pack(pk, v);
    mb_pack_cstr(pk, "lossless");
    s_pack_bool(pk, v->lossless);
    mb_pack_cstr(pk, "duration_ms");
    s_pack_count(pk, v->duration_ms);
    if (answer) {
        mb_pack_cstr(pk, "current");
        s_pack_bool(pk, current);
    }
}

void catalog_versions_pack(msgpack_packer *pk, const catalog_versions_t *list)
{
    msgpack_pack_map(pk, 1);
    mb_pack_cstr(pk, "versions");
    msgpack_pack_array(pk, list->n);
    for (size_t i = 0; i < list->n; i++)
        s_version_pack(pk, &list->items[i], false, false);
}

void catalog_versions_pack_answer(msgpack_packer *pk, catalog_str_t track_id,
                                  const catalog_versions_t *list)
{
    int current = catalog_versions_current(list);
    size_t shown = 0;
    for (size_t i = 0; i < list->n; i++)
        shown += list->items[i].status != CATALOG_VERSION_REMOVED;
    msgpack_pack_map(pk, 3);
    mb_pack_cstr(pk, "track_id");
    s_pack_str(pk, track_id);
    mb_pack_cstr(pk, "current");
    s_pack_str(pk, current >= 0 ? list->items[current].version : (catalog_str_t){NULL, 0});
    mb_pack_cstr(pk, "versions");
    msgpack_pack_array(pk, shown);
    for (size_t i = list->n; i-- > 0;)
        if (list->items[i].status != CATALOG_VERSION_REMOVED)
            s_version_pack(pk, &list->items[i], true, (int)i == current);
}

/* ---- events ---------------------------------------------------------------------- */

/*  Cuts a failure reason to CATALOG_REASON_MAX bytes at a character
    boundary; replaces one that is not UTF-8 (it goes into JSON). */
static catalog_str_t s_reason(catalog_str_t reason)
{
    size_t chars;
    if (reason.ptr == NULL || reason.len == 0)
        return (catalog_str_t){S_NO_REASON, strlen(S_NO_REASON)};
    if (reason.len > CATALOG_REASON_MAX) {
        reason.len = CATALOG_REASON_MAX;
        while (reason.len > 0 && ((unsigned char)reason.ptr[reason.len] & 0xc0) == 0x80)
            reason.len--;
    }
    if (!mb_utf8_chars(reason.ptr, reason.len, &chars))
        return (catalog_str_t){S_BAD_REASON, strlen(S_BAD_REASON)};
    return reason;
}

int catalog_audio_event_read(const char *topic, size_t topic_len, const msgpack_object *data,
                             catalog_audio_event_t *ev, const char **why)
{
    memset(ev, 0, sizeof *ev);
    s_version_init(&ev->v);
    catalog_str_t t = {topic, topic_len};
    catalog_str_t uploaded = {CATALOG_TOPIC_UPLOADED, strlen(CATALOG_TOPIC_UPLOADED)};
    catalog_str_t ready = {CATALOG_TOPIC_READY, strlen(CATALOG_TOPIC_READY)};
    catalog_str_t failed = {CATALOG_TOPIC_FAILED, strlen(CATALOG_TOPIC_FAILED)};
    if (s_same(t, uploaded))
        ev->kind = CATALOG_EVENT_UPLOADED;
    else if (s_same(t, ready))
        ev->kind = CATALOG_EVENT_READY;
    else if (s_same(t, failed))
        ev->kind = CATALOG_EVENT_FAILED;
    else {
        *why = "not an audio topic this consumer knows";
        return MB_EINVAL;
    }
    size_t chars;
    if (!data || data->type != MSGPACK_OBJECT_MAP) {
        *why = "data must be a map {track_id, version, ...}";
        return MB_EINVAL;
    }
    if (!mb_obj_str(mb_map_get(data, "track_id"), &ev->track_id.ptr, &ev->track_id.len) ||
        ev->track_id.len == 0 || ev->track_id.len > CATALOG_ID_MAX ||
        !mb_utf8_chars(ev->track_id.ptr, ev->track_id.len, &chars)) {
        *why = "data.track_id must be an id (1..64 bytes of UTF-8)";
        return MB_EINVAL;
    }
    if (!mb_obj_str(mb_map_get(data, "version"), &ev->v.version.ptr, &ev->v.version.len) ||
        !catalog_version_valid(ev->v.version.ptr, ev->v.version.len)) {
        *why = "data.version must be 1..64 bytes of A-Z a-z 0-9 _ - . (no leading '.')";
        return MB_EINVAL;
    }
    if (!s_count(mb_map_get(data, "duration_ms"), CATALOG_DURATION_MAX, &ev->v.duration_ms)) {
        *why = "data.duration_ms must be an integer from 0 to 86400000, or nil";
        return MB_EINVAL;
    }
    const msgpack_object *lossless = mb_map_get(data, "lossless");
    if (lossless && lossless->type != MSGPACK_OBJECT_NIL) {
        if (!mb_obj_bool(lossless, &ev->v.lossless)) {
            *why = "data.lossless must be true or false";
            return MB_EINVAL;
        }
        ev->has_lossless = true;
    }
    if (ev->kind == CATALOG_EVENT_READY) {
        if (!s_loudness_read(mb_map_get(data, "loudness"), &ev->v)) {
            *why = "data.loudness must be a map of finite numbers (or nil)";
            return MB_EINVAL;
        }
        if (isnan(ev->v.gain_db))
            ev->v.gain_db = catalog_gain_db(ev->v.integrated_lufs, ev->v.true_peak_dbtp);
        if (!s_rungs_read(mb_map_get(data, "rungs"), &ev->v)) {
            *why = "data.rungs must be a list of at most 16 maps {name, bandwidth, "
                   "average_bandwidth, codecs}";
            return MB_EINVAL;
        }
    }
    if (ev->kind == CATALOG_EVENT_FAILED) {
        catalog_str_t reason;
        if (!s_str_or_nil(mb_map_get(data, "reason"), &reason)) {
            *why = "data.reason must be a string or nil";
            return MB_EINVAL;
        }
        ev->v.reason = s_reason(reason);
    }
    return 0;
}

/* ---- applying ------------------------------------------------------------------- */

/*  Index of `version` among every kept version, tombstones included. */
static int s_find_any(const catalog_versions_t *list, catalog_str_t version)
{
    for (size_t i = 0; i < list->n; i++)
        if (s_same(list->items[i].version, version))
            return (int)i;
    return -1;
}

int catalog_versions_find(const catalog_versions_t *list, catalog_str_t version)
{
    int i = s_find_any(list, version);
    return i >= 0 && list->items[i].status != CATALOG_VERSION_REMOVED ? i : -1;
}

int catalog_versions_current(const catalog_versions_t *list)
{
    for (size_t i = list->n; i-- > 0;)
        if (list->items[i].status == CATALOG_VERSION_READY)
            return (int)i;
    return -1;
}

/*  Drops the oldest version of `status`; false when there is none. */
static bool s_drop_oldest(catalog_versions_t *list, catalog_version_status_t status)
{
    for (size_t i = 0; i < list->n; i++)
        if (list->items[i].status == status) {
            memmove(&list->items[i], &list->items[i + 1],
                    (list->n - i - 1) * sizeof list->items[0]);
            list->n--;
            return true;
        }
    return false;
}

int catalog_versions_apply(catalog_versions_t *list, const catalog_audio_event_t *ev,
                           const char *created_at, const char **why)
{
    int i = s_find_any(list, ev->v.version);
    if (i < 0) {
        if (list->n == CATALOG_AUDIO_VERSIONS_MAX &&
            !s_drop_oldest(list, CATALOG_VERSION_REMOVED) &&
            !s_drop_oldest(list, CATALOG_VERSION_FAILED)) {
            *why = "the track already has 64 versions processing or ready";
            return MB_EINVAL;
        }
        catalog_version_t *v = &list->items[list->n++];
        *v = ev->v;
        v->status = ev->kind == CATALOG_EVENT_UPLOADED ? CATALOG_VERSION_PROCESSING
                    : ev->kind == CATALOG_EVENT_READY  ? CATALOG_VERSION_READY
                                                       : CATALOG_VERSION_FAILED;
        size_t len = strnlen(created_at, CATALOG_TIME_MAX);
        memcpy(v->created_at, created_at, len);
        v->created_at[len] = '\0';
        return 0;
    }
    catalog_version_t *v = &list->items[i];
    if (v->status == CATALOG_VERSION_REMOVED || ev->kind == CATALOG_EVENT_UPLOADED)
        return 0; /* removed stays removed; a repeated upload changes nothing */
    if (ev->kind == CATALOG_EVENT_FAILED) {
        if (v->status != CATALOG_VERSION_READY) {
            v->status = CATALOG_VERSION_FAILED;
            v->reason = ev->v.reason;
        }
        return 0;
    }
    v->status = CATALOG_VERSION_READY;
    v->reason = (catalog_str_t){NULL, 0};
    v->integrated_lufs = ev->v.integrated_lufs;
    v->true_peak_dbtp = ev->v.true_peak_dbtp;
    v->lra_lu = ev->v.lra_lu;
    v->gain_db = ev->v.gain_db;
    memcpy(v->rungs, ev->v.rungs, ev->v.n_rungs * sizeof v->rungs[0]);
    v->n_rungs = ev->v.n_rungs;
    if (ev->v.duration_ms >= 0)
        v->duration_ms = ev->v.duration_ms;
    if (ev->has_lossless)
        v->lossless = ev->v.lossless;
    return 0;
}

void catalog_versions_summary(const catalog_versions_t *list, catalog_audio_t *audio)
{
    catalog_audio_init(audio);
    int current = catalog_versions_current(list);
    if (current >= 0) {
        const catalog_version_t *v = &list->items[current];
        audio->status = CATALOG_AUDIO_READY;
        audio->version = v->version;
        audio->integrated_lufs = v->integrated_lufs;
        audio->true_peak_dbtp = v->true_peak_dbtp;
        audio->lra_lu = v->lra_lu;
        audio->gain_db = v->gain_db;
        audio->lossless = v->lossless;
        return;
    }
    for (size_t i = list->n; i-- > 0;) {
        const catalog_version_t *v = &list->items[i];
        if (v->status == CATALOG_VERSION_PROCESSING) {
            audio->status = CATALOG_AUDIO_PROCESSING;
            audio->failure_reason = (catalog_str_t){NULL, 0};
            return;
        }
        if (v->status == CATALOG_VERSION_FAILED && audio->status != CATALOG_AUDIO_FAILED) {
            audio->status = CATALOG_AUDIO_FAILED; /* the newest failure; a processing one wins */
            audio->failure_reason = v->reason;
        }
    }
}
