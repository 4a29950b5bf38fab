/*  routes — the route table, built at start-up from the OpenAPI document. */
#include "routes.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mb_alloc.h"
#include "mb_envelope.h"
#include "mb_error.h"

/*  OpenAPI's operation keys, in the order Allow lists them. */
static const char *const s_methods[] = {"GET",   "HEAD",   "POST",    "PUT",
                                        "PATCH", "DELETE", "OPTIONS", "TRACE"};
static const char *const s_method_keys[] = {"get",   "head",   "post",    "put",
                                            "patch", "delete", "options", "trace"};
#define S_N_METHODS (sizeof s_methods / sizeof s_methods[0])

typedef struct {
    char *text; /* literal text, or the parameter's name */
    size_t len;
    bool param;
} s_segment_t;

typedef struct {
    char *template;
    s_segment_t segments[GW_MAX_SEGMENTS];
    size_t n_segments;
    /*  Bit (GW_MAX_SEGMENTS - 1 - i) is set when segment i is literal, so
        among templates matching one path the highest score is the one
        with a literal at the first place where they differ. */
    unsigned score;
    gw_route_t *by_method[S_N_METHODS];
    char allow[80]; /* "GET, PATCH, DELETE" */
} s_path_t;

struct gw_routes {
    json_t *doc;
    gw_schema_set_t *schemas;
    s_path_t *paths;
    size_t n_paths;
    gw_route_t **routes; /* document order */
    size_t n_routes;
};

int gw_access_parse(const char *text, gw_access_t *out)
{
    static const char *const names[] = {"public", "user", "premium", "admin"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (text && !strcmp(text, names[i])) {
            *out = (gw_access_t)i;
            return 0;
        }
    return MB_EINVAL;
}

const char *gw_access_name(gw_access_t access)
{
    switch (access) {
    case GW_ACCESS_PUBLIC:
        return "public";
    case GW_ACCESS_USER:
        return "user";
    case GW_ACCESS_PREMIUM:
        return "premium";
    case GW_ACCESS_ADMIN:
        return "admin";
    }
    return "?";
}

/*  Splits `path` (after its leading '/') on '/' into at most
    GW_MAX_SEGMENTS (pointer, length) pairs. Returns the count, or -1 when
    there are more segments or the path does not start with '/'. */
static int s_split(const char *path, const char **ptr, size_t *len)
{
    if (path[0] != '/')
        return -1;
    int n = 0;
    const char *p = path + 1;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t l = slash ? (size_t)(slash - p) : strlen(p);
        if (n == GW_MAX_SEGMENTS)
            return -1;
        ptr[n] = p;
        len[n] = l;
        n++;
        if (!slash)
            return n;
        p = slash + 1;
    }
}

static void s_route_free(gw_route_t *r)
{
    if (!r)
        return;
    free(r->service);
    free(r->op);
    free(r->rate_budget);
    for (size_t i = 0; i < r->n_rate_keys; i++) {
        free(r->rate_keys[i].name);
        free(r->rate_keys[i].field);
    }
    for (size_t i = 0; i < r->n_params; i++)
        free(r->params[i].name);
    free(r->params);
    for (size_t i = 0; i < r->n_headers; i++) {
        free(r->headers[i].header);
        free(r->headers[i].arg);
    }
    for (size_t i = 0; i < r->n_upload_types; i++)
        free(r->upload_types[i]);
    for (size_t i = 0; i < r->n_raw_types; i++)
        free(r->raw_types[i]);
    free(r->raw_types);
    free(r);
}

void gw_routes_destroy(gw_routes_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    gw_routes_t *self = *self_p;
    for (size_t i = 0; i < self->n_routes; i++)
        s_route_free(self->routes[i]);
    free(self->routes);
    for (size_t i = 0; i < self->n_paths; i++) {
        free(self->paths[i].template);
        for (size_t j = 0; j < self->paths[i].n_segments; j++)
            free(self->paths[i].segments[j].text);
    }
    free(self->paths);
    gw_schema_set_destroy(&self->schemas);
    json_decref(self->doc);
    free(self);
    *self_p = NULL;
}

