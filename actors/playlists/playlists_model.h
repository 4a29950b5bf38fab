/*  playlists_model — the playlist record and the rules of what clients
    send: ids, names, descriptions, track URIs, snapshot ids and the
    If-Match precondition; the stored msgpack form of a playlist and the
    form answered to clients.

    A playlist record owns its strings (fixed arrays), so it stays valid
    whatever happens to the buffers it was read from: handlers load it,
    change it and write it back inside one write transaction.

    The rules are the ones actors/playlists/openapi-paths.json states; the
    gateway checks them first, the actor checks them again because the bus
    has other clients. A rule broken is answered with 400 "invalid" and
    the field at fault ("body.uris[3]"). */
#ifndef PLAYLISTS_MODEL_H
#define PLAYLISTS_MODEL_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mb_actor.h"

#define PLAYLISTS_ID_MAX 64             /* bytes of any id (user, track, playlist, ...) */
#define PLAYLISTS_NAME_MAX 100          /* characters of a playlist's name */
#define PLAYLISTS_DESCRIPTION_MAX 300   /* characters of its description */
#define PLAYLISTS_UTF8_MAX 4            /* bytes per character at most */
#define PLAYLISTS_COLLABORATORS_MAX 100 /* collaborators of one playlist */
#define PLAYLISTS_BATCH_MAX 50          /* ids per library or collaborator request */
#define PLAYLISTS_ITEMS_MAX 10000       /* items of one playlist */
#define PLAYLISTS_ADD_MAX 100           /* tracks per add or remove request */
#define PLAYLISTS_SNAPSHOT_LEN 16       /* characters of a snapshot id */
#define PLAYLISTS_IF_MATCH_MAX 1024     /* bytes of an If-Match header we look at */
#define PLAYLISTS_TIME_MAX 31           /* room for an RFC 3339 timestamp */
#define PLAYLISTS_TRACK_URI_PREFIX "musicbus:track:"

/*  A string borrowed from elsewhere; ptr NULL means null (absent). */
typedef struct {
    const char *ptr;
    size_t len;
} playlists_str_t;

/*  A playlist as stored. Strings are NUL-terminated copies. */
typedef struct {
    char id[PLAYLISTS_ID_MAX + 1];
    char name[PLAYLISTS_NAME_MAX * PLAYLISTS_UTF8_MAX + 1];
    char description[PLAYLISTS_DESCRIPTION_MAX * PLAYLISTS_UTF8_MAX + 1];
    bool has_description; /* false: null */
    bool public_;         /* readable and followable by every user */
    bool collaborative;   /* collaborators may edit (and read) */
    char owner[PLAYLISTS_ID_MAX + 1];
    char collaborators[PLAYLISTS_COLLABORATORS_MAX][PLAYLISTS_ID_MAX + 1];
    size_t n_collaborators;
    uint64_t version; /* 1 at creation, +1 per change */
    char snapshot_id[PLAYLISTS_SNAPSHOT_LEN + 1];
    uint64_t items_total; /* items in the playlist */
    char created_at[PLAYLISTS_TIME_MAX + 1];
    char updated_at[PLAYLISTS_TIME_MAX + 1];
} playlists_playlist_t;

/* ---- ids and arguments ------------------------------------------------ */

/*  True when `s` (len bytes) is an id: 1..PLAYLISTS_ID_MAX bytes of
    A-Z a-z 0-9 and . _ - ~ (the ids musicbus makes are 22 base62
    characters; the wider set leaves room for imported ones). Keys and
    event keys are built from ids, so nothing else is accepted. */
bool playlists_id_valid(const char *s, size_t len);

/*  Reads `o` as an id into *out (borrowed from `o`). Returns true, or
    false after answering `call` with 400 "invalid" naming `field`. */
bool playlists_id_arg(mb_call_t *call, const msgpack_object *o, const char *field,
                      playlists_str_t *out);

/*  Reads a track reference: "musicbus:track:<id>" when `uri` is true,
    else a bare id. Sets *id (borrowed from `o`). Returns false when it
    is neither (nothing answered). */
bool playlists_track_ref(const msgpack_object *o, bool uri, playlists_str_t *id);

