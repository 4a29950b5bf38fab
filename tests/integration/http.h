/*  http — a small HTTP client for the integration tests, on libcurl.

    libcurl is the tests' independent client: it shares no code with the
    gateway (libmicrohttpd), so a response is checked the way a real client
    reads it (see README.md).

        it_http_res_t res;
        it_http (&res, "GET", url, NULL, NULL, 0);
        cr_assert_eq (res.status, 200, "%s", res.body);
        const char *name = json_string_value (json_object_get (res.json, "name"));
        it_http_res_release (&res);
*/
#ifndef IT_HTTP_H
#define IT_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Per-request timeout used when a caller passes 0. */
#define IT_HTTP_TIMEOUT_MS 10000

/* Response headers kept per response (more are dropped). */
#define IT_HTTP_HEADERS_MAX 64

/* One response header, as received (value trimmed). */
typedef struct {
    char *name;  /* owned */
    char *value; /* owned */
} it_http_header_t;

typedef struct {
    long status;        /* HTTP status, 0 when the transfer failed */
    char *content_type; /* media type without parameters, lower case; owned, may be NULL */
    char *body;         /* the response body, NUL-terminated; owned, never NULL */
    size_t body_len;
    json_t *json; /* the body parsed as exactly one JSON document, else NULL; owned */
    char *allow;  /* value of the Allow header; owned, may be NULL */
    it_http_header_t headers[IT_HTTP_HEADERS_MAX]; /* of the final response, in order */
    size_t nheaders;
    long elapsed_ms; /* from sending to the end of the response */
    char error[256]; /* libcurl's reason when status is 0, else "" */
} it_http_res_t;

/*  Sends one request and waits for the whole response. `body` (len bytes)
    and `content_type` may be NULL. `timeout_ms` 0 means IT_HTTP_TIMEOUT_MS.
    Fills *res, which the caller releases; returns 0, or -1 when the
    transfer failed (res->status is then 0 and res->error says why). */
int it_http(it_http_res_t *res, const char *method, const char *url, const char *content_type,
            const char *body, size_t len, long timeout_ms);

/*  What it_http_ex() adds to a request. Every field may be 0/NULL. */
typedef struct {
    const char *bearer;         /* sends Authorization: Bearer <bearer> */
    const char *const *headers; /* NULL-terminated "Name: value" lines to send */
    long timeout_ms;            /* 0: IT_HTTP_TIMEOUT_MS */
} it_http_opts_t;

/*  it_http() with request headers: `opts` may be NULL. */
int it_http_ex(it_http_res_t *res, const char *method, const char *url, const char *content_type,
               const char *body, size_t len, const it_http_opts_t *opts);

/*  it_http() with a JSON body built from `doc` (borrowed; NULL for no
    body), sent as application/json. */
int it_http_json(it_http_res_t *res, const char *method, const char *url, const json_t *doc);

/*  it_http_json() with `bearer` (NULL for none) as the access token. */
int it_http_json_as(it_http_res_t *res, const char *bearer, const char *method, const char *url,
                    const json_t *doc);

/*  The value of response header `name` (any case), the last one when it
    came more than once; NULL when absent. Borrowed from res. */
const char *it_http_header(const it_http_res_t *res, const char *name);

/*  Frees what *res owns and zeroes it. Safe to call twice. */
void it_http_res_release(it_http_res_t *res);

/*  One request of a batch run by it_http_many(). */
typedef struct {
    const char *method; /* set by the caller */
    char *url;          /* set by the caller; borrowed */
    const char *body;   /* JSON body or NULL; borrowed */
    const char *bearer; /* access token to send, or NULL; borrowed */
    it_http_res_t res;  /* filled by it_http_many() */
    int completions;    /* times libcurl reported this transfer done (must be 1) */
} it_http_req_t;

/*  Called about every 20 ms while a batch runs, with the milliseconds
    since it started; lets a test act (kill a process) mid-flight. */
typedef void(it_http_tick_fn)(void *arg, long elapsed_ms);

/*  Runs the n requests at once over separate connections and waits for
    all of them, at most timeout_ms each. Returns the number of requests
    that got an HTTP response. `tick` may be NULL. */
size_t it_http_many(it_http_req_t *reqs, size_t n, long timeout_ms, it_http_tick_fn *tick,
                    void *arg);

/*  Convenience readers of a parsed body: the string, integer or value at
    key `key` of res->json, or NULL / -1 when absent or of another type. */
const char *it_json_str(const json_t *obj, const char *key);
long long it_json_int(const json_t *obj, const char *key);

#endif
