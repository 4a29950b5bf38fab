/*  The stats actor's small modules: calendar arithmetic and RFC 3339
    (stats_time), counting by key (stats_tally), the match cache
    (stats_cache), ISRCs and play keys. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "stats_cache.h"
#include "stats_listen.h"
#include "stats_play.h"
#include "stats_tally.h"
#include "stats_time.h"

Test(stats_time, days_and_dates_round_trip)
{
    cr_assert_eq(stats_days_from_civil(1970, 1, 1), 0);
    cr_assert_eq(stats_days_from_civil(2000, 3, 1), 11017);
    cr_assert_eq(stats_days_from_civil(2026, 11, 28), 20785);
    for (int64_t d = -1000; d < 200000; d += 7) {
        int64_t y;
        unsigned m, dd;
        stats_civil_from_days(d, &y, &m, &dd);
        cr_assert_eq(stats_days_from_civil(y, m, dd), d);
    }
    int64_t day;
    cr_assert(stats_date_parse("2024-02-29", 10, &day));
    char out[STATS_DATE_LEN + 1];
    stats_date_format(day, out);
    cr_assert_str_eq(out, "2024-02-29");
    cr_assert_not(stats_date_parse("2023-02-29", 10, &day));
    cr_assert_not(stats_date_parse("2023-2-28", 9, &day));
    cr_assert_not(stats_date_parse("1969-12-31", 10, &day));
    cr_assert_eq(stats_day_of(-1), -1, "floor, not truncation");
    cr_assert_eq(stats_day_of(STATS_MS_PER_DAY), 1);
}

Test(stats_time, rfc3339_parses_offsets_and_fractions)
{
    static const struct {
        const char *s;
        long long ms; /* -1: refused */
    } cases[] = {
        {"2026-11-28T02:10:00Z", 1795831800000LL},
        {"2026-11-28T02:10:00.123Z", 1795831800123LL},
        {"2026-11-28T02:10:00.1239999Z", 1795831800123LL},
        {"2026-11-28t03:10:00.5+01:00", 1795831800500LL},
        {"2026-11-27 21:40:00-04:30", 1795831800000LL},
        {"2026-11-28T02:10:60Z", -1},
        {"2026-11-28T02:10:00", -1},
        {"2026-11-28T02:10:00.Z", -1},
        {"2026-11-28T02:10Z", -1},
        {"2026-11-28T02:10:00+0100", -1},
        {"2026-11-28T02:10:00Zjunk", -1},
        {"1970-01-01T00:30:00+01:00", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int64_t ms = -1;
        bool ok = stats_time_parse(cases[i].s, strlen(cases[i].s), &ms);
        cr_assert_eq(ok, cases[i].ms >= 0, "%s", cases[i].s);
        if (ok)
            cr_assert_eq(ms, cases[i].ms, "%s: %lld", cases[i].s, (long long)ms);
    }
    char out[STATS_TIME_MAX + 1];
    stats_time_format(1795831800123LL, out);
    cr_assert_str_eq(out, "2026-11-28T02:10:00.123Z");
}

Test(stats_tally, counts_by_key_and_sorts_most_first)
{
    stats_tally_t *t = stats_tally_new();
    char key[32];
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(key, sizeof key, "k%d", i % 1000);
        stats_tally_add(t, key, (size_t)n, (uint64_t)(i % 1000 == 7 ? 10 : 1));
    }
    cr_assert_eq(stats_tally_size(t), 1000);
    cr_assert_eq(stats_tally_get(t, "k7", 2), 50);
    cr_assert_eq(stats_tally_get(t, "k", 1), 0);
    stats_tally_sort(t);
    const void *k;
    size_t len;
    uint64_t count;
    stats_tally_entry(t, 0, &k, &len, &count);
    cr_assert_eq(count, 50);
    cr_assert_eq(len, 2);
    cr_assert_eq(memcmp(k, "k7", 2), 0);
    stats_tally_entry(t, 1, &k, &len, &count);
    cr_assert_eq(memcmp(k, "k0", 2), 0, "equal counts by key");
    stats_tally_entry(t, 2, &k, &len, &count);
    cr_assert_eq(memcmp(k, "k1", 2), 0);
    stats_tally_destroy(&t);
    stats_tally_destroy(&t);
}

Test(stats_cache, holds_at_most_its_size_and_keeps_what_is_used)
{
    stats_cache_t *c = stats_cache_new(100);
    stats_match_t m = {.status = STATS_MATCH_FOUND, .duration_ms = 1};
    char key[32];
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(key, sizeof key, "song %d", i);
        snprintf(m.id, sizeof m.id, "t%d", i);
        stats_cache_put(c, key, (size_t)n, &m);
        /* "song 0" is asked for all along: it stays. */
        stats_match_t got;
        cr_assert(stats_cache_get(c, "song 0", 6, &got));
        cr_assert_str_eq(got.id, "t0");
        cr_assert_leq(stats_cache_size(c), 100);
    }
    stats_match_t got;
    cr_assert(stats_cache_get(c, "song 999", 8, &got));
    cr_assert_str_eq(got.id, "t999");
    cr_assert_not(stats_cache_get(c, "song 1", 6, &got), "long evicted");
    stats_cache_destroy(&c);
    stats_cache_destroy(&c);
}

Test(stats_listen, isrcs_are_normalised)
{
    char out[STATS_ISRC_LEN + 1];
    cr_assert(stats_isrc_normalise("us-rc1-76-07839", 15, out));
    cr_assert_str_eq(out, "USRC17607839");
    cr_assert(stats_isrc_normalise("GBARL8700051", 12, out));
    cr_assert_not(stats_isrc_normalise("GBARL870005", 11, out));
    cr_assert_not(stats_isrc_normalise("1BARL8700051", 12, out));
    cr_assert_not(stats_isrc_normalise("GBARL87A0051", 12, out));
    cr_assert_not(stats_isrc_normalise("GBARL8700051X", 13, out));
}

Test(stats_play, keys_have_the_shape_the_consumer_checks)
{
    char key[STATS_KEY_MAX + 1];
    stats_str_t user = {"u1", 2}, track = {"t9", 2};
    cr_assert_eq(stats_play_import_key(user, 1700000000, track, key), 18);
    cr_assert_str_eq(key, "i:u1:1700000000:t9");
    stats_play_t p = {.user = user, .track = track, .source = STATS_SOURCE_IMPORT};
    cr_assert_null(stats_play_check_key(key, strlen(key), &p));
    cr_assert_not_null(stats_play_check_key("i:u1:1:t8", 9, &p));
    cr_assert_eq(stats_play_client_key(user, (stats_str_t){"abc", 3}, key), 8);
    p.source = STATS_SOURCE_CLIENT;
    cr_assert_null(stats_play_check_key(key, strlen(key), &p));
    cr_assert_not_null(stats_play_check_key("c:u1:", 5, &p), "no client id");
    cr_assert_not_null(stats_play_check_key("c:u10:x", 7, &p));
    cr_assert(stats_id_valid("Ab3", 3));
    cr_assert_not(stats_id_valid("a:b", 3));
    cr_assert_not(stats_id_valid("a\nb", 3));
    cr_assert_not(stats_id_valid("", 0));
}
