/*  gw_harness — a real musicbus-gateway (from $MUSICBUS_BIN_DIR) for the
    HTTP tests, a libcurl client, and a fake broker: a ROUTER socket on a
    thread that answers the gateway's MDP requests with whatever the test
    decides and remembers the last request of each op. Header-only: each
    test binary includes it once. */
#ifndef GW_HARNESS_H
#define GW_HARNESS_H

#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <msgpack.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "mb_envelope.h"
#include "mb_msgpack.h"
#include "mb_zmq.h"
#include "mdp.h"

#define GH_START_TIMEOUT_MS 10000

static inline long gh_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the gateway ------------------------------------------------------------ */

typedef struct {
    pid_t pid;
    char dir[64];   /* a temporary folder: ready file, data folder, schema */
    char base[128]; /* http://127.0.0.1:PORT */
} gh_gateway_t;

/*  Starts the gateway with `argv_extra` (NULL-terminated) and `env`
    ("NAME=value", NULL-terminated; set in the child only), its data
    folder in g->dir/data, and waits for its ready file. */
static inline void gh_start(gh_gateway_t *g, const char *const *argv_extra, const char *const *env)
{
    const char *bin_dir = getenv("MUSICBUS_BIN_DIR");
    cr_assert_not_null(bin_dir, "MUSICBUS_BIN_DIR is not set (run through ctest)");
    char bin[512], ready[128], data[128];
    snprintf(bin, sizeof bin, "%s/musicbus-gateway", bin_dir);
    cr_assert_eq(access(bin, X_OK), 0, "%s is not built", bin);
    if (!g->dir[0]) {
        snprintf(g->dir, sizeof g->dir, "/tmp/test_gw.XXXXXX");
        cr_assert_not_null(mkdtemp(g->dir));
    }
    snprintf(ready, sizeof ready, "%s/ready", g->dir);
    snprintf(data, sizeof data, "%s/data", g->dir);
    unlink(ready);
    mkdir(data, 0700);
    const char *argv[40] = {bin, "--http", "127.0.0.1:0", "--ready-file", ready, "--data", data};
    size_t n = 7;
    for (size_t i = 0; argv_extra && argv_extra[i] && n < 39; i++)
        argv[n++] = argv_extra[i];
    argv[n] = NULL;
    g->pid = fork();
    cr_assert_geq(g->pid, 0);
    if (g->pid == 0) {
        /* A test that fails in its setup never runs its teardown: the
           gateway must not outlive the test process. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        unsetenv("MUSICBUS_MEDIA_SECRET");
        unsetenv("MUSICBUS_MEDIA_SECRET_FILE");
        unsetenv("MUSICBUS_JWT_SECRET");
        unsetenv("MUSICBUS_JWT_SECRET_FILE");
        unsetenv("MUSICBUS_MAX_UPLOAD");
        unsetenv("MUSICBUS_DATA");
        for (size_t i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        if (!getenv("MUSICBUS_LOG_LEVEL"))
            setenv("MUSICBUS_LOG_LEVEL", "error", 1);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    long t0 = gh_now_ms();
    FILE *f = NULL;
    while (!(f = fopen(ready, "r"))) {
        int status;
        cr_assert_eq(waitpid(g->pid, &status, WNOHANG), 0, "the gateway exited (0x%x)", status);
        cr_assert_lt(gh_now_ms() - t0, GH_START_TIMEOUT_MS, "no ready file");
        usleep(10000);
    }
    char addr[64] = "";
    cr_assert_not_null(fgets(addr, sizeof addr, f));
    fclose(f);
    addr[strcspn(addr, "\n")] = '\0';
    snprintf(g->base, sizeof g->base, "http://%s", addr);
}

/*  Stops the gateway (SIGTERM; it must exit 0) and removes g->dir. */
static inline void gh_stop(gh_gateway_t *g)
{
    if (g->pid > 0) {
        kill(g->pid, SIGTERM);
        int status = 0;
        long t0 = gh_now_ms();
        while (waitpid(g->pid, &status, WNOHANG) == 0) {
            if (gh_now_ms() - t0 > 8000) {
                kill(g->pid, SIGKILL);
                waitpid(g->pid, &status, 0);
                break;
            }
            usleep(10000);
        }
        g->pid = 0;
        cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit 0 on SIGTERM (0x%x)",
                  status);
    }
    if (g->dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g->dir);
        cr_expect_eq(system(cmd), 0);
        g->dir[0] = '\0';
    }
}

/*  Writes `text` to g->dir/name and returns the path (static buffer). */
static inline const char *gh_write(gh_gateway_t *g, const char *name, const char *text)
{
    static char path[256];
    if (!g->dir[0]) {
        snprintf(g->dir, sizeof g->dir, "/tmp/test_gw.XXXXXX");
        cr_assert_not_null(mkdtemp(g->dir));
    }
    snprintf(path, sizeof path, "%s/%s", g->dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
    chmod(path, 0600);
    return path;
}

/*  The gateway's peak resident memory (VmHWM), in KiB. */
static inline long gh_peak_kib(const gh_gateway_t *g)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)g->pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6))
            kib = atol(line + 6);
    if (f)
        fclose(f);
    return kib;
}

