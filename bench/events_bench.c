/*  events_bench — durable event streams end to end: how many events per
    second the broker acknowledges (on disk) and a consumer group applies
    into LMDB, with batching, and how long an event takes from the
    publisher to the consumer's handler at moderate load.

    Every run starts its own musicbus-broker on 127.0.0.1 (an OS-picked
    port) with a fresh event log in a temporary folder, so runs neither
    share a log nor scan each other's events, and stops it afterwards.

    Throughput (one run per batch size and publisher count):
      P publisher threads, each with its own mb_events_t, call
      mb_events_publish_batch() with B events of ~--size bytes back to
      back, so P requests are in flight and P * B events wait for the
      disk at most; events/s counts events ACKNOWLEDGED inside the
      measured interval (after a warm-up). At the same time one consumer
      thread runs mb_consumer_run_once() in a loop: a real consumer group
      on an LMDB environment of its own (default flags, so every batch's
      commit is synced, as in the actors), whose apply puts the event's
      key in a "seen" database (the dedupe an actor's consumer does).
      After the publishers stop, the consumer runs until it has applied
      everything acknowledged; the run reports events/s applied in the
      interval, whether it caught up, and how long that took.

    Latency (one run per --latency-batches entry):
      --latency-publishers threads (64) paced to --rate events/s in total
      (10000), in publishes of B events (10, then single events), the
      threads' calls spread evenly over each interval. A publish is
      synchronous, so a thread still waiting for its previous answer
      starts late; those are counted ("late") and the rate achieved is
      printed. Each event carries the CLOCK_MONOTONIC time at which its
      publish call began (publishers and consumer are threads of this one
      process, so the clock is shared); the consumer's apply records
      now - that time ("to handler"), and once the batch's transaction
      has committed, now - that time again ("to commit": the event's
      effect is durable and visible to readers).

    Defaults: batches of 1, 10, 100, 1000 events with 1, 4 and 32
    publishers, 5 s each; the consumer fetches up to 1000 events per
    batch (mb_consumer's default; --consumer-batch).

    Usage:
      events_bench [--broker PATH] [--duration SEC] [--batches 1,10,100,1000]
                   [--publishers 1,4,32] [--size BYTES] [--consumer-batch N]
                   [--rate EV_S] [--latency-batches 10,1] [--latency-publishers N]
                   [--latency-duration SEC] [--rounds N] [--no-throughput]
                   [--no-latency]
    --broker defaults to musicbus-broker next to this executable.
    --rounds N repeats the whole sequence and prints medians: the machine
    it runs on is usually shared, and single runs vary a lot.

    Not a test: run it by hand. Every process it starts is stopped, and
    its temporary folder removed, before it exits (Ctrl-C included). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>
#include <msgpack.h>

#include "bench_util.h"
#include "mb_alloc.h"
#include "mb_error.h"
#include "mb_events.h"
#include "mb_msgpack.h"
#include "mb_signal.h"
#include "mb_zmq.h"

extern char **environ;

#define S_TOPIC "bench.ev"
#define S_GROUP "bench"
#define S_WARMUP_MS 500              /* before the measured interval: connections, caches */
#define S_DRAIN_MS 60000             /* the consumer's time to catch up after the publishers */
#define S_READY_TIMEOUT_MS 10000     /* the broker must be up by then */
#define S_STOP_GRACE_MS 10000        /* SIGTERM, then SIGKILL (it commits what it holds) */
#define S_CALL_TIMEOUT_MS 30000      /* publish deadline: a slow disk is not an error here */
#define S_FETCH_WAIT_MS 100          /* consumer's long poll */
#define S_MAP_SIZE ((size_t)8 << 30) /* consumer LMDB map: reserved, not used */
#define S_LOG_MAP_MIB "16384"        /* broker log map, MiB: above what a run writes */
#define S_RETENTION_BYTES "0"        /* keep every event: deleting would race the consumer */
#define S_MAX_LIST 8
#define S_MAX_PUBLISHERS 256
#define S_MAX_ROUNDS 15
#define S_HIST_SUB 64 /* histogram: 64 buckets per power of two (< 1.6% error) */
#define S_HIST_BUCKETS (S_HIST_SUB * 64)

/* ---- small helpers ----------------------------------------------------- */

static void s_sleep_until(int64_t when_ns)
{
    struct timespec ts = {when_ns / 1000000000, when_ns % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR &&
           !mb_signal_stop_requested())
        ;
}

/*  The share of the last 10 s in which some runnable task waited for a
    CPU (/proc/pressure/cpu, "some avg10"), in %, or -1 without PSI: on a
    shared machine it says how much the figures were disturbed. */
static double s_cpu_pressure(void)
{
    FILE *f = fopen("/proc/pressure/cpu", "r");
    if (!f)
        return -1;
    double avg10 = -1;
    if (fscanf(f, "some avg10=%lf", &avg10) != 1)
        avg10 = -1;
    fclose(f);
    return avg10;
}