/*  True when `s` is valid UTF-8 without control characters (U+0000..
    U+001F, U+007F) and has 1..max_chars (min_chars 0 allows empty)
    characters. */
bool playlists_text_valid(const char *s, size_t len, size_t min_chars, size_t max_chars);

/* ---- the record --------------------------------------------------------- */

/*  Fills *p for a new playlist of `owner` with the defaults of a create
    (public, not collaborative, no description, version 1, a fresh
    snapshot id, created_at = updated_at = now). The id is left empty. */
void playlists_playlist_init(playlists_playlist_t *p, playlists_str_t owner);

/*  Applies body fields name, description, public and collaborative (a
    POST when `create`, then name is required; else a PATCH) to *p.
    Returns true with *changed telling whether any value differs from
    before, or false after answering `call` with 400 naming the field
    (body, body.name, body.<unknown>...). On false *p may be half
    changed: discard it. */
bool playlists_playlist_apply(mb_call_t *call, const msgpack_object *body, playlists_playlist_t *p,
                              bool create, bool *changed);

/*  Moves *p to its next version: version + 1, a new snapshot id,
    updated_at = now. */
void playlists_playlist_bump(playlists_playlist_t *p);

/*  Index of `user` among the collaborators, or -1. */
int playlists_collaborator_index(const playlists_playlist_t *p, playlists_str_t user);

/*  True when `user` may read the playlist: the owner, anyone when it is
    public, a collaborator while it is collaborative. */
bool playlists_can_read(const playlists_playlist_t *p, playlists_str_t user);

/*  True when `user` may change its items: the owner, or a collaborator
    while it is collaborative. */
bool playlists_can_edit(const playlists_playlist_t *p, playlists_str_t user);

/*  True when `user` is the owner. */
bool playlists_is_owner(const playlists_playlist_t *p, playlists_str_t user);

/*  Packs the stored form: a map of every field above. */
void playlists_playlist_pack(msgpack_packer *pk, const playlists_playlist_t *p);

/*  Reads the stored form into *p. Returns false when `o` is not a stored
    playlist (a corrupt or foreign value). */
bool playlists_playlist_decode(const msgpack_object *o, playlists_playlist_t *p);

/*  Packs the playlist as answered: id, name, description, public,
    collaborative, owner, collaborators, followers, items_total,
    snapshot_id, created_at, updated_at, plus `extra` more key/value
    pairs the caller packs after (the first items page). */
void playlists_playlist_pack_public(msgpack_packer *pk, const playlists_playlist_t *p,
                                    size_t followers, uint32_t extra);

/*  Packs the users to notify about a change: the owner and, when
    collaborative, the collaborators, of *p and (when not NULL) of *old,
    once each, as an array of strings. */
void playlists_pack_audience(msgpack_packer *pk, const playlists_playlist_t *p,
                             const playlists_playlist_t *old);

/* ---- snapshot ids and If-Match --------------------------------------------- */

/*  Writes the snapshot id of `version` into out: 6 base62 digits of the
    version (most significant first, so ids of one playlist sort in
    version order) and 10 random base62 characters, then a NUL. */
void playlists_snapshot_make(uint64_t version, char out[PLAYLISTS_SNAPSHOT_LEN + 1]);

/*  True when If-Match value `header` (len bytes) is satisfied by a
    playlist whose current snapshot id is `snapshot`: "*", or a
    comma-separated list of snapshot ids, each optionally in double
    quotes (an ETag) with surrounding blanks, one of which equals it.
    Weak tags (W/"...") never match: If-Match compares strongly
    (RFC 9110 13.1.1). */
bool playlists_if_match(const char *header, size_t len, const char *snapshot);

/* ---- time ------------------------------------------------------------------- */

/*  Milliseconds since the Unix epoch, now. */
int64_t playlists_now_ms(void);

/*  Writes `ms` as RFC 3339 UTC with milliseconds
    ("2026-11-28T02:10:00.123Z") into out. */
void playlists_time_format(int64_t ms, char out[PLAYLISTS_TIME_MAX + 1]);

/*  Packs one string of `len` bytes as the msgpack str for `s`. */
void playlists_pack_str(msgpack_packer *pk, playlists_str_t s);

#endif
