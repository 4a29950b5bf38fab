/*  bus — the service "bus", answered by the broker itself: durable event
    streams over event_log (see broker/README.md, "Event streams").

      bus.publish {topic, key, data}            -> 201 {seq}
      bus.publish {events: [{topic, key, data}]} -> 201 {first, count}
      bus.fetch   {topics | prefix, from, max, wait}
                                                -> 200 {events, next, head}

    A publish is answered once its events are committed to disk; a fetch
    that finds nothing and may wait is parked, and answered by the first
    commit that brings a matching event, or empty when its wait ends.
    Everything here runs on the broker's main thread; the disk is the
    event log's writer thread's. Replies leave through the broker's
    function (bus_reply_fn), which frames them as MDP client replies from
    service "bus". */
#ifndef BUS_H
#define BUS_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#define BUS_SERVICE "bus"

typedef struct bus bus_t;

typedef struct {
    const char *dir;          /* the event log's LMDB folder */
    size_t map_size;          /* its map size, bytes */
    uint64_t retention_ms;    /* 0 = no age limit */
    uint64_t retention_bytes; /* 0 = no size limit */
    int timeout_ms;           /* bounds a long poll whose envelope has no ttl */
} bus_opts_t;

typedef struct {
    uint64_t publishes; /* bus.publish requests acknowledged */
    uint64_t events;    /* events they carried */
    uint64_t fetches;   /* bus.fetch requests answered with events or empty */
    uint64_t errors;    /* bus requests answered with an error */
    uint64_t parked;    /* fetches waiting now */
    uint64_t pruned;    /* events deleted by retention */
} bus_stats_t;

/*  Sends one reply body to `client` (a routing id frame the function may
    move out). */
typedef void(bus_reply_fn)(void *arg, zmq_msg_t *client, const void *body, size_t size);

/*  Opens the event log and starts its writer. Returns NULL when that
    fails (logged). `reply` and `arg` are kept. */
bus_t *bus_new(const bus_opts_t *opts, bus_reply_fn *reply, void *arg);

/*  Finishes what is in hand: waits for the writer to commit every publish
    submitted and answers them, answers parked fetches (with what there is,
    usually nothing), then closes the log and frees everything; nulls
    *self_p. Call it while replies can still be sent. Safe twice. */
void bus_destroy(bus_t **self_p);

/*  Handles one request for service "bus": `client` is the routing id and
    body[0..n_body) the body frames (a musicbus envelope is exactly one).
    May move `client` out (a parked fetch keeps it); the caller closes
    what it gave either way. `now` is the broker's monotonic clock, ms. */
void bus_request(bus_t *self, zmq_msg_t *client, zmq_msg_t *body, size_t n_body, int64_t now);

/*  The socket to poll (ZMQ_POLLIN) for commits to answer. Borrowed. */
void *bus_socket(bus_t *self);

/*  Answers the publishes the writer has committed (or refused) and wakes
    the parked fetches they concern. Never waits. */
void bus_process(bus_t *self);

/*  The earliest deadline of a parked fetch (monotonic ms), or INT64_MAX. */
int64_t bus_next_deadline(bus_t *self);

/*  Answers the parked fetches whose wait is over, with nothing. */
void bus_expire(bus_t *self, int64_t now);

void bus_stats(bus_t *self, bus_stats_t *stats);

#endif
