/*  mb_actor — the runtime every actor executable is built on. */
#include "mb_actor.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mb_alloc.h"
#include "mb_config.h"
#include "mb_error.h"
#include "mb_events.h"
#include "mb_log.h"
#include "mb_msgpack.h"
#include "mb_signal.h"
#include "mb_worker.h"
#include "mb_zmq.h"

#define S_ENV_MAP_SIZE_MB "MUSICBUS_MAP_SIZE_MB"
#define S_DEFAULT_MAP_SIZE ((size_t)1024 * 1024 * 1024) /* 1 GiB: reserved, not used */
#define S_ERROR_MESSAGE_MAX 512                         /* longest error message sent */
#define S_OUTBOX_PERIOD_MS 250      /* outbox looked at without a kick (consumers' events) */
#define S_OUTBOX_BUSY_MS 50         /* retry when another process is flushing */
#define S_OUTBOX_BACKOFF_MIN_MS 100 /* after a failed publish, doubling... */
#define S_OUTBOX_BACKOFF_MAX_MS 5000

struct mb_call {
    const mb_request_t *request; /* the decoded request */
    MDB_env *env;                /* the actor's environment */
    void *state;                 /* from def->open */
    msgpack_sbuffer *reply;      /* where the reply is packed */
    msgpack_packer packer;       /* writes to reply */
    size_t body_at;              /* offset of the body after mb_call_reply, else 0 */
    int status;                  /* status packed so far, 0 for none */
    bool outbox_used;            /* mb_call_outbox_add() succeeded: kick the publisher */
};

/* ---- environment ----------------------------------------------------- */

/*  mkdir -p: creates `path` and its missing parents. */
static int s_mkdir_p(const char *path)
{
    char *copy = mb_strdup(path);
    int rc = 0;
    for (char *p = copy + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(copy, 0755) != 0 && errno != EEXIST) {
                rc = -1;
                break;
            }
            *p = saved;
            if (saved == '\0')
                break;
        }
    }
    free(copy);
    if (rc == 0) {
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
            errno = ENOTDIR;
            rc = -1;
        }
    }
    return rc;
}

int mb_actor_open_env(const mb_actor_def_t *def, const char *dir, MDB_env **env)
{
    *env = NULL;
    if (!dir || !*dir || s_mkdir_p(dir) != 0) {
        mb_error(0, "cannot create data folder '%s': %s", dir ? dir : "", strerror(errno));
        return MB_EIO;
    }
    MDB_env *e = NULL;
    int rc = mdb_env_create(&e);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(e, def->max_dbs + MB_EVENTS_DBS);
    if (rc == 0)
        rc = mdb_env_set_mapsize(e, def->map_size ? def->map_size : S_DEFAULT_MAP_SIZE);
    /* Flags 0: durable commits, one writer at a time across every process
       of the actor, which is how the workers of one service share it. */
    if (rc == 0)
        rc = mdb_env_open(e, dir, 0, 0644);
    if (rc != 0) {
        mb_error(0, "cannot open LMDB environment in '%s': %s", dir, mdb_strerror(rc));
        if (e)
            mdb_env_close(e);
        return MB_EDB;
    }
    /* A worker killed while reading leaves its reader slot taken, which
       would pin old pages forever; free the slots of dead processes. */
    int dead = 0;
    if (mdb_reader_check(e, &dead) == 0 && dead > 0)
        mb_warn(0, "cleared %d stale LMDB reader slot(s) in '%s'", dead, dir);
    /* Now, while no other thread can be using the environment: LMDB
       database handles must not be opened concurrently. */
    if (mb_events_open_dbs(e) != 0) {
        mdb_env_close(e);
        return MB_EDB;
    }
    *env = e;
    return 0;
}

/* ---- dispatch -------------------------------------------------------- */

static void s_reset(mb_call_t *call)
{
    msgpack_sbuffer_clear(call->reply);
    call->body_at = 0;
    call->status = 0;
}

static void s_pack_error(msgpack_sbuffer *reply, uint64_t rid, int status, const char *code,
                         const char *field, const char *message)
{
    msgpack_packer pk;
    msgpack_sbuffer_clear(reply);
    msgpack_packer_init(&pk, reply, msgpack_sbuffer_write);
    mb_reply_pack_error(&pk, rid, status, code, field, message);
}

