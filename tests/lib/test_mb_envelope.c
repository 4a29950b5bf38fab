/*  mb_envelope: requests and replies, and every way a peer can get them
    wrong. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "mb_envelope.h"
#include "mb_error.h"
#include "mb_msgpack.h"

typedef struct {
    msgpack_sbuffer buf;
    msgpack_packer pk;
} packer_t;

static void s_init(packer_t *p)
{
    msgpack_sbuffer_init(&p->buf);
    msgpack_packer_init(&p->pk, &p->buf, msgpack_sbuffer_write);
}

static void s_fini(packer_t *p)
{
    msgpack_sbuffer_destroy(&p->buf);
}

/*  The in-place view of a reply (which mb_reply_decode() is built on)
    says what msgpack-c reads in the same bytes, and what the decoded
    reply says, and points into the bytes it was given. */
static void s_assert_view_is_decode(const mb_reply_view_t *view, int viewed, const mb_reply_t *rep,
                                    const void *data, size_t size)
{
    const char *start = data, *end = start + size;
    cr_assert_eq(viewed, 0, "view accepts what decode accepts");
    msgpack_unpacked whole;
    msgpack_unpacked_init(&whole);
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(&whole, data, size, &off), MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *error = mb_map_get(&whole.data, "error");
    const msgpack_object *body = mb_map_get(&whole.data, "body");
    const msgpack_object *rid = mb_map_get(&whole.data, "rid");
    const msgpack_object *status = mb_map_get(&whole.data, "status");
    cr_assert(rid && rid->type == MSGPACK_OBJECT_POSITIVE_INTEGER);
    cr_assert(status && status->type == MSGPACK_OBJECT_POSITIVE_INTEGER);
    cr_assert_eq(view->rid, rid->via.u64);
    cr_assert_eq((uint64_t)view->status, status->via.u64);
    cr_assert_eq(rep->rid, view->rid);
    cr_assert_eq(rep->status, view->status);
    cr_assert_eq(view->body != NULL, body != NULL);
    cr_assert_eq(rep->body != NULL, body != NULL);
    cr_assert_eq(view->code != NULL, error != NULL);
    cr_assert_eq(rep->code != NULL, error != NULL);
    if (error) {
        const char *s;
        size_t len;
        cr_assert(mb_obj_str(mb_map_get(error, "code"), &s, &len));
        cr_assert(view->code >= start && view->code + view->code_len <= end);
        cr_assert(view->code_len == len && memcmp(view->code, s, len) == 0);
        cr_assert(rep->code_len == len && memcmp(rep->code, s, len) == 0);
        cr_assert(mb_obj_str(mb_map_get(error, "message"), &s, &len));
        cr_assert(view->message_len == len && memcmp(view->message, s, len) == 0);
        cr_assert(rep->message_len == len && memcmp(rep->message, s, len) == 0);
        bool field = mb_obj_str(mb_map_get(error, "field"), &s, &len);
        cr_assert_eq(view->field != NULL, field);
        cr_assert_eq(rep->field != NULL, field);
        if (field) {
            cr_assert(view->field_len == len && memcmp(view->field, s, len) == 0);
            cr_assert(rep->field_len == len && memcmp(rep->field, s, len) == 0);
        }
    }
    if (body) {
        cr_assert((const char *)view->body >= start &&
                  (const char *)view->body + view->body_len <= end);
        msgpack_unpacked spanned;
        msgpack_unpacked_init(&spanned);
        off = 0;
        cr_assert_eq(msgpack_unpack_next(&spanned, (const char *)view->body, view->body_len, &off),
                     MSGPACK_UNPACK_SUCCESS);
        cr_assert_eq(off, view->body_len);
        cr_assert(msgpack_object_equal(spanned.data, *body));
        cr_assert(msgpack_object_equal(*rep->body, *body));
        msgpack_unpacked_destroy(&spanned);
    }
    msgpack_unpacked_destroy(&whole);
}

