/*  The gateway over HTTP with a fake broker behind it (gw_harness.h):
    raw (non-JSON) replies, request headers passed as args, statuses
    passed through, and uploads streamed into the blob store.

    The gateway serves a schema of the test's own (--schema), so each
    feature is driven by the document alone, as in production. */
#include <sodium.h>

#include "gw_harness.h"
#include "mb_blob.h"

#define S_MAX_UPLOAD 3000000 /* --max-upload: below the route's own max */

static const char s_schema[] =
    "{\"openapi\":\"3.1.0\",\"paths\":{"
    "\"/readyz\":{\"get\":{\"x-service\":\"gateway\",\"x-op\":\"readyz\"}},"
    "\"/report\":{\"get\":{\"x-service\":\"stats\",\"x-op\":\"report\",\"x-access\":\"public\","
    "  \"parameters\":[{\"name\":\"variant\",\"in\":\"query\",\"schema\":{\"type\":\"string\"}}],"
    "  \"responses\":{\"200\":{\"content\":{\"text/csv\":{},\"application/json\":{}}}}}},"
    "\"/"
    "report-json\":{\"get\":{\"x-service\":\"stats\",\"x-op\":\"report\",\"x-access\":\"public\","
    "  \"parameters\":[{\"name\":\"variant\",\"in\":\"query\",\"schema\":{\"type\":\"string\"}}],"
    "  \"responses\":{\"200\":{\"content\":{\"application/json\":{}}}}}},"
    "\"/playlists/{id}\":{\"put\":{\"x-service\":\"playlists\",\"x-op\":\"echo\","
    "  \"x-access\":\"public\",\"x-headers\":{\"If-Match\":\"if_match\"},"
    "  \"requestBody\":{\"content\":{\"application/json\":{}}}}},"
    "\"/status/"
    "{code}\":{\"get\":{\"x-service\":\"s\",\"x-op\":\"status\",\"x-access\":\"public\"}},"
    "\"/slow\":{\"get\":{\"x-service\":\"s\",\"x-op\":\"silent\",\"x-access\":\"public\","
    "  \"x-timeout-ms\":300}},"
    "\"/tracks/{id}/audio\":{\"put\":{\"x-service\":\"transcode\",\"x-op\":\"audio.ingest\","
    "  \"x-access\":\"public\","
    "  \"x-upload\":{\"max\":4000000,\"types\":[\"audio/*\",\"application/octet-stream\"]}}},"
    "\"/small/{id}\":{\"put\":{\"x-service\":\"transcode\",\"x-op\":\"audio.ingest\","
    "  \"x-access\":\"public\",\"x-upload\":{\"max\":1000}}},"
    "\"/big/{id}\":{\"put\":{\"x-service\":\"transcode\",\"x-op\":\"audio.ingest\","
    "  \"x-access\":\"public\",\"x-upload\":{\"types\":\"*\"}}}"
    "}}";

static gh_gateway_t s_gw;
static gh_broker_t s_broker;

