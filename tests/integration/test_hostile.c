/*  integration: what a careless or hostile client sends, to every route.

    Every operation of schemas/openapi.json gets, on a stack running every
    actor: malformed JSON, bodies of the wrong type, each body property in
    turn replaced by a value of the wrong type or an absurd size (the rest
    of the body made from the schema so the request gets past the first
    check), a body over the size limit, the wrong content type, hostile
    path parameters (unknown ids, traversal, NUL, invalid UTF-8, 4000
    characters) and absurd query strings, with an admin's token, with none
    and with a forged one. The contract under test is the one every
    route shares: an answer always comes, it is never a 5xx while every
    worker runs, and an error is a problem document. At the end every
    process is still running and the objects made first still read back.

    Data kept safe: requests that a client may legitimately send without a
    body (DELETE of a real object, logout) go to unknown ids only.

    The same on the bus, for batch jobs that bypass the gateway: every op
    schemas/bus.md lists (its `## service` tables) and every x-op of
    openapi.json gets undecodable bytes, envelopes without args or auth,
    and each argument in turn replaced by a value of every msgpack type
    and absurd sizes, with an admin's auth map. Each must answer (never
    `unknown_op`: the document and the code agree) with a status below 500. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "it.h"
#include "mb_client.h"
#include "mb_envelope.h"
#include "mb_error.h"
#include "mb_msgpack.h"

/* Answers awaited per request: long enough for a loaded CI machine. */
#define S_TIMEOUT_MS 15000

static it_stack_t *s_stack;
static json_t *s_api;        /* schemas/openapi.json */
static char *s_artist_id;    /* objects made before the sweep */
static char *s_album_id;
static char *s_track_id;
static char *s_playlist_id;
static int s_requests;       /* sent by the sweep */
static int s_status_seen[6]; /* by class: [2] 2xx ... [5] 5xx */

/* ---- the schema ------------------------------------------------------------ */

/* The schema object `schema` stands for, following a local $ref. */
static const json_t *s_deref(const json_t *schema)
{
    const char *ref = json_string_value(json_object_get(schema, "$ref"));
    const char *prefix = "#/components/schemas/";
    if (!ref || strncmp(ref, prefix, strlen(prefix)) != 0)
        return schema;
    const json_t *schemas = json_object_get(json_object_get(s_api, "components"), "schemas");
    const json_t *target = json_object_get(schemas, ref + strlen(prefix));
    return target ? s_deref(target) : schema;
}

static const char *s_type(const json_t *schema)
{
    const json_t *type = json_object_get(schema, "type");
    if (json_is_array(type)) /* ["string", "null"]: the first is the real one */
        type = json_array_get(type, 0);
    return json_string_value(type);
}

/* A value `schema` would likely accept: the first enum member, strings of
   the minimum length, numbers at the minimum, objects with their required
   properties. Not always valid (patterns are not honoured); good enough
   to get past the first check so that one bad property reaches its own. */
static json_t *s_sample(const json_t *schema, int depth)
{
    schema = s_deref(schema);
    const json_t *values = json_object_get(schema, "enum");
    if (json_is_array(values) && json_array_size(values) > 0)
        return json_deep_copy(json_array_get(values, 0));
    const char *type = s_type(schema);
    if (!type || depth > 6)
        return json_null();
    if (strcmp(type, "string") == 0) {
        json_int_t min = json_integer_value(json_object_get(schema, "minLength"));
        if (min < 1)
            min = 1;
        if (min > 64)
            min = 64;
        char text[65];
        memset(text, 'a', (size_t)min);
        text[min] = '\0';
        return json_string(text);
    }
    if (strcmp(type, "integer") == 0 || strcmp(type, "number") == 0) {
        const json_t *min = json_object_get(schema, "minimum");
        return json_integer(json_is_number(min) ? (json_int_t)json_number_value(min) + 1 : 1);
    }
    if (strcmp(type, "boolean") == 0)
        return json_true();
    if (strcmp(type, "array") == 0) {
        json_t *array = json_array();
        json_int_t min = json_integer_value(json_object_get(schema, "minItems"));
        for (json_int_t i = 0; i < (min > 0 ? min : 1) && i < 4; i++)
            json_array_append_new(array, s_sample(json_object_get(schema, "items"), depth + 1));
        return array;
    }
    if (strcmp(type, "object") == 0) {
        json_t *object = json_object();
        const json_t *properties = json_object_get(schema, "properties");
        const json_t *required = json_object_get(schema, "required");
        size_t i;
        const json_t *name;
        json_array_foreach(required, i, name)
        {
            const char *key = json_string_value(name);
            if (key)
                json_object_set_new(object, key,
                                    s_sample(json_object_get(properties, key), depth + 1));
        }
        return object;
    }
    return json_null();
}

