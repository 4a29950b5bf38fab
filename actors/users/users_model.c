/*  users_model — see users_model.h. */
#include "users_model.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "mb_jwt.h"
#include "mb_msgpack.h"
#include "mb_utf8.h"

/*  Longest field path we name in an error ("body.display_name", or an
    unknown key cut short). */
#define S_FIELD_MAX 96
/*  An unknown key is echoed in the field path only up to this many bytes. */
#define S_KEY_ECHO_MAX 48

/*  Among the most used passwords in published breach lists, keeping
    only those the length rule lets through (10 characters or more).
    Compared without regard to ASCII case. */
static const char *const s_common_passwords[] = {
    "0000000000",   "0123456789",   "0987654321",       "1111111111",    "1234512345",
    "1234554321",   "1234567890",   "1234567891",       "12345678910",   "123456789a",
    "1234567890a",  "123123123123", "123456123456",     "1q2w3e4r5t",    "1q2w3e4r5t6y",
    "1qaz2wsx3edc", "9876543210",   "a123456789",       "abc1234567",    "abcd123456",
    "abcdefghij",   "admin12345",   "adminadmin",       "administrator", "asdfghjkl1",
    "baseball123",  "changeme123",  "charlie123",       "dragon1234",    "football123",
    "iloveyou12",   "iloveyou123",  "letmein123",       "michael123",    "monkey1234",
    "p@ssw0rd12",   "p@ssw0rd123",  "passw0rd12",       "passw0rd123",   "password00",
    "password01",   "password12",   "password123",      "password1234",  "password2024",
    "password2025", "password2026", "passwordpassword", "princess12",    "qazwsxedc1",
    "qazwsxedcrfv", "qwerty1234",   "qwerty12345",      "qwerty123456",  "qwertyqwerty",
    "qwertyuiop",   "starwars123",  "sunshine12",       "superman123",   "welcome123",
    "welcome2024",  "zaq12wsxcde3", "zxcvbnm123",       "zxcvbnmasdf",
};

/* ---- answering a broken rule ------------------------------------------------ */

static bool s_invalid(mb_call_t *call, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*  Answers 400 "invalid" naming `field`; returns false so callers can
    `return s_invalid (...)`. */
static bool s_invalid(mb_call_t *call, const char *field, const char *fmt, ...)
{
    char message[256];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    mb_call_error(call, 400, "invalid", field, "%s", message);
    return false;
}

/*  The key is echoed back only when it is short printable ASCII: it goes
    into a JSON document and a log line, and a peer chose its bytes. */
static bool s_unknown_field(mb_call_t *call, const msgpack_object *key)
{
    const char *s;
    size_t len;
    bool printable = mb_obj_str(key, &s, &len) && len > 0 && len <= S_KEY_ECHO_MAX;
    for (size_t i = 0; printable && i < len; i++)
        printable = s[i] > 0x20 && s[i] < 0x7f;
    if (!printable)
        return s_invalid(call, "body", "body has a field that is not allowed");
    char field[S_FIELD_MAX];
    snprintf(field, sizeof field, "body.%.*s", (int)len, s);
    return s_invalid(call, field, "%s is not a field of this object", field);
}

/* ---- text rules ------------------------------------------------------------- */


static bool s_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool s_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/*  One domain label of a lower-cased address: letters, digits, hyphens
    (not at either end), or non-ASCII bytes (an internationalised name). */
static bool s_label_ok(const char *s, size_t len)
{
    if (len == 0 || len > 63 || s[0] == '-' || s[len - 1] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(s_alnum(c) || c == '-' || c >= 0x80))
            return false;
    }
    return true;
}

