/*  musicbus-users — accounts, sign-in, sessions and refresh tokens.

    Answers the users' bus ops (README.md) from LMDB. Password hashing
    (Argon2id, ~0.1 s) always runs outside any write transaction, so one
    sign-in never holds the environment's single writer lock for that long;
    each write op then runs in one write transaction that commits or aborts
    as a whole. Access tokens are signed with lib/mb_jwt; only hashes of
    refresh tokens are stored. Nothing secret is logged. Changes to an
    account are published as users.user events through the outbox, in
    the write transaction of the change. */
#include "users.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mb_alloc.h"
#include "mb_config.h"
#include "mb_error.h"
#include "mb_id.h"
#include "mb_jwt.h"
#include "mb_log.h"
#include "mb_msgpack.h"
#include "users_admin.h"
#include "users_crypto.h"
#include "users_model.h"
#include "users_store.h"

#define USERS_SERVICE "users"
#define USERS_MAX_DBS 8 /* USERS_STORE_DBS, with room to grow */

typedef struct {
    users_store_t *store;
    mb_jwt_key_t *key;      /* signs access tokens */
    mb_jwt_policy_t policy; /* iss and aud written into them */
    int64_t access_ttl;     /* seconds */
    int64_t refresh_ttl;    /* seconds */
    users_pwhash_t pwhash;  /* Argon2id cost of new hashes */
    /*  A hash of a random password with the current cost: a sign-in for
        an unknown email is checked against it, so it takes as long as a
        wrong password for a real account. */
    char dummy_hash[USERS_HASH_MAX];
} users_t;

static const char *s_jwt_secret_file; /* --jwt-secret-file, else NULL */

void users_set_jwt_secret_file(const char *path)
{
    s_jwt_secret_file = path;
}

static users_t *s_self(mb_call_t *call)
{
    return mb_call_state(call);
}

/* ---- transactions and common answers ------------------------------------------ */

/*  Commits `txn`; true, or false after answering the LMDB error. */
static bool s_commit(mb_call_t *call, MDB_txn *txn)
{
    int rc = mdb_txn_commit(txn);
    if (rc)
        mb_call_db_error(call, rc);
    return rc == 0;
}

/*  Reads the request's auth map (set by the gateway from a verified access
    token) into *auth; false after answering 401. */
static bool s_auth(mb_call_t *call, mb_jwt_claims_t *auth)
{
    if (mb_jwt_read_auth(mb_call_request(call)->auth, auth) == 0)
        return true;
    mb_call_error(call, 401, "unauthenticated", NULL, "this operation needs a signed-in user");
    return false;
}

static void s_user_gone(mb_call_t *call, MDB_txn *txn)
{
    mdb_txn_abort(txn);
    mb_call_error(call, 404, "not_found", NULL, "no such user");
}

/*  Loads the user named by `id` in `txn`. True with *rec (release it);
    otherwise answered (the LMDB error; for a missing user, 404, or 401
    with `code_401` when given), `txn` aborted and *rec released. */
static bool s_load_or(mb_call_t *call, MDB_txn *txn, const char *id, users_record_t *rec,
                      const char *code_401)
{
    int rc = users_store_load(s_self(call)->store, txn, id, strlen(id), rec);
    if (rc == 0)
        return true;
    users_record_release(rec);
    if (rc == MDB_NOTFOUND && code_401) {
        mdb_txn_abort(txn);
        mb_call_error(call, 401, code_401, NULL, "this account no longer exists");
    } else if (rc == MDB_NOTFOUND)
        s_user_gone(call, txn);
    else
        mb_call_abort(call, txn, rc);
    return false;
}

static bool s_load(mb_call_t *call, MDB_txn *txn, const char *id, users_record_t *rec)
{
    return s_load_or(call, txn, id, rec, NULL);
}

/*  Adds a users.user event about `u` to the outbox in `txn` (with
    `deleted`, its "user" is nil). Returns 0, or non-zero after answering
    and aborting `txn`. */
