/*  musicbus-gateway — HTTP/JSON in front of the bus.

    One thread, one epoll loop: libmicrohttpd runs in external-epoll mode
    (its epoll fd sits in ours) next to the broker socket's ZMQ_FD. A
    request is matched against the route table from schemas/openapi.json,
    validated, packed to msgpack and sent to its service; its connection is
    suspended until the reply (or the deadline) comes, and many requests are
    in flight at once. The gateway holds no domain logic.

    Every route says who may call it (x-access): the bearer token is
    verified (auth.c) and its claims become the envelope's auth. Every
    request to the bus is counted against a rate budget (ratelimit.c) per
    user, or per client address when anonymous, or on the keys the
    route's x-rate-limit names.

    Two kinds of request never reach the bus whole: /media/ is answered
    by the gateway itself from the data folder (signed HLS grants and
    covers, media.c), and an x-upload route's body is streamed into the
    blob store as it arrives, the bus request carrying only its hash.

    Usage: musicbus-gateway [--http ADDR] [--bus ENDPOINT] [--timeout MS]
                            [--max-body BYTES] [--max-upload BYTES]
                            [--schema FILE] [--data DIR]
                            [--jwt-secret-file PATH] [--media-secret-file PATH]
                            [--rate NAME=SPEC]... [--rate-default SPEC]
                            [--rate-signin SPEC] [--rate-slots N]
                            [--trust-proxy] [--ready-file PATH] [--help] */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <msgpack.h>
#include <netdb.h>
#include <signal.h>
#include <sodium.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "buf.h"
#include "json_msgpack.h"
#include "mb_alloc.h"
#include "mb_blob.h"
#include "mb_client.h"
#include "mb_config.h"
#include "mb_envelope.h"
#include "mb_error.h"
#include "mb_jwt.h"
#include "mb_log.h"
#include "mb_media.h"
#include "mb_msgpack.h"
#include "mb_signal.h"
#include "mb_zmq.h"
#include "mdp.h"
#include "media.h"
#include "openapi_embed.h"
#include "pending.h"
#include "problem.h"
#include "ratelimit.h"
#include "request.h"
#include "routes.h"
#include "ws.h"

#define GW_ENV_MAX_BODY "MUSICBUS_MAX_BODY"
#define GW_DEFAULT_MAX_BODY (1L << 20) /* bytes of request body accepted */
#define GW_CONN_LIMIT 4096             /* HTTP connections at once (capped by RLIMIT_NOFILE) */
#define GW_CONN_TIMEOUT_S 60           /* idle keep-alive connections are closed after this */
/*  Memory libmicrohttpd gives each connection: request line and headers
    (so also their limit: a bigger head is refused by MHD itself, with an
    HTML 431), header table, response head. MHD zeroes all of it between
    two requests of a keep-alive connection, so its default of 32 KiB cost
    5-6% of the gateway's CPU; bodies stream through it in chunks of its
    free part. 20 KiB still takes a head of ~19 KB: paths of four 4000-byte
    ids (tests/integration's hostile input) get the gateway's own answer. */
#define GW_CONN_MEMORY (20 * 1024)
#define GW_PROBE_INTERVAL_MS 1000      /* an mmi.service probe to the broker this often */
#define GW_READY_WINDOW_MS 3000        /* ready while the broker answered within this */
#define GW_DRAIN_MS 2000               /* after SIGTERM, pending requests get this long */
#define GW_LINGER_MS 1000              /* then responses get this long to leave */
#define GW_MAX_WAIT_MS 1000            /* longest epoll wait, whatever the timers say */
#define GW_DISCARD_MAX (1L << 20)      /* body bytes dropped past max_body before closing */
#define GW_FREE_REQS_KEPT 1024         /* request structs kept for reuse */
#define GW_BUF_KEPT (256 * 1024)       /* buffers above this are freed, not reused */
#define GW_JSON "application/json"
#define GW_JWT_CACHE_SLOTS 1024             /* verified tokens remembered (~1.3 KiB each) */
#define GW_RATE_ENV_PREFIX "MUSICBUS_RATE_" /* + budget name in capitals */
#define GW_ENV_RATE_SLOTS "MUSICBUS_RATE_SLOTS"
#define GW_ENV_TRUST_PROXY "MUSICBUS_TRUST_PROXY"
#define GW_BUDGET_DEFAULT "default" /* routes without x-rate-limit */
#define GW_BUDGETS_GIVEN_MAX 16     /* --rate flags */
#define GW_ENV_MAX_UPLOAD "MUSICBUS_MAX_UPLOAD"
#define GW_DEFAULT_MAX_UPLOAD (2LL << 30) /* bytes of an x-upload body (2 GiB) */
#define GW_MAX_UPLOAD_MAX (1LL << 40)     /* the largest --max-upload accepted (1 TiB) */
#define GW_UPLOAD_SWEEP_S (24 * 3600)     /* unfinished uploads older than this are removed */
#define GW_MEDIA_IMMUTABLE_S 31536000     /* segments, init, covers: a year */
#define GW_MEDIA_PLAYLIST_S 60            /* playlists (README: why short) */
#define GW_MEDIA_METHODS "GET, HEAD, OPTIONS"

/*  Budgets the gateway knows without being told. Any other budget a route
    names must be configured (--rate NAME=SPEC or MUSICBUS_RATE_<NAME>). */
static const struct {
    const char *name;
    const char *spec;
} s_builtin_budgets[] = {
    {GW_BUDGET_DEFAULT, "50/s burst 200"}, /* per user, or per address when anonymous */
    {"signin", "10/min burst 5"},          /* sign-in: per address, per account */
};

typedef enum {
    S_READING, /* headers seen, body arriving */
    S_PENDING, /* sent to the bus, connection suspended */
    S_REPLIED, /* answer ready (from the headers, or a reply), response not queued yet */
    S_ANSWERED /* response queued */
} s_state_t;

/*  What fired, in epoll_event.data.u64; anything else is an s_conn_t *. */
enum { S_EV_MHD = 1, S_EV_BUS = 2, S_EV_WS = 3 };

typedef struct s_self s_self_t;
typedef struct s_req s_req_t;

/*  A request's envelope waiting in s_self_t.sbuf to be sent. */
typedef struct {
    s_req_t *req;
    size_t offset, size;
} s_outgoing_t;

/*  One HTTP connection. Its socket sits in our epoll for EPOLLRDHUP only,
    because MHD stops watching a connection while it is suspended: this is
    how a client that hangs up on a pending request is noticed at once. */
typedef struct {
    int fd;
    s_req_t *pending; /* its request while S_PENDING, else NULL */
} s_conn_t;

/*  One HTTP request, from its first header to its completion. */
struct s_req {
    gw_pending_node_t node; /* in self->pending while S_PENDING */
    s_self_t *self;
    struct MHD_Connection *conn;
    s_conn_t *sock; /* the connection's watch, NULL if it has none */
    struct s_req *next_free;
    s_state_t state;
    const gw_route_t *route; /* NULL once answered with a 404/405 */
    gw_match_t match;        /* segments point into MHD's url, valid for the request */
    const char *method;      /* MHD's, valid for the request */
    const char *url;
    uint64_t rid;
    int64_t start_us; /* for the log's duration */
    int64_t deadline_ms;
    bool too_big;      /* the body passed max_body while arriving */
    bool headers_done; /* the first call is over */
    uint64_t dropped;  /* body bytes dropped after too_big */
    bool hung_up;      /* the client left while the request was pending */
    gw_buf_t body;     /* the request body */
    gw_buf_t out;      /* the response body */
    int status;        /* the response's status */
    const char *content_type;
    const char *allow;      /* Allow header of a 405 */
    bool authed;            /* claims hold a verified token that the route needs */
    mb_jwt_claims_t claims; /* the token's, once verified */
    gw_rate_result_t rate;  /* the rate limiter's verdict (rate.limited: headers due) */
    char challenge[GW_AUTH_CHALLENGE_MAX]; /* WWW-Authenticate of a 401/403, or "" */
    struct MHD_Response *ready; /* a response built already (media), queued by s_respond */
    bool cors;                  /* /media/: readable by pages of any origin */
    char content_range[64];     /* Content-Range of a 416, or "" */
    char ctype[128];            /* a raw reply's Content-Type (content_type points here) */
    char disposition[384];      /* its Content-Disposition, or "" */
    mb_blob_writer_t *writer;   /* x-upload: the blob being written */
    bool blob_created;          /* x-upload: this request stored a blob new to the store */
    char blob_hex[MB_BLOB_HEX_LEN + 1];
    int upload_errno; /* x-upload: why writing failed, 0 if it did not */
};

struct s_self {
    /* settings */
    char *http_addr;
    char *bus;
    long timeout_ms;
    long max_body;
    char *schema_file;
    char *ready_file;
    char *jwt_secret_file;
    char *media_secret_file;
    char *data_dir;
    long long max_upload; /* bytes of an x-upload body, whatever the route allows */
    const char *given_name[GW_BUDGETS_GIVEN_MAX]; /* --rate NAME=SPEC flags (argv's) */
    const char *given_spec[GW_BUDGETS_GIVEN_MAX];
    size_t n_given;
    long rate_slots;
    bool trust_proxy; /* count clients by X-Forwarded-For (a proxy we trust in front) */
    /* state */
    gw_routes_t *routes;
    gw_auth_t *auth;
    gw_rate_t *rate;
    mb_media_key_t media_key; /* valid when has_media_key */
    bool has_media_key;
    gw_media_root_t *hls_root;   /* $data/blobs/hls */
    gw_media_root_t *blobs_root; /* $data/blobs: covers are blobs */
    mb_blob_store_t *blobs;      /* $data/blobs, for uploads; NULL when none can be taken */
    int budget_default;          /* the id of budget "default" in rate */
    char *probe_service;         /* the service named in mmi.service probes */
    mb_client_t *client;
    gw_ws_t *ws; /* GET /v1/me/events: WebSockets and their event feed */
    struct MHD_Daemon *daemon;
    int epoll_fd;
    int mhd_fd;
    int bus_fd;
    gw_pending_t *pending;
    /* Requests are packed while MHD runs and sent together after it: a
       burst wakes the bus socket's I/O thread once, where a send per
       request woke it about every time. */
    msgpack_sbuffer sbuf;   /* the envelopes of `outgoing`, back to back */
    s_outgoing_t *outgoing; /* packed, not yet sent */
    size_t n_outgoing, outgoing_cap;
    uint64_t next_rid;
    s_req_t *free_reqs;
    size_t n_free_reqs;
    size_t active; /* requests between their first header and completion */
    bool resumed;  /* a connection was resumed since MHD last ran */
    bool sent;     /* something was sent on the bus since it was last drained */
    int64_t next_probe_ms;
    int64_t last_answer_ms; /* last time the broker answered anything; 0: never */
    bool stopping;
    int64_t drain_until_ms;
    int64_t linger_until_ms;
};

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t s_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t s_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- requests ------------------------------------------------------------ */

