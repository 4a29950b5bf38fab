/*  Tests of broker/event_log: the LMDB event log and its writer thread,
    used directly (the broker's bus tests go through the executable). */

#include <criterion/criterion.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "event_log.h"
#include "mb_error.h"
#include "mb_msgpack.h"
#include "mb_zmq.h"

static char s_dir[PATH_MAX];

static int s_remove(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void s_setup(void)
{
    snprintf(s_dir, sizeof s_dir, "/tmp/mb-event-log-test-XXXXXX");
    cr_assert(mkdtemp(s_dir));
}

static void s_teardown(void)
{
    nftw(s_dir, s_remove, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(event_log, .init = s_setup, .fini = s_teardown, .timeout = 60);

static event_log_t *s_open(size_t map_size, uint64_t retention_bytes)
{
    event_log_opts_t opts = {
        .dir = s_dir, .map_size = map_size, .retention_bytes = retention_bytes};
    event_log_t *log = event_log_new(&opts);
    cr_assert(log, "the log did not open");
    return log;
}

/*  A batch of `n` events on `topic`, each with `data_len` bytes of data. */
static event_batch_t *s_batch(size_t n, const char *topic, size_t data_len)
{
    event_batch_t *batch = event_batch_new(NULL);
    char *bytes = calloc(1, data_len + 1);
    msgpack_object data = {.type = MSGPACK_OBJECT_BIN,
                           .via.bin = {.size = (uint32_t)data_len, .ptr = bytes}};
    for (size_t i = 0; i < n; i++) {
        size_t at;
        event_batch_add(batch, topic, strlen(topic), "key", 3, 1234, &data, &at);
    }
    free(bytes);
    return batch;
}

/*  Waits until `n` submitted batches came back; stores them in order. */
static size_t s_collect(event_log_t *log, event_batch_t **out, size_t n)
{
    size_t got = 0, lists = 0;
    while (got < n) {
        zmq_pollitem_t item = {event_log_socket(log), 0, ZMQ_POLLIN, 0};
        cr_assert_eq(zmq_poll(&item, 1, 10000), 1, "the writer handed back %zu of %zu", got, n);
        event_batch_t *list;
        while (event_log_completed(log, &list) == 0) {
            lists++;
            for (; list; list = list->next) {
                cr_assert_lt(got, n);
                out[got++] = list;
            }
        }
    }
    return lists;
}

/*  Fetches every event (prefix "") from `from`; returns how many. */
static size_t s_count(event_log_t *log, uint64_t from, event_fetch_t *got)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    event_filter_t all = {.prefix = "", .prefix_len = 0};
    int rc = event_log_fetch(log, &all, from, 10000, 1000000, SIZE_MAX, &pk, got);
    cr_assert_eq(rc, 0);
    msgpack_unpacked unpacked;
    msgpack_unpacked_init(&unpacked);
    cr_assert_eq(msgpack_unpack_next(&unpacked, buf.data, buf.size, NULL), MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *events = mb_map_get(&unpacked.data, "events");
    cr_assert(events && events->type == MSGPACK_OBJECT_ARRAY);
    cr_assert_eq(events->via.array.size, got->count);
    msgpack_unpacked_destroy(&unpacked);
    msgpack_sbuffer_destroy(&buf);
    return got->count;
}

static void s_free_all(event_batch_t **batches, size_t n)
{
    for (size_t i = 0; i < n; i++)
        event_batch_destroy(&batches[i]);
}

Test(event_log, writes_what_is_pending_in_one_go_with_consecutive_seqs)
{
    event_log_t *log = s_open(16 << 20, 0);
    cr_assert_eq(event_log_head(log), 0);
    enum { N = 200 };
    event_batch_t *batches[N];
    for (size_t i = 0; i < N; i++)
        cr_assert_eq(event_log_submit(log, s_batch(3, "t.a", 10)), 0);
    size_t lists = s_collect(log, batches, N);
    /* Group commit: the writer took several batches per transaction. */
    cr_assert_lt(lists, N, "one commit per batch (%zu)", lists);
    for (size_t i = 0; i < N; i++) {
        cr_assert_eq(batches[i]->status, 0);
        cr_assert_eq(batches[i]->first, 1 + 3 * i, "batch %zu got first %llu", i,
                     (unsigned long long)batches[i]->first);
    }
    s_free_all(batches, N);
    cr_assert_eq(event_log_head(log), 3 * N);
    event_fetch_t got;
    cr_assert_eq(s_count(log, 0, &got), 3 * N);
    cr_assert_eq(got.next, 3 * N + 1);
    cr_assert(got.at_head);
    event_log_destroy(&log);
    event_log_destroy(&log); /* safe twice */

    /* Reopened, it goes on from the last seq. */
    log = s_open(16 << 20, 0);
    cr_assert_eq(event_log_head(log), 3 * N);
    cr_assert_eq(event_log_submit(log, s_batch(1, "t.b", 10)), 0);
    s_collect(log, batches, 1);
    cr_assert_eq(batches[0]->first, 3 * N + 1);
    s_free_all(batches, 1);
    event_log_destroy(&log);
    mb_zmq_shutdown();
}

Test(event_log, a_full_map_refuses_a_batch_alone_and_keeps_working)
{
    event_log_t *log = s_open(1 << 20, 0);
    /* Fill it up in steps of 100 KiB until the map refuses one. */
    event_batch_t *batch;
    uint64_t committed = 0;
    for (int i = 0;; i++) {
        cr_assert_lt(i, 50, "a 1 MiB map took 5 MiB");
        cr_assert_eq(event_log_submit(log, s_batch(25, "fill", 4096)), 0);
        s_collect(log, &batch, 1);
        int status = batch->status;
        if (status == 0)
            committed += batch->count;
        else
            cr_assert_eq(batch->first, 0);
        event_batch_destroy(&batch);
        if (status != 0) {
            cr_assert_eq(status, MB_EFULL);
            break;
        }
    }
    cr_assert_gt(committed, 0);
    cr_assert_eq(event_log_head(log), committed);

    /* Three at once: the big one fails alone, the small ones get
       consecutive seqs around it. */
    event_batch_t *three[3];
    cr_assert_eq(event_log_submit(log, s_batch(1, "small", 1)), 0);
    cr_assert_eq(event_log_submit(log, s_batch(1, "huge", 2 << 20)), 0);
    cr_assert_eq(event_log_submit(log, s_batch(1, "small", 1)), 0);
    s_collect(log, three, 3);
    cr_assert_eq(three[1]->status, MB_EFULL);
    if (three[0]->status == 0 && three[2]->status == 0)
        cr_assert_eq(three[2]->first, three[0]->first + 1);
    s_free_all(three, 3);

    /* Reads still work and see everything committed. */
    event_fetch_t got;
    size_t count = s_count(log, 0, &got);
    cr_assert_geq(count, committed);
    cr_assert_eq(got.head, event_log_head(log));
    event_log_destroy(&log);
    mb_zmq_shutdown();
}

Test(event_log, retention_makes_room_in_a_full_map)
{
    /* The size limit is below the map: writing on and on never fails,
       and the oldest events go. */
    event_log_t *log = s_open(1 << 20, 300 << 10);
    for (int i = 0; i < 40; i++) {
        event_batch_t *batch;
        cr_assert_eq(event_log_submit(log, s_batch(25, "roll", 4096)), 0);
        s_collect(log, &batch, 1);
        cr_assert_eq(batch->status, 0, "batch %d refused (%d)", i, batch->status);
        event_batch_destroy(&batch);
    }
    cr_assert_eq(event_log_head(log), 40 * 25);
    cr_assert_gt(event_log_pruned(log), 0);
    event_fetch_t got;
    s_count(log, 0, &got);
    cr_assert_gt(got.oldest, 1);
    /* Fetching from before the oldest is a gap. */
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    event_filter_t all = {.prefix = ""};
    cr_assert_eq(event_log_fetch(log, &all, 1, 10, 100, SIZE_MAX, &pk, &got), MB_ENOTFOUND);
    cr_assert_eq(buf.size, 0, "a gap packs nothing");
    msgpack_sbuffer_destroy(&buf);
    event_log_destroy(&log);
    mb_zmq_shutdown();
}

Test(event_log, fetch_bounds_its_scan_and_its_bytes)
{
    event_log_t *log = s_open(16 << 20, 0);
    event_batch_t *batches[2];
    cr_assert_eq(event_log_submit(log, s_batch(100, "skip.me", 10)), 0);
    cr_assert_eq(event_log_submit(log, s_batch(10, "want.me", 1000)), 0);
    s_collect(log, batches, 2);
    s_free_all(batches, 2);

    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    const char *topics[] = {"want.me"};
    size_t lens[] = {7};
    event_filter_t want = {.n_topics = 1, .topics = topics, .topic_lens = lens};
    event_fetch_t got;
    /* A scan limit below the filtered-out run: nothing, but next moves. */
    cr_assert_eq(event_log_fetch(log, &want, 1, 1000, 50, SIZE_MAX, &pk, &got), 0);
    cr_assert_eq(got.count, 0);
    cr_assert_eq(got.next, 51);
    cr_assert_not(got.at_head);
    /* A byte limit: stops after the event that passes it. */
    msgpack_sbuffer_clear(&buf);
    cr_assert_eq(event_log_fetch(log, &want, 51, 1000, 1000, 2500, &pk, &got), 0);
    cr_assert_eq(got.count, 3);
    cr_assert_eq(got.next, 104);
    /* A byte limit below one event still returns one. */
    msgpack_sbuffer_clear(&buf);
    cr_assert_eq(event_log_fetch(log, &want, 104, 1000, 1000, 1, &pk, &got), 0);
    cr_assert_eq(got.count, 1);
    cr_assert_eq(got.next, 105);
    msgpack_sbuffer_destroy(&buf);
    event_log_destroy(&log);
    mb_zmq_shutdown();
}

Test(event_log, one_log_per_folder)
{
    event_log_t *log = s_open(1 << 20, 0);
    event_log_opts_t opts = {.dir = s_dir, .map_size = 1 << 20};
    cr_assert_null(event_log_new(&opts), "a second log opened on the same folder");
    event_log_destroy(&log);
    log = s_open(1 << 20, 0); /* free again once the first is closed */
    event_log_destroy(&log);
    mb_zmq_shutdown();
}
