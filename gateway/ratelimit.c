/*  ratelimit — per-key request budgets with GCRA; see ratelimit.h. */
#include "ratelimit.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <jansson.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_alloc.h"
#include "mb_error.h"

#define S_NS_PER_S 1000000000LL
#define S_PERIOD_MAX_NS (7 * 86400 * S_NS_PER_S) /* a week: longer budgets are mistakes */
#define S_COUNT_MAX 1000000000LL
#define S_TAU_MAX ((int64_t)1 << 62) /* burst x interval stays far from overflow */
#define S_KEYS_MAX 8                 /* keys one request is counted on */
#define S_KIND_MAX 64                /* bytes of a key's kind that are hashed */

typedef struct {
    uint64_t hash; /* 0: never used */
    int64_t tat;   /* theoretical arrival time, ns on the caller's clock */
} s_slot_t;

typedef struct {
    char name[GW_RATE_NAME_MAX + 1];
    gw_rate_spec_t spec;
    s_slot_t *slots; /* NULL until the budget is first used */
    uint64_t evictions;
} s_budget_t;

struct gw_rate {
    unsigned char hash_key[crypto_shorthash_KEYBYTES];
    size_t mask; /* slots per budget - 1 */
    s_budget_t budgets[GW_RATE_BUDGETS_MAX];
    int n_budgets;
};

/* ---- specs ------------------------------------------------------------------ */

static int s_spec_error(char *err, size_t err_size, const char *text, const char *why)
{
    if (err && err_size)
        snprintf(err, err_size, "rate '%s': %s", text, why);
    return MB_EINVAL;
}

/*  Reads 1..max as decimal digits at *p. Returns -1 when there are none or
    the number is out of range. */
static long long s_number(const char **p, long long max)
{
    const char *s = *p;
    long long v = 0;
    if (*s < '0' || *s > '9')
        return -1;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (*s - '0');
        if (v > max)
            return -1;
        s++;
    }
    *p = s;
    return v;
}

/*  Nanoseconds of a unit word, or 0. *p moves past the word. */
static int64_t s_unit_ns(const char **p)
{
    static const struct {
        const char *word;
        int64_t ns;
    } units[] = {
        {"seconds", S_NS_PER_S},     {"second", S_NS_PER_S},       {"sec", S_NS_PER_S},
        {"s", S_NS_PER_S},           {"minutes", 60 * S_NS_PER_S}, {"minute", 60 * S_NS_PER_S},
        {"min", 60 * S_NS_PER_S},    {"m", 60 * S_NS_PER_S},       {"hours", 3600 * S_NS_PER_S},
        {"hour", 3600 * S_NS_PER_S}, {"h", 3600 * S_NS_PER_S},     {"days", 86400 * S_NS_PER_S},
        {"day", 86400 * S_NS_PER_S}, {"d", 86400 * S_NS_PER_S},
    };
    size_t n = 0;
    while (isalpha((unsigned char)(*p)[n]))
        n++;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strlen(units[i].word) == n && !strncmp(*p, units[i].word, n)) {
            *p += n;
            return units[i].ns;
        }
    return 0;
}

int gw_rate_spec_parse(const char *text, gw_rate_spec_t *spec, char *err, size_t err_size)
{
    *spec = (gw_rate_spec_t){0, 0};
    if (!text)
        return s_spec_error(err, err_size, "(null)", "missing");
    const char *p = text + strspn(text, " \t");
    if (!strncmp(p, "off", 3) && p[3 + strspn(p + 3, " \t")] == '\0')
        return 0;
    long long count = s_number(&p, S_COUNT_MAX);
    if (count < 1)
        return s_spec_error(err, err_size, text, "want COUNT/PERIOD [burst N], or off");
    p += strspn(p, " \t");
    if (*p++ != '/')
        return s_spec_error(err, err_size, text, "want COUNT/PERIOD [burst N], or off");
    p += strspn(p, " \t");
    long long mult = 1;
    if (*p >= '0' && *p <= '9' && (mult = s_number(&p, 1000000)) < 1)
        return s_spec_error(err, err_size, text, "the period's number must be 1..1000000");
    int64_t unit = s_unit_ns(&p);
    if (!unit)
        return s_spec_error(err, err_size, text, "the period's unit must be s, min, h or d");
    if (mult > S_PERIOD_MAX_NS / unit)
        return s_spec_error(err, err_size, text, "the period is longer than a week");
    int64_t interval = mult * unit / count;
    if (interval < 1)
        return s_spec_error(err, err_size, text, "more than one request per nanosecond");
    long long burst = count;
    p += strspn(p, " \t");
    if (!strncmp(p, "burst", 5)) {
        p += 5;
        p += strspn(p, " \t");
        if ((burst = s_number(&p, S_COUNT_MAX)) < 1)
            return s_spec_error(err, err_size, text, "burst must be 1..1000000000");
        p += strspn(p, " \t");
    }
    if (*p)
        return s_spec_error(err, err_size, text, "unexpected text after the rate");
    if (burst > S_TAU_MAX / interval)
        return s_spec_error(err, err_size, text, "burst x period is too long");
    spec->interval_ns = interval;
    spec->burst = burst;
    return 0;
}

