/* tls: see tls.h. */
#include "tls.h"

#include <stdbool.h>
#include <stdlib.h>

static pthread_mutex_t tls_lock = PTHREAD_MUTEX_INITIALIZER;

/* Keys are made once per struct tls, on first use, by whichever thread gets there first. */
static int make_key(struct tls *t)
{
    int rc = 0;
    pthread_mutex_lock(&tls_lock);
    if (!atomic_load(&t->ready)) {
        rc = pthread_key_create(&t->key, t->destroy ? t->destroy : free);
        if (rc == 0)
            atomic_store(&t->ready, true);
    }
    pthread_mutex_unlock(&tls_lock);
    return rc;
}

void *tls_get(struct tls *t)
{
    if (!atomic_load(&t->ready) && make_key(t) != 0)
        return NULL;
    void *p = pthread_getspecific(t->key);
    if (!p && (p = calloc(1, t->size)) && pthread_setspecific(t->key, p) != 0) {
        free(p);
        p = NULL;
    }
    return p;
}
