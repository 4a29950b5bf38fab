/*  mb_events — durable event streams: publish, fetch, outbox, consumer groups. */
#include "mb_events.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "mb_alloc.h"
#include "mb_client.h"
#include "mb_config.h"
#include "mb_error.h"
#include "mb_log.h"
#include "mb_msgpack.h"
#include "mb_signal.h"

#define S_SERVICE "bus"
#define S_OUTBOX_DB "_outbox"
#define S_OFFSETS_DB "_offsets"
#define S_OFFSET_SIZE 16                /* next, skipped: two big-endian uint64 */
#define S_POLL_SLICE_MS 100             /* how often a wait looks at the stop flags */
#define S_TOPICS_MAX 64                 /* topics in one fetch */
#define S_OUTBOX_BATCH 1000             /* outbox events per bus.publish */
#define S_OUTBOX_BATCH_BYTES (4u << 20) /* ... and bytes, unless one event is larger */
#define S_CONSUMER_WAIT_MS 1000         /* long poll of mb_consumer_run() */
#define S_CONSUMER_BATCH 1000           /* default events per fetch */
#define S_IDLE_OFFSET_MS 500            /* how often an idle consumer stores how far it scanned */
#define S_NOT_YET_MS 100                /* pause before retrying an event applied "not yet" */
#define S_BACKOFF_MIN_MS 100
#define S_BACKOFF_MAX_MS 5000
#define S_ERROR_MAX 512 /* bytes of error text kept */

struct mb_events {
    mb_client_t *client;     /* DEALER to the broker */
    uint64_t rid;            /* rid of the last request */
    int timeout_ms;          /* answer deadline, beyond a fetch's wait */
    const atomic_bool *stop; /* also stops interruptible waits (a consumer's flag), or NULL */
    char error[S_ERROR_MAX]; /* why the last call failed, "" after a success */
};

struct mb_consumer {
    const mb_consumer_def_t *def; /* borrowed */
    MDB_env *env;                 /* borrowed */
    void *state;                  /* handed to apply */
    mb_events_t *events;          /* our own connection */
    MDB_dbi offsets;              /* "_offsets" */
    uint64_t known_next;          /* no matching event below this (learnt from replies) */
    int64_t idle_stored_at;       /* when an empty batch's next was last stored (monotonic ms) */
    atomic_bool stop;             /* mb_consumer_stop() */
    mb_consumer_stats_t stats;
    char why[S_ERROR_MAX]; /* set by mb_event_invalid() during apply */
};

/* ---- small helpers --------------------------------------------------- */

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void s_put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t s_get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/*  Maps an LMDB result to ours. */
static int s_db_rc(int mdb_rc)
{
    if (mdb_rc == 0)
        return 0;
    return mdb_rc == MDB_MAP_FULL ? MB_EFULL : MB_EDB;
}

static bool s_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

static bool s_name_valid(const char *s, size_t len, size_t min, size_t max)
{
    if (!s || len < min || len > max)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!s_name_char(s[i]))
            return false;
    return true;
}

bool mb_topic_valid(const char *s, size_t len)
{
    return s_name_valid(s, len, 1, MB_TOPIC_MAX);
}

