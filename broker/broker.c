/*  musicbus-broker — the bus: a Majordomo broker, MDP/0.1 (ZeroMQ RFC 7),
    with the service-discovery extension MMI (RFC 8).

    One ROUTER socket serves clients and workers. Beyond the zguide broker
    it remembers the request each worker holds and dispatches it again when
    that worker dies or leaves; keeps a bounded queue per service and
    answers "overloaded" when it is full; answers requests that outlive
    their deadline with a timeout error; and sets ZMQ_ROUTER_MANDATORY so a
    peer that has gone is noticed instead of silently eating messages.

    The client always gets exactly one reply per request: the worker's, or
    the broker's own error in the mb_envelope reply form (mb_envelope.h).
    Workers may see a request more than once (at-least-once delivery).

    Credit: when every worker of a service is busy, a worker may be sent
    up to --worker-credit requests at once. They wait in its socket and an
    MDP worker reads and answers them in order, so the worker never idles
    for a broker round trip between two requests. The broker keeps the
    requests each worker holds oldest first and matches a reply to the
    oldest one held for the client address the reply names.

    The service "bus" (durable event streams: bus.publish, bus.fetch) is
    the broker's own, like mmi.*; bus.c answers it, over an LMDB log that
    event_log.c writes on a thread of its own.

    The file reads top to bottom: constants, the broker's state, small
    containers (hash table, deadline heap), requests, services, workers,
    sending, one handler per message kind, timers, then main. */

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "bus.h"
#include "mb_alloc.h"
#include "mb_client.h" /* MB_CLIENT_COMPACT, MB_CLIENT_ID_PREFIX */
#include "mb_config.h"
#include "mb_envelope.h"
#include "mb_error.h"
#include "mb_log.h"
#include "mb_msgpack.h"
#include "mb_signal.h"
#include "mb_worker.h" /* MB_WORKER_OPT_COMPACT */
#include "mb_zmq.h"
#include "mdp.h"

/*  ---------------------------------------------------------------------
    Constants */

#define BROKER_ENV_QUEUE_LIMIT "MUSICBUS_QUEUE_LIMIT"
#define BROKER_DEFAULT_QUEUE_LIMIT 10000                      /* waiting requests per service */
#define BROKER_ENV_RETENTION_AGE "MUSICBUS_RETENTION_AGE"     /* seconds */
#define BROKER_DEFAULT_RETENTION_AGE (7L * 24 * 3600)         /* a week */
#define BROKER_ENV_RETENTION_BYTES "MUSICBUS_RETENTION_BYTES" /* of the events database */
#define BROKER_DEFAULT_RETENTION_BYTES (1L << 30)
#define BROKER_ENV_LOG_MAP_SIZE "MUSICBUS_LOG_MAP_SIZE" /* MiB */
#define BROKER_DEFAULT_LOG_MAP_SIZE 4096L
#define BROKER_ENV_WORKER_CREDIT "MUSICBUS_WORKER_CREDIT"
#define BROKER_DEFAULT_WORKER_CREDIT 32 /* requests one worker may hold; 1 = classic MDP */
#define BROKER_MAX_WORKER_CREDIT 1000

/*  A busy worker is sent more only while the request it works on (as far
    as the broker can tell) started less than this long ago. Credit exists
    to hide the broker round trip, which matters for fast ops only; a
    worker stuck on a slow request gets no more, so requests do not queue
    behind it while another worker may come free first. */
#define BROKER_CREDIT_STALL_MS 10

/*  Bounds on what peers can make the broker hold, so a hostile or buggy
    peer cannot grow memory without limit. */
#define BROKER_MAX_SERVICES 1024           /* services known at once */
#define BROKER_MAX_SERVICE_NAME 255        /* bytes */
#define BROKER_MAX_WORKERS 65536           /* workers known at once */
#define BROKER_MAX_FRAMES MB_COMPACT_FRAMES_MAX /* frames per message (mdp.h) */
#define BROKER_MAX_FRAME_BYTES (64L << 20) /* ZMQ_MAXMSGSIZE: bigger frames drop the peer */

/*  Socket high-water marks, in messages. High, because the broker is a
    switch: it must not push back on one peer for another's sake. */
#define BROKER_HWM 200000

/*  Replies to a compact client (mb_client.h) are gathered while the broker
    works through a batch of messages and go out as one message per client:
    at most this many bodies a message, and this many clients gathered at
    once (there is one per gateway process). */
#define BROKER_REPLY_BATCH 64
#define BROKER_REPLY_CLIENTS 8

/*  Messages handled per poll wake-up before timers are looked at: large
    enough to amortise zmq_poll(), small enough that deadlines and
    heartbeats never lag by more than a few milliseconds under load. */
#define BROKER_RECV_BATCH 512

#define BROKER_STATS_INTERVAL_MS 60000 /* counters logged this often when they moved */
#define BROKER_PROTO_LOG_MAX 20        /* protocol-error lines per stats interval */
#define BROKER_POOL_MAX 4096           /* spare request records kept for reuse */
#define BROKER_SHUTDOWN_LINGER_MS 200  /* time given to goodbyes at exit */

/*  ---------------------------------------------------------------------
    State */

typedef struct service_t service_t;
typedef struct worker_t worker_t;
typedef struct request_t request_t;

/*  An intrusive chained hash table keyed by bytes. Entries embed an
    s_node_t as their first member, so a node pointer is the entry. */
typedef struct s_node_t {
    struct s_node_t *next; /* next in the bucket */
    uint32_t hash;         /* of key, kept to grow without rehashing keys */
    size_t key_len;
    const unsigned char *key; /* points into the entry */
} s_node_t;

typedef struct {
    s_node_t **buckets;
    size_t mask;  /* buckets - 1; the bucket count is a power of two */
    size_t count; /* entries */
} s_table_t;

/*  One client request, from arrival until its one reply goes out. */
struct request_t {
    zmq_msg_t client;       /* the client's routing id, for the reply */
    zmq_msg_t body;         /* the first body frame (musicbus sends exactly one) */
    zmq_msg_t *more;        /* the other body frames (foreign clients), or NULL */
    size_t n_body;          /* body frames: 0, 1, or 1 + the length of `more` */
    uint64_t rid;           /* from the envelope; 0 when the body is not one */
    int64_t deadline;       /* monotonic ms after which the client gets a timeout */
    int64_t sent_at;        /* when it was sent to the worker holding it */
    size_t heap_index;      /* position in the broker's deadline heap */
    service_t *service;     /* the service asked for */
    worker_t *worker;       /* the worker holding it, or NULL while queued */
    uint8_t compact_client; /* a musicbus client (mb_client.h): the worker's reply goes
                               to it as [client][MB_CLIENT_COMPACT][body], alone (1) or
                               with others in one message (2); 0: RFC 7 */
    bool abandoned;         /* answered by the broker (deadline, shutdown) while a worker
                               holds it: kept, without its body, only so that worker's
                               reply matches it; out of the deadline heap */
    request_t *prev, *next; /* the service's queue or its worker's held list; `next`
                               links the spare pool */
};

/*  Workers of a service holding the same number of requests, in the
    order they came to hold that many. */
typedef struct {
    worker_t *head;
    worker_t *tail;
} s_bucket_t;

struct service_t {
    s_node_t node;         /* key: the name; must stay first */
    request_t *queue_head; /* waiting requests, oldest (or re-queued) first */
    request_t *queue_tail;
    size_t queue_len;
    s_bucket_t *load;       /* load[k]: workers holding k requests, k in 0..credit;
                               load[0] is the idle list, longest idle first */
    size_t low;             /* no worker is in a bucket below this one */
    size_t n_workers;       /* every worker offering the service, idle or not */
    service_t *prev, *next; /* the broker's list of services */
    size_t name_len;
    char name[]; /* NUL-terminated, for logs */
};

struct worker_t {
    s_node_t node; /* key: the routing id; must stay first */
    service_t *service;
    request_t *held_head;            /* requests sent to it and not answered, oldest first */
    request_t *held_tail;            /* (abandoned ones included: it still works on them) */
    size_t n_held;                   /* 0 (idle) .. the broker's credit */
    int64_t expiry;                  /* presumed dead when silent until then (monotonic ms) */
    int64_t sent_at;                 /* when we last sent it anything, for heartbeats */
    int64_t replied_at;              /* when its last reply came */
    uint8_t compact;                 /* said READY with MB_WORKER_OPT_COMPACT (2) or _V1 (1),
                                        else 0. Compact: one-frame
                                        requests go as [REQUEST][client][body]... */
    request_t *unsent;               /* compact worker: the first of the held requests
                                        (the newest ones) not sent yet, or NULL */
    worker_t *flush_next;            /* the broker's list of workers with unsent requests */
    bool flush_queued;               /* on that list */
    worker_t *load_prev, *load_next; /* its bucket in service->load[n_held] */
    worker_t *prev, *next;           /* the broker's list of workers */
    size_t identity_len;
    unsigned char identity[]; /* the routing id */
};

/*  Replies gathered for one compact client: [client][MB_CLIENT_COMPACT]
    [body][body]... once sent. */
typedef struct {
    zmq_msg_t client;
    zmq_msg_t bodies[BROKER_REPLY_BATCH];
    size_t n; /* bodies; 0: the slot is free */
} s_replies_t;

typedef struct {
    uint64_t requests;     /* client requests received (MMI included) */
    uint64_t replies;      /* worker replies delivered to clients */
    uint64_t redispatched; /* requests re-queued because their worker died or left */
    uint64_t expired;      /* requests answered with timeout / no_workers */
    uint64_t overloaded;   /* requests answered with overloaded (queue full, too many services) */
    uint64_t dropped;      /* replies not delivered: client gone, or late from a worker */
    uint64_t protocol_errors; /* malformed or out-of-order messages from peers */
    uint64_t bus_requests;    /* requests for the service "bus" (not logged: bus.c counts) */
} broker_stats_t;

