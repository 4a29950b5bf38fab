/*  playlists_model — the playlist record and the rules of client input. */
#include "playlists_model.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mb_log.h"
#include "mb_msgpack.h"

static const char s_base62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* ---- ids and text ---------------------------------------------------------- */

bool playlists_id_valid(const char *s, size_t len)
{
    if (!s || len == 0 || len > PLAYLISTS_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == '~'))
            return false;
    }
    return true;
}

bool playlists_id_arg(mb_call_t *call, const msgpack_object *o, const char *field,
                      playlists_str_t *out)
{
    if (o && mb_obj_str(o, &out->ptr, &out->len) && playlists_id_valid(out->ptr, out->len))
        return true;
    mb_call_error(call, 400, "invalid", field,
                  "%s must be an id: 1 to %d characters of A-Z, a-z, 0-9, '.', '_', '-', '~'",
                  field, PLAYLISTS_ID_MAX);
    return false;
}

bool playlists_track_ref(const msgpack_object *o, bool uri, playlists_str_t *id)
{
    const char *s;
    size_t len;
    if (!mb_obj_str(o, &s, &len))
        return false;
    if (uri) {
        size_t plen = strlen(PLAYLISTS_TRACK_URI_PREFIX);
        if (len <= plen || memcmp(s, PLAYLISTS_TRACK_URI_PREFIX, plen) != 0)
            return false;
        s += plen;
        len -= plen;
    }
    if (!playlists_id_valid(s, len))
        return false;
    *id = (playlists_str_t){s, len};
    return true;
}

bool playlists_text_valid(const char *s, size_t len, size_t min_chars, size_t max_chars)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t chars = 0, i = 0;
    while (i < len) {
        unsigned char c = p[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f)
                return false;
            n = 1;
            cp = c;
        } else if ((c & 0xe0) == 0xc0) {
            n = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 4;
            cp = c & 0x07;
        } else
            return false;
        if (i + n > len)
            return false;
        for (size_t k = 1; k < n; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        /* Overlong forms, surrogates and code points past U+10FFFF are
           not UTF-8. */
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[n] || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
            return false;
        i += n;
        chars++;
    }
    return chars >= min_chars && chars <= max_chars;
}

/* ---- the record ----------------------------------------------------------------- */

