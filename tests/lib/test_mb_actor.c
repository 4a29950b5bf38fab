/*  mb_actor: dispatch through the real envelope into a tiny key-value
    actor on a temporary LMDB environment, and mb_actor_main run as a
    process against a raw ROUTER broker. */
#define _XOPEN_SOURCE 700
#include <criterion/criterion.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mb_actor.h"
#include "mb_error.h"
#include "mb_msgpack.h"
#include "mdp.h"
#include "test_router.h"

/* ---- the actor under test: a key-value store ------------------------------ */

typedef struct {
    MDB_dbi kv;
} kv_state_t;

static int s_kv_open(MDB_env *env, void **state)
{
    static kv_state_t self;
    MDB_txn *txn;
    int rc = mdb_txn_begin(env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "kv", MDB_CREATE, &self.kv);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    *state = &self;
    return rc == 0 ? 0 : MB_EDB;
}

/*  args.key as an MDB_val, or answers 400 and returns false. */
static bool s_key(mb_call_t *call, MDB_val *key)
{
    const char *s;
    size_t len;
    if (!mb_obj_str(mb_call_arg(call, "key"), &s, &len) || len == 0 || len > 100) {
        mb_call_error(call, 400, "invalid", "key", "key must be a string of 1..100 bytes");
        return false;
    }
    key->mv_data = (void *)s;
    key->mv_size = len;
    return true;
}

static void s_handle_put(mb_call_t *call)
{
    kv_state_t *self = mb_call_state(call);
    MDB_val key;
    const msgpack_object *value = mb_call_arg(call, "value");
    if (!s_key(call, &key))
        return;
    if (!value) {
        mb_call_error(call, 400, "invalid", "value", "value is required");
        return;
    }
    msgpack_sbuffer encoded;
    msgpack_packer pk;
    msgpack_sbuffer_init(&encoded);
    msgpack_packer_init(&pk, &encoded, msgpack_sbuffer_write);
    mb_pack_object(&pk, value);
    MDB_val data = {.mv_size = encoded.size, .mv_data = encoded.data};
    MDB_txn *txn;
    int rc = mdb_txn_begin(mb_call_env(call), NULL, 0, &txn);
    if (rc == 0) {
        rc = mdb_put(txn, self->kv, &key, &data, 0);
        rc = rc ? (mdb_txn_abort(txn), rc) : mdb_txn_commit(txn);
    }
    msgpack_sbuffer_destroy(&encoded);
    if (rc) {
        mb_call_db_error(call, rc);
        return;
    }
    msgpack_packer *out = mb_call_reply(call, 201);
    msgpack_pack_map(out, 1);
    mb_pack_cstr(out, "stored");
    msgpack_pack_true(out);
}

static void s_handle_get(mb_call_t *call)
{
    kv_state_t *self = mb_call_state(call);
    MDB_val key, data;
    if (!s_key(call, &key))
        return;
    MDB_txn *txn;
    int rc = mdb_txn_begin(mb_call_env(call), NULL, MDB_RDONLY, &txn);
    if (rc) {
        mb_call_db_error(call, rc);
        return;
    }
    rc = mdb_get(txn, self->kv, &key, &data);
    if (rc == MDB_NOTFOUND)
        mb_call_error(call, 404, "not_found", "key", "no key '%.*s'", (int)key.mv_size,
                      (char *)key.mv_data);
    else if (rc)
        mb_call_db_error(call, rc);
    else
        mb_pack_raw(mb_call_reply(call, 200), data.mv_data,
                    data.mv_size); /* stored msgpack, verbatim */
    mdb_txn_abort(txn);
}

/*  Writes 64 KiB values until LMDB says the map is full. */
static void s_handle_fill(mb_call_t *call)
{
    kv_state_t *self = mb_call_state(call);
    static char blob[65536];
    MDB_txn *txn;
    int rc = mdb_txn_begin(mb_call_env(call), NULL, 0, &txn);
    for (unsigned i = 0; rc == 0 && i < 100000; i++) {
        MDB_val key = {.mv_size = sizeof i, .mv_data = &i};
        MDB_val data = {.mv_size = sizeof blob, .mv_data = blob};
        rc = mdb_put(txn, self->kv, &key, &data, 0);
    }
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    if (rc)
        mb_call_db_error(call, rc);
    else
        msgpack_pack_nil(mb_call_reply(call, 200));
}

