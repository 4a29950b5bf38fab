/*  bus_bench — round trips per second through musicbus-broker, side by side
    with a direct ZeroMQ DEALER -> ROUTER echo that has no broker, measured
    in the same run with the same window of requests in flight.

    Modes, each for --duration seconds after a short warm-up:
      direct   client DEALER -> echo ROUTER (a child process), one hop
      broker   mb_client -> musicbus-broker -> N mb_worker echo workers
               (child processes, each its own socket), two hops each way

    Every request is a real envelope (mb_envelope.h): {op, rid, ttl, args}
    of about --size bytes, packed per send. The echo ROUTER and the MDP
    workers answer with the same code: decode the request, pack a reply
    {rid, status 200, body: args}. The client decodes every reply and
    checks its rid, so the only difference between the modes is the broker
    hop and the MDP framing, which is what the ratio is meant to show.

    Usage:
      bus_bench [--broker PATH] [--duration SEC] [--windows 1,64]
                [--workers 1,4] [--size BYTES] [--rounds N] [--broker-arg ARG]...
    --broker defaults to musicbus-broker next to this executable.
    --broker-arg passes one more argument to the broker
    (--broker-arg=--worker-credit=1), up to 8 of them.

    --rounds N repeats the whole sequence N times (direct, then the broker
    with each worker count) and reports medians: the machine this runs on
    is often shared, and one run can be off by a factor of two.

    Prints one table: mode, workers, in-flight, round trips/s, latency p50
    and p99 (microseconds), the ratio to the direct echo with the same
    window, and the broker's CPU use. Every process it starts is stopped
    before it exits.

    Internal modes, used by the benchmark on itself:
      bus_bench --serve-echo READY_FILE   the direct echo ROUTER
      bus_bench --serve-worker ENDPOINT   one MDP echo worker */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>
#include <zmq.h>

#include "bench_util.h"
#include "mb_alloc.h"
#include "mb_client.h"
#include "mb_envelope.h"
#include "mb_error.h"
#include "mb_msgpack.h"
#include "mb_signal.h"
#include "mb_worker.h"
#include "mb_zmq.h"

extern char **environ;

#define S_SERVICE "echo"
#define S_OP "echo.get"
#define S_TTL_MS 5000            /* request deadline carried in the envelope */
#define S_WARMUP_MS 300          /* run before counting, so connections and caches settle */
#define S_DRAIN_MS 2000          /* wait for stragglers after a run, so runs don't mix */
#define S_READY_TIMEOUT_MS 10000 /* a child must be up by then */
#define S_STOP_GRACE_MS 3000     /* SIGTERM, then SIGKILL after this */
#define S_HIST_US 100000         /* latency histogram: 1 us buckets up to 100 ms */
#define S_MAX_WINDOW 4096
#define S_MAX_LIST 8
#define S_QUEUE_LIMIT "100000"   /* broker queue bound well above any window */
#define S_MAX_ROUNDS 15

/* ---- small helpers ----------------------------------------------------- */

/*  Writes `text` to `path` through path.tmp and a rename, the convention
    every musicbus process follows for ready files. */
static void s_write_ready(const char *path, const char *text)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        bench_die("cannot write %s", tmp);
    fputs(text, f);
    fclose(f);
    if (rename(tmp, path) != 0)
        bench_die("cannot rename to %s", path);
}

/* ---- the answer, shared by the direct echo and the MDP workers --------- */

/*  Packs the reply to one encoded request into `out` (cleared first):
    {rid, status 200, body: args}, or a 400 error reply when the request
    does not decode. */
static void s_answer(const void *data, size_t size, msgpack_sbuffer *out)
{
    msgpack_sbuffer_clear(out);
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    mb_request_t req;
    const char *why = NULL;
    if (mb_request_decode(&req, data, size, &why) != 0) {
        mb_reply_pack_error(&pk, 0, 400, "bad_request", NULL, why ? why : "malformed");
        return;
    }
    mb_reply_pack_head(&pk, req.rid, 200);
    if (req.args)
        mb_pack_object(&pk, req.args);
    else
        msgpack_pack_nil(&pk);
    mb_request_release(&req);
}

