/*  mb_blob — a content-addressed store of immutable files (audio masters,
    cover images), named by the BLAKE2b-256 of their bytes (libsodium's
    crypto_generichash with a 32-byte output), written in lower-case hex.

    Layout under the store's folder ($MUSICBUS_DATA/blobs):

        <2 hex>/<64 hex>   a blob; the folder is the hash's first byte
        tmp/               files being written; a crash leaves them here
                           (mb_blob_store_sweep() removes old ones)

    Other folders (hls/, written by the transcode actor) may live beside
    these; the store never touches them.

    A blob is written to a temporary file while its hash is computed,
    then fsynced, renamed to its name and its folder fsynced, so a blob
    that exists is whole and durable, and readers never see a partial
    one. Putting bytes that are already stored changes nothing (the new
    temporary file is dropped): putting is idempotent.

        mb_blob_store_t *store;
        mb_blob_store_open ("var/blobs", &store);
        mb_blob_writer_t *w;
        mb_blob_writer_new (store, 2ull << 30, &w);   size limit: 2 GiB
        while (...) mb_blob_writer_write (w, chunk, len);   MB_ETOOBIG past it
        char hex[MB_BLOB_HEX_LEN + 1];
        mb_blob_writer_commit (&w, hex, &size, &created);

    Threads: a store may be used from several threads at once (it holds
    only its path); a writer belongs to one thread at a time. Several
    processes may share one store. */
#ifndef MB_BLOB_H
#define MB_BLOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MB_BLOB_HASH_LEN 32 /* bytes of a blob's hash (BLAKE2b-256) */
#define MB_BLOB_HEX_LEN 64  /* characters of its lower-case hex form */
#define MB_BLOB_NO_LIMIT UINT64_MAX

typedef struct mb_blob_store mb_blob_store_t;
typedef struct mb_blob_writer mb_blob_writer_t;

/*  Opens the store in `dir`, creating it and tmp/ when needed (mkdir -p).
    Returns 0 with *store, or MB_EIO (logged) when the folder cannot be
    made or used. */
int mb_blob_store_open(const char *dir, mb_blob_store_t **store);

/*  Frees the store; nulls *self_p. Safe to call twice. */
void mb_blob_store_destroy(mb_blob_store_t **self_p);

/*  The store's folder as given to open. Borrowed. */
const char *mb_blob_store_dir(const mb_blob_store_t *self);

/*  True when `s` (len bytes) is the hex form of a hash: exactly 64
    characters of 0-9 a-f. Upper case is refused so that one blob has
    one name. */
bool mb_blob_hex_valid(const char *s, size_t len);

/*  Returns the path of blob `hex` (which need not exist), the caller's to
    free, or NULL when `hex` is not valid. */
char *mb_blob_path(const mb_blob_store_t *self, const char *hex);

/*  Sets *size (may be NULL) to the size of blob `hex`. Returns 0 when it
    exists, MB_ENOTFOUND when not, MB_EINVAL for a bad hex, MB_EIO when
    stat fails otherwise. */
int mb_blob_exists(const mb_blob_store_t *self, const char *hex, uint64_t *size);

/*  Removes blob `hex`. Returns 0, MB_ENOTFOUND, MB_EINVAL or MB_EIO.
    Whoever still has the file open keeps reading it (POSIX unlink). */
int mb_blob_remove(const mb_blob_store_t *self, const char *hex);

/*  Re-reads blob `hex` and checks its bytes still hash to its name.
    Returns 0, MB_EPROTO when they do not (the file was damaged),
    MB_ENOTFOUND, MB_EINVAL or MB_EIO. */
int mb_blob_verify(const mb_blob_store_t *self, const char *hex);

/*  Removes files in tmp/ last modified more than `age_s` seconds ago
    (left by writers that crashed; a writer still running touches its
    file with every write). Sets *removed (may be NULL). Returns 0 or
    MB_EIO. */
int mb_blob_store_sweep(mb_blob_store_t *self, unsigned age_s, unsigned *removed);

/* ---- writing ----------------------------------------------------------- */

/*  Starts a blob: creates a temporary file in tmp/. Writing more than
    `limit` bytes in all fails (MB_BLOB_NO_LIMIT for none). Returns 0 with
    *writer, or MB_EIO (errno tells why; ENOSPC, EMFILE...). */
int mb_blob_writer_new(mb_blob_store_t *self, uint64_t limit, mb_blob_writer_t **writer);

/*  Appends `len` bytes and hashes them. Returns 0; MB_ETOOBIG when the
    blob would grow past the limit (nothing of this chunk is written);
    MB_EIO when the write fails (disk full...). After an error the writer
    only accepts mb_blob_writer_destroy(). */
int mb_blob_writer_write(mb_blob_writer_t *self, const void *data, size_t len);

/*  Bytes written so far. */
uint64_t mb_blob_writer_size(const mb_blob_writer_t *self);

/*  Finishes the blob: fsyncs the file, renames it to its name and fsyncs
    the folder. Takes ownership of the writer and frees it whatever
    happens (*self_p is nulled). Writes the hex name and a NUL into
    hex[MB_BLOB_HEX_LEN + 1], the size into *size (may be NULL), and sets
    *created (may be NULL) to false when the blob was already stored
    (then the temporary file is simply removed). Returns 0, or MB_EINVAL
    when the writer failed earlier, or MB_EIO (nothing is stored). */
int mb_blob_writer_commit(mb_blob_writer_t **self_p, char hex[MB_BLOB_HEX_LEN + 1], uint64_t *size,
                          bool *created);

/*  Abandons a blob not committed (the temporary file is removed) and
    frees the writer; nulls *self_p. Safe to call twice. */
void mb_blob_writer_destroy(mb_blob_writer_t **self_p);

/* ---- whole files ------------------------------------------------------- */

/*  Stores everything readable from `fd` (read to its end) as a blob, as
    the writer does. Returns what mb_blob_writer_commit() returns, or
    MB_ETOOBIG past `limit`, or MB_EIO when reading fails. */
int mb_blob_put_fd(mb_blob_store_t *self, int fd, uint64_t limit, char hex[MB_BLOB_HEX_LEN + 1],
                   uint64_t *size, bool *created);

/*  Same for the file at `path`; MB_ENOTFOUND when it does not exist. */
int mb_blob_put_file(mb_blob_store_t *self, const char *path, uint64_t limit,
                     char hex[MB_BLOB_HEX_LEN + 1], uint64_t *size, bool *created);

/*  Same for `len` bytes in memory. */
int mb_blob_put_data(mb_blob_store_t *self, const void *data, size_t len,
                     char hex[MB_BLOB_HEX_LEN + 1], bool *created);

/*  Computes the hex name the bytes of the file at `path` would have,
    without storing them. Returns 0, MB_ENOTFOUND or MB_EIO. */
int mb_blob_hash_file(const char *path, char hex[MB_BLOB_HEX_LEN + 1]);

#endif