static int s_event(mb_call_t *call, MDB_txn *txn, const char *action, const users_user_t *u,
                   bool deleted)
{
    char key[USERS_ID_MAX + 1];
    if (!users_copy(key, sizeof key, u->id.ptr, u->id.len) || memchr(u->id.ptr, '\0', u->id.len)) {
        mdb_txn_abort(txn);
        mb_call_error(call, 500, "internal", NULL, "this user's id cannot key an event");
        return -1;
    }
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    users_event_pack(&pk, action, u, deleted);
    int rc = mb_call_outbox_add(call, txn, USERS_TOPIC, key, buf.data, buf.size);
    msgpack_sbuffer_destroy(&buf);
    if (rc)
        mdb_txn_abort(txn);
    return rc;
}

/*  Writes `u` with a new updated_at and, unless `action` is NULL, its
    event; commits, and answers 200 with it. Consumes `txn`. */
static void s_save(mb_call_t *call, MDB_txn *txn, users_user_t *u, const char *action)
{
    users_now(u->updated_at);
    int rc = users_store_put(s_self(call)->store, txn, u);
    if (rc)
        mb_call_abort(call, txn, rc);
    else if (action && s_event(call, txn, action, u, false) != 0)
        ; /* answered */
    else if (s_commit(call, txn))
        users_user_pack(mb_call_reply(call, 200), u, false);
}

/* ---- tokens ------------------------------------------------------------------- */

/*  Issues a refresh token of `generation` for session `sid` and an access
    token for `u`, commits `txn` and answers 200 with both. Consumes
    `txn`. */
static void s_issue(mb_call_t *call, MDB_txn *txn, const users_user_t *u, const char *sid,
                    uint64_t generation)
{
    users_t *self = s_self(call);
    char refresh[USERS_REFRESH_LEN + 1];
    uint8_t hash[USERS_REFRESH_HASH];
    users_refresh_new(refresh, hash);
    int rc = users_store_refresh_add(self->store, txn, hash, sid, generation);
    if (rc) {
        mb_call_abort(call, txn, rc);
        return;
    }
    mb_jwt_claims_t claims = {.roles = u->roles, .iat = (int64_t)time(NULL)};
    claims.exp = claims.iat + self->access_ttl;
    char *access = NULL;
    if (!users_copy(claims.sub, sizeof claims.sub, u->id.ptr, u->id.len) ||
        !users_copy(claims.tier, sizeof claims.tier, u->tier.ptr, u->tier.len) ||
        !users_copy(claims.sid, sizeof claims.sid, sid, strlen(sid)) ||
        mb_jwt_sign(self->key, &self->policy, &claims, &access) != 0) {
        mdb_txn_abort(txn);
        mb_error(mb_call_rid(call), "cannot sign an access token for user %.*s", (int)u->id.len,
                 u->id.ptr);
        mb_call_error(call, 500, "internal", NULL, "cannot issue an access token");
        return;
    }
    if (s_commit(call, txn)) {
        msgpack_packer *pk = mb_call_reply(call, 200);
        msgpack_pack_map(pk, 4);
        mb_pack_cstr(pk, "access_token");
        mb_pack_cstr(pk, access);
        mb_pack_cstr(pk, "token_type");
        mb_pack_cstr(pk, "Bearer");
        mb_pack_cstr(pk, "expires_in");
        msgpack_pack_int64(pk, self->access_ttl);
        mb_pack_cstr(pk, "refresh_token");
        mb_pack_cstr(pk, refresh);
    }
    sodium_memzero(refresh, sizeof refresh);
    free(access);
}

/* ---- auth.* ----------------------------------------------------------------------- */

