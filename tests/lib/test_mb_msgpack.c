/*  mb_msgpack: typed readers, packers, and the allocation-free scanner. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "mb_error.h"
#include "mb_msgpack.h"

typedef struct {
    msgpack_sbuffer buf;
    msgpack_packer pk;
    msgpack_unpacked msg;
} fixture_t;

static void s_init(fixture_t *f)
{
    msgpack_sbuffer_init(&f->buf);
    msgpack_packer_init(&f->pk, &f->buf, msgpack_sbuffer_write);
    msgpack_unpacked_init(&f->msg);
}

static const msgpack_object *s_decode(fixture_t *f)
{
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(&f->msg, f->buf.data, f->buf.size, &off),
                 MSGPACK_UNPACK_SUCCESS);
    return &f->msg.data;
}

static void s_fini(fixture_t *f)
{
    msgpack_unpacked_destroy(&f->msg);
    msgpack_sbuffer_destroy(&f->buf);
}

Test(mb_msgpack, usage)
{
    fixture_t f;
    s_init(&f);
    msgpack_pack_map(&f.pk, 3);
    mb_pack_cstr(&f.pk, "title");
    mb_pack_cstr(&f.pk, "Teardrop");
    mb_pack_cstr(&f.pk, "duration_ms");
    msgpack_pack_int64(&f.pk, 330000);
    mb_pack_cstr(&f.pk, "explicit");
    msgpack_pack_false(&f.pk);
    const msgpack_object *track = s_decode(&f);

    cr_assert(mb_obj_str_eq(mb_map_get(track, "title"), "Teardrop"));
    int64_t ms;
    cr_assert(mb_obj_int(mb_map_get(track, "duration_ms"), &ms));
    cr_assert_eq(ms, 330000);
    bool explicit_ = true;
    cr_assert(mb_obj_bool(mb_map_get(track, "explicit"), &explicit_));
    cr_assert_not(explicit_);
    char *title = mb_obj_strdup(mb_map_get(track, "title"));
    cr_assert_str_eq(title, "Teardrop");
    free(title);
    cr_assert_null(mb_map_get(track, "album"));
    s_fini(&f);
}

Test(mb_msgpack, readers_refuse_wrong_types_and_null)
{
    fixture_t f;
    s_init(&f);
    msgpack_pack_map(&f.pk, 4);
    mb_pack_cstr(&f.pk, "n");
    msgpack_pack_nil(&f.pk);
    mb_pack_cstr(&f.pk, "s");
    mb_pack_cstr(&f.pk, "12");
    msgpack_pack_int(&f.pk, 7); /* a non-string key is never matched */
    mb_pack_cstr(&f.pk, "int-key");
    mb_pack_cstr(&f.pk, "f");
    msgpack_pack_double(&f.pk, 1.5);
    const msgpack_object *map = s_decode(&f);

    int64_t i;
    bool b;
    const char *s;
    size_t len;
    cr_assert_not(mb_obj_int(mb_map_get(map, "s"), &i));
    cr_assert_not(mb_obj_int(mb_map_get(map, "f"), &i));
    cr_assert_not(mb_obj_bool(mb_map_get(map, "n"), &b));
    cr_assert_not(mb_obj_str(mb_map_get(map, "n"), &s, &len));
    cr_assert_null(mb_obj_strdup(mb_map_get(map, "f")));
    cr_assert_not(mb_obj_str_eq(mb_map_get(map, "s"), "1"));
    cr_assert_not(mb_obj_str_eq(mb_map_get(map, "s"), "123"));
    cr_assert(mb_obj_str(mb_map_get(map, "s"), &s, &len));
    cr_assert_eq(len, 2);
    cr_assert_null(mb_map_get(NULL, "s"));
    cr_assert_null(mb_map_get(mb_map_get(map, "s"), "s"), "a string is not a map");
    cr_assert_not(mb_obj_int(NULL, &i));
    cr_assert_not(mb_obj_bool(NULL, &b));
    cr_assert_not(mb_obj_str(NULL, &s, &len));
    cr_assert_null(mb_obj_strdup(NULL));
    cr_assert_not(mb_obj_str_eq(NULL, ""));
    s_fini(&f);
}

