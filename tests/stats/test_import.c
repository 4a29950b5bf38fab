/*  musicbus-import-listens' pipeline (stats_import.h) against a fake
    catalog and a fake bus: ListenBrainz inputs of every shape, malformed
    and unmatched records, batching and the match cache, and re-running
    an import, whose events are then fed to the stats consumer to show
    nothing counts twice. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mb_actor.h"
#include "mb_error.h"
#include "mb_msgpack.h"
#include "stats.h"
#include "actor_harness.h"
#include "stats_import.h"
#include "stats_store.h"
#include "stats_time.h"

/* ---- a fake catalog and a fake bus ------------------------------------------------ */

typedef struct {
    const char *id, *isrc, *artist, *title;
    int duration_ms;
} s_track_t;

static const s_track_t s_catalog[] = {
    {"trk-rick", "GBARL8700051", "Rick Astley", "Never Gonna Give You Up", 213000},
    {"trk-abba", "SEAYD7601020", "ABBA", "Dancing Queen", 231000},
    {"trk-short", NULL, "Short Band", "Jingle", 20000},
    {"trk-bjork", NULL, "Björk", "Jóga", 305000},
};

typedef struct {
    size_t calls, queries, max_batch;
    size_t publish_calls, max_publish;
    json_t *events;   /* [{key, data}] as published */
    int fail_publish; /* publish answers this error code when set */
} s_fake_t;

static s_fake_t s_fake;

static int s_fake_match(void *ctx, const stats_match_query_t *q, size_t n, stats_match_t *out,
                        char *why, size_t why_cap)
{
    (void)ctx, (void)why, (void)why_cap;
    s_fake.calls++;
    s_fake.queries += n;
    if (n > s_fake.max_batch)
        s_fake.max_batch = n;
    for (size_t i = 0; i < n; i++) {
        cr_assert_not_null(q[i].artist);
        cr_assert_not_null(q[i].title);
        out[i] = (stats_match_t){.status = STATS_MATCH_NONE, .duration_ms = -1};
        if (strstr(q[i].title, "REFUSE")) {
            out[i].status = STATS_MATCH_REFUSED;
            snprintf(out[i].id, sizeof out[i].id, "title is not allowed");
            continue;
        }
        for (size_t t = 0; t < sizeof s_catalog / sizeof *s_catalog; t++) {
            const s_track_t *tr = &s_catalog[t];
            bool by_isrc = q[i].isrc && tr->isrc && strcmp(q[i].isrc, tr->isrc) == 0;
            bool by_name =
                strcasecmp(q[i].artist, tr->artist) == 0 && strcasecmp(q[i].title, tr->title) == 0;
            if (by_isrc || by_name) {
                out[i].status = STATS_MATCH_FOUND;
                snprintf(out[i].id, sizeof out[i].id, "%s", tr->id);
                out[i].duration_ms = tr->duration_ms;
                break;
            }
        }
    }
    return 0;
}

static int s_fake_publish(void *ctx, const mb_event_out_t *ev, size_t n, char *why, size_t why_cap)
{
    (void)ctx;
    s_fake.publish_calls++;
    if (n > s_fake.max_publish)
        s_fake.max_publish = n;
    if (s_fake.fail_publish) {
        snprintf(why, why_cap, "the fake bus is down");
        return s_fake.fail_publish;
    }
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(ev[i].topic, "play");
        msgpack_unpacked msg;
        msgpack_unpacked_init(&msg);
        size_t used = 0;
        cr_assert_eq(msgpack_unpack_next(&msg, ev[i].data, ev[i].data_len, &used),
                     MSGPACK_UNPACK_SUCCESS);
        cr_assert_eq(used, ev[i].data_len, "data is exactly one object");
        json_t *e = json_object();
        json_object_set_new(e, "key", json_string(ev[i].key));
        json_object_set_new(e, "data", th_to_json(&msg.data));
        json_array_append_new(s_fake.events, e);
        msgpack_unpacked_destroy(&msg);
    }
    return 0;
}

