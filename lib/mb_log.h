/*  mb_log — structured logs: one JSON object per line on stderr.

    {"time":"2026-11-28T02:10:00.123Z","level":"info","process":"broker",
     "pid":4242,"rid":"00000000000000ab","msg":"..."}

    "rid" (the request id, 16 hex digits) is left out when it is 0. The
    message is escaped, so any bytes are safe to log. Lines at a level
    below MUSICBUS_LOG_LEVEL (debug|info|warn|error, default info) are
    dropped before formatting. */
#ifndef MB_LOG_H
#define MB_LOG_H

#include <stdint.h>

typedef enum { MB_LOG_DEBUG, MB_LOG_INFO, MB_LOG_WARN, MB_LOG_ERROR } mb_log_level_t;

/*  Sets the process name written in every line ("broker", "catalog", ...)
    and reads MUSICBUS_LOG_LEVEL. Call once at start; `process` is copied. */
void mb_log_init(const char *process);

/*  Writes one line with one write(2), so lines of concurrent processes
    sharing stderr never interleave. */
void mb_log(mb_log_level_t level, uint64_t rid, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*  True when lines at `level` are written. */
int mb_log_enabled(mb_log_level_t level);

#define mb_debug(rid, ...) mb_log(MB_LOG_DEBUG, (rid), __VA_ARGS__)
#define mb_info(rid, ...) mb_log(MB_LOG_INFO, (rid), __VA_ARGS__)
#define mb_warn(rid, ...) mb_log(MB_LOG_WARN, (rid), __VA_ARGS__)
#define mb_error(rid, ...) mb_log(MB_LOG_ERROR, (rid), __VA_ARGS__)

#endif