typedef struct {
    void *router;           /* the one socket, for clients and workers */
    bus_t *bus;             /* the service "bus": event streams */
    bus_stats_t bus_logged; /* bus counters at the last counters line */
    char endpoint[256];     /* as bound, port resolved */
    int heartbeat_ms;       /* interval between heartbeats to each worker */
    int liveness;           /* heartbeats a worker may miss before it is dead */
    size_t queue_limit;     /* waiting requests per service */
    size_t credit;          /* requests one worker may hold at once */
    int timeout_ms;         /* deadline of a request that sets no ttl */
    uint32_t hash_seed;     /* per process, so peers cannot aim at one bucket */

    s_table_t services;
    service_t *services_head;
    s_table_t workers;
    worker_t *workers_head;

    request_t **heap; /* every live request, min-heap on deadline */
    size_t heap_len;
    size_t heap_cap;
    worker_t *flush_head; /* workers with requests to send at the end of the batch */
    s_replies_t *replies; /* [BROKER_REPLY_CLIENTS]: replies to send at the end of the batch */
    size_t n_replies;     /* slots in use, the first ones */
    request_t *pool;      /* spare request records */
    size_t pool_len;

    int64_t now;          /* monotonic ms, refreshed once per batch of messages */
    int64_t sweep_at;     /* next worker sweep (heartbeats, expiry) */
    int64_t stats_at;     /* next counters line */
    msgpack_sbuffer sbuf; /* reused to encode the broker's own replies */
    broker_stats_t stats;
    broker_stats_t stats_logged;
    unsigned proto_logged; /* protocol-error lines written this interval */
} broker_t;

/*  ---------------------------------------------------------------------
    Small helpers */

static int64_t s_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*  Writes up to 32 bytes of `data` as hex into out[65], for logs. */
static const char *s_hex(const void *data, size_t size, char out[65])
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *bytes = data;
    size_t n = size < 32 ? size : 32;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * n] = '\0';
    return out;
}

static bool s_msg_is_empty(zmq_msg_t *msg)
{
    return zmq_msg_size(msg) == 0;
}

static bool s_msg_eq_bytes(zmq_msg_t *msg, const void *data, size_t size)
{
    return zmq_msg_size(msg) == size && memcmp(zmq_msg_data(msg), data, size) == 0;
}

/*  Counts a peer's protocol error; logs it unless this interval already
    logged many, so a peer spraying garbage cannot flood the logs. */
static void s_protocol_error(broker_t *self, zmq_msg_t *identity, const char *why)
{
    self->stats.protocol_errors++;
    if (self->proto_logged >= BROKER_PROTO_LOG_MAX)
        return;
    self->proto_logged++;
    char hex[65];
    mb_warn(0, "protocol error from peer %s: %s%s",
            s_hex(zmq_msg_data(identity), zmq_msg_size(identity), hex), why,
            self->proto_logged == BROKER_PROTO_LOG_MAX ? " (more this minute are only counted)"
                                                       : "");
}

/*  ---------------------------------------------------------------------
    Hash table */

static uint32_t s_hash(const broker_t *self, const void *key, size_t len)
{
    /* FNV-1a with a per-process basis: keys are short (service names,
       5-byte routing ids) and FNV is fast on short keys. */
    const unsigned char *p = key;
    uint32_t hash = 2166136261u ^ self->hash_seed;
    for (size_t i = 0; i < len; i++) {
        hash ^= p[i];
        hash *= 16777619u;
    }
    return hash;
}

static void s_table_init(s_table_t *table, size_t buckets)
{
    table->buckets = mb_calloc(buckets, sizeof(s_node_t *));
    table->mask = buckets - 1;
    table->count = 0;
}

static void s_table_free(s_table_t *table)
{
    free(table->buckets);
    table->buckets = NULL;
}

static s_node_t *s_table_find(s_table_t *table, uint32_t hash, const void *key, size_t len)
{
    for (s_node_t *node = table->buckets[hash & table->mask]; node; node = node->next)
        if (node->hash == hash && node->key_len == len && memcmp(node->key, key, len) == 0)
            return node;
    return NULL;
}

static void s_table_insert(s_table_t *table, s_node_t *node)
{
    if (table->count >= table->mask + 1) {
        /* Keep chains short: double at load factor 1. */
        size_t buckets = (table->mask + 1) * 2;
        s_node_t **grown = mb_calloc(buckets, sizeof(s_node_t *));
        for (size_t i = 0; i <= table->mask; i++) {
            s_node_t *entry = table->buckets[i];
            while (entry) {
                s_node_t *next = entry->next;
                entry->next = grown[entry->hash & (buckets - 1)];
                grown[entry->hash & (buckets - 1)] = entry;
                entry = next;
            }
        }
        free(table->buckets);
        table->buckets = grown;
        table->mask = buckets - 1;
    }
    s_node_t **bucket = &table->buckets[node->hash & table->mask];
    node->next = *bucket;
    *bucket = node;
    table->count++;
}

static void s_table_remove(s_table_t *table, s_node_t *node)
{
    s_node_t **link = &table->buckets[node->hash & table->mask];
    while (*link && *link != node)
        link = &(*link)->next;
    if (*link) {
        *link = node->next;
        table->count--;
    }
}

/*  ---------------------------------------------------------------------
    Deadline heap

    Every live request, queued or held by a worker, sits in one min-heap
    ordered by deadline. Deadlines vary per request (the envelope's ttl),
    so arrival order is not deadline order; the heap gives the next
    deadline in O(1) to size the poll timeout, and adding or finishing a
    request costs O(log n) with no allocation once the array has grown.
    A periodic sweep over every queue would cost O(n) per tick instead,
    which is what hurts most exactly when queues are long (overload). */

static bool s_heap_less(broker_t *self, size_t a, size_t b)
{
    return self->heap[a]->deadline < self->heap[b]->deadline;
}

static void s_heap_swap(broker_t *self, size_t a, size_t b)
{
    request_t *tmp = self->heap[a];
    self->heap[a] = self->heap[b];
    self->heap[b] = tmp;
    self->heap[a]->heap_index = a;
    self->heap[b]->heap_index = b;
}