static const stats_import_io_t s_io = {.match = s_fake_match, .publish = s_fake_publish};

static char *s_report_buf;
static size_t s_report_len;
static FILE *s_report;

static void s_setup(void)
{
    memset(&s_fake, 0, sizeof s_fake);
    s_fake.events = json_array();
    s_report = open_memstream(&s_report_buf, &s_report_len);
}

static void s_teardown(void)
{
    json_decref(s_fake.events);
    if (s_report)
        fclose(s_report);
    free(s_report_buf);
    s_report_buf = NULL;
}

TestSuite(import, .init = s_setup, .fini = s_teardown);

static stats_import_t *s_new(size_t batch)
{
    stats_import_opts_t opts = {.user = "u1", .batch = batch, .report = s_report};
    stats_import_t *imp = stats_import_new(&opts, &s_io);
    cr_assert_not_null(imp);
    return imp;
}

/*  Imports `text` as one input; returns what stats_import_file gave. */
static int s_import_text(stats_import_t *imp, const char *text)
{
    FILE *in = fmemopen((void *)text, strlen(text), "r");
    cr_assert_not_null(in);
    int rc = stats_import_file(imp, in, "input.json");
    fclose(in);
    return rc;
}

/*  The report's lines as a JSON array. */
static json_t *s_report_lines(void)
{
    fflush(s_report);
    json_t *lines = json_array();
    char *text = strndup(s_report_buf ? s_report_buf : "", s_report_len);
    for (char *save, *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        json_array_append_new(lines, th_json("%s", line));
    free(text);
    return lines;
}

static const char *s_str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    cr_assert_not_null(s, "no string %s", key);
    return s;
}

static long long s_int(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    cr_assert(json_is_integer(v), "no integer %s", key);
    return json_integer_value(v);
}

/* ---- the usage example ------------------------------------------------------------ */

Test(import, an_import_document_becomes_play_events)
{
    stats_import_t *imp = s_new(0);
    const char *doc =
        "{\"listen_type\":\"import\",\"payload\":["
        " {\"listened_at\":1700000000,\"track_metadata\":{\"artist_name\":\"Someone Else\","
        "  \"track_name\":\"Wrong Name\",\"additional_info\":{\"isrc\":\"gb-arl-87-00051\"}}},"
        " {\"listened_at\":1700000300,\"track_metadata\":{\"artist_name\":\"  abba \","
        "  \"track_name\":\"dancing queen\",\"release_name\":\"Arrival\"}},"
        " {\"listened_at\":1700000600,\"track_metadata\":{\"artist_name\":\"Nobody\","
        "  \"track_name\":\"Unknown Song\",\"release_name\":\"Nowhere\"}}"
        "]}";
    cr_assert_eq(s_import_text(imp, doc), 0);
    cr_assert_eq(stats_import_finish(imp), 0);
    const stats_import_counts_t *c = stats_import_counts(imp);
    cr_assert_eq(c->documents, 1);
    cr_assert_eq(c->read, 3);
    cr_assert_eq(c->matched, 2);
    cr_assert_eq(c->unmatched, 1);
    cr_assert_eq(c->rejected, 0);
    cr_assert_eq(c->published, 2);
    cr_assert_eq(s_fake.calls, 1, "one catalog call for the batch");

    cr_assert_eq(json_array_size(s_fake.events), 2);
    json_t *e = json_array_get(s_fake.events, 0);
    cr_assert_str_eq(s_str(e, "key"), "i:u1:1700000000:trk-rick", "matched by ISRC");
    json_t *d = json_object_get(e, "data");
    cr_assert_str_eq(s_str(d, "user"), "u1");
    cr_assert_str_eq(s_str(d, "track"), "trk-rick");
    cr_assert_eq(s_int(d, "started_at"), 1700000000000LL);
    cr_assert_eq(s_int(d, "ms_played"), 213000, "a listen counts as the whole track");
    cr_assert_str_eq(s_str(d, "source"), "import");
    cr_assert_str_eq(s_str(json_object_get(d, "context"), "type"), "other");
    e = json_array_get(s_fake.events, 1);
    cr_assert_str_eq(s_str(e, "key"), "i:u1:1700000300:trk-abba", "matched by artist and title");

    json_t *lines = s_report_lines();
    cr_assert_eq(json_array_size(lines), 1);
    json_t *l = json_array_get(lines, 0);
    cr_assert_str_eq(s_str(l, "status"), "unmatched");
    cr_assert(strstr(s_str(l, "reason"), "no catalog track"));
    cr_assert_str_eq(s_str(l, "artist"), "Nobody");
    cr_assert_str_eq(s_str(l, "title"), "Unknown Song");
    cr_assert_str_eq(s_str(l, "release"), "Nowhere");
    cr_assert_eq(s_int(l, "listened_at"), 1700000600);
    cr_assert_eq(s_int(l, "record"), 3);
    json_decref(lines);
    stats_import_destroy(&imp);
    stats_import_destroy(&imp);
}

