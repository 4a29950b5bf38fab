/*  openapi_embed — schemas/openapi.json, built into the executable.

    The bytes are generated at build time by gateway/embed.cmake into
    openapi_embed.c in the build folder (not NUL-terminated). */
#ifndef GW_OPENAPI_EMBED_H
#define GW_OPENAPI_EMBED_H

#include <stddef.h>

extern const unsigned char gw_openapi_json[];
extern const size_t gw_openapi_json_len;

#endif