static s_req_t *s_req_new(s_self_t *self, struct MHD_Connection *conn)
{
    s_req_t *req = self->free_reqs;
    if (req) {
        self->free_reqs = req->next_free;
        self->n_free_reqs--;
    } else {
        req = mb_calloc(1, sizeof *req);
    }
    gw_buf_t body = req->body, out = req->out;
    memset(req, 0, sizeof *req);
    req->body = body;
    req->out = out;
    gw_buf_reset(&req->body);
    gw_buf_reset(&req->out);
    req->self = self;
    req->conn = conn;
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    req->sock = info ? info->socket_context : NULL;
    req->state = S_READING;
    req->rid = ++self->next_rid;
    req->start_us = s_now_us();
    req->deadline_ms = req->start_us / 1000 + self->timeout_ms;
    self->active++;
    return req;
}

static void s_req_free(s_self_t *self, s_req_t *req)
{
    self->active--;
    if (req->ready) /* built but never queued: the client left */
        MHD_destroy_response(req->ready);
    req->ready = NULL;
    mb_blob_writer_destroy(&req->writer); /* an upload cut short: its temporary file goes */
    if (req->body.cap > GW_BUF_KEPT)
        gw_buf_free(&req->body);
    if (req->out.cap > GW_BUF_KEPT)
        gw_buf_free(&req->out);
    if (self->n_free_reqs >= GW_FREE_REQS_KEPT) {
        gw_buf_free(&req->body);
        gw_buf_free(&req->out);
        free(req);
        return;
    }
    req->next_free = self->free_reqs;
    self->free_reqs = req;
    self->n_free_reqs++;
}

/*  The deadline of the request's operation: its x-timeout-ms, else
    --timeout. */
static long s_timeout_ms(const s_req_t *req)
{
    return req->route && req->route->timeout_ms ? req->route->timeout_ms : req->self->timeout_ms;
}

/*  Sets the request's answer: a problem document. */
static void s_set_problem(s_req_t *req, int status, const char *type, size_t type_len,
                          const char *detail, size_t detail_len, const char *field,
                          size_t field_len)
{
    gw_buf_reset(&req->out);
    gw_problem_write(&req->out, status, type, type_len, detail, detail_len, field, field_len);
    req->status = status;
    req->content_type = GW_PROBLEM_CONTENT_TYPE;
}

static void s_set_problemf(s_req_t *req, int status, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void s_set_problemf(s_req_t *req, int status, const char *field, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    s_set_problem(req, status, NULL, 0, detail, (size_t)-1, field, (size_t)-1);
}

/*  Writes `v` as 16 lowercase hex digits and a NUL: the rid of every
    response, so without snprintf. */
static void s_hex16(char out[17], uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--, v >>= 4)
        out[i] = digits[v & 15];
    out[16] = '\0';
}

/*  Queues the request's answer on its connection. Must run inside the
    access handler. The body stays in req->out, which lives until the
    request completes, so MHD sends it without a copy. */
static enum MHD_Result s_respond(s_req_t *req)
{
    s_self_t *self = req->self;
    bool empty = req->status == 204 || req->status == 304;
    struct MHD_Response *resp = req->ready;
    req->ready = NULL;
    if (!resp)
        resp = MHD_create_response_from_buffer(
            empty ? 0 : req->out.len, empty ? (void *)"" : req->out.data, MHD_RESPMEM_PERSISTENT);
    else
        empty = true; /* it has its own Content-Type, or needs none */
    if (!resp)
        return MHD_NO;
    char rid[17];
    s_hex16(rid, req->rid);
    MHD_add_response_header(resp, "X-Request-Id", rid);
    if (!empty)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, req->content_type);
    if (req->disposition[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_DISPOSITION, req->disposition);
    if (req->content_range[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_RANGE, req->content_range);
    if (req->cors) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, "*");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_EXPOSE_HEADERS,
                                "Content-Range, Accept-Ranges, ETag, X-Request-Id");
    }
    if (req->allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, req->allow);
    if (req->challenge[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, req->challenge);
    if (req->rate.limited) {
        /* draft-ietf-httpapi-ratelimit-headers, the three-field form. */
        char n[GW_INT_CHARS];
        gw_fmt_i64(n, req->rate.limit);
        MHD_add_response_header(resp, "RateLimit-Limit", n);
        gw_fmt_i64(n, req->rate.remaining);
        MHD_add_response_header(resp, "RateLimit-Remaining", n);
        gw_fmt_i64(n, req->rate.reset_s);
        MHD_add_response_header(resp, "RateLimit-Reset", n);
        if (!req->rate.allowed) {
            gw_fmt_i64(n, req->rate.retry_after_s);
            MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, n);
        }
    }
    if (self->stopping)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result rc = MHD_queue_response(req->conn, (unsigned)req->status, resp);
    MHD_destroy_response(resp);
    req->state = S_ANSWERED;
    return rc;
}

/*  Sends the answer in req->out. Called from the first call of a request
    (headers only), the answer waits for the last call: MHD treats a
    response queued before the body as a reason to close the connection,
    which would cost keep-alive clients a reconnect for every 404. */
static enum MHD_Result s_answer(s_req_t *req)
{
    if (req->state == S_READING && !req->headers_done) {
        req->state = S_REPLIED;
        return MHD_YES;
    }
    return s_respond(req);
}

/*  Answers with a problem document. */
static enum MHD_Result s_fail(s_req_t *req, int status, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static enum MHD_Result s_fail(s_req_t *req, int status, const char *field, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    s_set_problem(req, status, NULL, 0, detail, (size_t)-1, field, (size_t)-1);
    return s_answer(req);
}

/*  Resumes a suspended request whose answer is now in req->out. */
static void s_wake(s_self_t *self, s_req_t *req)
{
    if (req->sock)
        req->sock->pending = NULL;
    req->state = S_REPLIED;
    MHD_resume_connection(req->conn);
    self->resumed = true;
}

/* ---- requests answered by the gateway itself ------------------------------- */

static bool s_ready(const s_self_t *self, int64_t now)
{
    return self->last_answer_ms && now - self->last_answer_ms <= GW_READY_WINDOW_MS;
}

static bool s_rate_default(s_req_t *req, bool by_user);

/*  GET /v1/me/events: the WebSocket handshake (ws.c), counted on the
    default budget like any request. */
static enum MHD_Result s_handle_events(s_req_t *req)
{
    gw_ws_handshake_t hs;
    gw_ws_handshake(req->self->ws, req->conn, (int64_t)time(NULL), &hs);
    req->claims = hs.claims;
    if (!s_rate_default(req, hs.authed)) {
        if (hs.response)
            MHD_destroy_response(hs.response);
        return s_answer(req);
    }
    if (!hs.response)
        return s_fail(req, 500, NULL, "cannot build the response");
    req->ready = hs.response;
    req->status = hs.status;
    return s_answer(req);
}

static enum MHD_Result s_handle_own(s_req_t *req)
{
    s_self_t *self = req->self;
    const char *op = req->route->op;
    if (!strcmp(op, GW_WS_OP))
        return s_handle_events(req);
    if (!strcmp(op, "readyz") && self->stopping)
        return s_fail(req, 503, NULL, "the gateway is shutting down");
    if (!strcmp(op, "healthz") || (!strcmp(op, "readyz") && s_ready(self, s_now_ms()))) {
        gw_buf_reset(&req->out);
        gw_buf_puts(&req->out, "{\"status\":\"ok\"}");
        req->status = 200;
        req->content_type = GW_JSON;
        req->state = S_REPLIED; /* sent by the last call, as s_fail() explains */
        return MHD_YES;
    }
    if (!strcmp(op, "readyz")) {
        if (!self->last_answer_ms)
            return s_fail(req, 503, NULL, "the bus broker has not answered yet");
        return s_fail(req, 503, NULL, "the bus broker has not answered for %" PRId64 " ms",
                      s_now_ms() - self->last_answer_ms);
    }
    return s_fail(req, 501, NULL, "the gateway does not implement op %s", op);
}

/* ---- media, answered from the data folder ------------------------------------ */

static const char *s_header(s_req_t *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

/*  Answers a problem document with a type of its own. */
static enum MHD_Result s_refuse(s_req_t *req, int status, const char *type, const char *detail)
{
    s_set_problem(req, status, type, (size_t)-1, detail, (size_t)-1, NULL, 0);
    return s_answer(req);
}

/*  CORS preflight: hls.js in a page of another origin asks before a
    ranged or conditional GET. */
static enum MHD_Result s_media_preflight(s_req_t *req)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_METHODS, GW_MEDIA_METHODS);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_HEADERS,
                            "Range, If-None-Match, If-Modified-Since, If-Range");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_MAX_AGE, "86400");
    req->ready = resp;
    req->status = 204;
    return s_answer(req);
}

/*  True when the request's conditions say the client's copy is current
    (304): If-None-Match when given, else If-Modified-Since. */
static bool s_not_modified(s_req_t *req, const char *etag, const struct stat *st)
{
    const char *inm = s_header(req, MHD_HTTP_HEADER_IF_NONE_MATCH);
    if (inm)
        return gw_media_etag_listed(inm, etag);
    int64_t since;
    return gw_media_parse_http_date(s_header(req, MHD_HTTP_HEADER_IF_MODIFIED_SINCE), &since) &&
           (int64_t)st->st_mtime <= since;
}

/*  If-Range: the range applies only to the representation the client
    names, by strong ETag or by the exact Last-Modified date. */
static bool s_if_range_holds(s_req_t *req, const char *etag, const char *last_modified)
{
    const char *v = s_header(req, MHD_HTTP_HEADER_IF_RANGE);
    if (!v)
        return true;
    if (v[0] == '"')
        return !strcmp(v, etag);
    return !strcmp(v, last_modified);
}

/*  Answers from an open file: 304, 416, 206 or 200 with sendfile. Takes
    the descriptor. */
