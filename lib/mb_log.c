/*  mb_log — one JSON object per line on stderr. */
#include "mb_log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define S_MSG_MAX 4096   /* longest message kept; longer ones are cut */
#define S_PROCESS_MAX 64 /* longest process name kept */
/* Worst case every message byte becomes a 6-byte \u00XX escape. */
#define S_LINE_MAX (256 + 6 * S_PROCESS_MAX + 6 * S_MSG_MAX)

static char s_process[S_PROCESS_MAX];
static mb_log_level_t s_level = MB_LOG_INFO;

static const char *s_level_names[] = {"debug", "info", "warn", "error"};

void mb_log_init(const char *process)
{
    snprintf(s_process, sizeof s_process, "%s", process ? process : "");
    s_level = MB_LOG_INFO;
    const char *text = getenv("MUSICBUS_LOG_LEVEL");
    if (text && *text) {
        int found = 0;
        for (int level = MB_LOG_DEBUG; level <= MB_LOG_ERROR; level++) {
            if (strcasecmp(text, s_level_names[level]) == 0) {
                s_level = (mb_log_level_t)level;
                found = 1;
            }
        }
        if (!found)
            mb_warn(0, "MUSICBUS_LOG_LEVEL=%s is not debug|info|warn|error; using info", text);
    }
}

int mb_log_enabled(mb_log_level_t level)
{
    return level >= s_level && level <= MB_LOG_ERROR;
}

/*  Length of the valid UTF-8 sequence at s (at most `left` bytes), or 0
    when it is not one. Overlong forms, surrogates and code points past
    U+10FFFF are invalid (RFC 3629). */
static size_t s_utf8_len(const unsigned char *s, size_t left)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the 2nd byte */
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (left < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

/*  Appends `len` bytes of `src` to out[*pos], escaped as a JSON string
    body. The caller sized `out` for the worst case. */
static void s_escape(char *out, size_t *pos, const char *src, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)src;
    size_t p = *pos;
    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            out[p++] = '\\';
            out[p++] = (char)c;
            i++;
        } else if (c >= 0x20 && c < 0x7F) {
            out[p++] = (char)c;
            i++;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            out[p++] = '\\';
            out[p++] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            i++;
        } else if (c < 0x80) {
            /* Other control characters and DEL. */
            memcpy(out + p, "\\u00", 4);
            p += 4;
            out[p++] = hex[c >> 4];
            out[p++] = hex[c & 0xF];
            i++;
        } else {
            size_t n = s_utf8_len(s + i, len - i);
            if (n) {
                memcpy(out + p, s + i, n);
                p += n;
                i += n;
            } else {
                /* One replacement per bad byte: the line stays valid UTF-8. */
                memcpy(out + p, "\\ufffd", 6);
                p += 6;
                i++;
            }
        }
    }
    *pos = p;
}

static void s_append(char *out, size_t *pos, const char *s)
{
    size_t len = strlen(s);
    memcpy(out + *pos, s, len);
    *pos += len;
}

void mb_log(mb_log_level_t level, uint64_t rid, const char *fmt, ...)
{
    if (!mb_log_enabled(level))
        return;
    int saved_errno = errno; /* callers often log, then look at errno */

    /* Everything lives on the stack: this runs when the heap is exhausted. */
    char msg[S_MSG_MAX];
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, args);
    va_end(args);
    size_t msg_len = n < 0 ? 0 : (size_t)n >= sizeof msg ? sizeof msg - 1 : (size_t)n;

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);

    const char *process = s_process[0] ? s_process : program_invocation_short_name;
    char line[S_LINE_MAX];
    size_t pos = 0;
    char head[128];
    snprintf(head, sizeof head, "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\",\"process\":\"", stamp,
             now.tv_nsec / 1000000, s_level_names[level]);
    s_append(line, &pos, head);
    s_escape(line, &pos, process, strnlen(process, S_PROCESS_MAX - 1));
    snprintf(head, sizeof head, "\",\"pid\":%ld", (long)getpid());
    s_append(line, &pos, head);
    if (rid) {
        snprintf(head, sizeof head, ",\"rid\":\"%016" PRIx64 "\"", rid);
        s_append(line, &pos, head);
    }
    s_append(line, &pos, ",\"msg\":\"");
    s_escape(line, &pos, msg, msg_len);
    s_append(line, &pos, "\"}\n");

    /* One write(2) keeps lines whole; loop only for the rare short write. */
    size_t done = 0;
    while (done < pos) {
        ssize_t w = write(STDERR_FILENO, line + done, pos - done);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        done += (size_t)w;
    }
    errno = saved_errno;
}
