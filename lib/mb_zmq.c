/*  mb_zmq — the process's ZeroMQ context and frame helpers. */
#include "mb_zmq.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "mb_config.h"
#include "mb_error.h"
#include "mb_log.h"

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static void *s_context = NULL;

void *mb_zmq_context(void)
{
    /* A mutex rather than pthread_once so mb_zmq_shutdown() can reset it;
       this runs once per socket, never per message. */
    pthread_mutex_lock(&s_lock);
    if (!s_context) {
        s_context = zmq_ctx_new();
        if (!s_context) {
            mb_error(0, "zmq_ctx_new failed: %s", zmq_strerror(errno));
            abort();
        }
        /* Not blocky: sockets default to linger 0, so a forgotten
           ZMQ_LINGER can never make zmq_ctx_term() hang at exit. */
        zmq_ctx_set(s_context, ZMQ_BLOCKY, 0);
        /* The I/O thread runs SCHED_BATCH: woken by a send or by data from
           the network, it no longer preempts the thread running on that
           CPU; it runs on an idle CPU at once, else when the running
           thread sleeps or its slice ends. When the stack itself keeps
           the CPUs busy, messages then accumulate and each wake-up moves
           a batch: gateway_bench on 2 vCPUs, 47 100 req/s against 38 900 to
           42 400 with "normal" (3 runs each, alternated), 26 against 29 us
           of CPU per request over all threads. The price: next to other
           programs that keep every CPU busy, a wake-up waits for their
           slice to end (two busy loops beside the stack: 15 000-18 000
           req/s and p99 17-22 ms, against 20 000-33 000 and 8-9 ms).
           There, MUSICBUS_IO_SCHED=normal. No privilege is needed either way. */
        const char *io_sched = mb_config_env(MB_ENV_IO_SCHED, MB_DEFAULT_IO_SCHED);
        if (strcmp(io_sched, "normal") != 0) {
            if (strcmp(io_sched, "batch") != 0)
                mb_warn(0, "%s=%s is neither batch nor normal: batch", MB_ENV_IO_SCHED, io_sched);
            zmq_ctx_set(s_context, ZMQ_THREAD_SCHED_POLICY, SCHED_BATCH);
        }
    }
    void *context = s_context;
    pthread_mutex_unlock(&s_lock);
    return context;
}

void mb_zmq_shutdown(void)
{
    pthread_mutex_lock(&s_lock);
    if (s_context) {
        while (zmq_ctx_term(s_context) == -1 && errno == EINTR)
            ;
        s_context = NULL;
    }
    pthread_mutex_unlock(&s_lock);
}

int mb_zmq_send(void *socket, const void *data, size_t size, bool more, int flags)
{
    if (zmq_send(socket, data, size, flags | (more ? ZMQ_SNDMORE : 0)) >= 0)
        return 0;
    if (errno == EAGAIN)
        return MB_EAGAIN;
    if (errno == EINTR)
        return MB_EINTR;
    return MB_EIO;
}

void mb_zmq_drain_message(void *socket)
{
    int more = 0;
    size_t more_size = sizeof more;
    if (zmq_getsockopt(socket, ZMQ_RCVMORE, &more, &more_size) != 0)
        return;
    while (more) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        /* The rest of a multipart message is already here: frames of one
           message arrive together, so this never waits. */
        if (zmq_msg_recv(&frame, socket, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&frame);
            return;
        }
        more = zmq_msg_more(&frame);
        zmq_msg_close(&frame);
    }
}

bool mb_zmq_msg_eq(zmq_msg_t *msg, const char *s)
{
    size_t len = strlen(s);
    return zmq_msg_size(msg) == len && memcmp(zmq_msg_data(msg), s, len) == 0;
}

int mb_zmq_fd(void *socket)
{
    int fd = -1;
    size_t size = sizeof fd;
    return zmq_getsockopt(socket, ZMQ_FD, &fd, &size) == 0 ? fd : -1;
}