/*  The direct echo server: a ROUTER on an OS-picked port, answering every
    message [identity][request] with [identity][reply]. */
static int s_serve_echo(const char *ready_file)
{
    mb_signal_install();
    void *router = zmq_socket(mb_zmq_context(), ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(router, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(router, "tcp://127.0.0.1:*") != 0)
        bench_die("echo bind failed: %s", zmq_strerror(zmq_errno()));
    char endpoint[256];
    size_t len = sizeof endpoint;
    zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, endpoint, &len);
    s_write_ready(ready_file, endpoint);

    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    while (!mb_signal_stop_requested()) {
        if (zmq_msg_recv(&id, router, 0) == -1)
            continue;  /* EINTR: the loop condition decides */
        if (!zmq_msg_more(&id) || zmq_msg_recv(&body, router, 0) == -1)
            continue;
        if (zmq_msg_more(&body)) {
            mb_zmq_drain_message(router);
            continue;
        }
        s_answer(zmq_msg_data(&body), zmq_msg_size(&body), &out);
        zmq_msg_send(&id, router, ZMQ_SNDMORE);
        zmq_send(router, out.data, out.size, 0);
    }
    zmq_msg_close(&id);
    zmq_msg_close(&body);
    msgpack_sbuffer_destroy(&out);
    zmq_close(router);
    mb_zmq_shutdown();
    return 0;
}

/*  One MDP echo worker, until SIGTERM. */
static int s_serve_worker(const char *endpoint)
{
    mb_signal_install();
    mb_worker_t *worker = mb_worker_new(endpoint, S_SERVICE, NULL);
    if (!worker)
        bench_die("cannot start a worker on %s", endpoint);
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    zmq_msg_t body;
    while (mb_worker_recv(worker, &body) == 0) {
        s_answer(zmq_msg_data(&body), zmq_msg_size(&body), &out);
        zmq_msg_close(&body);
        mb_worker_reply(worker, out.data, out.size);
    }
    msgpack_sbuffer_destroy(&out);
    mb_worker_destroy(&worker);
    mb_zmq_shutdown();
    return 0;
}

/* ---- the client side --------------------------------------------------- */

typedef struct {
    void *dealer;           /* direct mode: our DEALER, else NULL */
    mb_client_t *client;    /* broker mode: the MDP client, else NULL */
    size_t size;            /* target request size in bytes */
    size_t pad_len;         /* filler that makes the request that size */
    char pad[1024];
    msgpack_sbuffer buf;    /* request being packed */
    uint64_t seq;           /* rids are (seq << 16 | slot): unique across runs */
    size_t bytes_sent;      /* to report the real average request size */
    uint64_t sent;
} s_bench_t;

typedef struct {
    double rps;
    double p50_us, p99_us;
    uint64_t errors;        /* non-200 replies or undecodable ones */
    uint64_t lost;          /* still in flight when the drain gave up */
    double avg_request;     /* bytes */
} s_result_t;

static void s_pack_request(s_bench_t *self, uint64_t rid)
{
    msgpack_sbuffer_clear(&self->buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &self->buf, msgpack_sbuffer_write);
    mb_request_pack_head(&pk, S_OP, rid, S_TTL_MS, 1);
    mb_pack_cstr(&pk, "args");
    msgpack_pack_map(&pk, 2);
    mb_pack_cstr(&pk, "id");
    mb_pack_cstr(&pk, "4tZwfgrHOc3mvqYlEYSvVi");
    mb_pack_cstr(&pk, "pad");
    mb_pack_strn(&pk, self->pad, self->pad_len);
}

/*  Finds the filler length that makes a request with a typical rid about
    self->size bytes long. */