/*  The fake services. */
static bool s_answer(const char *service, const mb_request_t *req, msgpack_packer *pk, int *status,
                     const char **code, void *cls)
{
    (void)service;
    (void)cls;
    char op[64];
    snprintf(op, sizeof op, "%.*s", (int)req->op_len, req->op);
    if (!strcmp(op, "echo")) {
        mb_pack_object(pk, req->args);
        return true;
    }
    if (!strcmp(op, "status")) {
        char *text = mb_obj_strdup(mb_map_get(req->args, "code"));
        *status = text ? atoi(text) : 500;
        free(text);
        static const struct {
            int status;
            const char *code;
        } codes[] = {{412, "precondition_failed"}, {422, "not_audio"}, {507, "storage_full"}};
        for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
            if (codes[i].status == *status)
                *code = codes[i].code;
        if (!*code) {
            msgpack_pack_map(pk, 1);
            mb_pack_cstr(pk, "accepted");
            msgpack_pack_true(pk);
        }
        return true;
    }
    if (!strcmp(op, "silent"))
        return false; /* the deadline answers */
    if (!strcmp(op, "audio.ingest")) {
        if (mb_obj_str_eq(mb_map_get(req->args, "id"), "notaudio")) {
            *status = 422;
            *code = "not_audio";
            return true;
        }
        *status = 202;
        msgpack_pack_map(pk, 2);
        mb_pack_cstr(pk, "track_id");
        mb_pack_object(pk, mb_map_get(req->args, "id"));
        mb_pack_cstr(pk, "args");
        mb_pack_object(pk, req->args);
        return true;
    }
    /* report: the shapes an actor may answer */
    const msgpack_object *v = mb_map_get(req->args, "variant");
    if (mb_obj_str_eq(v, "csv")) {
        msgpack_pack_map(pk, 4);
        mb_pack_cstr(pk, "content_type");
        mb_pack_cstr(pk, "text/csv; charset=utf-8");
        mb_pack_cstr(pk, "filename");
        mb_pack_cstr(pk, "royalties 2026-01 \xc3\xa9\".csv");
        mb_pack_cstr(pk, "csv");
        mb_pack_cstr(pk, "track_id,streams\r\nt1,42\r\n");
        mb_pack_cstr(pk, "rows");
        msgpack_pack_int(pk, 1);
    } else if (mb_obj_str_eq(v, "bin")) {
        msgpack_pack_map(pk, 2);
        mb_pack_cstr(pk, "content_type");
        mb_pack_cstr(pk, "text/csv");
        mb_pack_cstr(pk, "data");
        msgpack_pack_bin(pk, 5);
        msgpack_pack_bin_body(pk, "a\0b\xff\n", 5);
    } else if (mb_obj_str_eq(v, "undeclared")) {
        msgpack_pack_map(pk, 2);
        mb_pack_cstr(pk, "content_type");
        mb_pack_cstr(pk, "application/pdf");
        mb_pack_cstr(pk, "data");
        mb_pack_cstr(pk, "%PDF");
    } else if (mb_obj_str_eq(v, "header-injection")) {
        msgpack_pack_map(pk, 2);
        mb_pack_cstr(pk, "content_type");
        mb_pack_cstr(pk, "text/csv\r\nSet-Cookie: a=b");
        mb_pack_cstr(pk, "text");
        mb_pack_cstr(pk, "x");
    } else {
        /* Not raw-shaped (no data): plain JSON. */
        msgpack_pack_map(pk, 2);
        mb_pack_cstr(pk, "content_type");
        mb_pack_cstr(pk, "text/csv");
        mb_pack_cstr(pk, "rows");
        msgpack_pack_int(pk, 3);
    }
    return true;
}

static void s_setup(void)
{
    cr_assert_geq(sodium_init(), 0);
    gh_broker_start(&s_broker, s_answer, NULL);
    char max[32];
    snprintf(max, sizeof max, "%d", S_MAX_UPLOAD);
    const char *schema = gh_write(&s_gw, "schema.json", s_schema);
    char schema_copy[256];
    snprintf(schema_copy, sizeof schema_copy, "%s", schema);
    const char *argv[] = {"--bus", s_broker.endpoint, "--schema", schema_copy, "--max-upload", max,
                          NULL};
    static const char *const env[] = {"MUSICBUS_JWT_SECRET=jwt-secret-of-test-gw-http-bus-32-bytes",
                                      NULL};
    gh_start(&s_gw, argv, env);
    gh_wait_ready(&s_gw);
}

static void s_teardown(void)
{
    gh_stop(&s_gw);
    gh_broker_stop(&s_broker);
}

TestSuite(gw_http_bus, .init = s_setup, .fini = s_teardown, .timeout = 120);

/* ---- raw replies, headers, statuses ------------------------------------------ */

/*  Usage: an operation that declares text/csv, an actor answering
    {"content_type", "filename", "csv"}: the client gets the CSV itself. */
Test(gw_http_bus, raw_csv_reply)
{
    gh_res_t *r = gh_request(&s_gw, "/report?variant=csv", NULL);
    cr_assert_eq(r->status, 200, "%s", r->body);
    cr_assert_str_eq(gh_header(r, "Content-Type"), "text/csv; charset=utf-8");
    cr_assert_str_eq(r->body, "track_id,streams\r\nt1,42\r\n");
    cr_assert_str_eq(gh_header(r, "Content-Disposition"),
                     "attachment; filename=\"royalties 2026-01 ___.csv\"; "
                     "filename*=UTF-8''royalties%202026-01%20%C3%A9%22.csv");
    cr_assert_neq(gh_header(r, "X-Request-Id")[0], '\0');
    gh_free(r);

    /* Bytes, NUL included, and no filename: no Content-Disposition. */
    r = gh_request(&s_gw, "/report?variant=bin", NULL);
    cr_assert_eq(r->status, 200, "%s", r->body);
    cr_assert_eq(r->body_len, 5);
    cr_assert_eq(memcmp(r->body, "a\0b\xff\n", 5), 0);
    cr_assert_str_eq(gh_header(r, "Content-Type"), "text/csv");
    cr_assert_str_eq(gh_header(r, "Content-Disposition"), "");
    gh_free(r);

    /* HEAD: the headers alone. */
    r = gh_request(&s_gw, "/report?variant=csv", &(gh_req_t){.method = "HEAD"});
    cr_assert_eq(r->status, 405, "only GET is declared: %s", r->body);
    gh_free(r);
}

