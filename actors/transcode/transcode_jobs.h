/*  transcode_jobs — durable transcoding jobs: claimed under a lease,
    renewed while the ladder encodes, made visible in one rename.

    A job is a row of the "jobs" database (transcode_store.h). A worker
    thread CLAIMS the oldest one that is free — never leased, its lease run
    out, or leased by a process of this host that no longer exists (pid
    gone, or reused by a process started at another time) — in one write
    transaction that sets the lease (now + lease_ms), the owner (host,
    pid, start time, a random token) and counts the attempt. No write
    transaction is held while encoding: the ladder's tick RENEWS the lease
    every renew_ms in a short transaction of its own, and stops the job if
    the token in the row is no longer its own (the job was removed, or
    another worker took it over after a stall).

    Output is written under hls/.tmp-<version>-<token>/ in the blob store;
    a claim first removes every hls/.tmp-<version>-* left by earlier
    attempts. FINISHING happens in one write transaction that checks the
    token again, renames the folder to hls/<version>/ (removing a stale
    hls/<version>/ a worker killed between its rename and its commit left
    behind), marks the version ready and adds audio.ready to the outbox.
    So a worker killed at any moment leaves nothing visible, only a .tmp
    folder the next claim removes, and the job is done again.

    Outcomes: a master that does not decode (MB_EPROTO) fails the version
    at once (audio.failed); a transient failure (disk full, I/O) puts the
    job back after retry_ms, and after max_attempts claims the version
    fails; a stop (SIGTERM) releases the lease at once without counting
    the attempt, so another worker starts it without waiting. */
#ifndef TRANSCODE_JOBS_H
#define TRANSCODE_JOBS_H

#include <lmdb.h>
#include <stdbool.h>

#include "mb_blob.h"
#include "transcode_store.h"

#define TRANSCODE_ENV_JOBS "MUSICBUS_TRANSCODE_JOBS"         /* job threads per process */
#define TRANSCODE_ENV_LEASE_MS "MUSICBUS_TRANSCODE_LEASE_MS" /* lease length */

typedef struct {
    int lease_ms;          /* how long a claim holds without renewal (default 30000) */
    int renew_ms;          /* how often a running job renews (default 5000) */
    unsigned max_attempts; /* claims before a version fails for good (default 3) */
    int retry_ms;          /* a transient failure waits this long (default 30000) */
} transcode_jobs_opts_t;

typedef struct transcode_jobs transcode_jobs_t;

/*  Fills *opts with the defaults (MUSICBUS_TRANSCODE_LEASE_MS included;
    renew_ms is a sixth of the lease). */
void transcode_jobs_opts_default(transcode_jobs_opts_t *opts);

/*  Makes a runner for the jobs of `env`, writing renditions under
    <blob store>/hls/. `opts` may be NULL for the defaults. Never NULL. */
transcode_jobs_t *transcode_jobs_new(MDB_env *env, transcode_store_t *store, mb_blob_store_t *blobs,
                                     const transcode_jobs_opts_t *opts);

/*  Stops the threads (the job in hand is abandoned and its lease
    released), frees the runner; nulls *self_p. Safe twice. */
void transcode_jobs_destroy(transcode_jobs_t **self_p);

/*  Starts `threads` worker threads (SIGTERM/SIGINT blocked in them), after
    removing .tmp folders no job owns. Returns 0 or MB_EIO. */
int transcode_jobs_start(transcode_jobs_t *self, unsigned threads);

/*  Wakes an idle worker thread: a job was queued. Thread-safe. */
void transcode_jobs_kick(transcode_jobs_t *self);

/*  Claims one job and runs it to its end on the calling thread. Sets
    *ran to whether there was one. Returns 0, or an LMDB code when the
    claim failed. For tests and tools. */
int transcode_jobs_run_one(transcode_jobs_t *self, bool *ran);

/*  The folder renditions are made visible in: <blob store>/hls.
    Borrowed. */
const char *transcode_jobs_hls_dir(const transcode_jobs_t *self);

/*  Removes a version's files: hls/<version>/ and any of its .tmp folders.
    Idempotent. */
void transcode_jobs_remove_files(const transcode_jobs_t *self, const char *version);

#endif