/* ---- input shapes and bad records ---------------------------------------------------- */

Test(import, json_lines_with_malformed_records_are_rejected_with_reasons_and_the_rest_imported)
{
    stats_import_t *imp = s_new(0);
    const char *text =
        "{\"listened_at\":1700000000,\"track_metadata\":{\"artist_name\":\"ABBA\",\"track_name\":"
        "\"Dancing Queen\"}}\n"
        "{\"listened_at\":1700000100,\"track_metadata\":{\"artist_name\":\"ABBA\",\n" /* cut */
        "{\"listened_at\":1700000200,\"track_metadata\":{\"artist_name\":\"ABBA\",\"track_name\":"
        "\"Dancing Queen\"}}\n"
        "this is not json at all\n"
        "{\"track_metadata\":{\"artist_name\":\"ABBA\",\"track_name\":\"Dancing Queen\"}}\n"
        "{\"listened_at\":\"yesterday\",\"track_metadata\":{\"artist_name\":\"A\",\"track_name\":"
        "\"B\"}}\n"
        "{\"listened_at\":1700000400,\"track_metadata\":{\"artist_name\":\"   \",\"track_name\":"
        "\"B\"}}\n"
        "{\"listened_at\":1700000500,\"track_metadata\":{\"artist_name\":\"A\"}}\n"
        "{\"listened_at\":1700000600}\n"
        "{\"listened_at\":99,\"track_metadata\":{\"artist_name\":\"A\",\"track_name\":\"B\"}}\n"
        "{\"listen_type\":\"playing_now\",\"payload\":[{\"track_metadata\":{\"artist_name\":"
        "\"A\",\"track_name\":\"B\"}}]}\n"
        "{\"listen_type\":\"import\",\"payload\":[42,{\"listened_at\":1700000700,"
        "\"track_metadata\":{\"artist_name\":\"Rick Astley\",\"track_name\":\"Never Gonna Give "
        "You Up\"}}]}\n"
        "\"a lonely string\"\n"
        "{\"listened_at\":\"2023-11-14T22:20:00Z\",\"track_metadata\":{\"artist_name\":"
        "\"Björk\",\"track_name\":\"Jóga\",\"additional_info\":{\"duration_ms\":1000}}}\n"
        "{\"listened_at\":1700000900,\"track_metadata\":{\"artist_name\":\"X\",\"track_name\":"
        "\"REFUSE me\"}}\n";
    cr_assert_eq(s_import_text(imp, text), 0, "bad records never stop the run");
    cr_assert_eq(stats_import_finish(imp), 0);
    const stats_import_counts_t *c = stats_import_counts(imp);
    cr_assert_eq(c->matched, 4, "the lines after each bad one are read");
    cr_assert_eq(c->unmatched, 1, "the refused query");
    cr_assert_eq(c->rejected, 11);
    cr_assert_eq(c->read, c->matched + c->unmatched + c->rejected);
    cr_assert_eq(json_array_size(s_fake.events), 4);
    cr_assert_str_eq(s_str(json_array_get(s_fake.events, 3), "key"), "i:u1:1700000400:trk-bjork",
                     "RFC 3339 listened_at, UTF-8 names");

    json_t *lines = s_report_lines();
    cr_assert_eq(json_array_size(lines), 12);
    static const char *const reasons[] = {
        "not JSON",    "not JSON",          "missing",        "listened_at must",
        "artist_name", "track_name",        "track_metadata", "before 2000",
        "playing_now", "must be an object", "not JSON",       "refused",
    };
    for (size_t i = 0; i < json_array_size(lines); i++) {
        json_t *l = json_array_get(lines, i);
        cr_assert(strstr(s_str(l, "reason"), reasons[i]), "line %zu: reason '%s', expected %s", i,
                  s_str(l, "reason"), reasons[i]);
        cr_assert_str_eq(s_str(l, "status"), i == 11 ? "unmatched" : "rejected");
        cr_assert_str_eq(s_str(l, "source"), "input.json");
    }
    cr_assert_eq(s_int(json_array_get(lines, 0), "line"), 2, "the cut line is named");
    cr_assert_eq(s_int(json_array_get(lines, 1), "line"), 4);
    json_decref(lines);
    /* By reason, for the summary. */
    bool found = false;
    for (size_t i = 0; i < c->n_reasons; i++)
        if (strcmp(c->reasons[i].reason, "not JSON") == 0)
            found = c->reasons[i].count == 3;
    cr_assert(found);
    stats_import_destroy(&imp);
}