static void s_handle_whoami(mb_call_t *call)
{
    const mb_request_t *req = mb_call_request(call);
    msgpack_packer *pk = mb_call_reply(call, 200);
    msgpack_pack_map(pk, 3);
    mb_pack_cstr(pk, "auth");
    if (req->auth)
        mb_pack_object(pk, req->auth);
    else
        msgpack_pack_nil(pk);
    mb_pack_cstr(pk, "rid");
    msgpack_pack_uint64(pk, mb_call_rid(call));
    mb_pack_cstr(pk, "ttl");
    msgpack_pack_uint32(pk, req->ttl_ms);
}

static void s_handle_nothing(mb_call_t *call)
{
    (void)call;
}

static void s_handle_head_only(mb_call_t *call)
{
    mb_call_reply(call, 200);
}

static void s_handle_two_bodies(mb_call_t *call)
{
    msgpack_packer *pk = mb_call_reply(call, 200);
    msgpack_pack_nil(pk);
    msgpack_pack_nil(pk);
}

static void s_handle_change_of_mind(mb_call_t *call)
{
    /* reply, then error, then reply again: only the last counts */
    mb_pack_cstr(mb_call_reply(call, 200), "first");
    mb_call_error(call, 409, "conflict", NULL, "second");
    mb_pack_cstr(mb_call_reply(call, 202), "third");
}

static void s_handle_db_error(mb_call_t *call)
{
    mb_call_db_error(call, MDB_CORRUPTED);
}

static void s_handle_long_error(mb_call_t *call)
{
    mb_call_error(call, 400, "invalid", "body.title", "%0*d", 10000, 7);
}

static const mb_op_t s_ops[] = {{"kv.put", s_handle_put},
                                {"kv.get", s_handle_get},
                                {"kv.fill", s_handle_fill},
                                {"whoami", s_handle_whoami},
                                {"nothing", s_handle_nothing},
                                {"head_only", s_handle_head_only},
                                {"two_bodies", s_handle_two_bodies},
                                {"change_of_mind", s_handle_change_of_mind},
                                {"db_error", s_handle_db_error},
                                {"long_error", s_handle_long_error},
                                {NULL, NULL}};

static const mb_actor_def_t s_def = {
    .name = "kvstore", .ops = s_ops, .max_dbs = 2, .map_size = 1 << 20, .open = s_kv_open};

/* ---- fixture: a temporary folder -------------------------------------------- */

static char s_tmp[64];

static int s_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void s_setup(void)
{
    strcpy(s_tmp, "/tmp/mb-actor-test-XXXXXX");
    cr_assert_not_null(mkdtemp(s_tmp));
}

