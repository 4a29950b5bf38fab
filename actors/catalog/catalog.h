/*  catalog — the catalog actor: artists, albums and tracks, and what
    listeners can play of them. Ops, events, replies, errors and key
    layout: actors/catalog/README.md. */
#ifndef CATALOG_H
#define CATALOG_H

#include "mb_actor.h"
#include "mb_events.h"

/*  The actor's definition (service "catalog", its op table and LMDB
    hooks), for main() and for tests that drive the handlers through
    mb_actor_dispatch(). Static; never NULL. */
const mb_actor_def_t *catalog_actor_def(void);

/*  Makes the open hook read the media secret from file `path` (the
    --media-secret-file flag) when MUSICBUS_MEDIA_SECRET is not set
    (mb_media_key_load()); NULL goes back to MUSICBUS_MEDIA_SECRET_FILE.
    Without any secret the actor starts and track.stream answers 503.
    `path` is borrowed. */
void catalog_set_media_secret_file(const char *path);

/*  The apply function of consumer group "catalog-audio" (mb_consumer_def_t):
    applies one audio.uploaded, audio.ready or audio.failed event to the
    track's versions in `txn`, and when the track's audio object changes
    stores it and adds catalog.track "updated" to the outbox in `txn`.
    Returns 0 (applied, or ignored: the track does not exist); MB_EINVAL
    for a malformed event (skipped); a negative code for a transient
    failure (retried). `state` is what the actor's open hook made. */
int catalog_audio_apply(MDB_txn *txn, const mb_event_t *event, void *state);

#endif
