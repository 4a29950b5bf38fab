/*  bench_stats_import — musicbus-import-listens on 1,000,000 listens:
    time and peak memory, and the same for a tenth of that, to show memory
    does not grow with the input. Then how long the stats consumer takes
    to apply them.

        bench_stats_import [LISTENS] [TRACKS]      (1000000, 2000)

    Starts musicbus-broker and musicbus-catalog from MUSICBUS_BIN_DIR (or
    the folder of this executable) on 127.0.0.1 with data in a temporary
    folder, adds TRACKS tracks, writes JSON lines of listens (1% unknown
    tracks, 0.1% malformed), runs the importer on LISTENS/10 and LISTENS
    of them (peak RSS from wait4), then starts musicbus-stats and times the
    consumer until it has applied the log. Every process it starts is
    stopped. Not a test: run it by hand. */
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "mb_actor.h"
#include "mb_client.h"
#include "mb_envelope.h"
#include "mb_events.h"
#include "mb_jwt.h"
#include "mb_msgpack.h"
#include "mb_zmq.h"
#include "stats.h"
#include "actor_harness.h"
#include "stats_store.h"

extern char **environ;

static char s_dir[64], s_bin[PATH_MAX], s_bus[256];
static pid_t s_pids[3];
static size_t s_n_pids;
static uint64_t s_rid;

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void s_on_signal(int sig)
{
    for (size_t i = 0; i < s_n_pids; i++)
        kill(s_pids[i], SIGTERM);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void s_die(const char *what)
{
    fprintf(stderr, "bench_stats_import: %s\n", what);
    for (size_t i = 0; i < s_n_pids; i++) {
        kill(s_pids[i], SIGTERM);
        waitpid(s_pids[i], NULL, 0);
    }
    exit(1);
}

static pid_t s_spawn(const char *name, char *const argv[], const char *out)
{
    char log[128];
    snprintf(log, sizeof log, "%s/%s.log", s_dir, name);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out ? out : "/dev/null",
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) != 0)
        s_die("cannot start a process");
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

static void s_start(const char *name, bool broker)
{
    char bin[PATH_MAX + 32], ready[128], data[128];
    snprintf(bin, sizeof bin, "%s/musicbus-%s", s_bin, name);
    snprintf(ready, sizeof ready, "%s/%s.ready", s_dir, name);
    snprintf(data, sizeof data, "%s/data", s_dir);
    char *argv[] = {bin,
                    broker ? "--bind" : "--bus",
                    broker ? "tcp://127.0.0.1:*" : s_bus,
                    "--data",
                    data,
                    "--ready-file",
                    ready,
                    broker ? NULL : "--map-size",
                    "4096",
                    NULL};
    s_pids[s_n_pids++] = s_spawn(name, argv, NULL);
    for (int i = 0; i < 1500; i++) {
        FILE *f = fopen(ready, "r");
        char got[256] = "";
        if (f) {
            bool ok = fgets(got, sizeof got, f) != NULL;
            fclose(f);
            if (ok) {
                if (broker)
                    snprintf(s_bus, sizeof s_bus, "%s", got);
                return;
            }
        }
        usleep(10000);
    }
    s_die("a process wrote no ready file");
}

static json_t *s_call(mb_client_t *c, const char *service, const char *op, json_t *args)
{
    msgpack_sbuffer req;
    msgpack_sbuffer_init(&req);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    uint64_t rid = ++s_rid;
    mb_request_pack_head(&pk, op, rid, 10000, 2);
    mb_jwt_claims_t claims = {.roles = MB_ROLE_USER | MB_ROLE_ADMIN};
    snprintf(claims.sub, sizeof claims.sub, "bench");
    mb_pack_cstr(&pk, "auth");
    mb_jwt_pack_auth(&pk, &claims);
    mb_pack_cstr(&pk, "args");
    th_pack_json(&pk, args);
    json_decref(args);
    zmq_msg_t msg;
    if (mb_client_call(c, service, req.data, req.size, 10000, &msg) != 0)
        s_die("a catalog call failed");
    mb_reply_t rep;
    const char *why;
    if (mb_reply_decode(&rep, zmq_msg_data(&msg), zmq_msg_size(&msg), &why) != 0 || !rep.body)
        s_die("a catalog call was refused");
    json_t *body = th_to_json(rep.body);
    mb_reply_release(&rep);
    zmq_msg_close(&msg);
    msgpack_sbuffer_destroy(&req);
    return body;
}

