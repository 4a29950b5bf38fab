/*  mb_client: an MDP/0.1 client, checked against a raw ROUTER socket
    playing the broker, and end to end with mb_worker. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mb_client.h"
#include "mb_error.h"
#include "mb_signal.h"
#include "mb_worker.h"
#include "mdp.h"
#include "test_router.h"

Test(mb_client, usage)
{
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    mb_client_t *client = mb_client_new(endpoint);
    cr_assert_not_null(client);

    /* Non-blocking, as the gateway does: send, poll, receive until EAGAIN.
       (Blocking use, mb_client_call, is the next test.) While the
       connection comes up, send says MB_EAGAIN: wait for POLLOUT. */
    int rc;
    int64_t deadline = tr_now_ms() + 2000;
    while ((rc = mb_client_send(client, "catalog", "request", 7)) == MB_EAGAIN &&
           tr_now_ms() < deadline)
        zmq_poll(&(zmq_pollitem_t){.socket = mb_client_socket(client), .events = ZMQ_POLLOUT}, 1,
                 10);
    cr_assert_eq(rc, 0);

    tr_msg_t request;
    cr_assert(tr_recv(broker, &request, 2000));
    /* [client id][empty]["MDPC01"][service][body] */
    cr_assert_eq(request.count, 5);
    cr_assert(tr_frame_is(&request, 1, "", 0));
    cr_assert(tr_frame_is(&request, 2, MDPC_CLIENT, 6));
    cr_assert(tr_frame_is(&request, 3, "catalog", 7));
    cr_assert(tr_frame_is(&request, 4, "request", 7));

    TR_SEND_TO(broker, &request, "", MDPC_CLIENT, "catalog", "reply");
    zmq_pollitem_t item = {.socket = mb_client_socket(client), .events = ZMQ_POLLIN};
    cr_assert_eq(zmq_poll(&item, 1, 2000), 1);
    zmq_msg_t body;
    cr_assert_eq(mb_client_recv(client, &body), 0);
    cr_assert_eq(zmq_msg_size(&body), 5);
    cr_assert_eq(memcmp(zmq_msg_data(&body), "reply", 5), 0);
    zmq_msg_close(&body);
    cr_assert_eq(mb_client_recv(client, &body), MB_EAGAIN);
    cr_assert_eq(mb_client_dropped(client), 0);

    tr_free(&request);
    mb_client_destroy(&client);
    cr_assert_null(client);
    mb_client_destroy(&client); /* safe twice */
    zmq_close(broker);
    mb_zmq_shutdown();
}

/*  A broker thread answering every request with "re:" + body, for
    `count` requests. */
typedef struct {
    void *router;
    int count;
    int delay_ms;
} answerer_t;

static void *s_answer(void *arg)
{
    answerer_t *a = arg;
    for (int i = 0; i < a->count; i++) {
        tr_msg_t req;
        if (!tr_recv(a->router, &req, 5000))
            return NULL;
        if (a->delay_ms)
            nanosleep(&(struct timespec){.tv_nsec = a->delay_ms * 1000000L}, NULL);
        char body[300];
        snprintf(body, sizeof body, "re:%s", req.data[4]);
        TR_SEND_TO(a->router, &req, "", MDPC_CLIENT, req.data[3], body);
        tr_free(&req);
    }
    return NULL;
}

/*  Compact framing (mb_client.h): the routing id says "musicbus client";
    requests stay RFC 7's until the broker answers one compactly, then they
    are compact too; both reply forms are read. */
