/*  json_msgpack — JSON on the HTTP side, msgpack on the bus. */
#include "json_msgpack.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_error.h"

/*  Replies come from actors, whose envelopes the bus already caps at 32
    levels; this only keeps the recursion bounded whatever the caller
    passes. */
#define S_REPLY_MAX_DEPTH 64

static int s_to_msgpack(msgpack_packer *pk, const json_t *v, int depth_left)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (depth_left <= 0)
            return MB_ETOOBIG;
        msgpack_pack_map(pk, json_object_size(v));
        const char *key;
        json_t *item;
        json_object_foreach((json_t *)v, key, item)
        {
            size_t key_len = strlen(key); /* keys never hold NUL: no JSON_ALLOW_NUL */
            msgpack_pack_str(pk, key_len);
            msgpack_pack_str_body(pk, key, key_len);
            int rc = s_to_msgpack(pk, item, depth_left - 1);
            if (rc)
                return rc;
        }
        return 0;
    }
    case JSON_ARRAY: {
        if (depth_left <= 0)
            return MB_ETOOBIG;
        size_t n = json_array_size(v);
        msgpack_pack_array(pk, n);
        for (size_t i = 0; i < n; i++) {
            int rc = s_to_msgpack(pk, json_array_get(v, i), depth_left - 1);
            if (rc)
                return rc;
        }
        return 0;
    }
    case JSON_STRING: {
        size_t len = json_string_length(v);
        msgpack_pack_str(pk, len);
        msgpack_pack_str_body(pk, json_string_value(v), len);
        return 0;
    }
    case JSON_INTEGER:
        msgpack_pack_int64(pk, (int64_t)json_integer_value(v));
        return 0;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(v));
        return 0;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        return 0;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        return 0;
    case JSON_NULL:
    default:
        msgpack_pack_nil(pk);
        return 0;
    }
}

int gw_json_to_msgpack(msgpack_packer *pk, const json_t *value, int max_depth)
{
    return s_to_msgpack(pk, value, max_depth);
}

/*  Writes the shortest "%.Ng" form of `d` that reads back as exactly `d`
    (as a float when `single`), so 0.1 stays 0.1 rather than
    0.10000000000000001. */
static void s_put_float(gw_buf_t *out, double d, int single)
{
    char tmp[40];
    int first = single ? 6 : 15, last = single ? 9 : 17;
    for (int prec = first; prec <= last; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        double back = strtod(tmp, NULL);
        if (single ? (float)back == (float)d : back == d)
            break;
    }
    gw_buf_puts(out, tmp);
}

static void s_put_base64(gw_buf_t *out, const unsigned char *p, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    gw_buf_reserve(out, (len + 2) / 3 * 4 + 2);
    char *o = out->data + out->len;
    *o++ = '"';
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[(v >> 12) & 63];
        *o++ = alphabet[(v >> 6) & 63];
        *o++ = alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[(v >> 12) & 63];
        *o++ = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o++ = '"';
    *o = '\0';
    out->len = (size_t)(o - out->data);
}

static int s_to_json(gw_buf_t *out, const msgpack_object *o, int depth_left, const char **why)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        gw_buf_append(out, "null", 4);
        return 0;
    case MSGPACK_OBJECT_BOOLEAN:
        if (o->via.boolean)
            gw_buf_append(out, "true", 4);
        else
            gw_buf_append(out, "false", 5);
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        gw_buf_put_u64(out, o->via.u64);
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        gw_buf_put_i64(out, o->via.i64);
        return 0;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (!isfinite(o->via.f64)) {
            *why = "a float that is NaN or infinite";
            return MB_EPROTO;
        }
        s_put_float(out, o->via.f64, o->type == MSGPACK_OBJECT_FLOAT32);
        return 0;
    case MSGPACK_OBJECT_STR:
        if (!gw_utf8_valid(o->via.str.ptr, o->via.str.size)) {
            *why = "a string that is not valid UTF-8";
            return MB_EPROTO;
        }
        gw_buf_json_string(out, o->via.str.ptr, o->via.str.size);
        return 0;
    case MSGPACK_OBJECT_BIN:
        s_put_base64(out, (const unsigned char *)o->via.bin.ptr, o->via.bin.size);
        return 0;
    case MSGPACK_OBJECT_ARRAY:
        if (depth_left <= 0) {
            *why = "nesting too deep";
            return MB_EPROTO;
        }
        gw_buf_putc(out, '[');
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i)
                gw_buf_putc(out, ',');
            int rc = s_to_json(out, &o->via.array.ptr[i], depth_left - 1, why);
            if (rc)
                return rc;
        }
        gw_buf_putc(out, ']');
        return 0;
    case MSGPACK_OBJECT_MAP:
        if (depth_left <= 0) {
            *why = "nesting too deep";
            return MB_EPROTO;
        }
        gw_buf_putc(out, '{');
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR) {
                *why = "a map key that is not a string";
                return MB_EPROTO;
            }
            if (i)
                gw_buf_putc(out, ',');
            int rc = s_to_json(out, &kv->key, depth_left - 1, why);
            if (rc)
                return rc;
            gw_buf_putc(out, ':');
            rc = s_to_json(out, &kv->val, depth_left - 1, why);
            if (rc)
                return rc;
        }
        gw_buf_putc(out, '}');
        return 0;
    case MSGPACK_OBJECT_EXT:
    default:
        *why = "an ext value";
        return MB_EPROTO;
    }
}

int gw_msgpack_to_json(gw_buf_t *out, const msgpack_object *o, const char **why)
{
    static const char *none;
    if (!why)
        why = &none;
    return s_to_json(out, o, S_REPLY_MAX_DEPTH, why);
}
