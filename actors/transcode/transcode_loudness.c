/*  transcode_loudness — BS.1770-4 / EBU R128 loudness meter. */
#include "transcode_loudness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mb_alloc.h"

#define S_CHANNELS_MAX 2
#define S_SUB 4800      /* samples in 100 ms: the step of every block */
#define S_MOMENTARY 4   /* 100 ms steps in a 400 ms gating block */
#define S_SHORT_TERM 30 /* 100 ms steps in a 3 s short-term block */
#define S_PHASES 4      /* true peak: oversampling factor */
#define S_TAPS 12       /* taps per phase */
#define S_HALF (S_TAPS / 2)
#define S_HISTORY (S_TAPS - 1)
#define S_TP_BLOCK 1024 /* samples looked at together for the skip test */

/*  A biquad in transposed direct form II. */
typedef struct {
    double b0, b1, b2, a1, a2;
    double z1, z2;
} s_biquad_t;

struct transcode_loudness {
    int channels;
    s_biquad_t shelf[S_CHANNELS_MAX]; /* K-weighting stage 1: high shelf */
    s_biquad_t high[S_CHANNELS_MAX];  /* stage 2: RLB high-pass */
    double sub_energy;                /* sum of squares of the current 100 ms, all channels */
    size_t sub_fill;                  /* samples in it */
    double *subs;                     /* mean square of every complete 100 ms step */
    size_t n_subs, cap_subs;
    /* true peak */
    float history[S_CHANNELS_MAX][S_HISTORY + S_TP_BLOCK]; /* last samples, then the block */
    size_t history_len;                                    /* valid samples at its start */
    float coef[S_PHASES][S_TAPS];                          /* phase 0 is the sample itself */
    double gain_bound;  /* largest sum of |coef| of a phase: bounds any interpolated value */
    double true_peak;   /* linear */
    double sample_peak; /* linear */
};

/*  BS.1770-4's K-weighting coefficients at 48 kHz. */
static void s_biquads_init(transcode_loudness_t *self)
{
    for (int c = 0; c < S_CHANNELS_MAX; c++) {
        self->shelf[c] = (s_biquad_t){.b0 = 1.53512485958697,
                                      .b1 = -2.69169618940638,
                                      .b2 = 1.19839281085285,
                                      .a1 = -1.69065929318241,
                                      .a2 = 0.73248077421585};
        self->high[c] = (s_biquad_t){
            .b0 = 1.0, .b1 = -2.0, .b2 = 1.0, .a1 = -1.99004745483398, .a2 = 0.99007225036621};
    }
}

static inline double s_biquad(s_biquad_t *f, double x)
{
    double y = f->b0 * x + f->z1;
    f->z1 = f->b1 * x - f->a1 * y + f->z2;
    f->z2 = f->b2 * x - f->a2 * y;
    return y;
}

/*  Interpolation filter: a Hann-windowed sinc spanning 12 input samples,
    one set of taps per fractional position p/4. Tap k of phase p weighs
    x[n - S_HALF + 1 + k] for the value at n + p/4. */
static void s_coef_init(transcode_loudness_t *self)
{
    self->gain_bound = 1.0;
    for (int p = 0; p < S_PHASES; p++) {
        double sum = 0, abs_sum = 0;
        double f = (double)p / S_PHASES;
        for (int k = 0; k < S_TAPS; k++) {
            double t = (double)(k - S_HALF + 1) - f; /* distance from the point, in samples */
            double sinc = t == 0 ? 1.0 : sin(M_PI * t) / (M_PI * t);
            double window = 0.5 + 0.5 * cos(M_PI * t / S_HALF);
            self->coef[p][k] = (float)(sinc * window);
            sum += self->coef[p][k];
        }
        /* Unity gain at DC for every phase. */
        for (int k = 0; k < S_TAPS; k++) {
            self->coef[p][k] = (float)(self->coef[p][k] / sum);
            abs_sum += fabs(self->coef[p][k]);
        }
        if (abs_sum > self->gain_bound)
            self->gain_bound = abs_sum;
    }
}

transcode_loudness_t *transcode_loudness_new(int channels)
{
    if (channels < 1 || channels > S_CHANNELS_MAX)
        return NULL;
    transcode_loudness_t *self = mb_calloc(1, sizeof *self);
    self->channels = channels;
    s_biquads_init(self);
    s_coef_init(self);
    return self;
}

void transcode_loudness_destroy(transcode_loudness_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->subs);
    free(*self_p);
    *self_p = NULL;
}

static void s_push_sub(transcode_loudness_t *self)
{
    if (self->n_subs == self->cap_subs) {
        self->cap_subs = self->cap_subs ? self->cap_subs * 2 : 1024;
        self->subs = mb_realloc(self->subs, self->cap_subs * sizeof *self->subs);
    }
    self->subs[self->n_subs++] = self->sub_energy / S_SUB;
    self->sub_energy = 0;
    self->sub_fill = 0;
}