Test(mb_msgpack, int_limits)
{
    fixture_t f;
    s_init(&f);
    msgpack_pack_array(&f.pk, 4);
    msgpack_pack_int64(&f.pk, INT64_MIN);
    msgpack_pack_int64(&f.pk, INT64_MAX);
    msgpack_pack_uint64(&f.pk, (uint64_t)INT64_MAX + 1);
    msgpack_pack_int(&f.pk, -1);
    const msgpack_object *a = s_decode(&f);
    int64_t v;
    cr_assert(mb_obj_int(&a->via.array.ptr[0], &v));
    cr_assert_eq(v, INT64_MIN);
    cr_assert(mb_obj_int(&a->via.array.ptr[1], &v));
    cr_assert_eq(v, INT64_MAX);
    cr_assert_not(mb_obj_int(&a->via.array.ptr[2], &v), "2^63 does not fit in int64_t");
    cr_assert(mb_obj_int(&a->via.array.ptr[3], &v));
    cr_assert_eq(v, -1);
    s_fini(&f);
}

Test(mb_msgpack, pack_raw_and_object_copy_values_verbatim)
{
    /* A value as stored in LMDB, spliced into a reply. */
    fixture_t stored;
    s_init(&stored);
    msgpack_pack_array(&stored.pk, 2);
    mb_pack_strn(&stored.pk, "ab\0c", 4);
    msgpack_pack_uint8(&stored.pk, 200);

    fixture_t f;
    s_init(&f);
    msgpack_pack_map(&f.pk, 2);
    mb_pack_cstr(&f.pk, "raw");
    mb_pack_raw(&f.pk, stored.buf.data, stored.buf.size);
    mb_pack_cstr(&f.pk, "copy");
    const msgpack_object *stored_obj = s_decode(&stored);
    mb_pack_object(&f.pk, stored_obj);
    const msgpack_object *map = s_decode(&f);

    for (int i = 0; i < 2; i++) {
        const msgpack_object *v = mb_map_get(map, i ? "copy" : "raw");
        cr_assert_not_null(v);
        cr_assert(msgpack_object_equal(*v, *stored_obj));
        cr_assert_eq(v->via.array.ptr[0].via.str.size, 4, "embedded NUL kept");
    }
    s_fini(&f);
    s_fini(&stored);
}

/* ---- scanner ------------------------------------------------------------- */

Test(mb_msgpack, head_reads_every_family)
{
    struct {
        const char *bytes;
        size_t len;
        mb_msgpack_kind_t kind;
        uint64_t count, value;
        size_t head_len;
    } cases[] = {
        {"\x05", 1, MB_MP_UINT, 0, 5, 1},
        {"\xff", 1, MB_MP_INT, 0, (uint64_t)-1, 1},
        {"\xc0", 1, MB_MP_NIL, 0, 0, 1},
        {"\xc3", 1, MB_MP_BOOL, 0, 1, 1},
        {"\xcd\x01\x00", 3, MB_MP_UINT, 0, 256, 3},
        {"\xd1\xff\x00", 3, MB_MP_INT, 0, (uint64_t)-256, 3},
        {"\xd0\x05", 2, MB_MP_UINT, 0, 5, 2}, /* non-negative int8 reads as uint */
        {"\xd3\x80\x00\x00\x00\x00\x00\x00\x00", 9, MB_MP_INT, 0, (uint64_t)INT64_MIN, 9},
        {"\xa3"
         "abc",
         4, MB_MP_STR, 3, 0, 1},
        {"\xd9\x02"
         "ab",
         4, MB_MP_STR, 2, 0, 2},
        {"\xc4\x01"
         "x",
         3, MB_MP_BIN, 1, 0, 2},
        {"\xd4\x01\x02", 3, MB_MP_EXT, 2, 0, 1},
        {"\xc7\x01\x05\x00", 4, MB_MP_EXT, 2, 0, 2},
        {"\xca\x00\x00\x00\x00", 5, MB_MP_FLOAT, 4, 0, 1},
        {"\x93", 1, MB_MP_ARRAY, 3, 0, 1},
        {"\xdf\x00\x01\x00\x00", 5, MB_MP_MAP, 65536, 0, 5},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mb_msgpack_head_t h;
        cr_assert_eq(mb_msgpack_head(cases[i].bytes, cases[i].len, &h), 0, "case %zu", i);
        cr_assert_eq(h.kind, cases[i].kind, "case %zu", i);
        cr_assert_eq(h.count, cases[i].count, "case %zu", i);
        cr_assert_eq(h.value, cases[i].value, "case %zu", i);
        cr_assert_eq(h.head_len, cases[i].head_len, "case %zu", i);
    }
}

