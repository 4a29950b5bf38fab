/*  stats_import — the ListenBrainz import pipeline (stats_import.h). */
#include "stats_import.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mb_alloc.h"
#include "mb_error.h"
#include "mb_signal.h"
#include "stats_play.h"
#include "stats_tally.h"
#include "stats_time.h"

#define S_CACHE_DEFAULT 50000
#define S_PROGRESS_DEFAULT_MS 1000
#define S_RELEASE_KEPT 1000 /* bytes of a release name kept for the report */
#define S_ERROR_MAX 512

/*  A listen waiting for its catalog match. Strings are owned copies. */
typedef struct {
    uint64_t record; /* its number in the run, from 1 */
    size_t line;
    char *source;
    int64_t listened_at;
    char *artist, *title, *release;
    char isrc[STATS_ISRC_LEN + 1];
    int64_t ms_played, duration_ms;
    char *key; /* the cache key: isrc US artist US title (US = 0x1f) */
    size_t key_len;
    stats_match_t match;
} s_pending_t;

struct stats_import {
    stats_import_opts_t opts;
    stats_import_io_t io;
    char user[STATS_ID_MAX + 1];
    stats_cache_t *cache;
    stats_import_counts_t counts;
    s_pending_t *pending; /* opts.batch of them */
    size_t n_pending;
    /* Events waiting to be published: keys and data live in two buffers
       and are pointed at just before publishing (the buffers move). */
    mb_event_out_t *events;
    size_t *key_at, *data_at;
    size_t n_events;
    msgpack_sbuffer keys, data;
    stats_match_query_t *queries;
    stats_match_t *results;
    int64_t started_ms, last_progress_ms;
    uint64_t inputs;
    char error[S_ERROR_MAX];
};

static int64_t s_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

stats_import_t *stats_import_new(const stats_import_opts_t *opts, const stats_import_io_t *io)
{
    size_t batch = opts->batch ? opts->batch : STATS_IMPORT_BATCH_MAX;
    if (!opts->user || !stats_id_valid(opts->user, strlen(opts->user)) ||
        batch > STATS_IMPORT_BATCH_MAX || !io->match || !io->publish)
        return NULL;
    stats_import_t *self = mb_calloc(1, sizeof *self);
    self->opts = *opts;
    self->opts.batch = batch;
    if (!self->opts.cache_max)
        self->opts.cache_max = S_CACHE_DEFAULT;
    if (self->opts.progress_ms <= 0)
        self->opts.progress_ms = S_PROGRESS_DEFAULT_MS;
    self->io = *io;
    snprintf(self->user, sizeof self->user, "%s", opts->user);
    self->opts.user = self->user;
    self->cache = stats_cache_new(self->opts.cache_max);
    self->pending = mb_calloc(batch, sizeof *self->pending);
    self->events = mb_calloc(batch, sizeof *self->events);
    self->key_at = mb_calloc(batch, sizeof *self->key_at);
    self->data_at = mb_calloc(batch, sizeof *self->data_at);
    self->queries = mb_calloc(batch, sizeof *self->queries);
    self->results = mb_calloc(batch, sizeof *self->results);
    msgpack_sbuffer_init(&self->keys);
    msgpack_sbuffer_init(&self->data);
    self->started_ms = self->last_progress_ms = s_mono_ms();
    return self;
}

static void s_pending_free(s_pending_t *p)
{
    free(p->source);
    free(p->artist);
    free(p->title);
    free(p->release);
    free(p->key);
    memset(p, 0, sizeof *p);
}

void stats_import_destroy(stats_import_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    stats_import_t *self = *self_p;
    for (size_t i = 0; i < self->n_pending; i++)
        s_pending_free(&self->pending[i]);
    stats_cache_destroy(&self->cache);
    free(self->pending);
    free(self->events);
    free(self->key_at);
    free(self->data_at);
    free(self->queries);
    free(self->results);
    msgpack_sbuffer_destroy(&self->keys);
    msgpack_sbuffer_destroy(&self->data);
    free(self);
    *self_p = NULL;
}

const stats_import_counts_t *stats_import_counts(stats_import_t *self)
{
    return &self->counts;
}

