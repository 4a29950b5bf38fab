/*  musicbus-import-listens — imports ListenBrainz listens as play events.

        musicbus-import-listens --user USER_ID [--bus ENDPOINT] [--unmatched FILE]
                                [--batch N] [--cache N] [--max-document-mib N]
                                [--timeout-ms MS] [--retries N] [--dry-run] [--quiet]
                                [FILE...]            (none, or "-": standard input)

    Reads import documents, JSON lines of listens or arrays of listens
    (stats_listen.h) one document at a time; matches each listen to a
    catalog track (op track.match of service catalog, up to --batch
    queries per call, results cached); publishes the matched ones as
    "play" events (bus.publish, --batch events per call). Unmatched and
    rejected records are written to --unmatched (default: standard error),
    one JSON line each with the reason. A progress line goes to standard
    error every second, a summary at the end (human on standard error, one
    JSON line on standard output).

    Running it again publishes the same event keys; the stats consumer
    counts each key once, so nothing counts twice.

    Exit codes: 0 when every input was read (whatever was unmatched or
    rejected; also after SIGINT/SIGTERM, which stop between documents and
    say so), 1 for a fatal error (the catalog or the bus unreachable after
    the retries, a document over the size limit, an unreadable file), 2
    for bad flags. */
#include <errno.h>
#include <getopt.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "mb_alloc.h"
#include "mb_client.h"
#include "mb_config.h"
#include "mb_envelope.h"
#include "mb_error.h"
#include "mb_events.h"
#include "mb_log.h"
#include "mb_msgpack.h"
#include "mb_signal.h"
#include "mb_zmq.h"
#include "stats_import.h"

#define IMPORT_CATALOG "catalog"
#define IMPORT_MATCH_OP "track.match"
#define IMPORT_TIMEOUT_MS 30000 /* per call: a batch of 1000 matches takes a while */
#define IMPORT_RETRIES 8        /* tries of a call that timed out or met a busy service */
#define IMPORT_BACKOFF_MIN_MS 200
#define IMPORT_BACKOFF_MAX_MS 5000

typedef struct {
    mb_client_t *client;
    mb_events_t *events;
    int timeout_ms;
    int retries;
    uint64_t rid;
} s_io_t;

static void s_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*  Sends one request to the catalog and waits for the reply with its rid,
    dropping stale replies to earlier requests that timed out. Returns 0
    with *rep decoded (release it), MB_ETIMEDOUT, MB_EINTR or a send error. */
static int s_rpc(s_io_t *io, const msgpack_sbuffer *req, uint64_t rid, mb_reply_t *rep)
{
    int64_t deadline = s_now_ms() + io->timeout_ms;
    zmq_msg_t msg;
    int rc = mb_client_call(io->client, IMPORT_CATALOG, req->data, req->size, io->timeout_ms, &msg);
    while (rc == 0) {
        const char *why;
        int drc = mb_reply_decode(rep, zmq_msg_data(&msg), zmq_msg_size(&msg), &why);
        zmq_msg_close(&msg);
        if (drc == 0 && rep->rid == rid)
            return 0;
        if (drc == 0)
            mb_reply_release(rep);
        /* Not ours: wait for the rest of the deadline. */
        int left = (int)(deadline - s_now_ms());
        if (left <= 0)
            return MB_ETIMEDOUT;
        zmq_pollitem_t item = {.socket = mb_client_socket(io->client), .events = ZMQ_POLLIN};
        for (;;) {
            rc = mb_client_recv(io->client, &msg);
            if (rc != MB_EAGAIN && rc != MB_EPROTO)
                break;
            left = (int)(deadline - s_now_ms());
            if (left <= 0)
                return MB_ETIMEDOUT;
            if (rc == MB_EAGAIN && zmq_poll(&item, 1, left) < 0)
                return errno == EINTR ? MB_EINTR : MB_EIO;
        }
    }
    return rc;
}

static void s_pack_query(msgpack_packer *pk, const stats_match_query_t *q)
{
    msgpack_pack_map(pk, q->isrc ? 3 : 2);
    if (q->isrc) {
        mb_pack_cstr(pk, "isrc");
        mb_pack_cstr(pk, q->isrc);
    }
    mb_pack_cstr(pk, "artist");
    mb_pack_cstr(pk, q->artist);
    mb_pack_cstr(pk, "title");
    mb_pack_cstr(pk, q->title);
}

