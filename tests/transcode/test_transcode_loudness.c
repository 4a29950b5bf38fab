/*  transcode_loudness: the BS.1770-4 / R128 meter, on synthetic signals
    with known answers, and against libavfilter's ebur128 on the same
    samples. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <libavfilter/avfilter.h>
#include <libavfilter/buffersink.h>
#include <libavfilter/buffersrc.h>
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>

#include "transcode_loudness.h"

#define RATE 48000

/*  `seconds` of stereo: a sine of `freq` Hz at linear `amp`, its phase
    offset by `phase`; `amp2` replaces amp from `switch_s` on (LRA). */
typedef struct {
    double freq, amp, phase, amp2, switch_s;
} s_sig_t;

static float *s_make(const s_sig_t *sig, double seconds, size_t *n)
{
    *n = (size_t)(seconds * RATE);
    float *x = malloc(*n * sizeof *x);
    for (size_t i = 0; i < *n; i++) {
        double t = (double)i / RATE;
        double a =
            sig->switch_s > 0 && fmod(t, 2 * sig->switch_s) >= sig->switch_s ? sig->amp2 : sig->amp;
        x[i] = (float)(a * sin(2 * M_PI * sig->freq * t + sig->phase));
    }
    return x;
}

static void s_measure(const float *x, size_t n, transcode_loudness_result_t *r)
{
    transcode_loudness_t *m = transcode_loudness_new(2);
    cr_assert_not_null(m);
    /* fed in uneven pieces, as frames arrive */
    for (size_t at = 0; at < n;) {
        size_t take = n - at < 1000 ? n - at : 1000 + at % 77;
        if (take > n - at)
            take = n - at;
        const float *planes[2] = {x + at, x + at};
        transcode_loudness_add(m, planes, take);
        at += take;
    }
    transcode_loudness_result(m, r);
    transcode_loudness_destroy(&m);
    transcode_loudness_destroy(&m); /* a second destroy is a no-op */
}

/*  libavfilter's ebur128 (peak=true) on the same stereo samples. */
static void s_ebur128(const float *x, size_t n, double *i_lufs, double *lra, double *tp_db)
{
    av_log_set_level(AV_LOG_ERROR); /* its summary is printed at info level */
    AVFilterGraph *g = avfilter_graph_alloc();
    AVFilterContext *src = NULL, *sink = NULL, *meter = NULL;
    char args[256];
    snprintf(args, sizeof args,
             "time_base=1/%d:sample_rate=%d:sample_fmt=fltp:channel_layout=stereo", RATE, RATE);
    cr_assert_geq(
        avfilter_graph_create_filter(&src, avfilter_get_by_name("abuffer"), "in", args, NULL, g),
        0);
    cr_assert_geq(avfilter_graph_create_filter(&meter, avfilter_get_by_name("ebur128"), "r128",
                                               "metadata=1:peak=true", NULL, g),
                  0);
    cr_assert_geq(avfilter_graph_create_filter(&sink, avfilter_get_by_name("abuffersink"), "out",
                                               NULL, NULL, g),
                  0);
    cr_assert_geq(avfilter_link(src, 0, meter, 0), 0);
    cr_assert_geq(avfilter_link(meter, 0, sink, 0), 0);
    cr_assert_geq(avfilter_graph_config(g, NULL), 0);
    AVFrame *f = av_frame_alloc(), *out = av_frame_alloc();
    *i_lufs = *lra = *tp_db = NAN;
    for (size_t at = 0; at <= n; at += 1024) {
        if (at < n) {
            int take = (int)(n - at < 1024 ? n - at : 1024);
            f->nb_samples = take;
            f->format = AV_SAMPLE_FMT_FLTP;
            f->sample_rate = RATE;
            av_channel_layout_default(&f->ch_layout, 2);
            f->pts = (int64_t)at;
            cr_assert_geq(av_frame_get_buffer(f, 0), 0);
            memcpy(f->data[0], x + at, (size_t)take * sizeof(float));
            memcpy(f->data[1], x + at, (size_t)take * sizeof(float));
            cr_assert_geq(av_buffersrc_add_frame(src, f), 0);
            av_frame_unref(f);
        } else
            cr_assert_geq(av_buffersrc_add_frame(src, NULL), 0);
        while (av_buffersink_get_frame(sink, out) >= 0) {
            AVDictionaryEntry *e;
            if ((e = av_dict_get(out->metadata, "lavfi.r128.I", NULL, 0)))
                *i_lufs = atof(e->value);
            if ((e = av_dict_get(out->metadata, "lavfi.r128.LRA", NULL, 0)))
                *lra = atof(e->value);
            if ((e = av_dict_get(out->metadata, "lavfi.r128.true_peak", NULL, 0)))
                *tp_db = 20 * log10(atof(e->value));
            av_frame_unref(out);
        }
    }
    av_frame_free(&f);
    av_frame_free(&out);
    avfilter_graph_free(&g);
}

