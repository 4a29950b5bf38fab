/*  catalog_harness — drives the catalog actor's handlers through
    mb_actor_dispatch() with real encoded envelopes, against an LMDB
    environment in a temporary folder; shared by the catalog's tests.

    Arguments are written as JSON (jansson) and packed to msgpack the way
    the gateway does; reply bodies are turned back into JSON to inspect.
    Every JSON value handed back is kept until h_teardown(). Failures are
    Criterion assertions. */
#ifndef CATALOG_HARNESS_H
#define CATALOG_HARNESS_H

#include <jansson.h>
#include <lmdb.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdbool.h>
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
} reply_t;

/*  The newest entry of the outbox ("_outbox", mb_events.h): what the
    runtime will publish once the handler's transaction committed. */
typedef struct {
    char topic[MB_TOPIC_MAX + 1];
    char key[MB_EVENT_KEY_MAX + 1];
    json_t *data; /* kept until teardown */
} event_t;

extern char h_dir[64];       /* the environment's folder */
extern mb_actor_def_t h_def; /* the catalog's definition, map size as opened */
extern MDB_env *h_env;       /* the open environment */
extern void *h_state;        /* what the open hook made */

/*  Makes a temporary folder and opens the actor there (map_size 0: the
    default). */
void h_open(size_t map_size);
/*  Closes the actor and opens it again on the same folder (the open hook
    reads the environment again: media secret, stream TTL). */
void h_reopen(void);
/*  Suite hooks: h_open(0); close and remove everything. */
void h_setup(void);
void h_teardown(void);

/*  Keeps `j` until teardown; returns it. */
json_t *h_keep(json_t *j);
void h_pack_json(msgpack_packer *pk, const json_t *j);
/*  A new JSON value for `o` (the caller's). */
json_t *h_to_json(const msgpack_object *o);
/*  Copies len bytes of src into dst (cap bytes) as a NUL-terminated string, cut if needed. */
void h_copy(char *dst, size_t cap, const char *src, size_t len);

/*  Dispatches one encoded request and decodes the reply. */
reply_t h_dispatch(const void *request, size_t size, uint64_t rid);
/*  Calls `op` with args given as JSON (printf format; NULL for no args)
    and, for h_call_as, the envelope's auth map as JSON (NULL: none). */
reply_t h_call(const char *op, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
reply_t h_call_as(const char *auth, const char *op, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
reply_t h_vcall(const char *auth, const char *op, const char *fmt, va_list ap);

void h_expect_error(reply_t r, int status, const char *code, const char *field);
void h_expect_invalid(reply_t r, const char *field);
/*  Checks the status; returns r. */
reply_t h_ok(reply_t r, int status);
/*  String (integer) member `key` of `o`, which must be there. */
const char *h_str(const json_t *o, const char *key);
long long h_int(const json_t *o, const char *key);

/*  Creates a record and returns its id. */
const char *h_new_artist(const char *name);
const char *h_new_album(const char *title, const char *artist, const char *date);
const char *h_new_track(const char *album, const char *artist, int disc, int track);

/*  n copies of c, NUL-terminated; the caller frees. */
char *h_repeat(char c, size_t n);
/*  True when s is RFC 3339 UTC, milliseconds optional. */
bool h_rfc3339(const char *s);

size_t h_outbox_count(void);
event_t h_outbox_last(void);
/*  Checks that exactly one event was added since the outbox held
    `before`, and that it is {action, id, object} on `topic` keyed by id
    (`object` NULL: nil). */
void h_expect_event(size_t before, const char *topic, const char *id, const char *action,
                    const json_t *object);

#endif
