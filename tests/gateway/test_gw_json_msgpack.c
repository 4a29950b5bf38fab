/*  json_msgpack: JSON -> msgpack for requests, msgpack -> JSON for
    replies, and the buffer/UTF-8 helpers under them. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "buf.h"
#include "json_msgpack.h"
#include "mb_error.h"

/*  JSON text -> jansson -> msgpack -> msgpack_object -> JSON text. */
static char *s_round_trip(const char *json_text)
{
    json_error_t jerr;
    json_t *v = json_loads(json_text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    cr_assert_not_null(v, "%s: %s", json_text, jerr.text);
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    cr_assert_eq(gw_json_to_msgpack(&pk, v, GW_JSON_MAX_DEPTH), 0);
    json_decref(v);
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(&msg, sbuf.data, sbuf.size, &off), MSGPACK_UNPACK_SUCCESS);
    cr_assert_eq(off, sbuf.size);
    gw_buf_t out = GW_BUF_INIT;
    const char *why = NULL;
    cr_assert_eq(gw_msgpack_to_json(&out, &msg.data, &why), 0, "%s", why);
    msgpack_unpacked_destroy(&msg);
    msgpack_sbuffer_destroy(&sbuf);
    return gw_buf_steal(&out, NULL);
}

static void s_expect_same(const char *json_text)
{
    char *back = s_round_trip(json_text);
    cr_assert_str_eq(back, json_text);
    free(back);
}

/*  Usage: a request body goes to msgpack; a reply comes back as JSON. */
Test(gw_json_msgpack, usage)
{
    s_expect_same("{\"title\":\"Bohemian Rhapsody\",\"track_number\":11,\"explicit\":false,"
                  "\"genres\":[\"rock\",\"opera\"],\"isrc\":null,\"rating\":4.5}");
}

Test(gw_json_msgpack, scalars)
{
    s_expect_same("null");
    s_expect_same("true");
    s_expect_same("0");
    s_expect_same("-1");
    s_expect_same("9223372036854775807");
    s_expect_same("-9223372036854775808");
    s_expect_same("0.1");
    s_expect_same("-2.5e-300");
    s_expect_same("1e+300");
    s_expect_same("\"\"");
    s_expect_same("[]");
    s_expect_same("{}");
    s_expect_same("[[],{},[{}]]");
}

Test(gw_json_msgpack, key_order_is_kept)
{
    s_expect_same("{\"z\":1,\"a\":2,\"m\":{\"y\":1,\"b\":2}}");
}

Test(gw_json_msgpack, unicode_escapes)
{
    /* \u escapes decode to UTF-8 on the way in and come back as raw UTF-8;
       only what JSON requires is escaped on the way out. */
    char *back = s_round_trip("\"caf\\u00e9 \\u2014 \\ud83c\\udfb5 \\\"q\\\" \\\\ \\/ "
                              "\\n\\t\\r\\b\\f \\u0001\\u001f\\u007f\"");
    cr_assert_str_eq(back, "\"caf\xc3\xa9 \xe2\x80\x94 \xf0\x9f\x8e\xb5 \\\"q\\\" \\\\ / "
                           "\\n\\t\\r\\b\\f \\u0001\\u001f\x7f\"");
    free(back);
    /* U+2028 and U+2029 are legal raw in JSON strings. */
    s_expect_same("\"\xe2\x80\xa8\xe2\x80\xa9\"");
}

static msgpack_object s_str(const char *s, size_t len)
{
    msgpack_object o = {.type = MSGPACK_OBJECT_STR};
    o.via.str.ptr = s;
    o.via.str.size = (uint32_t)len;
    return o;
}

static int s_to_json(const msgpack_object *o, char **text, const char **why)
{
    gw_buf_t out = GW_BUF_INIT;
    int rc = gw_msgpack_to_json(&out, o, why);
    *text = out.data ? gw_buf_steal(&out, NULL) : strdup("");
    return rc;
}

