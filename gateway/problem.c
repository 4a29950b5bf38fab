/*  problem — RFC 9457 problem documents (application/problem+json). */
#include "problem.h"

#include <string.h>

const char *gw_problem_title(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 422: return "Unprocessable Content";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 507: return "Insufficient Storage";
    default: return "Error";
    }
}

static void s_put_text(gw_buf_t *out, const char *s, size_t len)
{
    if (len == (size_t) -1)
        len = strlen(s);
    if (gw_utf8_valid(s, len))
        gw_buf_json_string(out, s, len);
    else
        gw_buf_puts(out, "\"(not valid UTF-8)\"");
}

void gw_problem_write(gw_buf_t *out, int status, const char *type, size_t type_len,
                      const char *detail, size_t detail_len, const char *field,
                      size_t field_len)
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
