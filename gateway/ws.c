/*  ws — WebSocket notifications: handshake, connections on libwslay,
    timers, and the bus feed. See ws.h. */
#include "ws.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "buf.h"
#include "mb_alloc.h"
#include "mb_client.h"
#include "mb_config.h"
#include "mb_envelope.h"
#include "mb_error.h"
#include "mb_log.h"
#include "mb_msgpack.h"
#include "pending.h"
#include "problem.h"

#define S_EVENTS 64              /* epoll events taken at once */
#define S_UP_KEEP_MS 120000      /* an upgrade response never used is forgotten after this */
#define S_FETCH_MAX 1000         /* events per bus.fetch */
#define S_BACKOFF_MIN_MS 100     /* the feed retries after a failure, doubling... */
#define S_BACKOFF_MAX_MS 5000    /* ...up to this */
#define S_FOLLOWS_PAGE 50        /* playlists.mine page size (the actor's maximum) */
#define S_PENDING_MAX 65536      /* bus requests in flight at once */
#define S_PLAYLISTS "playlists"  /* the service that knows who follows what */
#define S_FOLLOWS_OP "playlists.mine"

/* ---- types ---------------------------------------------------------------------- */

typedef struct s_conn s_conn_t;

/*  One WebSocket. Small on purpose: 10,000 idle ones must fit in little
    memory, so the wslay context (~8.5 KiB) is there only while busy. */
struct s_conn {
    gw_notify_sub_t sub; /* notify's; first, so a sub is its connection */
    gw_ws_t *ws;
    int fd;
    uint32_t heap_i;              /* position in ws->heap */
    wslay_event_context_ptr ctx;  /* NULL while quiet */
    int64_t due;                  /* heap key: min(next_ping, expires, close_by) */
    int64_t next_ping, last_seen; /* monotonic ms */
    int64_t expires;              /* token's exp + leeway, monotonic ms */
    int64_t close_by;             /* closing: the TCP connection goes then */
    uint64_t fed, framed;         /* bytes given to wslay, and in whole frames */
    uint64_t frame_len;           /* header + payload of the frame being read */
    uint8_t *extra;               /* client bytes past the handshake, not yet read */
    uint32_t extra_len, extra_off;
    uint16_t then_code; /* close with this once the queue is empty (0: no) */
    bool frag;          /* inside a fragmented client message */
    bool epollout;      /* EPOLLOUT is in the epoll mask */
    bool closing;       /* our close frame is queued or sent */
    bool dead;          /* on ws->dead, to be freed */
    bool in_flush;      /* on ws->flush */
    s_conn_t *next_dead, *next_flush;
};

/*  A bus request in flight: the feed's fetch or a follow list. */
enum { S_CALL_FETCH, S_CALL_FOLLOWS };

typedef struct {
    gw_pending_node_t node;
    int kind;
} s_call_t;

typedef struct {
    s_call_t call;
    mb_jwt_claims_t claims; /* the user's, sent as auth */
    size_t offset;
    char **ids;
    size_t n, cap;
} s_load_t;

/*  An upgrade response handed to libmicrohttpd, waiting for its socket. */
typedef struct s_up {
    gw_ws_t *ws;
    struct s_up *prev, *next;
    int64_t made_ms;
    mb_jwt_claims_t claims;
    bool has_since;
    uint64_t since;
} s_up_t;

struct gw_ws {
    gw_ws_config_t cfg;
    gw_auth_t *auth;
    gw_notify_t *notify;
    int epfd;
    mb_client_t *client; /* NULL without a feed */
    int bus_fd;
    s_conn_t **heap; /* every connection, earliest due first */
    size_t n, cap;
    s_conn_t *dead;  /* connections to free once nobody holds them */
    s_conn_t *flush; /* connections with frames to send */
    s_up_t *ups;     /* upgrade responses not used yet */
    gw_pending_t *pending;
    s_call_t fetch;
    bool feed_started; /* the head is known; `from` is where we read */
    uint64_t from;
    int64_t retry_at; /* 0: no retry due */
    int backoff_ms;
    bool sent; /* something was sent on the bus since it was drained */
    bool mhd_pending; /* libmicrohttpd has upgraded connections to clean up */
    bool stopping;
    uint64_t next_rid;
    msgpack_sbuffer sbuf;
    gw_ws_stats_t stats;
};

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- configuration ------------------------------------------------------------- */

void gw_ws_config_default(gw_ws_config_t *cfg)
{
    *cfg = (gw_ws_config_t){0};
    cfg->ping_ms = (int)mb_config_env_long("MUSICBUS_WS_PING_MS", 30000, 100, 3600000);
    cfg->queue_frames = (size_t)mb_config_env_long("MUSICBUS_WS_QUEUE_FRAMES", 64, 4, 100000);
    cfg->queue_bytes =
        (size_t)mb_config_env_long("MUSICBUS_WS_QUEUE_BYTES", 256 * 1024, 4096, 1L << 30);
    cfg->ring_events = (size_t)mb_config_env_long("MUSICBUS_WS_RING", 10000, 1, 10000000);
    cfg->ring_bytes =
        (size_t)mb_config_env_long("MUSICBUS_WS_RING_BYTES", 16L << 20, 4096, 1L << 34);
    cfg->max_conns = (size_t)mb_config_env_long("MUSICBUS_WS_MAX", 20000, 1, 10000000);
    cfg->max_per_user = (size_t)mb_config_env_long("MUSICBUS_WS_MAX_PER_USER", 16, 1, 100000);
    cfg->follows_max = (size_t)mb_config_env_long("MUSICBUS_WS_FOLLOWS_MAX", 1000, 0, 1000000);
    cfg->fetch_wait_ms = 25000;
    cfg->timeout_ms = 5000;
    mb_jwt_policy_t policy;
    mb_jwt_policy_default(&policy);
    cfg->leeway_s = policy.leeway_s;
}

/* ---- the timer heap ------------------------------------------------------------ */

