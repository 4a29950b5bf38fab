/*  media — URL rules, entitlement, safe opening, Range and ETag for
    /media/; see media.h. */
#include "media.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <microhttpd.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "mb_alloc.h"
#include "mb_config.h"
#include "mb_error.h"
#include "mb_log.h"

#define S_VERSION_MAX 64
#define S_COVERS "covers"

/*  Rungs a free grant may fetch (mb_media.h: up to 128 kbit/s). */
static const char *const s_free_rungs[] = {"a64", "a128"};

static bool s_is_alnum(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/*  [A-Za-z0-9_-]{1,max} */
static bool s_word_ok(const char *s, size_t len, size_t max)
{
    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!s_is_alnum(s[i]) && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

/*  A segment of <path>: [A-Za-z0-9._-], not starting with '.'. */
static bool s_segment_ok(const char *s, size_t len)
{
    if (len == 0 || len > GW_MEDIA_SEGMENT_MAX || s[0] == '.')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!s_is_alnum(s[i]) && s[i] != '_' && s[i] != '-' && s[i] != '.')
            return false;
    return true;
}

/*  <64 lower-case hex>.jpg: a blob's name (mb_blob.h) and the extension. */
static bool s_cover_ok(const char *s, size_t len)
{
    return len == 68 && strspn(s, "0123456789abcdef") == 64 && !memcmp(s + 64, ".jpg", 4);
}

int gw_media_parse(const char *url, gw_media_url_t *out)
{
    memset(out, 0, sizeof *out);
    if (!strncmp(url, GW_COVERS_PREFIX, strlen(GW_COVERS_PREFIX))) {
        const char *name = url + strlen(GW_COVERS_PREFIX);
        if (!s_cover_ok(name, strlen(name)))
            return MB_ENOTFOUND;
        out->kind = GW_MEDIA_COVER;
        out->path = out->last = name;
        out->path_len = strlen(name);
        out->n_segments = 1;
        return 0;
    }
    size_t prefix = strlen(GW_MEDIA_PREFIX);
    if (strncmp(url, GW_MEDIA_PREFIX, prefix))
        return MB_ENOTFOUND;
    const char *seg[2 + GW_MEDIA_SEGMENTS_MAX];
    size_t len[2 + GW_MEDIA_SEGMENTS_MAX];
    size_t n = 0;
    const char *p = url + prefix;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t l = slash ? (size_t)(slash - p) : strlen(p);
        if (l == 0 || n == sizeof seg / sizeof seg[0])
            return MB_ENOTFOUND; /* "//", a trailing '/', or too deep */
        seg[n] = p;
        len[n++] = l;
        if (!slash)
            break;
        p = slash + 1;
    }
    if (len[0] == strlen(S_COVERS) && !memcmp(seg[0], S_COVERS, len[0])) {
        if (n != 2 || !s_cover_ok(seg[1], len[1]))
            return MB_ENOTFOUND;
        out->kind = GW_MEDIA_COVER;
        out->path = out->last = seg[1];
        out->path_len = len[1];
        out->n_segments = 1;
        return 0;
    }
    if (n < 3 || !s_word_ok(seg[0], len[0], MB_MEDIA_TOKEN_MAX - 1) ||
        !s_word_ok(seg[1], len[1], S_VERSION_MAX))
        return MB_ENOTFOUND;
    for (size_t i = 2; i < n; i++)
        if (!s_segment_ok(seg[i], len[i]))
            return MB_ENOTFOUND;
    out->kind = GW_MEDIA_HLS;
    out->token = seg[0];
    out->token_len = len[0];
    out->version = seg[1];
    out->version_len = len[1];
    out->path = seg[2];
    out->path_len = (size_t)(seg[n - 1] + len[n - 1] - seg[2]);
    out->n_segments = n - 2;
    out->last = seg[n - 1];
    return 0;
}

static bool s_path_is(const gw_media_url_t *url, const char *s)
{
    return url->path_len == strlen(s) && !memcmp(url->path, s, url->path_len);
}

