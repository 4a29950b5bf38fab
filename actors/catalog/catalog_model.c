/*  catalog_model — see catalog_model.h. */
#include "catalog_model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mb_msgpack.h"
#include "mb_utf8.h"

/*  Longest field path we name in an error ("body.artist_ids[19]", or an
    unknown key cut short). */
#define S_FIELD_MAX 96
/*  An unknown key is echoed in the field path only up to this many bytes. */
#define S_KEY_ECHO_MAX 48

/* ---- answering a broken rule ----------------------------------------- */

static bool s_invalid(mb_call_t *call, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*  Answers 400 "invalid" naming `field`; returns false so callers can
    `return s_invalid (...)`. */
static bool s_invalid(mb_call_t *call, const char *field, const char *fmt, ...)
{
    char message[256];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    mb_call_error(call, 400, "invalid", field, "%s", message);
    return false;
}

static bool s_missing(mb_call_t *call, const char *field)
{
    return s_invalid(call, field, "%s is required", field);
}

/*  The key is echoed back only when it is short printable ASCII: it goes
    into a JSON document and a log line, and a peer chose its bytes. */
static bool s_unknown_field(mb_call_t *call, const msgpack_object *key)
{
    const char *s;
    size_t len;
    bool printable = mb_obj_str(key, &s, &len) && len > 0 && len <= S_KEY_ECHO_MAX;
    for (size_t i = 0; printable && i < len; i++)
        printable = s[i] > 0x20 && s[i] < 0x7f;
    if (!printable)
        return s_invalid(call, "body", "body has a field that is not allowed");
    char field[S_FIELD_MAX];
    snprintf(field, sizeof field, "body.%.*s", (int)len, s);
    return s_invalid(call, field, "%s is not a field of this object", field);
}

/* ---- text rules ------------------------------------------------------- */


static bool s_is_upper(char c)
{
    return c >= 'A' && c <= 'Z';
}

static bool s_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/*  The 12-character form: CC XXX YY NNNNN. */
static bool s_isrc_compact_valid(const char *s)
{
    for (int i = 0; i < CATALOG_ISRC_LEN; i++) {
        bool ok = i < 2   ? s_is_upper(s[i])
                  : i < 5 ? s_is_upper(s[i]) || s_is_digit(s[i])
                          : s_is_digit(s[i]);
        if (!ok)
            return false;
    }
    return true;
}

bool catalog_isrc_normalise(const char *s, size_t len, char out[CATALOG_ISRC_LEN + 1])
{
    char compact[CATALOG_ISRC_LEN + 1];
    if (len == CATALOG_ISRC_LEN)
        memcpy(compact, s, CATALOG_ISRC_LEN);
    else if (len == CATALOG_ISRC_LEN + 3 && s[2] == '-' && s[6] == '-' && s[9] == '-') {
        memcpy(compact, s, 2);
        memcpy(compact + 2, s + 3, 3);
        memcpy(compact + 5, s + 7, 2);
        memcpy(compact + 7, s + 10, 5);
    } else
        return false;
    compact[CATALOG_ISRC_LEN] = '\0';
    if (!s_isrc_compact_valid(compact))
        return false;
    memcpy(out, compact, sizeof compact);
    return true;
}

bool catalog_isrc_loose(const char *s, size_t len, char out[CATALOG_ISRC_LEN + 1])
{
    char compact[CATALOG_ISRC_LEN + 1];
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '-' || c == ' ')
            continue;
        if (n == CATALOG_ISRC_LEN)
            return false;
        compact[n++] = c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
    }
    if (n != CATALOG_ISRC_LEN || !s_isrc_compact_valid(compact))
        return false;
    compact[n] = '\0';
    memcpy(out, compact, sizeof compact);
    return true;
}

/*  Length of a curly quote (U+2018, U+2019, U+201C, U+201D: E2 80 98/99/9C/9D)
    starting at s[i], or 0. */
static size_t s_curly_quote(const unsigned char *s, size_t len, size_t i)
{
    if (len - i < 3 || s[i] != 0xe2 || s[i + 1] != 0x80)
        return 0;
    unsigned char c = s[i + 2];
    return c == 0x98 || c == 0x99 || c == 0x9c || c == 0x9d ? 3 : 0;
}

