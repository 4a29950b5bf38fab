/*  mb_envelope — the msgpack request and reply carried on the bus. */
#include "mb_envelope.h"

#include <stdlib.h>
#include <string.h>

#include "mb_alloc.h"
#include "mb_error.h"
#include "mb_log.h"
#include "mb_msgpack.h"

/* Nesting allowed in an envelope. msgpack-c's own parser stack holds 32
   containers (MSGPACK_EMBED_STACK_SIZE); staying within it means the
   pre-scan, not msgpack-c, is what refuses deep input. */
#define S_MAX_DEPTH 32

/*  Decodes one msgpack map at `data` into *msg. The bytes are copied into
    memory owned by msg's zone, because msgpack_unpack_next() leaves
    strings pointing into its input and the envelope must outlive the
    frame it came in. */
static int s_unpack_map(msgpack_unpacked *msg, const void *data, size_t size, const char **why)
{
    size_t used = 0;
    mb_msgpack_head_t head;
    if (!data || size == 0) {
        *why = "empty message";
        return MB_EPROTO;
    }
    if (mb_msgpack_head(data, size, &head) != 0 || head.kind != MB_MP_MAP) {
        *why = "envelope is not a msgpack map";
        return MB_EPROTO;
    }
    /* Refuse lying counts and deep nesting before msgpack-c allocates. */
    if (mb_msgpack_skip(data, size, S_MAX_DEPTH, &used) != 0) {
        *why = "malformed, truncated or too deeply nested msgpack";
        return MB_EPROTO;
    }
    if (used != size) {
        *why = "trailing bytes after the envelope";
        return MB_EPROTO;
    }
    char *copy = mb_malloc(size);
    memcpy(copy, data, size);
    msgpack_unpacked_init(msg);
    size_t offset = 0;
    msgpack_unpack_return rc = msgpack_unpack_next(msg, copy, size, &offset);
    if (rc == MSGPACK_UNPACK_NOMEM_ERROR) {
        free(copy);
        msgpack_unpacked_destroy(msg);
        *why = "out of memory decoding the envelope";
        return MB_EPROTO;
    }
    if (rc != MSGPACK_UNPACK_SUCCESS || offset != size) {
        free(copy);
        msgpack_unpacked_destroy(msg);
        *why = "malformed msgpack";
        return MB_EPROTO;
    }
    /* Tie the copy's life to the zone; an empty map may not have made one. */
    if (!msg->zone)
        msg->zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    if (!msg->zone || !msgpack_zone_push_finalizer(msg->zone, free, copy)) {
        mb_error(0, "out of memory decoding an envelope");
        abort();
    }
    if (msg->data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(msg);
        *why = "envelope is not a map";
        return MB_EPROTO;
    }
    return 0;
}

/*  Reads a non-negative integer; msgpack-c stores those as POSITIVE_INTEGER
    whatever their wire encoding. */
static bool s_uint(const msgpack_object *o, uint64_t *out)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *out = o->via.u64;
    return true;
}

static bool s_key_is(const msgpack_object *key, const char *name)
{
    return mb_obj_str_eq(key, name);
}