static void s_heap_set(gw_ws_t *self, size_t i, s_conn_t *c)
{
    self->heap[i] = c;
    c->heap_i = (uint32_t)i;
}

static void s_heap_up(gw_ws_t *self, size_t i)
{
    s_conn_t *c = self->heap[i];
    while (i > 0 && self->heap[(i - 1) / 2]->due > c->due) {
        s_heap_set(self, i, self->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    s_heap_set(self, i, c);
}

static void s_heap_down(gw_ws_t *self, size_t i)
{
    s_conn_t *c = self->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        int64_t best = c->due;
        if (l < self->n && self->heap[l]->due < best)
            best = self->heap[m = l]->due;
        if (l + 1 < self->n && self->heap[l + 1]->due < best)
            m = l + 1;
        if (m == i)
            break;
        s_heap_set(self, i, self->heap[m]);
        i = m;
    }
    s_heap_set(self, i, c);
}

static void s_heap_add(gw_ws_t *self, s_conn_t *c)
{
    if (self->n == self->cap) {
        self->cap = self->cap ? self->cap * 2 : 256;
        self->heap = mb_realloc(self->heap, self->cap * sizeof *self->heap);
    }
    s_heap_set(self, self->n++, c);
    s_heap_up(self, self->n - 1);
}

static void s_heap_del(gw_ws_t *self, s_conn_t *c)
{
    size_t i = c->heap_i;
    s_conn_t *last = self->heap[--self->n];
    if (last == c)
        return;
    s_heap_set(self, i, last);
    s_heap_up(self, i);
    s_heap_down(self, last->heap_i);
}

/*  Recomputes c->due after its timers changed. */
static void s_reschedule(gw_ws_t *self, s_conn_t *c)
{
    if (c->dead)
        return;
    /* Closing, only the deadline of the closing handshake matters. */
    if (c->closing)
        c->due = c->close_by;
    else
        c->due = c->next_ping < c->expires ? c->next_ping : c->expires;
    s_heap_up(self, c->heap_i);
    s_heap_down(self, c->heap_i);
}

/* ---- connections -------------------------------------------------------------- */

static void s_kill(gw_ws_t *self, s_conn_t *c)
{
    if (c->dead)
        return;
    c->dead = true;
    s_heap_del(self, c);
    epoll_ctl(self->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->next_dead = self->dead;
    self->dead = c;
}

static void s_free(s_conn_t *c)
{
    if (c->ctx)
        wslay_event_context_free(c->ctx);
    free(c->extra);
    free(c);
}

/*  Frees the connections killed since the last sweep. Never from inside
    notify's callbacks (they may still be looking at the subscriber). */
static void s_sweep(gw_ws_t *self)
{
    while (self->dead) {
        s_conn_t *c = self->dead;
        self->dead = c->next_dead;
        gw_notify_detach(self->notify, &c->sub);
        s_free(c);
    }
}

static ssize_t s_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                         void *user)
{
    (void)flags;
    s_conn_t *c = user;
    if (c->extra) {
        size_t n = c->extra_len - c->extra_off;
        if (n > len)
            n = len;
        memcpy(buf, c->extra + c->extra_off, n);
        c->extra_off += (uint32_t)n;
        if (c->extra_off == c->extra_len) {
            free(c->extra);
            c->extra = NULL;
        }
        c->fed += n;
        return (ssize_t)n;
    }
    for (;;) {
        ssize_t n = recv(c->fd, buf, len, 0);
        if (n > 0) {
            c->fed += (uint64_t)n;
            return n;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        else
            wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE); /* EOF or reset */
        return -1;
    }
}

static ssize_t s_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                         void *user)
{
    s_conn_t *c = user;
    int f = MSG_NOSIGNAL | MSG_DONTWAIT | (flags & WSLAY_MSG_MORE ? MSG_MORE : 0);
    for (;;) {
        ssize_t n = send(c->fd, data, len, f);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        else
            wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
}

static int s_genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
    (void)ctx;
    (void)user;
    randombytes_buf(buf, len); /* servers never mask; wslay wants it all the same */
    return 0;
}

/*  Counting whole frames is what lets an idle connection drop its
    context: when every byte fed is in a whole frame, wslay holds nothing
    of the client's. wslay refuses unmasked client frames and non-minimal
    lengths, so the header's size follows from the payload's. */
static void s_frame_start_cb(wslay_event_context_ptr ctx,
                             const struct wslay_event_on_frame_recv_start_arg *arg, void *user)
{
    (void)ctx;
    s_conn_t *c = user;
    uint64_t header = 2 + 4 + (arg->payload_length >= 65536 ? 8 : arg->payload_length >= 126 ? 2 : 0);
    c->frame_len = header + arg->payload_length;
    c->last_seen = s_now_ms();
    if (!wslay_is_ctrl_frame(arg->opcode))
        c->frag = !arg->fin;
}

static void s_frame_end_cb(wslay_event_context_ptr ctx, void *user)
{
    (void)ctx;
    s_conn_t *c = user;
    c->framed += c->frame_len;
    c->frame_len = 0;
}

static void s_close(gw_ws_t *self, s_conn_t *c, uint16_t code, const char *reason);
static void s_load_follows(gw_ws_t *self, const mb_jwt_claims_t *claims);

static void s_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                     void *user)
{
    (void)ctx;
    s_conn_t *c = user;
    switch (arg->opcode) {
    case WSLAY_CONNECTION_CLOSE:
        /* wslay queued the answering close frame already. */
        c->closing = true;
        c->close_by = s_now_ms() + GW_WS_CLOSE_WAIT_MS;
        s_reschedule(c->ws, c);
        break;
    case WSLAY_BINARY_FRAME:
        s_close(c->ws, c, WSLAY_CODE_UNSUPPORTED_DATA, "binary frames are not understood");
        break;
    default:
        break; /* text is ignored; pings are answered by wslay; a pong is a sign of life */
    }
}