static void s_set_error(mb_events_t *self, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void s_set_error(mb_events_t *self, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(self->error, sizeof self->error, fmt, args);
    va_end(args);
}

/*  Checks one event to publish; sets the reason in self->error (when
    self is given). */
static int s_check_event(mb_events_t *self, const char *topic, const char *key, const void *data,
                         size_t data_len)
{
    char why[128] = "";
    int rc = 0;
    size_t used = 0;
    if (!topic || !mb_topic_valid(topic, strlen(topic))) {
        snprintf(why, sizeof why, "topic must be 1..%d bytes of a-z 0-9 . _ -", MB_TOPIC_MAX);
        rc = MB_EINVAL;
    } else if (key && strlen(key) > MB_EVENT_KEY_MAX) {
        snprintf(why, sizeof why, "key longer than %d bytes", MB_EVENT_KEY_MAX);
        rc = MB_EINVAL;
    } else if (!data || data_len == 0) {
        snprintf(why, sizeof why, "data is empty");
        rc = MB_EINVAL;
    } else if (data_len > MB_EVENT_DATA_MAX) {
        snprintf(why, sizeof why, "data larger than %d bytes", MB_EVENT_DATA_MAX);
        rc = MB_ETOOBIG;
    } else if (mb_msgpack_skip(data, data_len, MB_EVENT_DATA_DEPTH, &used) != 0 ||
               used != data_len) {
        snprintf(why, sizeof why, "data is not exactly one msgpack object nested at most %d deep",
                 MB_EVENT_DATA_DEPTH);
        rc = MB_EINVAL;
    }
    if (rc && self)
        s_set_error(self, "%s", why);
    else if (rc)
        mb_error(0, "event refused: %s", why);
    return rc;
}

/*  Packs {topic, key, data}: one event as bus.publish takes it. */
static void s_pack_event(msgpack_packer *pk, const char *topic, const char *key, const void *data,
                         size_t data_len)
{
    msgpack_pack_map(pk, 3);
    mb_pack_cstr(pk, "topic");
    mb_pack_cstr(pk, topic);
    mb_pack_cstr(pk, "key");
    mb_pack_cstr(pk, key ? key : "");
    mb_pack_cstr(pk, "data");
    mb_pack_raw(pk, data, data_len);
}

/* ---- calls to the broker ------------------------------------------------ */

mb_events_t *mb_events_new(const char *endpoint)
{
    mb_client_t *client = mb_client_new(endpoint);
    if (!client)
        return NULL;
    mb_events_t *self = mb_calloc(1, sizeof *self);
    self->client = client;
    self->timeout_ms =
        (int)mb_config_env_long(MB_ENV_TIMEOUT_MS, MB_DEFAULT_TIMEOUT_MS, 1, 3600000);
    return self;
}

void mb_events_destroy(mb_events_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    mb_client_destroy(&(*self_p)->client);
    free(*self_p);
    *self_p = NULL;
}

void mb_events_set_timeout(mb_events_t *self, int timeout_ms)
{
    if (timeout_ms > 0)
        self->timeout_ms = timeout_ms;
}

const char *mb_events_error(mb_events_t *self)
{
    return self->error;
}

static bool s_stopping(mb_events_t *self)
{
    return mb_signal_stop_requested() || (self->stop && atomic_load(self->stop));
}

/*  Waits for `events` on the socket until `deadline`. An interruptible
    wait also ends, with MB_EINTR, when a stop is asked for; it looks every
    S_POLL_SLICE_MS, because the signal may have gone to another thread. */
static int s_wait(mb_events_t *self, short events, int64_t deadline, bool interruptible)
{
    void *socket = mb_client_socket(self->client);
    for (;;) {
        if (interruptible && s_stopping(self))
            return MB_EINTR;
        int64_t left = deadline - s_now_ms();
        if (left <= 0)
            return MB_ETIMEDOUT;
        zmq_pollitem_t item = {.socket = socket, .events = events};
        int rc = zmq_poll(&item, 1, left < S_POLL_SLICE_MS ? (long)left : S_POLL_SLICE_MS);
        if (rc < 0 && errno != EINTR)
            return MB_EIO;
        if (rc > 0 && (item.revents & events))
            return 0;
    }
}

/*  Sends `request` (rid `rid`) to "bus" and waits for its reply until
    `timeout_ms`, into *rep (caller releases on success). Replies with
    another rid are late answers to calls that timed out: dropped. */
static int s_call(mb_events_t *self, const msgpack_sbuffer *request, uint64_t rid, int timeout_ms,
                  bool interruptible, mb_reply_t *rep)
{
    int64_t deadline = s_now_ms() + timeout_ms;
    int rc;
    /* The client socket is ZMQ_IMMEDIATE: sends fail until the broker is
       connected. Wait for that within the same deadline. */
    while ((rc = mb_client_send(self->client, S_SERVICE, request->data, request->size)) ==
           MB_EAGAIN) {
        if ((rc = s_wait(self, ZMQ_POLLOUT, deadline, interruptible)) != 0)
            break;
    }
    if (rc) {
        s_set_error(self, "cannot send to the broker: %s", mb_strerror(rc));
        return rc;
    }
    for (;;) {
        zmq_msg_t body;
        rc = mb_client_recv(self->client, &body);
        if (rc == MB_EAGAIN || rc == MB_EPROTO) {
            if ((rc = s_wait(self, ZMQ_POLLIN, deadline, interruptible)) != 0) {
                s_set_error(self, "no answer from the broker: %s", mb_strerror(rc));
                return rc;
            }
            continue;
        }
        if (rc) {
            s_set_error(self, "receiving from the broker: %s", mb_strerror(rc));
            return rc;
        }
        const char *why = NULL;
        rc = mb_reply_decode(rep, zmq_msg_data(&body), zmq_msg_size(&body), &why);
        zmq_msg_close(&body);
        if (rc) {
            mb_warn(0, "events: dropped a malformed reply from the broker: %s", why);
            continue;
        }
        if (rep->rid == rid)
            return 0;
        mb_debug(0, "events: dropped a late reply (rid %llu, waiting for %llu)",
                 (unsigned long long)rep->rid, (unsigned long long)rid);
        mb_reply_release(rep);
    }
}

/*  Turns a reply's status into our code; an error reply's text goes to
    self->error. */
static int s_status(mb_events_t *self, const mb_reply_t *rep)
{
    if (rep->status >= 200 && rep->status < 300 && !rep->code)
        return 0;
    if (rep->code)
        s_set_error(self, "%d %.*s: %.*s", rep->status, (int)rep->code_len, rep->code,
                    (int)rep->message_len, rep->message ? rep->message : "");
    else
        s_set_error(self, "%d without an error", rep->status);
    switch (rep->status) {
    case 410:
        return MB_ENOTFOUND;
    case 413:
        return MB_ETOOBIG;
    case 503:
        return MB_EAGAIN;
    case 504:
        return MB_ETIMEDOUT;
    case 507:
        return MB_EFULL;
    default:
        if (rep->status >= 200 && rep->status < 300)
            return MB_EPROTO;
        return rep->status >= 400 && rep->status < 500 ? MB_EINVAL : MB_EIO;
    }
}

static bool s_uint(const msgpack_object *o, uint64_t *out)
{
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *out = o->via.u64;
    return true;
}

/*  Starts a request {op, rid, ttl, args: {n_args entries...}} into `buf`;
    the caller packs the args' entries. Returns the rid. */
static uint64_t s_request_head(mb_events_t *self, msgpack_sbuffer *buf, msgpack_packer *pk,
                               const char *op, uint32_t ttl_ms, uint32_t n_args)
{
    msgpack_sbuffer_init(buf);
    msgpack_packer_init(pk, buf, msgpack_sbuffer_write);
    uint64_t rid = ++self->rid;
    mb_request_pack_head(pk, op, rid, ttl_ms, 1);
    mb_pack_cstr(pk, "args");
    msgpack_pack_map(pk, n_args);
    return rid;
}

/*  Publishes `count` events already packed one after another in
    `events` (`size` bytes) and sets *first. */
static int s_publish_packed(mb_events_t *self, const void *events, size_t size, size_t count,
                            uint64_t *first)
{
    msgpack_sbuffer buf;
    msgpack_packer pk;
    uint64_t rid = s_request_head(self, &buf, &pk, "bus.publish", (uint32_t)self->timeout_ms, 1);
    mb_pack_cstr(&pk, "events");
    msgpack_pack_array(&pk, count);
    mb_pack_raw(&pk, events, size);
    mb_reply_t rep;
    /* Not interruptible: the request is usually on its way, and giving up
       on it would only make the caller publish it again. */
    int rc = s_call(self, &buf, rid, self->timeout_ms, false, &rep);
    msgpack_sbuffer_destroy(&buf);
    if (rc)
        return rc;
    rc = s_status(self, &rep);
    uint64_t got_first = 0, got_count = 0;
    if (rc == 0 && (!s_uint(mb_map_get(rep.body, "first"), &got_first) ||
                    !s_uint(mb_map_get(rep.body, "count"), &got_count) || got_count != count)) {
        s_set_error(self, "bus.publish answer lacks first/count for %zu events", count);
        rc = MB_EPROTO;
    }
    mb_reply_release(&rep);
    if (rc == 0) {
        self->error[0] = '\0';
        if (first)
            *first = got_first;
    }
    return rc;
}

int mb_events_publish(mb_events_t *self, const char *topic, const char *key, const void *data,
                      size_t data_len, uint64_t *seq)
{
    int rc = s_check_event(self, topic, key, data, data_len);
    if (rc)
        return rc;
    msgpack_sbuffer buf;
    msgpack_packer pk;
    uint64_t rid = s_request_head(self, &buf, &pk, "bus.publish", (uint32_t)self->timeout_ms, 3);
    mb_pack_cstr(&pk, "topic");
    mb_pack_cstr(&pk, topic);
    mb_pack_cstr(&pk, "key");
    mb_pack_cstr(&pk, key ? key : "");
    mb_pack_cstr(&pk, "data");
    mb_pack_raw(&pk, data, data_len);
    mb_reply_t rep;
    rc = s_call(self, &buf, rid, self->timeout_ms, false, &rep);
    msgpack_sbuffer_destroy(&buf);
    if (rc)
        return rc;
    rc = s_status(self, &rep);
    uint64_t got = 0;
    if (rc == 0 && !s_uint(mb_map_get(rep.body, "seq"), &got)) {
        s_set_error(self, "bus.publish answer lacks seq");
        rc = MB_EPROTO;
    }
    mb_reply_release(&rep);
    if (rc == 0) {
        self->error[0] = '\0';
        if (seq)
            *seq = got;
    }
    return rc;
}

int mb_events_publish_batch(mb_events_t *self, const mb_event_out_t *events, size_t count,
                            uint64_t *first)
{
    if (!events || count == 0 || count > MB_PUBLISH_BATCH_MAX) {
        s_set_error(self, "a batch holds 1..%d events", MB_PUBLISH_BATCH_MAX);
        return MB_EINVAL;
    }
    msgpack_sbuffer packed;
    msgpack_packer pk;
    msgpack_sbuffer_init(&packed);
    msgpack_packer_init(&pk, &packed, msgpack_sbuffer_write);
    int rc = 0;
    for (size_t i = 0; i < count && rc == 0; i++) {
        const mb_event_out_t *e = &events[i];
        rc = s_check_event(self, e->topic, e->key, e->data, e->data_len);
        if (rc) {
            char why[S_ERROR_MAX];
            snprintf(why, sizeof why, "%s", self->error);
            s_set_error(self, "events[%zu]: %s", i, why);
        } else
            s_pack_event(&pk, e->topic, e->key, e->data, e->data_len);
    }
    if (rc == 0)
        rc = s_publish_packed(self, packed.data, packed.size, count, first);
    msgpack_sbuffer_destroy(&packed);
    return rc;
}

/* ---- fetching ----------------------------------------------------------- */

static int s_check_query(mb_events_t *self, const mb_fetch_t *q, size_t *n_topics)
{
    *n_topics = 0;
    if (!q->topics == !q->prefix) {
        s_set_error(self, "a fetch names topics or a prefix, not both nor neither");
        return MB_EINVAL;
    }
    if (q->topics) {
        for (; q->topics[*n_topics]; (*n_topics)++) {
            const char *t = q->topics[*n_topics];
            if (*n_topics >= S_TOPICS_MAX || !mb_topic_valid(t, strlen(t))) {
                s_set_error(self, "topics must be 1..%d valid topics", S_TOPICS_MAX);
                return MB_EINVAL;
            }
        }
        if (*n_topics == 0) {
            s_set_error(self, "topics is empty");
            return MB_EINVAL;
        }
    } else if (!s_name_valid(q->prefix, strlen(q->prefix), 0, MB_TOPIC_MAX)) {
        s_set_error(self, "prefix must be 0..%d bytes of a-z 0-9 . _ -", MB_TOPIC_MAX);
        return MB_EINVAL;
    }
    if (q->max > MB_FETCH_MAX || q->wait_ms > MB_FETCH_WAIT_MAX) {
        s_set_error(self, "max is at most %d and wait at most %d ms", MB_FETCH_MAX,
                    MB_FETCH_WAIT_MAX);
        return MB_EINVAL;
    }
    return 0;
}

/*  Reads one event record. Returns MB_EPROTO when it has no usable seq
    (nothing sensible can be done with the batch then); other defects
    only mark the event invalid. */
static int s_parse_event(const msgpack_object *o, mb_event_t *ev)
{
    memset(ev, 0, sizeof *ev);
    if (!s_uint(mb_map_get(o, "seq"), &ev->seq) || ev->seq == 0)
        return MB_EPROTO;
    const msgpack_object *time = mb_map_get(o, "time");
    if (!mb_obj_str(mb_map_get(o, "topic"), &ev->topic, &ev->topic_len) ||
        !mb_topic_valid(ev->topic, ev->topic_len))
        ev->invalid = "topic missing or not a valid topic";
    else if (!mb_obj_str(mb_map_get(o, "key"), &ev->key, &ev->key_len))
        ev->invalid = "key missing or not a string";
    else if (time && !s_uint(time, &ev->time))
        ev->invalid = "time is not a non-negative integer";
    else if (!(ev->data = mb_map_get(o, "data")))
        ev->invalid = "data missing";
    return 0;
}

static int s_parse_batch(mb_events_t *self, const mb_fetch_t *q, mb_batch_t *batch)
{
    const msgpack_object *body = batch->reply.body;
    const msgpack_object *events = mb_map_get(body, "events");
    if (!events || events->type != MSGPACK_OBJECT_ARRAY ||
        !s_uint(mb_map_get(body, "next"), &batch->next) ||
        !s_uint(mb_map_get(body, "head"), &batch->head)) {
        s_set_error(self, "bus.fetch answer lacks events, next or head");
        return MB_EPROTO;
    }
    size_t n = events->via.array.size;
    batch->events = n ? mb_calloc(n, sizeof *batch->events) : NULL;
    uint64_t floor = q->from;
    for (size_t i = 0; i < n; i++) {
        mb_event_t *ev = &batch->events[i];
        if (s_parse_event(&events->via.array.ptr[i], ev) != 0) {
            s_set_error(self, "bus.fetch answer: events[%zu] has no seq", i);
            return MB_EPROTO;
        }
        /* The offset logic relies on increasing seqs inside [from, next). */
        if (ev->seq < floor || ev->seq >= batch->next) {
            s_set_error(self, "bus.fetch answer: seq %llu out of order or outside [%llu, %llu)",
                        (unsigned long long)ev->seq, (unsigned long long)q->from,
                        (unsigned long long)batch->next);
            return MB_EPROTO;
        }
        floor = ev->seq + 1;
        batch->count++;
    }
    if (batch->next < q->from) {
        s_set_error(self, "bus.fetch answer: next %llu is below from %llu",
                    (unsigned long long)batch->next, (unsigned long long)q->from);
        return MB_EPROTO;
    }
    return 0;
}

int mb_events_fetch(mb_events_t *self, const mb_fetch_t *query, mb_batch_t *batch)
{
    memset(batch, 0, sizeof *batch);
    size_t n_topics;
    int rc = s_check_query(self, query, &n_topics);
    if (rc)
        return rc;
    int timeout_ms = (int)query->wait_ms + self->timeout_ms;
    msgpack_sbuffer buf;
    msgpack_packer pk;
    uint64_t rid =
        s_request_head(self, &buf, &pk, "bus.fetch", (uint32_t)timeout_ms, 3 + (query->max > 0));
    if (query->topics) {
        mb_pack_cstr(&pk, "topics");
        msgpack_pack_array(&pk, n_topics);
        for (size_t i = 0; i < n_topics; i++)
            mb_pack_cstr(&pk, query->topics[i]);
    } else {
        mb_pack_cstr(&pk, "prefix");
        mb_pack_cstr(&pk, query->prefix);
    }
    mb_pack_cstr(&pk, "from");
    msgpack_pack_uint64(&pk, query->from);
    if (query->max > 0) {
        mb_pack_cstr(&pk, "max");
        msgpack_pack_unsigned_int(&pk, query->max);
    }
    mb_pack_cstr(&pk, "wait");
    msgpack_pack_unsigned_int(&pk, query->wait_ms);
    rc = s_call(self, &buf, rid, timeout_ms, true, &batch->reply);
    msgpack_sbuffer_destroy(&buf);
    if (rc)
        return rc;
    rc = s_status(self, &batch->reply);
    if (rc == 0)
        rc = s_parse_batch(self, query, batch);
    if (rc) {
        mb_batch_release(batch);
        return rc;
    }
    self->error[0] = '\0';
    return 0;
}

void mb_batch_release(mb_batch_t *batch)
{
    if (!batch)
        return;
    mb_reply_release(&batch->reply);
    free(batch->events);
    memset(batch, 0, sizeof *batch);
}

/* ---- databases and the outbox ------------------------------------------------ */

int mb_events_open_dbs(MDB_env *env)
{
    MDB_txn *txn;
    MDB_dbi dbi;
    int rc = mdb_txn_begin(env, NULL, 0, &txn);
    if (rc == 0) {
        rc = mdb_dbi_open(txn, S_OUTBOX_DB, MDB_CREATE, &dbi);
        if (rc == 0)
            rc = mdb_dbi_open(txn, S_OFFSETS_DB, MDB_CREATE, &dbi);
        rc = rc ? (mdb_txn_abort(txn), rc) : mdb_txn_commit(txn);
    }
    if (rc)
        mb_error(0, "events: cannot open the %s and %s databases: %s", S_OUTBOX_DB, S_OFFSETS_DB,
                 mdb_strerror(rc));
    return s_db_rc(rc);
}

/*  Looks up database `name`, opened by mb_events_open_dbs(). In a write
    transaction it is created if someone skipped that (write transactions
    never run concurrently, so that is safe there too). Returns an LMDB
    code; MDB_NOTFOUND in a read transaction means "no such database". */
static int s_dbi(MDB_txn *txn, const char *name, bool write, MDB_dbi *dbi)
{
    return mdb_dbi_open(txn, name, write ? MDB_CREATE : 0, dbi);
}

int mb_outbox_add(MDB_txn *txn, const char *topic, const char *key, const void *data,
                  size_t data_len)
{
    int rc = s_check_event(NULL, topic, key, data, data_len);
    if (rc)
        return rc;
    MDB_dbi dbi;
    MDB_cursor *cursor = NULL;
    int mdb_rc = s_dbi(txn, S_OUTBOX_DB, true, &dbi);
    if (mdb_rc == 0)
        mdb_rc = mdb_cursor_open(txn, dbi, &cursor);
    uint64_t seq = 1;
    MDB_val key_val, value;
    if (mdb_rc == 0) {
        mdb_rc = mdb_cursor_get(cursor, &key_val, &value, MDB_LAST);
        if (mdb_rc == 0 && key_val.mv_size == 8)
            seq = s_get_be64(key_val.mv_data) + 1;
        else if (mdb_rc == MDB_NOTFOUND)
            mdb_rc = 0;
        else if (mdb_rc == 0)
            mdb_rc = MDB_CORRUPTED;
    }
    if (mdb_rc == 0) {
        uint8_t key_bytes[8];
        s_put_be64(key_bytes, seq);
        msgpack_sbuffer buf;
        msgpack_packer pk;
        msgpack_sbuffer_init(&buf);
        msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
        s_pack_event(&pk, topic, key, data, data_len);
        key_val = (MDB_val){.mv_size = 8, .mv_data = key_bytes};
        value = (MDB_val){.mv_size = buf.size, .mv_data = buf.data};
        /* Transactions are serialised, so the last key + 1 is ours and
           appending keeps the outbox in commit order. */
        mdb_rc = mdb_cursor_put(cursor, &key_val, &value, MDB_APPEND);
        msgpack_sbuffer_destroy(&buf);
    }
    if (cursor)
        mdb_cursor_close(cursor);
    if (mdb_rc)
        mb_error(0, "events: cannot add to the outbox: %s", mdb_strerror(mdb_rc));
    return s_db_rc(mdb_rc);
}

int mb_outbox_count(MDB_env *env, size_t *count)
{
    *count = 0;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_stat st;
    int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return MB_EDB;
    rc = s_dbi(txn, S_OUTBOX_DB, false, &dbi);
    if (rc == 0 && (rc = mdb_stat(txn, dbi, &st)) == 0)
        *count = st.ms_entries;
    mdb_txn_abort(txn);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : MB_EDB;
}

/*  Takes the environment's outbox lock without waiting. Returns the fd
    holding it, MB_EAGAIN when another holds it, or MB_EIO. */
static int s_outbox_lock(MDB_env *env)
{
    const char *path = NULL;
    unsigned flags = 0;
    if (mdb_env_get_path(env, &path) != 0 || mdb_env_get_flags(env, &flags) != 0)
        return MB_EIO;
    char *lock_path = NULL;
    if (asprintf(&lock_path, (flags & MDB_NOSUBDIR) ? "%s-outbox.lock" : "%s/outbox.lock", path) <
        0)
        return MB_EIO;
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        mb_error(0, "events: cannot open '%s': %s", lock_path, strerror(errno));
        free(lock_path);
        return MB_EIO;
    }
    free(lock_path);
    /* flock, not fcntl locks: two opens in one process exclude each other
       too (threads), and the kernel frees it when the holder dies. */
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EINTR)
            continue;
        int err = errno;
        close(fd);
        return err == EWOULDBLOCK ? MB_EAGAIN : MB_EIO;
    }
    return fd;
}

