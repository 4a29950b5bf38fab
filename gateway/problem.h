/*  problem — RFC 9457 problem documents (application/problem+json).

    {"type":"about:blank","title":"Bad Request","status":400,
     "detail":"body.title: must be a string","field":"body.title"}

    Errors the gateway finds itself use type "about:blank"; errors an
    actor or the broker reports carry their code as the type ("not_found",
    "overloaded", ...), as the Problem schema in schemas/openapi.json says. */
#ifndef GW_PROBLEM_H
#define GW_PROBLEM_H

#include <stddef.h>

#include "buf.h"

#define GW_PROBLEM_CONTENT_TYPE "application/problem+json"

/*  Returns the standard reason phrase of HTTP `status` ("Not Found"), or
    "Error" for a status it does not know. Static. */
const char *gw_problem_title(int status);

/*  Appends the problem document to `out`. `type` NULL means
    "about:blank"; `detail` and `field` may be NULL (then left out). The
    lengths of type/detail/field are given so msgpack strings can be
    passed as they are; pass (size_t) -1 for a NUL-terminated one. Text
    that is not valid UTF-8 is replaced by a placeholder, so the document
    is always valid JSON. */
void gw_problem_write(gw_buf_t *out, int status, const char *type, size_t type_len,
                      const char *detail, size_t detail_len, const char *field, size_t field_len);

#endif
