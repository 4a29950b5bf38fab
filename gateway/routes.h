/*  routes — the route table, built at start-up from the OpenAPI document
    in schemas/openapi.json.

    Each path template and method gives one route: the MDP service
    (x-service), the envelope op (x-op), who may call it (x-access), what
    it is counted on by the rate limiter (x-rate-limit), its path and
    query parameters with their schemas, and its JSON request body
    schema.

    Matching splits the path on '/'; a template segment {name} matches one
    non-empty segment, and at the first segment where two templates differ
    a literal beats a parameter (/v1/tracks/contains before
    /v1/tracks/{id}). A path no template matches is a 404; a path that
    matches but not with this method is a 405, with the methods that
    would do in Allow. */
#ifndef GW_ROUTES_H
#define GW_ROUTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "validate.h"

#define GW_MAX_SEGMENTS 16 /* path segments a template or a request path may have */

typedef enum {
    GW_ACCESS_PUBLIC,
    GW_ACCESS_USER,
    GW_ACCESS_PREMIUM,
    GW_ACCESS_ADMIN,
} gw_access_t;

typedef enum { GW_IN_PATH, GW_IN_QUERY } gw_param_in_t;

#define GW_RATE_KEYS_MAX 4 /* keys one x-rate-limit may list */

/*  What a request is counted on (x-rate-limit keys). */
typedef enum {
    GW_RATE_ADDR, /* "addr": the client's address */
    GW_RATE_USER, /* "user": the access token's sub */
    GW_RATE_BODY, /* "body.<field>": a top-level string field of the body */
} gw_rate_key_kind_t;

typedef struct {
    gw_rate_key_kind_t kind;
    char *name;  /* as written: "addr", "user", "body.email" */
    char *field; /* GW_RATE_BODY: the field ("email"); else NULL */
} gw_rate_keydef_t;

typedef struct {
    char *name;                /* the parameter's name, also its key in args */
    gw_param_in_t in;          /* path or query */
    bool required;             /* query: absent is a 400 (path ones always are present) */
    bool split;                /* array with style form, explode false: split on ',' */
    int segment;               /* path: index of its segment in the template */
    const gw_schema_t *schema; /* NULL: any string */
} gw_param_t;

/*  x-headers: a request header copied into args. */
typedef struct {
    char *header; /* the header's name, "If-Match" */
    char *arg;    /* its key in args, "if_match" */
} gw_header_arg_t;

#define GW_HEADER_ARGS_MAX 8   /* entries of one x-headers */
#define GW_UPLOAD_TYPES_MAX 16 /* media types of one x-upload */

typedef struct {
    const char *method; /* "GET", "POST", ... (static) */
    const char *path;   /* the template, "/v1/tracks/{id}" */
    char *service;      /* x-service: the MDP service */
    char *op;           /* x-op: the envelope's op */
    gw_access_t access; /* x-access (absent: public) */
    long timeout_ms;    /* x-timeout-ms: this operation's deadline; 0: the gateway's */
    char *rate_budget;  /* x-rate-limit budget; NULL: none given (the default applies) */
    gw_rate_keydef_t rate_keys[GW_RATE_KEYS_MAX]; /* x-rate-limit keys */
    size_t n_rate_keys;
    bool rate_body;     /* a key reads the body, so counting waits for it */
    gw_param_t *params; /* path parameters first, then query */
    size_t n_params;
    bool has_body;                  /* the operation takes a JSON request body */
    bool body_required;             /* requestBody.required */
    const gw_schema_t *body_schema; /* NULL: any JSON */
    /* x-headers */
    gw_header_arg_t headers[GW_HEADER_ARGS_MAX];
    size_t n_headers;
    /* x-upload: the body is streamed into the blob store, not parsed */
    bool upload;
    uint64_t upload_max;                     /* bytes; 0: the gateway's limit alone */
    char *upload_types[GW_UPLOAD_TYPES_MAX]; /* see gw_media_type_listed(); none: any */
    size_t n_upload_types;
    /* Non-JSON media types its 2xx responses declare ("text/csv"): a
       reply shaped {"content_type", "data"|"csv"|"text", "filename"?}
       is then sent as those bytes. */
    char **raw_types;
    size_t n_raw_types;
} gw_route_t;

typedef struct gw_routes gw_routes_t;

/*  What gw_routes_match() found. */
typedef struct {
    const gw_route_t *route; /* the route, or NULL for a 404/405 */
    const char *allow;       /* for a 405: "GET, PATCH, DELETE" (borrowed) */
    size_t n_segments;
    struct {
        const char *ptr; /* into the path given to gw_routes_match() */
        size_t len;
    } segments[GW_MAX_SEGMENTS];
} gw_match_t;

/*  Builds the table from `len` bytes of OpenAPI JSON. Returns NULL with
    a reason in `err` when the document is not valid JSON or an operation
    lacks x-service/x-op, has a bad x-access or x-rate-limit (a budget
    of 1..32 [a-z0-9_], 1..4 keys among addr, user -- not on a public
    route -- and body.<field> -- only with a body), a bad x-headers
    ({"Header-Name": "arg_name", ...}: 1..8 entries, names of token
    characters, args of 1..64 [a-z0-9_] that no parameter, "body" or
    "blob" uses), an x-timeout-ms that is not an integer in
    1..3600000, a bad x-upload ({"max": bytes?, "types": ["type/sub"
    or "type/" and a star, ...] or a star}; without types, the requestBody's media
    types; not with an application/json body), a $ref that does not
    resolve, a schema that does not compile, or a path template the
    matcher cannot serve. */
gw_routes_t *gw_routes_new(const char *json, size_t len, char *err, size_t err_size);

/*  Frees the table and everything it compiled; nulls *self_p. Safe to
    call twice. */
void gw_routes_destroy(gw_routes_t **self_p);

/*  Number of routes and the i-th one (document order), for listings. */
size_t gw_routes_size(const gw_routes_t *self);
const gw_route_t *gw_routes_at(const gw_routes_t *self, size_t index);

/*  Looks up `method` and `path` (the path only, no query; already
    percent-decoded). Returns 0 with m->route set, 404 when no template
    matches, or 405 with m->allow set when the path matches but the method
    does not. The segments in *m point into `path`. */
int gw_routes_match(const gw_routes_t *self, const char *method, const char *path, gw_match_t *m);

/*  The value of path parameter `p` of a matched route. */
static inline const char *gw_match_param(const gw_match_t *m, const gw_param_t *p, size_t *len)
{
    *len = m->segments[p->segment].len;
    return m->segments[p->segment].ptr;
}

/*  True when media type `type` (a Content-Type value: parameters after
    ';' and letter case do not matter) is one of `patterns`: "audio/flac",
    "audio/" followed by a star for any audio type, or a star alone for
    anything. An empty list matches anything. */
bool gw_media_type_listed(const char *type, char *const *patterns, size_t n);

/*  Parses an x-access value. Returns 0, or MB_EINVAL. */
int gw_access_parse(const char *text, gw_access_t *out);
const char *gw_access_name(gw_access_t access);

#endif
