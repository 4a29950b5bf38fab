/*  stats_time — the calendar arithmetic stats needs: days since the Unix
    epoch (UTC), RFC 3339 timestamps and YYYY-MM-DD dates, without the C
    library's time zone state (timegm and gmtime_r are not needed, and the
    results do not depend on TZ).

    Times are int64_t milliseconds since 1970-01-01T00:00:00Z; a "day" is
    the number of whole UTC days since that instant (day 0 is 1970-01-01),
    the unit every per-day count in stats is kept in. */
#ifndef STATS_TIME_H
#define STATS_TIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STATS_MS_PER_DAY 86400000LL
#define STATS_TIME_MAX 47 /* "2026-11-28T02:10:00.123Z" (24) with room the compiler can prove */
#define STATS_DATE_LEN 10 /* "2026-11-28" */

/*  Returns the day a time falls on (floor division, so times before 1970
    give negative days). */
int64_t stats_day_of(int64_t ms);

/*  Returns the day of civil date y-m-d (proleptic Gregorian). No range
    check: call with a valid date. */
int64_t stats_days_from_civil(int64_t y, unsigned m, unsigned d);

/*  Sets *y, *m, *d to the civil date of `day`. */
void stats_civil_from_days(int64_t day, int64_t *y, unsigned *m, unsigned *d);

/*  Parses an RFC 3339 date-time ("2026-11-28T02:10:00Z",
    "2026-11-28T03:10:00.5+01:00"; 't', 'z' and ' ' accepted as RFC 3339
    allows) of years 1970..9999 into *ms, fractions past milliseconds
    truncated. Returns true, or false when `s` (len bytes) is not such a
    timestamp or names an impossible date or time (leap seconds, :60, are
    refused). */
bool stats_time_parse(const char *s, size_t len, int64_t *ms);

/*  Writes `ms` as "YYYY-MM-DDTHH:MM:SS.mmmZ" into out (years 0..9999;
    others are clamped). */
void stats_time_format(int64_t ms, char out[STATS_TIME_MAX + 1]);

/*  Parses "YYYY-MM-DD" (a real date, years 1970..9999) into *day. Returns
    true, or false when it is anything else. */
bool stats_date_parse(const char *s, size_t len, int64_t *day);

/*  Writes `day` as "YYYY-MM-DD" into out. */
void stats_date_format(int64_t day, char out[STATS_DATE_LEN + 1]);

/*  Returns the current time (CLOCK_REALTIME) in ms since the epoch. */
int64_t stats_now_ms(void);

#endif
