/*  mb_worker: an MDP/0.1 worker, checked frame by frame against RFC 7 by a
    raw ROUTER socket playing the broker. */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mb_envelope.h"
#include "mb_error.h"
#include "mb_signal.h"
#include "mb_worker.h"
#include "mdp.h"
#include "test_router.h"

/* ---- an echo worker running in a thread ----------------------------------- */

typedef struct {
    char endpoint[256];
    mb_worker_opts_t opts;
    atomic_int handled; /* requests returned by mb_worker_recv */
    int rc;             /* what ended the loop */
    unsigned long reconnects;
    pthread_t thread;
} echo_t;

static void *s_echo_main(void *arg)
{
    echo_t *echo = arg;
    mb_worker_t *worker = mb_worker_new(echo->endpoint, "echo", &echo->opts);
    cr_assert_not_null(worker);
    zmq_msg_t body;
    while ((echo->rc = mb_worker_recv(worker, &body)) == 0) {
        char reply[300];
        size_t n = zmq_msg_size(&body) < 200 ? zmq_msg_size(&body) : 200;
        memcpy(reply, "echo:", 5);
        memcpy(reply + 5, zmq_msg_data(&body), n);
        zmq_msg_close(&body);
        atomic_fetch_add(&echo->handled, 1);
        mb_worker_reply(worker, reply, 5 + n);
    }
    echo->reconnects = mb_worker_reconnects(worker);
    mb_worker_destroy(&worker);
    return NULL;
}

static void s_echo_start(echo_t *echo, const char *endpoint, int heartbeat_ms, int liveness,
                         int reconnect_min_ms)
{
    memset(echo, 0, sizeof *echo);
    snprintf(echo->endpoint, sizeof echo->endpoint, "%s", endpoint);
    echo->opts = (mb_worker_opts_t){.heartbeat_ms = heartbeat_ms,
                                    .liveness = liveness,
                                    .reconnect_min_ms = reconnect_min_ms,
                                    .reconnect_max_ms = reconnect_min_ms * 4};
    pthread_create(&echo->thread, NULL, s_echo_main, echo);
}

static void s_echo_stop(echo_t *echo)
{
    /* As SIGTERM would: the flag, and a signal that wakes the worker's poll. */
    mb_signal_install();
    mb_signal_request_stop();
    pthread_kill(echo->thread, SIGTERM);
    pthread_join(echo->thread, NULL);
    cr_assert_eq(echo->rc, MB_EINTR);
}

/*  Receives until a message with command `command` arrives (skipping
    heartbeats unless asked for). */
static bool s_recv_command(void *router, tr_msg_t *msg, char command, int timeout_ms)
{
    int64_t deadline = tr_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - tr_now_ms();
        if (left <= 0 || !tr_recv(router, msg, (int)left))
            return false;
        if (msg->count >= 4 && msg->size[3] == 1 && msg->data[3][0] == command)
            return true;
        tr_free(msg);
    }
}

/*  Asserts `msg` is [id][empty]["MDPW01"][command]... as RFC 7 says. */
static void s_assert_worker_frame(const tr_msg_t *msg, char command, int frames)
{
    cr_assert_eq(msg->count, frames, "frames of command %d", command);
    cr_assert(msg->size[0] > 0, "routing id");
    cr_assert(tr_frame_is(msg, 1, "", 0), "empty delimiter");
    cr_assert(tr_frame_is(msg, 2, MDPW_WORKER, 6), "protocol header");
    cr_assert(tr_frame_is(msg, 3, &command, 1), "command byte");
}

Test(mb_worker, usage)
{
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    echo_t echo;
    s_echo_start(&echo, endpoint, 1000, 3, 100);

    /* The worker says READY with its service name. */
    tr_msg_t ready;
    cr_assert(s_recv_command(broker, &ready, MDPW_READY, 2000), "READY");
    s_assert_worker_frame(&ready, MDPW_READY, 6);
    cr_assert(tr_frame_is(&ready, 4, "echo", 4));
    cr_assert(tr_frame_is(&ready, 5, MB_WORKER_OPT_COMPACT, strlen(MB_WORKER_OPT_COMPACT)),
              "the compact-framing option (mb_worker.h)");

    /* REQUEST: [id][empty][MDPW01][0x02][client][empty][body] */
    TR_SEND_TO(broker, &ready, "", MDPW_WORKER, "\x02", "client-1", "", "hello");
    tr_msg_t reply;
    cr_assert(s_recv_command(broker, &reply, MDPW_REPLY, 2000), "REPLY");
    s_assert_worker_frame(&reply, MDPW_REPLY, 7);
    cr_assert(tr_frame_is(&reply, 0, ready.data[0], ready.size[0]), "same worker");
    cr_assert(tr_frame_is(&reply, 4, "client-1", 8), "client address echoed");
    cr_assert(tr_frame_is(&reply, 5, "", 0), "empty delimiter before the body");
    cr_assert(tr_frame_is(&reply, 6, "echo:hello", 10));

    s_echo_stop(&echo);
    cr_assert_eq(atomic_load(&echo.handled), 1);
    tr_free(&ready);
    tr_free(&reply);
    zmq_close(broker);
    mb_zmq_shutdown();
}

