/*  request — turns a matched HTTP request into the bus envelope. */
#include "request.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json_msgpack.h"
#include "mb_envelope.h"
#include "mb_error.h"
#include "mb_msgpack.h"

/*  Parameters one operation may have (path and query together). */
#define S_MAX_PARAMS 32
/*  Items of a comma-separated array parameter, before its schema is
    even consulted: keeps a hostile URL from building a huge array. */
#define S_MAX_SPLIT_ITEMS 1000

static int s_invalid(gw_invalid_t *err, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int s_invalid(gw_invalid_t *err, const char *field, const char *fmt, ...)
{
    snprintf(err->field, sizeof err->field, "%s", field);
    /* "field: message", the message cut if it must be. */
    int n = snprintf(err->detail, sizeof err->detail, "%s: ", field);
    if (n < 0 || (size_t)n >= sizeof err->detail)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->detail + n, sizeof err->detail - (size_t)n, fmt, ap);
    va_end(ap);
    return MB_EINVAL;
}

/*  Converts one text value to the JSON value its schema's types ask for.
    Returns the value (caller decrefs) or NULL with *err filled in. */
static json_t *s_convert(unsigned types, const char *text, size_t len, const char *field,
                         gw_invalid_t *err)
{
    char names[96];
    if (!types || (types & GW_T_STRING)) {
        /* The validator works on C strings: no NUL inside. */
        if (!gw_utf8_valid(text, len) || memchr(text, '\0', len)) {
            s_invalid(err, field, "must be valid UTF-8 text");
            return NULL;
        }
        return json_stringn_nocheck(text, len);
    }
    char tmp[64];
    if (len < sizeof tmp) {
        memcpy(tmp, text, len);
        tmp[len] = '\0';
        if (types & GW_T_INTEGER) {
            /* Digits with an optional '-': no '+', spaces or hex. */
            const char *p = tmp + (tmp[0] == '-');
            if (*p >= '0' && *p <= '9' && strspn(p, "0123456789") == strlen(p)) {
                errno = 0;
                long long x = strtoll(tmp, NULL, 10);
                if (errno == 0)
                    return json_integer(x);
            }
        }
        if (types & GW_T_NUMBER) {
            char *end;
            double d = strtod(tmp, &end);
            if (len && !*end && isfinite(d) && !strchr(tmp, 'x') && !strchr(tmp, 'X') &&
                tmp[0] != ' ')
                return json_real(d);
        }
        if (types & GW_T_BOOLEAN) {
            if (!strcmp(tmp, "true"))
                return json_true();
            if (!strcmp(tmp, "false"))
                return json_false();
        }
        if ((types & GW_T_NULL) && !strcmp(tmp, "null"))
            return json_null();
    }
    s_invalid(err, field, "must be %s", gw_schema_type_name(types, names, sizeof names));
    return NULL;
}

/*  Converts a parameter's raw text to its JSON value, then validates it.
    Returns the value (caller decrefs) or NULL with *err filled in. */
static json_t *s_param_value(const gw_param_t *p, const char *text, size_t len, gw_invalid_t *err)
{
    json_t *v;
    if (p->split) {
        unsigned item_types = gw_schema_types(gw_schema_items(p->schema));
        v = json_array();
        /* "ids=" is an empty array; minItems decides whether that is fine. */
        size_t start = 0, n = 0;
        while (len > 0 && start <= len) {
            const char *comma = memchr(text + start, ',', len - start);
            size_t end = comma ? (size_t)(comma - text) : len;
            char field[sizeof err->field];
            snprintf(field, sizeof field, "%s[%zu]", p->name, n);
            if (++n > S_MAX_SPLIT_ITEMS) {
                json_decref(v);
                s_invalid(err, p->name, "has more than %d items", S_MAX_SPLIT_ITEMS);
                return NULL;
            }
            json_t *item = s_convert(item_types, text + start, end - start, field, err);
            if (!item) {
                json_decref(v);
                return NULL;
            }
            json_array_append_new(v, item);
            start = end + 1;
        }
    } else {
        v = s_convert(gw_schema_types(p->schema), text, len, p->name, err);
        if (!v)
            return NULL;
    }
    if (gw_schema_validate(p->schema, v, p->name, err)) {
        json_decref(v);
        return NULL;
    }
    return v;
}

/*  True when `v` nests at most `limit` containers deep. */
static bool s_depth_ok(const json_t *v, int limit)
{
    if (json_is_array(v)) {
        if (limit <= 0)
            return false;
        size_t i;
        const json_t *item;
        json_array_foreach(v, i, item) if (!s_depth_ok(item, limit - 1)) return false;
    } else if (json_is_object(v)) {
        if (limit <= 0)
            return false;
        const char *key;
        const json_t *item;
        json_object_foreach((json_t *)v, key, item) if (!s_depth_ok(item, limit - 1)) return false;
    }
    return true;
}