/* ---- a client ------------------------------------------------------------------ */

typedef struct {
    const char *method;     /* "GET" when NULL */
    const char *headers[8]; /* "Name: value", NULL-terminated */
    const void *upload;     /* a request body sent as it is (PUT/POST), or NULL */
    size_t upload_len;
    bool chunked;               /* send it without Content-Length */
    const char *upload_pattern; /* or: upload_len bytes of this repeated (big bodies) */
    bool expect_continue;       /* send "Expect: 100-continue" and wait for it */
} gh_req_t;

typedef struct {
    long status;
    CURLcode curl; /* CURLE_OK unless the transfer failed */
    char *body;    /* NUL-terminated */
    size_t body_len;
    char headers[4096]; /* all response header lines */
    json_t *json;       /* the body parsed, or NULL */
    const char *src;    /* upload cursor */
    size_t sent;
    const gh_req_t *req;
} gh_res_t;

static size_t gh_on_body(char *data, size_t size, size_t n, void *cls)
{
    gh_res_t *res = cls;
    size_t len = size * n;
    res->body = realloc(res->body, res->body_len + len + 1);
    memcpy(res->body + res->body_len, data, len);
    res->body_len += len;
    res->body[res->body_len] = '\0';
    return len;
}

static size_t gh_on_header(char *data, size_t size, size_t n, void *cls)
{
    gh_res_t *res = cls;
    size_t len = size * n, used = strlen(res->headers);
    if (used + len < sizeof res->headers) {
        memcpy(res->headers + used, data, len);
        res->headers[used + len] = '\0';
    }
    return len;
}

static size_t gh_on_read(char *buf, size_t size, size_t n, void *cls)
{
    gh_res_t *res = cls;
    const gh_req_t *req = res->req;
    size_t room = size * n, left = req->upload_len - res->sent;
    size_t len = left < room ? left : room;
    if (req->upload) {
        memcpy(buf, (const char *)req->upload + res->sent, len);
    } else {
        size_t plen = strlen(req->upload_pattern);
        for (size_t i = 0; i < len; i++)
            buf[i] = req->upload_pattern[(res->sent + i) % plen];
    }
    res->sent += len;
    return len;
}

/*  The value of response header `name` (first one), or "" (static buffer). */
static inline const char *gh_header(const gh_res_t *res, const char *name)
{
    static char value[512];
    value[0] = '\0';
    size_t nlen = strlen(name);
    for (const char *line = res->headers; line && *line;) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        if (len > nlen && !strncasecmp(line, name, nlen) && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (*v == ' ')
                v++;
            size_t vlen = (size_t)(line + len - v);
            while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == ' '))
                vlen--;
            snprintf(value, sizeof value, "%.*s", (int)vlen, v);
            break;
        }
        line = eol ? eol + 1 : NULL;
    }
    return value;
}

/*  One request to g at `path` (sent as it is: no normalisation of dots).
    A failed transfer is returned with res->curl set, not asserted on. */
static inline gh_res_t *gh_request(const gh_gateway_t *g, const char *path, const gh_req_t *req)
{
    static const gh_req_t plain = {0};
    if (!req)
        req = &plain;
    gh_res_t *res = calloc(1, sizeof *res);
    res->req = req;
    res->body = calloc(1, 1);
    CURL *e = curl_easy_init();
    char url[1024];
    snprintf(url, sizeof url, "%s%s", g->base, path);
    struct curl_slist *headers = NULL;
    for (size_t i = 0; i < 8 && req->headers[i]; i++)
        headers = curl_slist_append(headers, req->headers[i]);
    const char *method = req->method ? req->method : "GET";
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    if (!strcmp(method, "HEAD"))
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    else
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (req->upload || req->upload_pattern) {
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, gh_on_read);
        curl_easy_setopt(e, CURLOPT_READDATA, res);
        if (!req->chunked)
            curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->upload_len);
        else
            headers = curl_slist_append(headers, "Transfer-Encoding: chunked");
        /* curl sends "Expect: 100-continue" for big bodies only; tests
           choose. */
        headers =
            curl_slist_append(headers, req->expect_continue ? "Expect: 100-continue" : "Expect:");
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, gh_on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, res);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, gh_on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, res);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 30000L);
    res->curl = curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &res->status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(e);
    res->json = json_loadb(res->body, res->body_len, 0, NULL);
    return res;
}

static inline void gh_free(gh_res_t *res)
{
    if (!res)
        return;
    json_decref(res->json);
    free(res->body);
    free(res);
}

static inline const char *gh_json_str(const gh_res_t *res, const char *key)
{
    return json_string_value(json_object_get(res->json, key));
}

/*  Waits until /readyz says the gateway reaches the broker. */
static inline void gh_wait_ready(const gh_gateway_t *g)
{
    long t0 = gh_now_ms();
    for (;;) {
        gh_res_t *r = gh_request(g, "/readyz", NULL);
        long status = r->status;
        gh_free(r);
        if (status == 200)
            return;
        cr_assert_lt(gh_now_ms() - t0, GH_START_TIMEOUT_MS, "the gateway never got ready");
        usleep(20000);
    }
}