static const struct wslay_event_callbacks s_callbacks = {
    .recv_callback = s_recv_cb,
    .send_callback = s_send_cb,
    .genmask_callback = s_genmask_cb,
    .on_frame_recv_start_callback = s_frame_start_cb,
    .on_frame_recv_end_callback = s_frame_end_cb,
    .on_msg_recv_callback = s_msg_cb,
};

/*  The connection's wslay context, made when missing. NULL when out of
    memory (the connection is then killed). */
static wslay_event_context_ptr s_ctx(gw_ws_t *self, s_conn_t *c)
{
    if (c->ctx)
        return c->ctx;
    if (wslay_event_context_server_init(&c->ctx, &s_callbacks, c) != 0) {
        c->ctx = NULL;
        s_kill(self, c);
        return NULL;
    }
    wslay_event_config_set_max_recv_msg_length(c->ctx, GW_WS_MSG_MAX);
    return c->ctx;
}

/*  Frees the context of a connection that is quiet both ways. */
static void s_maybe_release(s_conn_t *c)
{
    if (!c->ctx || c->dead || c->closing || c->frag || c->extra || c->fed != c->framed ||
        wslay_event_want_write(c->ctx) || wslay_event_get_queued_msg_count(c->ctx) > 0)
        return;
    wslay_event_context_free(c->ctx);
    c->ctx = NULL;
    c->fed = c->framed = 0;
}