Test(mb_client, turns_compact_after_a_compact_reply)
{
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    mb_client_t *client = mb_client_new(endpoint);
    zmq_msg_t body;
    cr_assert_eq(mb_client_call(client, "svc", "one", 3, 300, &body), MB_ETIMEDOUT);

    tr_msg_t request;
    cr_assert(tr_recv(broker, &request, 2000));
    size_t prefix = strlen(MB_CLIENT_ID_PREFIX);
    cr_assert_eq(request.size[0], prefix + 16, "prefix and 16 random bytes");
    cr_assert(memcmp(request.data[0], MB_CLIENT_ID_PREFIX, prefix) == 0);
    cr_assert_eq(request.count, 5, "RFC 7 until the broker shows it knows better");

    /* A compact reply is read, and the next request is compact. */
    TR_SEND_TO(broker, &request, "\x11", "reply-1");
    cr_assert_eq(zmq_poll(&(zmq_pollitem_t){.socket = mb_client_socket(client),
                                            .events = ZMQ_POLLIN},
                          1, 2000),
                 1);
    cr_assert_eq(mb_client_recv(client, &body), 0);
    cr_assert_eq(zmq_msg_size(&body), 7);
    cr_assert_eq(memcmp(zmq_msg_data(&body), "reply-1", 7), 0);
    zmq_msg_close(&body);
    cr_assert_eq(mb_client_send(client, "svc", "two", 3), 0);
    tr_free(&request);
    cr_assert(tr_recv(broker, &request, 2000));
    cr_assert_eq(request.count, 4, "[id][0x11][service][body]");
    cr_assert(tr_frame_is(&request, 1, "\x11", 1));
    cr_assert(tr_frame_is(&request, 2, "svc", 3));
    cr_assert(tr_frame_is(&request, 3, "two", 3));

    /* A compact reply of several bodies is several replies, one per call;
       RFC 7 replies are still read; a compact one without a body is
       dropped and counted. */
    TR_SEND_TO(broker, &request, "\x11", "a", "bb", "ccc");
    TR_SEND_TO(broker, &request, "\x11");
    TR_SEND_TO(broker, &request, "", MDPC_CLIENT, "svc", "reply-2");
    const char *expect[] = {"a", "bb", "ccc", "reply-2"};
    for (int i = 0; i < 4; i++) {
        int64_t deadline = tr_now_ms() + 2000;
        int rc;
        while ((rc = mb_client_recv(client, &body)) != 0 && tr_now_ms() < deadline)
            zmq_poll(&(zmq_pollitem_t){.socket = mb_client_socket(client), .events = ZMQ_POLLIN},
                     1, 10);
        cr_assert_eq(rc, 0, "reply %d", i);
        cr_assert_eq(zmq_msg_size(&body), strlen(expect[i]));
        cr_assert_eq(memcmp(zmq_msg_data(&body), expect[i], strlen(expect[i])), 0);
        zmq_msg_close(&body);
    }
    cr_assert_eq(mb_client_recv(client, &body), MB_EAGAIN);
    cr_assert_eq(mb_client_dropped(client), 1);

    /* Queued requests go in one message at the flush; a send flushes
       first, then goes alone. */
    cr_assert_eq(mb_client_queue(client, "svc", "q1", 2), 0);
    cr_assert_eq(mb_client_queue(client, "other", "q22", 3), 0);
    cr_assert_eq(mb_client_queue(client, "other", "q333", 4), 0);
    cr_assert_eq(mb_client_flush(client), 0);
    cr_assert_eq(mb_client_flush(client), 0, "nothing queued");
    cr_assert_eq(mb_client_queue(client, "svc", "q3", 2), 0);
    cr_assert_eq(mb_client_send(client, "svc", "q4", 2), 0);
    tr_free(&request);
    cr_assert(tr_recv(broker, &request, 2000));
    cr_assert_eq(request.count, 8, "[id][0x11] and three pairs, got %d", request.count);
    cr_assert(tr_frame_is(&request, 1, "\x11", 1));
    cr_assert(tr_frame_is(&request, 2, "svc", 3));
    cr_assert(tr_frame_is(&request, 3, "q1", 2));
    cr_assert(tr_frame_is(&request, 4, "other", 5));
    cr_assert(tr_frame_is(&request, 5, "q22", 3));
    cr_assert(tr_frame_is(&request, 6, "", 0), "the same service again: an empty frame");
    cr_assert(tr_frame_is(&request, 7, "q333", 4));
    tr_free(&request);
    cr_assert(tr_recv(broker, &request, 2000));
    cr_assert_eq(request.count, 4);
    cr_assert(tr_frame_is(&request, 3, "q3", 2));
    tr_free(&request);
    cr_assert(tr_recv(broker, &request, 2000));
    cr_assert_eq(request.count, 4);
    cr_assert(tr_frame_is(&request, 3, "q4", 2));
    /* 31 queued go by themselves. */
    for (int i = 0; i < 31; i++)
        cr_assert_eq(mb_client_queue(client, "svc", "q", 1), 0);
    tr_free(&request);
    cr_assert(tr_recv(broker, &request, 2000));
    cr_assert_eq(request.count, 64);

    tr_free(&request);
    mb_client_destroy(&client);
    zmq_close(broker);
    mb_zmq_shutdown();
}

