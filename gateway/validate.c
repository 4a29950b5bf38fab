/*  validate — the JSON Schema subset of schemas/README.md. */
#include "validate.h"

#include <math.h>
#include <regex.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_alloc.h"
#include "mb_error.h"

/*  Above this many items, uniqueItems sorts by hash instead of comparing
    every pair: a 1 MiB body can hold ~250k items. */
#define S_UNIQUE_PAIRWISE_MAX 32
/*  Values listed in an enum error message before "...". */
#define S_ENUM_LISTED 10

typedef struct {
    char *name;
    const gw_schema_t *schema;
} s_prop_t;

struct gw_schema {
    gw_schema_t *next; /* every schema of the set, for destroy */
    unsigned types;    /* GW_T_* bits; 0 = any */
    s_prop_t *props;   /* "properties", in document order */
    size_t n_props;
    char **required; /* "required" */
    size_t n_required;
    bool closed;          /* additionalProperties: false */
    long long min_length; /* -1 when absent; code points */
    long long max_length;
    bool has_minimum, has_maximum;
    long double minimum, maximum;
    char **enum_values; /* "enum": strings */
    size_t n_enum;
    const gw_schema_t *items;
    long long min_items; /* -1 when absent */
    long long max_items;
    bool unique_items;
    const struct s_pattern *pattern; /* "pattern", shared by the set; NULL when absent */
};

/*  Atoms of a pattern of the simple shape (s_simple_parse). */
#define S_SIMPLE_ATOMS_MAX 32
#define S_SIMPLE_STACK 512 /* strings up to this long are matched without malloc */

/*  One byte class and how many times in a row: "[A-Za-z0-9_-]{1,64}". */
typedef struct {
    uint64_t bytes[4]; /* the bytes it accepts, a bit each */
    size_t min, max;   /* repeats; max SIZE_MAX: no limit */
} s_atom_t;

/*  A compiled "pattern". Nearly every pattern in the OpenAPI document is
    anchored byte classes with repeats ("^[A-Za-z0-9_-]{22}$"), for which
    glibc's regcomp() builds automata of up to 160 KiB each ({0,127}
    expands into 127 copies) that the gateway would keep for its whole
    life: those are matched by s_simple_match() with a few hundred bytes
    instead. Any other pattern goes to regcomp(). Each text is compiled
    once per set and shared, as the document repeats the same few. */
typedef struct s_pattern {
    struct s_pattern *next;
    char *text;
    bool simple; /* atoms, else re */
    s_atom_t *atoms;
    size_t n_atoms;
    regex_t re;
} s_pattern_t;

static void s_atom_add(s_atom_t *a, unsigned char c)
{
    a->bytes[c >> 6] |= 1ull << (c & 63);
}

static bool s_atom_has(const s_atom_t *a, unsigned char c)
{
    return a->bytes[c >> 6] >> (c & 63) & 1;
}

/*  Reads a bracket expression at *p (just past '['): bytes, ranges, a
    leading '^', ']' first or '-' first or last as themselves. Character
    classes ([:alpha:]), collating elements and equivalence classes are
    not the simple shape. In brackets '\' is an ordinary byte (POSIX). */
static bool s_simple_bracket(const char **p, s_atom_t *a)
{
    const unsigned char *q = (const unsigned char *)*p;
    bool negate = *q == '^';
    if (negate)
        q++;
    s_atom_t set = {0};
    bool first = true;
    while (*q && (*q != ']' || first)) {
        if (*q == '[' && (q[1] == ':' || q[1] == '.' || q[1] == '='))
            return false;
        unsigned char lo = *q++, hi = lo;
        if (*q == '-' && q[1] && q[1] != ']') {
            hi = q[1];
            if (hi == '[' || hi < lo)
                return false; /* [a-[.x.]] or a reversed range: leave it to regcomp */
            q += 2;
        }
        for (unsigned c = lo; c <= hi; c++)
            s_atom_add(&set, (unsigned char)c);
        first = false;
    }
    if (*q != ']')
        return false;
    if (negate)
        for (int i = 0; i < 4; i++)
            set.bytes[i] = ~set.bytes[i];
    set.bytes[0] &= ~1ull; /* never NUL: strings end there */
    memcpy(a->bytes, set.bytes, sizeof a->bytes);
    *p = (const char *)q + 1;
    return true;
}

