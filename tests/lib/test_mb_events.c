/*  mb_events: publishing, fetching, consumer groups and the outbox, and the
    consumers and outbox publisher that mb_actor_main() runs.

    Suite mb_events_broker starts the real musicbus-broker (durable
    streams in LMDB) and runs actors as child processes — this binary
    re-executed with MB_EVENTS_TEST_ROLE=actor — that are killed with
    SIGKILL at random moments. Suite mb_events runs against a fake "bus":
    a ROUTER thread in this process answering bus.publish and bus.fetch as
    the broker's contract says, so error paths (retention gaps, refusals,
    late replies, malformed records) are deterministic. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mb_actor.h"
#include "mb_alloc.h"
#include "mb_client.h"
#include "mb_error.h"
#include "mb_events.h"
#include "mb_msgpack.h"
#include "mb_signal.h"
#include "mb_zmq.h"
#include "mdp.h"

extern char **environ;

static int64_t t_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void t_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* ---- the actor under test: "notes" --------------------------------------------
   Consumes "test.tick" events ({n: int}) counting them, and remembers every
   seq it applied so a double application shows. Every tick whose n is a
   multiple of 100 makes a "test.tock" event through the outbox. Op
   note.add stores a note and publishes "test.note" through the outbox
   (and with die: true, SIGKILLs itself right after the commit). */

typedef struct {
    MDB_dbi counts; /* name -> uint64: applied, dupes, junk, sum */
    MDB_dbi seen;   /* seq (8 bytes big-endian) -> "" */
    MDB_dbi notes;  /* note id -> "" */
} t_state_t;

static t_state_t s_state;
static uint64_t s_fail_seq; /* apply answers MB_EAGAIN for this seq... */
static int s_fail_left;     /* ...this many times */
static int s_apply_us;      /* apply sleeps this long per event (children: kills land mid-batch) */

static int t_open(MDB_env *env, void **state)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "counts", MDB_CREATE, &s_state.counts);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "seen", MDB_CREATE, &s_state.seen);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "notes", MDB_CREATE, &s_state.notes);
    rc = rc ? (mdb_txn_abort(txn), rc) : mdb_txn_commit(txn);
    *state = &s_state;
    return rc ? MB_EDB : 0;
}

static uint64_t t_count(MDB_txn *txn, const char *name)
{
    MDB_val key = {.mv_size = strlen(name), .mv_data = (void *)name}, value;
    uint64_t v = 0;
    if (mdb_get(txn, s_state.counts, &key, &value) == 0 && value.mv_size == sizeof v)
        memcpy(&v, value.mv_data, sizeof v);
    return v;
}

static int t_add(MDB_txn *txn, const char *name, uint64_t delta)
{
    uint64_t v = t_count(txn, name) + delta;
    MDB_val key = {.mv_size = strlen(name), .mv_data = (void *)name};
    MDB_val value = {.mv_size = sizeof v, .mv_data = &v};
    return mdb_put(txn, s_state.counts, &key, &value, 0);
}

/*  Packs {n: n} (or, when `name` is given, {name: str}) into `buf`. */
static void t_pack_n(msgpack_sbuffer *buf, int64_t n)
{
    msgpack_packer pk;
    msgpack_sbuffer_clear(buf);
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    mb_pack_cstr(&pk, "n");
    msgpack_pack_int64(&pk, n);
}

static int t_apply_tick(MDB_txn *txn, const mb_event_t *ev, void *state)
{
    (void)state;
    int64_t n;
    if (!mb_obj_int(mb_map_get(ev->data, "n"), &n)) {
        /* Written first on purpose: the runtime must discard it. */
        t_add(txn, "junk", 1);
        return mb_event_invalid(ev, "data.n is not an integer");
    }
    if (s_apply_us > 0)
        usleep((useconds_t)s_apply_us);
    if (ev->seq == s_fail_seq && s_fail_left > 0) {
        s_fail_left--;
        return MB_EAGAIN;
    }
    uint8_t seq[8];
    for (int i = 0; i < 8; i++)
        seq[i] = (uint8_t)(ev->seq >> (56 - 8 * i));
    MDB_val key = {.mv_size = 8, .mv_data = seq}, none = {.mv_size = 0, .mv_data = ""};
    int rc = mdb_put(txn, s_state.seen, &key, &none, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST)
        rc = t_add(txn, "dupes", 1);
    if (rc == 0)
        rc = t_add(txn, "applied", 1);
    if (rc == 0)
        rc = t_add(txn, "sum", (uint64_t)n);
    if (rc == 0 && n % 100 == 0) {
        char tock[32];
        snprintf(tock, sizeof tock, "tock-%lld", (long long)n);
        rc = mb_outbox_add(txn, "test.tock", tock, "\xc0", 1);
    }
    return rc;
}

static void t_handle_note_add(mb_call_t *call)
{
    char *id = mb_obj_strdup(mb_call_arg(call, "id"));
    bool die = false;
    mb_obj_bool(mb_call_arg(call, "die"), &die);
    if (!id || !*id) {
        free(id);
        mb_call_error(call, 400, "invalid", "id", "id is required");
        return;
    }
    MDB_txn *txn;
    int rc = mdb_txn_begin(mb_call_env(call), NULL, 0, &txn);
    if (rc) {
        free(id);
        mb_call_db_error(call, rc);
        return;
    }
    MDB_val key = {.mv_size = strlen(id), .mv_data = id}, none = {.mv_size = 0, .mv_data = ""};
    rc = mdb_put(txn, s_state.notes, &key, &none, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST) { /* a repeat (a re-dispatch): no second event */
        mdb_txn_abort(txn);
        msgpack_pack_nil(mb_call_reply(call, 200));
        free(id);
        return;
    }
    msgpack_sbuffer data;
    msgpack_sbuffer_init(&data);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &data, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    mb_pack_cstr(&pk, "id");
    mb_pack_cstr(&pk, id);
    if (rc)
        mdb_txn_abort(txn), mb_call_db_error(call, rc);
    else if (mb_call_outbox_add(call, txn, "test.note", id, data.data, data.size) != 0)
        mdb_txn_abort(txn);
    else if ((rc = mdb_txn_commit(txn)) != 0)
        mb_call_db_error(call, rc);
    else {
        if (die)
            raise(SIGKILL); /* committed, not yet published */
        msgpack_pack_nil(mb_call_reply(call, 201));
    }
    msgpack_sbuffer_destroy(&data);
    free(id);
}

static void t_handle_count_get(mb_call_t *call)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(mb_call_env(call), NULL, MDB_RDONLY, &txn);
    if (rc) {
        mb_call_db_error(call, rc);
        return;
    }
    msgpack_packer *pk = mb_call_reply(call, 200);
    msgpack_pack_map(pk, 1);
    mb_pack_cstr(pk, "applied");
    msgpack_pack_uint64(pk, t_count(txn, "applied"));
    mdb_txn_abort(txn);
}

static const char *const s_tick_topics[] = {"test.tick", NULL};
static const mb_consumer_def_t s_consumers[] = {
    {.group = "notes.ticks", .topics = s_tick_topics, .apply = t_apply_tick, .batch = 10},
    {.group = NULL}};
static const mb_op_t s_ops[] = {
    {"note.add", t_handle_note_add}, {"count.get", t_handle_count_get}, {NULL, NULL}};
static const mb_actor_def_t s_def = {.name = "notes",
                                     .ops = s_ops,
                                     .max_dbs = 3,
                                     .map_size = 64 << 20,
                                     .open = t_open,
                                     .consumers = s_consumers};

/*  The child role: this binary re-executed as the "notes" actor. Runs
    before Criterion's main. */
__attribute__((constructor)) static void t_child_role(void)
{
    const char *role = getenv("MB_EVENTS_TEST_ROLE");
    if (!role)
        return;
    if (strcmp(role, "actor") == 0) {
        s_apply_us = 1000;
        char *argv[] = {"musicbus-notes",
                        "--bus",
                        getenv("MB_EVENTS_TEST_BUS"),
                        "--data",
                        getenv("MB_EVENTS_TEST_DATA"),
                        NULL};
        exit(mb_actor_main(&s_def, 5, argv)); /* exit: LeakSanitizer checks it */
    }
    _exit(99);
}

/* ---- fixture: a temporary folder, children to clean up ----------------------- */

static char s_tmp[64];
static pid_t s_children[16];
static size_t s_n_children;

static int t_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void t_setup_dir(void)
{
    strcpy(s_tmp, "/tmp/mb-events-test-XXXXXX");
    cr_assert_not_null(mkdtemp(s_tmp));
}

static void t_kill_children(void)
{
    for (size_t i = 0; i < s_n_children; i++)
        if (s_children[i] > 0) {
            kill(s_children[i], SIGKILL);
            waitpid(s_children[i], NULL, 0);
            s_children[i] = 0;
        }
    s_n_children = 0;
}

/*  Starts this binary as the "notes" actor on `bus` with data in s_tmp. */
static pid_t t_spawn_actor(const char *bus)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = calloc(n + 5, sizeof *envp);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        /* Not BoxFort's (Criterion's sandbox) variables either: the child
           must not believe it is a test worker. */
        if (strncmp(environ[i], "MB_EVENTS_TEST_", 15) != 0 &&
            strncmp(environ[i], "MUSICBUS_LOG_LEVEL=", 19) != 0 &&
            strncmp(environ[i], "BXFI", 4) != 0)
            envp[k++] = environ[i];
    char role[] = "MB_EVENTS_TEST_ROLE=actor", level[] = "MUSICBUS_LOG_LEVEL=warn";
    char bus_var[300], data_var[300];
    snprintf(bus_var, sizeof bus_var, "MB_EVENTS_TEST_BUS=%s", bus);
    snprintf(data_var, sizeof data_var, "MB_EVENTS_TEST_DATA=%s", s_tmp);
    envp[k++] = role;
    envp[k++] = bus_var;
    envp[k++] = data_var;
    envp[k++] = level;
    char *argv[] = {"test_mb_events", NULL};
    pid_t pid;
    cr_assert_eq(posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, envp), 0);
    free(envp);
    for (size_t i = 0; i < s_n_children; i++)
        if (s_children[i] == 0) {
            s_children[i] = pid;
            return pid;
        }
    cr_assert(s_n_children < 16);
    s_children[s_n_children++] = pid;
    return pid;
}

