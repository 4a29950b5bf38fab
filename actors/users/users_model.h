/*  users_model — the user record: the rules each field obeys (email,
    password policy, display name, country, tier), reading them from a
    request body, and the record's msgpack form in LMDB.

    A record struct borrows its strings: from the request's args, from a
    decoded stored record, or from buffers of the caller. Keep what it
    borrows from alive while the struct is in use.

    The rules are the ones schemas/openapi.json states; the gateway checks
    the shapes first, the actor checks everything again because the bus has
    other clients. A broken rule is answered with 400 and the field at
    fault ("body.email"). */
#ifndef USERS_MODEL_H
#define USERS_MODEL_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mb_actor.h"

#define USERS_ID_MAX 64        /* bytes of a user id in a path or an auth map */
#define USERS_EMAIL_MAX 254    /* bytes of a normalised email (RFC 5321's path limit) */
#define USERS_LOCAL_MAX 64     /* bytes before the @ */
#define USERS_PASSWORD_MIN 10  /* characters (code points) */
#define USERS_PASSWORD_MAX 256 /* characters; a longer "password" is a mistake or an attack */
#define USERS_NAME_MAX 100     /* characters of a display name */
#define USERS_COUNTRY_LEN 2    /* ISO 3166-1 alpha-2, capitals */
#define USERS_TIER_MAX 16
#define USERS_TIME_MAX 31  /* room for an RFC 3339 timestamp */
#define USERS_HASH_MAX 128 /* bytes of a stored Argon2id string (crypto_pwhash_STRBYTES) */

/*  A string borrowed from elsewhere; ptr NULL means null (absent). */
typedef struct {
    const char *ptr;
    size_t len;
} users_str_t;

typedef struct {
    users_str_t id;
    users_str_t email;         /* normalised: trimmed, lower case */
    users_str_t display_name;  /* 1..USERS_NAME_MAX characters */
    users_str_t country;       /* two capitals, or null (an admin made on the command line) */
    users_str_t tier;          /* "free" or "premium" */
    unsigned roles;            /* MB_ROLE_* bits (mb_jwt.h) */
    users_str_t password_hash; /* the Argon2id string; stored, never answered */
    char created_at[USERS_TIME_MAX + 1];
    char updated_at[USERS_TIME_MAX + 1];
} users_user_t;

/*  What auth.signup reads from its body. */
typedef struct {
    char email[USERS_EMAIL_MAX + 1]; /* normalised */
    users_str_t password;            /* as given, borrowed from the request */
    users_str_t display_name;
    users_str_t country;
} users_signup_t;

/* ---- rules --------------------------------------------------------------- */

/*  Normalises an email address: trims blanks around it, lower-cases ASCII
    letters, and checks its shape: one @, 1..64 bytes before it, a domain of
    dot-separated labels (letters, digits, hyphens, or non-ASCII UTF-8; no
    label empty or starting or ending with a hyphen) with at least two
    labels, no blanks, controls or any of "(),:;<>[\]" anywhere, valid UTF-8,
    at most USERS_EMAIL_MAX bytes. Writes the result and a NUL into out and
    returns true; false when it has not that shape. */
bool users_email_normalise(const char *s, size_t len, char out[USERS_EMAIL_MAX + 1]);

/*  Checks a new password against the policy. Returns NULL when it is
    fine, else the error code ("password_too_short", "password_too_long",
    "password_too_common", "invalid" for bytes that are not UTF-8) and sets
    *message to a static English sentence. */
const char *users_password_policy(const char *s, size_t len, const char **message);


/*  True for "free" and "premium". */
bool users_tier_valid(const char *s, size_t len);

/* ---- request bodies ---------------------------------------------------------- */

/*  Reads the body of auth.signup (args.body, may be NULL) into *out.
    Returns true, or false after answering `call` with 400 naming the field
    at fault: "body" (not a map), "body.<name>" for an unknown field, then
    email, password, display_name, country in that order. */
bool users_signup_read(mb_call_t *call, const msgpack_object *body, users_signup_t *out);

/*  Applies a me.update body (display_name and/or country; null clears
    country) to *u. Returns true, or false after answering 400. */
bool users_user_apply(mb_call_t *call, const msgpack_object *body, users_user_t *u);

/*  Reads string field `name` of map `body` into *out, answering 400
    "invalid" with field "body.<name>" when it is missing (and required)
    or not a string of at most `max_bytes`. Returns true when present and
    fine, or when absent and not required (then out->ptr is NULL). */
bool users_body_str(mb_call_t *call, const msgpack_object *body, const char *name, bool required,
                    size_t max_bytes, users_str_t *out);

/*  Answers 400 "invalid" naming the first key of `body` not in `allowed`
    (NULL-terminated), or "body" when body is not a map. Returns true when
    every key is allowed. */
bool users_body_keys(mb_call_t *call, const msgpack_object *body, const char *const *allowed);

/* ---- stored form ----------------------------------------------------------------- */

/*  Reads a stored record (a decoded msgpack map) into *u, which borrows
    from `o`. Returns false when `o` is not a user record. */
bool users_user_decode(const msgpack_object *o, users_user_t *u);

/*  Packs the record as one msgpack map: with `stored`, the form kept in
    LMDB (with the password hash); without, the reply body, which never
    holds it. */
void users_user_pack(msgpack_packer *pk, const users_user_t *u, bool stored);

/* ---- events ----------------------------------------------------------------------- */

#define USERS_TOPIC "users.user" /* the topic of every event of this actor */

/*  Packs the data of a users.user event as one msgpack map:
    {"action": `action`, "id": `u`'s id, "user": {id, country, tier,
    roles, display_name, created_at}}, or "user": nil when `deleted`.
    Never the email, never a hash: the event goes to every consumer. */
void users_event_pack(msgpack_packer *pk, const char *action, const users_user_t *u, bool deleted);

/*  True when the fields a users.user event carries differ between `a`
    and `b` (a write that changes none of them publishes nothing). */
bool users_event_differs(const users_user_t *a, const users_user_t *b);

/*  Writes the current time as RFC 3339 UTC with milliseconds. */
void users_now(char out[USERS_TIME_MAX + 1]);

/*  Copies `len` bytes of `s` into out (cap bytes) with a NUL; false when
    it does not fit. */
bool users_copy(char *out, size_t cap, const char *s, size_t len);

#endif