static void s_handle_auth_signup(mb_call_t *call)
{
    users_t *self = s_self(call);
    users_signup_t in;
    if (!users_signup_read(call, mb_call_arg(call, "body"), &in))
        return;
    /* A taken email is refused before paying for a hash; checked again
       under the write lock below, for two sign-ups racing. */
    char id[USERS_ID_MAX + 1];
    MDB_txn *txn = mb_call_begin(call, false);
    if (!txn)
        return;
    int rc = users_store_find_email(self->store, txn, in.email, id);
    mdb_txn_abort(txn);
    if (rc != MDB_NOTFOUND) {
        if (rc == 0)
            mb_call_error(call, 409, "email_taken", "body.email",
                          "an account with this email already exists");
        else
            mb_call_db_error(call, rc);
        return;
    }
    char hash[USERS_HASH_MAX];
    if (users_password_hash(&self->pwhash, in.password.ptr, in.password.len, hash) != 0) {
        mb_call_error(call, 503, "unavailable", NULL, "cannot hash the password now");
        return;
    }
    mb_id_new(id);
    users_user_t u = {
        .id = {id, MB_ID_LEN},
        .email = {in.email, strlen(in.email)},
        .display_name = in.display_name,
        .country = in.country,
        .tier = {"free", 4},
        .roles = MB_ROLE_USER,
        .password_hash = {hash, strlen(hash)},
    };
    users_now(u.created_at);
    memcpy(u.updated_at, u.created_at, sizeof u.updated_at);
    if (!(txn = mb_call_begin(call, true)))
        return;
    rc = users_store_add_email(self->store, txn, in.email, id);
    if (rc == 0)
        rc = users_store_put(self->store, txn, &u);
    if (rc == MDB_KEYEXIST) {
        mdb_txn_abort(txn);
        mb_call_error(call, 409, "email_taken", "body.email",
                      "an account with this email already exists");
    } else if (rc)
        mb_call_abort(call, txn, rc);
    else if (s_event(call, txn, "created", &u, false) != 0)
        ; /* answered */
    else if (s_commit(call, txn)) {
        mb_info(mb_call_rid(call), "signed up: user %s", id);
        users_user_pack(mb_call_reply(call, 201), &u, false);
    }
    sodium_memzero(hash, sizeof hash);
}

/*  The one answer to a failed sign-in, whatever failed. */
static void s_bad_credentials(mb_call_t *call)
{
    mb_call_error(call, 401, "invalid_credentials", NULL, "email or password is incorrect");
}

static void s_handle_auth_login(mb_call_t *call)
{
    users_t *self = s_self(call);
    static const char *const allowed[] = {"email", "password", NULL};
    const msgpack_object *body = mb_call_arg(call, "body");
    users_str_t email, password;
    if (!users_body_keys(call, body, allowed) ||
        !users_body_str(call, body, "email", true, 4 * USERS_EMAIL_MAX, &email) ||
        !users_body_str(call, body, "password", true, 4 * USERS_PASSWORD_MAX, &password))
        return;

    /* Find the account and copy its hash out; an email that cannot be an
       account's is just an unknown one. */
    char normal[USERS_EMAIL_MAX + 1], id[USERS_ID_MAX + 1] = "", hash[USERS_HASH_MAX] = "";
    if (users_email_normalise(email.ptr, email.len, normal)) {
        MDB_txn *txn = mb_call_begin(call, false);
        if (!txn)
            return;
        users_record_t rec;
        bool loaded = false;
        int rc = users_store_find_email(self->store, txn, normal, id);
        if (rc == 0) {
            rc = users_store_load(self->store, txn, id, strlen(id), &rec);
            loaded = true;
        }
        if (rc == 0 &&
            !users_copy(hash, sizeof hash, rec.user.password_hash.ptr, rec.user.password_hash.len))
            rc = MDB_CORRUPTED;
        if (loaded)
            users_record_release(&rec);
        mdb_txn_abort(txn);
        if (rc == MDB_NOTFOUND)
            id[0] = '\0';
        else if (rc) {
            mb_call_db_error(call, rc);
            return;
        }
    }
    /* Unknown emails cost one Argon2id run too: same answer, same time. */
    bool ok = users_password_verify(id[0] ? hash : self->dummy_hash,
                                    strlen(id[0] ? hash : self->dummy_hash), password.ptr,
                                    password.len) &&
              id[0];
    if (!ok) {
        mb_info(mb_call_rid(call), "sign-in refused");
        s_bad_credentials(call);
        return;
    }
    /* Hashes made with a lower cost are upgraded while the password is
       at hand. */
    char rehash[USERS_HASH_MAX] = "";
    if (users_password_needs_rehash(&self->pwhash, hash, strlen(hash)) &&
        users_password_hash(&self->pwhash, password.ptr, password.len, rehash) != 0)
        rehash[0] = '\0';

    MDB_txn *txn = mb_call_begin(call, true);
    users_record_t rec;
    if (!txn || !s_load_or(call, txn, id, &rec, "invalid_credentials"))
        return;
    users_user_t u = rec.user;
    int64_t now = (int64_t)time(NULL);
    size_t live;
    int rc = 0;
    if (rehash[0] && u.password_hash.len == strlen(hash) &&
        memcmp(u.password_hash.ptr, hash, u.password_hash.len) == 0) {
        u.password_hash = (users_str_t){rehash, strlen(rehash)};
        rc = users_store_put(self->store, txn, &u);
    }
    if (rc == 0)
        rc = users_store_sweep(self->store, txn, id, now, USERS_SESSIONS_MAX - 1, &live);
    char sid[MB_ID_LEN + 1];
    mb_id_new(sid);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    users_session_t session = {.created_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000,
                               .expires = now + self->refresh_ttl};
    snprintf(session.user, sizeof session.user, "%s", id);
    if (rc == 0)
        rc = users_store_session_add(self->store, txn, sid, &session);
    if (rc)
        mb_call_abort(call, txn, rc);
    else {
        mb_info(mb_call_rid(call), "signed in: user %s, session %s", id, sid);
        s_issue(call, txn, &u, sid, 0);
    }
    users_record_release(&rec);
    sodium_memzero(rehash, sizeof rehash);
}