size_t gw_routes_size(const gw_routes_t *self)
{
    return self->n_routes;
}

const gw_route_t *gw_routes_at(const gw_routes_t *self, size_t index)
{
    return index < self->n_routes ? self->routes[index] : NULL;
}

/*  Follows a {"$ref": "#/..."} object to its target; other values are
    returned as they are. NULL when the reference does not resolve. */
static const json_t *s_deref(gw_routes_t *self, const json_t *v)
{
    for (int hops = 0; hops < 8 && json_is_object(v); hops++) {
        const json_t *ref = json_object_get(v, "$ref");
        if (!ref)
            return v;
        v = gw_schema_resolve(self->schemas, json_string_value(ref));
    }
    return json_is_object(v) && !json_object_get(v, "$ref") ? v : NULL;
}

static bool s_parse_template(s_path_t *p, const char *template, char *err, size_t err_size)
{
    const char *ptr[GW_MAX_SEGMENTS];
    size_t len[GW_MAX_SEGMENTS];
    int n = s_split(template, ptr, len);
    if (n < 0) {
        snprintf(err, err_size, "path '%s': must start with '/' and have at most %d segments",
                 template, GW_MAX_SEGMENTS);
        return false;
    }
    p->template = mb_strdup(template);
    p->n_segments = (size_t)n;
    for (int i = 0; i < n; i++) {
        s_segment_t *s = &p->segments[i];
        const char *open = memchr(ptr[i], '{', len[i]);
        const char *close = memchr(ptr[i], '}', len[i]);
        if (open || close) {
            /* Only whole-segment templates: "{id}", not "{id}.json". */
            if (len[i] < 3 || open != ptr[i] || close != ptr[i] + len[i] - 1 ||
                memchr(ptr[i] + 1, '{', len[i] - 1)) {
                snprintf(err, err_size, "path '%s': segment %d must be a literal or {name}",
                         template, i + 1);
                return false;
            }
            s->param = true;
            s->text = mb_strndup(ptr[i] + 1, len[i] - 2);
            s->len = len[i] - 2;
        } else {
            s->text = mb_strndup(ptr[i], len[i]);
            s->len = len[i];
            p->score |= 1u << (GW_MAX_SEGMENTS - 1 - i);
        }
    }
    return true;
}

/*  Adds or replaces (same name and location) one parameter object. */
static bool s_add_param(gw_routes_t *self, gw_route_t *r, const s_path_t *p, const json_t *obj,
                        char *err, size_t err_size)
{
    const json_t *param = s_deref(self, obj);
    const char *name = json_string_value(json_object_get(param, "name"));
    const char *in = json_string_value(json_object_get(param, "in"));
    if (!name || !in) {
        snprintf(err, err_size, "%s %s: a parameter lacks name or in (or its $ref is broken)",
                 r->method, r->path);
        return false;
    }
    gw_param_in_t where;
    if (!strcmp(in, "path"))
        where = GW_IN_PATH;
    else if (!strcmp(in, "query"))
        where = GW_IN_QUERY;
    else
        return true; /* header and cookie parameters are not the gateway's business yet */

    gw_param_t out = {.in = where, .segment = -1};
    out.required = json_is_true(json_object_get(param, "required")) || where == GW_IN_PATH;
    const json_t *schema = json_object_get(param, "schema");
    char why[200];
    out.schema = gw_schema_compile(self->schemas, schema, why, sizeof why);
    if (!out.schema) {
        snprintf(err, err_size, "%s %s: parameter %s: %s", r->method, r->path, name, why);
        return false;
    }
    if (gw_schema_types(out.schema) & GW_T_ARRAY) {
        /* Query arrays travel as one comma-separated value (style form,
           explode false); the exploded form ?a=1&a=2 is not supported. */
        const char *style = json_string_value(json_object_get(param, "style"));
        const json_t *explode = json_object_get(param, "explode");
        if ((style && strcmp(style, "form")) || !json_is_false(explode) || where != GW_IN_QUERY) {
            snprintf(err, err_size,
                     "%s %s: parameter %s: arrays must be query parameters with style form, "
                     "explode false",
                     r->method, r->path, name);
            return false;
        }
        out.split = true;
    }
    if (where == GW_IN_PATH) {
        for (size_t i = 0; i < p->n_segments; i++)
            if (p->segments[i].param && !strcmp(p->segments[i].text, name))
                out.segment = (int)i;
        if (out.segment < 0) {
            snprintf(err, err_size, "%s %s: path parameter %s is not in the template", r->method,
                     r->path, name);
            return false;
        }
    }
    for (size_t i = 0; i < r->n_params; i++) {
        if (r->params[i].in == where && !strcmp(r->params[i].name, name)) {
            out.name = r->params[i].name;
            r->params[i] = out;
            return true;
        }
    }
    out.name = mb_strdup(name);
    r->params = mb_realloc(r->params, (r->n_params + 1) * sizeof *r->params);
    r->params[r->n_params++] = out;
    return true;
}