/*  Reads the oldest outbox events, up to S_OUTBOX_BATCH and about
    S_OUTBOX_BATCH_BYTES, into `packed` (concatenated) and their keys into
    keys[]. An entry that is not valid msgpack (it cannot be published)
    is logged and its key put in bad[]. */
static int s_outbox_read(MDB_env *env, msgpack_sbuffer *packed, uint64_t *keys, size_t *n,
                         uint64_t *bad, size_t *n_bad)
{
    *n = *n_bad = 0;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *cursor;
    int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return s_db_rc(rc);
    rc = s_dbi(txn, S_OUTBOX_DB, false, &dbi);
    if (rc == 0)
        rc = mdb_cursor_open(txn, dbi, &cursor);
    if (rc) {
        mdb_txn_abort(txn);
        return rc == MDB_NOTFOUND ? 0 : s_db_rc(rc);
    }
    MDB_val key, value;
    MDB_cursor_op op = MDB_FIRST;
    while (*n < S_OUTBOX_BATCH && *n_bad < S_OUTBOX_BATCH &&
           (rc = mdb_cursor_get(cursor, &key, &value, op)) == 0) {
        op = MDB_NEXT;
        uint64_t seq = key.mv_size == 8 ? s_get_be64(key.mv_data) : 0;
        size_t used = 0;
        if (seq == 0 ||
            mb_msgpack_skip(value.mv_data, value.mv_size, MB_EVENT_DATA_DEPTH + 1, &used) != 0 ||
            used != value.mv_size) {
            mb_error(0, "events: outbox entry %llu is not a valid event; dropping it",
                     (unsigned long long)seq);
            bad[(*n_bad)++] = seq;
            continue;
        }
        if (*n > 0 && packed->size + value.mv_size > S_OUTBOX_BATCH_BYTES)
            break;
        msgpack_sbuffer_write(packed, value.mv_data, value.mv_size);
        keys[(*n)++] = seq;
    }
    mdb_cursor_close(cursor);
    mdb_txn_abort(txn);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : s_db_rc(rc);
}

