/*  tc_media — see tc_media.h. */
#include "tc_media.h"

#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
#include <libswresample/swresample.h>

/* ---- writing --------------------------------------------------------------- */

static void s_fill(AVFrame *f, const tc_gen_t *g, int64_t start, uint32_t *rng)
{
    double freq = g->freq > 0 ? g->freq : 997.0;
    int channels = f->ch_layout.nb_channels;
    bool planar = av_sample_fmt_is_planar(f->format);
    enum AVSampleFormat packed = av_get_packed_sample_fmt(f->format);
    for (int i = 0; i < f->nb_samples; i++) {
        double t = (double)(start + i) / g->rate;
        double v = g->amplitude * sin(2 * M_PI * freq * t);
        for (int c = 0; c < channels; c++) {
            double x = v;
            if (g->noise) {
                *rng = *rng * 1664525u + 1013904223u;
                x += g->amplitude / 4 * ((double)(*rng >> 8) / (1 << 24) * 2 - 1);
            }
            size_t at = planar ? (size_t)i : (size_t)i * channels + c;
            uint8_t *base = f->extended_data[planar ? c : 0];
            switch (packed) {
            case AV_SAMPLE_FMT_S16:
                ((int16_t *)base)[at] = (int16_t)lrint(x * 32767.0);
                break;
            case AV_SAMPLE_FMT_S32:
                /* 24-bit values in the top bits, as the PCM and FLAC decoders give them */
                ((int32_t *)base)[at] = (int32_t)lrint(x * 8388607.0) * 256;
                break;
            case AV_SAMPLE_FMT_FLT:
                ((float *)base)[at] = (float)x;
                break;
            case AV_SAMPLE_FMT_DBL:
                ((double *)base)[at] = x;
                break;
            default:
                break;
            }
        }
    }
}

static int s_write_packets(AVCodecContext *enc, AVFormatContext *oc, AVStream *st, AVFrame *f)
{
    int rc = avcodec_send_frame(enc, f);
    if (rc < 0)
        return rc;
    AVPacket *pkt = av_packet_alloc();
    while ((rc = avcodec_receive_packet(enc, pkt)) == 0) {
        av_packet_rescale_ts(pkt, enc->time_base, st->time_base);
        pkt->stream_index = st->index;
        rc = av_interleaved_write_frame(oc, pkt);
        if (rc < 0)
            break;
    }
    av_packet_free(&pkt);
    return rc == AVERROR(EAGAIN) || rc == AVERROR_EOF ? 0 : rc;
}

