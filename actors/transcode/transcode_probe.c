/*  transcode_probe — checks a file is a usable audio master. */
#include "transcode_probe.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <libavutil/opt.h>

#include "mb_error.h"

#define S_PROBE_FRAMES 8     /* frames decoded to prove the audio decodes */
#define S_TAIL_S 3.0         /* seconds before the announced end read back */
#define S_TRUNCATED_S 1.0    /* the file ending this much early is truncated */
#define S_TAIL_PACKETS 10000 /* packets read at most while checking the tail */

static void s_why(char *why, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_why(char *why, size_t len, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(why, len, fmt, args);
    va_end(args);
}

int transcode_open_input(const char *path, AVFormatContext **fmt)
{
    *fmt = NULL;
    AVDictionary *opts = NULL;
    /* Masters come from uploads: never let a crafted file make
       libavformat open URLs or other files (hls, concat...). */
    av_dict_set(&opts, "protocol_whitelist", "file", 0);
    av_dict_set(&opts, "format_whitelist", TRANSCODE_FORMATS, 0);
    int rc = avformat_open_input(fmt, path, NULL, &opts);
    av_dict_free(&opts);
    return rc;
}

enum AVSampleFormat transcode_lossless_format(const AVCodecContext *dec, enum AVSampleFormat fmt)
{
    const AVCodecDescriptor *d = avcodec_descriptor_get(dec->codec_id);
    if (!d || !(d->props & AV_CODEC_PROP_LOSSLESS))
        return AV_SAMPLE_FMT_NONE;
    if (dec->ch_layout.nb_channels < 1 || dec->ch_layout.nb_channels > 8 || dec->sample_rate <= 0 ||
        dec->sample_rate > 655350)
        return AV_SAMPLE_FMT_NONE;
    enum AVSampleFormat packed = av_get_packed_sample_fmt(fmt);
    if (packed == AV_SAMPLE_FMT_S16)
        return packed;
    if (packed == AV_SAMPLE_FMT_S32 && dec->bits_per_raw_sample > 16 &&
        dec->bits_per_raw_sample <= 24)
        return packed;
    return AV_SAMPLE_FMT_NONE;
}

/*  "mov,mp4,m4a,3gp,3g2,mj2" -> "mp4"; otherwise the first name. */
static void s_format_name(const AVInputFormat *f, char out[16])
{
    if (strncmp(f->name, "mov", 3) == 0) {
        snprintf(out, 16, "mp4");
        return;
    }
    size_t n = strcspn(f->name, ",");
    if (n > 15)
        n = 15;
    memcpy(out, f->name, n);
    out[n] = '\0';
}

/*  Decodes the first frames. Returns 0 once one decoded, else MB_EPROTO. */
static int s_decode_start(AVFormatContext *fmt, int stream, AVCodecContext *dec,
                          enum AVSampleFormat *format, char *why, size_t why_len)
{
    AVPacket *pkt = av_packet_alloc();
    AVFrame *frame = av_frame_alloc();
    int frames = 0, last_err = 0, rc;
    bool eof = false;
    while (frames < S_PROBE_FRAMES && !eof) {
        rc = av_read_frame(fmt, pkt);
        if (rc < 0) {
            eof = true;
            if (rc != AVERROR_EOF)
                last_err = rc;
            avcodec_send_packet(dec, NULL);
        } else if (pkt->stream_index != stream) {
            av_packet_unref(pkt);
            continue;
        } else {
            rc = avcodec_send_packet(dec, pkt);
            av_packet_unref(pkt);
            if (rc < 0 && rc != AVERROR(EAGAIN)) {
                last_err = rc;
                continue;
            }
        }
        while ((rc = avcodec_receive_frame(dec, frame)) == 0) {
            if (frame->nb_samples > 0) {
                if (frames == 0)
                    *format = frame->format;
                frames++;
            }
            av_frame_unref(frame);
        }
        if (rc != AVERROR(EAGAIN) && rc != AVERROR_EOF)
            last_err = rc;
    }
    av_packet_free(&pkt);
    av_frame_free(&frame);
    if (frames > 0)
        return 0;
    char err[AV_ERROR_MAX_STRING_SIZE] = "the file holds no audio frames";
    if (last_err)
        av_make_error_string(err, sizeof err, last_err);
    s_why(why, why_len, "no audio frame decodes: %s", err);
    return MB_EPROTO;
}

static uint32_t s_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t s_be32(const unsigned char *p)
{
    return (uint32_t)p[3] | (uint32_t)p[2] << 8 | (uint32_t)p[1] << 16 | (uint32_t)p[0] << 24;
}

/*  WAV and AIFF: libavformat quietly plays what is there when the sample
    data chunk is shorter than its header says, so walk the chunks of the
    file's start and compare the data chunk's declared size with the
    file. Returns 0, or MB_EPROTO for a cut file. */
static int s_check_chunks(const char *path, const char *format, char *why, size_t why_len)
{
    bool riff = strcmp(format, "wav") == 0, aiff = strcmp(format, "aiff") == 0;
    if (!riff && !aiff)
        return 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    unsigned char buf[65536];
    size_t len = fread(buf, 1, sizeof buf, f);
    fseek(f, 0, SEEK_END);
    long file_size = ftell(f);
    fclose(f);
    if (len < 12 || file_size <= 0)
        return 0;
    /* RF64 and W64 keep their sizes elsewhere: not checked. */
    if (riff && memcmp(buf, "RIFF", 4) != 0)
        return 0;
    const char *data_id = riff ? "data" : "SSND";
    size_t at = 12;
    while (at + 8 <= len) {
        uint32_t size = riff ? s_le32(buf + at + 4) : s_be32(buf + at + 4);
        if (memcmp(buf + at, data_id, 4) == 0) {
            /* 0 and 0xffffffff mean "unknown": written by a streaming encoder. */
            uint64_t end = (uint64_t)at + 8 + size;
            if (size != 0 && size != 0xffffffffu && end > (uint64_t)file_size) {
                s_why(why, why_len,
                      "truncated: its %s chunk announces %u bytes but the file holds %lld", data_id,
                      size, (long long)((uint64_t)file_size - at - 8));
                return MB_EPROTO;
            }
            return 0;
        }
        at += 8 + (uint64_t)size + (size & 1);
    }
    return 0;
}

/*  When the header announces a length, reads the packets of the last
    seconds: a file cut short ends well before it. */
static int s_check_tail(AVFormatContext *fmt, int stream, char *why, size_t why_len)
{
    AVStream *st = fmt->streams[stream];
    if (st->duration <= 0 || st->duration == AV_NOPTS_VALUE ||
        fmt->duration_estimation_method == AVFMT_DURATION_FROM_BITRATE)
        return 0;
    double declared = (double)st->duration * av_q2d(st->time_base);
    int64_t start = st->start_time != AV_NOPTS_VALUE ? st->start_time : 0;
    int64_t target = start + st->duration - (int64_t)(S_TAIL_S / av_q2d(st->time_base));
    if (target < start)
        return 0; /* short: the start frames already covered it */
    double end = -1;
    if (av_seek_frame(fmt, stream, target, AVSEEK_FLAG_BACKWARD) >= 0) {
        AVPacket *pkt = av_packet_alloc();
        for (int n = 0; n < S_TAIL_PACKETS && av_read_frame(fmt, pkt) >= 0; n++) {
            if (pkt->stream_index == stream && pkt->pts != AV_NOPTS_VALUE) {
                double e = (double)(pkt->pts - start + pkt->duration) * av_q2d(st->time_base);
                if (e > end)
                    end = e;
            }
            av_packet_unref(pkt);
        }
        av_packet_free(&pkt);
    }
    if (end < 0) {
        s_why(why, why_len, "truncated: nothing can be read near the end it announces (%.1f s)",
              declared);
        return MB_EPROTO;
    }
    if (end + S_TRUNCATED_S < declared) {
        s_why(why, why_len, "truncated: the audio ends at %.1f s of the %.1f s it announces", end,
              declared);
        return MB_EPROTO;
    }
    return 0;
}

int transcode_probe(const char *path, transcode_probe_t *info, char *why, size_t why_len)
{
    memset(info, 0, sizeof *info);
    why[0] = '\0';
    struct stat st;
    if (stat(path, &st) != 0) {
        s_why(why, why_len, "cannot read the master: %s", strerror(errno));
        return errno == ENOENT ? MB_ENOTFOUND : MB_EIO;
    }
    if (st.st_size == 0) {
        s_why(why, why_len, "the file is empty");
        return MB_EPROTO;
    }
    char err[AV_ERROR_MAX_STRING_SIZE];
    AVFormatContext *fmt = NULL;
    AVCodecContext *dec = NULL;
    int rc = transcode_open_input(path, &fmt);
    if (rc < 0) {
        if (rc == AVERROR(EACCES) || rc == AVERROR(EIO)) {
            s_why(why, why_len, "cannot read the master: %s",
                  av_make_error_string(err, sizeof err, rc));
            return MB_EIO;
        }
        s_why(why, why_len,
              "not an audio file this service takes (FLAC, WAV, AIFF, MP3, "
              "AAC/M4A, Ogg Vorbis, Opus): %s",
              av_make_error_string(err, sizeof err, rc));
        return MB_EPROTO;
    }
    rc = avformat_find_stream_info(fmt, NULL);
    if (rc < 0) {
        s_why(why, why_len, "cannot read its streams: %s",
              av_make_error_string(err, sizeof err, rc));
        rc = MB_EPROTO;
        goto done;
    }
    for (unsigned i = 0; i < fmt->nb_streams; i++) {
        const AVStream *s = fmt->streams[i];
        if (s->codecpar->codec_type != AVMEDIA_TYPE_VIDEO)
            continue;
        if (s->disposition & AV_DISPOSITION_ATTACHED_PIC)
            info->has_cover = true;
        else {
            s_why(why, why_len, "a video file is not an audio master");
            rc = MB_EPROTO;
            goto done;
        }
    }
    const AVCodec *codec = NULL;
    int stream = av_find_best_stream(fmt, AVMEDIA_TYPE_AUDIO, -1, -1, &codec, 0);
    if (stream < 0 || !codec) {
        s_why(why, why_len,
              stream == AVERROR_DECODER_NOT_FOUND
                  ? "its audio is in a codec this service cannot decode"
                  : "the file has no audio stream");
        rc = MB_EPROTO;
        goto done;
    }
    dec = avcodec_alloc_context3(codec);
    avcodec_parameters_to_context(dec, fmt->streams[stream]->codecpar);
    dec->pkt_timebase = fmt->streams[stream]->time_base;
    if ((rc = avcodec_open2(dec, codec, NULL)) < 0) {
        s_why(why, why_len, "its %s audio cannot be decoded: %s", codec->name,
              av_make_error_string(err, sizeof err, rc));
        rc = MB_EPROTO;
        goto done;
    }
    for (unsigned i = 0; i < fmt->nb_streams; i++)
        if ((int)i != stream)
            fmt->streams[i]->discard = AVDISCARD_ALL;
    enum AVSampleFormat format = dec->sample_fmt;
    if ((rc = s_decode_start(fmt, stream, dec, &format, why, why_len)) != 0)
        goto done;
    if (dec->sample_rate <= 0 || dec->ch_layout.nb_channels <= 0) {
        s_why(why, why_len, "its audio has no sample rate or channels");
        rc = MB_EPROTO;
        goto done;
    }
    s_format_name(fmt->iformat, info->format);
    snprintf(info->codec, sizeof info->codec, "%s", avcodec_get_name(dec->codec_id));
    info->sample_rate = dec->sample_rate;
    info->channels = dec->ch_layout.nb_channels;
    info->lossless = transcode_lossless_format(dec, format) != AV_SAMPLE_FMT_NONE;
    if (info->lossless)
        info->bits = dec->bits_per_raw_sample > 0 ? dec->bits_per_raw_sample
                                                  : av_get_bytes_per_sample(format) * 8;
    const AVStream *as = fmt->streams[stream];
    if (as->duration > 0 && as->duration != AV_NOPTS_VALUE)
        info->duration_ms = av_rescale_q(as->duration, as->time_base, (AVRational){1, 1000});
    else if (fmt->duration > 0)
        info->duration_ms = fmt->duration / (AV_TIME_BASE / 1000);
    if (info->duration_ms > TRANSCODE_MAX_DURATION_MS) {
        s_why(why, why_len, "longer than 24 hours");
        rc = MB_EPROTO;
        goto done;
    }
    rc = s_check_chunks(path, info->format, why, why_len);
    if (rc == 0)
        rc = s_check_tail(fmt, stream, why, why_len);
done:
    avcodec_free_context(&dec);
    avformat_close_input(&fmt);
    return rc;
}