Test(mb_envelope, usage)
{
    /* The gateway packs a request... */
    packer_t p;
    s_init(&p);
    mb_request_pack_head(&p.pk, "track.get", 42, 5000, 2);
    mb_pack_cstr(&p.pk, "auth");
    msgpack_pack_map(&p.pk, 1);
    mb_pack_cstr(&p.pk, "user");
    mb_pack_cstr(&p.pk, "u1");
    mb_pack_cstr(&p.pk, "args");
    msgpack_pack_map(&p.pk, 1);
    mb_pack_cstr(&p.pk, "id");
    mb_pack_cstr(&p.pk, "4uLU6hMCjMI75M1A2tKUQC");

    /* ...the broker peeks at it... */
    uint64_t rid;
    uint32_t ttl;
    cr_assert_eq(mb_request_peek(p.buf.data, p.buf.size, &rid, &ttl), 0);
    cr_assert_eq(rid, 42);
    cr_assert_eq(ttl, 5000);

    /* ...the actor decodes it. The envelope owns its bytes, so the frame
       it came in can go at once. */
    char *frame = malloc(p.buf.size);
    memcpy(frame, p.buf.data, p.buf.size);
    mb_request_t req;
    const char *why = NULL;
    cr_assert_eq(mb_request_decode(&req, frame, p.buf.size, &why), 0, "%s", why);
    memset(frame, 0, p.buf.size);
    free(frame);
    cr_assert_eq(req.op_len, 9);
    cr_assert_eq(memcmp(req.op, "track.get", 9), 0);
    cr_assert_eq(req.rid, 42);
    cr_assert_eq(req.ttl_ms, 5000);
    cr_assert(mb_obj_str_eq(mb_map_get(req.auth, "user"), "u1"));
    cr_assert(mb_obj_str_eq(mb_map_get(req.args, "id"), "4uLU6hMCjMI75M1A2tKUQC"));
    mb_request_release(&req);
    mb_request_release(&req); /* safe twice */

    /* The actor answers; the gateway decodes the reply. */
    msgpack_sbuffer_clear(&p.buf);
    mb_reply_pack_head(&p.pk, 42, 200);
    msgpack_pack_map(&p.pk, 1);
    mb_pack_cstr(&p.pk, "title");
    mb_pack_cstr(&p.pk, "Teardrop");
    mb_reply_t rep;
    cr_assert_eq(mb_reply_decode(&rep, p.buf.data, p.buf.size, &why), 0, "%s", why);
    cr_assert_eq(rep.rid, 42);
    cr_assert_eq(rep.status, 200);
    cr_assert(mb_obj_str_eq(mb_map_get(rep.body, "title"), "Teardrop"));
    cr_assert_null(rep.code);
    /* The gateway reads it in place instead: the same, without a copy. */
    mb_reply_view_t view;
    int viewed = mb_reply_view(&view, p.buf.data, p.buf.size, &why);
    s_assert_view_is_decode(&view, viewed, &rep, p.buf.data, p.buf.size);
    mb_reply_release(&rep);
    s_fini(&p);
}

Test(mb_envelope, minimal_request_has_no_ttl_auth_or_args)
{
    packer_t p;
    s_init(&p);
    mb_request_pack_head(&p.pk, "x", 1, 0, 0);
    mb_request_t req;
    cr_assert_eq(mb_request_decode(&req, p.buf.data, p.buf.size, NULL), 0);
    cr_assert_eq(req.ttl_ms, 0);
    cr_assert_null(req.auth);
    cr_assert_null(req.args);
    mb_request_release(&req);
    uint64_t rid;
    uint32_t ttl = 9;
    cr_assert_eq(mb_request_peek(p.buf.data, p.buf.size, &rid, &ttl), 0);
    cr_assert_eq(rid, 1);
    cr_assert_eq(ttl, 0);
    s_fini(&p);
}

Test(mb_envelope, error_reply_round_trip)
{
    packer_t p;
    s_init(&p);
    mb_reply_pack_error(&p.pk, 7, 400, "invalid", "body.isrc", "isrc must be 12 characters");
    mb_reply_t rep;
    cr_assert_eq(mb_reply_decode(&rep, p.buf.data, p.buf.size, NULL), 0);
    cr_assert_eq(rep.status, 400);
    cr_assert_eq(rep.rid, 7);
    cr_assert_null(rep.body);
    cr_assert_eq(rep.code_len, 7);
    cr_assert_eq(memcmp(rep.code, "invalid", 7), 0);
    cr_assert_eq(memcmp(rep.message, "isrc must be 12 characters", rep.message_len), 0);
    cr_assert_eq(memcmp(rep.field, "body.isrc", rep.field_len), 0);
    mb_reply_view_t view;
    s_assert_view_is_decode(&view, mb_reply_view(&view, p.buf.data, p.buf.size, NULL), &rep,
                            p.buf.data, p.buf.size);
    mb_reply_release(&rep);

    msgpack_sbuffer_clear(&p.buf);
    mb_reply_pack_error(&p.pk, 0, 503, "overloaded", NULL, "try later");
    cr_assert_eq(mb_reply_decode(&rep, p.buf.data, p.buf.size, NULL), 0);
    cr_assert_eq(rep.rid, 0, "rid 0 answers an unreadable request");
    cr_assert_null(rep.field);
    cr_assert_eq(rep.status, 503);
    mb_reply_release(&rep);
    s_fini(&p);
}