static void s_heap_up(broker_t *self, size_t i)
{
    while (i > 0 && s_heap_less(self, i, (i - 1) / 2)) {
        s_heap_swap(self, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void s_heap_down(broker_t *self, size_t i)
{
    for (;;) {
        size_t least = i, left = 2 * i + 1, right = 2 * i + 2;
        if (left < self->heap_len && s_heap_less(self, left, least))
            least = left;
        if (right < self->heap_len && s_heap_less(self, right, least))
            least = right;
        if (least == i)
            return;
        s_heap_swap(self, i, least);
        i = least;
    }
}

static void s_heap_push(broker_t *self, request_t *request)
{
    if (self->heap_len == self->heap_cap) {
        self->heap_cap = self->heap_cap ? self->heap_cap * 2 : 1024;
        self->heap = mb_realloc(self->heap, self->heap_cap * sizeof(request_t *));
    }
    request->heap_index = self->heap_len;
    self->heap[self->heap_len++] = request;
    s_heap_up(self, request->heap_index);
}

static void s_heap_remove(broker_t *self, request_t *request)
{
    size_t i = request->heap_index;
    self->heap_len--;
    if (i == self->heap_len)
        return;
    self->heap[i] = self->heap[self->heap_len];
    self->heap[i]->heap_index = i;
    s_heap_up(self, i);
    s_heap_down(self, i);
}

/*  ---------------------------------------------------------------------
    Requests */

/*  Returns a request record holding the client id and body moved out of
    frames[0] and body[0..n_body), in the deadline heap but in no queue. */
static request_t *s_request_new(broker_t *self, zmq_msg_t *client, zmq_msg_t *body, size_t n_body,
                                uint64_t rid, uint32_t ttl_ms)
{
    request_t *request = self->pool;
    if (request) {
        self->pool = request->next;
        self->pool_len--;
    } else {
        request = mb_malloc(sizeof *request);
    }
    zmq_msg_init(&request->client);
    zmq_msg_move(&request->client, client);
    zmq_msg_init(&request->body);
    request->more = NULL;
    request->n_body = n_body;
    if (n_body > 0)
        zmq_msg_move(&request->body, &body[0]);
    if (n_body > 1) {
        request->more = mb_malloc((n_body - 1) * sizeof(zmq_msg_t));
        for (size_t i = 1; i < n_body; i++) {
            zmq_msg_init(&request->more[i - 1]);
            zmq_msg_move(&request->more[i - 1], &body[i]);
        }
    }
    request->rid = rid;
    request->deadline = self->now + (ttl_ms ? (int64_t)ttl_ms : self->timeout_ms);
    request->service = NULL;
    request->worker = NULL;
    request->abandoned = false;
    request->compact_client = 0;
    request->prev = request->next = NULL;
    s_heap_push(self, request);
    return request;
}

static zmq_msg_t *s_request_frame(request_t *request, size_t i)
{
    return i == 0 ? &request->body : &request->more[i - 1];
}

/*  Frees the body frames, leaving an empty body. */
static void s_request_drop_body(request_t *request)
{
    zmq_msg_close(&request->body);
    zmq_msg_init(&request->body);
    if (request->more) {
        for (size_t i = 0; i + 1 < request->n_body; i++)
            zmq_msg_close(&request->more[i]);
        free(request->more);
        request->more = NULL;
    }
    request->n_body = 0;
}

/*  Frees the request's frames and recycles the record. The caller has
    already taken it out of its queue or off its worker. */
static void s_request_destroy(broker_t *self, request_t *request)
{
    if (!request->abandoned)
        s_heap_remove(self, request);
    zmq_msg_close(&request->client);
    s_request_drop_body(request);
    zmq_msg_close(&request->body);
    if (self->pool_len < BROKER_POOL_MAX) {
        request->next = self->pool;
        self->pool = request;
        self->pool_len++;
    } else {
        free(request);
    }
}

/*  ---------------------------------------------------------------------
    Services */

static void s_queue_push_back(service_t *service, request_t *request)
{
    request->next = NULL;
    request->prev = service->queue_tail;
    if (service->queue_tail)
        service->queue_tail->next = request;
    else
        service->queue_head = request;
    service->queue_tail = request;
    service->queue_len++;
}

static void s_queue_push_front(service_t *service, request_t *request)
{
    request->prev = NULL;
    request->next = service->queue_head;
    if (service->queue_head)
        service->queue_head->prev = request;
    else
        service->queue_tail = request;
    service->queue_head = request;
    service->queue_len++;
}

static void s_queue_remove(service_t *service, request_t *request)
{
    if (request->prev)
        request->prev->next = request->next;
    else
        service->queue_head = request->next;
    if (request->next)
        request->next->prev = request->prev;
    else
        service->queue_tail = request->prev;
    request->prev = request->next = NULL;
    service->queue_len--;
}

static service_t *s_service_lookup(broker_t *self, const void *name, size_t len)
{
    return (service_t *)s_table_find(&self->services, s_hash(self, name, len), name, len);
}

/*  Returns the service called `name`, created on first use; NULL when
    BROKER_MAX_SERVICES are known already. */
static service_t *s_service_require(broker_t *self, const void *name, size_t len)
{
    service_t *service = s_service_lookup(self, name, len);
    if (service || self->services.count >= BROKER_MAX_SERVICES)
        return service;
    service = mb_calloc(1, sizeof *service + len + 1);
    service->load = mb_calloc(self->credit + 1, sizeof(s_bucket_t));
    memcpy(service->name, name, len);
    service->name_len = len;
    service->node.hash = s_hash(self, name, len);
    service->node.key = (const unsigned char *)service->name;
    service->node.key_len = len;
    s_table_insert(&self->services, &service->node);
    service->next = self->services_head;
    if (self->services_head)
        self->services_head->prev = service;
    self->services_head = service;
    mb_debug(0, "service %s created", service->name);
    return service;
}

/*  Frees a service with no workers and no requests. Only the periodic
    sweep calls this, so no handler ever holds a pointer to a freed one. */
static void s_service_destroy(broker_t *self, service_t *service)
{
    s_table_remove(&self->services, &service->node);
    if (service->prev)
        service->prev->next = service->next;
    else
        self->services_head = service->next;
    if (service->next)
        service->next->prev = service->prev;
    mb_debug(0, "service %s forgotten", service->name);
    free(service->load);
    free(service);
}

/*  ---------------------------------------------------------------------
    Sending

    Every send uses ZMQ_DONTWAIT: the broker never blocks on one peer.
    With ZMQ_ROUTER_MANDATORY a message's first frame fails with
    EHOSTUNREACH when the peer is gone, or EAGAIN when its pipe is full;
    nothing of the message is sent then. Once the first frame is accepted
    the rest cannot fail. */

#define S_MORE (ZMQ_SNDMORE | ZMQ_DONTWAIT)
#define S_LAST ZMQ_DONTWAIT

/*  Sends a worker command [id]["" ]["MDPW01"][command], followed by more
    frames when `more`. Returns 0, or -1 when the worker is unreachable. */
static int s_send_command(broker_t *self, const void *identity, size_t identity_len,
                          unsigned char command, bool more)
{
    if (zmq_send(self->router, identity, identity_len, S_MORE) < 0)
        return -1;
    zmq_send(self->router, "", 0, S_MORE);
    zmq_send(self->router, MDPW_WORKER, strlen(MDPW_WORKER), S_MORE);
    zmq_send(self->router, &command, 1, more ? S_MORE : S_LAST);
    return 0;
}

/*  Sends a copy of `msg` (zero-copy for large frames: libzmq shares the
    buffer by reference count). */
static void s_send_copy(broker_t *self, zmq_msg_t *msg, int flags)
{
    zmq_msg_t copy;
    zmq_msg_init(&copy);
    zmq_msg_copy(&copy, msg);
    if (zmq_msg_send(&copy, self->router, flags) < 0)
        zmq_msg_close(&copy);
}

/*  Moves `msg` onto the socket. */
static void s_send_move(broker_t *self, zmq_msg_t *msg, int flags)
{
    if (zmq_msg_send(msg, self->router, flags) < 0)
        zmq_msg_close(msg);
}

/*  Sends the head of a client reply [client]["" ]["MDPC01"][service],
    moving `client`; body frames follow when `more`. Returns 0, or -1 when
    the client is gone or too slow (counted as dropped). */
static int s_send_client_head(broker_t *self, zmq_msg_t *client, const char *service,
                              size_t service_len, bool more)
{
    if (zmq_msg_send(client, self->router, S_MORE) < 0) {
        self->stats.dropped++;
        mb_debug(0, "client unreachable (%s): reply dropped", zmq_strerror(errno));
        return -1;
    }
    zmq_send(self->router, "", 0, S_MORE);
    zmq_send(self->router, MDPC_CLIENT, strlen(MDPC_CLIENT), S_MORE);
    zmq_send(self->router, service, service_len, more ? S_MORE : S_LAST);
    return 0;
}

/*  Sends the broker's own error reply {rid, status, error{code, message}},
    moving `client`. */
static void s_send_client_error(broker_t *self, zmq_msg_t *client, const char *service,
                                size_t service_len, uint64_t rid, int status, const char *code,
                                const char *message)
{
    msgpack_sbuffer_clear(&self->sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &self->sbuf, msgpack_sbuffer_write);
    mb_reply_pack_error(&pk, rid, status, code, NULL, message);
    if (s_send_client_head(self, client, service, service_len, true) == 0)
        zmq_send(self->router, self->sbuf.data, self->sbuf.size, S_LAST);
}

/*  Answers a queued `request` with an error and forgets it. The caller
    has taken it out of its queue. */
static void s_request_fail(broker_t *self, request_t *request, int status, const char *code,
                           const char *message)
{
    service_t *service = request->service;
    s_send_client_error(self, &request->client, service->name, service->name_len, request->rid,
                        status, code, message);
    s_request_destroy(self, request);
}

/*  Answers a request a worker holds with an error. The record stays in
    the worker's held list, without its body and out of the deadline heap,
    so the worker's reply, when it comes, still finds the request it is
    for and is dropped: the client gets exactly one reply. */
static void s_request_abandon(broker_t *self, request_t *request, int status, const char *code,
                              const char *message)
{
    service_t *service = request->service;
    zmq_msg_t client;
    zmq_msg_init(&client);
    zmq_msg_copy(&client, &request->client);
    s_send_client_error(self, &client, service->name, service->name_len, request->rid, status, code,
                        message);
    zmq_msg_close(&client);
    s_heap_remove(self, request);
    s_request_drop_body(request);
    request->abandoned = true;
}

/*  ---------------------------------------------------------------------
    Workers */

static worker_t *s_worker_lookup(broker_t *self, zmq_msg_t *identity)
{
    const void *key = zmq_msg_data(identity);
    size_t len = zmq_msg_size(identity);
    return (worker_t *)s_table_find(&self->workers, s_hash(self, key, len), key, len);
}

/*  Puts `worker` at the tail of the bucket for the number of requests it
    holds. Idle workers thus queue in load[0] longest idle first. */
static void s_worker_load(worker_t *worker)
{
    service_t *service = worker->service;
    s_bucket_t *bucket = &service->load[worker->n_held];
    worker->load_next = NULL;
    worker->load_prev = bucket->tail;
    if (bucket->tail)
        bucket->tail->load_next = worker;
    else
        bucket->head = worker;
    bucket->tail = worker;
    if (worker->n_held < service->low)
        service->low = worker->n_held;
}

static void s_worker_unload(worker_t *worker)
{
    s_bucket_t *bucket = &worker->service->load[worker->n_held];
    if (worker->load_prev)
        worker->load_prev->load_next = worker->load_next;
    else
        bucket->head = worker->load_next;
    if (worker->load_next)
        worker->load_next->load_prev = worker->load_prev;
    else
        bucket->tail = worker->load_prev;
    worker->load_prev = worker->load_next = NULL;
}

/*  Records that `worker` was sent `request`: newest at the tail of its
    held list, and one bucket up. */
static void s_worker_hold(worker_t *worker, request_t *request)
{
    s_worker_unload(worker);
    request->worker = worker;
    request->next = NULL;
    request->prev = worker->held_tail;
    if (worker->held_tail)
        worker->held_tail->next = request;
    else
        worker->held_head = request;
    worker->held_tail = request;
    worker->n_held++;
    s_worker_load(worker);
}

/*  Takes `request` off the worker's held list, one bucket down. */
static void s_worker_release(worker_t *worker, request_t *request)
{
    s_worker_unload(worker);
    if (request->prev)
        request->prev->next = request->next;
    else
        worker->held_head = request->next;
    if (request->next)
        request->next->prev = request->prev;
    else
        worker->held_tail = request->prev;
    request->prev = request->next = NULL;
    request->worker = NULL;
    worker->n_held--;
    s_worker_load(worker);
}

/*  True when a busy worker seems to keep up: the request it works on (the
    oldest it holds, begun when it was sent or when the one before it was
    answered) started less than BROKER_CREDIT_STALL_MS ago. */
static bool s_worker_keeps_up(broker_t *self, worker_t *worker)
{
    int64_t began = worker->held_head->sent_at;
    if (worker->replied_at > began)
        began = worker->replied_at;
    return self->now - began < BROKER_CREDIT_STALL_MS;
}

/*  Returns the worker the next request of `service` should go to: the
    longest idle one, else the one holding fewest (below the credit) that
    keeps up, else NULL. The `low` hint skips empty buckets; past the
    first candidate the walk only goes on over workers found stalled. */
static worker_t *s_service_pick(broker_t *self, service_t *service)
{
    while (service->low < self->credit && !service->load[service->low].head)
        service->low++;
    if (service->low == 0)
        return service->load[0].head;
    for (size_t k = service->low; k < self->credit; k++)
        for (worker_t *worker = service->load[k].head; worker; worker = worker->load_next)
            if (s_worker_keeps_up(self, worker))
                return worker;
    return NULL;
}

/*  Registers a worker that said READY for `service` and makes it idle. */
static worker_t *s_worker_new(broker_t *self, zmq_msg_t *identity, service_t *service)
{
    size_t len = zmq_msg_size(identity);
    worker_t *worker = mb_calloc(1, sizeof *worker + len);
    memcpy(worker->identity, zmq_msg_data(identity), len);
    worker->identity_len = len;
    worker->node.hash = s_hash(self, worker->identity, len);
    worker->node.key = worker->identity;
    worker->node.key_len = len;
    s_table_insert(&self->workers, &worker->node);
    worker->next = self->workers_head;
    if (self->workers_head)
        self->workers_head->prev = worker;
    self->workers_head = worker;
    worker->service = service;
    service->n_workers++;
    worker->expiry = self->now + (int64_t)self->heartbeat_ms * self->liveness;
    worker->sent_at = self->now - self->heartbeat_ms; /* heartbeat it at the next sweep */
    s_worker_load(worker);
    return worker;
}

/*  Forgets a worker: the requests it held go back to the front of its
    service's queue in their original order (abandoned ones, answered
    already, are freed), and it is told DISCONNECT when `disconnect`.
    Never dispatches, so callers walking lists stay safe; they call
    s_service_dispatch() when they are done. */
static void s_worker_delete(broker_t *self, worker_t *worker, bool disconnect)
{
    service_t *service = worker->service;
    if (worker->flush_queued) {
        worker_t **link = &self->flush_head;
        while (*link != worker)
            link = &(*link)->flush_next;
        *link = worker->flush_next;
    }
    worker->unsent = NULL; /* those go back to the queue with the rest */
    /* Newest first, each to the front: the oldest ends up first. */
    while (worker->held_tail) {
        request_t *request = worker->held_tail;
        s_worker_release(worker, request);
        if (request->abandoned) {
            s_request_destroy(self, request);
            continue;
        }
        s_queue_push_front(service, request);
        self->stats.redispatched++;
        mb_info(request->rid, "request of a lost worker re-queued for %s", service->name);
    }
    s_worker_unload(worker);
    if (disconnect)
        s_send_command(self, worker->identity, worker->identity_len, MDPW_DISCONNECT, false);
    service->n_workers--;
    s_table_remove(&self->workers, &worker->node);
    if (worker->prev)
        worker->prev->next = worker->next;
    else
        self->workers_head = worker->next;
    if (worker->next)
        worker->next->prev = worker->prev;
    free(worker);
}

/*  Sends REQUEST [id]["" ]["MDPW01"][0x02][client]["" ][body...] with
    copies of the request's frames, which it keeps for a re-dispatch. A
    compact worker gets its one-frame requests from s_worker_flush(), and
    only requests of several body frames in this form.
    Returns 0, or -1 when the worker is unreachable. */
static int s_worker_send_request(broker_t *self, worker_t *worker, request_t *request)
{
    if (s_send_command(self, worker->identity, worker->identity_len, MDPW_REQUEST, true) != 0)
        return -1;
    s_send_copy(self, &request->client, S_MORE);
    zmq_send(self->router, "", 0, request->n_body ? S_MORE : S_LAST);
    for (size_t i = 0; i < request->n_body; i++)
        s_send_copy(self, s_request_frame(request, i), i + 1 < request->n_body ? S_MORE : S_LAST);
    worker->sent_at = self->now;
    return 0;
}

/*  Sends the requests dispatched to a compact worker since its last flush
    as one compact REQUEST, [id][REQUEST][client][body][client][body]...
    (mb_worker.h); unsent ones abandoned meanwhile (deadline) are dropped
    instead. One message for a burst instead of one each: libzmq's cost is
    per message and per frame, on both sides. Sets *dropped when it dropped
    any (the worker has credit free then). Returns 0, or -1 when the
    worker is unreachable (the caller forgets it; what it held, sent or
    not, is queued again). */
static int s_worker_flush(broker_t *self, worker_t *worker, bool *dropped)
{
    static const unsigned char command = MDPW_REQUEST;
    request_t *first = NULL;
    for (request_t *request = worker->unsent, *next; request; request = next) {
        next = request->next;
        if (request->abandoned) {
            /* Answered already and never sent: the worker owes nothing. */
            s_worker_release(worker, request);
            s_request_destroy(self, request);
            *dropped = true;
        } else if (!first) {
            first = request;
        }
    }
    worker->unsent = NULL;
    if (!first)
        return 0;
    if (zmq_send(self->router, worker->identity, worker->identity_len, S_MORE) < 0)
        return -1;
    zmq_send(self->router, &command, 1, S_MORE);
    zmq_msg_t *previous = NULL;
    for (request_t *request = first; request; request = request->next) {
        /* An mb:compact2 worker takes an empty client frame for "the
           client of the pair before": one frame less per request. */
        if (worker->compact == 2 && previous &&
            s_msg_eq_bytes(previous, zmq_msg_data(&request->client),
                           zmq_msg_size(&request->client)))
            zmq_send(self->router, "", 0, S_MORE);
        else
            s_send_copy(self, &request->client, S_MORE);
        previous = &request->client;
        s_send_copy(self, &request->body, request->next ? S_MORE : S_LAST);
    }
    worker->sent_at = self->now;
    return 0;
}

static void s_service_dispatch(broker_t *self, service_t *service);

/*  Flushes every worker with unsent requests. Returns true when anything
    was sent. A worker found unreachable is forgotten and its service
    dispatched again, which may queue more flushes: the loop takes them. */
static bool s_flush_all(broker_t *self)
{
    bool sent = false;
    while (self->flush_head) {
        worker_t *worker = self->flush_head;
        self->flush_head = worker->flush_next;
        worker->flush_next = NULL;
        worker->flush_queued = false;
        sent = true;
        bool dropped = false;
        if (s_worker_flush(self, worker, &dropped) != 0) {
            service_t *service = worker->service;
            char hex[65];
            mb_info(0, "worker %s of %s unreachable (%s): forgotten",
                    s_hex(worker->identity, worker->identity_len, hex), service->name,
                    zmq_strerror(errno));
            s_worker_delete(self, worker, false);
            s_service_dispatch(self, service);
        } else if (dropped) {
            /* The credit they took is free: a queued request may go now
               (into the flush list again, which this loop takes). */
            s_service_dispatch(self, worker->service);
        }
    }
    return sent;
}

/*  Hands waiting requests to workers: idle ones first, longest idle
    first; when all are busy, to the one holding fewest, up to the credit.
    Requests for compact workers are only recorded here and go out in one
    message per worker at the end of the broker's batch (s_flush_all). A
    worker found unreachable is forgotten (what it held is queued again
    in front) and the request tried on the next. */
static void s_service_dispatch(broker_t *self, service_t *service)
{
    worker_t *worker;
    while (service->queue_head && (worker = s_service_pick(self, service))) {
        request_t *request = service->queue_head;
        s_queue_remove(service, request);
        if (worker->compact && request->n_body == 1) {
            request->sent_at = self->now;
            s_worker_hold(worker, request);
            if (!worker->unsent)
                worker->unsent = request;
            if (!worker->flush_queued) {
                worker->flush_queued = true;
                worker->flush_next = self->flush_head;
                self->flush_head = worker;
            }
            continue;
        }
        /* An RFC 7 REQUEST must not overtake the unsent ones before it. */
        bool dropped = false; /* the loop goes on anyway: their credit is used */
        if ((worker->unsent && s_worker_flush(self, worker, &dropped) != 0) ||
            s_worker_send_request(self, worker, request) != 0) {
            char hex[65];
            mb_info(0, "worker %s of %s unreachable (%s): forgotten",
                    s_hex(worker->identity, worker->identity_len, hex), service->name,
                    zmq_strerror(errno));
            /* Its held requests are older: delete puts them in front of this one. */
            s_queue_push_front(service, request);
            s_worker_delete(self, worker, false);
            continue;
        }
        request->sent_at = self->now;
        s_worker_hold(worker, request);
    }
}

/*  ---------------------------------------------------------------------
    Handlers: one per message kind. frames[0] is the peer's routing id,
    frames[1] the empty delimiter, frames[2] the protocol header. Handlers
    may move frames out; the caller closes all n afterwards. */

static bool s_is_bus(const void *name, size_t len)
{
    return len == strlen(BUS_SERVICE) && memcmp(name, BUS_SERVICE, len) == 0;
}

/*  MMI (RFC 8): mmi.service answers "200" when the service named in the
    body has a worker (or is "bus", the broker's own), "404" when not; any
    other mmi.* answers "501". The reply echoes the service asked for, as
    MDP clients check it. */
static void s_handle_mmi(broker_t *self, zmq_msg_t *frames, size_t n)
{
    const char *code = "501";
    if (mb_zmq_msg_eq(&frames[3], MMI_SERVICE)) {
        service_t *service = NULL;
        bool bus = false;
        if (n > 4) {
            service = s_service_lookup(self, zmq_msg_data(&frames[4]), zmq_msg_size(&frames[4]));
            bus = s_is_bus(zmq_msg_data(&frames[4]), zmq_msg_size(&frames[4]));
        }
        code = bus || (service && service->n_workers > 0) ? "200" : "404";
    }
    if (zmq_msg_send(&frames[0], self->router, S_MORE) < 0) {
        self->stats.dropped++;
        return;
    }
    zmq_send(self->router, "", 0, S_MORE);
    zmq_send(self->router, MDPC_CLIENT, strlen(MDPC_CLIENT), S_MORE);
    s_send_move(self, &frames[3], S_MORE);
    zmq_send(self->router, code, 3, S_LAST);
}

/*  True when a client's routing id says it is a musicbus client, which
    takes compact replies (mb_client.h). */
static uint8_t s_compact_client(zmq_msg_t *identity)
{
    size_t len = strlen(MB_CLIENT_ID_PREFIX);
    if (zmq_msg_size(identity) <= len)
        return 0;
    if (memcmp(zmq_msg_data(identity), MB_CLIENT_ID_PREFIX, len) == 0)
        return 2;
    if (memcmp(zmq_msg_data(identity), MB_CLIENT_ID_PREFIX_V1, len) == 0)
        return 1;
    return 0;
}

/*  Reads rid and ttl from the top level of an envelope (mb_envelope.h)
    into *rid and *ttl_ms, leaving 0 for what is missing or malformed. It
    stops as soon as it has both: mb_request_pack_head() puts them before
    args, so the args are never walked. mb_request_peek() checks the whole
    message first and walked it twice, ~8 % of the broker's main thread
    under load; the broker needs no such check, as it routes any body and
    the worker refuses garbage. */
static void s_peek_request(const void *data, size_t size, uint64_t *rid, uint32_t *ttl_ms)
{
    const uint8_t *p = data;
    size_t left = size;
    uint64_t found_rid = 0, found_ttl = 0;
    mb_msgpack_head_t head;
    *rid = 0;
    *ttl_ms = 0;
    if (mb_msgpack_head(p, left, &head) != 0 || head.kind != MB_MP_MAP)
        return;
    uint64_t entries = head.count;
    p += head.head_len;
    left -= head.head_len;
    for (uint64_t i = 0; i < entries && !(found_rid && found_ttl); i++) {
        /* mb_msgpack_head() checks a string's payload is inside `left`. */
        if (mb_msgpack_head(p, left, &head) != 0 || head.kind != MB_MP_STR)
            return;
        bool is_rid = head.count == 3 && memcmp(p + head.head_len, "rid", 3) == 0;
        bool is_ttl = head.count == 3 && memcmp(p + head.head_len, "ttl", 3) == 0;
        p += head.head_len + head.count;
        left -= head.head_len + head.count;
        if (mb_msgpack_head(p, left, &head) != 0 || ((is_rid || is_ttl) && head.kind != MB_MP_UINT))
            return;
        if (is_rid || is_ttl)
            *(is_rid ? &found_rid : &found_ttl) = head.value;
        size_t used =
            head.head_len + (head.kind == MB_MP_ARRAY || head.kind == MB_MP_MAP ? 0 : head.count);
        if ((head.kind == MB_MP_ARRAY || head.kind == MB_MP_MAP) &&
            mb_msgpack_skip(p, left, MB_MSGPACK_MAX_DEPTH - 1, &used) != 0)
            return;
        p += used;
        left -= used;
    }
    *rid = found_rid;
    if (found_ttl <= UINT32_MAX)
        *ttl_ms = (uint32_t)found_ttl;
}

/*  Client request [client]["" ]["MDPC01"][service][body...] (a compact
    one, [client][MB_CLIENT_COMPACT][service][body...], is shifted into
    this layout by the caller). */
static void s_handle_client(broker_t *self, zmq_msg_t *frames, size_t n)
{
    if (n < 4) {
        s_protocol_error(self, &frames[0], "client message without a service frame");
        return;
    }
    const char *name = zmq_msg_data(&frames[3]);
    size_t name_len = zmq_msg_size(&frames[3]);
    if (name_len == 0 || name_len > BROKER_MAX_SERVICE_NAME) {
        s_protocol_error(self, &frames[0], "service name empty or longer than 255 bytes");
        return;
    }
    self->stats.requests++;
    if (name_len >= strlen(MMI_PREFIX) && memcmp(name, MMI_PREFIX, strlen(MMI_PREFIX)) == 0) {
        s_handle_mmi(self, frames, n);
        return;
    }
    if (s_is_bus(name, name_len)) {
        self->stats.bus_requests++;
        bus_request(self->bus, &frames[0], &frames[4], n - 4, self->now);
        return;
    }
    /* Bodies that are not a musicbus envelope are routed all the same
       (foreign MDP clients); they just have rid 0 and the default ttl. */
    uint64_t rid = 0;
    uint32_t ttl_ms = 0;
    if (n > 4)
        s_peek_request(zmq_msg_data(&frames[4]), zmq_msg_size(&frames[4]), &rid, &ttl_ms);
    service_t *service = s_service_require(self, name, name_len);
    if (!service) {
        self->stats.overloaded++;
        s_send_client_error(self, &frames[0], name, name_len, rid, 503, "overloaded",
                            "the broker knows too many services");
        return;
    }
    if (service->queue_len >= self->queue_limit) {
        self->stats.overloaded++;
        s_send_client_error(self, &frames[0], name, name_len, rid, 503, "overloaded",
                            "the service's queue is full");
        return;
    }
    uint8_t compact = s_compact_client(&frames[0]);
    request_t *request = s_request_new(self, &frames[0], &frames[4], n - 4, rid, ttl_ms);
    request->service = service;
    request->compact_client = compact;
    s_queue_push_back(service, request);
    s_service_dispatch(self, service);
}

/*  A worker that broke the protocol is told DISCONNECT and forgotten; a
    request it held goes to another worker. */
static void s_worker_fail(broker_t *self, worker_t *worker, zmq_msg_t *identity, const char *why)
{
    s_protocol_error(self, identity, why);
    if (worker) {
        service_t *service = worker->service;
        s_worker_delete(self, worker, true);
        s_service_dispatch(self, service);
    } else {
        s_send_command(self, zmq_msg_data(identity), zmq_msg_size(identity), MDPW_DISCONNECT,
                       false);
    }
}

/*  READY [service] from a peer not yet known as a worker. */
static void s_handle_ready(broker_t *self, zmq_msg_t *frames, size_t n)
{
    /* RFC 7's READY has one service frame; musicbus workers add an option
       frame asking for compact framing (mb_worker.h). */
    uint8_t compact = 0;
    if (n == 6 && mb_zmq_msg_eq(&frames[5], MB_WORKER_OPT_COMPACT))
        compact = 2;
    else if (n == 6 && mb_zmq_msg_eq(&frames[5], MB_WORKER_OPT_COMPACT_V1))
        compact = 1;
    if (n != 5 && !compact) {
        s_worker_fail(self, NULL, &frames[0], "READY without exactly one service frame");
        return;
    }
    const char *name = zmq_msg_data(&frames[4]);
    size_t name_len = zmq_msg_size(&frames[4]);
    if (name_len == 0 || name_len > BROKER_MAX_SERVICE_NAME) {
        s_worker_fail(self, NULL, &frames[0], "READY for an empty or over-long service name");
        return;
    }
    if ((name_len >= strlen(MMI_PREFIX) && memcmp(name, MMI_PREFIX, strlen(MMI_PREFIX)) == 0) ||
        s_is_bus(name, name_len)) {
        s_worker_fail(self, NULL, &frames[0],
                      "READY for mmi.* or bus, which are the broker's own services");
        return;
    }
    service_t *service = NULL;
    if (self->workers.count < BROKER_MAX_WORKERS)
        service = s_service_require(self, name, name_len);
    if (!service) {
        mb_error(0, "worker for %.*s refused: too many workers or services", (int)name_len, name);
        s_send_command(self, zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]), MDPW_DISCONNECT,
                       false);
        return;
    }
    worker_t *worker = s_worker_new(self, &frames[0], service);
    worker->compact = compact;
    char hex[65];
    mb_info(0, "worker %s ready for %s (%zu now%s)",
            s_hex(worker->identity, worker->identity_len, hex), service->name, service->n_workers,
            compact ? ", compact framing" : "");
    s_service_dispatch(self, service);
}

/*  Sends the replies gathered in `batch` as [client][MB_CLIENT_COMPACT]
    [body]... and frees the slot's frames. */
static void s_replies_send(broker_t *self, s_replies_t *batch)
{
    static const unsigned char compact = MB_CLIENT_COMPACT;
    if (batch->n == 0) {
        /* A slot kept after a full batch went: nothing to send, and a head
           without a body would leave the message open. */
        zmq_msg_close(&batch->client);
    } else if (zmq_msg_send(&batch->client, self->router, S_MORE) < 0) {
        self->stats.dropped += batch->n;
        mb_debug(0, "client unreachable (%s): %zu replies dropped", zmq_strerror(errno), batch->n);
        zmq_msg_close(&batch->client);
        for (size_t i = 0; i < batch->n; i++)
            zmq_msg_close(&batch->bodies[i]);
    } else {
        zmq_send(self->router, &compact, 1, S_MORE);
        for (size_t i = 0; i < batch->n; i++)
            s_send_move(self, &batch->bodies[i], i + 1 < batch->n ? S_MORE : S_LAST);
        self->stats.replies += batch->n;
    }
    batch->n = 0;
}

/*  Sends every client's gathered replies. Returns true when there were any. */
static bool s_replies_flush(broker_t *self)
{
    for (size_t i = 0; i < self->n_replies; i++)
        s_replies_send(self, &self->replies[i]);
    bool sent = self->n_replies > 0;
    self->n_replies = 0;
    return sent;
}

/*  Gathers a reply body for a compact client (moving `client`, when it is
    the client's first, and `body`): it goes out with the others at the end
    of the broker's batch (s_replies_flush), or when the client has
    BROKER_REPLY_BATCH of them. A client is found by a linear search: there
    are only a few (a gateway process each). */
static void s_replies_add(broker_t *self, zmq_msg_t *client, zmq_msg_t *body)
{
    s_replies_t *batch = NULL;
    for (size_t i = 0; i < self->n_replies && !batch; i++)
        if (s_msg_eq_bytes(&self->replies[i].client, zmq_msg_data(client), zmq_msg_size(client)))
            batch = &self->replies[i];
    if (!batch) {
        if (self->n_replies == BROKER_REPLY_CLIENTS) {
            /* Many clients at once: the first slot's replies go now, and
               the last slot's frames move into it. */
            s_replies_t *first = &self->replies[0], *last = &self->replies[--self->n_replies];
            s_replies_send(self, first);
            if (last != first) {
                zmq_msg_init(&first->client);
                zmq_msg_move(&first->client, &last->client);
                for (size_t i = 0; i < last->n; i++) {
                    zmq_msg_init(&first->bodies[i]);
                    zmq_msg_move(&first->bodies[i], &last->bodies[i]);
                    zmq_msg_close(&last->bodies[i]);
                }
                first->n = last->n;
                zmq_msg_close(&last->client);
            }
        }
        batch = &self->replies[self->n_replies++];
        zmq_msg_init(&batch->client);
        zmq_msg_move(&batch->client, client);
        batch->n = 0;
    }
    zmq_msg_init(&batch->bodies[batch->n]);
    zmq_msg_move(&batch->bodies[batch->n++], body);
    if (batch->n == BROKER_REPLY_BATCH) {
        /* Full: send it, and keep the client id for the next replies. */
        zmq_msg_t keep;
        zmq_msg_init(&keep);
        zmq_msg_copy(&keep, &batch->client);
        s_replies_send(self, batch);
        zmq_msg_init(&batch->client);
        zmq_msg_move(&batch->client, &keep);
        zmq_msg_close(&keep);
    }
}

/*  REPLY from a known worker: `client` is the address it names, body[0..
    n_body) the body frames (moved on to the client). frames[0] is its id.
    Returns false when the worker broke the protocol and was forgotten. */
static bool s_handle_reply(broker_t *self, worker_t *worker, zmq_msg_t *frames, zmq_msg_t *client,
                           zmq_msg_t *body, size_t n_body)
{
    service_t *service = worker->service;
    /* An MDP worker answers in the order it reads, so this is the oldest
       held request, unless the worker answers out of order; searching by
       client address keeps those right as long as each client's requests
       are answered in order. */
    request_t *request = worker->held_head;
    while (request && request != worker->unsent &&
           !s_msg_eq_bytes(client, zmq_msg_data(&request->client), zmq_msg_size(&request->client)))
        request = request->next;
    if (request == worker->unsent) /* NULL, or one the worker has not been sent yet */
        request = NULL;
    if (!request) {
        s_worker_fail(self, worker, &frames[0],
                      worker->n_held ? "REPLY for a client it holds no request of"
                                     : "REPLY from a worker holding no request");
        return false;
    }
    s_worker_release(worker, request);
    worker->replied_at = self->now;
    if (request->abandoned) {
        /* Answered with a timeout already: the client gets exactly one
           reply, so this one goes nowhere. */
        self->stats.dropped++;
        s_request_destroy(self, request);
        s_service_dispatch(self, service);
        return true;
    }
    if (request->compact_client == 2 && n_body == 1) {
        s_replies_add(self, &request->client, &body[0]);
    } else if (request->compact_client && n_body == 1) {
        /* [client][MB_CLIENT_COMPACT][body] (mb_client.h) */
        static const unsigned char compact = MB_CLIENT_COMPACT;
        if (zmq_msg_send(&request->client, self->router, S_MORE) < 0) {
            self->stats.dropped++;
            mb_debug(0, "client unreachable (%s): reply dropped", zmq_strerror(errno));
        } else {
            zmq_send(self->router, &compact, 1, S_MORE);
            s_send_move(self, &body[0], S_LAST);
            self->stats.replies++;
        }
    } else if (s_send_client_head(self, &request->client, service->name, service->name_len,
                                  n_body > 0) == 0) {
        for (size_t i = 0; i < n_body; i++)
            s_send_move(self, &body[i], i + 1 < n_body ? S_MORE : S_LAST);
        self->stats.replies++;
    }
    s_request_destroy(self, request);
    s_service_dispatch(self, service);
    return true;
}

/*  Worker message [worker]["" ]["MDPW01"][command][...]. */
static void s_handle_worker(broker_t *self, zmq_msg_t *frames, size_t n)
{
    worker_t *worker = s_worker_lookup(self, &frames[0]);
    if (n < 4 || zmq_msg_size(&frames[3]) != 1) {
        s_worker_fail(self, worker, &frames[0], "worker message without a one-byte command");
        return;
    }
    if (worker)
        worker->expiry = self->now + (int64_t)self->heartbeat_ms * self->liveness;
    unsigned char command = *(unsigned char *)zmq_msg_data(&frames[3]);
    switch (command) {
    case MDPW_READY:
        if (worker)
            s_worker_fail(self, worker, &frames[0], "READY from a worker already ready");
        else
            s_handle_ready(self, frames, n);
        break;
    case MDPW_REPLY:
        if (worker && (n < 6 || !s_msg_is_empty(&frames[5])))
            s_worker_fail(self, worker, &frames[0], "REPLY without client address and delimiter");
        else if (worker)
            s_handle_reply(self, worker, frames, &frames[4], &frames[6], n - 6);
        else {
            /* A worker we forgot (expired, or before a broker restart):
               its request went elsewhere. DISCONNECT makes it start over. */
            self->stats.dropped++;
            s_send_command(self, zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]),
                           MDPW_DISCONNECT, false);
        }
        break;
    case MDPW_HEARTBEAT:
        if (!worker)
            s_send_command(self, zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]),
                           MDPW_DISCONNECT, false);
        break;
    case MDPW_DISCONNECT:
        if (worker) {
            service_t *service = worker->service;
            char hex[65];
            mb_info(0, "worker %s of %s disconnected",
                    s_hex(worker->identity, worker->identity_len, hex), service->name);
            s_worker_delete(self, worker, false);
            s_service_dispatch(self, service);
        }
        break;
    default:
        s_worker_fail(self, worker, &frames[0], "unknown or misdirected worker command");
        break;
    }
}

