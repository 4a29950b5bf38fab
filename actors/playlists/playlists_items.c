/*  playlists_items — items in memory and their stored binary form. */
#include "playlists_items.h"

#include <stdlib.h>
#include <string.h>

#include "mb_alloc.h"
#include "mb_error.h"

#define S_DIR_FORMAT 1
#define S_DIR_HEAD 9  /* format, next_no, n */
#define S_DIR_ENTRY 8 /* no, count */

static void s_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t s_get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void s_put64(uint8_t *p, uint64_t v)
{
    s_put32(p, (uint32_t)(v >> 32));
    s_put32(p + 4, (uint32_t)v);
}

static uint64_t s_get64(const uint8_t *p)
{
    return (uint64_t)s_get32(p) << 32 | s_get32(p + 4);
}

/* ---- the array ----------------------------------------------------------------- */

void playlists_items_release(playlists_items_t *items)
{
    free(items->v);
    *items = (playlists_items_t){0};
}

static void s_reserve(playlists_items_t *items, size_t n)
{
    if (n <= items->cap)
        return;
    size_t cap = items->cap ? items->cap : 16;
    while (cap < n)
        cap *= 2;
    items->v = mb_realloc(items->v, cap * sizeof *items->v);
    items->cap = cap;
}

void playlists_items_insert(playlists_items_t *items, size_t pos, const playlists_item_t *add,
                            size_t n)
{
    s_reserve(items, items->n + n);
    memmove(items->v + pos + n, items->v + pos, (items->n - pos) * sizeof *items->v);
    memcpy(items->v + pos, add, n * sizeof *add);
    items->n += n;
}

void playlists_items_push(playlists_items_t *items, const playlists_item_view_t *view)
{
    s_reserve(items, items->n + 1);
    playlists_item_t *it = &items->v[items->n++];
    memcpy(it->track, view->track.ptr, view->track.len);
    it->track[view->track.len] = '\0';
    memcpy(it->added_by, view->added_by.ptr, view->added_by.len);
    it->added_by[view->added_by.len] = '\0';
    it->added_at = view->added_at;
}

size_t playlists_items_remove_marked(playlists_items_t *items, const bool *marked)
{
    size_t kept = 0;
    for (size_t i = 0; i < items->n; i++)
        if (!marked[i]) {
            if (kept != i)
                items->v[kept] = items->v[i];
            kept++;
        }
    size_t removed = items->n - kept;
    items->n = kept;
    return removed;
}

void playlists_items_move(playlists_items_t *items, size_t start, size_t len, size_t before)
{
    if (before >= start && before <= start + len)
        return;
    /* A move is a rotation of the span between the range and its
       destination: three reversals would do it in place, but one copy of
       the range is simpler to read and the range is at most 10,000 items. */
    playlists_item_t *range = mb_malloc(len * sizeof *range);
    memcpy(range, items->v + start, len * sizeof *range);
    if (before < start) {
        memmove(items->v + before + len, items->v + before, (start - before) * sizeof *range);
        memcpy(items->v + before, range, len * sizeof *range);
    } else {
        size_t after = start + len;
        memmove(items->v + start, items->v + after, (before - after) * sizeof *range);
        memcpy(items->v + before - len, range, len * sizeof *range);
    }
    free(range);
}

/* ---- chunks ----------------------------------------------------------------------- */

size_t playlists_chunk_size(const playlists_item_t *items, size_t n)
{
    size_t size = 0;
    for (size_t i = 0; i < n; i++)
        size += 1 + strlen(items[i].track) + 1 + strlen(items[i].added_by) + 8;
    return size;
}

void playlists_chunk_write(const playlists_item_t *items, size_t n, void *out)
{
    uint8_t *p = out;
    for (size_t i = 0; i < n; i++) {
        size_t t = strlen(items[i].track), b = strlen(items[i].added_by);
        *p++ = (uint8_t)t;
        memcpy(p, items[i].track, t);
        p += t;
        *p++ = (uint8_t)b;
        memcpy(p, items[i].added_by, b);
        p += b;
        s_put64(p, (uint64_t)items[i].added_at);
        p += 8;
    }
}

/*  Reads one length-prefixed id at *p. */
static int s_next_id(const uint8_t **p, const uint8_t *end, playlists_str_t *out)
{
    if (*p >= end)
        return MB_EPROTO;
    size_t len = **p;
    if (len == 0 || len > PLAYLISTS_ID_MAX || (size_t)(end - *p - 1) < len)
        return MB_EPROTO;
    out->ptr = (const char *)*p + 1;
    out->len = len;
    *p += 1 + len;
    return 0;
}

