/*  pending — the requests waiting for a reply from the bus. */
#include "pending.h"

#include <stdlib.h>

#include "mb_alloc.h"
#include "mb_error.h"

struct gw_pending {
    gw_pending_node_t **slots; /* open addressing, linear probing; NULL = free */
    size_t mask;               /* slots - 1 (a power of two) */
    size_t capacity;           /* entries allowed at once (at most half the slots) */
    size_t size;
    gw_pending_node_t *head, *tail; /* deadline order */
};

gw_pending_t *gw_pending_new(size_t capacity)
{
    gw_pending_t *self = mb_calloc(1, sizeof *self);
    size_t slots = 16;
    while (slots < capacity * 2)
        slots *= 2;
    self->slots = mb_calloc(slots, sizeof *self->slots);
    self->mask = slots - 1;
    self->capacity = capacity;
    return self;
}

void gw_pending_destroy(gw_pending_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->slots);
    free(*self_p);
    *self_p = NULL;
}

static size_t s_slot(const gw_pending_t *self, uint64_t rid)
{
    /* Fibonacci hashing spreads sequential rids over the table. */
    return (size_t)((rid * 0x9e3779b97f4a7c15ull) >> 32) & self->mask;
}

int gw_pending_add(gw_pending_t *self, gw_pending_node_t *node, uint64_t rid, int64_t deadline_ms)
{
    if (rid == 0)
        return MB_EINVAL;
    if (self->size >= self->capacity)
        return MB_EFULL;
    size_t i = s_slot(self, rid);
    while (self->slots[i]) {
        if (self->slots[i]->rid == rid)
            return MB_EINVAL;
        i = (i + 1) & self->mask;
    }
    self->slots[i] = node;
    node->rid = rid;
    node->deadline_ms = deadline_ms;
    /* Deadlines mostly arrive in order (one timeout for all): walk back
       from the tail, which is O(1) then. */
    gw_pending_node_t *after = self->tail;
    while (after && after->deadline_ms > deadline_ms)
        after = after->prev;
    node->prev = after;
    node->next = after ? after->next : self->head;
    if (node->next)
        node->next->prev = node;
    else
        self->tail = node;
    if (after)
        after->next = node;
    else
        self->head = node;
    self->size++;
    return 0;
}

/*  Empties slot `i` and moves later entries of its probe run back, so
    lookups never need tombstones. */
static void s_delete_slot(gw_pending_t *self, size_t i)
{
    size_t j = i;
    self->slots[i] = NULL;
    for (;;) {
        j = (j + 1) & self->mask;
        gw_pending_node_t *n = self->slots[j];
        if (!n)
            return;
        size_t home = s_slot(self, n->rid);
        /* Move n into the hole unless its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            self->slots[i] = n;
            self->slots[j] = NULL;
            i = j;
        }
    }
}

static void s_unlink(gw_pending_t *self, gw_pending_node_t *node)
{
    if (node->prev)
        node->prev->next = node->next;
    else
        self->head = node->next;
    if (node->next)
        node->next->prev = node->prev;
    else
        self->tail = node->prev;
    node->prev = node->next = NULL;
    node->rid = 0;
    self->size--;
}

static size_t s_find(const gw_pending_t *self, uint64_t rid)
{
    if (rid == 0)
        return (size_t)-1;
    size_t i = s_slot(self, rid);
    while (self->slots[i]) {
        if (self->slots[i]->rid == rid)
            return i;
        i = (i + 1) & self->mask;
    }
    return (size_t)-1;
}

gw_pending_node_t *gw_pending_take(gw_pending_t *self, uint64_t rid)
{
    size_t i = s_find(self, rid);
    if (i == (size_t)-1)
        return NULL;
    gw_pending_node_t *node = self->slots[i];
    s_delete_slot(self, i);
    s_unlink(self, node);
    return node;
}

void gw_pending_remove(gw_pending_t *self, gw_pending_node_t *node)
{
    size_t i = s_find(self, node->rid);
    if (i == (size_t)-1 || self->slots[i] != node)
        return;
    s_delete_slot(self, i);
    s_unlink(self, node);
}

gw_pending_node_t *gw_pending_first(const gw_pending_t *self)
{
    return self->head;
}

size_t gw_pending_size(const gw_pending_t *self)
{
    return self->size;
}