static mb_handler_fn *s_find_handler(const mb_op_t *ops, const char *op, size_t len)
{
    /* strnlen: no whole strlen() of every entry per request. */
    for (const mb_op_t *entry = ops; entry && entry->op; entry++)
        if (strnlen(entry->op, len + 1) == len && memcmp(entry->op, op, len) == 0)
            return entry->handler;
    return NULL;
}

/*  mb_actor_dispatch(), also telling whether the handler added events to
    the outbox. */
static void s_dispatch(const mb_actor_def_t *def, MDB_env *env, void *state, const void *request,
                       size_t size, msgpack_sbuffer *reply, bool *outbox_used)
{
    *outbox_used = false;
    mb_request_t req;
    const char *why = NULL;
    msgpack_sbuffer_clear(reply);
    if (mb_request_decode(&req, request, size, &why) != 0) {
        uint64_t rid = 0;
        uint32_t ttl = 0;
        mb_request_peek(request, size, &rid, &ttl); /* best effort, so the caller can match */
        mb_warn(rid, "%s: malformed request: %s", def->name, why);
        s_pack_error(reply, rid, 400, "bad_request", NULL, why);
        return;
    }
    mb_handler_fn *handler = s_find_handler(def->ops, req.op, req.op_len);
    if (!handler) {
        char message[128];
        snprintf(message, sizeof message, "%s has no op '%.*s'", def->name, (int)req.op_len,
                 req.op);
        mb_debug(req.rid, "%.*s -> 404 unknown_op", (int)req.op_len, req.op);
        s_pack_error(reply, req.rid, 404, "unknown_op", NULL, message);
        mb_request_release(&req);
        return;
    }
    mb_call_t call = {.request = &req, .env = env, .state = state, .reply = reply};
    msgpack_packer_init(&call.packer, reply, msgpack_sbuffer_write);
    handler(&call);

    /* Exactly one reply: an error reply is whole by construction; a success
       reply must have exactly one well-formed body object after its head. */
    bool whole = call.status != 0;
    if (whole && call.body_at) {
        size_t used = 0;
        whole = call.body_at < reply->size &&
                /* the body sits inside the reply map: one level less */
                mb_msgpack_skip(reply->data + call.body_at, reply->size - call.body_at,
                                MB_MSGPACK_MAX_DEPTH - 1, &used) == 0 &&
                used == reply->size - call.body_at;
    }
    if (!whole) {
        mb_error(req.rid, "%.*s: handler packed %s; answering 500", (int)req.op_len, req.op,
                 call.status ? "a malformed body" : "no reply");
        s_pack_error(reply, req.rid, 500, "internal", NULL, "the handler gave no valid reply");
        call.status = 500;
    }
    mb_debug(req.rid, "%.*s -> %d", (int)req.op_len, req.op, call.status);
    mb_request_release(&req);
    *outbox_used = call.outbox_used;
}

void mb_actor_dispatch(const mb_actor_def_t *def, MDB_env *env, void *state, const void *request,
                       size_t size, msgpack_sbuffer *reply)
{
    bool outbox_used;
    s_dispatch(def, env, state, request, size, reply, &outbox_used);
}

/* ---- inside a handler -------------------------------------------------- */

const mb_request_t *mb_call_request(mb_call_t *call)
{
    return call->request;
}

const msgpack_object *mb_call_arg(mb_call_t *call, const char *key)
{
    return mb_map_get(call->request->args, key);
}

MDB_env *mb_call_env(mb_call_t *call)
{
    return call->env;
}

void *mb_call_state(mb_call_t *call)
{
    return call->state;
}

uint64_t mb_call_rid(mb_call_t *call)
{
    return call->request->rid;
}

msgpack_packer *mb_call_reply(mb_call_t *call, int status)
{
    s_reset(call);
    mb_reply_pack_head(&call->packer, call->request->rid, status);
    call->body_at = call->reply->size;
    call->status = status;
    return &call->packer;
}

void mb_call_error(mb_call_t *call, int status, const char *code, const char *field,
                   const char *fmt, ...)
{
    char message[S_ERROR_MESSAGE_MAX];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    s_reset(call);
    mb_reply_pack_error(&call->packer, call->request->rid, status, code, field, message);
    call->status = status;
}

