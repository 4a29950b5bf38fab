/*  transcode_probe: every master format the service takes is accepted
    (written here with libavcodec), and garbage, empty, truncated and
    video files are refused with a reason. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libavutil/log.h>

#include "mb_error.h"
#include "tc_media.h"
#include "transcode_probe.h"

static char s_dir[64];

static void s_setup(void)
{
    av_log_set_level(AV_LOG_QUIET);
    tc_tmpdir(s_dir, "test_transcode_probe");
}

static void s_teardown(void)
{
    tc_rm_rf(s_dir);
}

TestSuite(transcode_probe, .init = s_setup, .fini = s_teardown);

/*  A path in the test's folder; eight calls may be in use at once. */
static char *s_path(const char *name)
{
    static char paths[8][256];
    static int next;
    char *path = paths[next++ % 8];
    snprintf(path, 256, "%s/%s", s_dir, name);
    return path;
}

/*  Writes `name` with gen, or skips the test when this libavcodec lacks
    the encoder. */
static const char *s_make(const char *name, tc_gen_t gen)
{
    const char *path = s_path(name);
    if (gen.rate == 0)
        gen.rate = 44100;
    if (gen.channels == 0)
        gen.channels = 2;
    if (gen.seconds == 0)
        gen.seconds = 8;
    if (gen.amplitude == 0)
        gen.amplitude = 0.25;
    int rc = tc_generate(path, &gen);
    if (rc == AVERROR_ENCODER_NOT_FOUND)
        cr_skip_test("no %s encoder in this libavcodec", gen.codec);
    cr_assert_eq(rc, 0, "writing %s: %s", name, av_err2str(rc));
    return path;
}

static void s_accepts(const char *path, const char *format, const char *codec, bool lossless)
{
    transcode_probe_t p;
    char why[512];
    int rc = transcode_probe(path, &p, why, sizeof why);
    cr_assert_eq(rc, 0, "%s refused: %s", path, why);
    cr_assert_str_eq(p.format, format);
    cr_assert_str_eq(p.codec, codec);
    cr_assert_eq(p.lossless, lossless, "%s: lossless %d", path, p.lossless);
    cr_assert(p.duration_ms > 7900 && p.duration_ms < 8200, "%s: %lld ms", path,
              (long long)p.duration_ms);
    cr_assert_gt(p.sample_rate, 0);
    cr_assert_gt(p.channels, 0);
}

static void s_refuses(const char *path, const char *reason_part)
{
    transcode_probe_t p;
    char why[512];
    int rc = transcode_probe(path, &p, why, sizeof why);
    cr_assert_eq(rc, MB_EPROTO, "%s: rc %d (%s)", path, rc, why);
    cr_assert(strstr(why, reason_part), "%s: reason '%s' lacks '%s'", path, why, reason_part);
}

static void s_truncate(const char *from, const char *to, double fraction)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    fseek(in, 0, SEEK_END);
    long size = ftell(in), keep = (long)(size * fraction);
    rewind(in);
    char *buf = malloc((size_t)keep);
    cr_assert_eq(fread(buf, 1, (size_t)keep, in), (size_t)keep);
    fwrite(buf, 1, (size_t)keep, out);
    free(buf);
    fclose(in);
    fclose(out);
}

Test(transcode_probe, usage_flac_master)
{
    const char *path = s_make("m.flac", (tc_gen_t){.format = "flac", .codec = "flac"});
    transcode_probe_t p;
    char why[256];
    cr_assert_eq(transcode_probe(path, &p, why, sizeof why), 0, "%s", why);
    cr_assert_str_eq(p.format, "flac");
    cr_assert_str_eq(p.codec, "flac");
    cr_assert_eq(p.sample_rate, 44100);
    cr_assert_eq(p.channels, 2);
    cr_assert_eq(p.bits, 16);
    cr_assert(p.lossless);
    cr_assert_eq(p.duration_ms, 8000);
}

Test(transcode_probe, wav_16_and_24_bit)
{
    s_accepts(s_make("m.wav", (tc_gen_t){.format = "wav", .codec = "pcm_s16le"}), "wav",
              "pcm_s16le", true);
    const char *p24 =
        s_make("m24.wav", (tc_gen_t){.format = "wav", .codec = "pcm_s24le", .rate = 96000});
    transcode_probe_t p;
    char why[256];
    cr_assert_eq(transcode_probe(p24, &p, why, sizeof why), 0, "%s", why);
    cr_assert_eq(p.bits, 24);
    cr_assert_eq(p.sample_rate, 96000);
    cr_assert(p.lossless);
}

Test(transcode_probe, aiff)
{
    s_accepts(s_make("m.aiff", (tc_gen_t){.format = "aiff", .codec = "pcm_s16be"}), "aiff",
              "pcm_s16be", true);
}

Test(transcode_probe, mp3)
{
    s_accepts(
        s_make("m.mp3", (tc_gen_t){.format = "mp3", .codec = "libmp3lame", .bitrate = 192000}),
        "mp3", "mp3", false);
}