/*  Waits for child `pid` and forgets it; returns its wait status. */
static int t_reap(pid_t pid)
{
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    for (size_t i = 0; i < s_n_children; i++)
        if (s_children[i] == pid)
            s_children[i] = 0;
    return status;
}

static void t_teardown_dir(void)
{
    t_kill_children();
    if (s_tmp[0])
        nftw(s_tmp, t_rm, 16, FTW_DEPTH | FTW_PHYS);
    s_tmp[0] = '\0'; /* safe twice */
}

/*  Opens the actor's environment in s_tmp as mb_actor_main() does. */
static MDB_env *t_env(void)
{
    char dir[128];
    snprintf(dir, sizeof dir, "%s/notes", s_tmp);
    MDB_env *env;
    void *state;
    cr_assert_eq(mb_actor_open_env(&s_def, dir, &env), 0);
    cr_assert_eq(t_open(env, &state), 0);
    return env;
}

/*  Reads counter `name` of the actor's state. */
static uint64_t t_read_count(MDB_env *env, const char *name)
{
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    uint64_t v = t_count(txn, name);
    mdb_txn_abort(txn);
    return v;
}

/* ---- the fake bus ----------------------------------------------------------------- */

#define FB_MAX_PENDING 16

typedef struct {
    char *topic, *key;
    uint64_t time;
    char *data; /* packed msgpack */
    size_t size;
} fb_event_t;

typedef struct {
    zmq_msg_t client; /* routing id of the client */
    mb_request_t req; /* the fetch, decoded */
    int64_t deadline; /* when to answer with nothing */
    bool used;
} fb_pending_t;

static struct {
    char endpoint[256];
    void *router;
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t lock; /* guards everything below */
    fb_event_t *events;   /* seq i + 1 at events[i] */
    size_t count, cap;
    uint64_t retention_from; /* oldest seq kept; 0 keeps all */
    int fail_status;         /* the next fail_times requests get this error */
    const char *fail_code;
    int fail_times;
    bool hold_next;       /* keep the next reply back until the next request */
    bool silent;          /* answer nothing */
    uint64_t corrupt_seq; /* serve this event without its topic */
    unsigned long publishes, fetches;
    zmq_msg_t held_client;
    msgpack_sbuffer held;
    bool have_held;
    fb_pending_t pending[FB_MAX_PENDING];
} s_fb;

static void fb_send_now(zmq_msg_t *client, const void *data, size_t size)
{
    zmq_msg_t id;
    zmq_msg_init(&id);
    zmq_msg_copy(&id, client);
    zmq_msg_send(&id, s_fb.router, ZMQ_SNDMORE);
    zmq_send(s_fb.router, "", 0, ZMQ_SNDMORE);
    zmq_send(s_fb.router, MDPC_CLIENT, 6, ZMQ_SNDMORE);
    zmq_send(s_fb.router, "bus", 3, ZMQ_SNDMORE);
    zmq_send(s_fb.router, data, size, 0);
}

static void fb_send(zmq_msg_t *client, msgpack_sbuffer *reply)
{
    if (s_fb.hold_next) {
        s_fb.hold_next = false;
        s_fb.have_held = true;
        zmq_msg_init(&s_fb.held_client);
        zmq_msg_copy(&s_fb.held_client, client);
        msgpack_sbuffer_init(&s_fb.held);
        msgpack_sbuffer_write(&s_fb.held, reply->data, reply->size);
        return;
    }
    if (s_fb.have_held) { /* the late reply arrives first */
        fb_send_now(&s_fb.held_client, s_fb.held.data, s_fb.held.size);
        zmq_msg_close(&s_fb.held_client);
        msgpack_sbuffer_destroy(&s_fb.held);
        s_fb.have_held = false;
    }
    fb_send_now(client, reply->data, reply->size);
}

static void fb_error(zmq_msg_t *client, uint64_t rid, int status, const char *code,
                     const char *message)
{
    msgpack_sbuffer buf;
    msgpack_packer pk;
    msgpack_sbuffer_init(&buf);
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    mb_reply_pack_error(&pk, rid, status, code, NULL, message);
    fb_send(client, &buf);
    msgpack_sbuffer_destroy(&buf);
}

/*  Checks one {topic, key, data}; NULL when fine, else why. */
static const char *fb_check_event(const msgpack_object *o)
{
    const char *topic;
    size_t len;
    if (!mb_obj_str(mb_map_get(o, "topic"), &topic, &len) || !mb_topic_valid(topic, len))
        return "bad topic";
    if (len >= 7 && memcmp(topic, "refused", 7) == 0)
        return "this topic is refused";
    if (!mb_obj_str(mb_map_get(o, "key"), &topic, &len) || len > 256)
        return "bad key";
    if (!mb_map_get(o, "data"))
        return "no data";
    return NULL;
}

static void fb_append(const msgpack_object *o)
{
    if (s_fb.count == s_fb.cap) {
        s_fb.cap = s_fb.cap ? 2 * s_fb.cap : 256;
        s_fb.events = realloc(s_fb.events, s_fb.cap * sizeof *s_fb.events);
    }
    fb_event_t *e = &s_fb.events[s_fb.count++];
    e->topic = mb_obj_strdup(mb_map_get(o, "topic"));
    e->key = mb_obj_strdup(mb_map_get(o, "key"));
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    e->time = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
    msgpack_sbuffer buf;
    msgpack_packer pk;
    msgpack_sbuffer_init(&buf);
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    mb_pack_object(&pk, mb_map_get(o, "data"));
    e->data = buf.data;
    e->size = buf.size;
}

static void fb_publish(zmq_msg_t *client, const mb_request_t *req)
{
    s_fb.publishes++;
    const msgpack_object *events = mb_map_get(req->args, "events");
    const char *why = NULL;
    if (events) {
        if (events->type != MSGPACK_OBJECT_ARRAY || events->via.array.size == 0)
            why = "events must be a non-empty array";
        for (uint32_t i = 0; !why && i < events->via.array.size; i++)
            why = fb_check_event(&events->via.array.ptr[i]);
    } else
        why = fb_check_event(req->args);
    if (why) {
        fb_error(client, req->rid, 400, "invalid", why);
        return;
    }
    uint64_t first = s_fb.count + 1;
    size_t n = events ? events->via.array.size : 1;
    for (size_t i = 0; i < n; i++)
        fb_append(events ? &events->via.array.ptr[i] : req->args);
    msgpack_sbuffer buf;
    msgpack_packer pk;
    msgpack_sbuffer_init(&buf);
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    mb_reply_pack_head(&pk, req->rid, 201);
    if (events) {
        msgpack_pack_map(&pk, 2);
        mb_pack_cstr(&pk, "first");
        msgpack_pack_uint64(&pk, first);
        mb_pack_cstr(&pk, "count");
        msgpack_pack_uint64(&pk, n);
    } else {
        msgpack_pack_map(&pk, 1);
        mb_pack_cstr(&pk, "seq");
        msgpack_pack_uint64(&pk, first);
    }
    fb_send(client, &buf);
    msgpack_sbuffer_destroy(&buf);
}

static bool fb_matches(const mb_request_t *req, const char *topic)
{
    const msgpack_object *topics = mb_map_get(req->args, "topics");
    if (topics && topics->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < topics->via.array.size; i++)
            if (mb_obj_str_eq(&topics->via.array.ptr[i], topic))
                return true;
        return false;
    }
    const char *prefix;
    size_t len;
    return mb_obj_str(mb_map_get(req->args, "prefix"), &prefix, &len) && strlen(topic) >= len &&
           memcmp(topic, prefix, len) == 0;
}

/*  Answers a fetch when something matches or `final`; returns false when
    it should wait. */
static bool fb_try_fetch(zmq_msg_t *client, const mb_request_t *req, bool final)
{
    int64_t from = 0, max = 1000;
    mb_obj_int(mb_map_get(req->args, "from"), &from);
    mb_obj_int(mb_map_get(req->args, "max"), &max);
    if (from > 0 && (uint64_t)from < s_fb.retention_from) {
        fb_error(client, req->rid, 410, "retention_gap", "those events are gone");
        return true;
    }
    uint64_t start = from > 0 ? (uint64_t)from : 1;
    if (start < s_fb.retention_from)
        start = s_fb.retention_from;
    size_t hits[10000], n = 0;
    uint64_t next = s_fb.count + 1;
    for (uint64_t seq = start; seq <= s_fb.count; seq++) {
        if (!fb_matches(req, s_fb.events[seq - 1].topic))
            continue;
        if (n == (size_t)max) {
            next = seq;
            break;
        }
        hits[n++] = seq;
    }
    if (n == 0 && !final)
        return false;
    msgpack_sbuffer buf;
    msgpack_packer pk;
    msgpack_sbuffer_init(&buf);
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    mb_reply_pack_head(&pk, req->rid, 200);
    msgpack_pack_map(&pk, 3);
    mb_pack_cstr(&pk, "events");
    msgpack_pack_array(&pk, n);
    for (size_t i = 0; i < n; i++) {
        const fb_event_t *e = &s_fb.events[hits[i] - 1];
        bool corrupt = hits[i] == s_fb.corrupt_seq;
        msgpack_pack_map(&pk, corrupt ? 4 : 5);
        mb_pack_cstr(&pk, "seq");
        msgpack_pack_uint64(&pk, hits[i]);
        if (!corrupt) {
            mb_pack_cstr(&pk, "topic");
            mb_pack_cstr(&pk, e->topic);
        }
        mb_pack_cstr(&pk, "key");
        mb_pack_cstr(&pk, e->key);
        mb_pack_cstr(&pk, "time");
        msgpack_pack_uint64(&pk, e->time);
        mb_pack_cstr(&pk, "data");
        mb_pack_raw(&pk, e->data, e->size);
    }
    mb_pack_cstr(&pk, "next");
    msgpack_pack_uint64(&pk, next);
    mb_pack_cstr(&pk, "head");
    msgpack_pack_uint64(&pk, s_fb.count);
    fb_send(client, &buf);
    msgpack_sbuffer_destroy(&buf);
    return true;
}

