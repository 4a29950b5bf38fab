/*  bench_util — see bench_util.h. */
#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mb_signal.h"

extern char **environ;

int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void bench_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR && !mb_signal_stop_requested())
        ;
}

void bench_die(const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", program_invocation_short_name);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(1);
}

int bench_parse_list(const char *text, int *out, int max, int lo, int hi)
{
    int n = 0;
    const char *p = text;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < lo || v > hi || n == max)
            return -1;
        out[n++] = (int)v;
        if (*end == ',')
            end++;
        else if (*end)
            return -1;
        p = end;
    }
    return n;
}

double bench_median(double *v, int n)
{
    if (n < 1)
        return 0;
    for (int i = 1; i < n; i++) /* insertion sort: n is a handful */
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

long bench_cpu_ticks(pid_t pid)
{
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    bool ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    /* The command name may hold spaces: fields are counted after ") ". */
    char *p = ok ? strrchr(line, ')') : NULL;
    unsigned long utime, stime;
    if (!p ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1;
    return (long)(utime + stime);
}

long bench_status_kib(pid_t pid, const char *name)
{
    char path[64], line[256], format[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    snprintf(format, sizeof format, "%s: %%ld kB", name);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, format, &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static int s_remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void bench_remove_tree(const char *dir)
{
    nftw(dir, s_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

pid_t bench_spawn(char *const argv[], const char *log)
{
    pid_t pid;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log, O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    int rc = posix_spawn(&pid, argv[0], &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
        errno = rc;
        perror(argv[0]);
        return -1;
    }
    return pid;
}

void bench_stop_child(pid_t pid, int grace_ms)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    int64_t deadline = bench_now_ns() + (int64_t)grace_ms * 1000000;
    int status;
    while (bench_now_ns() < deadline) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || (r == -1 && errno == ECHILD))
            return;
        bench_sleep_ms(10);
    }
    fprintf(stderr, "%s: pid %d ignored SIGTERM, killing it\n", program_invocation_short_name,
            (int)pid);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
}

int bench_wait_ready(const char *path, pid_t pid, int timeout_ms, char *out, size_t out_size)
{
    int64_t deadline = bench_now_ns() + (int64_t)timeout_ms * 1000000;
    while (bench_now_ns() < deadline && !mb_signal_stop_requested()) {
        FILE *f = fopen(path, "r");
        if (f) {
            bool ok = fgets(out, (int)out_size, f) != NULL;
            fclose(f);
            out[strcspn(out, "\r\n")] = 0;
            if (ok && *out)
                return 0;
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            return -1;
        bench_sleep_ms(10);
    }
    return -1;
}

void bench_show_log(const char *log)
{
    FILE *f = fopen(log, "r");
    if (!f)
        return;
    char lines[8][512];
    int n = 0;
    while (fgets(lines[n % 8], sizeof lines[0], f))
        n++;
    fclose(f);
    for (int i = n > 8 ? n - 8 : 0; i < n; i++)
        fprintf(stderr, "  | %s", lines[i % 8]);
}
