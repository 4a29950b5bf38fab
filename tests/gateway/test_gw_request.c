/*  request: a matched HTTP request becomes the bus envelope, or a 400
    naming the field at fault. */
#include <criterion/criterion.h>
#include <string.h>
#include <strings.h>

#include "json_msgpack.h"
#include "mb_envelope.h"
#include "mb_error.h"
#include "mb_msgpack.h"
#include "request.h"
#include "routes.h"

static const char s_doc[] =
    "{\"paths\":{"
    "\"/v1/albums/{id}/tracks\":{\"get\":{\"x-service\":\"catalog\",\"x-op\":\"album.tracks\","
    "  \"parameters\":["
    "    {\"name\":\"id\",\"in\":\"path\",\"required\":true,"
    "     \"schema\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":8}},"
    "    {\"name\":\"limit\",\"in\":\"query\",\"schema\":{\"type\":\"integer\",\"minimum\":1,"
    "     \"maximum\":50}},"
    "    {\"name\":\"ratio\",\"in\":\"query\",\"schema\":{\"type\":\"number\"}},"
    "    {\"name\":\"explicit\",\"in\":\"query\",\"schema\":{\"type\":\"boolean\"}},"
    "    {\"name\":\"q\",\"in\":\"query\",\"schema\":{\"type\":\"string\",\"maxLength\":5}}]}},"
    "\"/v1/tracks\":{"
    "  \"get\":{\"x-service\":\"catalog\",\"x-op\":\"track.get_many\",\"parameters\":["
    "    {\"name\":\"ids\",\"in\":\"query\",\"required\":true,\"style\":\"form\",\"explode\":false,"
    "     \"schema\":{\"type\":\"array\",\"minItems\":1,\"maxItems\":3,\"uniqueItems\":true,"
    "      \"items\":{\"type\":\"string\",\"minLength\":1}}},"
    "    {\"name\":\"n\",\"in\":\"query\",\"style\":\"form\",\"explode\":false,"
    "     \"schema\":{\"type\":\"array\",\"items\":{\"type\":\"integer\"}}}]},"
    "  \"post\":{\"x-service\":\"catalog\",\"x-op\":\"track.create\","
    "    \"requestBody\":{\"required\":true,\"content\":{\"application/json\":{\"schema\":"
    "      {\"type\":\"object\",\"required\":[\"title\"],\"additionalProperties\":false,"
    "       \"properties\":{\"title\":{\"type\":\"string\"},\"tags\":{\"type\":\"array\"},"
    "       \"meta\":{}}}}}}}},"
    "\"/v1/notes\":{\"put\":{\"x-service\":\"notes\",\"x-op\":\"note.put\","
    "    \"requestBody\":{\"content\":{\"application/json\":{}}}}},"
    "\"/v1/me\":{\"post\":{\"x-service\":\"users\",\"x-op\":\"me.note\",\"x-access\":\"user\","
    "    \"parameters\":[{\"name\":\"auth\",\"in\":\"query\",\"schema\":{\"type\":\"string\"}}],"
    "    \"requestBody\":{\"content\":{\"application/json\":{}}}}},"
    "\"/v1/playlists/{id}\":{\"put\":{\"x-service\":\"playlists\",\"x-op\":\"playlist.replace\","
    "    \"x-headers\":{\"If-Match\":\"if_match\",\"X-Client\":\"client\"},"
    "    \"requestBody\":{\"content\":{\"application/json\":{}}}}},"
    "\"/v1/tracks/{id}/audio\":{\"put\":{\"x-service\":\"transcode\",\"x-op\":\"audio.ingest\","
    "    \"x-upload\":{\"max\":1000},"
    "    \"requestBody\":{\"content\":{\"audio/*\":{},\"application/octet-stream\":{}}}}}"
    "}}";

/*  A query string as a list of name/value pairs; value NULL = absent. */
typedef struct {
    const char *pairs[16][2];
} query_t;

/*  The request's headers (name, value), found in any case; NULL-ended. */
static const char *const (*s_headers)[2];

static const char *s_header(void *cls, const char *name, size_t *len)
{
    (void)cls;
    for (int i = 0; s_headers && s_headers[i][0]; i++)
        if (!strcasecmp(s_headers[i][0], name)) {
            *len = strlen(s_headers[i][1]);
            return s_headers[i][1];
        }
    return NULL;
}

static const char *s_query(void *cls, const char *name, size_t *len)
{
    query_t *q = cls;
    if (!q)
        return NULL;
    for (int i = 0; i < 16 && q->pairs[i][0]; i++)
        if (!strcmp(q->pairs[i][0], name)) {
            *len = strlen(q->pairs[i][1]);
            return q->pairs[i][1];
        }
    return NULL;
}

