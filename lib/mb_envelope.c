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

/*  Walks the entries of an encoded top-level map, checking each key and
    value as it goes (well-formed, inside the input, nested within the
    envelope's limit): after the last entry, the map was well-formed when
    `left` is 0, and had no trailing bytes when `pos` is `size`. */
typedef struct {
    const uint8_t *p;
    size_t size;
    size_t pos;    /* the next entry's key */
    uint64_t left; /* entries not yet read */
} s_map_iter_t;

static void s_map_begin(s_map_iter_t *it, const void *map, size_t size)
{
    mb_msgpack_head_t head;
    it->p = map;
    it->size = size;
    it->pos = 0;
    it->left = 0;
    if (mb_msgpack_head(map, size, &head) == 0 && head.kind == MB_MP_MAP) {
        it->pos = head.head_len;
        it->left = head.count;
    }
}

/*  Reads the next entry: *key is NULL when the key is not a string;
    *value and *value_len span the encoded value. Returns false at the
    end. */
static bool s_map_next(s_map_iter_t *it, const char **key, size_t *key_len,
                       const uint8_t **value, size_t *value_len)
{
    mb_msgpack_head_t head;
    size_t used;
    /* Inside the map, one level of the envelope's depth is taken. */
    if (it->left == 0 || mb_msgpack_head(it->p + it->pos, it->size - it->pos, &head) != 0 ||
        mb_msgpack_skip(it->p + it->pos, it->size - it->pos, S_MAX_DEPTH - 1, &used) != 0)
        return false;
    *key = head.kind == MB_MP_STR ? (const char *)it->p + it->pos + head.head_len : NULL;
    *key_len = head.kind == MB_MP_STR ? head.count : 0;
    it->pos += used;
    if (mb_msgpack_skip(it->p + it->pos, it->size - it->pos, S_MAX_DEPTH - 1, &used) != 0)
        return false;
    *value = it->p + it->pos;
    *value_len = used;
    it->pos += used;
    it->left--;
    return true;
}

/*  Starts the one walk that both reads an envelope and checks it:
    `data` must be a msgpack map. */
static int s_envelope_begin(s_map_iter_t *it, const void *data, size_t size, const char **why)
{
    mb_msgpack_head_t top;
    if (!data || size == 0) {
        *why = "empty message";
        return MB_EPROTO;
    }
    if (mb_msgpack_head(data, size, &top) != 0 || top.kind != MB_MP_MAP) {
        *why = "envelope is not a msgpack map";
        return MB_EPROTO;
    }
    s_map_begin(it, data, size);
    return 0;
}

/*  Ends that walk: every entry was read (each checked as it was) and
    nothing trails the map. */
static int s_envelope_end(const s_map_iter_t *it, const char **why)
{
    if (it->left != 0) {
        *why = "malformed, truncated or too deeply nested msgpack";
        return MB_EPROTO;
    }
    if (it->pos != it->size) {
        *why = "trailing bytes after the envelope";
        return MB_EPROTO;
    }
    return 0;
}

/*  Checks that `data` is exactly one well-formed msgpack map within the
    envelope's depth limit, refusing lying counts and deep nesting before
    anything allocates for them. */
static int s_check_map(const void *data, size_t size, const char **why)
{
    s_map_iter_t it;
    const char *key;
    size_t key_len, len;
    const uint8_t *value;
    if (s_envelope_begin(&it, data, size, why))
        return MB_EPROTO;
    while (s_map_next(&it, &key, &key_len, &value, &len))
        ;
    return s_envelope_end(&it, why);
}

static bool s_name_is(const char *key, size_t key_len, const char *name)
{
    return key && key_len == strlen(name) && memcmp(key, name, key_len) == 0;
}

/*  Reads an encoded non-negative integer. */
static bool s_raw_uint(const uint8_t *value, size_t len, uint64_t *out)
{
    mb_msgpack_head_t head;
    if (mb_msgpack_head(value, len, &head) != 0 || head.kind != MB_MP_UINT)
        return false;
    *out = head.value;
    return true;
}