static void s_want_out(gw_ws_t *self, s_conn_t *c, bool on)
{
    if (c->epollout == on || c->dead)
        return;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET | (on ? EPOLLOUT : 0),
                             .data.ptr = c};
    if (epoll_ctl(self->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->epollout = on;
}

/*  Sends what wslay holds; watches for room when the socket is full;
    ends the connection once both close frames went. */
static void s_flush_conn(gw_ws_t *self, s_conn_t *c)
{
    if (c->dead)
        return;
    if (!c->ctx) {
        if (c->then_code && !c->closing)
            s_close(self, c, c->then_code, "account deleted");
        return;
    }
    if (wslay_event_send(c->ctx) != 0) {
        s_kill(self, c); /* the peer is gone */
        return;
    }
    bool close_sent = wslay_event_get_close_sent(c->ctx);
    bool reading = wslay_event_get_read_enabled(c->ctx);
    if (!c->closing && (close_sent || !reading || !wslay_event_get_write_enabled(c->ctx))) {
        /* wslay began closing by itself (a protocol error, a message too
           big): the closing handshake gets its time, no more. */
        c->closing = true;
        c->close_by = s_now_ms() + GW_WS_CLOSE_WAIT_MS;
        s_reschedule(self, c);
    }
    if (close_sent && (wslay_event_get_close_received(c->ctx) || !reading)) {
        s_kill(self, c); /* the closing handshake is over */
        return;
    }
    bool more = wslay_event_want_write(c->ctx);
    if (!more && c->then_code && !c->closing) {
        s_close(self, c, c->then_code, "account deleted");
        return;
    }
    s_want_out(self, c, more);
    s_maybe_release(c);
}

static void s_schedule_flush(gw_ws_t *self, s_conn_t *c)
{
    if (c->in_flush || c->dead)
        return;
    c->in_flush = true;
    c->next_flush = self->flush;
    self->flush = c;
}

static void s_flush_all(gw_ws_t *self)
{
    while (self->flush) {
        s_conn_t *c = self->flush;
        self->flush = c->next_flush;
        c->in_flush = false;
        s_flush_conn(self, c);
    }
}

/*  Queues a close frame; the TCP connection goes once the client answers
    or GW_WS_CLOSE_WAIT_MS passed. */
static void s_close(gw_ws_t *self, s_conn_t *c, uint16_t code, const char *reason)
{
    if (c->closing || c->dead)
        return;
    wslay_event_context_ptr ctx = s_ctx(self, c);
    if (!ctx)
        return;
    c->closing = true;
    c->close_by = s_now_ms() + GW_WS_CLOSE_WAIT_MS;
    if (wslay_event_queue_close(ctx, code, (const uint8_t *)reason, strlen(reason)) != 0) {
        s_kill(self, c);
        return;
    }
    s_reschedule(self, c);
    s_schedule_flush(self, c);
}

static void s_on_readable(gw_ws_t *self, s_conn_t *c)
{
    wslay_event_context_ptr ctx = s_ctx(self, c);
    if (!ctx)
        return;
    if (!wslay_event_want_read(ctx)) {
        /* Closing, nothing more to read: drain the socket to see the end. */
        char sink[512];
        ssize_t n;
        while ((n = recv(c->fd, sink, sizeof sink, 0)) > 0)
            ;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            s_kill(self, c);
        return;
    }
    if (wslay_event_recv(ctx) != 0) {
        s_kill(self, c); /* end of stream, a reset, or out of memory */
        return;
    }
    if (!c->dead)
        s_flush_conn(self, c);
}

/*  notify's deliver: queues one text frame, within the bounds. */
static int s_deliver(gw_notify_sub_t *sub, const char *text, size_t len, void *cls)
{
    gw_ws_t *self = cls;
    s_conn_t *c = (s_conn_t *)sub;
    if (c->dead || c->closing || c->then_code)
        return MB_EAGAIN;
    wslay_event_context_ptr ctx = s_ctx(self, c);
    if (!ctx)
        return MB_EIO;
    if (wslay_event_get_queued_msg_count(ctx) >= self->cfg.queue_frames ||
        wslay_event_get_queued_msg_length(ctx) + len > self->cfg.queue_bytes) {
        /* It does not keep up: it goes, the others never wait for it. */
        self->stats.closed_slow++;
        mb_info(0, "ws: closing a slow consumer (%zu frames, %zu bytes queued)",
                wslay_event_get_queued_msg_count(ctx), wslay_event_get_queued_msg_length(ctx));
        s_close(self, c, WSLAY_CODE_POLICY_VIOLATION, "slow consumer");
        return MB_EFULL;
    }
    struct wslay_event_msg msg = {WSLAY_TEXT_FRAME, (const uint8_t *)text, len};
    if (wslay_event_queue_msg(ctx, &msg) != 0) {
        s_kill(self, c);
        return MB_EIO;
    }
    s_schedule_flush(self, c);
    return 0;
}

/*  notify's gone: the account was deleted; its last frame goes first. */
static void s_gone(gw_notify_sub_t *sub, void *cls)
{
    gw_ws_t *self = cls;
    s_conn_t *c = (s_conn_t *)sub;
    c->then_code = 4003;
    s_schedule_flush(self, c);
}

/*  A connection's timers: close, token expiry, ping. */
static void s_tick(gw_ws_t *self, s_conn_t *c, int64_t now)
{
    if (c->closing) {
        if (now >= c->close_by) {
            s_kill(self, c);
            return;
        }
    } else if (now >= c->expires) {
        self->stats.closed_expired++;
        s_close(self, c, 4001, "token expired");
        return;
    } else if (now >= c->next_ping) {
        if (now - c->last_seen >= 2 * (int64_t)self->cfg.ping_ms) {
            self->stats.closed_ping++;
            s_close(self, c, WSLAY_CODE_GOING_AWAY, "ping timeout");
            return;
        }
        wslay_event_context_ptr ctx = s_ctx(self, c);
        if (!ctx)
            return;
        struct wslay_event_msg ping = {WSLAY_PING, NULL, 0};
        if (wslay_event_queue_msg(ctx, &ping) != 0) {
            s_kill(self, c);
            return;
        }
        s_schedule_flush(self, c);
        c->next_ping = now + self->cfg.ping_ms;
    }
    s_reschedule(self, c);
}

int gw_ws_adopt(gw_ws_t *self, int fd, const mb_jwt_claims_t *claims, bool has_since,
                uint64_t since, const void *extra, size_t extra_len)
{
    if (self->n >= self->cfg.max_conns || self->stopping) {
        close(fd);
        return MB_EFULL;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        close(fd);
        return MB_EIO;
    }
    /* Small frames must leave at once (libmicrohttpd turned Nagle back on
       before handing the socket over); wslay marks a header with
       MSG_MORE so it leaves with its payload. A bounded kernel buffer
       keeps a client that does not read from hiding behind megabytes. */
    int one = 1, sndbuf = GW_WS_SNDBUF;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    s_conn_t *c = mb_calloc(1, sizeof *c);
    c->ws = self;
    c->fd = fd;
    int64_t now = s_now_ms();
    c->last_seen = now;
    c->next_ping = now + self->cfg.ping_ms;
    int64_t left_s = claims->exp + self->cfg.leeway_s - (int64_t)time(NULL);
    c->expires = now + (left_s > 0 ? left_s * 1000 : 0);
    if (extra_len) {
        c->extra = mb_malloc(extra_len);
        memcpy(c->extra, extra, extra_len);
        c->extra_len = (uint32_t)extra_len;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        mb_warn(0, "ws: epoll_ctl: %s", strerror(errno));
        close(fd);
        s_free(c);
        return MB_EIO;
    }
    c->due = c->next_ping < c->expires ? c->next_ping : c->expires;
    s_heap_add(self, c);
    self->stats.accepted++;
    int rc = gw_notify_attach(self->notify, &c->sub, claims->sub, has_since, since);
    if (rc & GW_NOTIFY_LOAD)
        s_load_follows(self, claims);
    if (extra_len && !c->dead)
        s_on_readable(self, c);
    s_flush_all(self);
    return 0;
}

/* ---- the bus: the feed and follow lists ------------------------------------------ */

static const char *const s_topics[] = GW_NOTIFY_TOPICS;

/*  Sends the request packed in self->sbuf to `service` and waits for its
    reply under `call` until `deadline`. Returns 0 or an MB_* code. */
static int s_bus_send(gw_ws_t *self, const char *service, s_call_t *call, uint64_t rid,
                      int64_t deadline)
{
    int rc = mb_client_send(self->client, service, self->sbuf.data, self->sbuf.size);
    if (rc)
        return rc;
    self->sent = true;
    return gw_pending_add(self->pending, &call->node, rid, deadline);
}

static msgpack_packer s_packer(gw_ws_t *self)
{
    msgpack_sbuffer_clear(&self->sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &self->sbuf, msgpack_sbuffer_write);
    return pk;
}

static void s_feed_retry(gw_ws_t *self, const char *why)
{
    self->stats.feed_errors++;
    self->backoff_ms = self->backoff_ms ? self->backoff_ms * 2 : S_BACKOFF_MIN_MS;
    if (self->backoff_ms > S_BACKOFF_MAX_MS)
        self->backoff_ms = S_BACKOFF_MAX_MS;
    self->retry_at = s_now_ms() + self->backoff_ms;
    mb_log(self->backoff_ms >= S_BACKOFF_MAX_MS ? MB_LOG_WARN : MB_LOG_DEBUG, 0,
           "ws: the event feed failed (%s); again in %d ms", why, self->backoff_ms);
}

/*  One bus.fetch: the head of the log first (from 0, one event, no
    wait), then long polls from where we are. */
static void s_feed_send(gw_ws_t *self)
{
    if (!self->client || self->stopping || self->fetch.node.rid)
        return;
    self->retry_at = 0;
    uint64_t rid = ++self->next_rid;
    uint32_t wait = self->feed_started ? (uint32_t)self->cfg.fetch_wait_ms : 0;
    uint32_t ttl = wait + (uint32_t)self->cfg.timeout_ms;
    msgpack_packer pk = s_packer(self);
    mb_request_pack_head(&pk, "bus.fetch", rid, ttl, 1);
    mb_pack_cstr(&pk, "args");
    msgpack_pack_map(&pk, 4);
    mb_pack_cstr(&pk, "topics");
    msgpack_pack_array(&pk, sizeof s_topics / sizeof s_topics[0] - 1);
    for (size_t i = 0; s_topics[i]; i++)
        mb_pack_cstr(&pk, s_topics[i]);
    mb_pack_cstr(&pk, "from");
    msgpack_pack_uint64(&pk, self->feed_started ? self->from : 0);
    mb_pack_cstr(&pk, "max");
    msgpack_pack_unsigned_int(&pk, self->feed_started ? S_FETCH_MAX : 1);
    mb_pack_cstr(&pk, "wait");
    msgpack_pack_unsigned_int(&pk, wait);
    int rc = s_bus_send(self, "bus", &self->fetch, rid, s_now_ms() + ttl + 1000);
    if (rc) {
        gw_pending_remove(self->pending, &self->fetch.node);
        s_feed_retry(self, mb_strerror(rc));
    }
}

static bool s_uint(const msgpack_object *o, uint64_t *out)
{
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *out = o->via.u64;
    return true;
}

/*  (Re)starts reading at `from`; tells live clients to resync when
    events may have been missed. */
static void s_feed_start(gw_ws_t *self, uint64_t from, bool tell)
{
    bool was = self->feed_started;
    self->feed_started = true;
    self->from = from;
    gw_notify_reset(self->notify, from, tell && was);
    mb_info(0, "ws: reading events from seq %" PRIu64, from);
}

static void s_on_fetch(gw_ws_t *self, const mb_reply_t *rep)
{
    if (rep->status == 410) {
        /* The broker no longer keeps where we were: start again at its
           head; clients that may have missed something resync. */
        mb_warn(0, "ws: the broker's log no longer has seq %" PRIu64 "; clients will resync",
                self->from);
        self->feed_started = false;
        self->backoff_ms = 0;
        s_feed_send(self);
        return;
    }
    uint64_t next, head;
    const msgpack_object *events = mb_map_get(rep->body, "events");
    if (rep->code || rep->status != 200 || !events || events->type != MSGPACK_OBJECT_ARRAY ||
        !s_uint(mb_map_get(rep->body, "next"), &next) ||
        !s_uint(mb_map_get(rep->body, "head"), &head)) {
        char why[96];
        snprintf(why, sizeof why, "status %d %.*s", rep->status, (int)rep->code_len,
                 rep->code ? rep->code : "");
        s_feed_retry(self, why);
        return;
    }
    self->backoff_ms = 0;
    if (!self->feed_started) {
        s_feed_start(self, head + 1, true);
        s_feed_send(self);
        return;
    }
    if (head + 1 < self->from) {
        /* The log is shorter than what we read: a new broker data folder. */
        mb_warn(0, "ws: the broker's log ends at %" PRIu64 " but we read up to %" PRIu64
                   "; starting again there", head, self->from - 1);
        s_feed_start(self, head + 1, true);
        s_feed_send(self);
        return;
    }
    uint64_t floor = self->from;
    for (uint32_t i = 0; i < events->via.array.size; i++) {
        const msgpack_object *o = &events->via.array.ptr[i];
        mb_event_t ev = {0};
        if (!s_uint(mb_map_get(o, "seq"), &ev.seq) || ev.seq < floor || ev.seq >= next)
            continue; /* out of order or outside [from, next): not trusted */
        floor = ev.seq + 1;
        if (!mb_obj_str(mb_map_get(o, "topic"), &ev.topic, &ev.topic_len))
            ev.invalid = "no topic";
        mb_obj_str(mb_map_get(o, "key"), &ev.key, &ev.key_len);
        if (!(ev.data = mb_map_get(o, "data")))
            ev.invalid = "no data";
        gw_notify_event(self->notify, &ev);
    }
    if (next > self->from)
        self->from = next;
    gw_notify_advance(self->notify, next);
    if (events->via.array.size)
        self->stats.feed_batches++;
    s_flush_all(self);
    s_feed_send(self);
}

/*  Sends the request for the next page of a follow list. */
static void s_load_send(gw_ws_t *self, s_load_t *load)
{
    uint64_t rid = ++self->next_rid;
    msgpack_packer pk = s_packer(self);
    mb_request_pack_head(&pk, S_FOLLOWS_OP, rid, (uint32_t)self->cfg.timeout_ms, 2);
    mb_pack_cstr(&pk, "auth");
    mb_jwt_pack_auth(&pk, &load->claims);
    mb_pack_cstr(&pk, "args");
    msgpack_pack_map(&pk, 2);
    mb_pack_cstr(&pk, "limit");
    msgpack_pack_uint64(&pk, S_FOLLOWS_PAGE);
    mb_pack_cstr(&pk, "offset");
    msgpack_pack_uint64(&pk, load->offset);
    int rc = s_bus_send(self, S_PLAYLISTS, &load->call, rid, s_now_ms() + self->cfg.timeout_ms);
    if (rc) {
        gw_pending_remove(self->pending, &load->call.node);
        gw_notify_follows(self->notify, load->claims.sub, NULL, 0, false);
        self->stats.follows_failed++;
        for (size_t i = 0; i < load->n; i++)
            free(load->ids[i]);
        free(load->ids);
        free(load);
        s_flush_all(self);
    }
}

static void s_load_follows(gw_ws_t *self, const mb_jwt_claims_t *claims)
{
    if (!self->client) {
        gw_notify_follows(self->notify, claims->sub, NULL, 0, false);
        return;
    }
    s_load_t *load = mb_calloc(1, sizeof *load);
    load->call.kind = S_CALL_FOLLOWS;
    load->claims = *claims;
    s_load_send(self, load);
}

static void s_load_done(gw_ws_t *self, s_load_t *load, bool ok)
{
    gw_notify_follows(self->notify, load->claims.sub, (const char *const *)load->ids, load->n, ok);
    if (ok)
        self->stats.follows_loaded++;
    else
        self->stats.follows_failed++;
    for (size_t i = 0; i < load->n; i++)
        free(load->ids[i]);
    free(load->ids);
    free(load);
    s_flush_all(self);
}

static void s_on_follows(gw_ws_t *self, s_load_t *load, const mb_reply_t *rep)
{
    const msgpack_object *items = mb_map_get(rep->body, "items");
    uint64_t total = 0;
    if (rep->code || rep->status != 200 || !items || items->type != MSGPACK_OBJECT_ARRAY ||
        !s_uint(mb_map_get(rep->body, "total"), &total)) {
        mb_debug(0, "ws: no follow list for %s: status %d %.*s", load->claims.sub, rep->status,
                 (int)rep->code_len, rep->code ? rep->code : "");
        s_load_done(self, load, false);
        return;
    }
    for (uint32_t i = 0; i < items->via.array.size && load->n < self->cfg.follows_max; i++) {
        char *id = mb_obj_strdup(mb_map_get(&items->via.array.ptr[i], "id"));
        if (!id)
            continue;
        if (load->n == load->cap) {
            load->cap = load->cap ? load->cap * 2 : 16;
            load->ids = mb_realloc(load->ids, load->cap * sizeof *load->ids);
        }
        load->ids[load->n++] = id;
    }
    load->offset += S_FOLLOWS_PAGE;
    if (load->offset < total && load->n < self->cfg.follows_max && items->via.array.size > 0)
        s_load_send(self, load);
    else
        s_load_done(self, load, true);
}

static void s_on_bus_message(gw_ws_t *self, const void *data, size_t size)
{
    mb_reply_t rep;
    const char *why = NULL;
    if (mb_reply_decode(&rep, data, size, &why)) {
        mb_warn(0, "ws: dropped a bus reply that is not an envelope: %s", why ? why : "?");
        return;
    }
    gw_pending_node_t *node = gw_pending_take(self->pending, rep.rid);
    if (node) {
        s_call_t *call = (s_call_t *)node;
        if (call->kind == S_CALL_FETCH)
            s_on_fetch(self, &rep);
        else
            s_on_follows(self, (s_load_t *)call, &rep);
    }
    mb_reply_release(&rep);
}

static void s_drain_bus(gw_ws_t *self)
{
    self->sent = false;
    while (self->client) {
        zmq_msg_t msg;
        int rc = mb_client_recv(self->client, &msg);
        if (rc == MB_EAGAIN)
            return;
        if (rc == MB_EPROTO)
            continue;
        if (rc) {
            mb_warn(0, "ws: bus receive failed: %s", mb_strerror(rc));
            return;
        }
        s_on_bus_message(self, zmq_msg_data(&msg), zmq_msg_size(&msg));
        zmq_msg_close(&msg);
    }
}

/*  Requests past their deadline: a fetch is sent again, a follow list
    is given up. */
static void s_expire(gw_ws_t *self, int64_t now)
{
    gw_pending_node_t *node;
    while ((node = gw_pending_first(self->pending)) && node->deadline_ms <= now) {
        gw_pending_remove(self->pending, node);
        s_call_t *call = (s_call_t *)node;
        if (call->kind == S_CALL_FETCH)
            s_feed_retry(self, "no answer in time");
        else
            s_load_done(self, (s_load_t *)call, false);
    }
}

/* ---- the handshake ---------------------------------------------------------------- */

int gw_ws_accept_key(const char *key, char *out)
{
    unsigned char raw[32];
    size_t raw_len = 0;
    size_t len = key ? strlen(key) : 0;
    if (len != 24 || sodium_base642bin(raw, sizeof raw, key, len, NULL, &raw_len, NULL,
                                       sodium_base64_VARIANT_ORIGINAL) != 0 ||
        raw_len != 16)
        return MB_EINVAL;
    char text[24 + sizeof GW_WS_GUID];
    memcpy(text, key, 24);
    memcpy(text + 24, GW_WS_GUID, sizeof GW_WS_GUID);
    unsigned char sha1[20];
    if (gnutls_hash_fast(GNUTLS_DIG_SHA1, text, 24 + strlen(GW_WS_GUID), sha1) != 0)
        return MB_EINVAL;
    sodium_bin2base64(out, GW_WS_ACCEPT_LEN + 1, sha1, sizeof sha1,
                      sodium_base64_VARIANT_ORIGINAL);
    return 0;
}

/*  True when the comma-separated header value `v` lists `token` (any case). */
static bool s_has_token(const char *v, const char *token)
{
    size_t n = strlen(token);
    while (v && *v) {
        v += strspn(v, " \t,");
        size_t len = strcspn(v, ",");
        size_t end = len;
        while (end > 0 && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end == n && strncasecmp(v, token, n) == 0)
            return true;
        v += len;
    }
    return false;
}

static const char *s_header(struct MHD_Connection *conn, const char *name)
{
    return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

/*  A problem document as the response. */
static int s_refuse(gw_ws_handshake_t *hs, int status, const char *type, const char *detail,
                    const char *field)
{
    gw_buf_t buf = GW_BUF_INIT;
    gw_problem_write(&buf, status, type, (size_t)-1, detail, (size_t)-1, field, (size_t)-1);
    hs->status = status;
    hs->response = MHD_create_response_from_buffer(buf.len, buf.data, MHD_RESPMEM_MUST_COPY);
    gw_buf_free(&buf);
    if (hs->response)
        MHD_add_response_header(hs->response, MHD_HTTP_HEADER_CONTENT_TYPE,
                                GW_PROBLEM_CONTENT_TYPE);
    return status;
}

static void s_on_upgrade(void *cls, struct MHD_Connection *connection, void *con_cls,
                         const char *extra_in, size_t extra_in_size, MHD_socket sock,
                         struct MHD_UpgradeResponseHandle *urh);

int gw_ws_handshake(gw_ws_t *self, struct MHD_Connection *conn, int64_t now,
                    gw_ws_handshake_t *hs)
{
    memset(hs, 0, sizeof *hs);
    if (self->stopping)
        return s_refuse(hs, 503, NULL, "the gateway is shutting down", NULL);
    if (!s_has_token(s_header(conn, MHD_HTTP_HEADER_UPGRADE), "websocket") ||
        !s_has_token(s_header(conn, MHD_HTTP_HEADER_CONNECTION), "upgrade"))
        return s_refuse(hs, 426, NULL,
                        "this is a WebSocket: send Upgrade: websocket and Connection: Upgrade",
                        NULL);
    const char *version = s_header(conn, "Sec-WebSocket-Version");
    if (!version || strcmp(version, "13") != 0) {
        s_refuse(hs, 426, NULL, "only WebSocket version 13 is spoken here", NULL);
        if (hs->response)
            MHD_add_response_header(hs->response, "Sec-WebSocket-Version", "13");
        return hs->status;
    }
    char accept[GW_WS_ACCEPT_LEN + 1];
    if (gw_ws_accept_key(s_header(conn, "Sec-WebSocket-Key"), accept))
        return s_refuse(hs, 400, NULL, "Sec-WebSocket-Key must be 16 bytes in base64", NULL);

    /* The token: Authorization, else ?access_token= (browsers cannot set
       headers on a WebSocket). Either way the same check as every route. */
    const char *authz = s_header(conn, MHD_HTTP_HEADER_AUTHORIZATION);
    char *built = NULL;
    if (!authz) {
        const char *q = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "access_token");
        if (q && strlen(q) <= MB_JWT_TOKEN_MAX && asprintf(&built, "Bearer %s", q) > 0)
            authz = built;
    }
    gw_auth_result_t res;
    int rc = gw_auth_check(self->auth, GW_ACCESS_USER, authz, now, &hs->claims, &res);
    free(built);
    if (rc) {
        s_refuse(hs, res.status, res.type, res.detail, NULL);
        if (hs->response && (res.status == 401 || res.status == 403)) {
            char challenge[GW_AUTH_CHALLENGE_MAX];
            gw_auth_challenge(&res, challenge, sizeof challenge);
            MHD_add_response_header(hs->response, MHD_HTTP_HEADER_WWW_AUTHENTICATE, challenge);
        }
        return hs->status;
    }
    hs->authed = true;

    const char *since_text = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "since");
    uint64_t since = 0;
    if (since_text) {
        size_t digits = strspn(since_text, "0123456789");
        errno = 0;
        since = strtoull(since_text, NULL, 10);
        if (digits == 0 || since_text[digits] || digits > 20 || errno == ERANGE)
            return s_refuse(hs, 400, NULL, "since must be a sequence number", "since");
    }
    if (self->n >= self->cfg.max_conns)
        return s_refuse(hs, 503, "unavailable", "too many WebSocket connections here; try again",
                        NULL);
    if (gw_notify_user_subs(self->notify, hs->claims.sub) >= self->cfg.max_per_user)
        return s_refuse(hs, 429, "rate_limited", "too many WebSocket connections for this user",
                        NULL);

    s_up_t *up = mb_calloc(1, sizeof *up);
    up->ws = self;
    up->made_ms = s_now_ms();
    up->claims = hs->claims;
    up->has_since = since_text != NULL;
    up->since = since;
    hs->response = MHD_create_response_for_upgrade(s_on_upgrade, up);
    if (!hs->response) {
        free(up);
        hs->status = 500;
        return 500;
    }
    up->next = self->ups;
    if (self->ups)
        self->ups->prev = up;
    self->ups = up;
    MHD_add_response_header(hs->response, MHD_HTTP_HEADER_CONNECTION, "Upgrade");
    MHD_add_response_header(hs->response, MHD_HTTP_HEADER_UPGRADE, "websocket");
    MHD_add_response_header(hs->response, "Sec-WebSocket-Accept", accept);
    hs->status = MHD_HTTP_SWITCHING_PROTOCOLS;
    return hs->status;
}

