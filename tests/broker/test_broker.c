/*  Tests of musicbus-broker: the real executable, started on a port the OS
    picks, driven by a raw DEALER (or REQ) client and raw DEALER workers
    that speak RFC 7 frames by hand — independent of libmusicbus's own
    client and worker code, so they check the wire, not our assumptions.

    Every test starts its broker and stops it with SIGTERM, checking that
    it exits 0; the broker also dies with the test process (PDEATHSIG). */

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
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

#include "mdp.h"

/*  ---------------------------------------------------------------------
    The broker process */

static pid_t s_pid = 0;
static char s_dir[PATH_MAX];
static char s_endpoint[256];
static void *s_ctx = NULL;

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void s_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/*  Starts the broker with `--bind tcp://127.0.0.1:* --ready-file ...`,
    its event log in the test's folder, and the NULL-terminated extra
    flags, and waits for its endpoint. */
static void s_start_broker(const char *first, ...)
{
    const char *bin_dir = getenv("MUSICBUS_BIN_DIR");
    cr_assert(bin_dir, "MUSICBUS_BIN_DIR is not set (run through ctest)");
    char bin[PATH_MAX];
    snprintf(bin, sizeof bin, "%s/musicbus-broker", bin_dir);
    snprintf(s_dir, sizeof s_dir, "/tmp/mb-broker-test-XXXXXX");
    cr_assert(mkdtemp(s_dir), "mkdtemp: %s", strerror(errno));
    char ready[PATH_MAX + 16];
    snprintf(ready, sizeof ready, "%s/ready", s_dir);

    const char *argv[32] = {bin,      "--bind", "tcp://127.0.0.1:*", "--ready-file", ready,
                            "--data", s_dir};
    int argc = 7;
    va_list ap;
    va_start(ap, first);
    for (const char *arg = first; arg && argc < 31; arg = va_arg(ap, const char *))
        argv[argc++] = arg;
    va_end(ap);
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
    cr_assert(strncmp(s_endpoint, "tcp://127.0.0.1:", 16) == 0, "ready file holds '%s'",
              s_endpoint);
    s_ctx = zmq_ctx_new();
}

/*  Stops the broker with SIGTERM; returns its exit status (or -1 when it
    had to be killed). */
static int s_stop_broker(void)
{
    if (s_pid <= 0)
        return 0;
    kill(s_pid, SIGTERM);
    int status = 0;
    int64_t until = s_now_ms() + 5000;
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

static int s_remove(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void s_cleanup_dir(void)
{
    if (!s_dir[0])
        return;
    nftw(s_dir, s_remove, 16, FTW_DEPTH | FTW_PHYS);
    s_dir[0] = '\0';
}

/*  Runs after every test, even a failed one: nothing is left behind.
    A failed test leaves its sockets open, and zmq_ctx_term() would wait
    for them forever: shut the context down without waiting instead (each
    test runs in a process of its own, which exits right after). */
static void s_teardown(void)
{
    s_stop_broker();
    s_cleanup_dir();
    if (s_ctx) {
        zmq_ctx_shutdown(s_ctx);
        s_ctx = NULL;
    }
}

/*  Ends a test: the broker must exit 0 on SIGTERM. Sockets must be closed. */
static void s_finish(void)
{
    if (s_ctx) {
        zmq_ctx_term(s_ctx);
        s_ctx = NULL;
    }
    int rc = s_stop_broker();
    cr_assert_eq(rc, 0, "broker exit status %d after SIGTERM", rc);
}

TestSuite(broker, .fini = s_teardown, .timeout = 60);

/*  ---------------------------------------------------------------------
    Frames by hand */

typedef struct {
    size_t n;
    size_t size[16];
    char data[16][2048];
} msg_t;

static void *s_socket(int type)
{
    void *socket = zmq_socket(s_ctx, type);
    cr_assert(socket);
    int zero = 0;
    zmq_setsockopt(socket, ZMQ_LINGER, &zero, sizeof zero);
    cr_assert_eq(zmq_connect(socket, s_endpoint), 0);
    return socket;
}

/*  Sends n frames given as (data, size) pairs. */
static void s_send(void *socket, int n, ...)
{
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        const void *data = va_arg(ap, const void *);
        size_t size = va_arg(ap, size_t);
        cr_assert(zmq_send(socket, data, size, i + 1 < n ? ZMQ_SNDMORE : 0) >= 0, "send: %s",
                  zmq_strerror(errno));
    }
    va_end(ap);
}

#define S(str) (const void *)(str), strlen(str)
#define B(ptr, len) (const void *)(ptr), (size_t)(len)

/*  Receives one message within timeout_ms. Returns false on timeout. */
static bool s_recv(void *socket, int timeout_ms, msg_t *msg)
{
    zmq_pollitem_t item = {socket, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, timeout_ms) <= 0)
        return false;
    msg->n = 0;
    int more = 1;
    while (more) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        cr_assert(zmq_msg_recv(&frame, socket, 0) >= 0);
        cr_assert(msg->n < 16, "too many frames");
        size_t size = zmq_msg_size(&frame);
        cr_assert(size <= sizeof msg->data[0], "frame too big");
        memcpy(msg->data[msg->n], zmq_msg_data(&frame), size);
        msg->size[msg->n++] = size;
        more = zmq_msg_more(&frame);
        zmq_msg_close(&frame);
    }
    return true;
}

static bool s_frame_is(const msg_t *msg, size_t i, const void *data, size_t size)
{
    return i < msg->n && msg->size[i] == size && memcmp(msg->data[i], data, size) == 0;
}

/*  ---------------------------------------------------------------------
    Envelopes, packed and read with msgpack-c directly */

typedef struct {
    char data[512];
    size_t size;
} body_t;

/*  {"op": op, "rid": rid, "ttl": ttl?, "args": {}} */
static body_t s_request(const char *op, uint64_t rid, uint32_t ttl_ms)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, ttl_ms ? 4 : 3);
    msgpack_pack_str_with_body(&pk, "op", 2);
    msgpack_pack_str_with_body(&pk, op, strlen(op));
    msgpack_pack_str_with_body(&pk, "rid", 3);
    msgpack_pack_uint64(&pk, rid);
    if (ttl_ms) {
        msgpack_pack_str_with_body(&pk, "ttl", 3);
        msgpack_pack_uint32(&pk, ttl_ms);
    }
    msgpack_pack_str_with_body(&pk, "args", 4);
    msgpack_pack_map(&pk, 0);
    body_t body;
    cr_assert(sbuf.size <= sizeof body.data);
    memcpy(body.data, sbuf.data, sbuf.size);
    body.size = sbuf.size;
    msgpack_sbuffer_destroy(&sbuf);
    return body;
}

/*  {"rid": rid, "status": 200, "body": text} */
static body_t s_reply(uint64_t rid, const char *text)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "rid", 3);
    msgpack_pack_uint64(&pk, rid);
    msgpack_pack_str_with_body(&pk, "status", 6);
    msgpack_pack_int(&pk, 200);
    msgpack_pack_str_with_body(&pk, "body", 4);
    msgpack_pack_str_with_body(&pk, text, strlen(text));
    body_t body;
    memcpy(body.data, sbuf.data, sbuf.size);
    body.size = sbuf.size;
    msgpack_sbuffer_destroy(&sbuf);
    return body;
}

typedef struct {
    uint64_t rid;
    int status;
    char code[64]; /* error.code, or "" */
} reply_t;

static bool s_key_is(const msgpack_object *key, const char *name)
{
    return key->type == MSGPACK_OBJECT_STR && key->via.str.size == strlen(name) &&
           memcmp(key->via.str.ptr, name, key->via.str.size) == 0;
}

