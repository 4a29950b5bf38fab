/*  validate: the JSON Schema subset, each keyword, and the field path of
    the first rule broken. */
#include <criterion/criterion.h>
#include <regex.h>
#include <stdbool.h>
#include <string.h>

#include "mb_error.h"
#include "validate.h"

typedef struct {
    json_t *doc;
    gw_schema_set_t *set;
} fixture_t;

static fixture_t s_fixture(const char *doc_text)
{
    fixture_t f;
    json_error_t jerr;
    f.doc = json_loads(doc_text, 0, &jerr);
    cr_assert_not_null(f.doc, "fixture JSON: %s", jerr.text);
    f.set = gw_schema_set_new(f.doc);
    return f;
}

static void s_done(fixture_t *f)
{
    gw_schema_set_destroy(&f->set);
    json_decref(f->doc);
}

static const gw_schema_t *s_compile(fixture_t *f, const char *schema_text)
{
    json_t *schema = json_loads(schema_text, 0, NULL);
    cr_assert_not_null(schema, "schema JSON: %s", schema_text);
    char err[200] = "";
    const gw_schema_t *s = gw_schema_compile(f->set, schema, err, sizeof err);
    json_decref(schema); /* the compiled schema keeps what it needs */
    cr_assert_not_null(s, "compile: %s", err);
    return s;
}

/*  Validates `value_text` against `schema`; expects `field` and a detail
    "field: message" (NULL field: expects success). */
static void s_expect(fixture_t *f, const gw_schema_t *schema, const char *value_text,
                     const char *field, const char *message)
{
    json_t *value = json_loads(value_text, JSON_DECODE_ANY, NULL);
    cr_assert_not_null(value, "value JSON: %s", value_text);
    gw_invalid_t err;
    memset(&err, 0, sizeof err);
    int rc = gw_schema_validate(schema, value, "body", &err);
    json_decref(value);
    (void)f;
    if (!field) {
        cr_assert_eq(rc, 0, "%s rejected: %s", value_text, err.detail);
        return;
    }
    cr_assert_eq(rc, MB_EINVAL, "%s accepted", value_text);
    cr_assert_str_eq(err.field, field, "%s", value_text);
    char detail[600];
    snprintf(detail, sizeof detail, "%s: %s", field, message);
    cr_assert_str_eq(err.detail, detail);
}

/*  Usage: compile once at start-up, validate every request body. */
Test(gw_validate, usage)
{
    fixture_t f = s_fixture("{}");
    const gw_schema_t *s = s_compile(&f, "{\"type\":\"object\",\"required\":[\"title\"],"
                                         "\"properties\":{\"title\":{\"type\":\"string\"}}}");
    s_expect(&f, s, "{\"title\":\"Song\"}", NULL, NULL);
    s_expect(&f, s, "{\"title\":7}", "body.title", "must be a string");
    s_done(&f);
}

Test(gw_validate, type)
{
    fixture_t f = s_fixture("{}");
    const gw_schema_t *str = s_compile(&f, "{\"type\":\"string\"}");
    const gw_schema_t *integer = s_compile(&f, "{\"type\":\"integer\"}");
    const gw_schema_t *number = s_compile(&f, "{\"type\":\"number\"}");
    const gw_schema_t *boolean = s_compile(&f, "{\"type\":\"boolean\"}");
    const gw_schema_t *array = s_compile(&f, "{\"type\":\"array\"}");
    const gw_schema_t *object = s_compile(&f, "{\"type\":\"object\"}");
    const gw_schema_t *nullable = s_compile(&f, "{\"type\":[\"string\",\"null\"]}");
    const gw_schema_t *any = s_compile(&f, "{}");
    s_expect(&f, str, "\"x\"", NULL, NULL);
    s_expect(&f, str, "1", "body", "must be a string");
    s_expect(&f, integer, "-3", NULL, NULL);
    s_expect(&f, integer, "1.5", "body", "must be an integer");
    s_expect(&f, integer, "1.0", "body", "must be an integer");
    s_expect(&f, number, "1.5", NULL, NULL);
    s_expect(&f, number, "2", NULL, NULL);
    s_expect(&f, number, "\"2\"", "body", "must be a number");
    s_expect(&f, boolean, "false", NULL, NULL);
    s_expect(&f, boolean, "0", "body", "must be a boolean");
    s_expect(&f, array, "[]", NULL, NULL);
    s_expect(&f, array, "{}", "body", "must be an array");
    s_expect(&f, object, "{}", NULL, NULL);
    s_expect(&f, object, "null", "body", "must be an object");
    s_expect(&f, nullable, "null", NULL, NULL);
    s_expect(&f, nullable, "\"a\"", NULL, NULL);
    s_expect(&f, nullable, "true", "body", "must be a string or null");
    s_expect(&f, any, "[1,{\"a\":null}]", NULL, NULL);
    s_done(&f);
}

