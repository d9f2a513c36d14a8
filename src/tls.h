/*
 * tls: one object per thread for state that is too costly to set up per call (a compressor's
 * tables, a decoder and its input buffer), made on the thread's first use and freed when the
 * thread exits.
 *
 * Declare one `static struct tls x = TLS_INIT(size, destroy);` per kind of object. tls_get
 * returns this thread's object (zeroed when new), or NULL when out of memory; it is the
 * calling thread's alone, so it needs no lock. destroy (NULL: free) frees an object at thread
 * exit; it must free the object itself too.
 */
#ifndef NPZMOUNT_TLS_H
#define NPZMOUNT_TLS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

struct tls {
    size_t size;
    void (*destroy)(void *);
    atomic_bool ready;
    pthread_key_t key;
};

#define TLS_INIT(sz, fn) {.size = (sz), .destroy = (fn)}

void *tls_get(struct tls *t);

#endif