static reply_t s_read_reply(const void *data, size_t size)
{
    reply_t reply = {0};
    msgpack_unpacked unpacked;
    msgpack_unpacked_init(&unpacked);
    cr_assert_eq(msgpack_unpack_next(&unpacked, data, size, NULL), MSGPACK_UNPACK_SUCCESS);
    msgpack_object map = unpacked.data;
    cr_assert_eq(map.type, MSGPACK_OBJECT_MAP, "reply is not a map");
    for (uint32_t i = 0; i < map.via.map.size; i++) {
        const msgpack_object *key = &map.via.map.ptr[i].key;
        const msgpack_object *value = &map.via.map.ptr[i].val;
        if (s_key_is(key, "rid") && value->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            reply.rid = value->via.u64;
        else if (s_key_is(key, "status") && value->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            reply.status = (int)value->via.u64;
        else if (s_key_is(key, "error") && value->type == MSGPACK_OBJECT_MAP) {
            for (uint32_t j = 0; j < value->via.map.size; j++) {
                const msgpack_object *k = &value->via.map.ptr[j].key;
                const msgpack_object *v = &value->via.map.ptr[j].val;
                if (s_key_is(k, "code") && v->type == MSGPACK_OBJECT_STR &&
                    v->via.str.size < sizeof reply.code)
                    memcpy(reply.code, v->via.str.ptr, v->via.str.size);
            }
        }
    }
    msgpack_unpacked_destroy(&unpacked);
    return reply;
}

/*  ---------------------------------------------------------------------
    A raw MDP client (DEALER, empty delimiter by hand) */

static void s_client_send(void *client, const char *service, const void *body, size_t size)
{
    s_send(client, 4, S(""), S(MDPC_CLIENT), S(service), B(body, size));
}

/*  Receives a client reply [""]["MDPC01"][service][body...] and checks
    its head; returns false on timeout. */
static bool s_client_recv(void *client, int timeout_ms, const char *service, msg_t *msg)
{
    if (!s_recv(client, timeout_ms, msg))
        return false;
    cr_assert_geq(msg->n, 4, "client reply has %zu frames", msg->n);
    cr_assert(s_frame_is(msg, 0, S("")));
    cr_assert(s_frame_is(msg, 1, S(MDPC_CLIENT)));
    cr_assert(s_frame_is(msg, 2, S(service)), "reply from service '%.*s', expected '%s'",
              (int)msg->size[2], msg->data[2], service);
    return true;
}

/*  Expects a broker error reply for `rid` with `status` and `code`. */
static void s_client_expect_error(void *client, int timeout_ms, const char *service, uint64_t rid,
                                  int status, const char *code)
{
    msg_t msg;
    cr_assert(s_client_recv(client, timeout_ms, service, &msg), "no reply for rid %llu",
              (unsigned long long)rid);
    cr_assert_eq(msg.n, 4);
    reply_t reply = s_read_reply(msg.data[3], msg.size[3]);
    cr_assert_eq(reply.rid, rid);
    cr_assert_eq(reply.status, status, "status %d, expected %d", reply.status, status);
    cr_assert_str_eq(reply.code, code);
}

/*  Asks mmi.service about `service`; returns the 3-character answer. */
static void s_mmi(void *client, const char *service, char answer[4])
{
    s_client_send(client, MMI_SERVICE, service, strlen(service));
    msg_t msg;
    cr_assert(s_client_recv(client, 2000, MMI_SERVICE, &msg), "no MMI reply");
    cr_assert_eq(msg.n, 4);
    cr_assert_eq(msg.size[3], 3);
    memcpy(answer, msg.data[3], 3);
    answer[3] = '\0';
}

/*  Waits until `service` has a worker, asking MMI. */
static void s_wait_service(void *client, const char *service)
{
    int64_t until = s_now_ms() + 5000;
    char answer[4];
    for (s_mmi(client, service, answer); strcmp(answer, "200") != 0;
         s_mmi(client, service, answer)) {
        cr_assert(s_now_ms() < until, "no worker for %s after 5 s", service);
        s_sleep_ms(10);
    }
}

/*  ---------------------------------------------------------------------
    A raw MDP worker (DEALER) */

typedef struct {
    void *socket;
    int heartbeat_ms; /* 0: sends no heartbeats */
    int64_t heartbeat_at;
} worker_t;

static worker_t s_worker_new(const char *service, int heartbeat_ms)
{
    worker_t worker = {s_socket(ZMQ_DEALER), heartbeat_ms, s_now_ms() + heartbeat_ms};
    unsigned char ready = MDPW_READY;
    s_send(worker.socket, 4, S(""), S(MDPW_WORKER), B(&ready, 1), S(service));
    return worker;
}

static void s_worker_command(worker_t *worker, unsigned char command)
{
    s_send(worker->socket, 3, S(""), S(MDPW_WORKER), B(&command, 1));
}

/*  Waits up to timeout_ms for a worker command other than HEARTBEAT,
    heartbeating meanwhile when the worker does. Returns its command byte,
    or 0 on timeout. */
static unsigned char s_worker_recv(worker_t *worker, int timeout_ms, msg_t *msg)
{
    int64_t until = s_now_ms() + timeout_ms;
    for (;;) {
        int64_t now = s_now_ms();
        if (worker->heartbeat_ms && now >= worker->heartbeat_at) {
            s_worker_command(worker, MDPW_HEARTBEAT);
            worker->heartbeat_at = now + worker->heartbeat_ms;
        }
        if (now >= until)
            return 0;
        int64_t wait = until - now;
        if (worker->heartbeat_ms && worker->heartbeat_at - now < wait)
            wait = worker->heartbeat_at - now;
        if (!s_recv(worker->socket, (int)wait, msg))
            continue;
        cr_assert_geq(msg->n, 3, "worker got %zu frames", msg->n);
        cr_assert(s_frame_is(msg, 0, S("")));
        cr_assert(s_frame_is(msg, 1, S(MDPW_WORKER)));
        cr_assert_eq(msg->size[2], 1);
        unsigned char command = (unsigned char)msg->data[2][0];
        if (command != MDPW_HEARTBEAT)
            return command;
    }
}

/*  Waits for a REQUEST; checks its shape [""]["MDPW01"][2][client][""][body...]. */
static void s_worker_expect_request(worker_t *worker, int timeout_ms, msg_t *msg)
{
    unsigned char command = s_worker_recv(worker, timeout_ms, msg);
    cr_assert_eq(command, MDPW_REQUEST, "worker expected REQUEST, got command %d", command);
    cr_assert_geq(msg->n, 5);
    cr_assert(s_frame_is(msg, 4, S("")));
}

/*  Sends REPLY for the client address in `request` with one body frame. */
static void s_worker_reply(worker_t *worker, const msg_t *request, const void *body, size_t size)
{
    unsigned char command = MDPW_REPLY;
    s_send(worker->socket, 6, S(""), S(MDPW_WORKER), B(&command, 1),
           B(request->data[3], request->size[3]), S(""), B(body, size));
}

/*  ---------------------------------------------------------------------
    Tests */

Test(broker, routes_a_request_to_a_worker_and_the_reply_back)
{
    s_start_broker(NULL);
    void *client = s_socket(ZMQ_DEALER);
    worker_t worker = s_worker_new("echo", 0);
    s_wait_service(client, "echo");

    /* A musicbus envelope goes to the worker untouched... */
    body_t request = s_request("echo.say", 42, 0);
    s_client_send(client, "echo", request.data, request.size);
    msg_t got;
    s_worker_expect_request(&worker, 2000, &got);
    cr_assert_eq(got.n, 6);
    cr_assert(s_frame_is(&got, 5, request.data, request.size));

    /* ...and the worker's reply comes back from service "echo". */
    body_t reply = s_reply(42, "hello");
    s_worker_reply(&worker, &got, reply.data, reply.size);
    msg_t back;
    cr_assert(s_client_recv(client, 2000, "echo", &back));
    cr_assert_eq(back.n, 4);
    cr_assert(s_frame_is(&back, 3, reply.data, reply.size));

    /* Opaque bodies of several frames (foreign MDP clients) route too. */
    s_send(client, 5, S(""), S(MDPC_CLIENT), S("echo"), S("not msgpack"), S("second"));
    s_worker_expect_request(&worker, 2000, &got);
    cr_assert_eq(got.n, 7);
    cr_assert(s_frame_is(&got, 5, S("not msgpack")));
    cr_assert(s_frame_is(&got, 6, S("second")));
    unsigned char command = MDPW_REPLY;
    s_send(worker.socket, 7, S(""), S(MDPW_WORKER), B(&command, 1), B(got.data[3], got.size[3]),
           S(""), S("one"), S("two"));
    cr_assert(s_client_recv(client, 2000, "echo", &back));
    cr_assert_eq(back.n, 5);
    cr_assert(s_frame_is(&back, 3, S("one")));
    cr_assert(s_frame_is(&back, 4, S("two")));

    zmq_close(client);
    zmq_close(worker.socket);
    s_finish();
}

Test(broker, serves_a_req_socket_client)
{
    s_start_broker(NULL);
    void *client = s_socket(ZMQ_REQ);
    worker_t worker = s_worker_new("echo", 0);
    s_sleep_ms(100); /* let READY arrive; a REQ client cannot ask MMI and wait */

    for (uint64_t rid = 1; rid <= 3; rid++) {
        body_t request = s_request("echo.say", rid, 0);
        /* REQ adds the empty delimiter itself. */
        s_send(client, 3, S(MDPC_CLIENT), S("echo"), B(request.data, request.size));
        msg_t got;
        s_worker_expect_request(&worker, 2000, &got);
        body_t reply = s_reply(rid, "hi");
        s_worker_reply(&worker, &got, reply.data, reply.size);
        msg_t back;
        cr_assert(s_recv(client, 2000, &back), "REQ client got no reply");
        cr_assert_eq(back.n, 3);
        cr_assert(s_frame_is(&back, 0, S(MDPC_CLIENT)));
        cr_assert(s_frame_is(&back, 1, S("echo")));
        cr_assert_eq(s_read_reply(back.data[2], back.size[2]).rid, rid);
    }
    zmq_close(client);
    zmq_close(worker.socket);
    s_finish();
}

Test(broker, answers_mmi_service)
{
    s_start_broker(NULL);
    void *client = s_socket(ZMQ_DEALER);
    char answer[4];
    s_mmi(client, "echo", answer);
    cr_assert_str_eq(answer, "404");

    worker_t worker = s_worker_new("echo", 0);
    s_wait_service(client, "echo");
    s_mmi(client, "nosuch", answer);
    cr_assert_str_eq(answer, "404");

    /* Other mmi.* services are not implemented; the reply echoes the name. */
    s_client_send(client, "mmi.frobnicate", "x", 1);
    msg_t msg;
    cr_assert(s_client_recv(client, 2000, "mmi.frobnicate", &msg));
    cr_assert(s_frame_is(&msg, 3, S("501")));

    /* A worker that leaves takes the service with it. */
    s_worker_command(&worker, MDPW_DISCONNECT);
    int64_t until = s_now_ms() + 2000;
    do {
        s_mmi(client, "echo", answer);
        cr_assert(s_now_ms() < until, "echo still has a worker after DISCONNECT");
    } while (strcmp(answer, "404") != 0);

    zmq_close(client);
    zmq_close(worker.socket);
    s_finish();
}

Test(broker, dispatches_to_the_longest_idle_worker)
{
    s_start_broker(NULL);
    void *client = s_socket(ZMQ_DEALER);
    worker_t first = s_worker_new("svc", 0);
    s_wait_service(client, "svc");
    worker_t second = s_worker_new("svc", 0);
    s_sleep_ms(100);

    body_t request = s_request("svc.op", 1, 0);
    s_client_send(client, "svc", request.data, request.size);
    msg_t got;
    s_worker_expect_request(&first, 2000, &got);
    body_t reply = s_reply(1, "a");
    s_worker_reply(&first, &got, reply.data, reply.size);
    msg_t back;
    cr_assert(s_client_recv(client, 2000, "svc", &back));

    /* `first` is idle again, but `second` has waited longer. */
    request = s_request("svc.op", 2, 0);
    s_client_send(client, "svc", request.data, request.size);
    s_worker_expect_request(&second, 2000, &got);
    reply = s_reply(2, "b");
    s_worker_reply(&second, &got, reply.data, reply.size);
    cr_assert(s_client_recv(client, 2000, "svc", &back));
    cr_assert_eq(s_read_reply(back.data[3], back.size[3]).rid, 2);

    zmq_close(client);
    zmq_close(first.socket);
    zmq_close(second.socket);
    s_finish();
}

Test(broker, heartbeats_idle_workers)
{
    s_start_broker("--heartbeat", "100", "--liveness", "3", NULL);
    worker_t worker = s_worker_new("svc", 100);
    int heartbeats = 0;
    int64_t until = s_now_ms() + 1000;
    while (s_now_ms() < until) {
        msg_t msg;
        if (!s_recv(worker.socket, 50, &msg))
            continue;
        cr_assert(s_frame_is(&msg, 1, S(MDPW_WORKER)));
        cr_assert_eq(msg.data[2][0], MDPW_HEARTBEAT);
        heartbeats++;
        s_worker_command(&worker, MDPW_HEARTBEAT);
    }
    cr_assert_geq(heartbeats, 4, "only %d heartbeats in 1 s at 100 ms", heartbeats);
    zmq_close(worker.socket);
    s_finish();
}

Test(broker, redispatches_the_request_of_a_worker_that_stops_heartbeating)
{
    s_start_broker("--heartbeat", "100", "--liveness", "3", NULL);
    void *client = s_socket(ZMQ_DEALER);
    worker_t silent = s_worker_new("svc", 100);
    s_wait_service(client, "svc");

    body_t request = s_request("svc.op", 7, 5000);
    s_client_send(client, "svc", request.data, request.size);
    msg_t held;
    s_worker_expect_request(&silent, 2000, &held);
    /* `silent` now goes quiet: no heartbeats, no reply. */

    worker_t other = s_worker_new("svc", 100);
    int64_t start = s_now_ms();
    msg_t got;
    s_worker_expect_request(&other, 3000, &got);
    int64_t took = s_now_ms() - start;
    cr_assert(s_frame_is(&got, 5, request.data, request.size), "re-dispatched body differs");
    cr_assert(s_frame_is(&got, 3, held.data[3], held.size[3]), "client address differs");
    cr_assert_geq(took, 150, "re-dispatched after %lld ms: before the worker expired",
                  (long long)took);

    body_t reply = s_reply(7, "from other");
    s_worker_reply(&other, &got, reply.data, reply.size);
    msg_t back;
    cr_assert(s_client_recv(client, 2000, "svc", &back));
    cr_assert(s_frame_is(&back, 3, reply.data, reply.size));

    /* The expired worker's late reply is dropped and it is told to go. */
    body_t late = s_reply(7, "from silent");
    s_worker_reply(&silent, &held, late.data, late.size);
    msg_t msg;
    cr_assert_eq(s_worker_recv(&silent, 2000, &msg), MDPW_DISCONNECT);
    cr_assert_not(s_recv(client, 500, &msg), "the client got a second reply");

    zmq_close(client);
    zmq_close(silent.socket);
    zmq_close(other.socket);
    s_finish();
}

Test(broker, redispatches_the_request_of_a_worker_that_disconnects)
{
    s_start_broker(NULL);
    void *client = s_socket(ZMQ_DEALER);
    worker_t leaving = s_worker_new("svc", 0);
    s_wait_service(client, "svc");

    body_t request = s_request("svc.op", 9, 0);
    s_client_send(client, "svc", request.data, request.size);
    msg_t held;
    s_worker_expect_request(&leaving, 2000, &held);

    worker_t other = s_worker_new("svc", 0);
    s_sleep_ms(100);
    s_worker_command(&leaving, MDPW_DISCONNECT);

    msg_t got;
    s_worker_expect_request(&other, 2000, &got);
    cr_assert(s_frame_is(&got, 5, request.data, request.size));
    body_t reply = s_reply(9, "ok");
    s_worker_reply(&other, &got, reply.data, reply.size);
    msg_t back;
    cr_assert(s_client_recv(client, 2000, "svc", &back));
    cr_assert_eq(s_read_reply(back.data[3], back.size[3]).rid, 9);
    cr_assert_not(s_recv(client, 300, &back), "the client got a second reply");

    zmq_close(client);
    zmq_close(leaving.socket);
    zmq_close(other.socket);
    s_finish();
}

Test(broker, skips_a_worker_whose_socket_is_gone)
{
    s_start_broker("--heartbeat", "100", "--liveness", "3", NULL);
    void *client = s_socket(ZMQ_DEALER);
    worker_t gone = s_worker_new("svc", 100);
    s_wait_service(client, "svc");
    worker_t other = s_worker_new("svc", 100);
    msg_t msg;
    s_worker_recv(&other, 100, &msg); /* heartbeat a while so READY is in */

    /* `gone` is the longest idle, but its socket closes without a word:
       ROUTER_MANDATORY (or, at worst, its expiry) sends the request on. */
    zmq_close(gone.socket);
    s_sleep_ms(100);
    body_t request = s_request("svc.op", 11, 0);
    s_client_send(client, "svc", request.data, request.size);
    msg_t got;
    s_worker_expect_request(&other, 3000, &got);
    body_t reply = s_reply(11, "ok");
    s_worker_reply(&other, &got, reply.data, reply.size);
    cr_assert(s_client_recv(client, 2000, "svc", &msg));
    cr_assert_eq(s_read_reply(msg.data[3], msg.size[3]).rid, 11);

    zmq_close(client);
    zmq_close(other.socket);
    s_finish();
}

Test(broker, answers_overloaded_when_the_queue_is_full)
{
    s_start_broker("--queue-limit", "2", "--timeout", "400", NULL);
    void *client = s_socket(ZMQ_DEALER);
    for (uint64_t rid = 1; rid <= 3; rid++) {
        body_t request = s_request("svc.op", rid, 0);
        s_client_send(client, "svc", request.data, request.size);
    }
    /* The third finds the queue full and is answered at once... */
    int64_t start = s_now_ms();
    s_client_expect_error(client, 300, "svc", 3, 503, "overloaded");
    cr_assert_lt(s_now_ms() - start, 300);
    /* ...the two queued wait for their deadline: there is no worker. */
    s_client_expect_error(client, 2000, "svc", 1, 503, "no_workers");
    s_client_expect_error(client, 2000, "svc", 2, 503, "no_workers");
    cr_assert_geq(s_now_ms() - start, 300);

    zmq_close(client);
    s_finish();
}

Test(broker, bounds_the_number_of_services)
{
    s_start_broker("--timeout", "500", "--heartbeat", "100", NULL);
    void *client = s_socket(ZMQ_DEALER);
    /* Requests for 1024 made-up services fill the broker's table... */
    for (int i = 0; i < 1024; i++) {
        char name[32];
        snprintf(name, sizeof name, "made-up-%d", i);
        s_client_send(client, name, "x", 1);
    }
    /* ...so the next new one is refused at once... */
    body_t request = s_request("svc.op", 77, 0);
    s_client_send(client, "one-too-many", request.data, request.size);
    msg_t msg;
    cr_assert(s_client_recv(client, 2000, "one-too-many", &msg));
    reply_t reply = s_read_reply(msg.data[3], msg.size[3]);
    cr_assert_eq(reply.rid, 77);
    cr_assert_eq(reply.status, 503);
    cr_assert_str_eq(reply.code, "overloaded");
    /* ...until their requests expire and the services are forgotten. */
    for (int i = 0; i < 1024; i++)
        cr_assert(s_recv(client, 3000, &msg), "request %d not answered", i);
    s_sleep_ms(300);
    s_client_send(client, "one-too-many", request.data, request.size);
    s_client_expect_error(client, 3000, "one-too-many", 77, 503, "no_workers");

    zmq_close(client);
    s_finish();
}

Test(broker, answers_no_workers_at_the_deadline)
{
    s_start_broker(NULL);
    void *client = s_socket(ZMQ_DEALER);
    body_t request = s_request("svc.op", 5, 200);
    int64_t start = s_now_ms();
    s_client_send(client, "svc", request.data, request.size);
    s_client_expect_error(client, 2000, "svc", 5, 503, "no_workers");
    int64_t took = s_now_ms() - start;
    cr_assert(took >= 190 && took < 1500, "answered after %lld ms for a 200 ms ttl",
              (long long)took);

    /* A worker arriving in time gets a waiting request. */
    request = s_request("svc.op", 6, 3000);
    s_client_send(client, "svc", request.data, request.size);
    s_sleep_ms(100);
    worker_t worker = s_worker_new("svc", 0);
    msg_t got;
    s_worker_expect_request(&worker, 2000, &got);
    cr_assert(s_frame_is(&got, 5, request.data, request.size));
    body_t reply = s_reply(6, "ok");
    s_worker_reply(&worker, &got, reply.data, reply.size);
    msg_t back;
    cr_assert(s_client_recv(client, 2000, "svc", &back));
    cr_assert_eq(s_read_reply(back.data[3], back.size[3]).rid, 6);

    zmq_close(client);
    zmq_close(worker.socket);
    s_finish();
}

Test(broker, answers_timeout_when_a_request_outlives_its_ttl)
{
    /* A generous liveness: the test's worker heartbeats only while it
       waits in s_worker_recv(). Credit 1, so the second request waits in
       the broker's queue (classic MDP); held ones are tested below. */
    s_start_broker("--heartbeat", "100", "--liveness", "10", "--worker-credit", "1", NULL);
    void *client = s_socket(ZMQ_DEALER);
    worker_t worker = s_worker_new("svc", 100);
    s_wait_service(client, "svc");

    /* Held by a worker that is alive but slow. */
    body_t slow = s_request("svc.op", 7, 400);
    int64_t start = s_now_ms();
    s_client_send(client, "svc", slow.data, slow.size);
    msg_t held;
    s_worker_expect_request(&worker, 2000, &held);
    /* Queued behind it, with a shorter ttl: expires first. */
    body_t queued = s_request("svc.op", 8, 200);
    s_client_send(client, "svc", queued.data, queued.size);

    s_client_expect_error(client, 2000, "svc", 8, 504, "timeout");
    msg_t msg;
    /* The worker keeps heartbeating meanwhile, so it does not expire. */
    cr_assert_eq(s_worker_recv(&worker, 100, &msg), 0);
    s_client_expect_error(client, 2000, "svc", 7, 504, "timeout");
    int64_t took = s_now_ms() - start;
    cr_assert(took >= 390 && took < 2000, "timeout after %lld ms for a 400 ms ttl",
              (long long)took);

    /* The late reply goes nowhere; the worker then gets new work. */
    body_t late = s_reply(7, "late");
    s_worker_reply(&worker, &held, late.data, late.size);
    cr_assert_not(s_recv(client, 300, &msg), "the client got a reply after its timeout");
    body_t next = s_request("svc.op", 9, 0);
    s_client_send(client, "svc", next.data, next.size);
    msg_t got;
    s_worker_expect_request(&worker, 2000, &got);
    cr_assert(s_frame_is(&got, 5, next.data, next.size));
    body_t reply = s_reply(9, "ok");
    s_worker_reply(&worker, &got, reply.data, reply.size);
    cr_assert(s_client_recv(client, 2000, "svc", &msg));
    cr_assert_eq(s_read_reply(msg.data[3], msg.size[3]).rid, 9);

    zmq_close(client);
    zmq_close(worker.socket);
    s_finish();
}

Test(broker, survives_garbage_and_protocol_errors)
{
    s_start_broker(NULL);
    void *peer = s_socket(ZMQ_DEALER);
    unsigned char bad = 0x09, ready = MDPW_READY, reply = MDPW_REPLY, request = MDPW_REQUEST;
    char long_name[300];
    memset(long_name, 'x', sizeof long_name);

    s_send(peer, 1, S("x"));
    s_send(peer, 2, S("not empty"), S(MDPC_CLIENT));
    s_send(peer, 2, S(""), S("BOGUS1"));
    s_send(peer, 2, S(""), S(MDPC_CLIENT));
    s_send(peer, 3, S(""), S(MDPC_CLIENT), S(""));
    s_send(peer, 4, S(""), S(MDPC_CLIENT), B(long_name, sizeof long_name), S("body"));
    s_send(peer, 4, S(""), S(MDPW_WORKER), S("ab"), S("svc"));
    for (int i = 0; i < 100; i++)
        zmq_send(peer, "", 0, ZMQ_SNDMORE);
    zmq_send(peer, "", 0, 0);

    /* Peers speaking MDPW01 wrongly are told DISCONNECT, and counted. */
    worker_t rogue = {s_socket(ZMQ_DEALER), 0, 0};
    msg_t msg;
    s_worker_command(&rogue, MDPW_HEARTBEAT); /* unknown worker */
    cr_assert_eq(s_worker_recv(&rogue, 2000, &msg), MDPW_DISCONNECT);
    s_send(rogue.socket, 3, S(""), S(MDPW_WORKER), B(&bad, 1));
    cr_assert_eq(s_worker_recv(&rogue, 2000, &msg), MDPW_DISCONNECT);
    s_send(rogue.socket, 4, S(""), S(MDPW_WORKER), B(&ready, 1), S("mmi.service"));
    cr_assert_eq(s_worker_recv(&rogue, 2000, &msg), MDPW_DISCONNECT);
    s_send(rogue.socket, 4, S(""), S(MDPW_WORKER), B(&ready, 1), B(long_name, sizeof long_name));
    cr_assert_eq(s_worker_recv(&rogue, 2000, &msg), MDPW_DISCONNECT);
    s_send(rogue.socket, 3, S(""), S(MDPW_WORKER), B(&ready, 1));
    cr_assert_eq(s_worker_recv(&rogue, 2000, &msg), MDPW_DISCONNECT);

    worker_t twice = s_worker_new("svc", 0);
    s_send(twice.socket, 4, S(""), S(MDPW_WORKER), B(&ready, 1), S("svc"));
    cr_assert_eq(s_worker_recv(&twice, 2000, &msg), MDPW_DISCONNECT);

    worker_t idle = s_worker_new("svc", 0);
    s_send(idle.socket, 6, S(""), S(MDPW_WORKER), B(&reply, 1), S("nobody"), S(""), S("x"));
    cr_assert_eq(s_worker_recv(&idle, 2000, &msg), MDPW_DISCONNECT);

    worker_t confused = s_worker_new("svc", 0);
    s_send(confused.socket, 6, S(""), S(MDPW_WORKER), B(&request, 1), S("a"), S(""), S("x"));
    cr_assert_eq(s_worker_recv(&confused, 2000, &msg), MDPW_DISCONNECT);

    /* After all that, the broker still serves. */
    void *client = s_socket(ZMQ_DEALER);
    worker_t good = s_worker_new("svc", 0);
    s_wait_service(client, "svc");
    body_t body = s_request("svc.op", 12, 0);
    s_client_send(client, "svc", body.data, body.size);
    msg_t got;
    s_worker_expect_request(&good, 2000, &got);
    body_t answer = s_reply(12, "still here");
    s_worker_reply(&good, &got, answer.data, answer.size);
    cr_assert(s_client_recv(client, 2000, "svc", &msg));
    cr_assert_eq(s_read_reply(msg.data[3], msg.size[3]).rid, 12);

    /* A worker holding a request that breaks the protocol loses it to
       another worker. */
    body = s_request("svc.op", 13, 0);
    s_client_send(client, "svc", body.data, body.size);
    s_worker_expect_request(&good, 2000, &got);
    worker_t spare = s_worker_new("svc", 0);
    s_sleep_ms(100);
    s_send(good.socket, 4, S(""), S(MDPW_WORKER), B(&ready, 1), S("svc"));
    cr_assert_eq(s_worker_recv(&good, 2000, &msg), MDPW_DISCONNECT);
    s_worker_expect_request(&spare, 2000, &got);
    cr_assert(s_frame_is(&got, 5, body.data, body.size));

    zmq_close(peer);
    zmq_close(rogue.socket);
    zmq_close(twice.socket);
    zmq_close(idle.socket);
    zmq_close(confused.socket);
    zmq_close(good.socket);
    zmq_close(spare.socket);
    zmq_close(client);
    s_finish();
}

Test(broker, drops_the_reply_of_a_client_that_is_gone)
{
    s_start_broker(NULL);
    void *client = s_socket(ZMQ_DEALER);
    worker_t worker = s_worker_new("svc", 0);
    s_wait_service(client, "svc");
    body_t request = s_request("svc.op", 1, 0);
    s_client_send(client, "svc", request.data, request.size);
    msg_t got;
    s_worker_expect_request(&worker, 2000, &got);
    zmq_close(client);
    s_sleep_ms(100);

    body_t reply = s_reply(1, "nobody listens");
    s_worker_reply(&worker, &got, reply.data, reply.size);

    /* The broker carries on, and the worker is free for the next. */
    client = s_socket(ZMQ_DEALER);
    request = s_request("svc.op", 2, 0);
    s_client_send(client, "svc", request.data, request.size);
    s_worker_expect_request(&worker, 2000, &got);
    reply = s_reply(2, "ok");
    s_worker_reply(&worker, &got, reply.data, reply.size);
    msg_t back;
    cr_assert(s_client_recv(client, 2000, "svc", &back));
    cr_assert_eq(s_read_reply(back.data[3], back.size[3]).rid, 2);

    zmq_close(client);
    zmq_close(worker.socket);
    s_finish();
}

Test(broker, answers_pending_requests_and_exits_0_on_sigterm)
{
    s_start_broker(NULL);
    void *client = s_socket(ZMQ_DEALER);
    worker_t worker = s_worker_new("busy", 0);
    s_wait_service(client, "busy");
    body_t held = s_request("busy.op", 1, 0);
    s_client_send(client, "busy", held.data, held.size);
    msg_t msg;
    s_worker_expect_request(&worker, 2000, &msg);
    body_t queued = s_request("idle.op", 2, 0);
    s_client_send(client, "nobody", queued.data, queued.size);
    s_sleep_ms(100);

    int rc = s_stop_broker();
    cr_assert_eq(rc, 0, "exit status %d", rc);
    /* Both got an answer rather than silence, and the worker a goodbye. */
    for (int i = 0; i < 2; i++) {
        cr_assert(s_recv(client, 2000, &msg), "pending request %d not answered", i);
        cr_assert_eq(msg.n, 4);
        reply_t reply = s_read_reply(msg.data[3], msg.size[3]);
        cr_assert_eq(reply.status, 503);
        cr_assert_str_eq(reply.code, "unavailable");
    }
    cr_assert_eq(s_worker_recv(&worker, 2000, &msg), MDPW_DISCONNECT);

    zmq_close(client);
    zmq_close(worker.socket);
    s_finish();
}

Test(broker, rejects_bad_flags)
{
    const char *bin_dir = getenv("MUSICBUS_BIN_DIR");
    cr_assert(bin_dir);
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "%s/musicbus-broker --liveness 0 2>/dev/null", bin_dir);
    int status = system(cmd);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2);
    snprintf(cmd, sizeof cmd, "%s/musicbus-broker --worker-credit 0 2>/dev/null", bin_dir);
    status = system(cmd);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2);
    snprintf(cmd, sizeof cmd, "%s/musicbus-broker --help >/dev/null", bin_dir);
    status = system(cmd);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/*  ---------------------------------------------------------------------
    Credit: when every worker is busy, a worker may hold several requests
    (--worker-credit); it answers them in the order it reads them. */