void mb_call_db_error(mb_call_t *call, int mdb_rc)
{
    mb_error(call->request->rid, "%.*s: LMDB error: %s", (int)call->request->op_len,
             call->request->op, mdb_strerror(mdb_rc));
    if (mdb_rc == MDB_MAP_FULL)
        mb_call_error(call, 507, "storage_full", NULL, "storage is full");
    else
        mb_call_error(call, 500, "storage_error", NULL, "storage error: %s", mdb_strerror(mdb_rc));
}

MDB_txn *mb_call_begin(mb_call_t *call, bool write)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(mb_call_env(call), NULL, write ? 0 : MDB_RDONLY, &txn);
    if (rc) {
        mb_call_db_error(call, rc);
        return NULL;
    }
    return txn;
}

void mb_call_abort(mb_call_t *call, MDB_txn *txn, int mdb_rc)
{
    mdb_txn_abort(txn);
    mb_call_db_error(call, mdb_rc);
}

int mb_call_outbox_add(mb_call_t *call, MDB_txn *txn, const char *topic, const char *key,
                       const void *data, size_t data_len)
{
    int rc = mb_outbox_add(txn, topic, key, data, data_len);
    if (rc == 0)
        call->outbox_used = true;
    else if (rc == MB_EFULL)
        mb_call_error(call, 507, "storage_full", NULL, "storage is full");
    else if (rc == MB_EDB)
        mb_call_error(call, 500, "storage_error", NULL, "storage error in the outbox");
    else {
        mb_error(call->request->rid, "%.*s: the handler made an event the bus would refuse (%s)",
                 (int)call->request->op_len, call->request->op, mb_strerror(rc));
        mb_call_error(call, 500, "internal", NULL, "the handler made an invalid event");
    }
    return rc;
}

/* ---- background threads: the outbox publisher and consumers ------------- */

typedef struct {
    MDB_env *env;         /* the actor's */
    const char *bus;      /* broker endpoint */
    pthread_mutex_t lock; /* guards kicked and stop */
    pthread_cond_t wake;  /* signalled by a kick or a stop */
    bool kicked;          /* a handler added events */
    bool stop;            /* the process is stopping */
    pthread_t thread;
} s_outbox_t;

/*  Waits until kicked (unless `ignore_kicks`), stopped, or `ms` passed.
    Returns false when stopping. */
static bool s_outbox_wait(s_outbox_t *self, int ms, bool ignore_kicks)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&self->lock);
    while (!self->stop && (ignore_kicks || !self->kicked) && !mb_signal_stop_requested())
        if (pthread_cond_timedwait(&self->wake, &self->lock, &until) != 0)
            break; /* timed out */
    self->kicked = false;
    bool go_on = !self->stop && !mb_signal_stop_requested();
    pthread_mutex_unlock(&self->lock);
    return go_on;
}

static void *s_outbox_main(void *arg)
{
    s_outbox_t *self = arg;
    mb_events_t *events = mb_events_new(self->bus);
    if (!events)
        return NULL;
    int delay = 0, backoff = 0;
    /* Start with a flush: events a crash left behind go out first. */
    while (s_outbox_wait(self, delay, backoff > 0)) {
        size_t waiting = 0, published = 0;
        int rc = mb_outbox_count(self->env, &waiting);
        if (rc == 0 && waiting > 0)
            rc = mb_outbox_flush(self->env, events, &published);
        if (rc == 0 || rc == MB_EINTR) {
            if (backoff)
                mb_info(0, "outbox: publishing again");
            backoff = 0;
            delay = S_OUTBOX_PERIOD_MS;
        } else if (rc == MB_EAGAIN && !mb_events_error(events)[0]) {
            delay = S_OUTBOX_BUSY_MS; /* another process holds the outbox lock */
        } else {
            backoff = backoff ? backoff * 2 : S_OUTBOX_BACKOFF_MIN_MS;
            if (backoff > S_OUTBOX_BACKOFF_MAX_MS)
                backoff = S_OUTBOX_BACKOFF_MAX_MS;
            mb_warn(0, "outbox: %zu event(s) waiting; publishing failed: %s%s%s; retrying in %d ms",
                    waiting - published, mb_strerror(rc), mb_events_error(events)[0] ? ": " : "",
                    mb_events_error(events), backoff);
            delay = backoff;
        }
    }
    mb_events_destroy(&events);
    return NULL;
}

static void s_outbox_kick(s_outbox_t *self)
{
    pthread_mutex_lock(&self->lock);
    self->kicked = true;
    pthread_cond_signal(&self->wake);
    pthread_mutex_unlock(&self->lock);
}