/*  K-weighted energy of `n` samples, cut into 100 ms steps. */
static void s_energy(transcode_loudness_t *self, const float *const *planes, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t take = S_SUB - self->sub_fill;
        if (take > n - i)
            take = n - i;
        if (self->channels == 2) {
            /* Both channels in one loop: two independent recursions the
               CPU can overlap (each alone is bound by its latency). */
            s_biquad_t s0 = self->shelf[0], h0 = self->high[0];
            s_biquad_t s1 = self->shelf[1], h1 = self->high[1];
            const float *x0 = planes[0] + i, *x1 = planes[1] + i;
            double e0 = 0, e1 = 0;
            for (size_t j = 0; j < take; j++) {
                double y0 = s_biquad(&h0, s_biquad(&s0, x0[j]));
                double y1 = s_biquad(&h1, s_biquad(&s1, x1[j]));
                e0 += y0 * y0;
                e1 += y1 * y1;
            }
            self->shelf[0] = s0;
            self->high[0] = h0;
            self->shelf[1] = s1;
            self->high[1] = h1;
            self->sub_energy += e0 + e1;
        } else {
            s_biquad_t shelf = self->shelf[0], high = self->high[0];
            double e = 0;
            const float *x = planes[0] + i;
            for (size_t j = 0; j < take; j++) {
                double y = s_biquad(&high, s_biquad(&shelf, x[j]));
                e += y * y;
            }
            self->shelf[0] = shelf;
            self->high[0] = high;
            self->sub_energy += e;
        }
        self->sub_fill += take;
        i += take;
        if (self->sub_fill == S_SUB)
            s_push_sub(self);
    }
}

/*  The largest |y| of the interpolated points between x[m] and x[m+1]
    for the `S_TP_CHUNK` positions m = first .. first + S_TP_CHUNK - 1 (all
    three fractional phases), or `best` when none is larger. Each output
    sums its taps in the same order as a plain loop would; the loops run
    over the positions so the compiler can vectorise them. */
#define S_TP_CHUNK 32

/*  max written so that the compiler can vectorise it (maxps); fmaxf's NaN
    rules keep loops scalar. */
static inline float s_maxf(float a, float b)
{
    return a > b ? a : b;
}
static double s_peak_chunk(const transcode_loudness_t *self, const float *x, size_t first,
                           double best)
{
    const float *w = x + first - S_HALF + 1;
    for (int p = 1; p < S_PHASES; p++) {
        float y[S_TP_CHUNK] = {0};
        for (int k = 0; k < S_TAPS; k++) {
            float c = self->coef[p][k];
            for (int j = 0; j < S_TP_CHUNK; j++)
                y[j] += c * w[k + j];
        }
        float top = 0;
        for (int j = 0; j < S_TP_CHUNK; j++)
            top = s_maxf(fabsf(y[j]), top);
        if (top > best)
            best = top;
    }
    return best;
}

/*  True peak of one channel's block at history[c][0 .. history_len + n). */
static void s_peak_block(transcode_loudness_t *self, int c, size_t n)
{
    float *x = self->history[c];
    size_t len = self->history_len + n;
    float peak = 0;
    for (size_t i = self->history_len; i < len; i++)
        peak = s_maxf(fabsf(x[i]), peak);
    if (peak > self->sample_peak)
        self->sample_peak = peak;
    /* Points between x[m] and x[m+1] need x[m - S_HALF + 1 .. m + S_HALF].
       A run of positions whose inputs are all small cannot beat the peak
       so far (|y| <= max |x| * gain_bound): only the runs near a loud
       sample are oversampled, so true peak costs little on most audio. */
    double best = self->true_peak;
    size_t m = S_HALF - 1;
    while (m + S_HALF < len) {
        size_t last = m + S_TP_CHUNK - 1; /* of the chunk's positions */
        if (last + S_HALF >= len) {
            /* Fewer than a chunk left: one plain pass over what is whole. */
            const float *w0 = x + m - S_HALF + 1;
            for (; m + S_HALF < len; m++, w0++) {
                float in_max = 0;
                for (int k = 0; k < S_TAPS; k++)
                    in_max = s_maxf(fabsf(w0[k]), in_max);
                if (in_max * self->gain_bound <= best)
                    continue;
                for (int p = 1; p < S_PHASES; p++) {
                    float y = 0;
                    for (int k = 0; k < S_TAPS; k++)
                        y += self->coef[p][k] * w0[k];
                    if (fabsf(y) > best)
                        best = fabsf(y);
                }
            }
            break;
        }
        float in_max = 0;
        for (size_t i = m - S_HALF + 1; i <= last + S_HALF; i++)
            in_max = s_maxf(fabsf(x[i]), in_max);
        if (in_max * self->gain_bound > best)
            best = s_peak_chunk(self, x, m, best);
        m += S_TP_CHUNK;
    }
    self->true_peak = best;
    if (peak > self->true_peak)
        self->true_peak = peak;
    /* Keep the last samples for the next block's first points. */
    size_t keep = len < S_HISTORY ? len : S_HISTORY;
    memmove(x, x + len - keep, keep * sizeof *x);
}

