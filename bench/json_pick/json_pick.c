/*  json_pick — measures the three JSON libraries Debian ships (jansson,
    cJSON, json-c) on the gateway's two hot paths: parsing a request body
    (~300 bytes) and a reply (~4 KB) and serialising it back, and checks
    that each rejects what the gateway must reject (invalid UTF-8,
    duplicate keys, trailing garbage).

    jansson and json-c export clashing names (json_object, json_object_get,
    json_object_iter_next...), so each library gets a binary of its own,
    which also makes each peak RSS that library's alone.
    Build by hand (bench/ is not wired into CMake): see build.sh.
    Run: ./json_pick-<lib> [iterations] */
#if defined(USE_JANSSON)
#include <jansson.h>
#elif defined(USE_CJSON)
#include <cjson/cJSON.h>
#elif defined(USE_JSONC)
#include <json-c/json.h>
#else
#error "define USE_JANSSON, USE_CJSON or USE_JSONC"
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static const char s_request[] =
    "{\"title\":\"Bohemian Rhapsody\",\"artist_id\":\"4tZwfgrHOc3mvqYlEYSvVi\","
    "\"album_id\":\"6i6folBtxKV28WX3msQ4FE\",\"duration_ms\":354320,\"explicit\":false,"
    "\"isrc\":\"GBUM71029604\",\"track_number\":11,\"disc_number\":1,"
    "\"genres\":[\"rock\",\"progressive rock\",\"opera\"],"
    "\"markets\":[\"DE\",\"FR\",\"GB\",\"US\",\"JP\"],\"popularity\":83,"
    "\"note\":\"caf\\u00e9 \\u2014 live\"}";

static char *s_reply;
static size_t s_reply_len;

/*  A reply of ~4 KB: {"items":[ {track}, ... ], "total": n, "next": null} */
static void s_make_reply(void)
{
    size_t cap = 8192, len = 0;
    s_reply = malloc(cap);
    len += sprintf(s_reply + len, "{\"items\":[");
    for (int i = 0; len < 3900; i++) {
        len += sprintf(s_reply + len,
                       "%s{\"id\":\"4tZwfgrHOc3mvqYlEYSv%02d\",\"title\":\"Track number %d\","
                       "\"duration_ms\":%d,\"explicit\":%s,\"popularity\":%d,"
                       "\"genres\":[\"rock\",\"pop\"],\"rating\":%d.5}",
                       i ? "," : "", i, i, 180000 + i * 1000, i % 2 ? "true" : "false", i * 3, i);
    }
    len += sprintf(s_reply + len, "],\"total\":1234,\"next\":null}");
    s_reply_len = len;
}

/*  When set, the round trips stop after parsing: the gateway parses request
    bodies with the library but serialises replies itself from msgpack. */
static int s_parse_only;

static double s_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/*  Each round trip returns the serialised length, or -1 when parsing failed. */
#if defined(USE_JANSSON)
#define LIB_NAME "jansson"
#define LIB_FN s_jansson
static long s_jansson(const char *text, size_t len)
{
    json_error_t err;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    if (!j)
        return -1;
    if (s_parse_only) {
        json_decref(j);
        return 0;
    }
    char *out = json_dumps(j, JSON_COMPACT);
    long n = (long)strlen(out);
    free(out);
    json_decref(j);
    return n;
}

#elif defined(USE_CJSON)
#define LIB_NAME "cjson"
#define LIB_FN s_cjson
static long s_cjson(const char *text, size_t len)
{
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!j)
        return -1;
    if ((size_t)(end - text) != len) { /* trailing data */
        cJSON_Delete(j);
        return -1;
    }
    if (s_parse_only) {
        cJSON_Delete(j);
        return 0;
    }
    char *out = cJSON_PrintUnformatted(j);
    long n = (long)strlen(out);
    free(out);
    cJSON_Delete(j);
    return n;
}

#elif defined(USE_JSONC)
#define LIB_NAME "json-c"
#define LIB_FN s_jsonc
static long s_jsonc(const char *text, size_t len)
{
    static json_tokener *tok;
    if (!tok) {
        tok = json_tokener_new();
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    }
    json_tokener_reset(tok);
    json_object *j = json_tokener_parse_ex(tok, text, (int)len);
    if (!j || json_tokener_get_error(tok) != json_tokener_success)
        return j ? (json_object_put(j), -1) : -1;
    if (json_tokener_get_parse_end(tok) != len) {
        json_object_put(j);
        return -1;
    }
    if (s_parse_only) {
        json_object_put(j);
        return 0;
    }
    long n = (long)strlen(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
    json_object_put(j);
    return n;
}
#endif

typedef long (*s_fn_t)(const char *, size_t);

static void s_checks(const char *name, s_fn_t fn)
{
    static const struct {
        const char *what, *text;
        int must_accept;
    } cases[] = {
        {"valid", "{\"a\":\"caf\xc3\xa9\"}", 1},
        {"invalid UTF-8 (lone 0xff)", "{\"a\":\"\xff\"}", 0},
        {"invalid UTF-8 (overlong)", "{\"a\":\"\xc0\xaf\"}", 0},
        {"invalid UTF-8 (surrogate)", "{\"a\":\"\xed\xa0\x80\"}", 0},
        {"duplicate key", "{\"a\":1,\"a\":2}", 0},
        {"trailing garbage", "{\"a\":1} x", 0},
        {"two documents", "{\"a\":1}{}", 0},
        {"trailing comma", "{\"a\":1,}", 0},
        {"single quotes", "{'a':1}", 0},
        {"lone surrogate escape", "{\"a\":\"\\ud800\"}", 0},
        {"NaN", "{\"a\":NaN}", 0},
    };
    int ok = 0, n = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < n; i++) {
        int accepted = fn(cases[i].text, strlen(cases[i].text)) >= 0;
        int good = accepted == cases[i].must_accept;
        ok += good;
        if (!good)
            printf("  %-8s WRONG on %s (%s)\n", name, cases[i].what,
                   accepted ? "accepted" : "rejected");
    }
    printf("  %-8s correctness %d/%d\n", name, ok, n);
}

static void s_bench(const char *name, s_fn_t fn, long iters)
{
    double t0 = s_now_ns();
    long sum = 0;
    for (long i = 0; i < iters; i++)
        sum += fn(s_request, sizeof s_request - 1);
    double t1 = s_now_ns();
    for (long i = 0; i < iters; i++)
        sum += fn(s_reply, s_reply_len);
    double t2 = s_now_ns();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%-8s %-10s request(%zuB) %7.0f ns/op   reply(%zuB) %7.0f ns/op   peak RSS %ld KiB  "
           "[%ld]\n",
           name, s_parse_only ? "parse" : "round-trip", sizeof s_request - 1, (t1 - t0) / iters,
           s_reply_len, (t2 - t1) / iters, ru.ru_maxrss, sum);
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 200000;
    s_make_reply();
    s_checks(LIB_NAME, LIB_FN);
    s_bench(LIB_NAME, LIB_FN, iters);
    s_parse_only = 1;
    s_bench(LIB_NAME, LIB_FN, iters);
    free(s_reply);
    return 0;
}
