/*  problem: RFC 9457 documents, always valid JSON of the Problem shape. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "problem.h"

static json_t *s_write(int status, const char *type, const char *detail, const char *field)
{
    gw_buf_t out = GW_BUF_INIT;
    gw_problem_write(&out, status, type, (size_t)-1, detail, (size_t)-1, field, (size_t)-1);
    json_error_t jerr;
    json_t *doc = json_loadb(out.data, out.len, JSON_REJECT_DUPLICATES, &jerr);
    cr_assert_not_null(doc, "not JSON: %s (%s)", out.data, jerr.text);
    gw_buf_free(&out);
    return doc;
}

/*  Usage: a 400 naming the field at fault. */
Test(gw_problem, usage)
{
    gw_buf_t out = GW_BUF_INIT;
    gw_problem_write(&out, 400, NULL, 0, "body.title: must be a string", (size_t)-1, "body.title",
                     (size_t)-1);
    cr_assert_str_eq(out.data, "{\"type\":\"about:blank\",\"title\":\"Bad Request\",\"status\":400,"
                               "\"detail\":\"body.title: must be a string\","
                               "\"field\":\"body.title\"}");
    gw_buf_free(&out);
}

Test(gw_problem, shape)
{
    json_t *doc = s_write(404, "not_found", "no track with id x", NULL);
    cr_assert_eq(json_object_size(doc), 4, "no field when none is given");
    cr_assert_str_eq(json_string_value(json_object_get(doc, "type")), "not_found");
    cr_assert_str_eq(json_string_value(json_object_get(doc, "title")), "Not Found");
    cr_assert_eq(json_integer_value(json_object_get(doc, "status")), 404);
    cr_assert_str_eq(json_string_value(json_object_get(doc, "detail")), "no track with id x");
    json_decref(doc);

    doc = s_write(503, NULL, NULL, NULL);
    cr_assert_eq(json_object_size(doc), 3, "type, title and status are always there");
    cr_assert_str_eq(json_string_value(json_object_get(doc, "type")), "about:blank");
    json_decref(doc);
}

Test(gw_problem, text_is_escaped_and_checked)
{
    json_t *doc = s_write(400, "x\"y", "line1\nline2 \"quoted\" \\ \x01", "body.\xc3\xa9");
    cr_assert_str_eq(json_string_value(json_object_get(doc, "type")), "x\"y");
    cr_assert_str_eq(json_string_value(json_object_get(doc, "detail")),
                     "line1\nline2 \"quoted\" \\ \x01");
    cr_assert_str_eq(json_string_value(json_object_get(doc, "field")), "body.\xc3\xa9");
    json_decref(doc);
    /* Bytes from a peer that are not UTF-8 never make the document invalid. */
    doc = s_write(502, "bad\xff", "x\xc0\xaf", NULL);
    cr_assert_str_eq(json_string_value(json_object_get(doc, "type")), "(not valid UTF-8)");
    json_decref(doc);
}

Test(gw_problem, titles)
{
    cr_assert_str_eq(gw_problem_title(400), "Bad Request");
    cr_assert_str_eq(gw_problem_title(405), "Method Not Allowed");
    cr_assert_str_eq(gw_problem_title(413), "Content Too Large");
    cr_assert_str_eq(gw_problem_title(415), "Unsupported Media Type");
    cr_assert_str_eq(gw_problem_title(503), "Service Unavailable");
    cr_assert_str_eq(gw_problem_title(504), "Gateway Timeout");
    cr_assert_str_eq(gw_problem_title(599), "Error");
}
