/*  mb_msgpack — helpers over msgpack-c, and a header-only scanner. */
#include "mb_msgpack.h"

#include <string.h>

#include "mb_alloc.h"
#include "mb_error.h"

const msgpack_object *mb_map_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t key_len = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == key_len &&
            memcmp(k->via.str.ptr, key, key_len) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

bool mb_obj_str(const msgpack_object *o, const char **s, size_t *len)
{
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return false;
    *s = o->via.str.ptr;
    *len = o->via.str.size;
    return true;
}

char *mb_obj_strdup(const msgpack_object *o)
{
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return NULL;
    return mb_strndup(o->via.str.ptr, o->via.str.size);
}

bool mb_obj_str_eq(const msgpack_object *o, const char *s)
{
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return false;
    size_t len = strlen(s);
    return o->via.str.size == len && memcmp(o->via.str.ptr, s, len) == 0;
}

bool mb_obj_int(const msgpack_object *o, int64_t *out)
{
    if (!o)
        return false;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t)INT64_MAX)
            return false;
        *out = (int64_t)o->via.u64;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return true;
    }
    return false;
}

bool mb_obj_bool(const msgpack_object *o, bool *out)
{
    if (!o || o->type != MSGPACK_OBJECT_BOOLEAN)
        return false;
    *out = o->via.boolean;
    return true;
}

void mb_pack_cstr(msgpack_packer *pk, const char *s)
{
    mb_pack_strn(pk, s, strlen(s));
}

void mb_pack_strn(msgpack_packer *pk, const char *s, size_t len)
{
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
}

void mb_pack_raw(msgpack_packer *pk, const void *data, size_t len)
{
    /* The packer's own write callback (msgpack_sbuffer_write for an
       sbuffer) appends bytes exactly as the typed packers do. */
    pk->callback(pk->data, data, len);
}

void mb_pack_object(msgpack_packer *pk, const msgpack_object *o)
{
    msgpack_pack_object(pk, *o);
}

/* ---- scanning without decoding ---------------------------------------- */

static uint64_t s_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/*  Encodings 0xc0..0xdf, indexed by type byte - 0xc0. */
struct s_form {
    bool valid;
    mb_msgpack_kind_t kind;
    uint8_t extra;   /* bytes after the type byte: a length or a value */
    uint8_t payload; /* fixed payload after those (floats, fixext + type byte) */
};
static const struct s_form s_forms[32] = {
    [0x00] = {true, MB_MP_NIL, 0, 0},     [0x02] = {true, MB_MP_BOOL, 0, 0},
    [0x03] = {true, MB_MP_BOOL, 0, 0},    [0x04] = {true, MB_MP_BIN, 1, 0},
    [0x05] = {true, MB_MP_BIN, 2, 0},     [0x06] = {true, MB_MP_BIN, 4, 0},
    [0x07] = {true, MB_MP_EXT, 1, 0},     [0x08] = {true, MB_MP_EXT, 2, 0},
    [0x09] = {true, MB_MP_EXT, 4, 0},     [0x0a] = {true, MB_MP_FLOAT, 0, 4},
    [0x0b] = {true, MB_MP_FLOAT, 0, 8},   [0x0c] = {true, MB_MP_UINT, 1, 0},
    [0x0d] = {true, MB_MP_UINT, 2, 0},    [0x0e] = {true, MB_MP_UINT, 4, 0},
    [0x0f] = {true, MB_MP_UINT, 8, 0},    [0x10] = {true, MB_MP_INT, 1, 0},
    [0x11] = {true, MB_MP_INT, 2, 0},     [0x12] = {true, MB_MP_INT, 4, 0},
    [0x13] = {true, MB_MP_INT, 8, 0},     [0x14] = {true, MB_MP_EXT, 0, 1 + 1},
    [0x15] = {true, MB_MP_EXT, 0, 1 + 2}, [0x16] = {true, MB_MP_EXT, 0, 1 + 4},
    [0x17] = {true, MB_MP_EXT, 0, 1 + 8}, [0x18] = {true, MB_MP_EXT, 0, 1 + 16},
    [0x19] = {true, MB_MP_STR, 1, 0},     [0x1a] = {true, MB_MP_STR, 2, 0},
    [0x1b] = {true, MB_MP_STR, 4, 0},     [0x1c] = {true, MB_MP_ARRAY, 2, 0},
    [0x1d] = {true, MB_MP_ARRAY, 4, 0},   [0x1e] = {true, MB_MP_MAP, 2, 0},
    [0x1f] = {true, MB_MP_MAP, 4, 0},
};

