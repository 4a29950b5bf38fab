/*  playlists_store — LMDB databases of the playlists actor (layout in
    README.md). */
#include "playlists_store.h"

#include <stdlib.h>
#include <string.h>

#include "mb_alloc.h"
#include "mb_error.h"
#include "mb_log.h"
#include "mb_msgpack.h"

enum {
    S_PLAYLISTS,      /* playlist id -> playlist record */
    S_DIRS,           /* playlist id -> directory of its item chunks */
    S_CHUNKS,         /* playlist id + u32 chunk number -> chunk of items */
    S_USER_PLAYLISTS, /* DUPSORT user id -> inverted follow stamp + playlist id */
    S_FOLLOWERS,      /* DUPSORT playlist id -> u8 len, user id, follow stamp */
    S_LIBRARY,        /* DUPSORT kind + user id -> inverted stamp + item id */
    S_LIBRARY_INDEX,  /* kind, u8 len, user id, item id -> stamp */
    S_CATALOG,        /* kind + id -> what the catalog published */
    S_DBS
};

static const struct {
    const char *name;
    unsigned flags;
} s_dbs[S_DBS] = {
    [S_PLAYLISTS] = {"playlists", 0},
    [S_DIRS] = {"dirs", 0},
    [S_CHUNKS] = {"chunks", 0},
    [S_USER_PLAYLISTS] = {"user_playlists", MDB_DUPSORT},
    [S_FOLLOWERS] = {"followers", MDB_DUPSORT},
    [S_LIBRARY] = {"library", MDB_DUPSORT},
    [S_LIBRARY_INDEX] = {"library_index", 0},
    [S_CATALOG] = {"catalog", 0},
};

_Static_assert(S_DBS == PLAYLISTS_STORE_DBS, "PLAYLISTS_STORE_DBS counts the databases");

struct playlists_store {
    MDB_dbi dbi[S_DBS];
    size_t chunk_max;
};

#define S_KEY_MAX (2 + 2 * PLAYLISTS_ID_MAX + 8) /* the longest key built here */

/*  A key or value built from parts. */
typedef struct {
    uint8_t bytes[S_KEY_MAX];
    size_t len;
} s_buf_t;

static void s_add(s_buf_t *b, const void *data, size_t len)
{
    memcpy(b->bytes + b->len, data, len);
    b->len += len;
}

static void s_add_byte(s_buf_t *b, uint8_t c)
{
    b->bytes[b->len++] = c;
}

static void s_add_str(s_buf_t *b, playlists_str_t s)
{
    s_add(b, s.ptr, s.len);
}

/*  A length byte then the id: keeps composite keys unambiguous. */
static void s_add_counted(s_buf_t *b, playlists_str_t s)
{
    s_add_byte(b, (uint8_t)s.len);
    s_add(b, s.ptr, s.len);
}

static void s_add64(s_buf_t *b, uint64_t v)
{
    for (int i = 7; i >= 0; i--)
        s_add_byte(b, (uint8_t)(v >> (8 * i)));
}

