/*  mb_envelope — the msgpack request and reply carried on the bus.

    Every MDP body musicbus sends is exactly one frame holding one msgpack
    map.

    Request:  {"op": str, "rid": uint, "ttl": uint?, "auth": map?, "args": map?}
      op    the operation, 1..64 bytes ("track.get")
      rid   request id chosen by the sender; echoed in the reply so one
            client socket can keep many requests in flight
      ttl   milliseconds the sender will wait; the broker expires the
            request after that (absent: the broker's default)
      auth  set only by the gateway: {"user": str, "tier": str, "roles": [str]}
      args  the operation's arguments: path and query parameters by name,
            and "body" holding the decoded JSON body when there is one

    Reply:    {"rid": uint, "status": uint, "body": any}
          or  {"rid": uint, "status": uint, "error": {"code": str,
               "message": str, "field": str?}}
      status  an HTTP status code (200, 201, 204, 400, 404, 409, 503, ...)
      field   for 400s, the argument at fault ("body.isrc")

    Decoding checks every type and rejects anything else with MB_EPROTO and
    a static reason; it never asserts on peer input. Unknown keys are
    ignored so the envelope can grow; a known key given twice is rejected.
    Before msgpack-c sees the bytes, a scan refuses container counts that
    cannot fit in the input and nesting deeper than 32, so hostile input
    cannot make it allocate more than a small multiple of its size. The
    decoded envelope owns a copy of the bytes: the input buffer may be
    freed right after decoding. */
#ifndef MB_ENVELOPE_H
#define MB_ENVELOPE_H

#include <msgpack.h>
#include <stdint.h>

#define MB_OP_MAX 64

typedef struct {
    msgpack_unpacked msg;       /* owns the decoded tree; the rest borrow from it */
    const char *op;             /* not NUL-terminated */
    size_t op_len;
    uint64_t rid;
    uint32_t ttl_ms;            /* 0 when absent */
    const msgpack_object *auth; /* a map, or NULL when absent */
    const msgpack_object *args; /* a map, or NULL when absent */
} mb_request_t;

typedef struct {
    msgpack_unpacked msg;       /* owns the decoded tree; the rest borrow from it */
    uint64_t rid;
    int status;
    const msgpack_object *body; /* NULL for an error reply or when absent */
    const char *code;           /* error code, NULL unless an error reply */
    size_t code_len;
    const char *message;        /* error message, NULL unless an error reply */
    size_t message_len;
    const char *field;          /* error field, NULL when absent */
    size_t field_len;
} mb_reply_t;

/*  Decodes `size` bytes at `data` into *req. Returns 0, or MB_EPROTO with
    *why set to a static reason. On success the caller must call
    mb_request_release(); on failure there is nothing to release. */
int mb_request_decode(mb_request_t *req, const void *data, size_t size, const char **why);
void mb_request_release(mb_request_t *req);

/*  Reads only rid and ttl from an encoded request, for the broker, which
    routes without decoding the rest. It allocates nothing: one scan checks
    the whole message is well-formed msgpack (same size, depth and count
    limits as mb_request_decode), then reads the two top-level keys.
    Returns 0, or MB_EPROTO when `data` is not such a map or rid/ttl are
    missing or invalid (then *rid and *ttl_ms are 0). It does not check op,
    auth or args: a request it accepts may still be refused by decode. */
int mb_request_peek(const void *data, size_t size, uint64_t *rid, uint32_t *ttl_ms);

/*  Packs the head of a request: a map of 2 + (ttl_ms > 0) + n_more entries
    with "op", "rid" and "ttl". The caller then packs exactly n_more
    key/value pairs ("auth" and/or "args"). */
void mb_request_pack_head(msgpack_packer *pk, const char *op, uint64_t rid, uint32_t ttl_ms,
                          uint32_t n_more);

/*  A reply read in place: no allocation, no copy. The strings and the
    body point into the bytes given to mb_reply_view(), which must outlive
    the view. For hot paths (the gateway answers every HTTP request from
    one); mb_reply_decode() is the same check plus a decoded body. */
typedef struct {
    uint64_t rid;
    int status;
    const uint8_t *body; /* the body's encoded msgpack, NULL for an error reply or when
                            absent; one complete object of body_len bytes */
    size_t body_len;
    const char *code;    /* error code, NULL unless an error reply */
    size_t code_len;
    const char *message; /* error message, NULL unless an error reply */
    size_t message_len;
    const char *field;   /* error field, NULL when absent */
    size_t field_len;
} mb_reply_view_t;

/*  Reads the reply at `data` into *view, checking it as
    mb_reply_decode() does (well-formed msgpack within the depth and count
    limits, no trailing bytes, every known key's type, no known key twice).
    Returns 0, or MB_EPROTO with *why set to a static reason. */
int mb_reply_view(mb_reply_view_t *view, const void *data, size_t size, const char **why);

/*  Decodes a reply, as mb_request_decode() does. */
int mb_reply_decode(mb_reply_t *rep, const void *data, size_t size, const char **why);
void mb_reply_release(mb_reply_t *rep);

/*  Packs the head of a success reply {"rid", "status", "body": }; the
    caller then packs exactly one object, the body. */
void mb_reply_pack_head(msgpack_packer *pk, uint64_t rid, int status);

/*  Packs a whole error reply. `field` may be NULL. */
void mb_reply_pack_error(msgpack_packer *pk, uint64_t rid, int status, const char *code,
                         const char *field, const char *message);

#endif
