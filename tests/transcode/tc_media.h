/*  tc_media — audio files for the transcode tests, written and read with
    FFmpeg's libraries (no ffmpeg command line needed), and a strict
    reader of the HLS playlists the actor writes. */
#ifndef TC_MEDIA_H
#define TC_MEDIA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *format; /* muxer: "flac", "wav", "aiff", "mp3", "ipod", "adts", "ogg", "opus" */
    const char *codec;  /* encoder: "flac", "pcm_s16le", "pcm_s24le", "libmp3lame", "aac",
                           "libvorbis", "libopus", "alac"... */
    int rate;
    int channels;
    double seconds;
    double amplitude; /* linear peak of the sine (0.1 = -20 dBFS) */
    double freq;      /* Hz; 997 when 0 */
    int bitrate;      /* lossy codecs; 0 for the encoder's default */
    bool noise;       /* add white noise at amplitude/4 (something for AAC to spend bits on) */
    const char *const *tags; /* key, value, key, value..., NULL: the file's metadata */
    const char *cover;       /* a JPEG file to embed as the attached picture, or NULL */
} tc_gen_t;

/*  Writes a w x h JPEG (a gradient) to `path`. Returns 0 or an AVERROR. */
int tc_jpeg(const char *path, int w, int h);

/*  Writes a sine (one per channel, same phase) to `path`. Returns 0, or a
    negative AVERROR. */
int tc_generate(const char *path, const tc_gen_t *gen);

typedef struct {
    int64_t samples; /* per channel */
    int rate;
    int channels;
    char codec[32];
    unsigned char hash[32]; /* BLAKE2b of the samples as interleaved s32 (integer codecs) */
    double peak;            /* largest absolute sample, full scale 1.0 */
} tc_decoded_t;

/*  Decodes the whole file. Returns 0, or a negative AVERROR. */
int tc_decode(const char *path, tc_decoded_t *out);

/*  Concatenates a rung's init.mp4 and its segments (in playlist order)
    into one file `out`. Returns 0 or -1. */
int tc_concat_rung(const char *rung_dir, const char *out);

/*  The first edit list entry's media_time in init.mp4 (moov/trak/edts/elst),
    in the track's timescale; 0 when there is none; -1 when unreadable. */
int64_t tc_elst_media_time(const char *init_path);

/* ---- playlists ------------------------------------------------------------ */

#define TC_SEGMENTS_MAX 4096
#define TC_VARIANTS_MAX 16

typedef struct {
    int version;
    int target;
    bool vod, independent, endlist;
    char map[64];
    size_t n;
    double extinf[TC_SEGMENTS_MAX];
    char uri[TC_SEGMENTS_MAX][32];
} tc_media_playlist_t;

typedef struct {
    bool independent;
    size_t n;
    uint64_t bandwidth[TC_VARIANTS_MAX];
    uint64_t average[TC_VARIANTS_MAX];
    char codecs[TC_VARIANTS_MAX][32];
    char uri[TC_VARIANTS_MAX][64];
} tc_master_playlist_t;

/*  Parses strictly: every line must be a tag this actor writes, a URI
    after EXTINF/STREAM-INF, and nothing else; attributes are checked for
    form. Returns 0, or -1 with `why` saying which line broke what. */
int tc_parse_media(const char *path, tc_media_playlist_t *pl, char *why, size_t why_len);
int tc_parse_master(const char *path, tc_master_playlist_t *pl, char *why, size_t why_len);

/* ---- files ------------------------------------------------------------------ */

/*  mkdtemp under /tmp; returns a static buffer per call site's copy. */
void tc_tmpdir(char out[64], const char *name);
void tc_rm_rf(const char *path);
bool tc_exists(const char *path);
long long tc_file_size(const char *path);

#endif