const char *stats_import_error(stats_import_t *self)
{
    return self->error;
}

/* ---- reporting ------------------------------------------------------------------ */

static void s_count_reason(stats_import_t *self, const char *reason)
{
    stats_import_counts_t *c = &self->counts;
    for (size_t i = 0; i < c->n_reasons; i++)
        if (strcmp(c->reasons[i].reason, reason) == 0) {
            c->reasons[i].count++;
            return;
        }
    if (c->n_reasons < STATS_IMPORT_REASONS) {
        c->reasons[c->n_reasons].reason = reason;
        c->reasons[c->n_reasons++].count = 1;
    } else {
        c->reasons[STATS_IMPORT_REASONS - 1].reason = "other reasons";
        c->reasons[STATS_IMPORT_REASONS - 1].count++;
    }
}

static void s_set(json_t *o, const char *key, const char *s, size_t len)
{
    json_t *v = s ? json_stringn(s, len) : NULL;
    if (v)
        json_object_set_new(o, key, v);
}

/*  The longest prefix of s (len bytes) of at most `max` bytes that ends
    on a UTF-8 character boundary. */
static size_t s_cut(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
        max--;
    return max;
}

/*  One report line: what happened to a record and why. `l` may be NULL
    (a record that could not be read). */
static void s_report(stats_import_t *self, const char *status, const char *reason,
                     const char *source, size_t line, uint64_t record, int64_t listened_at,
                     const char *artist, const char *title, const char *release, const char *isrc)
{
    if (!self->opts.report)
        return;
    json_t *o = json_object();
    json_object_set_new(o, "status", json_string(status));
    json_object_set_new(o, "reason", json_string(reason));
    json_object_set_new(o, "source", json_string(source));
    json_object_set_new(o, "line", json_integer((json_int_t)line));
    if (record)
        json_object_set_new(o, "record", json_integer((json_int_t)record));
    if (listened_at)
        json_object_set_new(o, "listened_at", json_integer(listened_at));
    s_set(o, "artist", artist, artist ? strlen(artist) : 0);
    s_set(o, "title", title, title ? strlen(title) : 0);
    s_set(o, "release", release, release ? strlen(release) : 0);
    if (isrc && isrc[0])
        s_set(o, "isrc", isrc, strlen(isrc));
    json_dumpf(o, self->opts.report, JSON_COMPACT | JSON_ENSURE_ASCII);
    fputc('\n', self->opts.report);
    json_decref(o);
}

/*  A record that is not a well-formed listen: counted by reason and
    reported, never sent anywhere. */
static void s_reject(stats_import_t *self, const char *reason, const char *source, size_t line,
                     const json_t *record)
{
    self->counts.rejected++;
    s_count_reason(self, reason);
    if (!self->opts.report)
        return;
    /* Name what can be named of it, so it can be found and fixed. */
    const json_t *meta = json_object_get(record, "track_metadata");
    const json_t *at = json_object_get(record, "listened_at");
    s_report(self, "rejected", reason, source, line, self->counts.read,
             json_is_integer(at) ? json_integer_value(at) : 0,
             json_string_value(json_object_get(meta, "artist_name")),
             json_string_value(json_object_get(meta, "track_name")),
             json_string_value(json_object_get(meta, "release_name")), NULL);
}

static void s_unmatched(stats_import_t *self, const s_pending_t *p, const char *reason)
{
    self->counts.unmatched++;
    s_report(self, "unmatched", reason, p->source, p->line, p->record, p->listened_at, p->artist,
             p->title, p->release, p->isrc);
}

void stats_import_progress(stats_import_t *self)
{
    FILE *f = self->opts.progress;
    if (!f)
        return;
    const stats_import_counts_t *c = &self->counts;
    double s = (double)(s_mono_ms() - self->started_ms) / 1000.0;
    bool tty = isatty(fileno(f));
    fprintf(f,
            "%simport: %llu read, %llu matched, %llu unmatched, %llu rejected, %llu published, "
            "%.0f/s, %.1f MiB%s",
            tty ? "\r\033[K" : "", (unsigned long long)c->read, (unsigned long long)c->matched,
            (unsigned long long)c->unmatched, (unsigned long long)c->rejected,
            (unsigned long long)c->published, s > 0 ? (double)c->read / s : 0.0,
            (double)c->bytes / (1 << 20), tty ? "" : "\n");
    fflush(f);
}