/*  The rid of the request a worker received (body in frame 5). */
static uint64_t s_request_rid(const msg_t *request)
{
    return s_read_reply(request->data[5], request->size[5]).rid;
}

/*  Receives a REQUEST and checks it carries `rid`. */
static void s_worker_expect_rid(worker_t *worker, uint64_t rid, msg_t *got)
{
    s_worker_expect_request(worker, 2000, got);
    cr_assert_eq(s_request_rid(got), rid, "worker got rid %llu, expected %llu",
                 (unsigned long long)s_request_rid(got), (unsigned long long)rid);
}

/*  Receives a worker's reply on `client` and checks it is for `rid`. */
static void s_client_expect_rid(void *client, const char *service, uint64_t rid)
{
    msg_t msg;
    cr_assert(s_client_recv(client, 2000, service, &msg), "no reply for rid %llu",
              (unsigned long long)rid);
    reply_t reply = s_read_reply(msg.data[3], msg.size[3]);
    cr_assert_eq(reply.rid, rid, "reply for rid %llu, expected %llu", (unsigned long long)reply.rid,
                 (unsigned long long)rid);
    cr_assert_eq(reply.status, 200);
}

static void s_answer(worker_t *worker, const msg_t *request)
{
    body_t reply = s_reply(s_request_rid(request), "ok");
    s_worker_reply(worker, request, reply.data, reply.size);
}

