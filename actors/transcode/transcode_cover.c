/*  transcode_cover — cover art in three sizes. */
#include "transcode_cover.h"

#include <stdio.h>
#include <string.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>

#include "mb_error.h"
#include "mb_msgpack.h"

#define S_IMAGE_FORMATS "jpeg_pipe,png_pipe,webp_pipe,bmp_pipe,gif,gif_pipe"
#define S_JPEG_QUALITY 3 /* mjpeg qscale: 2 is best, 31 worst */

const int transcode_cover_sizes[TRANSCODE_COVER_SIZES] = {64, 300, 640};

/*  Decodes the first picture of `path` into *frame. */
static int s_decode(const char *path, AVFrame *frame, char *why, size_t wl)
{
    AVFormatContext *fmt = NULL;
    AVDictionary *opts = NULL;
    av_dict_set(&opts, "protocol_whitelist", "file", 0);
    av_dict_set(&opts, "format_whitelist", S_IMAGE_FORMATS, 0);
    int rc = avformat_open_input(&fmt, path, NULL, &opts);
    av_dict_free(&opts);
    if (rc < 0) {
        snprintf(why, wl, "not an image this service takes (JPEG, PNG, WebP, BMP, GIF)");
        return MB_EPROTO;
    }
    AVCodecContext *dec = NULL;
    AVPacket *pkt = av_packet_alloc();
    const AVCodec *codec = NULL;
    rc = MB_EPROTO;
    snprintf(why, wl, "the image does not decode");
    if (avformat_find_stream_info(fmt, NULL) < 0)
        goto done;
    int stream = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (stream < 0 || !codec)
        goto done;
    const AVCodecParameters *par = fmt->streams[stream]->codecpar;
    if (par->width <= 0 || par->height <= 0 ||
        (int64_t)par->width * par->height > TRANSCODE_COVER_MAX_PIXELS) {
        snprintf(why, wl, "the image is empty or larger than 8192 x 8192");
        goto done;
    }
    dec = avcodec_alloc_context3(codec);
    avcodec_parameters_to_context(dec, par);
    if (avcodec_open2(dec, codec, NULL) < 0)
        goto done;
    while (av_read_frame(fmt, pkt) >= 0) {
        if (pkt->stream_index == stream && avcodec_send_packet(dec, pkt) >= 0 &&
            avcodec_receive_frame(dec, frame) >= 0) {
            rc = 0;
            break;
        }
        av_packet_unref(pkt);
    }
    if (rc != 0 && avcodec_send_packet(dec, NULL) >= 0 && avcodec_receive_frame(dec, frame) >= 0)
        rc = 0;
done:
    av_packet_free(&pkt);
    avcodec_free_context(&dec);
    avformat_close_input(&fmt);
    return rc;
}

/*  Scales `src` to fit `box` x `box` (never enlarging) and encodes a JPEG
    into a blob. */
static int s_image(mb_blob_store_t *blobs, const AVFrame *src, int box,
                   transcode_cover_image_t *img, char *why, size_t wl)
{
    int w = src->width, h = src->height;
    if (w > box || h > box) {
        if (w >= h) {
            h = (int)((int64_t)h * box / w);
            w = box;
        } else {
            w = (int)((int64_t)w * box / h);
            h = box;
        }
    }
    w = w < 2 ? 2 : w & ~1; /* 4:2:0 wants even sizes */
    h = h < 2 ? 2 : h & ~1;
    const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_MJPEG);
    AVCodecContext *enc = codec ? avcodec_alloc_context3(codec) : NULL;
    struct SwsContext *sws = sws_getContext(src->width, src->height, src->format, w, h,
                                            AV_PIX_FMT_YUVJ420P, SWS_AREA, NULL, NULL, NULL);
    AVFrame *dst = av_frame_alloc();
    AVPacket *pkt = av_packet_alloc();
    int rc = MB_EIO;
    snprintf(why, wl, "cannot make the %d px image", box);
    if (!enc || !sws)
        goto done;
    enc->width = w;
    enc->height = h;
    enc->pix_fmt = AV_PIX_FMT_YUVJ420P;
    enc->time_base = (AVRational){1, 1};
    enc->flags |= AV_CODEC_FLAG_QSCALE;
    enc->global_quality = FF_QP2LAMBDA * S_JPEG_QUALITY;
    dst->width = w;
    dst->height = h;
    dst->format = AV_PIX_FMT_YUVJ420P;
    if (avcodec_open2(enc, codec, NULL) < 0 || av_frame_get_buffer(dst, 0) < 0)
        goto done;
    sws_scale(sws, (const uint8_t *const *)src->data, src->linesize, 0, src->height, dst->data,
              dst->linesize);
    dst->pts = 0;
    dst->quality = enc->global_quality;
    if (avcodec_send_frame(enc, dst) < 0 || avcodec_send_frame(enc, NULL) < 0 ||
        avcodec_receive_packet(enc, pkt) < 0)
        goto done;
    if (mb_blob_put_data(blobs, pkt->data, (size_t)pkt->size, img->hash, NULL) != 0) {
        snprintf(why, wl, "cannot store the %d px image", box);
        goto done;
    }
    img->size = box;
    img->width = w;
    img->height = h;
    rc = 0;
