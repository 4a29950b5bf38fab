/*  bench_playlists — what a write and a read cost on a 10,000-item
    playlist, through the actor's real handlers (mb_actor_dispatch) on a
    real LMDB environment, for several chunk sizes.

        bench_playlists [--writes N] [--reads N] [--chunks 64,256,10000]
                        [--dir DIR] [--nosync]

    For each chunk size: a fresh environment under DIR (default /tmp), a
    playlist filled with 9,000 items, then N single-track adds (half at
    the end, half at random positions: 9,000 -> 9,000 + N items), N/5
    moves of the last item to the front, and N reads of 100 items at
    random offsets. Writes are durable (LMDB syncs every commit) unless
    --nosync. "bytes/write" is what the process handed the kernel per
    write (wchar of /proc/self/io), which is what the chunk size trades:
    10000 means one value per playlist.

    No bus and no gateway: this is the actor's own cost. The gateway
    benchmark (bench/) measures the same ops end to end. */
#include <getopt.h>
#include <lmdb.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mb_actor.h"
#include "mb_envelope.h"
#include "mb_jwt.h"
#include "mb_msgpack.h"
#include "playlists.h"
#include "playlists_store.h"

#define S_FILL 9000
#define S_TRACKS 100
/* Ids as long as the ones musicbus makes (22 characters), so that the
   bytes per item are those of real data. */
#define S_TRACK_ID "trk%019d"
#define S_USER "3Jq0xYwAbCdEfGhIjKlMnP"

static mb_actor_def_t s_def;
static MDB_env *s_env;
static void *s_state;
static uint64_t s_rid;

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned long long s_wchar(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    char line[128];
    unsigned long long v = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "wchar: %llu", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

/*  Request head with auth "owner" and an args map of n_args entries; the
    caller packs them. */
static void s_head(msgpack_packer *pk, const char *op, uint32_t n_args)
{
    mb_request_pack_head(pk, op, ++s_rid, 5000, 2);
    mb_jwt_claims_t claims = {.roles = MB_ROLE_USER};
    snprintf(claims.sub, sizeof claims.sub, "%s", S_USER);
    mb_pack_cstr(pk, "auth");
    mb_jwt_pack_auth(pk, &claims);
    mb_pack_cstr(pk, "args");
    msgpack_pack_map(pk, n_args);
}

/*  Dispatches the request in `req` (then reset); returns the status and
    copies body.id when there is one into id[64]. */
static int s_send(msgpack_sbuffer *req, char *id)
{
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    mb_actor_dispatch(&s_def, s_env, s_state, req->data, req->size, &out);
    mb_reply_t rep;
    const char *why, *s;
    size_t len;
    int status = -1;
    if (mb_reply_decode(&rep, out.data, out.size, &why) == 0) {
        status = rep.status;
        if (id && rep.body && mb_obj_str(mb_map_get(rep.body, "id"), &s, &len) && len < 64) {
            memcpy(id, s, len);
            id[len] = '\0';
        }
        mb_reply_release(&rep);
    }
    msgpack_sbuffer_destroy(&out);
    msgpack_sbuffer_clear(req);
    return status;
}

/*  Adds `n` tracks (t<first>.. modulo S_TRACKS) at `pos` (-1: the end). */
static int s_add(msgpack_sbuffer *req, const char *pid, int first, int n, long pos)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, req, msgpack_sbuffer_write);
    s_head(&pk, "playlist.items_add", 2);
    mb_pack_cstr(&pk, "id");
    mb_pack_cstr(&pk, pid);
    mb_pack_cstr(&pk, "body");
    msgpack_pack_map(&pk, pos < 0 ? 1 : 2);
    mb_pack_cstr(&pk, "ids");
    msgpack_pack_array(&pk, (size_t)n);
    for (int i = 0; i < n; i++) {
        char t[32];
        snprintf(t, sizeof t, S_TRACK_ID, (first + i) % S_TRACKS);
        mb_pack_cstr(&pk, t);
    }
    if (pos >= 0) {
        mb_pack_cstr(&pk, "position");
        msgpack_pack_int64(&pk, pos);
    }
    return s_send(req, NULL);
}

static void s_catalog(void)
{
    MDB_txn *txn;
    if (mdb_txn_begin(s_env, NULL, 0, &txn) != 0)
        exit(1);
    for (int i = 0; i < S_TRACKS; i++) {
        char id[32];
        snprintf(id, sizeof id, S_TRACK_ID, i);
        msgpack_sbuffer buf;
        msgpack_sbuffer_init(&buf);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 3);
        mb_pack_cstr(&pk, "action");
        mb_pack_cstr(&pk, "created");
        mb_pack_cstr(&pk, "id");
        mb_pack_cstr(&pk, id);
        mb_pack_cstr(&pk, "object");
        msgpack_pack_map(&pk, 4);
        mb_pack_cstr(&pk, "title");
        mb_pack_cstr(&pk, "A song title of ordinary length");
        mb_pack_cstr(&pk, "artist_ids");
        msgpack_pack_array(&pk, 1);
        mb_pack_cstr(&pk, "3Jq0xYwAbCdEfGhIjKlMnO");
        mb_pack_cstr(&pk, "album_id");
        mb_pack_cstr(&pk, "7Ab0xYwAbCdEfGhIjKlMnO");
        mb_pack_cstr(&pk, "duration_ms");
        msgpack_pack_int64(&pk, 215000);
        msgpack_unpacked msg;
        msgpack_unpacked_init(&msg);
        msgpack_unpack_next(&msg, buf.data, buf.size, NULL);
        mb_event_t ev = {.topic = "catalog.track", .topic_len = 13, .data = &msg.data};
        if (playlists_apply(txn, &ev, s_state) != 0)
            exit(1);
        msgpack_unpacked_destroy(&msg);
        msgpack_sbuffer_destroy(&buf);
    }
    if (mdb_txn_commit(txn) != 0)
        exit(1);
}