size_t catalog_match_normalise(const char *s, size_t len, char *out)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = 0;
    bool space = false; /* a word separator is pending */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = p[i];
        size_t quote = s_curly_quote(p, len, i);
        if (quote) {
            i += quote - 1;
            continue;
        }
        if (c == '\'' || c == '"' || c == '.')
            continue;
        if (c <= ' ' || c == 0x7f || (c < 0x80 && strchr(",!?()[]-", c))) {
            space = n > 0;
            continue;
        }
        if (space)
            out[n++] = ' ';
        space = false;
        out[n++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    if (n > 4 && memcmp(out, "the ", 4) == 0) {
        memmove(out, out + 4, n - 4);
        n -= 4;
    }
    return n;
}

static int s_digits(const char *s, size_t n)
{
    int value = 0;
    for (size_t i = 0; i < n; i++) {
        if (!s_is_digit(s[i]))
            return -1;
        value = value * 10 + (s[i] - '0');
    }
    return value;
}

bool catalog_date_valid(const char *s, size_t len)
{
    if (len != 4 && len != 7 && len != 10)
        return false;
    int year = s_digits(s, 4);
    if (year < 0)
        return false;
    if (len == 4)
        return true;
    int month = s[4] == '-' ? s_digits(s + 5, 2) : -1;
    if (month < 1 || month > 12)
        return false;
    if (len == 7)
        return true;
    int day = s[7] == '-' ? s_digits(s + 8, 2) : -1;
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    int last = days[month - 1] + (month == 2 && leap);
    return day >= 1 && day <= last;
}

void catalog_time_format(int64_t unix_ms, char out[CATALOG_TIME_MAX + 1])
{
    time_t seconds = (time_t)(unix_ms / 1000);
    struct tm tm;
    gmtime_r(&seconds, &tm);
    size_t n = strftime(out, CATALOG_TIME_MAX + 1, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, CATALOG_TIME_MAX + 1 - n, ".%03dZ", (int)(unix_ms % 1000));
}

void catalog_now(char out[CATALOG_TIME_MAX + 1])
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    catalog_time_format((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000, out);
}

/* ---- reading one field of a body --------------------------------------- */

/*  A string of min..max characters; nil too when `nullable` (out->ptr
    NULL). Bytes are bounded first so a huge string costs nothing. */
static bool s_str(mb_call_t *call, const msgpack_object *o, const char *field, size_t min,
                  size_t max, bool nullable, catalog_str_t *out)
{
    if (o == NULL)
        return s_missing(call, field);
    if (nullable && o->type == MSGPACK_OBJECT_NIL) {
        *out = (catalog_str_t){NULL, 0};
        return true;
    }
    const char *s;
    size_t len, chars;
    if (!mb_obj_str(o, &s, &len))
        return s_invalid(call, field, "%s must be a string%s", field, nullable ? " or null" : "");
    if (len > max * 4)
        return s_invalid(call, field, "%s must be at most %zu characters", field, max);
    if (!mb_utf8_chars(s, len, &chars))
        return s_invalid(call, field, "%s must be valid UTF-8", field);
    if (chars < min)
        return s_invalid(call, field, "%s must not be empty", field);
    if (chars > max)
        return s_invalid(call, field, "%s must be at most %zu characters", field, max);
    *out = (catalog_str_t){s, len};
    return true;
}

/*  An integer in min..max. A float with no fraction counts: JSON does not
    tell 3 from 3.0, and JSON Schema's "integer" accepts both. */
static bool s_int(mb_call_t *call, const msgpack_object *o, const char *field, int64_t min,
                  int64_t max, int64_t *out)
{
    if (o == NULL)
        return s_missing(call, field);
    int64_t value;
    bool is_float = o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32;
    if (is_float && o->via.f64 == trunc(o->via.f64) && o->via.f64 >= (double)min &&
        o->via.f64 <= (double)max)
        value = (int64_t)o->via.f64;
    else if (!mb_obj_int(o, &value) || value < min || value > max)
        return s_invalid(call, field, "%s must be an integer from %lld to %lld", field,
                         (long long)min, (long long)max);
    *out = value;
    return true;
}

