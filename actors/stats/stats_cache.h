/*  stats_cache — a bounded cache of catalog match results, so an import
    asks the catalog once per distinct (isrc, artist, title) it meets
    while that stays in the cache, and its memory does not grow with the
    input.

    Two generations approximate LRU without per-hit bookkeeping: entries
    go into the young generation; when it is full, the old one is dropped
    and the young one becomes old; a hit in the old generation moves the
    entry back into the young one. At most `max_entries` entries are held
    (each: the key bytes plus ~100 bytes). */
#ifndef STATS_CACHE_H
#define STATS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stats_play.h"

typedef enum {
    STATS_MATCH_FOUND,   /* the catalog has the track */
    STATS_MATCH_NONE,    /* the catalog has no such track */
    STATS_MATCH_REFUSED, /* the catalog refused the query (not cached) */
} stats_match_status_t;

typedef struct {
    stats_match_status_t status;
    char id[STATS_ID_MAX + 1]; /* FOUND: the track id */
    int64_t duration_ms;       /* FOUND: the track's duration, -1 when unknown */
} stats_match_t;

typedef struct stats_cache stats_cache_t;

/*  Makes a cache of at most `max_entries` (at least 2). Never NULL. */
stats_cache_t *stats_cache_new(size_t max_entries);

/*  Frees it; nulls *self_p. Safe twice. */
void stats_cache_destroy(stats_cache_t **self_p);

/*  True with *out when `key` is cached. */
bool stats_cache_get(stats_cache_t *self, const void *key, size_t len, stats_match_t *out);

/*  Caches `m` under `key` (replacing what was there). */
void stats_cache_put(stats_cache_t *self, const void *key, size_t len, const stats_match_t *m);

/*  Entries held now. */
size_t stats_cache_size(stats_cache_t *self);

#endif