typedef struct {
    gw_routes_t *routes;
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    mb_request_t req;
    bool decoded;
    gw_invalid_t err;
    const mb_jwt_claims_t *auth; /* the verified claims s_pack() passes, or NULL */
    const char *blob_hex;        /* an upload's blob s_pack() passes, or NULL */
    uint64_t blob_size;
} fixture_t;

static fixture_t *s_new(void)
{
    fixture_t *f = calloc(1, sizeof *f);
    char err[256] = "";
    f->routes = gw_routes_new(s_doc, strlen(s_doc), err, sizeof err);
    cr_assert_not_null(f->routes, "%s", err);
    msgpack_sbuffer_init(&f->sbuf);
    msgpack_packer_init(&f->pk, &f->sbuf, msgpack_sbuffer_write);
    return f;
}

static void s_destroy(fixture_t *f)
{
    if (f->decoded)
        mb_request_release(&f->req);
    msgpack_sbuffer_destroy(&f->sbuf);
    gw_routes_destroy(&f->routes);
    free(f);
}

/*  Packs the request; returns its rc. On success decodes it into f->req. */
static int s_pack(fixture_t *f, const char *method, const char *path, query_t *q, const char *body)
{
    gw_match_t m;
    cr_assert_eq(gw_routes_match(f->routes, method, path, &m), 0, "%s %s", method, path);
    if (f->decoded)
        mb_request_release(&f->req);
    f->decoded = false;
    msgpack_sbuffer_clear(&f->sbuf);
    memset(&f->err, 0, sizeof f->err);
    gw_request_in_t in = {.query = s_query,
                          .header = s_header,
                          .cls = q,
                          .body = body,
                          .body_len = body ? strlen(body) : 0,
                          .blob_hex = f->blob_hex,
                          .blob_size = f->blob_size};
    int rc = gw_request_pack(&f->pk, m.route, &m, &in, f->auth, 42, 1500, &f->err);
    if (rc == 0) {
        const char *why = NULL;
        cr_assert_eq(mb_request_decode(&f->req, f->sbuf.data, f->sbuf.size, &why), 0, "%s", why);
        f->decoded = true;
    }
    return rc;
}

static void s_expect_400(fixture_t *f, const char *method, const char *path, query_t *q,
                         const char *body, const char *field, const char *detail_part)
{
    cr_assert_eq(s_pack(f, method, path, q, body), MB_EINVAL, "%s %s accepted", method, path);
    cr_assert_str_eq(f->err.field, field);
    cr_assert(strstr(f->err.detail, detail_part), "detail '%s' lacks '%s'", f->err.detail,
              detail_part);
    cr_assert_eq(strncmp(f->err.detail, field, strlen(field)), 0, "detail starts with the field");
}

/*  Usage: path and query parameters become typed args next to the op. */
Test(gw_request, usage)
{
    fixture_t *f = s_new();
    query_t q = {{{"limit", "20"}, {"explicit", "true"}, {"ratio", "0.5"}, {"other", "x"}}};
    cr_assert_eq(s_pack(f, "GET", "/v1/albums/AbC/tracks", &q, NULL), 0, "%s", f->err.detail);
    cr_assert_eq(f->req.op_len, strlen("album.tracks"));
    cr_assert_eq(memcmp(f->req.op, "album.tracks", f->req.op_len), 0);
    cr_assert_eq(f->req.rid, 42);
    cr_assert_eq(f->req.ttl_ms, 1500);
    const msgpack_object *args = f->req.args;
    cr_assert_eq(args->via.map.size, 4, "id, limit, ratio, explicit; unknown query ignored");
    cr_assert(mb_obj_str_eq(mb_map_get(args, "id"), "AbC"));
    int64_t limit;
    cr_assert(mb_obj_int(mb_map_get(args, "limit"), &limit));
    cr_assert_eq(limit, 20);
    bool explicit_;
    cr_assert(mb_obj_bool(mb_map_get(args, "explicit"), &explicit_));
    cr_assert(explicit_);
    cr_assert_eq(mb_map_get(args, "ratio")->type, MSGPACK_OBJECT_FLOAT64);
    cr_assert_null(mb_map_get(args, "q"), "absent optional parameters are left out");
    cr_assert_null(mb_map_get(args, "body"));
    s_destroy(f);
}

