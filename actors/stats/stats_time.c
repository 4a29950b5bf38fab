/*  stats_time — days since the epoch and RFC 3339 (see stats_time.h).

    The civil <-> day conversions are Howard Hinnant's well-known
    algorithms (eras of 400 years, March-based years so the leap day comes
    last), written out here from their published description. */
#include "stats_time.h"

#include <stdio.h>
#include <time.h>

int64_t stats_day_of(int64_t ms)
{
    int64_t day = ms / STATS_MS_PER_DAY;
    return (ms % STATS_MS_PER_DAY < 0) ? day - 1 : day;
}

int64_t stats_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);                       /* [0, 399] */
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* [0, 365] */
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;           /* [0, 146096] */
    return era * 146097 + (int64_t)doe - 719468;
}

void stats_civil_from_days(int64_t day, int64_t *y, unsigned *m, unsigned *d)
{
    day += 719468;
    int64_t era = (day >= 0 ? day : day - 146096) / 146097;
    unsigned doe = (unsigned)(day - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static bool s_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned s_month_days(int64_t y, unsigned m)
{
    static const unsigned days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && s_leap(y) ? 29 : days[m - 1];
}

/*  Reads exactly `n` digits at s[*i] into *out. */
static bool s_digits(const char *s, size_t len, size_t *i, unsigned n, unsigned *out)
{
    if (*i + n > len)
        return false;
    unsigned v = 0;
    for (unsigned k = 0; k < n; k++) {
        char c = s[*i + k];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (unsigned)(c - '0');
    }
    *i += n;
    *out = v;
    return true;
}

static bool s_char(const char *s, size_t len, size_t *i, char c)
{
    if (*i >= len || s[*i] != c)
        return false;
    (*i)++;
    return true;
}

/*  Reads YYYY-MM-DD at s[*i], a real date of years 1970..9999. */
static bool s_date(const char *s, size_t len, size_t *i, int64_t *day)
{
    unsigned y, m, d;
    if (!s_digits(s, len, i, 4, &y) || !s_char(s, len, i, '-') || !s_digits(s, len, i, 2, &m) ||
        !s_char(s, len, i, '-') || !s_digits(s, len, i, 2, &d))
        return false;
    if (y < 1970 || m < 1 || m > 12 || d < 1 || d > s_month_days(y, m))
        return false;
    *day = stats_days_from_civil(y, m, d);
    return true;
}

bool stats_date_parse(const char *s, size_t len, int64_t *day)
{
    size_t i = 0;
    return s && s_date(s, len, &i, day) && i == len;
}

bool stats_time_parse(const char *s, size_t len, int64_t *ms)
{
    size_t i = 0;
    int64_t day;
    unsigned hh, mm, ss, frac = 0;
    if (!s || !s_date(s, len, &i, &day) || i >= len || (s[i] != 'T' && s[i] != 't' && s[i] != ' '))
        return false;
    i++;
    if (!s_digits(s, len, &i, 2, &hh) || !s_char(s, len, &i, ':') ||
        !s_digits(s, len, &i, 2, &mm) || !s_char(s, len, &i, ':') ||
        !s_digits(s, len, &i, 2, &ss) || hh > 23 || mm > 59 || ss > 59)
        return false;
    if (i < len && s[i] == '.') {
        i++;
        unsigned n = 0;
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++, n++)
            if (n < 3)
                frac = frac * 10 + (unsigned)(s[i] - '0');
        if (n == 0)
            return false;
        for (; n < 3; n++)
            frac *= 10;
    }
    int64_t offset_min = 0;
    if (i < len && (s[i] == 'Z' || s[i] == 'z'))
        i++;
    else if (i < len && (s[i] == '+' || s[i] == '-')) {
        int sign = s[i++] == '-' ? -1 : 1;
        unsigned oh, om;
        if (!s_digits(s, len, &i, 2, &oh) || !s_char(s, len, &i, ':') ||
            !s_digits(s, len, &i, 2, &om) || oh > 23 || om > 59)
            return false;
        offset_min = sign * (int64_t)(oh * 60 + om);
    } else
        return false;
    if (i != len)
        return false;
    int64_t t = day * STATS_MS_PER_DAY + ((int64_t)hh * 3600 + mm * 60 + ss) * 1000 + frac;
    t -= offset_min * 60000;
    if (t < 0)
        return false; /* 1970-01-01T00:30+01:00 is before the epoch */
    *ms = t;
    return true;
}

void stats_date_format(int64_t day, char out[STATS_DATE_LEN + 1])
{
    int64_t y;
    unsigned m, d;
    stats_civil_from_days(day, &y, &m, &d);
    if (y < 0)
        y = 0, m = 1, d = 1;
    else if (y > 9999)
        y = 9999, m = 12, d = 31;
    /* m and d are 1..12 and 1..31; "% 100" lets the compiler see they fit. */
    snprintf(out, STATS_DATE_LEN + 1, "%04d-%02u-%02u", (int)y, m % 100u, d % 100u);
}

void stats_time_format(int64_t ms, char out[STATS_TIME_MAX + 1])
{
    int64_t day = stats_day_of(ms);
    int64_t in_day = ms - day * STATS_MS_PER_DAY;
    char date[STATS_DATE_LEN + 1];
    stats_date_format(day, date);
    unsigned s = (unsigned)(in_day / 1000);
    snprintf(out, STATS_TIME_MAX + 1, "%sT%02u:%02u:%02u.%03uZ", date, s / 3600, s / 60 % 60,
             s % 60, (unsigned)(in_day % 1000));
}

int64_t stats_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