Test(mb_client, call_sends_and_waits_for_the_reply)
{
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    answerer_t answerer = {.router = broker, .count = 3};
    pthread_t thread;
    pthread_create(&thread, NULL, s_answer, &answerer);
    mb_client_t *client = mb_client_new(endpoint);
    /* the first call is made before the connection is up: it must wait for it */
    for (int i = 0; i < 3; i++) {
        zmq_msg_t reply;
        char body[16], expect[20];
        snprintf(body, sizeof body, "q%d", i);
        snprintf(expect, sizeof expect, "re:q%d", i);
        cr_assert_eq(mb_client_call(client, "svc", body, strlen(body), 2000, &reply), 0);
        cr_assert_eq(zmq_msg_size(&reply), strlen(expect));
        cr_assert_eq(memcmp(zmq_msg_data(&reply), expect, strlen(expect)), 0);
        zmq_msg_close(&reply);
    }
    pthread_join(thread, NULL);
    mb_client_destroy(&client);
    zmq_close(broker);
    mb_zmq_shutdown();
}

Test(mb_client, call_times_out)
{
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    mb_client_t *client = mb_client_new(endpoint);
    zmq_msg_t reply;
    int64_t t0 = tr_now_ms();
    cr_assert_eq(mb_client_call(client, "svc", "x", 1, 200, &reply), MB_ETIMEDOUT);
    int64_t waited = tr_now_ms() - t0;
    cr_assert(waited >= 190 && waited < 1000, "waited %ld ms", (long)waited);
    mb_client_destroy(&client);
    zmq_close(broker);
    mb_zmq_shutdown();
}

Test(mb_client, send_fails_fast_while_the_broker_is_down)
{
    /* Nothing listens on port 1: with ZMQ_IMMEDIATE nothing is queued. */
    mb_client_t *client = mb_client_new("tcp://127.0.0.1:1");
    cr_assert_not_null(client, "connect is asynchronous: the endpoint is valid");
    cr_assert_eq(mb_client_send(client, "svc", "x", 1), MB_EAGAIN);
    zmq_msg_t reply;
    cr_assert_eq(mb_client_call(client, "svc", "x", 1, 100, &reply), MB_ETIMEDOUT);
    mb_client_destroy(&client);
    mb_zmq_shutdown();
}

Test(mb_client, malformed_replies_are_dropped_and_counted)
{
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    mb_client_t *client = mb_client_new(endpoint);
    zmq_msg_t reply;
    /* learn the client's routing id from one request */
    while (mb_client_send(client, "svc", "hello", 5) == MB_EAGAIN)
        nanosleep(&(struct timespec){.tv_nsec = 5000000}, NULL);
    tr_msg_t from;
    cr_assert(tr_recv(broker, &from, 2000));

    TR_SEND_TO(broker, &from, "junk");                               /* one frame */
    TR_SEND_TO(broker, &from, "x", MDPC_CLIENT, "svc", "b");         /* delimiter not empty */
    TR_SEND_TO(broker, &from, "", "MDPC02", "svc", "b");             /* wrong protocol */
    TR_SEND_TO(broker, &from, "", MDPC_CLIENT, "svc");               /* no body */
    TR_SEND_TO(broker, &from, "", MDPC_CLIENT, "svc", "b", "extra"); /* two body frames */
    TR_SEND_TO(broker, &from, "", MDPC_CLIENT);                      /* no service */
    TR_SEND_TO(broker, &from, "", MDPC_CLIENT, "svc", "good");

    int malformed = 0;
    int64_t deadline = tr_now_ms() + 2000;
    for (;;) {
        int rc = mb_client_recv(client, &reply);
        if (rc == MB_EPROTO) {
            malformed++;
            continue;
        }
        if (rc == 0)
            break;
        cr_assert_eq(rc, MB_EAGAIN);
        cr_assert(tr_now_ms() < deadline, "good reply arrived");
        zmq_poll(&(zmq_pollitem_t){.socket = mb_client_socket(client), .events = ZMQ_POLLIN}, 1,
                 100);
    }
    cr_assert_eq(malformed, 6);
    cr_assert_eq(mb_client_dropped(client), 6);
    cr_assert_eq(zmq_msg_size(&reply), 4);
    cr_assert_eq(memcmp(zmq_msg_data(&reply), "good", 4), 0);
    zmq_msg_close(&reply);
    tr_free(&from);
    mb_client_destroy(&client);
    zmq_close(broker);
    mb_zmq_shutdown();
}

