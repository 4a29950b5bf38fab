/*  Failures of real processes: a worker killed while it holds a request,
    no worker at all, the broker restarted under the workers and gateway. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "it.h"

static it_stack_t *s_stack;

static void s_down(void)
{
    it_stack_destroy(&s_stack);
}

TestSuite(failover, .fini = s_down, .timeout = 120);

static void s_sleep_ms(long ms)
{
    usleep((useconds_t)ms * 1000);
}

/* ---- kill -9 of the worker holding a request ------------------------------ */

#define HELD_REQUESTS 8
#define LIVENESS 10       /* the frozen worker counts as alive for 1 s */
#define KILL_AFTER_MS 300 /* well within that second */
#define REPLY_DEADLINE_MS 5000

typedef struct {
    int victim; /* handle of the stopped worker */
    bool killed;
} s_killer_t;

static void s_kill_mid_flight(void *arg, long elapsed_ms)
{
    s_killer_t *k = arg;
    if (!k->killed && elapsed_ms >= KILL_AFTER_MS) {
        cr_assert_eq(it_stack_signal(s_stack, k->victim, SIGKILL), 0);
        k->killed = true;
    }
}

Test(failover, kill9_of_the_worker_holding_a_request)
{
    it_stack_opts_t opts = {.catalogs = 2, .liveness = LIVENESS};
    s_stack = it_stack_new(&opts);
    cr_assert(s_stack, "the stack did not start");
    cr_assert(it_stack_sign_admin(s_stack));

    char *ids[HELD_REQUESTS];
    for (int i = 0; i < HELD_REQUESTS; i++) {
        char name[32];
        snprintf(name, sizeof name, "artist %d", i);
        json_t *a = it_call(s_stack, "POST", "/v1/artists", it_pack("{s:s}", "name", name), 201);
        ids[i] = it_str(a, "id");
        json_decref(a);
    }
    /* Let both workers be idle at the broker, then freeze one: the broker
       still takes it for alive until LIVENESS heartbeats are missed, so it
       hands it a request, which stays held there until the worker is
       killed and the broker gives the request to the other worker. */
    s_sleep_ms(3 * IT_HEARTBEAT_MS);
    s_killer_t killer = {.victim = it_stack_find(s_stack, IT_CATALOG, 0)};
    cr_assert_geq(killer.victim, 0);
    cr_assert_eq(it_stack_signal(s_stack, killer.victim, SIGSTOP), 0);

    it_http_req_t reqs[HELD_REQUESTS];
    for (int i = 0; i < HELD_REQUESTS; i++) {
        reqs[i] = (it_http_req_t){.method = "GET"};
        char path[96];
        snprintf(path, sizeof path, "/v1/artists/%s", ids[i]);
        reqs[i].url = it_stack_url(s_stack, path);
    }
    long t0 = it_now_ms();
    size_t answered =
        it_http_many(reqs, HELD_REQUESTS, REPLY_DEADLINE_MS, s_kill_mid_flight, &killer);
    long elapsed = it_now_ms() - t0;
    cr_assert(killer.killed, "the worker was killed mid-flight");

    long slowest = 0;
    for (int i = 0; i < HELD_REQUESTS; i++) {
        it_http_res_t *res = &reqs[i].res;
        cr_assert_eq(reqs[i].completions, 1, "request %d completed %d times", i,
                     reqs[i].completions);
        cr_assert_eq(res->status, 200, "request %d: %ld (%s) %s", i, res->status, res->error,
                     res->body);
        cr_assert_str_eq(it_json_str(res->json, "id"), ids[i], "request %d got another's reply", i);
        if (res->elapsed_ms > slowest)
            slowest = res->elapsed_ms;
    }
    cr_assert_eq(answered, HELD_REQUESTS);
    /* Proof that one request really was held by the frozen worker: it
       could not be answered before that worker was killed. */
    cr_assert_geq(slowest, KILL_AFTER_MS,
                  "no request waited for the kill (slowest %ld ms): the frozen worker held none",
                  slowest);
    fprintf(stderr, "it: kill -9: %d requests in %ld ms, slowest %ld ms\n", HELD_REQUESTS, elapsed,
            slowest);

    int status = it_stack_wait(s_stack, killer.victim, 5000);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the victim died of SIGKILL");

    /* The survivor goes on serving, and no stale reply shows up late on a
       new request. */
    for (int i = 0; i < HELD_REQUESTS; i++) {
        char path[96];
        snprintf(path, sizeof path, "/v1/artists/%s", ids[i]);
        json_t *a = it_call(s_stack, "GET", path, NULL, 200);
        cr_assert_str_eq(it_json_str(a, "id"), ids[i]);
        json_decref(a);
    }
    for (int i = 0; i < HELD_REQUESTS; i++) {
        it_http_res_release(&reqs[i].res);
        free(reqs[i].url);
        free(ids[i]);
    }
}

