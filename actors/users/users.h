/*  users — the users actor: accounts, Argon2id password hashes, sessions
    and refresh tokens, tier and roles. Ops, replies, errors, key layout
    and the --create-admin command: actors/users/README.md. */
#ifndef USERS_H
#define USERS_H

#include "mb_actor.h"

#define USERS_ENV_ACCESS_TTL "MUSICBUS_ACCESS_TTL"   /* access-token lifetime, seconds */
#define USERS_ACCESS_TTL 900                         /* 15 minutes */
#define USERS_ENV_REFRESH_TTL "MUSICBUS_REFRESH_TTL" /* refresh-token lifetime, seconds */
#define USERS_REFRESH_TTL (30 * 86400)               /* 30 days */
#define USERS_SESSIONS_MAX 50 /* live sessions per user; more sign-ins drop the oldest */

/*  The actor's definition (service "users", its op table and LMDB
    hooks), for main() and for tests that drive the handlers through
    mb_actor_dispatch(). Its open hook reads the JWT secret (see
    users_set_jwt_secret_file()), the token lifetimes and the Argon2id
    parameters, makes the dummy hash that answers sign-ins of unknown
    emails, and opens the databases; it fails, after one clear log line,
    when there is no usable secret. Static; never NULL. */
const mb_actor_def_t *users_actor_def(void);

/*  Makes the open hook read the JWT secret from file `path` (the
    --jwt-secret-file flag) instead of the environment; NULL goes back to
    MUSICBUS_JWT_SECRET / MUSICBUS_JWT_SECRET_FILE. `path` is borrowed. */
void users_set_jwt_secret_file(const char *path);

#endif