int mb_request_decode(mb_request_t *req, const void *data, size_t size, const char **why)
{
    static const char *ignored;
    if (!why)
        why = &ignored;
    memset(req, 0, sizeof *req);
    int rc = s_unpack_map(&req->msg, data, size, why);
    if (rc)
        return rc;

    const msgpack_object *op = NULL, *rid = NULL, *ttl = NULL, *auth = NULL, *args = NULL;
    const msgpack_object_map *map = &req->msg.data.via.map;
    for (uint32_t i = 0; i < map->size; i++) {
        const msgpack_object *key = &map->ptr[i].key;
        const msgpack_object *val = &map->ptr[i].val;
        const msgpack_object **slot = s_key_is(key, "op")     ? &op
                                      : s_key_is(key, "rid")  ? &rid
                                      : s_key_is(key, "ttl")  ? &ttl
                                      : s_key_is(key, "auth") ? &auth
                                      : s_key_is(key, "args") ? &args
                                                              : NULL;
        if (!slot)
            continue; /* unknown keys let the envelope grow */
        if (*slot) {
            *why = "duplicate key in request";
            goto fail;
        }
        *slot = val;
    }
    if (!op || op->type != MSGPACK_OBJECT_STR) {
        *why = "request op missing or not a string";
        goto fail;
    }
    if (op->via.str.size < 1 || op->via.str.size > MB_OP_MAX) {
        *why = "request op must be 1..64 bytes";
        goto fail;
    }
    if (!rid || !s_uint(rid, &req->rid) || req->rid == 0) {
        *why = "request rid missing or not a positive integer";
        goto fail;
    }
    if (ttl) {
        uint64_t ttl_ms;
        if (!s_uint(ttl, &ttl_ms) || ttl_ms == 0 || ttl_ms > UINT32_MAX) {
            *why = "request ttl not a positive 32-bit integer";
            goto fail;
        }
        req->ttl_ms = (uint32_t)ttl_ms;
    }
    if (auth && auth->type != MSGPACK_OBJECT_MAP) {
        *why = "request auth not a map";
        goto fail;
    }
    if (args && args->type != MSGPACK_OBJECT_MAP) {
        *why = "request args not a map";
        goto fail;
    }
    req->op = op->via.str.ptr;
    req->op_len = op->via.str.size;
    req->auth = auth;
    req->args = args;
    return 0;
fail:
    msgpack_unpacked_destroy(&req->msg);
    memset(req, 0, sizeof *req);
    return MB_EPROTO;
}

void mb_request_release(mb_request_t *req)
{
    if (!req)
        return;
    msgpack_unpacked_destroy(&req->msg);
    memset(req, 0, sizeof *req);
}

int mb_request_peek(const void *data, size_t size, uint64_t *rid, uint32_t *ttl_ms)
{
    const uint8_t *p = data;
    *rid = 0;
    *ttl_ms = 0;
    if (!data)
        return MB_EPROTO;
    /* One allocation-free pass checks the whole message is well-formed
       msgpack (counts, depth, no trailing bytes), so the broker refuses
       exactly the garbage the actors would, and the walk below can trust
       every header it reads. */
    mb_msgpack_head_t head;
    size_t used;
    if (mb_msgpack_head(p, size, &head) != 0 || head.kind != MB_MP_MAP ||
        mb_msgpack_skip(p, size, S_MAX_DEPTH, &used) != 0 || used != size)
        return MB_EPROTO;
    size_t pos = head.head_len;
    uint64_t found_rid = 0, found_ttl = 0;
    bool have_rid = false, have_ttl = false;
    for (uint64_t i = 0; i < head.count; i++) {
        mb_msgpack_head_t key, value;
        mb_msgpack_head(p + pos, size - pos, &key);
        const char *name = (const char *)p + pos + key.head_len;
        bool is_str3 = key.kind == MB_MP_STR && key.count == 3;
        bool is_rid = is_str3 && memcmp(name, "rid", 3) == 0;
        bool is_ttl = is_str3 && memcmp(name, "ttl", 3) == 0;
        mb_msgpack_skip(p + pos, size - pos, S_MAX_DEPTH, &used);
        pos += used;
        if (is_rid || is_ttl) {
            mb_msgpack_head(p + pos, size - pos, &value);
            if (value.kind != MB_MP_UINT || (is_rid && have_rid) || (is_ttl && have_ttl))
                return MB_EPROTO;
            if (is_rid) {
                found_rid = value.value;
                have_rid = true;
            } else {
                found_ttl = value.value;
                have_ttl = true;
            }
        }
        mb_msgpack_skip(p + pos, size - pos, S_MAX_DEPTH, &used);
        pos += used;
    }
    if (!have_rid || found_rid == 0)
        return MB_EPROTO;
    if (have_ttl && (found_ttl == 0 || found_ttl > UINT32_MAX))
        return MB_EPROTO;
    *rid = found_rid;
    *ttl_ms = (uint32_t)found_ttl;
    return 0;
}

