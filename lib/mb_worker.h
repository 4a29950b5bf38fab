/*  mb_worker — an MDP/0.1 worker: READY, heartbeats both ways, reconnect
    with backoff when the broker goes silent, DISCONNECT on the way out.

    One request at a time, the protocol's model:
        while (mb_worker_recv (worker, &request) == 0) {
            ... build reply ...
            mb_worker_reply (worker, reply, size);
        }
    mb_worker_recv() returns MB_EINTR once mb_signal_stop_requested()
    (mb_signal.h) is true, so a SIGTERM lets the request in hand finish,
    then the loop ends and mb_worker_destroy() says DISCONNECT.

    Reconnecting: when the broker is silent for liveness x heartbeat_ms the
    worker closes its socket, waits the backoff (reconnect_min_ms, doubling
    up to reconnect_max_ms, reset by any message from the broker) and says
    READY on a new socket. A DISCONNECT from the broker makes it reconnect
    at once, except when the previous connection also ended in DISCONNECT
    with nothing else in between: then it backs off, so a broker refusing
    every READY does not cause a hot loop.

    Compact framing (a musicbus extension of MDP/0.1, used only when both
    ends know it; musicbus-broker does, see broker/README.md): the READY
    carries one more frame after the service name, MB_WORKER_OPT_COMPACT
    (brokers in the zguide's shape read the service frame only; when a
    READY with it is refused by an immediate DISCONNECT, the next READY is
    plain RFC 7). A broker that knows the option may then send requests
    whose body is one frame as
        [0x02 REQUEST][client][body]([client][body])...
    (no empty delimiter, no "MDPW01", no empty frame before a body; several
    requests in one message, returned one per mb_worker_recv() in order),
    and once the worker has had one it answers them as
        [0x03 REPLY][client][body]([client][body])...
    in order, several replies in one message: a reply is deferred until
    the worker finds no more requests waiting, has 31 replies in hand, or
    is back in mb_worker_recv() with the oldest deferred reply 1 ms old
    (a request that took 1 ms or more turns deferring off for a second,
    so a service with slow ops sends each reply at once). Each message
    costs the sending I/O thread, the broker and its I/O thread a wake-up
    more often than not, so this is cheaper than a message per reply.
    In both directions an empty client frame names the client of the pair
    before in the same message (usually one gateway sent them all): one
    frame less per request each way.
    (Brokers that knew only one pair per REPLY were asked with the READY
    option "mb:compact"; MB_WORKER_OPT_COMPACT is a new name, so such a
    broker refuses it and the worker falls back to RFC 7.)
    Everything else, and everything with a broker that does not send
    compact REQUESTs, stays RFC 7's; classic REQUESTs are always read. An
    RFC 7 message starts with an empty frame, so a one-byte first frame
    marks a compact one without ambiguity. libzmq's cost is per frame and
    per message (each is queued, encoded, decoded and handed between
    threads on its own), so this halves the worker's side of a round trip. */
#ifndef MB_WORKER_H
#define MB_WORKER_H

#include <stddef.h>
#include <zmq.h>

/*  The READY option frame that asks for compact framing. */
#define MB_WORKER_OPT_COMPACT "mb:compact2"
/*  The option of workers that send one [client][body] pair per REPLY;
    brokers accept it still. */
#define MB_WORKER_OPT_COMPACT_V1 "mb:compact"

typedef struct mb_worker mb_worker_t;

typedef struct {
    int heartbeat_ms;     /* interval between heartbeats (default MUSICBUS_HEARTBEAT_MS or 1000) */
    int liveness;         /* missed heartbeats before the broker is presumed dead (default 3) */
    int reconnect_min_ms; /* first reconnect delay (default 100); doubles each failure */
    int reconnect_max_ms; /* cap of the reconnect delay (default 5000) */
} mb_worker_opts_t;

/*  Fills *opts with the defaults (environment included). */
void mb_worker_opts_default(mb_worker_opts_t *opts);

/*  Connects to the broker at `endpoint` and offers `service`. `opts` may be
    NULL for the defaults. Returns NULL when the endpoint is invalid. */
mb_worker_t *mb_worker_new(const char *endpoint, const char *service,
                           const mb_worker_opts_t *opts);

/*  Sends DISCONNECT, closes the socket and frees the worker; nulls
    *self_p. Safe to call twice. DISCONNECT leaves during
    mb_zmq_shutdown(), which waits for it at most 200 ms. */
void mb_worker_destroy(mb_worker_t **self_p);

/*  Waits for the next request, heartbeating and reconnecting meanwhile.
    Returns 0 with *body initialised to the request's body frame (caller
    zmq_msg_close()s it) and the client's address kept for
    mb_worker_reply(); MB_EINTR when the process was asked to stop; MB_EIO
    when libzmq fails for good (the context was terminated). A
    request whose body is not exactly one frame is answered by the worker
    itself with an error reply and not returned. */
int mb_worker_recv(mb_worker_t *self, zmq_msg_t *body);

/*  Sends the reply to the request last returned by mb_worker_recv()
    (compact: defers it, see above; mb_worker_recv() and
    mb_worker_destroy() send what is deferred).
    Returns 0, MB_EINVAL when there is no request to answer, MB_EIO. */
int mb_worker_reply(mb_worker_t *self, const void *data, size_t size);

/*  Number of times the worker reconnected to the broker. */
unsigned long mb_worker_reconnects(mb_worker_t *self);

#endif