int gw_media_map(const gw_media_url_t *url, mb_media_entitlement_t entitlement, char *rel)
{
    const char *path = url->path;
    size_t path_len = url->path_len;
    if (s_path_is(url, "master.m3u8")) {
        /* One URL for every listener; the grant picks the master. */
        if (entitlement == MB_MEDIA_FREE) {
            path = "master-free.m3u8";
            path_len = strlen(path);
        }
    } else if (entitlement != MB_MEDIA_PREMIUM) {
        bool ok = false;
        for (size_t i = 0; !ok && i < sizeof s_free_rungs / sizeof s_free_rungs[0]; i++) {
            size_t l = strlen(s_free_rungs[i]);
            ok = url->n_segments >= 2 && path_len > l && path[l] == '/' &&
                 !memcmp(path, s_free_rungs[i], l);
        }
        if (!ok)
            return MB_EINVAL;
    }
    snprintf(rel, GW_MEDIA_REL_MAX, "%.*s/%.*s", (int)url->version_len, url->version, (int)path_len,
             path);
    return 0;
}

uint64_t gw_media_token_expiry(const char *token, size_t len)
{
    /* 12 characters carry the first 9 bytes: the expiry and the
       entitlement. */
    unsigned char raw[9];
    size_t raw_len = 0;
    if (len < 12 ||
        sodium_base642bin(raw, sizeof raw, token, 12, NULL, &raw_len, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) ||
        raw_len != 9)
        return 0;
    uint64_t t = 0;
    for (int i = 0; i < 8; i++)
        t = t << 8 | raw[i];
    return t;
}

/* ---- grants ---------------------------------------------------------------- */

/*  A player fetches every segment of a track with one URL prefix, so the
    same grant comes back every few seconds: verifying it (base64, HMAC)
    was the biggest user-space cost of a segment. A grant verified once
    verifies the same way until it expires, so the last few are kept,
    whole (token, version and key), and a token is compared in constant
    time: a near miss must not tell how near. Refusals are not kept. */
#define S_GRANTS 32 /* a power of two */

typedef struct {
    unsigned char key_bytes[MB_MEDIA_KEY_BYTES]; /* the key it was verified with */
    char token[MB_MEDIA_TOKEN_MAX];
    size_t token_len; /* 0: free slot */
    char version[S_VERSION_MAX];
    size_t version_len;
    uint64_t expires;
    mb_media_entitlement_t entitlement;
} s_grant_t;

/*  Per thread: the gateway verifies in its loop thread only, and nothing
    needs a lock. */
static _Thread_local s_grant_t s_grants[S_GRANTS];

static size_t s_grant_slot(const char *token, size_t len)
{
    /* The token's last characters are the MAC's: uniform, and chosen by
       whoever holds the key, not by the client. */
    uint64_t h = 1469598103934665603u;
    for (size_t i = len > 8 ? len - 8 : 0; i < len; i++)
        h = (h ^ (unsigned char)token[i]) * 1099511628211u;
    return (size_t)(h >> 32) & (S_GRANTS - 1);
}

int gw_media_verify(const mb_media_key_t *key, const char *token, size_t len, const char *version,
                    size_t version_len, uint64_t now, mb_media_entitlement_t *entitlement)
{
    if (!token || len == 0 || len >= MB_MEDIA_TOKEN_MAX || !version || version_len == 0 ||
        version_len > S_VERSION_MAX)
        return mb_media_verify(key, token, len, version, version_len, now, entitlement);
    s_grant_t *g = &s_grants[s_grant_slot(token, len)];
    if (g->token_len == len && g->version_len == version_len &&
        !memcmp(g->version, version, version_len) &&
        !memcmp(g->key_bytes, key->key, sizeof g->key_bytes) &&
        sodium_memcmp(g->token, token, len) == 0) {
        if (now >= g->expires)
            return MB_ETIMEDOUT;
        *entitlement = g->entitlement;
        return 0;
    }
    int rc = mb_media_verify(key, token, len, version, version_len, now, entitlement);
    if (rc == 0) {
        memcpy(g->key_bytes, key->key, sizeof g->key_bytes);
        memcpy(g->token, token, len);
        g->token_len = len;
        memcpy(g->version, version, version_len);
        g->version_len = version_len;
        g->expires = gw_media_token_expiry(token, len);
        g->entitlement = *entitlement;
    }
    return rc;
}

/* ---- opening files --------------------------------------------------------- */

