/*  stack — starts a real musicbus stack for one test and takes it down.

    A stack is a temporary data folder plus the processes of the Procfile,
    run from $MUSICBUS_BIN_DIR (set by mb_add_test): one broker bound to a
    port the OS picks (tcp://127.0.0.1:*, short heartbeats) keeping its
    event log in the folder, N catalog, users and stats workers, and a
    gateway on 127.0.0.1:0. Ready files tell the real addresses. The stack
    writes a random signing secret into the folder and hands it to users
    and gateway (MUSICBUS_JWT_SECRET_FILE), so tokens verify across them
    and tests can sign their own (it_stack_sign). Every process runs in a
    process group of its own and dies with the test process
    (PR_SET_PDEATHSIG), so nothing outlives a test even when it crashes or
    times out; it_stack_destroy() stops them (SIGTERM, SIGKILL after a
    grace period) and removes the folder.

        static it_stack_t *s_stack;
        static void s_up (void) {
            s_stack = it_stack_new (NULL);            // broker, catalog, users, gateway
            cr_assert (s_stack);
            cr_assert (it_stack_admin_login (s_stack)); // it_call() now sends its token
        }
        static void s_down (void) { it_stack_destroy (&s_stack); }
        Test (catalog, get, .init = s_up, .fini = s_down) {
            char *url = it_stack_url (s_stack, "/v1/artists/nope");
            ...
        }
*/
#ifndef IT_STACK_H
#define IT_STACK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Heartbeats of the test stacks: a dead worker is noticed after ~300 ms. */
#define IT_HEARTBEAT_MS 100
#define IT_LIVENESS 3

/* How long a process gets to start (ready file) and to stop (SIGTERM). */
#define IT_START_TIMEOUT_MS 20000
#define IT_STOP_TIMEOUT_MS 10000

#define IT_MAX_PROCS 48

/* Rate budgets of the gateway unless a test asks for others: far more
   than any test sends, so only the limiter test ever sees a 429. */
#define IT_RATE_GENEROUS "100000/s burst 100000"

/* The admin it_stack_admin_login() makes. */
#define IT_ADMIN_EMAIL "admin@musicbus.test"
#define IT_ADMIN_PASSWORD "it-admin-pass-7Qx"

typedef enum {
    IT_BROKER,
    IT_CATALOG,
    IT_USERS,
    IT_STATS,
    IT_PLAYLISTS,
    IT_TRANSCODE,
    IT_GATEWAY
} it_kind_t;

typedef struct {
    int catalogs;                  /* catalog workers to start */
    int users;                     /* users workers to start */
    int stats;                     /* stats workers to start */
    int playlists;                 /* playlists workers to start */
    int transcodes;                /* transcode workers to start */
    bool no_gateway;               /* leave the gateway out */
    int gateway_timeout_ms;        /* the gateway's --timeout; 0 for its default */
    int broker_timeout_ms;         /* the broker's --timeout; 0 for its default */
    int liveness;                  /* --liveness of broker and workers; 0 for IT_LIVENESS */
    const char *rate_default;      /* the gateway's --rate default=SPEC; NULL: IT_RATE_GENEROUS */
    const char *rate_signin;       /* its --rate signin=SPEC; NULL: IT_RATE_GENEROUS */
    const char *const *worker_env; /* NULL-terminated "NAME=value" (at most 16) for every
                                      worker, or NULL */
} it_stack_opts_t;

typedef struct it_stack it_stack_t;

/*  Makes a data folder under $TMPDIR with a signing secret in it, starts
    the broker, then the catalog, users, stats, playlists and transcode
    workers, then the gateway, and waits until each wrote its ready file and, when there
    are catalog workers and a gateway, until the catalog answers through
    the gateway. `opts` NULL means one catalog and one users worker, no
    stats worker, and the defaults. Returns NULL when something did not
    start (why is on stderr); what had started is stopped again.

    Environment of the processes: the test's, less every MUSICBUS_*
    variable but MUSICBUS_LOG_LEVEL (a developer's shell must not change
    what a test runs), plus, for users and gateway,
    MUSICBUS_JWT_SECRET_FILE, for catalog and gateway
    MUSICBUS_MEDIA_SECRET_FILE (media URLs), and for users a cheap Argon2id
    (MUSICBUS_PWHASH_OPSLIMIT=1, MUSICBUS_PWHASH_MEMLIMIT=8192). */
it_stack_t *it_stack_new(const it_stack_opts_t *opts);

/*  Stops every process still running (gateway and workers first, then the
    broker: SIGTERM, SIGKILL after IT_STOP_TIMEOUT_MS), removes the data
    folder and frees the stack; nulls *self_p. Safe to call twice. */
void it_stack_destroy(it_stack_t **self_p);

/*  Starts one more process of `kind` and returns its handle (index in the
    stack's process table), or -1 when it could not start. A broker binds
    `bind` (NULL: tcp://127.0.0.1:*) and keeps its log in the stack's
    folder, and the stack then uses the endpoint it reports; a gateway
    listens on 127.0.0.1:0. Every kind is waited for: its ready file
    (a worker writes it once it said READY to the broker). */
int it_stack_start(it_stack_t *self, it_kind_t kind, const char *bind);