static void s_tick(stats_import_t *self)
{
    if (!self->opts.progress || (self->counts.read & 63) != 0)
        return; /* the clock is read every 64 records */
    int64_t now = s_mono_ms();
    if (now - self->last_progress_ms >= self->opts.progress_ms) {
        self->last_progress_ms = now;
        stats_import_progress(self);
    }
}

/* ---- publishing ------------------------------------------------------------------- */

static int s_publish(stats_import_t *self)
{
    if (self->n_events == 0)
        return 0;
    for (size_t i = 0; i < self->n_events; i++) {
        self->events[i].key = self->keys.data + self->key_at[i];
        self->events[i].data = self->data.data + self->data_at[i];
    }
    int rc = 0;
    if (!self->opts.dry_run) {
        rc = self->io.publish(self->io.ctx, self->events, self->n_events, self->error,
                              sizeof self->error);
        if (rc == 0)
            self->counts.published += self->n_events;
    }
    self->n_events = 0;
    self->keys.size = self->data.size = 0;
    return rc;
}

/*  Queues the play event of a matched listen. */
static int s_emit(stats_import_t *self, const s_pending_t *p)
{
    stats_play_t play = {
        .user = {self->user, strlen(self->user)},
        .track = {p->match.id, strlen(p->match.id)},
        .started_at = p->listened_at * 1000,
        .context = STATS_CONTEXT_OTHER,
        .source = STATS_SOURCE_IMPORT,
    };
    /* ListenBrainz records a listen once it was played for half the track
       or 4 minutes, and says not how long: a listen without ms_played
       counts as the whole track (catalog duration), the figure the listen
       stands for. */
    play.ms_played = p->ms_played >= 0           ? p->ms_played
                     : p->match.duration_ms >= 0 ? p->match.duration_ms
                     : p->duration_ms >= 0       ? p->duration_ms
                                                 : 0;
    char key[STATS_KEY_MAX + 1];
    size_t key_len = stats_play_import_key(play.user, p->listened_at, play.track, key);
    size_t i = self->n_events++;
    self->key_at[i] = self->keys.size;
    msgpack_sbuffer_write(&self->keys, key, key_len + 1);
    self->data_at[i] = self->data.size;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &self->data, msgpack_sbuffer_write);
    stats_play_pack(&pk, &play);
    self->events[i] =
        (mb_event_out_t){.topic = STATS_TOPIC_PLAY, .data_len = self->data.size - self->data_at[i]};
    self->counts.matched++;
    return self->n_events == self->opts.batch ? s_publish(self) : 0;
}

/* ---- matching ----------------------------------------------------------------------- */

/*  Looks the queued listens up (cache first, then one catalog call for the
    distinct rest), then emits or reports each, in input order. */
static int s_match_pending(stats_import_t *self)
{
    if (self->n_pending == 0)
        return 0;
    stats_tally_t *asked = stats_tally_new(); /* key -> query index + 1 */
    size_t nq = 0;
    for (size_t i = 0; i < self->n_pending; i++) {
        s_pending_t *p = &self->pending[i];
        if (stats_cache_get(self->cache, p->key, p->key_len, &p->match)) {
            self->counts.cache_hits++;
            continue;
        }
        p->match.status = STATS_MATCH_REFUSED; /* until answered */
        if (stats_tally_get(asked, p->key, p->key_len))
            continue;
        stats_tally_add(asked, p->key, p->key_len, nq + 1);
        self->queries[nq++] = (stats_match_query_t){
            .isrc = p->isrc[0] ? p->isrc : NULL, .artist = p->artist, .title = p->title};
    }
    int rc = 0;
    if (nq > 0) {
        memset(self->results, 0, nq * sizeof *self->results);
        rc = self->io.match(self->io.ctx, self->queries, nq, self->results, self->error,
                            sizeof self->error);
        self->counts.queries += nq;
    }
    for (size_t i = 0; rc == 0 && i < self->n_pending; i++) {
        s_pending_t *p = &self->pending[i];
        uint64_t q = stats_tally_get(asked, p->key, p->key_len);
        if (q) {
            p->match = self->results[q - 1];
            if (p->match.status != STATS_MATCH_REFUSED)
                stats_cache_put(self->cache, p->key, p->key_len, &p->match);
        }
        if (p->match.status == STATS_MATCH_FOUND)
            rc = s_emit(self, p);
        else if (p->match.status == STATS_MATCH_NONE)
            s_unmatched(self, p, "no catalog track with this ISRC, or with this artist and title");
        else {
            char reason[STATS_ID_MAX + 64];
            snprintf(reason, sizeof reason, "the catalog refused the query: %s", p->match.id);
            s_unmatched(self, p, reason);
        }
    }
    stats_tally_destroy(&asked);
    for (size_t i = 0; i < self->n_pending; i++)
        s_pending_free(&self->pending[i]);
    self->n_pending = 0;
    return rc;
}

