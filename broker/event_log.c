/*  event_log — the broker's durable event log (see event_log.h). */
#include "event_log.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "mb_alloc.h"
#include "mb_error.h"
#include "mb_log.h"
#include "mb_msgpack.h"
#include "mb_zmq.h"

/*  One transaction takes what is pending up to about this much, so a
    flood of publishes cannot make one transaction too big for LMDB
    (MDB_TXN_FULL) or hold its publishers for long; the rest goes in the
    next one. */
#define S_TXN_BYTES (64u << 20)
#define S_TXN_EVENTS 200000

#define S_PRUNE_CHUNK 2000 /* events deleted per retention transaction */
#define S_PRUNE_INTERVAL_MS                                                                        \
    500                   /* retention looked at this often when idle (and                         \
                             after every write) */
#define S_SKIP_LOG_MAX 10 /* malformed records logged, then only counted */

struct event_log {
    MDB_env *env;
    MDB_dbi events;
    MDB_dbi meta;
    int lock_fd;
    uint64_t retention_ms;
    uint64_t retention_bytes;
    char endpoint[64]; /* inproc address joining the two threads */

    /* main thread */
    void *pipe;        /* PAIR: batches out, completions in */
    MDB_txn *read_txn; /* reset between fetches, renewed for the next */
    MDB_cursor *read_cursor;
    struct {
        uint64_t seq;
        const unsigned char *value;
        size_t size;
    } * found; /* a fetch's matches, pointing into the map */
    size_t found_cap;
    uint64_t head; /* last seq the writer reported committed */
    bool stopped;  /* the writer was told to stop */
    bool running;  /* the writer thread exists and was not joined */
    unsigned skip_logged;

    /* writer thread */
    pthread_t thread;
    void *writer_pipe; /* PAIR, the writer's end */
    uint64_t last_seq; /* last seq committed */
    _Atomic uint64_t pruned;
};

/* ---- small helpers ----------------------------------------------------- */

static void s_key_put(unsigned char key[8], uint64_t seq)
{
    for (int i = 7; i >= 0; i--) {
        key[i] = (unsigned char)seq;
        seq >>= 8;
    }
}

static uint64_t s_key_get(const void *data)
{
    const unsigned char *p = data;
    uint64_t seq = 0;
    for (int i = 0; i < 8; i++)
        seq = seq << 8 | p[i];
    return seq;
}

static uint64_t s_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int s_mkdir_p(const char *dir)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(path, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/*  What the log needs from a stored value. */
typedef struct {
    const char *topic;
    size_t topic_len;
    uint64_t time;
} s_value_t;

/*  Reads one msgpack string at v[*at] (size bytes in all); advances *at. */
static bool s_read_str(const unsigned char *v, size_t size, size_t *at, const char **s, size_t *len)
{
    mb_msgpack_head_t head;
    if (mb_msgpack_head(v + *at, size - *at, &head) != 0 || head.kind != MB_MP_STR ||
        head.count > size - *at - head.head_len)
        return false;
    *s = (const char *)v + *at + head.head_len;
    *len = (size_t)head.count;
    *at += head.head_len + (size_t)head.count;
    return true;
}

static bool s_read_key(const unsigned char *v, size_t size, size_t *at, const char *name)
{
    const char *s;
    size_t len;
    return s_read_str(v, size, at, &s, &len) && len == strlen(name) && memcmp(s, name, len) == 0;
}

/*  Checks that `v` has the stored layout, {"topic", "key", "time", "data"}
    in that order in a 4-entry fixmap, and reads topic and time. */
static bool s_value_parse(const void *data, size_t size, s_value_t *out)
{
    const unsigned char *v = data;
    size_t at = 1;
    const char *key;
    size_t key_len;
    mb_msgpack_head_t head;
    if (size < 2 || v[0] != 0x84 || !s_read_key(v, size, &at, "topic") ||
        !s_read_str(v, size, &at, &out->topic, &out->topic_len) ||
        !s_read_key(v, size, &at, "key") || !s_read_str(v, size, &at, &key, &key_len) ||
        !s_read_key(v, size, &at, "time") || mb_msgpack_head(v + at, size - at, &head) != 0 ||
        head.kind != MB_MP_UINT)
        return false;
    out->time = head.value;
    at += head.head_len;
    return s_read_key(v, size, &at, "data") && at < size;
}

static bool s_filter_match(const event_filter_t *filter, const char *topic, size_t len)
{
    if (filter->n_topics == 0)
        return len >= filter->prefix_len && memcmp(topic, filter->prefix, filter->prefix_len) == 0;
    for (size_t i = 0; i < filter->n_topics; i++)
        if (filter->topic_lens[i] == len && memcmp(filter->topics[i], topic, len) == 0)
            return true;
    return false;
}

/* ---- batches -------------------------------------------------------------- */

event_batch_t *event_batch_new(void *owner)
{
    event_batch_t *self = mb_calloc(1, sizeof *self);
    self->owner = owner;
    msgpack_sbuffer_init(&self->values);
    return self;
}

void event_batch_destroy(event_batch_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    event_batch_t *self = *self_p;
    msgpack_sbuffer_destroy(&self->values);
    free(self->ends);
    free(self);
    *self_p = NULL;
}

size_t event_batch_add(event_batch_t *self, const char *topic, size_t topic_len, const char *key,
                       size_t key_len, uint64_t time_ms, const msgpack_object *data,
                       size_t *data_at)
{
    if (self->count == self->ends_cap) {
        self->ends_cap = self->ends_cap ? self->ends_cap * 2 : 16;
        self->ends = mb_realloc(self->ends, self->ends_cap * sizeof *self->ends);
    }
    size_t start = self->values.size;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &self->values, msgpack_sbuffer_write);
    /* The layout event_log_fetch() relies on: a fixmap of these four. */
    msgpack_pack_map(&pk, 4);
    mb_pack_cstr(&pk, "topic");
    mb_pack_strn(&pk, topic, topic_len);
    mb_pack_cstr(&pk, "key");
    mb_pack_strn(&pk, key, key_len);
    mb_pack_cstr(&pk, "time");
    msgpack_pack_uint64(&pk, time_ms);
    mb_pack_cstr(&pk, "data");
    *data_at = self->values.size;
    mb_pack_object(&pk, data);
    self->ends[self->count++] = self->values.size;
    return self->values.size - start;
}

