/*  playlists actor on a real bus: a broker and two musicbus-playlists
    processes from $MUSICBUS_BIN_DIR, spoken to as the gateway would
    (mb_client) and fed a catalog event through the broker's event log
    (mb_events). Checks what the dispatch-level tests cannot: the
    consumer group subscribes and applies catalog.track from the bus, the
    outbox reaches the bus, and writes to one playlist all land while two
    worker processes (whichever the broker picks) share the environment.

    Every process binds or connects to 127.0.0.1 on ports the OS picks,
    dies with the test process (PR_SET_PDEATHSIG) and is stopped by the
    test's fini. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mb_client.h"
#include "mb_envelope.h"
#include "mb_events.h"
#include "mb_jwt.h"
#include "mb_msgpack.h"
#include "mb_zmq.h"
#include "actor_harness.h"

#define S_WORKERS 2
#define S_ADDS 60

static char s_dir[64];
static char s_bus[256];
static pid_t s_procs[1 + S_WORKERS];
static int s_nprocs;
static uint64_t s_rid;

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*  Starts bin with argv, stderr to <dir>/<name>.log, and waits for its
    ready file; copies the file's line into out (may be NULL). */
static void s_start(const char *name, char *const argv[], const char *ready, char *out, size_t cap)
{
    char log[128];
    snprintf(log, sizeof log, "%s/%s.log", s_dir, name);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0)
            dup2(fd, STDERR_FILENO);
        execv(argv[0], argv);
        _exit(127);
    }
    s_procs[s_nprocs++] = pid;
    int64_t until = s_now_ms() + 10000;
    for (;;) {
        FILE *f = fopen(ready, "r");
        char line[256] = "";
        if (f) {
            bool got = fgets(line, sizeof line, f) != NULL;
            fclose(f);
            if (got) {
                line[strcspn(line, "\r\n")] = '\0';
                if (out)
                    snprintf(out, cap, "%s", line);
                return;
            }
        }
        int status;
        cr_assert_neq(waitpid(pid, &status, WNOHANG), pid, "%s exited at start (see %s)", name,
                      log);
        cr_assert(s_now_ms() < until, "%s wrote no ready file in 10 s", name);
        usleep(20000);
    }
}

static void s_up(void)
{
    const char *bin_dir = getenv("MUSICBUS_BIN_DIR");
    cr_assert(bin_dir, "MUSICBUS_BIN_DIR is not set (run through ctest)");
    th_tmpdir(s_dir, "test_playlists_bus");
    char broker[PATH_MAX], actor[PATH_MAX], ready[128];
    snprintf(broker, sizeof broker, "%s/musicbus-broker", bin_dir);
    snprintf(actor, sizeof actor, "%s/musicbus-playlists", bin_dir);
    snprintf(ready, sizeof ready, "%s/broker.ready", s_dir);
    char *bargv[] = {broker,   "--bind", "tcp://127.0.0.1:*", "--ready-file", ready,
                     "--data", s_dir,    "--heartbeat",       "100",          NULL};
    s_start("broker", bargv, ready, s_bus, sizeof s_bus);
    for (int i = 0; i < S_WORKERS; i++) {
        char name[32];
        snprintf(name, sizeof name, "playlists%d", i);
        snprintf(ready, sizeof ready, "%s/%s.ready", s_dir, name);
        char *aargv[] = {actor,         "--bus", s_bus,          "--data", s_dir,
                         "--heartbeat", "100",   "--ready-file", ready,    NULL};
        s_start(name, aargv, ready, NULL, 0);
    }
}

static void s_down(void)
{
    /* Workers first, then the broker; each gets 5 s to finish, and must
       then exit 0 (under AddressSanitizer: no leak, no error either). */
    int bad = -1, how = 0;
    for (int i = s_nprocs - 1; i >= 0; i--) {
        kill(s_procs[i], SIGTERM);
        int64_t until = s_now_ms() + 5000;
        int status = 0;
        while (waitpid(s_procs[i], &status, WNOHANG) == 0) {
            if (s_now_ms() > until) {
                kill(s_procs[i], SIGKILL);
                waitpid(s_procs[i], &status, 0);
                break;
            }
            usleep(10000);
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            bad = i;
            how = status;
        }
    }
    s_nprocs = 0;
    mb_zmq_shutdown();
    if (bad >= 0) {
        char cmd[160];
        snprintf(cmd, sizeof cmd, "tail -n 30 %s/*.log >&2", s_dir);
        if (system(cmd) != 0)
            perror("tail");
    }
    th_rmdir(s_dir);
    cr_assert_eq(bad, -1, "process %d (0 = broker) did not exit 0 on SIGTERM (wait status %d)", bad,
                 how);
}

TestSuite(playlists_bus, .init = s_up, .fini = s_down, .timeout = 120);

/*  Calls the playlists service as user "owner" with args (JSON text);
    returns the status, copying body.<key> (a string) into out. */