static char *s_dup(const char *s, size_t len)
{
    return mb_strndup(s ? s : "", s ? len : 0);
}

/*  Queues one well-formed listen. */
static int s_queue(stats_import_t *self, const stats_listen_t *l, const char *source, size_t line)
{
    s_pending_t *p = &self->pending[self->n_pending++];
    p->record = self->counts.read;
    p->line = line;
    p->source = mb_strdup(source);
    p->listened_at = l->listened_at;
    p->artist = s_dup(l->artist, l->artist_len);
    p->title = s_dup(l->title, l->title_len);
    p->release =
        l->release ? s_dup(l->release, s_cut(l->release, l->release_len, S_RELEASE_KEPT)) : NULL;
    memcpy(p->isrc, l->isrc, sizeof p->isrc);
    p->ms_played = l->ms_played;
    p->duration_ms = l->duration_ms;
    p->key_len = strlen(p->isrc) + 1 + l->artist_len + 1 + l->title_len;
    p->key = mb_malloc(p->key_len + 1);
    snprintf(p->key, p->key_len + 1, "%s\x1f%s\x1f%s", p->isrc, p->artist, p->title);
    return self->n_pending == self->opts.batch ? s_match_pending(self) : 0;
}

static int s_listen(stats_import_t *self, const json_t *record, const char *source, size_t line,
                    int64_t now_s)
{
    self->counts.read++;
    s_tick(self);
    stats_listen_t l;
    const char *why = stats_listen_parse(record, now_s, &l);
    if (why) {
        s_reject(self, why, source, line, record);
        return 0;
    }
    if (l.too_long) {
        /* Longer than any catalog name: it cannot match, and asking would
           make the catalog refuse the whole batch. */
        s_pending_t p = {.record = self->counts.read,
                         .line = line,
                         .listened_at = l.listened_at,
                         .source = (char *)source};
        p.artist = s_dup(l.artist, l.artist_len);
        p.title = s_dup(l.title, l.title_len);
        memcpy(p.isrc, l.isrc, sizeof p.isrc);
        s_unmatched(self, &p, "artist or title longer than any catalog name (200 characters)");
        free(p.artist);
        free(p.title);
        return 0;
    }
    return s_queue(self, &l, source, line);
}

static int s_document(stats_import_t *self, json_t *doc, const char *source, size_t line)
{
    self->counts.documents++;
    int64_t now_s = stats_now_ms() / 1000;
    json_t *listens, *single;
    const char *why = stats_listen_doc(doc, &listens, &single);
    if (why) {
        size_t n = json_is_array(listens) ? json_array_size(listens) : 1;
        for (size_t i = 0; i < n; i++) {
            self->counts.read++;
            s_reject(self, why, source, line, listens ? json_array_get(listens, i) : doc);
        }
        return 0;
    }
    if (single)
        return s_listen(self, single, source, line, now_s);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < json_array_size(listens); i++)
        rc = s_listen(self, json_array_get(listens, i), source, line, now_s);
    return rc;
}