Test(import, pretty_printed_documents_arrays_and_lines_mix_in_one_input)
{
    stats_import_t *imp = s_new(0);
    const char *text =
        "{\n  \"listen_type\": \"import\",\n  \"payload\": [\n    {\n      \"listened_at\": "
        "1700000000,\n      \"track_metadata\": {\n        \"artist_name\": \"ABBA\",\n        "
        "\"track_name\": \"Dancing Queen\"\n      }\n    }\n  ]\n}\n"
        "{\"listen_type\":\"single\",\"payload\":[{\"listened_at\":1700000001,"
        "\"track_metadata\":{\"artist_name\":\"ABBA\",\"track_name\":\"Dancing Queen\"}}]}"
        "[{\"listened_at\":1700000002,\"track_metadata\":{\"artist_name\":\"ABBA\","
        "\"track_name\":\"Dancing Queen\"}},{\"listened_at\":1700000003,\"track_metadata\":"
        "{\"artist_name\":\"ABBA\",\"track_name\":\"Dancing Queen\"}}]\r\n\r\n"
        "   {\"listened_at\":1700000004,\"track_metadata\":{\"artist_name\":\"ABBA\","
        "\"track_name\":\"Dancing Queen\"}}";
    cr_assert_eq(s_import_text(imp, text), 0);
    cr_assert_eq(stats_import_finish(imp), 0);
    const stats_import_counts_t *c = stats_import_counts(imp);
    cr_assert_eq(c->documents, 4);
    cr_assert_eq(c->matched, 5);
    cr_assert_eq(c->rejected, 0);
    cr_assert_eq(s_fake.queries, 1, "five listens of one song: one query");
    stats_import_destroy(&imp);
}

Test(import, a_document_over_the_size_limit_stops_the_import_with_a_reason)
{
    stats_import_opts_t opts = {.user = "u1", .report = s_report, .max_document = 4096};
    stats_import_t *imp = stats_import_new(&opts, &s_io);
    /* A listen document of ~10 kB: over the 4 kB limit. */
    char *text = malloc(20000);
    int n = snprintf(text, 20000,
                     "{\"listened_at\":1700000000,\"track_metadata\":{\"artist_name\":"
                     "\"ABBA\",\"track_name\":\"Dancing Queen\",\"additional_info\":"
                     "{\"tags\":\"");
    memset(text + n, 'x', 10000);
    snprintf(text + n + 10000, 100, "\"}}}\n");
    int rc = s_import_text(imp, text);
    cr_assert_eq(rc, MB_ETOOBIG);
    cr_assert(strstr(stats_import_error(imp), "larger than 4096 bytes"), "%s",
              stats_import_error(imp));
    free(text);
    stats_import_destroy(&imp);
}