/*  Compact worker message [worker][command][...] (mb_worker.h): only
    REPLY [client][body]([client][body])..., only from a worker that asked
    for it. */
static void s_handle_compact(broker_t *self, zmq_msg_t *frames, size_t n)
{
    worker_t *worker = s_worker_lookup(self, &frames[0]);
    unsigned char command = *(unsigned char *)zmq_msg_data(&frames[1]);
    if (command != MDPW_REPLY || n < 4 || n % 2 != 0 || (worker && !worker->compact)) {
        s_worker_fail(self, worker, &frames[0], "malformed or unexpected compact message");
        return;
    }
    if (!worker) {
        /* As a classic REPLY from a worker we forgot: DISCONNECT. */
        self->stats.dropped++;
        s_send_command(self, zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]), MDPW_DISCONNECT,
                       false);
        return;
    }
    worker->expiry = self->now + (int64_t)self->heartbeat_ms * self->liveness;
    zmq_msg_t *client = NULL;
    for (size_t i = 2; i < n; i += 2) {
        /* An empty client frame names the client of the pair before. */
        if (!client || !s_msg_is_empty(&frames[i]))
            client = &frames[i];
        if (!s_handle_reply(self, worker, frames, client, &frames[i + 1], 1))
            return; /* forgotten: what it held, answered here or not, is re-queued */
    }
}

