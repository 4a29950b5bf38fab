/*  bench_transcode — the whole ladder from one master, musicbus against
    the ffmpeg command line making the same ladder in one process, side by
    side in the same run.

        bench_transcode [--rounds N] [--ffmpeg PATH] [--cli-loudness] MASTER
        bench_transcode --out DIR MASTER     our ladder once, kept in DIR

    Each round runs transcode_ladder_run() (in this process) and then the
    ffmpeg CLI (a child process), alternately, each into a fresh folder
    under $TMPDIR, and prints wall time, CPU time (user + system, all
    threads; the child's from wait4) and x-realtime (master duration /
    wall). The summary gives the medians and the ratios.

    The CLI's ladder is the same: one decode, one resample to 48 kHz
    stereo (aresample, then asplit to four AAC-LC encoders at 64, 128,
    192 and 256 kbit/s), a FLAC rung (copied from a FLAC master, encoded
    from other lossless ones, as ours), each through the hls muxer with
    fMP4 segments of 6 s. It does not measure loudness unless
    --cli-loudness adds ebur128=peak=true to its graph. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libavformat/avformat.h>
#include <libavutil/md5.h>

#include "mb_error.h"
#include "transcode_ladder.h"

#define S_ROUNDS_MAX 50

typedef struct {
    double wall, cpu;
} s_run_t;

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double s_tv(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static double s_self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return s_tv(ru.ru_utime) + s_tv(ru.ru_stime);
}

static void s_rm_rf(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

static char *s_fresh_dir(const char *base, const char *what, int round)
{
    char *dir;
    if (asprintf(&dir, "%s/%s-%d", base, what, round) < 0)
        abort();
    s_rm_rf(dir);
    mkdir(dir, 0755);
    return dir;
}

static int s_ours(const char *master, const char *dir, s_run_t *run, transcode_ladder_result_t *res)
{
    char why[512];
    transcode_ladder_opts_t opts = {.input = master, .out_dir = dir, .lossless = true};
    double w0 = s_now(), c0 = s_self_cpu();
    int rc = transcode_ladder_run(&opts, res, why, sizeof why);
    run->wall = s_now() - w0;
    run->cpu = s_self_cpu() - c0;
    if (rc)
        fprintf(stderr, "ladder failed: %s: %s\n", mb_strerror(rc), why);
    return rc;
}

static int s_cli(const char *ffmpeg, const char *master, const char *dir, bool flac_rung,
                 bool flac_copy, bool loudness, s_run_t *run)
{
    const char *names[] = {"a64", "a128", "a192", "a256", "flac"};
    const char *rates[] = {"64k", "128k", "192k", "256k"};
    char *argv[128];
    int n = 0;
    char *owned[64];
    int n_owned = 0;
#define S_ARG(s) (argv[n++] = (char *)(s))
#define S_OWN(...)                                                                                 \
    do {                                                                                           \
        if (asprintf(&owned[n_owned], __VA_ARGS__) < 0)                                            \
            abort();                                                                               \
        S_ARG(owned[n_owned++]);                                                                   \
    } while (0)
    S_ARG(ffmpeg);
    S_ARG("-hide_banner");
    S_ARG("-nostats");
    S_ARG("-loglevel");
    S_ARG("error");
    S_ARG("-y");
    S_ARG("-i");
    S_ARG(master);
    S_ARG("-filter_complex");
    S_ARG(loudness ? "[0:a]aresample=48000,aformat=sample_fmts=fltp:channel_layouts=stereo,"
                     "ebur128=peak=true,asplit=4[a0][a1][a2][a3]"
                   : "[0:a]aresample=48000,aformat=sample_fmts=fltp:channel_layouts=stereo,"
                     "asplit=4[a0][a1][a2][a3]");
    for (int i = 0; i < 5; i++) {
        if (i == 4 && !flac_rung)
            break;
        char *sub;
        if (asprintf(&sub, "%s/%s", dir, names[i]) < 0)
            abort();
        mkdir(sub, 0755);
        free(sub);
        S_ARG("-map");
        if (i < 4) {
            S_OWN("[a%d]", i);
            S_ARG("-c:a");
            S_ARG("aac");
            S_ARG("-b:a");
            S_ARG(rates[i]);
        } else {
            S_ARG("0:a");
            S_ARG("-c:a");
            S_ARG(flac_copy ? "copy" : "flac");
            S_ARG("-strict");
            S_ARG("experimental");
        }
        S_ARG("-f");
        S_ARG("hls");
        S_ARG("-hls_segment_type");
        S_ARG("fmp4");
        S_ARG("-hls_time");
        S_ARG("6");
        S_ARG("-hls_playlist_type");
        S_ARG("vod");
        S_ARG("-hls_flags");
        S_ARG("independent_segments");
        S_ARG("-hls_fmp4_init_filename");
        S_ARG("init.mp4");
        S_ARG("-hls_segment_filename");
        S_OWN("%s/%s/seg-%%05d.m4s", dir, names[i]);
        S_OWN("%s/%s/index.m3u8", dir, names[i]);
    }
    argv[n] = NULL;
    double w0 = s_now();
    pid_t pid = fork();
    if (pid == 0) {
        /* The CLI's loudness summary goes to stderr at info level. */
        execvp(ffmpeg, argv);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    wait4(pid, &status, 0, &ru);
    run->wall = s_now() - w0;
    run->cpu = s_tv(ru.ru_utime) + s_tv(ru.ru_stime);
    for (int i = 0; i < n_owned; i++)
        free(owned[i]);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "ffmpeg failed (status %d)\n", status);
        return -1;
    }
    return 0;
}