Test(mb_envelope, unknown_keys_are_ignored)
{
    packer_t p;
    s_init(&p);
    mb_request_pack_head(&p.pk, "x", 3, 0, 2);
    mb_pack_cstr(&p.pk, "trace");
    msgpack_pack_array(&p.pk, 1);
    msgpack_pack_nil(&p.pk);
    msgpack_pack_int(&p.pk, 5); /* a non-string key */
    msgpack_pack_int(&p.pk, 6);
    mb_request_t req;
    cr_assert_eq(mb_request_decode(&req, p.buf.data, p.buf.size, NULL), 0);
    mb_request_release(&req);
    s_fini(&p);
}

Test(mb_envelope, peek_finds_rid_and_ttl_after_other_keys)
{
    packer_t p;
    s_init(&p);
    msgpack_pack_map(&p.pk, 4);
    mb_pack_cstr(&p.pk, "args");
    msgpack_pack_map(&p.pk, 1);
    mb_pack_cstr(&p.pk, "rid"); /* nested "rid" must not be taken */
    msgpack_pack_int(&p.pk, 999);
    mb_pack_cstr(&p.pk, "op");
    mb_pack_cstr(&p.pk, "a.b");
    mb_pack_cstr(&p.pk, "ttl");
    msgpack_pack_uint32(&p.pk, UINT32_MAX);
    mb_pack_cstr(&p.pk, "rid");
    msgpack_pack_uint64(&p.pk, UINT64_MAX);
    uint64_t rid;
    uint32_t ttl;
    cr_assert_eq(mb_request_peek(p.buf.data, p.buf.size, &rid, &ttl), 0);
    cr_assert_eq(rid, UINT64_MAX);
    cr_assert_eq(ttl, UINT32_MAX);
    s_fini(&p);
}

/* ---- malformed requests --------------------------------------------------- */

/*  Asserts the request is refused by both decode and (when `peek_too`) peek. */
static void s_assert_bad_request(const void *data, size_t size, const char *label)
{
    mb_request_t req;
    const char *why = NULL;
    int rc = mb_request_decode(&req, data, size, &why);
    cr_assert_eq(rc, MB_EPROTO, "%s: decoded", label);
    cr_assert_not_null(why, "%s: a reason", label);
    cr_assert_null(req.op, "%s: nothing to release", label);
}

#define BAD(bytes) s_assert_bad_request(bytes, sizeof(bytes) - 1, #bytes)

Test(mb_envelope, refuses_non_maps_and_empty_input)
{
    mb_request_t req;
    const char *why;
    cr_assert_eq(mb_request_decode(&req, NULL, 0, &why), MB_EPROTO);
    cr_assert_eq(mb_request_decode(&req, "", 0, &why), MB_EPROTO);
    BAD("\x01");
    BAD("\xc0");
    BAD("\x91\x80");
    BAD("\xa2op");
    BAD("\xc1");
    uint64_t rid;
    uint32_t ttl;
    cr_assert_eq(mb_request_peek("\x91\x01", 2, &rid, &ttl), MB_EPROTO);
    cr_assert_eq(mb_request_peek(NULL, 0, &rid, &ttl), MB_EPROTO);
    cr_assert_eq(mb_request_peek("", 0, &rid, &ttl), MB_EPROTO);
}