static uint64_t s_get64(const void *data)
{
    const uint8_t *p = data;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static MDB_val s_val(const s_buf_t *b)
{
    return (MDB_val){.mv_size = b->len, .mv_data = (void *)b->bytes};
}

static MDB_val s_str_val(playlists_str_t s)
{
    return (MDB_val){.mv_size = s.len, .mv_data = (void *)s.ptr};
}

static playlists_str_t s_cstr(const char *s)
{
    return (playlists_str_t){s, strlen(s)};
}

/* ---- open ---------------------------------------------------------------------- */

int playlists_store_open(MDB_env *env, playlists_store_t **self_p)
{
    playlists_store_t *self = mb_calloc(1, sizeof *self);
    self->chunk_max = PLAYLISTS_CHUNK_MAX;
    MDB_txn *txn;
    int rc = mdb_txn_begin(env, NULL, 0, &txn);
    for (int i = 0; rc == 0 && i < S_DBS; i++)
        rc = mdb_dbi_open(txn, s_dbs[i].name, MDB_CREATE | s_dbs[i].flags, &self->dbi[i]);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    if (rc) {
        mb_error(0, "playlists: cannot open the databases: %s", mdb_strerror(rc));
        free(self);
        return rc;
    }
    *self_p = self;
    return 0;
}

void playlists_store_destroy(playlists_store_t **self_p)
{
    if (*self_p) {
        free(*self_p);
        *self_p = NULL;
    }
}

void playlists_store_set_chunk_max(playlists_store_t *self, size_t chunk_max)
{
    if (chunk_max >= 1 && chunk_max <= PLAYLISTS_ITEMS_MAX)
        self->chunk_max = chunk_max;
}

size_t playlists_store_chunk_max(const playlists_store_t *self)
{
    return self->chunk_max;
}

/* ---- playlists -------------------------------------------------------------------- */

int playlists_store_get(playlists_store_t *self, MDB_txn *txn, playlists_str_t id,
                        playlists_playlist_t *p)
{
    MDB_val k = s_str_val(id), v;
    int rc = mdb_get(txn, self->dbi[S_PLAYLISTS], &k, &v);
    if (rc)
        return rc;
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    if (msgpack_unpack_next(&msg, v.mv_data, v.mv_size, NULL) != MSGPACK_UNPACK_SUCCESS ||
        !playlists_playlist_decode(&msg.data, p))
        rc = MDB_CORRUPTED;
    msgpack_unpacked_destroy(&msg);
    return rc;
}

int playlists_store_put(playlists_store_t *self, MDB_txn *txn, const playlists_playlist_t *p)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    playlists_playlist_pack(&pk, p);
    MDB_val k = s_str_val(s_cstr(p->id)), v = {.mv_size = buf.size, .mv_data = buf.data};
    int rc = mdb_put(txn, self->dbi[S_PLAYLISTS], &k, &v, 0);
    msgpack_sbuffer_destroy(&buf);
    return rc;
}

/* ---- item chunks --------------------------------------------------------------------- */

static s_buf_t s_chunk_key(playlists_str_t id, uint32_t no)
{
    s_buf_t b = {.len = 0};
    s_add_str(&b, id);
    for (int i = 3; i >= 0; i--)
        s_add_byte(&b, (uint8_t)(no >> (8 * i)));
    return b;
}

/*  Reads the directory of `id`; an absent one is an empty playlist. */
static int s_dir_load(playlists_store_t *self, MDB_txn *txn, playlists_str_t id,
                      playlists_dir_t *dir)
{
    MDB_val k = s_str_val(id), v;
    int rc = mdb_get(txn, self->dbi[S_DIRS], &k, &v);
    if (rc == MDB_NOTFOUND) {
        dir->n = 0;
        dir->total = 0;
        dir->next_no = 0;
        return 0;
    }
    if (rc)
        return rc;
    return playlists_dir_decode(v.mv_data, v.mv_size, dir) == 0 ? 0 : MDB_CORRUPTED;
}

static int s_chunk_get(playlists_store_t *self, MDB_txn *txn, playlists_str_t id, uint32_t no,
                       MDB_val *v)
{
    s_buf_t key = s_chunk_key(id, no);
    MDB_val k = s_val(&key);
    int rc = mdb_get(txn, self->dbi[S_CHUNKS], &k, v);
    /* The directory names it: missing is corruption, not absence. */
    return rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc;
}

/*  Appends the items of chunk entry `ref` to *items. */
static int s_chunk_load(playlists_store_t *self, MDB_txn *txn, playlists_str_t id,
                        playlists_chunk_ref_t ref, playlists_items_t *items)
{
    MDB_val v;
    int rc = s_chunk_get(self, txn, id, ref.no, &v);
    if (rc)
        return rc;
    return playlists_chunk_decode(v.mv_data, v.mv_size, ref.count, items) == 0 ? 0 : MDB_CORRUPTED;
}

void playlists_window_release(playlists_window_t *w)
{
    playlists_dir_release(&w->dir);
    playlists_items_release(&w->items);
}

int playlists_store_window_open(playlists_store_t *self, MDB_txn *txn, playlists_str_t id,
                                uint64_t from, uint64_t to, playlists_window_t *w)
{
    int rc = s_dir_load(self, txn, id, &w->dir);
    w->items.n = 0;
    w->c0 = w->c1 = 0;
    w->first = 0;
    if (rc || w->dir.n == 0)
        return rc;
    uint64_t last_first;
    w->c0 = playlists_dir_find(&w->dir, from, &w->first);
    w->c1 = to > from ? playlists_dir_find(&w->dir, to - 1, &last_first) + 1 : w->c0 + 1;
    for (size_t c = w->c0; rc == 0 && c < w->c1; c++)
        rc = s_chunk_load(self, txn, id, w->dir.chunks[c], &w->items);
    return rc;
}