/*  MD5 of the data of every packet of `dir/rung/index.m3u8`, in order
    (timestamps and containers aside); false when it cannot be read. */
static bool s_packets_md5(const char *dir, const char *rung, uint8_t md5[16], long *packets)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s/index.m3u8", dir, rung);
    AVFormatContext *fmt = NULL;
    if (avformat_open_input(&fmt, path, NULL, NULL) < 0)
        return false;
    struct AVMD5 *ctx = av_md5_alloc();
    av_md5_init(ctx);
    AVPacket *pkt = av_packet_alloc();
    *packets = 0;
    while (av_read_frame(fmt, pkt) >= 0) {
        av_md5_update(ctx, pkt->data, pkt->size);
        (*packets)++;
        av_packet_unref(pkt);
    }
    av_md5_final(ctx, md5);
    av_free(ctx);
    av_packet_free(&pkt);
    avformat_close_input(&fmt);
    return *packets > 0;
}

/*  Prints whether both ladders' AAC rungs hold the same packets. */
static void s_compare(const char *ours, const char *cli)
{
    const char *rungs[] = {"a64", "a128", "a192", "a256"};
    int same = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t a[16], b[16];
        long na = 0, nb = 0;
        bool ok = s_packets_md5(ours, rungs[i], a, &na) && s_packets_md5(cli, rungs[i], b, &nb);
        if (ok && na == nb && !memcmp(a, b, sizeof a))
            same++;
        else
            printf("AAC rung %s: packets differ from the CLI's (%ld against %ld)\n", rungs[i], na,
                   nb);
    }
    if (same == 4)
        printf("AAC packets: the same bytes as the CLI's in all 4 rungs\n");
}

static void s_load(const char *when)
{
    char line[128] = "";
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (!fgets(line, sizeof line, f))
            line[0] = '\0';
        fclose(f);
    }
    line[strcspn(line, "\n")] = '\0';
    printf("load average %s: %s\n", when, line);
}

