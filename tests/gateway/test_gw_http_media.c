/*  /media/ over HTTP: a real gateway serving a fake data folder
    (gw_harness.h). Signed grants, free and premium rungs, expiry,
    Range, ETag, caching and CORS headers, covers, and every way out of
    the tree we could think of -- none of which may return a byte of a
    file outside it. No broker: /media/ never uses the bus. */
#include <sodium.h>

#include "gw_harness.h"
#include "mb_media.h"
#include "media.h"

#define S_SECRET "media-secret-for-test-gw-http-media-0123456789"
#define S_SEGMENT_SIZE 200000
#define S_OUTSIDE "TOP SECRET: a file outside the media tree"
#define S_JWT "MUSICBUS_JWT_SECRET=jwt-secret-of-test-gw-http-media-32-bytes"
#define S_COVER "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define S_LINKED "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
#define S_MASTER "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"

static gh_gateway_t s_gw;
static mb_media_key_t s_key;
static unsigned char s_segment[S_SEGMENT_SIZE];

static void s_put(const char *rel, const void *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/data/%s", s_gw.dir, rel);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p \"$(dirname '%s')\"", path);
    cr_assert_eq(system(cmd), 0);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

/*  A version as the transcode actor writes it, a secret file beside the
    data folder, and links pointing out of the tree. */
static void s_make_tree(void)
{
    randombytes_buf(s_segment, sizeof s_segment);
    const char *full = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=256000\na256/index.m3u8\n";
    const char *free_ = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=128000\na128/index.m3u8\n";
    s_put("blobs/hls/v1/master.m3u8", full, strlen(full));
    s_put("blobs/hls/v1/master-free.m3u8", free_, strlen(free_));
    const char *rungs[] = {"a64", "a128", "a192", "a256", "flac"};
    for (size_t i = 0; i < sizeof rungs / sizeof rungs[0]; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "blobs/hls/v1/%s/index.m3u8", rungs[i]);
        s_put(rel, "#EXTM3U\n", 8);
        snprintf(rel, sizeof rel, "blobs/hls/v1/%s/init.mp4", rungs[i]);
        s_put(rel, "ftypmoov", 8);
        snprintf(rel, sizeof rel, "blobs/hls/v1/%s/seg-00001.m4s", rungs[i]);
        s_put(rel, s_segment, sizeof s_segment);
    }
    s_put("outside.txt", S_OUTSIDE, strlen(S_OUTSIDE));
    s_put("blobs/hls/outside.txt", S_OUTSIDE, strlen(S_OUTSIDE));
    s_put("blobs/01/" S_COVER, "\xff\xd8\xff\xe0jpeg", 8);
    s_put("blobs/fe/" S_MASTER, "fLaC....", 8); /* a master is a blob too */
    s_put("outside.jpg", "\xff\xd8\xff" S_OUTSIDE, 3 + strlen(S_OUTSIDE));
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "cd '%s/data/blobs/hls' && ln -s ../../../outside.txt v1/a128/evil.m4s && "
             "ln -s /etc v1/a128/etc && ln -s ../../../../ v1/up && ln -s ../outside.txt "
             "v1/a128/sibling.m4s && ln -s v1 v2 && ln -s ../outside.txt v1/master2.m3u8 && "
             "mkdir -p ../cd && ln -s ../../outside.jpg ../cd/" S_LINKED,
             s_gw.dir);
    cr_assert_eq(system(cmd), 0);
}

static void s_setup(void)
{
    cr_assert_geq(sodium_init(), 0);
    setenv("MUSICBUS_MEDIA_SECRET", S_SECRET, 1);
    unsetenv("MUSICBUS_MEDIA_SECRET_FILE");
    cr_assert_eq(mb_media_key_load(NULL, &s_key), 0);
    gh_write(&s_gw, "x", ""); /* makes s_gw.dir */
    char data[128];
    snprintf(data, sizeof data, "%s/data", s_gw.dir);
    mkdir(data, 0700);
    s_make_tree();
    static const char *const env[] = {"MUSICBUS_MEDIA_SECRET=" S_SECRET, S_JWT, NULL};
    const char *argv[] = {"--bus", "tcp://127.0.0.1:9", NULL};
    gh_start(&s_gw, argv, env);
}

