/*  catalog — the catalog actor: artists, albums and tracks. Ops, replies,
    errors and key layout: actors/catalog/README.md. */
#ifndef CATALOG_H
#define CATALOG_H

#include "mb_actor.h"

/*  The actor's definition (service "catalog", its op table and LMDB
    hooks), for main() and for tests that drive the handlers through
    mb_actor_dispatch(). Static; never NULL. */
const mb_actor_def_t *catalog_actor_def(void);

#endif
