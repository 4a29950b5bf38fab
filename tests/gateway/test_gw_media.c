/*  media: the rules of /media/ URLs, entitlement, opening files without
    following links, Range, ETag and dates, each on its own. The whole
    thing over HTTP is test_gw_http_media.c. */
#include <criterion/criterion.h>
#include <fcntl.h>
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
