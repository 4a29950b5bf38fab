/*  GET /v1/me/events end to end with a real WebSocket client: a broker,
    a users worker, a playlists worker and a gateway (from
    $MUSICBUS_BIN_DIR) on 127.0.0.1 in a temporary folder, and
    ws_client/events.mjs (node, the npm package ws) signing in, changing
    things over HTTP from a second session and checking the frames: the
    change notified within 1 s, a slow client closed with 1008 while a
    fast one gets all 1000 frames, resuming with since, resync, 4001 on
    token expiry, 401 without a token.

    Needs node; skipped, saying so, only when node is not installed. The
    first run installs ws with `npm ci` into a copy of ws_client/ in the
    build folder, from package-lock.json. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define S_ADMIN_EMAIL "admin@musicbus.test"
#define S_ADMIN_PASSWORD "ws-admin-pass-7Qx"

static pid_t s_pids[8];
static int s_npids;
static char s_dir[256];

static void s_stop_all(void)
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
            fprintf(stderr, "cannot remove %s\n", s_dir);
        s_dir[0] = '\0';
    }
}

/*  Runs argv (env added) with stderr to the folder's log; waits for
    `ready` (NULL: waits for the process to exit 0). Returns the ready
    file's first line (static). */
static const char *s_run(char *const argv[], char *const env[], const char *ready)
{
    char log[300];
    snprintf(log, sizeof log, "%s/log", s_dir);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (!freopen(log, "a", stderr))
            _exit(126);
        for (int i = 0; env && env[i]; i++)
            putenv(env[i]);
        execv(argv[0], argv);
        _exit(127);
    }
    if (!ready) {
        int status;
        waitpid(pid, &status, 0);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s failed (see %s)", argv[0], log);
        return NULL;
    }
    s_pids[s_npids++] = pid;
    static char text[256];
    for (int i = 0; i < 400; i++) {
        FILE *f = fopen(ready, "r");
        if (f) {
            char *ok = fgets(text, sizeof text, f);
            fclose(f);
            if (ok) {
                text[strcspn(text, "\n")] = '\0';
                return text;
            }
        }
        usleep(50000);
    }
    cr_assert_fail("%s did not start (see %s)", argv[0], log);
    return NULL;
}

static void s_setup(void)
{
    if (system("command -v node >/dev/null 2>&1") != 0)
        cr_skip_test("node is not installed: the WebSocket client test is skipped");
}

static void s_teardown(void)
{
    s_stop_all();
}

TestSuite(gw_ws_stack, .init = s_setup, .fini = s_teardown, .timeout = 300);

Test(gw_ws_stack, real_client)
{
    const char *bin = getenv("MUSICBUS_BIN_DIR");
    const char *src = getenv("MUSICBUS_SOURCE_DIR");
    cr_assert(bin && src, "run through ctest (MUSICBUS_BIN_DIR, MUSICBUS_SOURCE_DIR)");
    /* The node side runs from a copy in the build folder, with its own
       node_modules: the source tree stays clean. */
    char client[512], cmd[8192];
    snprintf(client, sizeof client, "%s/../tests/gateway/ws_client", bin);
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s' && cp '%s/tests/gateway/ws_client/package.json' "
             "'%s/tests/gateway/ws_client/package-lock.json' "
             "'%s/tests/gateway/ws_client/events.mjs' '%s/' && "
             "{ test -f '%s/node_modules/ws/package.json' || npm ci --prefix '%s' --no-audit "
             "--no-fund --loglevel=error >&2; }",
             client, src, src, src, client, client, client);
    cr_assert_eq(system(cmd), 0, "npm ci failed in %s (is the npm registry reachable?)", client);

    snprintf(s_dir, sizeof s_dir, "%s/test_gw_ws_stack.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    cr_assert_not_null(mkdtemp(s_dir));
    char secret[300], ready[4][300], exe[4][300], sec_env[400];
    snprintf(secret, sizeof secret, "%s/jwt-secret", s_dir);
    FILE *f = fopen(secret, "w");
    fputs("ws-stack-test-secret-with-more-than-32-bytes", f);
    fclose(f);
    chmod(secret, 0600);
    snprintf(sec_env, sizeof sec_env, "MUSICBUS_JWT_SECRET_FILE=%s", secret);
    const char *names[4] = {"musicbus-broker", "musicbus-users", "musicbus-playlists",
                            "musicbus-gateway"};
    for (int i = 0; i < 4; i++) {
        snprintf(exe[i], sizeof exe[i], "%s/%s", bin, names[i]);
        snprintf(ready[i], sizeof ready[i], "%s/ready-%d", s_dir, i);
    }
    char *users_env[] = {sec_env, "MUSICBUS_PWHASH_OPSLIMIT=1", "MUSICBUS_PWHASH_MEMLIMIT=8192",
                         "MUSICBUS_ADMIN_PASSWORD=" S_ADMIN_PASSWORD, NULL};
    char *admin[] = {exe[1], "--create-admin", S_ADMIN_EMAIL, "--data", s_dir, NULL};
    s_run(admin, users_env, NULL);

    char *broker[] = {exe[0], "--bind", "tcp://127.0.0.1:*", "--data", s_dir, "--ready-file",
                      ready[0], NULL};
    char endpoint[256];
    snprintf(endpoint, sizeof endpoint, "%s", s_run(broker, NULL, ready[0]));
    char *users[] = {exe[1], "--bus", endpoint, "--data", s_dir, "--ready-file", ready[1], NULL};
    s_run(users, users_env, ready[1]);
    char *playlists[] = {exe[2], "--bus", endpoint, "--data", s_dir, "--ready-file", ready[2],
                         NULL};
    s_run(playlists, NULL, ready[2]);
    /* Small queues so the slow client is found quickly; no JWT leeway so
       a token expiring in 2 s closes its socket in 2 s. */
    char *gw_env[] = {"MUSICBUS_WS_QUEUE_FRAMES=8", "MUSICBUS_JWT_LEEWAY=0", NULL};
    char *gateway[] = {exe[3], "--http", "127.0.0.1:0", "--bus", endpoint, "--data", s_dir,
                       "--jwt-secret-file", secret, "--rate", "default=off", "--rate",
                       "signin=off", "--ready-file", ready[3], NULL};
    char gw[256];
    snprintf(gw, sizeof gw, "%s", s_run(gateway, gw_env, ready[3]));

    snprintf(cmd, sizeof cmd,
             "GW='%s' ADMIN_EMAIL='%s' ADMIN_PASSWORD='%s' SECRET_FILE='%s' "
             "node '%s/events.mjs' 2>&1",
             gw, S_ADMIN_EMAIL, S_ADMIN_PASSWORD, secret, client);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char line[1024];
    while (fgets(line, sizeof line, p))
        fprintf(stderr, "events.mjs: %s", line);
    int status = pclose(p);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "events.mjs failed (its lines above; the processes' log is in %s/log)", s_dir);
}