/* ---- the limiter ------------------------------------------------------------ */

gw_rate_t *gw_rate_new(size_t slots)
{
    if (sodium_init() < 0)
        abort(); /* cannot happen once libsodium has its entropy source */
    gw_rate_t *self = mb_calloc(1, sizeof *self);
    crypto_shorthash_keygen(self->hash_key);
    size_t n = GW_RATE_PROBE;
    while (n < slots && n < ((size_t)1 << 26))
        n <<= 1;
    self->mask = n - 1;
    return self;
}

void gw_rate_destroy(gw_rate_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    gw_rate_t *self = *self_p;
    for (int i = 0; i < self->n_budgets; i++)
        free(self->budgets[i].slots);
    sodium_memzero(self->hash_key, sizeof self->hash_key);
    free(self);
    *self_p = NULL;
}

int gw_rate_find(const gw_rate_t *self, const char *name)
{
    for (int i = 0; i < self->n_budgets; i++)
        if (!strcmp(self->budgets[i].name, name))
            return i;
    return MB_ENOTFOUND;
}

int gw_rate_budget(gw_rate_t *self, const char *name, const gw_rate_spec_t *spec)
{
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len > GW_RATE_NAME_MAX ||
        strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != len)
        return MB_EINVAL;
    int id = gw_rate_find(self, name);
    if (id < 0) {
        if (self->n_budgets == GW_RATE_BUDGETS_MAX)
            return MB_EFULL;
        id = self->n_budgets++;
        memcpy(self->budgets[id].name, name, len + 1);
    }
    self->budgets[id].spec = *spec;
    return id;
}

const gw_rate_spec_t *gw_rate_spec(const gw_rate_t *self, int id)
{
    return id >= 0 && id < self->n_budgets ? &self->budgets[id].spec : NULL;
}

static uint64_t s_hash(const gw_rate_t *self, int id, const gw_rate_key_t *key)
{
    unsigned char in[1 + S_KIND_MAX + 1 + GW_RATE_VALUE_MAX];
    size_t n = 0;
    in[n++] = (unsigned char)id;
    size_t kind_len = key->kind ? strnlen(key->kind, S_KIND_MAX) : 0;
    memcpy(in + n, key->kind, kind_len);
    n += kind_len;
    in[n++] = '\0';
    size_t value_len = key->len < GW_RATE_VALUE_MAX ? key->len : GW_RATE_VALUE_MAX;
    memcpy(in + n, key->value, value_len);
    n += value_len;
    unsigned char out[crypto_shorthash_BYTES];
    crypto_shorthash(out, in, n, self->hash_key);
    uint64_t h;
    memcpy(&h, out, sizeof h);
    return h ? h : 1; /* 0 marks an empty slot */
}

/*  The slot holding `h`, or NULL. Slots never go back to empty and a key
    is always stored at or before the first empty slot of its window, so
    the search stops there. */
static s_slot_t *s_find(const gw_rate_t *self, s_budget_t *b, uint64_t h)
{
    for (size_t i = 0; i < GW_RATE_PROBE; i++) {
        s_slot_t *s = &b->slots[(h + i) & self->mask];
        if (s->hash == h)
            return s;
        if (s->hash == 0)
            return NULL;
    }
    return NULL;
}

/*  Sets the TAT of `h`, taking the first empty or rested slot of its
    window when it has none, else evicting the entry nearest to rest. */
static void s_store(gw_rate_t *self, s_budget_t *b, uint64_t h, int64_t tat, int64_t now)
{
    s_slot_t *s = s_find(self, b, h);
    if (!s) {
        s_slot_t *oldest = NULL;
        for (size_t i = 0; i < GW_RATE_PROBE; i++) {
            s_slot_t *c = &b->slots[(h + i) & self->mask];
            if (c->hash == 0 || c->tat <= now) {
                s = c;
                break;
            }
            if (!oldest || c->tat < oldest->tat)
                oldest = c;
        }
        if (!s) {
            s = oldest;
            b->evictions++;
        }
        s->hash = h;
    }
    s->tat = tat;
}

static int64_t s_ceil_s(int64_t ns)
{
    return ns > 0 ? (ns + S_NS_PER_S - 1) / S_NS_PER_S : 0;
}