done:
    av_packet_free(&pkt);
    av_frame_free(&dst);
    sws_freeContext(sws);
    avcodec_free_context(&enc);
    return rc;
}

int transcode_cover_make(mb_blob_store_t *blobs, const char *source, transcode_cover_t *cover,
                         char *why, size_t why_len)
{
    memset(cover, 0, sizeof *cover);
    char *path = mb_blob_path(blobs, source);
    if (!path) {
        snprintf(why, why_len, "not a blob name");
        return MB_EPROTO;
    }
    snprintf(cover->source, sizeof cover->source, "%s", source);
    AVFrame *frame = av_frame_alloc();
    int rc = s_decode(path, frame, why, why_len);
    free(path);
    if (rc == 0) {
        cover->width = frame->width;
        cover->height = frame->height;
    }
    for (int i = 0; rc == 0 && i < TRANSCODE_COVER_SIZES; i++)
        rc = s_image(blobs, frame, transcode_cover_sizes[i], &cover->images[i], why, why_len);
    av_frame_free(&frame);
    return rc;
}

void transcode_cover_pack(msgpack_packer *pk, const transcode_cover_t *cover)
{
    msgpack_pack_map(pk, 4);
    mb_pack_cstr(pk, "source");
    mb_pack_cstr(pk, cover->source);
    mb_pack_cstr(pk, "width");
    msgpack_pack_int(pk, cover->width);
    mb_pack_cstr(pk, "height");
    msgpack_pack_int(pk, cover->height);
    mb_pack_cstr(pk, "images");
    msgpack_pack_array(pk, TRANSCODE_COVER_SIZES);
    for (int i = 0; i < TRANSCODE_COVER_SIZES; i++) {
        const transcode_cover_image_t *img = &cover->images[i];
        char url[96];
        snprintf(url, sizeof url, "/covers/%s.jpg", img->hash);
        msgpack_pack_map(pk, 5);
        mb_pack_cstr(pk, "size");
        msgpack_pack_int(pk, img->size);
        mb_pack_cstr(pk, "width");
        msgpack_pack_int(pk, img->width);
        mb_pack_cstr(pk, "height");
        msgpack_pack_int(pk, img->height);
        mb_pack_cstr(pk, "hash");
        mb_pack_cstr(pk, img->hash);
        mb_pack_cstr(pk, "url");
        mb_pack_cstr(pk, url);
    }
}

static bool s_int(const msgpack_object *map, const char *key, int *out)
{
    int64_t v;
    if (!mb_obj_int(mb_map_get(map, key), &v) || v < 0 || v > 100000)
        return false;
    *out = (int)v;
    return true;
}

static bool s_hex(const msgpack_object *map, const char *key, char out[MB_BLOB_HEX_LEN + 1])
{
    const char *s;
    size_t len;
    if (!mb_obj_str(mb_map_get(map, key), &s, &len) || !mb_blob_hex_valid(s, len))
        return false;
    memcpy(out, s, len);
    out[len] = '\0';
    return true;
}

bool transcode_cover_read(const msgpack_object *o, transcode_cover_t *cover)
{
    memset(cover, 0, sizeof *cover);
    const msgpack_object *images = mb_map_get(o, "images");
    if (!s_hex(o, "source", cover->source) || !s_int(o, "width", &cover->width) ||
        !s_int(o, "height", &cover->height) || !images || images->type != MSGPACK_OBJECT_ARRAY ||
        images->via.array.size != TRANSCODE_COVER_SIZES)
        return false;
    for (int i = 0; i < TRANSCODE_COVER_SIZES; i++) {
        const msgpack_object *img = &images->via.array.ptr[i];
        transcode_cover_image_t *c = &cover->images[i];
        if (!s_int(img, "size", &c->size) || !s_int(img, "width", &c->width) ||
            !s_int(img, "height", &c->height) || !s_hex(img, "hash", c->hash))
            return false;
    }
    return true;
}
