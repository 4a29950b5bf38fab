/*  Whole-stack life: an acknowledged write survives kill -9 of everything,
    and every process stops with status 0 on SIGTERM. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "it.h"

static it_stack_t *s_stack;

static void s_down(void)
{
    it_stack_destroy(&s_stack);
}

TestSuite(lifecycle, .fini = s_down, .timeout = 120);

static json_t *s_get(const char *kind, const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/%s/%s", kind, id);
    return it_call(s_stack, "GET", path, NULL, 200);
}

Test(lifecycle, acknowledged_writes_survive_kill9_of_every_process)
{
    it_stack_opts_t opts = {.catalogs = 2, .users = 1};
    s_stack = it_stack_new(&opts);
    cr_assert(s_stack, "the stack did not start");
    cr_assert(it_stack_admin_login(s_stack));

    json_t *artist =
        it_call(s_stack, "POST", "/v1/artists", it_pack("{s:s}", "name", "Durable"), 201);
    char *artist_id = it_str(artist, "id");
    json_t *album =
        it_call(s_stack, "POST", "/v1/albums",
                it_pack("{s:s, s:[s]}", "title", "On Disk", "artist_ids", artist_id), 201);
    char *album_id = it_str(album, "id");
    json_t *track =
        it_call(s_stack, "POST", "/v1/tracks",
                it_pack("{s:s, s:[s], s:s, s:i, s:i}", "title", "Synced", "artist_ids", artist_id,
                        "album_id", album_id, "track_number", 1, "duration_ms", 1234),
                201);
    char *track_id = it_str(track, "id");
    /* The last acknowledged write is a PATCH: updates must be durable too. */
    char path[128];
    snprintf(path, sizeof path, "/v1/artists/%s", artist_id);
    json_t *patched =
        it_call(s_stack, "PATCH", path, it_pack("{s:s}", "name", "Still Durable"), 200);

    /* No SIGTERM, no chance to flush: kill -9, all at once. */
    it_stack_kill_all(s_stack);
    cr_assert_eq(it_stack_find(s_stack, IT_CATALOG, 0), -1);
    it_stack_opts_t again = {.catalogs = 1, .users = 1};
    cr_assert_eq(it_stack_start_all(s_stack, &again), 0, "the stack restarts on the same data");
    /* The admin's account survived too: it signs in again. */
    cr_assert(it_stack_admin_login(s_stack));

    json_t *got = s_get("artists", artist_id);
    cr_assert(json_equal(got, patched), "the artist after the restart is the one acknowledged");
    json_decref(got);
    got = s_get("albums", album_id);
    cr_assert_str_eq(it_json_str(got, "title"), "On Disk");
    const json_t *items = json_object_get(json_object_get(got, "tracks"), "items");
    cr_assert_eq(json_array_size(items), 1);
    cr_assert(json_equal(json_array_get(items, 0), track));
    json_decref(got);
    got = s_get("tracks", track_id);
    cr_assert(json_equal(got, track));
    json_decref(got);

    json_decref(patched);
    json_decref(track);
    json_decref(album);
    json_decref(artist);
    free(track_id);
    free(album_id);
    free(artist_id);
}

Test(lifecycle, every_process_exits_0_on_sigterm)
{
    it_stack_opts_t opts = {.catalogs = 2, .users = 1, .stats = 1};
    s_stack = it_stack_new(&opts);
    cr_assert(s_stack, "the stack did not start");
    cr_assert(it_stack_admin_login(s_stack));
    /* Some work first, so each process has something behind it. */
    for (int i = 0; i < 4; i++)
        json_decref(
            it_call(s_stack, "POST", "/v1/artists", it_pack("{s:s}", "name", "Quitter"), 201));

    static const struct {
        it_kind_t kind;
        int nth;
        const char *name;
    } order[] = {{IT_GATEWAY, 0, "gateway"},   {IT_STATS, 0, "stats"},
                 {IT_USERS, 0, "users"},       {IT_CATALOG, 1, "catalog 2"},
                 {IT_CATALOG, 0, "catalog 1"}, {IT_BROKER, 0, "broker"}};
    enum { N = sizeof order / sizeof order[0] };
    int procs[N];
    for (int i = 0; i < N; i++) {
        procs[i] = it_stack_find(s_stack, order[i].kind, order[i].nth);
        cr_assert_geq(procs[i], 0, "%s is running", order[i].name);
    }
    for (int i = 0; i < N; i++) {
        long t0 = it_now_ms();
        int status = it_stack_stop(s_stack, procs[i], IT_STOP_TIMEOUT_MS);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "%s: exit 0 on SIGTERM, got status 0x%x", order[i].name, status);
        fprintf(stderr, "it: %s stopped with 0 in %ld ms\n", order[i].name, it_now_ms() - t0);
    }
}

Test(lifecycle, a_worker_stops_cleanly_while_the_broker_is_gone)
{
    /* A worker whose broker vanished is reconnecting; SIGTERM must still
       end it promptly with 0 (no hang on linger or backoff). */
    s_stack = it_stack_new(NULL);
    cr_assert(s_stack, "the stack did not start");
    int broker = it_stack_find(s_stack, IT_BROKER, 0);
    it_stack_signal(s_stack, broker, SIGKILL);
    it_stack_wait(s_stack, broker, 5000);
    usleep(5 * IT_HEARTBEAT_MS * 1000);
    int n = it_stack_stop_all(s_stack);
    cr_assert_eq(n, 0, "%d processes did not exit 0 on SIGTERM", n);
}
