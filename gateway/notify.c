/*  notify — who hears about which bus event. See notify.h. */
#include "notify.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json_msgpack.h"
#include "mb_alloc.h"
#include "mb_error.h"
#include "mb_log.h"
#include "mb_msgpack.h"

#define S_AUDIENCE_MAX 256 /* users named by one event; more is malformed */
#define S_MAP_MIN 16       /* slots of an empty table */

/* Where a user's follow list stands. */
enum { S_UNKNOWN, S_LOADING, S_READY, S_FAILED };

typedef struct s_user s_user_t;

/*  A playlist followed by at least one user connected here. */
typedef struct {
    char *id;
    s_user_t **followers;
    size_t n, cap;
} s_playlist_t;

/*  A follow or unfollow seen while the user's list was loading. */
typedef struct {
    char *pid;
    bool add;
} s_change_t;

struct s_user {
    char *id;
    gw_notify_sub_t *subs;
    size_t n_subs;
    s_playlist_t **follows; /* sorted by address, for bsearch */
    size_t n_follows, cap_follows;
    int state;
    s_change_t *pending; /* while S_LOADING */
    size_t n_pending, cap_pending;
    uint64_t mark; /* seq of the last event fanned out to this user */
};

/*  One frame of the ring, with what it takes to find its recipients
    again when a client resumes. */
typedef struct {
    uint64_t seq;
    size_t size; /* bytes counted against ring_bytes */
    char *text;  /* the full frame */
    size_t len;
    char *text_min; /* for followers of a playlist that is not public, or NULL */
    size_t len_min;
    char *playlist; /* whose followers get it, or NULL */
    bool is_public;
    size_t n_users;
    char **users; /* direct recipients */
} s_entry_t;

/*  A string-keyed hash table of records that hold their own key (their
    first member is the char * id): open addressing, linear probing,
    backward-shift deletion. */
typedef struct {
    void **slots;
    size_t mask, n;
    const unsigned char *hash_key;
} s_map_t;

struct gw_notify {
    gw_notify_config_t cfg;
    unsigned char hash_key[crypto_shorthash_KEYBYTES];
    s_map_t users;     /* s_user_t by id */
    s_map_t playlists; /* s_playlist_t by id */
    s_entry_t **ring;  /* circular, ring_events slots */
    size_t ring_head, ring_n, ring_bytes;
    uint64_t covered_from;
    uint64_t last_seq;
    size_t subs;
    uint64_t events, skipped, frames, resyncs;
    gw_buf_t buf, buf_min;
};

/* ---- the table ------------------------------------------------------------ */

static const char *s_key_of(const void *record)
{
    return *(char *const *)record; /* every record starts with its id */
}

static size_t s_hash(const s_map_t *m, const char *key, size_t len)
{
    uint64_t h;
    crypto_shorthash((unsigned char *)&h, (const unsigned char *)key, len, m->hash_key);
    return (size_t)h;
}

static void s_map_init(s_map_t *m, const unsigned char *hash_key)
{
    m->slots = mb_calloc(S_MAP_MIN, sizeof *m->slots);
    m->mask = S_MAP_MIN - 1;
    m->n = 0;
    m->hash_key = hash_key;
}

static void *s_map_get(const s_map_t *m, const char *key, size_t len)
{
    for (size_t i = s_hash(m, key, len) & m->mask; m->slots[i]; i = (i + 1) & m->mask) {
        const char *k = s_key_of(m->slots[i]);
        if (strlen(k) == len && memcmp(k, key, len) == 0)
            return m->slots[i];
    }
    return NULL;
}

static void s_map_insert(s_map_t *m, void *record)
{
    const char *k = s_key_of(record);
    size_t i = s_hash(m, k, strlen(k)) & m->mask;
    while (m->slots[i])
        i = (i + 1) & m->mask;
    m->slots[i] = record;
}

/*  Adds `record`, whose key is not in the table yet. */
static void s_map_put(s_map_t *m, void *record)
{
    if ((m->n + 1) * 2 > m->mask + 1) {
        void **old = m->slots;
        size_t old_size = m->mask + 1;
        m->slots = mb_calloc(old_size * 2, sizeof *m->slots);
        m->mask = old_size * 2 - 1;
        for (size_t i = 0; i < old_size; i++)
            if (old[i])
                s_map_insert(m, old[i]);
        free(old);
    }
    s_map_insert(m, record);
    m->n++;
}