/*  Reads one entry of the reply's matches. */
static void s_read_match(const msgpack_object *o, stats_match_t *m)
{
    memset(m, 0, sizeof *m);
    m->duration_ms = -1;
    const char *id;
    size_t len;
    if (!o || o->type == MSGPACK_OBJECT_NIL) {
        m->status = STATS_MATCH_NONE;
        return;
    }
    if (!mb_obj_str(mb_map_get(o, "id"), &id, &len) || !stats_id_valid(id, len)) {
        m->status = STATS_MATCH_REFUSED;
        snprintf(m->id, sizeof m->id, "malformed match in the reply");
        return;
    }
    m->status = STATS_MATCH_FOUND;
    memcpy(m->id, id, len);
    m->id[len] = '\0';
    int64_t d;
    if (mb_obj_int(mb_map_get(o, "duration_ms"), &d) && d >= 0 && d <= STATS_MS_PLAYED_MAX)
        m->duration_ms = d;
}

/*  The query index a 400's field names ("queries[12].title"), or -1. */
static long s_field_index(const char *field, size_t len, size_t n)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1),
             field ? field : "");
    const char *p = strstr(buf, "queries[");
    if (!p)
        return -1;
    char *end;
    long i = strtol(p + 8, &end, 10);
    return *end == ']' && i >= 0 && (size_t)i < n ? i : -1;
}

/*  stats_import_io_t.match over the bus: one track.match for the queries
    still open; a query the catalog refuses (400 naming it) is marked and
    the rest asked again; timeouts and 503s are retried with backoff. */
static int s_match(void *ctx, const stats_match_query_t *queries, size_t n, stats_match_t *out,
                   char *why, size_t why_cap)
{
    s_io_t *io = ctx;
    size_t *open = mb_malloc(n * sizeof *open), n_open = n;
    for (size_t i = 0; i < n; i++)
        open[i] = i;
    int tries = 0, backoff = IMPORT_BACKOFF_MIN_MS, rc = 0;
    while (n_open > 0) {
        msgpack_sbuffer req;
        msgpack_sbuffer_init(&req);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
        uint64_t rid = ++io->rid;
        mb_request_pack_head(&pk, IMPORT_MATCH_OP, rid, (uint32_t)io->timeout_ms, 1);
        mb_pack_cstr(&pk, "args");
        msgpack_pack_map(&pk, 1);
        mb_pack_cstr(&pk, "queries");
        msgpack_pack_array(&pk, n_open);
        for (size_t i = 0; i < n_open; i++)
            s_pack_query(&pk, &queries[open[i]]);
        mb_reply_t rep;
        rc = s_rpc(io, &req, rid, &rep);
        msgpack_sbuffer_destroy(&req);
        bool have_reply = rc == 0;
        bool retry = rc == MB_ETIMEDOUT || rc == MB_EAGAIN;
        if (rc == 0 && rep.status == 200) {
            const msgpack_object *m = mb_map_get(rep.body, "matches");
            if (m && m->type == MSGPACK_OBJECT_ARRAY && m->via.array.size == n_open) {
                for (size_t i = 0; i < n_open; i++)
                    s_read_match(&m->via.array.ptr[i], &out[open[i]]);
                n_open = 0;
            } else {
                snprintf(why, why_cap, "track.match answered without one match per query");
                rc = MB_EPROTO;
            }
        } else if (rc == 0 && rep.status == 400 &&
                   s_field_index(rep.field, rep.field_len, n_open) >= 0) {
            size_t i = (size_t)s_field_index(rep.field, rep.field_len, n_open);
            out[open[i]].status = STATS_MATCH_REFUSED;
            snprintf(out[open[i]].id, sizeof out[open[i]].id, "%.*s", (int)rep.message_len,
                     rep.message ? rep.message : "");
            memmove(&open[i], &open[i + 1], (n_open - i - 1) * sizeof *open);
            n_open--;
        } else if (rc == 0 && (rep.status == 503 || rep.status == 504))
            retry = true;
        else if (rc == 0) {
            snprintf(why, why_cap, "catalog %s answered %d %.*s: %.*s", IMPORT_MATCH_OP, rep.status,
                     (int)rep.code_len, rep.code ? rep.code : "", (int)rep.message_len,
                     rep.message ? rep.message : "");
            rc = MB_EPROTO;
        } else if (!retry)
            snprintf(why, why_cap, "calling the catalog failed: %s", mb_strerror(rc));
        if (have_reply)
            mb_reply_release(&rep);
        if (retry) {
            if (++tries > io->retries || mb_signal_stop_requested()) {
                snprintf(why, why_cap, "the catalog did not answer %s after %d tries",
                         IMPORT_MATCH_OP, tries);
                rc = mb_signal_stop_requested() ? MB_EINTR : MB_ETIMEDOUT;
                break;
            }
            mb_warn(0, "track.match: no answer (try %d of %d); retrying in %d ms", tries,
                    io->retries, backoff);
            s_sleep_ms(backoff);
            backoff = backoff * 2 < IMPORT_BACKOFF_MAX_MS ? backoff * 2 : IMPORT_BACKOFF_MAX_MS;
            rc = 0;
            continue;
        }
        if (rc)
            break;
        tries = 0;
    }
    free(open);
    return rc;
}