Test(gw_http_bus, raw_replies_follow_the_contract)
{
    /* A type the operation does not declare is the actor's bug: 502. */
    gh_res_t *r = gh_request(&s_gw, "/report?variant=undeclared", NULL);
    cr_assert_eq(r->status, 502, "%s", r->body);
    cr_assert_str_eq(gh_header(r, "Content-Type"), "application/problem+json");
    gh_free(r);
    r = gh_request(&s_gw, "/report?variant=header-injection", NULL);
    cr_assert_eq(r->status, 502, "%s", r->body);
    cr_assert_str_eq(gh_header(r, "Set-Cookie"), "");
    gh_free(r);
    /* Not raw-shaped: JSON, as always. */
    r = gh_request(&s_gw, "/report?variant=json", NULL);
    cr_assert_eq(r->status, 200, "%s", r->body);
    cr_assert_str_eq(gh_header(r, "Content-Type"), "application/json");
    cr_assert_eq(json_integer_value(json_object_get(r->json, "rows")), 3);
    gh_free(r);
    /* An operation that declares JSON only gets JSON, whatever the shape. */
    r = gh_request(&s_gw, "/report-json?variant=csv", NULL);
    cr_assert_eq(r->status, 200, "%s", r->body);
    cr_assert_str_eq(gh_header(r, "Content-Type"), "application/json");
    cr_assert_str_eq(gh_json_str(r, "csv"), "track_id,streams\r\nt1,42\r\n");
    gh_free(r);
}

/*  x-headers: If-Match reaches the actor as args.if_match. */
Test(gw_http_bus, headers_become_args)
{
    gh_req_t put = {.method = "PUT",
                    .headers = {"Content-Type: application/json", "If-Match: \"snap-41\""},
                    .upload = "{\"name\":\"x\"}",
                    .upload_len = 12};
    gh_res_t *r = gh_request(&s_gw, "/playlists/p1", &put);
    cr_assert_eq(r->status, 200, "%s", r->body);
    cr_assert_str_eq(gh_json_str(r, "id"), "p1");
    cr_assert_str_eq(gh_json_str(r, "if_match"), "\"snap-41\"");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r->json, "body"), "name")),
                     "x");
    gh_free(r);
    put.headers[1] = NULL;
    r = gh_request(&s_gw, "/playlists/p1", &put);
    cr_assert_eq(r->status, 200, "%s", r->body);
    cr_assert_null(json_object_get(r->json, "if_match"), "absent: left out");
    gh_free(r);
}

/*  Statuses actors answer pass through, problems with their titles. */
Test(gw_http_bus, statuses_pass_through)
{
    gh_res_t *r = gh_request(&s_gw, "/status/202", NULL);
    cr_assert_eq(r->status, 202, "%s", r->body);
    cr_assert(json_is_true(json_object_get(r->json, "accepted")));
    gh_free(r);
    const struct {
        const char *path, *type, *title;
        long status;
    } cases[] = {
        {"/status/412", "precondition_failed", "Precondition Failed", 412},
        {"/status/422", "not_audio", "Unprocessable Content", 422},
        {"/status/507", "storage_full", "Insufficient Storage", 507},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        r = gh_request(&s_gw, cases[i].path, NULL);
        cr_assert_eq(r->status, cases[i].status, "%s", r->body);
        cr_assert_str_eq(gh_header(r, "Content-Type"), "application/problem+json");
        cr_assert_str_eq(gh_json_str(r, "type"), cases[i].type);
        cr_assert_str_eq(gh_json_str(r, "title"), cases[i].title);
        gh_free(r);
    }
}

/*  x-timeout-ms: the operation's own deadline. */
Test(gw_http_bus, operation_deadline)
{
    long t0 = gh_now_ms();
    gh_res_t *r = gh_request(&s_gw, "/slow", NULL);
    long took = gh_now_ms() - t0;
    cr_assert_eq(r->status, 504, "%s", r->body);
    cr_assert(strstr(gh_json_str(r, "detail"), "300 ms"), "%s", r->body);
    cr_assert(took >= 250 && took < 2500, "answered after %ld ms", took);
    gh_free(r);
}

/* ---- uploads -------------------------------------------------------------------- */

