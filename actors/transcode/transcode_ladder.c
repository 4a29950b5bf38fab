/*  transcode_ladder — one master into an HLS ladder, decoded once.

    Threads: the caller's thread demuxes, decodes, resamples and meters;
    each rung has a thread that encodes (or copies) and muxes. They meet
    in one bounded queue per rung holding reference-counted frames (or
    packets), so every rung sees the same decoded audio without copies.
    With more rungs than cores the kernel shares the cores out; the
    queues are deep enough that no encoder waits on another. */
#include "transcode_ladder.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/audio_fifo.h>
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
#include <libswresample/swresample.h>

#include "mb_alloc.h"
#include "mb_error.h"
#include "mb_log.h"
#include "transcode_probe.h"

#define S_AAC_FRAME 1024      /* samples per AAC-LC frame */
#define S_QUEUE_CAP 256       /* frames per rung queue: 5.5 s of audio */
#define S_QUEUE_BATCH 32      /* a waiting consumer is woken once this many are queued */
#define S_MAX_DAMAGED 16      /* damaged packets tolerated before the ratio applies... */
#define S_MAX_DAMAGED_PCT 1   /* ...then at most this percentage of all packets */
#define S_TRUNCATED_S 1.0     /* decoding this much short of the declared length fails */
#define S_TICK_NS 1000000000L /* between calls of opts->tick */
#define S_WHY_MAX 256

typedef struct {
    const char *name;
    int bitrate;
    bool free_tier;
} s_aac_rung_t;

static const s_aac_rung_t s_aac_rungs[] = {
    {"a64", 64000, true},
    {"a128", 128000, true},
    {"a192", 192000, false},
    {"a256", 256000, false},
};
#define S_AAC_RUNGS (sizeof s_aac_rungs / sizeof s_aac_rungs[0])

/* ---- a bounded queue of frames or packets ----------------------------- */

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t can_pop;
    pthread_cond_t can_push;
    void *items[S_QUEUE_CAP];
    size_t head, count;
    bool ended;     /* the producer has no more */
    bool cancelled; /* the job is abandoned: pop returns NULL at once */
} s_queue_t;

static void s_queue_init(s_queue_t *q)
{
    memset(q, 0, sizeof *q);
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->can_pop, NULL);
    pthread_cond_init(&q->can_push, NULL);
}

/*  Pushes `item` (ownership passes), waiting while the queue is full.
    Returns false (and frees nothing: the caller keeps it) when the job
    was cancelled. */
static bool s_queue_push(s_queue_t *q, void *item)
{
    pthread_mutex_lock(&q->lock);
    while (q->count == S_QUEUE_CAP && !q->cancelled)
        pthread_cond_wait(&q->can_push, &q->lock);
    bool ok = !q->cancelled;
    if (ok) {
        q->items[(q->head + q->count) % S_QUEUE_CAP] = item;
        q->count++;
        /* Wake the consumer once a batch is waiting, not for every frame:
           fewer context switches when it is faster than the producer. */
        if (q->count == S_QUEUE_BATCH)
            pthread_cond_signal(&q->can_pop);
    }
    pthread_mutex_unlock(&q->lock);
    return ok;
}

/*  Returns the next item, or NULL once the queue is ended and empty, or
    cancelled. */
static void *s_queue_pop(s_queue_t *q)
{
    pthread_mutex_lock(&q->lock);
    if (q->count == 0)
        while (q->count < S_QUEUE_BATCH && !q->ended && !q->cancelled)
            pthread_cond_wait(&q->can_pop, &q->lock);
    void *item = NULL;
    if (q->count > 0 && !q->cancelled) {
        item = q->items[q->head];
        q->head = (q->head + 1) % S_QUEUE_CAP;
        q->count--;
        /* Likewise wake a blocked producer only once half is free. */
        if (q->count == S_QUEUE_CAP / 2)
            pthread_cond_signal(&q->can_push);
    }
    pthread_mutex_unlock(&q->lock);
    return item;
}

static void s_queue_end(s_queue_t *q)
{
    pthread_mutex_lock(&q->lock);
    q->ended = true;
    pthread_cond_broadcast(&q->can_pop);
    pthread_mutex_unlock(&q->lock);
}

static void s_queue_cancel(s_queue_t *q)
{
    pthread_mutex_lock(&q->lock);
    q->cancelled = true;
    pthread_cond_broadcast(&q->can_pop);
    pthread_cond_broadcast(&q->can_push);
    pthread_mutex_unlock(&q->lock);
}

/*  Frees what is left; `packets` tells what the items are. */
static void s_queue_destroy(s_queue_t *q, bool packets)
{
    while (q->count > 0) {
        void *item = q->items[q->head];
        if (packets) {
            AVPacket *pkt = item;
            av_packet_free(&pkt);
        } else {
            AVFrame *frame = item;
            av_frame_free(&frame);
        }
        q->head = (q->head + 1) % S_QUEUE_CAP;
        q->count--;
    }
    pthread_cond_destroy(&q->can_pop);
    pthread_cond_destroy(&q->can_push);
    pthread_mutex_destroy(&q->lock);
}

/* ---- errors --------------------------------------------------------------- */

static void s_why(char *why, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_why(char *why, size_t len, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(why, len, fmt, args);
    va_end(args);
}

static const char *s_averr(int err, char buf[AV_ERROR_MAX_STRING_SIZE])
{
    return av_make_error_string(buf, AV_ERROR_MAX_STRING_SIZE, err);
}

/* ---- files ---------------------------------------------------------------- */

/*  Writes `len` bytes to a new file `dir/name` and fsyncs it. */
static int s_write_file(const char *dir, const char *name, const void *data, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return MB_EIO;
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            return MB_EIO;
        }
        p += n;
        left -= (size_t)n;
    }
    /* Durable before the folder is renamed into view. */
    int rc = fdatasync(fd) == 0 ? 0 : MB_EIO;
    if (close(fd) != 0)
        rc = MB_EIO;
    return rc;
}

/*  A growable text buffer for playlists. */
typedef struct {
    char *data;
    size_t len, cap;
} s_text_t;