static void s_copy(char *dst, size_t cap, const char *src, size_t len)
{
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

void playlists_playlist_init(playlists_playlist_t *p, playlists_str_t owner)
{
    memset(p, 0, sizeof *p);
    s_copy(p->owner, sizeof p->owner, owner.ptr, owner.len);
    p->public_ = true;
    p->version = 1;
    playlists_snapshot_make(p->version, p->snapshot_id);
    playlists_time_format(playlists_now_ms(), p->created_at);
    memcpy(p->updated_at, p->created_at, sizeof p->updated_at);
}

static bool s_bad(mb_call_t *call, const char *field, const char *message)
{
    mb_call_error(call, 400, "invalid", field, "%s", message);
    return false;
}

bool playlists_playlist_apply(mb_call_t *call, const msgpack_object *body, playlists_playlist_t *p,
                              bool create, bool *changed)
{
    *changed = false;
    if (!body || body->type != MSGPACK_OBJECT_MAP)
        return s_bad(call, "body", "body must be a JSON object");
    bool name_given = false;
    for (uint32_t i = 0; i < body->via.map.size; i++) {
        const msgpack_object *k = &body->via.map.ptr[i].key, *v = &body->via.map.ptr[i].val;
        const char *s;
        size_t len;
        bool b;
        if (mb_obj_str_eq(k, "name")) {
            if (!mb_obj_str(v, &s, &len) || !playlists_text_valid(s, len, 1, PLAYLISTS_NAME_MAX))
                return s_bad(call, "body.name",
                             "name must be 1 to 100 characters of UTF-8 without control "
                             "characters");
            name_given = true;
            *changed |= strlen(p->name) != len || memcmp(p->name, s, len) != 0;
            s_copy(p->name, sizeof p->name, s, len);
        } else if (mb_obj_str_eq(k, "description")) {
            if (v->type == MSGPACK_OBJECT_NIL) {
                *changed |= p->has_description;
                p->has_description = false;
                p->description[0] = '\0';
                continue;
            }
            if (!mb_obj_str(v, &s, &len) ||
                !playlists_text_valid(s, len, 0, PLAYLISTS_DESCRIPTION_MAX))
                return s_bad(call, "body.description",
                             "description must be null or at most 300 characters of UTF-8 "
                             "without control characters");
            *changed |= !p->has_description || strlen(p->description) != len ||
                        memcmp(p->description, s, len) != 0;
            p->has_description = true;
            s_copy(p->description, sizeof p->description, s, len);
        } else if (mb_obj_str_eq(k, "public")) {
            if (!mb_obj_bool(v, &b))
                return s_bad(call, "body.public", "public must be true or false");
            *changed |= p->public_ != b;
            p->public_ = b;
        } else if (mb_obj_str_eq(k, "collaborative")) {
            if (!mb_obj_bool(v, &b))
                return s_bad(call, "body.collaborative", "collaborative must be true or false");
            *changed |= p->collaborative != b;
            p->collaborative = b;
        } else {
            char field[96];
            if (mb_obj_str(k, &s, &len) && len < 64 && playlists_text_valid(s, len, 1, 64))
                snprintf(field, sizeof field, "body.%.*s", (int)len, s);
            else
                snprintf(field, sizeof field, "body");
            mb_call_error(call, 400, "invalid", field,
                          "body may hold only name, description, public and collaborative");
            return false;
        }
    }
    if (create && !name_given)
        return s_bad(call, "body.name", "name is required");
    return true;
}

void playlists_playlist_bump(playlists_playlist_t *p)
{
    p->version++;
    playlists_snapshot_make(p->version, p->snapshot_id);
    playlists_time_format(playlists_now_ms(), p->updated_at);
}

int playlists_collaborator_index(const playlists_playlist_t *p, playlists_str_t user)
{
    for (size_t i = 0; i < p->n_collaborators; i++)
        if (strlen(p->collaborators[i]) == user.len &&
            memcmp(p->collaborators[i], user.ptr, user.len) == 0)
            return (int)i;
    return -1;
}

bool playlists_is_owner(const playlists_playlist_t *p, playlists_str_t user)
{
    return strlen(p->owner) == user.len && memcmp(p->owner, user.ptr, user.len) == 0;
}

bool playlists_can_edit(const playlists_playlist_t *p, playlists_str_t user)
{
    return playlists_is_owner(p, user) ||
           (p->collaborative && playlists_collaborator_index(p, user) >= 0);
}

bool playlists_can_read(const playlists_playlist_t *p, playlists_str_t user)
{
    return p->public_ || playlists_can_edit(p, user);
}

void playlists_pack_str(msgpack_packer *pk, playlists_str_t s)
{
    if (s.ptr)
        mb_pack_strn(pk, s.ptr, s.len);
    else
        msgpack_pack_nil(pk);
}

static void s_pack_common(msgpack_packer *pk, const playlists_playlist_t *p)
{
    mb_pack_cstr(pk, "id");
    mb_pack_cstr(pk, p->id);
    mb_pack_cstr(pk, "name");
    mb_pack_cstr(pk, p->name);
    mb_pack_cstr(pk, "description");
    if (p->has_description)
        mb_pack_cstr(pk, p->description);
    else
        msgpack_pack_nil(pk);
    mb_pack_cstr(pk, "public");
    if (p->public_)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    mb_pack_cstr(pk, "collaborative");
    if (p->collaborative)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    mb_pack_cstr(pk, "owner");
    mb_pack_cstr(pk, p->owner);
    mb_pack_cstr(pk, "collaborators");
    msgpack_pack_array(pk, p->n_collaborators);
    for (size_t i = 0; i < p->n_collaborators; i++)
        mb_pack_cstr(pk, p->collaborators[i]);
    mb_pack_cstr(pk, "snapshot_id");
    mb_pack_cstr(pk, p->snapshot_id);
    mb_pack_cstr(pk, "items_total");
    msgpack_pack_uint64(pk, p->items_total);
    mb_pack_cstr(pk, "created_at");
    mb_pack_cstr(pk, p->created_at);
    mb_pack_cstr(pk, "updated_at");
    mb_pack_cstr(pk, p->updated_at);
}

#define S_COMMON_FIELDS 11

void playlists_playlist_pack(msgpack_packer *pk, const playlists_playlist_t *p)
{
    msgpack_pack_map(pk, S_COMMON_FIELDS + 1);
    s_pack_common(pk, p);
    mb_pack_cstr(pk, "version");
    msgpack_pack_uint64(pk, p->version);
}

void playlists_playlist_pack_public(msgpack_packer *pk, const playlists_playlist_t *p,
                                    size_t followers, uint32_t extra)
{
    msgpack_pack_map(pk, S_COMMON_FIELDS + 1 + extra);
    s_pack_common(pk, p);
    mb_pack_cstr(pk, "followers");
    msgpack_pack_uint64(pk, followers);
}

/*  Copies string `o` into dst (cap bytes with the NUL) when it is a string
    of 1..cap-1 bytes (0.. with allow_empty). */
static bool s_str_into(const msgpack_object *o, char *dst, size_t cap, bool allow_empty)
{
    const char *s;
    size_t len;
    if (!o || !mb_obj_str(o, &s, &len) || len >= cap || (len == 0 && !allow_empty))
        return false;
    memcpy(dst, s, len);
    dst[len] = '\0';
    return true;
}

static bool s_uint(const msgpack_object *o, uint64_t *out)
{
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *out = o->via.u64;
    return true;
}

bool playlists_playlist_decode(const msgpack_object *o, playlists_playlist_t *p)
{
    memset(p, 0, sizeof *p);
    if (!o || o->type != MSGPACK_OBJECT_MAP)
        return false;
    const msgpack_object *desc = mb_map_get(o, "description");
    const msgpack_object *collab = mb_map_get(o, "collaborators");
    if (!s_str_into(mb_map_get(o, "id"), p->id, sizeof p->id, false) ||
        !s_str_into(mb_map_get(o, "name"), p->name, sizeof p->name, false) || !desc ||
        !mb_obj_bool(mb_map_get(o, "public"), &p->public_) ||
        !mb_obj_bool(mb_map_get(o, "collaborative"), &p->collaborative) ||
        !s_str_into(mb_map_get(o, "owner"), p->owner, sizeof p->owner, false) || !collab ||
        collab->type != MSGPACK_OBJECT_ARRAY ||
        collab->via.array.size > PLAYLISTS_COLLABORATORS_MAX ||
        !s_uint(mb_map_get(o, "version"), &p->version) ||
        !s_str_into(mb_map_get(o, "snapshot_id"), p->snapshot_id, sizeof p->snapshot_id, false) ||
        !s_uint(mb_map_get(o, "items_total"), &p->items_total) ||
        !s_str_into(mb_map_get(o, "created_at"), p->created_at, sizeof p->created_at, false) ||
        !s_str_into(mb_map_get(o, "updated_at"), p->updated_at, sizeof p->updated_at, false))
        return false;
    if (desc->type != MSGPACK_OBJECT_NIL) {
        if (!s_str_into(desc, p->description, sizeof p->description, true))
            return false;
        p->has_description = true;
    }
    p->n_collaborators = collab->via.array.size;
    for (size_t i = 0; i < p->n_collaborators; i++)
        if (!s_str_into(&collab->via.array.ptr[i], p->collaborators[i], PLAYLISTS_ID_MAX + 1,
                        false))
            return false;
    return true;
}

/*  Packs `id` unless it is among the first `n` of seen[], and records it. */
static void s_audience_add(msgpack_packer *tmp, const char **seen, size_t *n, const char *id)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp(seen[i], id) == 0)
            return;
    seen[(*n)++] = id;
    mb_pack_cstr(tmp, id);
}