static void s_map_del(s_map_t *m, const void *record)
{
    const char *k = s_key_of(record);
    size_t i = s_hash(m, k, strlen(k)) & m->mask;
    while (m->slots[i] && m->slots[i] != record)
        i = (i + 1) & m->mask;
    if (!m->slots[i])
        return;
    m->slots[i] = NULL;
    m->n--;
    /* Shift back the entries of the probe run that follows, so lookups
       never stop at the hole. */
    for (size_t j = (i + 1) & m->mask; m->slots[j]; j = (j + 1) & m->mask) {
        const char *kj = s_key_of(m->slots[j]);
        size_t home = s_hash(m, kj, strlen(kj)) & m->mask;
        if (((j - home) & m->mask) >= ((j - i) & m->mask)) {
            m->slots[i] = m->slots[j];
            m->slots[j] = NULL;
            i = j;
        }
    }
}

/* ---- the follower index ----------------------------------------------------- */

/*  The index in u->follows where `p` is or would go. */
static size_t s_follow_pos(const s_user_t *u, const s_playlist_t *p, bool *found)
{
    size_t lo = 0, hi = u->n_follows;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if ((uintptr_t)u->follows[mid] < (uintptr_t)p)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < u->n_follows && u->follows[lo] == p;
    return lo;
}

static bool s_user_follows(const s_user_t *u, const s_playlist_t *p)
{
    bool found;
    s_follow_pos(u, p, &found);
    return found;
}

static void s_follow_add(gw_notify_t *self, s_user_t *u, const char *pid, size_t len)
{
    s_playlist_t *p = s_map_get(&self->playlists, pid, len);
    if (!p) {
        if (u->n_follows >= self->cfg.follows_max)
            return;
        p = mb_calloc(1, sizeof *p);
        p->id = mb_strndup(pid, len);
        s_map_put(&self->playlists, p);
    }
    bool found;
    size_t at = s_follow_pos(u, p, &found);
    if (found || u->n_follows >= self->cfg.follows_max)
        return; /* p has followers already: nothing to undo */
    if (u->n_follows == u->cap_follows) {
        u->cap_follows = u->cap_follows ? u->cap_follows * 2 : 4;
        u->follows = mb_realloc(u->follows, u->cap_follows * sizeof *u->follows);
    }
    memmove(&u->follows[at + 1], &u->follows[at], (u->n_follows - at) * sizeof *u->follows);
    u->follows[at] = p;
    u->n_follows++;
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 2;
        p->followers = mb_realloc(p->followers, p->cap * sizeof *p->followers);
    }
    p->followers[p->n++] = u;
}

/*  Takes `u` off p's followers, and p out of the index when it was the
    last (u->follows is the caller's business). */
static void s_playlist_drop_user(gw_notify_t *self, s_playlist_t *p, const s_user_t *u)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->followers[i] == u) {
            p->followers[i] = p->followers[--p->n];
            break;
        }
    if (p->n == 0) {
        s_map_del(&self->playlists, p);
        free(p->followers);
        free(p->id);
        free(p);
    }
}

static void s_follow_del(gw_notify_t *self, s_user_t *u, const char *pid, size_t len)
{
    s_playlist_t *p = s_map_get(&self->playlists, pid, len);
    if (!p)
        return;
    bool found;
    size_t at = s_follow_pos(u, p, &found);
    if (!found)
        return;
    memmove(&u->follows[at], &u->follows[at + 1], (u->n_follows - at - 1) * sizeof *u->follows);
    u->n_follows--;
    s_playlist_drop_user(self, p, u);
}

static void s_follows_clear(gw_notify_t *self, s_user_t *u)
{
    for (size_t i = 0; i < u->n_follows; i++)
        s_playlist_drop_user(self, u->follows[i], u);
    u->n_follows = 0;
}

/*  A playlist was deleted: nobody follows it any more. */
static void s_playlist_forget(gw_notify_t *self, const char *pid, size_t len)
{
    s_playlist_t *p = s_map_get(&self->playlists, pid, len);
    if (!p)
        return;
    /* s_follow_del() frees p with its last follower: work on a copy. */
    size_t n = p->n;
    s_user_t **users = mb_malloc(n * sizeof *users);
    memcpy(users, p->followers, n * sizeof *users);
    for (size_t i = 0; i < n; i++)
        s_follow_del(self, users[i], pid, len);
    free(users);
}