Test(gw_json_msgpack, msgpack_only_types)
{
    char *text;
    const char *why = NULL;
    /* bin -> base64, with each padding length */
    const char *bins[][2] = {
        {"", "\"\""},        {"f", "\"Zg==\""},        {"fo", "\"Zm8=\""},
        {"foo", "\"Zm9v\""}, {"foob", "\"Zm9vYg==\""}, {"\xff\xfe", "\"//4=\""}};
    for (size_t i = 0; i < sizeof bins / sizeof bins[0]; i++) {
        msgpack_object o = {.type = MSGPACK_OBJECT_BIN};
        o.via.bin.ptr = bins[i][0];
        o.via.bin.size = (uint32_t)strlen(bins[i][0]);
        cr_assert_eq(s_to_json(&o, &text, &why), 0);
        cr_assert_str_eq(text, bins[i][1]);
        free(text);
    }
    msgpack_object f32 = {.type = MSGPACK_OBJECT_FLOAT32};
    f32.via.f64 = (double)0.1f;
    cr_assert_eq(s_to_json(&f32, &text, &why), 0);
    cr_assert_str_eq(text, "0.1", "a float32 prints as short as it reads back");
    free(text);
    msgpack_object u = {.type = MSGPACK_OBJECT_POSITIVE_INTEGER};
    u.via.u64 = UINT64_MAX;
    cr_assert_eq(s_to_json(&u, &text, &why), 0);
    cr_assert_str_eq(text, "18446744073709551615");
    free(text);
    /* Integers are written without printf: the edges of both kinds. */
    const struct {
        msgpack_object_type type;
        int64_t i;
        uint64_t u;
        const char *json;
    } ints[] = {
        {MSGPACK_OBJECT_POSITIVE_INTEGER, 0, 0, "0"},
        {MSGPACK_OBJECT_POSITIVE_INTEGER, 0, 9, "9"},
        {MSGPACK_OBJECT_POSITIVE_INTEGER, 0, 10, "10"},
        {MSGPACK_OBJECT_POSITIVE_INTEGER, 0, 354320, "354320"},
        {MSGPACK_OBJECT_NEGATIVE_INTEGER, -1, 0, "-1"},
        {MSGPACK_OBJECT_NEGATIVE_INTEGER, -10, 0, "-10"},
        {MSGPACK_OBJECT_NEGATIVE_INTEGER, INT64_MIN, 0, "-9223372036854775808"},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        msgpack_object o = {.type = ints[i].type};
        if (o.type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            o.via.i64 = ints[i].i;
        else
            o.via.u64 = ints[i].u;
        cr_assert_eq(s_to_json(&o, &text, &why), 0);
        cr_assert_str_eq(text, ints[i].json);
        free(text);
    }
}

Test(gw_json_msgpack, values_without_json_form_are_refused)
{
    char *text;
    const char *why = NULL;
    msgpack_object nan = {.type = MSGPACK_OBJECT_FLOAT64};
    nan.via.f64 = NAN;
    cr_assert_eq(s_to_json(&nan, &text, &why), MB_EPROTO);
    cr_assert(strstr(why, "NaN"));
    free(text);
    msgpack_object inf = {.type = MSGPACK_OBJECT_FLOAT64};
    inf.via.f64 = -INFINITY;
    cr_assert_eq(s_to_json(&inf, &text, &why), MB_EPROTO);
    free(text);

    msgpack_object bad_utf8 = s_str("\xc0\xaf", 2);
    cr_assert_eq(s_to_json(&bad_utf8, &text, &why), MB_EPROTO);
    cr_assert(strstr(why, "UTF-8"));
    free(text);

    msgpack_object ext = {.type = MSGPACK_OBJECT_EXT};
    cr_assert_eq(s_to_json(&ext, &text, &why), MB_EPROTO);
    free(text);

    msgpack_object_kv kv = {.key = {.type = MSGPACK_OBJECT_POSITIVE_INTEGER}, .val = s_str("v", 1)};
    msgpack_object map = {.type = MSGPACK_OBJECT_MAP};
    map.via.map.ptr = &kv;
    map.via.map.size = 1;
    cr_assert_eq(s_to_json(&map, &text, &why), MB_EPROTO);
    cr_assert(strstr(why, "key"));
    free(text);
}

Test(gw_json_msgpack, deep_input_is_refused)
{
    /* Requests: deeper than max_depth is MB_ETOOBIG, and exactly max is fine. */
    json_t *deep = json_array();
    json_t *at = deep;
    for (int i = 1; i < GW_JSON_MAX_DEPTH; i++) {
        json_t *inner = json_array();
        json_array_append_new(at, inner);
        at = inner;
    }
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    cr_assert_eq(gw_json_to_msgpack(&pk, deep, GW_JSON_MAX_DEPTH), 0);
    json_array_append_new(at, json_object());
    msgpack_sbuffer_clear(&sbuf);
    cr_assert_eq(gw_json_to_msgpack(&pk, deep, GW_JSON_MAX_DEPTH), MB_ETOOBIG);
    json_decref(deep);

    /* Replies: a reply nested 1000 deep is refused, not a stack overflow.
       (msgpack-c's unpacker stops at 32 levels; a tree built by hand
       need not.) */
    enum { N = 1000 };
    msgpack_object *chain = calloc(N + 1, sizeof *chain);
    for (int i = 0; i < N; i++) {
        chain[i].type = MSGPACK_OBJECT_ARRAY;
        chain[i].via.array.ptr = &chain[i + 1];
        chain[i].via.array.size = 1;
    }
    chain[N].type = MSGPACK_OBJECT_NIL;
    gw_buf_t out = GW_BUF_INIT;
    const char *why = NULL;
    cr_assert_eq(gw_msgpack_to_json(&out, &chain[0], &why), MB_EPROTO);
    cr_assert(strstr(why, "deep"));
    gw_buf_reset(&out);
    cr_assert_eq(gw_msgpack_to_json(&out, &chain[N - 40], &why), 0, "40 levels are fine");
    gw_buf_free(&out);
    free(chain);
    msgpack_sbuffer_destroy(&sbuf);
}

Test(gw_json_msgpack, huge_string_round_trip)
{
    size_t n = 1 << 20;
    char *text = malloc(n + 3);
    text[0] = '"';
    for (size_t i = 1; i <= n; i++)
        text[i] = (char)('a' + i % 26);
    text[n + 1] = '"';
    text[n + 2] = '\0';
    char *back = s_round_trip(text);
    cr_assert_eq(strlen(back), n + 2);
    cr_assert_eq(memcmp(back, text, n + 2), 0);
    free(back);
    free(text);
}

Test(gw_buf, utf8_validity)
{
    const char *good[] = {"",
                          "ascii only, long enough to take the 8-byte path",
                          "\xc3\xa9",
                          "\xe2\x82\xac",
                          "\xf0\x9f\x8e\xb5",
                          "\xf4\x8f\xbf\xbf",
                          "\xef\xbf\xbf"};
    const char *bad[] = {"\x80",         "\xc0\xaf",         "\xc1\xbf",         "\xe0\x80\xaf",
                         "\xed\xa0\x80", "\xf0\x80\x80\x80", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80",
                         "\xc3",         "\xe2\x82",         "abcdefgh\xff",     "\xc3\x28"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        cr_assert(gw_utf8_valid(good[i], strlen(good[i])), "good[%zu]", i);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_not(gw_utf8_valid(bad[i], strlen(bad[i])), "bad[%zu]", i);
}

Test(gw_buf, growth_and_reuse)
{
    gw_buf_t b = GW_BUF_INIT;
    for (int i = 0; i < 10000; i++)
        gw_buf_printf(&b, "%d,", i);
    cr_assert_eq(strncmp(b.data, "0,1,2,", 6), 0);
    size_t cap = b.cap;
    gw_buf_reset(&b);
    cr_assert_eq(b.len, 0);
    cr_assert_str_eq(b.data, "");
    cr_assert_eq(b.cap, cap, "reset keeps the memory");
    gw_buf_json_string(&b, "a\"b", 3);
    cr_assert_str_eq(b.data, "\"a\\\"b\"");
    gw_buf_free(&b);
    gw_buf_free(&b);
    cr_assert_null(b.data);
}

/*  Replies are read in place from their bytes: anything that is not
    exactly one well-formed object is refused, whatever it claims. */
Test(gw_json_msgpack, raw_bytes_must_be_one_whole_object)
{
    static const struct {
        const char *label;
        const char *bytes;
        size_t len;
    } bad[] = {
        {"empty", "", 0},
        {"cut string", "\xa5" "abc", 4},
        {"cut float64", "\xcb\x3f\xf0\x00", 4},
        {"map claiming 3 entries with 1", "\x83\xa1" "a\x01", 4},
        {"array claiming 2^32-1 items", "\xdd\xff\xff\xff\xff\x01", 6},
        {"str32 longer than the input", "\xdb\x00\x01\x00\x00xyz", 8},
        {"trailing byte", "\x01\x02", 2},
        {"never-used byte 0xc1", "\xc1", 1},
        {"map key that is an int", "\x81\x01\x02", 3},
        {"ext", "\xd4\x01\x00", 3},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gw_buf_t out = GW_BUF_INIT;
        const char *why = NULL;
        cr_assert_eq(gw_msgpack_raw_to_json(&out, bad[i].bytes, bad[i].len, &why), MB_EPROTO, "%s",
                     bad[i].label);
        cr_assert_not_null(why, "%s", bad[i].label);
        gw_buf_free(&out);
    }
    /* A float32 reads back in its shortest float32 form, from big-endian bytes. */
    gw_buf_t out = GW_BUF_INIT;
    cr_assert_eq(gw_msgpack_raw_to_json(&out, "\x92\xca\x3d\xcc\xcc\xcd\xcb\xbf\xf8\x00\x00\x00"
                                              "\x00\x00\x00",
                                        15, NULL),
                 0);
    cr_assert_str_eq(out.data, "[0.1,-1.5]");
    gw_buf_free(&out);
}

Test(gw_buf, integers_without_printf)
{
    static const struct {
        int64_t v;
        const char *text;
    } cases[] = {{0, "0"}, {7, "7"}, {-1, "-1"}, {1000000, "1000000"},
                 {INT64_MAX, "9223372036854775807"}, {INT64_MIN, "-9223372036854775808"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char n[GW_INT_CHARS];
        cr_assert_eq(gw_fmt_i64(n, cases[i].v), strlen(cases[i].text));
        cr_assert_str_eq(n, cases[i].text);
    }
    char n[GW_INT_CHARS];
    cr_assert_eq(gw_fmt_u64(n, UINT64_MAX), 20);
    cr_assert_str_eq(n, "18446744073709551615");
}

/*  The escape scan reads 8 bytes at a time: every byte that needs an
    escape is found at every offset of a word, and no other byte is. */
Test(gw_buf, json_string_escapes_at_every_offset)
{
    static const struct {
        char c;
        const char *escaped;
    } specials[] = {{'"', "\\\""}, {'\\', "\\\\"}, {'\n', "\\n"}, {'\x01', "\\u0001"},
                    {'\x1f', "\\u001f"}, {' ', " "}, {'!', "!"}, {'#', "#"}, {'[', "["},
                    {']', "]"}, {'\x7f', "\x7f"}, {(char)0xc3, "\xc3"}};
    for (size_t k = 0; k < sizeof specials / sizeof specials[0]; k++)
        for (size_t at = 0; at < 21; at++) {
            char in[21];
            memset(in, 'a', sizeof in);
            in[at] = specials[k].c;
            char want[64];
            snprintf(want, sizeof want, "\"%.*s%s%.*s\"", (int)at, in, specials[k].escaped,
                     (int)(sizeof in - at - 1), in + at + 1);
            gw_buf_t out = GW_BUF_INIT;
            gw_buf_json_string(&out, in, sizeof in);
            cr_assert_str_eq(out.data, want, "byte 0x%02x at %zu", (unsigned char)specials[k].c,
                             at);
            gw_buf_free(&out);
        }
}
