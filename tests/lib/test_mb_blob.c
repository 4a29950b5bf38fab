/*  mb_blob: the content-addressed store. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "mb_blob.h"
#include "mb_error.h"

static char s_dir[64];
static mb_blob_store_t *s_store;

static int s_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void s_setup(void)
{
    strcpy(s_dir, "/tmp/test_mb_blob.XXXXXX");
    cr_assert_not_null(mkdtemp(s_dir));
    char store_dir[128];
    snprintf(store_dir, sizeof store_dir, "%s/data/blobs", s_dir);
    cr_assert_eq(mb_blob_store_open(store_dir, &s_store), 0);
}

static void s_teardown(void)
{
    mb_blob_store_destroy(&s_store);
    nftw(s_dir, s_rm, 16, FTW_DEPTH | FTW_PHYS);
}

/*  Expected hex name of `len` bytes, computed independently. */
static void s_expected(const void *data, size_t len, char hex[MB_BLOB_HEX_LEN + 1])
{
    unsigned char hash[32];
    crypto_generichash(hash, sizeof hash, data, len, NULL, 0);
    sodium_bin2hex(hex, MB_BLOB_HEX_LEN + 1, hash, sizeof hash);
}

/*  Files in the store's tmp/ folder. */
static int s_tmp_count(void)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls -A %s/data/blobs/tmp | wc -l", s_dir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    cr_assert_eq(fscanf(p, "%d", &n), 1);
    pclose(p);
    return n;
}

TestSuite(mb_blob, .init = s_setup, .fini = s_teardown);

Test(mb_blob, usage_write_in_chunks_then_commit)
{
    mb_blob_writer_t *w;
    cr_assert_eq(mb_blob_writer_new(s_store, 1 << 20, &w), 0);
    cr_assert_eq(mb_blob_writer_write(w, "hello, ", 7), 0);
    cr_assert_eq(mb_blob_writer_write(w, "world", 5), 0);
    cr_assert_eq(mb_blob_writer_size(w), 12);
    char hex[MB_BLOB_HEX_LEN + 1];
    uint64_t size = 0;
    bool created = false;
    cr_assert_eq(mb_blob_writer_commit(&w, hex, &size, &created), 0);
    cr_assert_null(w);
    cr_assert_eq(size, 12);
    cr_assert(created);

    char expected[MB_BLOB_HEX_LEN + 1];
    s_expected("hello, world", 12, expected);
    cr_assert_str_eq(hex, expected);

    char *path = mb_blob_path(s_store, hex);
    char want[256];
    snprintf(want, sizeof want, "%s/data/blobs/%.2s/%s", s_dir, hex, hex);
    cr_assert_str_eq(path, want);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    char buf[32] = {0};
    cr_assert_eq(fread(buf, 1, sizeof buf, f), 12);
    fclose(f);
    cr_assert_str_eq(buf, "hello, world");
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0644);
    free(path);

    uint64_t got = 0;
    cr_assert_eq(mb_blob_exists(s_store, hex, &got), 0);
    cr_assert_eq(got, 12);
    cr_assert_eq(mb_blob_verify(s_store, hex), 0);
    cr_assert_eq(s_tmp_count(), 0);
}

Test(mb_blob, same_bytes_twice_is_idempotent)
{
    char a[MB_BLOB_HEX_LEN + 1], b[MB_BLOB_HEX_LEN + 1];
    bool created = false;
    cr_assert_eq(mb_blob_put_data(s_store, "abc", 3, a, &created), 0);
    cr_assert(created);
    cr_assert_eq(mb_blob_put_data(s_store, "abc", 3, b, &created), 0);
    cr_assert_not(created);
    cr_assert_str_eq(a, b);
    cr_assert_eq(s_tmp_count(), 0);
}

Test(mb_blob, empty_blob)
{
    char hex[MB_BLOB_HEX_LEN + 1], expected[MB_BLOB_HEX_LEN + 1];
    cr_assert_eq(mb_blob_put_data(s_store, "", 0, hex, NULL), 0);
    s_expected("", 0, expected);
    cr_assert_str_eq(hex, expected);
    uint64_t size = 1;
    cr_assert_eq(mb_blob_exists(s_store, hex, &size), 0);
    cr_assert_eq(size, 0);
}

Test(mb_blob, limit_refuses_and_leaves_nothing)
{
    mb_blob_writer_t *w;
    cr_assert_eq(mb_blob_writer_new(s_store, 10, &w), 0);
    cr_assert_eq(mb_blob_writer_write(w, "0123456789", 10), 0); /* exactly the limit */
    cr_assert_eq(mb_blob_writer_write(w, "x", 1), MB_ETOOBIG);
    cr_assert_eq(mb_blob_writer_write(w, "", 0), MB_EINVAL); /* failed: only destroy is left */
    char hex[MB_BLOB_HEX_LEN + 1];
    cr_assert_eq(mb_blob_writer_commit(&w, hex, NULL, NULL), MB_EINVAL);
    cr_assert_null(w);
    cr_assert_str_eq(hex, "");
    cr_assert_eq(s_tmp_count(), 0);
}