static void s_up_unlink(gw_ws_t *self, s_up_t *up)
{
    if (up->prev)
        up->prev->next = up->next;
    else
        self->ups = up->next;
    if (up->next)
        up->next->prev = up->prev;
}

/*  libmicrohttpd sent the 101: the socket is ours. We keep a duplicate
    and let libmicrohttpd close its own descriptor and free the connection
    right away (for plain TCP it neither shuts the socket down nor reads
    it after an upgrade), so an idle WebSocket costs it nothing. */
static void s_on_upgrade(void *cls, struct MHD_Connection *connection, void *con_cls,
                         const char *extra_in, size_t extra_in_size, MHD_socket sock,
                         struct MHD_UpgradeResponseHandle *urh)
{
    (void)connection;
    (void)con_cls;
    s_up_t *up = cls;
    gw_ws_t *self = up->ws;
    s_up_unlink(self, up);
    int fd = fcntl(sock, F_DUPFD_CLOEXEC, 0);
    MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
    self->mhd_pending = true;
    if (fd < 0)
        mb_warn(0, "ws: cannot keep an upgraded socket: %s", strerror(errno));
    else
        gw_ws_adopt(self, fd, &up->claims, up->has_since, up->since, extra_in, extra_in_size);
    sodium_memzero(&up->claims, sizeof up->claims);
    free(up);
}