/*  Compact framing (mb_worker.h): a broker that sends [REQUEST][client]
    [body]... is answered [REPLY][client][body] per request; classic
    REQUESTs from it are still understood. */
static bool s_recv_compact(void *broker, tr_msg_t *msg, int timeout_ms)
{
    for (;;) {
        if (!tr_recv(broker, msg, timeout_ms))
            return false;
        if (msg->size[1] != 0 || !tr_frame_is(msg, 3, "\x04", 1))
            return true;
        tr_free(msg); /* a HEARTBEAT */
    }
}

Test(mb_worker, answers_compact_requests_compactly)
{
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    echo_t echo;
    s_echo_start(&echo, endpoint, 1000, 3, 100);
    tr_msg_t ready;
    cr_assert(s_recv_command(broker, &ready, MDPW_READY, 2000), "READY");

    TR_SEND_TO(broker, &ready, "\x02", "client-1", "hello");
    tr_msg_t reply;
    cr_assert(s_recv_compact(broker, &reply, 2000), "compact REPLY");
    cr_assert_eq(reply.count, 4, "[id][REPLY][client][body], got %d frames", reply.count);
    cr_assert(tr_frame_is(&reply, 1, "\x03", 1));
    cr_assert(tr_frame_is(&reply, 2, "client-1", 8));
    cr_assert(tr_frame_is(&reply, 3, "echo:hello", 10));
    tr_free(&reply);

    /* A classic REQUEST is still read; the reply stays compact. */
    TR_SEND_TO(broker, &ready, "", MDPW_WORKER, "\x02", "client-2", "", "again");
    cr_assert(s_recv_compact(broker, &reply, 2000));
    cr_assert_eq(reply.count, 4);
    cr_assert(tr_frame_is(&reply, 2, "client-2", 8));
    cr_assert(tr_frame_is(&reply, 3, "echo:again", 10));
    tr_free(&reply);

    /* Several [client][body] pairs in one REQUEST are requests in turn;
       their replies, done with nothing more waiting, go in one REPLY. */
    TR_SEND_TO(broker, &ready, "\x02", "client-3", "one", "client-4", "two");
    cr_assert(s_recv_compact(broker, &reply, 2000));
    cr_assert(tr_frame_is(&reply, 1, "\x03", 1));
    cr_assert(tr_frame_is(&reply, 2, "client-3", 8));
    cr_assert(tr_frame_is(&reply, 3, "echo:one", 8));
    if (reply.count == 4) {
        /* Only when the test thread was held back over 1 ms in between. */
        tr_free(&reply);
        cr_assert(s_recv_compact(broker, &reply, 2000));
        cr_assert(tr_frame_is(&reply, 2, "client-4", 8));
        cr_assert(tr_frame_is(&reply, 3, "echo:two", 8));
    } else {
        cr_assert_eq(reply.count, 6, "[id][REPLY] and two pairs, got %d frames", reply.count);
        cr_assert(tr_frame_is(&reply, 4, "client-4", 8));
        cr_assert(tr_frame_is(&reply, 5, "echo:two", 8));
    }
    tr_free(&reply);

    /* An empty client frame names the client of the pair before; replies
       to the same client as the one before name it so too. */
    TR_SEND_TO(broker, &ready, "\x02", "client-7", "a", "", "b");
    cr_assert(s_recv_compact(broker, &reply, 2000));
    cr_assert(tr_frame_is(&reply, 2, "client-7", 8));
    cr_assert(tr_frame_is(&reply, 3, "echo:a", 6));
    if (reply.count == 4) { /* the test thread was held back over 1 ms */
        tr_free(&reply);
        cr_assert(s_recv_compact(broker, &reply, 2000));
        cr_assert(tr_frame_is(&reply, 2, "client-7", 8));
        cr_assert(tr_frame_is(&reply, 3, "echo:b", 6));
    } else {
        cr_assert_eq(reply.count, 6);
        cr_assert(tr_frame_is(&reply, 4, "", 0));
        cr_assert(tr_frame_is(&reply, 5, "echo:b", 6));
    }
    tr_free(&reply);

    /* A trailing frame without its pair is dropped; what came before is
       answered, and the worker goes on. */
    TR_SEND_TO(broker, &ready, "\x02", "client-5", "three", "stray");
    cr_assert(s_recv_compact(broker, &reply, 2000));
    cr_assert(tr_frame_is(&reply, 2, "client-5", 8));
    tr_free(&reply);
    TR_SEND_TO(broker, &ready, "\x02", "client-6", "four");
    cr_assert(s_recv_compact(broker, &reply, 2000));
    cr_assert(tr_frame_is(&reply, 2, "client-6", 8));
    tr_free(&reply);

    s_echo_stop(&echo);
    cr_assert_eq(atomic_load(&echo.handled), 8);
    tr_free(&ready);
    zmq_close(broker);
    mb_zmq_shutdown();
}