Test(mb_client, many_requests_in_flight)
{
    enum { N = 2000 };
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    answerer_t answerer = {.router = broker, .count = N};
    pthread_t thread;
    pthread_create(&thread, NULL, s_answer, &answerer);
    mb_client_t *client = mb_client_new(endpoint);
    zmq_pollitem_t item = {.socket = mb_client_socket(client), .events = ZMQ_POLLOUT};
    zmq_poll(&item, 1, 2000); /* wait for the connection */
    for (int i = 0; i < N; i++) {
        char body[16];
        snprintf(body, sizeof body, "%d", i);
        cr_assert_eq(mb_client_send(client, "svc", body, strlen(body)), 0, "send %d", i);
    }
    static char seen[N];
    int got = 0;
    while (got < N) {
        item.events = ZMQ_POLLIN;
        cr_assert_eq(zmq_poll(&item, 1, 5000), 1, "after %d replies", got);
        zmq_msg_t reply;
        while (mb_client_recv(client, &reply) == 0) {
            char text[32] = {0};
            memcpy(text, zmq_msg_data(&reply),
                   zmq_msg_size(&reply) < 31 ? zmq_msg_size(&reply) : 31);
            zmq_msg_close(&reply);
            int n = atoi(text + 3);
            cr_assert(n >= 0 && n < N && !seen[n], "reply %s", text);
            seen[n] = 1;
            got++;
        }
    }
    pthread_join(thread, NULL);
    mb_client_destroy(&client);
    zmq_close(broker);
    mb_zmq_shutdown();
}

Test(mb_client, reconnects_when_the_broker_comes_back)
{
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    mb_client_t *client = mb_client_new(endpoint);
    answerer_t answerer = {.router = broker, .count = 1};
    pthread_t thread;
    pthread_create(&thread, NULL, s_answer, &answerer);
    zmq_msg_t reply;
    cr_assert_eq(mb_client_call(client, "svc", "one", 3, 2000, &reply), 0);
    zmq_msg_close(&reply);
    pthread_join(thread, NULL);

    /* broker restarts on the same port */
    zmq_close(broker);
    nanosleep(&(struct timespec){.tv_nsec = 200000000}, NULL);
    broker = zmq_socket(mb_zmq_context(), ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(broker, ZMQ_LINGER, &linger, sizeof linger);
    cr_assert_eq(zmq_bind(broker, endpoint), 0, "rebind %s", endpoint);
    answerer.router = broker;
    pthread_create(&thread, NULL, s_answer, &answerer);
    int64_t t0 = tr_now_ms();
    cr_assert_eq(mb_client_call(client, "svc", "two", 3, 3000, &reply), 0);
    cr_assert(tr_now_ms() - t0 < 2000, "found again within the 1 s reconnect cap");
    cr_assert_eq(memcmp(zmq_msg_data(&reply), "re:two", 6), 0);
    zmq_msg_close(&reply);
    pthread_join(thread, NULL);
    mb_client_destroy(&client);
    zmq_close(broker);
    mb_zmq_shutdown();
}

Test(mb_client, sigterm_interrupts_a_call)
{
    mb_signal_install();
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    mb_client_t *client = mb_client_new(endpoint);
    timer_t timer;
    struct sigevent ev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGTERM};
    timer_create(CLOCK_MONOTONIC, &ev, &timer);
    timer_settime(timer, 0, &(struct itimerspec){.it_value = {.tv_nsec = 100000000}}, NULL);
    zmq_msg_t reply;
    int64_t t0 = tr_now_ms();
    cr_assert_eq(mb_client_call(client, "svc", "x", 1, 10000, &reply), MB_EINTR);
    cr_assert(tr_now_ms() - t0 < 2000);
    timer_delete(timer);
    mb_client_destroy(&client);
    zmq_close(broker);
    mb_zmq_shutdown();
}