static int s_call(mb_client_t *client, const char *op, const char *args, const char *key, char *out,
                  size_t cap)
{
    json_t *j = th_json("%s", args);
    msgpack_sbuffer req;
    msgpack_sbuffer_init(&req);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    uint64_t rid = ++s_rid;
    mb_request_pack_head(&pk, op, rid, 5000, 2);
    mb_jwt_claims_t claims = {.roles = MB_ROLE_USER};
    snprintf(claims.sub, sizeof claims.sub, "owner");
    mb_pack_cstr(&pk, "auth");
    mb_jwt_pack_auth(&pk, &claims);
    mb_pack_cstr(&pk, "args");
    th_pack_json(&pk, j);
    json_decref(j);
    zmq_msg_t reply;
    int rc = mb_client_call(client, "playlists", req.data, req.size, 5000, &reply);
    msgpack_sbuffer_destroy(&req);
    cr_assert_eq(rc, 0, "no reply to %s: %d", op, rc);
    mb_reply_t rep;
    const char *why, *s;
    size_t len;
    cr_assert_eq(mb_reply_decode(&rep, zmq_msg_data(&reply), zmq_msg_size(&reply), &why), 0, "%s",
                 why);
    cr_assert_eq(rep.rid, rid);
    int status = rep.status;
    if (key && rep.body && mb_obj_str(mb_map_get(rep.body, key), &s, &len) && len < cap) {
        memcpy(out, s, len);
        out[len] = '\0';
    }
    mb_reply_release(&rep);
    zmq_msg_close(&reply);
    return status;
}

Test(playlists_bus, catalog_events_in_outbox_events_out_two_workers)
{
    mb_events_t *bus = mb_events_new(s_bus);
    cr_assert_not_null(bus);
    const char *track = "{\"action\": \"created\", \"id\": \"trk1\", \"object\": {\"id\": "
                        "\"trk1\", \"title\": \"Over the bus\", \"duration_ms\": 1000}}";
    json_t *j = th_json("%s", track);
    msgpack_sbuffer data;
    msgpack_sbuffer_init(&data);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &data, msgpack_sbuffer_write);
    th_pack_json(&pk, j);
    json_decref(j);
    cr_assert_eq(mb_events_publish(bus, "catalog.track", "trk1", data.data, data.size, NULL), 0,
                 "%s", mb_events_error(bus));
    msgpack_sbuffer_destroy(&data);

    mb_client_t *client = mb_client_new(s_bus);
    cr_assert_not_null(client);
    char pid[64] = "", snap[64] = "", args[256];
    cr_assert_eq(
        s_call(client, "playlist.create", "{\"body\": {\"name\": \"bus\"}}", "id", pid, sizeof pid),
        201);
    /* The consumer applies the catalog event within moments; until then
       the track is unknown (400). */
    snprintf(args, sizeof args, "{\"id\": \"%s\", \"body\": {\"ids\": [\"trk1\"]}}", pid);
    int64_t until = s_now_ms() + 10000;
    int status;
    while ((status = s_call(client, "playlist.items_add", args, "snapshot_id", snap,
                            sizeof snap)) == 400) {
        cr_assert(s_now_ms() < until, "the catalog event was not applied in 10 s");
        usleep(50000);
    }
    cr_assert_eq(status, 201);
    /* Writes while two workers share the environment: none is lost. */
    for (int i = 1; i < S_ADDS; i++)
        cr_assert_eq(s_call(client, "playlist.items_add", args, "snapshot_id", snap, sizeof snap),
                     201);
    char total[32] = "";
    snprintf(args, sizeof args, "{\"id\": \"%s\"}", pid);
    cr_assert_eq(s_call(client, "playlist.get", args, "snapshot_id", total, sizeof total), 200);
    cr_assert_str_eq(total, snap, "the last add's snapshot is the playlist's");

    /* The outbox reached the bus: the last change's event carries it. */
    const char *topics[] = {"playlists.playlist", NULL};
    mb_fetch_t q = {.topics = topics, .from = 0, .max = 1000, .wait_ms = 500};
    bool seen = false;
    until = s_now_ms() + 10000;
    while (!seen && s_now_ms() < until) {
        mb_batch_t batch;
        cr_assert_eq(mb_events_fetch(bus, &q, &batch), 0, "%s", mb_events_error(bus));
        for (size_t i = 0; i < batch.count; i++) {
            const char *s;
            size_t len;
            if (mb_obj_str(mb_map_get(batch.events[i].data, "snapshot_id"), &s, &len) &&
                len == strlen(snap) && memcmp(s, snap, len) == 0)
                seen = true;
        }
        q.from = batch.next;
        mb_batch_release(&batch);
    }
    cr_assert(seen, "no playlists.playlist event with the last snapshot id on the bus");
    mb_client_destroy(&client);
    mb_events_destroy(&bus);
}
