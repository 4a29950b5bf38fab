/*  mb_error — descriptions of libmusicbus error codes. */
#include "mb_error.h"

const char *mb_strerror(int err)
{
    switch (err) {
    case MB_OK:
        return "success";
    case MB_EINVAL:
        return "invalid argument or malformed input";
    case MB_EPROTO:
        return "protocol error";
    case MB_ENOTFOUND:
        return "not found";
    case MB_ETIMEDOUT:
        return "timed out";
    case MB_EIO:
        return "input/output error";
    case MB_EAGAIN:
        return "resource temporarily unavailable";
    case MB_EDB:
        return "database error";
    case MB_EFULL:
        return "storage or queue full";
    case MB_EINTR:
        return "interrupted";
    case MB_ETOOBIG:
        return "input too large";
    case MB_ENOTYET:
        return "not yet: waiting for progress elsewhere";
    default:
        return "unknown error";
    }
}