/*  Pulls one neighbouring chunk into the window: the next one, else the
    previous one. */
static int s_absorb(playlists_store_t *self, MDB_txn *txn, playlists_str_t id,
                    playlists_window_t *w)
{
    if (w->c1 < w->dir.n)
        return s_chunk_load(self, txn, id, w->dir.chunks[w->c1++], &w->items);
    playlists_items_t before = {0};
    playlists_chunk_ref_t ref = w->dir.chunks[--w->c0];
    int rc = s_chunk_load(self, txn, id, ref, &before);
    if (rc == 0) {
        playlists_items_insert(&w->items, 0, before.v, before.n);
        w->first -= ref.count;
    }
    playlists_items_release(&before);
    return rc;
}

int playlists_store_window_save(playlists_store_t *self, MDB_txn *txn, playlists_str_t id,
                                playlists_window_t *w, uint64_t *total)
{
    /* Chunks below a quarter full are merged with a neighbour, so a
       playlist never has more than about 4 x 10,000 / chunk_max chunks
       however it is edited. */
    size_t min = self->chunk_max / 4 ? self->chunk_max / 4 : 1;
    int rc = 0;
    while (rc == 0 && w->items.n < min && (w->c0 > 0 || w->c1 < w->dir.n))
        rc = s_absorb(self, txn, id, w);
    if (rc)
        return rc;
    size_t n = w->items.n, k = (n + self->chunk_max - 1) / self->chunk_max;
    size_t old = w->c1 - w->c0, at = 0;
    playlists_chunk_ref_t *refs = mb_malloc((k ? k : 1) * sizeof *refs);
    for (size_t j = 0; rc == 0 && j < k; j++) {
        /* Even sizes: every chunk of the window gets n/k or n/k + 1. */
        size_t count = n / k + (j < n % k);
        refs[j].count = (uint32_t)count;
        refs[j].no = j < old ? w->dir.chunks[w->c0 + j].no : w->dir.next_no++;
        s_buf_t key = s_chunk_key(id, refs[j].no);
        MDB_val kv = s_val(&key);
        MDB_val v = {.mv_size = playlists_chunk_size(w->items.v + at, count)};
        rc = mdb_put(txn, self->dbi[S_CHUNKS], &kv, &v, MDB_RESERVE);
        if (rc == 0)
            playlists_chunk_write(w->items.v + at, count, v.mv_data);
        at += count;
    }
    for (size_t j = k; rc == 0 && j < old; j++) {
        s_buf_t key = s_chunk_key(id, w->dir.chunks[w->c0 + j].no);
        MDB_val kv = s_val(&key);
        rc = mdb_del(txn, self->dbi[S_CHUNKS], &kv, NULL);
    }
    if (rc == 0) {
        playlists_dir_splice(&w->dir, w->c0, w->c1, refs, k);
        w->c1 = w->c0 + k;
        MDB_val kv = s_str_val(id), v = {.mv_size = playlists_dir_size(&w->dir)};
        rc = mdb_put(txn, self->dbi[S_DIRS], &kv, &v, MDB_RESERVE);
        if (rc == 0)
            playlists_dir_write(&w->dir, v.mv_data);
        if (total)
            *total = w->dir.total;
    }
    free(refs);
    return rc;
}

int playlists_store_items_each(playlists_store_t *self, MDB_txn *txn, playlists_str_t id,
                               uint64_t offset, uint64_t limit, playlists_item_fn *each, void *arg)
{
    playlists_dir_t dir = {0};
    int rc = s_dir_load(self, txn, id, &dir);
    if (rc || offset >= dir.total || limit == 0) {
        playlists_dir_release(&dir);
        return rc;
    }
    uint64_t first, pos = offset, end = offset + limit;
    for (size_t c = playlists_dir_find(&dir, offset, &first); rc == 0 && c < dir.n && pos < end;
         c++) {
        MDB_val v;
        if ((rc = s_chunk_get(self, txn, id, dir.chunks[c].no, &v)) != 0)
            break;
        const uint8_t *p = v.mv_data, *stop = p + v.mv_size;
        for (uint32_t i = 0; rc == 0 && i < dir.chunks[c].count && pos < end; i++) {
            playlists_item_view_t item;
            if (playlists_chunk_next(&p, stop, &item) != 0)
                rc = MDB_CORRUPTED;
            else if (first + i >= pos)
                rc = each(arg, pos++, &item);
        }
        first += dir.chunks[c].count;
    }
    playlists_dir_release(&dir);
    return rc;
}