Test(mb_msgpack, head_refuses_short_or_unused_bytes)
{
    mb_msgpack_head_t h;
    cr_assert_eq(mb_msgpack_head("", 0, &h), MB_EPROTO);
    cr_assert_eq(mb_msgpack_head("\xc1", 1, &h), MB_EPROTO);
    cr_assert_eq(mb_msgpack_head("\xcd\x01", 2, &h), MB_EPROTO);
    cr_assert_eq(mb_msgpack_head("\xa3"
                                 "ab",
                                 3, &h),
                 MB_EPROTO);
    cr_assert_eq(mb_msgpack_head("\xdb\xff\xff\xff\xff"
                                 "a",
                                 6, &h),
                 MB_EPROTO);
    cr_assert_eq(mb_msgpack_head("\xd8\x01", 2, &h), MB_EPROTO);
    cr_assert_eq(mb_msgpack_head("\xcb\x00", 2, &h), MB_EPROTO);
}

Test(mb_msgpack, skip_measures_one_object)
{
    fixture_t f;
    s_init(&f);
    msgpack_pack_map(&f.pk, 2);
    mb_pack_cstr(&f.pk, "a");
    msgpack_pack_array(&f.pk, 3);
    msgpack_pack_nil(&f.pk);
    msgpack_pack_double(&f.pk, 2.5);
    msgpack_pack_bin(&f.pk, 3);
    msgpack_pack_bin_body(&f.pk, "xyz", 3);
    mb_pack_cstr(&f.pk, "b");
    msgpack_pack_map(&f.pk, 0);
    size_t whole = f.buf.size;
    msgpack_pack_int(&f.pk, 1); /* a second object after the first */
    size_t used = 0;
    cr_assert_eq(mb_msgpack_skip(f.buf.data, f.buf.size, 32, &used), 0);
    cr_assert_eq(used, whole);
    for (size_t cut = 0; cut < whole; cut++)
        cr_assert_eq(mb_msgpack_skip(f.buf.data, cut, 32, &used), MB_EPROTO, "cut at %zu", cut);
    s_fini(&f);
}

Test(mb_msgpack, skip_refuses_counts_larger_than_the_input)
{
    size_t used;
    cr_assert_eq(mb_msgpack_skip("\xdd\xff\xff\xff\xff\x01", 6, 32, &used), MB_EPROTO);
    cr_assert_eq(mb_msgpack_skip("\xdf\x80\x00\x00\x00\x01\x01", 7, 32, &used), MB_EPROTO);
    /* a fixmap of 2 needs 4 objects: 3 bytes are not enough */
    cr_assert_eq(mb_msgpack_skip("\x82\x01\x02\x03", 4, 32, &used), MB_EPROTO);
    cr_assert_eq(mb_msgpack_skip("\x82\x01\x02\x03\x04", 5, 32, &used), 0);
}

Test(mb_msgpack, skip_limits_depth)
{
    char deep[64];
    for (int depth = 1; depth <= 40; depth++) {
        memset(deep, 0x91, depth); /* [[[...[1]...]]] */
        deep[depth] = 0x01;
        size_t used;
        int rc = mb_msgpack_skip(deep, depth + 1, 32, &used);
        cr_assert_eq(rc, depth <= 32 ? 0 : MB_EPROTO, "depth %d", depth);
        rc = mb_msgpack_skip(deep, depth + 1, 4, &used);
        cr_assert_eq(rc, depth <= 4 ? 0 : MB_EPROTO, "depth %d, max 4", depth);
    }
    /* empty containers add no depth */
    memset(deep, 0x91, 32);
    deep[32] = (char)0x90;
    size_t used;
    cr_assert_eq(mb_msgpack_skip(deep, 33, 32, &used), 0);
}

