/*  users_admin — see users_admin.h. */
#include "users_admin.h"

#include <getopt.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "mb_config.h"
#include "mb_error.h"
#include "mb_events.h"
#include "mb_id.h"
#include "mb_jwt.h"
#include "mb_log.h"
#include "users_store.h"

/*  Longest password line read from standard input, newline included. */
#define S_LINE_MAX (4 * USERS_PASSWORD_MAX + 2)

/*  Adds the users.user event about `u` to the outbox in `txn`; a running
    worker publishes it (the outbox is looked at every 250 ms, and at
    start-up). Returns 0 or an LMDB-style code for the caller to abort. */
static int s_event(MDB_txn *txn, const char *action, const users_user_t *u)
{
    char key[USERS_ID_MAX + 1];
    if (!users_copy(key, sizeof key, u->id.ptr, u->id.len))
        return MDB_BAD_VALSIZE;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    users_event_pack(&pk, action, u, false);
    int rc = mb_outbox_add(txn, USERS_TOPIC, key, buf.data, buf.size);
    msgpack_sbuffer_destroy(&buf);
    return rc == 0 ? 0 : rc == MB_EFULL ? MDB_MAP_FULL : MDB_PANIC;
}

/*  Writes a new admin for `email` in one transaction. Consumes `txn`. */
static int s_create(users_store_t *store, MDB_txn *txn, const char *email, const char *hash,
                    char id[USERS_ID_MAX + 1])
{
    mb_id_new(id);
    /* The display name is the address's local part, at most 64 bytes of
       valid UTF-8 without controls, which the name rule accepts. */
    size_t local = (size_t)(strchr(email, '@') - email);
    users_user_t u = {
        .id = {id, MB_ID_LEN},
        .email = {email, strlen(email)},
        .display_name = {email, local},
        .country = {NULL, 0},
        .tier = {"free", 4},
        .roles = MB_ROLE_USER | MB_ROLE_ADMIN,
        .password_hash = {hash, strlen(hash)},
    };
    users_now(u.created_at);
    memcpy(u.updated_at, u.created_at, sizeof u.updated_at);
    int rc = users_store_add_email(store, txn, email, id);
    if (rc == 0)
        rc = users_store_put(store, txn, &u);
    if (rc == 0)
        rc = s_event(txn, "created", &u);
    if (rc == 0)
        return mdb_txn_commit(txn);
    mdb_txn_abort(txn);
    return rc;
}

/*  Adds the admin role to user `id` (an "updated" event: roles are part
    of what users.user carries). Consumes `txn`. */
static int s_promote(users_store_t *store, MDB_txn *txn, const char *id)
{
    users_record_t rec;
    int rc = users_store_load(store, txn, id, strlen(id), &rec);
    if (rc == 0 && !(rec.user.roles & MB_ROLE_ADMIN)) {
        users_user_t u = rec.user;
        u.roles |= MB_ROLE_ADMIN | MB_ROLE_USER;
        users_now(u.updated_at);
        rc = users_store_put(store, txn, &u);
        if (rc == 0)
            rc = s_event(txn, "updated", &u);
    }
    users_record_release(&rec);
    if (rc == 0)
        return mdb_txn_commit(txn);
    mdb_txn_abort(txn);
    return rc;
}

int users_admin_create(MDB_env *env, const users_pwhash_t *pwhash, const char *email,
                       const char *password, size_t len, char id[USERS_ID_MAX + 1], bool *created)
{
    *created = false;
    char normal[USERS_EMAIL_MAX + 1];
    if (!users_email_normalise(email, strlen(email), normal)) {
        mb_error(0, "'%s' is not an email address", email);
        return MB_EINVAL;
    }
    users_store_t *store = NULL;
    if (users_store_open(env, &store) != 0)
        return MB_EDB;
    char hash[USERS_HASH_MAX] = "";
    int rc;
    for (;;) {
        MDB_txn *txn;
        if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0)
            break;
        rc = users_store_find_email(store, txn, normal, id);
        if (rc == 0) {
            rc = s_promote(store, txn, id);
            break;
        }
        if (rc == MDB_NOTFOUND && hash[0]) { /* hashed, and the email is still free */
            rc = s_create(store, txn, normal, hash, id);
            *created = rc == 0;
            break;
        }
        mdb_txn_abort(txn);
        if (rc != MDB_NOTFOUND)
            break;
        /* Hash outside the write transaction (it takes a while), then
           look again: a worker may have signed the email up meanwhile. */
        const char *message;
        const char *code = password ? users_password_policy(password, len, &message) : NULL;
        rc = !password ? MB_ENOTFOUND : code ? MB_EINVAL : 0;
        if (code)
            mb_error(0, "password refused (%s): %s", code, message);
        else if (rc == 0 && users_password_hash(pwhash, password, len, hash) != 0)
            rc = MB_EIO;
        if (rc) {
            users_store_destroy(&store);
            return rc;
        }
    }
    users_store_destroy(&store);
    sodium_memzero(hash, sizeof hash);
    if (rc) {
        mb_error(0, "cannot write the admin account: %s", mdb_strerror(rc));
        return MB_EDB;
    }
    return 0;
}