static void s_pending_add(s_user_t *u, const char *pid, size_t len, bool add)
{
    if (u->n_pending == u->cap_pending) {
        u->cap_pending = u->cap_pending ? u->cap_pending * 2 : 4;
        u->pending = mb_realloc(u->pending, u->cap_pending * sizeof *u->pending);
    }
    u->pending[u->n_pending++] = (s_change_t){mb_strndup(pid, len), add};
}

static void s_pending_clear(s_user_t *u)
{
    for (size_t i = 0; i < u->n_pending; i++)
        free(u->pending[i].pid);
    free(u->pending);
    u->pending = NULL;
    u->n_pending = u->cap_pending = 0;
}

/* ---- users ---------------------------------------------------------------------- */

static void s_user_free(gw_notify_t *self, s_user_t *u)
{
    s_map_del(&self->users, u);
    s_follows_clear(self, u);
    s_pending_clear(u);
    free(u->follows);
    free(u->id);
    free(u);
}

/* ---- the ring --------------------------------------------------------------------- */

static void s_entry_free(s_entry_t *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->n_users; i++)
        free(e->users[i]);
    free(e->users);
    free(e->text);
    free(e->text_min);
    free(e->playlist);
    free(e);
}

static s_entry_t *s_ring_at(const gw_notify_t *self, size_t i)
{
    return self->ring[(self->ring_head + i) % self->cfg.ring_events];
}

static void s_ring_evict(gw_notify_t *self)
{
    s_entry_t *e = self->ring[self->ring_head];
    self->ring[self->ring_head] = NULL;
    self->ring_head = (self->ring_head + 1) % self->cfg.ring_events;
    self->ring_n--;
    self->ring_bytes -= e->size;
    /* Whatever is gone cannot be replayed: resumes from before it resync. */
    self->covered_from = e->seq + 1;
    s_entry_free(e);
}

static void s_ring_push(gw_notify_t *self, s_entry_t *e)
{
    while (self->ring_n > 0 && (self->ring_n == self->cfg.ring_events ||
                                self->ring_bytes + e->size > self->cfg.ring_bytes))
        s_ring_evict(self);
    self->ring[(self->ring_head + self->ring_n) % self->cfg.ring_events] = e;
    self->ring_n++;
    self->ring_bytes += e->size;
}

static void s_ring_clear(gw_notify_t *self)
{
    while (self->ring_n > 0)
        s_ring_evict(self);
    self->ring_head = 0;
}

/* ---- frames ------------------------------------------------------------------------ */

/*  Writes {"seq":N,"topic":T,"type":A,"data": and leaves the data to the
    caller. */
static void s_frame_head(gw_buf_t *b, uint64_t seq, const mb_event_t *ev, const char *type,
                         size_t type_len)
{
    gw_buf_reset(b);
    gw_buf_printf(b, "{\"seq\":%" PRIu64 ",\"topic\":", seq);
    gw_buf_json_string(b, ev->topic, ev->topic_len);
    gw_buf_puts(b, ",\"type\":");
    gw_buf_json_string(b, type, type_len);
    gw_buf_puts(b, ",\"data\":");
}

/*  Writes `data` as JSON, leaving out the top-level key `skip` (NULL:
    none). Returns 0 or MB_EPROTO. */
static int s_data_json(gw_buf_t *b, const msgpack_object *data, const char *skip)
{
    const char *why = NULL;
    if (!skip || data->type != MSGPACK_OBJECT_MAP)
        return gw_msgpack_to_json(b, data, &why);
    gw_buf_putc(b, '{');
    bool first = true;
    for (uint32_t i = 0; i < data->via.map.size; i++) {
        const msgpack_object_kv *kv = &data->via.map.ptr[i];
        const char *k;
        size_t klen;
        if (!mb_obj_str(&kv->key, &k, &klen) || !gw_utf8_valid(k, klen))
            return MB_EPROTO;
        if (klen == strlen(skip) && memcmp(k, skip, klen) == 0)
            continue;
        if (!first)
            gw_buf_putc(b, ',');
        first = false;
        gw_buf_json_string(b, k, klen);
        gw_buf_putc(b, ':');
        if (gw_msgpack_to_json(b, &kv->val, &why))
            return MB_EPROTO;
    }
    gw_buf_putc(b, '}');
    return 0;
}