Test(gw_validate, properties_required_additional)
{
    fixture_t f = s_fixture("{}");
    const gw_schema_t *s =
        s_compile(&f, "{\"type\":\"object\",\"additionalProperties\":false,"
                      "\"required\":[\"a\",\"b\"],"
                      "\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"object\","
                      "\"properties\":{\"c\":{\"type\":\"string\"}}}}}");
    s_expect(&f, s, "{\"a\":1,\"b\":{}}", NULL, NULL);
    s_expect(&f, s, "{\"a\":1,\"b\":{\"c\":\"x\",\"extra\":1}}", NULL, NULL);
    s_expect(&f, s, "{\"b\":{}}", "body.a", "is required");
    s_expect(&f, s, "{\"a\":1}", "body.b", "is required");
    s_expect(&f, s, "{\"a\":1,\"b\":{},\"z\":0}", "body.z", "is not allowed here");
    s_expect(&f, s, "{\"a\":1,\"b\":{\"c\":2}}", "body.b.c", "must be a string");
    s_done(&f);
}

Test(gw_validate, string_keywords)
{
    fixture_t f = s_fixture("{}");
    const gw_schema_t *len = s_compile(&f, "{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}");
    const gw_schema_t *nonempty = s_compile(&f, "{\"type\":\"string\",\"minLength\":1}");
    const gw_schema_t *pattern =
        s_compile(&f, "{\"type\":\"string\",\"pattern\":\"^[0-9]{4}(-[0-9]{2})?$\"}");
    const gw_schema_t *unanchored = s_compile(&f, "{\"type\":\"string\",\"pattern\":\"b+\"}");
    const gw_schema_t *choice = s_compile(&f, "{\"enum\":[\"free\",\"premium\"]}");
    s_expect(&f, len, "\"ab\"", NULL, NULL);
    s_expect(&f, len, "\"a\"", "body", "must be at least 2 characters long");
    s_expect(&f, len, "\"abcd\"", "body", "must be at most 3 characters long");
    /* Lengths count characters, not bytes: three 4-byte emoji are 3. */
    s_expect(&f, len, "\"\\ud83c\\udfb5\\ud83c\\udfb5\\ud83c\\udfb5\"", NULL, NULL);
    s_expect(&f, len, "\"\xc3\xa9\"", "body", "must be at least 2 characters long");
    s_expect(&f, nonempty, "\"\"", "body", "must not be empty");
    s_expect(&f, pattern, "\"1975\"", NULL, NULL);
    s_expect(&f, pattern, "\"1975-10\"", NULL, NULL);
    s_expect(&f, pattern, "\"1975-1\"", "body", "must match the pattern ^[0-9]{4}(-[0-9]{2})?$");
    s_expect(&f, unanchored, "\"abba\"", NULL, NULL);
    s_expect(&f, unanchored, "\"aca\"", "body", "must match the pattern b+");
    s_expect(&f, choice, "\"free\"", NULL, NULL);
    s_expect(&f, choice, "\"gold\"", "body", "must be one of: free, premium");
    s_expect(&f, choice, "3", "body", "must be one of: free, premium");
    s_done(&f);
}

