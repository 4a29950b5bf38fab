/*  validate — the JSON Schema subset of schemas/README.md, compiled once
    at start-up and checked against request bodies and parameters.

    Keywords: type (one type, or [type, "null"]), properties, required,
    additionalProperties: false, minLength, maxLength (in characters, i.e.
    Unicode code points), minimum, maximum, enum (strings), items,
    minItems, maxItems, uniqueItems, pattern (POSIX extended regular
    expression, anchored only by its own ^ and $), and $ref to a local
    JSON pointer ("#/components/schemas/Track"). A schema holding $ref is
    that reference only: sibling keywords are ignored. Any other keyword
    is ignored. "integer" accepts JSON integers only (1.0 is a number):
    the bus keeps ints and floats apart and actors expect ints.

    The first rule broken is reported with the JSON path of the value at
    fault: "body.tracks[2].title". */
#ifndef GW_VALIDATE_H
#define GW_VALIDATE_H

#include <jansson.h>
#include <stddef.h>

/*  Type bits of a schema's "type". */
enum {
    GW_T_NULL = 1 << 0,
    GW_T_BOOLEAN = 1 << 1,
    GW_T_INTEGER = 1 << 2,
    GW_T_NUMBER = 1 << 3,
    GW_T_STRING = 1 << 4,
    GW_T_ARRAY = 1 << 5,
    GW_T_OBJECT = 1 << 6,
};

typedef struct gw_schema gw_schema_t;
/*  Owns every schema compiled from one document, and resolves $ref in it. */
typedef struct gw_schema_set gw_schema_set_t;

/*  What gw_schema_validate() reports. */
typedef struct {
    char field[256];  /* JSON path of the value at fault: "body.title", "limit" */
    char detail[512]; /* "body.title: must be a string" */
} gw_invalid_t;

/*  Creates a set for the document `doc` (an OpenAPI document, where $ref
    pointers resolve). Takes a reference to `doc`. Never NULL. */
gw_schema_set_t *gw_schema_set_new(json_t *doc);

/*  Drops the set's reference to its document once everything needed is
    compiled: compiled schemas stay valid (they own copies of what they
    read), while gw_schema_compile() of a $ref and gw_schema_resolve()
    then find nothing. The document is the largest thing a gateway would
    otherwise keep for its whole life. */
void gw_schema_set_release_doc(gw_schema_set_t *self);

/*  Frees every schema of the set; nulls *self_p. Safe to call twice. */
void gw_schema_set_destroy(gw_schema_set_t **self_p);

/*  Compiles `schema` (a JSON Schema object, or NULL for "anything").
    Returns the compiled schema, owned by the set; or NULL with a reason in
    `err` when a $ref does not resolve, a pattern does not compile, or a
    keyword has the wrong type. */
const gw_schema_t *gw_schema_compile(gw_schema_set_t *set, const json_t *schema, char *err,
                                     size_t err_size);

/*  Resolves a local reference "#/a/b" in the set's document. Returns the
    value (borrowed) or NULL. */
const json_t *gw_schema_resolve(gw_schema_set_t *set, const char *ref);

/*  The schema's type bits (0: any type). */
unsigned gw_schema_types(const gw_schema_t *schema);

/*  The schema of an array's items, or NULL when not given. */
const gw_schema_t *gw_schema_items(const gw_schema_t *schema);

/*  Checks `value` against `schema`; `root` names the value in error paths
    ("body", "limit"). Returns 0, or MB_EINVAL with *err filled in. */
int gw_schema_validate(const gw_schema_t *schema, const json_t *value, const char *root,
                       gw_invalid_t *err);

/*  Describes type bits for messages: "a string", "an integer or null".
    Writes into buf and returns it. */
const char *gw_schema_type_name(unsigned types, char *buf, size_t size);

#endif
