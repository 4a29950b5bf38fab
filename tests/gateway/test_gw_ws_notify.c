/*  gateway/notify: who gets which event — registry, follower index,
    frames, the ring and resuming. No sockets: frames land in arrays. */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_error.h"
#include "mb_msgpack.h"
#include "notify.h"

#define S_MAX_FRAMES 64

typedef struct {
    gw_notify_sub_t sub; /* first: a sub is its client */
    char *frames[S_MAX_FRAMES];
    size_t n;
    bool refuse; /* answer deliver with an error */
    bool gone;
} s_client_t;

static int s_deliver(gw_notify_sub_t *sub, const char *text, size_t len, void *cls)
{
    (void)cls;
    s_client_t *c = (s_client_t *)sub;
    if (c->refuse)
        return MB_EFULL;
    cr_assert_lt(c->n, S_MAX_FRAMES);
    c->frames[c->n++] = strndup(text, len);
    return 0;
}

static void s_gone(gw_notify_sub_t *sub, void *cls)
{
    (void)cls;
    ((s_client_t *)sub)->gone = true;
}

static gw_notify_t *s_new(size_t ring)
{
    gw_notify_config_t cfg = {.ring_events = ring,
                              .ring_bytes = 1 << 20,
                              .follows_max = 100,
                              .replay_max = 10,
                              .deliver = s_deliver,
                              .gone = s_gone};
    return gw_notify_new(&cfg);
}

static void s_clear(s_client_t *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->frames[i]);
    c->n = 0;
}

/*  Hands notify one event whose data is the msgpack of `fmt`: a tiny
    description "k=v,k=v" where v is a string, t/f for booleans, or
    [a b c] for an array of strings. */
static int s_event(gw_notify_t *n, uint64_t seq, const char *topic, const char *desc)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    char *copy = strdup(desc), *save = NULL;
    size_t count = 0;
    for (const char *p = desc; *p; p++)
        count += *p == ',';
    msgpack_pack_map(&pk, (uint32_t)count + 1);
    for (char *kv = strtok_r(copy, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        *eq = '\0';
        mb_pack_cstr(&pk, kv);
        const char *v = eq + 1;
        if (!strcmp(v, "t"))
            msgpack_pack_true(&pk);
        else if (!strcmp(v, "f"))
            msgpack_pack_false(&pk);
        else if (v[0] == '[') {
            char items[256], *s2 = NULL;
            snprintf(items, sizeof items, "%.*s", (int)strlen(v) - 2, v + 1);
            size_t k = 0;
            char tmp[256];
            snprintf(tmp, sizeof tmp, "%s", items);
            for (char *t = strtok_r(tmp, " ", &s2); t; t = strtok_r(NULL, " ", &s2))
                k++;
            msgpack_pack_array(&pk, (uint32_t)k);
            for (char *t = strtok_r(items, " ", &s2); t; t = strtok_r(NULL, " ", &s2))
                mb_pack_cstr(&pk, t);
        } else
            mb_pack_cstr(&pk, v);
    }
    free(copy);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    cr_assert_eq(msgpack_unpack_next(&u, buf.data, buf.size, NULL), MSGPACK_UNPACK_SUCCESS);
    mb_event_t ev = {.seq = seq,
                     .topic = topic,
                     .topic_len = strlen(topic),
                     .key = "",
                     .data = &u.data};
    int rc = gw_notify_event(n, &ev);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&buf);
    return rc;
}

/*  The usual life: a user connects, its follow list arrives, frames
    reach it for its library, its playlists and the ones it follows. */
