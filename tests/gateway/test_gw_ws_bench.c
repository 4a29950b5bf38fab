/*  test_gw_ws_bench — how many idle WebSockets one gateway holds, its
    memory per connection, and notification latency.

    Starts a broker, a playlists actor and a gateway (from --bin, default
    $MUSICBUS_BIN_DIR or ./bin) in a temporary folder on 127.0.0.1, signs
    one access token per connection (a user each), opens --conns
    WebSockets (GET /v1/me/events with Authorization: Bearer), and reads
    the gateway's VmRSS before and after (settled for 3 s). Then it
    publishes --events playlists.library events on the bus, one every
    --gap-ms, each for the user of one of the first 100 connections, and
    measures from just before bus.publish (which returns once the broker
    has the event on disk) to the frame's arrival at that client: the
    whole path, broker's fsync included. Prints p50/p90/p99/max.

    Under ctest it runs small (1000 connections, 100 events) and checks
    that every connection opens and every frame arrives; the benchmark
    proper is the same binary with more:
        MUSICBUS_WS_BENCH_CONNS=10000 MUSICBUS_WS_BENCH_EVENTS=300 \
            build/bin/test_gw_ws_bench
    (MUSICBUS_WS_BENCH_GAP_MS: ms between events, 10.) The idle clients
    never answer pings (the first ping comes after 30 s: the
    measurements are over before that). Every process it starts is
    stopped when it ends. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mb_events.h"
#include "mb_jwt.h"
#include "mb_msgpack.h"

#define S_READERS 100 /* connections that latency events go to */

static pid_t s_pids[3];
static int s_npids;
static char s_dir[256];

static int64_t s_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void s_cleanup(void)
{
    for (int i = s_npids; i-- > 0;) {
        kill(s_pids[i], SIGTERM);
        waitpid(s_pids[i], NULL, 0);
    }
    s_npids = 0;
    if (s_dir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "bench: could not remove %s\n", s_dir);
    }
}

static void s_die(const char *what)
{
    s_cleanup();
    cr_assert_fail("%s", what);
}

/*  Starts argv with env extras, stderr to `log`; waits for its ready file
    and returns its contents (static buffer). */
static const char *s_start(char *const argv[], const char *ready, const char *log,
                           char *const env[])
{
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        FILE *f = freopen(log, "a", stderr);
        (void)f;
        for (int i = 0; env && env[i]; i++)
            putenv(env[i]);
        execv(argv[0], argv);
        _exit(127);
    }
    s_pids[s_npids++] = pid;
    static char text[256];
    for (int i = 0; i < 200; i++) {
        FILE *f = fopen(ready, "r");
        if (f) {
            if (fgets(text, sizeof text, f)) {
                fclose(f);
                text[strcspn(text, "\n")] = '\0';
                return text;
            }
            fclose(f);
        }
        usleep(50000);
    }
    s_die("a process did not start (see the logs in its folder)");
    return NULL;
}

static long s_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            kib = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return kib;
}

/*  Opens one WebSocket with `token`; returns the socket (blocking reads
    of the 101 only). */
static int s_open(const struct sockaddr_in *addr, const char *token)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (const struct sockaddr *)addr, sizeof *addr) != 0)
        return -1;
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "GET /v1/me/events HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Authorization: Bearer %s\r\n\r\n",
                     token);
    if (write(fd, req, (size_t)n) != n)
        return -1;
    char resp[1024];
    size_t got = 0;
    while (got < sizeof resp - 1) {
        ssize_t r = read(fd, resp + got, 1); /* byte by byte: frames may follow */
        if (r <= 0)
            return -1;
        got++;
        if (got >= 4 && !memcmp(resp + got - 4, "\r\n\r\n", 4))
            break;
    }
    resp[got] = '\0';
    if (strncmp(resp, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "bench: handshake refused: %.60s\n", resp);
        return -1;
    }
    return fd;
}

