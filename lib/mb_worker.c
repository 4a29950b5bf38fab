/*  mb_worker — an MDP/0.1 worker (ZeroMQ RFC 7). */
#include "mb_worker.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mb_alloc.h"
#include "mb_config.h"
#include "mb_envelope.h"
#include "mb_error.h"
#include "mb_log.h"
#include "mb_signal.h"
#include "mb_zmq.h"
#include "mdp.h"

#define S_RECONNECT_MIN_MS 100
#define S_RECONNECT_MAX_MS 5000
#define S_DISCONNECT_LINGER_MS 200 /* time given to DISCONNECT to leave at exit */

/*  Compact replies are deferred and sent several in one message (see
    mb_worker.h): at most MB_COMPACT_PAIRS_MAX in one message (mdp.h), */
/*  held at most this long (µs) once the worker is back in mb_worker_recv(), */
#define S_DEFER_US 1000
/*  and not at all for this long (µs) after a request took S_DEFER_US or
    more to answer: a service with slow ops answers each reply at once, so
    a slow request rarely holds back a fast one's reply. */
#define S_SLOW_HOLD_US 1000000

struct mb_worker {
    char *endpoint;            /* broker endpoint */
    char *service;             /* service offered in READY */
    mb_worker_opts_t opts;     /* timings */
    void *socket;              /* DEALER to the broker, NULL between reconnects */
    int64_t heartbeat_at;      /* when to send the next HEARTBEAT (monotonic ms) */
    int64_t broker_expires_at; /* when silence means the broker is gone */
    int backoff_ms;            /* next reconnect delay */
    bool have_reply_to;        /* reply_to holds a client address */
    zmq_msg_t reply_to;        /* address of the client of the request in hand */
    unsigned long reconnects;  /* times the connection was remade */
    bool rejected;             /* the last connection ended by DISCONNECT with
                                  nothing else from the broker since */
    bool compact;              /* this connection's broker sent a compact REQUEST:
                                  reply compactly (see mb_worker.h) */
    bool batch_more;           /* the compact REQUEST being read has more
                                  [client][body] pairs */
    zmq_msg_t last_client;     /* client of the compact REQUEST's pair before, which an
                                  empty client frame names */
    bool heard;                /* this connection had a message other than
                                  DISCONNECT from the broker */
    bool plain_ready;          /* say READY without the compact option: the
                                  last one with it was refused at once */
    zmq_msg_t deferred[2 * MB_COMPACT_PAIRS_MAX]; /* compact replies not sent yet: [client][body]
                                            pairs, oldest first */
    size_t n_deferred;         /* pairs in deferred[] */
    int64_t deferred_since;    /* when the oldest of them was made (monotonic µs) */
    int64_t handed_at;         /* when the request in hand was returned (monotonic µs) */
    int64_t slow_until;        /* no deferring before then (monotonic µs) */
};

static int64_t s_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t s_now_ms(void)
{
    return s_now_us() / 1000;
}

void mb_worker_opts_default(mb_worker_opts_t *opts)
{
    opts->heartbeat_ms =
        (int)mb_config_env_long(MB_ENV_HEARTBEAT_MS, MB_DEFAULT_HEARTBEAT_MS, 10, 3600000);
    opts->liveness = (int)mb_config_env_long(MB_ENV_LIVENESS, MB_DEFAULT_LIVENESS, 1, 1000);
    opts->reconnect_min_ms = S_RECONNECT_MIN_MS;
    opts->reconnect_max_ms = S_RECONNECT_MAX_MS;
}

/*  Sends RFC 7's head of every worker message, [empty][MDPW01][command],
    with `more` frames to follow or not. */
static int s_send_head(mb_worker_t *self, uint8_t command, bool more)
{
    int rc = mb_zmq_send(self->socket, "", 0, true, ZMQ_DONTWAIT);
    if (!rc)
        rc = mb_zmq_send(self->socket, MDPW_WORKER, strlen(MDPW_WORKER), true, ZMQ_DONTWAIT);
    if (!rc)
        rc = mb_zmq_send(self->socket, &command, 1, more, ZMQ_DONTWAIT);
    return rc;
}

