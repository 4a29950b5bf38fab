/*  actor_harness — what the actors' tests share: drives an actor's
    handlers through mb_actor_dispatch() with real encoded envelopes,
    against an LMDB environment in a temporary folder, and converts JSON
    (jansson) to msgpack and back the way the gateway does.

    One actor is open at a time (th_dir, th_def, th_env, th_state); every
    JSON value handed back is kept until th_teardown(). Failures are
    Criterion assertions, so these run inside tests only. */
#ifndef ACTOR_HARNESS_H
#define ACTOR_HARNESS_H

#include <jansson.h>
#include <lmdb.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "mb_actor.h"
#include "mb_events.h"

typedef struct {
    int status;
    json_t *body;    /* NULL for an error reply; kept until teardown */
    char code[64];   /* error code, "" for a success */
    char field[128]; /* error field, "" when none */
    char message[512];
} th_reply_t;

/*  The newest entry of the outbox ("_outbox", mb_events.h): what the
    runtime will publish once the handler's transaction committed. */
typedef struct {
    char topic[MB_TOPIC_MAX + 1];
    char key[MB_EVENT_KEY_MAX + 1];
    json_t *data; /* kept until teardown */
} th_event_t;

/*  Packs the envelope's auth value from `who` (th_call_packed). */
typedef void(th_pack_auth_fn)(msgpack_packer *pk, const void *who);

extern char th_dir[64];       /* the environment's folder, "" when none */
extern mb_actor_def_t th_def; /* the actor's definition, map size as opened */
extern MDB_env *th_env;       /* the open environment, NULL when closed */
extern void *th_state;        /* what the open hook made */

/*  Makes a temporary folder /tmp/<name>.XXXXXX and opens `def` there
    (map_size 0: the definition's). */
void th_open(const mb_actor_def_t *def, const char *name, size_t map_size);
/*  Closes the actor and opens it again on the same folder. */
void th_reopen(void);
/*  Drops the kept JSON values, closes the actor if open, removes the
    folder. Safe to call twice. */
void th_teardown(void);

/*  Keeps `j` until teardown; returns it. */
json_t *th_keep(json_t *j);
/*  Packs a JSON value as msgpack. */
void th_pack_json(msgpack_packer *pk, const json_t *j);
/*  A new JSON value for `o` (the caller's); fails the test on types JSON
    has not and on a map key that is not a string or is given twice. */
json_t *th_to_json(const msgpack_object *o);
/*  Parses printf-formatted JSON (any value); fails the test when it does
    not parse. New reference. */
json_t *th_json(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
json_t *th_vjson(const char *fmt, va_list ap);
/*  Copies len bytes of src (NULL: none) into dst (cap bytes) as a
    NUL-terminated string, cut if needed. */
void th_copy(char *dst, size_t cap, const char *src, size_t len);
/*  Makes a temporary folder /tmp/<name>.XXXXXX into dir (64 bytes) /
    removes a folder and all it holds ("" : nothing). */
void th_tmpdir(char *dir, const char *name);
void th_rmdir(const char *dir);

/*  Dispatches one encoded request to the open actor and decodes the
    reply, which must carry `rid`. */
th_reply_t th_dispatch(const void *request, size_t size, uint64_t rid);
/*  Calls `op` with `args` (taken; NULL for none) and, when pack_auth is
    not NULL, an auth map it packs from `who`. */
th_reply_t th_call_packed(const char *op, json_t *args, th_pack_auth_fn *pack_auth,
                          const void *who);
/*  Calls `op` with args given as JSON (printf format; NULL for no args)
    and the envelope's auth map as JSON (NULL: none). */
th_reply_t th_vcall(const char *auth, const char *op, const char *fmt, va_list ap);

void th_expect_error(th_reply_t r, int status, const char *code, const char *field);
void th_expect_invalid(th_reply_t r, const char *field);
/*  Checks the status; returns r. */
th_reply_t th_ok(th_reply_t r, int status);
/*  String (integer) member `key` of `o`, which must be there. */
const char *th_str(const json_t *o, const char *key);
long long th_int(const json_t *o, const char *key);

/*  Entries in the open actor's outbox; its newest entry. */
size_t th_outbox_count(void);
th_event_t th_outbox_last(void);

#endif