Test(mb_envelope, refuses_every_truncation_and_trailing_bytes)
{
    packer_t p;
    s_init(&p);
    mb_request_pack_head(&p.pk, "track.get", 300, 70000, 1);
    mb_pack_cstr(&p.pk, "args");
    msgpack_pack_map(&p.pk, 2);
    mb_pack_cstr(&p.pk, "ids");
    msgpack_pack_array(&p.pk, 2);
    mb_pack_cstr(&p.pk, "a");
    msgpack_pack_double(&p.pk, 1.25);
    mb_pack_cstr(&p.pk, "body");
    msgpack_pack_bin(&p.pk, 2);
    msgpack_pack_bin_body(&p.pk, "\0\1", 2);
    for (size_t cut = 0; cut < p.buf.size; cut++) {
        /* a fresh heap copy of each prefix, so ASan sees any overread */
        char *prefix = malloc(cut ? cut : 1);
        memcpy(prefix, p.buf.data, cut);
        mb_request_t req;
        cr_assert_eq(mb_request_decode(&req, prefix, cut, NULL), MB_EPROTO, "cut at %zu", cut);
        uint64_t rid;
        uint32_t ttl;
        cr_assert_eq(mb_request_peek(prefix, cut, &rid, &ttl), MB_EPROTO, "peek, cut at %zu", cut);
        free(prefix);
    }
    msgpack_pack_nil(&p.pk); /* one byte too many */
    mb_request_t req;
    const char *why;
    cr_assert_eq(mb_request_decode(&req, p.buf.data, p.buf.size, &why), MB_EPROTO);
    cr_assert_str_eq(why, "trailing bytes after the envelope");
    s_fini(&p);
}

/*  Packs {"op": <op>, "rid": <rid>, <extra key>: <extra value>} with the
    caller's packing functions, then asserts it is refused. */
typedef void (*pack_fn)(msgpack_packer *pk);

static void s_pack_op_ok(msgpack_packer *pk)
{
    mb_pack_cstr(pk, "op");
    mb_pack_cstr(pk, "x.y");
}
static void s_pack_rid_ok(msgpack_packer *pk)
{
    mb_pack_cstr(pk, "rid");
    msgpack_pack_uint64(pk, 1);
}

static void s_op_missing(msgpack_packer *pk)
{
    mb_pack_cstr(pk, "nop");
    msgpack_pack_nil(pk);
}
static void s_op_int(msgpack_packer *pk)
{
    mb_pack_cstr(pk, "op");
    msgpack_pack_int(pk, 1);
}
static void s_op_bin(msgpack_packer *pk)
{
    mb_pack_cstr(pk, "op");
    msgpack_pack_bin(pk, 1);
    msgpack_pack_bin_body(pk, "x", 1);
}
static void s_op_empty(msgpack_packer *pk)
{
    mb_pack_cstr(pk, "op");
    mb_pack_cstr(pk, "");
}
static void s_op_65(msgpack_packer *pk)
{
    char op[66];
    memset(op, 'o', 65);
    op[65] = '\0';
    mb_pack_cstr(pk, "op");
    mb_pack_cstr(pk, op);
}
static void s_rid_missing(msgpack_packer *pk)
{
    mb_pack_cstr(pk, "rod");
    msgpack_pack_int(pk, 1);
}
static void s_rid_zero(msgpack_packer *pk)
{
    mb_pack_cstr(pk, "rid");
    msgpack_pack_int(pk, 0);
}
static void s_rid_negative(msgpack_packer *pk)
{
    mb_pack_cstr(pk, "rid");
    msgpack_pack_int(pk, -5);
}
static void s_rid_string(msgpack_packer *pk)
{
    mb_pack_cstr(pk, "rid");
    mb_pack_cstr(pk, "5");
}
static void s_rid_float(msgpack_packer *pk)
{
    mb_pack_cstr(pk, "rid");
    msgpack_pack_double(pk, 5.0);
}
static void s_ttl_zero(msgpack_packer *pk)
{
    mb_pack_cstr(pk, "ttl");
    msgpack_pack_int(pk, 0);
}
static void s_ttl_2_32(msgpack_packer *pk)
{
    mb_pack_cstr(pk, "ttl");
    msgpack_pack_uint64(pk, UINT64_C(1) << 32);
}
static void s_ttl_negative(msgpack_packer *pk)
{
    mb_pack_cstr(pk, "ttl");
    msgpack_pack_int(pk, -1);
}
static void s_ttl_nil(msgpack_packer *pk)
{
    mb_pack_cstr(pk, "ttl");
    msgpack_pack_nil(pk);
}
static void s_auth_str(msgpack_packer *pk)
{
    mb_pack_cstr(pk, "auth");
    mb_pack_cstr(pk, "admin");
}
static void s_auth_nil(msgpack_packer *pk)
{
    mb_pack_cstr(pk, "auth");
    msgpack_pack_nil(pk);
}
static void s_args_array(msgpack_packer *pk)
{
    mb_pack_cstr(pk, "args");
    msgpack_pack_array(pk, 0);
}
static void s_dup_op(msgpack_packer *pk)
{
    s_pack_op_ok(pk);
}
static void s_dup_rid(msgpack_packer *pk)
{
    s_pack_rid_ok(pk);
}