Test(import, many_lines_across_the_read_buffer_with_multibyte_characters_all_parse)
{
    /* ~3 MiB of JSON lines: several refills of the 1 MiB buffer, so
       documents and UTF-8 characters are cut at its end. */
    size_t cap = 4u << 20, len = 0;
    char *text = malloc(cap);
    size_t lines = 0;
    while (len + 400 < cap - 400) {
        len += (size_t)snprintf(text + len, cap - len,
                                "{\"listened_at\":%zu,\"track_metadata\":{\"artist_name\":"
                                "\"Björk\",\"track_name\":\"Jóga\",\"release_name\":\"Hömögenic "
                                "ééééééééééééééééééééééééééééééééééééééééééééééééééé %zu\"}}\n",
                                (size_t)1700000000 + lines, lines);
        lines++;
    }
    stats_import_t *imp = s_new(0);
    FILE *in = fmemopen(text, len, "r");
    cr_assert_eq(stats_import_file(imp, in, "big.jsonl"), 0);
    fclose(in);
    cr_assert_eq(stats_import_finish(imp), 0);
    const stats_import_counts_t *c = stats_import_counts(imp);
    cr_assert_eq(c->read, lines);
    cr_assert_eq(c->matched, lines, "%llu of %zu", (unsigned long long)c->matched, lines);
    cr_assert_eq(c->rejected, 0);
    cr_assert_eq(c->bytes, len);
    cr_assert_eq(s_fake.queries, 1);
    cr_assert_leq(s_fake.max_publish, 1000);
    free(text);
    stats_import_destroy(&imp);
}

/* ---- batching ----------------------------------------------------------------------------- */

Test(import, listens_are_matched_and_published_in_batches_with_a_bounded_cache)
{
    stats_import_opts_t opts = {.user = "u1", .report = s_report, .batch = 100, .cache_max = 4};
    stats_import_t *imp = stats_import_new(&opts, &s_io);
    size_t cap = 1u << 20, len = 0;
    char *text = malloc(cap);
    static const char *const songs[][2] = {{"ABBA", "Dancing Queen"},
                                           {"Rick Astley", "Never Gonna Give You Up"},
                                           {"Short Band", "Jingle"},
                                           {"Björk", "Jóga"},
                                           {"Nobody", "Nothing"}};
    for (int i = 0; i < 250; i++)
        len += (size_t)snprintf(text + len, cap - len,
                                "{\"listened_at\":%d,\"track_metadata\":{\"artist_name\":\"%s\","
                                "\"track_name\":\"%s\"}}\n",
                                1700000000 + i, songs[i % 5][0], songs[i % 5][1]);
    FILE *in = fmemopen(text, len, "r");
    cr_assert_eq(stats_import_file(imp, in, "-"), 0);
    fclose(in);
    cr_assert_eq(stats_import_finish(imp), 0);
    const stats_import_counts_t *c = stats_import_counts(imp);
    cr_assert_eq(c->matched, 200);
    cr_assert_eq(c->unmatched, 50);
    cr_assert_eq(c->published, 200);
    cr_assert_eq(s_fake.calls, 3, "250 listens in batches of 100");
    cr_assert_leq(s_fake.max_batch, 100);
    cr_assert_leq(s_fake.max_publish, 100);
    cr_assert_eq(s_fake.publish_calls, 2, "200 events, 100 per publish");
    /* Five distinct songs, a cache of four: some are asked again, but
       within a batch each is asked once. */
    cr_assert_leq(s_fake.queries, 15);
    cr_assert_geq(s_fake.queries, 5);
    free(text);
    stats_import_destroy(&imp);
}

Test(import, a_publish_failure_stops_the_import_with_the_reason)
{
    s_fake.fail_publish = MB_EIO;
    stats_import_t *imp = s_new(1);
    int rc = s_import_text(imp, "{\"listened_at\":1700000000,\"track_metadata\":{\"artist_name\":"
                                "\"ABBA\",\"track_name\":\"Dancing Queen\"}}\n");
    cr_assert_eq(rc, MB_EIO);
    cr_assert(strstr(stats_import_error(imp), "fake bus is down"));
    cr_assert_eq(stats_import_counts(imp)->published, 0);
    stats_import_destroy(&imp);
}