/*  Reads x-rate-limit {"budget": name, "keys": [...]} into the route. */
static bool s_parse_rate_limit(gw_route_t *r, const json_t *spec, char *err, size_t err_size)
{
    const char *budget = json_string_value(json_object_get(spec, "budget"));
    const json_t *keys = json_object_get(spec, "keys");
    size_t len = budget ? strlen(budget) : 0;
    if (!json_is_object(spec) || len == 0 || len > 32 ||
        strspn(budget, "abcdefghijklmnopqrstuvwxyz0123456789_") != len ||
        json_object_size(spec) != 2) {
        snprintf(err, err_size,
                 "%s %s: x-rate-limit must be {\"budget\": name of [a-z0-9_], \"keys\": [...]}",
                 r->method, r->path);
        return false;
    }
    if (!json_is_array(keys) || json_array_size(keys) == 0 ||
        json_array_size(keys) > GW_RATE_KEYS_MAX) {
        snprintf(err, err_size, "%s %s: x-rate-limit keys must list 1..%d keys", r->method, r->path,
                 GW_RATE_KEYS_MAX);
        return false;
    }
    r->rate_budget = mb_strdup(budget);
    size_t i;
    const json_t *key;
    json_array_foreach(keys, i, key)
    {
        const char *name = json_string_value(key);
        gw_rate_keydef_t *k = &r->rate_keys[r->n_rate_keys];
        if (name && !strcmp(name, "addr")) {
            k->kind = GW_RATE_ADDR;
        } else if (name && !strcmp(name, "user") && r->access != GW_ACCESS_PUBLIC) {
            k->kind = GW_RATE_USER;
        } else if (name && !strncmp(name, "body.", 5) && name[5] && r->has_body) {
            k->kind = GW_RATE_BODY;
            k->field = mb_strdup(name + 5);
            r->rate_body = true;
        } else {
            snprintf(err, err_size,
                     "%s %s: x-rate-limit key '%s' must be addr, user (not on a public route) or "
                     "body.<field> (only with a request body)",
                     r->method, r->path, name ? name : "(not a string)");
            return false;
        }
        k->name = mb_strdup(name);
        r->n_rate_keys++;
    }
    return true;
}

/*  RFC 9110 token characters (header names). */
static bool s_is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              strchr("!#$%&'*+-.^_`|~", *s)))
            return false;
    return true;
}

/*  A key in args: 1..64 of [a-z0-9_]. */
static bool s_is_arg_name(const char *s)
{
    size_t len = strlen(s);
    return len > 0 && len <= 64 && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == len;
}