Test(gw_validate, number_keywords)
{
    fixture_t f = s_fixture("{}");
    const gw_schema_t *s = s_compile(&f, "{\"type\":\"integer\",\"minimum\":1,\"maximum\":50}");
    const gw_schema_t *r = s_compile(&f, "{\"type\":\"number\",\"minimum\":0.5}");
    const gw_schema_t *big =
        s_compile(&f, "{\"type\":\"integer\",\"maximum\":9223372036854775806}");
    s_expect(&f, s, "1", NULL, NULL);
    s_expect(&f, s, "50", NULL, NULL);
    s_expect(&f, s, "0", "body", "must be >= 1");
    s_expect(&f, s, "51", "body", "must be <= 50");
    s_expect(&f, r, "0.5", NULL, NULL);
    s_expect(&f, r, "0.25", "body", "must be >= 0.5");
    /* Compared exactly, not through a double. */
    s_expect(&f, big, "9223372036854775806", NULL, NULL);
    s_expect(&f, big, "9223372036854775807", "body", "must be <= 9223372036854775806");
    s_done(&f);
}

Test(gw_validate, array_keywords)
{
    fixture_t f = s_fixture("{}");
    const gw_schema_t *s =
        s_compile(&f, "{\"type\":\"object\",\"properties\":{\"tracks\":{\"type\":\"array\","
                      "\"minItems\":1,\"maxItems\":3,\"uniqueItems\":true,"
                      "\"items\":{\"type\":\"object\",\"properties\":"
                      "{\"title\":{\"type\":\"string\"}}}}}}");
    s_expect(&f, s, "{\"tracks\":[{\"title\":\"a\"},{\"title\":\"b\"}]}", NULL, NULL);
    s_expect(&f, s, "{\"tracks\":[]}", "body.tracks", "must have at least 1 item");
    s_expect(&f, s, "{\"tracks\":[{},{},{\"a\":1},{\"b\":1}]}", "body.tracks",
             "must have at most 3 items");
    s_expect(&f, s, "{\"tracks\":[{\"title\":\"a\"},{\"title\":\"b\"},{\"title\":3}]}",
             "body.tracks[2].title", "must be a string");
    s_expect(&f, s, "{\"tracks\":[{\"title\":\"a\"},{\"title\":\"b\"},{\"title\":\"a\"}]}",
             "body.tracks[2]", "repeats an earlier item (items must be unique)");
    s_done(&f);
}

/*  Long arrays take the hashing path of uniqueItems; the answer is the
    same: the first item equal to an earlier one. */
Test(gw_validate, unique_items_long_array)
{
    fixture_t f = s_fixture("{}");
    const gw_schema_t *s = s_compile(&f, "{\"type\":\"array\",\"uniqueItems\":true}");
    json_t *array = json_array();
    for (int i = 0; i < 5000; i++)
        json_array_append_new(array, json_integer(i));
    gw_invalid_t err;
    cr_assert_eq(gw_schema_validate(s, array, "ids", &err), 0);
    json_array_append_new(array, json_pack("{s:i}", "k", 1));
    json_array_append_new(array, json_pack("{s:i}", "k", 1)); /* index 5001 */
    json_array_append_new(array, json_integer(17));           /* index 5002 */
    cr_assert_eq(gw_schema_validate(s, array, "ids", &err), MB_EINVAL);
    cr_assert_str_eq(err.field, "ids[5001]");
    json_decref(array);
    s_done(&f);
}

