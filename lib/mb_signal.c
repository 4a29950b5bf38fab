/*  mb_signal — a stop flag set by SIGTERM and SIGINT. */
#include "mb_signal.h"

#include <signal.h>
#include <string.h>

static volatile sig_atomic_t s_stop = 0;

static void s_on_stop_signal(int signo)
{
    (void)signo;
    s_stop = 1;
}

void mb_signal_install(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = s_on_stop_signal;
    sigemptyset(&action.sa_mask);
    /* No SA_RESTART: zmq_poll, nanosleep and friends must return EINTR so the
       loop around them sees the flag without waiting for its timeout. */
    action.sa_flags = 0;
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);

    /* A peer closing a socket must give EPIPE, not kill the process. */
    struct sigaction ignore;
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    sigaction(SIGPIPE, &ignore, NULL);
}

bool mb_signal_stop_requested(void)
{
    return s_stop != 0;
}

void mb_signal_request_stop(void)
{
    s_stop = 1;
}