/*  CPU seconds this process has used, every thread. */
static double s_self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---- latency histogram: log-linear buckets of microseconds ------------- */

typedef struct {
    uint64_t count;
    uint64_t max_us;
    uint32_t buckets[S_HIST_BUCKETS];
} s_hist_t;

static int s_hist_index(uint64_t us)
{
    if (us < 2 * S_HIST_SUB)
        return (int)us;
    int shift = 63 - __builtin_clzll(us) - 6; /* keep the top 7 bits: 64..127 */
    int index = shift * S_HIST_SUB + (int)(us >> shift);
    return index < S_HIST_BUCKETS ? index : S_HIST_BUCKETS - 1;
}

/*  The middle of bucket `index`, in microseconds. */
static double s_hist_value(int index)
{
    if (index < 2 * S_HIST_SUB)
        return index;
    int shift = index / S_HIST_SUB - 1;
    uint64_t low = (uint64_t)(index - shift * S_HIST_SUB) << shift;
    return (double)low + (double)((uint64_t)1 << shift) / 2;
}

static void s_hist_add(s_hist_t *h, int64_t ns)
{
    uint64_t us = ns > 0 ? (uint64_t)ns / 1000 : 0;
    h->buckets[s_hist_index(us)]++;
    h->count++;
    if (us > h->max_us)
        h->max_us = us;
}

static void s_hist_merge(s_hist_t *into, const s_hist_t *from)
{
    for (int i = 0; i < S_HIST_BUCKETS; i++)
        into->buckets[i] += from->buckets[i];
    into->count += from->count;
    if (from->max_us > into->max_us)
        into->max_us = from->max_us;
}

/*  The q-quantile in milliseconds (0 when empty). */
static double s_hist_ms(const s_hist_t *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t want = (uint64_t)(q * (double)h->count + 0.5), seen = 0;
    if (want == 0)
        want = 1;
    for (int i = 0; i < S_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= want) {
            double v = s_hist_value(i);
            return (v > (double)h->max_us ? (double)h->max_us : v) / 1000;
        }
    }
    return (double)h->max_us / 1000;
}

/* ---- one run: publishers, a consumer, a broker ------------------------- */

typedef struct {
    int batch;       /* events per publish */
    int publishers;  /* threads, so publish requests in flight */
    double rate;     /* events/s over all publishers; 0 = as fast as they go */
    int duration_ms; /* measured interval */
    size_t size;     /* bytes per event as bus.publish carries it */
    unsigned consumer_batch;
} s_config_t;

typedef struct {
    double pub_rate;  /* events acknowledged per second in the interval */
    double con_rate;  /* events applied (committed) per second in the interval */
    uint64_t acked;   /* events acknowledged in the whole run */
    uint64_t applied; /* events the consumer applied in the whole run */
    /* Applied every acknowledged event once before the drain gave up:
       as many applied as acknowledged, and as many distinct keys in
       "seen" (publishes that failed may have been written and break it). */
    bool caught_up;
    double drain_ms;         /* from the last acknowledgement to the consumer's last commit */
    double ack_p50, ack_p99; /* ms, one publish call */
    double h_p50, h_p95, h_p99, h_max; /* ms, publish -> handler */
    double c_p50, c_p95, c_p99, c_max; /* ms, publish -> consumer's commit */
    double per_fetch;                  /* events per consumer batch */
    double broker_cpu;                 /* % of one core in the interval */
    double bench_cpu;                  /* this process (publishers and consumer), % of one core */
    double broker_mib;                 /* broker's peak RSS */
    double broker_anon_mib;            /* broker's anonymous memory once the consumer is done */
    uint64_t errors;                   /* failed publishes and consumer cycles */
    uint64_t late;                     /* paced publishes that started over one interval late */
    double cpu_pressure;               /* the machine's CPU pressure (PSI avg10) at the end, % */
} s_result_t;

typedef struct s_run s_run_t;

typedef struct {
    s_run_t *run;
    int index;
    pthread_t thread;
    uint64_t acked;        /* events acknowledged */
    uint64_t acked_window; /* ... inside the interval */
    uint64_t errors;
    uint64_t late;
    int64_t last_ack_ns;
    char error[256]; /* the first failure */
    s_hist_t ack;    /* per publish call, started inside the interval */
} s_publisher_t;

struct s_run {
    const s_config_t *cfg;
    char endpoint[256];
    int64_t begin_ns;             /* warm-up starts */
    int64_t start_ns, end_ns;     /* the measured interval */
    atomic_bool publishing;       /* cleared when the interval ends */
    atomic_bool publishers_done;  /* set once every publisher returned */
    atomic_uint_least64_t target; /* events acknowledged in all, once done */
    /* consumer (its thread only, read by main after the join) */
    MDB_env *env;
    MDB_dbi seen;
    mb_consumer_t *consumer;
    pthread_t consumer_thread;
    int64_t *pending; /* publish times of the batch being applied */
    size_t n_pending, pending_size;
    uint64_t applied, applied_window, fetches, consumer_errors;
    int64_t last_commit_ns;
    s_hist_t handler, commit;
};