/*  Reads "{n}", "{n,}" or "{n,m}" at *p (just past '{'). */
static bool s_simple_bound(const char **p, size_t *min, size_t *max)
{
    const char *q = *p;
    size_t n[2] = {0, 0};
    int k = 0;
    bool digits = false, open_end = false;
    for (;; q++) {
        if (*q >= '0' && *q <= '9') {
            if (n[k] > 0x7fff) /* RE_DUP_MAX */
                return false;
            n[k] = n[k] * 10 + (size_t)(*q - '0');
            digits = true;
        } else if (*q == ',' && k == 0 && digits) {
            k = 1;
            digits = false;
            open_end = true;
        } else if (*q == '}' && (digits || open_end)) {
            break;
        } else {
            return false;
        }
    }
    if (n[0] > 0x7fff || n[1] > 0x7fff)
        return false;
    *min = n[0];
    *max = k == 0 ? n[0] : digits ? n[1] : SIZE_MAX;
    if (*max < *min)
        return false;
    *p = q + 1;
    return true;
}

/*  Compiles `text` when it is "^" atoms "$", each atom a byte, an escaped
    punctuation byte, '.' or a bracket expression, with at most one of
    * + ? {n} {n,} {n,m}. Returns false for anything else (groups,
    alternatives, GNU escapes such as \w...), which regcomp() handles. */
static bool s_simple_parse(s_pattern_t *pat, const char *text)
{
    size_t n = strlen(text);
    if (n < 2 || text[0] != '^' || text[n - 1] != '$' || (n >= 3 && text[n - 2] == '\\'))
        return false;
    s_atom_t atoms[S_SIMPLE_ATOMS_MAX];
    size_t n_atoms = 0;
    const char *p = text + 1, *end = text + n - 1;
    while (p < end) {
        if (n_atoms == S_SIMPLE_ATOMS_MAX)
            return false;
        s_atom_t *a = &atoms[n_atoms];
        memset(a, 0, sizeof *a);
        unsigned char c = (unsigned char)*p;
        if (c == '[') {
            p++;
            if (!s_simple_bracket(&p, a) || p > end)
                return false;
        } else if (c == '\\') {
            if (p + 1 >= end || !strchr(".[]()*+?{}|^$\\/-", p[1]))
                return false;
            s_atom_add(a, (unsigned char)p[1]);
            p += 2;
        } else if (c == '.') {
            memset(a->bytes, 0xff, sizeof a->bytes);
            a->bytes[0] &= ~1ull;
            p++;
        } else if (strchr("()|*+?{}^$]", c)) {
            return false;
        } else {
            s_atom_add(a, c);
            p++;
        }
        a->min = a->max = 1;
        if (p < end && *p == '*') {
            a->min = 0;
            a->max = SIZE_MAX;
            p++;
        } else if (p < end && *p == '+') {
            a->max = SIZE_MAX;
            p++;
        } else if (p < end && *p == '?') {
            a->min = 0;
            p++;
        } else if (p < end && *p == '{') {
            p++;
            if (!s_simple_bound(&p, &a->min, &a->max) || p > end)
                return false;
        }
        if (p < end && strchr("*+?{", *p))
            return false; /* stacked repeats */
        n_atoms++;
    }
    pat->simple = true;
    pat->n_atoms = n_atoms;
    pat->atoms = mb_malloc((n_atoms ? n_atoms : 1) * sizeof *pat->atoms);
    memcpy(pat->atoms, atoms, n_atoms * sizeof *atoms);
    return true;
}

/*  Whether the `len` bytes of `s` match the simple pattern. Walks the
    atoms keeping the set of positions reachable after each; positions
    reached from increasing starts form intervals whose both ends only
    grow, so each atom costs O(len) whatever its repeats. */