/* The JSON body schema of an operation, or NULL. */
static const json_t *s_body_schema(const json_t *op)
{
    const json_t *content = json_object_get(json_object_get(op, "requestBody"), "content");
    const json_t *schema = json_object_get(json_object_get(content, "application/json"), "schema");
    return schema ? s_deref(schema) : NULL;
}

/* ---- sending ----------------------------------------------------------------- */

/* Sends one request, checks the shared contract and returns the status. */
static long s_send(const char *bearer, const char *method, const char *path,
                   const char *content_type, const char *body, size_t len)
{
    char *url = it_stack_url(s_stack, path);
    it_http_res_t res;
    it_http_opts_t opts = {.bearer = bearer, .timeout_ms = S_TIMEOUT_MS};
    it_http_ex(&res, method, url, content_type, body, len, &opts);
    s_requests++;
    char what[700];
    snprintf(what, sizeof what, "%s %.200s with %zu bytes of %s (%.80s)", method, path, len,
             content_type ? content_type : "nothing", body ? body : "");
    cr_assert_neq(res.status, 0, "%s: no answer: %s", what, res.error);
    cr_assert_lt(res.status, 500, "%s: answered %ld: %.400s", what, res.status, res.body);
    s_status_seen[res.status / 100]++;
    if (getenv("IT_HOSTILE_SHOW_2XX") && res.status < 300)
        fprintf(stderr, "hostile: %ld for %s\n", res.status, what);
    if ((res.status == 414 || res.status == 431) && strlen(url) > 8192)
        ; /* libmicrohttpd's own answer when the request outgrows a connection's memory */
    else if (res.status >= 400 && strcmp(method, "HEAD") == 0) /* the headers of a problem */
        cr_assert(res.content_type && strcmp(res.content_type, "application/problem+json") == 0,
                  "%s: %s", what, res.content_type ? res.content_type : "no content type");
    else if (res.status >= 400)
        it_assert_problem(&res, res.status, what);
    long status = res.status;
    it_http_res_release(&res);
    free(url);
    return status;
}

static void s_send_json(const char *bearer, const char *method, const char *path,
                        const json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    cr_assert(text);
    s_send(bearer, method, path, "application/json", text, strlen(text));
    free(text);
}

/* Bodies that are not JSON, or not the JSON any route takes. */
static const char *const s_broken_bodies[] = {
    "{",           "{\"a\":",    "[1,2",  "nul",      "{\"a\":1}}", "\"\xff\xfe\"",
    "{\"\xc3\":1}", "null",      "[]",    "\"text\"", "12",         "-1e999",
    "{\"a\":1,\"a\":2}", "\xef\xbb\xbf{}", "",
};

/* Values put in place of one property at a time. */
static json_t *s_bad_value(int which)
{
    static char huge[70001];
    switch (which) {
    case 0:
        return json_pack("{s:[i]}", "x", 1);
    case 1:
        return json_pack("[s,i]", "x", 2);
    case 2:
        return json_real(1.5e308);
    case 3:
        return json_integer(-9007199254740993LL);
    case 4:
        return json_true();
    case 5:
        return json_null();
    case 6:
        return json_string("");
    case 7:
        memset(huge, 'x', sizeof huge - 1);
        return json_string(huge);
    case 8:
        return json_stringn("a\0b", 3);
    default:
        return NULL;
    }
}