static void s_teardown(void)
{
    gh_stop(&s_gw);
}

TestSuite(gw_http_media, .init = s_setup, .fini = s_teardown, .timeout = 60);

/*  "/media/<token>/<version>/<path>" for a grant of `ent` lasting `ttl`
    seconds (negative: expired). Static buffer. */
static const char *s_url(const char *version, mb_media_entitlement_t ent, long ttl,
                         const char *path)
{
    static char url[512];
    char token[MB_MEDIA_TOKEN_MAX];
    cr_assert_eq(mb_media_sign(&s_key, version, (uint64_t)(time(NULL) + ttl), ent, token), 0);
    snprintf(url, sizeof url, "/media/%s/%s/%s", token, version, path);
    return url;
}

static gh_res_t *s_get(const char *url, const char *header)
{
    gh_req_t req = {.headers = {header}};
    return gh_request(&s_gw, url, &req);
}

/*  Usage: the URL the catalog hands out, played by a browser page. */
Test(gw_http_media, usage)
{
    gh_res_t *r = s_get(s_url("v1", MB_MEDIA_FREE, 3600, "master.m3u8"), NULL);
    cr_assert_eq(r->status, 200, "%s", r->body);
    cr_assert(strstr(r->body, "a128/index.m3u8"), "a free grant gets the free master: %s", r->body);
    cr_assert_str_eq(gh_header(r, "Content-Type"), "application/vnd.apple.mpegurl");
    cr_assert_str_eq(gh_header(r, "Cache-Control"), "public, max-age=60");
    cr_assert_str_eq(gh_header(r, "Access-Control-Allow-Origin"), "*");
    cr_assert_str_eq(gh_header(r, "Accept-Ranges"), "bytes");
    cr_assert_eq(gh_header(r, "ETag")[0], '"', "a strong ETag");
    gh_free(r);

    r = s_get(s_url("v1", MB_MEDIA_PREMIUM, 3600, "master.m3u8"), NULL);
    cr_assert_eq(r->status, 200, "%s", r->body);
    cr_assert(strstr(r->body, "a256/index.m3u8"), "a premium grant gets every rung: %s", r->body);
    gh_free(r);

    r = s_get(s_url("v1", MB_MEDIA_FREE, 3600, "a128/seg-00001.m4s"), NULL);
    cr_assert_eq(r->status, 200, "%s", r->body);
    cr_assert_eq(r->body_len, S_SEGMENT_SIZE);
    cr_assert_eq(memcmp(r->body, s_segment, S_SEGMENT_SIZE), 0);
    cr_assert_str_eq(gh_header(r, "Content-Type"), "audio/mp4");
    long max_age = -1;
    cr_assert_eq(sscanf(gh_header(r, "Cache-Control"), "public, max-age=%ld, immutable", &max_age),
                 1, "%s", gh_header(r, "Cache-Control"));
    cr_assert(max_age > 3500 && max_age <= 3600, "immutable, for as long as the grant lasts: %ld",
              max_age);
    gh_free(r);
}

