/*  mb_blob — the content-addressed blob store. */
#include "mb_blob.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mb_alloc.h"
#include "mb_error.h"
#include "mb_log.h"

#define S_TMP "tmp"
#define S_READ_CHUNK (1 << 20) /* bytes read at a time by put_fd, verify and hash_file */

struct mb_blob_store {
    char *dir; /* as given to open */
    char *tmp; /* dir/tmp */
};

struct mb_blob_writer {
    mb_blob_store_t *store;
    char *tmp_path;                /* the temporary file */
    int fd;                        /* open on it; -1 once closed */
    uint64_t size;                 /* bytes written */
    uint64_t limit;                /* most bytes allowed */
    bool failed;                   /* a write failed: only destroy is left */
    crypto_generichash_state hash; /* BLAKE2b over the bytes so far */
};

/* ---- helpers ---------------------------------------------------------- */

/*  mkdir -p. Returns 0 or -1 with errno. */
static int s_mkdir_p(const char *path)
{
    char *copy = mb_strdup(path);
    int rc = 0;
    for (char *p = copy + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(copy, 0755) != 0 && errno != EEXIST) {
                rc = -1;
                break;
            }
            *p = saved;
            if (saved == '\0')
                break;
        }
    }
    free(copy);
    struct stat st;
    if (rc == 0 && (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))) {
        errno = ENOTDIR;
        rc = -1;
    }
    return rc;
}

/*  fsyncs folder `path`, so a rename or create in it is durable. */
static int s_fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

static void s_to_hex(const unsigned char hash[MB_BLOB_HASH_LEN], char hex[MB_BLOB_HEX_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < MB_BLOB_HASH_LEN; i++) {
        hex[2 * i] = digits[hash[i] >> 4];
        hex[2 * i + 1] = digits[hash[i] & 15];
    }
    hex[MB_BLOB_HEX_LEN] = '\0';
}

static void s_sodium_init(void)
{
    /* Thread-safe and cheap after the first call. */
    if (sodium_init() < 0) {
        mb_error(0, "libsodium failed to initialise");
        abort();
    }
}

/*  Writes all `len` bytes, retrying short writes and EINTR. */
static int s_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/*  read() retrying EINTR. */
static ssize_t s_read(int fd, void *buf, size_t len)
{
    ssize_t n;
    do
        n = read(fd, buf, len);
    while (n < 0 && errno == EINTR);
    return n;
}

/*  Hashes everything readable from `fd` into hex. */
static int s_hash_fd(int fd, char hex[MB_BLOB_HEX_LEN + 1])
{
    crypto_generichash_state state;
    crypto_generichash_init(&state, NULL, 0, MB_BLOB_HASH_LEN);
    unsigned char *buf = mb_malloc(S_READ_CHUNK);
    ssize_t n;
    while ((n = s_read(fd, buf, S_READ_CHUNK)) > 0)
        crypto_generichash_update(&state, buf, (size_t)n);
    free(buf);
    if (n < 0)
        return MB_EIO;
    unsigned char hash[MB_BLOB_HASH_LEN];
    crypto_generichash_final(&state, hash, sizeof hash);
    s_to_hex(hash, hex);
    return 0;
}

/* ---- the store --------------------------------------------------------- */

int mb_blob_store_open(const char *dir, mb_blob_store_t **store)
{
    *store = NULL;
    s_sodium_init();
    mb_blob_store_t *self = mb_calloc(1, sizeof *self);
    self->dir = mb_strdup(dir);
    if (asprintf(&self->tmp, "%s/%s", dir, S_TMP) < 0)
        abort();
    if (s_mkdir_p(self->tmp) != 0) {
        mb_error(0, "blob store: cannot create '%s': %s", self->tmp, strerror(errno));
        mb_blob_store_destroy(&self);
        return MB_EIO;
    }
    *store = self;
    return 0;
}

void mb_blob_store_destroy(mb_blob_store_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    mb_blob_store_t *self = *self_p;
    free(self->dir);
    free(self->tmp);
    free(self);
    *self_p = NULL;
}

const char *mb_blob_store_dir(const mb_blob_store_t *self)
{
    return self->dir;
}

