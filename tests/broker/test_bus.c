/*  Tests of the broker's service "bus" (durable event streams): the real
    musicbus-broker, started on a port the OS picks with its event log in a
    temporary folder, driven by raw DEALER sockets speaking MDP/0.1 with
    musicbus envelopes (mb_envelope.h).

    Every test stops the broker it started, and removes its folder. */

#include <criterion/criterion.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <msgpack.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "mb_envelope.h"
#include "mb_msgpack.h"
#include "mdp.h"

/*  ---------------------------------------------------------------------
    The broker process */

static pid_t s_pid = 0;
static char s_dir[PATH_MAX];
static char s_endpoint[256];
static void *s_ctx = NULL;
static const char *s_flags[16]; /* extra flags of the running broker, for restarts */

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t s_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void s_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/*  Starts the broker on the test's folder (made on first use) with the
    flags in s_flags, and waits for its endpoint. */
static void s_launch(void)
{
    const char *bin_dir = getenv("MUSICBUS_BIN_DIR");
    cr_assert(bin_dir, "MUSICBUS_BIN_DIR is not set (run through ctest)");
    char bin[PATH_MAX];
    snprintf(bin, sizeof bin, "%s/musicbus-broker", bin_dir);
    if (!s_dir[0]) {
        snprintf(s_dir, sizeof s_dir, "/tmp/mb-bus-test-XXXXXX");
        cr_assert(mkdtemp(s_dir), "mkdtemp: %s", strerror(errno));
    }
    char ready[PATH_MAX + 16];
    snprintf(ready, sizeof ready, "%s/ready", s_dir);
    unlink(ready);
    const char *argv[32] = {bin,      "--bind", "tcp://127.0.0.1:*", "--ready-file", ready,
                            "--data", s_dir};
    int argc = 7;
    for (int i = 0; s_flags[i] && argc < 31; i++)
        argv[argc++] = s_flags[i];
    argv[argc] = NULL;
    pid_t parent = getpid();
    s_pid = fork();
    cr_assert(s_pid >= 0, "fork: %s", strerror(errno));
    if (s_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    int64_t until = s_now_ms() + 10000;
    for (;;) {
        FILE *file = fopen(ready, "r");
        if (file) {
            size_t n = fread(s_endpoint, 1, sizeof s_endpoint - 1, file);
            fclose(file);
            s_endpoint[n] = '\0';
            break;
        }
        int status;
        cr_assert(waitpid(s_pid, &status, WNOHANG) == 0, "the broker exited at start");
        cr_assert(s_now_ms() < until, "the broker wrote no ready file in 10 s");
        s_sleep_ms(10);
    }
    if (!s_ctx)
        s_ctx = zmq_ctx_new();
}

/*  s_launch() with the NULL-terminated extra flags. */
static void s_start_broker(const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    int n = 0;
    for (const char *arg = first; arg && n < 15; arg = va_arg(ap, const char *))
        s_flags[n++] = arg;
    s_flags[n] = NULL;
    va_end(ap);
    s_launch();
}

/*  SIGTERM; returns the exit status (-1 when it had to be killed). */
static int s_stop_broker(void)
{
    if (s_pid <= 0)
        return 0;
    kill(s_pid, SIGTERM);
    int status = 0;
    int64_t until = s_now_ms() + 10000;
    while (waitpid(s_pid, &status, WNOHANG) == 0) {
        if (s_now_ms() > until) {
            kill(s_pid, SIGKILL);
            waitpid(s_pid, &status, 0);
            s_pid = 0;
            return -1;
        }
        s_sleep_ms(5);
    }
    s_pid = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void s_kill_broker(void)
{
    kill(s_pid, SIGKILL);
    waitpid(s_pid, NULL, 0);
    s_pid = 0;
}

static int s_remove(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void s_teardown(void)
{
    s_stop_broker();
    if (s_dir[0])
        nftw(s_dir, s_remove, 16, FTW_DEPTH | FTW_PHYS);
    s_dir[0] = '\0';
    if (s_ctx) {
        zmq_ctx_shutdown(s_ctx); /* a failed test leaves sockets open */
        s_ctx = NULL;
    }
}

/*  Ends a test: sockets closed, the broker exits 0 on SIGTERM. */
static void s_finish(void)
{
    zmq_ctx_term(s_ctx);
    s_ctx = NULL;
    int rc = s_stop_broker();
    cr_assert_eq(rc, 0, "broker exit status %d after SIGTERM", rc);
}

TestSuite(bus, .fini = s_teardown, .timeout = 90);

/*  ---------------------------------------------------------------------
    Requests and replies */

static void *s_socket(void)
{
    void *socket = zmq_socket(s_ctx, ZMQ_DEALER);
    cr_assert(socket);
    int zero = 0;
    zmq_setsockopt(socket, ZMQ_LINGER, &zero, sizeof zero);
    cr_assert_eq(zmq_connect(socket, s_endpoint), 0);
    return socket;
}

typedef struct {
    msgpack_sbuffer buf;
    msgpack_packer pk;
    uint64_t rid;
} req_t;

static uint64_t s_next_rid = 1;

/*  Starts a request to op with `n_args` args (a ttl when ttl_ms > 0);
    the caller packs the args' entries into r->pk. */
static msgpack_packer *s_req(req_t *r, const char *op, uint32_t ttl_ms, uint32_t n_args)
{
    msgpack_sbuffer_init(&r->buf);
    msgpack_packer_init(&r->pk, &r->buf, msgpack_sbuffer_write);
    r->rid = s_next_rid++;
    mb_request_pack_head(&r->pk, op, r->rid, ttl_ms, 1);
    mb_pack_cstr(&r->pk, "args");
    msgpack_pack_map(&r->pk, n_args);
    return &r->pk;
}

static void s_send_frames(void *socket, const void *body, size_t size)
{
    zmq_send(socket, "", 0, ZMQ_SNDMORE);
    zmq_send(socket, MDPC_CLIENT, strlen(MDPC_CLIENT), ZMQ_SNDMORE);
    zmq_send(socket, "bus", 3, ZMQ_SNDMORE);
    cr_assert(zmq_send(socket, body, size, 0) >= 0);
}

/*  Sends the request and frees its buffer; returns its rid. */
static uint64_t s_send(void *socket, req_t *r)
{
    s_send_frames(socket, r->buf.data, r->buf.size);
    msgpack_sbuffer_destroy(&r->buf);
    return r->rid;
}

/*  Receives one reply from "bus" within timeout_ms into *rep (released by
    the caller); false on timeout. */
static bool s_recv(void *socket, int timeout_ms, mb_reply_t *rep)
{
    zmq_pollitem_t item = {socket, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, timeout_ms) <= 0)
        return false;
    zmq_msg_t frames[4];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        cr_assert(zmq_msg_recv(&frame, socket, 0) >= 0);
        more = zmq_msg_more(&frame);
        if (n < 4)
            frames[n++] = frame;
        else
            zmq_msg_close(&frame);
    }
    cr_assert_eq(n, 4, "a bus reply has 4 frames, not %d", n);
    cr_assert_eq(zmq_msg_size(&frames[1]), 6);
    cr_assert(zmq_msg_size(&frames[2]) == 3 && memcmp(zmq_msg_data(&frames[2]), "bus", 3) == 0,
              "reply not from service bus");
    const char *why = NULL;
    int rc = mb_reply_decode(rep, zmq_msg_data(&frames[3]), zmq_msg_size(&frames[3]), &why);
    cr_assert_eq(rc, 0, "undecodable reply: %s", why);
    for (int i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
    return true;
}

/*  Sends and waits for the reply, which must carry the request's rid. */
static void s_call(void *socket, req_t *r, mb_reply_t *rep)
{
    uint64_t rid = s_send(socket, r);
    cr_assert(s_recv(socket, 10000, rep), "no reply to rid %llu", (unsigned long long)rid);
    cr_assert_eq(rep->rid, rid);
}

static uint64_t s_uint(const msgpack_object *o, const char *key)
{
    const msgpack_object *v = mb_map_get(o, key);
    cr_assert(v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER, "no uint '%s'", key);
    return v->via.u64;
}

static bool s_code_is(const mb_reply_t *rep, const char *code)
{
    return rep->code && rep->code_len == strlen(code) &&
           memcmp(rep->code, code, rep->code_len) == 0;
}

/*  Expects an error reply with `status`, `code` and (when not NULL)
    `field`. */
static void s_expect_error(const mb_reply_t *rep, int status, const char *code, const char *field)
{
    cr_assert_eq(rep->status, status, "status %d, expected %d (%.*s: %.*s)", rep->status, status,
                 (int)rep->code_len, rep->code ? rep->code : "", (int)rep->message_len,
                 rep->message ? rep->message : "");
    cr_assert(s_code_is(rep, code), "code '%.*s', expected '%s'", (int)rep->code_len,
              rep->code ? rep->code : "", code);
    if (field)
        cr_assert(rep->field && rep->field_len == strlen(field) &&
                      memcmp(rep->field, field, rep->field_len) == 0,
                  "field '%.*s', expected '%s'", (int)rep->field_len, rep->field ? rep->field : "",
                  field);
}

/*  Publishes one event whose data is the string `data`; returns its seq. */
static uint64_t s_publish(void *socket, const char *topic, const char *key, const char *data)
{
    req_t r;
    msgpack_packer *pk = s_req(&r, "bus.publish", 0, 3);
    mb_pack_cstr(pk, "topic");
    mb_pack_cstr(pk, topic);
    mb_pack_cstr(pk, "key");
    mb_pack_cstr(pk, key);
    mb_pack_cstr(pk, "data");
    mb_pack_cstr(pk, data);
    mb_reply_t rep;
    s_call(socket, &r, &rep);
    cr_assert_eq(rep.status, 201, "publish answered %d %.*s", rep.status, (int)rep.code_len,
                 rep.code ? rep.code : "");
    uint64_t seq = s_uint(rep.body, "seq");
    mb_reply_release(&rep);
    return seq;
}

/*  Sends a fetch of `topics` (NULL-terminated) or, when topics is NULL,
    of `prefix`; max and wait are left out when 0. Returns the rid. */
static uint64_t s_fetch_send(void *socket, const char *const *topics, const char *prefix,
                             uint64_t from, unsigned max, unsigned wait, uint32_t ttl)
{
    req_t r;
    msgpack_packer *pk = s_req(&r, "bus.fetch", ttl, 2 + (max > 0) + (wait > 0));
    if (topics) {
        size_t n = 0;
        while (topics[n])
            n++;
        mb_pack_cstr(pk, "topics");
        msgpack_pack_array(pk, n);
        for (size_t i = 0; i < n; i++)
            mb_pack_cstr(pk, topics[i]);
    } else {
        mb_pack_cstr(pk, "prefix");
        mb_pack_cstr(pk, prefix);
    }
    mb_pack_cstr(pk, "from");
    msgpack_pack_uint64(pk, from);
    if (max) {
        mb_pack_cstr(pk, "max");
        msgpack_pack_unsigned_int(pk, max);
    }
    if (wait) {
        mb_pack_cstr(pk, "wait");
        msgpack_pack_unsigned_int(pk, wait);
    }
    return s_send(socket, &r);
}

/*  A fetch's answer, checked for shape. */
typedef struct {
    mb_reply_t rep;
    const msgpack_object *events; /* an array */
    size_t count;
    uint64_t next, head;
} fetched_t;

static void s_fetched_read(fetched_t *f)
{
    cr_assert_eq(f->rep.status, 200, "fetch answered %d %.*s: %.*s", f->rep.status,
                 (int)f->rep.code_len, f->rep.code ? f->rep.code : "", (int)f->rep.message_len,
                 f->rep.message ? f->rep.message : "");
    f->events = mb_map_get(f->rep.body, "events");
    cr_assert(f->events && f->events->type == MSGPACK_OBJECT_ARRAY);
    f->count = f->events->via.array.size;
    f->next = s_uint(f->rep.body, "next");
    f->head = s_uint(f->rep.body, "head");
}

static void s_fetch(void *socket, const char *const *topics, const char *prefix, uint64_t from,
                    unsigned max, fetched_t *f)
{
    uint64_t rid = s_fetch_send(socket, topics, prefix, from, max, 0, 0);
    cr_assert(s_recv(socket, 10000, &f->rep), "no fetch reply");
    cr_assert_eq(f->rep.rid, rid);
    s_fetched_read(f);
}

static const msgpack_object *s_event(const fetched_t *f, size_t i)
{
    cr_assert_lt(i, f->count);
    return &f->events->via.array.ptr[i];
}

static uint64_t s_event_seq(const fetched_t *f, size_t i)
{
    return s_uint(s_event(f, i), "seq");
}

static bool s_str_is(const msgpack_object *o, const char *s)
{
    return mb_obj_str_eq(o, s);
}

/*  ---------------------------------------------------------------------
    Tests */

Test(bus, publishes_with_seqs_and_fetches_by_topics_and_prefix)
{
    s_start_broker(NULL);
    void *client = s_socket();
    uint64_t before = s_wall_ms();
    cr_assert_eq(s_publish(client, "catalog.track", "t1", "one"), 1);
    cr_assert_eq(s_publish(client, "catalog.album", "a1", "two"), 2);
    cr_assert_eq(s_publish(client, "stats.play", "p1", "three"), 3);
    uint64_t after = s_wall_ms();

    /* Everything, from the start. */
    fetched_t f;
    s_fetch(client, NULL, "", 0, 0, &f);
    cr_assert_eq(f.count, 3);
    cr_assert_eq(f.next, 4);
    cr_assert_eq(f.head, 3);
    const msgpack_object *e = s_event(&f, 0);
    cr_assert_eq(s_uint(e, "seq"), 1);
    cr_assert(s_str_is(mb_map_get(e, "topic"), "catalog.track"));
    cr_assert(s_str_is(mb_map_get(e, "key"), "t1"));
    cr_assert(s_str_is(mb_map_get(e, "data"), "one"));
    uint64_t time = s_uint(e, "time");
    cr_assert(time >= before - 1000 && time <= after + 1000, "time %llu not now",
              (unsigned long long)time);
    cr_assert_eq(s_event_seq(&f, 2), 3);
    mb_reply_release(&f.rep);

    /* By a list of topics. */
    const char *topics[] = {"catalog.album", "stats.play", NULL};
    s_fetch(client, topics, NULL, 0, 0, &f);
    cr_assert_eq(f.count, 2);
    cr_assert_eq(s_event_seq(&f, 0), 2);
    cr_assert_eq(s_event_seq(&f, 1), 3);
    cr_assert_eq(f.next, 4);
    mb_reply_release(&f.rep);

    /* By prefix. */
    s_fetch(client, NULL, "catalog.", 0, 0, &f);
    cr_assert_eq(f.count, 2);
    cr_assert_eq(s_event_seq(&f, 1), 2);
    cr_assert_eq(f.next, 4, "next moves past the filtered-out event 3");
    mb_reply_release(&f.rep);

    /* From a seq, and at most `max`. */
    s_fetch(client, NULL, "", 3, 0, &f);
    cr_assert_eq(f.count, 1);
    cr_assert_eq(s_event_seq(&f, 0), 3);
    mb_reply_release(&f.rep);
    s_fetch(client, NULL, "", 0, 1, &f);
    cr_assert_eq(f.count, 1);
    cr_assert_eq(f.next, 2);
    mb_reply_release(&f.rep);

    /* Nothing matches: an empty list, and next past what was scanned. */
    s_fetch(client, NULL, "search.", 1, 0, &f);
    cr_assert_eq(f.count, 0);
    cr_assert_eq(f.next, 4);
    cr_assert_eq(f.head, 3);
    mb_reply_release(&f.rep);
    /* Past the head: empty, next unchanged. */
    s_fetch(client, NULL, "", 9, 0, &f);
    cr_assert_eq(f.count, 0);
    cr_assert_eq(f.next, 9);
    mb_reply_release(&f.rep);

    zmq_close(client);
    s_finish();
}

Test(bus, an_empty_log_has_head_0)
{
    s_start_broker(NULL);
    void *client = s_socket();
    fetched_t f;
    s_fetch(client, NULL, "", 0, 0, &f);
    cr_assert_eq(f.count, 0);
    cr_assert_eq(f.head, 0);
    cr_assert_eq(f.next, 1);
    mb_reply_release(&f.rep);
    zmq_close(client);
    s_finish();
}

/*  Publishes `n` events in one batch (topic "batch.t", keys k<i>; event
    `bad`, when < n, has an invalid topic). Returns the reply. */
static void s_publish_batch(void *socket, size_t n, size_t bad, mb_reply_t *rep)
{
    req_t r;
    msgpack_packer *pk = s_req(&r, "bus.publish", 0, 1);
    mb_pack_cstr(pk, "events");
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) {
        char key[32];
        snprintf(key, sizeof key, "k%zu", i);
        msgpack_pack_map(pk, 3);
        mb_pack_cstr(pk, "topic");
        mb_pack_cstr(pk, i == bad ? "Batch.T" : "batch.t");
        mb_pack_cstr(pk, "key");
        mb_pack_cstr(pk, key);
        mb_pack_cstr(pk, "data");
        msgpack_pack_map(pk, 1);
        mb_pack_cstr(pk, "i");
        msgpack_pack_uint64(pk, i);
    }
    s_call(socket, &r, rep);
}

Test(bus, publishes_a_batch_all_or_nothing)
{
    s_start_broker(NULL);
    void *client = s_socket();
    cr_assert_eq(s_publish(client, "one.t", "x", "first"), 1);
    mb_reply_t rep;
    s_publish_batch(client, 100, SIZE_MAX, &rep);
    cr_assert_eq(rep.status, 201);
    cr_assert_eq(s_uint(rep.body, "first"), 2);
    cr_assert_eq(s_uint(rep.body, "count"), 100);
    mb_reply_release(&rep);

    /* One bad event refuses the whole batch, and takes no seq. */
    s_publish_batch(client, 10, 3, &rep);
    s_expect_error(&rep, 400, "bad_request", "events[3].topic");
    mb_reply_release(&rep);
    cr_assert_eq(s_publish(client, "one.t", "y", "after"), 102);

    fetched_t f;
    s_fetch(client, NULL, "batch.", 0, 1000, &f);
    cr_assert_eq(f.count, 100);
    for (size_t i = 0; i < 100; i++) {
        const msgpack_object *e = s_event(&f, i);
        cr_assert_eq(s_uint(e, "seq"), 2 + i);
        char key[32];
        snprintf(key, sizeof key, "k%zu", i);
        cr_assert(s_str_is(mb_map_get(e, "key"), key));
        cr_assert_eq(s_uint(mb_map_get(e, "data"), "i"), i);
    }
    cr_assert_eq(f.head, 102);
    mb_reply_release(&f.rep);

    /* The largest batch the contract allows. */
    s_publish_batch(client, 10000, SIZE_MAX, &rep);
    cr_assert_eq(rep.status, 201);
    cr_assert_eq(s_uint(rep.body, "first"), 103);
    cr_assert_eq(s_uint(rep.body, "count"), 10000);
    mb_reply_release(&rep);

    zmq_close(client);
    s_finish();
}

Test(bus, a_long_poll_is_woken_by_a_matching_publish)
{
    s_start_broker(NULL);
    void *fetcher = s_socket();
    void *publisher = s_socket();
    s_publish(publisher, "warm.up", "w", "x");

    const char *topics[] = {"wanted.t", NULL};
    int64_t start = s_now_ms();
    uint64_t rid = s_fetch_send(fetcher, topics, NULL, 2, 0, 10000, 0);
    mb_reply_t rep;
    cr_assert_not(s_recv(fetcher, 200, &rep), "answered although nothing matches");
    /* An event it does not want leaves it waiting... */
    s_publish(publisher, "other.t", "o", "x");
    cr_assert_not(s_recv(fetcher, 200, &rep), "woken by an event it does not want");
    /* ...one it wants answers it at once. */
    int64_t published = s_now_ms();
    cr_assert_eq(s_publish(publisher, "wanted.t", "k", "yes"), 3);
    cr_assert(s_recv(fetcher, 2000, &rep), "the long poll was not woken");
    int64_t took = s_now_ms() - published;
    cr_assert_lt(took, 1000, "woken %lld ms after the publish", (long long)took);
    cr_assert_lt(s_now_ms() - start, 5000);
    cr_assert_eq(rep.rid, rid);
    fetched_t f = {.rep = rep};
    s_fetched_read(&f);
    cr_assert_eq(f.count, 1);
    cr_assert_eq(s_event_seq(&f, 0), 3);
    cr_assert_eq(f.next, 4);
    cr_assert_eq(f.head, 3);
    mb_reply_release(&f.rep);

    /* Several parked fetches: each is answered by what it waits for. */
    const char *a[] = {"a.t", NULL}, *b[] = {"b.t", NULL};
    uint64_t rid_a = s_fetch_send(fetcher, a, NULL, 4, 0, 10000, 0);
    uint64_t rid_b = s_fetch_send(publisher, b, NULL, 4, 0, 10000, 0);
    void *third = s_socket();
    s_sleep_ms(100);
    cr_assert_eq(s_publish(third, "b.t", "k", "for b"), 4);
    cr_assert(s_recv(publisher, 2000, &rep));
    cr_assert_eq(rep.rid, rid_b);
    mb_reply_release(&rep);
    cr_assert_not(s_recv(fetcher, 200, &rep), "a was woken by b's event");
    cr_assert_eq(s_publish(third, "a.t", "k", "for a"), 5);
    cr_assert(s_recv(fetcher, 2000, &rep));
    cr_assert_eq(rep.rid, rid_a);
    f = (fetched_t){.rep = rep};
    s_fetched_read(&f);
    cr_assert_eq(f.count, 1);
    cr_assert_eq(s_event_seq(&f, 0), 5);
    mb_reply_release(&f.rep);

    zmq_close(fetcher);
    zmq_close(publisher);
    zmq_close(third);
    s_finish();
}

Test(bus, a_long_poll_ends_empty_at_its_wait_or_its_ttl)
{
    s_start_broker(NULL);
    void *client = s_socket();
    s_publish(client, "some.t", "k", "x");

    int64_t start = s_now_ms();
    uint64_t rid = s_fetch_send(client, NULL, "nothing.", 1, 0, 300, 0);
    mb_reply_t rep;
    cr_assert(s_recv(client, 3000, &rep));
    int64_t took = s_now_ms() - start;
    cr_assert(took >= 280 && took < 1500, "a 300 ms wait took %lld ms", (long long)took);
    cr_assert_eq(rep.rid, rid);
    fetched_t f = {.rep = rep};
    s_fetched_read(&f);
    cr_assert_eq(f.count, 0);
    cr_assert_eq(f.next, 2, "next moves past what the wait scanned");
    cr_assert_eq(f.head, 1);
    mb_reply_release(&f.rep);

    /* The envelope's ttl bounds the wait: the client gives up then. */
    start = s_now_ms();
    s_fetch_send(client, NULL, "nothing.", 2, 0, 20000, 300);
    cr_assert(s_recv(client, 3000, &rep));
    took = s_now_ms() - start;
    cr_assert(took >= 280 && took < 1500, "a 300 ms ttl took %lld ms", (long long)took);
    cr_assert_eq(rep.status, 200);
    mb_reply_release(&rep);

    /* wait 0 answers at once. */
    start = s_now_ms();
    fetched_t g;
    s_fetch(client, NULL, "nothing.", 2, 0, &g);
    cr_assert_eq(g.count, 0);
    cr_assert_lt(s_now_ms() - start, 500);
    mb_reply_release(&g.rep);

    zmq_close(client);
    s_finish();
}

/*  Fetches from `from` until the broker answers 410 or `timeout_ms`
    passes; checks the error and returns the oldest retained seq it gives
    (in the error map's "oldest", and in the message). */
static uint64_t s_wait_for_gap(void *client, uint64_t from, int timeout_ms)
{
    int64_t until = s_now_ms() + timeout_ms;
    for (;;) {
        mb_reply_t rep;
        s_fetch_send(client, NULL, "", from, 1, 0, 0);
        cr_assert(s_recv(client, 5000, &rep));
        if (rep.status == 410) {
            s_expect_error(&rep, 410, "retention_gap", "from");
            const msgpack_object *error = mb_map_get(&rep.msg.data, "error");
            uint64_t oldest = s_uint(error, "oldest");
            char text[32];
            snprintf(text, sizeof text, "%llu", (unsigned long long)oldest);
            cr_assert(rep.message && memmem(rep.message, rep.message_len, text, strlen(text)),
                      "the message does not give the oldest seq %s", text);
            mb_reply_release(&rep);
            return oldest;
        }
        cr_assert_eq(rep.status, 200);
        mb_reply_release(&rep);
        cr_assert(s_now_ms() < until, "no retention gap after %d ms", timeout_ms);
        s_sleep_ms(100);
    }
}

Test(bus, a_fetch_behind_retention_gets_410_retention_gap)
{
    /* A small size limit: 8 KiB events overflow it quickly. */
    s_start_broker("--retention-bytes", "100000", NULL);
    void *client = s_socket();
    char big[8192];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    for (int i = 0; i < 60; i++)
        cr_assert_eq(s_publish(client, "big.t", "k", big), (uint64_t)i + 1);
    uint64_t oldest = s_wait_for_gap(client, 1, 5000);
    cr_assert(oldest > 1 && oldest <= 60, "oldest retained %llu", (unsigned long long)oldest);

    /* From the oldest retained, or from 0, the rest is there. */
    fetched_t f;
    s_fetch(client, NULL, "", 0, 1000, &f);
    cr_assert_gt(f.count, 0);
    cr_assert_geq(s_event_seq(&f, 0), oldest);
    cr_assert_eq(s_event_seq(&f, f.count - 1), 60);
    cr_assert_eq(f.head, 60);
    mb_reply_release(&f.rep);

    zmq_close(client);
    s_finish();
}

Test(bus, seqs_go_on_after_retention_deleted_everything)
{
    s_start_broker("--retention-age", "1", NULL);
    void *client = s_socket();
    cr_assert_eq(s_publish(client, "old.t", "k", "a"), 1);
    cr_assert_eq(s_publish(client, "old.t", "k", "b"), 2);
    /* Gone a second later (retention is looked at every half second). */
    uint64_t oldest = s_wait_for_gap(client, 1, 5000);
    cr_assert_eq(oldest, 3, "oldest retained %llu of an empty log", (unsigned long long)oldest);
    fetched_t f;
    s_fetch(client, NULL, "", 0, 0, &f);
    cr_assert_eq(f.count, 0);
    cr_assert_eq(f.head, 2, "head is the last seq given, even with nothing retained");
    cr_assert_eq(f.next, 3);
    mb_reply_release(&f.rep);
    cr_assert_eq(s_publish(client, "old.t", "k", "c"), 3, "a seq was reused");

    zmq_close(client);
    s_finish();
}

Test(bus, events_survive_kill_9_and_seqs_continue)
{
    s_start_broker(NULL);
    void *client = s_socket();
    for (int i = 1; i <= 5; i++)
        cr_assert_eq(s_publish(client, "durable.t", "k", "before"), (uint64_t)i);
    mb_reply_t rep;
    s_publish_batch(client, 20, SIZE_MAX, &rep);
    cr_assert_eq(rep.status, 201);
    mb_reply_release(&rep);
    zmq_close(client);

    s_kill_broker();
    s_launch(); /* same folder, same flags, a new port */
    client = s_socket();
    fetched_t f;
    s_fetch(client, NULL, "", 0, 0, &f);
    cr_assert_eq(f.count, 25);
    cr_assert_eq(f.head, 25);
    for (size_t i = 0; i < 25; i++)
        cr_assert_eq(s_event_seq(&f, i), i + 1);
    mb_reply_release(&f.rep);
    cr_assert_eq(s_publish(client, "durable.t", "k", "after"), 26);

    zmq_close(client);
    s_finish();
}

Test(bus, a_crash_at_any_moment_keeps_every_acknowledged_event_once)
{
    enum { WINDOW = 32, MAX_SEQ = 200000 };
    s_start_broker(NULL);
    void *client = s_socket();
    /* Publish as fast as the broker takes them, WINDOW in flight, each
       with a unique key; kill -9 the broker in the middle of it. */
    static uint64_t acked_key_of[MAX_SEQ]; /* seq -> key + 1 */
    memset(acked_key_of, 0, sizeof acked_key_of);
    uint64_t key_of_rid[4096] = {0};
    uint64_t first_rid = s_next_rid, sent = 0, acked = 0;
    int in_flight = 0;
    int64_t kill_at = s_now_ms() + 400;
    bool killed = false;
    while (!killed || in_flight > 0) {
        while (!killed && in_flight < WINDOW) {
            req_t r;
            msgpack_packer *pk = s_req(&r, "bus.publish", 0, 3);
            char key[32];
            snprintf(key, sizeof key, "%llu", (unsigned long long)sent);
            mb_pack_cstr(pk, "topic");
            mb_pack_cstr(pk, "crash.t");
            mb_pack_cstr(pk, "key");
            mb_pack_cstr(pk, key);
            mb_pack_cstr(pk, "data");
            msgpack_pack_uint64(pk, sent);
            key_of_rid[(r.rid - first_rid) % 4096] = sent;
            s_send(client, &r);
            sent++;
            in_flight++;
        }
        if (!killed && s_now_ms() >= kill_at) {
            s_kill_broker();
            killed = true;
        }
        mb_reply_t rep;
        if (!s_recv(client, killed ? 300 : 2000, &rep)) {
            cr_assert(killed, "the broker stopped answering before it was killed");
            break; /* the rest died with the broker: never acknowledged */
        }
        cr_assert_eq(rep.status, 201);
        uint64_t seq = s_uint(rep.body, "seq");
        cr_assert(seq > 0 && seq < MAX_SEQ);
        cr_assert_eq(acked_key_of[seq], 0, "seq %llu acknowledged twice", (unsigned long long)seq);
        acked_key_of[seq] = key_of_rid[(rep.rid - first_rid) % 4096] + 1;
        acked++;
        in_flight--;
        mb_reply_release(&rep);
    }
    zmq_close(client);
    cr_assert_gt(acked, 100, "only %llu publishes acknowledged before the kill",
                 (unsigned long long)acked);

    s_launch();
    client = s_socket();
    static bool seen_key[MAX_SEQ];
    memset(seen_key, 0, sizeof seen_key);
    uint64_t from = 1, found_acked = 0, head = 0;
    for (;;) {
        fetched_t f;
        s_fetch(client, NULL, "", from, 10000, &f);
        head = f.head;
        for (size_t i = 0; i < f.count; i++) {
            const msgpack_object *e = s_event(&f, i);
            uint64_t seq = s_uint(e, "seq");
            cr_assert_eq(seq, from + i, "a hole or a repeat at seq %llu", (unsigned long long)seq);
            uint64_t key = s_uint(e, "data");
            cr_assert_lt(key, (uint64_t)MAX_SEQ);
            cr_assert_not(seen_key[key], "event %llu is in the log twice", (unsigned long long)key);
            seen_key[key] = true;
            if (acked_key_of[seq]) {
                cr_assert_eq(acked_key_of[seq] - 1, key, "seq %llu holds another event",
                             (unsigned long long)seq);
                found_acked++;
            }
        }
        from = f.next;
        size_t count = f.count;
        mb_reply_release(&f.rep);
        if (count == 0)
            break;
    }
    cr_assert_eq(found_acked, acked, "%llu acknowledged events, %llu found after the crash",
                 (unsigned long long)acked, (unsigned long long)found_acked);
    cr_assert_geq(head, acked);
    /* Seqs go on after the last one on disk. */
    cr_assert_eq(s_publish(client, "crash.t", "after", "x"), head + 1);

    zmq_close(client);
    s_finish();
}

/*  Sends a publish of one event {topic, key, data} where any may be
    replaced by a raw packing callback; expects an error. */
static void s_expect_refused(void *client, req_t *r, int status, const char *code,
                             const char *field)
{
    mb_reply_t rep;
    s_call(client, r, &rep);
    s_expect_error(&rep, status, code, field);
    mb_reply_release(&rep);
}

Test(bus, refuses_bad_requests_and_keeps_serving)
{
    s_start_broker(NULL);
    void *client = s_socket();
    req_t r;
    msgpack_packer *pk;

    /* Unknown op. */
    s_req(&r, "bus.nope", 0, 0);
    s_expect_refused(client, &r, 404, "unknown_op", NULL);

    /* Publish: a topic of the wrong type, charset or length. */
    pk = s_req(&r, "bus.publish", 0, 2);
    mb_pack_cstr(pk, "topic");
    msgpack_pack_int(pk, 7);
    mb_pack_cstr(pk, "data");
    msgpack_pack_nil(pk);
    s_expect_refused(client, &r, 400, "bad_request", "topic");
    pk = s_req(&r, "bus.publish", 0, 2);
    mb_pack_cstr(pk, "topic");
    mb_pack_cstr(pk, "Upper.Case");
    mb_pack_cstr(pk, "data");
    msgpack_pack_nil(pk);
    s_expect_refused(client, &r, 400, "bad_request", "topic");
    char long_topic[130];
    memset(long_topic, 'a', 129);
    long_topic[129] = '\0';
    pk = s_req(&r, "bus.publish", 0, 2);
    mb_pack_cstr(pk, "topic");
    mb_pack_cstr(pk, long_topic);
    mb_pack_cstr(pk, "data");
    msgpack_pack_nil(pk);
    s_expect_refused(client, &r, 400, "bad_request", "topic");
    /* No topic, no data, a key too long or not a string. */
    pk = s_req(&r, "bus.publish", 0, 1);
    mb_pack_cstr(pk, "data");
    msgpack_pack_nil(pk);
    s_expect_refused(client, &r, 400, "bad_request", "topic");
    pk = s_req(&r, "bus.publish", 0, 1);
    mb_pack_cstr(pk, "topic");
    mb_pack_cstr(pk, "ok.t");
    s_expect_refused(client, &r, 400, "bad_request", "data");
    char long_key[258];
    memset(long_key, 'k', 257);
    long_key[257] = '\0';
    pk = s_req(&r, "bus.publish", 0, 3);
    mb_pack_cstr(pk, "topic");
    mb_pack_cstr(pk, "ok.t");
    mb_pack_cstr(pk, "key");
    mb_pack_cstr(pk, long_key);
    mb_pack_cstr(pk, "data");
    msgpack_pack_nil(pk);
    s_expect_refused(client, &r, 400, "bad_request", "key");
    pk = s_req(&r, "bus.publish", 0, 3);
    mb_pack_cstr(pk, "topic");
    mb_pack_cstr(pk, "ok.t");
    mb_pack_cstr(pk, "key");
    msgpack_pack_array(pk, 0);
    mb_pack_cstr(pk, "data");
    msgpack_pack_nil(pk);
    s_expect_refused(client, &r, 400, "bad_request", "key");
    /* Data over 1 MiB, or nested deeper than consumers could decode. */
    size_t big_len = (1 << 20) + 1;
    char *big = malloc(big_len);
    memset(big, 'd', big_len);
    pk = s_req(&r, "bus.publish", 0, 2);
    mb_pack_cstr(pk, "topic");
    mb_pack_cstr(pk, "ok.t");
    mb_pack_cstr(pk, "data");
    msgpack_pack_bin(pk, big_len);
    msgpack_pack_bin_body(pk, big, big_len);
    free(big);
    s_expect_refused(client, &r, 413, "too_large", "data");
    pk = s_req(&r, "bus.publish", 0, 2);
    mb_pack_cstr(pk, "topic");
    mb_pack_cstr(pk, "ok.t");
    mb_pack_cstr(pk, "data");
    for (int i = 0; i < 26; i++)
        msgpack_pack_array(pk, 1);
    msgpack_pack_nil(pk);
    s_expect_refused(client, &r, 400, "bad_request", "data");
    /* Batches: not a list, empty, too long, an event not a map. */
    pk = s_req(&r, "bus.publish", 0, 1);
    mb_pack_cstr(pk, "events");
    mb_pack_cstr(pk, "no");
    s_expect_refused(client, &r, 400, "bad_request", "events");
    pk = s_req(&r, "bus.publish", 0, 1);
    mb_pack_cstr(pk, "events");
    msgpack_pack_array(pk, 0);
    s_expect_refused(client, &r, 400, "bad_request", "events");
    pk = s_req(&r, "bus.publish", 0, 1);
    mb_pack_cstr(pk, "events");
    msgpack_pack_array(pk, 10001);
    for (int i = 0; i < 10001; i++)
        msgpack_pack_nil(pk);
    s_expect_refused(client, &r, 400, "bad_request", "events");
    pk = s_req(&r, "bus.publish", 0, 1);
    mb_pack_cstr(pk, "events");
    msgpack_pack_array(pk, 1);
    msgpack_pack_int(pk, 1);
    s_expect_refused(client, &r, 400, "bad_request", "events[0]");

    /* Fetch: topics and prefix both or neither, bad lists, bad numbers. */
    pk = s_req(&r, "bus.fetch", 0, 2);
    mb_pack_cstr(pk, "topics");
    msgpack_pack_array(pk, 1);
    mb_pack_cstr(pk, "a.t");
    mb_pack_cstr(pk, "prefix");
    mb_pack_cstr(pk, "a.");
    s_expect_refused(client, &r, 400, "bad_request", "topics");
    pk = s_req(&r, "bus.fetch", 0, 1);
    mb_pack_cstr(pk, "from");
    msgpack_pack_uint64(pk, 1);
    s_expect_refused(client, &r, 400, "bad_request", "topics");
    pk = s_req(&r, "bus.fetch", 0, 1);
    mb_pack_cstr(pk, "topics");
    msgpack_pack_array(pk, 0);
    s_expect_refused(client, &r, 400, "bad_request", "topics");
    pk = s_req(&r, "bus.fetch", 0, 1);
    mb_pack_cstr(pk, "topics");
    msgpack_pack_array(pk, 65);
    for (int i = 0; i < 65; i++)
        mb_pack_cstr(pk, "a.t");
    s_expect_refused(client, &r, 400, "bad_request", "topics");
    pk = s_req(&r, "bus.fetch", 0, 1);
    mb_pack_cstr(pk, "topics");
    msgpack_pack_array(pk, 2);
    mb_pack_cstr(pk, "a.t");
    mb_pack_cstr(pk, "B");
    s_expect_refused(client, &r, 400, "bad_request", "topics[1]");
    pk = s_req(&r, "bus.fetch", 0, 1);
    mb_pack_cstr(pk, "prefix");
    msgpack_pack_true(pk);
    s_expect_refused(client, &r, 400, "bad_request", "prefix");
    const char *numbers[] = {"from", "max", "max", "wait"};
    int64_t values[] = {-1, 0, 10001, 30001};
    for (int i = 0; i < 4; i++) {
        pk = s_req(&r, "bus.fetch", 0, 2);
        mb_pack_cstr(pk, "prefix");
        mb_pack_cstr(pk, "");
        mb_pack_cstr(pk, numbers[i]);
        msgpack_pack_int64(pk, values[i]);
        s_expect_refused(client, &r, 400, "bad_request", numbers[i]);
    }
    pk = s_req(&r, "bus.fetch", 0, 2);
    mb_pack_cstr(pk, "prefix");
    mb_pack_cstr(pk, "");
    mb_pack_cstr(pk, "from");
    mb_pack_cstr(pk, "one");
    s_expect_refused(client, &r, 400, "bad_request", "from");

    /* Bodies that are no envelope, or more than one frame. */
    mb_reply_t rep;
    s_send_frames(client, "not msgpack", 11);
    cr_assert(s_recv(client, 2000, &rep));
    s_expect_error(&rep, 400, "bad_request", NULL);
    mb_reply_release(&rep);
    zmq_send(client, "", 0, ZMQ_SNDMORE);
    zmq_send(client, MDPC_CLIENT, strlen(MDPC_CLIENT), ZMQ_SNDMORE);
    zmq_send(client, "bus", 3, ZMQ_SNDMORE);
    zmq_send(client, "a", 1, ZMQ_SNDMORE);
    zmq_send(client, "b", 1, 0);
    cr_assert(s_recv(client, 2000, &rep));
    s_expect_error(&rep, 400, "bad_request", NULL);
    mb_reply_release(&rep);
    zmq_send(client, "", 0, ZMQ_SNDMORE);
    zmq_send(client, MDPC_CLIENT, strlen(MDPC_CLIENT), ZMQ_SNDMORE);
    zmq_send(client, "bus", 3, 0);
    cr_assert(s_recv(client, 2000, &rep));
    s_expect_error(&rep, 400, "bad_request", NULL);
    mb_reply_release(&rep);

    /* Nothing above took a seq; the bus still works. */
    cr_assert_eq(s_publish(client, "ok.t", "", "fine"), 1);
    /* An empty key and nil data are fine. */
    pk = s_req(&r, "bus.publish", 0, 2);
    mb_pack_cstr(pk, "topic");
    mb_pack_cstr(pk, "ok.t");
    mb_pack_cstr(pk, "data");
    msgpack_pack_nil(pk);
    s_call(client, &r, &rep);
    cr_assert_eq(rep.status, 201);
    cr_assert_eq(s_uint(rep.body, "seq"), 2);
    mb_reply_release(&rep);

    zmq_close(client);
    s_finish();
}

Test(bus, is_the_brokers_own_service)
{
    s_start_broker(NULL);
    void *client = s_socket();
    /* MMI says it is there... */
    zmq_send(client, "", 0, ZMQ_SNDMORE);
    zmq_send(client, MDPC_CLIENT, strlen(MDPC_CLIENT), ZMQ_SNDMORE);
    zmq_send(client, MMI_SERVICE, strlen(MMI_SERVICE), ZMQ_SNDMORE);
    zmq_send(client, "bus", 3, 0);
    zmq_pollitem_t item = {client, 0, ZMQ_POLLIN, 0};
    cr_assert_eq(zmq_poll(&item, 1, 2000), 1);
    char frames[4][16];
    int sizes[4];
    for (int i = 0; i < 4; i++) {
        sizes[i] = zmq_recv(client, frames[i], sizeof frames[i], 0);
        cr_assert_geq(sizes[i], 0);
    }
    cr_assert(sizes[3] == 3 && memcmp(frames[3], "200", 3) == 0);
    /* ...and no worker may claim it. */
    void *worker = s_socket();
    unsigned char ready = MDPW_READY;
    zmq_send(worker, "", 0, ZMQ_SNDMORE);
    zmq_send(worker, MDPW_WORKER, strlen(MDPW_WORKER), ZMQ_SNDMORE);
    zmq_send(worker, &ready, 1, ZMQ_SNDMORE);
    zmq_send(worker, "bus", 3, 0);
    item.socket = worker;
    cr_assert_eq(zmq_poll(&item, 1, 2000), 1);
    unsigned char command = 0;
    for (int i = 0; i < 3; i++) {
        char frame[16];
        int size = zmq_recv(worker, frame, sizeof frame, 0);
        if (i == 2 && size == 1)
            command = (unsigned char)frame[0];
    }
    cr_assert_eq(command, MDPW_DISCONNECT);
    cr_assert_eq(s_publish(client, "still.t", "k", "x"), 1);

    zmq_close(client);
    zmq_close(worker);
    s_finish();
}

Test(bus, sigterm_acknowledges_publishes_in_hand_and_answers_parked_fetches)
{
    s_start_broker(NULL);
    void *client = s_socket();
    void *fetcher = s_socket();
    s_publish(client, "first.t", "k", "x");
    uint64_t fetch_rid = s_fetch_send(fetcher, NULL, "never.", 2, 0, 20000, 0);
    /* A big batch, so SIGTERM likely finds it being written. */
    req_t r;
    msgpack_packer *pk = s_req(&r, "bus.publish", 0, 1);
    mb_pack_cstr(pk, "events");
    msgpack_pack_array(pk, 5000);
    char data[2000];
    memset(data, 'z', sizeof data);
    for (int i = 0; i < 5000; i++) {
        msgpack_pack_map(pk, 3);
        mb_pack_cstr(pk, "topic");
        mb_pack_cstr(pk, "bulk.t");
        mb_pack_cstr(pk, "key");
        mb_pack_cstr(pk, "k");
        mb_pack_cstr(pk, "data");
        msgpack_pack_bin(pk, sizeof data);
        msgpack_pack_bin_body(pk, data, sizeof data);
    }
    uint64_t rid = s_send(client, &r);
    s_sleep_ms(100); /* let the broker take it in */
    cr_assert_eq(s_stop_broker(), 0);

    mb_reply_t rep;
    cr_assert(s_recv(client, 5000, &rep), "the publish in hand was not answered");
    cr_assert_eq(rep.rid, rid);
    cr_assert_eq(rep.status, 201);
    cr_assert_eq(s_uint(rep.body, "first"), 2);
    mb_reply_release(&rep);
    cr_assert(s_recv(fetcher, 5000, &rep), "the parked fetch was not answered");
    cr_assert_eq(rep.rid, fetch_rid);
    cr_assert_eq(rep.status, 200);
    mb_reply_release(&rep);
    zmq_close(client);
    zmq_close(fetcher);

    /* What was acknowledged is there after a restart. */
    s_launch();
    client = s_socket();
    fetched_t f;
    s_fetch(client, NULL, "bulk.", 0, 10000, &f);
    cr_assert_eq(f.count, 5000);
    cr_assert_eq(f.head, 5001);
    mb_reply_release(&f.rep);
    zmq_close(client);
    s_finish();
}

Test(bus, a_second_broker_cannot_share_the_log)
{
    s_start_broker(NULL);
    const char *bin_dir = getenv("MUSICBUS_BIN_DIR");
    char cmd[PATH_MAX * 2 + 128];
    snprintf(cmd, sizeof cmd, "%s/musicbus-broker --bind tcp://127.0.0.1:* --data %s 2>/dev/null",
             bin_dir, s_dir);
    int status = system(cmd);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "a second broker started on the log");
    s_finish();
}