static bool s_bool(mb_call_t *call, const msgpack_object *o, const char *field, bool *out)
{
    if (!mb_obj_bool(o, out))
        return s_invalid(call, field, "%s must be true or false", field);
    return true;
}

static bool s_str_eq(catalog_str_t a, catalog_str_t b)
{
    return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

/*  An array of min_items..max_items distinct strings of item_min..item_max
    characters each. */
static bool s_str_list(mb_call_t *call, const msgpack_object *o, const char *field,
                       size_t min_items, size_t max_items, size_t item_min, size_t item_max,
                       catalog_str_t *out, size_t *n_out)
{
    if (o == NULL)
        return s_missing(call, field);
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return s_invalid(call, field, "%s must be an array", field);
    size_t n = o->via.array.size;
    if (n > max_items)
        return s_invalid(call, field, "%s must have at most %zu items", field, max_items);
    if (n < min_items)
        return s_invalid(call, field, "%s must have at least %zu item%s", field, min_items,
                         min_items == 1 ? "" : "s");
    for (size_t i = 0; i < n; i++) {
        char item[S_FIELD_MAX];
        snprintf(item, sizeof item, "%s[%zu]", field, i);
        if (!s_str(call, &o->via.array.ptr[i], item, item_min, item_max, false, &out[i]))
            return false;
        for (size_t j = 0; j < i; j++)
            if (s_str_eq(out[i], out[j]))
                return s_invalid(call, item, "%s repeats %s[%zu]", item, field, j);
    }
    *n_out = n;
    return true;
}

static bool s_genres(mb_call_t *call, const msgpack_object *o, catalog_str_t *out, size_t *n)
{
    return s_str_list(call, o, "body.genres", 0, CATALOG_GENRES_MAX, 1, CATALOG_GENRE_MAX, out, n);
}

static bool s_artist_ids(mb_call_t *call, const msgpack_object *o, catalog_str_t *out, size_t *n)
{
    return s_str_list(call, o, "body.artist_ids", 1, CATALOG_ARTIST_IDS_MAX, 1, CATALOG_ID_MAX, out,
                      n);
}

static bool s_release_date(mb_call_t *call, const msgpack_object *o, catalog_str_t *out)
{
    if (!s_str(call, o, "body.release_date", 1, CATALOG_ID_MAX, true, out))
        return false;
    if (out->ptr && !catalog_date_valid(out->ptr, out->len))
        return s_invalid(call, "body.release_date",
                         "body.release_date must be a real date as YYYY, YYYY-MM or YYYY-MM-DD");
    return true;
}

static bool s_upc(mb_call_t *call, const msgpack_object *o, catalog_str_t *out)
{
    if (!s_str(call, o, "body.upc", 1, CATALOG_ID_MAX, true, out))
        return false;
    if (out->ptr && (out->len < 12 || out->len > 13 || s_digits(out->ptr, 6) < 0 ||
                     s_digits(out->ptr + 6, out->len - 6) < 0))
        return s_invalid(call, "body.upc", "body.upc must be 12 or 13 digits (UPC-A or EAN-13)");
    return true;
}

static bool s_isrc(mb_call_t *call, const msgpack_object *o, char out[CATALOG_ISRC_LEN + 1])
{
    catalog_str_t isrc;
    if (!s_str(call, o, "body.isrc", 1, CATALOG_ID_MAX, true, &isrc))
        return false;
    if (isrc.ptr == NULL)
        out[0] = '\0';
    else if (!catalog_isrc_normalise(isrc.ptr, isrc.len, out))
        return s_invalid(call, "body.isrc",
                         "body.isrc must be an ISRC in capitals: CCXXXYYNNNNN or CC-XXX-YY-NNNNN");
    return true;
}

/*  Checks that the body is a map whose keys are all strings. */
static bool s_body(mb_call_t *call, const msgpack_object *body)
{
    if (body == NULL)
        return s_missing(call, "body");
    if (body->type != MSGPACK_OBJECT_MAP)
        return s_invalid(call, "body", "body must be a JSON object");
    for (uint32_t i = 0; i < body->via.map.size; i++)
        if (body->via.map.ptr[i].key.type != MSGPACK_OBJECT_STR)
            return s_invalid(call, "body", "body's field names must be strings");
    return true;
}

/* ---- applying a body ----------------------------------------------------- */

void catalog_artist_init(catalog_artist_t *a)
{
    memset(a, 0, sizeof *a);
}

void catalog_album_init(catalog_album_t *al)
{
    memset(al, 0, sizeof *al);
}

void catalog_track_init(catalog_track_t *t)
{
    memset(t, 0, sizeof *t);
    t->disc_number = 1;
    catalog_audio_init(&t->audio);
}

bool catalog_artist_apply(mb_call_t *call, const msgpack_object *body, catalog_artist_t *a,
                          bool create)
{
    if (!s_body(call, body))
        return false;
    bool has_name = false;
    for (uint32_t i = 0; i < body->via.map.size; i++) {
        const msgpack_object *key = &body->via.map.ptr[i].key;
        const msgpack_object *val = &body->via.map.ptr[i].val;
        bool ok;
        if (mb_obj_str_eq(key, "name"))
            ok = has_name = s_str(call, val, "body.name", 1, CATALOG_NAME_MAX, false, &a->name);
        else if (mb_obj_str_eq(key, "genres"))
            ok = s_genres(call, val, a->genres, &a->n_genres);
        else
            ok = s_unknown_field(call, key);
        if (!ok)
            return false;
    }
    if (create && !has_name)
        return s_missing(call, "body.name");
    return true;
}

bool catalog_album_apply(mb_call_t *call, const msgpack_object *body, catalog_album_t *al,
                         bool create)
{
    if (!s_body(call, body))
        return false;
    bool has_title = false;
    for (uint32_t i = 0; i < body->via.map.size; i++) {
        const msgpack_object *key = &body->via.map.ptr[i].key;
        const msgpack_object *val = &body->via.map.ptr[i].val;
        bool ok;
        if (mb_obj_str_eq(key, "title"))
            ok = has_title = s_str(call, val, "body.title", 1, CATALOG_NAME_MAX, false, &al->title);
        else if (mb_obj_str_eq(key, "artist_ids"))
            ok = al->artist_ids_given = s_artist_ids(call, val, al->artist_ids, &al->n_artist_ids);
        else if (mb_obj_str_eq(key, "release_date"))
            ok = s_release_date(call, val, &al->release_date);
        else if (mb_obj_str_eq(key, "label"))
            ok = s_str(call, val, "body.label", 1, CATALOG_NAME_MAX, true, &al->label);
        else if (mb_obj_str_eq(key, "upc"))
            ok = s_upc(call, val, &al->upc);
        else if (mb_obj_str_eq(key, "genres"))
            ok = s_genres(call, val, al->genres, &al->n_genres);
        else
            ok = s_unknown_field(call, key);
        if (!ok)
            return false;
    }
    if (create && !has_title)
        return s_missing(call, "body.title");
    if (create && !al->artist_ids_given)
        return s_missing(call, "body.artist_ids");
    return true;
}

bool catalog_track_apply(mb_call_t *call, const msgpack_object *body, catalog_track_t *t,
                         bool create)
{
    if (!s_body(call, body))
        return false;
    bool has_title = false, has_disc_number = false, has_track_number = false;
    bool has_duration = false;
    for (uint32_t i = 0; i < body->via.map.size; i++) {
        const msgpack_object *key = &body->via.map.ptr[i].key;
        const msgpack_object *val = &body->via.map.ptr[i].val;
        bool ok;
        if (mb_obj_str_eq(key, "title"))
            ok = has_title = s_str(call, val, "body.title", 1, CATALOG_NAME_MAX, false, &t->title);
        else if (mb_obj_str_eq(key, "artist_ids"))
            ok = t->artist_ids_given = s_artist_ids(call, val, t->artist_ids, &t->n_artist_ids);
        else if (mb_obj_str_eq(key, "album_id"))
            ok = t->album_id_given = catalog_id_arg(call, val, "body.album_id", &t->album_id);
        else if (mb_obj_str_eq(key, "disc_number"))
            ok = has_disc_number =
                s_int(call, val, "body.disc_number", 1, CATALOG_DISC_MAX, &t->disc_number);
        else if (mb_obj_str_eq(key, "track_number"))
            ok = has_track_number =
                s_int(call, val, "body.track_number", 1, CATALOG_TRACK_MAX, &t->track_number);
        else if (mb_obj_str_eq(key, "duration_ms"))
            ok = has_duration =
                s_int(call, val, "body.duration_ms", 0, CATALOG_DURATION_MAX, &t->duration_ms);
        else if (mb_obj_str_eq(key, "isrc"))
            ok = s_isrc(call, val, t->isrc);
        else if (mb_obj_str_eq(key, "explicit"))
            ok = s_bool(call, val, "body.explicit", &t->explicit_);
        else
            ok = s_unknown_field(call, key);
        if (!ok)
            return false;
    }
    t->position_given = t->album_id_given || has_disc_number || has_track_number;
    if (create) {
        if (!has_title)
            return s_missing(call, "body.title");
        if (!t->artist_ids_given)
            return s_missing(call, "body.artist_ids");
        if (!t->album_id_given)
            return s_missing(call, "body.album_id");
        if (!has_track_number)
            return s_missing(call, "body.track_number");
        if (!has_duration)
            return s_missing(call, "body.duration_ms");
    }
    return true;
}

bool catalog_id_arg(mb_call_t *call, const msgpack_object *o, const char *field, catalog_str_t *out)
{
    return s_str(call, o, field, 1, CATALOG_ID_MAX, false, out);
}

/* ---- stored form ----------------------------------------------------------- */

static bool s_get_str(const msgpack_object *o, catalog_str_t *out)
{
    if (o->type == MSGPACK_OBJECT_NIL) {
        *out = (catalog_str_t){NULL, 0};
        return true;
    }
    return mb_obj_str(o, &out->ptr, &out->len);
}

static bool s_get_list(const msgpack_object *o, catalog_str_t *out, size_t max, size_t *n)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > max)
        return false;
    for (uint32_t i = 0; i < o->via.array.size; i++)
        if (!mb_obj_str(&o->via.array.ptr[i], &out[i].ptr, &out[i].len))
            return false;
    *n = o->via.array.size;
    return true;
}

