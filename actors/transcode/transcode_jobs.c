/*  transcode_jobs — claiming, renewing and finishing transcoding jobs. */
#include "transcode_jobs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mb_alloc.h"
#include "mb_config.h"
#include "mb_error.h"
#include "mb_log.h"
#include "mb_signal.h"
#include "transcode_events.h"
#include "transcode_ladder.h"

#define S_IDLE_WAIT_MS 1000 /* an idle worker looks at the queue this often anyway */
#define S_TMP_PREFIX ".tmp-"
#define S_THREADS_MAX 64

struct transcode_jobs {
    MDB_env *env;
    transcode_store_t *store;
    mb_blob_store_t *blobs;
    transcode_jobs_opts_t opts;
    char *hls;            /* <blobs>/hls */
    transcode_owner_t me; /* host, pid, start; token per claim */
    pthread_mutex_t lock; /* guards kicked and the condition */
    pthread_cond_t wake;
    bool kicked;
    atomic_bool stop;
    pthread_t threads[S_THREADS_MAX];
    unsigned n_threads;
};

/*  One job in hand. */
typedef struct {
    transcode_jobs_t *jobs;
    char version[MB_ID_LEN + 1];
    uint64_t token;
    int64_t last_renew_ms;
    bool lost; /* the row is no longer ours */
} s_claim_t;

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*  Start time of process `pid` in clock ticks after boot (field 22 of
    /proc/<pid>/stat), or 0 when unknown. */
static uint64_t s_proc_start(uint32_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    /* The command name (field 2) may hold spaces and parentheses: count
       from the last ')'. Field 3 follows it; we want field 22. */
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    p++;
    for (int field = 3; field < 22 && p; field++)
        p = strchr(p + 1, ' ');
    return p ? strtoull(p + 1, NULL, 10) : 0;
}

static char s_host[TRANSCODE_HOST_MAX + 1];

/*  Owners on other hosts are trusted to renew; on this one a dead or
    reused pid frees the job at once. */
static bool s_owner_alive(const transcode_owner_t *owner)
{
    if (strcmp(owner->host, s_host) != 0)
        return true;
    if (kill((pid_t)owner->pid, 0) != 0 && errno == ESRCH)
        return false;
    /* A start time unknown on either side: the pid alone decides. */
    uint64_t start = s_proc_start(owner->pid);
    return start == 0 || owner->start == 0 || start == owner->start;
}

void transcode_jobs_opts_default(transcode_jobs_opts_t *opts)
{
    opts->lease_ms = (int)mb_config_env_long(TRANSCODE_ENV_LEASE_MS, 30000, 1000, 3600000);
    opts->renew_ms = opts->lease_ms / 6;
    opts->max_attempts = 3;
    opts->retry_ms = 30000;
}

transcode_jobs_t *transcode_jobs_new(MDB_env *env, transcode_store_t *store, mb_blob_store_t *blobs,
                                     const transcode_jobs_opts_t *opts)
{
    transcode_jobs_t *self = mb_calloc(1, sizeof *self);
    self->env = env;
    self->store = store;
    self->blobs = blobs;
    if (opts)
        self->opts = *opts;
    else
        transcode_jobs_opts_default(&self->opts);
    if (asprintf(&self->hls, "%s/hls", mb_blob_store_dir(blobs)) < 0)
        abort();
    if (gethostname(s_host, sizeof s_host - 1) != 0)
        snprintf(s_host, sizeof s_host, "localhost");
    snprintf(self->me.host, sizeof self->me.host, "%s", s_host);
    self->me.pid = (uint32_t)getpid();
    self->me.start = s_proc_start(self->me.pid);
    pthread_mutex_init(&self->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&self->wake, &attr);
    pthread_condattr_destroy(&attr);
    atomic_init(&self->stop, false);
    return self;
}

const char *transcode_jobs_hls_dir(const transcode_jobs_t *self)
{
    return self->hls;
}

/* ---- files ------------------------------------------------------------------ */

static int s_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)ftw;
    if (flag == FTW_DP || flag == FTW_D)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

