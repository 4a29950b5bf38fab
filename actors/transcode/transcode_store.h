/*  transcode_store — the transcode actor's LMDB databases: audio versions,
    their jobs and the indexes that find them (layout in README.md).

    Every function works inside the caller's transaction and returns 0 or
    an LMDB code (MDB_NOTFOUND for "no such thing", MDB_CORRUPTED for a
    stored value that does not decode); the caller aborts on error. */
#ifndef TRANSCODE_STORE_H
#define TRANSCODE_STORE_H

#include <lmdb.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "mb_blob.h"
#include "mb_id.h"
#include "transcode_ladder.h"
#include "transcode_probe.h"

#define TRANSCODE_STORE_DBS 5
#define TRANSCODE_TRACK_ID_MAX 64 /* bytes of a track id (the catalog's limit) */
#define TRANSCODE_REASON_MAX 256  /* bytes of a failure reason kept */
#define TRANSCODE_HOST_MAX 64

typedef enum {
    TRANSCODE_QUEUED,  /* waiting for a worker */
    TRANSCODE_RUNNING, /* a worker holds its lease */
    TRANSCODE_READY,   /* renditions visible */
    TRANSCODE_FAILED,  /* the master does not decode, or every attempt failed */
} transcode_status_t;

/*  One audio version of a track: one uploaded master and what became of it. */
typedef struct {
    char version[MB_ID_LEN + 1];
    char track_id[TRANSCODE_TRACK_ID_MAX + 1];
    char master[MB_BLOB_HEX_LEN + 1]; /* the master's blob */
    uint64_t size;                    /* its bytes */
    transcode_probe_t probe;          /* what ingest found in it */
    transcode_status_t status;
    char reason[TRANSCODE_REASON_MAX]; /* why it failed; "" otherwise */
    uint32_t attempts;                 /* jobs started for it */
    int64_t created_ms;                /* Unix ms of the upload */
    int64_t updated_ms;
    transcode_ladder_result_t result; /* loudness and rungs once ready */
} transcode_version_t;

/*  Who holds a job: a worker thread of a process on a host. */
typedef struct {
    char host[TRANSCODE_HOST_MAX + 1];
    uint32_t pid;
    uint64_t start; /* the process's start time (clock ticks after boot), against pid reuse */
    uint64_t token; /* random per claim: two claims of one process differ */
} transcode_owner_t;

typedef struct {
    int64_t enqueued_ms;     /* order of the queue */
    int64_t lease_until_ms;  /* 0: free to take; else held until then */
    transcode_owner_t owner; /* meaningful while leased */
    uint32_t attempts;       /* claims so far */
} transcode_job_t;

typedef struct transcode_store transcode_store_t;

/*  Opens (creating) the databases in a write transaction of its own.
    Call once, before other threads use `env`. Returns 0 with *store, or
    an LMDB code (logged). */
int transcode_store_open(MDB_env *env, transcode_store_t **store);

void transcode_store_destroy(transcode_store_t **self_p);

const char *transcode_status_name(transcode_status_t status);

/* ---- versions ----------------------------------------------------------- */

/*  Writes a version; `is_new` also links it in the track and master
    indexes. */
int transcode_store_put_version(transcode_store_t *self, MDB_txn *txn, const transcode_version_t *v,
                                bool is_new);

/*  Reads version `version` into *v. MDB_NOTFOUND when unknown. */
int transcode_store_get_version(transcode_store_t *self, MDB_txn *txn, const char *version,
                                transcode_version_t *v);

/*  Removes the version, its index entries and its job. */
int transcode_store_del_version(transcode_store_t *self, MDB_txn *txn,
                                const transcode_version_t *v);

/*  Finds a version of `track_id` made from master `hex` that has not
    failed (the same upload again). MDB_NOTFOUND when none. */
int transcode_store_find_upload(transcode_store_t *self, MDB_txn *txn, const char *track_id,
                                const char *hex, transcode_version_t *v);

/*  Sets *count to the versions, of any track, made from master `hex`. */
int transcode_store_master_refs(transcode_store_t *self, MDB_txn *txn, const char *hex,
                                size_t *count);

/*  Calls `fn` for each version of `track_id`, oldest first; a non-zero
    return from `fn` stops the walk and is returned. */
int transcode_store_track_versions(transcode_store_t *self, MDB_txn *txn, const char *track_id,
                                   int (*fn)(const transcode_version_t *v, void *arg), void *arg);

/*  Packs a version as answered and stored: {version, track_id, status,
    reason, master, size, format, codec, sample_rate, channels, bits,
    duration_ms, lossless, attempts, created_at, updated_at, loudness,
    rungs}. */
void transcode_version_pack(msgpack_packer *pk, const transcode_version_t *v);

/* ---- jobs ---------------------------------------------------------------- */

int transcode_store_put_job(transcode_store_t *self, MDB_txn *txn, const char *version,
                            const transcode_job_t *job);
int transcode_store_get_job(transcode_store_t *self, MDB_txn *txn, const char *version,
                            transcode_job_t *job);
int transcode_store_del_job(transcode_store_t *self, MDB_txn *txn, const char *version);

/*  Finds the oldest job that can be taken at `now_ms`: not leased, its
    lease run out, or held by an owner `alive` says is gone. Copies its
    version id into version[MB_ID_LEN + 1] and the job into *job.
    MDB_NOTFOUND when there is none. */
int transcode_store_next_job(transcode_store_t *self, MDB_txn *txn, int64_t now_ms,
                             bool (*alive)(const transcode_owner_t *owner),
                             char version[MB_ID_LEN + 1], transcode_job_t *job);

/*  Sets *count to the jobs queued or running. */
int transcode_store_job_count(transcode_store_t *self, MDB_txn *txn, size_t *count);

/* ---- covers --------------------------------------------------------------- */

/*  Stores an album's cover (one msgpack object, transcode_cover_pack()). */
int transcode_store_put_cover(transcode_store_t *self, MDB_txn *txn, const char *album_id,
                              const void *data, size_t len);

/*  Sets *val to the stored cover of `album_id` (valid until the txn
    ends). MDB_NOTFOUND when it has none. */
int transcode_store_get_cover(transcode_store_t *self, MDB_txn *txn, const char *album_id,
                              MDB_val *val);

#endif