Test(gw_http_media, content_types_and_long_grants)
{
    const struct {
        const char *path, *type;
    } cases[] = {
        {"a64/index.m3u8", "application/vnd.apple.mpegurl"},
        {"a64/init.mp4", "audio/mp4"},
        {"a64/seg-00001.m4s", "audio/mp4"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gh_res_t *r = s_get(s_url("v1", MB_MEDIA_FREE, 400 * 86400, cases[i].path), NULL);
        cr_assert_eq(r->status, 200, "%s: %s", cases[i].path, r->body);
        cr_assert_str_eq(gh_header(r, "Content-Type"), cases[i].type);
        cr_assert_str_eq(gh_header(r, "X-Content-Type-Options"), "nosniff");
        cr_assert_str_eq(gh_header(r, "Cache-Control"),
                         strstr(cases[i].path, ".m3u8") ? "public, max-age=60"
                                                        : "public, max-age=31536000, immutable");
        gh_free(r);
    }
}

/*  The entitlement is signed: editing the URL cannot reach a premium rung
    with a free grant. */
Test(gw_http_media, free_and_premium_rungs)
{
    const char *premium_only[] = {"a192/index.m3u8",    "a256/index.m3u8",    "a256/init.mp4",
                                  "a256/seg-00001.m4s", "flac/seg-00001.m4s", "master-free.m3u8"};
    for (size_t i = 0; i < sizeof premium_only / sizeof premium_only[0]; i++) {
        gh_res_t *r = s_get(s_url("v1", MB_MEDIA_FREE, 3600, premium_only[i]), NULL);
        cr_assert_eq(r->status, 403, "free %s: %ld", premium_only[i], r->status);
        cr_assert_str_eq(gh_json_str(r, "type"), "not_entitled");
        cr_assert_str_eq(gh_header(r, "Access-Control-Allow-Origin"), "*");
        gh_free(r);
        if (strcmp(premium_only[i], "master-free.m3u8")) {
            r = s_get(s_url("v1", MB_MEDIA_PREMIUM, 3600, premium_only[i]), NULL);
            cr_assert_eq(r->status, 200, "premium %s: %s", premium_only[i], r->body);
            gh_free(r);
        }
    }
    /* A free token's prefix with a premium rung: the same token, another
       path -- refused. */
    char url[512];
    snprintf(url, sizeof url, "%s", s_url("v1", MB_MEDIA_FREE, 3600, "a128/seg-00001.m4s"));
    strcpy(strstr(url, "a128/"), "a256/seg-00001.m4s");
    gh_res_t *r = s_get(url, NULL);
    cr_assert_eq(r->status, 403);
    gh_free(r);
}

Test(gw_http_media, signatures_and_expiry)
{
    gh_res_t *r = s_get(s_url("v1", MB_MEDIA_PREMIUM, -1, "master.m3u8"), NULL);
    cr_assert_eq(r->status, 403, "%s", r->body);
    cr_assert_str_eq(gh_json_str(r, "type"), "expired");
    cr_assert(strstr(gh_json_str(r, "detail"), "expired"));
    gh_free(r);

    /* A grant for one version does not open another. */
    char url[512];
    snprintf(url, sizeof url, "%s", s_url("v0", MB_MEDIA_PREMIUM, 3600, "master.m3u8"));
    char *v = strstr(url, "/v0/");
    v[2] = '1';
    r = s_get(url, NULL);
    cr_assert_eq(r->status, 403, "%s", r->body);
    cr_assert_str_eq(gh_json_str(r, "type"), "bad_signature");
    gh_free(r);

    /* Any character of the token changed. */
    snprintf(url, sizeof url, "%s", s_url("v1", MB_MEDIA_FREE, 3600, "master.m3u8"));
    for (size_t i = 7; i < 7 + 55; i += 6) {
        char bad[512];
        snprintf(bad, sizeof bad, "%s", url);
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        r = s_get(bad, NULL);
        cr_assert_eq(r->status, 403, "character %zu: %s", i, r->body);
        gh_free(r);
    }
    /* Garbage tokens. */
    const char *garbage[] = {"/media/x/v1/master.m3u8", "/media/" S_COVER "/v1/master.m3u8",
                             "/media/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/v1/"
                             "master.m3u8"};
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
        r = s_get(garbage[i], NULL);
        cr_assert_eq(r->status, 403, "%s: %s", garbage[i], r->body);
        gh_free(r);
    }
}