/*  Parses and validates the body. Returns 0 with *out set (NULL when the
    operation takes no body or an optional one is absent), or MB_EINVAL. */
static int s_body_value(const gw_route_t *route, const char *body, size_t len, json_t **out,
                        gw_invalid_t *err)
{
    *out = NULL;
    if (!route->has_body)
        return 0;
    if (len == 0)
        return route->body_required ? s_invalid(err, "body", "is required") : 0;
    json_error_t jerr;
    json_t *v = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!v)
        return s_invalid(err, "body", "not valid JSON at line %d, column %d (byte %d): %s",
                         jerr.line, jerr.column, jerr.position, jerr.text);
    if (!s_depth_ok(v, GW_JSON_MAX_DEPTH)) {
        json_decref(v);
        return s_invalid(err, "body", "nested deeper than %d levels", GW_JSON_MAX_DEPTH);
    }
    if (gw_schema_validate(route->body_schema, v, "body", err)) {
        json_decref(v);
        return MB_EINVAL;
    }
    *out = v;
    return 0;
}

int gw_request_pack(msgpack_packer *pk, const gw_route_t *route, const gw_match_t *match,
                    const gw_request_in_t *in, const mb_jwt_claims_t *auth, uint64_t rid,
                    uint32_t ttl_ms, gw_invalid_t *err)
{
    json_t *values[S_MAX_PARAMS] = {0};
    const char *headers[GW_HEADER_ARGS_MAX] = {0};
    size_t header_lens[GW_HEADER_ARGS_MAX] = {0};
    size_t n_params = route->n_params < S_MAX_PARAMS ? route->n_params : S_MAX_PARAMS;
    json_t *body_value = NULL;
    int rc = 0;
    uint32_t n_args = 0;
    for (size_t i = 0; i < n_params && rc == 0; i++) {
        const gw_param_t *p = &route->params[i];
        const char *text;
        size_t len;
        if (p->in == GW_IN_PATH)
            text = gw_match_param(match, p, &len);
        else
            text = in->query ? in->query(in->cls, p->name, &len) : NULL;
        if (!text) {
            if (p->required)
                rc = s_invalid(err, p->name, "is required");
            continue;
        }
        values[i] = s_param_value(p, text, len, err);
        if (!values[i])
            rc = MB_EINVAL;
        else
            n_args++;
    }
    for (size_t i = 0; i < route->n_headers && rc == 0; i++) {
        const gw_header_arg_t *h = &route->headers[i];
        size_t len = 0;
        const char *text = in->header ? in->header(in->cls, h->header, &len) : NULL;
        if (!text)
            continue;
        /* Actors read args as text; a header is bytes. */
        if (!gw_utf8_valid(text, len) || memchr(text, '\0', len)) {
            rc = s_invalid(err, h->arg, "header %s must be valid UTF-8 text", h->header);
            break;
        }
        headers[i] = text;
        header_lens[i] = len;
        n_args++;
    }
    if (rc == 0)
        rc = s_body_value(route, in->body, in->body_len, &body_value, err);
    bool blob = route->upload && in->blob_hex;
    if (rc == 0) {
        mb_request_pack_head(pk, route->op, rid, ttl_ms, auth ? 2 : 1);
        if (auth) {
            mb_pack_cstr(pk, "auth");
            mb_jwt_pack_auth(pk, auth);
        }
        mb_pack_cstr(pk, "args");
        msgpack_pack_map(pk, n_args + (body_value != NULL) + blob);
        for (size_t i = 0; i < n_params; i++) {
            if (!values[i])
                continue;
            mb_pack_cstr(pk, route->params[i].name);
            gw_json_to_msgpack(pk, values[i], GW_JSON_MAX_DEPTH);
        }
        for (size_t i = 0; i < route->n_headers; i++) {
            if (!headers[i])
                continue;
            mb_pack_cstr(pk, route->headers[i].arg);
            mb_pack_strn(pk, headers[i], header_lens[i]);
        }
        if (body_value) {
            mb_pack_cstr(pk, "body");
            gw_json_to_msgpack(pk, body_value, GW_JSON_MAX_DEPTH);
        }
        if (blob) {
            mb_pack_cstr(pk, "blob");
            msgpack_pack_map(pk, 2);
            mb_pack_cstr(pk, "hash");
            mb_pack_cstr(pk, in->blob_hex);
            mb_pack_cstr(pk, "size");
            msgpack_pack_uint64(pk, in->blob_size);
        }
    }
    for (size_t i = 0; i < n_params; i++)
        json_decref(values[i]);
    json_decref(body_value);
    return rc;
}
