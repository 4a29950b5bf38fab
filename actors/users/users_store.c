/*  users_store — see users_store.h; key layout in README.md. */
#include "users_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_alloc.h"
#include "mb_log.h"
#include "mb_msgpack.h"

enum {
    S_USERS,           /* user id -> user map */
    S_EMAILS,          /* normalised email -> user id */
    S_SESSIONS,        /* session id -> session map */
    S_REFRESH,         /* BLAKE2b(refresh token) -> {sid, generation} */
    S_USER_SESSIONS,   /* user id -> session id, DUPSORT */
    S_SESSION_REFRESH, /* session id -> BLAKE2b(refresh token), DUPSORT */
    S_N_DBS
};

_Static_assert(S_N_DBS == USERS_STORE_DBS, "USERS_STORE_DBS");

static const char *s_names[S_N_DBS] = {"users",   "emails",        "sessions",
                                       "refresh", "user_sessions", "session_refresh"};

struct users_store {
    MDB_dbi dbi[S_N_DBS];
};

static MDB_val s_val(const void *data, size_t size)
{
    return (MDB_val){.mv_size = size, .mv_data = (void *)data};
}

static MDB_val s_cstr(const char *s)
{
    return s_val(s, strlen(s));
}

int users_store_open(MDB_env *env, users_store_t **self_p)
{
    users_store_t *self = mb_calloc(1, sizeof *self);
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(env, NULL, 0, &txn);
    for (int i = 0; rc == 0 && i < S_N_DBS; i++) {
        unsigned flags = MDB_CREATE;
        if (i == S_USER_SESSIONS || i == S_SESSION_REFRESH)
            flags |= MDB_DUPSORT;
        rc = mdb_dbi_open(txn, s_names[i], flags, &self->dbi[i]);
    }
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc) {
        mb_error(0, "users: cannot open databases: %s", mdb_strerror(rc));
        free(self);
        return rc;
    }
    *self_p = self;
    return 0;
}

void users_store_destroy(users_store_t **self_p)
{
    if (self_p && *self_p) {
        free(*self_p);
        *self_p = NULL;
    }
}

/*  Packs into a new buffer, the caller's to destroy. */
static void s_buffer(msgpack_sbuffer *buf, msgpack_packer *pk)
{
    msgpack_sbuffer_init(buf);
    msgpack_packer_init(pk, buf, msgpack_sbuffer_write);
}

/*  Copies `value` into *data (the caller frees it, whatever is returned)
    and decodes it into *msg, which must be a map. */
static int s_unpack_map(const MDB_val *value, char **data, msgpack_unpacked *msg)
{
    *data = mb_malloc(value->mv_size ? value->mv_size : 1);
    memcpy(*data, value->mv_data, value->mv_size);
    size_t offset = 0;
    if (msgpack_unpack_next(msg, *data, value->mv_size, &offset) != MSGPACK_UNPACK_SUCCESS ||
        msg->data.type != MSGPACK_OBJECT_MAP)
        return MDB_CORRUPTED;
    return 0;
}

/* ---- users ------------------------------------------------------------------ */

int users_store_load(users_store_t *self, MDB_txn *txn, const char *id, size_t id_len,
                     users_record_t *rec)
{
    memset(rec, 0, sizeof *rec);
    msgpack_unpacked_init(&rec->msg);
    MDB_val key = s_val(id, id_len), value;
    int rc = id_len ? mdb_get(txn, self->dbi[S_USERS], &key, &value) : MDB_NOTFOUND;
    if (rc)
        return rc;
    rec->size = value.mv_size;
    rc = s_unpack_map(&value, &rec->data, &rec->msg);
    if (rc == 0 && !users_user_decode(&rec->msg.data, &rec->user))
        rc = MDB_CORRUPTED;
    return rc;
}

void users_record_release(users_record_t *rec)
{
    msgpack_unpacked_destroy(&rec->msg);
    free(rec->data);
    rec->data = NULL;
    rec->size = 0;
}