/*  Writes `n` listens of `tracks` songs as JSON lines. */
static void s_write_listens(const char *path, long n, long tracks)
{
    FILE *f = fopen(path, "w");
    for (long i = 0; i < n; i++) {
        long t = (i * 7919) % tracks;
        if (i % 1000 == 999)
            fprintf(f, "{\"listened_at\":%ld,\"track_metadata\":{\"artist_name\":\"\"}}\n",
                    1600000000 + i * 37);
        else if (i % 100 == 42)
            fprintf(f,
                    "{\"listened_at\":%ld,\"track_metadata\":{\"artist_name\":\"Unknown %ld\","
                    "\"track_name\":\"Nothing %ld\",\"release_name\":\"Nowhere\"}}\n",
                    1600000000 + i * 37, i % 50, i % 50);
        else
            fprintf(f,
                    "{\"listened_at\":%ld,\"track_metadata\":{\"artist_name\":\"Artist %ld\","
                    "\"track_name\":\"Song %ld\",\"release_name\":\"Album %ld\","
                    "\"additional_info\":{\"duration_ms\":%ld,\"submission_client\":"
                    "\"bench\"}},\"user_name\":\"bench\"}\n",
                    1600000000 + i * 37, t % 200, t, t % 200, 120000 + t);
    }
    fclose(f);
}