/*  Compact requests of a client whose id says it sends several in one
    message (mb_client.h), [client][MB_CLIENT_COMPACT][service][body]
    ([service][body])...: each is handled as [client][.][.][service][body]. */
static void s_handle_compact_requests(broker_t *self, zmq_msg_t *frames, size_t n)
{
    if (n < 4 || n % 2 != 0) {
        s_protocol_error(self, &frames[0], "compact request without [service][body] pairs");
        return;
    }
    zmq_msg_t service;
    zmq_msg_init(&service);
    for (size_t i = 2; i < n; i += 2) {
        zmq_msg_t request[5];
        for (size_t k = 0; k < 5; k++)
            zmq_msg_init(&request[k]);
        zmq_msg_copy(&request[0], &frames[0]);
        /* An empty service frame names the service of the pair before. */
        if (!s_msg_is_empty(&frames[i]))
            zmq_msg_copy(&service, &frames[i]);
        zmq_msg_copy(&request[3], &service);
        zmq_msg_move(&request[4], &frames[i + 1]);
        s_handle_client(self, request, 5);
        for (size_t k = 0; k < 5; k++)
            zmq_msg_close(&request[k]);
    }
    zmq_msg_close(&service);
}

/*  Handles one message of n frames; frames[] has room for one more.
    Returns the number of frames the caller must close (n, or n + 1 when
    a compact client request was shifted into RFC 7's layout). */