bool users_email_normalise(const char *s, size_t len, char out[USERS_EMAIL_MAX + 1])
{
    while (len > 0 && s_blank(s[0]))
        s++, len--;
    while (len > 0 && s_blank(s[len - 1]))
        len--;
    size_t chars;
    if (len == 0 || len > USERS_EMAIL_MAX || !mb_utf8_chars(s, len, &chars))
        return false;
    const char *at = NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f || strchr("(),:;<>[\\]\"", c))
            return false;
        if (c == '@') {
            if (at)
                return false;
            at = s + i;
        }
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : (char)c;
    }
    out[len] = '\0';
    if (!at)
        return false;
    size_t local = (size_t)(at - s);
    if (local == 0 || local > USERS_LOCAL_MAX)
        return false;
    const char *domain = out + local + 1, *end = out + len;
    size_t labels = 0;
    for (const char *p = domain; p <= end;) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        const char *stop = dot ? dot : end;
        if (!s_label_ok(p, (size_t)(stop - p)))
            return false;
        labels++;
        p = stop + 1;
    }
    return labels >= 2;
}

const char *users_password_policy(const char *s, size_t len, const char **message)
{
    size_t chars;
    if (!mb_utf8_chars(s, len, &chars)) {
        *message = "password must be valid UTF-8 text";
        return "invalid";
    }
    if (chars < USERS_PASSWORD_MIN) {
        *message = "password must have at least 10 characters";
        return "password_too_short";
    }
    if (chars > USERS_PASSWORD_MAX) {
        *message = "password must have at most 256 characters";
        return "password_too_long";
    }
    bool one_symbol = true;
    for (size_t i = 1; i < len && one_symbol; i++)
        one_symbol = s[i] == s[0];
    for (size_t i = 0; !one_symbol && i < sizeof s_common_passwords / sizeof *s_common_passwords;
         i++)
        one_symbol =
            strlen(s_common_passwords[i]) == len && strncasecmp(s_common_passwords[i], s, len) == 0;
    if (one_symbol) {
        *message = "password is too common; choose one that is harder to guess";
        return "password_too_common";
    }
    return NULL;
}

bool users_tier_valid(const char *s, size_t len)
{
    return (len == 4 && memcmp(s, "free", 4) == 0) || (len == 7 && memcmp(s, "premium", 7) == 0);
}

static bool s_country_valid(users_str_t c)
{
    return c.len == USERS_COUNTRY_LEN && c.ptr[0] >= 'A' && c.ptr[0] <= 'Z' && c.ptr[1] >= 'A' &&
           c.ptr[1] <= 'Z';
}

/*  1..USERS_NAME_MAX characters of UTF-8 with no control characters. */
static bool s_name_valid(users_str_t n)
{
    size_t chars;
    if (!mb_utf8_chars(n.ptr, n.len, &chars) || chars == 0 || chars > USERS_NAME_MAX)
        return false;
    for (size_t i = 0; i < n.len; i++)
        if ((unsigned char)n.ptr[i] < 0x20 || n.ptr[i] == 0x7f)
            return false;
    return true;
}

/* ---- request bodies --------------------------------------------------------------- */

bool users_body_keys(mb_call_t *call, const msgpack_object *body, const char *const *allowed)
{
    if (!body || body->type != MSGPACK_OBJECT_MAP)
        return s_invalid(call, "body", "body must be a JSON object");
    for (uint32_t i = 0; i < body->via.map.size; i++) {
        const msgpack_object *key = &body->via.map.ptr[i].key;
        bool known = false;
        for (const char *const *a = allowed; *a && !known; a++)
            known = mb_obj_str_eq(key, *a);
        if (!known)
            return s_unknown_field(call, key);
    }
    return true;
}

bool users_body_str(mb_call_t *call, const msgpack_object *body, const char *name, bool required,
                    size_t max_bytes, users_str_t *out)
{
    char field[S_FIELD_MAX];
    snprintf(field, sizeof field, "body.%s", name);
    *out = (users_str_t){NULL, 0};
    const msgpack_object *o = mb_map_get(body, name);
    if (!o && !required)
        return true;
    if (!o)
        return s_invalid(call, field, "%s is required", field);
    if (!mb_obj_str(o, &out->ptr, &out->len) || out->len > max_bytes) {
        *out = (users_str_t){NULL, 0};
        return s_invalid(call, field, "%s must be a string of at most %zu bytes", field, max_bytes);
    }
    return true;
}