static bool s_get_time(const msgpack_object *o, char out[CATALOG_TIME_MAX + 1])
{
    const char *s;
    size_t len;
    if (!mb_obj_str(o, &s, &len) || len > CATALOG_TIME_MAX)
        return false;
    memcpy(out, s, len);
    out[len] = '\0';
    return true;
}

/* ---- a track's audio ---------------------------------------------------------- */

static const char *s_audio_status_names[] = {"none", "processing", "ready", "failed"};

void catalog_audio_init(catalog_audio_t *audio)
{
    memset(audio, 0, sizeof *audio);
    audio->status = CATALOG_AUDIO_NONE;
    audio->integrated_lufs = audio->true_peak_dbtp = audio->lra_lu = audio->gain_db = NAN;
}

const char *catalog_audio_status_name(catalog_audio_status_t status)
{
    return (unsigned)status < 4 ? s_audio_status_names[status] : "none";
}

static bool s_same_str(catalog_str_t a, catalog_str_t b)
{
    if (!a.ptr || !b.ptr)
        return !a.ptr && !b.ptr;
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static bool s_same_number(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0 || (isnan(a) && isnan(b));
}

bool catalog_audio_equal(const catalog_audio_t *a, const catalog_audio_t *b)
{
    return a->status == b->status && s_same_str(a->version, b->version) &&
           s_same_str(a->failure_reason, b->failure_reason) &&
           s_same_number(a->integrated_lufs, b->integrated_lufs) &&
           s_same_number(a->true_peak_dbtp, b->true_peak_dbtp) &&
           s_same_number(a->lra_lu, b->lra_lu) && s_same_number(a->gain_db, b->gain_db) &&
           a->lossless == b->lossless;
}

bool catalog_number_read(const msgpack_object *o, double *out)
{
    int64_t i;
    *out = NAN;
    if (o == NULL || o->type == MSGPACK_OBJECT_NIL)
        return true;
    if (o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32)
        *out = o->via.f64;
    else if (mb_obj_int(o, &i))
        *out = (double)i;
    else
        return false;
    return isfinite(*out);
}

void catalog_number_pack(msgpack_packer *pk, double value)
{
    if (isnan(value))
        msgpack_pack_nil(pk);
    else
        msgpack_pack_double(pk, value);
}

static void s_pack_str(msgpack_packer *pk, catalog_str_t s);

void catalog_audio_pack(msgpack_packer *pk, const catalog_audio_t *audio)
{
    bool ready = audio->status == CATALOG_AUDIO_READY;
    msgpack_pack_map(pk, 6);
    mb_pack_cstr(pk, "status");
    mb_pack_cstr(pk, catalog_audio_status_name(audio->status));
    mb_pack_cstr(pk, "version");
    s_pack_str(pk, ready ? audio->version : (catalog_str_t){NULL, 0});
    mb_pack_cstr(pk, "failure_reason");
    s_pack_str(pk, audio->status == CATALOG_AUDIO_FAILED ? audio->failure_reason
                                                         : (catalog_str_t){NULL, 0});
    mb_pack_cstr(pk, "loudness");
    if (ready) {
        msgpack_pack_map(pk, 3);
        mb_pack_cstr(pk, "integrated_lufs");
        catalog_number_pack(pk, audio->integrated_lufs);
        mb_pack_cstr(pk, "true_peak_dbtp");
        catalog_number_pack(pk, audio->true_peak_dbtp);
        mb_pack_cstr(pk, "lra_lu");
        catalog_number_pack(pk, audio->lra_lu);
    } else
        msgpack_pack_nil(pk);
    mb_pack_cstr(pk, "gain_db");
    catalog_number_pack(pk, ready ? audio->gain_db : NAN);
    mb_pack_cstr(pk, "lossless");
    if (ready && audio->lossless)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

/*  Reads a stored "audio" object (as catalog_audio_pack() writes it). */
static bool s_get_audio(const msgpack_object *o, catalog_audio_t *audio)
{
    catalog_audio_init(audio);
    if (o->type != MSGPACK_OBJECT_MAP)
        return false;
    const msgpack_object *status = mb_map_get(o, "status");
    size_t i = 0;
    while (i < 4 && !mb_obj_str_eq(status, s_audio_status_names[i]))
        i++;
    if (i == 4)
        return false;
    audio->status = (catalog_audio_status_t)i;
    const msgpack_object *loudness = mb_map_get(o, "loudness");
    const msgpack_object *v = mb_map_get(o, "version");
    const msgpack_object *reason = mb_map_get(o, "failure_reason");
    bool ok = (!v || s_get_str(v, &audio->version)) &&
              (!reason || s_get_str(reason, &audio->failure_reason)) &&
              catalog_number_read(mb_map_get(o, "gain_db"), &audio->gain_db);
    if (ok && loudness && loudness->type == MSGPACK_OBJECT_MAP)
        ok =
            catalog_number_read(mb_map_get(loudness, "integrated_lufs"), &audio->integrated_lufs) &&
            catalog_number_read(mb_map_get(loudness, "true_peak_dbtp"), &audio->true_peak_dbtp) &&
            catalog_number_read(mb_map_get(loudness, "lra_lu"), &audio->lra_lu);
    const msgpack_object *lossless = mb_map_get(o, "lossless");
    if (ok && lossless)
        ok = mb_obj_bool(lossless, &audio->lossless);
    /* A ready track names its version: the stream op signs it. */
    return ok && (audio->status != CATALOG_AUDIO_READY || audio->version.ptr);
}

/*  Stored records are maps; unknown keys in them are skipped so a newer
    actor can add fields that older records lack. */
static bool s_is_map(const msgpack_object *o)
{
    return o != NULL && o->type == MSGPACK_OBJECT_MAP;
}

bool catalog_artist_decode(const msgpack_object *o, catalog_artist_t *a)
{
    catalog_artist_init(a);
    bool ok = true;
    if (!s_is_map(o))
        return false;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
        if (mb_obj_str_eq(k, "id"))
            ok = mb_obj_str(v, &a->id.ptr, &a->id.len);
        else if (mb_obj_str_eq(k, "name"))
            ok = mb_obj_str(v, &a->name.ptr, &a->name.len);
        else if (mb_obj_str_eq(k, "genres"))
            ok = s_get_list(v, a->genres, CATALOG_GENRES_MAX, &a->n_genres);
        else if (mb_obj_str_eq(k, "created_at"))
            ok = s_get_time(v, a->created_at);
        else if (mb_obj_str_eq(k, "updated_at"))
            ok = s_get_time(v, a->updated_at);
        if (!ok)
            return false;
    }
    return a->id.ptr && a->name.ptr;
}

bool catalog_album_decode(const msgpack_object *o, catalog_album_t *al)
{
    catalog_album_init(al);
    bool ok = true;
    if (!s_is_map(o))
        return false;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
        if (mb_obj_str_eq(k, "id"))
            ok = mb_obj_str(v, &al->id.ptr, &al->id.len);
        else if (mb_obj_str_eq(k, "title"))
            ok = mb_obj_str(v, &al->title.ptr, &al->title.len);
        else if (mb_obj_str_eq(k, "artist_ids"))
            ok = s_get_list(v, al->artist_ids, CATALOG_ARTIST_IDS_MAX, &al->n_artist_ids);
        else if (mb_obj_str_eq(k, "release_date"))
            ok = s_get_str(v, &al->release_date) && al->release_date.len <= CATALOG_DATE_MAX;
        else if (mb_obj_str_eq(k, "label"))
            ok = s_get_str(v, &al->label);
        else if (mb_obj_str_eq(k, "upc"))
            ok = s_get_str(v, &al->upc);
        else if (mb_obj_str_eq(k, "genres"))
            ok = s_get_list(v, al->genres, CATALOG_GENRES_MAX, &al->n_genres);
        else if (mb_obj_str_eq(k, "created_at"))
            ok = s_get_time(v, al->created_at);
        else if (mb_obj_str_eq(k, "updated_at"))
            ok = s_get_time(v, al->updated_at);
        if (!ok)
            return false;
    }
    return al->id.ptr && al->title.ptr;
}

