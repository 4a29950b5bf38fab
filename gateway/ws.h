/*  ws — GET /v1/me/events: real-time notifications over WebSocket
    (RFC 6455), fed from the bus's event streams.

        gw_ws_config_t cfg;
        gw_ws_config_default (&cfg);              // MUSICBUS_WS_* or defaults
        cfg.bus = "tcp://127.0.0.1:5555";
        gw_ws_t *ws = gw_ws_new (&cfg, auth);     // auth: the gateway's checker
        ... add gw_ws_fd (ws) to the event loop (readable: call gw_ws_run) ...
        ... the route's handler: gw_ws_handshake () -> queue hs.response ...
        ... every loop: if fired or gw_ws_due (ws, now) -> gw_ws_run (ws) ...
        gw_ws_stop (ws);                          // SIGTERM: 1001 to everyone
        gw_ws_destroy (&ws);

    Handshake (gw_ws_handshake): a GET with Upgrade: websocket,
    Connection: upgrade, Sec-WebSocket-Version: 13 (else 426 naming 13)
    and a Sec-WebSocket-Key of 16 bytes in base64 (else 400); the access
    token in `Authorization: Bearer` or, for browsers (which cannot set
    headers on a WebSocket), in the `access_token` query parameter,
    checked exactly as on the HTTP routes (gateway/auth.h: 401/503);
    `since` (optional) the last seq the client saw. The 101 carries
    Sec-WebSocket-Accept = base64(SHA-1(key + RFC 6455's GUID)); SHA-1 is
    GnuTLS's (gnutls_hash_fast: GnuTLS is in the process already through
    libmicrohttpd), base64 libsodium's.

    After the 101, libmicrohttpd hands over the socket; the connection is
    taken out of libmicrohttpd at once (a dup of the socket, then
    MHD_UPGRADE_ACTION_CLOSE: for a plain-TCP upgraded connection
    libmicrohttpd only close()s its descriptor, so the TCP connection lives
    on in ours) and its 32 KiB memory pool is freed. The socket then sits
    in this module's own epoll set, nested in the gateway's loop.

    Framing is libwslay's (Debian libwslay-dev, the event API). A wslay
    context costs ~8.5 KiB (two 4 KiB buffers), so an idle connection has
    none: it is made when there is something to read or send and freed
    when the connection is quiet again (no partial frame either way,
    which the frame callbacks let us count exactly: wslay enforces
    minimal length encodings and masked client frames, so a frame is
    2 + 0/2/8 + 4 header bytes plus its payload). An idle connection
    costs ~200 bytes here plus the kernel's socket.

    Per connection: frames are JSON text (notify.h); a send queue bounded
    to `queue_frames` frames and `queue_bytes` bytes (beyond what the
    kernel's socket buffer, set to GW_WS_SNDBUF, holds): a client that
    does not keep up is closed with 1008 "slow consumer" and never slows
    the others (every socket is non-blocking). A ping every `ping_ms`;
    no frame from the client for two intervals closes it (1001 "ping
    timeout"). When the access token expires (exp + leeway) the
    connection closes with 4001 "token expired": reconnect with a fresh
    token and `since`. Other close codes: 1000 after a client's close,
    1001 "going away" when the gateway stops, 1003 for binary frames,
    1009 for client messages over 1 KiB (clients have nothing to say
    but control frames), 4003 "account deleted".

    The feed: one bus.fetch long poll per gateway process (on a client
    socket of its own), topics GW_NOTIFY_TOPICS, from the head of the log
    at start. Follow lists come from the playlists actor (playlists.mine,
    with the user's own auth), once per user connected. */
#ifndef GW_WS_H
#define GW_WS_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "mb_events.h"
#include "mb_jwt.h"
#include "notify.h"

#define GW_WS_OP "events.subscribe" /* x-op of GET /v1/me/events (x-service gateway) */
#define GW_WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define GW_WS_ACCEPT_LEN 28   /* base64 of a SHA-1 */
#define GW_WS_SNDBUF 32768    /* kernel send buffer of a WebSocket (the kernel doubles it) */
#define GW_WS_MSG_MAX 1024    /* largest client message accepted */
#define GW_WS_CLOSE_WAIT_MS 2000 /* after our close frame, the client's gets this long */

typedef struct gw_ws gw_ws_t;

typedef struct {
    const char *bus;     /* broker endpoint for the feed; NULL: no feed (tests) */
    int ping_ms;         /* MUSICBUS_WS_PING_MS, 30000 */
    size_t queue_frames; /* MUSICBUS_WS_QUEUE_FRAMES, 64 */
    size_t queue_bytes;  /* MUSICBUS_WS_QUEUE_BYTES, 262144 */
    size_t ring_events;  /* MUSICBUS_WS_RING, 10000 frames kept for resuming */
    size_t ring_bytes;   /* MUSICBUS_WS_RING_BYTES, 16 MiB */
    size_t max_conns;    /* MUSICBUS_WS_MAX, 20000 WebSockets per process */
    size_t max_per_user; /* MUSICBUS_WS_MAX_PER_USER, 16 */
    size_t follows_max;  /* MUSICBUS_WS_FOLLOWS_MAX, 1000 playlists per user */
    int fetch_wait_ms;   /* long poll of the feed, 25000 */
    int timeout_ms;      /* bus requests' deadline besides the wait, 5000 */
    int leeway_s;        /* JWT leeway on exp (MUSICBUS_JWT_LEEWAY, 30) */
} gw_ws_config_t;

