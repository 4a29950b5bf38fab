/*  playlists — the playlists actor: playlists with ordered items and a
    snapshot id per version, followers and collaborators, and each user's
    library (liked tracks, saved albums, followed artists). Ops, replies,
    errors, events and key layout: actors/playlists/README.md. */
#ifndef PLAYLISTS_H
#define PLAYLISTS_H

#include "mb_actor.h"

/*  The actor's definition (service "playlists", its op table, its
    consumer group of catalog events and LMDB hooks), for main() and for
    tests that drive the handlers through mb_actor_dispatch(). Static;
    never NULL. */
const mb_actor_def_t *playlists_actor_def(void);

/*  The consumer group's apply function (topics catalog.track,
    catalog.album, catalog.artist), for tests that feed it events
    without a bus. `state` is what the open hook made. */
int playlists_apply(MDB_txn *txn, const mb_event_t *event, void *state);

/* ---- library handlers (playlists_library.c) ------------------------------ */

void playlists_handle_tracks_save(mb_call_t *call);
void playlists_handle_tracks_remove(mb_call_t *call);
void playlists_handle_tracks_list(mb_call_t *call);
void playlists_handle_tracks_contains(mb_call_t *call);
void playlists_handle_albums_save(mb_call_t *call);
void playlists_handle_albums_remove(mb_call_t *call);
void playlists_handle_albums_list(mb_call_t *call);
void playlists_handle_albums_contains(mb_call_t *call);
void playlists_handle_following_add(mb_call_t *call);
void playlists_handle_following_remove(mb_call_t *call);
void playlists_handle_following_list(mb_call_t *call);
void playlists_handle_following_contains(mb_call_t *call);

#endif
