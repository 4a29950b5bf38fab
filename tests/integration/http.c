/*  http — a small HTTP client for the integration tests, on libcurl. */
#include "http.h"

#include <ctype.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Everything one transfer needs until it is done. */
typedef struct {
    CURL *easy;
    struct curl_slist *headers;
    it_http_res_t *res;
    char *buf;
    size_t len, cap;
    char *allow;
    char errbuf[CURL_ERROR_SIZE];
} s_transfer_t;

static pthread_once_t s_once = PTHREAD_ONCE_INIT;

static void s_global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void *s_xrealloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size);
    if (!p) {
        fprintf(stderr, "it: out of memory\n");
        abort();
    }
    return p;
}

static char *s_xstrdup(const char *text)
{
    size_t n = strlen(text) + 1;
    return memcpy(s_xrealloc(NULL, n), text, n);
}

static size_t s_on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    s_transfer_t *t = arg;
    size_t n = size * nmemb;
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->buf = s_xrealloc(t->buf, t->cap);
    }
    memcpy(t->buf + t->len, data, n);
    t->len += n;
    t->buf[t->len] = '\0';
    return n;
}

/* Keeps the headers of the final response (a 100 Continue has its own
   status line, which starts the list again). */
static size_t s_on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    s_transfer_t *t = arg;
    it_http_res_t *res = t->res;
    size_t n = size * nmemb;
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        for (size_t i = 0; i < res->nheaders; i++) {
            free(res->headers[i].name);
            free(res->headers[i].value);
        }
        res->nheaders = 0;
        free(t->allow);
        t->allow = NULL;
        return n;
    }
    const char *colon = memchr(data, ':', n);
    if (!colon || colon == data || res->nheaders == IT_HTTP_HEADERS_MAX)
        return n;
    size_t start = (size_t)(colon - data) + 1, end = n;
    while (start < end && isspace((unsigned char)data[start]))
        start++;
    while (end > start && isspace((unsigned char)data[end - 1]))
        end--;
    it_http_header_t *h = &res->headers[res->nheaders++];
    size_t name_len = (size_t)(colon - data);
    h->name = memcpy(s_xrealloc(NULL, name_len + 1), data, name_len);
    h->name[name_len] = '\0';
    h->value = memcpy(s_xrealloc(NULL, end - start + 1), data + start, end - start);
    h->value[end - start] = '\0';
    if (strcasecmp(h->name, "allow") == 0) {
        free(t->allow);
        t->allow = s_xstrdup(h->value);
    }
    return n;
}

static s_transfer_t *s_transfer_new(it_http_res_t *res, const char *method, const char *url,
                                    const char *content_type, const char *body, size_t len,
                                    const it_http_opts_t *opts)
{
    static const it_http_opts_t none = {0};
    if (!opts)
        opts = &none;
    long timeout_ms = opts->timeout_ms;
    pthread_once(&s_once, s_global_init);
    memset(res, 0, sizeof *res);
    s_transfer_t *t = s_xrealloc(NULL, sizeof *t);
    memset(t, 0, sizeof *t);
    t->res = res;
    t->easy = curl_easy_init();
    if (!t->easy) {
        fprintf(stderr, "it: curl_easy_init failed\n");
        abort();
    }
    CURL *e = t->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : IT_HTTP_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, s_on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, s_on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
    /* Every request on a connection of its own: a test that kills a
       process must not see a reply meant for another request. */
    curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    /* Tests only ever talk to the stack they started on loopback. */
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0 || body) /* a GET with a body stays a GET */
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    if (content_type) {
        char line[256];
        snprintf(line, sizeof line, "Content-Type: %s", content_type);
        t->headers = curl_slist_append(t->headers, line);
    } else if (body) {
        /* Send no Content-Type at all rather than curl's form default. */
        t->headers = curl_slist_append(t->headers, "Content-Type:");
    }
    if (opts->bearer) {
        size_t n = strlen(opts->bearer) + 32;
        char *line = s_xrealloc(NULL, n);
        snprintf(line, n, "Authorization: Bearer %s", opts->bearer);
        t->headers = curl_slist_append(t->headers, line);
        free(line);
    }
    for (const char *const *h = opts->headers; h && *h; h++)
        t->headers = curl_slist_append(t->headers, *h);
    if (t->headers)
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
    return t;
}

