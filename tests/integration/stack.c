/*  stack — starts a real musicbus stack for one test and takes it down. */
#include "stack.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "mb_jwt.h"

extern char **environ;

/* An id of the right shape (22 base62 characters) that names nothing. */
#define S_PROBE_ID "ZZZZZZZZZZZZZZZZZZZZZZ"

/* Bytes of randomness in the signing secret (written as hex). */
#define S_SECRET_BYTES 32

/* Keys each gateway rate budget tracks: tests use a handful. */
#define S_RATE_SLOTS "4096"

/* Argon2id at its cheapest for the users actor (its README: tests only). */
#define S_PWHASH_ENV "MUSICBUS_PWHASH_OPSLIMIT=1", "MUSICBUS_PWHASH_MEMLIMIT=8192"

typedef struct {
    it_kind_t kind;
    pid_t pid;  /* 0 once reaped */
    int status; /* wait status once reaped */
} s_proc_t;

struct it_stack {
    char data_dir[PATH_MAX]; /* mkdtemp'd; removed by destroy */
    char bin_dir[PATH_MAX];  /* $MUSICBUS_BIN_DIR */
    char endpoint[256];      /* the broker's, from its ready file */
    char http_addr[256];     /* host:port of the gateway, from its ready file */
    it_stack_opts_t opts;
    s_proc_t procs[IT_MAX_PROCS];
    int nprocs;
    unsigned seq;                    /* makes every ready file name unique */
    char secret_file[PATH_MAX + 16]; /* data_dir/jwt.secret */
    char secret[2 * S_SECRET_BYTES + 1];
    char media_secret_file[PATH_MAX + 16]; /* data_dir/media.secret */
    char *token;        /* what it_call() sends; owned, may be NULL */
    char admin_id[128]; /* of it_stack_admin_login()'s admin; "" before */
};

static const char *s_kind_names[] = {"broker",    "catalog",   "users",  "stats",
                                     "playlists", "transcode", "gateway"};
static const char *s_kind_exes[] = {"musicbus-broker",    "musicbus-catalog",   "musicbus-users",
                                    "musicbus-stats",     "musicbus-playlists", "musicbus-transcode",
                                    "musicbus-gateway"};

static void s_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void s_say(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "it[%d]: %s\n", (int)getpid(), line);
}