Test(mb_envelope, refuses_wrong_types_per_field)
{
    struct {
        const char *label;
        pack_fn first, second, third;
    } cases[] = {
        {"op missing", s_op_missing, s_pack_rid_ok, NULL},
        {"op int", s_op_int, s_pack_rid_ok, NULL},
        {"op bin", s_op_bin, s_pack_rid_ok, NULL},
        {"op empty", s_op_empty, s_pack_rid_ok, NULL},
        {"op 65 bytes", s_op_65, s_pack_rid_ok, NULL},
        {"rid missing", s_pack_op_ok, s_rid_missing, NULL},
        {"rid 0", s_pack_op_ok, s_rid_zero, NULL},
        {"rid negative", s_pack_op_ok, s_rid_negative, NULL},
        {"rid string", s_pack_op_ok, s_rid_string, NULL},
        {"rid float", s_pack_op_ok, s_rid_float, NULL},
        {"ttl 0", s_pack_op_ok, s_pack_rid_ok, s_ttl_zero},
        {"ttl 2^32", s_pack_op_ok, s_pack_rid_ok, s_ttl_2_32},
        {"ttl negative", s_pack_op_ok, s_pack_rid_ok, s_ttl_negative},
        {"ttl nil", s_pack_op_ok, s_pack_rid_ok, s_ttl_nil},
        {"auth string", s_pack_op_ok, s_pack_rid_ok, s_auth_str},
        {"auth nil", s_pack_op_ok, s_pack_rid_ok, s_auth_nil},
        {"args array", s_pack_op_ok, s_pack_rid_ok, s_args_array},
        {"op twice", s_pack_op_ok, s_pack_rid_ok, s_dup_op},
        {"rid twice", s_pack_op_ok, s_pack_rid_ok, s_dup_rid},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        packer_t p;
        s_init(&p);
        msgpack_pack_map(&p.pk, cases[i].third ? 3 : 2);
        cases[i].first(&p.pk);
        cases[i].second(&p.pk);
        if (cases[i].third)
            cases[i].third(&p.pk);
        s_assert_bad_request(p.buf.data, p.buf.size, cases[i].label);
        s_fini(&p);
    }
}

Test(mb_envelope, op_of_64_bytes_is_the_longest_accepted)
{
    char op[65];
    memset(op, 'o', 64);
    op[64] = '\0';
    packer_t p;
    s_init(&p);
    mb_request_pack_head(&p.pk, op, 1, 0, 0);
    mb_request_t req;
    cr_assert_eq(mb_request_decode(&req, p.buf.data, p.buf.size, NULL), 0);
    cr_assert_eq(req.op_len, 64);
    mb_request_release(&req);
    s_fini(&p);
}

Test(mb_envelope, refuses_huge_declared_counts_without_allocating_for_them)
{
    /* map32 claiming 4 billion entries */
    BAD("\xdf\xff\xff\xff\xff\xa2op\xa1x");
    /* array32 inside args claiming 2^31 elements */
    BAD("\x83\xa2op\xa1x\xa3rid\x01\xa4"
        "args\x81\xa1"
        "a\xdd\x80\x00\x00\x00\x01");
    /* map16 claiming 65535 entries in 8 bytes */
    BAD("\x83\xa2op\xa1x\xa3rid\x01\xa4"
        "args\xde\xff\xff\x01\x02");
    /* str32 claiming 4 GiB */
    BAD("\x82\xa2op\xdb\xff\xff\xff\xff"
        "abc\xa3rid\x01");
    /* bin32 and ext32 likewise */
    BAD("\x83\xa2op\xa1x\xa3rid\x01\xa1z\xc6\x7f\xff\xff\xff\x00");
    BAD("\x83\xa2op\xa1x\xa3rid\x01\xa1z\xc9\x7f\xff\xff\xff\x01\x00");
}

