/*  stats_listen — ListenBrainz documents and listens (stats_listen.h). */
#include "stats_listen.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mb_alloc.h"
#include "mb_error.h"
#include "stats_time.h"

#define S_BUF_INITIAL (1u << 20)   /* read buffer; grows only for a larger document */
#define S_REFILL_BELOW (64u << 10) /* read more before parsing when less is buffered */
#define S_UTF8_TAIL 4 /* an error this close to the buffer's end may be a cut character */

struct stats_reader {
    FILE *in;
    char *buf;
    size_t cap, off, len; /* unread bytes are buf[off, len) */
    size_t max_doc;
    size_t line; /* line of buf[off] */
    bool eof;
    uint64_t consumed;
    json_t *pending; /* a document read past a bad stretch, returned next */
    size_t pending_line;
};

stats_reader_t *stats_reader_new(FILE *in, size_t max_document)
{
    stats_reader_t *self = mb_calloc(1, sizeof *self);
    self->in = in;
    self->max_doc = max_document ? max_document : STATS_LISTEN_DOC_MAX;
    self->cap =
        S_BUF_INITIAL < self->max_doc + S_UTF8_TAIL ? S_BUF_INITIAL : self->max_doc + S_UTF8_TAIL;
    self->buf = mb_malloc(self->cap);
    self->line = 1;
    return self;
}

void stats_reader_destroy(stats_reader_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    json_decref((*self_p)->pending);
    free((*self_p)->buf);
    free(*self_p);
    *self_p = NULL;
}

uint64_t stats_reader_bytes(stats_reader_t *self)
{
    return self->consumed;
}

/*  Moves past `n` unread bytes, counting lines. */
static void s_advance(stats_reader_t *self, size_t n)
{
    if (n > self->len - self->off)
        n = self->len - self->off;
    for (const char *p = self->buf + self->off, *end = p + n;
         (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++)
        self->line++;
    self->off += n;
    self->consumed += n;
}

/*  Reads more input after the unread bytes, growing the buffer when it is
    full of them. Returns 0 (also at end of input: eof is set), MB_ETOOBIG
    when the unread bytes already reach the document limit, MB_EIO. */
static int s_refill(stats_reader_t *self)
{
    if (self->eof)
        return 0;
    size_t unread = self->len - self->off;
    if (self->off > 0) {
        memmove(self->buf, self->buf + self->off, unread);
        self->off = 0;
        self->len = unread;
    }
    if (self->len == self->cap) {
        if (self->cap >= self->max_doc + S_UTF8_TAIL)
            return MB_ETOOBIG;
        self->cap = self->cap * 2 < self->max_doc + S_UTF8_TAIL ? self->cap * 2
                                                                : self->max_doc + S_UTF8_TAIL;
        self->buf = mb_realloc(self->buf, self->cap);
    }
    size_t n = fread(self->buf + self->len, 1, self->cap - self->len, self->in);
    self->len += n;
    if (n == 0) {
        if (ferror(self->in))
            return MB_EIO;
        self->eof = true;
    }
    return 0;
}

/*  Skips whitespace; false at end of input. */
static int s_skip_space(stats_reader_t *self, bool *more)
{
    for (;;) {
        while (self->off < self->len) {
            char c = self->buf[self->off];
            if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
                *more = true;
                return 0;
            }
            s_advance(self, 1);
        }
        if (self->eof) {
            *more = false;
            return 0;
        }
        int rc = s_refill(self);
        if (rc)
            return rc;
    }
}

/*  Skips to just past the next line break (or the end of input). */
static int s_skip_line(stats_reader_t *self)
{
    for (;;) {
        char *nl = memchr(self->buf + self->off, '\n', self->len - self->off);
        if (nl) {
            s_advance(self, (size_t)(nl - (self->buf + self->off)) + 1);
            return 0;
        }
        s_advance(self, self->len - self->off);
        if (self->eof)
            return 0;
        int rc = s_refill(self);
        if (rc)
            return rc;
    }
}

