/*  bus — the service "bus": bus.publish and bus.fetch (see bus.h). */
#include "bus.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "event_log.h"
#include "mb_alloc.h"
#include "mb_envelope.h"
#include "mb_error.h"
#include "mb_events.h"
#include "mb_log.h"
#include "mb_msgpack.h"

/*  Bounds on what clients can make the bus hold. */
#define S_MAX_PENDING 10000              /* publish requests waiting for the disk */
#define S_MAX_PENDING_BYTES (512u << 20) /* their events' bytes */
#define S_MAX_PARKED 10000               /* fetches waiting for events */
#define S_MAX_TOPICS 64                  /* topics in one fetch */

#define S_DEFAULT_MAX 1000        /* events per fetch when `max` is absent */
#define S_SCAN_LIMIT 100000       /* events one fetch looks at, matching or not */
#define S_REPLY_BYTES (16u << 20) /* a fetch stops adding events past this */

/*  A publish waiting for its commit. */
typedef struct {
    zmq_msg_t client;
    uint64_t rid;
    bool batch_form; /* answered {first, count} rather than {seq} */
    event_batch_t *batch;
} s_publish_t;

/*  A fetch: its request, decoded, and where it has got to. */
typedef struct {
    zmq_msg_t client;
    mb_request_t *request; /* decoded; the filter borrows its strings */
    const char **topics;
    size_t *topic_lens;
    event_filter_t filter;
    uint64_t from;
    size_t max;
    int64_t deadline;  /* when a parked fetch is answered empty */
    size_t heap_index; /* in the parked heap */
} s_fetch_t;

struct bus {
    event_log_t *log;
    bus_reply_fn *reply;
    void *reply_arg;
    int timeout_ms;
    msgpack_sbuffer sbuf; /* the reply being packed */
    size_t pending;       /* publishes submitted, not yet answered */
    size_t pending_bytes;
    s_fetch_t **parked; /* min-heap on deadline */
    size_t n_parked;
    size_t parked_cap;
    s_fetch_t **scratch; /* a copy of `parked` to walk while it changes */
    bus_stats_t stats;
};

/* ---- replies ------------------------------------------------------------- */

static msgpack_packer s_packer(bus_t *self)
{
    msgpack_sbuffer_clear(&self->sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &self->sbuf, msgpack_sbuffer_write);
    return pk;
}

static void s_send(bus_t *self, zmq_msg_t *client)
{
    self->reply(self->reply_arg, client, self->sbuf.data, self->sbuf.size);
}

static void s_error(bus_t *self, zmq_msg_t *client, uint64_t rid, int status, const char *code,
                    const char *field, const char *fmt, ...) __attribute__((format(printf, 7, 8)));

static void s_error(bus_t *self, zmq_msg_t *client, uint64_t rid, int status, const char *code,
                    const char *field, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    msgpack_packer pk = s_packer(self);
    mb_reply_pack_error(&pk, rid, status, code, field, message);
    s_send(self, client);
    self->stats.errors++;
}

/* ---- the parked heap ------------------------------------------------------ */

static void s_heap_swap(bus_t *self, size_t a, size_t b)
{
    s_fetch_t *tmp = self->parked[a];
    self->parked[a] = self->parked[b];
    self->parked[b] = tmp;
    self->parked[a]->heap_index = a;
    self->parked[b]->heap_index = b;
}