Test(mb_client, refuses_bad_arguments)
{
    cr_assert_null(mb_client_new("no-such-transport://x"));
    cr_assert_null(mb_client_new(NULL));
    mb_client_t *client = mb_client_new("tcp://127.0.0.1:1");
    char long_name[300];
    memset(long_name, 's', 256);
    long_name[256] = '\0';
    cr_assert_eq(mb_client_send(client, "", "x", 1), MB_EINVAL);
    cr_assert_eq(mb_client_send(client, NULL, "x", 1), MB_EINVAL);
    cr_assert_eq(mb_client_send(client, long_name, "x", 1), MB_EINVAL);
    cr_assert(mb_client_fd(client) >= 0);
    mb_client_destroy(&client);
    mb_zmq_shutdown();
}

/* ---- end to end: client -> relay -> worker -------------------------------- */

typedef struct {
    char endpoint[256];
    int served;
} worker_arg_t;

static void *s_upper_worker(void *arg)
{
    worker_arg_t *w = arg;
    mb_worker_opts_t opts = {.heartbeat_ms = 50, .liveness = 3};
    mb_worker_t *worker = mb_worker_new(w->endpoint, "upper", &opts);
    zmq_msg_t body;
    while (mb_worker_recv(worker, &body) == 0) {
        char out[64];
        size_t n = zmq_msg_size(&body) < 64 ? zmq_msg_size(&body) : 64;
        for (size_t i = 0; i < n; i++) {
            char c = ((char *)zmq_msg_data(&body))[i];
            out[i] = c >= 'a' && c <= 'z' ? (char)(c - 32) : c;
        }
        zmq_msg_close(&body);
        mb_worker_reply(worker, out, n);
        w->served++;
    }
    mb_worker_destroy(&worker);
    return NULL;
}

Test(mb_client, client_and_worker_through_a_relay)
{
    /* Two ROUTERs and a few lines of relaying: the smallest MDP broker. */
    char client_ep[256], worker_ep[256];
    void *front = tr_bind(client_ep, sizeof client_ep);
    void *back = tr_bind(worker_ep, sizeof worker_ep);
    worker_arg_t w = {.served = 0};
    snprintf(w.endpoint, sizeof w.endpoint, "%s", worker_ep);
    pthread_t thread;
    pthread_create(&thread, NULL, s_upper_worker, &w);

    tr_msg_t ready;
    do
        cr_assert(tr_recv(back, &ready, 2000));
    while (!tr_frame_is(&ready, 3, "\x01", 1));
    cr_assert_str_eq(ready.data[4], "upper");

    mb_client_t *client = mb_client_new(client_ep);
    while (mb_client_send(client, "upper", "hello bus", 9) == MB_EAGAIN)
        nanosleep(&(struct timespec){.tv_nsec = 5000000}, NULL);

    tr_msg_t req, rep;
    cr_assert(tr_recv(front, &req, 2000));
    /* client address frame travels through the worker and back */
    const void *to_worker[] = {ready.data[0], "", MDPW_WORKER, "\x02",
                               req.data[0],   "", req.data[4]};
    size_t to_worker_sizes[] = {ready.size[0], 0, 6, 1, req.size[0], 0, req.size[4]};
    tr_send(back, 7, to_worker, to_worker_sizes);
    do
        cr_assert(tr_recv(back, &rep, 2000));
    while (!tr_frame_is(&rep, 3, "\x03", 1));
    cr_assert(tr_frame_is(&rep, 4, req.data[0], req.size[0]));
    const void *to_client[] = {rep.data[4], "", MDPC_CLIENT, "upper", rep.data[6]};
    size_t to_client_sizes[] = {rep.size[4], 0, 6, 5, rep.size[6]};
    tr_send(front, 5, to_client, to_client_sizes);

    zmq_pollitem_t item = {.socket = mb_client_socket(client), .events = ZMQ_POLLIN};
    cr_assert_eq(zmq_poll(&item, 1, 2000), 1);
    zmq_msg_t body;
    cr_assert_eq(mb_client_recv(client, &body), 0);
    cr_assert_eq(zmq_msg_size(&body), 9);
    cr_assert_eq(memcmp(zmq_msg_data(&body), "HELLO BUS", 9), 0);
    zmq_msg_close(&body);

    mb_signal_install();
    mb_signal_request_stop();
    pthread_kill(thread, SIGTERM);
    pthread_join(thread, NULL);
    cr_assert_eq(w.served, 1);
    tr_free(&ready);
    tr_free(&req);
    tr_free(&rep);
    mb_client_destroy(&client);
    zmq_close(front);
    zmq_close(back);
    mb_zmq_shutdown();
}
