/*  catalog_harness — see catalog_harness.h. */
#include "catalog_harness.h"

#include <criterion/criterion.h>
#include <regex.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"

void h_open(size_t map_size)
{
    th_open(catalog_actor_def(), "test_catalog", map_size);
}

void h_setup(void)
{
    h_open(0);
}

th_reply_t h_call(const char *op, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    th_reply_t r = th_vcall(NULL, op, fmt, ap);
    va_end(ap);
    return r;
}

th_reply_t h_call_as(const char *auth, const char *op, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    th_reply_t r = th_vcall(auth, op, fmt, ap);
    va_end(ap);
    return r;
}

const char *h_new_artist(const char *name)
{
    th_reply_t r = th_ok(h_call("artist.create", "{\"body\":{\"name\":\"%s\"}}", name), 201);
    return th_str(r.body, "id");
}

const char *h_new_album(const char *title, const char *artist, const char *date)
{
    th_reply_t r = th_ok(h_call("album.create",
                            "{\"body\":{\"title\":\"%s\",\"artist_ids\":[\"%s\"],"
                            "\"release_date\":\"%s\"}}",
                            title, artist, date),
                     201);
    return th_str(r.body, "id");
}

const char *h_new_track(const char *album, const char *artist, int disc, int track)
{
    th_reply_t r = th_ok(h_call("track.create",
                            "{\"body\":{\"title\":\"t %d.%d\",\"artist_ids\":[\"%s\"],"
                            "\"album_id\":\"%s\",\"disc_number\":%d,\"track_number\":%d,"
                            "\"duration_ms\":180000}}",
                            disc, track, artist, album, disc, track),
                     201);
    return th_str(r.body, "id");
}

char *h_repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

bool h_rfc3339(const char *s)
{
    regex_t re;
    cr_assert_eq(regcomp(&re,
                         "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{3})?Z$",
                         REG_EXTENDED | REG_NOSUB),
                 0);
    bool ok = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

/*  Checks that exactly one event was added since the outbox held
    `before`, and that it is {action, id, object} on `topic` keyed by id
    (`object` NULL: nil). */
void h_expect_event(size_t before, const char *topic, const char *id, const char *action,
                    const json_t *object)
{
    cr_assert_eq(th_outbox_count(), before + 1, "%zu events added, expected 1",
                 th_outbox_count() - before);
    th_event_t e = th_outbox_last();
    cr_assert_str_eq(e.topic, topic);
    cr_assert_str_eq(e.key, id);
    cr_assert_eq(json_object_size(e.data), 3, "data is {action, id, object}");
    cr_assert_str_eq(th_str(e.data, "action"), action);
    cr_assert_str_eq(th_str(e.data, "id"), id);
    const json_t *got = json_object_get(e.data, "object");
    if (object)
        cr_assert(json_equal(got, object), "the event carries the object as answered");
    else
        cr_assert(json_is_null(got), "a delete carries a nil object");
}
