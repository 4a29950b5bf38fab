/*  routes: the route table built from an OpenAPI document, and matching. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "openapi_embed.h"
#include "routes.h"

static const char s_doc[] =
    "{\"openapi\":\"3.1.0\",\"paths\":{"
    "\"/v1/tracks\":{"
    "  \"get\":{\"x-service\":\"catalog\",\"x-op\":\"track.get_many\",\"x-access\":\"public\","
    "    \"parameters\":[{\"$ref\":\"#/components/parameters/Ids\"}]},"
    "  \"post\":{\"x-service\":\"catalog\",\"x-op\":\"track.create\",\"x-access\":\"admin\","
    "    \"requestBody\":{\"required\":true,\"content\":{\"application/json\":"
    "      {\"schema\":{\"$ref\":\"#/components/schemas/Track\"}}}}}},"
    "\"/v1/tracks/{id}\":{"
    "  \"parameters\":[{\"name\":\"id\",\"in\":\"path\",\"required\":true,"
    "                   \"schema\":{\"type\":\"string\",\"maxLength\":4}}],"
    "  \"get\":{\"x-service\":\"catalog\",\"x-op\":\"track.get\"},"
    "  \"patch\":{\"x-service\":\"catalog\",\"x-op\":\"track.update\",\"x-access\":\"user\"},"
    "  \"delete\":{\"x-service\":\"catalog\",\"x-op\":\"track.delete\",\"x-access\":\"premium\"}},"
    "\"/v1/tracks/contains\":{"
    "  \"get\":{\"x-service\":\"library\",\"x-op\":\"track.contains\"}},"
    "\"/v1/{kind}/{id}/x\":{"
    "  \"get\":{\"x-service\":\"misc\",\"x-op\":\"any.x\"}},"
    "\"/v1/albums/{id}/x\":{"
    "  \"get\":{\"x-service\":\"catalog\",\"x-op\":\"album.x\"}}"
    "},\"components\":{"
    "\"parameters\":{\"Ids\":{\"name\":\"ids\",\"in\":\"query\",\"required\":true,"
    "  \"style\":\"form\",\"explode\":false,"
    "  \"schema\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}}}},"
    "\"schemas\":{\"Track\":{\"type\":\"object\",\"required\":[\"title\"],"
    "  \"properties\":{\"title\":{\"type\":\"string\"}}}}}}";

static gw_routes_t *s_load(const char *doc)
{
    char err[256] = "";
    gw_routes_t *routes = gw_routes_new(doc, strlen(doc), err, sizeof err);
    cr_assert_not_null(routes, "load failed: %s", err);
    return routes;
}

/*  Usage: build the table once, then match each request's method and path. */
Test(gw_routes, usage)
{
    gw_routes_t *routes = s_load(s_doc);
    gw_match_t m;
    cr_assert_eq(gw_routes_match(routes, "GET", "/v1/tracks/abc", &m), 0);
    cr_assert_str_eq(m.route->service, "catalog");
    cr_assert_str_eq(m.route->op, "track.get");
    cr_assert_eq(m.route->n_params, 1);
    size_t len;
    const char *id = gw_match_param(&m, &m.route->params[0], &len);
    cr_assert_eq(len, 3);
    cr_assert(!memcmp(id, "abc", 3));
    gw_routes_destroy(&routes);
    cr_assert_null(routes);
    gw_routes_destroy(&routes); /* safe twice */
}

Test(gw_routes, literal_beats_parameter)
{
    gw_routes_t *routes = s_load(s_doc);
    gw_match_t m;
    cr_assert_eq(gw_routes_match(routes, "GET", "/v1/tracks/contains", &m), 0);
    cr_assert_str_eq(m.route->op, "track.contains");
    cr_assert_eq(gw_routes_match(routes, "GET", "/v1/tracks/container", &m), 0);
    cr_assert_str_eq(m.route->op, "track.get");
    /* The first segment that differs decides: albums (literal) over {kind}. */
    cr_assert_eq(gw_routes_match(routes, "GET", "/v1/albums/7/x", &m), 0);
    cr_assert_str_eq(m.route->op, "album.x");
    cr_assert_eq(gw_routes_match(routes, "GET", "/v1/artists/7/x", &m), 0);
    cr_assert_str_eq(m.route->op, "any.x");
    /* A literal path without the method is a 405 even if a template has it. */
    cr_assert_eq(gw_routes_match(routes, "DELETE", "/v1/tracks/contains", &m), 405);
    cr_assert_str_eq(m.allow, "GET");
    gw_routes_destroy(&routes);
}

