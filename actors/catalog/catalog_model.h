/*  catalog_model — the catalog's records (artist, album, track): the rules
    each field obeys, reading them from a request body, and their msgpack
    form in LMDB.

    A record struct borrows its strings: from the request's args, from a
    decoded stored record, or from the caller's id buffer. It holds only
    what it normalised itself (ISRC, timestamps). Keep what it borrows
    from alive while the struct is in use.

    The rules are the ones schemas/openapi.json states; the gateway checks
    them first, the actor checks them again because the bus has other
    clients. Every rule broken is answered with 400 "invalid" and the
    field at fault ("body.artist_ids[2]"). */
#ifndef CATALOG_MODEL_H
#define CATALOG_MODEL_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mb_actor.h"

#define CATALOG_ID_MAX 64         /* bytes of an id, in paths and bodies */
#define CATALOG_NAME_MAX 200      /* characters of a name, title or label */
#define CATALOG_GENRES_MAX 10     /* genres per artist or album */
#define CATALOG_GENRE_MAX 50      /* characters of a genre */
#define CATALOG_ARTIST_IDS_MAX 20 /* artists per album or track */
#define CATALOG_DISC_MAX 99
#define CATALOG_TRACK_MAX 999
#define CATALOG_DURATION_MAX 86400000 /* ms: one day */
#define CATALOG_ISRC_LEN 12           /* stored form, no hyphens */
#define CATALOG_DATE_MAX 10           /* YYYY-MM-DD */
#define CATALOG_TIME_MAX 31           /* room for an RFC 3339 timestamp */
#define CATALOG_MATCH_TEXT_MAX 1024   /* bytes of an artist or title in a track.match query */
#define CATALOG_VERSION_MAX 64        /* bytes of an audio version id (mb_media_sign's limit) */
#define CATALOG_REASON_MAX 512        /* bytes of a failure reason kept */

/*  A string borrowed from elsewhere; ptr NULL means null (absent). */
typedef struct {
    const char *ptr;
    size_t len;
} catalog_str_t;

/*  What a listener can play of a track: the track's "audio" object, which
    the audio consumer (catalog_audio.h) keeps in the track record. */
typedef enum {
    CATALOG_AUDIO_NONE,       /* no version uploaded */
    CATALOG_AUDIO_PROCESSING, /* versions being transcoded, none ready */
    CATALOG_AUDIO_READY,      /* a version can be streamed */
    CATALOG_AUDIO_FAILED,     /* every version failed (or was removed after failing) */
} catalog_audio_status_t;

typedef struct {
    catalog_audio_status_t status;
    catalog_str_t version;        /* the current (newest ready) version; null unless ready */
    catalog_str_t failure_reason; /* the newest failure's reason; null unless failed */
    /* Of the current version; NaN (packed as null) when unknown or not ready. */
    double integrated_lufs; /* LUFS (EBU R 128) */
    double true_peak_dbtp;  /* dBTP */
    double lra_lu;          /* loudness range, LU */
    double gain_db;         /* brings the track to -14 LUFS without clipping */
    bool lossless;          /* the current version's master is lossless */
} catalog_audio_t;

typedef struct {
    catalog_str_t id;
    catalog_str_t name;
    catalog_str_t genres[CATALOG_GENRES_MAX];
    size_t n_genres;
    char created_at[CATALOG_TIME_MAX + 1];
    char updated_at[CATALOG_TIME_MAX + 1];
} catalog_artist_t;

typedef struct {
    catalog_str_t id;
    catalog_str_t title;
    catalog_str_t artist_ids[CATALOG_ARTIST_IDS_MAX];
    size_t n_artist_ids;
    catalog_str_t release_date; /* null when unknown */
    catalog_str_t label;        /* null when unknown */
    catalog_str_t upc;          /* null when unknown */
    catalog_str_t genres[CATALOG_GENRES_MAX];
    size_t n_genres;
    char created_at[CATALOG_TIME_MAX + 1];
    char updated_at[CATALOG_TIME_MAX + 1];
    bool artist_ids_given; /* set by catalog_album_apply(): the body named them */
} catalog_album_t;

typedef struct {
    catalog_str_t id;
    catalog_str_t title;
    catalog_str_t artist_ids[CATALOG_ARTIST_IDS_MAX];
    size_t n_artist_ids;
    catalog_str_t album_id;
    int64_t disc_number;
    int64_t track_number;
    int64_t duration_ms;
    char isrc[CATALOG_ISRC_LEN + 1]; /* "" when unknown */
    bool explicit_;
    catalog_audio_t audio; /* read-only through the API: the audio consumer sets it */
    char created_at[CATALOG_TIME_MAX + 1];
    char updated_at[CATALOG_TIME_MAX + 1];
    bool artist_ids_given; /* set by catalog_track_apply(): the body named them */
    bool album_id_given;   /* ... named album_id */
    bool position_given;   /* ... named album_id, disc_number or track_number */
} catalog_track_t;

/*  Sets *a (or *al, *t) to an empty record with the defaults of a create
    (no genres, null optional fields, disc 1, not explicit). */