Test(import, options_are_checked)
{
    stats_import_opts_t opts = {.user = "a:b"};
    cr_assert_null(stats_import_new(&opts, &s_io));
    opts.user = NULL;
    cr_assert_null(stats_import_new(&opts, &s_io));
    opts.user = "u1";
    opts.batch = 1001;
    cr_assert_null(stats_import_new(&opts, &s_io));
}

/* ---- re-running an import counts nothing twice ------------------------------------------ */

Test(import, running_an_import_twice_counts_each_listen_once)
{
    const char *text =
        "{\"listen_type\":\"import\",\"payload\":["
        "{\"listened_at\":1700000000,\"track_metadata\":{\"artist_name\":\"ABBA\","
        "\"track_name\":\"Dancing Queen\"}},"
        "{\"listened_at\":1700000300,\"track_metadata\":{\"artist_name\":\"ABBA\","
        "\"track_name\":\"Dancing Queen\"}},"
        "{\"listened_at\":1700000600,\"track_metadata\":{\"artist_name\":\"Short Band\","
        "\"track_name\":\"Jingle\"}}]}";
    for (int run = 0; run < 2; run++) {
        stats_import_t *imp = s_new(0);
        cr_assert_eq(s_import_text(imp, text), 0);
        cr_assert_eq(stats_import_finish(imp), 0);
        stats_import_destroy(&imp);
    }
    cr_assert_eq(json_array_size(s_fake.events), 6, "the second run publishes again...");

    /* ...and the stats consumer, fed every event, counts three plays. */
    char dir[64];
    th_tmpdir(dir, "test_import");
    mb_actor_def_t def = *stats_actor_def();
    def.map_size = (size_t)64 << 20;
    MDB_env *env;
    void *state;
    cr_assert_eq(mb_actor_open_env(&def, dir, &env), 0);
    cr_assert_eq(def.open(env, &state), 0);
    size_t i;
    json_t *e;
    size_t applied = 0, dupes = 0;
    json_array_foreach(s_fake.events, i, e)
    {
        msgpack_sbuffer buf;
        msgpack_sbuffer_init(&buf);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
        th_pack_json(&pk, json_object_get(e, "data"));
        msgpack_unpacked msg;
        msgpack_unpacked_init(&msg);
        cr_assert_eq(msgpack_unpack_next(&msg, buf.data, buf.size, NULL), MSGPACK_UNPACK_SUCCESS);
        MDB_txn *txn;
        cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
        const char *key = s_str(e, "key"), *why = NULL;
        stats_outcome_t out;
        mb_event_t ev = {
            .topic = "play", .topic_len = 4, .key = key, .key_len = strlen(key), .data = &msg.data};
        cr_assert_eq(stats_store_apply(state, txn, &ev, &out, &why), 0, "%s", why);
        cr_assert_eq(mdb_txn_commit(txn), 0);
        applied += out == STATS_APPLIED;
        dupes += out == STATS_DUPLICATE;
        msgpack_unpacked_destroy(&msg);
        msgpack_sbuffer_destroy(&buf);
    }
    cr_assert_eq(applied, 3);
    cr_assert_eq(dupes, 3);
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    stats_totals_t t;
    cr_assert_eq(stats_store_totals_get(state, txn, (stats_str_t){"trk-abba", 8}, &t), 0);
    cr_assert_eq(t.plays, 2);
    cr_assert_eq(t.streams, 2);
    cr_assert_eq(stats_store_totals_get(state, txn, (stats_str_t){"trk-short", 9}, &t), 0);
    cr_assert_eq(t.plays, 1);
    cr_assert_eq(t.streams, 0, "a 20-second track is never a stream");
    mdb_txn_abort(txn);
    def.close(state);
    mdb_env_close(env);
    th_rmdir(dir);
}
