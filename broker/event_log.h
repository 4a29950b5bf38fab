/*  event_log — the broker's durable event log: one LMDB environment,
    written only by a thread of its own with group commit, read by the
    broker's main thread.

    The main thread hands the writer whole batches (the events of one
    bus.publish) through an inproc PAIR socket; the writer takes everything
    pending, writes it in ONE transaction, commits (one fsync for all), and
    hands the batches back with their sequence numbers. The main thread
    polls event_log_socket() for that, so routing never waits on the disk.
    Reads (event_log_fetch) are read-only transactions on the main thread;
    they never wait for a commit.

    Layout (see broker/README.md, "Event streams"):
      db "events"  key: seq, 8 bytes big-endian -> value: msgpack map
                   {"topic": str, "key": str, "time": uint, "data": any}
                   with exactly these four keys in this order
      db "meta"    "last_seq" -> 8 bytes big-endian, the last seq ever
                   given, kept even when retention deletes every event

    Seqs start at 1, increase by one per event, and are never reused: a
    batch that fails takes none. A batch is written whole or not at all.

    Retention (age and/or size of the events database) is enforced by the
    writer in small transactions between its writes, so it may lag a
    second or so behind the limits.

    Threads: every function here is for the main thread (the one that made
    the log); the writer thread is internal. */
#ifndef EVENT_LOG_H
#define EVENT_LOG_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct event_log event_log_t;

typedef struct {
    const char *dir;          /* the environment's folder, made when missing */
    size_t map_size;          /* LMDB map size in bytes */
    uint64_t retention_ms;    /* keep events this long; 0 = no age limit */
    uint64_t retention_bytes; /* keep the events database below this; 0 = no limit */
} event_log_opts_t;

/*  The events of one publish, packed by the main thread and written by
    the writer. Owned by whoever holds it: the submitter, then the log
    (from event_log_submit() until event_log_completed() gives it back). */
typedef struct event_batch {
    void *owner;            /* the submitter's; never touched by the log */
    size_t count;           /* events */
    msgpack_sbuffer values; /* their encoded values, back to back */
    size_t *ends;           /* ends[i]: offset just past value i in `values` */
    size_t ends_cap;
    uint64_t first;           /* set by the writer: seq of the first event (0 when it failed) */
    int status;               /* set by the writer: 0, MB_EFULL (map full), MB_EDB */
    struct event_batch *next; /* links the batches of one completion */
} event_batch_t;

/*  Returns an empty batch for `owner`. */
event_batch_t *event_batch_new(void *owner);

/*  Frees a batch; nulls *self_p. Safe twice. */
void event_batch_destroy(event_batch_t **self_p);

/*  Appends one event. `data` is packed as is. Returns the number of bytes
    its value took, so the caller can check the data's size (the value
    minus the rest), and sets *data_at to where the data's encoding starts
    in batch->values.data (valid until the next append). */
size_t event_batch_add(event_batch_t *self, const char *topic, size_t topic_len, const char *key,
                       size_t key_len, uint64_t time_ms, const msgpack_object *data,
                       size_t *data_at);

/*  Removes the last event added (after a check on it failed). */
void event_batch_drop_last(event_batch_t *self);

/*  Opens (creating) the log in opts->dir and starts the writer. Takes an
    exclusive flock on "<dir>/broker.lock" so two brokers never write one
    log. Returns NULL when the folder, the lock, or LMDB fails (logged). */
event_log_t *event_log_new(const event_log_opts_t *opts);

/*  Stops the writer (after it has written everything submitted), closes
    the environment and frees the log; nulls *self_p. Batches submitted
    and not yet taken back with event_log_completed() are freed: call
    event_log_stop() and drain first to answer their owners. Safe twice. */
void event_log_destroy(event_log_t **self_p);

/*  Hands `batch` to the writer; the log owns it until
    event_log_completed() returns it. Returns 0, or MB_EIO when the writer
    is gone (the batch stays the caller's). */
int event_log_submit(event_log_t *self, event_batch_t *batch);

/*  The socket to poll (ZMQ_POLLIN) for completed batches. Borrowed. */
void *event_log_socket(event_log_t *self);

/*  Takes back batches the writer has finished, without waiting. Returns 0
    with *list the first of one or more batches linked by `next`, in the
    order they were submitted, each with `first` and `status` set; or
    MB_EAGAIN when none is done. The caller owns the batches again. */
int event_log_completed(event_log_t *self, event_batch_t **list);

/*  Asks the writer to finish what was submitted and waits for it to end.
    Afterwards event_log_completed() returns what it finished, and
    event_log_submit() fails. Safe twice. */
void event_log_stop(event_log_t *self);

/*  Which topics a fetch wants: exactly `n_topics` topics, or (n_topics 0)
    every topic starting with `prefix` ("" for all). Borrowed strings. */
typedef struct {
    size_t n_topics;
    const char *const *topics;
    const size_t *topic_lens;
    const char *prefix;
    size_t prefix_len;
} event_filter_t;

/*  What a fetch found. */
typedef struct {
    size_t count;    /* events packed */
    uint64_t next;   /* the seq to pass as `from` next time */
    uint64_t head;   /* the last seq given (0 when none ever was) */
    uint64_t oldest; /* the oldest seq retained (head + 1 when none is) */
    bool at_head;    /* the scan reached the end of the log */
} event_fetch_t;

/*  Reads events with seq >= `from` (0: from the oldest retained) that
    match `filter`, at most `max`, scanning at most `scan_limit` events and
    stopping once the packed events pass `max_bytes` (at least one is
    always packed), and packs the reply body into `pk` (which must write
    to a msgpack_sbuffer):
        {"events": [{"seq", "topic", "key", "time", "data"}...],
         "next": uint, "head": uint}
    Returns 0 with *out filled; MB_ENOTFOUND when `from` is older than the
    oldest retained event (nothing packed; out->oldest says where the log
    starts); MB_EDB when LMDB fails (logged, nothing packed). Records that
    are not in the layout above are skipped and logged. */
int event_log_fetch(event_log_t *self, const event_filter_t *filter, uint64_t from, size_t max,
                    size_t scan_limit, size_t max_bytes, msgpack_packer *pk, event_fetch_t *out);

/*  The last seq committed, as the main thread last heard from the writer
    (the head of the log). */
uint64_t event_log_head(event_log_t *self);

/*  Events deleted by retention so far (read by the main thread from a
    counter the writer updates). */
uint64_t event_log_pruned(event_log_t *self);

#endif