/* ---- a fake broker ------------------------------------------------------------ */

/*  What the test answers to one request: set *status and pack one body
    object into pk (nothing packed: a nil body), or set *code for an
    error reply; or return false to answer nothing (the gateway's
    deadline then answers). `req` is the decoded request. */
typedef bool (*gh_answer_fn)(const char *service, const mb_request_t *req, msgpack_packer *pk,
                             int *status, const char **code, void *cls);

typedef struct {
    void *router;
    char endpoint[128];
    pthread_t thread;
    volatile bool stop;
    gh_answer_fn answer;
    void *cls;
    pthread_mutex_t lock;
    unsigned requests; /* requests received (probes not counted) */
} gh_broker_t;

static void gh_send_frames(void *socket, zmq_msg_t *identity, const char *service, const void *body,
                           size_t size)
{
    zmq_msg_send(identity, socket, ZMQ_SNDMORE);
    zmq_send(socket, "", 0, ZMQ_SNDMORE);
    zmq_send(socket, MDPC_CLIENT, strlen(MDPC_CLIENT), ZMQ_SNDMORE);
    zmq_send(socket, service, strlen(service), ZMQ_SNDMORE);
    zmq_send(socket, body, size, 0);
}

static void *gh_broker_run(void *arg)
{
    gh_broker_t *b = arg;
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    while (!b->stop) {
        zmq_pollitem_t item = {.socket = b->router, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, 50) <= 0)
            continue;
        zmq_msg_t frames[6];
        int n = 0;
        for (;;) {
            zmq_msg_t *f = &frames[n < 5 ? n : 5];
            if (n >= 5)
                zmq_msg_close(f);
            zmq_msg_init(f);
            zmq_msg_recv(f, b->router, 0);
            bool more = zmq_msg_more(f);
            if (n < 5)
                n++;
            if (!more)
                break;
        }
        /* [identity] [empty] ["MDPC01"] [service] [body] */
        if (n == 5) {
            char service[64];
            size_t slen = zmq_msg_size(&frames[3]);
            snprintf(service, sizeof service, "%.*s", (int)(slen < 63 ? slen : 63),
                     (const char *)zmq_msg_data(&frames[3]));
            if (!strcmp(service, MMI_SERVICE)) {
                gh_send_frames(b->router, &frames[0], MMI_SERVICE, "200", 3);
            } else {
                mb_request_t req;
                const char *why = NULL;
                if (mb_request_decode(&req, zmq_msg_data(&frames[4]), zmq_msg_size(&frames[4]),
                                      &why) == 0) {
                    pthread_mutex_lock(&b->lock);
                    b->requests++;
                    pthread_mutex_unlock(&b->lock);
                    msgpack_sbuffer_clear(&sbuf);
                    msgpack_packer pk;
                    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
                    msgpack_sbuffer body;
                    msgpack_sbuffer_init(&body);
                    msgpack_packer bpk;
                    msgpack_packer_init(&bpk, &body, msgpack_sbuffer_write);
                    int status = 200;
                    const char *code = NULL;
                    if (b->answer(service, &req, &bpk, &status, &code, b->cls)) {
                        if (code) {
                            mb_reply_pack_error(&pk, req.rid, status, code, NULL,
                                                "the test said so");
                        } else {
                            mb_reply_pack_head(&pk, req.rid, status);
                            if (body.size)
                                mb_pack_raw(&pk, body.data, body.size);
                            else
                                msgpack_pack_nil(&pk);
                        }
                        gh_send_frames(b->router, &frames[0], service, sbuf.data, sbuf.size);
                    }
                    msgpack_sbuffer_destroy(&body);
                    mb_request_release(&req);
                }
            }
        }
        for (int i = 0; i < n; i++)
            zmq_msg_close(&frames[i]);
    }
    msgpack_sbuffer_destroy(&sbuf);
    return NULL;
}

static inline void gh_broker_start(gh_broker_t *b, gh_answer_fn answer, void *cls)
{
    memset(b, 0, sizeof *b);
    b->answer = answer;
    b->cls = cls;
    pthread_mutex_init(&b->lock, NULL);
    b->router = zmq_socket(mb_zmq_context(), ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(b->router, ZMQ_LINGER, &linger, sizeof linger);
    cr_assert_eq(zmq_bind(b->router, "tcp://127.0.0.1:*"), 0);
    size_t size = sizeof b->endpoint;
    zmq_getsockopt(b->router, ZMQ_LAST_ENDPOINT, b->endpoint, &size);
    cr_assert_eq(pthread_create(&b->thread, NULL, gh_broker_run, b), 0);
}

static inline void gh_broker_stop(gh_broker_t *b)
{
    if (!b->router)
        return;
    b->stop = true;
    pthread_join(b->thread, NULL);
    zmq_close(b->router);
    b->router = NULL;
    pthread_mutex_destroy(&b->lock);
}

static inline unsigned gh_broker_requests(gh_broker_t *b)
{
    pthread_mutex_lock(&b->lock);
    unsigned n = b->requests;
    pthread_mutex_unlock(&b->lock);
    return n;
}

#endif