Test(gw_http_media, ranges)
{
    const char *url = s_url("v1", MB_MEDIA_PREMIUM, 3600, "a256/seg-00001.m4s");
    char copy[512];
    snprintf(copy, sizeof copy, "%s", url);
    gh_res_t *r = s_get(copy, "Range: bytes=1000-1999");
    cr_assert_eq(r->status, 206, "%s", r->body);
    cr_assert_str_eq(gh_header(r, "Content-Range"), "bytes 1000-1999/200000");
    cr_assert_eq(r->body_len, 1000);
    cr_assert_eq(memcmp(r->body, s_segment + 1000, 1000), 0);
    gh_free(r);

    r = s_get(copy, "Range: bytes=-100");
    cr_assert_eq(r->status, 206);
    cr_assert_str_eq(gh_header(r, "Content-Range"), "bytes 199900-199999/200000");
    cr_assert_eq(memcmp(r->body, s_segment + 199900, 100), 0);
    gh_free(r);

    r = s_get(copy, "Range: bytes=150000-");
    cr_assert_eq(r->status, 206);
    cr_assert_eq(r->body_len, 50000);
    gh_free(r);

    r = s_get(copy, "Range: bytes=200000-");
    cr_assert_eq(r->status, 416, "%s", r->body);
    cr_assert_str_eq(gh_header(r, "Content-Range"), "bytes */200000");
    cr_assert_str_eq(gh_header(r, "Access-Control-Allow-Origin"), "*");
    gh_free(r);

    /* Several ranges: the whole file. */
    r = s_get(copy, "Range: bytes=0-9,100-109");
    cr_assert_eq(r->status, 200);
    cr_assert_eq(r->body_len, S_SEGMENT_SIZE);
    gh_free(r);

    /* HEAD: the size, no body, no range. */
    gh_req_t head = {.method = "HEAD", .headers = {"Range: bytes=0-9"}};
    r = gh_request(&s_gw, copy, &head);
    cr_assert_eq(r->status, 200);
    cr_assert_str_eq(gh_header(r, "Content-Length"), "200000");
    cr_assert_eq(r->body_len, 0);
    gh_free(r);
}

Test(gw_http_media, etag_and_304)
{
    char url[512];
    snprintf(url, sizeof url, "%s", s_url("v1", MB_MEDIA_FREE, 3600, "a128/seg-00001.m4s"));
    gh_res_t *r = s_get(url, NULL);
    char etag[128], inm[160], if_range[160];
    snprintf(etag, sizeof etag, "%.100s", gh_header(r, "ETag"));
    cr_assert_gt(strlen(etag), 2);
    gh_free(r);

    snprintf(inm, sizeof inm, "If-None-Match: \"other\", %s", etag);
    r = s_get(url, inm);
    cr_assert_eq(r->status, 304);
    cr_assert_eq(r->body_len, 0);
    cr_assert_str_eq(gh_header(r, "ETag"), etag);
    cr_assert(strstr(gh_header(r, "Cache-Control"), "immutable"));
    gh_free(r);

    r = s_get(url, "If-None-Match: \"not-it\"");
    cr_assert_eq(r->status, 200);
    cr_assert_eq(r->body_len, S_SEGMENT_SIZE);
    gh_free(r);

    /* If-Range: the range only for the same file. */
    snprintf(if_range, sizeof if_range, "If-Range: %s", etag);
    gh_req_t req = {.headers = {"Range: bytes=0-9", if_range}};
    r = gh_request(&s_gw, url, &req);
    cr_assert_eq(r->status, 206);
    gh_free(r);
    req.headers[1] = "If-Range: \"an-older-file\"";
    r = gh_request(&s_gw, url, &req);
    cr_assert_eq(r->status, 200);
    cr_assert_eq(r->body_len, S_SEGMENT_SIZE);
    gh_free(r);

    /* If-Modified-Since, when there is no If-None-Match. */
    char ims[128];
    snprintf(ims, sizeof ims, "If-Modified-Since: %s", "Sun, 06 Nov 2094 08:49:37 GMT");
    r = s_get(url, ims);
    cr_assert_eq(r->status, 304);
    gh_free(r);
}

/*  Bodies of every size the ladder makes, each byte right: segments go
    from a mapping shared by the requests of one file, a file bigger than
    GW_MEDIA_MAP_MAX and an empty one by sendfile; a file replaced (a
    new inode under the same name) is served anew. */