bool users_signup_read(mb_call_t *call, const msgpack_object *body, users_signup_t *out)
{
    static const char *const allowed[] = {"email", "password", "display_name", "country", NULL};
    users_str_t email;
    if (!users_body_keys(call, body, allowed) ||
        !users_body_str(call, body, "email", true, 4 * USERS_EMAIL_MAX, &email))
        return false;
    if (!users_email_normalise(email.ptr, email.len, out->email))
        return s_invalid(call, "body.email", "body.email must be an email address (name@domain)");
    if (!users_body_str(call, body, "password", true, 4 * USERS_PASSWORD_MAX, &out->password))
        return false;
    const char *message;
    const char *code = users_password_policy(out->password.ptr, out->password.len, &message);
    if (code) {
        mb_call_error(call, 400, code, "body.password", "%s", message);
        return false;
    }
    if (!users_body_str(call, body, "display_name", true, 4 * USERS_NAME_MAX, &out->display_name))
        return false;
    if (!s_name_valid(out->display_name))
        return s_invalid(call, "body.display_name",
                         "body.display_name must be 1 to %d characters, without control characters",
                         USERS_NAME_MAX);
    if (!users_body_str(call, body, "country", true, USERS_COUNTRY_LEN, &out->country))
        return false;
    if (!s_country_valid(out->country))
        return s_invalid(call, "body.country",
                         "body.country must be an ISO 3166-1 alpha-2 code in capitals (\"SE\")");
    return true;
}

bool users_user_apply(mb_call_t *call, const msgpack_object *body, users_user_t *u)
{
    static const char *const allowed[] = {"display_name", "country", NULL};
    if (!users_body_keys(call, body, allowed))
        return false;
    users_str_t name;
    const msgpack_object *country = mb_map_get(body, "country");
    if (!users_body_str(call, body, "display_name", false, 4 * USERS_NAME_MAX, &name))
        return false;
    if (name.ptr && !s_name_valid(name))
        return s_invalid(call, "body.display_name",
                         "body.display_name must be 1 to %d characters, without control characters",
                         USERS_NAME_MAX);
    if (name.ptr)
        u->display_name = name;
    if (country && country->type == MSGPACK_OBJECT_NIL)
        u->country = (users_str_t){NULL, 0};
    else if (country) {
        users_str_t c = {NULL, 0};
        if (!mb_obj_str(country, &c.ptr, &c.len) || !s_country_valid(c))
            return s_invalid(
                call, "body.country",
                "body.country must be an ISO 3166-1 alpha-2 code in capitals, or null");
        u->country = c;
    }
    return true;
}

/* ---- stored form -------------------------------------------------------------------- */

static bool s_str(const msgpack_object *map, const char *key, users_str_t *out, bool nullable)
{
    const msgpack_object *o = mb_map_get(map, key);
    if (nullable && o && o->type == MSGPACK_OBJECT_NIL) {
        *out = (users_str_t){NULL, 0};
        return true;
    }
    return mb_obj_str(o, &out->ptr, &out->len);
}

static bool s_time(const msgpack_object *map, const char *key, char out[USERS_TIME_MAX + 1])
{
    users_str_t t;
    return s_str(map, key, &t, false) && users_copy(out, USERS_TIME_MAX + 1, t.ptr, t.len);
}