void event_batch_drop_last(event_batch_t *self)
{
    if (self->count == 0)
        return;
    self->count--;
    self->values.size = self->count ? self->ends[self->count - 1] : 0;
}

/* ---- the writer thread ---------------------------------------------------- */

static size_t s_value_start(const event_batch_t *batch, size_t i)
{
    return i ? batch->ends[i - 1] : 0;
}

/*  Writes the batches from `first` (all of them, or only `first` when
    `one`) in one transaction, giving seqs after self->last_seq. Returns 0
    (then every batch has its `first` and last_seq moved) or the LMDB
    error (nothing changed). */
static int s_write_txn(event_log_t *self, event_batch_t *first, bool one)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc)
        return rc;
    uint64_t seq = self->last_seq;
    for (event_batch_t *batch = first; batch && rc == 0; batch = one ? NULL : batch->next) {
        batch->first = seq + 1;
        for (size_t i = 0; i < batch->count && rc == 0; i++) {
            unsigned char key_bytes[8];
            s_key_put(key_bytes, ++seq);
            size_t start = s_value_start(batch, i);
            MDB_val key = {8, key_bytes};
            MDB_val value = {batch->ends[i] - start, batch->values.data + start};
            rc = mdb_put(txn, self->events, &key, &value, MDB_APPEND);
        }
    }
    if (rc == 0) {
        unsigned char last[8];
        s_key_put(last, seq);
        MDB_val key = {8, "last_seq"}, value = {8, last};
        rc = mdb_put(txn, self->meta, &key, &value, 0);
    }
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    if (rc == 0) {
        self->last_seq = seq;
        return 0;
    }
    for (event_batch_t *batch = first; batch; batch = one ? NULL : batch->next)
        batch->first = 0;
    return rc;
}

static size_t s_prune(event_log_t *self, bool *more);

/*  Deletes all that retention allows; returns true when it deleted
    anything. LMDB reuses the pages a transaction frees only two
    transactions later (the previous snapshot stays valid until then), so
    one small transaction (the meta record rewritten) follows the deletes
    before the caller tries again. */
static bool s_make_room(event_log_t *self)
{
    size_t deleted = 0;
    bool more = true;
    while (more)
        deleted += s_prune(self, &more);
    if (deleted == 0)
        return false;
    MDB_txn *txn;
    if (mdb_txn_begin(self->env, NULL, 0, &txn) != 0)
        return true;
    unsigned char last[8];
    s_key_put(last, self->last_seq);
    MDB_val key = {8, "last_seq"}, value = {8, last};
    if (mdb_put(txn, self->meta, &key, &value, 0) == 0)
        mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    return true;
}