int tc_generate(const char *path, const tc_gen_t *g)
{
    const AVCodec *codec = avcodec_find_encoder_by_name(g->codec);
    if (!codec)
        return AVERROR_ENCODER_NOT_FOUND;
    AVFormatContext *oc = NULL;
    int rc = avformat_alloc_output_context2(&oc, NULL, g->format, path);
    if (rc < 0)
        return rc;
    AVCodecContext *enc = avcodec_alloc_context3(codec);
    enc->sample_fmt = codec->sample_fmts ? codec->sample_fmts[0] : AV_SAMPLE_FMT_S16;
    if (strstr(g->codec, "24") || strcmp(g->codec, "alac") == 0)
        for (const enum AVSampleFormat *f = codec->sample_fmts; f && *f != AV_SAMPLE_FMT_NONE; f++)
            if (av_get_packed_sample_fmt(*f) == AV_SAMPLE_FMT_S32 && strstr(g->codec, "24")) {
                enc->sample_fmt = *f;
                enc->bits_per_raw_sample = 24;
            }
    enc->sample_rate = g->rate;
    av_channel_layout_default(&enc->ch_layout, g->channels);
    if (g->bitrate)
        enc->bit_rate = g->bitrate;
    enc->time_base = (AVRational){1, g->rate};
    enc->strict_std_compliance = FF_COMPLIANCE_EXPERIMENTAL;
    if (oc->oformat->flags & AVFMT_GLOBALHEADER)
        enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    AVStream *st = avformat_new_stream(oc, NULL);
    AVPacket *pic_pkt = NULL;
    if ((rc = avcodec_open2(enc, codec, NULL)) < 0 ||
        (rc = avcodec_parameters_from_context(st->codecpar, enc)) < 0)
        goto done;
    st->time_base = enc->time_base;
    for (const char *const *t = g->tags; t && t[0] && t[1]; t += 2)
        av_dict_set(&oc->metadata, t[0], t[1], 0);
    AVStream *pic = NULL;
    if (g->cover) {
        FILE *f = fopen(g->cover, "rb");
        if (!f) {
            rc = AVERROR(ENOENT);
            goto done;
        }
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        rewind(f);
        pic_pkt = av_packet_alloc();
        av_new_packet(pic_pkt, (int)size);
        if (fread(pic_pkt->data, 1, (size_t)size, f) != (size_t)size)
            rc = AVERROR(EIO);
        fclose(f);
        pic = avformat_new_stream(oc, NULL);
        pic->disposition = AV_DISPOSITION_ATTACHED_PIC;
        pic->codecpar->codec_type = AVMEDIA_TYPE_VIDEO;
        pic->codecpar->codec_id = AV_CODEC_ID_MJPEG;
        pic->codecpar->width = 200;
        pic->codecpar->height = 200;
        pic->time_base = (AVRational){1, 90000};
        pic_pkt->stream_index = pic->index;
        pic_pkt->flags |= AV_PKT_FLAG_KEY;
    }
    if (rc < 0 || (rc = avio_open(&oc->pb, path, AVIO_FLAG_WRITE)) < 0)
        goto done;
    if ((rc = avformat_write_header(oc, NULL)) < 0)
        goto done;
    if (pic_pkt) {
        rc = av_interleaved_write_frame(oc, pic_pkt);
        av_packet_free(&pic_pkt);
        if (rc < 0)
            goto done;
    }
    int frame_size = enc->frame_size > 0 ? enc->frame_size : 1024;
    int64_t total = (int64_t)llround(g->seconds * g->rate), done_samples = 0;
    uint32_t rng = 12345;
    AVFrame *f = av_frame_alloc();
    while (rc >= 0 && done_samples < total) {
        int n = (int)(total - done_samples < frame_size ? total - done_samples : frame_size);
        if (n < frame_size && enc->frame_size > 0 &&
            !(codec->capabilities & AV_CODEC_CAP_SMALL_LAST_FRAME) &&
            !(codec->capabilities & AV_CODEC_CAP_VARIABLE_FRAME_SIZE))
            n = frame_size; /* pad the last frame with more sine */
        av_frame_unref(f);
        f->nb_samples = n;
        f->format = enc->sample_fmt;
        f->sample_rate = g->rate;
        av_channel_layout_copy(&f->ch_layout, &enc->ch_layout);
        if ((rc = av_frame_get_buffer(f, 0)) < 0)
            break;
        s_fill(f, g, done_samples, &rng);
        f->pts = done_samples;
        done_samples += n;
        rc = s_write_packets(enc, oc, st, f);
    }
    av_frame_free(&f);
    if (rc >= 0)
        rc = s_write_packets(enc, oc, st, NULL);
    if (rc >= 0)
        rc = av_write_trailer(oc);
done:
    av_packet_free(&pic_pkt);
    avcodec_free_context(&enc);
    if (oc->pb)
        avio_closep(&oc->pb);
    avformat_free_context(oc);
    return rc < 0 ? rc : 0;
}

int tc_jpeg(const char *path, int w, int h)
{
    const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_MJPEG);
    if (!codec)
        return AVERROR_ENCODER_NOT_FOUND;
    AVCodecContext *enc = avcodec_alloc_context3(codec);
    enc->width = w;
    enc->height = h;
    enc->pix_fmt = AV_PIX_FMT_YUVJ420P;
    enc->time_base = (AVRational){1, 1};
    AVFrame *f = av_frame_alloc();
    AVPacket *pkt = av_packet_alloc();
    f->width = w;
    f->height = h;
    f->format = enc->pix_fmt;
    int rc = avcodec_open2(enc, codec, NULL);
    if (rc >= 0)
        rc = av_frame_get_buffer(f, 0);
    if (rc >= 0) {
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                f->data[0][y * f->linesize[0] + x] = (uint8_t)((x + y) * 255 / (w + h));
        for (int y = 0; y < h / 2; y++) {
            memset(f->data[1] + y * f->linesize[1], 90, (size_t)w / 2);
            memset(f->data[2] + y * f->linesize[2], 200, (size_t)w / 2);
        }
        f->pts = 0;
        rc = avcodec_send_frame(enc, f);
    }
    if (rc >= 0)
        rc = avcodec_send_frame(enc, NULL);
    if (rc >= 0)
        rc = avcodec_receive_packet(enc, pkt);
    if (rc >= 0) {
        FILE *out = fopen(path, "wb");
        if (!out || fwrite(pkt->data, 1, (size_t)pkt->size, out) != (size_t)pkt->size)
            rc = AVERROR(EIO);
        if (out)
            fclose(out);
    }
    av_packet_free(&pkt);
    av_frame_free(&f);
    avcodec_free_context(&enc);
    return rc < 0 ? rc : 0;
}