static bool s_simple_match(const s_pattern_t *pat, const char *s, size_t len)
{
    unsigned char stack[2 * (S_SIMPLE_STACK + 1)];
    unsigned char *cur = stack, *next = stack + S_SIMPLE_STACK + 1, *heap = NULL;
    if (len > S_SIMPLE_STACK) {
        heap = mb_malloc(2 * (len + 1));
        cur = heap;
        next = heap + len + 1;
    }
    memset(cur, 0, len + 1);
    cur[0] = 1;
    bool any = true;
    for (size_t i = 0; i < pat->n_atoms && any; i++) {
        const s_atom_t *a = &pat->atoms[i];
        memset(next, 0, len + 1);
        any = false;
        size_t run_end = 0, marked = 0; /* [p, run_end): bytes in the class; next[<marked] done */
        for (size_t p = 0; p <= len; p++) {
            if (!cur[p])
                continue;
            if (run_end < p)
                run_end = p;
            while (run_end < len && s_atom_has(a, (unsigned char)s[run_end]))
                run_end++;
            size_t lo = p + a->min;
            size_t hi = a->max > run_end - p ? run_end : p + a->max;
            if (lo > hi)
                continue;
            for (size_t q = lo > marked ? lo : marked; q <= hi; q++)
                next[q] = 1;
            if (hi + 1 > marked)
                marked = hi + 1;
            any = true;
        }
        unsigned char *t = cur;
        cur = next;
        next = t;
    }
    bool matched = any && cur[len];
    free(heap);
    return matched;
}

typedef struct s_ref {
    struct s_ref *next;
    char *ref;
    gw_schema_t *schema;
} s_ref_t;

struct gw_schema_set {
    json_t *doc;     /* NULL once released */
    gw_schema_t *all;
    s_ref_t *refs; /* compiled $ref targets, so shared and recursive refs compile once */
    s_pattern_t *patterns;
};

gw_schema_set_t *gw_schema_set_new(json_t *doc)
{
    gw_schema_set_t *self = mb_calloc(1, sizeof *self);
    self->doc = json_incref(doc);
    return self;
}

static void s_schema_free(gw_schema_t *s)
{
    for (size_t i = 0; i < s->n_props; i++)
        free(s->props[i].name);
    free(s->props);
    for (size_t i = 0; i < s->n_required; i++)
        free(s->required[i]);
    free(s->required);
    for (size_t i = 0; i < s->n_enum; i++)
        free(s->enum_values[i]);
    free(s->enum_values);
    free(s);
}

void gw_schema_set_destroy(gw_schema_set_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    gw_schema_set_t *self = *self_p;
    while (self->all) {
        gw_schema_t *next = self->all->next;
        s_schema_free(self->all);
        self->all = next;
    }
    while (self->refs) {
        s_ref_t *next = self->refs->next;
        free(self->refs->ref);
        free(self->refs);
        self->refs = next;
    }
    while (self->patterns) {
        s_pattern_t *next = self->patterns->next;
        if (self->patterns->simple)
            free(self->patterns->atoms);
        else
            regfree(&self->patterns->re);
        free(self->patterns->text);
        free(self->patterns);
        self->patterns = next;
    }
    json_decref(self->doc);
    free(self);
    *self_p = NULL;
}

void gw_schema_set_release_doc(gw_schema_set_t *self)
{
    json_decref(self->doc);
    self->doc = NULL;
}

/*  The compiled form of `text`, compiled on first use. Returns NULL with
    a reason in `err` when it does not compile. */
static const s_pattern_t *s_pattern(gw_schema_set_t *set, const char *text, char *err,
                                    size_t err_size)
{
    for (const s_pattern_t *p = set->patterns; p; p = p->next)
        if (!strcmp(p->text, text))
            return p;
    s_pattern_t *p = mb_calloc(1, sizeof *p);
    int rc = s_simple_parse(p, text) ? 0 : regcomp(&p->re, text, REG_EXTENDED | REG_NOSUB);
    if (rc) {
        char why[128];
        regerror(rc, &p->re, why, sizeof why);
        snprintf(err, err_size, "pattern '%s' does not compile: %s", text, why);
        free(p);
        return NULL;
    }
    p->text = mb_strdup(text);
    p->next = set->patterns;
    set->patterns = p;
    return p;
}

