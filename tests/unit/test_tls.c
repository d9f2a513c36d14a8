/* Unit tests for tls: one zeroed object per thread, the same one on every call, freed by the
 * destructor when its thread exits. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "../../src/tls.h"
#include "check.h"

#define THREADS 8

struct obj {
    long words[64];
};

static atomic_int destroyed;

static void destroy(void *p)
{
    atomic_fetch_add(&destroyed, 1);
    free(p);
}

static struct tls objs = TLS_INIT(sizeof(struct obj), destroy);

struct seen {
    struct obj *first, *again;
    bool zeroed;
};

static void *thread_main(void *arg)
{
    struct seen *s = arg;
    s->first = tls_get(&objs);
    s->zeroed = s->first != NULL;
    for (size_t i = 0; s->first && i < 64; i++)
        s->zeroed = s->zeroed && s->first->words[i] == 0;
    if (s->first)
        s->first->words[0] = 42; /* a later call in this thread must see it */
    s->again = tls_get(&objs);
    s->zeroed = s->zeroed && s->again && s->again->words[0] == 42;
    return NULL;
}

static void test_per_thread(void)
{
    pthread_t t[THREADS];
    struct seen s[THREADS] = {{0}};
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, thread_main, &s[i]) == 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++) {
        check_context("thread %d", i);
        CHECK(s[i].first != NULL);
        CHECK(s[i].first == s[i].again);
        CHECK(s[i].zeroed);
    }
    check_context("%s", "all threads");
    /* every thread has exited: each object was destroyed, once */
    CHECK_EQ_I64(atomic_load(&destroyed), THREADS);
}

static void test_main_thread(void)
{
    struct obj *a = tls_get(&objs), *b = tls_get(&objs);
    CHECK(a != NULL && a == b);
}

int main(void)
{
    RUN_TEST(test_per_thread);
    RUN_TEST(test_main_thread);
    return check_summary("test_tls");
}