/* ---- reading ------------------------------------------------------------------- */

int tc_decode(const char *path, tc_decoded_t *out)
{
    memset(out, 0, sizeof *out);
    AVFormatContext *fmt = NULL;
    int rc = avformat_open_input(&fmt, path, NULL, NULL);
    if (rc < 0)
        return rc;
    AVCodecContext *dec = NULL;
    SwrContext *swr = NULL;
    const AVCodec *codec = NULL;
    if ((rc = avformat_find_stream_info(fmt, NULL)) < 0)
        goto done;
    int stream = av_find_best_stream(fmt, AVMEDIA_TYPE_AUDIO, -1, -1, &codec, 0);
    if (stream < 0) {
        rc = stream;
        goto done;
    }
    dec = avcodec_alloc_context3(codec);
    avcodec_parameters_to_context(dec, fmt->streams[stream]->codecpar);
    if ((rc = avcodec_open2(dec, codec, NULL)) < 0)
        goto done;
    snprintf(out->codec, sizeof out->codec, "%s", avcodec_get_name(dec->codec_id));
    crypto_generichash_state hs;
    crypto_generichash_init(&hs, NULL, 0, sizeof out->hash);
    AVPacket *pkt = av_packet_alloc();
    AVFrame *frame = av_frame_alloc();
    int32_t *buf = NULL;
    int cap = 0;
    bool eof = false;
    while (rc >= 0) {
        if (!eof) {
            int r = av_read_frame(fmt, pkt);
            if (r < 0) {
                eof = true;
                avcodec_send_packet(dec, NULL);
            } else {
                if (pkt->stream_index == stream)
                    avcodec_send_packet(dec, pkt);
                av_packet_unref(pkt);
            }
        }
        int r;
        while ((r = avcodec_receive_frame(dec, frame)) == 0) {
            if (!swr) {
                out->rate = frame->sample_rate;
                out->channels = frame->ch_layout.nb_channels;
                swr_alloc_set_opts2(&swr, &frame->ch_layout, AV_SAMPLE_FMT_S32, frame->sample_rate,
                                    &frame->ch_layout, frame->format, frame->sample_rate, 0, NULL);
                swr_init(swr);
            }
            int n = frame->nb_samples;
            if (n * out->channels > cap) {
                cap = n * out->channels;
                buf = realloc(buf, (size_t)cap * sizeof *buf);
            }
            uint8_t *o[1] = {(uint8_t *)buf};
            int got = swr_convert(swr, o, n, (const uint8_t **)frame->extended_data, n);
            for (int i = 0; i < got * out->channels; i++) {
                double a = fabs((double)buf[i] / 2147483648.0);
                if (a > out->peak)
                    out->peak = a;
            }
            crypto_generichash_update(&hs, (const unsigned char *)buf,
                                      (size_t)got * out->channels * sizeof *buf);
            out->samples += got;
            av_frame_unref(frame);
        }
        if (r == AVERROR_EOF)
            break;
        if (r != AVERROR(EAGAIN)) {
            rc = r;
            break;
        }
    }
    crypto_generichash_final(&hs, out->hash, sizeof out->hash);
    free(buf);
    av_packet_free(&pkt);
    av_frame_free(&frame);
done:
    swr_free(&swr);
    avcodec_free_context(&dec);
    avformat_close_input(&fmt);
    return rc < 0 ? rc : 0;
}

static int s_append(FILE *out, const char *path)
{
    FILE *in = fopen(path, "rb");
    if (!in)
        return -1;
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    fclose(in);
    return 0;
}

int tc_concat_rung(const char *rung_dir, const char *out_path)
{
    char path[512], why[256];
    snprintf(path, sizeof path, "%s/index.m3u8", rung_dir);
    tc_media_playlist_t *pl = malloc(sizeof *pl);
    if (tc_parse_media(path, pl, why, sizeof why) != 0) {
        free(pl);
        return -1;
    }
    FILE *out = fopen(out_path, "wb");
    snprintf(path, sizeof path, "%s/%s", rung_dir, pl->map);
    int rc = out ? s_append(out, path) : -1;
    for (size_t i = 0; rc == 0 && i < pl->n; i++) {
        snprintf(path, sizeof path, "%s/%s", rung_dir, pl->uri[i]);
        rc = s_append(out, path);
    }
    if (out)
        fclose(out);
    free(pl);
    return rc;
}