Test(gw_validate, refs_shared_and_recursive)
{
    fixture_t f = s_fixture(
        "{\"components\":{\"schemas\":{"
        "\"Id\":{\"type\":\"string\",\"maxLength\":3},"
        "\"Node\":{\"type\":\"object\",\"properties\":{\"id\":{\"$ref\":\"#/components/schemas/"
        "Id\"},"
        "\"children\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/Node\"}}}},"
        "\"a/b\":{\"type\":\"boolean\"}}}}");
    const gw_schema_t *node = s_compile(&f, "{\"$ref\":\"#/components/schemas/Node\"}");
    s_expect(&f, node, "{\"id\":\"a\",\"children\":[{\"id\":\"b\",\"children\":[]}]}", NULL, NULL);
    s_expect(&f, node, "{\"children\":[{\"children\":[{\"id\":\"long\"}]}]}",
             "body.children[0].children[0].id", "must be at most 3 characters long");
    /* RFC 6901 escapes: ~1 is '/'. */
    const gw_schema_t *escaped = s_compile(&f, "{\"$ref\":\"#/components/schemas/a~1b\"}");
    s_expect(&f, escaped, "1", "body", "must be a boolean");
    s_done(&f);
}

Test(gw_validate, bad_schemas_are_refused)
{
    fixture_t f = s_fixture("{\"x\":1}");
    const char *bad[] = {
        "{\"type\":\"text\"}",       "{\"type\":5}",
        "{\"minLength\":-1}",        "{\"maximum\":\"9\"}",
        "{\"enum\":[1,2]}",          "{\"pattern\":\"(\"}",
        "{\"$ref\":\"#/nope\"}",     "{\"$ref\":\"#/x\"}",
        "{\"$ref\":\"other.json\"}", "{\"properties\":{\"a\":{\"type\":\"nope\"}}}",
        "{\"required\":\"a\"}",      "{\"items\":{\"type\":[\"string\",\"bogus\"]}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *schema = json_loads(bad[i], 0, NULL);
        char err[200] = "";
        cr_assert_null(gw_schema_compile(f.set, schema, err, sizeof err), "%s compiled", bad[i]);
        cr_assert_neq(err[0], '\0');
        json_decref(schema);
    }
    s_done(&f);
}

Test(gw_validate, path_cut_when_too_long)
{
    fixture_t f = s_fixture("{}");
    const gw_schema_t *s = s_compile(&f, "{\"type\":\"object\",\"additionalProperties\":false}");
    char key[600];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    json_t *value = json_object();
    json_object_set_new(value, key, json_true());
    gw_invalid_t err;
    cr_assert_eq(gw_schema_validate(s, value, "body", &err), MB_EINVAL);
    cr_assert_eq(strncmp(err.field, "body.kkk", 8), 0);
    cr_assert_lt(strlen(err.field), sizeof err.field);
    json_decref(value);
    s_done(&f);
}

Test(gw_validate, type_names)
{
    char buf[96];
    cr_assert_str_eq(gw_schema_type_name(GW_T_STRING, buf, sizeof buf), "a string");
    cr_assert_str_eq(gw_schema_type_name(GW_T_INTEGER | GW_T_NULL, buf, sizeof buf),
                     "an integer or null");
    cr_assert_str_eq(gw_schema_type_name(GW_T_ARRAY | GW_T_STRING | GW_T_NULL, buf, sizeof buf),
                     "an array, a string or null");
}

/*  Patterns of the simple shape (anchored byte classes with repeats) are
    matched without regcomp(); they must agree with it on every string,
    and patterns of any other shape still go to regcomp(). */