struct gw_media_root {
    char *dir;
    int fd; /* O_PATH of dir, or -1 until it opens */
};

/*  openat2() is Linux 5.6+; a kernel or sandbox without it gets the walk. */
static bool s_no_openat2;

gw_media_root_t *gw_media_root_new(const char *dir)
{
    gw_media_root_t *self = mb_calloc(1, sizeof *self);
    self->dir = mb_strdup(dir);
    self->fd = -1;
    return self;
}

void gw_media_root_destroy(gw_media_root_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    gw_media_root_t *self = *self_p;
    if (self->fd >= 0)
        close(self->fd);
    free(self->dir);
    free(self);
    *self_p = NULL;
}

static int s_errno_code(int err)
{
    switch (err) {
    case EMFILE:
    case ENFILE:
    case ENOMEM:
        return MB_EAGAIN;
    case ENOENT:
    case ENOTDIR:
    case ELOOP:  /* a symbolic link on the way */
    case EXDEV:  /* RESOLVE_BENEATH: the path would leave the root */
    case EACCES: /* not ours to read is not there, as far as a client knows */
    case EPERM:
    case ENXIO:
    case ENAMETOOLONG:
        return MB_ENOTFOUND;
    default:
        return MB_EIO;
    }
}

/*  O_NONBLOCK: a FIFO planted in the tree must not hang the loop on open
    (it is then refused as not a regular file). */
#define S_FILE_FLAGS (O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW)

/*  One openat(O_NOFOLLOW) per segment: no link is followed anywhere, and
    the segments cannot name ".." (the caller's rules). */
