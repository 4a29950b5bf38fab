/*  notify — who hears about which bus event, over the gateway's
    WebSockets (ws.c).

    The gateway reads four event streams from the broker (ws.c: one
    bus.fetch long poll per process) and hands each event here:

      playlists.playlist  {action, id, owner, public, audience, ...}
                          -> every user in `audience` (owner and
                             collaborators, before and after the change),
                             and the users following the playlist
      playlists.library   {user, kind, action, ids}  -> `user`
      playlists.follow    {action, playlist, user, ...} -> `user` (and the
                             follower index below changes)
      users.user          {action, id, user}          -> `id`

    Each event becomes one JSON text frame, the same bytes for every
    recipient:

        {"seq":1234,"topic":"playlists.playlist","type":"changed","data":{...}}

    `seq` is the event's sequence number on the bus (the same in every
    gateway process), `type` its action, `data` its data (less
    `audience`, which is routing). Followers of a playlist that is not
    public get only {"id","public":false} in `data`: they cannot read it.

    Subscribers (one per WebSocket) are registered by user id. The
    events name the owner and collaborators but never the followers, so
    notify keeps a follower index for the users connected here: the
    playlists each of them follows, loaded once when the user's first
    connection arrives (ws.c asks the playlists actor: gw_notify_attach()
    says when) and kept current by playlists.follow events afterwards.
    Until the list is in, the user's subscribers wait; then they replay
    from the ring what arrived meanwhile, so nothing is lost.

    Resuming: the last `ring_events` frames (at most `ring_bytes` bytes)
    are kept. A client that reconnects with `since` (the last seq it saw)
    gets its missed frames again when the ring still covers since+1,
    else {"type":"resync","seq":S} first (refetch what you show, then
    carry on from S). Every subscriber, once live, gets
    {"type":"ready","seq":S}: S is the newest seq this gateway has read,
    what to send as `since` next time when nothing newer arrived.

    Not thread-safe; no I/O: frames leave through the deliver callback. */
#ifndef GW_NOTIFY_H
#define GW_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mb_events.h"

#define GW_NOTIFY_TOPICS                                                                           \
    {                                                                                              \
        "playlists.playlist", "playlists.library", "playlists.follow", "users.user", NULL          \
    }

typedef struct gw_notify gw_notify_t;
typedef struct gw_notify_sub gw_notify_sub_t;

/*  One subscriber, embedded in the caller's connection struct. The fields
    are notify's; the caller zeroes it before gw_notify_attach(). */
struct gw_notify_sub {
    void *user;                   /* notify's record of the user */
    gw_notify_sub_t *prev, *next; /* the user's subscribers */
    uint64_t from;                /* frames below this seq are not sent */
    bool resume;                  /* the client asked to resume (since) */
    bool live;                    /* frames flow (else waiting for the follow list) */
};

/*  Sends one text frame to `sub`. Returns 0, or a negative code when the
    subscriber cannot take it (its queue is full, it is closing): notify
    sends it nothing more in the loop at hand (replay stops). The callee
    must not attach or detach anything from inside: it marks the
    connection and detaches it once the call returned. */
typedef int(gw_notify_deliver_fn)(gw_notify_sub_t *sub, const char *text, size_t len, void *cls);

/*  The account of `sub`'s user was deleted (users.user "deleted"): its
    last frame has been delivered; the callee closes the connection
    (later: the same rule as for deliver applies). */
typedef void(gw_notify_gone_fn)(gw_notify_sub_t *sub, void *cls);

typedef struct {
    size_t ring_events;  /* frames kept for resuming, >= 1 */
    size_t ring_bytes;   /* and at most this many bytes of them */
    size_t follows_max;  /* playlists remembered per user; more are ignored */
    size_t replay_max;   /* a resume needing more frames than this gets resync */
    gw_notify_deliver_fn *deliver;
    gw_notify_gone_fn *gone; /* may be NULL */
    void *cls;               /* for both callbacks */
} gw_notify_config_t;