Test(gw_request, query_parameters_are_typed)
{
    fixture_t *f = s_new();
    const char *bad_ints[] = {"",   "1x",   "x",   "+5",  " 5",
                              "5 ", "0x10", "1.0", "1e2", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad_ints / sizeof bad_ints[0]; i++) {
        query_t q = {{{"limit", bad_ints[i]}}};
        s_expect_400(f, "GET", "/v1/albums/a/tracks", &q, NULL, "limit", "must be an integer");
    }
    query_t low = {{{"limit", "0"}}}, high = {{{"limit", "51"}}}, neg = {{{"limit", "-3"}}};
    s_expect_400(f, "GET", "/v1/albums/a/tracks", &low, NULL, "limit", "must be >= 1");
    s_expect_400(f, "GET", "/v1/albums/a/tracks", &high, NULL, "limit", "must be <= 50");
    s_expect_400(f, "GET", "/v1/albums/a/tracks", &neg, NULL, "limit", "must be >= 1");
    query_t yes = {{{"explicit", "yes"}}}, nan = {{{"ratio", "nan"}}}, inf = {{{"ratio", "1e999"}}};
    s_expect_400(f, "GET", "/v1/albums/a/tracks", &yes, NULL, "explicit", "must be a boolean");
    s_expect_400(f, "GET", "/v1/albums/a/tracks", &nan, NULL, "ratio", "must be a number");
    s_expect_400(f, "GET", "/v1/albums/a/tracks", &inf, NULL, "ratio", "must be a number");
    query_t longq = {{{"q", "abcdef"}}}, badutf = {{{"q", "\xff"}}};
    s_expect_400(f, "GET", "/v1/albums/a/tracks", &longq, NULL, "q", "at most 5 characters");
    s_expect_400(f, "GET", "/v1/albums/a/tracks", &badutf, NULL, "q", "UTF-8");
    query_t empty = {{{"q", ""}}};
    cr_assert_eq(s_pack(f, "GET", "/v1/albums/a/tracks", &empty, NULL), 0);
    cr_assert(mb_obj_str_eq(mb_map_get(f->req.args, "q"), ""));
    s_expect_400(f, "GET", "/v1/albums/123456789/tracks", NULL, NULL, "id", "at most 8");
    s_destroy(f);
}

Test(gw_request, comma_separated_arrays)
{
    fixture_t *f = s_new();
    query_t q = {{{"ids", "a,b,c"}, {"n", "1,-2"}}};
    cr_assert_eq(s_pack(f, "GET", "/v1/tracks", &q, NULL), 0, "%s", f->err.detail);
    const msgpack_object *ids = mb_map_get(f->req.args, "ids");
    cr_assert_eq(ids->type, MSGPACK_OBJECT_ARRAY);
    cr_assert_eq(ids->via.array.size, 3);
    cr_assert(mb_obj_str_eq(&ids->via.array.ptr[2], "c"));
    const msgpack_object *n = mb_map_get(f->req.args, "n");
    int64_t x;
    cr_assert(mb_obj_int(&n->via.array.ptr[1], &x));
    cr_assert_eq(x, -2);

    s_expect_400(f, "GET", "/v1/tracks", &(query_t){{{"n", "1"}}}, NULL, "ids", "is required");
    s_expect_400(f, "GET", "/v1/tracks", &(query_t){{{"ids", ""}}}, NULL, "ids", "at least 1 item");
    s_expect_400(f, "GET", "/v1/tracks", &(query_t){{{"ids", "a,b,c,d"}}}, NULL, "ids",
                 "at most 3 items");
    s_expect_400(f, "GET", "/v1/tracks", &(query_t){{{"ids", "a,,b"}}}, NULL, "ids[1]",
                 "must not be empty");
    s_expect_400(f, "GET", "/v1/tracks", &(query_t){{{"ids", "a,b,a"}}}, NULL, "ids[2]", "unique");
    s_expect_400(f, "GET", "/v1/tracks", &(query_t){{{"ids", "a"}, {"n", "1,x"}}}, NULL, "n[1]",
                 "must be an integer");
    s_destroy(f);
}

Test(gw_request, json_body)
{
    fixture_t *f = s_new();
    cr_assert_eq(
        s_pack(f, "POST", "/v1/tracks", NULL,
               "{\"title\":\"Caf\\u00e9\",\"tags\":[1,2.5,null,true],\"meta\":{\"a\":{}}}"),
        0, "%s", f->err.detail);
    const msgpack_object *body = mb_map_get(f->req.args, "body");
    cr_assert_eq(body->type, MSGPACK_OBJECT_MAP);
    cr_assert(mb_obj_str_eq(mb_map_get(body, "title"), "Caf\xc3\xa9"));
    cr_assert_eq(mb_map_get(body, "tags")->via.array.size, 4);

    s_expect_400(f, "POST", "/v1/tracks", NULL, NULL, "body", "is required");
    s_expect_400(f, "POST", "/v1/tracks", NULL, "{}", "body.title", "is required");
    s_expect_400(f, "POST", "/v1/tracks", NULL, "[]", "body", "must be an object");
    s_expect_400(f, "POST", "/v1/tracks", NULL, "{\"title\":\"x\",\"y\":1}", "body.y",
                 "not allowed");
    s_destroy(f);
}