/*  Sends a worker command: [empty][MDPW01][command] and, when given,
    one more frame. */
static int s_send_command(mb_worker_t *self, uint8_t command, const void *extra, size_t extra_size,
                          bool has_extra)
{
    int rc = s_send_head(self, command, has_extra);
    if (!rc && has_extra)
        rc = mb_zmq_send(self->socket, extra, extra_size, false, ZMQ_DONTWAIT);
    return rc;
}

/*  READY [service] [MB_WORKER_OPT_COMPACT]: RFC 7's READY with the option
    frame after the service name (brokers that do not know it read the
    service frame only). */
static int s_send_ready(mb_worker_t *self)
{
    int rc = s_send_head(self, MDPW_READY, true);
    if (!rc)
        rc = mb_zmq_send(self->socket, self->service, strlen(self->service), !self->plain_ready,
                         ZMQ_DONTWAIT);
    if (!rc && !self->plain_ready)
        rc = mb_zmq_send(self->socket, MB_WORKER_OPT_COMPACT, strlen(MB_WORKER_OPT_COMPACT), false,
                         ZMQ_DONTWAIT);
    return rc;
}

static int s_connect(mb_worker_t *self)
{
    self->socket = zmq_socket(mb_zmq_context(), ZMQ_DEALER);
    if (!self->socket) {
        mb_error(0, "worker: zmq_socket failed: %s", zmq_strerror(errno));
        return MB_EIO;
    }
    int linger = 0;
    zmq_setsockopt(self->socket, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(self->socket, self->endpoint) != 0) {
        mb_error(0, "worker: cannot connect to '%s': %s", self->endpoint, zmq_strerror(errno));
        zmq_close(self->socket);
        self->socket = NULL;
        return MB_EINVAL;
    }
    /* Without IMMEDIATE the READY waits in the pipe until the connection
       is made, so it is the first thing the broker sees from us. */
    s_send_ready(self);
    self->compact = false; /* until this broker sends a compact REQUEST */
    self->batch_more = false;
    self->heard = false;
    int64_t now = s_now_ms();
    self->heartbeat_at = now + self->opts.heartbeat_ms;
    self->broker_expires_at = now + (int64_t)self->opts.heartbeat_ms * self->opts.liveness;
    return 0;
}

static int s_flush_deferred(mb_worker_t *self);

/*  Frees the deferred replies unsent (the broker re-dispatches what a lost
    connection held). */
static void s_drop_deferred(mb_worker_t *self)
{
    for (size_t i = 0; i < 2 * self->n_deferred; i++)
        zmq_msg_close(&self->deferred[i]);
    self->n_deferred = 0;
}

static void s_close_socket(mb_worker_t *self)
{
    s_drop_deferred(self);
    self->batch_more = false;
    if (self->socket) {
        zmq_close(self->socket);
        self->socket = NULL;
    }
}

static void s_forget_request(mb_worker_t *self)
{
    if (self->have_reply_to) {
        zmq_msg_close(&self->reply_to);
        self->have_reply_to = false;
    }
}