Test(gw_routes, not_found_versus_method_not_allowed)
{
    gw_routes_t *routes = s_load(s_doc);
    gw_match_t m;
    cr_assert_eq(gw_routes_match(routes, "PUT", "/v1/tracks/abc", &m), 405);
    cr_assert_null(m.route);
    cr_assert_str_eq(m.allow, "GET, PATCH, DELETE");
    cr_assert_eq(gw_routes_match(routes, "BREW", "/v1/tracks", &m), 405);
    cr_assert_str_eq(m.allow, "GET, POST");
    cr_assert_eq(gw_routes_match(routes, "GET", "/v1/nothing", &m), 404);
    cr_assert_eq(gw_routes_match(routes, "GET", "/v1/tracks/", &m), 404,
                 "a parameter never matches an empty segment");
    cr_assert_eq(gw_routes_match(routes, "GET", "/v1//x", &m), 404);
    cr_assert_eq(gw_routes_match(routes, "GET", "/v1/tracks/abc/def", &m), 404);
    cr_assert_eq(gw_routes_match(routes, "GET", "", &m), 404);
    cr_assert_eq(gw_routes_match(routes, "GET", "v1/tracks", &m), 404);
    cr_assert_eq(gw_routes_match(routes, "GET", "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r", &m), 404);
    gw_routes_destroy(&routes);
}

Test(gw_routes, parameters_access_and_body)
{
    gw_routes_t *routes = s_load(s_doc);
    gw_match_t m;
    cr_assert_eq(gw_routes_match(routes, "GET", "/v1/tracks", &m), 0);
    const gw_route_t *r = m.route;
    cr_assert_eq(r->access, GW_ACCESS_PUBLIC);
    cr_assert_eq(r->n_params, 1);
    cr_assert_str_eq(r->params[0].name, "ids");
    cr_assert_eq(r->params[0].in, GW_IN_QUERY);
    cr_assert(r->params[0].required);
    cr_assert(r->params[0].split);
    cr_assert_not(r->has_body);

    cr_assert_eq(gw_routes_match(routes, "POST", "/v1/tracks", &m), 0);
    cr_assert_eq(m.route->access, GW_ACCESS_ADMIN);
    cr_assert(m.route->has_body);
    cr_assert(m.route->body_required);
    cr_assert_not_null(m.route->body_schema);

    cr_assert_eq(gw_routes_match(routes, "PATCH", "/v1/tracks/x", &m), 0);
    cr_assert_eq(m.route->access, GW_ACCESS_USER);
    cr_assert_eq(m.route->n_params, 1, "path-item parameters are inherited");
    cr_assert_eq(gw_routes_match(routes, "DELETE", "/v1/tracks/x", &m), 0);
    cr_assert_eq(m.route->access, GW_ACCESS_PREMIUM);

    /* A template parameter nobody declared is still a (string) parameter. */
    cr_assert_eq(gw_routes_match(routes, "GET", "/v1/songs/9/x", &m), 0);
    cr_assert_eq(m.route->n_params, 2);
    cr_assert_str_eq(m.route->params[0].name, "kind");
    cr_assert_str_eq(m.route->params[1].name, "id");
    cr_assert_eq(gw_routes_size(routes), 8);
    cr_assert_str_eq(gw_routes_at(routes, 0)->op, "track.get_many");
    cr_assert_null(gw_routes_at(routes, 8));
    gw_routes_destroy(&routes);
}

static void s_expect_error(const char *doc, const char *needle)
{
    char err[256] = "";
    gw_routes_t *routes = gw_routes_new(doc, strlen(doc), err, sizeof err);
    cr_assert_null(routes, "loaded: %s", doc);
    cr_assert(strstr(err, needle), "error '%s' lacks '%s'", err, needle);
}

