/*  stats_tally — an open-addressing (linear probing) table of entries
    held in one growing array, so iteration and sorting need no second
    structure; slots hold entry indexes + 1 (0 = empty). */
#include "stats_tally.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "mb_alloc.h"

#define S_SLOTS_MIN 64
#define S_ARENA_CHUNK (64 * 1024) /* bytes of keys per arena block */

typedef struct {
    const char *key;
    size_t len;
    uint64_t hash;
    uint64_t count;
} s_entry_t;

typedef struct s_block {
    struct s_block *next;
    size_t used, cap;
    char data[];
} s_block_t;

struct stats_tally {
    s_entry_t *entries;
    size_t n, cap;
    uint32_t *slots; /* entry index + 1; 0 = empty */
    size_t n_slots;  /* a power of two, kept over twice n */
    s_block_t *arena;
    bool sorted;
};

/*  FNV-1a, 64 bits: keys are short ids, nothing adversarial reaches
    here faster than the LMDB scan that produced it. */
static uint64_t s_hash(const void *key, size_t len)
{
    const unsigned char *p = key;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

stats_tally_t *stats_tally_new(void)
{
    stats_tally_t *self = mb_calloc(1, sizeof *self);
    self->n_slots = S_SLOTS_MIN;
    self->slots = mb_calloc(self->n_slots, sizeof *self->slots);
    return self;
}

void stats_tally_destroy(stats_tally_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    stats_tally_t *self = *self_p;
    while (self->arena) {
        s_block_t *next = self->arena->next;
        free(self->arena);
        self->arena = next;
    }
    free(self->entries);
    free(self->slots);
    free(self);
    *self_p = NULL;
}

static const char *s_copy_key(stats_tally_t *self, const void *key, size_t len)
{
    if (!self->arena || self->arena->cap - self->arena->used < len) {
        size_t cap = len > S_ARENA_CHUNK ? len : S_ARENA_CHUNK;
        s_block_t *b = mb_malloc(sizeof *b + cap);
        b->next = self->arena;
        b->used = 0;
        b->cap = cap;
        self->arena = b;
    }
    char *dst = self->arena->data + self->arena->used;
    if (len)
        memcpy(dst, key, len);
    self->arena->used += len;
    return dst;
}

static size_t s_find(const stats_tally_t *self, const void *key, size_t len, uint64_t hash)
{
    size_t mask = self->n_slots - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        uint32_t slot = self->slots[i];
        if (slot == 0)
            return i;
        const s_entry_t *e = &self->entries[slot - 1];
        if (e->hash == hash && e->len == len && memcmp(e->key, key, len) == 0)
            return i;
    }
}

static void s_grow(stats_tally_t *self)
{
    free(self->slots);
    self->n_slots *= 2;
    self->slots = mb_calloc(self->n_slots, sizeof *self->slots);
    size_t mask = self->n_slots - 1;
    for (size_t k = 0; k < self->n; k++) {
        size_t i = self->entries[k].hash & mask;
        while (self->slots[i])
            i = (i + 1) & mask;
        self->slots[i] = (uint32_t)(k + 1);
    }
}

uint64_t stats_tally_add(stats_tally_t *self, const void *key, size_t len, uint64_t count)
{
    uint64_t hash = s_hash(key, len);
    size_t i = s_find(self, key, len, hash);
    if (self->slots[i]) {
        s_entry_t *e = &self->entries[self->slots[i] - 1];
        e->count += count;
        return e->count;
    }
    if (self->n == self->cap) {
        self->cap = self->cap ? self->cap * 2 : 64;
        self->entries = mb_realloc(self->entries, self->cap * sizeof *self->entries);
    }
    self->entries[self->n] =
        (s_entry_t){.key = s_copy_key(self, key, len), .len = len, .hash = hash, .count = count};
    self->slots[i] = (uint32_t)(++self->n);
    if (self->n * 2 > self->n_slots)
        s_grow(self);
    return count;
}

uint64_t stats_tally_get(stats_tally_t *self, const void *key, size_t len)
{
    if (self->sorted) {
        for (size_t k = 0; k < self->n; k++)
            if (self->entries[k].len == len && memcmp(self->entries[k].key, key, len) == 0)
                return self->entries[k].count;
        return 0;
    }
    size_t i = s_find(self, key, len, s_hash(key, len));
    return self->slots[i] ? self->entries[self->slots[i] - 1].count : 0;
}

size_t stats_tally_size(stats_tally_t *self)
{
    return self->n;
}

static int s_by_count(const void *a_, const void *b_)
{
    const s_entry_t *a = a_, *b = b_;
    if (a->count != b->count)
        return a->count > b->count ? -1 : 1;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = n ? memcmp(a->key, b->key, n) : 0;
    if (c)
        return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

void stats_tally_sort(stats_tally_t *self)
{
    if (self->n > 1)
        qsort(self->entries, self->n, sizeof *self->entries, s_by_count);
    self->sorted = true; /* slots now point at the wrong entries: lookups scan */
}

void stats_tally_entry(stats_tally_t *self, size_t i, const void **key, size_t *len,
                       uint64_t *count)
{
    const s_entry_t *e = &self->entries[i];
    *key = e->key;
    *len = e->len;
    *count = e->count;
}