static bool s_topic_is(const mb_event_t *ev, const char *topic)
{
    return ev->topic_len == strlen(topic) && memcmp(ev->topic, topic, ev->topic_len) == 0;
}

/*  What one event means here, read from its data (borrowed). */
typedef struct {
    const char *type;
    size_t type_len;
    const msgpack_object *users[S_AUDIENCE_MAX]; /* strings */
    size_t n_users;
    const char *playlist; /* followers of it get the frame */
    size_t playlist_len;
    bool is_public;
    bool playlist_deleted;
    const char *follow_user; /* playlists.follow: who */
    size_t follow_user_len;
    const char *follow_pid; /* and which playlist */
    size_t follow_pid_len;
    bool follow_add;
    bool gone; /* users.user deleted */
} s_meaning_t;

static bool s_add_user(s_meaning_t *m, const msgpack_object *o)
{
    const char *s;
    size_t len;
    if (!mb_obj_str(o, &s, &len) || len == 0 || m->n_users == S_AUDIENCE_MAX)
        return false;
    m->users[m->n_users++] = o;
    return true;
}

/*  Reads the event's recipients. Returns false when it is malformed for
    its topic. */
static bool s_read_event(const mb_event_t *ev, s_meaning_t *m)
{
    memset(m, 0, sizeof *m);
    const msgpack_object *d = ev->data;
    if (!d || d->type != MSGPACK_OBJECT_MAP ||
        !mb_obj_str(mb_map_get(d, "action"), &m->type, &m->type_len) || m->type_len == 0 ||
        !gw_utf8_valid(m->type, m->type_len))
        return false;
    if (s_topic_is(ev, "playlists.playlist")) {
        if (!mb_obj_str(mb_map_get(d, "id"), &m->playlist, &m->playlist_len) ||
            m->playlist_len == 0 || !mb_obj_bool(mb_map_get(d, "public"), &m->is_public))
            return false;
        const msgpack_object *aud = mb_map_get(d, "audience");
        if (aud) {
            if (aud->type != MSGPACK_OBJECT_ARRAY)
                return false;
            for (uint32_t i = 0; i < aud->via.array.size; i++)
                if (!s_add_user(m, &aud->via.array.ptr[i]))
                    return false;
        } else if (!s_add_user(m, mb_map_get(d, "owner"))) {
            return false; /* an older producer: the owner at least */
        }
        m->playlist_deleted = mb_obj_str_eq(mb_map_get(d, "action"), "deleted");
        return true;
    }
    if (s_topic_is(ev, "playlists.library"))
        return s_add_user(m, mb_map_get(d, "user"));
    if (s_topic_is(ev, "playlists.follow")) {
        const msgpack_object *user = mb_map_get(d, "user");
        if (!s_add_user(m, user) ||
            !mb_obj_str(mb_map_get(d, "playlist"), &m->follow_pid, &m->follow_pid_len) ||
            m->follow_pid_len == 0)
            return false;
        mb_obj_str(user, &m->follow_user, &m->follow_user_len);
        if (mb_obj_str_eq(mb_map_get(d, "action"), "followed"))
            m->follow_add = true;
        else if (!mb_obj_str_eq(mb_map_get(d, "action"), "unfollowed"))
            return false;
        return true;
    }
    if (s_topic_is(ev, "users.user")) {
        const msgpack_object *id = mb_map_get(d, "id");
        if (!s_add_user(m, id))
            return false;
        m->gone = mb_obj_str_eq(mb_map_get(d, "action"), "deleted");
        return true;
    }
    return false;
}

/*  Makes the ring entry of an event: its frame(s) and recipients. NULL
    when its data has no JSON form. */