/* Everything for one operation, with `path` already made concrete. */
static void s_sweep_body(const char *bearer, const char *method, const char *path,
                         const json_t *op)
{
    for (size_t i = 0; i < sizeof s_broken_bodies / sizeof s_broken_bodies[0]; i++)
        s_send(bearer, method, path, "application/json", s_broken_bodies[i],
               strlen(s_broken_bodies[i]));
    s_send(bearer, method, path, "text/plain", "hello", 5);
    s_send(bearer, method, path, "application/json; charset=latin1", "{}", 2);

    const json_t *schema = s_body_schema(op);
    if (!schema)
        return;
    json_t *base = s_sample(schema, 0);
    const json_t *properties = json_object_get(schema, "properties");
    const char *key;
    const json_t *property;
    json_object_foreach((json_t *)properties, key, property)
    {
        for (int which = 0;; which++) {
            json_t *bad = s_bad_value(which);
            if (!bad)
                break;
            json_t *body = json_is_object(base) ? json_deep_copy(base) : json_object();
            json_object_set_new(body, key, bad);
            s_send_json(bearer, method, path, body);
            json_decref(body);
        }
    }
    /* Unknown properties, and the sample's values nested absurdly deep. */
    json_t *body = json_is_object(base) ? json_deep_copy(base) : json_object();
    json_object_set_new(body, "auth", json_pack("{s:s,s:[s]}", "user_id", "x", "roles", "admin"));
    json_object_set_new(body, "zz_unknown", json_integer(1));
    s_send_json(bearer, method, path, body);
    json_decref(body);
    size_t depth = 5000;
    char *deep = malloc(2 * depth + 1);
    cr_assert(deep);
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    s_send(bearer, method, path, "application/json", deep, 2 * depth);
    free(deep);
    json_decref(base);
}

/* A body over the gateway's 1 MiB limit, sent to every route that takes
   JSON. */
static void s_sweep_huge(const char *bearer, const char *method, const char *path)
{
    size_t len = 2u << 20;
    char *body = malloc(len);
    cr_assert(body);
    memset(body, ' ', len);
    body[0] = '[';
    body[len - 1] = ']';
    s_send(bearer, method, path, "application/json", body, len);
    free(body);
}

/* Hostile values of a path parameter (already percent-encoded). */
static const char *const s_hostile_ids[] = {
    "ZZZZZZZZZZZZZZZZZZZZZZ", "..", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "a%00b", "%ff%fe",
    "%F0%9F%8E%B5", "a%20b", "-1", "0", "%25", "a;b", NULL, /* NULL: 4000 characters */
};

static const char *const s_hostile_queries[] = {
    "?limit=-1", "?limit=abc", "?limit=99999999999999999999999", "?offset=-5",
    "?offset=1e9", "?limit=1&limit=2", "?%zz=1", "?ids=,,,", "?since=abc", "?days=0",
    "?cursor=%ff", "?ids=" /* + 60 ids, added below */,
};

/* The real object a parameter of `path_template` names, or NULL. */
static const char *s_real_id(const char *path_template, const char *param)
{
    if (strcmp(param, "id") != 0)
        return NULL;
    if (strncmp(path_template, "/v1/artists/", 12) == 0)
        return s_artist_id;
    if (strncmp(path_template, "/v1/albums/", 11) == 0)
        return s_album_id;
    if (strncmp(path_template, "/v1/tracks/", 11) == 0)
        return s_track_id;
    if (strncmp(path_template, "/v1/playlists/", 14) == 0)
        return s_playlist_id;
    if (strncmp(path_template, "/v1/users/", 10) == 0)
        return it_stack_admin_id(s_stack);
    return NULL;
}

/* `path_template` with every {param} replaced: by the real object when
   `value` is NULL and there is one, else by `value` (NULL: "nope"). */
static char *s_fill(const char *path_template, const char *value)
{
    size_t size = strlen(path_template) + 8 * 4096;
    char *out = malloc(size), *o = out;
    cr_assert(out);
    for (const char *p = path_template; *p;) {
        if (*p != '{') {
            *o++ = *p++;
            continue;
        }
        const char *end = strchr(p, '}');
        cr_assert(end, "unbalanced %s", path_template);
        char param[64];
        snprintf(param, sizeof param, "%.*s", (int)(end - p - 1), p + 1);
        const char *with = value ? value : s_real_id(path_template, param);
        o += snprintf(o, size - (size_t)(o - out), "%s", with ? with : "nope");
        p = end + 1;
    }
    *o = '\0';
    return out;
}

/* Methods a client may send without a body to change or end something:
   sent to unknown ids only. */
static bool s_changes_without_body(const char *method, const json_t *op)
{
    return strcmp(method, "GET") != 0 && !s_body_schema(op);
}

