/*  transcode_probe — is this file an audio master we can use?

    Opens a file with libavformat restricted to the formats masters come
    in and to local files (no network, no playlists pointing elsewhere),
    finds its audio stream, decodes the first frames to prove the audio
    decodes, and checks the end is there: a file whose header announces
    more audio than the file holds is refused as truncated.

    Accepted containers: FLAC, WAV (RIFF/RF64/W64), AIFF, MP3, MP4/M4A
    (AAC, ALAC), ADTS AAC, Ogg (Vorbis, Opus, FLAC) and raw Opus in Ogg.
    A file with a video stream (other than embedded cover art) is not a
    master. */
#ifndef TRANSCODE_PROBE_H
#define TRANSCODE_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>

#define TRANSCODE_MAX_DURATION_MS 86400000LL /* 24 h: longer is refused */
#define TRANSCODE_FORMATS "flac,wav,w64,aiff,mp3,mov,mp4,m4a,aac,ogg"

typedef struct {
    char format[16]; /* "flac", "wav", "aiff", "mp3", "mp4", "aac", "ogg" */
    char codec[32];  /* libavcodec's name: "flac", "pcm_s24le", "mp3", "opus"... */
    int sample_rate; /* Hz */
    int channels;
    int bits; /* bits per sample of PCM-like codecs; 0 for lossy ones */
    int64_t duration_ms;
    bool lossless;  /* a lossless codec with integer samples FLAC can hold */
    bool has_cover; /* an embedded picture (cover art) is present */
} transcode_probe_t;

/*  Probes the file at `path` into *info. Returns 0; MB_EPROTO when it is
    not usable audio, with `why` an English reason fit for a 422 answer
    ("not an audio file this service takes", "no audio frame decodes:
    Invalid data found...", "truncated: ..."); MB_ENOTFOUND when there is
    no such file; MB_EIO when it cannot be read. */
int transcode_probe(const char *path, transcode_probe_t *info, char *why, size_t why_len);

/*  Opens `path` for demuxing as transcode_probe() does (formats above,
    file protocol only). Returns 0 with *fmt (close with
    avformat_close_input), or a negative AVERROR. */
int transcode_open_input(const char *path, AVFormatContext **fmt);

/*  The packed sample format a FLAC rung encodes `dec`'s audio in, when
    the codec is lossless and its samples are integers of at most 24 bits
    (what libavcodec 59's FLAC encoder takes), with 1..8 channels; else
    AV_SAMPLE_FMT_NONE. `fmt` is the decoded sample format. */
enum AVSampleFormat transcode_lossless_format(const AVCodecContext *dec, enum AVSampleFormat fmt);

#endif