Test(mb_msgpack, msgpack_c_unpacks_whatever_skip_accepts_at_max_depth)
{
    /* The envelope relies on this: 32 levels pass our scan, so msgpack-c's
       parser stack (32) must accept them too. */
    char deep[33];
    memset(deep, 0x91, 32);
    deep[32] = 0x07;
    size_t used;
    cr_assert_eq(mb_msgpack_skip(deep, sizeof deep, 32, &used), 0);
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(&msg, deep, sizeof deep, &off), MSGPACK_UNPACK_SUCCESS);
    msgpack_unpacked_destroy(&msg);
}

/* A small deterministic PRNG so a failure reproduces. */
static uint64_t s_rng = 0x2545F4914F6CDD1Dull;
static uint64_t s_rand(void)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return s_rng;
}

/*  Packs a random object of every msgpack family, nested up to `depth`. */
static void s_pack_random(msgpack_packer *pk, int depth)
{
    switch (s_rand() % (depth > 0 ? 12 : 9)) {
    case 0:
        msgpack_pack_nil(pk);
        break;
    case 1:
        msgpack_pack_true(pk);
        break;
    case 2:
        msgpack_pack_int64(pk, (int64_t)s_rand() >> (s_rand() % 64));
        break;
    case 3:
        msgpack_pack_uint64(pk, s_rand() >> (s_rand() % 64));
        break;
    case 4:
        msgpack_pack_double(pk, 1.5);
        break;
    case 5:
        msgpack_pack_float(pk, 2.5f);
        break;
    case 6: {
        size_t n = s_rand() % 300;
        char text[300];
        memset(text, 'x', n);
        mb_pack_strn(pk, text, n);
        break;
    }
    case 7:
        msgpack_pack_bin(pk, 3);
        msgpack_pack_bin_body(pk, "abc", 3);
        break;
    case 8: {
        size_t n = (size_t[]){1, 2, 4, 8, 16, 3, 300}[s_rand() % 7];
        char data[300] = {0};
        msgpack_pack_ext(pk, n, 5);
        msgpack_pack_ext_body(pk, data, n);
        break;
    }
    case 9:
    case 10: {
        uint32_t n = s_rand() % 20;
        msgpack_pack_array(pk, n);
        for (uint32_t i = 0; i < n; i++)
            s_pack_random(pk, depth - 1);
        break;
    }
    default: {
        uint32_t n = s_rand() % 20;
        msgpack_pack_map(pk, n);
        for (uint32_t i = 0; i < 2 * n; i++)
            s_pack_random(pk, depth - 1);
        break;
    }
    }
}

Test(mb_msgpack, skip_agrees_with_msgpack_c_on_valid_and_mutated_input)
{
    /* The scanner must accept every object msgpack-c decodes (or valid
       envelopes would be refused) and never claim a different length. */
    for (int i = 0; i < 3000; i++) {
        fixture_t f;
        s_init(&f);
        s_pack_random(&f.pk, 4);
        uint8_t *data = malloc(f.buf.size);
        memcpy(data, f.buf.data, f.buf.size);
        size_t size = f.buf.size;
        if (i % 2) { /* mutate half of them */
            data[s_rand() % size] = (uint8_t)s_rand();
            if (s_rand() % 4 == 0)
                size = s_rand() % size;
        }
        msgpack_unpacked msg;
        msgpack_unpacked_init(&msg);
        size_t off = 0, used = 0;
        int ours = mb_msgpack_skip(data, size, 32, &used);
        msgpack_unpack_return theirs = MSGPACK_UNPACK_CONTINUE;
        if (ours == 0 || i % 2 == 0) /* msgpack-c only on input it cannot be fooled by */
            theirs = msgpack_unpack_next(&msg, (const char *)data, size, &off);
        if (i % 2 == 0)
            cr_assert_eq(ours, 0, "valid object %d refused", i);
        if (ours == 0) {
            cr_assert(theirs == MSGPACK_UNPACK_SUCCESS || theirs == MSGPACK_UNPACK_EXTRA_BYTES,
                      "object %d: we accept, msgpack-c says %d", i, theirs);
            cr_assert_eq(used, off, "object %d: same length", i);
        }
        msgpack_unpacked_destroy(&msg);
        free(data);
        s_fini(&f);
    }
}