static void s_hex_of(const void *data, size_t len, char hex[65])
{
    unsigned char hash[32];
    crypto_generichash(hash, sizeof hash, data, len, NULL, 0);
    sodium_bin2hex(hex, 65, hash, sizeof hash);
}

/*  Files in data/blobs/tmp: uploads not finished or not cleaned up. */
static int s_tmp_files(void)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls -A '%s/data/blobs/tmp' 2>/dev/null | wc -l", s_gw.dir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    cr_assert_eq(fscanf(p, "%d", &n), 1);
    pclose(p);
    return n;
}

static void s_expect_stored(const gh_res_t *r, const unsigned char *data, size_t len)
{
    char hex[65];
    s_hex_of(data, len, hex);
    cr_assert_eq(r->status, 202, "%s", r->body);
    json_t *blob = json_object_get(json_object_get(r->json, "args"), "blob");
    cr_assert_str_eq(json_string_value(json_object_get(blob, "hash")), hex,
                     "args.blob.hash is BLAKE2b-256 of the bytes");
    cr_assert_eq(json_integer_value(json_object_get(blob, "size")), (json_int_t)len);
    cr_assert_null(json_object_get(json_object_get(r->json, "args"), "body"));
    /* The blob store holds exactly those bytes. */
    char path[256];
    snprintf(path, sizeof path, "%s/data/blobs/%.2s/%s", s_gw.dir, hex, hex);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s is stored", path);
    unsigned char *back = malloc(len + 1);
    cr_assert_eq(fread(back, 1, len + 1, f), len);
    fclose(f);
    cr_assert_eq(memcmp(back, data, len), 0);
    free(back);
}

/*  Usage: PUT the audio file; the actor gets {id, blob: {hash, size}}. */
Test(gw_http_bus, upload_is_stored_and_named_by_its_hash)
{
    size_t len = 2500000;
    unsigned char *data = malloc(len);
    randombytes_buf(data, len);
    gh_req_t put = {.method = "PUT",
                    .headers = {"Content-Type: audio/flac"},
                    .upload = data,
                    .upload_len = len};
    gh_res_t *r = gh_request(&s_gw, "/tracks/t1/audio", &put);
    s_expect_stored(r, data, len);
    cr_assert_str_eq(gh_json_str(r, "track_id"), "t1");
    gh_free(r);

    /* Chunked (no Content-Length), another type the route takes. */
    data[0] ^= 1;
    put.chunked = true;
    put.headers[0] = "Content-Type: application/octet-stream";
    r = gh_request(&s_gw, "/tracks/t2/audio", &put);
    s_expect_stored(r, data, len);
    gh_free(r);
    cr_assert_eq(s_tmp_files(), 0, "nothing left in tmp/");
    free(data);
}

static bool s_blob_exists(const unsigned char *data, size_t len)
{
    char hex[65], path[256];
    s_hex_of(data, len, hex);
    snprintf(path, sizeof path, "%s/data/blobs/%.2s/%s", s_gw.dir, hex, hex);
    return access(path, F_OK) == 0;
}

/*  422: the actor refused the bytes. A blob this upload created is
    removed (nothing refers to it); one that was there before stays. */
Test(gw_http_bus, refused_upload_leaves_nothing)
{
    unsigned char data[5000];
    randombytes_buf(data, sizeof data);
    gh_req_t put = {.method = "PUT",
                    .headers = {"Content-Type: audio/flac"},
                    .upload = data,
                    .upload_len = sizeof data};
    gh_res_t *r = gh_request(&s_gw, "/tracks/notaudio/audio", &put);
    cr_assert_eq(r->status, 422, "%s", r->body);
    cr_assert_str_eq(gh_json_str(r, "type"), "not_audio");
    gh_free(r);
    cr_assert_not(s_blob_exists(data, sizeof data), "the refused upload's blob is gone");

    r = gh_request(&s_gw, "/tracks/t1/audio", &put);
    cr_assert_eq(r->status, 202, "%s", r->body);
    gh_free(r);
    r = gh_request(&s_gw, "/tracks/notaudio/audio", &put);
    cr_assert_eq(r->status, 422, "%s", r->body);
    gh_free(r);
    cr_assert(s_blob_exists(data, sizeof data), "a blob stored before stays");
}

