/*  bench_util — what the C benchmarks share: clocks, argument lists,
    medians, child processes (spawned with their stderr in a log file,
    waited for through ready files, stopped with SIGTERM then SIGKILL) and
    /proc readings. Not part of libmusicbus: only bench/ links it. Errors
    are printed with the program's name. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*  Nanoseconds on a monotonic clock. */
int64_t bench_now_ns(void);

/*  Sleeps `ms` milliseconds, sooner when a stop was requested
    (mb_signal). */
void bench_sleep_ms(int ms);

/*  Prints "<program>: " and fmt (one %s: arg) and exits 1. */
void bench_die(const char *fmt, const char *arg) __attribute__((noreturn));

/*  Parses "1,4,64" into out[] (at most max values, each in lo..hi).
    Returns how many, or -1 when malformed. */
int bench_parse_list(const char *text, int *out, int max, int lo, int hi);

/*  Median of v[0..n) (sorts v in place); 0 when n < 1. */
double bench_median(double *v, int n);

/*  CPU time (user + system, every thread) of `pid` in clock ticks, or -1. */
long bench_cpu_ticks(pid_t pid);

/*  A "Name: N kB" line of /proc/<pid>/status (VmHWM, RssAnon) in KiB, or -1. */
long bench_status_kib(pid_t pid, const char *name);

/*  rm -rf `dir`, without a shell. */
void bench_remove_tree(const char *dir);

/*  Starts argv[0] (a path) with its stderr appended to `log` (children's
    JSON log lines would drown the tables otherwise). Returns the pid or
    -1 (reason printed). */
pid_t bench_spawn(char *const argv[], const char *log);

/*  SIGTERM, then SIGKILL when the child is still there after grace_ms;
    always reaps it. No-op for pid <= 0. */
void bench_stop_child(pid_t pid, int grace_ms);

/*  Waits until `path` holds a line (the ready-file convention: written
    to path.tmp, then renamed), or `pid` dies, or timeout_ms pass, or a
    stop is requested. Returns 0 with the line in out[], -1 otherwise. */
int bench_wait_ready(const char *path, pid_t pid, int timeout_ms, char *out, size_t out_size);

/*  Copies the last 8 lines of `log` to stderr, to explain a failure. */
void bench_show_log(const char *log);

#endif