void mb_request_pack_head(msgpack_packer *pk, const char *op, uint64_t rid, uint32_t ttl_ms,
                          uint32_t n_more)
{
    msgpack_pack_map(pk, 2 + (ttl_ms > 0) + n_more);
    mb_pack_cstr(pk, "op");
    mb_pack_cstr(pk, op);
    mb_pack_cstr(pk, "rid");
    msgpack_pack_uint64(pk, rid);
    if (ttl_ms > 0) {
        mb_pack_cstr(pk, "ttl");
        msgpack_pack_uint32(pk, ttl_ms);
    }
}

int mb_reply_decode(mb_reply_t *rep, const void *data, size_t size, const char **why)
{
    static const char *ignored;
    if (!why)
        why = &ignored;
    memset(rep, 0, sizeof *rep);
    int rc = s_unpack_map(&rep->msg, data, size, why);
    if (rc)
        return rc;

    const msgpack_object *rid = NULL, *status = NULL, *body = NULL, *error = NULL;
    const msgpack_object_map *map = &rep->msg.data.via.map;
    for (uint32_t i = 0; i < map->size; i++) {
        const msgpack_object *key = &map->ptr[i].key;
        const msgpack_object *val = &map->ptr[i].val;
        const msgpack_object **slot = s_key_is(key, "rid")      ? &rid
                                      : s_key_is(key, "status") ? &status
                                      : s_key_is(key, "body")   ? &body
                                      : s_key_is(key, "error")  ? &error
                                                                : NULL;
        if (!slot)
            continue;
        if (*slot) {
            *why = "duplicate key in reply";
            goto fail;
        }
        *slot = val;
    }
    /* rid 0 is allowed: it answers a request whose rid could not be read. */
    if (!rid || !s_uint(rid, &rep->rid)) {
        *why = "reply rid missing or not a non-negative integer";
        goto fail;
    }
    uint64_t code;
    if (!status || !s_uint(status, &code) || code < 100 || code > 599) {
        *why = "reply status missing or not in 100..599";
        goto fail;
    }
    rep->status = (int)code;
    if (error) {
        if (body) {
            *why = "reply has both body and error";
            goto fail;
        }
        if (error->type != MSGPACK_OBJECT_MAP) {
            *why = "reply error not a map";
            goto fail;
        }
        const msgpack_object *c = mb_map_get(error, "code");
        const msgpack_object *m = mb_map_get(error, "message");
        const msgpack_object *f = mb_map_get(error, "field");
        if (!mb_obj_str(c, &rep->code, &rep->code_len) ||
            !mb_obj_str(m, &rep->message, &rep->message_len)) {
            *why = "reply error needs code and message strings";
            goto fail;
        }
        if (f && !mb_obj_str(f, &rep->field, &rep->field_len)) {
            *why = "reply error field not a string";
            goto fail;
        }
    }
    rep->body = body;
    return 0;
fail:
    msgpack_unpacked_destroy(&rep->msg);
    memset(rep, 0, sizeof *rep);
    return MB_EPROTO;
}

void mb_reply_release(mb_reply_t *rep)
{
    if (!rep)
        return;
    msgpack_unpacked_destroy(&rep->msg);
    memset(rep, 0, sizeof *rep);
}

void mb_reply_pack_head(msgpack_packer *pk, uint64_t rid, int status)
{
    msgpack_pack_map(pk, 3);
    mb_pack_cstr(pk, "rid");
    msgpack_pack_uint64(pk, rid);
    mb_pack_cstr(pk, "status");
    msgpack_pack_int(pk, status);
    mb_pack_cstr(pk, "body");
}

void mb_reply_pack_error(msgpack_packer *pk, uint64_t rid, int status, const char *code,
                         const char *field, const char *message)
{
    msgpack_pack_map(pk, 3);
    mb_pack_cstr(pk, "rid");
    msgpack_pack_uint64(pk, rid);
    mb_pack_cstr(pk, "status");
    msgpack_pack_int(pk, status);
    mb_pack_cstr(pk, "error");
    msgpack_pack_map(pk, field ? 3 : 2);
    mb_pack_cstr(pk, "code");
    mb_pack_cstr(pk, code ? code : "internal");
    mb_pack_cstr(pk, "message");
    mb_pack_cstr(pk, message ? message : "");
    if (field) {
        mb_pack_cstr(pk, "field");
        mb_pack_cstr(pk, field);
    }
}