/*  Packs a request whose args hold `depth` nested arrays around an int. */
static void s_pack_nested(packer_t *p, int depth)
{
    mb_request_pack_head(&p->pk, "x", 1, 0, 1);
    mb_pack_cstr(&p->pk, "args");
    msgpack_pack_map(&p->pk, 1);
    mb_pack_cstr(&p->pk, "a");
    for (int i = 0; i < depth; i++)
        msgpack_pack_array(&p->pk, 1);
    msgpack_pack_int(&p->pk, 1);
}

Test(mb_envelope, limits_nesting_depth)
{
    /* top map + args map + 30 arrays = 32 containers: accepted */
    packer_t p;
    s_init(&p);
    s_pack_nested(&p, 30);
    mb_request_t req;
    const char *why = NULL;
    cr_assert_eq(mb_request_decode(&req, p.buf.data, p.buf.size, &why), 0, "%s", why);
    mb_request_release(&req);
    s_fini(&p);

    s_init(&p);
    s_pack_nested(&p, 31);
    s_assert_bad_request(p.buf.data, p.buf.size, "33 levels");
    s_fini(&p);

    s_init(&p);
    s_pack_nested(&p, 100000); /* 100 KB of '[' */
    s_assert_bad_request(p.buf.data, p.buf.size, "100000 levels");
    uint64_t rid;
    uint32_t ttl;
    cr_assert_eq(mb_request_peek(p.buf.data, p.buf.size, &rid, &ttl), MB_EPROTO,
                 "peek refuses what decode refuses");
    s_fini(&p);

    /* Replies too: top map + 31 arrays in the body = 32, accepted; 33 not. */
    for (int arrays = 31; arrays <= 32; arrays++) {
        s_init(&p);
        mb_reply_pack_head(&p.pk, 5, 200);
        for (int i = 0; i < arrays; i++)
            msgpack_pack_array(&p.pk, 1);
        msgpack_pack_nil(&p.pk);
        mb_reply_t rep;
        mb_reply_view_t view;
        int want = arrays == 31 ? 0 : MB_EPROTO;
        cr_assert_eq(mb_reply_view(&view, p.buf.data, p.buf.size, NULL), want, "%d arrays", arrays);
        cr_assert_eq(mb_reply_decode(&rep, p.buf.data, p.buf.size, NULL), want, "%d arrays",
                     arrays);
        if (want == 0)
            mb_reply_release(&rep);
        s_fini(&p);
    }
}

/* ---- malformed replies ----------------------------------------------------- */

static void s_assert_bad_reply(packer_t *p, const char *label)
{
    mb_reply_t rep;
    const char *why = NULL;
    cr_assert_eq(mb_reply_decode(&rep, p->buf.data, p->buf.size, &why), MB_EPROTO, "%s", label);
    cr_assert_not_null(why);
    cr_assert_null(rep.body);
    cr_assert_null(rep.code);
    mb_reply_view_t view;
    why = NULL;
    cr_assert_eq(mb_reply_view(&view, p->buf.data, p->buf.size, &why), MB_EPROTO, "view: %s",
                 label);
    cr_assert_not_null(why);
    cr_assert_null(view.body);
    cr_assert_null(view.code);
    msgpack_sbuffer_clear(&p->buf);
}