static s_entry_t *s_entry_new(gw_notify_t *self, const mb_event_t *ev, const s_meaning_t *m)
{
    bool is_playlist = s_topic_is(ev, "playlists.playlist");
    s_frame_head(&self->buf, ev->seq, ev, m->type, m->type_len);
    if (s_data_json(&self->buf, ev->data, is_playlist ? "audience" : NULL))
        return NULL;
    gw_buf_putc(&self->buf, '}');
    s_entry_t *e = mb_calloc(1, sizeof *e);
    e->seq = ev->seq;
    e->text = mb_strndup(self->buf.data, self->buf.len);
    e->len = self->buf.len;
    e->size = sizeof *e + e->len;
    if (m->playlist) {
        e->playlist = mb_strndup(m->playlist, m->playlist_len);
        e->is_public = m->is_public;
        e->size += m->playlist_len;
        if (!m->is_public) {
            gw_buf_t *b = &self->buf_min;
            s_frame_head(b, ev->seq, ev, m->type, m->type_len);
            gw_buf_puts(b, "{\"id\":");
            gw_buf_json_string(b, m->playlist, m->playlist_len);
            gw_buf_puts(b, ",\"public\":false}}");
            e->text_min = mb_strndup(b->data, b->len);
            e->len_min = b->len;
            e->size += b->len;
        }
    }
    e->users = mb_calloc(m->n_users ? m->n_users : 1, sizeof *e->users);
    for (size_t i = 0; i < m->n_users; i++) {
        e->users[i] = mb_obj_strdup(m->users[i]);
        e->size += m->users[i]->via.str.size + sizeof(char *);
    }
    e->n_users = m->n_users;
    return e;
}

/*  The frame of `e` that user `u` gets, or NULL when none. */
static const char *s_text_for(const gw_notify_t *self, const s_user_t *u, const s_entry_t *e,
                              size_t *len)
{
    for (size_t i = 0; i < e->n_users; i++)
        if (strcmp(e->users[i], u->id) == 0) {
            *len = e->len;
            return e->text;
        }
    if (e->playlist) {
        const s_playlist_t *p = s_map_get(&self->playlists, e->playlist, strlen(e->playlist));
        if (p && s_user_follows(u, p)) {
            *len = e->is_public ? e->len : e->len_min;
            return e->is_public ? e->text : e->text_min;
        }
    }
    return NULL;
}

static int s_send(gw_notify_t *self, gw_notify_sub_t *sub, const char *text, size_t len)
{
    self->frames++;
    return self->cfg.deliver(sub, text, len, self->cfg.cls);
}

/*  {"type":T,"seq":S} */
static int s_send_control(gw_notify_t *self, gw_notify_sub_t *sub, const char *type, uint64_t seq)
{
    char text[96];
    int n = snprintf(text, sizeof text, "{\"type\":\"%s\",\"seq\":%" PRIu64 "}", type, seq);
    return s_send(self, sub, text, (size_t)n);
}

/*  Delivers `e` to every live subscriber of `u` that wants it, once per
    event whatever the number of reasons. */
static void s_fan_user(gw_notify_t *self, s_user_t *u, const s_entry_t *e, const char *text,
                       size_t len)
{
    if (u->mark == e->seq)
        return;
    u->mark = e->seq;
    for (gw_notify_sub_t *s = u->subs, *next; s; s = next) {
        next = s->next;
        if (s->live && e->seq >= s->from)
            s_send(self, s, text, len);
    }
}

static void s_fan_out(gw_notify_t *self, const s_entry_t *e)
{
    for (size_t i = 0; i < e->n_users; i++) {
        s_user_t *u = s_map_get(&self->users, e->users[i], strlen(e->users[i]));
        if (u)
            s_fan_user(self, u, e, e->text, e->len);
    }
    if (!e->playlist)
        return;
    s_playlist_t *p = s_map_get(&self->playlists, e->playlist, strlen(e->playlist));
    for (size_t i = 0; p && i < p->n; i++)
        s_fan_user(self, p->followers[i], e, e->is_public ? e->text : e->text_min,
                   e->is_public ? e->len : e->len_min);
}

/*  Makes a waiting subscriber live: resync or replay from sub->from,
    then ready. */
static void s_go_live(gw_notify_t *self, s_user_t *u, gw_notify_sub_t *sub)
{
    sub->live = true;
    uint64_t last = self->last_seq;
    bool resync = sub->resume && sub->from < self->covered_from;
    size_t first = 0, count = 0;
    if (!resync) {
        /* The ring is in seq order: skip what the client has. */
        while (first < self->ring_n && s_ring_at(self, first)->seq < sub->from)
            first++;
        size_t len;
        for (size_t i = first; i < self->ring_n; i++)
            count += s_text_for(self, u, s_ring_at(self, i), &len) != NULL;
        resync = count > self->cfg.replay_max;
    }
    if (resync) {
        self->resyncs++;
        if (s_send_control(self, sub, "resync", last))
            return;
        sub->from = last + 1;
    } else {
        for (size_t i = first; i < self->ring_n; i++) {
            size_t len;
            const char *text = s_text_for(self, u, s_ring_at(self, i), &len);
            if (text && s_send(self, sub, text, len))
                return;
        }
    }
    /* A client ahead of us (it saw newer frames through another gateway)
       keeps its position: frames it has are never sent (sub->from). */
    s_send_control(self, sub, "ready", sub->from - 1 > last ? sub->from - 1 : last);
}