Test(mb_blob, abandoned_writer_removes_its_temporary_file)
{
    mb_blob_writer_t *w;
    cr_assert_eq(mb_blob_writer_new(s_store, MB_BLOB_NO_LIMIT, &w), 0);
    cr_assert_eq(mb_blob_writer_write(w, "partial", 7), 0);
    cr_assert_eq(s_tmp_count(), 1);
    mb_blob_writer_destroy(&w);
    mb_blob_writer_destroy(&w);
    cr_assert_eq(s_tmp_count(), 0);
}

Test(mb_blob, put_file_large_in_many_reads)
{
    char path[128];
    snprintf(path, sizeof path, "%s/big", s_dir);
    size_t len = 3 * (1 << 20) + 12345;
    unsigned char *data = malloc(len);
    randombytes_buf(data, len);
    FILE *f = fopen(path, "wb");
    cr_assert_eq(fwrite(data, 1, len, f), len);
    fclose(f);

    char hex[MB_BLOB_HEX_LEN + 1], expected[MB_BLOB_HEX_LEN + 1], hashed[MB_BLOB_HEX_LEN + 1];
    uint64_t size;
    cr_assert_eq(mb_blob_put_file(s_store, path, MB_BLOB_NO_LIMIT, hex, &size, NULL), 0);
    s_expected(data, len, expected);
    cr_assert_str_eq(hex, expected);
    cr_assert_eq(size, len);
    cr_assert_eq(mb_blob_hash_file(path, hashed), 0);
    cr_assert_str_eq(hashed, expected);
    cr_assert_eq(mb_blob_put_file(s_store, path, len - 1, hex, &size, NULL), MB_ETOOBIG);
    cr_assert_eq(mb_blob_put_file(s_store, "/nonexistent/x", 10, hex, &size, NULL), MB_ENOTFOUND);
    free(data);
}

Test(mb_blob, names_are_checked)
{
    cr_assert(
        mb_blob_hex_valid("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", 64));
    cr_assert_not(
        mb_blob_hex_valid("0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", 64));
    cr_assert_not(mb_blob_hex_valid("0123", 4));
    cr_assert_not(mb_blob_hex_valid("../../../../etc/passwd", 22));
    cr_assert_null(mb_blob_path(s_store, "../etc/passwd"));
    cr_assert_eq(mb_blob_exists(s_store, "zz", NULL), MB_EINVAL);
    cr_assert_eq(mb_blob_remove(s_store, "zz"), MB_EINVAL);
    cr_assert_eq(mb_blob_exists(s_store,
                                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                                NULL),
                 MB_ENOTFOUND);
}

Test(mb_blob, remove_and_verify_damage)
{
    char hex[MB_BLOB_HEX_LEN + 1];
    cr_assert_eq(mb_blob_put_data(s_store, "to be damaged", 13, hex, NULL), 0);
    char *path = mb_blob_path(s_store, hex);
    FILE *f = fopen(path, "r+b");
    fputc('T', f);
    fclose(f);
    cr_assert_eq(mb_blob_verify(s_store, hex), MB_EPROTO);
    cr_assert_eq(mb_blob_remove(s_store, hex), 0);
    cr_assert_eq(mb_blob_remove(s_store, hex), MB_ENOTFOUND);
    cr_assert_eq(mb_blob_verify(s_store, hex), MB_ENOTFOUND);
    free(path);
}

Test(mb_blob, sweep_removes_only_old_temporary_files)
{
    mb_blob_writer_t *fresh;
    cr_assert_eq(mb_blob_writer_new(s_store, MB_BLOB_NO_LIMIT, &fresh), 0);
    char old[256];
    snprintf(old, sizeof old, "%s/data/blobs/tmp/blob-crashed", s_dir);
    FILE *f = fopen(old, "w");
    fputs("left by a crash", f);
    fclose(f);
    struct timeval times[2] = {{.tv_sec = time(NULL) - 7200}, {.tv_sec = time(NULL) - 7200}};
    cr_assert_eq(utimes(old, times), 0);
    unsigned removed = 0;
    cr_assert_eq(mb_blob_store_sweep(s_store, 3600, &removed), 0);
    cr_assert_eq(removed, 1);
    cr_assert_eq(access(old, F_OK), -1);
    cr_assert_eq(s_tmp_count(), 1); /* the writer in progress */
    cr_assert_eq(mb_blob_writer_write(fresh, "x", 1), 0);
    char hex[MB_BLOB_HEX_LEN + 1];
    cr_assert_eq(mb_blob_writer_commit(&fresh, hex, NULL, NULL), 0);
}

Test(mb_blob, open_fails_cleanly_on_a_file)
{
    char path[128];
    snprintf(path, sizeof path, "%s/afile", s_dir);
    FILE *f = fopen(path, "w");
    fclose(f);
    mb_blob_store_t *store = (void *)1;
    cr_assert_eq(mb_blob_store_open(path, &store), MB_EIO);
    cr_assert_null(store);
}