static void s_sweep_operation(const char *bearer, const char *path_template, const char *method,
                              const json_t *op)
{
    const char *op_name = json_string_value(json_object_get(op, "x-op"));
    if (op_name && strcmp(op_name, "auth.logout") == 0)
        return; /* would end the admin's session */
    bool has_params = strchr(path_template, '{') != NULL;
    bool takes_json = s_body_schema(op) != NULL;

    /* Real objects: wrong bodies and queries, never a bodiless change. */
    if (!s_changes_without_body(method, op) && (!has_params || s_real_id(path_template, "id"))) {
        char *path = s_fill(path_template, NULL);
        if (takes_json)
            s_sweep_body(bearer, method, path, op);
        if (strcmp(method, "GET") == 0) {
            char query[4096];
            for (size_t i = 0; i < sizeof s_hostile_queries / sizeof s_hostile_queries[0]; i++) {
                int n = snprintf(query, sizeof query, "%s%s", path, s_hostile_queries[i]);
                if (strcmp(s_hostile_queries[i], "?ids=") == 0)
                    for (int k = 0; k < 60; k++)
                        n += snprintf(query + n, sizeof query - (size_t)n, "%sZZZZZZZZZZZZZZZZZZZZ%02d",
                                      k ? "," : "", k);
                s_send(bearer, method, query, NULL, NULL, 0);
            }
        }
        if (takes_json)
            s_sweep_huge(bearer, method, path);
        free(path);
    }
    /* Hostile ids. */
    if (has_params) {
        char long_id[4001];
        memset(long_id, 'a', sizeof long_id - 1);
        long_id[sizeof long_id - 1] = '\0';
        for (size_t i = 0; i < sizeof s_hostile_ids / sizeof s_hostile_ids[0]; i++) {
            char *path = s_fill(path_template, s_hostile_ids[i] ? s_hostile_ids[i] : long_id);
            if (takes_json) {
                json_t *body = s_sample(s_body_schema(op), 0);
                s_send_json(bearer, method, path, body);
                json_decref(body);
            } else {
                s_send(bearer, method, path, NULL, NULL, 0);
            }
            free(path);
        }
    }
}

/* Every operation of the schema, with `bearer` as the token: with
   `bodies`, everything above; without, one empty-object request each,
   which must be a 401 on every route that is not public (`bearer` is then
   never a valid token). */
/* Called for each operation of openapi.json that has an x-op, with its
   path template and upper-case method. */
typedef void(s_op_fn)(const char *path_template, const char *method, const json_t *op,
                      void *arg);

static void s_each_op(s_op_fn *fn, void *arg)
{
    const char *path_template;
    const json_t *item;
    json_object_foreach(json_object_get(s_api, "paths"), path_template, item)
    {
        const char *method_lc;
        const json_t *op;
        json_object_foreach((json_t *)item, method_lc, op)
        {
            char method[8];
            size_t n = strlen(method_lc);
            if (n >= sizeof method || !json_object_get(op, "x-op"))
                continue;
            for (size_t i = 0; i <= n; i++)
                method[i] = (char)(method_lc[i] >= 'a' && method_lc[i] <= 'z' ? method_lc[i] - 32
                                                                               : method_lc[i]);
            fn(path_template, method, op, arg);
        }
    }
}

typedef struct {
    const char *bearer;
    bool bodies;
} s_sweep_t;

static void s_sweep_one(const char *path_template, const char *method, const json_t *op,
                        void *arg)
{
    const s_sweep_t *sweep = arg;
    if (sweep->bodies) {
        s_sweep_operation(sweep->bearer, path_template, method, op);
        return;
    }
    char *path = s_fill(path_template, NULL);
    long status = s_send(sweep->bearer, method, path, "application/json", "{}", 2);
    const char *access = json_string_value(json_object_get(op, "x-access"));
    const char *op_name = json_string_value(json_object_get(op, "x-op"));
    bool websocket = op_name && strcmp(op_name, "events.subscribe") == 0;
    if (websocket && status == 426) /* not a WebSocket handshake: said first */
        status = 401;
    if (access && strcmp(access, "public") != 0)
        cr_assert_eq(status, 401, "%s %s (%s) without a valid token: %ld", method, path, access,
                     status);
    free(path);
}

static void s_sweep(const char *bearer, bool bodies)
{
    s_sweep_t sweep = {bearer, bodies};
    s_each_op(s_sweep_one, &sweep);
}

/* ---- the bus ------------------------------------------------------------------ */

/* Replies awaited per bus request. */
#define S_BUS_TIMEOUT_MS 15000

typedef struct {
    char service[32];
    char op[MB_OP_MAX + 1];
    char args[16][32]; /* argument names the documents give */
    int nargs;
    const json_t *body_schema; /* of the JSON body, from openapi.json; NULL if none */
} s_bus_op_t;

#define S_BUS_OPS_MAX 256

static s_bus_op_t s_bus_ops[S_BUS_OPS_MAX];
static int s_nbus_ops;
static int s_bus_requests;