/*  Deletes outbox entries keys[0..n) in one transaction. */
static int s_outbox_delete(MDB_env *env, const uint64_t *keys, size_t n)
{
    if (n == 0)
        return 0;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    int rc = mdb_txn_begin(env, NULL, 0, &txn);
    if (rc == 0)
        rc = s_dbi(txn, S_OUTBOX_DB, true, &dbi);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        uint8_t bytes[8];
        s_put_be64(bytes, keys[i]);
        MDB_val key = {.mv_size = 8, .mv_data = bytes};
        rc = mdb_del(txn, dbi, &key, NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc)
        mb_error(0,
                 "events: cannot delete %zu published outbox events (they will be published "
                 "again): %s",
                 n, mdb_strerror(rc));
    return s_db_rc(rc);
}

/*  Publishes the events of a refused batch one by one, dropping those
    the broker refuses on their own. Sets *done to how many of them are
    finished (published or dropped), in order. */
static int s_publish_one_by_one(mb_events_t *events, const msgpack_sbuffer *packed, size_t n,
                                const uint64_t *keys, size_t *done)
{
    *done = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        size_t used = 0;
        mb_msgpack_skip(packed->data + at, packed->size - at, MB_MSGPACK_MAX_DEPTH, &used);
        int rc = s_publish_packed(events, packed->data + at, used, 1, NULL);
        if (rc == MB_EINVAL || rc == MB_ETOOBIG) {
            mb_error(0, "events: the broker refused outbox event %llu; dropping it: %s",
                     (unsigned long long)keys[i], mb_events_error(events));
        } else if (rc)
            return rc;
        at += used;
        (*done)++;
    }
    return 0;
}