/*  A READY with the compact option refused at once (a broker that does not
    take the extra frame) is followed by a plain RFC 7 READY, at once; the
    one after that tries the option again. */
Test(mb_worker, says_a_plain_ready_after_a_refused_compact_one)
{
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    echo_t echo;
    s_echo_start(&echo, endpoint, 1000, 3, 5000);
    tr_msg_t first, second, third;
    cr_assert(s_recv_command(broker, &first, MDPW_READY, 2000));
    s_assert_worker_frame(&first, MDPW_READY, 6);
    TR_SEND_TO(broker, &first, "", MDPW_WORKER, "\x05");
    int64_t t0 = tr_now_ms();
    cr_assert(s_recv_command(broker, &second, MDPW_READY, 2000), "plain READY");
    cr_assert(tr_now_ms() - t0 < 1000, "at once");
    s_assert_worker_frame(&second, MDPW_READY, 5);
    cr_assert(tr_frame_is(&second, 4, "echo", 4));

    /* Accepted as plain: a classic REQUEST gets a classic REPLY. */
    TR_SEND_TO(broker, &second, "", MDPW_WORKER, "\x02", "c", "", "x");
    tr_msg_t reply;
    cr_assert(s_recv_command(broker, &reply, MDPW_REPLY, 2000));
    s_assert_worker_frame(&reply, MDPW_REPLY, 7);
    tr_free(&reply);

    /* That connection was heard from: after its DISCONNECT the option is
       asked for again. */
    TR_SEND_TO(broker, &second, "", MDPW_WORKER, "\x05");
    cr_assert(s_recv_command(broker, &third, MDPW_READY, 2000));
    s_assert_worker_frame(&third, MDPW_READY, 6);

    s_echo_stop(&echo);
    tr_free(&first);
    tr_free(&second);
    tr_free(&third);
    zmq_close(broker);
    mb_zmq_shutdown();
}

Test(mb_worker, requests_are_answered_in_turn)
{
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    echo_t echo;
    s_echo_start(&echo, endpoint, 1000, 3, 100);
    tr_msg_t ready;
    cr_assert(s_recv_command(broker, &ready, MDPW_READY, 2000));
    for (int i = 0; i < 50; i++) {
        char body[32], client[32];
        snprintf(body, sizeof body, "n%d", i);
        snprintf(client, sizeof client, "c%d", i);
        TR_SEND_TO(broker, &ready, "", MDPW_WORKER, "\x02", client, "", body);
    }
    for (int i = 0; i < 50; i++) {
        tr_msg_t reply;
        char expect[40], client[32];
        snprintf(expect, sizeof expect, "echo:n%d", i);
        snprintf(client, sizeof client, "c%d", i);
        cr_assert(s_recv_command(broker, &reply, MDPW_REPLY, 2000), "reply %d", i);
        cr_assert_str_eq(reply.data[4], client);
        cr_assert_str_eq(reply.data[6], expect);
        tr_free(&reply);
    }
    s_echo_stop(&echo);
    tr_free(&ready);
    zmq_close(broker);
    mb_zmq_shutdown();
}

