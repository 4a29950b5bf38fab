/*  gateway/ws: the handshake key, and connections on one end of a socket
    pair — frames out, pings, a context only while busy, the bounded
    queue (a slow client is closed, a fast one gets everything), token
    expiry and ping timeouts with their close codes. Frames are written
    and read by hand here, so the test does not share wslay with the
    code it tests. */
#include <criterion/criterion.h>
#include <errno.h>
#include <msgpack.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mb_error.h"
#include "mb_msgpack.h"
#include "ws.h"

Test(gw_ws, accept_key)
{
    char out[GW_WS_ACCEPT_LEN + 1];
    /* RFC 6455 section 1.3's example. */
    cr_assert_eq(gw_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out), 0);
    cr_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    cr_assert_eq(gw_ws_accept_key(NULL, out), MB_EINVAL);
    cr_assert_eq(gw_ws_accept_key("", out), MB_EINVAL);
    cr_assert_eq(gw_ws_accept_key("dGhlIHNhbXBsZSBub25j", out), MB_EINVAL, "12 bytes");
    cr_assert_eq(gw_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ=!", out), MB_EINVAL);
}

/* ---- a hand-made client ---------------------------------------------------------- */

static gw_ws_t *s_ws(size_t queue_frames, int ping_ms)
{
    gw_ws_config_t cfg;
    gw_ws_config_default(&cfg);
    cfg.bus = NULL; /* no feed: events are handed to notify directly */
    cfg.queue_frames = queue_frames;
    cfg.ping_ms = ping_ms;
    cfg.leeway_s = 0;
    gw_ws_t *ws = gw_ws_new(&cfg, NULL);
    cr_assert_not_null(ws);
    return ws;
}

/*  Adopts one end of a socket pair for `user`; returns the other end. */
static int s_connect(gw_ws_t *ws, const char *user, int64_t exp)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    mb_jwt_claims_t claims = {.exp = exp, .roles = MB_ROLE_USER};
    snprintf(claims.sub, sizeof claims.sub, "%s", user);
    snprintf(claims.sid, sizeof claims.sid, "s");
    snprintf(claims.tier, sizeof claims.tier, "free");
    cr_assert_eq(gw_ws_adopt(ws, sv[0], &claims, false, 0, NULL, 0), 0);
    return sv[1];
}

/*  Sends one masked client frame. */
static void s_send_frame(int fd, int opcode, const void *payload, size_t len)
{
    uint8_t frame[256];
    cr_assert_lt(len, 126);
    frame[0] = (uint8_t)(0x80 | opcode);
    frame[1] = (uint8_t)(0x80 | len);
    uint8_t mask[4] = {1, 2, 3, 4};
    memcpy(frame + 2, mask, 4);
    for (size_t i = 0; i < len; i++)
        frame[6 + i] = ((const uint8_t *)payload)[i] ^ mask[i % 4];
    cr_assert_eq(write(fd, frame, 6 + len), (ssize_t)(6 + len));
}

static bool s_read_exact(gw_ws_t *ws, int fd, uint8_t *buf, size_t len, int timeout_ms)
{
    size_t got = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (got < len) {
        gw_ws_run(ws);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        poll(&p, 1, 5);
        ssize_t n = recv(fd, buf + got, len - got, MSG_DONTWAIT);
        if (n > 0)
            got += (size_t)n;
        else if (n == 0)
            return false;
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > timeout_ms)
            return false;
    }
    return true;
}

/*  Reads one server frame (unmasked): its opcode, payload NUL-terminated
    in buf. Returns the opcode, or -1 on timeout or end of stream. */
static int s_read_frame(gw_ws_t *ws, int fd, char *buf, size_t size, int timeout_ms)
{
    uint8_t h[2];
    if (!s_read_exact(ws, fd, h, 2, timeout_ms))
        return -1;
    cr_assert_eq(h[1] & 0x80, 0, "servers do not mask");
    uint64_t len = h[1] & 0x7f;
    if (len == 126) {
        uint8_t e[2];
        cr_assert(s_read_exact(ws, fd, e, 2, timeout_ms));
        len = (uint64_t)e[0] << 8 | e[1];
    } else if (len == 127) {
        cr_assert_fail("no frame here is that big");
    }
    cr_assert_lt(len, size);
    if (len)
        cr_assert(s_read_exact(ws, fd, (uint8_t *)buf, (size_t)len, timeout_ms));
    buf[len] = '\0';
    return h[0] & 0x0f;
}