Test(gw_http_media, bodies)
{
    size_t big_len = GW_MEDIA_MAP_MAX + 4097;
    unsigned char *big = malloc(big_len);
    cr_assert_not_null(big);
    randombytes_buf(big, big_len);
    s_put("blobs/hls/v1/flac/seg-big.m4s", big, big_len);
    s_put("blobs/hls/v1/flac/seg-empty.m4s", "", 0);
    char url[512];
    snprintf(url, sizeof url, "%s", s_url("v1", MB_MEDIA_PREMIUM, 3600, "flac/seg-big.m4s"));
    gh_res_t *r = s_get(url, NULL);
    cr_assert_eq(r->status, 200, "%s", r->body);
    cr_assert_eq(r->body_len, big_len);
    cr_assert_eq(memcmp(r->body, big, big_len), 0);
    gh_free(r);
    r = s_get(url, "Range: bytes=4095-8194");
    cr_assert_eq(r->status, 206);
    cr_assert_eq(r->body_len, 4100);
    cr_assert_eq(memcmp(r->body, big + 4095, 4100), 0);
    gh_free(r);
    free(big);

    snprintf(url, sizeof url, "%s", s_url("v1", MB_MEDIA_PREMIUM, 3600, "flac/seg-empty.m4s"));
    r = s_get(url, NULL);
    cr_assert_eq(r->status, 200, "%s", r->body);
    cr_assert_eq(r->body_len, 0);
    cr_assert_str_eq(gh_header(r, "Content-Length"), "0");
    gh_free(r);

    /* One grant, many requests of one segment, ranges at odd offsets. */
    snprintf(url, sizeof url, "%s", s_url("v1", MB_MEDIA_PREMIUM, 3600, "a192/seg-00001.m4s"));
    for (int i = 0; i < 20; i++) {
        char range[64];
        unsigned off = (unsigned)i * 9973u % S_SEGMENT_SIZE;
        snprintf(range, sizeof range, "Range: bytes=%u-%u", off, off + 999);
        r = s_get(url, i % 2 ? range : NULL);
        cr_assert_eq(r->status, i % 2 ? 206 : 200);
        if (i % 2) {
            size_t want = off + 1000 <= S_SEGMENT_SIZE ? 1000 : S_SEGMENT_SIZE - off;
            cr_assert_eq(r->body_len, want);
            cr_assert_eq(memcmp(r->body, s_segment + off, want), 0, "range at %u", off);
        } else {
            cr_assert_eq(r->body_len, S_SEGMENT_SIZE);
            cr_assert_eq(memcmp(r->body, s_segment, S_SEGMENT_SIZE), 0);
        }
        gh_free(r);
    }

    /* Replaced under the same name: the new bytes and a new ETag. */
    r = s_get(url, NULL);
    char etag[128];
    snprintf(etag, sizeof etag, "%.100s", gh_header(r, "ETag"));
    gh_free(r);
    char path[512], tmp[520];
    snprintf(path, sizeof path, "%s/data/blobs/hls/v1/a192/seg-00001.m4s", s_gw.dir);
    snprintf(tmp, sizeof tmp, "%s.new", path);
    FILE *f = fopen(tmp, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite("replaced", 1, 8, f), 8);
    fclose(f);
    cr_assert_eq(rename(tmp, path), 0);
    r = s_get(url, NULL);
    cr_assert_eq(r->status, 200);
    cr_assert_eq(r->body_len, 8);
    cr_assert_eq(memcmp(r->body, "replaced", 8), 0);
    cr_assert_str_neq(gh_header(r, "ETag"), etag);
    gh_free(r);
}

/*  Nothing outside the tree, ever: every attempt is a 403 or a 404, and
    no answer holds a byte of the file outside. */