static enum MHD_Result s_media_file(s_req_t *req, int fd, const struct stat *st, const char *name,
                                    const char *cache_control)
{
    char etag[GW_MEDIA_ETAG_MAX], last_modified[GW_MEDIA_HTTP_DATE_MAX];
    gw_media_etag(st, etag);
    gw_media_http_date((int64_t)st->st_mtime, last_modified);
    uint64_t size = (uint64_t)st->st_size, offset = 0, length = size;
    int status = 200;
    struct MHD_Response *resp;
    if (s_not_modified(req, etag, st)) {
        close(fd);
        status = 304;
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    } else {
        /* Range is defined for GET only (RFC 9110 14.2). */
        gw_range_t range = GW_RANGE_NONE;
        if (!strcmp(req->method, "GET") && s_if_range_holds(req, etag, last_modified))
            range = gw_media_range(s_header(req, MHD_HTTP_HEADER_RANGE), size, &offset, &length);
        if (range == GW_RANGE_UNSATISFIABLE) {
            close(fd);
            snprintf(req->content_range, sizeof req->content_range, "bytes */%" PRIu64, size);
            return s_refuse(req, 416, NULL, "no byte of the range is in the file");
        }
        if (range == GW_RANGE_ONE) {
            status = 206;
            snprintf(req->content_range, sizeof req->content_range,
                     "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, offset, offset + length - 1, size);
        }
        /* Takes fd: one sendmsg from a mapping shared by the responses
           for the file, or sendfile(2) (media.h). */
        resp = gw_media_body(fd, st, offset, length);
    }
    if (!resp)
        return s_fail(req, 500, NULL, "cannot build the response");
    if (status != 304) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, gw_media_content_type(name));
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes");
        MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LAST_MODIFIED, last_modified);
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, cache_control);
    req->ready = resp;
    req->status = status;
    return s_answer(req);
}

/*  GET/HEAD/OPTIONS /media/...: HLS under a signed grant, or a cover.
    The signature is the credential: no bearer token, no bus, no rate
    budget (a player fetches a segment every few seconds). */
static enum MHD_Result s_handle_media(s_req_t *req)
{
    s_self_t *self = req->self;
    req->cors = true;
    if (!strcmp(req->method, "OPTIONS"))
        return s_media_preflight(req);
    if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
        req->allow = GW_MEDIA_METHODS;
        return s_fail(req, 405, NULL, "/media/ allows %s", GW_MEDIA_METHODS);
    }
    gw_media_url_t url;
    if (gw_media_parse(req->url, &url))
        return s_fail(req, 404, NULL, "no such media");
    char rel[GW_MEDIA_REL_MAX], cache_control[64];
    gw_media_root_t *root;
    if (url.kind == GW_MEDIA_COVER) {
        /* Named by their content's hash: they never change. */
        gw_media_cover_rel(&url, rel);
        root = self->blobs_root;
        snprintf(cache_control, sizeof cache_control, "public, max-age=%d, immutable",
                 GW_MEDIA_IMMUTABLE_S);
    } else {
        if (!self->has_media_key)
            return s_refuse(req, 503, "unavailable", "the gateway has no media secret");
        int64_t now = (int64_t)time(NULL);
        mb_media_entitlement_t ent;
        int rc = gw_media_verify(&self->media_key, url.token, url.token_len, url.version,
                                 url.version_len, (uint64_t)now, &ent);
        if (rc == MB_ETIMEDOUT)
            return s_refuse(req, 403, "expired", "the media URL expired; ask for a new one");
        if (rc)
            return s_refuse(req, 403, "bad_signature",
                            "the media URL's signature does not match its version");
        if (gw_media_map(&url, ent, rel))
            return s_refuse(req, 403, "not_entitled",
                            "a free grant covers master.m3u8 and the rungs a64/ and a128/");
        /* A cache keyed by URL must not outlive the grant in it: anyone
           holding the URL would keep fetching after it expired. Nobody
           else asks for that URL, so nothing is lost by it. */
        bool playlist = gw_media_is_playlist(url.last);
        int64_t max_age = playlist ? GW_MEDIA_PLAYLIST_S : GW_MEDIA_IMMUTABLE_S;
        int64_t left = (int64_t)gw_media_token_expiry(url.token, url.token_len) - now;
        if (left < max_age)
            max_age = left > 0 ? left : 0;
        snprintf(cache_control, sizeof cache_control, "public, max-age=%" PRId64 "%s", max_age,
                 playlist ? "" : ", immutable");
        root = self->hls_root;
    }
    int fd;
    struct stat st;
    int rc = gw_media_open(root, rel, &fd, &st);
    if (rc == MB_ENOTFOUND)
        return s_fail(req, 404, NULL, "no such media");
    if (rc == MB_EAGAIN)
        return s_fail(req, 503, NULL, "out of file descriptors; try again");
    if (rc) {
        mb_warn(req->rid, "media: cannot open %s: %s", rel, strerror(errno));
        return s_fail(req, 500, NULL, "cannot read the media file");
    }
    if (url.kind == GW_MEDIA_COVER && !gw_media_is_jpeg(fd)) {
        close(fd);
        return s_fail(req, 404, NULL, "no such media");
    }
    return s_media_file(req, fd, &st, url.last, cache_control);
}

/* ---- access and rate limits -------------------------------------------------- */

/*  The bytes the client is counted by when anonymous (ratelimit.h): the
    connection's peer address or, with --trust-proxy, the address
    X-Forwarded-For names last. Returns 0 when there is none. */
static size_t s_client_addr(s_req_t *req, uint8_t *out)
{
    if (req->self->trust_proxy) {
        const char *xff =
            MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Forwarded-For");
        size_t n = gw_rate_forwarded_bytes(xff, out);
        if (n)
            return n;
    }
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    return gw_rate_addr_bytes(info ? info->client_addr : NULL, out);
}

/*  Counts the request on `budget`. Returns true when it may go on, else
    sets the 429 answer. */
static bool s_rate_take(s_req_t *req, int budget, const gw_rate_key_t *keys, size_t n)
{
    gw_rate_take(req->self->rate, budget, keys, n, s_now_ns(), &req->rate);
    if (req->rate.allowed)
        return true;
    char detail[128];
    snprintf(detail, sizeof detail, "too many requests; try again in %" PRId64 " s",
             req->rate.retry_after_s);
    s_set_problem(req, 429, "rate_limited", (size_t)-1, detail, (size_t)-1, NULL, 0);
    return false;
}

/*  Counts the request on the default budget: per user when `by_user`
    (req->claims hold a valid token), else per client address. */
static bool s_rate_default(s_req_t *req, bool by_user)
{
    uint8_t addr[GW_RATE_ADDR_MAX];
    gw_rate_key_t key = {"user", req->claims.sub, strlen(req->claims.sub)};
    if (!by_user) {
        size_t n = s_client_addr(req, addr);
        key = (gw_rate_key_t){"addr", n ? addr : NULL, n};
    }
    return s_rate_take(req, req->self->budget_default, &key, 1);
}

/*  Counts the request as its route says: on the keys of its x-rate-limit
    (body keys only once the body is in), else on the default budget. */
static bool s_rate_route(s_req_t *req)
{
    const gw_route_t *r = req->route;
    if (!r->rate_budget)
        return s_rate_default(req, req->authed);
    uint8_t addr[GW_RATE_ADDR_MAX];
    char values[GW_RATE_KEYS_MAX][GW_RATE_VALUE_MAX + 1];
    gw_rate_key_t keys[GW_RATE_KEYS_MAX];
    for (size_t i = 0; i < r->n_rate_keys; i++) {
        const gw_rate_keydef_t *k = &r->rate_keys[i];
        size_t n = 0;
        const void *value = NULL;
        switch (k->kind) {
        case GW_RATE_ADDR:
            n = s_client_addr(req, addr);
            value = addr;
            break;
        case GW_RATE_USER:
            n = req->authed ? strlen(req->claims.sub) : 0;
            value = req->claims.sub;
            break;
        case GW_RATE_BODY:
            n = gw_rate_body_field(req->body.data, req->body.len, k->field, values[i],
                                   sizeof values[i]);
            value = values[i];
            break;
        }
        keys[i] = (gw_rate_key_t){k->name, n ? value : NULL, n};
    }
    /* Checked at start-up: every budget a route names exists. */
    return s_rate_take(req, gw_rate_find(req->self->rate, r->rate_budget), keys, r->n_rate_keys);
}

/*  Checks the route's x-access against the bearer token. Returns true
    when the request may go on (req->claims then hold the token's claims
    for routes that need one), else sets the 401/403/429/503 answer. */
static bool s_access(s_req_t *req)
{
    s_self_t *self = req->self;
    const gw_route_t *r = req->route;
    if (r->access == GW_ACCESS_PUBLIC)
        return true; /* Authorization is not even looked at */
    const char *header =
        MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    gw_auth_result_t res;
    if (gw_auth_check(self->auth, r->access, header, (int64_t)time(NULL), &req->claims, &res) ==
        0) {
        req->authed = true;
        return true;
    }
    /* Refusals count too -- per user for a 403 (the token is valid), per
       address otherwise -- so a client guessing tokens or hammering a
       route it may not use is limited like any other. */
    if (res.status != 503 && !s_rate_default(req, res.status == 403))
        return false;
    if (res.status == 401 || res.status == 403)
        gw_auth_challenge(&res, req->challenge, sizeof req->challenge);
    s_set_problem(req, res.status, res.type, (size_t)-1, res.detail, (size_t)-1, NULL, 0);
    return false;
}

/* ---- HTTP ---------------------------------------------------------------- */

/*  True when `ct` is application/json, with no charset or charset=utf-8. */
static bool s_is_json_media(const char *ct)
{
    if (!ct)
        return false;
    ct += strspn(ct, " \t");
    size_t n = strlen(GW_JSON);
    if (strncasecmp(ct, GW_JSON, n))
        return false;
    const char *p = ct + n;
    p += strspn(p, " \t");
    while (*p == ';') {
        p++;
        p += strspn(p, " \t");
        const char *eq = strchr(p, '=');
        size_t name_len = eq ? (size_t)(eq - p) : strcspn(p, ";");
        while (name_len && (p[name_len - 1] == ' ' || p[name_len - 1] == '\t'))
            name_len--;
        if (eq && name_len == 7 && !strncasecmp(p, "charset", 7)) {
            const char *v = eq + 1 + strspn(eq + 1, " \t\"");
            if (strncasecmp(v, "utf-8", 5) || (v[5] && !strchr("\"; \t", v[5])))
                return false;
        }
        p += strcspn(p, ";");
    }
    return *p == '\0';
}

static const char *s_request_header(void *cls, const char *name, size_t *len)
{
    const char *value = NULL;
    size_t value_len = 0;
    if (MHD_lookup_connection_value_n(cls, MHD_HEADER_KIND, name, strlen(name), &value,
                                      &value_len) != MHD_YES ||
        !value)
        return NULL;
    *len = value_len;
    return value;
}

/*  The most an x-upload route takes: its own max, within --max-upload. */
static uint64_t s_upload_limit(const s_self_t *self, const gw_route_t *r)
{
    uint64_t limit = (uint64_t)self->max_upload;
    return r->upload_max && r->upload_max < limit ? r->upload_max : limit;
}