/*  Upgrade responses libmicrohttpd never used (the client left before the
    101 went out) are forgotten after S_UP_KEEP_MS: libmicrohttpd has
    closed their connections long before (its own timeout is shorter). */
static void s_sweep_ups(gw_ws_t *self, int64_t now)
{
    for (s_up_t *up = self->ups, *next; up; up = next) {
        next = up->next;
        if (now - up->made_ms >= S_UP_KEEP_MS) {
            s_up_unlink(self, up);
            free(up);
        }
    }
}

/* ---- the module --------------------------------------------------------------------- */

/*  Raises the soft limit on descriptors so max_conns sockets fit beside
    the HTTP ones, when the hard limit allows. */
static void s_raise_nofile(size_t conns)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return;
    rlim_t want = (rlim_t)conns + 4096 + 256;
    if (rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
}

gw_ws_t *gw_ws_new(const gw_ws_config_t *cfg, gw_auth_t *auth)
{
    gw_ws_t *self = mb_calloc(1, sizeof *self);
    self->cfg = *cfg;
    self->auth = auth;
    self->bus_fd = -1;
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (self->epfd < 0) {
        mb_error(0, "ws: epoll_create1: %s", strerror(errno));
        free(self);
        return NULL;
    }
    gw_notify_config_t ncfg = {.ring_events = cfg->ring_events,
                               .ring_bytes = cfg->ring_bytes,
                               .follows_max = cfg->follows_max,
                               .replay_max = cfg->queue_frames > 2 ? cfg->queue_frames - 2 : 1,
                               .deliver = s_deliver,
                               .gone = s_gone,
                               .cls = self};
    self->notify = gw_notify_new(&ncfg);
    self->pending = gw_pending_new(S_PENDING_MAX);
    self->fetch.kind = S_CALL_FETCH;
    msgpack_sbuffer_init(&self->sbuf);
    uint64_t seed = 0;
    randombytes_buf(&seed, sizeof seed);
    self->next_rid = seed & 0xffffffff00000000ull;
    if (cfg->bus) {
        self->client = mb_client_new(cfg->bus);
        if (!self->client) {
            gw_ws_destroy(&self);
            return NULL;
        }
        self->bus_fd = mb_client_fd(self->client);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &self->bus_fd};
        if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, self->bus_fd, &ev) != 0) {
            mb_error(0, "ws: epoll_ctl: %s", strerror(errno));
            gw_ws_destroy(&self);
            return NULL;
        }
        /* The socket connects in the background: the first fetch may meet
           MB_EAGAIN and retry shortly. */
        self->retry_at = s_now_ms();
    } else {
        s_feed_start(self, 1, false);
    }
    s_raise_nofile(cfg->max_conns);
    return self;
}