static int s_rm(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

static void s_run(size_t chunk, int writes, int reads, const char *base, bool nosync)
{
    char dir[128];
    snprintf(dir, sizeof dir, "%s/bench_playlists.XXXXXX", base);
    if (!mkdtemp(dir) || mb_actor_open_env(&s_def, dir, &s_env) != 0 ||
        s_def.open(s_env, &s_state) != 0)
        exit(1);
    playlists_store_set_chunk_max(s_state, chunk);
    mdb_env_set_flags(s_env, MDB_NOSYNC, 1); /* the fill is not measured */
    s_catalog();
    msgpack_sbuffer req;
    msgpack_sbuffer_init(&req);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    s_head(&pk, "playlist.create", 1);
    mb_pack_cstr(&pk, "body");
    msgpack_pack_map(&pk, 1);
    mb_pack_cstr(&pk, "name");
    mb_pack_cstr(&pk, "bench");
    char pid[64];
    if (s_send(&req, pid) != 201)
        exit(1);
    for (int i = 0; i < S_FILL; i += 100)
        if (s_add(&req, pid, i, 100, -1) != 201)
            exit(1);
    mdb_env_sync(s_env, 1);
    mdb_env_set_flags(s_env, MDB_NOSYNC, nosync);

    srand(7);
    unsigned long long w0 = s_wchar();
    double t0 = s_now();
    for (int i = 0; i < writes; i++) {
        long pos = i % 2 ? rand() % (S_FILL + i) : -1;
        if (s_add(&req, pid, i, 1, pos) != 201) {
            fprintf(stderr, "add %d failed\n", i);
            exit(1);
        }
    }
    double t_add = s_now() - t0;
    unsigned long long w_add = s_wchar() - w0;

    int moves = writes / 5;
    long total = S_FILL + writes;
    t0 = s_now();
    for (int i = 0; i < moves; i++) {
        msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
        s_head(&pk, "playlist.items_reorder", 2);
        mb_pack_cstr(&pk, "id");
        mb_pack_cstr(&pk, pid);
        mb_pack_cstr(&pk, "body");
        msgpack_pack_map(&pk, 2);
        mb_pack_cstr(&pk, "range_start");
        msgpack_pack_int64(&pk, total - 1);
        mb_pack_cstr(&pk, "insert_before");
        msgpack_pack_int64(&pk, 0);
        if (s_send(&req, NULL) != 200)
            exit(1);
    }
    double t_move = s_now() - t0;

    t0 = s_now();
    for (int i = 0; i < reads; i++) {
        msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
        s_head(&pk, "playlist.items", 3);
        mb_pack_cstr(&pk, "id");
        mb_pack_cstr(&pk, pid);
        mb_pack_cstr(&pk, "limit");
        msgpack_pack_int64(&pk, 100);
        mb_pack_cstr(&pk, "offset");
        msgpack_pack_int64(&pk, rand() % (total - 100));
        if (s_send(&req, NULL) != 200)
            exit(1);
    }
    double t_read = s_now() - t0;
    printf("%6zu  %-6s  %9.0f  %9.0f  %12.0f  %11.0f  %10.0f\n", chunk, nosync ? "nosync" : "sync",
           writes / t_add, (double)w_add / writes, moves ? moves / t_move : 0, reads / t_read,
           t_read / reads * 1e6);
    fflush(stdout);
    msgpack_sbuffer_destroy(&req);
    s_def.close(s_state);
    mdb_env_close(s_env);
    s_env = NULL;
    if (s_rm(dir) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

int main(int argc, char **argv)
{
    int writes = 1000, reads = 2000;
    bool nosync = false;
    const char *chunks = "64,256,1024,10000", *base = "/tmp";
    static const struct option opts[] = {
        {"writes", required_argument, NULL, 'w'}, {"reads", required_argument, NULL, 'r'},
        {"chunks", required_argument, NULL, 'c'}, {"dir", required_argument, NULL, 'd'},
        {"nosync", no_argument, NULL, 'n'},       {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'w')
            writes = atoi(optarg);
        else if (c == 'r')
            reads = atoi(optarg);
        else if (c == 'c')
            chunks = optarg;
        else if (c == 'd')
            base = optarg;
        else if (c == 'n')
            nosync = true;
        else
            return 2;
    }
    if (writes < 1 || writes > 10000 - S_FILL || reads < 1) {
        fprintf(stderr, "--writes 1..%d, --reads >= 1\n", 10000 - S_FILL);
        return 2;
    }
    s_def = *playlists_actor_def();
    s_def.map_size = (size_t)1 << 30;
    printf("playlist of %d items growing to %d; %d single-track adds (half appended, half at "
           "random positions), %d moves last->first, %d reads of 100 items\n",
           S_FILL, S_FILL + writes, writes, writes / 5, reads);
    printf(" chunk  commit  adds/s     bytes/add  moves/s       reads/s      us/read\n");
    char *list = strdup(chunks);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ","))
        s_run((size_t)atol(tok), writes, reads, base, nosync);
    free(list);
    return 0;
}