bool catalog_track_decode(const msgpack_object *o, catalog_track_t *t)
{
    catalog_track_init(t);
    bool ok = true;
    if (!s_is_map(o))
        return false;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
        catalog_str_t isrc;
        if (mb_obj_str_eq(k, "id"))
            ok = mb_obj_str(v, &t->id.ptr, &t->id.len);
        else if (mb_obj_str_eq(k, "title"))
            ok = mb_obj_str(v, &t->title.ptr, &t->title.len);
        else if (mb_obj_str_eq(k, "artist_ids"))
            ok = s_get_list(v, t->artist_ids, CATALOG_ARTIST_IDS_MAX, &t->n_artist_ids);
        else if (mb_obj_str_eq(k, "album_id"))
            ok = mb_obj_str(v, &t->album_id.ptr, &t->album_id.len);
        else if (mb_obj_str_eq(k, "disc_number"))
            ok = mb_obj_int(v, &t->disc_number);
        else if (mb_obj_str_eq(k, "track_number"))
            ok = mb_obj_int(v, &t->track_number);
        else if (mb_obj_str_eq(k, "duration_ms"))
            ok = mb_obj_int(v, &t->duration_ms);
        else if (mb_obj_str_eq(k, "isrc")) {
            ok = s_get_str(v, &isrc) && isrc.len <= CATALOG_ISRC_LEN;
            if (ok && isrc.ptr) {
                memcpy(t->isrc, isrc.ptr, isrc.len);
                t->isrc[isrc.len] = '\0';
            }
        } else if (mb_obj_str_eq(k, "explicit"))
            ok = mb_obj_bool(v, &t->explicit_);
        else if (mb_obj_str_eq(k, "audio"))
            ok = s_get_audio(v, &t->audio);
        else if (mb_obj_str_eq(k, "created_at"))
            ok = s_get_time(v, t->created_at);
        else if (mb_obj_str_eq(k, "updated_at"))
            ok = s_get_time(v, t->updated_at);
        if (!ok)
            return false;
    }
    return t->id.ptr && t->title.ptr && t->album_id.ptr;
}