static s_bus_op_t *s_bus_op(const char *service, const char *op)
{
    for (int i = 0; i < s_nbus_ops; i++)
        if (!strcmp(s_bus_ops[i].service, service) && !strcmp(s_bus_ops[i].op, op))
            return &s_bus_ops[i];
    cr_assert_lt(s_nbus_ops, S_BUS_OPS_MAX);
    s_bus_op_t *o = &s_bus_ops[s_nbus_ops++];
    memset(o, 0, sizeof *o);
    snprintf(o->service, sizeof o->service, "%s", service);
    snprintf(o->op, sizeof o->op, "%s", op);
    return o;
}

static void s_bus_op_arg(s_bus_op_t *o, const char *name, size_t len)
{
    if (len == 0 || len >= sizeof o->args[0] || o->nargs == 16)
        return;
    for (int i = 0; i < o->nargs; i++)
        if (strlen(o->args[i]) == len && !strncmp(o->args[i], name, len))
            return;
    memcpy(o->args[o->nargs], name, len);
    o->args[o->nargs++][len] = '\0';
}

/* The ops of schemas/bus.md: under "## <service>", rows "| `op` | args |
   reply |", the args being the `backquoted` names of the second cell. */
static void s_load_bus_md(void)
{
    char file[4096], line[4096], service[32] = "";
    snprintf(file, sizeof file, "%s/schemas/bus.md", getenv("MUSICBUS_SOURCE_DIR"));
    FILE *f = fopen(file, "r");
    cr_assert(f, "%s", file);
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "## ", 3)) {
            if (sscanf(line + 3, "%31[a-z_-]", service) != 1)
                service[0] = '\0';
            continue;
        }
        char op[MB_OP_MAX + 1];
        if (!service[0] || sscanf(line, "| `%64[a-z_.]` |", op) != 1)
            continue;
        s_bus_op_t *o = s_bus_op(service, op);
        const char *cell = strchr(line + 2, '|');
        const char *end = cell ? strchr(cell + 1, '|') : NULL;
        for (const char *p = cell; p && end && p < end;) {
            const char *open = memchr(p, '`', (size_t)(end - p));
            if (!open)
                break;
            const char *close = memchr(open + 1, '`', (size_t)(end - open - 1));
            if (!close)
                break;
            s_bus_op_arg(o, open + 1, (size_t)(close - open - 1));
            p = close + 1;
        }
    }
    fclose(f);
}

/* The bus ops of openapi.json, with their parameters and "body". */
static void s_add_openapi_op(const char *path_template, const char *method, const json_t *op,
                             void *arg)
{
    (void)path_template;
    (void)method;
    (void)arg;
    const char *service = json_string_value(json_object_get(op, "x-service"));
    const char *name = json_string_value(json_object_get(op, "x-op"));
    if (!service || !strcmp(service, "gateway"))
        return;
    s_bus_op_t *o = s_bus_op(service, name);
    size_t i;
    const json_t *param;
    json_array_foreach(json_object_get(op, "parameters"), i, param)
    {
        const char *pname = json_string_value(json_object_get(s_deref(param), "name"));
        if (pname)
            s_bus_op_arg(o, pname, strlen(pname));
    }
    if (s_body_schema(op) || json_object_get(op, "x-upload"))
        s_bus_op_arg(o, "body", 4);
    if (s_body_schema(op))
        o->body_schema = s_body_schema(op);
}

static void s_load_openapi_ops(void)
{
    s_each_op(s_add_openapi_op, NULL);
}

/* The hostile value whose whole request is refused before its rid is read. */
#define S_BAD_EXT 12

/* Packs hostile value number `which` (false when there are no more). */
static bool s_pack_bad(msgpack_packer *pk, int which)
{
    static char huge[70000];
    switch (which) {
    case 0: msgpack_pack_int(pk, 7); return true;
    case 1: msgpack_pack_int64(pk, -1); return true;
    case 2: msgpack_pack_uint64(pk, UINT64_MAX); return true;
    case 3: msgpack_pack_double(pk, -1.5e308); return true;
    case 4: msgpack_pack_nil(pk); return true;
    case 5: msgpack_pack_true(pk); return true;
    case 6: mb_pack_cstr(pk, ""); return true;
    case 7:
        memset(huge, 'x', sizeof huge);
        mb_pack_strn(pk, huge, sizeof huge);
        return true;
    case 8: mb_pack_strn(pk, "\xff\xfe\x00z", 4); return true;
    case 9:
        msgpack_pack_bin(pk, 3);
        msgpack_pack_bin_body(pk, "abc", 3);
        return true;
    case 10:
        msgpack_pack_array(pk, 2);
        msgpack_pack_int(pk, 1);
        mb_pack_cstr(pk, "x");
        return true;
    case 11:
        msgpack_pack_map(pk, 1);
        msgpack_pack_int(pk, 1); /* a key that is not a string */
        msgpack_pack_map(pk, 0);
        return true;
    case S_BAD_EXT: /* no msgpack scan of musicbus takes ext types: the rid is lost too */
        msgpack_pack_ext(pk, 1, 5);
        msgpack_pack_ext_body(pk, "hello", 5);
        return true;
    case 13: /* an array of 1000 strings: more than any list takes */
        msgpack_pack_array(pk, 1000);
        for (int i = 0; i < 1000; i++)
            mb_pack_cstr(pk, "ZZZZZZZZZZZZZZZZZZZZZZ");
        return true;
    default: return false;
    }
}