static void s_teardown(void)
{
    nftw(s_tmp, s_rm, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(mb_actor, .init = s_setup, .fini = s_teardown);

/* ---- helpers ------------------------------------------------------------------ */

/*  Packs a request for `op` with args {key: <key>, value: <value>} (each
    left out when NULL) into `buf`. */
static void s_pack_kv_request(msgpack_sbuffer *buf, const char *op, uint64_t rid, const char *key,
                              const char *value)
{
    msgpack_packer pk;
    msgpack_sbuffer_clear(buf);
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    mb_request_pack_head(&pk, op, rid, 0, 1);
    mb_pack_cstr(&pk, "args");
    msgpack_pack_map(&pk, (key != NULL) + (value != NULL));
    if (key) {
        mb_pack_cstr(&pk, "key");
        mb_pack_cstr(&pk, key);
    }
    if (value) {
        mb_pack_cstr(&pk, "value");
        mb_pack_cstr(&pk, value);
    }
}

/*  Dispatches `request` and decodes the reply into *rep (caller releases). */
static void s_dispatch(MDB_env *env, void *state, msgpack_sbuffer *request, mb_reply_t *rep)
{
    msgpack_sbuffer reply;
    msgpack_sbuffer_init(&reply);
    mb_actor_dispatch(&s_def, env, state, request->data, request->size, &reply);
    const char *why = NULL;
    cr_assert_eq(mb_reply_decode(rep, reply.data, reply.size, &why), 0,
                 "the reply is always a valid envelope (%s)", why);
    msgpack_sbuffer_destroy(&reply);
}

static bool s_code_is(const mb_reply_t *rep, const char *code)
{
    return rep->code && rep->code_len == strlen(code) &&
           memcmp(rep->code, code, rep->code_len) == 0;
}

static void s_open(MDB_env **env, void **state)
{
    char dir[128];
    snprintf(dir, sizeof dir, "%s/kvstore", s_tmp);
    cr_assert_eq(mb_actor_open_env(&s_def, dir, env), 0);
    cr_assert_eq(s_def.open(*env, state), 0);
}

/* ---- dispatch ------------------------------------------------------------------ */

Test(mb_actor, usage)
{
    MDB_env *env;
    void *state;
    s_open(&env, &state);
    msgpack_sbuffer request;
    msgpack_sbuffer_init(&request);
    mb_reply_t rep;

    s_pack_kv_request(&request, "kv.put", 1, "greeting", "hello");
    s_dispatch(env, state, &request, &rep);
    cr_assert_eq(rep.status, 201);
    cr_assert_eq(rep.rid, 1, "the reply echoes the rid");
    cr_assert_eq(mb_map_get(rep.body, "stored")->via.boolean, true);
    mb_reply_release(&rep);

    s_pack_kv_request(&request, "kv.get", 2, "greeting", NULL);
    s_dispatch(env, state, &request, &rep);
    cr_assert_eq(rep.status, 200);
    cr_assert_eq(rep.rid, 2);
    cr_assert(mb_obj_str_eq(rep.body, "hello"));
    mb_reply_release(&rep);

    msgpack_sbuffer_destroy(&request);
    mdb_env_close(env);
}

Test(mb_actor, handler_errors_carry_code_field_and_message)
{
    MDB_env *env;
    void *state;
    s_open(&env, &state);
    msgpack_sbuffer request;
    msgpack_sbuffer_init(&request);
    mb_reply_t rep;

    s_pack_kv_request(&request, "kv.get", 3, "missing", NULL);
    s_dispatch(env, state, &request, &rep);
    cr_assert_eq(rep.status, 404);
    cr_assert_eq(rep.rid, 3);
    cr_assert(s_code_is(&rep, "not_found"));
    cr_assert_eq(memcmp(rep.field, "key", rep.field_len), 0);
    cr_assert_eq(memcmp(rep.message, "no key 'missing'", rep.message_len), 0);
    mb_reply_release(&rep);

    s_pack_kv_request(&request, "kv.put", 4, NULL, "v");
    s_dispatch(env, state, &request, &rep);
    cr_assert_eq(rep.status, 400);
    cr_assert(s_code_is(&rep, "invalid"));
    mb_reply_release(&rep);

    msgpack_sbuffer_destroy(&request);
    mdb_env_close(env);
}

Test(mb_actor, unknown_op_is_404)
{
    MDB_env *env;
    void *state;
    s_open(&env, &state);
    msgpack_sbuffer request;
    msgpack_sbuffer_init(&request);
    mb_reply_t rep;
    const char *ops[] = {"kv.delete", "kv", "kv.get2", "KV.GET"};
    for (size_t i = 0; i < 4; i++) {
        s_pack_kv_request(&request, ops[i], 5, "k", NULL);
        s_dispatch(env, state, &request, &rep);
        cr_assert_eq(rep.status, 404, "%s", ops[i]);
        cr_assert(s_code_is(&rep, "unknown_op"));
        cr_assert_eq(rep.rid, 5);
        mb_reply_release(&rep);
    }
    msgpack_sbuffer_destroy(&request);
    mdb_env_close(env);
}

Test(mb_actor, malformed_request_is_400_with_the_rid_when_readable)
{
    MDB_env *env;
    void *state;
    s_open(&env, &state);
    msgpack_sbuffer request;
    msgpack_sbuffer_init(&request);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &request, msgpack_sbuffer_write);
    mb_reply_t rep;

    /* op is an int: decode fails, but rid 77 can still be read */
    msgpack_pack_map(&pk, 2);
    mb_pack_cstr(&pk, "op");
    msgpack_pack_int(&pk, 5);
    mb_pack_cstr(&pk, "rid");
    msgpack_pack_int(&pk, 77);
    s_dispatch(env, state, &request, &rep);
    cr_assert_eq(rep.status, 400);
    cr_assert_eq(rep.rid, 77);
    cr_assert(s_code_is(&rep, "bad_request"));
    mb_reply_release(&rep);

    /* not msgpack at all */
    msgpack_sbuffer_clear(&request);
    msgpack_sbuffer_write(&request, "GET / HTTP/1.1\r\n", 16);
    s_dispatch(env, state, &request, &rep);
    cr_assert_eq(rep.status, 400);
    cr_assert_eq(rep.rid, 0);
    mb_reply_release(&rep);

    /* empty */
    msgpack_sbuffer reply;
    msgpack_sbuffer_init(&reply);
    mb_actor_dispatch(&s_def, env, state, NULL, 0, &reply);
    cr_assert_eq(mb_reply_decode(&rep, reply.data, reply.size, NULL), 0);
    cr_assert_eq(rep.status, 400);
    mb_reply_release(&rep);
    msgpack_sbuffer_destroy(&reply);

    msgpack_sbuffer_destroy(&request);
    mdb_env_close(env);
}

Test(mb_actor, a_handler_that_packs_no_valid_reply_gives_500)
{
    MDB_env *env;
    void *state;
    s_open(&env, &state);
    msgpack_sbuffer request;
    msgpack_sbuffer_init(&request);
    mb_reply_t rep;
    const char *ops[] = {"nothing", "head_only", "two_bodies"};
    for (size_t i = 0; i < 3; i++) {
        s_pack_kv_request(&request, ops[i], 9, NULL, NULL);
        s_dispatch(env, state, &request, &rep);
        cr_assert_eq(rep.status, 500, "%s", ops[i]);
        cr_assert(s_code_is(&rep, "internal"), "%s", ops[i]);
        cr_assert_eq(rep.rid, 9);
        mb_reply_release(&rep);
    }
    msgpack_sbuffer_destroy(&request);
    mdb_env_close(env);
}

Test(mb_actor, the_last_reply_packed_wins)
{
    MDB_env *env;
    void *state;
    s_open(&env, &state);
    msgpack_sbuffer request;
    msgpack_sbuffer_init(&request);
    mb_reply_t rep;
    s_pack_kv_request(&request, "change_of_mind", 10, NULL, NULL);
    s_dispatch(env, state, &request, &rep);
    cr_assert_eq(rep.status, 202);
    cr_assert(mb_obj_str_eq(rep.body, "third"));
    mb_reply_release(&rep);
    msgpack_sbuffer_destroy(&request);
    mdb_env_close(env);
}

Test(mb_actor, request_fields_reach_the_handler)
{
    MDB_env *env;
    void *state;
    s_open(&env, &state);
    msgpack_sbuffer request;
    msgpack_sbuffer_init(&request);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &request, msgpack_sbuffer_write);
    mb_request_pack_head(&pk, "whoami", 123456789012ull, 1500, 1);
    mb_pack_cstr(&pk, "auth");
    msgpack_pack_map(&pk, 1);
    mb_pack_cstr(&pk, "user");
    mb_pack_cstr(&pk, "u42");
    mb_reply_t rep;
    s_dispatch(env, state, &request, &rep);
    cr_assert_eq(rep.status, 200);
    cr_assert(mb_obj_str_eq(mb_map_get(mb_map_get(rep.body, "auth"), "user"), "u42"));
    int64_t v;
    cr_assert(mb_obj_int(mb_map_get(rep.body, "rid"), &v));
    cr_assert_eq(v, 123456789012ll);
    cr_assert(mb_obj_int(mb_map_get(rep.body, "ttl"), &v));
    cr_assert_eq(v, 1500);
    mb_reply_release(&rep);
    msgpack_sbuffer_destroy(&request);
    mdb_env_close(env);
}