int mb_outbox_flush(MDB_env *env, mb_events_t *events, size_t *published)
{
    size_t total = 0;
    if (published)
        *published = 0;
    /* With no error text, MB_EAGAIN means the lock was busy, not a 503. */
    events->error[0] = '\0';
    int fd = s_outbox_lock(env);
    if (fd < 0)
        return fd;
    uint64_t *keys = mb_malloc(S_OUTBOX_BATCH * sizeof *keys);
    uint64_t *bad = mb_malloc(S_OUTBOX_BATCH * sizeof *bad);
    msgpack_sbuffer packed;
    msgpack_sbuffer_init(&packed);
    int rc = 0;
    for (;;) {
        if (total > 0 && mb_signal_stop_requested()) {
            rc = MB_EINTR;
            break;
        }
        size_t n, n_bad, done = 0;
        msgpack_sbuffer_clear(&packed);
        rc = s_outbox_read(env, &packed, keys, &n, bad, &n_bad);
        if (rc == 0)
            rc = s_outbox_delete(env, bad, n_bad);
        if (rc || (n == 0 && n_bad == 0))
            break;
        if (n == 0)
            continue;
        rc = s_publish_packed(events, packed.data, packed.size, n, NULL);
        if (rc == 0)
            done = n;
        else if (rc == MB_EINVAL || rc == MB_ETOOBIG) {
            mb_warn(0,
                    "events: the broker refused a batch of %zu outbox events (%s); "
                    "publishing them one by one",
                    n, mb_events_error(events));
            rc = s_publish_one_by_one(events, &packed, n, keys, &done);
        }
        int del_rc = s_outbox_delete(env, keys, done);
        total += done;
        if (rc == 0)
            rc = del_rc;
        if (rc)
            break;
    }
    msgpack_sbuffer_destroy(&packed);
    free(keys);
    free(bad);
    close(fd); /* releases the lock */
    if (published)
        *published = total;
    return rc;
}