long it_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void s_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static void s_describe_status(int status, char *out, size_t size)
{
    if (WIFEXITED(status))
        snprintf(out, size, "exit %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, size, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(out, size, "status 0x%x", status);
}

/* Reaps the process when it has exited. Returns true when it is gone. */
static bool s_reap(it_stack_t *self, int proc, bool block)
{
    s_proc_t *p = &self->procs[proc];
    if (p->pid == 0)
        return true;
    int status;
    pid_t rc;
    do
        rc = waitpid(p->pid, &status, block ? 0 : WNOHANG);
    while (rc == -1 && errno == EINTR);
    if (rc == 0)
        return false;
    if (rc == -1) {
        /* Not our child any more (cannot happen unless someone reaped it):
           treat it as gone with an unknown status. */
        s_say("waitpid %d: %s", (int)p->pid, strerror(errno));
        status = -1;
    }
    char what[96];
    s_describe_status(status, what, sizeof what);
    s_say("%s pid %d ended: %s", s_kind_names[p->kind], (int)p->pid, what);
    /* The group may still hold something the process started. */
    kill(-p->pid, SIGKILL);
    p->pid = 0;
    p->status = status;
    return true;
}

/* True when environment entry `entry` sets a variable named in `env`. */
static bool s_env_replaced(const char *entry, char *const env[])
{
    size_t n = strcspn(entry, "=");
    for (char *const *e = env; e && *e; e++)
        if (strncmp(*e, entry, n) == 0 && (*e)[n] == '=')
            return true;
    return false;
}

/* The environment of a child: ours less what `env` replaces (and, when
   `strip`, less MUSICBUS_* but the log level), then `env`. Built before
   fork, as the child may only call async-signal-safe functions. The
   array is the caller's to free; its strings are borrowed. */
static char **s_child_env(char *const env[], bool strip)
{
    size_t n = 0, k = 0;
    for (char **e = environ; *e; e++)
        n++;
    for (char *const *e = env; e && *e; e++)
        n++;
    char **out = calloc(n + 1, sizeof *out);
    if (!out)
        abort();
    for (char **e = environ; *e; e++) {
        if (strip && strncmp(*e, "MUSICBUS_", 9) == 0 &&
            strncmp(*e, "MUSICBUS_LOG_LEVEL=", 19) != 0)
            continue;
        if (!s_env_replaced(*e, env))
            out[k++] = *e;
    }
    for (char *const *e = env; e && *e; e++)
        out[k++] = *e;
    out[k] = NULL;
    return out;
}

static pid_t s_spawn(char *const argv[], char *const env[], bool strip, const char *log,
                     const char *stdout_path)
{
    char **envp = s_child_env(env, strip);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127); /* the test process died between fork and prctl */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        int fd = open("/dev/null", O_RDONLY);
        if (fd > 0) {
            dup2(fd, 0);
            close(fd);
        }
        if (stdout_path) {
            fd = open(stdout_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            if (fd > 2) {
                dup2(fd, 1);
                close(fd);
            }
        }
        if (log) {
            fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
            if (fd > 2) {
                dup2(fd, 2);
                close(fd);
            }
        }
        execve(argv[0], argv, envp);
        fprintf(stderr, "it: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    free(envp);
    if (pid > 0)
        setpgid(pid, pid); /* both sides, so no signal can race the child's own call */
    return pid;
}

pid_t it_spawn(char *const argv[], const char *log)
{
    return s_spawn(argv, NULL, false, log, NULL);
}

pid_t it_spawn_env(char *const argv[], char *const env[], const char *log, const char *stdout_path)
{
    return s_spawn(argv, env, false, log, stdout_path);
}

pid_t it_spawn_tree(char *const argv[], const char *log)
{
    pid_t pid = it_spawn(argv, log);
    if (pid < 0)
        return -1;
    /* The guard waits for EOF on a pipe only we hold the write end of:
       the kernel closes it when we exit, however we exit. */
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        kill(-pid, SIGKILL);
        return -1;
    }
    pid_t guard = fork();
    if (guard == 0) {
        close(fds[1]);
        char byte;
        while (read(fds[0], &byte, 1) == -1 && errno == EINTR)
            ;
        kill(-pid, SIGKILL);
        _exit(0);
    }
    close(fds[0]);
    if (guard < 0) {
        close(fds[1]);
        kill(-pid, SIGKILL);
        return -1;
    }
    return pid; /* fds[1] stays open (close-on-exec) for as long as we live */
}

/* Reads a ready file into out (trailing white space removed). Returns 0
   once it exists and holds something. */
static int s_read_ready(const char *path, char *out, size_t size)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(out, 1, size - 1, f);
    fclose(f);
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' '))
        out[--n] = '\0';
    return n > 0 ? 0 : -1;
}

/* Waits for the ready file of a starting process. */
static int s_wait_ready(it_stack_t *self, int proc, const char *path, char *out, size_t size)
{
    long deadline = it_now_ms() + IT_START_TIMEOUT_MS;
    while (s_read_ready(path, out, size) != 0) {
        if (s_reap(self, proc, false)) {
            s_say("%s exited before writing %s", s_kind_names[self->procs[proc].kind], path);
            return -1;
        }
        if (it_now_ms() > deadline) {
            s_say("%s wrote no %s within %d ms", s_kind_names[self->procs[proc].kind], path,
                  IT_START_TIMEOUT_MS);
            return -1;
        }
        s_sleep_ms(10);
    }
    return 0;
}

