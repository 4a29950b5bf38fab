/*  pending — the requests waiting for a reply from the bus.

    Each entry is found by its rid (a reply arrives) and kept in deadline
    order (the earliest deadline is the next timeout). Entries are nodes
    embedded in the caller's own request struct, so adding and removing
    never allocates; the rid index is an open-addressing table sized once
    for `capacity` entries. */
#ifndef GW_PENDING_H
#define GW_PENDING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gw_pending_node {
    uint64_t rid;                        /* key; 0 while not in the table */
    int64_t deadline_ms;                 /* monotonic ms */
    struct gw_pending_node *prev, *next; /* deadline order */
} gw_pending_node_t;

typedef struct gw_pending gw_pending_t;

/*  Creates a table for at most `capacity` entries at once. Never NULL. */
gw_pending_t *gw_pending_new(size_t capacity);

/*  Frees the table (not the nodes, which the caller owns); nulls *self_p.
    Safe to call twice. */
void gw_pending_destroy(gw_pending_t **self_p);

/*  Adds `node` under `rid` (non-zero, not already present) with
    `deadline_ms`. Returns 0, MB_EFULL when `capacity` entries are in, or
    MB_EINVAL for rid 0 or a rid already present. */
int gw_pending_add(gw_pending_t *self, gw_pending_node_t *node, uint64_t rid, int64_t deadline_ms);

/*  Removes and returns the node under `rid`, or NULL when none (a late
    reply, or its client is gone). */
gw_pending_node_t *gw_pending_take(gw_pending_t *self, uint64_t rid);

/*  Removes `node` if it is in the table; does nothing otherwise. */
void gw_pending_remove(gw_pending_t *self, gw_pending_node_t *node);

/*  The node with the earliest deadline, or NULL when empty. */
gw_pending_node_t *gw_pending_first(const gw_pending_t *self);

size_t gw_pending_size(const gw_pending_t *self);

#endif
