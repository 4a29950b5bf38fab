/*  playlists_call — shared handler plumbing of the playlists actor. */
#include "playlists_call.h"

#include <stdio.h>
#include <string.h>

#include "mb_error.h"
#include "mb_events.h"
#include "mb_msgpack.h"

playlists_store_t *playlists_call_store(mb_call_t *call)
{
    return mb_call_state(call);
}

bool playlists_call_user(mb_call_t *call, playlists_str_t *user)
{
    /* Read straight from the request rather than through
       mb_jwt_read_auth(): the id must borrow from the request so it
       outlives this function. */
    const msgpack_object *auth = mb_call_request(call)->auth;
    if (auth && mb_obj_str(mb_map_get(auth, "user"), &user->ptr, &user->len) &&
        playlists_id_valid(user->ptr, user->len))
        return true;
    mb_call_error(call, 401, "unauthenticated", NULL, "this operation needs a signed-in user");
    return false;
}

bool playlists_call_commit(mb_call_t *call, MDB_txn *txn)
{
    int rc = mdb_txn_commit(txn);
    if (rc)
        mb_call_db_error(call, rc);
    return rc == 0;
}

bool playlists_call_int(mb_call_t *call, const char *name, int64_t min, int64_t max,
                        int64_t fallback, int64_t *out)
{
    const msgpack_object *o = mb_call_arg(call, name);
    *out = fallback;
    if (o && (!mb_obj_int(o, out) || *out < min || *out > max)) {
        mb_call_error(call, 400, "invalid", name, "%s must be an integer from %lld to %lld", name,
                      (long long)min, (long long)max);
        return false;
    }
    return true;
}

bool playlists_call_paging(mb_call_t *call, size_t max_limit, size_t *limit, size_t *offset)
{
    int64_t l, o;
    if (!playlists_call_int(call, "limit", 1, (int64_t)max_limit, PLAYLISTS_PAGE_DEFAULT, &l) ||
        !playlists_call_int(call, "offset", 0, PLAYLISTS_OFFSET_MAX, 0, &o))
        return false;
    *limit = (size_t)l;
    *offset = (size_t)o;
    return true;
}

bool playlists_call_ids(mb_call_t *call, playlists_str_t *out, size_t *n, const char **field)
{
    const msgpack_object *ids = mb_call_arg(call, "ids");
    *field = "ids";
    if (!ids) {
        const msgpack_object *body = mb_call_arg(call, "body");
        if (body && body->type == MSGPACK_OBJECT_MAP) {
            for (uint32_t i = 0; i < body->via.map.size; i++)
                if (!mb_obj_str_eq(&body->via.map.ptr[i].key, "ids")) {
                    mb_call_error(call, 400, "invalid", "body", "body may hold only ids");
                    return false;
                }
            ids = mb_map_get(body, "ids");
            *field = "body.ids";
        } else if (body && body->type != MSGPACK_OBJECT_NIL) {
            mb_call_error(call, 400, "invalid", "body", "body must be a JSON object");
            return false;
        }
    }
    if (!ids || ids->type != MSGPACK_OBJECT_ARRAY || ids->via.array.size == 0 ||
        ids->via.array.size > PLAYLISTS_BATCH_MAX) {
        mb_call_error(call, 400, "invalid", *field, "%s must be a list of 1 to %d ids", *field,
                      PLAYLISTS_BATCH_MAX);
        return false;
    }
    *n = ids->via.array.size;
    for (size_t i = 0; i < *n; i++) {
        char name[32];
        snprintf(name, sizeof name, "%s[%zu]", *field, i);
        if (!playlists_id_arg(call, &ids->via.array.ptr[i], name, &out[i]))
            return false;
    }
    return true;
}

static void s_pack_link(msgpack_packer *pk, const char *base, size_t offset, size_t limit)
{
    char link[PLAYLISTS_LINK_MAX];
    int n = snprintf(link, sizeof link, "%s%soffset=%zu&limit=%zu", base,
                     strchr(base, '?') ? "&" : "?", offset, limit);
    if (n < 0 || (size_t)n >= sizeof link)
        msgpack_pack_nil(pk); /* ids are at most 64 bytes: never */
    else
        mb_pack_strn(pk, link, (size_t)n);
}

void playlists_call_pack_paging(msgpack_packer *pk, const char *base, size_t limit, size_t offset,
                                size_t total)
{
    mb_pack_cstr(pk, "limit");
    msgpack_pack_uint64(pk, limit);
    mb_pack_cstr(pk, "offset");
    msgpack_pack_uint64(pk, offset);
    mb_pack_cstr(pk, "total");
    msgpack_pack_uint64(pk, total);
    mb_pack_cstr(pk, "next");
    if (offset + limit < total)
        s_pack_link(pk, base, offset + limit, limit);
    else
        msgpack_pack_nil(pk);
    mb_pack_cstr(pk, "previous");
    if (offset > 0)
        s_pack_link(pk, base, offset > limit ? offset - limit : 0, limit);
    else
        msgpack_pack_nil(pk);
}

bool playlists_call_event(mb_call_t *call, MDB_txn *txn, const char *topic, playlists_str_t key,
                          const msgpack_sbuffer *data)
{
    char k[PLAYLISTS_ID_MAX + 1];
    memcpy(k, key.ptr, key.len);
    k[key.len] = '\0';
    if (mb_call_outbox_add(call, txn, topic, k, data->data, data->size) != 0) {
        mdb_txn_abort(txn);
        return false;
    }
    return true;
}