static void fb_fetch(zmq_msg_t *client, mb_request_t *req)
{
    s_fb.fetches++;
    int64_t wait = 0;
    mb_obj_int(mb_map_get(req->args, "wait"), &wait);
    if (fb_try_fetch(client, req, wait == 0)) {
        mb_request_release(req);
        return;
    }
    for (int i = 0; i < FB_MAX_PENDING; i++)
        if (!s_fb.pending[i].used) {
            fb_pending_t *p = &s_fb.pending[i];
            p->used = true;
            zmq_msg_init(&p->client);
            zmq_msg_copy(&p->client, client);
            p->req = *req; /* takes the decoded request over */
            p->deadline = t_now_ms() + wait;
            return;
        }
    fb_try_fetch(client, req, true);
    mb_request_release(req);
}

static void fb_handle(zmq_msg_t *client, const void *body, size_t size)
{
    mb_request_t req;
    if (mb_request_decode(&req, body, size, NULL) != 0)
        return;
    pthread_mutex_lock(&s_fb.lock);
    if (s_fb.silent) {
        mb_request_release(&req);
    } else if (s_fb.fail_times > 0) {
        s_fb.fail_times--;
        fb_error(client, req.rid, s_fb.fail_status, s_fb.fail_code, "injected failure");
        mb_request_release(&req);
    } else if (req.op_len == 11 && memcmp(req.op, "bus.publish", 11) == 0) {
        fb_publish(client, &req);
        mb_request_release(&req);
    } else if (req.op_len == 9 && memcmp(req.op, "bus.fetch", 9) == 0) {
        fb_fetch(client, &req); /* keeps or releases req */
    } else {
        fb_error(client, req.rid, 404, "unknown_op", "no such op");
        mb_request_release(&req);
    }
    pthread_mutex_unlock(&s_fb.lock);
}

/*  Reads one message; hands client requests to fb_handle and ignores the
    rest (MDP workers saying READY and heartbeating to a fake broker). */
static void fb_read(void)
{
    zmq_msg_t frames[6];
    int n = 0;
    for (;;) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, s_fb.router, 0) < 0) {
            zmq_msg_close(&frame);
            break;
        }
        bool more = zmq_msg_more(&frame);
        if (n < 6) {
            zmq_msg_init(&frames[n]);
            zmq_msg_move(&frames[n++], &frame);
        }
        zmq_msg_close(&frame);
        if (!more)
            break;
    }
    if (n == 5 && zmq_msg_size(&frames[1]) == 0 && mb_zmq_msg_eq(&frames[2], MDPC_CLIENT) &&
        mb_zmq_msg_eq(&frames[3], "bus"))
        fb_handle(&frames[0], zmq_msg_data(&frames[4]), zmq_msg_size(&frames[4]));
    else if (n >= 4 && mb_zmq_msg_eq(&frames[2], MDPW_WORKER)) {
        /* A worker (an actor child): heartbeat back so it stays put. */
        unsigned char heartbeat = MDPW_HEARTBEAT;
        zmq_msg_send(&frames[0], s_fb.router, ZMQ_SNDMORE);
        zmq_send(s_fb.router, "", 0, ZMQ_SNDMORE);
        zmq_send(s_fb.router, MDPW_WORKER, 6, ZMQ_SNDMORE);
        zmq_send(s_fb.router, &heartbeat, 1, 0);
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
}

static void *fb_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&s_fb.stop)) {
        zmq_pollitem_t item = {.socket = s_fb.router, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, 5) > 0)
            fb_read();
        pthread_mutex_lock(&s_fb.lock);
        for (int i = 0; i < FB_MAX_PENDING; i++) {
            fb_pending_t *p = &s_fb.pending[i];
            if (p->used && fb_try_fetch(&p->client, &p->req, t_now_ms() >= p->deadline)) {
                zmq_msg_close(&p->client);
                mb_request_release(&p->req);
                p->used = false;
            }
        }
        pthread_mutex_unlock(&s_fb.lock);
    }
    return NULL;
}

