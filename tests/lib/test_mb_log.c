/*  mb_log: one valid JSON object per line, whatever the message holds. */
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mb_log.h"

static int s_saved_stderr = -1;
static int s_pipe[2];

static void s_capture_start(void)
{
    cr_assert_eq(pipe(s_pipe), 0);
    s_saved_stderr = dup(STDERR_FILENO);
    dup2(s_pipe[1], STDERR_FILENO);
    close(s_pipe[1]);
}

/*  Restores stderr and returns what was written (caller frees). */
static char *s_capture_end(void)
{
    dup2(s_saved_stderr, STDERR_FILENO);
    close(s_saved_stderr);
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    ssize_t n;
    while ((n = read(s_pipe[0], out + len, cap - len - 1)) > 0) {
        len += (size_t)n;
        if (cap - len < 4096)
            out = realloc(out, cap *= 2);
    }
    close(s_pipe[0]);
    out[len] = '\0';
    return out;
}

/*  Parses the single line in `text` as JSON (asserting it is one line). */
static json_t *s_parse_line(const char *text)
{
    size_t len = strlen(text);
    cr_assert(len > 0 && text[len - 1] == '\n', "line ends with a newline");
    cr_assert_null(memchr(text, '\n', len - 1), "exactly one line: %s", text);
    json_error_t error;
    json_t *line = json_loadb(text, len, 0, &error);
    cr_assert_not_null(line, "valid JSON (%s): %s", error.text, text);
    return line;
}

Test(mb_log, usage)
{
    mb_log_init("catalog");
    s_capture_start();
    mb_info(0xab, "track %s stored in %d ms", "4uLU6hMCjMI75M1A2tKUQC", 3);
    char *out = s_capture_end();

    json_t *line = s_parse_line(out);
    cr_assert_str_eq(json_string_value(json_object_get(line, "level")), "info");
    cr_assert_str_eq(json_string_value(json_object_get(line, "process")), "catalog");
    cr_assert_eq(json_integer_value(json_object_get(line, "pid")), getpid());
    cr_assert_str_eq(json_string_value(json_object_get(line, "rid")), "00000000000000ab");
    cr_assert_str_eq(json_string_value(json_object_get(line, "msg")),
                     "track 4uLU6hMCjMI75M1A2tKUQC stored in 3 ms");

    regex_t time_re;
    regcomp(&time_re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$",
            REG_EXTENDED | REG_NOSUB);
    const char *time = json_string_value(json_object_get(line, "time"));
    cr_assert_eq(regexec(&time_re, time, 0, NULL, 0), 0, "ISO-8601 UTC with ms: %s", time);
    regfree(&time_re);
    json_decref(line);
    free(out);
}

Test(mb_log, rid_zero_is_left_out)
{
    mb_log_init("broker");
    s_capture_start();
    mb_warn(0, "no request here");
    char *out = s_capture_end();
    json_t *line = s_parse_line(out);
    cr_assert_null(json_object_get(line, "rid"));
    cr_assert_str_eq(json_string_value(json_object_get(line, "level")), "warn");
    json_decref(line);
    free(out);
}

/*  Logs `msg` verbatim and returns the "msg" field read back (caller frees). */
static char *s_roundtrip(const char *msg, char **raw)
{
    s_capture_start();
    mb_error(0, "%s", msg);
    char *out = s_capture_end();
    json_t *line = s_parse_line(out);
    const char *back = json_string_value(json_object_get(line, "msg"));
    cr_assert_not_null(back);
    char *copy = strdup(back);
    json_decref(line);
    if (raw)
        *raw = out;
    else
        free(out);
    return copy;
}

Test(mb_log, quotes_backslashes_and_control_characters_are_escaped)
{
    mb_log_init("t");
    const char *tricky = "say \"hi\"\\ then\nnew line\r\ttab \x01\x1f\x7f end";
    char *raw;
    char *back = s_roundtrip(tricky, &raw);
    cr_assert_str_eq(back, tricky);
    cr_assert_not_null(strstr(raw, "\\\"hi\\\"\\\\"), "%s", raw);
    cr_assert_not_null(strstr(raw, "\\n"), "%s", raw);
    cr_assert_not_null(strstr(raw, "\\u0001\\u001f\\u007f"), "%s", raw);
    free(back);
    free(raw);
}

