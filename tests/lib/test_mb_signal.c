/*  mb_signal: SIGTERM/SIGINT set a flag and interrupt blocking calls. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "mb_signal.h"
#include "mb_zmq.h"

Test(mb_signal, usage)
{
    mb_signal_install();
    cr_assert_not(mb_signal_stop_requested());
    raise(SIGTERM); /* the process survives and the loop sees the flag */
    cr_assert(mb_signal_stop_requested());
}

Test(mb_signal, sigint_sets_the_flag)
{
    mb_signal_install();
    raise(SIGINT);
    cr_assert(mb_signal_stop_requested());
}

Test(mb_signal, request_stop_by_hand)
{
    cr_assert_not(mb_signal_stop_requested());
    mb_signal_request_stop();
    cr_assert(mb_signal_stop_requested());
}

Test(mb_signal, sigpipe_is_ignored)
{
    mb_signal_install();
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    close(fds[0]);
    errno = 0;
    cr_assert_eq(write(fds[1], "x", 1), -1);
    cr_assert_eq(errno, EPIPE);
    close(fds[1]);
}

Test(mb_signal, zmq_poll_returns_eintr_at_once)
{
    mb_signal_install();
    void *socket = zmq_socket(mb_zmq_context(), ZMQ_PULL);
    zmq_pollitem_t item = {.socket = socket, .events = ZMQ_POLLIN};
    /* SIGTERM in 50 ms while polling for 5 s: without SA_RESTART the poll
       must give up right away. */
    timer_t id;
    struct sigevent ev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGTERM};
    cr_assert_eq(timer_create(CLOCK_MONOTONIC, &ev, &id), 0);
    struct itimerspec spec = {.it_value = {.tv_nsec = 50 * 1000000}};
    timer_settime(id, 0, &spec, NULL);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = zmq_poll(&item, 1, 5000);
    int err = errno;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    cr_assert_eq(rc, -1);
    cr_assert_eq(err, EINTR);
    cr_assert(mb_signal_stop_requested());
    cr_assert(t1.tv_sec - t0.tv_sec < 2, "returned early");
    timer_delete(id);
    zmq_close(socket);
    mb_zmq_shutdown();
}