/* ---- consumer groups -------------------------------------------------------------- */

int mb_event_invalid(const mb_event_t *event, const char *fmt, ...)
{
    mb_consumer_t *consumer = event ? event->ctx : NULL;
    if (consumer) {
        va_list args;
        va_start(args, fmt);
        vsnprintf(consumer->why, sizeof consumer->why, fmt, args);
        va_end(args);
    }
    return MB_EINVAL;
}

/*  Reads the offset of `group` in `txn`; zeros when there is none. */
static int s_offset_get(MDB_txn *txn, MDB_dbi dbi, const char *group, uint64_t *next,
                        uint64_t *skipped)
{
    MDB_val key = {.mv_size = strlen(group), .mv_data = (void *)group}, value;
    *next = *skipped = 0;
    int rc = mdb_get(txn, dbi, &key, &value);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc == 0 && value.mv_size != S_OFFSET_SIZE)
        rc = MDB_CORRUPTED;
    if (rc == 0) {
        *next = s_get_be64(value.mv_data);
        *skipped = s_get_be64((const uint8_t *)value.mv_data + 8);
    }
    return rc;
}

static int s_offset_put(MDB_txn *txn, MDB_dbi dbi, const char *group, uint64_t next,
                        uint64_t skipped)
{
    uint8_t bytes[S_OFFSET_SIZE];
    s_put_be64(bytes, next);
    s_put_be64(bytes + 8, skipped);
    MDB_val key = {.mv_size = strlen(group), .mv_data = (void *)group};
    MDB_val value = {.mv_size = sizeof bytes, .mv_data = bytes};
    return mdb_put(txn, dbi, &key, &value, 0);
}

