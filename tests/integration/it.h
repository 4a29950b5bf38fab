/*  it — assertions shared by the integration tests: one HTTP call checked
    against the contract of schemas/openapi.json (status, media type,
    problem documents). Each helper fails the running Criterion test with
    the request and the response body in the message. */
#ifndef IT_H
#define IT_H

#include <jansson.h>

#include "http.h"
#include "stack.h"

/*  Sends `method path` to the stack's gateway with `body` (stolen; NULL
    for none) as application/json, and the stack's access token
    (it_stack_token(); none when NULL), and asserts the status is `expect`.
    A 2xx with a body must be application/json, a 204 must have no body,
    and an error must be an application/problem+json document whose
    "status" is the HTTP status. Returns the parsed body (caller
    json_decref()s it), or NULL for a response without one. */
json_t *it_call(it_stack_t *stack, const char *method, const char *path, json_t *body, long expect);

/*  it_call() with `bearer` as the access token instead (NULL: none). */
json_t *it_call_as(it_stack_t *stack, const char *bearer, const char *method, const char *path,
                   json_t *body, long expect);

/*  Like it_call() for an error: asserts the problem document and, when
    `field` is not NULL, that its "field" is exactly `field`. Returns the
    problem (caller json_decref()s it). */
json_t *it_problem(it_stack_t *stack, const char *method, const char *path, json_t *body,
                   long expect, const char *field);

/*  it_problem() with `bearer` as the access token (NULL: none). */
json_t *it_problem_as(it_stack_t *stack, const char *bearer, const char *method, const char *path,
                      json_t *body, long expect, const char *field);

/*  Asserts res is a problem document of status `expect`. */
void it_assert_problem(const it_http_res_t *res, long expect, const char *what);

/*  json_pack() that asserts it worked. */
json_t *it_pack(const char *fmt, ...);

/*  A copy of the string at `key` of obj, asserting it is one. Caller frees. */
char *it_str(const json_t *obj, const char *key);

#endif