Test(gw_routes, bad_documents_are_refused)
{
    s_expect_error("{\"paths\":", "not valid JSON");
    s_expect_error("{\"openapi\":\"3.1.0\"}", "no paths");
    s_expect_error("{\"paths\":{\"/a\":{\"get\":{\"x-op\":\"a.b\"}}}}", "x-service and x-op");
    s_expect_error("{\"paths\":{\"/a\":{\"get\":{\"x-service\":\"s\",\"x-op\":\"a\","
                   "\"x-access\":\"root\"}}}}",
                   "x-access");
    s_expect_error("{\"paths\":{\"/a\":{\"post\":{\"x-service\":\"s\",\"x-op\":\"a\","
                   "\"requestBody\":{\"content\":{\"application/json\":"
                   "{\"schema\":{\"$ref\":\"#/components/schemas/Nope\"}}}}}}}}",
                   "does not resolve");
    s_expect_error("{\"paths\":{\"/a\":{\"post\":{\"x-service\":\"s\",\"x-op\":\"a\","
                   "\"requestBody\":{\"content\":{\"application/json\":"
                   "{\"schema\":{\"type\":\"string\",\"pattern\":\"([\"}}}}}}}}",
                   "does not compile");
    s_expect_error("{\"paths\":{\"/a\":{\"post\":{\"x-service\":\"s\",\"x-op\":\"a\","
                   "\"requestBody\":{\"content\":{\"text/plain\":{}}}}}}}",
                   "application/json");
    s_expect_error("{\"paths\":{\"/a/{id}.json\":{\"get\":{\"x-service\":\"s\",\"x-op\":\"a\"}}}}",
                   "literal or {name}");
    s_expect_error("{\"paths\":{\"/a/{x}\":{},\"/a/{y}\":{}}}", "match the same requests");
    s_expect_error("{\"paths\":{\"/a\":{\"get\":{\"x-service\":\"s\",\"x-op\":\"a\","
                   "\"parameters\":[{\"name\":\"id\",\"in\":\"path\"}]}}}}",
                   "not in the template");
    s_expect_error("{\"paths\":{\"/a\":{\"get\":{\"x-service\":\"s\",\"x-op\":\"a\","
                   "\"parameters\":[{\"name\":\"t\",\"in\":\"query\","
                   "\"schema\":{\"type\":\"array\"}}]}}}}",
                   "explode false");
}

/*  The document the gateway is built with loads and routes the catalog. */
Test(gw_routes, embedded_openapi_document)
{
    char err[256] = "";
    gw_routes_t *routes =
        gw_routes_new((const char *)gw_openapi_json, gw_openapi_json_len, err, sizeof err);
    cr_assert_not_null(routes, "embedded document: %s", err);
    gw_match_t m;
    cr_assert_eq(gw_routes_match(routes, "GET", "/healthz", &m), 0);
    cr_assert_str_eq(m.route->service, "gateway");
    cr_assert_eq(gw_routes_match(routes, "GET", "/v1/tracks/4tZwfgrHOc3mvqYlEYSvVi", &m), 0);
    cr_assert_str_eq(m.route->service, "catalog");
    cr_assert_str_eq(m.route->op, "track.get");
    cr_assert_eq(gw_routes_match(routes, "POST", "/v1/artists", &m), 0);
    cr_assert(m.route->has_body);
    cr_assert_eq(gw_routes_match(routes, "PUT", "/v1/artists", &m), 405);
    cr_assert_eq(gw_routes_match(routes, "PUT", "/v1/tracks/t1/audio", &m), 0);
    cr_assert(m.route->upload, "audio masters are uploads");
    cr_assert_not(m.route->has_body);
    cr_assert_str_eq(m.route->service, "transcode");
    cr_assert_eq(m.route->access, GW_ACCESS_ADMIN);
    gw_routes_destroy(&routes);
}

/*  x-headers: request headers copied into args under the given names. */
Test(gw_routes, header_args)
{
    gw_routes_t *routes =
        s_load("{\"paths\":{\"/p/{id}\":{\"put\":{\"x-service\":\"playlists\",\"x-op\":\"p.put\","
               "  \"x-headers\":{\"If-Match\":\"if_match\"},"
               "  \"requestBody\":{\"content\":{\"application/json\":{}}}}}}}");
    gw_match_t m;
    cr_assert_eq(gw_routes_match(routes, "PUT", "/p/x", &m), 0);
    cr_assert_eq(m.route->n_headers, 1);
    cr_assert_str_eq(m.route->headers[0].header, "If-Match");
    cr_assert_str_eq(m.route->headers[0].arg, "if_match");
    gw_routes_destroy(&routes);

#define S_OP(x) "{\"paths\":{\"/a/{id}\":{\"get\":{\"x-service\":\"s\",\"x-op\":\"a\"," x "}}}}"
    s_expect_error(S_OP("\"x-headers\":[\"If-Match\"]"), "x-headers must map");
    s_expect_error(S_OP("\"x-headers\":{}"), "x-headers must map");
    s_expect_error(S_OP("\"x-headers\":{\"If Match\":\"m\"}"), "must be a token");
    s_expect_error(S_OP("\"x-headers\":{\"If-Match\":\"If-Match\"}"), "must be a token");
    s_expect_error(S_OP("\"x-headers\":{\"If-Match\":\"id\"}"), "no parameter, body or blob");
    s_expect_error(S_OP("\"x-headers\":{\"If-Match\":\"body\"}"), "no parameter, body or blob");
    s_expect_error(S_OP("\"x-headers\":{\"If-Match\":\"a\",\"if-match\":\"b\"}"), "twice");
#undef S_OP
}

