/*  musicbus-ingest end to end: a broker, the catalog and the transcode
    actor as real processes (bound to 127.0.0.1, ports the OS picks), a
    folder of tagged masters (one with cover art, one broken), the tool run
    twice. The second run changes nothing. Skips when the executables are
    not built. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libavutil/error.h>
#include <libavutil/log.h>

#include "mb_client.h"
#include "mb_envelope.h"
#include "mb_msgpack.h"
#include "mb_zmq.h"
#include "tc_media.h"

#define S_PROCS 3

static char s_dir[64], s_bin[512], s_endpoint[256];
static pid_t s_pids[S_PROCS];
static mb_client_t *s_client; /* the test's own bus connection */

static void s_exe(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", s_bin, name);
}

static pid_t s_spawn(char *const argv[], const char *log)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        FILE *f = freopen(log, "a", stderr);
        (void)f;
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static bool s_read_file(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(out, 1, cap - 1, f);
    fclose(f);
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
        out[--n] = '\0';
    return n > 0;
}

static void s_wait_ready(const char *path, char *out, size_t cap)
{
    for (int i = 0; i < 1000; i++) {
        if (s_read_file(path, out, cap))
            return;
        usleep(10000);
    }
    cr_assert_fail("%s never appeared", path);
}

static void s_setup(void)
{
    av_log_set_level(AV_LOG_QUIET);
    const char *bin = getenv("MUSICBUS_BIN_DIR");
    snprintf(s_bin, sizeof s_bin, "%s", bin ? bin : "build/bin");
    tc_tmpdir(s_dir, "test_transcode_ingest");
}

static void s_teardown(void)
{
    for (int i = S_PROCS - 1; i >= 0; i--)
        if (s_pids[i] > 0) {
            kill(s_pids[i], SIGTERM);
            int status;
            waitpid(s_pids[i], &status, 0);
            s_pids[i] = 0;
        }
    /* Every socket must be closed before the context, or shutdown waits. */
    mb_client_destroy(&s_client);
    mb_zmq_shutdown();
    tc_rm_rf(s_dir);
}

TestSuite(transcode_ingest, .init = s_setup, .fini = s_teardown, .timeout = 600);

static void s_start_stack(void)
{
    char broker[600], catalog[600], transcode[600];
    s_exe(broker, sizeof broker, "musicbus-broker");
    s_exe(catalog, sizeof catalog, "musicbus-catalog");
    s_exe(transcode, sizeof transcode, "musicbus-transcode");
    if (access(broker, X_OK) || access(catalog, X_OK) || access(transcode, X_OK))
        cr_skip_test("musicbus-broker, -catalog or -transcode is not built in %s", s_bin);
    char data[128], log[128], ready[128], scratch[256];
    snprintf(data, sizeof data, "%s/data", s_dir);
    snprintf(log, sizeof log, "%s/stack.log", s_dir);
    mkdir(data, 0755);
    snprintf(ready, sizeof ready, "%s/broker.ready", s_dir);
    char *bargv[] = {broker, "--bind", "tcp://127.0.0.1:*", "--data", data, "--ready-file",
                     ready,  NULL};
    s_pids[0] = s_spawn(bargv, log);
    s_wait_ready(ready, s_endpoint, sizeof s_endpoint);
    snprintf(ready, sizeof ready, "%s/catalog.ready", s_dir);
    char *cargv[] = {catalog, "--bus", s_endpoint, "--data", data, "--ready-file", ready, NULL};
    s_pids[1] = s_spawn(cargv, log);
    s_wait_ready(ready, scratch, sizeof scratch);
    snprintf(ready, sizeof ready, "%s/transcode.ready", s_dir);
    char *targv[] = {transcode, "--bus", s_endpoint, "--data", data, "--ready-file", ready, NULL};
    s_pids[2] = s_spawn(targv, log);
    s_wait_ready(ready, scratch, sizeof scratch);
}