static void fb_start(void)
{
    t_setup_dir();
    pthread_mutex_init(&s_fb.lock, NULL);
    s_fb.router = zmq_socket(mb_zmq_context(), ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(s_fb.router, ZMQ_LINGER, &linger, sizeof linger);
    cr_assert_eq(zmq_bind(s_fb.router, "tcp://127.0.0.1:*"), 0);
    size_t size = sizeof s_fb.endpoint;
    zmq_getsockopt(s_fb.router, ZMQ_LAST_ENDPOINT, s_fb.endpoint, &size);
    cr_assert_eq(pthread_create(&s_fb.thread, NULL, fb_main, NULL), 0);
}

static void fb_stop(void)
{
    t_kill_children();
    atomic_store(&s_fb.stop, true);
    pthread_join(s_fb.thread, NULL);
    zmq_close(s_fb.router);
    for (int i = 0; i < FB_MAX_PENDING; i++)
        if (s_fb.pending[i].used) {
            zmq_msg_close(&s_fb.pending[i].client);
            mb_request_release(&s_fb.pending[i].req);
        }
    if (s_fb.have_held) {
        zmq_msg_close(&s_fb.held_client);
        msgpack_sbuffer_destroy(&s_fb.held);
    }
    for (size_t i = 0; i < s_fb.count; i++) {
        free(s_fb.events[i].topic);
        free(s_fb.events[i].key);
        free(s_fb.events[i].data);
    }
    free(s_fb.events);
    mb_zmq_shutdown();
    t_teardown_dir();
}

static size_t fb_count(void)
{
    pthread_mutex_lock(&s_fb.lock);
    size_t n = s_fb.count;
    pthread_mutex_unlock(&s_fb.lock);
    return n;
}

/* ---- shared checks, run against the fake bus and the real broker ---------------- */

/*  Publishes ticks n = first..first+count-1 on "test.tick" in batches. */
static void t_publish_ticks(mb_events_t *bus, int64_t first, size_t count)
{
    msgpack_sbuffer bufs[100];
    mb_event_out_t out[100];
    char keys[100][32];
    for (size_t i = 0; i < 100; i++)
        msgpack_sbuffer_init(&bufs[i]);
    for (size_t done = 0; done < count;) {
        size_t n = count - done < 100 ? count - done : 100;
        for (size_t i = 0; i < n; i++) {
            int64_t value = first + (int64_t)(done + i);
            t_pack_n(&bufs[i], value);
            snprintf(keys[i], sizeof keys[i], "tick-%lld", (long long)value);
            out[i] = (mb_event_out_t){.topic = "test.tick",
                                      .key = keys[i],
                                      .data = bufs[i].data,
                                      .data_len = bufs[i].size};
        }
        int rc = mb_events_publish_batch(bus, out, n, NULL);
        cr_assert_eq(rc, 0, "publish: %s (%s)", mb_strerror(rc), mb_events_error(bus));
        done += n;
    }
    for (size_t i = 0; i < 100; i++)
        msgpack_sbuffer_destroy(&bufs[i]);
}

/*  Fetches every event of `topic` from the start; returns how many and
    how many distinct keys. */
static size_t t_fetch_all(mb_events_t *bus, const char *topic, size_t *distinct_keys,
                          unsigned wait_ms)
{
    const char *topics[] = {topic, NULL};
    mb_fetch_t q = {.topics = topics, .from = 0, .max = 10000, .wait_ms = wait_ms};
    size_t total = 0, distinct = 0;
    char **keys = NULL;
    for (;;) {
        mb_batch_t batch;
        int rc = mb_events_fetch(bus, &q, &batch);
        cr_assert_eq(rc, 0, "fetch: %s (%s)", mb_strerror(rc), mb_events_error(bus));
        for (size_t i = 0; i < batch.count; i++) {
            char *key = mb_strndup(batch.events[i].key, batch.events[i].key_len);
            bool seen = false;
            for (size_t k = 0; k < distinct && !seen; k++)
                seen = strcmp(keys[k], key) == 0;
            if (seen)
                free(key);
            else {
                keys = realloc(keys, (distinct + 1) * sizeof *keys);
                keys[distinct++] = key;
            }
        }
        total += batch.count;
        bool done = batch.count == 0 || batch.next > batch.head;
        q.from = batch.next;
        q.wait_ms = 0;
        mb_batch_release(&batch);
        if (done)
            break;
    }
    for (size_t k = 0; k < distinct; k++)
        free(keys[k]);
    free(keys);
    if (distinct_keys)
        *distinct_keys = distinct;
    return total;
}

/*  Waits until the "notes.ticks" offset in the actor's env reaches `next`. */
static bool t_wait_offset(uint64_t next, int timeout_ms)
{
    int64_t until = t_now_ms() + timeout_ms;
    while (t_now_ms() < until) {
        MDB_env *env = t_env();
        uint64_t got = 0;
        mb_consumer_offset(env, "notes.ticks", &got, NULL);
        mdb_env_close(env);
        if (got >= next)
            return true;
        t_sleep_ms(50);
    }
    return false;
}

/*  N ticks (and one malformed one) through actor processes killed with
    SIGKILL at random moments: every tick applied exactly once. */
static void t_check_kill_9_consumers(const char *bus_endpoint, size_t n_ticks)
{
    mb_events_t *bus = mb_events_new(bus_endpoint);
    t_publish_ticks(bus, 1, n_ticks / 2);
    cr_assert_eq(mb_events_publish(bus, "test.tick", "bad", "\xa4oops", 5, NULL), 0);
    t_publish_ticks(bus, (int64_t)n_ticks / 2 + 1, n_ticks - n_ticks / 2);
    uint64_t last = 0;
    cr_assert_eq(mb_events_publish(bus, "test.other", "end", "\xc0", 1, &last), 0);

    srand((unsigned)time(NULL));
    unsigned kills = 0;
    for (int round = 0; round < 40; round++) {
        pid_t pid = t_spawn_actor(bus_endpoint);
        t_sleep_ms(30 + rand() % 250);
        kill(pid, SIGKILL);
        int status = t_reap(pid);
        cr_assert(WIFSIGNALED(status), "status %d", status);
        kills++;
        MDB_env *env = t_env();
        uint64_t next = 0;
        mb_consumer_offset(env, "notes.ticks", &next, NULL);
        mdb_env_close(env);
        if (next > last)
            break;
    }
    cr_assert(kills >= 2, "the consumer finished before it could be killed twice");
    /* One last run to the end, then a clean stop. */
    pid_t pid = t_spawn_actor(bus_endpoint);
    cr_assert(t_wait_offset(last, 60000), "the consumer did not reach seq %llu",
              (unsigned long long)last);
    size_t waiting = 1;
    for (int64_t until = t_now_ms() + 10000; waiting > 0 && t_now_ms() < until;) {
        t_sleep_ms(50); /* the outbox publisher looks every 250 ms */
        MDB_env *env = t_env();
        mb_outbox_count(env, &waiting);
        mdb_env_close(env);
    }
    kill(pid, SIGTERM);
    int status = t_reap(pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);

    MDB_env *env = t_env();
    uint64_t skipped = 0;
    cr_assert_eq(mb_consumer_offset(env, "notes.ticks", NULL, &skipped), 0);
    cr_assert_eq(t_read_count(env, "applied"), n_ticks, "applied %llu after %u kills",
                 (unsigned long long)t_read_count(env, "applied"), kills);
    cr_assert_eq(t_read_count(env, "dupes"), 0);
    cr_assert_eq(t_read_count(env, "sum"), (uint64_t)n_ticks * (n_ticks + 1) / 2);
    cr_assert_eq(t_read_count(env, "junk"), 0, "a skipped event's writes are discarded");
    cr_assert_eq(skipped, 1);
    waiting = 99;
    cr_assert_eq(mb_outbox_count(env, &waiting), 0);
    cr_assert_eq(waiting, 0, "the outbox was published");
    mdb_env_close(env);

    /* Derived events went out at least once each, none lost. */
    size_t distinct = 0;
    size_t tocks = t_fetch_all(bus, "test.tock", &distinct, 0);
    cr_assert_eq(distinct, n_ticks / 100, "%zu tocks, %zu distinct", tocks, distinct);
    cr_log_info("%zu ticks, %u kills, %zu tock events for %zu keys", n_ticks, kills, tocks,
                distinct);
    mb_events_destroy(&bus);
}

/* ==== suite mb_events: against the fake bus ========================================= */

TestSuite(mb_events, .init = fb_start, .fini = fb_stop, .timeout = 120);

Test(mb_events, publish_and_fetch)
{
    mb_events_t *bus = mb_events_new(s_fb.endpoint);
    cr_assert_not_null(bus);
    msgpack_sbuffer data;
    msgpack_sbuffer_init(&data);
    t_pack_n(&data, 7);
    uint64_t seq = 0;
    cr_assert_eq(mb_events_publish(bus, "test.tick", "k1", data.data, data.size, &seq), 0);
    cr_assert_eq(seq, 1);
    mb_event_out_t out[] = {{"test.tick", "k2", data.data, data.size},
                            {"test.other", NULL, "\xc0", 1},
                            {"test.tick", "k3", data.data, data.size}};
    uint64_t first = 0;
    cr_assert_eq(mb_events_publish_batch(bus, out, 3, &first), 0);
    cr_assert_eq(first, 2);

    const char *topics[] = {"test.tick", NULL};
    mb_fetch_t q = {.topics = topics};
    mb_batch_t batch;
    cr_assert_eq(mb_events_fetch(bus, &q, &batch), 0);
    cr_assert_eq(batch.count, 3);
    cr_assert_eq(batch.events[0].seq, 1);
    cr_assert_eq(batch.events[1].seq, 2);
    cr_assert_eq(batch.events[2].seq, 4);
    cr_assert_eq(batch.events[2].key_len, 2);
    cr_assert_eq(memcmp(batch.events[2].key, "k3", 2), 0);
    cr_assert_eq(memcmp(batch.events[2].topic, "test.tick", 9), 0);
    int64_t n;
    cr_assert(mb_obj_int(mb_map_get(batch.events[0].data, "n"), &n) && n == 7);
    cr_assert(batch.events[0].time > 1700000000000ull);
    cr_assert_null(batch.events[0].invalid);
    cr_assert_eq(batch.next, 5);
    cr_assert_eq(batch.head, 4);
    mb_batch_release(&batch);
    mb_batch_release(&batch); /* safe twice */

    q = (mb_fetch_t){.prefix = "test.o", .from = 2};
    cr_assert_eq(mb_events_fetch(bus, &q, &batch), 0);
    cr_assert_eq(batch.count, 1);
    cr_assert_eq(batch.events[0].seq, 3);
    cr_assert_eq(batch.events[0].key_len, 0);
    cr_assert_eq(batch.events[0].data->type, MSGPACK_OBJECT_NIL);
    mb_batch_release(&batch);

    cr_assert_str_eq(mb_events_error(bus), "");
    msgpack_sbuffer_destroy(&data);
    mb_events_destroy(&bus);
    cr_assert_null(bus);
    mb_events_destroy(&bus);
}

Test(mb_events, publish_checks_events_before_sending)
{
    mb_events_t *bus = mb_events_new(s_fb.endpoint);
    char long_topic[MB_TOPIC_MAX + 2], long_key[MB_EVENT_KEY_MAX + 2];
    memset(long_topic, 'a', sizeof long_topic - 1);
    long_topic[sizeof long_topic - 1] = '\0';
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    cr_assert_eq(mb_events_publish(bus, "Test.Tick", "", "\xc0", 1, NULL), MB_EINVAL);
    cr_assert(strstr(mb_events_error(bus), "topic"), "%s", mb_events_error(bus));
    cr_assert_eq(mb_events_publish(bus, "", "", "\xc0", 1, NULL), MB_EINVAL);
    cr_assert_eq(mb_events_publish(bus, "a b", "", "\xc0", 1, NULL), MB_EINVAL);
    cr_assert_eq(mb_events_publish(bus, long_topic, "", "\xc0", 1, NULL), MB_EINVAL);
    long_topic[MB_TOPIC_MAX] = '\0';
    cr_assert_eq(mb_events_publish(bus, long_topic, long_key, "\xc0", 1, NULL), MB_EINVAL);
    cr_assert_eq(mb_events_publish(bus, "t", "", "", 0, NULL), MB_EINVAL);
    cr_assert_eq(mb_events_publish(bus, "t", "", "\xc1", 1, NULL), MB_EINVAL);
    cr_assert_eq(mb_events_publish(bus, "t", "", "\xc0\xc0", 2, NULL), MB_EINVAL, "two objects");
    cr_assert_eq(mb_events_publish(bus, "t", "", "\x92\x01", 2, NULL), MB_EINVAL, "truncated");
    char deep[MB_EVENT_DATA_DEPTH + 2];
    memset(deep, 0x91, sizeof deep); /* [[[...[nil]...]]] */
    deep[sizeof deep - 1] = (char)0xc0;
    cr_assert_eq(mb_events_publish(bus, "t", "", deep, sizeof deep, NULL), MB_EINVAL, "too deep");
    cr_assert_eq(mb_events_publish(bus, "t", "", deep + 1, sizeof deep - 1, NULL), 0,
                 "deep enough");
    size_t big = MB_EVENT_DATA_MAX + 1;
    char *blob = malloc(big);
    blob[0] = (char)0xc6; /* bin 32 */
    uint32_t len = (uint32_t)(big - 5);
    for (int i = 0; i < 4; i++)
        blob[1 + i] = (char)(len >> (24 - 8 * i));
    cr_assert_eq(mb_events_publish(bus, "t", "", blob, big, NULL), MB_ETOOBIG);
    blob[4] = (char)(len - 1);
    cr_assert_eq(mb_events_publish(bus, "t", "", blob, big - 1, NULL), 0, "1 MiB exactly");
    free(blob);

    mb_event_out_t out[] = {{"test.a", "", "\xc0", 1}, {"BAD", "", "\xc0", 1}};
    cr_assert_eq(mb_events_publish_batch(bus, out, 2, NULL), MB_EINVAL);
    cr_assert(strstr(mb_events_error(bus), "events[1]"), "%s", mb_events_error(bus));
    cr_assert_eq(mb_events_publish_batch(bus, out, 0, NULL), MB_EINVAL);
    cr_assert_eq(fb_count(), 2, "only the two valid single events were sent");
    mb_events_destroy(&bus);
}

Test(mb_events, fetch_checks_the_query)
{
    mb_events_t *bus = mb_events_new(s_fb.endpoint);
    mb_batch_t batch;
    const char *topics[] = {"ok", NULL}, *bad_topics[] = {"ok", "NO", NULL}, *none[] = {NULL};
    mb_fetch_t both = {.topics = topics, .prefix = "x"}, neither = {0};
    mb_fetch_t bad = {.topics = bad_topics}, empty = {.topics = none};
    mb_fetch_t too_many = {.prefix = "", .max = MB_FETCH_MAX + 1};
    mb_fetch_t too_long = {.prefix = "", .wait_ms = MB_FETCH_WAIT_MAX + 1};
    mb_fetch_t bad_prefix = {.prefix = "A"};
    cr_assert_eq(mb_events_fetch(bus, &both, &batch), MB_EINVAL);
    cr_assert_eq(mb_events_fetch(bus, &neither, &batch), MB_EINVAL);
    cr_assert_eq(mb_events_fetch(bus, &bad, &batch), MB_EINVAL);
    cr_assert_eq(mb_events_fetch(bus, &empty, &batch), MB_EINVAL);
    cr_assert_eq(mb_events_fetch(bus, &too_many, &batch), MB_EINVAL);
    cr_assert_eq(mb_events_fetch(bus, &too_long, &batch), MB_EINVAL);
    cr_assert_eq(mb_events_fetch(bus, &bad_prefix, &batch), MB_EINVAL);
    mb_batch_release(&batch); /* zeroed on failure: safe */
    cr_assert_eq(s_fb.fetches, 0);
    mb_events_destroy(&bus);
}

Test(mb_events, a_fetch_long_polls_until_an_event_arrives)
{
    mb_events_t *bus = mb_events_new(s_fb.endpoint);
    mb_events_t *other = mb_events_new(s_fb.endpoint);
    mb_batch_t batch;
    mb_fetch_t q = {.prefix = "", .wait_ms = 300};
    int64_t t0 = t_now_ms();
    cr_assert_eq(mb_events_fetch(bus, &q, &batch), 0);
    cr_assert_eq(batch.count, 0);
    cr_assert(t_now_ms() - t0 >= 250, "waited %lld ms", (long long)(t_now_ms() - t0));
    cr_assert_eq(batch.next, 1);
    mb_batch_release(&batch);

    /* The fake answers a waiting fetch as soon as something matches. */
    cr_assert_eq(mb_events_publish(other, "late", "", "\xc0", 1, NULL), 0);
    q.wait_ms = 5000;
    t0 = t_now_ms();
    cr_assert_eq(mb_events_fetch(bus, &q, &batch), 0);
    cr_assert_eq(batch.count, 1);
    cr_assert(t_now_ms() - t0 < 2000);
    mb_batch_release(&batch);
    mb_events_destroy(&bus);
    mb_events_destroy(&other);
}

Test(mb_events, broker_errors_become_codes_with_their_text)
{
    mb_events_t *bus = mb_events_new(s_fb.endpoint);
    struct {
        int status;
        const char *code;
        int expected;
    } cases[] = {{503, "overloaded", MB_EAGAIN},      {504, "timeout", MB_ETIMEDOUT},
                 {507, "storage_full", MB_EFULL},     {400, "invalid", MB_EINVAL},
                 {413, "too_big", MB_ETOOBIG},        {500, "internal", MB_EIO},
                 {410, "retention_gap", MB_ENOTFOUND}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pthread_mutex_lock(&s_fb.lock);
        s_fb.fail_status = cases[i].status;
        s_fb.fail_code = cases[i].code;
        s_fb.fail_times = 1;
        pthread_mutex_unlock(&s_fb.lock);
        cr_assert_eq(mb_events_publish(bus, "t", "", "\xc0", 1, NULL), cases[i].expected, "%d",
                     cases[i].status);
        cr_assert(strstr(mb_events_error(bus), cases[i].code), "%s", mb_events_error(bus));
    }
    /* the next call works and clears the error */
    cr_assert_eq(mb_events_publish(bus, "t", "", "\xc0", 1, NULL), 0);
    cr_assert_str_eq(mb_events_error(bus), "");
    mb_events_destroy(&bus);
}

Test(mb_events, a_silent_broker_times_out_and_late_replies_are_not_taken_for_new_ones)
{
    mb_events_t *bus = mb_events_new(s_fb.endpoint);
    mb_events_set_timeout(bus, 300);
    pthread_mutex_lock(&s_fb.lock);
    s_fb.silent = true;
    pthread_mutex_unlock(&s_fb.lock);
    int64_t t0 = t_now_ms();
    cr_assert_eq(mb_events_publish(bus, "t", "", "\xc0", 1, NULL), MB_ETIMEDOUT);
    cr_assert(t_now_ms() - t0 < 1000);

    pthread_mutex_lock(&s_fb.lock);
    s_fb.silent = false;
    s_fb.hold_next = true; /* the next reply comes late, just before the one after */
    pthread_mutex_unlock(&s_fb.lock);
    uint64_t seq = 0;
    cr_assert_eq(mb_events_publish(bus, "t", "", "\xc0", 1, &seq), MB_ETIMEDOUT,
                 "published, but the answer was late");
    cr_assert_eq(mb_events_publish(bus, "t", "", "\xc0", 1, &seq), 0);
    cr_assert_eq(seq, 2, "the late answer (seq 1) was dropped, not returned");
    mb_events_destroy(&bus);

    /* No broker at all: connecting waits within the deadline. */
    bus = mb_events_new("tcp://127.0.0.1:1");
    mb_events_set_timeout(bus, 200);
    cr_assert_eq(mb_events_publish(bus, "t", "", "\xc0", 1, NULL), MB_ETIMEDOUT);
    mb_events_destroy(&bus);
}

/* ---- consumers -------------------------------------------------------------------- */

static const mb_consumer_def_t s_tick_group = {
    .group = "notes.ticks", .topics = s_tick_topics, .apply = t_apply_tick, .batch = 10};

Test(mb_events, a_consumer_applies_each_event_once_and_resumes_after_a_restart)
{
    mb_events_t *bus = mb_events_new(s_fb.endpoint);
    t_publish_ticks(bus, 1, 45);
    cr_assert_eq(mb_events_publish(bus, "test.other", "", "\xc0", 1, NULL), 0);
    MDB_env *env = t_env();
    mb_consumer_t *consumer = mb_consumer_new(&s_tick_group, env, &s_state, s_fb.endpoint);
    cr_assert_not_null(consumer);
    size_t applied, total = 0;
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(mb_consumer_run_once(consumer, 0, &applied), 0);
        cr_assert_eq(applied, i < 4 ? 10 : 5);
        total += applied;
    }
    cr_assert_eq(mb_consumer_run_once(consumer, 0, &applied), 0);
    cr_assert_eq(applied, 0);
    uint64_t next = 0;
    cr_assert_eq(mb_consumer_offset(env, "notes.ticks", &next, NULL), 0);
    cr_assert_eq(next, 47, "past the other topic's event too");
    mb_consumer_stats_t stats;
    mb_consumer_stats(consumer, &stats);
    cr_assert_eq(stats.applied, 45);
    cr_assert_eq(stats.batches, 5);
    mb_consumer_destroy(&consumer);
    mb_consumer_destroy(&consumer);

    /* A new consumer (a restarted process) starts where the offset is. */
    t_publish_ticks(bus, 46, 5);
    consumer = mb_consumer_new(&s_tick_group, env, &s_state, s_fb.endpoint);
    cr_assert_eq(mb_consumer_run_once(consumer, 0, &applied), 0);
    cr_assert_eq(applied, 5);
    cr_assert_eq(t_read_count(env, "applied"), 50);
    cr_assert_eq(t_read_count(env, "dupes"), 0);
    cr_assert_eq(t_read_count(env, "sum"), 50 * 51 / 2);
    mb_consumer_destroy(&consumer);
    mdb_env_close(env);
    mb_events_destroy(&bus);
}

