/*  transcode_ladder: the HLS tree a master becomes, checked strictly:
    playlists parse, segments decode back to the master's duration within
    one AAC frame, the lossless rung is bit-exact, BANDWIDTH is at least
    AVERAGE-BANDWIDTH and every segment's own rate, loudness is right. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libavutil/error.h>
#include <libavutil/log.h>

#include "mb_error.h"
#include "tc_media.h"
#include "transcode_ladder.h"

static char s_dir[64];

static void s_setup(void)
{
    av_log_set_level(AV_LOG_QUIET); /* damaged masters make the decoders complain */
    tc_tmpdir(s_dir, "test_transcode_ladder");
}

static void s_teardown(void)
{
    tc_rm_rf(s_dir);
}

TestSuite(transcode_ladder, .init = s_setup, .fini = s_teardown);

static char *s_path(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *s_path(const char *fmt, ...)
{
    static char paths[8][512];
    static int next;
    char *path = paths[next++ % 8];
    char name[256];
    va_list args;
    va_start(args, fmt);
    vsnprintf(name, sizeof name, fmt, args);
    va_end(args);
    snprintf(path, 512, "%s/%s", s_dir, name);
    return path;
}

/*  Writes a master; its path stays valid for the whole test. */
static const char *s_master(const char *name, tc_gen_t gen)
{
    static char masters[4][512];
    static int next;
    char *path = masters[next++ % 4];
    snprintf(path, 512, "%s/%s", s_dir, name);
    int rc = tc_generate(path, &gen);
    if (rc == AVERROR_ENCODER_NOT_FOUND)
        cr_skip_test("no %s encoder in this libavcodec", gen.codec);
    cr_assert_eq(rc, 0, "writing %s: %s", name, av_err2str(rc));
    return path;
}

static int s_run(const char *master, const char *out, transcode_ladder_result_t *res, char *why,
                 size_t why_len)
{
    char *dir = s_path("%s", out);
    cr_assert_eq(mkdir(dir, 0755), 0);
    transcode_ladder_opts_t opts = {.input = master, .out_dir = dir, .lossless = true};
    return transcode_ladder_run(&opts, res, why, why_len);
}

static const transcode_rung_t *s_rung(const transcode_ladder_result_t *res, const char *name)
{
    for (size_t i = 0; i < res->n_rungs; i++)
        if (strcmp(res->rungs[i].name, name) == 0)
            return &res->rungs[i];
    return NULL;
}

/*  Checks one rung's playlist and segments; returns the peak rate of any
    single segment long enough to count (>= half the target). */
static void s_check_rung(const char *out, const char *name, double master_s, uint64_t bandwidth,
                         uint64_t average, bool aac)
{
    char why[512];
    tc_media_playlist_t *pl = malloc(sizeof *pl);
    cr_assert_eq(tc_parse_media(s_path("%s/%s/index.m3u8", out, name), pl, why, sizeof why), 0,
                 "%s: %s", name, why);
    cr_assert(pl->independent, "%s: EXT-X-INDEPENDENT-SEGMENTS", name);
    cr_assert_str_eq(pl->map, "init.mp4");
    int target = master_s >= TRANSCODE_SEGMENT_S ? TRANSCODE_SEGMENT_S : (int)lround(master_s);
    cr_assert_eq(pl->target, target, "%s: target %d", name, pl->target);
    double total = 0, bits = 0, peak = 0;
    for (size_t i = 0; i < pl->n; i++) {
        long long size = tc_file_size(s_path("%s/%s/%s", out, name, pl->uri[i]));
        cr_assert_gt(size, 0, "%s/%s", name, pl->uri[i]);
        total += pl->extinf[i];
        bits += 8.0 * (double)size;
        if (i + 1 < pl->n)
            cr_assert(pl->extinf[i] > 5.9 && pl->extinf[i] < 6.2, "%s segment %zu: %.3f s", name,
                      i + 1, pl->extinf[i]);
        if (pl->extinf[i] >= 0.5 * pl->target && 8.0 * (double)size / pl->extinf[i] > peak)
            peak = 8.0 * (double)size / pl->extinf[i];
    }
    /* Within one AAC frame (1024 samples at 48 kHz), or one FLAC frame. */
    cr_assert(fabs(total - master_s) <= (aac ? 1024.0 / 48000 : 4608.0 / 44100) + 1e-6,
              "%s: EXTINF sum %.6f for %.6f s", name, total, master_s);
    cr_assert_geq((double)bandwidth, peak, "%s: BANDWIDTH %llu under a segment's %.0f", name,
                  (unsigned long long)bandwidth, peak);
    cr_assert_geq(bandwidth, average, "%s", name);
    cr_assert(fabs((double)average - bits / total) <= 1.0 + bits / total * 1e-6,
              "%s: AVERAGE-BANDWIDTH %llu, measured %.1f", name, (unsigned long long)average,
              bits / total);
    free(pl);
}

/*  Decodes the rung (init + segments) and checks its length, playing the
    edit list as a player does. */
static void s_check_decodes(const char *out, const char *name, int64_t master_samples_48k)
{
    char *joined = s_path("%s-%s.mp4", out, name);
    cr_assert_eq(tc_concat_rung(s_path("%s/%s", out, name), joined), 0);
    tc_decoded_t d;
    cr_assert_eq(tc_decode(joined, &d), 0);
    cr_assert_str_eq(d.codec, "aac");
    cr_assert_eq(d.rate, 48000);
    cr_assert_eq(d.channels, 2);
    int64_t skip = tc_elst_media_time(s_path("%s/%s/init.mp4", out, name));
    cr_assert_eq(skip, 1024, "%s: the edit list hides the encoder's priming: %lld", name,
                 (long long)skip);
    int64_t played = d.samples - skip;
    cr_assert(played >= master_samples_48k && played - master_samples_48k < 1024,
              "%s: %lld samples played for %lld", name, (long long)played,
              (long long)master_samples_48k);
}

Test(transcode_ladder, usage_flac_master_makes_the_whole_ladder)
{
    /* 20 s of a -20 dBFS 997 Hz sine, CD format. */
    const char *master = s_master("m.flac", (tc_gen_t){.format = "flac",
                                                       .codec = "flac",
                                                       .rate = 44100,
                                                       .channels = 2,
                                                       .seconds = 20,
                                                       .amplitude = 0.1});
    transcode_ladder_result_t res;
    char why[512];
    cr_assert_eq(s_run(master, "out", &res, why, sizeof why), 0, "%s", why);

    cr_assert_eq(res.duration_ms, 20000);
    cr_assert(res.lossless && res.flac_copied);
    cr_assert_eq(res.n_rungs, 5);
    const char *names[] = {"a64", "a128", "a192", "a256", "flac"};
    for (int i = 0; i < 5; i++)
        cr_assert_str_eq(res.rungs[i].name, names[i]);
    cr_assert(fabs(res.loudness.integrated_lufs - -20.0) < 0.5, "integrated %.2f",
              res.loudness.integrated_lufs);
    cr_assert(fabs(res.loudness.true_peak_dbtp - -20.0) < 0.5, "true peak %.2f",
              res.loudness.true_peak_dbtp);
    cr_assert(fabs(res.gain_db - 6.0) < 0.5, "gain %.2f", res.gain_db);

    char perr[512];
    tc_master_playlist_t master_pl, free_pl;
    cr_assert_eq(tc_parse_master(s_path("out/master.m3u8"), &master_pl, perr, sizeof perr), 0, "%s",
                 perr);
    cr_assert(master_pl.independent);
    cr_assert_eq(master_pl.n, 5);
    for (size_t i = 0; i < 5; i++) {
        char uri[64];
        snprintf(uri, sizeof uri, "%s/index.m3u8", names[i]);
        cr_assert_str_eq(master_pl.uri[i], uri);
        cr_assert_str_eq(master_pl.codecs[i], i < 4 ? "mp4a.40.2" : "fLaC");
        cr_assert_eq(master_pl.bandwidth[i], res.rungs[i].bandwidth);
        cr_assert_eq(master_pl.average[i], res.rungs[i].average_bandwidth);
        s_check_rung("out", names[i], 20.0, master_pl.bandwidth[i], master_pl.average[i], i < 4);
    }
    cr_assert_eq(tc_parse_master(s_path("out/master-free.m3u8"), &free_pl, perr, sizeof perr), 0,
                 "%s", perr);
    cr_assert_eq(free_pl.n, 2);
    cr_assert_str_eq(free_pl.uri[0], "a64/index.m3u8");
    cr_assert_str_eq(free_pl.uri[1], "a128/index.m3u8");

    for (int i = 0; i < 4; i++)
        s_check_decodes("out", names[i], 20 * 48000);

    /* The lossless rung is the master's audio, bit for bit. */
    tc_decoded_t m, f;
    cr_assert_eq(tc_decode(master, &m), 0);
    cr_assert_eq(tc_concat_rung(s_path("out/flac"), s_path("flac.mp4")), 0);
    cr_assert_eq(tc_decode(s_path("flac.mp4"), &f), 0);
    cr_assert_str_eq(f.codec, "flac");
    cr_assert_eq(f.samples, m.samples);
    cr_assert_eq(f.rate, 44100);
    cr_assert_eq(memcmp(f.hash, m.hash, sizeof m.hash), 0, "the FLAC rung differs from the master");
}

Test(transcode_ladder, wav_24_bit_is_encoded_to_flac_bit_exact)
{
    const char *master = s_master("m24.wav", (tc_gen_t){.format = "wav",
                                                        .codec = "pcm_s24le",
                                                        .rate = 96000,
                                                        .channels = 2,
                                                        .seconds = 8,
                                                        .amplitude = 0.3,
                                                        .noise = true});
    transcode_ladder_result_t res;
    char why[512];
    cr_assert_eq(s_run(master, "out", &res, why, sizeof why), 0, "%s", why);
    cr_assert(res.lossless);
    cr_assert_not(res.flac_copied);
    const transcode_rung_t *flac = s_rung(&res, "flac");
    cr_assert_not_null(flac);
    cr_assert_eq(flac->sample_rate, 96000);
    tc_decoded_t m, f;
    cr_assert_eq(tc_decode(master, &m), 0);
    cr_assert_eq(tc_concat_rung(s_path("out/flac"), s_path("flac.mp4")), 0);
    cr_assert_eq(tc_decode(s_path("flac.mp4"), &f), 0);
    cr_assert_eq(f.samples, m.samples);
    cr_assert_eq(memcmp(f.hash, m.hash, sizeof m.hash), 0, "24-bit audio changed on the way");
    s_check_decodes("out", "a256", 8 * 48000);
}

Test(transcode_ladder, lossy_master_has_no_lossless_rung)
{
    const char *master = s_master("m.mp3", (tc_gen_t){.format = "mp3",
                                                      .codec = "libmp3lame",
                                                      .rate = 44100,
                                                      .channels = 2,
                                                      .seconds = 8,
                                                      .amplitude = 0.2,
                                                      .bitrate = 192000});
    transcode_ladder_result_t res;
    char why[512];
    cr_assert_eq(s_run(master, "out", &res, why, sizeof why), 0, "%s", why);
    cr_assert_eq(res.n_rungs, 4);
    cr_assert_not(res.lossless);
    cr_assert_not(tc_exists(s_path("out/flac")));
    tc_master_playlist_t pl;
    cr_assert_eq(tc_parse_master(s_path("out/master.m3u8"), &pl, why, sizeof why), 0, "%s", why);
    cr_assert_eq(pl.n, 4);
}

Test(transcode_ladder, mono_master_gives_stereo_aac_and_mono_flac)
{
    const char *master = s_master("mono.flac", (tc_gen_t){.format = "flac",
                                                          .codec = "flac",
                                                          .rate = 48000,
                                                          .channels = 1,
                                                          .seconds = 7,
                                                          .amplitude = 0.2});
    transcode_ladder_result_t res;
    char why[512];
    cr_assert_eq(s_run(master, "out", &res, why, sizeof why), 0, "%s", why);
    cr_assert_eq(s_rung(&res, "a128")->channels, 2);
    cr_assert_eq(s_rung(&res, "flac")->channels, 1);
    s_check_decodes("out", "a128", 7 * 48000);
}

Test(transcode_ladder, short_master_is_one_segment)
{
    const char *master = s_master("short.wav", (tc_gen_t){.format = "wav",
                                                          .codec = "pcm_s16le",
                                                          .rate = 44100,
                                                          .channels = 2,
                                                          .seconds = 2,
                                                          .amplitude = 0.2});
    transcode_ladder_result_t res;
    char why[512];
    cr_assert_eq(s_run(master, "out", &res, why, sizeof why), 0, "%s", why);
    const transcode_rung_t *r = s_rung(&res, "a128");
    cr_assert_eq(r->segments, 1);
    cr_assert_eq(r->bandwidth, r->average_bandwidth);
    s_check_rung("out", "a128", 2.0, r->bandwidth, r->average_bandwidth, true);
}

Test(transcode_ladder, garbage_and_truncated_masters_fail_with_a_reason)
{
    char *garbage = s_path("garbage.flac");
    FILE *f = fopen(garbage, "wb");
    for (int i = 0; i < 100000; i++)
        fputc((i * 7919) & 0xff, f);
    fclose(f);
    transcode_ladder_result_t res;
    char why[512];
    cr_assert_eq(s_run(garbage, "out1", &res, why, sizeof why), MB_EPROTO);
    cr_assert_neq(why[0], '\0');

    const char *master = s_master("whole.flac", (tc_gen_t){.format = "flac",
                                                           .codec = "flac",
                                                           .rate = 44100,
                                                           .channels = 2,
                                                           .seconds = 10,
                                                           .amplitude = 0.2,
                                                           .noise = true});
    FILE *in = fopen(master, "rb");
    char *cut = s_path("cut.flac");
    FILE *out = fopen(cut, "wb");
    fseek(in, 0, SEEK_END);
    long half = ftell(in) / 2;
    rewind(in);
    char *buf = malloc((size_t)half);
    cr_assert_eq(fread(buf, 1, (size_t)half, in), (size_t)half);
    fwrite(buf, 1, (size_t)half, out);
    free(buf);
    fclose(in);
    fclose(out);
    cr_assert_eq(s_run(cut, "out2", &res, why, sizeof why), MB_EPROTO);
    cr_assert(strstr(why, "truncated"), "%s", why);
}

static int s_stop_at_once(void *arg)
{
    (*(int *)arg)++;
    return 1;
}

Test(transcode_ladder, tick_stops_the_job)
{
    const char *master = s_master("long.flac", (tc_gen_t){.format = "flac",
                                                          .codec = "flac",
                                                          .rate = 44100,
                                                          .channels = 2,
                                                          .seconds = 60,
                                                          .amplitude = 0.2,
                                                          .noise = true});
    int ticks = 0;
    char *dir = s_path("out");
    cr_assert_eq(mkdir(dir, 0755), 0);
    transcode_ladder_opts_t opts = {.input = master,
                                    .out_dir = dir,
                                    .lossless = true,
                                    .tick = s_stop_at_once,
                                    .tick_arg = &ticks};
    transcode_ladder_result_t res;
    char why[512];
    cr_assert_eq(transcode_ladder_run(&opts, &res, why, sizeof why), MB_EINTR, "%s", why);
    cr_assert_eq(ticks, 1);
    cr_assert_not(tc_exists(s_path("out/master.m3u8")));
}