Test(transcode_loudness, usage_sine_at_minus_20_dbfs_reads_minus_20_lufs)
{
    /* BS.1770: a 997 Hz sine at 0 dBFS in one channel reads -3.01 LKFS;
       in both channels of a stereo pair, 0 LUFS. So -20 dBFS: -20. */
    s_sig_t sig = {.freq = 997, .amp = 0.1};
    size_t n;
    float *x = s_make(&sig, 20, &n);
    transcode_loudness_result_t r;
    s_measure(x, n, &r);
    cr_assert(fabs(r.integrated_lufs - -20.0) < 0.1, "integrated %.3f", r.integrated_lufs);
    cr_assert(fabs(r.sample_peak_dbfs - -20.0) < 0.01, "sample peak %.3f", r.sample_peak_dbfs);
    cr_assert(fabs(r.true_peak_dbtp - -20.0) < 0.1, "true peak %.3f", r.true_peak_dbtp);
    cr_assert(r.range_lu < 0.1, "a steady tone has no range: %.3f", r.range_lu);
    /* -14 is 6 dB up; the true peak allows 19 dB: the loudness target rules. */
    cr_assert(fabs(transcode_loudness_gain(&r, -14, -1) - 6.0) < 0.1);
    free(x);
}

Test(transcode_loudness, true_peak_between_samples)
{
    /* fs/4 with a 45 degree phase: every sample is at 0.707 of the
       peak, which falls between samples. */
    s_sig_t sig = {.freq = 12000, .amp = 0.5, .phase = M_PI / 4};
    size_t n;
    float *x = s_make(&sig, 5, &n);
    transcode_loudness_result_t r;
    s_measure(x, n, &r);
    double want = 20 * log10(0.5);
    cr_assert(fabs(r.sample_peak_dbfs - (want - 3.01)) < 0.05, "sample peak %.3f",
              r.sample_peak_dbfs);
    cr_assert(fabs(r.true_peak_dbtp - want) < 0.3, "true peak %.3f, want %.3f", r.true_peak_dbtp,
              want);
    free(x);
}

/*  The meter's interpolation filter written plainly: phase p/4 of a
    Hann-windowed sinc over 12 samples, each phase scaled to unity gain at
    DC; every point between every pair of samples, none skipped. */
static double s_brute_true_peak(const float *x, size_t n)
{
    float coef[4][12];
    for (int p = 1; p < 4; p++) {
        double sum = 0;
        for (int k = 0; k < 12; k++) {
            double t = (double)(k - 5) - (double)p / 4;
            double sinc = sin(M_PI * t) / (M_PI * t);
            coef[p][k] = (float)(sinc * (0.5 + 0.5 * cos(M_PI * t / 6)));
            sum += coef[p][k];
        }
        for (int k = 0; k < 12; k++)
            coef[p][k] = (float)(coef[p][k] / sum);
    }
    double best = 0;
    for (size_t i = 0; i < n; i++)
        best = fmax(best, fabs(x[i]));
    for (size_t m = 5; m + 6 < n; m++)
        for (int p = 1; p < 4; p++) {
            float y = 0;
            for (int k = 0; k < 12; k++)
                y += coef[p][k] * x[m - 5 + k];
            best = fmax(best, fabs(y));
        }
    return 20 * log10(best);
}

/*  Quiet noise (the same every time) with one short inter-sample peak (fs/4
    at 45 degrees) at `at`: the meter must find what every point finds. */