static void *t_run_consumer(void *arg)
{
    return (void *)(intptr_t)mb_consumer_run(arg);
}

Test(mb_events, two_consumers_of_one_group_apply_each_event_once)
{
    mb_events_t *bus = mb_events_new(s_fb.endpoint);
    MDB_env *env = t_env();
    mb_consumer_t *a = mb_consumer_new(&s_tick_group, env, &s_state, s_fb.endpoint);
    mb_consumer_t *b = mb_consumer_new(&s_tick_group, env, &s_state, s_fb.endpoint);
    pthread_t ta, tb;
    pthread_create(&ta, NULL, t_run_consumer, a);
    pthread_create(&tb, NULL, t_run_consumer, b);
    for (int i = 0; i < 10; i++) {
        t_publish_ticks(bus, i * 50 + 1, 50);
        t_sleep_ms(20);
    }
    int64_t until = t_now_ms() + 30000;
    uint64_t next = 0;
    while (next < 501 && t_now_ms() < until) {
        t_sleep_ms(20);
        mb_consumer_offset(env, "notes.ticks", &next, NULL);
    }
    mb_consumer_stop(a);
    mb_consumer_stop(b);
    void *ra, *rb;
    pthread_join(ta, &ra);
    pthread_join(tb, &rb);
    cr_assert_eq((intptr_t)ra, MB_EINTR);
    cr_assert_eq((intptr_t)rb, MB_EINTR);
    cr_assert_eq(next, 501);
    cr_assert_eq(t_read_count(env, "applied"), 500);
    cr_assert_eq(t_read_count(env, "dupes"), 0);
    mb_consumer_stats_t sa, sb;
    mb_consumer_stats(a, &sa);
    mb_consumer_stats(b, &sb);
    cr_assert_eq(sa.applied + sb.applied, 500);
    cr_log_info("two consumers: %lu + %lu applied, %lu + %lu batches lost to the other", sa.applied,
                sb.applied, sa.raced, sb.raced);
    mb_consumer_destroy(&a);
    mb_consumer_destroy(&b);
    mdb_env_close(env);
    mb_events_destroy(&bus);
}

Test(mb_events, a_malformed_event_is_skipped_with_its_writes_and_the_rest_applied)
{
    mb_events_t *bus = mb_events_new(s_fb.endpoint);
    t_publish_ticks(bus, 1, 3);
    cr_assert_eq(mb_events_publish(bus, "test.tick", "bad", "\xa4oops", 5, NULL), 0);
    t_publish_ticks(bus, 4, 3);
    MDB_env *env = t_env();
    mb_consumer_t *consumer = mb_consumer_new(&s_tick_group, env, &s_state, s_fb.endpoint);
    size_t applied;
    cr_assert_eq(mb_consumer_run_once(consumer, 0, &applied), 0);
    cr_assert_eq(applied, 6);
    uint64_t next, skipped;
    cr_assert_eq(mb_consumer_offset(env, "notes.ticks", &next, &skipped), 0);
    cr_assert_eq(next, 8);
    cr_assert_eq(skipped, 1, "the skip is counted in LMDB");
    cr_assert_eq(t_read_count(env, "junk"), 0, "the bad event's writes were rolled back");
    cr_assert_eq(t_read_count(env, "applied"), 6);
    mb_consumer_stats_t stats;
    mb_consumer_stats(consumer, &stats);
    cr_assert_eq(stats.skipped, 1);
    mb_consumer_destroy(&consumer);
    mdb_env_close(env);
    mb_events_destroy(&bus);
}