static int s_start(it_stack_t *self, it_kind_t kind, const char *bind, bool wait)
{
    if (self->nprocs == IT_MAX_PROCS) {
        s_say("too many processes");
        return -1;
    }
    if (kind != IT_BROKER && !self->endpoint[0]) {
        s_say("no broker endpoint yet: start a broker first");
        return -1;
    }
    char exe[PATH_MAX + 64], ready[PATH_MAX + 64], num1[32], num2[32], num3[32];
    char rate_default[128], rate_signin[128], secret_env[PATH_MAX + 64];
    char media_env[PATH_MAX + 64];
    snprintf(exe, sizeof exe, "%s/%s", self->bin_dir, s_kind_exes[kind]);
    snprintf(ready, sizeof ready, "%s/run/%s-%u.ready", self->data_dir, s_kind_names[kind],
             ++self->seq);
    snprintf(num1, sizeof num1, "%d", IT_HEARTBEAT_MS);
    snprintf(num2, sizeof num2, "%d", self->opts.liveness > 0 ? self->opts.liveness : IT_LIVENESS);
    snprintf(secret_env, sizeof secret_env, "%s=%s", MB_JWT_ENV_SECRET_FILE, self->secret_file);
    snprintf(media_env, sizeof media_env, "MUSICBUS_MEDIA_SECRET_FILE=%s",
             self->media_secret_file);
    char *argv[24];
    char *env[4 + 16 + 1] = {NULL};
    int argc = 0, envc = 0;
    argv[argc++] = exe;
    switch (kind) {
    case IT_BROKER:
        argv[argc++] = "--bind";
        argv[argc++] = (char *)(bind ? bind : "tcp://127.0.0.1:*");
        argv[argc++] = "--data";
        argv[argc++] = self->data_dir;
        if (self->opts.broker_timeout_ms > 0) {
            snprintf(num3, sizeof num3, "%d", self->opts.broker_timeout_ms);
            argv[argc++] = "--timeout";
            argv[argc++] = num3;
        }
        break;
    case IT_CATALOG:
    case IT_USERS:
    case IT_STATS:
    case IT_PLAYLISTS:
    case IT_TRANSCODE:
        argv[argc++] = "--bus";
        argv[argc++] = self->endpoint;
        argv[argc++] = "--data";
        argv[argc++] = self->data_dir;
        if (kind == IT_USERS) {
            env[envc++] = secret_env;
            env[envc++] = "MUSICBUS_PWHASH_OPSLIMIT=1";
            env[envc++] = "MUSICBUS_PWHASH_MEMLIMIT=8192";
        } else if (kind == IT_CATALOG) {
            env[envc++] = media_env;
        }
        for (size_t i = 0; self->opts.worker_env && self->opts.worker_env[i] && i < 16; i++)
            env[envc++] = (char *)self->opts.worker_env[i];
        break;
    case IT_GATEWAY:
        argv[argc++] = "--http";
        argv[argc++] = "127.0.0.1:0";
        argv[argc++] = "--bus";
        argv[argc++] = self->endpoint;
        argv[argc++] = "--data"; /* the blob store: uploads and media */
        argv[argc++] = self->data_dir;
        if (self->opts.gateway_timeout_ms > 0) {
            snprintf(num3, sizeof num3, "%d", self->opts.gateway_timeout_ms);
            argv[argc++] = "--timeout";
            argv[argc++] = num3;
        }
        snprintf(rate_default, sizeof rate_default, "default=%s",
                 self->opts.rate_default ? self->opts.rate_default : IT_RATE_GENEROUS);
        snprintf(rate_signin, sizeof rate_signin, "signin=%s",
                 self->opts.rate_signin ? self->opts.rate_signin : IT_RATE_GENEROUS);
        argv[argc++] = "--rate";
        argv[argc++] = rate_default;
        argv[argc++] = "--rate";
        argv[argc++] = rate_signin;
        argv[argc++] = "--rate-slots";
        argv[argc++] = S_RATE_SLOTS;
        env[envc++] = secret_env;
        env[envc++] = media_env;
        break;
    }
    if (kind != IT_GATEWAY) {
        argv[argc++] = "--heartbeat";
        argv[argc++] = num1;
        argv[argc++] = "--liveness";
        argv[argc++] = num2;
    }
    argv[argc++] = "--ready-file";
    argv[argc++] = ready;
    argv[argc] = NULL;
    pid_t pid = s_spawn(argv, env, true, NULL, NULL);
    if (pid < 0) {
        s_say("fork: %s", strerror(errno));
        return -1;
    }
    int proc = self->nprocs++;
    self->procs[proc] = (s_proc_t){.kind = kind, .pid = pid};
    s_say("started %s pid %d", s_kind_names[kind], (int)pid);
    char scratch[256];
    if (kind == IT_BROKER) {
        if (s_wait_ready(self, proc, ready, self->endpoint, sizeof self->endpoint) != 0)
            return -1;
        s_say("broker %d bound %s", (int)pid, self->endpoint);
    } else if (kind == IT_GATEWAY) {
        if (s_wait_ready(self, proc, ready, self->http_addr, sizeof self->http_addr) != 0)
            return -1;
        s_say("gateway %d listens on %s", (int)pid, self->http_addr);
    } else if (wait) {
        if (s_wait_ready(self, proc, ready, scratch, sizeof scratch) != 0)
            return -1;
        s_say("%s %d is ready", s_kind_names[kind], (int)pid);
    }
    return proc;
}

