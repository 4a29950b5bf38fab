/*  media: the rules of /media/ URLs, entitlement, opening files without
    following links, Range, ETag and dates, remembered grants and shared
    mappings, each on its own. The whole thing over HTTP is
    test_gw_http_media.c. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mb_error.h"
#include "media.h"

#define S_TOKEN "AAAAAGVT9IQCjdz1SFGoCL-bNiwu-VWdT1iiKXTp4UdmrJkv_jAZ5XM" /* expiry 1700000900 */

/*  Usage: parse the URL, map it under the grant, open the file. */
Test(gw_media, usage)
{
    gw_media_url_t url;
    cr_assert_eq(gw_media_parse("/media/" S_TOKEN "/v1/a128/seg-00001.m4s", &url), 0);
    cr_assert_eq(url.kind, GW_MEDIA_HLS);
    cr_assert_eq(url.token_len, 55);
    cr_assert_eq(url.version_len, 2);
    cr_assert_eq(strncmp(url.version, "v1", 2), 0);
    cr_assert_eq(url.n_segments, 2);
    cr_assert_str_eq(url.last, "seg-00001.m4s");
    char rel[GW_MEDIA_REL_MAX];
    cr_assert_eq(gw_media_map(&url, MB_MEDIA_FREE, rel), 0);
    cr_assert_str_eq(rel, "v1/a128/seg-00001.m4s");
    cr_assert_eq(gw_media_token_expiry(url.token, url.token_len), 1700000900u);
    cr_assert_str_eq(gw_media_content_type(url.last), "audio/mp4");
    cr_assert_not(gw_media_is_playlist(url.last));
}

