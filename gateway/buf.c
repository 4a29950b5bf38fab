/*  buf — a growing byte buffer the gateway reuses across requests. */
#include "buf.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_alloc.h"

#define S_MIN_CAP 256

void gw_buf_free(gw_buf_t *buf)
{
    free(buf->data);
    buf->data = NULL;
    buf->len = buf->cap = 0;
}

void gw_buf_reset(gw_buf_t *buf)
{
    buf->len = 0;
    if (buf->cap)
        buf->data[0] = '\0';
}

void gw_buf_reserve(gw_buf_t *buf, size_t more)
{
    size_t need = buf->len + more + 1;
    if (need <= buf->cap)
        return;
    size_t cap = buf->cap ? buf->cap : S_MIN_CAP;
    while (cap < need)
        cap *= 2;
    buf->data = mb_realloc(buf->data, cap);
    buf->cap = cap;
}

void gw_buf_append(gw_buf_t *buf, const void *data, size_t len)
{
    gw_buf_reserve(buf, len);
    if (len)
        memcpy(buf->data + buf->len, data, len);
    buf->len += len;
    buf->data[buf->len] = '\0';
}

void gw_buf_puts(gw_buf_t *buf, const char *s)
{
    gw_buf_append(buf, s, strlen(s));
}

void gw_buf_vprintf(gw_buf_t *buf, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    gw_buf_reserve(buf, 64);
    int n = vsnprintf(buf->data + buf->len, buf->cap - buf->len, fmt, ap);
    if (n < 0) {
        va_end(ap2);
        return;
    }
    if ((size_t)n >= buf->cap - buf->len) {
        gw_buf_reserve(buf, (size_t)n);
        vsnprintf(buf->data + buf->len, buf->cap - buf->len, fmt, ap2);
    }
    va_end(ap2);
    buf->len += (size_t)n;
}

/*  Writes the digits of `v` to the end of tmp; returns where they start. */
static size_t s_digits(char tmp[GW_INT_CHARS], uint64_t v)
{
    size_t n = GW_INT_CHARS;
    do {
        tmp[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return n;
}

size_t gw_fmt_u64(char out[GW_INT_CHARS], uint64_t v)
{
    char tmp[GW_INT_CHARS];
    size_t start = s_digits(tmp, v), len = GW_INT_CHARS - start;
    memcpy(out, tmp + start, len);
    out[len] = '\0';
    return len;
}

size_t gw_fmt_i64(char out[GW_INT_CHARS], int64_t v)
{
    char tmp[GW_INT_CHARS];
    /* INT64_MIN included: 19 digits and the sign fit. */
    size_t start = s_digits(tmp, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v);
    if (v < 0)
        tmp[--start] = '-';
    size_t len = GW_INT_CHARS - start;
    memcpy(out, tmp + start, len);
    out[len] = '\0';
    return len;
}

void gw_buf_put_u64(gw_buf_t *buf, uint64_t v)
{
    char tmp[GW_INT_CHARS];
    gw_buf_append(buf, tmp, gw_fmt_u64(tmp, v));
}

void gw_buf_put_i64(gw_buf_t *buf, int64_t v)
{
    char tmp[GW_INT_CHARS];
    gw_buf_append(buf, tmp, gw_fmt_i64(tmp, v));
}

void gw_buf_printf(gw_buf_t *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gw_buf_vprintf(buf, fmt, ap);
    va_end(ap);
}

/*  Non-zero for the bytes a JSON string cannot carry raw. */
static const unsigned char s_needs_escape[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x00 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x10 */
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20: '"' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 0x50: '\\' */
};

/*  True when a byte of `w` is below 0x20, '"' or '\\' (a byte may be
    flagged falsely only next to a true one, so "none" is exact). */
static inline bool s_word_needs_escape(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t quote = w ^ (ones * '"'), backslash = w ^ (ones * '\\');
    uint64_t below_space = (w - ones * 0x20) & ~w;
    uint64_t is_quote = (quote - ones) & ~quote, is_backslash = (backslash - ones) & ~backslash;
    return ((below_space | is_quote | is_backslash) & highs) != 0;
}

void gw_buf_json_string(gw_buf_t *buf, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    /* Worst case every byte becomes \u00XX. Reserving it up front keeps
       the loop free of bounds checks; the memory is reused anyway. */
    gw_buf_reserve(buf, len * 6 + 2);
    char *out = buf->data + buf->len;
    *out++ = '"';
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        /* Most text needs no escape: 8 bytes at a time while none is a
           control character, '"' or '\\'. */
        while (len - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (s_word_needs_escape(w))
                break;
            i += 8;
        }
        if (i >= len)
            break;
        unsigned char c = (unsigned char)s[i];
        if (!s_needs_escape[c])
            continue;
        memcpy(out, s + run, i - run);
        out += i - run;
        run = i + 1;
        *out++ = '\\';
        switch (c) {
        case '"':
            *out++ = '"';
            break;
        case '\\':
            *out++ = '\\';
            break;
        case '\n':
            *out++ = 'n';
            break;
        case '\r':
            *out++ = 'r';
            break;
        case '\t':
            *out++ = 't';
            break;
        case '\b':
            *out++ = 'b';
            break;
        case '\f':
            *out++ = 'f';
            break;
        default:
            *out++ = 'u';
            *out++ = '0';
            *out++ = '0';
            *out++ = hex[c >> 4];
            *out++ = hex[c & 15];
        }
    }
    if (len > run) /* s may be NULL when len is 0 (msgpack's empty string) */
        memcpy(out, s + run, len - run);
    out += len - run;
    *out++ = '"';
    *out = '\0';
    buf->len = (size_t)(out - buf->data);
}

int gw_utf8_valid(const char *s, size_t len)
{
    if (len == 0)
        return 1; /* s may be NULL then */
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        /* ASCII runs dominate real data: skip 8 bytes at a time. */
        while (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            if (w & 0x8080808080808080ull)
                break;
            p += 8;
        }
        if (p >= end)
            break;
        unsigned char c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 2;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 3;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 4;
            cp = c & 0x07;
        } else {
            return 0; /* continuation byte first, 0xc0/0xc1 (overlong) or > 0xf4 */
        }
        if ((size_t)(end - p) < n)
            return 0;
        for (size_t i = 1; i < n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        p += n;
    }
    return 1;
}

char *gw_buf_steal(gw_buf_t *buf, size_t *len)
{
    char *data = buf->data;
    if (len)
        *len = buf->len;
    buf->data = NULL;
    buf->len = buf->cap = 0;
    return data;
}
