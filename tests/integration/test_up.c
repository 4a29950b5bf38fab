/*  scripts/up as a person runs it: the whole Procfile (on ports the OS
    picks, so it runs beside anything), requests through it, then SIGTERM
    stops every process and it exits 0; a process that dies on its own
    makes it stop the others and exit non-zero. The programs come from
    $MUSICBUS_BIN_DIR, which scripts/up honours instead of building. */
#include <criterion/criterion.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "it.h"

#define UP_START_MS 60000
#define UP_STOP_MS 30000
#define MAX_PIDS 16

static char s_dir[PATH_MAX];
static char s_log[PATH_MAX + 16];
static char s_data[PATH_MAX + 16];
static pid_t s_up;

static int s_remove(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void s_down(void)
{
    if (s_up > 0) {
        kill(-s_up, SIGKILL);
        waitpid(s_up, NULL, 0);
        s_up = 0;
    }
    if (s_dir[0] && !getenv("MUSICBUS_TEST_KEEP"))
        nftw(s_dir, s_remove, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(up, .fini = s_down, .timeout = 180);

/* The whole log so far, NUL-terminated. Caller frees. */
static char *s_read_log(void)
{
    FILE *f = fopen(s_log, "r");
    char *text = NULL;
    size_t size = 0;
    FILE *mem = open_memstream(&text, &size);
    cr_assert(mem);
    if (f) {
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0)
            fwrite(buf, 1, n, mem);
        fclose(f);
    }
    fclose(mem);
    return text;
}

/* The log's lines other than the processes' own JSON lines. */
static void s_print_log(void)
{
    char *text = s_read_log();
    fprintf(stderr, "---- scripts/up said:\n");
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
        if (line[0] != '{')
            fprintf(stderr, "%s\n", line);
    fprintf(stderr, "----\n");
    free(text);
}

/* Starts scripts/up with `scale` and waits until it says the stack runs. */
static void s_start_up(const char *scale)
{
    const char *src = getenv("MUSICBUS_SOURCE_DIR");
    cr_assert(src && getenv("MUSICBUS_BIN_DIR"),
              "run through ctest (MUSICBUS_SOURCE_DIR, MUSICBUS_BIN_DIR)");
    const char *tmp = getenv("TMPDIR");
    snprintf(s_dir, sizeof s_dir, "%s/musicbus-it-up.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    cr_assert(mkdtemp(s_dir), "mkdtemp: %s", strerror(errno));
    snprintf(s_log, sizeof s_log, "%s/up.log", s_dir);
    snprintf(s_data, sizeof s_data, "%s/data", s_dir);
    setenv("MUSICBUS_HTTP_ADDR", "127.0.0.1:0", 1);
    setenv("MUSICBUS_BUS", "tcp://127.0.0.1:*", 1);
    setenv("MUSICBUS_DATA", s_data, 1);
    setenv("MUSICBUS_HEARTBEAT_MS", "100", 1);
    /* scripts/up makes the signing secret in the data folder; users gets
       a cheap Argon2id, so signing in is quick under the sanitizers. */
    unsetenv("MUSICBUS_JWT_SECRET");
    unsetenv("MUSICBUS_JWT_SECRET_FILE");
    setenv("MUSICBUS_PWHASH_OPSLIMIT", "1", 1);
    setenv("MUSICBUS_PWHASH_MEMLIMIT", "8192", 1);

    char script[PATH_MAX + 16];
    snprintf(script, sizeof script, "%s/scripts/up", src);
    char *argv[] = {"/bin/bash", script, "--scale", (char *)scale, NULL};
    s_up = it_spawn_tree(argv, s_log);
    cr_assert_gt(s_up, 0);

    long deadline = it_now_ms() + UP_START_MS;
    for (;;) {
        char *text = s_read_log();
        bool running = strstr(text, "processes running") != NULL;
        free(text);
        if (running)
            break;
        int status;
        if (waitpid(s_up, &status, WNOHANG) == s_up) {
            s_up = 0;
            s_print_log();
            cr_assert_fail("scripts/up exited before the stack ran (status 0x%x)", status);
        }
        if (it_now_ms() > deadline) {
            s_print_log();
            cr_assert_fail("scripts/up: no stack after %d ms", UP_START_MS);
        }
        usleep(20000);
    }
}

/* Pids and names from scripts/up's "started NAME (pid N)" lines. */
static int s_started(pid_t *pids, char names[][32], int max)
{
    char *text = s_read_log();
    int n = 0;
    for (char *line = strtok(text, "\n"); line && n < max; line = strtok(NULL, "\n")) {
        int pid;
        if (sscanf(line, "up: started %31s (pid %d)", names[n], &pid) == 2)
            pids[n++] = pid;
    }
    free(text);
    return n;
}

/* Waits for scripts/up to exit; returns its wait status. */
static int s_wait_up(void)
{
    long deadline = it_now_ms() + UP_STOP_MS;
    int status = -1;
    while (waitpid(s_up, &status, WNOHANG) != s_up) {
        if (it_now_ms() > deadline) {
            s_print_log();
            cr_assert_fail("scripts/up still running %d ms after it was told to stop", UP_STOP_MS);
        }
        usleep(20000);
    }
    s_up = 0;
    return status;
}

/* The process names scripts/up starts with --scale catalog=2, in order:
   every kind of the Procfile, catalog as catalog.1 and catalog.2. */
static int s_expected(char names[][32], int max)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/Procfile", getenv("MUSICBUS_SOURCE_DIR"));
    FILE *f = fopen(path, "r");
    cr_assert(f, "no %s", path);
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < max - 1) {
        char kind[32];
        if (line[0] == '#' || sscanf(line, "%31[A-Za-z0-9_-]:", kind) != 1)
            continue;
        if (strcmp(kind, "catalog") == 0) {
            snprintf(names[n++], 32, "catalog.1");
            snprintf(names[n++], 32, "catalog.2");
        } else
            snprintf(names[n++], 32, "%s", kind);
    }
    fclose(f);
    return n;
}

/* An admin on scripts/up's data folder, signed in through its gateway:
   returns the access token (caller frees). */
static char *s_admin_token(const char *addr)
{
    char exe[PATH_MAX + 32], out[sizeof s_dir + 16], data[sizeof s_data];
    snprintf(exe, sizeof exe, "%s/musicbus-users", getenv("MUSICBUS_BIN_DIR"));
    snprintf(out, sizeof out, "%s/admin.id", s_dir);
    snprintf(data, sizeof data, "%s", s_data);
    char *argv[] = {exe, "--create-admin", IT_ADMIN_EMAIL, "--data", data, NULL};
    char *env[] = {"MUSICBUS_ADMIN_PASSWORD=" IT_ADMIN_PASSWORD, NULL};
    pid_t pid = it_spawn_env(argv, env, s_log, out);
    cr_assert_gt(pid, 0);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "--create-admin: status 0x%x", status);
    char url[256];
    snprintf(url, sizeof url, "http://%s/v1/auth/login", addr);
    json_t *body = it_pack("{s:s, s:s}", "email", IT_ADMIN_EMAIL, "password", IT_ADMIN_PASSWORD);
    it_http_res_t res;
    it_http_json(&res, "POST", url, body);
    json_decref(body);
    cr_assert_eq(res.status, 200, "login through scripts/up's stack: %ld %s %s", res.status,
                 res.error, res.body);
    char *token = it_str(res.json, "access_token");
    it_http_res_release(&res);
    return token;
}