/*  Writes a list of batches: all in one transaction when it can. When the
    map is full it prunes what retention allows and tries again, and then
    batch by batch, so each batch that fits is still written whole and each
    that does not is refused alone. */
static void s_write(event_log_t *self, event_batch_t *list)
{
    int rc = s_write_txn(self, list, false);
    if (rc == MDB_MAP_FULL && s_make_room(self))
        rc = s_write_txn(self, list, false);
    if (rc == 0) {
        for (event_batch_t *batch = list; batch; batch = batch->next)
            batch->status = 0;
        return;
    }
    if (rc != MDB_MAP_FULL) {
        mb_error(0, "event log: writing %s failed: %s", list->next ? "batches" : "a batch",
                 mdb_strerror(rc));
        for (event_batch_t *batch = list; batch; batch = batch->next)
            batch->status = MB_EDB;
        return;
    }
    for (event_batch_t *batch = list; batch; batch = batch->next) {
        rc = list->next ? s_write_txn(self, batch, true) : rc;
        batch->status = rc == 0 ? 0 : rc == MDB_MAP_FULL ? MB_EFULL : MB_EDB;
        if (rc)
            mb_error(0, "event log: a batch of %zu events refused: %s", batch->count,
                     mdb_strerror(rc));
    }
}

/*  Deletes, oldest first, events past the retention limits, at most
    S_PRUNE_CHUNK in one transaction. Returns how many it deleted, and sets
    *more when it stopped at the chunk with more to delete. */
static size_t s_prune(event_log_t *self, bool *more_p)
{
    *more_p = false;
    if (!self->retention_ms && !self->retention_bytes)
        return 0;
    MDB_txn *txn;
    MDB_cursor *cursor;
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc) {
        mb_error(0, "event log: retention: %s", mdb_strerror(rc));
        return 0;
    }
    if ((rc = mdb_cursor_open(txn, self->events, &cursor)) != 0) {
        mdb_txn_abort(txn);
        mb_error(0, "event log: retention: %s", mdb_strerror(rc));
        return 0;
    }
    uint64_t now = s_wall_ms();
    size_t deleted = 0;
    bool more = false;
    while (rc == 0) {
        MDB_val key, value;
        if ((rc = mdb_cursor_get(cursor, &key, &value, MDB_FIRST)) != 0)
            break;
        bool expired = false;
        if (self->retention_bytes) {
            MDB_stat st;
            mdb_stat(txn, self->events, &st);
            uint64_t bytes =
                (uint64_t)(st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages) *
                st.ms_psize;
            expired = bytes > self->retention_bytes;
        }
        if (!expired && self->retention_ms) {
            s_value_t parsed;
            /* A record we cannot read has no age; it goes with its neighbours. */
            expired = !s_value_parse(value.mv_data, value.mv_size, &parsed) ||
                      parsed.time + self->retention_ms < now;
        }
        if (!expired)
            break;
        if (deleted == S_PRUNE_CHUNK) {
            more = true;
            break;
        }
        rc = mdb_cursor_del(cursor, 0);
        if (rc == 0)
            deleted++;
    }
    mdb_cursor_close(cursor);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        mb_error(0, "event log: retention: %s", mdb_strerror(rc));
        mdb_txn_abort(txn);
        return 0;
    }
    if (deleted == 0) {
        mdb_txn_abort(txn);
        return 0;
    }
    if ((rc = mdb_txn_commit(txn)) != 0) {
        mb_error(0, "event log: retention commit: %s", mdb_strerror(rc));
        return 0;
    }
    atomic_fetch_add(&self->pruned, deleted);
    mb_debug(0, "event log: retention deleted %zu events", deleted);
    *more_p = more;
    return deleted;
}

static int64_t s_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*  The writer: waits for batches, takes everything pending, writes it in
    one transaction, hands it back; prunes in between. A message of zero
    bytes means stop, once what came before it is written. */
