/*  playlists_items — a playlist's items in memory and in their stored
    binary form.

    A playlist's items are stored in CHUNKS of at most a few hundred
    items each (playlists_store.h says how many and why), listed in
    order by the playlist's DIRECTORY. A write loads only the chunks it
    touches into a playlists_items_t, edits that array with the functions
    below (insert, remove marked, move a range), and the store re-chunks
    and writes it back.

    Chunk value: the items one after the other, each
        u8 track id length, track id bytes,
        u8 added_by length, added_by bytes,
        8 bytes big-endian added_at (ms since the Unix epoch, signed).
    Directory value:
        u8 format (1), u32 next chunk number, u32 chunk count n,
        then n times { u32 chunk number, u32 items in that chunk },
    big-endian, in playlist order. Decoders check every length and
    return MB_EPROTO for anything malformed; they never assert. */
#ifndef PLAYLISTS_ITEMS_H
#define PLAYLISTS_ITEMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "playlists_model.h"

/*  One item, owning its strings. */
typedef struct {
    char track[PLAYLISTS_ID_MAX + 1];    /* track id */
    char added_by[PLAYLISTS_ID_MAX + 1]; /* user id */
    int64_t added_at;                    /* ms since the Unix epoch */
} playlists_item_t;

/*  One item read in place from a chunk: strings borrow from the value. */
typedef struct {
    playlists_str_t track;
    playlists_str_t added_by;
    int64_t added_at;
} playlists_item_view_t;

/*  A growable array of items. Zero-initialised is empty and valid. */
typedef struct {
    playlists_item_t *v;
    size_t n;
    size_t cap;
} playlists_items_t;

/*  Frees the array; leaves it empty and reusable. */
void playlists_items_release(playlists_items_t *items);

/*  Inserts n items at position `pos` (0..items->n). */
void playlists_items_insert(playlists_items_t *items, size_t pos, const playlists_item_t *add,
                            size_t n);

/*  Appends one item built from a view. */
void playlists_items_push(playlists_items_t *items, const playlists_item_view_t *view);

/*  Removes every item whose marked[i] is true (marked has items->n
    entries), keeping the order of the rest. Returns how many went. */
size_t playlists_items_remove_marked(playlists_items_t *items, const bool *marked);

/*  Moves the `len` items at `start` so that they come before the item
    that was at `before` (0..n; n means the end), the way Spotify's
    reorder does. Requires len >= 1, start + len <= n, before <= n;
    `before` within [start, start + len] changes nothing. */
void playlists_items_move(playlists_items_t *items, size_t start, size_t len, size_t before);

/* ---- chunks ------------------------------------------------------------------ */

/*  Bytes the chunk of these n items takes. */
size_t playlists_chunk_size(const playlists_item_t *items, size_t n);

/*  Writes the chunk of these n items into out (playlists_chunk_size()
    bytes). */
void playlists_chunk_write(const playlists_item_t *items, size_t n, void *out);

/*  Reads the next item of a chunk at *p (before `end`) into *view and
    advances *p. Returns 0, or MB_EPROTO when the bytes are not an item. */
int playlists_chunk_next(const uint8_t **p, const uint8_t *end, playlists_item_view_t *view);

/*  Appends every item of chunk `data` (size bytes) to *items, checking
    it holds exactly `expect` items. Returns 0 or MB_EPROTO (then *items
    may hold some of them). */
int playlists_chunk_decode(const void *data, size_t size, size_t expect, playlists_items_t *items);

/* ---- the directory -------------------------------------------------------------- */

typedef struct {
    uint32_t no;    /* chunk number: the chunk's key is playlist id + no */
    uint32_t count; /* items in it, >= 1 */
} playlists_chunk_ref_t;

typedef struct {
    uint32_t next_no;              /* next unused chunk number */
    playlists_chunk_ref_t *chunks; /* in playlist order */
    size_t n;
    size_t cap;
    uint64_t total; /* sum of the counts */
} playlists_dir_t;

/*  Reads a directory value into *dir (which it resets first). Returns 0
    or MB_EPROTO. */
int playlists_dir_decode(const void *data, size_t size, playlists_dir_t *dir);

/*  Bytes the stored directory takes, and writes it. */
size_t playlists_dir_size(const playlists_dir_t *dir);
void playlists_dir_write(const playlists_dir_t *dir, void *out);

/*  Frees the directory; leaves it empty and reusable. */
void playlists_dir_release(playlists_dir_t *dir);

/*  Replaces chunk entries [c0, c1) with the n entries of `with`, and
    recounts total. */
void playlists_dir_splice(playlists_dir_t *dir, size_t c0, size_t c1,
                          const playlists_chunk_ref_t *with, size_t n);

/*  Index of the chunk holding item `pos` (0..total-1), with *first set
    to the position of that chunk's first item. For pos >= total: the
    last chunk (dir->n - 1; dir->n must be > 0). */
size_t playlists_dir_find(const playlists_dir_t *dir, uint64_t pos, uint64_t *first);

#endif