Test(broker, gives_a_busy_worker_up_to_its_credit)
{
    s_start_broker("--worker-credit", "3", NULL);
    void *client = s_socket(ZMQ_DEALER);
    worker_t worker = s_worker_new("svc", 0);
    s_wait_service(client, "svc");
    for (uint64_t rid = 1; rid <= 5; rid++) {
        body_t request = s_request("svc.op", rid, 0);
        s_client_send(client, "svc", request.data, request.size);
    }
    /* The worker answers nothing yet: it is sent three, in order... */
    msg_t held[5], msg;
    for (uint64_t rid = 1; rid <= 3; rid++)
        s_worker_expect_rid(&worker, rid, &held[rid - 1]);
    cr_assert_eq(s_worker_recv(&worker, 300, &msg), 0, "a fourth request beyond the credit");

    /* ...and one more each time it answers one. */
    s_answer(&worker, &held[0]);
    s_client_expect_rid(client, "svc", 1);
    s_worker_expect_rid(&worker, 4, &held[3]);
    s_answer(&worker, &held[1]);
    s_worker_expect_rid(&worker, 5, &held[4]);
    for (int i = 2; i < 5; i++)
        s_answer(&worker, &held[i]);
    for (uint64_t rid = 2; rid <= 5; rid++)
        s_client_expect_rid(client, "svc", rid);
    cr_assert_not(s_recv(client, 300, &msg), "an extra reply");

    zmq_close(client);
    zmq_close(worker.socket);
    s_finish();
}