Test(mb_log, valid_utf8_is_kept)
{
    mb_log_init("t");
    const char *text = "Beyonc\xc3\xa9 \xe2\x80\x94 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x8e\xb5";
    char *raw;
    char *back = s_roundtrip(text, &raw);
    cr_assert_str_eq(back, text);
    cr_assert_not_null(strstr(raw, "\xf0\x9f\x8e\xb5"), "kept as UTF-8, not escaped");
    free(back);
    free(raw);
}

Test(mb_log, invalid_utf8_becomes_replacement_characters)
{
    mb_log_init("t");
    struct {
        const char *in;
        const char *out;
    } cases[] = {
        {"a\xff"
         "b",
         "a\xef\xbf\xbd"
         "b"},                                                    /* never valid */
        {"a\xc3", "a\xef\xbf\xbd"},                               /* cut short at the end */
        {"a\xc3(b", "a\xef\xbf\xbd(b"},                           /* bad continuation */
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},                 /* overlong '/' */
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* surrogate */
        {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* > U+10FFFF */
        {"\x80", "\xef\xbf\xbd"}, /* lone continuation */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *back = s_roundtrip(cases[i].in, NULL);
        cr_assert_str_eq(back, cases[i].out, "case %zu", i);
        free(back);
    }
}

Test(mb_log, every_byte_value_gives_valid_json)
{
    mb_log_init("t");
    char all[256];
    for (int i = 1; i < 256; i++)
        all[i - 1] = (char)i;
    all[255] = '\0';
    char *back = s_roundtrip(all, NULL);
    /* ASCII comes back exactly; the high half becomes U+FFFD each. */
    cr_assert_eq(memcmp(back, all, 127), 0);
    free(back);
}

Test(mb_log, level_filter_from_environment)
{
    setenv("MUSICBUS_LOG_LEVEL", "warn", 1);
    mb_log_init("t");
    cr_assert_not(mb_log_enabled(MB_LOG_INFO));
    cr_assert(mb_log_enabled(MB_LOG_ERROR));
    s_capture_start();
    mb_debug(1, "dropped");
    mb_info(1, "dropped");
    mb_warn(1, "kept");
    mb_error(1, "kept too");
    char *out = s_capture_end();
    cr_assert_null(strstr(out, "dropped"));
    cr_assert_not_null(strstr(out, "\"msg\":\"kept\""));
    cr_assert_not_null(strstr(out, "\"msg\":\"kept too\""));
    free(out);

    setenv("MUSICBUS_LOG_LEVEL", "DEBUG", 1);
    mb_log_init("t");
    cr_assert(mb_log_enabled(MB_LOG_DEBUG));
}

Test(mb_log, unknown_level_warns_and_uses_info)
{
    setenv("MUSICBUS_LOG_LEVEL", "chatty", 1);
    s_capture_start();
    mb_log_init("t");
    char *out = s_capture_end();
    cr_assert_not_null(strstr(out, "MUSICBUS_LOG_LEVEL=chatty"), "%s", out);
    cr_assert(mb_log_enabled(MB_LOG_INFO));
    cr_assert_not(mb_log_enabled(MB_LOG_DEBUG));
    free(out);
}

Test(mb_log, long_messages_are_cut_but_stay_one_valid_line)
{
    mb_log_init("t");
    size_t n = 100000;
    char *big = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        big[i] = i % 2 ? '"' : '\x01'; /* worst case for escaping */
    big[n] = '\0';
    char *back = s_roundtrip(big, NULL);
    cr_assert(strlen(back) > 1000 && strlen(back) < n);
    cr_assert_eq(memcmp(back, big, strlen(back)), 0);
    free(back);
    free(big);
}

Test(mb_log, errno_is_preserved)
{
    mb_log_init("t");
    s_capture_start();
    errno = ENOENT;
    mb_error(0, "x");
    int saved = errno;
    free(s_capture_end());
    cr_assert_eq(saved, ENOENT);
}
