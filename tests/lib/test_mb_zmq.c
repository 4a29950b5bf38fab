/*  mb_zmq: one context, frame helpers. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mb_error.h"
#include "mb_zmq.h"

Test(mb_zmq, usage)
{
    void *ctx = mb_zmq_context();
    cr_assert_eq(mb_zmq_context(), ctx, "one context per process");
    void *out = zmq_socket(ctx, ZMQ_PAIR), *in = zmq_socket(ctx, ZMQ_PAIR);
    cr_assert_eq(zmq_bind(in, "inproc://usage"), 0);
    cr_assert_eq(zmq_connect(out, "inproc://usage"), 0);

    cr_assert_eq(mb_zmq_send(out, "MDPC01", 6, true, 0), 0);
    cr_assert_eq(mb_zmq_send(out, "body", 4, false, 0), 0);

    zmq_msg_t frame;
    zmq_msg_init(&frame);
    cr_assert_eq(zmq_msg_recv(&frame, in, 0), 6);
    cr_assert(mb_zmq_msg_eq(&frame, "MDPC01"));
    cr_assert_not(mb_zmq_msg_eq(&frame, "MDPC0"));
    cr_assert_not(mb_zmq_msg_eq(&frame, "MDPC012"));
    cr_assert(zmq_msg_more(&frame));
    zmq_msg_close(&frame);

    zmq_close(out);
    zmq_close(in);
    mb_zmq_shutdown();
}

Test(mb_zmq, drain_discards_the_rest_of_a_message)
{
    void *out = zmq_socket(mb_zmq_context(), ZMQ_PAIR),
         *in = zmq_socket(mb_zmq_context(), ZMQ_PAIR);
    zmq_bind(in, "inproc://drain");
    zmq_connect(out, "inproc://drain");
    mb_zmq_send(out, "a", 1, true, 0);
    mb_zmq_send(out, "b", 1, true, 0);
    mb_zmq_send(out, "c", 1, false, 0);
    mb_zmq_send(out, "next", 4, false, 0);

    zmq_msg_t frame;
    zmq_msg_init(&frame);
    zmq_msg_recv(&frame, in, 0);
    cr_assert(mb_zmq_msg_eq(&frame, "a"));
    mb_zmq_drain_message(in);
    zmq_msg_recv(&frame, in, 0);
    cr_assert(mb_zmq_msg_eq(&frame, "next"), "drain stopped at the message end");
    mb_zmq_drain_message(in); /* nothing more: must not block */
    zmq_msg_close(&frame);
    zmq_close(out);
    zmq_close(in);
    mb_zmq_shutdown();
}

Test(mb_zmq, send_reports_eagain_without_waiting)
{
    void *out = zmq_socket(mb_zmq_context(), ZMQ_DEALER);
    int immediate = 1;
    zmq_setsockopt(out, ZMQ_IMMEDIATE, &immediate, sizeof immediate);
    /* port 1 on loopback: nothing listens, so no connection ever completes */
    zmq_connect(out, "tcp://127.0.0.1:1");
    cr_assert_eq(mb_zmq_send(out, "x", 1, false, ZMQ_DONTWAIT), MB_EAGAIN);
    zmq_close(out);
    mb_zmq_shutdown();
}

Test(mb_zmq, shutdown_is_idempotent_and_context_can_be_remade)
{
    mb_zmq_shutdown();
    void *a = mb_zmq_context();
    cr_assert_not_null(a);
    mb_zmq_shutdown();
    mb_zmq_shutdown();
    void *b = mb_zmq_context();
    cr_assert_not_null(b);
    void *s = zmq_socket(b, ZMQ_PUB);
    cr_assert_not_null(s, "the new context works");
    zmq_close(s);
    mb_zmq_shutdown();
}

Test(mb_zmq, fd_is_the_sockets_and_minus_one_without_a_socket)
{
    void *s = zmq_socket(mb_zmq_context(), ZMQ_DEALER);
    int fd = -1;
    size_t size = sizeof fd;
    cr_assert_eq(zmq_getsockopt(s, ZMQ_FD, &fd, &size), 0);
    cr_assert_eq(mb_zmq_fd(s), fd);
    cr_assert_geq(fd, 0);
    zmq_close(s);
    mb_zmq_shutdown();
}

/*  The scheduling policy of this process's ZeroMQ I/O thread, found by
    its name; -1 when there is none. */
static int s_io_thread_policy(void)
{
    int policy = -1;
    DIR *dir = opendir("/proc/self/task");
    cr_assert_not_null(dir);
    struct dirent *e;
    while ((e = readdir(dir))) {
        char path[300], name[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(name, sizeof name, f) && strncmp(name, "ZMQbg/IO/", 9) == 0)
            policy = sched_getscheduler((pid_t)atoi(e->d_name));
        fclose(f);
    }
    closedir(dir);
    return policy;
}

/*  The I/O thread runs SCHED_BATCH unless MUSICBUS_IO_SCHED=normal. */
Test(mb_zmq, io_thread_scheduling_follows_musicbus_io_sched)
{
    const char *settings[] = {NULL, "batch", "normal"};
    const int policies[] = {SCHED_BATCH, SCHED_BATCH, SCHED_OTHER};
    for (int i = 0; i < 3; i++) {
        if (settings[i])
            setenv("MUSICBUS_IO_SCHED", settings[i], 1);
        else
            unsetenv("MUSICBUS_IO_SCHED");
        /* I/O threads start with the first socket. */
        void *socket = zmq_socket(mb_zmq_context(), ZMQ_DEALER);
        cr_assert_not_null(socket);
        /* The thread names itself, and sets its policy, once it runs. */
        int policy = s_io_thread_policy();
        for (int tries = 0; policy != policies[i] && tries < 100; tries++) {
            usleep(10000);
            policy = s_io_thread_policy();
        }
        cr_assert_eq(policy, policies[i], "MUSICBUS_IO_SCHED=%s: policy %d",
                     settings[i] ? settings[i] : "(unset)", policy);
        zmq_close(socket);
        mb_zmq_shutdown();
    }
}
