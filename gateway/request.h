/*  request — turns a matched HTTP request into the bus envelope.

    args = each path parameter and each query parameter present, by name,
    converted to its schema's type (integer, number, boolean, string; an
    array parameter is split on commas and each item converted), plus
    each request header the operation's x-headers names, as a string
    under its arg name, plus "body", the decoded JSON body, when the
    operation takes one, or "blob" {"hash": 64 hex, "size": uint}, the
    stored upload, for an x-upload operation. Every
    value is validated against its schema first; the first rule broken is
    a 400 naming the field ("limit", "ids[3]", "body.title"). A value of a
    type with no conversion ("1x" for an integer) is reported the same way.

    No MHD here: the caller passes a function that looks query values up,
    so this module is tested on its own. */
#ifndef GW_REQUEST_H
#define GW_REQUEST_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "mb_jwt.h"
#include "routes.h"
#include "validate.h"

/*  Returns the value of query parameter `name` and sets *len, or returns
    NULL when absent. A parameter given without '=' is "" (len 0). */
typedef const char *(*gw_query_fn)(void *cls, const char *name, size_t *len);

/*  What a request brings besides its path. */
typedef struct {
    gw_query_fn query;  /* query parameters; NULL: none */
    gw_query_fn header; /* request headers by name (any case); NULL: none */
    void *cls;          /* passed to both */
    const char *body;   /* the raw JSON body (ignored when the route takes none) */
    size_t body_len;
    const char *blob_hex; /* x-upload: the stored body's hash (64 hex), else NULL */
    uint64_t blob_size;   /* and its size in bytes */
} gw_request_in_t;

/*  Packs the whole request envelope {"op", "rid", "ttl", "auth"?, "args"}
    for `route` into `pk`. `auth` is the verified token's claims, packed
    as the envelope's auth map (mb_jwt_pack_auth()), or NULL for none: it
    is the only way anything reaches the envelope's auth -- a query
    parameter or body field named "auth" stays inside args. Returns 0,
    or MB_EINVAL with *err filled in (an HTTP 400: a value breaks its
    schema, a header value is not UTF-8 text); then `pk`'s buffer holds a
    partial envelope the caller discards. */
int gw_request_pack(msgpack_packer *pk, const gw_route_t *route, const gw_match_t *match,
                    const gw_request_in_t *in, const mb_jwt_claims_t *auth, uint64_t rid,
                    uint32_t ttl_ms, gw_invalid_t *err);

#endif