int mb_msgpack_head(const void *data, size_t size, mb_msgpack_head_t *head)
{
    const uint8_t *p = data;
    if (size < 1)
        return MB_EPROTO;
    uint8_t b = p[0];
    memset(head, 0, sizeof *head);
    size_t extra = 0;   /* bytes of length/value after the type byte */
    uint64_t value = 0; /* the big-endian number in those bytes */

    /* Fixed-size families first. */
    if (b <= 0x7f) {
        head->kind = MB_MP_UINT;
        head->value = b;
        head->head_len = 1;
        return 0;
    }
    if (b >= 0xe0) {
        head->kind = MB_MP_INT;
        head->value = (uint64_t)(int64_t)(int8_t)b;
        head->head_len = 1;
        return 0;
    }
    if (b <= 0x8f) {
        head->kind = MB_MP_MAP;
        head->count = b & 0x0f;
        head->head_len = 1;
        return 0;
    }
    if (b <= 0x9f) {
        head->kind = MB_MP_ARRAY;
        head->count = b & 0x0f;
        head->head_len = 1;
        return 0;
    }
    if (b <= 0xbf) {
        head->kind = MB_MP_STR;
        head->count = b & 0x1f;
        head->head_len = 1;
        return size - 1 < head->count ? MB_EPROTO : 0;
    }
    /* 0xc0..0xdf: the type byte is followed by `extra` length or value
       bytes, then (floats, fixext) a fixed payload. */
    const struct s_form *form = &s_forms[b - 0xc0];
    if (!form->valid)
        return MB_EPROTO; /* 0xc1 is never used */
    head->kind = form->kind;
    head->count = form->payload;
    extra = form->extra;
    if (b == 0xc3)
        head->value = 1;
    if (size - 1 < extra)
        return MB_EPROTO;
    value = s_be(p + 1, extra);
    head->head_len = 1 + extra;
    switch (head->kind) {
    case MB_MP_UINT:
        head->value = value;
        break;
    case MB_MP_INT:
        /* Sign-extend the extra-byte two's complement number. */
        if (extra < 8 && (value >> (8 * extra - 1)))
            value |= ~UINT64_C(0) << (8 * extra);
        head->value = value;
        /* msgpack-c reports a non-negative intN as a positive integer; so do we. */
        if ((int64_t)value >= 0)
            head->kind = MB_MP_UINT;
        break;
    case MB_MP_BIN:
    case MB_MP_STR:
        head->count = value;
        break;
    case MB_MP_EXT:
        if (extra)
            head->count = value + 1; /* the type byte, then the data */
        break;
    case MB_MP_ARRAY:
    case MB_MP_MAP:
        head->count = value;
        return 0;
    default:
        break;
    }
    /* Scalars: the payload must be inside the buffer. */
    if (size - head->head_len < head->count)
        return MB_EPROTO;
    return 0;
}

int mb_msgpack_skip(const void *data, size_t size, unsigned max_depth, size_t *used)
{
    /* Iterative, with a bounded stack of "objects left at this level", so
       hostile nesting costs neither recursion nor memory. */
    uint64_t left[MB_MSGPACK_MAX_DEPTH + 1];
    if (max_depth > MB_MSGPACK_MAX_DEPTH)
        max_depth = MB_MSGPACK_MAX_DEPTH;
    const uint8_t *p = data;
    size_t pos = 0;
    unsigned depth = 0;
    left[0] = 1;
    for (;;) {
        if (left[depth] == 0) {
            if (depth == 0)
                break;
            depth--;
            continue;
        }
        left[depth]--;
        mb_msgpack_head_t head;
        if (mb_msgpack_head(p + pos, size - pos, &head) != 0)
            return MB_EPROTO;
        pos += head.head_len;
        if (head.kind == MB_MP_ARRAY || head.kind == MB_MP_MAP) {
            uint64_t items = head.kind == MB_MP_MAP ? 2 * head.count : head.count;
            /* Every item takes at least one byte: a count larger than what
               is left is a lie, caught here before anyone allocates for it. */
            if (items > size - pos)
                return MB_EPROTO;
            if (items) {
                if (depth + 1 > max_depth)
                    return MB_EPROTO;
                left[++depth] = items;
            }
        } else
            pos += head.count;
    }
    *used = pos;
    return 0;
}