mb_worker_t *mb_worker_new(const char *endpoint, const char *service, const mb_worker_opts_t *opts)
{
    if (!endpoint || !service || !*service || strlen(service) > 255) {
        mb_error(0, "worker: endpoint and a 1..255 byte service name are required");
        return NULL;
    }
    mb_worker_t *self = mb_calloc(1, sizeof *self);
    zmq_msg_init(&self->last_client);
    if (opts)
        self->opts = *opts;
    else
        mb_worker_opts_default(&self->opts);
    /* Guard against nonsense timings: they would spin or never heartbeat. */
    if (self->opts.heartbeat_ms <= 0)
        self->opts.heartbeat_ms = MB_DEFAULT_HEARTBEAT_MS;
    if (self->opts.liveness <= 0)
        self->opts.liveness = MB_DEFAULT_LIVENESS;
    if (self->opts.reconnect_min_ms <= 0)
        self->opts.reconnect_min_ms = S_RECONNECT_MIN_MS;
    if (self->opts.reconnect_max_ms < self->opts.reconnect_min_ms)
        self->opts.reconnect_max_ms = self->opts.reconnect_min_ms;
    self->endpoint = mb_strdup(endpoint);
    self->service = mb_strdup(service);
    self->backoff_ms = self->opts.reconnect_min_ms;
    if (s_connect(self) != 0) {
        zmq_msg_close(&self->last_client);
        free(self->endpoint);
        free(self->service);
        free(self);
        return NULL;
    }
    return self;
}

void mb_worker_destroy(mb_worker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    mb_worker_t *self = *self_p;
    s_forget_request(self);
    if (self->socket) {
        s_flush_deferred(self);
        s_send_command(self, MDPW_DISCONNECT, NULL, 0, false);
        /* Give DISCONNECT a moment to leave; zmq_ctx_term() (mb_zmq_shutdown)
           waits for it at most this long. */
        int linger = S_DISCONNECT_LINGER_MS;
        zmq_setsockopt(self->socket, ZMQ_LINGER, &linger, sizeof linger);
        s_close_socket(self);
    }
    zmq_msg_close(&self->last_client);
    free(self->endpoint);
    free(self->service);
    free(self);
    *self_p = NULL;
}

/*  Sleeps `ms` unless a stop is requested (signals interrupt nanosleep
    because the handlers are installed without SA_RESTART). */