Test(gw_request, malformed_json_says_where)
{
    fixture_t *f = s_new();
    s_expect_400(f, "POST", "/v1/tracks", NULL, "{\"title\":\n  x}", "body",
                 "not valid JSON at line 2, column 3");
    s_expect_400(f, "POST", "/v1/tracks", NULL, "{\"title\":\"a\"} trailing", "body",
                 "not valid JSON");
    s_expect_400(f, "POST", "/v1/tracks", NULL, "{\"title\":\"a\",\"title\":\"b\"}", "body",
                 "duplicate");
    s_expect_400(f, "POST", "/v1/tracks", NULL, "{\"title\":\"\xc0\xaf\"}", "body",
                 "not valid JSON");
    s_expect_400(f, "POST", "/v1/tracks", NULL, "{\"title\":\"a\\u0000b\"}", "body",
                 "not valid JSON");
    s_expect_400(f, "POST", "/v1/tracks", NULL, "{\"title\":\"a\",\"meta\":NaN}", "body",
                 "not valid JSON");
    s_expect_400(f, "POST", "/v1/tracks", NULL, "{\"title\":\"a\",\"meta\":1e999}", "body",
                 "not valid JSON");
    s_destroy(f);
}

Test(gw_request, deep_and_huge_bodies_are_refused_cleanly)
{
    fixture_t *f = s_new();
    /* 24 levels in all are fine; 25 are not; 100 000 do not crash. */
    char ok[256], deep[256];
    int n = snprintf(ok, sizeof ok, "{\"title\":\"a\",\"meta\":");
    memcpy(deep, ok, (size_t)n);
    int m = n;
    for (int i = 0; i < GW_JSON_MAX_DEPTH - 1; i++)
        ok[n++] = '[';
    for (int i = 0; i < GW_JSON_MAX_DEPTH; i++)
        deep[m++] = '[';
    for (int i = 0; i < GW_JSON_MAX_DEPTH - 1; i++)
        ok[n++] = ']';
    for (int i = 0; i < GW_JSON_MAX_DEPTH; i++)
        deep[m++] = ']';
    ok[n++] = '}';
    deep[m++] = '}';
    ok[n] = deep[m] = '\0';
    cr_assert_eq(s_pack(f, "POST", "/v1/tracks", NULL, ok), 0, "%s", f->err.detail);
    s_expect_400(f, "POST", "/v1/tracks", NULL, deep, "body", "nested deeper than 24");

    size_t big = 100000;
    char *abyss = malloc(2 * big + 1);
    memset(abyss, '[', big);
    memset(abyss + big, ']', big);
    abyss[2 * big] = '\0';
    cr_assert_eq(s_pack(f, "POST", "/v1/tracks", NULL, abyss), MB_EINVAL);
    cr_assert_str_eq(f->err.field, "body");
    free(abyss);

    /* A 1 MiB array of numbers is packed whole. */
    size_t count = 200000;
    char *huge = malloc(count * 5 + 64);
    size_t len = (size_t)sprintf(huge, "{\"title\":\"a\",\"tags\":[");
    for (size_t i = 0; i < count; i++)
        len += (size_t)sprintf(huge + len, "%s%zu", i ? "," : "", i % 1000);
    strcpy(huge + len, "]}");
    cr_assert_eq(s_pack(f, "POST", "/v1/tracks", NULL, huge), 0, "%s", f->err.detail);
    cr_assert_eq(mb_map_get(mb_map_get(f->req.args, "body"), "tags")->via.array.size, count);
    free(huge);
    s_destroy(f);
}

Test(gw_request, optional_body_and_any_schema)
{
    fixture_t *f = s_new();
    cr_assert_eq(s_pack(f, "PUT", "/v1/notes", NULL, NULL), 0);
    cr_assert_eq(f->req.args->via.map.size, 0, "an optional body left out");
    cr_assert_eq(s_pack(f, "PUT", "/v1/notes", NULL, "\"just a string\""), 0);
    cr_assert(mb_obj_str_eq(mb_map_get(f->req.args, "body"), "just a string"));
    /* A body sent to an operation without one is not passed on. */
    cr_assert_eq(s_pack(f, "GET", "/v1/albums/a/tracks", NULL, "{\"x\":1}"), 0);
    cr_assert_null(mb_map_get(f->req.args, "body"));
    s_destroy(f);
}