int mb_consumer_offset(MDB_env *env, const char *group, uint64_t *next, uint64_t *skipped)
{
    uint64_t n = 0, s = 0;
    MDB_txn *txn;
    MDB_dbi dbi;
    int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return MB_EDB;
    rc = s_dbi(txn, S_OFFSETS_DB, false, &dbi);
    if (rc == 0)
        rc = s_offset_get(txn, dbi, group, &n, &s);
    mdb_txn_abort(txn);
    if (rc && rc != MDB_NOTFOUND)
        return MB_EDB;
    if (next)
        *next = n;
    if (skipped)
        *skipped = s;
    return 0;
}

static bool s_consumer_def_valid(const mb_consumer_def_t *def)
{
    const char *why = NULL;
    if (!def || !def->group || !s_name_valid(def->group, strlen(def->group), 1, MB_GROUP_MAX))
        why = "group must be 1..64 bytes of a-z 0-9 . _ -";
    else if (!def->apply)
        why = "apply is required";
    else if (!def->topics == !def->prefix)
        why = "give topics or a prefix, not both nor neither";
    else if (def->batch > MB_FETCH_MAX)
        why = "batch is at most 10000";
    else if (def->topics) {
        size_t n = 0;
        for (; def->topics[n]; n++)
            if (n >= S_TOPICS_MAX || !mb_topic_valid(def->topics[n], strlen(def->topics[n])))
                why = "topics must be 1..64 valid topics";
        if (n == 0)
            why = "topics is empty";
    } else if (!s_name_valid(def->prefix, strlen(def->prefix), 0, MB_TOPIC_MAX))
        why = "prefix must be 0..128 bytes of a-z 0-9 . _ -";
    if (why)
        mb_error(0, "consumer %s: %s", def && def->group ? def->group : "(null)", why);
    return why == NULL;
}

mb_consumer_t *mb_consumer_new(const mb_consumer_def_t *def, MDB_env *env, void *state,
                               const char *endpoint)
{
    if (!s_consumer_def_valid(def) || !env)
        return NULL;
    MDB_txn *txn;
    MDB_dbi offsets;
    int rc = mb_events_open_dbs(env);
    if (rc)
        return NULL;
    rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (rc == 0) {
        rc = s_dbi(txn, S_OFFSETS_DB, false, &offsets);
        mdb_txn_abort(txn);
    }
    if (rc) {
        mb_error(0, "consumer %s: cannot open %s: %s", def->group, S_OFFSETS_DB, mdb_strerror(rc));
        return NULL;
    }
    mb_events_t *events = mb_events_new(endpoint);
    if (!events)
        return NULL;
    mb_consumer_t *self = mb_calloc(1, sizeof *self);
    self->def = def;
    self->env = env;
    self->state = state;
    self->events = events;
    self->offsets = offsets;
    atomic_init(&self->stop, false);
    events->stop = &self->stop;
    return self;
}

void mb_consumer_destroy(mb_consumer_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    mb_events_destroy(&(*self_p)->events);
    free(*self_p);
    *self_p = NULL;
}

void mb_consumer_stop(mb_consumer_t *self)
{
    atomic_store(&self->stop, true);
}

void mb_consumer_stats(mb_consumer_t *self, mb_consumer_stats_t *stats)
{
    *stats = self->stats;
}

static bool s_consumer_stopping(mb_consumer_t *self)
{
    return atomic_load(&self->stop) || mb_signal_stop_requested();
}

/*  Applies the events of `batch` not applied yet, in one write
    transaction that also moves the offset. */
static int s_apply_batch(mb_consumer_t *self, const mb_batch_t *batch, size_t *applied)
{
    const char *group = self->def->group;
    MDB_txn *txn, *child;
    uint64_t next, skipped;
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc) {
        mb_error(0, "consumer %s: cannot begin a transaction: %s", group, mdb_strerror(rc));
        return s_db_rc(rc);
    }
    /* Re-read under the write lock: another worker may have applied this
       batch (or part of it) since we read the offset. */
    rc = s_offset_get(txn, self->offsets, group, &next, &skipped);
    if (rc == 0 && next >= batch->next) {
        mdb_txn_abort(txn);
        self->stats.raced++;
        return 0;
    }
    size_t done = 0, bad = 0;
    uint64_t upto = batch->next; /* the offset this batch stores */
    bool not_yet = false;
    for (size_t i = 0; rc == 0 && i < batch->count; i++) {
        mb_event_t *ev = &batch->events[i];
        if (ev->seq < next)
            continue; /* applied by someone else */
        if (ev->invalid) {
            mb_warn(0, "consumer %s: skipped event %llu: malformed record from the broker: %s",
                    group, (unsigned long long)ev->seq, ev->invalid);
            bad++;
            continue;
        }
        /* A child transaction per event, so the writes of an event the
           handler rejects halfway are discarded alone. */
        if ((rc = mdb_txn_begin(self->env, txn, 0, &child)) != 0)
            break;
        ev->ctx = self;
        self->why[0] = '\0';
        int apply_rc = self->def->apply(child, ev, self->state);
        if (apply_rc == 0) {
            rc = mdb_txn_commit(child);
            done++;
        } else {
            mdb_txn_abort(child);
            if (apply_rc == MB_ENOTYET) {
                /* "Not yet" (the event depends on another group's
                   progress): keep what was applied before it, stop here
                   and come back to it shortly. */
                mb_debug(0, "consumer %s: event %llu not applicable yet: %s", group,
                         (unsigned long long)ev->seq, self->why[0] ? self->why : "waiting");
                upto = ev->seq;
                not_yet = true;
                break;
            } else if (apply_rc == MB_EINVAL) {
                mb_warn(0, "consumer %s: skipped event %llu (%.*s, key '%.*s'): %s", group,
                        (unsigned long long)ev->seq, (int)ev->topic_len, ev->topic,
                        (int)ev->key_len, ev->key, self->why[0] ? self->why : "malformed");
                bad++;
            } else {
                mdb_txn_abort(txn);
                mb_warn(0,
                        "consumer %s: applying event %llu failed (%s); the batch is rolled "
                        "back and retried",
                        group, (unsigned long long)ev->seq,
                        apply_rc < -30000 ? mdb_strerror(apply_rc) : mb_strerror(apply_rc));
                return apply_rc;
            }
        }
    }
    if (rc == 0 && upto > next)
        rc = s_offset_put(txn, self->offsets, group, upto, skipped + bad);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    if (rc) {
        mb_error(0, "consumer %s: storing the batch failed: %s", group, mdb_strerror(rc));
        return s_db_rc(rc);
    }
    self->stats.batches++;
    self->stats.applied += done;
    self->stats.skipped += bad;
    *applied = done;
    return not_yet ? MB_ENOTYET : 0;
}