int users_store_put(users_store_t *self, MDB_txn *txn, const users_user_t *u)
{
    msgpack_sbuffer buf;
    msgpack_packer pk;
    s_buffer(&buf, &pk);
    users_user_pack(&pk, u, true);
    MDB_val key = s_val(u->id.ptr, u->id.len), value = s_val(buf.data, buf.size);
    int rc = mdb_put(txn, self->dbi[S_USERS], &key, &value, 0);
    msgpack_sbuffer_destroy(&buf);
    return rc;
}

int users_store_find_email(users_store_t *self, MDB_txn *txn, const char *email,
                           char id[USERS_ID_MAX + 1])
{
    MDB_val key = s_cstr(email), value;
    int rc = mdb_get(txn, self->dbi[S_EMAILS], &key, &value);
    if (rc == 0 && !users_copy(id, USERS_ID_MAX + 1, value.mv_data, value.mv_size))
        rc = MDB_CORRUPTED;
    return rc;
}

int users_store_add_email(users_store_t *self, MDB_txn *txn, const char *email, const char *id)
{
    MDB_val key = s_cstr(email), value = s_cstr(id);
    return mdb_put(txn, self->dbi[S_EMAILS], &key, &value, MDB_NOOVERWRITE);
}

/* ---- sessions ------------------------------------------------------------------- */

static bool s_copy_str(const msgpack_object *o, char *out, size_t cap)
{
    const char *s;
    size_t len;
    return mb_obj_str(o, &s, &len) && users_copy(out, cap, s, len);
}

int users_store_session_get(users_store_t *self, MDB_txn *txn, const char *sid, size_t sid_len,
                            users_session_t *s)
{
    memset(s, 0, sizeof *s);
    MDB_val key = s_val(sid, sid_len), value;
    int rc = sid_len ? mdb_get(txn, self->dbi[S_SESSIONS], &key, &value) : MDB_NOTFOUND;
    if (rc)
        return rc;
    char *data = NULL;
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    rc = s_unpack_map(&value, &data, &msg);
    const msgpack_object *m = &msg.data;
    int64_t generation = 0;
    if (rc == 0 && !(s_copy_str(mb_map_get(m, "user"), s->user, sizeof s->user) &&
                     mb_obj_int(mb_map_get(m, "created_us"), &s->created_us) &&
                     mb_obj_int(mb_map_get(m, "expires"), &s->expires) &&
                     mb_obj_int(mb_map_get(m, "generation"), &generation) && generation >= 0 &&
                     mb_obj_bool(mb_map_get(m, "revoked"), &s->revoked) &&
                     s_copy_str(mb_map_get(m, "reason"), s->reason, sizeof s->reason)))
        rc = MDB_CORRUPTED;
    s->generation = (uint64_t)generation;
    msgpack_unpacked_destroy(&msg);
    free(data);
    return rc;
}

int users_store_session_put(users_store_t *self, MDB_txn *txn, const char *sid,
                            const users_session_t *s)
{
    msgpack_sbuffer buf;
    msgpack_packer pk;
    s_buffer(&buf, &pk);
    msgpack_pack_map(&pk, 6);
    mb_pack_cstr(&pk, "user");
    mb_pack_cstr(&pk, s->user);
    mb_pack_cstr(&pk, "created_us");
    msgpack_pack_int64(&pk, s->created_us);
    mb_pack_cstr(&pk, "expires");
    msgpack_pack_int64(&pk, s->expires);
    mb_pack_cstr(&pk, "generation");
    msgpack_pack_uint64(&pk, s->generation);
    mb_pack_cstr(&pk, "revoked");
    if (s->revoked)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    mb_pack_cstr(&pk, "reason");
    mb_pack_cstr(&pk, s->reason);
    MDB_val key = s_cstr(sid), value = s_val(buf.data, buf.size);
    int rc = mdb_put(txn, self->dbi[S_SESSIONS], &key, &value, 0);
    msgpack_sbuffer_destroy(&buf);
    return rc;
}

int users_store_session_add(users_store_t *self, MDB_txn *txn, const char *sid,
                            const users_session_t *s)
{
    int rc = users_store_session_put(self, txn, sid, s);
    MDB_val key = s_cstr(s->user), value = s_cstr(sid);
    if (rc == 0)
        rc = mdb_put(txn, self->dbi[S_USER_SESSIONS], &key, &value, MDB_NODUPDATA);
    return rc;
}