/* ---- the API ------------------------------------------------------------------------- */

gw_notify_t *gw_notify_new(const gw_notify_config_t *cfg)
{
    if (sodium_init() < 0) {
        mb_error(0, "libsodium failed to initialise");
        abort();
    }
    gw_notify_t *self = mb_calloc(1, sizeof *self);
    self->cfg = *cfg;
    if (self->cfg.ring_events == 0)
        self->cfg.ring_events = 1;
    randombytes_buf(self->hash_key, sizeof self->hash_key);
    s_map_init(&self->users, self->hash_key);
    s_map_init(&self->playlists, self->hash_key);
    self->ring = mb_calloc(self->cfg.ring_events, sizeof *self->ring);
    self->covered_from = 1;
    return self;
}

void gw_notify_destroy(gw_notify_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    gw_notify_t *self = *self_p;
    for (size_t i = 0; i <= self->users.mask; i++) {
        s_user_t *u = self->users.slots[i];
        if (!u)
            continue;
        for (gw_notify_sub_t *s = u->subs; s; s = s->next)
            s->user = NULL;
    }
    /* Freeing a user changes the table: take them one at a time. */
    while (self->users.n > 0) {
        for (size_t i = 0; i <= self->users.mask; i++)
            if (self->users.slots[i]) {
                s_user_free(self, self->users.slots[i]);
                break;
            }
    }
    s_ring_clear(self);
    free(self->ring);
    free(self->users.slots);
    free(self->playlists.slots);
    gw_buf_free(&self->buf);
    gw_buf_free(&self->buf_min);
    free(self);
    *self_p = NULL;
}

void gw_notify_reset(gw_notify_t *self, uint64_t from, bool tell)
{
    s_ring_clear(self);
    self->covered_from = from ? from : 1;
    self->last_seq = self->covered_from - 1;
    if (!tell)
        return;
    for (size_t i = 0; i <= self->users.mask; i++) {
        s_user_t *u = self->users.slots[i];
        for (gw_notify_sub_t *s = u ? u->subs : NULL; s; s = s->next)
            if (s->live) {
                self->resyncs++;
                s_send_control(self, s, "resync", self->last_seq);
            }
    }
}

void gw_notify_advance(gw_notify_t *self, uint64_t next)
{
    if (next > 0 && next - 1 > self->last_seq)
        self->last_seq = next - 1;
}

int gw_notify_event(gw_notify_t *self, const mb_event_t *ev)
{
    self->events++;
    if (ev->seq > self->last_seq)
        self->last_seq = ev->seq;
    s_meaning_t m;
    s_entry_t *e = NULL;
    if (ev->invalid || !s_read_event(ev, &m) || !(e = s_entry_new(self, ev, &m))) {
        self->skipped++;
        mb_debug(0, "ws: skipped event %" PRIu64 " (%.*s): %s", ev->seq, (int)ev->topic_len,
                 ev->topic ? ev->topic : "", ev->invalid ? ev->invalid : "malformed for its topic");
        return MB_EINVAL;
    }
    if (m.follow_user) {
        s_user_t *u = s_map_get(&self->users, m.follow_user, m.follow_user_len);
        if (u && u->state == S_LOADING)
            s_pending_add(u, m.follow_pid, m.follow_pid_len, m.follow_add);
        if (u && m.follow_add)
            s_follow_add(self, u, m.follow_pid, m.follow_pid_len);
        else if (u)
            s_follow_del(self, u, m.follow_pid, m.follow_pid_len);
    }
    s_ring_push(self, e);
    s_fan_out(self, e);
    if (m.playlist_deleted)
        s_playlist_forget(self, m.playlist, m.playlist_len);
    if (m.gone && self->cfg.gone) {
        s_user_t *u = s_map_get(&self->users, e->users[0], strlen(e->users[0]));
        for (gw_notify_sub_t *s = u ? u->subs : NULL, *next; s; s = next) {
            next = s->next;
            self->cfg.gone(s, self->cfg.cls);
        }
    }
    return 0;
}