static void s_pack_str(msgpack_packer *pk, catalog_str_t s)
{
    if (s.ptr)
        mb_pack_strn(pk, s.ptr, s.len);
    else
        msgpack_pack_nil(pk);
}

static void s_pack_list(msgpack_packer *pk, const catalog_str_t *items, size_t n)
{
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++)
        s_pack_str(pk, items[i]);
}

void catalog_artist_pack(msgpack_packer *pk, const catalog_artist_t *a)
{
    msgpack_pack_map(pk, 5);
    mb_pack_cstr(pk, "id");
    s_pack_str(pk, a->id);
    mb_pack_cstr(pk, "name");
    s_pack_str(pk, a->name);
    mb_pack_cstr(pk, "genres");
    s_pack_list(pk, a->genres, a->n_genres);
    mb_pack_cstr(pk, "created_at");
    mb_pack_cstr(pk, a->created_at);
    mb_pack_cstr(pk, "updated_at");
    mb_pack_cstr(pk, a->updated_at);
}

void catalog_album_pack(msgpack_packer *pk, const catalog_album_t *al)
{
    msgpack_pack_map(pk, 9);
    mb_pack_cstr(pk, "id");
    s_pack_str(pk, al->id);
    mb_pack_cstr(pk, "title");
    s_pack_str(pk, al->title);
    mb_pack_cstr(pk, "artist_ids");
    s_pack_list(pk, al->artist_ids, al->n_artist_ids);
    mb_pack_cstr(pk, "release_date");
    s_pack_str(pk, al->release_date);
    mb_pack_cstr(pk, "label");
    s_pack_str(pk, al->label);
    mb_pack_cstr(pk, "upc");
    s_pack_str(pk, al->upc);
    mb_pack_cstr(pk, "genres");
    s_pack_list(pk, al->genres, al->n_genres);
    mb_pack_cstr(pk, "created_at");
    mb_pack_cstr(pk, al->created_at);
    mb_pack_cstr(pk, "updated_at");
    mb_pack_cstr(pk, al->updated_at);
}