static uint64_t s_be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/*  Finds the elst inside boxes [p, p + len), descending into moov, trak, edts. */
static int64_t s_find_elst(const unsigned char *p, size_t len)
{
    size_t at = 0;
    while (at + 8 <= len) {
        uint64_t size = s_be(p + at, 4);
        if (size < 8 || size > len - at)
            return -1;
        const unsigned char *type = p + at + 4;
        if (!memcmp(type, "moov", 4) || !memcmp(type, "trak", 4) || !memcmp(type, "edts", 4)) {
            int64_t r = s_find_elst(p + at + 8, size - 8);
            if (r != 0)
                return r;
        } else if (!memcmp(type, "elst", 4) && size >= 16) {
            const unsigned char *b = p + at + 8;
            int version = b[0];
            if (s_be(b + 4, 4) == 0)
                return 0;
            if (version == 1 && size >= 8 + 8 + 20)
                return (int64_t)s_be(b + 8 + 8, 8);
            if (size >= 8 + 8 + 12)
                return (int32_t)s_be(b + 8 + 4, 4);
            return -1;
        }
        at += size;
    }
    return 0;
}

int64_t tc_elst_media_time(const char *init_path)
{
    FILE *f = fopen(init_path, "rb");
    if (!f)
        return -1;
    unsigned char buf[65536];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return s_find_elst(buf, len);
}

/* ---- playlists --------------------------------------------------------------------- */

/*  Reads the file into lines; every line must end with \n. */
static char *s_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *data = malloc(1 << 20);
    *len = fread(data, 1, (1 << 20) - 1, f);
    data[*len] = '\0';
    fclose(f);
    return data;
}

#define S_FAIL(...)                                                                                \
    do {                                                                                           \
        snprintf(why, why_len, __VA_ARGS__);                                                       \
        free(data);                                                                                \
        return -1;                                                                                 \
    } while (0)

static bool s_uri_ok(const char *s)
{
    /* Relative, no scheme, no parent, no absolute path, no query. */
    return s[0] && s[0] != '/' && !strstr(s, "..") && !strchr(s, ':') && !strchr(s, '?') &&
           !strchr(s, ' ');
}

int tc_parse_media(const char *path, tc_media_playlist_t *pl, char *why, size_t why_len)
{
    memset(pl, 0, sizeof *pl);
    size_t len;
    char *data = s_slurp(path, &len);
    if (!data) {
        snprintf(why, why_len, "cannot read %s", path);
        return -1;
    }
    if (len == 0 || data[len - 1] != '\n')
        S_FAIL("%s: does not end with a newline", path);
    char *save = NULL;
    int line_no = 0;
    bool want_uri = false, seen_header = false;
    for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        line_no++;
        if (strchr(line, '\r'))
            S_FAIL("line %d: carriage return", line_no);
        if (!seen_header) {
            if (strcmp(line, "#EXTM3U") != 0)
                S_FAIL("line 1 must be #EXTM3U");
            seen_header = true;
            continue;
        }
        if (pl->endlist)
            S_FAIL("line %d: after EXT-X-ENDLIST", line_no);
        if (want_uri) {
            if (line[0] == '#' || !s_uri_ok(line) || strlen(line) >= sizeof pl->uri[0])
                S_FAIL("line %d: a relative segment URI must follow EXTINF", line_no);
            snprintf(pl->uri[pl->n++], sizeof pl->uri[0], "%s", line);
            want_uri = false;
            continue;
        }
        int n = 0;
        double d;
        char map[64];
        if (sscanf(line, "#EXT-X-VERSION:%d%n", &pl->version, &n) == 1 && !line[n])
            continue;
        if (sscanf(line, "#EXT-X-TARGETDURATION:%d%n", &pl->target, &n) == 1 && !line[n])
            continue;
        if (strcmp(line, "#EXT-X-PLAYLIST-TYPE:VOD") == 0) {
            pl->vod = true;
            continue;
        }
        if (strcmp(line, "#EXT-X-INDEPENDENT-SEGMENTS") == 0) {
            pl->independent = true;
            continue;
        }
        if (sscanf(line, "#EXT-X-MAP:URI=\"%63[^\"]\"%n", map, &n) == 1 && !line[n]) {
            if (!s_uri_ok(map) || pl->n > 0)
                S_FAIL("line %d: EXT-X-MAP must be relative and before the segments", line_no);
            snprintf(pl->map, sizeof pl->map, "%s", map);
            continue;
        }
        if (sscanf(line, "#EXTINF:%lf,%n", &d, &n) == 1 && !line[n]) {
            if (!(d > 0) || pl->n >= TC_SEGMENTS_MAX)
                S_FAIL("line %d: bad EXTINF", line_no);
            pl->extinf[pl->n] = d;
            want_uri = true;
            continue;
        }
        if (strcmp(line, "#EXT-X-ENDLIST") == 0) {
            pl->endlist = true;
            continue;
        }
        S_FAIL("line %d: unexpected '%s'", line_no, line);
    }
    if (want_uri)
        S_FAIL("EXTINF without a URI at the end");
    if (pl->version != 7 || pl->target <= 0 || !pl->vod || !pl->endlist || !pl->map[0] ||
        pl->n == 0)
        S_FAIL("%s: missing VERSION:7, TARGETDURATION, PLAYLIST-TYPE:VOD, MAP, segments or ENDLIST",
               path);
    for (size_t i = 0; i < pl->n; i++)
        if (lround(pl->extinf[i]) > pl->target)
            S_FAIL("segment %zu lasts %.3f s, over the target duration %d", i + 1, pl->extinf[i],
                   pl->target);
    free(data);
    return 0;
}

