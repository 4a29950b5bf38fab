/*  mb_events — durable event streams on the bus: publishing, fetching,
    consumer groups that apply each event exactly once into LMDB, and an
    outbox that makes "change state, then publish" safe against crashes.

    The broker keeps the streams (service "bus", answered by the broker
    itself): one log, every event with a sequence number (seq, from 1,
    increasing), a topic ("catalog.track"), a key (the id the event is
    about) and msgpack data.

    Publishing (batch tools, tests):

        mb_events_t *bus = mb_events_new ("tcp://127.0.0.1:5555");
        uint64_t seq;
        int rc = mb_events_publish (bus, "stats.play", play_id, data, size, &seq);

    The call returns once the broker has the event on disk. Delivery from
    a producer is AT LEAST ONCE: a publish that timed out (MB_ETIMEDOUT)
    may still have been written, and publishing it again makes a second
    event. Retrying is the caller's decision; consumers that must not count
    a thing twice dedupe by a domain key carried in the event (the play's
    client-made id, say), which is what `key` is for.

    Actors do not publish directly: a crash between committing their state
    and publishing would lose the event. They add the event to the OUTBOX
    (mb_outbox_add(), or mb_call_outbox_add() in mb_actor.h) in the same
    LMDB write transaction as the state change; the runtime publishes the
    outbox in order and deletes what the broker acknowledged. So an event
    exists if and only if its state change was committed, and it reaches
    the bus at least once (twice only when a crash falls between the
    broker's acknowledgement and the outbox delete).

    Consuming: a consumer group (mb_consumer_def_t) names topics and an
    apply function. mb_consumer_run_once() reads the group's offset from
    LMDB, fetches the events after it, and in ONE write transaction
    re-reads the offset, applies the events not yet applied and stores the
    new offset. Because the offset moves in the same transaction as the
    state, a crash at any moment neither loses nor double-applies an
    event, and several processes (or threads) of the same actor may run
    the same group at once: whoever commits first applies a batch, the
    others see the offset has moved and skip what it covers.

    Offsets live in the named database "_offsets" (key: the group name;
    value: 16 bytes, big-endian uint64 `next` — every matching event below
    it is handled — then big-endian uint64 `skipped`); the outbox in
    "_outbox" (key: 8-byte big-endian local sequence from 1; value: the
    msgpack map {topic, key, data} exactly as bus.publish takes it). Both
    are opened by mb_events_open_dbs(), which mb_actor_open_env() calls.

    Threads: an mb_events_t or mb_consumer_t belongs to one thread at a
    time (it owns a ZeroMQ socket). Functions taking an MDB_env may be
    called from any thread. */
#ifndef MB_EVENTS_H
#define MB_EVENTS_H

#include <lmdb.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mb_envelope.h"

#define MB_TOPIC_MAX 128            /* bytes in a topic, of [a-z0-9._-] */
#define MB_EVENT_KEY_MAX 256        /* bytes in an event key */
#define MB_EVENT_DATA_MAX (1 << 20) /* bytes of msgpack in an event's data */
/* Containers nested in an event's data. A fetch reply wraps data in four
   levels (reply, body, events, event) and envelopes allow 32 in all
   (msgpack-c's own limit); 24 leaves room for one more wrapping. */
#define MB_EVENT_DATA_DEPTH 24
#define MB_PUBLISH_BATCH_MAX 10000 /* events in one bus.publish */
#define MB_FETCH_MAX 10000         /* events asked for in one bus.fetch */
#define MB_FETCH_WAIT_MAX 30000    /* longest long poll, ms */
#define MB_GROUP_MAX 64            /* bytes in a consumer group name, of [a-z0-9._-] */
#define MB_EVENTS_DBS 2            /* named LMDB databases this module uses */

/*  True when `s` (len bytes) is a valid topic: 1..MB_TOPIC_MAX bytes of
    a-z 0-9 . _ - . A topic prefix is the same with 0 bytes allowed. */
bool mb_topic_valid(const char *s, size_t len);

/* ---- publishing and fetching ---------------------------------------- */