static void s_assert_burst_found(float *x, size_t n, size_t at)
{
    unsigned seed = 12345;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        x[i] = (float)(((double)(seed >> 8 & 0xffff) / 65536.0 - 0.5) * 0.02);
    }
    for (size_t j = 0; j < 6 && at + j < n; j++)
        x[at + j] = (float)(0.1 * sin(M_PI / 2 * (double)j + M_PI / 4));
    transcode_loudness_result_t r;
    s_measure(x, n, &r);
    double want = s_brute_true_peak(x, n);
    cr_assert(fabs(r.true_peak_dbtp - want) < 1e-4, "peak at %zu: true peak %.6f, every point %.6f",
              at, r.true_peak_dbtp, want);
}

Test(transcode_loudness, true_peak_skips_nothing_that_counts)
{
    /* One burst per signal, so a burst the skipping missed shows: on and
       around the edges of the meter's 1024-sample blocks and 32-point
       runs, far into the track, and at every phase of a run across one
       block edge. */
    size_t n = 48000 * 3;
    float *x = malloc(n * sizeof *x);
    const size_t at[] = {5, 31, 32, 1017, 1023, 1024, 1030, 2047, 4096 + 27, 9000, 47999, 70001,
                         100000 - 11, 120000 + 3};
    for (size_t b = 0; b < sizeof at / sizeof at[0]; b++)
        s_assert_burst_found(x, n, at[b]);
    for (size_t edge = 2048 - 20; edge < 2048 + 20; edge++)
        s_assert_burst_found(x, 4096, edge);
    free(x);
}

Test(transcode_loudness, gain_never_clips)
{
    /* A loud track: the gain is a cut to -14 LUFS. A quiet one with a
       high peak: the gain stops where the true peak reaches -1 dBTP. */
    transcode_loudness_result_t loud = {.integrated_lufs = -8, .true_peak_dbtp = 0};
    cr_assert_float_eq(transcode_loudness_gain(&loud, -14, -1), -6.0, 1e-9);
    transcode_loudness_result_t peaky = {.integrated_lufs = -24, .true_peak_dbtp = -3};
    cr_assert_float_eq(transcode_loudness_gain(&peaky, -14, -1), 2.0, 1e-9);
}

Test(transcode_loudness, silence_reads_the_floors)
{
    size_t n = 5 * RATE;
    float *x = calloc(n, sizeof *x);
    transcode_loudness_result_t r;
    s_measure(x, n, &r);
    cr_assert_float_eq(r.integrated_lufs, TRANSCODE_LOUDNESS_FLOOR, 1e-9);
    cr_assert_float_eq(r.true_peak_dbtp, TRANSCODE_PEAK_FLOOR, 1e-9);
    cr_assert_float_eq(r.range_lu, 0, 1e-9);
    free(x);
}

Test(transcode_loudness, no_channels_or_too_many)
{
    cr_assert_null(transcode_loudness_new(0));
    cr_assert_null(transcode_loudness_new(3));
}

Test(transcode_loudness, agrees_with_libavfilter_ebur128)
{
    /* 10 s at -20 dBFS, 10 s at -30, alternating for a minute: the
       integrated level sits between them, the range near 10 LU. */
    s_sig_t sig = {.freq = 440, .amp = 0.1, .amp2 = 0.0316, .switch_s = 10};
    size_t n;
    float *x = s_make(&sig, 60, &n);
    transcode_loudness_result_t r;
    s_measure(x, n, &r);
    double i_ref, lra_ref, tp_ref;
    s_ebur128(x, n, &i_ref, &lra_ref, &tp_ref);
    cr_assert(fabs(r.integrated_lufs - i_ref) < 0.1, "integrated %.3f, ebur128 %.3f",
              r.integrated_lufs, i_ref);
    cr_assert(fabs(r.range_lu - lra_ref) < 0.5, "LRA %.3f, ebur128 %.3f", r.range_lu, lra_ref);
    cr_assert(fabs(r.true_peak_dbtp - tp_ref) < 0.2, "true peak %.3f, ebur128 %.3f",
              r.true_peak_dbtp, tp_ref);
    cr_assert(r.range_lu > 8 && r.range_lu < 11, "LRA %.3f", r.range_lu);
    free(x);
}