/* Moves what the transfer collected into its result and frees it. */
static int s_transfer_finish(s_transfer_t **t_p, CURLcode rc)
{
    s_transfer_t *t = *t_p;
    it_http_res_t *res = t->res;
    curl_off_t total_us = 0;
    curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME_T, &total_us);
    res->elapsed_ms = (long)(total_us / 1000);
    res->body = t->buf ? t->buf : s_xstrdup("");
    res->body_len = t->len;
    res->allow = t->allow;
    if (rc == CURLE_OK) {
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &res->status);
        const char *ct = NULL;
        curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &ct);
        if (ct) {
            res->content_type = s_xstrdup(ct);
            char *semi = strchr(res->content_type, ';');
            if (semi)
                *semi = '\0';
            for (char *c = res->content_type; *c; c++)
                *c = (char)tolower((unsigned char)*c);
            for (char *c = res->content_type + strlen(res->content_type);
                 c > res->content_type && isspace((unsigned char)c[-1]); c--)
                c[-1] = '\0';
        }
        if (res->body_len > 0)
            res->json = json_loadb(res->body, res->body_len, JSON_DECODE_ANY, NULL);
    } else {
        res->status = 0;
        snprintf(res->error, sizeof res->error, "%s",
                 t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc));
    }
    curl_slist_free_all(t->headers);
    curl_easy_cleanup(t->easy);
    free(t);
    *t_p = NULL;
    return rc == CURLE_OK ? 0 : -1;
}

int it_http_ex(it_http_res_t *res, const char *method, const char *url, const char *content_type,
               const char *body, size_t len, const it_http_opts_t *opts)
{
    s_transfer_t *t = s_transfer_new(res, method, url, content_type, body, len, opts);
    CURLcode rc = curl_easy_perform(t->easy);
    return s_transfer_finish(&t, rc);
}

int it_http(it_http_res_t *res, const char *method, const char *url, const char *content_type,
            const char *body, size_t len, long timeout_ms)
{
    it_http_opts_t opts = {.timeout_ms = timeout_ms};
    return it_http_ex(res, method, url, content_type, body, len, &opts);
}

int it_http_json_as(it_http_res_t *res, const char *bearer, const char *method, const char *url,
                    const json_t *doc)
{
    it_http_opts_t opts = {.bearer = bearer};
    if (!doc)
        return it_http_ex(res, method, url, NULL, NULL, 0, &opts);
    char *text = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        fprintf(stderr, "it: json_dumps failed\n");
        abort();
    }
    int rc = it_http_ex(res, method, url, "application/json", text, strlen(text), &opts);
    free(text);
    return rc;
}

int it_http_json(it_http_res_t *res, const char *method, const char *url, const json_t *doc)
{
    return it_http_json_as(res, NULL, method, url, doc);
}

const char *it_http_header(const it_http_res_t *res, const char *name)
{
    const char *value = NULL;
    for (size_t i = 0; i < res->nheaders; i++)
        if (strcasecmp(res->headers[i].name, name) == 0)
            value = res->headers[i].value;
    return value;
}

void it_http_res_release(it_http_res_t *res)
{
    free(res->content_type);
    free(res->body);
    free(res->allow);
    for (size_t i = 0; i < res->nheaders; i++) {
        free(res->headers[i].name);
        free(res->headers[i].value);
    }
    json_decref(res->json);
    memset(res, 0, sizeof *res);
}

static long s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

size_t it_http_many(it_http_req_t *reqs, size_t n, long timeout_ms, it_http_tick_fn *tick,
                    void *arg)
{
    pthread_once(&s_once, s_global_init);
    CURLM *multi = curl_multi_init();
    s_transfer_t **ts = s_xrealloc(NULL, n * sizeof *ts);
    for (size_t i = 0; i < n; i++) {
        const char *body = reqs[i].body;
        reqs[i].completions = 0;
        it_http_opts_t opts = {.bearer = reqs[i].bearer, .timeout_ms = timeout_ms};
        ts[i] =
            s_transfer_new(&reqs[i].res, reqs[i].method, reqs[i].url,
                           body ? "application/json" : NULL, body, body ? strlen(body) : 0, &opts);
        curl_easy_setopt(ts[i]->easy, CURLOPT_PRIVATE, (void *)(uintptr_t)i);
        curl_multi_add_handle(multi, ts[i]->easy);
    }
    long start = s_now_ms();
    size_t answered = 0, done = 0;
    int running = 1;
    while (done < n) {
        curl_multi_perform(multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            void *priv = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
            size_t i = (size_t)(uintptr_t)priv;
            CURLcode rc = msg->data.result;
            reqs[i].completions++;
            if (!ts[i])
                continue; /* a second completion: counted, nothing to collect */
            curl_multi_remove_handle(multi, ts[i]->easy);
            if (s_transfer_finish(&ts[i], rc) == 0)
                answered++;
            done++;
        }
        if (tick)
            tick(arg, s_now_ms() - start);
        if (done < n)
            curl_multi_poll(multi, NULL, 0, 20, NULL);
    }
    free(ts);
    curl_multi_cleanup(multi);
    return answered;
}

const char *it_json_str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

long long it_json_int(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (long long)json_integer_value(v) : -1;
}