/*  x-timeout-ms: an operation's own deadline. */
Test(gw_routes, operation_timeout)
{
    gw_routes_t *routes =
        s_load("{\"paths\":{\"/a\":{\"put\":{\"x-service\":\"s\",\"x-op\":\"a\","
               "\"x-timeout-ms\":30000}},\"/b\":{\"get\":{\"x-service\":\"s\",\"x-op\":\"b\"}}}}");
    gw_match_t m;
    cr_assert_eq(gw_routes_match(routes, "PUT", "/a", &m), 0);
    cr_assert_eq(m.route->timeout_ms, 30000);
    cr_assert_eq(gw_routes_match(routes, "GET", "/b", &m), 0);
    cr_assert_eq(m.route->timeout_ms, 0, "the gateway's");
    gw_routes_destroy(&routes);
#define S_OP(x) "{\"paths\":{\"/a\":{\"get\":{\"x-service\":\"s\",\"x-op\":\"a\"," x "}}}}"
    s_expect_error(S_OP("\"x-timeout-ms\":0"), "x-timeout-ms");
    s_expect_error(S_OP("\"x-timeout-ms\":3600001"), "x-timeout-ms");
    s_expect_error(S_OP("\"x-timeout-ms\":\"30s\""), "x-timeout-ms");
    s_expect_error(S_OP("\"x-timeout-ms\":1.5"), "x-timeout-ms");
#undef S_OP
}

/*  x-upload: the body goes to the blob store, typed by x-upload's types
    or else by the requestBody's media types. */
Test(gw_routes, uploads)
{
    gw_routes_t *routes = s_load(
        "{\"paths\":{"
        "\"/u1\":{\"put\":{\"x-service\":\"t\",\"x-op\":\"u1\","
        "  \"x-upload\":{\"max\":1000,\"types\":[\"audio/flac\",\"audio/*\"]},"
        "  \"requestBody\":{\"content\":{\"audio/*\":{}}}}},"
        "\"/u2\":{\"put\":{\"x-service\":\"t\",\"x-op\":\"u2\",\"x-upload\":{},"
        "  \"requestBody\":{\"required\":false,"
        "    \"content\":{\"image/jpeg\":{},\"image/png\":{}}}}},"
        "\"/u3\":{\"put\":{\"x-service\":\"t\",\"x-op\":\"u3\",\"x-upload\":{\"types\":\"*\"}}}"
        "}}");
    gw_match_t m;
    cr_assert_eq(gw_routes_match(routes, "PUT", "/u1", &m), 0);
    const gw_route_t *r = m.route;
    cr_assert(r->upload);
    cr_assert(r->body_required, "an upload's body is required unless it says otherwise");
    cr_assert_eq(r->upload_max, 1000);
    cr_assert_eq(r->n_upload_types, 2);
    cr_assert(gw_media_type_listed("audio/flac", r->upload_types, r->n_upload_types));
    cr_assert(gw_media_type_listed("Audio/MPEG; rate=44100", r->upload_types, r->n_upload_types));
    cr_assert_not(gw_media_type_listed("audio/", r->upload_types, r->n_upload_types));
    cr_assert_not(gw_media_type_listed("audiox/flac", r->upload_types, r->n_upload_types));
    cr_assert_not(gw_media_type_listed("video/mp4", r->upload_types, r->n_upload_types));
    cr_assert_not(gw_media_type_listed(NULL, r->upload_types, r->n_upload_types));
    cr_assert_eq(gw_routes_match(routes, "PUT", "/u2", &m), 0);
    r = m.route;
    cr_assert_not(r->body_required);
    cr_assert_eq(r->upload_max, 0, "the gateway's limit alone");
    cr_assert_eq(r->n_upload_types, 2, "types from the requestBody");
    cr_assert(gw_media_type_listed("image/png", r->upload_types, r->n_upload_types));
    cr_assert_eq(gw_routes_match(routes, "PUT", "/u3", &m), 0);
    cr_assert_eq(m.route->n_upload_types, 0);
    cr_assert(gw_media_type_listed(NULL, NULL, 0), "any type, even none");
    gw_routes_destroy(&routes);

#define S_OP(x) "{\"paths\":{\"/a\":{\"put\":{\"x-service\":\"s\",\"x-op\":\"a\"," x "}}}}"
    s_expect_error(S_OP("\"x-upload\":{\"max\":0}"), "x-upload must be");
    s_expect_error(S_OP("\"x-upload\":{\"max\":\"big\"}"), "x-upload must be");
    s_expect_error(S_OP("\"x-upload\":{\"types\":[]}"), "non-empty array");
    s_expect_error(S_OP("\"x-upload\":{\"types\":[\"audio\"]}"), "not a media type");
    s_expect_error(S_OP("\"x-upload\":{\"types\":[\"audio/*x\"]}"), "not a media type");
    s_expect_error(S_OP("\"x-upload\":{},\"requestBody\":{\"content\":{\"application/json\":{}}}"),
                   "cannot be application/json");
#undef S_OP
}

