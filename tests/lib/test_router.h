/*  test_router — a raw ROUTER socket playing the broker in lib tests, and
    helpers to read and write whole multipart messages. Header-only: each
    test binary includes it once. */
#ifndef TEST_ROUTER_H
#define TEST_ROUTER_H

#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "mb_zmq.h"

#define TR_MAX_FRAMES 16

typedef struct {
    int count;                     /* frames received */
    size_t size[TR_MAX_FRAMES];    /* size of each frame */
    char data[TR_MAX_FRAMES][256]; /* first 255 bytes of each, NUL-terminated */
    zmq_msg_t body;                /* the last frame, whole (closed by tr_free) */
} tr_msg_t;

static inline int64_t tr_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*  Binds a ROUTER on tcp://127.0.0.1:* and writes its endpoint. */
static inline void *tr_bind(char *endpoint, size_t size)
{
    void *router = zmq_socket(mb_zmq_context(), ZMQ_ROUTER);
    int linger = 0, mandatory = 1;
    zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(router, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory);
    cr_assert_eq(zmq_bind(router, "tcp://127.0.0.1:*"), 0);
    zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, endpoint, &size);
    return router;
}

/*  Receives one whole message within `timeout_ms`. Returns false on
    timeout. */
static inline bool tr_recv(void *socket, tr_msg_t *msg, int timeout_ms)
{
    memset(msg, 0, sizeof *msg);
    zmq_msg_init(&msg->body);
    zmq_pollitem_t item = {.socket = socket, .events = ZMQ_POLLIN};
    if (zmq_poll(&item, 1, timeout_ms) <= 0)
        return false;
    for (;;) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        cr_assert(zmq_msg_recv(&frame, socket, 0) >= 0);
        int i = msg->count < TR_MAX_FRAMES ? msg->count : TR_MAX_FRAMES - 1;
        size_t n = zmq_msg_size(&frame);
        msg->size[i] = n;
        memcpy(msg->data[i], zmq_msg_data(&frame), n < 255 ? n : 255);
        msg->data[i][n < 255 ? n : 255] = '\0';
        msg->count++;
        bool more = zmq_msg_more(&frame);
        zmq_msg_close(&msg->body);
        zmq_msg_init(&msg->body);
        zmq_msg_move(&msg->body, &frame);
        zmq_msg_close(&frame);
        if (!more)
            return true;
    }
}

static inline void tr_free(tr_msg_t *msg)
{
    zmq_msg_close(&msg->body);
}

/*  True when frame i holds exactly `len` bytes equal to `bytes`. */
static inline bool tr_frame_is(const tr_msg_t *msg, int i, const void *bytes, size_t len)
{
    return i < msg->count && msg->size[i] == len && memcmp(msg->data[i], bytes, len) == 0;
}

/*  Sends a message of `n` frames given as (pointer, size) pairs. */
static inline void tr_send(void *socket, int n, const void *const *frames, const size_t *sizes)
{
    for (int i = 0; i < n; i++)
        cr_assert(zmq_send(socket, frames[i], sizes[i], i < n - 1 ? ZMQ_SNDMORE : 0) >= 0,
                  "send frame %d: %s", i, zmq_strerror(zmq_errno()));
}

#define TR_SEND(socket, ...)                                                                       \
    do {                                                                                           \
        const void *tr_f_[] = {__VA_ARGS__};                                                       \
        size_t tr_s_[sizeof tr_f_ / sizeof tr_f_[0]];                                              \
        for (size_t tr_i_ = 0; tr_i_ < sizeof tr_f_ / sizeof tr_f_[0]; tr_i_++)                    \
            tr_s_[tr_i_] = strlen(tr_f_[tr_i_]);                                                   \
        tr_send(socket, (int)(sizeof tr_f_ / sizeof tr_f_[0]), tr_f_, tr_s_);                      \
    } while (0)

/*  Sends to the peer that sent `from` (its routing id is from's frame 0)
    a message whose other frames are C strings. */
#define TR_SEND_TO(router, from, ...)                                                              \
    do {                                                                                           \
        const void *tr_f_[] = {(from)->data[0], __VA_ARGS__};                                      \
        size_t tr_s_[sizeof tr_f_ / sizeof tr_f_[0]];                                              \
        tr_s_[0] = (from)->size[0];                                                                \
        for (size_t tr_i_ = 1; tr_i_ < sizeof tr_f_ / sizeof tr_f_[0]; tr_i_++)                    \
            tr_s_[tr_i_] = strlen(tr_f_[tr_i_]);                                                   \
        tr_send(router, (int)(sizeof tr_f_ / sizeof tr_f_[0]), tr_f_, tr_s_);                      \
    } while (0)

#endif