Test(broker, prefers_idle_workers_then_the_least_loaded)
{
    s_start_broker("--worker-credit", "3", NULL);
    void *client = s_socket(ZMQ_DEALER);
    worker_t a = s_worker_new("svc", 0);
    s_wait_service(client, "svc");
    worker_t b = s_worker_new("svc", 0);
    s_sleep_ms(100);
    for (uint64_t rid = 1; rid <= 7; rid++) {
        body_t request = s_request("svc.op", rid, 0);
        s_client_send(client, "svc", request.data, request.size);
    }
    /* Idle first (a has waited longest), then whoever holds fewest:
       they alternate up to three each; the seventh waits. */
    msg_t got_a[4], got_b[3], msg;
    s_worker_expect_rid(&a, 1, &got_a[0]);
    s_worker_expect_rid(&a, 3, &got_a[1]);
    s_worker_expect_rid(&a, 5, &got_a[2]);
    s_worker_expect_rid(&b, 2, &got_b[0]);
    s_worker_expect_rid(&b, 4, &got_b[1]);
    s_worker_expect_rid(&b, 6, &got_b[2]);
    cr_assert_eq(s_worker_recv(&a, 200, &msg), 0);
    cr_assert_eq(s_worker_recv(&b, 100, &msg), 0);

    /* b answers one first, so it gets the seventh. */
    s_answer(&b, &got_b[0]);
    s_client_expect_rid(client, "svc", 2);
    msg_t seventh;
    s_worker_expect_rid(&b, 7, &seventh);
    cr_assert_eq(s_worker_recv(&a, 100, &msg), 0);

    zmq_close(client);
    zmq_close(a.socket);
    zmq_close(b.socket);
    s_finish();
}

Test(broker, matches_replies_oldest_first_and_drops_the_expired)
{
    s_start_broker("--heartbeat", "100", "--liveness", "10", "--worker-credit", "4", NULL);
    void *client = s_socket(ZMQ_DEALER);
    worker_t worker = s_worker_new("svc", 100);
    s_wait_service(client, "svc");

    /* One client, two requests held by one worker; the first expires. */
    body_t first = s_request("svc.op", 1, 300);
    body_t second = s_request("svc.op", 2, 5000);
    s_client_send(client, "svc", first.data, first.size);
    s_client_send(client, "svc", second.data, second.size);
    msg_t held[2], msg;
    s_worker_expect_rid(&worker, 1, &held[0]);
    s_worker_expect_rid(&worker, 2, &held[1]);
    s_client_expect_error(client, 2000, "svc", 1, 504, "timeout");

    /* The worker answers in order: its first reply is the late one, and
       is dropped; the second reaches the client, which sees exactly one
       reply per request. Both replies name the same client, so only the
       order tells them apart. */
    body_t late = s_reply(1, "late");
    body_t answer = s_reply(2, "answer");
    s_worker_reply(&worker, &held[0], late.data, late.size);
    s_worker_reply(&worker, &held[1], answer.data, answer.size);
    cr_assert(s_client_recv(client, 2000, "svc", &msg));
    cr_assert(s_frame_is(&msg, 3, answer.data, answer.size), "the client got the late reply");
    cr_assert_not(s_recv(client, 300, &msg), "an extra reply");

    /* A reply for a client it holds nothing of is a protocol error. */
    body_t third = s_request("svc.op", 3, 0);
    s_client_send(client, "svc", third.data, third.size);
    s_worker_expect_rid(&worker, 3, &held[0]);
    unsigned char command = MDPW_REPLY;
    s_send(worker.socket, 6, S(""), S(MDPW_WORKER), B(&command, 1), S("stranger"), S(""),
           B(answer.data, answer.size));
    cr_assert_eq(s_worker_recv(&worker, 2000, &msg), MDPW_DISCONNECT);

    zmq_close(client);
    zmq_close(worker.socket);
    s_finish();
}

