/*  Test harness of the playlists tests: JSON (jansson) to msgpack and
    back, the way the gateway converts bodies, and temporary folders. */
#ifndef PL_HARNESS_H
#define PL_HARNESS_H

#include <jansson.h>
#include <msgpack.h>

/*  Packs a JSON value as msgpack. */
void pl_pack_json(msgpack_packer *pk, const json_t *j);

/*  Turns a msgpack object into JSON (new reference); fails the test on
    types JSON has not. */
json_t *pl_to_json(const msgpack_object *o);

/*  Parses printf-formatted JSON; fails the test when it does not parse. */
json_t *pl_json(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*  Makes a temporary folder into dir (at least 64 bytes) / removes it. */
void pl_tmpdir(char *dir, const char *name);
void pl_rmdir(const char *dir);

#endif