/*  The envelope's auth comes from the verified token only: a query
    parameter or a body field named auth stays inside args. */
Test(gw_request, auth_only_from_the_token)
{
    fixture_t *f = s_new();
    query_t q = {{{"auth", "admin"}}};
    const char *body = "{\"auth\":{\"user\":\"mallory\",\"roles\":[\"admin\"]}}";
    cr_assert_eq(s_pack(f, "POST", "/v1/me", &q, body), 0, "%s", f->err.detail);
    cr_assert_null(f->req.auth, "no token, no auth, whatever the client sent");
    cr_assert(mb_obj_str_eq(mb_map_get(f->req.args, "auth"), "admin"), "a plain argument");
    cr_assert_not_null(mb_map_get(mb_map_get(f->req.args, "body"), "auth"));

    mb_jwt_claims_t claims = {
        .sub = "u1", .sid = "s1", .tier = "premium", .roles = MB_ROLE_USER | MB_ROLE_ADMIN};
    f->auth = &claims;
    cr_assert_eq(s_pack(f, "POST", "/v1/me", &q, body), 0, "%s", f->err.detail);
    cr_assert_not_null(f->req.auth);
    cr_assert_eq(f->req.auth->via.map.size, 4, "user, tier, roles, sid");
    mb_jwt_claims_t back;
    cr_assert_eq(mb_jwt_read_auth(f->req.auth, &back), 0);
    cr_assert_str_eq(back.sub, "u1");
    cr_assert_str_eq(back.sid, "s1");
    cr_assert_str_eq(back.tier, "premium");
    cr_assert_eq(back.roles, MB_ROLE_USER | MB_ROLE_ADMIN);
    cr_assert(mb_obj_str_eq(mb_map_get(f->req.args, "auth"), "admin"), "args unchanged");
    s_destroy(f);
}

/*  x-headers: a request header travels as a string arg of the name the
    operation gives it; an absent header is left out. */
Test(gw_request, headers_become_args)
{
    fixture_t *f = s_new();
    static const char *const headers[][2] = {
        {"if-match", "\"snap-7\""}, {"X-Other", "not asked for"}, {NULL, NULL}};
    s_headers = headers;
    cr_assert_eq(s_pack(f, "PUT", "/v1/playlists/p1", NULL, "{}"), 0, "%s", f->err.detail);
    const msgpack_object *args = f->req.args;
    cr_assert_eq(args->via.map.size, 3, "id, if_match, body");
    cr_assert(mb_obj_str_eq(mb_map_get(args, "if_match"), "\"snap-7\""));
    cr_assert_null(mb_map_get(args, "client"), "absent headers are left out");
    cr_assert_null(mb_map_get(args, "X-Other"));

    s_headers = NULL;
    cr_assert_eq(s_pack(f, "PUT", "/v1/playlists/p1", NULL, "{}"), 0);
    cr_assert_null(mb_map_get(f->req.args, "if_match"));

    static const char *const bad[][2] = {{"X-Client", "caf\xe9"}, {NULL, NULL}};
    s_headers = bad;
    s_expect_400(f, "PUT", "/v1/playlists/p1", NULL, "{}", "client", "UTF-8");
    s_headers = NULL;
    s_destroy(f);
}

/*  x-upload: the stored body travels as args.blob {hash, size}; no body
    arg, whatever bytes came. */
Test(gw_request, upload_carries_the_blob)
{
    fixture_t *f = s_new();
    const char *hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    f->blob_hex = hex;
    f->blob_size = 777;
    cr_assert_eq(s_pack(f, "PUT", "/v1/tracks/t1/audio", NULL, "RIFF...."), 0, "%s", f->err.detail);
    const msgpack_object *args = f->req.args;
    cr_assert_eq(args->via.map.size, 2, "id, blob");
    cr_assert(mb_obj_str_eq(mb_map_get(args, "id"), "t1"));
    const msgpack_object *blob = mb_map_get(args, "blob");
    cr_assert_not_null(blob);
    cr_assert(mb_obj_str_eq(mb_map_get(blob, "hash"), hex));
    int64_t size;
    cr_assert(mb_obj_int(mb_map_get(blob, "size"), &size));
    cr_assert_eq(size, 777);
    cr_assert_null(mb_map_get(args, "body"));
    /* Routes without x-upload never carry a blob. */
    cr_assert_eq(s_pack(f, "PUT", "/v1/notes", NULL, NULL), 0);
    cr_assert_null(mb_map_get(f->req.args, "blob"));
    s_destroy(f);
}