/*  it_stack_start() of a worker without waiting for anything: returns
    right after the fork, so a test can kill it at any moment of its
    start-up and work. -1 for a broker or gateway. */
int it_stack_spawn(it_stack_t *self, it_kind_t kind);

/*  Starts a broker, the workers and (unless no_gateway) a gateway as
    `opts` says (NULL: the stack's own options) on the stack's data
    folder, as it_stack_new() does, e.g. after it_stack_kill_all().
    Returns 0 or -1. */
int it_stack_start_all(it_stack_t *self, const it_stack_opts_t *opts);

/*  Polls GET /v1/artists/<unknown id> until the catalog answers it (404)
    or timeout_ms pass. Returns 0 or -1. */
int it_stack_wait_catalog(it_stack_t *self, long timeout_ms);

/*  The handle of the nth (from 0) running process of `kind`, or -1. */
int it_stack_find(it_stack_t *self, it_kind_t kind, int nth);

/*  Process id of a handle (0 when it has exited). */
pid_t it_stack_pid(it_stack_t *self, int proc);

/*  Sends `sig` to a running process. Returns 0, or -1 when it is gone. */
int it_stack_signal(it_stack_t *self, int proc, int sig);

/*  SIGTERM, then waits up to timeout_ms (SIGKILL after that) and reaps.
    Returns the wait status (as from waitpid), or -1 when the process had
    already exited and been reaped before. */
int it_stack_stop(it_stack_t *self, int proc, long timeout_ms);

/*  Waits up to timeout_ms for a process that was signalled to exit and
    reaps it. Returns its wait status, or -1 on timeout. */
int it_stack_wait(it_stack_t *self, int proc, long timeout_ms);

/*  Stops every running process, gateways and workers first, the broker
    last, each with it_stack_stop(). Returns how many did not exit with
    status 0 (each is reported on stderr). */
int it_stack_stop_all(it_stack_t *self);

/*  SIGKILLs every running process at once and reaps them. */
void it_stack_kill_all(it_stack_t *self);

/*  "http://127.0.0.1:PORT" + path, of the current gateway. Caller frees. */
char *it_stack_url(it_stack_t *self, const char *path);

/*  The broker's endpoint as it reported it ("tcp://127.0.0.1:41234"). */
const char *it_stack_endpoint(it_stack_t *self);

/*  The stack's data folder. */
const char *it_stack_data_dir(it_stack_t *self);

/*  Starts argv[0] (a path) with argv in a process group of its own that
    gets SIGKILL when the calling thread dies, stdin from /dev/null and,
    when `log` is not NULL, stderr appended to that file. For programs
    other than the stack's (scripts/up). Returns the pid, or -1. */
pid_t it_spawn(char *const argv[], const char *log);

/*  it_spawn() for a program that starts processes of its own in its
    group (scripts/up): a guard process SIGKILLs the whole group as soon as
    the calling process is gone, even when it crashed. Returns the pid (and
    process group) of the program, or -1. */
pid_t it_spawn_tree(char *const argv[], const char *log);

/*  pid of `argv` run as it_spawn() does, with `env` (NULL-terminated
    "NAME=value" strings) added to the environment, replacing variables
    of the same name. `stdout_path`, when not NULL, receives its standard
    output. */
pid_t it_spawn_env(char *const argv[], char *const env[], const char *log, const char *stdout_path);

/* ---- tokens ---------------------------------------------------------------- */

/*  The stack's signing secret (the file's bytes) and the file. Borrowed. */
const char *it_stack_secret(it_stack_t *self, size_t *len);
const char *it_stack_secret_file(it_stack_t *self);

/*  Makes IT_ADMIN_EMAIL an admin (musicbus-users --create-admin on the
    stack's data folder, the password IT_ADMIN_PASSWORD in
    MUSICBUS_ADMIN_PASSWORD), signs it in over HTTP (POST /v1/auth/login)
    and keeps its tokens: it_call() sends the access token from then on.
    Needs a users worker and the gateway. Returns the access token
    (borrowed, valid until the stack's token changes), or NULL (why is on
    stderr). */
const char *it_stack_admin_login(it_stack_t *self);

/*  Sets the stack's token to an admin token the test signs itself
    (it_stack_sign(), subject "it-admin"): for stacks without a users
    worker. Returns it (borrowed) or NULL. */
const char *it_stack_sign_admin(it_stack_t *self);

/*  The user id of the admin it_stack_admin_login() made, or NULL. */
const char *it_stack_admin_id(it_stack_t *self);

/*  The access token it_call() sends (NULL: none). Borrowed. */
const char *it_stack_token(it_stack_t *self);

/*  Sets it (copied; NULL for none). */
void it_stack_set_token(it_stack_t *self, const char *token);

/*  Signs an access token with the stack's secret and the default issuer
    and audience (lib/mb_jwt), as the users actor would: subject `sub`,
    session `sid` (NULL: "it-session"), tier `tier` (NULL: "free"), roles
    user plus admin when `admin`, expiring at `exp` (Unix seconds; 0: in
    15 minutes). Caller frees; NULL when mb_jwt refuses the claims. */
char *it_stack_sign(it_stack_t *self, const char *sub, const char *sid, const char *tier,
                    bool admin, int64_t exp);

/*  Milliseconds on a monotonic clock, for measuring deadlines. */
long it_now_ms(void);

#endif
