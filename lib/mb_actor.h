/*  mb_actor — the runtime every actor executable is built on.

    An actor is a table of handlers by op plus an LMDB environment under
    $MUSICBUS_DATA/<name>/ shared by every worker process of the actor.
    mb_actor_main() parses the common flags, opens the environment, calls
    the actor's open hook, connects an MDP worker for service <name>, and
    dispatches each request to the handler of its op until SIGTERM, after
    which the request in hand is answered, DISCONNECT is sent and it
    returns 0.

        static void s_handle_track_get (mb_call_t *call) { ... }
        static const mb_op_t s_ops[] = {
            {"track.get", s_handle_track_get},
            {NULL, NULL}};
        int main (int argc, char **argv) {
            mb_actor_def_t def = {.name = "catalog", .ops = s_ops, .max_dbs = 8,
                                  .open = s_open};
            return mb_actor_main (&def, argc, argv);
        }

    Common flags: --bus ENDPOINT (MUSICBUS_BUS), --data DIR (MUSICBUS_DATA),
    --heartbeat MS (MUSICBUS_HEARTBEAT_MS), --liveness N (MUSICBUS_LIVENESS),
    --map-size MIB (MUSICBUS_MAP_SIZE_MB, default def->map_size or 1024),
    --ready-file PATH (once the worker has sent READY, the bus endpoint is
    written there, through PATH.tmp and a rename). Exit codes: 0 after a
    stop signal, 1 when start-up fails, 2 for bad flags.

    Events (mb_events.h). An actor publishes its changes through the
    OUTBOX: in the write transaction that changes its state, the handler
    calls mb_call_outbox_add(), so the event is stored if and only if the
    change commits. A thread of the runtime publishes the outbox in commit
    order — after each reply that added events, at start-up (events left
    by a crash), and every 250 ms — and deletes what the broker
    acknowledged. Delivery is at least once: a crash between the broker's
    acknowledgement and the delete publishes an event again, so events
    carry a key consumers can dedupe by.

        MDB_txn *txn = ...;                         write the track, then:
        if (mb_call_outbox_add (call, txn, "catalog.track.updated", id,
                                buf.data, buf.size) != 0) {
            mdb_txn_abort (txn);                    the reply is packed
            return;
        }
        rc = mdb_txn_commit (txn);

    An actor CONSUMES events by listing consumer groups in `consumers`:
    each runs on a thread of its own in every worker process (with its own
    bus connection), and applies every event of its topics exactly once
    into the actor's LMDB, however many worker processes run and whenever
    they crash (mb_consumer_def_t in mb_events.h). A retention gap stops
    that consumer with an error line; the process keeps serving requests.

    THREADS. Request handlers run on the main thread; each consumer runs on
    its own; they share `state` from the open hook. Handlers and consumers
    of one process may therefore run at the same time: they must not
    share mutable state without a lock (LMDB serialises write
    transactions by itself, and read transactions see a snapshot). On
    SIGTERM each consumer finishes the batch in hand, the worker the
    request in hand, and mb_actor_main() joins the threads before it
    returns. */
#ifndef MB_ACTOR_H
#define MB_ACTOR_H

#include <lmdb.h>
#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "mb_envelope.h"
#include "mb_events.h"

typedef struct mb_call mb_call_t;
typedef void(mb_handler_fn)(mb_call_t *call);

typedef struct {
    const char *op;         /* "track.get" */
    mb_handler_fn *handler; /* answers it */
} mb_op_t;

typedef struct {
    const char *name;   /* service name, and folder under $MUSICBUS_DATA */
    const mb_op_t *ops; /* ends with {NULL, NULL} */
    unsigned max_dbs;   /* named LMDB databases the actor opens */
    size_t map_size;    /* LMDB map size in bytes; 0 for the default */
    /* Called once after the environment opens, before any request: opens
       the actor's databases and sets *state (handed to every handler).
       Returns 0, or a negative code to abort start-up. May be NULL. */
    int (*open)(MDB_env *env, void **state);
    /* Called once at exit with the state from open. May be NULL. */
    void (*close)(void *state);
    /* Consumer groups run by every worker process, ended by an entry
       whose group is NULL; NULL for none. */
    const mb_consumer_def_t *consumers;
} mb_actor_def_t;

/*  Runs the actor; returns the process exit code. */
int mb_actor_main(const mb_actor_def_t *def, int argc, char **argv);

/*  Opens (creating when needed) the actor's LMDB environment in
    `dir` (made with mkdir -p), with room for def->max_dbs databases plus
    the runtime's own (MB_EVENTS_DBS: the outbox and consumer offsets),
    which it opens (mb_events_open_dbs()). Returns 0 with *env, or
    MB_EDB/MB_EIO (logged). For tests and tools; mb_actor_main() calls it
    itself. */
int mb_actor_open_env(const mb_actor_def_t *def, const char *dir, MDB_env **env);

/*  Answers one encoded request with the actor's handlers into `reply`
    (reset first): decodes the envelope, finds the handler by op, runs it,
    and makes sure exactly one reply is packed (400 for a malformed
    envelope, 404 "unknown_op" for an op not in the table, 500 when a
    handler packed none). This is what mb_actor_main() does per request;
    tests call it to drive handlers through the real envelope. */
void mb_actor_dispatch(const mb_actor_def_t *def, MDB_env *env, void *state, const void *request,
                       size_t size, msgpack_sbuffer *reply);

/* ---- inside a handler ------------------------------------------------ */

/*  The decoded request. Borrowed for the duration of the handler. */
const mb_request_t *mb_call_request(mb_call_t *call);

/*  Shortcut: value of key `key` in the request's args, or NULL. */
const msgpack_object *mb_call_arg(mb_call_t *call, const char *key);

MDB_env *mb_call_env(mb_call_t *call);
void *mb_call_state(mb_call_t *call);
uint64_t mb_call_rid(mb_call_t *call);

/*  Starts (or restarts, discarding what was packed) a success reply with
    `status` and returns the packer; the handler packs exactly one object,
    the body. */
msgpack_packer *mb_call_reply(mb_call_t *call, int status);

/*  Replaces whatever was packed with an error reply. `field` names the
    argument at fault, or NULL. */
void mb_call_error(mb_call_t *call, int status, const char *code, const char *field,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/*  Replaces whatever was packed with the error reply for LMDB result
    `mdb_rc`: 507 "storage_full" for MDB_MAP_FULL, 500 "storage_error"
    otherwise; logs it. */
void mb_call_db_error(mb_call_t *call, int mdb_rc);

/*  Begins a transaction on the actor's environment (read-only unless
    `write`). Returns it, or NULL after answering the LMDB error. */
MDB_txn *mb_call_begin(mb_call_t *call, bool write);

/*  Aborts `txn` and answers LMDB result `mdb_rc` (mb_call_db_error()). */
void mb_call_abort(mb_call_t *call, MDB_txn *txn, int mdb_rc);

/*  Adds an event to the outbox in the handler's write transaction `txn`
    (mb_outbox_add()): it is published after `txn` commits, and never if
    it aborts. `key` names what the event is about (NULL for none); `data`
    is one encoded msgpack object. Returns 0, or a negative code after
    packing the error reply (500 "internal" for an event the bus would
    refuse — bad topic, data not msgpack or over 1 MiB — 507/500 for
    LMDB errors): the handler then aborts `txn` and returns. */
int mb_call_outbox_add(mb_call_t *call, MDB_txn *txn, const char *topic, const char *key,
                       const void *data, size_t data_len);

#endif