/*  stats_import_io_t.publish over the bus. A timed-out publish may have
    been written: publishing it again is harmless, as the consumer dedupes
    by key. */
static int s_publish(void *ctx, const mb_event_out_t *events, size_t n, char *why, size_t why_cap)
{
    s_io_t *io = ctx;
    int backoff = IMPORT_BACKOFF_MIN_MS;
    for (int tries = 1;; tries++) {
        int rc = mb_events_publish_batch(io->events, events, n, NULL);
        if (rc == 0)
            return 0;
        bool transient = rc == MB_ETIMEDOUT || rc == MB_EAGAIN || rc == MB_EIO || rc == MB_EFULL;
        if (!transient || tries > io->retries || mb_signal_stop_requested()) {
            snprintf(why, why_cap, "bus.publish failed after %d tr%s: %s (%s)", tries,
                     tries == 1 ? "y" : "ies", mb_strerror(rc), mb_events_error(io->events));
            return mb_signal_stop_requested() ? MB_EINTR : rc;
        }
        mb_warn(0, "bus.publish: %s (%s), try %d of %d; retrying in %d ms", mb_strerror(rc),
                mb_events_error(io->events), tries, io->retries, backoff);
        s_sleep_ms(backoff);
        backoff = backoff * 2 < IMPORT_BACKOFF_MAX_MS ? backoff * 2 : IMPORT_BACKOFF_MAX_MS;
    }
}

static void s_usage(FILE *f)
{
    fprintf(f, "usage: musicbus-import-listens --user USER_ID [--bus ENDPOINT] [--unmatched FILE]\n"
               "         [--batch N] [--cache N] [--max-document-mib N] [--timeout-ms MS]\n"
               "         [--retries N] [--dry-run] [--quiet] [FILE...]\n"
               "Imports ListenBrainz listens (import documents, JSON lines or arrays; FILE \"-\"\n"
               "or none: standard input) as play events of USER_ID.\n");
}