static void s_rm_rf(const char *path)
{
    nftw(path, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/*  Removes hls/.tmp-<version>-* (every version when `version` is NULL and
    `orphan` says the folder's version has no job). */
static void s_remove_tmp(const transcode_jobs_t *self, const char *version,
                         bool (*orphan)(const transcode_jobs_t *, const char *))
{
    DIR *dir = opendir(self->hls);
    if (!dir)
        return;
    size_t plen = strlen(S_TMP_PREFIX);
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        const char *name = e->d_name;
        if (strncmp(name, S_TMP_PREFIX, plen) != 0 || strlen(name) < plen + MB_ID_LEN)
            continue;
        char v[MB_ID_LEN + 1];
        memcpy(v, name + plen, MB_ID_LEN);
        v[MB_ID_LEN] = '\0';
        if (version ? strcmp(v, version) != 0 : !orphan(self, v))
            continue;
        char *path;
        if (asprintf(&path, "%s/%s", self->hls, name) < 0)
            abort();
        s_rm_rf(path);
        free(path);
    }
    closedir(dir);
}

void transcode_jobs_remove_files(const transcode_jobs_t *self, const char *version)
{
    char *path;
    if (asprintf(&path, "%s/%s", self->hls, version) < 0)
        abort();
    s_rm_rf(path);
    free(path);
    s_remove_tmp(self, version, NULL);
}

static bool s_no_job(const transcode_jobs_t *self, const char *version)
{
    MDB_txn *txn;
    if (mdb_txn_begin(self->env, NULL, MDB_RDONLY, &txn) != 0)
        return false;
    transcode_job_t job;
    int rc = transcode_store_get_job(self->store, txn, version, &job);
    mdb_txn_abort(txn);
    return rc == MDB_NOTFOUND;
}

/* ---- claiming ------------------------------------------------------------------ */

/*  Marks `v` failed with `reason` in `txn`, drops its job and adds
    audio.failed. */
static int s_fail_version(transcode_jobs_t *self, MDB_txn *txn, transcode_version_t *v,
                          const char *reason)
{
    v->status = TRANSCODE_FAILED;
    snprintf(v->reason, sizeof v->reason, "%.*s", (int)sizeof v->reason - 1, reason);
    v->updated_ms = s_now_ms();
    int rc = transcode_store_put_version(self->store, txn, v, false);
    if (rc == 0)
        rc = transcode_store_del_job(self->store, txn, v->version);
    if (rc == 0 && transcode_event_add(txn, TRANSCODE_TOPIC_FAILED, v) != 0)
        rc = MDB_PANIC; /* only an LMDB error or a bad event: abort either way */
    return rc;
}

/*  Claims the oldest free job into *claim and *v. Returns 0 (claim->version
    empty when none), or an LMDB code. */
static int s_claim(transcode_jobs_t *self, s_claim_t *claim, transcode_version_t *v)
{
    claim->version[0] = '\0';
    for (;;) {
        MDB_txn *txn;
        int rc = mdb_txn_begin(self->env, NULL, 0, &txn);
        if (rc)
            return rc;
        transcode_job_t job;
        char version[MB_ID_LEN + 1];
        int64_t now = s_now_ms();
        rc = transcode_store_next_job(self->store, txn, now, s_owner_alive, version, &job);
        if (rc == MDB_NOTFOUND) {
            mdb_txn_abort(txn);
            return 0;
        }
        if (rc == 0)
            rc = transcode_store_get_version(self->store, txn, version, v);
        if (rc == MDB_NOTFOUND || (rc == 0 && job.attempts >= self->opts.max_attempts)) {
            if (rc == MDB_NOTFOUND) {
                /* A job without its version (removed meanwhile): drop it. */
                rc = transcode_store_del_job(self->store, txn, version);
            } else {
                char reason[TRANSCODE_REASON_MAX];
                snprintf(reason, sizeof reason, "gave up after %u attempts%s%.200s", job.attempts,
                         v->reason[0] ? ": " : "", v->reason);
                mb_warn(0, "transcode: version %s: %s", version, reason);
                rc = s_fail_version(self, txn, v, reason);
            }
            if (rc == 0)
                rc = mdb_txn_commit(txn);
            else
                mdb_txn_abort(txn);
            if (rc)
                return rc;
            continue;
        }
        if (rc == 0) {
            job.attempts++;
            job.lease_until_ms = now + self->opts.lease_ms;
            job.owner = self->me;
            randombytes_buf(&job.owner.token, sizeof job.owner.token);
            v->status = TRANSCODE_RUNNING;
            v->attempts = job.attempts;
            v->updated_ms = now;
            rc = transcode_store_put_job(self->store, txn, version, &job);
        }
        if (rc == 0)
            rc = transcode_store_put_version(self->store, txn, v, false);
        if (rc == 0)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
        if (rc)
            return rc;
        snprintf(claim->version, sizeof claim->version, "%s", version);
        claim->token = job.owner.token;
        claim->last_renew_ms = now;
        claim->lost = false;
        return 0;
    }
}

/*  Begins a write transaction in which the claim is checked: returns 0
    with *txn and *job when the row is still ours; MDB_NOTFOUND (and
    claim->lost) when not; an LMDB code. */
static int s_begin_owned(s_claim_t *claim, MDB_txn **txn, transcode_job_t *job)
{
    transcode_jobs_t *self = claim->jobs;
    *txn = NULL;
    int rc = mdb_txn_begin(self->env, NULL, 0, txn);
    if (rc) {
        *txn = NULL;
        return rc;
    }
    rc = transcode_store_get_job(self->store, *txn, claim->version, job);
    if (rc == 0 && job->owner.token != claim->token)
        rc = MDB_NOTFOUND;
    if (rc) {
        mdb_txn_abort(*txn);
        *txn = NULL;
        if (rc == MDB_NOTFOUND)
            claim->lost = true;
    }
    return rc;
}

/*  The ladder's tick: renews the lease when due; asks to stop when the
    process stops or the job is no longer ours. */
static int s_tick(void *arg)
{
    s_claim_t *claim = arg;
    transcode_jobs_t *self = claim->jobs;
    if (atomic_load(&self->stop) || mb_signal_stop_requested())
        return 1;
    int64_t now = s_now_ms();
    if (now - claim->last_renew_ms < self->opts.renew_ms)
        return 0;
    MDB_txn *txn = NULL;
    transcode_job_t job;
    int rc = s_begin_owned(claim, &txn, &job);
    if (rc == MDB_NOTFOUND) {
        mb_warn(0, "transcode: version %s: the job is no longer ours; stopping it", claim->version);
        return 1;
    }
    if (rc == 0) {
        job.lease_until_ms = now + self->opts.lease_ms;
        rc = transcode_store_put_job(self->store, txn, claim->version, &job);
        rc = rc == 0 ? mdb_txn_commit(txn) : (mdb_txn_abort(txn), rc);
    }
    if (rc)
        /* Keep going: the lease has lease_ms - renew_ms left to retry in. */
        mb_warn(0, "transcode: version %s: renewing the lease failed: %s", claim->version,
                mdb_strerror(rc));
    else
        claim->last_renew_ms = now;
    return 0;
}

/* ---- finishing ------------------------------------------------------------------ */

/*  Success: renames the folder into view and marks the version ready in
    one write transaction. */
static int s_finish_ready(s_claim_t *claim, const char *tmp, const transcode_ladder_result_t *res)
{
    transcode_jobs_t *self = claim->jobs;
    MDB_txn *txn = NULL;
    transcode_job_t job;
    transcode_version_t *v = mb_malloc(sizeof *v);
    char *final;
    if (asprintf(&final, "%s/%s", self->hls, claim->version) < 0)
        abort();
    int rc = s_begin_owned(claim, &txn, &job);
    if (rc == 0)
        rc = transcode_store_get_version(self->store, txn, claim->version, v);
    if (rc == 0) {
        v->status = TRANSCODE_READY;
        v->reason[0] = '\0';
        v->result = *res;
        v->updated_ms = s_now_ms();
        rc = transcode_store_put_version(self->store, txn, v, false);
    }
    if (rc == 0)
        rc = transcode_store_del_job(self->store, txn, claim->version);
    if (rc == 0 && transcode_event_add(txn, TRANSCODE_TOPIC_READY, v) != 0)
        rc = MDB_PANIC;
    bool renamed = false;
    if (rc == 0) {
        /* Under the write lock, so no other worker finishes this version
           meanwhile. A folder already there was left by a worker killed
           between its rename and its commit: nobody was shown it. */
        s_rm_rf(final);
        if (rename(tmp, final) != 0) {
            mb_error(0, "transcode: cannot rename %s to %s: %s", tmp, final, strerror(errno));
            rc = MDB_PANIC;
        } else
            renamed = true;
    }
    if (rc == 0) {
        int dfd = open(self->hls, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        rc = mdb_txn_commit(txn);
        txn = NULL;
    }
    if (txn)
        mdb_txn_abort(txn);
    if (rc && renamed)
        s_rm_rf(final); /* not committed: must not stay visible */
    if (rc == 0)
        mb_info(0, "transcode: version %s of track %s ready: %.1f s, %.2f LUFS, %zu rungs",
                v->version, v->track_id, (double)res->duration_ms / 1000.0,
                res->loudness.integrated_lufs, res->n_rungs);
    free(final);
    free(v);
    return rc;
}

/*  Failure: the master does not decode (`final`), or a transient error
    (the job goes back to the queue after retry_ms, or fails after
    max_attempts). */
static int s_finish_failed(s_claim_t *claim, const char *reason, bool final)
{
    transcode_jobs_t *self = claim->jobs;
    MDB_txn *txn = NULL;
    transcode_job_t job;
    transcode_version_t *v = mb_malloc(sizeof *v);
    int rc = s_begin_owned(claim, &txn, &job);
    if (rc == 0)
        rc = transcode_store_get_version(self->store, txn, claim->version, v);
    if (rc == 0 && (final || job.attempts >= self->opts.max_attempts)) {
        char why[TRANSCODE_REASON_MAX];
        snprintf(why, sizeof why, "%.*s", (int)sizeof why - 1, reason);
        if (!final)
            snprintf(why, sizeof why, "gave up after %u attempts: %.200s", job.attempts, reason);
        mb_warn(0, "transcode: version %s of track %s failed: %s", v->version, v->track_id, why);
        rc = s_fail_version(self, txn, v, why);
    } else if (rc == 0) {
        mb_warn(0, "transcode: version %s, attempt %u failed (retrying in %d ms): %s", v->version,
                job.attempts, self->opts.retry_ms, reason);
        job.lease_until_ms = s_now_ms() + self->opts.retry_ms;
        memset(&job.owner, 0, sizeof job.owner);
        v->status = TRANSCODE_QUEUED;
        snprintf(v->reason, sizeof v->reason, "%.*s", (int)sizeof v->reason - 1, reason);
        v->updated_ms = s_now_ms();
        rc = transcode_store_put_job(self->store, txn, claim->version, &job);
        if (rc == 0)
            rc = transcode_store_put_version(self->store, txn, v, false);
    }
    if (txn)
        rc = rc == 0 ? mdb_txn_commit(txn) : (mdb_txn_abort(txn), rc);
    free(v);
    return rc;
}

/*  Stopping: gives the job back at once, the attempt not counted. */
static int s_release(s_claim_t *claim)
{
    transcode_jobs_t *self = claim->jobs;
    MDB_txn *txn = NULL;
    transcode_job_t job;
    transcode_version_t *v = mb_malloc(sizeof *v);
    int rc = s_begin_owned(claim, &txn, &job);
    if (rc == 0)
        rc = transcode_store_get_version(self->store, txn, claim->version, v);
    if (rc == 0) {
        job.lease_until_ms = 0;
        if (job.attempts > 0)
            job.attempts--;
        memset(&job.owner, 0, sizeof job.owner);
        v->status = TRANSCODE_QUEUED;
        v->attempts = job.attempts;
        v->updated_ms = s_now_ms();
        rc = transcode_store_put_job(self->store, txn, claim->version, &job);
        if (rc == 0)
            rc = transcode_store_put_version(self->store, txn, v, false);
    }
    if (txn)
        rc = rc == 0 ? mdb_txn_commit(txn) : (mdb_txn_abort(txn), rc);
    if (rc == 0)
        mb_info(0, "transcode: version %s given back (stopping)", claim->version);
    free(v);
    return rc;
}

/* ---- running --------------------------------------------------------------------- */

static int s_mkdir(const char *path)
{
    return mkdir(path, 0755) == 0 || errno == EEXIST ? 0 : -1;
}

int transcode_jobs_run_one(transcode_jobs_t *self, bool *ran)
{
    *ran = false;
    transcode_version_t *v = mb_malloc(sizeof *v);
    s_claim_t claim = {.jobs = self};
    int rc = s_claim(self, &claim, v);
    if (rc || !claim.version[0]) {
        free(v);
        if (rc)
            mb_error(0, "transcode: claiming a job failed: %s", mdb_strerror(rc));
        return rc;
    }
    *ran = true;
    mb_info(0, "transcode: version %s of track %s: attempt %u", v->version, v->track_id,
            v->attempts);
    s_remove_tmp(self, claim.version, NULL);
    char *tmp = NULL, *master = mb_blob_path(self->blobs, v->master);
    if (asprintf(&tmp, "%s/%s%s-%016" PRIx64, self->hls, S_TMP_PREFIX, claim.version, claim.token) <
        0)
        abort();
    char why[512] = "";
    transcode_ladder_result_t *res = mb_malloc(sizeof *res);
    int lrc;
    if (s_mkdir(self->hls) != 0 || s_mkdir(tmp) != 0) {
        snprintf(why, sizeof why, "cannot create %s: %s", tmp, strerror(errno));
        lrc = MB_EIO;
    } else if (!master || access(master, R_OK) != 0) {
        snprintf(why, sizeof why, "the master blob %s is not in the blob store", v->master);
        lrc = MB_EPROTO;
    } else {
        transcode_ladder_opts_t opts = {
            .input = master, .out_dir = tmp, .lossless = true, .tick = s_tick, .tick_arg = &claim};
        lrc = transcode_ladder_run(&opts, res, why, sizeof why);
    }
    if (lrc == 0)
        rc = s_finish_ready(&claim, tmp, res);
    else if (claim.lost)
        rc = 0; /* someone else has it, or it was removed */
    else if (lrc == MB_EINTR)
        rc = s_release(&claim);
    else
        rc = s_finish_failed(&claim, why, lrc == MB_EPROTO);
    if (rc == MDB_NOTFOUND)
        rc = 0; /* lost at the very end: nothing of ours to change */
    if (rc)
        mb_error(0,
                 "transcode: finishing version %s failed: %s (the lease will run out and "
                 "the job be done again)",
                 claim.version, mdb_strerror(rc));
    s_rm_rf(tmp); /* gone already when renamed */
    free(tmp);
    free(master);
    free(res);
    free(v);
    return 0;
}

/* ---- threads --------------------------------------------------------------------- */

static void s_wait(transcode_jobs_t *self)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += S_IDLE_WAIT_MS / 1000;
    until.tv_nsec += (long)(S_IDLE_WAIT_MS % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&self->lock);
    while (!self->kicked && !atomic_load(&self->stop) && !mb_signal_stop_requested())
        if (pthread_cond_timedwait(&self->wake, &self->lock, &until) != 0)
            break;
    self->kicked = false;
    pthread_mutex_unlock(&self->lock);
}

static void *s_thread_main(void *arg)
{
    transcode_jobs_t *self = arg;
    while (!atomic_load(&self->stop) && !mb_signal_stop_requested()) {
        bool ran = false;
        transcode_jobs_run_one(self, &ran);
        if (!ran)
            s_wait(self);
    }
    return NULL;
}

int transcode_jobs_start(transcode_jobs_t *self, unsigned threads)
{
    s_mkdir(self->hls);
    s_remove_tmp(self, NULL, s_no_job);
    if (threads > S_THREADS_MAX)
        threads = S_THREADS_MAX;
    sigset_t blocked, old;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGINT);
    pthread_sigmask(SIG_BLOCK, &blocked, &old);
    int rc = 0;
    for (unsigned i = 0; i < threads && rc == 0; i++) {
        rc = pthread_create(&self->threads[i], NULL, s_thread_main, self);
        if (rc == 0)
            self->n_threads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        mb_error(0, "transcode: cannot start a job thread: %s", strerror(rc));
        return MB_EIO;
    }
    return 0;
}

void transcode_jobs_kick(transcode_jobs_t *self)
{
    pthread_mutex_lock(&self->lock);
    self->kicked = true;
    pthread_cond_broadcast(&self->wake);
    pthread_mutex_unlock(&self->lock);
}

void transcode_jobs_destroy(transcode_jobs_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    transcode_jobs_t *self = *self_p;
    atomic_store(&self->stop, true);
    transcode_jobs_kick(self);
    for (unsigned i = 0; i < self->n_threads; i++)
        pthread_join(self->threads[i], NULL);
    pthread_cond_destroy(&self->wake);
    pthread_mutex_destroy(&self->lock);
    free(self->hls);
    free(self);
    *self_p = NULL;
}