static void s_true_peak(transcode_loudness_t *self, const float *const *planes, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t take = n - i < S_TP_BLOCK ? n - i : S_TP_BLOCK;
        size_t kept = 0;
        for (int c = 0; c < self->channels; c++) {
            memcpy(self->history[c] + self->history_len, planes[c] + i, take * sizeof(float));
            size_t len = self->history_len + take;
            s_peak_block(self, c, take);
            kept = len < S_HISTORY ? len : S_HISTORY;
        }
        self->history_len = kept;
        i += take;
    }
}

void transcode_loudness_add(transcode_loudness_t *self, const float *const *planes, size_t n)
{
    s_energy(self, planes, n);
    s_true_peak(self, planes, n);
}

static double s_lufs(double mean_square)
{
    return -0.691 + 10.0 * log10(mean_square);
}

static int s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/*  Mean square of the `width` steps ending at step `end` (exclusive). */
static double s_block(const transcode_loudness_t *self, size_t end, size_t width)
{
    double sum = 0;
    for (size_t i = end - width; i < end; i++)
        sum += self->subs[i];
    return sum / (double)width;
}

static double s_integrated(const transcode_loudness_t *self)
{
    const double abs_gate = pow(10.0, (-70.0 + 0.691) / 10.0);
    double sum = 0;
    size_t n = 0;
    for (size_t end = S_MOMENTARY; end <= self->n_subs; end++) {
        double z = s_block(self, end, S_MOMENTARY);
        if (z > abs_gate) {
            sum += z;
            n++;
        }
    }
    if (n == 0)
        return TRANSCODE_LOUDNESS_FLOOR;
    double rel_gate = sum / (double)n * pow(10.0, -10.0 / 10.0);
    double gated = 0;
    size_t m = 0;
    for (size_t end = S_MOMENTARY; end <= self->n_subs; end++) {
        double z = s_block(self, end, S_MOMENTARY);
        if (z > abs_gate && z > rel_gate) {
            gated += z;
            m++;
        }
    }
    double lufs = s_lufs(gated / (double)m);
    return lufs < TRANSCODE_LOUDNESS_FLOOR ? TRANSCODE_LOUDNESS_FLOOR : lufs;
}

/*  EBU Tech 3342: percentiles of the short-term loudness that passes the
    gates. Percentiles by nearest rank over the sorted values. */
static double s_range(const transcode_loudness_t *self)
{
    if (self->n_subs < S_SHORT_TERM)
        return 0;
    const double abs_gate = pow(10.0, (-70.0 + 0.691) / 10.0);
    size_t count = self->n_subs - S_SHORT_TERM + 1;
    double *z = mb_malloc(count * sizeof *z);
    size_t n = 0;
    double sum = 0;
    for (size_t end = S_SHORT_TERM; end <= self->n_subs; end++) {
        double v = s_block(self, end, S_SHORT_TERM);
        if (v > abs_gate) {
            z[n++] = v;
            sum += v;
        }
    }
    double range = 0;
    if (n >= 2) {
        double rel_gate = sum / (double)n * pow(10.0, -20.0 / 10.0);
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (z[i] > rel_gate)
                z[m++] = s_lufs(z[i]);
        if (m >= 2) {
            qsort(z, m, sizeof *z, s_cmp_double);
            size_t lo = (size_t)llround(0.10 * (double)(m - 1));
            size_t hi = (size_t)llround(0.95 * (double)(m - 1));
            range = z[hi] - z[lo];
        }
    }
    free(z);
    return range;
}

static double s_db(double linear)
{
    if (linear <= 0)
        return TRANSCODE_PEAK_FLOOR;
    double db = 20.0 * log10(linear);
    return db < TRANSCODE_PEAK_FLOOR ? TRANSCODE_PEAK_FLOOR : db;
}

void transcode_loudness_result(transcode_loudness_t *self, transcode_loudness_result_t *result)
{
    result->integrated_lufs = s_integrated(self);
    result->range_lu = s_range(self);
    result->true_peak_dbtp = s_db(self->true_peak);
    result->sample_peak_dbfs = s_db(self->sample_peak);
}

double transcode_loudness_gain(const transcode_loudness_result_t *result, double target_lufs,
                               double ceiling_dbtp)
{
    double to_target = target_lufs - result->integrated_lufs;
    double to_ceiling = ceiling_dbtp - result->true_peak_dbtp;
    return to_target < to_ceiling ? to_target : to_ceiling;
}