/*  Answers a refusal found from the headers alone. An upload's is sent
    at once, so the client does not send gigabytes to learn it was
    refused (MHD then closes the connection, as it cannot read on). */
static enum MHD_Result s_refuse_early(s_req_t *req)
{
    return req->route && req->route->upload ? s_respond(req) : s_answer(req);
}

static const char *s_query(void *cls, const char *name, size_t *len)
{
    const char *value = NULL;
    size_t value_len = 0;
    if (MHD_lookup_connection_value_n(cls, MHD_GET_ARGUMENT_KIND, name, strlen(name), &value,
                                      &value_len) != MHD_YES)
        return NULL;
    if (!value) {
        value = "";
        value_len = 0;
    }
    *len = value_len;
    return value;
}

/*  Sets a 507 (disk full) or 500 answer for an upload that failed with
    `err` (an errno). */
static enum MHD_Result s_upload_failed(s_req_t *req, int err, bool early)
{
    if (err == ENOSPC || err == EDQUOT)
        s_set_problem(req, 507, "storage_full", (size_t)-1, "the blob store is full", (size_t)-1,
                      NULL, 0);
    else
        s_set_problemf(req, 500, NULL, "the upload could not be stored: %s", strerror(err));
    mb_warn(req->rid, "%s %s: storing the upload failed: %s", req->method, req->url, strerror(err));
    return early ? s_respond(req) : s_answer(req);
}

/*  Opens the blob the body of an x-upload request streams into. */
static enum MHD_Result s_upload_start(s_req_t *req, uint64_t limit)
{
    if (!req->self->blobs) {
        s_set_problemf(req, 503, NULL, "the gateway cannot store uploads (no blob store)");
        return s_respond(req);
    }
    if (mb_blob_writer_new(req->self->blobs, limit, &req->writer))
        return s_upload_failed(req, errno ? errno : EIO, true);
    return MHD_YES;
}

/*  A chunk of an upload's body: written to the blob at once and
    forgotten, so a body of any size costs MHD's read buffer and no
    more. The write is synchronous in the loop (page cache: fast, unless
    the disk is saturated), and so is the final fsync (README). */
static enum MHD_Result s_upload_data(s_req_t *req, const char *data, size_t n)
{
    if (req->writer) {
        int rc = mb_blob_writer_write(req->writer, data, n);
        if (rc == 0)
            return MHD_YES;
        if (rc == MB_ETOOBIG)
            req->too_big = true;
        else
            req->upload_errno = errno ? errno : EIO;
        mb_blob_writer_destroy(&req->writer);
    }
    /* As with JSON bodies: the answer waits for the body's end (MHD
       0.9.75), so a little more is read and dropped; past that the
       connection is cut. */
    req->dropped += n;
    if (req->dropped > GW_DISCARD_MAX) {
        mb_warn(req->rid, "%s %s: upload refused but still arriving; closing the connection",
                req->method, req->url);
        return MHD_NO;
    }
    return MHD_YES;
}

/*  First call for a request: route, method, size and media type, all
    decided before any body is read. */
static enum MHD_Result s_on_headers(s_req_t *req)
{
    s_self_t *self = req->self;
    if (!strncmp(req->url, GW_MEDIA_PREFIX, strlen(GW_MEDIA_PREFIX)) ||
        !strncmp(req->url, GW_COVERS_PREFIX, strlen(GW_COVERS_PREFIX)))
        return s_handle_media(req);
    int rc = gw_routes_match(self->routes, req->method, req->url, &req->match);
    if (rc == 404)
        return s_fail(req, 404, NULL, "no route for %s", req->url);
    if (rc == 405) {
        req->allow = req->match.allow;
        return s_fail(req, 405, NULL, "%s does not allow %s (allowed: %s)", req->url, req->method,
                      req->allow);
    }
    req->route = req->match.route;
    if (req->route->timeout_ms) /* x-timeout-ms */
        req->deadline_ms = req->start_us / 1000 + req->route->timeout_ms;
    if (!strcmp(req->route->service, "gateway"))
        return s_handle_own(req);
    if (self->stopping)
        return s_fail(req, 503, NULL, "the gateway is shutting down");

    const char *cl =
        MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te =
        MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    unsigned long long length = cl ? strtoull(cl, NULL, 10) : 0;
    const gw_route_t *r = req->route;
    unsigned long long limit = r->upload ? s_upload_limit(self, r) : (uint64_t)self->max_body;
    /* Who calls comes first: a caller without a valid token gets its 401
       whatever it sends, and learns nothing of the route's body rules. */
    if (!s_access(req))
        return s_refuse_early(req);
    /* 413 and 415 go out at once, before the body is read: here closing
       the connection is what we want. */
    if (length > limit) {
        s_set_problemf(req, 413, "body", "the body is %llu bytes; the limit is %llu", length,
                       limit);
        return s_respond(req);
    }
    if (r->upload) {
        const char *ct =
            MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (!gw_media_type_listed(ct, r->upload_types, r->n_upload_types)) {
            s_set_problemf(req, 415, NULL, "this upload takes %s%s%s%s, not %s", r->upload_types[0],
                           r->n_upload_types > 1 ? ", " : "",
                           r->n_upload_types > 1 ? r->upload_types[1] : "",
                           r->n_upload_types > 2 ? "..." : "", ct ? ct : "an untyped body");
            return s_respond(req);
        }
    } else if (r->has_body && (length > 0 || te)) {
        const char *ct =
            MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (!s_is_json_media(ct)) {
            s_set_problemf(req, 415, NULL, "the body must be application/json, not %s",
                           ct ? ct : "untyped");
            return s_respond(req);
        }
    }
    /* The limiter after access, so it knows whom to count; a limit with
       body keys waits for the body. Both before a byte of the body is kept. */
    if (!r->rate_body && !s_rate_route(req))
        return s_refuse_early(req);
    if (r->upload)
        return s_upload_start(req, limit);
    gw_buf_reserve(&req->body, length);
    return MHD_YES;
}

/*  Last call: the whole body is in. Sends the request to the bus and
    suspends the connection until the reply. */
static enum MHD_Result s_on_complete(s_req_t *req)
{
    s_self_t *self = req->self;
    const gw_route_t *r = req->route;
    if (req->too_big)
        return s_fail(req, 413, "body", "the body is over the limit of %llu bytes",
                      r->upload ? (unsigned long long)s_upload_limit(self, r)
                                : (unsigned long long)self->max_body);
    int64_t now = s_now_ms();
    gw_request_in_t in = {.query = s_query,
                          .header = s_request_header,
                          .cls = req->conn,
                          .body = req->body.data,
                          .body_len = req->body.len};
    if (r->upload) {
        if (req->upload_errno || !req->writer)
            return s_upload_failed(req, req->upload_errno ? req->upload_errno : EIO, false);
        if (mb_blob_writer_size(req->writer) == 0 && r->body_required) {
            mb_blob_writer_destroy(&req->writer);
            return s_fail(req, 400, "body", "body: is required");
        }
        /* fsync and rename, in the loop: the price of a simple design
           (README). */
        if (mb_blob_writer_commit(&req->writer, req->blob_hex, &in.blob_size, &req->blob_created))
            return s_upload_failed(req, errno ? errno : EIO, false);
        in.blob_hex = req->blob_hex;
        /* The time the body took to arrive is the client's; the bus gets
           the whole timeout from here. */
        now = s_now_ms();
        req->deadline_ms = now + s_timeout_ms(req);
    } else if (now >= req->deadline_ms) {
        return s_fail(req, 504, NULL, "the request took longer than %ld ms to arrive",
                      s_timeout_ms(req));
    }
    /* Counted before the body is validated: every request counts. */
    if (r->rate_body && !s_rate_route(req))
        return s_answer(req);
    size_t offset = self->sbuf.size;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &self->sbuf, msgpack_sbuffer_write);
    gw_invalid_t invalid;
    if (gw_request_pack(&pk, r, &req->match, &in, req->authed ? &req->claims : NULL, req->rid,
                        (uint32_t)(req->deadline_ms - now), &invalid)) {
        self->sbuf.size = offset;
        return s_fail(req, 400, invalid.field, "%s", invalid.detail);
    }
    if (gw_pending_add(self->pending, &req->node, req->rid, req->deadline_ms)) {
        self->sbuf.size = offset;
        return s_fail(req, 503, NULL, "too many requests in flight");
    }
    if (self->n_outgoing == self->outgoing_cap) {
        self->outgoing_cap = self->outgoing_cap ? self->outgoing_cap * 2 : 64;
        self->outgoing = mb_realloc(self->outgoing, self->outgoing_cap * sizeof *self->outgoing);
    }
    self->outgoing[self->n_outgoing++] =
        (s_outgoing_t){.req = req, .offset = offset, .size = self->sbuf.size - offset};
    req->state = S_PENDING;
    if (req->sock)
        req->sock->pending = req;
    MHD_suspend_connection(req->conn);
    return MHD_YES;
}

static enum MHD_Result s_on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
    (void)version;
    s_self_t *self = cls;
    s_req_t *req = *con_cls;
    if (!req) {
        req = s_req_new(self, conn);
        req->method = method;
        req->url = url;
        *con_cls = req;
        enum MHD_Result rc = s_on_headers(req);
        req->headers_done = true;
        return rc;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (req->state != S_READING || !req->route || !(req->route->has_body || req->route->upload))
            return MHD_YES; /* answered already, or a body nobody asked for: dropped */
        if (req->route->upload)
            return s_upload_data(req, upload_data, n);
        if (req->too_big || req->body.len + n > (size_t)self->max_body) {
            /* Content-Length did not warn us (chunked). MHD 0.9.75 cannot
               queue a response in the middle of a body, so the rest is
               read and dropped and the 413 goes out at its end; a client
               that keeps sending far past the limit is cut off instead. */
            if (!req->too_big) {
                req->too_big = true;
                gw_buf_free(&req->body);
            }
            req->dropped += n;
            if (req->dropped > (uint64_t)self->max_body + GW_DISCARD_MAX) {
                mb_warn(req->rid, "%s %s: body far over the limit; closing the connection",
                        req->method, req->url);
                return MHD_NO;
            }
            return MHD_YES;
        }
        gw_buf_append(&req->body, upload_data, n);
        return MHD_YES;
    }
    switch (req->state) {
    case S_READING:
        return s_on_complete(req);
    case S_REPLIED:
        return s_respond(req);
    case S_PENDING:
    case S_ANSWERED:
    default:
        return MHD_YES;
    }
}

