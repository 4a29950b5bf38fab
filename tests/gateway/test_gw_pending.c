/*  pending: requests waiting for the bus, by rid and by deadline. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "mb_error.h"
#include "pending.h"

/*  Usage: add when sent, take when the reply comes, expire from first(). */
Test(gw_pending, usage)
{
    gw_pending_t *p = gw_pending_new(8);
    gw_pending_node_t a, b;
    cr_assert_eq(gw_pending_add(p, &a, 100, 5000), 0);
    cr_assert_eq(gw_pending_add(p, &b, 101, 5001), 0);
    cr_assert_eq(gw_pending_take(p, 101), &b);
    cr_assert_null(gw_pending_take(p, 101), "a second reply for one rid is dropped");
    cr_assert_eq(gw_pending_first(p), &a);
    gw_pending_remove(p, &a); /* its client went away */
    cr_assert_null(gw_pending_first(p));
    cr_assert_eq(gw_pending_size(p), 0);
    gw_pending_destroy(&p);
    gw_pending_destroy(&p);
}

Test(gw_pending, limits)
{
    gw_pending_t *p = gw_pending_new(2);
    gw_pending_node_t n[3];
    cr_assert_eq(gw_pending_add(p, &n[0], 0, 1), MB_EINVAL);
    cr_assert_eq(gw_pending_add(p, &n[0], 1, 1), 0);
    cr_assert_eq(gw_pending_add(p, &n[1], 1, 1), MB_EINVAL, "rid already present");
    cr_assert_eq(gw_pending_add(p, &n[1], 2, 1), 0);
    cr_assert_eq(gw_pending_add(p, &n[2], 3, 1), MB_EFULL);
    gw_pending_remove(p, &n[2]); /* never added: no effect */
    cr_assert_eq(gw_pending_size(p), 2);
    gw_pending_destroy(&p);
}

Test(gw_pending, deadline_order)
{
    gw_pending_t *p = gw_pending_new(8);
    gw_pending_node_t n[5];
    int64_t deadlines[5] = {50, 10, 30, 30, 70};
    for (int i = 0; i < 5; i++)
        cr_assert_eq(gw_pending_add(p, &n[i], (uint64_t)i + 1, deadlines[i]), 0);
    int64_t last = 0;
    uint64_t order[5];
    for (int i = 0; i < 5; i++) {
        gw_pending_node_t *first = gw_pending_first(p);
        cr_assert_geq(first->deadline_ms, last);
        last = first->deadline_ms;
        order[i] = first->rid;
        gw_pending_remove(p, first);
    }
    cr_assert_eq(order[0], 2);
    cr_assert_eq(order[1], 3, "equal deadlines keep their order");
    cr_assert_eq(order[2], 4);
    gw_pending_destroy(&p);
}

/*  Random adds, takes and removes against a plain array: the table never
    loses or invents an entry (backward-shift deletion is the risky part). */
Test(gw_pending, random_against_model)
{
    enum { CAP = 64, ROUNDS = 200000 };
    gw_pending_t *p = gw_pending_new(CAP);
    gw_pending_node_t nodes[CAP];
    bool in[CAP] = {0};
    uint64_t rid_of[CAP] = {0};
    uint64_t next_rid = 1;
    srand(7);
    for (int r = 0; r < ROUNDS; r++) {
        int i = rand() % CAP;
        int what = rand() % 3;
        if (!in[i]) {
            /* sequential rids with random gaps collide in the table often */
            next_rid += (uint64_t)(rand() % 3 == 0 ? 1 : 1 + rand() % 1000);
            cr_assert_eq(gw_pending_add(p, &nodes[i], next_rid, r), 0);
            in[i] = true;
            rid_of[i] = next_rid;
        } else if (what == 0) {
            cr_assert_eq(gw_pending_take(p, rid_of[i]), &nodes[i]);
            in[i] = false;
        } else if (what == 1) {
            gw_pending_remove(p, &nodes[i]);
            in[i] = false;
        } else {
            cr_assert_null(gw_pending_take(p, rid_of[i] + 1000000000ull));
        }
        if (r % 1000 == 0) {
            size_t count = 0;
            for (int k = 0; k < CAP; k++)
                if (in[k]) {
                    count++;
                    gw_pending_node_t *got = gw_pending_take(p, rid_of[k]);
                    cr_assert_eq(got, &nodes[k]);
                    cr_assert_eq(gw_pending_add(p, &nodes[k], rid_of[k], r), 0);
                }
            cr_assert_eq(gw_pending_size(p), count);
        }
    }
    gw_pending_destroy(&p);
}