/*  Stores `next` after empty batches, at most every S_IDLE_OFFSET_MS: a
    group whose topics are quiet would otherwise keep an old offset while
    retention deletes other topics' events past it, and take that for a
    retention gap when it restarts. */
static int s_store_idle_offset(mb_consumer_t *self, uint64_t next)
{
    int64_t now = s_now_ms();
    if (self->idle_stored_at && now - self->idle_stored_at < S_IDLE_OFFSET_MS)
        return 0;
    MDB_txn *txn = NULL;
    uint64_t stored, skipped;
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc == 0)
        rc = s_offset_get(txn, self->offsets, self->def->group, &stored, &skipped);
    if (rc == 0 && stored < next) {
        rc = s_offset_put(txn, self->offsets, self->def->group, next, skipped);
        rc = rc ? (mdb_txn_abort(txn), rc) : mdb_txn_commit(txn);
    } else if (txn)
        mdb_txn_abort(txn);
    if (rc) {
        mb_error(0, "consumer %s: storing the offset failed: %s", self->def->group,
                 mdb_strerror(rc));
        return s_db_rc(rc);
    }
    self->idle_stored_at = now;
    return 0;
}

int mb_consumer_run_once(mb_consumer_t *self, unsigned wait_ms, size_t *applied)
{
    size_t ignored;
    applied = applied ? applied : &ignored;
    *applied = 0;
    uint64_t next = 0;
    if (mb_consumer_offset(self->env, self->def->group, &next, NULL) != 0) {
        self->stats.failures++;
        return MB_EDB;
    }
    mb_fetch_t query = {.topics = self->def->topics,
                        .prefix = self->def->prefix,
                        .from = next > self->known_next ? next : self->known_next,
                        .max = self->def->batch ? self->def->batch : S_CONSUMER_BATCH,
                        .wait_ms = wait_ms > MB_FETCH_WAIT_MAX ? MB_FETCH_WAIT_MAX : wait_ms};
    mb_batch_t batch;
    int rc = mb_events_fetch(self->events, &query, &batch);
    if (rc == MB_ENOTFOUND)
        mb_error(0,
                 "consumer %s: events from seq %llu on are no longer kept by the broker (%s); "
                 "stopping this consumer: reset its offset or rebuild its state",
                 self->def->group, (unsigned long long)query.from, mb_events_error(self->events));
    if (rc) {
        if (rc != MB_EINTR)
            self->stats.failures++;
        return rc;
    }
    if (batch.count > 0)
        rc = s_apply_batch(self, &batch, applied);
    else if (batch.next > next)
        rc = s_store_idle_offset(self, batch.next);
    if (rc == 0 && batch.next > self->known_next)
        self->known_next = batch.next;
    if (rc && rc != MB_ENOTYET)
        self->stats.failures++;
    mb_batch_release(&batch);
    return rc;
}

/*  Sleeps `ms` unless a stop is asked for. */
static void s_sleep(mb_consumer_t *self, int ms)
{
    int64_t until = s_now_ms() + ms;
    while (!s_consumer_stopping(self)) {
        int64_t left = until - s_now_ms();
        if (left <= 0)
            return;
        if (left > S_POLL_SLICE_MS)
            left = S_POLL_SLICE_MS;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = left * 1000000};
        nanosleep(&ts, NULL);
    }
}

int mb_consumer_run(mb_consumer_t *self)
{
    const char *group = self->def->group;
    int backoff = 0;
    mb_info(0, "consumer %s: started", group);
    while (!s_consumer_stopping(self)) {
        int rc = mb_consumer_run_once(self, S_CONSUMER_WAIT_MS, NULL);
        if (rc == 0) {
            if (backoff)
                mb_info(0, "consumer %s: working again", group);
            backoff = 0;
            continue;
        }
        if (rc == MB_EINTR)
            break;
        if (rc == MB_ENOTFOUND)
            return rc;
        if (rc == MB_ENOTYET) {
            /* An event is not applicable yet; what came before it is. */
            s_sleep(self, S_NOT_YET_MS);
            continue;
        }
        backoff = backoff ? backoff * 2 : S_BACKOFF_MIN_MS;
        if (backoff > S_BACKOFF_MAX_MS)
            backoff = S_BACKOFF_MAX_MS;
        mb_warn(0, "consumer %s: %s%s%s; retrying in %d ms", group, mb_strerror(rc),
                mb_events_error(self->events)[0] ? ": " : "", mb_events_error(self->events),
                backoff);
        s_sleep(self, backoff);
    }
    mb_info(0, "consumer %s: stopped (%lu events applied, %lu skipped)", group, self->stats.applied,
            self->stats.skipped);
    return MB_EINTR;
}