typedef struct mb_events mb_events_t;

/*  One event to publish. */
typedef struct {
    const char *topic; /* NUL-terminated; see mb_topic_valid() */
    const char *key;   /* NUL-terminated, 0..MB_EVENT_KEY_MAX bytes; NULL for "" */
    const void *data;  /* exactly one encoded msgpack object */
    size_t data_len;   /* 1..MB_EVENT_DATA_MAX bytes */
} mb_event_out_t;

/*  One event read from the bus. Every pointer borrows from the batch it
    came in (mb_batch_t), valid until mb_batch_release(). */
typedef struct {
    uint64_t seq;      /* position in the log */
    const char *topic; /* not NUL-terminated */
    size_t topic_len;
    const char *key; /* not NUL-terminated; may be empty */
    size_t key_len;
    uint64_t time;              /* when the broker logged it (ms since the Unix epoch) */
    const msgpack_object *data; /* the event's data */
    /* NULL, or why the broker's record of this event is malformed (a
       missing topic, say). Consumers skip such events without calling
       apply, and count them as skipped. */
    const char *invalid;
    void *ctx; /* the runtime's (mb_event_invalid); do not touch */
} mb_event_t;

/*  What to fetch. Exactly one of `topics` and `prefix` is set. */
typedef struct {
    const char *const *topics; /* NULL-terminated list of 1..64 topics, or NULL */
    const char *prefix;        /* topic prefix ("catalog."; "" for every topic), or NULL */
    uint64_t from;             /* first seq wanted; 0 for the start of the log */
    unsigned max;              /* events at most, 1..MB_FETCH_MAX; 0 for the broker's default */
    unsigned wait_ms;          /* long poll when nothing matches, 0..MB_FETCH_WAIT_MAX */
} mb_fetch_t;

/*  The answer to a fetch. */
typedef struct {
    mb_reply_t reply;   /* owns the decoded reply; everything else borrows */
    mb_event_t *events; /* `count` events in increasing seq, all in [from, next) */
    size_t count;
    uint64_t next; /* pass as `from` next time: no matching event in
                      [from, next) is missing from `events` */
    uint64_t head; /* seq of the newest event in the log (0: empty log) */
} mb_batch_t;

/*  Connects to the broker at `endpoint`. Calls wait at most
    MUSICBUS_TIMEOUT_MS (default 5000) for an answer (fetches: that plus
    their wait). Returns NULL when the endpoint is invalid (logged). */
mb_events_t *mb_events_new(const char *endpoint);

/*  Closes the connection and frees it; nulls *self_p. Safe twice. */
void mb_events_destroy(mb_events_t **self_p);

/*  Sets how long a call waits for the broker's answer (beyond a fetch's
    own wait), in ms (> 0). */
void mb_events_set_timeout(mb_events_t *self, int timeout_ms);

/*  Publishes one event and sets *seq (may be NULL) to its sequence number
    once the broker has it on disk. Returns 0, or:
      MB_EINVAL    bad topic or key, or data that is not one msgpack object
                   nested at most MB_EVENT_DATA_DEPTH deep (nothing sent),
                   or the broker refused it (mb_events_error() says why);
      MB_ETOOBIG   data larger than MB_EVENT_DATA_MAX;
      MB_ETIMEDOUT no answer in time: the event MAY have been written;
      MB_EAGAIN    the broker answered 503 (overloaded, unavailable);
      MB_EFULL     the broker's storage is full (507);
      MB_EPROTO    the broker's answer made no sense;
      MB_EIO       anything else (ZeroMQ, or another 5xx from the broker). */
int mb_events_publish(mb_events_t *self, const char *topic, const char *key, const void *data,
                      size_t data_len, uint64_t *seq);

/*  Publishes `count` (1..MB_PUBLISH_BATCH_MAX) events at once, all or
    none; sets *first (may be NULL) to the seq of events[0], the others
    following in order. Errors as mb_events_publish(); an invalid event
    fails the whole batch before anything is sent. */
int mb_events_publish_batch(mb_events_t *self, const mb_event_out_t *events, size_t count,
                            uint64_t *first);

