/*  buf — a growing byte buffer the gateway reuses across requests.

    Replies, problem documents and log lines are written into one of these;
    gw_buf_reset() keeps the memory, so a warm gateway formats responses
    without allocating. Out of memory aborts (mb_alloc). */
#ifndef GW_BUF_H
#define GW_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *data; /* NUL-terminated after every append (when cap > 0) */
    size_t len; /* bytes written, not counting the NUL */
    size_t cap; /* bytes allocated */
} gw_buf_t;

#define GW_BUF_INIT                                                                                \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

/*  Frees the memory and zeroes *buf. Safe to call twice. */
void gw_buf_free(gw_buf_t *buf);

/*  Empties the buffer, keeping its memory. */
void gw_buf_reset(gw_buf_t *buf);

/*  Makes room for `more` bytes past len (plus the NUL). */
void gw_buf_reserve(gw_buf_t *buf, size_t more);

void gw_buf_append(gw_buf_t *buf, const void *data, size_t len);
void gw_buf_puts(gw_buf_t *buf, const char *s);
/*  Inline: JSON output puts a byte between every two values. */
static inline void gw_buf_putc(gw_buf_t *buf, char c)
{
    if (buf->len + 2 > buf->cap)
        gw_buf_reserve(buf, 1);
    buf->data[buf->len++] = c;
    buf->data[buf->len] = '\0';
}
void gw_buf_printf(gw_buf_t *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void gw_buf_vprintf(gw_buf_t *buf, const char *fmt, va_list ap);

/*  Append an integer in decimal, without printf (replies carry many:
    durations, counts, times). */
void gw_buf_put_u64(gw_buf_t *buf, uint64_t v);
void gw_buf_put_i64(gw_buf_t *buf, int64_t v);

/*  Write an integer in decimal and a NUL to `out`, without printf (every
    response carries some in its headers); return the digits' length. */
#define GW_INT_CHARS 21 /* "-9223372036854775808" or UINT64_MAX's 20 digits, and the NUL */
size_t gw_fmt_u64(char out[GW_INT_CHARS], uint64_t v);
size_t gw_fmt_i64(char out[GW_INT_CHARS], int64_t v);

/*  Appends `len` bytes of `s` as a JSON string, quotes included, escaped
    per RFC 8259 (", \, and control characters; other bytes are copied).
    The caller guarantees `s` is valid UTF-8 (see gw_utf8_valid()). */
void gw_buf_json_string(gw_buf_t *buf, const char *s, size_t len);

/*  True when `len` bytes at `s` are well-formed UTF-8 (no overlong forms,
    no surrogates, nothing above U+10FFFF). */
int gw_utf8_valid(const char *s, size_t len);

/*  Hands the memory over to the caller (who free()s it) and zeroes *buf.
    Returns NULL for a buffer never written to. */
char *gw_buf_steal(gw_buf_t *buf, size_t *len);

#endif