Test(gw_http_media, no_way_out)
{
    char p[512];
    snprintf(p, sizeof p, "%s", s_url("v1", MB_MEDIA_PREMIUM, 3600, "x"));
    p[strlen(p) - strlen("v1/x")] = '\0'; /* "/media/<token>/" */
    const char *tails[] = {
        "v1/../outside.txt",
        "v1/a128/../../outside.txt",
        "v1/%2e%2e/outside.txt",
        "v1/a128/%2e%2e/%2e%2e/outside.txt",
        "v1/%2E%2E%2Foutside.txt",
        "v1/a128/..%2f..%2f..%2foutside.txt",
        "v1//outside.txt",
        "v1/a128//seg-00001.m4s",
        "v1/a128/evil.m4s",       /* a link to the file outside */
        "v1/a128/sibling.m4s",    /* a link within blobs */
        "v1/a128/etc/passwd",     /* a link to /etc */
        "v1/up/outside.txt",      /* a link up the tree */
        "v1/up/data/outside.txt", /* ... and further */
        "v1/master2.m3u8",        /* a link, with a playlist's name */
        "v1/%2fetc%2fpasswd",     /* an absolute path */
        "v1//etc/passwd",
        "v1/.%2e/outside.txt",
        "v1/a128/seg-00001.m4s%00", /* a NUL */
        "v1/a128/.seg-00001.m4s",
        "v1/a128/seg-00001.m4s/",
        "v1/a\\..\\..\\outside.txt",
    };
    for (size_t i = 0; i < sizeof tails / sizeof tails[0]; i++) {
        char url[700];
        snprintf(url, sizeof url, "%s%s", p, tails[i]);
        gh_res_t *r = s_get(url, NULL);
        cr_assert(r->status == 404 || r->status == 403 || r->status == 400, "%s: %ld", tails[i],
                  r->status);
        cr_assert_null(memmem(r->body, r->body_len, "TOP SECRET", 10), "%s leaked it", tails[i]);
        gh_free(r);
    }
    /* A version that is a link (v2 -> v1), with a token signed for it. */
    gh_res_t *r = s_get(s_url("v2", MB_MEDIA_PREMIUM, 3600, "master.m3u8"), NULL);
    cr_assert_eq(r->status, 404, "%s", r->body);
    gh_free(r);
    /* Versions that are not names. */
    const char *versions[] = {"..", ".", "%2e%2e"};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        char url[700];
        snprintf(url, sizeof url, "%.*s/%s/outside.txt", (int)(strlen(p) - 1), p, versions[i]);
        r = s_get(url, NULL);
        cr_assert(r->status == 404 || r->status == 400, "%s: %ld", versions[i], r->status);
        cr_assert_null(memmem(r->body, r->body_len, "TOP SECRET", 10));
        gh_free(r);
    }
    r = s_get("/media/covers/../outside.txt", NULL);
    cr_assert_eq(r->status, 404);
    gh_free(r);
    /* A cover blob that is a link to a JPEG outside the store. */
    r = s_get("/covers/" S_LINKED ".jpg", NULL);
    cr_assert_eq(r->status, 404, "%s", r->body);
    cr_assert_null(memmem(r->body, r->body_len, "TOP SECRET", 10));
    gh_free(r);
}

/*  Covers are JPEG blobs named by their hash (actors/transcode): public,
    immutable; a blob that is not a JPEG -- an audio master -- is not
    served, even to someone who knows its hash. */
Test(gw_http_media, covers)
{
    const char *urls[] = {"/covers/" S_COVER ".jpg", "/media/covers/" S_COVER ".jpg"};
    for (size_t i = 0; i < 2; i++) {
        gh_res_t *r = s_get(urls[i], NULL);
        cr_assert_eq(r->status, 200, "%s: %s", urls[i], r->body);
        cr_assert_str_eq(gh_header(r, "Content-Type"), "image/jpeg");
        cr_assert_str_eq(gh_header(r, "Cache-Control"), "public, max-age=31536000, immutable");
        cr_assert_str_eq(gh_header(r, "Access-Control-Allow-Origin"), "*");
        cr_assert_eq(r->body_len, 8);
        gh_free(r);
    }
    const char *missing[] = {
        "/covers/" S_MASTER ".jpg", "/covers/" S_COVER "-300.jpg", "/covers/" S_COVER,
        "/covers/x.jpg",
        "/covers/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.jpg"};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        gh_res_t *r = s_get(missing[i], NULL);
        cr_assert_eq(r->status, 404, "%s", missing[i]);
        cr_assert_null(memmem(r->body, r->body_len, "fLaC", 4));
        gh_free(r);
    }
}