const json_t *gw_schema_resolve(gw_schema_set_t *set, const char *ref)
{
    if (!ref || ref[0] != '#')
        return NULL;
    const json_t *at = set->doc;
    const char *p = ref + 1;
    while (*p == '/') {
        p++;
        /* Unescape one reference token: ~1 is '/', ~0 is '~' (RFC 6901). */
        char token[256];
        size_t n = 0;
        while (*p && *p != '/') {
            char c = *p++;
            if (c == '~' && (*p == '0' || *p == '1'))
                c = *p++ == '0' ? '~' : '/';
            if (n + 1 >= sizeof token)
                return NULL;
            token[n++] = c;
        }
        token[n] = '\0';
        if (json_is_object(at)) {
            at = json_object_get(at, token);
        } else if (json_is_array(at)) {
            char *end;
            unsigned long idx = strtoul(token, &end, 10);
            at = (n && !*end) ? json_array_get(at, idx) : NULL;
        } else {
            at = NULL;
        }
        if (!at)
            return NULL;
    }
    return *p ? NULL : at;
}

static unsigned s_type_bit(const char *name)
{
    static const struct {
        const char *name;
        unsigned bit;
    } types[] = {
        {"null", GW_T_NULL},     {"boolean", GW_T_BOOLEAN}, {"integer", GW_T_INTEGER},
        {"number", GW_T_NUMBER}, {"string", GW_T_STRING},   {"array", GW_T_ARRAY},
        {"object", GW_T_OBJECT},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(name, types[i].name))
            return types[i].bit;
    return 0;
}

/*  Reads a non-negative integer keyword; -1 when absent. Returns false
    when present but not a non-negative integer. */
static bool s_count_keyword(const json_t *schema, const char *key, long long *out)
{
    const json_t *v = json_object_get(schema, key);
    *out = -1;
    if (!v)
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = json_integer_value(v);
    return true;
}

static bool s_number_keyword(const json_t *schema, const char *key, bool *has, long double *out)
{
    const json_t *v = json_object_get(schema, key);
    *has = false;
    if (!v)
        return true;
    if (json_is_integer(v))
        *out = (long double)json_integer_value(v);
    else if (json_is_real(v))
        *out = (long double)json_real_value(v);
    else
        return false;
    *has = true;
    return true;
}

static gw_schema_t *s_schema_alloc(gw_schema_set_t *set)
{
    gw_schema_t *s = mb_calloc(1, sizeof *s);
    s->min_length = s->max_length = s->min_items = s->max_items = -1;
    s->next = set->all;
    set->all = s;
    return s;
}

static bool s_compile_into(gw_schema_set_t *set, gw_schema_t *s, const json_t *schema, char *err,
                           size_t err_size, int depth);

static const gw_schema_t *s_compile(gw_schema_set_t *set, const json_t *schema, char *err,
                                    size_t err_size, int depth)
{
    if (depth > 64) {
        snprintf(err, err_size, "schema nested deeper than 64 levels");
        return NULL;
    }
    const json_t *ref = schema ? json_object_get(schema, "$ref") : NULL;
    if (ref) {
        const char *text = json_string_value(ref);
        if (!text) {
            snprintf(err, err_size, "$ref must be a string");
            return NULL;
        }
        for (s_ref_t *r = set->refs; r; r = r->next)
            if (!strcmp(r->ref, text))
                return r->schema;
        const json_t *target = gw_schema_resolve(set, text);
        if (!json_is_object(target)) {
            snprintf(err, err_size, "$ref '%s' does not resolve to a schema", text);
            return NULL;
        }
        /* Registered before compiling, so a schema referring to itself
           (a tree) finds this entry instead of recursing forever. */
        s_ref_t *r = mb_calloc(1, sizeof *r);
        r->ref = mb_strdup(text);
        r->schema = s_schema_alloc(set);
        r->next = set->refs;
        set->refs = r;
        if (!s_compile_into(set, r->schema, target, err, err_size, depth + 1))
            return NULL;
        return r->schema;
    }
    gw_schema_t *s = s_schema_alloc(set);
    if (schema && !s_compile_into(set, s, schema, err, err_size, depth))
        return NULL;
    return s;
}

