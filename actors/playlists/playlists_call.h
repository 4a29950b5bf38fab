/*  playlists_call — what every handler of the playlists actor does with
    its call: the caller's identity, transactions, integer and id-list
    arguments, paging objects and outbox events. Each function that can
    fail answers the call itself and returns false (or NULL), so a
    handler just returns. */
#ifndef PLAYLISTS_CALL_H
#define PLAYLISTS_CALL_H

#include <lmdb.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mb_actor.h"
#include "playlists_model.h"
#include "playlists_store.h"

#define PLAYLISTS_PAGE_DEFAULT 20
#define PLAYLISTS_PAGE_MAX 50        /* playlists and library listings */
#define PLAYLISTS_ITEMS_PAGE_MAX 100 /* a playlist's items, as Spotify */
#define PLAYLISTS_OFFSET_MAX 100000
#define PLAYLISTS_LINK_MAX 256

/*  The store the open hook made. */
playlists_store_t *playlists_call_store(mb_call_t *call);

/*  Reads the caller's user id from the request's auth map into *user
    (borrowed from the request). False after answering 401
    "unauthenticated" when there is none or it is not an id. */
bool playlists_call_user(mb_call_t *call, playlists_str_t *user);

/*  Reads integer argument `name`, `fallback` when absent. False after
    answering 400 when it is not an integer in [min, max]. */
bool playlists_call_int(mb_call_t *call, const char *name, int64_t min, int64_t max,
                        int64_t fallback, int64_t *out);

/*  Reads limit (1..max_limit, default PLAYLISTS_PAGE_DEFAULT) and offset
    (0..PLAYLISTS_OFFSET_MAX, default 0). */
bool playlists_call_paging(mb_call_t *call, size_t max_limit, size_t *limit, size_t *offset);

/*  Reads a list of 1..PLAYLISTS_BATCH_MAX ids: args.ids (the query
    parameter) when present, else args.body.ids. out has room for
    PLAYLISTS_BATCH_MAX; *field is set to "ids" or "body.ids" for later
    errors about one of them. False after answering 400. */
bool playlists_call_ids(mb_call_t *call, playlists_str_t *out, size_t *n, const char **field);

/*  Packs the tail of a paging object: limit, offset, total, next and
    previous (relative links `base` + "?offset=N&limit=N", or "&..." when
    base already has a query; nil at either end). The caller packed a map
    of 6 and "items" before. */
void playlists_call_pack_paging(msgpack_packer *pk, const char *base, size_t limit, size_t offset,
                                size_t total);

/*  Adds one event (data: the buffer's msgpack) to the outbox in `txn`.
    False after answering and aborting `txn`. */
bool playlists_call_event(mb_call_t *call, MDB_txn *txn, const char *topic, playlists_str_t key,
                          const msgpack_sbuffer *data);

/*  Commits `txn`; false after answering the LMDB error. Handlers pack
    their reply before committing: a failed commit replaces it. */
bool playlists_call_commit(mb_call_t *call, MDB_txn *txn);

#endif