Test(mb_events, a_malformed_record_from_the_broker_is_skipped)
{
    mb_events_t *bus = mb_events_new(s_fb.endpoint);
    t_publish_ticks(bus, 1, 5);
    pthread_mutex_lock(&s_fb.lock);
    s_fb.corrupt_seq = 3;
    pthread_mutex_unlock(&s_fb.lock);
    MDB_env *env = t_env();
    mb_consumer_t *consumer =
        mb_consumer_new(&(mb_consumer_def_t){.group = "all", .prefix = "", .apply = t_apply_tick},
                        env, &s_state, s_fb.endpoint);
    size_t applied;
    cr_assert_eq(mb_consumer_run_once(consumer, 0, &applied), 0);
    cr_assert_eq(applied, 4);
    uint64_t next, skipped;
    mb_consumer_offset(env, "all", &next, &skipped);
    cr_assert_eq(next, 6);
    cr_assert_eq(skipped, 1);
    mb_consumer_destroy(&consumer);
    mdb_env_close(env);
    mb_events_destroy(&bus);
}

Test(mb_events, a_transient_failure_rolls_the_batch_back_and_it_is_retried)
{
    mb_events_t *bus = mb_events_new(s_fb.endpoint);
    t_publish_ticks(bus, 1, 8);
    MDB_env *env = t_env();
    mb_consumer_t *consumer = mb_consumer_new(&s_tick_group, env, &s_state, s_fb.endpoint);
    s_fail_seq = 5;
    s_fail_left = 1;
    size_t applied = 99;
    cr_assert_eq(mb_consumer_run_once(consumer, 0, &applied), MB_EAGAIN);
    cr_assert_eq(applied, 0);
    uint64_t next;
    mb_consumer_offset(env, "notes.ticks", &next, NULL);
    cr_assert_eq(next, 0, "nothing moved");
    cr_assert_eq(t_read_count(env, "applied"), 0, "events 1..4 were rolled back too");
    cr_assert_eq(mb_consumer_run_once(consumer, 0, &applied), 0);
    cr_assert_eq(applied, 8);
    cr_assert_eq(t_read_count(env, "applied"), 8);
    cr_assert_eq(t_read_count(env, "dupes"), 0);
    mb_consumer_stats_t stats;
    mb_consumer_stats(consumer, &stats);
    cr_assert_eq(stats.failures, 1);
    mb_consumer_destroy(&consumer);
    mdb_env_close(env);
    mb_events_destroy(&bus);
}

Test(mb_events, a_retention_gap_stops_the_consumer_and_moves_nothing)
{
    mb_events_t *bus = mb_events_new(s_fb.endpoint);
    t_publish_ticks(bus, 1, 10);
    MDB_env *env = t_env();
    mb_consumer_t *consumer = mb_consumer_new(&s_tick_group, env, &s_state, s_fb.endpoint);
    cr_assert_eq(mb_consumer_run_once(consumer, 0, NULL), 0);
    mb_consumer_destroy(&consumer);
    t_publish_ticks(bus, 11, 10);
    pthread_mutex_lock(&s_fb.lock);
    s_fb.retention_from = 15; /* 11..14 are gone before this group saw them */
    pthread_mutex_unlock(&s_fb.lock);
    consumer = mb_consumer_new(&s_tick_group, env, &s_state, s_fb.endpoint);
    cr_assert_eq(mb_consumer_run_once(consumer, 0, NULL), MB_ENOTFOUND);
    cr_assert_eq(mb_consumer_run(consumer), MB_ENOTFOUND, "run gives up at once");
    uint64_t next;
    mb_consumer_offset(env, "notes.ticks", &next, NULL);
    cr_assert_eq(next, 11);
    cr_assert_eq(t_read_count(env, "applied"), 10);
    mb_consumer_destroy(&consumer);
    mdb_env_close(env);
    mb_events_destroy(&bus);
}

Test(mb_events, a_quiet_group_keeps_up_with_the_log_and_sees_no_false_gap)
{
    mb_events_t *bus = mb_events_new(s_fb.endpoint);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(mb_events_publish(bus, "test.other", "", "\xc0", 1, NULL), 0);
    MDB_env *env = t_env();
    mb_consumer_t *consumer = mb_consumer_new(&s_tick_group, env, &s_state, s_fb.endpoint);
    size_t applied = 9;
    cr_assert_eq(mb_consumer_run_once(consumer, 0, &applied), 0);
    cr_assert_eq(applied, 0);
    uint64_t next;
    mb_consumer_offset(env, "notes.ticks", &next, NULL);
    cr_assert_eq(next, 11, "how far it scanned is stored although nothing matched");
    mb_consumer_destroy(&consumer);
    pthread_mutex_lock(&s_fb.lock);
    s_fb.retention_from = 11; /* the other topic's events are gone */
    pthread_mutex_unlock(&s_fb.lock);
    t_publish_ticks(bus, 1, 3);
    consumer = mb_consumer_new(&s_tick_group, env, &s_state, s_fb.endpoint);
    cr_assert_eq(mb_consumer_run_once(consumer, 0, &applied), 0, "no retention gap");
    cr_assert_eq(applied, 3);
    mb_consumer_destroy(&consumer);
    mdb_env_close(env);
    mb_events_destroy(&bus);
}

Test(mb_events, a_consumer_stops_during_its_long_poll)
{
    MDB_env *env = t_env();
    mb_consumer_t *consumer = mb_consumer_new(&s_tick_group, env, &s_state, s_fb.endpoint);
    pthread_t thread;
    pthread_create(&thread, NULL, t_run_consumer, consumer);
    t_sleep_ms(300);
    int64_t t0 = t_now_ms();
    mb_consumer_stop(consumer);
    void *rc;
    pthread_join(thread, &rc);
    cr_assert_eq((intptr_t)rc, MB_EINTR);
    cr_assert(t_now_ms() - t0 < 800, "stopped in %lld ms (the poll lasts 1000)",
              (long long)(t_now_ms() - t0));
    mb_consumer_destroy(&consumer);
    mdb_env_close(env);
}

Test(mb_events, a_consumer_backs_off_while_the_broker_is_away)
{
    MDB_env *env = t_env();
    mb_events_t *bus = mb_events_new(s_fb.endpoint);
    t_publish_ticks(bus, 1, 5);
    pthread_mutex_lock(&s_fb.lock);
    s_fb.fail_status = 503;
    s_fb.fail_code = "unavailable";
    s_fb.fail_times = 3;
    pthread_mutex_unlock(&s_fb.lock);
    mb_consumer_t *consumer = mb_consumer_new(&s_tick_group, env, &s_state, s_fb.endpoint);
    pthread_t thread;
    int64_t t0 = t_now_ms();
    pthread_create(&thread, NULL, t_run_consumer, consumer);
    uint64_t next = 0;
    while (next < 6 && t_now_ms() - t0 < 5000) {
        t_sleep_ms(20);
        mb_consumer_offset(env, "notes.ticks", &next, NULL);
    }
    mb_consumer_stop(consumer);
    pthread_join(thread, NULL);
    cr_assert_eq(next, 6);
    cr_assert_eq(t_read_count(env, "applied"), 5);
    mb_consumer_stats_t stats;
    mb_consumer_stats(consumer, &stats);
    cr_assert(stats.failures >= 1, "%lu", stats.failures);
    mb_consumer_destroy(&consumer);
    mdb_env_close(env);
    mb_events_destroy(&bus);
}

