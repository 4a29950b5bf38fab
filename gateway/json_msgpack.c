/*  json_msgpack — JSON on the HTTP side, msgpack on the bus. */
#include "json_msgpack.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_error.h"
#include "mb_msgpack.h"

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

/*  Reads the big-endian float of `n` (4 or 8) bytes at p. */
static double s_be_float(const uint8_t *p, uint64_t n)
{
    uint64_t bits = 0;
    for (uint64_t i = 0; i < n; i++)
        bits = bits << 8 | p[i];
    if (n == 4) {
        uint32_t b32 = (uint32_t)bits;
        float f;
        memcpy(&f, &b32, sizeof f);
        return f;
    }
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static int s_put_str(gw_buf_t *out, const uint8_t *s, size_t len, const char **why)
{
    if (!gw_utf8_valid((const char *)s, len)) {
        *why = "a string that is not valid UTF-8";
        return MB_EPROTO;
    }
    gw_buf_json_string(out, (const char *)s, len);
    return 0;
}

/*  Writes the object at p (at most `size` bytes) and sets *used to its
    length. */
static int s_to_json(gw_buf_t *out, const uint8_t *p, size_t size, size_t *used, int depth_left,
                     const char **why)
{
    /* Keys and most values of a reply are short strings: read inline
       (mb_msgpack_head is a call into the shared library per object). */
    if (size > 0 && p[0] >= 0xa0 && p[0] <= 0xbf) {
        size_t n = p[0] & 0x1f;
        if (n > size - 1) {
            *why = "malformed msgpack";
            return MB_EPROTO;
        }
        *used = 1 + n;
        return s_put_str(out, p + 1, n, why);
    }
    mb_msgpack_head_t h;
    if (mb_msgpack_head(p, size, &h) != 0) {
        *why = "malformed msgpack";
        return MB_EPROTO;
    }
    const uint8_t *payload = p + h.head_len;
    size_t after = size - h.head_len; /* bytes from the payload on */
    *used = h.head_len;
    switch (h.kind) {
    case MB_MP_NIL:
        gw_buf_append(out, "null", 4);
        return 0;
    case MB_MP_BOOL:
        if (h.value)
            gw_buf_append(out, "true", 4);
        else
            gw_buf_append(out, "false", 5);
        return 0;
    case MB_MP_UINT:
        gw_buf_put_u64(out, h.value);
        return 0;
    case MB_MP_INT:
        gw_buf_put_i64(out, (int64_t)h.value);
        return 0;
    case MB_MP_FLOAT: {
        double d = s_be_float(payload, h.count);
        *used += h.count;
        if (!isfinite(d)) {
            *why = "a float that is NaN or infinite";
            return MB_EPROTO;
        }
        s_put_float(out, d, h.count == 4);
        return 0;
    }
    case MB_MP_STR:
        *used += h.count;
        return s_put_str(out, payload, h.count, why);
    case MB_MP_BIN:
        *used += h.count;
        s_put_base64(out, payload, h.count);
        return 0;
    case MB_MP_ARRAY:
    case MB_MP_MAP: {
        bool map = h.kind == MB_MP_MAP;
        if (depth_left <= 0) {
            *why = "nesting too deep";
            return MB_EPROTO;
        }
        /* Each entry takes at least one byte per object: a count larger
           than what is left is a lie, refused before the loop trusts it. */
        if (h.count > after / (map ? 2 : 1)) {
            *why = "malformed msgpack";
            return MB_EPROTO;
        }
        gw_buf_putc(out, map ? '{' : '[');
        size_t pos = 0, n;
        for (uint64_t i = 0; i < h.count; i++) {
            if (i)
                gw_buf_putc(out, ',');
            if (map) {
                /* A string's first byte says so (fixstr, str8/16/32): the
                   key itself is read once, by s_to_json. */
                uint8_t b = pos < after ? payload[pos] : 0xc1;
                if (!((b >= 0xa0 && b <= 0xbf) || (b >= 0xd9 && b <= 0xdb))) {
                    *why = "a map key that is not a string";
                    return MB_EPROTO;
                }
                int rc = s_to_json(out, payload + pos, after - pos, &n, depth_left - 1, why);
                if (rc)
                    return rc;
                pos += n;
                gw_buf_putc(out, ':');
            }
            int rc = s_to_json(out, payload + pos, after - pos, &n, depth_left - 1, why);
            if (rc)
                return rc;
            pos += n;
        }
        gw_buf_putc(out, map ? '}' : ']');
        *used += pos;
        return 0;
    }
    case MB_MP_EXT:
    default:
        *why = "an ext value";
        return MB_EPROTO;
    }
}

int gw_msgpack_raw_to_json(gw_buf_t *out, const void *data, size_t size, const char **why)
{
    static const char *none;
    if (!why)
        why = &none;
    size_t used = 0;
    int rc = s_to_json(out, data, size, &used, S_REPLY_MAX_DEPTH, why);
    if (rc == 0 && used != size) {
        *why = "trailing bytes after the value";
        rc = MB_EPROTO;
    }
    return rc;
}

int gw_msgpack_to_json(gw_buf_t *out, const msgpack_object *o, const char **why)
{
    /* Packed back to bytes so one writer serves both forms; this path
       (WebSocket events) is not the hot one. */
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *o);
    int rc = gw_msgpack_raw_to_json(out, sbuf.data, sbuf.size, why);
    msgpack_sbuffer_destroy(&sbuf);
    return rc;
}