Test(gw_notify, usage)
{
    gw_notify_t *n = s_new(100);
    gw_notify_reset(n, 10, false);
    s_client_t alice = {0};
    cr_assert_eq(gw_notify_attach(n, &alice.sub, "alice", false, 0),
                 GW_NOTIFY_WAIT | GW_NOTIFY_LOAD);
    cr_assert_eq(alice.n, 0, "nothing before the follow list");
    const char *follows[] = {"p1"};
    gw_notify_follows(n, "alice", follows, 1, true);
    cr_assert_eq(alice.n, 1);
    cr_assert_str_eq(alice.frames[0], "{\"type\":\"ready\",\"seq\":9}");
    s_clear(&alice);

    /* Her library. */
    cr_assert_eq(s_event(n, 10, "playlists.library", "user=alice,kind=tracks,action=added,ids=[t1 t2]"), 0);
    cr_assert_eq(alice.n, 1);
    cr_assert_str_eq(alice.frames[0],
                     "{\"seq\":10,\"topic\":\"playlists.library\",\"type\":\"added\",\"data\":"
                     "{\"user\":\"alice\",\"kind\":\"tracks\",\"action\":\"added\",\"ids\":[\"t1\","
                     "\"t2\"]}}");
    s_clear(&alice);
    /* Someone else's library. */
    s_event(n, 11, "playlists.library", "user=bob,kind=tracks,action=added,ids=[t1]");
    cr_assert_eq(alice.n, 0);
    /* A public playlist she follows (bob's): the whole frame, audience left out. */
    s_event(n, 12, "playlists.playlist",
            "action=changed,id=p1,owner=bob,snapshot_id=s2,public=t,audience=[bob]");
    cr_assert_eq(alice.n, 1);
    cr_assert_str_eq(alice.frames[0],
                     "{\"seq\":12,\"topic\":\"playlists.playlist\",\"type\":\"changed\",\"data\":"
                     "{\"action\":\"changed\",\"id\":\"p1\",\"owner\":\"bob\",\"snapshot_id\":"
                     "\"s2\",\"public\":true}}");
    s_clear(&alice);
    /* Gone private: followers only learn that. */
    s_event(n, 13, "playlists.playlist",
            "action=changed,id=p1,owner=bob,snapshot_id=s3,public=f,audience=[bob]");
    cr_assert_str_eq(alice.frames[0],
                     "{\"seq\":13,\"topic\":\"playlists.playlist\",\"type\":\"changed\",\"data\":"
                     "{\"id\":\"p1\",\"public\":false}}");
    s_clear(&alice);
    /* Her own (collaborative) playlist, where she is also a follower: once. */
    const char *more[] = {"p1", "p9"};
    (void)more;
    s_event(n, 14, "playlists.follow", "action=followed,playlist=p9,user=alice,owner=alice,public=t");
    cr_assert_eq(alice.n, 1, "the follow itself is hers");
    s_clear(&alice);
    cr_assert(gw_notify_follows_playlist(n, "alice", "p9"));
    s_event(n, 15, "playlists.playlist",
            "action=changed,id=p9,owner=alice,snapshot_id=x,public=t,audience=[alice carol]");
    cr_assert_eq(alice.n, 1, "one frame whatever the reasons");
    s_clear(&alice);
    /* Her account. */
    s_event(n, 16, "users.user", "action=tier_changed,id=alice");
    cr_assert_eq(alice.n, 1);
    cr_assert(strstr(alice.frames[0], "\"type\":\"tier_changed\""));
    s_clear(&alice);
    /* Unfollowed: no more frames from p1. */
    s_event(n, 17, "playlists.follow", "action=unfollowed,playlist=p1,user=alice,owner=bob,public=t");
    s_clear(&alice);
    s_event(n, 18, "playlists.playlist", "action=changed,id=p1,owner=bob,public=t,audience=[bob]");
    cr_assert_eq(alice.n, 0);

    gw_notify_stats_t st;
    gw_notify_stats(n, &st);
    cr_assert_eq(st.users, 1);
    cr_assert_eq(st.subs, 1);
    cr_assert_eq(st.playlists, 1); /* p9 */
    cr_assert_eq(st.last_seq, 18);
    gw_notify_detach(n, &alice.sub);
    gw_notify_stats(n, &st);
    cr_assert_eq(st.users, 0);
    cr_assert_eq(st.playlists, 0, "the index goes with its last follower");
    s_clear(&alice);
    gw_notify_destroy(&n);
    gw_notify_destroy(&n);
}

/*  A client that comes back with since gets what it missed, then ready;
    one from before the ring gets resync. */