int it_stack_start(it_stack_t *self, it_kind_t kind, const char *bind)
{
    return s_start(self, kind, bind, true);
}

int it_stack_spawn(it_stack_t *self, it_kind_t kind)
{
    if (kind == IT_BROKER || kind == IT_GATEWAY)
        return -1;
    return s_start(self, kind, NULL, false);
}

int it_stack_wait_catalog(it_stack_t *self, long timeout_ms)
{
    char *url = it_stack_url(self, "/v1/artists/" S_PROBE_ID);
    long deadline = it_now_ms() + timeout_ms;
    long last = 0;
    int rc = -1;
    while (rc != 0 && it_now_ms() < deadline) {
        it_http_res_t res;
        it_http(&res, "GET", url, NULL, NULL, 0, 2000);
        last = res.status;
        if (res.status == 404)
            rc = 0;
        it_http_res_release(&res);
        if (rc != 0)
            s_sleep_ms(50);
    }
    if (rc != 0)
        s_say("the catalog did not answer within %ld ms (last status %ld)", timeout_ms, last);
    free(url);
    return rc;
}

int it_stack_start_all(it_stack_t *self, const it_stack_opts_t *opts)
{
    if (!opts)
        opts = &self->opts;
    self->endpoint[0] = '\0';
    self->http_addr[0] = '\0';
    if (it_stack_start(self, IT_BROKER, NULL) < 0)
        return -1;
    static const it_kind_t workers[] = {IT_CATALOG, IT_USERS, IT_STATS, IT_PLAYLISTS,
                                        IT_TRANSCODE};
    const int counts[] = {opts->catalogs, opts->users, opts->stats, opts->playlists,
                          opts->transcodes};
    for (size_t k = 0; k < sizeof workers / sizeof workers[0]; k++)
        for (int i = 0; i < counts[k]; i++)
            if (it_stack_start(self, workers[k], NULL) < 0)
                return -1;
    if (opts->no_gateway)
        return 0;
    if (it_stack_start(self, IT_GATEWAY, NULL) < 0)
        return -1;
    if (opts->catalogs > 0 && it_stack_wait_catalog(self, IT_START_TIMEOUT_MS) != 0)
        return -1;
    return 0;
}

/* Writes a fresh random secret (hex) into data_dir/name, readable by its
   owner only; the hex text goes to `hex` (2 * S_SECRET_BYTES + 1) and the
   file's path to `path`. */