int gw_rate_take(gw_rate_t *self, int id, const gw_rate_key_t *keys, size_t n, int64_t now_ns,
                 gw_rate_result_t *res)
{
    *res = (gw_rate_result_t){.allowed = true};
    if (id < 0 || id >= self->n_budgets)
        return MB_EINVAL;
    s_budget_t *b = &self->budgets[id];
    const int64_t T = b->spec.interval_ns;
    if (T == 0)
        return 0;
    if (!b->slots)
        b->slots = mb_calloc(self->mask + 1, sizeof *b->slots);
    const int64_t tau = T * b->spec.burst;

    uint64_t hash[S_KEYS_MAX];
    int64_t tat[S_KEYS_MAX];
    size_t counted = 0;
    bool allowed = true;
    int64_t retry = 0;
    for (size_t i = 0; i < n && counted < S_KEYS_MAX; i++) {
        if (!keys[i].value)
            continue;
        uint64_t h = s_hash(self, id, &keys[i]);
        const s_slot_t *s = s_find(self, b, h);
        int64_t t = s && s->tat > now_ns ? s->tat : now_ns;
        if (t + T - now_ns > tau) {
            allowed = false;
            /* Allowed again once max(TAT, now) + T - now <= tau. */
            int64_t wait = s_ceil_s(t + T - tau - now_ns);
            if (wait > retry)
                retry = wait;
        }
        hash[counted] = h;
        tat[counted++] = t;
    }
    if (counted == 0)
        return 0;
    res->limited = true;
    res->allowed = allowed;
    res->limit = b->spec.burst;
    res->remaining = allowed ? INT64_MAX : 0;
    for (size_t i = 0; i < counted; i++) {
        int64_t t = tat[i];
        if (allowed) {
            t += T;
            s_store(self, b, hash[i], t, now_ns);
            int64_t left = (tau - (t - now_ns)) / T;
            if (left < res->remaining)
                res->remaining = left;
        }
        int64_t reset = s_ceil_s(t - now_ns);
        if (reset > res->reset_s)
            res->reset_s = reset;
    }
    res->retry_after_s = allowed ? 0 : (retry > 0 ? retry : 1);
    return 0;
}

size_t gw_rate_used(const gw_rate_t *self, int id, int64_t now_ns)
{
    if (id < 0 || id >= self->n_budgets || !self->budgets[id].slots)
        return 0;
    size_t used = 0;
    for (size_t i = 0; i <= self->mask; i++) {
        const s_slot_t *s = &self->budgets[id].slots[i];
        used += s->hash != 0 && s->tat > now_ns;
    }
    return used;
}

uint64_t gw_rate_evictions(const gw_rate_t *self, int id)
{
    return id >= 0 && id < self->n_budgets ? self->budgets[id].evictions : 0;
}

/* ---- key values ------------------------------------------------------------- */

static size_t s_v6_bytes(const struct in6_addr *a, uint8_t *out)
{
    if (IN6_IS_ADDR_V4MAPPED(a)) {
        memcpy(out, a->s6_addr + 12, 4);
        return 4;
    }
    memcpy(out, a->s6_addr, 8);
    return 8;
}

size_t gw_rate_addr_bytes(const struct sockaddr *sa, uint8_t *out)
{
    if (!sa)
        return 0;
    if (sa->sa_family == AF_INET) {
        memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 4;
    }
    if (sa->sa_family == AF_INET6)
        return s_v6_bytes(&((const struct sockaddr_in6 *)sa)->sin6_addr, out);
    return 0;
}

/*  Parses one X-Forwarded-For entry (blanks around it, IPv6 maybe in
    brackets). */
static size_t s_parse_addr(const char *s, size_t len, uint8_t *out)
{
    while (len && (*s == ' ' || *s == '\t'))
        s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len >= 2 && s[0] == '[' && s[len - 1] == ']')
        s++, len -= 2;
    char text[INET6_ADDRSTRLEN + 1];
    if (len == 0 || len >= sizeof text)
        return 0;
    memcpy(text, s, len);
    text[len] = '\0';
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, text, &a4) == 1) {
        memcpy(out, &a4, 4);
        return 4;
    }
    if (inet_pton(AF_INET6, text, &a6) == 1)
        return s_v6_bytes(&a6, out);
    return 0;
}

size_t gw_rate_forwarded_bytes(const char *header, uint8_t *out)
{
    if (!header)
        return 0;
    size_t end = strlen(header);
    for (;;) {
        size_t start = end;
        while (start > 0 && header[start - 1] != ',')
            start--;
        size_t n = s_parse_addr(header + start, end - start, out);
        if (n || start == 0)
            return n;
        end = start - 1;
    }
}

size_t gw_rate_body_field(const char *body, size_t len, const char *field, char *out, size_t size)
{
    if (size)
        out[0] = '\0';
    if (!body || len == 0 || size == 0)
        return 0;
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    const json_t *v = json_object_get(doc, field);
    size_t n = 0;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t l = json_string_length(v);
        while (l && isspace((unsigned char)*s))
            s++, l--;
        while (l && isspace((unsigned char)s[l - 1]))
            l--;
        n = l < size - 1 ? l : size - 1;
        for (size_t i = 0; i < n; i++)
            out[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] - 'A' + 'a') : s[i];
        out[n] = '\0';
    }
    json_decref(doc);
    return n;
}