static size_t s_handle_message(broker_t *self, zmq_msg_t *frames, size_t n, bool truncated)
{
    if (truncated) {
        s_protocol_error(self, &frames[0], "message with too many frames");
        return n;
    }
    /* An RFC 7 message starts with an empty frame; a one-byte one is a
       musicbus peer's compact message. */
    if (n >= 2 && zmq_msg_size(&frames[1]) == 1) {
        if (*(unsigned char *)zmq_msg_data(&frames[1]) != MB_CLIENT_COMPACT) {
            s_handle_compact(self, frames, n);
            return n;
        }
        if (s_compact_client(&frames[0]) == 2) {
            s_handle_compact_requests(self, frames, n);
            return n;
        }
        /* [client][MB_CLIENT_COMPACT][service][body...]: one frame to the
           right makes it [client][.][.][service][body...]. */
        zmq_msg_init(&frames[n]);
        for (size_t i = n; i > 2; i--)
            zmq_msg_move(&frames[i], &frames[i - 1]);
        s_handle_client(self, frames, n + 1);
        return n + 1;
    }
    if (n < 3 || !s_msg_is_empty(&frames[1])) {
        s_protocol_error(self, &frames[0], "message without empty delimiter and header");
        return n;
    }
    if (mb_zmq_msg_eq(&frames[2], MDPC_CLIENT))
        s_handle_client(self, frames, n);
    else if (mb_zmq_msg_eq(&frames[2], MDPW_WORKER))
        s_handle_worker(self, frames, n);
    else
        s_protocol_error(self, &frames[0], "unknown protocol header");
    return n;
}

/*  ---------------------------------------------------------------------
    Timers */

/*  Answers every request whose deadline has passed: 503 no_workers when
    its service has no worker at all, else 504 timeout. A worker holding
    one is left to finish; its late reply will be dropped. A held request
    that expires does not free the worker's credit: the worker is still
    busy with it. */
static void s_expire_requests(broker_t *self)
{
    while (self->heap_len > 0 && self->heap[0]->deadline <= self->now) {
        request_t *request = self->heap[0];
        service_t *service = request->service;
        self->stats.expired++;
        mb_debug(request->rid, "request for %s expired", service->name);
        if (request->worker) {
            s_request_abandon(self, request, 504, "timeout", "no reply before the deadline");
            continue;
        }
        s_queue_remove(service, request);
        if (service->n_workers == 0)
            s_request_fail(self, request, 503, "no_workers", "no worker offers this service");
        else
            s_request_fail(self, request, 504, "timeout", "no reply before the deadline");
    }
}

/*  Once per heartbeat interval: forget silent workers (their requests go
    to others), heartbeat the rest, dispatch what that freed or re-queued,
    and forget services nobody offers or asks for. */
static void s_sweep(broker_t *self)
{
    worker_t *worker = self->workers_head;
    while (worker) {
        worker_t *next = worker->next;
        if (worker->expiry <= self->now) {
            char hex[65];
            mb_warn(0, "worker %s of %s expired (silent for %lld ms)",
                    s_hex(worker->identity, worker->identity_len, hex), worker->service->name,
                    (long long)self->heartbeat_ms * self->liveness);
            s_worker_delete(self, worker, true);
        } else if (self->now - worker->sent_at >= self->heartbeat_ms / 2) {
            /* Peers should not heartbeat while other traffic flows (RFC
               7); half an interval keeps the worker's gap below 1.5. */
            if (s_send_command(self, worker->identity, worker->identity_len, MDPW_HEARTBEAT,
                               false) == 0)
                worker->sent_at = self->now;
            else
                s_worker_delete(self, worker, false);
        }
        worker = next;
    }
    service_t *service = self->services_head;
    while (service) {
        service_t *next = service->next;
        s_service_dispatch(self, service);
        if (service->n_workers == 0 && service->queue_len == 0)
            s_service_destroy(self, service);
        service = next;
    }
}

/*  True when some counter moved since the last counters line. */
static bool s_stats_moved(broker_t *self)
{
    bus_stats_t bus = {0};
    if (self->bus)
        bus_stats(self->bus, &bus);
    return memcmp(&self->stats, &self->stats_logged, sizeof self->stats) != 0 ||
           memcmp(&bus, &self->bus_logged, sizeof bus) != 0;
}