static int s_make_secret(it_stack_t *self, const char *name, char *hex, char *path,
                         size_t path_size)
{
    unsigned char raw[S_SECRET_BYTES];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, raw, sizeof raw) != (ssize_t)sizeof raw) {
        s_say("/dev/urandom: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    snprintf(path, path_size, "%s/%s", self->data_dir, name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t len = strlen(hex);
    if (fd < 0 || write(fd, hex, len) != (ssize_t)len) {
        s_say("%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

it_stack_t *it_stack_new(const it_stack_opts_t *opts)
{
    it_stack_t *self = calloc(1, sizeof *self);
    if (!self)
        abort();
    if (opts)
        self->opts = *opts;
    else
        self->opts = (it_stack_opts_t){.catalogs = 1, .users = 1};
    const char *bin = getenv("MUSICBUS_BIN_DIR");
    if (!bin || !*bin) {
        s_say("MUSICBUS_BIN_DIR is not set (run the tests through ctest)");
        free(self);
        return NULL;
    }
    snprintf(self->bin_dir, sizeof self->bin_dir, "%s", bin);
    const char *tmp = getenv("TMPDIR");
    snprintf(self->data_dir, sizeof self->data_dir, "%s/musicbus-it.XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(self->data_dir)) {
        s_say("mkdtemp %s: %s", self->data_dir, strerror(errno));
        free(self);
        return NULL;
    }
    char run[PATH_MAX + 8];
    snprintf(run, sizeof run, "%s/run", self->data_dir);
    mkdir(run, 0700);
    s_say("stack in %s", self->data_dir);
    char media_secret[2 * S_SECRET_BYTES + 1];
    if (s_make_secret(self, "jwt.secret", self->secret, self->secret_file,
                      sizeof self->secret_file) != 0 ||
        s_make_secret(self, "media.secret", media_secret, self->media_secret_file,
                      sizeof self->media_secret_file) != 0 ||
        it_stack_start_all(self, NULL) != 0) {
        it_stack_destroy(&self);
        return NULL;
    }
    return self;
}

int it_stack_wait(it_stack_t *self, int proc, long timeout_ms)
{
    if (proc < 0 || proc >= self->nprocs)
        return -1;
    long deadline = it_now_ms() + timeout_ms;
    while (!s_reap(self, proc, false)) {
        if (it_now_ms() > deadline)
            return -1;
        s_sleep_ms(5);
    }
    return self->procs[proc].status;
}

int it_stack_stop(it_stack_t *self, int proc, long timeout_ms)
{
    if (proc < 0 || proc >= self->nprocs || s_reap(self, proc, false))
        return -1;
    s_proc_t *p = &self->procs[proc];
    kill(p->pid, SIGTERM);
    kill(p->pid, SIGCONT); /* a stopped process only sees SIGTERM once it runs */
    int status = it_stack_wait(self, proc, timeout_ms);
    if (status == -1 && p->pid) {
        s_say("%s pid %d still running %ld ms after SIGTERM: SIGKILL", s_kind_names[p->kind],
              (int)p->pid, timeout_ms);
        kill(p->pid, SIGKILL);
        s_reap(self, proc, true);
        status = p->status;
    }
    return status;
}

int it_stack_stop_all(it_stack_t *self)
{
    static const it_kind_t order[] = {IT_GATEWAY, IT_TRANSCODE, IT_PLAYLISTS, IT_STATS,
                                      IT_USERS,   IT_CATALOG,   IT_BROKER};
    int bad = 0;
    for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) {
        /* SIGTERM every process of the kind first, then wait: they stop
           side by side rather than one after the other. */
        for (int i = 0; i < self->nprocs; i++)
            if (self->procs[i].kind == order[k] && !s_reap(self, i, false)) {
                kill(self->procs[i].pid, SIGTERM);
                kill(self->procs[i].pid, SIGCONT);
            }
        for (int i = 0; i < self->nprocs; i++) {
            if (self->procs[i].kind != order[k] || self->procs[i].pid == 0)
                continue;
            int status = it_stack_stop(self, i, IT_STOP_TIMEOUT_MS);
            if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
                bad++;
        }
    }
    return bad;
}

void it_stack_kill_all(it_stack_t *self)
{
    for (int i = 0; i < self->nprocs; i++)
        if (self->procs[i].pid)
            kill(self->procs[i].pid, SIGKILL);
    for (int i = 0; i < self->nprocs; i++)
        s_reap(self, i, true);
}

static int s_remove(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0)
        s_say("remove %s: %s", path, strerror(errno));
    return 0;
}

void it_stack_destroy(it_stack_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    it_stack_t *self = *self_p;
    it_stack_stop_all(self);
    it_stack_kill_all(self);
    /* Keep the folder for a post-mortem when asked to. */
    if (getenv("MUSICBUS_TEST_KEEP"))
        s_say("kept %s", self->data_dir);
    else
        nftw(self->data_dir, s_remove, 16, FTW_DEPTH | FTW_PHYS);
    free(self->token);
    free(self);
    *self_p = NULL;
}

int it_stack_find(it_stack_t *self, it_kind_t kind, int nth)
{
    for (int i = 0; i < self->nprocs; i++)
        if (self->procs[i].kind == kind && !s_reap(self, i, false) && nth-- == 0)
            return i;
    return -1;
}

pid_t it_stack_pid(it_stack_t *self, int proc)
{
    return proc >= 0 && proc < self->nprocs ? self->procs[proc].pid : 0;
}

int it_stack_signal(it_stack_t *self, int proc, int sig)
{
    if (proc < 0 || proc >= self->nprocs || self->procs[proc].pid == 0)
        return -1;
    return kill(self->procs[proc].pid, sig) == 0 ? 0 : -1;
}

char *it_stack_url(it_stack_t *self, const char *path)
{
    char *url = NULL;
    if (asprintf(&url, "http://%s%s", self->http_addr, path) < 0)
        abort();
    return url;
}

const char *it_stack_endpoint(it_stack_t *self)
{
    return self->endpoint;
}

const char *it_stack_data_dir(it_stack_t *self)
{
    return self->data_dir;
}

/* ---- tokens ------------------------------------------------------------------ */

const char *it_stack_secret(it_stack_t *self, size_t *len)
{
    if (len)
        *len = strlen(self->secret);
    return self->secret;
}

const char *it_stack_secret_file(it_stack_t *self)
{
    return self->secret_file;
}

const char *it_stack_token(it_stack_t *self)
{
    return self->token;
}

void it_stack_set_token(it_stack_t *self, const char *token)
{
    free(self->token);
    self->token = token ? strdup(token) : NULL;
    if (token && !self->token)
        abort();
}

const char *it_stack_admin_id(it_stack_t *self)
{
    return self->admin_id[0] ? self->admin_id : NULL;
}

/* Runs musicbus-users --create-admin and keeps the id it prints. */
static int s_create_admin(it_stack_t *self)
{
    char exe[PATH_MAX + 64], out[PATH_MAX + 32];
    snprintf(exe, sizeof exe, "%s/musicbus-users", self->bin_dir);
    snprintf(out, sizeof out, "%s/run/admin.id", self->data_dir);
    char *argv[] = {exe, "--create-admin", IT_ADMIN_EMAIL, "--data", self->data_dir, NULL};
    char *env[] = {"MUSICBUS_ADMIN_PASSWORD=" IT_ADMIN_PASSWORD, S_PWHASH_ENV, NULL};
    pid_t pid = s_spawn(argv, env, true, NULL, out);
    if (pid < 0)
        return -1;
    long deadline = it_now_ms() + IT_START_TIMEOUT_MS;
    int status = -1;
    pid_t rc;
    while ((rc = waitpid(pid, &status, WNOHANG)) == 0 && it_now_ms() < deadline)
        s_sleep_ms(10);
    if (rc != pid) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        s_say("musicbus-users --create-admin did not finish within %d ms", IT_START_TIMEOUT_MS);
        return -1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char what[96];
        s_describe_status(status, what, sizeof what);
        s_say("musicbus-users --create-admin: %s", what);
        return -1;
    }
    if (s_read_ready(out, self->admin_id, sizeof self->admin_id) != 0) {
        s_say("musicbus-users --create-admin printed no id");
        return -1;
    }
    return 0;
}

const char *it_stack_admin_login(it_stack_t *self)
{
    if (s_create_admin(self) != 0)
        return NULL;
    char *url = it_stack_url(self, "/v1/auth/login");
    json_t *body = json_pack("{s:s, s:s}", "email", IT_ADMIN_EMAIL, "password", IT_ADMIN_PASSWORD);
    it_http_res_t res;
    it_http_json(&res, "POST", url, body);
    json_decref(body);
    free(url);
    const char *token = it_json_str(res.json, "access_token");
    if (res.status != 200 || !token) {
        s_say("admin login: %ld %s %s", res.status, res.error, res.body);
        it_http_res_release(&res);
        return NULL;
    }
    it_stack_set_token(self, token);
    it_http_res_release(&res);
    s_say("signed in as admin %s", self->admin_id);
    return self->token;
}

const char *it_stack_sign_admin(it_stack_t *self)
{
    char *token = it_stack_sign(self, "it-admin", NULL, NULL, true, 0);
    if (!token)
        return NULL;
    it_stack_set_token(self, token);
    free(token);
    return self->token;
}

char *it_stack_sign(it_stack_t *self, const char *sub, const char *sid, const char *tier,
                    bool admin, int64_t exp)
{
    mb_jwt_key_t *key = mb_jwt_key_new(self->secret, strlen(self->secret));
    if (!key)
        return NULL;
    /* The defaults, not mb_jwt_policy_default(): the stack's processes do
       not see the test's MUSICBUS_JWT_* (s_child_env strips them). */
    mb_jwt_policy_t policy = {.iss = MB_JWT_DEFAULT_ISS, .aud = MB_JWT_DEFAULT_AUD};
    mb_jwt_claims_t claims = {.roles = MB_ROLE_USER | (admin ? MB_ROLE_ADMIN : 0)};
    int64_t now = (int64_t)time(NULL);
    claims.exp = exp ? exp : now + 900;
    claims.iat = claims.exp < now ? claims.exp - 900 : now;
    snprintf(claims.sub, sizeof claims.sub, "%s", sub);
    snprintf(claims.sid, sizeof claims.sid, "%s", sid ? sid : "it-session");
    snprintf(claims.tier, sizeof claims.tier, "%s", tier ? tier : "free");
    char *token = NULL;
    if (mb_jwt_sign(key, &policy, &claims, &token) != 0)
        token = NULL;
    mb_jwt_key_destroy(&key);
    return token;
}