Test(mb_worker, heartbeats_while_idle_and_stays_connected)
{
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    echo_t echo;
    /* Liveness 10: a loaded CI machine may hold this thread (the broker)
       back for a few hundred ms; that must not look like a dead broker. */
    s_echo_start(&echo, endpoint, 50, 10, 100);
    tr_msg_t ready;
    cr_assert(s_recv_command(broker, &ready, MDPW_READY, 2000));

    /* For 600 ms the broker heartbeats too; the worker must heartbeat
       about every 50 ms and never reconnect. */
    int heartbeats = 0, readies = 0;
    int64_t until = tr_now_ms() + 600, next_beat = 0;
    while (tr_now_ms() < until) {
        if (tr_now_ms() >= next_beat) {
            TR_SEND_TO(broker, &ready, "", MDPW_WORKER, "\x04");
            next_beat = tr_now_ms() + 50;
        }
        tr_msg_t msg;
        if (tr_recv(broker, &msg, 10)) {
            if (msg.count == 4 && tr_frame_is(&msg, 3, "\x04", 1)) {
                s_assert_worker_frame(&msg, MDPW_HEARTBEAT, 4);
                heartbeats++;
            } else if (tr_frame_is(&msg, 3, "\x01", 1))
                readies++;
            tr_free(&msg);
        }
    }
    cr_assert(heartbeats >= 4 && heartbeats <= 15, "%d heartbeats in 600 ms", heartbeats);
    cr_assert_eq(readies, 0, "no reconnect while the broker answers");
    s_echo_stop(&echo);
    cr_assert_eq(echo.reconnects, 0);
    tr_free(&ready);
    zmq_close(broker);
    mb_zmq_shutdown();
}

Test(mb_worker, reconnects_when_the_broker_goes_silent)
{
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    echo_t echo;
    s_echo_start(&echo, endpoint, 50, 3, 50);
    tr_msg_t first, second;
    cr_assert(s_recv_command(broker, &first, MDPW_READY, 2000));
    int64_t t0 = tr_now_ms();
    /* Silent broker: after 3 x 50 ms plus a 50 ms backoff the worker must
       start over with a new socket and a new READY. */
    cr_assert(s_recv_command(broker, &second, MDPW_READY, 3000), "second READY");
    int64_t waited = tr_now_ms() - t0;
    cr_assert(waited >= 150 && waited < 1500, "reconnected after %ld ms", (long)waited);
    cr_assert_not(tr_frame_is(&second, 0, first.data[0], first.size[0]), "a new connection");
    cr_assert(tr_frame_is(&second, 4, "echo", 4));

    /* and it works on the new connection */
    TR_SEND_TO(broker, &second, "", MDPW_WORKER, "\x02", "c", "", "again");
    tr_msg_t reply;
    cr_assert(s_recv_command(broker, &reply, MDPW_REPLY, 2000));
    cr_assert_str_eq(reply.data[6], "echo:again");
    s_echo_stop(&echo);
    cr_assert(echo.reconnects >= 1);
    tr_free(&first);
    tr_free(&second);
    tr_free(&reply);
    zmq_close(broker);
    mb_zmq_shutdown();
}

Test(mb_worker, disconnect_from_the_broker_reconnects_at_once)
{
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    echo_t echo;
    /* a 5 s backoff: only an immediate reconnect passes this test */
    s_echo_start(&echo, endpoint, 1000, 3, 5000);
    tr_msg_t first, second;
    cr_assert(s_recv_command(broker, &first, MDPW_READY, 2000));
    TR_SEND_TO(broker, &first, "", MDPW_WORKER, "\x05");
    int64_t t0 = tr_now_ms();
    cr_assert(s_recv_command(broker, &second, MDPW_READY, 2000), "READY again");
    cr_assert(tr_now_ms() - t0 < 1000);
    cr_assert_not(tr_frame_is(&second, 0, first.data[0], first.size[0]));
    s_echo_stop(&echo);
    cr_assert_eq(echo.reconnects, 1);
    tr_free(&first);
    tr_free(&second);
    zmq_close(broker);
    mb_zmq_shutdown();
}

