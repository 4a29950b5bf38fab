/*  transcode_events — the events the transcode actor publishes (through
    the outbox) and the ones it consumes. Payloads: README.md.

      audio.uploaded          a new version was ingested (its job is queued)
      audio.ready             its renditions are visible; loudness and rungs
      audio.failed            the master does not decode, or every attempt
                              failed
      audio.version_removed   consumed: the catalog removed a version (an
                              admin, or the track was deleted); its files go

    Every event is keyed by the version id. */
#ifndef TRANSCODE_EVENTS_H
#define TRANSCODE_EVENTS_H

#include <msgpack.h>

#include "transcode_store.h"

#define TRANSCODE_TOPIC_UPLOADED "audio.uploaded"
#define TRANSCODE_TOPIC_READY "audio.ready"
#define TRANSCODE_TOPIC_FAILED "audio.failed"
#define TRANSCODE_TOPIC_REMOVED "audio.version_removed"

/*  {track_id, version, master, size, format, codec, sample_rate, channels,
     bits, duration_ms, lossless} */
void transcode_event_uploaded(msgpack_packer *pk, const transcode_version_t *v);

/*  {track_id, version, duration_ms, lossless, loudness {integrated_lufs,
     true_peak_dbtp, lra_lu, gain_db}, rungs [{name, bandwidth,
     average_bandwidth, codecs}]} */
void transcode_event_ready(msgpack_packer *pk, const transcode_version_t *v);

/*  {track_id, version, reason} */
void transcode_event_failed(msgpack_packer *pk, const transcode_version_t *v);

/*  Adds the event `topic` for `v` to the outbox in `txn`. Returns 0 or
    the error of mb_outbox_add() (the caller aborts). */
int transcode_event_add(MDB_txn *txn, const char *topic, const transcode_version_t *v);

/*  Reads an audio.uploaded event's data into *v (status queued). Returns
    0, or MB_EINVAL with *why a static reason. */
int transcode_event_read_uploaded(const msgpack_object *data, transcode_version_t *v,
                                  const char **why);

#endif
