/*  ratelimit: GCRA budgets per key, in a bounded table. The clock is
    passed in, so every test drives time by hand: no sleeps. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "mb_error.h"
#include "ratelimit.h"

#define S 1000000000LL /* ns per second */
#define T0 (1000 * S)  /* any start time will do */

static gw_rate_spec_t s_spec(const char *text)
{
    gw_rate_spec_t spec;
    char err[160] = "";
    cr_assert_eq(gw_rate_spec_parse(text, &spec, err, sizeof err), 0, "%s", err);
    return spec;
}

static gw_rate_result_t s_take(gw_rate_t *rate, int budget, const char *kind, const char *value,
                               int64_t now)
{
    gw_rate_key_t key = {kind, value, strlen(value)};
    gw_rate_result_t res;
    cr_assert_eq(gw_rate_take(rate, budget, &key, 1, now, &res), 0);
    return res;
}

/*  Usage: the sign-in budget, 10 a minute with bursts of 5, per address
    and per email: a burst of 5, then one every 6 s. */
Test(gw_rate, usage)
{
    gw_rate_t *rate = gw_rate_new(GW_RATE_SLOTS);
    gw_rate_spec_t spec = s_spec("10/min burst 5");
    int signin = gw_rate_budget(rate, "signin", &spec);
    cr_assert_geq(signin, 0);
    cr_assert_eq(gw_rate_find(rate, "signin"), signin);

    uint8_t ip[4] = {192, 0, 2, 7};
    gw_rate_key_t keys[] = {{"addr", ip, 4}, {"body.email", "alice@x.com", 11}};
    gw_rate_result_t res;
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(gw_rate_take(rate, signin, keys, 2, T0, &res), 0);
        cr_assert(res.limited);
        cr_assert(res.allowed, "request %d of the burst", i + 1);
        cr_assert_eq(res.limit, 5);
        cr_assert_eq(res.remaining, 4 - i);
        cr_assert_eq(res.reset_s, 6 * (i + 1), "back at rest after %d x 6 s", i + 1);
    }
    gw_rate_take(rate, signin, keys, 2, T0, &res);
    cr_assert_not(res.allowed, "the 6th at once is refused");
    cr_assert_eq(res.remaining, 0);
    cr_assert_eq(res.retry_after_s, 6);
    gw_rate_take(rate, signin, keys, 2, T0 + 6 * S, &res);
    cr_assert(res.allowed, "one more after 6 s");
    gw_rate_destroy(&rate);
    gw_rate_destroy(&rate);
    cr_assert_null(rate);
}

Test(gw_rate, spec_parsing)
{
    gw_rate_spec_t spec = s_spec("20/s burst 100");
    cr_assert_eq(spec.interval_ns, S / 20);
    cr_assert_eq(spec.burst, 100);
    spec = s_spec("10/min burst 5");
    cr_assert_eq(spec.interval_ns, 6 * S);
    cr_assert_eq(spec.burst, 5);
    spec = s_spec("100/15min");
    cr_assert_eq(spec.interval_ns, 9 * S);
    cr_assert_eq(spec.burst, 100, "the burst defaults to the count");
    spec = s_spec("  3 / hour   burst  2 ");
    cr_assert_eq(spec.interval_ns, 1200 * S);
    cr_assert_eq(spec.burst, 2);
    spec = s_spec("1000000/second");
    cr_assert_eq(spec.interval_ns, 1000);
    spec = s_spec("1/d");
    cr_assert_eq(spec.interval_ns, 86400 * S);
    spec = s_spec("off");
    cr_assert_eq(spec.interval_ns, 0, "off counts nothing");

    const char *bad[] = {"",
                         "10",
                         "0/s",
                         "10/",
                         "10/x",
                         "10/s burst",
                         "10/s burst 0",
                         "10/s extra",
                         "-1/s",
                         "10/0s",
                         "10/8d",
                         "1000000000/ms",
                         "2000000000/s",
                         "1/d burst 1000000000",
                         "offf",
                         "10/s burst 5 6"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[160] = "";
        cr_assert_eq(gw_rate_spec_parse(bad[i], &spec, err, sizeof err), MB_EINVAL, "'%s' taken",
                     bad[i]);
        cr_assert(strstr(err, "rate '"), "a reason: %s", err);
    }
    cr_assert_eq(gw_rate_spec_parse(NULL, &spec, NULL, 0), MB_EINVAL);
}