/*  Non-JSON media types of 2xx responses mark raw replies. */
Test(gw_routes, raw_response_types)
{
    gw_routes_t *routes =
        s_load("{\"paths\":{"
               "\"/r\":{\"get\":{\"x-service\":\"s\",\"x-op\":\"r\",\"responses\":{"
               "  \"200\":{\"content\":{\"text/csv\":{},\"application/json\":{}}},"
               "  \"202\":{\"$ref\":\"#/components/responses/Pdf\"},"
               "  \"400\":{\"content\":{\"application/problem+json\":{}}}}}},"
               "\"/j\":{\"get\":{\"x-service\":\"s\",\"x-op\":\"j\",\"responses\":{"
               "  \"200\":{\"content\":{\"application/json\":{}}}}}}},"
               "\"components\":{\"responses\":{\"Pdf\":{\"content\":{\"application/pdf\":{}}}}}}");
    gw_match_t m;
    cr_assert_eq(gw_routes_match(routes, "GET", "/r", &m), 0);
    cr_assert_eq(m.route->n_raw_types, 2, "text/csv and application/pdf; not JSON, not errors");
    cr_assert_str_eq(m.route->raw_types[0], "text/csv");
    cr_assert_str_eq(m.route->raw_types[1], "application/pdf");
    cr_assert_eq(gw_routes_match(routes, "GET", "/j", &m), 0);
    cr_assert_eq(m.route->n_raw_types, 0);
    gw_routes_destroy(&routes);
}