bool mb_blob_hex_valid(const char *s, size_t len)
{
    if (!s || len != MB_BLOB_HEX_LEN)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

char *mb_blob_path(const mb_blob_store_t *self, const char *hex)
{
    if (!hex || !mb_blob_hex_valid(hex, strnlen(hex, MB_BLOB_HEX_LEN + 1)))
        return NULL;
    char *path;
    if (asprintf(&path, "%s/%.2s/%s", self->dir, hex, hex) < 0)
        abort();
    return path;
}

int mb_blob_exists(const mb_blob_store_t *self, const char *hex, uint64_t *size)
{
    char *path = mb_blob_path(self, hex);
    if (!path)
        return MB_EINVAL;
    struct stat st;
    int rc = stat(path, &st);
    int saved = errno;
    free(path);
    if (rc != 0)
        return saved == ENOENT || saved == ENOTDIR ? MB_ENOTFOUND : MB_EIO;
    if (!S_ISREG(st.st_mode))
        return MB_EIO;
    if (size)
        *size = (uint64_t)st.st_size;
    return 0;
}

int mb_blob_remove(const mb_blob_store_t *self, const char *hex)
{
    char *path = mb_blob_path(self, hex);
    if (!path)
        return MB_EINVAL;
    int rc = unlink(path);
    int saved = errno;
    free(path);
    if (rc != 0)
        return saved == ENOENT || saved == ENOTDIR ? MB_ENOTFOUND : MB_EIO;
    return 0;
}

int mb_blob_verify(const mb_blob_store_t *self, const char *hex)
{
    char *path = mb_blob_path(self, hex);
    if (!path)
        return MB_EINVAL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int saved = errno;
    free(path);
    if (fd < 0)
        return saved == ENOENT || saved == ENOTDIR ? MB_ENOTFOUND : MB_EIO;
    char actual[MB_BLOB_HEX_LEN + 1];
    int rc = s_hash_fd(fd, actual);
    close(fd);
    if (rc)
        return rc;
    return strcmp(actual, hex) == 0 ? 0 : MB_EPROTO;
}

int mb_blob_store_sweep(mb_blob_store_t *self, unsigned age_s, unsigned *removed)
{
    if (removed)
        *removed = 0;
    DIR *dir = opendir(self->tmp);
    if (!dir)
        return MB_EIO;
    time_t now = time(NULL);
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.')
            continue;
        struct stat st;
        if (fstatat(dirfd(dir), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(st.st_mode) || now - st.st_mtime <= (time_t)age_s)
            continue;
        if (unlinkat(dirfd(dir), entry->d_name, 0) == 0 && removed)
            (*removed)++;
    }
    closedir(dir);
    return 0;
}

/* ---- writing ----------------------------------------------------------- */

int mb_blob_writer_new(mb_blob_store_t *self, uint64_t limit, mb_blob_writer_t **writer)
{
    *writer = NULL;
    s_sodium_init();
    mb_blob_writer_t *w = mb_calloc(1, sizeof *w);
    w->store = self;
    w->limit = limit;
    if (asprintf(&w->tmp_path, "%s/blob-XXXXXX", self->tmp) < 0)
        abort();
    w->fd = mkostemp(w->tmp_path, O_CLOEXEC);
    if (w->fd < 0) {
        int saved = errno;
        mb_warn(0, "blob store: cannot create a temporary file in '%s': %s", self->tmp,
                strerror(saved));
        free(w->tmp_path);
        free(w);
        errno = saved;
        return MB_EIO;
    }
    /* mkstemp makes 0600; blobs are read by other processes (the
       gateway serves them), possibly under another user. */
    fchmod(w->fd, 0644);
    crypto_generichash_init(&w->hash, NULL, 0, MB_BLOB_HASH_LEN);
    *writer = w;
    return 0;
}

int mb_blob_writer_write(mb_blob_writer_t *self, const void *data, size_t len)
{
    if (self->failed)
        return MB_EINVAL;
    if (len > self->limit - self->size || self->size + len < self->size) {
        self->failed = true;
        return MB_ETOOBIG;
    }
    if (s_write_all(self->fd, data, len) != 0) {
        self->failed = true;
        return MB_EIO;
    }
    crypto_generichash_update(&self->hash, data, len);
    self->size += len;
    return 0;
}

uint64_t mb_blob_writer_size(const mb_blob_writer_t *self)
{
    return self->size;
}

/*  Moves the temporary file to its name. Returns 0 or MB_EIO. */
static int s_install(mb_blob_writer_t *self, const char *hex, bool *created)
{
    char *sub, *path;
    if (asprintf(&sub, "%s/%.2s", self->store->dir, hex) < 0 ||
        asprintf(&path, "%s/%s", sub, hex) < 0)
        abort();
    int rc = 0;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
        /* Already stored: same bytes by construction. Nothing to make
           durable beyond what is there. */
        unlink(self->tmp_path);
        *created = false;
        goto done;
    }
    bool new_sub = false;
    if (mkdir(sub, 0755) == 0)
        new_sub = true;
    else if (errno != EEXIST)
        rc = MB_EIO;
    /* The file's bytes reach the disk before its name does: after a crash
       a blob that has its name is whole. */
    if (rc == 0 && fsync(self->fd) != 0)
        rc = MB_EIO;
    if (rc == 0 && rename(self->tmp_path, path) != 0)
        rc = MB_EIO;
    if (rc == 0 && s_fsync_dir(sub) != 0)
        rc = MB_EIO;
    if (rc == 0 && new_sub && s_fsync_dir(self->store->dir) != 0)
        rc = MB_EIO;
    if (rc)
        mb_warn(0, "blob store: cannot store blob %s: %s", hex, strerror(errno));
    *created = true;
done:
    free(sub);
    free(path);
    return rc;
}