int gw_notify_attach(gw_notify_t *self, gw_notify_sub_t *sub, const char *user_id, bool has_since,
                     uint64_t since)
{
    size_t len = strlen(user_id);
    s_user_t *u = s_map_get(&self->users, user_id, len);
    if (!u) {
        u = mb_calloc(1, sizeof *u);
        u->id = mb_strndup(user_id, len);
        u->state = S_UNKNOWN;
        s_map_put(&self->users, u);
    }
    sub->user = u;
    sub->prev = NULL;
    sub->next = u->subs;
    if (u->subs)
        u->subs->prev = sub;
    u->subs = sub;
    u->n_subs++;
    self->subs++;
    sub->resume = has_since;
    sub->from = has_since ? (since == UINT64_MAX ? since : since + 1) : self->last_seq + 1;
    sub->live = false;
    switch (u->state) {
    case S_READY:
        s_go_live(self, u, sub);
        return GW_NOTIFY_LIVE;
    case S_FAILED:
        /* Live at once without followed playlists, and try again. */
        u->state = S_LOADING;
        s_go_live(self, u, sub);
        return GW_NOTIFY_LOAD;
    case S_LOADING:
        return GW_NOTIFY_WAIT;
    default:
        u->state = S_LOADING;
        return GW_NOTIFY_WAIT | GW_NOTIFY_LOAD;
    }
}

void gw_notify_detach(gw_notify_t *self, gw_notify_sub_t *sub)
{
    s_user_t *u = sub->user;
    if (!u)
        return;
    if (sub->prev)
        sub->prev->next = sub->next;
    else
        u->subs = sub->next;
    if (sub->next)
        sub->next->prev = sub->prev;
    sub->user = NULL;
    sub->prev = sub->next = NULL;
    u->n_subs--;
    self->subs--;
    if (u->n_subs == 0)
        s_user_free(self, u);
}

void gw_notify_follows(gw_notify_t *self, const char *user_id, const char *const *ids, size_t n,
                       bool ok)
{
    s_user_t *u = s_map_get(&self->users, user_id, strlen(user_id));
    if (!u || u->state != S_LOADING)
        return;
    if (ok) {
        s_follows_clear(self, u);
        for (size_t i = 0; i < n; i++)
            if (ids[i] && ids[i][0])
                s_follow_add(self, u, ids[i], strlen(ids[i]));
    }
    /* What changed while the list was on its way, in order, on top: each
       change is idempotent, so one the list already shows does no harm. */
    for (size_t i = 0; i < u->n_pending; i++) {
        const s_change_t *c = &u->pending[i];
        if (c->add)
            s_follow_add(self, u, c->pid, strlen(c->pid));
        else
            s_follow_del(self, u, c->pid, strlen(c->pid));
    }
    s_pending_clear(u);
    u->state = ok ? S_READY : S_FAILED;
    for (gw_notify_sub_t *s = u->subs, *next; s; s = next) {
        next = s->next;
        if (!s->live)
            s_go_live(self, u, s);
    }
}

size_t gw_notify_user_subs(const gw_notify_t *self, const char *user_id)
{
    const s_user_t *u = s_map_get(&self->users, user_id, strlen(user_id));
    return u ? u->n_subs : 0;
}

bool gw_notify_follows_playlist(gw_notify_t *self, const char *user_id, const char *pid)
{
    const s_user_t *u = s_map_get(&self->users, user_id, strlen(user_id));
    const s_playlist_t *p = s_map_get(&self->playlists, pid, strlen(pid));
    return u && p && s_user_follows(u, p);
}

void gw_notify_stats(const gw_notify_t *self, gw_notify_stats_t *stats)
{
    *stats = (gw_notify_stats_t){.users = self->users.n,
                                 .subs = self->subs,
                                 .playlists = self->playlists.n,
                                 .ring = self->ring_n,
                                 .ring_bytes = self->ring_bytes,
                                 .covered_from = self->covered_from,
                                 .last_seq = self->last_seq,
                                 .events = self->events,
                                 .skipped = self->skipped,
                                 .frames = self->frames,
                                 .resyncs = self->resyncs};
}