static void s_bad_refresh(mb_call_t *call, MDB_txn *txn, const char *message)
{
    mdb_txn_abort(txn);
    mb_call_error(call, 401, "invalid_refresh_token", NULL, "%s; sign in again", message);
}

/*  Rotation: the token given is spent and a new one of the next
    generation is issued. A token of an older generation means a copy of a
    spent token is in use, by the client or by whoever stole it: the whole
    session is revoked, so neither can go on with it. */
static void s_handle_auth_refresh(mb_call_t *call)
{
    users_t *self = s_self(call);
    static const char *const allowed[] = {"refresh_token", NULL};
    const msgpack_object *body = mb_call_arg(call, "body");
    users_str_t token;
    uint8_t hash[USERS_REFRESH_HASH];
    if (!users_body_keys(call, body, allowed) ||
        !users_body_str(call, body, "refresh_token", true, 256, &token))
        return;
    if (!users_refresh_hash(token.ptr, token.len, hash)) {
        mb_call_error(call, 400, "invalid", "body.refresh_token",
                      "body.refresh_token must be 43 characters of base64url");
        return;
    }
    MDB_txn *txn = mb_call_begin(call, true);
    if (!txn)
        return;
    users_refresh_t r;
    users_session_t s;
    int64_t now = (int64_t)time(NULL);
    int rc = users_store_refresh_get(self->store, txn, hash, &r);
    if (rc == 0)
        rc = users_store_session_get(self->store, txn, r.sid, strlen(r.sid), &s);
    if (rc == MDB_NOTFOUND) {
        s_bad_refresh(call, txn, "unknown refresh token");
        return;
    }
    if (rc) {
        mb_call_abort(call, txn, rc);
        return;
    }
    if (s.revoked) {
        s_bad_refresh(call, txn, "this session was revoked");
        return;
    }
    if (now >= s.expires) {
        s_bad_refresh(call, txn, "refresh token expired");
        return;
    }
    if (r.generation != s.generation) {
        s.revoked = true;
        snprintf(s.reason, sizeof s.reason, "reuse");
        rc = users_store_session_put(self->store, txn, r.sid, &s);
        if (rc)
            mb_call_abort(call, txn, rc);
        else if (s_commit(call, txn)) {
            mb_warn(mb_call_rid(call),
                    "refresh token reused (generation %llu of %llu): session %s of user %s "
                    "revoked",
                    (unsigned long long)r.generation, (unsigned long long)s.generation, r.sid,
                    s.user);
            mb_call_error(call, 401, "refresh_token_reused", NULL,
                          "this refresh token was already used; the session is revoked, sign in "
                          "again");
        }
        return;
    }
    users_record_t rec;
    if (!s_load_or(call, txn, s.user, &rec, "invalid_refresh_token"))
        return;
    s.generation++;
    s.expires = now + self->refresh_ttl;
    rc = users_store_session_put(self->store, txn, r.sid, &s);
    if (rc)
        mb_call_abort(call, txn, rc);
    else
        s_issue(call, txn, &rec.user, r.sid, s.generation);
    users_record_release(&rec);
}