static bool s_compile_into(gw_schema_set_t *set, gw_schema_t *s, const json_t *schema, char *err,
                           size_t err_size, int depth)
{
    if (!json_is_object(schema)) {
        /* true/false schemas are legal JSON Schema; only "true" (anything)
           is useful in requests, and false would reject every value. */
        if (json_is_true(schema))
            return true;
        snprintf(err, err_size, "a schema must be an object");
        return false;
    }
    const json_t *type = json_object_get(schema, "type");
    if (json_is_string(type)) {
        s->types = s_type_bit(json_string_value(type));
        if (!s->types) {
            snprintf(err, err_size, "unknown type '%s'", json_string_value(type));
            return false;
        }
    } else if (json_is_array(type)) {
        size_t i;
        const json_t *t;
        json_array_foreach(type, i, t)
        {
            unsigned bit = json_is_string(t) ? s_type_bit(json_string_value(t)) : 0;
            if (!bit) {
                snprintf(err, err_size, "unknown type in a type list");
                return false;
            }
            s->types |= bit;
        }
    } else if (type) {
        snprintf(err, err_size, "type must be a string or an array");
        return false;
    }
    /* "number" includes the integers. */
    if (s->types & GW_T_NUMBER)
        s->types |= GW_T_INTEGER;

    const json_t *props = json_object_get(schema, "properties");
    if (props) {
        if (!json_is_object(props)) {
            snprintf(err, err_size, "properties must be an object");
            return false;
        }
        s->props = mb_calloc(json_object_size(props) + 1, sizeof *s->props);
        const char *key;
        const json_t *sub;
        json_object_foreach((json_t *)props, key, sub)
        {
            const gw_schema_t *c = s_compile(set, sub, err, err_size, depth + 1);
            if (!c)
                return false;
            s->props[s->n_props].name = mb_strdup(key);
            s->props[s->n_props].schema = c;
            s->n_props++;
        }
    }
    const json_t *required = json_object_get(schema, "required");
    if (required) {
        if (!json_is_array(required)) {
            snprintf(err, err_size, "required must be an array");
            return false;
        }
        s->required = mb_calloc(json_array_size(required) + 1, sizeof *s->required);
        size_t i;
        const json_t *name;
        json_array_foreach(required, i, name)
        {
            if (!json_is_string(name)) {
                snprintf(err, err_size, "required must list strings");
                return false;
            }
            s->required[s->n_required++] = mb_strdup(json_string_value(name));
        }
    }
    s->closed = json_is_false(json_object_get(schema, "additionalProperties"));

    if (!s_count_keyword(schema, "minLength", &s->min_length) ||
        !s_count_keyword(schema, "maxLength", &s->max_length) ||
        !s_count_keyword(schema, "minItems", &s->min_items) ||
        !s_count_keyword(schema, "maxItems", &s->max_items)) {
        snprintf(err, err_size, "min/maxLength and min/maxItems must be non-negative integers");
        return false;
    }
    if (!s_number_keyword(schema, "minimum", &s->has_minimum, &s->minimum) ||
        !s_number_keyword(schema, "maximum", &s->has_maximum, &s->maximum)) {
        snprintf(err, err_size, "minimum and maximum must be numbers");
        return false;
    }
    const json_t *values = json_object_get(schema, "enum");
    if (values) {
        if (!json_is_array(values)) {
            snprintf(err, err_size, "enum must be an array");
            return false;
        }
        s->enum_values = mb_calloc(json_array_size(values) + 1, sizeof *s->enum_values);
        size_t i;
        const json_t *v;
        json_array_foreach(values, i, v)
        {
            if (!json_is_string(v)) {
                snprintf(err, err_size, "enum values must be strings");
                return false;
            }
            s->enum_values[s->n_enum++] = mb_strdup(json_string_value(v));
        }
    }
    const json_t *items = json_object_get(schema, "items");
    if (items) {
        s->items = s_compile(set, items, err, err_size, depth + 1);
        if (!s->items)
            return false;
    }
    s->unique_items = json_is_true(json_object_get(schema, "uniqueItems"));
    const json_t *pattern = json_object_get(schema, "pattern");
    if (pattern) {
        if (!json_is_string(pattern)) {
            snprintf(err, err_size, "pattern must be a string");
            return false;
        }
        s->pattern = s_pattern(set, json_string_value(pattern), err, err_size);
        if (!s->pattern)
            return false;
    }
    return true;
}

