/*  stats_play — rules and wire form of the play event (stats_play.h). */
#include "stats_play.h"

#include <stdio.h>
#include <string.h>

#include "mb_msgpack.h"

static const char *const s_contexts[] = {"album", "playlist", "search", "radio", "other"};
static const char *const s_sources[] = {"client", "import"};

bool stats_play_is_stream(const stats_play_t *p)
{
    return p->ms_played >= STATS_STREAM_MS;
}

const char *stats_context_name(stats_context_t c)
{
    return (unsigned)c < sizeof s_contexts / sizeof *s_contexts ? s_contexts[c] : "other";
}

const char *stats_source_name(stats_source_t s)
{
    return (unsigned)s < sizeof s_sources / sizeof *s_sources ? s_sources[s] : "client";
}

bool stats_context_parse(const char *s, size_t len, stats_context_t *out)
{
    for (size_t i = 0; i < sizeof s_contexts / sizeof *s_contexts; i++)
        if (strlen(s_contexts[i]) == len && memcmp(s_contexts[i], s, len) == 0) {
            *out = (stats_context_t)i;
            return true;
        }
    return false;
}

bool stats_id_valid(const char *s, size_t len)
{
    if (!s || len == 0 || len > STATS_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || c == ':')
            return false;
    }
    return true;
}

bool stats_country_valid(const char *s, size_t len)
{
    return s && len == STATS_COUNTRY_LEN && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' &&
           s[1] <= 'Z';
}

void stats_play_pack(msgpack_packer *pk, const stats_play_t *p)
{
    msgpack_pack_map(pk, 6);
    mb_pack_cstr(pk, "user");
    mb_pack_strn(pk, p->user.ptr, p->user.len);
    mb_pack_cstr(pk, "track");
    mb_pack_strn(pk, p->track.ptr, p->track.len);
    mb_pack_cstr(pk, "started_at");
    msgpack_pack_uint64(pk, (uint64_t)p->started_at);
    mb_pack_cstr(pk, "ms_played");
    msgpack_pack_uint64(pk, (uint64_t)p->ms_played);
    mb_pack_cstr(pk, "context");
    msgpack_pack_map(pk, 2);
    mb_pack_cstr(pk, "type");
    mb_pack_cstr(pk, stats_context_name(p->context));
    mb_pack_cstr(pk, "id");
    if (p->context_id.ptr)
        mb_pack_strn(pk, p->context_id.ptr, p->context_id.len);
    else
        msgpack_pack_nil(pk);
    mb_pack_cstr(pk, "source");
    mb_pack_cstr(pk, stats_source_name(p->source));
}

static const char *s_decode_context(const msgpack_object *o, stats_play_t *p)
{
    if (!o || o->type != MSGPACK_OBJECT_MAP)
        return "data.context must be a map {type, id}";
    const char *s;
    size_t len;
    if (!mb_obj_str(mb_map_get(o, "type"), &s, &len) || !stats_context_parse(s, len, &p->context))
        return "data.context.type must be album, playlist, search, radio or other";
    const msgpack_object *id = mb_map_get(o, "id");
    p->context_id = (stats_str_t){NULL, 0};
    if (id && id->type != MSGPACK_OBJECT_NIL) {
        if (!mb_obj_str(id, &s, &len) || len == 0 || len > STATS_CONTEXT_ID_MAX ||
            memchr(s, '\0', len))
            return "data.context.id must be nil or a string of 1..128 bytes";
        p->context_id = (stats_str_t){s, len};
    }
    return NULL;
}

const char *stats_play_decode(const msgpack_object *data, stats_play_t *p)
{
    memset(p, 0, sizeof *p);
    if (!data || data->type != MSGPACK_OBJECT_MAP)
        return "data must be a map";
    const char *s;
    size_t len;
    if (!mb_obj_str(mb_map_get(data, "user"), &s, &len) || !stats_id_valid(s, len))
        return "data.user must be an id (1..64 bytes, no ':' or control characters)";
    p->user = (stats_str_t){s, len};
    if (!mb_obj_str(mb_map_get(data, "track"), &s, &len) || !stats_id_valid(s, len))
        return "data.track must be an id (1..64 bytes, no ':' or control characters)";
    p->track = (stats_str_t){s, len};
    if (!mb_obj_int(mb_map_get(data, "started_at"), &p->started_at) ||
        p->started_at < STATS_TIME_MIN || p->started_at >= STATS_TIME_LIMIT)
        return "data.started_at must be ms since the epoch, from 2000 to 2099";
    if (!mb_obj_int(mb_map_get(data, "ms_played"), &p->ms_played) || p->ms_played < 0 ||
        p->ms_played > STATS_MS_PLAYED_MAX)
        return "data.ms_played must be an integer from 0 to 86400000";
    const char *why = s_decode_context(mb_map_get(data, "context"), p);
    if (why)
        return why;
    const msgpack_object *src = mb_map_get(data, "source");
    if (mb_obj_str_eq(src, "client"))
        p->source = STATS_SOURCE_CLIENT;
    else if (mb_obj_str_eq(src, "import"))
        p->source = STATS_SOURCE_IMPORT;
    else
        return "data.source must be client or import";
    return NULL;
}

const char *stats_play_check_key(const char *key, size_t len, const stats_play_t *p)
{
    const char *tag = p->source == STATS_SOURCE_CLIENT ? "c:" : "i:";
    size_t head = 2 + p->user.len + 1;
    if (!key || len <= head || len > STATS_KEY_MAX || memcmp(key, tag, 2) != 0 ||
        memcmp(key + 2, p->user.ptr, p->user.len) != 0 || key[head - 1] != ':')
        return p->source == STATS_SOURCE_CLIENT
                   ? "the key of a client play must be c:<user>:<client id>"
                   : "the key of an imported play must be i:<user>:<listened_at>:<track>";
    if (p->source == STATS_SOURCE_IMPORT) {
        size_t tail = 1 + p->track.len;
        if (len <= head + tail || key[len - tail] != ':' ||
            memcmp(key + len - p->track.len, p->track.ptr, p->track.len) != 0)
            return "the key of an imported play must end with :<track>";
    }
    return NULL;
}

size_t stats_play_client_key(stats_str_t user, stats_str_t client_id, char out[STATS_KEY_MAX + 1])
{
    int n = snprintf(out, STATS_KEY_MAX + 1, "c:%.*s:%.*s", (int)user.len, user.ptr,
                     (int)client_id.len, client_id.ptr);
    return n > 0 && n <= STATS_KEY_MAX ? (size_t)n : 0;
}

size_t stats_play_import_key(stats_str_t user, int64_t listened_at, stats_str_t track,
                             char out[STATS_KEY_MAX + 1])
{
    int n = snprintf(out, STATS_KEY_MAX + 1, "i:%.*s:%lld:%.*s", (int)user.len, user.ptr,
                     (long long)listened_at, (int)track.len, track.ptr);
    return n > 0 && n <= STATS_KEY_MAX ? (size_t)n : 0;
}