int playlists_chunk_next(const uint8_t **p, const uint8_t *end, playlists_item_view_t *view)
{
    if (s_next_id(p, end, &view->track) || s_next_id(p, end, &view->added_by) || end - *p < 8)
        return MB_EPROTO;
    view->added_at = (int64_t)s_get64(*p);
    *p += 8;
    return 0;
}

int playlists_chunk_decode(const void *data, size_t size, size_t expect, playlists_items_t *items)
{
    const uint8_t *p = data, *end = p + size;
    size_t n = 0;
    s_reserve(items, items->n + expect);
    while (p < end) {
        playlists_item_view_t view;
        if (n == expect || playlists_chunk_next(&p, end, &view) != 0)
            return MB_EPROTO;
        playlists_items_push(items, &view);
        n++;
    }
    return n == expect ? 0 : MB_EPROTO;
}

/* ---- the directory ------------------------------------------------------------------ */

static void s_dir_reserve(playlists_dir_t *dir, size_t n)
{
    if (n <= dir->cap)
        return;
    size_t cap = dir->cap ? dir->cap : 8;
    while (cap < n)
        cap *= 2;
    dir->chunks = mb_realloc(dir->chunks, cap * sizeof *dir->chunks);
    dir->cap = cap;
}

void playlists_dir_release(playlists_dir_t *dir)
{
    free(dir->chunks);
    *dir = (playlists_dir_t){0};
}

int playlists_dir_decode(const void *data, size_t size, playlists_dir_t *dir)
{
    const uint8_t *p = data;
    dir->n = 0;
    dir->total = 0;
    dir->next_no = 0;
    if (size < S_DIR_HEAD || p[0] != S_DIR_FORMAT)
        return MB_EPROTO;
    uint32_t n = s_get32(p + 5);
    if ((size - S_DIR_HEAD) / S_DIR_ENTRY != n || (size - S_DIR_HEAD) % S_DIR_ENTRY)
        return MB_EPROTO;
    dir->next_no = s_get32(p + 1);
    s_dir_reserve(dir, n);
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = p + S_DIR_HEAD + (size_t)i * S_DIR_ENTRY;
        playlists_chunk_ref_t ref = {s_get32(e), s_get32(e + 4)};
        if (ref.count == 0 || ref.count > PLAYLISTS_ITEMS_MAX || ref.no >= dir->next_no)
            return MB_EPROTO;
        dir->chunks[dir->n++] = ref;
        dir->total += ref.count;
    }
    return dir->total <= PLAYLISTS_ITEMS_MAX ? 0 : MB_EPROTO;
}

size_t playlists_dir_size(const playlists_dir_t *dir)
{
    return S_DIR_HEAD + dir->n * S_DIR_ENTRY;
}

void playlists_dir_write(const playlists_dir_t *dir, void *out)
{
    uint8_t *p = out;
    p[0] = S_DIR_FORMAT;
    s_put32(p + 1, dir->next_no);
    s_put32(p + 5, (uint32_t)dir->n);
    for (size_t i = 0; i < dir->n; i++) {
        s_put32(p + S_DIR_HEAD + i * S_DIR_ENTRY, dir->chunks[i].no);
        s_put32(p + S_DIR_HEAD + i * S_DIR_ENTRY + 4, dir->chunks[i].count);
    }
}

void playlists_dir_splice(playlists_dir_t *dir, size_t c0, size_t c1,
                          const playlists_chunk_ref_t *with, size_t n)
{
    size_t after = dir->n - c1;
    s_dir_reserve(dir, c0 + n + after);
    memmove(dir->chunks + c0 + n, dir->chunks + c1, after * sizeof *dir->chunks);
    memcpy(dir->chunks + c0, with, n * sizeof *with);
    dir->n = c0 + n + after;
    dir->total = 0;
    for (size_t i = 0; i < dir->n; i++)
        dir->total += dir->chunks[i].count;
}

size_t playlists_dir_find(const playlists_dir_t *dir, uint64_t pos, uint64_t *first)
{
    uint64_t at = 0;
    for (size_t i = 0; i < dir->n; i++) {
        if (pos < at + dir->chunks[i].count || i + 1 == dir->n) {
            *first = at;
            return i;
        }
        at += dir->chunks[i].count;
    }
    *first = 0;
    return 0;
}