/*  Revokes the session the access token belongs to. Always 204: signing
    out of a session that is gone or not yours changes nothing. */
static void s_handle_auth_logout(mb_call_t *call)
{
    users_t *self = s_self(call);
    mb_jwt_claims_t auth;
    if (!s_auth(call, &auth))
        return;
    if (!auth.sid[0]) {
        mb_call_error(call, 401, "unauthenticated", NULL, "the access token names no session");
        return;
    }
    MDB_txn *txn = mb_call_begin(call, true);
    if (!txn)
        return;
    users_session_t s;
    int rc = users_store_session_get(self->store, txn, auth.sid, strlen(auth.sid), &s);
    if (rc == 0 && strcmp(s.user, auth.sub) == 0 && !s.revoked) {
        s.revoked = true;
        snprintf(s.reason, sizeof s.reason, "logout");
        rc = users_store_session_put(self->store, txn, auth.sid, &s);
    } else if (rc == MDB_NOTFOUND)
        rc = 0;
    if (rc)
        mb_call_abort(call, txn, rc);
    else if (s_commit(call, txn))
        msgpack_pack_nil(mb_call_reply(call, 204));
}

/* ---- me.* ---------------------------------------------------------------------------- */

static void s_handle_me_get(mb_call_t *call)
{
    mb_jwt_claims_t auth;
    users_record_t rec;
    MDB_txn *txn;
    if (!s_auth(call, &auth) || !(txn = mb_call_begin(call, false)) || !s_load(call, txn, auth.sub, &rec))
        return;
    users_user_pack(mb_call_reply(call, 200), &rec.user, false);
    mdb_txn_abort(txn);
    users_record_release(&rec);
}

static void s_handle_me_update(mb_call_t *call)
{
    mb_jwt_claims_t auth;
    users_record_t rec;
    MDB_txn *txn;
    if (!s_auth(call, &auth) || !(txn = mb_call_begin(call, true)) || !s_load(call, txn, auth.sub, &rec))
        return;
    users_user_t u = rec.user;
    if (users_user_apply(call, mb_call_arg(call, "body"), &u))
        s_save(call, txn, &u, users_event_differs(&rec.user, &u) ? "updated" : NULL);
    else
        mdb_txn_abort(txn);
    users_record_release(&rec);
}

/*  A new password revokes every session of the user, this one included:
    whoever knew the old password may hold one. */
static void s_handle_me_password(mb_call_t *call)
{
    users_t *self = s_self(call);
    static const char *const allowed[] = {"current_password", "new_password", NULL};
    const msgpack_object *body = mb_call_arg(call, "body");
    mb_jwt_claims_t auth;
    users_str_t current, next;
    if (!s_auth(call, &auth) || !users_body_keys(call, body, allowed) ||
        !users_body_str(call, body, "current_password", true, 4 * USERS_PASSWORD_MAX, &current) ||
        !users_body_str(call, body, "new_password", true, 4 * USERS_PASSWORD_MAX, &next))
        return;
    const char *message;
    const char *code = users_password_policy(next.ptr, next.len, &message);
    if (code) {
        mb_call_error(call, 400, code, "body.new_password", "%s", message);
        return;
    }
    char old_hash[USERS_HASH_MAX];
    users_record_t rec;
    MDB_txn *txn = mb_call_begin(call, false);
    if (!txn || !s_load(call, txn, auth.sub, &rec))
        return;
    bool copied = users_copy(old_hash, sizeof old_hash, rec.user.password_hash.ptr,
                             rec.user.password_hash.len);
    users_record_release(&rec);
    mdb_txn_abort(txn);
    if (!copied || !users_password_verify(old_hash, strlen(old_hash), current.ptr, current.len)) {
        mb_call_error(call, 403, "wrong_password", "body.current_password",
                      "the current password is incorrect");
        return;
    }
    char hash[USERS_HASH_MAX];
    if (users_password_hash(&self->pwhash, next.ptr, next.len, hash) != 0) {
        mb_call_error(call, 503, "unavailable", NULL, "cannot hash the password now");
        return;
    }
    if (!(txn = mb_call_begin(call, true)) || !s_load(call, txn, auth.sub, &rec))
        return;
    users_user_t u = rec.user;
    u.password_hash = (users_str_t){hash, strlen(hash)};
    users_now(u.updated_at);
    int rc = users_store_put(self->store, txn, &u);
    if (rc == 0)
        rc = users_store_revoke_all(self->store, txn, auth.sub, "password");
    if (rc)
        mb_call_abort(call, txn, rc);
    else if (s_commit(call, txn)) {
        mb_info(mb_call_rid(call), "password changed: user %s; every session revoked", auth.sub);
        msgpack_pack_nil(mb_call_reply(call, 204));
    }
    users_record_release(&rec);
    sodium_memzero(hash, sizeof hash);
}