/* ---- no worker at all ------------------------------------------------------ */

Test(failover, no_worker_gives_503_or_504_in_time)
{
    it_stack_opts_t opts = {.catalogs = 0, .gateway_timeout_ms = 1000};
    s_stack = it_stack_new(&opts);
    cr_assert(s_stack, "the stack did not start");
    cr_assert(it_stack_sign_admin(s_stack));

    static const char *const methods[] = {"GET", "POST"};
    static const char *const paths[] = {"/v1/artists/ZZZZZZZZZZZZZZZZZZZZZZ", "/v1/artists"};
    for (int i = 0; i < 2; i++) {
        char *url = it_stack_url(s_stack, paths[i]);
        it_http_res_t res;
        long t0 = it_now_ms();
        it_http_opts_t hopts = {.bearer = it_stack_token(s_stack), .timeout_ms = 10000};
        it_http_ex(&res, methods[i], url, i ? "application/json" : NULL,
                   i ? "{\"name\":\"x\"}" : NULL, i ? 12 : 0, &hopts);
        long elapsed = it_now_ms() - t0;
        cr_assert(res.status == 503 || res.status == 504, "%s %s: %ld %s", methods[i], paths[i],
                  res.status, res.body);
        it_assert_problem(&res, res.status, paths[i]);
        /* The gateway's deadline is 1 s; allow for a slow (sanitizer) build. */
        cr_assert_lt(elapsed, 3000, "%s answered in %ld ms", paths[i], elapsed);
        fprintf(stderr, "it: no worker: %s %s -> %ld in %ld ms\n", methods[i], paths[i], res.status,
                elapsed);
        it_http_res_release(&res);
        free(url);
    }
}

/* ---- the broker restarts ------------------------------------------------- */

Test(failover, broker_restart_workers_and_gateway_reconnect)
{
    s_stack = it_stack_new(NULL);
    cr_assert(s_stack, "the stack did not start");
    cr_assert(it_stack_sign_admin(s_stack));
    json_t *a = it_call(s_stack, "POST", "/v1/artists", it_pack("{s:s}", "name", "Before"), 201);
    char *id = it_str(a, "id");
    json_decref(a);

    char endpoint[256];
    snprintf(endpoint, sizeof endpoint, "%s", it_stack_endpoint(s_stack));
    int broker = it_stack_find(s_stack, IT_BROKER, 0);
    int status = it_stack_stop(s_stack, broker, IT_STOP_TIMEOUT_MS);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the broker exits 0 on SIGTERM (0x%x)",
              status);

    /* Down for a while: requests fail (503/504 from the gateway), never hang. */
    char *path = NULL;
    cr_assert(asprintf(&path, "/v1/artists/%s", id) > 0);
    char *url = it_stack_url(s_stack, path);
    it_http_res_t res;
    it_http(&res, "GET", url, NULL, NULL, 0, 15000);
    cr_assert(res.status == 503 || res.status == 504, "with no broker: %ld %s", res.status,
              res.body);
    it_http_res_release(&res);

    cr_assert_geq(it_stack_start(s_stack, IT_BROKER, endpoint), 0, "a broker restarts on %s",
                  endpoint);
    cr_assert_str_eq(it_stack_endpoint(s_stack), endpoint);

    long t0 = it_now_ms();
    long last = 0;
    while (it_now_ms() - t0 < 15000) {
        it_http(&res, "GET", url, NULL, NULL, 0, 3000);
        last = res.status;
        it_http_res_release(&res);
        if (last == 200)
            break;
        s_sleep_ms(50);
    }
    cr_assert_eq(last, 200, "requests succeed again after the broker restarts (last %ld)", last);
    fprintf(stderr, "it: broker restart: serving again %ld ms after the new broker was ready\n",
            it_now_ms() - t0);
    /* Writes too. */
    json_decref(it_call(s_stack, "POST", "/v1/artists", it_pack("{s:s}", "name", "After"), 201));
    free(url);
    free(path);
    free(id);
}