/*  Reads an encoded string in place. */
static bool s_raw_str(const uint8_t *value, size_t len, const char **s, size_t *s_len)
{
    mb_msgpack_head_t head;
    if (!value || mb_msgpack_head(value, len, &head) != 0 || head.kind != MB_MP_STR)
        return false;
    *s = (const char *)value + head.head_len;
    *s_len = head.count;
    return true;
}

/*  Unpacks the one object in the `len` bytes at `copy` into *msg, whose
    zone then owns `copy`: msgpack_unpack_next() leaves strings pointing
    into its input, and an envelope must outlive the frame it came in. On
    failure `copy` is freed. */
static int s_unpack_owned(msgpack_unpacked *msg, char *copy, size_t len, const char **why)
{
    msgpack_unpacked_init(msg);
    size_t offset = 0;
    msgpack_unpack_return rc = msgpack_unpack_next(msg, copy, len, &offset);
    if (rc != MSGPACK_UNPACK_SUCCESS || offset != len) {
        free(copy);
        msgpack_unpacked_destroy(msg);
        *why = rc == MSGPACK_UNPACK_NOMEM_ERROR ? "out of memory decoding the envelope"
                                                : "malformed msgpack";
        return MB_EPROTO;
    }
    /* An empty map may not have made a zone. */
    if (!msg->zone)
        msg->zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    if (!msg->zone || !msgpack_zone_push_finalizer(msg->zone, free, copy)) {
        mb_error(0, "out of memory decoding an envelope");
        abort();
    }
    return 0;
}

