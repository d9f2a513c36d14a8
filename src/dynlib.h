/*
 * dynlib: a shared library loaded on first use (dlopen) rather than linked, for the libraries
 * that only some archives need (libcurl for remote ones, libarchive for other methods): each
 * brings its own dependencies into every start of the program otherwise.
 *
 * Thread-safety: call it from a pthread_once routine; the pointers it fills are then read-only.
 */
#ifndef NPZMOUNT_DYNLIB_H
#define NPZMOUNT_DYNLIB_H

#include <stdbool.h>
#include <stddef.h>

struct dynlib_sym {
    void **fn;        /* where the symbol's address goes */
    const char *name;
};

/* Loads soname and every symbol of syms. Returns true when all were found; the library then
 * stays loaded for the life of the process. Otherwise it is unloaded again, the pointers are
 * NULL, and false is returned. */
bool dynlib_load(const char *soname, const struct dynlib_sym *syms, size_t n);

#endif