static void s_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                           enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    s_self_t *self = cls;
    s_req_t *req = *con_cls;
    if (!req)
        return;
    *con_cls = NULL;
    /* A client gone while its request was pending: forget the entry, so
       the late reply is dropped and nothing leaks. */
    if (req->state == S_PENDING)
        gw_pending_remove(self->pending, &req->node);
    if (req->sock && req->sock->pending == req)
        req->sock->pending = NULL;
    /* One line per request: debug, or warn for 5xx and broken connections.
       A client hanging up on a pending request is its own business. */
    int status = req->state == S_ANSWERED && !req->hung_up ? req->status : 0;
    bool broken = toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && !req->hung_up;
    mb_log_level_t level = status >= 500 || broken ? MB_LOG_WARN : MB_LOG_DEBUG;
    if (mb_log_enabled(level))
        mb_log(level, req->rid, "%s %s %d %.3fms%s", req->method, req->url, status,
               (double)(s_now_us() - req->start_us) / 1000.0,
               req->hung_up ? " (the client hung up while it was pending)"
               : broken     ? " (the connection ended early)"
                            : "");
    s_req_free(self, req);
}

static void s_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                            enum MHD_ConnectionNotificationCode code)
{
    s_self_t *self = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!info)
            return;
        s_conn_t *sock = mb_calloc(1, sizeof *sock);
        sock->fd = info->connect_fd;
        struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLET, .data.ptr = sock};
        if (epoll_ctl(self->epoll_fd, EPOLL_CTL_ADD, sock->fd, &ev)) {
            free(sock); /* only hang-ups go unnoticed until the deadline */
            return;
        }
        *socket_context = sock;
    } else if (*socket_context) {
        s_conn_t *sock = *socket_context;
        epoll_ctl(self->epoll_fd, EPOLL_CTL_DEL, sock->fd, NULL); /* fails if closed: fine */
        free(sock);
        *socket_context = NULL;
    }
}

/*  The peer of `sock` hung up. If a request of its is pending, it is
    resumed so MHD sees the hang-up and completes it, which frees its
    pending entry long before its deadline. */
static void s_on_hangup(s_self_t *self, s_conn_t *sock)
{
    s_req_t *req = sock->pending;
    if (!req || req->state != S_PENDING)
        return;
    gw_pending_remove(self->pending, &req->node);
    req->hung_up = true;
    /* Nobody reads this answer; it only lets MHD run into the hang-up. */
    s_set_problemf(req, 400, NULL, "the client closed the connection");
    s_wake(self, req);
}