/* ---- follows ------------------------------------------------------------------------------ */

/*  The follow entry's stamp: ms * 64 + 63, as library stamps are made. */
static uint64_t s_follow_stamp(int64_t ms)
{
    return (uint64_t)(ms < 0 ? 0 : ms) * 64 + 63;
}

/*  Finds `user` among the followers of `pid`: positions *cur on the
    entry and sets *stamp. Returns 0 or MDB_NOTFOUND. */
static int s_find_follower(MDB_cursor *cur, playlists_str_t pid, playlists_str_t user,
                           uint64_t *stamp)
{
    s_buf_t prefix = {.len = 0};
    s_add_counted(&prefix, user);
    MDB_val k = s_str_val(pid), v = s_val(&prefix);
    int rc = mdb_cursor_get(cur, &k, &v, MDB_GET_BOTH_RANGE);
    if (rc)
        return rc;
    if (v.mv_size != prefix.len + 8 || memcmp(v.mv_data, prefix.bytes, prefix.len) != 0)
        return MDB_NOTFOUND;
    *stamp = s_get64((const uint8_t *)v.mv_data + prefix.len);
    return 0;
}

static s_buf_t s_user_playlist_value(uint64_t stamp, playlists_str_t pid)
{
    s_buf_t b = {.len = 0};
    s_add64(&b, UINT64_MAX - stamp);
    s_add_str(&b, pid);
    return b;
}

int playlists_store_follows(playlists_store_t *self, MDB_txn *txn, playlists_str_t pid,
                            playlists_str_t user, bool *yes)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, self->dbi[S_FOLLOWERS], &cur);
    if (rc)
        return rc;
    uint64_t stamp;
    rc = s_find_follower(cur, pid, user, &stamp);
    mdb_cursor_close(cur);
    *yes = rc == 0;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int playlists_store_follow(playlists_store_t *self, MDB_txn *txn, playlists_str_t pid,
                           playlists_str_t user, int64_t ms, bool *changed)
{
    bool yes;
    int rc = playlists_store_follows(self, txn, pid, user, &yes);
    *changed = false;
    if (rc || yes)
        return rc;
    uint64_t stamp = s_follow_stamp(ms);
    s_buf_t fv = {.len = 0};
    s_add_counted(&fv, user);
    s_add64(&fv, stamp);
    MDB_val k = s_str_val(pid), v = s_val(&fv);
    if ((rc = mdb_put(txn, self->dbi[S_FOLLOWERS], &k, &v, 0)) != 0)
        return rc;
    s_buf_t uv = s_user_playlist_value(stamp, pid);
    k = s_str_val(user);
    v = s_val(&uv);
    if ((rc = mdb_put(txn, self->dbi[S_USER_PLAYLISTS], &k, &v, 0)) == 0)
        *changed = true;
    return rc;
}

int playlists_store_unfollow(playlists_store_t *self, MDB_txn *txn, playlists_str_t pid,
                             playlists_str_t user, bool *changed)
{
    *changed = false;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, self->dbi[S_FOLLOWERS], &cur);
    if (rc)
        return rc;
    uint64_t stamp;
    rc = s_find_follower(cur, pid, user, &stamp);
    if (rc == 0)
        rc = mdb_cursor_del(cur, 0);
    mdb_cursor_close(cur);
    if (rc)
        return rc == MDB_NOTFOUND ? 0 : rc;
    s_buf_t uv = s_user_playlist_value(stamp, pid);
    MDB_val k = s_str_val(user), v = s_val(&uv);
    rc = mdb_del(txn, self->dbi[S_USER_PLAYLISTS], &k, &v);
    if (rc == 0 || rc == MDB_NOTFOUND) {
        *changed = true;
        rc = 0;
    }
    return rc;
}

/*  Sets *count to the values under `key` in DUPSORT database `dbi`. */
static int s_dup_count(MDB_txn *txn, MDB_dbi dbi, MDB_val key, size_t *count)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc)
        return rc;
    MDB_val v;
    *count = 0;
    rc = mdb_cursor_get(cur, &key, &v, MDB_SET);
    if (rc == 0) {
        size_t n;
        rc = mdb_cursor_count(cur, &n);
        *count = (size_t)n;
    } else if (rc == MDB_NOTFOUND)
        rc = 0;
    mdb_cursor_close(cur);
    return rc;
}

