/*  mb_client — an MDP/0.1 client on a DEALER socket. */
#include "mb_client.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "mb_alloc.h"
#include "mb_error.h"
#include "mb_log.h"
#include "mb_signal.h"
#include "mb_zmq.h"
#include "mdp.h"

#define S_SERVICE_MAX 255       /* longest service name sent */
#define S_RECONNECT_IVL_MS 100  /* first reconnect attempt after a broker loss */
#define S_RECONNECT_MAX_MS 1000 /* reconnect backoff cap: a restarted broker is found within 1 s   \
                                 */
#define S_HWM 100000            /* messages queued each way: room for many requests in flight */

struct mb_client {
    void *socket;          /* DEALER connected to the broker */
    unsigned long dropped; /* malformed messages received and dropped */
    bool compact;          /* the broker sent a compact reply: send compact requests */
    bool batch_more;       /* the compact reply being read has more bodies */
    size_t queued;         /* requests in the compact message being sent (mb_client_queue):
                              its last body is `held`, not sent yet */
    zmq_msg_t held;        /* body of the last queued request, when queued > 0 */
    char last_service[S_SERVICE_MAX + 1]; /* of the last queued request */
};

/*  Sets the socket's routing id to MB_CLIENT_ID_PREFIX and 16 random
    bytes: unique, as the broker's ROUTER_HANDOVER hands a connection to
    whoever shows up with its id. Without randomness the socket keeps
    libzmq's own id (RFC 7 replies only). */