Test(mb_worker, a_broker_refusing_every_ready_gets_backoff_not_a_hot_loop)
{
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    echo_t echo;
    s_echo_start(&echo, endpoint, 1000, 3, 100);
    /* Answer each READY with DISCONNECT for 1 s: at once, then 100, 200,
       400 ms... gives a handful of READYs, not thousands. */
    int readies = 0;
    int64_t until = tr_now_ms() + 1000;
    tr_msg_t msg;
    while (tr_now_ms() < until) {
        if (!s_recv_command(broker, &msg, MDPW_READY, (int)(until - tr_now_ms())))
            break;
        readies++;
        TR_SEND_TO(broker, &msg, "", MDPW_WORKER, "\x05");
        tr_free(&msg);
    }
    cr_assert(readies >= 2 && readies <= 8, "%d READYs in 1 s", readies);

    /* once the broker sends anything else, the worker serves requests */
    cr_assert(s_recv_command(broker, &msg, MDPW_READY, 3000));
    TR_SEND_TO(broker, &msg, "", MDPW_WORKER, "\x02", "c", "", "hi");
    tr_msg_t reply;
    cr_assert(s_recv_command(broker, &reply, MDPW_REPLY, 2000));
    cr_assert_str_eq(reply.data[6], "echo:hi");
    tr_free(&reply);
    tr_free(&msg);
    s_echo_stop(&echo);
    zmq_close(broker);
    mb_zmq_shutdown();
}

/*  Asserts `reply` is a REPLY to `client` holding a 400 bad_request envelope. */
static void s_assert_bad_request_reply(const tr_msg_t *reply, const char *client)
{
    s_assert_worker_frame(reply, MDPW_REPLY, 7);
    cr_assert_str_eq(reply->data[4], client);
    mb_reply_t rep;
    cr_assert_eq(mb_reply_decode(&rep, zmq_msg_data((zmq_msg_t *)&reply->body),
                                 zmq_msg_size((zmq_msg_t *)&reply->body), NULL),
                 0);
    cr_assert_eq(rep.status, 400);
    cr_assert_eq(rep.rid, 0);
    cr_assert_eq(memcmp(rep.code, "bad_request", rep.code_len), 0);
    mb_reply_release(&rep);
}

Test(mb_worker, requests_without_exactly_one_body_frame_get_a_400)
{
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    echo_t echo;
    s_echo_start(&echo, endpoint, 1000, 3, 100);
    tr_msg_t ready, reply;
    cr_assert(s_recv_command(broker, &ready, MDPW_READY, 2000));

    TR_SEND_TO(broker, &ready, "", MDPW_WORKER, "\x02", "two-frames", "", "part1", "part2");
    cr_assert(s_recv_command(broker, &reply, MDPW_REPLY, 2000));
    s_assert_bad_request_reply(&reply, "two-frames");
    tr_free(&reply);

    TR_SEND_TO(broker, &ready, "", MDPW_WORKER, "\x02", "no-body", "");
    cr_assert(s_recv_command(broker, &reply, MDPW_REPLY, 2000));
    s_assert_bad_request_reply(&reply, "no-body");
    tr_free(&reply);

    cr_assert_eq(atomic_load(&echo.handled), 0, "the application never saw them");
    TR_SEND_TO(broker, &ready, "", MDPW_WORKER, "\x02", "ok", "", "fine");
    cr_assert(s_recv_command(broker, &reply, MDPW_REPLY, 2000));
    cr_assert_str_eq(reply.data[6], "echo:fine");
    tr_free(&reply);
    s_echo_stop(&echo);
    tr_free(&ready);
    zmq_close(broker);
    mb_zmq_shutdown();
}

Test(mb_worker, malformed_broker_messages_are_dropped)
{
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    echo_t echo;
    s_echo_start(&echo, endpoint, 1000, 3, 100);
    tr_msg_t ready, reply;
    cr_assert(s_recv_command(broker, &ready, MDPW_READY, 2000));

    TR_SEND_TO(broker, &ready, "garbage");
    TR_SEND_TO(broker, &ready, "not-empty", MDPW_WORKER, "\x02", "c", "", "x");
    TR_SEND_TO(broker, &ready, "", "MDPW02", "\x02", "c", "", "x");
    TR_SEND_TO(broker, &ready, "", MDPW_WORKER, "\x09");
    TR_SEND_TO(broker, &ready, "", MDPW_WORKER, "\x02\x02", "c", "", "x");
    TR_SEND_TO(broker, &ready, "", MDPW_WORKER, "\x02");
    TR_SEND_TO(broker, &ready, "", MDPW_WORKER, "\x02", "c");
    TR_SEND_TO(broker, &ready, "", MDPW_WORKER, "\x02", "c", "not-empty", "x");
    TR_SEND_TO(broker, &ready, "", MDPW_WORKER, "\x01", "echo");
    TR_SEND_TO(broker, &ready, "", MDPW_WORKER, "\x02", "good", "", "body");

    cr_assert(s_recv_command(broker, &reply, MDPW_REPLY, 2000));
    cr_assert_str_eq(reply.data[4], "good");
    cr_assert_str_eq(reply.data[6], "echo:body");
    tr_free(&reply);
    s_echo_stop(&echo);
    cr_assert_eq(atomic_load(&echo.handled), 1);
    cr_assert_eq(echo.reconnects, 0);
    tr_free(&ready);
    zmq_close(broker);
    mb_zmq_shutdown();
}