Test(broker, redispatches_everything_a_dead_worker_held_in_order)
{
    s_start_broker("--heartbeat", "100", "--liveness", "3", "--worker-credit", "2", NULL);
    void *client = s_socket(ZMQ_DEALER);
    worker_t dying = s_worker_new("svc", 100);
    s_wait_service(client, "svc");
    for (uint64_t rid = 1; rid <= 4; rid++) {
        body_t request = s_request("svc.op", rid, 10000);
        s_client_send(client, "svc", request.data, request.size);
    }
    /* It holds 1 and 2; 3 and 4 wait in the broker. Then it dies. */
    msg_t msg;
    s_worker_expect_rid(&dying, 1, &msg);
    s_worker_expect_rid(&dying, 2, &msg);
    zmq_close(dying.socket);
    int64_t until = s_now_ms() + 3000;
    char answer[4];
    do {
        cr_assert(s_now_ms() < until, "the dead worker was never forgotten");
        s_sleep_ms(50);
        s_mmi(client, "svc", answer);
    } while (strcmp(answer, "404") != 0);

    /* What it held goes back in front, in the original order. */
    worker_t heir = s_worker_new("svc", 100);
    msg_t got[4];
    s_worker_expect_rid(&heir, 1, &got[0]);
    s_worker_expect_rid(&heir, 2, &got[1]);
    s_answer(&heir, &got[0]);
    s_worker_expect_rid(&heir, 3, &got[2]);
    s_answer(&heir, &got[1]);
    s_worker_expect_rid(&heir, 4, &got[3]);
    s_answer(&heir, &got[2]);
    s_answer(&heir, &got[3]);
    for (uint64_t rid = 1; rid <= 4; rid++)
        s_client_expect_rid(client, "svc", rid);
    cr_assert_not(s_recv(client, 300, &msg), "an extra reply");

    zmq_close(client);
    zmq_close(heir.socket);
    s_finish();
}

Test(broker, gives_every_client_exactly_one_reply_when_a_loaded_worker_leaves)
{
    enum { CLIENTS = 3, EACH = 20 };
    s_start_broker("--worker-credit", "4", NULL);
    void *clients[CLIENTS];
    for (int c = 0; c < CLIENTS; c++)
        clients[c] = s_socket(ZMQ_DEALER);
    worker_t quitter = s_worker_new("svc", 0);
    s_wait_service(clients[0], "svc");
    worker_t stayer = s_worker_new("svc", 0);
    s_sleep_ms(100);
    for (int i = 0; i < EACH; i++)
        for (int c = 0; c < CLIENTS; c++) {
            body_t request = s_request("svc.op", (uint64_t)(c * 100 + i), 0);
            s_client_send(clients[c], "svc", request.data, request.size);
        }

    /* `quitter` answers five, then leaves holding up to four more (and
       more still queued in its socket): all of them go to `stayer`. */
    int replies[CLIENTS][EACH] = {{0}};
    int total = 0, answered = 0;
    bool gone = false;
    int64_t until = s_now_ms() + 10000;
    while (total < CLIENTS * EACH) {
        cr_assert(s_now_ms() < until, "only %d replies of %d", total, CLIENTS * EACH);
        zmq_pollitem_t items[2 + CLIENTS] = {{quitter.socket, 0, gone ? 0 : ZMQ_POLLIN, 0},
                                             {stayer.socket, 0, ZMQ_POLLIN, 0}};
        for (int c = 0; c < CLIENTS; c++)
            items[2 + c] = (zmq_pollitem_t){clients[c], 0, ZMQ_POLLIN, 0};
        zmq_poll(items, 2 + CLIENTS, 100);
        msg_t msg;
        if ((items[0].revents & ZMQ_POLLIN) && s_worker_recv(&quitter, 10, &msg) == MDPW_REQUEST) {
            if (answered++ < 5) {
                s_answer(&quitter, &msg);
            } else {
                s_worker_command(&quitter, MDPW_DISCONNECT);
                gone = true;
            }
        }
        if ((items[1].revents & ZMQ_POLLIN) && s_worker_recv(&stayer, 10, &msg) == MDPW_REQUEST)
            s_answer(&stayer, &msg);
        for (int c = 0; c < CLIENTS; c++) {
            if (!(items[2 + c].revents & ZMQ_POLLIN) || !s_recv(clients[c], 0, &msg))
                continue;
            reply_t reply = s_read_reply(msg.data[3], msg.size[3]);
            uint64_t rid = reply.rid;
            cr_assert_eq(reply.status, 200, "rid %llu: status %d %s", (unsigned long long)rid,
                         reply.status, reply.code);
            cr_assert(rid >= (uint64_t)c * 100 && rid < (uint64_t)c * 100 + EACH,
                      "client %d got rid %llu", c, (unsigned long long)rid);
            replies[c][rid - (uint64_t)c * 100]++;
            total++;
        }
    }
    for (int c = 0; c < CLIENTS; c++)
        for (int i = 0; i < EACH; i++)
            cr_assert_eq(replies[c][i], 1, "client %d rid %d: %d replies", c, i, replies[c][i]);
    cr_assert(gone);
    msg_t msg;
    for (int c = 0; c < CLIENTS; c++)
        cr_assert_not(s_recv(clients[c], c ? 0 : 300, &msg), "an extra reply");

    for (int c = 0; c < CLIENTS; c++)
        zmq_close(clients[c]);
    zmq_close(quitter.socket);
    zmq_close(stayer.socket);
    s_finish();
}

Test(broker, sends_nothing_more_to_a_worker_stuck_on_a_slow_request)
{
    s_start_broker("--worker-credit", "4", NULL);
    void *client = s_socket(ZMQ_DEALER);
    worker_t slow = s_worker_new("svc", 0);
    s_wait_service(client, "svc");
    body_t request = s_request("svc.op", 1, 0);
    s_client_send(client, "svc", request.data, request.size);
    msg_t first, msg;
    s_worker_expect_rid(&slow, 1, &first);

    /* Well past the stall limit, the next request waits in the broker
       rather than behind the slow one... */
    s_sleep_ms(100);
    request = s_request("svc.op", 2, 0);
    s_client_send(client, "svc", request.data, request.size);
    cr_assert_eq(s_worker_recv(&slow, 200, &msg), 0, "pipelined behind a stalled request");
    /* ...so a worker that comes free first takes it. */
    worker_t quick = s_worker_new("svc", 0);
    msg_t second;
    s_worker_expect_rid(&quick, 2, &second);
    s_answer(&quick, &second);
    s_client_expect_rid(client, "svc", 2);
    s_answer(&slow, &first);
    s_client_expect_rid(client, "svc", 1);

    zmq_close(client);
    zmq_close(slow.socket);
    zmq_close(quick.socket);
    s_finish();
}

/*  Compact framing (lib/mb_worker.h): a worker whose READY carries the
    option frame gets one-frame requests as [REQUEST][client][body] and may
    answer [REPLY][client][body]; bodies of several frames still go in RFC
    7's form; a classic worker next to it sees only RFC 7 frames; a compact
    message from a worker that did not ask for it is a protocol error. */
Test(broker, speaks_compact_framing_only_to_workers_that_ask)
{
    s_start_broker(NULL);
    void *client = s_socket(ZMQ_DEALER);
    worker_t compact = {s_socket(ZMQ_DEALER), 0, 0};
    unsigned char ready = MDPW_READY, request = MDPW_REQUEST, reply = MDPW_REPLY;
    s_send(compact.socket, 5, S(""), S(MDPW_WORKER), B(&ready, 1), S("echo"), S("mb:compact"));
    s_wait_service(client, "echo");

    body_t req = s_request("echo.say", 7, 0);
    s_client_send(client, "echo", req.data, req.size);
    msg_t got;
    cr_assert(s_recv(compact.socket, 2000, &got), "compact REQUEST");
    cr_assert_eq(got.n, 3, "[REQUEST][client][body], got %zu frames", got.n);
    cr_assert(s_frame_is(&got, 0, B(&request, 1)));
    cr_assert(s_frame_is(&got, 2, req.data, req.size));
    body_t rep = s_reply(7, "hi");
    s_send(compact.socket, 3, B(&reply, 1), B(got.data[1], got.size[1]), B(rep.data, rep.size));
    msg_t back;
    cr_assert(s_client_recv(client, 2000, "echo", &back));
    cr_assert_eq(back.n, 4);
    cr_assert(s_frame_is(&back, 3, rep.data, rep.size));

    /* A classic REPLY from the same worker is fine too. */
    s_client_send(client, "echo", req.data, req.size);
    cr_assert(s_recv(compact.socket, 2000, &got));
    cr_assert_eq(got.n, 3);
    s_send(compact.socket, 6, S(""), S(MDPW_WORKER), B(&reply, 1), B(got.data[1], got.size[1]),
           S(""), B(rep.data, rep.size));
    cr_assert(s_client_recv(client, 2000, "echo", &back));
    cr_assert(s_frame_is(&back, 3, rep.data, rep.size));

    /* Bodies of two frames go in RFC 7's form. */
    s_send(client, 5, S(""), S(MDPC_CLIENT), S("echo"), S("one"), S("two"));
    cr_assert(s_recv(compact.socket, 2000, &got));
    cr_assert_eq(got.n, 7);
    cr_assert(s_frame_is(&got, 0, S("")));
    cr_assert(s_frame_is(&got, 2, B(&request, 1)));
    s_send(compact.socket, 3, B(&reply, 1), B(got.data[3], got.size[3]), S("ok"));
    cr_assert(s_client_recv(client, 2000, "echo", &back));
    cr_assert(s_frame_is(&back, 3, S("ok")));

    /* A classic worker of another service gets RFC 7 frames, and its
       compact reply is a protocol error: DISCONNECT. */
    worker_t classic = s_worker_new("other", 0);
    s_wait_service(client, "other");
    s_client_send(client, "other", req.data, req.size);
    s_worker_expect_request(&classic, 2000, &got);
    cr_assert_eq(got.n, 6);
    s_send(classic.socket, 3, B(&reply, 1), B(got.data[3], got.size[3]), B(rep.data, rep.size));
    cr_assert_eq(s_worker_recv(&classic, 2000, &got), MDPW_DISCONNECT);

    zmq_close(client);
    zmq_close(compact.socket);
    zmq_close(classic.socket);
    s_finish();
}