const gw_schema_t *gw_schema_compile(gw_schema_set_t *set, const json_t *schema, char *err,
                                     size_t err_size)
{
    char none[8];
    if (!err) {
        err = none;
        err_size = sizeof none;
    }
    return s_compile(set, schema, err, err_size, 0);
}

unsigned gw_schema_types(const gw_schema_t *schema)
{
    return schema ? schema->types : 0;
}

const gw_schema_t *gw_schema_items(const gw_schema_t *schema)
{
    return schema ? schema->items : NULL;
}

const char *gw_schema_type_name(unsigned types, char *buf, size_t size)
{
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {
        {GW_T_OBJECT, "an object"}, {GW_T_ARRAY, "an array"},     {GW_T_STRING, "a string"},
        {GW_T_NUMBER, "a number"},  {GW_T_INTEGER, "an integer"}, {GW_T_BOOLEAN, "a boolean"},
        {GW_T_NULL, "null"},
    };
    if (types & GW_T_NUMBER)
        types &= ~(unsigned)GW_T_INTEGER;
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!(types & names[i].bit))
            continue;
        types &= ~names[i].bit;
        int n = snprintf(buf + len, size - len, "%s%s", len ? (types ? ", " : " or ") : "",
                         names[i].name);
        if (n < 0 || (size_t)n >= size - len)
            break;
        len += (size_t)n;
    }
    return buf;
}

/* ---- validation ---------------------------------------------------------- */

/*  The JSON path of the value being checked, grown and shrunk as the
    walk goes down and up. A path too long for the buffer is cut, which
    only shortens a message. */
typedef struct {
    char text[sizeof(((gw_invalid_t *)0)->field)];
    size_t len;
} s_path_t;

static size_t s_path_push_key(s_path_t *p, const char *key)
{
    size_t old = p->len;
    int n = snprintf(p->text + p->len, sizeof p->text - p->len, ".%s", key);
    if (n > 0)
        p->len = p->len + (size_t)n < sizeof p->text ? p->len + (size_t)n : sizeof p->text - 1;
    return old;
}

static size_t s_path_push_index(s_path_t *p, size_t index)
{
    size_t old = p->len;
    int n = snprintf(p->text + p->len, sizeof p->text - p->len, "[%zu]", index);
    if (n > 0)
        p->len = p->len + (size_t)n < sizeof p->text ? p->len + (size_t)n : sizeof p->text - 1;
    return old;
}

static void s_path_pop(s_path_t *p, size_t old)
{
    p->len = old;
    p->text[old] = '\0';
}

static int s_fail(gw_invalid_t *err, const s_path_t *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int s_fail(gw_invalid_t *err, const s_path_t *path, const char *fmt, ...)
{
    snprintf(err->field, sizeof err->field, "%s", path->text);
    /* "field: message", the message cut if it must be. */
    int n = snprintf(err->detail, sizeof err->detail, "%s: ", path->text);
    if (n < 0 || (size_t)n >= sizeof err->detail)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->detail + n, sizeof err->detail - (size_t)n, fmt, ap);
    va_end(ap);
    return MB_EINVAL;
}

/*  Writes a schema bound as the document would: integers in full, other
    numbers in the shortest form that reads back the same. */
static const char *s_number_text(long double x, char buf[40])
{
    if (x == floorl(x) && x >= (long double)INT64_MIN && x <= (long double)INT64_MAX) {
        snprintf(buf, 40, "%lld", (long long)x);
        return buf;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, 40, "%.*g", prec, (double)x);
        if (strtod(buf, NULL) == (double)x)
            break;
    }
    return buf;
}