static int s_hex_digit(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/*  Percent-decoding of paths and query values, as MHD's own, except
    %00: a NUL would end the path early for everything that reads it as
    a C string ("/media/.../seg.m4s%00.jpg" read as ".../seg.m4s"), so it
    stays the three characters, which no route, argument schema or media
    name accepts. */
static size_t s_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    char *w = s;
    for (const char *r = s; *r;) {
        int hi = r[0] == '%' ? s_hex_digit(r[1]) : -1;
        int lo = hi >= 0 ? s_hex_digit(r[2]) : -1;
        if (lo >= 0 && (hi | lo)) {
            *w++ = (char)(hi << 4 | lo);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

static void s_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    line[strcspn(line, "\r\n")] = '\0';
    mb_warn(0, "http: %s", line);
}

/* ---- the bus ------------------------------------------------------------- */

/*  Writes Content-Disposition: attachment with `name` (len bytes) as the
    file name: the quoted form keeps printable ASCII but quotes, '\\'
    and '/' (others become '_'); a name with other bytes also gets the
    RFC 8187 form, filename*=UTF-8''..., which browsers prefer. */
static void s_disposition(char *out, size_t size, const char *name, size_t len)
{
    if (len > 128)
        len = 128;
    size_t n = (size_t)snprintf(out, size, "attachment; filename=\"");
    bool ascii = true;
    for (size_t i = 0; i < len && n + 2 < size; i++) {
        unsigned char c = (unsigned char)name[i];
        ascii &= c >= 0x20 && c < 0x7f;
        out[n++] = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '/' ? (char)c : '_';
    }
    n += (size_t)snprintf(out + n, size - n, "\"");
    if (ascii || !gw_utf8_valid(name, len) || n + 20 >= size)
        return;
    n += (size_t)snprintf(out + n, size - n, "; filename*=UTF-8''");
    for (size_t i = 0; i < len && n + 4 < size; i++) {
        unsigned char c = (unsigned char)name[i];
        bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                     strchr("!#$&+-.^_`|~", c);
        n += (size_t)snprintf(out + n, size - n, plain && c ? "%c" : "%%%02X", c);
    }
}

/*  A reply whose body is {"content_type": str, "data"|"csv"|"text": str
    or bin, "filename"?: str}, to a route whose 2xx responses declare a
    media type that is not JSON, is sent as those bytes. Returns false
    when the body has not that shape (it goes out as JSON). */
static bool s_set_raw_object(s_req_t *req, const mb_reply_view_t *rep,
                             const msgpack_object *body)
{
    static const char *const keys[] = {"data", "csv", "text"};
    const msgpack_object *data = NULL;
    for (size_t i = 0; !data && i < sizeof keys / sizeof keys[0]; i++)
        data = mb_map_get(body, keys[i]);
    const char *ct, *bytes;
    size_t ct_len, len;
    if (!data || !mb_obj_str(mb_map_get(body, "content_type"), &ct, &ct_len))
        return false;
    const char *service = req->route->service;
    if (data->type == MSGPACK_OBJECT_STR) {
        bytes = data->via.str.ptr;
        len = data->via.str.size;
    } else if (data->type == MSGPACK_OBJECT_BIN) {
        bytes = data->via.bin.ptr;
        len = data->via.bin.size;
    } else {
        s_set_problemf(req, 502, NULL, "%s answered raw data that is neither text nor bytes",
                       service);
        return true;
    }
    /* The type becomes a header: printable ASCII, and one the operation
       declares, so actors cannot send what the contract does not say. */
    bool printable = ct_len > 0 && ct_len < sizeof req->ctype;
    for (size_t i = 0; printable && i < ct_len; i++)
        printable = ct[i] >= 0x20 && ct[i] < 0x7f;
    if (printable) {
        memcpy(req->ctype, ct, ct_len);
        req->ctype[ct_len] = '\0';
    }
    if (!printable ||
        !gw_media_type_listed(req->ctype, req->route->raw_types, req->route->n_raw_types)) {
        s_set_problemf(req, 502, NULL, "%s answered a content type the operation does not declare",
                       service);
        return true;
    }
    const char *name;
    size_t name_len;
    req->disposition[0] = '\0';
    if (mb_obj_str(mb_map_get(body, "filename"), &name, &name_len) && name_len)
        s_disposition(req->disposition, sizeof req->disposition, name, name_len);
    gw_buf_reset(&req->out);
    gw_buf_append(&req->out, bytes, len);
    req->status = rep->status;
    req->content_type = req->ctype;
    return true;
}

static bool s_set_raw(s_req_t *req, const mb_reply_view_t *rep)
{
    /* Raw routes are few (exports, covers): their body is decoded to a
       tree, the JSON path reads the bytes in place. */
    msgpack_unpacked body;
    msgpack_unpacked_init(&body);
    size_t offset = 0;
    bool raw = msgpack_unpack_next(&body, (const char *)rep->body, rep->body_len, &offset) ==
                   MSGPACK_UNPACK_SUCCESS &&
               body.data.type == MSGPACK_OBJECT_MAP && s_set_raw_object(req, rep, &body.data);
    msgpack_unpacked_destroy(&body);
    return raw;
}

/*  Turns a reply into the request's answer. */
static void s_set_reply(s_req_t *req, const mb_reply_view_t *rep)
{
    /* 422: the actor refused the upload's bytes (not audio...). A blob
       this very upload created is referred to by nothing: drop it, or
       every refused upload would stay on disk for ever. */
    if (req->route->upload && rep->status == 422 && req->blob_created) {
        int rc = mb_blob_remove(req->self->blobs, req->blob_hex);
        if (rc && rc != MB_ENOTFOUND)
            mb_warn(req->rid, "cannot remove refused upload %s: %s", req->blob_hex,
                    mb_strerror(rc));
    }
    if (rep->status < 200 || rep->status > 599) {
        s_set_problemf(req, 502, NULL, "%s answered with status %d", req->route->service,
                       rep->status);
        return;
    }
    if (rep->code) {
        int status = rep->status >= 400 ? rep->status : 502;
        s_set_problem(req, status, rep->code, rep->code_len, rep->message, rep->message_len,
                      rep->field, rep->field_len);
        return;
    }
    gw_buf_reset(&req->out);
    req->status = rep->status;
    req->content_type = GW_JSON;
    if (rep->status == 204 || rep->status == 304)
        return;
    if (!rep->body) {
        gw_buf_puts(&req->out, "null");
        return;
    }
    if (req->route->n_raw_types && rep->status < 300 && s_set_raw(req, rep))
        return;
    const char *why = NULL;
    if (gw_msgpack_raw_to_json(&req->out, rep->body, rep->body_len, &why))
        s_set_problemf(req, 502, NULL, "%s answered with a body that has no JSON form: %s",
                       req->route->service, why);
}

/*  The broker answers an mmi.service probe with a bare "200"/"404"/"501",
    never a msgpack map. */
static bool s_is_probe_answer(const void *data, size_t size)
{
    const char *p = data;
    return size == 3 && p[0] >= '1' && p[0] <= '9' && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' &&
           p[2] <= '9';
}

static void s_on_bus_message(s_self_t *self, const void *data, size_t size)
{
    self->last_answer_ms = s_now_ms();
    if (s_is_probe_answer(data, size))
        return;
    mb_reply_view_t rep;
    const char *why = NULL;
    if (mb_reply_view(&rep, data, size, &why)) {
        mb_warn(0, "bus: dropped a reply that is not an envelope: %s", why ? why : "?");
        return;
    }
    gw_pending_node_t *node = gw_pending_take(self->pending, rep.rid);
    if (!node) {
        mb_debug(rep.rid, "bus: dropped a late reply (the request is gone)");
        return;
    }
    s_req_t *req = (s_req_t *)((char *)node - offsetof(s_req_t, node));
    s_set_reply(req, &rep);
    s_wake(self, req);
}

/*  Sends the requests packed during the last MHD run, in as few
    messages as mb_client_queue() allows. One the bus refuses is answered
    503: its connection is suspended by now, so the answer goes out when
    MHD runs again. */
static void s_send_outgoing(s_self_t *self)
{
    for (size_t i = 0; i < self->n_outgoing; i++) {
        s_req_t *req = self->outgoing[i].req;
        int rc = mb_client_queue(self->client, req->route->service,
                                 self->sbuf.data + self->outgoing[i].offset, self->outgoing[i].size);
        if (rc == 0) {
            self->sent = true;
            continue;
        }
        gw_pending_remove(self->pending, &req->node);
        if (rc == MB_EAGAIN)
            s_set_problemf(req, 503, NULL, "the bus is not reachable or is full; try again");
        else
            s_set_problemf(req, 503, NULL, "the bus refused the request: %s", mb_strerror(rc));
        s_wake(self, req);
    }
    if (self->n_outgoing)
        mb_client_flush(self->client);
    self->n_outgoing = 0;
    msgpack_sbuffer_clear(&self->sbuf);
}

/*  ZMQ_FD is edge-triggered: read until the socket says EAGAIN, after
    every time it fires and after every send (a send may consume the
    edge of replies that arrived meanwhile). */
static void s_drain_bus(s_self_t *self)
{
    self->sent = false;
    for (;;) {
        zmq_msg_t msg;
        int rc = mb_client_recv(self->client, &msg);
        if (rc == MB_EAGAIN)
            return;
        if (rc == MB_EPROTO)
            continue;
        if (rc) {
            mb_warn(0, "bus: receive failed: %s", mb_strerror(rc));
            return;
        }
        s_on_bus_message(self, zmq_msg_data(&msg), zmq_msg_size(&msg));
        zmq_msg_close(&msg);
    }
}

/*  Answers 504 for every pending request whose deadline has passed. */
static void s_expire(s_self_t *self, int64_t now)
{
    gw_pending_node_t *node;
    while ((node = gw_pending_first(self->pending)) && node->deadline_ms <= now) {
        gw_pending_remove(self->pending, node);
        s_req_t *req = (s_req_t *)((char *)node - offsetof(s_req_t, node));
        s_set_problemf(req, 504, NULL, "%s did not answer within %ld ms", req->route->service,
                       s_timeout_ms(req));
        s_wake(self, req);
    }
}

/*  Answers 503 for every pending request (shutting down). */
static void s_abandon_pending(s_self_t *self)
{
    gw_pending_node_t *node;
    while ((node = gw_pending_first(self->pending))) {
        gw_pending_remove(self->pending, node);
        s_req_t *req = (s_req_t *)((char *)node - offsetof(s_req_t, node));
        s_set_problemf(req, 503, NULL, "the gateway is shutting down");
        s_wake(self, req);
    }
}

static void s_probe(s_self_t *self, int64_t now)
{
    if (now < self->next_probe_ms)
        return;
    self->next_probe_ms = now + GW_PROBE_INTERVAL_MS;
    /* MB_EAGAIN while the broker is unreachable (ZMQ_IMMEDIATE): then no
       answer comes and /readyz turns 503 after GW_READY_WINDOW_MS. */
    if (mb_client_send(self->client, MMI_SERVICE, self->probe_service,
                       strlen(self->probe_service)) == 0)
        self->sent = true;
}

/* ---- the loop ------------------------------------------------------------ */

/*  How long the loop may sleep; *mhd_due_ms is when MHD wants to run
    even if its fd stays quiet (-1: only when it fires). */
static int s_wait_ms(s_self_t *self, int64_t now, int64_t *mhd_due_ms)
{
    int64_t wait = GW_MAX_WAIT_MS;
    MHD_UNSIGNED_LONG_LONG mhd_ms;
    *mhd_due_ms = -1;
    if (MHD_get_timeout(self->daemon, &mhd_ms) == MHD_YES) {
        *mhd_due_ms = now + (int64_t)(mhd_ms < GW_MAX_WAIT_MS ? mhd_ms : GW_MAX_WAIT_MS);
        if ((int64_t)mhd_ms < wait)
            wait = (int64_t)mhd_ms;
    }
    gw_pending_node_t *first = gw_pending_first(self->pending);
    if (first && first->deadline_ms - now < wait)
        wait = first->deadline_ms - now;
    if (self->next_probe_ms - now < wait)
        wait = self->next_probe_ms - now;
    if (self->stopping && self->drain_until_ms - now < wait)
        wait = self->drain_until_ms - now;
    if (gw_ws_due_ms(self->ws) - now < wait)
        wait = gw_ws_due_ms(self->ws) - now;
    return wait < 0 ? 0 : (int)wait;
}

static void s_begin_stop(s_self_t *self, int64_t now)
{
    self->stopping = true;
    self->drain_until_ms = now + GW_DRAIN_MS;
    self->linger_until_ms = self->drain_until_ms + GW_LINGER_MS;
    /* Stop accepting; connections already open finish what they started. */
    MHD_socket listen_fd = MHD_quiesce_daemon(self->daemon);
    if (listen_fd != MHD_INVALID_SOCKET)
        close(listen_fd);
    gw_ws_stop(self->ws); /* 1001 to every WebSocket */
    mb_info(0, "stopping: %zu request(s) pending", gw_pending_size(self->pending));
}

static int s_run(s_self_t *self, const sigset_t *wait_mask)
{
    struct epoll_event events[8];
    for (;;) {
        int64_t now = s_now_ms();
        if (!self->stopping && mb_signal_stop_requested())
            s_begin_stop(self, now);
        if (self->stopping) {
            if (now >= self->drain_until_ms)
                s_abandon_pending(self);
            if ((self->active == 0 && !self->resumed && gw_ws_size(self->ws) == 0) ||
                now >= self->linger_until_ms)
                return 0;
        }
        int64_t mhd_due_ms = now;
        int n = 0;
        if (!self->resumed)
            n = epoll_pwait(self->epoll_fd, events, 8, s_wait_ms(self, now, &mhd_due_ms),
                            wait_mask);
        if (n < 0 && errno != EINTR) {
            mb_error(0, "epoll_wait: %s", strerror(errno));
            return 1;
        }
        bool bus_fired = false, mhd_fired = false, ws_fired = false;
        for (int i = 0; i < n; i++) {
            if (events[i].data.u64 == S_EV_BUS)
                bus_fired = true;
            else if (events[i].data.u64 == S_EV_WS)
                ws_fired = true;
            else if (events[i].data.u64 == S_EV_MHD)
                mhd_fired = true;
            else
                s_on_hangup(self, events[i].data.ptr);
        }
        /* MHD runs when its fd fires, when its timeout passes and after
           connections were resumed. The bus is drained only when its fd
           fired or something was sent: an empty receive costs libzmq two
           system calls. */
        now = s_now_ms();
        if (mhd_fired || self->resumed || (mhd_due_ms >= 0 && now >= mhd_due_ms)) {
            self->resumed = false;
            MHD_run(self->daemon);
            /* Upgraded connections handed back to MHD need one more run. */
            self->resumed = gw_ws_mhd_pending(self->ws);
            s_send_outgoing(self);
        }
        if (bus_fired || self->sent)
            s_drain_bus(self);
        now = s_now_ms();
        s_expire(self, now);
        s_probe(self, now);
        gw_media_expire(); /* an idle gateway keeps no segment mapped */
        if (self->sent)
            s_drain_bus(self);
        if (ws_fired || gw_ws_due_ms(self->ws) <= s_now_ms())
            gw_ws_run(self->ws);
    }
}

/* ---- start-up ------------------------------------------------------------ */

static void s_usage(FILE *out)
{
    fprintf(
        out,
        "Usage: musicbus-gateway [options]\n"
        "  --http ADDR         listen on HOST:PORT (%s; %s); port 0 lets the OS pick\n"
        "  --bus ENDPOINT      broker endpoint (%s; %s)\n"
        "  --timeout MS        deadline of each request (%s; %d)\n"
        "  --max-body BYTES    largest request body (%s; %ld)\n"
        "  --max-upload BYTES  largest x-upload body, streamed to the blob store (%s; %lld)\n"
        "  --schema FILE       OpenAPI document to serve (default: the one built in)\n"
        "  --data DIR          data folder: blobs/ for uploads and /media/ (%s; %s)\n"
        "  --jwt-secret-file PATH  the access tokens' HMAC secret (else %s,\n"
        "                      else the file named by %s)\n"
        "  --media-secret-file PATH  the media URLs' HMAC secret (%s, else this,\n"
        "                      else the file named by %s)\n"
        "  --rate NAME=SPEC    rate budget NAME (else %sNAME in capitals): 'off' or\n"
        "                      COUNT/PERIOD [burst N], e.g. '50/s burst 200', '10/min burst 5'\n"
        "  --rate-default SPEC the same as --rate default=SPEC (%s)\n"
        "  --rate-signin SPEC  the same as --rate signin=SPEC (%s)\n"
        "  --rate-slots N      keys each budget tracks at once (%s; %d)\n"
        "  --trust-proxy       count anonymous clients by the last X-Forwarded-For\n"
        "                      address, not the peer's (%s=1)\n"
        "  --ready-file PATH   write the bound HOST:PORT there once listening\n"
        "  --help              this text\n",
        MB_ENV_HTTP_ADDR, MB_DEFAULT_HTTP_ADDR, MB_ENV_BUS, MB_DEFAULT_BUS, MB_ENV_TIMEOUT_MS,
        MB_DEFAULT_TIMEOUT_MS, GW_ENV_MAX_BODY, GW_DEFAULT_MAX_BODY, GW_ENV_MAX_UPLOAD,
        GW_DEFAULT_MAX_UPLOAD, MB_ENV_DATA, MB_DEFAULT_DATA, MB_JWT_ENV_SECRET,
        MB_JWT_ENV_SECRET_FILE, "MUSICBUS_MEDIA_SECRET", "MUSICBUS_MEDIA_SECRET_FILE",
        GW_RATE_ENV_PREFIX, s_builtin_budgets[0].spec, s_builtin_budgets[1].spec, GW_ENV_RATE_SLOTS,
        GW_RATE_SLOTS, GW_ENV_TRUST_PROXY);
}

/*  Parses flags, falling back to MUSICBUS_* variables. Returns 0, 1 to
    exit 0 (--help), or -1 for bad flags. */
static int s_parse_args(s_self_t *self, int argc, char **argv)
{
    static const struct option options[] = {
        {"http", required_argument, NULL, 'h'},
        {"bus", required_argument, NULL, 'b'},
        {"timeout", required_argument, NULL, 't'},
        {"max-body", required_argument, NULL, 'm'},
        {"schema", required_argument, NULL, 's'},
        {"ready-file", required_argument, NULL, 'r'},
        {"jwt-secret-file", required_argument, NULL, 'j'},
        {"media-secret-file", required_argument, NULL, 'M'},
        {"data", required_argument, NULL, 'd'},
        {"max-upload", required_argument, NULL, 'U'},
        {"rate", required_argument, NULL, 'R'},
        {"rate-default", required_argument, NULL, 'D'},
        {"rate-signin", required_argument, NULL, 'S'},
        {"rate-slots", required_argument, NULL, 'N'},
        {"trust-proxy", no_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'H'},
        {NULL, 0, NULL, 0},
    };
    const char *http = NULL, *bus = NULL, *timeout = NULL, *max_body = NULL, *slots = NULL;
    const char *data = NULL, *max_upload = NULL;
    bool trust_proxy = false;
    int c;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 'h':
            http = optarg;
            break;
        case 'b':
            bus = optarg;
            break;
        case 't':
            timeout = optarg;
            break;
        case 'm':
            max_body = optarg;
            break;
        case 's':
            self->schema_file = mb_strdup(optarg);
            break;
        case 'r':
            self->ready_file = mb_strdup(optarg);
            break;
        case 'j':
            free(self->jwt_secret_file);
            self->jwt_secret_file = mb_strdup(optarg);
            break;
        case 'M':
            free(self->media_secret_file);
            self->media_secret_file = mb_strdup(optarg);
            break;
        case 'd':
            data = optarg;
            break;
        case 'U':
            max_upload = optarg;
            break;
        case 'R':
        case 'D':
        case 'S': {
            const char *name = c == 'D' ? GW_BUDGET_DEFAULT : c == 'S' ? "signin" : optarg;
            const char *spec = optarg;
            size_t name_len = strlen(name);
            if (c == 'R') {
                const char *eq = strchr(optarg, '=');
                if (!eq || eq == optarg) {
                    fprintf(stderr, "musicbus-gateway: --rate wants NAME=SPEC, not '%s'\n", optarg);
                    return -1;
                }
                name_len = (size_t)(eq - optarg);
                spec = eq + 1;
            }
            if (self->n_given == GW_BUDGETS_GIVEN_MAX) {
                fprintf(stderr, "musicbus-gateway: at most %d --rate flags\n",
                        GW_BUDGETS_GIVEN_MAX);
                return -1;
            }
            /* The name is cut out of argv's text, so keep a copy. */
            self->given_name[self->n_given] = mb_strndup(name, name_len);
            self->given_spec[self->n_given++] = spec;
            break;
        }
        case 'N':
            slots = optarg;
            break;
        case 'P':
            trust_proxy = true;
            break;
        case 'H':
            s_usage(stdout);
            return 1;
        default:
            s_usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "musicbus-gateway: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    self->http_addr =
        mb_strdup(http ? http : mb_config_env(MB_ENV_HTTP_ADDR, MB_DEFAULT_HTTP_ADDR));
    self->bus = mb_strdup(bus ? bus : mb_config_env(MB_ENV_BUS, MB_DEFAULT_BUS));
    if (timeout) {
        if (mb_config_parse_long(timeout, 1, 3600 * 1000, &self->timeout_ms)) {
            fprintf(stderr, "musicbus-gateway: --timeout must be 1..3600000 ms\n");
            return -1;
        }
    } else {
        self->timeout_ms =
            mb_config_env_long(MB_ENV_TIMEOUT_MS, MB_DEFAULT_TIMEOUT_MS, 1, 3600 * 1000);
    }
    if (max_body) {
        if (mb_config_parse_long(max_body, 0, 1L << 30, &self->max_body)) {
            fprintf(stderr, "musicbus-gateway: --max-body must be 0..1073741824 bytes\n");
            return -1;
        }
    } else {
        self->max_body = mb_config_env_long(GW_ENV_MAX_BODY, GW_DEFAULT_MAX_BODY, 0, 1L << 30);
    }
    self->data_dir = mb_strdup(data ? data : mb_config_env(MB_ENV_DATA, MB_DEFAULT_DATA));
    long upload = 0;
    if (max_upload) {
        if (mb_config_parse_long(max_upload, 1, GW_MAX_UPLOAD_MAX, &upload)) {
            fprintf(stderr, "musicbus-gateway: --max-upload must be 1..%lld bytes\n",
                    GW_MAX_UPLOAD_MAX);
            return -1;
        }
    } else {
        upload = mb_config_env_long(GW_ENV_MAX_UPLOAD, GW_DEFAULT_MAX_UPLOAD, 1, GW_MAX_UPLOAD_MAX);
    }
    self->max_upload = upload;
    if (slots) {
        if (mb_config_parse_long(slots, 16, 1L << 26, &self->rate_slots)) {
            fprintf(stderr, "musicbus-gateway: --rate-slots must be 16..67108864\n");
            return -1;
        }
    } else {
        self->rate_slots = mb_config_env_long(GW_ENV_RATE_SLOTS, GW_RATE_SLOTS, 16, 1L << 26);
    }
    self->trust_proxy = trust_proxy || !strcmp(mb_config_env(GW_ENV_TRUST_PROXY, "0"), "1") ||
                        !strcasecmp(mb_config_env(GW_ENV_TRUST_PROXY, "0"), "true");
    return 0;
}

/*  Splits "HOST:PORT", "[V6]:PORT" or ":PORT" and resolves it. */
static int s_resolve(const char *addr, struct sockaddr_storage *out, socklen_t *out_len, char *host,
                     size_t host_size)
{
    const char *colon = strrchr(addr, ':');
    if (!colon)
        return MB_EINVAL;
    size_t host_len = (size_t)(colon - addr);
    const char *h = addr;
    if (host_len >= 2 && h[0] == '[' && h[host_len - 1] == ']') {
        h++;
        host_len -= 2;
    }
    if (host_len >= host_size)
        return MB_EINVAL;
    memcpy(host, h, host_len);
    host[host_len] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host_len ? host : NULL, colon + 1, &hints, &res) || !res)
        return MB_EINVAL;
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *out_len = res->ai_addrlen;
    freeaddrinfo(res);
    if (!host_len)
        snprintf(host, host_size, "%s", out->ss_family == AF_INET6 ? "::" : "0.0.0.0");
    return 0;
}