/* Packs a JSON value as the gateway would put it on the bus. */
static void s_pack_json(msgpack_packer *pk, const json_t *value)
{
    switch (json_typeof(value)) {
    case JSON_OBJECT: {
        msgpack_pack_map(pk, (uint32_t)json_object_size(value));
        const char *key;
        const json_t *member;
        json_object_foreach((json_t *)value, key, member)
        {
            mb_pack_cstr(pk, key);
            s_pack_json(pk, member);
        }
        break;
    }
    case JSON_ARRAY: {
        msgpack_pack_array(pk, (uint32_t)json_array_size(value));
        size_t i;
        const json_t *member;
        json_array_foreach(value, i, member) s_pack_json(pk, member);
        break;
    }
    case JSON_STRING:
        mb_pack_strn(pk, json_string_value(value), json_string_length(value));
        break;
    case JSON_INTEGER: msgpack_pack_int64(pk, json_integer_value(value)); break;
    case JSON_REAL: msgpack_pack_double(pk, json_real_value(value)); break;
    case JSON_TRUE: msgpack_pack_true(pk); break;
    case JSON_FALSE: msgpack_pack_false(pk); break;
    case JSON_NULL: msgpack_pack_nil(pk); break;
    }
}

/* Sends one request body to `service` and checks the reply. */
static void s_bus_check(mb_client_t *client, const s_bus_op_t *o, const msgpack_sbuffer *request,
                        uint64_t rid, const char *what)
{
    zmq_msg_t reply;
    s_bus_requests++;
    int rc = mb_client_call(client, o->service, request->data, request->size, S_BUS_TIMEOUT_MS,
                            &reply);
    cr_assert_eq(rc, 0, "%s %s (%s): no reply: %s", o->service, o->op, what, mb_strerror(rc));
    mb_reply_t rep;
    const char *why = NULL;
    rc = mb_reply_decode(&rep, zmq_msg_data(&reply), zmq_msg_size(&reply), &why);
    cr_assert_eq(rc, 0, "%s %s (%s): the reply does not decode: %s", o->service, o->op, what,
                 why ? why : "");
    if (rid) /* an undecodable request gets rid 0 */
        cr_assert_eq(rep.rid, rid, "%s %s (%s): rid %llu for %llu", o->service, o->op, what,
                     (unsigned long long)rep.rid, (unsigned long long)rid);
    cr_assert_lt(rep.status, 500, "%s %s (%s): status %d %.*s: %.*s", o->service, o->op, what,
                 rep.status, (int)rep.code_len, rep.code ? rep.code : "", (int)rep.message_len,
                 rep.message ? rep.message : "");
    cr_assert(!(rep.status == 404 && rep.code && rep.code_len == 10 &&
                !memcmp(rep.code, "unknown_op", 10)),
              "%s has no op %s, which the documents list", o->service, o->op);
    mb_reply_release(&rep);
    zmq_msg_close(&reply);
}

/* Packs the head of a request for `o` with an admin's auth and, when
   `with_args`, an "args" key whose value the caller packs next. */
static void s_bus_head(msgpack_packer *pk, const s_bus_op_t *o, uint64_t rid, bool with_args)
{
    mb_request_pack_head(pk, o->op, rid, S_BUS_TIMEOUT_MS, with_args ? 2 : 1);
    mb_pack_cstr(pk, "auth");
    msgpack_pack_map(pk, 4);
    mb_pack_cstr(pk, "user");
    mb_pack_cstr(pk, it_stack_admin_id(s_stack));
    mb_pack_cstr(pk, "sid");
    mb_pack_cstr(pk, "hostile-session");
    mb_pack_cstr(pk, "tier");
    mb_pack_cstr(pk, "premium");
    mb_pack_cstr(pk, "roles");
    msgpack_pack_array(pk, 2);
    mb_pack_cstr(pk, "user");
    mb_pack_cstr(pk, "admin");
    if (with_args)
        mb_pack_cstr(pk, "args");
}

