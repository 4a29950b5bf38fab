/*  stats — the stats actor: play reports, listening history, top lists,
    charts, per-track statistics and royalty reports, from the play events
    it consumes. Ops, replies, errors and key layout: actors/stats/README.md. */
#ifndef STATS_H
#define STATS_H

#include "mb_actor.h"

/*  The actor's definition (service "stats", its op table, its consumer
    group and LMDB hooks), for main() and for tests that drive the
    handlers through mb_actor_dispatch(). Static; never NULL. */
const mb_actor_def_t *stats_actor_def(void);

/*  The consumer group's apply function (topics play, catalog.track and
    users.user), for tests that feed it events without a bus. `state` is
    what the open hook made. */
int stats_apply(MDB_txn *txn, const mb_event_t *event, void *state);

#endif