static void s_heap_up(bus_t *self, size_t i)
{
    while (i > 0 && self->parked[i]->deadline < self->parked[(i - 1) / 2]->deadline) {
        s_heap_swap(self, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void s_heap_down(bus_t *self, size_t i)
{
    for (;;) {
        size_t least = i, left = 2 * i + 1, right = 2 * i + 2;
        if (left < self->n_parked && self->parked[left]->deadline < self->parked[least]->deadline)
            least = left;
        if (right < self->n_parked && self->parked[right]->deadline < self->parked[least]->deadline)
            least = right;
        if (least == i)
            return;
        s_heap_swap(self, i, least);
        i = least;
    }
}

static void s_park(bus_t *self, s_fetch_t *fetch)
{
    if (self->n_parked == self->parked_cap) {
        self->parked_cap = self->parked_cap ? self->parked_cap * 2 : 64;
        self->parked = mb_realloc(self->parked, self->parked_cap * sizeof *self->parked);
        self->scratch = mb_realloc(self->scratch, self->parked_cap * sizeof *self->scratch);
    }
    fetch->heap_index = self->n_parked;
    self->parked[self->n_parked++] = fetch;
    s_heap_up(self, fetch->heap_index);
}

static void s_unpark(bus_t *self, s_fetch_t *fetch)
{
    size_t i = fetch->heap_index;
    self->n_parked--;
    if (i == self->n_parked)
        return;
    self->parked[i] = self->parked[self->n_parked];
    self->parked[i]->heap_index = i;
    s_heap_up(self, i);
    s_heap_down(self, i);
}

/* ---- fetches --------------------------------------------------------------- */

static void s_fetch_destroy(s_fetch_t **fetch_p)
{
    s_fetch_t *fetch = *fetch_p;
    if (!fetch)
        return;
    zmq_msg_close(&fetch->client);
    if (fetch->request) {
        mb_request_release(fetch->request);
        free(fetch->request);
    }
    free(fetch->topics);
    free(fetch->topic_lens);
    free(fetch);
    *fetch_p = NULL;
}

/*  Runs the fetch against the log and answers it, unless it found nothing
    at the head of the log and `may_wait`: then it notes how far it got and
    returns false (not answered). */
static bool s_fetch_try(bus_t *self, s_fetch_t *fetch, bool may_wait)
{
    uint64_t rid = fetch->request->rid;
    msgpack_packer pk = s_packer(self);
    mb_reply_pack_head(&pk, rid, 200);
    event_fetch_t got;
    int rc = event_log_fetch(self->log, &fetch->filter, fetch->from, fetch->max, S_SCAN_LIMIT,
                             S_REPLY_BYTES, &pk, &got);
    if (rc == MB_ENOTFOUND) {
        /* The oldest retained seq goes in the message and, for programs,
           in the error map as "oldest" (unknown keys are ignored). */
        char message[160];
        snprintf(message, sizeof message,
                 "events before seq %llu are gone (retention); oldest retained seq is %llu",
                 (unsigned long long)got.oldest, (unsigned long long)got.oldest);
        pk = s_packer(self);
        msgpack_pack_map(&pk, 3);
        mb_pack_cstr(&pk, "rid");
        msgpack_pack_uint64(&pk, rid);
        mb_pack_cstr(&pk, "status");
        msgpack_pack_int(&pk, 410);
        mb_pack_cstr(&pk, "error");
        msgpack_pack_map(&pk, 4);
        mb_pack_cstr(&pk, "code");
        mb_pack_cstr(&pk, "retention_gap");
        mb_pack_cstr(&pk, "message");
        mb_pack_cstr(&pk, message);
        mb_pack_cstr(&pk, "field");
        mb_pack_cstr(&pk, "from");
        mb_pack_cstr(&pk, "oldest");
        msgpack_pack_uint64(&pk, got.oldest);
        s_send(self, &fetch->client);
        self->stats.errors++;
        return true;
    }
    if (rc != 0) {
        s_error(self, &fetch->client, rid, 500, "storage_error", NULL, "the event log failed");
        return true;
    }
    if (got.count == 0 && got.at_head && may_wait) {
        fetch->from = got.next;
        return false;
    }
    s_send(self, &fetch->client);
    self->stats.fetches++;
    return true;
}

static bool s_topic_ok(const msgpack_object *o, const char **s, size_t *len, bool empty_ok)
{
    return mb_obj_str(o, s, len) && ((empty_ok && *len == 0) || mb_topic_valid(*s, *len));
}

/*  Reads an optional unsigned argument in [min, max]; false when present
    and not such a number. */
static bool s_uint_arg(const msgpack_object *args, const char *name, uint64_t min, uint64_t max,
                       uint64_t *out)
{
    const msgpack_object *o = mb_map_get(args, name);
    if (!o)
        return true;
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 < min || o->via.u64 > max)
        return false;
    *out = o->via.u64;
    return true;
}

/*  bus.fetch: takes `request`. */
static void s_handle_fetch(bus_t *self, zmq_msg_t *client, mb_request_t *request, int64_t now)
{
    s_fetch_t *fetch = mb_calloc(1, sizeof *fetch);
    zmq_msg_init(&fetch->client);
    zmq_msg_move(&fetch->client, client);
    fetch->request = request;
    const msgpack_object *args = request->args;
    const msgpack_object *topics = mb_map_get(args, "topics");
    const msgpack_object *prefix = mb_map_get(args, "prefix");
    uint64_t from = 0, max = S_DEFAULT_MAX, wait = 0;
    uint64_t rid = request->rid;
    if (!topics == !prefix) {
        s_error(self, &fetch->client, rid, 400, "bad_request", "topics",
                "give either topics (a list) or prefix (a string)");
        goto done;
    }
    if (topics) {
        size_t n = topics->type == MSGPACK_OBJECT_ARRAY ? topics->via.array.size : 0;
        if (n == 0 || n > S_MAX_TOPICS) {
            s_error(self, &fetch->client, rid, 400, "bad_request", "topics",
                    "topics must be a list of 1..%d topics", S_MAX_TOPICS);
            goto done;
        }
        fetch->topics = mb_calloc(n, sizeof *fetch->topics);
        fetch->topic_lens = mb_calloc(n, sizeof *fetch->topic_lens);
        for (size_t i = 0; i < n; i++)
            if (!s_topic_ok(&topics->via.array.ptr[i], &fetch->topics[i], &fetch->topic_lens[i],
                            false)) {
                char field[32];
                snprintf(field, sizeof field, "topics[%zu]", i);
                s_error(self, &fetch->client, rid, 400, "bad_request", field,
                        "a topic is 1..%d bytes of a-z 0-9 . _ -", MB_TOPIC_MAX);
                goto done;
            }
        fetch->filter.n_topics = n;
        fetch->filter.topics = fetch->topics;
        fetch->filter.topic_lens = fetch->topic_lens;
    } else if (!s_topic_ok(prefix, &fetch->filter.prefix, &fetch->filter.prefix_len, true)) {
        s_error(self, &fetch->client, rid, 400, "bad_request", "prefix",
                "a prefix is 0..%d bytes of a-z 0-9 . _ -", MB_TOPIC_MAX);
        goto done;
    }
    if (!s_uint_arg(args, "from", 0, UINT64_MAX, &from)) {
        s_error(self, &fetch->client, rid, 400, "bad_request", "from",
                "from is a sequence number (0: the start of the log)");
        goto done;
    }
    if (!s_uint_arg(args, "max", 1, MB_FETCH_MAX, &max)) {
        s_error(self, &fetch->client, rid, 400, "bad_request", "max", "max is 1..%d", MB_FETCH_MAX);
        goto done;
    }
    if (!s_uint_arg(args, "wait", 0, MB_FETCH_WAIT_MAX, &wait)) {
        s_error(self, &fetch->client, rid, 400, "bad_request", "wait", "wait is 0..%d ms",
                MB_FETCH_WAIT_MAX);
        goto done;
    }
    fetch->from = from;
    fetch->max = (size_t)max;
    /* The client gives up at its ttl (or the broker's default deadline):
       the wait ends no later. */
    int64_t limit = request->ttl_ms ? (int64_t)request->ttl_ms : self->timeout_ms;
    fetch->deadline = now + ((int64_t)wait < limit ? (int64_t)wait : limit);
    bool may_wait = wait > 0 && fetch->deadline > now;
    if (s_fetch_try(self, fetch, may_wait && self->n_parked < S_MAX_PARKED))
        goto done;
    s_park(self, fetch);
    return;
done:
    s_fetch_destroy(&fetch);
}

/* ---- publishes -------------------------------------------------------------- */

typedef struct {
    int status;
    const char *code;
    char field[48];
    char message[160];
} s_refusal_t;

static uint64_t s_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*  Adds the event `event` ({topic, key, data}) to `batch`. Returns true,
    or false with *why filled; `where` prefixes the field ("events[3]."). */
static bool s_add_event(event_batch_t *batch, const msgpack_object *event, uint64_t time_ms,
                        const char *where, s_refusal_t *why)
{
    const char *topic, *key = "";
    size_t topic_len, key_len = 0;
    const msgpack_object *key_obj = mb_map_get(event, "key");
    const msgpack_object *data = mb_map_get(event, "data");
    why->status = 400;
    why->code = "bad_request";
    if (!event || event->type != MSGPACK_OBJECT_MAP) {
        snprintf(why->field, sizeof why->field, "%.*s", (int)strlen(where) - 1, where);
        snprintf(why->message, sizeof why->message, "an event is a map {topic, key, data}");
        return false;
    }
    if (!s_topic_ok(mb_map_get(event, "topic"), &topic, &topic_len, false)) {
        snprintf(why->field, sizeof why->field, "%stopic", where);
        snprintf(why->message, sizeof why->message, "a topic is 1..%d bytes of a-z 0-9 . _ -",
                 MB_TOPIC_MAX);
        return false;
    }
    if (key_obj && (!mb_obj_str(key_obj, &key, &key_len) || key_len > MB_EVENT_KEY_MAX)) {
        snprintf(why->field, sizeof why->field, "%skey", where);
        snprintf(why->message, sizeof why->message, "a key is a string of 0..%d bytes",
                 MB_EVENT_KEY_MAX);
        return false;
    }
    if (!data) {
        snprintf(why->field, sizeof why->field, "%sdata", where);
        snprintf(why->message, sizeof why->message, "data is required (any msgpack, nil too)");
        return false;
    }
    size_t data_at, used;
    event_batch_add(batch, topic, topic_len, key, key_len, time_ms, data, &data_at);
    size_t data_len = batch->values.size - data_at;
    const char *problem = NULL;
    if (data_len > MB_EVENT_DATA_MAX) {
        why->status = 413;
        why->code = "too_large";
        problem = "data is larger than 1 MiB";
    } else if (mb_msgpack_skip(batch->values.data + data_at, data_len, MB_EVENT_DATA_DEPTH,
                               &used) != 0) {
        /* A fetch reply wraps data four levels deeper; past this it could
           not be decoded by consumers. */
        problem = "data is nested too deep";
    }
    if (problem) {
        event_batch_drop_last(batch);
        snprintf(why->field, sizeof why->field, "%sdata", where);
        snprintf(why->message, sizeof why->message, "%s", problem);
        return false;
    }
    return true;
}

/*  bus.publish: frees `request`. */
static void s_handle_publish(bus_t *self, zmq_msg_t *client, mb_request_t *request)
{
    uint64_t rid = request->rid;
    const msgpack_object *args = request->args;
    const msgpack_object *events = mb_map_get(args, "events");
    event_batch_t *batch = event_batch_new(NULL);
    uint64_t time_ms = s_wall_ms();
    s_refusal_t why;
    bool ok = true;
    if (events) {
        size_t n = events->type == MSGPACK_OBJECT_ARRAY ? events->via.array.size : 0;
        if (n == 0 || n > MB_PUBLISH_BATCH_MAX) {
            why = (s_refusal_t){400, "bad_request", "events", ""};
            snprintf(why.message, sizeof why.message, "events is a list of 1..%d events",
                     MB_PUBLISH_BATCH_MAX);
            ok = false;
        }
        for (size_t i = 0; ok && i < n; i++) {
            char where[32];
            snprintf(where, sizeof where, "events[%zu].", i);
            ok = s_add_event(batch, &events->via.array.ptr[i], time_ms, where, &why);
        }
    } else {
        ok = s_add_event(batch, args ? args : &(msgpack_object){.type = MSGPACK_OBJECT_MAP},
                         time_ms, "", &why);
    }
    if (!ok) {
        s_error(self, client, rid, why.status, why.code, why.field[0] ? why.field : NULL, "%s",
                why.message);
    } else if (self->pending >= S_MAX_PENDING ||
               self->pending_bytes + batch->values.size > S_MAX_PENDING_BYTES) {
        s_error(self, client, rid, 503, "overloaded", NULL,
                "too many events are waiting for the disk");
    } else {
        s_publish_t *publish = mb_calloc(1, sizeof *publish);
        zmq_msg_init(&publish->client);
        zmq_msg_move(&publish->client, client);
        publish->rid = rid;
        publish->batch_form = events != NULL;
        publish->batch = batch;
        batch->owner = publish;
        if (event_log_submit(self->log, batch) == 0) {
            self->pending++;
            self->pending_bytes += batch->values.size;
            batch = NULL;
        } else {
            s_error(self, &publish->client, rid, 503, "unavailable", NULL,
                    "the event log is stopping");
            zmq_msg_close(&publish->client);
            free(publish);
        }
    }
    event_batch_destroy(&batch);
    mb_request_release(request);
    free(request);
}

/*  Answers a publish the writer has finished with, and frees it. */
static void s_publish_done(bus_t *self, s_publish_t *publish)
{
    event_batch_t *batch = publish->batch;
    self->pending--;
    self->pending_bytes -= batch->values.size;
    if (batch->status == 0) {
        msgpack_packer pk = s_packer(self);
        mb_reply_pack_head(&pk, publish->rid, 201);
        if (publish->batch_form) {
            msgpack_pack_map(&pk, 2);
            mb_pack_cstr(&pk, "first");
            msgpack_pack_uint64(&pk, batch->first);
            mb_pack_cstr(&pk, "count");
            msgpack_pack_uint64(&pk, batch->count);
        } else {
            msgpack_pack_map(&pk, 1);
            mb_pack_cstr(&pk, "seq");
            msgpack_pack_uint64(&pk, batch->first);
        }
        s_send(self, &publish->client);
        self->stats.publishes++;
        self->stats.events += batch->count;
    } else if (batch->status == MB_EFULL) {
        s_error(self, &publish->client, publish->rid, 507, "storage_full", NULL,
                "the event log is full");
    } else {
        s_error(self, &publish->client, publish->rid, 500, "storage_error", NULL,
                "the event log failed to write");
    }
    zmq_msg_close(&publish->client);
    event_batch_destroy(&publish->batch);
    free(publish);
}

/* ---- the interface ------------------------------------------------------ */

bus_t *bus_new(const bus_opts_t *opts, bus_reply_fn *reply, void *arg)
{
    event_log_opts_t log_opts = {.dir = opts->dir,
                                 .map_size = opts->map_size,
                                 .retention_ms = opts->retention_ms,
                                 .retention_bytes = opts->retention_bytes};
    event_log_t *log = event_log_new(&log_opts);
    if (!log)
        return NULL;
    bus_t *self = mb_calloc(1, sizeof *self);
    self->log = log;
    self->reply = reply;
    self->reply_arg = arg;
    self->timeout_ms = opts->timeout_ms;
    msgpack_sbuffer_init(&self->sbuf);
    mb_info(0, "event log in %s: head seq %llu", opts->dir,
            (unsigned long long)event_log_head(log));
    return self;
}

void bus_destroy(bus_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    bus_t *self = *self_p;
    /* Everything submitted is committed before the writer ends; answer it
       all, then whoever waits. */
    event_log_stop(self->log);
    bus_process(self);
    while (self->n_parked > 0) {
        s_fetch_t *fetch = self->parked[0];
        s_unpark(self, fetch);
        s_fetch_try(self, fetch, false);
        s_fetch_destroy(&fetch);
    }
    event_log_destroy(&self->log);
    msgpack_sbuffer_destroy(&self->sbuf);
    free(self->parked);
    free(self->scratch);
    free(self);
    *self_p = NULL;
}

void bus_request(bus_t *self, zmq_msg_t *client, zmq_msg_t *body, size_t n_body, int64_t now)
{
    if (n_body != 1) {
        s_error(self, client, 0, 400, "bad_request", NULL,
                "a bus request is one msgpack envelope in one frame");
        return;
    }
    const void *data = zmq_msg_data(&body[0]);
    size_t size = zmq_msg_size(&body[0]);
    mb_request_t *request = mb_malloc(sizeof *request);
    const char *why = NULL;
    if (mb_request_decode(request, data, size, &why) != 0) {
        free(request);
        uint64_t rid = 0;
        uint32_t ttl;
        mb_request_peek(data, size, &rid, &ttl);
        s_error(self, client, rid, 400, "bad_request", NULL, "%s", why ? why : "malformed");
        return;
    }
    if (request->op_len == strlen("bus.publish") &&
        memcmp(request->op, "bus.publish", request->op_len) == 0) {
        s_handle_publish(self, client, request);
    } else if (request->op_len == strlen("bus.fetch") &&
               memcmp(request->op, "bus.fetch", request->op_len) == 0) {
        s_handle_fetch(self, client, request, now);
    } else {
        s_error(self, client, request->rid, 404, "unknown_op", NULL, "the bus has no op '%.*s'",
                (int)request->op_len, request->op);
        mb_request_release(request);
        free(request);
    }
}

void *bus_socket(bus_t *self)
{
    return event_log_socket(self->log);
}

void bus_process(bus_t *self)
{
    event_batch_t *list;
    bool committed = false;
    while (event_log_completed(self->log, &list) == 0) {
        while (list) {
            event_batch_t *next = list->next;
            committed |= list->status == 0;
            s_publish_done(self, list->owner);
            list = next;
        }
    }
    if (!committed || self->n_parked == 0)
        return;
    /* Answering unparks: walk a copy of the set. */
    size_t n = self->n_parked;
    memcpy(self->scratch, self->parked, n * sizeof *self->scratch);
    for (size_t i = 0; i < n; i++) {
        s_fetch_t *fetch = self->scratch[i];
        if (!s_fetch_try(self, fetch, true))
            continue; /* nothing for it yet: stays parked, further on */
        s_unpark(self, fetch);
        s_fetch_destroy(&fetch);
    }
}

int64_t bus_next_deadline(bus_t *self)
{
    return self->n_parked ? self->parked[0]->deadline : INT64_MAX;
}

void bus_expire(bus_t *self, int64_t now)
{
    while (self->n_parked > 0 && self->parked[0]->deadline <= now) {
        s_fetch_t *fetch = self->parked[0];
        s_unpark(self, fetch);
        s_fetch_try(self, fetch, false);
        s_fetch_destroy(&fetch);
    }
}

void bus_stats(bus_t *self, bus_stats_t *stats)
{
    *stats = self->stats;
    stats->parked = self->n_parked;
    stats->pruned = event_log_pruned(self->log);
}