/*  Requests dispatched to a compact worker in one batch of the broker's go
    out as one compact REQUEST of several [client][body] pairs, in order;
    however they are split, each message has the pairs whole. */
Test(broker, sends_a_compact_worker_its_requests_in_order_pairs)
{
    s_start_broker(NULL);
    void *client = s_socket(ZMQ_DEALER);
    worker_t compact = {s_socket(ZMQ_DEALER), 0, 0};
    unsigned char ready = MDPW_READY, request = MDPW_REQUEST, reply = MDPW_REPLY;
    s_send(compact.socket, 5, S(""), S(MDPW_WORKER), B(&ready, 1), S("echo"), S("mb:compact"));
    s_wait_service(client, "echo");
    for (uint64_t rid = 1; rid <= 5; rid++) {
        body_t req = s_request("echo.say", rid, 0);
        s_client_send(client, "echo", req.data, req.size);
    }
    uint64_t next = 1;
    while (next <= 5) {
        msg_t got;
        cr_assert(s_recv(compact.socket, 2000, &got), "requests %llu.. missing",
                  (unsigned long long)next);
        cr_assert(s_frame_is(&got, 0, B(&request, 1)));
        cr_assert(got.n >= 3 && got.n % 2 == 1, "[REQUEST] and pairs, got %zu frames", got.n);
        /* Answered as mb_worker does: every pair of it in one REPLY,
           [REPLY][client][body]([client][body])... */
        cr_assert(zmq_send(compact.socket, &reply, 1, ZMQ_SNDMORE) == 1);
        for (size_t i = 1; i < got.n; i += 2) {
            cr_assert_eq(s_read_reply(got.data[i + 1], got.size[i + 1]).rid, next,
                         "pairs in order");
            body_t rep = s_reply(next, "ok");
            zmq_send(compact.socket, got.data[i], got.size[i], ZMQ_SNDMORE);
            zmq_send(compact.socket, rep.data, rep.size, i + 2 < got.n ? ZMQ_SNDMORE : 0);
            next++;
        }
    }
    for (uint64_t rid = 1; rid <= 5; rid++)
        s_client_expect_rid(client, "echo", rid);

    /* A REPLY whose last pair lacks its body is a protocol error: the
       worker is told DISCONNECT. */
    body_t req = s_request("echo.say", 6, 0);
    s_client_send(client, "echo", req.data, req.size);
    msg_t got;
    cr_assert(s_recv(compact.socket, 2000, &got));
    body_t rep = s_reply(6, "ok");
    s_send(compact.socket, 4, B(&reply, 1), B(got.data[1], got.size[1]), B(rep.data, rep.size),
           B(got.data[1], got.size[1]));
    cr_assert(s_recv(compact.socket, 2000, &got));
    cr_assert(s_frame_is(&got, 0, S("")) && got.n == 3, "DISCONNECT");
    unsigned char disconnect = MDPW_DISCONNECT;
    cr_assert(s_frame_is(&got, 2, B(&disconnect, 1)));
    zmq_close(client);
    zmq_close(compact.socket);
    s_finish();
}

/*  Compact framing for clients (lib/mb_client.h): a client whose routing
    id starts with "mb:c1:" gets worker replies of one frame as [0x11][body]
    and may send [0x11][service][body]; MMI and other clients stay RFC 7. */
