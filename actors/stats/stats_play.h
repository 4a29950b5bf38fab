/*  stats_play — the play event: what one playback of a track is, the
    rules it obeys, its msgpack form on the bus (topic "play") and its
    dedupe key.

        data = {"user": str, "track": str, "started_at": uint (ms since the epoch),
                "ms_played": uint, "context": {"type": str, "id": str|nil},
                "source": "client"|"import"}
        key  = "c:" user ":" client_id                       (POST /v1/me/plays)
             | "i:" user ":" listened_at ":" track           (musicbus-import-listens)

    A play counts as a STREAM when at least STATS_STREAM_MS were played
    (the industry's 30-second rule). The key is the dedupe id: the stats
    consumer counts each key once however often the event is delivered,
    so a client's retry and a re-run import count nothing twice.

    Structs borrow their strings from the decoded msgpack or the caller's
    buffers. */
#ifndef STATS_PLAY_H
#define STATS_PLAY_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STATS_TOPIC_PLAY "play"
#define STATS_TOPIC_TRACK "catalog.track"
#define STATS_TOPIC_USER "users.user"

#define STATS_ID_MAX 64                  /* bytes of a user, track, artist or album id */
#define STATS_CLIENT_ID_MAX 64           /* bytes of a client-made play id */
#define STATS_CONTEXT_ID_MAX 128         /* bytes of a context id */
#define STATS_STREAM_MS 30000            /* a play of at least this long is a stream */
#define STATS_MS_PLAYED_MAX 86400000     /* one day */
#define STATS_TIME_MIN 946684800000LL    /* 2000-01-01T00:00:00Z: no play before */
#define STATS_TIME_LIMIT 4102444800000LL /* 2100-01-01T00:00:00Z: none from then on */
#define STATS_KEY_MAX 256                /* bytes of an event key (MB_EVENT_KEY_MAX) */
#define STATS_COUNTRY_LEN 2              /* ISO 3166-1 alpha-2, capitals */

/*  A string borrowed from elsewhere; ptr NULL means absent (nil). */
typedef struct {
    const char *ptr;
    size_t len;
} stats_str_t;

typedef enum {
    STATS_CONTEXT_ALBUM,
    STATS_CONTEXT_PLAYLIST,
    STATS_CONTEXT_SEARCH,
    STATS_CONTEXT_RADIO,
    STATS_CONTEXT_OTHER,
} stats_context_t;

typedef enum { STATS_SOURCE_CLIENT, STATS_SOURCE_IMPORT } stats_source_t;

typedef struct {
    stats_str_t user;
    stats_str_t track;
    int64_t started_at; /* ms since the epoch, in [STATS_TIME_MIN, STATS_TIME_LIMIT) */
    int64_t ms_played;  /* 0..STATS_MS_PLAYED_MAX */
    stats_context_t context;
    stats_str_t context_id; /* ptr NULL when nil */
    stats_source_t source;
} stats_play_t;

/*  True when the play counts as a stream (30-second rule). */
bool stats_play_is_stream(const stats_play_t *p);

/*  Name of a context or source ("album", "import"). Static. */
const char *stats_context_name(stats_context_t c);
const char *stats_source_name(stats_source_t s);

/*  Parses a context type name; returns false for anything else. */
bool stats_context_parse(const char *s, size_t len, stats_context_t *out);

/*  True when `s` (len bytes) can be an id in stats: 1..STATS_ID_MAX bytes,
    none of them a control character or ':' (keys use ':' to separate
    fields, and erasing a user's plays finds them by the prefix "c:<user>:"). */
bool stats_id_valid(const char *s, size_t len);

/*  True when `s` is STATS_COUNTRY_LEN capitals. */
bool stats_country_valid(const char *s, size_t len);

/*  Packs the event data map of `p`. */
void stats_play_pack(msgpack_packer *pk, const stats_play_t *p);

/*  Reads event data into *p, checking every rule. Returns NULL, or a
    static reason the data is malformed ("data.ms_played must be ..."). */
const char *stats_play_decode(const msgpack_object *data, stats_play_t *p);

/*  Checks that event key `key` (len bytes) has the shape its source
    prescribes for play `p` ("c:<user>:<client id>" or
    "i:<user>:<listened_at>:<track>"). Returns NULL or a static reason. */
const char *stats_play_check_key(const char *key, size_t len, const stats_play_t *p);

/*  Writes the key of a client report into out (NUL-terminated). Returns
    its length, or 0 when it would not fit STATS_KEY_MAX. */
size_t stats_play_client_key(stats_str_t user, stats_str_t client_id, char out[STATS_KEY_MAX + 1]);

/*  Writes the key of an imported listen (listened_at in whole seconds, as
    ListenBrainz gives it). Returns its length, or 0 when too long. */
size_t stats_play_import_key(stats_str_t user, int64_t listened_at, stats_str_t track,
                             char out[STATS_KEY_MAX + 1]);

#endif