Test(mb_actor, map_full_is_507_and_the_store_keeps_working)
{
    MDB_env *env;
    void *state;
    s_open(&env, &state); /* 1 MiB map */
    msgpack_sbuffer request;
    msgpack_sbuffer_init(&request);
    mb_reply_t rep;
    s_pack_kv_request(&request, "kv.fill", 11, NULL, NULL);
    s_dispatch(env, state, &request, &rep);
    cr_assert_eq(rep.status, 507);
    cr_assert(s_code_is(&rep, "storage_full"));
    mb_reply_release(&rep);

    s_pack_kv_request(&request, "kv.put", 12, "after", "still fine");
    s_dispatch(env, state, &request, &rep);
    cr_assert_eq(rep.status, 201, "the failed transaction was aborted");
    mb_reply_release(&rep);
    msgpack_sbuffer_destroy(&request);
    mdb_env_close(env);
}

Test(mb_actor, other_db_errors_are_500_storage_error)
{
    MDB_env *env;
    void *state;
    s_open(&env, &state);
    msgpack_sbuffer request;
    msgpack_sbuffer_init(&request);
    mb_reply_t rep;
    s_pack_kv_request(&request, "db_error", 13, NULL, NULL);
    s_dispatch(env, state, &request, &rep);
    cr_assert_eq(rep.status, 500);
    cr_assert(s_code_is(&rep, "storage_error"));
    mb_reply_release(&rep);
    msgpack_sbuffer_destroy(&request);
    mdb_env_close(env);
}