/* ---- user.* (admin) -------------------------------------------------------------------- */

/*  Reads the auth map and checks it has the admin role (the gateway lets
    only admins reach these ops, x-access admin; the actor checks again,
    as the bus has other clients), then reads args.id into key. False
    after answering 401, 403 or 400. */
static bool s_admin_on_user(mb_call_t *call, const char *doing, mb_jwt_claims_t *auth,
                            char key[USERS_ID_MAX + 1])
{
    if (!s_auth(call, auth))
        return false;
    if (!(auth->roles & MB_ROLE_ADMIN)) {
        mb_call_error(call, 403, "forbidden", NULL, "only an admin may %s", doing);
        return false;
    }
    const char *id;
    size_t id_len;
    if (!mb_obj_str(mb_call_arg(call, "id"), &id, &id_len) || id_len == 0 ||
        id_len > USERS_ID_MAX || memchr(id, '\0', id_len)) {
        mb_call_error(call, 400, "invalid", "id", "id must be a string of 1 to %d bytes",
                      USERS_ID_MAX);
        return false;
    }
    users_copy(key, USERS_ID_MAX + 1, id, id_len);
    return true;
}

/*  A tier set to what it was answers 200 and publishes nothing. */
static void s_handle_user_set_tier(mb_call_t *call)
{
    static const char *const allowed[] = {"tier", NULL};
    const msgpack_object *body = mb_call_arg(call, "body");
    mb_jwt_claims_t auth;
    char key[USERS_ID_MAX + 1];
    if (!s_admin_on_user(call, "change a user's tier", &auth, key))
        return;
    users_str_t tier;
    if (!users_body_keys(call, body, allowed) ||
        !users_body_str(call, body, "tier", true, USERS_TIER_MAX, &tier))
        return;
    if (!users_tier_valid(tier.ptr, tier.len)) {
        mb_call_error(call, 400, "invalid", "body.tier",
                      "body.tier must be \"free\" or \"premium\"");
        return;
    }
    users_record_t rec;
    MDB_txn *txn = mb_call_begin(call, true);
    if (!txn || !s_load(call, txn, key, &rec))
        return;
    users_user_t u = rec.user;
    u.tier = tier;
    mb_info(mb_call_rid(call), "tier of user %s set to %.*s by admin %s", key, (int)tier.len,
            tier.ptr, auth.sub);
    s_save(call, txn, &u, users_event_differs(&rec.user, &u) ? "tier_changed" : NULL);
    users_record_release(&rec);
}

/*  Deletes an account with its sessions and refresh tokens and frees its
    email; other actors follow the "deleted" event. Access tokens already
    issued to it stay valid until they expire (they are stateless), but
    every op on the account answers 404. */
static void s_handle_user_delete(mb_call_t *call)
{
    mb_jwt_claims_t auth;
    char key[USERS_ID_MAX + 1];
    users_record_t rec;
    MDB_txn *txn;
    if (!s_admin_on_user(call, "delete a user", &auth, key) || !(txn = mb_call_begin(call, true)) ||
        !s_load(call, txn, key, &rec))
        return;
    int rc = users_store_delete(s_self(call)->store, txn, &rec.user);
    if (rc)
        mb_call_abort(call, txn, rc);
    else if (s_event(call, txn, "deleted", &rec.user, true) != 0)
        ; /* answered */
    else if (s_commit(call, txn)) {
        mb_info(mb_call_rid(call), "user %s deleted by admin %s", key, auth.sub);
        msgpack_pack_nil(mb_call_reply(call, 204));
    }
    users_record_release(&rec);
}