static void s_text_add(s_text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_text_add(s_text_t *t, const char *fmt, ...)
{
    for (;;) {
        va_list args;
        va_start(args, fmt);
        int n = vsnprintf(t->data ? t->data + t->len : NULL, t->cap - t->len, fmt, args);
        va_end(args);
        if (n >= 0 && (size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        t->cap = (t->cap + (size_t)n + 1) * 2;
        t->data = mb_realloc(t->data, t->cap);
    }
}

/* ---- the segmenter: fragmented MP4 cut into HLS segments ----------------- */

typedef struct {
    uint64_t bytes;
    int64_t start, end; /* in samples; presentation time */
} s_segment_t;

typedef struct {
    AVFormatContext *oc;
    AVStream *st;
    char dir[4096];
    int sample_rate;
    uint8_t *buf; /* bytes the muxer wrote since the last cut */
    size_t len, cap;
    bool init_written;
    int64_t step;   /* samples per target segment */
    int64_t cut_at; /* the next segment starts at the first packet from here */
    bool open;      /* a segment has packets */
    int64_t start, end;
    s_segment_t *segments;
    size_t n_segments, cap_segments;
    int err; /* first write error of the callback */
} s_seg_t;

static int s_seg_write(void *opaque, uint8_t *data, int size)
{
    s_seg_t *seg = opaque;
    if (seg->len + (size_t)size > seg->cap) {
        seg->cap = (seg->len + (size_t)size) * 2;
        seg->buf = mb_realloc(seg->buf, seg->cap);
    }
    memcpy(seg->buf + seg->len, data, (size_t)size);
    seg->len += (size_t)size;
    return size;
}

/*  Length of the init section at the start of `buf`: the top-level boxes
    before the first box that belongs to a fragment. */
static size_t s_init_length(const uint8_t *buf, size_t len)
{
    size_t at = 0;
    while (at + 8 <= len) {
        uint64_t size = ((uint64_t)buf[at] << 24) | ((uint64_t)buf[at + 1] << 16) |
                        ((uint64_t)buf[at + 2] << 8) | buf[at + 3];
        const uint8_t *type = buf + at + 4;
        if (!memcmp(type, "moof", 4) || !memcmp(type, "styp", 4) || !memcmp(type, "sidx", 4) ||
            !memcmp(type, "prft", 4) || !memcmp(type, "emsg", 4))
            return at;
        if (size == 1 && at + 16 <= len) {
            size = 0;
            for (int i = 8; i < 16; i++)
                size = (size << 8) | buf[at + i];
        }
        if (size < 8 || size > len - at)
            return len;
        at += size;
    }
    return at;
}

static int s_seg_new(s_seg_t *seg, const char *dir, const AVCodecParameters *par, int sample_rate,
                     char *why, size_t why_len)
{
    char err[AV_ERROR_MAX_STRING_SIZE];
    memset(seg, 0, sizeof *seg);
    snprintf(seg->dir, sizeof seg->dir, "%s", dir);
    seg->sample_rate = sample_rate;
    seg->step = (int64_t)TRANSCODE_SEGMENT_S * sample_rate;
    seg->cut_at = seg->step;
    if (mkdir(dir, 0755) != 0) {
        s_why(why, why_len, "cannot create %s: %s", dir, strerror(errno));
        return MB_EIO;
    }
    int rc = avformat_alloc_output_context2(&seg->oc, NULL, "mp4", NULL);
    if (rc < 0) {
        s_why(why, why_len, "no mp4 muxer: %s", s_averr(rc, err));
        return MB_EIO;
    }
    seg->st = avformat_new_stream(seg->oc, NULL);
    if (!seg->st || avcodec_parameters_copy(seg->st->codecpar, par) < 0) {
        s_why(why, why_len, "cannot set up the mp4 stream");
        return MB_EIO;
    }
    seg->st->codecpar->codec_tag = 0;
    seg->st->time_base = (AVRational){1, sample_rate};
    const int io_size = 64 * 1024;
    uint8_t *io_buf = av_malloc(io_size);
    seg->oc->pb = avio_alloc_context(io_buf, io_size, 1, seg, NULL, s_seg_write, NULL);
    if (!io_buf || !seg->oc->pb) {
        av_free(io_buf);
        s_why(why, why_len, "out of memory");
        return MB_EIO;
    }
    /* FLAC in MP4 is still flagged experimental in libavformat 59. */
    seg->oc->strict_std_compliance = FF_COMPLIANCE_EXPERIMENTAL;
    AVDictionary *opts = NULL;
    /* frag_custom: a fragment ends when we flush it, so one fragment is
       one segment. delay_moov: the moov is written with the first
       fragment, once the first timestamps are known, so it carries the
       edit list that hides the encoder's priming. skip_trailer: no mfra,
       nobody would fetch it. */
    av_dict_set(&opts, "movflags", "+frag_custom+delay_moov+default_base_moof+skip_trailer", 0);
    rc = avformat_write_header(seg->oc, &opts);
    av_dict_free(&opts);
    if (rc < 0) {
        s_why(why, why_len, "mp4 muxer refused the stream: %s", s_averr(rc, err));
        return MB_EIO;
    }
    return 0;
}

/*  Ends the current segment: flushes the fragment and writes the file. */
static int s_seg_cut(s_seg_t *seg, char *why, size_t why_len)
{
    if (!seg->open)
        return 0;
    char err[AV_ERROR_MAX_STRING_SIZE];
    int rc = av_write_frame(seg->oc, NULL);
    if (rc < 0) {
        s_why(why, why_len, "mp4 muxer: %s", s_averr(rc, err));
        return MB_EIO;
    }
    avio_flush(seg->oc->pb);
    size_t at = 0;
    if (!seg->init_written) {
        at = s_init_length(seg->buf, seg->len);
        if (at == seg->len) {
            /* delay_moov: the first flush writes only the moov (now that
               the first timestamps are known); the second the fragment. */
            if ((rc = av_write_frame(seg->oc, NULL)) < 0) {
                s_why(why, why_len, "mp4 muxer: %s", s_averr(rc, err));
                return MB_EIO;
            }
            avio_flush(seg->oc->pb);
        }
        if (at == 0 || at == seg->len) {
            s_why(why, why_len, "the mp4 muxer wrote no init section");
            return MB_EIO;
        }
        if (s_write_file(seg->dir, "init.mp4", seg->buf, at) != 0) {
            s_why(why, why_len, "cannot write %s/init.mp4: %s", seg->dir, strerror(errno));
            return MB_EIO;
        }
        seg->init_written = true;
    }
    char name[32];
    snprintf(name, sizeof name, "seg-%05zu.m4s", seg->n_segments + 1);
    if (s_write_file(seg->dir, name, seg->buf + at, seg->len - at) != 0) {
        s_why(why, why_len, "cannot write %s/%s: %s", seg->dir, name, strerror(errno));
        return MB_EIO;
    }
    if (seg->n_segments == seg->cap_segments) {
        seg->cap_segments = seg->cap_segments ? seg->cap_segments * 2 : 64;
        seg->segments = mb_realloc(seg->segments, seg->cap_segments * sizeof *seg->segments);
    }
    seg->segments[seg->n_segments++] =
        (s_segment_t){.bytes = seg->len - at, .start = seg->start, .end = seg->end};
    seg->len = 0;
    seg->open = false;
    return 0;
}

/*  Muxes one packet whose pts/duration count samples; cuts before it when
    it starts at or after the next boundary. */
static int s_seg_packet(s_seg_t *seg, AVPacket *pkt, char *why, size_t why_len)
{
    if (seg->open && pkt->pts >= seg->cut_at) {
        int rc = s_seg_cut(seg, why, why_len);
        if (rc)
            return rc;
    }
    while (pkt->pts >= seg->cut_at)
        seg->cut_at += seg->step;
    if (!seg->open) {
        /* Presentation starts at 0: the priming before it is hidden. */
        seg->start = pkt->pts > 0 ? pkt->pts : 0;
        seg->open = true;
    }
    int64_t end = pkt->pts + pkt->duration;
    if (end > seg->end)
        seg->end = end;
    pkt->stream_index = 0;
    av_packet_rescale_ts(pkt, (AVRational){1, seg->sample_rate}, seg->st->time_base);
    char err[AV_ERROR_MAX_STRING_SIZE];
    int rc = av_write_frame(seg->oc, pkt);
    if (rc < 0) {
        s_why(why, why_len, "mp4 muxer: %s", s_averr(rc, err));
        return MB_EIO;
    }
    return 0;
}

static double s_seg_duration(const s_segment_t *s, int sample_rate)
{
    return (double)(s->end - s->start) / sample_rate;
}

/*  RFC 8216bis peak segment bit rate: the highest rate over runs of
    consecutive segments lasting 0.5 to 1.5 target durations; the whole
    rung's rate when no run qualifies (a very short track). */
static uint64_t s_peak_bandwidth(const s_seg_t *seg, int target)
{
    double best = 0, total_bits = 0, total_s = 0;
    for (size_t i = 0; i < seg->n_segments; i++) {
        double bits = 0, secs = 0;
        for (size_t j = i; j < seg->n_segments; j++) {
            bits += 8.0 * (double)seg->segments[j].bytes;
            secs += s_seg_duration(&seg->segments[j], seg->sample_rate);
            if (secs > 1.5 * target)
                break;
            if (secs >= 0.5 * target && bits / secs > best)
                best = bits / secs;
        }
        total_bits += 8.0 * (double)seg->segments[i].bytes;
        total_s += s_seg_duration(&seg->segments[i], seg->sample_rate);
    }
    if (best == 0 && total_s > 0)
        best = total_bits / total_s;
    return (uint64_t)ceil(best);
}

/*  Flushes the last segment, writes index.m3u8, fills the rung's figures. */
static int s_seg_finish(s_seg_t *seg, transcode_rung_t *rung, char *why, size_t why_len)
{
    int rc = s_seg_cut(seg, why, why_len);
    if (rc)
        return rc;
    if (seg->n_segments == 0) {
        s_why(why, why_len, "the master holds no audio");
        return MB_EPROTO;
    }
    av_write_trailer(seg->oc); /* skip_trailer: writes nothing we keep */
    int target = 1;
    uint64_t bytes = 0;
    double total = 0;
    for (size_t i = 0; i < seg->n_segments; i++) {
        double d = s_seg_duration(&seg->segments[i], seg->sample_rate);
        int rounded = (int)lround(d);
        if (rounded > target)
            target = rounded;
        bytes += seg->segments[i].bytes;
        total += d;
    }
    s_text_t t = {0};
    s_text_add(&t, "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:%d\n", target);
    s_text_add(&t, "#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    s_text_add(&t, "#EXT-X-MAP:URI=\"init.mp4\"\n");
    for (size_t i = 0; i < seg->n_segments; i++)
        s_text_add(&t, "#EXTINF:%.6f,\nseg-%05zu.m4s\n",
                   s_seg_duration(&seg->segments[i], seg->sample_rate), i + 1);
    s_text_add(&t, "#EXT-X-ENDLIST\n");
    rc = s_write_file(seg->dir, "index.m3u8", t.data, t.len);
    free(t.data);
    if (rc) {
        s_why(why, why_len, "cannot write %s/index.m3u8: %s", seg->dir, strerror(errno));
        return rc;
    }
    rung->segments = (unsigned)seg->n_segments;
    rung->bytes = bytes;
    rung->duration_s = total;
    rung->bandwidth = s_peak_bandwidth(seg, target);
    rung->average_bandwidth = total > 0 ? (uint64_t)ceil(8.0 * (double)bytes / total) : 0;
    if (rung->bandwidth < rung->average_bandwidth)
        rung->bandwidth = rung->average_bandwidth;
    return 0;
}

static void s_seg_destroy(s_seg_t *seg)
{
    if (seg->oc) {
        if (seg->oc->pb) {
            av_freep(&seg->oc->pb->buffer);
            avio_context_free(&seg->oc->pb);
        }
        avformat_free_context(seg->oc);
        seg->oc = NULL;
    }
    free(seg->buf);
    free(seg->segments);
    memset(seg, 0, sizeof *seg);
}

/* ---- rungs ---------------------------------------------------------------- */

typedef enum { S_AAC, S_FLAC_ENCODE, S_FLAC_COPY } s_kind_t;

typedef struct s_ladder s_ladder_t;

typedef struct {
    s_ladder_t *ladder;
    s_kind_t kind;
    transcode_rung_t info;
    s_queue_t queue;
    pthread_t thread;
    bool started;
    AVCodecContext *enc; /* NULL when copying */
    AVAudioFifo *fifo;   /* FLAC encode: the encoder wants frames of its frame_size */
    int64_t fifo_pts;    /* samples handed to the encoder so far */
    s_seg_t seg;
    int rc;
    char why[S_WHY_MAX];
} s_rung_t;

struct s_ladder {
    const transcode_ladder_opts_t *opts;
    s_rung_t rungs[TRANSCODE_RUNGS_MAX];
    size_t n_rungs;
    atomic_bool failed;
    bool stopped; /* opts->tick asked to stop */
};

static void s_cancel_all(s_ladder_t *ladder)
{
    atomic_store(&ladder->failed, true);
    for (size_t i = 0; i < ladder->n_rungs; i++)
        s_queue_cancel(&ladder->rungs[i].queue);
}

/*  Sends `frame` (NULL: end of stream) to the encoder and muxes what
    comes out. */
static int s_rung_encode(s_rung_t *r, AVFrame *frame)
{
    char err[AV_ERROR_MAX_STRING_SIZE];
    int rc = avcodec_send_frame(r->enc, frame);
    if (rc < 0) {
        s_why(r->why, sizeof r->why, "%s encoder: %s", r->info.name, s_averr(rc, err));
        return MB_EIO;
    }
    AVPacket *pkt = av_packet_alloc();
    while ((rc = avcodec_receive_packet(r->enc, pkt)) == 0) {
        /* Encoder time base is 1/sample_rate: pts already counts samples. */
        int mrc = s_seg_packet(&r->seg, pkt, r->why, sizeof r->why);
        av_packet_unref(pkt);
        if (mrc) {
            av_packet_free(&pkt);
            return mrc;
        }
    }
    av_packet_free(&pkt);
    if (rc != AVERROR(EAGAIN) && rc != AVERROR_EOF) {
        s_why(r->why, sizeof r->why, "%s encoder: %s", r->info.name, s_averr(rc, err));
        return MB_EIO;
    }
    return 0;
}

/*  FLAC encode: regroups decoded frames into frames of the encoder's size. */
static int s_rung_flac_frames(s_rung_t *r, AVFrame *in)
{
    if (in && av_audio_fifo_write(r->fifo, (void **)in->extended_data, in->nb_samples) < 0) {
        s_why(r->why, sizeof r->why, "out of memory");
        return MB_EIO;
    }
    int size = r->enc->frame_size;
    while (av_audio_fifo_size(r->fifo) >= size || (!in && av_audio_fifo_size(r->fifo) > 0)) {
        int n = av_audio_fifo_size(r->fifo) < size ? av_audio_fifo_size(r->fifo) : size;
        AVFrame *f = av_frame_alloc();
        f->nb_samples = n;
        f->format = r->enc->sample_fmt;
        f->sample_rate = r->enc->sample_rate;
        av_channel_layout_copy(&f->ch_layout, &r->enc->ch_layout);
        if (av_frame_get_buffer(f, 0) < 0) {
            av_frame_free(&f);
            s_why(r->why, sizeof r->why, "out of memory");
            return MB_EIO;
        }
        av_audio_fifo_read(r->fifo, (void **)f->extended_data, n);
        f->pts = r->fifo_pts;
        r->fifo_pts += n;
        int rc = s_rung_encode(r, f);
        av_frame_free(&f);
        if (rc)
            return rc;
    }
    return in ? 0 : s_rung_encode(r, NULL);
}

static void *s_rung_main(void *arg)
{
    s_rung_t *r = arg;
    int rc = 0;
    void *item;
    while (rc == 0 && (item = s_queue_pop(&r->queue)) != NULL) {
        if (r->kind == S_FLAC_COPY) {
            AVPacket *pkt = item;
            rc = s_seg_packet(&r->seg, pkt, r->why, sizeof r->why);
            av_packet_free(&pkt);
        } else {
            AVFrame *frame = item;
            rc = r->kind == S_AAC ? s_rung_encode(r, frame) : s_rung_flac_frames(r, frame);
            av_frame_free(&frame);
        }
    }
    if (rc == 0 && atomic_load(&r->ladder->failed))
        rc = MB_EINTR;
    if (rc == 0 && r->enc)
        rc = r->kind == S_AAC ? s_rung_encode(r, NULL) : s_rung_flac_frames(r, NULL);
    if (rc == 0)
        rc = s_seg_finish(&r->seg, &r->info, r->why, sizeof r->why);
    r->rc = rc;
    if (rc && rc != MB_EINTR)
        s_cancel_all(r->ladder);
    return NULL;
}

static void s_rung_free(s_rung_t *r)
{
    s_queue_destroy(&r->queue, r->kind == S_FLAC_COPY);
    avcodec_free_context(&r->enc);
    if (r->fifo)
        av_audio_fifo_free(r->fifo);
    s_seg_destroy(&r->seg);
}

/*  Opens the encoder of an AAC rung and its segmenter. */
static int s_rung_aac(s_rung_t *r, const s_aac_rung_t *def, const char *out_dir)
{
    char err[AV_ERROR_MAX_STRING_SIZE];
    r->kind = S_AAC;
    snprintf(r->info.name, sizeof r->info.name, "%s", def->name);
    snprintf(r->info.codecs, sizeof r->info.codecs, "mp4a.40.2");
    r->info.bitrate = def->bitrate;
    r->info.free_tier = def->free_tier;
    r->info.sample_rate = TRANSCODE_RATE;
    r->info.channels = 2;
    const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_AAC);
    if (!codec || !(r->enc = avcodec_alloc_context3(codec))) {
        s_why(r->why, sizeof r->why, "no AAC encoder in libavcodec");
        return MB_EIO;
    }
    r->enc->sample_fmt = AV_SAMPLE_FMT_FLTP;
    r->enc->sample_rate = TRANSCODE_RATE;
    av_channel_layout_default(&r->enc->ch_layout, 2);
    r->enc->bit_rate = def->bitrate;
    r->enc->profile = FF_PROFILE_AAC_LOW;
    r->enc->time_base = (AVRational){1, TRANSCODE_RATE};
    r->enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    int rc = avcodec_open2(r->enc, codec, NULL);
    if (rc < 0) {
        s_why(r->why, sizeof r->why, "AAC encoder: %s", s_averr(rc, err));
        return MB_EIO;
    }
    AVCodecParameters *par = avcodec_parameters_alloc();
    avcodec_parameters_from_context(par, r->enc);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", out_dir, def->name);
    rc = s_seg_new(&r->seg, dir, par, TRANSCODE_RATE, r->why, sizeof r->why);
    avcodec_parameters_free(&par);
    return rc;
}

/*  Opens the FLAC rung: copying the master's packets (`copy_par` set) or
    encoding frames shaped like `dec`. */
static int s_rung_flac(s_rung_t *r, const AVCodecParameters *copy_par, const AVCodecContext *dec,
                       enum AVSampleFormat packed, const char *out_dir)
{
    char err[AV_ERROR_MAX_STRING_SIZE];
    snprintf(r->info.name, sizeof r->info.name, "flac");
    snprintf(r->info.codecs, sizeof r->info.codecs, "fLaC");
    r->info.sample_rate = dec->sample_rate;
    r->info.channels = dec->ch_layout.nb_channels;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/flac", out_dir);
    if (copy_par) {
        r->kind = S_FLAC_COPY;
        return s_seg_new(&r->seg, dir, copy_par, dec->sample_rate, r->why, sizeof r->why);
    }
    r->kind = S_FLAC_ENCODE;
    const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_FLAC);
    if (!codec || !(r->enc = avcodec_alloc_context3(codec))) {
        s_why(r->why, sizeof r->why, "no FLAC encoder in libavcodec");
        return MB_EIO;
    }
    r->enc->sample_fmt = packed;
    r->enc->sample_rate = dec->sample_rate;
    if (av_channel_layout_check(&dec->ch_layout) && dec->ch_layout.order != AV_CHANNEL_ORDER_UNSPEC)
        av_channel_layout_copy(&r->enc->ch_layout, &dec->ch_layout);
    else
        av_channel_layout_default(&r->enc->ch_layout, dec->ch_layout.nb_channels);
    r->enc->bits_per_raw_sample = packed == AV_SAMPLE_FMT_S16 ? 16 : dec->bits_per_raw_sample;
    r->enc->time_base = (AVRational){1, dec->sample_rate};
    r->enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    int rc = avcodec_open2(r->enc, codec, NULL);
    if (rc < 0) {
        s_why(r->why, sizeof r->why, "FLAC encoder: %s", s_averr(rc, err));
        return MB_EIO;
    }
    r->fifo = av_audio_fifo_alloc(packed, r->enc->ch_layout.nb_channels, r->enc->frame_size * 2);
    AVCodecParameters *par = avcodec_parameters_alloc();
    avcodec_parameters_from_context(par, r->enc);
    rc = s_seg_new(&r->seg, dir, par, dec->sample_rate, r->why, sizeof r->why);
    avcodec_parameters_free(&par);
    return rc;
}

static int s_rung_start(s_rung_t *r)
{
    int rc = pthread_create(&r->thread, NULL, s_rung_main, r);
    if (rc) {
        s_why(r->why, sizeof r->why, "cannot start a thread: %s", strerror(rc));
        return MB_EIO;
    }
    r->started = true;
    /* Named after the rung, so top -H and perf tell them apart. */
    char name[16];
    snprintf(name, sizeof name, "tc-%s", r->info.name);
    pthread_setname_np(r->thread, name);
    return 0;
}

/* ---- decoding ----------------------------------------------------------------- */

typedef struct {
    AVFormatContext *fmt;
    int stream;
    AVCodecContext *dec;
    SwrContext *swr;   /* to 48 kHz stereo float, planar */
    SwrContext *pack;  /* FLAC encode: planar integer to packed; NULL when packed */
    AVAudioFifo *fifo; /* resampled audio waiting for whole AAC frames */
    uint8_t **scratch; /* swr output before the fifo */
    int scratch_cap;   /* samples */
    int64_t out_pts;   /* resampled samples sent on */
    int64_t decoded;   /* samples decoded at the master's rate */
    int64_t packets, damaged;
    bool configured; /* the first frame set the format */
    int rate, channels;
    enum AVSampleFormat format;
    enum AVSampleFormat flac_format; /* packed format for the FLAC encoder; NONE: no encode */
    transcode_loudness_t *meter;
    struct timespec last_tick;
} s_input_t;

static void s_input_free(s_input_t *in)
{
    avcodec_free_context(&in->dec);
    avformat_close_input(&in->fmt);
    swr_free(&in->swr);
    swr_free(&in->pack);
    if (in->fifo)
        av_audio_fifo_free(in->fifo);
    if (in->scratch)
        av_freep(&in->scratch[0]);
    av_freep(&in->scratch);
    transcode_loudness_destroy(&in->meter);
}

static int s_input_open(s_input_t *in, const char *path, char *why, size_t why_len)
{
    char err[AV_ERROR_MAX_STRING_SIZE];
    memset(in, 0, sizeof *in);
    in->flac_format = AV_SAMPLE_FMT_NONE;
    int rc = transcode_open_input(path, &in->fmt);
    if (rc < 0) {
        s_why(why, why_len, "cannot open the master: %s", s_averr(rc, err));
        return rc == AVERROR(ENOENT) || rc == AVERROR(EIO) ? MB_EIO : MB_EPROTO;
    }
    if ((rc = avformat_find_stream_info(in->fmt, NULL)) < 0) {
        s_why(why, why_len, "cannot read the master's streams: %s", s_averr(rc, err));
        return MB_EPROTO;
    }
    const AVCodec *codec = NULL;
    in->stream = av_find_best_stream(in->fmt, AVMEDIA_TYPE_AUDIO, -1, -1, &codec, 0);
    if (in->stream < 0 || !codec) {
        s_why(why, why_len, "the master has no audio stream libavcodec can decode");
        return MB_EPROTO;
    }
    in->dec = avcodec_alloc_context3(codec);
    avcodec_parameters_to_context(in->dec, in->fmt->streams[in->stream]->codecpar);
    in->dec->pkt_timebase = in->fmt->streams[in->stream]->time_base;
    in->dec->thread_count = 1;
    if ((rc = avcodec_open2(in->dec, codec, NULL)) < 0) {
        s_why(why, why_len, "cannot open the %s decoder: %s", codec->name, s_averr(rc, err));
        return MB_EPROTO;
    }
    for (unsigned i = 0; i < in->fmt->nb_streams; i++)
        if ((int)i != in->stream)
            in->fmt->streams[i]->discard = AVDISCARD_ALL;
    in->meter = transcode_loudness_new(2);
    clock_gettime(CLOCK_MONOTONIC, &in->last_tick);
    return 0;
}

/*  Pushes a reference to `frame` to every AAC rung. */
static int s_push_aac(s_ladder_t *ladder, AVFrame *frame)
{
    for (size_t i = 0; i < ladder->n_rungs; i++) {
        s_rung_t *r = &ladder->rungs[i];
        if (r->kind != S_AAC)
            continue;
        AVFrame *ref = av_frame_clone(frame);
        if (!ref)
            return MB_EIO;
        if (!s_queue_push(&r->queue, ref)) {
            av_frame_free(&ref);
            return MB_EINTR;
        }
    }
    return 0;
}

/*  Sends whole AAC frames from the fifo (and, at the end, the rest). */
static int s_drain_fifo(s_input_t *in, s_ladder_t *ladder, bool end)
{
    while (av_audio_fifo_size(in->fifo) >= S_AAC_FRAME ||
           (end && av_audio_fifo_size(in->fifo) > 0)) {
        int n = av_audio_fifo_size(in->fifo);
        if (n > S_AAC_FRAME)
            n = S_AAC_FRAME;
        AVFrame *f = av_frame_alloc();
        f->nb_samples = n;
        f->format = AV_SAMPLE_FMT_FLTP;
        f->sample_rate = TRANSCODE_RATE;
        av_channel_layout_default(&f->ch_layout, 2);
        if (av_frame_get_buffer(f, 0) < 0) {
            av_frame_free(&f);
            return MB_EIO;
        }
        av_audio_fifo_read(in->fifo, (void **)f->extended_data, n);
        f->pts = in->out_pts;
        in->out_pts += n;
        transcode_loudness_add(in->meter, (const float *const *)f->extended_data, (size_t)n);
        int rc = s_push_aac(ladder, f);
        av_frame_free(&f);
        if (rc)
            return rc;
    }
    return 0;
}

/*  Resamples `frame` (NULL: flush) into the fifo and sends what is whole. */
static int s_resample(s_input_t *in, s_ladder_t *ladder, const AVFrame *frame)
{
    int n_in = frame ? frame->nb_samples : 0;
    int room = swr_get_out_samples(in->swr, n_in);
    if (room < 0)
        return MB_EIO;
    if (room > in->scratch_cap) {
        if (in->scratch)
            av_freep(&in->scratch[0]);
        av_freep(&in->scratch);
        if (av_samples_alloc_array_and_samples(&in->scratch, NULL, 2, room, AV_SAMPLE_FMT_FLTP, 0) <
            0)
            return MB_EIO;
        in->scratch_cap = room;
    }
    int got = swr_convert(in->swr, in->scratch, room,
                          frame ? (const uint8_t **)frame->extended_data : NULL, n_in);
    if (got < 0)
        return MB_EIO;
    if (got > 0 && av_audio_fifo_write(in->fifo, (void **)in->scratch, got) < got)
        return MB_EIO;
    return s_drain_fifo(in, ladder, frame == NULL);
}

/*  Hands a decoded frame to the FLAC encode rung, packed. */
static int s_push_flac(s_input_t *in, s_rung_t *r, const AVFrame *frame)
{
    AVFrame *out;
    if (!in->pack)
        out = av_frame_clone(frame);
    else {
        out = av_frame_alloc();
        out->format = in->flac_format;
        out->sample_rate = frame->sample_rate;
        av_channel_layout_copy(&out->ch_layout, &r->enc->ch_layout);
        out->nb_samples = frame->nb_samples;
        if (av_frame_get_buffer(out, 0) < 0 ||
            swr_convert(in->pack, out->extended_data, out->nb_samples,
                        (const uint8_t **)frame->extended_data, frame->nb_samples) < 0) {
            av_frame_free(&out);
            return MB_EIO;
        }
    }
    if (!out)
        return MB_EIO;
    if (!s_queue_push(&r->queue, out)) {
        av_frame_free(&out);
        return MB_EINTR;
    }
    return 0;
}

/*  The input layout for swr: the decoder's, or the default for its count. */
static void s_in_layout(const AVFrame *frame, AVChannelLayout *layout)
{
    if (frame->ch_layout.order != AV_CHANNEL_ORDER_UNSPEC &&
        av_channel_layout_check(&frame->ch_layout))
        av_channel_layout_copy(layout, &frame->ch_layout);
    else
        av_channel_layout_default(layout, frame->ch_layout.nb_channels);
}

/*  The first frame fixes the format: sets up the resampler and the rungs
    and starts their threads. */
static int s_configure(s_input_t *in, s_ladder_t *ladder, const AVFrame *frame, char *why,
                       size_t why_len)
{
    const transcode_ladder_opts_t *opts = ladder->opts;
    in->rate = frame->sample_rate;
    in->channels = frame->ch_layout.nb_channels;
    in->format = frame->format;
    if (in->rate <= 0 || in->channels <= 0) {
        s_why(why, why_len, "the master's decoder gave no sample rate or channels");
        return MB_EPROTO;
    }
    AVChannelLayout in_layout = {0}, stereo = {0};
    s_in_layout(frame, &in_layout);
    av_channel_layout_default(&stereo, 2);
    int rc = swr_alloc_set_opts2(&in->swr, &stereo, AV_SAMPLE_FMT_FLTP, TRANSCODE_RATE, &in_layout,
                                 in->format, in->rate, 0, NULL);
    if (rc >= 0)
        rc = swr_init(in->swr);
    if (rc < 0) {
        av_channel_layout_uninit(&in_layout);
        s_why(why, why_len, "cannot resample %d Hz, %d channels", in->rate, in->channels);
        return MB_EPROTO;
    }
    in->fifo = av_audio_fifo_alloc(AV_SAMPLE_FMT_FLTP, 2, 4 * S_AAC_FRAME);

    for (size_t i = 0; i < S_AAC_RUNGS; i++) {
        s_rung_t *r = &ladder->rungs[ladder->n_rungs++];
        r->ladder = ladder;
        s_queue_init(&r->queue);
        if ((rc = s_rung_aac(r, &s_aac_rungs[i], opts->out_dir)) != 0) {
            s_why(why, why_len, "%s", r->why);
            break;
        }
    }
    enum AVSampleFormat flac = AV_SAMPLE_FMT_NONE;
    if (rc == 0 && opts->lossless)
        flac = transcode_lossless_format(in->dec, in->format);
    if (rc == 0 && flac != AV_SAMPLE_FMT_NONE) {
        s_rung_t *r = &ladder->rungs[ladder->n_rungs++];
        r->ladder = ladder;
        s_queue_init(&r->queue);
        const AVCodecParameters *par = in->fmt->streams[in->stream]->codecpar;
        /* A FLAC master's frames go in as they are: bit-exact, no encode.
           Needs its STREAMINFO (34 bytes) for the mp4 sample entry. */
        bool copy = par->codec_id == AV_CODEC_ID_FLAC && par->extradata_size >= 34;
        if (!copy) {
            in->flac_format = flac;
            if (av_sample_fmt_is_planar(in->format)) {
                rc = swr_alloc_set_opts2(&in->pack, &in_layout, flac, in->rate, &in_layout,
                                         in->format, in->rate, 0, NULL);
                if (rc >= 0)
                    rc = swr_init(in->pack);
                if (rc < 0)
                    rc = MB_EIO;
            }
        }
        if (rc == 0 && (rc = s_rung_flac(r, copy ? par : NULL, in->dec, flac, opts->out_dir)) != 0)
            s_why(why, why_len, "%s", r->why);
    }
    av_channel_layout_uninit(&in_layout);
    for (size_t i = 0; rc == 0 && i < ladder->n_rungs; i++)
        if ((rc = s_rung_start(&ladder->rungs[i])) != 0)
            s_why(why, why_len, "%s", ladder->rungs[i].why);
    if (rc == 0)
        in->configured = true;
    return rc;
}

static s_rung_t *s_flac_rung(s_ladder_t *ladder, s_kind_t kind)
{
    for (size_t i = 0; i < ladder->n_rungs; i++)
        if (ladder->rungs[i].kind == kind)
            return &ladder->rungs[i];
    return NULL;
}

/*  One decoded frame to the meter, the AAC rungs and the FLAC encoder. */
static int s_frame(s_input_t *in, s_ladder_t *ladder, const AVFrame *frame, char *why,
                   size_t why_len)
{
    int rc;
    if (!in->configured && (rc = s_configure(in, ladder, frame, why, why_len)) != 0)
        return rc;
    if (frame->sample_rate != in->rate || frame->ch_layout.nb_channels != in->channels ||
        frame->format != in->format) {
        s_why(why, why_len, "the master changes format midway (%d Hz, %d channels at %.1f s)",
              frame->sample_rate, frame->ch_layout.nb_channels, (double)in->decoded / in->rate);
        return MB_EPROTO;
    }
    in->decoded += frame->nb_samples;
    s_rung_t *flac =
        in->flac_format != AV_SAMPLE_FMT_NONE ? s_flac_rung(ladder, S_FLAC_ENCODE) : NULL;
    if (flac && (rc = s_push_flac(in, flac, frame)) != 0)
        return rc;
    return s_resample(in, ladder, frame);
}

/*  Drains the decoder of what `pkt` (NULL: end) gives. */
static int s_decode(s_input_t *in, s_ladder_t *ladder, const AVPacket *pkt, AVFrame *frame,
                    char *why, size_t why_len)
{
    int rc = avcodec_send_packet(in->dec, pkt);
    if (rc == AVERROR_INVALIDDATA) {
        in->damaged++;
        return 0;
    }
    if (rc < 0 && rc != AVERROR_EOF) {
        char err[AV_ERROR_MAX_STRING_SIZE];
        s_why(why, why_len, "decoding the master failed: %s", s_averr(rc, err));
        return MB_EPROTO;
    }
    for (;;) {
        rc = avcodec_receive_frame(in->dec, frame);
        if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF)
            return 0;
        if (rc == AVERROR_INVALIDDATA) {
            in->damaged++;
            continue;
        }
        if (rc < 0) {
            char err[AV_ERROR_MAX_STRING_SIZE];
            s_why(why, why_len, "decoding the master failed: %s", s_averr(rc, err));
            return MB_EPROTO;
        }
        rc = frame->nb_samples > 0 ? s_frame(in, ladder, frame, why, why_len) : 0;
        av_frame_unref(frame);
        if (rc)
            return rc;
    }
}

/*  Calls the tick at most once a second. */
static int s_tick(s_input_t *in, const transcode_ladder_opts_t *opts)
{
    if (!opts->tick)
        return 0;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long elapsed =
        (now.tv_sec - in->last_tick.tv_sec) * 1000000000L + (now.tv_nsec - in->last_tick.tv_nsec);
    if (elapsed < S_TICK_NS)
        return 0;
    in->last_tick = now;
    return opts->tick(opts->tick_arg) ? MB_EINTR : 0;
}

/*  A FLAC master's packet to the copy rung, timed by the running sum of
    durations (the demuxer's timestamps of damaged files are not trusted). */
static int s_copy_packet(s_input_t *in, s_rung_t *r, const AVPacket *pkt, int64_t *copy_pts,
                         char *why, size_t why_len)
{
    AVRational tb = in->fmt->streams[in->stream]->time_base;
    int64_t duration = av_rescale_q(pkt->duration, tb, (AVRational){1, in->dec->sample_rate});
    if (duration <= 0) {
        s_why(why, why_len, "a FLAC frame of the master has no duration");
        return MB_EPROTO;
    }
    AVPacket *copy = av_packet_clone(pkt);
    if (!copy)
        return MB_EIO;
    copy->pts = copy->dts = *copy_pts;
    copy->duration = duration;
    copy->pos = -1;
    *copy_pts += duration;
    if (!s_queue_push(&r->queue, copy)) {
        av_packet_free(&copy);
        return MB_EINTR;
    }
    return 0;
}

/*  Reads and decodes the whole master. */
static int s_pump(s_input_t *in, s_ladder_t *ladder, char *why, size_t why_len)
{
    AVPacket *pkt = av_packet_alloc();
    AVFrame *frame = av_frame_alloc();
    int64_t copy_pts = 0;
    int rc = 0;
    /* Packets before the first decoded frame wait for the rungs to exist. */
    AVPacket **early = NULL;
    size_t n_early = 0;
    for (;;) {
        if ((rc = s_tick(in, ladder->opts)) != 0) {
            s_why(why, why_len, "stopped");
            ladder->stopped = true;
            break;
        }
        if (atomic_load(&ladder->failed)) {
            rc = MB_EINTR;
            break;
        }
        int r = av_read_frame(in->fmt, pkt);
        if (r == AVERROR_EOF)
            break;
        if (r < 0) {
            char err[AV_ERROR_MAX_STRING_SIZE];
            if (r == AVERROR(EIO) || r == AVERROR(ENOMEM)) {
                s_why(why, why_len, "reading the master failed: %s", s_averr(r, err));
                rc = MB_EIO;
            } else {
                s_why(why, why_len, "the master is damaged: %s", s_averr(r, err));
                rc = MB_EPROTO;
            }
            break;
        }
        if (pkt->stream_index != in->stream) {
            av_packet_unref(pkt);
            continue;
        }
        in->packets++;
        if (!in->configured) {
            early = mb_realloc(early, (n_early + 1) * sizeof *early);
            early[n_early++] = av_packet_clone(pkt);
        }
        rc = s_decode(in, ladder, pkt, frame, why, why_len);
        s_rung_t *copy = in->configured ? s_flac_rung(ladder, S_FLAC_COPY) : NULL;
        if (rc == 0 && copy) {
            for (size_t i = 0; rc == 0 && i < n_early; i++)
                rc = s_copy_packet(in, copy, early[i], &copy_pts, why, why_len);
            if (n_early == 0)
                rc = s_copy_packet(in, copy, pkt, &copy_pts, why, why_len);
        }
        if (in->configured) {
            for (size_t i = 0; i < n_early; i++)
                av_packet_free(&early[i]);
            n_early = 0;
        }
        av_packet_unref(pkt);
        if (rc)
            break;
    }
    if (rc == 0)
        rc = s_decode(in, ladder, NULL, frame, why, why_len);
    for (size_t i = 0; i < n_early; i++)
        av_packet_free(&early[i]);
    free(early);
    av_packet_free(&pkt);
    av_frame_free(&frame);
    if (rc == 0 && !in->configured) {
        s_why(why, why_len, "the master holds no decodable audio");
        rc = MB_EPROTO;
    }
    if (rc == 0 && in->damaged > S_MAX_DAMAGED &&
        in->damaged * 100 > in->packets * S_MAX_DAMAGED_PCT) {
        s_why(why, why_len,
              "the master is damaged: %" PRId64 " of %" PRId64 " packets do not decode",
              in->damaged, in->packets);
        rc = MB_EPROTO;
    }
    if (rc == 0)
        rc = s_resample(in, ladder, NULL);
    return rc;
}

/*  A master that decodes to clearly less than its header announces was
    cut short (an interrupted copy): refuse it rather than publish half a
    song. */
static int s_check_length(const s_input_t *in, char *why, size_t why_len)
{
    const AVStream *st = in->fmt->streams[in->stream];
    if (st->duration <= 0 || st->duration == AV_NOPTS_VALUE ||
        in->fmt->duration_estimation_method == AVFMT_DURATION_FROM_BITRATE)
        return 0;
    double declared = (double)st->duration * av_q2d(st->time_base);
    double decoded = (double)in->decoded / in->rate;
    if (decoded + S_TRUNCATED_S < declared) {
        s_why(why, why_len,
              "the master is truncated: it decodes to %.1f s of the %.1f s it declares", decoded,
              declared);
        return MB_EPROTO;
    }
    return 0;
}

static int s_write_master(const char *dir, const char *name, const transcode_ladder_result_t *res,
                          bool free_only)
{
    s_text_t t = {0};
    s_text_add(&t, "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for (size_t i = 0; i < res->n_rungs; i++) {
        const transcode_rung_t *r = &res->rungs[i];
        if (free_only && !r->free_tier)
            continue;
        s_text_add(&t,
                   "#EXT-X-STREAM-INF:BANDWIDTH=%" PRIu64 ",AVERAGE-BANDWIDTH=%" PRIu64
                   ",CODECS=\"%s\"\n%s/index.m3u8\n",
                   r->bandwidth, r->average_bandwidth, r->codecs, r->name);
    }
    int rc = s_write_file(dir, name, t.data, t.len);
    free(t.data);
    return rc;
}

static int s_fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return MB_EIO;
    int rc = fsync(fd) == 0 ? 0 : MB_EIO;
    close(fd);
    return rc;
}

