/*  transcode_cover — album cover art in a few sizes, made with FFmpeg's
    libraries (libavformat's image demuxers, libavcodec, libswscale).

    The source image (JPEG, PNG, WebP, BMP or GIF, as uploaded or as
    embedded in a master) is a blob; each size is a JPEG blob scaled to fit
    a square of that many pixels, aspect kept, never enlarged (a 500 px
    source stays 500 px in the 640 slot). Blobs are content-addressed, so
    an image's URL (/covers/<hash>.jpg at the gateway) never changes and
    can be cached for ever. */
#ifndef TRANSCODE_COVER_H
#define TRANSCODE_COVER_H

#include <msgpack.h>

#include "mb_blob.h"

#define TRANSCODE_COVER_SIZES 3                  /* 64, 300 and 640 px */
#define TRANSCODE_COVER_MAX_PIXELS (8192 * 8192) /* larger sources are refused */

typedef struct {
    int size;                       /* the slot: 64, 300 or 640 */
    int width, height;              /* of the JPEG */
    char hash[MB_BLOB_HEX_LEN + 1]; /* its blob */
} transcode_cover_image_t;

typedef struct {
    char source[MB_BLOB_HEX_LEN + 1]; /* the original's blob */
    int width, height;                /* of the original */
    transcode_cover_image_t images[TRANSCODE_COVER_SIZES];
} transcode_cover_t;

/*  The slot sizes, smallest first. */
extern const int transcode_cover_sizes[TRANSCODE_COVER_SIZES];

/*  Decodes blob `source` and stores its sizes as JPEG blobs into *cover.
    Returns 0; MB_EPROTO when it is not an image this takes (`why` says
    why); MB_EIO when storing failed. */
int transcode_cover_make(mb_blob_store_t *blobs, const char *source, transcode_cover_t *cover,
                         char *why, size_t why_len);

/*  {source, width, height, images: [{size, width, height, hash, url}]}
    with url "/covers/<hash>.jpg". */
void transcode_cover_pack(msgpack_packer *pk, const transcode_cover_t *cover);

/*  Reads what transcode_cover_pack() wrote. Returns false when it is not that. */
bool transcode_cover_read(const msgpack_object *o, transcode_cover_t *cover);

#endif