/*  What gw_notify_attach() asks of the caller. */
enum {
    GW_NOTIFY_LIVE = 0, /* the subscriber is live (replay and ready sent) */
    GW_NOTIFY_WAIT = 1, /* waiting: the user's follow list is being loaded */
    GW_NOTIFY_LOAD = 2  /* waiting: load the user's follow list, then call gw_notify_follows() */
};

/*  Counters, for logs and tests. */
typedef struct {
    size_t users;          /* users with at least one subscriber */
    size_t subs;           /* subscribers */
    size_t playlists;      /* playlists in the follower index */
    size_t ring;           /* frames in the ring */
    size_t ring_bytes;     /* their bytes */
    uint64_t covered_from; /* every frame from this seq on is in the ring */
    uint64_t last_seq;     /* the newest seq read (0: none yet) */
    uint64_t events;       /* events handled */
    uint64_t skipped;      /* events malformed for their topic, skipped */
    uint64_t frames;       /* frames delivered */
    uint64_t resyncs;      /* resync frames sent */
} gw_notify_stats_t;

/*  Makes the registry. `cfg` is copied. Never NULL. */
gw_notify_t *gw_notify_new(const gw_notify_config_t *cfg);

/*  Frees it and everything it holds (subscribers stay the caller's);
    nulls *self_p. Safe to call twice. */
void gw_notify_destroy(gw_notify_t **self_p);

/*  The feed starts (or starts again) reading at `from`: the ring is
    emptied and covers `from` on; last_seq becomes from - 1. With `tell`,
    every live subscriber gets a resync frame (events may have been
    missed: the broker lost its log, or kept less than we needed). */
void gw_notify_reset(gw_notify_t *self, uint64_t from, bool tell);

/*  Every event below `next` has been handed over: last_seq = next - 1
    (when that is newer). */
void gw_notify_advance(gw_notify_t *self, uint64_t next);

/*  Handles one event from the feed (of any of the four topics, in seq
    order): adds its frame to the ring and delivers it to every live
    subscriber it concerns. Returns 0, or MB_EINVAL when it is malformed
    for its topic or of another topic (skipped, counted). */
int gw_notify_event(gw_notify_t *self, const mb_event_t *event);

/*  Registers `sub` (zeroed by the caller) for user `user_id`. With
    `has_since`, the client resumes after `since`; otherwise it starts
    with the next frame. Returns GW_NOTIFY_LIVE (replay and the ready
    frame delivered already), GW_NOTIFY_WAIT, or GW_NOTIFY_LOAD: then the
    caller loads the user's follow list and calls gw_notify_follows(). */
int gw_notify_attach(gw_notify_t *self, gw_notify_sub_t *sub, const char *user_id, bool has_since,
                     uint64_t since);

/*  Unregisters `sub` (nothing if it is not attached). The user's record
    goes with its last subscriber. */
void gw_notify_detach(gw_notify_t *self, gw_notify_sub_t *sub);

/*  The follow list of `user_id` arrived (`ok`, `n` playlist ids) or could
    not be had (!ok: the user gets owner/collaborator/library/account
    frames only, and the next attach asks again). Follow events seen
    meanwhile are applied on top. Waiting subscribers go live (replay,
    ready). Nothing happens when the user has no subscriber any more. */
void gw_notify_follows(gw_notify_t *self, const char *user_id, const char *const *ids, size_t n,
                       bool ok);

/*  Subscribers of `user_id` attached now. */
size_t gw_notify_user_subs(const gw_notify_t *self, const char *user_id);

/*  True when `user_id` is connected here and follows playlist `pid`. */
bool gw_notify_follows_playlist(gw_notify_t *self, const char *user_id, const char *pid);

void gw_notify_stats(const gw_notify_t *self, gw_notify_stats_t *stats);

#endif