/*  Parses the document at the read position without moving past it.
    Returns 0 with *doc set, or with *doc NULL and *err describing a
    syntax error; MB_ETOOBIG or MB_EIO. */
static int s_parse(stats_reader_t *self, json_t **doc, json_error_t *err)
{
    for (;;) {
        size_t avail = self->len - self->off;
        *doc = json_loadb(self->buf + self->off, avail, JSON_DISABLE_EOF_CHECK, err);
        if (*doc)
            return 0;
        size_t pos = err->position > 0 ? (size_t)err->position : 0;
        /* Out of buffered input, or an error so near its end that it may be
           a character cut in two? Read more and parse again. */
        if (self->eof || (json_error_code(err) != json_error_premature_end_of_input &&
                          pos + S_UTF8_TAIL < avail))
            return 0;
        if (avail >= self->max_doc)
            return MB_ETOOBIG;
        int rc = s_refill(self);
        if (rc)
            return rc;
    }
}

int stats_reader_next(stats_reader_t *self, json_t **doc, size_t *line, char *why, size_t why_cap)
{
    *doc = NULL;
    if (self->pending) {
        *doc = self->pending;
        *line = self->pending_line;
        self->pending = NULL;
        return 1;
    }
    /* After a syntax error, try again from each following line until a
       document parses: one bad line of JSON lines costs that line, and a
       broken document loses what cannot be told apart from it. The whole
       stretch is reported once. */
    size_t bad_from = 0, bad_to = 0;
    for (;;) {
        bool more;
        int rc = s_skip_space(self, &more);
        if (rc == 0 && more && self->len - self->off < S_REFILL_BELOW)
            rc = s_refill(self);
        if (rc)
            return rc;
        json_t *j = NULL;
        json_error_t err;
        size_t start = self->line;
        if (more && (rc = s_parse(self, &j, &err)) != 0)
            return rc;
        if (j && (size_t)err.position > self->max_doc) {
            json_decref(j);
            return MB_ETOOBIG; /* it fit the read buffer, but not the limit */
        }
        if (j) {
            s_advance(self, (size_t)err.position);
            if (!bad_from) {
                *doc = j;
                *line = start;
                return 1;
            }
            self->pending = j;
            self->pending_line = start;
        }
        if (!j && more) {
            if (!bad_from) {
                bad_from = start;
                snprintf(why, why_cap, "not JSON (line %zu, column %d: %s)",
                         start + (err.line > 0 ? (size_t)err.line - 1 : 0), err.column, err.text);
            }
            bad_to = start;
            if ((rc = s_skip_line(self)) != 0)
                return rc;
            continue;
        }
        if (!bad_from)
            return 0; /* end of input */
        size_t n = strlen(why);
        if (bad_to > bad_from && n + 1 < why_cap)
            snprintf(why + n, why_cap - n, "; lines %zu to %zu skipped", bad_from, bad_to);
        *line = bad_from;
        return MB_EINVAL;
    }
}

/* ---- listens ------------------------------------------------------------------ */

static bool s_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*  Reads a non-blank string member, trimmed. */
static bool s_name(const json_t *o, const char *key, const char **s, size_t *len)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        return false;
    *s = json_string_value(v);
    *len = json_string_length(v);
    while (*len && s_space(**s))
        (*s)++, (*len)--;
    while (*len && s_space((*s)[*len - 1]))
        (*len)--;
    return *len > 0 && !memchr(*s, '\0', *len);
}

static size_t s_utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xc0) != 0x80;
    return n;
}