static int s_write_ready_file(const char *path, const char *host, unsigned port)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return MB_EIO;
    if (strchr(host, ':'))
        fprintf(f, "[%s]:%u\n", host, port);
    else
        fprintf(f, "%s:%u\n", host, port);
    if (fclose(f) != 0 || rename(tmp, path) != 0)
        return MB_EIO;
    return 0;
}

static char *s_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    gw_buf_t buf = GW_BUF_INIT;
    char chunk[16384];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        gw_buf_append(&buf, chunk, n);
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        gw_buf_free(&buf);
        return NULL;
    }
    if (!buf.data)
        gw_buf_append(&buf, "", 0);
    return gw_buf_steal(&buf, len);
}

/*  Drops the whole pages of [data, data + len) from our address space's
    resident set: read-only bytes of the executable read once at start-up
    (the built-in OpenAPI text, ~230 KiB), which would otherwise count in
    the gateway's RSS for its whole life. They are file-backed, so a later
    read would simply fault them in again from the file. */
static void s_forget_pages(const void *data, size_t len)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = ((uintptr_t)data + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t)data + len) & ~(page - 1);
    if (end > start)
        madvise((void *)start, end - start, MADV_DONTNEED);
}

static int s_load_routes(s_self_t *self)
{
    char err[512];
    if (self->schema_file) {
        size_t len;
        char *text = s_read_file(self->schema_file, &len);
        if (!text) {
            mb_error(0, "cannot read --schema %s: %s", self->schema_file, strerror(errno));
            return MB_EIO;
        }
        self->routes = gw_routes_new(text, len, err, sizeof err);
        free(text);
    } else {
        self->routes =
            gw_routes_new((const char *)gw_openapi_json, gw_openapi_json_len, err, sizeof err);
        s_forget_pages(gw_openapi_json, gw_openapi_json_len);
    }
    if (!self->routes) {
        mb_error(0, "the OpenAPI document cannot be served: %s", err);
        return MB_EINVAL;
    }
    /* Probe with a real service name, so the broker's answer is about
       something that matters; any answer at all means it is reachable. */
    for (size_t i = 0; i < gw_routes_size(self->routes); i++) {
        const gw_route_t *r = gw_routes_at(self->routes, i);
        if (strcmp(r->service, "gateway")) {
            if (!self->probe_service)
                self->probe_service = mb_strdup(r->service);
            continue;
        }
        /* /media/ and /covers/ document what the gateway answers before
           routing. */
        if (strcmp(r->op, "healthz") && strcmp(r->op, "readyz") && strcmp(r->op, GW_WS_OP) &&
            strncmp(r->path, GW_MEDIA_PREFIX, strlen(GW_MEDIA_PREFIX)) &&
            strncmp(r->path, GW_COVERS_PREFIX, strlen(GW_COVERS_PREFIX)))
            mb_warn(0, "%s %s: the gateway has no op %s; it will answer 501", r->method, r->path,
                    r->op);
    }
    if (!self->probe_service)
        self->probe_service = mb_strdup("gateway");
    mb_debug(0, "%zu routes loaded", gw_routes_size(self->routes));
    return 0;
}

/*  Loads the JWT secret. No secret at all is not fatal (public routes
    still work; the others answer 503), a secret that cannot be read or is
    too short is. */
static int s_setup_auth(s_self_t *self)
{
    mb_jwt_key_t *key = NULL;
    int rc = mb_jwt_key_load(self->jwt_secret_file, &key);
    if (rc && rc != MB_ENOTFOUND)
        return rc; /* mb_jwt_key_load() said why */
    mb_jwt_policy_t policy;
    mb_jwt_policy_default(&policy);
    self->auth = gw_auth_new(&key, &policy, GW_JWT_CACHE_SLOTS);
    size_t guarded = 0;
    for (size_t i = 0; i < gw_routes_size(self->routes); i++)
        guarded += gw_routes_at(self->routes, i)->access != GW_ACCESS_PUBLIC;
    if (!gw_auth_has_key(self->auth) && guarded)
        mb_warn(0, "no JWT secret: the %zu routes that need an access token will answer 503",
                guarded);
    return 0;
}

/*  The media secret, and the folders /media/ and uploads use. No secret
    is not fatal (covers still work; signed URLs answer 503), a secret
    that cannot be read or is too short is. */
static int s_setup_media(s_self_t *self)
{
    int rc = mb_media_key_load(self->media_secret_file, &self->media_key);
    if (rc && rc != MB_ENOTFOUND)
        return rc; /* mb_media_key_load() said why */
    self->has_media_key = rc == 0;
    if (!self->has_media_key)
        mb_warn(0, "no media secret (MUSICBUS_MEDIA_SECRET[_FILE] or --media-secret-file): "
                   "signed /media/ URLs will answer 503");
    char path[4096];
    snprintf(path, sizeof path, "%s/blobs/hls", self->data_dir);
    self->hls_root = gw_media_root_new(path);
    snprintf(path, sizeof path, "%s/blobs", self->data_dir);
    self->blobs_root = gw_media_root_new(path);
    bool uploads = false;
    for (size_t i = 0; i < gw_routes_size(self->routes); i++)
        uploads |= gw_routes_at(self->routes, i)->upload;
    if (!uploads)
        return 0;
    snprintf(path, sizeof path, "%s/blobs", self->data_dir);
    if (mb_blob_store_open(path, &self->blobs)) {
        mb_warn(0, "no blob store in %s: uploads will answer 503", path);
        return 0;
    }
    /* Uploads a crashed gateway left half-written. */
    unsigned removed = 0;
    mb_blob_store_sweep(self->blobs, GW_UPLOAD_SWEEP_S, &removed);
    if (removed)
        mb_info(0, "removed %u unfinished upload(s) older than a day", removed);
    return 0;
}