Test(gw_rate, steady_rate_retry_after_and_recovery)
{
    gw_rate_t *rate = gw_rate_new(1024);
    gw_rate_spec_t spec = s_spec("2/s burst 4"); /* T = 500 ms, tau = 2 s */
    int b = gw_rate_budget(rate, "default", &spec);
    for (int i = 0; i < 4; i++)
        cr_assert(s_take(rate, b, "addr", "a", T0).allowed);
    gw_rate_result_t r = s_take(rate, b, "addr", "a", T0);
    cr_assert_not(r.allowed);
    cr_assert_eq(r.retry_after_s, 1, "500 ms rounds up to 1 s");
    cr_assert_eq(r.reset_s, 2);

    /* Refused requests change nothing: hammering does not push it back. */
    for (int i = 0; i < 100; i++)
        cr_assert_not(s_take(rate, b, "addr", "a", T0 + i * 1000).allowed);
    cr_assert(s_take(rate, b, "addr", "a", T0 + S / 2).allowed, "one per 500 ms");
    cr_assert_not(s_take(rate, b, "addr", "a", T0 + S / 2).allowed);
    cr_assert_not(s_take(rate, b, "addr", "a", T0 + S - 1).allowed, "1 ns early");
    cr_assert(s_take(rate, b, "addr", "a", T0 + S).allowed, "exactly on time");

    /* Steady: a request every 500 ms is always allowed, with the same
       remaining count each time. */
    for (int i = 3; i < 40; i++) {
        r = s_take(rate, b, "addr", "a", T0 + i * S / 2);
        cr_assert(r.allowed, "request at %d x 500 ms", i);
        cr_assert_eq(r.remaining, 0);
    }
    /* Rested: after tau with nothing, a full burst again. */
    int64_t later = T0 + 39 * S / 2 + 2 * S;
    r = s_take(rate, b, "addr", "a", later);
    cr_assert(r.allowed);
    cr_assert_eq(r.remaining, 3);
    /* Half rested: after 1 s, two more at once, not three. */
    int64_t t = later + 10 * S;
    for (int i = 0; i < 4; i++)
        cr_assert(s_take(rate, b, "addr", "b", t).allowed);
    t += S;
    cr_assert(s_take(rate, b, "addr", "b", t).allowed);
    cr_assert(s_take(rate, b, "addr", "b", t).allowed);
    r = s_take(rate, b, "addr", "b", t);
    cr_assert_not(r.allowed);
    cr_assert_eq(r.retry_after_s, 1);

    /* A long interval: Retry-After counts whole seconds, rounded up. */
    spec = s_spec("1/min burst 1");
    int slow = gw_rate_budget(rate, "slow", &spec);
    cr_assert(s_take(rate, slow, "user", "u", T0).allowed);
    r = s_take(rate, slow, "user", "u", T0 + S / 10);
    cr_assert_not(r.allowed);
    cr_assert_eq(r.retry_after_s, 60, "59.9 s rounds up to 60");
    r = s_take(rate, slow, "user", "u", T0 + 59 * S);
    cr_assert_eq(r.retry_after_s, 1);
    cr_assert(s_take(rate, slow, "user", "u", T0 + 60 * S).allowed);
    gw_rate_destroy(&rate);
}

