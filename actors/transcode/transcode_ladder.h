/*  transcode_ladder — turns one audio master into an HLS ladder with
    FFmpeg's libraries, and measures its loudness, in one decoding pass.

    The master is decoded once and resampled once to 48 kHz stereo float;
    the same frames go to four AAC-LC encoders (64, 128, 192, 256 kbit/s),
    each on a thread of its own behind a bounded queue, and to the
    loudness meter. When the master is lossless a fifth rung keeps its
    audio bit for bit in FLAC: a FLAC master's frames are copied as they
    are (no decode, no encode); other lossless masters (WAV, AIFF, ALAC,
    ...) are encoded to FLAC at their own sample rate, channels and bit
    depth.

    Each rung is muxed by libavformat's mp4 muxer in fragmented mode
    (one moof+mdat per segment, flushed by hand) and cut into segments of
    about TRANSCODE_SEGMENT_S seconds: a segment starts at the first
    packet whose start is at or after the next multiple of 6 s, so the
    AAC rungs' segments line up exactly and the FLAC rung's within one of
    its frames. The AAC encoder's 1024 priming samples are marked by an
    edit list in init.mp4, so players start at the first real sample.

    What it writes into `out_dir`:

        master.m3u8          every rung
        master-free.m3u8     the rungs listeners on the free tier may use
                             (a64, a128)
        a64/ a128/ a192/ a256/ [flac/]
            index.m3u8       VOD media playlist (version 7, EXT-X-MAP,
                             EXT-X-INDEPENDENT-SEGMENTS, EXT-X-ENDLIST)
            init.mp4         ftyp + moov
            seg-00001.m4s    moof + mdat, ...

    Every reference in the playlists is relative. BANDWIDTH is the peak
    segment bit rate as RFC 8216bis defines it (the highest bit rate of
    any run of consecutive segments lasting 0.5 to 1.5 target durations;
    the whole rung when it is shorter), measured on the bytes written, moof
    included; AVERAGE-BANDWIDTH is all segment bits over the duration.

    Every file is fsynced before the call returns, so the caller can make
    the folder visible with one rename. */
#ifndef TRANSCODE_LADDER_H
#define TRANSCODE_LADDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transcode_loudness.h"

#define TRANSCODE_RUNGS_MAX 5
#define TRANSCODE_SEGMENT_S 6 /* seconds a segment aims at */
#define TRANSCODE_RATE 48000  /* sample rate of the AAC rungs */
#define TRANSCODE_TARGET_LUFS -14.0
#define TRANSCODE_CEILING_DBTP -1.0 /* true peak never pushed above this by the gain */

typedef struct {
    char name[8];    /* "a64", "a128", "a192", "a256", "flac": its folder */
    char codecs[16]; /* RFC 6381: "mp4a.40.2" or "fLaC" */
    int bitrate;     /* nominal bit/s; 0 for flac */
    bool free_tier;  /* listed in master-free.m3u8 */
    int sample_rate;
    int channels;
    unsigned segments;
    uint64_t bytes;             /* of every segment (init.mp4 not counted) */
    double duration_s;          /* sum of EXTINF */
    uint64_t bandwidth;         /* BANDWIDTH, bit/s */
    uint64_t average_bandwidth; /* AVERAGE-BANDWIDTH, bit/s */
} transcode_rung_t;

typedef struct {
    transcode_loudness_result_t loudness;
    double gain_db;      /* to TRANSCODE_TARGET_LUFS, true peak kept under the ceiling */
    int64_t duration_ms; /* of the decoded master */
    bool lossless;       /* a flac rung was made */
    bool flac_copied;    /* its frames were copied from a FLAC master */
    size_t n_rungs;
    transcode_rung_t rungs[TRANSCODE_RUNGS_MAX];
} transcode_ladder_result_t;

/*  Called by the decoding thread about once a second; a non-zero return
    stops the job (MB_EINTR). The job's lease is renewed here. */
typedef int(transcode_tick_fn)(void *arg);

typedef struct {
    const char *input;   /* the master's path */
    const char *out_dir; /* an existing, empty folder */
    bool lossless;       /* make the flac rung when the master is lossless */
    transcode_tick_fn *tick;
    void *tick_arg;
} transcode_ladder_opts_t;

/*  Makes the ladder. Returns 0 with *result filled; or, with `why` set to
    an English reason:
      MB_EPROTO   the master cannot be decoded (not audio, damaged,
                  truncated, changes format midway): retrying is useless;
      MB_EIO      writing failed (disk full...): worth retrying;
      MB_EINTR    `tick` asked to stop.
    What was written into `out_dir` is left for the caller to remove. */
int transcode_ladder_run(const transcode_ladder_opts_t *opts, transcode_ladder_result_t *result,
                         char *why, size_t why_len);

#endif