int transcode_ladder_run(const transcode_ladder_opts_t *opts, transcode_ladder_result_t *result,
                         char *why, size_t why_len)
{
    memset(result, 0, sizeof *result);
    why[0] = '\0';
    if (!opts || !opts->input || !opts->out_dir) {
        s_why(why, why_len, "no input or output folder");
        return MB_EINVAL;
    }
    s_ladder_t *ladder = mb_calloc(1, sizeof *ladder);
    ladder->opts = opts;
    atomic_init(&ladder->failed, false);
    s_input_t in;
    int rc = s_input_open(&in, opts->input, why, why_len);
    if (rc == 0)
        rc = s_pump(&in, ladder, why, why_len);
    if (rc)
        s_cancel_all(ladder);
    for (size_t i = 0; i < ladder->n_rungs; i++)
        s_queue_end(&ladder->rungs[i].queue);
    for (size_t i = 0; i < ladder->n_rungs; i++) {
        s_rung_t *r = &ladder->rungs[i];
        if (r->started)
            pthread_join(r->thread, NULL);
        /* A rung's own failure explains best: the producer only saw its
           queue cancelled (MB_EINTR). */
        bool producer_own = rc != 0 && (rc != MB_EINTR || ladder->stopped);
        if (!producer_own && r->started && r->rc && r->rc != MB_EINTR) {
            rc = r->rc;
            s_why(why, why_len, "%s", r->why);
        }
    }
    if (rc == 0 && in.configured)
        rc = s_check_length(&in, why, why_len);
    if (rc == 0) {
        transcode_loudness_result(in.meter, &result->loudness);
        result->gain_db = transcode_loudness_gain(&result->loudness, TRANSCODE_TARGET_LUFS,
                                                  TRANSCODE_CEILING_DBTP);
        result->duration_ms = in.decoded * 1000 / in.rate;
        for (size_t i = 0; i < ladder->n_rungs; i++) {
            result->rungs[result->n_rungs++] = ladder->rungs[i].info;
            if (ladder->rungs[i].kind != S_AAC) {
                result->lossless = true;
                result->flac_copied = ladder->rungs[i].kind == S_FLAC_COPY;
            }
        }
        if (s_write_master(opts->out_dir, "master.m3u8", result, false) != 0 ||
            s_write_master(opts->out_dir, "master-free.m3u8", result, true) != 0) {
            s_why(why, why_len, "cannot write the master playlists: %s", strerror(errno));
            rc = MB_EIO;
        }
        for (size_t i = 0; rc == 0 && i < ladder->n_rungs; i++) {
            char dir[4096];
            snprintf(dir, sizeof dir, "%s/%s", opts->out_dir, ladder->rungs[i].info.name);
            rc = s_fsync_path(dir);
        }
        if (rc == 0)
            rc = s_fsync_path(opts->out_dir);
        if (rc && !why[0])
            s_why(why, why_len, "cannot sync %s: %s", opts->out_dir, strerror(errno));
    }
    for (size_t i = 0; i < ladder->n_rungs; i++)
        s_rung_free(&ladder->rungs[i]);
    s_input_free(&in);
    free(ladder);
    if (rc == MB_EINTR && !why[0])
        s_why(why, why_len, "stopped");
    return rc;
}