Test(gw_validate, simple_patterns_agree_with_regexec)
{
    static const char *const patterns[] = {
        "^[A-Za-z0-9_-]{22}$",
        "^[A-Za-z0-9._~-]{1,64}$",
        "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$",
        "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
        "^[0-9a-f]{64}\\.jpg$",
        "^[0-9]{12,13}$",
        "^musicbus:track:[A-Za-z0-9._~-]{1,64}$",
        "^[^:]+$",
        "^[!-~]{1,64}$",
        "^[0-9a-f]{18,144}$",
        "^a*b?c+$",
        "^a{2,}$",
        "^[]a]*$",
        "^[^]a]$",
        "^[a-]x.y$",
        "^a{0}b$",
        "^$",
        "^[ab]*[bc]*[ca]*$",
        /* not the simple shape: regcomp() */
        "^[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?$",
        "^([A-Z]{2}|x)$",
        "b+",
        "^\\w+$",
        "^[[:alpha:]]+$",
    };
    static const char *const strings[] = {
        "",
        "a",
        "aa",
        "aab",
        "abbc",
        "ac",
        "b",
        "]",
        "]]a",
        "x",
        "-x.y",
        "ax\ny",
        "aaxzy",
        "1975-11-21",
        "1975-1-21",
        "GBUM71029604",
        "123456789012",
        "1234567890123",
        "12345678901234",
        "d0Dp154Iq2mYvP0mWYYNp4",
        "d0Dp154Iq2mYvP0mWYYNp",
        "d0Dp154Iq2mYvP0mWYYNp4x",
        "_abc.def~",
        ".hidden",
        "musicbus:track:abc",
        "musicbus:track:",
        "musicbus:track:a:b",
        "no colon here",
        "caf\xc3\xa9",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.jpg",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "0123456789abcdef0123",
        "abcabcabcacbbbaaacc",
    };
    fixture_t f = s_fixture("{}");
    for (size_t i = 0; i < sizeof patterns / sizeof patterns[0]; i++) {
        json_t *schema = json_pack("{s:s, s:s}", "type", "string", "pattern", patterns[i]);
        char err[200] = "";
        const gw_schema_t *s = gw_schema_compile(f.set, schema, err, sizeof err);
        json_decref(schema);
        cr_assert_not_null(s, "%s: %s", patterns[i], err);
        regex_t re;
        cr_assert_eq(regcomp(&re, patterns[i], REG_EXTENDED | REG_NOSUB), 0);
        for (size_t j = 0; j < sizeof strings / sizeof strings[0]; j++) {
            json_t *v = json_string_nocheck(strings[j]);
            gw_invalid_t inv;
            bool ours = gw_schema_validate(s, v, "body", &inv) == 0;
            json_decref(v);
            bool theirs = regexec(&re, strings[j], 0, NULL, 0) == 0;
            cr_assert_eq(ours, theirs, "pattern %s, string \"%s\": ours %d, regexec %d", patterns[i],
                         strings[j], ours, theirs);
        }
        /* Long strings take the allocating path. */
        char long_text[3000];
        memset(long_text, 'a', sizeof long_text - 1);
        long_text[sizeof long_text - 1] = '\0';
        json_t *v = json_string(long_text);
        gw_invalid_t inv;
        bool ours = gw_schema_validate(s, v, "body", &inv) == 0;
        json_decref(v);
        cr_assert_eq(ours, regexec(&re, long_text, 0, NULL, 0) == 0, "pattern %s, 2999 a's",
                     patterns[i]);
        regfree(&re);
    }
    s_done(&f);
}

/*  Compiled schemas outlive the document once the set lets it go. */
Test(gw_validate, schemas_outlive_the_released_document)
{
    fixture_t f = s_fixture("{\"defs\":{\"id\":{\"type\":\"string\",\"pattern\":\"^[a-z]{2,3}$\"}}}");
    const gw_schema_t *s = s_compile(
        &f, "{\"type\":\"object\",\"properties\":{\"id\":{\"$ref\":\"#/defs/id\"}},"
            "\"required\":[\"id\"],\"additionalProperties\":false}");
    gw_schema_set_release_doc(f.set);
    json_decref(f.doc);
    f.doc = NULL;
    cr_assert_null(gw_schema_resolve(f.set, "#/defs/id"));
    s_expect(&f, s, "{\"id\":\"abc\"}", NULL, NULL);
    s_expect(&f, s, "{\"id\":\"abcd\"}", "body.id", "must match the pattern ^[a-z]{2,3}$");
    s_expect(&f, s, "{}", "body.id", "is required");
    s_done(&f);
}