/* ---- refresh tokens ---------------------------------------------------------------- */

int users_store_refresh_add(users_store_t *self, MDB_txn *txn, const uint8_t *hash, const char *sid,
                            uint64_t generation)
{
    msgpack_sbuffer buf;
    msgpack_packer pk;
    s_buffer(&buf, &pk);
    msgpack_pack_map(&pk, 2);
    mb_pack_cstr(&pk, "sid");
    mb_pack_cstr(&pk, sid);
    mb_pack_cstr(&pk, "generation");
    msgpack_pack_uint64(&pk, generation);
    MDB_val key = s_val(hash, USERS_REFRESH_HASH), value = s_val(buf.data, buf.size);
    /* 256 random bits: a collision is not a case to handle, but
       NOOVERWRITE makes sure one could never re-point a live hash. */
    int rc = mdb_put(txn, self->dbi[S_REFRESH], &key, &value, MDB_NOOVERWRITE);
    msgpack_sbuffer_destroy(&buf);
    MDB_val list = s_cstr(sid), entry = s_val(hash, USERS_REFRESH_HASH);
    if (rc == 0)
        rc = mdb_put(txn, self->dbi[S_SESSION_REFRESH], &list, &entry, MDB_NODUPDATA);
    return rc;
}

int users_store_refresh_get(users_store_t *self, MDB_txn *txn, const uint8_t *hash,
                            users_refresh_t *r)
{
    memset(r, 0, sizeof *r);
    MDB_val key = s_val(hash, USERS_REFRESH_HASH), value;
    int rc = mdb_get(txn, self->dbi[S_REFRESH], &key, &value);
    if (rc)
        return rc;
    char *data = NULL;
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    rc = s_unpack_map(&value, &data, &msg);
    int64_t generation = 0;
    if (rc == 0 &&
        !(s_copy_str(mb_map_get(&msg.data, "sid"), r->sid, sizeof r->sid) &&
          mb_obj_int(mb_map_get(&msg.data, "generation"), &generation) && generation >= 0))
        rc = MDB_CORRUPTED;
    r->generation = (uint64_t)generation;
    msgpack_unpacked_destroy(&msg);
    free(data);
    return rc;
}

/* ---- lists ----------------------------------------------------------------------------- */

/*  Copies every value listed under `key` in DUPSORT database `dbi` into
    *out (`width`-byte slots, values cut or NUL-padded to width - 1 bytes
    plus a NUL). Returns 0 with *n, or an LMDB code; *out is the caller's
    to free either way. */
static int s_list(MDB_txn *txn, MDB_dbi dbi, MDB_val key, size_t width, char **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    MDB_cursor *cursor;
    int rc = mdb_cursor_open(txn, dbi, &cursor);
    if (rc)
        return rc;
    MDB_val value;
    size_t cap = 0;
    rc = mdb_cursor_get(cursor, &key, &value, MDB_SET_KEY);
    while (rc == 0) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            *out = mb_realloc(*out, cap * width);
        }
        char *slot = *out + *n * width;
        memset(slot, 0, width);
        memcpy(slot, value.mv_data, value.mv_size < width - 1 ? value.mv_size : width - 1);
        (*n)++;
        rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT_DUP);
    }
    mdb_cursor_close(cursor);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

#define S_SID_SLOT (MB_JWT_ID_MAX + 1)
#define S_HASH_SLOT (USERS_REFRESH_HASH + 1)