static unsigned s_value_type(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return GW_T_OBJECT;
    case JSON_ARRAY:
        return GW_T_ARRAY;
    case JSON_STRING:
        return GW_T_STRING;
    case JSON_INTEGER:
        return GW_T_INTEGER;
    case JSON_REAL:
        return GW_T_NUMBER;
    case JSON_TRUE:
    case JSON_FALSE:
        return GW_T_BOOLEAN;
    case JSON_NULL:
    default:
        return GW_T_NULL;
    }
}

/*  Code points in valid UTF-8: every byte that does not continue one. */
static size_t s_utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xc0) != 0x80;
    return n;
}

static uint64_t s_hash_bytes(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull; /* FNV-1a */
    return h;
}

/*  A hash consistent with json_equal(): equal values hash equal. */
static uint64_t s_hash_value(const json_t *v, uint64_t h)
{
    int type = json_typeof(v);
    h = s_hash_bytes(h, &type, sizeof type);
    switch (json_typeof(v)) {
    case JSON_STRING:
        return s_hash_bytes(h, json_string_value(v), json_string_length(v));
    case JSON_INTEGER: {
        json_int_t i = json_integer_value(v);
        return s_hash_bytes(h, &i, sizeof i);
    }
    case JSON_REAL: {
        double d = json_real_value(v);
        return s_hash_bytes(h, &d, sizeof d);
    }
    case JSON_ARRAY: {
        size_t i;
        const json_t *item;
        json_array_foreach(v, i, item) h = s_hash_value(item, h);
        return h;
    }
    case JSON_OBJECT: {
        /* Key order does not matter to equality: combine with a sum. */
        uint64_t sum = 0;
        const char *key;
        const json_t *item;
        json_object_foreach((json_t *)v, key, item) sum +=
            s_hash_value(item, s_hash_bytes(0xcbf29ce484222325ull, key, strlen(key)));
        return s_hash_bytes(h, &sum, sizeof sum);
    }
    default:
        return h;
    }
}

typedef struct {
    uint64_t hash;
    size_t index;
} s_hashed_t;

static int s_hashed_cmp(const void *a, const void *b)
{
    const s_hashed_t *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/*  Returns the index of the first item (in array order) equal to an
    earlier one, or (size_t) -1 when all items differ. */
static size_t s_first_duplicate(const json_t *array)
{
    size_t n = json_array_size(array);
    size_t found = (size_t)-1;
    if (n <= S_UNIQUE_PAIRWISE_MAX) {
        for (size_t j = 1; j < n && found == (size_t)-1; j++)
            for (size_t i = 0; i < j; i++)
                if (json_equal(json_array_get(array, i), json_array_get(array, j))) {
                    found = j;
                    break;
                }
        return found;
    }
    s_hashed_t *h = mb_malloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++) {
        h[i].hash = s_hash_value(json_array_get(array, i), 0xcbf29ce484222325ull);
        h[i].index = i;
    }
    qsort(h, n, sizeof *h, s_hashed_cmp);
    for (size_t a = 0; a < n; a++)
        for (size_t b = a + 1; b < n && h[b].hash == h[a].hash; b++)
            if (h[b].index < found &&
                json_equal(json_array_get(array, h[a].index), json_array_get(array, h[b].index)))
                found = h[b].index;
    free(h);
    return found;
}