static void s_size_request(s_bench_t *self)
{
    memset(self->pad, 'x', sizeof self->pad);
    for (self->pad_len = 0; self->pad_len < sizeof self->pad; self->pad_len++) {
        s_pack_request(self, ((uint64_t) 1000000 << 16) | 63);
        if (self->buf.size >= self->size)
            break;
    }
}

static int s_send(s_bench_t *self, uint64_t rid)
{
    s_pack_request(self, rid);
    int rc;
    if (self->client) /* as the gateway: queued, flushed after the send loop */
        rc = mb_client_queue(self->client, S_SERVICE, self->buf.data, self->buf.size);
    else
        rc = zmq_send(self->dealer, self->buf.data, self->buf.size, ZMQ_DONTWAIT) == -1
                 ? (zmq_errno() == EAGAIN ? MB_EAGAIN : MB_EIO)
                 : 0;
    if (rc == 0) {
        self->bytes_sent += self->buf.size;
        self->sent++;
    }
    return rc;
}

static int s_recv(s_bench_t *self, zmq_msg_t *msg)
{
    if (self->client) {
        for (;;) {
            int rc = mb_client_recv(self->client, msg);
            if (rc != MB_EPROTO)
                return rc;  /* a malformed message was dropped: try the next */
        }
    }
    if (zmq_msg_recv(msg, self->dealer, ZMQ_DONTWAIT) == -1)
        return zmq_errno() == EAGAIN ? MB_EAGAIN : MB_EIO;
    if (zmq_msg_more(msg)) {
        mb_zmq_drain_message(self->dealer);
        zmq_msg_close(msg);
        zmq_msg_init(msg);
        return MB_EPROTO;
    }
    return 0;
}

static void *s_socket(s_bench_t *self)
{
    return self->client ? mb_client_socket(self->client) : self->dealer;
}

static double s_percentile(const uint32_t *hist, uint64_t total, double q)
{
    if (total == 0)
        return 0;
    uint64_t want = (uint64_t) (q * (double) total), seen = 0;
    if (want == 0)
        want = 1;
    for (int i = 0; i <= S_HIST_US; i++) {
        seen += hist[i];
        if (seen >= want)
            return i;
    }
    return S_HIST_US;
}

/*  Keeps `window` requests in flight for warm-up + duration, counting the
    round trips that complete inside the measured interval, then drains. */
