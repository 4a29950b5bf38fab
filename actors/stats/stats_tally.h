/*  stats_tally — counts by key in memory: the open-addressing hash table
    that read-time aggregations use (streams per track over a window of
    days, distinct listeners over a period, a chart, a royalty report).

        stats_tally_t *t = stats_tally_new ();
        stats_tally_add (t, track_id, len, streams);
        ...
        stats_tally_sort (t);                     most counted first
        for (size_t i = 0; i < stats_tally_size (t); i++)
            stats_tally_entry (t, i, &key, &len, &count);
        stats_tally_destroy (&t);

    Keys are byte strings (copied into an arena the table owns). Memory is
    proportional to the distinct keys added; the callers bound what they
    add by the window they scan. */
#ifndef STATS_TALLY_H
#define STATS_TALLY_H

#include <stddef.h>
#include <stdint.h>

typedef struct stats_tally stats_tally_t;

/*  Returns an empty table (never NULL: allocation aborts). */
stats_tally_t *stats_tally_new(void);

/*  Frees the table and its keys; nulls *self_p. Safe twice. */
void stats_tally_destroy(stats_tally_t **self_p);

/*  Adds `count` to the counter of `key` (`len` bytes), creating it at 0.
    Returns the counter's new value. Not allowed after stats_tally_sort(). */
uint64_t stats_tally_add(stats_tally_t *self, const void *key, size_t len, uint64_t count);

/*  Returns the counter of `key`, 0 when absent. */
uint64_t stats_tally_get(stats_tally_t *self, const void *key, size_t len);

/*  Number of distinct keys. */
size_t stats_tally_size(stats_tally_t *self);

/*  Orders the entries by count, highest first, then by key (bytes, then
    length) so equal counts list in a stable order. Afterwards entries are
    read by index; adding is no longer allowed. */
void stats_tally_sort(stats_tally_t *self);

/*  Reads entry `i` (0 <= i < size) in insertion order, or in sorted order
    after stats_tally_sort(). *key is borrowed from the table. */
void stats_tally_entry(stats_tally_t *self, size_t i, const void **key, size_t *len,
                       uint64_t *count);

#endif
