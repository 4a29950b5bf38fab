/*  ratelimit — per-key request budgets with GCRA, in bounded memory.

        gw_rate_t *rate = gw_rate_new (GW_RATE_SLOTS);
        gw_rate_spec_t spec;
        gw_rate_spec_parse ("10/min burst 5", &spec, err, sizeof err);
        int signin = gw_rate_budget (rate, "signin", &spec);
        gw_rate_key_t keys[] = {{"addr", ip, 4}, {"body.email", email, n}};
        gw_rate_result_t res;
        gw_rate_take (rate, signin, keys, 2, now_ns, &res);
        if (!res.allowed)
            ... 429, Retry-After: res.retry_after_s ...

    GCRA (the generic cell rate algorithm, as in ATM and in redis-cell):
    a budget of one request per `interval` with bursts of `burst` keeps,
    per key, one number: the theoretical arrival time (TAT) at which the
    key would be back at rest. A request at `now` is allowed when
        max(TAT, now) + interval - now <= burst * interval
    and then moves TAT to max(TAT, now) + interval. So a key at rest may
    send `burst` requests at once, then one per interval; denied requests
    change nothing. Unlike a token bucket there is no refill to run: the
    state is 8 bytes and a check is a few integer operations.

    A request counted on several keys (an address and an email) is
    allowed only when every key allows it, and then counted on all of
    them; when any key refuses, none is charged.

    Memory: each budget has a fixed table of `slots` entries (16 bytes:
    the key's hash and its TAT), open addressing with linear probing over
    a window of GW_RATE_PROBE slots. A key is the 64-bit SipHash
    (libsodium crypto_shorthash) of the budget, the key's kind and its
    value, under a random key drawn per process, so clients cannot choose
    values that pile up in one window. An entry whose TAT has passed is
    as good as absent (a key at rest) and is reused in place; when a
    window has no such entry, the one nearest to rest is evicted (and
    counted): that key starts again with a full burst, the most lenient
    failure and the one that forgets the least. Two values whose 64-bit
    hashes collide share a count (about one pair in 2^64 / slots^2).

    Time is whatever monotonic nanosecond clock the caller passes, so
    tests drive it by hand. Not thread-safe: one gw_rate_t per thread
    (the gateway has one). */
#ifndef GW_RATELIMIT_H
#define GW_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define GW_RATE_SLOTS 65536    /* entries per budget: 1 MiB each, touched as used */
#define GW_RATE_PROBE 16       /* slots a key may sit past its home slot */
#define GW_RATE_BUDGETS_MAX 16 /* budgets one limiter holds */
#define GW_RATE_NAME_MAX 32    /* bytes of a budget name: [a-z0-9_] */
#define GW_RATE_VALUE_MAX 256  /* bytes of a key's value that count; longer ones are cut */
#define GW_RATE_ADDR_MAX 16    /* bytes gw_rate_addr_bytes() writes at most */

/*  What a budget allows. interval_ns 0 means "off": nothing is counted. */
typedef struct {
    int64_t interval_ns; /* one request per interval at the steady rate */
    int64_t burst;       /* requests a key at rest may send at once */
} gw_rate_spec_t;

/*  One value a request is counted on. */
typedef struct {
    const char *kind;  /* "addr", "user", "body.email": keeps kinds apart */
    const void *value; /* the bytes: an address, a user id, an email */
    size_t len;
} gw_rate_key_t;

/*  The verdict, with what the RateLimit-* headers say. */
typedef struct {
    bool limited;          /* false: the budget is off (or no key had a value);
                              the rest is meaningless and no header is due */
    bool allowed;          /* the request may go on (it was counted) */
    int64_t limit;         /* RateLimit-Limit: the burst */
    int64_t remaining;     /* RateLimit-Remaining: requests left right now */
    int64_t reset_s;       /* RateLimit-Reset: seconds until back at rest */
    int64_t retry_after_s; /* Retry-After when !allowed (>= 1), else 0 */
} gw_rate_result_t;

typedef struct gw_rate gw_rate_t;

/*  Parses a budget: "off", or "<count>/<period>" optionally followed by
    " burst <n>", where period is [<number>]s|sec|second|m|min|minute|
    h|hour|d|day ("20/s burst 100", "10/min burst 5", "100/15min"). The
    burst defaults to the count. Returns 0, or MB_EINVAL with a reason in
    err (may be NULL). */
int gw_rate_spec_parse(const char *text, gw_rate_spec_t *spec, char *err, size_t err_size);

/*  Makes a limiter whose budgets have `slots` entries each (rounded up to
    a power of two, at least GW_RATE_PROBE), with a random hash key.
    Never NULL. */
gw_rate_t *gw_rate_new(size_t slots);

/*  Frees the limiter; nulls *self_p. Safe to call twice. */
void gw_rate_destroy(gw_rate_t **self_p);

/*  Adds budget `name` (1..GW_RATE_NAME_MAX bytes of [a-z0-9_]), or gives
    an existing one a new spec (its counts are kept). Returns the budget's
    id (>= 0), or MB_EINVAL for a bad name, MB_EFULL when
    GW_RATE_BUDGETS_MAX budgets exist. The table is allocated on first
    use of a budget that is not off. */
int gw_rate_budget(gw_rate_t *self, const char *name, const gw_rate_spec_t *spec);

/*  Returns the id of budget `name`, or MB_ENOTFOUND. */
int gw_rate_find(const gw_rate_t *self, const char *name);

/*  The spec of budget `id`, or NULL for an unknown id. */
const gw_rate_spec_t *gw_rate_spec(const gw_rate_t *self, int id);

/*  Counts one request at `now_ns` against budget `id` on each of the
    `n` keys (keys with value NULL are skipped) and fills *res. Returns 0,
    or MB_EINVAL for an unknown budget (then *res says allowed, not
    limited). */
int gw_rate_take(gw_rate_t *self, int id, const gw_rate_key_t *keys, size_t n, int64_t now_ns,
                 gw_rate_result_t *res);

/*  Entries in use (TAT still ahead of `now_ns`) and evictions so far of
    budget `id`, for tests and metrics. */
size_t gw_rate_used(const gw_rate_t *self, int id, int64_t now_ns);
uint64_t gw_rate_evictions(const gw_rate_t *self, int id);

/* ---- where key values come from ------------------------------------------ */

/*  The bytes an address is counted by: 4 for IPv4 (IPv4-mapped IPv6
    included), 8 for IPv6 -- its /64 prefix, since one subscriber usually
    holds a whole /64 and could otherwise use 2^64 addresses. Writes them
    into out[GW_RATE_ADDR_MAX] and returns their count; 0 for another
    family or NULL. */
size_t gw_rate_addr_bytes(const struct sockaddr *sa, uint8_t *out);

/*  The same for the address X-Forwarded-For names last (the right-most
    entry that parses as an IPv4 or IPv6 address: the one the proxy in
    front of us appended). Returns 0 when no entry parses. */
size_t gw_rate_forwarded_bytes(const char *header, uint8_t *out);

/*  The value of top-level string field `field` of JSON object `body`
    (`len` bytes), with blanks trimmed and ASCII letters lower-cased, into
    out[size] (NUL-terminated, cut to size - 1 bytes). Returns its length;
    0 when the body is not a JSON object, has no such field, or it is not
    a string (or is blank). */
size_t gw_rate_body_field(const char *body, size_t len, const char *field, char *out, size_t size);

#endif