/*  x-rate-limit: a budget and the keys a request is counted on. */
Test(gw_routes, rate_limit)
{
    gw_routes_t *routes =
        s_load("{\"paths\":{"
               "\"/login\":{\"post\":{\"x-service\":\"users\",\"x-op\":\"auth.login\","
               "  \"x-rate-limit\":{\"budget\":\"signin\",\"keys\":[\"addr\",\"body.email\"]},"
               "  \"requestBody\":{\"content\":{\"application/json\":{}}}}},"
               "\"/me/password\":{\"post\":{\"x-service\":\"users\",\"x-op\":\"me.password\","
               "  \"x-access\":\"user\","
               "  \"x-rate-limit\":{\"budget\":\"signin\",\"keys\":[\"user\"]}}},"
               "\"/plain\":{\"get\":{\"x-service\":\"s\",\"x-op\":\"a\"}}}}");
    gw_match_t m;
    cr_assert_eq(gw_routes_match(routes, "POST", "/login", &m), 0);
    cr_assert_str_eq(m.route->rate_budget, "signin");
    cr_assert_eq(m.route->n_rate_keys, 2);
    cr_assert_eq(m.route->rate_keys[0].kind, GW_RATE_ADDR);
    cr_assert_str_eq(m.route->rate_keys[0].name, "addr");
    cr_assert_eq(m.route->rate_keys[1].kind, GW_RATE_BODY);
    cr_assert_str_eq(m.route->rate_keys[1].name, "body.email");
    cr_assert_str_eq(m.route->rate_keys[1].field, "email");
    cr_assert(m.route->rate_body, "counting waits for the body");
    cr_assert_eq(gw_routes_match(routes, "POST", "/me/password", &m), 0);
    cr_assert_eq(m.route->rate_keys[0].kind, GW_RATE_USER);
    cr_assert_not(m.route->rate_body);
    cr_assert_eq(gw_routes_match(routes, "GET", "/plain", &m), 0);
    cr_assert_null(m.route->rate_budget, "the default budget applies");
    cr_assert_eq(m.route->n_rate_keys, 0);
    gw_routes_destroy(&routes);

#define S_OP(rate) "{\"paths\":{\"/a\":{\"get\":{\"x-service\":\"s\",\"x-op\":\"a\"," rate "}}}}"
    s_expect_error(S_OP("\"x-rate-limit\":\"signin\""), "x-rate-limit must be");
    s_expect_error(S_OP("\"x-rate-limit\":{\"keys\":[\"addr\"]}"), "x-rate-limit must be");
    s_expect_error(S_OP("\"x-rate-limit\":{\"budget\":\"Sign-In\",\"keys\":[\"addr\"]}"),
                   "x-rate-limit must be");
    s_expect_error(S_OP("\"x-rate-limit\":{\"budget\":\"s\",\"keys\":[\"addr\"],\"x\":1}"),
                   "x-rate-limit must be");
    s_expect_error(S_OP("\"x-rate-limit\":{\"budget\":\"s\",\"keys\":[]}"), "1..4 keys");
    s_expect_error(
        S_OP("\"x-rate-limit\":{\"budget\":\"s\",\"keys\":[\"addr\",\"addr\",\"addr\",\"addr\","
             "\"addr\"]}"),
        "1..4 keys");
    s_expect_error(S_OP("\"x-rate-limit\":{\"budget\":\"s\",\"keys\":[\"ip\"]}"), "key 'ip'");
    s_expect_error(S_OP("\"x-rate-limit\":{\"budget\":\"s\",\"keys\":[\"user\"]}"),
                   "not on a public route");
    s_expect_error(S_OP("\"x-rate-limit\":{\"budget\":\"s\",\"keys\":[\"body.email\"]}"),
                   "only with a request body");
    s_expect_error(S_OP("\"x-rate-limit\":{\"budget\":\"s\",\"keys\":[3]}"), "not a string");
#undef S_OP
}

/*  The built-in document keeps its own promises: every route that needs
    a token says so in `security` and documents its 401, the ones for
    premium or admin their 403, the rate-limited ones their 429; catalog
    writes are for admins. */
Test(gw_routes, embedded_document_access_is_consistent)
{
    json_error_t jerr;
    json_t *doc = json_loadb((const char *)gw_openapi_json, gw_openapi_json_len, 0, &jerr);
    cr_assert_not_null(doc, "%s", jerr.text);
    const char *path;
    json_t *item;
    size_t checked = 0;
    json_object_foreach(json_object_get(doc, "paths"), path, item)
    {
        const char *method;
        json_t *op;
        json_object_foreach(item, method, op)
        {
            if (!json_is_object(op) || !json_object_get(op, "x-op"))
                continue;
            const char *access = json_string_value(json_object_get(op, "x-access"));
            cr_assert_not_null(access, "%s %s: x-access is explicit", method, path);
            const json_t *responses = json_object_get(op, "responses");
            const json_t *security = json_object_get(op, "security");
            bool bearer = json_is_array(security) &&
                          json_object_get(json_array_get(security, 0), "bearerAuth");
            if (strcmp(access, "public") != 0) {
                cr_assert(bearer, "%s %s: %s needs security bearerAuth", method, path, access);
                cr_assert_not_null(json_object_get(responses, "401"), "%s %s: 401", method, path);
            } else {
                cr_assert_not(bearer, "%s %s: public, yet bearerAuth", method, path);
            }
            if (!strcmp(access, "premium") || !strcmp(access, "admin"))
                cr_assert_not_null(json_object_get(responses, "403"), "%s %s: 403", method, path);
            const char *service = json_string_value(json_object_get(op, "x-service"));
            if (service && strcmp(service, "gateway"))
                cr_assert_not_null(json_object_get(responses, "429"),
                                   "%s %s: every bus route is rate-limited: 429", method, path);
            /* Reads are mostly public (a stream grant needs an account,
               the list of audio versions is for admins). */
            if (service && !strcmp(service, "catalog") && strcmp(method, "get"))
                cr_assert_str_eq(access, "admin", "%s %s", method, path);
            checked++;
        }
    }
    cr_assert_gt(checked, 20);
    json_decref(doc);
}