static s_result_t s_run(s_bench_t *self, int window, int duration_ms)
{
    s_result_t res = {0};
    static uint64_t rid_of[S_MAX_WINDOW];  /* 0 = slot free */
    static int64_t sent_at[S_MAX_WINDOW];
    static uint32_t hist[S_HIST_US + 1];
    int free_slots[S_MAX_WINDOW];
    int n_free = window, in_flight = 0;
    for (int i = 0; i < window; i++) {
        rid_of[i] = 0;
        free_slots[i] = window - 1 - i;
    }
    memset(hist, 0, sizeof hist);
    self->bytes_sent = 0;
    self->sent = 0;

    int64_t start = bench_now_ns() + (int64_t) S_WARMUP_MS * 1000000;
    int64_t end = start + (int64_t) duration_ms * 1000000;
    int64_t give_up = end + (int64_t) S_DRAIN_MS * 1000000;
    uint64_t counted = 0;
    zmq_pollitem_t item = {s_socket(self), 0, ZMQ_POLLIN, 0};
    zmq_msg_t msg;
    zmq_msg_init(&msg);

    for (;;) {
        int64_t now = bench_now_ns();
        if (mb_signal_stop_requested() || now >= give_up)
            break;
        while (now < end && n_free > 0) {
            int slot = free_slots[n_free - 1];
            uint64_t rid = (++self->seq << 16) | (uint64_t) slot;
            if (s_send(self, rid) != 0)
                break;  /* queue full: wait for replies */
            n_free--;
            in_flight++;
            rid_of[slot] = rid;
            sent_at[slot] = bench_now_ns();
        }
        if (self->client)
            mb_client_flush(self->client);
        if (now >= end && in_flight == 0)
            break;
        if (zmq_poll(&item, 1, 100) == -1)
            continue;
        int rc;
        while ((rc = s_recv(self, &msg)) != MB_EAGAIN) {
            if (rc != 0) {
                if (rc == MB_EIO)
                    break;
                res.errors++;
                continue;
            }
            int64_t at = bench_now_ns();
            mb_reply_t rep;
            const char *why;
            if (mb_reply_decode(&rep, zmq_msg_data(&msg), zmq_msg_size(&msg), &why) != 0) {
                res.errors++;
                zmq_msg_close(&msg);
                zmq_msg_init(&msg);
                continue;
            }
            int slot = (int) (rep.rid & 0xffff);
            if (slot < window && rid_of[slot] == rep.rid) {
                if (rep.status != 200)
                    res.errors++;
                else if (at >= start && at < end) {
                    int64_t us = (at - sent_at[slot]) / 1000;
                    hist[us > S_HIST_US ? S_HIST_US : us]++;
                    counted++;
                }
                rid_of[slot] = 0;
                free_slots[n_free++] = slot;
                in_flight--;
            }
            mb_reply_release(&rep);
            zmq_msg_close(&msg);
            zmq_msg_init(&msg);
        }
    }
    zmq_msg_close(&msg);
    res.lost = (uint64_t) in_flight;
    res.rps = (double) counted * 1e3 / duration_ms;
    res.p50_us = s_percentile(hist, counted, 0.50);
    res.p99_us = s_percentile(hist, counted, 0.99);
    res.avg_request = self->sent ? (double) self->bytes_sent / (double) self->sent : 0;
    return res;
}

/* ---- main -------------------------------------------------------------- */

typedef struct {
    s_result_t r;
    double broker_cpu;      /* broker's CPU in % of one core, -1 when not measured */
} s_cell_t;

/*  The echo workers main started, to resize the pool and stop it. */
typedef struct {
    char *self_exe;
    char endpoint[256];     /* the broker's */
    const char *worker_log;
    pid_t workers[64];
    int n_workers;
} s_pool_t;

/*  Grows or shrinks the pool of echo workers to `want`, then waits until
    the broker knows the service. Returns 0, or -1 (reason printed). */
static int s_pool_resize(s_pool_t *pool, mb_client_t *client, int want)
{
    while (pool->n_workers > want)
        bench_stop_child(pool->workers[--pool->n_workers], S_STOP_GRACE_MS);
    while (pool->n_workers < want) {
        char *argv[] = {pool->self_exe, "--serve-worker", pool->endpoint, NULL};
        pid_t pid = bench_spawn(argv, pool->worker_log);
        if (pid < 0)
            return -1;
        pool->workers[pool->n_workers++] = pid;
    }
    /* mmi.service says 200 once one worker is READY; the others are given
       a moment more, which READY needs far less than. A worker that left
       is gone from the broker once its DISCONNECT is read, well within it. */
    bool ready = false;
    for (int tries = 0; tries < 100 && !ready && !mb_signal_stop_requested(); tries++) {
        zmq_msg_t reply;
        if (mb_client_call(client, "mmi.service", S_SERVICE, strlen(S_SERVICE), 200, &reply) ==
            0) {
            ready = zmq_msg_size(&reply) == 3 && memcmp(zmq_msg_data(&reply), "200", 3) == 0;
            zmq_msg_close(&reply);
        }
        if (!ready)
            bench_sleep_ms(50);
    }
    if (!ready) {
        fprintf(stderr, "bus_bench: no echo worker registered with the broker\n");
        return -1;
    }
    bench_sleep_ms(300);
    return 0;
}