void catalog_artist_init(catalog_artist_t *a);
void catalog_album_init(catalog_album_t *al);
void catalog_track_init(catalog_track_t *t);

/*  Applies the fields of request body `body` (args.body, may be NULL) to
    the record. With `create`, the body must hold every required field;
    otherwise (PATCH) only the fields given change and null clears an
    optional one. Returns true, or false after answering `call` with 400
    "invalid" naming the field at fault (unknown field, wrong type, broken
    rule). Checks nothing about other records (ids that must exist). */
bool catalog_artist_apply(mb_call_t *call, const msgpack_object *body, catalog_artist_t *a,
                          bool create);
bool catalog_album_apply(mb_call_t *call, const msgpack_object *body, catalog_album_t *al,
                         bool create);
bool catalog_track_apply(mb_call_t *call, const msgpack_object *body, catalog_track_t *t,
                         bool create);

/*  Reads a stored record (a decoded msgpack map) into the struct, which
    borrows from `o`. Returns false when `o` is not a record of that kind
    (a corrupt or foreign value). */
bool catalog_artist_decode(const msgpack_object *o, catalog_artist_t *a);
bool catalog_album_decode(const msgpack_object *o, catalog_album_t *al);
bool catalog_track_decode(const msgpack_object *o, catalog_track_t *t);

/*  Packs the record as one msgpack map: the stored form, which is also
    the reply body. */
void catalog_artist_pack(msgpack_packer *pk, const catalog_artist_t *a);
void catalog_album_pack(msgpack_packer *pk, const catalog_album_t *al);
void catalog_track_pack(msgpack_packer *pk, const catalog_track_t *t);

/*  Sets *audio to "none": no version, every number unknown. */
void catalog_audio_init(catalog_audio_t *audio);

/*  Names of the statuses as answered ("none", "processing", "ready",
    "failed"). */
const char *catalog_audio_status_name(catalog_audio_status_t status);

/*  True when both say the same (numbers compared bit for bit, so NaN
    equals NaN). */
bool catalog_audio_equal(const catalog_audio_t *a, const catalog_audio_t *b);

/*  Packs the track's "audio" object: {status, version, failure_reason,
    loudness: {integrated_lufs, true_peak_dbtp, lra_lu} or nil, gain_db,
    lossless}; loudness and gain_db are nil unless status is ready. */
void catalog_audio_pack(msgpack_packer *pk, const catalog_audio_t *audio);

/*  Reads a loudness number: a float or an integer; nil or absent (NULL)
    gives NaN. Returns false for anything else, or a non-finite value. */
bool catalog_number_read(const msgpack_object *o, double *out);

/*  Packs a number, or nil for NaN. */
void catalog_number_pack(msgpack_packer *pk, double value);

/*  Writes the current time as RFC 3339 UTC with milliseconds
    ("2026-11-28T02:10:00.123Z") into out. */
void catalog_now(char out[CATALOG_TIME_MAX + 1]);

/*  Writes `unix_ms` (milliseconds since the Unix epoch) the same way. */
void catalog_time_format(int64_t unix_ms, char out[CATALOG_TIME_MAX + 1]);

/*  Normalises an ISRC given as CCXXXYYNNNNN or CC-XXX-YY-NNNNN (capitals
    and digits) into the 12-character stored form plus NUL. Returns false
    when `s` has neither shape. */
bool catalog_isrc_normalise(const char *s, size_t len, char out[CATALOG_ISRC_LEN + 1]);

/*  Reads an ISRC the way an importer may spell it: ASCII letters
    upper-cased, hyphens and spaces dropped, then it must be the
    12-character form (CCXXXYYNNNNN). Writes it and a NUL into out and
    returns true; false when it is no ISRC even so. */
bool catalog_isrc_loose(const char *s, size_t len, char out[CATALOG_ISRC_LEN + 1]);

/*  Normalises an artist name or a track title for matching (track.match):
      1. U+2018, U+2019, U+201C, U+201D (curly quotes) and the ASCII
         characters ' " . are deleted ("Don't" -> "dont", "R.E.M." -> "rem");
      2. the ASCII characters , ! ? ( ) [ ] - , blanks and control bytes
         separate words: each run of them becomes one space, none at
         either end ("Jay-Z" -> "jay z", "  Song (Live) " -> "song live");
      3. ASCII letters are lower-cased; every other byte (non-ASCII UTF-8)
         is kept as it is: no Unicode case folding, no accent stripping;
      4. a leading "the " is dropped ("The Beatles" -> "beatles").
    Writes the result into out, which has room for `len` bytes (the
    result is never longer), and returns its length (0 when nothing is
    left). Never fails; any bytes are accepted. */
size_t catalog_match_normalise(const char *s, size_t len, char *out);

/*  True when `s` is YYYY, YYYY-MM or YYYY-MM-DD naming a real date. */
bool catalog_date_valid(const char *s, size_t len);


/*  Reads a string argument that must be an id (1..CATALOG_ID_MAX bytes,
    valid UTF-8) into *out. Returns true, or false after answering `call`
    with 400 "invalid" naming `field`. */
bool catalog_id_arg(mb_call_t *call, const msgpack_object *o, const char *field,
                    catalog_str_t *out);

#endif