/*  True when `name` is already a key of the route's args. */
static bool s_arg_taken(const gw_route_t *r, const char *name)
{
    if (!strcmp(name, "body") || !strcmp(name, "blob"))
        return true;
    for (size_t i = 0; i < r->n_params; i++)
        if (!strcmp(r->params[i].name, name))
            return true;
    for (size_t i = 0; i < r->n_headers; i++)
        if (!strcmp(r->headers[i].arg, name))
            return true;
    return false;
}

/*  Reads x-headers {"If-Match": "if_match", ...} into the route. */
static bool s_parse_headers(gw_route_t *r, const json_t *spec, char *err, size_t err_size)
{
    if (!json_is_object(spec) || json_object_size(spec) == 0 ||
        json_object_size(spec) > GW_HEADER_ARGS_MAX) {
        snprintf(err, err_size, "%s %s: x-headers must map 1..%d header names to arg names",
                 r->method, r->path, GW_HEADER_ARGS_MAX);
        return false;
    }
    const char *header;
    const json_t *arg;
    json_object_foreach((json_t *)spec, header, arg)
    {
        const char *name = json_string_value(arg);
        if (!s_is_token(header) || !name || !s_is_arg_name(name) || s_arg_taken(r, name)) {
            snprintf(err, err_size,
                     "%s %s: x-headers '%s': the header must be a token and its arg 1..64 of "
                     "[a-z0-9_] that no parameter, body or blob uses",
                     r->method, r->path, header);
            return false;
        }
        for (size_t i = 0; i < r->n_headers; i++)
            if (!strcasecmp(r->headers[i].header, header)) {
                snprintf(err, err_size, "%s %s: x-headers names '%s' twice", r->method, r->path,
                         header);
                return false;
            }
        r->headers[r->n_headers].header = mb_strdup(header);
        r->headers[r->n_headers].arg = mb_strdup(name);
        r->n_headers++;
    }
    return true;
}

/*  A media type pattern: "type/subtype", "type/" and a star, or a star. */
static bool s_is_type_pattern(const char *s)
{
    if (!strcmp(s, "*"))
        return true;
    const char *slash = strchr(s, '/');
    if (!slash || slash == s || !slash[1] || strchr(slash + 1, '/') || strchr(s, ';') ||
        strchr(s, ' '))
        return false;
    char type[128];
    snprintf(type, sizeof type, "%.*s", (int)(slash - s), s);
    return s_is_token(type) && s_is_token(slash + 1) && (slash[1] != '*' || !slash[2]) &&
           strlen(s) < 128;
}

static bool s_add_upload_type(gw_route_t *r, const char *type, char *err, size_t err_size)
{
    if (!type || !s_is_type_pattern(type) || r->n_upload_types == GW_UPLOAD_TYPES_MAX) {
        snprintf(err, err_size, "%s %s: x-upload types: '%s' is not a media type (or one too many)",
                 r->method, r->path, type ? type : "(not a string)");
        return false;
    }
    r->upload_types[r->n_upload_types++] = mb_strdup(type);
    return true;
}

/*  Reads x-upload {"max": bytes?, "types": [...] or a star} into the
    route; without types, the requestBody's media types are the list. */
