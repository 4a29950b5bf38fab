/*  mb_msgpack — small helpers over msgpack-c for reading and writing maps
    keyed by strings. Readers never assert: a missing key or a wrong type
    is a normal result. */
#ifndef MB_MSGPACK_H
#define MB_MSGPACK_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

/*  Returns the value of string key `key` in `map`, or NULL when `map` is
    NULL, not a map, or has no such key. Borrowed from `map`. */
const msgpack_object *mb_map_get(const msgpack_object *map, const char *key);

/*  Returns true when `o` is a string, and sets *s (not NUL-terminated)
    and *len. */
bool mb_obj_str(const msgpack_object *o, const char **s, size_t *len);

/*  Returns a NUL-terminated copy of string `o` (caller frees), or NULL
    when `o` is NULL or not a string. */
char *mb_obj_strdup(const msgpack_object *o);

/*  True when `o` is a string equal to `s`. */
bool mb_obj_str_eq(const msgpack_object *o, const char *s);

/*  Returns true when `o` is an integer (positive or negative) that fits
    in int64_t, and sets *out. */
bool mb_obj_int(const msgpack_object *o, int64_t *out);

/*  Returns true when `o` is a boolean, and sets *out. */
bool mb_obj_bool(const msgpack_object *o, bool *out);

/*  Packs a NUL-terminated string. */
void mb_pack_cstr(msgpack_packer *pk, const char *s);
/*  Packs `len` bytes as a string. */
void mb_pack_strn(msgpack_packer *pk, const char *s, size_t len);
/*  Packs an already-encoded msgpack object verbatim (for example a value
    read from LMDB) into the stream of `pk`, which must write to a
    msgpack_sbuffer. */
void mb_pack_raw(msgpack_packer *pk, const void *data, size_t len);
/*  Packs `o` (a decoded object) back to msgpack. */
void mb_pack_object(msgpack_packer *pk, const msgpack_object *o);

/* ---- scanning encoded msgpack without decoding it ---------------------
   For hot paths (the broker peeks at requests) and for checking hostile
   input before msgpack-c allocates for it. Never allocates. */

#define MB_MSGPACK_MAX_DEPTH 32 /* deepest nesting mb_msgpack_skip() accepts */

typedef enum {
    MB_MP_NIL,
    MB_MP_BOOL,
    MB_MP_UINT, /* any integer >= 0, whatever its wire encoding */
    MB_MP_INT,  /* a negative integer */
    MB_MP_FLOAT,
    MB_MP_STR,
    MB_MP_BIN,
    MB_MP_EXT,
    MB_MP_ARRAY,
    MB_MP_MAP
} mb_msgpack_kind_t;

typedef struct {
    mb_msgpack_kind_t kind;
    size_t head_len; /* bytes of the type byte and its length/value bytes */
    uint64_t count;  /* ARRAY/MAP: entries; STR/BIN/EXT/FLOAT: payload bytes
                        after the head (EXT: type byte included) */
    uint64_t value;  /* UINT: the value; INT (negative only): the int64_t
                        value cast; BOOL: 0 or 1 */
} mb_msgpack_head_t;

/*  Reads the header of the object at `data`. Returns 0, or MB_EPROTO when
    the header is cut short, the byte is 0xc1, or a scalar's payload runs
    past `size`. Non-negative signed ints are reported as MB_MP_UINT, as
    msgpack-c does. */
int mb_msgpack_head(const void *data, size_t size, mb_msgpack_head_t *head);

/*  Walks one complete object at `data` and sets *used to its length in
    bytes. Returns 0, or MB_EPROTO when it is truncated, malformed, nested
    deeper than `max_depth` containers (capped at MB_MSGPACK_MAX_DEPTH), or
    declares more container entries than bytes remain. An object that
    passes can be unpacked by msgpack-c with memory linear in `size`. */
int mb_msgpack_skip(const void *data, size_t size, unsigned max_depth, size_t *used);

#endif
