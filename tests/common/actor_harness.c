/*  actor_harness — see actor_harness.h. */
#include "actor_harness.h"

#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_envelope.h"
#include "mb_msgpack.h"

#define S_KEPT_MAX 65536 /* the playlists tests keep tens of thousands */

char th_dir[64];
mb_actor_def_t th_def;
MDB_env *th_env;
void *th_state;
static uint64_t s_rid;
static json_t *s_kept[S_KEPT_MAX];
static size_t s_kept_n;

json_t *th_keep(json_t *j)
{
    cr_assert(s_kept_n < S_KEPT_MAX);
    s_kept[s_kept_n++] = j;
    return j;
}

void th_open(const mb_actor_def_t *def, const char *name, size_t map_size)
{
    th_tmpdir(th_dir, name);
    th_def = *def;
    if (map_size)
        th_def.map_size = map_size;
    cr_assert_eq(mb_actor_open_env(&th_def, th_dir, &th_env), 0);
    cr_assert_eq(th_def.open(th_env, &th_state), 0);
}

void th_reopen(void)
{
    th_def.close(th_state);
    th_state = NULL;
    mdb_env_close(th_env);
    th_env = NULL;
    cr_assert_eq(mb_actor_open_env(&th_def, th_dir, &th_env), 0);
    cr_assert_eq(th_def.open(th_env, &th_state), 0);
}

void th_teardown(void)
{
    for (size_t i = 0; i < s_kept_n; i++)
        json_decref(s_kept[i]);
    s_kept_n = 0;
    if (th_env) {
        if (th_state)
            th_def.close(th_state);
        mdb_env_close(th_env);
        th_env = NULL;
        th_state = NULL;
    }
    th_rmdir(th_dir);
    th_dir[0] = '\0';
}

void th_pack_json(msgpack_packer *pk, const json_t *j)
{
    const char *key;
    json_t *val;
    size_t i;
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        msgpack_pack_map(pk, json_object_size(j));
        json_object_foreach((json_t *)j, key, val)
        {
            mb_pack_cstr(pk, key);
            th_pack_json(pk, val);
        }
        break;
    case JSON_ARRAY:
        msgpack_pack_array(pk, json_array_size(j));
        json_array_foreach(j, i, val) th_pack_json(pk, val);
        break;
    case JSON_STRING:
        mb_pack_strn(pk, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(j));
        break;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(j));
        break;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        break;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        break;
    case JSON_NULL:
        msgpack_pack_nil(pk);
        break;
    }
}

json_t *th_to_json(const msgpack_object *o)
{
    json_t *j;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer(o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR:
        return json_stringn(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_ARRAY:
        j = json_array();
        for (uint32_t i = 0; i < o->via.array.size; i++)
            json_array_append_new(j, th_to_json(&o->via.array.ptr[i]));
        return j;
    case MSGPACK_OBJECT_MAP:
        j = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            cr_assert_eq(k->type, MSGPACK_OBJECT_STR, "map key is not a string");
            char *key = strndup(k->via.str.ptr, k->via.str.size);
            cr_assert(!json_object_get(j, key), "key %s given twice", key);
            json_object_set_new(j, key, th_to_json(&o->via.map.ptr[i].val));
            free(key);
        }
        return j;
    default:
        cr_assert_fail("msgpack type JSON has not: %d", o->type);
        return NULL;
    }
}

json_t *th_vjson(const char *fmt, va_list ap)
{
    char *text;
    cr_assert(vasprintf(&text, fmt, ap) >= 0);
    json_error_t err;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &err);
    cr_assert_not_null(j, "bad test JSON (%s): %s", err.text, text);
    free(text);
    return j;
}

json_t *th_json(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    json_t *j = th_vjson(fmt, ap);
    va_end(ap);
    return j;
}

void th_copy(char *dst, size_t cap, const char *src, size_t len)
{
    if (src == NULL)
        len = 0;
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, src ? src : "", len);
    dst[len] = '\0';
}

void th_tmpdir(char *dir, const char *name)
{
    snprintf(dir, 64, "/tmp/%s.XXXXXX", name);
    cr_assert_not_null(mkdtemp(dir));
}

static int s_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void th_rmdir(const char *dir)
{
    if (dir[0])
        nftw(dir, s_rm, 8, FTW_DEPTH | FTW_PHYS);
}