/*  Reads frames until a text frame, answering nothing. */
static int s_read_text(gw_ws_t *ws, int fd, char *buf, size_t size)
{
    int op;
    while ((op = s_read_frame(ws, fd, buf, size, 2000)) == 0x9)
        ;
    return op;
}

static void s_library_event(gw_ws_t *ws, uint64_t seq, const char *user, size_t pad)
{
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    mb_pack_cstr(&pk, "user");
    mb_pack_cstr(&pk, user);
    mb_pack_cstr(&pk, "kind");
    mb_pack_cstr(&pk, "tracks");
    mb_pack_cstr(&pk, "action");
    mb_pack_cstr(&pk, "added");
    mb_pack_cstr(&pk, "ids");
    msgpack_pack_array(&pk, 1);
    char *id = malloc(pad + 2);
    memset(id, 'x', pad + 1);
    id[pad + 1] = '\0';
    mb_pack_cstr(&pk, id);
    free(id);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    cr_assert_eq(msgpack_unpack_next(&u, b.data, b.size, NULL), MSGPACK_UNPACK_SUCCESS);
    mb_event_t ev = {.seq = seq, .topic = "playlists.library", .topic_len = 17, .data = &u.data};
    cr_assert_eq(gw_notify_event(gw_ws_notify(ws), &ev), 0);
    gw_notify_advance(gw_ws_notify(ws), seq + 1);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&b);
}

static size_t s_with_context(gw_ws_t *ws)
{
    gw_ws_stats_t st;
    gw_ws_stats(ws, &st);
    return st.with_context;
}

Test(gw_ws, frames_pings_and_idle_contexts)
{
    gw_ws_t *ws = s_ws(64, 30000);
    int fd = s_connect(ws, "alice", time(NULL) + 3600);
    char buf[4096];
    cr_assert_eq(s_read_text(ws, fd, buf, sizeof buf), 0x1);
    cr_assert_str_eq(buf, "{\"type\":\"ready\",\"seq\":0}");
    gw_ws_run(ws);
    cr_assert_eq(s_with_context(ws), 0, "an idle connection holds no wslay context");

    s_library_event(ws, 1, "alice", 3);
    s_library_event(ws, 2, "bob", 3);
    cr_assert_eq(s_read_text(ws, fd, buf, sizeof buf), 0x1);
    cr_assert(strstr(buf, "{\"seq\":1,\"topic\":\"playlists.library\",\"type\":\"added\""));
    gw_ws_run(ws);
    cr_assert_eq(s_with_context(ws), 0);

    /* Ping, answered with the same payload. */
    s_send_frame(fd, 0x9, "hi", 2);
    cr_assert_eq(s_read_frame(ws, fd, buf, sizeof buf, 2000), 0xA);
    cr_assert_str_eq(buf, "hi");
    /* Half a frame keeps the context; the rest lets it go. */
    uint8_t half[3] = {0x89, 0x82, 1};
    cr_assert_eq(write(fd, half, 3), 3);
    for (int i = 0; i < 20; i++)
        gw_ws_run(ws);
    cr_assert_eq(s_with_context(ws), 1, "inside a frame: the context stays");
    uint8_t rest[5] = {2, 3, 4, 'o' ^ 1, 'k' ^ 2};
    cr_assert_eq(write(fd, rest, 5), 5);
    cr_assert_eq(s_read_frame(ws, fd, buf, sizeof buf, 2000), 0xA);
    cr_assert_str_eq(buf, "ok");
    gw_ws_run(ws);
    cr_assert_eq(s_with_context(ws), 0);

    /* The client closes: 1000 echoed, then the connection ends. */
    uint8_t code[2] = {0x03, 0xe8};
    s_send_frame(fd, 0x8, code, 2);
    cr_assert_eq(s_read_frame(ws, fd, buf, sizeof buf, 2000), 0x8);
    cr_assert_eq((uint8_t)buf[0] << 8 | (uint8_t)buf[1], 1000);
    gw_ws_run(ws);
    cr_assert_eq(gw_ws_size(ws), 0);
    close(fd);
    gw_ws_destroy(&ws);
}

/*  A client that does not read fills its queue and is closed with 1008;
    one that reads, beside it, gets every frame meanwhile. */