bool users_user_decode(const msgpack_object *o, users_user_t *u)
{
    memset(u, 0, sizeof *u);
    if (!o || o->type != MSGPACK_OBJECT_MAP)
        return false;
    const msgpack_object *roles = mb_map_get(o, "roles");
    if (!s_str(o, "id", &u->id, false) || !s_str(o, "email", &u->email, false) ||
        !s_str(o, "display_name", &u->display_name, false) ||
        !s_str(o, "country", &u->country, true) || !s_str(o, "tier", &u->tier, false) ||
        !s_str(o, "password_hash", &u->password_hash, false) ||
        !s_time(o, "created_at", u->created_at) || !s_time(o, "updated_at", u->updated_at) ||
        !roles || roles->type != MSGPACK_OBJECT_ARRAY)
        return false;
    for (uint32_t i = 0; i < roles->via.array.size; i++) {
        users_str_t r;
        if (!mb_obj_str(&roles->via.array.ptr[i], &r.ptr, &r.len))
            return false;
        u->roles |= mb_jwt_role_bit(r.ptr, r.len);
    }
    return true;
}

static void s_pack_str(msgpack_packer *pk, const char *key, users_str_t value)
{
    mb_pack_cstr(pk, key);
    if (value.ptr)
        mb_pack_strn(pk, value.ptr, value.len);
    else
        msgpack_pack_nil(pk);
}

static void s_pack_roles(msgpack_packer *pk, unsigned roles)
{
    bool admin = (roles & MB_ROLE_ADMIN) != 0;
    bool user = (roles & MB_ROLE_USER) != 0;
    msgpack_pack_array(pk, (uint32_t)user + (uint32_t)admin);
    if (user)
        mb_pack_cstr(pk, "user");
    if (admin)
        mb_pack_cstr(pk, "admin");
}

void users_user_pack(msgpack_packer *pk, const users_user_t *u, bool stored)
{
    msgpack_pack_map(pk, stored ? 9 : 8);
    s_pack_str(pk, "id", u->id);
    s_pack_str(pk, "email", u->email);
    s_pack_str(pk, "display_name", u->display_name);
    s_pack_str(pk, "country", u->country);
    s_pack_str(pk, "tier", u->tier);
    mb_pack_cstr(pk, "roles");
    s_pack_roles(pk, u->roles);
    mb_pack_cstr(pk, "created_at");
    mb_pack_cstr(pk, u->created_at);
    mb_pack_cstr(pk, "updated_at");
    mb_pack_cstr(pk, u->updated_at);
    if (stored)
        s_pack_str(pk, "password_hash", u->password_hash);
}

void users_event_pack(msgpack_packer *pk, const char *action, const users_user_t *u, bool deleted)
{
    msgpack_pack_map(pk, 3);
    mb_pack_cstr(pk, "action");
    mb_pack_cstr(pk, action);
    s_pack_str(pk, "id", u->id);
    mb_pack_cstr(pk, "user");
    if (deleted) {
        msgpack_pack_nil(pk);
        return;
    }
    msgpack_pack_map(pk, 6);
    s_pack_str(pk, "id", u->id);
    s_pack_str(pk, "country", u->country);
    s_pack_str(pk, "tier", u->tier);
    mb_pack_cstr(pk, "roles");
    s_pack_roles(pk, u->roles);
    s_pack_str(pk, "display_name", u->display_name);
    mb_pack_cstr(pk, "created_at");
    mb_pack_cstr(pk, u->created_at);
}

static bool s_same(users_str_t a, users_str_t b)
{
    if (!a.ptr || !b.ptr)
        return !a.ptr && !b.ptr;
    return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

bool users_event_differs(const users_user_t *a, const users_user_t *b)
{
    return !s_same(a->id, b->id) || !s_same(a->country, b->country) || !s_same(a->tier, b->tier) ||
           a->roles != b->roles || !s_same(a->display_name, b->display_name) ||
           strcmp(a->created_at, b->created_at) != 0;
}

void users_now(char out[USERS_TIME_MAX + 1])
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(out, USERS_TIME_MAX + 1, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, USERS_TIME_MAX + 1 - n, ".%03ldZ", now.tv_nsec / 1000000);
}

bool users_copy(char *out, size_t cap, const char *s, size_t len)
{
    if (len >= cap)
        return false;
    memcpy(out, s, len);
    out[len] = '\0';
    return true;
}
