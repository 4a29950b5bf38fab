/*  users_store — the users actor's LMDB databases: users by id, the email
    index, sessions, refresh-token hashes, and the two lists that let a
    user's sessions and a session's refresh tokens be found again.

    Every function works inside the caller's transaction, so a handler
    makes all its changes in one write transaction and commits or aborts it
    as a whole. Functions return 0 or an LMDB result code (MDB_NOTFOUND,
    MDB_MAP_FULL, MDB_CORRUPTED for a value that does not decode, ...).
    Key layout: actors/users/README.md. */
#ifndef USERS_STORE_H
#define USERS_STORE_H

#include <lmdb.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mb_jwt.h"
#include "users_crypto.h"
#include "users_model.h"

/*  Named databases this module opens: give mb_actor_def_t.max_dbs at
    least this. */
#define USERS_STORE_DBS 6

typedef struct users_store users_store_t;

/*  A stored user copied out of LMDB and decoded: stays valid after writes
    in the same transaction, which a pointer into the map does not. */
typedef struct {
    char *data; /* owned copy of the value */
    size_t size;
    msgpack_unpacked msg; /* decoded, borrowing `data` */
    users_user_t user;    /* borrows from msg */
} users_record_t;

/*  A session: one sign-in, and the family of refresh tokens rotated from
    it. */
typedef struct {
    char user[MB_JWT_ID_MAX + 1]; /* the user's id */
    int64_t created_us;           /* Unix microseconds: orders sign-ins */
    int64_t expires;              /* Unix seconds: the live refresh token's end */
    uint64_t generation;          /* generation of the live refresh token (0 at sign-in) */
    bool revoked;
    char reason[16]; /* why revoked: "logout", "reuse", "password"; "" while live */
} users_session_t;

/*  What a refresh-token hash leads to. */
typedef struct {
    char sid[MB_JWT_ID_MAX + 1]; /* its session */
    uint64_t generation;         /* the session generation it was issued at */
} users_refresh_t;

/*  Opens (creating) the databases in a write transaction of its own.
    Returns 0 with *self_p, or an LMDB result code (logged). */
int users_store_open(MDB_env *env, users_store_t **self_p);

/*  Frees the handle (the databases stay open in the environment); nulls
 *self_p. Safe to call twice. */
void users_store_destroy(users_store_t **self_p);

/* ---- users ---------------------------------------------------------------- */

/*  Loads user `id` into *rec, which the caller releases with
    users_record_release() whatever is returned. */
int users_store_load(users_store_t *self, MDB_txn *txn, const char *id, size_t id_len,
                     users_record_t *rec);
void users_record_release(users_record_t *rec);

/*  Writes (replacing) user `u`, packed in its stored form. */
int users_store_put(users_store_t *self, MDB_txn *txn, const users_user_t *u);

/*  Looks up the id of the user with normalised email `email`. Returns 0
    with the id copied into id (NUL-terminated), MDB_NOTFOUND, or another
    code. */
int users_store_find_email(users_store_t *self, MDB_txn *txn, const char *email,
                           char id[USERS_ID_MAX + 1]);

/*  Records that `email` belongs to user `id`. Returns MDB_KEYEXIST when
    the email is already taken. */
int users_store_add_email(users_store_t *self, MDB_txn *txn, const char *email, const char *id);

/*  Deletes user `u` (as stored) and everything that leads to it: every
    session of the user with its refresh-token hashes and list entries,
    the email index entry (when it names this user), and the record. */
int users_store_delete(users_store_t *self, MDB_txn *txn, const users_user_t *u);

/* ---- sessions and refresh tokens ---------------------------------------------- */

int users_store_session_get(users_store_t *self, MDB_txn *txn, const char *sid, size_t sid_len,
                            users_session_t *s);
int users_store_session_put(users_store_t *self, MDB_txn *txn, const char *sid,
                            const users_session_t *s);

/*  Writes a new session and lists it under its user. */
int users_store_session_add(users_store_t *self, MDB_txn *txn, const char *sid,
                            const users_session_t *s);

/*  Stores refresh-token hash `hash` for session `sid` at `generation`,
    and lists it under the session. */
int users_store_refresh_add(users_store_t *self, MDB_txn *txn, const uint8_t *hash, const char *sid,
                            uint64_t generation);

/*  Looks up a refresh-token hash. */
int users_store_refresh_get(users_store_t *self, MDB_txn *txn, const uint8_t *hash,
                            users_refresh_t *r);

/*  Marks every live session of `user` revoked with `reason`. */
int users_store_revoke_all(users_store_t *self, MDB_txn *txn, const char *user, const char *reason);

/*  Forgets the sessions of `user` that expired before `now` (the session,
    its refresh hashes and its entry in the user's list), then, while more
    than `keep` remain, the oldest ones. Sets *live to how many remain. */
int users_store_sweep(users_store_t *self, MDB_txn *txn, const char *user, int64_t now, size_t keep,
                      size_t *live);

#endif
