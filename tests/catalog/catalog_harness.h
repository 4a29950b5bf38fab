/*  catalog_harness — what the catalog's tests add to actor_harness.h:
    opening the catalog actor, calls written as JSON, records made through
    the API, and checks of the events its handlers put in the outbox.
    Failures are Criterion assertions. */
#ifndef CATALOG_HARNESS_H
#define CATALOG_HARNESS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "actor_harness.h"

/*  Makes a temporary folder and opens the catalog there (map_size 0: the
    default). */
void h_open(size_t map_size);
/*  Suite hook: h_open(0). th_teardown() closes and removes everything. */
void h_setup(void);

/*  Calls `op` with args given as JSON (printf format; NULL for no args)
    and, for h_call_as, the envelope's auth map as JSON (NULL: none). */
th_reply_t h_call(const char *op, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
th_reply_t h_call_as(const char *auth, const char *op, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*  Creates a record and returns its id. */
const char *h_new_artist(const char *name);
const char *h_new_album(const char *title, const char *artist, const char *date);
const char *h_new_track(const char *album, const char *artist, int disc, int track);

/*  n copies of c, NUL-terminated; the caller frees. */
char *h_repeat(char c, size_t n);
/*  True when s is RFC 3339 UTC, milliseconds optional. */
bool h_rfc3339(const char *s);

/*  Checks that exactly one event was added since the outbox held
    `before`, and that it is {action, id, object} on `topic` keyed by id
    (`object` NULL: nil). */
void h_expect_event(size_t before, const char *topic, const char *id, const char *action,
                    const json_t *object);

#endif
