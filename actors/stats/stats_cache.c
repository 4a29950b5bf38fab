/*  stats_cache — two generations of open-addressing tables (stats_cache.h). */
#include "stats_cache.h"

#include <stdlib.h>
#include <string.h>

#include "mb_alloc.h"

typedef struct {
    char *key; /* NULL: empty slot */
    size_t len;
    uint64_t hash;
    stats_match_t m;
} s_slot_t;

typedef struct {
    s_slot_t *slots;
    size_t n_slots; /* a power of two, at least twice the generation's capacity */
    size_t n;
} s_gen_t;

struct stats_cache {
    s_gen_t young, old;
    size_t per_gen; /* entries a generation holds before it turns old */
};

static uint64_t s_hash(const void *key, size_t len)
{
    const unsigned char *p = key;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

static void s_gen_init(s_gen_t *g, size_t per_gen)
{
    g->n_slots = 16;
    while (g->n_slots < per_gen * 2)
        g->n_slots *= 2;
    g->slots = mb_calloc(g->n_slots, sizeof *g->slots);
    g->n = 0;
}

static void s_gen_free(s_gen_t *g)
{
    for (size_t i = 0; g->slots && i < g->n_slots; i++)
        free(g->slots[i].key);
    free(g->slots);
    g->slots = NULL;
    g->n = 0;
}

static s_slot_t *s_find(s_gen_t *g, const void *key, size_t len, uint64_t hash)
{
    size_t mask = g->n_slots - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        s_slot_t *s = &g->slots[i];
        if (!s->key || (s->hash == hash && s->len == len && memcmp(s->key, key, len) == 0))
            return s;
    }
}

stats_cache_t *stats_cache_new(size_t max_entries)
{
    stats_cache_t *self = mb_calloc(1, sizeof *self);
    self->per_gen = max_entries < 2 ? 1 : max_entries / 2;
    s_gen_init(&self->young, self->per_gen);
    s_gen_init(&self->old, 1);
    return self;
}

void stats_cache_destroy(stats_cache_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    s_gen_free(&(*self_p)->young);
    s_gen_free(&(*self_p)->old);
    free(*self_p);
    *self_p = NULL;
}

static void s_insert(stats_cache_t *self, const void *key, size_t len, uint64_t hash,
                     const stats_match_t *m)
{
    s_slot_t *s = s_find(&self->young, key, len, hash);
    if (s->key) {
        s->m = *m;
        return;
    }
    if (self->young.n == self->per_gen) {
        s_gen_free(&self->old);
        self->old = self->young;
        s_gen_init(&self->young, self->per_gen);
        s = s_find(&self->young, key, len, hash);
    }
    s->key = mb_malloc(len ? len : 1);
    memcpy(s->key, key, len);
    s->len = len;
    s->hash = hash;
    s->m = *m;
    self->young.n++;
}

bool stats_cache_get(stats_cache_t *self, const void *key, size_t len, stats_match_t *out)
{
    uint64_t hash = s_hash(key, len);
    s_slot_t *s = s_find(&self->young, key, len, hash);
    if (s->key) {
        *out = s->m;
        return true;
    }
    s = s_find(&self->old, key, len, hash);
    if (!s->key)
        return false;
    *out = s->m;
    s_insert(self, key, len, hash, out); /* the old copy goes with its generation */
    return true;
}

void stats_cache_put(stats_cache_t *self, const void *key, size_t len, const stats_match_t *m)
{
    s_insert(self, key, len, s_hash(key, len), m);
}

size_t stats_cache_size(stats_cache_t *self)
{
    return self->young.n + self->old.n;
}
