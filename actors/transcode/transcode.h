/*  transcode — the transcode actor: audio masters into HLS ladders, with
    loudness. Ops, events, key layout and contracts: actors/transcode/README.md. */
#ifndef TRANSCODE_H
#define TRANSCODE_H

#include "mb_actor.h"
#include "mb_blob.h"
#include "transcode_jobs.h"
#include "transcode_store.h"

/*  The actor's definition (service "transcode", ops, LMDB hooks, the
    consumer group), for main() and for tests. Static; never NULL. */
const mb_actor_def_t *transcode_actor_def(void);

/*  What the open hook makes (the handlers' and consumer's state), for
    tests that run jobs by hand: MUSICBUS_TRANSCODE_JOBS=0 starts no job
    thread. */
typedef struct {
    transcode_store_t *store;
    mb_blob_store_t *blobs; /* $MUSICBUS_DATA/blobs */
    transcode_jobs_t *jobs;
} transcode_state_t;

#endif