static void s_bus_sweep_op(mb_client_t *client, const s_bus_op_t *o, uint64_t *rid)
{
    msgpack_sbuffer request;
    msgpack_sbuffer_init(&request);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &request, msgpack_sbuffer_write);

    /* Not an envelope at all. */
    static const char *const junk[] = {"", "\xc1", "\x85", "\xdd\xff\xff\xff\xff",
                                       "\xdb\xff\xff\xff\xff", "GET / HTTP/1.1\r\n"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        msgpack_sbuffer_clear(&request);
        if (junk[i][0]) /* an empty write would memcpy from NULL */
            msgpack_sbuffer_write(&request, junk[i], strlen(junk[i]));
        s_bus_check(client, o, &request, 0, "junk bytes");
    }
    /* No args, no auth. */
    msgpack_sbuffer_clear(&request);
    mb_request_pack_head(&pk, o->op, ++*rid, S_BUS_TIMEOUT_MS, 0);
    s_bus_check(client, o, &request, *rid, "no args, no auth");
    /* args of the wrong type, then each argument wrong in turn. */
    for (int which = 0;; which++) {
        msgpack_sbuffer_clear(&request);
        s_bus_head(&pk, o, ++*rid, true);
        if (!s_pack_bad(&pk, which))
            break;
        s_bus_check(client, o, &request, which == S_BAD_EXT ? 0 : *rid, "args of the wrong type");
    }
    for (int a = 0; a < o->nargs; a++) {
        for (int which = 0;; which++) {
            msgpack_sbuffer_clear(&request);
            s_bus_head(&pk, o, ++*rid, true);
            msgpack_pack_map(&pk, 1);
            mb_pack_cstr(&pk, o->args[a]);
            if (!s_pack_bad(&pk, which))
                break;
            char what[96];
            snprintf(what, sizeof what, "args.%s = hostile value %d", o->args[a], which);
            s_bus_check(client, o, &request, which == S_BAD_EXT ? 0 : *rid, what);
        }
    }
    /* A body made from the schema, one property at a time hostile: what a
       batch job that skips the gateway's validation may send. */
    json_t *base = o->body_schema ? s_sample(o->body_schema, 0) : NULL;
    const char *key;
    const json_t *property;
    json_object_foreach(json_object_get(o->body_schema, "properties"), key, property)
    {
        for (int which = 0;; which++) {
            json_t *rest = json_is_object(base) ? json_deep_copy(base) : json_object();
            json_object_del(rest, key);
            msgpack_sbuffer_clear(&request);
            s_bus_head(&pk, o, ++*rid, true);
            msgpack_pack_map(&pk, 1);
            mb_pack_cstr(&pk, "body");
            msgpack_pack_map(&pk, (uint32_t)json_object_size(rest) + 1);
            const char *k;
            const json_t *v;
            json_object_foreach(rest, k, v)
            {
                mb_pack_cstr(&pk, k);
                s_pack_json(&pk, v);
            }
            mb_pack_cstr(&pk, key);
            bool more = s_pack_bad(&pk, which);
            json_decref(rest);
            if (!more)
                break;
            char what[96];
            snprintf(what, sizeof what, "args.body.%s = hostile value %d", key, which);
            s_bus_check(client, o, &request, which == S_BAD_EXT ? 0 : *rid, what);
        }
    }
    json_decref(base);
    msgpack_sbuffer_destroy(&request);
}

/* ---- the stack ---------------------------------------------------------------- */

static char *s_created_id(const char *path, json_t *body)
{
    json_t *made = it_call(s_stack, "POST", path, body, 201);
    char *id = it_str(made, "id");
    json_decref(made);
    return id;
}