static int s_open_walk(int root, const char *rel)
{
    char buf[GW_MEDIA_REL_MAX];
    snprintf(buf, sizeof buf, "%s", rel);
    int dir = root;
    char *seg = buf;
    for (;;) {
        char *slash = strchr(seg, '/');
        if (!slash)
            break;
        *slash = '\0';
        int next = openat(dir, seg, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int saved = errno;
        if (dir != root)
            close(dir);
        if (next < 0) {
            errno = saved;
            return -1;
        }
        dir = next;
        seg = slash + 1;
    }
    int fd = openat(dir, seg, S_FILE_FLAGS);
    int saved = errno;
    if (dir != root)
        close(dir);
    errno = saved;
    return fd;
}

static int s_open_beneath(int root, const char *rel)
{
    if (!s_no_openat2) {
        struct open_how how = {
            .flags = S_FILE_FLAGS,
            .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        int fd = (int)syscall(SYS_openat2, root, rel, &how, sizeof how);
        if (fd >= 0 || (errno != ENOSYS && errno != EPERM && errno != E2BIG))
            return fd;
        /* EPERM: a seccomp filter that refuses what it does not know. */
        s_no_openat2 = true;
        mb_info(0, "media: openat2 is not available (%s); opening one segment at a time",
                strerror(errno));
    }
    return s_open_walk(root, rel);
}

int gw_media_open(gw_media_root_t *self, const char *rel, int *fd, struct stat *st)
{
    *fd = -1;
    if (self->fd < 0) {
        self->fd = open(self->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (self->fd < 0)
            return s_errno_code(errno);
    }
    int f = s_open_beneath(self->fd, rel);
    if (f < 0)
        return s_errno_code(errno);
    if (fstat(f, st) != 0 || !S_ISREG(st->st_mode)) {
        close(f);
        return MB_ENOTFOUND;
    }
    *fd = f;
    return 0;
}

/* ---- Range, ETag, dates, types ---------------------------------------------------- */

/*  Reads digits at *p (at least one), saturating at UINT64_MAX. */
static bool s_digits(const char **p, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    if (*s < '0' || *s > '9')
        return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
    }
    *p = s;
    *out = v;
    return true;
}

gw_range_t gw_media_range(const char *h, uint64_t size, uint64_t *offset, uint64_t *length)
{
    if (!h)
        return GW_RANGE_NONE;
    h += strspn(h, " \t");
    if (strncasecmp(h, "bytes", 5))
        return GW_RANGE_NONE;
    h += 5;
    h += strspn(h, " \t");
    if (*h++ != '=')
        return GW_RANGE_NONE;
    unsigned specs = 0, satisfiable = 0;
    uint64_t first_off = 0, first_len = 0;
    for (;;) {
        h += strspn(h, " \t");
        if (*h == ',') {
            h++; /* empty list elements are allowed (RFC 9110 5.6.1) */
            continue;
        }
        if (!*h)
            break;
        uint64_t a, b = UINT64_MAX, off = 0, len = 0;
        bool sat;
        if (*h == '-') {
            h++;
            if (!s_digits(&h, &a))
                return GW_RANGE_NONE;
            /* The last a bytes. */
            sat = a > 0 && size > 0;
            len = a < size ? a : size;
            off = size - len;
        } else {
            if (!s_digits(&h, &a) || *h++ != '-')
                return GW_RANGE_NONE;
            if (*h >= '0' && *h <= '9') {
                s_digits(&h, &b);
                if (b < a)
                    return GW_RANGE_NONE; /* invalid: the whole header is ignored */
            }
            sat = a < size;
            if (sat) {
                off = a;
                len = (b < size - 1 ? b : size - 1) - a + 1;
            }
        }
        h += strspn(h, " \t");
        if (*h && *h != ',')
            return GW_RANGE_NONE;
        specs++;
        if (sat && satisfiable++ == 0) {
            first_off = off;
            first_len = len;
        }
    }
    if (specs == 0)
        return GW_RANGE_NONE;
    if (satisfiable == 0)
        return GW_RANGE_UNSATISFIABLE;
    if (specs > 1)
        return GW_RANGE_NONE;
    *offset = first_off;
    *length = first_len;
    return GW_RANGE_ONE;
}

/*  One version of one file: what the ETag, the mappings and the
    seen-lately table tell files apart by. A file rewritten in place gets
    a new size or mtime. */
typedef struct {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim;
} s_file_id_t;

static s_file_id_t s_file_id(const struct stat *st)
{
    return (s_file_id_t){st->st_dev, st->st_ino, st->st_size, st->st_mtim};
}

static bool s_file_id_eq(const s_file_id_t *a, const s_file_id_t *b)
{
    return a->ino == b->ino && a->dev == b->dev && a->size == b->size &&
           a->mtim.tv_sec == b->mtim.tv_sec && a->mtim.tv_nsec == b->mtim.tv_nsec;
}

void gw_media_etag(const struct stat *st, char out[GW_MEDIA_ETAG_MAX])
{
    /* Responses for one file follow each other: the last one is kept. */
    static _Thread_local struct {
        s_file_id_t id;
        char etag[GW_MEDIA_ETAG_MAX];
    } last;
    s_file_id_t id = s_file_id(st);
    if (last.etag[0] && s_file_id_eq(&last.id, &id)) {
        memcpy(out, last.etag, GW_MEDIA_ETAG_MAX);
        return;
    }
    uint64_t mtime_ns = (uint64_t)st->st_mtim.tv_sec * 1000000000u + (uint64_t)st->st_mtim.tv_nsec;
    snprintf(out, GW_MEDIA_ETAG_MAX, "\"%" PRIx64 "-%" PRIx64 "-%" PRIx64 "\"",
             (uint64_t)st->st_ino, (uint64_t)st->st_size, mtime_ns);
    last.id = id;
    memcpy(last.etag, out, GW_MEDIA_ETAG_MAX);
}

bool gw_media_etag_listed(const char *h, const char *etag)
{
    if (!h)
        return false;
    size_t etag_len = strlen(etag);
    for (;;) {
        h += strspn(h, " \t,");
        if (!*h)
            return false;
        if (*h == '*')
            return true;
        if (!strncmp(h, "W/", 2))
            h += 2;
        if (*h != '"')
            return false; /* malformed: nothing after it can be trusted */
        const char *close = strchr(h + 1, '"');
        if (!close)
            return false;
        size_t len = (size_t)(close - h) + 1;
        if (len == etag_len && !memcmp(h, etag, len))
            return true;
        h = close + 1;
    }
}

void gw_media_http_date(int64_t t, char out[GW_MEDIA_HTTP_DATE_MAX])
{
    static _Thread_local struct {
        int64_t t;
        char date[GW_MEDIA_HTTP_DATE_MAX];
    } last;
    if (last.date[0] && last.t == t) {
        memcpy(out, last.date, GW_MEDIA_HTTP_DATE_MAX);
        return;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    /* strftime's %a and %b follow the locale; HTTP wants English. */
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    /* The remainders change nothing for a real date; they let the compiler
       see every field fits, at any optimisation level. */
    snprintf(out, GW_MEDIA_HTTP_DATE_MAX, "%s, %02u %s %04u %02u:%02u:%02u GMT",
             days[(unsigned)tm.tm_wday % 7u], (unsigned)tm.tm_mday % 100u,
             months[(unsigned)tm.tm_mon % 12u], (unsigned)(tm.tm_year + 1900) % 10000u,
             (unsigned)tm.tm_hour % 100u, (unsigned)tm.tm_min % 100u, (unsigned)tm.tm_sec % 100u);
    last.t = t;
    memcpy(last.date, out, GW_MEDIA_HTTP_DATE_MAX);
}

bool gw_media_parse_http_date(const char *text, int64_t *t)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    char wday[4], mon[4];
    int day, year, h, m, s, used = 0;
    if (!text ||
        sscanf(text, "%3s, %d %3s %d %d:%d:%d GMT%n", wday, &day, mon, &year, &h, &m, &s, &used) !=
            7 ||
        used == 0 || text[used] != '\0')
        return false;
    const char *found = strstr(months, mon);
    if (!found || (found - months) % 3 || day < 1 || day > 31 || year < 1970 || h > 23 || m > 59 ||
        s > 60)
        return false;
    struct tm tm = {.tm_year = year - 1900,
                    .tm_mon = (int)(found - months) / 3,
                    .tm_mday = day,
                    .tm_hour = h,
                    .tm_min = m,
                    .tm_sec = s};
    *t = (int64_t)timegm(&tm);
    return true;
}

static const char *s_ext(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : "";
}

const char *gw_media_content_type(const char *name)
{
    static const struct {
        const char *ext;
        const char *type;
    } types[] = {
        {"m3u8", "application/vnd.apple.mpegurl"},
        {"m4s", "audio/mp4"},
        {"mp4", "audio/mp4"}, /* init segments of audio renditions */
        {"m4a", "audio/mp4"},
        {"aac", "audio/aac"},
        {"ts", "video/mp2t"},
        {"flac", "audio/flac"},
        {"jpg", "image/jpeg"},
        {"jpeg", "image/jpeg"},
        {"png", "image/png"},
        {"vtt", "text/vtt"},
        {"json", "application/json"},
    };
    const char *ext = s_ext(name);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(ext, types[i].ext))
            return types[i].type;
    return "application/octet-stream";
}

int gw_media_cover_rel(const gw_media_url_t *url, char *rel)
{
    if (url->kind != GW_MEDIA_COVER || url->path_len != 68)
        return MB_EINVAL;
    snprintf(rel, GW_MEDIA_REL_MAX, "%.2s/%.64s", url->path, url->path);
    return 0;
}

bool gw_media_is_jpeg(int fd)
{
    unsigned char magic[3];
    return pread(fd, magic, sizeof magic, 0) == (ssize_t)sizeof magic &&
           !memcmp(magic, "\xff\xd8\xff", 3);
}

bool gw_media_is_playlist(const char *name)
{
    return !strcmp(s_ext(name), "m3u8");
}

/* ---- response bodies ------------------------------------------------------- */

/*  Why a mapping and not sendfile: libmicrohttpd 0.9.75 sends the headers
    of a response built on a file descriptor on their own and pushes them
    (a TCP segment and a wake-up of the client for ~400 bytes), then the
    body with sendfile in 128 KiB pieces, one loop turn each, with three
    setsockopt calls around. A response built on a buffer goes out with
    one sendmsg, headers and body together. The kernel copies the body
    from the mapping, which costs less than what it saves up to a few
    MiB (bench/README.md, media_bench).

    Mapping and unmapping cost tens of microseconds on a virtual machine
    (page tables, TLB flushes, more than the rest of the request), so one
    mapping of a file serves every response in flight for it, is made
    only for a file asked for again (s_seen_again), and lingers
    GW_MEDIA_IDLE_MS after the last response (GW_MEDIA_IDLE_MAX bytes of
    such at most, least recently released unmapped first): a popular
    segment is mapped once while players fetch it, and a segment fetched
    once goes by sendfile. When the files asked for again do not fit in
    GW_MEDIA_IDLE_MAX (one pushes another out), new mappings stop for
    GW_MEDIA_IDLE_MS: each would be made and unmapped for a response or
    two, which costs more than sendfile. What lingers is dropped on the
    next call after it expired, by gw_media_expire() (the gateway's loop
    may call it from time to time, so that an idle gateway keeps none),
    or by gw_media_trim().

    The mapped bytes are read by the kernel only: MHD hands them to
    sendmsg as they are (strace shows the mapping as the second iovec)
    and does not read them itself over plain HTTP. Files under a version and blobs are never
    rewritten or truncated in place (a new version is a new folder, a
    blob a new name), so the mapping cannot lose its pages. If one were
    truncated anyway, sendmsg would fail with EFAULT and MHD close that
    connection; nothing in the gateway touches the pages to fault.

    MHD calls the free callbacks from MHD_run() or MHD_destroy_response()
    in the gateway's one loop thread: the table needs no lock. */

typedef struct s_map {
    struct s_map *next;                  /* in its bucket */
    struct s_map *idle_prev, *idle_next; /* in the idle list while refs == 0 */
    s_file_id_t id;                      /* the file mapped */
    void *base; /* the whole file, read-only */
    size_t len;
    size_t bucket;
    unsigned refs;   /* responses using it */
    bool idle;       /* in the idle list (refs == 0 and released once) */
    int64_t idle_ms; /* when refs fell to 0 */
} s_map_t;

#define S_MAP_BUCKETS 64
static s_map_t *s_maps[S_MAP_BUCKETS];
static s_map_t *s_idle_head, *s_idle_tail; /* most recently released first */
static size_t s_mapped;                    /* bytes mapped, all files */
static size_t s_idle_bytes;                /* of which no response uses */
static size_t s_n_maps;
static int64_t s_no_maps_until; /* no new mapping before (ms): see s_map_release */

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t s_map_max(void)
{
    static long max = -1;
    if (max < 0)
        max = mb_config_env_long(GW_MEDIA_ENV_MAP_MAX, GW_MEDIA_MAP_MAX, 0, GW_MEDIA_MAPPED_MAX);
    return (size_t)max;
}

static size_t s_bucket(const struct stat *st)
{
    uint64_t h = ((uint64_t)st->st_ino ^ ((uint64_t)st->st_dev << 32)) * 0x9e3779b97f4a7c15u;
    return (size_t)(h >> 58); /* 6 bits: S_MAP_BUCKETS */
}

static void s_idle_unlink(s_map_t *m)
{
    if (m->idle_prev)
        m->idle_prev->idle_next = m->idle_next;
    else
        s_idle_head = m->idle_next;
    if (m->idle_next)
        m->idle_next->idle_prev = m->idle_prev;
    else
        s_idle_tail = m->idle_prev;
    m->idle_prev = m->idle_next = NULL;
    m->idle = false;
    s_idle_bytes -= m->len;
}

/*  Unmaps an idle mapping. */
static void s_map_drop(s_map_t *m)
{
    s_idle_unlink(m);
    s_map_t **p = &s_maps[m->bucket];
    while (*p != m)
        p = &(*p)->next;
    *p = m->next;
    munmap(m->base, m->len);
    s_mapped -= m->len;
    s_n_maps--;
    free(m);
}

/*  Unmaps idle mappings released before `before_ms`, oldest first. */
static void s_expire(int64_t before_ms)
{
    while (s_idle_tail && s_idle_tail->idle_ms < before_ms)
        s_map_drop(s_idle_tail);
}

static s_map_t *s_map_find(const struct stat *st)
{
    s_file_id_t id = s_file_id(st);
    for (s_map_t *m = s_maps[s_bucket(st)]; m; m = m->next)
        if (s_file_id_eq(&m->id, &id))
            return m;
    return NULL;
}

/*  Maps file fd, which `st` describes, and lists it. NULL when it would
    pass the budget or mmap fails (the caller sends with sendfile). */
static s_map_t *s_map_new(int fd, const struct stat *st)
{
    size_t len = (size_t)st->st_size;
    while (len > GW_MEDIA_MAPPED_MAX - s_mapped && s_idle_tail)
        s_map_drop(s_idle_tail);
    if (len > GW_MEDIA_MAPPED_MAX - s_mapped)
        return NULL;
    void *base = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED)
        return NULL;
    s_map_t *m = mb_calloc(1, sizeof *m);
    m->id = s_file_id(st);
    m->base = base;
    m->len = len;
    m->bucket = s_bucket(st);
    m->next = s_maps[m->bucket];
    s_maps[m->bucket] = m;
    s_mapped += len;
    s_n_maps++;
    return m;
}