void gw_ws_destroy(gw_ws_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    gw_ws_t *self = *self_p;
    while (self->n > 0)
        s_kill(self, self->heap[0]);
    self->flush = NULL;
    s_sweep(self);
    while (self->ups) {
        s_up_t *up = self->ups;
        self->ups = up->next;
        free(up);
    }
    gw_pending_node_t *node;
    while ((node = gw_pending_first(self->pending))) {
        gw_pending_remove(self->pending, node);
        s_call_t *call = (s_call_t *)node;
        if (call->kind == S_CALL_FOLLOWS) {
            s_load_t *load = (s_load_t *)call;
            for (size_t i = 0; i < load->n; i++)
                free(load->ids[i]);
            free(load->ids);
            free(load);
        }
    }
    gw_pending_destroy(&self->pending);
    gw_notify_destroy(&self->notify);
    mb_client_destroy(&self->client);
    msgpack_sbuffer_destroy(&self->sbuf);
    if (self->epfd >= 0)
        close(self->epfd);
    free(self->heap);
    free(self);
    *self_p = NULL;
}

int gw_ws_fd(const gw_ws_t *self)
{
    return self->epfd;
}

void gw_ws_run(gw_ws_t *self)
{
    struct epoll_event evs[S_EVENTS];
    bool bus_fired = false;
    /* Bounded: a flood on some sockets must not starve the HTTP side. */
    for (int round = 0; round < 16; round++) {
        int n = epoll_wait(self->epfd, evs, S_EVENTS, 0);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &self->bus_fd) {
                bus_fired = true;
                continue;
            }
            s_conn_t *c = evs[i].data.ptr;
            if (c->dead)
                continue;
            if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                s_on_readable(self, c);
            if (!c->dead && (evs[i].events & EPOLLOUT))
                s_flush_conn(self, c);
        }
        if (n < S_EVENTS)
            break;
    }
    if (bus_fired || self->sent)
        s_drain_bus(self);
    int64_t now = s_now_ms();
    while (self->n > 0 && self->heap[0]->due <= now)
        s_tick(self, self->heap[0], now);
    s_expire(self, now);
    if (self->retry_at && now >= self->retry_at)
        s_feed_send(self);
    if (self->ups)
        s_sweep_ups(self, now);
    s_flush_all(self);
    s_sweep(self);
    if (self->sent)
        s_drain_bus(self);
    s_flush_all(self);
    s_sweep(self);
}