Test(mb_worker, destroy_sends_disconnect)
{
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    mb_worker_t *worker = mb_worker_new(endpoint, "svc", NULL);
    cr_assert_not_null(worker);
    tr_msg_t ready, bye;
    cr_assert(s_recv_command(broker, &ready, MDPW_READY, 2000));
    mb_worker_destroy(&worker);
    cr_assert_null(worker);
    mb_worker_destroy(&worker); /* safe twice */
    cr_assert(s_recv_command(broker, &bye, MDPW_DISCONNECT, 2000), "DISCONNECT");
    s_assert_worker_frame(&bye, MDPW_DISCONNECT, 4);
    cr_assert(tr_frame_is(&bye, 0, ready.data[0], ready.size[0]));
    tr_free(&ready);
    tr_free(&bye);
    zmq_close(broker);
    mb_zmq_shutdown();
}

Test(mb_worker, stop_request_ends_recv)
{
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    mb_worker_opts_t opts = {.heartbeat_ms = 10000, .liveness = 3};
    mb_worker_t *worker = mb_worker_new(endpoint, "svc", &opts);
    mb_signal_request_stop();
    zmq_msg_t body;
    cr_assert_eq(mb_worker_recv(worker, &body), MB_EINTR);
    mb_worker_destroy(&worker);
    zmq_close(broker);
    mb_zmq_shutdown();
}

Test(mb_worker, sigterm_interrupts_a_blocked_recv)
{
    mb_signal_install();
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    mb_worker_opts_t opts = {.heartbeat_ms = 10000, .liveness = 3};
    mb_worker_t *worker = mb_worker_new(endpoint, "svc", &opts);
    timer_t timer;
    struct sigevent ev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGTERM};
    timer_create(CLOCK_MONOTONIC, &ev, &timer);
    struct itimerspec in_100ms = {.it_value = {.tv_nsec = 100 * 1000000}};
    timer_settime(timer, 0, &in_100ms, NULL);
    int64_t t0 = tr_now_ms();
    zmq_msg_t body;
    cr_assert_eq(mb_worker_recv(worker, &body), MB_EINTR);
    cr_assert(tr_now_ms() - t0 < 2000, "did not wait for the 10 s heartbeat");
    timer_delete(timer);
    mb_worker_destroy(&worker);
    zmq_close(broker);
    mb_zmq_shutdown();
}

Test(mb_worker, reply_needs_a_request)
{
    char endpoint[256];
    void *broker = tr_bind(endpoint, sizeof endpoint);
    mb_worker_t *worker = mb_worker_new(endpoint, "svc", NULL);
    cr_assert_eq(mb_worker_reply(worker, "x", 1), MB_EINVAL);
    cr_assert_eq(mb_worker_reconnects(worker), 0);
    mb_worker_destroy(&worker);
    zmq_close(broker);
    mb_zmq_shutdown();
}

Test(mb_worker, new_refuses_bad_arguments)
{
    cr_assert_null(mb_worker_new("not-an-endpoint", "svc", NULL));
    cr_assert_null(mb_worker_new("tcp://127.0.0.1:5", "", NULL));
    cr_assert_null(mb_worker_new(NULL, "svc", NULL));
    mb_zmq_shutdown();
}

Test(mb_worker, default_options_come_from_the_environment)
{
    mb_worker_opts_t opts;
    unsetenv("MUSICBUS_HEARTBEAT_MS");
    unsetenv("MUSICBUS_LIVENESS");
    mb_worker_opts_default(&opts);
    cr_assert_eq(opts.heartbeat_ms, 1000);
    cr_assert_eq(opts.liveness, 3);
    cr_assert_eq(opts.reconnect_min_ms, 100);
    cr_assert_eq(opts.reconnect_max_ms, 5000);
    setenv("MUSICBUS_HEARTBEAT_MS", "250", 1);
    setenv("MUSICBUS_LIVENESS", "5", 1);
    mb_worker_opts_default(&opts);
    cr_assert_eq(opts.heartbeat_ms, 250);
    cr_assert_eq(opts.liveness, 5);
}
