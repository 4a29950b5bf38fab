/*  stats_listen — reading ListenBrainz listens: a stream of JSON documents
    taken one at a time, and the rules one listen record obeys.

    Inputs ListenBrainz users have, all accepted, in any mix:
      - import documents, one after another (the submit API's format):
          {"listen_type": "import", "payload": [listen, ...]}
      - JSON lines of single listens (the export's listens.jsonl);
      - a JSON array of listens (older exports).
    A listen:
        {"listened_at": 1443521965,
         "track_metadata": {"artist_name": "...", "track_name": "...",
                            "release_name": "...",
                            "additional_info": {"isrc": "...", "duration_ms": 222000, ...}}}

    The reader holds one document at a time (plus a read buffer), so
    memory does not grow with the input; a single document larger than
    the reader's limit is refused (ListenBrainz caps an import document at
    1000 listens). After a syntax error it resumes at the next line, so
    one bad line of a JSON-lines file costs that line only. */
#ifndef STATS_LISTEN_H
#define STATS_LISTEN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define STATS_LISTEN_NAME_MAX 200        /* characters: longer names match no catalog record */
#define STATS_LISTEN_DOC_MAX (64u << 20) /* default largest document, bytes */
#define STATS_ISRC_LEN 12

/* ---- documents ------------------------------------------------------------ */

typedef struct stats_reader stats_reader_t;

/*  Reads documents from `in` (not closed by the reader), refusing any
    document over `max_document` bytes (0: STATS_LISTEN_DOC_MAX). Never
    NULL. */
stats_reader_t *stats_reader_new(FILE *in, size_t max_document);

/*  Frees the reader; nulls *self_p. Safe twice. */
void stats_reader_destroy(stats_reader_t **self_p);

/*  Reads the next document. Returns:
      1            *doc is the next JSON array or object (caller decrefs);
                   *line is the line it starts on (from 1);
      0            end of input;
      MB_EINVAL    that stretch of input is not JSON: why[] (why_cap bytes)
                   says so and *line where; the reader resumed at the next
                   line (call again);
      MB_ETOOBIG   a document is larger than the limit (stop);
      MB_EIO       reading failed (stop; errno tells). */
int stats_reader_next(stats_reader_t *self, json_t **doc, size_t *line, char *why, size_t why_cap);

/*  Bytes consumed so far. */
uint64_t stats_reader_bytes(stats_reader_t *self);

/* ---- listens --------------------------------------------------------------------- */

typedef struct {
    int64_t listened_at; /* whole seconds since the epoch */
    const char *artist;  /* trimmed, not NUL-terminated; borrowed from the JSON */
    size_t artist_len;
    const char *title;
    size_t title_len;
    const char *release; /* NULL when absent */
    size_t release_len;
    char isrc[STATS_ISRC_LEN + 1]; /* normalised; "" when absent or not an ISRC */
    int64_t ms_played;             /* from additional_info.ms_played, or -1 */
    int64_t duration_ms;           /* from additional_info.duration_ms / duration, or -1 */
    bool too_long;                 /* artist or title over STATS_LISTEN_NAME_MAX characters */
} stats_listen_t;

/*  Reads listen object `o` into *l (borrowing its strings). `now_s` bounds
    listened_at (a day of clock skew allowed). Returns NULL, or a static
    reason the record is malformed. */
const char *stats_listen_parse(const json_t *o, int64_t now_s, stats_listen_t *l);

/*  Normalises an ISRC ("us-rc1-76-07839", "USRC17607839") into 12
    capitals and digits; false when it is not one. */
bool stats_isrc_normalise(const char *s, size_t len, char out[STATS_ISRC_LEN + 1]);

/*  What a document holds. Sets *listens to the array of listen records
    (borrowed from doc) or, for a single listen, *single to it. Returns
    NULL, or a static reason the whole document is refused (then every
    record in it is counted as rejected: *listens may still be set). */
const char *stats_listen_doc(json_t *doc, json_t **listens, json_t **single);

#endif