int stats_import_file(stats_import_t *self, FILE *in, const char *name)
{
    stats_reader_t *reader = stats_reader_new(in, self->opts.max_document);
    self->inputs++;
    int rc;
    for (;;) {
        if (mb_signal_stop_requested()) {
            snprintf(self->error, sizeof self->error, "interrupted");
            rc = MB_EINTR;
            break;
        }
        json_t *doc;
        size_t line = 0;
        char why[256];
        uint64_t before = stats_reader_bytes(reader);
        rc = stats_reader_next(reader, &doc, &line, why, sizeof why);
        self->counts.bytes += stats_reader_bytes(reader) - before;
        if (rc == 1) {
            rc = s_document(self, doc, name, line);
            json_decref(doc);
            if (rc)
                break;
        } else if (rc == MB_EINVAL) {
            self->counts.read++;
            self->counts.rejected++;
            s_count_reason(self, "not JSON");
            s_report(self, "rejected", why, name, line, 0, 0, NULL, NULL, NULL, NULL);
        } else {
            if (rc == MB_ETOOBIG)
                snprintf(self->error, sizeof self->error,
                         "%s: a document from line %zu on is larger than %zu bytes; split it "
                         "(ListenBrainz caps an import document at 1000 listens)",
                         name, line,
                         self->opts.max_document ? self->opts.max_document
                                                 : (size_t)STATS_LISTEN_DOC_MAX);
            else if (rc == MB_EIO)
                snprintf(self->error, sizeof self->error, "%s: reading failed", name);
            break;
        }
    }
    stats_reader_destroy(&reader);
    return rc;
}

int stats_import_finish(stats_import_t *self)
{
    int rc = s_match_pending(self);
    if (rc == 0)
        rc = s_publish(self);
    return rc;
}

void stats_import_summary(stats_import_t *self, FILE *human, FILE *json)
{
    const stats_import_counts_t *c = &self->counts;
    double s = (double)(s_mono_ms() - self->started_ms) / 1000.0;
    if (human) {
        fprintf(human,
                "import %s in %.1f s: %llu records read from %llu input%s (%.1f MiB, %llu "
                "documents)\n"
                "  matched   %llu (%llu from the cache, %llu catalog queries)\n"
                "  unmatched %llu (each one in the report, with the reason)\n"
                "  rejected  %llu\n",
                self->opts.dry_run ? "dry run finished" : "finished", s,
                (unsigned long long)c->read, (unsigned long long)self->inputs,
                self->inputs == 1 ? "" : "s", (double)c->bytes / (1 << 20),
                (unsigned long long)c->documents, (unsigned long long)c->matched,
                (unsigned long long)c->cache_hits, (unsigned long long)c->queries,
                (unsigned long long)c->unmatched, (unsigned long long)c->rejected);
        for (size_t i = 0; i < c->n_reasons; i++)
            fprintf(human, "    %8llu  %s\n", (unsigned long long)c->reasons[i].count,
                    c->reasons[i].reason);
        fprintf(human, "  published %llu play events%s\n", (unsigned long long)c->published,
                self->opts.dry_run ? " (dry run: nothing sent)"
                                   : "; running the same import again counts nothing twice "
                                     "(the stats consumer counts each listen's key once)");
    }
    if (json) {
        json_t *reasons = json_object();
        for (size_t i = 0; i < c->n_reasons; i++)
            json_object_set_new(reasons, c->reasons[i].reason,
                                json_integer((json_int_t)c->reasons[i].count));
        json_t *o =
            json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:b,s:o}", "documents",
                      (json_int_t)c->documents, "read", (json_int_t)c->read, "matched",
                      (json_int_t)c->matched, "unmatched", (json_int_t)c->unmatched, "rejected",
                      (json_int_t)c->rejected, "published", (json_int_t)c->published, "queries",
                      (json_int_t)c->queries, "cache_hits", (json_int_t)c->cache_hits, "bytes",
                      (json_int_t)c->bytes, "seconds", s, "dry_run", self->opts.dry_run,
                      "rejected_by_reason", reasons);
        json_dumpf(o, json, JSON_COMPACT);
        fputc('\n', json);
        fflush(json);
        json_decref(o);
    }
}