static void *s_writer_main(void *arg)
{
    event_log_t *self = arg;
    bool stop = false, prune_more = true;
    int64_t prune_at = 0;
    while (!stop) {
        int64_t now = s_mono_ms();
        long timeout = prune_more ? 0 : prune_at > now ? (long)(prune_at - now) : 0;
        zmq_pollitem_t item = {self->writer_pipe, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, timeout) < 0 && errno != EINTR) {
            mb_error(0, "event log: writer poll failed: %s", zmq_strerror(errno));
            break;
        }
        event_batch_t *list = NULL, **tail = &list;
        size_t bytes = 0, events = 0;
        while (!stop && bytes < S_TXN_BYTES && events < S_TXN_EVENTS) {
            zmq_msg_t msg;
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, self->writer_pipe, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&msg);
                break;
            }
            if (zmq_msg_size(&msg) == sizeof(event_batch_t *)) {
                event_batch_t *batch;
                memcpy(&batch, zmq_msg_data(&msg), sizeof batch);
                batch->next = NULL;
                *tail = batch;
                tail = &batch->next;
                bytes += batch->values.size;
                events += batch->count;
            } else {
                stop = true;
            }
            zmq_msg_close(&msg);
        }
        if (list) {
            s_write(self, list);
            /* The list goes back whole, as one pointer. */
            if (zmq_send(self->writer_pipe, &list, sizeof list, 0) < 0)
                mb_error(0, "event log: cannot hand batches back: %s", zmq_strerror(errno));
        }
        /* After every write too, so a size limit below the map size
           keeps the map from filling between two looks. */
        now = s_mono_ms();
        if (list || prune_more || now >= prune_at) {
            s_prune(self, &prune_more);
            prune_at = now + S_PRUNE_INTERVAL_MS;
        }
    }
    return NULL;
}

/* ---- new / destroy ------------------------------------------------------- */

/*  Opens the databases and reads the last seq, before the writer starts. */
static int s_open_dbs(event_log_t *self)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "events", MDB_CREATE, &self->events);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &self->meta);
    MDB_val key = {8, "last_seq"}, value;
    if (rc == 0) {
        rc = mdb_get(txn, self->meta, &key, &value);
        if (rc == 0 && value.mv_size == 8)
            self->last_seq = s_key_get(value.mv_data);
        else if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    /* The meta record moves in the same transaction as the events, so the
       two agree; trusting the larger is cheap insurance all the same. */
    MDB_cursor *cursor;
    if (rc == 0 && (rc = mdb_cursor_open(txn, self->events, &cursor)) == 0) {
        MDB_val last;
        int got = mdb_cursor_get(cursor, &last, &value, MDB_LAST);
        if (got == 0 && last.mv_size == 8 && s_key_get(last.mv_data) > self->last_seq)
            self->last_seq = s_key_get(last.mv_data);
        else if (got != 0 && got != MDB_NOTFOUND)
            rc = got;
        mdb_cursor_close(cursor);
    }
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    return rc;
}