Test(gw_rate, keys_kinds_and_budgets_are_apart)
{
    gw_rate_t *rate = gw_rate_new(1024);
    gw_rate_spec_t spec = s_spec("1/min burst 1");
    int a = gw_rate_budget(rate, "a", &spec);
    int b = gw_rate_budget(rate, "b", &spec);
    cr_assert_neq(a, b);
    cr_assert(s_take(rate, a, "addr", "x", T0).allowed);
    cr_assert_not(s_take(rate, a, "addr", "x", T0).allowed);
    cr_assert(s_take(rate, a, "addr", "y", T0).allowed, "another value");
    cr_assert(s_take(rate, a, "user", "x", T0).allowed, "another kind, same bytes");
    cr_assert(s_take(rate, b, "addr", "x", T0).allowed, "another budget");

    /* Giving a budget a new spec keeps its id and its counts. */
    gw_rate_spec_t loose = s_spec("100/s");
    cr_assert_eq(gw_rate_budget(rate, "a", &loose), a);
    cr_assert_eq(gw_rate_spec(rate, a)->burst, 100);
    cr_assert_not(s_take(rate, a, "addr", "x", T0).allowed, "x still owes its minute");
    cr_assert(s_take(rate, a, "addr", "x", T0 + 60 * S).allowed);

    cr_assert_eq(gw_rate_budget(rate, "Bad-Name", &spec), MB_EINVAL);
    cr_assert_eq(gw_rate_budget(rate, "", &spec), MB_EINVAL);
    cr_assert_eq(gw_rate_find(rate, "nope"), MB_ENOTFOUND);
    for (int i = 2; i < GW_RATE_BUDGETS_MAX; i++) {
        char name[16];
        snprintf(name, sizeof name, "b%d", i);
        cr_assert_geq(gw_rate_budget(rate, name, &spec), 0);
    }
    cr_assert_eq(gw_rate_budget(rate, "one_too_many", &spec), MB_EFULL);

    gw_rate_result_t res;
    gw_rate_key_t key = {"addr", "x", 1};
    cr_assert_eq(gw_rate_take(rate, 99, &key, 1, T0, &res), MB_EINVAL);
    cr_assert(res.allowed);
    cr_assert_not(res.limited);
    gw_rate_destroy(&rate);
}

/*  A request on several keys is counted on all of them, or on none. */
Test(gw_rate, several_keys_all_or_nothing)
{
    gw_rate_t *rate = gw_rate_new(1024);
    gw_rate_spec_t spec = s_spec("10/min burst 3");
    int signin = gw_rate_budget(rate, "signin", &spec);
    gw_rate_result_t res;
    /* One account tried from three addresses: the email runs out. */
    const char *addrs[] = {"a1", "a2", "a3", "a4"};
    for (int i = 0; i < 3; i++) {
        gw_rate_key_t keys[] = {{"addr", addrs[i], 2}, {"body.email", "bob@x.com", 9}};
        gw_rate_take(rate, signin, keys, 2, T0, &res);
        cr_assert(res.allowed);
        cr_assert_eq(res.remaining, 2 - i, "the lower of the two counts");
    }
    gw_rate_key_t keys[] = {{"addr", "a4", 2}, {"body.email", "bob@x.com", 9}};
    gw_rate_take(rate, signin, keys, 2, T0, &res);
    cr_assert_not(res.allowed, "a fresh address does not help");
    cr_assert_eq(res.retry_after_s, 6);
    /* ... and a4 was not charged for it: it has its whole burst. */
    gw_rate_key_t alone = {"addr", "a4", 2};
    gw_rate_take(rate, signin, &alone, 1, T0, &res);
    cr_assert(res.allowed);
    cr_assert_eq(res.remaining, 2);

    /* A key without a value (no email in the body) is skipped. */
    gw_rate_key_t partial[] = {{"addr", "a5", 2}, {"body.email", NULL, 0}};
    gw_rate_take(rate, signin, partial, 2, T0, &res);
    cr_assert(res.allowed);
    cr_assert(res.limited);
    gw_rate_key_t nothing = {"body.email", NULL, 0};
    gw_rate_take(rate, signin, &nothing, 1, T0, &res);
    cr_assert(res.allowed);
    cr_assert_not(res.limited, "nothing to count on: no headers");
    gw_rate_destroy(&rate);
}

Test(gw_rate, off_counts_nothing)
{
    gw_rate_t *rate = gw_rate_new(1024);
    gw_rate_spec_t off = s_spec("off");
    int b = gw_rate_budget(rate, "default", &off);
    for (int i = 0; i < 1000; i++) {
        gw_rate_result_t r = s_take(rate, b, "addr", "a", T0);
        cr_assert(r.allowed);
        cr_assert_not(r.limited);
    }
    cr_assert_eq(gw_rate_used(rate, b, T0), 0);
    gw_rate_destroy(&rate);
}

/*  A full window evicts the entry nearest to rest; entries at rest are
    reused without counting as evictions. */
