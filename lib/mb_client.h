/*  mb_client — an MDP/0.1 client on a DEALER socket, with many requests in
    flight at once.

    MDP replies carry no correlation of their own, so musicbus correlates by
    the envelope's rid (mb_envelope.h): the caller picks a rid per request
    and matches replies by the rid they echo.

    Non-blocking use (the gateway): add mb_client_fd() to your poller. The
    fd is edge-triggered, so after every send and receive, and whenever the
    fd fires, call mb_client_recv() until it returns MB_EAGAIN.

    Blocking use (tools, tests): mb_client_call() with one request at a time.

    The socket reconnects by itself when the broker restarts (every 100 ms,
    backing off to 1 s); requests in flight at that moment are lost and the
    caller's deadline answers them.

    The socket is set ZMQ_IMMEDIATE: while no connection to the broker is
    up, mb_client_send() fails at once with MB_EAGAIN instead of queueing,
    so the gateway can answer 503 right away. Just after mb_client_new()
    the connection takes a moment to come up; mb_client_call() waits for
    it within its timeout. */
#ifndef MB_CLIENT_H
#define MB_CLIENT_H

#include <stddef.h>
#include <zmq.h>

/*  Compact framing (a musicbus extension of MDP/0.1, like the workers'
    one in mb_worker.h). The client's routing id starts with
    MB_CLIENT_ID_PREFIX (then 16 random bytes); a broker that knows the
    extension answers the requests of such a client, when the worker's
    reply is one frame, as
        [MB_CLIENT_COMPACT][body]([body])...
    instead of [empty]["MDPC01"][service][body]: the replies it has for the
    client when it finishes a batch of work go in one message (one message
    for many replies costs the client's I/O thread, and the broker's, a
    wake-up and a few system calls less per reply); mb_client_recv()
    returns them one at a time. Once compact, requests queued with
    mb_client_queue() go several in one message too,
        [MB_CLIENT_COMPACT][service][body]([service][body])...
    where an empty service frame names the service of the pair before. Once the client has
    received one, it sends its requests as
        [MB_CLIENT_COMPACT][service][body]
    Brokers that do not know the extension see an opaque routing id and
    RFC 7 requests, and answer in RFC 7's form, which the client always
    reads. An RFC 7 message starts with an empty frame, so a one-byte
    first frame marks a compact one without ambiguity. The client stays
    compact for the life of the socket: a broker restarted as a version
    without the extension would drop its requests as malformed (and the
    caller's deadlines answer them) until the client is made anew. */
#define MB_CLIENT_ID_PREFIX "mb:c2:"
/*  The prefix of clients that read one body per compact reply; brokers
    answer them so still. */
#define MB_CLIENT_ID_PREFIX_V1 "mb:c1:"
#define MB_CLIENT_COMPACT 0x11

typedef struct mb_client mb_client_t;

/*  Connects to the broker at `endpoint`. Returns NULL when the endpoint is
    invalid (logged). */
mb_client_t *mb_client_new(const char *endpoint);

/*  Closes the socket (linger 0) and frees the client; nulls *self_p. Safe
    to call twice. */
void mb_client_destroy(mb_client_t **self_p);

/*  Sends one request to `service` without blocking. Returns 0, MB_EAGAIN
    when the socket's send queue is full, MB_EINVAL for an empty or
    oversized service name, MB_EIO otherwise. */
int mb_client_send(mb_client_t *self, const char *service, const void *body, size_t size);

/*  Like mb_client_send(), but the request may wait, unsent, for more to
    go with it in one message: call mb_client_flush() once the requests at
    hand are queued (the gateway: those of one event-loop pass). One
    message instead of one per request saves the client's I/O thread, the
    broker's and the broker a wake-up and some system calls per request.
    Until the broker has answered compactly (mb_client.h's top), this is
    mb_client_send(). Returns 0, or MB_EAGAIN when the socket's send queue
    is full (only the first request of a message can meet that; the
    request is then not queued), MB_EINVAL, MB_EIO. mb_client_send() and
    mb_client_call() flush first. At most 31 requests go in one message:
    the 31st flushes by itself. */
int mb_client_queue(mb_client_t *self, const char *service, const void *body, size_t size);

/*  Sends what mb_client_queue() queued. Returns 0 (also when nothing was
    queued). */
int mb_client_flush(mb_client_t *self);

/*  Receives one reply without blocking. Returns 0 with *body initialised
    to the reply's body frame (caller zmq_msg_close()s it), MB_EAGAIN when
    none is waiting, or MB_EPROTO when a malformed message arrived (it is
    dropped and counted; call again). MB_EIO when libzmq fails (rare). */
int mb_client_recv(mb_client_t *self, zmq_msg_t *body);

/*  Returns the socket's ZMQ_FD, for epoll/poll. */
int mb_client_fd(mb_client_t *self);

/*  Returns the raw ZeroMQ socket, for zmq_poll. Borrowed. */
void *mb_client_socket(mb_client_t *self);

/*  Number of malformed messages dropped so far. */
unsigned long mb_client_dropped(mb_client_t *self);

/*  Sends one request and waits up to `timeout_ms` for a reply. Returns 0
    with *reply initialised (caller closes it), MB_ETIMEDOUT, MB_EINTR when
    interrupted by a signal, or the errors of mb_client_send(). A negative
    `timeout_ms` waits without limit. Replies that
    are not for this request (stale rids after a timeout) are the caller's
    to recognise: this returns the first reply that arrives. */
int mb_client_call(mb_client_t *self, const char *service, const void *body, size_t size,
                   int timeout_ms, zmq_msg_t *reply);

#endif