event_log_t *event_log_new(const event_log_opts_t *opts)
{
    event_log_t *self = mb_calloc(1, sizeof *self);
    self->lock_fd = -1;
    self->retention_ms = opts->retention_ms;
    self->retention_bytes = opts->retention_bytes;
    if (s_mkdir_p(opts->dir) != 0) {
        mb_error(0, "cannot create the event log folder '%s': %s", opts->dir, strerror(errno));
        goto fail;
    }
    char path[4096 + 16];
    snprintf(path, sizeof path, "%s/broker.lock", opts->dir);
    self->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (self->lock_fd < 0 || flock(self->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        mb_error(0, "cannot lock '%s': %s", path,
                 errno == EWOULDBLOCK ? "another broker uses this data folder" : strerror(errno));
        goto fail;
    }
    int rc = mdb_env_create(&self->env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(self->env, 2);
    if (rc == 0)
        rc = mdb_env_set_mapsize(self->env, opts->map_size);
    /* Default flags: every commit is synced before it returns, which is
       what lets a publish be acknowledged. MDB_NOTLS: read transactions
       are not tied to thread-local slots (we reset and renew one). */
    if (rc == 0)
        rc = mdb_env_open(self->env, opts->dir, MDB_NOTLS, 0644);
    if (rc != 0) {
        mb_error(0, "cannot open the event log in '%s': %s", opts->dir, mdb_strerror(rc));
        goto fail;
    }
    int dead = 0;
    if (mdb_reader_check(self->env, &dead) == 0 && dead > 0)
        mb_warn(0, "event log: cleared %d stale reader slot(s)", dead);
    if ((rc = s_open_dbs(self)) != 0) {
        mb_error(0, "cannot open the event log databases: %s", mdb_strerror(rc));
        goto fail;
    }
    self->head = self->last_seq;

    snprintf(self->endpoint, sizeof self->endpoint, "inproc://musicbus-event-log-%p", (void *)self);
    self->pipe = zmq_socket(mb_zmq_context(), ZMQ_PAIR);
    self->writer_pipe = zmq_socket(mb_zmq_context(), ZMQ_PAIR);
    /* Unbounded both ways: the caller bounds what it submits. */
    int zero = 0;
    for (int i = 0; i < 2; i++) {
        void *socket = i ? self->writer_pipe : self->pipe;
        if (!socket || zmq_setsockopt(socket, ZMQ_SNDHWM, &zero, sizeof zero) ||
            zmq_setsockopt(socket, ZMQ_RCVHWM, &zero, sizeof zero) ||
            zmq_setsockopt(socket, ZMQ_LINGER, &zero, sizeof zero)) {
            mb_error(0, "event log: cannot make its sockets: %s", zmq_strerror(errno));
            goto fail;
        }
    }
    if (zmq_bind(self->pipe, self->endpoint) != 0 ||
        zmq_connect(self->writer_pipe, self->endpoint) != 0) {
        mb_error(0, "event log: cannot join its sockets: %s", zmq_strerror(errno));
        goto fail;
    }
    /* Signals belong to the main thread, which checks the stop flag. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rc = pthread_create(&self->thread, NULL, s_writer_main, self);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        mb_error(0, "event log: cannot start the writer: %s", strerror(rc));
        goto fail;
    }
    self->running = true;
    return self;

fail:
    event_log_destroy(&self);
    return NULL;
}

void event_log_stop(event_log_t *self)
{
    if (!self->running)
        return;
    if (!self->stopped) {
        self->stopped = true;
        zmq_send(self->pipe, "", 0, 0);
    }
    pthread_join(self->thread, NULL);
    self->running = false;
}

void event_log_destroy(event_log_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    event_log_t *self = *self_p;
    event_log_stop(self);
    event_batch_t *list;
    while (self->pipe && event_log_completed(self, &list) == 0) {
        while (list) {
            event_batch_t *next = list->next;
            event_batch_destroy(&list);
            list = next;
        }
    }
    if (self->pipe)
        zmq_close(self->pipe);
    if (self->writer_pipe)
        zmq_close(self->writer_pipe);
    if (self->read_cursor)
        mdb_cursor_close(self->read_cursor);
    if (self->read_txn)
        mdb_txn_abort(self->read_txn);
    if (self->env)
        mdb_env_close(self->env);
    if (self->lock_fd >= 0)
        close(self->lock_fd);
    free(self->found);
    free(self);
    *self_p = NULL;
}

/* ---- main thread ------------------------------------------------------- */

int event_log_submit(event_log_t *self, event_batch_t *batch)
{
    if (self->stopped || !self->running)
        return MB_EIO;
    return zmq_send(self->pipe, &batch, sizeof batch, 0) == sizeof batch ? 0 : MB_EIO;
}

void *event_log_socket(event_log_t *self)
{
    return self->pipe;
}

int event_log_completed(event_log_t *self, event_batch_t **list)
{
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, self->pipe, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&msg);
        return MB_EAGAIN;
    }
    if (zmq_msg_size(&msg) != sizeof *list) {
        zmq_msg_close(&msg);
        return MB_EAGAIN; /* cannot happen: only the writer talks to us */
    }
    memcpy(list, zmq_msg_data(&msg), sizeof *list);
    zmq_msg_close(&msg);
    for (event_batch_t *batch = *list; batch; batch = batch->next)
        if (batch->status == 0 && batch->count > 0)
            self->head = batch->first + batch->count - 1;
    return 0;
}

uint64_t event_log_head(event_log_t *self)
{
    return self->head;
}

uint64_t event_log_pruned(event_log_t *self)
{
    return atomic_load(&self->pruned);
}

/*  Starts (or renews) the main thread's read transaction and its cursor. */
static int s_read_begin(event_log_t *self)
{
    int rc;
    if (self->read_txn) {
        rc = mdb_txn_renew(self->read_txn);
        if (rc == 0)
            rc = mdb_cursor_renew(self->read_txn, self->read_cursor);
        return rc;
    }
    rc = mdb_txn_begin(self->env, NULL, MDB_RDONLY, &self->read_txn);
    if (rc == 0 && (rc = mdb_cursor_open(self->read_txn, self->events, &self->read_cursor)) != 0) {
        mdb_txn_abort(self->read_txn);
        self->read_txn = NULL;
    }
    return rc;
}

static void s_pack_body(msgpack_packer *pk, event_log_t *self, size_t count, uint64_t next,
                        uint64_t head)
{
    msgpack_pack_map(pk, 3);
    mb_pack_cstr(pk, "events");
    msgpack_pack_array(pk, count);
    for (size_t i = 0; i < count; i++) {
        /* {seq} followed by the stored map's four entries, verbatim. */
        msgpack_pack_map(pk, 5);
        mb_pack_cstr(pk, "seq");
        msgpack_pack_uint64(pk, self->found[i].seq);
        mb_pack_raw(pk, self->found[i].value + 1, self->found[i].size - 1);
    }
    mb_pack_cstr(pk, "next");
    msgpack_pack_uint64(pk, next);
    mb_pack_cstr(pk, "head");
    msgpack_pack_uint64(pk, head);
}

int event_log_fetch(event_log_t *self, const event_filter_t *filter, uint64_t from, size_t max,
                    size_t scan_limit, size_t max_bytes, msgpack_packer *pk, event_fetch_t *out)
{
    memset(out, 0, sizeof *out);
    int rc = s_read_begin(self);
    MDB_val key, value;
    uint64_t head = 0;
    if (rc == 0) {
        MDB_val meta_key = {8, "last_seq"};
        rc = mdb_get(self->read_txn, self->meta, &meta_key, &value);
        if (rc == 0 && value.mv_size == 8)
            head = s_key_get(value.mv_data);
        else if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    if (rc == 0) {
        rc = mdb_cursor_get(self->read_cursor, &key, &value, MDB_FIRST);
        if (rc == 0)
            out->oldest = key.mv_size == 8 ? s_key_get(key.mv_data) : 0;
        else if (rc == MDB_NOTFOUND) {
            out->oldest = head + 1;
            rc = 0;
        }
    }
    if (rc != 0) {
        mb_error(0, "event log: reading: %s", mdb_strerror(rc));
        if (self->read_txn)
            mdb_txn_reset(self->read_txn);
        return MB_EDB;
    }
    out->head = head;
    if (from == 0)
        from = out->oldest;
    if (from < out->oldest) {
        mdb_txn_reset(self->read_txn);
        return MB_ENOTFOUND;
    }

    size_t found = 0, scanned = 0, bytes = 0;
    uint64_t next = from;
    unsigned char from_key[8];
    s_key_put(from_key, from);
    key = (MDB_val){8, from_key};
    rc = mdb_cursor_get(self->read_cursor, &key, &value, MDB_SET_RANGE);
    while (found < max && scanned < scan_limit && bytes < max_bytes) {
        if (rc == MDB_NOTFOUND) {
            out->at_head = true;
            break;
        }
        if (rc != 0) {
            mb_error(0, "event log: reading: %s", mdb_strerror(rc));
            mdb_txn_reset(self->read_txn);
            return MB_EDB;
        }
        s_value_t parsed;
        uint64_t seq = key.mv_size == 8 ? s_key_get(key.mv_data) : 0;
        if (seq < next || !s_value_parse(value.mv_data, value.mv_size, &parsed)) {
            if (self->skip_logged < S_SKIP_LOG_MAX) {
                self->skip_logged++;
                mb_error(0, "event log: skipped a malformed record after seq %llu",
                         (unsigned long long)next);
            }
        } else {
            next = seq + 1;
            if (s_filter_match(filter, parsed.topic, parsed.topic_len)) {
                if (found == self->found_cap) {
                    self->found_cap = self->found_cap ? self->found_cap * 2 : 256;
                    self->found = mb_realloc(self->found, self->found_cap * sizeof *self->found);
                }
                self->found[found].seq = seq;
                self->found[found].value = value.mv_data;
                self->found[found].size = value.mv_size;
                found++;
                bytes += value.mv_size;
            }
        }
        scanned++;
        rc = mdb_cursor_get(self->read_cursor, &key, &value, MDB_NEXT);
    }
    if (!out->at_head && rc == MDB_NOTFOUND)
        out->at_head = true; /* stopped on a limit exactly at the end */
    s_pack_body(pk, self, found, next, head);
    mdb_txn_reset(self->read_txn);
    out->count = found;
    out->next = next;
    return 0;
}
