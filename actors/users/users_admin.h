/*  users_admin — making the first admin of a fresh install, from the
    command line, straight into the users' LMDB environment (the same data
    folder the workers use; LMDB lets it run while they do):

        musicbus-users --create-admin EMAIL [--data DIR] [--map-size MIB]

    creates the account EMAIL with roles user and admin, its password read
    from MUSICBUS_ADMIN_PASSWORD or else the first line of standard input
    (not echoed on a terminal); when EMAIL already has an account, that
    account is made an admin and no password is read. */
#ifndef USERS_ADMIN_H
#define USERS_ADMIN_H

#include <lmdb.h>
#include <stdbool.h>
#include <stddef.h>

#include "mb_actor.h"
#include "users_crypto.h"
#include "users_model.h"

#define USERS_ENV_ADMIN_PASSWORD "MUSICBUS_ADMIN_PASSWORD"

/*  Makes the account with email `email` an admin, creating it with
    `password` (`len` bytes) when there is none. `password` may be NULL:
    then an existing account is promoted and a missing one gives
    MB_ENOTFOUND, so the caller can ask for a password only when one is
    needed. Returns 0 with the account's id in `id` and *created telling
    which happened; MB_EINVAL when the email or the password breaks a rule
    (the reason logged); MB_EIO when hashing fails; MB_EDB for LMDB errors
    (logged). The databases must be open in `env` or openable. */
int users_admin_create(MDB_env *env, const users_pwhash_t *pwhash, const char *email,
                       const char *password, size_t len, char id[USERS_ID_MAX + 1], bool *created);

/*  The --create-admin command: parses --data and --map-size from argv
    (the other common actor flags are accepted and ignored), opens the
    environment of `def` under DATA/<def->name>, and runs
    users_admin_create(). Prints the account's id on stdout. Returns the
    process exit code: 0 done, 1 failed, 2 bad flags. */
int users_admin_main(const mb_actor_def_t *def, const char *email, int argc, char **argv);

#endif