int tc_parse_master(const char *path, tc_master_playlist_t *pl, char *why, size_t why_len)
{
    memset(pl, 0, sizeof *pl);
    size_t len;
    char *data = s_slurp(path, &len);
    if (!data) {
        snprintf(why, why_len, "cannot read %s", path);
        return -1;
    }
    if (len == 0 || data[len - 1] != '\n')
        S_FAIL("%s: does not end with a newline", path);
    char *save = NULL;
    int line_no = 0, version = 0;
    bool want_uri = false;
    for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        line_no++;
        if (line_no == 1) {
            if (strcmp(line, "#EXTM3U") != 0)
                S_FAIL("line 1 must be #EXTM3U");
            continue;
        }
        if (want_uri) {
            if (line[0] == '#' || !s_uri_ok(line) || strlen(line) >= sizeof pl->uri[0])
                S_FAIL("line %d: a relative playlist URI must follow EXT-X-STREAM-INF", line_no);
            snprintf(pl->uri[pl->n++], sizeof pl->uri[0], "%s", line);
            want_uri = false;
            continue;
        }
        int n = 0;
        unsigned long long bw, avg;
        char codecs[32];
        if (sscanf(line, "#EXT-X-VERSION:%d%n", &version, &n) == 1 && !line[n])
            continue;
        if (strcmp(line, "#EXT-X-INDEPENDENT-SEGMENTS") == 0) {
            pl->independent = true;
            continue;
        }
        if (sscanf(line,
                   "#EXT-X-STREAM-INF:BANDWIDTH=%llu,AVERAGE-BANDWIDTH=%llu,CODECS=\"%31[^\"]\"%n",
                   &bw, &avg, codecs, &n) == 3 &&
            !line[n]) {
            if (pl->n >= TC_VARIANTS_MAX || bw == 0 || avg == 0)
                S_FAIL("line %d: bad EXT-X-STREAM-INF", line_no);
            pl->bandwidth[pl->n] = bw;
            pl->average[pl->n] = avg;
            snprintf(pl->codecs[pl->n], sizeof pl->codecs[0], "%s", codecs);
            want_uri = true;
            continue;
        }
        S_FAIL("line %d: unexpected '%s'", line_no, line);
    }
    if (want_uri || pl->n == 0)
        S_FAIL("%s: no variant, or a STREAM-INF without its URI", path);
    free(data);
    return 0;
}

/* ---- files --------------------------------------------------------------------------- */

void tc_tmpdir(char out[64], const char *name)
{
    snprintf(out, 64, "/tmp/%s.XXXXXX", name);
    if (!mkdtemp(out))
        abort();
}

static int s_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void tc_rm_rf(const char *path)
{
    nftw(path, s_rm, 16, FTW_DEPTH | FTW_PHYS);
}

bool tc_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

long long tc_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}
