/*  mb_config — settings shared by every process.

    Each setting comes from a command-line flag, else an environment
    variable, else a default that works on one machine. Each executable
    parses its own flags (getopt_long) and calls mb_config_env() for the
    fallback. */
#ifndef MB_CONFIG_H
#define MB_CONFIG_H

#include <stddef.h>

#define MB_ENV_BUS "MUSICBUS_BUS"             /* broker endpoint */
#define MB_DEFAULT_BUS "tcp://127.0.0.1:5555"
#define MB_ENV_DATA "MUSICBUS_DATA"           /* data folder */
#define MB_DEFAULT_DATA "./var"
#define MB_ENV_HTTP_ADDR "MUSICBUS_HTTP_ADDR" /* gateway listen address */
#define MB_DEFAULT_HTTP_ADDR "127.0.0.1:8080"
#define MB_ENV_HEARTBEAT_MS "MUSICBUS_HEARTBEAT_MS" /* MDP heartbeat interval */
#define MB_DEFAULT_HEARTBEAT_MS 1000
#define MB_ENV_LIVENESS "MUSICBUS_LIVENESS"   /* heartbeats missed before a peer is dead */
#define MB_DEFAULT_LIVENESS 3
#define MB_ENV_TIMEOUT_MS "MUSICBUS_TIMEOUT_MS" /* default request deadline */
#define MB_DEFAULT_TIMEOUT_MS 5000
#define MB_ENV_IO_SCHED "MUSICBUS_IO_SCHED" /* ZeroMQ I/O threads: "batch" or "normal" */
#define MB_DEFAULT_IO_SCHED "batch"

/*  Returns the value of environment variable `name` when set and not
    empty, else `fallback`. Borrowed; never NULL unless fallback is. */
const char *mb_config_env(const char *name, const char *fallback);

/*  Parses `text` as a decimal integer in [min, max] into *out.
    Returns 0, or MB_EINVAL when it is not a whole number in range. */
int mb_config_parse_long(const char *text, long min, long max, long *out);

/*  Reads integer environment variable `name` in [min, max]. Returns
    `fallback` when unset; logs a warning and returns `fallback` when
    set to something else than a number in range. */
long mb_config_env_long(const char *name, long fallback, long min, long max);

/*  Reads a secret into buf[size]: `value` when not NULL (an environment
    variable's text), else the file `file`, warning when group or others
    may read it and dropping the newline an editor or echo leaves at its
    end. *len is its length, at most `size`: a secret that does not fit
    reads as exactly `size` bytes, so a caller with a buffer one byte
    larger than its limit sees it is too long. `what` names the secret in
    messages ("JWT secret"). Returns 0, or MB_EIO (logged) when the file
    cannot be read. The caller wipes buf. */
int mb_config_secret(const char *what, const char *value, const char *file, unsigned char *buf,
                     size_t size, size_t *len);

#endif