Test(mb_actor, error_messages_are_bounded)
{
    MDB_env *env;
    void *state;
    s_open(&env, &state);
    msgpack_sbuffer request;
    msgpack_sbuffer_init(&request);
    mb_reply_t rep;
    s_pack_kv_request(&request, "long_error", 14, NULL, NULL);
    s_dispatch(env, state, &request, &rep);
    cr_assert_eq(rep.status, 400);
    cr_assert(rep.message_len > 100 && rep.message_len < 1024, "%zu", rep.message_len);
    mb_reply_release(&rep);
    msgpack_sbuffer_destroy(&request);
    mdb_env_close(env);
}

/* ---- environment ------------------------------------------------------------------ */

Test(mb_actor, open_env_makes_the_folders_and_sets_the_map_size)
{
    char dir[128];
    snprintf(dir, sizeof dir, "%s/a/b/c", s_tmp);
    MDB_env *env;
    cr_assert_eq(mb_actor_open_env(&s_def, dir, &env), 0);
    MDB_envinfo info;
    mdb_env_info(env, &info);
    cr_assert_eq(info.me_mapsize, 1 << 20);
    mdb_env_close(env);
    char file[160];
    snprintf(file, sizeof file, "%s/data.mdb", dir);
    cr_assert_eq(access(file, F_OK), 0);

    /* opening again (another worker process would) works */
    cr_assert_eq(mb_actor_open_env(&s_def, dir, &env), 0);
    mdb_env_close(env);
}

Test(mb_actor, open_env_reports_a_file_in_the_way)
{
    char path[128];
    snprintf(path, sizeof path, "%s/plainfile", s_tmp);
    FILE *f = fopen(path, "w");
    fclose(f);
    MDB_env *env = (MDB_env *)1;
    cr_assert_eq(mb_actor_open_env(&s_def, path, &env), MB_EIO);
    cr_assert_null(env);
    snprintf(path, sizeof path, "%s/plainfile/below", s_tmp);
    cr_assert_eq(mb_actor_open_env(&s_def, path, &env), MB_EIO);
}

/* ---- mb_actor_main as a process ------------------------------------------------------- */

static bool s_recv_command(void *router, tr_msg_t *msg, char command, int timeout_ms)
{
    int64_t deadline = tr_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - tr_now_ms();
        if (left <= 0 || !tr_recv(router, msg, (int)left))
            return false;
        if (msg->count >= 4 && tr_frame_is(msg, 3, &command, 1))
            return true;
        tr_free(msg);
    }
}