/*  Fetches events as `query` says into *batch, waiting up to
    query->wait_ms when none match yet. On success the caller must
    mb_batch_release() it; on failure there is nothing to release.
    Returns 0, or:
      MB_EINVAL    a bad query (nothing sent), or the broker refused it;
      MB_ENOTFOUND `from` is older than the broker keeps (410
                   "retention_gap"): events were lost to this reader;
      MB_EINTR     the process (or the consumer) was asked to stop;
      MB_EPROTO    the answer is malformed (for instance an event without
                   a seq, or seqs out of order);
      and the rest as mb_events_publish(). */
int mb_events_fetch(mb_events_t *self, const mb_fetch_t *query, mb_batch_t *batch);

/*  Frees what a fetch returned. Safe on a zeroed batch and twice. */
void mb_batch_release(mb_batch_t *batch);

/*  The broker's last error answer, "status code: message" (such as "410
    retention_gap: ..."), or why the last call failed locally; "" when
    the last call succeeded. Borrowed, valid until the next call. */
const char *mb_events_error(mb_events_t *self);

/* ---- the outbox -------------------------------------------------------- */

/*  Opens (creating) this module's databases, "_outbox" and "_offsets", in
    a write transaction of its own. The environment needs room for
    MB_EVENTS_DBS named databases besides its owner's. Call it once, before
    threads use `env` (LMDB opens database handles per environment, and
    opening must not race with other transactions); mb_actor_open_env()
    does. Afterwards the functions below only look the handles up.
    Returns 0, MB_EFULL (map full) or MB_EDB (logged). */
int mb_events_open_dbs(MDB_env *env);

/*  Adds an event to the outbox inside the caller's write transaction
    `txn`: it is published if and only if `txn` commits. Events are
    published in the order their transactions committed. Validates as
    mb_events_publish() does, so what is in the outbox can be published.
    Returns 0, MB_EINVAL, MB_ETOOBIG, MB_EFULL (map full) or MB_EDB (the
    LMDB error is logged); after an LMDB error abort `txn`. */
int mb_outbox_add(MDB_txn *txn, const char *topic, const char *key, const void *data,
                  size_t data_len);

/*  Publishes every event in the outbox of `env`, oldest first, in batches,
    deleting each batch once the broker acknowledged it; sets *published
    (may be NULL) to the number published. mb_events_error() is "" after
    MB_EAGAIN for a busy lock. Only one process (and thread)
    flushes an environment at a time, under an flock on
    "<env dir>/outbox.lock" that the kernel releases if the holder dies.
    An event the broker refuses (4xx) is logged at error level and dropped,
    so one bad event never blocks the rest. Returns 0 once the outbox is
    empty; MB_EAGAIN when someone else is flushing (try again shortly);
    MB_EINTR when a stop was requested between batches; a publish error
    (the events stay, to be retried); MB_EDB/MB_EFULL/MB_EIO. */
int mb_outbox_flush(MDB_env *env, mb_events_t *events, size_t *published);

/*  Sets *count to the number of events waiting in the outbox. Returns 0
    or MB_EDB. */
int mb_outbox_count(MDB_env *env, size_t *count);

/* ---- consumer groups ----------------------------------------------------- */

/*  Applies one event inside `txn`, a write transaction of the consumer's
    own (a child of the batch's transaction): the handler reads and writes
    its databases in `txn` and never commits or aborts it. Returns:
      0          applied: the writes are kept;
      MB_EINVAL  the event is malformed for this consumer (say
                 `return mb_event_invalid (event, "no track id");`): its
                 writes are discarded, the reason is logged, the event is
                 counted as skipped and the offset moves past it. A bad
                 event never stops a consumer;
      MB_ENOTYET not applicable yet (it depends on another group's
                 progress): its writes are discarded, the events before
                 it in the batch are kept and the offset stops at it;
                 it is offered again about 100 ms later;
      any other negative code (an LMDB code too: MDB_MAP_FULL...)
                 a transient failure: the whole batch is rolled back and
                 retried later, with backoff.
    `state` is what the actor's open hook made. Handlers of requests and
    consumers of one process may run at the same time on different
    threads: they must not share mutable state without a lock (LMDB
    already serialises write transactions). */