static void s_map_use(s_map_t *m)
{
    if (m->refs++ == 0 && m->idle)
        s_idle_unlink(m);
}

/*  MHD's free callback: a response using the mapping is gone. The
    mapping lingers a little for the next request of the file. */
static void s_map_release(void *cls)
{
    s_map_t *m = cls;
    if (--m->refs > 0)
        return;
    m->idle = true;
    m->idle_ms = s_now_ms();
    m->idle_prev = NULL;
    m->idle_next = s_idle_head;
    if (s_idle_head)
        s_idle_head->idle_prev = m;
    else
        s_idle_tail = m;
    s_idle_head = m;
    s_idle_bytes += m->len;
    while (s_idle_bytes > GW_MEDIA_IDLE_MAX) {
        /* Another file's mapping pushed out by this one: the files asked
           for again do not fit in what may linger, so most new mappings
           would serve a response or two. Back to sendfile for a while. */
        if (s_idle_tail != m)
            s_no_maps_until = m->idle_ms + GW_MEDIA_IDLE_MS;
        s_map_drop(s_idle_tail);
    }
}

/*  Files asked for lately and not mapped: the first request of a file
    goes by sendfile, and one asked for again within GW_MEDIA_IDLE_MS is
    mapped. A player fetches each segment once, and mapping it for one
    response would cost more than it saves; a segment that many players
    fetch is mapped on the second request. One slot per bucket: a
    collision only delays a mapping. */