Test(gw_notify, resume_and_resync)
{
    gw_notify_t *n = s_new(3);
    gw_notify_reset(n, 1, false);
    s_client_t a = {0};
    gw_notify_attach(n, &a.sub, "alice", false, 0);
    gw_notify_follows(n, "alice", NULL, 0, true);
    s_clear(&a);
    for (uint64_t seq = 1; seq <= 3; seq++)
        s_event(n, seq, "playlists.library", "user=alice,kind=tracks,action=added,ids=[t]");
    cr_assert_eq(a.n, 3);
    s_clear(&a);
    gw_notify_detach(n, &a.sub);

    /* Missed 3: it comes again. Her follow list is asked for again too
       (her record left with her last connection). */
    s_client_t b = {0};
    cr_assert_eq(gw_notify_attach(n, &b.sub, "alice", true, 2), GW_NOTIFY_WAIT | GW_NOTIFY_LOAD);
    s_event(n, 4, "playlists.library", "user=alice,kind=tracks,action=removed,ids=[t]");
    cr_assert_eq(b.n, 0, "waiting: kept in the ring");
    gw_notify_follows(n, "alice", NULL, 0, false);
    cr_assert_eq(b.n, 3);
    cr_assert(strstr(b.frames[0], "\"seq\":3,"));
    cr_assert(strstr(b.frames[1], "\"seq\":4,"));
    cr_assert_str_eq(b.frames[2], "{\"type\":\"ready\",\"seq\":4}");
    s_clear(&b);

    /* The ring holds 2..4 now (3 frames): since 0 is too old. */
    s_client_t c = {0};
    cr_assert_eq(gw_notify_attach(n, &c.sub, "alice", true, 0), GW_NOTIFY_LOAD,
                 "failed list: live at once, asked again");
    cr_assert_eq(c.n, 2);
    cr_assert_str_eq(c.frames[0], "{\"type\":\"resync\",\"seq\":4}");
    cr_assert_str_eq(c.frames[1], "{\"type\":\"ready\",\"seq\":4}");
    /* A client ahead of us keeps its place and gets nothing twice. */
    s_client_t d = {0};
    gw_notify_follows(n, "alice", NULL, 0, true);
    gw_notify_attach(n, &d.sub, "alice", true, 5);
    cr_assert_str_eq(d.frames[d.n - 1], "{\"type\":\"ready\",\"seq\":5}");
    s_clear(&d);
    s_event(n, 5, "playlists.library", "user=alice,kind=tracks,action=added,ids=[t]");
    cr_assert_eq(d.n, 0, "seq 5 was seen already");
    s_event(n, 6, "playlists.library", "user=alice,kind=tracks,action=added,ids=[t]");
    cr_assert_eq(d.n, 1);

    /* The broker lost its log: everyone live resyncs. */
    s_clear(&c);
    gw_notify_reset(n, 100, true);
    cr_assert_str_eq(c.frames[0], "{\"type\":\"resync\",\"seq\":99}");
    gw_notify_stats_t st;
    gw_notify_stats(n, &st);
    cr_assert_eq(st.ring, 0);
    cr_assert_eq(st.covered_from, 100);
    s_clear(&c);
    s_clear(&d);
    gw_notify_destroy(&n);
}

/*  Follows seen while the list was on its way are applied on top. */
Test(gw_notify, follows_while_loading)
{
    gw_notify_t *n = s_new(10);
    gw_notify_reset(n, 1, false);
    s_client_t a = {0};
    gw_notify_attach(n, &a.sub, "alice", false, 0);
    s_event(n, 1, "playlists.follow", "action=followed,playlist=p2,user=alice,owner=bob,public=t");
    s_event(n, 2, "playlists.follow", "action=unfollowed,playlist=p1,user=alice,owner=bob,public=t");
    const char *list[] = {"p1", "p2"}; /* read before the unfollow */
    gw_notify_follows(n, "alice", list, 2, true);
    cr_assert(!gw_notify_follows_playlist(n, "alice", "p1"));
    cr_assert(gw_notify_follows_playlist(n, "alice", "p2"));
    cr_assert_eq(a.n, 3, "both follow frames, replayed, then ready");
    /* A deleted playlist leaves the index. */
    s_clear(&a);
    s_event(n, 3, "playlists.playlist", "action=deleted,id=p2,owner=bob,public=t,audience=[bob]");
    cr_assert_eq(a.n, 1, "followers hear of the deletion");
    cr_assert(!gw_notify_follows_playlist(n, "alice", "p2"));
    s_clear(&a);
    gw_notify_destroy(&n);
}

Test(gw_notify, malformed_and_gone)
{
    gw_notify_t *n = s_new(10);
    gw_notify_reset(n, 1, false);
    s_client_t a = {0}, a2 = {0};
    gw_notify_attach(n, &a.sub, "alice", false, 0);
    gw_notify_follows(n, "alice", NULL, 0, true);
    gw_notify_attach(n, &a2.sub, "alice", false, 0);
    s_clear(&a);
    s_clear(&a2);
    cr_assert_eq(s_event(n, 1, "playlists.library", "kind=tracks,action=added"), MB_EINVAL);
    cr_assert_eq(s_event(n, 2, "playlists.playlist", "action=changed,id=p1"), MB_EINVAL);
    cr_assert_eq(s_event(n, 3, "catalog.track", "action=created,id=t1"), MB_EINVAL);
    cr_assert_eq(s_event(n, 4, "users.user", "id=alice"), MB_EINVAL, "no action");
    /* A refusing subscriber does not stop the others. */
    a.refuse = true;
    s_event(n, 5, "users.user", "action=deleted,id=alice");
    cr_assert_eq(a2.n, 1);
    cr_assert(a.gone && a2.gone, "both connections told to close");
    gw_notify_stats_t st;
    gw_notify_stats(n, &st);
    cr_assert_eq(st.skipped, 4);
    cr_assert_eq(st.events, 5);
    s_clear(&a2);
    gw_notify_destroy(&n);
}
