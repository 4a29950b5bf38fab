/*  it — assertions shared by the integration tests. */
#include "it.h"

#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void it_assert_problem(const it_http_res_t *res, long expect, const char *what)
{
    cr_assert_eq(res->status, expect, "%s: expected %ld, got %ld (%s): %.400s", what, expect,
                 res->status, res->error, res->body);
    cr_assert(res->content_type && strcmp(res->content_type, "application/problem+json") == 0,
              "%s: an error must be application/problem+json, got %s: %.400s", what,
              res->content_type ? res->content_type : "(none)", res->body);
    cr_assert(json_is_object(res->json), "%s: the problem is not a JSON object: %.400s", what,
              res->body);
    cr_assert_eq(it_json_int(res->json, "status"), expect, "%s: problem.status is not %ld: %.400s",
                 what, expect, res->body);
    const char *type = it_json_str(res->json, "type");
    const char *title = it_json_str(res->json, "title");
    cr_assert(type && *type && title && *title, "%s: a problem has a type and a title: %.400s",
              what, res->body);
}

static void s_send(it_http_res_t *res, it_stack_t *stack, const char *bearer, const char *method,
                   const char *path, json_t *body)
{
    char *url = it_stack_url(stack, path);
    it_http_json_as(res, bearer, method, url, body);
    free(url);
    json_decref(body);
}

json_t *it_call(it_stack_t *stack, const char *method, const char *path, json_t *body, long expect)
{
    return it_call_as(stack, it_stack_token(stack), method, path, body, expect);
}

json_t *it_call_as(it_stack_t *stack, const char *bearer, const char *method, const char *path,
                   json_t *body, long expect)
{
    char what[600];
    snprintf(what, sizeof what, "%s %s", method, path);
    it_http_res_t res;
    s_send(&res, stack, bearer, method, path, body);
    if (expect >= 400) {
        it_assert_problem(&res, expect, what);
    } else {
        cr_assert_eq(res.status, expect, "%s: expected %ld, got %ld (%s): %.400s", what, expect,
                     res.status, res.error, res.body);
        if (expect == 204) {
            cr_assert_eq(res.body_len, 0, "%s: a 204 has no body: %.400s", what, res.body);
        } else {
            cr_assert(res.content_type && strcmp(res.content_type, "application/json") == 0,
                      "%s: expected application/json, got %s", what,
                      res.content_type ? res.content_type : "(none)");
            cr_assert(res.json, "%s: the body is not one JSON document: %.400s", what, res.body);
        }
    }
    json_t *doc = json_incref(res.json);
    it_http_res_release(&res);
    return doc;
}

json_t *it_problem(it_stack_t *stack, const char *method, const char *path, json_t *body,
                   long expect, const char *field)
{
    return it_problem_as(stack, it_stack_token(stack), method, path, body, expect, field);
}

json_t *it_problem_as(it_stack_t *stack, const char *bearer, const char *method, const char *path,
                      json_t *body, long expect, const char *field)
{
    json_t *problem = it_call_as(stack, bearer, method, path, body, expect);
    if (field) {
        const char *got = it_json_str(problem, "field");
        cr_assert(got && strcmp(got, field) == 0, "%s %s: expected field \"%s\", got \"%s\"",
                  method, path, field, got ? got : "(none)");
    }
    return problem;
}

json_t *it_pack(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    json_error_t err;
    json_t *doc = json_vpack_ex(&err, 0, fmt, ap);
    va_end(ap);
    cr_assert(doc, "json_pack(%s): %s", fmt, err.text);
    return doc;
}

char *it_str(const json_t *obj, const char *key)
{
    const char *s = it_json_str(obj, key);
    cr_assert(s, "no string \"%s\" in the response", key);
    return strdup(s);
}