Test(gw_http_media, cors_preflight_and_methods)
{
    const char *url = s_url("v1", MB_MEDIA_FREE, 3600, "a128/seg-00001.m4s");
    gh_req_t options = {.method = "OPTIONS",
                        .headers = {"Origin: https://player.example",
                                    "Access-Control-Request-Method: GET",
                                    "Access-Control-Request-Headers: range"}};
    gh_res_t *r = gh_request(&s_gw, url, &options);
    cr_assert_eq(r->status, 204);
    cr_assert_str_eq(gh_header(r, "Access-Control-Allow-Origin"), "*");
    cr_assert_str_eq(gh_header(r, "Access-Control-Allow-Methods"), "GET, HEAD, OPTIONS");
    cr_assert(strstr(gh_header(r, "Access-Control-Allow-Headers"), "Range"));
    cr_assert_str_eq(gh_header(r, "Access-Control-Max-Age"), "86400");
    gh_free(r);
    r = s_get(url, "Origin: https://player.example");
    cr_assert_str_eq(gh_header(r, "Access-Control-Allow-Origin"), "*");
    cr_assert(strstr(gh_header(r, "Access-Control-Expose-Headers"), "Content-Range"));
    gh_free(r);
    gh_req_t post = {.method = "POST"};
    r = gh_request(&s_gw, url, &post);
    cr_assert_eq(r->status, 405);
    cr_assert_str_eq(gh_header(r, "Allow"), "GET, HEAD, OPTIONS");
    gh_free(r);
}

/*  Gateways started by the test itself. */
TestSuite(gw_http_media_start, .fini = s_teardown, .timeout = 60);

Test(gw_http_media_start, no_secret_means_503)
{
    cr_assert_geq(sodium_init(), 0);
    setenv("MUSICBUS_MEDIA_SECRET", S_SECRET, 1);
    cr_assert_eq(mb_media_key_load(NULL, &s_key), 0);
    gh_write(&s_gw, "x", "");
    char data[128];
    snprintf(data, sizeof data, "%s/data", s_gw.dir);
    mkdir(data, 0700);
    s_make_tree();
    const char *argv[] = {"--bus", "tcp://127.0.0.1:9", NULL};
    static const char *const env[] = {S_JWT, NULL};
    gh_start(&s_gw, argv, env);
    gh_res_t *r = s_get(s_url("v1", MB_MEDIA_PREMIUM, 3600, "master.m3u8"), NULL);
    cr_assert_eq(r->status, 503, "%s", r->body);
    cr_assert_str_eq(gh_json_str(r, "type"), "unavailable");
    gh_free(r);
    r = s_get("/covers/" S_COVER ".jpg", NULL);
    cr_assert_eq(r->status, 200, "covers need no secret");
    gh_free(r);
}

Test(gw_http_media_start, secret_from_a_file)
{
    cr_assert_geq(sodium_init(), 0);
    setenv("MUSICBUS_MEDIA_SECRET", S_SECRET, 1);
    cr_assert_eq(mb_media_key_load(NULL, &s_key), 0);
    const char *file = gh_write(&s_gw, "media.secret", S_SECRET "\n");
    char file_copy[256];
    snprintf(file_copy, sizeof file_copy, "%s", file);
    char data[128];
    snprintf(data, sizeof data, "%s/data", s_gw.dir);
    mkdir(data, 0700);
    s_make_tree();
    const char *argv[] = {"--bus", "tcp://127.0.0.1:9", "--media-secret-file", file_copy, NULL};
    static const char *const env[] = {S_JWT, NULL};
    gh_start(&s_gw, argv, env);
    gh_res_t *r = s_get(s_url("v1", MB_MEDIA_FREE, 3600, "master.m3u8"), NULL);
    cr_assert_eq(r->status, 200, "%s", r->body);
    gh_free(r);
    gh_stop(&s_gw);
    /* MUSICBUS_MEDIA_SECRET_FILE, and a secret too short stops the start. */
    file = gh_write(&s_gw, "short.secret", "short\n");
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "MUSICBUS_MEDIA_SECRET_FILE=%s MUSICBUS_LOG_LEVEL=error timeout 10 "
             "%s/musicbus-gateway --http 127.0.0.1:0 --bus tcp://127.0.0.1:9 2>/dev/null",
             file, getenv("MUSICBUS_BIN_DIR"));
    unsetenv("MUSICBUS_MEDIA_SECRET");
    int status = system(cmd);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "exit 1 (0x%x)", status);
}
