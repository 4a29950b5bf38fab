/*  catalog_harness — see catalog_harness.h. */
#include "catalog_harness.h"

#include <criterion/criterion.h>
#include <ftw.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog.h"
#include "mb_envelope.h"
#include "mb_events.h"
#include "mb_msgpack.h"

#define S_KEPT_MAX 4096

char h_dir[64];
mb_actor_def_t h_def;
MDB_env *h_env;
void *h_state;
static uint64_t s_rid;
static json_t *s_kept[S_KEPT_MAX];
static size_t s_kept_n;

json_t *h_keep(json_t *j)
{
    cr_assert(s_kept_n < S_KEPT_MAX);
    s_kept[s_kept_n++] = j;
    return j;
}

void h_open(size_t map_size)
{
    strcpy(h_dir, "/tmp/test_catalog.XXXXXX");
    cr_assert_not_null(mkdtemp(h_dir));
    h_def = *catalog_actor_def();
    h_def.map_size = map_size;
    cr_assert_eq(mb_actor_open_env(&h_def, h_dir, &h_env), 0);
    cr_assert_eq(h_def.open(h_env, &h_state), 0);
}

void h_reopen(void)
{
    h_def.close(h_state);
    mdb_env_close(h_env);
    h_env = NULL;
    cr_assert_eq(mb_actor_open_env(&h_def, h_dir, &h_env), 0);
    cr_assert_eq(h_def.open(h_env, &h_state), 0);
}

void h_setup(void)
{
    h_open(0);
}

static int s_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void h_teardown(void)
{
    for (size_t i = 0; i < s_kept_n; i++)
        json_decref(s_kept[i]);
    s_kept_n = 0;
    if (h_env) {
        h_def.close(h_state);
        mdb_env_close(h_env);
        h_env = NULL;
    }
    nftw(h_dir, s_rm, 8, FTW_DEPTH | FTW_PHYS);
}

void h_pack_json(msgpack_packer *pk, const json_t *j)
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
            h_pack_json(pk, val);
        }
        break;
    case JSON_ARRAY:
        msgpack_pack_array(pk, json_array_size(j));
        json_array_foreach(j, i, val) h_pack_json(pk, val);
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

json_t *h_to_json(const msgpack_object *o)
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
            json_array_append_new(j, h_to_json(&o->via.array.ptr[i]));
        return j;
    case MSGPACK_OBJECT_MAP:
        j = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            cr_assert_eq(k->type, MSGPACK_OBJECT_STR, "reply map key is not a string");
            char *key = strndup(k->via.str.ptr, k->via.str.size);
            json_object_set_new(j, key, h_to_json(&o->via.map.ptr[i].val));
            free(key);
        }
        return j;
    default:
        cr_assert_fail("reply holds a msgpack type JSON has not: %d", o->type);
        return NULL;
    }
}

void h_copy(char *dst, size_t cap, const char *src, size_t len)
{
    if (src == NULL)
        len = 0;
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, src ? src : "", len);
    dst[len] = '\0';
}

/*  Dispatches one encoded request and decodes the reply. */
reply_t h_dispatch(const void *request, size_t size, uint64_t rid)
{
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    mb_actor_dispatch(&h_def, h_env, h_state, request, size, &out);
    mb_reply_t rep;
    const char *why = NULL;
    cr_assert_eq(mb_reply_decode(&rep, out.data, out.size, &why), 0, "reply does not decode: %s",
                 why);
    cr_assert_eq(rep.rid, rid, "reply rid %llu, asked %llu", (unsigned long long)rep.rid,
                 (unsigned long long)rid);
    reply_t r = {.status = rep.status};
    if (rep.body)
        r.body = h_keep(h_to_json(rep.body));
    h_copy(r.code, sizeof r.code, rep.code, rep.code_len);
    h_copy(r.field, sizeof r.field, rep.field, rep.field_len);
    h_copy(r.message, sizeof r.message, rep.message, rep.message_len);
    mb_reply_release(&rep);
    msgpack_sbuffer_destroy(&out);
    return r;
}

reply_t h_vcall(const char *auth, const char *op, const char *fmt, va_list ap)
{
    json_t *args = NULL, *auth_map = NULL;
    json_error_t err;
    if (fmt) {
        char *text;
        cr_assert(vasprintf(&text, fmt, ap) >= 0);
        args = json_loads(text, 0, &err);
        cr_assert_not_null(args, "bad test JSON (%s): %s", err.text, text);
        free(text);
    }
    if (auth) {
        auth_map = json_loads(auth, 0, &err);
        cr_assert_not_null(auth_map, "bad test JSON (%s): %s", err.text, auth);
    }
    msgpack_sbuffer req;
    msgpack_sbuffer_init(&req);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    uint64_t rid = ++s_rid;
    mb_request_pack_head(&pk, op, rid, 1000, (args ? 1 : 0) + (auth_map ? 1 : 0));
    if (auth_map) {
        mb_pack_cstr(&pk, "auth");
        h_pack_json(&pk, auth_map);
        json_decref(auth_map);
    }
    if (args) {
        mb_pack_cstr(&pk, "args");
        h_pack_json(&pk, args);
        json_decref(args);
    }
    reply_t r = h_dispatch(req.data, req.size, rid);
    msgpack_sbuffer_destroy(&req);
    return r;
}