/*  Packs one event's data, {ts, n, pad}, fixed-width integers so every
    event has the same size. */
static void s_pack_data(msgpack_sbuffer *buf, int64_t ts, uint64_t n, size_t pad)
{
    static const char filler[1024] = {0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    mb_pack_cstr(&pk, "ts");
    msgpack_pack_fix_uint64(&pk, (uint64_t)ts);
    mb_pack_cstr(&pk, "n");
    msgpack_pack_fix_uint64(&pk, n);
    mb_pack_cstr(&pk, "pad");
    mb_pack_strn(&pk, filler, pad);
}

#define S_KEY_LEN 15 /* "p%03u-%010llu": publisher, then its counter */
#define S_EVENT_OVERHEAD (1 + 6 + 1 + sizeof S_TOPIC - 1 + 4 + 1 + S_KEY_LEN + 5)
#define S_DATA_OVERHEAD (1 + 3 + 9 + 2 + 9 + 4 + 1)

static size_t s_pad_for(size_t size)
{
    size_t fixed = S_EVENT_OVERHEAD + S_DATA_OVERHEAD;
    return size > fixed ? size - fixed : 0;
}

static void *s_publisher_main(void *arg)
{
    s_publisher_t *self = arg;
    s_run_t *run = self->run;
    const s_config_t *cfg = run->cfg;
    size_t pad = s_pad_for(cfg->size);
    int batch = cfg->batch;
    char name[16];
    snprintf(name, sizeof name, "publisher%u", (unsigned)self->index % 1000);
    pthread_setname_np(pthread_self(), name);

    mb_events_t *bus = mb_events_new(run->endpoint);
    if (!bus) {
        snprintf(self->error, sizeof self->error, "cannot connect to %.200s", run->endpoint);
        self->errors++;
        return NULL;
    }
    mb_events_set_timeout(bus, S_CALL_TIMEOUT_MS);
    mb_event_out_t *events = mb_calloc((size_t)batch, sizeof *events);
    char(*keys)[S_KEY_LEN + 1] = mb_calloc((size_t)batch, sizeof *keys);
    msgpack_sbuffer *data = mb_calloc((size_t)batch, sizeof *data);
    for (int i = 0; i < batch; i++) {
        msgpack_sbuffer_init(&data[i]);
        events[i].topic = S_TOPIC;
        events[i].key = keys[i];
    }
    /* Paced: publisher i's k-th publish is due at begin + (k + i/P) * interval,
       so the publishers' calls interleave evenly. */
    int64_t interval = cfg->rate > 0 ? (int64_t)(1e9 * batch * cfg->publishers / cfg->rate) : 0;
    int64_t due = run->begin_ns + interval * self->index / cfg->publishers;
    uint64_t n = 0;

    while (atomic_load(&run->publishing) && !mb_signal_stop_requested()) {
        if (interval) {
            if (bench_now_ns() > due + interval)
                self->late++;
            s_sleep_until(due);
            due += interval;
            if (!atomic_load(&run->publishing))
                break;
        }
        int64_t t0 = bench_now_ns();
        for (int i = 0; i < batch; i++) {
            snprintf(keys[i], sizeof keys[i], "p%03u-%010llu", (unsigned)self->index % 1000,
                     (unsigned long long)(n + (uint64_t)i) % 10000000000ull);
            msgpack_sbuffer_clear(&data[i]);
            s_pack_data(&data[i], t0, n + (uint64_t)i, pad);
            events[i].data = data[i].data;
            events[i].data_len = data[i].size;
        }
        uint64_t first;
        int rc = mb_events_publish_batch(bus, events, (size_t)batch, &first);
        int64_t t1 = bench_now_ns();
        if (rc) {
            if (self->errors++ == 0)
                snprintf(self->error, sizeof self->error, "%s (%s)", mb_strerror(rc),
                         mb_events_error(bus));
            /* A timed-out batch may still have been written: the consumer
               may apply it, so the "all consumed" check allows for that. */
            bench_sleep_ms(10);
            continue;
        }
        n += (uint64_t)batch;
        self->acked += (uint64_t)batch;
        self->last_ack_ns = t1;
        if (t1 >= run->start_ns && t1 < run->end_ns)
            self->acked_window += (uint64_t)batch;
        if (t0 >= run->start_ns && t0 < run->end_ns)
            s_hist_add(&self->ack, t1 - t0);
    }
    for (int i = 0; i < batch; i++)
        msgpack_sbuffer_destroy(&data[i]);
    free(data);
    free(keys);
    free(events);
    mb_events_destroy(&bus);
    return NULL;
}

/*  The consumer's handler: what an actor's apply does at the least — look
    at the event, write one record in the same transaction — plus the
    latency measure. */
static int s_apply(MDB_txn *txn, const mb_event_t *event, void *state)
{
    s_run_t *run = state;
    int64_t now = bench_now_ns();
    int64_t ts;
    if (!mb_obj_int(mb_map_get(event->data, "ts"), &ts))
        return mb_event_invalid(event, "no ts");
    uint8_t seq[8];
    for (int i = 0; i < 8; i++)
        seq[i] = (uint8_t)(event->seq >> (56 - 8 * i));
    MDB_val k = {event->key_len, (void *)event->key}, v = {sizeof seq, seq};
    int rc = mdb_put(txn, run->seen, &k, &v, 0);
    if (rc)
        return rc;
    if (ts >= run->start_ns && ts < run->end_ns)
        s_hist_add(&run->handler, now - ts);
    if (run->n_pending == run->pending_size) {
        run->pending_size = run->pending_size ? run->pending_size * 2 : 1024;
        run->pending = mb_realloc(run->pending, run->pending_size * sizeof *run->pending);
    }
    run->pending[run->n_pending++] = ts;
    return 0;
}

static void *s_consumer_main(void *arg)
{
    s_run_t *run = arg;
    pthread_setname_np(pthread_self(), "consumer"); /* for perf and top */
    int64_t drain_until = 0;
    while (!mb_signal_stop_requested()) {
        if (atomic_load(&run->publishers_done)) {
            if (run->applied >= atomic_load(&run->target))
                break;
            if (!drain_until)
                drain_until = bench_now_ns() + (int64_t)S_DRAIN_MS * 1000000;
            else if (bench_now_ns() > drain_until)
                break;
        }
        run->n_pending = 0;
        size_t applied = 0;
        int rc = mb_consumer_run_once(run->consumer, S_FETCH_WAIT_MS, &applied);
        int64_t now = bench_now_ns();
        if (rc) {
            run->consumer_errors++;
            bench_sleep_ms(10);
            continue;
        }
        if (applied == 0)
            continue;
        run->fetches++;
        run->applied += applied;
        run->last_commit_ns = now;
        if (now >= run->start_ns && now < run->end_ns)
            run->applied_window += applied;
        for (size_t i = 0; i < run->n_pending; i++)
            if (run->pending[i] >= run->start_ns && run->pending[i] < run->end_ns)
                s_hist_add(&run->commit, now - run->pending[i]);
    }
    return NULL;
}

/*  Opens the consumer's LMDB environment in `dir` (made) with the events
    module's databases and "seen". Returns 0 or -1. */
static int s_open_env(s_run_t *run, const char *dir)
{
    if (mkdir(dir, 0755) != 0)
        return -1;
    MDB_txn *txn;
    if (mdb_env_create(&run->env) || mdb_env_set_maxdbs(run->env, MB_EVENTS_DBS + 1) ||
        mdb_env_set_mapsize(run->env, S_MAP_SIZE) || mdb_env_open(run->env, dir, 0, 0644))
        return -1;
    if (mb_events_open_dbs(run->env) != 0)
        return -1;
    if (mdb_txn_begin(run->env, NULL, 0, &txn))
        return -1;
    if (mdb_dbi_open(txn, "seen", MDB_CREATE, &run->seen)) {
        mdb_txn_abort(txn);
        return -1;
    }
    return mdb_txn_commit(txn) ? -1 : 0;
}

static const char *const s_topics[] = {S_TOPIC, NULL};

/*  One run: a fresh broker and consumer under `dir`, the publishers for
    the warm-up and the interval, then the drain. Returns 0 with *out
    filled, or -1 (reason printed). */
static int s_run_once(const s_config_t *cfg, const char *broker, const char *dir, s_result_t *out)
{
    char data_dir[PATH_MAX], env_dir[PATH_MAX], ready[PATH_MAX], log[PATH_MAX];
    snprintf(data_dir, sizeof data_dir, "%.3000s/data", dir);
    snprintf(env_dir, sizeof env_dir, "%.3000s/consumer", dir);
    snprintf(ready, sizeof ready, "%.3000s/broker.ready", dir);
    snprintf(log, sizeof log, "%.3000s/broker.log", dir);
    if (mkdir(dir, 0755) != 0) {
        perror(dir);
        return -1;
    }
    s_run_t *run = mb_calloc(1, sizeof *run);
    s_publisher_t *pubs = mb_calloc((size_t)cfg->publishers, sizeof *pubs);
    run->cfg = cfg;
    int rc = -1;
    int started = 0;
    bool consumer_started = false;
    char *argv[] = {
        (char *)broker,    "--bind", "tcp://127.0.0.1:*", "--ready-file", ready,
        "--data",          data_dir, "--log-map-size",    S_LOG_MAP_MIB,  "--retention-bytes",
        S_RETENTION_BYTES, NULL};
    pid_t pid = bench_spawn(argv, log);
    if (pid < 0 || bench_wait_ready(ready, pid, S_READY_TIMEOUT_MS, run->endpoint, sizeof run->endpoint) != 0) {
        fprintf(stderr, "events_bench: the broker did not start (%s)\n", broker);
        bench_show_log(log);
        goto done;
    }
    if (s_open_env(run, env_dir) != 0) {
        fprintf(stderr, "events_bench: cannot open an LMDB environment in %s\n", env_dir);
        goto done;
    }
    static mb_consumer_def_t def;
    def = (mb_consumer_def_t){
        .group = S_GROUP, .topics = s_topics, .apply = s_apply, .batch = cfg->consumer_batch};
    run->consumer = mb_consumer_new(&def, run->env, run, run->endpoint);
    if (!run->consumer) {
        fprintf(stderr, "events_bench: cannot make the consumer\n");
        goto done;
    }

    run->begin_ns = bench_now_ns() + 20000000; /* give every thread time to start */
    run->start_ns = run->begin_ns + (int64_t)S_WARMUP_MS * 1000000;
    run->end_ns = run->start_ns + (int64_t)cfg->duration_ms * 1000000;
    atomic_store(&run->publishing, true);
    if (pthread_create(&run->consumer_thread, NULL, s_consumer_main, run) != 0)
        goto done;
    consumer_started = true;
    for (; started < cfg->publishers; started++) {
        pubs[started].run = run;
        pubs[started].index = started;
        if (pthread_create(&pubs[started].thread, NULL, s_publisher_main, &pubs[started]) != 0)
            break;
    }

    s_sleep_until(run->start_ns);
    long ticks0 = bench_cpu_ticks(pid);
    double self0 = s_self_cpu();
    s_sleep_until(run->end_ns);
    long ticks1 = bench_cpu_ticks(pid);
    double self1 = s_self_cpu();
    double pressure = s_cpu_pressure();
    atomic_store(&run->publishing, false);

    uint64_t acked = 0, acked_window = 0, errors = 0, late = 0;
    int64_t last_ack = 0;
    s_hist_t *ack = mb_calloc(1, sizeof *ack);
    for (int i = 0; i < started; i++) {
        pthread_join(pubs[i].thread, NULL);
        acked += pubs[i].acked;
        acked_window += pubs[i].acked_window;
        errors += pubs[i].errors;
        late += pubs[i].late;
        if (pubs[i].last_ack_ns > last_ack)
            last_ack = pubs[i].last_ack_ns;
        s_hist_merge(ack, &pubs[i].ack);
        if (pubs[i].errors)
            fprintf(stderr, "events_bench: publisher %d: %llu failed publishes, first: %s\n", i,
                    (unsigned long long)pubs[i].errors, pubs[i].error);
    }
    atomic_store(&run->target, acked);
    atomic_store(&run->publishers_done, true);
    pthread_join(run->consumer_thread, NULL);
    consumer_started = false;
    MDB_txn *txn;
    MDB_stat seen = {0};
    if (mdb_txn_begin(run->env, NULL, MDB_RDONLY, &txn) == 0) {
        mdb_stat(txn, run->seen, &seen);
        mdb_txn_abort(txn);
    }

    double seconds = cfg->duration_ms / 1000.0;
    long hz = sysconf(_SC_CLK_TCK);
    /* Most of the broker's RSS is the log's LMDB map (file pages the
       kernel may drop); its own memory is the anonymous part. */
    long hwm = bench_status_kib(pid, "VmHWM"), anon = bench_status_kib(pid, "RssAnon");
    *out = (s_result_t){
        .pub_rate = (double)acked_window / seconds,
        .con_rate = (double)run->applied_window / seconds,
        .acked = acked,
        .applied = run->applied,
        .caught_up = acked > 0 && run->applied == acked && seen.ms_entries == acked,
        .drain_ms = run->last_commit_ns > last_ack ? (run->last_commit_ns - last_ack) / 1e6 : 0,
        .ack_p50 = s_hist_ms(ack, 0.50),
        .ack_p99 = s_hist_ms(ack, 0.99),
        .h_p50 = s_hist_ms(&run->handler, 0.50),
        .h_p95 = s_hist_ms(&run->handler, 0.95),
        .h_p99 = s_hist_ms(&run->handler, 0.99),
        .h_max = (double)run->handler.max_us / 1000,
        .c_p50 = s_hist_ms(&run->commit, 0.50),
        .c_p95 = s_hist_ms(&run->commit, 0.95),
        .c_p99 = s_hist_ms(&run->commit, 0.99),
        .c_max = (double)run->commit.max_us / 1000,
        .per_fetch = run->fetches ? (double)run->applied / (double)run->fetches : 0,
        .broker_cpu = ticks0 >= 0 && ticks1 >= ticks0
                          ? 100.0 * (double)(ticks1 - ticks0) / (double)hz / seconds
                          : -1,
        .bench_cpu = 100.0 * (self1 - self0) / seconds,
        .broker_mib = hwm >= 0 ? hwm / 1024.0 : -1,
        .broker_anon_mib = anon >= 0 ? anon / 1024.0 : -1,
        .errors = errors + run->consumer_errors,
        .late = late,
        .cpu_pressure = pressure,
    };
    free(ack);
    if (started == cfg->publishers)
        rc = 0;

done:
    atomic_store(&run->publishing, false);
    atomic_store(&run->publishers_done, true);
    if (consumer_started) {
        /* A failed start: nothing to wait for. */
        mb_signal_request_stop();
        pthread_join(run->consumer_thread, NULL);
        for (int i = 0; i < started; i++)
            pthread_join(pubs[i].thread, NULL);
    }
    mb_consumer_destroy(&run->consumer);
    if (run->env)
        mdb_env_close(run->env);
    bench_stop_child(pid, S_STOP_GRACE_MS);
    free(run->pending);
    free(run);
    free(pubs);
    bench_remove_tree(dir);
    return rc;
}

/* ---- main -------------------------------------------------------------- */

static void s_usage(void)
{
    fprintf(stderr,
            "usage: events_bench [--broker PATH] [--duration SEC] [--batches 1,10,100,1000]\n"
            "                    [--publishers 1,4,32] [--size BYTES] [--consumer-batch N]\n"
            "                    [--rate EV_S] [--latency-batches 10,1] [--latency-publishers N]\n"
            "                    [--latency-duration SEC] [--rounds N] [--no-throughput]\n"
            "                    [--no-latency]\n");
    exit(2);
}

static int s_seconds_ms(const char *text)
{
    double sec = atof(text);
    if (sec <= 0 || sec > 3600)
        s_usage();
    return (int)(sec * 1000);
}

/*  Median over the rounds of the double at `offset` in s_result_t. */
static double s_median_of(const s_result_t *results, int rounds, size_t offset)
{
    double v[S_MAX_ROUNDS] = {0};
    for (int r = 0; r < rounds; r++)
        memcpy(&v[r], (const char *)&results[r] + offset, sizeof v[r]);
    return bench_median(v, rounds);
}

#define S_MEDIAN(results, rounds, field)                                                           \
    s_median_of((results), (rounds), offsetof(s_result_t, field))

typedef struct {
    s_config_t cfg;
    bool latency;
    s_result_t results[S_MAX_ROUNDS];
} s_case_t;

static void s_print_case(const s_case_t *c, int rounds)
{
    const s_result_t *r = c->results;
    bool all = true;
    uint64_t errors = 0, late = 0;
    double drain[S_MAX_ROUNDS] = {0};
    for (int i = 0; i < rounds; i++) {
        all = all && r[i].caught_up;
        errors += r[i].errors;
        late += r[i].late;
        drain[i] = r[i].drain_ms;
    }
    bench_median(drain, rounds); /* sorts: the worst is last */
    if (c->latency)
        printf("%6.0f %5d %4d %10.0f %10.0f | %6.2f %6.2f %6.2f %7.2f | %6.2f %6.2f %6.2f %7.2f "
               "| %6.2f %6.2f | %5.0f %5.0f %s",
               c->cfg.rate, c->cfg.batch, c->cfg.publishers, S_MEDIAN(r, rounds, pub_rate),
               S_MEDIAN(r, rounds, con_rate), S_MEDIAN(r, rounds, h_p50),
               S_MEDIAN(r, rounds, h_p95), S_MEDIAN(r, rounds, h_p99), S_MEDIAN(r, rounds, h_max),
               S_MEDIAN(r, rounds, c_p50), S_MEDIAN(r, rounds, c_p95), S_MEDIAN(r, rounds, c_p99),
               S_MEDIAN(r, rounds, c_max), S_MEDIAN(r, rounds, ack_p50),
               S_MEDIAN(r, rounds, ack_p99), S_MEDIAN(r, rounds, broker_cpu),
               S_MEDIAN(r, rounds, bench_cpu), all ? "yes" : "NO");
    else
        printf("%5d %4d %6d %11.0f %11.0f %4s %8.0f | %6.2f %7.2f | %7.1f %7.1f | %6.0f | %5.0f "
               "%5.0f",
               c->cfg.batch, c->cfg.publishers, c->cfg.batch * c->cfg.publishers,
               S_MEDIAN(r, rounds, pub_rate), S_MEDIAN(r, rounds, con_rate), all ? "yes" : "NO",
               drain[rounds - 1], S_MEDIAN(r, rounds, ack_p50), S_MEDIAN(r, rounds, ack_p99),
               S_MEDIAN(r, rounds, c_p50), S_MEDIAN(r, rounds, c_p99),
               S_MEDIAN(r, rounds, per_fetch), S_MEDIAN(r, rounds, broker_cpu),
               S_MEDIAN(r, rounds, bench_cpu));
    if (errors || late)
        printf("  (%llu errors, %llu late publishes)", (unsigned long long)errors,
               (unsigned long long)late);
    printf("\n");
}

int main(int argc, char **argv)
{
    static char self_exe[PATH_MAX], broker[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (n <= 0)
        bench_die("cannot find my own executable%s", "");
    self_exe[n] = 0;
    snprintf(broker, sizeof broker, "%.*s/musicbus-broker",
             (int)(strrchr(self_exe, '/') - self_exe), self_exe);

    int batches[S_MAX_LIST] = {1, 10, 100, 1000}, n_batches = 4;
    int publishers[S_MAX_LIST] = {1, 4, 32}, n_publishers = 3;
    int lat_batches[S_MAX_LIST] = {10, 1}, n_lat_batches = 2;
    int lat_publishers = 64, duration_ms = 5000, lat_duration_ms = 10000, rounds = 1;
    double rate = 10000;
    size_t size = 100;
    unsigned consumer_batch = 1000;
    bool throughput = true, latency = true;
    static const struct option opts[] = {{"broker", required_argument, 0, 'b'},
                                         {"duration", required_argument, 0, 'd'},
                                         {"batches", required_argument, 0, 'B'},
                                         {"publishers", required_argument, 0, 'p'},
                                         {"size", required_argument, 0, 's'},
                                         {"consumer-batch", required_argument, 0, 'c'},
                                         {"rate", required_argument, 0, 'R'},
                                         {"latency-batches", required_argument, 0, 'L'},
                                         {"latency-publishers", required_argument, 0, 'P'},
                                         {"latency-duration", required_argument, 0, 'D'},
                                         {"rounds", required_argument, 0, 'r'},
                                         {"no-throughput", no_argument, 0, 'T'},
                                         {"no-latency", no_argument, 0, 'N'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'b':
            snprintf(broker, sizeof broker, "%s", optarg);
            break;
        case 'd':
            duration_ms = s_seconds_ms(optarg);
            break;
        case 'D':
            lat_duration_ms = s_seconds_ms(optarg);
            break;
        case 'B':
            n_batches = bench_parse_list(optarg, batches, S_MAX_LIST, 1, MB_PUBLISH_BATCH_MAX);
            if (n_batches <= 0)
                s_usage();
            break;
        case 'p':
            n_publishers = bench_parse_list(optarg, publishers, S_MAX_LIST, 1, S_MAX_PUBLISHERS);
            if (n_publishers <= 0)
                s_usage();
            break;
        case 'L':
            n_lat_batches = bench_parse_list(optarg, lat_batches, S_MAX_LIST, 1, MB_PUBLISH_BATCH_MAX);
            if (n_lat_batches <= 0)
                s_usage();
            break;
        case 'P':
            lat_publishers = atoi(optarg);
            if (lat_publishers < 1 || lat_publishers > S_MAX_PUBLISHERS)
                s_usage();
            break;
        case 's': {
            long v = atol(optarg);
            if (v < (long)(S_EVENT_OVERHEAD + S_DATA_OVERHEAD) || v > 1000)
                s_usage();
            size = (size_t)v;
            break;
        }
        case 'c': {
            long v = atol(optarg);
            if (v < 1 || v > MB_FETCH_MAX)
                s_usage();
            consumer_batch = (unsigned)v;
            break;
        }
        case 'R':
            rate = atof(optarg);
            if (rate < 1 || rate > 1e7)
                s_usage();
            break;
        case 'r':
            rounds = atoi(optarg);
            if (rounds < 1 || rounds > S_MAX_ROUNDS)
                s_usage();
            break;
        case 'T':
            throughput = false;
            break;
        case 'N':
            latency = false;
            break;
        default:
            s_usage();
        }
    }
    if (optind != argc || (!throughput && !latency))
        s_usage();
    if (access(broker, X_OK) != 0)
        bench_die("no broker at %s (use --broker PATH)", broker);
    /* The broker's and our own info lines would drown the tables. */
    setenv("MUSICBUS_LOG_LEVEL",
           getenv("MUSICBUS_LOG_LEVEL") ? getenv("MUSICBUS_LOG_LEVEL") : "warn", 1);
    mb_signal_install();
    mb_zmq_context(); /* made once, before the threads share it */

    static s_case_t cases[2 * S_MAX_LIST * S_MAX_LIST];
    int n_cases = 0;
    for (int b = 0; throughput && b < n_batches; b++)
        for (int p = 0; p < n_publishers; p++)
            cases[n_cases++] = (s_case_t){.cfg = {.batch = batches[b],
                                                  .publishers = publishers[p],
                                                  .duration_ms = duration_ms,
                                                  .size = size,
                                                  .consumer_batch = consumer_batch}};
    for (int b = 0; latency && b < n_lat_batches; b++)
        cases[n_cases++] = (s_case_t){.latency = true,
                                      .cfg = {.batch = lat_batches[b],
                                              .publishers = lat_publishers,
                                              .rate = rate,
                                              .duration_ms = lat_duration_ms,
                                              .size = size,
                                              .consumer_batch = consumer_batch}};

    char tmpdir[] = "/tmp/events_bench.XXXXXX";
    if (!mkdtemp(tmpdir))
        bench_die("mkdtemp failed%s", "");
    fprintf(stderr, "events_bench: %d round(s), events of %zu bytes, broker %s, data in %s\n",
            rounds, size, broker, tmpdir);
    int rc = 0, seq = 0;
    double broker_mib = 0, broker_anon_mib = 0;
    for (int round = 0; round < rounds && rc == 0; round++)
        for (int i = 0; i < n_cases && rc == 0; i++) {
            if (mb_signal_stop_requested()) {
                rc = 1;
                break;
            }
            s_case_t *k = &cases[i];
            char dir[PATH_MAX];
            snprintf(dir, sizeof dir, "%s/run%d", tmpdir, ++seq);
            s_result_t *r = &k->results[round];
            if (s_run_once(&k->cfg, broker, dir, r) != 0 || mb_signal_stop_requested()) {
                rc = 1;
                break;
            }
            if (r->broker_mib > broker_mib)
                broker_mib = r->broker_mib;
            if (r->broker_anon_mib > broker_anon_mib)
                broker_anon_mib = r->broker_anon_mib;
            fprintf(stderr,
                    "  round %d %s batch %4d x %3d in flight%s: published %.0f/s, consumed "
                    "%.0f/s, %s (%llu acked, %llu applied), commit p50 %.2f p99 %.2f ms, CPU "
                    "pressure %.0f%%\n",
                    round + 1, k->latency ? "latency   " : "throughput", k->cfg.batch,
                    k->cfg.publishers, k->latency ? " (paced)" : "", r->pub_rate, r->con_rate,
                    r->caught_up ? "caught up" : "DID NOT CATCH UP", (unsigned long long)r->acked,
                    (unsigned long long)r->applied, r->c_p50, r->c_p99, r->cpu_pressure);
        }
    bench_remove_tree(tmpdir);
    if (rc != 0) {
        mb_zmq_shutdown();
        return rc;
    }

    printf("\nevents_bench: %d round(s), events of %zu bytes (topic, key, data as bus.publish "
           "carries them), consumer fetches up to %u, %ld CPUs\n",
           rounds, size, consumer_batch, sysconf(_SC_NPROCESSORS_ONLN));
    if (rounds > 1)
        printf("figures are medians over the rounds; \"drain\" is the worst round\n");
    if (throughput) {
        printf("\nthroughput, %.1f s per run: events/s acknowledged by the broker (on disk) and "
               "applied by the consumer group\n",
               duration_ms / 1000.0);
        printf("%5s %4s %6s %11s %11s %4s %8s | %6s %7s | %7s %7s | %6s | %5s %5s\n", "batch",
               "pubs", "events", "published/s", "consumed/s", "all", "drain ms", "ack", "ms",
               "commit", "lat ms", "events", "CPU %", "");
        printf("%5s %4s %6s %11s %11s %4s %8s | %6s %7s | %7s %7s | %6s | %5s %5s\n", "", "",
               "flying", "", "", "", "", "p50", "p99", "p50", "p99", "/fetch", "brokr", "bench");
        for (int i = 0; i < n_cases; i++)
            if (!cases[i].latency)
                s_print_case(&cases[i], rounds);
    }
    if (latency) {
        printf("\nlatency, %.1f s per run, paced: publish call start -> consumer's handler, and "
               "-> the consumer's commit (ms)\n",
               lat_duration_ms / 1000.0);
        printf("%6s %5s %4s %10s %10s | %6s %6s %6s %7s | %6s %6s %6s %7s | %6s %6s | %5s %5s %s\n",
               "rate", "batch", "pubs", "publish/s", "consumed/s", "hp50", "hp95", "hp99", "hmax",
               "cp50", "cp95", "cp99", "cmax", "ack50", "ack99", "brokr", "bench", "all");
        for (int i = 0; i < n_cases; i++)
            if (cases[i].latency)
                s_print_case(&cases[i], rounds);
    }
    printf("\nbroker peak RSS (VmHWM, largest run): %.1f MiB, mostly the event log's LMDB map; "
           "anonymous memory (RssAnon) at most %.1f MiB\n",
           broker_mib, broker_anon_mib);
    double pressure[S_MAX_ROUNDS * 2 * S_MAX_LIST * S_MAX_LIST];
    int n_pressure = 0;
    for (int i = 0; i < n_cases; i++)
        for (int r = 0; r < rounds; r++)
            pressure[n_pressure++] = cases[i].results[r].cpu_pressure;
    double median_pressure = bench_median(pressure, n_pressure); /* sorts */
    if (n_pressure > 0 && pressure[n_pressure - 1] >= 0)
        printf("machine's CPU pressure (PSI some avg10, the bench and broker included) at the "
               "end of the runs: median %.0f%%, highest %.0f%%\n",
               median_pressure, pressure[n_pressure - 1]);
    printf("targets: >= 100000 events/s published and consumed; p99 publish -> consume < 50 ms "
           "at moderate load\n");
    mb_zmq_shutdown();
    return 0;
}