static int s_del(MDB_txn *txn, MDB_dbi dbi, MDB_val key, MDB_val *value)
{
    int rc = mdb_del(txn, dbi, &key, value);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/*  Forgets session `sid` of `user` entirely: its refresh hashes, its
    lists and itself. */
static int s_purge(users_store_t *self, MDB_txn *txn, const char *user, const char *sid)
{
    char *hashes;
    size_t n;
    int rc = s_list(txn, self->dbi[S_SESSION_REFRESH], s_cstr(sid), S_HASH_SLOT, &hashes, &n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = s_del(txn, self->dbi[S_REFRESH], s_val(hashes + i * S_HASH_SLOT, USERS_REFRESH_HASH),
                   NULL);
    free(hashes);
    MDB_val sid_val = s_cstr(sid);
    if (rc == 0)
        rc = s_del(txn, self->dbi[S_SESSION_REFRESH], sid_val, NULL);
    if (rc == 0)
        rc = s_del(txn, self->dbi[S_USER_SESSIONS], s_cstr(user), &sid_val);
    if (rc == 0)
        rc = s_del(txn, self->dbi[S_SESSIONS], sid_val, NULL);
    return rc;
}

int users_store_revoke_all(users_store_t *self, MDB_txn *txn, const char *user, const char *reason)
{
    char *sids;
    size_t n;
    int rc = s_list(txn, self->dbi[S_USER_SESSIONS], s_cstr(user), S_SID_SLOT, &sids, &n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *sid = sids + i * S_SID_SLOT;
        users_session_t s;
        rc = users_store_session_get(self, txn, sid, strlen(sid), &s);
        if (rc == MDB_NOTFOUND) {
            rc = 0;
            continue;
        }
        if (rc == 0 && !s.revoked) {
            s.revoked = true;
            snprintf(s.reason, sizeof s.reason, "%s", reason);
            rc = users_store_session_put(self, txn, sid, &s);
        }
    }
    free(sids);
    return rc;
}

int users_store_delete(users_store_t *self, MDB_txn *txn, const users_user_t *u)
{
    char user[USERS_ID_MAX + 1], email[USERS_EMAIL_MAX + 1], owner[USERS_ID_MAX + 1];
    if (!users_copy(user, sizeof user, u->id.ptr, u->id.len))
        return MDB_NOTFOUND; /* no user has such an id */
    char *sids;
    size_t n;
    int rc = s_list(txn, self->dbi[S_USER_SESSIONS], s_cstr(user), S_SID_SLOT, &sids, &n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = s_purge(self, txn, user, sids + i * S_SID_SLOT);
    free(sids);
    /* The email entry goes only if it is this user's: never free an
       address someone else holds. */
    if (rc == 0 && u->email.ptr && users_copy(email, sizeof email, u->email.ptr, u->email.len)) {
        rc = users_store_find_email(self, txn, email, owner);
        if (rc == 0 && strcmp(owner, user) == 0)
            rc = s_del(txn, self->dbi[S_EMAILS], s_cstr(email), NULL);
        else if (rc == 0 || rc == MDB_NOTFOUND)
            rc = 0;
    }
    if (rc == 0)
        rc = mdb_del(txn, self->dbi[S_USERS],
                     &(MDB_val){.mv_size = u->id.len, .mv_data = (void *)u->id.ptr}, NULL);
    return rc;
}

int users_store_sweep(users_store_t *self, MDB_txn *txn, const char *user, int64_t now, size_t keep,
                      size_t *live)
{
    *live = 0;
    char *sids;
    size_t n;
    int rc = s_list(txn, self->dbi[S_USER_SESSIONS], s_cstr(user), S_SID_SLOT, &sids, &n);
    int64_t *created = mb_calloc(n ? n : 1, sizeof *created);
    bool *kept = mb_calloc(n ? n : 1, sizeof *kept);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *sid = sids + i * S_SID_SLOT;
        users_session_t s;
        rc = users_store_session_get(self, txn, sid, strlen(sid), &s);
        if (rc == 0 && now < s.expires) {
            kept[i] = true;
            created[i] = s.created_us;
            (*live)++;
        } else if (rc == 0 || rc == MDB_NOTFOUND || rc == MDB_CORRUPTED)
            rc = s_purge(self, txn, user, sid);
    }
    /* Over the cap: the oldest sign-ins go first. Few sessions per user,
       so picking the minimum each time is fine. */
    while (rc == 0 && *live > keep) {
        size_t oldest = n;
        for (size_t i = 0; i < n; i++)
            if (kept[i] && (oldest == n || created[i] < created[oldest]))
                oldest = i;
        kept[oldest] = false;
        (*live)--;
        rc = s_purge(self, txn, user, sids + oldest * S_SID_SLOT);
    }
    free(kept);
    free(created);
    free(sids);
    return rc;
}