Test(broker, speaks_compact_framing_to_musicbus_clients)
{
    s_start_broker(NULL);
    void *client = zmq_socket(s_ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(client, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(client, ZMQ_ROUTING_ID, "mb:c1:0123456789abcdef", 22);
    cr_assert_eq(zmq_connect(client, s_endpoint), 0);
    void *classic = s_socket(ZMQ_DEALER);
    worker_t worker = s_worker_new("echo", 0);
    s_wait_service(classic, "echo");
    unsigned char compact = 0x11;

    /* An RFC 7 request from it: the reply comes back compact. */
    body_t req = s_request("echo.say", 1, 0);
    s_client_send(client, "echo", req.data, req.size);
    msg_t got, back;
    s_worker_expect_request(&worker, 2000, &got);
    body_t rep = s_reply(1, "one");
    s_worker_reply(&worker, &got, rep.data, rep.size);
    cr_assert(s_recv(client, 2000, &back));
    cr_assert_eq(back.n, 2, "[0x11][body], got %zu frames", back.n);
    cr_assert(s_frame_is(&back, 0, B(&compact, 1)));
    cr_assert(s_frame_is(&back, 1, rep.data, rep.size));

    /* A compact request routes like an RFC 7 one. */
    s_send(client, 3, B(&compact, 1), S("echo"), B(req.data, req.size));
    s_worker_expect_request(&worker, 2000, &got);
    cr_assert_eq(got.n, 6);
    cr_assert(s_frame_is(&got, 5, req.data, req.size));
    s_worker_reply(&worker, &got, rep.data, rep.size);
    cr_assert(s_recv(client, 2000, &back));
    cr_assert_eq(back.n, 2);

    /* MMI answers in RFC 7's form, compact request or not. */
    s_send(client, 3, B(&compact, 1), S(MMI_SERVICE), S("echo"));
    cr_assert(s_recv(client, 2000, &back));
    cr_assert_eq(back.n, 4);
    cr_assert(s_frame_is(&back, 2, S(MMI_SERVICE)));
    cr_assert(s_frame_is(&back, 3, S("200")));

    /* Another client keeps RFC 7 replies. */
    s_client_send(classic, "echo", req.data, req.size);
    s_worker_expect_request(&worker, 2000, &got);
    s_worker_reply(&worker, &got, rep.data, rep.size);
    cr_assert(s_client_recv(classic, 2000, "echo", &back));
    cr_assert_eq(back.n, 4);

    zmq_close(client);
    zmq_close(classic);
    zmq_close(worker.socket);
    s_finish();
}

/*  A client whose id starts with "mb:c2:" may send several requests in
    one message, and gets the replies the broker has for it at the end of
    a batch of work in one message, [0x11][body]...; here two that a
    compact worker sent in one REPLY. */
Test(broker, batches_replies_to_musicbus_clients)
{
    s_start_broker(NULL);
    void *client = zmq_socket(s_ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(client, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(client, ZMQ_ROUTING_ID, "mb:c2:0123456789abcdef", 22);
    cr_assert_eq(zmq_connect(client, s_endpoint), 0);
    worker_t compact = {s_socket(ZMQ_DEALER), 0, 0};
    unsigned char ready = MDPW_READY, reply = MDPW_REPLY, marker = 0x11;
    s_send(compact.socket, 5, S(""), S(MDPW_WORKER), B(&ready, 1), S("echo"), S("mb:compact2"));
    s_wait_service(client, "echo");
    /* It may send several requests in one message, [0x11]([service][body])...,
       an empty service frame naming the service of the pair before. */
    body_t req1 = s_request("echo.say", 1, 0), req2 = s_request("echo.say", 2, 0);
    s_send(client, 5, B(&marker, 1), S("echo"), B(req1.data, req1.size), S(""),
           B(req2.data, req2.size));
    /* Both requests, in one compact REQUEST or two. */
    msg_t got;
    const void *ids[2];
    size_t id_sizes[2], seen = 0;
    msg_t keep[2];
    while (seen < 2) {
        cr_assert(s_recv(compact.socket, 2000, &keep[seen > 0]), "requests missing");
        msg_t *m = &keep[seen > 0];
        for (size_t i = 1; i + 1 < m->n && seen < 2; i += 2) {
            /* To an mb:compact2 worker, an empty client frame names the
               client of the pair before. */
            cr_assert(i == 1 || m->size[i] == 0, "the same client again: an empty frame");
            ids[seen] = m->size[i] ? m->data[i] : ids[seen - 1];
            id_sizes[seen] = m->size[i] ? m->size[i] : id_sizes[seen - 1];
            seen++;
        }
    }
    cr_assert_eq(id_sizes[0], 22);
    body_t rep1 = s_reply(1, "one"), rep2 = s_reply(2, "two");
    s_send(compact.socket, 5, B(&reply, 1), B(ids[0], id_sizes[0]), B(rep1.data, rep1.size),
           S(""), B(rep2.data, rep2.size));
    cr_assert(s_recv(client, 2000, &got));
    cr_assert_eq(got.n, 3, "[0x11][body][body], got %zu frames", got.n);
    cr_assert(s_frame_is(&got, 0, B(&marker, 1)));
    cr_assert(s_frame_is(&got, 1, rep1.data, rep1.size));
    cr_assert(s_frame_is(&got, 2, rep2.data, rep2.size));

    /* A compact message without whole pairs is dropped, and the broker goes on:
       what reaches the worker is the well-formed request (rid 3), not the
       first pair of the broken one (rid 1). */
    body_t req3 = s_request("echo.say", 3, 0);
    s_send(client, 4, B(&marker, 1), S("echo"), B(req1.data, req1.size), S("echo"));
    s_client_send(client, "echo", req3.data, req3.size);
    cr_assert(s_recv(compact.socket, 2000, &got));
    cr_assert_eq(got.n, 3, "only the well-formed request");
    cr_assert(s_frame_is(&got, 2, req3.data, req3.size), "the well-formed request's body");
    zmq_close(client);
    zmq_close(compact.socket);
    s_finish();
}

/*  Receives one message of up to `max` frames into frames[] (initialised
    here; the caller closes them). Returns the number of frames, 0 on
    timeout. */
static size_t s_recv_frames(void *socket, int timeout_ms, zmq_msg_t *frames, size_t max)
{
    zmq_pollitem_t item = {socket, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, timeout_ms) <= 0)
        return 0;
    size_t n = 0;
    for (;;) {
        cr_assert(n < max, "more than %zu frames", max);
        zmq_msg_init(&frames[n]);
        cr_assert(zmq_msg_recv(&frames[n], socket, 0) >= 0);
        if (!zmq_msg_more(&frames[n++]))
            return n;
    }
}

/*  As many replies for an mb:c2: client in one batch of the broker's as
    one message takes (64), and then none: every message to it is whole,
    [0x11][body]..., and so is the next message to the worker. */
Test(broker, splits_many_replies_to_a_client_into_whole_messages)
{
    s_start_broker("--worker-credit", "200", NULL);
    void *client = zmq_socket(s_ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(client, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(client, ZMQ_ROUTING_ID, "mb:c2:0123456789abcdef", 22);
    cr_assert_eq(zmq_connect(client, s_endpoint), 0);
    void *worker = s_socket(ZMQ_DEALER);
    unsigned char ready = MDPW_READY, reply = MDPW_REPLY, marker = 0x11;
    s_send(worker, 5, S(""), S(MDPW_WORKER), B(&ready, 1), S("echo"), S("mb:compact2"));
    s_wait_service(client, "echo");
    enum { N = 64, PAIRS = 31 };
    for (int first = 0; first < N; first += PAIRS) {
        int last = first + PAIRS < N ? first + PAIRS : N;
        zmq_send(client, &marker, 1, ZMQ_SNDMORE);
        for (int i = first; i < last; i++) {
            body_t req = s_request("echo.say", (uint64_t)(i + 1), 0);
            zmq_send(client, "echo", 4, ZMQ_SNDMORE);
            zmq_send(client, req.data, req.size, i + 1 < last ? ZMQ_SNDMORE : 0);
        }
    }
    static zmq_msg_t frames[2 * N + 2];
    uint64_t rids[N];
    size_t got = 0;
    while (got < N) {
        size_t n = s_recv_frames(worker, 2000, frames, 2 * N + 2);
        cr_assert(n >= 3 && n % 2 == 1, "compact REQUEST, got %zu frames", n);
        for (size_t i = 1; i < n; i += 2)
            rids[got++] = s_read_reply(zmq_msg_data(&frames[i + 1]), zmq_msg_size(&frames[i + 1])).rid;
        for (size_t i = 0; i < n; i++)
            zmq_msg_close(&frames[i]);
    }
    /* Answered back to back in messages of 31 pairs, as mb_worker does. */
    for (int first = 0; first < N; first += PAIRS) {
        int last = first + PAIRS < N ? first + PAIRS : N;
        zmq_send(worker, &reply, 1, ZMQ_SNDMORE);
        for (int i = first; i < last; i++) {
            body_t rep = s_reply(rids[i], "ok");
            zmq_send(worker, "mb:c2:0123456789abcdef", 22, ZMQ_SNDMORE);
            zmq_send(worker, rep.data, rep.size, i + 1 < last ? ZMQ_SNDMORE : 0);
        }
    }
    size_t replies = 0;
    while (replies < N) {
        size_t n = s_recv_frames(client, 2000, frames, 2 * N + 2);
        cr_assert(n >= 2 && n <= 65, "[0x11] and 1..64 bodies, got %zu frames", n);
        cr_assert(zmq_msg_size(&frames[0]) == 1 && *(unsigned char *)zmq_msg_data(&frames[0]) == 0x11);
        for (size_t i = 1; i < n; i++) {
            reply_t r = s_read_reply(zmq_msg_data(&frames[i]), zmq_msg_size(&frames[i]));
            cr_assert_eq(r.status, 200, "a reply, not a stray frame");
            replies++;
        }
        for (size_t i = 0; i < n; i++)
            zmq_msg_close(&frames[i]);
    }
    cr_assert_eq(replies, N);
    body_t req = s_request("echo.say", 1000, 0);
    s_send(client, 3, B(&marker, 1), S("echo"), B(req.data, req.size));
    size_t n = s_recv_frames(worker, 2000, frames, 2 * N + 2);
    cr_assert_eq(n, 3, "a whole REQUEST, got %zu frames", n);
    for (size_t i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
    zmq_close(client);
    zmq_close(worker);
    s_finish();
}

/*  Replies for more mb:c2: clients in one batch than the broker gathers
    at once (8): each client gets its own replies, whole. */
Test(broker, gathers_replies_for_many_clients)
{
    s_start_broker(NULL);
    enum { CLIENTS = 11 };
    void *clients[CLIENTS];
    char ids[CLIENTS][32];
    unsigned char ready = MDPW_READY, reply = MDPW_REPLY, marker = 0x11;
    void *worker = s_socket(ZMQ_DEALER);
    s_send(worker, 5, S(""), S(MDPW_WORKER), B(&ready, 1), S("echo"), S("mb:compact2"));
    for (int c = 0; c < CLIENTS; c++) {
        clients[c] = zmq_socket(s_ctx, ZMQ_DEALER);
        int zero = 0;
        zmq_setsockopt(clients[c], ZMQ_LINGER, &zero, sizeof zero);
        snprintf(ids[c], sizeof ids[c], "mb:c2:client-%02d", c);
        zmq_setsockopt(clients[c], ZMQ_ROUTING_ID, ids[c], strlen(ids[c]));
        cr_assert_eq(zmq_connect(clients[c], s_endpoint), 0);
        s_wait_service(clients[c], "echo");
    }
    for (int c = 0; c < CLIENTS; c++) {
        body_t req = s_request("echo.say", (uint64_t)c + 1, 0);
        s_send(clients[c], 3, B(&marker, 1), S("echo"), B(req.data, req.size));
    }
    /* Every request reached the worker: all answered in one REPLY. */
    static zmq_msg_t frames[64];
    int got = 0;
    while (got < CLIENTS) {
        size_t n = s_recv_frames(worker, 2000, frames, 64);
        cr_assert(n >= 3, "requests missing");
        got += (int)(n - 1) / 2;
        for (size_t i = 0; i < n; i++)
            zmq_msg_close(&frames[i]);
    }
    zmq_send(worker, &reply, 1, ZMQ_SNDMORE);
    for (int c = 0; c < CLIENTS; c++) {
        body_t rep = s_reply((uint64_t)c + 1, "ok");
        zmq_send(worker, ids[c], strlen(ids[c]), ZMQ_SNDMORE);
        zmq_send(worker, rep.data, rep.size, c + 1 < CLIENTS ? ZMQ_SNDMORE : 0);
    }
    for (int c = 0; c < CLIENTS; c++) {
        msg_t back;
        cr_assert(s_recv(clients[c], 2000, &back), "client %d has no reply", c);
        cr_assert_eq(back.n, 2, "client %d: [0x11][body], got %zu frames", c, back.n);
        cr_assert_eq(s_read_reply(back.data[1], back.size[1]).rid, (uint64_t)c + 1);
    }
    /* And the broker's messages are whole after that: one more round trip. */
    body_t req = s_request("echo.say", 100, 0);
    s_send(clients[0], 3, B(&marker, 1), S("echo"), B(req.data, req.size));
    size_t n = s_recv_frames(worker, 2000, frames, 64);
    cr_assert_eq(n, 3, "a whole REQUEST, got %zu frames", n);
    for (size_t i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
    for (int c = 0; c < CLIENTS; c++)
        zmq_close(clients[c]);
    zmq_close(worker);
    s_finish();
}