int playlists_store_followers(playlists_store_t *self, MDB_txn *txn, playlists_str_t pid,
                              size_t *count)
{
    return s_dup_count(txn, self->dbi[S_FOLLOWERS], s_str_val(pid), count);
}

/*  Walks the values under `key` in DUPSORT database `dbi` from the
    `skip`th on, each a big-endian inverted stamp and an id, calling
    `each` for up to `limit` of them (SIZE_MAX for all). */
static int s_dup_walk(MDB_txn *txn, MDB_dbi dbi, MDB_val key, size_t skip, size_t limit,
                      playlists_id_fn *each, void *arg)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc)
        return rc;
    MDB_val v;
    rc = mdb_cursor_get(cur, &key, &v, MDB_SET);
    if (rc == 0)
        rc = mdb_cursor_get(cur, &key, &v, MDB_FIRST_DUP);
    for (size_t i = 0; rc == 0 && limit > 0; i++) {
        if (i >= skip) {
            if (v.mv_size <= 8 || v.mv_size > 8 + PLAYLISTS_ID_MAX) {
                rc = MDB_CORRUPTED;
                break;
            }
            uint64_t stamp = UINT64_MAX - s_get64(v.mv_data);
            playlists_str_t id = {(const char *)v.mv_data + 8, v.mv_size - 8};
            if ((rc = each(arg, id, (int64_t)(stamp / 64))) != 0)
                break;
            limit--;
        }
        rc = mdb_cursor_get(cur, &key, &v, MDB_NEXT_DUP);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int playlists_store_user_playlists(playlists_store_t *self, MDB_txn *txn, playlists_str_t user,
                                   playlists_id_fn *each, void *arg)
{
    return s_dup_walk(txn, self->dbi[S_USER_PLAYLISTS], s_str_val(user), 0, SIZE_MAX, each, arg);
}

int playlists_store_delete(playlists_store_t *self, MDB_txn *txn, const playlists_playlist_t *p)
{
    playlists_str_t pid = s_cstr(p->id);
    playlists_dir_t dir = {0};
    int rc = s_dir_load(self, txn, pid, &dir);
    for (size_t c = 0; rc == 0 && c < dir.n; c++) {
        s_buf_t key = s_chunk_key(pid, dir.chunks[c].no);
        MDB_val k = s_val(&key);
        rc = mdb_del(txn, self->dbi[S_CHUNKS], &k, NULL);
    }
    playlists_dir_release(&dir);
    MDB_val k = s_str_val(pid);
    if (rc == 0 && (rc = mdb_del(txn, self->dbi[S_DIRS], &k, NULL)) == MDB_NOTFOUND)
        rc = 0;
    if (rc == 0)
        rc = mdb_del(txn, self->dbi[S_PLAYLISTS], &k, NULL);
    if (rc)
        return rc;
    /* Every follower's list loses it. */
    MDB_cursor *cur;
    if ((rc = mdb_cursor_open(txn, self->dbi[S_FOLLOWERS], &cur)) != 0)
        return rc;
    MDB_val v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET);
    if (rc == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST_DUP);
    while (rc == 0) {
        const uint8_t *f = v.mv_data;
        if (v.mv_size < 10 || v.mv_size != (size_t)f[0] + 9) {
            rc = MDB_CORRUPTED;
            break;
        }
        playlists_str_t user = {(const char *)f + 1, f[0]};
        s_buf_t uv = s_user_playlist_value(s_get64(f + 1 + f[0]), pid);
        MDB_val uk = s_str_val(user), uval = s_val(&uv);
        rc = mdb_del(txn, self->dbi[S_USER_PLAYLISTS], &uk, &uval);
        if (rc == 0 || rc == MDB_NOTFOUND)
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP);
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND)
        return rc;
    rc = mdb_del(txn, self->dbi[S_FOLLOWERS], &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---- library ------------------------------------------------------------------------------- */

static s_buf_t s_library_key(playlists_kind_t kind, playlists_str_t user)
{
    s_buf_t b = {.len = 0};
    s_add_byte(&b, (uint8_t)kind);
    s_add_str(&b, user);
    return b;
}

static s_buf_t s_library_index_key(playlists_kind_t kind, playlists_str_t user, playlists_str_t id)
{
    s_buf_t b = {.len = 0};
    s_add_byte(&b, (uint8_t)kind);
    s_add_counted(&b, user);
    s_add_str(&b, id);
    return b;
}

int playlists_store_library_add(playlists_store_t *self, MDB_txn *txn, playlists_kind_t kind,
                                playlists_str_t user, playlists_str_t id, uint64_t stamp,
                                bool *changed)
{
    *changed = false;
    s_buf_t ik = s_library_index_key(kind, user, id), sv = {.len = 0};
    s_add64(&sv, stamp);
    MDB_val k = s_val(&ik), v = s_val(&sv);
    int rc = mdb_put(txn, self->dbi[S_LIBRARY_INDEX], &k, &v, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST)
        return 0;
    if (rc)
        return rc;
    s_buf_t lk = s_library_key(kind, user), lv = {.len = 0};
    s_add64(&lv, UINT64_MAX - stamp);
    s_add_str(&lv, id);
    k = s_val(&lk);
    v = s_val(&lv);
    if ((rc = mdb_put(txn, self->dbi[S_LIBRARY], &k, &v, 0)) == 0)
        *changed = true;
    return rc;
}

int playlists_store_library_remove(playlists_store_t *self, MDB_txn *txn, playlists_kind_t kind,
                                   playlists_str_t user, playlists_str_t id, bool *changed)
{
    *changed = false;
    s_buf_t ik = s_library_index_key(kind, user, id);
    MDB_val k = s_val(&ik), v;
    int rc = mdb_get(txn, self->dbi[S_LIBRARY_INDEX], &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    if (v.mv_size != 8)
        return MDB_CORRUPTED;
    s_buf_t lk = s_library_key(kind, user), lv = {.len = 0};
    s_add64(&lv, UINT64_MAX - s_get64(v.mv_data));
    s_add_str(&lv, id);
    if ((rc = mdb_del(txn, self->dbi[S_LIBRARY_INDEX], &k, NULL)) != 0)
        return rc;
    MDB_val lkv = s_val(&lk), lvv = s_val(&lv);
    rc = mdb_del(txn, self->dbi[S_LIBRARY], &lkv, &lvv);
    if (rc == 0 || rc == MDB_NOTFOUND) {
        *changed = true;
        rc = 0;
    }
    return rc;
}

int playlists_store_library_contains(playlists_store_t *self, MDB_txn *txn, playlists_kind_t kind,
                                     playlists_str_t user, playlists_str_t id, bool *yes)
{
    s_buf_t ik = s_library_index_key(kind, user, id);
    MDB_val k = s_val(&ik), v;
    int rc = mdb_get(txn, self->dbi[S_LIBRARY_INDEX], &k, &v);
    *yes = rc == 0;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int playlists_store_library_count(playlists_store_t *self, MDB_txn *txn, playlists_kind_t kind,
                                  playlists_str_t user, size_t *count)
{
    s_buf_t lk = s_library_key(kind, user);
    return s_dup_count(txn, self->dbi[S_LIBRARY], s_val(&lk), count);
}

int playlists_store_library_page(playlists_store_t *self, MDB_txn *txn, playlists_kind_t kind,
                                 playlists_str_t user, size_t offset, size_t limit,
                                 playlists_id_fn *each, void *arg)
{
    s_buf_t lk = s_library_key(kind, user);
    return s_dup_walk(txn, self->dbi[S_LIBRARY], s_val(&lk), offset, limit, each, arg);
}

/* ---- the local catalog copy ------------------------------------------------------------------ */

/*  Stored value: {"label": title or name, "artist_ids", "album_id",
    "duration_ms", "available", "deleted", "updated_at"}; each of the
    first four and updated_at may be nil. */
typedef struct {
    const msgpack_object *label, *artist_ids, *album_id, *duration_ms, *updated_at;
    bool available, deleted;
} s_known_t;

static s_buf_t s_catalog_key(playlists_kind_t kind, playlists_str_t id)
{
    s_buf_t b = {.len = 0};
    s_add_byte(&b, (uint8_t)kind);
    s_add_str(&b, id);
    return b;
}

/*  Looks up and decodes the stored copy into *msg / *known. Returns 0,
    MDB_NOTFOUND, MDB_CORRUPTED or an LMDB code; release *msg always. */
static int s_known_get(playlists_store_t *self, MDB_txn *txn, playlists_kind_t kind,
                       playlists_str_t id, msgpack_unpacked *msg, s_known_t *known)
{
    s_buf_t key = s_catalog_key(kind, id);
    MDB_val k = s_val(&key), v;
    int rc = mdb_get(txn, self->dbi[S_CATALOG], &k, &v);
    if (rc)
        return rc;
    if (msgpack_unpack_next(msg, v.mv_data, v.mv_size, NULL) != MSGPACK_UNPACK_SUCCESS ||
        msg->data.type != MSGPACK_OBJECT_MAP ||
        !mb_obj_bool(mb_map_get(&msg->data, "available"), &known->available) ||
        !mb_obj_bool(mb_map_get(&msg->data, "deleted"), &known->deleted))
        return MDB_CORRUPTED;
    known->label = mb_map_get(&msg->data, "label");
    known->artist_ids = mb_map_get(&msg->data, "artist_ids");
    known->album_id = mb_map_get(&msg->data, "album_id");
    known->duration_ms = mb_map_get(&msg->data, "duration_ms");
    known->updated_at = mb_map_get(&msg->data, "updated_at");
    return 0;
}

int playlists_store_catalog_usable(playlists_store_t *self, MDB_txn *txn, playlists_kind_t kind,
                                   playlists_str_t id, bool *usable)
{
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    s_known_t known;
    int rc = s_known_get(self, txn, kind, id, &msg, &known);
    *usable = rc == 0 && known.available && !known.deleted;
    msgpack_unpacked_destroy(&msg);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/*  Packs `o` when it has type `type` (one of two for integers), else nil. */
static void s_pack_typed(msgpack_packer *pk, const msgpack_object *o, msgpack_object_type type)
{
    if (o && (o->type == type || (type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
                                  o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)))
        mb_pack_object(pk, o);
    else
        msgpack_pack_nil(pk);
}

int playlists_store_catalog_pack(playlists_store_t *self, MDB_txn *txn, playlists_kind_t kind,
                                 playlists_str_t id, msgpack_packer *pk)
{
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    s_known_t known = {0};
    int rc = s_known_get(self, txn, kind, id, &msg, &known);
    if (rc == MDB_NOTFOUND) {
        rc = 0;
        known = (s_known_t){0};
    }
    if (rc == 0) {
        bool track = kind == PLAYLISTS_TRACK, album = kind == PLAYLISTS_ALBUM;
        msgpack_pack_map(pk, track ? 7 : album ? 4 : 3);
        mb_pack_cstr(pk, "id");
        playlists_pack_str(pk, id);
        if (track) {
            char uri[sizeof PLAYLISTS_TRACK_URI_PREFIX + PLAYLISTS_ID_MAX];
            int n = snprintf(uri, sizeof uri, "%s%.*s", PLAYLISTS_TRACK_URI_PREFIX, (int)id.len,
                             id.ptr);
            mb_pack_cstr(pk, "uri");
            mb_pack_strn(pk, uri, (size_t)n);
        }
        mb_pack_cstr(pk, kind == PLAYLISTS_ARTIST ? "name" : "title");
        s_pack_typed(pk, known.label, MSGPACK_OBJECT_STR);
        if (track || album) {
            mb_pack_cstr(pk, "artist_ids");
            s_pack_typed(pk, known.artist_ids, MSGPACK_OBJECT_ARRAY);
        }
        if (track) {
            mb_pack_cstr(pk, "album_id");
            s_pack_typed(pk, known.album_id, MSGPACK_OBJECT_STR);
            mb_pack_cstr(pk, "duration_ms");
            s_pack_typed(pk, known.duration_ms, MSGPACK_OBJECT_POSITIVE_INTEGER);
        }
        mb_pack_cstr(pk, "available");
        if (known.available && !known.deleted)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
    }
    msgpack_unpacked_destroy(&msg);
    return rc;
}

static int s_known_put(playlists_store_t *self, MDB_txn *txn, playlists_kind_t kind,
                       playlists_str_t id, const s_known_t *known)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 7);
    mb_pack_cstr(&pk, "label");
    s_pack_typed(&pk, known->label, MSGPACK_OBJECT_STR);
    mb_pack_cstr(&pk, "artist_ids");
    s_pack_typed(&pk, known->artist_ids, MSGPACK_OBJECT_ARRAY);
    mb_pack_cstr(&pk, "album_id");
    s_pack_typed(&pk, known->album_id, MSGPACK_OBJECT_STR);
    mb_pack_cstr(&pk, "duration_ms");
    s_pack_typed(&pk, known->duration_ms, MSGPACK_OBJECT_POSITIVE_INTEGER);
    mb_pack_cstr(&pk, "available");
    if (known->available)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    mb_pack_cstr(&pk, "deleted");
    if (known->deleted)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    mb_pack_cstr(&pk, "updated_at");
    s_pack_typed(&pk, known->updated_at, MSGPACK_OBJECT_STR);
    s_buf_t key = s_catalog_key(kind, id);
    MDB_val k = s_val(&key), v = {.mv_size = buf.size, .mv_data = buf.data};
    int rc = mdb_put(txn, self->dbi[S_CATALOG], &k, &v, 0);
    msgpack_sbuffer_destroy(&buf);
    return rc;
}

/*  True when string a sorts before string b (RFC 3339 UTC timestamps of
    one format sort as strings). */
static bool s_older(const msgpack_object *a, const msgpack_object *b)
{
    const char *as, *bs;
    size_t al, bl;
    if (!mb_obj_str(a, &as, &al) || !mb_obj_str(b, &bs, &bl))
        return false;
    int c = memcmp(as, bs, al < bl ? al : bl);
    return c < 0 || (c == 0 && al < bl);
}

static bool s_topic_is(const mb_event_t *event, const char *topic)
{
    return event->topic_len == strlen(topic) && memcmp(event->topic, topic, event->topic_len) == 0;
}

int playlists_store_apply_catalog(playlists_store_t *self, MDB_txn *txn, const mb_event_t *event,
                                  const char **why)
{
    playlists_kind_t kind;
    if (s_topic_is(event, "catalog.track"))
        kind = PLAYLISTS_TRACK;
    else if (s_topic_is(event, "catalog.album"))
        kind = PLAYLISTS_ALBUM;
    else if (s_topic_is(event, "catalog.artist"))
        kind = PLAYLISTS_ARTIST;
    else {
        *why = "a topic this consumer does not read";
        return MB_EINVAL;
    }
    const msgpack_object *data = event->data, *action = mb_map_get(data, "action");
    playlists_str_t id;
    if (!data || data->type != MSGPACK_OBJECT_MAP) {
        *why = "data must be a map";
        return MB_EINVAL;
    }
    if (!mb_obj_str(mb_map_get(data, "id"), &id.ptr, &id.len) ||
        !playlists_id_valid(id.ptr, id.len)) {
        *why = "data.id must be an id";
        return MB_EINVAL;
    }
    bool deleted = mb_obj_str_eq(action, "deleted");
    if (!deleted && !mb_obj_str_eq(action, "created") && !mb_obj_str_eq(action, "updated")) {
        *why = "data.action must be created, updated or deleted";
        return MB_EINVAL;
    }
    const msgpack_object *object = mb_map_get(data, "object");
    if (!deleted && (!object || object->type != MSGPACK_OBJECT_MAP)) {
        *why = "data.object must be a map for created and updated";
        return MB_EINVAL;
    }
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    s_known_t old = {0}, now = {0};
    int rc = s_known_get(self, txn, kind, id, &msg, &old);
    bool exists = rc == 0;
    if (rc == MDB_NOTFOUND || rc == MDB_CORRUPTED)
        rc = 0; /* a corrupt copy is replaced by what the catalog says now */
    if (rc == 0 && deleted) {
        now = exists ? old : (s_known_t){0};
        now.available = false;
        now.deleted = true;
        rc = s_known_put(self, txn, kind, id, &now);
    } else if (rc == 0 && !(exists && old.deleted)) {
        /* A redelivered older event must not undo a newer one; ids are
           never reused, so nothing comes back from deleted. */
        now.updated_at = mb_map_get(object, "updated_at");
        if (!(exists && s_older(now.updated_at, old.updated_at))) {
            now.label = mb_map_get(object, kind == PLAYLISTS_ARTIST ? "name" : "title");
            now.artist_ids = mb_map_get(object, "artist_ids");
            now.album_id = mb_map_get(object, "album_id");
            now.duration_ms = mb_map_get(object, "duration_ms");
            if (!mb_obj_bool(mb_map_get(object, "available"), &now.available))
                now.available = true;
            rc = s_known_put(self, txn, kind, id, &now);
        }
    }
    msgpack_unpacked_destroy(&msg);
    return rc;
}