typedef struct {
    s_file_id_t id;
    int64_t ms; /* when; 0: empty */
} s_seen_t;

static s_seen_t s_seen[S_MAP_BUCKETS];

/*  True when the file `st` describes was asked for since `since_ms`;
    notes that it is asked for now, at `now_ms`. */
static bool s_seen_again(const struct stat *st, int64_t now_ms, int64_t since_ms)
{
    s_seen_t *e = &s_seen[s_bucket(st)];
    s_file_id_t id = s_file_id(st);
    bool again = e->ms >= since_ms && e->ms > 0 && s_file_id_eq(&e->id, &id);
    *e = (s_seen_t){id, now_ms};
    return again;
}

struct MHD_Response *gw_media_body(int fd, const struct stat *st, uint64_t offset, uint64_t length)
{
    int64_t now = s_now_ms();
    s_expire(now - GW_MEDIA_IDLE_MS);
    uint64_t size = (uint64_t)st->st_size;
    if (length > 0 && offset < size && length <= size - offset && size <= s_map_max()) {
        s_map_t *m = s_map_find(st);
        if (!m && s_seen_again(st, now, now - GW_MEDIA_IDLE_MS) && now >= s_no_maps_until)
            m = s_map_new(fd, st);
        if (m) {
            s_map_use(m);
            struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback_cls(
                (size_t)length, (char *)m->base + offset, s_map_release, m);
            if (resp) {
                close(fd);
                return resp;
            }
            s_map_release(m);
        }
    }
    /* Empty, too big, past the budget, or mmap failed: sendfile needs no
       address space. MHD closes fd with the response. */
    struct MHD_Response *resp = MHD_create_response_from_fd_at_offset64(length, fd, offset);
    if (!resp)
        close(fd);
    return resp;
}

void gw_media_trim(void)
{
    s_expire(INT64_MAX);
}

void gw_media_expire(void)
{
    s_expire(s_now_ms() - GW_MEDIA_IDLE_MS);
}

size_t gw_media_mapped(size_t *n_files)
{
    if (n_files)
        *n_files = s_n_maps;
    return s_mapped;
}