bool stats_isrc_normalise(const char *s, size_t len, char out[STATS_ISRC_LEN + 1])
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '-' || c == ' ')
            continue;
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        if (n == STATS_ISRC_LEN || !((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return false;
        out[n++] = c;
    }
    out[n] = '\0';
    if (n != STATS_ISRC_LEN)
        return false;
    for (size_t i = 0; i < 2; i++) /* country code: letters */
        if (out[i] < 'A' || out[i] > 'Z')
            return false;
    for (size_t i = 5; i < STATS_ISRC_LEN; i++) /* year and designation: digits */
        if (out[i] < '0' || out[i] > '9')
            return false;
    return true;
}

/*  An integer number of ms from additional_info, or -1. */
static int64_t s_ms(const json_t *info, const char *key, int64_t scale)
{
    const json_t *v = json_object_get(info, key);
    double d;
    if (json_is_integer(v))
        d = (double)json_integer_value(v);
    else if (json_is_real(v))
        d = json_real_value(v);
    else if (json_is_string(v)) {
        char *end;
        d = strtod(json_string_value(v), &end);
        if (end == json_string_value(v) || *end)
            return -1;
    } else
        return -1;
    d *= (double)scale;
    return d >= 0 && d <= 86400000.0 ? (int64_t)d : -1;
}

const char *stats_listen_parse(const json_t *o, int64_t now_s, stats_listen_t *l)
{
    memset(l, 0, sizeof *l);
    l->ms_played = l->duration_ms = -1;
    if (!json_is_object(o))
        return "a listen must be an object";
    const json_t *at = json_object_get(o, "listened_at");
    if (json_is_integer(at))
        l->listened_at = json_integer_value(at);
    else if (json_is_string(at)) {
        int64_t ms;
        if (!stats_time_parse(json_string_value(at), json_string_length(at), &ms))
            return "listened_at must be whole seconds since the epoch (or an RFC 3339 time)";
        l->listened_at = ms / 1000;
    } else if (!at)
        return "listened_at is missing (playing_now listens are not plays)";
    else
        return "listened_at must be whole seconds since the epoch (or an RFC 3339 time)";
    if (l->listened_at < 946684800 || l->listened_at > now_s + 86400)
        return "listened_at is before 2000 or in the future";
    const json_t *meta = json_object_get(o, "track_metadata");
    if (!json_is_object(meta))
        return "track_metadata must be an object";
    if (!s_name(meta, "artist_name", &l->artist, &l->artist_len))
        return "track_metadata.artist_name must be a non-blank string";
    if (!s_name(meta, "track_name", &l->title, &l->title_len))
        return "track_metadata.track_name must be a non-blank string";
    if (!s_name(meta, "release_name", &l->release, &l->release_len))
        l->release = NULL, l->release_len = 0;
    l->too_long = s_utf8_chars(l->artist, l->artist_len) > STATS_LISTEN_NAME_MAX ||
                  s_utf8_chars(l->title, l->title_len) > STATS_LISTEN_NAME_MAX;
    const json_t *info = json_object_get(meta, "additional_info");
    if (json_is_object(info)) {
        const json_t *isrc = json_object_get(info, "isrc");
        if (json_is_array(isrc)) /* MusicBrainz lists several; the first will do */
            isrc = json_array_get(isrc, 0);
        if (!json_is_string(isrc) ||
            !stats_isrc_normalise(json_string_value(isrc), json_string_length(isrc), l->isrc))
            l->isrc[0] = '\0';
        l->ms_played = s_ms(info, "ms_played", 1);
        l->duration_ms = s_ms(info, "duration_ms", 1);
        if (l->duration_ms < 0)
            l->duration_ms = s_ms(info, "duration", 1000);
    }
    return NULL;
}

const char *stats_listen_doc(json_t *doc, json_t **listens, json_t **single)
{
    *listens = *single = NULL;
    if (json_is_array(doc)) {
        *listens = doc;
        return NULL;
    }
    if (!json_is_object(doc))
        return "a document must be an import document, a listen or a list of listens";
    json_t *payload = json_object_get(doc, "payload");
    if (!payload) {
        *single = doc;
        return NULL;
    }
    if (!json_is_array(payload))
        return "payload must be a list of listens";
    *listens = payload;
    const json_t *type = json_object_get(doc, "listen_type");
    const char *t = json_string_value(type);
    if (type && (!t || (strcmp(t, "import") != 0 && strcmp(t, "single") != 0)))
        return t && strcmp(t, "playing_now") == 0
                   ? "listen_type playing_now: what is playing now is not a play yet"
                   : "listen_type must be import or single";
    return NULL;
}