/*  The spec text of budget `name`: its last --rate flag, else
    MUSICBUS_RATE_<NAME>, else the built-in default, else NULL. */
static const char *s_budget_text(const s_self_t *self, const char *name, char *from, size_t size)
{
    for (size_t i = self->n_given; i-- > 0;)
        if (!strcmp(self->given_name[i], name)) {
            snprintf(from, size, "flag");
            return self->given_spec[i];
        }
    char env[64];
    size_t n = (size_t)snprintf(env, sizeof env, "%s", GW_RATE_ENV_PREFIX);
    for (const char *p = name; *p && n + 1 < sizeof env; p++)
        env[n++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
    env[n] = '\0';
    const char *text = mb_config_env(env, NULL);
    if (text) {
        snprintf(from, size, "%s", env);
        return text;
    }
    for (size_t i = 0; i < sizeof s_builtin_budgets / sizeof s_builtin_budgets[0]; i++)
        if (!strcmp(s_builtin_budgets[i].name, name)) {
            snprintf(from, size, "default");
            return s_builtin_budgets[i].spec;
        }
    return NULL;
}

/*  Adds one budget to the limiter from its configuration. */
static int s_add_budget(s_self_t *self, const char *name)
{
    if (gw_rate_find(self->rate, name) >= 0)
        return 0;
    char from[64];
    const char *text = s_budget_text(self, name, from, sizeof from);
    if (!text) {
        mb_error(0,
                 "rate budget '%s' is named by a route but not configured: give --rate %s=SPEC "
                 "or %s<NAME>",
                 name, name, GW_RATE_ENV_PREFIX);
        return MB_EINVAL;
    }
    gw_rate_spec_t spec;
    char err[160];
    if (gw_rate_spec_parse(text, &spec, err, sizeof err)) {
        mb_error(0, "rate budget '%s' (%s): %s", name, from, err);
        return MB_EINVAL;
    }
    int id = gw_rate_budget(self->rate, name, &spec);
    if (id < 0) {
        mb_error(0, "rate budget '%s': %s", name, mb_strerror(id));
        return id;
    }
    mb_info(0, "rate budget %s: %s (%s)", name, text, from);
    return 0;
}

/*  Makes the limiter with budget "default" and every budget a route
    names. */
static int s_setup_rate(s_self_t *self)
{
    self->rate = gw_rate_new((size_t)self->rate_slots);
    int rc = s_add_budget(self, GW_BUDGET_DEFAULT);
    for (size_t i = 0; rc == 0 && i < gw_routes_size(self->routes); i++) {
        const gw_route_t *r = gw_routes_at(self->routes, i);
        if (r->rate_budget)
            rc = s_add_budget(self, r->rate_budget);
    }
    if (rc)
        return rc;
    self->budget_default = gw_rate_find(self->rate, GW_BUDGET_DEFAULT);
    for (size_t i = 0; i < self->n_given; i++)
        if (gw_rate_find(self->rate, self->given_name[i]) < 0)
            mb_warn(0, "--rate %s: no route uses this budget", self->given_name[i]);
    if (self->trust_proxy)
        mb_info(0, "--trust-proxy: anonymous clients are counted by X-Forwarded-For");
    return 0;
}

static unsigned s_conn_limit(void)
{
    struct rlimit rl;
    unsigned limit = GW_CONN_LIMIT;
    /* Leave descriptors for the epoll fds, ZeroMQ and the listener; raise
       the soft limit first when the hard one allows (the usual soft 1024
       would cap the gateway at ~960 connections). */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < (rlim_t)limit + 64) {
        rlim_t want = (rlim_t)limit + 64;
        if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want) {
            rl.rlim_cur = want;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        getrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < (rlim_t)limit + 64)
            limit = rl.rlim_cur > 128 ? (unsigned)rl.rlim_cur - 64 : 64;
    }
    return limit;
}

static int s_start(s_self_t *self)
{
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char host[256];
    if (s_resolve(self->http_addr, &addr, &addr_len, host, sizeof host)) {
        mb_error(0, "--http '%s' is not HOST:PORT", self->http_addr);
        return MB_EINVAL;
    }
    self->client = mb_client_new(self->bus);
    if (!self->client)
        return MB_EINVAL;
    /* Before MHD starts: its connection callback adds sockets to it. */
    self->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    unsigned conn_limit = s_conn_limit();
    self->pending = gw_pending_new(conn_limit);
    gw_ws_config_t ws_cfg;
    gw_ws_config_default(&ws_cfg);
    ws_cfg.bus = self->bus;
    self->ws = gw_ws_new(&ws_cfg, self->auth);
    if (!self->ws)
        return MB_EIO;
    unsigned flags =
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG;
    if (addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    self->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, s_on_request, self, MHD_OPTION_EXTERNAL_LOGGER, s_mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_LIMIT, conn_limit,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)GW_CONN_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)GW_CONN_MEMORY, MHD_OPTION_NOTIFY_COMPLETED,
        s_on_completed, self, MHD_OPTION_NOTIFY_CONNECTION, s_on_connection, self,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
        /* SIGPIPE is ignored (mb_signal_install()); without saying so MHD
           will not use sendfile(2) and copies media through 4 KiB sends. */
        MHD_OPTION_SIGPIPE_HANDLED_BY_APP, 1, MHD_OPTION_UNESCAPE_CALLBACK, s_unescape, NULL,
        MHD_OPTION_END);
    if (!self->daemon) {
        mb_error(0, "cannot listen on %s", self->http_addr);
        return MB_EIO;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(self->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    self->mhd_fd = info ? info->epoll_fd : -1;
    info = MHD_get_daemon_info(self->daemon, MHD_DAEMON_INFO_BIND_PORT);
    unsigned port = info ? info->port : 0;
    self->bus_fd = mb_client_fd(self->client);
    struct epoll_event mhd_ev = {.events = EPOLLIN, .data.u64 = S_EV_MHD};
    struct epoll_event bus_ev = {.events = EPOLLIN, .data.u64 = S_EV_BUS};
    struct epoll_event ws_ev = {.events = EPOLLIN, .data.u64 = S_EV_WS};
    if (self->mhd_fd < 0 || self->epoll_fd < 0 ||
        epoll_ctl(self->epoll_fd, EPOLL_CTL_ADD, self->mhd_fd, &mhd_ev) ||
        epoll_ctl(self->epoll_fd, EPOLL_CTL_ADD, self->bus_fd, &bus_ev) ||
        epoll_ctl(self->epoll_fd, EPOLL_CTL_ADD, gw_ws_fd(self->ws), &ws_ev)) {
        mb_error(0, "cannot set up the event loop: %s", strerror(errno));
        return MB_EIO;
    }
    mb_info(0,
            "listening on %s%s%s:%u, bus %s, timeout %ld ms, max body %ld bytes, max upload %lld "
            "bytes, data %s",
            strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", port, self->bus,
            self->timeout_ms, self->max_body, self->max_upload, self->data_dir);
    if (self->ready_file && s_write_ready_file(self->ready_file, host, port)) {
        mb_error(0, "cannot write --ready-file %s: %s", self->ready_file, strerror(errno));
        return MB_EIO;
    }
    return 0;
}

static void s_destroy(s_self_t *self)
{
    if (self->daemon)
        MHD_stop_daemon(self->daemon);
    gw_ws_destroy(&self->ws); /* after the daemon: it may hold upgrade responses of ours */
    if (self->epoll_fd >= 0)
        close(self->epoll_fd);
    mb_client_destroy(&self->client);
    mb_zmq_shutdown();
    gw_pending_destroy(&self->pending);
    gw_routes_destroy(&self->routes);
    gw_auth_destroy(&self->auth);
    gw_rate_destroy(&self->rate);
    gw_media_root_destroy(&self->hls_root);
    gw_media_root_destroy(&self->blobs_root);
    mb_blob_store_destroy(&self->blobs);
    sodium_memzero(&self->media_key, sizeof self->media_key);
    msgpack_sbuffer_destroy(&self->sbuf);
    free(self->outgoing);
    while (self->free_reqs) {
        s_req_t *next = self->free_reqs->next_free;
        gw_buf_free(&self->free_reqs->body);
        gw_buf_free(&self->free_reqs->out);
        free(self->free_reqs);
        self->free_reqs = next;
    }
    free(self->http_addr);
    free(self->bus);
    free(self->schema_file);
    free(self->ready_file);
    free(self->jwt_secret_file);
    free(self->media_secret_file);
    free(self->data_dir);
    for (size_t i = 0; i < self->n_given; i++)
        free((char *)self->given_name[i]);
    free(self->probe_service);
}

int main(int argc, char **argv)
{
    s_self_t self = {.epoll_fd = -1};
    mb_log_init("gateway");
    int rc = s_parse_args(&self, argc, argv);
    if (rc) {
        s_destroy(&self);
        return rc > 0 ? 0 : 2;
    }
    /* SIGTERM/SIGINT stay blocked except inside epoll_pwait, so a stop
       request can never slip in between checking the flag and sleeping.
       Blocked before ZeroMQ starts its threads, which inherit the mask. */
    mb_signal_install();
    sigset_t stop_signals, wait_mask;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigprocmask(SIG_BLOCK, &stop_signals, &wait_mask);
    sigdelset(&wait_mask, SIGTERM);
    sigdelset(&wait_mask, SIGINT);

    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != sizeof seed)
        seed = (uint64_t)getpid() << 16 ^ (uint64_t)s_now_us();
    /* Random high bits tell apart the rids of several gateways in the
       logs; the low 32 count. */
    self.next_rid = seed & 0xffffffff00000000ull;
    msgpack_sbuffer_init(&self.sbuf);

    if (s_load_routes(&self) || s_setup_auth(&self) || s_setup_media(&self) ||
        s_setup_rate(&self) || s_start(&self)) {
        s_destroy(&self);
        return 1;
    }
    rc = s_run(&self, &wait_mask);
    mb_info(0, "stopped");
    s_destroy(&self);
    return rc;
}