typedef int(mb_apply_fn)(MDB_txn *txn, const mb_event_t *event, void *state);

/*  One consumer group. */
typedef struct {
    const char *group;         /* names the stored offset: 1..MB_GROUP_MAX of [a-z0-9._-];
                                  NULL ends an array of definitions */
    const char *const *topics; /* NULL-terminated list of topics, or NULL and `prefix` */
    const char *prefix;        /* topic prefix when `topics` is NULL ("" for all) */
    mb_apply_fn *apply;        /* applies one event */
    /* Events per fetch, 1..MB_FETCH_MAX; 0 for 1000. A batch is applied in
       one write transaction, which holds the environment's write lock:
       request handlers' writes wait meanwhile, so lower it when apply is
       slow. */
    unsigned batch;
} mb_consumer_def_t;

/*  Logs the reason an event is malformed (printf-style) when the consumer
    skips it, and returns MB_EINVAL for the handler to return. */
int mb_event_invalid(const mb_event_t *event, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

typedef struct mb_consumer mb_consumer_t;

/*  What a consumer did since it was made. */
typedef struct {
    unsigned long batches;  /* batches fetched and applied (empty ones not counted) */
    unsigned long applied;  /* events applied */
    unsigned long skipped;  /* events skipped as malformed */
    unsigned long raced;    /* batches another worker had applied first */
    unsigned long failures; /* run_once calls that failed (fetch, apply or LMDB) */
} mb_consumer_stats_t;

/*  Makes a consumer for `def` (which must outlive it) on `env`, handing
    `state` to apply, fetching from the broker at `endpoint`. Opens the
    module's databases when needed (mb_events_open_dbs()). Returns NULL
    for an invalid definition or endpoint (logged) or an LMDB error. */
mb_consumer_t *mb_consumer_new(const mb_consumer_def_t *def, MDB_env *env, void *state,
                               const char *endpoint);

/*  Frees the consumer; nulls *self_p. Safe twice. */
void mb_consumer_destroy(mb_consumer_t **self_p);

/*  One cycle: read the offset, fetch (long-polling up to `wait_ms`), apply
    the batch in one transaction. Sets *applied (may be NULL) to the
    events applied. Returns 0 (also when there was nothing new, or another
    worker applied the batch first), MB_ENOTFOUND for a retention gap
    (logged at error level; the offset is left alone), MB_EINTR when
    asked to stop during the fetch, the fetch's other errors, MB_ENOTYET
    when an event was not applicable yet (those before it were applied),
    a transient apply failure (the handler's code), or MB_EFULL/MB_EDB. */
int mb_consumer_run_once(mb_consumer_t *self, unsigned wait_ms, size_t *applied);

/*  Runs cycles until asked to stop (mb_consumer_stop(), SIGTERM), backing
    off from 100 ms to 5 s while the broker is unreachable or apply
    fails. The batch in hand is always finished (committed or rolled
    back) first. Returns MB_EINTR after a stop, or MB_ENOTFOUND after a
    retention gap: then the consumer has stopped for an operator to decide
    (reset the group's offset, or rebuild its state); it never skips
    silently. */
int mb_consumer_run(mb_consumer_t *self);

/*  Asks mb_consumer_run() (on another thread) to return after the batch in
    hand. Thread-safe. */
void mb_consumer_stop(mb_consumer_t *self);

/*  Copies the consumer's counters. Exact once mb_consumer_run() returned;
    while it runs, from another thread, a snapshot that may be torn. */
void mb_consumer_stats(mb_consumer_t *self, mb_consumer_stats_t *stats);

/*  Reads the stored offset of `group` in `env`: *next (the first seq not
    yet handled; 0 before any) and *skipped (events skipped so far); either
    may be NULL. Returns 0 (zeros for an unknown group) or MB_EDB. */
int mb_consumer_offset(MDB_env *env, const char *group, uint64_t *next, uint64_t *skipped);

#endif