static int s_check(const gw_schema_t *s, const json_t *v, s_path_t *path, gw_invalid_t *err)
{
    unsigned vt = s_value_type(v);
    if (s->types) {
        unsigned ok = s->types;
        if (!(vt & ok)) {
            char names[96];
            return s_fail(err, path, "must be %s",
                          gw_schema_type_name(s->types, names, sizeof names));
        }
    }
    switch (vt) {
    case GW_T_STRING: {
        const char *str = json_string_value(v);
        size_t len = json_string_length(v);
        if (s->min_length >= 0 || s->max_length >= 0) {
            size_t chars = s_utf8_chars(str, len);
            if (s->min_length >= 0 && chars < (size_t)s->min_length)
                return s->min_length == 1
                           ? s_fail(err, path, "must not be empty")
                           : s_fail(err, path, "must be at least %lld characters long",
                                    s->min_length);
            if (s->max_length >= 0 && chars > (size_t)s->max_length)
                return s_fail(err, path, "must be at most %lld characters long", s->max_length);
        }
        if (s->n_enum) {
            size_t i;
            for (i = 0; i < s->n_enum; i++)
                if (!strcmp(s->enum_values[i], str))
                    break;
            if (i == s->n_enum)
                goto not_in_enum;
        }
        /* A string with an embedded NUL cannot reach here: jansson refuses
           \u0000 unless JSON_ALLOW_NUL, and parameters are C strings. */
        if (s->pattern && !(s->pattern->simple ? s_simple_match(s->pattern, str, len)
                                               : regexec(&s->pattern->re, str, 0, NULL, 0) == 0))
            return s_fail(err, path, "must match the pattern %s", s->pattern->text);
        return 0;
    }
    case GW_T_INTEGER:
    case GW_T_NUMBER: {
        long double x = vt == GW_T_INTEGER ? (long double)json_integer_value(v)
                                           : (long double)json_real_value(v);
        char bound[40];
        if (s->has_minimum && x < s->minimum)
            return s_fail(err, path, "must be >= %s", s_number_text(s->minimum, bound));
        if (s->has_maximum && x > s->maximum)
            return s_fail(err, path, "must be <= %s", s_number_text(s->maximum, bound));
        break;
    }
    case GW_T_ARRAY: {
        size_t n = json_array_size(v);
        if (s->min_items >= 0 && n < (size_t)s->min_items)
            return s_fail(err, path, "must have at least %lld item%s", s->min_items,
                          s->min_items == 1 ? "" : "s");
        if (s->max_items >= 0 && n > (size_t)s->max_items)
            return s_fail(err, path, "must have at most %lld item%s", s->max_items,
                          s->max_items == 1 ? "" : "s");
        if (s->items) {
            for (size_t i = 0; i < n; i++) {
                size_t old = s_path_push_index(path, i);
                int rc = s_check(s->items, json_array_get(v, i), path, err);
                if (rc)
                    return rc;
                s_path_pop(path, old);
            }
        }
        if (s->unique_items) {
            size_t dup = s_first_duplicate(v);
            if (dup != (size_t)-1) {
                s_path_push_index(path, dup);
                return s_fail(err, path, "repeats an earlier item (items must be unique)");
            }
        }
        break;
    }
    case GW_T_OBJECT: {
        for (size_t i = 0; i < s->n_required; i++) {
            if (!json_object_get(v, s->required[i])) {
                s_path_push_key(path, s->required[i]);
                return s_fail(err, path, "is required");
            }
        }
        const char *key;
        const json_t *item;
        json_object_foreach((json_t *)v, key, item)
        {
            const gw_schema_t *sub = NULL;
            for (size_t i = 0; i < s->n_props; i++)
                if (!strcmp(s->props[i].name, key)) {
                    sub = s->props[i].schema;
                    break;
                }
            size_t old = s_path_push_key(path, key);
            if (!sub && s->closed)
                return s_fail(err, path, "is not allowed here");
            if (sub) {
                int rc = s_check(sub, item, path, err);
                if (rc)
                    return rc;
            }
            s_path_pop(path, old);
        }
        break;
    }
    default:
        break;
    }
    if (s->n_enum && vt != GW_T_NULL)
        goto not_in_enum; /* enum lists strings: no other value matches */
    return 0;

not_in_enum : {
    char list[256];
    size_t len = 0;
    list[0] = '\0';
    for (size_t i = 0; i < s->n_enum && len < sizeof list; i++) {
        int n = i < S_ENUM_LISTED ? snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "",
                                             s->enum_values[i])
                                  : snprintf(list + len, sizeof list - len, ", ...");
        if (n < 0)
            break;
        len += (size_t)n;
        if (i >= S_ENUM_LISTED)
            break;
    }
    return s_fail(err, path, "must be one of: %s", list);
}
}

int gw_schema_validate(const gw_schema_t *schema, const json_t *value, const char *root,
                       gw_invalid_t *err)
{
    if (!schema)
        return 0;
    s_path_t path;
    snprintf(path.text, sizeof path.text, "%s", root ? root : "");
    path.len = strlen(path.text);
    return s_check(schema, value, &path, err);
}