static void s_up(void)
{
    char file[4096];
    snprintf(file, sizeof file, "%s/schemas/openapi.json", getenv("MUSICBUS_SOURCE_DIR"));
    json_error_t error;
    s_api = json_load_file(file, 0, &error);
    cr_assert(s_api, "%s: %s", file, error.text);

    it_stack_opts_t opts = {
        .catalogs = 1, .users = 1, .stats = 1, .playlists = 1, .transcodes = 1};
    s_stack = it_stack_new(&opts);
    cr_assert(s_stack);
    cr_assert(it_stack_admin_login(s_stack));
    s_artist_id = s_created_id("/v1/artists", it_pack("{s:s}", "name", "Hostile Artist"));
    s_album_id = s_created_id("/v1/albums", it_pack("{s:s,s:[s],s:s}", "title", "Hostile Album",
                                                    "artist_ids", s_artist_id, "release_date",
                                                    "2024-01-02"));
    s_track_id = s_created_id(
        "/v1/tracks", it_pack("{s:s,s:[s],s:s,s:i,s:i,s:i}", "title", "Hostile Track",
                              "artist_ids", s_artist_id, "album_id", s_album_id, "disc_number", 1,
                              "track_number", 1, "duration_ms", 180000));
    s_playlist_id = s_created_id("/v1/me/playlists", it_pack("{s:s}", "name", "Hostile List"));
}

static void s_down(void)
{
    it_stack_destroy(&s_stack);
    json_decref(s_api);
    free(s_artist_id);
    free(s_album_id);
    free(s_track_id);
    free(s_playlist_id);
}

/* Every process the stack started is still running. */
static void s_assert_all_running(void)
{
    static const it_kind_t kinds[] = {IT_BROKER,    IT_CATALOG,   IT_USERS,  IT_STATS,
                                      IT_PLAYLISTS, IT_TRANSCODE, IT_GATEWAY};
    static const char *const names[] = {"broker",    "catalog",   "users",  "stats",
                                        "playlists", "transcode", "gateway"};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        int proc = it_stack_find(s_stack, kinds[k], 0);
        cr_assert_geq(proc, 0, "no %s was started", names[k]);
        cr_assert_eq(it_stack_wait(s_stack, proc, 0), -1, "the %s exited during the sweep",
                     names[k]);
    }
}

static void s_assert_objects_intact(void)
{
    char path[256];
    const char *collections[] = {"artists", "albums", "tracks", "playlists"};
    const char *ids[] = {s_artist_id, s_album_id, s_track_id, s_playlist_id};
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "/v1/%s/%s", collections[i], ids[i]);
        json_t *got = it_call(s_stack, "GET", path, NULL, 200);
        cr_assert_str_eq(json_string_value(json_object_get(got, "id")), ids[i]);
        json_decref(got);
    }
}

TestSuite(hostile, .init = s_up, .fini = s_down, .timeout = 400);

Test(hostile, every_route_survives_bad_input_with_a_token)
{
    s_sweep(it_stack_token(s_stack), true);
    fprintf(stderr, "hostile: %d requests: %d 2xx, %d 3xx, %d 4xx, %d 5xx\n", s_requests,
            s_status_seen[2], s_status_seen[3], s_status_seen[4], s_status_seen[5]);
    cr_assert_gt(s_status_seen[4], s_requests / 2, "bad input should mostly be refused");
    s_assert_all_running();
    s_assert_objects_intact();
}

Test(hostile, every_route_without_or_with_a_forged_token)
{
    const char *forged[] = {
        NULL,
        "not-a-jwt",
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4Iiwicm9sZXMiOlsiYWRtaW4iXX0.",
        "a.b.c.d",
        "....",
    };
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++)
        s_sweep(forged[i], false);
    fprintf(stderr, "hostile: %d requests without a valid token: %d 2xx, %d 4xx\n", s_requests,
            s_status_seen[2], s_status_seen[4]);
    s_assert_all_running();
    s_assert_objects_intact();
}

Test(hostile, every_bus_op_survives_bad_arguments)
{
    s_load_bus_md();
    int documented = s_nbus_ops;
    s_load_openapi_ops();
    cr_assert_gt(documented, 0, "schemas/bus.md lists no op");
    for (int i = documented; i < s_nbus_ops; i++)
        cr_assert_fail("%s %s is an x-op of openapi.json that schemas/bus.md does not list",
                       s_bus_ops[i].service, s_bus_ops[i].op);
    mb_client_t *client = mb_client_new(it_stack_endpoint(s_stack));
    cr_assert(client);
    uint64_t rid = 1000;
    for (int i = 0; i < s_nbus_ops; i++)
        s_bus_sweep_op(client, &s_bus_ops[i], &rid);
    mb_client_destroy(&client);
    fprintf(stderr, "hostile: %d bus ops (%d from bus.md), %d requests, every one answered below 500\n",
            s_nbus_ops, documented, s_bus_requests);
    s_assert_all_running();
    s_assert_objects_intact();
}