static void s_usage(void)
{
    fprintf(stderr,
            "usage: bus_bench [--broker PATH] [--duration SEC] [--windows 1,64]\n"
            "                 [--workers 1,4] [--size BYTES] [--rounds N] [--broker-arg ARG]...\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--serve-echo") == 0)
        return s_serve_echo(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--serve-worker") == 0)
        return s_serve_worker(argv[2]);

    static char self_exe[PATH_MAX], broker_path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (n <= 0)
        bench_die("cannot find my own executable%s", "");
    self_exe[n] = 0;
    snprintf(broker_path, sizeof broker_path, "%.*s/musicbus-broker",
             (int) (strrchr(self_exe, '/') - self_exe), self_exe);

    int windows[S_MAX_LIST] = {1, 64}, n_windows = 2;
    int workers[S_MAX_LIST] = {1, 4}, n_workers = 2;
    int duration_ms = 3000, rounds = 1;
    size_t size = 100;
    char *broker_args[S_MAX_LIST];
    int n_broker_args = 0;
    static const struct option opts[] = {
        {"broker", required_argument, 0, 'b'},  {"duration", required_argument, 0, 'd'},
        {"windows", required_argument, 0, 'w'}, {"workers", required_argument, 0, 'n'},
        {"size", required_argument, 0, 's'},    {"broker-arg", required_argument, 0, 'B'},
        {"rounds", required_argument, 0, 'r'},  {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "b:d:w:n:s:B:r:h", opts, NULL)) != -1) {
        switch (c) {
        case 'b':
            snprintf(broker_path, sizeof broker_path, "%s", optarg);
            break;
        case 'd': {
            double sec = atof(optarg);
            if (sec <= 0 || sec > 3600)
                s_usage();
            duration_ms = (int) (sec * 1000);
            break;
        }
        case 'w':
            if ((n_windows = bench_parse_list(optarg, windows, S_MAX_LIST, 1, S_MAX_WINDOW)) <= 0)
                s_usage();
            break;
        case 'n':
            if ((n_workers = bench_parse_list(optarg, workers, S_MAX_LIST, 1, 64)) <= 0)
                s_usage();
            break;
        case 's': {
            long v = atol(optarg);
            if (v < 40 || v > 1000)
                s_usage();
            size = (size_t) v;
            break;
        }
        case 'r':
            rounds = atoi(optarg);
            if (rounds < 1 || rounds > S_MAX_ROUNDS)
                s_usage();
            break;
        case 'B':
            if (n_broker_args == S_MAX_LIST)
                s_usage();
            broker_args[n_broker_args++] = optarg;
            break;
        default:
            s_usage();
        }
    }
    if (access(broker_path, X_OK) != 0)
        bench_die("no broker at %s (use --broker PATH)", broker_path);
    mb_signal_install();

    char tmpdir[] = "/tmp/bus_bench.XXXXXX";
    if (!mkdtemp(tmpdir))
        bench_die("mkdtemp failed%s", "");
    char echo_ready[PATH_MAX], broker_ready[PATH_MAX], echo_endpoint[256];
    char echo_log[PATH_MAX], broker_log[PATH_MAX], worker_log[PATH_MAX];
    snprintf(echo_ready, sizeof echo_ready, "%s/echo.ready", tmpdir);
    snprintf(broker_ready, sizeof broker_ready, "%s/broker.ready", tmpdir);
    snprintf(echo_log, sizeof echo_log, "%s/echo.log", tmpdir);
    snprintf(broker_log, sizeof broker_log, "%s/broker.log", tmpdir);
    snprintf(worker_log, sizeof worker_log, "%s/workers.log", tmpdir);

    s_bench_t bench = {.size = size};
    msgpack_sbuffer_init(&bench.buf);
    s_size_request(&bench);
    void *dealer = NULL;
    mb_client_t *client = NULL;
    s_pool_t pool = {.self_exe = self_exe, .worker_log = worker_log};
    pid_t broker_pid = -1, echo_pid = -1;
    /* cells[round][slot][window]: slot 0 is the direct echo, slot k the
       broker with workers[k - 1] workers. */
    static s_cell_t cells[S_MAX_ROUNDS][S_MAX_LIST + 1][S_MAX_LIST];
    double avg_request = 0;
    int rc = 1;

    fprintf(stderr, "bus_bench: %d round(s), %.1f s per run, requests of ~%zu bytes\n", rounds,
            duration_ms / 1000.0, size);

    /* The echo server and the broker live through every round; runs never
       overlap, so the idle one costs nothing. */
    char *echo_argv[] = {self_exe, "--serve-echo", echo_ready, NULL};
    echo_pid = bench_spawn(echo_argv, echo_log);
    if (echo_pid < 0 ||
        bench_wait_ready(echo_ready, echo_pid, S_READY_TIMEOUT_MS, echo_endpoint, sizeof echo_endpoint) != 0) {
        fprintf(stderr, "bus_bench: the echo server did not start\n");
        bench_show_log(echo_log);
        goto done;
    }
    dealer = zmq_socket(mb_zmq_context(), ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(dealer, ZMQ_LINGER, &zero, sizeof zero);
    zmq_connect(dealer, echo_endpoint);

    /* The broker's event log goes in our temporary folder: the default
       (./var) may be locked by a broker someone else runs there. */
    char *broker_argv[10 + S_MAX_LIST] = {broker_path,   "--bind",       "tcp://127.0.0.1:*",
                                          "--ready-file", broker_ready,   "--queue-limit",
                                          S_QUEUE_LIMIT,  "--data",       tmpdir};
    for (int i = 0; i < n_broker_args; i++)
        broker_argv[9 + i] = broker_args[i];
    broker_pid = bench_spawn(broker_argv, broker_log);
    if (broker_pid < 0 ||
        bench_wait_ready(broker_ready, broker_pid, S_READY_TIMEOUT_MS, pool.endpoint, sizeof pool.endpoint) != 0) {
        fprintf(stderr, "bus_bench: the broker did not start (%s)\n", broker_path);
        bench_show_log(broker_log);
        goto done;
    }
    client = mb_client_new(pool.endpoint);
    if (!client) {
        fprintf(stderr, "bus_bench: cannot connect to %s\n", pool.endpoint);
        goto done;
    }

    for (int round = 0; round < rounds && !mb_signal_stop_requested(); round++) {
        bench.client = NULL;
        bench.dealer = dealer;
        for (int w = 0; w < n_windows && !mb_signal_stop_requested(); w++) {
            s_cell_t *cell = &cells[round][0][w];
            cell->r = s_run(&bench, windows[w], duration_ms);
            cell->broker_cpu = -1;
            avg_request = cell->r.avg_request;
            fprintf(stderr, "  round %d direct          window %3d: %.0f/s\n", round + 1,
                    windows[w], cell->r.rps);
        }
        bench.client = client;
        bench.dealer = NULL;
        for (int k = 0; k < n_workers && !mb_signal_stop_requested(); k++) {
            if (s_pool_resize(&pool, client, workers[k]) != 0) {
                bench_show_log(broker_log);
                bench_show_log(worker_log);
                goto done;
            }
            for (int w = 0; w < n_windows && !mb_signal_stop_requested(); w++) {
                s_cell_t *cell = &cells[round][k + 1][w];
                long ticks = bench_cpu_ticks(broker_pid);
                cell->r = s_run(&bench, windows[w], duration_ms);
                /* The run includes warm-up and drain; close enough for a share. */
                long spent = bench_cpu_ticks(broker_pid) - ticks;
                cell->broker_cpu = ticks >= 0 && spent >= 0
                                       ? 100.0 * (double) spent / (double) sysconf(_SC_CLK_TCK) /
                                             ((S_WARMUP_MS + duration_ms) / 1000.0)
                                       : -1;
                fprintf(stderr, "  round %d broker %2d worker(s) window %3d: %.0f/s\n",
                        round + 1, workers[k], windows[w], cell->r.rps);
            }
        }
    }
    if (mb_signal_stop_requested())
        goto done;

    printf("\nbus_bench: %d round(s), %.1f s per run, request ~%.0f bytes "
           "(envelope {op, rid, ttl, args}), %ld CPUs\n",
           rounds, duration_ms / 1000.0, avg_request, sysconf(_SC_NPROCESSORS_ONLN));
    if (rounds > 1)
        printf("figures are medians over the rounds; \"ratio range\" is the lowest and highest "
               "ratio of a single round\n");
    printf("\n%-8s %7s %9s %13s %8s %8s %7s %11s %12s\n", "mode", "workers", "in-flight",
           "round trips/s", "p50 us", "p99 us", "ratio", "broker CPU",
           rounds > 1 ? "ratio range" : "");
    for (int w = 0; w < n_windows; w++) {
        double direct = 0;
        for (int slot = 0; slot <= n_workers; slot++) {
            double rps[S_MAX_ROUNDS], p50[S_MAX_ROUNDS], p99[S_MAX_ROUNDS], cpu[S_MAX_ROUNDS],
                ratio[S_MAX_ROUNDS];
            uint64_t errors = 0, lost = 0;
            for (int r = 0; r < rounds; r++) {
                s_cell_t *cell = &cells[r][slot][w];
                rps[r] = cell->r.rps;
                p50[r] = cell->r.p50_us;
                p99[r] = cell->r.p99_us;
                cpu[r] = cell->broker_cpu;
                double d = cells[r][0][w].r.rps;
                ratio[r] = d > 0 ? cell->r.rps / d : 0;
                errors += cell->r.errors;
                lost += cell->r.lost;
            }
            double m_rps = bench_median(rps, rounds);
            if (slot == 0)
                direct = m_rps;
            char who[16] = "-", load[16] = "-", range[32] = "";
            if (slot)
                snprintf(who, sizeof who, "%d", workers[slot - 1]);
            double m_cpu = bench_median(cpu, rounds);
            if (m_cpu >= 0)
                snprintf(load, sizeof load, "%.0f%%", m_cpu);
            if (rounds > 1) {
                bench_median(ratio, rounds); /* sorts */
                snprintf(range, sizeof range, "%.2f-%.2f", ratio[0], ratio[rounds - 1]);
            }
            printf("%-8s %7s %9d %13.0f %8.0f %8.0f %7.2f %11s %12s", slot ? "broker" : "direct",
                   who, windows[w], m_rps, bench_median(p50, rounds), bench_median(p99, rounds),
                   direct > 0 ? m_rps / direct : 0.0, load, range);
            if (errors || lost)
                printf("   (%llu errors, %llu lost)", (unsigned long long) errors,
                       (unsigned long long) lost);
            printf("\n");
        }
    }
    long hwm = bench_status_kib(broker_pid, "VmHWM");
    if (hwm >= 0)
        printf("\nbroker peak RSS (VmHWM): %.1f MiB\n", hwm / 1024.0);
    printf("ratio = round trips/s / direct echo with the same in-flight window "
           "(target >= 0.40)\n"
           "broker CPU = %% of one core used by musicbus-broker during the run\n");
    rc = 0;

done:
    mb_client_destroy(&client);
    if (dealer)
        zmq_close(dealer);
    for (int i = 0; i < pool.n_workers; i++)
        kill(pool.workers[i], SIGTERM);
    for (int i = 0; i < pool.n_workers; i++)
        bench_stop_child(pool.workers[i], S_STOP_GRACE_MS);
    bench_stop_child(broker_pid, S_STOP_GRACE_MS);
    bench_stop_child(echo_pid, S_STOP_GRACE_MS);
    msgpack_sbuffer_destroy(&bench.buf);
    mb_zmq_shutdown();
    bench_remove_tree(tmpdir); /* logs, ready files, event log */
    return rc;
}
