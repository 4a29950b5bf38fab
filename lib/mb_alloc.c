/*  mb_alloc — allocation that aborts on out of memory. */
#include "mb_alloc.h"

#include <stdlib.h>
#include <string.h>

#include "mb_log.h"

static void s_out_of_memory(size_t size)
{
    /* mb_log formats on the stack, so it still works when the heap is gone. */
    mb_error(0, "out of memory allocating %zu bytes", size);
    abort();
}

void *mb_malloc(size_t size)
{
    /* malloc(0) may legally return NULL; ask for one byte so NULL means OOM. */
    void *ptr = malloc(size ? size : 1);
    if (!ptr)
        s_out_of_memory(size);
    return ptr;
}

void *mb_calloc(size_t count, size_t size)
{
    void *ptr = calloc(count ? count : 1, size ? size : 1);
    if (!ptr)
        s_out_of_memory(count * size);
    return ptr;
}

void *mb_realloc(void *ptr, size_t size)
{
    void *grown = realloc(ptr, size ? size : 1);
    if (!grown)
        s_out_of_memory(size);
    return grown;
}

char *mb_strdup(const char *s)
{
    return mb_strndup(s, strlen(s));
}

char *mb_strndup(const char *s, size_t len)
{
    char *copy = mb_malloc(len + 1);
    memcpy(copy, s, len);
    copy[len] = '\0';
    return copy;
}