static bool s_parse_upload(gw_route_t *r, const json_t *spec, const json_t *body, char *err,
                           size_t err_size)
{
    const json_t *max = json_object_get(spec, "max");
    const json_t *types = json_object_get(spec, "types");
    if (!json_is_object(spec) || (max && (!json_is_integer(max) || json_integer_value(max) < 1))) {
        snprintf(err, err_size, "%s %s: x-upload must be {\"max\": bytes (> 0)?, \"types\": ...}",
                 r->method, r->path);
        return false;
    }
    r->upload = true;
    r->upload_max = max ? (uint64_t)json_integer_value(max) : 0;
    if (json_is_string(types) && !strcmp(json_string_value(types), "*"))
        return true; /* any type: an empty list */
    if (types) {
        if (!json_is_array(types) || json_array_size(types) == 0) {
            snprintf(err, err_size,
                     "%s %s: x-upload types must be a non-empty array of media types or a star",
                     r->method, r->path);
            return false;
        }
        size_t i;
        const json_t *t;
        json_array_foreach(types, i, t)
        {
            if (!s_add_upload_type(r, json_string_value(t), err, err_size))
                return false;
        }
        return true;
    }
    const char *type;
    const json_t *media;
    json_object_foreach((json_t *)json_object_get(body, "content"), type, media)
    {
        (void)media;
        if (!s_add_upload_type(r, type, err, err_size))
            return false;
    }
    return true;
}

/*  Collects the non-JSON media types of the operation's 2xx responses. */
static void s_collect_raw_types(gw_routes_t *self, gw_route_t *r, const json_t *operation)
{
    const char *code;
    const json_t *resp;
    json_object_foreach((json_t *)json_object_get(operation, "responses"), code, resp)
    {
        if (code[0] != '2')
            continue;
        const char *type;
        const json_t *media;
        json_object_foreach((json_t *)json_object_get(s_deref(self, resp), "content"), type, media)
        {
            (void)media;
            if (!strcasecmp(type, "application/json") ||
                !strncasecmp(type, "application/json;", 17))
                continue;
            bool dup = false;
            for (size_t i = 0; i < r->n_raw_types; i++)
                dup |= !strcasecmp(r->raw_types[i], type);
            if (dup)
                continue;
            r->raw_types = mb_realloc(r->raw_types, (r->n_raw_types + 1) * sizeof *r->raw_types);
            r->raw_types[r->n_raw_types++] = mb_strdup(type);
        }
    }
}

bool gw_media_type_listed(const char *type, char *const *patterns, size_t n)
{
    if (n == 0)
        return true;
    if (!type)
        return false;
    type += strspn(type, " \t");
    size_t len = strcspn(type, ";");
    while (len && (type[len - 1] == ' ' || type[len - 1] == '\t'))
        len--;
    const char *slash = memchr(type, '/', len);
    for (size_t i = 0; i < n; i++) {
        const char *p = patterns[i];
        size_t plen = strlen(p);
        if (!strcmp(p, "*") || (plen == len && !strncasecmp(p, type, len)))
            return true;
        /* "audio/" and a star: any subtype of audio */
        if (slash && plen >= 2 && p[plen - 1] == '*' && p[plen - 2] == '/' &&
            plen - 1 == (size_t)(slash - type) + 1 && !strncasecmp(p, type, plen - 1) &&
            (size_t)(slash - type) + 1 < len)
            return true;
    }
    return false;
}

static int s_param_order(const void *a, const void *b)
{
    const gw_param_t *x = a, *y = b;
    return (int)x->in - (int)y->in;
}