int main(int argc, char **argv)
{
    static const struct option options[] = {{"bus", required_argument, NULL, 'b'},
                                            {"user", required_argument, NULL, 'u'},
                                            {"unmatched", required_argument, NULL, 'm'},
                                            {"batch", required_argument, NULL, 'n'},
                                            {"cache", required_argument, NULL, 'c'},
                                            {"max-document-mib", required_argument, NULL, 'd'},
                                            {"timeout-ms", required_argument, NULL, 't'},
                                            {"retries", required_argument, NULL, 'r'},
                                            {"dry-run", no_argument, NULL, 'D'},
                                            {"quiet", no_argument, NULL, 'q'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    mb_log_init("import-listens");
    const char *bus = mb_config_env(MB_ENV_BUS, MB_DEFAULT_BUS), *unmatched = NULL;
    stats_import_opts_t opts = {.progress = stderr};
    s_io_t io = {.timeout_ms = IMPORT_TIMEOUT_MS, .retries = IMPORT_RETRIES};
    long v;
    int c;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 'b':
            bus = optarg;
            break;
        case 'u':
            opts.user = optarg;
            break;
        case 'm':
            unmatched = optarg;
            break;
        case 'n':
        case 'c':
        case 'd':
        case 't':
        case 'r':
            if (mb_config_parse_long(optarg, c == 'n' || c == 'd' || c == 't' ? 1 : 0,
                                     c == 'n'   ? STATS_IMPORT_BATCH_MAX
                                     : c == 'c' ? 100000000L
                                     : c == 'd' ? 1024
                                     : c == 't' ? 600000
                                                : 1000,
                                     &v) != 0) {
                fprintf(stderr, "musicbus-import-listens: bad value for --%s: %s\n",
                        c == 'n'   ? "batch"
                        : c == 'c' ? "cache"
                        : c == 'd' ? "max-document-mib"
                        : c == 't' ? "timeout-ms"
                                   : "retries",
                        optarg);
                return 2;
            }
            if (c == 'n')
                opts.batch = (size_t)v;
            else if (c == 'c')
                opts.cache_max = (size_t)v;
            else if (c == 'd')
                opts.max_document = (size_t)v << 20;
            else if (c == 't')
                io.timeout_ms = (int)v;
            else
                io.retries = (int)v;
            break;
        case 'D':
            opts.dry_run = true;
            break;
        case 'q':
            opts.progress = NULL;
            break;
        case 'h':
            s_usage(stdout);
            return 0;
        default:
            s_usage(stderr);
            return 2;
        }
    }
    if (!opts.user || !stats_id_valid(opts.user, strlen(opts.user))) {
        fprintf(stderr, "musicbus-import-listens: --user USER_ID is required (an id of 1 to 64 "
                        "bytes without ':')\n");
        s_usage(stderr);
        return 2;
    }
    opts.report = stderr;
    if (unmatched && !(opts.report = fopen(unmatched, "w"))) {
        fprintf(stderr, "musicbus-import-listens: cannot write %s: %s\n", unmatched,
                strerror(errno));
        return 1;
    }
    mb_signal_install();
    io.client = mb_client_new(bus);
    io.events = mb_events_new(bus);
    if (!io.client || !io.events) {
        fprintf(stderr, "musicbus-import-listens: bad bus endpoint %s\n", bus);
        return 2;
    }
    mb_events_set_timeout(io.events, io.timeout_ms);
    stats_import_io_t sio = {.match = s_match, .publish = s_publish, .ctx = &io};
    stats_import_t *imp = stats_import_new(&opts, &sio);
    int rc = 0;
    for (int i = optind; rc == 0 && i < (optind < argc ? argc : optind + 1); i++) {
        const char *name = i < argc ? argv[i] : "-";
        FILE *in = strcmp(name, "-") == 0 ? stdin : fopen(name, "r");
        if (!in) {
            fprintf(stderr, "musicbus-import-listens: cannot read %s: %s\n", name, strerror(errno));
            rc = MB_EIO;
            break;
        }
        rc = stats_import_file(imp, in, name);
        if (in != stdin)
            fclose(in);
    }
    if (rc == 0)
        rc = stats_import_finish(imp);
    stats_import_progress(imp);
    if (opts.progress && isatty(fileno(stderr)))
        fputc('\n', stderr);
    if (rc == MB_EINTR)
        fprintf(stderr, "musicbus-import-listens: interrupted; what was published stays, and "
                        "running the same import again counts nothing twice\n");
    else if (rc)
        fprintf(stderr, "musicbus-import-listens: %s\n",
                stats_import_error(imp)[0] ? stats_import_error(imp) : mb_strerror(rc));
    stats_import_summary(imp, stderr, stdout);
    stats_import_destroy(&imp);
    if (opts.report != stderr)
        fclose(opts.report);
    mb_client_destroy(&io.client);
    mb_events_destroy(&io.events);
    mb_zmq_shutdown();
    return rc == 0 || rc == MB_EINTR ? 0 : 1;
}
