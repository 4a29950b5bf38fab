/*  catalog_audio — a track's audio versions as the catalog sees them, fed
    by the transcode actor's events (audio.uploaded, audio.ready,
    audio.failed), and the track's "audio" object derived from them.

    The transcode actor owns the files; the catalog keeps the listener's
    view: which versions of a track exist, whether each is processing,
    ready or failed, the loudness and the HLS rungs of the ready ones, and
    which one is CURRENT: the newest ready version. A newer version that
    is processing or failed never hides an older ready one.

    Versions are kept oldest first, in the order their first event was
    applied (the bus log's order), so "newest" is simply "last". A version
    an admin removed stays as a tombstone (status removed, hidden from
    every answer) so that a late or redelivered event cannot bring it
    back.

    Applying is idempotent: an event delivered twice changes nothing the
    second time. uploaded creates a version (processing) and never
    touches an existing one; ready makes a version ready (from processing
    or failed: a retry that succeeded); failed marks a processing version
    failed but leaves a ready one alone (its renditions exist and play).

    Strings in these structs are borrowed, as in catalog_model.h: from the
    stored record the list was decoded from, or from the event. */
#ifndef CATALOG_AUDIO_H
#define CATALOG_AUDIO_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog_model.h"

#define CATALOG_AUDIO_VERSIONS_MAX 64 /* versions kept per track, tombstones included */
#define CATALOG_AUDIO_RUNGS_MAX 16    /* rungs of one version's HLS ladder */
#define CATALOG_RUNG_NAME_MAX 32      /* bytes of a rung's name ("a128") */
#define CATALOG_CODECS_MAX 128        /* bytes of a rung's codecs ("mp4a.40.2") */

#define CATALOG_TOPIC_UPLOADED "audio.uploaded"
#define CATALOG_TOPIC_READY "audio.ready"
#define CATALOG_TOPIC_FAILED "audio.failed"
#define CATALOG_TOPIC_REMOVED "audio.version_removed" /* published by the catalog */

typedef enum {
    CATALOG_VERSION_PROCESSING,
    CATALOG_VERSION_READY,
    CATALOG_VERSION_FAILED,
    CATALOG_VERSION_REMOVED, /* a tombstone: an admin removed it */
} catalog_version_status_t;

typedef struct {
    catalog_str_t name;        /* "a128" */
    int64_t bandwidth;         /* peak bits/s (HLS BANDWIDTH); -1 unknown */
    int64_t average_bandwidth; /* bits/s (HLS AVERAGE-BANDWIDTH); -1 unknown */
    catalog_str_t codecs;      /* RFC 6381 codecs; null unknown */
} catalog_rung_t;

typedef struct {
    catalog_str_t version; /* the transcode actor's version id */
    catalog_version_status_t status;
    catalog_str_t reason;                  /* why it failed; null unless failed */
    char created_at[CATALOG_TIME_MAX + 1]; /* when its first event reached the bus */
    /* Loudness of a ready version; NaN unknown. */
    double integrated_lufs, true_peak_dbtp, lra_lu, gain_db;
    catalog_rung_t rungs[CATALOG_AUDIO_RUNGS_MAX];
    size_t n_rungs;
    bool lossless;       /* the master is lossless (audio.uploaded) */
    int64_t duration_ms; /* -1 unknown */
} catalog_version_t;

typedef struct {
    catalog_version_t items[CATALOG_AUDIO_VERSIONS_MAX]; /* oldest first */
    size_t n;
} catalog_versions_t;

/*  One event of the transcode actor, read. */
typedef enum {
    CATALOG_EVENT_UPLOADED,
    CATALOG_EVENT_READY,
    CATALOG_EVENT_FAILED,
} catalog_audio_event_kind_t;

typedef struct {
    catalog_audio_event_kind_t kind;
    catalog_str_t track_id;
    catalog_version_t v; /* what the event says of the version */
    bool has_lossless;   /* the event said whether the master is lossless */
} catalog_audio_event_t;

/*  True when `s` (len bytes) can be a version id: 1..CATALOG_VERSION_MAX
    bytes of A-Z a-z 0-9 _ - . not starting with '.', so that it is one
    safe segment of a media URL path. */
bool catalog_version_valid(const char *s, size_t len);

/*  Empties *list. */
void catalog_versions_init(catalog_versions_t *list);

/*  Reads a stored list (the map catalog_versions_pack() writes) into the
    struct, which borrows from `o`. Returns false when `o` is not one. */
bool catalog_versions_decode(const msgpack_object *o, catalog_versions_t *list);

/*  Packs the stored form: {"versions": [version...]} oldest first,
    tombstones included. */
void catalog_versions_pack(msgpack_packer *pk, const catalog_versions_t *list);

/*  Packs the admins' answer: {track_id, current, versions} with versions
    newest first and no tombstones; each {version, status, reason,
    created_at, loudness {integrated_lufs, true_peak_dbtp, lra_lu,
    gain_db} or nil, rungs, lossless, duration_ms, current}. */
void catalog_versions_pack_answer(msgpack_packer *pk, catalog_str_t track_id,
                                  const catalog_versions_t *list);

/*  Reads the data of an event of `topic` (topic_len bytes) into *ev,
    which borrows from `data`. Returns 0, or MB_EINVAL with *why set to a
    static reason (not an audio topic, not a map, no track_id or version,
    a field of the wrong type). */
int catalog_audio_event_read(const char *topic, size_t topic_len, const msgpack_object *data,
                             catalog_audio_event_t *ev, const char **why);

/*  Applies *ev to *list; `created_at` (RFC 3339) dates a version the
    event creates. *list then borrows from *ev as well. Returns 0 (whether
    or not anything changed: compare the packed forms to tell), or
    MB_EINVAL with *why when the event would make a version beyond
    CATALOG_AUDIO_VERSIONS_MAX (tombstones, then the oldest failed
    versions, make room first). */
int catalog_versions_apply(catalog_versions_t *list, const catalog_audio_event_t *ev,
                           const char *created_at, const char **why);

/*  Finds `version` among the versions that are not tombstones; returns
    its index or -1. */
int catalog_versions_find(const catalog_versions_t *list, catalog_str_t version);

/*  The current version: the index of the newest ready one, or -1. */
int catalog_versions_current(const catalog_versions_t *list);

/*  Derives the track's audio object from the list: ready with the
    current version's figures when there is one; else processing when a
    version is processing; else failed (with the newest failure's reason)
    when one failed; else none. *audio borrows from *list. */
void catalog_versions_summary(const catalog_versions_t *list, catalog_audio_t *audio);

/*  The gain that brings a track to -14 LUFS without its true peak going
    over -1 dBTP: min(-14 - I, -1 - TP); NaN when either is unknown. Used
    only when the transcode actor did not send gain_db itself. */
double catalog_gain_db(double integrated_lufs, double true_peak_dbtp);

#endif