static void s_sleep_ms(int ms)
{
    int64_t until = s_now_ms() + ms;
    while (!mb_signal_stop_requested()) {
        int64_t left = until - s_now_ms();
        if (left <= 0)
            return;
        struct timespec ts = {.tv_sec = left / 1000, .tv_nsec = (left % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
}

static int s_reconnect(mb_worker_t *self, bool wait)
{
    s_close_socket(self);
    s_forget_request(self);
    if (wait) {
        s_sleep_ms(self->backoff_ms);
        self->backoff_ms = self->backoff_ms * 2 > self->opts.reconnect_max_ms
                               ? self->opts.reconnect_max_ms
                               : self->backoff_ms * 2;
    }
    self->reconnects++;
    return s_connect(self);
}

/*  Sends [empty][MDPW01][REPLY][client][empty][body], or the compact
    [REPLY][client][body] to a broker that sent compact REQUESTs. */
static int s_send_reply(mb_worker_t *self, zmq_msg_t *client, const void *data, size_t size)
{
    uint8_t command = MDPW_REPLY;
    if (self->compact) {
        int rc = mb_zmq_send(self->socket, &command, 1, true, ZMQ_DONTWAIT);
        if (!rc)
            rc = mb_zmq_send(self->socket, zmq_msg_data(client), zmq_msg_size(client), true,
                             ZMQ_DONTWAIT);
        if (!rc)
            rc = mb_zmq_send(self->socket, data, size, false, ZMQ_DONTWAIT);
        return rc;
    }
    int rc = s_send_head(self, command, true);
    if (!rc)
        rc = mb_zmq_send(self->socket, zmq_msg_data(client), zmq_msg_size(client), true,
                         ZMQ_DONTWAIT);
    if (!rc)
        rc = mb_zmq_send(self->socket, "", 0, true, ZMQ_DONTWAIT);
    if (!rc)
        rc = mb_zmq_send(self->socket, data, size, false, ZMQ_DONTWAIT);
    return rc;
}

/*  Sends the deferred compact replies as one message,
    [REPLY][client][body]([client][body])..., oldest first; a client frame
    equal to the one before it goes empty (the broker reads an empty client
    frame as the client of the pair before: one frame less per reply when,
    as usual, one gateway sent them all). Returns 0 or the mb_zmq_send()
    error (the replies are dropped then; the broker answers their clients
    at their deadlines). */
static int s_flush_deferred(mb_worker_t *self)
{
    if (!self->n_deferred)
        return 0;
    /* Last to first, so each is compared with the one before as it was. */
    for (size_t k = self->n_deferred - 1; k > 0; k--) {
        zmq_msg_t *client = &self->deferred[2 * k], *before = client - 2;
        if (zmq_msg_size(client) == zmq_msg_size(before) &&
            memcmp(zmq_msg_data(client), zmq_msg_data(before), zmq_msg_size(client)) == 0) {
            zmq_msg_close(client);
            zmq_msg_init(client);
        }
    }
    uint8_t command = MDPW_REPLY;
    size_t n = 2 * self->n_deferred;
    int rc = mb_zmq_send(self->socket, &command, 1, true, ZMQ_DONTWAIT);
    /* Once the first frame is taken, libzmq takes the rest of the message. */
    for (size_t i = 0; i < n; i++) {
        if (rc == 0 && zmq_msg_send(&self->deferred[i], self->socket,
                                    ZMQ_DONTWAIT | (i + 1 < n ? ZMQ_SNDMORE : 0)) >= 0)
            continue;
        if (rc == 0)
            rc = MB_EIO;
        zmq_msg_close(&self->deferred[i]);
    }
    self->n_deferred = 0;
    if (rc)
        mb_warn(0, "worker: replies could not be sent: %s", mb_strerror(rc));
    return rc;
}

/*  Answers a request we cannot hand to the caller with a 400 error reply,
    so a foreign client is told rather than left waiting. */
static void s_reply_bad_request(mb_worker_t *self, zmq_msg_t *client, const char *message)
{
    msgpack_sbuffer buffer;
    msgpack_packer pk;
    msgpack_sbuffer_init(&buffer);
    msgpack_packer_init(&pk, &buffer, msgpack_sbuffer_write);
    mb_reply_pack_error(&pk, 0, 400, "bad_request", NULL, message);
    /* The broker matches a reply to the oldest request it holds for that
       client: the deferred ones come first. */
    s_flush_deferred(self);
    if (s_send_reply(self, client, buffer.data, buffer.size) != 0)
        mb_warn(0, "worker: could not send a bad_request reply");
    msgpack_sbuffer_destroy(&buffer);
}

/*  Receives one frame into *frame (initialised here) without waiting.
    Returns true when one arrived and its MORE flag equals `more`. */
static bool s_recv_frame(void *socket, zmq_msg_t *frame, bool more)
{
    zmq_msg_init(frame);
    if (zmq_msg_recv(frame, socket, ZMQ_DONTWAIT) < 0)
        return false;
    return (zmq_msg_more(frame) != 0) == more;
}

enum { S_EMPTY, S_NOTHING, S_REQUEST, S_DISCONNECTED, S_FAILED };

/*  The next [client][body] pair of a compact REQUEST (see mb_worker.h);
    the pairs after it stay in the socket, read by the next calls
    (batch_more). Returns S_REQUEST with *body set and reply_to kept, else
    S_NOTHING (a trailing frame without its pair: dropped). */
static int s_read_pair(mb_worker_t *self, zmq_msg_t *body)
{
    self->batch_more = false;
    zmq_msg_t client;
    if (!s_recv_frame(self->socket, &client, true)) {
        zmq_msg_close(&client);
        mb_zmq_drain_message(self->socket);
        mb_warn(0, "worker: dropped a compact REQUEST frame without its pair");
        return S_NOTHING;
    }
    /* An empty client frame names the client of the pair before (one
       frame less per request from a broker that read our READY option). */
    if (zmq_msg_size(&client) == 0)
        zmq_msg_copy(&client, &self->last_client);
    else
        zmq_msg_copy(&self->last_client, &client);
    zmq_msg_init(body);
    if (zmq_msg_recv(body, self->socket, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(body);
        zmq_msg_close(&client);
        mb_warn(0, "worker: dropped a compact REQUEST without a body");
        return S_NOTHING;
    }
    self->batch_more = zmq_msg_more(body);
    zmq_msg_init(&self->reply_to);
    zmq_msg_move(&self->reply_to, &client);
    zmq_msg_close(&client);
    self->have_reply_to = true;
    return S_REQUEST;
}

/*  Reads one message from the broker without waiting. Returns S_REQUEST
    with *body set and reply_to kept, S_DISCONNECTED on DISCONNECT,
    S_EMPTY when no message was waiting (libzmq has then taken in every
    command pending for the socket, so its ZMQ_FD will signal the next
    one), S_FAILED when libzmq fails for good (the context was
    terminated), else S_NOTHING (a heartbeat, a message dropped, or a
    signal). */
static int s_read_message(mb_worker_t *self, zmq_msg_t *body)
{
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    if (zmq_msg_recv(&frame, self->socket, ZMQ_DONTWAIT) < 0) {
        int err = errno;
        zmq_msg_close(&frame);
        if (err == EAGAIN)
            return S_EMPTY;
        if (err == EINTR)
            return S_NOTHING; /* the loop top looks at the stop flag */
        mb_error(0, "worker: receive failed: %s", zmq_strerror(err));
        return S_FAILED;
    }
    /* Any message from the broker shows it is alive (RFC 7). */
    int64_t now = s_now_ms();
    self->broker_expires_at = now + (int64_t)self->opts.heartbeat_ms * self->opts.liveness;

    if (zmq_msg_more(&frame) && zmq_msg_size(&frame) == 1 &&
        *(uint8_t *)zmq_msg_data(&frame) == MDPW_REQUEST) {
        zmq_msg_close(&frame);
        /* Only a broker that read our READY option sends these: it
           accepts us, and wants compact replies. */
        self->backoff_ms = self->opts.reconnect_min_ms;
        self->rejected = false;
        self->heard = true;
        self->compact = true;
        zmq_msg_close(&self->last_client);
        zmq_msg_init(&self->last_client); /* the first pair names its client */
        return s_read_pair(self, body);
    }
    bool ok = zmq_msg_more(&frame) && zmq_msg_size(&frame) == 0;
    zmq_msg_close(&frame);
    if (ok) {
        ok = s_recv_frame(self->socket, &frame, true) && mb_zmq_msg_eq(&frame, MDPW_WORKER);
        zmq_msg_close(&frame);
    }
    uint8_t command = 0;
    bool more = false;
    if (ok) {
        zmq_msg_init(&frame);
        ok = zmq_msg_recv(&frame, self->socket, ZMQ_DONTWAIT) >= 0 && zmq_msg_size(&frame) == 1;
        if (ok) {
            command = *(uint8_t *)zmq_msg_data(&frame);
            more = zmq_msg_more(&frame);
        }
        zmq_msg_close(&frame);
    }
    if (!ok) {
        mb_zmq_drain_message(self->socket);
        mb_warn(0, "worker: dropped a malformed message from the broker");
        return S_NOTHING;
    }
    if (command == MDPW_HEARTBEAT) {
        mb_zmq_drain_message(self->socket);
        return S_NOTHING;
    }
    if (command == MDPW_DISCONNECT) {
        mb_zmq_drain_message(self->socket);
        return S_DISCONNECTED;
    }
    /* A well-formed command other than DISCONNECT: the broker accepts us. */
    self->backoff_ms = self->opts.reconnect_min_ms;
    self->rejected = false;
    self->heard = true;
    if (command != MDPW_REQUEST || !more) {
        mb_zmq_drain_message(self->socket);
        mb_warn(0, "worker: dropped an unexpected command 0x%02x from the broker", command);
        return S_NOTHING;
    }
    /* REQUEST: [client address][empty][body...] */
    zmq_msg_t client;
    zmq_msg_t empty;
    if (!s_recv_frame(self->socket, &client, true)) {
        zmq_msg_close(&client);
        mb_zmq_drain_message(self->socket);
        mb_warn(0, "worker: dropped a REQUEST without a client address");
        return S_NOTHING;
    }
    zmq_msg_init(&empty);
    if (zmq_msg_recv(&empty, self->socket, ZMQ_DONTWAIT) < 0 || zmq_msg_size(&empty) != 0) {
        zmq_msg_close(&empty);
        zmq_msg_close(&client);
        mb_zmq_drain_message(self->socket);
        mb_warn(0, "worker: dropped a REQUEST without the empty delimiter");
        return S_NOTHING;
    }
    bool has_body = zmq_msg_more(&empty);
    zmq_msg_close(&empty);
    if (!has_body) {
        s_reply_bad_request(self, &client, "request has no body frame");
        zmq_msg_close(&client);
        return S_NOTHING;
    }
    if (!s_recv_frame(self->socket, body, false)) {
        zmq_msg_close(body);
        mb_zmq_drain_message(self->socket);
        s_reply_bad_request(self, &client, "request body must be exactly one frame");
        zmq_msg_close(&client);
        return S_NOTHING;
    }
    zmq_msg_init(&self->reply_to);
    zmq_msg_move(&self->reply_to, &client);
    zmq_msg_close(&client);
    self->have_reply_to = true;
    return S_REQUEST;
}

/*  Waits up to `timeout_ms` for the socket's ZMQ_FD to signal. Only
    called right after a receive found nothing waiting and with no send
    since (a send may take in the command that announces a message, and
    the fd would then stay quiet), which is the one state in which the
    fd's edge is sure to come. Returns 0 (signalled, timed out or
    interrupted: the caller reads and looks at its timers again) or MB_EIO. */
static int s_wait(mb_worker_t *self, long timeout_ms)
{
    int fd = mb_zmq_fd(self->socket);
    if (fd < 0) {
        mb_error(0, "worker: cannot get the socket's fd: %s", zmq_strerror(errno));
        return MB_EIO;
    }
    struct pollfd item = {.fd = fd, .events = POLLIN};
    if (poll(&item, 1, timeout_ms > INT_MAX ? INT_MAX : (int)timeout_ms) < 0 && errno != EINTR) {
        mb_error(0, "worker: poll failed: %s", strerror(errno));
        return MB_EIO;
    }
    return 0;
}

int mb_worker_recv(mb_worker_t *self, zmq_msg_t *body)
{
    if (self->have_reply_to) {
        mb_warn(0, "worker: previous request was not answered; its client will time out");
        s_forget_request(self);
    }
    /* One clock read serves the deferred replies' age and, when a request
       is waiting already (the usual case under load), its handing time:
       clock reads cost on VMs. Stale (-1) once the loop has waited. */
    int64_t now_us = s_now_us();
    if (self->n_deferred && now_us - self->deferred_since >= S_DEFER_US)
        s_flush_deferred(self);
    for (;;) {
        if (mb_signal_stop_requested()) {
            if (self->socket)
                s_flush_deferred(self);
            return MB_EINTR;
        }
        if (!self->socket) {
            now_us = -1; /* reconnecting backs off */
            if (s_reconnect(self, true) != 0)
                continue; /* connect only fails for a bad endpoint: keep backing off */
        }

        /* Read first: with the broker's credit, requests are often waiting
           already, and a poll before each would cost system calls for
           nothing. Only an empty socket makes us wait. */
        int got = self->batch_more ? s_read_pair(self, body) : s_read_message(self, body);
        if (got == S_REQUEST) {
            self->handed_at = now_us >= 0 ? now_us : s_now_us();
            return 0;
        }
        if (got == S_EMPTY && self->n_deferred) {
            /* Nothing more to do: the deferred replies go now. A send
               since the last read: read again before waiting. */
            s_flush_deferred(self);
            continue;
        }
        if (got == S_FAILED)
            return MB_EIO;
        if (got == S_DISCONNECTED) {
            /* Reconnect at once (a restarted broker forgot us), unless
               the broker keeps refusing: then back off, or a broker
               answering every READY with DISCONNECT makes a hot loop. */
            mb_info(0, "worker: broker sent DISCONNECT; reconnecting%s",
                    self->rejected ? " after a backoff" : "");
            bool wait = self->rejected;
            self->rejected = true;
            /* A READY with the compact option refused before anything else
               came may be a broker that does not take the extra frame:
               the next READY is plain RFC 7, the one after tries again. */
            self->plain_ready = !self->heard && !self->plain_ready;
            s_reconnect(self, wait);
            now_us = -1;
            continue;
        }
        int64_t now = s_now_ms();
        if (now >= self->broker_expires_at) {
            mb_warn(0, "worker: broker silent for %d ms; reconnecting in %d ms",
                    self->opts.heartbeat_ms * self->opts.liveness, self->backoff_ms);
            s_reconnect(self, true);
            now_us = -1;
            continue;
        }
        if (now >= self->heartbeat_at) {
            s_send_command(self, MDPW_HEARTBEAT, NULL, 0, false);
            self->heartbeat_at = now + self->opts.heartbeat_ms;
            continue; /* a send since the last read: read again before waiting */
        }
        if (got != S_EMPTY)
            continue; /* a heartbeat or a dropped message: there may be more */
        int64_t wake = self->heartbeat_at < self->broker_expires_at ? self->heartbeat_at
                                                                    : self->broker_expires_at;
        if (s_wait(self, (long)(wake - now)) != 0)
            return MB_EIO;
        now_us = -1;
    }
}

int mb_worker_reply(mb_worker_t *self, const void *data, size_t size)
{
    if (!self->have_reply_to || !self->socket)
        return MB_EINVAL;
    int rc = 0;
    int64_t now_us = s_now_us(); /* one clock read per reply: they cost on VMs */
    if (self->compact) {
        /* Deferred: sent with the others when the worker runs out of
           input, has MB_COMPACT_PAIRS_MAX, or the oldest waited S_DEFER_US. */
        if (!self->n_deferred)
            self->deferred_since = now_us;
        zmq_msg_t *pair = &self->deferred[2 * self->n_deferred++];
        zmq_msg_init(&pair[0]);
        zmq_msg_move(&pair[0], &self->reply_to); /* s_forget_request() closes what is left */
        zmq_msg_init_size(&pair[1], size);
        if (size)
            memcpy(zmq_msg_data(&pair[1]), data, size);
        if (now_us - self->handed_at >= S_DEFER_US)
            self->slow_until = now_us + S_SLOW_HOLD_US;
        if (self->n_deferred == MB_COMPACT_PAIRS_MAX || now_us < self->slow_until ||
            now_us - self->deferred_since >= S_DEFER_US)
            rc = s_flush_deferred(self);
    } else {
        rc = s_send_reply(self, &self->reply_to, data, size);
    }
    s_forget_request(self);
    /* A reply is traffic: no HEARTBEAT needed for another interval, and the
       broker, which does not heartbeat a busy worker, gets a full liveness
       window again from now. */
    int64_t now = now_us / 1000;
    self->heartbeat_at = now + self->opts.heartbeat_ms;
    self->broker_expires_at = now + (int64_t)self->opts.heartbeat_ms * self->opts.liveness;
    if (rc) {
        mb_warn(0, "worker: reply could not be sent: %s", mb_strerror(rc));
        return MB_EIO;
    }
    return 0;
}

unsigned long mb_worker_reconnects(mb_worker_t *self)
{
    return self->reconnects;
}