Test(gw_media, url_rules)
{
    gw_media_url_t url;
    const char *ok[] = {
        "/media/" S_TOKEN "/v1/master.m3u8",
        "/media/" S_TOKEN "/v_1-X/a/b/c.m4s",
        "/media/t/v/x", /* the token's length is the signature's business */
        "/media/covers/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.jpg",
        "/covers/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.jpg",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        cr_assert_eq(gw_media_parse(ok[i], &url), 0, "%s", ok[i]);
    const char *bad[] = {
        "/media/",
        "/media/" S_TOKEN,
        "/media/" S_TOKEN "/v1",
        "/media/" S_TOKEN "/v1/",
        "/media/" S_TOKEN "/v1//master.m3u8",
        "/media/" S_TOKEN "//master.m3u8",
        "/media/" S_TOKEN "/v1/../v2/master.m3u8",
        "/media/" S_TOKEN "/v1/a128/../../etc/passwd",
        "/media/" S_TOKEN "/v1/..",
        "/media/" S_TOKEN "/v1/.hidden",
        "/media/" S_TOKEN "/v1/a/.m4s/x",
        "/media/" S_TOKEN "/v1/a/b/c/d.m4s", /* four segments */
        "/media/" S_TOKEN "/v.1/master.m3u8",
        "/media/" S_TOKEN "/../master.m3u8",
        "/media/" S_TOKEN "/v1/a b.m4s",
        "/media/" S_TOKEN "/v1/a%2e.m4s",
        "/media/" S_TOKEN "/v1/a\\b.m4s",
        "/media/" S_TOKEN "/v1/a:b",
        "/media/" S_TOKEN "/v1/\xc3\xa9",
        "/media/" S_TOKEN "=/v1/master.m3u8",
        "/media//" S_TOKEN "/v1/master.m3u8",
        "/media/covers/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef-300.jpg",
        "/media/covers/0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef.jpg",
        "/media/covers/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.png",
        "/media/covers/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde.jpg",
        "/media/covers/../hls/x",
        "/media/covers/x/y",
        "/covers/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.jpg/",
        "/covers/../0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.jpg",
        "/covers/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "/covers/",
        "/mediax/" S_TOKEN "/v1/master.m3u8",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(gw_media_parse(bad[i], &url), MB_ENOTFOUND, "%s", bad[i]);
    /* 65 characters of version, 129 of a segment. */
    char url_text[512];
    snprintf(url_text, sizeof url_text, "/media/%s/%065d/master.m3u8", S_TOKEN, 0);
    cr_assert_eq(gw_media_parse(url_text, &url), MB_ENOTFOUND);
    snprintf(url_text, sizeof url_text, "/media/%s/v1/%0129d", S_TOKEN, 0);
    cr_assert_eq(gw_media_parse(url_text, &url), MB_ENOTFOUND);
}

/*  Free grants: master.m3u8 is the free master; a64/ and a128/ only.
    Premium: everything, master.m3u8 the full one. */
Test(gw_media, entitlement)
{
    const struct {
        const char *path;
        const char *free_rel;    /* NULL: refused */
        const char *premium_rel; /* NULL: refused */
    } cases[] = {
        {"master.m3u8", "v1/master-free.m3u8", "v1/master.m3u8"},
        {"a64/index.m3u8", "v1/a64/index.m3u8", "v1/a64/index.m3u8"},
        {"a128/init.mp4", "v1/a128/init.mp4", "v1/a128/init.mp4"},
        {"a128/seg-00001.m4s", "v1/a128/seg-00001.m4s", "v1/a128/seg-00001.m4s"},
        {"a256/seg-00001.m4s", NULL, "v1/a256/seg-00001.m4s"},
        {"a192/index.m3u8", NULL, "v1/a192/index.m3u8"},
        {"flac/seg-00001.m4s", NULL, "v1/flac/seg-00001.m4s"},
        {"master-free.m3u8", NULL, "v1/master-free.m3u8"},
        {"a128", NULL, "v1/a128"},
        {"a1280/seg-00001.m4s", NULL, "v1/a1280/seg-00001.m4s"},
        {"a12/seg-00001.m4s", NULL, "v1/a12/seg-00001.m4s"},
        {"x/a128/seg-00001.m4s", NULL, "v1/x/a128/seg-00001.m4s"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[256], rel[GW_MEDIA_REL_MAX];
        snprintf(text, sizeof text, "/media/%s/v1/%s", S_TOKEN, cases[i].path);
        gw_media_url_t url;
        cr_assert_eq(gw_media_parse(text, &url), 0, "%s", text);
        int rc = gw_media_map(&url, MB_MEDIA_FREE, rel);
        if (cases[i].free_rel) {
            cr_assert_eq(rc, 0, "free %s", cases[i].path);
            cr_assert_str_eq(rel, cases[i].free_rel);
        } else {
            cr_assert_eq(rc, MB_EINVAL, "free %s must be refused", cases[i].path);
        }
        cr_assert_eq(gw_media_map(&url, MB_MEDIA_PREMIUM, rel), 0, "premium %s", cases[i].path);
        cr_assert_str_eq(rel, cases[i].premium_rel);
    }
}

Test(gw_media, range)
{
    uint64_t off = 7, len = 7;
    const struct {
        const char *header;
        uint64_t size;
        gw_range_t want;
        uint64_t off, len;
    } cases[] = {
        {NULL, 100, GW_RANGE_NONE, 0, 0},
        {"bytes=0-9", 100, GW_RANGE_ONE, 0, 10},
        {"bytes=90-", 100, GW_RANGE_ONE, 90, 10},
        {"bytes=90-1000", 100, GW_RANGE_ONE, 90, 10},
        {"bytes=-10", 100, GW_RANGE_ONE, 90, 10},
        {"bytes=-1000", 100, GW_RANGE_ONE, 0, 100},
        {"bytes=99-99", 100, GW_RANGE_ONE, 99, 1},
        {" Bytes = 5-6 ", 100, GW_RANGE_ONE, 5, 2},
        {"bytes=5-6,", 100, GW_RANGE_ONE, 5, 2},
        {"bytes=100-", 100, GW_RANGE_UNSATISFIABLE, 0, 0},
        {"bytes=100-200", 100, GW_RANGE_UNSATISFIABLE, 0, 0},
        {"bytes=-0", 100, GW_RANGE_UNSATISFIABLE, 0, 0},
        {"bytes=0-", 0, GW_RANGE_UNSATISFIABLE, 0, 0},
        {"bytes=-5", 0, GW_RANGE_UNSATISFIABLE, 0, 0},
        {"bytes=99999999999999999999999-", 100, GW_RANGE_UNSATISFIABLE, 0, 0},
        {"bytes=0-99999999999999999999999", 100, GW_RANGE_ONE, 0, 100},
        /* several: the whole file, or 416 when none is satisfiable */
        {"bytes=0-1,5-6", 100, GW_RANGE_NONE, 0, 0},
        {"bytes=200-300,0-1", 100, GW_RANGE_NONE, 0, 0},
        {"bytes=200-300, 400-", 100, GW_RANGE_UNSATISFIABLE, 0, 0},
        /* not understood: ignored */
        {"bytes=9-5", 100, GW_RANGE_NONE, 0, 0},
        {"bytes=a-b", 100, GW_RANGE_NONE, 0, 0},
        {"bytes=5", 100, GW_RANGE_NONE, 0, 0},
        {"bytes=-", 100, GW_RANGE_NONE, 0, 0},
        {"bytes=", 100, GW_RANGE_NONE, 0, 0},
        {"bytes 0-5", 100, GW_RANGE_NONE, 0, 0},
        {"items=0-5", 100, GW_RANGE_NONE, 0, 0},
        {"bytes=0-5;x", 100, GW_RANGE_NONE, 0, 0},
        {"bytes=+1-5", 100, GW_RANGE_NONE, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gw_range_t got = gw_media_range(cases[i].header, cases[i].size, &off, &len);
        cr_assert_eq(got, cases[i].want, "'%s' on %lu bytes", cases[i].header,
                     (unsigned long)cases[i].size);
        if (got == GW_RANGE_ONE) {
            cr_assert_eq(off, cases[i].off, "'%s': offset", cases[i].header);
            cr_assert_eq(len, cases[i].len, "'%s': length", cases[i].header);
        }
    }
}

Test(gw_media, etags_and_dates)
{
    struct stat st = {.st_ino = 0x1234, .st_size = 200000};
    st.st_mtim.tv_sec = 1700000000;
    st.st_mtim.tv_nsec = 5;
    char etag[GW_MEDIA_ETAG_MAX];
    gw_media_etag(&st, etag);
    cr_assert_str_eq(etag, "\"1234-30d40-17979cfe362a0005\"");
    cr_assert(gw_media_etag_listed(etag, etag));
    cr_assert(gw_media_etag_listed("*", etag));
    cr_assert(gw_media_etag_listed("\"x\", W/\"1234-30d40-17979cfe362a0005\"", etag),
              "weak comparison for If-None-Match");
    cr_assert(gw_media_etag_listed("\"a,b\",\"1234-30d40-17979cfe362a0005\"", etag));
    cr_assert_not(gw_media_etag_listed("\"1234-30d40-17979cfe362a0006\"", etag));
    cr_assert_not(gw_media_etag_listed("1234-30d40-17979cfe362a0005", etag), "unquoted");
    cr_assert_not(gw_media_etag_listed("\"1234-30d40-17979cfe362a0005", etag), "unclosed");
    cr_assert_not(gw_media_etag_listed("", etag));
    cr_assert_not(gw_media_etag_listed(NULL, etag));

    char date[GW_MEDIA_HTTP_DATE_MAX];
    gw_media_http_date(784111777, date);
    cr_assert_str_eq(date, "Sun, 06 Nov 1994 08:49:37 GMT");
    int64_t t;
    cr_assert(gw_media_parse_http_date(date, &t));
    cr_assert_eq(t, 784111777);
    cr_assert_not(gw_media_parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", &t));
    cr_assert_not(gw_media_parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT x", &t));
    cr_assert_not(gw_media_parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT", &t));
    cr_assert_not(gw_media_parse_http_date(NULL, &t));
}

Test(gw_media, covers_are_blobs)
{
    gw_media_url_t url;
    const char *hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char text[128], rel[GW_MEDIA_REL_MAX];
    snprintf(text, sizeof text, "/covers/%s.jpg", hex);
    cr_assert_eq(gw_media_parse(text, &url), 0);
    cr_assert_eq(url.kind, GW_MEDIA_COVER);
    cr_assert_eq(gw_media_cover_rel(&url, rel), 0);
    cr_assert_eq(strncmp(rel, "01/0123456789abcdef", 19), 0, "%s", rel);
    cr_assert_eq(strlen(rel), 67);
    cr_assert_str_eq(gw_media_content_type(url.last), "image/jpeg");
    snprintf(text, sizeof text, "/media/%s/v1/master.m3u8", S_TOKEN);
    cr_assert_eq(gw_media_parse(text, &url), 0);
    cr_assert_eq(gw_media_cover_rel(&url, rel), MB_EINVAL);
}

Test(gw_media, content_types)
{
    cr_assert_str_eq(gw_media_content_type("master.m3u8"), "application/vnd.apple.mpegurl");
    cr_assert_str_eq(gw_media_content_type("index.m3u8"), "application/vnd.apple.mpegurl");
    cr_assert_str_eq(gw_media_content_type("init.mp4"), "audio/mp4");
    cr_assert_str_eq(gw_media_content_type("seg-00001.m4s"), "audio/mp4");
    cr_assert_str_eq(gw_media_content_type("x-300.jpg"), "image/jpeg");
    cr_assert_str_eq(gw_media_content_type("README"), "application/octet-stream");
    cr_assert(gw_media_is_playlist("index.m3u8"));
    cr_assert_not(gw_media_is_playlist("init.mp4"));
}

/*  Opening: regular files below the root only; no link is followed,
    whether the file, a folder on the way, or the version itself. */
Test(gw_media, open_follows_no_link)
{
    char root[] = "/tmp/test_gw_media.XXXXXX";
    cr_assert_not_null(mkdtemp(root));
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "cd %s && mkdir -p hls/v1/a128 outside && echo secret > outside/passwd && "
             "echo seg > hls/v1/a128/seg.m4s && ln -s ../../../outside/passwd hls/v1/a128/l.m4s "
             "&& ln -s seg.m4s hls/v1/a128/same.m4s && ln -s ../../outside hls/v1/evil && "
             "ln -s ../outside hls/v2 && ln -s v1 hls/v3 && mkfifo hls/v1/a128/fifo.m4s && "
             "mkdir hls/v1/a128/dir.m4s",
             root);
    cr_assert_eq(system(cmd), 0);
    char hls[128];
    snprintf(hls, sizeof hls, "%s/hls", root);
    gw_media_root_t *r = gw_media_root_new(hls);
    int fd;
    struct stat st;
    cr_assert_eq(gw_media_open(r, "v1/a128/seg.m4s", &fd, &st), 0);
    cr_assert_eq(st.st_size, 4);
    char buf[8] = "";
    cr_assert_eq(read(fd, buf, sizeof buf), 4);
    cr_assert_str_eq(buf, "seg\n");
    close(fd);
    const char *refused[] = {
        "v1/a128/l.m4s",    /* a link to a file outside */
        "v1/a128/same.m4s", /* a link even to a file inside */
        "v1/evil/passwd",   /* a link to a folder outside */
        "v2/passwd",        /* the version itself a link */
        "v3/a128/seg.m4s",  /* the version a link to another version */
        "v1/a128/fifo.m4s", /* not a regular file (and must not hang) */
        "v1/a128/dir.m4s",  /* a folder */
        "v1/a128/none.m4s", /* not there */
        "v1/a128",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        fd = -2;
        cr_assert_eq(gw_media_open(r, refused[i], &fd, &st), MB_ENOTFOUND, "%s", refused[i]);
        cr_assert_eq(fd, -1);
    }
    gw_media_root_destroy(&r);
    gw_media_root_destroy(&r);

    /* A root that appears later is found then. */
    char later[128];
    snprintf(later, sizeof later, "%s/later", root);
    r = gw_media_root_new(later);
    cr_assert_eq(gw_media_open(r, "x.jpg", &fd, &st), MB_ENOTFOUND);
    snprintf(cmd, sizeof cmd, "mkdir %s && echo j > %s/x.jpg", later, later);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(gw_media_open(r, "x.jpg", &fd, &st), 0);
    close(fd);
    gw_media_root_destroy(&r);
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    cr_assert_eq(system(cmd), 0);
}

/*  Remembered grants answer exactly what mb_media_verify() answers: the
    same grant for the same version under the same key, until it expires;
    anything else is checked afresh. */
Test(gw_media, remembered_grants)
{
    cr_assert_geq(sodium_init(), 0);
    mb_media_key_t key, other;
    randombytes_buf(key.key, sizeof key.key);
    randombytes_buf(other.key, sizeof other.key);
    uint64_t now = 1800000000;
    char token[MB_MEDIA_TOKEN_MAX], premium[MB_MEDIA_TOKEN_MAX];
    cr_assert_eq(mb_media_sign(&key, "v1", now + 10, MB_MEDIA_FREE, token), 0);
    cr_assert_eq(mb_media_sign(&key, "v1", now + 10, MB_MEDIA_PREMIUM, premium), 0);
    size_t len = strlen(token);
    mb_media_entitlement_t ent = 0;
    for (int i = 0; i < 3; i++) { /* the first checks, the others remember */
        cr_assert_eq(gw_media_verify(&key, token, len, "v1", 2, now, &ent), 0);
        cr_assert_eq(ent, MB_MEDIA_FREE);
        cr_assert_eq(gw_media_verify(&key, premium, len, "v1", 2, now, &ent), 0);
        cr_assert_eq(ent, MB_MEDIA_PREMIUM);
    }
    cr_assert_eq(gw_media_verify(&key, token, len, "v2", 2, now, &ent), MB_EINVAL, "other version");
    cr_assert_eq(gw_media_verify(&key, token, len, "v", 1, now, &ent), MB_EINVAL);
    cr_assert_eq(gw_media_verify(&other, token, len, "v1", 2, now, &ent), MB_EINVAL, "other key");
    cr_assert_eq(gw_media_verify(&key, token, len - 1, "v1", 2, now, &ent), MB_EINVAL);
    char tampered[MB_MEDIA_TOKEN_MAX];
    memcpy(tampered, token, len + 1);
    tampered[20] = tampered[20] == 'A' ? 'B' : 'A'; /* in the MAC, same slot */
    cr_assert_eq(gw_media_verify(&key, tampered, len, "v1", 2, now, &ent), MB_EINVAL);
    /* The same key struct given new bytes: nothing remembered holds. */
    mb_media_key_t changed = key;
    cr_assert_eq(gw_media_verify(&changed, token, len, "v1", 2, now, &ent), 0);
    randombytes_buf(changed.key, sizeof changed.key);
    cr_assert_eq(gw_media_verify(&changed, token, len, "v1", 2, now, &ent), MB_EINVAL);
    /* Expiry is checked on every call. */
    cr_assert_eq(gw_media_verify(&key, token, len, "v1", 2, now + 9, &ent), 0);
    cr_assert_eq(gw_media_verify(&key, token, len, "v1", 2, now + 10, &ent), MB_ETIMEDOUT);
    cr_assert_eq(gw_media_verify(&key, token, len, "v1", 2, now + 10, &ent), MB_ETIMEDOUT);
    /* An expired grant is not remembered as good. */
    char old[MB_MEDIA_TOKEN_MAX];
    cr_assert_eq(mb_media_sign(&key, "v1", now - 1, MB_MEDIA_PREMIUM, old), 0);
    cr_assert_eq(gw_media_verify(&key, old, len, "v1", 2, now, &ent), MB_ETIMEDOUT);
    cr_assert_eq(gw_media_verify(&key, old, len, "v1", 2, now - 2, &ent), 0);
    cr_assert_eq(gw_media_verify(&key, NULL, 0, "v1", 2, now, &ent), MB_EINVAL);
    cr_assert_eq(gw_media_verify(&key, token, len, NULL, 0, now, &ent), MB_EINVAL);
}

/*  A file of `size` bytes (byte i is i * 7) in `dir`; opened, *st set. */
static int s_file(const char *dir, const char *name, size_t size, struct stat *st)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    for (size_t i = 0; i < size; i++)
        fputc((int)(i * 7 & 0xff), f);
    fclose(f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    cr_assert_geq(fd, 0);
    cr_assert_eq(fstat(fd, st), 0);
    return fd;
}

static bool s_closed(int fd)
{
    return fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}

/*  s_file(), asked for once already: the first response of a file goes
    by sendfile, maps nothing, and closes its descriptor when freed. */
static int s_seen_file(const char *dir, const char *name, size_t size, struct stat *st)
{
    size_t before = gw_media_mapped(NULL);
    int fd = s_file(dir, name, size, st);
    struct MHD_Response *first = gw_media_body(fd, st, 0, size);
    cr_assert_not_null(first);
    cr_assert_eq(gw_media_mapped(NULL), before, "the first request of a file maps nothing");
    cr_assert_not(s_closed(fd), "MHD sends from it");
    MHD_destroy_response(first);
    cr_assert(s_closed(fd));
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    cr_assert_geq(fd, 0);
    return fd;
}

/*  Bodies: a file asked for again is mapped once, shared by the
    responses in flight, kept a little after the last, dropped by trim;
    a file's first request, empty files and files past GW_MEDIA_MAP_MAX
    go by sendfile. */
Test(gw_media, bodies_share_one_mapping)
{
    char dir[] = "/tmp/test_gw_media_body.XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    gw_media_trim();
    size_t n;
    cr_assert_eq(gw_media_mapped(&n), 0);
    cr_assert_eq(n, 0);

    struct stat st;
    int fd = s_seen_file(dir, "seg.m4s", 200000, &st);
    struct MHD_Response *whole = gw_media_body(fd, &st, 0, 200000);
    cr_assert_not_null(whole);
    cr_assert(s_closed(fd), "the mapping keeps the file; the descriptor goes now");
    cr_assert_eq(gw_media_mapped(&n), 200000);
    cr_assert_eq(n, 1);
    /* The same file again (another descriptor), a range of it: shared. */
    fd = open(dir, O_RDONLY | O_DIRECTORY);
    int fd2 = openat(fd, "seg.m4s", O_RDONLY | O_CLOEXEC);
    close(fd);
    struct stat st2;
    cr_assert_eq(fstat(fd2, &st2), 0);
    struct MHD_Response *range = gw_media_body(fd2, &st2, 4097, 1000);
    cr_assert_not_null(range);
    cr_assert_eq(gw_media_mapped(&n), 200000);
    cr_assert_eq(n, 1);
    /* Another file: its own mapping. */
    struct stat st3;
    int fd3 = s_seen_file(dir, "seg2.m4s", 5000, &st3);
    struct MHD_Response *other = gw_media_body(fd3, &st3, 0, 5000);
    cr_assert_eq(gw_media_mapped(&n), 205000);
    cr_assert_eq(n, 2);

    MHD_destroy_response(whole);
    MHD_destroy_response(range);
    MHD_destroy_response(other);
    cr_assert_eq(gw_media_mapped(&n), 205000, "idle mappings linger for the next request");
    gw_media_expire();
    cr_assert_eq(gw_media_mapped(&n), 205000, "not expired yet");
    /* The next request of the file finds it mapped. */
    fd = open(dir, O_RDONLY | O_DIRECTORY);
    fd2 = openat(fd, "seg.m4s", O_RDONLY | O_CLOEXEC);
    close(fd);
    whole = gw_media_body(fd2, &st, 0, 200000);
    cr_assert_eq(gw_media_mapped(&n), 205000);
    cr_assert_eq(n, 2);
    gw_media_trim();
    cr_assert_eq(gw_media_mapped(&n), 200000, "trim leaves what a response uses");
    cr_assert_eq(n, 1);
    MHD_destroy_response(whole);
    gw_media_trim();
    cr_assert_eq(gw_media_mapped(&n), 0);
    cr_assert_eq(n, 0);

    /* A file rewritten in place (it never is) is a new mapping: the key
       is the ETag's (inode, size, mtime). */
    fd = s_seen_file(dir, "seg.m4s", 100000, &st2);
    whole = gw_media_body(fd, &st2, 0, 100000);
    cr_assert_eq(gw_media_mapped(&n), 100000);
    MHD_destroy_response(whole);

    /* Empty, or bigger than GW_MEDIA_MAP_MAX: sendfile, nothing mapped. */
    gw_media_trim();
    fd = s_seen_file(dir, "empty.m4s", 0, &st);
    struct MHD_Response *empty = gw_media_body(fd, &st, 0, 0);
    cr_assert_not_null(empty);
    cr_assert_eq(gw_media_mapped(NULL), 0);
    MHD_destroy_response(empty);
    cr_assert(s_closed(fd), "MHD closed it with the response");
    fd = s_seen_file(dir, "big.flac", GW_MEDIA_MAP_MAX + 1, &st);
    struct MHD_Response *big = gw_media_body(fd, &st, 0, (uint64_t)st.st_size);
    cr_assert_not_null(big);
    cr_assert_eq(gw_media_mapped(NULL), 0);
    MHD_destroy_response(big);
    cr_assert(s_closed(fd));

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/*  What no response uses is kept up to GW_MEDIA_IDLE_MAX bytes, the
    least recently released dropped first; when files push each other
    out, new mappings stop for a while. */
Test(gw_media, idle_mappings_are_bounded)
{
    char dir[] = "/tmp/test_gw_media_idle.XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    gw_media_trim();
    size_t third = GW_MEDIA_IDLE_MAX / 3 + 1;
    struct MHD_Response *resp[4];
    struct stat st[4];
    for (int i = 0; i < 4; i++) {
        char name[32];
        snprintf(name, sizeof name, "f%d", i);
        int fd = s_seen_file(dir, name, third, &st[i]);
        resp[i] = gw_media_body(fd, &st[i], 0, third);
        cr_assert_not_null(resp[i]);
    }
    size_t n;
    cr_assert_eq(gw_media_mapped(&n), 4 * third, "in use: all mapped");
    for (int i = 0; i < 4; i++)
        MHD_destroy_response(resp[i]);
    cr_assert_eq(gw_media_mapped(&n), 2 * third);
    cr_assert_eq(n, 2);
    /* Files pushed each other out: no new mapping for a while, even for
       a file asked for again; those mapped still serve. */
    struct stat st5;
    int fd = s_seen_file(dir, "f5", 1000, &st5);
    struct MHD_Response *r5 = gw_media_body(fd, &st5, 0, 1000);
    cr_assert_not_null(r5);
    cr_assert_eq(gw_media_mapped(&n), 2 * third, "sendfile while the files do not fit");
    MHD_destroy_response(r5);
    char path[256];
    snprintf(path, sizeof path, "%s/f3", dir);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    r5 = gw_media_body(fd, &st[3], 0, third);
    cr_assert(s_closed(fd), "f3 is still mapped");
    MHD_destroy_response(r5);
    gw_media_trim();
    cr_assert_eq(gw_media_mapped(&n), 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/*  The ETag and the date are remembered for the last file: a different
    file or date must not get the remembered one. */
Test(gw_media, remembered_etags_and_dates)
{
    struct stat a = {.st_ino = 1, .st_size = 2}, b = a;
    b.st_mtim.tv_nsec = 1;
    char e1[GW_MEDIA_ETAG_MAX], e2[GW_MEDIA_ETAG_MAX], e3[GW_MEDIA_ETAG_MAX];
    gw_media_etag(&a, e1);
    gw_media_etag(&b, e2);
    gw_media_etag(&a, e3);
    cr_assert_str_eq(e1, "\"1-2-0\"");
    cr_assert_str_eq(e2, "\"1-2-1\"");
    cr_assert_str_eq(e3, e1);
    char d1[GW_MEDIA_HTTP_DATE_MAX], d2[GW_MEDIA_HTTP_DATE_MAX];
    gw_media_http_date(0, d1);
    gw_media_http_date(1, d2);
    cr_assert_str_eq(d1, "Thu, 01 Jan 1970 00:00:00 GMT");
    cr_assert_str_eq(d2, "Thu, 01 Jan 1970 00:00:01 GMT");
    gw_media_http_date(0, d2);
    cr_assert_str_eq(d2, d1);
}

/*  A mapping no response used for GW_MEDIA_IDLE_MS goes on the next
    gw_media_expire() (or gw_media_body()). */
Test(gw_media, idle_mappings_expire)
{
    char dir[] = "/tmp/test_gw_media_expire.XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    struct stat st;
    int fd = s_seen_file(dir, "seg.m4s", 10000, &st);
    struct MHD_Response *resp = gw_media_body(fd, &st, 0, 10000);
    cr_assert_eq(gw_media_mapped(NULL), 10000);
    MHD_destroy_response(resp);
    gw_media_expire();
    cr_assert_eq(gw_media_mapped(NULL), 10000);
    usleep((GW_MEDIA_IDLE_MS + 100) * 1000);
    gw_media_expire();
    cr_assert_eq(gw_media_mapped(NULL), 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}