static bool s_log_has(const char *what)
{
    char *text = s_read_log();
    bool has = strstr(text, what) != NULL;
    free(text);
    return has;
}

Test(up, runs_every_process_and_stops_them_all_on_sigterm)
{
    s_start_up("catalog=2");
    pid_t pids[MAX_PIDS];
    char names[MAX_PIDS][32], expected[MAX_PIDS][32];
    int n = s_started(pids, names, MAX_PIDS);
    int want = s_expected(expected, MAX_PIDS);
    cr_assert_eq(n, want, "%d processes started, the Procfile makes %d", n, want);
    for (int i = 0; i < n; i++)
        cr_assert_str_eq(names[i], expected[i], "process %d", i);

    /* The gateway's ready file is where scripts/up says. */
    char ready[sizeof s_data + 32], addr[128] = "";
    snprintf(ready, sizeof ready, "%s/run/gateway.ready", s_data);
    FILE *f = fopen(ready, "r");
    cr_assert(f, "no %s", ready);
    cr_assert(fgets(addr, sizeof addr, f));
    fclose(f);
    addr[strcspn(addr, "\r\n")] = '\0';
    char *token = s_admin_token(addr);
    char url[256];
    snprintf(url, sizeof url, "http://%s/v1/artists", addr);
    it_http_res_t res;
    it_http_opts_t hopts = {.bearer = token};
    it_http_ex(&res, "POST", url, "application/json", "{\"name\":\"Up\"}", 13, &hopts);
    free(token);
    cr_assert_eq(res.status, 201, "POST through scripts/up's stack: %ld %s %s", res.status,
                 res.error, res.body);
    it_http_res_release(&res);
    struct stat st;
    char catalog_dir[sizeof s_data + 16];
    snprintf(catalog_dir, sizeof catalog_dir, "%s/catalog", s_data);
    cr_assert_eq(stat(catalog_dir, &st), 0, "the catalog keeps its data in $MUSICBUS_DATA/catalog");

    kill(s_up, SIGTERM);
    int status = s_wait_up();
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        s_print_log();
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "scripts/up exits 0 (status 0x%x)",
              status);
    cr_assert(s_log_has("up: stopped cleanly"));
    for (int i = 0; i < n; i++) {
        char line[sizeof names + 16];
        snprintf(line, sizeof line, "up: %s stopped", names[i]);
        cr_assert(s_log_has(line), "%s exited 0", names[i]);
        cr_assert(kill(pids[i], 0) == -1 && errno == ESRCH, "%s (pid %d) is gone", names[i],
                  (int)pids[i]);
    }
}

Test(up, a_process_dying_stops_the_others_and_fails)
{
    s_start_up("catalog=2");
    pid_t pids[MAX_PIDS];
    char names[MAX_PIDS][32];
    int n = s_started(pids, names, MAX_PIDS);
    cr_assert_geq(n, 4);
    cr_assert_str_eq(names[2], "catalog.2");
    kill(pids[2], SIGKILL);

    int status = s_wait_up();
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0, "scripts/up fails (status 0x%x)",
              status);
    cr_assert(s_log_has("catalog.2 exited unexpectedly"));
    for (int i = 0; i < n; i++)
        cr_assert(kill(pids[i], 0) == -1 && errno == ESRCH, "%s (pid %d) is gone", names[i],
                  (int)pids[i]);
}