/*  Decodes one msgpack map at `data` into *msg, which owns a copy. */
static int s_unpack_map(msgpack_unpacked *msg, const void *data, size_t size, const char **why)
{
    if (s_check_map(data, size, why))
        return MB_EPROTO;
    char *copy = mb_malloc(size);
    memcpy(copy, data, size);
    return s_unpack_owned(msg, copy, size, why);
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
    static const char *ignored;
    *rid = 0;
    *ttl_ms = 0;
    /* One allocation-free walk reads rid and ttl and checks the whole
       message is well-formed msgpack (counts, depth, no trailing bytes),
       so peek refuses exactly the garbage decode would. */
    s_map_iter_t it;
    if (s_envelope_begin(&it, data, size, &ignored))
        return MB_EPROTO;
    const char *key;
    size_t key_len, len;
    const uint8_t *value;
    uint64_t found_rid = 0, found_ttl = 0;
    bool have_rid = false, have_ttl = false;
    while (s_map_next(&it, &key, &key_len, &value, &len)) {
        bool is_rid = s_name_is(key, key_len, "rid"), is_ttl = s_name_is(key, key_len, "ttl");
        if (!is_rid && !is_ttl)
            continue;
        if ((is_rid && have_rid) || (is_ttl && have_ttl) ||
            !s_raw_uint(value, len, is_rid ? &found_rid : &found_ttl))
            return MB_EPROTO;
        have_rid |= is_rid;
        have_ttl |= is_ttl;
    }
    if (s_envelope_end(&it, &ignored))
        return MB_EPROTO;
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

int mb_reply_view(mb_reply_view_t *view, const void *data, size_t size, const char **why)
{
    static const char *ignored;
    if (!why)
        why = &ignored;
    memset(view, 0, sizeof *view);
    s_map_iter_t it;
    if (s_envelope_begin(&it, data, size, why))
        return MB_EPROTO;
    const uint8_t *rid = NULL, *status = NULL, *body = NULL, *error = NULL;
    size_t rid_len = 0, status_len = 0, body_len = 0, error_len = 0;
    const char *key;
    size_t key_len, len;
    const uint8_t *value;
    while (s_map_next(&it, &key, &key_len, &value, &len)) {
        const uint8_t **slot = NULL;
        size_t *slot_len = NULL;
        if (s_name_is(key, key_len, "rid"))
            slot = &rid, slot_len = &rid_len;
        else if (s_name_is(key, key_len, "status"))
            slot = &status, slot_len = &status_len;
        else if (s_name_is(key, key_len, "body"))
            slot = &body, slot_len = &body_len;
        else if (s_name_is(key, key_len, "error"))
            slot = &error, slot_len = &error_len;
        if (!slot)
            continue; /* unknown keys let the envelope grow */
        if (*slot) {
            *why = "duplicate key in reply";
            return MB_EPROTO;
        }
        *slot = value;
        *slot_len = len;
    }
    if (s_envelope_end(&it, why))
        return MB_EPROTO;
    /* rid 0 is allowed: it answers a request whose rid could not be read. */
    if (!rid || !s_raw_uint(rid, rid_len, &view->rid)) {
        *why = "reply rid missing or not a non-negative integer";
        goto fail;
    }
    uint64_t code;
    if (!status || !s_raw_uint(status, status_len, &code) || code < 100 || code > 599) {
        *why = "reply status missing or not in 100..599";
        goto fail;
    }
    view->status = (int)code;
    if (error) {
        if (body) {
            *why = "reply has both body and error";
            goto fail;
        }
        /* The first of each key counts, as mb_map_get() reads maps. */
        const uint8_t *c = NULL, *m = NULL, *f = NULL;
        size_t c_len = 0, m_len = 0, f_len = 0;
        mb_msgpack_head_t head;
        if (mb_msgpack_head(error, error_len, &head) != 0 || head.kind != MB_MP_MAP) {
            *why = "reply error not a map";
            goto fail;
        }
        s_map_begin(&it, error, error_len);
        while (s_map_next(&it, &key, &key_len, &value, &len)) {
            if (!c && s_name_is(key, key_len, "code"))
                c = value, c_len = len;
            else if (!m && s_name_is(key, key_len, "message"))
                m = value, m_len = len;
            else if (!f && s_name_is(key, key_len, "field"))
                f = value, f_len = len;
        }
        if (!s_raw_str(c, c_len, &view->code, &view->code_len) ||
            !s_raw_str(m, m_len, &view->message, &view->message_len)) {
            *why = "reply error needs code and message strings";
            goto fail;
        }
        if (f && !s_raw_str(f, f_len, &view->field, &view->field_len)) {
            *why = "reply error field not a string";
            goto fail;
        }
    }
    view->body = body;
    view->body_len = body_len;
    return 0;
fail:
    memset(view, 0, sizeof *view);
    return MB_EPROTO;
}

int mb_reply_decode(mb_reply_t *rep, const void *data, size_t size, const char **why)
{
    static const char *ignored;
    if (!why)
        why = &ignored;
    memset(rep, 0, sizeof *rep);
    /* The view is taken of a copy, which the zone then keeps: every
       pointer in *rep must outlive the caller's frame. msg holds the
       whole envelope, as callers reading extra error fields expect. */
    if (!data || size == 0) {
        *why = "empty message";
        return MB_EPROTO;
    }
    char *copy = mb_malloc(size);
    memcpy(copy, data, size);
    mb_reply_view_t view;
    int rc = mb_reply_view(&view, copy, size, why);
    if (rc) {
        free(copy);
        return rc;
    }
    if (s_unpack_owned(&rep->msg, copy, size, why)) {
        memset(rep, 0, sizeof *rep);
        return MB_EPROTO;
    }
    /* The view refused duplicate keys: the first "body" is the body. */
    rep->body = view.body ? mb_map_get(&rep->msg.data, "body") : NULL;
    rep->rid = view.rid;
    rep->status = view.status;
    rep->code = view.code;
    rep->code_len = view.code_len;
    rep->message = view.message;
    rep->message_len = view.message_len;
    rep->field = view.field;
    rep->field_len = view.field_len;
    return 0;
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