/* ---- the actor ------------------------------------------------------------------------- */

static void s_close(void *state)
{
    users_t *self = state;
    if (!self)
        return;
    users_store_destroy(&self->store);
    mb_jwt_key_destroy(&self->key);
    free(self);
}

static int s_open(MDB_env *env, void **state)
{
    users_t *self = mb_calloc(1, sizeof *self);
    if (mb_jwt_key_load(s_jwt_secret_file, &self->key) != 0) {
        mb_error(0, "users: refusing to start without a JWT signing secret of at least %d bytes",
                 MB_JWT_SECRET_MIN);
        s_close(self);
        return MB_EINVAL;
    }
    mb_jwt_policy_default(&self->policy);
    self->access_ttl = mb_config_env_long(USERS_ENV_ACCESS_TTL, USERS_ACCESS_TTL, 1, 86400);
    self->refresh_ttl =
        mb_config_env_long(USERS_ENV_REFRESH_TTL, USERS_REFRESH_TTL, 1, 365L * 86400);
    users_pwhash_default(&self->pwhash);
    char random[MB_ID_LEN + 1];
    mb_id_new(random);
    int rc = users_password_hash(&self->pwhash, random, MB_ID_LEN, self->dummy_hash);
    if (rc == 0 && users_store_open(env, &self->store) != 0)
        rc = MB_EDB;
    if (rc) {
        s_close(self);
        return rc;
    }
    mb_info(0,
            "users: Argon2id t=%llu m=%zu KiB; access tokens %llds (iss %s, aud %s), "
            "refresh tokens %llds",
            self->pwhash.opslimit, self->pwhash.memlimit >> 10, (long long)self->access_ttl,
            self->policy.iss, self->policy.aud, (long long)self->refresh_ttl);
    *state = self;
    return 0;
}

static const mb_op_t s_ops[] = {
    {"auth.signup", s_handle_auth_signup},
    {"auth.login", s_handle_auth_login},
    {"auth.refresh", s_handle_auth_refresh},
    {"auth.logout", s_handle_auth_logout},
    {"me.get", s_handle_me_get},
    {"me.update", s_handle_me_update},
    {"me.password", s_handle_me_password},
    {"user.set_tier", s_handle_user_set_tier},
    {"user.delete", s_handle_user_delete},
    {NULL, NULL},
};

static const mb_actor_def_t s_def = {
    .name = USERS_SERVICE,
    .ops = s_ops,
    .max_dbs = USERS_MAX_DBS,
    .open = s_open,
    .close = s_close,
};

const mb_actor_def_t *users_actor_def(void)
{
    return &s_def;
}

/*  Tests compile this file with USERS_NO_MAIN to reach the handlers
    through users_actor_def(). */
#ifndef USERS_NO_MAIN
/*  Takes our own flags out of argv (--jwt-secret-file PATH, --create-admin
    EMAIL, also in the --flag=value form) and hands the rest to
    mb_actor_main() or, with --create-admin, to users_admin_main(). */
int main(int argc, char **argv)
{
    const char *create_admin = NULL;
    char **rest = mb_calloc((size_t)argc + 1, sizeof *rest);
    int n = 0;
    rest[n++] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--jwt-secret-file") == 0 && i + 1 < argc)
            users_set_jwt_secret_file(argv[++i]);
        else if (strncmp(a, "--jwt-secret-file=", 18) == 0)
            users_set_jwt_secret_file(a + 18);
        else if (strcmp(a, "--create-admin") == 0 && i + 1 < argc)
            create_admin = argv[++i];
        else if (strncmp(a, "--create-admin=", 15) == 0)
            create_admin = a + 15;
        else
            rest[n++] = argv[i];
    }
    int rc = create_admin ? users_admin_main(&s_def, create_admin, n, rest)
                          : mb_actor_main(&s_def, n, rest);
    free(rest);
    return rc;
}
#endif