static void s_log_stats(broker_t *self, const char *when)
{
    broker_stats_t *s = &self->stats;
    bus_stats_t bus = {0};
    if (self->bus)
        bus_stats(self->bus, &bus);
    mb_info(0,
            "%s: requests=%llu replies=%llu redispatched=%llu expired=%llu overloaded=%llu "
            "dropped=%llu protocol_errors=%llu workers=%zu services=%zu pending=%zu "
            "publishes=%llu events=%llu fetches=%llu bus_errors=%llu parked=%llu pruned=%llu",
            when, (unsigned long long)s->requests, (unsigned long long)s->replies,
            (unsigned long long)s->redispatched, (unsigned long long)s->expired,
            (unsigned long long)s->overloaded, (unsigned long long)s->dropped,
            (unsigned long long)s->protocol_errors, self->workers.count, self->services.count,
            self->heap_len, (unsigned long long)bus.publishes, (unsigned long long)bus.events,
            (unsigned long long)bus.fetches, (unsigned long long)bus.errors,
            (unsigned long long)bus.parked, (unsigned long long)bus.pruned);
    self->stats_logged = self->stats;
    self->bus_logged = bus;
    self->proto_logged = 0;
}

/*  Milliseconds until the next timer: sweep, stats, a deadline, or the
    end of a long poll. */
static long s_poll_timeout(broker_t *self)
{
    int64_t next = self->sweep_at < self->stats_at ? self->sweep_at : self->stats_at;
    if (self->heap_len > 0 && self->heap[0]->deadline < next)
        next = self->heap[0]->deadline;
    if (bus_next_deadline(self->bus) < next)
        next = bus_next_deadline(self->bus);
    return next > self->now ? (long)(next - self->now) : 0;
}

/*  ---------------------------------------------------------------------
    new / destroy */

typedef struct {
    const char *bind;
    const char *ready_file;
    long heartbeat_ms;
    long liveness;
    long queue_limit;
    long credit;
    long timeout_ms;
    const char *data;     /* the log lives in <data>/broker */
    long retention_age;   /* seconds; 0 = no limit */
    long retention_bytes; /* 0 = no limit */
    long log_map_size;    /* MiB */
} broker_opts_t;

/*  How the bus answers: an MDP client reply from service "bus". */
static void s_bus_reply(void *arg, zmq_msg_t *client, const void *body, size_t size)
{
    broker_t *self = arg;
    if (s_send_client_head(self, client, BUS_SERVICE, strlen(BUS_SERVICE), true) == 0)
        zmq_send(self->router, body, size, S_LAST);
}

static broker_t *s_broker_new(const broker_opts_t *opts)
{
    broker_t *self = mb_calloc(1, sizeof *self);
    self->heartbeat_ms = (int)opts->heartbeat_ms;
    self->liveness = (int)opts->liveness;
    self->queue_limit = (size_t)opts->queue_limit;
    self->credit = (size_t)opts->credit;
    self->timeout_ms = (int)opts->timeout_ms;
    self->hash_seed = (uint32_t)getpid() * 2654435761u ^ (uint32_t)s_clock_ms();
    s_table_init(&self->services, 64);
    s_table_init(&self->workers, 64);
    msgpack_sbuffer_init(&self->sbuf);
    self->replies = mb_calloc(BROKER_REPLY_CLIENTS, sizeof *self->replies);

    self->router = zmq_socket(mb_zmq_context(), ZMQ_ROUTER);
    int one = 1, zero = 0, hwm = BROKER_HWM;
    int64_t max_frame = BROKER_MAX_FRAME_BYTES;
    if (!self->router || zmq_setsockopt(self->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one) ||
        zmq_setsockopt(self->router, ZMQ_ROUTER_HANDOVER, &one, sizeof one) ||
        zmq_setsockopt(self->router, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_setsockopt(self->router, ZMQ_SNDHWM, &hwm, sizeof hwm) ||
        zmq_setsockopt(self->router, ZMQ_RCVHWM, &hwm, sizeof hwm) ||
        zmq_setsockopt(self->router, ZMQ_MAXMSGSIZE, &max_frame, sizeof max_frame)) {
        mb_error(0, "cannot make the ROUTER socket: %s", zmq_strerror(errno));
        goto fail;
    }
    if (zmq_bind(self->router, opts->bind) != 0) {
        mb_error(0, "cannot bind %s: %s", opts->bind, zmq_strerror(errno));
        goto fail;
    }
    size_t size = sizeof self->endpoint;
    if (zmq_getsockopt(self->router, ZMQ_LAST_ENDPOINT, self->endpoint, &size) != 0)
        snprintf(self->endpoint, sizeof self->endpoint, "%s", opts->bind);
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s/broker", opts->data) >= (int)sizeof dir) {
        mb_error(0, "data folder path too long");
        goto fail;
    }
    bus_opts_t bus_opts = {.dir = dir,
                           .map_size = (size_t)opts->log_map_size << 20,
                           .retention_ms = (uint64_t)opts->retention_age * 1000,
                           .retention_bytes = (uint64_t)opts->retention_bytes,
                           .timeout_ms = self->timeout_ms};
    self->bus = bus_new(&bus_opts, s_bus_reply, self);
    if (!self->bus)
        goto fail;
    self->now = s_clock_ms();
    self->sweep_at = self->now + self->heartbeat_ms;
    self->stats_at = self->now + BROKER_STATS_INTERVAL_MS;
    return self;

fail:
    if (self->router)
        zmq_close(self->router);
    s_table_free(&self->services);
    s_table_free(&self->workers);
    msgpack_sbuffer_destroy(&self->sbuf);
    free(self->replies);
    free(self);
    return NULL;
}

/*  Answers every pending request with 503 "unavailable", tells every
    worker DISCONNECT (so it reconnects to the next broker at once), gives
    that a moment to leave, and frees everything. Safe to call twice. */
