/*  media — what the gateway needs to serve /media/ itself: URL rules,
    entitlement, opening files safely under the data folder, Range,
    ETag and the content types, each tested on its own, and the bodies of
    the responses (gateway.c builds the rest of them).

        /media/<token>/<version>/<path>     HLS under a signed grant
        /covers/<hash>.jpg                  cover images, public
        /media/covers/<hash>.jpg            the same

    <token> is an mb_media token for <version>; <version> is
    [A-Za-z0-9_-]{1,64}; <path> is 1..3 segments of [A-Za-z0-9._-], none
    starting with '.' (so no "..", no hidden files), none empty (so no
    "//" and no trailing '/'). A cover name is a blob's name, 64
    lower-case hex, then ".jpg": the transcode actor stores each cover
    size as a JPEG blob and names it so (actors/transcode/README.md).
    Anything else is not found: a URL that breaks a rule says nothing
    about the tree.

    Files are opened below $MUSICBUS_DATA/blobs/hls/<version>/ and, for
    covers, $MUSICBUS_DATA/blobs/<2 hex>/ without following any symbolic link
    (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, or, where openat2 is
    missing, one openat(O_NOFOLLOW) per segment), and only regular files
    are served. */
#ifndef GW_MEDIA_H
#define GW_MEDIA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "mb_media.h"

#define GW_MEDIA_PREFIX "/media/"
#define GW_COVERS_PREFIX "/covers/"
#define GW_MEDIA_SEGMENTS_MAX 3  /* segments of <path> below the version */
#define GW_MEDIA_SEGMENT_MAX 128 /* bytes of one of them */
#define GW_MEDIA_REL_MAX (64 + 1 + GW_MEDIA_SEGMENTS_MAX * (GW_MEDIA_SEGMENT_MAX + 1))
#define GW_MEDIA_ETAG_MAX 64      /* bytes of an ETag value, quotes and NUL included */
#define GW_MEDIA_HTTP_DATE_MAX 32 /* "Sun, 06 Nov 1994 08:49:37 GMT" and a NUL */

typedef enum {
    GW_MEDIA_HLS,   /* under a grant */
    GW_MEDIA_COVER, /* a cover image */
} gw_media_kind_t;

/*  A parsed /media/ URL. Pointers are into the URL given to
    gw_media_parse(). */
typedef struct {
    gw_media_kind_t kind;
    const char *token; /* HLS: the token */
    size_t token_len;
    const char *version; /* HLS: the version */
    size_t version_len;
    const char *path; /* HLS: <path> (below the version); COVER: the file name */
    size_t path_len;
    size_t n_segments; /* of path */
    const char *last;  /* the last segment of path, the file's name */
} gw_media_url_t;

/*  Parses `url` (starting with GW_MEDIA_PREFIX, already percent-decoded).
    Returns 0, or MB_ENOTFOUND when it breaks a rule above. */
int gw_media_parse(const char *url, gw_media_url_t *out);

/*  Maps a request under a grant of `entitlement` to the file to serve,
    relative to the hls folder, into rel[GW_MEDIA_REL_MAX]:
    "master.m3u8" is "<version>/master-free.m3u8" for a free grant (the
    master that lists only the free rungs) and "<version>/master.m3u8"
    for a premium one; a free grant may otherwise fetch only below the
    rungs a64/ and a128/; a premium grant anything. Returns 0, or
    MB_EINVAL (a 403) when the grant does not cover the path. */
int gw_media_map(const gw_media_url_t *url, mb_media_entitlement_t entitlement, char *rel);

/*  Writes into rel[GW_MEDIA_REL_MAX] the blob path of a cover,
    "<2 hex>/<64 hex>", relative to the blob store. Returns 0, or
    MB_EINVAL when `url` is not a cover. */
int gw_media_cover_rel(const gw_media_url_t *url, char *rel);

/*  True when the file starts like a JPEG (FF D8 FF). Covers are blobs,
    and so are audio masters: a hash alone must not fetch a master. */
bool gw_media_is_jpeg(int fd);

/*  mb_media_verify(), same arguments and results, remembering the last
    grants it accepted (each until it expires) so that the segments of
    one track cost one HMAC. Tokens are compared in constant time. Per
    thread; no lock. */
int gw_media_verify(const mb_media_key_t *key, const char *token, size_t len, const char *version,
                    size_t version_len, uint64_t now, mb_media_entitlement_t *entitlement);

/*  Reads the expiry (Unix seconds) of a token that mb_media_verify()
    accepted (its first 8 bytes, mb_media.h). Returns 0 for anything
    else. */
uint64_t gw_media_token_expiry(const char *token, size_t len);

/*  Files under one folder, opened without following links. */
typedef struct gw_media_root gw_media_root_t;

/*  A root for the folder `dir`, which need not exist yet: it is opened
    (O_PATH) on first use and again after each failure. Never NULL. */