Test(gw_rate, table_full_and_eviction)
{
    gw_rate_t *rate = gw_rate_new(1); /* the smallest table: one window */
    gw_rate_spec_t spec = s_spec("1/min burst 1");
    int b = gw_rate_budget(rate, "default", &spec);
    char v[GW_RATE_PROBE + 1][16];
    for (int i = 0; i <= GW_RATE_PROBE; i++)
        snprintf(v[i], sizeof v[i], "k%d", i);
    /* Key i is charged at T0 + i s, so key 0 is the nearest to rest. */
    for (int i = 0; i < GW_RATE_PROBE; i++)
        cr_assert(s_take(rate, b, "addr", v[i], T0 + i * S).allowed);
    cr_assert_eq(gw_rate_used(rate, b, T0 + GW_RATE_PROBE * S), GW_RATE_PROBE);
    cr_assert_eq(gw_rate_evictions(rate, b), 0);
    int64_t now = T0 + GW_RATE_PROBE * S;
    cr_assert(s_take(rate, b, "addr", v[GW_RATE_PROBE], now).allowed, "a newcomer gets in");
    cr_assert_eq(gw_rate_evictions(rate, b), 1);
    /* Key 0 was forgotten: a full burst again (which evicts key 1). */
    cr_assert(s_take(rate, b, "addr", v[0], now).allowed);
    cr_assert_eq(gw_rate_evictions(rate, b), 2);
    for (int i = 2; i <= GW_RATE_PROBE; i++)
        cr_assert_not(s_take(rate, b, "addr", v[i], now).allowed, "key %d is remembered", i);
    cr_assert_not(s_take(rate, b, "addr", v[0], now).allowed);
    cr_assert_eq(gw_rate_used(rate, b, now), GW_RATE_PROBE, "memory stays bounded");

    /* A minute later everyone is at rest: new keys take their slots in
       place, evicting nobody. */
    now += 61 * S;
    cr_assert_eq(gw_rate_used(rate, b, now), 0);
    for (int i = 0; i < GW_RATE_PROBE; i++) {
        char k[16];
        snprintf(k, sizeof k, "new%d", i);
        cr_assert(s_take(rate, b, "addr", k, now).allowed);
    }
    cr_assert_eq(gw_rate_evictions(rate, b), 2);
    gw_rate_destroy(&rate);
}

/*  At half load a real-size table holds every key (a random hash key
    keeps windows from piling up). */
Test(gw_rate, a_big_table_at_half_load)
{
    gw_rate_t *rate = gw_rate_new(GW_RATE_SLOTS);
    gw_rate_spec_t spec = s_spec("1/min burst 1");
    int b = gw_rate_budget(rate, "default", &spec);
    for (uint32_t i = 0; i < GW_RATE_SLOTS / 2; i++) {
        gw_rate_key_t key = {"addr", &i, sizeof i};
        gw_rate_result_t res;
        gw_rate_take(rate, b, &key, 1, T0, &res);
        cr_assert(res.allowed);
    }
    uint64_t evicted = gw_rate_evictions(rate, b);
    cr_assert_leq(evicted, GW_RATE_SLOTS / 1000, "%llu evictions", (unsigned long long)evicted);
    size_t refused = 0;
    for (uint32_t i = 0; i < GW_RATE_SLOTS / 2; i++) {
        gw_rate_key_t key = {"addr", &i, sizeof i};
        gw_rate_result_t res;
        gw_rate_take(rate, b, &key, 1, T0 + S, &res);
        refused += !res.allowed;
    }
    cr_assert_geq(refused, GW_RATE_SLOTS / 2 - 2 * evicted, "every key remembered");
    gw_rate_destroy(&rate);
}