int64_t gw_ws_due_ms(const gw_ws_t *self)
{
    int64_t due = INT64_MAX;
    if (self->n > 0)
        due = self->heap[0]->due;
    gw_pending_node_t *first = gw_pending_first(self->pending);
    if (first && first->deadline_ms < due)
        due = first->deadline_ms;
    if (self->retry_at && self->retry_at < due)
        due = self->retry_at;
    if (self->ups && self->ups->made_ms + S_UP_KEEP_MS < due)
        due = self->ups->made_ms + S_UP_KEEP_MS;
    if (self->sent || self->flush)
        due = 0;
    return due;
}

void gw_ws_stop(gw_ws_t *self)
{
    if (self->stopping)
        return;
    self->stopping = true;
    if (self->fetch.node.rid)
        gw_pending_remove(self->pending, &self->fetch.node);
    self->retry_at = 0;
    /* Closing reorders the heap: close from a copy. */
    size_t n = self->n;
    s_conn_t **all = mb_malloc((n ? n : 1) * sizeof *all);
    if (n) /* heap is NULL until a first WebSocket: memcpy from NULL is UB */
        memcpy(all, self->heap, n * sizeof *all);
    for (size_t i = 0; i < n; i++)
        s_close(self, all[i], WSLAY_CODE_GOING_AWAY, "going away");
    free(all);
    s_flush_all(self);
    s_sweep(self);
    mb_info(0, "ws: closing %zu WebSocket(s)", self->n);
}

bool gw_ws_mhd_pending(gw_ws_t *self)
{
    bool pending = self->mhd_pending;
    self->mhd_pending = false;
    return pending;
}

size_t gw_ws_size(const gw_ws_t *self)
{
    return self->n;
}

gw_notify_t *gw_ws_notify(gw_ws_t *self)
{
    return self->notify;
}

void gw_ws_stats(const gw_ws_t *self, gw_ws_stats_t *stats)
{
    *stats = self->stats;
    stats->conns = self->n;
    stats->with_context = 0;
    for (size_t i = 0; i < self->n; i++)
        stats->with_context += self->heap[i]->ctx != NULL;
}