int mb_blob_writer_commit(mb_blob_writer_t **self_p, char hex[MB_BLOB_HEX_LEN + 1], uint64_t *size,
                          bool *created)
{
    mb_blob_writer_t *self = *self_p;
    hex[0] = '\0';
    if (self->failed) {
        mb_blob_writer_destroy(self_p);
        return MB_EINVAL;
    }
    unsigned char hash[MB_BLOB_HASH_LEN];
    crypto_generichash_final(&self->hash, hash, sizeof hash);
    s_to_hex(hash, hex);
    bool made = false;
    int rc = s_install(self, hex, &made);
    if (rc == 0) {
        if (size)
            *size = self->size;
        if (created)
            *created = made;
        free(self->tmp_path);
        self->tmp_path = NULL; /* moved or removed: nothing for destroy to unlink */
    } else
        hex[0] = '\0';
    mb_blob_writer_destroy(self_p);
    return rc;
}

void mb_blob_writer_destroy(mb_blob_writer_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    mb_blob_writer_t *self = *self_p;
    if (self->fd >= 0)
        close(self->fd);
    if (self->tmp_path) {
        unlink(self->tmp_path);
        free(self->tmp_path);
    }
    sodium_memzero(&self->hash, sizeof self->hash);
    free(self);
    *self_p = NULL;
}

/* ---- whole files ------------------------------------------------------- */

int mb_blob_put_fd(mb_blob_store_t *self, int fd, uint64_t limit, char hex[MB_BLOB_HEX_LEN + 1],
                   uint64_t *size, bool *created)
{
    hex[0] = '\0';
    mb_blob_writer_t *w;
    int rc = mb_blob_writer_new(self, limit, &w);
    if (rc)
        return rc;
    char *buf = mb_malloc(S_READ_CHUNK);
    ssize_t n;
    while ((n = s_read(fd, buf, S_READ_CHUNK)) > 0)
        if ((rc = mb_blob_writer_write(w, buf, (size_t)n)) != 0)
            break;
    free(buf);
    if (rc == 0 && n < 0)
        rc = MB_EIO;
    if (rc) {
        mb_blob_writer_destroy(&w);
        return rc;
    }
    return mb_blob_writer_commit(&w, hex, size, created);
}

int mb_blob_put_file(mb_blob_store_t *self, const char *path, uint64_t limit,
                     char hex[MB_BLOB_HEX_LEN + 1], uint64_t *size, bool *created)
{
    hex[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT || errno == ENOTDIR ? MB_ENOTFOUND : MB_EIO;
    int rc = mb_blob_put_fd(self, fd, limit, hex, size, created);
    close(fd);
    return rc;
}

int mb_blob_put_data(mb_blob_store_t *self, const void *data, size_t len,
                     char hex[MB_BLOB_HEX_LEN + 1], bool *created)
{
    hex[0] = '\0';
    mb_blob_writer_t *w;
    int rc = mb_blob_writer_new(self, MB_BLOB_NO_LIMIT, &w);
    if (rc == 0 && (rc = mb_blob_writer_write(w, data, len)) != 0)
        mb_blob_writer_destroy(&w);
    if (rc)
        return rc;
    return mb_blob_writer_commit(&w, hex, NULL, created);
}

int mb_blob_hash_file(const char *path, char hex[MB_BLOB_HEX_LEN + 1])
{
    s_sodium_init();
    hex[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT || errno == ENOTDIR ? MB_ENOTFOUND : MB_EIO;
    int rc = s_hash_fd(fd, hex);
    close(fd);
    return rc;
}
