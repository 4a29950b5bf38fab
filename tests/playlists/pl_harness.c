/*  Test harness of the playlists tests (pl_harness.h). */
#include "pl_harness.h"

#include <criterion/criterion.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_msgpack.h"

void pl_pack_json(msgpack_packer *pk, const json_t *j)
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
            pl_pack_json(pk, val);
        }
        break;
    case JSON_ARRAY:
        msgpack_pack_array(pk, json_array_size(j));
        json_array_foreach(j, i, val) pl_pack_json(pk, val);
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

json_t *pl_to_json(const msgpack_object *o)
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
            json_array_append_new(j, pl_to_json(&o->via.array.ptr[i]));
        return j;
    case MSGPACK_OBJECT_MAP:
        j = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            cr_assert_eq(k->type, MSGPACK_OBJECT_STR, "map key is not a string");
            char *key = strndup(k->via.str.ptr, k->via.str.size);
            cr_assert(!json_object_get(j, key), "key %s given twice", key);
            json_object_set_new(j, key, pl_to_json(&o->via.map.ptr[i].val));
            free(key);
        }
        return j;
    default:
        cr_assert_fail("msgpack type JSON has not: %d", o->type);
        return NULL;
    }
}

json_t *pl_json(const char *fmt, ...)
{
    char *text;
    va_list ap;
    va_start(ap, fmt);
    cr_assert(vasprintf(&text, fmt, ap) >= 0);
    va_end(ap);
    json_error_t err;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &err);
    cr_assert_not_null(j, "bad test JSON (%s): %s", err.text, text);
    free(text);
    return j;
}

void pl_tmpdir(char *dir, const char *name)
{
    snprintf(dir, 64, "/tmp/%s.XXXXXX", name);
    cr_assert_not_null(mkdtemp(dir));
}

static int s_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void pl_rmdir(const char *dir)
{
    if (dir[0])
        nftw(dir, s_rm, 8, FTW_DEPTH | FTW_PHYS);
}