static void s_set_routing_id(void *socket)
{
    unsigned char id[sizeof MB_CLIENT_ID_PREFIX - 1 + 16];
    size_t prefix = sizeof MB_CLIENT_ID_PREFIX - 1;
    memcpy(id, MB_CLIENT_ID_PREFIX, prefix);
    size_t got = 0;
    while (got < sizeof id - prefix) {
        ssize_t n = getrandom(id + prefix + got, sizeof id - prefix - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        got += (size_t)n;
    }
    zmq_setsockopt(socket, ZMQ_ROUTING_ID, id, sizeof id);
}

mb_client_t *mb_client_new(const char *endpoint)
{
    void *socket = zmq_socket(mb_zmq_context(), ZMQ_DEALER);
    if (!socket) {
        mb_error(0, "client: zmq_socket failed: %s", zmq_strerror(errno));
        return NULL;
    }
    int linger = 0;
    /* IMMEDIATE: queue only to a completed connection. When the broker is
       down a send fails at once with MB_EAGAIN, so the gateway can answer
       503 right away instead of letting requests pile up in a pipe and
       reach a restarted broker after their callers gave up. */
    int immediate = 1;
    int ivl = S_RECONNECT_IVL_MS, ivl_max = S_RECONNECT_MAX_MS;
    int hwm = S_HWM;
    zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(socket, ZMQ_IMMEDIATE, &immediate, sizeof immediate);
    zmq_setsockopt(socket, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(socket, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    zmq_setsockopt(socket, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(socket, ZMQ_RCVHWM, &hwm, sizeof hwm);
    s_set_routing_id(socket);
    if (!endpoint || zmq_connect(socket, endpoint) != 0) {
        mb_error(0, "client: cannot connect to '%s': %s", endpoint ? endpoint : "(null)",
                 zmq_strerror(errno));
        zmq_close(socket);
        return NULL;
    }
    mb_client_t *self = mb_calloc(1, sizeof *self);
    self->socket = socket;
    return self;
}

void mb_client_destroy(mb_client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    mb_client_t *self = *self_p;
    if (self->queued)
        zmq_msg_close(&self->held);
    zmq_close(self->socket);
    free(self);
    *self_p = NULL;
}

int mb_client_flush(mb_client_t *self)
{
    if (!self->queued)
        return 0;
    self->queued = 0;
    /* The message has started: libzmq takes its remaining frames. */
    if (zmq_msg_send(&self->held, self->socket, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&self->held);
        mb_error(0, "client: send failed mid-message: %s", zmq_strerror(errno));
        return MB_EIO;
    }
    return 0;
}

int mb_client_queue(mb_client_t *self, const char *service, const void *body, size_t size)
{
    if (!self->compact)
        return mb_client_send(self, service, body, size);
    size_t service_len = service ? strlen(service) : 0;
    if (service_len == 0 || service_len > S_SERVICE_MAX)
        return MB_EINVAL;
    if (!self->queued) {
        static const unsigned char compact = MB_CLIENT_COMPACT;
        int rc = mb_zmq_send(self->socket, &compact, 1, true, ZMQ_DONTWAIT);
        if (rc)
            return rc == MB_EAGAIN ? MB_EAGAIN : MB_EIO;
    } else if (zmq_msg_send(&self->held, self->socket, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&self->held);
        self->queued = 0;
        mb_error(0, "client: send failed mid-message: %s", zmq_strerror(errno));
        return MB_EIO;
    }
    /* An empty service frame names the service of the request before (the
       broker reads it so from an mb:c2: client): one frame less each. */
    bool same = self->queued && strcmp(self->last_service, service) == 0;
    if (!same)
        memcpy(self->last_service, service, service_len + 1);
    /* The body is held back, as the message's last frame must go without
       ZMQ_SNDMORE and only the next call or the flush knows it is last. */
    if (mb_zmq_send(self->socket, same ? "" : service, same ? 0 : service_len, true,
                    ZMQ_DONTWAIT)) {
        self->queued = 0;
        mb_error(0, "client: send to '%s' failed mid-message: %s", service, zmq_strerror(errno));
        return MB_EIO;
    }
    zmq_msg_init_size(&self->held, size);
    if (size)
        memcpy(zmq_msg_data(&self->held), body, size);
    if (++self->queued == MB_COMPACT_PAIRS_MAX)
        return mb_client_flush(self);
    return 0;
}

int mb_client_send(mb_client_t *self, const char *service, const void *body, size_t size)
{
    size_t service_len = service ? strlen(service) : 0;
    if (service_len == 0 || service_len > S_SERVICE_MAX)
        return MB_EINVAL;
    int flushed = mb_client_flush(self);
    if (flushed)
        return flushed;
    if (self->compact) {
        /* A compact request sent alone is a queue of one. */
        int rc = mb_client_queue(self, service, body, size);
        return rc ? rc : mb_client_flush(self);
    }
    /* Only the first frame can meet a full queue: once a message has
       started, libzmq accepts its remaining frames. */
    int rc = mb_zmq_send(self->socket, "", 0, true, ZMQ_DONTWAIT);
    if (rc)
        return rc == MB_EAGAIN ? MB_EAGAIN : MB_EIO;
    if (mb_zmq_send(self->socket, MDPC_CLIENT, strlen(MDPC_CLIENT), true, ZMQ_DONTWAIT) ||
        mb_zmq_send(self->socket, service, service_len, true, ZMQ_DONTWAIT) ||
        mb_zmq_send(self->socket, body, size, false, ZMQ_DONTWAIT)) {
        mb_error(0, "client: send to '%s' failed mid-message: %s", service, zmq_strerror(errno));
        return MB_EIO;
    }
    return 0;
}

/*  Receives the next frame of the message being read into *frame and
    returns true when it arrived and `more` matches what is expected. */
static bool s_recv_frame(void *socket, zmq_msg_t *frame, bool expect_more)
{
    if (zmq_msg_recv(frame, socket, ZMQ_DONTWAIT) < 0)
        return false;
    return (zmq_msg_more(frame) != 0) == expect_more;
}

int mb_client_recv(mb_client_t *self, zmq_msg_t *body)
{
    if (self->batch_more) {
        /* The next body of a compact reply: frames of a message are all
           here once its first is. */
        self->batch_more = false;
        zmq_msg_init(body);
        if (zmq_msg_recv(body, self->socket, ZMQ_DONTWAIT) >= 0) {
            self->batch_more = zmq_msg_more(body);
            return 0;
        }
        zmq_msg_close(body);
    }
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    if (zmq_msg_recv(&frame, self->socket, ZMQ_DONTWAIT) < 0) {
        int err = errno;
        zmq_msg_close(&frame);
        if (err == EAGAIN)
            return MB_EAGAIN;
        if (err == EINTR)
            return MB_EINTR;
        return MB_EIO;
    }
    /* A compact reply, [MB_CLIENT_COMPACT] [body]: the broker knows the
       extension, so our requests may be compact from now on. */
    if (zmq_msg_more(&frame) && zmq_msg_size(&frame) == 1 &&
        *(unsigned char *)zmq_msg_data(&frame) == MB_CLIENT_COMPACT) {
        zmq_msg_close(&frame);
        zmq_msg_init(body);
        if (zmq_msg_recv(body, self->socket, ZMQ_DONTWAIT) >= 0) {
            self->compact = true;
            self->batch_more = zmq_msg_more(body);
            return 0;
        }
        zmq_msg_close(body);
        mb_zmq_drain_message(self->socket);
        self->dropped++;
        mb_warn(0, "client: dropped a malformed message from the broker (%lu so far)",
                self->dropped);
        return MB_EPROTO;
    }
    /* Expect [empty] ["MDPC01"] [service] [body]. */
    bool ok = zmq_msg_more(&frame) && zmq_msg_size(&frame) == 0;
    if (ok) {
        zmq_msg_close(&frame);
        zmq_msg_init(&frame);
        ok = s_recv_frame(self->socket, &frame, true) && mb_zmq_msg_eq(&frame, MDPC_CLIENT);
    }
    if (ok) {
        zmq_msg_close(&frame);
        zmq_msg_init(&frame);
        ok = s_recv_frame(self->socket, &frame, true);
    }
    zmq_msg_close(&frame);
    if (ok) {
        zmq_msg_init(body);
        if (s_recv_frame(self->socket, body, false))
            return 0;
        zmq_msg_close(body);
    }
    mb_zmq_drain_message(self->socket);
    self->dropped++;
    mb_warn(0, "client: dropped a malformed message from the broker (%lu so far)", self->dropped);
    return MB_EPROTO;
}

int mb_client_fd(mb_client_t *self)
{
    return mb_zmq_fd(self->socket);
}

void *mb_client_socket(mb_client_t *self)
{
    return self->socket;
}

unsigned long mb_client_dropped(mb_client_t *self)
{
    return self->dropped;
}

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*  Waits for `events` on the socket until `deadline` (ms, monotonic; -1
    for none). Returns 0 when ready, MB_ETIMEDOUT, MB_EINTR or MB_EIO. */
static int s_wait(mb_client_t *self, short events, int64_t deadline)
{
    for (;;) {
        if (mb_signal_stop_requested())
            return MB_EINTR;
        long timeout = -1;
        if (deadline >= 0) {
            timeout = (long)(deadline - s_now_ms());
            if (timeout < 0)
                timeout = 0;
        }
        zmq_pollitem_t item = {.socket = self->socket, .events = events};
        int rc = zmq_poll(&item, 1, timeout);
        if (rc < 0) {
            if (errno == EINTR)
                continue; /* the loop top decides whether it was a stop */
            return MB_EIO;
        }
        if (item.revents & events)
            return 0;
        if (deadline >= 0 && s_now_ms() >= deadline)
            return MB_ETIMEDOUT;
    }
}

int mb_client_call(mb_client_t *self, const char *service, const void *body, size_t size,
                   int timeout_ms, zmq_msg_t *reply)
{
    int64_t deadline = timeout_ms < 0 ? -1 : s_now_ms() + timeout_ms;
    int rc;
    /* With IMMEDIATE a send fails until the connection is up: wait for it
       within the same deadline rather than failing a call made just after
       mb_client_new(). */
    while ((rc = mb_client_send(self, service, body, size)) == MB_EAGAIN) {
        rc = s_wait(self, ZMQ_POLLOUT, deadline);
        if (rc)
            return rc;
    }
    if (rc)
        return rc;
    for (;;) {
        rc = mb_client_recv(self, reply);
        if (rc == 0)
            return 0;
        if (rc != MB_EAGAIN && rc != MB_EPROTO)
            return rc;
        if (rc == MB_EAGAIN) {
            rc = s_wait(self, ZMQ_POLLIN, deadline);
            if (rc)
                return rc;
        }
    }
}
