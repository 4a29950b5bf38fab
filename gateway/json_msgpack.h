/*  json_msgpack — JSON on the HTTP side, msgpack on the bus.

    Requests: the body is parsed by jansson (bench/json_pick picked it) and
    its tree packed to msgpack. Replies: the msgpack body is written as JSON
    straight from its encoded bytes into a gw_buf_t, with no tree in
    between: one pass, no allocation once the buffer has grown. */
#ifndef GW_JSON_MSGPACK_H
#define GW_JSON_MSGPACK_H

#include <jansson.h>
#include <msgpack.h>

#include "buf.h"

/*  Deepest nesting of arrays/objects accepted in a request body. The bus
    refuses msgpack nested deeper than 32 (mb_msgpack.h); the envelope and
    its args map take two levels, and the margin leaves room to grow. */
#define GW_JSON_MAX_DEPTH 24

/*  Packs `value` as msgpack: object -> map (string keys), array, string,
    integer -> int64, real -> float64, true/false, null. Returns 0, or
    MB_ETOOBIG when it nests deeper than `max_depth` containers (a
    top-level object counts as 1); then what was packed is incomplete and
    the caller discards the buffer. */
int gw_json_to_msgpack(msgpack_packer *pk, const json_t *value, int max_depth);

/*  Appends the one msgpack object encoded in the `size` bytes at `data`
    to `out` as JSON (RFC 8259), reading it in place: nil -> null, bool,
    ints, floats (shortest form that reads back the same), str -> string
    (escaped), bin -> base64 string, array, map -> object. Returns 0, or
    MB_EPROTO with *why set (static) when the bytes are not exactly one
    well-formed object or it has no JSON form: a map key that is not a
    string, an ext, a NaN or infinity, a string that is not valid UTF-8,
    or nesting deeper than 64. On error `out` holds a partial document the
    caller discards. */
int gw_msgpack_raw_to_json(gw_buf_t *out, const void *data, size_t size, const char **why);

/*  The same for a decoded object. */
int gw_msgpack_to_json(gw_buf_t *out, const msgpack_object *o, const char **why);

#endif