gw_media_root_t *gw_media_root_new(const char *dir);
void gw_media_root_destroy(gw_media_root_t **self_p);

/*  Opens regular file `rel` ("v1/a128/seg-00001.m4s": segments checked
    by the caller as gw_media_parse() does) below the root read-only, and
    fstat()s it into *st. Returns 0 with *fd (the caller closes it);
    MB_ENOTFOUND when it does not exist, is not a regular file, or a
    symbolic link is on the way (or the root is missing); MB_EAGAIN when
    out of descriptors; MB_EIO otherwise. */
int gw_media_open(gw_media_root_t *self, const char *rel, int *fd, struct stat *st);

/*  What a Range header asks of a representation of `size` bytes. */
typedef enum {
    GW_RANGE_NONE,          /* absent, not bytes, malformed, or several ranges: send it all */
    GW_RANGE_ONE,           /* one satisfiable range: *offset, *length */
    GW_RANGE_UNSATISFIABLE, /* 416 */
} gw_range_t;

/*  Reads the Range header `header` (NULL when absent): "bytes=A-B",
    "bytes=A-", "bytes=-N". Several ranges are answered with the whole
    representation (200) when any of them is satisfiable, else 416: a
    player asks for one, and multipart/byteranges buys nothing here. */
gw_range_t gw_media_range(const char *header, uint64_t size, uint64_t *offset, uint64_t *length);

/*  Writes the strong ETag of the file `st` describes: "\"<inode>-<size>-
    <mtime ns>\"" in hex. Files under a version and covers are never
    rewritten in place (a new version is a new folder), so this changes
    exactly when the bytes could have. */
void gw_media_etag(const struct stat *st, char out[GW_MEDIA_ETAG_MAX]);

/*  True when If-None-Match value `header` names `etag` (weak comparison,
    RFC 9110 13.1.2) or is "*". */
bool gw_media_etag_listed(const char *header, const char *etag);

/*  Writes the IMF-fixdate of `t`. */
void gw_media_http_date(int64_t t, char out[GW_MEDIA_HTTP_DATE_MAX]);

/*  Parses an IMF-fixdate. Returns true with *t set. */
bool gw_media_parse_http_date(const char *text, int64_t *t);

/*  The Content-Type of file `name` by its extension: .m3u8
    application/vnd.apple.mpegurl, .m4s/.mp4/.m4a audio/mp4, .jpg image/jpeg,
    ... application/octet-stream for the rest. Static. */
const char *gw_media_content_type(const char *name);

/* ---- response bodies (MHD) ---- */

struct MHD_Response;

/*  Files up to this size are sent from a read-only mapping, headers and
    body in one sendmsg; bigger ones with sendfile. The environment
    variable overrides it (bytes; 0: always sendfile), for measuring. */
#define GW_MEDIA_ENV_MAP_MAX "MUSICBUS_MEDIA_MAP_MAX"
#define GW_MEDIA_MAP_MAX (4 * 1024 * 1024)
/*  Bytes mapped at once, all files: past it, sendfile. */
#define GW_MEDIA_MAPPED_MAX (256 * 1024 * 1024)
/*  A mapping no response uses any more is kept this long for the next
    request of its file, and this many bytes of such at most: what the
    gateway keeps resident for it when idle. */
#define GW_MEDIA_IDLE_MS 2000
#define GW_MEDIA_IDLE_MAX (2 * 1024 * 1024)

/*  The body of a 200 or 206: `length` bytes from `offset` of the regular
    file fd that `st` describes (gw_media_open()'s). Takes fd: it is
    closed now or with the response. A file is mapped when asked for
    again within GW_MEDIA_IDLE_MS (the first time, sendfile); responses
    in flight for it share that mapping, kept GW_MEDIA_IDLE_MS after the
    last is freed (media.c says why). Call from the thread that runs MHD.
    Returns NULL, fd closed, when MHD cannot build the response. */
struct MHD_Response *gw_media_body(int fd, const struct stat *st, uint64_t offset, uint64_t length);

/*  Unmaps the mappings no response used for GW_MEDIA_IDLE_MS. Each
    gw_media_body() does it too; a loop calling this every second or so
    keeps an idle gateway from holding up to GW_MEDIA_IDLE_MAX bytes of
    file pages until the next segment is asked for. Cheap when there is
    nothing to drop. Same thread as gw_media_body(). */
void gw_media_expire(void);

/*  Unmaps every mapping no response uses now. */
void gw_media_trim(void);

/*  Bytes mapped now, and in *n_files (when not NULL) how many files:
    both 0 once every response is freed and gw_media_trim() ran. */
size_t gw_media_mapped(size_t *n_files);

/*  True for playlists (.m3u8), which are cached briefly; the rest
    (segments, init, covers) are immutable. */
bool gw_media_is_playlist(const char *name);

#endif