static void s_broker_destroy(broker_t **self_p)
{
    broker_t *self = *self_p;
    if (!self)
        return;
    while (self->heap_len > 0) {
        request_t *request = self->heap[0];
        if (request->worker) {
            s_request_abandon(self, request, 503, "unavailable", "the broker is shutting down");
            continue;
        }
        s_queue_remove(request->service, request);
        s_request_fail(self, request, 503, "unavailable", "the broker is shutting down");
    }
    s_replies_flush(self);
    /* Publishes in hand are committed and acknowledged before we go. */
    bus_destroy(&self->bus);
    while (self->workers_head)
        s_worker_delete(self, self->workers_head, true);
    while (self->services_head)
        s_service_destroy(self, self->services_head);
    int linger = BROKER_SHUTDOWN_LINGER_MS;
    zmq_setsockopt(self->router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(self->router);
    while (self->pool) {
        request_t *next = self->pool->next;
        free(self->pool);
        self->pool = next;
    }
    free(self->heap);
    s_table_free(&self->services);
    s_table_free(&self->workers);
    msgpack_sbuffer_destroy(&self->sbuf);
    free(self->replies);
    free(self);
    *self_p = NULL;
}

/*  ---------------------------------------------------------------------
    The loop */

/*  Receives one whole message into frames[] without waiting. Returns the
    number of frames, 0 when none is waiting, -1 on a socket error (errno
    set). Frames
    beyond BROKER_MAX_FRAMES are discarded and *truncated set. */
static int s_recv_message(broker_t *self, zmq_msg_t *frames, bool *truncated)
{
    *truncated = false;
    zmq_msg_init(&frames[0]);
    if (zmq_msg_recv(&frames[0], self->router, ZMQ_DONTWAIT) < 0) {
        int err = errno;
        zmq_msg_close(&frames[0]);
        errno = err;
        return err == EAGAIN ? 0 : -1;
    }
    int n = 1;
    bool more = zmq_msg_more(&frames[0]);
    /* The rest of a message is always here once its first frame is. */
    while (more) {
        zmq_msg_t *frame = &frames[n];
        zmq_msg_t spare;
        if (n == BROKER_MAX_FRAMES) {
            frame = &spare;
            *truncated = true;
        }
        zmq_msg_init(frame);
        if (zmq_msg_recv(frame, self->router, 0) < 0) {
            zmq_msg_close(frame);
            break;
        }
        more = zmq_msg_more(frame);
        if (frame == &spare)
            zmq_msg_close(frame);
        else
            n++;
    }
    return n;
}

/*  The loop reads every message waiting, runs the timers, and sleeps in
    poll() on the sockets' ZMQ_FDs only when a read found the ROUTER
    empty with no send since. Those fds are edge-triggered: libzmq signals
    one when a command arrives for its socket while none was pending, and
    a receive that finds nothing takes in every pending command, so after
    it the next message is sure to signal. A send may take in such a
    command too (libzmq processes commands on sends now and then), and
    then a message would wait unannounced: so after anything that may have
    sent (timers, the bus's replies, a publish on the bus's socket) the
    loop reads once more before sleeping. Compared with zmq_poll(), which
    asks ZMQ_EVENTS of every socket before and after every sleep, this
    saves about ten system calls per wake-up, which under load is what the
    broker's main thread spends most of its time on. */
static int s_broker_run(broker_t *self)
{
    zmq_msg_t frames[BROKER_MAX_FRAMES + 1]; /* + 1: see s_handle_message() */
    struct pollfd fds[2] = {{.fd = mb_zmq_fd(self->router), .events = POLLIN},
                            {.fd = mb_zmq_fd(bus_socket(self->bus)), .events = POLLIN}};
    if (fds[0].fd < 0 || fds[1].fd < 0) {
        mb_error(0, "cannot get the sockets' fds: %s", zmq_strerror(errno));
        return -1;
    }
    bool bus_due = true; /* the bus's socket may hold commits no fd will announce */
    while (!mb_signal_stop_requested()) {
        self->now = s_clock_ms();
        if (bus_due) {
            /* Commits first: their publishers and the fetches they wake. */
            bus_process(self->bus);
            bus_due = false;
        }
        uint64_t published = self->stats.bus_requests;
        bool drained = false; /* the batch ended because nothing was waiting */
        for (int handled = 0; handled < BROKER_RECV_BATCH; handled++) {
            bool truncated;
            int n = s_recv_message(self, frames, &truncated);
            if (n <= 0) {
                if (n < 0 && errno != EINTR) {
                    mb_error(0, "receive failed: %s", zmq_strerror(errno));
                    return -1;
                }
                drained = n == 0; /* EINTR: the loop top looks at the stop flag */
                break;
            }
            size_t used = s_handle_message(self, frames, (size_t)n, truncated);
            for (size_t i = 0; i < used; i++)
                zmq_msg_close(&frames[i]);
            if ((handled & 63) == 63) {
                self->now = s_clock_ms();
                s_flush_all(self);
                s_replies_flush(self);
            }
        }
        /* A bus request sends on the bus's socket: read it before sleeping. */
        bus_due = self->stats.bus_requests != published;
        bool quiet = drained && !bus_due;
        if (self->heap_len > 0 && self->heap[0]->deadline <= self->now) {
            s_expire_requests(self);
            quiet = false;
        }
        if (bus_next_deadline(self->bus) <= self->now) {
            bus_expire(self->bus, self->now);
            quiet = false;
        }
        if (self->now >= self->sweep_at) {
            s_sweep(self);
            self->sweep_at = self->now + self->heartbeat_ms;
            quiet = false;
        }
        if (self->now >= self->stats_at) {
            if (s_stats_moved(self))
                s_log_stats(self, "counters");
            self->proto_logged = 0;
            self->stats_at = self->now + BROKER_STATS_INTERVAL_MS;
        }
        /* Requests dispatched to compact workers go out now, one message
           per worker for the whole batch. */
        if (s_flush_all(self))
            quiet = false;
        /* So do the replies gathered for compact clients. */
        if (s_replies_flush(self))
            quiet = false;
        /* Under load a batch ends at its cap with more waiting: go straight
           back to reading. */
        if (!quiet)
            continue;
        long timeout = s_poll_timeout(self);
        if (poll(fds, 2, timeout > INT_MAX ? INT_MAX : (int)timeout) < 0 && errno != EINTR) {
            mb_error(0, "poll failed: %s", strerror(errno));
            return -1;
        }
        bus_due = (fds[1].revents & POLLIN) != 0;
    }
    return 0;
}

/*  Writes `endpoint` to path.tmp, then renames it to path, so a reader
    never sees a partial address. */
static int s_write_ready_file(const char *path, const char *endpoint)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return -1;
    FILE *file = fopen(tmp, "w");
    if (!file)
        return -1;
    bool ok = fputs(endpoint, file) >= 0;
    ok = fclose(file) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: musicbus-broker [options]\n"
            "  --bind ENDPOINT     ZeroMQ endpoint to bind (env %s, default %s;\n"
            "                      tcp://127.0.0.1:* picks a free port)\n"
            "  --heartbeat MS      heartbeat interval (env %s, default %d)\n"
            "  --liveness N        heartbeats a worker may miss (env %s, default %d)\n"
            "  --queue-limit N     waiting requests per service (env %s, default %d)\n"
            "  --worker-credit N   requests one worker may hold when all are busy\n"
            "                      (env %s, default %d, 1..%d; 1 = classic MDP)\n"
            "  --timeout MS        deadline of requests without ttl (env %s, default %d)\n"
            "  --data DIR          the event log goes in DIR/broker (env %s, default %s)\n"
            "  --retention-age S   keep events S seconds, 0 = forever (env %s, default %ld)\n"
            "  --retention-bytes N keep the event log below N bytes, 0 = no limit\n"
            "                      (env %s, default %ld)\n"
            "  --log-map-size MIB  LMDB map size of the event log (env %s, default %ld)\n"
            "  --ready-file PATH   write the bound endpoint there once listening\n"
            "  --help              this text\n",
            MB_ENV_BUS, MB_DEFAULT_BUS, MB_ENV_HEARTBEAT_MS, MB_DEFAULT_HEARTBEAT_MS,
            MB_ENV_LIVENESS, MB_DEFAULT_LIVENESS, BROKER_ENV_QUEUE_LIMIT,
            BROKER_DEFAULT_QUEUE_LIMIT, BROKER_ENV_WORKER_CREDIT, BROKER_DEFAULT_WORKER_CREDIT,
            BROKER_MAX_WORKER_CREDIT, MB_ENV_TIMEOUT_MS, MB_DEFAULT_TIMEOUT_MS, MB_ENV_DATA,
            MB_DEFAULT_DATA, BROKER_ENV_RETENTION_AGE, BROKER_DEFAULT_RETENTION_AGE,
            BROKER_ENV_RETENTION_BYTES, BROKER_DEFAULT_RETENTION_BYTES, BROKER_ENV_LOG_MAP_SIZE,
            BROKER_DEFAULT_LOG_MAP_SIZE);
}

/*  Parses a numeric flag; prints why and returns -1 when it is not a
    whole number in range. */
static int s_parse_flag(const char *flag, const char *text, long min, long max, long *out)
{
    if (mb_config_parse_long(text, min, max, out) == 0)
        return 0;
    fprintf(stderr, "musicbus-broker: --%s wants a whole number in [%ld, %ld], not '%s'\n", flag,
            min, max, text);
    return -1;
}

#define S_MAX_RETENTION_AGE (100L * 365 * 24 * 3600) /* seconds */
#define S_MAX_BYTES (1L << 50)
#define S_MAX_MAP_MIB (1L << 30) /* 1 PiB: LMDB only reserves address space */

int main(int argc, char *argv[])
{
    mb_log_init("broker");
    broker_opts_t opts = {
        .bind = mb_config_env(MB_ENV_BUS, MB_DEFAULT_BUS),
        .heartbeat_ms =
            mb_config_env_long(MB_ENV_HEARTBEAT_MS, MB_DEFAULT_HEARTBEAT_MS, 10, 3600000),
        .liveness = mb_config_env_long(MB_ENV_LIVENESS, MB_DEFAULT_LIVENESS, 1, 1000),
        .queue_limit =
            mb_config_env_long(BROKER_ENV_QUEUE_LIMIT, BROKER_DEFAULT_QUEUE_LIMIT, 1, 100000000),
        .credit = mb_config_env_long(BROKER_ENV_WORKER_CREDIT, BROKER_DEFAULT_WORKER_CREDIT, 1,
                                     BROKER_MAX_WORKER_CREDIT),
        .timeout_ms = mb_config_env_long(MB_ENV_TIMEOUT_MS, MB_DEFAULT_TIMEOUT_MS, 1, 86400000),
        .data = mb_config_env(MB_ENV_DATA, MB_DEFAULT_DATA),
        .retention_age = mb_config_env_long(BROKER_ENV_RETENTION_AGE, BROKER_DEFAULT_RETENTION_AGE,
                                            0, S_MAX_RETENTION_AGE),
        .retention_bytes = mb_config_env_long(BROKER_ENV_RETENTION_BYTES,
                                              BROKER_DEFAULT_RETENTION_BYTES, 0, S_MAX_BYTES),
        .log_map_size = mb_config_env_long(BROKER_ENV_LOG_MAP_SIZE, BROKER_DEFAULT_LOG_MAP_SIZE, 1,
                                           S_MAX_MAP_MIB),
    };
    static const struct option options[] = {
        {"bind", required_argument, NULL, 'b'},
        {"heartbeat", required_argument, NULL, 'H'},
        {"liveness", required_argument, NULL, 'l'},
        {"queue-limit", required_argument, NULL, 'q'},
        {"timeout", required_argument, NULL, 't'},
        {"ready-file", required_argument, NULL, 'r'},
        {"worker-credit", required_argument, NULL, 'c'},
        {"data", required_argument, NULL, 'd'},
        {"retention-age", required_argument, NULL, 'A'},
        {"retention-bytes", required_argument, NULL, 'B'},
        {"log-map-size", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        int rc = 0;
        switch (opt) {
        case 'b':
            opts.bind = optarg;
            break;
        case 'H':
            rc = s_parse_flag("heartbeat", optarg, 10, 3600000, &opts.heartbeat_ms);
            break;
        case 'l':
            rc = s_parse_flag("liveness", optarg, 1, 1000, &opts.liveness);
            break;
        case 'q':
            rc = s_parse_flag("queue-limit", optarg, 1, 100000000, &opts.queue_limit);
            break;
        case 't':
            rc = s_parse_flag("timeout", optarg, 1, 86400000, &opts.timeout_ms);
            break;
        case 'c':
            rc = s_parse_flag("worker-credit", optarg, 1, BROKER_MAX_WORKER_CREDIT, &opts.credit);
            break;
        case 'd':
            opts.data = optarg;
            break;
        case 'A':
            rc = s_parse_flag("retention-age", optarg, 0, S_MAX_RETENTION_AGE, &opts.retention_age);
            break;
        case 'B':
            rc = s_parse_flag("retention-bytes", optarg, 0, S_MAX_BYTES, &opts.retention_bytes);
            break;
        case 'm':
            rc = s_parse_flag("log-map-size", optarg, 1, S_MAX_MAP_MIB, &opts.log_map_size);
            break;
        case 'r':
            opts.ready_file = optarg;
            break;
        case 'h':
            s_usage(stdout);
            return 0;
        default:
            s_usage(stderr);
            return 2;
        }
        if (rc != 0)
            return 2;
    }
    if (optind < argc) {
        s_usage(stderr);
        return 2;
    }

    mb_signal_install();
    broker_t *broker = s_broker_new(&opts);
    if (!broker) {
        mb_zmq_shutdown();
        return 1;
    }
    mb_info(0,
            "listening on %s (heartbeat %ld ms, liveness %ld, queue limit %ld, worker credit %ld, "
            "timeout %ld ms; event log in %s/broker, retention %ld s / %ld bytes, map %ld MiB)",
            broker->endpoint, opts.heartbeat_ms, opts.liveness, opts.queue_limit, opts.credit,
            opts.timeout_ms, opts.data, opts.retention_age, opts.retention_bytes,
            opts.log_map_size);
    if (opts.ready_file && s_write_ready_file(opts.ready_file, broker->endpoint) != 0) {
        mb_error(0, "cannot write ready file %s: %s", opts.ready_file, strerror(errno));
        s_broker_destroy(&broker);
        mb_zmq_shutdown();
        return 1;
    }
    int rc = s_broker_run(broker);
    s_log_stats(broker, "exit");
    s_broker_destroy(&broker);
    mb_zmq_shutdown();
    return rc == 0 ? 0 : 1;
}