static void s_outbox_stop(s_outbox_t *self)
{
    pthread_mutex_lock(&self->lock);
    self->stop = true;
    pthread_cond_signal(&self->wake);
    pthread_mutex_unlock(&self->lock);
}

static void *s_consumer_main(void *arg)
{
    mb_consumer_run(arg);
    return NULL;
}

typedef struct {
    s_outbox_t outbox;
    bool outbox_started;
    size_t n_consumers;        /* entries of consumers[] */
    mb_consumer_t **consumers; /* one per def->consumers entry */
    pthread_t *threads;        /* their threads */
    size_t started;            /* threads started */
} s_threads_t;

/*  Starts the outbox publisher and a thread per consumer group. Signals
    are blocked in them, so SIGTERM reaches the main thread and
    interrupts its wait at once. Returns 0, or -1 after stopping whatever
    started (logged). */
static int s_threads_start(s_threads_t *self, const mb_actor_def_t *def, MDB_env *env, void *state,
                           const char *bus)
{
    memset(self, 0, sizeof *self);
    for (const mb_consumer_def_t *c = def->consumers; c && c->group; c++)
        self->n_consumers++;
    self->consumers = mb_calloc(self->n_consumers + 1, sizeof *self->consumers);
    self->threads = mb_calloc(self->n_consumers + 1, sizeof *self->threads);
    for (size_t i = 0; i < self->n_consumers; i++)
        if (!(self->consumers[i] = mb_consumer_new(&def->consumers[i], env, state, bus)))
            return -1;

    sigset_t blocked, old;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGINT);
    pthread_sigmask(SIG_BLOCK, &blocked, &old);
    int rc = 0;
    s_outbox_t *outbox = &self->outbox;
    outbox->env = env;
    outbox->bus = bus;
    pthread_mutex_init(&outbox->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&outbox->wake, &attr);
    pthread_condattr_destroy(&attr);
    rc = pthread_create(&outbox->thread, NULL, s_outbox_main, outbox);
    self->outbox_started = rc == 0;
    for (size_t i = 0; rc == 0 && i < self->n_consumers; i++) {
        rc = pthread_create(&self->threads[i], NULL, s_consumer_main, self->consumers[i]);
        if (rc == 0)
            self->started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        mb_error(0, "cannot start a thread: %s", strerror(rc));
        return -1;
    }
    return 0;
}

/*  Stops and joins every thread, frees the consumers. */
static void s_threads_stop(s_threads_t *self)
{
    for (size_t i = 0; i < self->started; i++)
        mb_consumer_stop(self->consumers[i]);
    if (self->outbox_started)
        s_outbox_stop(&self->outbox);
    for (size_t i = 0; i < self->started; i++)
        pthread_join(self->threads[i], NULL);
    if (self->outbox_started) {
        pthread_join(self->outbox.thread, NULL);
        pthread_cond_destroy(&self->outbox.wake);
        pthread_mutex_destroy(&self->outbox.lock);
    }
    for (size_t i = 0; i < self->n_consumers; i++)
        mb_consumer_destroy(&self->consumers[i]);
    free(self->consumers);
    free(self->threads);
    memset(self, 0, sizeof *self);
}

/* ---- main ------------------------------------------------------------ */

static void s_usage(const char *name)
{
    fprintf(stderr,
            "usage: musicbus-%s [--bus ENDPOINT] [--data DIR] [--heartbeat MS]\n"
            "       [--liveness N] [--map-size MIB] [--ready-file PATH]\n",
            name);
}

/*  Writes `text` to path.tmp, then renames it over path, so a reader sees
    the whole content or nothing. */
static int s_write_ready_file(const char *path, const char *text)
{
    char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp", path) < 0)
        return -1;
    FILE *file = fopen(tmp, "w");
    int rc = -1;
    if (file) {
        bool written = fprintf(file, "%s\n", text) >= 0;
        if (fclose(file) == 0 && written && rename(tmp, path) == 0)
            rc = 0;
    }
    if (rc)
        unlink(tmp);
    free(tmp);
    return rc;
}