reply_t h_call(const char *op, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_t r = h_vcall(NULL, op, fmt, ap);
    va_end(ap);
    return r;
}

reply_t h_call_as(const char *auth, const char *op, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_t r = h_vcall(auth, op, fmt, ap);
    va_end(ap);
    return r;
}

void h_expect_error(reply_t r, int status, const char *code, const char *field)
{
    cr_assert_eq(r.status, status, "status %d (%s: %s), expected %d", r.status, r.code, r.message,
                 status);
    cr_assert_str_eq(r.code, code, "code %s (%s)", r.code, r.message);
    if (field)
        cr_assert_str_eq(r.field, field, "field '%s' (%s), expected '%s'", r.field, r.message,
                         field);
    cr_assert(r.message[0], "an error says what went wrong");
}

void h_expect_invalid(reply_t r, const char *field)
{
    h_expect_error(r, 400, "invalid", field);
}

const char *h_str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    cr_assert_not_null(s, "no string %s", key);
    return s;
}

long long h_int(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    cr_assert(json_is_integer(v), "no integer %s", key);
    return json_integer_value(v);
}

reply_t h_ok(reply_t r, int status)
{
    cr_assert_eq(r.status, status, "status %d (%s %s: %s), expected %d", r.status, r.code, r.field,
                 r.message, status);
    return r;
}

const char *h_new_artist(const char *name)
{
    reply_t r = h_ok(h_call("artist.create", "{\"body\":{\"name\":\"%s\"}}", name), 201);
    return h_str(r.body, "id");
}

const char *h_new_album(const char *title, const char *artist, const char *date)
{
    reply_t r = h_ok(h_call("album.create",
                            "{\"body\":{\"title\":\"%s\",\"artist_ids\":[\"%s\"],"
                            "\"release_date\":\"%s\"}}",
                            title, artist, date),
                     201);
    return h_str(r.body, "id");
}

const char *h_new_track(const char *album, const char *artist, int disc, int track)
{
    reply_t r = h_ok(h_call("track.create",
                            "{\"body\":{\"title\":\"t %d.%d\",\"artist_ids\":[\"%s\"],"
                            "\"album_id\":\"%s\",\"disc_number\":%d,\"track_number\":%d,"
                            "\"duration_ms\":180000}}",
                            disc, track, artist, album, disc, track),
                     201);
    return h_str(r.body, "id");
}

char *h_repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

bool h_rfc3339(const char *s)
{
    regex_t re;
    cr_assert_eq(regcomp(&re,
                         "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{3})?Z$",
                         REG_EXTENDED | REG_NOSUB),
                 0);
    bool ok = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

size_t h_outbox_count(void)
{
    size_t n;
    cr_assert_eq(mb_outbox_count(h_env, &n), 0);
    return n;
}

event_t h_outbox_last(void)
{
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *cursor;
    MDB_val key, value;
    cr_assert_eq(mdb_txn_begin(h_env, NULL, MDB_RDONLY, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "_outbox", 0, &dbi), 0);
    cr_assert_eq(mdb_cursor_open(txn, dbi, &cursor), 0);
    cr_assert_eq(mdb_cursor_get(cursor, &key, &value, MDB_LAST), 0, "the outbox is empty");
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    size_t used = 0;
    cr_assert_eq(msgpack_unpack_next(&msg, value.mv_data, value.mv_size, &used),
                 MSGPACK_UNPACK_SUCCESS);
    event_t e = {.data = NULL};
    const char *s;
    size_t len;
    cr_assert(mb_obj_str(mb_map_get(&msg.data, "topic"), &s, &len));
    h_copy(e.topic, sizeof e.topic, s, len);
    cr_assert(mb_obj_str(mb_map_get(&msg.data, "key"), &s, &len));
    h_copy(e.key, sizeof e.key, s, len);
    const msgpack_object *data = mb_map_get(&msg.data, "data");
    cr_assert_not_null(data);
    e.data = h_keep(h_to_json(data));
    msgpack_unpacked_destroy(&msg);
    mdb_cursor_close(cursor);
    mdb_txn_abort(txn);
    return e;
}

/*  Checks that exactly one event was added since the outbox held
    `before`, and that it is {action, id, object} on `topic` keyed by id
    (`object` NULL: nil). */
void h_expect_event(size_t before, const char *topic, const char *id, const char *action,
                    const json_t *object)
{
    cr_assert_eq(h_outbox_count(), before + 1, "%zu events added, expected 1",
                 h_outbox_count() - before);
    event_t e = h_outbox_last();
    cr_assert_str_eq(e.topic, topic);
    cr_assert_str_eq(e.key, id);
    cr_assert_eq(json_object_size(e.data), 3, "data is {action, id, object}");
    cr_assert_str_eq(h_str(e.data, "action"), action);
    cr_assert_str_eq(h_str(e.data, "id"), id);
    const json_t *got = json_object_get(e.data, "object");
    if (object)
        cr_assert(json_equal(got, object), "the event carries the object as answered");
    else
        cr_assert(json_is_null(got), "a delete carries a nil object");
}