static gw_route_t *s_build_route(gw_routes_t *self, const s_path_t *p, const json_t *path_item,
                                 size_t method, const json_t *operation, char *err, size_t err_size)
{
    gw_route_t *r = mb_calloc(1, sizeof *r);
    r->method = s_methods[method];
    r->path = p->template;
    const char *service = json_string_value(json_object_get(operation, "x-service"));
    const char *op = json_string_value(json_object_get(operation, "x-op"));
    const json_t *access = json_object_get(operation, "x-access");
    if (!service || !*service || !op || !*op || strlen(op) > MB_OP_MAX) {
        snprintf(err, err_size, "%s %s: x-service and x-op (1..%d bytes) are required", r->method,
                 r->path, MB_OP_MAX);
        goto fail;
    }
    r->service = mb_strdup(service);
    r->op = mb_strdup(op);
    if (access && gw_access_parse(json_string_value(access), &r->access)) {
        snprintf(err, err_size, "%s %s: x-access must be public, user, premium or admin", r->method,
                 r->path);
        goto fail;
    }
    /* Path-item parameters first; the operation's own override them. */
    const json_t *lists[2] = {json_object_get(path_item, "parameters"),
                              json_object_get(operation, "parameters")};
    for (int l = 0; l < 2; l++) {
        size_t i;
        const json_t *param;
        json_array_foreach(lists[l], i,
                           param) if (!s_add_param(self, r, p, param, err, err_size)) goto fail;
    }
    /* Every {name} in the template must be a parameter; one nobody
       declared is taken as a plain string. */
    for (size_t i = 0; i < p->n_segments; i++) {
        if (!p->segments[i].param)
            continue;
        bool declared = false;
        for (size_t j = 0; j < r->n_params; j++)
            declared |= r->params[j].in == GW_IN_PATH && r->params[j].segment == (int)i;
        if (!declared) {
            r->params = mb_realloc(r->params, (r->n_params + 1) * sizeof *r->params);
            r->params[r->n_params++] = (gw_param_t){.name = mb_strdup(p->segments[i].text),
                                                    .in = GW_IN_PATH,
                                                    .required = true,
                                                    .segment = (int)i};
        }
    }
    /* A stable order (path before query) keeps args in a predictable order. */
    if (r->n_params > 1)
        qsort(r->params, r->n_params, sizeof *r->params, s_param_order);

    const json_t *body = json_object_get(operation, "requestBody");
    const json_t *upload = json_object_get(operation, "x-upload");
    if (upload) {
        body = body ? s_deref(self, body) : NULL;
        if (json_object_get(json_object_get(body, "content"), "application/json")) {
            snprintf(err, err_size, "%s %s: an x-upload body cannot be application/json", r->method,
                     r->path);
            goto fail;
        }
        if (!s_parse_upload(r, upload, body, err, err_size))
            goto fail;
        r->body_required = !body || !json_is_false(json_object_get(body, "required"));
    } else if (body) {
        body = s_deref(self, body);
        const json_t *media = json_object_get(json_object_get(body, "content"), "application/json");
        if (!media) {
            snprintf(err, err_size, "%s %s: requestBody must offer application/json", r->method,
                     r->path);
            goto fail;
        }
        r->has_body = true;
        r->body_required = json_is_true(json_object_get(body, "required"));
        char why[200];
        r->body_schema =
            gw_schema_compile(self->schemas, json_object_get(media, "schema"), why, sizeof why);
        if (!r->body_schema) {
            snprintf(err, err_size, "%s %s: request body: %s", r->method, r->path, why);
            goto fail;
        }
    }
    const json_t *rate = json_object_get(operation, "x-rate-limit");
    if (rate && !s_parse_rate_limit(r, rate, err, err_size))
        goto fail;
    const json_t *timeout = json_object_get(operation, "x-timeout-ms");
    if (timeout) {
        json_int_t ms = json_is_integer(timeout) ? json_integer_value(timeout) : 0;
        if (ms < 1 || ms > 3600 * 1000) {
            snprintf(err, err_size, "%s %s: x-timeout-ms must be an integer in 1..3600000",
                     r->method, r->path);
            goto fail;
        }
        r->timeout_ms = (long)ms;
    }
    const json_t *headers = json_object_get(operation, "x-headers");
    if (headers && !s_parse_headers(r, headers, err, err_size))
        goto fail;
    s_collect_raw_types(self, r, operation);
    return r;
fail:
    s_route_free(r);
    return NULL;
}