int mb_actor_main(const mb_actor_def_t *def, int argc, char **argv)
{
    mb_log_init(def->name);
    mb_signal_install();

    const char *bus = NULL, *data = NULL, *ready_file = NULL;
    const char *heartbeat_text = NULL, *liveness_text = NULL, *map_text = NULL;
    static const struct option options[] = {{"bus", required_argument, NULL, 'b'},
                                            {"data", required_argument, NULL, 'd'},
                                            {"heartbeat", required_argument, NULL, 'H'},
                                            {"liveness", required_argument, NULL, 'l'},
                                            {"map-size", required_argument, NULL, 'm'},
                                            {"ready-file", required_argument, NULL, 'r'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'b':
            bus = optarg;
            break;
        case 'd':
            data = optarg;
            break;
        case 'H':
            heartbeat_text = optarg;
            break;
        case 'l':
            liveness_text = optarg;
            break;
        case 'm':
            map_text = optarg;
            break;
        case 'r':
            ready_file = optarg;
            break;
        case 'h':
            s_usage(def->name);
            return 0;
        default:
            s_usage(def->name);
            return 2;
        }
    }
    if (optind < argc) {
        s_usage(def->name);
        return 2;
    }
    bus = bus ? bus : mb_config_env(MB_ENV_BUS, MB_DEFAULT_BUS);
    data = data ? data : mb_config_env(MB_ENV_DATA, MB_DEFAULT_DATA);

    mb_worker_opts_t opts;
    mb_worker_opts_default(&opts);
    long value;
    if (heartbeat_text) {
        if (mb_config_parse_long(heartbeat_text, 10, 3600000, &value) != 0) {
            mb_error(0, "--heartbeat must be milliseconds in [10, 3600000]");
            return 2;
        }
        opts.heartbeat_ms = (int)value;
    }
    if (liveness_text) {
        if (mb_config_parse_long(liveness_text, 1, 1000, &value) != 0) {
            mb_error(0, "--liveness must be a count in [1, 1000]");
            return 2;
        }
        opts.liveness = (int)value;
    }
    mb_actor_def_t actual = *def;
    long map_mib = (long)((def->map_size ? def->map_size : S_DEFAULT_MAP_SIZE) >> 20);
    if (map_text) {
        if (mb_config_parse_long(map_text, 1, 1L << 24, &value) != 0) {
            mb_error(0, "--map-size must be MiB in [1, 16777216]");
            return 2;
        }
        map_mib = value;
    } else
        map_mib = mb_config_env_long(S_ENV_MAP_SIZE_MB, map_mib, 1, 1L << 24);
    actual.map_size = (size_t)map_mib << 20;

    char *dir = NULL;
    if (asprintf(&dir, "%s/%s", data, def->name) < 0) {
        mb_error(0, "out of memory");
        abort();
    }
    MDB_env *env = NULL;
    void *state = NULL;
    int exit_code = 1;
    if (mb_actor_open_env(&actual, dir, &env) != 0)
        goto done;
    if (def->open && def->open(env, &state) != 0) {
        mb_error(0, "%s: opening its databases failed", def->name);
        goto done;
    }
    s_threads_t threads;
    if (s_threads_start(&threads, def, env, state, bus) != 0)
        goto stop_threads;
    mb_worker_t *worker = mb_worker_new(bus, def->name, &opts);
    if (!worker)
        goto stop_threads;
    mb_info(0, "started: service %s, pid %ld, data %s, bus %s", def->name, (long)getpid(), dir,
            bus);
    if (ready_file && s_write_ready_file(ready_file, bus) != 0)
        mb_warn(0, "cannot write ready file '%s': %s", ready_file, strerror(errno));

    msgpack_sbuffer reply;
    msgpack_sbuffer_init(&reply);
    zmq_msg_t body;
    int rc;
    while ((rc = mb_worker_recv(worker, &body)) == 0) {
        bool outbox_used;
        s_dispatch(def, env, state, zmq_msg_data(&body), zmq_msg_size(&body), &reply, &outbox_used);
        zmq_msg_close(&body);
        mb_worker_reply(worker, reply.data, reply.size);
        if (outbox_used)
            s_outbox_kick(&threads.outbox);
    }
    mb_info(0, "stopping: %s", rc == MB_EINTR ? "asked to stop" : mb_strerror(rc));
    msgpack_sbuffer_destroy(&reply);
    mb_worker_destroy(&worker);
    exit_code = rc == MB_EINTR ? 0 : 1;
stop_threads:
    s_threads_stop(&threads);
    if (def->close)
        def->close(state);
done:
    if (env)
        mdb_env_close(env);
    mb_zmq_shutdown();
    free(dir);
    return exit_code;
}