Test(gw_rate, address_keys)
{
    uint8_t out[GW_RATE_ADDR_MAX], out2[GW_RATE_ADDR_MAX];
    struct sockaddr_in in = {.sin_family = AF_INET};
    inet_pton(AF_INET, "203.0.113.7", &in.sin_addr);
    cr_assert_eq(gw_rate_addr_bytes((struct sockaddr *)&in, out), 4);
    cr_assert_eq(memcmp(out, "\xcb\x00\x71\x07", 4), 0);

    /* IPv4-mapped IPv6 is the same IPv4 client. */
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:203.0.113.7", &in6.sin6_addr);
    cr_assert_eq(gw_rate_addr_bytes((struct sockaddr *)&in6, out2), 4);
    cr_assert_eq(memcmp(out, out2, 4), 0);

    /* IPv6: the /64 counts, the interface part does not. */
    inet_pton(AF_INET6, "2001:db8:1:2::1", &in6.sin6_addr);
    cr_assert_eq(gw_rate_addr_bytes((struct sockaddr *)&in6, out), 8);
    inet_pton(AF_INET6, "2001:db8:1:2:ffff:eeee:dddd:cccc", &in6.sin6_addr);
    cr_assert_eq(gw_rate_addr_bytes((struct sockaddr *)&in6, out2), 8);
    cr_assert_eq(memcmp(out, out2, 8), 0);
    inet_pton(AF_INET6, "2001:db8:1:3::1", &in6.sin6_addr);
    gw_rate_addr_bytes((struct sockaddr *)&in6, out2);
    cr_assert_neq(memcmp(out, out2, 8), 0, "another /64");

    struct sockaddr un = {.sa_family = AF_UNIX};
    cr_assert_eq(gw_rate_addr_bytes(&un, out), 0);
    cr_assert_eq(gw_rate_addr_bytes(NULL, out), 0);

    /* X-Forwarded-For: the right-most entry that is an address. */
    cr_assert_eq(gw_rate_forwarded_bytes("203.0.113.7", out), 4);
    cr_assert_eq(memcmp(out, "\xcb\x00\x71\x07", 4), 0);
    cr_assert_eq(gw_rate_forwarded_bytes("10.0.0.1, 198.51.100.2", out), 4);
    cr_assert_eq(memcmp(out, "\xc6\x33\x64\x02", 4), 0, "the last hop, not the client's claim");
    cr_assert_eq(gw_rate_forwarded_bytes("198.51.100.2 ,  unknown ,", out), 4);
    cr_assert_eq(memcmp(out, "\xc6\x33\x64\x02", 4), 0);
    cr_assert_eq(gw_rate_forwarded_bytes("[2001:db8:1:2::1]", out), 8);
    cr_assert_eq(gw_rate_forwarded_bytes("2001:db8:1:2::9", out2), 8);
    cr_assert_eq(memcmp(out, out2, 8), 0);
    cr_assert_eq(gw_rate_forwarded_bytes("unknown", out), 0);
    cr_assert_eq(gw_rate_forwarded_bytes("", out), 0);
    cr_assert_eq(gw_rate_forwarded_bytes(",,,", out), 0);
    cr_assert_eq(gw_rate_forwarded_bytes(NULL, out), 0);
    cr_assert_eq(gw_rate_forwarded_bytes("999.1.1.1", out), 0);
}

Test(gw_rate, body_keys)
{
    char out[GW_RATE_VALUE_MAX + 1];
    const char *b = "{\"email\":\"  Alice@Example.COM \\t\",\"password\":\"x\",\"n\":3}";
    cr_assert_eq(gw_rate_body_field(b, strlen(b), "email", out, sizeof out), 17);
    cr_assert_str_eq(out, "alice@example.com", "trimmed, lower-cased");
    cr_assert_eq(gw_rate_body_field(b, strlen(b), "n", out, sizeof out), 0, "not a string");
    cr_assert_eq(gw_rate_body_field(b, strlen(b), "missing", out, sizeof out), 0);
    const char *u = "{\"email\":\"ÅSA@x.se\"}";
    cr_assert_gt(gw_rate_body_field(u, strlen(u), "email", out, sizeof out), 0);
    cr_assert_str_eq(out, "Åsa@x.se", "ASCII letters only, as the users actor does");
    const char *blank = "{\"email\":\"   \"}";
    cr_assert_eq(gw_rate_body_field(blank, strlen(blank), "email", out, sizeof out), 0);
    const char *bad[] = {"{\"email\":", "[\"email\"]", "\"email\"", "",
                         "{\"email\":\"a\",\"email\":\"b\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(gw_rate_body_field(bad[i], strlen(bad[i]), "email", out, sizeof out), 0, "%s",
                     bad[i]);
    char small[4];
    cr_assert_eq(gw_rate_body_field(b, strlen(b), "email", small, sizeof small), 3, "cut");
    cr_assert_str_eq(small, "ali");
}
