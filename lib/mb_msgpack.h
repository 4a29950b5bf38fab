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

#endif