/*  Runs musicbus-ingest; returns its exit status and its stdout in out. */
static int s_ingest(char *out, size_t cap)
{
    char exe[600], data[128], music[128], cmd[2048];
    s_exe(exe, sizeof exe, "musicbus-ingest");
    if (access(exe, X_OK))
        cr_skip_test("musicbus-ingest is not built");
    snprintf(data, sizeof data, "%s/data", s_dir);
    snprintf(music, sizeof music, "%s/music", s_dir);
    snprintf(cmd, sizeof cmd, "'%s' --bus '%s' --data '%s' --wait 240 '%s' 2>>'%s/ingest.log'", exe,
             s_endpoint, data, music, s_dir);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void s_write(const char *rel, tc_gen_t gen)
{
    char path[512];
    snprintf(path, sizeof path, "%s/music/%s", s_dir, rel);
    int rc = tc_generate(path, &gen);
    if (rc == AVERROR_ENCODER_NOT_FOUND)
        cr_skip_test("no %s encoder", gen.codec);
    cr_assert_eq(rc, 0, "%s: %s", rel, av_err2str(rc));
}

/*  One bus call with a map of string args; returns the status and keeps
    the reply in *rep (release it). */
static int s_bus(const char *service, const char *op, const char *k1, const char *v1,
                 mb_reply_t *rep)
{
    if (!s_client)
        s_client = mb_client_new(s_endpoint);
    msgpack_sbuffer req;
    msgpack_sbuffer_init(&req);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    static uint64_t rid;
    mb_request_pack_head(&pk, op, ++rid, 0, 1);
    mb_pack_cstr(&pk, "args");
    msgpack_pack_map(&pk, 1);
    mb_pack_cstr(&pk, k1);
    if (!strcmp(k1, "queries")) {
        msgpack_pack_array(&pk, 1);
        msgpack_pack_map(&pk, 1);
        mb_pack_cstr(&pk, "isrc");
    }
    mb_pack_cstr(&pk, v1);
    zmq_msg_t msg;
    cr_assert_eq(mb_client_call(s_client, service, req.data, req.size, 10000, &msg), 0);
    const char *why;
    cr_assert_eq(mb_reply_decode(rep, zmq_msg_data(&msg), zmq_msg_size(&msg), &why), 0);
    zmq_msg_close(&msg);
    msgpack_sbuffer_destroy(&req);
    return rep->status;
}

Test(transcode_ingest, usage_a_folder_in_twice)
{
    char music[128], album[192], cover[192];
    snprintf(music, sizeof music, "%s/music", s_dir);
    snprintf(album, sizeof album, "%s/Artist One - First Album", music);
    mkdir(music, 0755);
    mkdir(album, 0755);
    snprintf(cover, sizeof cover, "%s/cover.jpg", s_dir);
    cr_assert_eq(tc_jpeg(cover, 200, 200), 0);
    const char *tags1[] = {"artist",      "Artist One", "album_artist", "Artist One",      "album",
                           "First Album", "title",      "Opening",      "track",           "1/2",
                           "date",        "2001-05-20", "ISRC",         "GB-AAA-01-00001", "genre",
                           "Rock",        NULL};
    const char *tags2[] = {"artist", "Artist One", "album", "First Album", "title", "Second",
                           "track",  "2/2",        "date",  "2001",        NULL};
    s_write("Artist One - First Album/01.flac", (tc_gen_t){.format = "flac",
                                                           .codec = "flac",
                                                           .rate = 44100,
                                                           .channels = 2,
                                                           .seconds = 8,
                                                           .amplitude = 0.2,
                                                           .tags = tags1,
                                                           .cover = cover});
    s_write("Artist One - First Album/02.mp3", (tc_gen_t){.format = "mp3",
                                                          .codec = "libmp3lame",
                                                          .rate = 44100,
                                                          .channels = 2,
                                                          .seconds = 7,
                                                          .amplitude = 0.2,
                                                          .bitrate = 192000,
                                                          .tags = tags2});
    s_write("untagged.wav", (tc_gen_t){.format = "wav",
                                       .codec = "pcm_s16le",
                                       .rate = 48000,
                                       .channels = 2,
                                       .seconds = 3,
                                       .amplitude = 0.2});
    char broken[256];
    snprintf(broken, sizeof broken, "%s/broken.flac", music);
    FILE *f = fopen(broken, "wb");
    fputs("not a flac file at all", f);
    fclose(f);

    s_start_stack();
    char out[8192];
    int status = s_ingest(out, sizeof out);
    cr_assert_eq(status, 0, "exit %d:\n%s", status, out);
    cr_assert(strstr(out, "files: 4 found, 4 done"), "%s", out);
    cr_assert(strstr(out, "masters: 3 new versions, 0 already there, 0 files unchanged"), "%s",
              out);
    cr_assert(strstr(out, "catalog: 2 artists, 2 albums, 3 tracks created"), "%s", out);
    cr_assert(strstr(out, "1 covers"), "%s", out);
    cr_assert(strstr(out, "broken: 1"), "%s", out);
    cr_assert(strstr(out, "broken.flac"), "%s", out);
    cr_assert(strstr(out, "transcoded: 3 ready, 0 failed"), "%s", out);

    /* The tagged track is in the catalog under its ISRC, with its audio. */
    mb_reply_t rep;
    cr_assert_eq(s_bus("catalog", "track.match", "queries", "GBAAA0100001", &rep), 200);
    const msgpack_object *m = &mb_map_get(rep.body, "matches")->via.array.ptr[0];
    cr_assert_eq(m->type, MSGPACK_OBJECT_MAP, "the ISRC matched nothing");
    char track[64];
    const char *s;
    size_t len;
    cr_assert(mb_obj_str(mb_map_get(m, "id"), &s, &len));
    snprintf(track, sizeof track, "%.*s", (int)len, s);
    mb_reply_release(&rep);
    cr_assert_eq(s_bus("transcode", "audio.versions", "id", track, &rep), 200);
    const msgpack_object *versions = mb_map_get(rep.body, "versions");
    cr_assert_eq(versions->via.array.size, 1);
    cr_assert(mb_obj_str_eq(mb_map_get(&versions->via.array.ptr[0], "status"), "ready"));
    mb_reply_release(&rep);

    /* Again: nothing changes. */
    status = s_ingest(out, sizeof out);
    cr_assert_eq(status, 0, "%s", out);
    cr_assert(strstr(out, "masters: 0 new versions, 0 already there, 3 files unchanged"), "%s",
              out);
    cr_assert(strstr(out, "catalog: 0 artists, 0 albums, 0 tracks created; 0 tracks updated"), "%s",
              out);
    cr_assert_eq(s_bus("transcode", "audio.versions", "id", track, &rep), 200);
    cr_assert_eq(mb_map_get(rep.body, "versions")->via.array.size, 1);
    mb_reply_release(&rep);
}
