/*  mb_alloc — allocation that never returns NULL.

    Out of memory is not a condition musicbus recovers from: these abort
    the process with a log line, so callers need no NULL checks. */
#ifndef MB_ALLOC_H
#define MB_ALLOC_H

#include <stddef.h>

void *mb_malloc(size_t size);
void *mb_calloc(size_t count, size_t size);
void *mb_realloc(void *ptr, size_t size);
/*  Returns a copy of `s`, the caller's to free. */
char *mb_strdup(const char *s);
/*  Returns a NUL-terminated copy of the first `len` bytes of `s`. */
char *mb_strndup(const char *s, size_t len);

#endif