gw_routes_t *gw_routes_new(const char *json, size_t len, char *err, size_t err_size)
{
    char none[8];
    if (!err) {
        err = none;
        err_size = sizeof none;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        snprintf(err, err_size, "not valid JSON: line %d column %d: %s", jerr.line, jerr.column,
                 jerr.text);
        return NULL;
    }
    gw_routes_t *self = mb_calloc(1, sizeof *self);
    self->doc = doc;
    self->schemas = gw_schema_set_new(doc);
    const json_t *paths = json_object_get(doc, "paths");
    if (!json_is_object(paths)) {
        snprintf(err, err_size, "the document has no paths object");
        goto fail;
    }
    self->paths = mb_calloc(json_object_size(paths) + 1, sizeof *self->paths);
    const char *template;
    const json_t *item;
    json_object_foreach((json_t *)paths, template, item)
    {
        s_path_t *p = &self->paths[self->n_paths++];
        if (!s_parse_template(p, template, err, err_size))
            goto fail;
        for (size_t k = 0; k < self->n_paths - 1; k++) {
            const s_path_t *q = &self->paths[k];
            bool same = q->n_segments == p->n_segments;
            for (size_t i = 0; same && i < p->n_segments; i++)
                same = q->segments[i].param == p->segments[i].param &&
                       (p->segments[i].param || !strcmp(q->segments[i].text, p->segments[i].text));
            if (same) {
                snprintf(err, err_size, "paths '%s' and '%s' match the same requests", q->template,
                         p->template);
                goto fail;
            }
        }
        item = s_deref(self, item);
        size_t allow_len = 0;
        for (size_t m = 0; m < S_N_METHODS; m++) {
            const json_t *operation = json_object_get(item, s_method_keys[m]);
            if (!operation)
                continue;
            gw_route_t *r = s_build_route(self, p, item, m, operation, err, err_size);
            if (!r)
                goto fail;
            p->by_method[m] = r;
            self->routes = mb_realloc(self->routes, (self->n_routes + 1) * sizeof *self->routes);
            self->routes[self->n_routes++] = r;
            allow_len += (size_t)snprintf(p->allow + allow_len, sizeof p->allow - allow_len, "%s%s",
                                          allow_len ? ", " : "", s_methods[m]);
        }
    }
    /* Everything a request needs is compiled now (schemas own copies of
       what they read): the parsed document, several times the size of
       the text, is not kept for the gateway's whole life. */
    gw_schema_set_release_doc(self->schemas);
    json_decref(self->doc);
    self->doc = NULL;
    malloc_trim(0); /* give the freed heap back to the system */
    return self;
fail:
    gw_routes_destroy(&self);
    return NULL;
}

static int s_method_index(const char *method)
{
    for (size_t m = 0; m < S_N_METHODS; m++)
        if (!strcmp(method, s_methods[m]))
            return (int)m;
    return -1;
}

int gw_routes_match(const gw_routes_t *self, const char *method, const char *path, gw_match_t *m)
{
    const char *ptr[GW_MAX_SEGMENTS];
    size_t len[GW_MAX_SEGMENTS];
    m->route = NULL;
    m->allow = NULL;
    m->n_segments = 0;
    int n = s_split(path, ptr, len);
    if (n < 0)
        return 404;
    const s_path_t *best = NULL;
    for (size_t k = 0; k < self->n_paths; k++) {
        const s_path_t *p = &self->paths[k];
        if (p->n_segments != (size_t)n || (best && p->score <= best->score))
            continue;
        bool ok = true;
        for (int i = 0; ok && i < n; i++) {
            const s_segment_t *s = &p->segments[i];
            ok = s->param ? len[i] > 0 : (s->len == len[i] && !memcmp(s->text, ptr[i], len[i]));
        }
        if (ok)
            best = p;
    }
    if (!best)
        return 404;
    m->n_segments = (size_t)n;
    for (int i = 0; i < n; i++) {
        m->segments[i].ptr = ptr[i];
        m->segments[i].len = len[i];
    }
    int index = s_method_index(method);
    if (index < 0 || !best->by_method[index]) {
        m->allow = best->allow;
        return 405;
    }
    m->route = best->by_method[index];
    return 0;
}