static int s_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double s_median(const s_run_t *runs, int n, bool cpu)
{
    double v[S_ROUNDS_MAX];
    for (int i = 0; i < n; i++)
        v[i] = cpu ? runs[i].cpu : runs[i].wall;
    qsort(v, (size_t)n, sizeof v[0], s_cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    int rounds = 3;
    const char *ffmpeg = "ffmpeg";
    bool loudness = false;
    const char *out = NULL;
    static const struct option options[] = {{"rounds", required_argument, NULL, 'r'},
                                            {"out", required_argument, NULL, 'o'},
                                            {"ffmpeg", required_argument, NULL, 'f'},
                                            {"cli-loudness", no_argument, NULL, 'l'},
                                            {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (opt == 'r')
            rounds = atoi(optarg);
        else if (opt == 'f')
            ffmpeg = optarg;
        else if (opt == 'l')
            loudness = true;
        else if (opt == 'o')
            out = optarg;
        else
            return 2;
    }
    if (optind != argc - 1 || rounds < 1 || rounds > S_ROUNDS_MAX) {
        fprintf(stderr, "usage: bench_transcode [--rounds 1..50] [--ffmpeg PATH] "
                        "[--cli-loudness] MASTER\n");
        return 2;
    }
    const char *master = argv[optind];
    transcode_ladder_result_t res;
    if (out) {
        s_run_t run;
        mkdir(out, 0755);
        if (s_ours(master, out, &run, &res) != 0)
            return 1;
        printf("wall %.2f s, cpu %.2f s, loudness %.2f LUFS, LRA %.2f LU, true peak %.2f dBTP\n",
               run.wall, run.cpu, res.loudness.integrated_lufs, res.loudness.range_lu,
               res.loudness.true_peak_dbtp);
        return 0;
    }
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char base[4096];
    snprintf(base, sizeof base, "%s/bench_transcode.%d", tmp, (int)getpid());
    mkdir(base, 0755);

    s_run_t ours[S_ROUNDS_MAX], cli[S_ROUNDS_MAX];
    double duration = 0;
    int rc = 0;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    printf("master %s, %ld cores\n", master, cores);
    s_load("before");
    av_log_set_level(AV_LOG_ERROR);
    for (int r = 0; r < rounds && rc == 0; r++) {
        char *dir = s_fresh_dir(base, "ours", r);
        rc = s_ours(master, dir, &ours[r], &res);
        char *ours_dir = dir;
        if (rc) {
            s_rm_rf(ours_dir);
            free(ours_dir);
            break;
        }
        duration = (double)res.duration_ms / 1000.0;
        if (r == 0) {
            printf("duration %.1f s; loudness %.2f LUFS, true peak %.2f dBTP, LRA %.2f LU, gain "
                   "%.2f dB; rungs:",
                   duration, res.loudness.integrated_lufs, res.loudness.true_peak_dbtp,
                   res.loudness.range_lu, res.gain_db);
            for (size_t i = 0; i < res.n_rungs; i++)
                printf(" %s (%s, BANDWIDTH %llu, AVERAGE %llu)", res.rungs[i].name,
                       res.rungs[i].codecs, (unsigned long long)res.rungs[i].bandwidth,
                       (unsigned long long)res.rungs[i].average_bandwidth);
            printf("%s\n", res.flac_copied ? "; flac copied" : "");
        }
        dir = s_fresh_dir(base, "cli", r);
        rc = s_cli(ffmpeg, master, dir, res.lossless, res.flac_copied, loudness, &cli[r]);
        if (rc == 0 && r == 0)
            s_compare(ours_dir, dir);
        s_rm_rf(ours_dir);
        free(ours_dir);
        s_rm_rf(dir);
        free(dir);
        if (rc)
            break;
        printf("round %d: musicbus wall %.2f s cpu %.2f s (%.1fx realtime) | ffmpeg CLI wall "
               "%.2f s cpu %.2f s (%.1fx realtime)\n",
               r + 1, ours[r].wall, ours[r].cpu, duration / ours[r].wall, cli[r].wall, cli[r].cpu,
               duration / cli[r].wall);
        fflush(stdout);
    }
    s_rm_rf(base);
    if (rc)
        return 1;
    s_load("after");
    double ow = s_median(ours, rounds, false), oc = s_median(ours, rounds, true);
    double cw = s_median(cli, rounds, false), cc = s_median(cli, rounds, true);
    printf("median of %d: musicbus wall %.2f s, cpu %.2f s, %.1fx realtime | ffmpeg CLI wall "
           "%.2f s, cpu %.2f s, %.1fx realtime\n",
           rounds, ow, oc, duration / ow, cw, cc, duration / cw);
    printf("musicbus/CLI: wall %.2f, cpu %.2f%s\n", ow / cw, oc / cc,
           loudness ? " (CLI measured loudness too)" : " (CLI measured no loudness)");
    return 0;
}
