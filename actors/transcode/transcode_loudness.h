/*  transcode_loudness — loudness of a track per ITU-R BS.1770-4 and EBU
    R128 / Tech 3342, measured on 48 kHz float audio in one pass.

      integrated  K-weighted mean square over 400 ms blocks (75 % overlap),
                  gated at -70 LUFS absolute and -10 LU relative
      range (LRA) 3 s short-term blocks every 100 ms, gated at -70 LUFS
                  and -20 LU relative; the 95th minus the 10th percentile
      true peak   4x oversampled (12-tap windowed-sinc per phase), the
                  largest absolute value over every channel, in dBTP

    Why not libavfilter's ebur128: its true-peak path resamples the whole
    stream to 192 kHz through libswresample, about 1.1 s of CPU per
    3-minute track here, a sizeable part of the ladder's budget. This
    meter oversamples with its own polyphase FIR and skips every run of 32
    points whose input samples cannot beat the peak found so far (their
    largest magnitude times the filter's gain bound): the result is the
    same as oversampling everything, at a fraction of the cost once a
    loud passage was seen. The tests compare it with ebur128 on the same
    audio, and with every point computed.

    One meter belongs to one thread. */
#ifndef TRANSCODE_LOUDNESS_H
#define TRANSCODE_LOUDNESS_H

#include <stddef.h>

#define TRANSCODE_LOUDNESS_RATE 48000  /* the only sample rate measured */
#define TRANSCODE_LOUDNESS_FLOOR -70.0 /* LUFS reported for silence (the absolute gate) */
#define TRANSCODE_PEAK_FLOOR -120.0    /* dBTP reported for digital silence */

typedef struct transcode_loudness transcode_loudness_t;

typedef struct {
    double integrated_lufs; /* TRANSCODE_LOUDNESS_FLOOR when every block is gated out */
    double range_lu;        /* 0 when fewer than two short-term blocks pass the gates */
    double true_peak_dbtp;  /* TRANSCODE_PEAK_FLOOR for digital silence */
    double sample_peak_dbfs;
} transcode_loudness_result_t;

/*  Makes a meter for `channels` (1 or 2, each weighted 1.0) at 48 kHz.
    Returns NULL for another channel count. */
transcode_loudness_t *transcode_loudness_new(int channels);

/*  Frees the meter; nulls *self_p. Safe to call twice. */
void transcode_loudness_destroy(transcode_loudness_t **self_p);

/*  Measures `n` more samples given as one array per channel (planar
    float, full scale 1.0). */
void transcode_loudness_add(transcode_loudness_t *self, const float *const *planes, size_t n);

/*  The figures for everything added so far (the meter can go on). */
void transcode_loudness_result(transcode_loudness_t *self, transcode_loudness_result_t *result);

/*  The gain in dB a player applies to bring the track to `target_lufs`
    without its true peak going above `ceiling_dbtp`:
    min(target - integrated, ceiling - true_peak). */
double transcode_loudness_gain(const transcode_loudness_result_t *result, double target_lufs,
                               double ceiling_dbtp);

#endif
