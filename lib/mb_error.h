/*  mb_error — error codes of libmusicbus.

    Functions that act return 0 on success or one of these negative codes.
    mb_strerror() describes any of them. */
#ifndef MB_ERROR_H
#define MB_ERROR_H

enum {
    MB_OK = 0,
    MB_EINVAL = -1,    /* bad argument, or malformed input from a peer */
    MB_EPROTO = -2,    /* a peer broke the protocol (bad frames, bad envelope) */
    MB_ENOTFOUND = -3, /* no such thing */
    MB_ETIMEDOUT = -4, /* a deadline passed */
    MB_EIO = -5,       /* the OS or ZeroMQ failed; errno tells more */
    MB_EAGAIN = -6,    /* nothing now; try again later (non-blocking calls) */
    MB_EDB = -7,       /* LMDB failed */
    MB_EFULL = -8,     /* storage is full (MDB_MAP_FULL) or a queue is full */
    MB_EINTR = -9,     /* interrupted: the process was asked to stop */
    MB_ETOOBIG = -10,  /* input larger than the limit */
    MB_ENOTYET = -11,  /* not possible yet: depends on progress elsewhere; retry shortly */
};

/*  Returns a static English description of `err` (never NULL). */
const char *mb_strerror(int err);

#endif
