/*
 * budget: a byte limit that several owners draw from (decoder state, checkpoint windows, ...),
 * so that memory is bounded by the options, not by what an archive claims. A budget only
 * counts: owners allocate and free their memory themselves and tell the budget.
 *
 * Threads: every function may be called concurrently (a lock-free counter).
 */
#ifndef NPZMOUNT_BUDGET_H
#define NPZMOUNT_BUDGET_H

#include <stdatomic.h>
#include <stdint.h>

struct budget {
    _Atomic uint64_t used;
    uint64_t limit;
};

void budget_init(struct budget *b, uint64_t limit);

/* Takes n bytes: 0, or -ENOMEM (nothing taken) when that would pass the limit. */
int budget_take(struct budget *b, uint64_t n);

/* Takes n bytes even past the limit, for memory that must exist (returned by budget_give). */
void budget_force(struct budget *b, uint64_t n);

void budget_give(struct budget *b, uint64_t n);

uint64_t budget_used(const struct budget *b);
uint64_t budget_left(const struct budget *b);

#endif