Test(transcode_probe, aac_in_m4a_and_adts)
{
    s_accepts(s_make("m.m4a", (tc_gen_t){.format = "ipod", .codec = "aac"}), "mp4", "aac", false);
    s_accepts(s_make("m.aac", (tc_gen_t){.format = "adts", .codec = "aac"}), "aac", "aac", false);
}

Test(transcode_probe, alac_in_m4a_is_lossless)
{
    s_accepts(s_make("alac.m4a", (tc_gen_t){.format = "ipod", .codec = "alac"}), "mp4", "alac",
              true);
}

Test(transcode_probe, ogg_vorbis_and_opus)
{
    s_accepts(s_make("m.ogg", (tc_gen_t){.format = "ogg", .codec = "libvorbis"}), "ogg", "vorbis",
              false);
    s_accepts(s_make("m.opus", (tc_gen_t){.format = "opus", .codec = "libopus", .rate = 48000}),
              "ogg", "opus", false);
}

Test(transcode_probe, garbage_and_empty_are_refused)
{
    const char *path = s_path("garbage.bin");
    FILE *f = fopen(path, "wb");
    srand(7);
    for (int i = 0; i < 200000; i++)
        fputc(rand() & 0xff, f);
    fclose(f);
    s_refuses(path, "not an audio file");
    path = s_path("empty.bin");
    fclose(fopen(path, "wb"));
    s_refuses(path, "empty");
    path = s_path("text.flac");
    f = fopen(path, "wb");
    fputs("fLaC but not really, just text pretending to be a FLAC file\n", f);
    fclose(f);
    transcode_probe_t p;
    char why[256];
    cr_assert_eq(transcode_probe(path, &p, why, sizeof why), MB_EPROTO);
    cr_assert_eq(transcode_probe(s_path("missing"), &p, why, sizeof why), MB_ENOTFOUND);
}

Test(transcode_probe, truncated_files_are_refused)
{
    const char *flac = s_make("t.flac", (tc_gen_t){.format = "flac", .codec = "flac"});
    s_truncate(flac, s_path("cut.flac"), 0.5);
    s_refuses(s_path("cut.flac"), "truncated");
    const char *wav = s_make("t.wav", (tc_gen_t){.format = "wav", .codec = "pcm_s16le"});
    s_truncate(wav, s_path("cut.wav"), 0.5);
    s_refuses(s_path("cut.wav"), "truncated");
    const char *aiff = s_make("t.aiff", (tc_gen_t){.format = "aiff", .codec = "pcm_s16be"});
    s_truncate(aiff, s_path("cut.aiff"), 0.5);
    s_refuses(s_path("cut.aiff"), "truncated");
    /* Just the header: nothing decodes. */
    s_truncate(flac, s_path("head.flac"), 0.005);
    transcode_probe_t p;
    char why[256];
    cr_assert_eq(transcode_probe(s_path("head.flac"), &p, why, sizeof why), MB_EPROTO);
}

Test(transcode_probe, video_is_not_a_master)
{
    /* An MP4 whose only stream is video. */
    const char *path = s_path("v.mp4");
    const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_MPEG4);
    if (!codec)
        cr_skip_test("no mpeg4 encoder");
    AVFormatContext *oc = NULL;
    cr_assert_geq(avformat_alloc_output_context2(&oc, NULL, "mp4", path), 0);
    AVCodecContext *enc = avcodec_alloc_context3(codec);
    enc->width = 64;
    enc->height = 64;
    enc->pix_fmt = AV_PIX_FMT_YUV420P;
    enc->time_base = (AVRational){1, 25};
    enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    cr_assert_geq(avcodec_open2(enc, codec, NULL), 0);
    AVStream *st = avformat_new_stream(oc, NULL);
    avcodec_parameters_from_context(st->codecpar, enc);
    st->time_base = enc->time_base;
    cr_assert_geq(avio_open(&oc->pb, path, AVIO_FLAG_WRITE), 0);
    cr_assert_geq(avformat_write_header(oc, NULL), 0);
    AVFrame *fr = av_frame_alloc();
    AVPacket *pkt = av_packet_alloc();
    for (int i = 0; i <= 25; i++) {
        if (i < 25) {
            fr->format = enc->pix_fmt;
            fr->width = 64;
            fr->height = 64;
            cr_assert_geq(av_frame_get_buffer(fr, 0), 0);
            memset(fr->data[0], i * 8, (size_t)fr->linesize[0] * 64);
            memset(fr->data[1], 128, (size_t)fr->linesize[1] * 32);
            memset(fr->data[2], 128, (size_t)fr->linesize[2] * 32);
            fr->pts = i;
        }
        avcodec_send_frame(enc, i < 25 ? fr : NULL);
        av_frame_unref(fr);
        while (avcodec_receive_packet(enc, pkt) == 0) {
            av_packet_rescale_ts(pkt, enc->time_base, st->time_base);
            av_interleaved_write_frame(oc, pkt);
        }
    }
    av_write_trailer(oc);
    avio_closep(&oc->pb);
    avformat_free_context(oc);
    avcodec_free_context(&enc);
    av_frame_free(&fr);
    av_packet_free(&pkt);
    transcode_probe_t p;
    char why[256];
    cr_assert_eq(transcode_probe(path, &p, why, sizeof why), MB_EPROTO);
}
