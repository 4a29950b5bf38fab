/*  stats_import — the import pipeline behind musicbus-import-listens:
    ListenBrainz documents in, play events out, with flat memory.

        read a document -> check each listen (rejected: counted, reported)
          -> queue it; every `batch` listens: look the distinct (isrc,
             artist, title) not in the cache up in the catalog at once
          -> matched: a play event into the publish batch, published when
             it holds `batch` events; unmatched: reported with the reason

    The catalog and the bus are reached through stats_import_io_t, so tests
    plug in fakes and the tool plugs in mb_client (track.match) and
    mb_events (bus.publish).

    Play events are keyed "i:<user>:<listened_at>:<track>": running the
    same import again publishes the same keys, and the stats consumer,
    which counts each key once, counts nothing twice. */
#ifndef STATS_IMPORT_H
#define STATS_IMPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mb_events.h"
#include "stats_cache.h"
#include "stats_listen.h"

#define STATS_IMPORT_BATCH_MAX 1000 /* queries per track.match and events per publish */
#define STATS_IMPORT_REASONS 32     /* distinct rejection reasons counted */

/*  One catalog query. Strings are NUL-terminated; isrc is NULL when the
    listen has none. */
typedef struct {
    const char *isrc;
    const char *artist;
    const char *title;
} stats_match_query_t;

typedef struct {
    /* Looks `n` queries up (1..STATS_IMPORT_BATCH_MAX), filling out[i] for
       each; a query the catalog refused is STATS_MATCH_REFUSED with the
       reason in out[i].id. Returns 0, or a negative code after writing
       why (why_cap bytes): the import stops. */
    int (*match)(void *ctx, const stats_match_query_t *queries, size_t n, stats_match_t *out,
                 char *why, size_t why_cap);
    /* Publishes `n` events (1..STATS_IMPORT_BATCH_MAX) all or none.
       Returns 0 or a negative code after writing why: the import stops. */
    int (*publish)(void *ctx, const mb_event_out_t *events, size_t n, char *why, size_t why_cap);
    void *ctx;
} stats_import_io_t;

typedef struct {
    const char *user;    /* whose listens (an id: see stats_id_valid()) */
    size_t batch;        /* listens per match and events per publish, 1..1000 (0: 1000) */
    size_t cache_max;    /* match results kept (0: 50000) */
    size_t max_document; /* bytes of the largest document (0: STATS_LISTEN_DOC_MAX) */
    FILE *report;        /* one JSON line per unmatched or rejected record; NULL: none */
    FILE *progress;      /* a progress line every progress_ms; NULL: none */
    int progress_ms;     /* 0: 1000 */
    bool dry_run;        /* match, but publish nothing */
} stats_import_opts_t;

typedef struct {
    uint64_t documents;  /* JSON documents read */
    uint64_t read;       /* listen records read (and stretches of non-JSON) */
    uint64_t matched;    /* listens the catalog knows */
    uint64_t unmatched;  /* well-formed listens the catalog does not know */
    uint64_t rejected;   /* malformed records, never sent anywhere */
    uint64_t published;  /* play events the bus acknowledged */
    uint64_t queries;    /* catalog queries sent */
    uint64_t cache_hits; /* listens matched from the cache */
    uint64_t bytes;      /* input consumed */
    size_t n_reasons;
    struct {
        const char *reason; /* static */
        uint64_t count;
    } reasons[STATS_IMPORT_REASONS]; /* rejections by reason; the last slot takes the rest */
} stats_import_counts_t;

typedef struct stats_import stats_import_t;

/*  Makes an import for opts->user. `opts` and `io` are copied (the FILEs
    and ctx are borrowed). Returns NULL when opts->user is not a valid
    id or batch is out of range. */
stats_import_t *stats_import_new(const stats_import_opts_t *opts, const stats_import_io_t *io);

/*  Frees it (what is still queued is dropped: call stats_import_finish()
    first); nulls *self_p. Safe twice. */
void stats_import_destroy(stats_import_t **self_p);

/*  Imports every document of `in` (`name` labels report lines: a path or
    "-"). Returns 0 once the input is consumed (bad records are counted,
    never fatal), or a fatal error: MB_ETOOBIG (a document over the limit),
    MB_EINTR (SIGTERM/SIGINT: stopped between documents),
    MB_EIO (reading failed), or what match/publish returned (the message
    is in stats_import_error()). Queued listens stay queued across files. */
int stats_import_file(stats_import_t *self, FILE *in, const char *name);

/*  Matches and publishes what is still queued. Returns 0 or a fatal
    error as above. */
int stats_import_finish(stats_import_t *self);

/*  The counters so far. Borrowed. */
const stats_import_counts_t *stats_import_counts(stats_import_t *self);

/*  Why the last fatal error happened ("" if none). Borrowed. */
const char *stats_import_error(stats_import_t *self);

/*  Writes the progress line now (to opts->progress). */
void stats_import_progress(stats_import_t *self);

/*  Writes the summary: human lines to `human`, one JSON object line to
    `json` (either may be NULL). */
void stats_import_summary(stats_import_t *self, FILE *human, FILE *json);

#endif