Test(mb_actor, main_serves_requests_until_sigterm)
{
    char endpoint[128], ready_file[128];
    snprintf(endpoint, sizeof endpoint, "ipc://%s/bus", s_tmp);
    snprintf(ready_file, sizeof ready_file, "%s/ready", s_tmp);

    /* Fork before this process touches ZeroMQ: a context must not cross fork(). */
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        char *argv[] = {"musicbus-kvstore", "--bus", endpoint,       "--data",   s_tmp,
                        "--heartbeat",      "100",   "--ready-file", ready_file, NULL};
        _exit(mb_actor_main(&s_def, 9, argv));
    }
    void *broker = zmq_socket(mb_zmq_context(), ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(broker, ZMQ_LINGER, &linger, sizeof linger);
    cr_assert_eq(zmq_bind(broker, endpoint), 0);

    tr_msg_t ready, reply;
    cr_assert(s_recv_command(broker, &ready, MDPW_READY, 5000), "READY");
    cr_assert_str_eq(ready.data[4], "kvstore");

    msgpack_sbuffer request;
    msgpack_sbuffer_init(&request);
    s_pack_kv_request(&request, "kv.put", 21, "k", "v");
    const void *frames[] = {ready.data[0], "", MDPW_WORKER, "\x02", "client", "", request.data};
    size_t sizes[] = {ready.size[0], 0, 6, 1, 6, 0, request.size};
    tr_send(broker, 7, frames, sizes);
    cr_assert(s_recv_command(broker, &reply, MDPW_REPLY, 5000), "REPLY");
    cr_assert_str_eq(reply.data[4], "client");
    mb_reply_t rep;
    cr_assert_eq(mb_reply_decode(&rep, zmq_msg_data(&reply.body), zmq_msg_size(&reply.body), NULL),
                 0);
    cr_assert_eq(rep.status, 201);
    cr_assert_eq(rep.rid, 21);
    mb_reply_release(&rep);
    tr_free(&reply);

    /* the ready file holds the bus endpoint */
    FILE *f = fopen(ready_file, "r");
    cr_assert_not_null(f);
    char line[160] = {0};
    cr_assert_not_null(fgets(line, sizeof line, f));
    fclose(f);
    cr_assert_eq(strncmp(line, endpoint, strlen(endpoint)), 0, "%s", line);

    /* SIGTERM: DISCONNECT, exit 0 */
    kill(pid, SIGTERM);
    tr_msg_t bye;
    cr_assert(s_recv_command(broker, &bye, MDPW_DISCONNECT, 5000), "DISCONNECT");
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);

    /* the data is in $DATA/kvstore, readable by the next process */
    char dir[128];
    snprintf(dir, sizeof dir, "%s/kvstore", s_tmp);
    MDB_env *env;
    void *state;
    cr_assert_eq(mb_actor_open_env(&s_def, dir, &env), 0);
    cr_assert_eq(s_def.open(env, &state), 0);
    s_pack_kv_request(&request, "kv.get", 22, "k", NULL);
    s_dispatch(env, state, &request, &rep);
    cr_assert(mb_obj_str_eq(rep.body, "v"));
    mb_reply_release(&rep);
    mdb_env_close(env);

    msgpack_sbuffer_destroy(&request);
    tr_free(&ready);
    tr_free(&bye);
    zmq_close(broker);
    mb_zmq_shutdown();
}

Test(mb_actor, main_refuses_bad_flags)
{
    char *bad_heartbeat[] = {"x", "--heartbeat", "fast", NULL};
    cr_assert_eq(mb_actor_main(&s_def, 3, bad_heartbeat), 2);
    char *bad_map[] = {"x", "--map-size", "0", NULL};
    cr_assert_eq(mb_actor_main(&s_def, 3, bad_map), 2);
    char *unknown[] = {"x", "--frobnicate", NULL};
    cr_assert_eq(mb_actor_main(&s_def, 2, unknown), 2);
    char *extra[] = {"x", "stray", NULL};
    cr_assert_eq(mb_actor_main(&s_def, 2, extra), 2);
}

Test(mb_actor, main_fails_when_the_data_folder_cannot_be_made)
{
    char path[128];
    snprintf(path, sizeof path, "%s/file", s_tmp);
    fclose(fopen(path, "w"));
    char *argv[] = {"x", "--data", path, "--bus", "tcp://127.0.0.1:1", NULL};
    cr_assert_eq(mb_actor_main(&s_def, 5, argv), 1);
}