Test(mb_envelope, refuses_malformed_replies)
{
    packer_t p;
    s_init(&p);

    msgpack_pack_map(&p.pk, 1);
    mb_pack_cstr(&p.pk, "status");
    msgpack_pack_int(&p.pk, 200);
    s_assert_bad_reply(&p, "rid missing");

    mb_reply_pack_head(&p.pk, 1, 99);
    msgpack_pack_nil(&p.pk);
    s_assert_bad_reply(&p, "status 99");

    mb_reply_pack_head(&p.pk, 1, 600);
    msgpack_pack_nil(&p.pk);
    s_assert_bad_reply(&p, "status 600");

    msgpack_pack_map(&p.pk, 2);
    mb_pack_cstr(&p.pk, "rid");
    msgpack_pack_int(&p.pk, 1);
    mb_pack_cstr(&p.pk, "status");
    mb_pack_cstr(&p.pk, "200");
    s_assert_bad_reply(&p, "status string");

    msgpack_pack_map(&p.pk, 2);
    mb_pack_cstr(&p.pk, "rid");
    msgpack_pack_int(&p.pk, -1);
    mb_pack_cstr(&p.pk, "status");
    msgpack_pack_int(&p.pk, 200);
    s_assert_bad_reply(&p, "rid negative");

    msgpack_pack_map(&p.pk, 3);
    mb_pack_cstr(&p.pk, "rid");
    msgpack_pack_int(&p.pk, 1);
    mb_pack_cstr(&p.pk, "status");
    msgpack_pack_int(&p.pk, 500);
    mb_pack_cstr(&p.pk, "error");
    mb_pack_cstr(&p.pk, "boom");
    s_assert_bad_reply(&p, "error not a map");

    msgpack_pack_map(&p.pk, 3);
    mb_pack_cstr(&p.pk, "rid");
    msgpack_pack_int(&p.pk, 1);
    mb_pack_cstr(&p.pk, "status");
    msgpack_pack_int(&p.pk, 500);
    mb_pack_cstr(&p.pk, "error");
    msgpack_pack_map(&p.pk, 1);
    mb_pack_cstr(&p.pk, "code");
    mb_pack_cstr(&p.pk, "x");
    s_assert_bad_reply(&p, "error without message");

    msgpack_pack_map(&p.pk, 3);
    mb_pack_cstr(&p.pk, "rid");
    msgpack_pack_int(&p.pk, 1);
    mb_pack_cstr(&p.pk, "status");
    msgpack_pack_int(&p.pk, 500);
    mb_pack_cstr(&p.pk, "error");
    msgpack_pack_map(&p.pk, 2);
    mb_pack_cstr(&p.pk, "code");
    msgpack_pack_int(&p.pk, 5);
    mb_pack_cstr(&p.pk, "message");
    mb_pack_cstr(&p.pk, "m");
    s_assert_bad_reply(&p, "error code not a string");

    msgpack_pack_map(&p.pk, 3);
    mb_pack_cstr(&p.pk, "rid");
    msgpack_pack_int(&p.pk, 1);
    mb_pack_cstr(&p.pk, "status");
    msgpack_pack_int(&p.pk, 400);
    mb_pack_cstr(&p.pk, "error");
    msgpack_pack_map(&p.pk, 3);
    mb_pack_cstr(&p.pk, "code");
    mb_pack_cstr(&p.pk, "c");
    mb_pack_cstr(&p.pk, "message");
    mb_pack_cstr(&p.pk, "m");
    mb_pack_cstr(&p.pk, "field");
    msgpack_pack_true(&p.pk);
    s_assert_bad_reply(&p, "error field not a string");

    msgpack_pack_map(&p.pk, 4);
    mb_pack_cstr(&p.pk, "rid");
    msgpack_pack_int(&p.pk, 1);
    mb_pack_cstr(&p.pk, "status");
    msgpack_pack_int(&p.pk, 400);
    mb_pack_cstr(&p.pk, "body");
    msgpack_pack_nil(&p.pk);
    mb_pack_cstr(&p.pk, "error");
    msgpack_pack_map(&p.pk, 2);
    mb_pack_cstr(&p.pk, "code");
    mb_pack_cstr(&p.pk, "c");
    mb_pack_cstr(&p.pk, "message");
    mb_pack_cstr(&p.pk, "m");
    s_assert_bad_reply(&p, "both body and error");

    msgpack_pack_array(&p.pk, 0);
    s_assert_bad_reply(&p, "array");
    s_fini(&p);
}

Test(mb_envelope, reply_without_body_is_a_204)
{
    packer_t p;
    s_init(&p);
    msgpack_pack_map(&p.pk, 2);
    mb_pack_cstr(&p.pk, "rid");
    msgpack_pack_int(&p.pk, 9);
    mb_pack_cstr(&p.pk, "status");
    msgpack_pack_int(&p.pk, 204);
    mb_reply_t rep;
    cr_assert_eq(mb_reply_decode(&rep, p.buf.data, p.buf.size, NULL), 0);
    cr_assert_eq(rep.status, 204);
    cr_assert_null(rep.body);
    mb_reply_release(&rep);
    s_fini(&p);
}

/* ---- fuzz ------------------------------------------------------------------ */

/* A small deterministic PRNG so a failure reproduces. */
static uint64_t s_rng = 0x9E3779B97F4A7C15ull;
static uint64_t s_rand(void)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return s_rng;
}

