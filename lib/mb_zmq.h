/*  mb_zmq — the process's ZeroMQ context and frame helpers.

    One context per process, created on first use. The hot paths (broker,
    gateway, workers) use libzmq's zmq_msg_t directly: no per-frame heap
    objects. */
#ifndef MB_ZMQ_H
#define MB_ZMQ_H

#include <stdbool.h>
#include <stddef.h>
#include <zmq.h>

/*  Returns the process-wide context (created on first call; aborts if
    libzmq cannot make one). Thread-safe. The context is not "blocky":
    sockets default to ZMQ_LINGER 0, so exit never hangs on unsent
    messages. */
void *mb_zmq_context(void);

/*  Closes the context; every socket must be closed first. Safe to call
    when no context was made. */
void mb_zmq_shutdown(void);

/*  Sends `size` bytes as one frame, with ZMQ_SNDMORE when `more`.
    Returns 0, MB_EAGAIN (ZMQ_DONTWAIT given and it would block), MB_EINTR
    (a blocking send interrupted by a signal) or MB_EIO. */
int mb_zmq_send(void *socket, const void *data, size_t size, bool more, int flags);

/*  Receives and discards the remaining frames of a message. */
void mb_zmq_drain_message(void *socket);

/*  True when frame `msg` holds exactly the bytes of string `s`. */
bool mb_zmq_msg_eq(zmq_msg_t *msg, const char *s);

/*  Returns the socket's ZMQ_FD (edge-triggered: it signals when a command
    arrives for a socket that had none pending; read until EAGAIN before
    waiting on it), or -1 with errno set. */
int mb_zmq_fd(void *socket);

#endif