/*  Reads one line of standard input into buf without echoing it when it
    is a terminal. Returns its length without the newline, or -1. */
static long s_read_password(char *buf, size_t size, const char *email)
{
    struct termios old, quiet;
    bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        fprintf(stderr, "password for %s: ", email);
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    char *line = fgets(buf, (int)size, stdin);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fputc('\n', stderr);
    }
    if (!line)
        return -1;
    size_t len = strcspn(buf, "\r\n");
    buf[len] = '\0';
    return (long)len;
}

int users_admin_main(const mb_actor_def_t *def, const char *email, int argc, char **argv)
{
    mb_log_init(def->name);
    const char *data = NULL, *map_text = NULL;
    static const struct option options[] = {{"data", required_argument, NULL, 'd'},
                                            {"map-size", required_argument, NULL, 'm'},
                                            {"bus", required_argument, NULL, 'x'},
                                            {"heartbeat", required_argument, NULL, 'x'},
                                            {"liveness", required_argument, NULL, 'x'},
                                            {"ready-file", required_argument, NULL, 'x'},
                                            {NULL, 0, NULL, 0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (opt == 'd')
            data = optarg;
        else if (opt == 'm')
            map_text = optarg;
        else if (opt != 'x') {
            fprintf(stderr,
                    "usage: musicbus-%s --create-admin EMAIL [--data DIR] "
                    "[--map-size MIB]\n",
                    def->name);
            return 2;
        }
    }
    data = data ? data : mb_config_env(MB_ENV_DATA, MB_DEFAULT_DATA);
    mb_actor_def_t actual = *def;
    long map_mib = mb_config_env_long("MUSICBUS_MAP_SIZE_MB", 1024, 1, 1L << 24);
    if (map_text && mb_config_parse_long(map_text, 1, 1L << 24, &map_mib) != 0) {
        mb_error(0, "--map-size must be MiB in [1, 16777216]");
        return 2;
    }
    actual.map_size = (size_t)map_mib << 20;

    char *dir = NULL;
    if (asprintf(&dir, "%s/%s", data, def->name) < 0)
        abort();
    MDB_env *env = NULL;
    int exit_code = 1;
    if (mb_actor_open_env(&actual, dir, &env) == 0) {
        users_pwhash_t pwhash;
        users_pwhash_default(&pwhash);
        char id[USERS_ID_MAX + 1];
        bool created;
        int rc = users_admin_create(env, &pwhash, email, NULL, 0, id, &created);
        if (rc == MB_ENOTFOUND) {
            char line[S_LINE_MAX];
            const char *password = mb_config_env(USERS_ENV_ADMIN_PASSWORD, NULL);
            long len =
                password ? (long)strlen(password) : s_read_password(line, sizeof line, email);
            if (len < 0)
                mb_error(0, "no password: set %s or give it on standard input",
                         USERS_ENV_ADMIN_PASSWORD);
            else
                rc = users_admin_create(env, &pwhash, email, password ? password : line,
                                        (size_t)len, id, &created);
            sodium_memzero(line, sizeof line);
        }
        if (rc == 0) {
            mb_info(0, "%s admin %s (user %s) in %s", created ? "created" : "made", email, id, dir);
            printf("%s\n", id);
            exit_code = 0;
        }
        mdb_env_close(env);
    }
    free(dir);
    return exit_code;
}