Test(mb_events, consumer_definitions_are_checked)
{
    MDB_env *env = t_env();
    const char *bad_topics[] = {"Bad", NULL}, *no_topics[] = {NULL};
    mb_consumer_def_t bad[] = {
        {.group = NULL, .prefix = "", .apply = t_apply_tick},
        {.group = "", .prefix = "", .apply = t_apply_tick},
        {.group = "Upper", .prefix = "", .apply = t_apply_tick},
        {.group = "g", .prefix = "", .apply = NULL},
        {.group = "g", .apply = t_apply_tick},
        {.group = "g", .prefix = "", .topics = s_tick_topics, .apply = t_apply_tick},
        {.group = "g", .topics = bad_topics, .apply = t_apply_tick},
        {.group = "g", .topics = no_topics, .apply = t_apply_tick},
        {.group = "g", .prefix = "", .apply = t_apply_tick, .batch = MB_FETCH_MAX + 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_null(mb_consumer_new(&bad[i], env, NULL, s_fb.endpoint), "case %zu", i);
    cr_assert_null(mb_consumer_new(&s_tick_group, env, NULL, "not an endpoint"));
    mdb_env_close(env);
}

/* ---- the outbox ------------------------------------------------------------------------ */

static void t_outbox_put(MDB_env *env, const char *topic, const char *key, bool commit)
{
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    msgpack_sbuffer data;
    msgpack_sbuffer_init(&data);
    t_pack_n(&data, 1);
    cr_assert_eq(mb_outbox_add(txn, topic, key, data.data, data.size), 0);
    msgpack_sbuffer_destroy(&data);
    if (commit)
        cr_assert_eq(mdb_txn_commit(txn), 0);
    else
        mdb_txn_abort(txn);
}

Test(mb_events, the_outbox_publishes_what_committed_in_commit_order)
{
    MDB_env *env = t_env();
    t_outbox_put(env, "test.note", "a", true);
    t_outbox_put(env, "test.note", "lost", false);
    t_outbox_put(env, "test.note", "b", true);
    t_outbox_put(env, "test.other", "c", true);
    size_t count = 0, published = 0;
    cr_assert_eq(mb_outbox_count(env, &count), 0);
    cr_assert_eq(count, 3);
    mb_events_t *bus = mb_events_new(s_fb.endpoint);
    cr_assert_eq(mb_outbox_flush(env, bus, &published), 0);
    cr_assert_eq(published, 3);
    cr_assert_eq(mb_outbox_count(env, &count), 0);
    cr_assert_eq(count, 0);
    cr_assert_eq(fb_count(), 3);
    cr_assert_str_eq(s_fb.events[0].key, "a");
    cr_assert_str_eq(s_fb.events[1].key, "b");
    cr_assert_str_eq(s_fb.events[2].key, "c");
    cr_assert_str_eq(s_fb.events[2].topic, "test.other");
    cr_assert_eq(s_fb.publishes, 1, "in one batch");
    cr_assert_eq(mb_outbox_flush(env, bus, &published), 0);
    cr_assert_eq(published, 0);
    cr_assert_eq(s_fb.publishes, 1, "nothing to send");
    /* numbering continues after the outbox emptied */
    t_outbox_put(env, "test.note", "d", true);
    cr_assert_eq(mb_outbox_flush(env, bus, &published), 0);
    cr_assert_eq(published, 1);
    cr_assert_str_eq(s_fb.events[3].key, "d");
    mb_events_destroy(&bus);
    mdb_env_close(env);
}

Test(mb_events, the_outbox_drops_what_the_broker_refuses_and_publishes_the_rest)
{
    MDB_env *env = t_env();
    t_outbox_put(env, "test.note", "a", true);
    t_outbox_put(env, "refused.note", "x", true);
    t_outbox_put(env, "test.note", "b", true);
    mb_events_t *bus = mb_events_new(s_fb.endpoint);
    size_t published, count;
    cr_assert_eq(mb_outbox_flush(env, bus, &published), 0);
    cr_assert_eq(published, 3, "two published, one dropped");
    cr_assert_eq(fb_count(), 2);
    cr_assert_str_eq(s_fb.events[0].key, "a");
    cr_assert_str_eq(s_fb.events[1].key, "b");
    cr_assert_eq(mb_outbox_count(env, &count), 0);
    cr_assert_eq(count, 0);
    mb_events_destroy(&bus);
    mdb_env_close(env);
}

Test(mb_events, the_outbox_keeps_events_while_the_broker_is_away)
{
    MDB_env *env = t_env();
    t_outbox_put(env, "test.note", "a", true);
    mb_events_t *bus = mb_events_new(s_fb.endpoint);
    mb_events_set_timeout(bus, 200);
    pthread_mutex_lock(&s_fb.lock);
    s_fb.fail_status = 503;
    s_fb.fail_code = "overloaded";
    s_fb.fail_times = 1;
    pthread_mutex_unlock(&s_fb.lock);
    size_t published = 9, count;
    cr_assert_eq(mb_outbox_flush(env, bus, &published), MB_EAGAIN);
    cr_assert_eq(published, 0);
    pthread_mutex_lock(&s_fb.lock);
    s_fb.silent = true;
    pthread_mutex_unlock(&s_fb.lock);
    cr_assert_eq(mb_outbox_flush(env, bus, &published), MB_ETIMEDOUT);
    cr_assert_eq(mb_outbox_count(env, &count), 0);
    cr_assert_eq(count, 1, "kept for the next try");
    mb_events_destroy(&bus);
    mdb_env_close(env);
}

Test(mb_events, one_outbox_flush_at_a_time)
{
    MDB_env *env = t_env();
    t_outbox_put(env, "test.note", "a", true);
    char path[128];
    snprintf(path, sizeof path, "%s/notes/outbox.lock", s_tmp);
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    cr_assert(fd >= 0);
    cr_assert_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
    mb_events_t *bus = mb_events_new(s_fb.endpoint);
    size_t published;
    cr_assert_eq(mb_outbox_flush(env, bus, &published), MB_EAGAIN, "someone else is flushing");
    close(fd);
    cr_assert_eq(mb_outbox_flush(env, bus, &published), 0);
    cr_assert_eq(published, 1);
    mb_events_destroy(&bus);
    mdb_env_close(env);
}

Test(mb_events, outbox_add_checks_the_event)
{
    MDB_env *env = t_env();
    MDB_txn *txn;
    cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    cr_assert_eq(mb_outbox_add(txn, "Bad Topic", "", "\xc0", 1), MB_EINVAL);
    cr_assert_eq(mb_outbox_add(txn, "t", "", "\xc1", 1), MB_EINVAL);
    cr_assert_eq(mb_outbox_add(txn, "t", "", NULL, 0), MB_EINVAL);
    cr_assert_eq(mb_outbox_add(txn, "t", NULL, "\xc0", 1), 0, "no key is fine");
    cr_assert_eq(mdb_txn_commit(txn), 0);
    size_t count;
    cr_assert_eq(mb_outbox_count(env, &count), 0);
    cr_assert_eq(count, 1);
    mdb_env_close(env);
}

/* ---- actors run by mb_actor_main(), against the fake bus ---------------------------- */

Test(mb_events, actor_consumers_apply_each_event_once_across_kill_9, .timeout = 180)
{
    t_check_kill_9_consumers(s_fb.endpoint, 1000);
}

Test(mb_events, two_actor_processes_share_a_group_and_apply_each_event_once)
{
    mb_events_t *bus = mb_events_new(s_fb.endpoint);
    pid_t a = t_spawn_actor(s_fb.endpoint), b = t_spawn_actor(s_fb.endpoint);
    for (int i = 0; i < 10; i++) {
        t_publish_ticks(bus, i * 40 + 1, 40);
        t_sleep_ms(30);
    }
    cr_assert(t_wait_offset(401, 30000));
    kill(a, SIGTERM);
    kill(b, SIGTERM);
    int sa = t_reap(a), sb = t_reap(b);
    cr_assert(WIFEXITED(sa) && WEXITSTATUS(sa) == 0, "status %d", sa);
    cr_assert(WIFEXITED(sb) && WEXITSTATUS(sb) == 0, "status %d", sb);
    MDB_env *env = t_env();
    cr_assert_eq(t_read_count(env, "applied"), 400);
    cr_assert_eq(t_read_count(env, "dupes"), 0);
    mdb_env_close(env);
    mb_events_destroy(&bus);
}

/* ==== suite mb_events_broker: against the real musicbus-broker ============================== */

static pid_t s_broker;
static char s_bus[256];

/*  Starts the broker bound to `bind` with its data in s_tmp/broker, and
    sets s_bus to the endpoint it reports. s_broker becomes -1 when it is
    not built, 0 when it exits at once (no --data: an older broker). */
static void t_broker_spawn(const char *bind)
{
    const char *bin_dir = getenv("MUSICBUS_BIN_DIR");
    cr_assert(bin_dir, "MUSICBUS_BIN_DIR is not set (run through ctest)");
    char bin[PATH_MAX], ready[128], data[128], log[128];
    snprintf(bin, sizeof bin, "%s/musicbus-broker", bin_dir);
    if (access(bin, X_OK) != 0) {
        s_broker = -1; /* not built: the tests skip */
        return;
    }
    snprintf(ready, sizeof ready, "%s/broker.ready", s_tmp);
    snprintf(data, sizeof data, "%s/broker", s_tmp);
    snprintf(log, sizeof log, "%s/broker.log", s_tmp);
    unlink(ready);
    char *argv[] = {bin, "--bind", (char *)bind, "--ready-file", ready, "--data", data, NULL};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log, O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    cr_assert_eq(posix_spawn(&s_broker, bin, &actions, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    int64_t until = t_now_ms() + 10000;
    for (;;) {
        FILE *file = fopen(ready, "r");
        if (file) {
            bool got = fgets(s_bus, sizeof s_bus, file) != NULL;
            fclose(file);
            if (got) {
                s_bus[strcspn(s_bus, "\r\n")] = '\0';
                break;
            }
        }
        int status;
        if (waitpid(s_broker, &status, WNOHANG) == s_broker) {
            s_broker = 0;
            return;
        }
        cr_assert(t_now_ms() < until, "the broker wrote no ready file in 10 s");
        t_sleep_ms(20);
    }
}

static void t_broker_start(void)
{
    t_setup_dir();
    t_broker_spawn("tcp://127.0.0.1:*");
}

static void t_broker_stop(void)
{
    t_kill_children();
    if (s_broker > 0) {
        kill(s_broker, SIGTERM);
        waitpid(s_broker, NULL, 0);
        s_broker = 0;
    }
    mb_zmq_shutdown();
    t_teardown_dir();
}

/*  Skips the test when the broker does not answer bus.* (yet). */
static void t_need_bus(void)
{
    /* A skipped test does not run the suite's fini: clean up first. */
    if (s_broker < 0) {
        t_broker_stop();
        cr_skip_test("musicbus-broker is not built in this build folder");
    }
    if (s_broker == 0) {
        t_broker_stop();
        cr_skip_test("musicbus-broker does not take --data: no event streams in this build");
    }
    mb_events_t *bus = mb_events_new(s_bus);
    mb_events_set_timeout(bus, 2000);
    mb_batch_t batch;
    int rc = mb_events_fetch(bus, &(mb_fetch_t){.prefix = ""}, &batch);
    char why[600];
    snprintf(why, sizeof why, "%s", mb_events_error(bus));
    mb_batch_release(&batch);
    mb_events_destroy(&bus);
    if (rc) {
        t_broker_stop();
        cr_skip_test("the broker does not answer bus.fetch: %s (%s)", mb_strerror(rc), why);
    }
}

TestSuite(mb_events_broker, .init = t_broker_start, .fini = t_broker_stop, .timeout = 180);

Test(mb_events_broker, usage)
{
    t_need_bus();
    /* Publish one event and a batch; each is on disk when the call returns. */
    mb_events_t *bus = mb_events_new(s_bus);
    msgpack_sbuffer data;
    msgpack_sbuffer_init(&data);
    t_pack_n(&data, 42);
    uint64_t seq = 0, first = 0;
    int rc = mb_events_publish(bus, "test.tick", "tick-42", data.data, data.size, &seq);
    cr_assert_eq(rc, 0, "%s (%s)", mb_strerror(rc), mb_events_error(bus));
    mb_event_out_t out[] = {{"test.tick", "tick-43", data.data, data.size},
                            {"test.other", "", "\xc0", 1}};
    cr_assert_eq(mb_events_publish_batch(bus, out, 2, &first), 0, "%s", mb_events_error(bus));
    cr_assert_eq(first, seq + 1);

    /* Fetch them back by topic. */
    const char *topics[] = {"test.tick", NULL};
    mb_fetch_t q = {.topics = topics, .from = 0, .max = 100};
    mb_batch_t batch;
    cr_assert_eq(mb_events_fetch(bus, &q, &batch), 0, "%s", mb_events_error(bus));
    cr_assert_eq(batch.count, 2);
    cr_assert_eq(batch.events[0].seq, seq);
    cr_assert_eq(batch.events[1].seq, seq + 1);
    cr_assert_eq(batch.events[1].key_len, 7);
    cr_assert_eq(memcmp(batch.events[1].key, "tick-43", 7), 0);
    int64_t n = 0;
    cr_assert(mb_obj_int(mb_map_get(batch.events[0].data, "n"), &n) && n == 42);
    cr_assert_null(batch.events[0].invalid);
    cr_assert_eq(batch.head, seq + 2);
    cr_assert(batch.next > seq + 1);
    mb_batch_release(&batch);

    /* And by prefix, from a seq on. */
    q = (mb_fetch_t){.prefix = "test.o", .from = seq};
    cr_assert_eq(mb_events_fetch(bus, &q, &batch), 0, "%s", mb_events_error(bus));
    cr_assert_eq(batch.count, 1);
    cr_assert_eq(batch.events[0].seq, seq + 2);
    mb_batch_release(&batch);

    msgpack_sbuffer_destroy(&data);
    mb_events_destroy(&bus);
}

/*  Fetches with a long poll on one thread while another publishes. */
static void *t_publish_later(void *arg)
{
    t_sleep_ms(300);
    mb_events_t *bus = mb_events_new(arg);
    mb_events_publish(bus, "test.later", "x", "\xc0", 1, NULL);
    mb_events_destroy(&bus);
    return NULL;
}

Test(mb_events_broker, a_long_poll_wakes_when_an_event_arrives)
{
    t_need_bus();
    mb_events_t *bus = mb_events_new(s_bus);
    const char *topics[] = {"test.later", NULL};
    mb_fetch_t q = {.topics = topics, .wait_ms = 10000};
    pthread_t thread;
    pthread_create(&thread, NULL, t_publish_later, s_bus);
    int64_t t0 = t_now_ms();
    mb_batch_t batch;
    cr_assert_eq(mb_events_fetch(bus, &q, &batch), 0, "%s", mb_events_error(bus));
    int64_t took = t_now_ms() - t0;
    pthread_join(thread, NULL);
    cr_assert_eq(batch.count, 1);
    cr_assert(took >= 250 && took < 5000, "took %lld ms", (long long)took);
    mb_batch_release(&batch);
    mb_events_destroy(&bus);
}

Test(mb_events_broker, a_consumer_applies_each_event_once)
{
    t_need_bus();
    mb_events_t *bus = mb_events_new(s_bus);
    t_publish_ticks(bus, 1, 250);
    MDB_env *env = t_env();
    mb_consumer_t *consumer = mb_consumer_new(&s_tick_group, env, &s_state, s_bus);
    size_t applied, total = 0;
    for (int i = 0; i < 100 && total < 250; i++) {
        int rc = mb_consumer_run_once(consumer, 1000, &applied);
        cr_assert_eq(rc, 0, "%s", mb_strerror(rc));
        total += applied;
    }
    cr_assert_eq(total, 250);
    cr_assert_eq(t_read_count(env, "applied"), 250);
    cr_assert_eq(t_read_count(env, "dupes"), 0);
    mb_consumer_destroy(&consumer);
    mdb_env_close(env);
    mb_events_destroy(&bus);
}

Test(mb_events_broker, two_actor_processes_share_a_group_and_apply_each_event_once)
{
    t_need_bus();
    mb_events_t *bus = mb_events_new(s_bus);
    pid_t a = t_spawn_actor(s_bus), b = t_spawn_actor(s_bus);
    for (int i = 0; i < 10; i++) {
        t_publish_ticks(bus, i * 100 + 1, 100);
        t_sleep_ms(30);
    }
    uint64_t last = 0;
    cr_assert_eq(mb_events_publish(bus, "test.other", "", "\xc0", 1, &last), 0);
    cr_assert(t_wait_offset(last, 60000));
    kill(a, SIGTERM);
    kill(b, SIGTERM);
    int sa = t_reap(a), sb = t_reap(b);
    cr_assert(WIFEXITED(sa) && WEXITSTATUS(sa) == 0, "status %d", sa);
    cr_assert(WIFEXITED(sb) && WEXITSTATUS(sb) == 0, "status %d", sb);
    MDB_env *env = t_env();
    cr_assert_eq(t_read_count(env, "applied"), 1000);
    cr_assert_eq(t_read_count(env, "dupes"), 0);
    mdb_env_close(env);
    mb_events_destroy(&bus);
}

Test(mb_events_broker, actor_consumers_apply_each_event_once_across_kill_9)
{
    t_need_bus();
    t_check_kill_9_consumers(s_bus, 2000);
}

/*  Calls op `op` of the notes actor with args {id, die}. */
static int t_call_note(const char *id, bool die, int timeout_ms)
{
    mb_client_t *client = mb_client_new(s_bus);
    msgpack_sbuffer req;
    msgpack_packer pk;
    msgpack_sbuffer_init(&req);
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    mb_request_pack_head(&pk, "note.add", 7, (uint32_t)timeout_ms, 1);
    mb_pack_cstr(&pk, "args");
    msgpack_pack_map(&pk, 2);
    mb_pack_cstr(&pk, "id");
    mb_pack_cstr(&pk, id);
    mb_pack_cstr(&pk, "die");
    if (die)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    zmq_msg_t reply;
    int status = -1;
    if (mb_client_call(client, "notes", req.data, req.size, timeout_ms, &reply) == 0) {
        mb_reply_t rep;
        if (mb_reply_decode(&rep, zmq_msg_data(&reply), zmq_msg_size(&reply), NULL) == 0) {
            status = rep.status;
            mb_reply_release(&rep);
        }
        zmq_msg_close(&reply);
    }
    msgpack_sbuffer_destroy(&req);
    mb_client_destroy(&client);
    return status;
}

Test(mb_events_broker, an_actor_publishes_through_its_outbox)
{
    t_need_bus();
    pid_t pid = t_spawn_actor(s_bus);
    cr_assert_eq(t_call_note("n1", false, 5000), 201);
    cr_assert_eq(t_call_note("n1", false, 5000), 200, "a repeat makes no event");
    mb_events_t *bus = mb_events_new(s_bus);
    const char *topics[] = {"test.note", NULL};
    mb_fetch_t q = {.topics = topics, .wait_ms = 5000};
    mb_batch_t batch;
    cr_assert_eq(mb_events_fetch(bus, &q, &batch), 0, "%s", mb_events_error(bus));
    cr_assert_eq(batch.count, 1);
    cr_assert_eq(batch.events[0].key_len, 2);
    cr_assert_eq(memcmp(batch.events[0].key, "n1", 2), 0);
    cr_assert(mb_obj_str_eq(mb_map_get(batch.events[0].data, "id"), "n1"));
    mb_batch_release(&batch);
    kill(pid, SIGTERM);
    int status = t_reap(pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
    MDB_env *env = t_env();
    size_t count = 9;
    cr_assert_eq(mb_outbox_count(env, &count), 0);
    cr_assert_eq(count, 0);
    mdb_env_close(env);
    mb_events_destroy(&bus);
}

Test(mb_events_broker, an_event_committed_before_a_crash_is_published_on_restart)
{
    t_need_bus();
    pid_t pid = t_spawn_actor(s_bus);
    /* The handler commits the note and its event, then SIGKILLs itself
       before anything is published. */
    int answer = t_call_note("n2", true, 800);
    cr_assert(answer < 200 || answer >= 300,
              "no success from a dead actor (got %d; -1 is none, "
              "504 the broker's deadline)",
              answer);
    int status = t_reap(pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "status %d", status);
    MDB_env *env = t_env();
    size_t count = 0;
    cr_assert_eq(mb_outbox_count(env, &count), 0);
    cr_assert_eq(count, 1, "the event waits in the outbox");
    mdb_env_close(env);
    mb_events_t *bus = mb_events_new(s_bus);
    cr_assert_eq(t_fetch_all(bus, "test.note", NULL, 0), 0, "not on the bus yet");

    t_sleep_ms(1000); /* past the request's deadline: the broker does not re-dispatch it */
    pid = t_spawn_actor(s_bus);
    size_t distinct = 0;
    int64_t until = t_now_ms() + 10000;
    size_t n = 0;
    while ((n = t_fetch_all(bus, "test.note", &distinct, 500)) == 0 && t_now_ms() < until)
        ;
    cr_assert_eq(n, 1, "published once, at start-up");
    kill(pid, SIGTERM);
    status = t_reap(pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
    mb_events_destroy(&bus);
}

Test(mb_events_broker, consumers_and_the_outbox_survive_a_broker_killed_mid_stream)
{
    t_need_bus();
    mb_events_t *bus = mb_events_new(s_bus);
    t_publish_ticks(bus, 1, 500);
    mb_events_destroy(&bus);
    pid_t actor = t_spawn_actor(s_bus);
    cr_assert(!t_wait_offset(501, 200), "still consuming when the broker dies");
    kill(s_broker, SIGKILL);
    waitpid(s_broker, NULL, 0);
    t_sleep_ms(500);
    /* Same endpoint, same data: the actor reconnects by itself. */
    char endpoint[256];
    snprintf(endpoint, sizeof endpoint, "%s", s_bus);
    t_broker_spawn(endpoint);
    cr_assert(s_broker > 0, "the broker restarts on %s", endpoint);
    bus = mb_events_new(s_bus);
    t_publish_ticks(bus, 501, 500);
    uint64_t last = 0;
    cr_assert_eq(mb_events_publish(bus, "test.other", "", "\xc0", 1, &last), 0);
    cr_assert(t_wait_offset(last, 60000), "the consumer caught up after the restart");
    size_t waiting = 1;
    for (int64_t until = t_now_ms() + 10000; waiting > 0 && t_now_ms() < until;) {
        t_sleep_ms(50);
        MDB_env *env = t_env();
        mb_outbox_count(env, &waiting);
        mdb_env_close(env);
    }
    kill(actor, SIGTERM);
    int status = t_reap(actor);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
    MDB_env *env = t_env();
    cr_assert_eq(t_read_count(env, "applied"), 1000);
    cr_assert_eq(t_read_count(env, "dupes"), 0);
    mdb_env_close(env);
    size_t distinct = 0;
    t_fetch_all(bus, "test.tock", &distinct, 0);
    cr_assert_eq(distinct, 10, "every derived event reached the bus");
    mb_events_destroy(&bus);
}