/*  Fills *cfg with the defaults above, each replaced by its MUSICBUS_WS_*
    variable when set and valid; cfg->bus is NULL. */
void gw_ws_config_default(gw_ws_config_t *cfg);

/*  Makes the module with its epoll set and, when cfg->bus is set, its bus
    socket; raises RLIMIT_NOFILE's soft limit for max_conns sockets when
    the hard limit allows. `auth` is borrowed (the gateway's checker) and
    must outlive it. Returns NULL when the bus endpoint is invalid or
    epoll cannot be had (logged). */
gw_ws_t *gw_ws_new(const gw_ws_config_t *cfg, gw_auth_t *auth);

/*  Closes every connection at once (no close frames: call gw_ws_stop()
    first for those) and frees everything; nulls *self_p. Safe twice. */
void gw_ws_destroy(gw_ws_t **self_p);

/*  The module's epoll descriptor: readable when a socket needs it. */
int gw_ws_fd(const gw_ws_t *self);

/*  What gw_ws_handshake() decided. */
typedef struct {
    int status;                    /* 101, or the refusal's status */
    struct MHD_Response *response; /* queue it with `status`; NULL when out of memory */
    bool authed;                   /* claims hold a verified token */
    mb_jwt_claims_t claims;
} gw_ws_handshake_t;

/*  Checks the upgrade request on `conn` at `now` (Unix seconds) and builds
    the answer: the 101 upgrade response (the upgrade itself happens when
    libmicrohttpd has sent it) or a problem document (400, 401, 426 with
    Sec-WebSocket-Version: 13, 429 when the user has max_per_user
    connections, 503 when the process has max_conns or no JWT secret).
    Returns hs->status. The caller queues hs->response, or destroys it. */
int gw_ws_handshake(gw_ws_t *self, struct MHD_Connection *conn, int64_t now,
                    gw_ws_handshake_t *hs);

/*  Writes Sec-WebSocket-Accept for `key` (its header value) into
    out[GW_WS_ACCEPT_LEN + 1]. Returns 0, or MB_EINVAL when `key` is not
    base64 of 16 bytes. */
int gw_ws_accept_key(const char *key, char *out);

/*  Takes a connected, upgraded socket (the module owns it from now on,
    and closes it) for the holder of `claims`, resuming after `since`
    when `has_since`. `extra` (extra_len bytes, may be NULL) is what the
    client sent past the handshake. The upgrade handler calls it; tests
    call it with one end of a socket pair. Returns 0, or MB_EFULL when the
    process is at max_conns (the socket is closed). */
int gw_ws_adopt(gw_ws_t *self, int fd, const mb_jwt_claims_t *claims, bool has_since,
                uint64_t since, const void *extra, size_t extra_len);

/*  Reads the sockets that are ready, the feed and the timers; sends what
    is due. Never blocks. */
void gw_ws_run(gw_ws_t *self);

/*  Milliseconds (monotonic clock, as the gateway's) at which gw_ws_run()
    is due even if the fd stays quiet; INT64_MAX when never. */
int64_t gw_ws_due_ms(const gw_ws_t *self);

/*  True (once) when upgraded connections were handed back to
    libmicrohttpd since the last call: with an external event loop it
    has no way to wake itself, so call MHD_run() once more. */
bool gw_ws_mhd_pending(gw_ws_t *self);

/*  Closes every connection with 1001 "going away" (the clients' close
    frames get GW_WS_CLOSE_WAIT_MS) and stops the feed; new handshakes
    get 503. */
void gw_ws_stop(gw_ws_t *self);

/*  Open WebSocket connections. */
size_t gw_ws_size(const gw_ws_t *self);

/*  The registry (tests feed it events directly). Borrowed. */
gw_notify_t *gw_ws_notify(gw_ws_t *self);

/*  Counters. */
typedef struct {
    size_t conns;             /* open */
    size_t with_context;      /* of those, holding a wslay context now */
    uint64_t accepted;        /* connections adopted */
    uint64_t closed_slow;     /* closed as slow consumers */
    uint64_t closed_ping;     /* closed for not answering pings */
    uint64_t closed_expired;  /* closed when their token expired */
    uint64_t feed_batches;    /* bus.fetch answers with events */
    uint64_t feed_errors;     /* failed or timed-out fetches */
    uint64_t follows_loaded;  /* follow lists loaded */
    uint64_t follows_failed;  /* follow lists that could not be loaded */
} gw_ws_stats_t;

void gw_ws_stats(const gw_ws_t *self, gw_ws_stats_t *stats);

#endif