void playlists_pack_audience(msgpack_packer *pk, const playlists_playlist_t *p,
                             const playlists_playlist_t *old)
{
    /* At most two owners (the same one) and twice the collaborators. */
    const char *seen[2 * (PLAYLISTS_COLLABORATORS_MAX + 1)];
    size_t n = 0;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer tmp;
    msgpack_packer_init(&tmp, &buf, msgpack_sbuffer_write);
    const playlists_playlist_t *both[2] = {p, old};
    for (int k = 0; k < 2; k++) {
        const playlists_playlist_t *q = both[k];
        if (!q)
            continue;
        s_audience_add(&tmp, seen, &n, q->owner);
        if (q->collaborative)
            for (size_t i = 0; i < q->n_collaborators; i++)
                s_audience_add(&tmp, seen, &n, q->collaborators[i]);
    }
    msgpack_pack_array(pk, n);
    if (buf.size)
        mb_pack_raw(pk, buf.data, buf.size);
    msgpack_sbuffer_destroy(&buf);
}

/* ---- snapshot ids and If-Match ------------------------------------------------------- */

void playlists_snapshot_make(uint64_t version, char out[PLAYLISTS_SNAPSHOT_LEN + 1])
{
    if (sodium_init() < 0) {
        mb_error(0, "libsodium failed to initialise");
        abort();
    }
    uint64_t v = version;
    for (int i = 5; i >= 0; i--) {
        out[i] = s_base62[v % 62];
        v /= 62;
    }
    for (int i = 6; i < PLAYLISTS_SNAPSHOT_LEN; i++)
        out[i] = s_base62[randombytes_uniform(62)];
    out[PLAYLISTS_SNAPSHOT_LEN] = '\0';
}

static bool s_blank(char c)
{
    return c == ' ' || c == '\t';
}

bool playlists_if_match(const char *header, size_t len, const char *snapshot)
{
    size_t slen = strlen(snapshot), i = 0;
    while (i < len) {
        while (i < len && (s_blank(header[i]) || header[i] == ','))
            i++;
        size_t start = i;
        while (i < len && header[i] != ',')
            i++;
        size_t end = i;
        while (end > start && s_blank(header[end - 1]))
            end--;
        const char *tag = header + start;
        size_t tlen = end - start;
        if (tlen == 1 && tag[0] == '*')
            return true;
        if (tlen >= 2 && tag[0] == '"' && tag[tlen - 1] == '"') {
            tag++;
            tlen -= 2;
        }
        if (tlen == slen && tlen > 0 && memcmp(tag, snapshot, slen) == 0)
            return true;
    }
    return false;
}

/* ---- time ------------------------------------------------------------------------------ */

int64_t playlists_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void playlists_time_format(int64_t ms, char out[PLAYLISTS_TIME_MAX + 1])
{
    if (ms < 0)
        ms = 0; /* a stored time before 1970 is not one we wrote */
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    size_t n = strftime(out, PLAYLISTS_TIME_MAX + 1, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, PLAYLISTS_TIME_MAX + 1 - n, ".%03dZ", (int)(ms % 1000));
}