/*  Runs the importer on `path`; prints wall time and peak RSS. */
static void s_import(const char *path, long n)
{
    char bin[PATH_MAX + 32], out[128], report[128];
    snprintf(bin, sizeof bin, "%s/musicbus-import-listens", s_bin);
    snprintf(out, sizeof out, "%s/import.json", s_dir);
    snprintf(report, sizeof report, "%s/unmatched.jsonl", s_dir);
    char *argv[] = {bin,           "--bus", s_bus,        "--user", "bench-user",
                    "--unmatched", report,  (char *)path, NULL};
    double t0 = s_now();
    pid_t pid = s_spawn("import", argv, out);
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        s_die("the importer failed (see import.log)");
    double s = s_now() - t0;
    json_t *sum = json_load_file(out, 0, NULL);
    struct stat st;
    stat(path, &st);
    printf("import %8ld listens (%6.1f MiB): %6.2f s, %7.0f listens/s, peak RSS %6.1f MiB, "
           "cpu %.2f s user + %.2f s sys; matched %lld unmatched %lld rejected %lld published "
           "%lld, %lld catalog queries\n",
           n, (double)st.st_size / (1 << 20), s, (double)n / s, (double)ru.ru_maxrss / 1024,
           (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6,
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6,
           (long long)json_integer_value(json_object_get(sum, "matched")),
           (long long)json_integer_value(json_object_get(sum, "unmatched")),
           (long long)json_integer_value(json_object_get(sum, "rejected")),
           (long long)json_integer_value(json_object_get(sum, "published")),
           (long long)json_integer_value(json_object_get(sum, "queries")));
    fflush(stdout);
    json_decref(sum);
}

int main(int argc, char **argv)
{
    long listens = argc > 1 ? atol(argv[1]) : 1000000;
    long tracks = argc > 2 ? atol(argv[2]) : 2000;
    const char *bin_dir = getenv("MUSICBUS_BIN_DIR");
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    self[n > 0 ? n : 0] = '\0';
    snprintf(s_bin, sizeof s_bin, "%s", bin_dir ? bin_dir : dirname(self));
    signal(SIGTERM, s_on_signal); /* every process started here stops with it */
    signal(SIGINT, s_on_signal);
    snprintf(s_dir, sizeof s_dir, "/tmp/bench_stats_import.XXXXXX");
    if (!mkdtemp(s_dir))
        s_die("no temporary folder");
    s_start("broker", true);
    s_start("catalog", false);
    mb_client_t *c = mb_client_new(s_bus);

    double t0 = s_now();
    char album[64] = "";
    char artist_ids[200][64];
    for (long a = 0; a < 200 && a < tracks; a++) {
        json_t *r = s_call(c, "catalog", "artist.create",
                           th_json("{\"body\":{\"name\":\"Artist %ld\"}}", a));
        snprintf(artist_ids[a], sizeof artist_ids[a], "%s",
                 json_string_value(json_object_get(r, "id")));
        json_decref(r);
    }
    for (long t = 0; t < tracks; t++) {
        if (t % 900 == 0) {
            json_t *r =
                s_call(c, "catalog", "album.create",
                       th_json("{\"body\":{\"title\":\"Album %ld\",\"artist_ids\":[\"%s\"]}}", t,
                              artist_ids[0]));
            snprintf(album, sizeof album, "%s", json_string_value(json_object_get(r, "id")));
            json_decref(r);
        }
        json_decref(s_call(c, "catalog", "track.create",
                           th_json("{\"body\":{\"title\":\"Song %ld\",\"artist_ids\":[\"%s\"],"
                                  "\"album_id\":\"%s\",\"track_number\":%ld,\"duration_ms\":%ld}}",
                                  t, artist_ids[t % 200], album, t % 900 + 1, 120000 + t)));
    }
    printf("catalog: %ld tracks of 200 artists in %.1f s\n", tracks, s_now() - t0);

    char small[128], big[128];
    snprintf(small, sizeof small, "%s/listens-small.jsonl", s_dir);
    snprintf(big, sizeof big, "%s/listens.jsonl", s_dir);
    s_write_listens(small, listens / 10, tracks);
    s_write_listens(big, listens, tracks);
    s_import(small, listens / 10);
    s_import(big, listens);

    /* The consumer: from an empty stats folder, until it applied the log. */
    mb_events_t *bus = mb_events_new(s_bus);
    mb_batch_t batch;
    if (mb_events_fetch(bus, &(mb_fetch_t){.prefix = "", .max = 1}, &batch) != 0)
        s_die("bus.fetch failed");
    uint64_t head = batch.head;
    mb_batch_release(&batch);
    t0 = s_now();
    s_start("stats", false);
    mb_actor_def_t def = *stats_actor_def();
    char data[128];
    snprintf(data, sizeof data, "%s/data/stats", s_dir);
    def.map_size = (size_t)4096 << 20;
    MDB_env *env;
    if (mb_actor_open_env(&def, data, &env) != 0)
        s_die("cannot open the stats environment");
    uint64_t next = 0, skipped = 0;
    while (next <= head) {
        usleep(200000);
        if (mb_consumer_offset(env, STATS_GROUP_PLAYS, &next, &skipped) != 0)
            s_die("cannot read the consumer's offset");
    }
    double s = s_now() - t0;
    MDB_stat ms;
    mdb_env_stat(env, &ms);
    MDB_envinfo info;
    mdb_env_info(env, &info);
    mdb_env_close(env);
    char status_path[64];
    snprintf(status_path, sizeof status_path, "/proc/%d/status", (int)s_pids[2]);
    FILE *f = fopen(status_path, "r");
    char line[256], hwm[64] = "?";
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0)
            snprintf(hwm, sizeof hwm, "%s", line + 6 + strspn(line + 6, " \t"));
    if (f)
        fclose(f);
    hwm[strcspn(hwm, "\n")] = '\0';
    printf("stats consumer: %llu events applied in %.1f s (%.0f events/s), %llu skipped; "
           "LMDB %.0f MiB in use; peak RSS %s (the map counts as it is touched)\n",
           (unsigned long long)head, s, (double)head / s, (unsigned long long)skipped,
           (double)(info.me_last_pgno + 1) * ms.ms_psize / (1 << 20), hwm);

    mb_events_destroy(&bus);
    mb_client_destroy(&c);
    for (size_t i = s_n_pids; i-- > 0;) {
        kill(s_pids[i], SIGTERM);
        waitpid(s_pids[i], NULL, 0);
    }
    mb_zmq_shutdown();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", s_dir);
    if (!getenv("BENCH_KEEP") && system(cmd) != 0)
        return 1;
    return 0;
}