void catalog_track_pack(msgpack_packer *pk, const catalog_track_t *t)
{
    msgpack_pack_map(pk, 12);
    mb_pack_cstr(pk, "id");
    s_pack_str(pk, t->id);
    mb_pack_cstr(pk, "title");
    s_pack_str(pk, t->title);
    mb_pack_cstr(pk, "artist_ids");
    s_pack_list(pk, t->artist_ids, t->n_artist_ids);
    mb_pack_cstr(pk, "album_id");
    s_pack_str(pk, t->album_id);
    mb_pack_cstr(pk, "disc_number");
    msgpack_pack_int64(pk, t->disc_number);
    mb_pack_cstr(pk, "track_number");
    msgpack_pack_int64(pk, t->track_number);
    mb_pack_cstr(pk, "duration_ms");
    msgpack_pack_int64(pk, t->duration_ms);
    mb_pack_cstr(pk, "isrc");
    if (t->isrc[0])
        mb_pack_cstr(pk, t->isrc);
    else
        msgpack_pack_nil(pk);
    mb_pack_cstr(pk, "explicit");
    if (t->explicit_)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    mb_pack_cstr(pk, "audio");
    catalog_audio_pack(pk, &t->audio);
    mb_pack_cstr(pk, "created_at");
    mb_pack_cstr(pk, t->created_at);
    mb_pack_cstr(pk, "updated_at");
    mb_pack_cstr(pk, t->updated_at);
}