Test(gw_ws, slow_consumer_does_not_block_a_fast_one)
{
    gw_ws_t *ws = s_ws(8, 30000);
    int slow = s_connect(ws, "alice", time(NULL) + 3600);
    int fast = s_connect(ws, "alice", time(NULL) + 3600);
    char buf[8192];
    cr_assert_eq(s_read_text(ws, fast, buf, sizeof buf), 0x1); /* ready */
    int got = 0;
    for (uint64_t seq = 1; seq <= 400; seq++) {
        s_library_event(ws, seq, "alice", 2000);
        gw_ws_run(ws);
        cr_assert_eq(s_read_text(ws, fast, buf, sizeof buf), 0x1, "frame %lu", (unsigned long)seq);
        char want[32];
        snprintf(want, sizeof want, "{\"seq\":%lu,", (unsigned long)seq);
        cr_assert(strncmp(buf, want, strlen(want)) == 0, "fast got %.40s, wanted %s", buf, want);
        got++;
    }
    cr_assert_eq(got, 400);
    gw_ws_stats_t st;
    gw_ws_stats(ws, &st);
    cr_assert_eq(st.closed_slow, 1);
    /* The slow one finds, after what was in flight, a close frame 1008. */
    int op, frames = 0;
    while ((op = s_read_frame(ws, slow, buf, sizeof buf, 3000)) == 0x1)
        frames++;
    cr_assert_eq(op, 0x8, "then a close frame (after %d frames)", frames);
    cr_assert_eq((uint8_t)buf[0] << 8 | (uint8_t)buf[1], 1008);
    cr_assert_str_eq(buf + 2, "slow consumer");
    cr_assert_lt(frames, 400);
    close(slow);
    close(fast);
    gw_ws_destroy(&ws);
}

Test(gw_ws, token_expiry_closes_with_4001)
{
    gw_ws_t *ws = s_ws(64, 30000);
    int fd = s_connect(ws, "alice", time(NULL) + 1);
    char buf[512];
    int op;
    while ((op = s_read_frame(ws, fd, buf, sizeof buf, 3000)) == 0x1)
        ;
    cr_assert_eq(op, 0x8);
    cr_assert_eq((uint8_t)buf[0] << 8 | (uint8_t)buf[1], 4001);
    cr_assert_str_eq(buf + 2, "token expired");
    /* No answer: the connection goes after GW_WS_CLOSE_WAIT_MS. */
    cr_assert_eq(s_read_frame(ws, fd, buf, sizeof buf, GW_WS_CLOSE_WAIT_MS + 1000), -1);
    cr_assert_eq(gw_ws_size(ws), 0);
    close(fd);
    gw_ws_destroy(&ws);
}

Test(gw_ws, pings_unanswered_close_the_connection)
{
    gw_ws_t *ws = s_ws(64, 100);
    int fd = s_connect(ws, "alice", time(NULL) + 3600);
    char buf[512];
    int op, pings = 0;
    while ((op = s_read_frame(ws, fd, buf, sizeof buf, 2000)) == 0x1 || op == 0x9)
        pings += op == 0x9;
    cr_assert_geq(pings, 1);
    cr_assert_eq(op, 0x8);
    cr_assert_eq((uint8_t)buf[0] << 8 | (uint8_t)buf[1], 1001);
    cr_assert_str_eq(buf + 2, "ping timeout");
    close(fd);
    gw_ws_destroy(&ws);
}

Test(gw_ws, stop_says_going_away)
{
    gw_ws_t *ws = s_ws(64, 30000);
    int fd = s_connect(ws, "alice", time(NULL) + 3600);
    char buf[512];
    cr_assert_eq(s_read_text(ws, fd, buf, sizeof buf), 0x1);
    gw_ws_stop(ws);
    cr_assert_eq(s_read_frame(ws, fd, buf, sizeof buf, 2000), 0x8);
    cr_assert_eq((uint8_t)buf[0] << 8 | (uint8_t)buf[1], 1001);
    uint8_t code[2] = {0x03, 0xe9};
    s_send_frame(fd, 0x8, code, 2);
    for (int i = 0; i < 50 && gw_ws_size(ws) > 0; i++) {
        usleep(2000);
        gw_ws_run(ws);
    }
    cr_assert_eq(gw_ws_size(ws), 0);
    /* And new ones are refused. */
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    mb_jwt_claims_t claims = {.exp = time(NULL) + 60};
    snprintf(claims.sub, sizeof claims.sub, "bob");
    cr_assert_eq(gw_ws_adopt(ws, sv[0], &claims, false, 0, NULL, 0), MB_EFULL);
    close(sv[1]);
    close(fd);
    gw_ws_destroy(&ws);
}