static int s_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static long s_env(const char *name, long fallback)
{
    const char *v = getenv(name);
    return v && *v ? atol(v) : fallback;
}

Test(gw_ws_bench, idle_connections_and_latency, .timeout = 600)
{
    long conns = s_env("MUSICBUS_WS_BENCH_CONNS", 1000);
    long events = s_env("MUSICBUS_WS_BENCH_EVENTS", 100);
    long gap_ms = s_env("MUSICBUS_WS_BENCH_GAP_MS", 10);
    const char *bin = getenv("MUSICBUS_BIN_DIR") ? getenv("MUSICBUS_BIN_DIR") : "./bin";
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((long)rl.rlim_cur < conns + 64)
        s_die("RLIMIT_NOFILE is too low for that many connections");

    snprintf(s_dir, sizeof s_dir, "%s/bench_gw_ws.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(s_dir))
        s_die("mkdtemp");
    char secret_path[300], path[4][300], exe[3][300];
    snprintf(secret_path, sizeof secret_path, "%s/secret", s_dir);
    const char *secret = "bench-secret-bench-secret-bench-secret-0123456789";
    FILE *f = fopen(secret_path, "w");
    fputs(secret, f);
    fclose(f);
    chmod(secret_path, 0600);
    snprintf(exe[0], sizeof exe[0], "%s/musicbus-broker", bin);
    snprintf(exe[1], sizeof exe[1], "%s/musicbus-playlists", bin);
    snprintf(exe[2], sizeof exe[2], "%s/musicbus-gateway", bin);
    for (int i = 0; i < 3; i++)
        snprintf(path[i], sizeof path[i], "%s/ready%d", s_dir, i);
    snprintf(path[3], sizeof path[3], "%s/log", s_dir);

    char *bargv[] = {exe[0],  "--bind", "tcp://127.0.0.1:*", "--data", s_dir, "--ready-file",
                     path[0], NULL};
    char endpoint[256];
    snprintf(endpoint, sizeof endpoint, "%s", s_start(bargv, path[0], path[3], NULL));
    char *pargv[] = {exe[1], "--bus", endpoint, "--data", s_dir, "--ready-file", path[1], NULL};
    s_start(pargv, path[1], path[3], NULL);
    char *gargv[] = {exe[2],      "--http", "127.0.0.1:0", "--bus",
                     endpoint,    "--data", s_dir,         "--jwt-secret-file",
                     secret_path, "--rate", "default=off", "--ready-file",
                     path[2],     NULL};
    char *genv[] = {"MUSICBUS_LOG_LEVEL=warn", NULL};
    char gw[256];
    snprintf(gw, sizeof gw, "%s", s_start(gargv, path[2], path[3], genv));
    pid_t gw_pid = s_pids[2];
    struct sockaddr_in addr = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    addr.sin_port = htons((uint16_t)atoi(strrchr(gw, ':') + 1));
    sleep(1);
    long rss0 = s_rss_kib(gw_pid);

    mb_jwt_key_t *key = mb_jwt_key_new(secret, strlen(secret));
    mb_jwt_policy_t policy;
    mb_jwt_policy_default(&policy);
    int *fds = calloc((size_t)conns, sizeof *fds);
    int64_t t0 = s_now_ns();
    for (long i = 0; i < conns; i++) {
        mb_jwt_claims_t claims = {.roles = MB_ROLE_USER, .exp = time(NULL) + 3600};
        snprintf(claims.sub, sizeof claims.sub, "u%ld", i);
        snprintf(claims.sid, sizeof claims.sid, "s%ld", i);
        snprintf(claims.tier, sizeof claims.tier, "free");
        char *token = NULL;
        if (mb_jwt_sign(key, &policy, &claims, &token))
            s_die("cannot sign");
        fds[i] = s_open(&addr, token);
        free(token);
        if (fds[i] < 0) {
            fprintf(stderr, "bench: connection %ld failed\n", i);
            s_die("cannot open all connections");
        }
    }
    double open_s = (double)(s_now_ns() - t0) / 1e9;
    sleep(3);
    long rss1 = s_rss_kib(gw_pid);
    printf("connections: %ld open in %.1f s (%.0f/s)\n", conns, open_s, conns / open_s);
    printf("gateway VmRSS: %.1f MiB before, %.1f MiB with %ld idle WebSockets: %.2f KiB each\n",
           rss0 / 1024.0, rss1 / 1024.0, conns, (double)(rss1 - rss0) / (double)conns);

    /* Latency: the first S_READERS connections read. */
    long readers = conns < S_READERS ? conns : S_READERS;
    int ep = epoll_create1(0);
    for (long i = 0; i < readers; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    mb_events_t *bus = mb_events_new(endpoint);
    int64_t t_start = s_now_ns();
    int64_t *lat = calloc((size_t)events, sizeof *lat);
    long got = 0;
    char buf[65536];
    for (long e = 0; e < events || got < e; e++) {
        if (e < events) {
            int64_t sent = s_now_ns();
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            msgpack_pack_map(&pk, 4);
            char user[32], id[40];
            snprintf(user, sizeof user, "u%ld", e % readers);
            snprintf(id, sizeof id, "t%" PRId64, sent);
            mb_pack_cstr(&pk, "user");
            mb_pack_cstr(&pk, user);
            mb_pack_cstr(&pk, "kind");
            mb_pack_cstr(&pk, "tracks");
            mb_pack_cstr(&pk, "action");
            mb_pack_cstr(&pk, "added");
            mb_pack_cstr(&pk, "ids");
            msgpack_pack_array(&pk, 1);
            mb_pack_cstr(&pk, id);
            if (mb_events_publish(bus, "playlists.library", user, sb.data, sb.size, NULL))
                s_die("publish failed");
            msgpack_sbuffer_destroy(&sb);
        } else if (s_now_ns() - t_start > (int64_t)120e9) {
            break;
        }
        int64_t until = s_now_ns() + gap_ms * 1000000;
        for (;;) {
            int64_t left = (until - s_now_ns()) / 1000000;
            struct epoll_event evs[64];
            int n = epoll_wait(ep, evs, 64, left > 0 ? (int)left : 0);
            int64_t now = s_now_ns();
            for (int i = 0; i < n; i++) {
                ssize_t r = recv(fds[evs[i].data.u64], buf, sizeof buf - 1, MSG_DONTWAIT);
                if (r <= 0)
                    continue;
                buf[r] = '\0';
                /* Frames are small text frames: find each id in them. */
                for (char *p = buf; (p = memmem(p, (size_t)(buf + r - p), "[\"t", 3)); p += 3) {
                    int64_t sent = strtoll(p + 3, NULL, 10);
                    if (got < events)
                        lat[got++] = now - sent;
                }
            }
            if (left <= 0)
                break;
        }
    }
    qsort(lat, (size_t)got, sizeof *lat, s_cmp);
    if (got > 0)
        printf("latency publish->frame over %ld events (%ld ms apart, %ld readers among %ld "
               "connections): p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
               got, gap_ms, readers, conns, lat[got / 2] / 1e6, lat[got * 9 / 10] / 1e6,
               lat[got * 99 / 100] / 1e6, lat[got - 1] / 1e6);
    if (got < events)
        printf("only %ld of %ld events arrived\n", got, events);
    long rss2 = s_rss_kib(gw_pid);
    printf("gateway VmRSS after the events: %.1f MiB\n", rss2 / 1024.0);
    mb_events_destroy(&bus);
    for (long i = 0; i < conns; i++)
        close(fds[i]);
    free(fds);
    free(lat);
    mb_jwt_key_destroy(&key);
    s_cleanup();
    fflush(stdout);
    cr_assert_eq(got, events, "every frame arrives");
}