Test(gw_http_bus, upload_limits_and_types)
{
    unsigned before = gh_broker_requests(&s_broker);
    /* Content-Length over --max-upload (the route's own max is higher):
       413 before the body is read -- the client that waits for "100
       Continue" (curl does for bodies over 1 MiB) sends none of it. */
    gh_req_t put = {.method = "PUT",
                    .headers = {"Content-Type: audio/wav"},
                    .upload_pattern = "RIFF....WAVE",
                    .upload_len = S_MAX_UPLOAD + 1,
                    .expect_continue = true};
    long t0 = gh_now_ms();
    gh_res_t *r = gh_request(&s_gw, "/tracks/t1/audio", &put);
    cr_assert_eq(r->status, 413, "%ld (curl %d) %s", r->status, r->curl, r->body);
    cr_assert_str_eq(gh_json_str(r, "field"), "body");
    cr_assert_lt(gh_now_ms() - t0, 900, "answered before curl's 1 s wait for 100 Continue");
    gh_free(r);
    /* The route's own max. */
    put.upload_len = 1001;
    r = gh_request(&s_gw, "/small/t1", &put);
    cr_assert_eq(r->status, 413, "%s", r->body);
    gh_free(r);
    put.upload_len = 1000;
    r = gh_request(&s_gw, "/small/t1", &put);
    cr_assert_eq(r->status, 202, "exactly the max is fine: %s", r->body);
    gh_free(r);
    /* Chunked past the limit: found while it arrives, answered at its end. */
    put.expect_continue = false;
    put.chunked = true;
    put.upload_len = S_MAX_UPLOAD + 300000;
    r = gh_request(&s_gw, "/tracks/t1/audio", &put);
    cr_assert_eq(r->status, 413, "%s", r->body);
    gh_free(r);
    /* ... and far past it: the connection is cut; nothing is stored. */
    put.upload_len = S_MAX_UPLOAD + 20000000;
    r = gh_request(&s_gw, "/tracks/t1/audio", &put);
    cr_assert(r->curl != CURLE_OK || r->status == 413, "%d %ld", r->curl, r->status);
    gh_free(r);
    /* Types. */
    put.expect_continue = true;
    put.chunked = false;
    put.upload_len = 100;
    put.headers[0] = "Content-Type: text/plain";
    r = gh_request(&s_gw, "/tracks/t1/audio", &put);
    cr_assert_eq(r->status, 415, "%s", r->body);
    gh_free(r);
    put.headers[0] = NULL; /* curl then sends none for a PUT */
    r = gh_request(&s_gw, "/tracks/t1/audio", &put);
    cr_assert_eq(r->status, 415, "%s", r->body);
    gh_free(r);
    /* Empty. */
    put.headers[0] = "Content-Type: audio/flac";
    put.upload_len = 0;
    r = gh_request(&s_gw, "/tracks/t1/audio", &put);
    cr_assert_eq(r->status, 400, "%s", r->body);
    cr_assert_str_eq(gh_json_str(r, "field"), "body");
    gh_free(r);
    unsigned sent = gh_broker_requests(&s_broker) - before;
    cr_assert_eq(sent, 1, "only the one good upload was sent, not %u", sent);
    cr_assert_eq(s_tmp_files(), 0, "refused uploads leave nothing behind");
}

/*  A body of any size costs the gateway no more memory than a small one:
    it goes to the file as it arrives. */
Test(gw_http_bus, upload_is_streamed_not_buffered)
{
    gh_gateway_t big = {0};
    const char *schema = gh_write(&big, "schema.json", s_schema);
    char schema_copy[256];
    snprintf(schema_copy, sizeof schema_copy, "%s", schema);
    const char *argv[] = {"--bus",        s_broker.endpoint, "--schema", schema_copy,
                          "--max-upload", "200000000",       NULL};
    static const char *const env[] = {"MUSICBUS_JWT_SECRET=jwt-secret-of-test-gw-http-bus-32-bytes",
                                      NULL};
    gh_start(&big, argv, env);
    gh_wait_ready(&big);
    gh_free(gh_request(&big, "/status/202", NULL)); /* warm up */
    long before = gh_peak_kib(&big);
    gh_req_t put = {.method = "PUT",
                    .headers = {"Content-Type: audio/flac"},
                    .upload_pattern = "0123456789abcdefghijklmnopqrstuvwxyz",
                    .upload_len = 96u << 20,
                    .chunked = true};
    gh_res_t *r = gh_request(&big, "/big/t1", &put);
    cr_assert_eq(r->status, 202, "%s", r->body);
    json_t *blob = json_object_get(json_object_get(r->json, "args"), "blob");
    cr_assert_eq(json_integer_value(json_object_get(blob, "size")), 96 << 20);
    gh_free(r);
    long after = gh_peak_kib(&big);
    cr_assert_lt(after - before, 16 * 1024, "96 MiB went through %ld KiB more memory at peak",
                 after - before);
    gh_stop(&big);
}
