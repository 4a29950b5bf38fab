/*  mb_utf8 — checking text that peers send. */
#ifndef MB_UTF8_H
#define MB_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/*  True when the `len` bytes at `s` are valid UTF-8 (no overlong forms,
    no UTF-16 surrogates, nothing past U+10FFFF); then sets *chars to the
    number of code points. On false, *chars is untouched. */
bool mb_utf8_chars(const char *s, size_t len, size_t *chars);

#endif
