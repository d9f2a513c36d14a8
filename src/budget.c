/* budget: see budget.h. */
#include "budget.h"

#include <errno.h>

void budget_init(struct budget *b, uint64_t limit)
{
    atomic_init(&b->used, 0);
    b->limit = limit;
}

int budget_take(struct budget *b, uint64_t n)
{
    uint64_t cur = atomic_load_explicit(&b->used, memory_order_relaxed);
    do {
        if (n > b->limit || cur > b->limit - n)
            return -ENOMEM;
    } while (!atomic_compare_exchange_weak_explicit(&b->used, &cur, cur + n,
                                                    memory_order_relaxed, memory_order_relaxed));
    return 0;
}

void budget_force(struct budget *b, uint64_t n)
{
    atomic_fetch_add_explicit(&b->used, n, memory_order_relaxed);
}

void budget_give(struct budget *b, uint64_t n)
{
    atomic_fetch_sub_explicit(&b->used, n, memory_order_relaxed);
}

uint64_t budget_used(const struct budget *b)
{
    return atomic_load_explicit(&b->used, memory_order_relaxed);
}

uint64_t budget_left(const struct budget *b)
{
    uint64_t u = budget_used(b);
    return u >= b->limit ? 0 : b->limit - u;
}