static void s_try_everything(const uint8_t *data, size_t size)
{
    mb_request_t req;
    int decoded = mb_request_decode(&req, data, size, NULL);
    if (decoded == 0) {
        /* whatever was accepted must be consistent */
        cr_assert(req.op_len >= 1 && req.op_len <= MB_OP_MAX);
        cr_assert(req.rid > 0);
        mb_request_release(&req);
    }
    mb_reply_t rep;
    mb_reply_view_t view;
    int viewed = mb_reply_view(&view, data, size, NULL);
    if (mb_reply_decode(&rep, data, size, NULL) == 0) {
        cr_assert(rep.status >= 100 && rep.status <= 599);
        s_assert_view_is_decode(&view, viewed, &rep, data, size);
        mb_reply_release(&rep);
    } else {
        cr_assert_neq(viewed, 0, "view refuses what decode refuses");
    }
    uint64_t rid;
    uint32_t ttl;
    int peeked = mb_request_peek(data, size, &rid, &ttl);
    if (peeked != 0)
        cr_assert(rid == 0 && ttl == 0);
    if (decoded == 0)
        cr_assert_eq(peeked, 0, "peek accepts every request decode accepts");
}

Test(mb_envelope, random_bytes_never_crash)
{
    for (int i = 0; i < 5000; i++) {
        size_t size = s_rand() % 64;
        uint8_t *data = malloc(size ? size : 1);
        for (size_t j = 0; j < size; j++)
            data[j] = (uint8_t)s_rand();
        /* bias toward maps so the decoder gets past the first byte */
        if (size && i % 2)
            data[0] = 0x80 | (data[0] & 0x0f);
        s_try_everything(data, size);
        free(data);
    }
}

/*  Flips a few bytes of `buf`, and sometimes cuts it, 5000 times. */
static void s_mutate_and_try(const msgpack_sbuffer *buf)
{
    for (int i = 0; i < 5000; i++) {
        uint8_t *data = malloc(buf->size);
        memcpy(data, buf->data, buf->size);
        int flips = 1 + (int)(s_rand() % 4);
        for (int f = 0; f < flips; f++) {
            size_t at = s_rand() % buf->size;
            data[at] =
                s_rand() % 3 ? (uint8_t)s_rand() : data[at] ^ (uint8_t)(1u << (s_rand() % 8));
        }
        size_t size = s_rand() % 8 ? buf->size : s_rand() % buf->size;
        s_try_everything(data, size);
        free(data);
    }
}

Test(mb_envelope, mutated_envelopes_never_crash)
{
    packer_t p;
    s_init(&p);
    mb_request_pack_head(&p.pk, "playlist.add", 77, 1000, 2);
    mb_pack_cstr(&p.pk, "auth");
    msgpack_pack_map(&p.pk, 2);
    mb_pack_cstr(&p.pk, "user");
    mb_pack_cstr(&p.pk, "u");
    mb_pack_cstr(&p.pk, "roles");
    msgpack_pack_array(&p.pk, 1);
    mb_pack_cstr(&p.pk, "admin");
    mb_pack_cstr(&p.pk, "args");
    msgpack_pack_map(&p.pk, 1);
    mb_pack_cstr(&p.pk, "body");
    msgpack_pack_map(&p.pk, 2);
    mb_pack_cstr(&p.pk, "tracks");
    msgpack_pack_array(&p.pk, 3);
    msgpack_pack_int(&p.pk, 1);
    msgpack_pack_int(&p.pk, -200000);
    msgpack_pack_double(&p.pk, 0.5);
    mb_pack_cstr(&p.pk, "pos");
    msgpack_pack_uint16(&p.pk, 300);
    s_mutate_and_try(&p.buf);

    /* Replies, where the view and the decoder must agree on every one. */
    msgpack_sbuffer_clear(&p.buf);
    mb_reply_pack_head(&p.pk, 77, 200);
    msgpack_pack_map(&p.pk, 3);
    mb_pack_cstr(&p.pk, "title");
    mb_pack_cstr(&p.pk, "Teardrop");
    mb_pack_cstr(&p.pk, "artists");
    msgpack_pack_array(&p.pk, 2);
    mb_pack_cstr(&p.pk, "Massive Attack");
    msgpack_pack_nil(&p.pk);
    mb_pack_cstr(&p.pk, "gain");
    msgpack_pack_double(&p.pk, -7.5);
    s_mutate_and_try(&p.buf);
    msgpack_sbuffer_clear(&p.buf);
    mb_reply_pack_error(&p.pk, 77, 400, "invalid", "body.isrc", "isrc must be 12 characters");
    s_mutate_and_try(&p.buf);
    s_fini(&p);
}