th_reply_t th_dispatch(const void *request, size_t size, uint64_t rid)
{
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    mb_actor_dispatch(&th_def, th_env, th_state, request, size, &out);
    mb_reply_t rep;
    const char *why = NULL;
    cr_assert_eq(mb_reply_decode(&rep, out.data, out.size, &why), 0, "reply does not decode: %s",
                 why);
    cr_assert_eq(rep.rid, rid, "reply rid %llu, asked %llu", (unsigned long long)rep.rid,
                 (unsigned long long)rid);
    th_reply_t r = {.status = rep.status};
    if (rep.body)
        r.body = th_keep(th_to_json(rep.body));
    th_copy(r.code, sizeof r.code, rep.code, rep.code_len);
    th_copy(r.field, sizeof r.field, rep.field, rep.field_len);
    th_copy(r.message, sizeof r.message, rep.message, rep.message_len);
    mb_reply_release(&rep);
    msgpack_sbuffer_destroy(&out);
    return r;
}

th_reply_t th_call_packed(const char *op, json_t *args, th_pack_auth_fn *pack_auth,
                          const void *who)
{
    msgpack_sbuffer req;
    msgpack_sbuffer_init(&req);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    uint64_t rid = ++s_rid;
    mb_request_pack_head(&pk, op, rid, 1000, (args ? 1 : 0) + (pack_auth ? 1 : 0));
    if (pack_auth) {
        mb_pack_cstr(&pk, "auth");
        pack_auth(&pk, who);
    }
    if (args) {
        mb_pack_cstr(&pk, "args");
        th_pack_json(&pk, args);
        json_decref(args);
    }
    th_reply_t r = th_dispatch(req.data, req.size, rid);
    msgpack_sbuffer_destroy(&req);
    return r;
}

static void s_pack_auth_json(msgpack_packer *pk, const void *who)
{
    th_pack_json(pk, who);
}

th_reply_t th_vcall(const char *auth, const char *op, const char *fmt, va_list ap)
{
    json_t *args = fmt ? th_vjson(fmt, ap) : NULL;
    json_t *auth_map = NULL;
    if (auth) {
        json_error_t err;
        auth_map = json_loads(auth, 0, &err);
        cr_assert_not_null(auth_map, "bad test JSON (%s): %s", err.text, auth);
    }
    th_reply_t r = th_call_packed(op, args, auth_map ? s_pack_auth_json : NULL, auth_map);
    json_decref(auth_map);
    return r;
}

void th_expect_error(th_reply_t r, int status, const char *code, const char *field)
{
    cr_assert_eq(r.status, status, "status %d (%s %s: %s), expected %d %s", r.status, r.code,
                 r.field, r.message, status, code);
    cr_assert_str_eq(r.code, code, "code %s (%s), expected %s", r.code, r.message, code);
    if (field)
        cr_assert_str_eq(r.field, field, "field '%s' (%s), expected '%s'", r.field, r.message,
                         field);
    cr_assert(r.message[0], "an error says what went wrong");
}

void th_expect_invalid(th_reply_t r, const char *field)
{
    th_expect_error(r, 400, "invalid", field);
}

th_reply_t th_ok(th_reply_t r, int status)
{
    cr_assert_eq(r.status, status, "status %d (%s %s: %s), expected %d", r.status, r.code, r.field,
                 r.message, status);
    return r;
}

const char *th_str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    cr_assert_not_null(s, "no string %s", key);
    return s;
}

long long th_int(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    cr_assert(json_is_integer(v), "no integer %s", key);
    return json_integer_value(v);
}

size_t th_outbox_count(void)
{
    size_t n;
    cr_assert_eq(mb_outbox_count(th_env, &n), 0);
    return n;
}

th_event_t th_outbox_last(void)
{
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *cursor;
    MDB_val key, value;
    cr_assert_eq(mdb_txn_begin(th_env, NULL, MDB_RDONLY, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "_outbox", 0, &dbi), 0);
    cr_assert_eq(mdb_cursor_open(txn, dbi, &cursor), 0);
    cr_assert_eq(mdb_cursor_get(cursor, &key, &value, MDB_LAST), 0, "the outbox is empty");
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    size_t used = 0;
    cr_assert_eq(msgpack_unpack_next(&msg, value.mv_data, value.mv_size, &used),
                 MSGPACK_UNPACK_SUCCESS);
    th_event_t e = {.data = NULL};
    const char *s;
    size_t len;
    cr_assert(mb_obj_str(mb_map_get(&msg.data, "topic"), &s, &len));
    th_copy(e.topic, sizeof e.topic, s, len);
    cr_assert(mb_obj_str(mb_map_get(&msg.data, "key"), &s, &len));
    th_copy(e.key, sizeof e.key, s, len);
    const msgpack_object *data = mb_map_get(&msg.data, "data");
    cr_assert_not_null(data);
    e.data = th_keep(th_to_json(data));
    msgpack_unpacked_destroy(&msg);
    mdb_cursor_close(cursor);
    mdb_txn_abort(txn);
    return e;
}
