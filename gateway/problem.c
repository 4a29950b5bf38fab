/*  problem — RFC 9457 problem documents (application/problem+json). */
#include "problem.h"

#include <string.h>

static const struct {
    int status;
    const char *title;
} s_titles[] = {
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {402, "Payment Required"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {416, "Range Not Satisfiable"},
    {422, "Unprocessable Content"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {507, "Insufficient Storage"},
};

const char *gw_problem_title(int status)
{
    for (size_t i = 0; i < sizeof s_titles / sizeof s_titles[0]; i++)
        if (s_titles[i].status == status)
            return s_titles[i].title;
    return "Error";
}

static void s_put_text(gw_buf_t *out, const char *s, size_t len)
{
    if (len == (size_t)-1)
        len = strlen(s);
    if (gw_utf8_valid(s, len))
        gw_buf_json_string(out, s, len);
    else
        gw_buf_puts(out, "\"(not valid UTF-8)\"");
}

void gw_problem_write(gw_buf_t *out, int status, const char *type, size_t type_len,
                      const char *detail, size_t detail_len, const char *field, size_t field_len)
{
    gw_buf_puts(out, "{\"type\":");
    if (type)
        s_put_text(out, type, type_len);
    else
        gw_buf_puts(out, "\"about:blank\"");
    gw_buf_printf(out, ",\"title\":\"%s\",\"status\":%d", gw_problem_title(status), status);
    if (detail) {
        gw_buf_puts(out, ",\"detail\":");
        s_put_text(out, detail, detail_len);
    }
    if (field) {
        gw_buf_puts(out, ",\"field\":");
        s_put_text(out, field, field_len);
    }
    gw_buf_putc(out, '}');
}
